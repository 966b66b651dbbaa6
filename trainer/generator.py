"""A batched, autograd-friendly forward of the engine's Generator for training.

The engine's `Generator.forward` folds weights per image and runs in-place ops (fast for
inference, not differentiable). Training instead runs the same parameters as grouped
convolutions (one group per sample), with W+ styles (style mixing, path length) and
fresh per-layer noise. tests/test_trainer.py checks it equals the engine forward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from igan.engine import ops, walk
from igan.engine.model import Generator, ModulatedConv2d


def _grouped(x: torch.Tensor, w: torch.Tensor, upsample: bool) -> torch.Tensor:
    """x [B, in, H, W] with per-sample weights w [B, out, in, k, k] -> [B, out, H', W']."""
    b, cin, h, wd = x.shape
    cout, k = w.shape[1], w.shape[-1]
    xg = x.reshape(1, b * cin, h, wd)
    if not upsample:
        return F.conv2d(xg, w.reshape(b * cout, cin, k, k), groups=b).reshape(b, cout, h - k + 1, wd - k + 1)
    # Transposed conv (true semantics, no flip): weight [B*in, out, k, k]; crop 1; blur.
    wt = w.transpose(1, 2).reshape(b * cin, cout, k, k)
    out = F.conv_transpose2d(xg, wt, stride=2, groups=b)[:, :, 1:-1, 1:-1]
    return ops.blur3(out).reshape(b, cout, 2 * h - 3, 2 * wd - 3)


def _styled(conv: ModulatedConv2d, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    return _grouped(x, conv.fold(style), conv.upsample)


def _bias_lrelu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x + bias.view(1, -1, 1, 1), ops.LRELU_SLOPE) * ops.SQRT2


class TrainingGenerator(nn.Module):
    """Wraps a Generator (the parameters are its own) with a differentiable batch forward."""

    def __init__(self, generator: Generator):
        super().__init__()
        self.g = generator

    @property
    def config(self):
        return self.g.config

    def styles(self, z_slots: torch.Tensor, inject_index: int | None) -> torch.Tensor:
        """z_slots [B, 2, D] -> W+ [B, n_latent, D]: slot 0's w before inject_index, slot 1's after."""
        n = self.config.n_latent
        w0 = self.g.mapping(z_slots[:, 0])
        if inject_index is None or inject_index >= n:
            return w0[:, None].expand(-1, n, -1)
        w1 = self.g.mapping(z_slots[:, 1])
        return torch.cat([w0[:, None].expand(-1, inject_index, -1), w1[:, None].expand(-1, n - inject_index, -1)], 1)

    def forward(self, z_slots: torch.Tensor, z_local: torch.Tensor, coords: torch.Tensor | None,
                inject_index: int | None = None, styles: torch.Tensor | None = None,
                noise: bool = True, gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """z_slots [B, 2, D]; z_local [B, C, Hz, Wz]; coords [B, 3, Hz, Wz]; styles: W+ to use
        instead of the mapping (path length). Returns (images [B, 3, H, W], the SS output
        [B, C, Hz - 2 halo, ...] or None, W+ [B, n_latent, D]). Noise maps are drawn from
        `gen` (a generator on the model's device; None: torch's global one)."""
        if styles is None:
            styles = self.styles(z_slots, inject_index)
        ops = _TrainOps(self.g, z_slots[:, 0], styles, noise, gen)
        x, structure = z_local, None
        if self.g.structure_synthesizer is not None:
            x = structure = walk.structure(self.config, ops, x, coords)
        return walk.texture(self.config, ops, x, [None] * self.config.num_convs), structure, styles


class _TrainOps:
    """The training forward's layers (walk.Ops): grouped convs, one group per sample, the SS
    conditioned on the raw z_g, W+ for the TS, fresh noise from `gen`."""

    def __init__(self, g: Generator, z_global: torch.Tensor, styles: torch.Tensor, noise: bool, gen):
        self.g, self.z_global, self.styles, self.noise, self.gen = g, z_global, styles, noise, gen

    def ss_layer(self, l, x, coords, offset):
        layer = self.g.structure_synthesizer.layers[l]
        c = walk.crop(coords, offset)
        return _bias_lrelu(_styled(layer.conv, torch.cat([x, c.to(x.dtype)], 1), self.z_global), layer.activate.bias)

    def conv(self, i, x, noise):
        conv = self.g.texture_synthesizer.convs[i]
        x = _styled(conv.conv, x, self.styles[:, i])
        if self.noise and conv.noise is not None:
            x = x + conv.noise.weight * torch.randn(x.shape[0], 1, x.shape[2], x.shape[3],
                                                    device=x.device, dtype=x.dtype, generator=self.gen)
        return _bias_lrelu(x, conv.activate.bias)

    def to_rgb(self, k, x, skip):
        to_rgb = self.g.texture_synthesizer.to_rgbs[k]
        out = _grouped(x, to_rgb.conv.fold(self.styles[:, self.g.config.torgb_slot(k)]), False) + to_rgb.bias
        if skip is not None:
            out = out + ops.crop_to(ops.upsample_linear(skip), out.shape[2], out.shape[3])
        return out
