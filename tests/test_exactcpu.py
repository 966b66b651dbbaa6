"""The default CPU path (engine/exactcpu.py): its layers against float64 references, its C++
passes against their torch twins bit for bit, and the properties its promise rests on (a GEMM
row's bits do not depend on the row count or the threads; a value's bits do not depend on the
tensor around it). Whole renders under every split: tests/test_cpu_paths.py."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import igan.engine  # noqa: F401  (pins MKL to its strict mode before torch computes)
from igan.engine import exactcpu, native, ops


@pytest.fixture
def gen():
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    print("seed", seed)  # shown on failure
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def threads():
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


def _nhwc(x):
    return x.permute(0, 2, 3, 1).contiguous()


def _nchw(x):
    return x.permute(0, 3, 1, 2)


@pytest.mark.parametrize("op", ["mm", "bmm", "addmm"])
def test_gemm_rows_do_not_depend_on_row_count_or_threads(op, gen, threads):
    """The property the whole path rests on: under MKL's strict mode a GEMM row's bits are a
    function of that row alone, whatever the number of rows around it and the threads."""
    c, o = 192, 160
    a = torch.randn(16, 3000, c, generator=gen)
    b = torch.randn(16, c, o, generator=gen)
    acc = torch.randn(3000, o, generator=gen)

    def run(rows):
        if op == "mm":
            return torch.mm(a[0, :rows], b[0])[:40]
        if op == "bmm":
            return torch.bmm(a[:, :rows], b)[:, :40]
        y = acc[:rows].clone()
        y.addmm_(a[0, :rows], b[0])
        return y[:40]

    torch.set_num_threads(1)
    ref = run(40)
    for t in (1, 2, 3):
        torch.set_num_threads(t)
        for rows in (41, 333, 3000):
            assert torch.equal(run(rows), ref), (op, t, rows)


def _conv64(x, w):
    return F.conv2d(x.double(), w.double())


def _err_bound(x, w):
    """What float32 may cost each value of a conv (and the activation's gain): 2 ulps of the
    sum of |terms| at that value (measured: Winograd's error stays under 1)."""
    return 2 * ops.SQRT2 * torch.finfo(torch.float32).eps * F.conv2d(x.double().abs(), w.double().abs())


def _close(got, want, bound):
    assert got.shape == want.shape
    excess = (got - want).abs() - bound
    assert excess.max() <= 1e-7, f"off by {excess.max().item():.3g} more than float32 rounding allows"


@pytest.mark.parametrize("size", [(9, 9), (10, 13), (16, 7)])
def test_winograd_matches_a_float64_conv(size, gen):
    n, c, o = 2, 128, 136
    x = torch.randn(n, c, *size, generator=gen)
    w = torch.randn(o, c, 3, 3, generator=gen) / 30
    bias = torch.randn(o, generator=gen)
    noise = torch.randn(n, 1, size[0] - 2, size[1] - 2, generator=gen)
    strength = torch.tensor([0.3])
    got = _nchw(exactcpu.winograd_conv3x3(_nhwc(x), exactcpu.winograd_weight(w), bias, noise, strength)).double()
    want = _conv64(x, w) + bias.double().view(1, -1, 1, 1) + 0.3 * noise.double()
    want = F.leaky_relu(want, 0.2) * ops.SQRT2
    _close(got, want, _err_bound(x, w) + 4 * torch.finfo(torch.float32).eps * want.abs())


def test_upconv_matches_the_reference_in_float64(gen):
    n, c, o, h, w = 2, 24, 20, 7, 9
    x = torch.randn(n, c, h, w, generator=gen)
    wt = torch.randn(o, c, 3, 3, generator=gen) / 10
    bias = torch.randn(o, generator=gen)
    noise = torch.randn(n, 1, 2 * h - 3, 2 * w - 3, generator=gen)
    strength = torch.tensor([-0.7])
    got = _nchw(exactcpu.upconv(_nhwc(x), exactcpu._phases(wt), bias, noise, strength)).double()
    want = ops.upconv2d(x.double(), wt.double()) + bias.double().view(1, -1, 1, 1) - 0.7 * noise.double()
    want = F.leaky_relu(want, 0.2) * ops.SQRT2
    bound = ops.upconv2d(x.double().abs(), wt.double().abs()) * 2 * ops.SQRT2 * torch.finfo(torch.float32).eps
    _close(got, want, bound + 4 * torch.finfo(torch.float32).eps * want.abs())


@pytest.mark.parametrize("k", [1, 3, 7])
def test_gemm_conv_matches_a_float64_conv(k, gen):
    x = torch.randn(3, 20, 15, 12, generator=gen)
    w = torch.randn(24, 20, k, k, generator=gen) / 10
    got = _nchw(exactcpu.gemm_conv(_nhwc(x), exactcpu.gemm_weight(w), k, k)).double()
    _close(got, _conv64(x, w), _err_bound(x, w) / ops.SQRT2)


def test_a_value_does_not_depend_on_the_tensor_around_it(gen, threads):
    """A window of the input at an even offset (the anchoring every 3x3 conv of the texture
    synthesizer has) gives the same bits as the whole, for Winograd; any offset for the GEMM
    convs; any threads."""
    c, o = 128, 128
    x = _nhwc(torch.randn(1, c, 23, 21, generator=gen))
    u = exactcpu.winograd_weight(torch.randn(o, c, 3, 3, generator=gen) / 30)
    bias = torch.randn(o, generator=gen)
    wg = exactcpu.gemm_weight(torch.randn(o, c, 3, 3, generator=gen) / 30)
    torch.set_num_threads(2)
    whole = exactcpu.winograd_conv3x3(x, u, bias)
    whole_g = exactcpu.gemm_conv(x, wg, 3, 3)
    for t, (y0, x0, h, w) in zip((1, 2, 3), ((0, 0, 9, 11), (4, 6, 11, 9), (10, 2, 13, 19))):
        torch.set_num_threads(t)
        part = exactcpu.winograd_conv3x3(x[:, y0:y0 + h, x0:x0 + w].contiguous(), u, bias)
        assert torch.equal(part, whole[:, y0:y0 + h - 2, x0:x0 + w - 2]), (t, y0, x0)
        y1, x1 = y0 + 1, x0 + 3  # odd offsets: the GEMM convs do not care
        part = exactcpu.gemm_conv(x[:, y1:y1 + h, x1:x1 + w].contiguous(), wg, 3, 3)
        assert torch.equal(part, whole_g[:, y1:y1 + h - 2, x1:x1 + w - 2]), (t, y1, x1)


needs_native = pytest.mark.skipif(native.UNAVAILABLE_REASON is not None, reason=str(native.UNAVAILABLE_REASON))


def _both(fn):
    """fn() with the C++ passes and with their torch twins."""
    with native.python_fallback():
        twin = fn()
    return fn(), twin


@needs_native
@pytest.mark.parametrize("noise", [True, False])
@pytest.mark.parametrize("size", [(8, 8), (9, 12), (13, 7)])
def test_cxx_passes_equal_their_torch_twins(size, noise, gen):
    """Each C++ pass gives its twin's bytes: the Winograd transforms (odd sizes: the padded
    tile row and column), the upsampling blur on the phases, the epilogue; negative zeros,
    infinities and NaN included."""
    n, c, o = 2, 128, 128
    x = torch.randn(n, c, *size, generator=gen)
    x.view(-1)[:5] = torch.tensor([-0.0, 0.0, float("inf"), -float("inf"), float("nan")])
    xh = _nhwc(x)
    w = torch.randn(o, c, 3, 3, generator=gen) / 30
    bias = torch.randn(o, generator=gen)
    h2, w2 = size[0] - 2, size[1] - 2
    nz = torch.randn(n, 1, h2, w2, generator=gen) if noise else None
    st = torch.tensor([0.25]) if noise else None
    u = exactcpu.winograd_weight(w)
    a, b = _both(lambda: exactcpu.winograd_conv3x3(xh, u, bias, nz, st))
    assert torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))
    assert torch.equal(a.isnan(), b.isnan())

    small = _nhwc(torch.randn(n, 16, *size, generator=gen))
    ws = torch.randn(12, 16, 3, 3, generator=gen)
    bs = torch.randn(12, generator=gen)
    nu = torch.randn(n, 1, 2 * size[0] - 3, 2 * size[1] - 3, generator=gen) if noise else None
    a, b = _both(lambda: exactcpu.upconv(small, exactcpu._phases(ws), bs, nu, st))
    assert torch.equal(a, b)

    y = exactcpu.gemm_conv(small, exactcpu.gemm_weight(ws), 3, 3)  # a strided view, as between layers
    a, b = _both(lambda: exactcpu.epilogue_(y.clone(), nz if noise and nz.shape[2:] == y.shape[1:3] else None,
                                            st, bs))
    assert torch.equal(a, b)


@needs_native
def test_cxx_passes_do_not_depend_on_threads(gen, threads):
    x = _nhwc(torch.randn(3, 16, 11, 10, generator=gen))
    ws = exactcpu._phases(torch.randn(16, 16, 3, 3, generator=gen))
    bs = torch.randn(16, generator=gen)
    outs = []
    for t in (1, 2, 3, 5):
        torch.set_num_threads(t)
        outs.append(exactcpu.upconv(x, ws, bs))
    assert all(torch.equal(o, outs[0]) for o in outs)
