"""The bytes users rely on, as sha256 hashes: the README's renders, style fusion, the wrapped
panorama, TIFF and Zarr outputs, outpainting and inbetweening, all with the embedded model
on the CPU. Record them before a change and check them after, so that a change of bytes is
a decision, never an accident:

    python benchmarks/output_hashes.py --write benchmarks/results/output-hashes.json   # before
    python benchmarks/output_hashes.py --check benchmarks/results/output-hashes.json   # after

`--checkpoint builtin:landscapes-v1` renders every case (the inversion too) with the default
model of igan 0.1-0.3, and `--extra-args` adds options to every command that draws the canvas.
With both, the earlier versions' bytes, which igan must still reproduce:

- `--extra-args "--latent-rng v1 --no-metadata --bit-exact"`: igan 0.1's
  (benchmarks/results/output-hashes-v1.json; 0.1's TIFF default, zstd, is the case tiff-zstd);
- `--extra-args "--bit-exact --no-metadata"`: igan 0.2's pixels and files without their
  metadata (benchmarks/results/output-hashes-0.2.json; 0.2 computed everything on the
  bit-exact CPU path);
- `--extra-args "--no-metadata"`: igan 0.3's (benchmarks/results/output-hashes-0.3.json).

Each case runs the real console command in a fresh folder (only the igan package and the
interpreter are taken from this environment). Zarr outputs are hashed by their decoded values
(chunk bytes may differ in compression framing) and inversion records by their tensors and
metadata (safetensors writes the metadata in hash-map order), everything else by its bytes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RENDER = [sys.executable, "-m", "igan.engine.cli.render", "--device", "cpu", "--quiet"]
APPS = [sys.executable, "-c", "import sys; from igan.engine.cli import apps as apps_cli; "
        "sys.exit(getattr(apps_cli, sys.argv[1])(sys.argv[2:]))"]

# name -> (command, output file); {d} is the case folder. The README's commands first.
CASES = {
    "readme-first-command": (RENDER + ["--width", "8192", "--height", "256", "--out", "{d}/panorama.png"],
                             "panorama.png"),
    "readme-first-command-seed7": (RENDER + ["--width", "8192", "--height", "256", "--seed", "7", "--out",
                                             "{d}/panorama.png"], "panorama.png"),  # the README's since 0.4
    "readme-default-sample": (RENDER + ["--width", "1024", "--height", "256", "--seed", "1", "--out", "{d}/s.png"],
                              "s.png"),
    "tiff-pyramid": (RENDER + ["--width", "1500", "--height", "700", "--seed", "7", "--out", "{d}/p.tif"], "p.tif"),
    "tiff-zstd": (RENDER + ["--width", "1500", "--height", "700", "--seed", "7", "--compression", "zstd",
                            "--out", "{d}/p.tif"], "p.tif"),
    "zarr": (RENDER + ["--width", "640", "--height", "300", "--seed", "2", "--out", "{d}/z.zarr"], "z.zarr"),
    "preview": (RENDER + ["--width", "2000", "--height", "256", "--seed", "4", "--preview", "{d}/pv.png",
                          "--out", "{d}/pv-main.png"], "pv.png"),
    "fusion-three-styles": (RENDER + ["--width", "4096", "--height", "512", "--styles", "3,17,42",
                                      "--style-blur", "255", "--out", "{d}/fused.png"], "fused.png"),
    "fusion-centres": (RENDER + ["--width", "2048", "--height", "512", "--styles", "3,17",
                                 "--style-centers", "0.2,0.3:0.8,0.7", "--out", "{d}/two.png"], "two.png"),
    "wrap-360": (RENDER + ["--width", "2224", "--height", "512", "--wrap", "--out", "{d}/pano360.png"],
                 "pano360.png"),
    "wrap-fused": (RENDER + ["--width", "1024", "--height", "256", "--wrap", "--styles", "5,6", "--out",
                             "{d}/wf.png"], "wf.png"),
    # outpainting and inbetweening from a short inversion of a rendered crop (see _prepare)
    "invert-record": (APPS + ["invert_main", "{d}/../target.png", "--steps", "30", "--device", "cpu", "--quiet",
                              "--out", "{d}/rec.safetensors"], "rec.safetensors"),
    "outpaint": (APPS + ["outpaint_main", "{d}/../rec.safetensors", "--width", "512", "--height", "192",
                         "--seed", "3", "--device", "cpu", "--quiet", "--out", "{d}/wide.png"], "wide.png"),
    "inbetween": (APPS + ["inbetween_main", "{d}/../rec.safetensors", "{d}/../rec.safetensors", "--gap", "256",
                          "--device", "cpu", "--quiet", "--out", "{d}/between.png"], "between.png"),
}


def _digest(path: Path) -> str:
    if path.suffix == ".safetensors":  # by content: safetensors writes its metadata in hash-map order
        from safetensors import safe_open

        h = hashlib.sha256()
        with safe_open(str(path), framework="np") as f:
            h.update(json.dumps(f.metadata(), sort_keys=True).encode())
            for key in sorted(f.keys()):
                t = f.get_tensor(key)
                h.update(f"{key} {t.shape} {t.dtype}".encode())
                h.update(t.tobytes())
        return "content:" + h.hexdigest()
    if path.is_dir():  # a Zarr store: its decoded values, shape and dtype
        import numpy as np
        import zarr

        a = zarr.open_array(str(path), mode="r")[:]
        h = hashlib.sha256(f"{a.shape} {a.dtype}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
        return "values:" + h.hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _with(cmd: list[str], extra: list[str], checkpoint: str | None = None) -> list[str]:
    """`checkpoint` given to every command, and `extra` options added to a command that draws
    the canvas (igan-invert does not)."""
    model = [] if checkpoint is None else ["--checkpoint", checkpoint]
    return cmd + model + ([] if "invert_main" in cmd else extra)


def _prepare(root: Path, extra: list[str], checkpoint: str | None = None) -> None:
    """The inversion target (a crop the model can draw) and the record the apps start from."""
    subprocess.run(_with(RENDER, extra, checkpoint) + ["--width", "96", "--height", "64", "--seed", "9", "--out",
                                                       str(root / "target.png")], check=True, capture_output=True)
    case = root / "rec"
    case.mkdir()
    cmd, name = CASES["invert-record"]
    subprocess.run([c.format(d=case) for c in _with(cmd, [], checkpoint)], check=True, capture_output=True)
    (root / "rec.safetensors").write_bytes((case / name).read_bytes())


def compute(names: list[str], extra: list[str] = (), checkpoint: str | None = None) -> dict[str, str]:
    out, extra = {}, list(extra)
    with tempfile.TemporaryDirectory(prefix="igan-hashes-") as tmp:
        root = Path(tmp)
        _prepare(root, extra, checkpoint)
        for name in names:
            cmd, file = CASES[name]
            case = root / name
            case.mkdir()
            start = time.perf_counter()
            done = subprocess.run([c.format(d=case) for c in _with(cmd, extra, checkpoint)], capture_output=True,
                                  text=True)
            if done.returncode != 0:
                raise SystemExit(f"{name}: exit {done.returncode}: {done.stderr.strip()[-2000:]}")
            out[name] = _digest(case / file)
            print(f"{name:24s} {out[name][:16]}  ({time.perf_counter() - start:.1f} s)", flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--write", metavar="JSON", help="record the hashes in JSON")
    g.add_argument("--check", metavar="JSON", help="compare with the hashes recorded in JSON (exit 1 on a change)")
    p.add_argument("--only", default=None, help="comma-separated case names (default: all)")
    p.add_argument("--checkpoint", default=None, metavar="MODEL",
                   help="the model of every case, e.g. builtin:landscapes-v1 (default: the embedded model)")
    p.add_argument("--extra-args", default="", metavar="ARGS",
                   help="options added to every command that draws the canvas, e.g. '--latent-rng v1 --no-metadata'")
    args = p.parse_args(argv)
    names = args.only.split(",") if args.only else list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        p.error(f"unknown cases {unknown}; known: {', '.join(CASES)}")
    got = compute(names, shlex.split(args.extra_args), args.checkpoint)
    if args.write:
        Path(args.write).write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        print(f"wrote {len(got)} hashes to {args.write}")
    if args.check:
        want = json.loads(Path(args.check).read_text())
        new = [n for n in got if n not in want]  # cases added after that file was recorded
        for n in new:
            print(f"not in {args.check} (a newer case): {n}")
        changed = [n for n in got if n in want and want[n] != got[n]]
        for n in changed:
            print(f"CHANGED {n}: {want.get(n)} -> {got[n]}")
        print(f"{len(got) - len(new) - len(changed)}/{len(got) - len(new)} unchanged")
        return 1 if changed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
