"""The models shipped with igan, and the one it renders with when no checkpoint is given.

`models/*.safetensors` (next to this file, installed as package data) are `mini`-config models
trained with igan-train on the procedural landscape scenes of igan.trainer.scenes (README,
"The default model"), named by `--checkpoint builtin:NAME`:

- `landscapes-v2` (the default since igan 0.4): trained on the v2 panoramas (mountain ranges,
  lakes, tree lines, five times of day) across their whole width;
- `landscapes-v1` (the default of igan 0.1-0.3): trained on the simpler v1 scenes; kept so
  that the pictures made with it can be made again (`igan-render --from` finds it by itself).

They are small and CPU-trained: they draw sky, a horizon and ground or water in the scenes'
colours, not photographic landscapes.

`placeholder_model()` is the former placeholder, the `small` config with random weights
from a fixed seed (identical on every machine), for benchmarks that want that architecture.
"""
from __future__ import annotations

import copy
import functools
import json
import struct
from pathlib import Path

from .errors import CheckpointError
from .provenance import sha256_file

MODELS_DIR = Path(__file__).with_name("models")
BUILTIN_PREFIX = "builtin:"
BUILTIN = ("landscapes-v2", "landscapes-v1")  # the first is the default
DEFAULT_NAME = BUILTIN[0]
DEFAULT_WEIGHTS = MODELS_DIR / f"{DEFAULT_NAME}.safetensors"
PLACEHOLDER_SEED = 20221


def builtin_path(checkpoint) -> Path | None:
    """The file of `checkpoint` when it names a shipped model ("builtin:landscapes-v1"), else
    None; an unknown name is an error naming the ones there are."""
    if not isinstance(checkpoint, str) or not checkpoint.startswith(BUILTIN_PREFIX):
        return None
    name = checkpoint[len(BUILTIN_PREFIX):]
    if name not in BUILTIN:
        raise CheckpointError(f"no built-in model {name!r}: igan ships "
                              f"{', '.join(BUILTIN_PREFIX + n for n in BUILTIN)}")
    return MODELS_DIR / f"{name}.safetensors"


def builtin_for(identity: str | None) -> str | None:
    """"builtin:NAME" of the shipped model whose identity is `identity` ("embedded:" + the
    sha256 of its file, as a render's recipe records it), else None: how `igan-render --from`
    finds the model an image was made with when that was an earlier default."""
    if not identity or not identity.startswith("embedded:"):
        return None
    for name in BUILTIN:
        if identity == "embedded:" + sha256_file(MODELS_DIR / f"{name}.safetensors"):
            return BUILTIN_PREFIX + name
    return None


def _metadata(path: Path) -> dict:
    """The __metadata__ of a safetensors file, read from its JSON header (8-byte little-endian
    length, then the header): no tensor library is loaded, so command lines can describe the
    model in their --help without importing torch."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 100 << 20:
            raise CheckpointError(f"{path}: a safetensors header of {n} bytes")
        return json.loads(f.read(n)).get("__metadata__") or {}


def _describe() -> str:
    try:
        steps = _metadata(DEFAULT_WEIGHTS).get("trained_steps", "?")
    except (OSError, ValueError, struct.error):
        return f"embedded default model (weights file {DEFAULT_WEIGHTS.name} is missing: reinstall igan)"
    return (f"embedded default model ({BUILTIN_PREFIX}{DEFAULT_NAME}): config 'mini' trained by igan-train for "
            f"{steps} steps on procedural landscape panoramas (small and CPU-trained: see the README)")


DESCRIPTION = _describe()


# The model code is imported inside the functions below: this module is read by every
# command line's --help (DESCRIPTION), which must not load torch.
@functools.lru_cache(maxsize=1)
def _build():
    from .checkpoint import load_igan

    return load_igan(DEFAULT_WEIGHTS).requires_grad_(False)


def embedded_model():
    """A fresh copy of the embedded default model (callers may move or cast it)."""
    return copy.deepcopy(_build())


@functools.lru_cache(maxsize=1)
def _build_placeholder():
    from .checkpoint import init_deterministic
    from .config import PRESETS
    from .model import Generator

    return init_deterministic(Generator(PRESETS["small"]), PLACEHOLDER_SEED).eval().requires_grad_(False)


def placeholder_model():
    """The `small` config with fixed random weights (not a trained model)."""
    return copy.deepcopy(_build_placeholder())
