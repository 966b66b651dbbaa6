"""Pasting inverted latents into a canvas: the field behind outpainting and inbetweening.

`PastedField(base, pastes)` is the `base` field (normally the seeded LatentField) with the
z_l window, the coordinates and the noise maps of inversion records written over it at
their placements, optionally shifted by whole z_l cells. Every window the planner asks for
is cut from that composite, so the normal renderer and sinks render it tiled and seamless,
and any pixel whose receptive field lies inside a pasted block is the record's fit.
Styles (the SS z_g and the TS W+) come from one record (`style_from`), or from the base
field when style_from is None (e.g. a spatially fused field).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import RequestError
from ..geometry import layer_steps
from ..latent import Field
from .record import InversionRecord, Placement, RecordError


@dataclass(frozen=True)
class Paste:
    """A record placed on the canvas, moved by (dx, dy) z_l cells from where it was inverted."""

    record: InversionRecord
    dx: int = 0
    dy: int = 0

    @property
    def placement(self) -> Placement:
        return self.record.placement.shifted(self.dx, self.dy, self.record.config.upscale)

    def cell_box(self) -> tuple[int, int, int, int]:
        """(row0, col0, rows, cols) of the pasted z_l block on the canvas."""
        p = self.placement
        n_h, n_w = self.record.local_latent.shape[-2:]
        return p.cell_row, p.cell_col, n_h, n_w


def _overlay(out: torch.Tensor, block: torch.Tensor, origin: tuple[int, int], r0: int, c0: int) -> None:
    """Write the part of `block` (whose [0, 0] sits at canvas position `origin`) that falls in
    the window `out` (whose [0, 0] sits at (r0, c0)) into `out`."""
    n_h, n_w = out.shape[-2:]
    top, left = max(r0, origin[0]), max(c0, origin[1])
    bottom = min(r0 + n_h, origin[0] + block.shape[-2])
    right = min(c0 + n_w, origin[1] + block.shape[-1])
    if top >= bottom or left >= right:
        return
    out[..., top - r0:bottom - r0, left - c0:right - c0] = \
        block[..., top - origin[0]:bottom - origin[0], left - origin[1]:right - origin[1]].to(out.device, out.dtype)


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


class PastedField(Field):
    """`base` with inverted records pasted in (later pastes must not overlap earlier ones)."""

    def __init__(self, base: Field, pastes: list[Paste] | Paste | InversionRecord, *, style_from: int | None = 0):
        if isinstance(pastes, InversionRecord):
            pastes = [Paste(pastes)]
        elif isinstance(pastes, Paste):
            pastes = [pastes]
        pastes = list(pastes)
        if not pastes:
            raise RequestError("PastedField needs at least one record to paste")
        arch = base.config.architecture()
        for i, p in enumerate(pastes):
            if p.record.config.architecture() != arch:
                raise RecordError(f"record {i} was inverted with config {p.record.config.name!r}, which differs "
                                  f"from the field's {base.config.name!r}")
            for j in range(i):
                if _overlaps(p.cell_box(), pastes[j].cell_box()):
                    raise RequestError(f"the latent blocks of records {j} and {i} overlap (cells "
                                       f"{pastes[j].cell_box()} and {p.cell_box()} as (row, col, rows, cols)): move "
                                       "them further apart")
        if style_from is not None and not 0 <= style_from < len(pastes):
            raise RequestError(f"style_from {style_from} is not one of the {len(pastes)} records")
        self.base = base
        self.config = base.config
        self.pastes = pastes
        self.style_from = style_from

    def __getattr__(self, name):
        # Anything else a base field offers (a fused field's style maps, its horizon, ...).
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def check_window(self, x0: int, y0: int, width: int, height: int) -> None:
        self.base.check_window(x0, y0, width, height)

    def global_latent(self) -> torch.Tensor:
        if self.style_from is None:
            return self.base.global_latent()
        return self.pastes[self.style_from].record.global_latent

    def styles(self) -> torch.Tensor | None:
        if self.style_from is None:
            return self.base.styles()
        return self.pastes[self.style_from].record.styles

    def local_latent(self, r0, c0, n_h, n_w, device="cpu"):
        out = self.base.local_latent(r0, c0, n_h, n_w, device).clone()
        for p in self.pastes:
            box = p.cell_box()
            _overlay(out, p.record.local_latent, box[:2], r0, c0)
        return out

    def coords(self, r0, c0, n_h, n_w, device="cpu"):
        out = self.base.coords(r0, c0, n_h, n_w, device).clone()
        for p in self.pastes:
            if p.record.coords is not None:
                _overlay(out, p.record.coords, p.cell_box()[:2], r0, c0)
        return out

    def noise(self, layer, r0, c0, n_h, n_w, device="cpu"):
        out = self.base.noise(layer, r0, c0, n_h, n_w, device).clone()
        step = layer_steps(self.config)[layer]
        for p in self.pastes:
            row, col = p.cell_box()[:2]
            _overlay(out, p.record.noises[layer], (step * row, step * col), r0, c0)
        return out
