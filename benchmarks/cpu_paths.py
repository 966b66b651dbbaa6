"""The CPU paths against the official code's patch-by-patch generation, in one table.

For the default config (InfinityGAN preset, fixed random weights), fp32, on the CPU:

- fast:       igan-render's default CPU path (engine/fastcpu.py: oneDNN, channels-last), the
              tiles the planner picks from the default 1 GiB budget;
- bit-exact:  the reference path (--bit-exact: im2col + GEMM, MKL strict), the same tiles;
- official:   the official InfinityGAN manager's work (the official code's
              InfiniteGenerationManager): a meta canvas of ceil((H - 101) / 96) + 3 patches per
              axis on a 96-px step, each a 101-px patch from its own 35x35 z_l window (11
              texture cells and the 12-cell structure halo), one patch per forward, then a
              centre crop. Computed with the bit-exact path's layers (plain torch convolutions,
              as the official code's; about its per-FLOP rate: the official code measured
              ~85 GFLOP/s on this machine, this path 100-110), so the ratio to it is what igan's
              tiling and its fast layers save together: the baseline of the 3x target.
- official-fast: the same patches on the fast path's layers, which isolates the tiling.

Each case runs in its own process (so its peak RSS is its own), renders one tile first to
warm oneDNN's kernels, then times the whole window (latents -> forward -> uint8 tiles, as
igan-bench). Reported: seconds, MP/s of the target image, GFLOP/s executed, the work ratio
(FLOPs executed / FLOPs of one forward over the target window) and peak RSS. Then a per-op
profile of one 256-px tile on each path: the share of time in convolutions and in the rest.

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
PATHS = ("fast", "bit-exact", "official", "official-fast")
_CONV_OPS = ("conv", "mkldnn", "_slow_conv2d", "im2col", "aten::mm", "aten::addmm", "aten::bmm")


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
    from igan.engine.pipeline import default_budget
    from igan.engine.renderer import Renderer, peak_rss_bytes

    if threads:
        torch.set_num_threads(threads)
    model = sources.load(None, CONFIG, random_weights=True)
    cfg = model.config
    runner = sources.make_runner("torch", model, "cpu", "fp32", bit_exact=path in ("bit-exact", "official"))
    renderer = Renderer(runner)
    target = planner.Window(0, -(height // 2), width, height)
    if path.startswith("official"):
        window, tile = official_window(width, height)
        plan = planner.plan(cfg, window, tile=tile)
    else:
        plan = planner.plan(cfg, target, memory_budget=default_budget(runner.device))
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
                gflops=plan.flops / seconds / 1e9, work_ratio=plan.flops / one_shot, peak_rss=peak_rss_bytes(),
                tiles=len(plan.tiles), tile=f"{plan.tile_width}x{plan.tile_height}",
                latent=f"{plan.latent_width}x{plan.latent_height}")


def profile_case(path: str, threads: int | None) -> dict:
    """Self CPU time of one 256-px tile's forward, by op, in convolutions and the rest."""
    import torch
    from torch.profiler import profile

    from igan.engine import planner, sources
    from igan.engine.latent import LatentField
    from igan.engine.renderer import Renderer

    if threads:
        torch.set_num_threads(threads)
    model = sources.load(None, CONFIG, random_weights=True)
    runner = sources.make_runner("torch", model, "cpu", "fp32", bit_exact=path == "bit-exact")
    plan = planner.plan(model.config, planner.Window(0, -128, 256, 256), tile=256)
    field = LatentField(model.config, 0)
    renderer = Renderer(runner)
    for _ in renderer.pixels(field, plan):
        pass
    with profile() as prof:
        for _ in renderer.pixels(field, plan):
            pass
    ops = {}
    for e in prof.key_averages():
        ops[e.key] = ops.get(e.key, 0.0) + e.self_cpu_time_total / 1e6
    total = sum(ops.values())
    conv = sum(v for k, v in ops.items() if any(c in k for c in _CONV_OPS))
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:8]
    return dict(path=path, total=total, conv=conv, top=top)


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
    head = ["size", "path", "seconds", "MP/s", "GFLOP/s", "work ratio", "peak RSS MiB", "tiles (latent)",
            "vs bit-exact", "vs official"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    by = {(r["width"], r["height"], r["path"]): r for r in rows}
    for r in rows:
        key = (r["width"], r["height"])
        ex, off = by.get(key + ("bit-exact",)), by.get(key + ("official",))
        lines.append("| " + " | ".join([
            f"{r['width']}x{r['height']}", r["path"], f"{r['seconds']:.1f}", f"{r['mp_per_s']:.4f}",
            f"{r['gflops']:.1f}", f"{r['work_ratio']:.3f}", f"{r['peak_rss'] / 2**20:.0f}",
            f"{r['tiles']} of {r['tile']} ({r['latent']})",
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
    p.add_argument("--path", default="fast", help=argparse.SUPPRESS)
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
    profiles = [_spawn(["--profile", "--path", path, *threads]) for path in ("fast", "bit-exact")]
    import torch

    from igan.engine import cpu

    lines = [f"# CPU paths vs the official patch-by-patch work: {CONFIG} (random weights), fp32", "",
             f"Machine: {cpu.summary()}, torch "
             f"{torch.__version__}, threads {args.threads or torch.get_num_threads()}; "
             f"{time.strftime('%Y-%m-%d')}. Command: `python benchmarks/cpu_paths.py"
             f"{' --threads ' + str(args.threads) if args.threads else ''}`", "", _table(rows), "",
             "## Per-op profile: one 256-px tile (45x45 z_l), self CPU time", ""]
    for pr in profiles:
        lines.append(f"- **{pr['path']}**: {pr['total']:.2f} s; convolutions {pr['conv'] / pr['total']:.0%}, "
                     f"the rest {1 - pr['conv'] / pr['total']:.0%}. Top ops: "
                     + ", ".join(f"`{k}` {v:.2f} s" for k, v in pr["top"]))
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
