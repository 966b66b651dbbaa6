"""The render queue: tile requests from any number of clients, rendered in batches by one
worker thread that owns the device.

`submit(group, item)` returns a concurrent.futures.Future. The worker takes the oldest live
request and up to `batch - 1` more of the same group (one canvas: one field, one prepared
style) and hands them to `render(group, items)` in one call: one forward pass of the engine's
tile batch. A request whose future was cancelled before the worker took it (the client
panned away) is dropped without being rendered; one being rendered finishes and is cached.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
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
    future: Future = field(default_factory=Future)


class Scheduler:
    """One worker thread calling `render(group, items) -> results` on batches of requests."""

    def __init__(self, render: Callable[[Hashable, Sequence], Sequence], batch: int = 1, name: str = "igan-serve"):
        if batch < 1:
            raise RequestError(f"{option('batch')} must be at least 1, got {batch}")
        self.render = render
        self.batch = batch
        self.stats = SchedulerStats()
        self._pending: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Requests waiting (cancelled ones not counted)."""
        with self._cond:
            return sum(not it.future.cancelled() for it in self._pending)

    def submit(self, group: Hashable, item) -> Future:
        it = _Item(group, item)
        with self._cond:
            if self._closed:
                raise RuntimeError("the render queue is closed")
            self._pending.append(it)
            self._cond.notify()
        it.future.add_done_callback(lambda f: self._forget(it) if f.cancelled() else None)
        return it.future

    def _forget(self, it: _Item) -> None:
        """A request cancelled while it waits leaves the queue at once."""
        with self._cond:
            try:
                self._pending.remove(it)
            except ValueError:  # already taken (and counted) by the worker, or closed
                return
            self.stats.dropped += 1

    def close(self, timeout: float | None = 30) -> None:
        """Stop after the batch in progress; requests still waiting are cancelled."""
        with self._cond:
            self._closed = True
            for it in self._pending:
                it.future.cancel()
            self._pending.clear()
            self._cond.notify()
        self._thread.join(timeout)

    def _take(self) -> list[_Item] | None:
        """The next batch (oldest live request first, then its group's next ones), or None
        when closed."""
        with self._cond:
            while True:
                while self._pending and self._pending[0].future.cancelled():
                    self._pending.popleft()
                    self.stats.dropped += 1
                if self._pending or self._closed:
                    break
                self._cond.wait()
            if self._closed:
                return None
            group = self._pending[0].group
            taken, kept = [], deque()
            for it in self._pending:
                if it.future.cancelled():
                    self.stats.dropped += 1
                elif len(taken) < self.batch and it.group == group:
                    taken.append(it)
                else:
                    kept.append(it)
            self._pending = kept
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
