"""igan-bench: the speed report of one model on one device over image sizes.

For each size it plans the render as igan-render would, runs it once to warm up, then
times `Renderer.pixels` (latents -> forward -> uint8 on the host: everything but the file
writer) and reports megapixels/s, FLOPs per output pixel (executed, from the planner),
achieved TFLOP/s, the work ratio and peak memory (CUDA: max allocated; CPU: peak RSS, reset
before each size where Linux allows it). Prints a table, the CPU (model, ISA flags, the code
branches MKL and oneDNN run: engine/cpu.py; --json records it too) and draws a PNG plot with pillow.

Every backend of igan-render is measured: torch, triton, and onnx (an export of igan-export
--onnx DIR, given as --model DIR).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import cpu
from ..embedded import DESCRIPTION as EMBEDDED_DESCRIPTION
from ..paths import refuse_unsafe_paths
from ..provenance import CPU_PATHS, DEFAULT_CPU_PATH, igan_version
from . import command, guarded
from ..values import positive, size_bytes


@dataclass
class BenchRow:
    width: int
    height: int
    seconds: float
    mp_per_s: float
    flops_per_pixel: float  # executed FLOPs / output pixel
    tflops: float  # achieved
    work_ratio: float
    peak_bytes: int | None
    tile: str
    tiles: int
    baseline: BenchRow | None = None  # the same size with fixed --baseline-tile tiles, if asked

    @property
    def speedup(self) -> float | None:
        return None if self.baseline is None else self.mp_per_s / self.baseline.mp_per_s


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS (VmHWM) so each size gets its own figure (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(renderer, cfg, width: int, height: int, *, seed: int = 0, tile=None, batch: int = 1,
            memory_budget: int | None = None, itemsize: int = 4, repeats: int = 1,
            tiles: str = "least-work") -> BenchRow:
    """Time the render of one width x height window (best of `repeats`, after one warm-up)."""
    import torch

    from .. import planner
    from ..latent import LatentField
    from ..renderer import peak_rss_bytes

    window = planner.Window(0, -(height // 2), width, height)
    plan = planner.plan(cfg, window, tile=tile, batch=batch, memory_budget=memory_budget, itemsize=itemsize,
                        tiles=tiles)
    field = LatentField(cfg, seed)
    device = renderer.runner.device

    def run():
        for _ in renderer.pixels(field, plan, batch):
            pass
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    run()  # warm-up: allocator, kernels, caches
    cpu_peak = _reset_peak_rss() if device.type == "cpu" else False
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    peak = renderer.runner.peak_memory() if device.type == "cuda" else (peak_rss_bytes() if cpu_peak else None)
    pixels = width * height
    return BenchRow(width, height, best, pixels / 1e6 / best, plan.flops / pixels, plan.flops / best / 1e12,
                    plan.work_ratio, peak, f"{plan.tile_width}x{plan.tile_height}", len(plan.tiles))


def format_table(rows: list[BenchRow], device_name: str) -> str:
    mem = "peak device MiB" if device_name.startswith("cuda") else "peak RSS MiB"
    head = ["size", "MP/s", "FLOP/pixel", "TFLOP/s", "work ratio", mem, "tiles", "seconds", "speedup"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]

    def cells(r: BenchRow, speedup: str) -> str:
        peak = "n/a" if r.peak_bytes is None else f"{r.peak_bytes / 2**20:.0f}"
        c = [f"{r.width}x{r.height}", f"{r.mp_per_s:.3f}", f"{r.flops_per_pixel / 1e6:.3f} M", f"{r.tflops:.4f}",
             f"{r.work_ratio:.3f}", peak, f"{r.tiles} of {r.tile}", f"{r.seconds:.2f}", speedup]
        return "| " + " | ".join(c) + " |"

    for r in rows:
        if r.baseline is not None:
            lines.append(cells(r.baseline, "1.00x (baseline)"))
        lines.append(cells(r, "" if r.speedup is None else f"**{r.speedup:.2f}x**"))
    return "\n".join(lines)


EXAMPLES = """\
examples:
  igan-bench --device cpu --sizes 256,512,1024x256 --threads 8
  igan-bench --device cuda --backend triton --precision fp16 --baseline-tile 96 --json bench.json
  igan-export --checkpoint best_fid.pth.tar --onnx export/ && igan-bench --backend onnx --model export/"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="igan-bench", description="Speed report: MP/s, FLOPs per pixel, TFLOP/s, work ratio and peak memory\n"
                                       "of one model on one device over image sizes.",
        epilog=textwrap.fill(f"Without --checkpoint or --model it measures the {EMBEDDED_DESCRIPTION}.", 79)
        + "\n\n" + EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {igan_version()}")
    p.add_argument("--checkpoint", default=None, help="official checkpoint or igan .safetensors (default: embedded)")
    p.add_argument("--config", default=None, help="preset of an official checkpoint (default: inferred)")
    p.add_argument("--sizes", default="256,512,1024,2048",
                   help="comma-separated sizes: N (square) or WxH (default 256,512,1024,2048)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default auto)")
    p.add_argument("--backend", default="torch", choices=["torch", "triton", "onnx"],
                   help="model runner: torch (reference, any device), triton (fused kernels, CUDA) or onnx "
                        "(onnxruntime on the graphs of --model) (default torch)")
    p.add_argument("--model", default=None, metavar="DIR",
                   help="with --backend onnx: the ONNX export to measure (igan-export --onnx DIR)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"],
                   help="compute precision (default fp32; the onnx backend has fp32 and fp16)")
    p.add_argument("--random-weights", action="store_true",
                   help="measure --config's preset with fixed random weights (no checkpoint needed)")
    p.add_argument("--cpu-path", default=DEFAULT_CPU_PATH, choices=CPU_PATHS,
                   help="CPU, torch backend: the path to measure, as igan-render's --cpu-path: exact (the default), "
                        "reference (igan 0.2's) or fast-0.4 (igan 0.3-0.4's default)")
    p.add_argument("--bit-exact", dest="cpu_path", action="store_const", const="reference",
                   help="the same as --cpu-path reference, kept for igan 0.2-0.4 commands")
    p.add_argument("--tile", type=positive, default=None, help="tile size (default: from the memory budget)")
    p.add_argument("--batch", type=positive, default=1, help="tiles per forward (default 1)")
    p.add_argument("--memory-budget", type=size_bytes, default=None, help="as igan-render (e.g. 4GiB)")
    p.add_argument("--baseline-tile", type=positive, default=None, metavar="N",
                   help="also time each size with fixed N-px tiles (96 = the official patch step) and report "
                        "the speedup over them")
    p.add_argument("--repeats", type=positive, default=1, help="timed runs per size; the best counts (default 1)")
    p.add_argument("--threads", type=positive, default=None, help="CPU threads for torch")
    p.add_argument("--plot", default="igan-bench.png", help="PNG plot path (default igan-bench.png)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the rows as JSON")
    return p


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        item = item.strip().lower()
        try:
            w, h = (int(v) for v in item.split("x")) if "x" in item else (int(item), int(item))
        except ValueError:
            raise ValueError(f"--sizes: {item!r} is not N or WxH") from None
        if w < 1 or h < 1:
            raise ValueError(f"--sizes: {item!r} must be positive")
        sizes.append((w, h))
    return sizes


def main(argv: list[str] | None = None) -> int:
    with command("igan-bench"):
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.plot.lower().endswith(".png"):
        parser.error(f"--plot {args.plot!r} must end in .png")
    if (args.backend == "onnx") != (args.model is not None):
        parser.error("--backend onnx measures an ONNX export: give it --model DIR (made by igan-export --onnx DIR)"
                     if args.backend == "onnx" else f"--model DIR is the export of --backend onnx, not {args.backend}")
    if args.model is not None and args.checkpoint is not None:
        parser.error("--model and --checkpoint exclude each other (the export carries its weights)")
    refuse_unsafe_paths(parser, {"--checkpoint": args.checkpoint, "--model": args.model},
                        {"--plot": args.plot, "--json": args.json})
    try:
        sizes = parse_sizes(args.sizes)
    except ValueError as e:
        parser.error(str(e))
    return guarded("igan-bench", lambda: _run(args, sizes))


def _run(args, sizes) -> int:
    cpu.unpin_onednn_for(args.precision)  # bf16: oneDNN's own bf16 kernels (engine/cpu.py), before its first use
    import torch
    from tqdm import tqdm

    from .. import sources
    from .bench_plot import plot_rows
    from ..pipeline import default_budget, tile_rule
    from ..renderer import Renderer
    from ..runner import PRECISIONS

    if args.threads:
        torch.set_num_threads(args.threads)
    source = args.model if args.backend == "onnx" else args.checkpoint
    model = sources.load(source, args.config, random_weights=args.random_weights)
    # each backend resolves "auto" its way
    runner = sources.make_runner(args.backend, model, args.device, args.precision, args.cpu_path)
    device = runner.device  # where inputs are made and outputs land (the host for onnx)
    renderer = Renderer(runner)
    cpu_path = runner.path if runner.name == "torch" and device.type == "cpu" else "exact"
    budget = args.memory_budget or default_budget(device, cpu_path)
    rows = []
    common = dict(batch=args.batch, memory_budget=budget, itemsize=PRECISIONS[args.precision].itemsize,
                  repeats=args.repeats, tiles=tile_rule(cpu_path))
    for w, h in tqdm(sizes, unit="size", desc="igan-bench", file=sys.stderr, dynamic_ncols=True):
        row = measure(renderer, model.config, w, h, tile=args.tile, **common)
        if args.baseline_tile:
            row.baseline = measure(renderer, model.config, w, h, tile=args.baseline_tile, **common)
        rows.append(row)
    what = "random weights" if args.random_weights else source or "embedded model"
    # the path that ran: the torch backend's on a CPU (exact, reference, fast-0.4); others have one each
    path = f" {runner.path}" if runner.name == "torch" and runner.device.type == "cpu" else ""
    title = (f"igan-bench: {what} ({model.config.name}), {args.backend}{path} "
             f"{args.precision} on {_where(runner)}")
    host = cpu.describe()  # the CPU, its ISA flags and the MKL/oneDNN branches: CPU figures depend on them
    print(title)
    print(f"CPU: {cpu.summary(host)}")
    print(format_table(rows, str(device)))
    plot_rows(rows, args.plot, title)
    print(f"igan-bench: plot -> {args.plot}")
    if args.json:
        tmp = Path(args.json).with_name(f".{Path(args.json).name}.igan-tmp-{os.getpid()}")
        data = [asdict(r) | {"speedup": r.speedup} for r in rows]
        tmp.write_text(json.dumps(dict(title=title, backend=args.backend, precision=args.precision, cpu=host,
                                       rows=data), indent=1))
        os.replace(tmp, args.json)
    return 0


def _where(runner) -> str:
    """Where `runner` computes, for the report's title: the device and the GPU's name or the CPU's
    threads; for the onnx backend, onnxruntime's execution provider."""
    import torch

    threads = f"{torch.get_num_threads()} threads"
    if runner.name == "onnx":
        provider = runner.providers[0].removesuffix("ExecutionProvider")
        return f"onnxruntime {provider}" + (f" ({threads})" if provider == "CPU" else "")
    if runner.device.type == "cuda":
        return f"{runner.device} ({torch.cuda.get_device_name(runner.device)})"
    return f"{runner.device} (CPU, {threads})"


if __name__ == "__main__":
    sys.exit(main())
