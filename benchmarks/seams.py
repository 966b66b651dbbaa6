"""Seams of the fast CPU path, measured: a window rendered in tiles against the same window
rendered in one tile, both on the fast path (engine/fastcpu.py), and the bit-exact path for
reference. Reports the largest float difference at tile borders (2 px either side of a tile
edge) and elsewhere, and how many 8-bit values differ (and by how many levels).

    python benchmarks/seams.py --out benchmarks/results/seams-cpu-2core-DATE.md
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from igan.engine import cpu, planner, sources
from igan.engine.latent import LatentField
from igan.engine.renderer import Renderer
from igan.engine.quantize import to_uint8

CASES = [  # (model, config for random weights, window w x h, tile)
    ("embedded", None, 1024, 256, 64),
    ("embedded", None, 1024, 256, 128),
    ("InfinityGAN (random weights)", "InfinityGAN", 384, 256, 128),
]


def measure(model, width, height, tile, bit_exact):
    cfg = model.config
    # "fast": 0.4's fast path (--cpu-path fast-0.4); "bit-exact": the reference path
    renderer = Renderer(sources.make_runner("torch", model, "cpu", "fp32", "reference" if bit_exact else "fast-0.4"))
    field = LatentField(cfg, 0)
    window = planner.Window(0, -(height // 2), width, height)
    one = renderer.render_array(field, planner.plan(cfg, window, tile=max(width, height) + 16))
    tiled = renderer.render_array(field, planner.plan(cfg, window, tile=tile))
    diff = np.abs(tiled - one).max(-1)
    border = np.zeros(diff.shape, bool)
    for k in range(tile, width, tile):
        border[:, k - 2:k + 2] = True
    for k in range(tile, height, tile):
        border[k - 2:k + 2, :] = True
    u8 = [to_uint8(torch.from_numpy(a)).numpy().astype(int) for a in (one, tiled)]
    levels = np.abs(u8[0] - u8[1])
    return dict(scale=float(np.abs(one).max()), border=float(diff[border].max()), inside=float(diff[~border].max()),
                values=int((levels > 0).sum()), of=levels.size, max_levels=int(levels.max()),
                border_values=int((levels > 0)[border].sum()))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    lines = ["# Seams of the CPU paths: tiled vs one-shot, same path", "",
             f"{time.strftime('%Y-%m-%d')}, {cpu.summary()}, torch {torch.__version__}, {torch.get_num_threads()} "
             "threads. Command: "
             "`python benchmarks/seams.py`", "",
             "| model | window | tile | path | max \\|diff\\| at borders | max \\|diff\\| elsewhere | image range | "
             "8-bit values differing (at borders) | max levels |", "|" + " --- |" * 9]
    for name, config, w, h, tile in CASES:
        model = sources.load(None, config, random_weights=config is not None)
        for bit_exact in (False, True):
            r = measure(model, w, h, tile, bit_exact)
            lines.append(f"| {name} | {w}x{h} | {tile} | {'bit-exact' if bit_exact else 'fast'} | {r['border']:.2e} | "
                         f"{r['inside']:.2e} | {r['scale']:.2f} | {r['values']} of {r['of']} ({r['border_values']}) | "
                         f"{r['max_levels']} |")
            print(lines[-1], flush=True)
    report = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
