"""End-to-end render throughput (MP/s), work ratio and peak memory.

Baseline in the same run: the official tiling (101-px patches on a 96-px step, one patch
per forward), against igan's memory-budget tiles. Both render the same window to PNG.
"""
import json
import subprocess
import sys
import time

import pytest
from conftest import record

from igan.engine import planner, sinks
from igan.engine.checkpoint import init_deterministic
from igan.engine.config import PRESETS
from igan.engine.embedded import placeholder_model
from igan.engine.latent import LatentField
from igan.engine.model import Generator
from igan.engine.renderer import Renderer
from igan.engine.runner import TorchRunner

CASES = {  # config -> window size rendered on the 2-core CPU
    "small": (2048, 512),
    "InfinityGAN": (384, 256),
}
_RESULTS = {}


def _model(name):
    return placeholder_model() if name == "small" else init_deterministic(Generator(PRESETS[name]), 0)


@pytest.mark.parametrize("tiling", ["official-96px", "budget"])
@pytest.mark.parametrize("name", list(CASES))
def test_render_throughput(benchmark, tmp_path, name, tiling):
    width, height = CASES[name]
    model = _model(name)
    window = planner.Window(0, -height // 2, width, height)
    tile = 96 if tiling == "official-96px" else None
    plan = planner.plan(model.config, window, tile=tile, memory_budget=4 << 30)
    renderer = Renderer(TorchRunner(model, "cpu"))
    field = LatentField(model.config, seed=0)

    def render():
        sink = sinks.open_sink(tmp_path / "out.png", width, height, band_height=plan.tile_height)
        return renderer.render(field, plan, sink, progress=False)

    stats = benchmark.pedantic(render, rounds=1, iterations=1, warmup_rounds=0)
    mp_s = stats.mp_per_s
    _RESULTS[(name, tiling)] = mp_s
    figures = dict(mp_per_s=round(mp_s, 3), gflop_per_s=round(stats.tflops * 1e3, 1),
                   work_ratio=round(plan.work_ratio, 3), tile=plan.tile_width, tiles=len(plan.tiles))
    if tiling == "budget" and (name, "official-96px") in _RESULTS:
        figures["speedup_vs_official_tiling"] = round(mp_s / _RESULTS[(name, "official-96px")], 2)
    benchmark.extra_info.update(figures)
    record(f"render {name} {width}x{height} {tiling}", **figures)
    assert stats.tiles == len(plan.tiles)


@pytest.mark.parametrize("path", ["bit-exact", "fast"])
def test_cpu_path_throughput(benchmark, path):
    """0.4's fast CPU path (--cpu-path fast-0.4: oneDNN, channels-last) against the bit-exact
    reference path on the default config's 256-px tiles, in the same run: MP/s, GFLOP/s and
    the ratio."""
    model = _model("InfinityGAN")
    width, height = 256, 256
    plan = planner.plan(model.config, planner.Window(0, -height // 2, width, height), tile=256)
    renderer = Renderer(TorchRunner(model, "cpu", cpu_path="reference" if path == "bit-exact" else "fast-0.4"))
    field = LatentField(model.config, seed=0)
    renderer.render_array(field, plan)  # warm-up: oneDNN builds its kernels for the shapes

    times = []

    def render():
        start = time.perf_counter()
        out = renderer.render_array(field, plan, uint8=True)
        times.append(time.perf_counter() - start)
        return out

    # timed here too: with --benchmark-disable (CI) pytest-benchmark keeps no statistics
    benchmark.pedantic(render, rounds=2, iterations=1, warmup_rounds=0)
    seconds = min(times)
    mp_s = width * height / 1e6 / seconds
    _RESULTS[("cpu-path", path)] = mp_s
    figures = dict(mp_per_s=round(mp_s, 4), gflop_per_s=round(plan.flops / seconds / 1e9, 1))
    if path == "fast" and ("cpu-path", "bit-exact") in _RESULTS:
        figures["speedup_vs_bit_exact"] = round(mp_s / _RESULTS[("cpu-path", "bit-exact")], 2)
    benchmark.extra_info.update(figures)
    record(f"render InfinityGAN 256x256 {path}", **figures)


def _peak_rss_of_render(tmp_path, width, height, tile):
    """Run igan-render in a fresh process; return its peak RSS (bytes) as it reports it."""
    out, stats = tmp_path / f"w{width}.png", tmp_path / f"w{width}.json"
    cmd = [sys.executable, "-m", "igan.engine.cli.render", "--width", str(width), "--height", str(height),
           "--tile", str(tile), "--out", str(out), "--quiet", "--device", "cpu", "--stats-json", str(stats)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(stats.read_text())["peak_rss"], done.stdout.strip()


def test_peak_rss_does_not_grow_with_width(benchmark, tmp_path):
    """Same tile size, 8x the width: peak RSS must stay within 20%."""
    results = {}

    def run():
        for width in (2048, 16384):
            results[width] = _peak_rss_of_render(tmp_path, width, 256, 256)
        return results

    benchmark.pedantic(run, rounds=1, iterations=1)
    small, large = results[2048][0], results[16384][0]
    figures = dict(peak_rss_2048_mib=round(small / 2**20), peak_rss_16384_mib=round(large / 2**20),
                   ratio=round(large / small, 3))
    benchmark.extra_info.update(figures)
    record("peak RSS, small config, height 256, tile 256", **figures)
    assert large <= 1.2 * small, figures
