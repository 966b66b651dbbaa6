"""The generator's architecture, walked once.

InfinityGAN's synthesis is the same sequence for every way igan computes it: the structure
synthesizer's layers over [features, coordinates] (each layer's coordinates cropped by the
halo the layers before it consumed), then the texture synthesizer's stages, each an
upsampling conv and a 3x3 conv followed by a ToRGB whose output adds the upsampled RGB of the
stage before. That sequence lives here and nowhere else. Each backend supplies the layers as
an `Ops` object:

- the torch reference with per-image folded weights (engine/model.py, `FoldedOps`),
- the fast CPU path, oneDNN on channels-last activations (engine/fastcpu.py, `FastOps`),
- per-pixel styles for style fusion (engine/model.py, `SpatialOps`),
- the fused Triton kernels (engine/runner.py, `TritonOps`),
- the ONNX graphs, which modulate activations (export/graphs.py),
- the trainer's differentiable grouped convolutions (trainer/generator.py).
"""
from __future__ import annotations

from typing import Protocol

import torch

from .config import GeneratorConfig


class Ops(Protocol):
    """One backend's layers. Indices: l over SS layers, i over TS convs (even i: the
    upsampling conv of stage i // 2), k over ToRGBs (one per stage)."""

    def ss_layer(self, l: int, x: torch.Tensor, coords: torch.Tensor, offset: int) -> torch.Tensor:
        """SS layer l on x [N, C, h, w] and coords [*, ncoord, h + 2 offset, w + 2 offset]
        (the full grid: layer l sees rows and columns [offset, size - offset) of it)."""

    def conv(self, i: int, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """TS conv i (modulated conv, noise, bias, activation)."""

    def to_rgb(self, k: int, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        """ToRGB k of x, plus `skip` (the previous stage's RGB) upsampled and cropped to it."""


def structure(cfg: GeneratorConfig, ops: Ops, x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """The structure synthesizer: z_l window [N, C, Hz, Wz] -> features [N, C, Hz - 2 halo, ...]."""
    for l in range(cfg.ss_n_layers):
        x = ops.ss_layer(l, x, coords, l * cfg.ss_unfold_radius)
    return x


def texture(cfg: GeneratorConfig, ops: Ops, x: torch.Tensor, noises) -> torch.Tensor:
    """The texture synthesizer: features -> RGB. `noises`: one map (or None) per TS conv."""
    if len(noises) != cfg.num_convs:
        raise ValueError(f"expected {cfg.num_convs} noise maps, got {len(noises)}")  # internal invariant
    rgb = None
    for i in range(cfg.num_convs):
        x = ops.conv(i, x, noises[i])
        if i % 2 == 1:
            rgb = ops.to_rgb(i // 2, x, rgb)
    return rgb


def synthesize(cfg: GeneratorConfig, ops: Ops, local_latent: torch.Tensor, coords: torch.Tensor | None,
               noises) -> torch.Tensor:
    """z_l window (and coordinates, for a model with a structure synthesizer) -> RGB."""
    x = local_latent
    if cfg.use_ss:
        if coords is None:
            raise ValueError("this model has a structure synthesizer: coords are required")  # internal invariant
        x = structure(cfg, ops, x, coords)
    return texture(cfg, ops, x, noises)


def crop(t: torch.Tensor, offset: int) -> torch.Tensor:
    """[.., H, W] -> [.., H - 2 offset, W - 2 offset], centred."""
    if offset == 0:
        return t
    return t[..., offset:t.shape[-2] - offset, offset:t.shape[-1] - offset]
