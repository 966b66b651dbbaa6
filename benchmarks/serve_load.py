"""igan-serve under load: several people at once on one server (issue 31).

The real server (`igan-serve` subprocess, embedded model, fresh temporary cache) and 8
simulated clients on loopback for a fixed time, each like a browser tab: its own client id
(`?client=`, as the page sends), at most 6 connections (a browser's per host), a 1024 x 576
view. Seven of them explore: they ask for the visible tiles they have not seen, wait for them,
look for a second, then pan one tile in a random direction (now and then zooming out to 1:2
and back). One of them zooms out: it asks for a 1:4 view of a place nobody has visited (16
native tiles behind each tile, hundreds in all), and when that has arrived, for another.

Per client: tile requests answered, p50/p95/max latency (request to last byte), errors (any
answer but 200), requests still unanswered when the time ran out; for the server: its RSS and
peak RSS (/api/stats) and native tiles rendered. `--compare` runs the same load a second time
without client ids (every request from one address: one queue, first come first served, what
igan-serve did before it served its clients in turn).

    .venv/bin/python benchmarks/serve_load.py --seconds 60 --compare \\
        --out benchmarks/results/serve-load-intel-xeon-2core-2026-12-08.md

Only drives a subprocess and HTTP: it never imports torch. Not a pytest suite (pytest collects
nothing here: no test functions, and the work runs only under __main__).
"""
from __future__ import annotations

import argparse
import platform
import random
import shlex
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import httpx

import serve_latency  # benchmarks/: this script's folder

TILE = 256
CONNECTIONS = 6  # a browser's connections per host over HTTP/1.1
VIEW = (1024, 576)


class Server(serve_latency.Server):
    """igan-serve in a subprocess (benchmarks/serve_latency.py's), with its /api/stats."""

    def stats(self) -> dict:
        return self.client.get("/api/stats", timeout=30).json()


def visible(cx: int, cy: int, level: int) -> list[tuple[int, int]]:
    """Tiles of level `level` covering the view centred on canvas (cx, cy), centre first."""
    span = TILE << level
    w, h = VIEW[0] << level, VIEW[1] << level
    x0, y0 = cx - w // 2, cy - h // 2
    tiles = [(tx, ty) for ty in range(y0 // span, (y0 + h - 1) // span + 1)
             for tx in range(x0 // span, (x0 + w - 1) // span + 1)]
    return sorted(tiles, key=lambda t: ((t[0] + 0.5) * span - cx) ** 2 + ((t[1] + 0.5) * span - cy) ** 2)


class Client(threading.Thread):
    def __init__(self, name: str, server: Server, canvas: str, deadline: float, start: tuple[int, int],
                 zoomer: bool, named: bool, seed: int):
        super().__init__(name=name, daemon=True)
        self.server, self.canvas, self.deadline, self.zoomer = server, canvas, deadline, zoomer
        self.query = f"?client={name}" if named else ""
        self.cx, self.cy = start
        self.random = random.Random(seed)
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.unfinished = 0
        self.views = 0

    def fetch(self, client: httpx.Client, level: int, t: tuple[int, int]) -> None:
        left = self.deadline - time.perf_counter()
        if left <= 0:
            self.unfinished += 1
            return
        start = time.perf_counter()
        try:
            r = client.get(f"/tiles/{self.canvas}/{-level}/{t[0]}/{t[1]}.png{self.query}", timeout=left)
        except httpx.TimeoutException:
            self.unfinished += 1
            return
        except httpx.HTTPError as e:
            self.errors.append(type(e).__name__)
            return
        if r.status_code == 200:
            self.latencies.append(time.perf_counter() - start)
        else:
            self.errors.append(str(r.status_code))

    def run(self) -> None:
        seen: set[tuple[int, int, int]] = set()
        limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
        with httpx.Client(base_url=self.server.url, limits=limits) as client, ThreadPoolExecutor(CONNECTIONS) as pool:
            level = 2 if self.zoomer else 0
            while time.perf_counter() < self.deadline:
                todo = [t for t in visible(self.cx, self.cy, level) if (level, *t) not in seen]
                list(pool.map(lambda t: self.fetch(client, level, t), todo))
                seen.update((level, *t) for t in todo)
                self.views += 1
                if self.zoomer:  # another place nobody has seen, at 1:4
                    self.cx += 8 * VIEW[0]
                    continue
                time.sleep(1.0)  # a look at the view
                if level == 0 and self.random.random() < 0.15:
                    level = 1
                elif level == 1:
                    level = 0
                else:
                    dx, dy = self.random.choice([(1, 0), (-1, 0), (0, 1), (0, -1), (1, 0)])
                    self.cx += dx * TILE
                    self.cy += dy * TILE


def run_load(args, named: bool) -> dict:
    root = Path(tempfile.mkdtemp(prefix="igan-serve-load-"))
    try:
        server = Server(root, "--device", args.device, "--batch", args.batch)
        canvas = httpx.post(f"{server.url}/api/canvas", json={"seed": 3}, timeout=60).json()["id"]
        httpx.get(f"{server.url}/tiles/{canvas}/0/-1000/0.png", timeout=120)  # the first forward pass, apart
        before = server.stats()
        deadline = time.perf_counter() + args.seconds
        clients = [Client(f"explorer{i}", server, canvas, deadline, (i * 20 * TILE, -TILE), False, named, i)
                   for i in range(args.clients - 1)]
        clients.append(Client("zoomer", server, canvas, deadline, (-400 * TILE, 0), True, named, 99))
        rss, stop = [], threading.Event()

        def sample():
            while not stop.wait(2.0):
                try:
                    rss.append(server.stats()["rss"])
                except httpx.HTTPError:
                    pass
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        for c in clients:
            c.start()
        for c in clients:
            c.join(args.seconds + 120)
        stop.set()
        sampler.join()
        after = server.stats()
        server.close()
        return {"named": named, "clients": clients, "rss_max": max(rss) if rss else after["rss"],
                "peak_rss": after["peak_rss"], "rendered": after["render"]["rendered"] - before["render"]["rendered"],
                "dropped": after["render"]["dropped"] - before["render"]["dropped"],
                "stale": after["tiles"].get("stale", 0), "busy": after["render"]["busy_seconds"]
                - before["render"]["busy_seconds"]}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def table(result: dict, seconds: float) -> list[str]:
    how = "client ids (served in turn)" if result["named"] else "no client ids (one queue, first come first served)"
    lines = [f"### {how}", "",
             f"Native tiles rendered: {result['rendered']} in {seconds:.0f} s ({result['rendered'] / seconds:.2f}/s; "
             f"{result['rendered'] / max(result['busy'], 1e-9):.2f}/s while rendering); dropped before rendering "
             f"(their client left or moved on): {result['dropped']}. Server RSS: at most "
             f"{result['rss_max'] / 2**20:.0f} MiB while sampled every 2 s, peak {result['peak_rss'] / 2**20:.0f} MiB.", "",
             "| client | views | tiles | p50 (s) | p95 (s) | max (s) | errors | cut off by the end (waiting or not sent) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for c in result["clients"]:
        lat = c.latencies
        cells = (f"{statistics.median(lat):.2f} | {pct(lat, 0.95):.2f} | {max(lat):.2f}" if lat else "- | - | -")
        errors = ", ".join(f"{e} x{c.errors.count(e)}" for e in sorted(set(c.errors))) or "0"
        lines.append(f"| {c.name}{' (1:4, cold)' if c.zoomer else ''} | {c.views} | {len(lat)} | {cells} | {errors} | "
                     f"{c.unfinished} |")
    return lines + [""]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--compare", action="store_true", help="also run without client ids (one queue)")
    p.add_argument("--note", default="", help="a sentence on the machine's state, for the report")
    p.add_argument("--out", default=None, help="also write the markdown report here")
    args = p.parse_args()
    from igan.engine import cpu  # torch-free

    results = [run_load(args, named=True)]
    if args.compare:
        results.append(run_load(args, named=False))
    lines = [f"# igan-serve under load: {args.clients} clients for {args.seconds:.0f} s — {date.today().isoformat()}", "",
             f"Machine: {cpu.summary()}, Python {platform.python_version()}. Server: `igan-serve --device {args.device} "
             f"--batch {args.batch}`, embedded model, fresh temporary cache. {args.note}".rstrip(), "",
             f"Command: `{shlex.join(['.venv/bin/python', 'benchmarks/serve_load.py'] + sys.argv[1:])}`", "",
             f"Clients (threads of one process, loopback): {args.clients - 1} explorers and one zoomer, each with "
             f"{CONNECTIONS} connections and a {VIEW[0]} x {VIEW[1]} view. An explorer asks for the visible tiles it "
             "has not seen, waits for them, looks for 1 s, then pans one tile (or zooms out to 1:2 and back); the "
             "zoomer asks for 1:4 views of places nobody has visited (16 native tiles behind each tile), one after "
             "another. Latency: request to last byte of a tile answered 200.", ""]
    for r in results:
        lines += table(r, args.seconds)
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
