"""Helpers shared by the inversion / outpainting / inbetweening tests."""
import torch
from conftest import random_model

from igan.engine.config import PRESETS
from igan.engine.latent import LatentField
from igan.engine.planner import Window, plan
from igan.engine.renderer import Renderer
from igan.engine.runner import TorchRunner


def image_like_model(name: str = "small", seed: int = 0):
    """A random model made to look trained where inversion cares: weak noise injection
    (strengths 0.05-0.1 instead of random_model's 0.5-1) and ToRGB scaled so its images have
    std 0.5, i.e. mostly inside [-1, 1] like real images (random weights give std 2-8)."""
    cfg = PRESETS[name]
    model = random_model(cfg, seed)
    with torch.no_grad():
        for conv in model.texture_synthesizer.convs:
            conv.noise.weight.mul_(0.1)
        probe = render(model, LatentField(cfg, 1000 + seed), Window(0, -32, 64, 64))
        scale = 0.5 / float(probe.std())
        for rgb in model.texture_synthesizer.to_rgbs:
            rgb.conv.weight.mul_(scale)
            rgb.bias.mul_(scale)
    return model


def render(model, field, window: Window, tile: int = 64) -> torch.Tensor:
    """float32 [3, H, W] render of a window through the planner and renderer."""
    out = Renderer(TorchRunner(model)).render_array(field, plan(model.config, window, tile=tile))
    return torch.from_numpy(out).permute(2, 0, 1)


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    from igan.engine.apps.invert import psnr

    return psnr(a, b)


class one_thread:
    """Run small-tensor work on one torch thread: with 2 threads on a 2-core machine that
    other jobs share, OpenMP barriers made the inversion 6x slower (measured 26 s vs 4 s)."""

    def __enter__(self):
        self.saved = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.saved)
