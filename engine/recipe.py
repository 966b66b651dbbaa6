"""The recipe an igan image or video carries, read as untrusted data: what `igan-render --from`
and `igan-video --from` take.

An image comes from anywhere (a download, a chat, a shared folder), so its recipe may decide
the pixels and nothing else. `read(image)` parses the recorded request (the JSON that
provenance.describe wrote, never the shell command beside it) through a strict schema: every
field known, of its type and within its range, and mapped onto the RenderRequest fields that
decide pixels (request.PIXEL_FIELDS). Where the output goes, the work directory, processes,
threads, previews and statistics are never read from it: they come from the user's command
line. Anything else is a RecipeError naming the image and what is wrong.

The recipe names no file: a model that is not shipped with igan, or a style map, is given on
the command line and checked against the digest the recipe records (`Recipe.expect`, checked
by the pipeline once the model is loaded). Torch-free, like the rest of what igan-render reads
before its options are checked.
"""
from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass

from .config import PRESETS
from .embedded import BUILTIN_PREFIX, DEFAULT_NAME, builtin_for
from .errors import RequestError
from .planner import MAX_SIDE
from .provenance import CPU_PATH_RECORDED, LATENT_RNG_VERSIONS, QUANTIZERS, read_metadata
from .request import MAX_OFFSET, MAX_SEED, PIXEL_FIELDS, declared
from .values import DEFAULT_BLUR, MAX_BLUR

# The request an image records (identity.request_identity less its tiling), field by field.
_FIELDS = ("model", "config", "seed", "window", "width", "height", "precision", "backend", "latent_rng", "quantize",
           "trunc", "path", "field")
_HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_STYLES = 4096  # one seed per style: far more than a window can show


class RecipeError(RequestError):
    """An image whose recipe cannot be rendered again (missing, malformed, hostile)."""


@dataclass(frozen=True)
class Recipe:
    """A recipe read through the schema: `options` (RenderRequest pixel fields), the style
    centres in canvas pixels or the label-map digest when it fused styles, and the model
    identity and config the render must have (`expect`: ((key, value), ...), checked by the
    pipeline)."""

    image: str
    options: dict
    model: str  # identity.model_identity of the model it was made with
    config: dict  # its GeneratorConfig, as recorded
    centers: tuple[tuple[float, float], ...] | None = None  # style centres in canvas pixels
    label_map: str | None = None  # sha256 of the style map's labels, when it used one
    ignored: tuple[str, ...] = ()  # what the recorded command said that a recipe may not decide

    @property
    def needs_checkpoint(self) -> bool:
        """Made with a model igan does not ship: the user names the file (never the recipe)."""
        return not self.model.startswith(("embedded:", "random:"))

    def expect(self, *, config: bool, label_map: bool) -> tuple[tuple[str, str], ...]:
        """What the render must reproduce, checked once the model and the canvas are built
        (pipeline.check_expected): the model always, its config unless the user chose one,
        the style map's labels when the user gave the map for the recipe's styles."""
        out = (("model", self.model),)
        if config:
            out += (("config", json.dumps(self.config, sort_keys=True)),)
        if label_map and self.label_map:
            out += (("label_map", self.label_map),)
        return out


def read(image: str) -> Recipe:
    """The recipe of an igan PNG/TIFF, through the schema; RecipeError naming what is wrong."""
    try:
        meta = read_metadata(image)
    except OSError as e:
        raise RecipeError(e.strerror or str(e)) from None
    except Exception as e:  # noqa: BLE001  (any file may arrive here: not one PIL or tifffile can open)
        raise RecipeError(f"is not a PNG or TIFF igan can read ({type(e).__name__})") from None
    if meta is None:
        raise RecipeError("carries no igan metadata (made elsewhere, or with --no-metadata)")
    if not isinstance(meta, dict):
        raise RecipeError(f"its recipe is a JSON {type(meta).__name__}, not an object")
    request = meta.get("request")
    if not isinstance(request, dict):
        raise RecipeError("its recipe records no request" if request is None
                          else f"its recipe's request is a {type(request).__name__}, not an object")
    if meta.get("command") is None and "field" in request and not _is_fusion(request["field"]):
        raise RecipeError("was made by an igan application (outpainting, inbetweening), not igan-render: run that "
                          "again")
    ignored = ["--" + k.replace("_", "-") for k in _check_fields(request)]
    ignored += [flag for flag in _ignored(meta.get("command")) if flag not in ignored]
    return _parse(image, request, tuple(ignored))


def _check_fields(request: dict) -> list[str]:
    """The recorded request's fields that are not pixels (outputs, processes, the work
    directory: named to the user, never obeyed); RecipeError on a field igan does not know."""
    not_pixels = {f.name for f in declared(pixels=False)}
    unknown = sorted(set(request) - set(_FIELDS) - not_pixels - {"tile_height", "tile_width"})
    if unknown:
        raise RecipeError(f"its request has unknown field(s) {_names(unknown)} (made by a newer igan?)")
    return sorted(set(request) & not_pixels)


# ---- videos (igan-video --from) -------------------------------------------------------------------
MAX_FRAMES = 10**8
MAX_FPS = 1000
MAX_POINTS = 4096


@dataclass(frozen=True)
class VideoRecipe:
    """A video's recipe read through the schema: the canvas (`canvas`, a Recipe whose window
    is the first frame's, or one period of a loop) and the camera (`camera`: size, frames,
    fps, start, pan, path, period, codec, crf, each checked for its type and range)."""

    canvas: Recipe
    camera: dict


def video_metadata(path) -> dict | None:
    """The recipe igan-video recorded in a video's container metadata ("igan": JSON), or None.
    Matroska spells the keys in capitals, MP4 as written. Raises what PyAV raises on a file
    that is not a video."""
    import av

    with av.open(str(path)) as container:
        meta = {k.lower(): v for k, v in container.metadata.items()}
    return json.loads(meta["igan"]) if "igan" in meta else None


def read_video(path, codecs) -> VideoRecipe:
    """The recipe of a video igan-video wrote, through the same schema as an image's (its
    request decides the canvas and names no file) and the camera's (`codecs`: the names
    igan-video takes); RecipeError naming what is wrong. The recorded command is not read."""
    try:
        meta = video_metadata(path)
    except OSError as e:
        raise RecipeError(e.strerror or str(e)) from None
    except Exception as e:  # noqa: BLE001  (any file may arrive here: PyAV raises many kinds)
        raise RecipeError(f"is not a video igan can read ({type(e).__name__})") from None
    if meta is None:
        raise RecipeError("carries no igan-video recipe (made elsewhere)")
    if not isinstance(meta, dict):
        raise RecipeError(f"its recipe is a JSON {type(meta).__name__}, not an object")
    if not isinstance(meta.get("video"), dict) or not isinstance(meta.get("request"), dict):
        raise RecipeError("its recipe records no camera and canvas (not made by igan-video?)")
    camera, request = _camera(meta["video"], codecs), meta["request"]
    _check_fields(request)
    if "window" in request:
        raise RecipeError("its request has a window: a video's frames are its camera's")
    w, h = camera["size"]
    window = {"x0": camera["start"][0], "y0": camera["start"][1], "width": camera["period"] or w, "height": h}
    return VideoRecipe(_parse(str(path), dict(request, window=window), ()), camera)


def _camera(v: dict, codecs) -> dict:
    unknown = sorted(set(v) - {"size", "frames", "fps", "codec", "crf", "start", "pan", "path", "period"})
    if unknown:
        raise RecipeError(f"its camera has unknown field(s) {_names(unknown)} (made by a newer igan?)")
    cam = {"size": _pair(v, "size", 1, MAX_SIDE), "frames": _int(v, "frames", 1, MAX_FRAMES, "video."),
           "fps": _int(v, "fps", 1, MAX_FPS, "video."), "codec": _choice(v, "codec", tuple(codecs)),
           "start": _pair(v, "start", -MAX_OFFSET, MAX_OFFSET), "pan": _pair(v, "pan", -MAX_SIDE, MAX_SIDE),
           "crf": None if v.get("crf") is None else _int(v, "crf", 0, 63, "video."),
           "period": None if v.get("period") is None else _int(v, "period", 1, MAX_SIDE, "video."), "path": None}
    if v.get("path") is not None:
        points = _get(v, "path", list, "video.")
        if not 2 <= len(points) <= MAX_POINTS:
            raise RecipeError(f"its video.path must hold 2 to {MAX_POINTS} points, got {len(points)}")
        cam["path"] = tuple(_pair({"point": p}, "point", -MAX_OFFSET, MAX_OFFSET) for p in points)
    return cam


def _pair(d: dict, key: str, lo: int, hi: int) -> tuple[int, int]:
    v = _get(d, key, list, "video.")
    if len(v) != 2:
        raise RecipeError(f"its video.{key} must be a pair of integers, got {_short(v)}")
    return tuple(_int({key: x}, key, lo, hi, "video.") for x in v)


def _parse(image: str, r: dict, ignored: tuple[str, ...]) -> Recipe:
    window = _get(r, "window", dict)
    unknown = sorted(set(window) - {"x0", "y0", "width", "height"})
    if unknown:
        raise RecipeError(f"its window has unknown field(s) {_names(unknown)}")
    opts = {"x0": _int(window, "x0", -MAX_OFFSET, MAX_OFFSET, "window."),
            "y0": _int(window, "y0", -MAX_OFFSET, MAX_OFFSET, "window."),
            "width": _int(window, "width", 1, MAX_SIDE, "window."),
            "height": _int(window, "height", 1, MAX_SIDE, "window.")}
    for name in ("width", "height"):
        if name in r and _int(r, name, 1, MAX_SIDE) != opts[name]:
            raise RecipeError(f"its request's {name} {r[name]} differs from its window's {opts[name]}")
    opts["seed"] = _int(r, "seed", 0, MAX_SEED)
    opts["trunc"] = _number(r, "trunc")
    opts["precision"] = _choice(r, "precision", ("fp32", "fp16", "bf16"))
    opts["backend"] = _choice(r, "backend", ("torch", "triton", "onnx"))
    generators = {v: k for k, v in LATENT_RNG_VERSIONS.items()}
    opts["latent_rng"] = generators[_choice(r, "latent_rng", tuple(generators))]
    opts["quantize"] = _choice(r, "quantize", QUANTIZERS)
    # the torch path, in the word the version that made the file recorded (igan 0.2-0.4: "bit-exact", "fast")
    paths = {v: k for k, v in CPU_PATH_RECORDED.items()}
    if "path" in r or opts["backend"] == "torch":
        opts["cpu_path"] = paths[_choice(r, "path", tuple(paths))]
    config = _get(r, "config", dict)
    name = config.get("name")
    if not isinstance(name, str):
        raise RecipeError("its request's config has no name")
    model = _get(r, "model", str)
    if model.startswith("random:"):
        preset, _, seed = model[len("random:"):].rpartition(":")
        if preset not in PRESETS or not seed.isdigit() or len(seed) > 20:
            raise RecipeError(f"its model {_short(model)} names no preset igan has (known: {_names(sorted(PRESETS))})")
        opts |= {"random_weights": True, "config": preset}
    elif model.startswith("embedded:"):
        if not _HEX64.fullmatch(model[len("embedded:"):]):
            raise RecipeError(f"its model {_short(model)} is not a model digest")
        shipped = builtin_for(model)
        if shipped is None:
            raise RecipeError(f"was made with a built-in model this igan does not ship ({_short(model)}): give "
                              "--checkpoint the model it was made with")
        opts["checkpoint"] = None if shipped == BUILTIN_PREFIX + DEFAULT_NAME else shipped
    elif not _HEX64.fullmatch(model):
        raise RecipeError(f"its model {_short(model)} is not a model digest")
    centers = label_map = None
    if "field" in r:
        fusion, centers, label_map = _fusion(_get(r, "field", dict), opts)
        opts |= fusion
    return Recipe(image, opts, model, config, centers, label_map, ignored)


def _fusion(f: dict, opts: dict):
    """Style fusion and the cyclic canvas: (options, centres in canvas pixels, label-map digest)."""
    unknown = sorted(set(f) - {"styles", "blur", "period", "centers", "label_map"})
    if unknown:
        raise RecipeError(f"its field has unknown entries {_names(unknown)}")
    out = {}
    period = f.get("period")
    if period is not None:
        _int(f, "period", 1, MAX_SIDE, "field.")
        if period != opts["width"]:
            raise RecipeError(f"its field's period {period} is not its width {opts['width']} (igan-render wraps "
                              "every --width pixels)")
        out["wrap"] = True
    styles = f.get("styles", [])
    if not isinstance(styles, list) or len(styles) > MAX_STYLES:
        raise RecipeError(f"its field's styles must be a list of at most {MAX_STYLES} seeds")
    if not styles:
        if set(f) - {"styles", "period", "blur", "centers"} or f.get("centers"):
            raise RecipeError("its field places styles but names none")
        return out, None, None
    out["styles"] = tuple(_int({"style": s}, "style", 0, MAX_SEED, "field.") for s in styles)
    blur = _int(f, "blur", 1, MAX_BLUR, "field.")
    out["style_blur"] = None if blur == DEFAULT_BLUR else blur
    if ("centers" in f) == ("label_map" in f):
        raise RecipeError("its field must place its styles by centers or by a label_map, one of them")
    if "label_map" in f:
        lm = _get(f, "label_map", dict)
        digest = lm.get("sha256")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise RecipeError("its field's label_map has no sha256 digest")
        return out, None, digest
    centers = f["centers"]
    if not isinstance(centers, list) or len(centers) != len(styles):
        raise RecipeError(f"its field's centers must be a list of {len(styles)} [x, y] pairs, one per style")
    pts = []
    for c in centers:
        if not (isinstance(c, list) and len(c) == 2 and all(_finite(v) for v in c)
                and all(abs(v) <= 2.0 ** 40 for v in c)):
            raise RecipeError(f"its field's centers must be [x, y] pairs of finite numbers, got {_short(c)}")
        pts.append((float(c[0]), float(c[1])))
    return out, tuple(pts), None


def centers_as_fractions(centers, window) -> tuple[tuple[float, float], ...] | None:
    """Style centres in canvas pixels as --style-centers fractions of `window` (x0, y0,
    width, height): None where they are the default placement, else, per coordinate, the
    shortest decimal whose position (fusion.spec_from_options: x0 + f * width) is the recorded
    one exactly, so a window of another size keeps the styles where they were on the canvas."""
    x0, y0, w, h = window
    n = len(centers)
    default = tuple((x0 + ((i + 0.5) / n) * w, y0 + 0.5 * h) for i in range(n))
    if tuple(centers) == default:
        return None
    return tuple((_fraction(cx, x0, w), _fraction(cy, y0, h)) for cx, cy in centers)


def _fraction(c: float, origin: int, size: int) -> float:
    f = (c - origin) / size
    for digits in range(1, 18):
        g = float(f"{f:.{digits}g}")
        if origin + g * size == c:
            return g
    candidates = [f]
    for direction in (math.inf, -math.inf):
        g = f
        for _ in range(4):
            g = math.nextafter(g, direction)
            candidates.append(g)
    return next((g for g in candidates if origin + g * size == c), f)


def _ignored(command) -> tuple[str, ...]:
    """The options of the recorded command line that a recipe may not decide (outputs, the
    work directory, processes...): named to the user, never obeyed. The command is not
    otherwise read: the request is the recipe."""
    if not isinstance(command, str):
        return ()
    try:
        tokens = shlex.split(command)
    except ValueError:
        tokens = command.split()
    pixels = {"--" + name.replace("_", "-") for name in PIXEL_FIELDS}
    flags = []
    for t in tokens:
        flag = t.split("=", 1)[0]
        if re.fullmatch(r"--[a-z][a-z0-9-]{0,40}", flag) and flag not in pixels and flag not in flags:
            flags.append(flag)
    return tuple(flags)


def options(recipe: Recipe, given: dict, window=None) -> dict:
    """RenderRequest options: the recipe's pixel fields under the user's command line (`given`:
    the options typed there, by field name), the style centres placed in the final window
    (`window`: (x0, y0, width, height), by default the recipe's window under `given`), and
    `expect` for the pipeline to check. RecipeError where the user must name a file."""
    opts = dict(recipe.options)
    placed = {"styles", "style_centers", "style_map"} & set(given)  # the user places the styles anew
    if recipe.centers is not None and not placed:
        if window is None:
            window = tuple(given.get(k, opts[k]) for k in ("x0", "y0", "width", "height"))
        opts["style_centers"] = centers_as_fractions(recipe.centers, window)
    if recipe.label_map is not None and not placed:
        raise RecipeError("was rendered with a style map (its labels have sha256 "
                          f"{recipe.label_map[:16]}...): give --style-map with that map (a recipe names no file)")
    files = {"checkpoint", "model"} & set(given)
    if recipe.needs_checkpoint and not files:
        what = "--model the ONNX export" if opts["backend"] == "onnx" else "--checkpoint the checkpoint"
        raise RecipeError(f"was made with a model igan does not ship (sha256 {recipe.model[:16]}...): give {what} it "
                          "was made with (a recipe names no file)")
    if files or "random_weights" in given:  # the user names the model: the recipe's spelling of it goes
        for name in ("checkpoint", "config", "random_weights"):
            opts.pop(name, None)
    opts |= given
    opts["expect"] = recipe.expect(config="config" not in given,
                                   label_map="style_map" in given and not {"styles", "style_centers"} & set(given))
    return opts


def _get(d: dict, key: str, kind: type, prefix: str = ""):
    if key not in d:
        raise RecipeError(f"its request records no {prefix}{key}")
    v = d[key]
    if not isinstance(v, kind) or isinstance(v, bool):
        raise RecipeError(f"its {prefix}{key} must be a JSON {kind.__name__}, got {_short(v)}")
    return v


def _int(d: dict, key: str, lo: int, hi: int, prefix: str = "") -> int:
    v = _get(d, key, int, prefix)
    if not lo <= v <= hi:
        raise RecipeError(f"its {prefix}{key} {_short(v)} is outside [{lo}, {hi}]")
    return v


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _number(d: dict, key: str) -> float:
    v = d.get(key, 1.0)
    if not _finite(v):
        raise RecipeError(f"its {key} must be a finite number, got {_short(v)}")
    return float(v)


def _choice(d: dict, key: str, allowed) -> str:
    v = d.get(key)
    if v not in allowed or not isinstance(v, str):
        raise RecipeError(f"its {key} must be one of {_names(allowed)}, got {_short(v)}")
    return v


def _is_fusion(f) -> bool:
    return isinstance(f, dict) and set(f) <= {"styles", "blur", "period", "centers", "label_map"}


def _names(items) -> str:
    return ", ".join(_short(i, 40) for i in items)


def _short(value, limit: int = 60) -> str:
    """A value of the recipe as it may be shown: repr (control characters escaped), cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
