"""Sample grids and loss curves as PNG, drawn with pillow only."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from igan.engine.quantize import to_uint8


def _save(img: Image.Image, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)


def save_grid(images: torch.Tensor, path: str | os.PathLike, cols: int = 4, pad: int = 2) -> Path:
    """images [B, 3, H, W] in [-1, 1] -> one PNG grid."""
    path = Path(path)
    arr = to_uint8(images.detach().float().cpu()).permute(0, 2, 3, 1).numpy()  # [B, H, W, 3]
    b, h, w = arr.shape[:3]
    cols = min(cols, b)
    rows = -(-b // cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for k in range(b):
        r, c = divmod(k, cols)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = arr[k]
    _save(Image.fromarray(grid), path)
    return path


def _smooth(y: np.ndarray, k: int) -> np.ndarray:
    if len(y) < 2 or k <= 1:
        return y
    k = min(k, len(y))
    c = np.cumsum(np.insert(y, 0, 0.0))
    out = (c[k:] - c[:-k]) / k
    return np.concatenate([y[:k - 1].cumsum() / np.arange(1, k), out])


def save_curves(history: dict[str, list[tuple[int, float]]], path: str | os.PathLike,
                panel=(320, 150)) -> Path:
    """One panel per series (step, value): raw values in grey, a moving average in blue."""
    path = Path(path)
    names = [n for n in sorted(history) if history[n]]
    cols = 3
    rows = max(1, -(-len(names) // cols))
    pw, ph = panel
    img = Image.new("RGB", (cols * pw, rows * ph), "white")
    draw = ImageDraw.Draw(img)
    for i, name in enumerate(names):
        ox, oy = (i % cols) * pw, (i // cols) * ph
        steps = np.array([s for s, _ in history[name]], float)
        vals = np.array([v for _, v in history[name]], float)
        ok = np.isfinite(vals)
        steps, vals = steps[ok], vals[ok]
        x0, y0, x1, y1 = ox + 40, oy + 18, ox + pw - 8, oy + ph - 16
        draw.rectangle([x0, y0, x1, y1], outline=(160, 160, 160))
        draw.text((ox + 4, oy + 3), name, fill=(0, 0, 0))
        if len(vals) == 0:
            continue
        lo, hi = float(vals.min()), float(vals.max())
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        smin, smax = steps.min(), max(steps.max(), steps.min() + 1)
        draw.text((ox + 2, y0), f"{hi:.3g}", fill=(80, 80, 80))
        draw.text((ox + 2, y1 - 10), f"{lo:.3g}", fill=(80, 80, 80))
        draw.text((x1 - 60, y1 + 2), f"step {int(smax)}", fill=(80, 80, 80))

        def pts(v):
            xs = x0 + (steps - smin) / (smax - smin) * (x1 - x0)
            ys = y1 - (v - lo) / (hi - lo) * (y1 - y0)
            return list(zip(xs.tolist(), ys.tolist()))
        if len(vals) > 1:
            draw.line(pts(vals), fill=(190, 190, 190), width=1)
            draw.line(pts(_smooth(vals, max(1, len(vals) // 20))), fill=(30, 80, 200), width=2)
        else:
            draw.point(pts(vals), fill=(30, 80, 200))
    _save(img, path)
    return path
