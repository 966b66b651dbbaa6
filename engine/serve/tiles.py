"""The tile pyramid of an endless canvas: keys, limits, the 2x box reduction, PNG bytes.

Tile (level, x, y) covers the canvas pixels [x * S, (x + 1) * S) x [y * S, (y + 1) * S) with
S = 256 * 2^level: level 0 is native pixels (negative coordinates too), level L + 1 is the
2x2 box average of level L (round half up, as igan's TIFF pyramids). In Leaflet's XYZ scheme
with its `CRS.Simple`, level L is zoom -L.

Torch-free: the command line and the HTTP layer use it without loading a model.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np

from ..errors import RequestError
from ..sinks import halve  # the TIFF pyramids' reduction: levels equal igan-render's

TILE = 256  # pixels per tile side, every level
MAX_COORD = 1 << 34  # canvas pixels per axis from the origin (planner.Window's limit)
MAX_LEVEL = 8  # hard floor of the pyramid: one level-8 tile is 65,536 native tiles
_INT = re.compile(r"-?[0-9]{1,12}")
CANVAS_ID = re.compile(r"[0-9a-f]{16}")


class TileError(RequestError):
    """A tile address outside the pyramid (HTTP 400/404)."""


@dataclass(frozen=True)
class TileKey:
    canvas: str  # the canvas's id (hex digest of the model and the canvas's parameters)
    level: int
    x: int
    y: int

    @property
    def span(self) -> int:
        """Canvas pixels per side of this tile."""
        return TILE << self.level

    def children(self) -> list["TileKey"]:
        """The four level - 1 tiles this one is reduced from, row-major."""
        assert self.level > 0
        return [TileKey(self.canvas, self.level - 1, 2 * self.x + dx, 2 * self.y + dy)
                for dy in (0, 1) for dx in (0, 1)]


def parse_int(text: str, name: str) -> int:
    """A decimal integer from a URL, strictly (no '+', spaces, hex or 30-digit numbers)."""
    if not _INT.fullmatch(text):
        raise TileError(f"{name} must be an integer, got {text[:40]!r}")
    return int(text)


def tile_key(canvas: str, zoom: str, x: str, y: str, max_level: int) -> TileKey:
    """The key of the URL /tiles/{canvas}/{zoom}/{x}/{y}.png (zoom = -level <= 0), checked
    against the pyramid's floor and the canvas's coordinate limit."""
    if not CANVAS_ID.fullmatch(canvas):
        raise TileError(f"no canvas {canvas[:40]!r}")
    level = -parse_int(zoom, "zoom")
    if not 0 <= level <= max_level:
        raise TileError(f"zoom must be between {-max_level} and 0, got {-level}")
    key = TileKey(canvas, level, parse_int(x, "x"), parse_int(y, "y"))
    for v in (key.x, key.y):
        if not (-MAX_COORD <= v * key.span and (v + 1) * key.span <= MAX_COORD):
            raise TileError(f"tile ({key.x}, {key.y}) at zoom {zoom} lies beyond {MAX_COORD} pixels from the origin")
    return key


def reduce_children(children: list[np.ndarray | None]) -> np.ndarray:
    """A parent tile from its four children (row-major, [h, w, 3] each; None or a smaller
    array where the image ends): the children side by side, halved."""
    tl, tr, bl, br = children
    assert tl is not None, "a parent tile exists only where its top-left child does"
    top = tl if tr is None else np.concatenate([tl, tr], axis=1)
    if bl is not None:
        bottom = bl if br is None else np.concatenate([bl, br], axis=1)
        top = np.concatenate([top, bottom], axis=0)
    return halve(top)


def encode_png(pixels: np.ndarray, size: int = TILE) -> bytes:
    """PNG bytes of a tile; one smaller than `size` (the edge of a file) is padded with
    transparent pixels, so every tile a viewer receives is size x size."""
    from PIL import Image

    h, w = pixels.shape[:2]
    if (h, w) == (size, size):
        image = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    else:
        rgba = np.zeros((size, size, 4), np.uint8)
        rgba[:h, :w, :3] = pixels
        rgba[:h, :w, 3] = 255
        image = Image.fromarray(rgba, "RGBA")
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)  # fast: a tile is encoded while the next renders
    return out.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """The pixels of a tile's PNG, [h, w, 3] uint8, cropped to its opaque part."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        a = np.asarray(im)
    if a.shape[2] == 4:
        opaque = a[..., 3] > 0
        h, w = int(opaque.any(axis=1).sum()), int(opaque.any(axis=0).sum())
        a = a[:h, :w, :3]
    return np.ascontiguousarray(a)
