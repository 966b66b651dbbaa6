"""igan-render end to end: files, determinism across tiles/batches, bad input."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch
from conftest import official_state_dict, random_model
from PIL import Image

from igan.engine import checkpoint
from igan.engine.config import PRESETS
from igan.engine.cli.render import main


def _render(tmp_path, name, *args):
    out = tmp_path / name
    code = main(["--out", str(out), "--quiet", "--device", "cpu", *map(str, args)])
    return code, out


def _pixels(path):
    if path.suffix == ".png":
        return np.asarray(Image.open(path))
    return tifffile.imread(path)


def test_render_writes_the_file_and_prints_the_summary(tmp_path, capsys):
    code, out = _render(tmp_path, "a.png", "--width", 333, "--height", 77, "--seed", 5)
    assert code == 0
    img = _pixels(out)
    assert img.shape == (77, 333, 3) and img.dtype == np.uint8 and img.std() > 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    for part in ("333x77 px", " s: ", "MP/s", "work ratio", "peak RSS", str(out)):
        assert part in line, line


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_files_are_byte_identical_across_tile_and_batch_sizes(tmp_path, ext):
    ref = None
    for tile, batch in [(64, 1), (32, 3), (160, 2)]:
        code, out = _render(tmp_path, f"t{tile}b{batch}.{ext}", "--width", 150, "--height", 61, "--seed", 9,
                            "--x0", -20, "--tile", tile, "--batch", batch)
        assert code == 0
        data = out.read_bytes()
        ref = ref or data
        assert data == ref, (tile, batch)


def test_a_window_alone_matches_the_same_region_of_a_larger_render(tmp_path):
    _, big = _render(tmp_path, "big.png", "--width", 200, "--height", 120, "--x0", -50, "--y0", -60,
                     "--tile", 96)
    _, part = _render(tmp_path, "part.png", "--width", 37, "--height", 29, "--x0", 13, "--y0", -7,
                      "--tile", 32)
    assert np.array_equal(_pixels(part), _pixels(big)[53:53 + 29, 63:63 + 37])


@pytest.mark.slow
def test_tiff_pyramid_and_preview(tmp_path):
    preview = tmp_path / "p.png"
    code, out = _render(tmp_path, "a.tiff", "--width", 700, "--height", 300, "--tile", 256,
                        "--preview", preview, "--preview-size", 100)
    assert code == 0
    with tifffile.TiffFile(out) as tif:
        levels = tif.series[0].levels
        assert tif.is_bigtiff and levels[0].shape == (300, 700, 3) and len(levels) >= 2
    assert Image.open(preview).size == (100, 43)


def _assert_no_output(tmp_path, name):
    assert not (tmp_path / name).exists()
    assert not [p for p in tmp_path.iterdir() if "igan-tmp" in p.name]


@pytest.mark.parametrize("args, message", [
    (["--width", "0"], "--width: must be a positive integer, got 0"),
    (["--height", "-3"], "--height: must be a positive integer, got -3"),
    (["--width", "abc"], "must be a positive integer, got 'abc'"),
    (["--width", str(2**21)], f"width {2**21} exceeds the limit"),
    (["--tile", "20"], "--tile must be a multiple of 16, got 20"),
    (["--memory-budget", "inf"], "argument --memory-budget: must be a finite size"),
    (["--memory-budget", "nan"], "argument --memory-budget: must be a finite size"),
    (["--precision", "fp8"], "invalid choice: 'fp8'"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--checkpoint", "/nonexistent/best_fid.pth.tar"], "'/nonexistent/best_fid.pth.tar' does not exist"),
])
def test_bad_arguments_fail_clearly_and_write_nothing(tmp_path, capsys, args, message):
    try:
        code = main(["--out", str(tmp_path / "x.png"), "--quiet", *args])
    except SystemExit as e:  # argparse errors
        code = e.code
    assert code != 0
    assert message in capsys.readouterr().err
    _assert_no_output(tmp_path, "x.png")


def test_unknown_extension_and_unwritable_path(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path / "x.jpg"), "--quiet"])
    assert e.value.code != 0 and "unsupported extension '.jpg'" in capsys.readouterr().err
    missing_dir = tmp_path / "no" / "such" / "dir" / "x.png"
    assert main(["--out", str(missing_dir), "--quiet", "--width", "32", "--height", "32"]) != 0
    assert str(missing_dir) in capsys.readouterr().err
    assert not missing_dir.parent.exists()


def test_mismatched_checkpoint_is_refused_with_the_keys(tmp_path, capsys):
    model = random_model(PRESETS["tiny"], seed=1)
    path = checkpoint.save(model, tmp_path / "tiny.safetensors")
    sd = official_state_dict(random_model(PRESETS["small"], seed=2))
    torch.save({"g_ema": sd, "iter": 1, "best_fid": np.float64(3.0)}, tmp_path / "best_fid.pth.tar")
    code = main(["--checkpoint", str(tmp_path / "best_fid.pth.tar"), "--config", "InfinityGAN",
                 "--out", str(tmp_path / "x.png"), "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and "does not match model config 'InfinityGAN'" in err and "mis-shaped keys" in err
    _assert_no_output(tmp_path, "x.png")
    # The right ones render.
    assert main(["--checkpoint", str(path), "--out", str(tmp_path / "y.png"), "--quiet", "--width", "40",
                 "--height", "24"]) == 0
    assert main(["--checkpoint", str(tmp_path / "best_fid.pth.tar"), "--out", str(tmp_path / "z.png"),
                 "--quiet", "--width", "40", "--height", "24"]) == 0


@pytest.mark.slow
def test_console_script_shows_progress_and_exit_codes(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "igan-render")
    out = tmp_path / "c.png"
    done = subprocess.run([exe, "--width", "96", "--height", "48", "--tile", "32", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "tile/s" in done.stderr
    assert "MP/s" in done.stderr and "100%" in done.stderr
    help_text = " ".join(subprocess.run([exe, "--help"], capture_output=True, text=True).stdout.lower().split())
    assert "embedded default model (builtin:landscapes-v2): config 'mini' trained by igan-train" in help_text  # what it renders
    bad = subprocess.run([exe, "--width", "0", "--out", str(tmp_path / "d.png")], capture_output=True, text=True)
    assert bad.returncode != 0 and "--width" in bad.stderr and not (tmp_path / "d.png").exists()
