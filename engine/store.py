"""The tile store: where finished tiles live until the final file is assembled, and what
makes a render resumable and shareable between processes and machines.

A render's work directory (next to the output: `.{name}.igan-work/`) holds
- `request.json`: what is being rendered (model identity, config, seed, window, tiling,
  precision). A resume must match it exactly.
- `tiles.zarr`: a Zarr v3 uint8 array of the whole window whose chunks are exactly the
  render tiles. Each tile is written whole by the process that rendered it (zarr writes a
  chunk to a temporary file and renames it, so a killed writer never leaves a torn chunk),
  so any number of processes, on any number of machines sharing the directory, write
  concurrently without locks.
- `manifest/<writer>.log`: one line per finished tile, appended and fsynced by its writer
  after the chunk is on disk. The union of the logs is the set of finished tiles; a line
  cut short by a kill is ignored, and its tile is rendered again.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

STORE_VERSION = 1


class StoreError(ValueError):
    """A work directory that cannot be used for this request."""


class StoreWriteError(OSError):
    """A tile could not be written (disk full, I/O error); finished tiles stay."""


def work_dir_for(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(f".{out.name}.igan-work")


def file_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class TileStore:
    def __init__(self, root: Path, request: dict, array):
        self.root = root
        self.request = request
        self.array = array
        self._log = None

    # ---- opening ------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | os.PathLike, request: dict) -> "TileStore":
        """A fresh work directory for `request` (which must hold width, height, tile_height,
        tile_width)."""
        import zarr

        root = Path(root)
        if root.exists():
            raise StoreError(f"work directory {str(root)!r} already exists")
        root.mkdir()
        (root / "manifest").mkdir()
        request = dict(request, store_version=STORE_VERSION)
        array = zarr.create_array(
            store=str(root / "tiles.zarr"), shape=(request["height"], request["width"], 3),
            chunks=(request["tile_height"], request["tile_width"], 3), dtype="uint8",
            compressors=zarr.codecs.ZstdCodec(level=1), fill_value=0, config={"write_empty_chunks": True},
            attributes={"igan": request})
        _write_atomic(root / "request.json", json.dumps(request, indent=1, sort_keys=True))
        return cls(root, request, array)

    @classmethod
    def open(cls, root: str | os.PathLike, request: dict | None = None) -> "TileStore":
        """An existing work directory; with `request`, checks it describes the same render."""
        import zarr

        root = Path(root)
        try:
            stored = json.loads((root / "request.json").read_text())
        except (OSError, ValueError) as e:
            raise StoreError(f"{str(root)!r} is not a usable igan work directory ({e})") from e
        if request is not None:
            wanted = dict(request, store_version=STORE_VERSION)
            diff = sorted(k for k in set(wanted) | set(stored) if wanted.get(k) != stored.get(k))
            if diff:
                details = "; ".join(f"{k}: was {stored.get(k)!r}, now {wanted.get(k)!r}" for k in diff)
                raise StoreError(f"cannot resume from {str(root)!r}: it holds a different render ({details})")
        array = zarr.open_array(str(root / "tiles.zarr"), mode="r+")
        return cls(root, stored, array)

    # ---- tiles ----------------------------------------------------------------------------------
    def done(self) -> set[int]:
        """Indices of the tiles every writer has recorded as finished."""
        finished = set()
        for log in (self.root / "manifest").glob("*.log"):
            for line in log.read_bytes().split(b"\n"):
                parts = line.split()
                if len(parts) == 2 and parts[0] == b"tile" and parts[1].isdigit():
                    finished.add(int(parts[1]))
        return finished

    def writer(self, name: str) -> None:
        """Open this process's manifest log (`name` must be unique among live writers)."""
        self._log = os.open(self.root / "manifest" / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def put(self, index: int, y: int, x: int, tile: np.ndarray) -> None:
        """Store one finished tile (image coordinates) and record it in the manifest."""
        h, w = tile.shape[:2]
        try:
            self.array[y:y + h, x:x + w] = tile
            os.write(self._log, f"tile {index}\n".encode())
            os.fsync(self._log)
        except OSError as e:
            what = "disk full" if e.errno == errno.ENOSPC else "I/O error"
            raise StoreWriteError(e.errno, f"{what} while storing tile {index} in '{self.root}' "
                                           f"({e.strerror or e})") from e

    def band(self, y: int, height: int) -> np.ndarray:
        """Rows [y, y + height) of the image, all columns."""
        return self.array[y:y + height]

    def close(self) -> None:
        if self._log is not None:
            os.close(self._log)
            self._log = None

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.root, ignore_errors=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
