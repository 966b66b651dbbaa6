"""Evaluation: Fréchet distance, streaming statistics, the ScaleInv resize protocol, the FID
Inception's layout, the end-to-end ScaleInv FID and the igan-bench speed report."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_model
from PIL import Image

from igan.engine.checkpoint import CheckpointError, save
from igan.engine.config import PRESETS
from igan.engine.renderer import Renderer
from igan.engine.runner import TorchRunner
from igan.trainer.eval import inception, scaleinv
from igan.trainer.eval.fid import FeatureStats, frechet_distance, load_stats

DATA = Path(__file__).parent / "data"


# ---- Fréchet distance and statistics ---------------------------------------------------------
def _scipy_fid(mu1, s1, mu2, s2):
    """The reference: the official formula with scipy.linalg.sqrtm."""
    from scipy import linalg

    covmean = linalg.sqrtm(s1 @ s2)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    d = mu1 - mu2
    return d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def _random_cov(rng, d, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / (rank or d)


def test_frechet_identical_gaussians_is_zero(rng):
    mu, cov = rng.standard_normal(16), _random_cov(rng, 16)
    assert abs(frechet_distance(mu, cov, mu, cov)) < 1e-9 * np.trace(cov)
    # Singular, as few-sample covariances are: the 11 zero eigenvalues come out as +-1e-16 * |C|
    # and their square roots as 1e-8 each (scipy's sqrtm has the same sensitivity).
    low = _random_cov(rng, 16, rank=5)
    assert abs(frechet_distance(mu, low, mu, low)) < 16 * np.sqrt(1e-15 * np.trace(low)) * np.sqrt(np.trace(low))


def test_frechet_diagonal_closed_form(rng):
    d = 12
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    v1, v2 = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-12)


def test_frechet_matches_scipy_sqrtm_on_full_covariances(rng):
    for d in (3, 40):
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d) + 0.5
        s1, s2 = _random_cov(rng, d), _random_cov(rng, d) * 2
        ref = _scipy_fid(mu1, s1, mu2, s2)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8, abs=1e-9)


def test_streaming_stats_equal_numpy_on_all_features(rng, tmp_path):
    d = 7
    feats = rng.standard_normal((103, d)) @ rng.standard_normal((d, d)) + 1e3  # large offset: no cancellation
    stats = FeatureStats(d)
    for lo, hi in ((0, 1), (1, 40), (40, 41), (41, 103)):  # uneven batches, float32 and torch inputs mixed
        part = feats[lo:hi]
        stats.update(torch.from_numpy(part) if lo % 2 else part)
    assert stats.count == 103
    np.testing.assert_allclose(stats.mean, feats.mean(0), rtol=1e-13)
    np.testing.assert_allclose(stats.cov, np.cov(feats, rowvar=False), rtol=1e-9, atol=1e-10)
    path = stats.save(tmp_path / "real.npz", {"real_res": "128"})
    count, mean, cov, meta = load_stats(path)
    assert count == 103 and meta["real_res"] == "128"
    np.testing.assert_array_equal(cov, stats.cov)
    with pytest.raises(ValueError, match=r"\[N, 7\]"):
        stats.update(np.zeros((2, 6)))


# ---- the ScaleInv protocol -------------------------------------------------------------------
def test_official_sizes_of_the_protocol():
    """official-training-apps.md section 2: raw 197/394/788/1576/3152, one-shot outputs
    197/405/789/1589/3157, after the 128/197 scale 127/263/512/1032/2051."""
    cfg = PRESETS["InfinityGAN"]
    got = [(p.raw_gen_res, p.generated_size, p.scaled_size, p.eval_gen_res)
           for p in (scaleinv.Protocol.for_config(cfg, n) for n in (1, 2, 4, 8, 16))]
    assert got == [(197, 197, 127, 128), (394, 405, 263, 256), (788, 789, 512, 512),
                   (1576, 1589, 1032, 1024), (3152, 3157, 2051, 2048)]
    assert scaleinv.Protocol.for_config(cfg, 1).fov_scale == 197 / 128


def test_resize_pipeline_by_hand():
    """R=2, F=3 (fov 1.5), N=2 on a 9x9 image whose value is 10*row + col. Bilinear with
    align_corners=True is exact on such a ramp:
      1. 9 -> floor(9/1.5) = 6 samples at j*8/5 = 0, 1.6, 3.2, 4.8, 6.4, 8
      2. crop to R*N = 4 at offset (6-4)//2 = 1: 1.6, 3.2, 4.8, 6.4
      3. 4 -> 2 with corners kept: 1.6, 6.4."""
    proto = scaleinv.Protocol(scale=2, real_res=2, full_size=3)
    r = torch.arange(9.0)
    img = (10 * r[:, None] + r[None, :]).expand(1, 3, 9, 9)
    out = scaleinv.postprocess(img, proto)
    expected = torch.tensor([[17.6, 22.4], [65.6, 70.4]])  # 10 * {1.6, 6.4} + {1.6, 6.4}
    assert out.shape == (1, 3, 2, 2)
    torch.testing.assert_close(out[0, 0], expected, rtol=0, atol=1e-4)
    # N=1: step 1 gives floor(3/1.5) = 2 <= R*N, so nothing is cropped.
    out1 = scaleinv.postprocess(img[..., :3, :3], scaleinv.Protocol(scale=1, real_res=2, full_size=3))
    torch.testing.assert_close(out1[0, 0], torch.tensor([[0.0, 2.0], [20.0, 22.0]]), rtol=0, atol=1e-5)


def test_pil_resize_option_quantises_and_uses_pil_bilinear():
    proto = scaleinv.Protocol(scale=2, real_res=4, full_size=6)  # 24 -> 16 -> crop 8 at 4 -> PIL 4
    img = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0)) * 2.4 - 1.2
    out = scaleinv.postprocess(img, proto, use_pil_resize=True)
    mid = torch.nn.functional.interpolate(img, scale_factor=1 / 1.5, mode="bilinear", align_corners=True)
    mid = mid[..., 4:12, 4:12]
    u8 = ((mid + 1) / 2).clamp(0, 1).mul(255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    ref = np.asarray(Image.fromarray(u8).resize((4, 4), Image.BILINEAR)).astype(np.float32) / 255 * 2 - 1
    np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), ref, atol=1e-6)


def test_real_images_centre_square_crop_then_lanczos(tmp_path):
    a = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)  # h=4, w=6: columns 1..4 are the centre
    Image.fromarray(a).save(tmp_path / "b.png")
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("not an image")
    files = scaleinv.list_images(tmp_path)
    assert [f.name for f in files] == ["a.png", "b.png"]
    np.testing.assert_array_equal(scaleinv.load_real(files[1], 4), a[:, 1:5])
    np.testing.assert_array_equal(scaleinv.load_real(files[0], 4), np.full((4, 4, 3), 200))  # LANCZOS 8 -> 4
    with pytest.raises(ValueError, match="does not exist"):
        scaleinv.list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        scaleinv.list_images(tmp_path / "empty")


@pytest.mark.parametrize("name,scale", [("tiny", 2), ("InfinityGAN", 1), ("InfinityGAN", 2)])
def test_fakes_use_the_official_test_time_grid(name, scale):
    """One-shot fakes: z_l of the plan's window = the official n+2*halo grid, and its coordinates
    equal the official test-time coordinates (centred vertically, angle -pi at column 0)."""
    from igan.engine.geometry import latent_window, output_size
    from igan.engine.latent import official_coords

    cfg = PRESETS[name]
    proto = scaleinv.Protocol.for_config(cfg, scale)
    size = proto.generated_size
    field, plan = scaleinv.fake_request(cfg, proto, seed=0, memory_budget=64 << 30)
    assert len(plan.tiles) == 1 and (plan.tiles[0].cell_row, plan.tiles[0].cell_col) == (0, 0)
    c0, n, offset = latent_window(cfg, 0, size)  # the official one-shot z_l: n = ts input + 2 * halo
    assert (c0, offset) == (0, 0) and output_size(cfg, n) == size
    torch.testing.assert_close(field.coords(0, 0, n, n), official_coords(cfg, n, n), rtol=0, atol=1e-6)


# ---- end to end with a tiny feature extractor ------------------------------------------------
class TinyExtractor(torch.nn.Module):
    """A random conv feature extractor: [B, 3, H, W] in [0, 1] -> [B, 6]."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 6, 3)

    def forward(self, x):
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


def _real_folder(path: Path, n: int, seed: int = 0) -> Path:
    path.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = rng.integers(20, 40, 2)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path / f"{i:03d}.png")
    return path


def test_scaleinv_fid_end_to_end_tiny(tmp_path):
    cfg = PRESETS["tiny"]
    proto = scaleinv.Protocol.for_config(cfg, scale=2, real_res=16)
    assert (proto.full_size, proto.raw_gen_res, proto.generated_size, proto.scaled_size) == (53, 106, 109, 32)
    extractor = TinyExtractor().eval()
    renderer = Renderer(TorchRunner(random_model(cfg, seed=3), "cpu"))
    files = scaleinv.list_images(_real_folder(tmp_path / "real", 5))
    real = scaleinv.real_stats(extractor, files, proto, batch=2, progress=False)
    fake = scaleinv.fake_stats(extractor, renderer, proto, 4, seed=10, batch=3, progress=False)
    assert (real.count, fake.count) == (5, 4)
    fid = frechet_distance(fake.mean, fake.cov, real.mean, real.cov)
    assert np.isfinite(fid) and fid > 0
    # The fakes are a function of the seeds: the same seeds give the same statistics.
    again = scaleinv.fake_stats(extractor, renderer, proto, 4, seed=10, batch=4, progress=False)
    np.testing.assert_allclose(again.mean, fake.mean, rtol=1e-6)
    # One fake by hand: window (0, 0, 109, 109) then the three steps.
    img = scaleinv.fake_image(renderer, proto, 10, None, None)
    assert img.shape == (1, 3, 109, 109)
    one = extractor(scaleinv.to_unit_range(scaleinv.postprocess(img, proto))).detach().numpy()[0]
    first = FeatureStats(6)
    first.update(one[None])
    partial = scaleinv.fake_stats(extractor, renderer, proto, 1, seed=10, progress=False)
    np.testing.assert_allclose(partial.mean, first.mean, rtol=1e-5)


# ---- the FID Inception -----------------------------------------------------------------------
def _official_table() -> dict[str, tuple[int, ...]]:
    table = {}
    for line in (DATA / "fid_inception_v3_convs.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, c_out, c_in, kh, kw = line.split("\t")
        table[f"{name}.conv.weight"] = (int(c_out), int(c_in), int(kh), int(kw))
        for p in ("weight", "bias", "running_mean", "running_var"):
            table[f"{name}.bn.{p}"] = (int(c_out),)
    table["fc.weight"], table["fc.bias"] = (1008, 2048), (1008,)
    return table


def test_inception_layout_matches_the_pytorch_fid_file():
    table = _official_table()
    assert len(table) == 94 * 5 + 2
    assert inception.expected_shapes() == table


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A state dict in the official layout (random values, file as torch.save writes it)."""
    gen = torch.Generator().manual_seed(1)
    state = {}
    for key, shape in _official_table().items():
        if key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        elif key.endswith("bn.weight"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        elif key.endswith("conv.weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=gen) * (2 / fan_in) ** 0.5
        else:
            state[key] = torch.randn(shape, generator=gen) * 0.1
    path = tmp_path_factory.mktemp("inception") / inception.WEIGHTS_FILE
    torch.save(state, path)
    return path, state


def test_inception_loads_official_layout_and_gives_2048_features(inception_file):
    path, state = inception_file
    net = inception.load_fid_inception(path)
    torch.testing.assert_close(net.Mixed_7c.branch_pool.conv.weight, state["Mixed_7c.branch_pool.conv.weight"])
    assert net.Mixed_7c.max_pool and not net.Mixed_7b.max_pool  # the FID graph's last-block max pool
    img = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        feats = inception.FIDFeatures(net)(img)  # resized to 299 inside, one forward
    assert feats.shape == (1, inception.FEATURE_DIM)
    assert torch.isfinite(feats).all() and (feats >= 0).all() and (feats > 0).any()  # ReLU then mean pool


def test_padding_free_average_pool():
    """TensorFlow's average pool (the FID graph) divides by the real inputs: ones stay ones."""
    out = inception._avg_pool_same(torch.ones(1, 1, 4, 5))
    torch.testing.assert_close(out, torch.ones(1, 1, 4, 5))


def test_inception_loader_errors(tmp_path, inception_file):
    with pytest.raises(CheckpointError, match=inception.WEIGHTS_FILE):
        inception.load_fid_inception(tmp_path / "missing.pth")
    _, state = inception_file
    bad = dict(state)
    bad["Mixed_5b.branch_pool.conv.weight"] = torch.zeros(33, 192, 1, 1)
    del bad["fc.bias"]
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"(?s)missing keys.*fc\.bias.*Mixed_5b\.branch_pool\.conv\.weight"):
        inception.load_fid_inception(tmp_path / "bad.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match=r"Inception weights '.*junk\.pth'.*not a torch checkpoint") as err:
        inception.load_fid_inception(tmp_path / "junk.pth")
    assert "weights_only" not in str(err.value)  # torch's hint to load it unsafely is not passed on


# ---- command lines ---------------------------------------------------------------------------
@pytest.mark.slow
def test_igan_eval_cli_end_to_end(tmp_path, inception_file):
    weights, _ = inception_file
    ckpt = save(random_model(PRESETS["tiny"], seed=2), tmp_path / "tiny.safetensors")
    real = _real_folder(tmp_path / "real", 2)
    out, stats = tmp_path / "fid.json", tmp_path / "real.npz"
    cmd = [sys.executable, "-m", "igan.trainer.eval.cli", "scaleinv-fid", "--checkpoint", str(ckpt),
           "--real", str(real), "--scale", "1", "--inception", str(weights), "--num-fake", "2",
           "--real-res", "16", "--batch", "2", "--device", "cpu", "--json", str(out),
           "--save-real-stats", str(stats), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["num_fake"] == 2 and result["num_real"] == 2 and np.isfinite(result["fid"])
    assert result["generated_size"] == 53 and "not 6726825d" in done.stderr  # random file: warned
    # Cached real statistics from another protocol are refused, naming the field.
    again = [str(stats) if c == str(real) else ("8" if c == "16" else c) for c in cmd[:-5]]  # --real-res 8
    bad = subprocess.run(again, capture_output=True, text=True)
    assert bad.returncode == 1 and "real_res" in bad.stderr


@pytest.mark.slow
def test_igan_eval_cli_missing_weights(tmp_path):
    done = subprocess.run([sys.executable, "-m", "igan.trainer.eval.cli", "scaleinv-fid", "--real", str(tmp_path),
                           "--scale", "2", "--inception", str(tmp_path / "nope.pth")], capture_output=True, text=True)
    assert done.returncode == 1 and inception.WEIGHTS_FILE in done.stderr


@pytest.mark.slow
def test_igan_bench_cpu_table_and_plot(tmp_path):
    plot, js = tmp_path / "bench.png", tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "igan.engine.cli.bench", "--device", "cpu", "--sizes", "48,64x32",
                           "--baseline-tile", "32", "--plot", str(plot), "--json", str(js)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "| 48x48 |" in done.stdout and "| 64x32 |" in done.stdout
    rows = json.loads(js.read_text())["rows"]
    assert [(r["width"], r["height"]) for r in rows] == [(48, 48), (64, 32)]
    for r in rows:
        assert r["mp_per_s"] == pytest.approx(r["width"] * r["height"] / 1e6 / r["seconds"])
        assert r["tflops"] == pytest.approx(r["flops_per_pixel"] * r["mp_per_s"] * 1e6 / 1e12)
        assert r["work_ratio"] >= 1.0
        # Fixed 32-px tiles recompute halos: more work per pixel than one tile per image.
        assert r["baseline"]["work_ratio"] > r["work_ratio"] and r["baseline"]["tiles"] > r["tiles"]
        assert r["speedup"] == pytest.approx(r["mp_per_s"] / r["baseline"]["mp_per_s"])
    assert "1.00x (baseline)" in done.stdout
    with Image.open(plot) as im:
        assert im.format == "PNG" and im.size[0] >= 600
    bad = subprocess.run([sys.executable, "-m", "igan.engine.cli.bench", "--sizes", "12,abc", "--plot", str(plot)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "'abc'" in bad.stderr
