"""Scale-out and resume: several processes (and torchrun ranks) share one render, a killed
render resumes to the same bytes, disk-full keeps the finished tiles."""
import errno
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr
from PIL import Image

from igan.engine.cli.render import main
from igan.engine.store import TileStore, work_dir_for

# --bit-exact (--cpu-path reference): a path whose bytes do not depend on the process layout (as
# the default's do not; 0.4's fast path's last bits can follow the thread count, which oneDNN
# blocks its loops by; README, CPU paths). The default path's invariance: tests/test_cpu_paths.py
ARGS = ["--bit-exact", "--width", "300", "--height", "170", "--tile", "64", "--seed", "11", "--x0", "-30", "--quiet",
        "--device", "cpu"]


def _cli(*args, env=None, **kw):
    cmd = [sys.executable, "-m", "igan.engine.cli.render", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted single-process render, as PNG and TIFF bytes."""
    d = tmp_path_factory.mktemp("ref")
    out = {}
    for ext in ("png", "tif"):
        assert main([*ARGS, "--out", str(d / f"ref.{ext}")]) == 0
        out[ext] = (d / f"ref.{ext}").read_bytes()
    assert not list(d.glob(".*igan-work"))
    return out


@pytest.mark.slow
def test_worker_processes_give_the_same_bytes(tmp_path, reference):
    done = _cli(*ARGS, "--workers", "2", "--out", tmp_path / "w.png")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "w.png").read_bytes() == reference["png"]


@pytest.mark.slow
def test_torchrun_ranks_give_the_same_bytes(tmp_path, reference):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "igan.engine.cli.render", *ARGS, "--out", str(tmp_path / "t.tif")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "t.tif").read_bytes() == reference["tif"]
    manifests = list(work_dir_for(tmp_path / "t.tif").glob("manifest/*"))
    assert not manifests  # the work directory is gone once the output exists


def test_zarr_output_is_the_image(tmp_path, reference):
    assert main([*ARGS, "--out", str(tmp_path / "z.zarr")]) == 0
    png = tmp_path / "ref.png"
    png.write_bytes(reference["png"])
    assert np.array_equal(zarr.open_array(str(tmp_path / "z.zarr"), mode="r")[:], np.asarray(Image.open(png)))


@pytest.mark.slow
def test_a_worker_that_dies_gives_its_tiles_back(tmp_path, reference):
    env = dict(os.environ, IGAN_FAILPOINT="worker-exit:0:1")  # worker 0 exits in its second batch
    done = _cli(*ARGS, "--workers", "2", "--out", tmp_path / "w.png", env=env)
    assert done.returncode == 0, done.stderr
    assert "go back in the queue" in done.stderr
    assert (tmp_path / "w.png").read_bytes() == reference["png"]


def _manifest_count(out):
    root = work_dir_for(out)
    try:
        return len(TileStore.open(root).done())
    except Exception:
        return 0


@pytest.mark.parametrize("kill_after_tiles", [0, 3, 11])
@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_file(tmp_path, reference, kill_after_tiles):
    out = tmp_path / "k.png"
    proc = subprocess.Popen([sys.executable, "-m", "igan.engine.cli.render", *ARGS, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while _manifest_count(out) < kill_after_tiles and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if proc.returncode == 0:
        pytest.skip("the render finished before it could be killed")
    assert not out.exists()
    if work_dir_for(out).exists():
        again = _cli(*ARGS, "--out", out)
        assert again.returncode != 0 and "--resume" in again.stderr and not out.exists()
    resumed = _cli(*ARGS, "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert out.read_bytes() == reference["png"]
    assert not work_dir_for(out).exists()


@pytest.mark.slow
def test_resume_refuses_a_different_request(tmp_path):
    out = tmp_path / "r.png"
    assert main([*ARGS, "--out", str(out), "--keep-work"]) == 0
    out.unlink()
    done = _cli(*[a if a != "11" else "12" for a in ARGS], "--out", out, "--resume")
    assert done.returncode != 0 and "different render" in done.stderr and "seed: was 11, now 12" in done.stderr


def test_disk_full_keeps_finished_tiles_and_resume_works(tmp_path, reference, monkeypatch, capsys):
    """ENOSPC injected into the tile store's file writes after a few tiles, then into the
    final file's writes: each time a clear error, no output, and a working --resume."""
    import zarr.storage._local as local

    real_put = local._put
    calls = {"n": 0}

    def full_after_five(path, value, exclusive=False):
        if "/c/" in str(path):
            calls["n"] += 1
            if calls["n"] > 5:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_put(path, value, exclusive)

    out = tmp_path / "d.png"
    monkeypatch.setattr(local, "_put", full_after_five)
    assert main([*ARGS, "--out", str(out)]) != 0
    err = capsys.readouterr().err
    assert "disk full while storing tile" in err and "No space left" in err
    assert "5 of 15 tiles are finished and kept" in err and "--resume" in err
    assert not out.exists()
    monkeypatch.setattr(local, "_put", real_put)

    from igan.engine import sinks
    real_write = sinks._RawFile.write
    monkeypatch.setattr(sinks._RawFile, "write", lambda self, data: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device")))
    assert main([*ARGS, "--out", str(out), "--resume"]) != 0
    err = capsys.readouterr().err
    assert "disk full while writing" in err and re.search(r"\d+ of 15 tiles are finished and kept", err)
    assert not out.exists()
    monkeypatch.setattr(sinks._RawFile, "write", real_write)
    assert main([*ARGS, "--out", str(out), "--resume"]) == 0
    assert out.read_bytes() == reference["png"]


_WRITER = """
import sys, numpy as np
from igan.engine.store import TileStore
store = TileStore.open(sys.argv[1]); store.writer("w" + sys.argv[2])
rng = np.random.default_rng(int(sys.argv[2]))
for rep in range(50):
    for i in rng.permutation(12):
        y, x = divmod(int(i), 4)
        tile = np.full((40, 50, 3), (i * 7 + int(sys.argv[2])) % 251, np.uint8)  # writer-specific value
        store.put(int(i), y * 40, x * 50, tile[: min(40, 110 - y * 40), : min(50, 190 - x * 50)])
"""


@pytest.mark.slow
def test_concurrent_writers_never_corrupt_a_chunk(tmp_path):
    """Four processes write the same tiles of one store over and over; two are killed
    mid-write. Every chunk then decodes to a whole tile one writer wrote, never a mix."""
    root = tmp_path / "work"
    TileStore.create(root, {"width": 190, "height": 110, "tile_height": 40, "tile_width": 50}).close()
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(root), str(k)]) for k in range(4)]
    time.sleep(1.5)
    for p in procs[:2]:
        p.send_signal(signal.SIGKILL)
    for p in procs:
        p.wait(timeout=300)
    image = zarr.open_array(str(root / "tiles.zarr"), mode="r")[:]
    for i in range(12):
        y, x = divmod(i, 4)
        block = image[y * 40:(y + 1) * 40, x * 50:(x + 1) * 50]
        assert len(np.unique(block)) == 1, i  # one writer's whole tile
        assert int(block.flat[0]) in {(i * 7 + k) % 251 for k in range(4)}
    assert TileStore.open(root).done() == set(range(12))


def test_gpus_beyond_the_machine_are_refused(capsys, tmp_path):
    import torch

    n = torch.cuda.device_count() + 1
    assert main(["--gpus", str(n), "--out", str(tmp_path / "g.png"), "--quiet"]) != 0
    assert f"--gpus {n} asked for {n} GPUs but this machine has {n - 1}" in capsys.readouterr().err
