"""The `onnx` backend: igan-render through onnxruntime on the graphs of `igan-export --onnx`.

`OnnxRunner` implements igan.engine.runner.Runner (prepare / inputs / run / peak_memory / name /
device / config), so the planner, Renderer, executors and sinks are the engine's own.
prepare() runs the mapping graph once per image; run() feeds a batch of windows of that
image through the structure and texture graphs (the image's z_g and W+ repeated per window).

Providers: CUDA when the GPU build of onnxruntime is installed and a GPU is asked for (or
'auto' and torch sees one), CPU otherwise. The CUDA provider is never assumed to load:
the session's actual providers are checked and a fallback to CPU is reported on stderr.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from igan.engine.config import GeneratorConfig
from igan.engine.errors import BackendError, CheckpointError, RequestError, option
from igan.engine.latent import Field
from igan.engine.provenance import sha256_file
from igan.engine.runner import Batch, gather_inputs

from .onnx_export import FORMAT, FORMAT_VERSION, MANIFEST, graph_names, require

log = logging.getLogger(__name__)
_NP = {"fp32": np.float32, "fp16": np.float16}


class ExportError(CheckpointError):
    """An export directory that cannot be used, with the reason in the message."""


@dataclass
class OnnxModel:
    """A checked export directory: what igan-render needs instead of a Generator."""

    root: Path
    config: GeneratorConfig
    manifest: dict

    def graph(self, name: str, precision: str) -> Path:
        fname = f"{name}.{precision}.onnx"
        if fname not in self.manifest["graphs"]:
            have = sorted({g["precision"] for g in self.manifest["graphs"].values()})
            raise ExportError(f"export {str(self.root)!r} has no {precision} graphs (it has {', '.join(have)})")
        return self.root / fname

    def precisions(self) -> list[str]:
        return sorted({g["precision"] for g in self.manifest["graphs"].values()})


def load_export(root: str | Path, expect_config: GeneratorConfig | None = None) -> OnnxModel:
    """Read and check an export directory: manifest present and of our format version,
    every graph present with its recorded sha256, and every graph's own metadata naming
    the manifest's config (and `expect_config`'s architecture, when given)."""
    onnx = require("onnx", "the onnx backend")

    root = Path(root)
    if not root.is_dir():
        raise ExportError(f"ONNX export {str(root)!r} " + ("is not a directory" if root.exists() else "does not exist")
                          + " (make one with: igan-export --checkpoint CKPT --onnx DIR)")
    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(f"{str(root)!r} is not an igan ONNX export: {MANIFEST} is missing") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"cannot read {str(path)!r}: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("igan_format") != FORMAT:
        raise ExportError(f"{str(path)!r} is not an igan ONNX export manifest")
    if manifest.get("igan_format_version") != FORMAT_VERSION:
        raise ExportError(f"export {str(root)!r} has format version {manifest.get('igan_format_version')!r} "
                          f"(written by igan {manifest.get('igan_version')}); this igan reads version "
                          f"{FORMAT_VERSION}: export the checkpoint again")
    try:
        config = GeneratorConfig.from_json(manifest["igan_config"])
        graphs = manifest["graphs"]
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise ExportError(f"{str(path)!r} has no valid model config: {e}") from e
    if expect_config is not None and expect_config.architecture() != config.architecture():
        raise ExportError(f"export {str(root)!r} holds model config {config.name!r}, which does not match "
                          f"the expected config {expect_config.name!r}")
    for fname, entry in graphs.items():
        file = root / fname
        if not file.is_file():
            raise ExportError(f"export {str(root)!r} is incomplete: {fname} is missing")
        digest = sha256_file(file)
        if digest != entry.get("sha256"):
            raise ExportError(f"{str(file)!r} is corrupt or was replaced: its sha256 {digest[:16]}... does not "
                              f"match the manifest's {str(entry.get('sha256'))[:16]}... (truncated or edited)")
        try:
            meta = {p.key: p.value for p in onnx.load_model(str(file), load_external_data=False).metadata_props}
        except Exception as e:  # onnx raises DecodeError and others; the file matched its checksum
            raise ExportError(f"cannot parse {str(file)!r}: {e}") from e
        if meta.get("igan_config") is None or \
                GeneratorConfig.from_json(meta["igan_config"]).architecture() != config.architecture():
            raise ExportError(f"{str(file)!r} was exported from a different model config than the manifest's "
                              f"{config.name!r}")
    for precision in {g["precision"] for g in graphs.values()}:
        for name in graph_names(config):
            if f"{name}.{precision}.onnx" not in graphs:
                raise ExportError(f"export {str(root)!r} lacks the {name} graph for {precision}")
    return OnnxModel(root, config, manifest)


def _both_builds_installed() -> bool:
    from importlib.metadata import PackageNotFoundError, version

    found = 0
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            version(dist)
            found += 1
        except PackageNotFoundError:
            pass
    return found == 2


def choose_providers(device: str | None, available: list[str]) -> list[str]:
    """Execution providers for `device` ('auto', 'cpu', 'cuda', 'cuda:N') among `available`."""
    device = device or "auto"
    if str(device) == "cpu":
        return ["CPUExecutionProvider"]
    if not (str(device) == "auto" or str(device).startswith("cuda")):
        raise RequestError(f"unsupported device {device!r} for the onnx backend ({option('device')}: cpu, cuda, "
                           "cuda:N or auto)")
    if "CUDAExecutionProvider" in available and torch.cuda.is_available():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if str(device) != "auto":
        log.warning(f"the onnx backend runs on CPU: device {device!r} needs the GPU build of onnxruntime "
                    f"(pip uninstall -y onnxruntime && pip install 'igan[gpu]') and a CUDA GPU; "
                    f"available providers: {', '.join(available)}")
    return ["CPUExecutionProvider"]


@dataclass
class OnnxPrepared:
    z_global: np.ndarray  # [1, D]
    styles: np.ndarray  # [1, n_latent, D]


class OnnxRunner:
    """Runs an OnnxModel (load_export) with onnxruntime; see the module docstring."""

    name = "onnx"

    def __init__(self, model: OnnxModel, device="auto", precision: str = "fp32"):
        ort = require("onnxruntime", "the onnx backend")

        if not isinstance(model, OnnxModel):
            raise CheckpointError(f"the onnx backend renders an ONNX export: pass {option('model')} DIR "
                                  "(made by igan-export --checkpoint CKPT --onnx DIR)")
        if precision not in _NP:
            raise RequestError(f"the onnx backend has fp32 and fp16 graphs, not {option('precision')} {precision!r}")
        if _both_builds_installed():
            log.warning("both onnxruntime and onnxruntime-gpu are installed and overwrite each other; "
                        "keep one (pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu)")
        self.model, self.config, self.precision = model, model.config, precision
        self.np_dtype = _NP[precision]
        self.device = torch.device("cpu")  # where inputs are made and outputs land
        wanted = choose_providers(device, ort.get_available_providers())
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # honours --threads and worker shares
        options.log_severity_level = 3
        index = torch.device(device).index if str(device).startswith("cuda") else None
        providers = [(p, {"device_id": index or 0}) if p == "CUDAExecutionProvider" else p for p in wanted]
        if precision == "fp16" and providers == ["CPUExecutionProvider"]:
            log.warning("fp16 graphs on onnxruntime's CPU provider are slow and less exact; "
                        "fp32 is the CPU precision")
        self.sessions = {}
        for name in graph_names(self.config):
            try:
                self.sessions[name] = ort.InferenceSession(str(model.graph(name, precision)), options,
                                                           providers=providers)
            except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
                raise ExportError(f"onnxruntime cannot load {str(model.graph(name, precision))!r}: {e}") from e
        self.providers = self.sessions["texture"].get_providers()
        if wanted[0] == "CUDAExecutionProvider" and self.providers[0] != "CUDAExecutionProvider":
            log.warning("the CUDA provider did not load (missing CUDA/cuDNN libraries?); running on CPU")

    def prepare(self, field: Field, trunc: float = 1.0) -> OnnxPrepared:
        cfg = self.config
        if trunc != 1.0:
            raise BackendError(f"the onnx backend renders without truncation ({option('trunc')} 1); "
                               f"use {option('backend')} torch or triton for {option('trunc')} {trunc}")
        if field.fused:
            raise RequestError(f"the onnx backend renders one style per image: style fusion ({option('styles')}) needs "
                               f"{option('backend')} torch or triton")
        z = field.global_latent().reshape(1, -1).numpy().astype(self.np_dtype)
        if z.shape[1] != cfg.global_latent_dim:
            raise RequestError(f"z_global has {z.shape[1]} values, the model expects {cfg.global_latent_dim}")
        styles = field.styles()
        if styles is None:
            w = self.sessions["mapping"].run(None, {"z_global": z})[0]
            slots = np.repeat(w, cfg.n_latent, 0)
        else:
            slots = styles.reshape(-1, cfg.global_latent_dim).numpy().astype(self.np_dtype)
            if slots.shape[0] == 1:
                slots = np.repeat(slots, cfg.n_latent, 0)
            if slots.shape[0] != cfg.n_latent:
                raise RequestError(f"styles must be [D] or [{cfg.n_latent}, D], got {tuple(styles.shape)}")
        return OnnxPrepared(z, np.ascontiguousarray(slots[None]))

    def inputs(self, field: Field, windows: list[tuple[int, int]], n_h: int, n_w: int) -> Batch:
        return gather_inputs(field, windows, n_h, n_w, self.device)

    def run(self, prepared: OnnxPrepared, batch: Batch) -> torch.Tensor:
        """float32 RGB [N, 3, H, W] on the host."""
        n = batch.local_latent.shape[0]
        cast = lambda t: t.numpy().astype(self.np_dtype, copy=False)  # noqa: E731
        x = cast(batch.local_latent)
        if self.config.use_ss:
            x = self.sessions["structure"].run(None, {
                "z_global": np.repeat(prepared.z_global, n, 0), "z_local": x, "coords": cast(batch.coords)})[0]
        feed = {"styles": np.repeat(prepared.styles, n, 0), "features": x}
        feed.update({f"noise_{i}": cast(t) for i, t in enumerate(batch.noises)})
        rgb = self.sessions["texture"].run(None, feed)[0]
        return torch.from_numpy(rgb).float()

    def peak_memory(self) -> int | None:
        return None
