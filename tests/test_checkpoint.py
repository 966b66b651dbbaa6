"""Official checkpoints: key/shape layout, strict loading, safe unpickling, our own format."""
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import official_state_dict, random_model

from igan.engine import checkpoint, sources
from igan.engine.config import PRESETS, from_name

DATA = Path(__file__).parent / "data"
OFFICIAL = ["InfinityGAN", "InfinityGAN-IOF", "InfinityGAN-IOP", "InfinityGAN-HR", "InfinityGAN-UR",
            "StyleGAN2_NCI_FCG"]
# Parameter counts the spec recorded by running the official code (official-generator.md 2.2, 4.4).
OFFICIAL_PARAMS = {"InfinityGAN": (105, 36_358_944), "InfinityGAN-IOF": (105, 36_358_944),
                   "InfinityGAN-IOP": (105, 36_358_944), "InfinityGAN-HR": (141, 39_360_682),
                   "InfinityGAN-UR": (159, 39_602_927), "StyleGAN2_NCI_FCG": (89, 22_830_868)}


def _parse_tsv(path):
    rows = {}
    for line in path.read_text().splitlines():
        key, shape, kind = line.split("\t")
        rows[key] = (tuple(int(s) for s in shape.strip("()").split(",") if s.strip()), kind)
    return rows


def _meta_state(cfg):
    """A state dict of the official layout with random values, built from the shape list."""
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(s, generator=gen) for k, s in checkpoint.official_shapes(cfg).items()}


def test_official_layout_matches_the_recorded_state_dict():
    recorded = _parse_tsv(DATA / "official_state_dict_InfinityGAN.tsv")
    ours = checkpoint.official_shapes(PRESETS["InfinityGAN"])
    assert {k: s for k, (s, _) in recorded.items()} == ours


@pytest.mark.parametrize("name", OFFICIAL)
def test_parameter_counts_match_the_official_models(name):
    shapes = checkpoint.official_shapes(PRESETS[name])
    params = sum(torch.Size(s).numel() for k, s in shapes.items()
                 if not (k.endswith("kernel") or ".noises." in k))
    assert (len(shapes), params) == OFFICIAL_PARAMS[name]


def _save_official(tmp_path, state, **extra):
    ckpt = {"iter": 800000, "best_fid": np.float64(12.5), "g": state, "d": {"x": torch.zeros(2)},
            "g_ema": state, "g_optim": {"state": {}, "param_groups": [{"lr": 0.002, "params": [0]}]},
            "d_optim": {}, "mean_path_lengths": [torch.tensor(0.5)], **extra}
    path = tmp_path / "best_fid.pth.tar"
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("name", OFFICIAL)
@pytest.mark.slow
def test_official_state_dict_loads_strictly_into_every_config(tmp_path, name):
    cfg = PRESETS[name]
    state = _meta_state(cfg)
    path = _save_official(tmp_path, state)
    model = sources.load(path)  # config inferred from the shapes
    assert model.config.architecture() == cfg.architecture()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    explicit = sources.load(path, config=name)
    assert explicit.config.name == name


@pytest.mark.slow
def test_mismatched_checkpoint_lists_missing_unexpected_and_misshaped_keys(tmp_path):
    state = _meta_state(PRESETS["StyleGAN2_NCI_FCG"])
    state.pop("texture_synthesizer.convs.3.noise.weight")
    state["texture_synthesizer.extra.weight"] = torch.zeros(3)
    state["texture_synthesizer.convs.1.conv.weight"] = torch.zeros(1, 512, 500, 3, 3)
    path = _save_official(tmp_path, state)
    with pytest.raises(checkpoint.CheckpointError) as err:
        sources.load(path, config="StyleGAN2_NCI_FCG")
    msg = str(err.value)
    assert "missing keys (1): texture_synthesizer.convs.3.noise.weight" in msg
    assert "unexpected keys (1): texture_synthesizer.extra.weight" in msg
    assert "texture_synthesizer.convs.1.conv.weight (1, 512, 500, 3, 3) (expected (1, 512, 512, 3, 3))" in msg
    # The wrong preset for a valid file is a mismatch too, named in the message.
    good = _save_official(tmp_path, _meta_state(PRESETS["InfinityGAN"]))
    with pytest.raises(checkpoint.CheckpointError, match="does not match model config 'InfinityGAN-HR'"):
        sources.load(good, config="InfinityGAN-HR")


@pytest.mark.slow
def test_old_numpy_module_path_in_pickles_is_allowed(tmp_path):
    """Official checkpoints were pickled under numpy 1.x: `numpy.core.multiarray.scalar`."""
    path = _save_official(tmp_path, _meta_state(PRESETS["StyleGAN2_NCI_FCG"]))
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    name = next(n for n in entries if n.endswith("data.pkl"))
    assert b"numpy._core.multiarray\nscalar" in entries[name]
    entries[name] = entries[name].replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar")
    old = tmp_path / "old.pth.tar"
    with zipfile.ZipFile(old, "w", zipfile.ZIP_STORED) as z:
        for n, data in entries.items():
            z.writestr(n, data)
    assert sources.load(old).config.name == "StyleGAN2_NCI_FCG"


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_loading_never_runs_code_from_the_checkpoint(tmp_path):
    marker = tmp_path / "pwned"
    exploit = _Exploit()
    exploit.target = str(marker)
    path = tmp_path / "evil.pth.tar"
    torch.save({"g_ema": {"x": torch.zeros(1)}, "payload": exploit}, path)
    with pytest.raises(checkpoint.CheckpointError, match="allow list"):
        sources.load(path)
    assert not marker.exists()


def test_missing_and_truncated_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
        sources.load(tmp_path / "nope.pth.tar")
    path = _save_official(tmp_path, _meta_state(PRESETS["StyleGAN2_NCI_FCG"]))
    truncated = tmp_path / "truncated.pth.tar"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(checkpoint.CheckpointError, match="truncated"):
        sources.load(truncated)
    not_a_gen = tmp_path / "other.pth.tar"
    torch.save({"g_ema": {"foo.weight": torch.zeros(2)}}, not_a_gen)
    with pytest.raises(checkpoint.CheckpointError, match="not an InfinityGAN generator"):
        sources.load(not_a_gen)


def test_a_directory_is_not_a_checkpoint(tmp_path, capsys):
    """A folder given as --checkpoint (issue 26: `--checkpoint /root`) is said to be a directory,
    with what a checkpoint is, not "not an igan ONNX export"."""
    from igan.engine.cli.render import main

    with pytest.raises(checkpoint.CheckpointError, match="is a directory, not a checkpoint") as err:
        sources.load(tmp_path)
    for words in (repr(str(tmp_path)), "best_fid.pth.tar", ".safetensors", "builtin:NAME", "ONNX export",
                  "manifest.json", "backend onnx", "model DIR"):
        assert words in str(err.value), (words, str(err.value))
    assert main(["--checkpoint", str(tmp_path), "--width", "64", "--height", "64", "--device", "cpu",
                 "--out", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"igan-render: error: {str(tmp_path)!r} is a directory, not a checkpoint: --checkpoint takes "
                          "an official InfinityGAN checkpoint file (best_fid.pth.tar)"), err
    assert "--backend onnx --model DIR" in err and "\n" not in err.rstrip("\n") and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_igan_format_round_trip_and_errors(tmp_path):
    model = random_model(PRESETS["tiny"], seed=3)
    path = checkpoint.save(model, tmp_path / "m.safetensors", {"note": "test"})
    loaded = sources.load(path)
    assert loaded.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    assert not list(tmp_path.glob(".*igan-tmp*"))
    # A file cut short, and a valid file for another config, are refused with reasons.
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:100])
    with pytest.raises(checkpoint.CheckpointError, match="cannot read igan model"):
        sources.load(cut)
    from safetensors.torch import save_file
    other = tmp_path / "other.safetensors"
    state = {k: v for k, v in model.state_dict().items() if "to_rgbs.1" not in k}
    save_file(state, str(other), {"format": "igan", "format_version": "1", "config": model.config.to_json()})
    with pytest.raises(checkpoint.CheckpointError, match=r"missing keys \(4\)"):
        sources.load(other)
    save_file(state, str(other), {"format": "igan", "format_version": "99", "config": model.config.to_json()})
    with pytest.raises(checkpoint.CheckpointError, match="format version '99'"):
        sources.load(other)


def test_official_buffers_are_checked_then_ignored(tmp_path):
    """Checkpoints built from a trained model in the official layout load back exactly."""
    model = random_model(PRESETS["small"], seed=1)
    path = _save_official(tmp_path, official_state_dict(model))
    loaded = sources.load(path, config="small")
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


def test_presets_by_name_and_json_round_trip():
    for name, cfg in PRESETS.items():
        assert from_name(name.upper()) is cfg
        assert type(cfg).from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown model config 'nope'"):
        from_name("nope")


def test_saved_models_follow_the_umask_not_0600(tmp_path):
    """safetensors alone creates 0600 files; a model that other users or ranks read follows the
    process umask like any file igan writes."""
    import stat

    from igan.engine.model import Generator

    path = checkpoint.save(Generator(PRESETS["tiny"]), tmp_path / "m.safetensors")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~checkpoint._UMASK
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left behind
