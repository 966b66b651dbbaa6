"""GPU report: kernel correctness on the device, a per-layer sweep against the measured
matmul rate, a block-config sweep of the fused conv, end-to-end renders of the default
config (in process, and through igan-render writing a file), as one table saved under
benchmarks/results/<device>-<date>.md.

    python benchmarks/gpu_report.py [--size 8192] [--quick]

Needs a CUDA device; the weights are random (speed does not depend on them).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import json
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import igan.engine  # noqa: E402,F401
from igan.engine import cpu, planner  # noqa: E402
from igan.engine import checkpoint  # noqa: E402
from igan.engine.checkpoint import init_deterministic  # noqa: E402
from igan.engine.config import PRESETS  # noqa: E402
from igan.engine.latent import LatentField  # noqa: E402
from igan.engine.model import Generator  # noqa: E402
from igan.engine.renderer import Renderer  # noqa: E402
from igan.engine.sources import RUNNERS  # noqa: E402
from layers import LAYERS, config_sweep, make_case, matmul_peak, time_call  # noqa: E402

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


def budget(lines, size, peak):
    """What the target asks of the kernels: the FLOPs of a size x size render of the
    default config and the time they take at the measured matmul rate."""
    cfg = PRESETS["InfinityGAN"]
    p = planner.plan(cfg, planner.Window(0, -size // 2, size, size), tile=2048)
    lines += ["", f"{size}x{size} with the default config is {p.flops / 1e12:.0f} TFLOP "
                  f"({p.flops / size**2 / 1e6:.2f} MFLOP per pixel, 2048-px tiles, work ratio {p.work_ratio:.3f}): "
                  f"{p.flops / peak / 1e12:.2f} s at the measured matmul rate, "
                  f"{2 * p.flops / peak / 1e12:.2f} s at half of it."]


def sweep(lines, sizes, batch):
    device = torch.device("cuda")
    lines += ["", "## Layers (bf16 storage, fp32 accumulation)", ""]
    peak = matmul_peak(device, torch.bfloat16)
    lines.append(f"Measured dense bf16 matmul (8192^3): **{peak:.0f} TFLOP/s**.")
    budget(lines, 8192, peak)
    lines += ["", "| layer | official (grouped) | igan torch | fused Triton | Triton % of matmul |",
              "| --- | --- | --- | --- | --- |"]
    for size in sizes:
        for layer in LAYERS:
            case = make_case(*layer, size=size, batch=batch, device=device, dtype=torch.bfloat16)
            rates = {k: case.flops / time_call(fn, device) / 1e12 for k, fn in case.run.items()}
            lines.append(f"| {case.name} | {rates['official']:.1f} | {rates['torch']:.1f} | "
                         f"{rates['triton']:.1f} | {100 * rates['triton'] / peak:.0f}% |")
            print(lines[-1], flush=True)
    return peak


def tune(lines, peak, size=512, batch=2, top=5):
    """Block configs of the fused conv on the layers that carry the FLOPs: the runner's
    default against the best of the sweep (update conv.default_config from this)."""
    device = torch.device("cuda")
    lines += ["", f"## Block-config sweep (bf16, {size}px x{batch}; default = the runner's pick)", "",
              "| layer | config (M,N,K / warps / stages) | TFLOP/s | % of matmul |", "| --- | --- | --- | --- |"]
    for layer in LAYERS:
        if layer[1] not in ("conv", "up", "ss"):
            continue
        case = make_case(*layer, size=size, batch=batch, device=device, dtype=torch.bfloat16)
        results = config_sweep(case, device, itemsize=2)
        ranked = sorted((r for r in results if not isinstance(r[1], str)), key=lambda r: -r[1])
        shown = ranked[:top] + [r for r in results[:1] if r not in ranked[:top] and not isinstance(r[1], str)]
        for cfg, rate in shown:
            tag = " (default)" if cfg == case.default else ""
            lines.append(f"| {case.name} | {cfg.block_m},{cfg.block_n},{cfg.block_k} / {cfg.num_warps} / "
                         f"{cfg.num_stages}{tag} | {rate:.1f} | {100 * rate / peak:.0f}% |")
            print(lines[-1], flush=True)
        failed = [f"{c.block_m},{c.block_n},{c.block_k}/{c.num_warps}/{c.num_stages}: {r}" for c, r in results
                  if isinstance(r, str)]
        if failed:
            lines.append(f"| {case.name} | failed: {'; '.join(failed)} | | |")


def _script(name: str) -> str:
    """A console script of this environment (the venv need not be activated)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def cli(lines, size, precision="bf16"):
    """igan-render end to end (process start, model load, kernels, encoder, file) on a
    random-weight checkpoint of the default config."""
    lines += ["", f"## igan-render end to end: {size}x{size}, default config, one GPU", "",
              "| command | seconds | MP/s | TFLOP/s | peak GPU memory | file |", "| --- | --- | --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = checkpoint.save(init_deterministic(Generator(PRESETS["InfinityGAN"]), 0), Path(tmp) / "random.safetensors")
        for out in ("out.tif", "out.zarr"):
            stats = Path(tmp) / "stats.json"
            cmd = [_script("igan-render"), "--checkpoint", str(ckpt), "--width", str(size), "--height", str(size),
                   "--backend", "triton", "--precision", precision, "--out", str(Path(tmp) / out),
                   "--stats-json", str(stats), "--quiet"]
            start = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - start
            shown = " ".join(["igan-render"] + cmd[1:-3]).replace(tmp + os.sep, "")
            if done.returncode:
                lines.append(f"| `{shown}` | failed (exit {done.returncode}): {done.stderr.strip()[-300:]} | | | | |")
            else:
                st = json.loads(stats.read_text())
                lines.append(f"| `{shown}` | {wall:.2f} (render {st.get('seconds', float('nan')):.2f}) | "
                             f"{size * size / 1e6 / wall:.1f} | {st.get('tflops', float('nan')):.0f} | "
                             f"{(st.get('peak_device') or 0) / 2**30:.1f} GiB | {out} |")
            print(lines[-1], flush=True)


def enqueue_times(runner, field, plan, batch, rounds=3):
    """(host seconds to enqueue one batch, seconds until the device has run it), best of rounds."""
    prepared = runner.prepare(field)
    cells = [(t.cell_row, t.cell_col) for t in plan.tiles[:batch]]
    host = device = float("inf")
    for _ in range(rounds):
        inputs = runner.inputs(field, cells, plan.latent_height, plan.latent_width)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        runner.run(prepared, inputs)
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        host, device = min(host, t1 - t0), min(device, t2 - t0)
    return host, device


def render(lines, size, backends, precisions, tile, batch):
    cfg = PRESETS["InfinityGAN"]
    model = init_deterministic(Generator(cfg), 0)
    window = planner.Window(0, -size // 2, size, size)
    field = LatentField(cfg, seed=0)
    lines += ["", f"## End to end: {size}x{size}, default config, one GPU (encoder excluded)", "",
              "Host ms/batch: the time the runner takes to enqueue one batch's kernels; device ms/batch: "
              "until they finish. Host well under device means launches are hidden behind the GPU's work, "
              "and CUDA graphs would gain nothing.", "",
              "| backend | precision | tile | tiles | work ratio | seconds | MP/s | TFLOP/s | peak GPU memory "
              "| host ms/batch | device ms/batch |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
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
            host, device = enqueue_times(runner, field, plan, batch)
            lines.append(f"| {backend} | {precision} | {plan.tile_width} | {len(plan.tiles)} | {plan.work_ratio:.3f} | "
                         f"{stats.seconds:.2f} | {stats.mp_per_s:.1f} | {stats.tflops:.0f} | "
                         f"{(stats.peak_device or 0) / 2**30:.1f} GiB | {1e3 * host:.1f} | {1e3 * device:.1f} |")
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
             f"CUDA {torch.version.cuda}, host {platform.node()}", "", f"Host CPU: {cpu.summary()}", ""]
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    out = Path(args.out or HERE / "results" / f"{slug}-{datetime.date.today()}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    state = {"peak": None}

    def layers():
        state["peak"] = sweep(lines, [512] if args.quick else [256, 1024], batch=2)

    sections = [] if args.skip_tests else [("kernel and GPU tests", lambda: correctness(lines))]
    sections += [("layers", layers)]
    if not args.quick:
        sections += [("block-config sweep", lambda: tune(lines, state["peak"] or matmul_peak(torch.device("cuda"),
                                                                                             torch.bfloat16)))]
    sections += [("end to end", lambda: render(lines, args.size, ["torch", "triton"],
                                               ["bf16"] if args.quick else ["bf16", "fp16", "fp32"],
                                               args.tile, args.batch)),
                 ("igan-render", lambda: cli(lines, args.size))]
    for title, section in sections:
        # one failing section must not cost the others (GPU time is scarce), and the file is
        # rewritten after each, so a run killed at its time limit keeps what it measured
        try:
            section()
        except Exception:
            lines += ["", f"**{title} failed:**", "", "```", traceback.format_exc()[-3000:], "```"]
            print(lines[-2], file=sys.stderr, flush=True)
            torch.cuda.empty_cache()
        out.write_text("\n".join(lines + ["", f"(report in progress: {time.perf_counter() - start:.0f} s)"]) + "\n")
    lines += ["", f"Report took {time.perf_counter() - start:.0f} s."]
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"saved {out}")

if __name__ == "__main__":
    main()
