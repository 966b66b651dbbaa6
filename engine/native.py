"""CPU hot paths with a C++ twin in igan.engine._native (engine/cpp/src/hotpaths.cpp).

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

try:
    from . import _native
    UNAVAILABLE_REASON = None
except ImportError as exc:  # not built (no compiler at install time): the Python path serves
    _native = None
    UNAVAILABLE_REASON = f"igan.engine._native is not built ({exc})"

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
    """float [N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3] (runner.to_uint8's rounding; NaN -> 0).
    In C++ for float32 on the CPU (one pass, contiguous result), else torch (a permuted view)."""
    from .runner import to_uint8

    native = active()
    if native is None or rgb.device.type != "cpu" or rgb.dtype != torch.float32 or rgb.dim() != 4:
        return to_uint8(rgb).permute(0, 2, 3, 1)
    return torch.from_numpy(native.to_uint8_nhwc(rgb.detach().contiguous().numpy()))


def filter_rows(cur: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """PNG-filter RGB scanlines cur [h, n] uint8 (prev [n]: the row above) -> [h, 1 + n];
    see sinks._filter_rows."""
    native = active()
    if native is None:
        from .sinks import _filter_rows

        return _filter_rows(cur, prev)
    return native.filter_rows(np.ascontiguousarray(cur), np.ascontiguousarray(prev), 3)
