"""The model igan renders with when no checkpoint is given.

`default_model.safetensors` (next to this file, installed as package data) is the `mini`
config trained with igan-train on the procedural landscape scenes of igan.trainer.scenes
(README, "The default model"). It is small and CPU-trained: it draws sky above, ground or
water below and a horizon between, not photographic landscapes.

`placeholder_model()` is the former placeholder, the `small` config with random weights
from a fixed seed (identical on every machine), for benchmarks that want that architecture.
"""
from __future__ import annotations

import copy
import functools
import json
import struct
from pathlib import Path

DEFAULT_WEIGHTS = Path(__file__).with_name("default_model.safetensors")
PLACEHOLDER_SEED = 20221


def _metadata(path: Path) -> dict:
    """The __metadata__ of a safetensors file, read from its JSON header (8-byte little-endian
    length, then the header): no tensor library is loaded, so command lines can describe the
    model in their --help without importing torch."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 100 << 20:
            raise ValueError(f"{path}: a safetensors header of {n} bytes")
        return json.loads(f.read(n)).get("__metadata__") or {}


def _describe() -> str:
    try:
        steps = _metadata(DEFAULT_WEIGHTS).get("trained_steps", "?")
    except (OSError, ValueError, struct.error):
        return f"embedded default model (weights file {DEFAULT_WEIGHTS.name} is missing: reinstall igan)"
    return (f"embedded default model: config 'mini' trained by igan-train for {steps} steps on "
            "procedural landscape scenes (small and CPU-trained: see the README)")


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
