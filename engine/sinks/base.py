"""The streaming sink every format shares: argument checks, band assembly in bounded memory,
the writer thread that encodes complete bands top to bottom, flocked temporaries renamed into
place by close() (and swept when a killed process left them), and the preview."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import io
import operator
import os
import queue
import secrets
import threading
from pathlib import Path

import numpy as np

from ..errors import RequestError, WriteError
from .checks import _check_int


_ABORT = object()  # queue sentinel: unwind the writer thread


class SinkError(WriteError):
    """The output could not be written: missing directory, permission denied, disk full..."""


class _Aborted(Exception):
    """Unwinds the writer thread after abort()."""


def _same_device(a: Path, b: Path) -> bool:
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except OSError:
        return False


def sweep_temps(final: Path) -> None:
    """Delete the temporaries of `final` that killed sinks left beside it: igan's own names
    (`.{name}.igan-tmp-*`), and only those no live sink holds the flock of."""
    for tmp in Path(final).parent.glob(f".{glob.escape(Path(final).name)}.igan-tmp-*"):
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live sink's
        else:
            tmp.unlink(missing_ok=True)
        finally:
            os.close(fd)


def _sink_error(message: str, cause: OSError) -> SinkError:
    err = SinkError(message)
    err.errno = cause.errno
    return err


class _RawFile:
    """Minimal seekable binary file over an fd; every byte the sink writes goes through write()."""

    def __init__(self, fd: int, name: str):
        self.fd, self.name = fd, name

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        total = len(view)
        while view:
            view = view[os.write(self.fd, view):]
        return total

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return os.lseek(self.fd, offset, whence)

    def tell(self) -> int:
        return os.lseek(self.fd, 0, os.SEEK_CUR)

    def flush(self) -> None:
        """Unbuffered: nothing to flush."""

    def fileno(self) -> int:
        """Refused, so numpy's tofile() (used by tifffile) falls back to write()."""
        raise io.UnsupportedOperation("fileno")


def _pwrite_all(fd: int, data: np.ndarray, offset: int) -> None:
    view = memoryview(np.ascontiguousarray(data)).cast("B")
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class _Preview:
    """Area-average downsampling by an integer factor f, fed with complete bands top to bottom.

    Holds only the small preview image and one float64 row of block sums."""

    def __init__(self, width: int, height: int, size: int):
        self.f = f = max(1, -(-max(width, height) // size))
        self.height = height
        self.image = np.zeros((-(-height // f), -(-width // f), 3), np.uint8)
        self._starts = np.arange(0, width, f)
        self._block_w = np.diff(np.append(self._starts, width))  # last block may be narrower
        self._sums = np.zeros((len(self._starts), 3), np.float64)

    def add(self, y0: int, band: np.ndarray) -> None:
        f, y = self.f, y0
        while y < y0 + len(band):
            py = y // f
            block_end = min((py + 1) * f, self.height)
            end = min(block_end, y0 + len(band))
            rows = band[y - y0:end - y0].sum(axis=0, dtype=np.uint32)  # [W, 3]
            self._sums += np.add.reduceat(rows, self._starts, axis=0, dtype=np.uint64)
            if end == block_end:
                count = (block_end - py * f) * self._block_w[:, None]
                self.image[py] = np.floor(self._sums / count + 0.5)
                self._sums[:] = 0
            y = end


class Sink:
    """Base class: argument checks, band assembly, the writer thread, temp files and renames.

    A subclass implements `_encode()`, run in the writer thread: it consumes `self._bands()`
    (complete bands, top to bottom) and writes the whole file through `self._file`."""

    def __init__(self, path, width, height, *, band_height, preview=None, preview_size=1024,
                 queue_tiles=64, temp_dir=None, metadata: dict[str, str] | None = None):
        self.path = Path(path)
        self.metadata = dict(metadata or {})
        for key, text in self.metadata.items():  # PNG tEXt: a Latin-1 keyword of 1-79 bytes, Latin-1 text
            if not (0 < len(key) < 80 and key.isascii() and key.isprintable() and isinstance(text, str)
                    and text.isascii()):
                raise RequestError(f"metadata {key!r}: keywords and texts must be printable ASCII (keyword 1-79 chars)")
        self.temp_dir = None if temp_dir is None else Path(temp_dir)
        self.width = _check_int("width", width)
        self.height = _check_int("height", height)
        self.band_height = _check_int("band_height", band_height)
        self.rows_written = 0  # rows handed to the encoder so far (for messages)
        self._nbands = -(-self.height // self.band_height)
        band_rows = np.minimum(self.band_height,
                               self.height - self.band_height * np.arange(self._nbands))
        self._band_area = band_rows * self.width  # pixels per band
        self._covered = np.zeros(self._nbands, np.int64)  # pixels received per band
        self._queue = queue.Queue(_check_int("queue_tiles", queue_tiles))
        self._preview = None
        if preview is not None:
            self._preview = _Preview(self.width, self.height, _check_int("preview_size", preview_size))
        if self.path.is_dir():
            raise SinkError(f"cannot write '{self.path}': it is a directory")
        self._lock = threading.Lock()
        self._temps: dict[Path, int] = {}  # temporary path -> its open fd
        self._closed = False
        self._error: BaseException | None = None
        self._aborting = threading.Event()
        self._tmp, fd = self._create_temp(self.path)
        self._file = _RawFile(fd, str(self._tmp))
        self._preview_path = self._preview_tmp = None
        if preview is not None:
            self._preview_path = Path(preview)
            try:
                self._preview_tmp, _ = self._create_temp(self._preview_path)
            except SinkError:
                self._discard()
                raise
        self._thread = threading.Thread(target=self._run, name="igan-sink-writer", daemon=True)
        self._thread.start()

    # -- caller side -------------------------------------------------------------------------
    def write(self, x: int, y: int, tile: np.ndarray) -> None:
        """Queue a copy of `tile` (h, w, 3) uint8 for image columns [x, x+w), rows [y, y+h)."""
        if self._closed:
            raise ValueError(f"write() on a closed sink for '{self.path}'")  # internal invariant
        self._raise_writer_error()
        if not isinstance(tile, np.ndarray):
            raise TypeError(f"tile must be a numpy array, got {type(tile).__name__}")
        if tile.dtype != np.uint8:
            raise TypeError(f"tile dtype must be uint8, got {tile.dtype}")
        if tile.ndim != 3 or tile.shape[2] != 3 or 0 in tile.shape:
            raise ValueError(f"tile must have shape (h, w, 3) with h, w >= 1, got {tile.shape}")  # internal invariant
        x, y = operator.index(x), operator.index(y)
        h, w = tile.shape[:2]
        where = f"tile at x={x}, y={y} with shape {tile.shape}"
        if x < 0 or y < 0 or x + w > self.width or y + h > self.height:
            raise ValueError(f"{where} is outside the {self.width}x{self.height} image")  # internal invariant
        k = y // self.band_height
        top = k * self.band_height
        bottom = min(top + self.band_height, self.height)
        if y + h > bottom:
            raise ValueError(f"{where} straddles bands: band {k} covers rows [{top}, {bottom})")  # internal invariant
        if self._covered[k] + h * w > self._band_area[k]:
            raise ValueError(f"{where} overlaps tiles already written to band {k} "  # internal invariant
                             f"(rows [{top}, {bottom}))")
        self._covered[k] += h * w
        item = (x, y, np.array(tile, order="C", copy=True))
        while True:  # the timeout only lets a writer failure surface while the queue is full
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                self._raise_writer_error()

    def close(self) -> None:
        """Wait for the writer, check every row arrived, then rename into place atomically."""
        if self._closed:
            return
        missing = self._band_area[self._covered < self._band_area] // self.width
        if missing.sum() or self._error is not None:
            self.abort()
            self._raise_writer_error()
            # internal invariant
            raise ValueError(f"cannot finish '{self.path}': {missing.sum()} of {self.height} rows "
                             f"were never written ({len(missing)} incomplete bands); "
                             f"no file was written")
        self._closed = True
        self._thread.join()
        self._raise_writer_error()
        try:
            if self._preview is not None:
                self._save_preview()
            self._release(self._tmp, rename_to=self.path)
            if self._preview is not None:
                self._release(self._preview_tmp, rename_to=self._preview_path)
        except OSError as exc:
            self._discard()
            raise _sink_error(f"cannot finish '{self.path}' ({exc.strerror or exc}); "
                              f"no file was written", exc) from exc

    def abort(self) -> None:
        """Stop the writer and delete the temporary files; the final path is left untouched."""
        self._closed = True
        self._aborting.set()
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        self._queue.put(_ABORT)  # room is certain: the caller is the only producer
        self._thread.join()
        self._discard()

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    # -- temporary files ---------------------------------------------------------------------
    def _create_temp(self, final: Path, suffix: str = "") -> tuple[Path, int]:
        """Create `.{name}.igan-tmp-{pid}-{random}{suffix}` in temp_dir when it is on the
        same filesystem as `final` (so the final rename is atomic), else next to `final`;
        flocked while this sink lives. Fails early, naming `final`."""
        sweep_temps(final)
        folder = final.parent
        if self.temp_dir is not None and _same_device(self.temp_dir, final.parent):
            folder = self.temp_dir
        tmp = folder / f".{final.name}.igan-tmp-{os.getpid()}-{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileNotFoundError as exc:
            if final.parent.is_dir():
                raise _sink_error(f"cannot write '{final}': {exc.strerror}", exc) from exc
            raise _sink_error(f"cannot write '{final}': directory '{final.parent}' "
                              f"does not exist", exc) from exc
        except PermissionError as exc:
            raise _sink_error(f"cannot write '{final}': permission denied in directory "
                              f"'{folder}'", exc) from exc
        except OSError as exc:
            raise _sink_error(f"cannot write '{final}': {exc.strerror or exc}", exc) from exc
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh file: never contended
        with self._lock:
            self._temps[tmp] = fd
        return tmp, fd

    def _release(self, tmp: Path, rename_to: Path | None = None) -> None:
        """fsync and close a temporary file, then rename it to `rename_to` or delete it."""
        with self._lock:
            fd = self._temps.pop(tmp)
        try:
            if rename_to is not None:
                os.fsync(fd)
        finally:
            os.close(fd)
        if rename_to is None:
            tmp.unlink(missing_ok=True)
            return
        os.replace(tmp, rename_to)
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(rename_to.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _discard(self) -> None:
        """Close and delete every temporary file (idempotent)."""
        with self._lock:
            temps, self._temps = self._temps, {}
        for tmp, fd in temps.items():
            os.close(fd)
            tmp.unlink(missing_ok=True)

    def _save_preview(self) -> None:
        from PIL import Image

        buf = io.BytesIO()  # small: at most preview_size^2 pixels
        Image.fromarray(self._preview.image, "RGB").save(buf, format="PNG")
        _RawFile(self._temps[self._preview_tmp], str(self._preview_tmp)).write(buf.getbuffer())

    # -- writer thread -----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._encode()
        except _Aborted:
            pass
        except BaseException as exc:  # handed to the caller's thread by write()/close()
            self._error = exc
            self._discard()

    def _raise_writer_error(self) -> None:
        exc = self._error
        if exc is None:
            return
        if isinstance(exc, SinkError):
            raise exc
        if isinstance(exc, OSError):
            what = "disk full" if exc.errno == errno.ENOSPC else "I/O error"
            raise _sink_error(f"{what} while writing '{self.path}' ({exc.strerror or exc}) after "
                              f"{self.rows_written} of {self.height} rows; no file was written "
                              f"at '{self.path}'", exc) from exc
        raise exc

    def _bands(self):
        """Yield complete bands [rows, W, 3] top to bottom, assembled from the queued tiles."""
        partial: dict[int, list] = {}  # band index -> [buffer, pixels still missing]
        ready: dict[int, np.ndarray] = {}
        k_next = 0
        while k_next < self._nbands:
            item = self._queue.get()
            if item is _ABORT:
                raise _Aborted
            x, y, tile = item
            k = y // self.band_height
            rows = int(self._band_area[k]) // self.width
            if tile.shape[:2] == (rows, self.width):
                ready[k] = tile
            else:
                if k not in partial:
                    partial[k] = [np.empty((rows, self.width, 3), np.uint8), rows * self.width]
                entry = partial[k]
                y0 = y - k * self.band_height
                entry[0][y0:y0 + tile.shape[0], x:x + tile.shape[1]] = tile
                entry[1] -= tile.shape[0] * tile.shape[1]
                if entry[1] == 0:
                    ready[k] = partial.pop(k)[0]
            while k_next in ready:
                band = ready.pop(k_next)
                if self._preview is not None:
                    self._preview.add(k_next * self.band_height, band)
                yield band
                k_next += 1

    def _encode(self) -> None:
        raise NotImplementedError
