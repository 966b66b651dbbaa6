"""torchrun ranks coordinated through the store torchrun already runs (torch.distributed's
c10d TCPStore at MASTER_ADDR:MASTER_PORT), never through collectives: no process group is
made, so no gloo/NCCL mesh has to be connected (the connections that failed or hung after a
rank was killed), and every wait is a poll with a deadline that names the rank it waits for.

The protocol, under `igan/<render key>/` in the store (the key: the request's identity and
output, so two renders never share one):
- each rank starts a heartbeat (`beat/<nonce>`, a counter it bumps every _BEAT_S seconds, its
  nonce fresh in every process) and says hello (`hello/<rank>` = its nonce);
- rank 0 waits until every rank's hello carries a beating heartbeat (a hello left by a rank of
  an earlier attempt has a dead one), takes the next epoch (`epoch`, a counter: every attempt
  of a torchrun job gets its own, whatever TORCHELASTIC_RESTART_COUNT each node counts),
  opens the work directory and publishes `e<epoch>/start` (go, with the tiles to render, or
  failed, or finished), then tells each rank its epoch (`go/<nonce>`);
- ranks claim batches from the counter `e<epoch>/next` (`add` is atomic), so a faster rank
  takes more, and say `e<epoch>/left/<rank>` when they run out;
- rank 0 assembles bands as the manifest shows them finished, and stops with an error naming
  any rank whose heartbeat stopped before it left while tiles are missing;
- `owner` says an earlier attempt of this job took the work directory (a restarted rank 0
  resumes it without --resume), `finished` that the output is in place.
The finished-tile manifest in the work directory stays the truth: what the store says only
decides who renders what next.
"""
from __future__ import annotations

import json
import os
import secrets
import threading
import time
from datetime import timedelta

import numpy as np

from .errors import IganError, RequestError

TIMEOUT_ENV = "IGAN_RANK_TIMEOUT"
_DEFAULT_TIMEOUT_S = 300.0
_BEAT_S = 0.5


class RankLost(IganError):
    """A rank did not join, or stopped answering, within the timeout."""


def rank_timeout() -> float:
    """Seconds any wait on another rank may last: IGAN_RANK_TIMEOUT, default 300."""
    raw = os.environ.get(TIMEOUT_ENV, "")
    if not raw:
        return _DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise RequestError(f"{TIMEOUT_ENV}={raw!r} is not a positive number of seconds")
    return value


def connect(rank: int, timeout: float):
    """A client of torchrun's store (the agent's, TORCHELASTIC_USE_AGENT_STORE=True); without
    an agent (MASTER_ADDR/MASTER_PORT set by another launcher) rank 0 hosts it."""
    import torch.distributed as dist

    host, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not host or not port:
        raise RequestError(f"WORLD_SIZE is {os.environ.get('WORLD_SIZE')} but MASTER_ADDR/MASTER_PORT are not set "
                           f"(MASTER_ADDR={host!r}, MASTER_PORT={port!r}): start the ranks with torchrun")
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    try:
        return dist.TCPStore(host, int(port), is_master=not agent and rank == 0, timeout=timedelta(seconds=timeout),
                             wait_for_workers=False, multi_tenant=True)
    except (RuntimeError, OSError) as e:  # DistNetworkError is a RuntimeError
        raise RankLost(f"rank {rank} could not reach torchrun's store at {host}:{port} within {timeout:g} s "
                       f"({TIMEOUT_ENV}): {e}") from e


def _bitmap(indices, n: int) -> str:
    bits = np.zeros(n, bool)
    bits[list(indices)] = True
    return np.packbits(bits).tobytes().hex()


def _unbitmap(text: str, n: int) -> list[int]:
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(text), np.uint8))[:n]
    return [int(i) for i in np.flatnonzero(bits)]


class Ranks:
    """This rank's side of the protocol (module docstring)."""

    def __init__(self, store, rank: int, world: int, key: str, timeout: float):
        self.store, self.rank, self.world, self.timeout = store, rank, world, timeout
        self.base = f"igan/{key}/"
        self.nonce = secrets.token_hex(8)
        self.epoch: int | None = None
        self.nonces: dict[int, str] = {rank: self.nonce}
        self._stop = threading.Event()
        self._beats: dict[int, tuple[int, float]] = {}  # rank -> (last count seen, when it changed)
        self._thread = threading.Thread(target=self._beat, args=(store.clone(),), daemon=True,
                                        name=f"igan-rank{rank}-heartbeat")
        self._thread.start()
        store.set(self.base + f"hello/{rank}", self.nonce)

    # ---- keys ------------------------------------------------------------------------------------------
    def _key(self, name: str) -> str:
        assert self.epoch is not None
        return f"{self.base}e{self.epoch}/{name}"

    def _beat(self, store) -> None:
        key = self.base + f"beat/{self.nonce}"
        while not self._stop.is_set():
            try:
                store.add(key, 1)
            except Exception:  # the store is gone (torchrun is stopping): nothing to tell anyone
                return
            self._stop.wait(_BEAT_S)

    def _beat_count(self, nonce: str) -> int:
        return int(self.store.add(self.base + f"beat/{nonce}", 0))

    def close(self) -> None:
        self._stop.set()

    # ---- the start ---------------------------------------------------------------------------------
    def flag(self, name: str) -> bool:
        """Is the job-wide key `name` (owner, finished) set?"""
        return self.store.check([self.base + name])

    def set_flag(self, name: str, value: str = "1") -> None:
        self.store.set(self.base + name, value)

    def gather(self) -> None:
        """Rank 0: wait for every rank's hello with a beating heartbeat, then take an epoch."""
        deadline = time.monotonic() + self.timeout
        first: dict[int, tuple[str, int]] = {}
        while len(self.nonces) < self.world:
            for r in range(self.world):
                if r in self.nonces or not self.store.check([self.base + f"hello/{r}"]):
                    continue
                nonce = self.store.get(self.base + f"hello/{r}").decode()
                count = self._beat_count(nonce)
                if r in first and first[r][0] == nonce and count > first[r][1]:
                    self.nonces[r] = nonce
                elif r not in first or first[r][0] != nonce:
                    first[r] = (nonce, count)
            if len(self.nonces) == self.world:
                break
            if time.monotonic() > deadline:
                missing = [r for r in range(self.world) if r not in self.nonces]
                raise RankLost(f"rank(s) {', '.join(map(str, missing))} of {self.world} did not join the render "
                               f"within {self.timeout:g} s ({TIMEOUT_ENV}); is every node started?")
            time.sleep(0.1)
        self.epoch = int(self.store.add(self.base + "epoch", 1))
        now = time.monotonic()
        self._beats = {r: (self._beat_count(n), now) for r, n in self.nonces.items() if r != self.rank}

    def publish(self, state: str, *, todo=(), tiles: int = 0, error: str = "") -> None:
        """Rank 0: the outcome of opening the work directory, then every rank's go."""
        record = {"state": state, "error": error, "tiles": tiles, "todo": _bitmap(todo, tiles) if tiles else ""}
        self.store.set(self._key("start"), json.dumps(record))
        for r, nonce in self.nonces.items():
            if r != self.rank:
                self.store.set(self.base + f"go/{nonce}", str(self.epoch))

    def join(self, tiles: int) -> tuple[str, list[int], str]:
        """Ranks but 0: wait for rank 0's start; (state, tiles to render, rank 0's error)."""
        key = self.base + f"go/{self.nonce}"
        deadline = time.monotonic() + self.timeout
        while not self.store.check([key]):
            if time.monotonic() > deadline:
                raise RankLost(f"rank {self.rank}: rank 0 did not start the render within {self.timeout:g} s "
                               f"({TIMEOUT_ENV}); is rank 0 running?")
            time.sleep(0.05)
        self.epoch = int(self.store.get(key))
        record = json.loads(self.store.get(self._key("start")))
        todo = _unbitmap(record["todo"], tiles) if record["todo"] else []
        if record["state"] == "go" and record["tiles"] != tiles:
            raise RuntimeError(f"rank {self.rank} planned {tiles} tiles but rank 0 planned {record['tiles']}: the "
                               f"ranks must be given the same command")
        return record["state"], todo, record["error"]

    # ---- the work ---------------------------------------------------------------------------------------
    def claim(self) -> int:
        """The next batch number (any rank's claims are distinct: the store's add is atomic)."""
        return int(self.store.add(self._key("next"), 1)) - 1

    def leave(self) -> None:
        """This rank has no more work and has stored everything it rendered."""
        self.store.set(self._key(f"left/{self.rank}"), "1")

    def left(self, rank: int) -> bool:
        return self.store.check([self._key(f"left/{rank}")])

    def silent(self) -> list[tuple[int, float]]:
        """Rank 0: (rank, seconds) of every rank that has not left and whose heartbeat has not
        moved for longer than the timeout."""
        now, found = time.monotonic(), []
        for r, (count, since) in list(self._beats.items()):
            if self.left(r):
                del self._beats[r]
                continue
            latest = self._beat_count(self.nonces[r])
            if latest != count:
                self._beats[r] = (latest, now)
            elif now - since > self.timeout:
                found.append((r, now - since))
        return found

    def still_working(self) -> list[int]:
        """Rank 0: the ranks that have not left."""
        return [r for r in range(self.world) if r != self.rank and not self.left(r)]
