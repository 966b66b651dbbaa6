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
other client waits for it, so is its render. The page names itself (`?client=<id>`, one per
page load): the render queue serves clients in turn, and when a client asks for a tile of
another canvas or zoom than before, its requests still waiting for the old view are dropped
(stale). Tiles carry a strong ETag (their canonical address and the PNG encoder: what decides
their bytes) and If-None-Match is answered with 304 without touching a cache.

Only loopback Host headers are accepted when bound to a loopback address (no DNS rebinding),
and POST bodies must be small JSON (a page on another site cannot send one without a CORS
preflight, which is refused). With a token (required beyond loopback: server.py), every
request must carry it: `?token=` (the page then gets an HttpOnly SameSite=Strict cookie and a
redirect to its address without the token), the cookie, or `Authorization: Bearer`; else 401.
`root_path` is the prefix a reverse proxy serves the app under: the page's URLs carry it.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import re
import zlib
from dataclasses import asdict, dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ..errors import RequestError, option
from .canvas import Canvas, CanvasError
from .jobs import JobError, JobQueue, JobsFull
from .service import Overloaded, TileService
from .tiles import MAX_COORD, TILE, TileError, TileKey, tile_key

STATIC = Path(__file__).with_name("static")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".png": "image/png", ".txt": "text/plain; charset=utf-8"}
MAX_BODY = 64 << 10
MAX_CANVASES = 4096
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
TILE_CACHE_CONTROL = "public, max-age=31536000, immutable"  # a canvas id names its pixels: they never change
CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_CLIENTS = 4096  # named clients remembered (their current view); the oldest are forgotten
ROOT_PATH = re.compile(r"(/[A-Za-z0-9._~-]+)*")


def check_root_path(text: str) -> str:
    """--root-path normalised ('' for none): '/a/b', no trailing slash; RequestError naming it."""
    root = text.rstrip("/") if text not in ("", "/") else ""
    if not ROOT_PATH.fullmatch(root) or any(part in (".", "..") for part in root.split("/")):
        raise RequestError(f"{option('root_path')} must be a URL path like /igan (letters, digits, '.', '_', '~', '-' between "
                         f"slashes), got {text!r}")
    return root


def _encoder_tag() -> str:
    """What besides a tile's address decides its PNG bytes: the encoder (tiles.encode_png's
    settings, Pillow's and zlib's versions)."""
    import PIL

    text = f"png-level1/{PIL.__version__}/{zlib.ZLIB_RUNTIME_VERSION}"
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def tile_etag(key: TileKey, encoder: str) -> str:
    """A tile's strong ETag: its canonical address (the canvas id names its pixels) and the
    encoder that wrote its bytes."""
    return f'"{key.canvas}.{key.level}.{key.x}.{key.y}.{encoder}"'


def _matches(if_none_match: str, etag: str) -> bool:
    """If-None-Match against our ETag (weak comparison, as RFC 9110 asks for this header)."""
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


@dataclass
class _Client:
    """A named client's current view and its tile requests still waiting."""
    view_key: tuple = ()
    view: int = 0
    waiting: dict = field(default_factory=dict)  # asyncio.Future -> view it was asked in


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
               model_identity: dict | None = None, on_shutdown=None, token: str | None = None,
               root_path: str = ""):
    """The app over `service` (its scheduler already running). `info`: what /api/info
    reports besides the limits; `jobs`: the render-job queue (None: no 'render this view');
    `model_identity`: what canvas ids digest (None for an opened file); `token`: the secret
    every request must carry (None: none); `root_path`: the reverse proxy's prefix
    (check_root_path)."""
    static = _static_files()
    encoder = _encoder_tag()
    clients: dict[str, _Client] = {}
    page = (STATIC / "index.html").read_text().replace('"/static/', f'"{root_path}/static/') \
        .replace("<body>", f'<body data-root="{root_path}">')  # root_path: checked, nothing to escape

    async def index(request: Request):
        return Response(page, media_type=_TYPES[".html"], headers={"Cache-Control": "no-cache"})

    async def static_file(request: Request):
        path = static.get(request.path_params["path"])
        if path is None:
            return _error(404, "no such file")
        return FileResponse(path, media_type=_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})

    async def api_info(request: Request):
        return JSONResponse(info | {"tile": TILE, "max_coord": MAX_COORD, "jobs": jobs is not None,
                                    "output": str(jobs.output_dir) if jobs else None,
                                    "root_path": root_path, "rate": service.scheduler.rate()})

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

    def _client(request: Request, key: TileKey) -> tuple[str, int, _Client | None]:
        """(client, view, its record) of a tile request: a named client's view advances when
        it asks for another canvas or zoom; an unnamed one is its address, in view 0."""
        name = request.query_params.get("client")
        if name is None or not CLIENT_ID.fullmatch(name):
            return f"addr:{request.client.host if request.client else '-'}", 0, None
        record = clients.pop(name, None) or _Client()
        clients[name] = record  # the most recent last
        if len(clients) > MAX_CLIENTS:
            clients.pop(next(iter(clients)))
        view_key = (key.canvas, key.level)
        if record.view_key != view_key:
            record.view_key, record.view = view_key, record.view + 1
            for work, view in list(record.waiting.items()):
                if view < record.view and not work.done():  # the client moved on: drop what it no longer shows
                    work.cancel()
                    service.stats.stale += 1
        return f"client:{name}", record.view, record

    async def tile(request: Request):
        p = request.path_params
        try:
            key = service.canonical(tile_key(p["canvas"], p["zoom"], p["x"], p["y"], info["max_level"]))
        except TileError as e:
            return _error(404, str(e))
        client, view, record = _client(request, key)
        etag = tile_etag(key, encoder)
        headers = {"Cache-Control": TILE_CACHE_CONTROL, "ETag": etag}
        if _matches(request.headers.get("if-none-match", ""), etag):
            service.stats.requests += 1
            service.stats.not_modified += 1
            return Response(status_code=304, headers=headers)
        data = service.cached(key)
        if data is not None:  # the hot path: no task, no thread
            service.stats.requests += 1
            service.stats.memory_hits += 1
            return Response(data, media_type="image/png", headers=headers)
        work = asyncio.ensure_future(service.png(key, client, view))
        if record is not None:
            record.waiting[work] = view
        gone = asyncio.ensure_future(_disconnected(request.receive))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not work.done():  # the client left (or the server is stopping): stop waiting for the tile
                work.cancel()
            gone.cancel()
            if record is not None:
                record.waiting.pop(work, None)
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
                             "queued_clients": len(s.scheduler.pending_by_client()),
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
            return _error(e.status, str(e))
        return JSONResponse(_job_json(job.to_json()), status_code=201)

    def _job_json(d: dict) -> dict:
        if d.get("download"):
            d["download"] = root_path + d["download"]
        return d

    def _job(request: Request):
        return jobs.jobs.get(request.path_params["id"]) if jobs is not None else None

    async def job_status(request: Request):
        job = _job(request)
        if job is None:
            return _error(404, "no such job")
        return JSONResponse(_job_json(await asyncio.to_thread(job.to_json)))

    async def job_cancel(request: Request):
        job = _job(request)
        if job is None:
            return _error(404, "no such job")
        jobs.cancel(job)
        return JSONResponse(_job_json(job.to_json()))

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
    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts)])
    return _Guard(app, token, root_path)


class _Guard:
    """The ASGI app in front: sets the proxy's root path, and with a token, lets through only
    the requests that carry it (`?token=`, the cookie, or `Authorization: Bearer`)."""

    def __init__(self, app: Starlette, token: str | None, root_path: str):
        self.app, self.root_path = app, root_path
        self.state = app.state
        self._digest = hashlib.sha256(token.encode()).digest() if token is not None else None
        # one cookie per token: two servers on one host (cookies ignore the port) do not clash
        self.cookie = "igan_token_" + hashlib.sha256(b"igan-cookie:" + token.encode()).hexdigest()[:12] \
            if token is not None else None

    def _valid(self, given: str | None) -> bool:
        """Constant time whatever the guess (digests of equal length are compared)."""
        return given is not None and hmac.compare_digest(hashlib.sha256(given.encode()).digest(), self._digest)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.root_path:
            if not scope.get("root_path"):
                scope = dict(scope, root_path=self.root_path)
            if scope["path"] == self.root_path:  # the page is <root>/ (its URLs are relative to the folder)
                query = scope.get("query_string", b"").decode("latin-1")
                location = self.root_path + "/" + (f"?{query}" if query else "")
                return await Response(status_code=307, headers={"Location": location})(scope, receive, send)
        if self._digest is None:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        by_query = next((v for k, v in query if k == "token"), None)
        if self._valid(by_query):
            cookie = (f"{self.cookie}={by_query}; Path={self.root_path or '/'}; HttpOnly; SameSite=Strict"
                      + ("; Secure" if scope.get("scheme") == "https" else ""))
            path = scope["path"].removeprefix(self.root_path) if self.root_path else scope["path"]
            if scope["method"] == "GET" and path in ("", "/"):  # the page: drop the token from its address
                rest = urlencode([(k, v) for k, v in query if k != "token"])
                location = f"{self.root_path}/" + (f"?{rest}" if rest else "")
                return await Response(status_code=303, headers={"Location": location, "Set-Cookie": cookie,
                                                                "Cache-Control": "no-store"})(scope, receive, send)
            return await self.app(scope, receive, _adding_header(send, "set-cookie", cookie))
        jar = SimpleCookie()
        with contextlib.suppress(Exception):
            jar.load(headers.get("cookie", ""))
        by_cookie = jar[self.cookie].value if self.cookie in jar else None
        auth = headers.get("authorization", "")
        by_header = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        if self._valid(by_cookie) or self._valid(by_header):
            return await self.app(scope, receive, send)
        what = "a wrong token" if any(v is not None for v in (by_query, by_cookie, by_header)) else "no token"
        return await _error(401, f"this igan-serve needs its token and the request carried {what}: open the "
                                 "address it printed (…/?token=…) or send 'Authorization: Bearer <token>'",
                            **{"WWW-Authenticate": 'Bearer realm="igan-serve"'})(scope, receive, send)


def _adding_header(send, name: str, value: str):
    async def wrapped(message):
        if message["type"] == "http.response.start":
            message = dict(message, headers=[*message.get("headers", []), (name.encode(), value.encode("latin-1"))])
        await send(message)
    return wrapped


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
