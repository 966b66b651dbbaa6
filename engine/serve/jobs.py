"""'Render this view': igan-render jobs started by the viewer, one at a time.

A job is an igan-render process (the same command line a user would type, so the file is the
one igan-render writes) in the output folder, under a name the server chooses or a plain
stem the client gives (letters, digits, '-' and '_': no path). A job never replaces a file:
a name that exists is refused. Progress is read from the render's work directory (its
manifest logs: igan.engine.store); a cancelled job's work directory is removed.

The quota: at most `max_jobs` jobs queued or running, and at most `max_bytes` written by this
server's jobs in all (a job counts its file's size once done, and its uncompressed size, the
most it can write, before), so a shared server's disk fills only as far as its owner allows.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import secrets
import shlex
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import IganError, RequestError
from ..request import RenderRequest
from ..store import TileStore, is_work_dir, work_dir_for
from .canvas import Canvas

log = logging.getLogger("igan")

FORMATS = {"png": ".png", "tif": ".tif"}
STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,95}")
_ERROR_TAIL = 2000  # characters of igan-render's output kept for a failed job
_KEEP_FINISHED = 1000  # finished jobs the server remembers (their files stay in the output folder)


class JobError(RequestError):
    """A job that cannot be started (HTTP 400; `status` 409 for a name that exists)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class JobsFull(IganError):
    """The quota is reached: too many jobs at once, or too many bytes (HTTP 429 or 413)."""

    def __init__(self, message: str, status: int = 429):
        super().__init__(message)
        self.status = status


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def estimated_bytes(width: int, height: int, fmt: str) -> int:
    """The most a job's file can take: its RGB pixels uncompressed (a TIFF adds its pyramid,
    a third more)."""
    raw = 3 * width * height
    return raw + raw // 3 if fmt == "tif" else raw


@dataclass
class RenderJob:
    id: str
    out: Path
    argv: list[str]
    command: str  # the igan-render command line, as a user would type it
    width: int
    height: int
    budget: int = 0  # bytes this job may write (estimated_bytes)
    state: str = "queued"  # queued, running, done, failed, cancelled
    error: str | None = None
    seconds: float | None = None
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)
    _last: tuple[int, int | None] = field(default=(0, None), repr=False)

    def progress(self) -> tuple[int, int | None]:
        """(tiles finished, tiles in all or None before the render has planned), read from
        the render's work directory; once that is gone (the file is being put in place),
        the last reading."""
        root = work_dir_for(self.out)
        try:
            req = json.loads((root / "request.json").read_text())
            total = math.ceil(req["height"] / req["tile_height"]) * math.ceil(req["width"] / req["tile_width"])
            self._last = (len(TileStore(root, req, None).done()), total)
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if self.state == "done":
            return (self._last[1] or 1,) * 2
        return self._last

    def to_json(self) -> dict:
        done, total = self.progress()
        return {"id": self.id, "state": self.state, "file": self.out.name, "width": self.width, "height": self.height,
                "tiles_done": done, "tiles_total": total, "progress": done / total if total else 0.0,
                "command": self.command, "error": self.error, "seconds": self.seconds,
                "download": f"/api/jobs/{self.id}/file" if self.state == "done" else None}


class JobQueue:
    """Render jobs, run one after another by `run()` (a task on the server's loop)."""

    def __init__(self, output_dir: str | Path, model_options: dict, device: str, *, max_jobs: int = 8,
                 max_bytes: int = 16 << 30):
        """`model_options`: the RenderRequest fields of the model (checkpoint, config, model,
        backend, precision, latent_rng, quantize, trunc), paths absolute. `max_jobs`, `max_bytes`:
        the quota (--max-jobs, --jobs-size)."""
        self.output_dir = Path(output_dir).resolve()
        self.model_options = model_options
        self.device = device
        self.max_jobs = max_jobs
        self.max_bytes = max_bytes
        self.jobs: dict[str, RenderJob] = {}
        self._written = 0  # bytes of the files finished jobs wrote
        self._queue: asyncio.Queue[RenderJob] = asyncio.Queue()

    def active(self) -> list[RenderJob]:
        return [j for j in self.jobs.values() if j.state in ("queued", "running")]

    def used_bytes(self) -> int:
        """Bytes of the quota in use: finished files as they are, queued and running jobs at
        their estimate."""
        used = self._written
        for j in self.jobs.values():
            if j.state in ("queued", "running"):
                used += j.budget
        return used

    def submit(self, canvas: Canvas, x0: int, y0: int, width: int, height: int, fmt: str = "png",
               stem: str | None = None) -> RenderJob:
        if fmt not in FORMATS:
            raise JobError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        if stem is None:
            stem = f"igan-seed{canvas.seed}-x{x0}-y{y0}-{width}x{height}-{secrets.token_hex(3)}"
        elif not isinstance(stem, str) or not STEM.fullmatch(stem):
            raise JobError("name must be 1-96 letters, digits, '-' or '_' (a file name without folder or "
                           f"extension), got {str(stem)[:100]!r}")
        out = self.output_dir / (stem + FORMATS[fmt])
        if os.path.lexists(out) or os.path.lexists(work_dir_for(out)) or any(j.out == out for j in self.active()):
            raise JobError(f"{out.name!r} already exists in the output folder; igan-serve never replaces a file",
                           status=409)
        if len(self.active()) >= self.max_jobs:
            raise JobsFull(f"{len(self.active())} render jobs are already queued or running, the most this server "
                           f"takes at once (--max-jobs {self.max_jobs}); try again when one has finished")
        budget = estimated_bytes(width, height, fmt)
        used = self.used_bytes()
        if used + budget > self.max_bytes:
            raise JobsFull(f"this {width}x{height} {fmt} may write up to {_size(budget)}; with the {_size(used)} of "
                           f"earlier jobs that passes this server's quota (--jobs-size {_size(self.max_bytes)})",
                           status=413)
        try:
            request = RenderRequest(out=out.name, quiet=True, **self.model_options,
                                    **canvas.render_options(x0, y0, width, height)).validate()
        except (TypeError, ValueError) as e:
            raise JobError(str(e)) from e
        parts = shlex.split(request.command())[1:]  # the options that decide the pixels
        if "--out" in parts:
            del parts[parts.index("--out"):parts.index("--out") + 2]
        parts += ["--out", out.name]  # in the output folder, the job's working directory
        argv = [sys.executable, "-m", "igan.engine.cli.render", *parts, "--device", self.device, "--quiet"]
        job = RenderJob(secrets.token_hex(8), out, argv, shlex.join(["igan-render", *parts]), width, height, budget)
        self.jobs[job.id] = job
        finished = [j for j in self.jobs.values() if j.state not in ("queued", "running")]
        for old in finished[:-_KEEP_FINISHED]:
            del self.jobs[old.id]  # the files stay; the server forgets the oldest finished jobs
        self._queue.put_nowait(job)
        log.info(f"job {job.id}: {job.command}")
        return job

    async def run(self) -> None:
        """Run queued jobs one by one until cancelled."""
        while True:
            job = await self._queue.get()
            if job.state != "queued":
                continue
            await self._run(job)

    async def _run(self, job: RenderJob) -> None:
        job.state = "running"
        start = time.perf_counter()
        try:
            job.process = await asyncio.create_subprocess_exec(
                *job.argv, cwd=self.output_dir, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            output, _ = await job.process.communicate()
        except asyncio.CancelledError:  # the server is stopping
            await self._stop(job)
            raise
        except OSError as e:
            job.state, job.error = "failed", f"cannot start igan-render: {e}"
            return
        job.seconds = time.perf_counter() - start
        if job.state == "cancelled":
            self._remove_work(job)
        elif job.process.returncode == 0 and job.out.is_file():
            job.state = "done"
            self._written += job.out.stat().st_size
            log.info(f"job {job.id}: {job.out} in {job.seconds:.1f} s")
        else:
            job.state = "failed"
            tail = output.decode(errors="replace")[-_ERROR_TAIL:].strip()
            job.error = tail or f"igan-render exited with status {job.process.returncode}"
            log.warning(f"job {job.id} failed: {job.error}")
            self._remove_work(job)

    def cancel(self, job: RenderJob) -> None:
        if job.state == "queued":
            job.state = "cancelled"
        elif job.state == "running":
            job.state = "cancelled"
            if job.process is not None and job.process.returncode is None:
                job.process.send_signal(signal.SIGINT)  # igan-render abandons cleanly, then we remove its work

    async def close(self) -> None:
        for job in self.active():
            await self._stop(job)

    async def _stop(self, job: RenderJob) -> None:
        self.cancel(job)
        if job.process is not None and job.process.returncode is None:
            try:
                await asyncio.wait_for(job.process.wait(), 10)
            except asyncio.TimeoutError:
                job.process.kill()
                await job.process.wait()
        self._remove_work(job)

    @staticmethod
    def _remove_work(job: RenderJob) -> None:
        root = work_dir_for(job.out)
        if root.is_dir() and is_work_dir(root):
            shutil.rmtree(root, ignore_errors=True)
