"""The render queue: tile requests from any number of clients, rendered in batches by one
worker thread that owns the device.

`submit(group, item, client, view)` returns a concurrent.futures.Future. Requests wait in one
queue per client, and the worker serves the clients in turn (round robin): a client whose
zoom-out asked for hundreds of native tiles gets one batch, then the next client with waiting
tiles gets one, so nobody's view waits behind someone else's. From a client's queue the worker
takes its newest view first (the highest `view`; in submission order within a view), then up
to `batch - 1` more of the same group (one canvas: one field, one prepared style), filled from
the same client first and then from the others, and hands them to `render(group, items)` in one
call: one forward pass of the engine's tile batch. A request whose future was cancelled before
the worker took it (the client panned away, or moved on to another view) is dropped without
being rendered; one being rendered finishes and is cached.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Hashable, Sequence

from ..errors import RequestError, option

log = logging.getLogger("igan")


@dataclass
class SchedulerStats:
    rendered: int = 0  # items rendered
    batches: int = 0  # render calls
    dropped: int = 0  # items cancelled before they were rendered
    failed: int = 0  # items whose render raised
    busy_seconds: float = 0.0


@dataclass(eq=False)  # identity: the queue removes this very request
class _Item:
    group: Hashable
    item: object
    client: Hashable = None
    view: int = 0
    future: Future = field(default_factory=Future)


class Scheduler:
    """One worker thread calling `render(group, items) -> results` on batches of requests,
    taking the clients in turn."""

    def __init__(self, render: Callable[[Hashable, Sequence], Sequence], batch: int = 1, name: str = "igan-serve"):
        if batch < 1:
            raise RequestError(f"{option('batch')} must be at least 1, got {batch}")
        self.render = render
        self.batch = batch
        self.stats = SchedulerStats()
        self._queues: OrderedDict[Hashable, list[_Item]] = OrderedDict()  # by client, in serving order
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Requests waiting (cancelled ones not counted)."""
        with self._cond:
            return sum(not it.future.cancelled() for q in self._queues.values() for it in q)

    def rate(self) -> float | None:
        """Items rendered per second of rendering so far (None before the first batch): what
        the page's estimate for a zoom-out divides by."""
        s = self.stats
        return round(s.rendered / s.busy_seconds, 3) if s.rendered and s.busy_seconds > 0 else None

    def pending_by_client(self) -> dict:
        """Requests waiting, by client (cancelled ones not counted)."""
        with self._cond:
            counts = {c: sum(not it.future.cancelled() for it in q) for c, q in self._queues.items()}
        return {c: n for c, n in counts.items() if n}

    def submit(self, group: Hashable, item, client: Hashable = None, view: int = 0) -> Future:
        """Queue `item` for `client` (None: one shared queue); `view`: the client's view the
        request belongs to (higher: newer, served first)."""
        it = _Item(group, item, client, view)
        with self._cond:
            if self._closed:
                raise RuntimeError("the render queue is closed")
            self._queues.setdefault(client, []).append(it)
            self._cond.notify()
        it.future.add_done_callback(lambda f: self._forget(it) if f.cancelled() else None)
        return it.future

    def _forget(self, it: _Item) -> None:
        """A request cancelled while it waits leaves the queue at once."""
        with self._cond:
            queue = self._queues.get(it.client)
            try:
                queue.remove(it)
            except (AttributeError, ValueError):  # already taken (and counted) by the worker, or closed
                return
            if not queue:
                del self._queues[it.client]
            self.stats.dropped += 1

    def close(self, timeout: float | None = 30) -> None:
        """Stop after the batch in progress; requests still waiting are cancelled."""
        with self._cond:
            self._closed = True
            waiting = [it for q in self._queues.values() for it in q]
            self._queues.clear()
            self._cond.notify()
        for it in waiting:
            it.future.cancel()
        self._thread.join(timeout)

    def _purge(self) -> None:
        """Drop cancelled requests and empty queues (under the lock)."""
        for client in list(self._queues):
            queue = self._queues[client]
            live = [it for it in queue if not it.future.cancelled()]
            self.stats.dropped += len(queue) - len(live)
            if live:
                self._queues[client] = live
            else:
                del self._queues[client]

    def _take(self) -> list[_Item] | None:
        """The next batch: the next client's newest view, oldest request first, then that
        group's next requests (this client's, then the others'); None when closed."""
        with self._cond:
            while True:
                self._purge()
                if self._queues or self._closed:
                    break
                self._cond.wait()
            if self._closed:
                return None
            client, queue = next(iter(self._queues.items()))
            newest = max(it.view for it in queue)
            first = next(it for it in queue if it.view == newest)
            taken = [first]
            candidates = [it for it in queue if it.view == newest] + [it for it in queue if it.view != newest]
            for other, q in self._queues.items():
                if other != client:
                    candidates += q
            for it in candidates:
                if len(taken) == self.batch:
                    break
                if it is not first and it.group == first.group:
                    taken.append(it)
            chosen = set(map(id, taken))
            for c in list(self._queues):
                rest = [it for it in self._queues[c] if id(it) not in chosen]
                if rest:
                    self._queues[c] = rest
                else:
                    del self._queues[c]
            if client in self._queues:
                self._queues.move_to_end(client)  # its turn is over: the others first
        live = [it for it in taken if it.future.set_running_or_notify_cancel()]
        if len(live) < len(taken):
            with self._cond:
                self.stats.dropped += len(taken) - len(live)
        return live

    def _run(self) -> None:
        import time

        while (taken := self._take()) is not None:
            if not taken:
                continue
            start = time.perf_counter()
            try:
                results = self.render(taken[0].group, [it.item for it in taken])
                assert len(results) == len(taken), "render returned a result per item"
            except BaseException as e:  # handed to every waiting client; the worker goes on
                log.warning(f"rendering {len(taken)} tile(s) failed: {type(e).__name__}: {e}")
                self.stats.failed += len(taken)
                for it in taken:
                    it.future.set_exception(e)
                continue
            finally:
                self.stats.busy_seconds += time.perf_counter() - start
            self.stats.rendered += len(taken)
            self.stats.batches += 1
            for it, result in zip(taken, results):
                it.future.set_result(result)
