"""Fused modulated convolution: an implicit-GEMM valid conv with the epilogue of a
StyledConv (demodulation, noise, bias, leaky ReLU * sqrt(2), cast) in one pass.

One op covers every conv of the generator:
- the texture synthesizer's 3x3 convs, with one style per image folded into the weights;
- the structure synthesizer's 7x7 convs over [features, coordinates]: the coordinate
  channels are read from their own tensor at an offset (no concatenation);
- the four polyphase convs of the upsampling layer: the output index map
  (row * out_step + out_phase) writes them straight into the interleaved buffer;
- the spatially varying style path (style fusion, outpainting): activations are multiplied
  by the per-pixel style s and each output is demodulated by rsqrt(sum_c s_c^2 wsq[c, o] + eps),
  computed in the kernel as a 1x1 product at the centre tap.

GEMM view: M = N * OH * OW output pixels, N = Cout, K = KH * KW * Cin. The K loop runs in
a fixed order (tap-major, then channel) whatever M is, so on a GPU a pixel gets the same
bits whatever the tile or batch size, as long as the block config is the same; configs
depend only on (Cin, Cout, dtype).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from igan.engine.ops import EPS, LRELU_SLOPE, SQRT2, upsample_linear

from . import interpreting, use_triton


# ---- reference ------------------------------------------------------------------------------
def conv_ref(x, weight, *, coords=None, coords_offset=0, style=None, wsq=None, noise=None, noise_strength=0.0,
             bias=None, act=False, skip=None, out=None, out_step=1, out_phase=(0, 0), out_dtype=None):
    """The spec, in plain torch (float32 math, float64 for float64 inputs). Shapes:
    x [N, C1, H, W]; coords [N, C2, Hc, Wc] read at rows/cols + coords_offset;
    weight [Cout, C1 + C2, KH, KW]; style [N, C1 + C2, H, W] (spatial path) with
    wsq [C1 + C2, Cout]; noise [N, 1, OH, OW]; bias [Cout]; skip [N, Cout, S, S'] (ToRGB:
    added after the activation, linearly upsampled to 2S-1 and centre-cropped by 2).
    Output [N, Cout, OH, OW], or written into `out` at rows out_step * r + out_phase[0].
    """
    kh, kw = weight.shape[2:]
    h, w = x.shape[2:]
    ct = torch.promote_types(x.dtype, torch.float32)
    inp = x.to(ct)
    if coords is not None:
        o = coords_offset
        inp = torch.cat([inp, coords[:, :, o:o + h, o:o + w].to(ct)], 1)
    if style is not None:
        inp = inp * style.to(ct)
    y = F.conv2d(inp, weight.to(ct))
    if style is not None and wsq is not None:
        centre = style.to(ct)[:, :, kh // 2:kh // 2 + y.shape[2], kw // 2:kw // 2 + y.shape[3]] ** 2
        # a 1x1 conv, not an einsum: its bits must not depend on the batch size (determinism.py)
        y = y * torch.rsqrt(F.conv2d(centre, wsq.to(ct).t()[:, :, None, None]) + EPS)
    if noise is not None:
        y = y + noise_strength * noise.to(ct)
    if bias is not None:
        y = y + bias.to(ct).view(1, -1, 1, 1)
    if act:
        y = F.leaky_relu(y, LRELU_SLOPE) * SQRT2
    if skip is not None:
        y = y + upsample_linear(skip.to(ct))[:, :, 2:2 + y.shape[2], 2:2 + y.shape[3]]
    y = y.to(out_dtype or x.dtype)
    if out is None:
        return y
    out[:, :, out_phase[0]::out_step, out_phase[1]::out_step][:, :, :y.shape[2], :y.shape[3]] = y
    return out


# ---- Triton kernel ---------------------------------------------------------------------------
try:
    import triton
    import triton.language as tl
except ImportError:  # the reference still works
    triton = None

if triton is not None:
    # The generator's constants (igan.engine.ops) as compile-time constants of the kernels: a
    # @triton.jit body reads a module global only if it is a tl.constexpr.
    ACT_GAIN: tl.constexpr = tl.constexpr(SQRT2)
    ACT_SLOPE: tl.constexpr = tl.constexpr(LRELU_SLOPE)
    DEMOD_EPS: tl.constexpr = tl.constexpr(EPS)

    @triton.jit
    def leaky_relu_gain(acc):
        """The generator's activation on a float32 block: leaky ReLU (slope ACT_SLOPE) times
        ACT_GAIN = sqrt(2), as fused_leaky_relu without its bias."""
        return tl.where(acc >= 0.0, acc, acc * ACT_SLOPE) * ACT_GAIN

    @triton.jit
    def _accumulate_input(
        acc,
        # the input tensor: its base pointer, each output pixel's row offset (the address of
        # its receptive field's top-left tap) and the channel / row / column strides
        src_ptr, src_row, src_stride_c, src_stride_h, src_stride_w,
        # its channels: C of them, channels CH0 .. CH0 + C - 1 of the conv's C_TOTAL inputs
        C, CH0,
        # per-pixel styles (read when SPATIAL), indexed as the input, channel CH0 + c
        style_ptr, style_row, style_stride_c, style_stride_h, style_stride_w,
        # packed weights [KH * KW * C_TOTAL, COUT], row (tap * C_TOTAL + channel)
        w_ptr, C_TOTAL, COUT, KH, KW,
        # the tile: its output pixels (rows) and filters (columns), and the K offsets 0..BLOCK_K-1
        m_ok, offs_n, n_ok, offs_k,
        SPATIAL: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        """acc [BLOCK_M, BLOCK_N] += the implicit GEMM of one input over its KH * KW * C
        reduction, in one flat loop over k = tap * C + channel (tap = ky * KW + kx): the
        address splits into a per-pixel row part and a per-k column part, blocks may straddle
        taps, and the loop pipelines. The order is fixed (tap-major, then channel, BLOCK_K at
        a time), whatever the pixel count. With SPATIAL the activations are multiplied by the
        styles in float32 and cast back to their dtype; UPCAST does the dot in float32 (the
        interpreter's bf16 arithmetic is wrong); IEEE asks for an exact fp32 dot (no TF32)."""
        k_end = KH * KW * C
        for k0 in range(0, k_end, BLOCK_K):
            kk = k0 + offs_k
            k_ok = kk < k_end
            tap = kk // C
            ch = kk % C
            ky = tap // KW
            kx = tap % KW
            mk = m_ok[:, None] & k_ok[None, :]
            a = tl.load(src_ptr + src_row[:, None]
                        + (ky * src_stride_h + kx * src_stride_w + ch * src_stride_c)[None, :],
                        mask=mk, other=0.0)
            if SPATIAL:
                s = tl.load(style_ptr + style_row[:, None]
                            + (ky * style_stride_h + kx * style_stride_w + (CH0 + ch) * style_stride_c)[None, :],
                            mask=mk, other=0.0)
                a = (a.to(tl.float32) * s.to(tl.float32)).to(a.dtype)
            b = tl.load(w_ptr + (tap * C_TOTAL + CH0 + ch)[:, None] * COUT + offs_n[None, :],
                        mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            if IEEE:
                acc += tl.dot(a, b, input_precision="ieee")
            else:
                acc += tl.dot(a, b)
        return acc

    @triton.jit
    def _conv_kernel(
        # x: the input activations [N, C1, H, W], any strides
        x_ptr, x_stride_n, x_stride_c, x_stride_h, x_stride_w,
        # coords: the second input [N, C2, Hc, Wc] (HAS_C2), any strides, read at
        # (row + coords_offset, col + coords_offset); its channels follow x's in the weights
        coords_ptr, coords_stride_n, coords_stride_c, coords_stride_h, coords_stride_w, coords_offset,
        # style: per-pixel styles [N, C1 + C2, H, W] (SPATIAL), any strides
        style_ptr, style_stride_n, style_stride_c, style_stride_h, style_stride_w,
        # weights: packed [KH * KW * (C1 + C2), COUT] contiguous (pack_weight); wsq: the squared
        # weights summed over the taps [C1 + C2, COUT] (DEMOD), any strides
        w_ptr, wsq_ptr, wsq_stride_c, wsq_stride_o,
        # noise: [N, 1, OH, OW] (HAS_NOISE), strides of dims 0, 2, 3; times noise_strength
        noise_ptr, noise_stride_n, noise_stride_h, noise_stride_w, noise_strength,
        # bias: [COUT] contiguous (HAS_BIAS)
        bias_ptr,
        # skip: the half-resolution ToRGB image [N, COUT, S, S'] (HAS_SKIP), any strides
        skip_ptr, skip_stride_n, skip_stride_c, skip_stride_h, skip_stride_w,
        # y: the output, any strides; output pixel (oh, ow) goes to row oh * y_step + y_phase_h,
        # column ow * y_step + y_phase_w
        y_ptr, y_stride_n, y_stride_c, y_stride_h, y_stride_w, y_step, y_phase_h, y_phase_w,
        # sizes: NPIX = N * OH * OW output pixels, channels, output size, filters, kernel size
        NPIX, C1, C2, OH, OW, COUT, KH, KW,
        # what to compute (see the docstring)
        HAS_C2: tl.constexpr, HAS_SKIP: tl.constexpr, SPATIAL: tl.constexpr, DEMOD: tl.constexpr, HAS_NOISE: tl.constexpr,
        HAS_BIAS: tl.constexpr, ACT: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr,
        # the tile: BLOCK_M output pixels x BLOCK_N filters, BLOCK_K reduction steps at a time
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
        """One [BLOCK_M pixels, BLOCK_N filters] tile of the fused valid conv (conv_ref is the
        spec): y[n, o, oh, ow] = epilogue(sum over ky, kx, c of in[n, c, oh + ky, ow + kx]
        * weight[o, c, ky, kx]), where `in` is x's C1 channels then coords' C2 channels, each
        times the per-pixel style when SPATIAL. Program (i, j) computes the flat output pixels
        (n, oh, ow) i * BLOCK_M ... (i + 1) * BLOCK_M - 1 for filters j * BLOCK_N ... (j + 1) * BLOCK_N - 1.

        The reduction is one K loop (_accumulate_input) run over x, then over coords. The
        epilogue, in float32 and in this order: demodulation (DEMOD), noise, bias, activation,
        ToRGB skip, then the cast to y's dtype.

        Constexprs:
        HAS_C2: read the second input `coords` (the structure synthesizer's coordinates).
        SPATIAL: multiply the activations by the per-pixel `style` (spatially varying styles).
        DEMOD: multiply each output by rsqrt(sum_c style[c]^2 * wsq[c, o] + DEMOD_EPS), the
               style taken at the centre tap (a second, 1x1 GEMM); needs SPATIAL.
        HAS_NOISE: add noise_strength * noise[n, 0, oh, ow].
        HAS_BIAS: add bias[o].
        ACT: leaky ReLU times sqrt(2) (leaky_relu_gain).
        HAS_SKIP: add `skip` linearly upsampled to 2S - 1 and centre-cropped by 2 (ToRGB).
        UPCAST: do the GEMMs' dots in float32 (the interpreter, whose bf16 math is wrong).
        IEEE: exact fp32 dots (float32 inputs); else the dtype's tensor-core dots, and TF32 for
              the demodulation GEMM.
        BLOCK_M, BLOCK_N, BLOCK_K: the tile and the reduction step (powers of two >= 16).
        """
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        m_ok = offs_m < NPIX
        n_ok = offs_n < COUT
        ohw = OH * OW
        n_idx = (offs_m // ohw).to(tl.int64)  # 64-bit offsets: a batch of big tiles exceeds 2^31
        rem = offs_m % ohw
        oh = rem // OW
        ow = rem % OW
        c_total = C1 + C2
        x_row = n_idx * x_stride_n + oh * x_stride_h + ow * x_stride_w
        style_row = n_idx * style_stride_n + oh * style_stride_h + ow * style_stride_w
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc = _accumulate_input(acc, x_ptr, x_row, x_stride_c, x_stride_h, x_stride_w, C1, 0,
                                style_ptr, style_row, style_stride_c, style_stride_h, style_stride_w,
                                w_ptr, c_total, COUT, KH, KW, m_ok, offs_n, n_ok, offs_k,
                                SPATIAL, UPCAST, IEEE, BLOCK_K)
        if HAS_C2:
            coords_row = (n_idx * coords_stride_n + (oh + coords_offset) * coords_stride_h
                          + (ow + coords_offset) * coords_stride_w)
            acc = _accumulate_input(acc, coords_ptr, coords_row, coords_stride_c, coords_stride_h, coords_stride_w,
                                    C2, C1,
                                    style_ptr, style_row, style_stride_c, style_stride_h, style_stride_w,
                                    w_ptr, c_total, COUT, KH, KW, m_ok, offs_n, n_ok, offs_k,
                                    SPATIAL, UPCAST, IEEE, BLOCK_K)
        if DEMOD:
            # per-pixel demodulation: the 1x1 product of s^2 at the centre tap with wsq
            dsum = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            s_base = style_row + (KH // 2) * style_stride_h + (KW // 2) * style_stride_w
            for c0 in range(0, c_total, BLOCK_K):
                ch = c0 + offs_k
                k_ok = ch < c_total
                s = tl.load(style_ptr + s_base[:, None] + ch[None, :] * style_stride_c,
                            mask=m_ok[:, None] & k_ok[None, :], other=0.0).to(tl.float32)
                q = tl.load(wsq_ptr + ch[:, None] * wsq_stride_c + offs_n[None, :] * wsq_stride_o,
                            mask=k_ok[:, None] & n_ok[None, :], other=0.0).to(tl.float32)
                if IEEE:
                    dsum += tl.dot(s * s, q, input_precision="ieee")
                else:  # bf16/fp16 renders: TF32 tensor cores, not a GEMM-sized FMA loop (~1/9 of the conv)
                    dsum += tl.dot(s * s, q, input_precision="tf32")
            acc = acc * tl.math.rsqrt(dsum + DEMOD_EPS)
        if HAS_NOISE:
            nz = tl.load(noise_ptr + n_idx * noise_stride_n + oh * noise_stride_h + ow * noise_stride_w,
                         mask=m_ok, other=0.0)
            acc += noise_strength * nz.to(tl.float32)[:, None]
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0)
            acc += bias.to(tl.float32)[None, :]
        if ACT:
            acc = leaky_relu_gain(acc)
        if HAS_SKIP:
            # ToRGB skip: the half-resolution RGB linearly upsampled (2S-1) and centre-cropped
            # by 2, i.e. index u = o + 2 of the upsampled grid averages skip[u//2], skip[(u+1)//2]
            r0 = (oh + 2) // 2
            r1 = (oh + 3) // 2
            q0 = (ow + 2) // 2
            q1 = (ow + 3) // 2
            kb = n_idx * skip_stride_n
            msk = m_ok[:, None] & n_ok[None, :]
            kc = offs_n[None, :] * skip_stride_c
            v00 = tl.load(skip_ptr + (kb + r0 * skip_stride_h + q0 * skip_stride_w)[:, None] + kc,
                          mask=msk, other=0.0).to(tl.float32)
            v10 = tl.load(skip_ptr + (kb + r1 * skip_stride_h + q0 * skip_stride_w)[:, None] + kc,
                          mask=msk, other=0.0).to(tl.float32)
            v01 = tl.load(skip_ptr + (kb + r0 * skip_stride_h + q1 * skip_stride_w)[:, None] + kc,
                          mask=msk, other=0.0).to(tl.float32)
            v11 = tl.load(skip_ptr + (kb + r1 * skip_stride_h + q1 * skip_stride_w)[:, None] + kc,
                          mask=msk, other=0.0).to(tl.float32)
            acc += ((v00 + v10) * 0.5 + (v01 + v11) * 0.5) * 0.5
        y_off = (n_idx * y_stride_n + (oh * y_step + y_phase_h) * y_stride_h
                 + (ow * y_step + y_phase_w) * y_stride_w)
        tl.store(y_ptr + y_off[:, None] + offs_n[None, :] * y_stride_c, acc.to(y_ptr.dtype.element_ty),
                 mask=m_ok[:, None] & n_ok[None, :])


@dataclass(frozen=True)
class BlockConfig:
    block_m: int
    block_n: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 3

    def check(self):
        for name in ("block_m", "block_n", "block_k"):
            v = getattr(self, name)
            if v < 16 or v & (v - 1):
                raise ValueError(f"{name}={v}: tl.dot needs power-of-two blocks >= 16 on a GPU")  # internal invariant
        return self


def default_config(c_in: int, c_out: int, dtype: torch.dtype) -> BlockConfig:
    """Block sizes from the layer's channels and dtype only (never from the pixel count, so
    results do not depend on the tile size)."""
    if interpreting():  # the interpreter's cost is per program instance: few, large blocks
        return BlockConfig(64, max(16, min(64, triton.next_power_of_2(c_out))), 16)
    bn = 128 if c_out >= 128 else max(16, triton.next_power_of_2(c_out))
    bk = 64 if dtype in (torch.float16, torch.bfloat16) and c_in >= 64 else 32
    return BlockConfig(128, bn, bk, num_warps=8 if bn >= 128 else 4, num_stages=3)


def _format(x: torch.Tensor) -> torch.memory_format:
    """Outputs follow the input's layout (channels-last in, channels-last out)."""
    if x.dim() == 4 and x.shape[1] > 1 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """[Cout, Cin, KH, KW] -> [KH * KW * Cin, Cout], the K-major layout the kernel reads."""
    cout, cin, kh, kw = weight.shape
    return weight.permute(2, 3, 1, 0).reshape(kh * kw * cin, cout).contiguous()


def conv_triton(x, weight, *, coords=None, coords_offset=0, style=None, wsq=None, noise=None, noise_strength=0.0,
                bias=None, act=False, skip=None, out=None, out_step=1, out_phase=(0, 0), out_dtype=None,
                packed=None, config: BlockConfig | None = None):
    """Launch the fused conv kernel. Arguments as `conv_ref`; `packed` may hold
    pack_weight(weight) computed once per image."""
    n, c1, h, w = x.shape
    cout, ctot, kh, kw = weight.shape
    c2 = 0 if coords is None else coords.shape[1]
    if ctot != c1 + c2:
        raise ValueError(f"weight has {ctot} input channels, inputs have {c1} + {c2}")  # internal invariant
    oh, ow = h - kh + 1, w - kw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"input {h}x{w} is smaller than the {kh}x{kw} kernel")  # internal invariant
    if coords is not None and (coords.shape[2] < h + coords_offset or coords.shape[3] < w + coords_offset):
        # internal invariant
        raise ValueError(f"coords {tuple(coords.shape)} do not cover the input at offset {coords_offset}")
    if skip is not None and (skip.shape[1] != cout or 2 * skip.shape[2] - 5 < oh or 2 * skip.shape[3] - 5 < ow):
        raise ValueError(f"skip {tuple(skip.shape)} does not cover a {cout}x{oh}x{ow} output")  # internal invariant
    out_dtype = out_dtype or x.dtype
    if out is None:
        if out_step != 1 or out_phase != (0, 0):
            raise ValueError("out_step / out_phase need an `out` tensor to write into")  # internal invariant
        out = torch.empty(n, cout, oh, ow, device=x.device, dtype=out_dtype, memory_format=_format(x))
    elif out.shape[2] < out_step * (oh - 1) + out_phase[0] + 1 or out.shape[3] < out_step * (ow - 1) + out_phase[1] + 1:
        # internal invariant
        raise ValueError(f"out {tuple(out.shape)} is too small for {oh}x{ow} outputs at step {out_step}")
    packed = pack_weight(weight) if packed is None else packed
    cfg = (config or default_config(ctot, cout, x.dtype)).check()
    demod = style is not None and wsq is not None
    if demod and tuple(wsq.shape) != (ctot, cout):
        # internal invariant
        raise ValueError(f"wsq has shape {tuple(wsq.shape)}, expected {(ctot, cout)} (input channels, filters)")
    dummy = x
    c = coords if coords is not None else dummy
    s = style if style is not None else dummy
    nz = noise if noise is not None else dummy
    grid = (triton.cdiv(n * oh * ow, cfg.block_m), triton.cdiv(cout, cfg.block_n))
    _conv_kernel[grid](  # positional, in the kernel's groups (unused tensors get a dummy pointer, zero strides)
        x, *x.stride(),
        c, *(c.stride() if coords is not None else (0, 0, 0, 0)), coords_offset,
        s, *(s.stride() if style is not None else (0, 0, 0, 0)),
        packed, wsq if demod else packed, *(wsq.stride() if demod else (0, 0)),
        nz, *((nz.stride(0), nz.stride(2), nz.stride(3)) if noise is not None else (0, 0, 0)), float(noise_strength),
        bias if bias is not None else packed,
        skip if skip is not None else packed, *(skip.stride() if skip is not None else (0, 0, 0, 0)),
        out, *out.stride(), out_step, out_phase[0], out_phase[1],
        n * oh * ow, c1, c2, oh, ow, cout, kh, kw,
        HAS_C2=coords is not None, HAS_SKIP=skip is not None, SPATIAL=style is not None, DEMOD=demod, HAS_NOISE=noise is not None,
        HAS_BIAS=bias is not None, ACT=bool(act), UPCAST=interpreting(), IEEE=x.dtype == torch.float32,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return out


def fused_conv(x, weight, *, impl: str = "auto", **kw):
    """Launcher: Triton on CUDA (or under the interpreter), else the torch reference."""
    if use_triton(impl, x.device):
        return conv_triton(x, weight, **kw)
    kw.pop("packed", None)
    kw.pop("config", None)
    return conv_ref(x, weight, **kw)
