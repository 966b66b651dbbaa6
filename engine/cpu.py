"""Which CPU computed a result, and which code branch its numerical libraries were held to.

Some bytes depend on the CPU (README, "Reproducibility"): oneDNN and MKL choose their kernels
by the instruction sets a CPU has, so a hash or a timing means little without the CPU it was
taken on. `describe()` names it (model, vendor, the ISA flags that choose kernels) and the
switches that hold the libraries to one branch whatever the CPU (`numerics()`); output-hash
files, benchmark results, igan-bench and igan-render --stats-json record it.

Torch-free at import (the command lines import this before torch): `numerics()` asks torch and
MKL only when torch is already loaded.
"""
from __future__ import annotations

import os
import platform
import sys

# The flags that choose a kernel in MKL, oneDNN or ATen, oldest first.
ISA_FLAGS = ("sse4_2", "avx", "f16c", "fma", "avx2", "avx_vnni", "avx512f", "avx512dq", "avx512cd", "avx512bw",
             "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")

# The environment switches that hold the numerical libraries to one code branch; igan sets
# PINS (engine/__init__.py, before torch loads) unless the environment already has a value.
# ATen's own kernels (ATEN_CPU_CAPABILITY) are left to the CPU: forcing avx2 changed none of
# the output hashes on an AVX-512 machine (benchmarks/results/cpu-pins-*.md).
SWITCHES = ("MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
PINS = {"MKL_CBWR": "AVX2,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX2"}


PINNED = "IGAN_PINNED"  # the switches igan set itself (not the user), inherited by worker processes


def set_pins(environ=None) -> None:
    """Hold MKL and oneDNN to their AVX2 branch unless the environment already names a branch
    (call before torch's first computation: both libraries read the environment once)."""
    environ = os.environ if environ is None else environ
    mine = [k for k in PINS if k not in environ]
    for key in mine:
        environ[key] = PINS[key]
    if mine:
        environ[PINNED] = ",".join(sorted(set(environ.get(PINNED, "").split(",")) - {""} | set(mine)))


def unpin_onednn_for(precision: str, environ=None) -> bool:
    """Lift igan's own oneDNN cap (never a user's) for a reduced precision: bf16 kernels exist only
    on CPUs with AVX-512 BF16 or AMX, whose bf16 bytes are their own anyway (an AVX2 CPU runs bf16
    slower than fp32, and igan refuses it there), and the cap would take them away. Call it before
    oneDNN's first convolution in the process (oneDNN reads the cap once); worker processes
    inherit it (ONEDNN_MAX_CPU_ISA=ALL, which set_pins keeps). Returns whether the cap was lifted."""
    environ = os.environ if environ is None else environ
    ours = set(environ.get(PINNED, "").split(","))
    if precision == "fp32" or "ONEDNN_MAX_CPU_ISA" not in ours or "ONEDNN_MAX_CPU_ISA" not in environ:
        return False
    environ["ONEDNN_MAX_CPU_ISA"] = "ALL"
    rest = sorted(ours - {"ONEDNN_MAX_CPU_ISA", ""})
    if rest:
        environ[PINNED] = ",".join(rest)
    else:
        environ.pop(PINNED, None)
    return True


_MKL_BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2", 9: "AVX",
                 10: "AVX2", 11: "AVX512_MIC", 12: "AVX512", 13: "AVX512_MIC_E1", 14: "AVX512_E1"}
_MKL_STRICT = 0x10000


def _cpuinfo(path: str = "/proc/cpuinfo") -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (x86 Linux); {} where there is none."""
    fields: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return {}
    return fields


def isa_level(flags) -> str:
    """The widest vector ISA the flags name: 'amx', 'avx512_bf16', 'avx512', 'avx2', 'avx' or 'baseline'."""
    flags = set(flags)
    for level, need in (("amx", ("amx_tile",)), ("avx512_bf16", ("avx512f", "avx512_bf16")),
                        ("avx512", ("avx512f",)), ("avx2", ("avx2", "fma")), ("avx", ("avx",))):
        if all(f in flags for f in need):
            return level
    return "baseline"


def _onednn_isa(level: str, cap: str | None) -> str:
    """The ISA oneDNN dispatches to: the CPU's widest, lowered to ONEDNN_MAX_CPU_ISA."""
    best = {"amx": "avx512_core_amx", "avx512_bf16": "avx512_core_bf16", "avx512": "avx512_core",
            "avx2": "avx2", "avx": "avx", "baseline": "sse41"}[level]
    if not cap or cap.strip().upper() == "ALL":
        return best
    order = ["sse41", "avx", "avx2", "avx512_core", "avx512_core_bf16", "avx512_core_amx"]
    want = cap.strip().lower()
    want = next((o for o in reversed(order) if want.startswith(o)), want)
    if want in order and best in order and order.index(want) < order.index(best):
        return f"{want} (capped by ONEDNN_MAX_CPU_ISA={cap})"
    return best


def _mkl_effective() -> str | None:
    """MKL's conditional-numerical-reproducibility setting as MKL reports it, when torch is loaded."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        import ctypes

        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        value = int(lib.mkl_serv_cbwr_get(-1))
    except (OSError, AttributeError):
        return None
    name = _MKL_BRANCHES.get(value & 0xFFFF, str(value & 0xFFFF))
    return name + (",STRICT" if value & _MKL_STRICT else "")


def numerics(flags=None) -> dict:
    """The switches as set in the environment, and what they give here: the oneDNN ISA (from the
    CPU's flags and the cap), and, once torch is loaded, MKL's own report of its branch and
    ATen's vector ISA."""
    flags = describe_flags() if flags is None else flags
    out = {name: os.environ.get(name) for name in SWITCHES}
    out["onednn_isa"] = _onednn_isa(isa_level(flags), os.environ.get("ONEDNN_MAX_CPU_ISA"))
    mkl = _mkl_effective()
    if mkl is not None:
        out["mkl_cbwr_effective"] = mkl
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            out["aten_capability"] = torch.backends.cpu.get_cpu_capability()
        except (AttributeError, RuntimeError):
            pass
    return out


def bytes_family(d: dict | None = None) -> str:
    """The family of CPUs on which igan's CPU paths compute the same bytes, as measured (its
    name suffixes the output-hash files recorded on it, benchmarks/results/output-hashes*.json):

    - "avx2": CPUs without AVX-512, and AMD's with it (MKL refuses a pinned branch there and
      runs AUTO, whose kernels give the AVX2-only machine's bytes): every hash igan recorded
      from 0.1 to 0.5 (an AVX2-only x86-64 and an AMD EPYC, Zen 4, agree byte for byte).
    - "<vendor>-<isa level>" for an Intel CPU with AVX-512, e.g. "intel-amx" (a Xeon with
      AMX, 2026-12-08): MKL honours the pinned AVX2 branch there, and its GEMMs give other
      bytes; no MKL setting (AUTO, AVX2, AVX512, COMPATIBLE, MKL_ENABLE_INSTRUCTIONS=AVX2)
      reproduces the "avx2" family's, so these CPUs have hashes of their own.
    """
    d = describe() if d is None else d
    flags = set(d.get("isa_flags") or ())
    vendor = (d.get("vendor") or "").lower()
    if "avx512f" not in flags or "amd" in vendor:
        return "avx2"
    name = "intel" if "intel" in vendor else (vendor or "unknown")
    return f"{name}-{d.get('isa_level') or isa_level(flags)}"


def describe_flags() -> list[str]:
    present = set(_cpuinfo().get("flags", "").split())
    return [f for f in ISA_FLAGS if f in present]


def describe() -> dict:
    """The CPU: its model name, vendor, family/model numbers, architecture, logical CPUs, the ISA
    flags of ISA_FLAGS it has, its widest vector ISA, and `numerics()`."""
    info = _cpuinfo()
    flags = [f for f in ISA_FLAGS if f in set(info.get("flags", "").split())]
    model = info.get("model name") or platform.processor() or platform.machine() or "unknown"
    return {
        "model": model,
        "vendor": info.get("vendor_id") or None,
        "family": info.get("cpu family") or None,
        "model_id": info.get("model") or None,
        "arch": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "isa_flags": flags,
        "isa_level": isa_level(flags) if info else "unknown",
        "numerics": numerics(flags),
    }


def summary(d: dict | None = None) -> str:
    """One line: 'AMD EPYC (AuthenticAMD 25/17, 2 CPUs; avx2 fma avx512f ...); MKL_CBWR=..., oneDNN ...'."""
    d = describe() if d is None else d
    ids = " ".join(x for x in (d.get("vendor"), "/".join(str(x) for x in (d.get("family"), d.get("model_id"))
                                                         if x)) if x)
    head = f"{d['model']} ({ids + ', ' if ids else ''}{d.get('logical_cpus')} CPUs; " \
           f"{' '.join(d.get('isa_flags') or []) or 'no ISA flags known'})"
    n = d.get("numerics") or {}
    mkl = n.get("mkl_cbwr_effective") or n.get("MKL_CBWR") or "unset"
    mkl_env = n.get("MKL_CBWR")
    mkl_text = f"MKL_CBWR={mkl_env}" + (f" (MKL: {mkl})" if n.get("mkl_cbwr_effective") and mkl != mkl_env else "") \
        if mkl_env else f"MKL {mkl}"
    tail = [mkl_text, f"oneDNN {n.get('onednn_isa')}"]
    if n.get("aten_capability"):
        tail.append(f"ATen {n['aten_capability']}")
    return head + "; " + ", ".join(tail)

