"""Spatial style fusion: the weights are a blurred nearest-centre partition of the canvas,
one style renders like the plain canvas, two styles blend, tiles stay seamless, the Triton
spatial path matches the torch one, and igan-render's --styles flags work and reject bad input."""
import copy

import numpy as np
import pytest
import torch
from conftest import random_model, small_config
from PIL import Image

from igan.engine import checkpoint, geometry
from igan.engine.config import PRESETS
from igan.engine.determinism import reproducible_cpu_convs
from igan.engine.fusion import (FusedField, LabelMap, NearestCenters, StyleMaps, StyleSource, box_weights, layer_positions)
from igan.engine.latent import LatentField, TensorField
from igan.engine.planner import Window, plan
from igan.engine.cli.render import main
from igan.engine.renderer import Renderer
from igan.engine.quantize import to_uint8
from igan.engine.runner import TorchRunner, TritonRunner

TINY = PRESETS["tiny"]


def _render(model, field, window, tile=None, runner=TorchRunner, **kw):
    renderer = Renderer(runner(model, "cpu"))
    return renderer.render_array(field, plan(model.config, window, tile=tile or 16 * 32), **kw)


def _oneshot64(model, field, window):
    """The window from one float64 forward pass (plain or spatial path): the reference that
    shows both paths compute the same function."""
    cfg = model.config
    m64 = copy.deepcopy(model).double()
    r0, n_h, oy = geometry.latent_window(cfg, window.y0, window.height)
    c0, n_w, ox = geometry.latent_window(cfg, window.x0, window.width)
    z, coords, noises = field.window(r0, c0, n_h, n_w)
    z, noises = z[None].double(), [n[None].double() for n in noises]
    coords = None if coords is None else coords[None].double()
    with torch.no_grad(), reproducible_cpu_convs():
        if getattr(field, "fused", False):
            sp = m64.prepare_spatial([(g.double(), w) for g, w in field.latents])
            maps = StyleMaps.stack([field.style_maps(r0, c0, n_h, n_w)], "cpu")
            out = m64.synthesize_spatial(sp, z, coords, noises, maps)
        else:
            out = m64.synthesize(m64.prepare(field.global_latent().double()), z, coords, noises)
    return out[0, :, oy:oy + window.height, ox:ox + window.width].permute(1, 2, 0).numpy()


# ---- the weights ---------------------------------------------------------------------------------
def test_box_weights_equal_a_brute_force_blurred_partition(rng):
    centers = [(float(rng.uniform(-50, 50)), float(rng.uniform(-50, 50))) for _ in range(3)]
    assign, blur = NearestCenters(centers), 9
    ys = torch.tensor(sorted(rng.choice(np.arange(-60, 60), 25, replace=False)))
    xs = torch.tensor(sorted(rng.choice(np.arange(-60, 60), 30, replace=False)))
    got = box_weights(assign, 3, blur, ys, xs).numpy()
    grid = np.arange(-80, 80)
    d = [(grid[:, None] - cy) ** 2 + (grid[None, :] - cx) ** 2 for cx, cy in centers]
    labels = np.argmin(np.stack(d), 0)  # [y, x] over the region, ties to the lower index
    for a, y in enumerate(ys.tolist()):
        for b, x in enumerate(xs.tolist()):
            box = labels[y - 4 + 80:y + 5 + 80, x - 4 + 80:x + 5 + 80]
            assert np.allclose(got[:, a, b], [(box == i).mean() for i in range(3)], atol=1e-7)
    assert np.allclose(got.sum(0), 1.0, atol=1e-6)


def test_weights_are_smooth_and_one_style_is_exactly_one():
    field = FusedField(TINY, [1, 2], [(0.0, 0.0), (40.0, 10.0)], 15, 0)
    w = box_weights(field.assign, 2, 15, torch.arange(-30, 40), torch.arange(-20, 60)).numpy()
    assert w.min() >= 0 and w.max() <= 1 and w[0].max() == 1 and w[1].max() == 1
    for axis in (1, 2):  # a k-box average moves by at most 1/k per pixel
        assert np.abs(np.diff(w, axis=axis)).max() <= 1 / 15 + 1e-7
    one = FusedField(TINY, [1], [(3.0, 4.0)], 15, 0).style_maps(-5, -7, 11, 13)
    for m in [one.ss, *one.convs, *one.rgbs]:
        assert torch.equal(m, torch.ones_like(m))


def test_layer_positions_follow_the_canvas_geometry(rng):
    cfg = small_config(rng)
    ss, conv_in, conv_out = layer_positions(cfg)
    assert conv_out[-1] == (1, 0)  # the last conv's output grid is the pixel grid
    for c in (-3, 0, 17):
        assert ss[0] * c + ss[1] == geometry.cell_to_pixel(cfg, c)
    steps = geometry.layer_steps(cfg)
    for i, (a, _) in enumerate(conv_out):
        assert a * steps[i] == cfg.upscale  # grid spacing in pixels


def test_style_maps_of_a_window_are_the_same_wherever_it_is_asked_for():
    field = FusedField(TINY, [1, 2, 3], [(0.0, 0.0), (30.0, -9.0), (-25.0, 12.0)], 11, 0)
    big = field.style_maps(-9, -11, 20, 24)
    small = field.style_maps(-6, -4, 9, 10)  # rows/cols 3.. and 7.. of the big window
    assert torch.equal(small.ss, big.ss[:, 3:12, 7:17])
    far = field.style_maps(10**6, -10**7, 9, 10)  # far away: one style, computed on its own
    assert far.ss.shape == (3, 9, 10)


# ---- rendering --------------------------------------------------------------------------------------
class _Restyled(LatentField):
    """The plain canvas `seed` with the z_g of canvas `style_seed`."""

    def __init__(self, config, seed, style_seed):
        super().__init__(config, seed)
        self.style_seed = style_seed

    def global_latent(self):
        return LatentField(self.config, self.style_seed).global_latent()


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_one_style_renders_like_the_plain_canvas(name):
    """Not bit-identical: the plain path folds s and the demodulation into the weights
    (W s d), the spatial path scales the activations by s and the conv output by d; the
    same function (float64: 1e-10), rounded differently (float32: within 1e-5 of the
    image's range, and no further from float64 than twice the plain path's own error)."""
    cfg = PRESETS[name]
    model = random_model(cfg, seed=3)
    window = Window(-37, -21, 61, 43) if name == "tiny" else Window(-37, -21, 32, 16)
    plain_field, fused_field = LatentField(cfg, 11), FusedField(cfg, [11], [(5.0, 5.0)], 7, 11)
    plain64, fused64 = _oneshot64(model, plain_field, window), _oneshot64(model, fused_field, window)
    assert np.abs(plain64 - fused64).max() < 1e-10
    plain, fused = _render(model, plain_field, window, 32), _render(model, fused_field, window, 32)
    scale = np.abs(plain64).max()
    assert np.abs(fused - plain).max() <= 1e-5 * scale
    assert np.abs(fused - plain64).max() <= 2 * np.abs(plain - plain64).max() + 1e-6 * scale


def test_two_styles_blend_between_their_plain_renders():
    model = random_model(TINY, seed=4)
    window = Window(0, -24, 256, 48)
    centers = [(32.0, 0.0), (224.0, 0.0)]  # the partition's edge at x = 128, blurred over 113..143
    two = _render(model, FusedField(TINY, [5, 9], centers, 31, 5), window)
    only_a = _render(model, FusedField(TINY, [5], centers[:1], 31, 5), window)
    only_b = _render(model, FusedField(TINY, [9], centers[1:], 31, 5), window)
    plain_a, plain_b = _render(model, LatentField(TINY, 5), window), _render(model, _Restyled(TINY, 5, 9), window)
    # where every layer's receptive field sees a single style, that style's render, exactly
    assert np.array_equal(two[:, :80], only_a[:, :80]) and np.array_equal(two[:, 176:], only_b[:, 176:])
    assert np.abs(two[:, :80] - plain_a[:, :80]).max() < 1e-4
    assert np.abs(two[:, 176:] - plain_b[:, 176:]).max() < 1e-4
    # in between a blend that is neither, moving from A towards B
    mid = two[:, 120:136]
    assert np.abs(mid - only_a[:, 120:136]).mean() > 0.1 and np.abs(mid - only_b[:, 120:136]).mean() > 0.1
    dist_a = np.abs(two - only_a).mean((0, 2))
    dist_b = np.abs(two - only_b).mean((0, 2))
    assert dist_a[96:112].mean() < dist_a[128:144].mean() < dist_a[160:176].mean()
    assert dist_b[96:112].mean() > dist_b[128:144].mean() > dist_b[160:176].mean()


@pytest.mark.parametrize("trial", range(3))
def test_fused_tiles_equal_the_oneshot_render(rng, trial):
    cfg = small_config(rng) if trial else TINY
    model = random_model(cfg, seed=trial)
    n = int(rng.integers(2, 5))
    centers = [(float(rng.uniform(-60, 160)), float(rng.uniform(-60, 100))) for _ in range(n)]
    field = FusedField(cfg, [int(s) for s in rng.integers(0, 1000, n)], centers, int(rng.integers(1, 40)),
                       int(rng.integers(0, 1000)))
    window = Window(int(rng.integers(-50, 0)), int(rng.integers(-50, 0)), int(rng.integers(60, 150)),
                    int(rng.integers(30, 90)))
    ref = _render(model, field, window)
    assert ref.shape == (window.height, window.width, 3)
    for tile, batch in [(16, 3), (48, 2)]:
        out = Renderer(TorchRunner(model)).render_array(field, plan(cfg, window, tile=tile, batch=batch), batch)
        assert np.abs(out - ref).max() < 1e-4, (tile, batch)
        assert np.array_equal(to_uint8(torch.from_numpy(out)).numpy(), to_uint8(torch.from_numpy(ref)).numpy())


@pytest.mark.slow
def test_triton_spatial_path_matches_the_torch_path():
    """The fused kernels' spatial-style path (modulated activations, per-pixel
    demodulation) under TRITON_INTERPRET=1, against the torch reference path."""
    model = random_model(TINY, seed=6)
    field = FusedField(TINY, [2, 7], [(0.0, 0.0), (14.0, 3.0)], 9, 1)
    window = Window(-6, -9, 21, 17)
    ref = _render(model, field, window)
    out = _render(model, field, window, runner=TritonRunner)
    assert np.abs(out - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())
    # in 2x2 tiles: the weights packed for the kernels on the first batch serve every later one
    tiled = _render(model, field, window, tile=16, runner=TritonRunner)
    assert np.abs(tiled - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())


# ---- the API the inversion tools use ---------------------------------------------------------------
def test_explicit_styles_and_a_base_field_stand_in_for_seeds():
    model = random_model(TINY, seed=7)
    window = Window(-20, -10, 40, 24)
    centers = [(-10.0, 0.0), (15.0, 0.0)]
    ref = _render(model, FusedField(TINY, [3, 4], centers, 9, 8), window)
    z3 = LatentField(TINY, 3).global_latent()
    w3 = model.mapping(z3[None]).detach()  # W given explicitly = mapping(z_g)
    w_plus4 = model.mapping(LatentField(TINY, 4).global_latent()[None]).detach().expand(TINY.n_latent, -1)
    sources = [StyleSource(z_g=z3, w_plus=w3[0]), StyleSource(z_g=LatentField(TINY, 4).global_latent(), w_plus=w_plus4)]
    assert np.array_equal(_render(model, FusedField(TINY, sources, centers, 9, 8), window), ref)
    # local latents from a base field: a seeded one, or explicit tensors (pasted inverted z_l)
    base = LatentField(TINY, 8)
    assert np.array_equal(_render(model, FusedField(TINY, [3, 4], centers, 9, 0, base=base), window), ref)
    p = plan(TINY, window, tile=16 * 32)  # the z_l window the render reads
    r0, c0 = p.tiles[0].cell_row, p.tiles[0].cell_col
    z, coords, noises = base.window(r0, c0, p.latent_height, p.latent_width)
    tensors = TensorField(TINY, base.global_latent(), z, noises, coords, origin=(r0, c0))
    out = _render(model, FusedField(TINY, [3, 4], centers, 9, 0, base=tensors), window)
    assert np.array_equal(out, ref)


def test_label_map_assigns_like_the_equivalent_centres(tmp_path):
    window = Window(-16, -8, 64, 32)
    img = np.zeros((3, 4, 3), np.uint8)
    img[:, 2:] = (200, 10, 10)  # right half: the second colour to appear
    Image.fromarray(img).save(tmp_path / "map.png")
    lm = LabelMap.from_png(tmp_path / "map.png", (window.x0, window.y0, window.width, window.height))
    assert len(lm) == 2
    # the edge between pixel columns x0+31 and x0+32, like centres 0.5 px left of the quarter points
    nc = NearestCenters([(window.x0 + 15.5, 0.0), (window.x0 + 47.5, 0.0)])
    ys, xs = torch.arange(-40, 40), torch.arange(-60, 90)
    assert torch.equal(lm.labels(ys, xs), nc.labels(ys, xs))
    model = random_model(TINY, seed=2)
    a = _render(model, FusedField(TINY, [1, 2], None, 7, 3, label_map=lm), window)
    b = _render(model, FusedField(TINY, [1, 2], nc.centers, 7, 3), window)
    assert np.array_equal(a, b)


def test_bad_fusion_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="seed or an explicit z_g"):
        StyleSource()
    with pytest.raises(ValueError, match="2 styles but 1 centers"):
        FusedField(TINY, [1, 2], [(0.0, 0.0)], 5, 0)
    with pytest.raises(ValueError, match="blur must be an integer from 1 to 4096.*got 0"):
        FusedField(TINY, [1], [(0.0, 0.0)], 0, 0)
    with pytest.raises(ValueError, match="blur must be an integer from 1 to 4096.*got 100000000"):
        FusedField(TINY, [1], [(0.0, 0.0)], 100_000_000, 0)  # not a raw allocator error
    with pytest.raises(ValueError, match="z_g has 3 values"):
        FusedField(TINY, [StyleSource(z_g=torch.zeros(3))], [(0.0, 0.0)], 5, 0)
    with pytest.raises(ValueError, match="finite"):
        FusedField(TINY, [1], [(float("nan"), 0.0)], 5, 0)
    with pytest.raises(TypeError, match="StyleSource or an integer seed"):
        FusedField(TINY, ["a"], [(0.0, 0.0)], 5, 0)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read style map"):
        LabelMap.from_png(tmp_path / "bad.png", (0, 0, 8, 8))


# ---- igan-render -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return checkpoint.save(random_model(TINY, seed=1), tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def _cli(tmp_path, ckpt, name, *args):
    """igan-render on the tiny model (the embedded one is slower) for a 96 x 32 window."""
    out = tmp_path / name
    code = main(["--out", str(out), "--quiet", "--device", "cpu", "--width", "96", "--height", "32",
                 "--checkpoint", str(ckpt), *map(str, args)])
    return code, out


def test_cli_styles_render_and_map_equals_centres(tmp_path, tiny_checkpoint):
    code, plain = _cli(tmp_path, tiny_checkpoint, "plain.png", "--seed", 4)
    assert code == 0
    code, fused = _cli(tmp_path, tiny_checkpoint, "fused.png", "--seed", 4, "--styles", "4,9", "--style-blur", 15)
    assert code == 0
    a, b = np.asarray(Image.open(plain)), np.asarray(Image.open(fused))
    assert a.shape == b.shape == (32, 96, 3) and not np.array_equal(a, b)
    # the default centres sit at 1/4 and 3/4 of the width: a two-colour map split at the middle
    # differs from them by one pixel column (ties go left), centres 0.5 px left coincide exactly
    img = np.zeros((2, 2, 3), np.uint8)
    img[:, 1] = 255
    Image.fromarray(img).save(tmp_path / "halves.png")
    x = (24 - 0.5) / 96, (72 - 0.5) / 96
    code, by_centres = _cli(tmp_path, tiny_checkpoint, "c.png", "--seed", 4, "--styles", "4,9", "--style-blur", 15,
                            "--style-centers", f"{x[0]},0.5:{x[1]},0.5")
    code2, by_map = _cli(tmp_path, tiny_checkpoint, "m.png", "--seed", 4, "--styles", "4,9", "--style-blur", 15,
                         "--style-map", tmp_path / "halves.png")
    assert code == code2 == 0  # the same pixels (the files record their own options)
    np.testing.assert_array_equal(np.asarray(Image.open(by_centres)), np.asarray(Image.open(by_map)))


@pytest.mark.parametrize("args, message", [
    (["--style-centers", "0.5,0.5"], "--style-centers needs --styles"),
    (["--style-blur", "9"], "--style-blur needs --styles"),
    (["--styles", "1,2", "--style-centers", "0.5,0.5"], "gives 1 centres for 2 styles"),
    (["--styles", "1,x"], "comma-separated integer seeds"),
    (["--styles", "1", "--style-centers", "0.5;0.5"], "X,Y pairs"),
    (["--styles", "1", "--style-blur", "0"], "positive integer"),
    (["--styles", "1,2", "--style-blur", "100000000"], "argument --style-blur: must be at most 4096 pixels"),
    (["--styles", "1", "--style-centers", "0.5,0.5", "--style-map", "m.png"], "exclude each other"),
])
def test_cli_rejects_bad_fusion_flags(tmp_path, tiny_checkpoint, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        _cli(tmp_path, tiny_checkpoint, "x.png", *args)
    assert e.value.code != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_cli_rejects_a_map_with_the_wrong_colour_count(tmp_path, tiny_checkpoint, capsys):
    img = np.zeros((3, 3, 3), np.uint8)
    img[0, 0] = (1, 2, 3)
    img[2, 2] = (9, 9, 9)
    Image.fromarray(img).save(tmp_path / "three.png")
    code, out = _cli(tmp_path, tiny_checkpoint, "x.png", "--styles", "1,2", "--style-map", tmp_path / "three.png")
    assert code != 0 and not out.exists()
    assert "has 3 distinct colours but --styles gives 2 seeds" in capsys.readouterr().err
    code, out = _cli(tmp_path, tiny_checkpoint, "x.png", "--styles", "1,2", "--style-map", tmp_path / "missing.png")
    assert code != 0 and "cannot read style map" in capsys.readouterr().err


def test_a_resumed_render_must_have_the_same_styles():
    """The styles are part of the request a resume is checked against."""
    from igan.engine.fusion import FieldSpec
    from igan.engine.identity import request_identity
    from igan.engine.planner import plan
    from igan.engine.request import RenderRequest

    model = random_model(TINY)
    tiles = plan(model.config, Window(0, 0, 32, 32), tile=32)

    def request(spec):
        return request_identity(RenderRequest(seed=1), tiles, model, spec)

    plain = request(None)
    a = request(FieldSpec((1, 2), ((0.0, 0.0), (9.0, 0.0)), None, 15))
    assert "field" not in plain and a["field"]["styles"] == [1, 2]
    assert a != request(FieldSpec((1, 3), ((0.0, 0.0), (9.0, 0.0)), None, 15))
    assert a != request(FieldSpec((1, 2), ((0.0, 0.0), (9.0, 0.0)), None, 17))
    assert a != request(FieldSpec((1, 2), ((0.0, 0.0), (9.0, 0.0)), None, 15, period=32))


def test_cpu_row_bands_give_the_same_bits(monkeypatch):
    """With a tiny scratch budget every TS conv of the spatial path runs in bands of rows."""
    from igan.engine import ops

    model = random_model(TINY, seed=8)
    field = FusedField(TINY, [1, 2], [(0.0, 0.0), (30.0, 20.0)], 9, 3)
    window = Window(-20, -25, 70, 57)
    ref = _render(model, field, window)
    monkeypatch.setattr(ops, "_CPU_BAND_BYTES", 1)  # one output row (two for upsampling) per band
    assert np.array_equal(_render(model, field, window), ref)
    monkeypatch.setattr(ops, "_CPU_BAND_BYTES", 16 * 9 * 40 * 4 * 3)  # a few rows, uneven last band
    assert np.array_equal(_render(model, field, window), ref)
