"""igan-serve's latency as a viewer feels it: the real server (a subprocess, fresh cache),
driven over HTTP the way a browser drives it (6 connections, the visible tiles of a
viewport, the viewport panning one tile column at a time).

    .venv/bin/python benchmarks/serve_latency.py --device cpu --batch 1 2 \\
        --out benchmarks/results/serve-latency-cpu-2core-2026-11-29.md

Measures, per --batch value:
- start-up: process start to the URL line (model loaded, socket bound);
- time to first tile: one native tile of a fresh canvas (cold: the first forward pass);
- panning: a 1280 x 720 viewport moving right one tile column per step; per step, the time
  until every visible tile has arrived (what the user waits for) and the new tiles per second;
- zooming out: one cold tile at zoom -1 and at zoom -2 (4 and 16 native tiles);
- cache hits: the same tiles again from the memory LRU (sequential, one kept-alive
  connection), and from the disk cache after a restart on the same cache folder.

Only drives subprocesses and HTTP: it never imports torch.
"""
from __future__ import annotations

import argparse
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import httpx

from igan.engine import cpu  # torch-free

TILE = 256
CONNECTIONS = 6  # a browser's connections per host over HTTP/1.1


class Server:
    def __init__(self, cache: Path, *args):
        start = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "igan.engine.cli.serve", "--port", "0", "--cache",
                                      str(cache), *map(str, args)], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        if not found:
            self.proc.kill()
            raise SystemExit(f"igan-serve did not start: {line!r}")
        self.startup = time.perf_counter() - start
        self.url = found.group(0)
        self.client = httpx.Client(base_url=self.url, timeout=600)

    def canvas(self, seed: int) -> str:
        return self.client.post("/api/canvas", json={"seed": seed}).json()["id"]

    def close(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)


def timed_get(client: httpx.Client, path: str) -> float:
    start = time.perf_counter()
    r = client.get(path)
    elapsed = time.perf_counter() - start
    assert r.status_code == 200, (path, r.status_code, r.text[:200])
    return elapsed


def visible(x: int, y: int, width: int, height: int) -> list[tuple[int, int]]:
    """Tiles of a viewport at canvas (x, y), centre first (as Leaflet orders them)."""
    tiles = [(tx, ty) for ty in range(y // TILE, (y + height - 1) // TILE + 1)
             for tx in range(x // TILE, (x + width - 1) // TILE + 1)]
    cx, cy = (x + width / 2) / TILE - 0.5, (y + height / 2) / TILE - 0.5
    return sorted(tiles, key=lambda t: (t[0] - cx) ** 2 + (t[1] - cy) ** 2)


def pan(server: Server, canvas: str, steps: int, view=(1280, 720)) -> dict:
    clients = [httpx.Client(base_url=server.url, timeout=600) for _ in range(CONNECTIONS)]
    seen: set[tuple[int, int]] = set()
    waits, new_tiles = [], 0
    x, y = -view[0] // 2, -view[1] // 2
    start = time.perf_counter()
    with ThreadPoolExecutor(CONNECTIONS) as pool:
        for step in range(steps + 1):
            todo = [t for t in visible(x, y, *view) if t not in seen]
            t0 = time.perf_counter()
            list(pool.map(lambda i_t: timed_get(clients[i_t[0] % CONNECTIONS],
                                                f"/tiles/{canvas}/0/{i_t[1][0]}/{i_t[1][1]}.png"),
                          enumerate(todo)))
            if step:  # the first view is the cold start, reported apart
                waits.append(time.perf_counter() - t0)
                new_tiles += len(todo)
            else:
                first_view, first_count = time.perf_counter() - t0, len(todo)
                start = time.perf_counter()
            seen.update(todo)
            x += TILE
    seconds = time.perf_counter() - start
    for c in clients:
        c.close()
    return {"first_view_s": first_view, "first_view_tiles": first_count, "tiles": new_tiles,
            "tiles_per_s": new_tiles / seconds, "step_median_s": statistics.median(waits), "step_max_s": max(waits)}


def hits(server: Server, canvas: str, coords, rounds: int = 5) -> list[float]:
    times = []
    for _ in range(rounds):
        for tx, ty in coords:
            times.append(timed_get(server.client, f"/tiles/{canvas}/0/{tx}/{ty}.png"))
    return times


def ms(values) -> str:
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
    return f"{1e3 * statistics.median(values):.2f} (p99 {1e3 * p99:.2f})"


def measure(batch: int, args) -> dict:
    root = Path(tempfile.mkdtemp(prefix="igan-serve-bench-"))
    try:
        server = Server(root, "--device", args.device, "--batch", batch, "--memory-cache", "256MiB")
        canvas = server.canvas(seed=11)
        out = {"batch": batch, "startup_s": server.startup}
        out["first_tile_s"] = timed_get(server.client, f"/tiles/{canvas}/0/1000/0.png")
        out["second_tile_s"] = timed_get(server.client, f"/tiles/{canvas}/0/1001/0.png")
        out |= pan(server, canvas, args.steps)
        out["zoom1_s"] = timed_get(server.client, f"/tiles/{canvas}/-1/-600/0.png")
        out["zoom2_s"] = timed_get(server.client, f"/tiles/{canvas}/-2/-600/0.png")
        coords = visible(-640, -360, 1280, 720)
        out["memory_hit"] = hits(server, canvas, coords)
        server.close()
        server = Server(root, "--device", args.device, "--batch", batch)  # same cache folder: disk hits
        canvas = server.canvas(seed=11)
        out["disk_hit"] = hits(server, canvas, coords, rounds=1)
        server.close()
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(rows: list[dict], args) -> str:
    lines = [f"# igan-serve latency, embedded model, `--device {args.device}` — {date.today().isoformat()}", "",
             f"Machine: {cpu.summary()}, Python {platform.python_version()}. "
             "Server: `igan-serve` subprocess, fresh temporary cache; client: httpx, "
             f"{CONNECTIONS} connections (a browser's per host).", "",
             f"Command: `{' '.join(['.venv/bin/python', 'benchmarks/serve_latency.py'] + sys.argv[1:])}`", "",
             "| --batch | start-up (s) | first tile (s) | 2nd tile (s) | first 1280x720 view | panning: tiles/s "
             "| panning: wait per 256-px step, median / max (s) | cold zoom -1 tile (4 native) (s) "
             "| cold zoom -2 tile (16 native) (s) | memory hit, median (p99) (ms) | disk hit, median (p99) (ms) |",
             "| ---: | ---: | ---: | ---: | --- | ---: | --- | ---: | ---: | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['startup_s']:.1f} | {r['first_tile_s']:.2f} | {r['second_tile_s']:.2f} | "
                     f"{r['first_view_tiles']} tiles in {r['first_view_s']:.1f} s | {r['tiles_per_s']:.2f} | "
                     f"{r['step_median_s']:.2f} / {r['step_max_s']:.2f} | {r['zoom1_s']:.2f} | {r['zoom2_s']:.2f} | "
                     f"{ms(r['memory_hit'])} | {ms(r['disk_hit'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=8, help="256-px panning steps (default 8)")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    args = p.parse_args()
    rows = [measure(b, args) for b in args.batch]
    text = report(rows, args)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
