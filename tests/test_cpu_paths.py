"""The torch backend's CPU paths (--cpu-path, provenance.CPU_PATHS), through igan-render.

The default, "exact" (engine/exactcpu.py), promises the same bytes for a window under any split
of the work: --tile, --batch, --threads, --workers, a window inside a larger render (at any
offset), a resume under another split. Those promises are checked here on the embedded model
and on the InfinityGAN config (random weights: its wide layers take exactcpu's Winograd convs),
always by comparing renders with each other (this path's bytes have no recorded hash). The other
paths: "reference" (igan 0.2's, also spelled --bit-exact) and "fast-0.4" (igan 0.3-0.4's
default, tests/test_fastcpu.py), each recorded in the files it makes so that --from and
--resume take it again, and files of earlier versions render again on theirs.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import igan
from igan.engine.cli.render import main as render_main
from igan.engine.errors import RequestError
from igan.engine.provenance import CPU_PATH_RECORDED, CPU_PATHS, DEFAULT_CPU_PATH, read_metadata
from igan.engine.request import RenderRequest, cpu_count
from igan.engine.store import TileStore, work_dir_for
from conftest import recorded_hash

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["--device", "cpu", "--quiet", "--tile", "64"]
# Each model's window (x0, y0 multiples of 16; --seed away from 0) and its sub-windows: one at
# an offset of whole 16-pixel cells, one at an offset that is not, each cut into tiles of its own.
MODELS = {
    "embedded": dict(args=[], window=(-48, -80, 320, 160), subs=[(16, -48, 160, 96), (-11, -59, 150, 91)]),
    "InfinityGAN": dict(args=["--config", "InfinityGAN", "--random-weights"], window=(-48, -48, 192, 96),
                        subs=[(-16, -32, 128, 64), (-35, -29, 101, 53)]),
}


def _window_args(window) -> list[str]:
    x0, y0, w, h = window
    return ["--x0", str(x0), "--y0", str(y0), "--width", str(w), "--height", str(h), "--seed", "5"]


def _args(name: str, window=None) -> list[str]:
    m = MODELS[name]
    return m["args"] + _window_args(window or m["window"]) + COMMON


def _render(argv, *, torch_threads: int | None = None) -> None:
    """igan-render in this process; torch's thread count (which --threads sets for the process)
    put back afterwards. `torch_threads`: run with that many threads without --threads."""
    before = torch.get_num_threads()
    try:
        if torch_threads:
            torch.set_num_threads(torch_threads)
        assert render_main([str(a) for a in argv]) == 0
    finally:
        torch.set_num_threads(before)


def _cli(*args, env=None, timeout=300):
    """igan-render in a process of its own (worker processes, kills)."""
    return subprocess.run([sys.executable, "-m", "igan.engine.cli.render", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def _pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module", autouse=True)
def one_model_load():
    """Each model loaded once for this module's in-process renders (building InfinityGAN's
    random weights takes seconds); processes of their own load theirs."""
    from igan.engine import pipeline

    cache = {}
    load = pipeline.load_model

    def cached(request):
        key = (request.checkpoint, request.config, request.random_weights, request.model, request.backend)
        if key not in cache:
            cache[key] = load(request)
        return cache[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "load_model", cached)
        yield


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Per model: the default path's render of its window in tiles of 64, one at a time, with
    torch's threads (the split every other render is compared with), as file bytes."""
    d = tmp_path_factory.mktemp("cpu-paths")
    out = {}
    for name in MODELS:
        path = d / f"{name}.png"
        _render(_args(name) + ["--out", path])
        out[name] = path.read_bytes()
    return out


# (id, extra igan-render options, torch threads without --threads, in a process of its own)
SPLITS = [
    ("tile-256", ["--tile", "256"], None, False),  # one tile: the whole window in one forward
    ("tile-48", ["--tile", "48"], None, False),
    ("batch-3", ["--batch", "3"], None, False),
    ("threads-1", ["--threads", "1"], None, False),
    ("threads-2", ["--threads", "2"], None, False),
    ("threads-3", [], 3, False),  # more threads than a 2-core machine has: --threads would refuse it
    ("workers-1", ["--workers", "1"], None, True),
    ("workers-2", ["--workers", "2"], None, True),
]
# InfinityGAN in worker processes costs a model build per process: one worker count is enough there
_CASES = [pytest.param(name, split, id=f"{split[0]}-{name}") for split in SPLITS for name in MODELS
          if not (name == "InfinityGAN" and split[0] == "workers-1")]


@pytest.mark.parametrize("name,split", _CASES)
def test_the_default_path_gives_the_same_bytes_under_any_split(tmp_path, reference, name, split):
    label, extra, threads, process = split
    needs = max([int(extra[extra.index(f) + 1]) for f in ("--threads", "--workers") if f in extra], default=1)
    if needs > cpu_count():
        pytest.skip(f"{label}: this machine has {cpu_count()} CPUs")
    out = tmp_path / "split.png"
    if process:
        done = _cli(*_args(name), *extra, "--out", out)
        assert done.returncode == 0, done.stderr[-3000:]
    else:
        _render(_args(name) + extra + ["--out", out], torch_threads=threads)
    assert out.read_bytes() == reference[name], f"{name}: {label} changed the bytes"


@pytest.mark.slow
def test_torchrun_ranks_give_the_same_bytes(tmp_path, reference):
    """Two torchrun ranks share the tiles (torchrun gives each one thread: OMP_NUM_THREADS=1)."""
    out = tmp_path / "t.png"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "igan.engine.cli.render", *_args("embedded"), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.read_bytes() == reference["embedded"]


@pytest.mark.parametrize("name", MODELS)
def test_a_window_is_the_same_region_of_a_larger_render(tmp_path, reference, name):
    """Sub-windows at offsets of whole 16-pixel cells and at others, each tiled from its own
    corner: the pixels of the larger render, exactly."""
    big = tmp_path / "big.png"
    big.write_bytes(reference[name])
    whole = _pixels(big)
    bx, by = MODELS[name]["window"][:2]
    for x0, y0, w, h in MODELS[name]["subs"]:
        out = tmp_path / f"sub{x0}_{y0}.png"
        _render(_args(name, (x0, y0, w, h)) + ["--out", out])
        np.testing.assert_array_equal(_pixels(out), whole[y0 - by:y0 - by + h, x0 - bx:x0 - bx + w],
                                      err_msg=f"{name}: window {(x0, y0, w, h)}")


def _done_tiles(out) -> int:
    try:
        return len(TileStore.open(work_dir_for(out)).done())
    except Exception:  # noqa: BLE001  (not created yet, or being written)
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("resume", [["--threads", "1", "--batch", "3"], ["--workers", "2"]],
                         ids=["threads-1-batch-3", "workers-2"])
def test_a_render_resumed_under_another_split_gives_the_same_file(tmp_path, reference, resume):
    """A render killed after a few tiles (all threads, one tile per forward) and resumed under
    another split: the reference's bytes. Resuming it on another path is refused (its tiles
    were computed on this one)."""
    if "--workers" in resume and cpu_count() < 2:
        pytest.skip("one CPU")
    out = tmp_path / "k.png"
    env = dict(os.environ, IGAN_FAILPOINT="tile-delay:0.3")
    proc = subprocess.Popen([sys.executable, "-m", "igan.engine.cli.render", *_args("embedded"), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while _done_tiles(out) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if proc.returncode == 0:
        pytest.skip("the render finished before it could be killed")
    done = _done_tiles(out)
    assert 3 <= done < 15 and not out.exists()
    other = _cli(*_args("embedded"), "--cpu-path", "fast-0.4", "--out", out, "--resume")
    assert other.returncode != 0 and "different render" in other.stderr and "path" in other.stderr
    assert "started on the exact CPU path: give --cpu-path exact to finish it" in other.stderr
    assert _done_tiles(out) == done  # refused before anything was rendered or discarded
    if "--workers" in resume:
        resumed = _cli(*_args("embedded"), *resume, "--out", out, "--resume")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
    else:
        _render(_args("embedded") + resume + ["--out", out, "--resume"])
    assert out.read_bytes() == reference["embedded"]
    assert not work_dir_for(out).exists()


# ---- the paths, recorded and taken again ------------------------------------------------------
SMALL = ["--width", "96", "--height", "64", "--seed", "3", "--device", "cpu", "--quiet"]


def _as_written_by(image: Path, out: Path, command: str) -> Path:
    """`image` with the recorded command replaced (as an earlier igan spelled it)."""
    meta = read_metadata(image)
    info = PngInfo()
    info.add_text("Comment", command)
    info.add_text("igan", json.dumps(meta | {"command": command}))
    with Image.open(image) as im:
        im.save(out, pnginfo=info)
    return out


@pytest.mark.parametrize("path", CPU_PATHS)
def test_each_path_is_recorded_and_from_renders_it_again(tmp_path, path):
    """A file records its path (in the word of the version that introduced it) and the command
    that makes it again; --from takes the path from it: the same bytes. A file as igan 0.2 (
    --bit-exact) or 0.3-0.4 (no flag: their default) wrote it renders again on its path too."""
    out = tmp_path / f"{path}.png"
    _render(SMALL + ["--cpu-path", path, "--out", out])
    meta = read_metadata(out)
    assert meta["request"]["path"] == CPU_PATH_RECORDED[path]
    argv = shlex.split(meta["command"])
    assert ("--cpu-path" in argv) == (path != DEFAULT_CPU_PATH) and "--bit-exact" not in argv
    if path != DEFAULT_CPU_PATH:
        assert argv[argv.index("--cpu-path") + 1] == path
    again = tmp_path / f"{path}-again.png"
    _render(["--from", out, "--out", again, "--quiet"])
    assert again.read_bytes() == out.read_bytes()
    if path != DEFAULT_CPU_PATH:  # the spelling of the version whose default (0.3-0.4) or only path (0.2) it was
        old_argv = argv[:argv.index("--cpu-path")] + argv[argv.index("--cpu-path") + 2:]
        old = _as_written_by(out, tmp_path / "old.png",
                             shlex.join(old_argv + (["--bit-exact"] if path == "reference" else [])))
        from_old = tmp_path / "from-old.png"
        _render(["--from", old, "--out", from_old, "--quiet"])
        assert from_old.read_bytes() == out.read_bytes()
    # the Python API on the same path: the same pixels
    model = igan.load(device="cpu", cpu_path=path)
    assert model._runner.path == path
    np.testing.assert_array_equal(model.render(96, 64, seed=3, array=True), _pixels(out))


def test_bit_exact_is_the_reference_path(tmp_path):
    """--bit-exact (igan 0.2-0.4's spelling) renders --cpu-path reference's bytes, metadata
    included; with --from it overrides the recipe's path as --cpu-path would."""
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    _render(SMALL + ["--bit-exact", "--out", a])
    _render(SMALL + ["--cpu-path", "reference", "--out", b])
    assert a.read_bytes() == b.read_bytes()
    default, again = tmp_path / "default.png", tmp_path / "again.png"
    _render(SMALL + ["--out", default])
    _render(["--from", default, "--bit-exact", "--out", again, "--quiet"])
    assert again.read_bytes() == b.read_bytes()
    assert igan.load(device="cpu", bit_exact=True)._runner.path == "reference"


def test_the_request_resolves_bit_exact_into_cpu_path():
    """bit_exact is read once and cleared: cpu_path alone says which path renders, so replace()
    can change it, and command() never writes --bit-exact."""
    r = RenderRequest(bit_exact=True)
    assert (r.cpu_path, r.bit_exact) == ("reference", False)
    assert r.replace(cpu_path="exact").cpu_path == "exact"
    assert "--cpu-path reference" in r.command() and "--bit-exact" not in r.command()
    assert RenderRequest(bit_exact=True, cpu_path="reference").cpu_path == "reference"
    assert "--cpu-path" not in RenderRequest().command()
    with pytest.raises(RequestError, match="bit_exact is cpu_path reference: it excludes cpu_path fast-0.4"):
        RenderRequest(bit_exact=True, cpu_path="fast-0.4")
    with pytest.raises(RequestError, match="cpu_path must be one of exact, reference, fast-0.4, got 'fast'"):
        RenderRequest(cpu_path="fast").validate()


def _refused(argv, capsys) -> str:
    """igan-render's stderr for a command line it refuses as a usage error (exit status 2)."""
    with pytest.raises(SystemExit) as e:
        render_main([str(a) for a in argv])
    assert e.value.code == 2
    return capsys.readouterr().err


def test_bit_exact_with_another_path_is_refused(tmp_path, capsys):
    err = _refused(SMALL + ["--bit-exact", "--cpu-path", "fast-0.4", "--out", tmp_path / "x.png"], capsys)
    assert "--bit-exact is --cpu-path reference: it excludes --cpu-path fast-0.4" in err
    with pytest.raises(RequestError, match="bit_exact is cpu_path reference: it excludes cpu_path fast-0.4"):
        igan.load(device="cpu", cpu_path="fast-0.4", bit_exact=True)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("backend", ["onnx", "triton"])
@pytest.mark.parametrize("path", [p for p in CPU_PATHS if p != DEFAULT_CPU_PATH])
def test_a_path_is_the_torch_backends_only(tmp_path, capsys, backend, path):
    """--cpu-path (and --bit-exact) name paths of the torch backend: another backend refuses
    them, naming the option, before anything loads."""
    from igan.engine import sources

    extra = ["--model", str(tmp_path)] if backend == "onnx" else []
    for flags in (["--cpu-path", path], ["--bit-exact"] if path == "reference" else None):
        if flags is None:
            continue
        err = _refused(SMALL + ["--backend", backend, *extra, *flags, "--out", tmp_path / "x.png"], capsys)
        assert f"--cpu-path {path} is a path of the torch backend; --backend {backend}" in err, err
    with pytest.raises(RequestError, match=f"cpu_path {path} is a path of the torch backend; the {backend} backend"):
        sources.make_runner(backend, None, "cpu", "fp32", path)
    assert not (tmp_path / "x.png").exists()


def test_the_default_path_is_within_float32_rounding_of_the_reference(tmp_path):
    """The three paths compute the same layers: the default's pixels are those of the
    reference path but for float32 rounding (at most one 8-bit level, on a few pixels)."""
    from igan.engine.embedded import embedded_model
    from igan.engine.latent import LatentField
    from igan.engine.planner import Window, plan
    from igan.engine.renderer import Renderer
    from igan.engine.runner import TorchRunner

    model = embedded_model()
    field = LatentField(model.config, seed=3)
    p = plan(model.config, Window(-40, -48, 160, 96), tile=64)
    ref = Renderer(TorchRunner(model, "cpu", cpu_path="reference")).render_array(field, p)
    scale = max(1.0, float(np.abs(ref).max()))
    for path in ("exact", "fast-0.4"):
        out = Renderer(TorchRunner(model, "cpu", cpu_path=path)).render_array(field, p)
        assert np.abs(out - ref).max() < 1e-5 * scale, path


@pytest.mark.skipif(cpu_count() < 2, reason="recorded with 2 threads")
def test_fast_0_4_renders_the_bytes_igan_0_3_recorded(tmp_path):
    """--cpu-path fast-0.4 is the default path of igan 0.3-0.4, byte for byte: the README's
    sample with the default model of 0.3 (landscapes-v1), without metadata, as
    benchmarks/output_hashes.py recorded it from 0.3 (with 2 threads: this path's bytes follow
    the thread count)."""
    want = recorded_hash("output-hashes-0.3.json", "readme-default-sample")
    out = tmp_path / "s.png"
    _render(["--width", "1024", "--height", "256", "--seed", "1", "--device", "cpu", "--quiet", "--threads", "2",
             "--checkpoint", "builtin:landscapes-v1", "--cpu-path", "fast-0.4", "--no-metadata", "--out", out])
    assert hashlib.sha256(out.read_bytes()).hexdigest() == want
