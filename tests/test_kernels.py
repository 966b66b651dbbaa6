"""Fused Triton kernels against their torch references, on fresh random inputs with awkward
sizes. On CPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1, set in
conftest.py); on a GPU the same tests run on CUDA.

Tolerance rule (after flash-attention's tests): the kernel's error against a float64
reference may be at most twice the error of torch's own float32 computation of the same
op, plus a small absolute term."""
import numpy as np
import pytest
import torch

pytest.importorskip("triton", reason="the kernels need triton (./run installs it)")

import igan.kernels.ops  # noqa: F401  (registers torch.ops.igan.*)
from igan.kernels import use_triton
from igan.kernels.conv import BlockConfig, conv_ref, conv_triton, fused_conv, pack_weight
from igan.kernels.upsample import upconv_ref, upconv_triton

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SENTINEL = -12345.0


def _assert_close(out, ref64, ref32, what=""):
    err = (out.double() - ref64).abs().max().item()
    err32 = (ref32.double() - ref64).abs().max().item()
    scale = ref64.abs().max().item()
    assert err <= 2 * err32 + 1e-6 * max(1.0, scale), f"{what}: kernel error {err:.3g}, torch fp32 error {err32:.3g}"


def _awkward(x, rng, device):
    """The same values in a random memory layout: contiguous, channels-last or a strided view."""
    kind = rng.integers(3)
    if kind == 1:
        return x.to(device).contiguous(memory_format=torch.channels_last)
    if kind == 2:
        big = torch.full((x.shape[0], x.shape[1], x.shape[2] + 3, x.shape[3] * 2), float("nan"), device=device)
        view = big[:, :, 1:1 + x.shape[2], ::2]
        view.copy_(x)
        return view
    return x.to(device)


def _case(rng, device, *, coords=False, spatial=False, k=3):
    n, c1, cout = int(rng.integers(1, 4)), int(rng.integers(1, 40)), int(rng.integers(1, 40))
    h, w = int(rng.choice([k, 11, 17, 19])), int(rng.choice([k + 2, 11, 13, 17]))
    c2 = 3 if coords else 0
    g = torch.Generator().manual_seed(int(rng.integers(2**31)))
    x = torch.randn(n, c1, h, w, generator=g)
    kw = dict(noise_strength=float(rng.uniform(0.2, 1.0)), act=bool(rng.integers(2)))
    weight = torch.randn(cout, c1 + c2, k, k, generator=g) / np.sqrt((c1 + c2) * k * k)
    oh, ow = h - k + 1, w - k + 1
    if coords:
        kw.update(coords=torch.randn(n, c2, h + 6, w + 6, generator=g), coords_offset=int(rng.integers(0, 4)))
    if spatial:
        wsq = (weight**2).sum([2, 3]).t()  # [in, out], `in` contiguous (as the model makes it) or not
        kw.update(style=torch.rand(n, c1 + c2, h, w, generator=g) + 0.5,
                  wsq=wsq if rng.integers(2) else wsq.contiguous())
    if rng.random() < 0.8:
        kw["noise"] = torch.randn(n, 1, oh, ow, generator=g)
    if rng.random() < 0.8:
        kw["bias"] = torch.randn(cout, generator=g)
    return x, weight, kw


def _to(kw, device, dtype=None):
    return {k: (v.to(device, dtype) if isinstance(v, torch.Tensor) and dtype else v.to(device))
            if isinstance(v, torch.Tensor) else v for k, v in kw.items()}


def _refs(fn, x, weight, kw):
    kw64 = {k: v.double() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    return fn(x.double(), weight.double(), **kw64), fn(x, weight, **kw)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", ["plain", "coords7x7", "spatial", "spatial+coords", "1x1"])
@pytest.mark.slow
def test_fused_conv_matches_reference(rng, device, variant):
    for _ in range(3):
        k = 7 if variant == "coords7x7" else 1 if variant == "1x1" else 3
        x, weight, kw = _case(rng, "cpu", coords="coords" in variant, spatial="spatial" in variant, k=k)
        ref64, ref32 = _refs(conv_ref, x, weight, kw)
        out = conv_triton(_awkward(x, rng, device), weight.to(device), **_to(kw, device))
        _assert_close(out.cpu(), ref64, ref32, variant)


@pytest.mark.parametrize("device", DEVICES)
def test_torgb_skip_epilogue(rng, device):
    g = torch.Generator().manual_seed(1)
    for n, c, h, w in [(1, 7, 11, 13), (3, 32, 17, 17)]:
        x, weight = torch.randn(n, c, h, w, generator=g), torch.randn(3, c, 1, 1, generator=g)
        kw = dict(bias=torch.randn(3, generator=g), skip=torch.randn(n, 3, (h + 5) // 2 + 1, (w + 5) // 2 + 2, generator=g))
        ref64, ref32 = _refs(conv_ref, x, weight, kw)
        _assert_close(conv_triton(_awkward(x, rng, device), weight.to(device), **_to(kw, device)).cpu(), ref64, ref32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("spatial", [False, True])
def test_fused_upconv_matches_reference(rng, device, spatial):
    g = torch.Generator().manual_seed(int(rng.integers(2**31)))
    for n, cin, cout, h, w in [(2, 5, 7, 6, 9), (1, 33, 17, 11, 3), (3, 3, 1, 4, 4)]:
        x = torch.randn(n, cin, h, w, generator=g)
        weight = torch.randn(cout, cin, 3, 3, generator=g) / np.sqrt(cin * 9)
        kw = dict(noise=torch.randn(n, 1, 2 * h - 3, 2 * w - 3, generator=g), noise_strength=0.6,
                  bias=torch.randn(cout, generator=g), act=True)
        if spatial:
            kw.update(style=torch.rand(n, cin, h, w, generator=g) + 0.5, wsq=(weight**2).sum([2, 3]).t().contiguous())
        ref64, ref32 = _refs(upconv_ref, x, weight, kw)
        _assert_close(upconv_triton(_awkward(x, rng, device), weight.to(device), **_to(kw, device)).cpu(),
                      ref64, ref32, f"upconv {n, cin, cout, h, w}")


def test_uniform_spatial_style_equals_folded_weights(rng):
    """The official equivalence: a constant style map through the spatial path gives the
    same output as folding that style (with demodulation) into the weights."""
    g = torch.Generator().manual_seed(3)
    x, raw = torch.randn(2, 9, 13, 12, generator=g), torch.randn(6, 9, 3, 3, generator=g) / 9
    s = torch.rand(9, generator=g) + 0.5
    folded = raw * s[None, :, None, None]
    folded = folded * torch.rsqrt((folded**2).sum([1, 2, 3]) + 1e-8)[:, None, None, None]
    style = s[None, :, None, None].expand(2, 9, 13, 12).contiguous()
    spatial = conv_triton(x, raw, style=style, wsq=(raw**2).sum([2, 3]).t().contiguous())
    assert (spatial - conv_ref(x, folded)).abs().max().item() < 1e-5


@pytest.mark.slow
def test_kernels_write_nothing_outside_their_output():
    """The interpreter does not catch out-of-bounds stores: check guard regions."""
    g = torch.Generator().manual_seed(4)
    x, weight = torch.randn(2, 11, 17, 13, generator=g), torch.randn(19, 11, 3, 3, generator=g)
    buf = torch.full((3, 23, 21, 19), SENTINEL)
    view = buf[1:3, 2:21, 3:18, 4:15]  # [2, 19, 15, 11]
    conv_triton(x, weight, out=view, bias=torch.randn(19, generator=g), act=True)
    mask = torch.ones_like(buf, dtype=torch.bool)
    mask[1:3, 2:21, 3:18, 4:15] = False
    assert (buf[mask] == SENTINEL).all() and (view != SENTINEL).all()
    # Polyphase writes: every other row/column of a strided buffer.
    inter = torch.full((2, 19, 2 * 15 - 1 + 2, 2 * 11 - 1 + 2), SENTINEL)
    for ph in [(0, 0), (0, 1), (1, 0), (1, 1)]:
        conv_triton(x[:, :, :17 - ph[0], :13 - ph[1]], weight, out=inter[:, :, 1:-1, 1:-1], out_step=2, out_phase=ph)
    assert (inter[:, :, 0] == SENTINEL).all() and (inter[:, :, -1] == SENTINEL).all()
    assert (inter[:, :, :, 0] == SENTINEL).all() and (inter[:, :, :, -1] == SENTINEL).all()
    assert (inter[:, :, 1:-1, 1:-1] != SENTINEL).all()
    up = torch.full((4, 19, 31, 25), SENTINEL)
    upconv_triton(x[:, :, :16, :13], weight, out=up[1:3, :, 1:30, :23], act=True)
    mask = torch.ones_like(up, dtype=torch.bool)
    mask[1:3, :, 1:30, :23] = False
    assert (up[mask] == SENTINEL).all() and (up[1:3, :, 1:30, :23] != SENTINEL).all()


def test_block_sizes_the_gpu_rejects_are_refused():
    x, weight = torch.randn(1, 4, 8, 8), torch.randn(4, 4, 3, 3)
    for cfg in [BlockConfig(8, 16, 16), BlockConfig(64, 16, 4), BlockConfig(64, 24, 16)]:
        with pytest.raises(ValueError, match="power-of-two blocks >= 16"):
            conv_triton(x, weight, config=cfg)
    out = conv_triton(x, weight, config=BlockConfig(16, 16, 16))
    assert (out - conv_ref(x, weight)).abs().max().item() < 1e-5


def test_bad_shapes_are_refused():
    x = torch.randn(1, 4, 8, 8)
    with pytest.raises(ValueError, match="input channels"):
        conv_triton(x, torch.randn(4, 5, 3, 3))
    with pytest.raises(ValueError, match="smaller than the 7x7 kernel"):
        conv_triton(x[:, :, :5], torch.randn(4, 4, 7, 7))
    with pytest.raises(ValueError, match="coords"):
        conv_triton(x, torch.randn(4, 7, 3, 3), coords=torch.randn(1, 3, 8, 8), coords_offset=2)
    with pytest.raises(ValueError, match=r"wsq has shape \(6, 4\), expected \(4, 6\)"):
        conv_triton(x, torch.randn(6, 4, 3, 3), style=torch.ones_like(x), wsq=torch.rand(6, 4))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_paths(dtype):
    """bf16/fp16 storage, fp32 accumulation: error within a few output ulps of the reference
    rounded to that dtype (the interpreter upcasts before tl.dot, see toolchain.md)."""
    g = torch.Generator().manual_seed(5)
    x, weight = torch.randn(2, 24, 11, 17, generator=g), torch.randn(20, 24, 3, 3, generator=g) / 15
    kw = dict(bias=torch.randn(20, generator=g), noise=torch.randn(2, 1, 9, 15, generator=g), noise_strength=0.5,
              act=True)
    ref = conv_ref(x.to(dtype).double(), weight.to(dtype).double(), **{k: v.to(dtype).double()
                   if isinstance(v, torch.Tensor) else v for k, v in kw.items()})
    out = conv_triton(x.to(dtype), weight.to(dtype), **_to(kw, "cpu", dtype))
    assert out.dtype == dtype
    ulp = torch.finfo(dtype).eps * ref.abs().clamp_min(1.0)
    assert ((out.double() - ref).abs() <= 2 * ulp).all()


def test_impl_selection(monkeypatch):
    x, weight = torch.randn(1, 3, 6, 6), torch.randn(2, 3, 3, 3)
    assert use_triton("auto", x.device)  # interpreter on
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not use_triton("auto", x.device)
    with pytest.raises(RuntimeError, match="impl='triton' cannot run: .*CUDA device"):
        fused_conv(x, weight, impl="triton")
    assert torch.equal(fused_conv(x, weight, impl="auto"), conv_ref(x, weight))
    with pytest.raises(ValueError, match="impl must be one of"):
        fused_conv(x, weight, impl="cuda")


@pytest.mark.slow
def test_custom_ops_trace_and_check():
    g = torch.Generator().manual_seed(6)
    x, w = torch.randn(2, 5, 9, 10, generator=g), torch.randn(6, 5, 3, 3, generator=g)
    nz, b = torch.randn(2, 1, 7, 8, generator=g), torch.randn(6, generator=g)
    torch.library.opcheck(torch.ops.igan.fused_conv, (x, w, None, 0, None, None, nz, 0.5, b, True, None, None))
    torch.library.opcheck(torch.ops.igan.fused_upconv, (x, w, None, None, torch.randn(2, 1, 15, 17), 0.5, b, True, None))

    class Layer(torch.nn.Module):
        def forward(self, x, w, nz, b):
            return torch.ops.igan.fused_conv(x, w, None, 0, None, None, nz, 0.5, b, True, None, None) * 2

    graph = torch.export.export(Layer(), (x, w, nz, b)).graph
    assert any(str(n.target) == "igan.fused_conv.default" for n in graph.nodes)


def test_packed_weight_layout():
    w = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    p = pack_weight(w)
    assert p.shape == (12, 2) and p[(1 * 2 + 0) * 3 + 2, 1] == w[1, 2, 1, 0]


@pytest.mark.slow
def test_triton_runner_renders_what_the_torch_runner_renders():
    from conftest import random_model

    from igan.engine.config import PRESETS
    from igan.engine.latent import LatentField
    from igan.engine.planner import Window, plan
    from igan.engine.renderer import Renderer
    from igan.engine.runner import TorchRunner, TritonRunner

    cfg = PRESETS["tiny"]
    model = random_model(cfg, seed=2)
    field = LatentField(cfg, seed=4, horizon=9)
    p = plan(cfg, Window(-7, -21, 45, 39), tile=32, batch=2)
    ref = Renderer(TorchRunner(model)).render_array(field, p, 2)
    out = Renderer(TritonRunner(model, "cpu")).render_array(field, p, 2)
    assert np.abs(out - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())


def test_triton_backend_without_a_gpu_says_why(monkeypatch, tmp_path, capsys):
    from igan.engine.cli.render import main

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    code = main(["--backend", "triton", "--device", "cpu", "--out", str(tmp_path / "x.png"), "--quiet"])
    assert code != 0 and "need a CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
