"""igan.engine: the InfinityGAN generator, the seamless tiled renderer and its sinks."""
