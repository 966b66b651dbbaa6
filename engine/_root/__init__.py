"""igan: a fast inference engine for InfinityGAN, the GAN that paints images of any size.

    import igan
    model = igan.load()                      # the embedded model, or igan.load("best_fid.pth.tar")
    model.render(2048, 512, seed=7).save("canvas.png")
    model.render_to_file("pano.tif", 65536, 4096, seed=7)

The subpackages: igan.engine (rendering), igan.kernels (Triton kernels), igan.export (ONNX,
packed weights), igan.trainer (training and evaluation). This file lives at engine/_root/
in the repository, so that the top level holds only the folders of the design.

`load` and `Model` are imported on first use: every console script imports this package
first, and `igan-render --help` must not wait for torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["Model", "load", "__version__"]

if TYPE_CHECKING:
    from igan.engine.api import Model, load


def __getattr__(name: str):
    if name in ("Model", "load"):
        from igan.engine import api

        return getattr(api, name)
    if name == "__version__":
        from igan.engine.provenance import igan_version

        return igan_version()
    raise AttributeError(f"module 'igan' has no attribute {name!r}")
