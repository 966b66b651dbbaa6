"""Export-friendly wrappers of a loaded Generator: the three graphs igan exports to ONNX.

The engine folds each image's style into its conv weights (engine/model.py); a folded
weight per image needs a grouped conv to run a batch, and a grouped conv cannot be
exported with a dynamic batch (shared/docs/toolchain.md, section 3). These wrappers use the
equivalent "modulate the activations" form instead: the conv weights are static (with
the equalized-lr scale folded in), and each layer computes

    s = affine(style)                       [B, Cin]
    y = conv(x * s) * rsqrt(s^2 @ wsq + eps)  (wsq[i, o] = sum over taps of weight[o, i]^2)

which is the official demodulated conv up to float rounding. Every input that is random
in the engine (latents, coordinates, noise) is a graph input: no randomness in a graph.

Graph interfaces (B, H, W dynamic; D = global_latent_dim, C = local_latent_dim):
- mapping:   z_global [B, D] -> w [B, D]
- structure: z_global [B, D] (the raw z_g, which conditions the SS), z_local [B, C, H, W],
             coords [B, 3, H, W] -> features [B, C, H - 2 halo, W - 2 halo]
- texture:   styles [B, n_latent, D] (W+: slot i styles TS conv i, ToRGB k uses
             config.torgb_slot(k)), features [B, C, h, w], noise_0 .. noise_{2U-1}
             [B, 1, h_i, w_i] (the sizes of TS conv i's output) -> rgb [B, 3, 2^U (h - 5) + 5, ...]
A model without a structure synthesizer has no structure graph; its texture graph takes z_l.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from igan.engine import walk
from igan.engine.model import EqualLinear, Generator, ModulatedConv2d, StyledConv
from igan.engine.ops import EPS, LRELU_SLOPE as SLOPE, SQRT2


def static_weight(conv: ModulatedConv2d) -> torch.Tensor:
    """[Cout, Cin, k, k] weight with the equalized-lr scale folded in (same op as fold())."""
    return (conv.scale * conv.weight)[0].detach()


def folded_linear(layer: EqualLinear) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight [out, in], bias [out]) of an EqualLinear with its scales folded in."""
    return (layer.weight * layer.scale).detach(), (layer.bias * layer.lr_mul).detach()


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, SLOPE) * SQRT2


def blur3(x: torch.Tensor) -> torch.Tensor:
    """Valid [1,2,1]x[1,2,1]/4 blur: [.., H, W] -> [.., H-2, W-2] (engine.ops.blur3)."""
    rows = x[..., :-2, :] + x[..., 2:, :] + 2 * x[..., 1:-1, :]
    return (rows[..., :-2] + rows[..., 2:] + 2 * rows[..., 1:-1]) * 0.25


def upsample_linear(x: torch.Tensor) -> torch.Tensor:
    """Exact linear interpolation [B, C, H, W] -> [B, C, 2H-1, 2W-1] by interleaving
    (engine.ops.upsample_linear without strided writes, which do not export)."""
    mid = (x[:, :, :-1] + x[:, :, 1:]) * 0.5
    rows = torch.stack([x, torch.cat([mid, x[:, :, -1:]], 2)], 3).flatten(2, 3)[:, :, :-1]
    mid = (rows[..., :-1] + rows[..., 1:]) * 0.5
    return torch.stack([rows, torch.cat([mid, rows[..., -1:]], 3)], 4).flatten(3, 4)[..., :-1]


class ModConv(nn.Module):
    """A modulated conv with a static weight, modulating the activations."""

    def __init__(self, conv: ModulatedConv2d):
        super().__init__()
        w = static_weight(conv)
        aw, ab = folded_linear(conv.modulation)
        self.register_buffer("weight", w.clone())  # [O, I, k, k]
        self.register_buffer("affine_weight", aw.clone())  # [I, D]
        self.register_buffer("affine_bias", ab.clone())  # [I]
        self.register_buffer("wsq", w.pow(2).sum([2, 3]).t().contiguous())  # [I, O]
        self.demodulate = conv.demodulate
        self.upsample = conv.upsample

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        s = F.linear(style, self.affine_weight, self.affine_bias)  # [B, I]
        x = x * s[:, :, None, None]
        if self.upsample:  # stride-2 transposed conv, crop 1 (official semantics, no flip)
            y = F.conv_transpose2d(x, self.weight.transpose(0, 1), stride=2)[:, :, 1:-1, 1:-1]
        else:
            y = F.conv2d(x, self.weight)
        if self.demodulate:
            y = y * torch.rsqrt((s * s) @ self.wsq + EPS)[:, :, None, None]
        return blur3(y) if self.upsample else y


class Styled(nn.Module):
    """StyledConv: modulated conv -> noise * strength -> bias -> leaky ReLU * sqrt(2)."""

    def __init__(self, layer: StyledConv):
        super().__init__()
        self.conv = ModConv(layer.conv)
        self.register_buffer("bias", layer.activate.bias.detach().clone().view(1, -1, 1, 1))
        strength = layer.noise.weight.detach().clone() if layer.noise is not None else None
        self.register_buffer("strength", strength)

    def forward(self, x, style, noise=None):
        y = self.conv(x, style)
        if noise is not None and self.strength is not None:
            y = y + self.strength * noise
        return _lrelu(y + self.bias)


class MappingGraph(nn.Module):
    """z_global [B, D] -> w [B, D]: PixelNorm then the equalized-lr MLP."""

    def __init__(self, model: Generator):
        super().__init__()
        layers = [m for m in model.texture_synthesizer.mapping if isinstance(m, EqualLinear)]
        for i, layer in enumerate(layers):
            w, b = folded_linear(layer)
            self.register_buffer(f"w{i}", w.clone())
            self.register_buffer(f"b{i}", b.clone())
        self.n = len(layers)

    def forward(self, z_global: torch.Tensor) -> torch.Tensor:
        x = z_global * torch.rsqrt(torch.mean(z_global * z_global, dim=1, keepdim=True) + EPS)
        for i in range(self.n):
            x = _lrelu(F.linear(x, getattr(self, f"w{i}"), getattr(self, f"b{i}")))
        return x


class StructureGraph(nn.Module):
    """(z_global [B, D], z_local [B, C, H, W], coords [B, 3, H, W]) -> SS features."""

    def __init__(self, model: Generator):
        super().__init__()
        if model.structure_synthesizer is None:
            raise ValueError(f"model {model.config.name!r} has no structure synthesizer")  # internal invariant
        self.layers = nn.ModuleList(Styled(layer) for layer in model.structure_synthesizer.layers)
        self.config = model.config

    def forward(self, z_global, z_local, coords):
        return walk.structure(self.config, _Bound(self, z_global), z_local, coords)

    def ss_layer(self, style, l, x, coords, offset):
        return self.layers[l](torch.cat([x, walk.crop(coords, offset)], 1), style)


class TextureGraph(nn.Module):
    """(styles [B, n_latent, D], features [B, C, h, w], noises [B, 1, h_i, w_i] each) -> RGB."""

    def __init__(self, model: Generator):
        super().__init__()
        cfg = model.config
        ts = model.texture_synthesizer
        self.convs = nn.ModuleList(Styled(conv) for conv in ts.convs)
        self.rgbs = nn.ModuleList(ModConv(rgb.conv) for rgb in ts.to_rgbs)
        for k, rgb in enumerate(ts.to_rgbs):
            self.register_buffer(f"rgb_bias{k}", rgb.bias.detach().clone())  # [1, 3, 1, 1]
        self.config = cfg

    def forward(self, styles, features, noises: list[torch.Tensor]):
        return walk.texture(self.config, _Bound(self, styles), features, noises)

    def conv(self, styles, i, x, noise):
        return self.convs[i](x, styles[:, i], noise)

    def to_rgb(self, styles, k, x, skip):
        out = self.rgbs[k](x, styles[:, self.config.torgb_slot(k)]) + getattr(self, f"rgb_bias{k}")
        return out if skip is None else out + upsample_linear(skip)[:, :, 2:-2, 2:-2]


class _Bound:
    """A graph's layers as walk.Ops, bound to the forward's style input."""

    def __init__(self, graph, style):
        self.graph, self.style = graph, style

    def ss_layer(self, l, x, coords, offset):
        return self.graph.ss_layer(self.style, l, x, coords, offset)

    def conv(self, i, x, noise):
        return self.graph.conv(self.style, i, x, noise)

    def to_rgb(self, k, x, skip):
        return self.graph.to_rgb(self.style, k, x, skip)
