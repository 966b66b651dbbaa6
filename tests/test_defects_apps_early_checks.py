"""igan-outpaint and igan-inbetween check every option they can before the model loads and
before any image is inverted (issue 26: `igan-outpaint IMG --width 16 --height 16` refused the
size only after the whole inversion, 17.6 s at --steps 2)."""
import pytest
import torch
from conftest import random_model
from PIL import Image

from igan.engine.apps import outpaint as apps
from igan.engine.apps.invert import InversionSettings, invert
from igan.engine.cli import apps as apps_cli
from igan.engine.config import PRESETS


@pytest.fixture
def files(tmp_path, monkeypatch):
    """A 48x48 image; loading a model or inverting an image fails the test."""
    Image.new("RGB", (48, 48), (90, 120, 200)).save(tmp_path / "img.png")

    def forbidden(*a, **kw):
        raise AssertionError("the model was loaded or an image inverted before the options were checked")

    monkeypatch.setattr(apps_cli, "_setup", forbidden)
    monkeypatch.setattr(apps_cli, "_invert_image", forbidden)
    return tmp_path


@pytest.mark.parametrize("flags,message", [
    (["--width", "16", "--height", "16"],
     "--width 16 --height 16: the output is too small to hold the 48x48 inverted image (give at least --width 48 "
     "--height 48)"),
    (["--width", "64", "--height", "40"], "too small to hold the 48x48"),
    (["--width", "64", "--height", "64", "--at", "30,0"],
     "--at 30,0: the 48x48 image placed there does not fit in the 64x64 output (x must be in [0, 16]"),
    (["--width", "64", "--height", "64", "--at", "0,-1"], "--at 0,-1"),
    (["--width", "64", "--height", "64", "--compression", "12"], "--compression"),
    (["--width", "64", "--height", "64", "--ome"], "--ome"),
    (["--width", "64", "--height", "64", "--resume", "--restart"], "--resume and --restart exclude each other"),
    (["--width", "64", "--height", "64", "--save-record", "a.inv.safetensors", "--save-record", "b.inv.safetensors"],
     "--save-record is given 2 times"),
])
def test_outpaint_options_are_checked_before_the_model_loads(files, capsys, flags, message):
    out = files / "o.png"
    assert apps_cli.outpaint_main([str(files / "img.png"), *flags, "--out", str(out), "--steps", "2",
                                   "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("igan-outpaint: error: ") and message in err and "Traceback" not in err, err
    assert sorted(p.name for p in files.iterdir()) == ["img.png"]


def test_an_existing_zarr_is_refused_before_the_model_loads(files, capsys):
    (files / "o.zarr").mkdir()
    assert apps_cli.outpaint_main([str(files / "img.png"), "--width", "64", "--height", "64",
                                   "--out", str(files / "o.zarr")]) == 1
    assert "already exists; igan does not overwrite a Zarr store" in capsys.readouterr().err


@pytest.mark.parametrize("main", [apps_cli.invert_main, apps_cli.outpaint_main])
@pytest.mark.parametrize("lr", ["nan", "inf", "0", "-0.1"])
def test_lr_must_be_finite_and_positive(files, capsys, main, lr):
    argv = [str(files / "img.png"), f"--lr={lr}", "--out", str(files / "o.png")]
    if main is apps_cli.outpaint_main:
        argv += ["--width", "64", "--height", "64"]
    else:
        argv[-1] = str(files / "r.inv.safetensors")
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert f"argument --lr: must be a finite positive number, got {lr!r}" in capsys.readouterr().err


@pytest.fixture
def record(files):
    """A record of the 48x48 image (a tiny random model, one step: only its placement matters)."""
    model = random_model(PRESETS["tiny"])
    target = torch.zeros(3, 48, 48)
    rec = invert(model, target, settings=InversionSettings(steps=1, stat_samples=16), progress=False)
    rec.save(files / "img.inv.safetensors")
    return files / "img.inv.safetensors", rec


def test_inbetween_options_are_checked_before_the_model_loads(files, record, capsys):
    path, rec = record
    img, out = str(files / "img.png"), str(files / "b.png")
    need = apps.min_gap(rec)
    cases = [([img, img, "--gap", "-1"], "--gap must be >= 0, got -1"),
             ([img, img, "--gap", "300", "--one-style", "--blur", "5"], "--blur is for style fusion"),
             ([str(path), img, "--gap", str(need - 1)], f"--gap {need - 1} is too small"),
             ([img, img, "--gap", "300", "--compression", "12"], "--compression"),
             ([img, img, "--gap", "300", *[a for n in "abc" for a in ("--save-record", f"{n}.inv.safetensors")]],
              "given 3 times")]
    for argv, message in cases:
        assert apps_cli.inbetween_main([*argv, "--out", out, "--quiet"]) == 1, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    assert not (files / "b.png").exists()


def test_an_inbetween_gap_is_checked_before_the_left_image_is_inverted(files, capsys, monkeypatch):
    """For a left image the smallest gap needs the model's geometry: checked once it is loaded,
    before the inversion, for the latent window that inversion would fit."""
    model = random_model(PRESETS["tiny"])
    monkeypatch.setattr(apps_cli, "_setup", lambda args: (model, "digest", "cpu"))
    need = apps.min_gap_at(model.config, 0, 48)
    rec = invert(model, torch.zeros(3, 48, 48), settings=InversionSettings(steps=1, stat_samples=16), progress=False)
    assert need == apps.min_gap(rec)  # the window the inversion fits
    img = str(files / "img.png")
    assert apps_cli.inbetween_main([img, img, "--gap", str(need - 1), "--out", str(files / "b.png"), "--quiet"]) == 1
    assert f"--gap {need - 1} is too small" in capsys.readouterr().err
