"""Bounded memory: peak RSS depends on the tile size, not on the image size."""
import json
import subprocess
import sys

import pytest


def _peak_rss(tmp_path, width, height, ext):
    stats = tmp_path / f"{width}x{height}.json"
    cmd = [sys.executable, "-m", "igan.engine.cli.render", "--width", str(width), "--height", str(height),
           "--tile", "256", "--out", str(tmp_path / f"{width}x{height}.{ext}"), "--quiet", "--device", "cpu",
           "--threads", "1", "--stats-json", str(stats)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return json.loads(stats.read_text())["peak_rss"]


@pytest.mark.slow
def test_peak_rss_at_width_16384_is_within_20_percent_of_width_2048(tmp_path):
    small = _peak_rss(tmp_path, 2048, 64, "png")
    large = _peak_rss(tmp_path, 16384, 64, "png")
    assert large <= 1.2 * small, (small / 2**20, large / 2**20)


@pytest.mark.slow
def test_peak_rss_does_not_grow_with_height(tmp_path):
    small = _peak_rss(tmp_path, 256, 1024, "tif")
    large = _peak_rss(tmp_path, 256, 8192, "tif")
    assert large <= 1.2 * small, (small / 2**20, large / 2**20)
