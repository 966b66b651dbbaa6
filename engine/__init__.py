"""igan.engine: the InfinityGAN generator, the seamless tiled renderer and its sinks.

The core modules (config, geometry, latent, walk, model, planner, runner, executor, store,
sinks, request, pipeline) sit here; the applications in igan.engine.apps, the console
scripts in igan.engine.cli, the C++ side in igan.engine.native (docs/architecture.md).

MKL's reproducible mode and the AVX2 branch of MKL and oneDNN must be set before torch's
first CPU computation: the environment variables set below (cpu.PINS: MKL_CBWR=AVX2,STRICT,
ONEDNN_MAX_CPU_ISA=AVX2, unless the environment already has them) do it for any later import
of torch, and igan.engine.model (imported by everything that computes) confirms MKL's mode
through MKL's own call (determinism.py). Importing this package loads nothing else (cpu.py is
torch-free), so the command lines answer --help at once.
"""
from .cpu import set_pins

set_pins()
