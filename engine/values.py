"""Option values as typed on a command line: the parsers of the render options' declaration
(request.RenderRequest) and of the console scripts' own options (argparse `type=` callables).

They import nothing heavy: `igan-render --help` must answer without loading torch.
"""
from __future__ import annotations

import argparse
import math

MAX_BLUR = 4096  # pixels: each tile's style weights need a (tile + blur)^2 label region, ~20 bytes a pixel
DEFAULT_BLUR = 127  # the blend between fused styles, in output pixels


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite positive number, got {text!r}")
    return value


def int_pair(text: str) -> tuple[int, int]:
    """X,Y: two integers (a point or a step on the canvas)."""
    try:
        x, y = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y (two integers), got {text!r}") from None
    return x, y


def size_bytes(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4GiB, 512M)") from None
    if not math.isfinite(value) or value < 1:
        raise argparse.ArgumentTypeError(f"must be a finite size of at least one byte (e.g. 4GiB, 512M), got {text!r}")
    return int(value)


def blur(text: str) -> int:
    value = positive(text)
    if value > MAX_BLUR:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_BLUR} pixels (the blend of each tile is computed "
                                         f"over the tile plus the blur), got {value}")
    return value


def seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integer seeds, got {text!r}") from None
    if any(not 0 <= v < 2**63 for v in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be in [0, 2^63), got {text!r}")
    return seeds


def seed_ranges(text: str) -> tuple[int, ...]:
    """StyleGAN's seed lists: '0-7', '1,5,9', '0-3,10-12' (ranges inclusive, order kept,
    repeats dropped)."""
    out: list[int] = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            a = int(lo)
            b = int(hi) if dash else a
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be seeds and ranges such as 0-7,10, got {text!r}") from None
        if not 0 <= a <= b < 2**63:
            raise argparse.ArgumentTypeError(f"{part.strip()!r} is not a range of seeds in [0, 2^63)")
        if len(out) + b - a + 1 > MAX_SEEDS:
            raise argparse.ArgumentTypeError(f"{text!r} names more than {MAX_SEEDS} seeds")
        out.extend(range(a, b + 1))
    return tuple(dict.fromkeys(out))


MAX_SEEDS = 100_000


def centers(text: str) -> tuple[tuple[float, float], ...]:
    out = []
    for part in text.split(":"):
        try:
            x, y = (float(v) for v in part.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be X,Y pairs separated by ':' (fractions of the window), got {part!r} in {text!r}") from None
        if not all(math.isfinite(v) for v in (x, y)):
            raise argparse.ArgumentTypeError(f"centre {part!r} is not finite")
        out.append((x, y))
    return tuple(out)
