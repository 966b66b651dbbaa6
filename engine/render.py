"""igan-render: render a window of the infinite canvas to a PNG or tiled BigTIFF file."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
from pathlib import Path

from . import determinism  # noqa: F401  (sets MKL's reproducible mode before torch computes)
from .embedded import DESCRIPTION as EMBEDDED_DESCRIPTION

FORMATS = (".png", ".tif", ".tiff", ".zarr")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _size_bytes(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4GiB, 512M)") from None
    if not math.isfinite(value) or value < 1:
        raise argparse.ArgumentTypeError(f"must be a finite size of at least one byte (e.g. 4GiB, 512M), got {text!r}")
    return int(value)


def _blur(text: str) -> int:
    from .fusion import MAX_BLUR

    value = _positive(text)
    if value > MAX_BLUR:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_BLUR} pixels (the blend of each tile is computed "
                                         f"over the tile plus the blur), got {value}")
    return value


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integer seeds, got {text!r}") from None
    if any(not 0 <= v < 2**63 for v in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be in [0, 2^63), got {text!r}")
    return seeds


def _centers(text: str) -> tuple[tuple[float, float], ...]:
    out = []
    for part in text.split(":"):
        try:
            x, y = (float(v) for v in part.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be X,Y pairs separated by ':' (fractions of the window), got {part!r} in {text!r}") from None
        if not all(math.isfinite(v) for v in (x, y)):
            raise argparse.ArgumentTypeError(f"centre {part!r} is not finite")
        out.append((x, y))
    return tuple(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="igan-render",
        description="Render a window of an InfinityGAN canvas, tile by tile, streaming to disk.",
        epilog=f"Without --checkpoint igan renders with the {EMBEDDED_DESCRIPTION}.")
    p.add_argument("--checkpoint", default=None,
                   help="official InfinityGAN checkpoint (best_fid.pth.tar) or igan .safetensors model "
                        "(default: the embedded model, see below)")
    p.add_argument("--config", default=None,
                   help="preset of an official checkpoint (default: inferred from its shapes)")
    p.add_argument("--width", type=_positive, default=2048, help="image width in pixels (default 2048)")
    p.add_argument("--height", type=_positive, default=512, help="image height in pixels (default 512)")
    p.add_argument("--x0", type=int, default=0, help="canvas column of the left edge (default 0)")
    p.add_argument("--y0", type=int, default=None,
                   help="canvas row of the top edge (default: -height//2, which centres the image on "
                        "the horizon, as the official code does)")
    p.add_argument("--seed", type=int, default=0, help="canvas seed (default 0)")
    p.add_argument("--out", default="igan.png",
                   help="output: .png, .tif/.tiff (pyramidal BigTIFF) or .zarr (Zarr v3 array) (default igan.png)")
    p.add_argument("--tile", type=_positive, default=None,
                   help="tile size in pixels, a multiple of 16 (default: from --memory-budget)")
    p.add_argument("--batch", type=_positive, default=1, help="tiles per forward pass (default 1)")
    p.add_argument("--memory-budget", type=_size_bytes, default=None,
                   help="memory for one batch of tiles, e.g. 4GiB (default: 1 GiB on CPU, where "
                        "cache-sized tiles run fastest; 60%% of free memory on GPU)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default auto)")
    p.add_argument("--gpus", type=_positive, default=None,
                   help="render on GPUs 0..N-1, one worker process each, pulling from a shared queue")
    p.add_argument("--workers", type=_positive, default=None,
                   help="with --device cpu: N worker processes sharing the CPU cores")
    p.add_argument("--resume", action="store_true",
                   help="finish an interrupted render of the same request from its finished tiles")
    p.add_argument("--restart", action="store_true", help="discard the finished tiles of an interrupted render")
    p.add_argument("--keep-work", action="store_true",
                   help="keep the work directory (tile store + manifest) after the output is written")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--backend", default="torch", choices=["torch", "triton", "onnx"],
                   help="model runner: torch (reference, any device), triton (fused kernels, CUDA) or "
                        "onnx (onnxruntime on the graphs of --model)")
    p.add_argument("--model", default=None, metavar="DIR",
                   help="with --backend onnx: the ONNX export to render (igan-export CHECKPOINT --onnx DIR)")
    p.add_argument("--preview", nargs="?", const="", default=None, metavar="PATH",
                   help="also write a low-resolution preview PNG (default path: OUT stem + .preview.png)")
    p.add_argument("--preview-size", type=_positive, default=1024, help="preview's longer side (default 1024)")
    p.add_argument("--compression", default=None,
                   help="PNG: zlib level 0-9 (default 6); TIFF: zstd, zlib or none, optionally :level")
    p.add_argument("--threads", type=_positive, default=None, help="CPU threads for torch (default: all)")
    p.add_argument("--stats-json", default=None, metavar="PATH",
                   help="also write the summary figures as JSON (for scripts and benchmarks)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    fusion = p.add_argument_group("style fusion and 360-degree panoramas")
    fusion.add_argument("--styles", type=_seeds, default=None, metavar="SEED,SEED,...",
                        help="one style (z_g) per seed, blended across the image; --seed still sets the "
                             "local content")
    fusion.add_argument("--style-centers", type=_centers, default=None, metavar="X,Y:X,Y:...",
                        help="where each style sits, as fractions of the window (0,0 = top-left, 1,1 = "
                             "bottom-right; values outside 0..1 are allowed) (default: spread evenly across "
                             "the width at mid-height)")
    fusion.add_argument("--style-map", default=None, metavar="PNG",
                        help="instead of centres: an image whose distinct colours (numbered in order of first "
                             "appearance, top-left first) say where each style goes, stretched to the window")
    fusion.add_argument("--style-blur", type=_blur, default=None, metavar="K",
                        help="width of the box blur between styles, in output pixels (default 127)")
    fusion.add_argument("--wrap", action="store_true",
                        help="cyclic panorama: the canvas repeats horizontally every --width pixels, so the "
                             "right edge continues into the left (width: a multiple of 16)")
    return p


def default_budget(device) -> int:
    import torch

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.6)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min(total // 4, 1 << 30)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """igan-render's command line, checked (argparse exits with a message on bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    ext = os.path.splitext(args.out)[1].lower()
    if ext not in FORMATS:
        parser.error(f"--out {args.out!r}: unsupported extension {ext or '(none)'!r}; use {', '.join(FORMATS)}")
    if args.tile is not None and args.tile % 16:
        parser.error(f"--tile must be a multiple of 16, got {args.tile}")
    if args.resume and args.restart:
        parser.error("--resume and --restart exclude each other")
    if (args.backend == "onnx") != (args.model is not None):
        parser.error("--backend onnx renders an ONNX export: give it --model DIR (and no --checkpoint)"
                     if args.backend == "onnx" else "--model DIR is the export of --backend onnx")
    if args.model is not None and args.checkpoint is not None:
        parser.error("--model and --checkpoint exclude each other (the export carries the weights)")
    if args.gpus and args.workers:
        parser.error("--gpus and --workers exclude each other (--workers is for CPU processes)")
    if args.styles is None:
        for flag in ("style_centers", "style_map", "style_blur"):
            if getattr(args, flag) is not None:
                parser.error(f"--{flag.replace('_', '-')} needs --styles (one seed per style)")
    if args.style_centers is not None and args.style_map is not None:
        parser.error("--style-centers and --style-map exclude each other")
    if args.style_centers is not None and len(args.style_centers) != len(args.styles):
        parser.error(f"--style-centers gives {len(args.style_centers)} centres for {len(args.styles)} styles")
    if args.wrap and args.width % 16:
        parser.error(f"--wrap needs --width to be a multiple of 16 (the period of the panorama), got {args.width}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("igan-render: interrupted; no output file was written", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as e:
        print(f"igan-render: error: {e}", file=sys.stderr)
        return 1


def preview_path(args) -> str | None:
    """Where --preview writes (its default: OUT's stem + .preview.png), or None."""
    if args.preview is None:
        return None
    return args.preview or os.path.splitext(args.out)[0] + ".preview.png"


def check_paths(args) -> None:
    """Every output of `args` is writable, takes its options, and collides with no input
    or other output; checked before anything is loaded or created (ValueError/OSError
    naming the value). The C++ API passes through here too."""
    from . import sinks
    from .paths import check_distinct, check_writable
    from .store import work_dir_for

    out = Path(args.out)
    ext = out.suffix.lower()
    preview = preview_path(args)
    if ext == ".zarr" and preview is not None:
        raise ValueError(f"--preview is not available for .zarr outputs (--out {args.out!r})")
    sinks.check_compression(out, args.compression)
    if ext == ".zarr" and os.path.lexists(out) and not os.path.lexists(work_dir_for(out)) and not args.resume:
        raise ValueError(f"--out {args.out!r} already exists; igan does not overwrite a Zarr store: remove it "
                         f"or choose another --out")
    outputs = {"--out": args.out, "--preview": preview, "--stats-json": args.stats_json}
    check_distinct({"--checkpoint": args.checkpoint, "--model": args.model, "--style-map": args.style_map}, outputs)
    for flag, path in outputs.items():
        if path is not None and not (flag == "--out" and ext == ".zarr" and os.path.lexists(path)):
            check_writable(flag, path)  # an existing Zarr --out is a finished render (checked above)


def _write_json(path: str, data: dict) -> None:
    """Atomically: a kill never leaves a truncated file under `path`."""
    tmp = f"{path}.igan-tmp-{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _run(args, model=None) -> int:
    """Render as `args` say, with `model` if given (the C++ API passes the one it holds)."""
    check_paths(args)
    import torch

    from . import checkpoint, executor, planner
    from .runner import PRECISIONS, RUNNERS, resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    y0 = -(args.height // 2) if args.y0 is None else args.y0
    window = planner.Window(args.x0, y0, args.width, args.height)
    dist = executor.distributed_env()
    devices = _devices(args, dist)
    source = args.model if args.backend == "onnx" else args.checkpoint
    model = checkpoint.load(source, args.config) if model is None else model
    RUNNERS[args.backend](model, devices[0], args.precision)  # fails early on a bad backend/device/precision
    budget = args.memory_budget or default_budget(resolve_device(devices[0]))
    spec = _field_spec(args, window, model.config)
    if spec is not None and spec.styles:
        budget //= 2  # the spatial-style path holds a style tensor as large as each layer's input
    plan = planner.plan(model.config, window, tile=args.tile, batch=args.batch, memory_budget=budget,
                        itemsize=PRECISIONS[args.precision].itemsize)
    job = executor.Job(source, args.config, args.seed, window, (plan.tile_height, plan.tile_width),
                       args.batch, args.backend, args.precision, spec)
    preview = preview_path(args)
    common = dict(resume=args.resume, restart=args.restart, keep_work=args.keep_work, progress=not args.quiet,
                  sink_args=dict(preview=preview, preview_size=args.preview_size, compression=args.compression))
    out = Path(args.out)
    if dist is not None:
        stats = executor.run_torchrun(job, model, devices[0], out, **common)
    elif len(devices) > 1:
        threads = max(1, (os.cpu_count() or 1) // len(devices)) if devices[0] == "cpu" else None
        stats = executor.run_processes(job, model, devices, out, threads_per_worker=threads, **common)
    else:
        stats = executor.run_local(job, model, devices[0], out, **common)
    if stats is None:  # another rank's summary, or nothing to do (already finished)
        return 0
    print(f"igan-render: {stats.summary()} -> {args.out}" + (f" (preview {preview})" if preview else ""))
    if args.stats_json:
        _write_json(args.stats_json, dataclasses.asdict(stats) | {"mp_per_s": stats.mp_per_s, "out": args.out})
    return 0


def _field_spec(args, window, cfg):
    """fusion.FieldSpec of --styles/--style-*/--wrap, or None for the plain canvas."""
    from .fusion import spec_from_options

    if args.styles is None and not args.wrap:
        return None
    return spec_from_options(cfg, window, args.seed, styles=args.styles, centers=args.style_centers,
                             style_map=args.style_map, blur=args.style_blur, wrap=args.wrap)


def _devices(args, dist) -> list[str]:
    """The device of each worker (one entry: a single process)."""
    import torch

    if dist is not None:
        rank, world, local = dist
        if args.gpus or args.workers:
            raise ValueError("under torchrun each rank is one worker: drop --gpus/--workers")
        if args.device == "auto":  # each rank on its own: its local GPU, else the CPU
            return [f"cuda:{local}" if torch.cuda.is_available() else "cpu"]
        return [f"cuda:{local}" if args.device == "cuda" else args.device]
    if args.gpus:
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if have < args.gpus:
            raise ValueError(f"--gpus {args.gpus} asked for {args.gpus} GPUs but this machine has {have}")
        return [f"cuda:{i}" for i in range(args.gpus)]
    if args.workers:
        if args.device != "cpu":
            raise ValueError(f"--workers is for CPU processes: add --device cpu (got --device {args.device}); "
                             f"use --gpus N for GPUs")
        return ["cpu"] * args.workers
    return [args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")]


if __name__ == "__main__":
    sys.exit(main())
