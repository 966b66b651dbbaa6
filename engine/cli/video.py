"""igan-video: a video of a camera travelling over the endless canvas.

Only the command line lives here; `igan.engine.video.render_video` does the work. Nothing
heavy is imported before the options are parsed, so `igan-video --help` answers at once.
"""
from __future__ import annotations

import argparse
import math
import shlex
import sys
import textwrap

from ..embedded import DESCRIPTION as EMBEDDED_DESCRIPTION
from ..errors import RequestError
from ..provenance import igan_version
from ..request import PIXEL_FIELDS, RenderRequest, declared
from ..values import int_pair, positive, positive_float
from . import command, guarded
from .args import add_request_options

CODEC_NAMES = ("h264", "h265", "av1", "vp9", "ffv1", "gif", "webp")

EXAMPLES = """examples:
  igan-video --size 1280x720 --seconds 10 --out fly.mp4
  igan-video --size 640x360 --pan 3,-1 --frames 300 --seed 7 --codec vp9 --out fly.webm
  igan-video --size 320x192 --wrap --period 1024 --pan 8,0 --codec webp --out loop.webp
  igan-video --size 640x360 --styles 3,17,42 --seconds 20 --out changing.mp4
  igan-video --size 512x256 --path 0,-128:2048,-128:2048,512 --pan 6,0 --codec ffv1 --out turn.mkv
  igan-video --from fly.mp4 --codec ffv1 --out fly-lossless.mkv
"""

# The declared render options igan-video takes: the model, the canvas and how it is computed.
# The window is --size/--start/--pan/--path, the output --out; tiling is igan-video's grid, and
# there is no work directory, preview or TIFF option.
NAMES = tuple(f.name for f in declared() if f.metadata["group"] in ("model", "canvas")
              or f.name in ("seed", "precision", "backend", "cpu_path", "bit_exact", "device", "threads",
                            "memory_budget", "batch", "quiet", "resume", "restart", "workers", "gpus"))
_HELP = {
    "wrap": {"help": "a looping video: the canvas repeats horizontally every --period pixels, and the frame after "
                     "the last is the first (needs --pan DX,0 with DX dividing the period; the frames default to "
                     "period / DX)"},
    "style_centers": {"help": "where each style sits, as fractions of the canvas the video covers (the box of every "
                              "frame; for a loop, one period from --start by the frame height): 0,0 = its top-left, "
                              "1,1 = its bottom-right (default: spread evenly along it at mid-height)"},
    "style_map": {"help": "instead of centres: an image whose distinct colours say where each style goes, stretched "
                          "over the canvas the video covers"},
    "quiet": {"help": "no progress bar"},
    "resume": {"help": "finish an interrupted video of the same recipe from its finished segments (10 s each, kept in "
                       ".OUT.igan-work/): the file is the one an uninterrupted run writes"},
    "restart": {"help": "discard the finished segments of an interrupted video and start again"},
    "threads": {"help": "CPU threads for torch (default: half the CPUs; the encoder's threads use the rest, and "
                        "torch on every core stalls behind them)"},
}


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH (two integers), got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"width and height must be positive, got {text!r}")
    return w, h


def _points(text: str) -> tuple[tuple[int, int], ...]:
    points = tuple(int_pair(p) for p in text.split(":"))
    if len(points) < 2:
        raise argparse.ArgumentTypeError(f"expected at least two points X,Y:X,Y, got {text!r}")
    return points


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="igan-video",
        description="Write a video of a camera travelling over an InfinityGAN canvas: each frame a window of the "
                    "canvas (the pixels igan-render computes for it), rendered once per new canvas tile.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES + "\n" + textwrap.fill(
            "Negative values need '=': --pan=-4,0, --start=-100,-90. Sizes must be even for h264, h265, av1 and vp9 "
            "(4:2:0 chroma): an odd size is refused, not padded. FFV1 is lossless: its decoded frames are "
            f"igan-render's windows byte for byte. Without --checkpoint igan renders with the "
            f"{EMBEDDED_DESCRIPTION}.", width=88))
    p.add_argument("--version", action="version", version=f"%(prog)s {igan_version()}")
    p.add_argument("--from", dest="from_video", default=None, metavar="VIDEO",
                   help="render again the frames a video igan-video wrote records (its recipe: model, canvas, "
                        "camera, codec); options given here override them, e.g. --frames or --codec ffv1. The output "
                        "and how it is computed (device, threads) come only from this command line")
    add_request_options(p, NAMES, overrides=_HELP)
    cam = p.add_argument_group("the camera")
    cam.add_argument("--size", type=_size, default=None, metavar="WxH",
                     help="frame size in pixels, e.g. 1280x720 (required, unless --from gives it)")
    cam.add_argument("--pan", type=int_pair, default=(4, 0), metavar="DX,DY",
                     help="camera motion in whole pixels per frame, any direction (default 4,0: rightwards); "
                          "with --path only its length counts, the speed along the path")
    cam.add_argument("--start", type=int_pair, default=None, metavar="X,Y",
                     help="canvas position of the first frame's top-left corner (default: 0 and -(H // 2), centred "
                          "on the horizon as igan-render's window)")
    cam.add_argument("--path", type=_points, default=None, metavar="X,Y:X,Y:...",
                     help="a path with turns: straight segments through these canvas positions of the frame's "
                          "top-left corner, at constant speed (|--pan| px per frame; positions rounded to whole "
                          "pixels); the frames default to the whole path")
    length = cam.add_mutually_exclusive_group()
    length.add_argument("--frames", type=positive, default=None, metavar="N", help="frames (default: 10 s' worth)")
    length.add_argument("--seconds", type=positive_float, default=None, metavar="S", help="length in seconds of video")
    cam.add_argument("--fps", type=positive, default=30, help="frames per second (default 30)")
    cam.add_argument("--period", type=positive, default=None, metavar="P",
                     help="with --wrap: the period of the cyclic canvas in pixels (a multiple of the model's "
                          "upscale: 8 for the embedded model)")
    enc = p.add_argument_group("the video file")
    enc.add_argument("--out", required=True, metavar="FILE",
                     help="the video: .mp4 or .mkv (h264, h265, av1), .webm (vp9), .mkv (ffv1), .gif, .webp; a new "
                          "file, written under a temporary name and renamed when complete")
    enc.add_argument("--codec", default="h264", metavar="CODEC",
                     help=f"{', '.join(CODEC_NAMES)} (default h264: yuv420p; ffv1: lossless RGB; gif and webp: "
                          "animated images for short loops)")
    enc.add_argument("--crf", type=int, default=18,
                     help="constant rate factor of h264, h265, av1 and vp9 (default 18; lower is better)")
    return p


def parse_args(argv: list[str] | None = None):
    """(RenderRequest of the canvas, CameraPath, options) of igan-video's command line; bad
    input exits with status 2 naming the option."""
    parser = build_parser()
    argv = list(argv if argv is not None else sys.argv[1:])
    args = parser.parse_args(argv)
    from .. import video  # torch: after --help and the options' own checks

    given = _given(argv)
    rec = _from_recipe(args, given) if args.from_video is not None else None
    if args.size is None:
        parser.error("the following arguments are required: --size (or --from VIDEO)")
    options = {n: getattr(args, n) for n in NAMES}
    w, h = args.size
    try:
        video.check_codec(args.codec, args.out, args.size)
        wrap = options["wrap"]
        if args.period is not None and not wrap:
            raise RequestError("--period is the period of a looping video: give --wrap too")
        frames = args.frames if args.seconds is None else max(1, round(args.seconds * args.fps))
        if wrap:
            if args.period is None:
                raise RequestError("--wrap makes a looping video: give --period P, the canvas's period in pixels")
            if args.path is not None:
                raise RequestError("--path and --wrap exclude each other: a loop pans straight (--pan DX,0)")
            dx, dy = args.pan
            if dy:
                raise RequestError(f"--wrap loops horizontally: --pan must be DX,0, got {dx},{dy}")
            need = video.loop_frames(args.period, dx)
            if frames is not None and frames != need:
                raise RequestError(f"a loop over --period {args.period} at --pan {dx},0 closes after {need} frames "
                                   f"({need / args.fps:g} s at --fps {args.fps}), not {frames}: give --frames {need} "
                                   "(or leave --frames/--seconds out)")
            frames = need
        start = args.start if args.start is not None else (0, -(h // 2))
        if args.path is not None:
            if args.start is not None and "start" in given:
                raise RequestError("--path starts at its first point: not with --start")
            speed = math.hypot(*args.pan)
            if speed == 0:
                raise RequestError("--pan 0,0 does not move along --path: give its speed, e.g. --pan 4,0")
            path = video.polyline_path(args.size, args.path, speed, frames)
        else:
            frames = frames if frames is not None else 10 * args.fps
            if args.pan == (0, 0) and frames > 1:
                raise RequestError(f"--pan 0,0 over {frames} frames is a still image: give the camera a motion "
                                   "(e.g. --pan 4,0), or use igan-render")
            path = video.linear_path(args.size, start, args.pan, frames, args.period if wrap else None)
        if rec is not None:
            options = _recipe_options(rec, given, options, path)
        request = RenderRequest(width=w, height=h, **options).validate()
    except (RequestError, ValueError) as e:
        parser.error(str(e))
    return request, path, args


# What a recipe's camera (igan-video --from) sets where this command line gives none; the
# canvas comes from its request (engine/recipe.py: the same schema and rules as an image's).
CAMERA = ("size", "frames", "fps", "start", "pan", "path", "period", "codec", "crf")
_EXCLUSIVE = {"frames": "seconds", "path": "start", "start": "path"}
# A recipe may ask for this many pixels of frames (about 4 minutes of 1080p at 30 fps) before
# --from wants the length or size on the command line, as igan-render's --from does beyond 256 MP.
FROM_PIXELS_UNASKED = 16 * 10**9


def _from_recipe(args, given: set[str]):
    """The recipe of --from VIDEO (recipe.read_video: a strict schema over the recorded
    request and camera, never the recorded command); its camera fills `args` where this
    command line gives none. Anything wrong is one line, exit status 2."""
    from .. import recipe

    try:
        rec = recipe.read_video(args.from_video, CODEC_NAMES)
    except recipe.RecipeError as e:
        _refuse(f"--from {args.from_video!r}: {e}")
    for name in CAMERA:
        if name not in given and _EXCLUSIVE.get(name) not in given:
            setattr(args, name, rec.camera[name])
    (w, h), frames = rec.camera["size"], rec.camera["frames"]
    if frames * w * h > FROM_PIXELS_UNASKED and not {"size", "frames", "seconds"} & given:
        _refuse(f"--from {args.from_video!r} records {frames} frames of {w}x{h} ({frames * w * h / 1e9:.0f} "
                f"gigapixels of frames), more than {FROM_PIXELS_UNASKED // 10**9}: give --frames or --seconds (and "
                "--size) to choose the video's length and size")
    if rec.camera["crf"] is None and "crf" not in given:
        args.crf = 18
    if "wrap" not in given:
        args.wrap = args.period is not None  # a loop: its canvas repeats every period
    return rec


def _recipe_options(rec, given: set[str], options: dict, path) -> dict:
    """The canvas options of --from: the recipe's pixel fields under those typed here, its
    style centres kept where they were on the canvas (fractions of this path's extent)."""
    from .. import recipe

    typed = {k: options[k] for k in given if k in PIXEL_FIELDS and k in options}
    if options["bit_exact"] and "cpu_path" not in typed:  # --bit-exact overrides the recipe's path too
        typed["cpu_path"] = "reference"
    e = path.extent()
    try:
        pixels = recipe.options(rec.canvas, typed, window=(e.x0, e.y0, e.width, e.height))
    except recipe.RecipeError as err:
        _refuse(f"--from {rec.canvas.image!r}: {err}")
    return options | {k: v for k, v in pixels.items() if k in options or k == "expect"}


def _refuse(message: str):
    print(f"igan-video: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _given(argv: list[str]) -> set[str]:
    """The options typed on the command line (by dest), whatever their values."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def recipe_command(request: RenderRequest, path, args) -> str:
    """The igan-video command that renders these frames again: the canvas's pixel options
    (request.command(), less igan-render's window) and the camera's."""
    parts = shlex.split(request.command())[1:]
    keep, skip = [], False
    for token in parts:
        if skip:
            skip = False
            continue
        if token in ("--width", "--height", "--x0", "--y0"):
            skip = True
            continue
        if token != "--wrap":
            keep.append(token)
    w, h = path.size
    cam = ["--size", f"{w}x{h}", f"--pan={path.pan[0]},{path.pan[1]}" if path.points is None
           else f"--pan={args.pan[0]},{args.pan[1]}"]
    if path.points is None:
        cam += [f"--start={path.start[0]},{path.start[1]}"]
    else:
        cam += ["--path=" + ":".join(f"{x},{y}" for x, y in path.points)]
    cam += ["--frames", str(path.frames), "--fps", str(args.fps)]
    if path.period is not None:
        cam += ["--wrap", "--period", str(path.period)]
    return shlex.join(["igan-video"] + keep + cam + ["--codec", args.codec, "--crf", str(args.crf)])


def main(argv: list[str] | None = None) -> int:
    with command("igan-video"):
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    request, path, args = parse_args(argv)
    from .. import video  # loads torch after the options are checked

    def run() -> int:
        if not request.resume:
            video.check_output(args.out)
        cmd = recipe_command(request, path, args)
        info = {"size": list(path.size), "frames": path.frames, "fps": args.fps, "codec": args.codec,
                "crf": args.crf if video.CODECS[args.codec].crf else None, "start": list(path.start),
                "pan": list(args.pan), "path": None if path.points is None else [list(p) for p in path.points],
                "period": path.period}
        stats = video.render_video(request, path, args.out, codec=args.codec, fps=args.fps, crf=args.crf,
                                   command=cmd, video=info, progress=not request.quiet)
        if stats is None:
            print(f"igan-video: {args.out!r} is already this video, finished; nothing to do")
        else:
            print(f"igan-video: {stats.summary()} -> {args.out}")
        return 0

    return guarded("igan-video", run, interrupted="interrupted; no video was written (--resume finishes it)")


if __name__ == "__main__":
    sys.exit(main())
