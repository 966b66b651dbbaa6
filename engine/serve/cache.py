"""The two tile caches: a byte-bounded LRU of PNG bytes in memory, and PNG files on disk.

The disk cache is one file per tile, `<root>/<canvas id>/<level>/<y>/<x>.png`, written to a
temporary name and renamed, so a reader sees a whole tile or none. Every part of the path is
a validated integer or a hex id: no name a client sends reaches the file system. A canvas id
is a digest of the model and the canvas's parameters, so a cache folder can be reused across
runs (and models) without ever serving another canvas's tile.
"""
from __future__ import annotations

import os
import secrets
import threading
from collections import OrderedDict
from pathlib import Path

from ..paths import is_within
from .tiles import CANVAS_ID, TileKey


class MemoryLRU:
    """PNG bytes by key, at most `max_bytes` in all (least recently used dropped first)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[TileKey, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: TileKey) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: TileKey, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= len(old)
            self._items[key] = data
            self.bytes += len(data)
            while self.bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self.bytes -= len(dropped)


class DiskCache:
    """Tiles as PNG files under `root` (which must exist)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(f"cache {str(root)!r} is not a directory")

    def path(self, key: TileKey) -> Path:
        if not CANVAS_ID.fullmatch(key.canvas):
            raise ValueError(f"not a canvas id: {key.canvas!r}")  # internal invariant
        path = self.root / key.canvas / str(int(key.level)) / str(int(key.y)) / f"{int(key.x)}.png"
        assert is_within(path.parent.parent.parent, self.root), path  # ints and hex only: cannot escape
        return path

    def get(self, key: TileKey) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, key: TileKey, data: bytes) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
