"""The tile store: where finished tiles live until the final file is assembled, and what
makes a render resumable and shareable between processes and machines.

A render's work directory (next to the output: `.{name}.igan-work/`) holds
- `igan-work.json`: the marker written at creation (igan version, store version, request
  digest). igan only ever deletes a folder that carries it.
- `lock`: the lease. The process that owns the render (the main process, or torchrun's rank
  0) holds an exclusive `flock` on it for as long as it runs; the kernel drops it when that
  process dies, even by SIGKILL, so a killed render never blocks `--resume`, while a second
  live render of the same output is refused with the owner's PID (written in the file).
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
- `tmp/`: the output file's temporaries (the file being encoded, TIFF pyramid levels); a
  kill leaves them here, and the next owner of the lease empties the folder.
- `finished.json`: written once the output is in place (with the request's digest and the
  output's size and mtime); a work directory that has it is recognised as finished (e.g. after
  a kill between the output's rename and the removal).

The directory is created whole (built under a staging name, then renamed into place) and
removed whole (renamed away, then deleted), so another process never sees half of one. The
removal deletes the lock and `finished.json` last: a kill during it leaves a removal folder
that the next render deletes at once (its lock is free, or its owner's PID is dead) and, while
`finished.json` is there, recognises as a finished render of its output.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import time
from pathlib import Path

import numpy as np

from .embedded import builtin_for
from .errors import StoreError, WriteError, option
from .lease import LOCK, Lease, pid_alive
from .provenance import CPU_PATH_RECORDED, igan_version

STORE_VERSION = 1
MARKER = "igan-work.json"
TMP = "tmp"
FINISHED = "finished.json"
_STALE_SECONDS = 60  # a staging/removal folder whose owner cannot be told dead is left alone this long


class StoreExists(StoreError):
    """TileStore.create: the work directory exists (another process may have created it this instant)."""


class StoreWriteError(WriteError):
    """A tile could not be written (disk full, I/O error); finished tiles stay."""


def work_dir_for(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(f".{out.name}.igan-work")


def request_digest(request: dict) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()


def _name_pid(folder: Path) -> int | None:
    """The PID in a staging or removal folder's name (`….new-PID-HEX`, `….del-PID-HEX`)."""
    parts = folder.name.rsplit(".", 1)[-1].split("-")
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def _abandoned(folder: Path) -> bool:
    """True when the process that made the staging or removal folder `folder` is gone: its
    lock is free (the kernel dropped it when the process died), or it has no lock file and the
    PID in its name is not alive here; or, when neither can tell, it is older than
    _STALE_SECONDS. A staging folder also needs its PID dead (or that age): its creator takes
    its lock a moment after creating the file."""
    staging = ".new-" in folder.name
    pid = _name_pid(folder)
    dead = pid is not None and not pid_alive(pid)
    try:
        old = time.time() - folder.stat().st_mtime > _STALE_SECONDS
    except FileNotFoundError:
        return False
    try:
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:  # a removal that got to its lock, or a staging folder a moment old
        return dead or old
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # also drops the probe's lock
    return not staging or dead or old


def _abandoned_folders(root: Path) -> list[Path]:
    """Staging (`.new-*`) and removal (`.del-*`) folders of `root` whose owner is gone."""
    found = []
    for pattern in (f"{root.name}.new-*", f"{root.name}.del-*"):
        for folder in root.parent.glob(pattern):
            if folder.is_dir() and not folder.is_symlink() and _abandoned(folder):
                found.append(folder)
    return found


def sweep_stale(root: Path, keep=()) -> None:
    """Delete staging (`.new-*`) and removal (`.del-*`) folders of `root` left by killed
    processes (but those in `keep`): igan's own names, and only when their owner is gone (see
    _abandoned), at once: a rerun right after a kill leaves nothing behind."""
    for folder in _abandoned_folders(root):
        if folder not in keep:
            shutil.rmtree(folder, ignore_errors=True)


def finished_removals(root: Path, out: Path, request: dict) -> list[Path]:
    """The removal folders of `root`, left by a process killed while it deleted the work
    directory of a finished render, that say `out` is that render of `request` and is complete:
    their finished.json names `out` and the request's digest, and `out` still has the size and
    modification time recorded when it was put in place."""
    digest = request_digest(dict(request, store_version=STORE_VERSION))
    try:
        st = os.stat(out)
    except OSError:
        return []
    found = []
    for folder in _abandoned_folders(root):
        if ".del-" not in folder.name:
            continue
        try:
            rec = json.loads((folder / FINISHED).read_text())
        except (OSError, ValueError):
            continue
        if (isinstance(rec, dict) and rec.get("out") == out.name and rec.get("request_sha256") == digest
                and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns):
            found.append(folder)
    return found


def is_work_dir(root: Path) -> bool:
    """Does `root` carry igan's marker (or, from igan before the marker, its request.json)?"""
    if (root / MARKER).is_file():
        return True
    try:
        return "store_version" in json.loads((root / "request.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


# ---- the store --------------------------------------------------------------------------------------
class TileStore:
    def __init__(self, root: Path, request: dict, array, lease: Lease | None = None):
        self.root = root
        self.request = request
        self.array = array
        self.lease = lease
        self._log = None

    # ---- opening ------------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | os.PathLike, request: dict, *, lease: bool = False, tiles: bool = True,
               folders: tuple[str, ...] = ()) -> "TileStore | None":
        """A fresh work directory for `request` (which must hold width, height, tile_height,
        tile_width), built under a staging name and renamed into place. With `lease`, its
        lease is held from the start. StoreExists if `root` exists; None if another process
        created it at the same moment. `tiles=False`: no tile array (igan-video keeps its
        segments in `folders` instead)."""
        import zarr

        root = Path(root)
        if os.path.lexists(root):
            raise StoreExists(f"work directory {str(root)!r} already exists")
        stage = root.with_name(f"{root.name}.new-{os.getpid()}-{secrets.token_hex(4)}")
        stage.mkdir()
        held = None
        try:
            held = Lease.take(stage, create=True)
            request = dict(request, store_version=STORE_VERSION)
            for folder in ("manifest", TMP, *folders):
                (stage / folder).mkdir()
            write_atomic(stage / MARKER, json.dumps({"igan": igan_version(), "store_version": STORE_VERSION,
                                                      "request_sha256": request_digest(request)}, indent=1))
            if tiles:
                zarr.create_array(
                    store=str(stage / "tiles.zarr"), shape=(request["height"], request["width"], 3),
                    chunks=(request["tile_height"], request["tile_width"], 3), dtype="uint8",
                    chunk_key_encoding={"name": "default", "separator": "/"},
                    compressors=zarr.codecs.ZstdCodec(level=1), fill_value=0, config={"write_empty_chunks": True},
                    attributes={"igan": request})
            write_atomic(stage / "request.json", json.dumps(request, indent=1, sort_keys=True))
            try:
                os.rename(stage, root)
            except OSError as e:
                if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    return None  # another process won the race: the caller opens theirs
                raise
            stage = None
            held.root = root
            array = zarr.open_array(str(root / "tiles.zarr"), mode="r+") if tiles else None
            store = cls(root, request, array, held if lease else None)
            if not lease:
                held.release()
            held = None
            return store
        finally:
            if held is not None:
                held.release()
            if stage is not None:
                shutil.rmtree(stage, ignore_errors=True)

    @classmethod
    def open(cls, root: str | os.PathLike, request: dict | None = None, *, lease: Lease | None = None) -> "TileStore":
        """An existing work directory; with `request`, checks it describes the same render."""
        import zarr

        root = Path(root)
        stored = cls.check_request(root, request)
        try:
            array = zarr.open_array(str(root / "tiles.zarr"), mode="r+")
        except (OSError, ValueError, KeyError) as e:
            raise StoreError(f"{str(root)!r} has no usable tile array ({type(e).__name__}: {e})") from e
        return cls(root, stored, array, lease)

    @staticmethod
    def check_request(root: Path, request: dict | None) -> dict:
        """The stored request of `root`; StoreError if `request` is given and differs."""
        try:
            stored = json.loads((Path(root) / "request.json").read_text())
        except (OSError, ValueError) as e:
            raise StoreError(f"{str(root)!r} is not a usable igan work directory ({e})") from e
        if request is not None:
            wanted = dict(request, store_version=STORE_VERSION)
            diff = sorted(k for k in set(wanted) | set(stored) if wanted.get(k) != stored.get(k))
            if diff:
                details = "; ".join(f"{k}: was {stored.get(k)!r}, now {wanted.get(k)!r}" for k in diff)
                shipped = builtin_for(stored.get("model")) if "model" in diff else None
                hint = (f"; it was started with the shipped model {shipped}: give {option('checkpoint')} {shipped} to "
                        f"finish it" if shipped is not None else "")
                path = {v: k for k, v in CPU_PATH_RECORDED.items()}.get(stored.get("path"))
                if "path" in diff and path is not None:
                    hint += f"; it was started on the {path} CPU path: give {option('cpu_path')} {path} to finish it"
                raise StoreError(f"cannot resume from {str(root)!r}: it holds a different render ({details}){hint}")
        return stored

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

    def follow(self) -> "ManifestReader":
        """A reader of the tiles the manifest records from now on (see ManifestReader)."""
        reader = ManifestReader(self.root / "manifest")
        reader.new()  # what is recorded already
        reader.counts.clear()
        return reader

    def chunk_path(self, y: int, x: int) -> Path:
        """The file of the chunk holding image pixel (y, x) (the chunks are the tiles)."""
        th, tw = self.array.chunks[:2]
        return self.root / "tiles.zarr" / "c" / str(y // th) / str(x // tw) / "0"

    def missing(self, tiles) -> list:
        """Those of `tiles` (planner Tiles) whose chunk is not on disk."""
        return [t for t in tiles if not self.chunk_path(t.y, t.x).is_file()]

    def writer(self, name: str) -> None:
        """Open this process's manifest log (`name` must be unique among live writers)."""
        self._log = os.open(self.root / "manifest" / f"{name}.log",
                            os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)

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

    def band(self, y: int, height: int, tiles=()) -> np.ndarray:
        """Rows [y, y + height) of the image, all columns. `tiles` (the band's planner Tiles)
        must all be on disk: a missing chunk would read back as zeros, so it is an error."""
        gone = self.missing(tiles)
        if gone:
            t = gone[0]
            raise StoreError(f"tile {t.index} (rows {t.y}-{t.y + t.height - 1}, columns {t.x}-{t.x + t.width - 1}) "
                             f"is recorded as finished but its data {str(self.chunk_path(t.y, t.x))!r} is missing"
                             f"{f' (and {len(gone) - 1} more)' if len(gone) > 1 else ''}; run the same command "
                             f"with {option('resume')} to render it again")
        return self.array[y:y + height]

    # ---- life cycle -----------------------------------------------------------------------------
    @property
    def tmp(self) -> Path:
        """Where the output's temporaries go (emptied by the next owner after a kill)."""
        return self.root / TMP

    def clear_tmp(self) -> None:
        """Delete what killed owners left in tmp/ and zarr's partial chunks (lease held)."""
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(exist_ok=True)
        for partial in (self.root / "tiles.zarr").rglob("*.partial"):
            partial.unlink(missing_ok=True)

    def finished(self) -> bool:
        return (self.root / FINISHED).is_file()

    def mark_finished(self, out: Path) -> None:
        """Record that the output is in place (a kill after this leaves a finished store): its
        name, the request's digest and, for a file, its size and mtime (a later run tells the
        finished output from one changed or replaced since)."""
        record = {"out": out.name, "time": time.time(), "request_sha256": request_digest(self.request)}
        st = os.stat(out)
        if not os.path.isdir(out):
            record.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
        write_atomic(self.root / FINISHED, json.dumps(record))

    def close(self) -> None:
        if self._log is not None:
            os.close(self._log)
            self._log = None

    def release(self) -> None:
        """Close the manifest log and drop the lease; the directory stays."""
        self.close()
        if self.lease is not None:
            self.lease.release()
            self.lease = None

    def remove(self, during=None) -> None:
        """Delete the work directory: renamed away first (so nobody opens half of it), then
        deleted (its lock and finished.json last, see _delete_removal), then the lease dropped.
        `during()` (tests: a kill) is called when all but the lock and finished.json is gone."""
        self.close()
        gone = self.root.with_name(f"{self.root.name}.del-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            os.rename(self.root, gone)
        except FileNotFoundError:
            gone = None
        if gone is not None:
            _delete_removal(gone, during)
        self.release()


class ManifestReader:
    """Follows the manifest logs of a work directory while other processes append to them:
    each `new()` returns the tiles recorded since the previous call, reading only what was
    appended (a torchrun rank 0 polls it between its batches to assemble bands as the
    other ranks finish them). A line is taken once its newline is there: a line being
    written waits for the next call. `counts` holds how many lines each log has given."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.offsets: dict[str, int] = {}
        self.counts: dict[str, int] = {}

    def new(self) -> set[int]:
        found = set()
        for log in sorted(self.folder.glob("*.log")):
            start = self.offsets.get(log.name, 0)
            try:
                with open(log, "rb") as f:
                    f.seek(start)
                    data = f.read()
            except FileNotFoundError:
                continue
            end = data.rfind(b"\n") + 1
            self.offsets[log.name] = start + end
            for line in data[:end].split(b"\n"):
                parts = line.split()
                if len(parts) == 2 and parts[0] == b"tile" and parts[1].isdigit():
                    found.add(int(parts[1]))
                    self.counts[log.name] = self.counts.get(log.name, 0) + 1
        return found


def _delete_removal(folder: Path, during=None) -> None:
    """Delete a work directory renamed away for removal, its lock and then finished.json last:
    killed before the lock goes, the folder's free lock tells the next render at once that its
    owner is dead; killed after, the PID in its name does; and while finished.json is there the
    next render knows the output is finished (workdir.open_store) instead of rendering it again."""
    last = (LOCK, FINISHED)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        entries = []
    for entry in entries:
        if entry.name in last:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
    if during is not None:
        during()
    for name in last:
        with contextlib.suppress(OSError):
            os.unlink(folder / name)
    try:
        os.rmdir(folder)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)


def write_atomic(path: Path, text: str) -> None:
    """Write `text` under a temporary name beside `path`, fsync, then rename into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
