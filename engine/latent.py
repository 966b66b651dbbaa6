"""The latent field of the infinite canvas: every random value is a pure function of
(seed, what, position), drawn per window by one of the generators of rng.py (`rng=`), and
the coordinates are functions of position.

Coordinates follow the official scheme (official-generator.md, section 6): channel 0 is
tanh of the vertical position around the canvas horizon, channels 1-2 the cos/sin of the
horizontal position with the official period (139 cells for the default config).

A cyclic canvas (`LatentField(..., period=P)`, igan-render --wrap) is periodic horizontally
with period P pixels: z_l, every layer's noise and the horizontal coordinates are evaluated
at the column index modulo the period of their grid (P / 2^U z_l cells, step_i times that
for layer i), and the horizontal angle makes one turn per period, so the right edge of any
P-pixel window continues seamlessly into its left edge.
"""
from __future__ import annotations

import math

import torch

from .config import GeneratorConfig
from .errors import RequestError
from .geometry import latent_window, layer_steps, pixel_extent, ts_sizes
from .provenance import DEFAULT_LATENT_RNG, LATENT_RNG_VERSIONS
from .rng import LATENT_RNGS, STREAM_GLOBAL, STREAM_LOCAL, STREAM_NOISE, _check_seed, latent_rng


def _arange(start: int, n: int, device) -> torch.Tensor:
    return torch.arange(start, start + n, dtype=torch.int64, device=device)


# ---- coordinates -------------------------------------------------------------------------
def horizontal_period(cfg: GeneratorConfig) -> int:
    """Columns per turn of the horizontal coordinate: round(ss_size / occupy_ratio) - 1."""
    ss_size = cfg.ts_input_size + 2 * cfg.ss_halo
    return int(round(ss_size / cfg.coord_hori_occupy_ratio)) - 1


def coordinate_rows(cfg: GeneratorConfig, rows: range, horizon_cell: float) -> torch.Tensor:
    """tanh of the vertical coordinate of z_l rows: tanh(cut * 2 (i - horizon) / (N + V - 1))."""
    d = cfg.ts_input_size + cfg.coord_vert_sample_size - 1
    return torch.tensor([math.tanh(cfg.coord_vert_cut_pt * 2.0 * (i - horizon_cell) / d) for i in rows],
                        dtype=torch.float32)


def coordinate_cols(cfg: GeneratorConfig, cols: range, period: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the horizontal angle pi (2 j / P - 1) of z_l columns (periodic in P:
    the official period, or `period` cells on a cyclic canvas)."""
    p = period or horizontal_period(cfg)
    ang = [math.pi * (2.0 * (j % p) / p - 1.0) for j in cols]
    return (torch.tensor([math.cos(a) for a in ang], dtype=torch.float32),
            torch.tensor([math.sin(a) for a in ang], dtype=torch.float32))


def canvas_coords(cfg: GeneratorConfig, r0: int, c0: int, n_h: int, n_w: int,
                  horizon_cell: float, period: int | None = None) -> torch.Tensor:
    """[3, n_h, n_w] coordinates of the z_l cells [r0, r0+n_h) x [c0, c0+n_w) (horizontal
    period: the official one, or `period` cells)."""
    vert = coordinate_rows(cfg, range(r0, r0 + n_h), horizon_cell)
    cos, sin = coordinate_cols(cfg, range(c0, c0 + n_w), period)
    return torch.stack([vert[:, None].expand(n_h, n_w), cos[None].expand(n_h, n_w),
                        sin[None].expand(n_h, n_w)])


def official_coords(cfg: GeneratorConfig, n_h: int, n_w: int) -> torch.Tensor:
    """The official test-time grid of an n_h x n_w z_l: vertical centre on the middle row,
    horizontal angle -pi at column 0 (official-generator.md 6.2)."""
    return canvas_coords(cfg, 0, 0, n_h, n_w, (n_h - 1) / 2)


# ---- fields ---------------------------------------------------------------------------------
class Field:
    """Where the inputs of a latent window come from: `window()` is shared, subclasses say
    how one tensor of one window is made."""

    config: GeneratorConfig
    fused = False  # spatially varying styles (fusion.FusedField), rendered on the spatial-style path

    def global_latent(self) -> torch.Tensor:
        raise NotImplementedError

    def styles(self) -> torch.Tensor | None:
        """Explicit W / W+ styles for the TS, or None for mapping(z_g)."""
        return None

    def local_latent(self, r0: int, c0: int, n_h: int, n_w: int, device) -> torch.Tensor:
        raise NotImplementedError

    def noise(self, layer: int, r0: int, c0: int, n_h: int, n_w: int, device) -> torch.Tensor:
        raise NotImplementedError

    def coords(self, r0: int, c0: int, n_h: int, n_w: int, device) -> torch.Tensor:
        raise NotImplementedError

    def check_window(self, x0: int, y0: int, width: int, height: int) -> None:
        """Refuse a pixel window this field cannot give every input of (RequestError); the
        seeded canvases are infinite, so only fields of given tensors refuse."""

    def window(self, r0: int, c0: int, n_h: int, n_w: int, device="cpu"):
        """Inputs of the z_l window [r0, r0+n_h) x [c0, c0+n_w): (z_l [C, n_h, n_w],
        coords [ncoord, n_h, n_w] or None, noises [[1, h_i, w_i] per TS conv])."""
        cfg = self.config
        halo = cfg.ss_halo
        z = self.local_latent(r0, c0, n_h, n_w, device)
        coords = self.coords(r0, c0, n_h, n_w, device) if cfg.use_ss else None
        hs, ws = ts_sizes(cfg, n_h - 2 * halo), ts_sizes(cfg, n_w - 2 * halo)
        noises = [self.noise(i, step * r0, step * c0, h, w, device)
                  for i, (step, h, w) in enumerate(zip(layer_steps(cfg), hs, ws))]
        return z, coords, noises


class LatentField(Field):
    """The seeded infinite canvas. `horizon` is the canvas pixel row where the vertical
    coordinate is 0 (a property of the canvas, so separately rendered windows join).
    `period` (pixels, a multiple of 2^U) makes the canvas cyclic horizontally. `rng` names
    the generator of every value (a key of LATENT_RNGS; `rng_version` is what to record)."""

    rng = "v1"  # pickles made before the attribute existed drew with v1

    def __init__(self, config: GeneratorConfig, seed: int, *, horizon: float = 0.0, style_index: int = 0,
                 period: int | None = None, rng: str = DEFAULT_LATENT_RNG):
        _check_seed(seed)
        latent_rng(rng)  # validates the name
        if period is not None and (not isinstance(period, int) or isinstance(period, bool) or period < 1
                                   or period % config.upscale):
            raise RequestError(f"period must be a positive multiple of {config.upscale} pixels (one z_l cell) "
                               f"for config {config.name!r}, got {period!r}")
        self.config = config
        self.seed = seed
        self.horizon = float(horizon)
        self.style_index = style_index
        self.period = period
        self.rng = rng

    @property
    def rng_version(self) -> str:
        return LATENT_RNG_VERSIONS[self.rng]

    def _normal(self, stream, channels, rows, cols):
        return LATENT_RNGS[self.rng](self.seed, stream, channels, rows, cols)

    def _cols(self, c0: int, n_w: int, step: int, device) -> torch.Tensor:
        """Column indices of a grid with `step` cells per z_l cell, modulo its period."""
        cols = _arange(c0, n_w, device)
        return cols if self.period is None else cols % (step * self.period // self.config.upscale)

    @property
    def horizon_cell(self) -> float:
        cfg = self.config
        return (self.horizon - 2) / cfg.upscale + 2 + cfg.ss_halo

    def global_latent(self) -> torch.Tensor:
        d = self.config.global_latent_dim
        return self._normal(STREAM_GLOBAL, _arange(0, d, "cpu"),
                            _arange(self.style_index, 1, "cpu"), _arange(0, 1, "cpu")).reshape(d)

    def local_latent(self, r0, c0, n_h, n_w, device="cpu"):
        c = _arange(0, self.config.local_latent_dim, device)
        return self._normal(STREAM_LOCAL, c, _arange(r0, n_h, device), self._cols(c0, n_w, 1, device))

    def noise(self, layer, r0, c0, n_h, n_w, device="cpu"):
        step = layer_steps(self.config)[layer]
        return self._normal(STREAM_NOISE + layer, _arange(0, 1, device), _arange(r0, n_h, device),
                            self._cols(c0, n_w, step, device))

    def coords(self, r0, c0, n_h, n_w, device="cpu"):
        period = None if self.period is None else self.period // self.config.upscale
        return canvas_coords(self.config, r0, c0, n_h, n_w, self.horizon_cell, period).to(device)


class TensorField(Field):
    """A field made of explicit tensors (official latents, inverted latents, ...).

    local_latent [C, H, W] covers z_l cells from `origin` (row, col); noises[i] [1, h_i, w_i]
    covers layer-i grid positions from step_i * origin; coords [ncoord, H, W] matches
    local_latent (default: the seeded canvas coordinates with `horizon`).
    """

    def __init__(self, config: GeneratorConfig, global_latent: torch.Tensor, local_latent: torch.Tensor,
                 noises: list[torch.Tensor], coords: torch.Tensor | None = None, *,
                 origin: tuple[int, int] = (0, 0), styles: torch.Tensor | None = None, horizon: float = 0.0):
        if len(noises) != config.num_convs:
            raise RequestError(f"expected {config.num_convs} noise maps, got {len(noises)}")
        self.config = config
        self._z_g = global_latent.reshape(-1)
        self._z_l = local_latent.reshape(local_latent.shape[-3:])
        self._noises = [n.reshape(n.shape[-2:]) for n in noises]
        self._coords = coords if coords is None else coords.reshape(coords.shape[-3:])
        self._styles = styles
        self.origin = origin
        self._canvas = LatentField(config, 0, horizon=horizon)

    def global_latent(self):
        return self._z_g

    def styles(self):
        return self._styles

    # ---- the extent of the given tensors --------------------------------------------------------
    def _needs(self, x0: int, y0: int, width: int, height: int):
        """(name, tensor, rows, cols, origin) of every tensor a pixel window reads, with the
        [start, stop) ranges it reads (the one-shot latent window: exactly the receptive field)."""
        cfg = self.config
        r0, n_h, _ = latent_window(cfg, y0, height)
        c0, n_w, _ = latent_window(cfg, x0, width)
        out = [("local_latent", self._z_l, (r0, r0 + n_h), (c0, c0 + n_w), self.origin)]
        if self._coords is not None:
            out.append(("coords", self._coords, (r0, r0 + n_h), (c0, c0 + n_w), self.origin))
        halo = cfg.ss_halo
        hs, ws = ts_sizes(cfg, n_h - 2 * halo), ts_sizes(cfg, n_w - 2 * halo)
        for i, (step, h, w) in enumerate(zip(layer_steps(cfg), hs, ws)):
            out.append((f"noise {i}", self._noises[i], (step * r0, step * r0 + h), (step * c0, step * c0 + w),
                        (step * self.origin[0], step * self.origin[1])))
        return out

    def _outside(self, x0, y0, width, height) -> list[str]:
        bad = []
        for name, t, rows, cols, origin in self._needs(x0, y0, width, height):
            have_r, have_c = (origin[0], origin[0] + t.shape[-2]), (origin[1], origin[1] + t.shape[-1])
            if rows[0] < have_r[0] or rows[1] > have_r[1] or cols[0] < have_c[0] or cols[1] > have_c[1]:
                bad.append(f"{name} rows [{rows[0]}, {rows[1]}) cols [{cols[0]}, {cols[1]}) (given: rows "
                           f"[{have_r[0]}, {have_r[1]}) cols [{have_c[0]}, {have_c[1]}))")
        return bad

    def extent(self) -> tuple[int, int, int, int] | None:
        """The largest pixel window (x0, y0, width, height) whose every input lies inside the
        given tensors (z_l decides; noise and coordinate maps of the official sizes cover the
        same window), or None if they render no pixel."""
        rows = pixel_extent(self.config, self.origin[0], self._z_l.shape[-2])
        cols = pixel_extent(self.config, self.origin[1], self._z_l.shape[-1])
        if rows is None or cols is None:
            return None
        (y0, h), (x0, w) = rows, cols
        while h > 0 and w > 0 and self._outside(x0, y0, w, h):  # noise maps smaller than z_l's extent
            h, w = h - 1, w - 1
        return (x0, y0, w, h) if h > 0 and w > 0 else None

    def check_window(self, x0: int, y0: int, width: int, height: int) -> None:
        bad = self._outside(x0, y0, width, height)
        if bad:
            largest = self.extent()
            hint = ("they render no pixel" if largest is None else
                    "the largest window they render is x0={}, y0={}, width={}, height={}".format(*largest))
            raise RequestError(f"the window x0={x0}, y0={y0}, width={width}, height={height} reads latents outside "
                               f"the given tensors: {'; '.join(bad)}; {hint}")

    @staticmethod
    def _slice(t, name, r0, c0, n_h, n_w, origin):
        """t's [r0, r0 + n_h) x [c0, c0 + n_w), zero where it lies outside t. A tile is computed
        at the plan's one shape, so an edge tile may read past the given tensors; those values
        reach only pixels outside the window (check_window has refused any window whose own
        receptive field leaves the tensors) and are cropped away."""
        r, c = r0 - origin[0], c0 - origin[1]
        if 0 <= r and 0 <= c and r + n_h <= t.shape[-2] and c + n_w <= t.shape[-1]:
            return t[..., r:r + n_h, c:c + n_w]
        out = t.new_zeros(t.shape[:-2] + (n_h, n_w))
        rs, re = max(r, 0), min(r + n_h, t.shape[-2])
        cs, ce = max(c, 0), min(c + n_w, t.shape[-1])
        if rs < re and cs < ce:
            out[..., rs - r:re - r, cs - c:ce - c] = t[..., rs:re, cs:ce]
        return out

    def local_latent(self, r0, c0, n_h, n_w, device="cpu"):
        return self._slice(self._z_l, "local_latent", r0, c0, n_h, n_w, self.origin).to(device)

    def noise(self, layer, r0, c0, n_h, n_w, device="cpu"):
        step = layer_steps(self.config)[layer]
        origin = (step * self.origin[0], step * self.origin[1])
        return self._slice(self._noises[layer], f"noise {layer}", r0, c0, n_h, n_w, origin)[None].to(device)

    def coords(self, r0, c0, n_h, n_w, device="cpu"):
        if self._coords is None:
            return self._canvas.coords(r0, c0, n_h, n_w, device)
        return self._slice(self._coords, "coords", r0, c0, n_h, n_w, self.origin).to(device)
