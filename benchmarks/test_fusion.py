"""Style fusion throughput (MP/s) against the plain render of the same window in the same
run: the spatial-style path modulates activations per pixel and demodulates per pixel, and
each tile computes its style weights from the canvas definition (`map_share`: the part of
the time spent on the weights)."""
import time

import pytest
from conftest import record

from igan.engine import planner
from igan.engine.embedded import embedded_model
from igan.engine.fusion import FusedField
from igan.engine.latent import LatentField
from igan.engine.renderer import Renderer
from igan.engine.runner import TorchRunner

WIDTH, HEIGHT = 768, 256
_MPS = {}


def _field(cfg, styles):
    if styles == 0:
        return LatentField(cfg, 0)
    centers = [((i + 0.5) * WIDTH / styles, 0.0) for i in range(styles)]
    return FusedField(cfg, list(range(1, styles + 1)), centers, 127, 0)


@pytest.mark.parametrize("styles", [0, 2, 4])
def test_fusion_throughput(benchmark, styles):
    model = embedded_model()
    cfg = model.config
    window = planner.Window(0, -HEIGHT // 2, WIDTH, HEIGHT)
    plan = planner.plan(cfg, window, memory_budget=1 << 30)
    renderer = Renderer(TorchRunner(model, "cpu"))
    field = _field(cfg, styles)

    def render():
        start = time.perf_counter()
        for _ in renderer.pixels(field, plan):
            pass
        return time.perf_counter() - start

    seconds = benchmark.pedantic(render, rounds=1, iterations=1, warmup_rounds=0)
    mp_s = WIDTH * HEIGHT / 1e6 / seconds
    _MPS[styles] = mp_s
    figures = dict(mp_per_s=round(mp_s, 3), tiles=len(plan.tiles), tile=plan.tile_width)
    if styles:
        start = time.perf_counter()
        for t in plan.tiles:
            field.style_maps(t.cell_row, t.cell_col, plan.latent_height, plan.latent_width)
        figures["map_share"] = round((time.perf_counter() - start) / seconds, 3)
        if 0 in _MPS:
            figures["ratio_vs_plain"] = round(mp_s / _MPS[0], 2)
    benchmark.extra_info.update(figures)
    record(f"fusion small {WIDTH}x{HEIGHT} styles={styles}", **figures)
