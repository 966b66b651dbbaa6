"""StyleGAN2 (rosinality) discriminator with InfinityGAN's auxiliary coordinate head
(official-training-apps.md 1.5): a 1x1 stem, log2(patch)-2 residual blocks with blurred
stride-2 convs (zero padding), minibatch stddev, a 3x3 conv, then two separate 2-layer
heads on the same flattened features: the adversarial logit and the vertical position.

Deviation on purpose: the minibatch-stddev group is StyleGAN2's min(batch, 4) (the
official helper returns the whole batch of 16, a bug).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from igan.engine import ops


class EqualConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, *, stride: int = 1, padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.scale = 1 / math.sqrt(cin * k * k)
        self.stride, self.padding = stride, padding

    def forward(self, x):
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class EqualLinear(nn.Module):
    def __init__(self, cin: int, cout: int, activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = 1 / math.sqrt(cin)
        self.activate = activate

    def forward(self, x):
        out = F.linear(x, self.weight * self.scale, self.bias)
        return F.leaky_relu(out, ops.LRELU_SLOPE) * ops.SQRT2 if self.activate else out


class Blur(nn.Module):
    """Depthwise [1,3,3,1] x [1,3,3,1] / 64 filter with zero padding `pad` on each side."""

    def __init__(self, pad: int):
        super().__init__()
        k = torch.tensor([1.0, 3.0, 3.0, 1.0])
        self.register_buffer("kernel", (k[:, None] * k[None]) / 64, persistent=False)
        self.pad = pad

    def forward(self, x):
        c = x.shape[1]
        return F.conv2d(F.pad(x, [self.pad] * 4), self.kernel.to(x.dtype).expand(c, 1, 4, 4), groups=c)


class ConvAct(nn.Sequential):
    """[blur] -> conv -> bias + leaky ReLU * sqrt(2) (rosinality ConvLayer)."""

    def __init__(self, cin: int, cout: int, k: int, downsample: bool = False, activate: bool = True):
        layers = [Blur(2)] if downsample else []
        layers.append(EqualConv2d(cin, cout, k, stride=2 if downsample else 1,
                                  padding=0 if downsample else k // 2, bias=not activate))
        if activate:
            layers.append(_BiasLReLU(cout))
        super().__init__(*layers)


class _BiasLReLU(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x):
        return F.leaky_relu(x + self.bias.view(1, -1, 1, 1), ops.LRELU_SLOPE) * ops.SQRT2


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = ConvAct(cin, cin, 3)
        self.conv2 = ConvAct(cin, cout, 3, downsample=True)
        self.skip_blur = Blur(1)
        self.skip = EqualConv2d(cin, cout, 1, stride=2, bias=False)

    def forward(self, x):
        return (self.conv2(self.conv1(x)) + self.skip(self.skip_blur(x))) / math.sqrt(2)


def d_channels(patch_size: int, width: int) -> list[int]:
    """Channels of the stem and after each block: width, then doubling up to 8 * width."""
    n_blocks = round(math.log2(patch_size)) - 2
    return [min(width << k, 8 * width) for k in range(n_blocks + 1)]


class Discriminator(nn.Module):
    """images [B, 3, P, P] -> (adversarial logits [B], vertical-position predictions [B])."""

    def __init__(self, patch_size: int, width: int = 32, stddev_group: int = 4):
        super().__init__()
        ch = d_channels(patch_size, width)
        self.stem = ConvAct(3, ch[0], 1)
        self.blocks = nn.Sequential(*[ResBlock(a, b) for a, b in zip(ch[:-1], ch[1:])])
        self.stddev_group = stddev_group
        self.final_conv = ConvAct(ch[-1] + 1, ch[-1], 3)
        side = patch_size
        for _ in ch[1:]:
            side = (side + 4 - 4) // 2  # blur pad 2 (4 taps) then 3x3 stride 2: floor((s+1-3)/2)+1
        self.side = side
        feat = ch[-1] * side * side
        self.final_linear = nn.Sequential(EqualLinear(feat, ch[-1], activate=True), EqualLinear(ch[-1], 1))
        self.coord_linear = nn.Sequential(EqualLinear(feat, ch[-1], activate=True), EqualLinear(ch[-1], 1))

    def _stddev(self, x):
        b, c, h, w = x.shape
        g = min(b, self.stddev_group)
        while b % g:
            g -= 1
        y = x.reshape(g, b // g, 1, c, h, w)
        y = torch.sqrt(y.float().var(0, unbiased=False) + 1e-8).to(x.dtype)
        y = y.mean([2, 3, 4], keepdim=True).squeeze(2).repeat(g, 1, h, w)  # [B, 1, H, W]
        return torch.cat([x, y], 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.final_conv(self._stddev(self.blocks(self.stem(x))))
        h = h.flatten(1)
        return self.final_linear(h)[:, 0], self.coord_linear(h)[:, 0]
