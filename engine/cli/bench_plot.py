"""The igan-bench plot, drawn with pillow: one panel per figure of merit over image size."""
from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

PANEL_W, PANEL_H, MARGIN = 360, 260, 56
PANELS = (  # (title, value of a row or None)
    ("megapixels / s", lambda r: r.mp_per_s),
    ("achieved TFLOP/s", lambda r: r.tflops),
    ("work ratio (executed / one-shot FLOPs)", lambda r: r.work_ratio),
    ("peak memory (MiB)", lambda r: None if r.peak_bytes is None else r.peak_bytes / 2**20),
)


def _fmt(v: float) -> str:
    return f"{v:.3g}"


BLUE, GRAY = (31, 119, 180), (150, 150, 150)


def _panel(draw: ImageDraw.ImageDraw, font, x0: int, y0: int, title: str, labels: list[str], values: list,
           baseline: list | None = None):
    """Axes, 4 horizontal grid lines, polylines with dots (igan blue, baseline grey), x labels = sizes."""
    left, top = x0 + MARGIN, y0 + 28
    right, bottom = x0 + PANEL_W - 12, y0 + PANEL_H - 40
    draw.text((x0 + 8, y0 + 6), title, fill="black", font=font)
    draw.rectangle((left, top, right, bottom), outline="black")
    known = [v for v in values + (baseline or []) if v is not None]
    if not known:
        draw.text((left + 10, (top + bottom) // 2), "not measured", fill="gray", font=font)
        return
    hi = max(known) * 1.1 or 1.0
    lo = 0.0
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        y = bottom - (bottom - top) * k / 4
        draw.line((left, y, right, y), fill=(220, 220, 220))
        draw.text((x0 + 4, y - 6), _fmt(v), fill="black", font=font)
    n = len(values)
    xs = [left + (right - left) * (i + 0.5) / n for i in range(n)]
    for series, colour in ((baseline, GRAY), (values, BLUE)):
        if series is None:
            continue
        points = [(x, bottom - (bottom - top) * (v - lo) / (hi - lo)) for x, v in zip(xs, series) if v is not None]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
    for x, label in zip(xs, labels):
        draw.text((x - 3 * len(label), bottom + 6), label, fill="black", font=font)


def plot_rows(rows, path: str | os.PathLike, title: str) -> Path:
    """Write the PNG atomically (temporary name, then rename)."""
    path = Path(path)
    cols = 2
    n_rows = (len(PANELS) + cols - 1) // cols
    img = Image.new("RGB", (cols * PANEL_W, n_rows * PANEL_H + 36), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    draw.text((8, 8), title[:110], fill="black", font=font)
    labels = [f"{r.width}x{r.height}" for r in rows]
    base = [r.baseline for r in rows]
    if any(b is not None for b in base):
        draw.text((8, 20), f"blue: igan tiles; grey: fixed {base[0].tile} tiles (baseline)", fill="black", font=font)
    for i, (name, get) in enumerate(PANELS):
        baseline = [None if b is None else get(b) for b in base] if any(b is not None for b in base) else None
        _panel(draw, font, (i % cols) * PANEL_W, 36 + (i // cols) * PANEL_H, name, labels,
               [get(r) for r in rows], baseline)
    tmp = path.with_name(f".{path.name}.igan-tmp-{os.getpid()}.png")
    try:
        img.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
