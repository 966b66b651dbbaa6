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
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import planner, sinks
from .embedded import DEFAULT_WEIGHTS
from .renderer import RenderStats, Renderer, peak_rss_bytes
from .runner import RUNNERS
from .store import StoreError, TileStore, file_digest, work_dir_for

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

    def request(self, model) -> dict:
        """What a resume must match (the model by content, not by path)."""
        if self.checkpoint is None:
            identity = "embedded:" + file_digest(DEFAULT_WEIGHTS)
        else:
            identity = file_digest(Path(self.checkpoint) / "manifest.json" if os.path.isdir(self.checkpoint)
                                   else self.checkpoint)
        extra = {} if self.field is None else {"field": self.field.identity()}
        return extra | {"model": identity, "config": model.config.to_json(), "seed": self.seed,
                "window": dataclasses.asdict(self.window), "width": self.window.width, "height": self.window.height,
                "tile_height": self.tile[0], "tile_width": self.tile[1], "precision": self.precision,
                "backend": self.backend}


def build(job: Job, device, model=None):
    """(renderer, field, plan) of a job on `device`."""
    from . import checkpoint
    from .latent import LatentField

    model = model or checkpoint.load(job.checkpoint, job.config)
    renderer = Renderer(RUNNERS[job.backend](model, device, job.precision))
    plan = planner.plan(model.config, job.window, tile=job.tile, batch=job.batch)
    field = LatentField(model.config, job.seed) if job.field is None else job.field.build(model.config, job.seed)
    return renderer, field, plan


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
    for tile, img in renderer.pixels(field, plan, groups=counted()):
        store.put(tile.index, tile.y, tile.x, np.ascontiguousarray(img))
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
                self.sink.write(0, y, self.store.band(y, h))
            self.next_row += 1

    @property
    def complete(self) -> bool:
        return self.next_row == self.plan.rows


def _groups(tiles: list, batch: int) -> list[list]:
    return [tiles[i:i + batch] for i in range(0, len(tiles), batch)]


def open_store(job: Job, model, out: Path, *, resume: bool, restart: bool) -> TileStore:
    """The work directory of this render: new, resumed (request checked), or restarted."""
    if not out.parent.is_dir():
        raise sinks.SinkError(f"cannot write '{out}': directory '{out.parent}' does not exist")
    root = work_dir_for(out)
    request = job.request(model)
    if root.exists() and restart:
        shutil.rmtree(root)
    if root.exists():
        if resume:
            return TileStore.open(root, request)
        try:
            done = len(TileStore.open(root).done())
        except StoreError:
            done = "?"
        raise StoreError(f"an unfinished render of {str(out)!r} is in {str(root)!r} ({done} tiles done): "
                         f"add --resume to finish it, or --restart to discard it")
    if resume:
        print(f"igan-render: nothing to resume for {str(out)!r}; starting a new render", file=sys.stderr)
    return TileStore.create(root, request)


def open_output(out: Path, plan, sink_args: dict):
    """The final sink, opened (so an unwritable path fails) before any rendering; None when
    the Zarr store itself is the product."""
    if out.suffix.lower() == ".zarr":
        if out.exists():
            raise sinks.SinkError(f"cannot write '{out}': it already exists")
        if not out.parent.is_dir():
            raise sinks.SinkError(f"cannot write '{out}': directory '{out.parent}' does not exist")
        if sink_args.get("preview"):
            raise ValueError("--preview is not available for .zarr outputs")
        return None
    return sinks.open_sink(out, plan.window.width, plan.window.height, band_height=plan.tile_height, **sink_args)


def finish(store: TileStore, sink, out: Path, keep_work: bool) -> None:
    """Close the sink (atomic rename) or move the Zarr product into place; drop the work dir."""
    if sink is None:
        store.close()
        os.replace(store.root / "tiles.zarr", out)
        if not keep_work:
            store.remove()
        return
    sink.close()
    if not keep_work:
        store.remove()


def abandon(store: TileStore, sink, total: int) -> None:
    """After a failure: no partial output file; finished tiles stay for --resume."""
    if sink is not None:
        sink.abort()
    store.close()
    print(f"igan-render: {len(store.done())} of {total} tiles are finished and kept in {str(store.root)!r}; "
          f"run the same command with --resume to continue", file=sys.stderr)


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
              progress=True, sink_args=None) -> RenderStats:
    """One process, one device."""
    renderer, field, plan = build(job, device, model)
    store = open_store(job, model, out, resume=resume, restart=restart)
    start = time.perf_counter()
    sink = None
    done = store.done()
    todo = [t for t in plan.tiles if t.index not in done]
    bar = Progress(len(plan.tiles), len(done), progress)
    try:
        sink = open_output(out, plan, sink_args or {})
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
        bar.close()
    return _stats(plan, len(todo), time.perf_counter() - start, renderer.runner.peak_memory())


# ---- one process per device ----------------------------------------------------------------------
# Each worker has its own pipe: the main process hands out batches on demand (a slower
# device takes fewer) and knows what every worker holds. No lock is shared between
# processes, so a worker killed at any instant cannot block the others.
_PREFETCH = 2  # batches a worker holds: one rendering, one waiting (Renderer.pixels reads one ahead)


def _worker(wid: int, job: Job, device: str, threads: int | None, root: str, conn) -> None:
    """A worker process: render the batches it receives into the store."""
    try:
        from . import determinism  # noqa: F401  (MKL's reproducible mode, before any GEMM)

        if threads:
            torch.set_num_threads(threads)
        renderer, field, plan = build(job, device)
        store = TileStore.open(root)
        store.writer(f"worker{wid}-{os.getpid()}")
        failpoint = os.environ.get("IGAN_FAILPOINT", "")  # tests: "worker-exit:<wid>:<batches before>"
        exit_at = int(failpoint.split(":")[2]) if failpoint.startswith(f"worker-exit:{wid}:") else -1

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
    except BaseException as exc:  # reported to the main process, which stops the render
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


def run_processes(job: Job, model, devices: list[str], out: Path, *, threads_per_worker=None, resume=False,
                  restart=False, keep_work=False, progress=True, sink_args=None) -> RenderStats:
    """One worker process per device; this process hands out batches and assembles the
    output while they render. A worker that dies has its batches handed to the others."""
    import collections
    from multiprocessing.connection import wait

    import torch.multiprocessing as mp

    plan = planner.plan(model.config, job.window, tile=job.tile, batch=job.batch)
    store = open_store(job, model, out, resume=resume, restart=restart)
    done = store.done()
    todo = [t for t in plan.tiles if t.index not in done]
    pending = collections.deque(tuple(t.index for t in g) for g in _groups(todo, job.batch))
    start = time.perf_counter()
    sink = None
    bar = Progress(len(plan.tiles), len(done), progress)
    ctx = mp.get_context("spawn")
    procs, conns, held = {}, {}, {}
    peaks = []
    try:
        sink = open_output(out, plan, sink_args or {})
        assembler = Assembler(plan, store, sink, done)
        assembler.advance()
        for wid, device in enumerate(devices):
            parent, child = ctx.Pipe()
            procs[wid] = ctx.Process(target=_worker, args=(wid, job, device, threads_per_worker, str(store.root), child),
                                     daemon=True)
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
            print(f"igan-render: worker {wid} on {devices[wid]} exited ({procs[wid].exitcode}); its "
                  f"{len(held[wid])} batch(es) go back in the queue", file=sys.stderr)
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
        abandon(store, sink, len(plan.tiles))
        raise
    finally:
        bar.close()
        for p in procs.values():
            if p.is_alive():
                p.terminate()
            p.join(timeout=10)
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
        failed = torch.zeros(1)
        if rank == 0:
            try:
                store = open_store(job, model, out, resume=resume, restart=restart)
                sink = open_output(out, plan, sink_args or {})
            except BaseException:
                failed += 1
                raise
            finally:
                dist.broadcast(failed, 0)
        else:
            dist.broadcast(failed, 0)
            if failed.item():
                raise RuntimeError("rank 0 could not open the output; see its error")
            store = TileStore.open(work_dir_for(out), job.request(model))
        done = store.done()
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
