"""`igan-export --packed FILE`: the weights in the layouts the fused Triton kernels read.

One safetensors file (never a pickle). Every tensor is float32 with the equalized-lr scales
folded in; for each modulated conv `P` (official module names, e.g.
`texture_synthesizer.convs.0.conv`):
  P.packed            [KH*KW*Cin, Cout]  kernels.conv.pack_weight(scale * weight), K-major
  P.wsq               [Cin, Cout]        sum over taps of (scale * weight)^2 (the kernels'
                                         spatial-style demodulation input)
  P.phases.{0..3}     packed polyphase sub-kernels (kernels.upsample.phase_weights), for
                      the upsampling convs
  P.modulation.weight [Cin, D], P.modulation.bias [Cin]  (scale, lr_mul folded)
the mapping MLP as texture_synthesizer.mapping.{i}.weight/bias (folded), and the biases and
noise strengths under their state-dict names. The metadata holds the format name and
version, the model config, the igan version, the source checkpoint hash and the sha256 of
the tensor payload (names, dtypes, shapes and bytes in name order), checked on load.

`load_packed` rebuilds a Generator whose equalized-lr scales are 1 and whose weights are
the folded ones: the engine then computes exactly the same products as with the source
checkpoint (scale * weight is the same float32 product), so images are bit-identical.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from igan.engine.checkpoint import check_state_dict, write_safetensors
from igan.engine.config import GeneratorConfig, from_name
from igan.engine.errors import CheckpointError
from igan.engine.model import EqualLinear, Generator, ModulatedConv2d
from igan.engine.provenance import igan_version

FORMAT = "igan-packed"
FORMAT_VERSION = "1"


class PackedError(CheckpointError):
    """A packed weights file that cannot be used, with the reason in the message."""


def payload_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _unpack(packed: torch.Tensor, cout: int, cin: int, k: int) -> torch.Tensor:
    """[k*k*Cin, Cout] -> [1, Cout, Cin, k, k] (inverse of pack_weight, a permutation)."""
    return packed.reshape(k, k, cin, cout).permute(3, 2, 0, 1)[None].contiguous()


def pack_model(model: Generator) -> dict[str, torch.Tensor]:
    """The packed tensors of a Generator (see the module docstring)."""
    from igan.kernels.conv import pack_weight  # here: igan.kernels loads triton (0.2 s) for what only packing needs
    from igan.kernels.upsample import phase_weights
    out = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, ModulatedConv2d):
                w = (module.scale * module.weight)[0]  # the same product fold() computes
                out[f"{name}.packed"] = pack_weight(w)
                out[f"{name}.wsq"] = w.pow(2).sum([2, 3]).t().contiguous()
                if module.upsample:
                    for j, sub in enumerate(phase_weights(w)):
                        out[f"{name}.phases.{j}"] = pack_weight(sub.contiguous())
            elif isinstance(module, EqualLinear):
                out[f"{name}.weight"] = (module.weight * module.scale).contiguous()
                out[f"{name}.bias"] = (module.bias * module.lr_mul).contiguous()
        for key, value in model.state_dict().items():
            if key.endswith("noise.weight") or key.endswith("activate.bias") or \
                    (".to_rgbs." in key and key.endswith(".bias") and ".conv." not in key):
                out[key] = value.contiguous()
    return {k: v.detach().float().cpu().contiguous() for k, v in out.items()}


def save_packed(model: Generator, path: str | os.PathLike, source_hash: str) -> Path:
    """Write the packed file atomically (temp name, then rename)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {str(path)!r}: directory {str(path.parent)!r} does not exist")
    tensors = pack_model(model.cpu().float())
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_json(),
            "igan_version": igan_version(), "source_sha256": source_hash, "payload_sha256": payload_digest(tensors),
            "dtype": "float32", "layout": "conv: [KH*KW*Cin, Cout] (kernels.conv.pack_weight)"}
    return write_safetensors(path, tensors, meta)


def read_packed(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """(metadata, tensors) of a packed file, with its format, version and checksum checked."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise PackedError(f"packed weights {str(path)!r} " + ("is not a file" if path.exists() else "does not exist"))
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise PackedError(f"cannot read packed weights {str(path)!r} (truncated or not a safetensors file): {e}") from e
    if meta.get("format") != FORMAT:
        raise PackedError(f"{str(path)!r} is not an igan packed weights file (format {meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise PackedError(f"{str(path)!r} has packed format version {meta.get('format_version')!r} (written by "
                          f"igan {meta.get('igan_version')}); this igan reads version {FORMAT_VERSION}: export again")
    digest = payload_digest(tensors)
    if digest != meta.get("payload_sha256"):
        raise PackedError(f"{str(path)!r} is corrupt: payload sha256 {digest[:16]}... does not match the recorded "
                          f"{str(meta.get('payload_sha256'))[:16]}...")
    return meta, tensors


def load_packed(path: str | os.PathLike, config: str | GeneratorConfig | None = None) -> Generator:
    """A Generator from a packed file (no original checkpoint needed). `config`, when given,
    must match the file's architecture."""
    meta, tensors = read_packed(path)
    try:
        cfg = GeneratorConfig.from_json(meta["config"])
    except (KeyError, ValueError, json.JSONDecodeError) as e:
        raise PackedError(f"{str(path)!r} has no valid model config: {e}") from e
    if config is not None:
        want = from_name(config) if isinstance(config, str) else config
        if want.architecture() != cfg.architecture():
            raise PackedError(f"{str(path)!r} holds model config {cfg.name!r}, not the requested {want.name!r}")
    model = Generator(cfg)
    state = {}
    try:
        for name, module in model.named_modules():
            if isinstance(module, ModulatedConv2d):
                _, cout, cin, k, _ = module.weight.shape
                state[f"{name}.weight"] = _unpack(tensors[f"{name}.packed"], cout, cin, k)
                module.scale = 1.0
            elif isinstance(module, EqualLinear):
                state[f"{name}.weight"] = tensors[f"{name}.weight"]
                state[f"{name}.bias"] = tensors[f"{name}.bias"]
                module.scale, module.lr_mul = 1.0, 1.0
        for key in model.state_dict():
            if key not in state:
                state[key] = tensors[key]
    except (KeyError, RuntimeError) as e:
        raise PackedError(f"{str(path)!r} does not hold the tensors of config {cfg.name!r}: {e}") from e
    check_state_dict(state, {k: tuple(v.shape) for k, v in model.state_dict().items()}, repr(str(path)), cfg.name)
    model.load_state_dict(state, strict=True)
    return model.eval()
