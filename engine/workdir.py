"""The work directory of one render: taking it (new, resumed or restarted, its lease held),
the finished tiles it vouches for, the output's sink with its temporaries inside it, and
the end of it (finished: the output renamed into place, then the directory removed; or
abandoned: the finished tiles kept for --resume). store.py is the directory's format; this is
its life cycle, shared by every executor.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from . import sinks
from .errors import option
from .lease import Lease
from .store import (FINISHED, MARKER, STORE_VERSION, StoreError, StoreExists, TileStore, finished_removals,
                    is_work_dir, sweep_stale, work_dir_for)

log = logging.getLogger(__name__)


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


def open_store(request: dict, out: Path, *, resume: bool, restart: bool, keep_work: bool = False
               ) -> TileStore | None:
    """The work directory of this render, with its lease held: new, resumed (request
    checked) or restarted. None when `out` is already a finished render of this request
    (`--resume` after a kill between the output's rename and the end of the work directory's
    removal). `request`: the render's identity (identity.request_identity), which a resumed
    work directory must match.

    Refuses (StoreError) a folder with the work directory's name that igan did not create, a
    work directory another live process holds (StoreBusy, naming it), and unfinished work
    without --resume/--restart. Deletes only work directories it holds the lease of."""
    if not out.parent.is_dir():
        raise sinks.SinkError(f"cannot write '{out}': directory '{out.parent}' does not exist")
    root = work_dir_for(out)
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
