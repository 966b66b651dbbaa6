"""What a render runs: the model, from the source a user names (nothing, an igan
.safetensors model, an official checkpoint, packed weights, an ONNX export folder), and the
runner of each backend (torch, triton, onnx).

It sits above igan.engine.checkpoint (the file formats), igan.engine.embedded (the default
model) and igan.engine.runner (the torch and triton runners), and is the one place in the
engine that reaches into igan.export for what that package writes and runs.
"""
from __future__ import annotations

import os
from pathlib import Path

from igan.export.onnx_runner import MANIFEST, OnnxRunner, load_export
from igan.export.packed import load_packed

from . import cpu
from .checkpoint import CheckpointError, init_deterministic, load_igan, load_official
from .config import from_name
from .embedded import DEFAULT_WEIGHTS, builtin_path, embedded_model
from .errors import RequestError, option
from .model import Generator
from .provenance import DEFAULT_CPU_PATH
from .runner import TorchRunner, TritonRunner

RUNNERS = {"torch": TorchRunner, "triton": TritonRunner, "onnx": OnnxRunner}
RANDOM_WEIGHTS_SEED = 0  # the weights of --random-weights (checkpoint.init_deterministic)


def load(path: str | os.PathLike | None = None, config: str | None = None, *,
         random_weights: bool = False) -> Generator:
    """Any checkpoint igan reads: None -> the embedded default model; "builtin:NAME" -> a model
    shipped with igan (igan.engine.embedded.BUILTIN); `.safetensors` -> ours;
    `.packed` -> packed weights (igan.export.packed); a directory -> an ONNX export (an
    igan.export.onnx_runner.OnnxModel, for the onnx backend only); anything else -> an
    official torch checkpoint (`config` names its preset if needed). `random_weights` with
    `config` and no path: that preset with fixed random weights (the same on every machine;
    for benchmarks, not a trained model)."""
    if random_weights:
        if path is not None or config is None:
            raise CheckpointError(f"{option('random_weights')} builds a preset ({option('config')}) without a "
                                  f"checkpoint")
        return init_deterministic(Generator(from_name(config)), RANDOM_WEIGHTS_SEED).eval().requires_grad_(False)
    if path is None:
        if config is not None:
            raise CheckpointError(f"{option('config')} {config!r} is the preset of an official checkpoint: give "
                                  f"{option('checkpoint')} too (or {option('random_weights')} for that config with "
                                  f"random weights); the embedded model carries its own config")
        return embedded_model()
    try:
        builtin = builtin_path(path)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    if builtin is not None:  # a model shipped with igan, by name
        if config is not None:
            raise CheckpointError(f"{option('config')} is for official checkpoints; {path} carries its config")
        return embedded_model() if builtin == DEFAULT_WEIGHTS else load_igan(builtin).requires_grad_(False)
    path = Path(path)
    if path.is_dir():  # an ONNX export (igan-export --onnx DIR), rendered by the onnx backend
        if not (path / MANIFEST).is_file():  # worded for --checkpoint and --model alike: either can bring it here
            raise CheckpointError(
                f"{str(path)!r} is a directory, not a checkpoint: {option('checkpoint')} takes an official "
                f"InfinityGAN checkpoint file (best_fid.pth.tar), an igan .safetensors model or builtin:NAME (a model "
                f"igan ships); a directory is only an ONNX export (made by igan-export --onnx DIR; this one has no "
                f"{MANIFEST}), rendered with {option('backend')} onnx {option('model')} DIR")
        return load_export(path, None if config is None else from_name(config))
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist" if not path.exists()
                              else f"checkpoint {str(path)!r} is not a file")
    if path.suffix == ".packed":  # weights packed for the fused kernels (igan-export --packed FILE)
        return load_packed(path, config)
    if path.suffix == ".safetensors":
        if config is not None:
            raise CheckpointError(f"{option('config')} is for official checkpoints; igan models carry their config")
        return load_igan(path)
    return load_official(path, config)


def make_runner(backend: str, model, device="auto", precision: str = "fp32", cpu_path: str = DEFAULT_CPU_PATH):
    """The runner of `backend` for `model` on `device`. `cpu_path`: the torch backend's path on
    a CPU (provenance.CPU_PATHS: "exact", the default, "reference" or "fast-0.4"; see
    runner.TorchRunner); the other backends have one path each, so another is refused. A
    reduced precision lifts igan's own AVX2 cap of oneDNN (cpu.unpin_onednn_for: its bf16
    kernels need the CPU's own ISA), which takes effect before the process's first oneDNN
    convolution, as every entry point builds its runner before it renders."""
    cpu.unpin_onednn_for(precision)
    if backend not in RUNNERS:
        raise RequestError(f"unknown {option('backend')} {backend!r}; choose from {', '.join(RUNNERS)}")
    if backend == "torch":
        return TorchRunner(model, device, precision, cpu_path)
    if cpu_path != DEFAULT_CPU_PATH:
        raise RequestError(f"{option('cpu_path')} {cpu_path} is a path of the torch backend; the {backend} backend "
                           f"has one path of its own (drop {option('cpu_path')} or use {option('backend')} torch)")
    return RUNNERS[backend](model, device, precision)
