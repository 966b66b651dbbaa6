"""igan.export: the generator as ONNX graphs (graphs.py, onnx_export.py), the onnxruntime
backend (onnx_runner.py), weights packed for the fused kernels (packed.py) and the
`igan-export` CLI (cli.py)."""
from __future__ import annotations

import hashlib
import os


def igan_version() -> str:
    """The installed igan version (recorded in every export)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("igan")
    except PackageNotFoundError:
        return "unknown"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def source_digest(path: str | os.PathLike | None, model) -> str:
    """The source checkpoint's identity: sha256 of its file, or for the embedded model
    'embedded:' + sha256 of its tensors."""
    if path is not None:
        return sha256_file(path)
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return "embedded:" + h.hexdigest()
