"""The bytes users rely on, as sha256 hashes: the README's renders, style fusion, the wrapped
panorama, TIFF and Zarr outputs, outpainting and inbetweening, all with the embedded model
on the CPU. Record them before a change and check them after, so that a change of bytes is
a decision, never an accident:

    python benchmarks/output_hashes.py --write benchmarks/results/output-hashes.json   # before
    python benchmarks/output_hashes.py --check benchmarks/results/output-hashes.json   # after

`--checkpoint builtin:landscapes-v1` renders every case (the inversion too) with the default
model of igan 0.1-0.3, and `--extra-args` adds options to every command that draws the canvas.
With both, the earlier versions' bytes, which igan must still reproduce:

- `--extra-args "--latent-rng v1 --no-metadata --bit-exact"` (--bit-exact is --cpu-path reference): igan 0.1's
  (benchmarks/results/output-hashes-v1.json; 0.1's TIFF default, zstd, is the case tiff-zstd);
- `--extra-args "--bit-exact --no-metadata"`: igan 0.2's pixels and files without their
  metadata (benchmarks/results/output-hashes-0.2.json; 0.2 computed everything on the
  bit-exact CPU path);
- `--extra-args "--cpu-path fast-0.4 --no-metadata"`: igan 0.3's
  (benchmarks/results/output-hashes-0.3.json; 0.3 rendered on the path 0.5 calls fast-0.4).

Without --checkpoint (the default model of 0.4 on), `--extra-args "--cpu-path fast-0.4
--no-metadata"` gives igan 0.4's (benchmarks/results/output-hashes-0.4.json), and no extra
arguments 0.5's, metadata included (benchmarks/results/output-hashes.json).

Some of these bytes are per CPU unless MKL and oneDNN are held to their AVX2 branch (igan does
by default, engine/cpu.py::PINS; README, "Reproducibility"), and even then MKL's GEMMs give
other bytes on Intel CPUs with AVX-512 than on the AVX2 family (AVX2-only CPUs and AMD's):
each such family has its own files, `<name>.<family>.json` (engine/cpu.py::bytes_family), and
`--check` takes the file of this CPU's family by itself. A file also records the CPU its
hashes were taken on (the "_cpu" entry: model, ISA flags, the effective MKL/oneDNN branches, the
thread count), `--check` prints that CPU next to this one, and `--report MD` writes the outcome
of every case with both CPUs. `--write` refuses to replace a file whose hashes differ (a file
recorded on another CPU is the reference that CPU's bytes are checked against) unless `--force`.
With MKL_CBWR and ONEDNN_MAX_CPU_ISA set in the environment (they win over igan's defaults), a
machine with wider vectors computes what another branch computes, e.g. `MKL_CBWR=AUTO,STRICT
ONEDNN_MAX_CPU_ISA=ALL` for its own native bytes.

Each case runs the real console command in a fresh folder (only the igan package and the
interpreter are taken from this environment). Zarr outputs are hashed by their decoded values
(chunk bytes may differ in compression framing) and inversion records by their tensors and
metadata (safetensors writes the metadata in hash-map order), everything else by its bytes.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from igan.engine import cpu  # torch-free; importing igan.engine sets its MKL/oneDNN defaults here

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


CPU_KEY = "_cpu"  # not a case: the CPU a file's hashes were taken on


def this_cpu() -> dict:
    """This CPU as the cases' processes see it (engine/cpu.py::describe, asked in a process like
    theirs, so MKL's effective branch and ATen's ISA are the ones they compute with)."""
    done = subprocess.run([sys.executable, "-c", "import json, torch; import igan.engine.model; "
                           "from igan.engine import cpu; print(json.dumps(cpu.describe() | "
                           "{'torch_threads': torch.get_num_threads(), 'torch': torch.__version__}))"],
                          capture_output=True, text=True)
    if done.returncode == 0:
        return json.loads(done.stdout.strip().splitlines()[-1])
    return cpu.describe()


def family_of(d: dict | None) -> str:
    """The bytes family (cpu.bytes_family) of the CPU a file was recorded on; files from before
    igan recorded CPUs come from the AVX2-only machine: "avx2"."""
    return cpu.bytes_family(d) if d and "model" in d else "avx2"


def family_file(path: str, here: dict) -> str:
    """The file to check this CPU against: `path` when it was recorded on this CPU's bytes
    family, else its sibling `<stem>.<family>.json` for this family when there is one (said)."""
    mine, recorded = cpu.bytes_family(here), family_of(json.loads(Path(path).read_text()).get(CPU_KEY))
    if mine == recorded:
        return path
    base = Path(path)
    stem = base.stem.rsplit(".", 1)[0] if base.stem.endswith(f".{recorded}") else base.stem
    sibling = base.with_name(f"{stem}.json" if mine == "avx2" else f"{stem}.{mine}.json")
    if sibling.exists():
        print(f"{path} holds the bytes of the {recorded!r} CPU family; this CPU is of the {mine!r} family: checking "
              f"{sibling}", flush=True)
        return str(sibling)
    print(f"{path} holds the bytes of the {recorded!r} CPU family and none are recorded for this CPU's, {mine!r} "
          f"(cpu.bytes_family): expect changes; record them with --write {sibling}", flush=True)
    return path


def _cpu_line(d: dict | None) -> str:
    if not d:
        return "not recorded"
    if "note" in d and "model" not in d:
        return d["note"]
    line = cpu.summary(d)
    extra = ", ".join(f"{k} {d[k]}" for k in ("torch_threads", "torch", "recorded") if d.get(k) is not None)
    return line + (f" [{extra}]" if extra else "") + (f" ({d['note']})" if d.get("note") else "")


def _report(path: str, check: str, want: dict, got: dict, here: dict, argv: list[str]) -> None:
    rec = want.get(CPU_KEY)
    lines = [f"# Output hashes of {check} checked on {here.get('model')}", "",
             f"- recorded on: {_cpu_line(rec)}", f"- checked on: {_cpu_line(here)}",
             f"- {datetime.date.today().isoformat()}; command: `python benchmarks/output_hashes.py "
             f"{shlex.join(argv)}`",
             "- environment: " + ", ".join(f"{k}={os.environ.get(k, 'unset')}" for k in cpu.SWITCHES),
             "", "| case | recorded | here | outcome |", "| --- | --- | --- | --- |"]
    for n, h in got.items():
        w = want.get(n)
        outcome = "not recorded" if w is None else ("same" if w == h else "**CHANGED**")
        lines.append(f"| {n} | {(w or '')[:24]} | {h[:24]} | {outcome} |")
    same = sum(1 for n in got if want.get(n) == got[n])
    lines += ["", f"{same}/{sum(1 for n in got if n in want)} unchanged"]
    Path(path).write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


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
    p.add_argument("--report", default=None, metavar="MD", help="with --check: write each case's outcome and both CPUs")
    p.add_argument("--force", action="store_true", help="with --write: replace a file whose hashes differ")
    args = p.parse_args(argv if argv is not None else sys.argv[1:])
    argv = argv if argv is not None else sys.argv[1:]
    names = args.only.split(",") if args.only else list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        p.error(f"unknown cases {unknown}; known: {', '.join(CASES)}")
    here = this_cpu()
    print(f"this CPU: {_cpu_line(here)}", flush=True)
    if args.check:
        args.check = family_file(args.check, here)
        want = json.loads(Path(args.check).read_text())
        print(f"recorded on: {_cpu_line(want.get(CPU_KEY))}", flush=True)
    if args.write and Path(args.write).exists() and not args.force:
        old = json.loads(Path(args.write).read_text())
        if old.get(CPU_KEY, {}).get("model") != here.get("model"):
            print(f"{args.write} was recorded on {_cpu_line(old.get(CPU_KEY))}", flush=True)
    got = compute(names, shlex.split(args.extra_args), args.checkpoint)
    if args.write:
        old = json.loads(Path(args.write).read_text()) if Path(args.write).exists() else {}
        differ = [n for n in got if n in old and old[n] != got[n]]
        if differ and not args.force:
            print(f"not written: {len(differ)} hashes differ from those {args.write} holds ({', '.join(differ)}), "
                  f"recorded on {_cpu_line(old.get(CPU_KEY))}; write another file, or give --force", flush=True)
            return 1
        record = {k: v for k, v in old.items() if k != CPU_KEY and k not in got} | got
        record[CPU_KEY] = here | {"recorded": datetime.date.today().isoformat()}
        Path(args.write).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        print(f"wrote {len(got)} hashes to {args.write}")
    if args.check:
        new = [n for n in got if n not in want]  # cases added after that file was recorded
        for n in new:
            print(f"not in {args.check} (a newer case): {n}")
        changed = [n for n in got if n in want and want[n] != got[n]]
        for n in changed:
            print(f"CHANGED {n}: {want.get(n)} -> {got[n]}")
        print(f"{len(got) - len(new) - len(changed)}/{len(got) - len(new)} unchanged")
        if args.report:
            _report(args.report, args.check, want, got, here, argv)
        return 1 if changed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
