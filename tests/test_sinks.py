"""Streaming sinks: exact pixels, pyramids, previews, atomic files, clear errors, bounded memory."""
from __future__ import annotations

import errno
import io
import math
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from igan.engine import native, sinks
from igan.engine.sinks import SinkError, open_sink

SIZES = [(1, 1, 1), (7, 3, 2), (257, 131, 20), (1000, 37, 16)]  # width, height, band height


def make_image(kind: str, width: int, height: int, seed: int) -> np.ndarray:
    """[H, W, 3] uint8: uniform noise, or smooth gradients (which favour the PNG predictors)."""
    if kind == "random":
        return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    rgb = [255 * x / max(width - 1, 1), 255 * y / max(height - 1, 1), 127.5 + 127 * np.sin(x / 9 + y / 13)]
    return np.stack(rgb, axis=-1).round().astype(np.uint8)


def cut_tiles(img: np.ndarray, band_height: int, seed: int, shuffle: bool):
    """Bands of `band_height` rows, each cut at random columns into tiles (views, not copies)."""
    rng = np.random.default_rng(seed)
    height, width = img.shape[:2]
    tiles = []
    for y in range(0, height, band_height):
        cuts = rng.choice(np.arange(1, width), size=min(width - 1, int(rng.integers(0, 5))), replace=False)
        edges = [0, *sorted(int(c) for c in cuts), width]
        tiles += [(x0, y, img[y:y + band_height, x0:x1]) for x0, x1 in zip(edges, edges[1:])]
    if shuffle:
        rng.shuffle(tiles)
    return tiles


def read_or_none(path) -> bytes | None:
    return Path(path).read_bytes() if os.path.exists(path) else None


def render(path, img, band_height, *, seed=0, shuffle=False, **kw):
    """Stream `img` through a sink, checking that the final path only changes at close()."""
    height, width = img.shape[:2]
    before = read_or_none(path)
    with open_sink(path, width, height, band_height=band_height, **kw) as sink:
        for x, y, tile in cut_tiles(img, band_height, seed, shuffle):
            sink.write(x, y, tile)
            assert read_or_none(path) == before
        assert any(".igan-tmp-" in name for name in os.listdir(os.path.dirname(path)))
    assert sink.rows_written == height
    return sink


def leftovers(directory) -> list[str]:
    return sorted(name for name in os.listdir(directory) if ".igan-tmp-" in name)


def expected_pyramid(img: np.ndarray, tile: int) -> list[np.ndarray]:
    """2x2 box means (round half up), odd edges replicated, until a level fits in one tile."""
    levels = [img]
    while max(levels[-1].shape[:2]) > tile:
        a = levels[-1].astype(np.uint32)
        if a.shape[0] % 2:
            a = np.concatenate([a, a[-1:]], axis=0)
        if a.shape[1] % 2:
            a = np.concatenate([a, a[:, -1:]], axis=1)
        s = a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2, 3).sum(axis=(1, 3))
        levels.append(((s + 2) // 4).astype(np.uint8))
    return levels


def expected_preview(img: np.ndarray, size: int) -> np.ndarray:
    """Area average over f x f blocks (partial edge blocks over the pixels they cover)."""
    height, width = img.shape[:2]
    f = max(1, math.ceil(max(width, height) / size))
    out = np.empty((math.ceil(height / f), math.ceil(width / f), 3), np.uint8)
    for py in range(out.shape[0]):
        for px in range(out.shape[1]):
            block = img[py * f:(py + 1) * f, px * f:(px + 1) * f].astype(np.float64)
            out[py, px] = np.floor(block.mean(axis=(0, 1)) + 0.5)
    return out


def png_chunks(data: bytes):
    """(type, payload) of every chunk, asserting the signature and every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (size,) = struct.unpack(">I", data[pos:pos + 4])
        kind, payload = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + size]
        (crc,) = struct.unpack(">I", data[pos + 8 + size:pos + 12 + size])
        assert crc == zlib.crc32(kind + payload)
        chunks.append((kind, payload))
        pos += 12 + size
    return chunks


def read_png(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def png_filter_types(path, width: int) -> np.ndarray:
    raw = zlib.decompress(b"".join(p for k, p in png_chunks(Path(path).read_bytes()) if k == b"IDAT"))
    return np.frombuffer(raw, np.uint8).reshape(-1, 1 + 3 * width)[:, 0]


# -- PNG ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("shuffle", [False, True], ids=["rowmajor", "shuffled"])
@pytest.mark.parametrize("kind", ["random", "gradient"])
@pytest.mark.parametrize("width,height,band_height", SIZES)
def test_png_roundtrip(tmp_path, width, height, band_height, kind, shuffle):
    img = make_image(kind, width, height, seed=width * height)
    path = tmp_path / "out.png"
    render(path, img, band_height, seed=height, shuffle=shuffle)
    with Image.open(path) as im:  # Pillow checks the CRCs and the zlib stream
        assert im.mode == "RGB" and im.size == (width, height)
        np.testing.assert_array_equal(np.asarray(im), img)
    ours = os.path.getsize(path)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=6)
    print(f"{kind} {width}x{height}: ours {ours} B, Pillow {buf.tell()} B")


@pytest.mark.parametrize("level", [0, 1, "9"])  # "9": the CLI passes strings
def test_png_levels_and_bounded_idat_chunks(tmp_path, level):
    img = make_image("random", 1024, 512, seed=int(level))  # 1.5 MB raw: several IDATs at level 0
    path = tmp_path / "big.PNG"
    render(path, img, 100, compression=level)
    chunks = png_chunks(path.read_bytes())
    assert [k for k, _ in chunks][:1] + [k for k, _ in chunks][-1:] == [b"IHDR", b"IEND"]
    assert struct.unpack(">IIBBBBB", chunks[0][1]) == (1024, 512, 8, 2, 0, 0, 0)
    assert all(len(p) <= sinks.PNG_IDAT_BYTES for k, p in chunks if k == b"IDAT")
    if level == 0:
        assert sum(k == b"IDAT" for k, _ in chunks) >= 2
    np.testing.assert_array_equal(read_png(path), img)


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def reference_filter(cur: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """Scalar PNG filtering straight from the spec, with the min-sum-of-|int8| heuristic."""
    out, above = [], [int(v) for v in prev]
    for row in cur.tolist():
        candidates = []
        for ftype in range(5):
            filtered = []
            for i, v in enumerate(row):
                a, b = (row[i - 3] if i >= 3 else 0), above[i]
                c = above[i - 3] if i >= 3 else 0
                pred = (0, a, b, (a + b) // 2, _paeth(a, b, c))[ftype]
                filtered.append((v - pred) % 256)
            candidates.append(filtered)
        costs = [sum(v if v < 128 else 256 - v for v in f) for f in candidates]
        best = costs.index(min(costs))
        out.append([best] + candidates[best])
        above = row
    return np.array(out, np.uint8)


@pytest.mark.parametrize("values", [None, (0, 1, 127, 128, 255), (0, 2, 4)])
def test_filter_rows_matches_spec(values):
    rng = np.random.default_rng(len(values or ()))
    for h, n in [(1, 3), (5, 21), (9, 48)]:
        if values is None:
            cur = rng.integers(0, 256, (h, n), dtype=np.uint8)
            prev = rng.integers(0, 256, n, dtype=np.uint8)
        else:  # few distinct values: many Paeth and cost ties
            cur = rng.choice(np.array(values, np.uint8), (h, n))
            prev = rng.choice(np.array(values, np.uint8), n)
        np.testing.assert_array_equal(native.filter_rows_reference(cur, prev), reference_filter(cur, prev))


def test_png_picks_up_and_sub_filters(tmp_path):
    rng = np.random.default_rng(7)
    vertical = np.repeat(rng.integers(0, 256, (1, 64, 3), dtype=np.uint8), 40, axis=0)
    horizontal = np.repeat(rng.integers(0, 256, (40, 1, 3), dtype=np.uint8), 64, axis=1)
    render(tmp_path / "v.png", vertical, 16)
    render(tmp_path / "h.png", horizontal, 16)
    assert set(png_filter_types(tmp_path / "v.png", 64)[1:]) == {2}  # Up: rows repeat
    # Sub or Paeth (which also predicts "left" there, and "up" for the first pixel)
    assert set(png_filter_types(tmp_path / "h.png", 64)[1:]) <= {1, 4}


def test_write_copies_tile_and_accepts_short_tiles(tmp_path):
    img = make_image("random", 40, 30, seed=3)
    path = tmp_path / "copy.png"
    buf = np.empty((5, 20, 3), np.uint8)
    with open_sink(path, 40, 30, band_height=10) as sink:
        for y in range(0, 30, 5):  # tiles half a band tall
            for x in (20, 0):
                buf[:] = img[y:y + 5, x:x + 20]
                sink.write(x, y, buf)
                buf[:] = 0  # the caller reuses its buffer at once
    np.testing.assert_array_equal(read_png(path), img)


# -- TIFF --------------------------------------------------------------------------------------
@pytest.mark.parametrize("compression,codec", [
    (None, tifffile.COMPRESSION.ADOBE_DEFLATE), ("zlib:9", tifffile.COMPRESSION.ADOBE_DEFLATE),
    ("none", tifffile.COMPRESSION.NONE), ("ZSTD:5", tifffile.COMPRESSION.ZSTD)])
@pytest.mark.parametrize("shuffle", [False, True], ids=["rowmajor", "shuffled"])
@pytest.mark.parametrize("width,height,band_height", SIZES)
def test_tiff_pyramid(tmp_path, width, height, band_height, shuffle, compression, codec):
    tile = 16 if width < 500 else 32
    img = make_image("random" if shuffle else "gradient", width, height, seed=height)
    path = tmp_path / "out.tiff"
    render(path, img, band_height, seed=width, shuffle=shuffle, compression=compression, tiff_tile=tile)
    expected = expected_pyramid(img, tile)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
        levels = tif.series[0].levels
        assert [lv.shape for lv in levels] == [e.shape for e in expected]
        assert len(tif.pages[0].subifds or ()) == len(expected) - 1
        for level, want in zip(levels, expected):
            page = level.keyframe
            assert (page.tilelength, page.tilewidth) == (tile, tile)
            assert page.compression == codec
            assert page.photometric == tifffile.PHOTOMETRIC.RGB
            np.testing.assert_array_equal(level.asarray(), want)
    assert leftovers(tmp_path) == []


# -- preview -----------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("width,height,band_height,size", [
    (257, 131, 20, 50), (1000, 37, 16, 64), (37, 1000, 7, 100), (7, 3, 2, 1024), (31, 29, 4, 4)])
def test_preview(tmp_path, ext, width, height, band_height, size):
    img = make_image("random", width, height, seed=size)
    path, preview = tmp_path / f"img{ext}", tmp_path / "preview.png"
    render(path, img, band_height, shuffle=True, preview=preview, preview_size=size)
    np.testing.assert_array_equal(read_png(preview), expected_preview(img, size))
    assert leftovers(tmp_path) == []


# -- atomicity ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a.png", "a.tif"])
def test_exception_inside_with_leaves_nothing(tmp_path, name):
    img = make_image("random", 300, 300, seed=1)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        with open_sink(tmp_path / name, 300, 300, band_height=32, tiff_tile=16,
                       preview=tmp_path / "p.png") as sink:
            for y in range(0, 160, 32):
                sink.write(0, y, img[y:y + 32])
            raise RuntimeError("renderer crashed")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["old.png", "old.tif"])
def test_existing_file_kept_on_abort_and_replaced_on_close(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"previous render")
    img = make_image("gradient", 50, 40, seed=0)
    sink = open_sink(path, 50, 40, band_height=8)
    sink.write(0, 0, img[:8])
    sink.abort()
    sink.abort()  # idempotent
    assert path.read_bytes() == b"previous render" and leftovers(tmp_path) == []
    render(path, img, 8)
    assert path.read_bytes()[:4] in (b"\x89PNG", b"II+\x00")


def test_close_is_idempotent_and_write_after_close_fails(tmp_path):
    sink = open_sink(tmp_path / "x.png", 4, 2, band_height=2)
    sink.write(0, 0, np.zeros((2, 4, 3), np.uint8))
    sink.close()
    sink.close()
    with pytest.raises(ValueError, match="closed"):
        sink.write(0, 0, np.zeros((2, 4, 3), np.uint8))


# -- bad input -------------------------------------------------------------------------------
def test_unknown_extension(tmp_path):
    with pytest.raises(ValueError, match=r"'\.jpg'.*x\.jpg.*\.png.*\.tif"):
        open_sink(tmp_path / "x.jpg", 10, 10, band_height=4)
    with pytest.raises(ValueError, match="none"):
        open_sink(tmp_path / "noext", 10, 10, band_height=4)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kw,match", [
    (dict(width=0), "width.*0"), (dict(height=-3), "height.*-3"), (dict(width=2.5), "width.*2.5"),
    (dict(band_height=0), "band_height.*0"), (dict(queue_tiles=0), "queue_tiles"),
    (dict(compression=10), "10"), (dict(compression="zstd"), "zstd"), (dict(compression=True), "True"),
    (dict(compression="-1"), "-1"),
    (dict(name="x.tif", compression="lzw"), "lzw"), (dict(name="x.tif", compression="zstd:99"), "zstd:99"),
    (dict(name="x.tif", compression=5), "5"), (dict(name="x.tif", tiff_tile=24), "24"),
    (dict(preview="p.png", preview_size=0), "preview_size")])
def test_bad_arguments(tmp_path, kw, match):
    args = dict(width=10, height=10, band_height=4)
    args.update(kw)
    name = args.pop("name", "x.png")
    if "preview" in args:
        args["preview"] = tmp_path / args["preview"]
    with pytest.raises(ValueError, match=match):
        open_sink(tmp_path / name, args.pop("width"), args.pop("height"), **args)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["t.png", "t.tif"])
def test_bad_tiles(tmp_path, name):
    img = make_image("random", 20, 10, seed=2)
    with open_sink(tmp_path / name, 20, 10, band_height=4) as sink:
        with pytest.raises(ValueError, match=r"x=-1, y=0 .*\(4, 5, 3\).*outside"):
            sink.write(-1, 0, img[:4, :5])
        with pytest.raises(ValueError, match=r"x=16, y=0 .*outside"):
            sink.write(16, 0, img[:4, :5])
        with pytest.raises(ValueError, match=r"x=0, y=8 .*\(4, 5, 3\).*outside"):
            sink.write(0, 8, img[:4, :5])  # rows 8..12 of a 10-row image
        with pytest.raises(ValueError, match=r"x=0, y=2 .*straddles.*\[0, 4\)"):
            sink.write(0, 2, img[2:6, :5])
        with pytest.raises(TypeError, match="float32"):
            sink.write(0, 0, img[:4].astype(np.float32))
        with pytest.raises(TypeError, match="list"):
            sink.write(0, 0, img[:4].tolist())
        with pytest.raises(ValueError, match=r"\(4, 20, 4\)"):
            sink.write(0, 0, np.zeros((4, 20, 4), np.uint8))
        with pytest.raises(ValueError, match=r"\(4, 20\)"):
            sink.write(0, 0, np.zeros((4, 20), np.uint8))
        sink.write(0, 0, img[:4])
        with pytest.raises(ValueError, match="overlaps"):
            sink.write(5, 0, img[:4, 5:10])
        for y in (4, 8):  # the rejected tiles left no trace: the file still completes
            sink.write(0, y, img[y:y + 4])
    read = tifffile.imread if name.endswith(".tif") else read_png
    np.testing.assert_array_equal(read(tmp_path / name), img)


@pytest.mark.parametrize("name", ["m.png", "m.tif"])
def test_missing_rows_at_close(tmp_path, name):
    img = make_image("random", 30, 20, seed=4)
    sink = open_sink(tmp_path / name, 30, 20, band_height=8, preview=tmp_path / "p.png")
    sink.write(0, 0, img[:8])
    sink.write(0, 16, img[16:20, :10])
    with pytest.raises(ValueError, match="12 of 20 rows"):
        sink.close()
    assert os.listdir(tmp_path) == []


def test_missing_directory(tmp_path):
    with pytest.raises(SinkError, match=r"cannot write '.*nope/x\.tif': directory '.*nope' does not exist"):
        open_sink(tmp_path / "nope" / "x.tif", 10, 10, band_height=4)
    with pytest.raises(SinkError, match="nope"):
        open_sink(tmp_path / "x.png", 10, 10, band_height=4, preview=tmp_path / "nope" / "p.png")
    assert os.listdir(tmp_path) == []


def test_unwritable_directory(tmp_path, monkeypatch):
    real_open = os.open

    def denied(path, *args, **kw):  # chmod would not stop root, so simulate EACCES
        if ".igan-tmp-" in str(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, *args, **kw)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(SinkError, match=r"cannot write '.*x\.png': permission denied") as info:
        open_sink(tmp_path / "x.png", 10, 10, band_height=4)
    assert info.value.errno == errno.EACCES


def test_abort_after_all_tiles_removes_pyramid_files(tmp_path):
    img = make_image("random", 600, 500, seed=9)
    sink = open_sink(tmp_path / "p.tif", 600, 500, band_height=50, tiff_tile=16)
    for y in range(0, 500, 50):
        sink.write(0, y, img[y:y + 50])
    sink.abort()  # the writer may be anywhere in the pyramid by now
    assert os.listdir(tmp_path) == []


def test_writer_failure_surfaces_from_write(tmp_path, monkeypatch):
    monkeypatch.setattr(sinks._RawFile, "write", _fail_after(0, sinks._RawFile.write))
    tile = np.zeros((1, 8, 3), np.uint8)
    sink = open_sink(tmp_path / "w.png", 8, 1000, band_height=1, queue_tiles=2)
    with pytest.raises(SinkError, match="disk full"):
        for y in range(1000):  # the writer died on the signature: the queue stops draining
            sink.write(0, y, tile)
    assert y < 999
    sink.abort()
    assert os.listdir(tmp_path) == []


def _fail_after(limit: int, original):
    """A write function that raises ENOSPC once `limit` bytes have gone through it."""
    written = [0]

    def write(*args):
        data = args[1]
        if written[0] + memoryview(data).nbytes > limit:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written[0] += memoryview(data).nbytes
        return original(*args)

    return write


@pytest.mark.parametrize("name,target", [("d.png", "file"), ("d.tif", "file"), ("d.tif", "pwrite")])
def test_disk_full(tmp_path, monkeypatch, name, target):
    if target == "file":
        monkeypatch.setattr(sinks._RawFile, "write", _fail_after(60_000, sinks._RawFile.write))
    else:  # the temporary file of a pyramid level
        monkeypatch.setattr(os, "pwrite", _fail_after(5_000, os.pwrite))
    path = tmp_path / name
    path_text = str(path)
    img = make_image("random", 256, 200, seed=5)
    with pytest.raises(SinkError) as info:
        render(path, img, 8, compression=0 if name.endswith(".png") else "none", tiff_tile=32)
    message = str(info.value)
    assert "disk full" in message and "No space left on device" in message and path_text in message
    assert info.value.errno == errno.ENOSPC
    assert " of 200 rows" in message
    assert os.listdir(tmp_path) == []


# -- memory ------------------------------------------------------------------------------------
# Peak RSS is read from VmHWM: ru_maxrss would carry over the (larger) pytest parent's peak,
# since Linux keeps the pre-exec high-water mark of a forked child.
_CHILD = textwrap.dedent("""
    import re, sys
    import numpy as np
    from igan.engine.sinks import open_sink
    path, height = sys.argv[1], int(sys.argv[2])
    width, band, tile_w = 2048, 256, 512
    noise = np.random.default_rng(0).integers(0, 16, (band, tile_w, 3), dtype=np.uint8)
    ramp = np.arange(tile_w, dtype=np.uint8)[None, :, None]
    codec = 1 if path.endswith(".png") else "zstd:1"
    with open_sink(path, width, height, band_height=band, queue_tiles=8, compression=codec) as sink:
        for y in range(0, height, band):
            for x in range(0, width, tile_w):
                sink.write(x, y, noise + ramp + np.uint8(y // band))
    status = open("/proc/self/status").read()
    print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) // 1024)
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.slow
def test_memory_does_not_grow_with_height(tmp_path, ext):
    def peak_mb(height: int) -> int:
        out = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / f"h{height}{ext}"), str(height)],
                             check=True, capture_output=True, text=True, timeout=120)
        return int(out.stdout)

    short, tall = peak_mb(1024), peak_mb(16384)  # 6 MB vs 100 MB of pixels
    print(f"{ext}: peak RSS {short} MB at 2048x1024, {tall} MB at 2048x16384")
    assert tall <= 1.2 * short + 5


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_compression_threads_do_not_change_the_bytes(tmp_path, ext):
    """The encoders compress on several threads; the file must not depend on how many."""
    rng = np.random.default_rng(7)
    h, w = 700, 1500  # > 1 MiB of filtered PNG data: several parallel deflate pieces
    yy, xx = np.mgrid[0:h, 0:w]
    img = ((np.stack([xx, yy, xx ^ yy], -1) // 8) % 256 + rng.integers(0, 6, (h, w, 3))).astype(np.uint8)
    data = []
    for workers in (1, 3):
        path = tmp_path / f"w{workers}{ext}"
        with open_sink(path, w, h, band_height=100, workers=workers) as sink:
            for y in range(0, h, 100):
                sink.write(0, y, img[y:y + 100])
        data.append(path.read_bytes())
    assert data[0] == data[1]
    decoded = np.asarray(Image.open(tmp_path / f"w1{ext}")) if ext == ".png" else tifffile.imread(tmp_path / f"w1{ext}")
    assert np.array_equal(decoded, img)


_KILLED_SINK = """
import os, sys, numpy as np
from igan.engine.sinks import open_sink
sink = open_sink(sys.argv[1], 64, 64, band_height=32, preview=sys.argv[2] if len(sys.argv) > 2 else None)
sink.write(0, 0, np.zeros((32, 64, 3), np.uint8))
os.kill(os.getpid(), 9)
"""


@pytest.mark.parametrize("name", ["k.png", "k.tif"])
@pytest.mark.slow
def test_temporaries_of_a_killed_sink_are_swept_by_the_next_one(tmp_path, name):
    """A sink without a work directory keeps its temporaries beside the output, flocked: a
    killed sink's are deleted by the next sink for that path, a live sink's never."""
    out = tmp_path / name
    subprocess.run([sys.executable, "-c", _KILLED_SINK, str(out)], check=False, timeout=120)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left and all(n.startswith(f".{name}.igan-tmp-") for n in left)  # what a SIGKILL leaves
    live = open_sink(tmp_path / name, 64, 64, band_height=64)  # sweeps the dead ones, not its own
    assert sorted(p.name for p in tmp_path.iterdir() if p.name not in left) == [live._tmp.name]
    other = open_sink(tmp_path / name, 64, 64, band_height=64)  # a second live sink keeps the first's
    assert live._tmp.exists() and other._tmp.exists()
    for sink in (live, other):
        sink.write(0, 0, np.zeros((64, 64, 3), np.uint8))
    other.abort()
    live.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_temporaries_go_to_temp_dir_on_the_same_filesystem(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    sink = open_sink(tmp_path / "o.tif", 600, 600, band_height=600, temp_dir=work, tiff_tile=256,
                     preview=tmp_path / "p.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]
    sink.write(0, 0, np.zeros((600, 600, 3), np.uint8))
    sink.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.tif", "p.png", "work"]
    assert list(work.iterdir()) == []
