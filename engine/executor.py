"""Executors: who renders which tiles of a planned render.

A render reaches them planned once (`Render`: the request, its plan, its canvas, its
identity and the sink's options, computed by pipeline.run) and every executor takes the same
work directory (workdir.py) and assembles through the same Assembler (assembly.py):
- local: this process, one device;
- processes: one worker process per device (`--gpus N`, or `--workers N` on CPU); this
  process hands out tile batches on demand, so a slower device takes fewer, assembles while
  they render, and gives the batches of a worker that dies to the others;
- torchrun: ranks of torch.distributed claim tile batches from a counter in torchrun's store
  (distributed.py; no collectives), so a faster rank takes more; rank 0 assembles as the
  manifest shows bands finished, and a rank lost under `torchrun --max-restarts` costs a
  restart that resumes the work directory (which must be on a filesystem every node sees).
`execute` picks one. Workers and ranks rebuild the model, runner and canvas from the Render;
none plans again.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import sources
from .assembly import Assembler, Progress, batches, render_groups, stats
from .errors import IganError, option
from .identity import model_source
from .latent import LatentField
from .planner import Plan
from .renderer import RenderStats, Renderer
from .request import CanvasSpec, RenderRequest
from .store import TileStore, work_dir_for
from .workdir import abandon, failpoint, finish, open_output, open_store, verified_done

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Render:
    """A request with everything computed from it once: its plan, its canvas (None: the
    plain canvas), its identity (identity.request_identity: what a resume must match) and the
    sink's options (metadata, preview, compression, OME). Handed to executors, workers and
    ranks as it is."""

    request: RenderRequest
    plan: Plan
    spec: CanvasSpec | None
    identity: dict
    sink: dict

    @property
    def out(self) -> Path:
        return Path(self.request.out)


def load_model(request: RenderRequest):
    """The model `request` names (its checkpoint, ONNX export, preset with random weights or
    the embedded model)."""
    return sources.load(model_source(request), request.config, random_weights=request.random_weights)


def load_runner(request: RenderRequest, device):
    """The runner of `request`'s model on `device` (a worker's: loaded from the request)."""
    return sources.make_runner(request.backend, load_model(request), device, request.precision, request.cpu_path)


def build(render: Render, runner) -> tuple[Renderer, object]:
    """(renderer, field) of `render` on `runner`."""
    request, cfg = render.request, runner.model.config
    field = (LatentField(cfg, request.seed, rng=request.latent_rng) if render.spec is None
             else render.spec.build(cfg, request.seed, request.latent_rng))
    return Renderer(runner, request.quantize, request.trunc), field


def execute(render: Render, runner, devices: list[str]) -> RenderStats | None:
    """Carry out `render`: as this torchrun rank, on one worker process per device, or here
    on `runner`. None when there is nothing to report (another rank's share, or an output
    that was already finished)."""
    if distributed_env() is not None:
        return run_torchrun(render, runner)
    if len(devices) > 1:
        threads = max(1, (os.cpu_count() or 1) // len(devices)) if devices[0] == "cpu" else None
        return run_processes(render, devices, threads_per_worker=threads)
    return run_local(render, runner)


def run_local(render: Render, runner) -> RenderStats | None:
    """One process, one device (`runner`'s). None when the output was already finished."""
    request, plan, out = render.request, render.plan, render.out
    renderer, field = build(render, runner)
    store = open_store(render.identity, out, resume=request.resume, restart=request.restart,
                       keep_work=request.keep_work)
    if store is None:
        return None
    start = time.perf_counter()
    sink = bar = None
    todo = []
    try:
        done = verified_done(store, plan)
        todo = [t for t in plan.tiles if t.index not in done]
        bar = Progress(len(plan.tiles), len(done), not request.quiet)
        sink = open_output(out, plan, render.sink, store)
        store.writer(f"local-{os.getpid()}")
        assembler = Assembler(plan, store, sink, done)
        assembler.advance()

        def on_done(group):
            assembler.tiles_done(group)
            bar.update(group)

        render_groups(renderer, field, plan, store, batches(todo, plan.batch), on_done)
        assert assembler.complete
        finish(store, sink, out, request.keep_work)
    except BaseException:
        abandon(store, sink, len(plan.tiles))
        raise
    finally:
        if bar is not None:
            bar.close()
    return stats(plan, len(todo), time.perf_counter() - start, runner.peak_memory())


# ---- one process per device ----------------------------------------------------------------------
# Each worker has its own pipe: the main process hands out batches on demand (a slower
# device takes fewer) and knows what every worker holds. No lock is shared between
# processes, so a worker killed at any instant cannot block the others.
_PREFETCH = 2  # batches a worker holds: one rendering, one waiting (Renderer.pixels reads one ahead)


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this worker when the main process dies (Linux; even when the
    main process is SIGKILLed), so no orphan keeps rendering for nobody. Elsewhere a worker
    notices at its next message (EOF on its pipe) and exits quietly."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _worker(wid: int, render: Render, device: str, threads: int | None, root: str, conn, parent: int) -> None:
    """A worker process: render the batches it receives into the store."""
    _die_with_parent(parent)
    try:
        from . import determinism  # noqa: F401  (MKL's reproducible mode, before any GEMM)

        if threads:
            torch.set_num_threads(threads)
        plan = render.plan
        renderer, field = build(render, load_runner(render.request, device))
        store = TileStore.open(root)
        store.writer(f"worker{wid}-{os.getpid()}")
        exit_at = (failpoint("worker-exit") or ":-1").split(":")  # tests: "worker-exit:<wid>:<batches before>"
        exit_at = int(exit_at[1]) if exit_at[0] == str(wid) else -1

        def groups():
            n = 0
            while True:
                if not conn.poll():
                    yield []  # nothing queued: store what is rendered before waiting
                item = conn.recv()
                if item is None:
                    return
                if n == exit_at:
                    os._exit(3)
                n += 1
                yield [plan.tiles[i] for i in item]

        render_groups(renderer, field, plan, store, groups(),
                      lambda group: conn.send(("done", [t.index for t in group])))
        conn.send(("exit", renderer.runner.peak_memory()))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        os._exit(1)  # the main process is gone: nobody to report to, nothing to say
    except BaseException as exc:  # reported to the main process, which stops the render
        try:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        except OSError:
            os._exit(1)


def run_processes(render: Render, devices: list[str], threads_per_worker: int | None = None) -> RenderStats | None:
    """One worker process per device; this process hands out batches and assembles the
    output while they render. A worker that dies has its batches handed to the others."""
    import collections
    from multiprocessing.connection import wait

    import torch.multiprocessing as mp

    request, plan, out = render.request, render.plan, render.out
    store = open_store(render.identity, out, resume=request.resume, restart=request.restart,
                       keep_work=request.keep_work)
    if store is None:
        return None
    start = time.perf_counter()
    sink = bar = None
    todo = []
    ctx = mp.get_context("spawn")
    procs, conns, held = {}, {}, {}
    peaks = []

    def stop_workers():
        for p in procs.values():
            if p.is_alive():
                p.terminate()
            p.join(timeout=10)

    try:
        done = verified_done(store, plan)
        todo = [t for t in plan.tiles if t.index not in done]
        pending = collections.deque(tuple(t.index for t in g) for g in batches(todo, plan.batch))
        bar = Progress(len(plan.tiles), len(done), not request.quiet)
        sink = open_output(out, plan, render.sink, store)
        assembler = Assembler(plan, store, sink, done)
        assembler.advance()
        for wid, device in enumerate(devices):
            parent, child = ctx.Pipe()
            procs[wid] = ctx.Process(target=_worker, daemon=True,
                                     args=(wid, render, device, threads_per_worker, str(store.root), child, os.getpid()))
            procs[wid].start()
            child.close()
            conns[wid], held[wid] = parent, collections.deque()

        def feed(wid):
            while pending and len(held[wid]) < _PREFETCH:
                batch = pending.popleft()
                held[wid].append(batch)
                conns[wid].send(list(batch))

        def lost(wid):
            procs[wid].join(timeout=5)
            log.warning(f"worker {wid} on {devices[wid]} exited ({procs[wid].exitcode}); its "
                        f"{len(held[wid])} batch(es) go back in the queue")
            pending.extendleft(reversed(held.pop(wid)))
            conns.pop(wid).close()
            for other in conns:
                feed(other)

        def receive(wid) -> bool:
            """Handle one message of worker `wid`; False when its pipe is closed."""
            try:
                kind, payload = conns[wid].recv()
            except (EOFError, OSError):
                return False
            if kind == "error":
                raise RuntimeError(f"worker {wid} on {devices[wid]} failed: {payload}")
            assert kind == "done" and tuple(payload) == held[wid][0], (kind, payload)
            held[wid].popleft()
            tiles = [plan.tiles[i] for i in payload]
            assembler.tiles_done(tiles)
            bar.update(tiles)
            feed(wid)
            return True

        for wid in conns:
            feed(wid)
        while any(held.values()) or pending:
            if not conns:
                raise RuntimeError("every worker exited before the render finished")
            owner = {conns[w]: w for w in conns} | {procs[w].sentinel: w for w in conns}
            for ready in wait(list(owner), timeout=1.0):
                wid = owner[ready]
                if wid not in conns:
                    continue
                if ready is conns[wid]:
                    if not receive(wid):
                        lost(wid)
                else:  # the process ended: take what it sent before, then its batches back
                    while conns[wid].poll() and receive(wid):
                        pass
                    lost(wid)
        for wid, conn in conns.items():
            conn.send(None)
            try:
                kind, payload = conn.recv()
                if kind == "exit":
                    peaks.append(payload)
            except EOFError:
                pass
        assert assembler.complete
        finish(store, sink, out, request.keep_work)
    except BaseException:
        stop_workers()  # before abandon(): nobody may write into a work directory being removed
        abandon(store, sink, len(plan.tiles))
        raise
    finally:
        if bar is not None:
            bar.close()
        stop_workers()
    peak = max((x for x in peaks if x is not None), default=None)
    return stats(plan, len(todo), time.perf_counter() - start, peak)


# ---- torchrun ---------------------------------------------------------------------------------------
def distributed_env() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when started by torchrun with more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


def _render_key(render: Render) -> str:
    """The store's name for this render: its identity, its output and the torchrun job (a
    store that outlives a job never hands the next one its flags)."""
    import hashlib
    import json

    text = json.dumps({"identity": render.identity, "out": os.path.abspath(render.out),
                       "job": os.environ.get("TORCHELASTIC_RUN_ID")}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Stopped(IganError):
    """torchrun stopped this rank (SIGTERM: another rank failed, or the job was stopped)."""


def run_torchrun(render: Render, runner) -> RenderStats | None:
    """This process is one rank. The ranks coordinate through torchrun's store, never through
    collectives (distributed.py): rank 0 takes the work directory (resuming it by itself when
    an earlier attempt of this torchrun job took it: a restart after a lost rank), every rank
    claims tile batches from a shared counter, so a faster rank takes more, and rank 0
    assembles the bands as the manifest shows them finished while it renders too. A .zarr
    output is the work directory's tile array, written by every rank, renamed into place.
    Returns stats on rank 0."""
    import signal
    import threading

    from . import distributed

    request, plan, out = render.request, render.plan, render.out
    rank, world, _ = distributed_env()
    timeout = distributed.rank_timeout()
    renderer, field = build(render, runner)
    ranks = distributed.Ranks(distributed.connect(rank, timeout), rank, world, _render_key(render), timeout)
    restarted = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    root = work_dir_for(out)

    def stopped(signum, frame):
        raise _Stopped(f"rank {rank} was stopped (signal {signum}: torchrun stops every rank when one fails); the "
                       f"finished tiles stay in {str(root)!r}: torchrun restarts the ranks if it has restarts left "
                       f"(--max-restarts), else run the same command with {option('resume')} to finish the render")

    handling = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stopped) if handling else None
    store = sink = bar = None
    start = time.perf_counter()
    todo = []
    try:
        if rank == 0:
            ranks.gather()
            try:
                owned = ranks.flag("owner")
                if ranks.flag("finished"):
                    log.info(f"{str(out)!r} was finished by an earlier attempt of this torchrun job")
                else:
                    if owned and not request.resume:
                        log.info(f"torchrun restarted the ranks (TORCHELASTIC_RESTART_COUNT={restarted}): resuming "
                                 f"the render in {str(root)!r}")
                    store = open_store(render.identity, out, resume=request.resume or owned,
                                       restart=request.restart and not owned, keep_work=request.keep_work)
                if store is not None:
                    sink = open_output(out, plan, render.sink, store)
                    done = verified_done(store, plan)
                    reader = store.follow()  # from here on only this attempt's tiles are new
                    ranks.set_flag("owner", str(root))
            except BaseException as e:
                ranks.publish("failed", error=f"{type(e).__name__}: {e}")
                raise
            if store is None:
                ranks.publish("finished")
                return None
            todo = [t for t in plan.tiles if t.index not in done]
            ranks.publish("go", todo=[t.index for t in todo], tiles=len(plan.tiles))
        else:
            state, indices, error = ranks.join(len(plan.tiles))
            if state == "failed":
                raise RuntimeError(f"rank 0 could not open the output: {error}")
            if state == "finished":
                return None
            late = (failpoint("rank-late") or "-1:0").split(":")  # tests: "rank-late:<rank>:<seconds>"
            if late[0] == str(rank):
                time.sleep(float(late[1]))
            store = TileStore.open(root, render.identity)
            todo = [plan.tiles[i] for i in indices]
        store.writer(f"rank{rank}-e{ranks.epoch}-{os.getpid()}")
        groups = batches(todo, plan.batch)
        flush = runner.device.type != "cuda"  # a GPU copies batch k while it computes k + 1; a CPU has no overlap
        delay = (failpoint("rank-delay") or "-1:0").split(":")  # tests: "rank-delay:<rank>:<seconds a tile>"
        delay = float(delay[1]) if delay[0] == str(rank) else 0.0

        if rank == 0:
            seen = set(done)
            bar = Progress(len(plan.tiles), len(done), not request.quiet)
            assembler = Assembler(plan, store, sink, done)
            assembler.advance()

            def assemble():
                new = [plan.tiles[i] for i in sorted(reader.new() - seen)]
                seen.update(t.index for t in new)
                if new:
                    assembler.tiles_done(new)
                    bar.update(new)
                return bool(new)
        else:
            def assemble():
                return False

        def claimed():
            while True:
                if flush:
                    yield []  # store what is rendered before claiming more
                assemble()
                k = ranks.claim()
                if k >= len(groups):
                    return
                yield groups[k]

        def on_done(group):
            if delay:
                time.sleep(delay * len(group))
            assemble()

        try:
            render_groups(renderer, field, plan, store, claimed(), on_done)
        finally:
            if rank != 0:
                store.close()
        ranks.leave()
        if rank == 0:
            checked = all_left = None
            while not assembler.complete:
                if assemble():
                    continue
                time.sleep(0.05)
                now = time.monotonic()
                if checked is not None and now - checked < 1.0:
                    continue
                checked = now
                lost = ranks.silent()
                if lost:
                    who = ", ".join(f"rank {r} (silent for {s:.0f} s)" for r, s in lost)
                    raise distributed.RankLost(
                        f"{who} stopped answering with {sum(assembler.missing)} tile(s) missing; the "
                        f"timeout is {timeout:g} s ({distributed.TIMEOUT_ENV})")
                if ranks.still_working():
                    all_left = None
                elif all_left is None:
                    all_left = now
                elif now - all_left > 5.0:  # a grace for a filesystem slow to show the last lines
                    raise RuntimeError(f"tiles are missing from {str(store.root)!r} after every rank finished "
                                       f"(e.g. in row {assembler.next_row})")
            # every tile is in: before the work directory goes, the other ranks leave (one slow
            # to start has yet to open it and claim nothing), unless their heartbeat has stopped
            deadline = time.monotonic() + timeout
            while True:
                working = set(ranks.still_working())
                if not working or working <= {r for r, _ in ranks.silent()}:
                    break
                if time.monotonic() > deadline:
                    log.warning(f"every tile is in, but rank(s) {', '.join(map(str, sorted(working)))} did not leave "
                                f"within {timeout:g} s ({distributed.TIMEOUT_ENV}): finishing without them")
                    break
                time.sleep(0.05)
            counts = {}
            for name, n in reader.counts.items():
                who = name.split("-")[0]
                counts[who] = counts.get(who, 0) + n
            log.info("tiles rendered by each rank: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
            finish(store, sink, out, request.keep_work)
            ranks.set_flag("finished")
    except BaseException:
        if rank == 0 and store is not None:
            abandon(store, sink, len(plan.tiles))
        raise
    finally:
        ranks.close()
        if bar is not None:
            bar.close()
        if handling:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    if rank == 0:
        return stats(plan, len(todo), time.perf_counter() - start, runner.peak_memory())
    return None
