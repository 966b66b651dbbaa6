"""igan.engine: the InfinityGAN generator, the seamless tiled renderer and its sinks.

Importing it first puts MKL in its reproducible mode (see determinism.py), which must
happen before torch's first CPU matrix product.
"""
from . import determinism  # noqa: F401
