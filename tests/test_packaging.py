"""`pip install .` (not editable) gives a working igan: the wheel carries the compiled C++ hot
paths, the embedded model and every console script, and renders the same bytes as this tree."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_wheel_installs_renders_and_has_the_extension(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
                           capture_output=True, text=True, timeout=900)
    if build.returncode != 0 and "Could not find a version" in build.stderr:
        pytest.skip(f"the build requirements cannot be fetched here: {build.stderr.strip()[-300:]}")
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("igan-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("igan/engine/native/_native") and n.endswith(".so") for n in names)
    assert {"igan/engine/models/landscapes-v1.safetensors", "igan/engine/models/landscapes-v2.safetensors"} <= set(names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert all(f"igan-{s} =" in scripts for s in ("render", "train", "export", "bench", "eval", "invert",
                                                   "outpaint", "inbetween", "serve"))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, timeout=300)
    env = dict(os.environ, PYTHONPATH=str(site))
    code = "import igan, igan.engine.native as n; print(igan.__file__); print(n.active() is not None)"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [str(site / "igan" / "__init__.py"), "True"]  # the installed copy, with its extension
    args = ["--width", "64", "--height", "32", "--seed", "3", "--device", "cpu", "--quiet"]
    for name, extra in (("installed.png", env), ("tree.png", None)):
        subprocess.run([sys.executable, "-m", "igan.engine.cli.render", *args, "--out", str(tmp_path / name)],
                       env=extra, cwd=tmp_path, check=True, timeout=300)
    assert (tmp_path / "installed.png").read_bytes() == (tmp_path / "tree.png").read_bytes()
