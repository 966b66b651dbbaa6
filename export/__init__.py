"""igan.export: the generator as ONNX graphs (graphs.py, onnx_export.py), the onnxruntime
backend (onnx_runner.py), weights packed for the fused kernels (packed.py) and the
`igan-export` CLI (cli.py)."""
from __future__ import annotations

import hashlib
import os

from igan.engine.provenance import sha256_file


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
