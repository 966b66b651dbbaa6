"""PngSink: hand-rolled PNG (libpng-like adaptive row filters, one zlib stream deflated on
several threads with bytes that do not depend on their number, bounded IDATs)."""
from __future__ import annotations

import collections
import struct
import zlib

import numpy as np

from .. import native
from .base import Sink
from .checks import check_compression


PNG_LEVEL = 6
PNG_IDAT_BYTES = 1 << 20  # IDAT chunk size bound
_FILTER_BYTES = 64 << 10  # scanline bytes filtered per numpy pass (bounds the temporaries)


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
