"""Streaming image sinks: write a huge RGB image tile by tile, in bounded memory, atomically.

The renderer hands uint8 tiles to `Sink.write()`; tiles arrive in bands of `band_height` rows,
in any order. One writer thread assembles complete bands and encodes them strictly top to
bottom, so encoding overlaps rendering. Memory is O(width x band_height), never O(height).
Output goes to a temporary file (in `temp_dir`, the render's work directory, or else next to the
final path); only `close()` renames it into place, so a failed or aborted render never leaves a
partial file behind. Every temporary is flocked while its sink lives: one that a killed process
left next to a final path is recognised (unlocked) and deleted by the next sink for that path.

* PngSink (png.py): hand-rolled PNG (libpng-like adaptive row filters, one zlib stream,
  bounded IDATs).
* TiffSink (tiff.py): tiled BigTIFF with a 2x pyramid in SubIFDs, written by tifffile; plain
  TIFF or OME-TIFF.
base.py holds what they share (the Sink: band assembly, the writer thread, temporaries and
renames; the preview), checks.py the options' checks made before a render creates anything.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import RequestError
from .base import Sink, SinkError, _RawFile, sweep_temps
from .checks import _TIFF_EXTENSIONS, _check_int, _tiff_codec, check_compression, check_ome
from .png import _FILTER_BYTES, PNG_IDAT_BYTES, PNG_LEVEL, PngSink
from .tiff import TiffSink, halve, pyramid_shapes

__all__ = ["PNG_IDAT_BYTES", "PNG_LEVEL", "PngSink", "Sink", "SinkError", "TiffSink", "_FILTER_BYTES", "_RawFile",
           "_tiff_codec", "check_compression", "check_ome", "halve", "open_sink", "pyramid_shapes", "sweep_temps"]


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
