"""GAN inversion: a generated image is recovered, the record round-trips and renders back to
the fit anywhere on the canvas, the gradients are right, and the losses do what they say."""
import math

import pytest
import torch
from apps_util import image_like_model, one_thread, psnr_db, render
from conftest import random_model

from igan.engine.apps import invert as inv
from igan.engine.config import PRESETS
from igan.engine.latent import LatentField
from igan.engine.apps.paste import Paste, PastedField
from igan.engine.planner import Window, plan
from igan.engine.renderer import Renderer
from igan.engine.runner import TorchRunner
from igan.engine.apps.record import InversionRecord, RecordError, model_digest

# Measured: 29.9 dB after 300 steps (small config, 48 px, 2 threads, about 7 s); 200 steps gave
# 27.9-32.9 dB over three model seeds.
PSNR_THRESHOLD_DB = 27.0
STEPS = 300


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def inverted():
    model = image_like_model("small", seed=0)
    window = Window(0, -24, 48, 48)
    target = render(model, LatentField(model.config, seed=7), window)
    first = {}
    rec = inv.invert(model, target, settings=inv.InversionSettings(steps=STEPS), progress=False,
                     on_step=lambda step, losses: first.setdefault("mse", 2 * losses["pixel"]))
    return model, target, rec, first["mse"]


@pytest.mark.slow
def test_inverting_a_generated_image_recovers_it(inverted):
    model, target, rec, first_mse = inverted
    p = psnr_db(rec.fit, target)
    assert p >= PSNR_THRESHOLD_DB, p
    assert abs(rec.losses["final_psnr_db"] - p) < 1e-6
    assert rec.losses["final_mse"] < first_mse / 100
    # The saved latents are the optimised variables, not a copy of the target.
    assert not torch.equal(rec.fit, target)


def test_record_roundtrips_and_renders_back_to_the_fit(inverted, tmp_path):
    model, _, rec, _ = inverted
    path = rec.save(tmp_path / "rec.safetensors")
    back = InversionRecord.load(path)
    assert back.placement == rec.placement and back.model_digest == rec.model_digest
    for name in ("global_latent", "styles", "local_latent", "coords", "fit"):
        assert torch.equal(getattr(back, name), getattr(rec, name)), name
    assert all(torch.equal(a, b) for a, b in zip(back.noises, rec.noises))
    assert back.settings["perceptual_loss"] == inv.PERCEPTUAL_REPLACEMENT
    p = back.placement
    window = Window(p.x0, p.y0, p.width, p.height)
    field = PastedField(LatentField(model.config, seed=123, horizon=back.horizon), back)
    for tile in (16, 32, 64):
        assert (render(model, field, window, tile) - rec.fit).abs().max() < 1e-4, tile
    # On the reference path, where the fit was computed, exactly: its bytes depend on neither the
    # tiling nor the CPU's kernels (tests/test_outpaint.py's CLI test rests on this).
    exact = Renderer(TorchRunner(model, cpu_path="reference"))
    for tile in (16, 48):
        got = torch.from_numpy(exact.render_array(field, plan(model.config, window, tile=tile))).permute(2, 0, 1)
        assert torch.equal(got, rec.fit), tile
    # Moved by whole latent cells (the coordinates travel with the record): the same fit.
    up = model.config.upscale
    moved = PastedField(LatentField(model.config, seed=5), Paste(back, dx=-7, dy=3))
    window = Window(p.x0 - 7 * up, p.y0 + 3 * up, p.width, p.height)
    assert (render(model, moved, window, 32) - rec.fit).abs().max() < 1e-4


def test_record_refuses_another_model(inverted, tmp_path):
    _, _, rec, _ = inverted
    other = random_model(PRESETS["small"], seed=1)
    with pytest.raises(RecordError, match=rec.model_digest[:16]) as e:
        rec.check_model(other)
    assert model_digest(other)[:16] in str(e.value)
    rec.check_model(inverted[0])


def test_not_a_record_is_refused(tmp_path):
    with pytest.raises(RecordError, match="does not exist"):
        InversionRecord.load(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(RecordError, match="cannot read"):
        InversionRecord.load(bad)


def test_gradients_through_prepare_and_synthesize_match_finite_differences():
    """The inversion's forward (the renderer's math, with its in-place ops) differentiates
    correctly: float64 gradcheck w.r.t. z_g, W+, z_l and a noise map on the tiny model."""
    cfg = PRESETS["tiny"]
    model = random_model(cfg, seed=3).double().requires_grad_(False)
    field = LatentField(cfg, seed=4)
    n = 2 * cfg.ss_halo + 6
    z_l, coords, noises = field.window(0, 0, n, n)
    gen = torch.Generator().manual_seed(0)
    z_g = torch.randn(cfg.global_latent_dim, generator=gen, dtype=torch.float64, requires_grad=True)
    styles = torch.randn(cfg.n_latent, cfg.global_latent_dim, generator=gen, dtype=torch.float64,
                         requires_grad=True)
    z_l = z_l.double().requires_grad_(True)
    noises = [x[0].double() for x in noises]
    noises[1].requires_grad_(True)

    def f(z_g, styles, z_l, noise1):
        ns = [noises[0], noise1, *noises[2:]]
        return inv.synthesize_window(model, z_g, styles, z_l, coords.double(), ns, (0, 0), 5, 5)

    assert torch.autograd.gradcheck(f, (z_g, styles, z_l, noises[1]), eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.slow
def test_fixed_style_fits_only_local_latents():
    model = image_like_model("small", seed=2)
    target = render(model, LatentField(model.config, seed=8), Window(0, -16, 32, 32))
    z_g, styles = torch.randn(model.config.global_latent_dim), torch.randn(model.config.global_latent_dim)
    rec = inv.invert(model, target, settings=inv.InversionSettings(steps=20), style=(z_g, styles), progress=False)
    assert torch.equal(rec.global_latent, z_g)
    assert torch.equal(rec.styles, styles.expand(model.config.n_latent, -1))
    assert rec.settings["fixed_style"] is True


def test_gaussianize_inverts_and_schedule_shape():
    w = torch.linspace(-3, 3, 101)
    assert torch.allclose(inv.degaussianize(inv.gaussianize(w)), w, atol=1e-6)
    lr = [inv.learning_rate(t, 0.1, 0.05, 0.25) for t in (0.0, 0.025, 0.05, 0.5, 0.75, 0.875, 1.0)]
    assert lr[0] == 0 and math.isclose(lr[1], 0.05) and math.isclose(lr[2], 0.1) and math.isclose(lr[3], 0.1)
    assert math.isclose(lr[4], 0.1) and math.isclose(lr[5], 0.05, rel_tol=1e-9) and lr[6] == 0


def test_noise_regularizer_penalises_correlated_noise_only():
    gen = torch.Generator().manual_seed(0)
    white = torch.randn(64, 64, generator=gen)
    smooth = torch.nn.functional.avg_pool2d(torch.randn(1, 1, 67, 67, generator=gen), 4, 1)[0, 0]
    smooth = (smooth - smooth.mean()) / smooth.std()
    assert inv.noise_regularizer([white]) < 0.01 < inv.noise_regularizer([smooth])


def test_ts_prior_is_smallest_at_the_mapped_mean():
    model = random_model(PRESETS["tiny"], seed=0)
    stats = inv.style_statistics(model, 2000)
    at_mean = inv.degaussianize(stats.mean).repeat(3, 1)
    far = at_mean + 3 * stats.std
    assert inv.ts_prior(at_mean, stats) < 1e-2 < inv.ts_prior(far, stats)


def test_multiscale_loss_is_zero_only_for_equal_images():
    a = torch.rand(1, 3, 40, 24)
    assert inv.multiscale_loss(a, a) == 0
    assert inv.multiscale_loss(a, a + 0.1) > 0.09


def test_bad_target_shape():
    model = random_model(PRESETS["tiny"])
    with pytest.raises(ValueError, match="RGB image"):
        inv.invert(model, torch.zeros(4, 16, 16), settings=inv.InversionSettings(steps=1), progress=False)


def test_diff_augment_applies_one_transform_to_both_images():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(3, 32, 24, generator=gen) * 2 - 1
    x, y = inv.diff_augment(a, a.clone(), gen)
    assert torch.equal(x, y) and x.shape == a.shape
    assert (x == 0).float().mean() > 0.2  # the cutout (a quarter of the image) and the translation's fill
    b = torch.rand(3, 32, 24, generator=gen)
    x, y = inv.diff_augment(a, b, gen)
    assert not torch.equal(x, y)
    model = random_model(PRESETS["tiny"])
    rec = inv.invert(model, a, settings=inv.InversionSettings(steps=3, diff_aug=True), progress=False)
    assert rec.settings["diff_aug"] is True and math.isfinite(rec.losses["total"])
