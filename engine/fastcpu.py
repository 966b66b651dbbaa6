"""The 0.4 fast CPU path (`--cpu-path fast-0.4`): oneDNN and Winograd convolutions on
channels-last activations, the default on CPU of igan 0.3-0.4 (since 0.5 the default is
engine/exactcpu.py, as fast and the same bytes under any split).

The bit-exact path (determinism.py: im2col + GEMM with MKL in strict mode, `--cpu-path reference`)
computes every output value with the same operations whatever the size of the tile around
it, so a window renders to the same bytes in any tiling, on any number of workers. It pays
for that: on the project's 2-core machine it renders the default config at 100-110 GFLOP/s.
This path computes the same layers faster (benchmarks/cpu_paths.py):
- the texture synthesizer's wide 3x3 convs (at least 128 channels in and out) as Winograd
  F(2x2, 3x3): 16 batched GEMMs on 4x4 input tiles, 2.25x fewer multiplies than a direct conv,
  and closer to a float64 conv than oneDNN's direct one (float32 sums of fewer terms);
- the other convs with oneDNN's direct convolutions, the bias in their epilogue;
- the upsampling conv as one stride-2 transposed convolution instead of four polyphase convs;
- activations channels-last from the first layer to the last, so no conv reorders its input.

oneDNN and the Winograd tiling see a tile's shape, so this path keeps determinism where users
feel it instead of across tilings:
- The same command gives the same bytes: every kernel here is deterministic for a given shape
  and thread count, and nothing depends on timing or thread scheduling. Across CPUs too, on
  every x86-64 CPU with AVX2: oneDNN and MKL choose kernels by the CPU's instruction sets, and
  igan holds both to their AVX2 branch (engine/cpu.py::PINS; measured: an AVX-512 EPYC gives an
  AVX2 machine's bytes with the pins, other ones without, benchmarks/results/cpu-pins-*.md).
  oneDNN blocks its loops by the thread count, so another split of the render (--workers,
  torchrun ranks, --threads) may change the last bits of a value (its 1x1 RGB convs do).
- Every tile of a render runs the same algorithm: the planner gives every tile one compute
  shape (edge tiles are computed at full size and cropped) and the renderer pads a short
  last batch to the full batch size (`pads_batches`), so every forward has the same shapes.
- Seams stay invisible: a pixel differs from the bit-exact path's only by float32 rounding,
  so neighbouring tiles agree to that and 8-bit values differ by at most one level on a rare
  pixel at a rounding boundary (tests/test_fastcpu.py measures both at tile borders).

The spatial-style path (style fusion) and GAN inversion stay on the reference path.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import ops, walk
from .exactcpu import winograd_input_twin, winograd_output_twin, winograd_weight

CL = torch.channels_last


@dataclass
class FastPrepared:
    """One image's folded weights in the layouts oneDNN reads without a reorder of the input."""

    ss: list[torch.Tensor]  # [out, in, k, k], channels-last
    convs: list[torch.Tensor]  # upsampling: [in, out, 3, 3] (transposed conv); 3x3: see _conv_weight
    rgbs: list[torch.Tensor]  # [3, in, 1, 1]
    ss_bias: list[torch.Tensor]
    conv_bias: list[torch.Tensor]
    rgb_bias: list[torch.Tensor]  # [3]
    noise_strengths: list[float]


def _conv_weight(i: int, w: torch.Tensor) -> torch.Tensor:
    """TS conv i's weight as its fast path reads it: the transposed conv's [in, out, 3, 3]
    (even i), Winograd's [16, in, out] for a wide 3x3 conv, else channels-last [out, in, 3, 3]."""
    if i % 2 == 0:
        return w.transpose(0, 1).contiguous(memory_format=CL)
    if min(w.shape[0], w.shape[1]) >= WINOGRAD_MIN_CHANNELS:
        return winograd_weight(w)
    return w.contiguous(memory_format=CL)


def prepare(model, prepared) -> FastPrepared:
    """The fast path's weights from the reference's folded ones (engine/model.py, Prepared)."""
    ts = model.texture_synthesizer
    dtype = prepared.convs[0].dtype
    ss_layers = model.structure_synthesizer.layers if model.structure_synthesizer is not None else []
    return FastPrepared(
        ss=[w.contiguous(memory_format=CL) for w in prepared.ss],
        convs=[_conv_weight(i, w) for i, w in enumerate(prepared.convs)],
        rgbs=[w.contiguous(memory_format=CL) for w in prepared.rgbs],
        ss_bias=[layer.activate.bias.detach().to(dtype) for layer in ss_layers],
        conv_bias=[conv.activate.bias.detach().to(dtype) for conv in ts.convs],
        rgb_bias=[rgb.bias.detach().view(-1).to(dtype) for rgb in ts.to_rgbs],
        noise_strengths=[float(conv.noise.weight) if conv.noise is not None else 0.0 for conv in ts.convs])


@contextlib.contextmanager
def onednn_convs():
    """CPU convolutions through oneDNN (whatever the caller set), fp32 computed as fp32."""
    saved = torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(True)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(saved)


# Winograd F(2x2, 3x3) (Lavin & Gray 2016): a 3x3 conv as 16 GEMMs on 4x4 input tiles with
# stride 2, 2.25x fewer multiplies than the direct conv. Used for the texture synthesizer's 3x3
# convs where both channel counts are at least WINOGRAD_MIN_CHANNELS (measured on the 2-core
# CPU: 1.5-1.8x oneDNN's direct conv at 512 channels; slower than it at 64).
WINOGRAD_MIN_CHANNELS = 128
_WINOGRAD_BAND_BYTES = 32 << 20  # the transformed input of one band of tile rows


def winograd_conv3x3(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Valid 3x3 conv of x [N, in, H, W] (channels-last) with winograd_weight's u, plus
    bias: [N, out, H - 2, W - 2], channels-last. Input tiles d (4x4, stride 2) become
    V = B^T d B, then M = V U per tile position (one batched GEMM of 16), then the 2x2
    outputs Y = A^T M A; done in bands of tile rows so the scratch stays bounded. The
    transforms are the exact path's torch ones (exactcpu), on this path's bands."""
    n, c, h, w = x.shape
    o = u.shape[2]
    ho, wo = h - 2, w - 2
    th, tw = (ho + 1) // 2, (wo + 1) // 2
    xh = x.permute(0, 2, 3, 1)
    if not xh.is_contiguous():
        xh = xh.contiguous()
    if 2 * th + 2 > h or 2 * tw + 2 > w:  # odd output: one more (zero) input row/column
        xh = F.pad(xh, (0, 0, 0, 2 * tw + 2 - w, 0, 2 * th + 2 - h))
    out = x.new_empty(n, ho, wo, o)
    s_n, s_h, s_w, _ = xh.stride()
    rows = max(1, _WINOGRAD_BAND_BYTES // (16 * tw * max(c, o) * x.element_size() * n))
    rows = min(rows, th)
    tb, vb = x.new_empty(4, n, rows, tw, 4, c), x.new_empty(4, 4, n, rows, tw, c)
    tmp = x.new_empty(n, rows, tw, o)
    for r0 in range(0, th, rows):
        r = min(rows, th - r0)
        v = vb[:, :, :, :r]
        winograd_input_twin(xh, s_n, s_h, s_w, r0, r, tw, tb, v)
        m = torch.bmm(v.reshape(16, -1, c), u).view(4, 4, n, r, tw, o)
        winograd_output_twin(m, bias, out, r0, r, tmp)
    return out.permute(0, 3, 1, 2)


def _lrelu_(x: torch.Tensor) -> torch.Tensor:
    """sqrt(2) * leaky_relu(x, 0.2), in place (the bias is already in x)."""
    return F.leaky_relu_(x, ops.LRELU_SLOPE).mul_(ops.SQRT2)


class FastOps:
    """The fast CPU path's layers (walk.Ops) on one image's FastPrepared weights."""

    def __init__(self, prepared: FastPrepared):
        self.p = prepared

    def ss_layer(self, l, x, coords, offset):
        c = walk.crop(coords, offset)
        x = torch.cat([x, c.expand(x.shape[0], -1, -1, -1)], 1).contiguous(memory_format=CL)
        return _lrelu_(F.conv2d(x, self.p.ss[l], self.p.ss_bias[l]))

    def conv(self, i, x, noise):
        if i % 2 == 0:  # stride-2 transposed 3x3 conv, crop 1, blur (ops.upconv2d)
            y = ops.blur3(F.conv_transpose2d(x, self.p.convs[i], stride=2)[..., 1:-1, 1:-1])
            if noise is not None and self.p.noise_strengths[i] != 0.0:
                y.add_(noise, alpha=self.p.noise_strengths[i])
            y.add_(self.p.conv_bias[i].view(1, -1, 1, 1))
        else:
            w = self.p.convs[i]
            y = (winograd_conv3x3(x, w, self.p.conv_bias[i]) if w.dim() == 3
                 else F.conv2d(x, w, self.p.conv_bias[i]))
            if noise is not None and self.p.noise_strengths[i] != 0.0:
                y.add_(noise, alpha=self.p.noise_strengths[i])
        return _lrelu_(y)

    def to_rgb(self, k, x, skip):
        rgb = F.conv2d(x, self.p.rgbs[k], self.p.rgb_bias[k])
        if skip is not None:
            rgb = rgb + ops.crop_to(ops.upsample_linear(skip), rgb.shape[2], rgb.shape[3])
        return rgb


def synthesize(cfg, prepared: FastPrepared, local_latent: torch.Tensor, coords: torch.Tensor | None,
               noises) -> torch.Tensor:
    """The reference's Generator.synthesize on the fast path: RGB [N, 3, H, W], contiguous."""
    with onednn_convs():
        x = local_latent.contiguous(memory_format=CL)
        coords = None if coords is None else coords.to(x.dtype)
        return walk.synthesize(cfg, FastOps(prepared), x, coords, noises).contiguous()
