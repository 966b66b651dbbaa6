"""igan-serve's HTTP interface (Starlette, served by uvicorn).

    GET  /                                  the viewer (static/index.html)
    GET  /static/<file>                     the viewer's scripts: a fixed list, package data
    GET  /api/info                          the model or file, the limits, the defaults
    POST /api/canvas   {seed, styles, blur, period}  -> {id}: registers a canvas
    GET  /tiles/<canvas>/<zoom>/<x>/<y>.png a tile (Leaflet XYZ, CRS.Simple: zoom 0 = native)
    POST /api/jobs     {canvas, x0, y0, width, height, format, name?}  -> a render job
    GET  /api/jobs/<id>, /api/jobs/<id>/file; DELETE /api/jobs/<id>
    GET  /api/stats                         caches, queue, renders

A tile request waits for its tile while watching its connection: when the client goes away
(Leaflet drops the tiles the user panned away from), the request is cancelled and, if no
other client waits for it, so is its render. Only loopback Host headers are accepted when
bound to a loopback address (no DNS rebinding), and POST bodies must be small JSON (a page
on another site cannot send one without a CORS preflight, which is refused).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import asdict
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from .canvas import Canvas, CanvasError
from .jobs import JobError, JobQueue, JobsFull
from .service import Overloaded, TileService
from .tiles import MAX_COORD, TILE, TileError, tile_key

STATIC = Path(__file__).with_name("static")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".png": "image/png", ".txt": "text/plain; charset=utf-8"}
MAX_BODY = 64 << 10
MAX_CANVASES = 4096
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
TILE_CACHE_CONTROL = "public, max-age=31536000, immutable"  # a canvas id names its pixels: they never change


def _static_files() -> dict[str, Path]:
    """The files under static/ by URL path: the only files /static/ serves."""
    return {p.relative_to(STATIC).as_posix(): p for p in STATIC.rglob("*")
            if p.is_file() and p.suffix in _TYPES and not p.name.startswith(".")}


def _error(status: int, message: str, **headers) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


async def _json_body(request: Request):
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise CanvasError("send JSON (Content-Type: application/json)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise CanvasError(f"request body over {MAX_BODY} bytes")
    try:
        return json.loads(body)
    except ValueError as e:
        raise CanvasError(f"not JSON: {e}") from None


async def _disconnected(receive) -> None:
    """Returns when the client closes the connection."""
    while (await receive())["type"] != "http.disconnect":
        pass


def create_app(service: TileService, *, info: dict, jobs: JobQueue | None = None, host: str = "127.0.0.1",
               model_identity: dict | None = None, on_shutdown=None) -> Starlette:
    """The app over `service` (its scheduler already running). `info`: what /api/info
    reports besides the limits; `jobs`: the render-job queue (None: no 'render this view');
    `model_identity`: what canvas ids digest (None for an opened file)."""
    static = _static_files()

    async def index(request: Request):
        return FileResponse(STATIC / "index.html", media_type=_TYPES[".html"], headers={"Cache-Control": "no-cache"})

    async def static_file(request: Request):
        path = static.get(request.path_params["path"])
        if path is None:
            return _error(404, "no such file")
        return FileResponse(path, media_type=_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})

    async def api_info(request: Request):
        return JSONResponse(info | {"tile": TILE, "max_coord": MAX_COORD, "jobs": jobs is not None,
                                    "output": str(jobs.output_dir) if jobs else None})

    async def api_canvas(request: Request):
        if model_identity is None:
            return _error(409, "igan-serve --open serves one file: its canvas is in /api/info")
        try:
            canvas = Canvas.from_json(await _json_body(request))
        except CanvasError as e:
            return _error(400, str(e))
        ident = canvas.ident(model_identity)
        if ident not in service.canvases and len(service.canvases) >= MAX_CANVASES:
            service.canvases.pop(next(iter(service.canvases)))  # forget the oldest: its tiles stay on disk
        service.canvases[ident] = canvas
        return JSONResponse({"id": ident, "canvas": canvas.to_json()})

    async def tile(request: Request):
        p = request.path_params
        try:
            key = service.canonical(tile_key(p["canvas"], p["zoom"], p["x"], p["y"], info["max_level"]))
        except TileError as e:
            return _error(404, str(e))
        headers = {"Cache-Control": TILE_CACHE_CONTROL}
        data = service.cached(key)
        if data is not None:  # the hot path: no task, no thread
            service.stats.requests += 1
            service.stats.memory_hits += 1
            return Response(data, media_type="image/png", headers=headers)
        work = asyncio.ensure_future(service.png(key))
        gone = asyncio.ensure_future(_disconnected(request.receive))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not work.done():  # the client left (or the server is stopping): stop waiting for the tile
                work.cancel()
            gone.cancel()
        if work.cancelled():
            return Response(status_code=499)  # nobody reads it
        try:
            data = work.result()
        except Overloaded as e:
            return _error(503, str(e), **{"Retry-After": "1"})
        except TileError as e:
            return _error(404, str(e))
        except Exception as e:  # the render failed (logged by the render queue): this tile only
            return _error(500, f"rendering the tile failed: {type(e).__name__}: {e}")
        return Response(data, media_type="image/png", headers=headers)

    async def api_stats(request: Request):
        s = service
        return JSONResponse({"tiles": asdict(s.stats), "render": asdict(s.scheduler.stats),
                             "memory_cache": {"bytes": s.memory.bytes, "max_bytes": s.memory.max_bytes,
                                              "tiles": len(s.memory)},
                             "waiting": s.waiting, "queued": s.scheduler.pending, "max_waiting": s.max_waiting,
                             "canvases": len(s.canvases), **_memory()})

    async def job_create(request: Request):
        if jobs is None:
            return _error(409, "no render jobs here: this server shows an existing file")
        try:
            body = await _json_body(request)
            if not isinstance(body, dict):
                raise CanvasError("a job is a JSON object")
            canvas = service.canvases.get(body.get("canvas"))
            if not isinstance(canvas, Canvas):
                return _error(404, f"no canvas {str(body.get('canvas'))[:40]!r} (POST /api/canvas registers one)")
            window = [body.get(k) for k in ("x0", "y0", "width", "height")]
            if any(isinstance(v, bool) or not isinstance(v, int) for v in window):
                raise CanvasError("x0, y0, width and height must be integers")
            x0, y0, width, height = window
            if not (-MAX_COORD <= x0 and x0 + width <= MAX_COORD and -MAX_COORD <= y0 and y0 + height <= MAX_COORD):
                raise CanvasError(f"the window must lie within {MAX_COORD} pixels of the origin")
            job = jobs.submit(canvas, x0, y0, width, height, body.get("format", "png"), body.get("name"))
        except JobError as e:
            return _error(e.status, str(e))
        except CanvasError as e:
            return _error(400, str(e))
        except JobsFull as e:
            return _error(503, str(e), **{"Retry-After": "10"})
        return JSONResponse(job.to_json(), status_code=201)

    def _job(request: Request):
        return jobs.jobs.get(request.path_params["id"]) if jobs is not None else None

    async def job_status(request: Request):
        job = _job(request)
        if job is None:
            return _error(404, "no such job")
        return JSONResponse(await asyncio.to_thread(job.to_json))

    async def job_cancel(request: Request):
        job = _job(request)
        if job is None:
            return _error(404, "no such job")
        jobs.cancel(job)
        return JSONResponse(job.to_json())

    async def job_file(request: Request):
        job = _job(request)
        if job is None or job.state != "done":
            return _error(404, "no finished job with that id")
        return FileResponse(job.out, filename=job.out.name)  # the job's own output, nothing a client named

    @contextlib.asynccontextmanager
    async def lifespan(app):
        runner = asyncio.ensure_future(jobs.run()) if jobs is not None else None
        try:
            yield
        finally:
            if runner is not None:
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
                await jobs.close()
            service.scheduler.close()
            if on_shutdown is not None:
                on_shutdown()

    routes = [
        Route("/", index),
        Route("/static/{path:path}", static_file),
        Route("/api/info", api_info),
        Route("/api/canvas", api_canvas, methods=["POST"]),
        Route("/api/stats", api_stats),
        Route("/api/jobs", job_create, methods=["POST"]),
        Route("/api/jobs/{id}", job_status),
        Route("/api/jobs/{id}", job_cancel, methods=["DELETE"]),
        Route("/api/jobs/{id}/file", job_file),
        Route("/tiles/{canvas}/{zoom}/{x}/{y}.png", tile),
    ]
    hosts = ["*"] if host not in LOOPBACK else list(LOOPBACK)
    return Starlette(routes=routes, lifespan=lifespan,
                     middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts)])


def _memory() -> dict:
    """This process's resident and peak resident memory in bytes (Linux; zeros elsewhere)."""
    out = {"rss": 0, "peak_rss": 0}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out["rss" if line.startswith("VmRSS") else "peak_rss"] = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out
