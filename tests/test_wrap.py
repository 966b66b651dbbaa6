"""Cyclic (360-degree) panoramas: with a period P the canvas repeats every P pixels, so a
wrapped image continues across its own join exactly like across any interior column."""
import numpy as np
import pytest
import torch
from conftest import random_model, small_config
from PIL import Image

from igan.engine import checkpoint
from igan.engine.config import PRESETS
from igan.engine.fusion import FusedField
from igan.engine.geometry import layer_steps
from igan.engine.latent import LatentField
from igan.engine.planner import Window, plan
from igan.engine.cli.render import main
from igan.engine.renderer import Renderer
from igan.engine.runner import TorchRunner

TINY = PRESETS["tiny"]


def _render(model, field, window, tile=48):
    """On the reference path (igan 0.2's bit-exact one): these tests compare bytes across tilings."""
    return Renderer(TorchRunner(model, cpu_path="reference")).render_array(field, plan(model.config, window, tile=tile))


@pytest.mark.parametrize("trial", range(2))
def test_the_join_of_a_wrapped_panorama_is_seamless(rng, trial):
    cfg = TINY if trial == 0 else small_config(rng)
    model = random_model(cfg, seed=trial)
    width = 16 * int(rng.integers(3, 6))
    x0, y0, h = int(rng.integers(-100, 100)), int(rng.integers(-40, 0)), 24
    for wrap in (True, False):
        field = LatentField(cfg, int(rng.integers(0, 2**40)), period=width if wrap else None)
        pano = _render(model, field, Window(x0, y0, width, h))
        # the window across the join: the right half of the panorama, then its left half
        across = _render(model, field, Window(x0 + width // 2, y0, width, h), tile=32)
        double = _render(model, field, Window(x0, y0, 2 * width, h), tile=64)
        rolled = np.roll(pano, -(width // 2), axis=1)
        if wrap:
            assert np.array_equal(across, rolled)
            assert np.array_equal(double[:, :width], pano) and np.array_equal(double[:, width:], pano)
        else:
            assert np.abs(across - rolled).max() > 0.1
            assert np.array_equal(double[:, :width], pano) and np.abs(double[:, width:] - pano).max() > 0.1


def test_one_period_of_a_cyclic_canvas_is_the_plain_canvas():
    """Inside [0, P) the cyclic canvas draws the same z_l and noise as the plain one; the
    values repeat beyond, column index modulo each grid's period."""
    period = 48  # 12 z_l cells of the tiny model
    cyc, plain = LatentField(TINY, 3, period=period), LatentField(TINY, 3)
    cells = period // TINY.upscale
    assert torch.equal(cyc.local_latent(-2, 0, 5, cells), plain.local_latent(-2, 0, 5, cells))
    assert torch.equal(cyc.local_latent(-2, -cells, 5, 3 * cells), plain.local_latent(-2, 0, 5, cells).repeat(1, 1, 3))
    for layer, step in enumerate(layer_steps(TINY)):
        n = step * cells
        assert torch.equal(cyc.noise(layer, 4, 0, 3, n), plain.noise(layer, 4, 0, 3, n))
        assert torch.equal(cyc.noise(layer, 4, 7 - n, 3, n), cyc.noise(layer, 4, 7, 3, n))
    c = cyc.coords(0, 0, 2, cells + 1)
    assert torch.equal(c[:, :, 0], c[:, :, cells])  # one turn of the horizontal angle per period
    assert torch.allclose(c[1:, 0, :cells].pow(2).sum(0), torch.ones(cells))


def test_fused_styles_wrap_with_the_canvas():
    model = random_model(TINY, seed=2)
    width = 64
    field = FusedField(TINY, [1, 2], [(4.0, 0.0), (36.0, 0.0)], 9, 5, period=width)
    pano = _render(model, field, Window(0, -12, width, 24))
    double = _render(model, field, Window(-width, -12, 2 * width, 24), tile=64)
    assert np.array_equal(double[:, :width], pano) and np.array_equal(double[:, width:], pano)
    # centre 0 at x = 4 also owns the columns just left of the join (x = 60..63)
    assert torch.equal(field.assign.labels(torch.tensor([0]), torch.tensor([62, 2, 20, 40])),
                       torch.tensor([[0, 0, 0, 1]]))


def test_bad_periods_are_refused():
    with pytest.raises(ValueError, match="period must be a positive multiple of 4 .* got 30"):
        LatentField(TINY, 0, period=30)
    with pytest.raises(ValueError, match="got 0"):
        LatentField(TINY, 0, period=0)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return checkpoint.save(random_model(TINY, seed=1), tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def _cli(tmp_path, ckpt, name, *args):
    out = tmp_path / name
    code = main(["--out", str(out), "--quiet", "--device", "cpu", "--height", "24", "--checkpoint", str(ckpt),
                 *map(str, args)])
    return code, out


def test_cli_wrap_panorama_continues_across_its_join(tmp_path, tiny_checkpoint):
    code, pano = _cli(tmp_path, tiny_checkpoint, "pano.png", "--width", 64, "--wrap", "--seed", 3)
    assert code == 0
    code, across = _cli(tmp_path, tiny_checkpoint, "across.png", "--width", 64, "--x0", 32, "--wrap",
                        "--seed", 3, "--tile", 32)
    assert code == 0
    a, b = np.asarray(Image.open(pano)), np.asarray(Image.open(across))
    assert np.array_equal(b, np.roll(a, -32, axis=1))
    code, plain = _cli(tmp_path, tiny_checkpoint, "plain.png", "--width", 64, "--seed", 3)
    assert not np.array_equal(np.asarray(Image.open(plain)), a)


def test_cli_wrap_needs_a_width_multiple_of_16(tmp_path, tiny_checkpoint, capsys):
    with pytest.raises(SystemExit) as e:
        _cli(tmp_path, tiny_checkpoint, "x.png", "--width", 100, "--wrap")
    assert e.value.code != 0
    err = capsys.readouterr().err
    assert "--wrap needs --width to be a multiple of 16 (the period of the panorama), got 100" in err
    assert not (tmp_path / "x.png").exists()


def test_wrap_width_must_hold_whole_latent_cells_of_the_model():
    """The HR model has 64 pixels per z_l cell: a 16-multiple is not enough there."""
    from igan.engine.fusion import spec_from_options

    hr = PRESETS["InfinityGAN-HR"]
    with pytest.raises(ValueError, match="multiple of 64 for model config 'InfinityGAN-HR', got 80"):
        spec_from_options(hr, Window(0, 0, 80, 16), 0, wrap=True)
    assert spec_from_options(hr, Window(0, 0, 128, 16), 0, wrap=True).period == 128
