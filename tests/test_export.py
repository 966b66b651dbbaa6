"""igan-export: ONNX graphs against the torch model, the onnx backend against the torch
backend, packed weights round trip, and refusal of missing/corrupt/mismatched exports."""
import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import random_model, small_config
from PIL import Image

from igan.engine import checkpoint, planner, sources, walk
from igan.engine.config import PRESETS
from igan.engine.latent import LatentField
from igan.engine.model import FoldedOps
from igan.engine.cli.render import main as render_main
from igan.engine.renderer import Renderer
from igan.engine.runner import TorchRunner
from igan.engine.provenance import sha256_file
from igan.export.cli import main as export_main
from igan.export.onnx_export import export_onnx
from igan.export.onnx_runner import ExportError, OnnxRunner, choose_providers, load_export
from igan.export.packed import PackedError, load_packed, read_packed

TOL = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A random 'tiny' model saved as .safetensors, exported by the CLI (fp32 + fp16 graphs
    and packed weights)."""
    root = tmp_path_factory.mktemp("export")
    model = random_model(PRESETS["tiny"], seed=3)
    ckpt = checkpoint.save(model, root / "tiny.safetensors")
    code = export_main(["--checkpoint", str(ckpt), "--onnx", str(root / "onnx"), "--packed", str(root / "tiny.packed"),
                        "--quiet"])
    assert code == 0
    return model, ckpt, root / "onnx", root / "tiny.packed"


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _inputs(cfg, gen, batch, n_h, n_w):
    """Random z_g, W+ styles and a latent window (with its coords and noises) per sample."""
    zg = torch.randn(batch, cfg.global_latent_dim, generator=gen)
    styles = torch.randn(batch, cfg.n_latent, cfg.global_latent_dim, generator=gen)
    wins = [LatentField(cfg, int(torch.randint(0, 1000, (1,), generator=gen))).window(3 * k, -k, n_h, n_w)
            for k in range(batch)]
    z = torch.stack([w[0] for w in wins])
    coords = None if wins[0][1] is None else torch.stack([w[1] for w in wins])
    noises = [torch.stack([w[2][i] for w in wins]) for i in range(cfg.num_convs)]
    return zg, styles, z, coords, noises


def _check_graphs(model, onnx_dir, batch, n_h, n_w, seed):
    cfg = model.config
    zg, styles, z, coords, noises = _inputs(cfg, torch.Generator().manual_seed(seed), batch, n_h, n_w)
    with torch.no_grad():
        w = _session(onnx_dir / "mapping.fp32.onnx").run(None, {"z_global": zg.numpy()})[0]
        assert np.abs(w - model.mapping(zg).numpy()).max() < TOL
        feats = z
        if cfg.use_ss:
            out = _session(onnx_dir / "structure.fp32.onnx").run(
                None, {"z_global": zg.numpy(), "z_local": z.numpy(), "coords": coords.numpy()})[0]
            ref = torch.cat([walk.structure(cfg, FoldedOps(model, model.prepare(zg[k])), z[k:k + 1], coords[k:k + 1])
                             for k in range(batch)])
            assert out.shape == tuple(ref.shape)
            assert np.abs(out - ref.numpy()).max() < TOL
            feats = ref
        feed = {"styles": styles.numpy(), "features": feats.numpy()}
        feed.update({f"noise_{i}": n.numpy() for i, n in enumerate(noises)})
        rgb = _session(onnx_dir / "texture.fp32.onnx").run(None, feed)[0]
        ref = torch.cat([walk.texture(cfg, FoldedOps(model, model.prepare(zg[k], styles[k])), feats[k:k + 1],
                                      [n[k:k + 1] for n in noises]) for k in range(batch)])
    assert rgb.shape == tuple(ref.shape)
    assert np.abs(rgb - ref.numpy()).max() < TOL


@pytest.mark.parametrize("batch,n_h,n_w", [(1, 9, 9), (3, 10, 13), (2, 15, 8)])
@pytest.mark.slow
def test_graphs_match_the_torch_model_at_any_batch_and_size(exported, batch, n_h, n_w):
    model, _, onnx_dir, _ = exported
    halo = 2 * model.config.ss_halo
    _check_graphs(model, onnx_dir, batch, n_h + halo, n_w + halo, seed=batch * 100 + n_h)


@pytest.mark.slow
def test_graphs_without_structure_synthesizer(tmp_path, rng):
    model = random_model(small_config(rng, use_ss=False, patch_size=29, channels=(7, 5)), seed=1)
    export_onnx(model, tmp_path / "onnx", "test", precisions=("fp32",))
    assert sorted(p.name for p in (tmp_path / "onnx").glob("*.onnx")) == ["mapping.fp32.onnx", "texture.fp32.onnx"]
    for batch, n_h, n_w in [(2, 7, 9), (1, 12, 8)]:
        _check_graphs(model, tmp_path / "onnx", batch, n_h, n_w, seed=n_h)


def test_graphs_are_checked_and_carry_their_metadata(exported):
    model, ckpt, onnx_dir, _ = exported
    names = sorted(p.name for p in onnx_dir.glob("*.onnx"))
    assert names == sorted(f"{g}.{p}.onnx" for g in ("mapping", "structure", "texture") for p in ("fp32", "fp16"))
    for name in names:
        proto = onnx.load_model(str(onnx_dir / name))
        onnx.checker.check_model(proto, full_check=True)
        meta = {p.key: p.value for p in proto.metadata_props}
        assert json.loads(meta["igan_config"]) == json.loads(model.config.to_json())
        assert meta["source_sha256"] == sha256_file(ckpt)
        assert meta["igan_version"] and meta["igan_precision"] == name.split(".")[1]
        batch = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim][0]
        assert batch, f"{name}: the batch dimension is static"
        assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer)


def test_fp16_graphs_track_fp32(exported):
    """fp16 graphs: half inputs and outputs, close to the fp32 model at fp16 accuracy."""
    model, _, onnx_dir, _ = exported
    cfg = model.config
    try:
        OnnxRunner(load_export(onnx_dir), "cpu", "fp16")
    except ExportError as e:
        pytest.skip(f"this onnxruntime build cannot run fp16 graphs on CPU: {e}")
    field = LatentField(cfg, 4)
    plan = planner.plan(cfg, planner.Window(0, -20, 40, 40), tile=32)
    ref = Renderer(TorchRunner(model, "cpu")).render_array(field, plan)
    half = Renderer(OnnxRunner(load_export(onnx_dir), "cpu", "fp16")).render_array(field, plan)
    assert np.abs(half - ref).max() < 0.05 * max(1.0, np.abs(ref).max())


def test_onnx_backend_renders_what_the_torch_backend_renders(exported, tmp_path):
    model, ckpt, onnx_dir, _ = exported
    cfg = model.config
    field = LatentField(cfg, 7)
    plan = planner.plan(cfg, planner.Window(-13, -30, 70, 45), tile=32, batch=2)
    ref = Renderer(TorchRunner(model, "cpu")).render_array(field, plan, batch=2)
    got = Renderer(OnnxRunner(load_export(onnx_dir), "cpu")).render_array(field, plan, batch=2)
    assert np.abs(got - ref).max() < TOL

    common = ["--width", 70, "--height", 45, "--x0", -13, "--seed", 7, "--tile", 32, "--batch", 2,
              "--quiet", "--device", "cpu"]
    outs = {}
    for backend, src in [("torch", ["--checkpoint", ckpt]), ("onnx", ["--model", onnx_dir])]:
        out = tmp_path / f"{backend}.png"
        assert render_main([*map(str, common + src), "--backend", backend, "--out", str(out)]) == 0
        outs[backend] = np.asarray(Image.open(out)).astype(int)
    diff = np.abs(outs["onnx"] - outs["torch"])
    assert diff.max() <= 1 and (diff > 0).any(axis=2).sum() <= 5


@pytest.mark.slow
def test_onnx_backend_with_worker_processes(exported, tmp_path):
    _, _, onnx_dir, _ = exported
    args = ["--width", 40, "--height", 33, "--seed", 2, "--tile", 16, "--quiet", "--device", "cpu",
            "--backend", "onnx", "--model", onnx_dir]
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    assert render_main([*map(str, args), "--out", str(one)]) == 0
    assert render_main([*map(str, args), "--workers", "2", "--out", str(two)]) == 0
    assert np.array_equal(np.asarray(Image.open(one)), np.asarray(Image.open(two)))


def test_onnx_backend_refuses_style_fusion_and_writes_nothing(exported, tmp_path, capsys):
    _, _, onnx_dir, _ = exported
    out = tmp_path / "fused.png"
    args = ["--width", 40, "--height", 33, "--tile", 16, "--quiet", "--device", "cpu", "--backend", "onnx",
            "--model", onnx_dir, "--styles", "1,2", "--out", out]
    assert render_main([*map(str, args)]) != 0
    assert "style fusion" in capsys.readouterr().err
    assert not out.exists()


def test_packed_file_round_trip(exported, tmp_path):
    """Loaded without the checkpoint, the packed weights render the same bytes; the tensors
    are the kernels' layouts of the scaled weights."""
    from igan.kernels.conv import pack_weight

    model, ckpt, _, packed = exported
    meta, tensors = read_packed(packed)
    conv = model.texture_synthesizer.convs[1].conv
    key = "texture_synthesizer.convs.1.conv"
    assert torch.equal(tensors[f"{key}.packed"], pack_weight(conv.scale * conv.weight[0]))
    assert len([k for k in tensors if k.startswith("texture_synthesizer.convs.0.conv.phases.")]) == 4
    lin = model.texture_synthesizer.mapping[1]
    assert torch.equal(tensors["texture_synthesizer.mapping.1.weight"], lin.weight * lin.scale)
    assert meta["source_sha256"] == sha256_file(ckpt)

    loaded = sources.load(packed)
    assert loaded.config == model.config
    # --no-metadata: the files would differ in what they record of their model (digest, path)
    common = ["--width", 50, "--height", 37, "--seed", 11, "--tile", 32, "--quiet", "--device", "cpu", "--no-metadata"]
    a, b = tmp_path / "src.png", tmp_path / "packed.png"
    assert render_main([*map(str, common), "--checkpoint", str(ckpt), "--out", str(a)]) == 0
    assert render_main([*map(str, common), "--checkpoint", str(packed), "--out", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()


def test_packed_layout_is_what_the_triton_kernel_reads(exported):
    """The fused kernel's spatial-style path on the packed static weight and wsq equals the
    model's per-image folded conv (style constant over the image)."""
    from igan.kernels.conv import conv_triton

    model, _, _, packed = exported
    _, tensors = read_packed(packed)
    layer = model.texture_synthesizer.convs[1]
    key = "texture_synthesizer.convs.1.conv"
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(1, model.config.global_latent_dim, generator=gen)
    x = torch.randn(2, layer.conv.weight.shape[2], 9, 11, generator=gen)
    s = torch.nn.functional.linear(w, tensors[f"{key}.modulation.weight"], tensors[f"{key}.modulation.bias"])
    style = s[:, :, None, None].expand(2, -1, 9, 11).contiguous()
    shape = layer.conv.weight.shape[1:]
    got = conv_triton(x, torch.empty(shape), style=style, wsq=tensors[f"{key}.wsq"], packed=tensors[f"{key}.packed"])
    ref = torch.nn.functional.conv2d(x, layer.conv.fold(w)[0])
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-4)


def _copy(onnx_dir, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(onnx_dir, dst)
    return dst


def test_missing_truncated_and_mismatched_exports_are_refused(exported, tmp_path, rng):
    model, _, onnx_dir, _ = exported
    with pytest.raises(ExportError, match="does not exist"):
        load_export(tmp_path / "nowhere")
    d = _copy(onnx_dir, tmp_path)
    (d / "manifest.json").unlink()
    with pytest.raises(ExportError, match="manifest.json is missing"):
        load_export(d)
    shutil.rmtree(d)

    d = _copy(onnx_dir, tmp_path)
    data = (d / "texture.fp32.onnx").read_bytes()
    (d / "texture.fp32.onnx").write_bytes(data[:len(data) // 2])
    with pytest.raises(ExportError, match="texture.fp32.onnx.*corrupt"):
        load_export(d)
    (d / "texture.fp32.onnx").unlink()
    with pytest.raises(ExportError, match="texture.fp32.onnx is missing"):
        load_export(d)
    shutil.rmtree(d)

    d = _copy(onnx_dir, tmp_path)
    manifest = json.loads((d / "manifest.json").read_text())
    (d / "manifest.json").write_text(json.dumps(manifest | {"igan_format_version": "0"}))
    with pytest.raises(ExportError, match="format version '0'"):
        load_export(d)
    # a graph of another model, with a manifest entry that matches its bytes: wrong config
    other = random_model(small_config(rng, use_ss=False, patch_size=29, channels=(7, 5)))
    proto = onnx.load_model(str(onnx_dir / "mapping.fp32.onnx"))
    meta = {p.key: p for p in proto.metadata_props}
    meta["igan_config"].value = other.config.to_json()
    onnx.save_model(proto, str(d / "mapping.fp32.onnx"))
    manifest["graphs"]["mapping.fp32.onnx"]["sha256"] = sha256_file(d / "mapping.fp32.onnx")
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="different model config"):
        load_export(d)
    with pytest.raises(ExportError, match="does not match the expected config 'small'"):
        load_export(onnx_dir, PRESETS["small"])


def test_cli_errors(exported, tmp_path, capsys):
    model, ckpt, onnx_dir, packed = exported
    out = str(tmp_path / "x.png")
    assert render_main(["--backend", "onnx", "--model", str(tmp_path / "none"), "--out", out, "--quiet"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert render_main(["--backend", "onnx", "--model", str(onnx_dir), "--config", "small", "--out", out]) == 1
    assert "does not match the expected config" in capsys.readouterr().err
    assert render_main(["--backend", "onnx", "--model", str(onnx_dir), "--precision", "bf16", "--out", out]) == 1
    assert "fp32 and fp16" in capsys.readouterr().err
    assert render_main(["--backend", "torch", "--checkpoint", str(onnx_dir), "--out", out]) == 1
    assert "--backend onnx" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        render_main(["--backend", "onnx", "--out", out])
    assert "--model DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # never overwrites, and writes nothing else either
        export_main(["--checkpoint", str(ckpt), "--onnx", str(onnx_dir), "--packed", str(tmp_path / "p.packed")])
    assert "already exists" in capsys.readouterr().err and not (tmp_path / "p.packed").exists()
    assert not (tmp_path / "x.png").exists()


def test_corrupt_packed_files_are_refused(exported, tmp_path):
    _, _, _, packed = exported
    data = bytearray(packed.read_bytes())
    bad = tmp_path / "trunc.packed"
    bad.write_bytes(data[:len(data) - 100])
    with pytest.raises(PackedError, match="truncated"):
        load_packed(bad)
    data[-5] ^= 0xFF  # a byte of the last tensor
    bad = tmp_path / "flip.packed"
    bad.write_bytes(bytes(data))
    with pytest.raises(PackedError, match="corrupt: payload sha256"):
        load_packed(bad)
    with pytest.raises(PackedError, match="not the requested 'small'"):
        load_packed(packed, "small")
    with pytest.raises(PackedError, match="does not exist"):
        load_packed(tmp_path / "none.packed")
    code = render_main(["--checkpoint", str(bad), "--out", str(tmp_path / "o.png"), "--quiet"])
    assert code == 1 and not (tmp_path / "o.png").exists()


def test_providers_never_assume_cuda():
    assert choose_providers("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers("cuda", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers("auto", ["AzureExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    want = ["CUDAExecutionProvider", "CPUExecutionProvider"] if torch.cuda.is_available() else ["CPUExecutionProvider"]
    assert choose_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == want
    with pytest.raises(ValueError, match="unsupported device"):
        choose_providers("tpu", ["CPUExecutionProvider"])
