"""Compile the Triton kernels for a GPU architecture on a machine without a GPU.

A launch is recorded instead of run (`capture()`), then compiled (`compile_launch`) through
the same binder, argument specialisation (alignment, ints equal to 1) and options that a
launch on the device goes through, down to a cubin with the ptxas that ships with Triton.
No driver is needed. CPU CI uses it to check what the interpreter cannot:

- that the kernels compile for the GPU at all (dtype rules of tl.dot, layouts);
- that a block config fits the architecture's shared memory;
- that the GEMMs reach the tensor cores (wgmma on sm_90, mma.sync on sm_80) and that the
  operand loads are vectorised (16-byte cp.async), which decide how close a kernel can get
  to the matmul rate.

    with capture() as launches:
        conv_triton(x, w, ...)          # CPU tensors; nothing runs, the output is empty
    report = compile_launch(launches[0], "sm_90")
"""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field

from . import _state

# architecture -> (compute capability, max dynamic shared memory per block in bytes)
ARCHS = {"sm_80": (80, 166912), "sm_90": (90, 232448)}


@dataclass
class Launch:
    kernel: object  # the @triton.jit function (or its interpreter wrapper)
    grid: tuple
    args: tuple
    kwargs: dict


@dataclass
class Compiled:
    """What a compile for one architecture says about one launch."""

    name: str
    arch: str
    constexprs: dict
    shared_bytes: int
    num_warps: int
    num_stages: int
    ptx: str = field(repr=False)

    @property
    def shared_limit(self) -> int:
        return ARCHS[self.arch][1]

    @property
    def tensor_core(self) -> str | None:
        """The tensor-core instruction the GEMM compiled to, or None (FMA loops)."""
        if "wgmma.mma_async" in self.ptx:
            return "wgmma"
        if re.search(r"\bmma\.sync\.", self.ptx):
            return "mma.sync"
        return None

    @property
    def mma_inputs(self) -> list[str]:
        """Operand types of the tensor-core instructions, e.g. ["bf16"] or ["bf16", "tf32"]."""
        found = re.findall(r"wgmma\.mma_async\.\S*?\.f32\.(\w+)\.\w+|mma\.sync\.\S*?\.f32\.(\w+)\.\w+\.f32", self.ptx)
        return sorted({a or b for a, b in found})

    @property
    def async_copy_bytes(self) -> list[int]:
        """Widths of the cp.async global->shared copies (16 = fully vectorised)."""
        found = re.findall(r"cp\.async\.c[ag]\.shared\.global\S*\s+\[[^\]]+\],\s*\[[^\]]+\],\s*(0x[0-9a-f]+|\d+)",
                           self.ptx)
        return sorted({int(b, 0) for b in found})

    def resources(self) -> dict[str, int]:
        """Registers per thread and spill bytes, from ptxas -v on the PTX (the ptxas that
        ships with Triton, for the PTX's own target, e.g. sm_90a)."""
        import subprocess
        import tempfile

        from triton.backends.nvidia.compiler import get_ptxas

        target = re.search(r"^\.target\s+(\w+)", self.ptx, re.M).group(1)
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "k.ptx")
            with open(src, "w") as f:
                f.write(self.ptx)
            done = subprocess.run([get_ptxas(ARCHS[self.arch][0]).path, "-v", f"--gpu-name={target}", src, "-o", os.path.join(tmp, "k.o")],
                                  capture_output=True, text=True, check=True)
        info = done.stderr
        num = lambda pattern: sum(int(v) for v in re.findall(pattern, info))  # noqa: E731
        return {"registers": num(r"Used (\d+) registers"), "spill_stores": num(r"(\d+) bytes spill stores"),
                "spill_loads": num(r"(\d+) bytes spill loads")}

    def vector_loads(self) -> dict[int, int]:
        """Count of global loads by width in bits (ld.global[.v2|.v4].b32 ...)."""
        counts: dict[int, int] = {}
        for vec, bits in re.findall(r"ld\.global(?:\.\w+)*?(?:\.v(\d))?\.[bfu](\d+)\b", self.ptx):
            width = int(vec or 1) * int(bits)
            counts[width] = counts.get(width, 0) + 1
        return counts


class _Recorder:
    def __init__(self, kernel, launches):
        self.kernel = kernel
        self.launches = launches

    def __getitem__(self, grid):
        def record(*args, **kwargs):
            self.launches.append(Launch(self.kernel, tuple(grid), args, kwargs))

        return record


def _kernel_modules():
    from . import conv, upsample

    return [(conv, "_conv_kernel"), (upsample, "_blur_epilogue_kernel")]


@contextlib.contextmanager
def capture():
    """Record the kernels' launches instead of running them. Inside, the launchers act as
    on a GPU (GPU block configs, no interpreter upcasts) whatever the machine, and accept
    CPU tensors; outputs are left uninitialised."""
    launches: list[Launch] = []
    saved = [(mod, name, getattr(mod, name)) for mod, name in _kernel_modules()]
    _state.capturing += 1
    try:
        for mod, name, kern in saved:
            setattr(mod, name, _Recorder(kern, launches))
        yield launches
    finally:
        for mod, name, kern in saved:
            setattr(mod, name, kern)
        _state.capturing -= 1


def _check_compiler():
    """Under TRITON_INTERPRET=1 at import, triton.language's own @jit helpers (tl.zeros, ...)
    become interpreter objects that the compiler cannot use: refuse with the reason."""
    import triton.language as tl
    from triton.runtime.jit import JITFunction

    if not isinstance(tl.zeros, JITFunction):
        raise RuntimeError("triton was imported with TRITON_INTERPRET=1, so this process cannot compile for a "
                           "GPU; compile in a process started without it (as tests/test_aot.py does)")


def _jit_function(kernel):
    from triton.runtime.jit import JITFunction

    if isinstance(kernel, JITFunction):
        return kernel
    # under TRITON_INTERPRET=1, @triton.jit made an interpreter wrapper; compile its function
    return JITFunction(kernel.fn)


def compile_launch(launch: Launch, arch: str = "sm_90") -> Compiled:
    """Compile one recorded launch for `arch` ("sm_80" or "sm_90") as the device would."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}")
    _check_compiler()
    target = GPUTarget("cuda", ARCHS[arch][0], 32)
    backend = make_backend(target)
    jf = _jit_function(launch.kernel)
    kwargs = dict(launch.kwargs, debug=False, instrumentation_mode=knobs.compilation.instrumentation_mode)
    binder = create_function_from_signature(jf.signature, jf.params, backend)
    bound, spec, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = jf._pack_args(backend, kwargs, bound, spec, options)
    compiled = triton.compile(ASTSource(jf, signature, constexprs, attrs), target=target, options=options.__dict__)
    names = {(i,): p.name for i, p in enumerate(jf.params)}
    consts = {names[k]: v for k, v in constexprs.items() if k in names and jf.params[k[0]].is_constexpr}
    md = compiled.metadata
    return Compiled(jf.fn.__name__, arch, consts, int(md.shared), int(md.num_warps), int(md.num_stages),
                    compiled.asm["ptx"])


def trace_runner(model, precision: str, field, *, cells: int | None = None, batch: int = 2) -> list[Launch]:
    """The launches the triton backend makes for one batch of `batch` square latent windows
    of `field` (plain or fused styles) at `precision`, recorded on CPU tensors."""
    from igan.engine.geometry import min_latent_size
    from igan.engine.runner import TritonRunner

    n = cells or min_latent_size(model.config) + 1
    with capture() as launches:
        runner = TritonRunner(model, "cpu", precision)
        runner.run(runner.prepare(field), runner.inputs(field, [(0, 0)] * batch, n, n))
    return launches


def signature_key(launch: Launch) -> tuple:
    """What decides the compiled kernel (argument types, specialisations, constexprs): launches
    with equal keys compile to the same binary."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    jf = _jit_function(launch.kernel)
    backend = make_backend(GPUTarget("cuda", 90, 32))
    _, spec, _ = create_function_from_signature(jf.signature, jf.params, backend)(*launch.args, **launch.kwargs)
    return (jf.fn.__name__, str(spec), tuple(sorted((k, str(v)) for k, v in launch.kwargs.items())))


def distinct(launches: list[Launch]) -> list[Launch]:
    """One launch per compiled binary, in first-launch order."""
    seen, out = set(), []
    for launch in launches:
        key = signature_key(launch)
        if key not in seen:
            seen.add(key)
            out.append(launch)
    return out


# ---- command line: python -m igan.kernels.aot -----------------------------------------------
_LAYER_ARGS = ("C1", "C2", "COUT", "KH", "KW", "y_step", "C")


def check(config: str = "InfinityGAN", precisions=("bf16",), archs=("sm_90",), fused: bool = False,
          seed: int = 0) -> list[dict]:
    """Trace the triton backend on `config` and compile every distinct launch for every
    arch; one record per (launch, arch): what was compiled and what the compile says."""
    from igan.engine.checkpoint import init_deterministic
    from igan.engine.config import from_name
    from igan.engine.latent import LatentField
    from igan.engine.model import Generator

    cfg = from_name(config)
    model = init_deterministic(Generator(cfg), seed)
    if fused:
        from igan.engine.fusion import FusedField

        field = FusedField(cfg, [1, 2], [(0.0, 0.0), (40.0, 10.0)], 15, 0)
    else:
        field = LatentField(cfg, seed=seed)
    rows = []
    for precision in precisions:
        for launch in distinct(trace_runner(model, precision, field)):
            jf = _jit_function(launch.kernel)
            named = dict(zip((p.name for p in jf.params), launch.args), **launch.kwargs)
            layer = {k: named[k] for k in _LAYER_ARGS if k in named}
            for arch in archs:
                row = dict(config=config, fused=fused, precision=precision, arch=arch, kernel=jf.fn.__name__, **layer)
                try:
                    c = compile_launch(launch, arch)
                except Exception as e:  # reported, not raised: one table shows every failure
                    row.update(ok=False, error=f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}")
                else:
                    blocks = {k: v for k, v in c.constexprs.items() if k.startswith("BLOCK")}
                    row.update(ok=True, blocks=blocks, num_warps=c.num_warps, num_stages=c.num_stages,
                               shared_bytes=c.shared_bytes, shared_limit=c.shared_limit, tensor_core=c.tensor_core,
                               mma_inputs=c.mma_inputs, demod=bool(c.constexprs.get("DEMOD")),
                               async_copy_bytes=c.async_copy_bytes, load_bits=c.vector_loads(), **c.resources())
                rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    """The records as a markdown table (launches that differ only in their argument
    specialisation, e.g. the SS layers' coordinate offsets, share one row)."""
    out = ["| config | styles | prec | arch | kernel | Cin+Cc -> Cout, k | blocks (M,N,K) / warps / stages | "
           "shared KiB | regs / spilled bytes | tensor core | cp.async bytes |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if r["kernel"] == "_conv_kernel":
            shape = f"{r['C1']}+{r['C2']} -> {r['COUT']}, {r['KH']}x{r['KW']}" + (" /2 phase" if r["y_step"] == 2 else "")
        else:
            shape = f"{r.get('C')} ch"
        head = (f"| {r['config']} | {'fused' if r['fused'] else 'one'} | {r['precision']} | {r['arch']} | "
                f"{r['kernel'].strip('_')} | {shape} |")
        if not r["ok"]:
            out.append(f"{head} FAILED: {r['error']} | | | | |")
            continue
        b = r["blocks"]
        blocks = ",".join(str(b[k]) for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K") if k in b) or str(b.get("BLOCK", ""))
        line = (f"{head} {blocks} / {r['num_warps']} / {r['num_stages']} | {r['shared_bytes'] / 1024:.0f} | "
                f"{r['registers']} / {r['spill_stores']} | "
                f"{(r['tensor_core'] + ' ' + '+'.join(r['mma_inputs'])) if r['tensor_core'] else '-'} | "
                f"{','.join(map(str, r['async_copy_bytes'])) or '-'} |")
        if line not in out:
            out.append(line)
    return "\n".join(out)


def main(argv=None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m igan.kernels.aot", description=(
        "Compile every Triton kernel launch of the triton backend for a GPU architecture, "
        "on any machine (no GPU needed), and report block configs, shared memory, tensor-core "
        "instructions and copy widths. Exit status 1 if any launch fails to compile or does not fit."))
    ap.add_argument("--config", default="InfinityGAN")
    ap.add_argument("--precision", default="bf16", help="comma-separated: fp32,bf16,fp16")
    ap.add_argument("--arch", default="sm_90", help=f"comma-separated: {','.join(ARCHS)}")
    ap.add_argument("--fused", action="store_true", help="spatially varying styles (style fusion path)")
    ap.add_argument("--json", action="store_true", help="print the records as JSON instead of a table")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        ap.error("run without TRITON_INTERPRET=1: under the interpreter triton.language's own "
                 "@jit helpers are interpreter objects that the compiler cannot use")
    rows = check(args.config, args.precision.split(","), args.arch.split(","), args.fused)
    print(json.dumps(rows) if args.json else table(rows))
    bad = [r for r in rows if not r["ok"] or r["shared_bytes"] > r["shared_limit"]]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
