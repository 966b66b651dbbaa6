"""GFLOP/s of the default model's largest conv (512 -> 512 channels, 3x3, 68x68 output) on
each CPU convolution path torch offers, fp32 and bf16: igan's reproducible path (im2col +
GEMM, oneDNN off), oneDNN (NCHW and channels-last). Prints a Markdown table:

    .venv/bin/python benchmarks/cpu_conv_paths.py [--threads N]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from igan.engine import cpu
from igan.engine.determinism import reproducible_cpu_convs

FLOPS = 2 * 512 * 512 * 9 * 68 * 68


def rate(dtype, path: str, seconds: float = 3.0) -> float:
    x, w = torch.randn(1, 512, 70, 70).to(dtype), torch.randn(512, 512, 3, 3).to(dtype)
    if path == "onednn-cl":
        x, w = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
    ctx = reproducible_cpu_convs() if path == "im2col" else torch.inference_mode()
    with ctx, torch.inference_mode():
        F.conv2d(x, w)  # warm-up (oneDNN picks and caches its primitive)
        runs, start = 0, time.perf_counter()
        while runs < 5 and (runs == 0 or time.perf_counter() - start < seconds):
            F.conv2d(x, w)
            runs += 1
        return FLOPS * runs / (time.perf_counter() - start) / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{cpu.summary()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    print("| path | fp32 GFLOP/s | bf16 GFLOP/s |\n| --- | --- | --- |")
    for path, name in (("im2col", "igan's reproducible path (im2col + GEMM, MKL strict)"),
                       ("onednn", "oneDNN, NCHW"), ("onednn-cl", "oneDNN, channels-last")):
        print(f"| {name} | {rate(torch.float32, path):.1f} | {rate(torch.bfloat16, path):.2f} |", flush=True)


if __name__ == "__main__":
    main()
