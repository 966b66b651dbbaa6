"""igan-render: render a window of the infinite canvas to a PNG or tiled BigTIFF file."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from pathlib import Path

from . import determinism  # noqa: F401  (sets MKL's reproducible mode before torch computes)
from .embedded import DESCRIPTION as EMBEDDED_DESCRIPTION
from .request import RenderRequest


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


def parse_args(argv: list[str] | None = None) -> RenderRequest:
    """igan-render's command line as a checked RenderRequest (argparse exits with a message
    on bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return RenderRequest(**vars(args)).validate()
    except ValueError as e:
        parser.error(str(e))


def main(argv: list[str] | None = None) -> int:
    request = parse_args(argv)
    try:
        stats = run(request)
    except KeyboardInterrupt:
        print("igan-render: interrupted; no output file was written", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as e:
        print(f"igan-render: error: {e}", file=sys.stderr)
        return 1
    if stats is not None:
        preview = request.preview_path
        print(f"igan-render: {stats.summary()} -> {request.out}" + (f" (preview {preview})" if preview else ""))
    return 0


def run(request: RenderRequest, model=None):
    """Carry out `request` (with `model` if given: the Python and C++ APIs pass the one they
    hold). The outputs are checked first, then the tiles are rendered (by this process, one
    worker per device, or this torchrun rank) into the work directory and the output.
    Returns the RenderStats, or None when there is nothing to report (another torchrun
    rank's share, or an output that was already finished)."""
    request.validate()
    request.check_outputs()
    import torch

    from . import checkpoint, executor
    from .runner import RUNNERS

    if request.threads:
        torch.set_num_threads(request.threads)
    dist = executor.distributed_env()
    devices = _devices(request, dist)
    source = request.model if request.backend == "onnx" else request.checkpoint
    model = checkpoint.load(source, request.config) if model is None else model
    runner = RUNNERS[request.backend](model, devices[0], request.precision)  # fails early: backend/device/precision
    spec, plan = plan_request(request, model.config, runner.device)
    job = executor.Job(source, request.config, request.seed, plan.window, (plan.tile_height, plan.tile_width),
                       request.batch, request.backend, request.precision, spec)
    common = dict(resume=request.resume, restart=request.restart, keep_work=request.keep_work,
                  progress=not request.quiet,
                  sink_args=dict(preview=request.preview_path, preview_size=request.preview_size,
                                 compression=request.compression))
    out = Path(request.out)
    if dist is not None:
        stats = executor.run_torchrun(job, model, devices[0], out, **common)
    elif len(devices) > 1:
        threads = max(1, (os.cpu_count() or 1) // len(devices)) if devices[0] == "cpu" else None
        stats = executor.run_processes(job, model, devices, out, threads_per_worker=threads, **common)
    else:
        stats = executor.run_local(job, model, devices[0], out, **common)
    if stats is not None and request.stats_json:
        from .store import write_atomic  # a kill never leaves a truncated file under the name

        write_atomic(Path(request.stats_json),
                     json.dumps(dataclasses.asdict(stats) | {"mp_per_s": stats.mp_per_s, "out": request.out}, indent=1))
    return stats


def plan_request(request: RenderRequest, cfg, device):
    """(fusion.FieldSpec or None, planner.Plan) of `request` on `device`: its canvas and its
    tiles, which every entry point (files, the in-memory API, the C++ API) shares, so they
    all compute the same pixels."""
    from . import planner
    from .runner import PRECISIONS

    window = planner.Window(request.x0, request.top, request.width, request.height)
    budget = request.memory_budget or default_budget(device)
    spec = request.field if request.field is not None else _field_spec(request, window, cfg)
    if spec is not None and spec.spatial:
        budget //= 2  # the spatial-style path holds a style tensor as large as each layer's input
    plan = planner.plan(cfg, window, tile=request.tile, batch=request.batch, memory_budget=budget,
                        itemsize=PRECISIONS[request.precision].itemsize)
    return spec, plan


def _field_spec(request: RenderRequest, window, cfg):
    """fusion.FieldSpec of --styles/--style-*/--wrap, or None for the plain canvas."""
    from .fusion import spec_from_options

    if not request.fused:
        return None
    return spec_from_options(cfg, window, request.seed, styles=request.styles, centers=request.style_centers,
                             style_map=request.style_map, blur=request.style_blur, wrap=request.wrap)


def _devices(args: RenderRequest, dist) -> list[str]:
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
