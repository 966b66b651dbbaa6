"""The tile service: a tile's PNG from the memory LRU, else the disk cache, else computed:
native tiles through the render queue (batched, cancellable), coarser ones reduced from
their four children (each fetched the same way, so every level is cached).

Runs on the server's event loop. Concurrent requests for one tile share one computation,
which is cancelled when the last client waiting for it goes away. A request that must wait
for rendering is admitted only while fewer than `max_waiting` do (else `Overloaded`). The
native tiles a request needs are queued under the client that asked first and its view (the
render queue serves clients in turn, each client's newest view first).
"""
from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass

import numpy as np

from ..errors import IganError
from .cache import DiskCache, MemoryLRU
from .scheduler import Scheduler
from .tiles import TILE, TileError, TileKey, decode_png, encode_png, reduce_children


# (client, view) of the request a computation runs for: set by `png`, inherited by the tasks
# it starts (asyncio copies the context), read where native tiles are queued
_CLIENT: contextvars.ContextVar[tuple] = contextvars.ContextVar("igan_serve_client", default=(None, 0))


class Overloaded(IganError):
    """More tile requests are waiting for rendering than the queue holds (HTTP 503)."""


@dataclass
class ServiceStats:
    requests: int = 0
    memory_hits: int = 0
    disk_hits: int = 0
    computed: int = 0  # tiles computed (rendered or reduced), every level
    rejected: int = 0  # 503s
    cancelled: int = 0  # requests whose client left (or moved on) before the tile was ready
    stale: int = 0  # of those, requests dropped because their client moved on to another view
    not_modified: int = 0  # 304s: the client's copy is current


class _Flight:
    """One computation of a tile and the number of requests waiting for it."""

    def __init__(self, task: asyncio.Task):
        self.task = task
        self.waiters = 0


class TileService:
    def __init__(self, source, scheduler: Scheduler, memory: MemoryLRU, disk: DiskCache, *,
                 max_waiting: int = 64):
        self.source = source
        self.scheduler = scheduler
        self.memory = memory
        self.disk = disk
        self.max_waiting = max_waiting
        self.waiting = 0
        self.stats = ServiceStats()
        self._flights: dict[TileKey, _Flight] = {}
        self.canvases: dict[str, object] = {}  # id -> the canvas tiles of that id are rendered from

    def cached(self, key: TileKey) -> bytes | None:
        """The tile's PNG if it is in memory (the fast path: no task, no thread)."""
        return self.memory.get(key)

    def canonical(self, key: TileKey) -> TileKey:
        """`key` of a registered canvas, its column in the first period of a panorama
        (TileError for an unknown canvas or a tile outside a file's image)."""
        canvas = self.canvases.get(key.canvas)
        if canvas is None:
            raise TileError(f"no canvas {key.canvas!r} (POST /api/canvas registers one)")
        key = self._first_period(key)
        self._check_extent(key)
        return key

    def _first_period(self, key: TileKey) -> TileKey:
        canvas = self.canvases.get(key.canvas)
        x = key.x if canvas is None else canvas.canonical_x(key.level, key.x)
        return key if x == key.x else TileKey(key.canvas, key.level, x, key.y)

    async def png(self, key: TileKey, client=None, view: int = 0) -> bytes:
        """The PNG of tile `key` (a canonical key: see `canonical`); what must be rendered for
        it is queued under `client` and its `view` (see scheduler.py)."""
        _CLIENT.set((client, view))  # this task's context, and the tasks it starts
        self.stats.requests += 1
        data = self.memory.get(key)
        if data is not None:
            self.stats.memory_hits += 1
            return data
        data = await asyncio.to_thread(self.disk.get, key)
        if data is not None:
            self.stats.disk_hits += 1
            self.memory.put(key, data)
            return data
        if self.waiting >= self.max_waiting:
            self.stats.rejected += 1
            raise Overloaded(f"{self.waiting} tile requests are waiting for rendering (--queue {self.max_waiting})")
        self.waiting += 1
        try:
            return (await self._shared(key))[0]
        except asyncio.CancelledError:
            self.stats.cancelled += 1
            raise
        finally:
            self.waiting -= 1

    # ---- computing ----------------------------------------------------------------------------
    def _check_extent(self, key: TileKey) -> None:
        extent = self.source.extent(key.level)
        if extent is not None:
            h, w = extent
            if not (0 <= key.x * TILE < w and 0 <= key.y * TILE < h):
                raise TileError(f"tile ({key.x}, {key.y}) at zoom {-key.level} lies outside the image")

    async def _shared(self, key: TileKey) -> tuple[bytes, np.ndarray | None]:
        """(png, pixels) of `key`, computed once for all concurrent requests; cancelled when
        no request waits for it any more."""
        flight = self._flights.get(key)
        if flight is None:
            flight = _Flight(asyncio.ensure_future(self._compute(key)))
            self._flights[key] = flight
            flight.task.add_done_callback(lambda _: self._flights.pop(key, None)
                                          if self._flights.get(key) is flight else None)
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                flight.task.cancel()

    async def _pixels(self, key: TileKey) -> np.ndarray | None:
        """A tile's pixels for its parent: decoded from a cache, or computed (None outside a
        file's image)."""
        try:
            self._check_extent(key)
        except TileError:
            return None
        key = self._first_period(key)  # a panorama's children may repeat tiles of its first period
        data = self.memory.get(key)
        if data is None:
            data = await asyncio.to_thread(self.disk.get, key)
        if data is None:
            data, pixels = await self._shared(key)
            if pixels is not None:
                return pixels
        return await asyncio.to_thread(decode_png, data)

    async def _compute(self, key: TileKey) -> tuple[bytes, np.ndarray | None]:
        """(png, pixels) of a tile no cache held when it was asked for (pixels None when
        another request cached it meanwhile)."""
        data = self.memory.get(key)
        if data is not None:
            return data, None
        if self.source.reads(key.level):
            canvas = self.canvases.get(key.canvas)
            if canvas is None:  # forgotten meanwhile (the server keeps the latest MAX_CANVASES)
                raise TileError(f"no canvas {key.canvas!r} (POST /api/canvas registers one)")
            client, view = _CLIENT.get()
            pixels = await asyncio.wrap_future(self.scheduler.submit(canvas, key, client, view))
        else:
            async with asyncio.TaskGroup() as group:  # a failed or cancelled child cancels the rest
                children = [group.create_task(self._pixels(c)) for c in key.children()]
            pixels = await asyncio.to_thread(reduce_children, [c.result() for c in children])
        data = await asyncio.to_thread(self._store, key, pixels)
        self.stats.computed += 1
        return data, pixels

    def _store(self, key: TileKey, pixels: np.ndarray) -> bytes:
        data = encode_png(pixels)
        self.disk.put(key, data)
        self.memory.put(key, data)
        return data
