"""Per-layer speed of the three formulations (official grouped conv, igan torch, fused
Triton on CUDA), as TFLOP/s and percent of the measured dense matmul rate."""
import pytest
import torch
from conftest import record
from layers import LAYERS, make_case, matmul_peak

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32
SIZE, BATCH = (512, 2) if DEVICE.type == "cuda" else (48, 1)
FORMULATIONS = ["official", "torch", "triton"]
_PEAK = {}


def _peak():
    if "tflops" not in _PEAK:
        _PEAK["tflops"] = matmul_peak(DEVICE, DTYPE)
    return _PEAK["tflops"]


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("layer", LAYERS, ids=[layer[0] for layer in LAYERS])
def test_layer_speed(benchmark, layer, formulation):
    from igan.engine.runner import TorchRunner  # noqa: F401  (MKL reproducible mode, as renders run)

    case = make_case(*layer, size=SIZE, batch=BATCH, device=DEVICE, dtype=DTYPE)
    if formulation not in case.run:
        pytest.skip(f"{formulation} needs a CUDA device (the Triton interpreter is not a speed reference)")
    fn = case.run[formulation]
    if DEVICE.type == "cpu" and formulation == "torch":
        from igan.engine.determinism import reproducible_cpu_convs

        def fn(inner=fn):
            with reproducible_cpu_convs():
                return inner()

    def call():
        out = fn()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return out

    benchmark.pedantic(call, rounds=5, iterations=1, warmup_rounds=1)
    seconds = benchmark.stats.stats.min if benchmark.stats else None
    if seconds:
        tflops = case.flops / seconds / 1e12
        figures = dict(tflops=round(tflops, 4), pct_of_matmul=round(100 * tflops / _peak(), 1),
                       device=torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu", dtype=str(DTYPE))
        benchmark.extra_info.update(figures)
        record(f"{case.name} {formulation}", **figures)
