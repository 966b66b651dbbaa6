"""The padding-free upsampling StyledConv: stride-2 transposed 3x3 conv, crop 1, 3x3 blur,
then noise, bias, leaky ReLU * sqrt(2) and the cast.

Triton path: the transposed conv is split into its four polyphase valid convs (taps 1x1,
1x2, 2x1, 2x2 of the flipped kernel), which the fused conv kernel writes straight into the
interleaved (2H-1) x (2W-1) buffer, so no zero is ever multiplied; one elementwise kernel
then applies the blur and the whole epilogue in a single pass. With spatial styles the
activations are modulated in the conv kernel and the demodulation, evaluated on the input
grid and linearly interpolated (the official approximation), multiplies the buffer inside
the blur kernel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from igan.engine.ops import EPS, LRELU_SLOPE, SQRT2, upsample_linear

from . import use_triton
from .conv import conv_triton, pack_weight

_FLIP = [2, 0]
_PHASE_TAPS = [(1, 1), (1, 2), (2, 1), (2, 2)]  # (rows, cols) of the four phase kernels, phase_weights order


def phase_weights(weight: torch.Tensor) -> list[torch.Tensor]:
    """The four polyphase sub-kernels of a stride-2 transposed 3x3 conv after the crop of 1:
    output (2i, 2j) <- w[1,1]; (2i, 2j+1) <- [w[1,2], w[1,0]]; (2i+1, 2j) <- [w[2,1]; w[0,1]];
    (2i+1, 2j+1) <- [[w22, w20], [w02, w00]] (valid correlations of the input)."""
    return [weight[:, :, 1:2, 1:2], weight[:, :, 1:2, _FLIP], weight[:, :, _FLIP, 1:2],
            weight[:, :, _FLIP][:, :, :, _FLIP]]


def demod_map(style: torch.Tensor, wsq: torch.Tensor) -> torch.Tensor:
    """Per-pixel demodulation on the input grid: rsqrt(sum_c s_c^2 wsq[c, o] + eps), [N, O, H, W]."""
    ct = torch.promote_types(style.dtype, torch.float32)
    # a 1x1 conv, not an einsum: its bits must not depend on the batch size (determinism.py)
    return torch.rsqrt(F.conv2d(style.to(ct) ** 2, wsq.to(ct).t()[:, :, None, None]) + EPS)


def upconv_ref(x, weight, *, style=None, wsq=None, noise=None, noise_strength=0.0, bias=None, act=True,
               out_dtype=None):
    """The spec (official order; float32 math, float64 for float64 inputs):
    [N, Cin, H, W] -> [N, Cout, 2H-3, 2W-3]."""
    ct = torch.promote_types(x.dtype, torch.float32)
    inp = x.to(ct) if style is None else x.to(ct) * style.to(ct)
    y = F.conv_transpose2d(inp, weight.to(ct).transpose(0, 1), stride=2)[:, :, 1:-1, 1:-1]
    if style is not None and wsq is not None:
        y = y * upsample_linear(demod_map(style, wsq))
    k = torch.tensor([1.0, 2.0, 1.0], device=x.device, dtype=ct)
    kern = (k[:, None] * k[None, :] / 4).expand(y.shape[1], 1, 3, 3)
    y = F.conv2d(y, kern, groups=y.shape[1])
    if noise is not None:
        y = y + noise_strength * noise.to(ct)
    if bias is not None:
        y = y + bias.to(ct).view(1, -1, 1, 1)
    if act:
        y = F.leaky_relu(y, LRELU_SLOPE) * SQRT2
    return y.to(out_dtype or x.dtype)


try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

if triton is not None:
    from .conv import leaky_relu_gain

    @triton.jit
    def _blur_epilogue_kernel(
        # pre: the interleaved transposed-conv output [N, C, OH + 2, OW + 2] (the four phase
        # convs' buffer), any strides
        pre_ptr, pre_stride_n, pre_stride_c, pre_stride_h, pre_stride_w,
        # demod: the demodulation map on pre's grid [N, C, OH + 2, OW + 2] (HAS_D), any strides
        demod_ptr, demod_stride_n, demod_stride_c, demod_stride_h, demod_stride_w,
        # noise: [N, 1, OH, OW] (HAS_NOISE), strides of dims 0, 2, 3; times noise_strength
        noise_ptr, noise_stride_n, noise_stride_h, noise_stride_w, noise_strength,
        # bias: [C] contiguous (HAS_BIAS)
        bias_ptr,
        # y: the output [N, C, OH, OW], any strides
        y_ptr, y_stride_n, y_stride_c, y_stride_h, y_stride_w,
        # sizes: TOTAL = N * C * OH * OW elements, channels, output size
        TOTAL, C, OH, OW,
        # what to compute (see the docstring), and the elements per program
        HAS_D: tl.constexpr, HAS_NOISE: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        """BLOCK output elements of the upsampling layer's epilogue (upconv_ref after the
        transposed conv): y = act(blur3x3(pre * demod) + noise_strength * noise + bias), the
        blur the separable [1, 2, 1] / 4 kernel over a valid 3x3 window (a plain sum of nine
        weighted taps, in float32), then the cast to y's dtype. Elements are numbered flat over
        (n, oh, ow, c), channels fastest, to match channels-last storage.

        Constexprs:
        HAS_D: multiply each tap of pre by the demodulation map (spatially varying styles).
        HAS_NOISE: add noise_strength * noise[n, 0, oh, ow].
        HAS_BIAS: add bias[c].
        ACT: leaky ReLU times sqrt(2) (conv.leaky_relu_gain).
        BLOCK: elements per program (a power of two).
        """
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        ok = offs < TOTAL
        # flat index over (n, oh, ow, c): channels fastest, matching channels-last storage
        c = offs % C
        pix = offs // C
        ow = pix % OW
        oh = (pix // OW) % OH
        n = pix // (OW * OH)
        base = n * pre_stride_n + c * pre_stride_c
        dbase = n * demod_stride_n + c * demod_stride_c
        acc = tl.zeros((BLOCK,), dtype=tl.float32)
        for dy in tl.static_range(3):
            rows = tl.zeros((BLOCK,), dtype=tl.float32)
            for dx in tl.static_range(3):
                v = tl.load(pre_ptr + base + (oh + dy) * pre_stride_h + (ow + dx) * pre_stride_w,
                            mask=ok, other=0.0).to(tl.float32)
                if HAS_D:
                    v = v * tl.load(demod_ptr + dbase + (oh + dy) * demod_stride_h + (ow + dx) * demod_stride_w,
                                    mask=ok, other=0.0)
                rows += v * (2.0 if dx == 1 else 1.0)
            acc += rows * (2.0 if dy == 1 else 1.0)
        acc = acc * 0.25
        if HAS_NOISE:
            acc += noise_strength * tl.load(noise_ptr + n * noise_stride_n + oh * noise_stride_h + ow * noise_stride_w,
                                            mask=ok, other=0.0).to(tl.float32)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + c, mask=ok, other=0.0).to(tl.float32)
        if ACT:
            acc = leaky_relu_gain(acc)
        tl.store(y_ptr + n * y_stride_n + c * y_stride_c + oh * y_stride_h + ow * y_stride_w,
                 acc.to(y_ptr.dtype.element_ty), mask=ok)


def upconv_triton(x, weight, *, style=None, wsq=None, noise=None, noise_strength=0.0, bias=None, act=True,
                  out_dtype=None, phases=None, out=None, block=1024, config=None):
    """Four polyphase conv launches into the interleaved buffer, then the blur epilogue.
    `phases` may hold the four packed phase weights computed once per image; `out` a
    [N, Cout, 2H-3, 2W-3] tensor (any strides) to write into; `config` a BlockConfig for
    the phase convs (default: conv.default_config)."""
    n, _, h, w = x.shape
    cout = weight.shape[0]
    if h < 3 or w < 3:
        raise ValueError(f"input {h}x{w} is too small: the upsampling layer needs at least 3x3")  # internal invariant
    fmt = torch.channels_last if (x.shape[1] > 1 and not x.is_contiguous()
                                  and x.is_contiguous(memory_format=torch.channels_last)) else torch.contiguous_format
    pre = torch.empty(n, cout, 2 * h - 1, 2 * w - 1, device=x.device,
                      dtype=torch.float32 if style is not None else x.dtype, memory_format=fmt)
    if phases is None:
        subs = phase_weights(weight)
        packed = [pack_weight(s) for s in subs]
    else:  # views of the right shapes only: the values come from `phases` (phase_weights copies)
        subs = [weight[:, :, :kh, :kw] for kh, kw in _PHASE_TAPS]
        packed = phases
    for (py, px), sub, pk in zip([(0, 0), (0, 1), (1, 0), (1, 1)], subs, packed):
        conv_triton(x, sub, style=style, out=pre, out_step=2, out_phase=(py, px), packed=pk, config=config)
    d = upsample_linear(demod_map(style, wsq)).contiguous() if style is not None and wsq is not None else None
    oh, ow = 2 * h - 3, 2 * w - 3
    if out is None:
        out = torch.empty(n, cout, oh, ow, device=x.device, dtype=out_dtype or x.dtype, memory_format=fmt)
    elif tuple(out.shape) != (n, cout, oh, ow):
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {(n, cout, oh, ow)}")  # internal invariant
    total = out.numel()
    dummy = pre
    _blur_epilogue_kernel[(triton.cdiv(total, block),)](  # positional, in the kernel's groups
        pre, *pre.stride(),
        d if d is not None else dummy, *(d.stride() if d is not None else (0, 0, 0, 0)),
        noise if noise is not None else dummy,
        *((noise.stride(0), noise.stride(2), noise.stride(3)) if noise is not None else (0, 0, 0)),
        float(noise_strength),
        bias if bias is not None else dummy,
        out, *out.stride(),
        total, cout, oh, ow,
        HAS_D=d is not None, HAS_NOISE=noise is not None, HAS_BIAS=bias is not None, ACT=bool(act),
        BLOCK=block,
    )
    return out


def fused_upconv(x, weight, *, impl: str = "auto", **kw):
    """Launcher: Triton on CUDA (or under the interpreter), else the torch reference."""
    if use_triton(impl, x.device):
        return upconv_triton(x, weight, **kw)
    kw.pop("phases", None)
    return upconv_ref(x, weight, **kw)
