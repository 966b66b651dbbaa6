"""Outpainting and inbetweening: the known regions render back to the inverted fits (and so
stay close to the inputs), the rest is generated and changes with the seed, every render is
the same whatever the tile size, and the CLIs refuse bad input clearly."""
import numpy as np
import pytest
import torch
from apps_util import image_like_model, one_thread, psnr_db, render
from conftest import random_model

from igan.engine.apps import outpaint as apps
from igan.engine.cli import apps as apps_cli
from igan.engine import checkpoint
from igan.engine.apps import invert as inv
from igan.engine.config import PRESETS
from igan.engine.latent import LatentField
from igan.engine.planner import Window
from igan.engine.apps.record import InversionRecord

# Known region vs the input image, 200 steps. Measured: 27.9 dB (left image) and 23.7 dB
# (right image), each with its own style; 21.6 dB for the right image fitted under the LEFT
# image's style (--one-style inbetweening).
KNOWN_PSNR_DB = 22.0
FOREIGN_STYLE_PSNR_DB = 19.0
STEPS = 200
SIZE = 48


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def setup():
    model = image_like_model("small", seed=0)
    window = Window(0, -SIZE // 2, SIZE, SIZE)
    left_img = render(model, LatentField(model.config, seed=7), window)
    right_img = render(model, LatentField(model.config, seed=9), window)
    settings = inv.InversionSettings(steps=STEPS)
    left = inv.invert(model, left_img, settings=settings, progress=False)
    return model, left_img, right_img, left


def _crop(img, box):
    x, y, w, h = box
    return img[:, y:y + h, x:x + w]


def _outside(img, box):
    x, y, w, h = box
    mask = torch.ones(img.shape[1:], dtype=torch.bool)
    mask[y:y + h, x:x + w] = False
    return img[:, mask]


@pytest.mark.slow
def test_outpainting_keeps_the_known_region_and_is_seamless(setup):
    """The pasted z_l block carries the SS halo (12 cells = 192 px each side for this config,
    as in the official code), so only pixels ~200 px away from the image see fresh latents
    alone: the output is wide enough to have such margins."""
    model, target, _, rec = setup
    req = apps.outpaint_request(rec, 640, 64, seed=1)
    a = render(model, req.field, req.window, tile=64)
    b = render(model, req.field, req.window, tile=208)
    assert a.shape == (3, 64, 640)
    assert (a - b).abs().max() < 1e-4  # the same image whatever the tiles
    known = _crop(a, req.known[0])
    assert (known - rec.fit).abs().max() < 1e-4
    assert psnr_db(known, target) >= KNOWN_PSNR_DB
    other = render(model, apps.outpaint_request(rec, 640, 64, seed=2).field, req.window, tile=128)
    assert (_crop(other, req.known[0]) - rec.fit).abs().max() < 1e-4
    margins = torch.cat([a[..., :64], a[..., -64:]], 2)
    other_margins = torch.cat([other[..., :64], other[..., -64:]], 2)
    # 0.1 = 13 uint8 levels on average: another image, far above the 1e-4 of numerics above
    assert (margins - other_margins).abs().mean() > 0.1, "a different seed must give a different completion"
    assert (_outside(a, req.known[0]) - _outside(other, req.known[0])).abs().mean() > 0.05
    assert margins.std() > 0.1  # generated content, not a flat fill


def test_outpainting_at_a_chosen_position(setup):
    model, _, _, rec = setup
    req = apps.outpaint_request(rec, 96, 64, at=(0, 16), seed=3)
    assert req.known == [(0, 16, SIZE, SIZE)]
    out = render(model, req.field, req.window, tile=48)
    assert (_crop(out, req.known[0]) - rec.fit).abs().max() < 1e-4


@pytest.mark.parametrize("size, at, match", [
    ((40, 64), None, "too small"),
    ((64, 64), (20, 0), "does not fit"),
    ((64, 64), (0, -1), "does not fit"),
])
def test_outpainting_refuses_outputs_that_cannot_hold_the_image(setup, size, at, match):
    with pytest.raises(ValueError, match=match):
        apps.outpaint_request(setup[3], *size, at=at)


def _inbetween_check(model, req, fits, targets):
    a = render(model, req.field, req.window, tile=32)
    b = render(model, req.field, req.window, tile=112)
    assert (a - b).abs().max() < 1e-4
    for box, fit, target, least in zip(req.known, fits, targets, (KNOWN_PSNR_DB, FOREIGN_STYLE_PSNR_DB)):
        assert (_crop(a, box) - fit).abs().max() < 1e-4
        assert psnr_db(_crop(a, box), target) >= least
    return a


@pytest.mark.slow
def test_one_style_inbetweening_keeps_both_ends_and_generates_the_middle(setup):
    model, left_img, right_img, left = setup
    gap = apps.min_gap(left) + 160  # 10 z_l cells outside both pasted blocks
    x0, y0 = apps.right_position(left, SIZE, SIZE, gap)
    right = inv.invert(model, right_img, x0=x0, y0=y0, settings=inv.InversionSettings(steps=STEPS),
                       style=(left.global_latent, left.styles), progress=False)
    req = apps.inbetween_request(left, right, gap, seed=4, fuse=False)
    assert req.note == "" and req.window.width == 2 * SIZE + gap
    assert req.known[1][0] - SIZE == gap
    out = _inbetween_check(model, req, [left.fit, right.fit], [left_img, right_img])
    mid = slice(SIZE + gap // 2 - 48, SIZE + gap // 2 + 48)
    middle = out[:, :, mid]
    other = render(model, apps.inbetween_request(left, right, gap, seed=5, fuse=False).field, req.window, tile=128)
    assert (middle - other[:, :, mid]).abs().mean() > 0.1  # another middle (13 levels on average), not noise
    assert middle.std() > 0.1


@pytest.mark.slow
def test_inbetweening_moves_a_record_by_whole_cells(setup):
    """A right record inverted elsewhere is moved to its place (gap rounded up to whole latent
    cells); its coordinates travel with it, so it still renders back to its fit."""
    model, left_img, right_img, left = setup
    right = inv.invert(model, right_img, settings=inv.InversionSettings(steps=STEPS),
                       style=(left.global_latent, left.styles), progress=False)
    gap = apps.min_gap(left) + 5
    req = apps.inbetween_request(left, right, gap, seed=4, fuse=False)
    got = req.known[1][0] - SIZE
    assert got >= gap and (got - gap) < model.config.upscale and "rounded up" in req.note
    _inbetween_check(model, req, [left.fit, right.fit], [left_img, right_img])


def test_inbetweening_refuses_a_gap_that_would_overlap_the_latents(setup):
    left = setup[3]
    need = apps.min_gap(left)
    with pytest.raises(ValueError, match=f"at least {need} px"):
        apps.right_position(left, SIZE, SIZE, need - 1)


# ---- CLIs --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(setup, tmp_path_factory):
    from PIL import Image

    from igan.engine.quantize import to_uint8

    model, left_img, right_img, left = setup
    d = tmp_path_factory.mktemp("apps")
    ckpt = checkpoint.save(model, d / "model.safetensors")
    paths = {"ckpt": str(ckpt), "dir": d}
    for name, img in (("left", left_img), ("right", right_img)):
        paths[name] = str(d / f"{name}.png")
        Image.fromarray(to_uint8(img).permute(1, 2, 0).numpy()).save(paths[name])
    other = d / "other.safetensors"
    checkpoint.save(random_model(PRESETS["small"], seed=1), other)
    paths["other"] = str(other)
    return paths


def _listing(d):
    return sorted(p.name for p in d.iterdir())


@pytest.mark.slow
def test_cli_invert_outpaint_inbetween(files, capsys):
    from PIL import Image

    d, ck = files["dir"], files["ckpt"]
    rec_path = str(d / "left.inv.safetensors")
    assert apps_cli.invert_main([files["left"], "--checkpoint", ck, "--steps", "40", "--out", rec_path,
                                 "--preview", str(d / "fit.png"), "--quiet"]) == 0
    out = capsys.readouterr()
    assert "PSNR" in out.out and "it/s" in out.err
    with Image.open(d / "fit.png") as im:
        assert im.size == (2 * SIZE, SIZE)
    rec = InversionRecord.load(rec_path)
    assert rec.losses["final_psnr_db"] > 15 and rec.settings["steps"] == 40
    from igan.engine.quantize import to_uint8

    fit = to_uint8(rec.fit).permute(1, 2, 0).numpy().astype(int)
    x, y = (100 - SIZE) // 2, (70 - SIZE) // 2
    # The record's fit was computed on the reference path. --bit-exact (--cpu-path reference)
    # renders the known region on that path too, whose bytes do not depend on the tiling, so it
    # equals the fit exactly on any CPU. The default path computes it within float32 rounding of
    # the reference: at most one 8-bit level on a few pixels at a rounding boundary
    # (tests/test_cpu_paths.py, tests/test_fastcpu.py for 0.4's path, whose flipped pixels
    # depend on the CPU's kernels).
    for extra, name in ((["--bit-exact"], "exact.png"), ([], "wide.png")):
        assert apps_cli.outpaint_main([rec_path, "--checkpoint", ck, "--width", "100", "--height", "70", "--seed",
                                       "3", "--out", str(d / name), "--quiet", *extra]) == 0
        with Image.open(d / name) as im:
            wide = np.asarray(im).astype(int)
        assert wide.shape == (70, 100, 3)
        levels = np.abs(wide[y:y + SIZE, x:x + SIZE] - fit)
        if extra:
            assert levels.max() == 0
        else:
            assert levels.max() <= 1 and (levels > 0).any(-1).mean() < 1e-2
    gap = apps.min_gap(rec) + 32
    for extra in ([], ["--one-style"]):
        assert apps_cli.inbetween_main([rec_path, files["right"], "--checkpoint", ck, "--gap", str(gap), "--steps",
                                        "20", "--out", str(d / "between.png"), "--quiet", *extra]) == 0
        with Image.open(d / "between.png") as im:
            assert im.size == (2 * SIZE + gap, SIZE)
    assert not [n for n in _listing(d) if "igan-tmp" in n]


def test_cli_bad_inputs(files, capsys):
    d, ck = files["dir"], files["ckpt"]
    rec_path = str(d / "bad-inputs.inv.safetensors")
    assert apps_cli.invert_main([str(d / "missing.png"), "--checkpoint", ck, "--out", rec_path, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "missing.png" in err and "does not exist" in err
    assert apps_cli.invert_main([files["left"], "--checkpoint", ck, "--steps", "2", "--out", rec_path,
                                 "--quiet"]) == 0
    capsys.readouterr()
    # A record made with another checkpoint: the error names both digests.
    rec = InversionRecord.load(rec_path)
    other_digest = apps_cli._setup(apps_cli.outpaint_parser().parse_args(
        [rec_path, "--checkpoint", files["other"], "--width", "64", "--height", "64", "--out", "x.png"]))[1]
    before = _listing(d)
    assert apps_cli.outpaint_main([rec_path, "--checkpoint", files["other"], "--width", "64", "--height", "64",
                                   "--out", str(d / "o.png"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert rec.model_digest[:16] in err and other_digest[:16] in err
    # An output too small to hold the pasted image.
    assert apps_cli.outpaint_main([rec_path, "--checkpoint", ck, "--width", "32", "--height", "64",
                                   "--out", str(d / "o.png"), "--quiet"]) == 1
    assert "too small to hold the 48x48" in capsys.readouterr().err
    # A gap that would overlap the two latent windows.
    assert apps_cli.inbetween_main([rec_path, rec_path, "--checkpoint", ck, "--gap", "3", "--out",
                                    str(d / "b.png"), "--quiet"]) == 1
    assert "too small" in capsys.readouterr().err
    assert apps_cli.inbetween_main([rec_path, rec_path, "--checkpoint", ck, "--gap", "900", "--one-style", "--blur",
                                    "5", "--out", str(d / "b.png"), "--quiet"]) == 1
    assert "--blur is for style fusion" in capsys.readouterr().err
    # Not a record, wrong output extension.
    assert apps_cli.outpaint_main([files["ckpt"], "--width", "64", "--height", "64", "--out", str(d / "o.png"),
                                   "--quiet"]) == 1
    assert "not an igan inversion record" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        apps_cli.outpaint_main([rec_path, "--width", "64", "--height", "64", "--out", str(d / "o.jpg")])
    assert "unsupported extension" in capsys.readouterr().err
    assert _listing(d) == before


@pytest.fixture(scope="module")
def fused(setup):
    model, left_img, right_img, left = setup
    gap = apps.min_gap(left) + 160
    x0, y0 = apps.right_position(left, SIZE, SIZE, gap)
    right = inv.invert(model, right_img, x0=x0, y0=y0, settings=inv.InversionSettings(steps=STEPS), progress=False)
    return right, gap


@pytest.mark.slow
def test_fused_inbetweening_keeps_each_end_with_its_own_style(setup, fused):
    """Spatial style fusion: each end keeps its own z_g and W+ and renders back to its own
    fit (an own-style fit, so the right end is as close to its input as the left), the
    styles blend in the middle, and the render is the same whatever the tile size."""
    model, left_img, right_img, left = setup
    right, gap = fused
    req = apps.inbetween_request(left, right, gap, seed=4)
    assert req.note == "" and req.blur > 1
    a = render(model, req.field, req.window, tile=32)
    b = render(model, req.field, req.window, tile=112)
    assert (a - b).abs().max() < 1e-4
    for box, rec, target in zip(req.known, (left, right), (left_img, right_img)):
        assert (_crop(a, box) - rec.fit).abs().max() < 1e-4
        assert psnr_db(_crop(a, box), target) >= KNOWN_PSNR_DB
    # Near the right end the right style shows: it differs from the same canvas in the left style.
    one = render(model, apps.inbetween_request(left, right, gap, seed=4, fuse=False).field, req.window, tile=112)
    right_part = slice(SIZE + gap - 64, SIZE + gap)
    assert (a[..., right_part] - one[..., right_part]).abs().mean() > 0.1
    left_edge = slice(0, SIZE)
    assert (a[..., left_edge] - one[..., left_edge]).abs().max() < 1e-4  # the left end is the left style in both


def test_fused_inbetweening_warns_when_the_blend_reaches_the_ends(setup, fused):
    left = setup[3]
    right, gap = fused
    req = apps.inbetween_request(left, right, gap, blur=4 * gap)
    assert "differ from their fits" in req.note
