"""The counter-based latent field: pure functions of (seed, what, position)."""
import math
import time

import numpy as np
import pytest
import torch
from scipy import stats

from igan.engine.config import PRESETS
from igan.engine.latent import LatentField
from igan.engine.rng import MASK32, _mix32, hash_normal

CFG = PRESETS["small"]


def _mix32_reference(x: int) -> int:
    """The hash with Python's unbounded ints: 32-bit multiplies done directly."""
    x ^= x >> 16
    x = (x * 0x21F0AAAD) & MASK32
    x ^= x >> 15
    x = (x * 0x735A2D97) & MASK32
    return x ^ (x >> 15)


def test_int64_hash_equals_the_plain_32bit_hash(rng):
    xs = rng.integers(0, 2**32, 10_000, dtype=np.int64)
    got = _mix32(torch.from_numpy(xs)).numpy()
    assert [int(v) for v in got] == [_mix32_reference(int(x)) for x in xs]
    assert len(set(got.tolist())) == len(set(xs.tolist()))  # a bijection: no collisions


def test_values_are_standard_normal():
    z = hash_normal(12345, 2, torch.arange(16), torch.arange(-64, 64), torch.arange(-100, 100)).flatten().numpy()
    assert abs(z.mean()) < 4 / math.sqrt(z.size)
    assert abs(z.std() - 1) < 4 / math.sqrt(2 * z.size)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(stats.kurtosis(z)) < 0.05
    assert abs(np.mean(np.abs(z) > 3) - 2 * stats.norm.sf(3)) < 4e-4


def test_neighbours_channels_and_streams_are_uncorrelated():
    idx = torch.arange(256)
    a = hash_normal(7, 2, idx[:8], idx, idx)
    limit = 5 / math.sqrt(256 * 256)
    assert abs(np.corrcoef(a[0].flatten(), a[1].flatten())[0, 1]) < limit
    assert abs(np.corrcoef(a[0, :, :-1].flatten(), a[0, :, 1:].flatten())[0, 1]) < limit
    assert abs(np.corrcoef(a[0, :-1].flatten(), a[0, 1:].flatten())[0, 1]) < limit
    b = hash_normal(7, 3, idx[:1], idx, idx)
    c = hash_normal(8, 2, idx[:1], idx, idx)
    assert abs(np.corrcoef(a[0].flatten(), b[0].flatten())[0, 1]) < limit
    assert abs(np.corrcoef(a[0].flatten(), c[0].flatten())[0, 1]) < limit


def test_transform_is_box_muller_to_float32_precision(rng):
    """The polynomial log/cos only replace libm: compare with float64 Box-Muller of the
    same hash bits."""
    seed, stream = 5, 2
    rows, cols = torch.arange(-50, 50), torch.arange(1000, 1100)
    z = hash_normal(seed, stream, torch.arange(1), rows, cols)[0].double()
    from igan.engine.rng import _OUT2, _key
    h = _mix32(_mix32(_mix32(torch.tensor([0]) ^ _key(seed, stream)) ^ (rows[:, None] & MASK32)) ^ cols)
    u1 = ((h >> 8) + 1).double() * 2.0**-24
    u2 = _mix32(h ^ _OUT2).double() / 2.0**32
    exact = torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * math.pi * u2)
    assert (z - exact).abs().max().item() < 2e-5


def test_a_window_is_a_slice_of_any_larger_window():
    field = LatentField(CFG, seed=42)
    big = field.local_latent(-40, -25, 60, 70)
    assert torch.equal(field.local_latent(-13, 3, 7, 11), big[:, 27:34, 28:39])
    z, coords, noises = field.window(-40, -25, 60, 70)
    z2, coords2, noises2 = field.window(-34, -19, 45, 50)
    assert torch.equal(z2, z[:, 6:51, 6:56])
    assert torch.equal(coords2, coords[:, 6:51, 6:56])
    for step, n, n2 in zip([2, 2, 4, 4, 8, 8, 16, 16], noises, noises2):
        # a shift of 6 cells is a shift of 6 * step positions in layer i's grid
        assert torch.equal(n2, n[:, 6 * step:6 * step + n2.shape[1], 6 * step:6 * step + n2.shape[2]])


def test_seeds_and_layers_give_different_values_and_repeat_exactly():
    a = LatentField(CFG, seed=1)
    assert torch.equal(a.local_latent(0, 0, 4, 4), LatentField(CFG, seed=1).local_latent(0, 0, 4, 4))
    assert not torch.equal(a.local_latent(0, 0, 4, 4), LatentField(CFG, seed=2).local_latent(0, 0, 4, 4))
    assert not torch.equal(a.noise(0, 0, 0, 4, 4), a.noise(1, 0, 0, 4, 4))
    g = a.global_latent()
    assert g.shape == (CFG.global_latent_dim,) and torch.equal(g, LatentField(CFG, seed=1).global_latent())
    assert not torch.equal(g, LatentField(CFG, seed=1, style_index=1).global_latent())


def test_far_away_windows_cost_the_same_as_near_ones():
    field = LatentField(CFG, seed=3)
    start = time.perf_counter()
    far = field.window(10**9 // 16, 2**31 // 2, 40, 40)
    assert time.perf_counter() - start < 5
    assert all(torch.isfinite(t).all() for t in [far[0], far[1], *far[2]])


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, "3"])
def test_bad_seeds_are_refused(seed):
    with pytest.raises(ValueError, match="seed"):
        LatentField(CFG, seed=seed)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_identical_bits_on_cpu_and_gpu():
    field = LatentField(CFG, seed=11)
    cpu = field.window(-7, 5, 50, 60, "cpu")
    gpu = field.window(-7, 5, 50, 60, "cuda")
    assert torch.equal(cpu[0], gpu[0].cpu())
    for a, b in zip(cpu[2], gpu[2]):
        assert torch.equal(a, b.cpu())


def test_sqrt_is_correctly_rounded():
    from igan.engine.rng import _sqrt_exact

    x = torch.cat([torch.rand(500_000) * 60, torch.tensor([0.0, 1.0, 2.0, 4.0, 1e-30, 3.4e38])])
    exact = torch.from_numpy(np.sqrt(x.numpy().astype(np.float64))).float()  # float64 sqrt, rounded once
    assert torch.equal(_sqrt_exact(x), exact)


def test_values_do_not_depend_on_chunking_or_threads(monkeypatch):
    """A value must not change with where it falls in a vector, a chunk or a thread's share of
    the work (torch's vectorised CPU sqrt is not correctly rounded: see _sqrt_exact)."""
    import igan.engine.rng as rng

    zero = torch.zeros(1, dtype=torch.int64)
    ref = hash_normal(9, 2, zero, zero, torch.arange(0, 70_000))[0, 0]
    threads = torch.get_num_threads()
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            for width in range(40_000, 40_120, 3):  # moves the vector tail and the thread split
                start = width % 97
                got = hash_normal(9, 2, zero, zero, torch.arange(start, start + width))[0, 0]
                assert torch.equal(got, ref[start:start + width]), (n_threads, width)
        monkeypatch.setitem(rng._CHUNK, "cpu", 1000)
        assert torch.equal(hash_normal(9, 2, torch.arange(2), zero, torch.arange(0, 70_000))[0, 0], ref)
    finally:
        torch.set_num_threads(threads)
