"""TiffSink: tiled BigTIFF with a 2x pyramid in SubIFDs, written by tifffile. A reduced level is
buffered in a temporary raw file while the level above it streams (pwrite/pread, not memmap:
dirty memmap pages count as RSS). Lossless (zlib, zstd, none) or JPEG tiles; plain TIFF, or
OME-TIFF (`ome=True`: OME-XML in page 0's ImageDescription, igan's metadata in an OME
MapAnnotation)."""
from __future__ import annotations

import os

import numpy as np

from ..errors import RequestError
from ..provenance import OME_NAMESPACE
from .base import _Aborted, _pwrite_all, Sink
from .checks import _check_int, _tiff_codec


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
