"""What only a GPU can show: the Triton backend compiled for real hardware, its agreement
with the torch backend, and bit-identical results across tile and batch sizes.
Skipped (with the reason) on machines without CUDA."""
import numpy as np
import pytest
import torch
from conftest import random_model

from igan.engine.config import PRESETS
from igan.engine.latent import LatentField
from igan.engine.planner import Window, plan
from igan.engine.renderer import Renderer
from igan.engine.runner import TorchRunner, TritonRunner

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CFG = PRESETS["small"]


@pytest.fixture(scope="module")
def model():
    return random_model(CFG, seed=3)


def _render(runner, tile, batch, window=Window(-50, -90, 300, 200)):
    return Renderer(runner).render_array(LatentField(CFG, seed=5), plan(CFG, window, tile=tile, batch=batch), batch)


def test_triton_matches_torch_on_the_gpu_and_cpu(model):
    ref = _render(TorchRunner(model, "cpu"), 128, 1)
    assert np.abs(_render(TorchRunner(model, "cuda"), 128, 1) - ref).max() < 1e-4 * max(1, np.abs(ref).max())
    assert np.abs(_render(TritonRunner(model, "cuda"), 128, 1) - ref).max() < 1e-4 * max(1, np.abs(ref).max())
    low = _render(TritonRunner(model, "cuda", "bf16"), 128, 1)
    assert np.corrcoef(low.ravel(), ref.ravel())[0, 1] > 0.99


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_triton_bits_do_not_depend_on_tile_or_batch(model, precision):
    runner = TritonRunner(model, "cuda", precision)
    ref = _render(runner, 304, 1)
    for tile, batch in [(64, 4), (128, 2), (208, 3)]:
        assert np.array_equal(_render(runner, tile, batch), ref), (tile, batch)
