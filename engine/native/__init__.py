"""CPU hot paths with a C++ twin in igan.engine.native._native (engine/native/cpp/src/hotpaths.cpp).

Each function here gives the same bytes whichever path runs: the C++ one when the extension
is built (`./run` builds it; see the README's C++ section), else the Python reference it
reproduces. Set IGAN_NATIVE=0, or call use_native(False), to force the Python path.
Chosen by measurement (benchmarks/test_native.py): float -> uint8 with the NCHW -> NHWC
transpose fused, and the PNG scanline filter. Deflate stays in zlib, which already runs
without the GIL on the sink's threads.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np
import torch

from ..quantize import to_uint8

try:
    from . import _native
    UNAVAILABLE_REASON = None
except ImportError as exc:  # not built (no compiler at install time): the Python path serves
    _native = None
    UNAVAILABLE_REASON = f"igan.engine.native._native is not built ({exc})"

_enabled = os.environ.get("IGAN_NATIVE", "1") != "0"


def active():
    """The extension module when it is built and enabled, else None."""
    return _native if _enabled else None


def use_native(enabled: bool) -> None:
    """Enable or disable the C++ paths for this process (tests compare both)."""
    global _enabled
    _enabled = bool(enabled)


@contextlib.contextmanager
def python_fallback():
    """Run the block with the Python paths."""
    global _enabled
    saved, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = saved


def to_uint8_nhwc(rgb: torch.Tensor) -> torch.Tensor:
    """float [N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3] (quantize.to_uint8's rounding; NaN -> 0).
    In C++ for float32 on the CPU (one pass, contiguous result), else torch (a permuted view)."""
    native = active()
    if native is None or rgb.device.type != "cpu" or rgb.dtype != torch.float32 or rgb.dim() != 4:
        return to_uint8(rgb).permute(0, 2, 3, 1)
    return torch.from_numpy(native.to_uint8_nhwc(rgb.detach().contiguous().numpy()))


def filter_rows(cur: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """PNG-filter RGB scanlines cur [h, n] uint8 (prev [n]: the row above) -> [h, 1 + n];
    see filter_rows_reference."""
    native = active()
    if native is None:
        return filter_rows_reference(cur, prev)
    return native.filter_rows(np.ascontiguousarray(cur), np.ascontiguousarray(prev), 3)


# ---- the Python references of the C++ paths ----------------------------------------------
def _mask(condition: np.ndarray) -> np.ndarray:
    """bool -> uint8 0x00/0xFF, for branch-free selects (np.where is slow on random masks)."""
    return np.negative(condition.view(np.uint8))


def _paeth_predictor(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """PNG Paeth predictor of uint8 arrays (left, up, upper-left), all in uint8 arithmetic.

    pa = |b-c|, pb = |a-c|, pc = |(b-c) + (a-c)|: when b-c and a-c have the same sign,
    pc >= max(pa, pb), so 255 stands in for it without changing any comparison."""
    pa = np.maximum(b, c) - np.minimum(b, c)
    pb = np.maximum(a, c) - np.minimum(a, c)
    pc = np.maximum(pa, pb) - np.minimum(pa, pb)
    pc |= _mask((b >= c) == (a >= c))
    not_a = c ^ ((b ^ c) & _mask(pb <= pc))  # b if pb <= pc else c
    return not_a ^ ((a ^ not_a) & _mask((pa <= pb) & (pa <= pc)))  # ties: a, then b, then c


def filter_rows_reference(cur: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """PNG-filter scanlines cur [h, n] (prev [n]: the scanline above) -> [h, 1 + n].

    Like libpng, each row takes the filter (None, Sub, Up, Average, Paeth) with the smallest sum
    of |filtered byte as int8|; ties go to the lower filter type."""
    h, n = cur.shape
    up = np.empty_like(cur)
    up[0], up[1:] = prev, cur[:-1]
    left = np.zeros_like(cur)
    left[:, 3:] = cur[:, :-3]
    upleft = np.zeros_like(cur)
    upleft[:, 3:] = up[:, :-3]
    cand = np.empty((5, h, n), np.uint8)  # uint8 arithmetic wraps mod 256, as the spec wants
    cand[0] = cur
    np.subtract(cur, left, out=cand[1])
    np.subtract(cur, up, out=cand[2])
    np.subtract(cur, (left & up) + ((left ^ up) >> 1), out=cand[3])  # floor((a + b) / 2)
    np.subtract(cur, _paeth_predictor(left, up, upleft), out=cand[4])
    cost = np.minimum(cand, np.negative(cand)).sum(axis=2, dtype=np.uint32)  # |int8|, [5, h]
    choice = cost.argmin(axis=0)
    out = np.empty((h, n + 1), np.uint8)
    out[:, 0] = choice
    out[:, 1:] = cand[choice, np.arange(h)]
    return out
