"""No command may overwrite its inputs or write two outputs to one file (igan.engine.paths), and
every input and output is checked before the model loads: the CLI tests below fail if a command
so much as loads a model before refusing."""
import os

import pytest

from igan.engine.cli import apps as apps_cli
from igan.engine.paths import PathConflict, PathError, check_distinct, check_writable



# ---- check_distinct / check_writable ----------------------------------------------------------
def test_the_same_string_conflicts_and_names_both_options(tmp_path):
    a = str(tmp_path / "ckpt.pth.tar")
    with pytest.raises(PathConflict) as err:
        check_distinct({"--checkpoint": a}, {"--out": a})
    assert str(err.value) == f"--out {a!r} would overwrite the input --checkpoint {a!r}; choose another path"
    with pytest.raises(PathConflict, match=r"^--out '.*a\.png' and --preview '.*a\.png' name the same file"):
        check_distinct({}, {"--out": str(tmp_path / "a.png"), "--preview": str(tmp_path / "a.png")})


def test_dotdot_symlink_and_hard_link_spellings_conflict(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    real = tmp_path / "real.bin"
    real.write_bytes(b"data")
    (tmp_path / "sym.bin").symlink_to(real)
    os.link(real, tmp_path / "hard.bin")
    for other in (tmp_path / "sub" / ".." / "real.bin", tmp_path / "sym.bin", tmp_path / "hard.bin"):
        with pytest.raises(PathConflict, match="IMAGE"):
            check_distinct({"IMAGE": real}, {"--out": other})
        with pytest.raises(PathConflict, match="name the same file"):
            check_distinct({}, {"--out": real, "--json": other})
    # Relative against absolute spelling of a file that does not exist yet.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PathConflict):
        check_distinct({"--checkpoint": "new.bin"}, {"--out": tmp_path / "sub" / ".." / "new.bin"})


def test_distinct_paths_none_and_outputs_inside_input_folders_pass(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"a")
    b.write_bytes(b"a")  # same bytes, different files
    check_distinct({"--checkpoint": a}, {"--out": b, "--preview": None, "--json": tmp_path / "c.json"})
    check_distinct({"--checkpoint": None}, {"--out": None})
    check_distinct({"--data": tmp_path}, {"--out": tmp_path / "out.png"})  # only equality conflicts
    check_distinct({"LEFT": a, "RIGHT": a}, {"--out": b})  # inputs may repeat


def test_output_folders_may_not_hold_or_be_an_input(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pth.tar").write_bytes(b"x")
    with pytest.raises(PathConflict, match=r"^--out '.*run' would overwrite the input --data '.*run'"):
        check_distinct({"--data": run}, {}, {"--out": run})
    with pytest.raises(PathConflict, match=r"CHECKPOINT '.*model\.pth\.tar' lies inside --onnx '.*run'"):
        check_distinct({"CHECKPOINT": run / "model.pth.tar"}, {}, output_dirs={"--onnx": run})
    with pytest.raises(PathConflict, match=r"--packed .* lies inside --onnx"):
        check_distinct({}, {"--packed": run / "w.packed"}, {"--onnx": run})
    check_distinct({"CHECKPOINT": run / "model.pth.tar"}, {}, {"--onnx": tmp_path / "runner"})  # a prefix only


def test_outputs_must_be_writable_files(tmp_path, monkeypatch):
    check_writable("--out", tmp_path / "new.png")
    with pytest.raises(PathError, match=r"^--out '.*' is a directory"):
        check_writable("--out", tmp_path)
    with pytest.raises(PathError, match=r"^--json '.*nope/r\.json': directory '.*nope' does not exist"):
        check_writable("--json", tmp_path / "nope" / "r.json")
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # chmod would not stop root
    with pytest.raises(PathError, match=r"directory '.*' is not writable"):
        check_writable("--out", tmp_path / "new.png")


# ---- every CLI refuses before any model work ---------------------------------------------------
@pytest.fixture
def no_model_work(monkeypatch):
    """Loading a model (or building a trainer) fails the test: refusals must come first."""
    from igan.engine import sources
    from igan.trainer import cli as train_cli

    def forbidden(*args, **kw):
        raise AssertionError("a model was loaded before the paths were checked")

    monkeypatch.setattr(sources, "load", forbidden)
    monkeypatch.setattr(train_cli, "Trainer", forbidden)


def run_cli(main, argv, capsys) -> tuple[int, str]:
    """Exit status and stderr of one command, whether it returns or exits through argparse."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def refused(main, argv, capsys, *names, unchanged=()) -> str:
    """Run a colliding command: non-zero exit, a one-line message naming both options, and the
    files in `unchanged` byte-identical afterwards."""
    before = {p: p.read_bytes() for p in unchanged}
    code, err = run_cli(main, argv, capsys)
    assert code != 0, err
    message = err.strip().splitlines()[-1]
    assert message.split(": error: ")[0].startswith("igan-"), err
    assert all(n in message for n in names), (names, err)
    assert "Traceback" not in err
    assert {p: p.read_bytes() for p in unchanged} == before
    return message


@pytest.fixture
def files(tmp_path):
    from PIL import Image

    img = tmp_path / "a.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(img)
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"weights the user cannot lose")
    return tmp_path, img, ckpt


def test_igan_invert_refuses_collisions(files, capsys, no_model_work):
    d, img, ckpt = files
    main = apps_cli.invert_main
    msg = refused(main, [img, "--checkpoint", ckpt, "--out", ckpt], capsys, "--out", "--checkpoint", unchanged=[ckpt])
    assert "would overwrite the input" in msg
    refused(main, [img, "--out", d / "r.safetensors", "--preview", d / "x" / ".." / "a.png"], capsys,
            "--preview", "IMAGE", unchanged=[img])
    (d / "link.safetensors").symlink_to(d / "r.safetensors")
    refused(main, [img, "--out", d / "r.safetensors", "--preview", d / "link.safetensors"], capsys,
            "--preview", "--out", "name the same file")


def test_igan_outpaint_refuses_collisions(files, capsys, no_model_work):
    d, img, ckpt = files
    main = apps_cli.outpaint_main
    size = ["--width", "64", "--height", "64"]
    refused(main, [img, *size, "--out", img], capsys, "--out", "INPUT", unchanged=[img])
    os.link(ckpt, d / "hard.safetensors")
    refused(main, [img, *size, "--checkpoint", ckpt, "--out", d / "o.png", "--save-record", d / "hard.safetensors"],
            capsys, "--save-record", "--checkpoint", unchanged=[ckpt])


def test_igan_inbetween_refuses_collisions(files, capsys, no_model_work):
    d, img, ckpt = files
    right = d / "b.png"
    right.write_bytes(img.read_bytes())
    main = apps_cli.inbetween_main
    refused(main, [img, right, "--gap", "64", "--out", right], capsys, "--out", "RIGHT", unchanged=[right])
    refused(main, [img, right, "--gap", "64", "--out", d / "o.png", "--save-record", d / "r.safetensors",
                   "--save-record", d / "r.safetensors"], capsys, "--save-record (left)", "--save-record (right)")
    refused(main, [img, right, "--gap", "64", "--checkpoint", ckpt, "--out", d / "o.png",
                   "--save-record", ckpt], capsys, "--save-record (left)", "--checkpoint", unchanged=[ckpt])


def test_igan_export_refuses_collisions(files, capsys, no_model_work):
    from igan.export.cli import main

    d, _, _ = files
    packed = d / "w.packed"
    packed.write_bytes(b"packed weights")
    refused(main, ["--checkpoint", packed, "--packed", packed], capsys, "--packed", "--checkpoint", unchanged=[packed])
    export = d / "export"
    export.mkdir()
    inside = export / "model.safetensors"
    inside.write_bytes(b"weights")
    refused(main, ["--checkpoint", inside, "--onnx", export], capsys, "--checkpoint", "--onnx", "lies inside",
            unchanged=[inside])


def test_igan_train_refuses_a_run_folder_that_is_the_data(files, capsys, no_model_work):
    from igan.trainer.cli import main

    d, img, _ = files
    listing = sorted(os.listdir(d))
    refused(main, ["--data", d, "--config", "tiny", "--out", d / "sub" / "..", "--steps", "1"], capsys,
            "--data", "--out", unchanged=[img])
    assert sorted(os.listdir(d)) == listing


def test_igan_eval_refuses_collisions(files, capsys, no_model_work):
    from igan.trainer.eval.cli import main

    d, img, ckpt = files
    weights = d / "inception.pth"
    weights.write_bytes(b"inception weights")
    stats = d / "real.npz"
    stats.write_bytes(b"real statistics")
    common = ["scaleinv-fid", "--scale", "1", "--num-fake", "1"]
    refused(main, [*common, "--real", d, "--inception", weights, "--json", weights], capsys,
            "--json", "--inception", unchanged=[weights])
    refused(main, [*common, "--real", stats, "--inception", weights, "--save-real-stats", stats], capsys,
            "--save-real-stats", "--real", unchanged=[stats])
    refused(main, [*common, "--checkpoint", ckpt, "--real", d, "--inception", weights, "--json", ckpt], capsys,
            "--json", "--checkpoint", unchanged=[ckpt])


def test_igan_bench_refuses_collisions(files, capsys, no_model_work):
    from igan.engine.cli.bench import main

    d, img, ckpt = files
    refused(main, ["--checkpoint", ckpt, "--sizes", "64", "--plot", d / "p.png", "--json", ckpt], capsys,
            "--json", "--checkpoint", unchanged=[ckpt])
    refused(main, ["--sizes", "64", "--plot", img, "--json", img], capsys, "--plot", "--json", unchanged=[img])


# ---- inputs and outputs are checked before the model loads or an inversion starts --------------
def test_a_directory_given_as_an_image_or_record_is_named_so(files, capsys, no_model_work):
    d, img, _ = files
    msg = refused(apps_cli.invert_main, [d, "--out", d / "r.safetensors"], capsys, repr(str(d)), "is a directory")
    assert "does not exist" not in msg
    (d / "rec.safetensors").mkdir()
    refused(apps_cli.outpaint_main, [d / "rec.safetensors", "--width", "64", "--height", "64", "--out", d / "o.png"],
            capsys, "rec.safetensors", "is a directory")
    refused(apps_cli.inbetween_main, [img, d, "--gap", "64", "--out", d / "o.png"], capsys, "is a directory")


def test_inbetween_checks_its_right_input_before_inverting_the_left(files, capsys, no_model_work):
    d, img, _ = files
    argv = ["--gap", "64", "--out", d / "o.png", "--steps", "100000"]
    refused(apps_cli.inbetween_main, [img, d / "missing.png", *argv], capsys, "missing.png", "does not exist")
    (d / "junk.png").write_bytes(b"not an image")
    refused(apps_cli.inbetween_main, [img, d / "junk.png", *argv], capsys, "junk.png", "cannot read image")
    refused(apps_cli.inbetween_main, [img, d / "missing.safetensors", *argv], capsys, "missing.safetensors",
            "does not exist")


def test_outputs_are_checked_before_the_inversion(files, capsys, no_model_work):
    d, img, _ = files
    refused(apps_cli.invert_main, [img, "--out", "/nonexistent-dir/r.safetensors", "--steps", "100000"], capsys,
            "--out", "directory '/nonexistent-dir' does not exist")
    (d / "adir.safetensors").mkdir()
    refused(apps_cli.invert_main, [img, "--out", d / "adir.safetensors", "--steps", "100000"], capsys,
            "--out", "is a directory")
    refused(apps_cli.invert_main, [img, "--out", d / "r.safetensors", "--preview", d / "no" / "p.png"], capsys,
            "--preview", "does not exist")
    refused(apps_cli.outpaint_main, [img, "--width", "64", "--height", "64", "--out", d / "o.png",
                                     "--save-record", d / "no" / "r.safetensors"], capsys, "--save-record",
            "does not exist")
    refused(apps_cli.inbetween_main, [img, img, "--gap", "64", "--out", d / "no" / "o.png", "--steps", "100000"],
            capsys, "--out", "does not exist")
