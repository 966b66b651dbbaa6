"""What the viewer explores: one seed's canvas, optionally with styles placed at canvas
points (style fusion) and/or made horizontally periodic (a 360-degree panorama).

A Canvas is checked when a client sends it, named by a digest of the model and its
parameters (the tile URLs and the disk cache use that id), and turned into the igan-render
options that write the same pixels to a file (`render_options`). Torch-free.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

from ..errors import RequestError
from ..values import DEFAULT_BLUR, MAX_BLUR
from .tiles import MAX_COORD, TILE

MAX_STYLES = 16
MAX_PERIOD = 1 << 20  # a panorama's width (planner.MAX_SIDE): a job renders one whole period
SEED_LIMIT = 1 << 63


class CanvasError(RequestError):
    """A canvas description that is not valid (HTTP 400)."""


@dataclass(frozen=True)
class Canvas:
    seed: int = 0
    styles: tuple[tuple[int, int, int], ...] = ()  # (seed, x, y): a style centred on canvas pixel (x, y)
    blur: int = DEFAULT_BLUR
    period: int | None = None  # pixels; the canvas repeats horizontally (--wrap)

    @classmethod
    def from_json(cls, data) -> "Canvas":
        """From the viewer's JSON {"seed", "styles": [{"seed", "x", "y"}], "blur", "period"};
        CanvasError naming what is wrong."""
        if not isinstance(data, dict):
            raise CanvasError("a canvas is a JSON object")
        unknown = sorted(set(data) - {"seed", "styles", "blur", "period"})
        if unknown:
            raise CanvasError(f"unknown canvas field(s) {', '.join(map(str, unknown))}")
        seed = _int(data.get("seed", 0), "seed", 0, SEED_LIMIT - 1)
        raw = data.get("styles") or []
        if not isinstance(raw, list) or len(raw) > MAX_STYLES:
            raise CanvasError(f"styles must be a list of at most {MAX_STYLES} {{seed, x, y}} objects")
        styles = []
        for s in raw:
            if not isinstance(s, dict) or set(s) != {"seed", "x", "y"}:
                raise CanvasError("each style is an object {seed, x, y}")
            styles.append((_int(s["seed"], "style seed", 0, SEED_LIMIT - 1),
                           _int(s["x"], "style x", -MAX_COORD, MAX_COORD),
                           _int(s["y"], "style y", -MAX_COORD, MAX_COORD)))
        blur = _int(data.get("blur", DEFAULT_BLUR), "blur", 1, MAX_BLUR)
        period = data.get("period")
        if period is not None:
            period = _int(period, "period", TILE, MAX_PERIOD)
            if period % TILE:
                raise CanvasError(f"period must be a multiple of {TILE} pixels, got {period}")
        return cls(seed, tuple(styles), blur if styles else DEFAULT_BLUR, period)

    def to_json(self) -> dict:
        return {"seed": self.seed, "styles": [{"seed": s, "x": x, "y": y} for s, x, y in self.styles],
                "blur": self.blur, "period": self.period}

    def ident(self, model: dict) -> str:
        """The canvas's id: 16 hex digits of sha256 over the model identity and the canvas."""
        text = json.dumps({"model": model, "canvas": self.to_json()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def canonical_x(self, level: int, x: int) -> int:
        """Tile column x of `level` in the first period (tiles repeat every period when the
        period is a whole number of tiles at that level), so a panorama's tiles are cached once."""
        span = TILE << level
        if self.period is None or self.period % span:
            return x
        return x % (self.period // span)

    def render_options(self, x0: int, y0: int, width: int, height: int) -> dict:
        """igan-render options (RenderRequest fields) that write this canvas's window: the
        style centres become fractions of the window that give back the exact canvas points
        (igan-render computes x0 + fx * width), so the file's bytes are the viewer's."""
        if self.period is not None and width != self.period:
            raise CanvasError(f"a 360-degree render is one whole period: width must be {self.period}, got {width}")
        options = {"seed": self.seed, "x0": x0, "y0": y0, "width": width, "height": height}
        if self.period is not None:
            options["wrap"] = True
        if self.styles:
            options["styles"] = tuple(s for s, _, _ in self.styles)
            options["style_centers"] = tuple((_fraction(x, x0, width), _fraction(y, y0, height))
                                             for _, x, y in self.styles)
            options["style_blur"] = self.blur
        return options


def _int(value, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise CanvasError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _fraction(c: int, origin: int, size: int) -> float:
    """The float f with origin + f * size == c exactly (as igan-render evaluates it)."""
    f = (c - origin) / size
    for _ in range(64):
        v = origin + f * size
        if v == c:
            return f
        f = math.nextafter(f, math.inf if v < c else -math.inf)
    raise CanvasError(f"no fraction of a {size}-pixel window starting at {origin} lands exactly on pixel {c}")
