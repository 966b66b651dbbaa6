"""igan-invert, igan-outpaint, igan-inbetween: GAN inversion and what it enables.

  igan-invert photo.png --steps 1000 --out photo.inv.safetensors --preview fit.png
  igan-outpaint photo.inv.safetensors --width 1024 --height 256 --seed 3 --out wide.png
  igan-inbetween left.png right.png --gap 512 --out between.png
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
from pathlib import Path

from ..embedded import DESCRIPTION as EMBEDDED_DESCRIPTION
from ..errors import RequestError
from ..provenance import igan_version
from ..request import declared
from ..values import int_pair, positive, positive_float
from . import command, guarded
from .args import add_request_options

OUT_FORMATS = (".png", ".tif", ".tiff", ".zarr")


class AppError(RequestError):
    """Options of an application that do not fit together or with its inputs."""


# ---- shared pieces -----------------------------------------------------------------------------
def _parser(prog: str, description: str, notes: str, examples: list[str]) -> argparse.ArgumentParser:
    """A parser with --version whose description and notes are wrapped and whose examples keep
    their lines (one command line each)."""
    epilog = textwrap.fill(notes, 79) + "\n\nexamples:\n" + "\n".join(f"  {e}" for e in examples)
    p = argparse.ArgumentParser(prog=prog, description=textwrap.fill(description, 79), epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {igan_version()}")
    return p


# The render options every application takes from the declaration (request.RenderRequest), and
# those the rendering ones (igan-outpaint, igan-inbetween) take besides: everything about how a
# render is computed, its outputs and its work directory, the canvas's seed and generator. The
# window, styles and wrap are the application's own canvas, --out its own argument, and an
# ONNX export or random weights cannot be inverted.
COMMON = ("checkpoint", "config", "device", "threads", "quiet")
RENDERS = tuple(f.name for f in declared() if f.name not in COMMON + ("out",)
                and (f.metadata["group"] in ("compute", "outputs", "work") or f.name in ("seed", "latent_rng",
                                                                                         "quantize")))
_APP_HELP = {
    "checkpoint": {"help": "official checkpoint or igan .safetensors model (default: the embedded model)"},
    "seed": {"help": "seed of the canvas around the pasted images (default 0)"},
    "backend": {"help": "torch (reference, any device) or triton (fused kernels, CUDA)", "choices": ("torch", "triton")},
    "quiet": {"help": "no progress bars"},
}


def _common(p: argparse.ArgumentParser, inverts: bool = True, renders: bool = False) -> None:
    add_request_options(p, COMMON + (RENDERS if renders else ()), overrides=_APP_HELP,
                        titles={"compute": "rendering, as igan-render"})
    if renders:
        p.add_argument("--save-record", action="append", default=[], metavar="PATH",
                       help="also save the inversion record of each inverted image (repeat for several)")
    if inverts:
        p.add_argument("--steps", type=positive, default=3000,
                       help="optimisation steps when an image must be inverted (default 3000, as the official code)")
        p.add_argument("--lr", type=positive_float, default=0.1, help="base learning rate (default 0.1)")
        p.add_argument("--inv-seed", type=int, default=0, help="seed of the initial latents (default 0)")
        p.add_argument("--diff-aug", action="store_true",
                       help="DiffAugment (color, translation, cutout) before the image losses, as the official configs")


def _check_out(parser, path: str, formats=OUT_FORMATS) -> None:
    ext = os.path.splitext(path)[1].lower()
    if ext not in formats:
        parser.error(f"--out {path!r}: unsupported extension {ext or '(none)'!r}; use {', '.join(formats)}")


def _setup(args):
    import torch

    from .. import sources
    from ..apps.record import model_digest
    from ..runner import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = sources.load(args.checkpoint, args.config).to(device)
    return model, model_digest(model), device


def _require_file(path: str, what: str) -> None:
    """A missing input and a directory given as one are different mistakes: say which."""
    if Path(path).is_dir():
        raise AppError(f"{what} {path!r} is a directory, not a file")
    if not Path(path).is_file():
        raise AppError(f"{what} {path!r} does not exist")


def _open_image(path: str):
    """PIL image of `path` (to be used in a `with`), or AppError naming the file."""
    from PIL import Image, UnidentifiedImageError

    _require_file(path, "image")
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as e:
        raise AppError(f"cannot read image {path!r}: {e}") from e


def load_image(path: str):
    """RGB image file -> float32 [3, H, W] in [-1, 1]."""
    import numpy as np
    import torch

    with _open_image(path) as im:
        try:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32)
        except OSError as e:  # a header that opens, over pixel data that does not decode
            raise AppError(f"cannot read image {path!r}: {e}") from e
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0


def _check_source(path: str) -> None:
    """An image or record input is there and readable (a record fully, an image by its header),
    checked before the model loads and before any inversion, which may take many minutes."""
    from ..apps.record import InversionRecord

    if _is_record(path):
        _require_file(path, "inversion record")
        InversionRecord.load(path)
    else:
        _open_image(path).close()


def save_png(path: str | os.PathLike, rgb) -> None:
    """float [3, H, W] in [-1, 1] -> PNG, written atomically."""
    from PIL import Image

    from ..quantize import to_uint8

    path = Path(path)
    tmp = path.with_name(f".{path.name}.igan-tmp-{os.getpid()}")
    try:
        Image.fromarray(to_uint8(rgb.cpu()).permute(1, 2, 0).numpy()).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _settings(args):
    from ..apps.invert import InversionSettings

    return InversionSettings(steps=args.steps, lr=args.lr, seed=args.inv_seed, diff_aug=args.diff_aug)


def _invert_image(args, model, digest, path, x0=None, y0=None, style=None, label="igan-invert"):
    from ..apps.invert import invert

    target = load_image(path)
    start = time.perf_counter()
    rec = invert(model, target, x0=x0, y0=y0, settings=_settings(args), progress=not args.quiet, digest=digest,
                 style=style)
    seconds = time.perf_counter() - start
    print(f"{label}: {path}: {target.shape[2]}x{target.shape[1]} px, {args.steps} steps in {seconds:.1f} s "
          f"({args.steps / seconds:.1f} it/s), PSNR {rec.losses['final_psnr_db']:.2f} dB", file=sys.stderr)
    return rec


def _is_record(path: str) -> bool:
    return path.lower().endswith(".safetensors")


def _record_or_image(args, model, digest, path, **kw):
    from ..apps.record import InversionRecord

    if _is_record(path):
        rec = InversionRecord.load(path)
        rec.check_model(model, digest)
        return rec, True
    return _invert_image(args, model, digest, path, **kw), False


def _render_request(args, width: int, height: int, x0: int = 0, y0: int | None = None, spec=None):
    """The RenderRequest of an application's render (window, canvas `spec`, the render options)."""
    from ..request import RenderRequest

    return RenderRequest(out=args.out, width=width, height=height, x0=x0, y0=y0, field=spec,
                         **{name: getattr(args, name) for name in COMMON + RENDERS})


def _check_render_options(args, width: int, height: int) -> None:
    """The render options and outputs, as igan-render checks them (--compression for the
    format, --ome, --resume with --restart, an existing .zarr, ...), before the model loads or
    an image is inverted: a mistake costs a second, not an inversion."""
    request = _render_request(args, width, height)
    request.validate()
    request.check_outputs()


def _input_size(path: str) -> tuple[int, int]:
    """(width, height) of an input: a record's inverted image, or an image (from its header)."""
    from ..apps.record import InversionRecord

    if _is_record(path):
        p = InversionRecord.load(path).placement
        return p.width, p.height
    with _open_image(path) as im:
        return im.size


def _render(args, model, spec, request) -> None:
    """Render an application's canvas as igan-render renders: one RenderRequest through the
    planner, executor, tile store and sink (so --resume, --workers and the backends work)."""
    from .. import pipeline

    w = request.window
    render_request = _render_request(args, w.width, w.height, w.x0, w.y0, spec)
    stats = pipeline.run(render_request, model=model)
    if stats is not None:
        print(f"{args.prog}: {stats.summary()} -> {args.out}")


def _main(prog: str, parser, argv, run, sources, outputs) -> int:
    """Parse, check every path, then run. `sources(args)` names the image/record inputs and
    `outputs(args)` the files written, by option: none may be another (see paths.py), outputs
    must be writable and inputs readable before the model loads or an inversion starts."""
    with command(prog):
        return _checked_run(prog, parser, argv, run, sources, outputs)


def _checked_run(prog: str, parser, argv, run, sources, outputs) -> int:
    from ..paths import refuse_unsafe_paths

    args = parser.parse_args(argv)
    args.prog = prog
    if getattr(args, "tile", None) is not None and args.tile % 16:
        parser.error(f"--tile must be a multiple of 16, got {args.tile}")
    _check_out(parser, args.out, (".safetensors",) if prog == "igan-invert" else OUT_FORMATS)
    files, folders = outputs(args), None
    if args.out.lower().endswith(".zarr"):  # a folder it writes into (pipeline.run checks a finished one)
        files, folders = {k: v for k, v in files.items() if k != "--out"}, {"--out": args.out}
    refuse_unsafe_paths(parser, sources(args) | {"--checkpoint": args.checkpoint}, files, folders)

    def body() -> int:
        for path in sources(args).values():
            _check_source(path)
        return run(args)

    return guarded(prog, body, interrupted="interrupted; no output file was written")


# ---- igan-invert ------------------------------------------------------------------------------
def invert_parser() -> argparse.ArgumentParser:
    from ..apps.invert import PERCEPTUAL_REPLACEMENT

    p = _parser(
        "igan-invert",
        "Find the latents (z_g, z_l window, W+ styles, noise maps) that make the generator "
        "reproduce an image, and save them as an inversion record.",
        f"Losses as the official inversion, except LPIPS-VGG, replaced by a {PERCEPTUAL_REPLACEMENT}. "
        f"Without --checkpoint: the {EMBEDDED_DESCRIPTION}.",
        ["igan-invert photo.png --out photo.inv.safetensors --steps 1000 --preview fit.png",
         "igan-invert photo.png --out photo.inv.safetensors --checkpoint best_fid.pth.tar --diff-aug",
         "igan-invert crop.png --out crop.inv.safetensors --x0 512 --y0 -64 --device cuda"])
    p.add_argument("image", help="image file to invert (PNG, JPEG, ...)")
    p.add_argument("--out", required=True, help="inversion record to write (.safetensors)")
    p.add_argument("--x0", type=int, default=0, help="canvas column of the image's left edge (default 0)")
    p.add_argument("--y0", type=int, default=None, help="canvas row of its top edge (default -height//2)")
    p.add_argument("--preview", default=None, metavar="PNG", help="also write [fit | target] side by side as PNG")
    _common(p)
    return p


def invert_main(argv: list[str] | None = None) -> int:
    def run(args):
        import torch

        model, digest, _ = _setup(args)
        rec = _invert_image(args, model, digest, args.image, x0=args.x0, y0=args.y0)
        rec.save(args.out)
        if args.preview:
            save_png(args.preview, torch.cat([rec.fit, load_image(args.image)], 2))
        print(f"igan-invert: PSNR {rec.losses['final_psnr_db']:.2f} dB -> {args.out}"
              + (f" (preview {args.preview})" if args.preview else ""))
        return 0

    return _main("igan-invert", invert_parser(), argv, run, lambda a: {"IMAGE": a.image},
                 lambda a: {"--out": a.out, "--preview": a.preview})


# ---- igan-outpaint ----------------------------------------------------------------------------
def outpaint_parser() -> argparse.ArgumentParser:
    p = _parser(
        "igan-outpaint",
        "Extend an inverted image (a record, or an image that is inverted first) to a larger "
        "canvas: its latents are pasted in and the rest is drawn from the seeded canvas.",
        f"An image input is inverted first (--steps, --lr, ...; --save-record keeps the result). "
        f"Without --checkpoint: the {EMBEDDED_DESCRIPTION}.",
        ["igan-outpaint photo.inv.safetensors --width 1024 --height 256 --seed 3 --out wide.png",
         "igan-outpaint photo.png --width 2048 --height 512 --at 512,128 --save-record photo.inv.safetensors "
         "--out wide.tif",
         "igan-outpaint photo.inv.safetensors --width 8192 --height 1024 --device cuda --backend triton "
         "--out wide.zarr"])
    p.add_argument("input", help="inversion record (.safetensors) or image file")
    p.add_argument("--width", type=positive, required=True, help="output width in pixels")
    p.add_argument("--height", type=positive, required=True, help="output height in pixels")
    p.add_argument("--at", type=int_pair, default=None, metavar="X,Y",
                   help="output pixel of the image's top-left corner (default: centred)")
    p.add_argument("--out", required=True, help="output image: .png, .tif/.tiff or .zarr")
    _common(p, renders=True)
    return p


def outpaint_main(argv: list[str] | None = None) -> int:
    def run(args):
        from ..apps.outpaint import app_spec, outpaint_position

        if len(args.save_record) > 1:
            raise AppError(f"--save-record is given {len(args.save_record)} times; igan-outpaint has one input to save")
        # before the model loads and the image is inverted (minutes): the sizes, then the render options
        outpaint_position(*_input_size(args.input), args.width, args.height, args.at)
        _check_render_options(args, args.width, args.height)
        model, digest, _ = _setup(args)
        rec, _ = _record_or_image(args, model, digest, args.input)
        spec, request = app_spec("outpaint", [rec], (args.width, args.height, args.at), args.seed)
        for path in args.save_record[:1]:
            rec.save(path)
        _render(args, model, spec, request)
        return 0

    return _main("igan-outpaint", outpaint_parser(), argv, run, lambda a: {"INPUT": a.input},
                 lambda a: {"--out": a.out, "--save-record": (a.save_record or [None])[0]})


# ---- igan-inbetween ---------------------------------------------------------------------------
def inbetween_parser() -> argparse.ArgumentParser:
    p = _parser(
        "igan-inbetween",
        "Place two inverted images (records or images) side by side, GAP pixels apart, and "
        "generate the canvas between them.",
        "Each end keeps its own style (z_g and W+), blended between the two image centres by spatial "
        "style fusion; the default blur is the widest that leaves both ends exactly as fitted. With "
        "--one-style the LEFT style is used everywhere and a RIGHT image is fitted under it.",
        ["igan-inbetween left.png right.png --gap 512 --out between.png",
         "igan-inbetween left.inv.safetensors right.inv.safetensors --gap 256 --blur 63 --out between.tif",
         "igan-inbetween left.png right.png --gap 384 --one-style --save-record l.inv.safetensors "
         "--save-record r.inv.safetensors --out between.png"])
    p.add_argument("left", help="left inversion record (.safetensors) or image")
    p.add_argument("right", help="right inversion record (.safetensors) or image")
    p.add_argument("--gap", type=int, required=True, help="pixels between the two images")
    p.add_argument("--out", required=True, help="output image: .png, .tif/.tiff or .zarr")
    p.add_argument("--blur", type=positive, default=None,
                   help="style blend width in pixels (default: the widest that keeps both ends as fitted)")
    p.add_argument("--one-style", action="store_true",
                   help="no style fusion: the left image's style everywhere (the right image is fitted under it)")
    _common(p, renders=True)
    return p


def inbetween_main(argv: list[str] | None = None) -> int:
    def run(args):
        import torch

        from ..apps.outpaint import app_spec, check_gap, min_gap_at, right_position
        from ..apps.record import InversionRecord

        # before the model loads and an image is inverted (minutes each): every option that can be checked
        if args.gap < 0:
            raise AppError(f"--gap must be >= 0, got {args.gap}")
        if args.one_style and args.blur is not None:
            raise AppError("--blur is for style fusion; it has no effect with --one-style")
        if len(args.save_record) > 2:
            raise AppError(f"--save-record is given {len(args.save_record)} times; igan-inbetween has two inputs "
                           f"to save (left, right)")
        (lw, lh), (rw, rh) = _input_size(args.left), _input_size(args.right)
        if _is_record(args.left):
            right_position(InversionRecord.load(args.left), rw, rh, args.gap)  # the gap
        _check_render_options(args, lw + args.gap + rw, max(lh, rh))
        model, digest, _ = _setup(args)
        if not _is_record(args.left):  # the gap, for the latent window the left image will be fitted in
            check_gap(args.gap, min_gap_at(model.config, 0, lw))
        left, _ = _record_or_image(args, model, digest, args.left)
        style = (left.global_latent, left.styles) if args.one_style else None
        if _is_record(args.right):
            right = InversionRecord.load(args.right)
            right.check_model(model, digest)
            if args.one_style and not (torch.equal(right.global_latent, left.global_latent)
                                       and torch.equal(right.styles, left.styles)):
                print("igan-inbetween: warning: the right record has its own style; both ends are rendered with "
                      "the left style, so the right end differs from its fit (pass the right IMAGE to fit it "
                      "under the left style)", file=sys.stderr)
        else:
            with _open_image(args.right) as im:
                w, h = im.size
            x0, y0 = right_position(left, w, h, args.gap)  # checks the gap before the long inversion
            right = _invert_image(args, model, digest, args.right, x0=x0, y0=y0, style=style)
        spec, request = app_spec("inbetween", [left, right], (args.gap, not args.one_style, args.blur), args.seed)
        if request.note:
            print(f"igan-inbetween: {request.note}", file=sys.stderr)
        for path, rec in zip(args.save_record, (left, right)):
            rec.save(path)
        _render(args, model, spec, request)
        return 0

    def outputs(args):
        records = dict(zip(("--save-record (left)", "--save-record (right)"), args.save_record))
        return {"--out": args.out} | records

    return _main("igan-inbetween", inbetween_parser(), argv, run, lambda a: {"LEFT": a.left, "RIGHT": a.right},
                 outputs)
