"""The lease of a work directory: an exclusive flock on `<work dir>/lock`, which the process
that owns a render holds for as long as it renders (the kernel drops it when the process dies,
however it dies), with the owner's PID and host written in the file so that a refused process
can say who holds it. engine/store.py builds the tile store on it.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from .errors import StoreError

LOCK = "lock"
_OWNER_WAIT_S = 2.0  # how long a refused process waits for a new owner to record its PID and host


class StoreBusy(StoreError):
    """Another live process holds the work directory's lease."""


class Lease:
    """An exclusive flock on `<work dir>/lock`, held by the process that owns a render."""

    def __init__(self, fd: int, root: Path):
        self.fd, self.root = fd, root

    @staticmethod
    def _info(fd: int) -> dict | None:
        """The owner's {"pid", "host", "since"} written in the lock file, or None."""
        try:
            info = json.loads(os.pread(fd, 4096, 0).decode(errors="replace"))
            return info if isinstance(info, dict) and isinstance(info.get("pid"), int) and "host" in info else None
        except (OSError, ValueError):
            return None

    @classmethod
    def _owner(cls, fd: int) -> str | None:
        """"PID n on HOST" of the live process that holds the lock on `fd`, or None when it has
        not recorded itself yet. An owner writes its PID and host a moment after taking the
        lock; until then the file is empty or still names the previous owner, dead by now (a
        killed render), so this waits up to _OWNER_WAIT_S for a live owner's line."""
        deadline = time.monotonic() + _OWNER_WAIT_S
        while True:
            info = cls._info(fd)
            if info is not None and (info["host"] != socket.gethostname() or pid_alive(info["pid"])):
                return f"PID {info['pid']} on {info['host']}"
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)

    @classmethod
    def take(cls, root: Path, *, create: bool = False) -> "Lease | None":
        """The lease of `root`; StoreBusy (naming the owner's PID and host) if a live process
        holds it; None if `root` was renamed away or replaced meanwhile (the caller looks again)."""
        path = root / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0), 0o644)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                owner = cls._owner(fd)
            finally:
                os.close(fd)
            who = (f"another igan process ({owner}) is rendering into {str(root)!r}" if owner is not None else
                   f"another igan process is taking over {str(root)!r} this moment (it has not recorded its PID and "
                   f"host yet)")
            raise StoreBusy(f"{who}: wait for it to finish or stop it; two renders of one output would corrupt "
                            f"it") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if not same:  # removed or replaced between our open and our lock
            os.close(fd)
            return None
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
        os.pwrite(fd, info.encode(), 0)  # then cut: a reader never sees an empty file
        os.ftruncate(fd, len(info.encode()))
        return cls(fd, root)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def pid_alive(pid: int) -> bool:
    """Is process `pid` running on this machine (a zombie counts as running)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except (OSError, OverflowError, ValueError):
        return False
    return True
