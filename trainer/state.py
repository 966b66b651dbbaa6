"""Resumable training state: G, D, EMA, both optimisers, step, running path-length mean,
loss history and the RNG states of every rank, in one file written atomically and read
back with torch.load(weights_only=True) (plain containers and tensors only: no code runs)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from igan.engine.checkpoint import safe_torch_load
from igan.engine.errors import CheckpointError

STATE_NAME = "state.pt"
STATE_VERSION = 1


def save_state(state: dict, path: str | os.PathLike) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(dict(state, version=STATE_VERSION), tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_state(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no training state to resume at {str(path)!r}")
    state = safe_torch_load(path, "training state")
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise CheckpointError(f"{str(path)!r} is not an igan training state (version {STATE_VERSION})")
    return state
