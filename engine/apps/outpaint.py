"""Outpainting and inbetweening as render requests: a field (inverted latents pasted into the
seeded canvas) and the canvas window to render. Pure geometry; the CLIs (apps_cli.py) load,
invert and render.

Placement rule: a record lives where it was inverted on the canvas (the image's top-left
pixel at (x0, y0), coordinates and all). Outpainting renders a larger window of that same
canvas around it, so the coordinates agree everywhere. Inbetweening keeps the left record
where it is and puts the right one `gap` pixels to its right: an image is inverted directly
there; a record is moved by whole z_l cells (its coordinates travel with it).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from ..errors import RequestError, option
from ..geometry import latent_window
from ..latent import Field, LatentField
from ..planner import Window
from ..provenance import DEFAULT_LATENT_RNG
from ..fusion import FusedField, StyleSource
from ..values import MAX_BLUR
from .paste import Paste, PastedField
from .record import InversionRecord


@dataclass(frozen=True)
class Request:
    field: Field
    window: Window
    known: list[tuple[int, int, int, int]]  # (x, y, w, h) of each pasted image inside the output
    note: str = ""
    blur: int | None = None  # style fusion's blend width, when fused


def outpaint_request(record: InversionRecord, width: int, height: int, *, at: tuple[int, int] | None = None,
                     seed: int = 0, rng: str = DEFAULT_LATENT_RNG) -> Request:
    """Render `width` x `height` pixels with the record's image at output pixel `at` (its
    top-left; default: centred) and fresh latents from `seed` around it."""
    p = record.placement
    x, y = outpaint_position(p.width, p.height, width, height, at)
    base = LatentField(record.config, seed, horizon=record.horizon, rng=rng)
    return Request(PastedField(base, record), Window(p.x0 - x, p.y0 - y, width, height), [(x, y, p.width, p.height)])


def outpaint_position(image_width: int, image_height: int, width: int, height: int,
                      at: tuple[int, int] | None = None) -> tuple[int, int]:
    """Output pixel (x, y) of the top-left of an `image_width` x `image_height` image in a
    `width` x `height` outpainting (`at`, default: centred); ValueError naming the options
    when it does not fit (RequestError). Pure: the CLI checks an image's size with it before
    any inversion."""
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestError(f"{option(name)} must be a positive integer, got {value!r}")
    if width < image_width or height < image_height:
        raise RequestError(f"{option('width')} {width} {option('height')} {height}: the output is too small to hold the "
                         f"{image_width}x{image_height} inverted image (give at least {option('width')} "
                         f"{max(width, image_width)} {option('height')} {max(height, image_height)})")
    x, y = at if at is not None else ((width - image_width) // 2, (height - image_height) // 2)
    if not (0 <= x <= width - image_width and 0 <= y <= height - image_height):
        raise RequestError(f"{option('at')} {x},{y}: the {image_width}x{image_height} image placed there does not fit in "
                         f"the {width}x{height} output (x must be in [0, {width - image_width}], y in "
                         f"[0, {height - image_height}])")
    return x, y


def min_gap_at(cfg, x0: int, width: int) -> int:
    """min_gap of an image `width` px wide at canvas column `x0`, before it is inverted: its
    latent window is the one the inversion will fit (geometry.latent_window)."""
    cell_col, n_w, _ = latent_window(cfg, x0, width)
    return cfg.upscale * (cell_col + n_w) - (x0 + width)


def min_gap(left: InversionRecord) -> int:
    """Smallest gap (pixels) after the left image for a right image whose latent window must
    not overlap the left one's (both carry the structure synthesizer's halo): an image at
    canvas column x has its first z_l cell at floor(x / upscale)."""
    cfg, p = left.config, left.placement
    end_cell = p.cell_col + left.local_latent.shape[-1]  # first cell right of the left block
    return cfg.upscale * end_cell - (p.x0 + p.width)


def right_position(left: InversionRecord, right_width: int, right_height: int, gap: int) -> tuple[int, int]:
    """Canvas (x0, y0) of the right image: `gap` pixels after the left one, centred vertically
    on it."""
    p = left.placement
    check_gap(gap, min_gap(left))
    return p.x0 + p.width + gap, p.y0 + (p.height - right_height) // 2


def check_gap(gap: int, need: int) -> None:
    """RequestError unless `gap` is at least `need` (min_gap, or min_gap_at before inverting)."""
    if gap < need:
        raise RequestError(f"{option('gap')} {gap} is too small: the latent windows of the two images (with the "
                           f"structure synthesizer's halo) would overlap; use a gap of at least {need} px")


def inbetween_request(left: InversionRecord, right: InversionRecord, gap: int, *, seed: int = 0,
                      fuse: bool = True, blur: int | None = None, rng: str = DEFAULT_LATENT_RNG) -> Request:
    """Left record where it was inverted, the right one `gap` px (rounded up to whole z_l
    cells if it must be moved) to its right, fresh latents between.

    fuse=True: each end keeps its own style (z_g and W+), blended between the two image
    centres by spatial style fusion (fusion.FusedField) with a `blur`-pixel box; by default
    the widest blur that leaves every latent of both pasted blocks with a pure style, so both
    ends render back to their fits. fuse=False: one style, the left record's, everywhere."""
    cfg = left.config
    up = cfg.upscale
    lp, rp = left.placement, right.placement
    want_x, want_y = right_position(left, rp.width, rp.height, gap)
    dx = -(-(want_x - rp.x0) // up)  # whole cells, rounding the gap up
    dy = round((want_y - rp.y0) / up)
    pastes = [Paste(left), Paste(right, dx, dy)]
    q = pastes[1].placement
    note = "" if q.x0 == want_x else f"gap rounded up from {gap} to {q.x0 - lp.x0 - lp.width} px (whole latent cells)"
    x0, y0 = lp.x0, min(lp.y0, q.y0)
    x1, y1 = q.x0 + q.width, max(lp.y0 + lp.height, q.y0 + q.height)
    field = PastedField(LatentField(cfg, seed, horizon=left.horizon, rng=rng), pastes, style_from=0)
    if not fuse:
        blur = None
    else:
        field, blur, pure = _fused(field, pastes, blur)
        if not pure:
            note = "; ".join(filter(None, [note, f"with --blur {blur} the style blend reaches into the pasted "
                                                 f"latents: the ends will differ from their fits"]))
    known = [(0, lp.y0 - y0, lp.width, lp.height), (q.x0 - x0, q.y0 - y0, q.width, q.height)]
    return Request(field, Window(x0, y0, x1 - x0, y1 - y0), known, note, blur)


def _fused(base: PastedField, pastes: list[Paste], blur: int | None):
    """(FusedField over `base` with one style per paste at its image centre, blur, whether every
    pasted block sees only its own style)."""
    cfg = base.config
    styles = [StyleSource(z_g=p.record.global_latent, w_plus=p.record.styles) for p in pastes]
    centers = [(p.placement.x0 + p.placement.width / 2, p.placement.y0 + p.placement.height / 2) for p in pastes]

    def build(b):
        return FusedField(cfg, styles, centers, b, base=base)

    def pure(field) -> bool:
        for i, p in enumerate(pastes):
            maps = field.style_maps(*p.cell_box())
            grids = ([maps.ss] if maps.ss is not None else []) + maps.convs + maps.rgbs
            if not all(bool((g[i] == 1).all()) for g in grids):
                return False
        return True

    if blur is not None:
        field = build(blur)
        return field, blur, pure(field)
    lo, hi = 1, max(1, min(MAX_BLUR, int(centers[1][0] - centers[0][0])))  # the largest pure blur, by bisection
    if not pure(build(lo)):
        return build(lo), lo, False
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if pure(build(mid)) else (lo, mid - 1)
    return build(lo), lo, True


# ---- what a render job carries ------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class AppSpec:
    """How every process of an outpainting or inbetweening render rebuilds its field (the
    records' tensors pickle), and what a resumed render must match: the pipeline's
    counterpart of fusion.FieldSpec. `params`: outpaint (width, height, at) or inbetween
    (gap, fuse, blur), with the blur already resolved."""

    kind: str  # "outpaint" | "inbetween"
    records: tuple[InversionRecord, ...]
    params: tuple

    @property
    def spatial(self) -> bool:
        """Renders on the spatial-style path (two styles blended)."""
        return self.kind == "inbetween" and self.params[1]

    def request(self, seed: int, rng: str = DEFAULT_LATENT_RNG) -> Request:
        if self.kind == "outpaint":
            width, height, at = self.params
            return outpaint_request(self.records[0], width, height, at=at, seed=seed, rng=rng)
        gap, fuse, blur = self.params
        return inbetween_request(*self.records, gap, seed=seed, fuse=fuse, blur=blur, rng=rng)

    def build(self, config, seed: int, rng: str = DEFAULT_LATENT_RNG) -> Field:
        return self.request(seed, rng).field

    def identity(self) -> dict:
        return {"app": self.kind, "params": json.loads(json.dumps(self.params)),
                "records": [record_digest(r) for r in self.records]}


def app_spec(kind: str, records, params, seed: int) -> tuple[AppSpec, Request]:
    """The spec of an application render and its request (window, known regions, note);
    inbetweening's default blur is searched once here and carried resolved."""
    spec = AppSpec(kind, tuple(records), tuple(params))
    request = spec.request(seed)
    if kind == "inbetween" and params[2] is None:
        spec = AppSpec(kind, tuple(records), (params[0], params[1], request.blur))
    return spec, request


def record_digest(record: InversionRecord) -> str:
    """sha256 of a record's latents, styles, noise and placement (by content)."""
    h = hashlib.sha256(json.dumps([record.placement.__dict__, repr(record.horizon), record.model_digest]).encode())
    tensors = [record.global_latent, record.styles, record.local_latent, *record.noises]
    if record.coords is not None:
        tensors.append(record.coords)
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        h.update(f"{tuple(t.shape)} {t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()
