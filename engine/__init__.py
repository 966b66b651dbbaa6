"""igan.engine: the InfinityGAN generator, the seamless tiled renderer and its sinks.

The core modules (config, geometry, latent, walk, model, planner, runner, executor, store,
sinks, request, pipeline) sit here; the applications in igan.engine.apps, the console
scripts in igan.engine.cli, the C++ side in igan.engine.native (docs/architecture.md).

MKL's reproducible mode must be set before torch's first CPU matrix product: the
environment variable below does it for any later import of torch, and igan.engine.model
(imported by everything that computes) confirms it through MKL's own call (determinism.py).
Importing this package loads nothing else, so the command lines answer --help at once.
"""
import os

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
