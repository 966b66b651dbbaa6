"""igan's TIFF outputs as other programs read them: libvips (through pyvips, an independent TIFF
reader: libtiff and libjpeg-turbo, not tifffile/imagecodecs) decodes the default zlib pyramid,
JPEG tiles (--compression jpeg) and OME-TIFF (--ome) to the pixels igan rendered, and each
pyramid level to the 2x2 box average of the level above; plus the options' checks and bytes
that do not depend on the number of compression threads."""
from __future__ import annotations

import hashlib
import json
import sys
from xml.etree import ElementTree

import numpy as np
import pytest
import tifffile

import igan
from igan.engine import sinks
from igan.engine.cli.render import main as render_main
from igan.engine.errors import RequestError
from igan.engine.provenance import OME_NAMESPACE, read_metadata
from igan.engine.request import RenderRequest

W, H, SEED = 520, 64, 3  # over two 256-px tiles wide: three levels, partial edge tiles
# The PSNR bounds below were set on this model's pictures (a more textured model loses more to JPEG)
MODEL = "builtin:landscapes-v1"
LEVELS = [(64, 520), (32, 260), (16, 130)]
CASES = {"zlib": [], "jpeg": ["--compression", "jpeg"], "ome": ["--ome"],
         "ome-jpeg": ["--ome", "--compression", "jpeg:80"]}


@pytest.fixture(scope="module")
def vips():
    try:
        import pyvips
    except Exception as e:  # noqa: BLE001  (ImportError, or OSError/cffi errors when libvips is missing)
        pytest.skip(f"pyvips cannot be imported ({type(e).__name__}: {e}); pip install pyvips pyvips-binary")
    return pyvips


@pytest.fixture(scope="module")
def reference():
    """igan's in-memory render of the window the files show."""
    return igan.load(MODEL, device="cpu").render(W, H, seed=SEED, array=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The window rendered by igan-render to each kind of TIFF."""
    folder = tmp_path_factory.mktemp("readers")
    out = {}
    for name, flags in CASES.items():
        out[name] = folder / f"{name}.tif"
        argv = ["--checkpoint", MODEL, "--width", str(W), "--height", str(H), "--seed", str(SEED), "--device", "cpu",
                "--quiet"]
        assert render_main(argv + flags + ["--out", str(out[name])]) == 0
    return out


def box_pyramid(level0: np.ndarray) -> list[np.ndarray]:
    """The levels igan writes, computed here on their own: each the 2x2 mean of the one above,
    rounded half up, an odd last row/column repeated."""
    levels = [level0]
    while max(levels[-1].shape[:2]) > 256:
        a = levels[-1].astype(np.int64)
        a = np.pad(a, ((0, a.shape[0] % 2), (0, a.shape[1] % 2), (0, 0)), mode="edge")
        s = a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]
        levels.append(((s + 2) // 4).astype(np.uint8))
    return levels


def vips_levels(vips, path) -> list[np.ndarray]:
    """Level 0 and every SubIFD level as libvips decodes them."""
    base = vips.Image.new_from_file(str(path))
    assert base.get("n-pages") == 1  # the reduced levels are SubIFDs of page 0, not pages
    assert base.get("n-subifds") == len(LEVELS) - 1
    subifds = [vips.Image.new_from_file(str(path), page=0, subifd=i) for i in range(len(LEVELS) - 1)]
    out = []
    for image in [base, *subifds]:
        assert image.bands == 3 and image.format == "uchar" and image.interpretation == "srgb"
        out.append(image.numpy())
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


@pytest.mark.parametrize("name", ["zlib", "ome"])
def test_libvips_reads_the_lossless_pyramid_igan_rendered(vips, reference, files, name):
    levels = vips_levels(vips, files[name])
    expected = box_pyramid(reference)
    assert [lv.shape[:2] for lv in levels] == [e.shape[:2] for e in expected] == LEVELS
    for got, want in zip(levels, expected):
        np.testing.assert_array_equal(got, want)
    with tifffile.TiffFile(files[name]) as tif:  # and tifffile agrees, level by level
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        for level, want in zip(tif.series[0].levels, expected):
            np.testing.assert_array_equal(level.asarray(), want)


@pytest.mark.parametrize("name", ["jpeg", "ome-jpeg"])
def test_libvips_and_tifffile_decode_the_jpeg_pyramid_alike(vips, reference, files, name):
    levels = vips_levels(vips, files[name])
    expected = box_pyramid(reference)
    with tifffile.TiffFile(files[name]) as tif:
        page = tif.pages[0]
        assert page.compression == tifffile.COMPRESSION.JPEG
        assert page.photometric == tifffile.PHOTOMETRIC.YCBCR and page.subsampling == (2, 2)
        assert page.tilewidth == page.tilelength == 256
        mine = [level.asarray() for level in tif.series[0].levels]
    for level, (got, theirs, want) in enumerate(zip(levels, mine, expected)):
        assert got.shape == theirs.shape == want.shape
        diff = np.abs(got.astype(np.int16) - theirs)
        assert diff.max() <= 2 and diff.mean() < 0.05  # libjpeg-turbo on both sides: identical in practice
        # a reduced level packs more detail per pixel, so the same quality loses more of it
        assert psnr(got, want) > (35 if level == 0 else 28), (name, level)


def test_jpeg_quality_and_size(files, reference):
    with tifffile.TiffFile(files["jpeg"]) as tif:
        q90 = tif.pages[0].asarray()
    with tifffile.TiffFile(files["ome-jpeg"]) as tif:
        q80 = tif.pages[0].asarray()
    assert psnr(q90, reference) > psnr(q80, reference)
    assert files["jpeg"].stat().st_size < files["zlib"].stat().st_size / 2


def test_an_ome_tiff_is_ome_and_keeps_igans_metadata(files):
    plain = read_metadata(files["zlib"])
    assert plain is not None and read_metadata(files["ome"]) == plain == read_metadata(files["ome-jpeg"])
    with tifffile.TiffFile(files["ome"]) as tif:
        assert tif.is_ome and tif.is_bigtiff
        assert [level.shape[:2] for level in tif.series[0].levels] == LEVELS
        page = tif.pages[0]
        assert page.software == f"igan {igan.__version__}"
        xml = page.description
    root = ElementTree.fromstring(xml.encode())
    ns = {"ome": root.tag[1:].partition("}")[0]}
    assert root.get("Creator") == f"igan {igan.__version__}" and root.get("UUID").startswith("urn:uuid:")
    pixels = root.find("ome:Image/ome:Pixels", ns)
    assert (pixels.get("SizeX"), pixels.get("SizeY"), pixels.get("SizeC"), pixels.get("Type")) == \
        (str(W), str(H), "3", "uint8")
    entries = {m.get("K"): m.text for annotation in root.iterfind(".//ome:MapAnnotation", ns)
               if annotation.get("Namespace") == OME_NAMESPACE for m in annotation.iterfind(".//ome:M", ns)}
    assert json.loads(entries["igan"]) == plain and entries["Comment"] == plain["command"]
    assert entries["Software"] == f"igan {igan.__version__}"


def test_igan_render_from_an_ome_tiff(files, tmp_path):
    """--from reads the command an OME-TIFF records: the same bytes again (OME UUID included)."""
    again = tmp_path / "again.tif"
    assert render_main(["--from", str(files["ome"]), "--ome", "--device", "cpu", "--quiet", "--out", str(again)]) == 0
    assert again.read_bytes() == files["ome"].read_bytes()


# ---- the sink, without a model ----------------------------------------------------------------

def _image(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([128 + 100 * np.sin(x / 23) * np.cos(y / 17), 128 + 90 * np.sin((x + 2 * y) / 41),
                     x * 255 / w], -1).astype(np.uint8)


def _write(path, img, **kw) -> str:
    h, w, _ = img.shape
    with sinks.open_sink(path, w, h, band_height=48, tiff_tile=64, **kw) as sink:
        for y in range(0, h, 48):
            for x in range(0, w, 80):
                sink.write(x, y, img[y:y + 48, x:x + 80])
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("ome", [False, True], ids=["tiff", "ome"])
def test_jpeg_bytes_do_not_depend_on_the_worker_threads(tmp_path, ome):
    img = _image(150, 230)  # 64-px tiles: partial tiles on the right and bottom of every level
    meta = {"Software": "igan test", "igan": json.dumps({"seed": 1})}
    digests = {_write(tmp_path / f"w{n}.tif", img, compression="jpeg:85", ome=ome, workers=n, metadata=meta)
               for n in (1, 2, 5)}
    assert len(digests) == 1
    with tifffile.TiffFile(tmp_path / "w1.tif") as tif:
        assert tif.is_ome == ome
        decoded = tif.pages[0].asarray()
    assert psnr(decoded, img) > 35
    # edge tiles are padded by repeating the edge, not with black (tifffile's zeros put a dark
    # border in the last JPEG blocks: a mean error of 13-15 levels on the last row and column)
    error = np.abs(decoded.astype(np.int16) - img)
    assert error[-1].mean() < 3 and error[:, -1].mean() < 3


def test_an_ome_tiff_without_metadata(tmp_path):
    img = _image(40, 70)
    _write(tmp_path / "a.tif", img, ome=True)
    with tifffile.TiffFile(tmp_path / "a.tif") as tif:
        assert tif.is_ome and "Creator=" not in tif.pages[0].description and "MapAnnotation" not in \
            tif.pages[0].description
        np.testing.assert_array_equal(tif.pages[0].asarray(), img)
    assert read_metadata(tmp_path / "a.tif") is None


def test_jpeg_quality_bounds_and_missing_imagecodecs(monkeypatch):
    assert sinks._tiff_codec("jpeg") == ("jpeg", {"level": 90})
    assert sinks._tiff_codec("JPEG:100") == ("jpeg", {"level": 100})
    for bad in ("jpeg:0", "jpeg:101", "jpeg:x"):
        with pytest.raises(ValueError, match=r"'zlib', 'zstd', 'jpeg' or 'none'.*'jpeg:80' \(quality 1-100\)"):
            sinks._tiff_codec(bad)
    monkeypatch.setitem(sys.modules, "imagecodecs", None)  # `import imagecodecs` raises ImportError
    with pytest.raises(ValueError, match=r"'jpeg' needs imagecodecs: pip install \"igan\[zstd\]\""):
        sinks.check_compression("x.tif", "jpeg")
    sinks.check_compression("x.tif", "zlib")  # the default needs nothing


@pytest.mark.parametrize("out", ["x.png", "x.zarr"])
def test_ome_is_only_for_tiff(tmp_path, out, capsys):
    with pytest.raises(RequestError, match=rf"^ome writes an OME-TIFF: it is for \.tif/\.tiff outputs, not "
                                           rf"\.{out[2:]} \(out '.*{out}'\)"):
        RenderRequest(out=str(tmp_path / out), ome=True).validate()
    with pytest.raises(SystemExit):
        render_main(["--ome", "--out", str(tmp_path / out)])
    assert f"--ome writes an OME-TIFF: it is for .tif/.tiff outputs, not .{out[2:]}" in capsys.readouterr().err
    with pytest.raises(ValueError, match="ome writes an OME-TIFF"):
        sinks.open_sink(tmp_path / "y.png", 8, 8, band_height=8, ome=True)
    assert not list(tmp_path.iterdir())


def test_the_cpp_command_line_carries_ome():
    from igan.engine.cli import cpp as cpp_cli
    from igan.engine.native import capi

    assert "ome" in capi.CARRIED
    assert cpp_cli.parse_command_line(["--ome", "--out", "x.tif"])["ome"] is True
    assert cpp_cli.parse_command_line(["--out", "x.tif"])["ome"] is False
