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
from pathlib import Path

from .checkpoint import init_deterministic, load_igan
from .config import PRESETS
from .model import Generator

DEFAULT_WEIGHTS = Path(__file__).with_name("default_model.safetensors")
PLACEHOLDER_SEED = 20221


def _describe() -> str:
    try:
        from safetensors import safe_open

        with safe_open(str(DEFAULT_WEIGHTS), framework="pt") as f:
            steps = (f.metadata() or {}).get("trained_steps", "?")
    except (OSError, ValueError):
        return f"embedded default model (weights file {DEFAULT_WEIGHTS.name} is missing: reinstall igan)"
    return (f"embedded default model: config 'mini' trained by igan-train for {steps} steps on "
            "procedural landscape scenes (small and CPU-trained: see the README)")


DESCRIPTION = _describe()


@functools.lru_cache(maxsize=1)
def _build() -> Generator:
    return load_igan(DEFAULT_WEIGHTS).requires_grad_(False)


def embedded_model() -> Generator:
    """A fresh copy of the embedded default model (callers may move or cast it)."""
    return copy.deepcopy(_build())


@functools.lru_cache(maxsize=1)
def _build_placeholder() -> Generator:
    return init_deterministic(Generator(PRESETS["small"]), PLACEHOLDER_SEED).eval().requires_grad_(False)


def placeholder_model() -> Generator:
    """The `small` config with fixed random weights (not a trained model)."""
    return copy.deepcopy(_build_placeholder())
