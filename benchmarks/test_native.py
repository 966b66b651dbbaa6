"""The C++ side against its baselines in the same run: the extension's hot paths against
their Python twins (MB/s of input), and the C++ API's cost per small window against the
Python API rendering the same window (ms per window).

The extension is built by ./run (or here, into build/cpp/); without a compiler these skip."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import record

from igan.engine.native import build as build_native
from igan.engine import native, sinks
from igan.engine.quantize import to_uint8


@pytest.fixture(scope="module")
def build_dir():
    reason = build_native.missing_tools()
    if reason:
        pytest.skip(f"cannot build the C++ side: {reason}")
    path = build_native.build(build_native.BUILD_DIR)
    import importlib

    importlib.import_module("igan.engine.native._native")
    if native.active() is None and native.UNAVAILABLE_REASON:  # imported before this build
        importlib.reload(native)
    assert native.active() is not None, native.UNAVAILABLE_REASON
    return path


@pytest.fixture(scope="module")
def ext(build_dir):
    import igan.engine.native._native as ext

    return ext


def _mb_s(benchmark, nbytes):
    return round(nbytes / 1e6 / benchmark.stats.stats.min, 1) if benchmark.stats else None


@pytest.mark.parametrize("impl", ["python", "native"])
def test_to_uint8(benchmark, ext, impl):
    """A rendered batch [1, 3, 512, 1024] float32 -> the contiguous uint8 [1, 512, 1024, 3]
    a sink copies (torch: clamp, scale, floor, cast, then the NHWC copy; C++: one pass)."""
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 512, 1024)).astype(np.float32) * 0.7)
    if impl == "native":
        def run():
            return ext.to_uint8_nhwc(x.numpy())
    else:
        def run():
            return np.ascontiguousarray(to_uint8(x).permute(0, 2, 3, 1).numpy())
    out = benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    assert out.shape == (1, 512, 1024, 3)
    record(f"to_uint8 NCHW float32 -> NHWC uint8, {impl}", mb_per_s_in=_mb_s(benchmark, x.numel() * 4))


@pytest.mark.parametrize("impl", ["python", "native"])
def test_filter_rows(benchmark, ext, impl):
    """PNG row filter on 64 KiB of photo-like 4096-px scanlines at a time, as PngSink feeds it."""
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 9, (64, 4096 * 3)).cumsum(axis=1).astype(np.uint8)  # 768 KiB
    prev = rows[0].copy()
    step = max(1, sinks._FILTER_BYTES // rows.shape[1])
    f = (lambda c, p: ext.filter_rows(c, p, 3)) if impl == "native" else native.filter_rows_reference

    def run():
        for r0 in range(0, len(rows), step):
            f(rows[r0:r0 + step], prev)

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    record(f"PNG filter_rows 4096-px rows, {impl}", mb_per_s=_mb_s(benchmark, rows.nbytes))


@pytest.mark.parametrize("impl", ["python", "native"])
def test_png_sink(benchmark, ext, tmp_path, impl):
    """The whole PNG sink (filter + parallel deflate + file) on a 2048x1024 image."""
    h, w = 1024, 2048
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:h, 0:w]
    img = ((np.stack([xx // 9, yy // 7, (xx + yy) // 11], -1) % 256) + rng.integers(0, 12, (h, w, 3))).astype(np.uint8)

    def run():
        with sinks.open_sink(tmp_path / "x.png", w, h, band_height=256) as sink:
            for y in range(0, h, 256):
                sink.write(0, y, img[y:y + 256])

    if impl == "python":
        with native.python_fallback():
            benchmark.pedantic(run, rounds=2, iterations=1, warmup_rounds=0)
    else:
        benchmark.pedantic(run, rounds=2, iterations=1, warmup_rounds=0)
    record(f"PNG sink 2048x1024, {impl}", mb_per_s=_mb_s(benchmark, img.nbytes))


def test_api_overhead_per_window(benchmark, build_dir):
    """Render one small window many times through the C++ API (igan_bench_window, a separate
    process whose own clock excludes start-up) and through the Python API in this process,
    one torch thread each, alternating rounds (this VM is shared: the best round of each
    counts). The difference is what crossing into C++ costs per window."""
    from igan.engine import planner
    from igan.engine.embedded import embedded_model
    from igan.engine.latent import LatentField
    from igan.engine.renderer import Renderer
    from igan.engine.runner import TorchRunner

    w = h = 32
    quick = "--benchmark-disable" in sys.argv
    count, rounds = (2, 1) if quick else (20, 3)
    env = dict(os.environ, IGAN_VENV=sys.prefix)
    model = embedded_model()
    renderer = Renderer(TorchRunner(model, "cpu"))
    plan = planner.plan(model.config, planner.Window(0, -h // 2, w, h))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def python_windows():
        for seed in range(count):
            renderer.render_array(LatentField(model.config, seed), plan, uint8=True)

    try:
        python_windows()  # warm-up
        cpp, py = [], []
        for _ in range(rounds):
            res = subprocess.run([str(build_dir / "igan_bench_window"), str(w), str(h), str(count), "1"], env=env,
                                 capture_output=True, text=True, timeout=600, check=True)
            cpp.append(json.loads(res.stdout)["seconds"] / count * 1e3)
            t0 = time.perf_counter()
            python_windows()
            py.append((time.perf_counter() - t0) / count * 1e3)
        benchmark.pedantic(python_windows, rounds=1, iterations=1)
    finally:
        torch.set_num_threads(threads)
    cpp_ms, py_ms = min(cpp), min(py)
    record(f"{w}x{h} window x{count}, 1 thread: C++ API vs Python API", cpp_ms_per_window=round(cpp_ms, 2),
           python_ms_per_window=round(py_ms, 2), overhead_ms=round(cpp_ms - py_ms, 2),
           ratio=round(cpp_ms / py_ms, 3))
