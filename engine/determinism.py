"""Bit-reproducible CPU convolutions, whatever the tile size or batch, and whatever the CPU.

Rendering a window in tiles must give byte-identical files for every tile and batch size.
That needs every output value to be computed with the same floating-point operations in
the same order, whatever the shape of the tensor it sits in. Two CPU libraries break this
by default (measured: differences up to 1e-4 between a conv on a window and on a larger
one): oneDNN and NNPACK pick algorithms (Winograd among them) by shape, and MKL's GEMM
picks kernels and blockings by shape and alignment. The fix:
- route CPU convolutions to ATen's im2col + GEMM path (oneDNN and NNPACK disabled), and
- put MKL in strict "conditional numerical reproducibility" mode, under which its GEMM
  gives the same bits for a row whatever the matrix's size.
MKL only accepts the mode before its first call, so this module sets it on import.

The same bytes on every x86-64 CPU with AVX2 (README, "Reproducibility"): both libraries also
pick kernels by the CPU's instruction sets, so igan holds them to their AVX2 branch by default
(cpu.PINS, set in the environment by igan.engine before torch loads; a value the user set wins):
- MKL_CBWR=AVX2,STRICT: MKL's AVX2 code branch. MKL runs a pinned branch on Intel CPUs only;
  on others (AMD) it refuses it and keeps AUTO, which there runs the same AVX2 kernels
  (measured: the bit-exact path's bytes of an AVX2-only Intel on an AVX-512 AMD EPYC). On an
  AVX2-only Intel, AUTO is the AVX2 branch, so the pin changes no byte there.
- ONEDNN_MAX_CPU_ISA=AVX2: oneDNN's kernels no wider than AVX2. Without it an AVX-512 CPU
  computes autograd's convolutions in the inversion with other kernels and the inversion
  records (so outpainting and inbetweening) differ from an AVX2 machine's.
Cost and effect measured in benchmarks/results/cpu-pins-*.md; engine/cpu.py reports both.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import warnings

import torch

from .cpu import PINS

# MKL's conditional numerical reproducibility (mkl_cbwr.h)
_MKL_CBWR_AUTO = 2
_MKL_CBWR_AVX2 = 10
_MKL_CBWR_STRICT = 0x10000
_MKL_CBWR_BRANCH_MASK = 0xFFFF
_MKL_CBWR_ERR_UNSUPPORTED_BRANCH = -3
_MKL_BRANCHES = {"AUTO": _MKL_CBWR_AUTO, "COMPATIBLE": 3, "SSE2": 4, "SSSE3": 6, "SSE4_1": 7, "SSE4_2": 8, "AVX": 9,
                 "AVX2": _MKL_CBWR_AVX2, "AVX512": 12, "AVX512_E1": 14}

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


def _wanted_branch() -> int:
    """The branch MKL_CBWR names (its first word), AVX2 when it names none igan knows."""
    word = os.environ.get("MKL_CBWR", "").split(",")[0].strip().upper()
    return _MKL_BRANCHES.get(word, _MKL_CBWR_AVX2)


def configure_mkl_strict() -> str:
    """Put MKL in strict reproducible mode on the branch MKL_CBWR names (AVX2 by default).
    Returns 'strict' (that branch), 'strict-auto' (a CPU on which MKL refuses a pinned branch,
    such as AMD's: AUTO), 'unavailable' or 'too-late'."""
    if not torch.backends.mkl.is_available():
        _state["mkl"] = "unavailable"
        return _state["mkl"]
    lib = _mkl_lib()
    if lib is None:
        _state["mkl"] = "unavailable"
        return _state["mkl"]
    branch = _wanted_branch()
    current = lib.mkl_serv_cbwr_get(-1)
    strict = bool(current & _MKL_CBWR_STRICT)
    if strict and current & _MKL_CBWR_BRANCH_MASK == branch:
        _state["mkl"] = "strict"
        return _state["mkl"]
    code = lib.mkl_serv_cbwr_set(branch | _MKL_CBWR_STRICT)
    if code == 0:
        _state["mkl"] = "strict"
    elif code == _MKL_CBWR_ERR_UNSUPPORTED_BRANCH and (
            lib.mkl_serv_cbwr_get(-1) == _MKL_CBWR_AUTO | _MKL_CBWR_STRICT
            or lib.mkl_serv_cbwr_set(_MKL_CBWR_AUTO | _MKL_CBWR_STRICT) == 0):
        _state["mkl"] = "strict-auto"
    else:
        _state["mkl"] = "too-late"
        warnings.warn(
            "MKL was used before igan was imported, so its strict reproducible mode could not be "
            "set: CPU renders may differ in the last bits between tile sizes and CPUs. Import igan first or "
            f"set MKL_CBWR={PINS['MKL_CBWR']} in the environment.", RuntimeWarning, stacklevel=2)
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


configure_mkl_strict()  # igan.engine (imported first) set MKL_CBWR before torch was imported
