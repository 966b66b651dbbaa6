"""Where tiles come from: the generator (native tiles of any canvas, rendered in batches by
the engine's renderer) or an existing igan output (the levels of a pyramidal TIFF or a Zarr
array, read a tile at a time without loading the file).

Both implement `render(canvas, keys) -> [uint8 [h, w, 3]]`, called on the scheduler's worker
thread with keys of one canvas and of a level the source `reads`; coarser levels are reduced
from their children by the tile service.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .. import planner
from ..errors import PathError, option
from .canvas import Canvas
from .tiles import TILE, TileKey


class GeneratorSource:
    """Native (level 0) tiles of seeded canvases, from one loaded model."""

    kind = "canvas"

    def __init__(self, request, generator=None):
        """`request`: a RenderRequest whose model fields (checkpoint, config, model, device,
        backend, precision, cpu_path, latent_rng, quantize, trunc) say what renders; `generator`: the
        loaded model (default: loaded from the request)."""
        from .. import pipeline
        from ..identity import request_identity
        from ..sources import make_runner

        self.request = request.validate()
        self.generator = pipeline.load_model(request) if generator is None else generator
        self.config = self.generator.config
        self.runner = make_runner(request.backend, self.generator, request.device, request.precision,
                                  request.cpu_path)
        plan = planner.plan(self.config, planner.Window(0, 0, TILE, TILE), tile=TILE)
        # what decides a tile's bytes besides the canvas: the model by content, its config,
        # backend, precision, the canvas generator, quantization and truncation
        self.identity = {k: v for k, v in request_identity(request, plan, self.generator).items()
                         if k not in ("seed", "window", "width", "height", "tile_height", "tile_width")}
        self._fields: OrderedDict[Canvas, object] = OrderedDict()

    def reads(self, level: int) -> bool:
        return level == 0

    def extent(self, level: int):
        return None  # endless

    def describe(self) -> str:
        from ..embedded import DESCRIPTION

        r = self.request
        what = (DESCRIPTION if r.checkpoint is None and r.model is None
                else f"{os.path.basename(r.checkpoint or r.model)} (config {self.config.name!r})")
        return f"{what}; {r.backend} on {self.runner.device}, {r.precision}"

    def _spec(self, canvas: Canvas):
        """The canvas as the request's `field` (fusion.FieldSpec: style centres in canvas
        pixels, the period) and its built field, kept for the last 8 canvases."""
        cached = self._fields.get(canvas)
        if cached is None:
            from ..fusion import FieldSpec

            spec = FieldSpec(styles=tuple(s for s, _, _ in canvas.styles),
                             centers=tuple((float(x), float(y)) for _, x, y in canvas.styles),
                             blur=canvas.blur, period=canvas.period)
            cached = self._fields[canvas] = (spec, spec.build(self.config, canvas.seed, self.request.latent_rng))
            while len(self._fields) > 8:
                self._fields.popitem(last=False)
        self._fields.move_to_end(canvas)
        return cached

    def render(self, canvas: Canvas, keys: list[TileKey]) -> list[np.ndarray]:
        """The native tiles `keys`: each the 256 x 256 window of the canvas at the key,
        rendered by the in-memory render of igan.Model.render and the C++ API
        (pipeline.render_into) from this server's request with the canvas as its field, so
        every option that decides pixels is honoured as igan-render honours it."""
        from .. import pipeline

        spec, field = self._spec(canvas)
        out = []
        for key in keys:
            assert key.level == 0
            request = self.request.replace(x0=key.x * TILE, y0=key.y * TILE, width=TILE, height=TILE,
                                           seed=canvas.seed, field=spec, tile=TILE, batch=1)
            img = np.empty((TILE, TILE, 3), np.uint8)
            pipeline.render_into(img, request, self.runner, field)
            out.append(img)
        return out


@dataclass(frozen=True)
class FileCanvas:
    """The one canvas of an opened file: its pixels, no period."""

    path: str

    def canonical_x(self, level: int, x: int) -> int:
        return x


class FileSource:
    """The levels of an igan output: a pyramidal TIFF (each SubIFD level read directly) or a
    Zarr array (level 0; coarser levels are reduced from it). Reads one tile's window at a
    time through zarr (tifffile.aszarr for TIFF), never the whole file."""

    kind = "file"

    def __init__(self, path: str | os.PathLike):
        import zarr

        self.path = Path(path).resolve()
        ext = self.path.suffix.lower()
        self._tif = None
        try:
            if ext in (".tif", ".tiff"):
                import tifffile

                self._tif = tifffile.TiffFile(self.path)
                series = self._tif.series[0]
                self._arrays = [zarr.open_array(self._tif.aszarr(series=0, level=i), mode="r")
                                for i in range(len(series.levels))]
            elif ext == ".zarr":
                self._arrays = [zarr.open_array(str(self.path), mode="r")]
            else:
                raise PathError(f"{option('open')} {str(path)!r}: igan-serve opens .tif/.tiff and .zarr files "
                                "(igan-render outputs)")
        except PathError:
            raise
        except Exception as e:  # tifffile and zarr raise many kinds on a file that is not theirs
            raise PathError(f"{option('open')} {str(path)!r}: cannot read it as an image "
                            f"({type(e).__name__}: {e})") from e
        for a in self._arrays:
            if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
                raise PathError(f"{option('open')} {str(path)!r}: expected an RGB uint8 image [H, W, 3], got shape "
                                f"{tuple(a.shape)} of {a.dtype}")
        self.shapes = [tuple(a.shape[:2]) for a in self._arrays]
        while max(self.shapes[-1]) > TILE:  # levels the file does not have: reduced by the service
            h, w = self.shapes[-1]
            self.shapes.append((-(-h // 2), -(-w // 2)))
        st = self.path.stat()
        self.identity = {"file": str(self.path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    @property
    def levels(self) -> int:
        """Levels down to the one whose image fits in one tile."""
        return len(self.shapes)

    def reads(self, level: int) -> bool:
        return level < len(self._arrays)

    def extent(self, level: int) -> tuple[int, int]:
        """(height, width) of `level`."""
        return self.shapes[level]

    def describe(self) -> str:
        h, w = self.shapes[0]
        return f"{self.path.name}: {w} x {h} px, {len(self._arrays)} level(s) in the file"

    def render(self, canvas, keys: list[TileKey]) -> list[np.ndarray]:
        out = []
        for key in keys:
            h, w = self.shapes[key.level]
            y0, x0 = key.y * TILE, key.x * TILE
            assert 0 <= y0 < h and 0 <= x0 < w, key
            out.append(np.asarray(self._arrays[key.level][y0:min(y0 + TILE, h), x0:min(x0 + TILE, w)]))
        return out

    def close(self) -> None:
        if self._tif is not None:
            self._tif.close()
