"""The procedural scenes (trainer/scenes.py): v1 stays byte-for-byte what the embedded model
was trained on; v2 is deterministic, extends sideways, and holds the features it promises
(lakes that mirror, snow, forests, lit clouds, hazy far ranges, variety along x)."""
import collections
import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from igan.trainer import scenes
from igan.trainer.scenes import TIMES, scene, scene_layers, scene_v1, scene_v2

# sha256 of scene_v1(seed, index, width, height).tobytes(), taken from the generator before
# v2 was added (it was then `scene`): the embedded model's data set must stay reproducible.
V1_SHA256 = {
    (0, 0, 320, 256): "a82575642b73c65ce240effe9f718cbb5a1ec50551b3b1809b8fcbff77497277",
    (0, 7, 320, 256): "95361f0080ef47c6c54659aec02915e46c09e13e21d27297dd89a17c5589e1ea",
    (3, 5, 256, 256): "02d8cbb9c7c51b03b368d13154a15388fbff55f97f7d8630faf02a717d3380da",
    (0, 1, 64, 48): "bb65e3a8707600be23661316369383d6daaaffac8c8f3e694795d9c4be1a8873",
}


def _lum(img):
    return img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


@pytest.mark.parametrize("args", sorted(V1_SHA256))
def test_v1_scenes_are_the_bytes_the_default_model_was_trained_on(args):
    assert hashlib.sha256(scene_v1(*args).tobytes()).hexdigest() == V1_SHA256[args]
    assert np.array_equal(scene(*args, style="v1"), scene_v1(*args))


@pytest.mark.parametrize("size", [(512, 256), (64, 48), (40, 30), (7, 3), (256, 512)])
def test_v2_shape_dtype_and_determinism(size):
    w, h = size
    a = scene(0, 3, w, h)
    assert a.shape == (h, w, 3) and a.dtype == np.uint8
    assert np.array_equal(a, scene(0, 3, w, h)) and np.array_equal(a, scene_v2(0, 3, w, h))
    assert not np.array_equal(a, scene(0, 4, w, h))  # another index
    assert not np.array_equal(a, scene(1, 3, w, h))  # another set


def test_v2_is_the_default_and_styles_are_checked():
    assert np.array_equal(scene(2, 1), scene_v2(2, 1, 512, 256))
    with pytest.raises(ValueError, match="style"):
        scene(0, 0, 32, 32, style="v3")
    with pytest.raises(ValueError, match="2x2"):
        scene(0, 0, 1, 32)


def test_a_wider_scene_extends_the_narrower_one():
    for k in range(6):
        wide = scene(5, k, 700, 128)
        assert np.array_equal(scene(5, k, 256, 128), wide[:, :256])
        assert np.array_equal(scene(5, k, 90, 128), wide[:, :90])


def test_the_layers_describe_the_image():
    layers = scene_layers(0, 2, 128, 64)
    assert np.array_equal(layers["image"], scene(0, 2, 128, 64))
    assert layers["time"] in TIMES and 2 <= layers["ranges"] <= 5
    for name in ("snow_mask", "tree_mask", "water_mask", "range_map", "cloud_alpha"):
        assert layers[name].shape == (64, 128)


@pytest.fixture(scope="module")
def layers():
    """48 scenes of 256x128 (about 1.5 s)."""
    return [scene_layers(0, k, 256, 128) for k in range(48)]


def test_every_kind_of_scene_occurs(layers):
    times = collections.Counter(layer["time"] for layer in layers)
    assert set(times) == set(TIMES), times
    for feature in ("lake", "forest", "snow"):
        n = sum(layer[feature] for layer in layers)
        assert 8 <= n <= 40, (feature, n)  # in some scenes, not all
    night = np.mean([_lum(x["image"]).mean() for x in layers if x["time"] == "night"])
    day = np.mean([_lum(x["image"]).mean() for x in layers if x["time"] == "day"])
    assert night < 0.4 * day


def test_lakes_mirror_the_scene_above_the_shore(layers):
    lakes = [x for x in layers if x["lake"]]
    assert lakes
    for x in lakes:
        img, r = _lum(x["image"]), x["water_row"]
        d = min(12, r, img.shape[0] - r)
        cols = x["water_mask"][r:r + d].all(0)  # columns of open water under the shore
        if cols.sum() < 20:
            continue
        below = img[r:r + d, cols]
        mirrored = np.corrcoef(below.ravel(), img[r - d:r][::-1][:, cols].ravel())[0, 1]
        shifted = np.corrcoef(below.ravel(), img[r - d:r][:, cols].ravel())[0, 1]
        assert mirrored > 0.85 and mirrored > shifted + 0.3, (x["time"], mirrored, shifted)
        assert below.mean() < img[r - d:r, cols].mean()  # the reflection is darker


def test_high_peaks_carry_bright_snow(layers):
    snowy = [x for x in layers if x["snow"]]
    assert len(snowy) >= 8
    for x in snowy:
        img, snow = x["image"], x["snow_mask"]
        assert snow.any()
        rock = (x["range_map"] >= 0) & ~snow
        assert _lum(img[snow]).mean() > _lum(img[rock]).mean()  # whiter than the rock around it
        if x["time"] in ("day", "overcast"):
            px = img[snow].astype(int)
            lit = px[_lum(px) >= np.percentile(_lum(px), 75)]
            assert lit.min(1).mean() > 170 and (lit.max(1) - lit.min(1)).mean() < 80  # near-white


def test_forests_are_dark_jagged_silhouettes(layers):
    wooded = [x for x in layers if x["tree_mask"].sum() > 200]  # a forest, not a few trees at an edge
    assert len(wooded) >= 5
    for x in wooded:
        trees, img = x["tree_mask"], _lum(x["image"])
        sky = img[:x["horizon_row"] // 2]  # the upper part of the sky
        assert img[trees].mean() < 0.6 * sky.mean() or x["time"] in ("dusk", "night")  # all dark then
        tops = np.where(trees.any(0), trees.argmax(0), -1)  # the top row of trees per column
        tops = tops[tops >= 0]
        assert np.mean(np.abs(np.diff(tops)) > 0) > 0.3  # jagged, not a flat line


def test_far_ranges_are_paler_and_bluer(layers):
    for x in layers:
        if x["time"] != "day" or x["ranges"] < 3:
            continue
        img, rmap = x["image"].astype(float), x["range_map"]
        far, near = img[rmap == 0], img[rmap == x["ranges"] - 1]
        if len(far) < 50 or len(near) < 50:
            continue
        assert _lum(far).mean() > _lum(near).mean()
        assert (far[:, 2] - far[:, 0]).mean() > (near[:, 2] - near[:, 0]).mean()


def test_clouds_have_lit_tops_and_darker_bases(layers):
    diffs = []
    for x in layers:
        if x["time"] != "day":
            continue
        a, img = x["cloud_alpha"], _lum(x["image"])
        k = 3
        core = a[k:-k] > 0.9
        tops = core & (a[:-2 * k] < 0.1)  # clear sky k rows above
        bases = core & (a[2 * k:] < 0.1)  # clear sky k rows below
        if tops.sum() > 10 and bases.sum() > 10:
            diffs.append(img[k:-k][tops].mean() - img[k:-k][bases].mean())
    assert len(diffs) >= 3 and np.mean(diffs) > 10 and np.mean(np.array(diffs) > 0) > 0.7


def test_features_vary_along_x():
    for k in range(8):
        x = scene_layers(0, k, 512, 256)
        sky = x["range_map"] < 0
        skyline = np.where((~sky).any(0), (~sky).argmax(0), 256)  # first range row per column
        assert skyline.std() > 4  # peaks and passes, not a flat band
        assert np.abs(skyline[:256] - skyline[256:]).mean() > 4  # the halves differ: not one motif


def test_command_line_writes_scenes_and_a_contact_sheet(tmp_path, capsys):
    assert scenes.main(["--out", str(tmp_path / "s"), "--count", "2", "--width", "40", "--height", "30"]) == 0
    files = sorted((tmp_path / "s").glob("*.png"))
    assert [p.name for p in files] == ["scene_00000.png", "scene_00001.png"]
    assert np.array_equal(np.asarray(Image.open(files[1])), scene(0, 1, 40, 30))
    assert scenes.main(["--out", str(tmp_path / "v1"), "--count", "1", "--style", "v1", "--width", "40",
                        "--height", "30"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "v1" / "scene_00000.png")), scene_v1(0, 0, 40, 30))
    sheet = tmp_path / "sheet.png"
    assert scenes.main(["--contact-sheet", str(sheet), "--count", "5", "--columns", "2", "--thumb", "48x24"]) == 0
    im = Image.open(sheet)
    assert im.size == (2 * 48 + 4, 3 * 24 + 2 * 4) and im.mode == "P"
    assert "contact sheet of 5 v2 scenes" in capsys.readouterr().out


def test_keep_aspect_draws_patches_across_the_whole_width(tmp_path):
    """igan-train --keep-aspect: a 4:1 panorama keeps its width, and patches come from all of
    it (the default, as the official code, sees only the centre square)."""
    from PIL import Image

    from igan.trainer.data import PatchDataset

    img = np.zeros((32, 128, 3), np.uint8)
    img[..., 0] = np.arange(128)[None, :] * 2  # red = 2 x column
    Image.fromarray(img).save(tmp_path / "wide.png")
    gen = torch.Generator().manual_seed(0)
    wide = PatchDataset(tmp_path, full_size=32, patch_size=8, keep_aspect=True)
    assert tuple(wide.images[0].shape) == (32, 128, 3)
    square = PatchDataset(tmp_path, full_size=32, patch_size=8)
    assert tuple(square.images[0].shape) == (32, 32, 3)
    firsts = set()
    for _ in range(50):
        x, labels = wide.batch(8, gen)
        red = ((x[:, 0] + 1) * 127.5).round()  # [B, 8, 8]
        steps = red[:, :, 1:] - red[:, :, :-1]
        assert ((steps == 2) | (steps == -2)).all()  # a contiguous run of columns (flipped or not)
        firsts.update(int(v) // 2 for v in red[:, 0, 0].tolist())
        assert labels.min() >= -1 and labels.max() <= 1
    assert min(firsts) < 16 and max(firsts) > 112  # both ends of the panorama are drawn
