"""The model igan renders with when no checkpoint is given.

Until the trainer ships trained weights, this is a PLACEHOLDER: the `small` config with
random weights drawn from a fixed seed by the counter-based generator (identical on every
machine). Its images are structured colour noise, not landscapes; it exists so that every
code path (rendering, tiling, sinks, benchmarks) runs out of the box.
"""
from __future__ import annotations

import functools

from .checkpoint import init_deterministic
from .config import PRESETS
from .model import Generator

EMBEDDED_SEED = 20221
DESCRIPTION = (f"embedded placeholder: config 'small' with RANDOM weights (seed {EMBEDDED_SEED}), "
               "not a trained model")


@functools.lru_cache(maxsize=1)
def _build() -> Generator:
    return init_deterministic(Generator(PRESETS["small"]), EMBEDDED_SEED).eval().requires_grad_(False)


def embedded_model() -> Generator:
    """A fresh copy of the embedded model (callers may move or cast it)."""
    import copy

    return copy.deepcopy(_build())
