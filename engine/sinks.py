"""Streaming image sinks: write a huge RGB image tile by tile, in bounded memory, atomically.

The renderer hands uint8 tiles to `Sink.write()`; tiles arrive in bands of `band_height` rows,
in any order. One writer thread assembles complete bands and encodes them strictly top to
bottom, so encoding overlaps rendering. Memory is O(width x band_height), never O(height).
Output goes to a temporary file (in `temp_dir`, the render's work directory, or else next to the
final path); only `close()` renames it into place, so a failed or aborted render never leaves a
partial file behind. Every temporary is flocked while its sink lives: one that a killed process
left next to a final path is recognised (unlocked) and deleted by the next sink for that path.

* PngSink: hand-rolled PNG (libpng-like adaptive row filters, one zlib stream, bounded IDATs).
* TiffSink: tiled BigTIFF with a 2x pyramid in SubIFDs, written by tifffile. A reduced level is
  buffered in a temporary raw file while the level above it streams (pwrite/pread, not memmap:
  dirty memmap pages count as RSS). Lossless (zlib, zstd, none) or JPEG tiles; plain TIFF, or
  OME-TIFF (`ome=True`: OME-XML in page 0's ImageDescription, igan's metadata in an OME
  MapAnnotation).
"""
from __future__ import annotations

import contextlib
import collections
import errno
import fcntl
import glob
import io
import math
import operator
import os
import queue
import secrets
import struct
import threading
import zlib
from pathlib import Path

import numpy as np

from . import native
from .errors import RequestError, WriteError, option
from .provenance import OME_NAMESPACE

PNG_LEVEL = 6
PNG_IDAT_BYTES = 1 << 20  # IDAT chunk size bound
_FILTER_BYTES = 64 << 10  # scanline bytes filtered per numpy pass (bounds the temporaries)
# name: (min level, max level, default); jpeg's level is the quality
_TIFF_CODECS = {"zstd": (1, 22, 3), "zlib": (0, 9, 6), "jpeg": (1, 100, 90)}
_TIFF_EXTENSIONS = (".tif", ".tiff")
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


def open_sink(path, width, height, *, band_height, preview=None, preview_size=1024,
              compression=None, tiff_tile=256, queue_tiles=64, workers=None, temp_dir=None,
              metadata: dict[str, str] | None = None, ome: bool = False) -> Sink:
    """Open a streaming sink; the format follows the extension (.png, .tif, .tiff).
    `workers`: compression threads (default min(8, CPUs)); the bytes do not depend on it.
    `temp_dir`: where the temporaries go (on the output's filesystem; default: beside it).
    `metadata`: text to embed (provenance.describe): PNG tEXt chunks (keyword -> text);
    TIFF: "Software" as the Software tag, "igan" as the ImageDescription (OME-TIFF: every
    entry in an OME MapAnnotation of namespace provenance.OME_NAMESPACE).
    `ome`: write an OME-TIFF (.tif/.tiff only)."""
    path = Path(path)
    ext = path.suffix.lower()
    check_ome(path, ome)
    workers = _check_int("workers", workers) if workers is not None else min(8, os.cpu_count() or 1)
    kw = dict(band_height=band_height, preview=preview, preview_size=preview_size,
              compression=compression, queue_tiles=queue_tiles, workers=workers, temp_dir=temp_dir,
              metadata=metadata)
    if ext == ".png":
        return PngSink(path, width, height, **kw)
    if ext in _TIFF_EXTENSIONS:
        return TiffSink(path, width, height, tile=tiff_tile, ome=ome, **kw)
    raise RequestError(f"unsupported output extension {ext or '(none)'!r} for '{path}': "
                       f"supported are .png, .tif, .tiff")


def check_compression(path, compression) -> None:
    """RequestError naming `compression` unless the format of `path` takes it (checked before
    a render creates anything)."""
    ext = Path(path).suffix.lower()
    if compression is None:
        return
    if ext == ".png":
        level = int(compression) if isinstance(compression, str) and compression.isdigit() else compression
        _check_int(f"{option('compression')} for PNG (a zlib level)", level, 0, 9)
    elif ext in _TIFF_EXTENSIONS:
        _tiff_codec(compression)
    else:
        raise RequestError(f"{option('compression')} {compression!r} is for .png and .tif outputs, not "
                           f"{ext or 'this output'}")


def check_ome(path, ome) -> None:
    """RequestError naming `ome` unless `path` is a TIFF (an OME-TIFF is the only OME output)."""
    ext = Path(path).suffix.lower()
    if ome and ext not in _TIFF_EXTENSIONS:
        raise RequestError(f"{option('ome')} writes an OME-TIFF: it is for .tif/.tiff outputs, not "
                           f"{ext or 'this output'} ('{path}')")


def _check_int(name: str, value, minimum: int = 1, maximum: float = math.inf) -> int:
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
            or not minimum <= value <= maximum):
        bounds = f">= {minimum}" if maximum == math.inf else f"in [{minimum}, {maximum}]"
        raise RequestError(f"{name} must be an integer {bounds}, got {value!r}")
    return int(value)


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


def _chunk(kind: bytes, data: bytes) -> bytes:
    return b"".join((struct.pack(">I", len(data)), kind, data,
                     struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))))


class _ParallelDeflate:
    """One zlib stream compressed in parallel, pigz-style: the filtered bytes are cut into
    pieces of a fixed size, each deflated on its own (raw deflate primed with the previous
    32 KiB as dictionary, ending on a byte-aligned sync flush) by a thread pool, and the
    pieces are concatenated in order between a zlib header and the Adler-32 of the whole.
    The bytes depend only on the data and the piece size, never on the thread count."""

    PIECE = 1 << 20
    WINDOW = 32 << 10

    def __init__(self, level: int, workers: int, emit):
        import concurrent.futures

        self.level, self.emit = level, emit
        self.pool = concurrent.futures.ThreadPoolExecutor(max(1, workers), thread_name_prefix="igan-deflate")
        self.inflight = collections.deque()
        self.limit = 2 * max(1, workers)  # bounds the memory held by pieces in flight
        self.buffer = bytearray()
        self.adler = 1
        self.dictionary = b""
        emit(b"\x78\x9c")  # zlib header: deflate, 32 KiB window, (CMF * 256 + FLG) % 31 == 0

    def _deflate(self, data: bytes, dictionary: bytes, last: bool) -> bytes:
        c = zlib.compressobj(self.level, zlib.DEFLATED, -15, zdict=dictionary) if dictionary else \
            zlib.compressobj(self.level, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)

    def _submit(self, data: bytes, last: bool) -> None:
        self.adler = zlib.adler32(data, self.adler)
        self.inflight.append(self.pool.submit(self._deflate, data, self.dictionary, last))
        self.dictionary = data[-self.WINDOW:]
        while len(self.inflight) > self.limit or (last and self.inflight):
            self.emit(self.inflight.popleft().result())

    def write(self, data: np.ndarray) -> None:
        self.buffer += memoryview(np.ascontiguousarray(data)).cast("B")
        while len(self.buffer) > self.PIECE:  # keep a remainder: the last piece must be final
            self._submit(bytes(self.buffer[:self.PIECE]), False)
            del self.buffer[:self.PIECE]

    def finish(self) -> None:
        self._submit(bytes(self.buffer), True)
        self.emit(struct.pack(">I", self.adler))
        self.pool.shutdown()


class PngSink(Sink):
    """8-bit RGB PNG streamed band by band: filtered scanlines into one zlib stream whose
    deflate runs on several threads (_ParallelDeflate)."""

    def __init__(self, path, width, height, *, compression=None, workers=1, **kw):
        check_compression(path, compression)
        self.level = PNG_LEVEL if compression is None else int(compression)
        self.workers = workers
        super().__init__(path, width, height, **kw)

    def _encode(self) -> None:
        f, n = self._file, self.width * 3
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)))
        for key, text in self.metadata.items():  # before the image data, where readers look first
            f.write(_chunk(b"tEXt", key.encode("latin-1") + b"\0" + text.encode("latin-1")))
        pending = bytearray()

        def emit(data):
            pending.extend(data)
            self._emit_idat(pending, PNG_IDAT_BYTES)

        stream = _ParallelDeflate(self.level, self.workers, emit)
        prev = np.zeros(n, np.uint8)  # the row above the first image row
        step = max(1, _FILTER_BYTES // n)
        for band in self._bands():
            rows = band.reshape(len(band), n)
            for r0 in range(0, len(rows), step):
                stream.write(native.filter_rows(rows[r0:r0 + step], prev))  # C++ when built
                prev = rows[min(r0 + step, len(rows)) - 1]
            self.rows_written += len(band)
        stream.finish()
        self._emit_idat(pending, 1)
        f.write(_chunk(b"IEND", b""))

    def _emit_idat(self, pending: bytearray, minimum: int) -> None:
        """Write IDAT chunks of at most PNG_IDAT_BYTES while `pending` holds >= `minimum` bytes."""
        while len(pending) >= minimum:
            size = min(len(pending), PNG_IDAT_BYTES)
            self._file.write(_chunk(b"IDAT", bytes(pending[:size])))
            del pending[:size]


def _codec_available(name: str) -> bool:
    """imagecodecs has the encoder tifffile uses for `name` (zstd, jpeg)."""
    try:
        import imagecodecs
    except ImportError:
        return False
    return hasattr(imagecodecs, f"{name}_encode")


def _tiff_codec(value) -> tuple[str | None, dict | None]:
    """'zlib', 'zlib:9', 'zstd', 'zstd:5', 'jpeg', 'jpeg:80', 'none' or None (zlib:6) ->
    tifffile args.

    zlib (deflate) is the default: every TIFF reader decodes it (libvips, QuPath/Bio-Formats,
    GIMP, OpenSeadragon's converters), whereas libvips builds without zstd read a zstd TIFF
    as black without an error. zstd (smaller, faster) is there for readers known to take it.
    jpeg (quality 1-100, default 90; lossy, several times smaller for photographic images) is
    baseline JPEG in YCbCr with 2x2 chroma subsampling, as slide scanners write: every
    pyramid viewer decodes it."""
    if value is None:
        value = "zlib"
    name, _, level = value.lower().partition(":") if isinstance(value, str) else ("", "", "")
    if name == "none" and not level:
        return None, None
    lo, hi, default = _TIFF_CODECS.get(name, (0, -1, 0))
    level = default if not level else int(level) if level.isdigit() else -1
    if not lo <= level <= hi:
        raise RequestError(f"TIFF compression ({option('compression')}) must be 'zlib', 'zstd', 'jpeg' or 'none', "
                           f"optionally with a level as in 'zlib:9' (0-9), 'zstd:5' (1-22) or 'jpeg:80' "
                           f"(quality 1-100), got {value!r}")
    if name in ("zstd", "jpeg") and not _codec_available(name):
        raise RequestError(f"TIFF compression ({option('compression')}) {value!r} needs imagecodecs: "
                           f"pip install \"igan[zstd]\" (or use zlib, the default)")
    return name, {"level": level}


def _ome_uuid(*parts: str) -> str:
    """A UUID for an OME-TIFF that is a digest of what made it (tifffile's default is
    time-based), so the same command still writes the same bytes."""
    import uuid

    return uuid.uuid5(uuid.NAMESPACE_URL, "igan:ome-tiff:" + "|".join(parts)).urn


def pyramid_shapes(height: int, width: int, tile: int) -> list[tuple[int, int]]:
    """(h, w) of each pyramid level: halve (rounding up) while the level exceeds one tile."""
    shapes = [(height, width)]
    while max(shapes[-1]) > tile:
        h, w = shapes[-1]
        shapes.append((-(-h // 2), -(-w // 2)))
    return shapes


def halve(a: np.ndarray) -> np.ndarray:
    """2x2 box average [h, w, 3] -> [ceil(h/2), ceil(w/2), 3], round half up, an odd last row
    or column replicated: the reduction of the TIFF pyramids (and of igan-serve's levels)."""
    if a.shape[0] % 2 or a.shape[1] % 2:
        a = np.pad(a, ((0, a.shape[0] % 2), (0, a.shape[1] % 2), (0, 0)), mode="edge")
    s = a[0::2, 0::2].astype(np.uint16)
    s += a[1::2, 0::2]
    s += a[0::2, 1::2]
    s += a[1::2, 1::2]
    s += 2
    s >>= 2
    return s.astype(np.uint8)


def _recut(bands, rows: int):
    """Re-cut a stream of row bands into bands of `rows` rows (the last may be shorter)."""
    pieces, n = [], 0
    for band in bands:
        while len(band):
            take = min(rows - n, len(band))
            pieces.append(band[:take])
            band, n = band[take:], n + take
            if n == rows:
                yield pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
                pieces, n = [], 0
    if pieces:
        yield np.concatenate(pieces)


class TiffSink(Sink):
    """Tiled pyramidal BigTIFF: level 0 plus 2x-reduced levels as SubIFDs, streamed by tifffile.

    `ome`: an OME-TIFF (tifffile's ome=True): the same pixels, tiles and SubIFD pyramid, with
    OME-XML (a digest-derived UUID, Creator = the Software entry) as page 0's ImageDescription
    and every metadata entry in an OME MapAnnotation of namespace provenance.OME_NAMESPACE
    (provenance.read_metadata finds "igan" there)."""

    def __init__(self, path, width, height, *, compression=None, tile=256, workers=1, ome=False, **kw):
        self.tile = _check_int("tiff_tile", tile, 16)
        if self.tile % 16:
            raise RequestError(f"tiff_tile must be a multiple of 16, got {tile!r}")
        self.compression, self._codec_args = _tiff_codec(compression)
        self.ome = bool(ome)
        self._workers = workers
        # tifffile pulls buffersize bytes of tiles ahead for its workers: keep that small
        self._buffersize = min(32 << 20, 8 * self._workers * self.tile * self.tile * 3)
        super().__init__(path, width, height, **kw)

    def _encode(self) -> None:
        import tifffile

        shapes = pyramid_shapes(self.height, self.width, self.tile)
        kw = dict(dtype=np.uint8, photometric="rgb", tile=(self.tile, self.tile),
                  compression=self.compression, compressionargs=self._codec_args,
                  maxworkers=self._workers, buffersize=self._buffersize)
        source, source_tmp = self._bands(), None
        with tifffile.TiffWriter(self._file, bigtiff=True, ome=self.ome) as tif:
            for level, (h, w) in enumerate(shapes):
                target = None
                if level + 1 < len(shapes):
                    target = self._create_temp(self.path, f".L{level + 1}")
                if level == 0:
                    extra = {"subifds": len(shapes) - 1} if len(shapes) > 1 else {}
                    if self.ome:
                        extra |= {"software": self.metadata.get("Software", False),
                                  "metadata": self._ome_metadata(shapes)}
                    elif self.metadata:  # ours instead of tifffile's shape JSON and name
                        extra |= {"description": self.metadata.get("igan"),
                                  "software": self.metadata.get("Software", False), "metadata": None}
                else:
                    extra = {"subfiletype": 1}
                target_fd = None if target is None else target[1]
                tiles = self._tiles(source, w, target_fd, count_rows=level == 0)
                tif.write(tiles, shape=(h, w, 3), **extra, **kw)
                if source_tmp is not None:
                    self._release(source_tmp)
                if target is not None:
                    source_tmp = target[0]
                    source = self._read_level(target[1], *shapes[level + 1])

    def _ome_metadata(self, shapes) -> dict:
        """tifffile's OME metadata for level 0 (the OME-XML is written when the file closes)."""
        codec = f"{self.compression}:{self._codec_args['level']}" if self.compression else "none"
        ome = {"axes": "YXS", "Name": "igan", "Creator": self.metadata.get("Software"),  # None: no Creator
               "UUID": _ome_uuid(self.metadata.get("igan", ""), f"{self.width}x{self.height}",
                                 f"tile {self.tile}", codec, str(len(shapes)))}
        if self.metadata:
            ome["MapAnnotation"] = {"Namespace": OME_NAMESPACE, "Value": dict(self.metadata)}
        return ome

    def _tiles(self, bands, width: int, target_fd: int | None, count_rows: bool):
        """Yield one level's tiles row-major; also write its 2x-reduced rows to `target_fd`.

        JPEG tiles at the right and bottom edges are padded by repeating the last column/row
        (tifffile pads with zeros: a black border inside the last JPEG blocks, whose
        quantisation would darken the image's edge pixels)."""
        y, t = 0, self.tile
        pad_edges = self.compression == "jpeg"
        for band in _recut(bands, t):
            if self._aborting.is_set():
                raise _Aborted
            if target_fd is not None:
                half = halve(band)
                _pwrite_all(target_fd, half, (y // 2) * half.shape[1] * 3)
            y += len(band)
            if count_rows:  # tifffile stops pulling after the last tile: count rows first
                self.rows_written = y
            for x in range(0, width, t):
                tile = band[:, x:x + t]
                if pad_edges and tile.shape[:2] != (t, t):
                    tile = np.pad(tile, ((0, t - tile.shape[0]), (0, t - tile.shape[1]), (0, 0)), mode="edge")
                yield tile

    def _read_level(self, fd: int, height: int, width: int):
        """Yield a reduced level back from its raw file in bands of `tile` rows."""
        for y in range(0, height, self.tile):
            rows = min(self.tile, height - y)
            data = os.pread(fd, rows * width * 3, y * width * 3)
            assert len(data) == rows * width * 3, "short read from a pyramid level file"
            yield np.frombuffer(data, np.uint8).reshape(rows, width, 3)
