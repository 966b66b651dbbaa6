"""The 0.4 fast CPU path (engine/fastcpu.py, `--cpu-path fast-0.4`, the default of igan
0.3-0.4) against a float64 reference and the reference path, and the determinism it promised:
the same call gives the same bytes, every forward of a render has one shape, and tile borders
show no seam. The default path since 0.5 (engine/exactcpu.py): tests/test_cpu_paths.py."""
import numpy as np
import pytest
import torch
from conftest import random_model, small_config

from igan.engine import geometry, planner
from igan.engine.config import PRESETS
from igan.engine.latent import LatentField
from igan.engine.planner import Window, plan
from igan.engine.renderer import Renderer
from igan.engine.quantize import to_uint8
from igan.engine.runner import TorchRunner

FAST = "fast-0.4"


def _oneshot64(model, field, window):
    """The window from one float64 forward of the reference layers: the ground truth both
    float32 paths are measured against."""
    cfg = model.config
    m64 = random_model(cfg, seed=0)
    m64.load_state_dict(model.state_dict())
    m64 = m64.double()
    r0, n_h, oy = geometry.latent_window(cfg, window.y0, window.height)
    c0, n_w, ox = geometry.latent_window(cfg, window.x0, window.width)
    z, coords, noises = field.window(r0, c0, n_h, n_w)
    with torch.no_grad():
        prepared = m64.prepare(field.global_latent().double())
        out = m64.synthesize(prepared, z[None].double(), None if coords is None else coords[None].double(),
                             [n[None].double() for n in noises])
    return out[0, :, oy:oy + window.height, ox:ox + window.width].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("trial", range(4))
def test_fast_path_is_as_close_to_float64_as_float32_allows(rng, trial):
    """Both float32 paths are within float32 rounding of a float64 forward: the fast path's
    error is of the order of the reference path's (measured: about 3x it), never more than
    1e-5 of the image's range, in any tiling."""
    cfg = small_config(rng)
    model = random_model(cfg, seed=trial)
    field = LatentField(cfg, seed=int(rng.integers(0, 2**62)))
    window = Window(int(rng.integers(-200, 200)), int(rng.integers(-200, 200)),
                    int(rng.integers(40, 140)), int(rng.integers(40, 140)))
    ref = _oneshot64(model, field, window)
    scale = max(1.0, float(np.abs(ref).max()))
    exact = Renderer(TorchRunner(model, cpu_path="reference")).render_array(field, plan(cfg, window, tile=4096))
    err_exact = np.abs(exact - ref).max()
    fast = Renderer(TorchRunner(model, cpu_path=FAST))
    assert fast.runner.fast and fast.runner.path == FAST
    assert not TorchRunner(model, cpu_path="reference").fast and not TorchRunner(model).fast
    for tile in (4096, 16 * int(rng.integers(2, 6))):
        out = fast.render_array(field, plan(cfg, window, tile=tile))
        err = np.abs(out - ref).max()
        assert err < 1e-5 * scale, (tile, err, err_exact)
        assert err < 20 * err_exact + 1e-7 * scale, (tile, err, err_exact)


def test_the_same_call_gives_the_same_bytes_and_batches_have_one_shape(rng):
    """Two runners, the same render: the same bytes. A short last batch is padded, so every
    forward the runner makes has the plan's batch size, and a tile's bytes do not depend on
    the tiles it is batched with (here: reversed order, other companions)."""
    cfg = PRESETS["small"]
    model = random_model(cfg, seed=3)
    field = LatentField(cfg, seed=11)
    p = plan(cfg, Window(-40, -30, 150, 150), tile=48, batch=3)
    assert len(p.tiles) % 3 != 0  # a short last batch
    a = Renderer(TorchRunner(model, cpu_path=FAST)).render_array(field, p, 3, uint8=True)
    runner = TorchRunner(model, cpu_path=FAST)
    assert runner.pads_batches
    shapes = []
    run = runner.run
    runner.run = lambda prepared, batch: shapes.append(tuple(batch.local_latent.shape)) or run(prepared, batch)
    b = Renderer(runner).render_array(field, p, 3, uint8=True)
    assert np.array_equal(a, b)
    assert len(set(shapes)) == 1 and shapes[0][0] == 3
    # other groupings of the same tiles: reversed, and pairs
    for groups in ([list(reversed(p.tiles))[i:i + 3] for i in range(0, len(p.tiles), 3)],
                   [list(p.tiles[i:i + 2]) for i in range(0, len(p.tiles), 2)]):
        out = np.zeros_like(a)
        for t, img in Renderer(TorchRunner(model, cpu_path=FAST)).pixels(field, p, 3, groups=groups):
            out[t.y:t.y + t.height, t.x:t.x + t.width] = img
        assert np.array_equal(out, a)


def test_tile_borders_show_no_seam():
    """Seams, measured: the fast path's tiled render against its own one-shot render, at the
    tile borders and elsewhere. Floats agree to float32 rounding everywhere (a border is no
    worse than the interior), and 8-bit values differ by at most one level, on a few pixels."""
    cfg = PRESETS["small"]
    model = random_model(cfg, seed=2)
    field = LatentField(cfg, seed=5)
    window = Window(-100, -80, 256, 160)
    renderer = Renderer(TorchRunner(model, cpu_path=FAST))
    one = renderer.render_array(field, plan(cfg, window, tile=4096))
    scale = float(np.abs(one).max())
    tile = 64
    tiled = renderer.render_array(field, plan(cfg, window, tile=tile))
    diff = np.abs(tiled - one).max(-1)
    border = np.zeros(diff.shape, bool)
    for k in range(tile, window.width, tile):
        border[:, k - 2:k + 2] = True
    for k in range(tile, window.height, tile):
        border[k - 2:k + 2, :] = True
    assert diff.max() < 1e-5 * scale
    assert diff[border].max() <= 2 * diff[~border].max() + 1e-7 * scale
    u8 = [to_uint8(torch.from_numpy(x)).numpy().astype(int) for x in (one, tiled)]
    levels = np.abs(u8[0] - u8[1])
    assert levels.max() <= 1 and (levels > 0).any(-1).mean() < 1e-3


def test_reference_and_fast_paths_agree_to_float32_rounding(rng):
    cfg = small_config(rng)
    model = random_model(cfg, seed=7)
    field = LatentField(cfg, seed=1)
    p = plan(cfg, Window(0, -48, 96, 96), tile=48, batch=2)
    exact = Renderer(TorchRunner(model, cpu_path="reference")).render_array(field, p, 2)
    fast = Renderer(TorchRunner(model, cpu_path=FAST)).render_array(field, p, 2)
    assert np.abs(exact - fast).max() < 1e-5 * max(1.0, float(np.abs(exact).max()))


def test_other_backends_have_no_fast_path():
    from igan.engine.sources import make_runner

    model = random_model(PRESETS["tiny"])
    with pytest.raises(ValueError, match="cpu_path fast-0.4 is a path of the torch backend; the triton backend"):
        make_runner("triton", model, "cpu", "fp32", FAST)
    assert make_runner("torch", model, "cpu", "fp32", FAST).fast


def test_plans_carry_their_batch():
    cfg = PRESETS["tiny"]
    assert planner.plan(cfg, Window(0, 0, 64, 64), tile=32, batch=3).batch == 3


@pytest.mark.parametrize("trial", range(6))
def test_winograd_conv_matches_a_float64_conv(rng, trial, monkeypatch):
    """Winograd F(2x2, 3x3) (the fast path's wide 3x3 convs) against a float64 direct conv on
    fresh shapes: odd and even sizes (the last tile row/column half outside), batches, bias,
    and scratch bands of one tile row up to the whole output. Its error is float32 rounding of
    sums of 9 in-channel terms per tap, here bounded by 2e-6 x the output's scale."""
    from igan.engine import fastcpu

    n, c, o = int(rng.integers(1, 4)), int(rng.integers(1, 40)), int(rng.integers(1, 40))
    h, w = int(rng.integers(3, 20)), int(rng.integers(3, 20))
    if trial % 2:
        monkeypatch.setattr(fastcpu, "_WINOGRAD_BAND_BYTES", 1)  # one tile row per band
    gen = torch.Generator().manual_seed(trial)
    x = torch.randn(n, c, h, w, generator=gen).contiguous(memory_format=torch.channels_last)
    wt = torch.randn(o, c, 3, 3, generator=gen) / (9 * c) ** 0.5
    b = torch.randn(o, generator=gen)
    ref = torch.nn.functional.conv2d(x.double(), wt.double(), b.double())
    y = fastcpu.winograd_conv3x3(x, fastcpu.winograd_weight(wt), b)
    assert y.shape == ref.shape and y.is_contiguous(memory_format=torch.channels_last)
    assert (y.double() - ref).abs().max() < 2e-6 * max(1.0, float(ref.abs().max()))


def test_wide_3x3_convs_take_winograd():
    from igan.engine import fastcpu

    model = random_model(PRESETS["InfinityGAN"].replace(channels=(128, 128, 64, 32)), seed=0)
    p = TorchRunner(model, cpu_path=FAST).prepare(LatentField(model.config, 0))
    kinds = ["winograd" if w.dim() == 3 else "direct" for w in p.convs[1::2]]
    assert kinds == ["winograd", "winograd", "direct", "direct"], kinds
    assert fastcpu.WINOGRAD_MIN_CHANNELS == 128


def test_the_path_is_part_of_the_recipe_and_the_request(tmp_path):
    """igan-render records that the 0.4 path made a file ("fast", as 0.3-0.4 wrote it) and the
    command to make it again; --from renders it again the same way: the same bytes, the same
    command (the other paths: tests/test_cpu_paths.py)."""
    from igan.engine.cli.render import main as render_main
    from igan.engine.provenance import read_metadata

    base = ["--width", "96", "--height", "64", "--seed", "3", "--device", "cpu", "--quiet"]
    out = tmp_path / "fast.png"
    assert render_main(base + ["--cpu-path", FAST, "--out", str(out)]) == 0
    meta = read_metadata(out)
    assert meta["request"]["path"] == "fast"
    assert "--cpu-path fast-0.4" in meta["command"]
    again = tmp_path / "fast-again.png"
    assert render_main(["--from", str(out), "--out", str(again), "--quiet"]) == 0
    assert again.read_bytes() == out.read_bytes()
