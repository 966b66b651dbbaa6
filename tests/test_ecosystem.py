"""What other tools and users see of an output: the metadata that lets anyone re-render it,
StyleGAN's command-line conventions (--seeds/--outdir, --trunc, --version), and refusing
--config without a checkpoint."""
from __future__ import annotations

import hashlib
import shlex

import numpy as np
import pytest
import tifffile
from PIL import Image

import igan
from igan.engine.cli.render import main as render_main
from igan.engine.errors import CheckpointError, RequestError
from igan.engine.provenance import CPU_PATHS, read_metadata

BASE = ["--width", "96", "--height", "64", "--device", "cpu", "--quiet"]


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_an_output_says_how_to_render_it_again(tmp_path, ext, monkeypatch):
    out = tmp_path / f"a{ext}"
    assert render_main(BASE + ["--seed", "11", "--x0", "-40", "--styles", "2,5", "--out", str(out)]) == 0
    meta = read_metadata(out)
    req = meta["request"]
    assert meta["igan"] == igan.__version__ and req["seed"] == 11 and req["latent_rng"] == "philox4x32-10/v1"
    assert req["window"] == {"x0": -40, "y0": -32, "width": 96, "height": 64}
    assert req["model"].startswith("embedded:") and req["config"]["name"] == "mini"
    assert req["field"]["styles"] == [2, 5] and "tile_width" not in req
    if ext == ".png":
        assert Image.open(out).text["Software"] == f"igan {igan.__version__}"
    else:
        with tifffile.TiffFile(out) as tif:
            assert tif.pages[0].software == f"igan {igan.__version__}"
    # the recorded command, run again from the file's folder, writes the same bytes
    argv = shlex.split(meta["command"])
    assert argv[0] == "igan-render" and "--out" not in argv  # the bytes never depend on the file's name
    again = tmp_path / "again"
    again.mkdir()
    monkeypatch.chdir(again)
    assert render_main(argv[1:] + ["--out", out.name, "--device", "cpu", "--quiet"]) == 0
    assert sha(again / out.name) == sha(out)


def test_metadata_can_be_left_out_and_never_depends_on_tiling(tmp_path):
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    # --bit-exact (--cpu-path reference): a path whose pixels do not depend on the tiling (as the
    # default's do not; 0.4's fast path's may differ by one level on a few values), so the bytes
    # show that the metadata does not either
    assert render_main(BASE + ["--bit-exact", "--tile", "32", "--out", str(a)]) == 0
    assert render_main(BASE + ["--bit-exact", "--tile", "64", "--batch", "2", "--out", str(b)]) == 0
    assert sha(a) == sha(b)  # the same command with other tiles: the same bytes, metadata included
    assert render_main(BASE + ["--bit-exact", "--no-metadata", "--out", str(c)]) == 0
    assert Image.open(c).text == {} and read_metadata(c) is None
    np.testing.assert_array_equal(np.asarray(Image.open(c)), np.asarray(Image.open(a)))


def test_seeds_render_one_file_each_with_the_model_loaded_once(tmp_path, monkeypatch):
    from igan.engine import sources

    loads = []
    real = sources.load
    monkeypatch.setattr(sources, "load", lambda *a, **k: loads.append(a) or real(*a, **k))
    assert render_main(BASE + ["--seeds", "3-4,9", "--outdir", str(tmp_path / "s")]) == 0
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["seed0003.png", "seed0004.png", "seed0009.png"]
    assert len(loads) == 1
    assert render_main(BASE + ["--seed", "4", "--out", str(tmp_path / "one.png")]) == 0
    assert sha(tmp_path / "s" / "seed0004.png") == sha(tmp_path / "one.png")  # byte for byte, metadata too
    assert render_main(BASE + ["--seed", "4", "--trunc", "1", "--out", str(tmp_path / "t1.png")]) == 0
    assert sha(tmp_path / "t1.png") == sha(tmp_path / "one.png")  # --trunc 1 is no truncation, byte for byte
    assert render_main(BASE + ["--seeds", "1,2", "--out", str(tmp_path / "p-{seed}.tif")]) == 0
    assert (tmp_path / "p-1.tif").exists() and (tmp_path / "p-2.tif").exists()


@pytest.mark.parametrize("argv,message", [
    (["--seeds", "1-3", "--out", "x.png"], "pattern holding {seed}"),
    (["--outdir", "d"], "give --seeds too"),
    (["--seeds", "5-2"], "not a range"),
    (["--seeds", "1,2", "--stats-json", "s.json"], "describes one render"),
    (["--config", "InfinityGAN"], "give --checkpoint too, or --random-weights"),
    (["--random-weights"], "--random-weights renders a preset"),
    (["--trunc", "nan"], "--trunc must be a finite number"),
])
def test_bad_conventions_are_refused(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        render_main(BASE + argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_version_and_examples(capsys):
    with pytest.raises(SystemExit) as e:
        render_main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"igan-render {igan.__version__}"
    with pytest.raises(SystemExit):
        render_main(["--help"])
    assert "examples:\n  igan-render --width 8192" in capsys.readouterr().out


def test_truncation_pulls_styles_to_the_mean(tmp_path):
    model = igan.load(device="cpu")
    plain = model.render(64, 48, seed=2, array=True)
    assert np.array_equal(model.render(64, 48, seed=2, trunc=1.0, array=True), plain)  # 1: the official pixels
    half = model.render(64, 48, seed=2, trunc=0.5, array=True)
    assert not np.array_equal(half, plain)
    # trunc 0: every seed's w is the mean style, so two seeds differ only by their local latents
    g = model.generator
    w_avg = g.w_avg()
    assert w_avg.shape == (g.config.global_latent_dim,) and w_avg is g.w_avg()
    from igan.engine.latent import LatentField

    prepared = [g.prepare(LatentField(g.config, s).global_latent(), trunc=0.0) for s in (1, 2)]
    for a, b in zip(prepared[0].convs, prepared[1].convs):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(RequestError, match="trunc must be a finite number"):
        model.render(8, 8, trunc=float("inf"))


def test_config_without_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="give checkpoint too"):
        igan.load(config="InfinityGAN")
    out = tmp_path / "r.png"
    assert render_main(BASE + ["--config", "tiny", "--random-weights", "--out", str(out)]) == 0
    assert read_metadata(out)["request"]["model"] == "random:tiny:0"
    assert "--config tiny --random-weights" in read_metadata(out)["command"]


def test_from_renders_an_image_again_and_wider(tmp_path, capsys):
    a = tmp_path / "a.png"
    assert render_main(BASE + ["--seed", "21", "--x0", "32", "--trunc", "0.8", "--out", str(a)]) == 0
    again = tmp_path / "again.png"
    assert render_main(["--from", str(a), "--out", str(again), "--device", "cpu", "--quiet"]) == 0
    assert sha(again) == sha(a)
    wider = tmp_path / "wider.png"  # the same canvas, twice as wide: the original is its left half
    assert render_main(["--from", str(a), "--width", "192", "--out", str(wider), "--quiet"]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(wider))[:, :96], np.asarray(Image.open(a)))
    assert read_metadata(wider)["request"]["trunc"] == 0.8
    fused = tmp_path / "fused.png"  # and a recorded fusion comes back as it was
    assert render_main(BASE + ["--styles", "1,3", "--style-blur", "31", "--wrap", "--out", str(fused)]) == 0
    assert render_main(["--from", str(fused), "--out", str(again), "--quiet"]) == 0
    assert sha(again) == sha(fused)
    # another model than the one recorded is refused; so are images without a recipe
    from igan.engine import checkpoint, config
    from igan.engine.model import Generator

    other = checkpoint.save(checkpoint.init_deterministic(Generator(config.PRESETS["mini"]), 3), tmp_path / "o.safetensors")
    assert render_main(["--from", str(a), "--checkpoint", str(other), "--out", str(tmp_path / "x.png"), "--quiet"]) == 1
    assert "was made with the model embedded:" in capsys.readouterr().err
    plain = tmp_path / "plain.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(plain)
    for image, message in ((plain, "carries no igan metadata"), (tmp_path / "missing.png", "No such file")):
        with pytest.raises(SystemExit):
            render_main(["--from", str(image), "--out", str(tmp_path / "y.png")])
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "y.png").exists()


def test_reduced_precision_on_cpu_is_refused_where_measured_slower(tmp_path, monkeypatch, capsys):
    from igan.engine import pipeline

    rates = {"fp32": 100.0, "bf16": 12.0}
    paths = []
    monkeypatch.setattr(pipeline, "cpu_conv_gflops", lambda p, cpu_path="exact": paths.append(cpu_path) or rates[p])
    out = tmp_path / "b.png"
    assert render_main(BASE + ["--precision", "bf16", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "--precision bf16 is slower than fp32 on this CPU (measured now: a 3x3 conv at 12.0 GFLOP/s" in err
    assert not out.exists()
    with pytest.raises(RequestError, match="precision bf16 is slower than fp32"):
        igan.load(device="cpu", precision="bf16")
    rates["bf16"] = 250.0  # a CPU whose bf16 is faster renders in bf16
    assert render_main(BASE + ["--precision", "bf16", "--out", str(out)]) == 0 and out.exists()
    # measured on the path the render takes: the default one, or the one --cpu-path (--bit-exact) names
    assert set(paths) == {"exact"}
    assert render_main(BASE + ["--precision", "bf16", "--bit-exact", "--out", str(tmp_path / "c.png")]) == 0
    assert paths[-1] == "reference"
    assert render_main(BASE + ["--precision", "bf16", "--cpu-path", "fast-0.4", "--out", str(tmp_path / "d.png")]) == 0
    assert paths[-1] == "fast-0.4"
    # the measurement itself: a positive rate for each precision, on each of igan's CPU conv paths
    monkeypatch.undo()
    for cpu_path in CPU_PATHS:
        assert pipeline.cpu_conv_gflops("fp32", cpu_path) > 0 and pipeline.cpu_conv_gflops("bf16", cpu_path) > 0
