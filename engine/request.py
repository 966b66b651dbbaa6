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

from typing import Protocol

from .errors import RequestError, option
from .planner import MAX_SIDE
from .provenance import CPU_PATHS, DEFAULT_CPU_PATH, DEFAULT_LATENT_RNG, LATENT_RNG_VERSIONS, QUANTIZERS
from .values import DEFAULT_BLUR, blur, centers, positive, seeds, size_bytes

FORMATS = (".png", ".tif", ".tiff", ".zarr")
TILE_ALIGN = 16
MAX_SEED = 2**63 - 1  # seeds are 63-bit (rng.philox_key)
MAX_OFFSET = 1 << 34  # |x0|, |y0| (planner.Window)
GROUPS = {  # the groups of the render options, in the order --help shows them
    "model": "the model",
    "window": "the window of the canvas",
    "canvas": "the canvas: styles, 360-degree panoramas, truncation, reproducing other images",
    "compute": "how it is computed",
    "outputs": "outputs",
    "work": "the work directory",
    "internal": None,  # set by igan itself, never typed
}


def declare(default, group: str, help: str = "", *, pixels: bool = False, parse=None, flag: str | None = None,
            metavar: str | None = None, choices=None, const=None, always: bool = False, spell=None):
    """One render option: a RenderRequest field with its default, its group (GROUPS), its help
    (argparse's: `%%` for a percent sign), whether it decides pixels (then the recipe, command()
    and --from carry it), how a command line spells it (`parse`: text -> value, `flag`,
    `metavar`, `choices`, `const` for an optional value) and how command() writes it (`always`,
    even at its default; `spell`: value -> text). Every entry point derives from these."""
    assert group in GROUPS, group
    return dataclasses.field(default=default, metadata=dict(
        group=group, help=help, pixels=pixels, parse=parse, flag=flag, metavar=metavar, choices=choices,
        const=const, always=always, spell=spell))


class CanvasSpec(Protocol):
    """An application's canvas (apps.outpaint.AppSpec; fusion.FieldSpec is the other kind):
    what every process rebuilds the field from, and what a resume must match."""

    spatial: bool

    def build(self, config, seed: int, rng: str = DEFAULT_LATENT_RNG): ...

    def identity(self) -> dict: ...


def _centers(centers) -> str:
    return ":".join(f"{x!r},{y!r}" for x, y in centers)


@dataclass(frozen=True)
class RenderRequest:
    """A render, declared once: each field is an igan-render option (`--style-blur` is
    `style_blur`) with its group, help and parser (`declare`); igan-render's and the
    applications' parsers, the Python and C++ APIs, the recipe and igan-serve's jobs derive
    from these fields. Pixel fields are in the order command() writes them."""

    out: str = declare("igan.png", "outputs", "output: .png, .tif/.tiff (pyramidal BigTIFF) or .zarr (Zarr v3 array) "
                                              "(default igan.png)")
    # the model
    checkpoint: str | None = declare(
        None, "model", "official InfinityGAN checkpoint (best_fid.pth.tar), igan .safetensors model, or a model igan "
                       "ships: builtin:landscapes-v2 (the default, see below) or builtin:landscapes-v1 (the default "
                       "of igan 0.1-0.3)", pixels=True)
    model: str | None = declare(None, "model", "with --backend onnx: the ONNX export to render (igan-export "
                                               "--checkpoint CKPT --onnx DIR)", pixels=True, metavar="DIR")
    config: str | None = declare(None, "model", "preset of an official checkpoint (default: inferred from its "
                                                "shapes); without --checkpoint only with --random-weights", pixels=True)
    random_weights: bool = declare(False, "model", "render --config's preset with fixed random weights (for "
                                                   "benchmarks: not a trained model)", pixels=True)
    # the window of the canvas
    width: int = declare(2048, "window", "image width in pixels (default 2048)", pixels=True, parse=positive,
                         always=True)
    height: int = declare(512, "window", "image height in pixels (default 512)", pixels=True, parse=positive,
                          always=True)
    x0: int = declare(0, "window", "canvas column of the left edge (default 0)", pixels=True, parse=int, always=True)
    y0: int | None = declare(None, "window", "canvas row of the top edge (default: -(height // 2), which centres the "
                                             "image on the horizon, as the official code does)", pixels=True, parse=int,
                             always=True)
    seed: int = declare(0, "window", "canvas seed (default 0)", pixels=True, parse=int, always=True)
    # the canvas
    styles: tuple[int, ...] | None = declare(
        None, "canvas", "style fusion: one style (z_g) per seed, blended across the image; --seed still sets the "
                        "local content", pixels=True, parse=seeds, metavar="SEED,SEED,...",
        spell=lambda v: ",".join(map(str, v)))
    style_centers: tuple[tuple[float, float], ...] | None = declare(
        None, "canvas", "where each style sits, as fractions of the window (0,0 = top-left, 1,1 = bottom-right; "
                        "values outside 0..1 are allowed) (default: spread evenly across the width at mid-height)",
        pixels=True, parse=centers, metavar="X,Y:X,Y:...", spell=_centers)
    style_map: str | None = declare(
        None, "canvas", "instead of centres: an image whose distinct colours (numbered in order of first "
                        "appearance, top-left first) say where each style goes, stretched to the window",
        pixels=True, metavar="PNG")
    style_blur: int | None = declare(None, "canvas", f"width of the box blur between styles, in output pixels "
                                                     f"(default {DEFAULT_BLUR})", pixels=True, parse=blur,
                                     metavar="K")
    wrap: bool = declare(False, "canvas", "cyclic panorama: the canvas repeats horizontally every --width pixels, so "
                                          "the right edge continues into the left (width: a multiple of 16)",
                         pixels=True)
    trunc: float = declare(1.0, "canvas", "truncation: styles pulled towards the mean style, w_avg + PSI (w - w_avg); "
                                          "below 1 trades variety for typical images (default 1: none, as the "
                                          "official code)", pixels=True, parse=float, metavar="PSI",
                           spell=lambda v: repr(float(v)))
    latent_rng: str = declare(DEFAULT_LATENT_RNG, "canvas", "generator of the canvas's random values: philox "
                                                            "(Philox4x32-10, the default since igan 0.2) or v1 (the "
                                                            "hash of earlier versions: re-renders their images)",
                              pixels=True, choices=tuple(LATENT_RNG_VERSIONS), always=True)
    quantize: str = declare("round", "canvas", "float to 8-bit: round (to the nearest level, default) or official "
                                               "(truncation, as the official code's matplotlib PNGs: the same bytes "
                                               "from the same latents)", pixels=True, choices=QUANTIZERS)
    # how it is computed
    precision: str = declare("fp32", "compute", "fp32 (default), fp16 or bf16", pixels=True,
                             choices=("fp32", "fp16", "bf16"))
    backend: str = declare("torch", "compute", "model runner: torch (reference, any device), triton (fused kernels, "
                                               "CUDA) or onnx (onnxruntime on the graphs of --model)", pixels=True,
                           choices=("torch", "triton", "onnx"))
    cpu_path: str = declare(DEFAULT_CPU_PATH, "compute",
                            "CPU, torch backend: exact (the default: fast, with the same bytes under any --tile, "
                            "--batch, --workers, --threads or torchrun split), reference (igan 0.2's path; "
                            "slower) or fast-0.4 (the default of igan 0.3-0.4, whose bytes follow the split)",
                            pixels=True, choices=CPU_PATHS)
    bit_exact: bool = declare(False, "compute", "the same as --cpu-path reference, kept for igan 0.2-0.4 commands")
    tile: int | None = declare(None, "compute", "tile size in pixels, a multiple of 16 (default: from "
                                                "--memory-budget)", parse=positive)
    batch: int = declare(1, "compute", "tiles per forward pass (default 1)", parse=positive)
    memory_budget: int | None = declare(None, "compute", "memory for one batch of tiles, e.g. 4GiB (default on CPU: "
                                                         "a quarter of the RAM, at most 3 GiB, where the least-work "
                                                         "tiles fit; 1 GiB for --cpu-path fast-0.4; 60%% of free "
                                                         "memory on GPU)", parse=size_bytes)
    device: str = declare("auto", "compute", "cpu, cuda, cuda:N or auto (default auto)")
    gpus: int | None = declare(None, "compute", "render on GPUs 0..N-1, one worker process each, pulling from a "
                                                "shared queue", parse=positive)
    workers: int | None = declare(None, "compute", "with --device cpu: N worker processes sharing the CPU cores",
                                  parse=positive)
    threads: int | None = declare(None, "compute", "CPU threads for torch (default: all)", parse=positive)
    # outputs
    metadata: bool = declare(True, "outputs", "do not embed what made the image (igan version, command, model "
                                              "digest, seed, window) in PNG and TIFF files", flag="--no-metadata")
    preview: str | None = declare(None, "outputs", "also write a low-resolution preview PNG (default path: OUT stem + "
                                                   ".preview.png)", metavar="PATH", const="")
    preview_size: int = declare(1024, "outputs", "preview's longer side (default 1024)", parse=positive)
    compression: str | int | None = declare(
        None, "outputs", "PNG: zlib level 0-9 (default 6); TIFF: zlib (default, read by every viewer), zstd, jpeg "
                         "(lossy, for photographic pyramids; :quality 1-100, default 90) or none, optionally :level")
    ome: bool = declare(False, "outputs", "with a .tif/.tiff --out: write an OME-TIFF (OME-XML, the same pyramid in "
                                          "SubIFDs) for QuPath, OMERO and Bio-Formats; igan's metadata goes in an OME "
                                          "MapAnnotation")
    stats_json: str | None = declare(None, "outputs", "also write the summary figures as JSON (for scripts and "
                                                      "benchmarks)", metavar="PATH")
    quiet: bool = declare(False, "outputs", "no progress bar")
    # the work directory
    resume: bool = declare(False, "work", "finish an interrupted render of the same request from its finished tiles")
    restart: bool = declare(False, "work", "discard the finished tiles of an interrupted render")
    keep_work: bool = declare(False, "work", "keep the work directory (tile store + manifest) after the output is "
                                             "written")
    # set by igan: what the render must reproduce ((key, value), ...: "model", "config",
    # "label_map"; --from), and an application's canvas instead of styles/wrap
    expect: tuple[tuple[str, str], ...] = declare((), "internal")
    field: CanvasSpec | None = declare(None, "internal")

    def __post_init__(self):
        # bit_exact is the old spelling of cpu_path "reference": read here, then cleared, so that
        # cpu_path is the one field that says which path renders (and replace() can change it)
        if self.bit_exact:
            if self.cpu_path not in ("reference", DEFAULT_CPU_PATH):
                raise RequestError(f"{option('bit_exact')} is {option('cpu_path')} reference: it excludes "
                                   f"{option('cpu_path')} {self.cpu_path}")
            object.__setattr__(self, "cpu_path", "reference")
            object.__setattr__(self, "bit_exact", False)

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
        canvas, which igan-render cannot describe): the options that decide its pixels, in
        their declared order, each unless at its default (`always`: the window and the
        generator are spelled out); no --out: a file's bytes never depend on its name."""
        if self.field is not None:
            return None
        parts = ["igan-render"]
        for f in dataclasses.fields(self):
            meta = f.metadata
            if not meta["pixels"]:
                continue
            value = self.top if f.name == "y0" else getattr(self, f.name)
            if isinstance(f.default, bool):  # a switch: its flag when on
                if value:
                    parts.append(flag(f))
            elif value is None or (value == f.default and not meta["always"]):
                continue
            else:
                parts += [flag(f), meta["spell"](value) if meta["spell"] else str(value)]
        return shlex.join(parts)

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
        if self.cpu_path not in CPU_PATHS:
            raise RequestError(f"{option('cpu_path')} must be one of {', '.join(CPU_PATHS)}, got {self.cpu_path!r}")
        if self.cpu_path != DEFAULT_CPU_PATH and self.backend != "torch":
            raise RequestError(f"{option('cpu_path')} {self.cpu_path} is a path of the torch backend; "
                               f"{option('backend')} {self.backend} has one path of its own (drop "
                               f"{option('cpu_path')} or use {option('backend')} torch)")
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


def flag(f: dataclasses.Field) -> str:
    """The command-line flag of a declared field (`style_blur` -> `--style-blur`)."""
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def declared(group: str | None = None, *, pixels: bool | None = None) -> tuple[dataclasses.Field, ...]:
    """The declared render options, in order: of one group, and/or those that decide pixels
    (or not); the internal ones only when asked for by group."""
    return tuple(f for f in dataclasses.fields(RenderRequest)
                 if (f.metadata["group"] == group if group else f.metadata["group"] != "internal")
                 and (pixels is None or f.metadata["pixels"] == pixels))


# The fields that decide an image's pixels: all a recipe (igan-render --from) may set. The rest
# (outputs, work directory, processes, threads, previews, statistics) come from the user only.
PIXEL_FIELDS = tuple(f.name for f in declared(pixels=True))


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask, else the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(f"{option(name)} must be a positive integer, got {value!r}")
