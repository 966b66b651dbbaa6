"""ProGAN's multi-scale sliced Wasserstein distance (trainer/eval/swd.py): the pyramid, the
metric's properties (0 on itself, growing with blur and colour changes, deterministic) and
`igan-eval swd`."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageFilter

from igan.trainer.eval import swd as S
from igan.trainer.eval.cli import main as eval_main
from igan.trainer.scenes import scene

KW = dict(dirs=128)  # fewer directions than the default 512: the tests' sets are small


@pytest.fixture(scope="module")
def images():
    """16 v2 scenes, 128x64 (levels 128x64, 64x32, 32x16)."""
    return S.load_set("scenes:v2:5:256x128", 16, (128, 64))[0]


def _blur(x, radius):
    return np.stack([np.asarray(Image.fromarray(i).filter(ImageFilter.GaussianBlur(radius))) for i in x])


def _hue(x, degrees):
    """Rotate colours about the grey axis (changes hue, keeps grey)."""
    t = np.radians(degrees)
    c, s, k = np.cos(t), np.sin(t), 1 / 3
    q = np.sqrt(k) * s
    m = np.array([[c + (1 - c) * k, k * (1 - c) - q, k * (1 - c) + q],
                  [k * (1 - c) + q, c + k * (1 - c), k * (1 - c) - q],
                  [k * (1 - c) - q, k * (1 - c) + q, c + k * (1 - c)]])
    return np.clip(x.astype(np.float64) @ m.T + 0.5, 0, 255).astype(np.uint8)


def _cast(x, d):
    return np.clip(x.astype(np.int64) + np.array([d, 0, -d]), 0, 255).astype(np.uint8)


# ---- the pyramid ---------------------------------------------------------------------------
def test_level_sizes():
    assert S.level_sizes(256, 256) == [(256, 256), (128, 128), (64, 64), (32, 32), (16, 16)]
    assert S.level_sizes(256, 320)[-1] == (16, 20)
    assert S.level_sizes(101, 101) == [(101, 101), (51, 51), (26, 26)]
    assert S.level_sizes(12, 30) == [(12, 30)]
    with pytest.raises(ValueError, match="at least 7x7"):
        S.level_sizes(6, 64)


def test_the_laplacian_pyramid_reconstructs_the_image(rng):
    x = rng.integers(0, 256, (2, 37, 50, 3)).astype(np.float32)
    levels = list(S.laplacian_pyramid(x, 3))
    assert [lv.shape[1:3] for lv in levels] == [(37, 50), (19, 25), (10, 13)]
    g = levels[-1]
    for lv in reversed(levels[:-1]):
        g = lv + S.pyr_up(g, lv.shape[1:3])
    np.testing.assert_allclose(g, x, atol=1e-3)
    flat = np.full((1, 20, 20, 3), 7.0, np.float32)  # a flat image: no detail, the same mean
    np.testing.assert_allclose(S.pyr_down(flat), 7.0, rtol=1e-6)
    np.testing.assert_allclose(next(S.laplacian_pyramid(flat, 2)), 0.0, atol=1e-5)


# ---- the metric ------------------------------------------------------------------------------
def test_a_set_against_itself_is_zero(images):
    r = S.swd(images, images.copy(), **KW)
    assert list(r.levels) == ["128x64", "64x32", "32x16"]
    assert r.average == 0.0 and all(v == 0.0 for v in r.levels.values())


def test_it_is_deterministic_for_a_seed(images):
    other = _blur(images, 1)
    a, b = S.swd(images, other, seed=3, **KW), S.swd(images, other, seed=3, **KW)
    assert a.levels == b.levels and a.average == b.average
    c = S.swd(images, other, seed=4, **KW)
    assert c.average != a.average and abs(c.average - a.average) < 0.2 * a.average  # another sample, same size


@pytest.mark.parametrize("perturb, amounts", [(_blur, (0.5, 1, 2, 4)), (_hue, (5, 15, 30, 60))])
def test_it_grows_with_blur_and_colour_change(images, perturb, amounts):
    values = [S.swd(images, perturb(images, a), **KW).average for a in amounts]
    assert values[0] > 1 and all(b > a for a, b in zip(values, values[1:])), values


def test_blur_shows_at_the_fine_levels_first(images):
    r = S.swd(images, _blur(images, 1), **KW)
    assert r.levels["128x64"] > 2 * r.levels["32x16"]


def test_a_uniform_colour_cast_needs_reference_normalisation(images):
    each = [S.swd(images, _cast(images, d), **KW).average for d in (5, 15, 30)]
    ref = [S.swd(images, _cast(images, d), norm="reference", **KW).average for d in (5, 15, 30)]
    assert all(b > a for a, b in zip(ref, ref[1:])) and ref[0] > 10
    assert all(e < 0.5 * r for e, r in zip(each, ref))  # ProGAN's normalisation: (nearly) invisible


def test_scene_generations_are_told_apart(images):
    same = S.load_set("scenes:v2:6:256x128", 16, (128, 64))[0]
    v1 = S.load_set("scenes:v1:6:256x128", 16, (128, 64))[0]
    assert S.swd(images, same, **KW).average < 0.8 * S.swd(images, v1, **KW).average


def test_bad_inputs_are_refused(images):
    with pytest.raises(ValueError, match="one shape"):
        S.swd(images, images[:8])
    with pytest.raises(ValueError, match="norm"):
        S.swd(images, images, norm="both")
    with pytest.raises(ValueError, match="dirs"):
        S.swd(images, images, dirs=0)
    with pytest.raises(ValueError, match="scenes:STYLE:SEED"):
        S.load_set("scenes:v2", 2, (32, 32))
    with pytest.raises(ValueError, match="style"):
        S.load_set("scenes:v9:1", 2, (32, 32))


def test_diversity():
    same = np.repeat(scene(0, 1, 64, 32)[None], 6, axis=0)
    d = S.diversity(same, **KW)
    assert d["pixel_std"] == 0.0 and d["swd_halves"] == 0.0
    varied = S.load_set("scenes:v2:0", 6, (64, 32))[0]
    assert S.diversity(varied, **KW)["pixel_std"] > 20


def test_fit_crops_to_the_aspect_then_resizes():
    im = Image.fromarray(np.arange(40 * 100 * 3, dtype=np.uint8).reshape(40, 100, 3))
    assert S.fit(im, (40, 40)).shape == (40, 40, 3)
    np.testing.assert_array_equal(S.fit(im, (40, 40)), np.asarray(im)[:, 30:70])  # centre square, no resize
    assert S.fit(im, (20, 10)).shape == (10, 20, 3)


# ---- the command line ----------------------------------------------------------------------
def test_cli_compares_two_sets_and_writes_json(tmp_path, capsys):
    folder = tmp_path / "reals"
    folder.mkdir()
    for k in range(4):
        Image.fromarray(scene(2, k, 128, 64)).save(folder / f"{k}.png")
    out = tmp_path / "swd.json"
    assert eval_main(["swd", "--fake", "scenes:v2:2:128x64", "--real", str(folder), "--count", "4",
                      "--size", "64x32", "--dirs", "64", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["swd_avg"] < 1.0  # the same scenes (through PNG): ~0
    assert list(doc["swd_levels"]) == ["64x32", "32x16"] and doc["count"] == 4 and doc["size"] == "64x32"
    assert set(doc["diversity"]["fake"]) == {"pixel_std", "swd_halves", "swd_halves_levels"}
    text = capsys.readouterr().out
    assert "level     64x32" in text and "average" in text and "SWD of halves" in text
    assert eval_main(["swd", "--fake", "scenes:v2:2", "--real", str(folder), "--count", "9", "--size", "64x32"]) == 1
    assert "fewer than the 9" in capsys.readouterr().err


def test_cli_renders_the_embedded_model(tmp_path):
    """python -m igan.trainer.eval.swd is igan-eval swd: two 32x32 renders of the embedded model."""
    done = subprocess.run([sys.executable, "-m", "igan.trainer.eval.swd", "--real", "scenes:v1:1000:320x256",
                           "--count", "2", "--size", "32x32", "--dirs", "16", "--device", "cpu", "--threads", "1",
                           "--json", str(tmp_path / "m.json"), "--save-fakes", str(tmp_path / "fakes")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["checkpoint"] == "default" and doc["fake_seeds"] == 0 and doc["swd_avg"] > 0
    assert sorted(p.name for p in (tmp_path / "fakes").iterdir()) == ["seed00000.png", "seed00001.png"]
    assert "the embedded model, canvases 0..1" in done.stdout
