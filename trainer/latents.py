"""Inputs of the fake training patches (official-training-apps.md 1.4, official-generator.md 6.3).

A batch is B/2 dual pairs: samples 2k and 2k+1 share z_g (both style slots) and the
coordinate window, with independent z_l and noise. Each window starts at row x_st in
{0..V-1} and column y_st in {0..P-1} of the constant grid (ss_size + V rows, the horizontal
period P columns, wrapping), with a uniform jitter of half a grid step on every
coordinate before tanh / cos / sin. The vertical label is 2 x_st / (V-1) - 1.

Deviation on purpose: labels are paired with the coordinates they describe (the official
code pairs the coordinates but not the labels, so half its fake labels are wrong).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from igan.engine.config import GeneratorConfig
from igan.engine.latent import horizontal_period


@dataclass
class FakeInputs:
    z_slots: torch.Tensor  # [B, 2, D]
    z_local: torch.Tensor  # [B, C, N, N], N = ts_input_size + 2 halo
    coords: torch.Tensor  # [B, 3, N, N]
    labels: torch.Tensor  # [B] vertical position in [-1, 1]
    inject_index: int | None  # style mixing point (None: no mixing)


def latent_size(cfg: GeneratorConfig) -> int:
    return cfg.ts_input_size + 2 * cfg.ss_halo


def training_coords(cfg: GeneratorConfig, x_st: torch.Tensor, y_st: torch.Tensor,
                    jitter: torch.Tensor | None) -> torch.Tensor:
    """[B, 3, N, N] coordinates of the windows starting at (x_st, y_st) [B] of the constant
    grid, with jitter [B, 3] in units of half a grid step (uniform in [-1, 1]; None: none).
    Equals engine.latent.canvas_coords(cfg, x_st, y_st, N, N, horizon=(N+V-1)/2) unjittered."""
    n = latent_size(cfg)
    b = x_st.shape[0]
    d = cfg.ts_input_size + cfg.coord_vert_sample_size - 1
    centre = (n + cfg.coord_vert_sample_size - 1) / 2
    vstep = cfg.coord_vert_cut_pt * 2.0 / d  # pre-tanh value per row
    p = horizontal_period(cfg)
    hstep = 2.0 * math.pi / p  # angle per column
    rows = torch.arange(n, dtype=torch.float64)[None] + x_st[:, None].double()  # [B, N]
    cols = torch.arange(n, dtype=torch.float64)[None] + y_st[:, None].double()
    vert = (rows - centre) * vstep
    ang = math.pi * (2.0 * torch.remainder(cols, p) / p - 1.0)
    jit = torch.zeros(b, 3, dtype=torch.float64) if jitter is None else jitter.double()
    vert = vert + jit[:, 0:1] * vstep / 2
    ang_c = ang + jit[:, 1:2] * hstep / 2
    ang_s = ang + jit[:, 2:3] * hstep / 2
    v = torch.tanh(vert)[:, :, None].expand(b, n, n)
    c = torch.cos(ang_c)[:, None, :].expand(b, n, n)
    s = torch.sin(ang_s)[:, None, :].expand(b, n, n)
    return torch.stack([v, c, s], 1).float()


def sample_fakes(cfg: GeneratorConfig, batch: int, mixing: float, gen: torch.Generator,
                 device="cpu", dual: bool = True) -> FakeInputs:
    """Random fake inputs for one forward (drawn on CPU from `gen`, then moved)."""
    if dual and batch % 2:
        raise ValueError(f"batch must be even for dual pairs, got {batch}")  # internal invariant
    d, c, n = cfg.global_latent_dim, cfg.local_latent_dim, latent_size(cfg)
    v = cfg.coord_vert_sample_size
    z = torch.randn(batch, 2, d, generator=gen)
    mix = torch.rand((), generator=gen).item() < mixing
    inject = int(torch.randint(1, cfg.n_latent, (), generator=gen)) if mix else None
    z_local = torch.randn(batch, c, n, n, generator=gen)
    x_st = torch.randint(0, v, (batch,), generator=gen)
    y_st = torch.randint(0, horizontal_period(cfg), (batch,), generator=gen)
    jitter = torch.rand(batch, 3, generator=gen) * 2 - 1
    if dual:  # odd samples take their partner's z_g and window (and so its label)
        z[1::2], x_st[1::2], y_st[1::2], jitter[1::2] = z[0::2], x_st[0::2], y_st[0::2], jitter[0::2]
    coords = training_coords(cfg, x_st, y_st, jitter) if cfg.use_ss else None
    labels = 2.0 * x_st.float() / (v - 1) - 1.0
    mv = (lambda t: None if t is None else t.to(device))
    return FakeInputs(mv(z), mv(z_local), mv(coords), mv(labels), inject)
