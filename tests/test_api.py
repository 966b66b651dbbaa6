"""The public Python API (`import igan`): the same pixels and bytes as igan-render, from one
RenderRequest, with igan-render's checks."""
import numpy as np
import pytest
from PIL import Image

import igan
from igan.engine.cli.render import main as render_main
from igan.engine.errors import CheckpointError, IganError, PathError, RequestError

ARGS = dict(width=208, height=96, seed=3, x0=-40)
CLI = ["--width", "208", "--height", "96", "--seed", "3", "--x0", "-40", "--quiet", "--device", "cpu"]
CASES = [({}, []), ({"styles": (1, 2), "style_blur": 31}, ["--styles", "1,2", "--style-blur", "31"]),
         ({"wrap": True}, ["--wrap"])]


@pytest.fixture(scope="module")
def model():
    return igan.load(device="cpu")


@pytest.mark.parametrize("options,flags", CASES, ids=["plain", "styles", "wrap"])
def test_render_in_memory_and_to_file_match_igan_render(tmp_path, model, options, flags):
    assert render_main([*CLI, *flags, "--out", str(tmp_path / "cli.png")]) == 0
    cli = np.asarray(Image.open(tmp_path / "cli.png"))
    image = model.render(**ARGS, **options)
    assert isinstance(image, Image.Image) and image.size == (208, 96)
    assert np.array_equal(np.asarray(image), cli)
    pixels = model.render(**ARGS, array=True, **options)
    assert pixels.dtype == np.uint8 and np.array_equal(pixels, cli)
    stats = model.render_to_file(tmp_path / "api.png", **ARGS, **options)
    assert stats.width == 208 and (tmp_path / "api.png").read_bytes() == (tmp_path / "cli.png").read_bytes()


def test_windows_of_one_canvas_join(model):
    whole = model.render(256, 64, seed=5, x0=0, y0=-32, array=True)
    left = model.render(96, 64, seed=5, x0=0, y0=-32, array=True)
    right = model.render(160, 64, seed=5, x0=96, y0=-32, array=True)
    assert np.array_equal(np.concatenate([left, right], 1), whole)


def test_the_api_refuses_what_igan_render_refuses(tmp_path, model):
    """The same checks as igan-render, as typed errors naming options by their keywords."""
    with pytest.raises(RequestError, match="unknown igan-render option.*bogus"):
        model.render(64, 64, bogus=1)
    with pytest.raises(ValueError, match="device belong"):
        model.render(64, 64, device="cuda")
    with pytest.raises(RequestError, match="^style_blur needs styles"):
        model.render(64, 64, style_blur=5)
    with pytest.raises(RequestError, match="^width must be a positive integer, got 0"):
        model.render(0, 64)
    with pytest.raises(PathError, match="^out '.*a.png' and preview '.*a.png' name the same file"):
        model.render_to_file(tmp_path / "a.png", 64, 64, preview=str(tmp_path / "a.png"))
    assert not list(tmp_path.iterdir())
    with pytest.raises(CheckpointError, match="does not exist"):
        igan.load(tmp_path / "missing.pth.tar")
    assert issubclass(RequestError, ValueError) and issubclass(CheckpointError, IganError)


def test_repr_names_the_model(model):
    assert "embedded model" in repr(model) and "mini" in repr(model)
