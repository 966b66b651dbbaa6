"""igan-render: render a window of the infinite canvas to a PNG or tiled BigTIFF file."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from . import determinism  # noqa: F401  (sets MKL's reproducible mode before torch computes)
from .embedded import DESCRIPTION as EMBEDDED_DESCRIPTION

FORMATS = (".png", ".tif", ".tiff")


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
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return int(value)


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
    p.add_argument("--out", default="igan.png", help="output file: .png or .tif/.tiff (default igan.png)")
    p.add_argument("--tile", type=_positive, default=None,
                   help="tile size in pixels, a multiple of 16 (default: from --memory-budget)")
    p.add_argument("--batch", type=_positive, default=1, help="tiles per forward pass (default 1)")
    p.add_argument("--memory-budget", type=_size_bytes, default=None,
                   help="memory for one batch of tiles, e.g. 4GiB (default: 1 GiB on CPU, where "
                        "cache-sized tiles run fastest; 60%% of free memory on GPU)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default auto)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--backend", default="torch", choices=["torch", "triton"],
                   help="model runner: torch (reference, any device) or triton (fused kernels, CUDA)")
    p.add_argument("--preview", nargs="?", const="", default=None, metavar="PATH",
                   help="also write a low-resolution preview PNG (default path: OUT stem + .preview.png)")
    p.add_argument("--preview-size", type=_positive, default=1024, help="preview's longer side (default 1024)")
    p.add_argument("--compression", default=None,
                   help="PNG: zlib level 0-9 (default 6); TIFF: zstd, zlib or none, optionally :level")
    p.add_argument("--threads", type=_positive, default=None, help="CPU threads for torch (default: all)")
    p.add_argument("--stats-json", default=None, metavar="PATH",
                   help="also write the summary figures as JSON (for scripts and benchmarks)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def default_budget(device) -> int:
    import torch

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.6)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min(total // 4, 1 << 30)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    ext = os.path.splitext(args.out)[1].lower()
    if ext not in FORMATS:
        parser.error(f"--out {args.out!r}: unsupported extension {ext or '(none)'!r}; use {', '.join(FORMATS)}")
    if args.tile is not None and args.tile % 16:
        parser.error(f"--tile must be a multiple of 16, got {args.tile}")
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("igan-render: interrupted; no output file was written", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:
        print(f"igan-render: error: {e}", file=sys.stderr)
        return 1


def _run(args) -> int:
    import torch

    from . import checkpoint, planner, sinks
    from .latent import LatentField
    from .renderer import Renderer
    from .runner import PRECISIONS, RUNNERS, resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    y0 = -(args.height // 2) if args.y0 is None else args.y0
    window = planner.Window(args.x0, y0, args.width, args.height)
    device = resolve_device(args.device)
    model = checkpoint.load(args.checkpoint, args.config)
    runner = RUNNERS[args.backend](model, device, args.precision)
    budget = args.memory_budget or default_budget(device)
    itemsize = PRECISIONS[args.precision].itemsize
    plan = planner.plan(model.config, window, tile=args.tile, batch=args.batch, memory_budget=budget,
                        itemsize=itemsize)
    field = LatentField(model.config, args.seed)
    preview = None
    if args.preview is not None:
        preview = args.preview or os.path.splitext(args.out)[0] + ".preview.png"
    sink = sinks.open_sink(args.out, window.width, window.height, band_height=plan.tile_height,
                           preview=preview, preview_size=args.preview_size, compression=args.compression)
    stats = Renderer(runner).render(field, plan, sink, batch=args.batch, progress=not args.quiet)
    print(f"igan-render: {stats.summary()} -> {args.out}" + (f" (preview {preview})" if preview else ""))
    if args.stats_json:
        with open(args.stats_json, "w") as f:
            json.dump(dataclasses.asdict(stats) | {"mp_per_s": stats.mp_per_s, "out": args.out}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
