"""Bit-reproducible CPU convolutions, whatever the tile size or batch.

Rendering a window in tiles must give byte-identical files for every tile and batch size.
That needs every output value to be computed with the same floating-point operations in
the same order, whatever the shape of the tensor it sits in. Two CPU libraries break this
by default (measured: differences up to 1e-4 between a conv on a window and on a larger
one): oneDNN and NNPACK pick algorithms (Winograd among them) by shape, and MKL's GEMM
picks kernels and blockings by shape and alignment. The fix:
- route CPU convolutions to ATen's im2col + GEMM path (oneDNN and NNPACK disabled), and
- put MKL in strict "conditional numerical reproducibility" mode (MKL_CBWR=AUTO,STRICT),
  under which its GEMM gives the same bits for a row whatever the matrix's size.
MKL only accepts the mode before its first call, so this module sets it on import.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import warnings

import torch

_MKL_CBWR_AUTO = 2
_MKL_CBWR_STRICT = 0x10000
_state = {"mkl": "unknown"}


def _mkl_lib():
    path = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    try:
        lib = ctypes.CDLL(path)
        lib.mkl_serv_cbwr_get.restype = ctypes.c_int
        lib.mkl_serv_cbwr_set.restype = ctypes.c_int
        return lib
    except (OSError, AttributeError):
        return None


def configure_mkl_strict() -> str:
    """Put MKL in strict reproducible mode; returns 'strict', 'unavailable' or 'too-late'."""
    if not torch.backends.mkl.is_available():
        _state["mkl"] = "unavailable"
        return _state["mkl"]
    lib = _mkl_lib()
    if lib is None:
        _state["mkl"] = "unavailable"
        return _state["mkl"]
    wanted = _MKL_CBWR_AUTO | _MKL_CBWR_STRICT
    if lib.mkl_serv_cbwr_get(-1) & wanted == wanted or lib.mkl_serv_cbwr_set(wanted) == 0:
        _state["mkl"] = "strict"
    else:
        _state["mkl"] = "too-late"
        warnings.warn(
            "MKL was used before igan was imported, so its strict reproducible mode could not be "
            "set: CPU renders may differ in the last bits between tile sizes. Import igan first or "
            "set MKL_CBWR=AUTO,STRICT in the environment.", RuntimeWarning, stacklevel=2)
    return _state["mkl"]


def mkl_mode() -> str:
    return _state["mkl"]


@contextlib.contextmanager
def reproducible_cpu_convs():
    """Run CPU convolutions on the shape-independent im2col + GEMM path."""
    saved = (torch._C._get_mkldnn_enabled(), torch._C._get_nnpack_enabled())
    torch._C._set_mkldnn_enabled(False)
    torch._C._set_nnpack_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(saved[0])
        torch._C._set_nnpack_enabled(saved[1])


os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
configure_mkl_strict()
