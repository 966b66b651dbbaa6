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

from igan.engine.ops import EPS as DEMOD_EPS, LRELU_SLOPE as SLOPE, SQRT2, upsample_linear

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
        y = y * torch.rsqrt(F.conv2d(centre, wsq.to(ct).t()[:, :, None, None]) + DEMOD_EPS)
    if noise is not None:
        y = y + noise_strength * noise.to(ct)
    if bias is not None:
        y = y + bias.to(ct).view(1, -1, 1, 1)
    if act:
        y = F.leaky_relu(y, SLOPE) * SQRT2
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

    @triton.jit
    def _conv_kernel(
        x_ptr, sxn, sxc, sxh, sxw,
        c_ptr, scn, scc, sch, scw, c_off,
        s_ptr, ssn, ssc, ssh, ssw,
        w_ptr, wsq_ptr, sqc, sqo,
        n_ptr, snn, snh, snw, strength,
        b_ptr,
        k_ptr, skn, skc, skh, skw,
        y_ptr, syn, syc, syh, syw, y_step, y_ph, y_pw,
        NPIX, C1, C2, OH, OW, COUT, KH, KW,
        HAS_C2: tl.constexpr, HAS_SKIP: tl.constexpr, SPATIAL: tl.constexpr, DEMOD: tl.constexpr, HAS_NOISE: tl.constexpr,
        HAS_BIAS: tl.constexpr, ACT: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):
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
        ctot = C1 + C2
        x_row = n_idx * sxn + oh * sxh + ow * sxw
        s_row = n_idx * ssn + oh * ssh + ow * ssw
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        # One flat K loop over (tap, channel): the address splits into a per-pixel row part
        # and a per-k column part, blocks may straddle taps, and the loop pipelines.
        k1 = KH * KW * C1
        for k0 in range(0, k1, BLOCK_K):
            kk = k0 + offs_k
            k_ok = kk < k1
            tap = kk // C1
            ch = kk % C1
            ky = tap // KW
            kx = tap % KW
            mk = m_ok[:, None] & k_ok[None, :]
            a = tl.load(x_ptr + x_row[:, None] + (ky * sxh + kx * sxw + ch * sxc)[None, :], mask=mk, other=0.0)
            if SPATIAL:
                s = tl.load(s_ptr + s_row[:, None] + (ky * ssh + kx * ssw + ch * ssc)[None, :], mask=mk, other=0.0)
                a = (a.to(tl.float32) * s.to(tl.float32)).to(a.dtype)
            b = tl.load(w_ptr + (tap * ctot + ch)[:, None] * COUT + offs_n[None, :],
                        mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            if IEEE:
                acc += tl.dot(a, b, input_precision="ieee")
            else:
                acc += tl.dot(a, b)
        if HAS_C2:
            c_row = n_idx * scn + (oh + c_off) * sch + (ow + c_off) * scw
            k2 = KH * KW * C2
            for k0 in range(0, k2, BLOCK_K):
                kk = k0 + offs_k
                k_ok = kk < k2
                tap = kk // C2
                ch = kk % C2
                ky = tap // KW
                kx = tap % KW
                mk = m_ok[:, None] & k_ok[None, :]
                a = tl.load(c_ptr + c_row[:, None] + (ky * sch + kx * scw + ch * scc)[None, :], mask=mk, other=0.0)
                if SPATIAL:
                    s = tl.load(s_ptr + s_row[:, None] + (ky * ssh + kx * ssw + (C1 + ch) * ssc)[None, :],
                                mask=mk, other=0.0)
                    a = (a.to(tl.float32) * s.to(tl.float32)).to(a.dtype)
                b = tl.load(w_ptr + (tap * ctot + C1 + ch)[:, None] * COUT + offs_n[None, :],
                            mask=k_ok[:, None] & n_ok[None, :], other=0.0)
                if UPCAST:
                    a = a.to(tl.float32)
                    b = b.to(tl.float32)
                if IEEE:
                    acc += tl.dot(a, b, input_precision="ieee")
                else:
                    acc += tl.dot(a, b)
        if DEMOD:
            # per-pixel demodulation: the 1x1 product of s^2 at the centre tap with wsq
            dsum = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            s_base = s_row + (KH // 2) * ssh + (KW // 2) * ssw
            for c0 in range(0, ctot, BLOCK_K):
                ch = c0 + offs_k
                k_ok = ch < ctot
                s = tl.load(s_ptr + s_base[:, None] + ch[None, :] * ssc,
                            mask=m_ok[:, None] & k_ok[None, :], other=0.0).to(tl.float32)
                q = tl.load(wsq_ptr + ch[:, None] * sqc + offs_n[None, :] * sqo,
                            mask=k_ok[:, None] & n_ok[None, :], other=0.0).to(tl.float32)
                if IEEE:
                    dsum += tl.dot(s * s, q, input_precision="ieee")
                else:  # bf16/fp16 renders: TF32 tensor cores, not a GEMM-sized FMA loop (~1/9 of the conv)
                    dsum += tl.dot(s * s, q, input_precision="tf32")
            acc = acc * tl.math.rsqrt(dsum + 1e-8)
        if HAS_NOISE:
            nz = tl.load(n_ptr + n_idx * snn + oh * snh + ow * snw, mask=m_ok, other=0.0)
            acc += strength * nz.to(tl.float32)[:, None]
        if HAS_BIAS:
            bias = tl.load(b_ptr + offs_n, mask=n_ok, other=0.0)
            acc += bias.to(tl.float32)[None, :]
        if ACT:
            acc = tl.where(acc >= 0.0, acc, acc * 0.2) * 1.4142135623730951
        if HAS_SKIP:
            # ToRGB skip: the half-resolution RGB linearly upsampled (2S-1) and centre-cropped
            # by 2, i.e. index u = o + 2 of the upsampled grid averages skip[u//2], skip[(u+1)//2]
            r0 = (oh + 2) // 2
            r1 = (oh + 3) // 2
            q0 = (ow + 2) // 2
            q1 = (ow + 3) // 2
            kb = n_idx * skn
            msk = m_ok[:, None] & n_ok[None, :]
            kc = offs_n[None, :] * skc
            v00 = tl.load(k_ptr + (kb + r0 * skh + q0 * skw)[:, None] + kc, mask=msk, other=0.0).to(tl.float32)
            v10 = tl.load(k_ptr + (kb + r1 * skh + q0 * skw)[:, None] + kc, mask=msk, other=0.0).to(tl.float32)
            v01 = tl.load(k_ptr + (kb + r0 * skh + q1 * skw)[:, None] + kc, mask=msk, other=0.0).to(tl.float32)
            v11 = tl.load(k_ptr + (kb + r1 * skh + q1 * skw)[:, None] + kc, mask=msk, other=0.0).to(tl.float32)
            acc += ((v00 + v10) * 0.5 + (v01 + v11) * 0.5) * 0.5
        y_off = n_idx * syn + (oh * y_step + y_ph) * syh + (ow * y_step + y_pw) * syw
        tl.store(y_ptr + y_off[:, None] + offs_n[None, :] * syc, acc.to(y_ptr.dtype.element_ty),
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
                raise ValueError(f"{name}={v}: tl.dot needs power-of-two blocks >= 16 on a GPU")
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
        raise ValueError(f"weight has {ctot} input channels, inputs have {c1} + {c2}")
    oh, ow = h - kh + 1, w - kw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"input {h}x{w} is smaller than the {kh}x{kw} kernel")
    if coords is not None and (coords.shape[2] < h + coords_offset or coords.shape[3] < w + coords_offset):
        raise ValueError(f"coords {tuple(coords.shape)} do not cover the input at offset {coords_offset}")
    if skip is not None and (skip.shape[1] != cout or 2 * skip.shape[2] - 5 < oh or 2 * skip.shape[3] - 5 < ow):
        raise ValueError(f"skip {tuple(skip.shape)} does not cover a {cout}x{oh}x{ow} output")
    out_dtype = out_dtype or x.dtype
    if out is None:
        if out_step != 1 or out_phase != (0, 0):
            raise ValueError("out_step / out_phase need an `out` tensor to write into")
        out = torch.empty(n, cout, oh, ow, device=x.device, dtype=out_dtype, memory_format=_format(x))
    elif out.shape[2] < out_step * (oh - 1) + out_phase[0] + 1 or out.shape[3] < out_step * (ow - 1) + out_phase[1] + 1:
        raise ValueError(f"out {tuple(out.shape)} is too small for {oh}x{ow} outputs at step {out_step}")
    packed = pack_weight(weight) if packed is None else packed
    cfg = (config or default_config(ctot, cout, x.dtype)).check()
    demod = style is not None and wsq is not None
    if demod and tuple(wsq.shape) != (ctot, cout):
        raise ValueError(f"wsq has shape {tuple(wsq.shape)}, expected {(ctot, cout)} (input channels, filters)")
    dummy = x
    c = coords if coords is not None else dummy
    s = style if style is not None else dummy
    nz = noise if noise is not None else dummy
    grid = (triton.cdiv(n * oh * ow, cfg.block_m), triton.cdiv(cout, cfg.block_n))
    _conv_kernel[grid](
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
