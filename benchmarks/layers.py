"""The generator's layers as stand-alone benchmark cases, shared by the pytest-benchmark
suite (test_kernels.py) and the GPU report (gpu_report.py).

Each case runs one layer of the default InfinityGAN config on one image's tile in three
formulations:
- official: per-sample modulated weights in a grouped conv (groups = batch), the
  official code's formulation (a true transposed conv + blur for the upsampling layer);
- torch: igan's torch backend: folded weights, dense convs, separate epilogue ops;
- triton: the fused kernels (CUDA only; the CPU interpreter is not a speed reference).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from igan.engine import ops

# (name, kind, c_in, c_out, kernel): the layers that carry the default config's FLOPs.
LAYERS = [
    ("ss0 7x7 +coords", "ss", 256, 256, 7),
    ("conv6 upsample", "up", 512, 512, 3),
    ("conv7 3x3", "conv", 512, 512, 3),
    ("torgb3 +skip", "rgb", 512, 3, 1),
]


@dataclass
class Case:
    name: str
    kind: str
    flops: int
    run: dict  # formulation -> zero-argument callable
    with_config: object = None  # CUDA: BlockConfig -> the fused kernel with that config
    default: object = None  # CUDA: the BlockConfig the runner would pick for this layer


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device, rounds: int = 5, warmup: int = 1) -> float:
    """Best wall time of `rounds` calls, seconds (synchronised on CUDA)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    best = math.inf
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def matmul_peak(device, dtype, n: int | None = None) -> float:
    """Measured dense matmul rate in TFLOP/s (the ceiling the conv kernels are compared to)."""
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / time_call(lambda: a @ b, device) / 1e12


def make_case(name, kind, c_in, c_out, k, *, size: int, batch: int, device, dtype, seed: int = 0) -> Case:
    """One layer on `batch` tiles whose output is about size x size."""
    g = torch.Generator(device="cpu").manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device, dtype)

    in_h = (size + 3) // 2 if kind == "up" else size + k - 1
    if kind == "rgb":
        in_h |= 1  # ToRGB outputs are odd (2S - 5 for a skip of S)
    out_h = 2 * in_h - 3 if kind == "up" else in_h - k + 1
    x = rnd(batch, c_in, in_h, in_h)
    coords = rnd(batch, 3, in_h, in_h) if kind == "ss" else None
    c_tot = c_in + (3 if kind == "ss" else 0)
    raw = rnd(c_out, c_tot, k, k, scale=1 / math.sqrt(c_tot * k * k))
    style = rnd(batch, c_tot, scale=0.1) + 1.0
    noise = rnd(batch, 1, out_h, out_h) if kind in ("up", "conv") else None
    bias = rnd(c_out, scale=0.1)
    skip = rnd(batch, 3, (out_h + 5) // 2, (out_h + 5) // 2) if kind == "rgb" else None
    folded = raw * style[0].view(1, -1, 1, 1)
    if kind != "rgb":
        folded = folded * torch.rsqrt(folded.float().pow(2).sum([1, 2, 3]) + 1e-8).to(dtype).view(-1, 1, 1, 1)
    macs = (in_h * in_h if kind == "up" else out_h * out_h) * c_tot * c_out * k * k * batch
    run = {"official": lambda: _official(kind, x, coords, raw, style, noise, bias, skip),
           "torch": lambda: _torch(kind, x, coords, folded, noise, bias, skip)}
    if device.type == "cuda":
        from igan.kernels.conv import default_config

        run["triton"] = _triton_fn(kind, x, coords, folded, noise, bias, skip)
        return Case(f"{name} {out_h}px x{batch}", kind, 2 * macs, run,
                    lambda cfg: _triton_fn(kind, x, coords, folded, noise, bias, skip, cfg),
                    default_config(c_tot, c_out, dtype))
    return Case(f"{name} {out_h}px x{batch}", kind, 2 * macs, run)


def _official(kind, x, coords, raw, style, noise, bias, skip):
    b, c = x.shape[0], raw.shape[1]
    inp = torch.cat([x, coords], 1) if coords is not None else x
    w = raw[None] * style[:, None, :, None, None]
    if kind != "rgb":
        w = w * torch.rsqrt(w.pow(2).sum([2, 3, 4]) + 1e-8)[:, :, None, None, None]
    o, k = w.shape[1], w.shape[-1]
    if kind == "up":
        wt = w.transpose(1, 2).reshape(b * c, o, k, k)
        y = F.conv_transpose2d(inp.reshape(1, b * c, *inp.shape[2:]), wt, stride=2, groups=b)
        y = y.view(b, o, *y.shape[2:])[:, :, 1:-1, 1:-1]
        kern = torch.tensor([1.0, 2, 1], device=x.device, dtype=x.dtype)
        y = F.conv2d(y, (kern[:, None] * kern[None] / 4).expand(o, 1, 3, 3), groups=o)
    else:
        y = F.conv2d(inp.reshape(1, b * c, *inp.shape[2:]), w.reshape(b * o, c, k, k), groups=b)
        y = y.view(b, o, *y.shape[2:])
    if kind == "rgb":
        return y + bias.view(1, -1, 1, 1) + ops.crop_to(ops.upsample_linear(skip), y.shape[2], y.shape[3])
    if noise is not None:
        y = y + 0.5 * noise
    return F.leaky_relu(y + bias.view(1, -1, 1, 1), 0.2) * ops.SQRT2


def _torch(kind, x, coords, folded, noise, bias, skip):
    if kind == "rgb":
        y = ops.conv2d_valid(x, folded) + bias.view(1, -1, 1, 1)
        return y + ops.crop_to(ops.upsample_linear(skip), y.shape[2], y.shape[3])
    inp = torch.cat([x, coords], 1) if coords is not None else x
    y = ops.upconv2d(inp, folded) if kind == "up" else ops.conv2d_valid(inp, folded)
    if noise is not None:
        y.add_(0.5 * noise)
    return ops.bias_lrelu_(y, bias)


# Block configs the GPU report sweeps (M, N, K, warps, stages); default_config's pick is
# always added. Shared memory is stages * (M + N) * K * itemsize: all fit sm_90's 227 KiB.
SWEEP = [(m, n, k, w, s) for (m, n, k) in [(128, 128, 64), (128, 256, 64), (256, 128, 64), (128, 128, 128),
                                          (64, 256, 64), (128, 64, 64), (64, 128, 64)]
         for w in (4, 8) for s in (3, 4)]


def config_sweep(case: Case, device, itemsize: int, configs=SWEEP) -> list[tuple[object, object]]:
    """(BlockConfig, TFLOP/s or the error's name) of the case's fused kernel for each config
    whose shared memory fits sm_90; the runner's default config first."""
    from igan.kernels.conv import BlockConfig

    out = []
    for cfg in [case.default] + [c for c in map(lambda t: BlockConfig(*t), configs) if c != case.default]:
        if cfg.num_stages * (cfg.block_m + cfg.block_n) * cfg.block_k * itemsize > 227 * 1024:
            continue
        try:
            seconds = time_call(case.with_config(cfg), device)
        except Exception as e:  # out of resources on this device: reported, not fatal
            out.append((cfg, type(e).__name__))
            continue
        out.append((cfg, case.flops / seconds / 1e12))
    return out


def _triton_fn(kind, x, coords, folded, noise, bias, skip, config=None):
    from igan.kernels.conv import conv_triton, pack_weight
    from igan.kernels.upsample import phase_weights, upconv_triton

    x = x.contiguous(memory_format=torch.channels_last)
    if kind == "up":
        phases = [pack_weight(p) for p in phase_weights(folded)]
        return lambda: upconv_triton(x, folded, noise=noise, noise_strength=0.5, bias=bias, act=True, phases=phases,
                                     config=config)
    packed = pack_weight(folded)
    if kind == "rgb":
        return lambda: conv_triton(x, folded, bias=bias, skip=skip, packed=packed, out_dtype=torch.float32,
                                   config=config)
    return lambda: conv_triton(x, folded, coords=coords, noise=noise, noise_strength=0.5, bias=bias,
                               act=kind != "rgb", packed=packed, config=config)
