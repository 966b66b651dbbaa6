"""The models igan ships: the default (builtin:landscapes-v2) and the earlier default
(builtin:landscapes-v1), which must still make the pictures it made."""
from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path

import pytest
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from igan.engine import identity, sources
from igan.engine.checkpoint import CheckpointError
from igan.engine.cli.render import main as render_main
from igan.engine.embedded import BUILTIN, DEFAULT_WEIGHTS, MODELS_DIR, builtin_for
from igan.engine.provenance import read_metadata
from conftest import recorded_hash

ROOT = Path(__file__).resolve().parents[1]
BASE = ["--width", "96", "--height", "64", "--device", "cpu", "--quiet"]


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _weights(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_builtin_names_load_the_shipped_files():
    default = sources.load(None)
    assert DEFAULT_WEIGHTS == MODELS_DIR / f"{BUILTIN[0]}.safetensors"
    for name in BUILTIN:
        assert (MODELS_DIR / f"{name}.safetensors").is_file()
    v2, v1 = sources.load("builtin:landscapes-v2"), sources.load("builtin:landscapes-v1")
    assert all(torch.equal(a, b) for a, b in zip(_weights(v2).values(), _weights(default).values()))
    # a different model: the earlier default is not the current one
    assert any(not torch.equal(a, b) for a, b in zip(_weights(v1).values(), _weights(default).values()))
    # both are identified as shipped models, as the default always was
    assert identity.model_identity(None) == identity.model_identity("builtin:landscapes-v2")
    assert identity.model_identity("builtin:landscapes-v1").startswith("embedded:")
    assert builtin_for(identity.model_identity("builtin:landscapes-v1")) == "builtin:landscapes-v1"
    assert builtin_for(identity.model_identity(None)) == "builtin:landscapes-v2"
    assert builtin_for("0" * 64) is None and builtin_for(None) is None


def test_unknown_builtin_and_config_with_builtin_are_refused(tmp_path, capsys):
    with pytest.raises(CheckpointError, match="no built-in model 'landscapes-v9': igan ships builtin:landscapes-v2, "
                                              "builtin:landscapes-v1"):
        sources.load("builtin:landscapes-v9")
    with pytest.raises(CheckpointError, match="config is for official checkpoints; builtin:landscapes-v1 carries its config"):
        sources.load("builtin:landscapes-v1", "mini")
    out = tmp_path / "x.png"
    assert render_main(BASE + ["--checkpoint", "builtin:nope", "--out", str(out)]) == 1
    assert "no built-in model 'nope'" in capsys.readouterr().err
    assert not out.exists()


def test_the_earlier_default_renders_its_recorded_bytes(tmp_path):
    """builtin:landscapes-v1 gives igan 0.2's default-model pixels, byte for byte (the hash
    benchmarks/output_hashes.py recorded from igan 0.2 for the README's sample; on a CPU of
    another bytes family, the hash recorded there: cpu.bytes_family)."""
    want = recorded_hash("output-hashes-0.2.json", "readme-default-sample")
    out = tmp_path / "s.png"
    assert render_main(["--width", "1024", "--height", "256", "--seed", "1", "--device", "cpu", "--quiet",
                        "--checkpoint", "builtin:landscapes-v1", "--bit-exact", "--no-metadata",
                        "--out", str(out)]) == 0
    assert sha(out) == want


def test_from_finds_the_earlier_default_by_itself(tmp_path, capsys):
    """An image made when landscapes-v1 was the default records no --checkpoint; --from
    renders it again with that model, not with today's default."""
    made = tmp_path / "old.png"
    assert render_main(BASE + ["--seed", "5", "--checkpoint", "builtin:landscapes-v1", "--out", str(made)]) == 0
    meta = read_metadata(made)
    assert meta["request"]["model"] == identity.model_identity("builtin:landscapes-v1")
    # as igan 0.3 wrote it: the same request, a command without --checkpoint
    argv = shlex.split(meta["command"])
    i = argv.index("--checkpoint")
    command = shlex.join(argv[:i] + argv[i + 2:])
    old = tmp_path / "as-0.3.png"
    info = PngInfo()
    info.add_text("Comment", command)
    info.add_text("igan", json.dumps(meta | {"command": command}))
    Image.open(made).save(old, pnginfo=info)
    again = tmp_path / "again.png"
    assert render_main(["--from", str(old), "--out", str(again), "--quiet"]) == 0
    assert (Image.open(again).tobytes() == Image.open(made).tobytes())
    assert read_metadata(again)["request"]["model"] == meta["request"]["model"]
    # asking for today's default instead is refused, naming the mismatch
    assert render_main(["--from", str(old), "--checkpoint", "builtin:landscapes-v2", "--out",
                        str(tmp_path / "no.png"), "--quiet"]) == 1
    assert "was made with the model embedded:" in capsys.readouterr().err
    assert not (tmp_path / "no.png").exists()


def test_a_render_interrupted_with_the_earlier_default_says_how_to_finish_it(tmp_path):
    """A work directory left by igan 0.3 (its model: landscapes-v1, then the default) is not
    resumed with today's default; the refusal names the shipped model that finishes it, and
    that finishes it with the bytes of an uninterrupted render."""
    import os
    import signal
    import subprocess
    import sys

    from igan.engine.store import work_dir_for

    args = [sys.executable, "-m", "igan.engine.cli.render", *BASE, "--seed", "8"]
    ref = tmp_path / "ref.png"
    assert render_main(BASE + ["--seed", "8", "--checkpoint", "builtin:landscapes-v1", "--out", str(ref)]) == 0
    out = tmp_path / "k.png"
    killed = subprocess.run(args + ["--checkpoint", "builtin:landscapes-v1", "--out", str(out)], capture_output=True,
                            text=True, env=dict(os.environ, IGAN_FAILPOINT="kill:before-output"), timeout=300)
    assert killed.returncode == -signal.SIGKILL and not out.exists() and work_dir_for(out).is_dir()
    refused = subprocess.run(args + ["--out", str(out), "--resume"], capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and not out.exists()
    assert ("it was started with the shipped model builtin:landscapes-v1: give --checkpoint builtin:landscapes-v1 "
            "to finish it") in refused.stderr
    finished = subprocess.run(args + ["--checkpoint", "builtin:landscapes-v1", "--out", str(out), "--resume"],
                              capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert out.read_bytes() == ref.read_bytes() and not work_dir_for(out).exists()
