"""The fused ops as torch custom ops (`torch.ops.igan.*`), so torch.compile and
torch.export trace around them: each op is opaque to the tracer, with a fake
implementation that gives the output's shape, dtype and layout."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .conv import _format, fused_conv
from .upsample import fused_upconv


@torch.library.custom_op("igan::fused_conv", mutates_args=())
def fused_conv_op(x: Tensor, weight: Tensor, coords: Optional[Tensor], coords_offset: int, style: Optional[Tensor],
                  wsq: Optional[Tensor], noise: Optional[Tensor], noise_strength: float, bias: Optional[Tensor],
                  act: bool, skip: Optional[Tensor], out_dtype: Optional[torch.dtype]) -> Tensor:
    """igan.kernels.conv.fused_conv with impl="auto"."""
    return fused_conv(x, weight, coords=coords, coords_offset=coords_offset, style=style, wsq=wsq, noise=noise,
                      noise_strength=noise_strength, bias=bias, act=act, skip=skip, out_dtype=out_dtype)


@fused_conv_op.register_fake
def _(x, weight, coords, coords_offset, style, wsq, noise, noise_strength, bias, act, skip, out_dtype):
    n, _, h, w = x.shape
    cout, _, kh, kw = weight.shape
    return x.new_empty(n, cout, h - kh + 1, w - kw + 1, dtype=out_dtype or x.dtype).contiguous(
        memory_format=_format(x))


@torch.library.custom_op("igan::fused_upconv", mutates_args=())
def fused_upconv_op(x: Tensor, weight: Tensor, style: Optional[Tensor], wsq: Optional[Tensor],
                    noise: Optional[Tensor], noise_strength: float, bias: Optional[Tensor], act: bool,
                    out_dtype: Optional[torch.dtype]) -> Tensor:
    """igan.kernels.upsample.fused_upconv with impl="auto"."""
    return fused_upconv(x, weight, style=style, wsq=wsq, noise=noise, noise_strength=noise_strength, bias=bias,
                        act=act, out_dtype=out_dtype)


@fused_upconv_op.register_fake
def _(x, weight, style, wsq, noise, noise_strength, bias, act, out_dtype):
    n, _, h, w = x.shape
    return x.new_empty(n, weight.shape[0], 2 * h - 3, 2 * w - 3, dtype=out_dtype or x.dtype).contiguous(
        memory_format=_format(x))
