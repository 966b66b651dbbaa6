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
from ..provenance import igan_version
from ..request import PIXEL_FIELDS, RenderRequest
from . import command, guarded
from ..values import seed_ranges
from .args import add_request_options


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
                   help=f"with --from: render a recipe's size above {FROM_PIXELS_UNASKED // 10**6} MP without "
                        "giving --width/--height")
    groups = add_request_options(p)
    groups["window"].add_argument(
        "--seeds", type=seed_ranges, default=None, metavar="LIST",
        help="render one image per seed, the model loaded once: e.g. 0-7 or 1,5,9-12 (files: --outdir/seedNNNN.png, "
             "or --out as a pattern such as 'pano-{seed}.tif')")
    groups["outputs"].add_argument("--outdir", default=None, metavar="DIR",
                                   help="with --seeds: where the images go (default .)")
    p.set_defaults(out=None)  # igan.png, unless --from or --seeds name the files
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
        typed = {k: options[k] for k in given if k in PIXEL_FIELDS}
        if options["bit_exact"] and "cpu_path" not in typed:  # --bit-exact overrides the recipe's path too
            typed["cpu_path"] = "reference"
        options = options | recipe.options(rec, typed)
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
            stats = pipeline.run(request, model=model, checked=True)  # checked above, before the model
            if stats is not None:
                preview = request.preview_path
                print(f"igan-render: {stats.summary()} -> {request.out}" + (f" (preview {preview})" if preview else ""))
        return 0

    return guarded("igan-render", render,
                   interrupted="interrupted; the image being rendered was not written (--resume finishes it)")


if __name__ == "__main__":
    sys.exit(main())
