"""igan-train: losses against hand-computed values, the training forward against the engine,
coordinates and labels, a few real training steps, checkpoints that igan-render reads,
exact resume, and DDP under torchrun with gloo."""
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import random_model, small_config
from PIL import Image

from igan.engine import sources
from igan.engine.config import PRESETS
from igan.engine.latent import canvas_coords, official_coords
from igan.trainer import losses
from igan.trainer.data import PatchDataset
from igan.trainer.discriminator import Discriminator
from igan.trainer.generator import TrainingGenerator
from igan.trainer.latents import latent_size, sample_fakes, training_coords
from igan.trainer.scenes import scene, write_scenes
from igan.trainer.state import load_state
from igan.trainer.train import Trainer, TrainOptions, ema_decay, ema_update, lazy_adam

TINY = PRESETS["tiny"]


# ---- losses against hand-computed values --------------------------------------------------------
def test_adversarial_losses():
    real, fake = torch.tensor([0.0, 2.0]), torch.tensor([0.0, -1.0])
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731
    want_d = (sp(-0.0) + sp(-2.0)) / 2 + (sp(0.0) + sp(-1.0)) / 2
    assert losses.d_adversarial(real, fake).item() == pytest.approx(want_d, rel=1e-6)
    assert losses.g_adversarial(fake).item() == pytest.approx((sp(0.0) + sp(1.0)) / 2, rel=1e-6)


def test_coord_regression_is_the_mean_absolute_error():
    assert losses.coord_regression(torch.tensor([0.5, -1.0, 0.0]), torch.tensor([1.0, 0.0, 0.0])).item() == \
        pytest.approx((0.5 + 1.0 + 0.0) / 3)


def test_r1_of_a_quadratic_discriminator():
    x = torch.tensor([[[[1.0, 2.0]]], [[[0.0, -3.0]]]], requires_grad=True)  # [2, 1, 1, 2]
    logits = (x ** 2).flatten(1).sum(1)  # grad 2x: |grad|^2 = 4 * sum x^2 = 20 and 36
    assert losses.r1_penalty(logits, x).item() == pytest.approx((20 + 36) / 2)


def test_diversity_is_the_l1_ratio_of_the_paper():
    z = torch.tensor([[0.0, 0.0], [2.0, 2.0], [1.0, 1.0], [1.0, 5.0]]).reshape(4, 1, 1, 2)
    s = torch.tensor([[0.0, 1.0], [1.0, 0.0], [3.0, 3.0], [3.0, 3.0]]).reshape(4, 1, 1, 2)
    z_d = (2.0 + 2.0) / 2  # pair means: 2 and 2
    x_d = (1.0 + 0.0) / 2  # pair means: 1 and 0
    assert losses.diversity(z, s).item() == pytest.approx(1.0 / (x_d / z_d + 1e-5), rel=1e-6)
    # More different structures -> lower loss (mode seeking), unlike the official angular term.
    assert losses.diversity(z, s * torch.tensor([1.0, -1.0, 1.0, -1.0]).view(4, 1, 1, 1)) < losses.diversity(z, s)
    with pytest.raises(ValueError, match="even batch"):
        losses.diversity(z[:3], s[:3])


def test_path_length_of_a_linear_generator():
    a = torch.tensor([[1.0, 2.0], [0.0, 3.0], [2.0, 2.0]])  # [L=3, D=2]
    styles = torch.randn(2, 3, 2, requires_grad=True)
    images = (styles * a).sum([1, 2]).reshape(2, 1, 1, 1)
    noise = torch.tensor([0.5, -2.0]).reshape(2, 1, 1, 1)
    # grad_b = n_b a: sqrt(mean over layers of the sum over channels of (n_b a)^2)
    per_layer = (a ** 2).sum(1)  # 5, 9, 8
    want = torch.tensor([0.5, 2.0]) * per_layer.mean().sqrt()
    assert torch.allclose(losses.path_lengths(images, styles, noise), want, rtol=1e-6)
    pen, mean = losses.path_penalty(torch.tensor([1.0, 3.0]), torch.tensor(0.0))
    assert mean.item() == pytest.approx(0.02)
    assert pen.item() == pytest.approx(((1 - 0.02) ** 2 + (3 - 0.02) ** 2) / 2, rel=1e-6)


def test_lazy_adam_and_ema_constants():
    p = [torch.nn.Parameter(torch.zeros(1))]
    d = lazy_adam(p, 0.002, 16).param_groups[0]
    assert d["lr"] == pytest.approx(0.002 * 16 / 17) and d["betas"] == (0.0, pytest.approx(0.99 ** (16 / 17)))
    g = lazy_adam(p, 0.002, 4).param_groups[0]
    assert g["lr"] == pytest.approx(0.0016) and g["betas"][1] == pytest.approx(0.99 ** 0.8)
    opts = TrainOptions(batch=16)
    assert ema_decay(opts, 10**9, 32) == pytest.approx(0.5 ** (32 / 10000))  # rosinality's constant
    ramp = TrainOptions(batch=16, ema_kimg=10, ema_rampup=0.5)
    assert ema_decay(ramp, 1000, 16) == pytest.approx(0.5 ** (16 / 500))
    ema, model = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    with torch.no_grad():
        ema.weight.fill_(1.0), model.weight.fill_(3.0)
    ema_update(ema, model, 0.75)
    assert ema.weight.item() == pytest.approx(0.75 * 1 + 0.25 * 3)


# ---- generator, coordinates, data ---------------------------------------------------------------
@pytest.mark.parametrize("use_ss", [True, False])
def test_training_forward_matches_the_engine(rng, use_ss):
    cfg = small_config(rng, use_ss=use_ss)
    g = random_model(cfg, seed=4)
    n = latent_size(cfg) + 3
    z = torch.randn(3, 2, cfg.global_latent_dim)
    zl = torch.randn(3, cfg.local_latent_dim, n, n + 2)
    coords = official_coords(cfg, n, n + 2)[None].expand(3, -1, -1, -1) if use_ss else None
    with torch.no_grad():
        want = g(z, zl)
        got, structure, styles = TrainingGenerator(g)(z, zl, coords, None, noise=False)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-4 * want.abs().max().item()), (got - want).abs().max()
    assert (structure is None) == (not use_ss)
    assert styles.shape == (3, cfg.n_latent, cfg.global_latent_dim)


def test_training_forward_has_gradients_for_every_generator_parameter():
    g = random_model(TINY, seed=1).train().requires_grad_(True)
    f = sample_fakes(TINY, 4, 1.0, torch.Generator().manual_seed(0))
    img, structure, _ = TrainingGenerator(g)(f.z_slots, f.z_local, f.coords, f.inject_index)
    (img.square().mean() + structure.mean()).backward()
    missing = [n for n, p in g.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_style_mixing_switches_slots_at_the_inject_index():
    g = random_model(TINY, seed=2)
    z = torch.randn(2, 2, TINY.global_latent_dim)
    w = TrainingGenerator(g).styles(z, 2)
    assert torch.allclose(w[:, :2], g.mapping(z[:, 0])[:, None].expand(-1, 2, -1))
    assert torch.allclose(w[:, 2:], g.mapping(z[:, 1])[:, None].expand(-1, TINY.n_latent - 2, -1))


def test_training_coords_are_canvas_coords_of_the_constant_grid():
    cfg = PRESETS["small"]
    n, v = latent_size(cfg), cfg.coord_vert_sample_size
    x_st, y_st = torch.tensor([0, 4, 9]), torch.tensor([0, 70, 138])
    got = training_coords(cfg, x_st, y_st, None)
    want = torch.stack([canvas_coords(cfg, int(a), int(b), n, n, (n + v - 1) / 2) for a, b in zip(x_st, y_st)])
    assert torch.allclose(got, want, atol=1e-6)
    # official constants: pre-tanh rows 0.3 i - 6.6 on the 45-row grid, so row 0 of window 0 is tanh(-6.6)
    assert got[0, 0, 0, 0].item() == pytest.approx(math.tanh(-6.6), abs=1e-6)
    assert got[1, 0, 17, 0].item() == pytest.approx(math.tanh(0.3 * (4 + 17) - 6.6), abs=1e-6)


def test_fake_labels_follow_the_coordinates_of_dual_pairs():
    cfg = PRESETS["small"]
    f = sample_fakes(cfg, 16, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(f.z_slots[0::2], f.z_slots[1::2]) and torch.equal(f.coords[0::2], f.coords[1::2])
    assert not torch.equal(f.z_local[0::2], f.z_local[1::2])
    assert f.inject_index is not None and 1 <= f.inject_index < cfg.n_latent
    # Recover x_st of every sample (odd ones included) from its own coordinates.
    pre = torch.atanh(f.coords[:, 0, 17, 0].double())  # middle row: 0.3 (x_st + 17) - 6.6 + jitter
    x_st = torch.round((pre + 6.6) / 0.3 - 17)
    assert torch.allclose(f.labels.double(), 2 * x_st / 9 - 1)
    assert sample_fakes(cfg, 4, 0.0, torch.Generator().manual_seed(3)).inject_index is None


def test_real_patches_carry_their_vertical_position(tmp_path):
    rows = np.repeat(np.arange(60, dtype=np.uint8)[:, None], 90, 1) * 4  # value = 4 * row
    img = np.stack([rows, rows, np.tile(np.arange(90, dtype=np.uint8), (60, 1))], -1)
    Image.fromarray(img).save(tmp_path / "a.png")  # 90 wide: the centre 60x60 square is kept
    data = PatchDataset(tmp_path, full_size=60, patch_size=29)  # no resize: 60 -> 60
    x, labels = data.batch(64, torch.Generator().manual_seed(1))
    assert x.shape == (64, 3, 29, 29) and x.min() >= -1 and x.max() <= 1
    top_row = torch.round((x[:, 0, 0, 0] + 1) * 127.5 / 4)
    assert torch.allclose(labels, 2 * top_row / 31 - 1)
    assert labels.min() < -0.8 and labels.max() > 0.8
    cols = (x[:, 2, 0, 1] - x[:, 2, 0, 0]) * 127.5  # +1 normal, -1 flipped
    assert set(torch.round(cols).tolist()) == {1.0, -1.0}


def test_bad_data_folders_are_named(tmp_path):
    with pytest.raises(ValueError, match="is not a folder"):
        PatchDataset(tmp_path / "nope", 53, 29)
    with pytest.raises(ValueError, match="holds no images"):
        PatchDataset(tmp_path, 53, 29)


def test_discriminator_outputs_and_stddev_group():
    d = Discriminator(53, width=4)
    logits, ac = d(torch.randn(6, 3, 53, 53))
    assert logits.shape == ac.shape == (6,)
    x = torch.randn(6, 4, 3, 3)
    assert d._stddev(x).shape == (6, 5, 3, 3)  # 6 is not a multiple of 4: groups of 3


def test_scenes_are_deterministic_and_landscape_like(tmp_path):
    a, b = scene(0, 3, 64, 48), scene(0, 3, 64, 48)
    assert np.array_equal(a, b) and a.shape == (48, 64, 3)
    assert not np.array_equal(a, scene(0, 4, 64, 48))
    top, bottom = a[:5].reshape(-1, 3).mean(0), a[-5:].reshape(-1, 3).mean(0)
    assert top[2] > top[0]  # blue sky on top
    assert not np.allclose(top, bottom, atol=10)
    assert len(write_scenes(tmp_path, 3, width=40, height=30)) == 3


# ---- training end to end -------------------------------------------------------------------------
FAST = dict(batch=4, d_width=4, save_every=2, sample_every=2, log_every=1)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    path = tmp_path_factory.mktemp("scenes")
    write_scenes(path, 6, width=48, height=40)
    return path


def test_tiny_config_trains_with_finite_losses_and_renders(scenes, tmp_path):
    run = tmp_path / "run"
    tr = Trainer(TINY, scenes, run, TrainOptions(steps=2, **FAST), device="cpu", progress=False)
    before = {k: v.clone() for k, v in tr.g.state_dict().items()}
    tr.run()
    logs = {k: v[-1][1] for k, v in tr.history.items()}
    for key in ("d_adv", "g_adv", "r1", "path", "diversity", "d_ac_real", "d_ac_fake", "g_ac_fake"):
        assert key in logs and math.isfinite(logs[key]), key
    assert any(not torch.equal(before[k], v) for k, v in tr.g.state_dict().items())
    for name in ("model.safetensors", "state.pt", "losses.png", "samples/patches_0000002.png",
                 "checkpoints/step_0000002.safetensors"):
        assert (run / name).is_file(), name
    model = sources.load(run / "model.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(v, tr.g_ema.state_dict()[k]), k
    from igan.engine.cli.render import main as render

    out = tmp_path / "pano.png"
    assert render(["--checkpoint", str(run / "model.safetensors"), "--width", "70", "--height", "40",
                   "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    assert np.asarray(Image.open(out)).shape == (40, 70, 3)


def test_lazy_regularisers_are_logged_whenever_they_run(scenes, tmp_path):
    """R1 every 16 steps and the path length every 4 never fall on a logging step of 10 (the
    step counter moves between the losses and the log): the curves must hold them anyway."""
    opts = dict(FAST, log_every=10, d_reg_every=16, g_reg_every=4, save_every=100, sample_every=100)
    tr = Trainer(TINY, scenes, tmp_path / "run", TrainOptions(steps=33, **opts), device="cpu", progress=False)
    tr.run()
    assert [s for s, _ in tr.history["r1"]] == [1, 17, 33]
    assert [s for s, _ in tr.history["path"]] == [1, 5, 9, 13, 17, 21, 25, 29, 33]
    assert [s for s, _ in tr.history["d_adv"]] == [1, 10, 20, 30]


def test_bf16_mixed_precision_steps_are_finite_and_move_the_weights(scenes, tmp_path):
    """The autocast path (bf16 forward, fp32 regularisers and optimizer state) on CPU."""
    tr = Trainer(TINY, scenes, tmp_path / "run", TrainOptions(steps=2, precision="bf16", **FAST), device="cpu",
                 progress=False)
    before = {k: v.clone() for k, v in tr.g.state_dict().items()}
    tr.run()
    assert {"d_adv", "g_adv", "r1", "path"} <= set(tr.history)
    for key, values in tr.history.items():
        assert math.isfinite(values[-1][1]), key
    assert all(v.dtype == torch.float32 for v in tr.g.state_dict().values())
    assert any(not torch.equal(before[k], v) for k, v in tr.g.state_dict().items())
    with pytest.raises(ValueError, match="fp16"):
        Trainer(TINY, scenes, tmp_path / "r16", TrainOptions(steps=1, precision="fp16", **FAST), device="cpu",
                progress=False)


def test_checkpoint_exports(scenes, tmp_path):
    from igan.export import cli as export_cli
    run = tmp_path / "run"
    Trainer(TINY, scenes, run, TrainOptions(steps=1, **FAST), device="cpu", progress=False).run()
    packed = tmp_path / "g.packed"
    assert export_cli.main(["--checkpoint", str(run / "model.safetensors"), "--packed", str(packed), "--quiet"]) == 0
    assert packed.is_file() and packed.stat().st_size > 0


def test_resume_restores_step_weights_and_optimizer_exactly(scenes, tmp_path):
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a = Trainer(TINY, scenes, a_dir, TrainOptions(steps=2, **FAST), device="cpu", progress=False)
    a.run()
    shutil.copytree(a_dir, b_dir)
    b = Trainer(TINY, scenes, b_dir, TrainOptions(steps=3, **FAST), device="cpu", progress=False, resume=True)
    assert b.step == 2 and b.mean_path.item() == a.mean_path.item()
    for mod in ("g", "d", "g_ema"):
        sa, sb = getattr(a, mod).state_dict(), getattr(b, mod).state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), mod
    for opt in ("g_opt", "d_opt"):
        sa, sb = getattr(a, opt).state_dict()["state"], getattr(b, opt).state_dict()["state"]
        assert sa.keys() == sb.keys() and sa
        assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i]), opt
    # The next step is the one the uninterrupted run takes (same data, latents and noise).
    a.opts = TrainOptions(steps=3, **FAST)
    a.run()
    b.run()
    assert b.step == 3 and load_state(b_dir / "state.pt")["step"] == 3
    sa, sb = a.g.state_dict(), b.g.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_refuses_missing_or_foreign_state(scenes, tmp_path):
    with pytest.raises(ValueError, match="no training state"):
        Trainer(TINY, scenes, tmp_path / "none", TrainOptions(steps=1, **FAST), device="cpu", resume=True)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "state.pt").write_bytes(b"not a state")
    with pytest.raises(ValueError, match="cannot read training state"):
        Trainer(TINY, scenes, tmp_path / "bad", TrainOptions(steps=1, **FAST), device="cpu", resume=True)


def test_cli_errors_exit_non_zero(tmp_path, capsys):
    from igan.trainer.cli import main

    with pytest.raises(SystemExit):  # checked before torch loads
        main(["--data", str(tmp_path / "missing"), "--config", "tiny", "--out", str(tmp_path / "r")])
    assert "--data" in capsys.readouterr().err
    (tmp_path / "data").mkdir()
    assert main(["--data", str(tmp_path / "data"), "--config", "tiny", "--out", str(tmp_path / "r")]) == 1
    assert "holds no images" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--data", str(tmp_path / "data"), "--config", "tiny", "--out", str(tmp_path / "r"), "--batch", "3"])
    assert "argument --batch: must be even" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the run's samples would be found as training images
        main(["--data", str(tmp_path), "--config", "tiny", "--out", str(tmp_path / "r")])
    assert "lies inside --data" in capsys.readouterr().err and not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag,value,message", [
    ("--lr", "nan", "must be a finite positive number, got 'nan'"),
    ("--lr", "0", "must be a finite positive number, got '0'"),
    ("--lr", "inf", "must be a finite positive number, got 'inf'"),
    ("--r1", "-1", "must be a finite number >= 0, got '-1'"),
    ("--path-weight", "nan", "must be a finite number >= 0, got 'nan'"),
    ("--mixing", "1.5", "must be a probability in [0, 1], got '1.5'"),
    ("--ema-kimg", "-inf", "must be a finite number >= 0"),
    ("--ema-rampup", "0", "must be a finite positive number"),
    ("--steps", "0", "must be a positive integer, got 0"),
    ("--batch", "0", "must be even and >= 2"),
    ("--d-width", "-4", "must be a positive integer"),
    ("--full-size", "x", "must be an integer, got 'x'"),
    ("--save-every", "0", "must be a positive integer"),
    ("--log-every", "0", "must be a positive integer"),
    ("--seed", str(2 ** 64), "must be an integer in [-2^53, 2^53]"),
    ("--threads", "0", "must be a positive integer"),
])
def test_numeric_options_are_checked_by_the_parser_naming_the_flag(tmp_path, capsys, flag, value, message):
    """issue 26: `igan-train --lr nan` reached torch, whose message named no option."""
    from igan.trainer.cli import main

    (tmp_path / "data").mkdir()
    with pytest.raises(SystemExit) as exit_:
        main(["--data", str(tmp_path / "data"), "--config", "tiny", "--out", str(tmp_path / "r"), f"{flag}={value}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument {flag}: {message}" in err, err
    assert not (tmp_path / "r").exists()


def test_the_run_folder_is_checked_before_anything(tmp_path, capsys):
    """issue 26: `igan-train --out FILE` built the model, then said "[Errno 20] Not a directory:
    'FILE/samples'". Refused by the parser (before torch loads), naming --out and the file."""
    from igan.trainer.cli import main

    (tmp_path / "data").mkdir()
    runfile = tmp_path / "runfile"
    runfile.write_text("my notes")
    base = ["--data", str(tmp_path / "data"), "--config", "tiny"]
    for out, message in ((runfile, f"--out {str(runfile)!r} is a file, not a folder"),
                         (runfile / "sub", f"{str(runfile)!r} is a file, not a folder")):
        with pytest.raises(SystemExit) as exit_:
            main([*base, "--out", str(out)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err and "Errno" not in err, err
    assert runfile.read_text() == "my notes"
    with pytest.raises(SystemExit):
        main([*base, "--out", str(tmp_path / "r"), "--full-size", "20"])  # tiny's patches are larger
    assert "--full-size 20 is smaller than the tiny patch" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base[:3], "nope", "--out", str(tmp_path / "r")])
    assert "--config: unknown model config 'nope'" in capsys.readouterr().err


def test_train_options_from_python_name_the_flag():
    from igan.engine.errors import RequestError

    for kw, message in ((dict(lr=float("nan")), "--lr must be a finite positive number"),
                        (dict(mixing=-0.1), "--mixing must be a probability"),
                        (dict(coord_weight=float("inf")), "--coord-weight must be a finite number >= 0"),
                        (dict(log_every=0), "--log-every must be a positive integer")):
        with pytest.raises(RequestError, match=message):
            TrainOptions(**kw)


DDP_SCRIPT = """
import sys, torch, torch.distributed as dist
from igan.engine.config import PRESETS
from igan.trainer.train import Trainer, TrainOptions
tr = Trainer(PRESETS["tiny"], sys.argv[1], sys.argv[2],
             TrainOptions(steps=2, batch=2, d_width=4, save_every=2), device="cpu", progress=False)
tr.run()
flat = torch.cat([p.detach().flatten() for m in (tr.g, tr.d) for p in m.parameters()])
allp = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
dist.all_gather(allp, flat)
assert torch.equal(allp[0], allp[1]), "ranks diverged: gradients were not averaged"
tr.close()
assert not dist.is_initialized()
"""


@pytest.mark.slow
def test_torchrun_two_gloo_processes(scenes, tmp_path):
    """Two CPU processes under torchrun (gloo): they stay in sync and save one resumable state."""
    run = tmp_path / "ddp"
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(script), str(scenes), str(run)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    state = load_state(run / "state.pt")
    assert state["step"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["gen"], state["rng"][1]["gen"])  # ranks draw different data
    assert json.loads(state["options"])["batch"] == 2
    sources.load(run / "model.safetensors")


def test_embedded_default_is_the_trained_landscape_model():
    """`igan-render` without --checkpoint uses the shipped weights: the trained `mini` model
    of the v2 scenes, which puts sky (bluer, brighter) above the horizon and land or water
    below, with the scenes' times of day varying between seeds."""
    from safetensors import safe_open

    from igan.engine.embedded import DEFAULT_WEIGHTS, DESCRIPTION, embedded_model
    from igan.engine.latent import LatentField
    from igan.engine.planner import Window, plan
    from igan.engine.renderer import Renderer
    from igan.engine.runner import TorchRunner

    with safe_open(str(DEFAULT_WEIGHTS), framework="pt") as f:
        assert int(f.metadata()["trained_steps"]) >= 8000
    assert "trained by igan-train" in DESCRIPTION and "builtin:landscapes-v2" in DESCRIPTION
    model = embedded_model()
    assert model.config.name == "mini"
    window = Window(0, -128, 96, 256)  # centred on the horizon, as igan-render places it
    renderer = Renderer(TorchRunner(model, "cpu"))
    tops, bottoms = [], []
    for seed in range(8):
        rgb = renderer.render_array(LatentField(model.config, seed=seed), plan(model.config, window), uint8=True)
        rgb = np.asarray(rgb, dtype=np.float64)  # [H, W, 3]
        tops.append(rgb[:64].reshape(-1, 3).mean(0))
        bottoms.append(rgb[-64:].reshape(-1, 3).mean(0))
    top, bottom = np.mean(tops, 0), np.mean(bottoms, 0)
    assert top[2] - top[1] > bottom[2] - bottom[1] + 10, (top, bottom)
    assert top.sum() > bottom.sum(), (top, bottom)
    # day, dusk and night skies: the sky's brightness varies between seeds (the v1 model's
    # did by less than 10 levels)
    assert np.std([t.mean() for t in tops]) > 20, tops
