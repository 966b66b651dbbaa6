"""The CPU paths against the official code's patch-by-patch generation, in one table.

For the default config (InfinityGAN preset, fixed random weights), fp32, on the CPU:

- exact:      igan-render's default CPU path (engine/exactcpu.py: GEMMs in MKL's strict mode,
              Winograd anchored to the canvas, C++ epilogues; the same bytes under any split),
              the least-work tiles within its default memory budget;
- fast-0.4:   igan 0.3-0.4's default path (engine/fastcpu.py: oneDNN, channels-last), with
              0.4's tiles and budget (--cpu-path fast-0.4);
- reference:  igan 0.2's path (--cpu-path reference / --bit-exact: im2col + GEMM, MKL strict),
              the same tiles as exact;
- official:   the official InfinityGAN manager's work (the official code's
              InfiniteGenerationManager): a meta canvas of ceil((H - 101) / 96) + 3 patches per
              axis on a 96-px step, each a 101-px patch from its own 35x35 z_l window (11
              texture cells and the 12-cell structure halo), one patch per forward, then a
              centre crop. Computed with the reference path's layers (plain torch convolutions,
              as the official code's; about its per-FLOP rate: the official code measured
              ~85 GFLOP/s on this machine, this path 100-110), so the ratio to it is what igan's
              tiling and its layers save together: the baseline of the 3x target.

Each case runs in its own process (so its peak RSS is its own), renders one tile first to
warm the kernels, then times the whole window (latents -> forward -> uint8 tiles, as
igan-bench). Reported: seconds, MP/s of the target image, GFLOP/s executed (direct-conv FLOPs,
as the planner counts them, whatever algorithm computes them), its share of this machine's
fp32 GEMM rate (torch.mm of 4096 x 4096 matrices, same threads, measured in the same run),
the work ratio (FLOPs executed / FLOPs of one forward over the target window) and peak RSS.
Then a per-op profile of one 256-px tile on the exact and fast-0.4 paths: the share of time in
GEMMs/convolutions, in the C++ passes and in the rest, and the rate the GEMMs themselves run at.

    python benchmarks/cpu_paths.py --out benchmarks/results/cpu-paths-cpu-2core-DATE.md
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CONFIG = "InfinityGAN"
SIZES = [(512, 512), (1024, 1024), (2048, 512)]
PATHS = ("exact", "fast-0.4", "reference", "official")
_CONV_OPS = ("conv", "mkldnn", "_slow_conv2d", "im2col", "aten::mm", "aten::addmm", "aten::bmm")
_GEMM_OPS = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm")


def official_window(width: int, height: int):
    """(window, tile) whose tiles are the official manager's patches for a width x height
    target: the +3 patches of the meta canvas included (official-generator.md 8.2)."""
    from igan.engine import planner

    def steps(n):
        return -(-(n - 101) // 96) + 3

    w, h = 96 * steps(width), 96 * steps(height)
    return planner.Window(-(w - width) // 2, -(h // 2), w, h), 96


def run_case(path: str, width: int, height: int, threads: int | None) -> dict:
    import torch

    from igan.engine import planner, sources
    from igan.engine.cli.bench import _reset_peak_rss as reset_peak_rss
    from igan.engine.latent import LatentField
    from igan.engine.pipeline import default_budget, tile_rule
    from igan.engine.renderer import Renderer, peak_rss_bytes

    if threads:
        torch.set_num_threads(threads)
    model = sources.load(None, CONFIG, random_weights=True)
    cfg = model.config
    cpu_path = "reference" if path == "official" else path
    runner = sources.make_runner("torch", model, "cpu", "fp32", cpu_path)
    renderer = Renderer(runner)
    target = planner.Window(0, -(height // 2), width, height)
    if path == "official":
        window, tile = official_window(width, height)
        plan = planner.plan(cfg, window, tile=tile)
    else:
        plan = planner.plan(cfg, target, memory_budget=default_budget(runner.device, cpu_path),
                            tiles=tile_rule(cpu_path))
    field = LatentField(cfg, 0)
    for _ in renderer.pixels(field, plan, groups=[[plan.tiles[0]]]):  # warm-up: one tile
        pass
    reset_peak_rss()
    start = time.perf_counter()
    for _ in renderer.pixels(field, plan):
        pass
    seconds = time.perf_counter() - start
    one_shot = planner.plan(cfg, target, tile=max(width, height) + 16).flops_oneshot
    return dict(path=path, width=width, height=height, seconds=seconds, mp_per_s=width * height / 1e6 / seconds,
                gemm_gflops=gemm_rate(),
                gflops=plan.flops / seconds / 1e9, work_ratio=plan.flops / one_shot, peak_rss=peak_rss_bytes(),
                tiles=len(plan.tiles), tile=f"{plan.tile_width}x{plan.tile_height}",
                latent=f"{plan.latent_width}x{plan.latent_height}")


def gemm_rate(size: int = 4096) -> float:
    """GFLOP/s of torch.mm on two size x size fp32 matrices, here, now (best of 3)."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def _gemm_flops(name: str, shapes) -> int:
    """FLOPs of one GEMM call from its input shapes (torch profiler, record_shapes)."""
    try:
        if name == "aten::bmm":
            (b, m, k), (_, _, n) = shapes[0], shapes[1]
            return 2 * b * m * k * n
        if name == "aten::mm":
            (m, k), (_, n) = shapes[0], shapes[1]
            return 2 * m * k * n
        if name in ("aten::addmm", "aten::addmm_"):
            (m, k), (_, n) = shapes[1], shapes[2]
            return 2 * m * k * n
    except (ValueError, IndexError, TypeError):
        return 0
    return 0


def profile_case(path: str, threads: int | None) -> dict:
    """Self CPU time of one 256-px tile's forward, by op: GEMMs and convolutions, the C++ passes
    (igan::*, exact path), the rest; and the rate of the GEMMs."""
    import torch
    from torch.profiler import profile

    from igan.engine import planner, sources
    from igan.engine.latent import LatentField
    from igan.engine.renderer import Renderer

    if threads:
        torch.set_num_threads(threads)
    model = sources.load(None, CONFIG, random_weights=True)
    runner = sources.make_runner("torch", model, "cpu", "fp32", path)
    plan = planner.plan(model.config, planner.Window(0, -128, 256, 256), tile=256)
    field = LatentField(model.config, 0)
    renderer = Renderer(runner)
    for _ in renderer.pixels(field, plan):
        pass
    start = time.perf_counter()
    with profile(record_shapes=True) as prof:
        for _ in renderer.pixels(field, plan):
            pass
    wall = time.perf_counter() - start
    ops, gemm_flops, gemm_time = {}, 0, 0.0
    for e in prof.key_averages(group_by_input_shape=True):
        ops[e.key] = ops.get(e.key, 0.0) + e.self_cpu_time_total / 1e6
        if e.key in _GEMM_OPS:
            gemm_flops += _gemm_flops(e.key, e.input_shapes) * e.count
            gemm_time += e.self_cpu_time_total / 1e6
    total = sum(ops.values())
    conv = sum(v for k, v in ops.items() if any(c in k for c in _CONV_OPS))
    native = sum(v for k, v in ops.items() if k.startswith("igan::"))
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:9]
    return dict(path=path, wall=wall, total=total, conv=conv, native=native, top=top,
                gemm_gflops=gemm_flops / gemm_time / 1e9 if gemm_time else None, gemm_rate=gemm_rate())


def _child(args) -> int:
    if args.profile:
        print(json.dumps(profile_case(args.path, args.threads)))
    else:
        print(json.dumps(run_case(args.path, args.width, args.height, args.threads)))
    return 0


def _spawn(extra: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *extra], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(rows: list[dict]) -> str:
    head = ["size", "path", "seconds", "MP/s", "GFLOP/s", "share of GEMM rate", "work ratio", "peak RSS MiB",
            "tiles (latent)", "vs fast-0.4", "vs reference", "vs official"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    by = {(r["width"], r["height"], r["path"]): r for r in rows}
    for r in rows:
        key = (r["width"], r["height"])
        fast, ex, off = (by.get(key + (p,)) for p in ("fast-0.4", "reference", "official"))
        lines.append("| " + " | ".join([
            f"{r['width']}x{r['height']}", r["path"], f"{r['seconds']:.1f}", f"{r['mp_per_s']:.4f}",
            f"{r['gflops']:.1f}", f"{r['gflops'] / r['gemm_gflops']:.0%} of {r['gemm_gflops']:.0f}",
            f"{r['work_ratio']:.3f}", f"{r['peak_rss'] / 2**20:.0f}",
            f"{r['tiles']} of {r['tile']} ({r['latent']})",
            f"{r['mp_per_s'] / fast['mp_per_s']:.2f}x" if fast else "",
            f"{r['mp_per_s'] / ex['mp_per_s']:.2f}x" if ex else "",
            f"{r['mp_per_s'] / off['mp_per_s']:.2f}x" if off else ""]) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="write the report (markdown) here")
    p.add_argument("--sizes", default=",".join(f"{w}x{h}" for w, h in SIZES))
    p.add_argument("--paths", default=",".join(PATHS))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--path", default="exact", help=argparse.SUPPRESS)
    p.add_argument("--width", type=int, default=512, help=argparse.SUPPRESS)
    p.add_argument("--height", type=int, default=512, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return _child(args)
    threads = ["--threads", str(args.threads)] if args.threads else []
    rows = []
    keep = Path(args.out).with_suffix(".json") if args.out else None
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        for path in args.paths.split(","):
            row = _spawn(["--path", path, "--width", str(w), "--height", str(h), *threads])
            print(f"{w}x{h} {path:<10} {row['seconds']:7.1f} s  {row['mp_per_s']:.4f} MP/s  "
                  f"{row['gflops']:.1f} GFLOP/s  work {row['work_ratio']:.3f}  "
                  f"RSS {row['peak_rss'] / 2**20:.0f} MiB", flush=True)
            rows.append(row)
            if keep:  # the raw rows, kept as they come (a long run's figures survive its interruption)
                keep.write_text(json.dumps(rows, indent=1))
    profiles = [_spawn(["--profile", "--path", path, *threads]) for path in ("exact", "fast-0.4")]
    import torch

    from igan.engine import cpu

    lines = [f"# CPU paths vs the official patch-by-patch work: {CONFIG} (random weights), fp32", "",
             f"Machine: {cpu.summary()}, torch "
             f"{torch.__version__}, threads {args.threads or torch.get_num_threads()}; "
             f"{time.strftime('%Y-%m-%d')}. Command: `python benchmarks/cpu_paths.py"
             f"{' --threads ' + str(args.threads) if args.threads else ''}`", "", _table(rows), "",
             "GFLOP/s counts the direct convolutions' FLOPs (as the planner does) whatever computes "
             "them, so Winograd's saved multiplies show as a share of the GEMM rate above what GEMMs "
             "alone could reach.", "",
             "## Per-op profile: one 256-px tile (45x45 z_l), self CPU time", ""]
    for pr in profiles:
        gemm = (f" The GEMMs ran at {pr['gemm_gflops']:.0f} GFLOP/s, {pr['gemm_gflops'] / pr['gemm_rate']:.0%} of "
                f"torch.mm's {pr['gemm_rate']:.0f} on 4096 x 4096." if pr.get("gemm_gflops") else "")
        rest = 1 - (pr["conv"] + pr["native"]) / pr["total"]
        lines.append(f"- **{pr['path']}**: {pr['total']:.2f} s ({pr['wall']:.2f} s wall); GEMMs and convolutions "
                     f"{pr['conv'] / pr['total']:.0%}, C++ passes (Winograd's transforms, blur, epilogues) "
                     f"{pr['native'] / pr['total']:.0%}, the rest {rest:.0%}.{gemm} Top ops: "
                     + ", ".join(f"`{k}` {v:.2f} s" for k, v in pr["top"]))
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
