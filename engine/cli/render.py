"""igan-render: render a window of the infinite canvas to a PNG, tiled BigTIFF or Zarr file.

Only the command line lives here; `igan.engine.pipeline.run` does the work. Nothing heavy is
imported before the options are parsed, so `igan-render --help` answers at once.
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap

from ..embedded import DESCRIPTION as EMBEDDED_DESCRIPTION
from ..errors import RequestError
from ..provenance import DEFAULT_LATENT_RNG, LATENT_RNG_VERSIONS, QUANTIZERS, igan_version
from ..request import PIXEL_FIELDS, RenderRequest
from . import command, guarded
from .args import blur, centers, positive, seed_ranges, seeds, size_bytes


EXAMPLES = """examples:
  igan-render --width 8192 --height 256 --out panorama.png
  igan-render --checkpoint best_fid.pth.tar --width 65536 --height 4096 --seed 7 --out pano.tif --preview
  igan-render --seeds 0-7 --outdir samples --width 1024 --height 256 --trunc 0.7
  igan-render --styles 3,17,42 --wrap --width 4096 --height 512 --out fused360.png
  igan-render --gpus 8 --width 8192 --height 8192 --out big.tif --resume
  igan-render --from pano.png --width 16384 --out wider.png
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="igan-render",
        description="Render a window of an InfinityGAN canvas, tile by tile, streaming to disk.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES + "\n" + textwrap.fill(f"Without --checkpoint igan renders with the {EMBEDDED_DESCRIPTION}.",
                                                 width=88))
    p.add_argument("--version", action="version", version=f"%(prog)s {igan_version()}")
    p.add_argument("--from", dest="from_image", default=None, metavar="IMAGE",
                   help="render again the pixels an igan PNG or TIFF records (its recipe: model, window, seed, "
                        "styles...); options given here override them, e.g. --width/--x0 for a wider window of the "
                        "same canvas. Outputs, processes and the work directory come only from this command line")
    p.add_argument("--yes", action="store_true",
                   help="with --from: render a recipe's size above 256 MP without giving --width/--height")
    p.add_argument("--checkpoint", default=None,
                   help="official InfinityGAN checkpoint (best_fid.pth.tar), igan .safetensors model, or a "
                        "model igan ships: builtin:landscapes-v2 (the default, see below) or builtin:landscapes-v1 "
                        "(the default of igan 0.1-0.3)")
    p.add_argument("--config", default=None,
                   help="preset of an official checkpoint (default: inferred from its shapes); without "
                        "--checkpoint only with --random-weights")
    p.add_argument("--random-weights", action="store_true",
                   help="render --config's preset with fixed random weights (for benchmarks: not a trained model)")
    p.add_argument("--width", type=positive, default=2048, help="image width in pixels (default 2048)")
    p.add_argument("--height", type=positive, default=512, help="image height in pixels (default 512)")
    p.add_argument("--x0", type=int, default=0, help="canvas column of the left edge (default 0)")
    p.add_argument("--y0", type=int, default=None,
                   help="canvas row of the top edge (default: -(height // 2), which centres the image on "
                        "the horizon, as the official code does)")
    p.add_argument("--seed", type=int, default=0, help="canvas seed (default 0)")
    p.add_argument("--seeds", type=seed_ranges, default=None, metavar="LIST",
                   help="render one image per seed, the model loaded once: e.g. 0-7 or 1,5,9-12 (files: "
                        "--outdir/seedNNNN.png, or --out as a pattern such as 'pano-{seed}.tif')")
    p.add_argument("--outdir", default=None, metavar="DIR", help="with --seeds: where the images go (default .)")
    p.add_argument("--out", default=None,
                   help="output: .png, .tif/.tiff (pyramidal BigTIFF) or .zarr (Zarr v3 array) (default igan.png)")
    p.add_argument("--trunc", type=float, default=1.0, metavar="PSI",
                   help="truncation: styles pulled towards the mean style, w_avg + PSI (w - w_avg); below 1 "
                        "trades variety for typical images (default 1: none, as the official code)")
    p.add_argument("--tile", type=positive, default=None,
                   help="tile size in pixels, a multiple of 16 (default: from --memory-budget)")
    p.add_argument("--batch", type=positive, default=1, help="tiles per forward pass (default 1)")
    p.add_argument("--memory-budget", type=size_bytes, default=None,
                   help="memory for one batch of tiles, e.g. 4GiB (default: 1 GiB on CPU, where "
                        "cache-sized tiles run fastest; 60%% of free memory on GPU)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default auto)")
    p.add_argument("--gpus", type=positive, default=None,
                   help="render on GPUs 0..N-1, one worker process each, pulling from a shared queue")
    p.add_argument("--workers", type=positive, default=None,
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
                   help="with --backend onnx: the ONNX export to render (igan-export --checkpoint CKPT --onnx DIR)")
    p.add_argument("--bit-exact", action="store_true",
                   help="CPU, torch backend: the reference path, whose bytes are the same for every --tile, "
                        "--batch and --workers (and igan 0.2's); about 1.5x slower than the default oneDNN path, "
                        "whose bytes are the same for the same command on the same CPU")
    p.add_argument("--preview", nargs="?", const="", default=None, metavar="PATH",
                   help="also write a low-resolution preview PNG (default path: OUT stem + .preview.png)")
    p.add_argument("--preview-size", type=positive, default=1024, help="preview's longer side (default 1024)")
    p.add_argument("--compression", default=None,
                   help="PNG: zlib level 0-9 (default 6); TIFF: zlib (default, read by every viewer), zstd, "
                        "jpeg (lossy, for photographic pyramids; :quality 1-100, default 90) or none, "
                        "optionally :level")
    p.add_argument("--ome", action="store_true",
                   help="with a .tif/.tiff --out: write an OME-TIFF (OME-XML, the same pyramid in SubIFDs) for "
                        "QuPath, OMERO and Bio-Formats; igan's metadata goes in an OME MapAnnotation")
    p.add_argument("--threads", type=positive, default=None, help="CPU threads for torch (default: all)")
    p.add_argument("--stats-json", default=None, metavar="PATH",
                   help="also write the summary figures as JSON (for scripts and benchmarks)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-metadata", dest="metadata", action="store_false",
                   help="do not embed what made the image (igan version, command, model digest, seed, window) "
                        "in PNG and TIFF files")
    fidelity = p.add_argument_group("reproducing other images")
    fidelity.add_argument("--latent-rng", default=DEFAULT_LATENT_RNG, choices=list(LATENT_RNG_VERSIONS),
                          help="generator of the canvas's random values: philox (Philox4x32-10, the default since "
                               "igan 0.2) or v1 (the hash of earlier versions: re-renders their images)")
    fidelity.add_argument("--quantize", default="round", choices=list(QUANTIZERS),
                          help="float to 8-bit: round (to the nearest level, default) or official (truncation, as "
                               "the official code's matplotlib PNGs: the same bytes from the same latents)")
    fusion = p.add_argument_group("style fusion and 360-degree panoramas")
    fusion.add_argument("--styles", type=seeds, default=None, metavar="SEED,SEED,...",
                        help="one style (z_g) per seed, blended across the image; --seed still sets the "
                             "local content")
    fusion.add_argument("--style-centers", type=centers, default=None, metavar="X,Y:X,Y:...",
                        help="where each style sits, as fractions of the window (0,0 = top-left, 1,1 = "
                             "bottom-right; values outside 0..1 are allowed) (default: spread evenly across "
                             "the width at mid-height)")
    fusion.add_argument("--style-map", default=None, metavar="PNG",
                        help="instead of centres: an image whose distinct colours (numbered in order of first "
                             "appearance, top-left first) say where each style goes, stretched to the window")
    fusion.add_argument("--style-blur", type=blur, default=None, metavar="K",
                        help="width of the box blur between styles, in output pixels (default 127)")
    fusion.add_argument("--wrap", action="store_true",
                        help="cyclic panorama: the canvas repeats horizontally every --width pixels, so the "
                             "right edge continues into the left (width: a multiple of 16)")
    return p


def parse_requests(argv: list[str] | None = None) -> list[RenderRequest]:
    """igan-render's command line as checked RenderRequests: one, or one per --seeds seed
    (argparse exits with a message on bad input)."""
    parser = build_parser()
    argv = list(argv if argv is not None else sys.argv[1:])
    options = vars(parser.parse_args(argv))
    from_image, yes = options.pop("from_image"), options.pop("yes")
    if from_image is not None:  # the recipe's pixels under the options given here; nothing else from it
        options = _from_recipe(parser, from_image, argv, options, yes)
    seed_list, outdir, out = options.pop("seeds"), options.pop("outdir"), options.pop("out")
    try:
        if seed_list is None:
            if outdir is not None:
                parser.error("--outdir is where --seeds writes its images: give --seeds too")
            request = RenderRequest(out=out or "igan.png", **options).validate()
            if from_image is not None and os.path.exists(request.out) and os.path.samefile(request.out, from_image):
                parser.error(f"--out {request.out!r} is the --from image: choose another --out")
            return [request]
        if options["stats_json"] is not None:
            parser.error("--stats-json describes one render: not with --seeds")
        if out is not None and "{seed" not in out:
            parser.error(f"with --seeds, --out is a pattern holding {{seed}} (e.g. 'pano-{{seed:04d}}.tif'), "
                         f"got {out!r}")
        pattern = out if out is not None else os.path.join(outdir or ".", "seed{seed:04d}.png")
        return [RenderRequest(out=pattern.format(seed=s), **(options | {"seed": s})).validate() for s in seed_list]
    except (KeyError, IndexError, ValueError) as e:
        parser.error(str(e))


# A recipe may ask for this many pixels before --from wants the size on the command line or --yes.
FROM_PIXELS_UNASKED = 256 * 10**6


def _from_recipe(parser, image: str, argv: list[str], options: dict, yes: bool) -> dict:
    """igan-render's options for --from IMAGE: the pixel fields of its recipe (recipe.read, a
    strict schema over the recorded request) under those typed on this command line, every
    other option (outputs, work directory, processes, threads) from this command line alone.
    A recipe that cannot be used is one line and exit status 2, before anything is created."""
    from .. import recipe

    given = _given(argv)
    label = f"--from {image!r}"
    try:
        rec = recipe.read(image)
        options = options | recipe.options(rec, {k: options[k] for k in given if k in PIXEL_FIELDS})
        if options["out"] is None and options["seeds"] is None:  # a new file, never one that exists
            options["out"] = _new_output(image)
        fields = {k: v for k, v in options.items() if k not in ("seeds", "outdir")}
        RenderRequest(**(fields | {"out": fields["out"] or "igan.png"})).validate()  # one line, exit 2
    except (recipe.RecipeError, RequestError) as e:
        _refuse(f"{label}: {e}")
    if rec.ignored:
        print(f"igan-render: {label}: ignoring {', '.join(rec.ignored)} in its recipe (a recipe decides pixels "
              "only: outputs, processes and the work directory come from this command line)", file=sys.stderr)
    size = f"{options['width']}x{options['height']} ({options['width'] * options['height'] / 1e6:.1f} MP)"
    if options["width"] * options["height"] > FROM_PIXELS_UNASKED and not yes and not {"width", "height"} & given:
        _refuse(f"{label} records a {size} render, more than {FROM_PIXELS_UNASKED // 10**6} MP: give --width and "
                "--height to choose the size, or --yes to render it")
    target = options["out"] if options["seeds"] is None else "one image per --seeds seed"
    print(f"igan-render: {label}: {size}, seed {options['seed']} -> {target}", file=sys.stderr)
    return options


def _new_output(image: str) -> str:
    """--from's output when no --out is given: igan.png (.tif for a TIFF), else igan-2.png, ...:
    the first name that is neither a file nor an unfinished render's work directory."""
    from ..store import work_dir_for

    ext = os.path.splitext(image)[1].lower()
    ext = ext if ext in (".png", ".tif", ".tiff") else ".png"
    n = 1
    while True:
        name = f"igan{ext}" if n == 1 else f"igan-{n}{ext}"
        if not os.path.lexists(name) and not os.path.lexists(work_dir_for(name)):
            return name
        n += 1


def _given(argv: list[str]) -> set[str]:
    """The options typed on the command line (by dest), whatever their values."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def _refuse(message: str) -> None:
    """A command-line error in one line (exit status 2): for what a file handed to igan says."""
    print(f"igan-render: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse_args(argv: list[str] | None = None) -> RenderRequest:
    """igan-render's command line for one image (the C++ API's); --seeds is refused."""
    requests = parse_requests(argv)
    if len(requests) != 1:
        build_parser().error("--seeds renders several images: use igan-render for it")
    return requests[0]


def main(argv: list[str] | None = None) -> int:
    with command("igan-render"):
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    requests = parse_requests(argv)
    from .. import pipeline  # loads torch and the model: after the options are checked

    def render() -> int:
        if len(requests) > 1:
            os.makedirs(os.path.dirname(requests[0].out) or ".", exist_ok=True)
        for request in requests:  # every output checked before the model loads or an image is made
            request.check_outputs()
        model = pipeline.load_model(requests[0])  # once for every seed
        if requests[0].random_weights:
            print(f"igan-render: {requests[0].config} with random weights (--random-weights): not a trained model",
                  file=sys.stderr)
        for request in requests:
            stats = pipeline.run(request, model=model)
            if stats is not None:
                preview = request.preview_path
                print(f"igan-render: {stats.summary()} -> {request.out}" + (f" (preview {preview})" if preview else ""))
        return 0

    return guarded("igan-render", render,
                   interrupted="interrupted; the image being rendered was not written (--resume finishes it)")


if __name__ == "__main__":
    sys.exit(main())
