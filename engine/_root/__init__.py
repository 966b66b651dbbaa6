"""igan: a fast inference engine for InfinityGAN, the GAN that paints images of any size.

    import igan
    model = igan.load()                      # the embedded model, or igan.load("best_fid.pth.tar")
    model.render(2048, 512, seed=7).save("canvas.png")
    model.render_to_file("pano.tif", 65536, 4096, seed=7)

The subpackages: igan.engine (rendering), igan.kernels (Triton kernels), igan.export (ONNX,
packed weights), igan.trainer (training and evaluation). This file lives at engine/_root/
in the repository, so that the top level holds only the folders of the design.
"""
from igan.engine.api import Model, load

__all__ = ["Model", "load"]
