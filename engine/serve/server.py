"""Builds igan-serve's app from its options: the tile source (a model, or a file with
--open), the caches, the render queue, the job queue."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RequestError, option
from .app import create_app
from .cache import DiskCache, MemoryLRU
from . import RENDER_OPTIONS
from .canvas import Canvas
from .jobs import JobQueue
from .scheduler import Scheduler
from .service import TileService
from .tiles import MAX_LEVEL

DEFAULT_MAX_LEVEL = 3  # 1:8; one tile there is 64 native tiles (docs/serve.md, "Zooming out")


@dataclass
class ServeOptions:
    cache: Path  # a folder (created when missing)
    output: Path = Path(".")  # where render jobs write
    render: dict = field(default_factory=dict)  # RENDER_OPTIONS by name (checkpoint, backend, trunc, ...)
    open: str | None = None  # serve this .tif/.zarr instead of a model
    seed: int = 0
    wrap: int | None = None  # open in 360-degree mode with this period
    batch: int | None = None  # tiles per forward pass (None: 1 on CPU, 8 on a GPU)
    queue: int = 64  # tile requests that may wait for rendering
    memory_cache: int = 256 << 20  # bytes of PNG tiles kept in memory
    max_level: int | None = None
    host: str = "127.0.0.1"
    token: str | None = None  # every request must carry it (the command line makes one beyond loopback)
    root_path: str = ""  # a reverse proxy's prefix: '/igan'
    max_jobs: int = 8  # render jobs queued or running at once
    jobs_size: int = 16 << 30  # bytes all render jobs of this server may write


def model_options(o: ServeOptions) -> dict:
    """The render options of the model (all but the device), paths made absolute (jobs run in
    the output folder)."""
    unknown = sorted(set(o.render) - set(RENDER_OPTIONS))
    if unknown:
        raise RequestError(f"igan-serve takes no render option(s) {', '.join(option(u) for u in unknown)}")
    return {k: os.path.abspath(v) if k in ("checkpoint", "model") and v is not None else v
            for k, v in o.render.items() if k != "device"}


def build(o: ServeOptions, *, generator=None):
    """(app, info): the Starlette app and what /api/info reports. `generator`: a loaded model
    (default: the one the options name)."""
    from ..request import RenderRequest
    from .sources import FileCanvas, FileSource, GeneratorSource

    if o.open is not None:
        source = FileSource(o.open)
        identity = source.identity
        canvas_id = Canvas().ident({"file": identity})
        h, w = source.extent(0)
        max_level = min(o.max_level, source.levels - 1) if o.max_level is not None else source.levels - 1
        info = {"kind": "file", "model": source.describe(), "canvas": canvas_id, "width": w, "height": h,
                "max_level": max_level, "seed": None, "wrap": None}
        batch = o.batch or 4
    else:
        request = RenderRequest(width=256, height=256, device=o.render.get("device", "auto"),
                                **model_options(o)).validate()
        source = GeneratorSource(request, generator)
        identity = source.identity
        max_level = DEFAULT_MAX_LEVEL if o.max_level is None else o.max_level
        if not 0 <= max_level <= MAX_LEVEL:
            raise RequestError(f"{option('max_level')} must be between 0 and {MAX_LEVEL}, got {max_level}")
        Canvas.from_json({"seed": o.seed, "period": o.wrap})  # checked now, not in the browser
        info = {"kind": "canvas", "model": source.describe(), "config": source.config.name,
                "max_level": max_level, "seed": o.seed, "wrap": o.wrap, "backend": request.backend,
                "device": str(source.runner.device), "precision": request.precision}
        batch = o.batch or (1 if source.runner.device.type == "cpu" else 8)
    info["batch"] = batch
    scheduler = Scheduler(source.render, batch)
    service = TileService(source, scheduler, MemoryLRU(o.memory_cache), DiskCache(o.cache), max_waiting=o.queue)
    jobs = None
    if o.open is not None:
        service.canvases[canvas_id] = FileCanvas(str(source.path))
    else:
        jobs = JobQueue(o.output, model_options(o), str(source.runner.device), max_jobs=o.max_jobs,
                        max_bytes=o.jobs_size)
    close = getattr(source, "close", None)
    app = create_app(service, info=info, jobs=jobs, host=o.host,
                     model_identity=None if o.open is not None else identity, on_shutdown=close,
                     token=o.token, root_path=o.root_path)
    app.state.service = service
    return app, info
