"""`igan-export --onnx DIR`: the generator as three ONNX graphs per precision, plus a manifest.

DIR holds mapping.<p>.onnx, structure.<p>.onnx (models with an SS) and texture.<p>.onnx for
each precision p in (fp32, fp16), and manifest.json: export format version, igan version,
model config, source checkpoint hash and the sha256 of every graph file. Each graph also
carries the same facts in its ONNX metadata_props. Interfaces: see igan.export.graphs.
The directory is written under a temporary name and renamed into place when complete.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import torch

from igan.engine.errors import BackendError, RequestError, option
from igan.engine.latent import LatentField
from igan.engine.model import Generator
from igan.engine.provenance import igan_version, sha256_file

from .graphs import MappingGraph, StructureGraph, TextureGraph

FORMAT = "igan-onnx"
FORMAT_VERSION = "1"
MANIFEST = "manifest.json"
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}


# onnx, onnxscript and onnxruntime come with igan's "onnx" extra ("gpu": the GPU build of
# onnxruntime), not with the core install: imported when used, through require().
ONNX_EXTRA = 'pip install "igan[onnx]" (or "igan[gpu]" for the GPU build of onnxruntime)'


def require(module: str, needed_by: str):
    """Import `module` of the onnx extra; BackendError naming the extra when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise BackendError(f"{needed_by} needs {module}, which is not installed ({e}): install igan's onnx extra: "
                           f"{ONNX_EXTRA}") from e


def graph_names(config) -> list[str]:
    return ["mapping"] + (["structure"] if config.use_ss else []) + ["texture"]


def _sample_inputs(model: Generator, dtype) -> dict[str, tuple]:
    """name -> (module, args, input names, dynamic_shapes) at a batch of 2 (a batch of 1
    would be specialised away by the exporter)."""
    cfg = model.config
    b, dyn = 2, torch.export.Dim.AUTO
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    field = LatentField(cfg, 0)
    n = 2 * cfg.ss_halo + 9
    z, coords, noises = field.window(0, 0, n, n)
    zg = field.global_latent().expand(b, -1).contiguous()
    rep = lambda t: t[None].expand(b, *t.shape).contiguous().to(dtype)  # noqa: E731
    out = {"mapping": (MappingGraph(model), (zg.to(dtype),), ["z_global"], ({0: batch},), ["w"])}
    feats = rep(z)
    if cfg.use_ss:
        ss = StructureGraph(model)
        out["structure"] = (ss, (zg.to(dtype), rep(z), rep(coords)), ["z_global", "z_local", "coords"],
                            ({0: batch}, {0: batch, 2: dyn, 3: dyn}, {0: batch, 2: dyn, 3: dyn}), ["features"])
        with torch.no_grad():
            feats = ss.to(dtype)(zg.to(dtype), rep(z), rep(coords))
    styles = torch.zeros(b, cfg.n_latent, cfg.global_latent_dim, dtype=dtype)
    noise_names = [f"noise_{i}" for i in range(cfg.num_convs)]
    out["texture"] = (TextureGraph(model), (styles, feats, [rep(t) for t in noises]),
                      ["styles", "features", *noise_names],
                      ({0: batch}, {0: batch, 2: dyn, 3: dyn}, [{0: batch, 2: dyn, 3: dyn} for _ in noises]),
                      ["rgb"])
    return out


@contextlib.contextmanager
def _quiet():
    """Silence the dynamo exporter's progress lines, warnings and log records."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._export", "torch.export", "torch._dynamo",
                                               "torch.fx.experimental.symbolic_shapes", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_graph(module, args, input_names, dynamic_shapes, output_names, metadata: dict[str, str]):
    """One graph -> a checked onnx.ModelProto with `metadata` in its metadata_props."""
    onnx = require("onnx", "igan-export --onnx")
    require("onnxscript", "igan-export --onnx")  # torch.onnx's dynamo exporter

    module = module.eval().requires_grad_(False)
    with _quiet():
        program = torch.onnx.export(module, args, dynamo=True, external_data=False, verbose=False,
                                    input_names=input_names, output_names=output_names,
                                    dynamic_shapes=dynamic_shapes)
    proto = program.model_proto
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_onnx(model: Generator, out_dir: str | os.PathLike, source_hash: str,
                precisions: tuple[str, ...] = ("fp32", "fp16"), progress=None) -> Path:
    """Write the export directory `out_dir` (which must not exist) atomically."""
    onnx = require("onnx", "igan-export --onnx")
    require("onnxscript", "igan-export --onnx")  # before anything is written

    out = Path(out_dir)
    if out.exists():
        raise FileExistsError(f"{str(out)!r} already exists: choose a new directory for the export")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"cannot write {str(out)!r}: directory {str(out.parent)!r} does not exist")
    for p in precisions:
        if p not in PRECISIONS:
            raise RequestError(f"unknown precision {p!r} in {option('precisions')}; choose from "
                               f"{', '.join(PRECISIONS)}")
    model = model.cpu().float().eval().requires_grad_(False)
    cfg = model.config
    common = {"igan_format": FORMAT, "igan_format_version": FORMAT_VERSION, "igan_version": igan_version(),
              "igan_config": cfg.to_json(), "source_sha256": source_hash}
    tmp = out.with_name(f".{out.name}.igan-tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    files = {}
    try:
        for precision in precisions:
            dtype = PRECISIONS[precision]
            for name, (module, args, inputs, dyn, outputs) in _sample_inputs(model, dtype).items():
                meta = common | {"igan_graph": name, "igan_precision": precision}
                proto = export_graph(module.to(dtype), args, inputs, dyn, outputs, meta)
                fname = f"{name}.{precision}.onnx"
                onnx.save_model(proto, str(tmp / fname))
                files[fname] = {"graph": name, "precision": precision, "sha256": sha256_file(tmp / fname)}
                if progress is not None:
                    progress(fname)
        manifest = common | {"graphs": files, "interfaces": "see igan.export.graphs"}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
