"""GPU report: kernel correctness on the device, a per-layer sweep against the measured
matmul rate, and end-to-end renders of the default config, as one table saved under
benchmarks/results/<device>-<date>.md.

    python benchmarks/gpu_report.py [--size 8192] [--quick]

Needs a CUDA device; the weights are random (speed does not depend on them).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import igan.engine  # noqa: E402,F401
from igan.engine import planner  # noqa: E402
from igan.engine.checkpoint import init_deterministic  # noqa: E402
from igan.engine.config import PRESETS  # noqa: E402
from igan.engine.latent import LatentField  # noqa: E402
from igan.engine.model import Generator  # noqa: E402
from igan.engine.renderer import Renderer  # noqa: E402
from igan.engine.runner import RUNNERS  # noqa: E402
from layers import LAYERS, make_case, matmul_peak, time_call  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class NullSink:
    """Discards tiles: times the render without the encoder."""

    def write(self, x, y, tile):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def correctness(lines):
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE.parent / "tests" / "test_kernels.py"),
           str(HERE.parent / "tests" / "test_latent.py"), str(HERE.parent / "tests" / "test_gpu.py")]
    env = dict(os.environ, TRITON_INTERPRET="0")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-500:]
    lines.append(f"- kernel and GPU tests (`pytest tests/test_kernels.py tests/test_latent.py tests/test_gpu.py`): "
                 f"exit {done.returncode}: {tail}")
    if done.returncode:
        print(done.stdout[-4000:], done.stderr[-2000:], file=sys.stderr)


def sweep(lines, sizes, batch):
    device = torch.device("cuda")
    lines += ["", "## Layers (bf16 storage, fp32 accumulation)", ""]
    peak = matmul_peak(device, torch.bfloat16)
    lines.append(f"Measured dense bf16 matmul (8192^3): **{peak:.0f} TFLOP/s**.")
    lines += ["", "| layer | official (grouped) | igan torch | fused Triton | Triton % of matmul |",
              "| --- | --- | --- | --- | --- |"]
    for size in sizes:
        for layer in LAYERS:
            case = make_case(*layer, size=size, batch=batch, device=device, dtype=torch.bfloat16)
            rates = {k: case.flops / time_call(fn, device) / 1e12 for k, fn in case.run.items()}
            lines.append(f"| {case.name} | {rates['official']:.1f} | {rates['torch']:.1f} | "
                         f"{rates['triton']:.1f} | {100 * rates['triton'] / peak:.0f}% |")
            print(lines[-1], flush=True)


def render(lines, size, backends, precisions, tile, batch):
    cfg = PRESETS["InfinityGAN"]
    model = init_deterministic(Generator(cfg), 0)
    window = planner.Window(0, -size // 2, size, size)
    field = LatentField(cfg, seed=0)
    lines += ["", f"## End to end: {size}x{size}, default config, one GPU (encoder excluded)", "",
              "| backend | precision | tile | tiles | work ratio | seconds | MP/s | TFLOP/s | peak GPU memory |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for backend in backends:
        for precision in precisions:
            runner = RUNNERS[backend](model, "cuda", precision)
            budget = int(torch.cuda.mem_get_info()[0] * 0.6)
            plan = planner.plan(cfg, window, tile=tile, batch=batch, memory_budget=budget,
                                itemsize=DTYPES[precision].itemsize)
            r = Renderer(runner)
            warm = planner.plan(cfg, planner.Window(0, 0, plan.tile_width, plan.tile_height), tile=tile or plan.tile_width)
            r.render(field, warm, NullSink(), progress=False)  # compile kernels, warm the allocator
            stats = r.render(field, plan, NullSink(), batch=batch, progress=False)
            lines.append(f"| {backend} | {precision} | {plan.tile_width} | {len(plan.tiles)} | {plan.work_ratio:.3f} | "
                         f"{stats.seconds:.2f} | {stats.mp_per_s:.1f} | {stats.tflops:.0f} | "
                         f"{(stats.peak_device or 0) / 2**30:.1f} GiB |")
            print(lines[-1], flush=True)
            del runner
            torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--tile", type=int, default=None)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="fewer sizes and precisions")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--out", default=None, help="results file (default benchmarks/results/<device>-<date>.md)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_report: no CUDA device")
    name = torch.cuda.get_device_name()
    import triton

    lines = [f"# GPU report: {name}", "",
             f"{datetime.date.today()}, torch {torch.__version__}, triton {triton.__version__}, "
             f"CUDA {torch.version.cuda}, host {platform.node()}", ""]
    start = time.perf_counter()
    if not args.skip_tests:
        correctness(lines)
    sweep(lines, [512] if args.quick else [256, 1024], batch=2)
    render(lines, args.size, ["torch", "triton"], ["bf16"] if args.quick else ["bf16", "fp16", "fp32"],
           args.tile, args.batch)
    lines += ["", f"Report took {time.perf_counter() - start:.0f} s."]
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    out = Path(args.out or HERE / "results" / f"{slug}-{datetime.date.today()}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
