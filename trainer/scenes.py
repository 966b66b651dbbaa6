"""Procedural landscape scenes: the small, deterministic data set the default model is
trained on (no download). Each scene is a sky gradient with soft clouds, two or three
ridgelines with atmospheric perspective, and a foreground of grass or water; image k of a
set is a pure function of (seed, k).

    python -m igan.trainer.scenes --out scenes/ --count 384
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def _fbm_1d(rng: np.random.Generator, n: int, octaves: int = 5, base: int = 4) -> np.ndarray:
    """Fractal 1-D noise in about [-1, 1] over n samples (sum of interpolated random octaves)."""
    out = np.zeros(n)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        k = base * 2**o + 1
        knots = rng.uniform(-1, 1, k)
        out += amp * np.interp(np.linspace(0, k - 1, n), np.arange(k), knots)
        total += amp
        amp *= 0.5
    return out / total


def _blur_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth 2-D value noise in [0, 1]: a coarse random grid, bilinearly upsampled."""
    gh, gw = max(2, h * cells // w), cells
    grid = rng.uniform(0, 1, (gh + 1, gw + 1)).astype(np.float32)
    img = Image.fromarray(grid).resize((w, h), Image.BILINEAR)
    return np.asarray(img, dtype=np.float64)


def _mix(a, b, t):
    return a + (b - a) * t


def scene(seed: int, index: int, width: int = 256, height: int = 256) -> np.ndarray:
    """Scene `index` of set `seed`: uint8 [height, width, 3]."""
    rng = np.random.default_rng([seed, index])
    h, w = height, width
    yy = np.linspace(0, 1, h)[:, None, None]  # 0 top, 1 bottom
    # Sky: zenith -> horizon gradient; some scenes are dusk-coloured.
    dusk = rng.random() < 0.25
    zenith = np.array([0.10, 0.25, 0.60]) + rng.uniform(-0.05, 0.05, 3)
    horizon_col = (np.array([0.95, 0.60, 0.40]) if dusk else np.array([0.70, 0.82, 0.95])) + rng.uniform(-0.05, 0.05, 3)
    horizon = rng.uniform(0.45, 0.65)  # horizon row as a fraction of the height
    t = np.clip(yy / horizon, 0, 1) ** 1.5
    img = _mix(zenith, horizon_col, t) * np.ones((1, w, 1))
    # Clouds: thresholded smooth noise, brighter near the top.
    cover = rng.uniform(0.3, 0.75)
    n = 0.6 * _blur_noise(rng, h, w, 6) + 0.4 * _blur_noise(rng, h, w, 16)
    cloud = np.clip((n - cover) / 0.15, 0, 1)[..., None] * (yy < horizon) * np.clip(1.2 - yy / horizon, 0, 1)
    cloud_col = np.array([1.0, 0.85, 0.8]) if dusk else np.array([0.97, 0.97, 0.98])
    img = _mix(img, cloud_col, 0.85 * cloud)
    # Ridgelines, far (pale, high) to near (dark, low).
    xs = np.arange(w)
    ground = np.array([0.20, 0.45, 0.18]) + rng.uniform(-0.05, 0.05, 3)
    rock = np.array([0.30, 0.30, 0.35]) + rng.uniform(-0.05, 0.05, 3)
    n_ridges = int(rng.integers(2, 4))
    for r in range(n_ridges):
        depth = (r + 1) / n_ridges  # 1 = nearest
        base = horizon - rng.uniform(0.05, 0.25) * (1.2 - depth)
        amp = rng.uniform(0.08, 0.3) * (1.3 - 0.5 * depth)
        top = base - amp * (0.5 + 0.5 * _fbm_1d(rng, w, octaves=6, base=int(rng.integers(2, 6))))
        col = _mix(horizon_col * 0.9, _mix(rock, ground, 0.4 * depth), 0.35 + 0.6 * depth)
        mask = (yy[:, :, 0] >= top[None, :]) & (yy[:, :, 0] < horizon + 0.02)
        shade = 1.0 - 0.25 * np.clip((yy[:, :, 0] - top[None, :]) / max(amp, 1e-3), 0, 1)
        img[mask] = (col[None, :] * shade[mask][:, None])
    below = np.broadcast_to(yy[:, :, 0] >= horizon, (h, w))
    if rng.random() < 0.45:  # water: darker sky reflection with horizontal ripples
        ripple = 0.04 * np.sin(np.arange(h)[:, None] * rng.uniform(0.3, 0.6) + 3 * _blur_noise(rng, h, w, 12))
        refl = _mix(zenith, horizon_col, 0.6) * 0.75 + ripple[..., None]
        img[below] = refl[below]
    else:  # grass: green with dark noise, lighter towards the horizon
        tex = 0.75 + 0.25 * _blur_noise(rng, h, w, 40)[..., None]
        near = np.clip((yy - horizon) / (1 - horizon), 0, 1)
        grass = _mix(ground * 1.25, ground * 0.7, near) * tex
        img[below] = grass[below]
    img = img + rng.normal(0, 0.01, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_scenes(out: str | os.PathLike, count: int, seed: int = 0, width: int = 256, height: int = 256) -> list[Path]:
    """Write scenes 0..count-1 as PNGs (scene_00000.png, ...) under `out`."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        path = out / f"scene_{k:05d}.png"
        tmp = path.with_name(f".{path.name}.tmp")
        Image.fromarray(scene(seed, k, width, height)).save(tmp, format="PNG")
        os.replace(tmp, path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m igan.trainer.scenes", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--count", type=int, default=384)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=256)
    args = p.parse_args(argv)
    write_scenes(args.out, args.count, args.seed, args.width, args.height)
    print(f"wrote {args.count} scenes to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
