"""The fast CPU path: oneDNN convolutions on channels-last activations, the default on CPU.

The bit-exact path (determinism.py: im2col + GEMM with MKL in strict mode, `--bit-exact`)
computes every output value with the same operations whatever the size of the tile around
it, so a window renders to the same bytes in any tiling, on any number of workers. It pays
for that: on the project's 2-core machine it runs the 512-channel 3x3 conv of the default
config at 56-111 GFLOP/s, where oneDNN's direct convolutions on channels-last tensors run
the same conv at 138-166 (benchmarks/cpu_conv_paths.py). oneDNN picks its kernels by shape
and instruction set, so this path keeps determinism where users feel it instead:

- The same command gives the same bytes (on the same CPU): oneDNN's convolutions are
  deterministic for a given shape, and nothing here depends on timing or thread scheduling.
- Every tile of a render runs the same algorithm: the planner gives every tile one compute
  shape (edge tiles are computed at full size and cropped) and the renderer pads a short
  last batch to the full batch size (`pads_batches`), so every forward has the same shapes.
- Seams stay invisible: a pixel differs from the bit-exact path's only by float rounding
  (a few 1e-6), so neighbouring tiles agree to that and the 8-bit bytes agree but for a
  rare rounding-boundary pixel (tests/test_fastcpu.py measures both at tile borders).

The layers are those of the reference (walk.Ops), with the style folded into the weights
once per image (`prepare`); what differs is only how each conv is computed: oneDNN's
direct convolution (bias in its epilogue) instead of im2col + GEMM, the upsampling conv as
one stride-2 transposed convolution instead of four polyphase convs, and activations kept
channels-last from the first layer to the last so no conv reorders its input.
The spatial-style path (style fusion, 360-degree panoramas) stays on the reference path.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import ops, walk

CL = torch.channels_last


@dataclass
class FastPrepared:
    """One image's folded weights in the layouts oneDNN reads without a reorder of the input."""

    ss: list[torch.Tensor]  # [out, in, k, k], channels-last
    convs: list[torch.Tensor]  # 3x3 convs: [out, in, 3, 3]; upsampling convs: [in, out, 3, 3] (transposed conv)
    rgbs: list[torch.Tensor]  # [3, in, 1, 1]
    ss_bias: list[torch.Tensor]
    conv_bias: list[torch.Tensor]
    rgb_bias: list[torch.Tensor]  # [3]
    noise_strengths: list[float]


def prepare(model, prepared) -> FastPrepared:
    """The fast path's weights from the reference's folded ones (engine/model.py, Prepared)."""
    ts = model.texture_synthesizer
    dtype = prepared.convs[0].dtype
    ss_layers = model.structure_synthesizer.layers if model.structure_synthesizer is not None else []
    return FastPrepared(
        ss=[w.contiguous(memory_format=CL) for w in prepared.ss],
        convs=[(w.transpose(0, 1) if i % 2 == 0 else w).contiguous(memory_format=CL)
               for i, w in enumerate(prepared.convs)],
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
            y = F.conv2d(x, self.p.convs[i], self.p.conv_bias[i])
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
