"""What a render is, by content: the model's identity and the request a resume must match.

`request_identity` is the dict every render records: in its work directory (a resume is
refused unless it matches), in its output's metadata (provenance.describe, less the tiling)
and in igan-serve's tile cache. The model is named by content (the sha256 of its file), never
by path, so a moved checkpoint still resumes and a changed one never does.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

from .embedded import DEFAULT_WEIGHTS, builtin_path
from .provenance import CPU_PATH_RECORDED, LATENT_RNG_VERSIONS, sha256_file
from .sources import RANDOM_WEIGHTS_SEED


def model_identity(checkpoint: str | None, config: str | None = None, random_weights: bool = False) -> str:
    """The model by content: the sha256 of its file (an ONNX export: of its manifest),
    "embedded:" + the file's for the models shipped with igan (the default or
    "builtin:NAME"), or "random:CONFIG:SEED" for --random-weights."""
    if random_weights:
        return f"random:{config}:{RANDOM_WEIGHTS_SEED}"
    if checkpoint is None:
        return "embedded:" + _digest(DEFAULT_WEIGHTS)
    builtin = builtin_path(checkpoint)
    if builtin is not None:  # the shipped models by name: "embedded:" as when they were the default
        return "embedded:" + _digest(builtin)
    return _digest(Path(checkpoint) / "manifest.json" if os.path.isdir(checkpoint) else checkpoint)


def model_source(request) -> str | None:
    """The file a request's model comes from: its ONNX export or its checkpoint (None: the
    embedded model)."""
    return request.model if request.backend == "onnx" else request.checkpoint


def request_identity(request, plan, model, spec=None) -> dict:
    """What a render of `request`, cut as `plan`, with `model` and canvas `spec` (None: the
    plain canvas) is: the model by content, its config, seed, window, tiling, precision,
    backend, generator, quantizer, truncation, the torch path, and the canvas's identity."""
    extra = {} if spec is None else {"field": spec.identity()}
    window = plan.window
    return extra | {
        "model": model_identity(model_source(request), request.config, request.random_weights),
        "config": model.config.to_json(), "seed": request.seed, "window": dataclasses.asdict(window),
        "width": window.width, "height": window.height, "tile_height": plan.tile_height,
        "tile_width": plan.tile_width, "precision": request.precision, "backend": request.backend,
        "latent_rng": LATENT_RNG_VERSIONS[request.latent_rng], "quantize": request.quantize,
        "trunc": request.trunc} | _path(request)


def _path(request) -> dict:
    """Which torch path computes the pixels (provenance.CPU_PATH_RECORDED): "exact" (the
    default since 0.5), "bit-exact" (the reference path, igan 0.2's only one) or "fast" (the
    default of 0.3-0.4), the words the versions that made them wrote, so their files resume;
    the other backends have one path each."""
    return {"path": CPU_PATH_RECORDED[request.cpu_path]} if request.backend == "torch" else {}


def _digest(path) -> str:
    """sha256 of a model file, computed once per file version (a checkpoint can be GBs)."""
    st = os.stat(path)
    return _cached_digest(os.path.realpath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _cached_digest(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)
