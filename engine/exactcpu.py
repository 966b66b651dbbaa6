"""The default CPU path: every conv as GEMMs in MKL's strict mode, so a value's bytes depend
on neither the tile around it nor the thread count, at the speed of the 0.4 fast path.

A value of the canvas must come out of the same floating-point operations in the same order
whatever computes it: another tile size or batch, another number of workers, threads or
torchrun ranks, a window inside a larger render, a resume under another split, an igan-serve
tile. Two things decide that order in a conv: its reduction (the sum over input channels and
taps) and the algorithm around it. This path fixes both:

- Every reduction is one GEMM in MKL's strict conditional-numerical-reproducibility mode
  (determinism.py), under which a row of the result has the same bits whatever the number of
  rows and threads (tests/test_exactcpu.py checks this property of the installed MKL). No
  conv goes through oneDNN, which blocks its loops by shape and thread count.
- The texture synthesizer's wide 3x3 convs (at least 128 channels in and out) run as Winograd
  F(2x2, 3x3): 16 GEMMs on 4x4 input tiles. The tiles are anchored to the canvas: every 3x3
  conv follows an upsampling conv, whose output starts at an even canvas row and column in
  every tile of every render (a latent cell is 2^k pixels at stage k), so a value always sits
  at the same place of the same 4x4 tile. An odd output is padded by one zero row (column)
  that reaches only the discarded second row of the last tile: no kept value reads it.
- The other 3x3 and k x k convs (the structure synthesizer's, narrow texture convs) as one
  im2col GEMM each; the 1x1 ToRGB convs as a GEMM on the channels-last activations.
- The upsampling conv (stride-2 transposed 3x3) as its four polyphase GEMMs (1, 2, 2 and 4
  taps: no zero is multiplied), then the official blur.
- The epilogues (noise, bias, leaky ReLU, gain) are elementwise, each value computed by the
  same IEEE operations wherever it sits (no fused multiply-add that a vector body would do
  and a scalar tail would not).

Activations stay channels-last (NHWC) from the first layer to the last, so no GEMM reorders
its input. bf16 is computed by oneDNN's GEMMs, whose bytes may follow the thread count; fp32,
the default, is the precision of these promises.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from . import native, ops, walk

# Winograd F(2x2, 3x3) where both channel counts are at least this (below it the transforms
# cost more than the multiplies they save: measured on the 2-core CPU, benchmarks/cpu_paths.py).
WINOGRAD_MIN_CHANNELS = 128
_BAND_BYTES = 32 << 20  # the scratch of one GEMM (im2col columns, Winograd's transformed band)
_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
_FLIP = (2, 0)  # an odd polyphase row/column takes taps 2 (at m) and 0 (at m + 1)


@dataclass
class ExactPrepared:
    """One image's folded weights as this path's GEMMs read them."""

    ss: list[torch.Tensor]  # [k*k*Cin, Cout], rows in (dy, dx, c) order
    ss_k: list[int]
    convs: list  # even i: four phases ((kh, kw, [kh*kw*C, O]) for rows/cols even/odd); odd i: see _conv
    rgbs: list[torch.Tensor]  # [C, 3]
    ss_bias: list[torch.Tensor]
    conv_bias: list[torch.Tensor]
    rgb_bias: list[torch.Tensor]  # [3]
    noise_strengths: list[torch.Tensor | None]  # one-element tensors (the reference's weight * noise)


def gemm_weight(w: torch.Tensor) -> torch.Tensor:
    """[out, in, kh, kw] -> [kh*kw*in, out], rows in (dy, dx, c) order (im2col's columns)."""
    return w.permute(2, 3, 1, 0).reshape(-1, w.shape[0]).contiguous()


def winograd_weight(w: torch.Tensor) -> torch.Tensor:
    """[out, in, 3, 3] -> U = G w G^T as [16, in, out] (computed in float64, then w's dtype)."""
    g = torch.tensor(_G, dtype=torch.float64)
    u = torch.einsum("ia,ocab,jb->ijco", g, w.detach().double(), g)
    return u.reshape(16, w.shape[1], w.shape[0]).to(w.dtype).contiguous()


def _phases(w: torch.Tensor) -> list[tuple[int, int, int, int, torch.Tensor]]:
    """The upsampling conv's polyphase sub-kernels: (row phase, column phase, kh, kw, GEMM weight).
    Output row 2m takes x[m] * w[1]; row 2m + 1 takes x[m] * w[2] + x[m + 1] * w[0]; columns alike."""
    out = []
    for py in (0, 1):
        for px in (0, 1):
            ry = [1] if py == 0 else list(_FLIP)
            rx = [1] if px == 0 else list(_FLIP)
            sub = w[:, :, ry][:, :, :, rx]
            out.append((py, px, len(ry), len(rx), gemm_weight(sub)))
    return out


def _conv(i: int, w: torch.Tensor):
    if i % 2 == 0:
        return _phases(w)
    if min(w.shape[0], w.shape[1]) >= WINOGRAD_MIN_CHANNELS:
        return winograd_weight(w)
    return gemm_weight(w)


def prepare(model, prepared) -> ExactPrepared:
    """This path's weights from the reference's folded ones (engine/model.py, Prepared)."""
    ts = model.texture_synthesizer
    dtype = prepared.convs[0].dtype
    ss_layers = model.structure_synthesizer.layers if model.structure_synthesizer is not None else []
    return ExactPrepared(
        ss=[gemm_weight(w) for w in prepared.ss],
        ss_k=[w.shape[2] for w in prepared.ss],
        convs=[_conv(i, w) for i, w in enumerate(prepared.convs)],
        rgbs=[w.reshape(w.shape[0], w.shape[1]).t().contiguous() for w in prepared.rgbs],
        ss_bias=[layer.activate.bias.detach().to(dtype) for layer in ss_layers],
        conv_bias=[conv.activate.bias.detach().to(dtype) for conv in ts.convs],
        rgb_bias=[rgb.bias.detach().reshape(-1).to(dtype) for rgb in ts.to_rgbs],
        noise_strengths=[conv.noise.weight.detach().to(dtype) if conv.noise is not None else None
                         for conv in ts.convs])


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] (any layout) -> [N, H, W, C] with contiguous channels (a view when it has them)."""
    y = x.permute(0, 2, 3, 1)
    return y if y.stride(3) == 1 and y.stride(2) == y.shape[3] else y.contiguous()


def _nchw(x: torch.Tensor) -> torch.Tensor:
    """[N, H, W, C] -> the [N, C, H, W] view (channels-last memory)."""
    return x.permute(0, 3, 1, 2)


class _Profiled:
    """The C++ passes, each call a named range in torch's profiler (igan::winograd_output, ...),
    so a profile shows them beside the GEMMs (benchmarks/cpu_paths.py)."""

    def __init__(self, lib):
        self._lib = lib

    def __getattr__(self, name):
        fn = getattr(self._lib, name)

        def call(*args):
            with record_function("igan::" + name):
                return fn(*args)
        return call


def _native(*tensors: torch.Tensor):
    """The C++ passes (igan.engine.native) when they apply to these tensors: float32 on the CPU."""
    lib = native.active()
    if lib is None or not hasattr(lib, "blur_epilogue_phases"):
        return None
    if any(t is not None and (t.dtype != torch.float32 or t.device.type != "cpu") for t in tensors):
        return None
    return _Profiled(lib)


def _view(t: torch.Tensor):
    """(address, shape, strides) of an NHWC tensor with contiguous channels, for the C++ passes."""
    if t.dim() != 4 or t.stride(3) != 1:
        raise ValueError(f"not an NHWC view with contiguous channels: {tuple(t.shape)} {t.stride()}")  # internal invariant
    return t.data_ptr(), list(t.shape), list(t.stride()[:3])


def _noise_args(noise: torch.Tensor | None, strength: torch.Tensor | None):
    """(address, strides, strength) of a noise map [N, 1, h, w] for the C++ epilogue."""
    if noise is None or strength is None:
        return 0, [], 0.0
    return noise.data_ptr(), [noise.stride(0), noise.stride(2), noise.stride(3)], float(strength)


def epilogue_(y: torch.Tensor, noise: torch.Tensor | None, strength: torch.Tensor | None,
              bias: torch.Tensor | None) -> torch.Tensor:
    """y [N, H, W, C] in place: y + strength * noise (noise [N, 1, H, W]), + bias, then
    sqrt(2) * leaky_relu(., 0.2); each value by the same float32 operations in C++ and torch."""
    lib = _native(y, noise, bias)
    if lib is not None:
        ptr, nst, st = _noise_args(noise, strength)
        lib.epilogue(*_view(y), ptr, nst, st, 0 if bias is None else bias.contiguous().data_ptr(),
                     torch.get_num_threads())
        return y
    if noise is not None and strength is not None:
        y.add_((strength * noise).permute(0, 2, 3, 1))
    if bias is not None:
        y.add_(bias)
    return F.leaky_relu_(y, ops.LRELU_SLOPE).mul_(ops.SQRT2)


def gemm_conv(x: torch.Tensor, w: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """Valid conv of x [N, H, W, C] (contiguous channels) with gemm_weight's w [kh*kw*C, O] ->
    [N, H - kh + 1, W - kw + 1, O], a view with contiguous channels (rows may be strided).

    Up to 3x3, one GEMM per tap on x itself, accumulated in tap order (no im2col copy): tap
    (dy, dx) reads x's rows from dy * W + dx on, so the rows that cross a row's end compute
    values outside the valid output, which the returned view leaves out. Larger kernels (the
    structure synthesizer's) as im2col columns and one GEMM per band of output rows (scratch
    under _BAND_BYTES)."""
    n, h, wd, c = x.shape
    o = w.shape[1]
    ho, wo = h - kh + 1, wd - kw + 1
    if kh * kw <= 9:
        flat = x.reshape(-1, c)
        if kh == 1 and kw == 1:
            return torch.mm(flat, w).view(n, h, wd, o)
        rows = flat.shape[0] - ((kh - 1) * wd + kw - 1)
        y = x.new_empty(n * h * wd, o)
        for t in range(kh * kw):
            off = (t // kw) * wd + t % kw
            tap = flat[off:off + rows]
            if t == 0:
                torch.mm(tap, w[:c], out=y[:rows])
            else:
                y[:rows].addmm_(tap, w[t * c:(t + 1) * c])
        return y.view(n, h, wd, o)[:, :ho, :wo]
    out = x.new_empty(n, ho, wo, o)
    s_n, s_h, s_w, _ = x.stride()
    row_bytes = n * wo * kh * kw * max(c, o) * x.element_size()
    rows = max(1, min(ho, _BAND_BYTES // max(1, row_bytes)))
    for r0 in range(0, ho, rows):
        r = min(rows, ho - r0)
        cols = x.as_strided((n, r, wo, kh, kw, c), (s_n, s_h, s_w, s_h, s_w, 1),
                            x.storage_offset() + r0 * s_h).reshape(-1, kh * kw * c)
        out[:, r0:r0 + r].copy_(torch.mm(cols, w).view(n, r, wo, o))
    return out


def winograd_conv3x3(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor, noise: torch.Tensor | None = None,
                     strength: torch.Tensor | None = None) -> torch.Tensor:
    """The conv with its epilogue: sqrt(2) * leaky_relu(conv3x3(x) + bias + strength * noise)
    of x [N, H, W, C] (contiguous channels) with winograd_weight's u: [N, H - 2, W - 2, O].
    Input tiles d (4x4, stride 2, anchored at the tensor's origin, which is an even canvas
    position: see the module's docstring) become V = B^T d B, then M = V U per tile position
    (one batched GEMM of 16), then the 2x2 outputs Y = A^T M A (the bias enters M[1][1], which
    reaches every output of a tile with weight +1); in bands of tile rows so the scratch stays
    bounded. The transforms run in C++ (one pass each, the output one with the epilogue) or as
    their torch twins, with the same operations in the same order."""
    n, h, w, c = x.shape
    o = u.shape[2]
    ho, wo = h - 2, w - 2
    th, tw = (ho + 1) // 2, (wo + 1) // 2
    out = x.new_empty(n, ho, wo, o)
    rows = max(1, _BAND_BYTES // (16 * tw * max(c, o) * x.element_size() * n))
    rows = min(rows, th)
    vb = x.new_empty(16, n, rows, tw, c)
    lib = _native(x, u, bias, noise, out)
    threads = torch.get_num_threads()
    if lib is None:
        xh = x
        if 2 * th + 2 > h or 2 * tw + 2 > w:  # odd output: one more (zero) input row/column
            xh = F.pad(xh, (0, 0, 0, 2 * tw + 2 - w, 0, 2 * th + 2 - h))
        s_n, s_h, s_w, _ = xh.stride()
        tb = x.new_empty(4, n, rows, tw, 4, c)
        tmp = x.new_empty(n, rows, tw, o)
    for r0 in range(0, th, rows):
        r = min(rows, th - r0)
        v = vb[:, :, :r] if r == rows else vb.view(-1)[:16 * n * r * tw * c].view(16, n, r, tw, c)
        if lib is not None:
            lib.winograd_input(*_view(x), r0, r, tw, v.data_ptr(), threads)
        else:
            winograd_input_twin(xh, s_n, s_h, s_w, r0, r, tw, tb, v)
        m = torch.bmm(v.view(16, -1, c), u)
        if lib is not None:
            lib.winograd_output(m.data_ptr(), r0, r, tw, *_view(out), *_noise_args(noise, strength),
                                bias.contiguous().data_ptr(), threads)
        else:
            winograd_output_twin(m.view(4, 4, n, r, tw, o), bias, out, r0, r, tmp)
    if lib is None:
        epilogue_(out, noise, strength, None)
    return out


def winograd_input_twin(xh, s_n, s_h, s_w, r0, r, tw, tb, v):
    """V = B^T d B (torch) of the tiles of tile rows [r0, r0 + r) of xh [N, H, W, C] (strides
    s_n, s_h, s_w; every tile's 4 rows and columns inside it) into v (16 planes), via tb."""
    n, c = xh.shape[0], xh.shape[3]
    d = xh.as_strided((n, r, tw, 4, 4, c), (s_n, 2 * s_h, 2 * s_w, s_h, s_w, 1), xh.storage_offset() + 2 * r0 * s_h)
    t = tb[:, :, :r]
    v = v.view(4, 4, n, r, tw, c)
    d0, d1, d2, d3 = (d[:, :, :, k] for k in range(4))  # B^T along the tile's rows
    torch.sub(d0, d2, out=t[0])
    torch.add(d1, d2, out=t[1])
    torch.sub(d2, d1, out=t[2])
    torch.sub(d1, d3, out=t[3])
    e0, e1, e2, e3 = (t[..., k, :] for k in range(4))  # and along its columns
    torch.sub(e0, e2, out=v[:, 0])
    torch.add(e1, e2, out=v[:, 1])
    torch.sub(e2, e1, out=v[:, 2])
    torch.sub(e1, e3, out=v[:, 3])


def winograd_output_twin(m, bias, out, r0, r, tmp):
    """Y = A^T M A (torch) of a band's M [4, 4, N, r, tw, O] (bias, if any, into M[1][1]
    first) into out's rows [2 r0, 2 (r0 + r)), via tmp."""
    if bias is not None:
        m[1, 1].add_(bias)
    s0 = m[0].add_(m[1]).add_(m[2])  # A^T along rows: m0 + m1 + m2, (-m3 + m1) - m2
    s1 = m[3].neg_().add_(m[1]).sub_(m[2])
    band = out[:, 2 * r0:2 * (r0 + r)]
    for phase, sk in ((0, s0), (1, s1)):
        dst = band[:, phase::2]  # the last tile row of an odd output has no second row
        k = dst.shape[1]
        even, odd = dst[:, :, 0::2], dst[:, :, 1::2]
        tk = tmp[:, :k]
        torch.add(sk[0, :, :k], sk[1, :, :k], out=tk)
        torch.add(tk, sk[2, :, :k], out=even)
        torch.sub(sk[1, :, :k], sk[2, :, :k], out=tk)
        q = odd.shape[2]  # the last tile column of an odd output has no second column
        torch.sub(tk[:, :, :q], sk[3, :, :k, :q], out=odd)


def upconv(x: torch.Tensor, phases, bias: torch.Tensor, noise: torch.Tensor | None = None,
           strength: torch.Tensor | None = None) -> torch.Tensor:
    """The padding-free upsampling conv (ops.upconv2d) with its epilogue, on x [N, h, w, C]
    (contiguous channels): its four polyphase GEMMs, which interleaved are [N, 2h - 1, 2w - 1, O],
    then the blur and the epilogue: [N, 2h - 3, 2w - 3, O]. In C++ the blur reads the phases
    where they lie (one pass); the torch twin interleaves them first (an exact copy)."""
    n, h, w, _ = x.shape
    o = phases[0][4].shape[1]
    parts = [gemm_conv(x, wm, kh, kw) for _, _, kh, kw, wm in phases]
    out = x.new_empty(n, 2 * h - 3, 2 * w - 3, o)
    lib = _native(*parts, bias, noise)
    if lib is not None:
        views = [_view(p) for p in parts]
        lib.blur_epilogue_phases([v[0] for v in views], [v[1] for v in views], [v[2] for v in views],
                                 2 * h - 1, 2 * w - 1, *_view(out), *_noise_args(noise, strength),
                                 bias.contiguous().data_ptr(), torch.get_num_threads())
        return out
    full = x.new_empty(n, 2 * h - 1, 2 * w - 1, o)
    for (py, px, _, _, _), part in zip(phases, parts):
        full[:, py::2, px::2] = part
    out.copy_(blur3_nhwc(full))
    return epilogue_(out, noise, strength, bias)


def blur3_nhwc(x: torch.Tensor) -> torch.Tensor:
    """ops.blur3 on [N, H, W, C]: the same sums in the same order -> [N, H - 2, W - 2, C]."""
    rows = torch.add(x[:, :-2], x[:, 2:]).add_(x[:, 1:-1], alpha=2)
    out = torch.add(rows[:, :, :-2], rows[:, :, 2:]).add_(rows[:, :, 1:-1], alpha=2)
    return out.mul_(0.25)


class ExactOps:
    """This path's layers (walk.Ops) on one image's ExactPrepared weights. The tensors between
    layers are [N, C, H, W] views of contiguous channels-last memory."""

    def __init__(self, prepared: ExactPrepared):
        self.p = prepared

    def ss_layer(self, l, x, coords, offset):
        c = walk.crop(coords, offset)
        x = torch.cat([x, c.expand(x.shape[0], -1, -1, -1)], 1)
        k = self.p.ss_k[l]
        y = gemm_conv(_nhwc(x), self.p.ss[l], k, k)
        return _nchw(epilogue_(y, None, None, self.p.ss_bias[l]))

    def conv(self, i, x, noise):
        xh = _nhwc(x)
        w = self.p.convs[i]
        strength = self.p.noise_strengths[i]
        if noise is None or strength is None:
            noise = strength = None
        bias = self.p.conv_bias[i]
        if i % 2 == 0:
            return _nchw(upconv(xh, w, bias, noise, strength))
        if w.dim() == 3:
            return _nchw(winograd_conv3x3(xh, w, bias, noise, strength))
        return _nchw(epilogue_(gemm_conv(xh, w, 3, 3), noise, strength, bias))

    def to_rgb(self, k, x, skip):
        rgb = _nchw(gemm_conv(_nhwc(x), self.p.rgbs[k], 1, 1).add_(self.p.rgb_bias[k]))
        if skip is not None:
            rgb = rgb + ops.crop_to(ops.upsample_linear(skip), rgb.shape[2], rgb.shape[3])
        return rgb


def synthesize(cfg, prepared: ExactPrepared, local_latent: torch.Tensor, coords: torch.Tensor | None,
               noises) -> torch.Tensor:
    """The reference's Generator.synthesize on this path: RGB [N, 3, H, W], contiguous."""
    coords = None if coords is None else coords.to(local_latent.dtype)
    return walk.synthesize(cfg, ExactOps(prepared), local_latent, coords, noises).contiguous()
