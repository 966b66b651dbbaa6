"""igan's Python API (re-exported as `igan.load` and `igan.Model`):

    import igan

    model = igan.load()                                  # the embedded model; or a checkpoint path
    image = model.render(1024, 256, seed=7)              # a PIL image of that window of canvas 7
    pixels = model.render(512, 512, seed=7, x0=4096, array=True)   # uint8 [H, W, 3]
    model.render_to_file("pano.tif", 65536, 4096, seed=7, styles=(3, 17), resume=True)

Both calls take igan-render's options by name (`styles`, `style_centers`, `style_blur`,
`wrap`, `tile`, `memory_budget`, ...; `render_to_file` also `preview`, `compression`, `ome`,
`resume`, `workers`, `gpus`, ...) and compute the same pixels as `igan-render`: the same
request, the same plan, the same runner. `render` keeps the whole image in memory;
`render_to_file` streams tiles through the resumable work directory into the file, in
memory that does not grow with the image.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import pipeline, sources
from .errors import RequestError
from .provenance import DEFAULT_CPU_PATH
from .request import RenderRequest

_MODEL_OPTIONS = ("checkpoint", "config", "model", "device", "precision", "backend", "threads", "cpu_path", "bit_exact")


class Model:
    """A generator loaded once, ready to render any window of any seed's canvas."""

    def __init__(self, generator, *, checkpoint: str | None = None, config: str | None = None,
                 model: str | None = None, device: str = "auto", precision: str = "fp32", backend: str = "torch",
                 threads: int | None = None, cpu_path: str = DEFAULT_CPU_PATH, bit_exact: bool = False):
        self.generator = generator
        # bit_exact=True is cpu_path="reference" (RenderRequest resolves it, and refuses a clash)
        cpu_path = RenderRequest(cpu_path=cpu_path, bit_exact=bit_exact).cpu_path
        self.options = dict(checkpoint=checkpoint, config=config, model=model, device=device, precision=precision,
                            backend=backend, threads=threads, cpu_path=cpu_path)
        # refuses a bad device/precision/path now
        self._runner = sources.make_runner(backend, generator, device, precision, cpu_path)
        if self._runner.device.type == "cpu" and precision != "fp32" and backend != "onnx":
            pipeline.check_cpu_precision(precision, cpu_path)  # bf16 slower than fp32 here: refused, as igan-render does

    @property
    def config(self):
        """The generator's GeneratorConfig."""
        return self.generator.config

    @property
    def device(self):
        return self._runner.device

    def __repr__(self) -> str:
        source = self.options["model"] or self.options["checkpoint"] or "the embedded model"
        return (f"igan.Model({source!r}, config {self.config.name!r}, {self.options['backend']} on {self.device}, "
                f"{self.options['precision']})")

    def _request(self, **options) -> RenderRequest:
        clash = sorted(set(options) & set(_MODEL_OPTIONS))
        if clash:
            raise RequestError(f"{', '.join(clash)} belong(s) to igan.load(), not to a render of a loaded model")
        return RenderRequest.from_options({**self.options, "quiet": True, **options})

    def render(self, width: int, height: int, *, seed: int = 0, x0: int = 0, y0: int | None = None,
               array: bool = False, **options):
        """The window [x0, x0 + width) x [y0, y0 + height) of canvas `seed` (y0 default:
        -(height // 2), centred on the horizon) as a PIL RGB image, or with `array` a uint8
        numpy array [height, width, 3]. `options`: igan-render's canvas and tiling options
        (styles, style_centers, style_map, style_blur, wrap, trunc, latent_rng, quantize, tile,
        batch, memory_budget)."""
        request = self._request(width=width, height=height, seed=seed, x0=x0, y0=y0, **options).validate()
        out = np.empty((height, width, 3), np.uint8)
        pipeline.render_into(out, request, self._runner)
        return out if array else Image.fromarray(out, "RGB")

    def render_to_file(self, out: str | Path, width: int, height: int, *, seed: int = 0, x0: int = 0,
                       y0: int | None = None, **options):
        """Stream the window to `out` (.png, .tif/.tiff or .zarr) exactly as igan-render does
        (same tiles, same bytes, resumable: `resume=True` finishes an interrupted call).
        `options`: any other igan-render option by name (quiet defaults to True here).
        Returns the RenderStats (None if `out` was already a finished render)."""
        request = self._request(out=str(out), width=width, height=height, seed=seed, x0=x0, y0=y0, **options)
        return pipeline.run(request, model=self.generator)


def load(path: str | Path | None = None, *, config: str | None = None, device: str = "auto",
         precision: str = "fp32", backend: str = "torch", threads: int | None = None,
         cpu_path: str = DEFAULT_CPU_PATH, bit_exact: bool = False) -> Model:
    """A Model from an official checkpoint (`best_fid.pth.tar`), an igan `.safetensors` or
    `.packed` file, an ONNX export folder (with backend="onnx"), or None for the embedded
    model. Loading never runs code from the file. `cpu_path`: how the torch backend computes
    on a CPU: "exact" (the default: the same bytes under any tiling, batch, workers and
    threads), "reference" (igan 0.2's path, slower) or "fast-0.4" (igan 0.3-0.4's default,
    whose bytes follow the tiling and threads); `bit_exact=True` is cpu_path="reference", as
    igan 0.2-0.4 spelled it."""
    cpu_path = RenderRequest(cpu_path=cpu_path, bit_exact=bit_exact).cpu_path  # a clash refused before loading
    if threads:
        torch.set_num_threads(threads)
    path = None if path is None else str(path)
    onnx = backend == "onnx"
    generator = sources.load(path, config)
    return Model(generator, checkpoint=None if onnx else path, model=path if onnx else None, config=config,
                 device=device, precision=precision, backend=backend, threads=threads, cpu_path=cpu_path)
