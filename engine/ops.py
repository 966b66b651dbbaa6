"""Torch building blocks of the padding-free generator, on per-image folded weights.

Every op is written so that an output value depends only on its own receptive field and
is computed by the same operations whatever the size of the tensor around it (see
determinism.py): convolutions are valid (no padding), the stride-2 transposed conv is
split into its four polyphase valid convs, and the blurs are separable elementwise sums.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# The generator's constants, defined once (the Triton kernels, the ONNX graphs, the trainer
# and the references all read them from here).
SQRT2 = math.sqrt(2.0)  # gain of the activation (fused_leaky_relu's scale)
LRELU_SLOPE = 0.2  # negative slope of every leaky ReLU
EPS = 1e-8  # demodulation and PixelNorm: rsqrt(mean or sum of squares + EPS)
# Scratch budget of one CPU conv call (its im2col buffer); larger convs run in row bands.
_CPU_BAND_BYTES = 8 << 20


def conv2d_valid(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Valid cross-correlation of x [N, Cin, H, W] with w [Cout, Cin, kh, kw].

    On CPU the output is computed in bands of rows so that the im2col scratch of the
    GEMM path stays under a fixed budget whatever the tile size.
    """
    kh, kw = w.shape[2], w.shape[3]
    out_h, out_w = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    if x.device.type != "cpu":
        return F.conv2d(x, w)
    row_bytes = x.shape[1] * kh * kw * out_w * x.element_size()
    rows = max(1, _CPU_BAND_BYTES // max(1, row_bytes))
    if rows >= out_h:
        return F.conv2d(x, w)
    out = x.new_empty(x.shape[0], w.shape[0], out_h, out_w)
    for r in range(0, out_h, rows):
        r1 = min(out_h, r + rows)
        out[:, :, r:r1] = F.conv2d(x[:, :, r:r1 + kh - 1], w)
    return out


def upconv2d(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Official padding-free upsampling conv: stride-2 transposed 3x3 conv, crop 1, blur.

    x [N, Cin, H, W], w [Cout, Cin, 3, 3] (w[o, i] is the official weight, applied with
    true transposed-conv semantics, no flip) -> [N, Cout, 2H-3, 2W-3].
    After the crop, output row y = 2m takes x[m] * w[1] and row y = 2m+1 takes
    x[m] * w[2] + x[m+1] * w[0]; the same per column. So the four output phases are
    valid convs of x with (flipped) sub-kernels, and no zero is ever multiplied.
    """
    n, _, h, wd = x.shape
    flip = [2, 0]
    out = x.new_empty(n, w.shape[0], 2 * h - 1, 2 * wd - 1)
    out[:, :, 0::2, 0::2] = conv2d_valid(x, w[:, :, 1:2, 1:2])
    out[:, :, 0::2, 1::2] = conv2d_valid(x, w[:, :, 1:2, flip])
    out[:, :, 1::2, 0::2] = conv2d_valid(x, w[:, :, flip, 1:2])
    out[:, :, 1::2, 1::2] = conv2d_valid(x, w[:, :, flip][:, :, :, flip])
    return blur3(out)


def blur3(x: torch.Tensor) -> torch.Tensor:
    """Valid 3x3 blur with kernel [1,2,1]x[1,2,1]/4 (the official upsampling blur, which
    sums to 4 to undo the zero insertion): [.., H, W] -> [.., H-2, W-2]."""
    rows = torch.add(x[..., :-2, :], x[..., 2:, :]).add_(x[..., 1:-1, :], alpha=2)
    out = torch.add(rows[..., :-2], rows[..., 2:]).add_(rows[..., 1:-1], alpha=2)
    return out.mul_(0.25)


def upsample_linear(x: torch.Tensor) -> torch.Tensor:
    """The ToRGB skip upsampling: exact linear interpolation, [.., H, W] -> [.., 2H-1, 2W-1]
    (the official transposed conv with [1,2,1]x[1,2,1]/4 and a crop of 1)."""
    h, w = x.shape[-2:]
    rows = x.new_empty(*x.shape[:-2], 2 * h - 1, w)
    rows[..., 0::2, :] = x
    rows[..., 1::2, :] = (x[..., :-1, :] + x[..., 1:, :]) * 0.5
    out = x.new_empty(*x.shape[:-2], 2 * h - 1, 2 * w - 1)
    out[..., 0::2] = rows
    out[..., 1::2] = (rows[..., :-1] + rows[..., 1:]) * 0.5
    return out


def crop_to(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Centre crop of the last two dims to h x w (the margins must be even)."""
    dh, dw = x.shape[-2] - h, x.shape[-1] - w
    assert dh >= 0 and dw >= 0 and dh % 2 == 0 and dw % 2 == 0, (x.shape, h, w)
    return x[..., dh // 2: dh // 2 + h, dw // 2: dw // 2 + w]


def bias_lrelu_(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Official fused_leaky_relu, sqrt(2) * leaky_relu(x + bias, 0.2) with a per-channel
    bias, in place (x must be a temporary the caller owns). When autograd records (GAN
    inversion), the in-place leaky ReLU's output is saved for its backward, so the gain is
    applied out of place; the values are the same."""
    y = F.leaky_relu_(x.add_(bias.view(1, -1, 1, 1)), LRELU_SLOPE)
    return y * SQRT2 if y.requires_grad else y.mul_(SQRT2)
