"""igan-serve: the endless canvas in a browser (engine/cli/serve.py is its command line).

    tiles.py      the tile pyramid: keys, limits, the 2x box reduction, PNG bytes
    canvas.py     what is explored: seed, styles at canvas points, 360-degree period
    sources.py    where native tiles come from: the generator (batched) or an igan output file
    scheduler.py  the render queue: one worker thread, batches of one canvas, clients in turn, cancellation
    cache.py      the memory LRU and the on-disk tile cache
    service.py    a tile from the caches, the queue or its children; sharing; overload
    jobs.py       'render this view': igan-render processes, their progress and files
    app.py        the HTTP interface (Starlette), the token, ETags, and the page's static files
    server.py     all of it built from the command line's options

docs/serve.md is the user's guide.
"""
from __future__ import annotations

from ..request import declared

# The render options igan-serve takes from the declaration (request.RenderRequest): those that
# decide a tile's pixels besides the canvas the page chooses (its window, seed, styles and
# wrap: PAGE), the device, and --bit-exact (--cpu-path reference as igan 0.2-0.4 spelled it).
# Tiles and "render this view" jobs are rendered with them.
PAGE = ("width", "height", "x0", "y0", "seed", "styles", "style_centers", "style_map", "style_blur", "wrap")
RENDER_OPTIONS = tuple(f.name for f in declared(pixels=True) if f.name not in PAGE) + ("device", "bit_exact")
