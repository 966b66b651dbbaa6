"""Where things came from: igan's version and the digests that identify files.

Recorded in work directories (igan.engine.store), exports (igan.export) and outputs, so a
file found on disk says what made it. Torch-free, like the rest of what --help reads.
"""
from __future__ import annotations

import hashlib
import json
import os

# The generators of the canvas's random values (igan.engine.rng.LATENT_RNGS), by name, and the
# version recorded with a render: the bytes of an image depend on it.
LATENT_RNG_VERSIONS = {"philox": "philox4x32-10/v1", "v1": "igan-hash-v1"}
DEFAULT_LATENT_RNG = "philox"  # since igan 0.2; "v1" reproduces images made before
# How float pixels in [-1, 1] become bytes: "round" (round half up, igan's default) or
# "official" (the official code's PNGs: matplotlib's truncation of (x + 1) / 2 * 255).
QUANTIZERS = ("round", "official")
# The torch backend's CPU paths (runner.TorchRunner): "exact" (engine/exactcpu.py, the default
# since 0.5: GEMMs in MKL's strict mode, the same bytes under any tile, batch, worker, thread
# or torchrun split), "reference" (engine/determinism.py, igan 0.2's path) and "fast-0.4"
# (engine/fastcpu.py, the default of 0.3-0.4: oneDNN, whose bytes follow the split).
CPU_PATHS = ("exact", "reference", "fast-0.4")
DEFAULT_CPU_PATH = "exact"
# The word each path records in a file's request ("path", identity._path): igan 0.2-0.4 wrote
# "bit-exact" and "fast", so the files they made resume and render again (--from) on their path.
CPU_PATH_RECORDED = {"exact": "exact", "reference": "bit-exact", "fast-0.4": "fast"}
# The namespace of the OME MapAnnotation that holds describe()'s entries in an OME-TIFF (whose
# ImageDescription is the OME-XML).
OME_NAMESPACE = "igan/metadata"


def igan_version() -> str:
    """The installed igan version ("unknown" when run from an uninstalled tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("igan")
    except PackageNotFoundError:
        return "unknown"


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, hex, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# The parts of a render's request (identity.request_identity) that do not decide its pixels: a file
# says what it shows, never how it was cut into tiles.
_NOT_PIXELS = ("tile_height", "tile_width")


def describe(identity: dict, command: str | None) -> dict[str, str]:
    """The metadata an output carries (sinks: PNG tEXt chunks, TIFF tags; Zarr keeps the
    request in its attributes): "Software" (igan and its version), "Comment" (the igan-render
    command that renders it again, when there is one) and "igan" (JSON: the version and the
    request: model digest and config, seed, window, styles, wrap, generator, quantizer,
    precision, backend). Nothing about time, paths of temporaries or tiling, so the same
    command still writes the same bytes."""
    request = {k: v for k, v in identity.items() if k not in _NOT_PIXELS}
    if isinstance(request.get("config"), str) and request["config"].startswith("{"):
        request["config"] = json.loads(request["config"])
    meta = {"Software": f"igan {igan_version()}"}
    if command:
        meta["Comment"] = command
    meta["igan"] = json.dumps({"igan": igan_version(), "command": command, "request": request},
                              sort_keys=True, separators=(",", ":"))
    return meta


def read_metadata(path: str | os.PathLike) -> dict | None:
    """The "igan" metadata of a PNG, TIFF or OME-TIFF igan wrote (describe), or None."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head == b"\x89PNG\r\n\x1a\n":
        from PIL import Image

        with Image.open(path) as im:
            text = im.text.get("igan")
    else:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            text = tif.pages[0].description
        if text.lstrip().startswith("<"):
            text = _ome_entry(text, "igan")
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _ome_entry(xml: str, key: str) -> str | None:
    """The value of `key` in the MapAnnotation of namespace OME_NAMESPACE of an OME-XML
    document, or None."""
    from xml.etree import ElementTree

    try:
        root = ElementTree.fromstring(xml.encode())  # bytes: the XML declaration names the encoding
    except ElementTree.ParseError:
        return None
    for element in root.iter():
        if element.tag.rpartition("}")[2] == "MapAnnotation" and element.get("Namespace") == OME_NAMESPACE:
            for entry in element.iter():
                if entry.tag.rpartition("}")[2] == "M" and entry.get("K") == key:
                    return entry.text
    return None

