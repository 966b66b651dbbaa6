"""The Triton kernels compiled for real GPU architectures, on this CPU-only machine.

The interpreter tests (test_kernels.py) check the kernels' arithmetic; they cannot see
whether the kernels compile for a GPU at all, fit its shared memory, or reach its tensor
cores. igan.kernels.aot records every launch the triton backend makes for a batch and
compiles it through Triton's own specialisation to a cubin for sm_80 (A100) and sm_90
(H100). The compile runs in a child process started without TRITON_INTERPRET (under the
interpreter triton.language's own helpers are interpreter objects).
"""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton", reason="the kernels need triton (./run installs it)")

# (config, fused, precisions, archs): the paper's config in every precision on H100, its
# bf16 path on A100, the style-fusion path (the largest shared-memory footprint) on both,
# and the embedded default model (other channel counts, hence other block configs).
CASES = [
    ("InfinityGAN", False, ["fp32", "bf16", "fp16"], ["sm_90"]),
    ("InfinityGAN", False, ["bf16"], ["sm_80"]),
    ("InfinityGAN", True, ["bf16"], ["sm_80", "sm_90"]),
    ("mini", False, ["fp32", "bf16"], ["sm_90"]),
]

SCRIPT = """
import json, sys
from igan.kernels.aot import check
rows = []
for config, fused, precisions, archs in json.loads(sys.argv[1]):
    rows += check(config, precisions, archs, fused)
print(json.dumps(rows))
"""


@pytest.fixture(scope="module")
def rows():
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    # two children, one per core: a cold compile of all cases takes about 90 s on one
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, json.dumps(half)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for half in (CASES[:2], CASES[2:])]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=1200)
        assert p.returncode == 0, stderr[-3000:]
        out += json.loads(stdout)
    return out


def _convs(rows, **match):
    return [r for r in rows if r["kernel"] == "_conv_kernel" and all(r[k] == v for k, v in match.items())]


@pytest.mark.slow
def test_every_launch_of_every_case_was_traced_and_compiled(rows):
    for config, fused, precisions, archs in CASES:
        for precision in precisions:
            for arch in archs:
                got = [r for r in rows if (r["config"], r["fused"], r["precision"], r["arch"]) ==
                       (config, fused, precision, arch)]
                kernels = {r["kernel"] for r in got}
                # every layer kind: the SS 7x7 with coords, the four phases, 3x3, ToRGB, the blur
                assert kernels == {"_conv_kernel", "_blur_epilogue_kernel"}, (config, precision, arch, kernels)
                shapes = {(r["KH"], r["KW"], r["y_step"]) for r in got if r["kernel"] == "_conv_kernel"}
                assert {(3, 3, 1), (1, 1, 1), (1, 1, 2), (1, 2, 2), (2, 1, 2), (2, 2, 2), (7, 7, 1)} <= shapes, shapes
    failed = [r for r in rows if not r["ok"]]
    assert not failed, failed[:3]


def test_every_kernel_fits_the_shared_memory_of_its_architecture(rows):
    over = [r for r in rows if r["shared_bytes"] > r["shared_limit"]]
    assert not over, [(r["config"], r["precision"], r["arch"], r["shared_bytes"]) for r in over]


def test_the_kernels_of_a_plain_render_spill_no_registers(rows):
    """ptxas -v: the kernels of one-style renders (the hot path, every precision) keep their
    accumulators in registers. (The fused-style SS and 3x3 convs, which carry two GEMMs'
    worth of state, spill up to 140 bytes; the compile report lists them.)"""
    plain = [r for r in rows if not r["fused"]]
    assert plain and all(r["registers"] > 0 for r in plain)
    spilled = [(r["config"], r["precision"], r["arch"], r.get("C1"), r.get("KH"), r["spill_stores"])
               for r in plain if r["spill_stores"] or r["spill_loads"]]
    assert not spilled, spilled


@pytest.mark.parametrize("arch,instr", [("sm_90", "wgmma"), ("sm_80", "mma.sync")])
def test_half_precision_convs_run_on_the_tensor_cores(rows, arch, instr):
    convs = [r for r in _convs(rows, arch=arch) if r["precision"] in ("bf16", "fp16")]
    assert convs
    assert all(r["tensor_core"] == instr for r in convs), {(r["C1"], r["COUT"], r["tensor_core"]) for r in convs}


def test_the_per_pixel_demodulation_of_half_precision_renders_runs_on_tf32_tensor_cores(rows):
    """The fused-style path's demodulation is a second GEMM (pixels x channels x filters, 1/9
    of the conv's): as an FMA loop it would cost more than the conv; it runs on TF32 instead."""
    demod = [r for r in _convs(rows, fused=True) if r["demod"]]
    assert demod and all(r["precision"] == "bf16" for r in demod)
    assert all(r["mma_inputs"] == ["bf16", "tf32"] for r in demod), {(r["arch"], tuple(r["mma_inputs"])) for r in demod}
    plain = [r for r in _convs(rows) if r["precision"] in ("bf16", "fp16") and not r["demod"]]
    ptx_type = {"bf16": "bf16", "fp16": "f16"}
    assert all(r["mma_inputs"] == [ptx_type[r["precision"]]] for r in plain), {tuple(r["mma_inputs"]) for r in plain}


def test_fp32_means_fp32_without_tf32(rows):
    """--precision fp32 reproduces the official fp32 outputs: no TF32 tensor-core GEMMs."""
    convs = _convs(rows, precision="fp32")
    assert convs
    assert all(r["tensor_core"] is None and r["mma_inputs"] == [] for r in convs)


def test_conv_operands_are_copied_in_16_byte_vectors(rows):
    """With channels-last activations (and styles) and channel counts that are multiples of
    8, the GEMM operands stream into shared memory as 16-byte cp.async copies. Exception: the
    fused path's styles of the 3 coordinate channels, a sliver of the SS layers' K."""
    convs = [r for r in _convs(rows) if r["precision"] in ("bf16", "fp16") and r["C1"] % 8 == 0
             and not (r["fused"] and r["C2"])]
    assert {r["fused"] for r in convs} == {False, True}
    assert all(r["async_copy_bytes"] == [16] for r in convs), {(r["C1"], r["KH"], r["fused"], tuple(r["async_copy_bytes"]))
                                                               for r in convs}


def test_blur_epilogue_reads_channels_in_vectors(rows):
    """The nine taps of the blur read 8 bf16 channels per load (channels-last)."""
    blurs = [r for r in rows if r["kernel"] == "_blur_epilogue_kernel" and r["precision"] == "bf16" and not r["fused"]]
    assert blurs
    assert all(r["load_bits"].get("128", 0) >= 9 for r in blurs), [r["load_bits"] for r in blurs]


@pytest.mark.slow
def test_the_command_refuses_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    done = subprocess.run([sys.executable, "-m", "igan.kernels.aot"], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and "TRITON_INTERPRET" in done.stderr


def test_a_process_under_the_interpreter_refuses_to_compile_with_the_reason():
    """This test process runs the kernels in the interpreter (conftest.py): compiling here
    must fail with the reason, not with an error from deep inside Triton."""
    import torch

    from igan.kernels import aot
    from igan.kernels.conv import conv_triton

    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        pytest.skip("this process was started without TRITON_INTERPRET=1")
    with aot.capture() as launches:
        conv_triton(torch.randn(1, 16, 8, 8), torch.randn(16, 16, 3, 3))
    assert len(launches) == 1
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1.*process started without it"):
        aot.compile_launch(launches[0], "sm_90")
