"""`igan-render --from IMAGE` treats the image as data from anywhere: its recipe decides the
pixels and nothing else. Crafted PNG and TIFF recipes never choose where igan writes, what
it deletes or how many processes it starts; a malformed one is one line and exit status 2
with nothing created; a fuzz of real recipes never gives a traceback."""
from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from igan.engine import pipeline, recipe
from igan.engine.cli.render import main as render_main
from igan.engine.provenance import read_metadata
from igan.engine.request import PIXEL_FIELDS, RenderRequest, cpu_count
from igan.engine.store import work_dir_for

BASE = ["--width", "64", "--height", "32", "--device", "cpu", "--quiet"]
HOSTILE = ("igan-render --width 64 --height 32 --seed 3 --out {victim} --stats-json {bashrc} --preview {photo} "
           "--restart --keep-work --no-metadata --workers 40 --threads 100000 --seeds 0-99999 --outdir {dir}")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Two images igan made: a plain window and a fused, cyclic one; their recipes."""
    d = tmp_path_factory.mktemp("made")
    plain, fused = d / "plain.png", d / "fused.png"
    assert render_main(BASE + ["--seed", "3", "--x0", "16", "--trunc", "0.9", "--out", str(plain)]) == 0
    assert render_main(BASE + ["--width", "96", "--styles", "4,9", "--style-centers", "0.3,0.2:0.9,0.7", "--wrap",
                               "--style-blur", "31", "--out", str(fused)]) == 0
    return {"plain": plain, "fused": fused, "plain_meta": read_metadata(plain), "fused_meta": read_metadata(fused)}


def _png(path: Path, source: Path, text: str) -> Path:
    """`source`'s pixels with `text` as its igan recipe (the tEXt chunk an adversary edits)."""
    info = PngInfo()
    info.add_text("igan", text)
    Image.open(source).save(path, pnginfo=info)
    return path


def _tiff(path: Path, source: Path, text: str) -> Path:
    """`source`'s pixels in a TIFF whose ImageDescription is `text` (7-bit ASCII, as TIFF has it)."""
    text = text.encode("ascii", "backslashreplace").decode()
    tifffile.imwrite(path, np.asarray(Image.open(source)), description=text, metadata=None)
    return path


def _tree(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(folder.rglob("*")) if p.name not in skip}


def _run(argv, cwd: Path, capsys) -> tuple[int, str]:
    """igan-render in-process in `cwd`: (exit status, stderr)."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        try:
            code = render_main(argv)
        except SystemExit as e:
            code = e.code
    finally:
        os.chdir(old)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("kind", ["png", "tif"])
def test_a_hostile_recipe_writes_only_the_users_output(tmp_path, made, capsys, kind):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("the user's shell")
    (home / "photo.png").write_bytes(b"the user's photo")
    (home / "holiday.png").write_bytes(b"the user's holiday")
    (home / "samples").mkdir()
    meta = copy.deepcopy(made["plain_meta"])
    meta["command"] = HOSTILE.format(victim=home / "holiday.png", bashrc=home / ".bashrc", photo=home / "photo.png",
                                     dir=home / "samples")
    meta["request"] |= {"out": str(home / "holiday.png"), "stats_json": str(home / ".bashrc"), "workers": 40}
    work = tmp_path / "work"
    work.mkdir()
    image = (_png if kind == "png" else _tiff)(work / f"c.{kind}", made["plain"], json.dumps(meta))
    before = _tree(home)
    code, err = _run(["--from", str(image), "--out", "mine.png"], work, capsys)
    assert code == 0, err
    assert _tree(home) == before  # nothing outside --out written or deleted
    assert sorted(p.name for p in work.iterdir()) == sorted([image.name, "mine.png"])
    assert np.array_equal(np.asarray(Image.open(work / "mine.png")), np.asarray(Image.open(made["plain"])))
    ignored = [line for line in err.splitlines() if "ignoring" in line]
    assert len(ignored) == 1  # said in one line
    for flag in ("--out", "--stats-json", "--preview", "--restart", "--keep-work", "--no-metadata", "--workers",
                 "--threads", "--seeds", "--outdir"):
        assert flag in ignored[0]
    assert read_metadata(work / "mine.png") is not None  # --no-metadata of the recipe: ignored too


def test_from_without_out_never_overwrites(tmp_path, made, capsys):
    (tmp_path / "igan.png").write_bytes(b"an earlier render")
    code, err = _run(["--from", str(made["plain"])], tmp_path, capsys)
    assert code == 0, err
    assert (tmp_path / "igan.png").read_bytes() == b"an earlier render"
    assert "-> igan-2.png" in err  # it says what it writes
    assert (tmp_path / "igan-2.png").read_bytes() == made["plain"].read_bytes()


@pytest.mark.slow
def test_a_recipe_never_restarts_the_users_unfinished_render(tmp_path, made, capsys):
    pano = tmp_path / "pano.png"
    args = ["--width", "192", "--height", "112", "--tile", "64", "--device", "cpu", "--quiet", "--out", str(pano)]
    env = dict(os.environ, IGAN_FAILPOINT="kill:before-output")  # every tile finished, no output yet
    proc = subprocess.run([sys.executable, "-m", "igan.engine.cli.render", *args], env=env, capture_output=True)
    assert proc.returncode == -9 and work_dir_for(pano).is_dir()
    work = _tree(work_dir_for(pano), skip=("lock",))  # the lease records who holds it last
    meta = copy.deepcopy(made["plain_meta"])
    meta["command"] += f" --out {pano} --restart"
    meta["request"] |= {"out": str(pano), "restart": True}
    image = _png(tmp_path / "c.png", made["plain"], json.dumps(meta))
    code, err = _run(["--from", str(image)], tmp_path, capsys)  # writes igan.png, leaves pano alone
    assert code == 0, err
    assert _tree(work_dir_for(pano), skip=("lock",)) == work and not pano.exists()
    code, err = _run(["--from", str(image), "--out", str(pano)], tmp_path, capsys)  # as a plain rerun: refused
    assert code == 1 and "--resume" in err, err
    assert _tree(work_dir_for(pano), skip=("lock",)) == work and not pano.exists()


def test_a_huge_recipe_asks_first(tmp_path, made, capsys, monkeypatch):
    meta = copy.deepcopy(made["plain_meta"])
    meta["request"]["window"] |= {"width": 1 << 20, "height": 1 << 20}
    meta["request"] |= {"width": 1 << 20, "height": 1 << 20}
    image = _png(tmp_path / "huge.png", made["plain"], json.dumps(meta))
    code, err = _run(["--from", str(image), "--out", "h.png"], tmp_path, capsys)
    assert code == 2 and "1048576x1048576" in err and "--yes" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.png"]
    # the size on the command line, or --yes, is the user's decision
    code, err = _run(["--from", str(image), "--width", "64", "--height", "32", "--out", "small.png"], tmp_path, capsys)
    assert code == 0, err
    calls = []
    monkeypatch.setattr(pipeline, "load_model", lambda request: None)
    monkeypatch.setattr(pipeline, "run", lambda request, model=None, **kw: calls.append(request))
    code, err = _run(["--from", str(image), "--yes", "--out", "y.png"], tmp_path, capsys)
    assert code == 0 and calls[0].width == calls[0].height == 1 << 20


def test_process_and_thread_counts_are_bounded_for_everyone(tmp_path, capsys, caplog):
    cpus = cpu_count()
    for flags, name in ((["--threads", str(cpus + 1)], "--threads"), (["--threads", "100000"], "--threads"),
                        (["--workers", str(cpus + 1)], "--workers")):
        code, err = _run(BASE + flags + ["--out", "x.png"], tmp_path, capsys)
        assert code == 2 and f"{name} " in err and f"{cpus} CPUs" in err, err
    with pytest.raises(Exception, match="threads 100000 is more than"):
        RenderRequest(threads=100000).validate()
    if cpus >= 2:  # one tile: one worker, however many were asked for
        code, err = _run(BASE + ["--workers", "2", "--out", "w.png"], tmp_path, capsys)
        assert code == 0 and "1 tile batch to render: 1 worker, not 2" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == (["w.png"] if cpus >= 2 else [])


MALFORMED = {
    "a JSON list": lambda m: json.dumps([m]),
    "request a string": lambda m: json.dumps(m | {"request": "seed 3"}),
    "no request": lambda m: json.dumps({k: v for k, v in m.items() if k != "request"}),
    "no window": lambda m: json.dumps(m | {"request": {k: v for k, v in m["request"].items() if k != "window"}}),
    "width a string": lambda m: json.dumps(m | {"request": m["request"] | {"window": m["request"]["window"] |
                                                                         {"width": "64"}}}),
    "a huge seed": lambda m: json.dumps(m | {"request": m["request"] | {"seed": 10**30}}),
    "a negative seed": lambda m: json.dumps(m | {"request": m["request"] | {"seed": -1}}),
    "trunc NaN": lambda m: json.dumps(m | {"request": m["request"] | {"trunc": float("nan")}}),
    "an unknown generator": lambda m: json.dumps(m | {"request": m["request"] | {"latent_rng": "\x1b[31mred"}}),
    "an unknown field": lambda m: json.dumps(m | {"request": m["request"] | {"exec": "rm -rf ~"}}),
    "a model that is no digest": lambda m: json.dumps(m | {"request": m["request"] | {"model": "../../etc/passwd"}}),
    "an external model": lambda m: json.dumps(m | {"request": m["request"] | {"model": "ab" * 32}}),
    "truncated JSON": lambda m: json.dumps(m)[:40],
    "a window past the canvas": lambda m: json.dumps(m | {"request": m["request"] | {"window": m["request"]["window"] |
                                                                                   {"x0": 1 << 40}}}),
}


@pytest.mark.parametrize("kind", ["png", "tif"])
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_recipe_is_one_line_and_exit_2(tmp_path, made, capsys, case, kind):
    text = MALFORMED[case](copy.deepcopy(made["plain_meta"]))
    image = (_png if kind == "png" else _tiff)(tmp_path / f"bad.{kind}", made["plain"], text)
    code, err = _run(["--from", str(image), "--out", "o.png"], tmp_path, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("igan-render: error: --from"), err
    assert "Traceback" not in err and "\x1b" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [image.name]


@pytest.mark.parametrize("command", [7, ["igan-render", "--out", "/x.png"], "igan-render --out 'x.png", None])
def test_the_recorded_command_is_never_obeyed(tmp_path, made, capsys, command):
    """The request is the recipe; the command beside it is only named when it asks for more."""
    image = _png(tmp_path / "c.png", made["plain"], json.dumps(made["plain_meta"] | {"command": command}))
    code, err = _run(["--from", str(image), "--out", "o.png", "--quiet"], tmp_path, capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "o.png"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), np.asarray(Image.open(made["plain"])))


def test_a_fused_recipe_keeps_its_styles_on_the_canvas(tmp_path, made, capsys):
    """Style centres are recorded in canvas pixels: the same file again, and a wider window
    keeps them where they were (its left part is the original)."""
    code, err = _run(["--from", str(made["fused"]), "--out", "again.png"], tmp_path, capsys)
    assert code == 0 and (tmp_path / "again.png").read_bytes() == made["fused"].read_bytes()
    meta = made["fused_meta"]["request"]
    assert meta["field"]["centers"] == [[0.3 * 96, -16 + 0.2 * 32], [0.9 * 96, -16 + 0.7 * 32]]
    rec = recipe.read(str(made["fused"]))
    opts = recipe.options(rec, {"width": 192})
    xs = [0 + fx * 192 for fx, _ in opts["style_centers"]]
    assert xs == [c[0] for c in meta["field"]["centers"]]


def test_the_schema_covers_every_pixel_field(made, tmp_path):
    """Every RenderRequest field that decides pixels is one a recipe sets or a file the user
    names; nothing a recipe sets is anything else."""
    rand = tmp_path / "random.png"
    assert render_main(BASE + ["--config", "tiny", "--random-weights", "--out", str(rand)]) == 0
    named_by_the_user = {"checkpoint", "model", "style_map"}
    reachable = set(named_by_the_user)
    for image in (made["plain"], made["fused"], rand):
        opts = recipe.options(recipe.read(str(image)), {})
        assert set(opts) - {"expect"} <= set(PIXEL_FIELDS)
        reachable |= set(opts) - {"expect"}
    assert reachable == set(PIXEL_FIELDS)
    assert set(PIXEL_FIELDS) <= set(RenderRequest.__dataclass_fields__)


# ---- the fuzz ---------------------------------------------------------------------------------
VALUES = [None, True, False, 0, -1, 1, 2**31, 2**63, -2**70, 10**400 // 10**300, 1e308, -0.0, 0.5, float("nan"),
          float("inf"), "", "x", "\x00\x1b[2J\r\n", "ü" * 300, "../" * 20 + "etc/passwd", "/tmp/out.png",
          "--out=/tmp/x.png", [], {}, [1, 2], [[1, 2]], {"a": 1}, "embedded:" + "0" * 64, "random:InfinityGAN:0"]


def _mutate(obj, rng: random.Random):
    """One random mutation somewhere in a JSON tree: a value replaced, a key deleted or added."""
    if isinstance(obj, dict) and obj and rng.random() < 0.7:
        key = rng.choice(sorted(obj))
        roll = rng.random()
        if roll < 0.15:
            del obj[key]
        elif roll < 0.25:
            obj[rng.choice(["out", "workers", "zz", "\x07", "restart", "field"])] = rng.choice(VALUES)
        elif roll < 0.6 and isinstance(obj[key], (dict, list)):
            obj[key] = _mutate(obj[key], rng)
        else:
            obj[key] = copy.deepcopy(rng.choice(VALUES))
        return obj
    if isinstance(obj, list) and obj and rng.random() < 0.7:
        i = rng.randrange(len(obj))
        obj[i] = _mutate(obj[i], rng) if isinstance(obj[i], (dict, list)) else copy.deepcopy(rng.choice(VALUES))
        return obj
    return copy.deepcopy(rng.choice(VALUES))


def test_fuzzed_recipes_never_traceback_write_elsewhere_or_delete(tmp_path, made, capsys, monkeypatch):
    """Random mutations of real recipes (types, truncation, unicode, control characters, huge
    numbers): exit 0 or 2, never a traceback; a render that goes ahead has the user's outputs,
    processes and work-directory flags, whatever the recipe said."""
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    renders = []
    monkeypatch.setattr(pipeline, "load_model", lambda request: None)
    monkeypatch.setattr(pipeline, "run", lambda request, model=None, **kw: renders.append(request))
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("the user's file")
    outcomes = {0: 0, 2: 0}
    for i in range(300):
        meta = copy.deepcopy(made["fused_meta" if i % 2 else "plain_meta"])
        for _ in range(rng.randint(1, 3)):
            meta = _mutate(meta, rng)
        text = json.dumps(meta, ensure_ascii=rng.random() < 0.5)
        if rng.random() < 0.1:
            text = text[:rng.randrange(len(text) + 1)]
        if rng.random() < 0.1:
            text = text.replace(",", "," + "\x1b\x00"[rng.randrange(2)], 1)
        maker, ext = (_png, "png") if i % 3 else (_tiff, "tif")
        image = maker(tmp_path / f"fuzz.{ext}", made["plain"], text)
        before = _tree(work)
        renders.clear()
        try:
            code, err = _run(["--from", str(image), "--out", "mine.png", "--quiet"], work, capsys)
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"seed {seed}, case {i}: {type(e).__name__}: {e}\nrecipe: {text[:500]!r}")
        assert code in (0, 2), f"seed {seed}, case {i}: exit {code}: {err}"
        assert "Traceback" not in err
        assert _tree(work) == before, f"seed {seed}, case {i}: wrote or deleted {text[:300]!r}"
        if code == 2:
            assert len([line for line in err.splitlines() if line.startswith("igan-render: error")]) == 1, err
        else:
            (request,) = renders
            assert request.out == "mine.png" and request.preview is None and request.stats_json is None
            assert request.workers is None and request.gpus is None and request.threads is None
            assert not (request.resume or request.restart or request.keep_work) and request.metadata
        outcomes[code] += 1
    assert outcomes[0] and outcomes[2], outcomes  # both kinds of recipe were met
