"""The InfinityGAN generator: mapping network, structure synthesizer (SS), padding-free
texture synthesizer (TS), exactly as the official code computes them
(shared/docs/official-generator.md, sections 3-5).

Module and parameter names mirror the official ones, so official state dicts load by key.
Buffers the official model carries but never uses (blur kernels, the ToRGB upsample
kernels, `const_z`, `noises.noise_*`) are not registered here; the checkpoint loader
checks and drops them.

Speed structure: everything that depends only on the style (modulation, demodulation,
the equalized-lr scales) is folded into per-image weights once by `prepare()`; the
per-tile work `synthesize()` then runs plain valid convolutions on those weights.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import determinism, ops, walk  # determinism: MKL's reproducible mode before torch computes
from .config import GeneratorConfig
from .errors import RequestError
from .latent import official_coords

W_AVG_SAMPLES = 10_000  # z samples of the mean style (truncation)
W_AVG_SEED = 0


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + ops.EPS)


class EqualLinear(nn.Module):
    """Linear layer with the equalized learning rate applied at run time."""

    def __init__(self, in_dim: int, out_dim: int, *, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activate:
            out = F.linear(x, self.weight * self.scale) + self.bias * self.lr_mul
            return F.leaky_relu(out, ops.LRELU_SLOPE) * ops.SQRT2
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated conv; `fold(style)` gives the per-image effective weights."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, style_dim: int, *,
                 demodulate: bool = True, upsample: bool = False):
        super().__init__()
        if upsample and kernel != 3:
            raise ValueError("the padding-free upsampling conv is 3x3")  # internal invariant
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel, kernel))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.demodulate = demodulate
        self.upsample = upsample

    def fold(self, style: torch.Tensor) -> torch.Tensor:
        """style [B, style_dim] -> folded weights [B, out, in, k, k] (official op order)."""
        s = self.modulation(style)
        w = self.scale * self.weight * s[:, None, :, None, None]
        if self.demodulate:
            w = w * torch.rsqrt(w.pow(2).sum([2, 3, 4]) + ops.EPS)[:, :, None, None, None]
        return w

    def spatial(self, style: torch.Tensor) -> "SpatialLayer":
        """For per-pixel styles: style [1, style_dim] -> its modulation s [in] (the same
        op as in `fold`), the shared kernel scale * W and, with demodulation, wsq [in, out]
        = sum over taps of (scale * W)^2."""
        w = self.scale * self.weight[0]
        # [in, out] with `in` contiguous: the kernels' TF32 demodulation GEMM reads it K-major
        wsq = w.pow(2).sum([2, 3]).t() if self.demodulate else None
        return SpatialLayer(w, wsq, self.modulation(style)[0])

    def run(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x [N, in, H, W] with one image's folded weights w [out, in, k, k]."""
        return ops.upconv2d(x, w) if self.upsample else ops.conv2d_valid(x, w)


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))


class StyledConv(nn.Module):
    """Modulated conv -> noise (scalar strength) -> bias -> leaky ReLU * sqrt(2)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, style_dim: int, *,
                 upsample: bool = False, use_noise: bool = True):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, kernel, style_dim, upsample=upsample)
        self.noise = NoiseInjection() if use_noise else None
        self.activate = FusedLeakyReLU(out_ch)

    def run(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        x = self.conv.run(x, w)
        if self.noise is not None and noise is not None:
            x.add_(self.noise.weight.to(x.dtype) * noise)
        return ops.bias_lrelu_(x, self.activate.bias.to(x.dtype))


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) + bias + the upsampled, cropped skip."""

    def __init__(self, in_ch: int, style_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def run(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        rgb = ops.conv2d_valid(x, w) + self.bias.to(x.dtype)
        if skip is not None:
            rgb = rgb + ops.crop_to(ops.upsample_linear(skip), rgb.shape[2], rgb.shape[3])
        return rgb


class ConditionalBlock(nn.Module):
    """One SS layer (the official name, kept for the state-dict keys)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, style_dim: int):
        super().__init__()
        self.conv = StyledConv(in_ch, out_ch, kernel, style_dim, use_noise=False)


class ImplicitFunction(nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        c = cfg.local_latent_dim
        self.conv_stack = nn.ModuleList(
            ConditionalBlock(c + cfg.coord_num_dir, c, cfg.ss_kernel, cfg.global_latent_dim)
            for _ in range(cfg.ss_n_layers))


class StructureSynthesizer(nn.Module):
    """Valid (2r+1)^2 modulated convs over [z_l, coords], conditioned on the raw z_g."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.implicit_model = ImplicitFunction(cfg)
        self.radius = cfg.ss_unfold_radius

    @property
    def layers(self) -> list[StyledConv]:
        return [block.conv for block in self.implicit_model.conv_stack]


class TextureSynthesizer(nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        d = cfg.global_latent_dim
        self.mapping = nn.Sequential(
            PixelNorm(), *[EqualLinear(d, d, lr_mul=cfg.lr_mlp, activate=True) for _ in range(cfg.n_mlp)])
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        c_in = cfg.local_latent_dim
        for c_out in cfg.stage_channels:
            self.convs.append(StyledConv(c_in, c_out, 3, d, upsample=True))
            self.convs.append(StyledConv(c_out, c_out, 3, d))
            self.to_rgbs.append(ToRGB(c_out, d))
            c_in = c_out


@dataclass
class Prepared:
    """Per-image folded weights: everything of a forward pass that depends on the style."""

    ss: list[torch.Tensor]  # [out, in, k, k] per SS layer
    convs: list[torch.Tensor]  # [out, in, 3, 3] per TS conv
    rgbs: list[torch.Tensor]  # [3, in, 1, 1] per ToRGB

    def to(self, device=None, dtype=None) -> "Prepared":
        def mv(ts):
            return [t.to(device=device, dtype=dtype) for t in ts]
        return Prepared(mv(self.ss), mv(self.convs), mv(self.rgbs))


@dataclass
class SpatialLayer:
    """One conv of the spatial-style path: shared kernel, demodulation table, each style's s."""

    weight: torch.Tensor  # scale * W [out, in, k, k]
    wsq: torch.Tensor | None  # [in, out], None without demodulation (ToRGB)
    s: torch.Tensor  # [in] for one style; stacked [S, in] over the styles
    _packed: object = field(default=None, repr=False, compare=False)

    def packed(self, upsample: bool = False):
        """The weight in the Triton kernels' layout (the four polyphase kernels when
        upsampling), computed on first use: it is the same for every batch of the image."""
        if self._packed is None:
            from igan.kernels.conv import pack_weight
            from igan.kernels.upsample import phase_weights

            w = self.weight
            self._packed = [pack_weight(p) for p in phase_weights(w)] if upsample else pack_weight(w)
        return self._packed

    def to(self, device=None, dtype=None) -> "SpatialLayer":
        return SpatialLayer(self.weight.to(device=device, dtype=dtype),
                            None if self.wsq is None else self.wsq.to(device), self.s.to(device))


@dataclass
class SpatialPrepared:
    """Per-canvas weights of the spatial-style path (style fusion): S styles per layer."""

    ss: list[SpatialLayer]
    convs: list[SpatialLayer]
    rgbs: list[SpatialLayer]
    noise_strengths: list[float]

    def to(self, device=None, dtype=None) -> "SpatialPrepared":
        def mv(ls):
            return [layer.to(device, dtype) for layer in ls]
        return SpatialPrepared(mv(self.ss), mv(self.convs), mv(self.rgbs), self.noise_strengths)


def _stack(layers: list[SpatialLayer]) -> SpatialLayer:
    return SpatialLayer(layers[0].weight, layers[0].wsq, torch.stack([layer.s for layer in layers]))


def _mix(maps: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Per-pixel modulation sum_i m_i s_i: maps [N, S, h, w], s [S, C] -> [N, C, h, w]
    (float32; channels-last on a GPU, where the kernels read it per pixel). Summed in style
    order, elementwise: the bits of a pixel do not depend on the batch or the window."""
    ct = torch.promote_types(s.dtype, torch.float32)
    maps, s = maps.to(ct), s.to(ct)[:, None, :, None, None]  # s: [S, 1, C, 1, 1]
    out = maps[:, 0:1] * s[0]
    for i in range(1, maps.shape[1]):
        out += maps[:, i:i + 1] * s[i]  # mul, then add: no FMA, whose use varies by code path
    from igan.kernels import tracing

    on_gpu = maps.device.type != "cpu" or tracing()
    return out.contiguous(memory_format=torch.channels_last) if on_gpu else out


def _spatial_conv(x: torch.Tensor, sp: SpatialLayer, style: torch.Tensor, noise: torch.Tensor | None,
                  upsample: bool, impl: str, **kw) -> torch.Tensor:
    """One TS conv of the spatial path. The torch reference on CPU runs in bands of rows, so
    its im2col scratch stays near ops._CPU_BAND_BYTES (as in the plain path) whatever the tile
    size; every output row is computed from its own inputs, so the bits are the same."""
    from igan.kernels import use_triton
    from igan.kernels.conv import fused_conv
    from igan.kernels.upsample import fused_upconv

    fn = fused_upconv if upsample else fused_conv
    n, c, h, w = x.shape
    row_bytes = max(c, sp.weight.shape[0]) * 9 * w * 4
    t = max(1, ops._CPU_BAND_BYTES // row_bytes)  # input rows per band
    fast = use_triton(impl, x.device)
    if fast:
        kw["phases" if upsample else "packed"] = sp.packed(upsample)
    if fast or x.device.type != "cpu" or t + 2 >= h:
        return fn(x, sp.weight, style=style, wsq=sp.wsq, noise=noise, impl=impl, **kw)
    out_h = 2 * h - 3 if upsample else h - 2
    out = x.new_empty(n, sp.weight.shape[0], out_h, 2 * w - 3 if upsample else w - 2)
    a = 0
    while True:
        e = min(h, a + t + 2)
        o0, o1 = (2 * a, 2 * e - 3) if upsample else (a, e - 2)  # the band's output rows
        y = fn(x[:, :, a:e], sp.weight, style=style[:, :, a:e], wsq=sp.wsq,
               noise=None if noise is None else noise[:, :, o0:o1], impl=impl, **kw)
        stop = o1 if e == h else (2 * (a + t) if upsample else a + t)
        out[:, :, o0:stop] = y[:, :, :stop - o0]
        if e == h:
            return out
        a += t


class FoldedOps:
    """The torch reference's layers (walk.Ops): one image's style folded into its weights."""

    def __init__(self, model: "Generator", prepared: Prepared):
        self.model, self.prepared = model, prepared

    def ss_layer(self, l, x, coords, offset):
        c = walk.crop(coords, offset)
        layer = self.model.structure_synthesizer.layers[l]
        return layer.run(torch.cat([x, c.expand(x.shape[0], -1, -1, -1)], 1), self.prepared.ss[l], None)

    def conv(self, i, x, noise):
        return self.model.texture_synthesizer.convs[i].run(x, self.prepared.convs[i], noise)

    def to_rgb(self, k, x, skip):
        return self.model.texture_synthesizer.to_rgbs[k].run(x, self.prepared.rgbs[k], skip)


class SpatialOps:
    """The spatial-style path's layers (walk.Ops): activations modulated per pixel by the
    style maps' mix, demodulated per pixel; the torch reference or the fused kernels."""

    def __init__(self, model: "Generator", prepared: SpatialPrepared, maps, impl: str, device: torch.device):
        from igan.kernels import use_triton

        self.model, self.prepared, self.maps, self.impl = model, prepared, maps, impl
        self.fast = use_triton(impl, device)

    def ss_layer(self, l, x, coords, offset):
        from igan.kernels.conv import fused_conv

        sp = self.prepared.ss[l]
        m = walk.crop(self.maps.ss, offset)
        return fused_conv(x, sp.weight, coords=coords, coords_offset=offset, style=_mix(m, sp.s), wsq=sp.wsq,
                          bias=self.model.structure_synthesizer.layers[l].activate.bias, act=True, impl=self.impl,
                          packed=sp.packed() if self.fast else None)

    def conv(self, i, x, noise):
        sp = self.prepared.convs[i]
        return _spatial_conv(x, sp, _mix(self.maps.convs[i], sp.s), None if noise is None else noise.to(x.dtype),
                             i % 2 == 0, self.impl, bias=self.model.texture_synthesizer.convs[i].activate.bias,
                             act=True, noise_strength=self.prepared.noise_strengths[i])

    def to_rgb(self, k, x, skip):
        from igan.kernels.conv import fused_conv

        rp = self.prepared.rgbs[k]
        return fused_conv(x, rp.weight, style=_mix(self.maps.rgbs[k], rp.s),
                          bias=self.model.texture_synthesizer.to_rgbs[k].bias.view(-1), skip=skip,
                          out_dtype=torch.promote_types(x.dtype, torch.float32), impl=self.impl,
                          packed=rp.packed() if self.fast else None)


class Generator(nn.Module):
    """InfinityGAN generator. `prepare` once per image, then `synthesize` any latent window."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.config = cfg
        self.structure_synthesizer = StructureSynthesizer(cfg) if cfg.use_ss else None
        self.texture_synthesizer = TextureSynthesizer(cfg)

    def mapping(self, z_global: torch.Tensor) -> torch.Tensor:
        """z_g [B, D] -> w [B, D]."""
        return self.texture_synthesizer.mapping(z_global)

    def w_avg(self) -> torch.Tensor:
        """The mean style, for truncation: mapping(z) averaged over W_AVG_SAMPLES fixed z
        (torch's CPU generator seeded W_AVG_SEED), computed once on a float32 CPU copy of the
        mapping, so it is the same on every device. Official checkpoints carry no average;
        StyleGAN's running w_avg is an estimate of the same mean."""
        cached = self.__dict__.get("_w_avg")
        if cached is None:
            z = torch.randn(W_AVG_SAMPLES, self.config.global_latent_dim,
                            generator=torch.Generator().manual_seed(W_AVG_SEED))
            mapping = copy.deepcopy(self.texture_synthesizer.mapping).float().cpu()
            with torch.no_grad():
                cached = mapping(z).mean(0)
            self.__dict__["_w_avg"] = cached
        return cached

    def prepare(self, z_global: torch.Tensor, styles: torch.Tensor | None = None, trunc: float = 1.0) -> Prepared:
        """Fold one image's styles into the weights.

        z_global: [D] or [1, D], the raw z_g (the SS is conditioned on it directly).
        styles: optional W ([D] / [1, D]) or W+ ([n_latent, D] / [1, n_latent, D]) for the TS;
        by default w = mapping(z_g) in every slot, truncated towards w_avg() by `trunc` (1: none).
        """
        z, slots = self._style_slots(z_global, styles, trunc)
        cfg = self.config
        ts = self.texture_synthesizer
        ss = [] if self.structure_synthesizer is None else [
            layer.conv.fold(z)[0] for layer in self.structure_synthesizer.layers]
        convs = [conv.conv.fold(slots[i:i + 1])[0] for i, conv in enumerate(ts.convs)]
        rgbs = [rgb.conv.fold(slots[cfg.torgb_slot(k)][None])[0] for k, rgb in enumerate(ts.to_rgbs)]
        return Prepared(ss, convs, rgbs)

    def _style_slots(self, z_global: torch.Tensor, styles: torch.Tensor | None, trunc: float = 1.0):
        """(z [1, D], the TS style of every slot [n_latent, D]). Truncation applies to
        mapping(z_g) only: explicit styles (inversion records) are used as given, and the
        structure synthesizer keeps the raw z_g it is conditioned on."""
        cfg = self.config
        z = z_global.reshape(1, -1)
        if z.shape[1] != cfg.global_latent_dim:
            raise RequestError(f"z_global has {z.shape[1]} values, the model expects {cfg.global_latent_dim}")
        if styles is None:
            w = self.mapping(z)
            if trunc != 1.0:
                w = torch.lerp(self.w_avg().to(w), w, float(trunc))  # w_avg + trunc (w - w_avg)
            slots = w.expand(cfg.n_latent, -1)
        else:
            slots = styles.reshape(-1, cfg.global_latent_dim)
            if slots.shape[0] == 1:
                slots = slots.expand(cfg.n_latent, -1)
            if slots.shape[0] != cfg.n_latent:
                raise RequestError(f"styles must be [D] or [{cfg.n_latent}, D], got {tuple(styles.shape)}")
        return z, slots

    def prepare_spatial(self, latents: list[tuple[torch.Tensor, torch.Tensor | None]],
                        trunc: float = 1.0) -> SpatialPrepared:
        """Per-layer modulations of S styles (z_g [D], W / W+ or None for mapping(z_g)), for
        `synthesize_spatial`. Each style's s is computed exactly as `prepare` computes it."""
        cfg = self.config
        ts = self.texture_synthesizer
        per_style = []
        for z_global, styles in latents:
            z, slots = self._style_slots(z_global, styles, trunc)
            ss = [] if self.structure_synthesizer is None else [
                layer.conv.spatial(z) for layer in self.structure_synthesizer.layers]
            convs = [conv.conv.spatial(slots[i:i + 1]) for i, conv in enumerate(ts.convs)]
            rgbs = [rgb.conv.spatial(slots[cfg.torgb_slot(k)][None]) for k, rgb in enumerate(ts.to_rgbs)]
            per_style.append((ss, convs, rgbs))
        merged = [[_stack(list(layers)) for layers in zip(*(p[j] for p in per_style))] for j in range(3)]
        strengths = [float(conv.noise.weight) if conv.noise is not None else 0.0 for conv in ts.convs]
        return SpatialPrepared(*merged, strengths)

    def synthesize_spatial(self, prepared: SpatialPrepared, local_latent: torch.Tensor, coords: torch.Tensor | None,
                           noises: list[torch.Tensor | None], maps, impl: str = "ref") -> torch.Tensor:
        """`synthesize` with per-pixel styles: maps (fusion.StyleMaps, batched [N, S, h, w])
        weight the S styles on the SS input grid and on each TS conv's and ToRGB's input grid;
        activations are modulated per pixel and demodulated per pixel (official spatial-style
        path, section 3.6). impl: "ref" (torch) or "triton"/"auto" (the fused kernels)."""
        ops = SpatialOps(self, prepared, maps, impl, local_latent.device)
        if coords is not None:
            coords = coords.to(local_latent.dtype).expand(local_latent.shape[0], -1, -1, -1)
        return walk.synthesize(self.config, ops, local_latent, coords, noises)

    def synthesize(self, prepared: Prepared, local_latent: torch.Tensor, coords: torch.Tensor | None,
                   noises: list[torch.Tensor | None]) -> torch.Tensor:
        """One image's latent window(s) -> RGB.

        local_latent [N, C, Hz, Wz]; coords [N or 1, ncoord, Hz, Wz] (None without SS);
        noises: one [N, 1, h_i, w_i] tensor (or None for no noise) per TS conv.
        Returns [N, 3, 2^U (Hz - 2 halo - 5) + 5, ...].
        """
        if coords is not None:
            coords = coords.to(local_latent.dtype)
        return walk.synthesize(self.config, FoldedOps(self, prepared), local_latent, coords, noises)

    def forward(self, global_latent: torch.Tensor, local_latent: torch.Tensor,
                coords: torch.Tensor | None = None, noises: list[torch.Tensor | None] | None = None,
                styles: torch.Tensor | None = None) -> torch.Tensor:
        """Official-style batch forward: sample b uses global_latent[b] (slot 0 of a
        [B, K, D] tensor, as the official model does in eval), local_latent[b], coords
        (default: the official test grid of the window) and noises (default: none)."""
        z = global_latent[:, 0] if global_latent.dim() == 3 else global_latent
        b = z.shape[0]
        if coords is None and self.structure_synthesizer is not None:
            coords = official_coords(self.config, local_latent.shape[2], local_latent.shape[3])[None]
        noises = noises if noises is not None else [None] * self.config.num_convs
        outs = []
        for k in range(b):
            prepared = self.prepare(z[k], None if styles is None else styles[k])
            c = None if coords is None else coords[k:k + 1] if coords.shape[0] == b else coords
            nk = [None if n is None else n[k:k + 1] for n in noises]
            outs.append(self.synthesize(prepared, local_latent[k:k + 1], c, nk))
        return torch.cat(outs)
