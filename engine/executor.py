"""Executors: who renders which tiles, and how finished tiles become the output file.

Every executor renders tiles into the work directory's tile store (store.py) and one
assembler streams completed bands, top to bottom, from the store into the sink, so a
render killed at any point resumes from the manifest and produces the same bytes.
- local: one process, one device;
- processes: one worker process per device (`--gpus N`, or `--workers N` on CPU); the
  main process hands out tile batches on demand, so a slower device takes fewer, assembles
  while they render, and gives the batches of a worker that dies to the others;
- torchrun: ranks of torch.distributed split the tiles; rank 0 assembles after a barrier
  (the work directory must be on a filesystem every node sees).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import planner, sinks, sources
from .embedded import DEFAULT_WEIGHTS, builtin_path
from .errors import option
from .latent import LatentField
from .provenance import DEFAULT_LATENT_RNG, LATENT_RNG_VERSIONS, sha256_file
from .renderer import RenderStats, Renderer, peak_rss_bytes
from .store import (FINISHED, MARKER, STORE_VERSION, Lease, StoreError, StoreExists, TileStore, finished_removals,
                    is_work_dir, sweep_stale, work_dir_for)

log = logging.getLogger(__name__)

BAR = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} tiles [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"


@dataclass(frozen=True)
class Job:
    """A render request every process can rebuild its model, field and plan from."""

    checkpoint: str | None
    config: str | None
    seed: int
    window: planner.Window
    tile: tuple[int, int]
    batch: int
    backend: str
    precision: str
    field: object = None  # fusion.FieldSpec (style fusion, cyclic canvas); None: the plain canvas
    latent_rng: str = DEFAULT_LATENT_RNG  # the generator of the canvas's random values
    quantize: str = "round"  # float -> uint8 (quantize.QUANTIZE)
    trunc: float = 1.0  # truncation of the styles
    random_weights: bool = False  # config's preset with init_deterministic weights (no checkpoint)
    bit_exact: bool = False  # the torch backend's reference path (CPU: the same bytes in any tiling)

    def request(self, model) -> dict:
        """What a resume must match (the model by content, not by path)."""
        extra = {} if self.field is None else {"field": self.field.identity()}
        identity = model_identity(self.checkpoint, self.config, self.random_weights)
        return extra | {"model": identity, "config": model.config.to_json(), "seed": self.seed,
                "window": dataclasses.asdict(self.window), "width": self.window.width, "height": self.window.height,
                "tile_height": self.tile[0], "tile_width": self.tile[1], "precision": self.precision,
                "backend": self.backend, "latent_rng": LATENT_RNG_VERSIONS[self.latent_rng],
                "quantize": self.quantize, "trunc": self.trunc} | self._path()

    def _path(self) -> dict:
        """Which torch path computes the pixels: "fast" (the CPU default since 0.3) or
        "bit-exact" (igan 0.2's only path); the other backends have one path each."""
        return {"path": "bit-exact" if self.bit_exact else "fast"} if self.backend == "torch" else {}


def model_identity(checkpoint: str | None, config: str | None = None, random_weights: bool = False) -> str:
    """The model by content: the sha256 of its file (an ONNX export: of its manifest),
    "embedded:" + the file's for the models shipped with igan (the default or
    "builtin:NAME"), or "random:CONFIG:SEED" for --random-weights."""
    if random_weights:
        return f"random:{config}:{sources.RANDOM_WEIGHTS_SEED}"
    if checkpoint is None:
        return "embedded:" + _digest(DEFAULT_WEIGHTS)
    builtin = builtin_path(checkpoint)
    if builtin is not None:  # the shipped models by name: "embedded:" as when they were the default
        return "embedded:" + _digest(builtin)
    return _digest(Path(checkpoint) / "manifest.json" if os.path.isdir(checkpoint) else checkpoint)


def _digest(path) -> str:
    """sha256 of a model file, computed once per file version (a checkpoint can be GBs)."""
    st = os.stat(path)
    return _cached_digest(os.path.realpath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _cached_digest(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def build(job: Job, device, model=None):
    """(renderer, field, plan) of a job on `device`."""
    model = model or sources.load(job.checkpoint, job.config, random_weights=job.random_weights)
    renderer = Renderer(sources.make_runner(job.backend, model, device, job.precision, job.bit_exact), job.quantize,
                        job.trunc)
    plan = planner.plan(model.config, job.window, tile=job.tile, batch=job.batch)
    field = (LatentField(model.config, job.seed, rng=job.latent_rng) if job.field is None
             else job.field.build(model.config, job.seed, job.latent_rng))
    return renderer, field, plan


def failpoint(name: str) -> str | None:
    """Tests only: the argument of `name` in IGAN_FAILPOINT ("name:arg,name:arg"), else None."""
    for entry in os.environ.get("IGAN_FAILPOINT", "").split(","):
        key, _, arg = entry.partition(":")
        if key == name:
            return arg
    return None


def _kill_point(stage: str) -> None:
    """Tests only: IGAN_FAILPOINT=kill:<stage> SIGKILLs this process at `stage`."""
    if failpoint("kill") == stage:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def render_groups(renderer: Renderer, field, plan, store: TileStore, groups, on_done=None) -> None:
    """Render tile groups into the store (each tile recorded in the manifest once on disk);
    on_done(tiles) after each group."""
    groups = iter(groups)
    sizes = []  # group sizes, in order, to report whole groups as their last tile is stored

    def counted():
        for group in groups:
            if group:
                sizes.append(len(group))
            yield group

    finished = []
    delay = float(failpoint("tile-delay") or 0)  # tests: a slow render, to act while it runs
    for tile, img in renderer.pixels(field, plan, groups=counted()):
        store.put(tile.index, tile.y, tile.x, np.ascontiguousarray(img))
        time.sleep(delay)
        finished.append(tile)
        if len(finished) == sizes[0]:
            sizes.pop(0)
            if on_done is not None:
                on_done(finished)
            finished = []


class Assembler:
    """Feeds the sink each band of the image as soon as all its tiles are in the store."""

    def __init__(self, plan: planner.Plan, store: TileStore, sink, done: set[int]):
        self.plan, self.store, self.sink = plan, store, sink
        self.missing = [sum(1 for t in plan.tiles if t.row == r and t.index not in done) for r in range(plan.rows)]
        self.next_row = 0

    def tiles_done(self, tiles) -> None:
        for t in tiles:
            self.missing[t.row] -= 1
        self.advance()

    def advance(self) -> None:
        while self.next_row < self.plan.rows and self.missing[self.next_row] == 0:
            y = self.next_row * self.plan.tile_height
            h = min(self.plan.tile_height, self.plan.window.height - y)
            if self.sink is not None:
                row = [t for t in self.plan.tiles if t.row == self.next_row]
                self.sink.write(0, y, self.store.band(y, h, row))
            self.next_row += 1

    @property
    def complete(self) -> bool:
        return self.next_row == self.plan.rows


def _groups(tiles: list, batch: int) -> list[list]:
    return [tiles[i:i + batch] for i in range(0, len(tiles), batch)]


def open_store(job: Job, model, out: Path, *, resume: bool, restart: bool, keep_work: bool = False
               ) -> TileStore | None:
    """The work directory of this render, with its lease held: new, resumed (request
    checked) or restarted. None when `out` is already a finished render of this request
    (`--resume` after a kill between the output's rename and the end of the work directory's
    removal).

    Refuses (StoreError) a folder with the work directory's name that igan did not create, a
    work directory another live process holds (StoreBusy, naming it), and unfinished work
    without --resume/--restart. Deletes only work directories it holds the lease of."""
    if not out.parent.is_dir():
        raise sinks.SinkError(f"cannot write '{out}': directory '{out.parent}' does not exist")
    root = work_dir_for(out)
    request = job.request(model)
    zarr_out = out.suffix.lower() == ".zarr"
    if not restart and not zarr_out and not os.path.lexists(root):
        # killed while removing the work directory of a finished render: the output is complete
        done = finished_removals(root, out, request)
        if done:
            if not resume:
                sweep_stale(root, keep=done)  # the record stays for the --resume asked for
                raise StoreError(f"{str(out)!r} is a finished render (a kill interrupted the removal of its work "
                                 f"directory, {done[0].name!r}): add {option('resume')} to keep it as it is, or "
                                 f"{option('restart')} to render it again")
            sweep_stale(root)
            log.info(f"{str(out)!r} is already finished; nothing to do")
            return None
    sweep_stale(root)
    while True:
        if not os.path.lexists(root):
            if zarr_out and os.path.lexists(out):
                if resume and _zarr_request(out) == dict(request, store_version=STORE_VERSION):
                    log.info(f"{str(out)!r} is already finished; nothing to do")
                    return None
                raise sinks.SinkError(f"{option('out')} '{out}' already exists; igan does not overwrite a Zarr store: "
                                      f"remove it or choose another {option('out')}")
            if resume:
                log.info(f"nothing to resume for {str(out)!r}; starting a new render")
            try:
                store = TileStore.create(root, request, lease=True)
            except StoreExists:
                continue  # another process created it since we looked: look again (and name its owner)
            if store is not None:
                return store
            continue  # another process created it this instant: look again
        if not root.is_dir() or root.is_symlink() or not is_work_dir(root):
            raise StoreError(f"{str(root)!r} is in the way of the work directory of {str(out)!r} but igan did "
                             f"not create it (no {MARKER}); igan deletes only what it created: move it away "
                             f"or choose another {option('out')}")
        lease = Lease.take(root)
        if lease is None:
            continue  # removed or replaced meanwhile
        held = TileStore(root, {}, None, lease)  # enough to remove() it
        try:
            has_tiles = (root / "tiles.zarr").is_dir()
            finished = (root / FINISHED).is_file() or (zarr_out and not has_tiles and out.exists())
            if restart or (finished and not out.exists() and not has_tiles):
                if not restart:
                    log.info(f"{str(root)!r} held a finished render whose output is gone; starting a new render")
                held.remove()
                continue
            if finished and out.exists():
                if not resume:
                    raise StoreError(f"{str(out)!r} is a finished render and its work directory {str(root)!r} "
                                     f"is still there: add {option('resume')} to keep it as it is, or "
                                     f"{option('restart')} to "
                                     f"render it again")
                TileStore.check_request(root, request)
                log.info(f"{str(out)!r} is already finished; nothing to do")
                held.release() if keep_work else held.remove()
                return None
            if not resume:
                try:
                    done = len(TileStore.open(root).done())
                except StoreError:
                    done = "?"
                raise StoreError(f"an unfinished render of {str(out)!r} is in {str(root)!r} ({done} tiles done): "
                                 f"add {option('resume')} to finish it, or {option('restart')} to discard it")
            store = TileStore.open(root, request, lease=lease)
            store.clear_tmp()
            (root / FINISHED).unlink(missing_ok=True)  # its output was removed: assemble it again
            return store
        except BaseException:
            lease.release()
            raise


def _zarr_request(out: Path) -> dict | None:
    """The request a finished igan Zarr output was rendered from (its attributes), or None."""
    import zarr

    try:
        return dict(zarr.open_array(str(out), mode="r").attrs.get("igan") or {}) or None
    except Exception:  # not a Zarr array at all: zarr raises many kinds
        return None


def verified_done(store: TileStore, plan, quiet: bool = False) -> set[int]:
    """The finished tiles whose data is on disk; the others are rendered again."""
    done = store.done()
    lost = store.missing([t for t in plan.tiles if t.index in done])
    if lost and not quiet:
        log.info(f"{len(lost)} tile(s) recorded as finished have no data in {str(store.root)!r} "
             f"(e.g. tile {lost[0].index}); rendering them again")
        done -= {t.index for t in lost}
    return done


def open_output(out: Path, plan, sink_args: dict, store: TileStore):
    """The final sink, its temporaries in the work directory; None when the Zarr store
    itself is the product."""
    if out.suffix.lower() == ".zarr":
        return None
    return sinks.open_sink(out, plan.window.width, plan.window.height, band_height=plan.tile_height,
                           temp_dir=store.tmp, **sink_args)


def finish(store: TileStore, sink, out: Path, keep_work: bool) -> None:
    """Close the sink (atomic rename) or move the Zarr product into place; mark the work
    directory finished, then drop it (or just its lease with keep_work)."""
    _kill_point("before-output")
    if sink is None:
        store.close()
        store.clear_tmp()  # zarr's partial chunks of killed writers must not ship
        if os.path.lexists(out):
            raise sinks.SinkError(f"cannot move the finished render to '{out}': something was created there "
                                  f"meanwhile; the tiles stay in {str(store.root)!r}")
        os.replace(store.root / "tiles.zarr", out)
    else:
        sink.close()
    _kill_point("after-output")
    store.mark_finished(out)
    _kill_point("after-finished")
    if keep_work:
        store.release()
    else:
        store.remove(during=lambda: _kill_point("removing"))


def abandon(store: TileStore, sink, total: int) -> None:
    """After a failure: no partial output file; finished tiles stay for --resume (a work
    directory with none is removed: it holds nothing worth keeping)."""
    if sink is not None:
        sink.abort()
    done = len(store.done())
    if done == 0:
        store.remove()
        return
    store.release()
    log.info(f"{done} of {total} tiles are finished and kept in {str(store.root)!r}; "
         f"run the same command with {option('resume')} to continue")


class Progress:
    def __init__(self, total: int, done: int, enabled: bool):
        self.bar = tqdm(total=total, initial=done, unit="tile", desc="igan-render", disable=not enabled,
                        file=sys.stderr, dynamic_ncols=True, bar_format=BAR)
        self.start, self.pixels = time.perf_counter(), 0

    def update(self, tiles) -> None:
        self.pixels += sum(t.width * t.height for t in tiles)
        self.bar.update(len(tiles))
        self.bar.set_postfix_str(f"{self.pixels / 1e6 / (time.perf_counter() - self.start):.2f} MP/s", refresh=False)

    def close(self) -> None:
        self.bar.close()


def _stats(plan, rendered: int, seconds: float, peak_device) -> RenderStats:
    return RenderStats(plan.window.width, plan.window.height, len(plan.tiles), plan.tile_width, plan.tile_height,
                       seconds, plan.work_ratio, peak_rss_bytes(), peak_device,
                       plan.flops_per_tile * rendered / seconds / 1e12)


def run_local(job: Job, model, device, out: Path, *, resume=False, restart=False, keep_work=False,
              progress=True, sink_args=None) -> RenderStats | None:
    """One process, one device. None when `out` was already finished (nothing rendered)."""
    renderer, field, plan = build(job, device, model)
    store = open_store(job, model, out, resume=resume, restart=restart, keep_work=keep_work)
    if store is None:
        return None
    start = time.perf_counter()
    sink = bar = None
    todo = []
    try:
        done = verified_done(store, plan)
        todo = [t for t in plan.tiles if t.index not in done]
        bar = Progress(len(plan.tiles), len(done), progress)
        sink = open_output(out, plan, sink_args or {}, store)
        store.writer(f"local-{os.getpid()}")
        assembler = Assembler(plan, store, sink, done)
        assembler.advance()

        def on_done(group):
            assembler.tiles_done(group)
            bar.update(group)

        render_groups(renderer, field, plan, store, _groups(todo, job.batch), on_done)
        assert assembler.complete
        finish(store, sink, out, keep_work)
    except BaseException:
        abandon(store, sink, len(plan.tiles))
        raise
    finally:
        if bar is not None:
            bar.close()
    return _stats(plan, len(todo), time.perf_counter() - start, renderer.runner.peak_memory())


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


def _worker(wid: int, job: Job, device: str, threads: int | None, root: str, conn, parent: int) -> None:
    """A worker process: render the batches it receives into the store."""
    _die_with_parent(parent)
    try:
        from . import determinism  # noqa: F401  (MKL's reproducible mode, before any GEMM)

        if threads:
            torch.set_num_threads(threads)
        renderer, field, plan = build(job, device)
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


def run_processes(job: Job, model, devices: list[str], out: Path, *, threads_per_worker=None, resume=False,
                  restart=False, keep_work=False, progress=True, sink_args=None) -> RenderStats | None:
    """One worker process per device; this process hands out batches and assembles the
    output while they render. A worker that dies has its batches handed to the others."""
    import collections
    from multiprocessing.connection import wait

    import torch.multiprocessing as mp

    plan = planner.plan(model.config, job.window, tile=job.tile, batch=job.batch)
    store = open_store(job, model, out, resume=resume, restart=restart, keep_work=keep_work)
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
        pending = collections.deque(tuple(t.index for t in g) for g in _groups(todo, job.batch))
        bar = Progress(len(plan.tiles), len(done), progress)
        sink = open_output(out, plan, sink_args or {}, store)
        assembler = Assembler(plan, store, sink, done)
        assembler.advance()
        for wid, device in enumerate(devices):
            parent, child = ctx.Pipe()
            procs[wid] = ctx.Process(target=_worker, daemon=True,
                                     args=(wid, job, device, threads_per_worker, str(store.root), child, os.getpid()))
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
        finish(store, sink, out, keep_work)
    except BaseException:
        stop_workers()  # before abandon(): nobody may write into a work directory being removed
        abandon(store, sink, len(plan.tiles))
        raise
    finally:
        if bar is not None:
            bar.close()
        stop_workers()
    peak = max((x for x in peaks if x is not None), default=None)
    return _stats(plan, len(todo), time.perf_counter() - start, peak)


# ---- torchrun ---------------------------------------------------------------------------------------
def distributed_env() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when started by torchrun with more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


def run_torchrun(job: Job, model, device, out: Path, *, resume=False, restart=False, keep_work=False,
                 progress=True, sink_args=None) -> RenderStats | None:
    """This process is one rank: render its share of the tiles; rank 0 sets up the store,
    then assembles the output after everyone is done. Returns stats on rank 0."""
    import torch.distributed as dist

    rank, world, _ = distributed_env()
    dist.init_process_group(backend="nccl" if torch.device(device).type == "cuda" else "gloo")
    renderer, field, plan = build(job, device, model)
    store = sink = None
    start = time.perf_counter()
    try:
        state = torch.zeros(1)  # rank 0's outcome: 0 go, 1 failed, 2 already finished
        if rank == 0:
            try:
                store = open_store(job, model, out, resume=resume, restart=restart, keep_work=keep_work)
                if store is None:
                    state += 2
                else:
                    sink = open_output(out, plan, sink_args or {}, store)
            except BaseException:
                state += 1
                raise
            finally:
                dist.broadcast(state, 0)
        else:
            dist.broadcast(state, 0)
            if state.item() == 1:
                raise RuntimeError("rank 0 could not open the output; see its error")
            if state.item() == 0:
                store = TileStore.open(work_dir_for(out), job.request(model))
        if store is None:
            return None
        done = verified_done(store, plan, quiet=rank != 0)
        dist.barrier()  # every rank has read the same manifest before anyone adds to it
        todo = [t for t in plan.tiles if t.index not in done]
        mine = todo[rank::world]
        store.writer(f"rank{rank}-{os.getpid()}")
        bar = Progress(len(mine), 0, progress and rank == 0)
        render_groups(renderer, field, plan, store, _groups(mine, job.batch), bar.update)
        bar.close()
        dist.barrier()
        if rank == 0:
            assembler = Assembler(plan, store, sink, store.done())
            assembler.advance()
            if not assembler.complete:
                raise RuntimeError(f"tiles are missing from {str(store.root)!r} after every rank finished")
            finish(store, sink, out, keep_work)
        dist.barrier()
    except BaseException:
        if rank == 0 and store is not None:
            abandon(store, sink, len(plan.tiles))
        raise
    finally:
        dist.destroy_process_group()
    if rank == 0:
        return _stats(plan, len(todo), time.perf_counter() - start, renderer.runner.peak_memory())
    return None
