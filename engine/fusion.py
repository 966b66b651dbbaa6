"""Spatial style fusion: several styles on one canvas, blended by smooth per-pixel weights
(official FusedGenerationManager, shared/docs/official-generator.md section 10).

Public API (kept stable: inbetweening and outpainting build on it)::

    StyleSource(seed=7)                        # z_g of `LatentField(config, 7)`, w = mapping(z_g)
    StyleSource(z_g=z, w_plus=w)               # explicit z_g [D] and optional W [D] / W+ [n_latent, D]
    FusedField(config, styles, centers, blur, seed, *, base=None, label_map=None,
               horizon=0.0, period=None)

- `styles`: StyleSources (plain ints are seeds); style i is placed at `centers[i]`, a canvas
  pixel position (x, y) (floats allowed), or is colour i of `label_map`.
- Every canvas pixel belongs to its nearest centre (squared Euclidean distance, ties to the
  lower index; horizontally periodic when `period` is set), or to the label map's colour
  there. A normalised `blur` x `blur` box average of that one-hot assignment gives the
  weights m_i(y, x): counts of each style's pixels in the box / blur^2, exact integer
  counts, so they sum to 1 up to one rounding and a single style gets exactly 1.0.
- The weights of every layer's grid are those of the canvas pixel its elements are centred
  on (`layer_positions`): the SS input grid (z_l cells), each TS conv's input grid and each
  ToRGB's input grid. The official code walks the map back through the layers with
  replicate padding and bilinear resizes; sampling at the centres is the same map without
  its dependence on the image size, so any window is computed on its own (seamless tiles,
  memory that does not grow with the canvas).
- The generator mixes per pixel (Generator.synthesize_spatial): the SS sees
  s = sum_i m_i modulation(z_g,i) (= modulation(sum_i m_i z_g,i), the official per-pixel
  z_g mix, since modulation is affine and the weights sum to 1); TS conv j sees
  s = sum_i m_i modulation(w_i[j]), applied to the activations with per-pixel
  demodulation. Unlike the official fused generation (section 10.4), w_i = mapping(z_g,i):
  one style renders like the plain canvas. Pass W+ explicitly to use other styles.
- z_l, noise and coordinates come from `base` (any Field: a seeded LatentField, a
  TensorField of pasted inverted latents, ...) or, by default, from
  LatentField(config, seed, horizon=horizon, period=period).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from .config import GeneratorConfig
from .errors import PathError, RequestError, option
from .geometry import layer_steps, ts_input_sizes, ts_sizes
from .latent import Field, LatentField
from .provenance import DEFAULT_LATENT_RNG
from .values import DEFAULT_BLUR, MAX_BLUR


# ---- styles -------------------------------------------------------------------------------------
@dataclass
class StyleSource:
    """One style of a fused canvas: a seed (z_g of that seed's canvas) or explicit tensors."""

    seed: int | None = None
    z_g: torch.Tensor | None = None  # [D]
    w_plus: torch.Tensor | None = None  # [D] or [n_latent, D]; None: mapping(z_g) in every slot

    def __post_init__(self):
        if (self.seed is None) == (self.z_g is None):
            raise RequestError("a StyleSource is either a seed or an explicit z_g, not both nor neither")

    def latents(self, config: GeneratorConfig, rng: str = DEFAULT_LATENT_RNG
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(z_g [D], W / W+ or None) of this style (a seed's z_g drawn by generator `rng`)."""
        if self.seed is not None:
            z = LatentField(config, self.seed, rng=rng).global_latent()
        else:
            z = self.z_g.reshape(-1)
        if z.numel() != config.global_latent_dim:
            raise RequestError(f"style z_g has {z.numel()} values, the model expects {config.global_latent_dim}")
        if self.w_plus is not None and self.w_plus.numel() not in (config.global_latent_dim,
                                                                   config.n_latent * config.global_latent_dim):
            raise RequestError(f"style w_plus has shape {tuple(self.w_plus.shape)}; expected "
                               f"[{config.global_latent_dim}] or [{config.n_latent}, {config.global_latent_dim}]")
        return z, self.w_plus


def as_source(style) -> StyleSource:
    if isinstance(style, StyleSource):
        return style
    if isinstance(style, int) and not isinstance(style, bool):
        return StyleSource(seed=style)
    raise TypeError(f"a style is a StyleSource or an integer seed, got {type(style).__name__}")


# ---- assignment of canvas pixels to styles ----------------------------------------------------------
class NearestCenters:
    """Each canvas pixel belongs to its nearest centre (x, y) in canvas pixels; with a
    `period`, horizontal distances wrap around."""

    def __init__(self, centers, period: int | None = None):
        pts = [tuple(float(v) for v in c) for c in centers]
        if not pts or any(len(c) != 2 or not all(np.isfinite(c)) for c in pts):
            raise RequestError(f"centers must be finite (x, y) pairs, got {centers!r}")
        self.centers = pts
        self.period = period

    def __len__(self):
        return len(self.centers)

    def labels(self, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """int64 [R, W] style index of canvas pixels rows ys [R] x cols xs [W] (int64)."""
        best = label = None
        for i, (cx, cy) in enumerate(self.centers):
            dx = xs.double() - cx  # [W]
            if self.period is not None:
                dx = torch.remainder(dx, self.period)
                dx = torch.minimum(dx, self.period - dx)
            d = (ys.double() - cy)[:, None] ** 2 + (dx ** 2)[None, :]  # [R, W]
            if best is None:
                best, label = d, torch.zeros(d.shape, dtype=torch.int64)
            else:
                closer = d < best  # strict: ties stay with the lower index
                best = torch.where(closer, d, best)
                label.masked_fill_(closer, i)
        return label


class LabelMap:
    """A colour-indexed map scaled (nearest neighbour) onto a canvas window (x0, y0, w, h);
    outside the window the edge labels extend (replicate), or the map repeats horizontally
    with a `period`. labels: int [Hm, Wm] in [0, count)."""

    def __init__(self, labels, window: tuple[int, int, int, int], period: int | None = None):
        self.labels_ = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        if self.labels_.dim() != 2 or self.labels_.numel() == 0:
            raise RequestError(f"a label map is a non-empty 2-D array, got shape {tuple(self.labels_.shape)}")
        self.count = int(self.labels_.max()) + 1
        self.window = tuple(int(v) for v in window)
        self.period = period

    def __len__(self):
        return self.count

    @classmethod
    def from_png(cls, path, window, period=None) -> "LabelMap":
        """Each distinct colour of the image is one style, numbered in order of first
        appearance in raster order (top-left first)."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB"))
        except (OSError, UnidentifiedImageError) as e:
            raise PathError(f"cannot read style map {str(path)!r}: {e}") from e
        packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
        _, first, inverse = np.unique(packed.reshape(-1), return_index=True, return_inverse=True)
        rank = np.empty(len(first), np.int64)
        rank[np.argsort(first)] = np.arange(len(first))
        return cls(rank[inverse].reshape(packed.shape), window, period)

    def digest(self) -> str:
        return hashlib.sha256(self.labels_.numpy().tobytes() + str(tuple(self.labels_.shape)).encode()).hexdigest()

    def labels(self, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        x0, y0, w, h = self.window
        hm, wm = self.labels_.shape
        rows = ((ys - y0) * hm).div(h, rounding_mode="floor").clamp(0, hm - 1)
        if self.period is not None:
            cols = (torch.remainder(xs - x0, self.period) * wm).div(self.period, rounding_mode="floor")
        else:
            cols = ((xs - x0) * wm).div(w, rounding_mode="floor").clamp(0, wm - 1)
        return self.labels_[rows[:, None], cols[None, :]]




def box_weights(assign, count: int, blur: int, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """float32 [count, R, W]: the share of each style among the blur x blur canvas pixels
    around each (ys[r], xs[c]) (box [p - blur//2, p - blur//2 + blur) per axis).

    One summed-area table over the bounding box of the samples (plus the blur margin):
    integer counts, so the result is exact up to the final division and does not depend on
    which other positions are asked for.
    """
    lo = blur // 2
    y_a, x_a = int(ys.min()) - lo, int(xs.min()) - lo
    y_b, x_b = int(ys.max()) - lo + blur, int(xs.max()) - lo + blur  # exclusive
    lab = assign.labels(torch.arange(y_a, y_b), torch.arange(x_a, x_b))  # [Hr, Wr]
    ry0, rx0 = ys - lo - y_a, xs - lo - x_a  # box starts in region coordinates
    ry1, rx1 = ry0 + blur, rx0 + blur
    out = torch.empty(count, len(ys), len(xs), dtype=torch.float32)
    sat = torch.zeros(lab.shape[0] + 1, lab.shape[1] + 1, dtype=torch.int32)  # region < 2^31 pixels
    for i in range(count):
        sat[1:, 1:] = (lab == i).to(torch.int32).cumsum(0, dtype=torch.int32).cumsum(1, dtype=torch.int32)
        n = (sat[ry1[:, None], rx1[None, :]] - sat[ry0[:, None], rx1[None, :]]
             - sat[ry1[:, None], rx0[None, :]] + sat[ry0[:, None], rx0[None, :]])
        out[i] = n.to(torch.float64).div_(blur * blur).to(torch.float32)
    return out


# ---- where each layer's grid sits on the canvas ----------------------------------------------------
def layer_positions(cfg: GeneratorConfig):
    """Canvas pixel position a * g + b of element g of each grid (per axis):
    (ss, conv_in, conv_out), ss for the z_l cell index g, conv_in[i] / conv_out[i] for the
    global index g of TS conv i's input / output grid (conv i's input grid starts at
    step * c0 for the window whose first z_l cell is c0; see geometry.py).

    Walked back from the last conv (whose output grid is the pixel grid): a 3x3 valid conv
    centres output g on input g + 1; the upsampling conv centres output g on input (g + 1) / 2.
    """
    a, b = 1, 0
    conv_in, conv_out = [], []
    for i in reversed(range(cfg.num_convs)):
        conv_out.append((a, b))
        a, b = (a, b - a) if i % 2 else (2 * a, b - a)
        conv_in.append((a, b))
    conv_in.reverse()
    conv_out.reverse()
    a0, b0 = conv_in[0]
    ss = (a0, b0 - a0 * cfg.ss_halo)  # the TS input's global index is the z_l cell minus the halo
    return ss, conv_in, conv_out


@dataclass
class StyleMaps:
    """Per-window style weights of every grid ([S, h, w] each; [N, S, h, w] once batched)."""

    ss: torch.Tensor | None  # the z_l window (SS input grid); None without SS
    convs: list[torch.Tensor]  # input grid of each TS conv
    rgbs: list[torch.Tensor]  # input grid of each ToRGB (its conv's output grid)

    @staticmethod
    def stack(maps: list["StyleMaps"], device) -> "StyleMaps":
        def st(ts):
            return torch.stack(ts).to(device)
        return StyleMaps(None if maps[0].ss is None else st([m.ss for m in maps]),
                         [st([m.convs[i] for m in maps]) for i in range(len(maps[0].convs))],
                         [st([m.rgbs[i] for m in maps]) for i in range(len(maps[0].rgbs))])


# ---- the field ----------------------------------------------------------------------------------------
class FusedField(Field):
    """A canvas with several styles placed at centres (or painted by a label map); see the
    module docstring. z_l, noise and coordinates come from `base` (default: the seeded
    canvas `seed` with `horizon` and `period`)."""

    fused = True

    def __init__(self, config: GeneratorConfig, styles, centers=None, blur: int = 1, seed: int = 0, *,
                 base: Field | None = None, label_map: LabelMap | None = None, horizon: float = 0.0,
                 period: int | None = None, rng: str = DEFAULT_LATENT_RNG):
        sources = [as_source(s) for s in styles]
        if not sources:
            raise RequestError("style fusion needs at least one style")
        if not isinstance(blur, int) or isinstance(blur, bool) or not 1 <= blur <= MAX_BLUR:
            raise RequestError(f"blur must be an integer from 1 to {MAX_BLUR} (pixels), got {blur!r}")
        if (centers is None) == (label_map is None):
            raise RequestError("give either centers or a label_map")
        if base is not None and base.config.architecture() != config.architecture():
            raise RequestError("the base field has a different config")
        self.config = config
        self.sources = sources
        self.latents = [s.latents(config, rng) for s in sources]
        self.base = base if base is not None else LatentField(config, seed, horizon=horizon, period=period, rng=rng)
        period = getattr(self.base, "period", period)
        self.assign = NearestCenters(centers, period) if label_map is None else label_map
        if len(self.assign) != len(sources):
            what = "centers" if label_map is None else "colours in the label map"
            raise RequestError(f"{len(sources)} styles but {len(self.assign)} {what}: give one style each")
        self.blur = blur
        self._positions = layer_positions(config)

    # inputs other than the styles come from the base field
    def check_window(self, x0: int, y0: int, width: int, height: int) -> None:
        self.base.check_window(x0, y0, width, height)

    def global_latent(self):
        return self.latents[0][0]

    def local_latent(self, r0, c0, n_h, n_w, device="cpu"):
        return self.base.local_latent(r0, c0, n_h, n_w, device)

    def noise(self, layer, r0, c0, n_h, n_w, device="cpu"):
        return self.base.noise(layer, r0, c0, n_h, n_w, device)

    def coords(self, r0, c0, n_h, n_w, device="cpu"):
        return self.base.coords(r0, c0, n_h, n_w, device)

    def style_maps(self, r0: int, c0: int, n_h: int, n_w: int, device="cpu") -> StyleMaps:
        """Style weights of every grid of the z_l window [r0, r0+n_h) x [c0, c0+n_w)."""
        cfg = self.config
        ss_pos, conv_in, conv_out = self._positions
        halo = cfg.ss_halo
        in_h, in_w = ts_input_sizes(cfg, n_h - 2 * halo), ts_input_sizes(cfg, n_w - 2 * halo)
        out_h, out_w = ts_sizes(cfg, n_h - 2 * halo), ts_sizes(cfg, n_w - 2 * halo)
        steps_in = [1] + layer_steps(cfg)[:-1]
        steps_out = layer_steps(cfg)
        grids = []  # (a, b, first row index, rows, first col index, cols)
        if cfg.use_ss:
            grids.append((*ss_pos, r0, n_h, c0, n_w))
        grids += [(*conv_in[i], steps_in[i] * r0, in_h[i], steps_in[i] * c0, in_w[i]) for i in range(cfg.num_convs)]
        grids += [(*conv_out[i], steps_out[i] * r0, out_h[i], steps_out[i] * c0, out_w[i])
                  for i in range(1, cfg.num_convs, 2)]
        ys = [a * torch.arange(g0, g0 + n, dtype=torch.int64) + b for a, b, g0, n, _, _ in grids]
        xs = [a * torch.arange(g0, g0 + n, dtype=torch.int64) + b for a, b, _, _, g0, n in grids]
        # one summed-area table for all grids: sample the union of their positions, then pick
        y_all, y_idx = torch.unique(torch.cat(ys), return_inverse=True)
        x_all, x_idx = torch.unique(torch.cat(xs), return_inverse=True)
        w = box_weights(self.assign, len(self.sources), self.blur, y_all, x_all)
        maps, yo, xo = [], 0, 0
        for y, x in zip(ys, xs):
            maps.append(w[:, y_idx[yo:yo + len(y)]][:, :, x_idx[xo:xo + len(x)]].to(device))
            yo, xo = yo + len(y), xo + len(x)
        ss = maps.pop(0) if cfg.use_ss else None
        return StyleMaps(ss, maps[:cfg.num_convs], maps[cfg.num_convs:])


# ---- what a render job carries -------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class FieldSpec:
    """How every process of a render builds its field (picklable): seeded styles at centres
    (canvas pixels) or on a label map, and/or a cyclic canvas of `period` pixels."""

    styles: tuple[int, ...] = ()  # seeds; empty: the plain canvas
    centers: tuple[tuple[float, float], ...] = ()
    label_map: LabelMap | None = None
    blur: int = 1
    period: int | None = None

    @property
    def spatial(self) -> bool:
        """Renders on the spatial-style path (several styles blended)."""
        return bool(self.styles)

    def build(self, config: GeneratorConfig, seed: int, rng: str = DEFAULT_LATENT_RNG) -> Field:
        if not self.styles:
            return LatentField(config, seed, period=self.period, rng=rng)
        centers = None if self.label_map is not None else list(self.centers)
        return FusedField(config, list(self.styles), centers, self.blur, seed, label_map=self.label_map,
                          period=self.period, rng=rng)

    def identity(self) -> dict:
        """What a resumed render must match."""
        out = {"styles": list(self.styles), "blur": self.blur, "period": self.period}
        if self.label_map is not None:
            out["label_map"] = {"sha256": self.label_map.digest(), "window": list(self.label_map.window)}
        else:
            out["centers"] = [list(c) for c in self.centers]
        return out


def spec_from_options(cfg: GeneratorConfig, window, seed: int, *, styles=None, centers=None, style_map=None,
                      blur=None, wrap=False) -> FieldSpec:
    """The FieldSpec of igan-render's options: `centers` as fractions (x, y) of the window
    (default: spread evenly across its width at mid-height), `style_map` a PNG path, `blur`
    in pixels (default 127), `wrap`: period = the window's width. Checked by building it
    once, so bad input fails before any work."""
    period = window.width if wrap else None
    if period is not None and period % cfg.upscale:
        raise RequestError(f"{option('wrap')} needs {option('width')} to be a multiple of {cfg.upscale} for model "
                           f"config {cfg.name!r}, got {window.width}")
    if blur is not None and (not isinstance(blur, int) or isinstance(blur, bool) or not 1 <= blur <= MAX_BLUR):
        raise RequestError(f"{option('style_blur')} must be an integer from 1 to {MAX_BLUR} (pixels), got {blur!r}")
    if centers is not None and any(len(c) != 2 or not all(math.isfinite(v) for v in c) for c in centers):
        raise RequestError(f"{option('style_centers')} must be finite X,Y fractions of the window, got {centers!r}")
    if not styles:
        spec = FieldSpec(period=period)
    else:
        n = len(styles)
        label_map, points = None, ()
        if style_map is not None:
            label_map = LabelMap.from_png(style_map, (window.x0, window.y0, window.width, window.height), period)
            if len(label_map) != n:
                raise RequestError(f"{option('style_map')} {str(style_map)!r} has {len(label_map)} distinct colours "
                                   f"but {option('styles')} gives {n} seeds (one per colour; draw the map without "
                                   "anti-aliasing)")
        else:
            fractions = centers or tuple(((i + 0.5) / n, 0.5) for i in range(n))
            points = tuple((window.x0 + fx * window.width, window.y0 + fy * window.height) for fx, fy in fractions)
        spec = FieldSpec(tuple(styles), points, label_map, DEFAULT_BLUR if blur is None else blur, period)
    spec.build(cfg, seed)
    return spec
