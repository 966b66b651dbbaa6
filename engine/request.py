"""RenderRequest: the one description of a render.

igan-render's command line, the Python API (`igan.load(...).render_to_file(...)`), the C++
API and the applications all build one; `render.run(request)` carries it out. Field names
are igan-render's options (`--style-blur` is `style_blur`), and `validate()` /
`check_outputs()` are the checks igan-render makes, so every entry point refuses the same
mistakes with the same messages.
"""
from __future__ import annotations

import dataclasses
import math
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from .errors import RequestError, option
from .planner import MAX_SIDE
from .provenance import DEFAULT_LATENT_RNG, LATENT_RNG_VERSIONS, QUANTIZERS

FORMATS = (".png", ".tif", ".tiff", ".zarr")
TILE_ALIGN = 16
MAX_SEED = 2**63 - 1  # seeds are 63-bit (latent.philox_key)
MAX_OFFSET = 1 << 34  # |x0|, |y0| (planner.Window)
# The fields that decide an image's pixels: all a recipe (igan-render --from) may set. The rest
# (outputs, work directory, processes, threads, previews, statistics) come from the user only.
PIXEL_FIELDS = ("checkpoint", "model", "config", "random_weights", "width", "height", "x0", "y0", "seed", "trunc",
                "styles", "style_centers", "style_map", "style_blur", "wrap", "latent_rng", "quantize", "precision",
                "backend", "bit_exact")


@dataclass(frozen=True)
class RenderRequest:
    out: str = "igan.png"  # .png, .tif/.tiff (pyramidal BigTIFF) or .zarr
    # the window of the canvas, and the canvas
    width: int = 2048
    height: int = 512
    x0: int = 0
    y0: int | None = None  # None: -(height // 2), centred on the horizon as the official code does
    seed: int = 0
    # the model
    checkpoint: str | None = None  # None: the embedded model
    config: str | None = None  # preset of an official checkpoint
    model: str | None = None  # an ONNX export (igan-export --onnx DIR), for backend "onnx"
    random_weights: bool = False  # with config and no checkpoint: that config with fixed random weights
    trunc: float = 1.0  # truncation psi: w = w_avg + trunc (w - w_avg); 1.0: none, as the official code
    # style fusion and 360-degree panoramas
    styles: tuple[int, ...] | None = None
    style_centers: tuple[tuple[float, float], ...] | None = None
    style_map: str | None = None
    style_blur: int | None = None
    wrap: bool = False
    latent_rng: str = DEFAULT_LATENT_RNG  # the canvas's random values: "philox", or "v1" (igan before 0.2)
    quantize: str = "round"  # float -> uint8: "round", or "official" (the official code's PNG bytes)
    metadata: bool = True  # embed what made the output (provenance.describe) in PNG and TIFF files
    # what the render must reproduce ((key, value), ...: "model", "config", "label_map"; --from)
    expect: tuple[tuple[str, str], ...] = ()
    field: object = None  # an application's canvas (apps.AppSpec), instead of styles/wrap
    # how it is computed
    tile: int | None = None
    batch: int = 1
    memory_budget: int | None = None
    device: str = "auto"
    gpus: int | None = None
    workers: int | None = None
    threads: int | None = None
    precision: str = "fp32"
    backend: str = "torch"
    bit_exact: bool = False  # CPU: the reference path, the same bytes in any tiling (slower than the default)
    # the work directory and the outputs
    resume: bool = False
    restart: bool = False
    keep_work: bool = False
    preview: str | None = None  # "": OUT's stem + .preview.png
    preview_size: int = 1024
    compression: str | int | None = None
    ome: bool = False  # .tif/.tiff: write an OME-TIFF (OME-XML, igan's metadata in a MapAnnotation)
    stats_json: str | None = None
    quiet: bool = False

    @classmethod
    def from_options(cls, options: dict) -> "RenderRequest":
        """From igan-render's options by name; an unknown name is a RequestError naming it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise RequestError(f"unknown igan-render option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**options)

    def replace(self, **changes) -> "RenderRequest":
        return dataclasses.replace(self, **changes)

    @property
    def top(self) -> int:
        """The canvas row of the window's top edge."""
        return -(self.height // 2) if self.y0 is None else self.y0

    def command(self) -> str | None:
        """The igan-render command that renders this image again (None for an application's
        canvas, which igan-render cannot describe): the options that decide its pixels, the
        generator always spelled out (add --out to choose the file)."""
        if self.field is not None:
            return None
        parts = ["igan-render"]
        for name in ("checkpoint", "model", "config"):
            if getattr(self, name) is not None:
                parts += ["--" + name, str(getattr(self, name))]
        if self.random_weights:
            parts.append("--random-weights")
        parts += ["--width", str(self.width), "--height", str(self.height), "--x0", str(self.x0),
                  "--y0", str(self.top), "--seed", str(self.seed)]
        if self.styles is not None:
            parts += ["--styles", ",".join(map(str, self.styles))]
        if self.style_centers is not None:
            parts += ["--style-centers", ":".join(f"{x!r},{y!r}" for x, y in self.style_centers)]
        if self.style_map is not None:
            parts += ["--style-map", self.style_map]
        if self.style_blur is not None:
            parts += ["--style-blur", str(self.style_blur)]
        if self.wrap:
            parts.append("--wrap")
        if self.trunc != 1.0:
            parts += ["--trunc", repr(float(self.trunc))]
        parts += ["--latent-rng", self.latent_rng]
        for name, default in (("quantize", "round"), ("precision", "fp32"), ("backend", "torch")):
            if getattr(self, name) != default:
                parts += ["--" + name, getattr(self, name)]
        if self.bit_exact:
            parts.append("--bit-exact")
        return shlex.join(parts)  # no --out: a file's bytes never depend on its name

    @property
    def preview_path(self) -> str | None:
        if self.preview is None:
            return None
        return self.preview or os.path.splitext(self.out)[0] + ".preview.png"

    @property
    def fused(self) -> bool:
        """Style fusion or a cyclic canvas (a fusion.FieldSpec), not the plain canvas."""
        return self.styles is not None or self.wrap

    # ---- checks --------------------------------------------------------------------------------
    def validate(self) -> "RenderRequest":
        """The options on their own and against each other (no file is touched); RequestError
        naming the option and its value."""
        for name in ("width", "height", "batch", "preview_size"):
            _positive(name, getattr(self, name))
        for name in ("tile", "memory_budget", "gpus", "workers", "threads", "style_blur"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        for name in ("x0", "seed") + (("y0",) if self.y0 is not None else ()):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise RequestError(f"{option(name)} must be an integer, got {getattr(self, name)!r}")
        for name in ("width", "height"):
            if getattr(self, name) > MAX_SIDE:
                raise RequestError(f"{option(name)} {getattr(self, name)} exceeds the limit of {MAX_SIDE} pixels per "
                                   "side")
        for name, low, high in (("seed", 0, MAX_SEED), ("x0", -MAX_OFFSET, MAX_OFFSET),
                                ("y0", -MAX_OFFSET, MAX_OFFSET)):
            value = getattr(self, name)
            if value is not None and not low <= value <= high:
                raise RequestError(f"{option(name)} must be in [{low}, {high}], got {value}")
        cpus = cpu_count()
        for name in ("threads", "workers"):
            if getattr(self, name) is not None and getattr(self, name) > cpus:
                raise RequestError(f"{option(name)} {getattr(self, name)} is more than this machine's {cpus} CPUs")
        ext = os.path.splitext(self.out)[1].lower()
        if ext not in FORMATS:
            raise RequestError(f"{option('out')} {self.out!r}: unsupported extension {ext or '(none)'!r}; use "
                               f"{', '.join(FORMATS)}")
        if self.ome and ext not in (".tif", ".tiff"):
            raise RequestError(f"{option('ome')} writes an OME-TIFF: it is for .tif/.tiff outputs, not {ext} "
                               f"({option('out')} {self.out!r})")
        if self.tile is not None and self.tile % TILE_ALIGN:
            raise RequestError(f"{option('tile')} must be a multiple of {TILE_ALIGN}, got {self.tile}")
        if self.precision not in ("fp32", "fp16", "bf16"):
            raise RequestError(f"{option('precision')} must be fp32, fp16 or bf16, got {self.precision!r}")
        if self.backend not in ("torch", "triton", "onnx"):
            raise RequestError(f"{option('backend')} must be torch, triton or onnx, got {self.backend!r}")
        if self.bit_exact and self.backend != "torch":
            raise RequestError(f"{option('bit_exact')} is the torch backend's reference path; {option('backend')} "
                               f"{self.backend} has none")
        if isinstance(self.trunc, bool) or not isinstance(self.trunc, (int, float)) \
                or not math.isfinite(self.trunc):
            raise RequestError(f"{option('trunc')} must be a finite number (1 = none), got {self.trunc!r}")
        if self.config is not None and self.checkpoint is None and self.model is None and not self.random_weights:
            raise RequestError(f"{option('config')} {self.config!r} names the preset of a checkpoint: give "
                               f"{option('checkpoint')} too, or {option('random_weights')} to render that config "
                               f"with fixed random weights (for benchmarks; not a trained model)")
        if self.random_weights and (self.checkpoint is not None or self.model is not None or self.config is None):
            raise RequestError(f"{option('random_weights')} renders a preset with random weights: give "
                               f"{option('config')} and no {option('checkpoint')}/{option('model')}")
        if self.latent_rng not in LATENT_RNG_VERSIONS:
            raise RequestError(f"{option('latent_rng')} must be one of {', '.join(LATENT_RNG_VERSIONS)}, "
                               f"got {self.latent_rng!r}")
        if self.quantize not in QUANTIZERS:
            raise RequestError(f"{option('quantize')} must be one of {', '.join(QUANTIZERS)}, got {self.quantize!r}")
        if self.resume and self.restart:
            raise RequestError(f"{option('resume')} and {option('restart')} exclude each other")
        if (self.backend == "onnx") != (self.model is not None):
            raise RequestError(f"{option('backend')} onnx renders an ONNX export: give it {option('model')} DIR (and "
                               f"no {option('checkpoint')})"
                             if self.backend == "onnx" else f"{option('model')} DIR is the export of "
                                                            f"{option('backend')} onnx")
        if self.model is not None and self.checkpoint is not None:
            raise RequestError(f"{option('model')} and {option('checkpoint')} exclude each other (the export carries "
                               "the weights)")
        if self.gpus and self.workers:
            raise RequestError(f"{option('gpus')} and {option('workers')} exclude each other ({option('workers')} is "
                               "for CPU processes)")
        if self.styles is None:
            for name in ("style_centers", "style_map", "style_blur"):
                if getattr(self, name) is not None:
                    raise RequestError(f"{option(name)} needs {option('styles')} (one seed per style)")
        if self.style_centers is not None and self.style_map is not None:
            raise RequestError(f"{option('style_centers')} and {option('style_map')} exclude each other")
        if self.style_centers is not None and len(self.style_centers) != len(self.styles):
            raise RequestError(f"{option('style_centers')} gives {len(self.style_centers)} centres for "
                               f"{len(self.styles)} styles")
        if self.field is not None and self.fused:
            raise RequestError(f"an application's canvas (field) excludes {option('styles')} and {option('wrap')}")
        if self.wrap and self.width % TILE_ALIGN:
            raise RequestError(f"{option('wrap')} needs {option('width')} to be a multiple of {TILE_ALIGN} (the "
                               "period of the panorama), "
                             f"got {self.width}")
        return self

    def check_outputs(self) -> None:
        """Every output is writable, takes its options, and collides with no input or other
        output; checked before anything is loaded or created (RequestError/PathError naming it)."""
        from . import sinks
        from .paths import check_distinct, check_writable
        from .store import work_dir_for

        out = Path(self.out)
        ext = out.suffix.lower()
        preview = self.preview_path
        if ext == ".zarr" and preview is not None:
            raise RequestError(f"{option('preview')} is not available for .zarr outputs ({option('out')} {self.out!r})")
        sinks.check_compression(out, self.compression)
        if ext == ".zarr" and os.path.lexists(out) and not os.path.lexists(work_dir_for(out)) and not self.resume:
            raise RequestError(f"{option('out')} {self.out!r} already exists; igan does not overwrite a Zarr store: "
                               "remove it "
                             f"or choose another {option('out')}")
        outputs = {option("out"): self.out, option("preview"): preview, option("stats_json"): self.stats_json}
        check_distinct({option("checkpoint"): self.checkpoint, option("model"): self.model,
                        option("style_map"): self.style_map}, outputs)
        for flag, path in outputs.items():
            if path is not None and not (flag == option("out") and ext == ".zarr" and os.path.lexists(path)):
                check_writable(flag, path)  # an existing Zarr --out is a finished render (checked above)


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask, else the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(f"{option(name)} must be a positive integer, got {value!r}")
