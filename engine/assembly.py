"""From rendered tiles to the output: tiles rendered into the tile store (each recorded in
the manifest once on disk), the assembler that streams complete bands from the store into the
sink top to bottom, and the progress bar. Every executor uses these, so a render killed at any
point resumes from the manifest and writes the same bytes.
"""
from __future__ import annotations

import sys
import time

import numpy as np
from tqdm import tqdm

from . import planner
from .renderer import RenderStats, Renderer, peak_rss_bytes
from .store import TileStore
from .workdir import failpoint

BAR = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} tiles [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"


def render_groups(renderer: Renderer, field, plan, store: TileStore, groups, on_done=None) -> None:
    """Render tile groups into the store (each tile recorded in the manifest once on disk);
    on_done(tiles) after each group."""
    groups = iter(groups)
    sizes = []  # group sizes, in order, to report whole groups as their last tile is stored

    def counted():
        for group in groups:
            if group:
                sizes.append(len(group))
            yield group

    finished = []
    delay = float(failpoint("tile-delay") or 0)  # tests: a slow render, to act while it runs
    for tile, img in renderer.pixels(field, plan, groups=counted()):
        store.put(tile.index, tile.y, tile.x, np.ascontiguousarray(img))
        time.sleep(delay)
        finished.append(tile)
        if len(finished) == sizes[0]:
            sizes.pop(0)
            if on_done is not None:
                on_done(finished)
            finished = []


class Assembler:
    """Feeds the sink each band of the image as soon as all its tiles are in the store."""

    def __init__(self, plan: planner.Plan, store: TileStore, sink, done: set[int]):
        self.plan, self.store, self.sink = plan, store, sink
        self.missing = [sum(1 for t in plan.tiles if t.row == r and t.index not in done) for r in range(plan.rows)]
        self.next_row = 0

    def tiles_done(self, tiles) -> None:
        for t in tiles:
            self.missing[t.row] -= 1
        self.advance()

    def advance(self) -> None:
        while self.next_row < self.plan.rows and self.missing[self.next_row] == 0:
            y = self.next_row * self.plan.tile_height
            h = min(self.plan.tile_height, self.plan.window.height - y)
            if self.sink is not None:
                row = [t for t in self.plan.tiles if t.row == self.next_row]
                self.sink.write(0, y, self.store.band(y, h, row))
            self.next_row += 1

    @property
    def complete(self) -> bool:
        return self.next_row == self.plan.rows


def batches(tiles: list, batch: int) -> list[list]:
    """`tiles` in groups of `batch`, in order."""
    return [tiles[i:i + batch] for i in range(0, len(tiles), batch)]


class Progress:
    """The progress bar: tiles, MP/s and the ETA, on stderr."""

    def __init__(self, total: int, done: int, enabled: bool):
        self.bar = tqdm(total=total, initial=done, unit="tile", desc="igan-render", disable=not enabled,
                        file=sys.stderr, dynamic_ncols=True, bar_format=BAR)
        self.start, self.pixels = time.perf_counter(), 0

    def update(self, tiles) -> None:
        self.pixels += sum(t.width * t.height for t in tiles)
        self.bar.update(len(tiles))
        self.bar.set_postfix_str(f"{self.pixels / 1e6 / (time.perf_counter() - self.start):.2f} MP/s", refresh=False)

    def close(self) -> None:
        self.bar.close()


def stats(plan, rendered: int, seconds: float, peak_device) -> RenderStats:
    """The figures of a render that rendered `rendered` of `plan`'s tiles in `seconds`."""
    return RenderStats(plan.window.width, plan.window.height, len(plan.tiles), plan.tile_width, plan.tile_height,
                       seconds, plan.work_ratio, peak_rss_bytes(), peak_device,
                       plan.flops_per_tile * rendered / seconds / 1e12)
