"""Where things came from: igan's version and the digests that identify files.

Recorded in work directories (igan.engine.store), exports (igan.export) and outputs, so a
file found on disk says what made it. Torch-free, like the rest of what --help reads.
"""
from __future__ import annotations

import hashlib
import os

# The generators of the canvas's random values (igan.engine.latent.LATENT_RNGS), by name, and the
# version recorded with a render: the bytes of an image depend on it.
LATENT_RNG_VERSIONS = {"philox": "philox4x32-10/v1", "v1": "igan-hash-v1"}
DEFAULT_LATENT_RNG = "philox"  # since igan 0.2; "v1" reproduces images made before
# How float pixels in [-1, 1] become bytes: "round" (round half up, igan's default) or
# "official" (the official code's PNGs: matplotlib's truncation of (x + 1) / 2 * 255).
QUANTIZERS = ("round", "official")


def igan_version() -> str:
    """The installed igan version ("unknown" when run from an uninstalled tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("igan")
    except PackageNotFoundError:
        return "unknown"


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, hex, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
