"""The work directory never loses or corrupts a user's data: one live render per output (an
OS lease), igan deletes only what it created, temporaries live in the work directory,
finished renders are recognised, options are checked before anything is created, workers
die with their parent, and a real full disk keeps the finished tiles."""
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from igan.engine.cli.render import main
from igan.engine.store import FINISHED, MARKER, StoreError, TileStore, work_dir_for

ARGS = ["--width", "192", "--height", "112", "--tile", "64", "--seed", "5", "--x0", "-20", "--quiet",
        "--device", "cpu"]  # 6 tiles
TILES = 6


def _cli(*args, env=None, timeout=300):
    cmd = [sys.executable, "-m", "igan.engine.cli.render", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def _popen(*args, failpoint=None, **kw):
    env = dict(os.environ, IGAN_FAILPOINT=failpoint) if failpoint else None
    return subprocess.Popen([sys.executable, "-m", "igan.engine.cli.render", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _done(out) -> int:
    try:
        return len(TileStore.open(work_dir_for(out)).done())
    except (StoreError, OSError):
        return 0


def _wait_tiles(proc, out, n, timeout=120):
    deadline = time.time() + timeout
    while _done(out) < n:
        assert proc.poll() is None, f"the render ended before {n} tiles: {proc.communicate()[1][-2000:]}"
        assert time.time() < deadline, "no progress"
        time.sleep(0.05)


def _same(out: Path, reference: dict) -> bool:
    if out.suffix == ".zarr":
        return np.array_equal(zarr.open_array(str(out), mode="r")[:], reference["zarr"])
    return out.read_bytes() == reference[out.suffix[1:]]


def _litter(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    ref = {}
    for ext in ("png", "tif", "zarr"):
        assert main([*ARGS, "--out", str(d / f"ref.{ext}")]) == 0
        ref[ext] = (zarr.open_array(str(d / "ref.zarr"), mode="r")[:] if ext == "zarr"
                    else (d / f"ref.{ext}").read_bytes())
    return ref


# ---- one live render per output ---------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("ext", ["png", "zarr"])
def test_a_second_render_of_a_live_output_is_refused_naming_the_owner(tmp_path, reference, ext):
    out = tmp_path / f"img.{ext}"
    owner = _popen(*ARGS, "--out", out, failpoint="tile-delay:3")
    _wait_tiles(owner, out, 1)
    others = [_popen(*ARGS, "--out", out, *flag) for flag in ([], ["--resume"], ["--restart"])]
    for other in others:
        _, err = other.communicate(timeout=300)
        assert other.returncode != 0, err
        assert f"PID {owner.pid}" in err and "Traceback" not in err, err
        assert "tiles are finished and kept" not in err  # the refused process touched nothing
    assert owner.poll() is None, "the test needs the owner alive while the others try"
    _, err = owner.communicate(timeout=300)
    assert owner.returncode == 0, err
    assert _same(out, reference) and _litter(tmp_path, set()) == [out.name]


@pytest.mark.parametrize("flag", ["--resume", "--restart"])
@pytest.mark.slow
def test_a_killed_owner_never_blocks_resume_or_restart(tmp_path, reference, flag):
    out = tmp_path / "k.png"
    proc = _popen(*ARGS, "--out", out, failpoint="kill:before-output")
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    assert main([*ARGS, "--out", str(out), flag]) == 0
    assert _same(out, reference) and _litter(tmp_path, set()) == [out.name]


# ---- igan deletes only what it created -----------------------------------------------------------
@pytest.mark.parametrize("flags", [[], ["--resume"], ["--restart"]])
def test_a_foreign_folder_with_the_work_dir_name_is_never_deleted(tmp_path, capsys, flags):
    out = tmp_path / "x.png"
    photos = work_dir_for(out) / "photos"
    photos.mkdir(parents=True)
    (photos / "holiday.jpg").write_bytes(b"precious")
    assert main([*ARGS, "--out", str(out), *flags]) != 0
    err = capsys.readouterr().err
    assert str(work_dir_for(out).name) in err and "did not create it" in err and MARKER in err
    assert (photos / "holiday.jpg").read_bytes() == b"precious" and not out.exists()


def test_a_stale_work_dir_after_an_early_error_is_removed(tmp_path, capsys, monkeypatch):
    from igan.engine.renderer import Renderer

    def broken(self, *a, **kw):
        raise RuntimeError("injected: the device fell over before the first tile")
        yield

    monkeypatch.setattr(Renderer, "pixels", broken)
    out = tmp_path / "e.tif"
    assert main([*ARGS, "--out", str(out)]) == 1
    assert "injected" in capsys.readouterr().err
    assert _litter(tmp_path, set()) == []  # no work dir (nothing was finished), no temporaries


# ---- options and paths before anything is created -------------------------------------------------
@pytest.mark.parametrize("name,flags,message", [
    ("x.png", ["--compression", "11"], "got 11"),
    ("x.tif", ["--compression", "lzw"], "got 'lzw'"),
    ("x.zarr", ["--preview"], "--preview is not available for .zarr"),
    ("adir.png", [], "is a directory"),
    ("x.png", ["--preview", "PREVIEW_DIR"], "is a directory"),
])
def test_bad_options_are_refused_before_the_work_dir_exists(tmp_path, capsys, name, flags, message):
    (tmp_path / "adir.png").mkdir()
    (tmp_path / "PREVIEW_DIR").mkdir()
    flags = [str(tmp_path / f) if f == "PREVIEW_DIR" else f for f in flags]
    assert main([*ARGS, "--out", str(tmp_path / name), *flags]) != 0
    err = capsys.readouterr().err
    assert message in err and "--resume" not in err and "Traceback" not in err
    assert _litter(tmp_path, {"adir.png", "PREVIEW_DIR"}) == []


def test_rerunning_a_finished_zarr_is_refused_before_anything(tmp_path, capsys, reference):
    out = tmp_path / "z.zarr"
    assert main([*ARGS, "--out", str(out)]) == 0
    assert main([*ARGS, "--out", str(out)]) != 0
    err = capsys.readouterr().err
    assert "already exists" in err and "--resume" not in err
    assert _litter(tmp_path, set()) == ["z.zarr"] and _same(out, reference)
    # --resume of a finished store (the kill came after the work dir was removed) has nothing to do;
    # a store of another request is still refused
    assert main([*ARGS, "--out", str(out), "--resume"]) == 0
    assert "already finished" in capsys.readouterr().err
    other = list(ARGS)
    other[ARGS.index("--seed") + 1] = "6"
    assert main([*other, "--out", str(out), "--resume"]) != 0
    assert "already exists" in capsys.readouterr().err
    assert _litter(tmp_path, set()) == ["z.zarr"] and _same(out, reference)


@pytest.mark.parametrize("inputs,outputs", [
    ({"--checkpoint": "m.tif"}, {"--out": "m.tif"}),
    ({"--checkpoint": "m.tif"}, {"--out": "a.png", "--preview": "sub/../m.tif"}),
    ({}, {"--out": "a.png", "--preview": "a.png"}),
    ({}, {"--out": "a.png", "--stats-json": "a.png"}),
    ({"--checkpoint": "m.tif"}, {"--out": "a.png", "--stats-json": "sub/../m.tif"}),
    ({"--style-map": "m.tif"}, {"--out": "m.tif"}),
])
def test_render_outputs_never_overwrite_inputs_or_each_other(tmp_path, capsys, inputs, outputs):
    (tmp_path / "sub").mkdir()
    (tmp_path / "m.tif").write_bytes(b"the user's weights")
    argv = [a for k, v in {**inputs, **outputs}.items() for a in (k, str(tmp_path / v))]
    if "--style-map" in inputs:
        argv += ["--styles", "1"]
    assert main([*ARGS, *argv]) != 0
    err = capsys.readouterr().err
    clash = [k for k in outputs if list(outputs.values()).count(outputs[k]) > 1 or
             os.path.normpath(tmp_path / outputs[k]) in [os.path.normpath(tmp_path / v) for v in inputs.values()]]
    assert clash and all(k in err for k in clash) and "Traceback" not in err, err
    assert (tmp_path / "m.tif").read_bytes() == b"the user's weights"
    assert _litter(tmp_path, {"sub", "m.tif"}) == []


# ---- kills: temporaries stay in the work directory, finished renders are recognised ---------------------
@pytest.mark.slow
@pytest.mark.parametrize("ext,workers,target", [("tif", 1, "main"), ("zarr", 2, "group"), ("png", 2, "main")])
def test_sigkill_and_resume_leaves_only_the_output(tmp_path, reference, ext, workers, target):
    out = tmp_path / f"k.{ext}"
    extra = ["--workers", str(workers)] if workers > 1 else []
    proc = _popen(*ARGS, *extra, "--out", out, failpoint="tile-delay:0.5", start_new_session=True)
    _wait_tiles(proc, out, 2)
    children = _children(proc.pid)
    if target == "group":
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)  # returns once every holder of its pipes (workers too) is gone
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    # a child closes its pipes early in its exit, a moment before the kernel marks it dead
    deadline = time.time() + 10
    while any(_alive(c) for c in children) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(_alive(c) for c in children), "orphaned workers kept running"
    assert _litter(tmp_path, set()) == [work_dir_for(out).name]  # no temporaries beside the output
    resumed = _cli(*ARGS, *extra, "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert _same(out, reference) and _litter(tmp_path, set()) == [out.name]


@pytest.mark.parametrize("ext", ["png", "tif"])
@pytest.mark.slow
def test_a_kill_during_the_final_write_leaves_the_temporaries_in_the_work_dir(tmp_path, reference, ext):
    out = tmp_path / f"f.{ext}"
    proc = _popen(*ARGS, "--out", out, "--preview", failpoint="kill:before-output")
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert _litter(tmp_path, set()) == [work_dir_for(out).name]
    temps = list((work_dir_for(out) / "tmp").iterdir())
    assert temps  # the encoded file (and TIFF levels, the preview) were there when it died
    assert main([*ARGS, "--out", str(out), "--preview", "--resume"]) == 0
    assert _same(out, reference) and _litter(tmp_path, set()) == sorted([out.name, "f.preview.png"])


@pytest.mark.slow
def test_a_zarr_killed_after_its_move_is_recognised_as_finished(tmp_path, capsys, reference):
    out = tmp_path / "z.zarr"
    proc = _popen(*ARGS, "--out", out, failpoint="kill:after-output")
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL and out.is_dir() and work_dir_for(out).is_dir()
    assert main([*ARGS, "--out", str(out)]) != 0
    assert "is a finished render" in capsys.readouterr().err
    assert main([*ARGS, "--out", str(out), "--resume"]) == 0
    assert "already finished" in capsys.readouterr().err
    assert _same(out, reference) and _litter(tmp_path, set()) == ["z.zarr"]


def test_keep_work_then_resume_a_finished_zarr(tmp_path, capsys, reference):
    out = tmp_path / "z.zarr"
    assert main([*ARGS, "--out", str(out), "--keep-work"]) == 0
    assert (work_dir_for(out) / FINISHED).is_file()
    assert main([*ARGS, "--out", str(out), "--resume", "--keep-work"]) == 0
    assert "already finished" in capsys.readouterr().err and work_dir_for(out).is_dir()
    assert main([*ARGS, "--out", str(out), "--restart"]) != 0  # --restart keeps refusing to replace a Zarr store
    assert "already exists" in capsys.readouterr().err
    assert _same(out, reference)


@pytest.mark.slow
def test_a_finished_file_whose_work_dir_survived_a_kill(tmp_path, capsys, reference):
    out = tmp_path / "p.png"
    proc = _popen(*ARGS, "--out", out, failpoint="kill:after-finished")
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL and _same(out, reference)
    assert main([*ARGS, "--out", str(out)]) != 0
    assert "is a finished render" in capsys.readouterr().err
    assert main([*ARGS, "--out", str(out), "--resume"]) == 0
    assert _same(out, reference) and _litter(tmp_path, set()) == ["p.png"]


# ---- a tile that cannot be read back -------------------------------------------------------------------
@pytest.mark.slow
def test_a_recorded_tile_without_data_is_rendered_again_never_zeros(tmp_path, capsys, reference):
    out = tmp_path / "m.png"
    proc = _popen(*ARGS, "--out", out, failpoint="kill:before-output")
    proc.communicate(timeout=300)
    store = TileStore.open(work_dir_for(out))
    assert len(store.done()) == TILES
    store.chunk_path(64, 64).unlink()  # tile 4: recorded as finished, its data gone
    from igan.engine import planner
    tile = planner.Tile(4, 1, 1, 64, 64, 64, 48, 0, 0, 0, 0)
    with pytest.raises(StoreError, match="tile 4 .* is missing"):
        store.band(64, 48, [tile])
    assert main([*ARGS, "--out", str(out), "--resume"]) == 0
    assert "rendering them again" in capsys.readouterr().err
    assert _same(out, reference)


# ---- workers and ranks ----------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_workers_die_with_their_parent_quietly(tmp_path):
    out = tmp_path / "w.png"
    proc = _popen(*ARGS, "--workers", "2", "--out", out, failpoint="tile-delay:1")
    _wait_tiles(proc, out, 1)
    workers = _children(proc.pid)
    assert len(workers) >= 2
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    deadline = time.time() + 5
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(_alive(w) for w in workers), "orphaned workers kept running"
    assert "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.slow
def test_torchrun_without_device_uses_the_cpu_when_there_is_no_gpu(tmp_path, reference):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: auto resolves to it")
    args = [a for a in ARGS if a not in ("--device", "cpu")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "igan.engine.cli.render", *args, "--out", str(tmp_path / "t.png")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _same(tmp_path / "t.png", reference)


# ---- a real full disk ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _tmpfs(path: Path, size: int):
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a real full disk needs a tmpfs mount, which needs root")
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield lambda new: subprocess.run(["mount", "-o", f"remount,size={new}", str(path)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file()) + 4096 * sum(
        1 for p in path.rglob("*") if p.is_dir())


@pytest.mark.slow
@pytest.mark.parametrize("ext", ["tif", "zarr"])
def test_a_real_full_disk_keeps_the_finished_tiles(tmp_path, capsys, reference, ext):
    big = ["--width", "448", "--height", "256"]  # 28 tiles: enough bytes to fill a small tmpfs part way
    probe = tmp_path / "probe"
    probe.mkdir()
    assert main([*ARGS, *big, "--out", str(probe / f"p.{ext}"), "--keep-work"]) == 0
    store_bytes = _tree_bytes(work_dir_for(probe / f"p.{ext}"))
    out_bytes = _tree_bytes(probe) - store_bytes
    expected = (zarr.open_array(str(probe / "p.zarr"), mode="r")[:] if ext == "zarr"
                else (probe / f"p.{ext}").read_bytes())
    # TIFF: the tiles fit, the file does not; Zarr (the tiles are moved into place, never copied):
    # half of them fit
    size = store_bytes + out_bytes // (3 if ext == "tif" else 2)
    with _tmpfs(tmp_path / "disk", size) as grow:
        out = tmp_path / "disk" / f"d.{ext}"
        assert main([*ARGS, *big, "--out", str(out)]) != 0
        err = capsys.readouterr().err
        assert "disk full" in err and "tiles are finished and kept" in err and "Traceback" not in err, err
        assert not out.exists()
        kept = len(TileStore.open(work_dir_for(out)).done())
        assert kept > 0
        grow(size * 4)
        assert main([*ARGS, *big, "--out", str(out), "--resume"]) == 0
        got = zarr.open_array(str(out), mode="r")[:] if ext == "zarr" else out.read_bytes()
        assert np.array_equal(got, expected) if ext == "zarr" else got == expected
        assert _litter(out.parent, set()) == [out.name]


# ---- a kill while the work directory is being removed (issue 26) -------------------------------------------
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _removal(out: Path, pid: int, *files: str) -> Path:
    """A removal folder of `out`'s work directory as a process killed mid-removal leaves it."""
    root = work_dir_for(out)
    folder = root.with_name(f"{root.name}.del-{pid}-{len(list(root.parent.glob('*.del-*'))):08x}")
    folder.mkdir()
    for name in files:
        (folder / name).write_text("{}")
    return folder


def test_folders_of_dead_owners_are_swept_at_once_and_live_ones_kept(tmp_path):
    import fcntl

    from igan.engine.store import sweep_stale

    out = tmp_path / "s.png"
    root, dead, me = work_dir_for(out), _dead_pid(), os.getpid()
    gone = [_removal(out, dead, "lock", "request.json"),  # killed before its lock went: the lock is free
            _removal(out, dead, FINISHED),  # killed after: no lock, its PID is dead
            _removal(out, dead)]  # killed before its rmdir
    (gone[0] / "tiles.zarr").mkdir()
    staging = root.with_name(f"{root.name}.new-{dead}-0123abcd")
    staging.mkdir()
    (staging / "lock").write_text("")
    gone.append(staging)
    held = _removal(out, me, "lock")  # a live owner removing its work directory
    fd = os.open(held / "lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    kept = [held, _removal(out, me, FINISHED)]  # a live owner that just deleted its lock
    starting = root.with_name(f"{root.name}.new-{me}-0123abcd")  # a live creator, about to lock it
    starting.mkdir()
    (starting / "lock").write_text("")
    kept.append(starting)
    try:
        sweep_stale(root)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in kept)
    finally:
        os.close(fd)


def test_a_kill_while_removing_a_finished_work_dir_is_recognised(tmp_path, capsys, reference):
    """Killed with only the lock and finished.json left of the removal folder: the output is
    complete. A plain rerun says so; --resume has nothing to do and leaves only the output; an
    output changed since is rendered again."""
    out = tmp_path / "r.png"
    assert main([*ARGS, "--out", str(out), "--keep-work"]) == 0
    capsys.readouterr()

    def cut_short():
        folder = work_dir_for(out).with_name(f"{work_dir_for(out).name}.del-{_dead_pid()}-0123abcd")
        os.rename(work_dir_for(out), folder)
        for entry in folder.iterdir():
            if entry.name not in ("lock", FINISHED):
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        return folder

    folder = cut_short()
    stamp = out.stat().st_mtime_ns
    assert main([*ARGS, "--out", str(out)]) != 0
    err = capsys.readouterr().err
    assert "is a finished render" in err and "--resume" in err and folder.name in err, err
    assert folder.is_dir() and out.stat().st_mtime_ns == stamp
    assert main([*ARGS, "--out", str(out), "--resume"]) == 0
    assert "already finished" in capsys.readouterr().err
    assert _litter(tmp_path, set()) == [out.name] and out.stat().st_mtime_ns == stamp and _same(out, reference)
    # the same state, but the output was replaced since: not the finished render, so rendered again
    assert main([*ARGS, "--out", str(out), "--keep-work", "--restart"]) == 0
    cut_short()
    out.write_bytes(b"someone else's picture")
    assert main([*ARGS, "--out", str(out), "--resume"]) == 0
    assert "nothing to resume" in capsys.readouterr().err
    assert _litter(tmp_path, set()) == [out.name] and _same(out, reference)


@pytest.mark.slow
@pytest.mark.parametrize("ext", ["png", "zarr"])
def test_a_sigkill_while_removing_the_work_dir(tmp_path, capsys, reference, ext):
    out = tmp_path / f"d.{ext}"
    proc = _popen(*ARGS, "--out", out, failpoint="kill:removing")
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL and _same(out, reference)
    assert [p for p in _litter(tmp_path, {out.name}) if ".del-" not in p] == []
    assert main([*ARGS, "--out", str(out), "--resume"]) == 0  # at once: no 60 s wait for the removal folder
    assert "already finished" in capsys.readouterr().err
    assert _litter(tmp_path, set()) == [out.name] and _same(out, reference)


# ---- two renders of one output started at the same instant (issue 26) --------------------------------------
def test_the_loser_of_a_creation_race_names_the_owner(tmp_path, capsys, monkeypatch):
    """The other process creates the work directory between our look and our create: we are
    refused with its PID and host, not with "already exists"."""
    import socket

    out = tmp_path / "img.png"
    create, winner = TileStore.create, []

    def racing(cls, root, request, *, lease=False):
        if not winner:  # the other process, this instant
            winner.append(create(root, request, lease=True))
        return create(root, request, lease=lease)

    monkeypatch.setattr(TileStore, "create", classmethod(racing))
    try:
        assert main([*ARGS, "--out", str(out)]) != 0
        err = capsys.readouterr().err
        assert f"PID {os.getpid()} on {socket.gethostname()}" in err and "already exists" not in err, err
    finally:
        winner[0].remove()


@pytest.mark.parametrize("writes", [True, False])
def test_a_new_owner_that_has_not_recorded_itself_yet(tmp_path, monkeypatch, writes):
    """The lease was just taken: its lock file still names the previous owner (killed, so its
    PID is dead). The refused process waits for the new owner's PID and host, or says that it
    is not recorded yet; it never names the dead one."""
    import fcntl
    import json
    import socket
    import threading

    from igan.engine import lease as lease_mod
    from igan.engine.lease import Lease, StoreBusy

    monkeypatch.setattr(lease_mod, "_OWNER_WAIT_S", 1.0)
    root = tmp_path / ".x.png.igan-work"
    root.mkdir()
    dead = _dead_pid()
    (root / "lock").write_text(json.dumps({"pid": dead, "host": socket.gethostname(), "since": 0}))
    fd = os.open(root / "lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the new owner, before it writes its line
    info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode()
    late = threading.Timer(0.3, lambda: (os.pwrite(fd, info, 0), os.ftruncate(fd, len(info))))
    if writes:
        late.start()
    try:
        with pytest.raises(StoreBusy) as err:
            Lease.take(root)
    finally:
        late.cancel()
        late.join() if writes else None
        os.close(fd)
    message = str(err.value)
    assert f"PID {dead} " not in message
    if writes:
        assert f"PID {os.getpid()} on {socket.gethostname()}" in message
    else:
        assert "has not recorded its PID and host yet" in message
