"""Kill/resume trials of the real igan-render command line (issue 13: never lose or overwrite
a user's data).

Each trial renders a small window to a fresh directory, SIGKILLs the render at a random
moment (the main process only, or its whole process group), runs the same command with
--resume until it exits 0, and then checks that
- the output equals an uninterrupted reference render (PNG/TIFF: byte for byte; Zarr: the
  decoded array, since chunk bytes may differ in compression framing),
- the output's directory holds the output and nothing else (no work directory, temporary
  files, pyramid temporaries or lock files are left behind),
- no process of the killed render (an orphaned worker) is still alive a few seconds later.

    .venv/bin/python benchmarks/kill_trials.py -n 20          # prints "20/20 identical"

The sink, the worker count and the kill target cycle through every combination (12 with the
defaults), in an order drawn from --seed. Every other kill time is uniform in [0, the duration
of an uninterrupted render of that sink and worker count): first the reference's, then the
latest uninterrupted run a trial saw (the load of a shared machine drifts); so these land in
start-up, rendering or the final write. The others land mid-render: after a random number of
finished tiles plus up to one tile's time. Exits 1 if any trial is
not identical (or leaves litter, or orphans).
This script only drives subprocesses: it never imports torch (or igan).
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SINKS = ("png", "tif", "zarr")
TARGETS = ("main", "group")  # SIGKILL the main process only, or its whole process group
ORPHAN_WAIT_S = 5.0  # how long the processes of a killed render get to exit on their own
MAX_RESUMES = 3


@dataclass(frozen=True)
class Render:
    """The render every trial makes (and the reference repeats uninterrupted)."""

    width: int = 512
    height: int = 256
    tile: int = 64
    seed: int = 3

    @property
    def tiles(self) -> int:
        return math.ceil(self.width / self.tile) * math.ceil(self.height / self.tile)

    def command(self, out: Path, workers: int = 1, resume: bool = False) -> list[str]:
        cmd = [sys.executable, "-m", "igan.engine.cli.render", "--width", str(self.width), "--height",
               str(self.height), "--tile", str(self.tile), "--seed", str(self.seed), "--device", "cpu",
               "--bit-exact", "--quiet", "--out", str(out)]  # bytes independent of the worker count
        if workers > 1:
            cmd += ["--workers", str(workers)]
        if resume:
            cmd.append("--resume")
        return cmd


@dataclass
class Reference:
    sink: str
    path: Path
    seconds: float


@dataclass
class Trial:
    index: int
    sink: str
    workers: int
    target: str
    kill_at: float | tuple  # seconds after the start of the first run, or ("tiles", k, extra seconds)
    killed_after: float = math.nan  # when the SIGKILL was actually sent
    at_kill: str = "?"  # what the work directory held just before the kill
    finished_before_kill: bool = False
    resumes: list = field(default_factory=list)  # (exit code, seconds, note) per --resume run
    output: str = "?"  # "identical", "different", "missing", ...
    resumed: bool = False  # the first run finished, or a --resume run exited 0
    litter: list = field(default_factory=list)  # leftover paths in the output's directory
    orphans: list = field(default_factory=list)  # "PID cmdline" of processes still alive
    seconds: float = 0.0
    full_run: float | None = None  # duration of an uninterrupted run seen in this trial (for the kill-time scale)
    root: Path | None = None

    @property
    def identical(self) -> bool:
        return self.resumed and self.output == "identical" and not self.litter and not self.orphans

    @property
    def result(self) -> str:
        if self.identical:
            return "identical"
        what = [] if self.resumed else ["--resume failed"]
        if self.output != "identical":
            what.append(f"output {self.output}")
        if self.litter:
            what.append(f"litter {len(self.litter)}")
        if self.orphans:
            what.append(f"orphans {len(self.orphans)}")
        return "NOT identical: " + ", ".join(what)


# ---- processes (read from /proc: no psutil needed) --------------------------------------------------
def _proc_stat(pid: int):
    """(state, ppid, session) of a live process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[3])


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    text = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return text if len(text) <= 140 else text[:137] + "..."


def _all_procs() -> dict[int, tuple]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            if st is not None:
                out[int(entry)] = st
    return out


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children, their children...)."""
    procs = _all_procs()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, (_, ppid, _) in procs.items() if ppid in frontier and p not in found}
        found |= frontier
    return found


def alive(pids: set[int], session: int) -> dict[int, str]:
    """Which of `pids`, or of the processes in `session`, are still running (zombies are dead)."""
    out = {}
    for pid, (state, _, sid) in _all_procs().items():
        if (pid in pids or sid == session) and pid != os.getpid() and state not in ("Z", "X"):
            out[pid] = _cmdline(pid)
    return out


def wait_orphans(pids: set[int], session: int, timeout: float = ORPHAN_WAIT_S) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    while True:
        left = alive(pids, session)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


def _kill_quietly(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


# ---- files ------------------------------------------------------------------------------------------
def output_name(sink: str) -> str:
    return f"out.{sink}"


def tiles_done(out: Path) -> int:
    """Finished tiles in the render's manifest logs (0 without a work directory)."""
    done = set()
    for log in out.with_name(f".{out.name}.igan-work").rglob("manifest/*.log"):
        try:
            for line in log.read_bytes().split(b"\n"):
                parts = line.split()
                if len(parts) == 2 and parts[0] == b"tile" and parts[1].isdigit():
                    done.add(int(parts[1]))
        except OSError:
            pass
    return len(done)


def work_state(out: Path, total: int) -> str:
    """What the render has done so far, read from its work directory (for the trial table)."""
    work = out.with_name(f".{out.name}.igan-work")
    if not work.exists():
        if out.exists() and any(out.parent.glob(f"{work.name}.del-*")):
            return "output written, removing"  # the work directory is being deleted
        return "output written" if out.exists() else "no work dir"
    state = f"{tiles_done(out)}/{total} tiles"
    return state + ", output written" if out.exists() else state


def _kind(name: str, out_name: str) -> str:
    if name == f".{out_name}.igan-work":
        return "work directory"
    if name.startswith(f".{out_name}.igan-work.del-"):
        return "removal folder (a work directory being deleted)"
    if name.startswith(f".{out_name}.igan-work.new-"):
        return "staging folder (a work directory being created)"
    if re.search(r"\.L\d+$", name):
        return "pyramid temporary"
    if "igan-tmp" in name:
        return "temporary file"
    if "lock" in name.lower():
        return "lock file"
    return "unexpected"


def litter(directory: Path, out_name: str) -> list[str]:
    """Every entry of the output's directory except the output itself, described."""
    found = []
    for entry in sorted(directory.iterdir()):
        if entry.name == out_name:
            continue
        what = _kind(entry.name, out_name)
        if entry.is_dir() and not entry.is_symlink():
            files = [p for p in entry.rglob("*") if not p.is_dir()]
            what += f", {len(files)} files"
        else:
            try:
                what += f", {entry.stat().st_size} bytes"
            except OSError:
                pass
        found.append(f"{entry} ({what})")
    return found


def compare(out: Path, ref: Path, sink: str) -> str:
    if not out.exists():
        return "missing"
    if sink == "zarr":
        import numpy as np
        import zarr

        try:
            a, b = zarr.open_array(str(out), mode="r")[:], zarr.open_array(str(ref), mode="r")[:]
        except Exception as e:  # noqa: BLE001  (an unreadable output is a finding, not a crash)
            return f"unreadable ({type(e).__name__}: {e})"
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"different (shape {a.shape} {a.dtype}, reference {b.shape} {b.dtype})"
        return "identical" if np.array_equal(a, b) else f"different ({int((a != b).any(-1).sum())} pixels)"
    a, b = out.read_bytes(), ref.read_bytes()
    if a == b:
        return "identical"
    return f"different ({len(a)} bytes, reference {len(b)})"


def _last_line(path: Path) -> str:
    try:
        lines = [l for l in path.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:200] if lines else ""


# ---- one trial --------------------------------------------------------------------------------------
def make_reference(sink: str, render: Render, root: Path, workers: int = 1, timeout: float = 1800) -> Reference:
    """An uninterrupted render to compare the trials with (and to scale their kill times)."""
    directory = root / f"reference-{sink}-w{workers}"
    (directory / "out").mkdir(parents=True)
    out = directory / "out" / output_name(sink)
    with open(directory / "log.txt", "wb") as log:
        start = time.perf_counter()
        rc = subprocess.run(render.command(out, workers), stdout=log, stderr=subprocess.STDOUT,
                            timeout=timeout).returncode
        seconds = time.perf_counter() - start
    if rc != 0:
        raise RuntimeError(f"the reference {sink} render failed (exit {rc}): {_last_line(directory / 'log.txt')}")
    left = litter(out.parent, out.name)
    if left:
        print(f"note: the uninterrupted reference render left: {'; '.join(left)}", file=sys.stderr)
    return Reference(sink, out, seconds)


def warm_up() -> None:
    """Load torch and igan once, so the first reference's duration (the scale of the kill
    times) is not a cold start's."""
    subprocess.run([sys.executable, "-c", "import torch, igan.engine.cli.render"], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_trial(index: int, sink: str, workers: int, target: str, kill_at: float, ref: Reference,
              render: Render, root: Path) -> Trial:
    """Render, SIGKILL after `kill_at` seconds (or ("tiles", k, s): s seconds after the k-th
    finished tile), resume until done, compare with `ref` and check
    litter and orphans. `root` is this trial's own (fresh) directory."""
    assert target in TARGETS, target
    trial = Trial(index, sink, workers, target, kill_at, root=root)
    (root / "out").mkdir(parents=True)
    out = root / "out" / output_name(sink)
    t0 = time.perf_counter()
    with open(root / "log-run.txt", "wb") as log:
        proc = subprocess.Popen(render.command(out, workers), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    start = time.perf_counter()
    if isinstance(kill_at, tuple):  # ("tiles", k, extra): once k tiles are finished, then `extra` seconds
        _, k, extra = kill_at
        while proc.poll() is None and tiles_done(out) < k:
            time.sleep(0.01)
        kill_at = time.perf_counter() - start + extra
    while proc.poll() is None and time.perf_counter() - start < kill_at:
        time.sleep(min(0.02, max(0.0, kill_at - (time.perf_counter() - start))))
    kids = descendants(proc.pid)  # collected just before the kill: the workers it may orphan
    trial.at_kill = work_state(out, render.tiles)
    trial.killed_after = time.perf_counter() - start
    if proc.poll() is None:
        try:
            if target == "group":
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    rc = proc.wait()
    if rc == 0:
        trial.finished_before_kill = True
        trial.full_run = time.perf_counter() - start
    elif rc != -signal.SIGKILL:
        trial.resumes.append((rc, 0.0, f"first run failed before the kill: {_last_line(root / 'log-run.txt')}"))
    session = proc.pid  # start_new_session: the killed render's processes share its session id

    if not trial.finished_before_kill:
        for attempt in range(MAX_RESUMES):
            logname = root / f"log-resume{attempt + 1}.txt"
            r0 = time.perf_counter()
            with open(logname, "wb") as log:
                resume = subprocess.Popen(render.command(out, workers, resume=True), stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rrc = resume.wait(timeout=max(600.0, 20 * ref.seconds))
            except subprocess.TimeoutExpired:
                os.killpg(resume.pid, signal.SIGKILL)
                rrc = resume.wait()
            text = logname.read_text(errors="replace")
            note = ("started fresh" if "nothing to resume" in text else
                    "already finished" if "already finished" in text else "")
            if rrc != 0:
                note = f"failed: {_last_line(logname)}"
            trial.resumes.append((rrc, time.perf_counter() - r0, note))
            if rrc == 0 and note == "started fresh":
                trial.full_run = trial.resumes[-1][1]
            stray = wait_orphans(set(), resume.pid)  # what the resume itself left running
            if stray:
                trial.orphans += [f"{pid} (of --resume run {attempt + 1}) {cmd}" for pid, cmd in stray.items()]
                _kill_quietly(stray)
            if rrc == 0 or (attempt and trial.resumes[-2][::2] == (rrc, note)):
                break  # done, or failing the same way again: a third try would too

    left = wait_orphans(kids, session)
    trial.orphans += [f"{pid} {cmd}" for pid, cmd in left.items()]
    _kill_quietly(left)  # so they cannot disturb the next trial
    trial.litter = litter(out.parent, out.name)
    trial.resumed = trial.finished_before_kill or any(rc == 0 for rc, _, _ in trial.resumes)
    trial.output = compare(out, ref.path, sink)
    trial.seconds = time.perf_counter() - t0
    return trial


# ---- the schedule and the report --------------------------------------------------------------------
def schedule(n: int, rng: random.Random, sinks=SINKS, workers=(1, 2), targets=TARGETS) -> list[tuple]:
    """n (sink, workers, target, kill fraction, kill tile) tuples: every combination once per
    cycle, each cycle in its own random order. Every other trial is killed at a random moment
    (the fraction of the reference's duration, uniform in [0, 1): start-up, rendering or the
    final write); the others once a random share of the tiles is finished (kill tile uniform in
    (0, 1), a fraction of the tile count), so that most kills land mid-render whatever the
    start-up costs."""
    combos = list(itertools.product(sinks, workers, targets))
    out = []
    while len(out) < n:
        cycle = combos[:]
        rng.shuffle(cycle)
        out += cycle
    return [c + (rng.random(), rng.random() if i % 2 else None) for i, c in enumerate(out[:n])]


def describe(t: Trial) -> str:
    resumes = "finished before kill" if t.finished_before_kill else (
        ", ".join(f"--resume rc={rc} {s:.1f}s" + (f" ({note})" if note and (rc, note) not in
                                                     [(r, n) for r, _, n in t.resumes[:i]] else "")
                  for i, (rc, s, note) in enumerate(t.resumes))
        or "no resume")
    return (f"[{t.index:>3}] {t.sink:<4} w{t.workers} kill {t.target:<5} at {t.killed_after:6.2f}s "
            f"({t.at_kill}); {resumes} -> {t.result} [{t.seconds:.1f}s]")


def table(trials: list[Trial]) -> str:
    head = ("#", "sink", "workers", "killed", "kill s", "at kill", "resume", "output", "litter", "orphans",
            "result")
    rows = [head]
    for t in trials:
        resume = "finished before kill" if t.finished_before_kill else "rc " + "/".join(str(rc) for rc, _, _ in t.resumes)
        rows.append((str(t.index), t.sink, str(t.workers), t.target, f"{t.killed_after:.2f}", t.at_kill, resume,
                     t.output.split(" (")[0], str(len(t.litter)), str(len(t.orphans)),
                     "identical" if t.identical else "NOT identical"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for t in trials:
        for item in t.litter:
            lines.append(f"  trial {t.index}: litter {item}")
        for item in t.orphans:
            lines.append(f"  trial {t.index}: orphan {item}")
        if t.output != "identical":
            lines.append(f"  trial {t.index}: output {t.output}")
        for rc, note in dict.fromkeys((rc, note) for rc, _, note in t.resumes if rc != 0):
            lines.append(f"  trial {t.index}: exit {rc}: {note}")
    return "\n".join(lines)


def _csv(kind, text: str):
    try:
        return tuple(kind(v) for v in text.split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list: {text!r}") from None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--trials", type=int, default=20, help="number of trials (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the schedule and kill times (default 0)")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--render-seed", type=int, default=3, help="igan-render --seed (default 3)")
    p.add_argument("--sinks", type=lambda s: _csv(str, s), default=SINKS, help="png,tif,zarr (default all)")
    p.add_argument("--workers", type=lambda s: _csv(int, s), default=(1, 2), help="1,2 (default both)")
    p.add_argument("--kill-max", type=float, default=1.0,
                   help="kill times are uniform in [0, KILL_MAX x the reference's duration) (default 1.0)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directories for inspection")
    args = p.parse_args(argv)
    bad = [s for s in args.sinks if s not in SINKS] + [w for w in args.workers if w not in (1, 2)]
    if bad or not args.sinks or not args.workers or args.trials < 1:
        p.error(f"--sinks from {','.join(SINKS)}, --workers from 1,2, -n >= 1 (got {bad or 'nothing'})")

    render = Render(args.width, args.height, args.tile, args.render_seed)
    rng = random.Random(args.seed)
    plan = schedule(args.trials, rng, args.sinks, args.workers)
    root = Path(tempfile.mkdtemp(prefix="igan-kill-trials-"))
    print(f"kill trials: {args.trials} x igan-render {args.width}x{args.height} tile {args.tile} "
          f"({render.tiles} tiles), seed {args.seed}, in {root}", flush=True)
    trials = []
    try:
        warm_up()
        refs = {}  # (sink, workers) -> uninterrupted render: the time scale of that combination's kills
        for sink in args.sinks:
            for workers in sorted(args.workers):
                refs[sink, workers] = ref = make_reference(sink, render, root, workers)
                note = ""
                if (sink, 1) in refs and workers != 1:
                    same = compare(ref.path, refs[sink, 1].path, sink)
                    note = f" (output {same} to --workers 1)"
                    if same != "identical":
                        print(f"warning: uninterrupted --workers {workers} {sink} output is {same} to --workers 1",
                              file=sys.stderr)
                print(f"reference {sink} --workers {workers}: {ref.seconds:.1f}s{note}", flush=True)
        # The kill times' scale: the latest uninterrupted run of that sink and worker count (the
        # machine's load may change during the trials; a stale scale lands every kill too late or early).
        scale = {key: ref.seconds for key, ref in refs.items()}
        for i, (sink, workers, target, frac, tile_frac) in enumerate(plan, 1):
            ref = refs.get((sink, 1), refs[sink, workers])  # what every trial of this sink must produce
            kill_at = frac * args.kill_max * scale[sink, workers]
            if tile_frac is not None:  # after a random share of the tiles, plus up to one tile's time
                kill_at = ("tiles", 1 + int(tile_frac * (render.tiles - 1)), frac * scale[sink, workers] / render.tiles)
            t = run_trial(i, sink, workers, target, kill_at, ref, render, root / f"trial-{i:03d}")
            if t.full_run is not None:
                scale[sink, workers] = t.full_run
            trials.append(t)
            print(describe(t), flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if not trials:
        return 1
    print()
    print(table(trials))
    seconds = [t.seconds for t in trials]
    print(f"trial time: mean {sum(seconds) / len(seconds):.1f}s, max {max(seconds):.1f}s")
    good = sum(t.identical for t in trials)
    print(f"{good}/{len(trials)} identical")
    return 0 if good == len(trials) == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
