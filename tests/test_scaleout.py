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


# ---- torchrun: ranks pull their work, a lost rank costs a restart (issue 30) -----------------------
def _torchrun(out, *args, nproc=2, restarts=None, env=None):
    """The torchrun command line of a render of ARGS into `out` by `nproc` ranks."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
    if restarts is not None:
        cmd += ["--max-restarts", str(restarts)]
    return cmd + ["-m", "igan.engine.cli.render", *ARGS, *map(str, args), "--out", str(out)]


def _per_writer(out) -> dict[str, int]:
    """Tiles each writer of `out`'s kept work directory recorded ("rank1-e1-PID" -> count)."""
    logs = work_dir_for(out).glob("manifest/*.log")
    return {p.stem: sum(1 for line in p.read_text().splitlines() if line.startswith("tile ")) for p in logs}


def _kill_writer_after(proc, out, prefix: str, tiles: int) -> int | None:
    """SIGKILL the process whose manifest log starts with `prefix` (its PID ends the log's
    name) once it has recorded `tiles` tiles; its PID, or None if the run ended first."""
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        for log in work_dir_for(out).glob(f"manifest/{prefix}*.log"):
            if log.read_text().count("\n") >= tiles:
                pid = int(log.stem.rsplit("-", 1)[1])
                os.kill(pid, signal.SIGKILL)
                return pid
        time.sleep(0.02)
    return None


@pytest.mark.slow
def test_torchrun_a_slow_rank_takes_fewer_tiles(tmp_path, reference):
    """Three ranks claim batches from torchrun's store; rank 2, slowed by 3 s a tile, takes
    fewer than each of the others, and the file is the one-process file."""
    out = tmp_path / "slow.tif"
    env = dict(os.environ, IGAN_FAILPOINT="rank-delay:2:3")
    done = subprocess.run(_torchrun(out, "--keep-work", nproc=3), capture_output=True, text=True, timeout=600,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.read_bytes() == reference["tif"]
    ranks = {}
    for writer, n in _per_writer(out).items():
        ranks[writer.split("-")[0]] = ranks.get(writer.split("-")[0], 0) + n
    assert sum(ranks.values()) == 15 and set(ranks) <= {"rank0", "rank1", "rank2"}, ranks
    assert ranks.get("rank2", 0) < min(ranks["rank0"], ranks["rank1"]), ranks
    said = re.search(r"tiles rendered by each rank: (.*)", done.stderr).group(1)
    assert said == ", ".join(f"{k} {v}" for k, v in sorted(ranks.items())), said


@pytest.mark.slow
def test_torchrun_a_rank_that_starts_late_finds_the_work_directory(tmp_path, reference):
    """Rank 1 opens the work directory 8 s after rank 0 says go, when rank 0 has rendered every
    tile by itself: rank 0 waits for it to leave before the directory goes, and both exit 0."""
    out = tmp_path / "late.tif"
    env = dict(os.environ, IGAN_FAILPOINT="rank-late:1:8")
    done = subprocess.run(_torchrun(out), capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.read_bytes() == reference["tif"] and not work_dir_for(out).exists()


@pytest.mark.slow
def test_torchrun_a_killed_rank_costs_a_restart_not_the_render(tmp_path, reference):
    """The issue's repro: rank 1 SIGKILLed mid-render under --max-restarts; the restarted
    ranks resume the work directory by themselves and finish the one-process file."""
    out = tmp_path / "tr.tif"
    proc = subprocess.Popen(_torchrun(out, restarts=2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = _kill_writer_after(proc, out, "rank1-", 2)
    _, err = proc.communicate(timeout=600)
    if killed is None:
        pytest.skip("the render finished before rank 1 could be killed")
    assert proc.returncode == 0, err[-3000:]
    assert "torchrun restarted the ranks" in err and "resuming the render" in err
    assert out.read_bytes() == reference["tif"]
    assert not work_dir_for(out).exists()


@pytest.mark.slow
def test_torchrun_rank_0_killed_without_restarts_then_resume(tmp_path, reference):
    """Rank 0 (the work directory's owner) SIGKILLed and no restarts: the render fails with a
    message that says --resume finishes it, and a torchrun rerun with --resume does."""
    out = tmp_path / "r0.png"
    proc = subprocess.Popen(_torchrun(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = _kill_writer_after(proc, out, "rank0-", 2)
    _, err = proc.communicate(timeout=600)
    if killed is None:
        pytest.skip("the render finished before rank 0 could be killed")
    assert proc.returncode != 0 and not out.exists()
    assert "--resume to finish the render" in err, err[-3000:]
    again = subprocess.run(_torchrun(out, "--resume"), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert out.read_bytes() == reference["png"]
    assert not work_dir_for(out).exists()


@pytest.mark.slow
def test_torchrun_zarr_is_written_by_every_rank(tmp_path, reference):
    """A .zarr output is the tile array every rank wrote its own chunks into, renamed into
    place (nothing is assembled on rank 0)."""
    out = tmp_path / "t.zarr"
    done = subprocess.run(_torchrun(out, "--keep-work"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    writers = _per_writer(out)
    assert sorted(w.split("-")[0] for w in writers) == ["rank0", "rank1"] and all(writers.values()), writers
    png = tmp_path / "ref.png"
    png.write_bytes(reference["png"])
    assert np.array_equal(zarr.open_array(str(out), mode="r")[:], np.asarray(Image.open(png)))


@pytest.mark.slow
def test_a_worker_killed_gives_its_tiles_back(tmp_path, reference):
    """--workers: a worker SIGKILLed mid-render has its batches rendered by the other."""
    out = tmp_path / "w.png"
    proc = subprocess.Popen([sys.executable, "-m", "igan.engine.cli.render", *ARGS, "--workers", "2", "--out",
                             str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = _kill_writer_after(proc, out, "worker1-", 1)
    _, err = proc.communicate(timeout=600)
    if killed is None:
        pytest.skip("the render finished before worker 1 could be killed")
    assert proc.returncode == 0, err
    assert "go back in the queue" in err
    assert out.read_bytes() == reference["png"]


@pytest.fixture
def tcp_store(monkeypatch):
    """A store like torchrun's (hosted here), that distributed.connect finds as a rank does."""
    import torch.distributed as dist

    host = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(host.port))
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    return host


def test_ranks_claim_each_batch_once_and_a_missing_rank_is_named(tcp_store):
    """The protocol without torchrun: rank 0 waits for ranks that said hello with a beating
    heartbeat, within the timeout, naming the one that never came; claims never repeat."""
    from igan.engine import distributed

    a0 = distributed.Ranks(distributed.connect(0, 5), 0, 3, "k", 1.0)
    a1 = distributed.Ranks(distributed.connect(1, 5), 1, 3, "k", 1.0)
    try:
        with pytest.raises(distributed.RankLost, match=r"rank\(s\) 2 of 3 did not join the render within 1 s "
                                                       r"\(IGAN_RANK_TIMEOUT\)"):
            a0.gather()
        a2 = distributed.Ranks(distributed.connect(2, 5), 2, 3, "k", 1.0)
        a0.nonces = {0: a0.nonce}
        a0.gather()
        a0.publish("go", todo=[1, 4, 5], tiles=7)
        assert a1.join(7) == ("go", [1, 4, 5], "") and a2.join(7) == ("go", [1, 4, 5], "")
        claims = [r.claim() for r in (a0, a1, a2, a1, a0)]
        assert sorted(claims) == list(range(5))
        a2.close()  # rank 2's heartbeat stops before it leaves: rank 0 names it, after the timeout
        a1.leave()
        deadline = time.time() + 30
        while not a0.silent() and time.time() < deadline:
            time.sleep(0.2)
        assert [r for r, _ in a0.silent()] == [2] and a0.still_working() == [2]
    finally:
        for r in (a0, a1):
            r.close()


def test_a_rank_waits_for_rank_0_within_the_timeout(tcp_store):
    from igan.engine import distributed

    a1 = distributed.Ranks(distributed.connect(1, 5), 1, 2, "k2", 0.5)
    try:
        with pytest.raises(distributed.RankLost, match=r"rank 1: rank 0 did not start the render within 0.5 s"):
            a1.join(4)
    finally:
        a1.close()


def test_a_hello_left_by_an_earlier_attempt_is_not_taken(tcp_store):
    """A rank killed with the previous attempt left its hello; its heartbeat is dead, so rank 0
    waits for the new process of that rank instead of starting without it."""
    from igan.engine import distributed

    old = distributed.Ranks(distributed.connect(1, 5), 1, 2, "k3", 1.0)
    old.close()
    time.sleep(1.0)
    a0 = distributed.Ranks(distributed.connect(0, 5), 0, 2, "k3", 1.0)
    try:
        with pytest.raises(distributed.RankLost, match=r"rank\(s\) 1 of 2 did not join"):
            a0.gather()
    finally:
        a0.close()


def test_the_rank_timeout_must_be_a_positive_number(monkeypatch):
    from igan.engine import distributed
    from igan.engine.errors import RequestError

    monkeypatch.setenv("IGAN_RANK_TIMEOUT", "soon")
    with pytest.raises(RequestError, match="IGAN_RANK_TIMEOUT='soon' is not a positive number of seconds"):
        distributed.rank_timeout()
    monkeypatch.setenv("IGAN_RANK_TIMEOUT", "12.5")
    assert distributed.rank_timeout() == 12.5


def _scaling_model():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "scaling_model.py"
    spec = importlib.util.spec_from_file_location("scaling_model", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_the_scaling_model_names_what_stops_the_ranks():
    """benchmarks/scaling_model.py: ranks that only compute divide the time; a slow writer,
    a slow filesystem or too few batches for the ranks are named as the bottleneck."""
    sm = _scaling_model()
    free = sm.Figures("free", batch_s=1.0, tile=64, batch_tiles=1, writer_mps=float("inf"), put_s=0.0,
                      store_rtt_s=0.0, fs_mbps=float("inf"), startup_s=0.0)
    assert sm.simulate(free, 512, 512, 1).seconds == 64.0 and sm.simulate(free, 512, 512, 8).seconds == 8.0
    assert sm.simulate(free, 512, 512, 8).batches_per_rank == [8] * 8
    assert sm.bottleneck(free, 512, 512, 8) == "none (compute-bound)"
    assert sm.bottleneck(sm.replace(free, writer_mps=0.01), 512, 512, 8).startswith("writer")
    assert sm.bottleneck(sm.replace(free, fs_mbps=0.1), 512, 512, 8).startswith("filesystem")
    assert sm.bottleneck(free, 512, 512, 48).startswith("tail")  # 64 batches on 48 ranks: two rounds
    assert sm.bottleneck(sm.replace(free, cores=2), 512, 512, 3).startswith("cores")
