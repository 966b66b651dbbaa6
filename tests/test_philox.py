"""The Philox4x32-10 latent generator ("philox", engine/rng.py): the block function against
Random123's published known answers, the documented (seed, stream, channel, row, col) ->
(key, counter) mapping, the absence of v1's aliasing, the distribution, and the properties
every latent generator keeps (any window, any order, any chunking, CPU == GPU bits)."""
import math
import pickle
import random

import numpy as np
import pytest
import torch
from scipy import stats

import igan.engine.rng as generators
from igan.engine.config import PRESETS
from igan.engine.provenance import LATENT_RNG_VERSIONS
from igan.engine.latent import LatentField
from igan.engine.rng import LATENT_RNGS, MASK32, hash_normal, philox4x32_10, philox_key, philox_normal

CFG = PRESETS["small"]

# Random123 kat_vectors, "philox4x32 10" lines: counter (4 words), key (2 words), result (4 words).
KAT = [
    ((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x00000000, 0x00000000),
     (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF),
     (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def philox_reference(ctr, key):
    """Philox4x32-10 as Random123's philox.h writes it, with Python's unbounded ints (the
    32x32-bit products done directly, not in 16-bit halves)."""
    c, k = list(ctr), list(key)
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & MASK32, (p0 >> 32) ^ c[3] ^ k[1], p0 & MASK32]
        k = [(k[0] + 0x9E3779B9) & MASK32, (k[1] + 0xBB67AE85) & MASK32]
    return tuple(c)


# ---- the block function -------------------------------------------------------------------
@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_random123_known_answers(ctr, key, expected):
    assert philox_reference(ctr, key) == expected
    assert tuple(philox4x32_10(*ctr, *key)) == expected  # Python ints
    words = philox4x32_10(*[torch.tensor([c], dtype=torch.int64) for c in ctr], *key)  # int64 tensors
    assert tuple(int(w) for w in words) == expected


def test_int64_philox_equals_the_plain_philox(rng):
    """Random counters and keys over the whole 32-bit range (top bits set included), and the
    broadcasting in-place path philox_normal uses."""
    ctr = rng.integers(0, 2**32, (2000, 4), dtype=np.int64)
    ctr[:10] = MASK32
    for k0, k1 in [(0, 0), (MASK32, MASK32), *(tuple(int(v) for v in rng.integers(0, 2**32, 2)) for _ in range(3))]:
        got = torch.stack(philox4x32_10(*torch.from_numpy(ctr).T, k0, k1), 1).tolist()
        assert [tuple(g) for g in got] == [philox_reference(tuple(int(v) for v in c), (k0, k1)) for c in ctr]
        cols, rows, chans = (torch.from_numpy(ctr[:40, 0]).reshape(1, 40), torch.from_numpy(ctr[:30, 1]).reshape(30, 1),
                             torch.from_numpy(ctr[:30, 2]).reshape(30, 1))
        stream = int(ctr[0, 3])
        w0, w1 = generators._philox_w01(cols, rows, chans, stream, k0, k1)
        for i in range(0, 30, 7):
            for j in range(0, 40, 9):
                ref = philox_reference((int(cols[0, j]), int(rows[i, 0]), int(chans[i, 0]), stream), (k0, k1))
                assert (int(w0[i, j]), int(w1[i, j])) == ref[:2]


# ---- the documented mapping -----------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 5, 2**32 + 7, 2**63 - 1])
def test_values_follow_the_documented_mapping(seed):
    """key = (seed mod 2^32, seed >> 32), counter = (col mod 2^32, row mod 2^32, channel,
    stream), u = ((w0 >> 8) + 1) / 2^24, value = sqrt(-2 log u) cos(2 pi w1 / 2^32)."""
    stream = 16 + 3
    chans = torch.tensor([0, 1, 255])
    rows = torch.tensor([-2**31 + 1, -1, 0, 1, 12345, 2**31 - 1])
    cols = torch.tensor([-2**31 + 1, -7, 0, 99, 2**31 - 1])
    z = philox_normal(seed, stream, chans, rows, cols)
    assert z.shape == (3, 6, 5) and z.dtype == torch.float32
    k = (seed & MASK32, seed >> 32)
    assert philox_key(seed) == k
    words = [[[philox_reference((int(c) & MASK32, int(r) & MASK32, int(ch), stream), k) for c in cols]
              for r in rows] for ch in chans]
    w = torch.tensor(words, dtype=torch.int64)  # [3, 6, 5, 4]
    assert torch.equal(z, generators._box_muller(w[..., 0], w[..., 1]))  # the same bits
    u = ((w[..., 0] >> 8) + 1).double() * 2.0**-24
    exact = torch.sqrt(-2 * torch.log(u)) * torch.cos(2 * math.pi * w[..., 1].double() / 2.0**32)
    assert (z.double() - exact).abs().max().item() < 2e-5  # Box-Muller to float32 precision


def test_seeds_streams_and_indices_out_of_range_are_refused():
    idx = torch.arange(3)
    for seed in (-1, 2**63, 1.5, True):
        with pytest.raises(ValueError, match="seed"):
            philox_normal(seed, 2, idx, idx, idx)
    for stream in (-1, 2**32):
        with pytest.raises(ValueError, match="stream"):
            philox_normal(1, stream, idx, idx, idx)
    with pytest.raises(ValueError, match="channels"):
        philox_normal(1, 2, torch.tensor([-1]), idx, idx)


# ---- v1's aliasing is gone ------------------------------------------------------------------
def _aliased_pairs(normal, n_channels: int, n_rows: int, seed=1, stream=2) -> int:
    """Pairs of (channel, row) whose 16 values at columns 0..15 are the same multiset (v1:
    row hashes equal but for the low 4 bits give the same values, columns permuted)."""
    z = normal(seed, stream, torch.arange(n_channels), torch.arange(n_rows), torch.arange(16))
    blocks = z.reshape(-1, 16).sort(dim=1).values.contiguous().numpy()
    bits = blocks.view(np.uint32).astype(np.uint64)
    mult = np.random.default_rng(0).integers(1, 2**63, 16, dtype=np.uint64) | np.uint64(1)
    with np.errstate(over="ignore"):
        sig = (bits * mult).sum(axis=1, dtype=np.uint64)  # a 64-bit hash of the sorted block
    _, inverse, counts = np.unique(sig, return_inverse=True, return_counts=True)
    dup = np.flatnonzero(counts[inverse.reshape(-1)] > 1)  # blocks whose hash repeats
    dup = dup[np.argsort(sig[dup], kind="stable")]
    pairs = 0
    for group in np.split(dup, np.flatnonzero(np.diff(sig[dup])) + 1):  # equal hashes: compare exactly
        for i, a in enumerate(group):
            pairs += sum(np.array_equal(blocks[a], blocks[b]) for b in group[i + 1:])
    return pairs


def test_v1_aliases_and_philox_does_not():
    """8 channels x 16,384 rows: v1 has about 2^34 / 2^28 / 2 = 32 aliased pairs."""
    assert _aliased_pairs(hash_normal, 8, 16384) > 10
    assert _aliased_pairs(philox_normal, 8, 16384) == 0


@pytest.mark.slow
def test_no_aliasing_at_the_scale_of_the_issue():
    """32 channels x 65,536 rows, as in the issue: v1 about 2^41 / 2^28 (~8,000) pairs, philox none."""
    assert _aliased_pairs(hash_normal, 32, 65536) > 7000
    assert _aliased_pairs(philox_normal, 32, 65536) == 0


# ---- distribution ---------------------------------------------------------------------------
def test_values_are_standard_normal():
    z = philox_normal(12345, 2, torch.arange(16), torch.arange(-64, 64), torch.arange(-100, 100)).flatten().numpy()
    assert abs(z.mean()) < 4 / math.sqrt(z.size)
    assert abs(z.std() - 1) < 4 / math.sqrt(2 * z.size)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(stats.skew(z)) < 0.05
    assert abs(stats.kurtosis(z)) < 0.05
    assert abs(np.mean(np.abs(z) > 3) - 2 * stats.norm.sf(3)) < 4e-4


def test_neighbours_channels_streams_and_seeds_are_uncorrelated():
    idx = torch.arange(256)
    a = philox_normal(7, 2, idx[:8], idx, idx)
    limit = 5 / math.sqrt(256 * 256)

    def corr(x, y):
        return abs(np.corrcoef(x.flatten(), y.flatten())[0, 1])

    assert corr(a[0], a[1]) < limit
    assert corr(a[0, :, :-1], a[0, :, 1:]) < limit
    assert corr(a[0, :-1], a[0, 1:]) < limit
    for other in (philox_normal(7, 3, idx[:1], idx, idx), philox_normal(8, 2, idx[:1], idx, idx),
                  philox_normal(7 + 2**32, 2, idx[:1], idx, idx),  # seeds differing only in the high word
                  hash_normal(7, 2, idx[:1], idx, idx)):
        assert corr(a[0], other[0]) < limit


# ---- any window, any order, any chunking ----------------------------------------------------
def test_a_window_is_a_slice_of_any_larger_window_in_any_order():
    field = LatentField(CFG, seed=42, rng="philox")
    big_z, big_coords, big_noises = field.window(-40, -25, 60, 70)
    tiles = [(r, c) for r in range(-40, 10, 10) for c in range(-25, 35, 12)]
    random.Random(0).shuffle(tiles)
    for r, c in tiles:
        z = field.local_latent(r, c, 10, 12)
        assert torch.equal(z, big_z[:, r + 40:r + 50, c + 25:c + 37])
    z2, coords2, noises2 = field.window(-34, -19, 45, 50)
    assert torch.equal(z2, big_z[:, 6:51, 6:56])
    for step, n, n2 in zip([2, 2, 4, 4, 8, 8, 16, 16], big_noises, noises2):
        assert torch.equal(n2, n[:, 6 * step:6 * step + n2.shape[1], 6 * step:6 * step + n2.shape[2]])
    # one value at a time
    for r, c in [(-40, -25), (0, 0), (19, 44)]:
        assert torch.equal(field.local_latent(r, c, 1, 1)[:, 0, 0], big_z[:, r + 40, c + 25])


def test_values_do_not_depend_on_chunking_or_threads(monkeypatch):
    zero = torch.zeros(1, dtype=torch.int64)
    ref = philox_normal(9, 2, zero, zero, torch.arange(0, 70_000))[0, 0]
    threads = torch.get_num_threads()
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            for width in range(40_000, 40_060, 7):  # moves the vector tail and the thread split
                start = width % 97
                got = philox_normal(9, 2, zero, zero, torch.arange(start, start + width))[0, 0]
                assert torch.equal(got, ref[start:start + width]), (n_threads, width)
        chans, rows, cols = torch.arange(3), torch.arange(-5, 6), torch.arange(-20, 30)
        whole = philox_normal(9, 2, chans, rows, cols)
        for chunk in (1, 49, 50, 51, 1000):  # chunks of whole rows, of one row, of several
            monkeypatch.setitem(generators._CHUNK, "cpu", chunk)
            assert torch.equal(philox_normal(9, 2, chans, rows, cols), whole), chunk
        assert torch.equal(philox_normal(9, 2, zero, zero, torch.arange(0, 70_000))[0, 0], ref)
    finally:
        torch.set_num_threads(threads)


# ---- the LatentField switch -----------------------------------------------------------------
def test_latent_field_selects_the_generator():
    assert set(LATENT_RNGS) == set(LATENT_RNG_VERSIONS) == {"v1", "philox"}
    assert LATENT_RNG_VERSIONS == {"v1": "igan-hash-v1", "philox": "philox4x32-10/v1"}
    v1, default, ph = LatentField(CFG, 3, rng="v1"), LatentField(CFG, 3), LatentField(CFG, 3, rng="philox")
    assert default.rng == "philox" and default.rng_version == "philox4x32-10/v1"  # the default since igan 0.2
    assert v1.rng == "v1" and v1.rng_version == "igan-hash-v1"
    c = torch.arange(CFG.local_latent_dim)
    assert torch.equal(v1.local_latent(-3, 4, 5, 6), hash_normal(3, generators.STREAM_LOCAL, c, torch.arange(-3, 2),
                                                                 torch.arange(4, 10)))
    assert torch.equal(ph.local_latent(-3, 4, 5, 6), philox_normal(3, generators.STREAM_LOCAL, c, torch.arange(-3, 2),
                                                                   torch.arange(4, 10)))
    assert torch.equal(ph.window(0, 0, 30, 30)[0], default.window(0, 0, 30, 30)[0])
    zp, coords_p, noises_p = ph.window(0, 0, 30, 30)
    zv, coords_v, noises_v = v1.window(0, 0, 30, 30)
    assert not torch.equal(zp, zv) and torch.equal(coords_p, coords_v)
    assert all(not torch.equal(a, b) for a, b in zip(noises_p, noises_v))
    g = ph.global_latent()
    assert g.shape == (CFG.global_latent_dim,) and not torch.equal(g, v1.global_latent())
    assert not torch.equal(g, LatentField(CFG, 3, rng="philox", style_index=1).global_latent())
    # a cyclic canvas wraps with either generator
    cyc = LatentField(CFG, 3, rng="philox", period=16 * 20)
    assert torch.equal(cyc.local_latent(0, 20, 4, 5), cyc.local_latent(0, 0, 4, 5))
    for bad in ("v2", "Philox", None, ""):
        with pytest.raises(ValueError, match="latent generator"):
            LatentField(CFG, 3, rng=bad)


def test_pickles_keep_the_generator():
    ph = LatentField(CFG, 3, rng="philox")
    back = pickle.loads(pickle.dumps(ph))
    assert back.rng == "philox" and torch.equal(back.local_latent(0, 0, 4, 4), ph.local_latent(0, 0, 4, 4))
    old = LatentField(CFG, 3)
    del old.__dict__["rng"]  # a field pickled before the attribute existed
    old = pickle.loads(pickle.dumps(old))
    assert old.rng == "v1"
    assert torch.equal(old.local_latent(0, 0, 4, 4), LatentField(CFG, 3, rng="v1").local_latent(0, 0, 4, 4))


# ---- devices --------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_identical_bits_on_cpu_and_gpu(rng):
    ctr = torch.from_numpy(rng.integers(0, 2**32, (100_000, 4), dtype=np.int64))
    cpu = philox4x32_10(*ctr.T, 0x12345678, 0x9ABCDEF0)
    gpu = philox4x32_10(*ctr.cuda().T, 0x12345678, 0x9ABCDEF0)
    assert all(torch.equal(a, b.cpu()) for a, b in zip(cpu, gpu))
    field = LatentField(CFG, seed=11, rng="philox")
    cpu = field.window(-7, 5, 50, 60, "cpu")
    gpu = field.window(-7, 5, 50, 60, "cuda")
    assert torch.equal(cpu[0], gpu[0].cpu())
    for a, b in zip(cpu[2], gpu[2]):
        assert torch.equal(a, b.cpu())
    big = philox_normal(2**40 + 3, 2, torch.arange(64), torch.arange(-256, 256), torch.arange(-256, 256))
    assert torch.equal(big, philox_normal(2**40 + 3, 2, torch.arange(64, device="cuda"),
                                          torch.arange(-256, 256, device="cuda"),
                                          torch.arange(-256, 256, device="cuda")).cpu())
