"""The Python side of the C++ API (engine/native/cpp/include/igan/igan.hpp).

libigan_cpp embeds the interpreter and calls this module (and, for igan::parse_command_line,
igan-render's parser in engine/cli/cpp.py), so the C++ API and
igan-render share every step that decides pixels and bytes: the model loader, the planner's
tile choice, the renderer and the sinks. Arguments arrive already typed by pybind11; the
checks that matter (window, seed, paths) happen in the engine, whose exceptions reach C++
as igan::Error with the same message.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import pipeline, sources
from ..errors import RequestError
from ..provenance import DEFAULT_CPU_PATH
from ..request import RenderRequest, declared

# igan-render options the C++ API has no field for: one model, one process.
UNSUPPORTED = ("gpus", "workers", "random_weights")
# The RenderRequest fields igan::CommandLine carries (igan.cpp's parse_command_line reads each
# by name; tests/test_declaration.py checks that it does): every declared option but those.
CARRIED = frozenset(f.name for f in declared()) - set(UNSUPPORTED)
# Those an in-memory render takes (render_into): all but the outputs and the work directory.
_IN_MEMORY = frozenset(f.name for f in declared() if f.metadata["group"] not in ("outputs", "work"))


class Session:
    """One model on one device, as igan::Model holds it."""

    def __init__(self, checkpoint: str, config: str, device: str, precision: str, backend: str, threads: int,
                 model: str = "", bit_exact: bool = False, cpu_path: str = ""):
        """igan::Model::open's ModelOptions, in its order (igan.cpp passes them by position):
        `bit_exact` is cpu_path "reference"; `cpu_path` "" is the default path."""
        cpu_path = RenderRequest(cpu_path=cpu_path or DEFAULT_CPU_PATH, bit_exact=bool(bit_exact)).cpu_path
        if threads:
            torch.set_num_threads(threads)
        self.options = dict(checkpoint=checkpoint or None, config=config or None, device=device,
                            precision=precision, backend=backend, threads=threads or None, model=model or None,
                            cpu_path=cpu_path)
        self.model = sources.load(self.options["model"] or self.options["checkpoint"], self.options["config"])
        self.runner = sources.make_runner(backend, self.model, device, precision, cpu_path)

    def render_into(self, out: np.ndarray, x0: int, y0: int, seed: int, options: dict | None = None) -> None:
        """Render the window at (x0, y0) of out's size into `out` (uint8 [h, w, 3], a view
        of the caller's buffer), as igan.Model.render does (pipeline.render_into): `options`
        are igan-render's canvas and tiling options by name (styles, wrap, trunc, latent_rng,
        quantize, tile, batch, ...; those not given keep igan-render's defaults)."""
        h, w, _ = out.shape
        canvas = {k: v for k, v in (options or {}).items() if k in _IN_MEMORY}
        request = RenderRequest.from_options({**canvas, **self.options, "width": w, "height": h, "x0": x0, "y0": y0,
                                              "seed": seed, "quiet": True}).validate()
        pipeline.render_into(out, request, self.runner)

    def render_file(self, options: dict) -> None:
        """igan-render with this session's model: `options` are igan-render's options by
        their RenderRequest names (those not given keep igan-render's defaults; an unknown
        name is refused)."""
        pipeline.run(RenderRequest.from_options({**options, **self.options}), model=self.model)
