"""What holding MKL and oneDNN to their AVX2 branch costs on this CPU, and what it changes.

The bytes of a render, an inversion, an outpainting or an inbetweening must be the same on every
x86-64 CPU with AVX2 (README, "Reproducibility"). Two libraries choose kernels by the CPU:
MKL (its GEMM: the bit-exact path, the fast path's Winograd, the mapping network) and oneDNN
(the fast path's direct convs, and autograd's convs in the inversion). Their switches, read
once per process before the first call:

- MKL_CBWR=AVX2,STRICT: MKL's AVX2 code branch in strict mode (MKL runs a pinned branch on
  Intel CPUs only; elsewhere it keeps AUTO, engine/determinism.py);
- ONEDNN_MAX_CPU_ISA=AVX2: oneDNN's kernels no wider than AVX2.

For each setting (both off, each alone, both on), in its own process, interleaved over
--rounds rounds (the best time counts: other work on the machine only adds time), it runs:

- render-fast: igan-render --config InfinityGAN --random-weights 512x512 (the default fast path), fp32;
- render-bit-exact: the same with --bit-exact;
- render-bf16: the same in bf16 (igan-render refuses bf16 where it is slower than fp32);
- invert: igan-invert of a 96x64 render of the embedded model, --steps 30 (as output_hashes.py).

It reports seconds (the render's own time from --stats-json; the inversion's from its log),
the process's CPU seconds, and the sha256 of each output (the inversion record by content), so
the table shows both the cost of a pin and whether it changes any byte on this CPU.

    python benchmarks/cpu_pins.py --out benchmarks/results/cpu-pins-CPU-DATE.md
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from output_hashes import _digest  # noqa: E402

from igan.engine import cpu  # noqa: E402  (torch-free)

SETTINGS = {  # name -> environment (explicit values, so igan's defaults do not apply)
    "none (AUTO)": {"MKL_CBWR": "AUTO,STRICT", "ONEDNN_MAX_CPU_ISA": "ALL"},
    "MKL AVX2": {"MKL_CBWR": "AVX2,STRICT", "ONEDNN_MAX_CPU_ISA": "ALL"},
    "oneDNN AVX2": {"MKL_CBWR": "AUTO,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "both AVX2": {"MKL_CBWR": "AVX2,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}
RENDER = [sys.executable, "-m", "igan.engine.cli.render", "--device", "cpu", "--quiet", "--config", "InfinityGAN",
          "--random-weights", "--width", "512", "--height", "512"]
CASES = {
    "render-fast": RENDER,
    "render-bit-exact": RENDER + ["--bit-exact"],
    "render-bf16": RENDER + ["--precision", "bf16"],
    "invert": [sys.executable, "-c", "import sys; from igan.engine.cli import apps; "
               "sys.exit(apps.invert_main(sys.argv[1:]))", "{target}", "--steps", "30", "--device", "cpu",
               "--quiet"],
}


def _run(case: str, env: dict, root: Path, target: Path, threads: int) -> dict:
    out = root / ("rec.safetensors" if case == "invert" else "out.png")
    stats = root / "stats.json"
    for p in (out, stats):
        p.unlink(missing_ok=True)
    cmd = [c.format(target=target) for c in CASES[case]] + ["--out", str(out)]
    cmd += ["--threads", str(threads)]
    if case != "invert":
        cmd += ["--stats-json", str(stats)]
    env = env | {"OMP_NUM_THREADS": str(threads)}
    before = os.times()
    start = time.perf_counter()
    done = subprocess.run(cmd, env=os.environ | env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = os.times()
    cpu_s = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    if case == "invert":
        m = re.search(r"steps in ([0-9.]+) s", done.stderr)
        seconds = float(m.group(1)) if m else wall
    else:
        seconds = json.loads(stats.read_text())["seconds"]
    return {"seconds": seconds, "process_s": wall, "cpu_s": cpu_s, "hash": _digest(out)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of every case (default 1: a shared machine disturbs one core least)")
    p.add_argument("--only", default=None, help="comma-separated cases (default: all)")
    p.add_argument("--out", default=None, help="write the report (Markdown) here")
    args = p.parse_args(argv)
    cases = args.only.split(",") if args.only else list(CASES)
    desc = cpu.describe()
    print(cpu.summary(desc), flush=True)
    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="igan-pins-") as tmp:
        root = Path(tmp)
        target = root / "target.png"
        subprocess.run([sys.executable, "-m", "igan.engine.cli.render", "--device", "cpu", "--quiet", "--width", "96",
                        "--height", "64", "--seed", "9", "--out", str(target)], check=True)
        for r in range(args.rounds):
            for name, env in SETTINGS.items():
                for case in cases:
                    res = _run(case, env, root, target, args.threads)
                    results.setdefault((name, case), []).append(res)
                    show = res.get("error") or (f"{res['seconds']:.2f} s (cpu {res['cpu_s']:.1f} s) "
                                                f"{res['hash'][:24]}")
                    print(f"round {r + 1} {name:12s} {case:16s} {show}", flush=True)
    lines = [f"# The AVX2 pins on {desc['model']}: what they cost, what they change", "",
             f"CPU: {cpu.summary(desc)}", "",
             f"{datetime.date.today().isoformat()}, Python {sys.version.split()[0]}, {args.threads} thread(s), "
             f"best of {args.rounds} "
             f"interleaved rounds (the machine was shared: CPU seconds are the steadier figure). "
             f"Command: `python benchmarks/cpu_pins.py{' --only ' + args.only if args.only else ''} "
             f"--rounds {args.rounds} --threads {args.threads}`. The CPU line gives this process's "
             f"settings; each row runs with its own.", "",
             "| case | setting | MKL_CBWR | ONEDNN_MAX_CPU_ISA | seconds (best) | CPU s (best) | vs none | output sha256 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for case in cases:
        base = None
        for name, env in SETTINGS.items():
            runs = results[(name, case)]
            ok = [x for x in runs if "error" in x] == []
            if not ok:
                err = next(x["error"] for x in runs if "error" in x)
                lines.append(f"| {case} | {name} | {env['MKL_CBWR']} | {env['ONEDNN_MAX_CPU_ISA']} | refused | | | "
                             f"{err.replace('|', '/')} |")
                continue
            best = min(x["seconds"] for x in runs)
            best_cpu = min(x["cpu_s"] for x in runs)
            hashes = {x["hash"] for x in runs}
            base = best if base is None else base
            lines.append(f"| {case} | {name} | {env['MKL_CBWR']} | {env['ONEDNN_MAX_CPU_ISA']} | {best:.2f} | "
                         f"{best_cpu:.1f} | {best / base:.2f}x | "
                         f"{' / '.join(h.removeprefix('content:')[:16] for h in sorted(hashes))} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
        (Path(args.out).with_suffix(".json")).write_text(json.dumps(
            {"cpu": desc, "settings": SETTINGS,
             "results": {f"{n} | {c}": v for (n, c), v in results.items()}}, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
