"""Writer throughput (MP/s): the final PNG and BigTIFF encoders and the Zarr tile store,
on image-like data, to compare with the render throughput of test_render.py: a sink
slower than the renderer would hold the GPUs back."""
import numpy as np
import pytest
from conftest import record

from igan.engine import sinks
from igan.engine.store import TileStore

H, W, TILE = 2048, 4096, 512


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    smooth = np.stack([xx // 9, yy // 7, (xx + yy) // 11], -1) % 256
    return (smooth + rng.integers(0, 12, (H, W, 3))).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["png", "tif", "zarr-store"])
def test_writer_throughput(benchmark, tmp_path, image, fmt):
    def write():
        if fmt == "zarr-store":
            root = tmp_path / "work"
            store = TileStore.create(root, {"width": W, "height": H, "tile_height": TILE, "tile_width": TILE})
            store.writer("bench")
            for i, (y, x) in enumerate((y, x) for y in range(0, H, TILE) for x in range(0, W, TILE)):
                store.put(i, y, x, image[y:y + TILE, x:x + TILE])
            store.remove()
            return
        with sinks.open_sink(tmp_path / f"out.{fmt}", W, H, band_height=TILE) as sink:
            for y in range(0, H, TILE):
                for x in range(0, W, TILE):
                    sink.write(x, y, image[y:y + TILE, x:x + TILE])

    benchmark.pedantic(write, rounds=3, iterations=1, warmup_rounds=0)
    if benchmark.stats:
        mp_s = H * W / 1e6 / benchmark.stats.stats.min
        benchmark.extra_info["mp_per_s"] = round(mp_s, 1)
        record(f"writer {fmt} {W}x{H}", mp_per_s=round(mp_s, 1), mb_per_s=round(3 * mp_s, 1))
