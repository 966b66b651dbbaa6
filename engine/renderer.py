"""The renderer: plan -> latent windows -> runner -> uint8 tiles -> sink.

Single-process executor: batches of tiles run one after another on one device while the
sink's writer thread compresses finished bands in the background.
"""
from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from . import native
from .errors import RequestError, option
from .latent import Field
from .planner import Plan, Tile
from .quantize import QUANTIZE
from .runner import TorchRunner


def peak_rss_bytes() -> int:
    """Peak resident set size of this process. VmHWM starts afresh at exec, whereas
    ru_maxrss can carry the peak of the parent a process was forked from."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class RenderStats:
    width: int
    height: int
    tiles: int
    tile_width: int
    tile_height: int
    seconds: float
    work_ratio: float
    peak_rss: int
    peak_device: int | None
    tflops: float  # achieved, counting the FLOPs actually executed

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    @property
    def mp_per_s(self) -> float:
        return self.megapixels / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        mem = f"peak RSS {self.peak_rss / 2**30:.2f} GiB"
        if self.peak_device is not None:
            mem += f", peak device memory {self.peak_device / 2**30:.2f} GiB"
        return (f"{self.width}x{self.height} px ({self.megapixels:.1f} MP) in {self.seconds:.1f} s: "
                f"{self.mp_per_s:.2f} MP/s, {self.tflops * 1e3:.1f} GFLOP/s, {self.tiles} tiles of "
                f"{self.tile_width}x{self.tile_height}, work ratio {self.work_ratio:.2f}, {mem}")


_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} tiles [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"


class Renderer:
    """Renders windows of a field's canvas with one runner."""

    def __init__(self, runner: TorchRunner, quantize: str = "round", trunc: float = 1.0):
        """`quantize`: how float pixels become bytes (quantize.QUANTIZE: "round", or "official"
        for the official code's PNG bytes); `trunc`: truncation of the styles (1: none)."""
        if quantize not in QUANTIZE:
            raise RequestError(f"{option('quantize')} must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
        self.runner = runner
        self.quantize = quantize
        self.trunc = trunc

    def batches(self, field: Field, plan: Plan, batch: int = 1, groups=None) -> Iterator[tuple[list[Tile], torch.Tensor]]:
        """Yield (tiles, float32 RGB [n, 3, H, W] on the runner's device): the plan's tiles in
        row-major batches, or the given iterable of tile groups."""
        if field.config.architecture() != self.runner.config.architecture():
            raise RequestError("the field and the model have different configs")
        w = plan.window
        field.check_window(w.x0, w.y0, w.width, w.height)
        prepared = self.runner.prepare(field) if self.trunc == 1.0 else self.runner.prepare(field, self.trunc)
        if groups is None:
            todo = list(plan.tiles)
            groups = (todo[i:i + batch] for i in range(0, len(todo), batch))
        for group in groups:
            if not group:  # a flush request (see pixels)
                yield group, None
                continue
            windows = [(t.cell_row, t.cell_col) for t in group]
            full = max(batch, plan.batch)
            if getattr(self.runner, "pads_batches", False) and len(windows) < full:
                # every forward of the render gets the same shapes, so the same algorithm
                windows += windows[-1:] * (full - len(windows))
            inputs = self.runner.inputs(field, windows, plan.latent_height, plan.latent_width)
            yield group, self.runner.run(prepared, inputs)[:len(group)]

    def tiles(self, field: Field, plan: Plan, batch: int = 1) -> Iterator[tuple[Tile, torch.Tensor]]:
        """Yield (tile, float32 RGB [3, h, w] on the host) in row-major order."""
        for group, rgb in self.batches(field, plan, batch):
            rgb = rgb.cpu()
            for t, img in zip(group, rgb):
                yield t, img[:, t.offset_y:t.offset_y + t.height, t.offset_x:t.offset_x + t.width]

    def pixels(self, field: Field, plan: Plan, batch: int = 1, groups=None) -> Iterator[tuple[Tile, np.ndarray]]:
        """Yield (tile, uint8 [h, w, 3] on the host). The cast to uint8 happens on the device
        (3 bytes a pixel cross the bus, not 12) and the copy of batch k overlaps the compute
        of batch k + 1 (pinned memory, asynchronous copy). An empty group in `groups` makes
        it hand out what it holds before it asks for the next group."""

        def ready(group, host, done):
            if done is not None:
                done.synchronize()
            for t, img in zip(group, host.numpy()):
                yield t, img[t.offset_y:t.offset_y + t.height, t.offset_x:t.offset_x + t.width]

        pending = None
        for group, rgb in self.batches(field, plan, batch, groups):
            if not group:
                if pending is not None:
                    yield from ready(*pending)
                pending = None
                continue
            if self.quantize == "round":
                u8 = native.to_uint8_nhwc(rgb)  # [n, H, W, 3]; C++ on the CPU when built
            else:
                u8 = QUANTIZE[self.quantize](rgb).permute(0, 2, 3, 1)
            if u8.device.type == "cuda":
                host = torch.empty(u8.shape, dtype=torch.uint8, pin_memory=True)
                host.copy_(u8, non_blocking=True)
                done = torch.cuda.Event()
                done.record()
            else:
                host, done = u8, None
            if pending is not None:
                yield from ready(*pending)
            pending = (group, host, done)
        if pending is not None:
            yield from ready(*pending)

    def render_array(self, field: Field, plan: Plan, batch: int = 1, *, uint8: bool = False) -> np.ndarray:
        """The whole window in memory as [H, W, 3] (float32 in [-1, 1]-ish, or uint8): for
        tests and small images; `render` streams instead."""
        w = plan.window
        out = np.empty((w.height, w.width, 3), np.uint8 if uint8 else np.float32)
        for t, img in self.tiles(field, plan, batch):
            img = QUANTIZE[self.quantize](img) if uint8 else img
            out[t.y:t.y + t.height, t.x:t.x + t.width] = img.permute(1, 2, 0).numpy()
        return out

    def render(self, field: Field, plan: Plan, sink, *, batch: int = 1, progress: bool = True) -> RenderStats:
        """Stream every tile of `plan` into `sink` (an open igan.engine.sinks.Sink; this
        closes it on success and aborts it on error)."""
        if self.runner.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.runner.device)
        start = time.perf_counter()
        bar = tqdm(total=len(plan.tiles), unit="tile", desc="igan-render", disable=not progress,
                   file=sys.stderr, dynamic_ncols=True, smoothing=0.1, bar_format=_BAR)
        written = 0
        with sink, bar:
            for tile, img in self.pixels(field, plan, batch):
                sink.write(tile.x, tile.y, img)
                written += tile.width * tile.height
                bar.update(1)
                bar.set_postfix_str(f"{written / 1e6 / (time.perf_counter() - start):.2f} MP/s", refresh=False)
        seconds = time.perf_counter() - start
        return RenderStats(plan.window.width, plan.window.height, len(plan.tiles), plan.tile_width,
                           plan.tile_height, seconds, plan.work_ratio, peak_rss_bytes(),
                           self.runner.peak_memory(), plan.flops / seconds / 1e12)
