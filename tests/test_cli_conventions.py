"""Conventions every console script keeps, as the StyleGAN-family tools do: `--version`,
`--help` with example command lines that parse, the model named by `--checkpoint`; and
igan-bench measures each backend igan-render renders with, onnx included."""
import argparse
import importlib
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from conftest import random_model
from PIL import Image

from igan.engine import checkpoint
from igan.engine.config import PRESETS
from igan.engine.provenance import sha256_file
from igan.export.packed import read_packed

ROOT = Path(__file__).resolve().parents[1]


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]  # PEP 621 metadata
VERSION = PROJECT["version"]
SCRIPTS = dict(PROJECT["scripts"])  # name -> "module:function"
OTHER_CHANGE = "igan-render's command line belongs to another change"


def _main(name: str):
    module, function = SCRIPTS[name].split(":")
    return getattr(importlib.import_module(module), function)


def _exit(name: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of a command that exits through argparse."""
    with pytest.raises(SystemExit) as done:
        _main(name)(argv)
    out = capsys.readouterr()
    return done.value.code, out.out, out.err


def test_the_scripts_are_found():
    assert {"igan-render", "igan-train", "igan-export", "igan-bench", "igan-eval", "igan-invert", "igan-outpaint",
            "igan-inbetween"} <= set(SCRIPTS)
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_script_answers_version(name, capsys):
    code, out, err = _exit(name, ["--version"], capsys)
    if name == "igan-render" and "unrecognized arguments: --version" in err:
        pytest.skip(f"{OTHER_CHANGE}: it has no --version yet")
    assert (code, out) == (0, f"{name} {VERSION}\n"), err


class _Parsed(BaseException):
    """Raised instead of running the command once its options parsed."""


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_help_shows_examples_that_parse(name, capsys, monkeypatch):
    code, out, _ = _exit(name, ["--help"], capsys)
    assert code == 0
    examples = re.findall(rf"^  {name} (.*)$", out, re.M)  # each on its own line, not re-wrapped
    if name == "igan-render" and not examples:
        pytest.skip(f"{OTHER_CHANGE}: its help has no examples yet")
    assert "examples" in out and len(examples) >= 2, out
    parse_args = argparse.ArgumentParser.parse_args

    def parse_only(self, args=None, namespace=None):
        parse_args(self, args, namespace)  # a wrong option exits with status 2
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    for line in examples:
        with pytest.raises(_Parsed):
            _main(name)(shlex.split(line))


def test_version_and_help_do_not_load_torch():
    """The light commands answer before torch is imported (igan-train, igan-eval and igan-invert
    import torch modules for their help: the trainer's defaults, the Inception file's name, the
    inversion's loss)."""
    code = ("import sys\n"
            "from igan.engine.cli import apps, bench\nfrom igan.export import cli as export\n"
            "for main in (apps.outpaint_main, apps.inbetween_main, bench.main, export.main):\n"
            "    for flag in ('--version', '--help'):\n"
            "        try:\n            main([flag])\n        except SystemExit as e:\n"
            "            assert e.code == 0, (main, flag)\n"
            "print('HEAVY', [n for n in ('torch', 'numpy', 'onnx') if n in sys.modules], file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "HEAVY []" in done.stderr, done.stderr


# ---- igan-export --checkpoint, and the deprecated positional ----------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("conventions")
    return checkpoint.save(random_model(PRESETS["tiny"], seed=5), root / "tiny.safetensors")


@pytest.fixture(scope="module")
def onnx_export(tiny):
    """The tiny model's fp32 graphs, exported through --checkpoint."""
    pytest.importorskip("onnxruntime")
    from igan.export.cli import main

    out = tiny.parent / "onnx"
    assert main(["--checkpoint", str(tiny), "--onnx", str(out), "--precisions", "fp32", "--quiet"]) == 0
    return out


def test_export_reads_the_checkpoint_option(onnx_export, tiny):
    manifest = json.loads((onnx_export / "manifest.json").read_text())
    assert manifest["source_sha256"] == sha256_file(tiny)  # that checkpoint, not the embedded model
    assert sorted(p.name for p in onnx_export.glob("*.onnx")) == [
        "mapping.fp32.onnx", "structure.fp32.onnx", "texture.fp32.onnx"]


def test_export_positional_checkpoint_is_deprecated_but_works(tiny, tmp_path, capsys):
    from igan.export.cli import main

    flag, positional = tmp_path / "flag.packed", tmp_path / "positional.packed"
    assert main(["--checkpoint", str(tiny), "--packed", str(flag), "--quiet"]) == 0
    assert "deprecated" not in capsys.readouterr().err
    assert main([str(tiny), "--packed", str(positional), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "deprecated" in err and f"--checkpoint {tiny}" in err
    (meta_f, tensors_f), (meta_p, tensors_p) = read_packed(flag), read_packed(positional)
    assert meta_p == meta_f and meta_p["source_sha256"] == sha256_file(tiny)  # the same export either way
    assert tensors_p.keys() == tensors_f.keys() and all(torch.equal(tensors_p[k], tensors_f[k]) for k in tensors_f)
    code, _, err = _exit("igan-export", [str(tiny), "--checkpoint", str(tiny), "--packed", str(tmp_path / "x.packed")],
                         capsys)
    assert code == 2 and "given twice" in err and not (tmp_path / "x.packed").exists()
    code, out, _ = _exit("igan-export", ["--help"], capsys)
    assert "deprecated" in out


# ---- igan-bench --backend onnx -----------------------------------------------------------------
def test_bench_measures_the_onnx_backend(onnx_export, tmp_path, capsys):
    from igan.engine.cli.bench import main

    plot, js = tmp_path / "bench.png", tmp_path / "bench.json"
    code = main(["--backend", "onnx", "--model", str(onnx_export), "--device", "cpu", "--sizes", "48,64x32",
                 "--plot", str(plot), "--json", str(js)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "onnx fp32 on onnxruntime CPU" in out.out  # the onnx runner ran, not torch
    assert "| 48x48 |" in out.out and "| 64x32 |" in out.out
    data = json.loads(js.read_text())
    assert (data["backend"], data["precision"]) == ("onnx", "fp32")
    assert [(r["width"], r["height"]) for r in data["rows"]] == [(48, 48), (64, 32)]
    for r in data["rows"]:
        assert r["seconds"] > 0 and r["tiles"] >= 1
        assert r["mp_per_s"] == pytest.approx(r["width"] * r["height"] / 1e6 / r["seconds"])
    with Image.open(plot) as im:
        assert im.format == "PNG"


@pytest.mark.parametrize("argv,message", [
    (["--backend", "onnx"], "give it --model DIR"),
    (["--model", "export"], "--model DIR is the export of --backend onnx"),
    (["--backend", "onnx", "--model", "export", "--checkpoint", "m.safetensors"], "exclude each other"),
])
def test_bench_refuses_a_model_without_its_backend(argv, message, capsys):
    code, _, err = _exit("igan-bench", argv, capsys)
    assert code == 2 and message in err
