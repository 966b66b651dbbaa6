"""The sinks' options, checked before a render creates anything: the compression a format
takes (a PNG zlib level; a TIFF codec and level, with imagecodecs where zstd/jpeg need it)
and OME-TIFF's format."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import RequestError, option


# name: (min level, max level, default); jpeg's level is the quality
_TIFF_CODECS = {"zstd": (1, 22, 3), "zlib": (0, 9, 6), "jpeg": (1, 100, 90)}
_TIFF_EXTENSIONS = (".tif", ".tiff")


def _check_int(name: str, value, minimum: int = 1, maximum: float = math.inf) -> int:
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
            or not minimum <= value <= maximum):
        bounds = f">= {minimum}" if maximum == math.inf else f"in [{minimum}, {maximum}]"
        raise RequestError(f"{name} must be an integer {bounds}, got {value!r}")
    return int(value)


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
