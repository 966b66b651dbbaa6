"""Seamless tiling: a window rendered in tiles equals the same window rendered in one piece
(float32 and uint8), for random configs, windows (odd sizes, negative origins), tile and
batch sizes; and the official patch-by-patch generation reproduces exactly."""
import numpy as np
import pytest
import torch
from conftest import official_state_dict, random_model, small_config
from official_reference import infinite_generation, infinite_geometry
from official_reference import official_coords as ref_coords

from igan.engine import geometry
from igan.engine.config import PRESETS
from igan.engine.determinism import reproducible_cpu_convs
from igan.engine.latent import LatentField, TensorField
from igan.engine.planner import Window, plan
from igan.engine.renderer import Renderer
from igan.engine.quantize import to_uint8
from igan.engine.runner import TorchRunner


def _oneshot(model, field, window):
    """The whole window from ONE forward pass on its latent window (no planner, no tiles)."""
    cfg = model.config
    r0, n_h, oy = geometry.latent_window(cfg, window.y0, window.height)
    c0, n_w, ox = geometry.latent_window(cfg, window.x0, window.width)
    z, coords, noises = field.window(r0, c0, n_h, n_w)
    with torch.no_grad(), reproducible_cpu_convs():
        prepared = model.prepare(field.global_latent())
        out = model.synthesize(prepared, z[None], None if coords is None else coords[None], [n[None] for n in noises])
    return out[0, :, oy:oy + window.height, ox:ox + window.width].permute(1, 2, 0).numpy()


def _random_window(rng):
    return Window(int(rng.integers(-300, 300)), int(rng.integers(-300, 300)),
                  int(rng.integers(1, 150)), int(rng.integers(1, 150)))


@pytest.mark.parametrize("trial", range(8))
def test_tiled_equals_oneshot(rng, trial):
    cfg = small_config(rng)
    model = random_model(cfg, seed=trial)
    field = LatentField(cfg, seed=int(rng.integers(0, 2**62)), horizon=float(rng.integers(-200, 200)))
    window = _random_window(rng)
    ref = _oneshot(model, field, window)
    renderer = Renderer(TorchRunner(model, cpu_path="reference"))  # the default path: tests/test_cpu_paths.py
    ref_u8 = to_uint8(torch.from_numpy(ref)).numpy()
    for _ in range(3):
        tile, batch = 16 * int(rng.integers(1, 8)), int(rng.integers(1, 5))
        p = plan(cfg, window, tile=tile, batch=batch)
        out = renderer.render_array(field, p, batch)
        assert out.shape == (window.height, window.width, 3)
        assert np.abs(out - ref).max() < 1e-4, (tile, batch)
        assert np.array_equal(renderer.render_array(field, p, batch, uint8=True), ref_u8), (tile, batch)


@pytest.mark.slow
def test_tile_and_batch_sizes_give_identical_bits():
    """The reference CPU path is bit-reproducible across tile and batch sizes (determinism.py)."""
    cfg = PRESETS["small"]
    model = random_model(cfg, seed=5)
    field = LatentField(cfg, seed=99)
    window = Window(-61, -77, 203, 133)
    renderer = Renderer(TorchRunner(model, cpu_path="reference"))
    ref = renderer.render_array(field, plan(cfg, window, tile=208))
    for tile, batch in [(16, 1), (48, 3), (64, 2), (144, 1)]:
        assert np.array_equal(renderer.render_array(field, plan(cfg, window, tile=tile, batch=batch), batch), ref)


def test_a_window_matches_the_same_region_of_a_larger_render():
    cfg = PRESETS["small"]
    renderer = Renderer(TorchRunner(random_model(cfg, seed=6), cpu_path="reference"))
    field = LatentField(cfg, seed=7)
    big = renderer.render_array(field, plan(cfg, Window(-100, -50, 260, 180), tile=96), uint8=True)
    small = renderer.render_array(field, plan(cfg, Window(-33, 21, 77, 61), tile=32), uint8=True)
    assert np.array_equal(small, big[71:71 + 61, 67:67 + 77])


def test_work_ratio_falls_with_tile_size():
    cfg = PRESETS["InfinityGAN"]
    window = Window(0, 0, 4096, 4096)
    ratios = [plan(cfg, window, tile=t).work_ratio for t in (112, 256, 1024, 4096)]
    assert ratios == sorted(ratios, reverse=True)
    assert ratios[-1] == pytest.approx(1.0)
    assert 1.0 < ratios[-2] < 1.1


@pytest.mark.parametrize("size", [(1024, 1024), (512, 512), (2048, 512), (1000, 333), (8192, 8192), (333, 4000)])
@pytest.mark.parametrize("budget_gib", [1, 3])
def test_the_planner_picks_the_least_work_tiles_that_fit(size, budget_gib):
    """Without --tile the planner picks, among the tiles whose batch fits the budget, those of
    least work (halo and z_l-grid misalignment included): never more than 0.4's choice (the
    largest square tile, balanced), and 1.04 or less at 1024x1024 within the 3 GiB default;
    tiles="0.4" keeps 0.4's choice, on which the fast-0.4 path's bytes depend."""
    from igan.engine.geometry import activation_bytes
    from igan.engine.planner import tile_for_budget

    cfg = PRESETS["InfinityGAN"]
    budget = budget_gib << 30
    window = Window(-17, -(size[1] // 2), *size)
    new, old = plan(cfg, window, memory_budget=budget), plan(cfg, window, memory_budget=budget, tiles="0.4")
    assert new.flops <= old.flops
    assert activation_bytes(cfg, new.latent_height, new.latent_width, 1) <= budget
    side = tile_for_budget(cfg, budget, largest=max(size) + 16)
    assert max(old.tile_height, old.tile_width) <= side  # 0.4: the largest square, balanced per axis
    # exhaustive over square tiles that fit: none does less work than the choice
    for t in range(16, side + 1, 16):
        assert plan(cfg, window, tile=t).flops >= new.flops
    if size == (1024, 1024) and budget_gib == 3:
        assert new.work_ratio <= 1.04


def test_official_infinite_generation_is_reproduced():
    """official-generator.md 8: the official patch-by-patch generation of a 197x197 image
    (16 patches of 101 px on a 389 px meta canvas, then a centre crop) equals igan's render
    of the same latents."""
    cfg = PRESETS["small"]  # the default geometry with few channels
    model = random_model(cfg, seed=8)
    geo = infinite_geometry(197, 197, cfg.patch_size, cfg.ts_input_size, cfg.num_convs)
    assert (geo["steps_h"], geo["meta_h"], geo["pix_step"], geo["lat_step"]) == (4, 389, 96, 6)
    assert geo["out_steps"] == [12, 12, 24, 24, 48, 48, 96, 96]
    gen = torch.Generator().manual_seed(0)
    n_z = geo["lat_step"] * (geo["steps_h"] - 1) + 35
    assert n_z == 53
    z_g = torch.randn(1, 2, cfg.global_latent_dim, generator=gen)
    z_l = torch.randn(1, cfg.local_latent_dim, n_z, n_z, generator=gen)
    sizes = [s * (geo["steps_h"] - 1) + size for s, size in zip(geo["out_steps"], geo["single"])]
    assert sizes == [55, 53, 103, 101, 199, 197, 391, 389]
    noises = [torch.randn(1, 1, s, s, generator=gen) for s in sizes]
    coords = ref_coords(n_z, n_z)
    official, (oy, ox) = infinite_generation(
        official_state_dict(model), geo, z_g=z_g, z_l_meta=z_l, noises_meta=noises, coords_meta=coords,
        height=197, width=197, fwd_kwargs=dict(n_mlp=cfg.n_mlp, ss_layers=cfg.ss_n_layers,
                                               ss_radius=cfg.ss_unfold_radius, num_convs=cfg.num_convs))
    # Same latents as a field: the meta canvas starts at cell 0; the horizon is its centre row.
    field = TensorField(cfg, z_g[0, 0], z_l[0], [n[0] for n in noises], horizon=(geo["meta_h"] - 1) / 2)
    ours = Renderer(TorchRunner(model)).render_array(field, plan(cfg, Window(ox, oy, 197, 197), tile=64))
    diff = np.abs(ours - official[0].permute(1, 2, 0).numpy())
    assert diff.max() < 1e-4


@pytest.mark.slow
def test_bf16_stays_close_to_fp32():
    cfg = PRESETS["small"]
    model = random_model(cfg, seed=4)
    field = LatentField(cfg, seed=1)
    p = plan(cfg, Window(0, -40, 120, 80), tile=64)
    ref = Renderer(TorchRunner(model)).render_array(field, p)
    low = Renderer(TorchRunner(model, precision="bf16")).render_array(field, p)
    # bf16 keeps 8 significant bits: per-op relative error 2^-9, compounded over ~20 layers
    scale = np.abs(ref).mean()
    assert np.abs(low - ref).mean() < 0.05 * scale
    assert np.corrcoef(low.ravel(), ref.ravel())[0, 1] > 0.99
