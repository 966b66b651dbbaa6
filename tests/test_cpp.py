"""The C++ side (engine/native/cpp): the extension igan.engine.native._native against its Python twins
(bit for bit, on random and edge inputs), and the C++ API through its example programs
against igan-render and the Python API (byte for byte).

The session fixture builds everything with CMake into build/cpp/ (the ignored build folder
that ./run also builds into), so after ./run's install step it is an up-to-date no-op.
Without cmake or a compiler the tests skip and say why.
"""
from __future__ import annotations

import importlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from igan.engine.native import build as build_native
from igan.engine import native, sinks
from igan.engine.quantize import to_uint8

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def build_dir() -> Path:
    reason = build_native.missing_tools()
    if reason:
        pytest.skip(f"cannot build the C++ side: {reason}")
    return build_native.build(build_native.BUILD_DIR, quiet=True)


@pytest.fixture(scope="session")
def ext(build_dir):
    module = importlib.import_module("igan.engine.native._native")
    if native.active() is None and native.UNAVAILABLE_REASON:  # imported before this build
        importlib.reload(native)
    return module


def _edge_floats() -> np.ndarray:
    """Values around every rounding boundary of the uint8 conversion, plus the specials."""
    k = np.arange(-1, 257, dtype=np.float64)
    bounds = ((k + 0.5) / 127.5 - 1.0).astype(np.float32)  # where floor(...+0.5) steps
    near = [bounds]
    for direction in (np.inf, -np.inf):
        x = bounds
        for _ in range(4):
            x = np.nextafter(x, np.float32(direction))
            near.append(x)
    specials = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 1e-45, -1e-45, 3e38, -3e38,
                         np.nextafter(np.float32(1), np.float32(2)), np.nextafter(np.float32(-1), np.float32(-2))],
                        np.float32)
    return np.concatenate(near + [specials]).astype(np.float32)


@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (2, 3, 17, 31), (1, 3, 64, 96), (3, 1, 5, 7), (1, 4, 9, 3)])
def test_to_uint8_matches_torch(ext, rng, shape):
    """C++ float -> uint8 (NCHW -> NHWC) equals quantize.to_uint8 bit for bit, edge values
    (every rounding boundary +-4 ulps, NaN, inf, denormals) scattered among random ones."""
    x = (rng.standard_normal(shape) * 0.8).astype(np.float32)
    edges = _edge_floats()
    flat = x.reshape(-1)
    pos = rng.choice(flat.size, min(flat.size, edges.size), replace=False)
    flat[pos] = rng.permutation(edges)[:pos.size]
    want = to_uint8(torch.from_numpy(x)).permute(0, 2, 3, 1).numpy()
    got = ext.to_uint8_nhwc(x)
    assert got.shape == want.shape and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)


def test_to_uint8_every_boundary(ext):
    """All boundary neighbourhoods at once, as one long row (the vector loop, not only tails)."""
    x = _edge_floats()
    x = np.tile(x, 3).reshape(1, 3, 1, -1)
    np.testing.assert_array_equal(ext.to_uint8_nhwc(x), to_uint8(torch.from_numpy(x)).permute(0, 2, 3, 1).numpy())


def test_native_dispatch_and_fallback(ext, rng):
    """igan.engine.native uses the extension when built, the Python path when forced, and
    both give the same bytes; non-float32 and non-contiguous inputs are handled too."""
    assert native.active() is not None, native.UNAVAILABLE_REASON
    x = torch.from_numpy(rng.standard_normal((2, 3, 11, 13)).astype(np.float32))
    fast = native.to_uint8_nhwc(x)
    with native.python_fallback():
        assert native.active() is None
        slow = native.to_uint8_nhwc(x)
    assert fast.is_contiguous() and fast.shape == (2, 11, 13, 3)
    assert torch.equal(fast, slow)
    strided = x.transpose(2, 3)  # not contiguous
    assert torch.equal(native.to_uint8_nhwc(strided), to_uint8(strided).permute(0, 2, 3, 1))
    half = x.to(torch.bfloat16)  # not float32: the torch path
    assert torch.equal(native.to_uint8_nhwc(half), to_uint8(half).permute(0, 2, 3, 1))


def _scanlines(rng, h, pixels, kind):
    n = pixels * 3
    if kind == "random":
        return rng.integers(0, 256, (h, n), dtype=np.uint8)
    if kind == "smooth":  # photo-like: small steps, every filter competes
        return rng.integers(0, 9, (h, n)).cumsum(axis=1).astype(np.uint8)
    if kind == "flat":  # every filter costs the same: ties go to the lower type
        return np.full((h, n), 77, np.uint8)
    return np.zeros((h, n), np.uint8)


@pytest.mark.parametrize("h,pixels", [(1, 1), (3, 2), (7, 101), (40, 333)])
@pytest.mark.parametrize("kind", ["random", "smooth", "flat", "zero"])
def test_filter_rows_matches_numpy(ext, rng, h, pixels, kind):
    cur = _scanlines(rng, h, pixels, kind)
    prev = rng.integers(0, 256, cur.shape[1], dtype=np.uint8) if kind != "zero" else np.zeros(cur.shape[1], np.uint8)
    np.testing.assert_array_equal(ext.filter_rows(cur, prev, 3), native.filter_rows_reference(cur, prev))


def test_filter_rows_rejects_bad_shapes(ext):
    with pytest.raises(ValueError, match=r"prev must have shape \(6,\)"):
        ext.filter_rows(np.zeros((2, 6), np.uint8), np.zeros(5, np.uint8), 3)
    with pytest.raises(ValueError, match="rgb must have shape"):
        ext.to_uint8_nhwc(np.zeros((3, 4, 4), np.float32))
    with pytest.raises(TypeError):
        ext.to_uint8_nhwc(np.zeros((1, 3, 4, 4), np.float64))


def test_png_bytes_same_native_or_not(ext, rng, tmp_path):
    """A PNG written through the sink is the same file with or without the extension, and
    decodes to the image."""
    from PIL import Image

    img = np.concatenate([_scanlines(rng, 37, 53, "smooth"), _scanlines(rng, 37, 53, "random")])
    img = img.reshape(74, 53, 3)

    def write(path):
        with sinks.open_sink(path, 53, 74, band_height=16) as sink:
            for y in range(0, 74, 16):
                sink.write(0, y, img[y:y + 16])
        return path.read_bytes()

    fast = write(tmp_path / "fast.png")
    with native.python_fallback():
        slow = write(tmp_path / "slow.png")
    assert fast == slow
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(fast))), img)


def _run(cmd, cwd, **kw):
    env = dict(os.environ, IGAN_VENV=str(VENV_BIN.parent))
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kw)


@pytest.mark.parametrize("extra", [
    [],
    ["--styles", "1,2"],
    ["--styles", "1,2,5", "--style-centers", "0.1,0.2:0.5,0.9:0.8,0.4", "--style-blur", "31"],
    ["--wrap"],
    ["--wrap", "--styles", "4,9"],
    ["--latent-rng", "v1", "--quantize", "official"],
    ["--trunc", "0.6"],
], ids=["plain", "styles", "centres", "wrap", "wrap-styles", "v1-official", "trunc"])
@pytest.mark.slow
def test_example_file_is_byte_identical_to_igan_render(build_dir, tmp_path, extra):
    """Every igan-render option reaches the file through the C++ API (style fusion and wrap
    were once dropped silently), and the in-memory renders of the C++ API (Model::render with
    the same options) and of the Python API (igan.Model.render) give the file's pixels."""
    import igan
    from PIL import Image

    from igan.engine.cli.render import parse_args
    from igan.engine.request import RenderRequest

    args = ["--width", "208", "--height", "96", "--seed", "3", "--quiet", *extra]
    py = _run([VENV_BIN / "igan-render", *args, "--out", "py.png"], tmp_path)
    assert py.returncode == 0, py.stderr
    cpp = _run([build_dir / "igan_render", *args, "--out", "cpp.png"], tmp_path)
    assert cpp.returncode == 0, cpp.stderr
    assert (tmp_path / "cpp.png").read_bytes() == (tmp_path / "py.png").read_bytes()
    pixels = np.asarray(Image.open(tmp_path / "py.png"))
    raw = _run([build_dir / "igan_render", "--raw", "cpp.rgb", *args], tmp_path)
    assert raw.returncode == 0, raw.stderr
    np.testing.assert_array_equal(np.fromfile(tmp_path / "cpp.rgb", np.uint8).reshape(96, 208, 3), pixels)
    request, default = parse_args(args), RenderRequest()
    canvas = {k: getattr(request, k) for k in ("styles", "style_centers", "style_blur", "wrap", "trunc", "latent_rng",
                                               "quantize") if getattr(request, k) != getattr(default, k)}
    np.testing.assert_array_equal(igan.load(device="cpu").render(208, 96, seed=3, array=True, **canvas), pixels)
    if extra:  # and the options did change the picture
        plain = _run([VENV_BIN / "igan-render", *args[:6], "--quiet", "--out", "plain.png"], tmp_path)
        assert plain.returncode == 0 and (tmp_path / "plain.png").read_bytes() != (tmp_path / "cpp.png").read_bytes()


@pytest.mark.slow
def test_example_reports_engine_errors(build_dir, tmp_path):
    """An engine error reaches C++ as igan::Error with the engine's message; a bad argument
    gets argparse's message and exit code 2; neither leaves a file."""
    bad = _run([build_dir / "igan_render", "--width", "0"], tmp_path)
    assert bad.returncode == 2 and "--width: must be a positive integer, got 0" in bad.stderr
    missing = _run([build_dir / "igan_render", "--width", "32", "--height", "32", "--out", "nodir/x.png"], tmp_path)
    assert missing.returncode == 1
    # the engine's error names the option as igan::FileOptions does (`out`), with its type
    assert re.search(r"\bout 'nodir/x.png': directory '[^']*nodir' does not exist \(PathError\)", missing.stderr)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_api_render_into_buffer_matches_python_api(build_dir, tmp_path):
    """Model::render into a padded caller buffer gives the Python API's pixels."""
    from igan.engine import planner
    from igan.engine.embedded import embedded_model
    from igan.engine.latent import LatentField
    from igan.engine.renderer import Renderer
    from igan.engine.runner import TorchRunner

    w, h = 72, 40
    res = _run([build_dir / "igan_bench_window", w, h, 1, 0, tmp_path / "win.raw"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["windows"] == 1
    got = np.fromfile(tmp_path / "win.raw", np.uint8).reshape(h, w, 3)
    model = embedded_model()
    plan = planner.plan(model.config, planner.Window(0, -h // 2, w, h))
    want = Renderer(TorchRunner(model, "cpu")).render_array(LatentField(model.config, 0), plan, uint8=True)
    np.testing.assert_array_equal(got, want)


def test_api_finds_no_venv_clearly(build_dir, tmp_path):
    env = dict(os.environ, IGAN_VENV=str(tmp_path / "novenv"))
    res = subprocess.run([str(build_dir / "igan_render"), "--out", "x.png"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert f"no Python at '{tmp_path / 'novenv'}/bin/python' (the venv from $IGAN_VENV)" in res.stderr


@pytest.mark.slow
def test_igan_native_0_forces_the_python_paths(ext):
    """IGAN_NATIVE=0 (read at import) gives the Python paths even with the extension built."""
    code = ("from igan.engine import native; import torch; "
            "assert native.active() is None; "
            "u = native.to_uint8_nhwc(torch.zeros(1, 3, 2, 2)); assert not u.is_contiguous(); print('fallback')")
    res = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, IGAN_NATIVE="0"),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "fallback" in res.stdout, res.stderr


def test_the_cpp_command_line_carries_every_igan_render_option():
    """igan::CommandLine has a field for every igan-render option (or refuses it): a new option
    must be added to igan.cpp and capi.CARRIED, never dropped silently."""
    import dataclasses

    from igan.engine.cli import cpp as cpp_cli
    from igan.engine.native import capi
    from igan.engine.request import RenderRequest

    fields = {f.name for f in dataclasses.fields(RenderRequest)} - {"field", "expect"}  # set by igan itself
    assert fields == capi.CARRIED | set(capi.UNSUPPORTED)
    source = (Path(capi.__file__).parent / "cpp" / "src" / "igan.cpp").read_text()
    assert not [name for name in capi.CARRIED if f'"{name}"' not in source]
    options = cpp_cli.parse_command_line(["--latent-rng", "v1", "--quantize", "official"])
    assert options["latent_rng"] == "v1" and options["quantize"] == "official"
    # the CPU path reaches igan.cpp as ModelOptions::cpu_path, however the command line spells it
    assert cpp_cli.parse_command_line([])["cpu_path"] == "exact"
    for spelling, path in ((["--bit-exact"], "reference"), (["--cpu-path", "reference"], "reference"),
                           (["--cpu-path", "fast-0.4"], "fast-0.4")):
        assert cpp_cli.parse_command_line(spelling)["cpu_path"] == path
