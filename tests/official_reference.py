"""An independent re-statement of the official InfinityGAN inference math, for tests.

Written from shared/docs/official-generator.md (sections 3-8), NOT from igan's engine:
it works on an official-format state dict (official key names, buffers included), uses
the official formulation (per-sample folded weights in a grouped conv, a true transposed
conv followed by a crop and a depthwise blur, the ToRGB skip through a transposed conv),
and reproduces the official patch-by-patch "infinite" generation with its meta canvas.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SQRT2 = math.sqrt(2)


def _equal_linear(x, sd, prefix, lr_mul=1.0, act=False):
    w, b = sd[prefix + ".weight"], sd[prefix + ".bias"]
    out = F.linear(x, w * (lr_mul / math.sqrt(w.shape[1])))
    if act:
        return F.leaky_relu(out + b * lr_mul, 0.2) * SQRT2
    return out + b * lr_mul


def _blur_kernel(factor):
    k = torch.tensor([1.0, 2.0, 1.0])
    k = k[:, None] * k[None, :]
    return k / k.sum() * factor**2


def _modconv(x, style, sd, prefix, demod=True, upsample=False):
    weight = sd[prefix + ".weight"]  # (1, O, C, k, k)
    _, o, c, k, _ = weight.shape
    b, _, h, w = x.shape
    s = _equal_linear(style, sd, prefix + ".modulation").view(b, 1, c, 1, 1)
    wt = (1 / math.sqrt(c * k * k)) * weight * s
    if demod:
        wt = wt * torch.rsqrt(wt.pow(2).sum([2, 3, 4]) + 1e-8).view(b, o, 1, 1, 1)
    if upsample:
        wt = wt.view(b, o, c, k, k).transpose(1, 2).reshape(b * c, o, k, k)
        out = F.conv_transpose2d(x.reshape(1, b * c, h, w), wt, stride=2, padding=0, groups=b)
        out = out.view(b, o, out.shape[2], out.shape[3])[:, :, 1:-1, 1:-1]
        kern = _blur_kernel(2).flip([0, 1]).expand(o, 1, 3, 3)
        return F.conv2d(out, kern, groups=o)
    out = F.conv2d(x.reshape(1, b * c, h, w), wt.view(b * o, c, k, k), groups=b)
    return out.view(b, o, out.shape[2], out.shape[3])


def _styled_conv(x, style, sd, prefix, noise=None, upsample=False):
    out = _modconv(x, style, sd, prefix + ".conv", upsample=upsample)
    if noise is not None and prefix + ".noise.weight" in sd:
        out = out + sd[prefix + ".noise.weight"] * noise
    bias = sd[prefix + ".activate.bias"].view(1, -1, 1, 1)
    return F.leaky_relu(out + bias, 0.2) * SQRT2


def _upsample_skip(x):
    b, c, h, w = x.shape
    kern = _blur_kernel(2)[None, None]
    out = F.conv_transpose2d(x.reshape(b * c, 1, h, w), kern, stride=2)
    return out.view(b, c, out.shape[2], out.shape[3])[:, :, 1:-1, 1:-1]


def _center_crop(x, h, w):
    dh, dw = (x.shape[2] - h) // 2, (x.shape[3] - w) // 2
    return x[:, :, dh:dh + h, dw:dw + w]


def official_forward(sd, *, global_latent, local_latent, override_coords, noises, n_mlp, ss_layers,
                     ss_radius, num_convs):
    """g_ema(global_latent=(B,2,D), local_latent, override_coords, noises, disable_dual_latents=True)
    in eval mode: the SS sees the raw z_g slot 0, the TS the mapped slot 0 in every slot."""
    z = global_latent[:, 0]
    x = local_latent
    for l in range(ss_layers):
        crop = (override_coords.shape[2] - x.shape[2]) // 2
        c = override_coords[:, :, crop:override_coords.shape[2] - crop, crop:override_coords.shape[3] - crop]
        x = _styled_conv(torch.cat([x, c], 1), z, sd,
                         f"structure_synthesizer.implicit_model.conv_stack.{l}.conv")
    w = z * torch.rsqrt(torch.mean(z**2, dim=1, keepdim=True) + 1e-8)
    for j in range(1, n_mlp + 1):
        w = _equal_linear(w, sd, f"texture_synthesizer.mapping.{j}", lr_mul=0.01, act=True)
    skip = None
    for i in range(num_convs):
        x = _styled_conv(x, w, sd, f"texture_synthesizer.convs.{i}", noises[i], upsample=i % 2 == 0)
        if i % 2 == 1:
            rgb = _modconv(x, w, sd, f"texture_synthesizer.to_rgbs.{i // 2}.conv", demod=False)
            rgb = rgb + sd[f"texture_synthesizer.to_rgbs.{i // 2}.bias"]
            if skip is not None:
                rgb = rgb + _center_crop(_upsample_skip(skip), rgb.shape[2], rgb.shape[3])
            skip = rgb
    return skip


def ts_out_sizes(n, num_convs):
    sizes = []
    for i in range(num_convs):
        n = 2 * n - 3 if i % 2 == 0 else n - 2
        sizes.append(n)
    return sizes


def official_coords(h, w, ts_input=11, v=10, cut=3.0, period_cols=139):
    """coord_handler test grid, op by op in float32 (official-generator.md 6.2)."""
    x = torch.arange(h, dtype=torch.float32)
    x = x / (ts_input + v - 1)
    x = x - (x[-1] - 1) / 2
    x = (2 * x - 1) * cut
    y = torch.arange(w, dtype=torch.float32) / period_cols
    y = 2 * y - 1
    grid = torch.stack([torch.tanh(x)[:, None].expand(h, w), torch.cos(math.pi * y)[None].expand(h, w),
                        torch.sin(math.pi * y)[None].expand(h, w)])
    return grid[None]


def infinite_geometry(height, width, patch_size, ts_input, num_convs, extra_pad=3):
    """BaseTestManager + InfiniteGenerationManager geometry (official-generator.md 8.1-8.3)."""
    single = ts_out_sizes(ts_input, num_convs)
    doubled = ts_out_sizes(2 * ts_input, num_convs)
    disps = [d - s for d, s in zip(doubled, single)]
    unit = disps[-1] // ts_input
    pix_step = (patch_size // unit) * unit
    lat_step = pix_step // unit
    out_steps = [lat_step * d // ts_input for d in disps]
    steps_h = math.ceil((height - patch_size) / pix_step) + extra_pad
    steps_w = math.ceil((width - patch_size) / pix_step) + extra_pad
    return dict(single=single, out_steps=out_steps, pix_step=pix_step, lat_step=lat_step,
                steps_h=steps_h, steps_w=steps_w,
                meta_h=pix_step * (steps_h - 1) + patch_size, meta_w=pix_step * (steps_w - 1) + patch_size)


def infinite_generation(sd, geo, *, z_g, z_l_meta, noises_meta, coords_meta, height, width, fwd_kwargs):
    """Patch-by-patch generation over the meta canvas, then the centre crop."""
    ss_size = z_l_meta.shape[2] - geo["lat_step"] * (geo["steps_h"] - 1)
    meta = torch.empty(1, 3, geo["meta_h"], geo["meta_w"])
    for a in range(geo["steps_h"]):
        for b in range(geo["steps_w"]):
            r, c = geo["lat_step"] * a, geo["lat_step"] * b
            noises = [n[:, :, s * a:s * a + size, s * b:s * b + size]
                      for n, s, size in zip(noises_meta, geo["out_steps"], geo["single"])]
            out = official_forward(sd, global_latent=z_g, local_latent=z_l_meta[:, :, r:r + ss_size, c:c + ss_size],
                                   override_coords=coords_meta[:, :, r:r + ss_size, c:c + ss_size],
                                   noises=noises, **fwd_kwargs)
            p = geo["pix_step"]
            meta[:, :, p * a:p * a + out.shape[2], p * b:p * b + out.shape[3]] = out
    oy, ox = (geo["meta_h"] - height) // 2, (geo["meta_w"] - width) // 2
    return meta[:, :, oy:oy + height, ox:ox + width], (oy, ox)
