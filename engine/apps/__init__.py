"""igan.engine.apps: what is built on the canvas of the core engine (style fusion and the
cyclic canvas are the core's: igan.engine.fusion).

- invert: GAN inversion of a real image into latents (record: the inversion's file);
- paste: latents pasted into the canvas;
- outpaint: outpainting and inbetweening as an application canvas (AppSpec) that renders
  through igan.engine.pipeline like any other request.
"""
