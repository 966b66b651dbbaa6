"""igan.kernels: fused ops of the generator, each as a torch reference (the spec, any
device), a Triton kernel and one launcher with impl="auto"|"triton"|"ref".

"auto" picks Triton on CUDA tensors (and under TRITON_INTERPRET=1, which runs the kernels
on CPU tensors, slowly, for tests) and the reference otherwise; an explicit "triton" that
cannot run raises with the reason.
"""
from __future__ import annotations

import functools
import os

IMPLS = ("auto", "triton", "ref")


class _State:
    capturing = 0  # > 0 inside igan.kernels.aot.capture(): launches are recorded, not run


_state = _State()


def tracing() -> bool:
    """True inside igan.kernels.aot.capture(): launches are recorded to be compiled for a
    GPU, so code that lays tensors out for the device should act as on CUDA."""
    return _state.capturing > 0


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    if tracing():  # recorded launches are compiled for a GPU
        return False
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=1)
def triton_import_error() -> str | None:
    try:
        import triton  # noqa: F401
    except ImportError as e:
        return f"triton is not installed ({e})"
    return None


def triton_unavailable_reason(device) -> str | None:
    """Why the Triton path cannot run on `device`, or None if it can."""
    err = triton_import_error()
    if err:
        return err
    if tracing():
        return None
    if device.type == "cuda" or (device.type == "cpu" and interpreting()):
        return None
    if device.type == "cpu":
        return "Triton kernels need a CUDA device (or TRITON_INTERPRET=1 for the slow CPU interpreter)"
    return f"Triton kernels do not run on {device.type} tensors"


def use_triton(impl: str, device) -> bool:
    """Resolve impl for tensors on `device`."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")  # internal invariant
    if impl == "ref":
        return False
    reason = triton_unavailable_reason(device)
    if impl == "triton" and reason:
        raise RuntimeError(f"impl='triton' cannot run: {reason}")
    return reason is None
