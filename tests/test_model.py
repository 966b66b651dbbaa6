"""The generator against an independent statement of the official math, and the spec's
recorded numbers (size chains, coordinates, alignment)."""
import math

import pytest
import torch
from conftest import official_state_dict, random_model, small_config
from official_reference import official_coords as ref_coords
from official_reference import official_forward, ts_out_sizes

from igan.engine import geometry, walk
from igan.engine.config import PRESETS
from igan.engine.latent import LatentField, official_coords
from igan.engine.model import FoldedOps


def _reference(model, z, z_l, coords, noises):
    cfg = model.config
    sd = official_state_dict(model)
    return official_forward(sd, global_latent=torch.stack([z, z], 1), local_latent=z_l, override_coords=coords,
                            noises=noises, n_mlp=cfg.n_mlp, ss_layers=cfg.ss_n_layers if cfg.use_ss else 0,
                            ss_radius=cfg.ss_unfold_radius, num_convs=cfg.num_convs)


def _inputs(cfg, n_h, n_w, batch, gen):
    z = torch.randn(batch, cfg.global_latent_dim, generator=gen)
    z_l = torch.randn(batch, cfg.local_latent_dim, n_h, n_w, generator=gen)
    hs = geometry.ts_sizes(cfg, n_h - 2 * cfg.ss_halo)
    ws = geometry.ts_sizes(cfg, n_w - 2 * cfg.ss_halo)
    noises = [torch.randn(batch, 1, h, w, generator=gen) for h, w in zip(hs, ws)]
    coords = official_coords(cfg, n_h, n_w)[None].expand(batch, -1, -1, -1) if cfg.use_ss else None
    return z, z_l, coords, noises


@pytest.mark.parametrize("trial", range(6))
def test_forward_matches_official_math_on_random_configs(rng, trial):
    cfg = small_config(rng)
    model = random_model(cfg, seed=trial)
    gen = torch.Generator().manual_seed(trial)
    lo = geometry.min_latent_size(cfg)
    n_h, n_w = int(rng.integers(lo, lo + 9)), int(rng.integers(lo, lo + 9))
    z, z_l, coords, noises = _inputs(cfg, n_h, n_w, batch=int(rng.integers(1, 4)), gen=gen)
    with torch.no_grad():
        ours = model(z, z_l, coords, noises)
        ref = _reference(model, z, z_l, coords, noises)
    assert ours.shape == ref.shape == (z.shape[0], 3, geometry.output_size(cfg, n_h), geometry.output_size(cfg, n_w))
    # float32 reformulation (folded scales, polyphase upsampling): errors of a few ulps of the outputs
    tol = 1e-5 * max(1.0, ref.abs().max().item())
    assert (ours - ref).abs().max().item() < tol


@pytest.mark.slow
def test_default_config_forward_matches_official_math():
    cfg = PRESETS["InfinityGAN"]
    model = random_model(cfg, seed=1)
    z, z_l, coords, noises = _inputs(cfg, 35, 35, 1, torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(z, z_l, coords, noises)
        ref = _reference(model, z, z_l, coords, noises)
    assert ours.shape == (1, 3, 101, 101)
    assert (ours - ref).abs().max().item() < 1e-4


def test_size_chains_match_the_spec():
    cfg = PRESETS["InfinityGAN"]
    assert geometry.ts_sizes(cfg, 11) == [19, 17, 31, 29, 55, 53, 103, 101]
    assert geometry.ts_input_sizes(cfg, 11) == [11, 19, 17, 31, 29, 55, 53, 103]
    assert geometry.ss_sizes(cfg, 35) == [29, 23, 17, 11]
    assert [geometry.output_size(cfg, n + 24) for n in (11, 83, 69)] == [101, 1253, 1029]
    assert geometry.ts_sizes(PRESETS["InfinityGAN-HR"], 11)[-4:] == [199, 197, 391, 389]
    assert geometry.ts_sizes(PRESETS["InfinityGAN-UR"], 11)[-2:] == [775, 773]
    assert geometry.layer_steps(cfg) == [2, 2, 4, 4, 8, 8, 16, 16]
    assert PRESETS["InfinityGAN-HR"].stage_channels == (512, 512, 512, 512, 256, 128)
    assert PRESETS["InfinityGAN-UR"].stage_channels == (512, 512, 512, 512, 256, 128, 64)
    for name in ("InfinityGAN", "InfinityGAN-HR", "InfinityGAN-UR", "StyleGAN2_NCI_FCG"):
        c = PRESETS[name]
        assert geometry.output_size(c, c.ts_input_size + 2 * c.ss_halo) == c.patch_size
    # The reference's independent size rule agrees on every preset and random sizes.
    for n in range(5, 40):
        assert geometry.ts_sizes(cfg, n) == ts_out_sizes(n, 8)


def test_coordinates_match_the_recorded_values():
    """official-generator.md 6.2 [run]: a 35x35 grid."""
    cfg = PRESETS["InfinityGAN"]
    grid = official_coords(cfg, 35, 35)
    assert grid.shape == (3, 35, 35)
    col0 = [-0.99993, -0.99986, -0.99975, -0.99955, -0.99918, -0.99851, -0.99728, -0.99505, -0.99101, -0.98367,
            -0.97045, -0.94681, -0.90515, -0.83365, -0.7163, -0.53705, -0.29131, 0.0]
    assert torch.allclose(grid[0, :18, 0], torch.tensor(col0), atol=6e-6)
    assert torch.allclose(grid[0, 17:, 0], -grid[0, :18, 0].flip(0), atol=1e-7)
    assert torch.allclose(grid[1, 0, :8], torch.tensor([-1.0, -0.99898, -0.99592, -0.99082, -0.9837, -0.97457,
                                                        -0.96345, -0.95036]), atol=6e-6)
    assert torch.allclose(grid[2, 0, :8], torch.tensor([0.0, -0.04519, -0.09028, -0.13519, -0.17983, -0.22409,
                                                        -0.2679, -0.31117]), atol=6e-6)
    # And the official op-by-op float32 computation on a large grid: float32 pi * v with v up
    # to 9 is itself off by ~1 ulp(9) * pi ~ 3e-6, while igan reduces the angle first.
    ref = ref_coords(61, 700)[0]
    assert (official_coords(cfg, 61, 700) - ref).abs().max().item() < 5e-6


def test_canvas_coordinates_do_not_depend_on_the_window():
    cfg = PRESETS["InfinityGAN"]
    field = LatentField(cfg, 0, horizon=123.0)
    big = field.coords(-40, -300, 90, 600)
    part = field.coords(-13, 17, 31, 211)
    assert torch.equal(part, big[:, 27:58, 317:528])
    # Horizontal period: 139 columns for the default config.
    assert torch.equal(field.coords(0, 139 * 5, 3, 10)[1:], field.coords(0, 0, 3, 10)[1:])
    # The horizon row (pixel 123 -> cell (123 - 2)/16 + 14) has vertical coordinate 0.
    h = field.horizon_cell
    assert h == pytest.approx((123 - 2) / 16 + 14)
    vert = field.coords(0, 0, 40, 1)[0, :, 0]
    assert vert[math.floor(h)] < 0 < vert[math.ceil(h)]


def _changed_extent(diff):
    idx = torch.nonzero(diff.abs().amax(dim=(0, 1)) > 0)
    return (idx[:, 0].min().item(), idx[:, 0].max().item()), (idx[:, 1].min().item(), idx[:, 1].max().item())


@pytest.mark.slow
def test_alignment_and_receptive_fields_match_the_spec():
    """official-generator.md 5.2 / appendix B: impulse tests on the default config."""
    cfg = PRESETS["InfinityGAN"]
    model = random_model(cfg, seed=2)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(1, 512, generator=gen)
    prepared = model.prepare(z)
    x = torch.randn(1, 256, 11, 11, generator=gen)
    noises = [None] * 8
    ops = FoldedOps(model, prepared)
    with torch.no_grad():
        base = walk.texture(cfg, ops, x, noises)
        for t, expected in [(1, (0, 31)), (2, (0, 47)), (5, (5, 95)), (8, (53, 100)), (9, (69, 100))]:
            x2 = x.clone()
            x2[:, :, t, t] += 1.0
            rows, cols = _changed_extent(walk.texture(cfg, ops, x2, noises) - base)
            assert rows == cols == expected, t
            assert geometry.cell_to_pixel(cfg, t + cfg.ss_halo) == 16 * t - 30  # centre pixel
        coords = official_coords(cfg, 35, 35)[None]
        z_l = torch.randn(1, 256, 35, 35, generator=gen)
        sbase = walk.structure(cfg, ops, z_l, coords)
        for k, expected in [(0, (0, 0)), (5, (0, 5)), (34, (10, 10))]:
            z2 = z_l.clone()
            z2[:, :, k, k] += 1.0
            assert _changed_extent(walk.structure(cfg, ops, z2, coords) - sbase) == (expected, expected)
    assert geometry.pixel_to_cell(cfg, 50) == 17  # the centre pixel of a patch <-> the centre z_l cell
