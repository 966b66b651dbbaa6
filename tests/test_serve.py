"""igan-serve: tiles over HTTP, equal to igan-render's bytes; the pyramid; the caches;
cancellation and overload; the path, coordinate and name checks; render jobs; --open; for
more than one person: the token beyond loopback, --root-path, the job quota, ETag and 304,
clients served in turn, stale requests dropped.

The fast tests run the real app under uvicorn on a free local port with a synthetic tile
source (deterministic, and blockable, so queueing and cancellation are exact); the slow ones
start `igan-serve` itself with the embedded model and compare with `igan-render`'s files.
"""
from __future__ import annotations

import contextlib
import io
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tifffile
from PIL import Image

from igan.engine.serve.app import create_app
from igan.engine.serve.cache import DiskCache, MemoryLRU
from igan.engine.serve.canvas import Canvas, CanvasError, _fraction
from igan.engine.serve.app import check_root_path
from igan.engine.serve.jobs import JobQueue, JobsFull
from igan.engine.serve.scheduler import Scheduler
from igan.engine.serve.service import TileService
from igan.engine.serve.tiles import MAX_COORD, TILE, TileError, TileKey, decode_png, encode_png, halve, tile_key

ROOT = Path(__file__).resolve().parents[1]


# ---- a synthetic source and an in-process server ---------------------------------------------
def fake_pixels(seed: int, tx: int, ty: int) -> np.ndarray:
    """A deterministic tile: every 2x2 block has sums of every residue mod 4 somewhere, so the
    reduction's rounding is exercised; compresses to a few kB."""
    y, x = np.mgrid[0:TILE, 0:TILE]
    r = (x * 7 + y * 3 + 11 * tx + 5 * ty + seed) % 256
    g = (x * y + 3 * tx - ty) % 256
    b = ((x // 3) * 5 + (y // 5) * 9 + seed) % 256
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


class FakeSource:
    """Level 0 from fake_pixels; `gate` cleared blocks the render worker."""

    kind = "canvas"

    def __init__(self):
        self.gate = threading.Event()
        self.gate.set()
        self.busy = threading.Event()
        self.rendered: list[tuple[int, int, int]] = []
        self.batches: list[int] = []

    def reads(self, level):
        return level == 0

    def extent(self, level):
        return None

    def render(self, canvas, keys):
        self.busy.set()
        assert self.gate.wait(60)
        self.rendered += [(canvas.seed, k.x, k.y) for k in keys]
        self.batches.append(len(keys))
        return [fake_pixels(canvas.seed, k.x, k.y) for k in keys]


class ThreadServer:
    """uvicorn serving `app` on a free port of 127.0.0.1, in a thread of this process."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(20)


@contextlib.contextmanager
def fake_server(cache: Path, *, batch=4, queue=64, memory=64 << 20, max_level=3, jobs=None, token=None,
                root_path=""):
    source = FakeSource()
    service = TileService(source, Scheduler(source.render, batch), MemoryLRU(memory), DiskCache(cache),
                          max_waiting=queue)
    app = create_app(service, info={"kind": "canvas", "model": "fake", "max_level": max_level, "seed": 0},
                     jobs=jobs, model_identity={"fake": 1}, token=token, root_path=root_path)
    with ThreadServer(app) as server:
        server.source, server.service = source, service
        yield server


def register(url: str, **canvas) -> str:
    r = httpx.post(f"{url}/api/canvas", json=canvas)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def get_tile(url: str, canvas: str, zoom: int, x: int, y: int) -> np.ndarray:
    r = httpx.get(f"{url}/tiles/{canvas}/{zoom}/{x}/{y}.png", timeout=120)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    return decode_png(r.content)


def mosaic(url, canvas, zoom, xs, ys) -> np.ndarray:
    return np.concatenate([np.concatenate([get_tile(url, canvas, zoom, x, y) for x in xs], axis=1) for y in ys])


def stats(url: str) -> dict:
    return httpx.get(f"{url}/api/stats").json()


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def box_average(a: np.ndarray) -> np.ndarray:
    """The 2x2 mean rounded half up, written independently of tiles.halve."""
    a = a.astype(np.int64)
    return ((a[0::2, 0::2] + a[0::2, 1::2] + a[1::2, 0::2] + a[1::2, 1::2] + 2) // 4).astype(np.uint8)


# ---- the pyramid -------------------------------------------------------------------------------
def test_halve_is_the_rounded_2x2_mean_and_replicates_an_odd_edge(rng):
    a = rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)
    assert np.array_equal(halve(a), box_average(a))
    odd = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    padded = np.pad(odd, ((0, 1), (0, 1), (0, 0)), mode="edge")
    assert np.array_equal(halve(odd), box_average(padded))
    assert halve(np.full((2, 2, 3), 1, np.uint8))[0, 0, 0] == 1  # (1+1+1+1+2)//4
    assert halve(np.array([[[0], [1]], [[1], [0]]], np.uint8).repeat(3, 2))[0, 0, 0] == 1  # 2/4 rounds up


def test_coarse_tiles_are_box_averages_of_their_children(tmp_path):
    with fake_server(tmp_path) as s:
        c = register(s.url, seed=3)
        for zoom, x, y in [(-1, -1, 0), (-2, 0, -1), (-3, -1, -1)]:
            parent = get_tile(s.url, c, zoom, x, y)
            children = mosaic(s.url, c, zoom + 1, [2 * x, 2 * x + 1], [2 * y, 2 * y + 1])
            assert np.array_equal(parent, box_average(children)), (zoom, x, y)
        # every native tile was rendered once, whatever the order and the levels that asked for it
        assert len(s.source.rendered) == len(set(s.source.rendered))
        assert {(3, x, y) for x in range(-8, 0) for y in range(-8, 0)} <= set(s.source.rendered)


def test_native_tiles_are_the_source_pixels_at_negative_and_positive_coordinates(tmp_path):
    with fake_server(tmp_path) as s:
        c = register(s.url, seed=9)
        for x, y in [(-5, -1), (0, 0), (3, -7), (-(1 << 20), 12345)]:
            assert np.array_equal(get_tile(s.url, c, 0, x, y), fake_pixels(9, x, y))


# ---- caches ------------------------------------------------------------------------------------------
def test_revisits_hit_the_memory_cache_and_a_restart_hits_the_disk_cache(tmp_path):
    with fake_server(tmp_path) as s:
        c = register(s.url, seed=1)
        first = httpx.get(f"{s.url}/tiles/{c}/-1/0/0.png").content
        assert len(s.source.rendered) == 4
        again = httpx.get(f"{s.url}/tiles/{c}/-1/0/0.png")
        assert again.content == first and "immutable" in again.headers["cache-control"]
        st = stats(s.url)["tiles"]
        assert st["memory_hits"] == 1 and st["computed"] == 5 and len(s.source.rendered) == 4
    with fake_server(tmp_path) as s:  # a new server on the same cache folder
        c2 = register(s.url, seed=1)
        assert c2 == c  # the id digests the model and the canvas: stable across runs
        assert httpx.get(f"{s.url}/tiles/{c}/-1/0/0.png").content == first
        assert httpx.get(f"{s.url}/tiles/{c}/0/1/1.png").status_code == 200
        st = stats(s.url)["tiles"]
        assert (st["disk_hits"], st["computed"], s.source.rendered) == (2, 0, [])


def test_memory_cache_is_byte_bounded_lru():
    lru = MemoryLRU(100)
    keys = [TileKey("0" * 16, 0, i, 0) for i in range(5)]
    for k in keys[:3]:
        lru.put(k, b"x" * 30)
    assert lru.get(keys[0]) is not None  # now the most recent
    lru.put(keys[3], b"y" * 30)  # 120 bytes: the least recent (keys[1]) goes
    assert lru.get(keys[1]) is None and lru.get(keys[0]) is not None and lru.bytes == 90
    lru.put(keys[4], b"z" * 101)  # larger than the whole cache: not kept
    assert lru.get(keys[4]) is None and lru.bytes <= 100


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.mark.slow
def test_memory_stays_bounded_over_thousands_of_tile_requests(tmp_path):
    memory = 2 << 20
    with fake_server(tmp_path, memory=memory, batch=8) as s:
        c = register(s.url, seed=4)
        coords = [(x, y) for y in range(-20, 20) for x in range(-25, 25)]  # 2,000 distinct tiles
        with httpx.Client(base_url=s.url, timeout=60) as client:
            def fetch(xy):
                r = client.get(f"/tiles/{c}/0/{xy[0]}/{xy[1]}.png")
                return r.status_code, len(r.content)
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(fetch, coords[:200]))  # warm up allocators and the thread pool
                before = _rss()
                peak = 0
                for i in range(200, len(coords), 200):
                    results = list(pool.map(fetch, coords[i:i + 200]))
                    assert all(code == 200 for code, _ in results)
                    peak = max(peak, s.service.memory.bytes)
                list(pool.map(fetch, coords[::7]))  # revisits: from memory or disk
        grown = _rss() - before
        st = stats(s.url)
        assert st["tiles"]["requests"] >= 2000 + len(coords[::7])
        assert peak <= memory and st["memory_cache"]["bytes"] <= memory
        assert st["memory_cache"]["tiles"] < 2000 / 4  # most of the 2,000 tiles were evicted
        assert st["tiles"]["disk_hits"] > 0
        assert not s.service._flights and st["waiting"] == 0 and st["queued"] == 0
        assert grown < 40 << 20, f"RSS grew by {grown / 2**20:.0f} MiB over 2,000 tiles"


# ---- batching, sharing, cancellation, overload ------------------------------------------------------
def _raw_get(url: str, path: str, host: str = "127.0.0.1") -> socket.socket:
    """Send a GET on a raw socket (so the test can hang up before the answer)."""
    port = int(url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return sock


def _status(sock: socket.socket) -> int:
    sock.settimeout(30)
    head = sock.recv(64).decode()
    sock.close()
    return int(head.split()[1])


def test_concurrent_requests_are_batched_and_shared(tmp_path):
    with fake_server(tmp_path, batch=4) as s:
        c = register(s.url, seed=2)
        s.source.gate.clear()
        with ThreadPoolExecutor(9) as pool:
            first = pool.submit(get_tile, s.url, c, 0, 100, 0)
            wait_for(s.source.busy.is_set, what="the first render")
            # while it renders: 4 distinct tiles, each asked for twice
            rest = [pool.submit(get_tile, s.url, c, 0, x, 0) for x in (1, 2, 3, 4) for _ in range(2)]
            wait_for(lambda: stats(s.url)["waiting"] == 9 and stats(s.url)["queued"] == 4,
                     what="9 waiting requests for 4 queued tiles")
            s.source.gate.set()
            assert np.array_equal(first.result(), fake_pixels(2, 100, 0))
            for f, x in zip(rest, [1, 1, 2, 2, 3, 3, 4, 4]):
                assert np.array_equal(f.result(), fake_pixels(2, x, 0))
        assert s.source.batches == [1, 4]  # the four waiting tiles in one forward pass
        assert sorted(s.source.rendered) == sorted([(2, 100, 0)] + [(2, x, 0) for x in (1, 2, 3, 4)])


def test_a_request_whose_client_leaves_is_not_rendered(tmp_path):
    with fake_server(tmp_path, batch=1) as s:
        c = register(s.url, seed=5)
        s.source.gate.clear()
        with ThreadPoolExecutor(2) as pool:
            kept = pool.submit(get_tile, s.url, c, 0, 0, 0)
            wait_for(s.source.busy.is_set, what="the first render")
            gone = _raw_get(s.url, f"/tiles/{c}/-1/4/4.png")  # four native tiles behind it
            wait_for(lambda: stats(s.url)["queued"] == 4, what="four queued tiles")
            gone.close()  # the user panned away
            wait_for(lambda: stats(s.url)["tiles"]["cancelled"] == 1, what="the cancellation")
            assert stats(s.url)["queued"] == 0
            s.source.gate.set()
            assert np.array_equal(kept.result(), fake_pixels(5, 0, 0))
        wait_for(lambda: stats(s.url)["render"]["dropped"] == 4, what="the dropped tiles")
        assert s.source.rendered == [(5, 0, 0)]
        # asked again later, the tile is computed (nothing stale was cached)
        assert np.array_equal(get_tile(s.url, c, -1, 4, 4), box_average(mosaic(s.url, c, 0, [8, 9], [8, 9])))


def test_requests_beyond_the_queue_get_503(tmp_path):
    with fake_server(tmp_path, queue=2) as s:
        c = register(s.url, seed=6)
        s.source.gate.clear()
        waiting = [_raw_get(s.url, f"/tiles/{c}/0/{x}/0.png") for x in (0, 1)]
        wait_for(lambda: stats(s.url)["waiting"] == 2, what="two waiting requests")
        for x in (2, 3):
            r = httpx.get(f"{s.url}/tiles/{c}/0/{x}/0.png")
            assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
            assert "--queue 2" in r.json()["error"]
        cached = httpx.get(f"{s.url}/api/info")  # the rest of the server still answers
        assert cached.status_code == 200
        s.source.gate.set()
        assert [_status(w) for w in waiting] == [200, 200]
        assert stats(s.url)["tiles"]["rejected"] == 2
        assert httpx.get(f"{s.url}/tiles/{c}/0/2/0.png").status_code == 200  # admitted once there is room


# ---- safety ---------------------------------------------------------------------------------------
def test_tile_addresses_are_checked():
    c = "0123456789abcdef"
    assert tile_key(c, "-2", "-3", "4", 3) == TileKey(c, 2, -3, 4)
    assert tile_key(c, "0", str((MAX_COORD // TILE) - 1), str(-(MAX_COORD // TILE)), 3).level == 0
    bad = [(c, "1", "0", "0"), (c, "-4", "0", "0"), (c, "0", str(MAX_COORD // TILE), "0"),
           (c, "-3", "0", str(-(MAX_COORD // TILE))), (c, "0", "+1", "0"), (c, "0", "0x1", "0"),
           (c, "0", "1e3", "0"), (c, "0", " 1", "0"), (c, "0", "9" * 30, "0"), (c, "-0.5", "0", "0"),
           ("..", "0", "0", "0"), ("0123456789ABCDEF", "0", "0", "0"), (c + "0", "0", "0", "0")]
    for args in bad:
        with pytest.raises(TileError):
            tile_key(*args, max_level=3)


def test_no_request_reaches_a_path_outside_the_cache(tmp_path):
    cache, secret = tmp_path / "cache", tmp_path / "secret.txt"
    cache.mkdir()
    secret.write_text("do not serve")
    with fake_server(cache) as s:
        c = register(s.url, seed=0)
        paths = ["/static/../../secret.txt", "/static/%2e%2e/%2e%2e/secret.txt", "/static/..%2f..%2fsecret.txt",
                 "/static//etc/passwd", "/static/viewer.js/../../../setup.py", f"/tiles/../{c}/0/0/0.png",
                 f"/tiles/{c}/0/..%2f..%2fsecret/0.png", "/tiles/..%2f..%2fsecret/0/0/0.png",
                 f"/tiles/{c}/0/0/-0.5.png", f"/tiles/{c}/1/0/0.png", f"/tiles/{c}/-4/0/0.png",
                 f"/tiles/{c}/0/{1 << 40}/0.png", "/tiles/ffffffffffffffff/0/0/0.png", "/api/jobs/../../secret.txt"]
        for path in paths:
            sock = _raw_get(s.url, path)
            sock.settimeout(10)
            answer = sock.recv(1 << 16).decode(errors="replace")
            sock.close()
            status = int(answer.split()[1])
            assert status in (400, 404), (path, answer[:200])
            assert "do not serve" not in answer and "setup(" not in answer, path
        assert s.source.rendered == []
        assert httpx.get(f"{s.url}/static/leaflet/leaflet.js").status_code == 200  # the real files are there
        assert httpx.get(f"{s.url}/tiles/{c}/0/0/0.png").status_code == 200
    written = sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file())
    assert written == [f"{c}/0/0/0.png"]


def test_foreign_host_headers_and_cross_site_posts_are_refused(tmp_path):
    with fake_server(tmp_path) as s:
        assert _status(_raw_get(s.url, "/api/info", host="attacker.example")) == 400  # DNS rebinding
        assert _status(_raw_get(s.url, "/api/info", host="localhost:1234")) == 200
        form = httpx.post(f"{s.url}/api/canvas", content=b'{"seed": 1}',
                          headers={"content-type": "text/plain"})  # what a form on another site can send
        assert form.status_code == 400
        huge = httpx.post(f"{s.url}/api/canvas", json={"seed": 1, "x": "a" * 100_000})
        assert huge.status_code == 400
        preflight = httpx.options(f"{s.url}/api/jobs", headers={"origin": "http://attacker.example",
                                                              "access-control-request-method": "POST"})
        assert preflight.status_code == 405 and "access-control-allow-origin" not in preflight.headers


@pytest.mark.parametrize("canvas, message", [
    ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"), ({"seed": True}, "seed"), ({"period": 1000}, "multiple"),
    ({"period": 1 << 21}, "period"), ({"styles": [{"seed": 1, "x": 0}]}, "{seed, x, y}"),
    ({"styles": [{"seed": 1, "x": 0, "y": 1 << 40}]}, "style y"), ({"blur": 0, "styles": []}, "blur"),
    ({"seed": 1, "path": "/etc"}, "unknown"), ([1, 2], "object")])
def test_bad_canvases_are_refused(canvas, message):
    with pytest.raises(CanvasError, match=re.escape(message)):
        Canvas.from_json(canvas)


def test_a_panorama_renders_each_tile_of_its_period_once(tmp_path):
    with fake_server(tmp_path) as s:
        c = register(s.url, seed=7, period=768)  # three native tiles
        row = [get_tile(s.url, c, 0, x, 0) for x in range(-4, 5)]
        for x, tile in zip(range(-4, 5), row):
            assert np.array_equal(tile, fake_pixels(7, x % 3, 0))
        # 512-px tiles do not divide the period; their children are still the period's tiles
        parent = get_tile(s.url, c, -1, 2, 0)
        assert np.array_equal(parent, box_average(np.concatenate(
            [np.concatenate([fake_pixels(7, x % 3, y) for x in (4, 5)], axis=1) for y in (0, 1)])))
        assert sorted(s.source.rendered) == [(7, x, y) for x in range(3) for y in (0, 1) if (x, y) != (0, 1)]


def test_a_panorama_caches_one_period():
    pano = Canvas(seed=1, period=1024)
    assert [pano.canonical_x(0, x) for x in (-5, -1, 0, 3, 4, 9)] == [3, 3, 0, 3, 0, 1]
    assert pano.canonical_x(2, 7) == 0 and pano.canonical_x(3, 5) == 5  # 2048 px tiles: not a whole period


def test_style_centres_become_exact_fractions_of_the_window(rng):
    for _ in range(2000):
        origin, size = int(rng.integers(-10**9, 10**9)), int(rng.integers(16, 1 << 20))
        c = origin + int(rng.integers(-size, 2 * size))
        f = _fraction(c, origin, size)
        assert origin + f * size == c  # what igan-render computes from --style-centers
    opts = Canvas(seed=3, styles=((7, 100, -20), (9, 700, 40))).render_options(-300, -128, 1200, 256)
    assert opts["styles"] == (7, 9) and opts["style_blur"] == 127
    for (fx, fy), (_, x, y) in zip(opts["style_centers"], ((7, 100, -20), (9, 700, 40))):
        assert (-300 + fx * 1200, -128 + fy * 256) == (x, y)


def _job_queue(out: Path, **quota) -> JobQueue:
    return JobQueue(out, {"checkpoint": None, "config": None, "model": None, "backend": "torch",
                          "precision": "fp32"}, "cpu", **quota)


def test_jobs_never_write_outside_the_output_folder_nor_replace_a_file(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.png").write_bytes(b"precious")
    (tmp_path / "cache").mkdir()
    with fake_server(tmp_path / "cache", jobs=_job_queue(out)) as s:
        c = register(s.url, seed=0)
        job = {"canvas": c, "x0": 0, "y0": 0, "width": 64, "height": 64}
        for name in ["../evil", "/tmp/evil", "a/b", ".hidden", "x.png", "..", "", "a" * 97, "évil", 7]:
            r = httpx.post(f"{s.url}/api/jobs", json=job | {"name": name})
            assert r.status_code == 400 and "name must be" in r.json()["error"], (name, r.text)
        r = httpx.post(f"{s.url}/api/jobs", json=job | {"name": "mine"})
        assert r.status_code == 409 and "never replaces" in r.json()["error"]
        for bad in [{"format": "exe"}, {"width": 0}, {"width": 1.5}, {"x0": MAX_COORD}, {"canvas": "../x"}]:
            r = httpx.post(f"{s.url}/api/jobs", json=job | bad)
            assert r.status_code in (400, 404), (bad, r.text)
        wrap = register(s.url, seed=0, period=512)
        r = httpx.post(f"{s.url}/api/jobs", json=job | {"canvas": wrap})
        assert r.status_code == 400 and "whole period" in r.json()["error"]
        assert httpx.get(f"{s.url}/api/jobs/0123/file").status_code == 404
    assert (out / "mine.png").read_bytes() == b"precious"
    assert sorted(p.name for p in out.iterdir()) == ["mine.png"]
    assert not list(tmp_path.glob("evil*")) and not Path("/tmp/evil.png").exists()


def test_serve_help_does_not_load_torch():
    code = ("import sys\nfrom igan.engine.cli.serve import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', [n for n in ('torch', 'numpy', 'starlette', 'uvicorn') if n in sys.modules], "
            "file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "usage: igan-serve" in done.stdout and "HEAVY []" in done.stderr, done.stderr


def test_console_script_and_packaging_are_declared():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text()).get("project", {})
    setup = (ROOT / "setup.py").read_text()
    scripts = project.get("scripts", {})
    assert scripts.get("igan-serve") == "igan.engine.cli.serve:main" or \
        '"igan-serve=igan.engine.cli.serve:main"' in setup
    serve = " ".join(project.get("optional-dependencies", {}).get("serve", [])) or setup
    assert "starlette" in serve and "uvicorn" in serve
    assert '"igan.engine.serve": ["static/*.html", "static/*.js", "static/*.css", "static/leaflet/*"]' in setup
    assert "serve)" in (ROOT / "run").read_text()
    static = ROOT / "engine" / "serve" / "static"
    for name in ("index.html", "viewer.js", "viewer.css", "leaflet/leaflet.js", "leaflet/leaflet.css",
                 "leaflet/LICENSE.txt"):
        assert (static / name).is_file(), name
    html = (static / "index.html").read_text()
    assert "http://" not in html and "https://" not in html  # no CDN: everything is package data


def test_png_round_trip_pads_edge_tiles():
    a = fake_pixels(1, 2, 3)[:100, :37]
    data = encode_png(a)
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (TILE, TILE) and im.mode == "RGBA"
    assert np.array_equal(decode_png(data), a)
    assert np.array_equal(decode_png(encode_png(fake_pixels(0, 0, 0))), fake_pixels(0, 0, 0))


# ---- the real thing: igan-serve with the embedded model ------------------------------------------
class Serve:
    """`igan-serve --port 0 ARGS` in a subprocess; the URL from its first line."""

    def __init__(self, *args, cwd=None):
        self.proc = subprocess.Popen([sys.executable, "-m", "igan.engine.cli.serve", "--port", "0", *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
        line = self.proc.stdout.readline()
        found = re.search(r"http://(127\.0\.0\.1|0\.0\.0\.0):(\d+)", line)
        if not found:
            self.proc.kill()
            raise AssertionError(f"igan-serve did not start: {line}{self.proc.stderr.read()}")
        self.url, self.line = f"http://127.0.0.1:{found.group(2)}", line

    def close(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


def igan_render(out: Path, *args) -> np.ndarray:
    from igan.engine.cli.render import main

    assert main(["--out", str(out), "--quiet", "--device", "cpu", *map(str, args)]) == 0
    return np.asarray(Image.open(out)) if out.suffix == ".png" else tifffile.imread(out)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    (root / "cache").mkdir()
    (root / "out").mkdir()
    server = Serve("--device", "cpu", "--cache", root / "cache", "--output", root / "out", "--batch", 2)
    server.root = root
    yield server
    err = server.close()
    assert server.proc.returncode == 0, err


@pytest.mark.slow
def test_tiles_equal_igan_render_at_negative_and_positive_coordinates(served, tmp_path):
    c = register(served.url, seed=5)
    ref = igan_render(tmp_path / "ref.png", "--seed", 5, "--x0", -512, "--y0", -256, "--width", 768, "--height", 512)
    assert np.array_equal(mosaic(served.url, c, 0, [-2, -1, 0], [-1, 0]), ref)
    far = igan_render(tmp_path / "far.png", "--seed", 5, "--x0", 3 << 28, "--y0", -(5 << 20), "--width", 256,
                      "--height", 256)
    assert np.array_equal(get_tile(served.url, c, 0, 3 << 20, -(5 << 12)), far)


@pytest.mark.slow
def test_coarse_tiles_equal_igan_render_tiff_pyramid(served, tmp_path):
    c = register(served.url, seed=8)
    tif = tmp_path / "ref.tif"
    igan_render(tif, "--seed", 8, "--x0", 0, "--y0", -512, "--width", 512, "--height", 512)
    with tifffile.TiffFile(tif) as f:
        level0, level1 = (level.asarray() for level in f.series[0].levels)
    assert np.array_equal(mosaic(served.url, c, 0, [0, 1], [-2, -1]), level0)
    assert np.array_equal(get_tile(served.url, c, -1, 0, -1), level1)  # the TIFF's 2x level is our zoom -1


@pytest.mark.slow
def test_wrap_tiles_repeat_and_equal_igan_render_wrap(served, tmp_path):
    c = register(served.url, seed=2, period=512)
    ref = igan_render(tmp_path / "pano.png", "--seed", 2, "--wrap", "--x0", 0, "--y0", -256, "--width", 512,
                      "--height", 256)
    assert np.array_equal(mosaic(served.url, c, 0, [0, 1], [-1]), ref)
    assert np.array_equal(mosaic(served.url, c, 0, [6, -1], [-1]), ref)  # x = 6 is 0 again, -1 is 1


def _run_job(url: str, body: dict, timeout: float = 240) -> tuple[dict, list[float]]:
    r = httpx.post(f"{url}/api/jobs", json=body)
    assert r.status_code == 201, r.text
    job, seen = r.json(), []
    deadline = time.time() + timeout
    while job["state"] in ("queued", "running"):
        assert time.time() < deadline, job
        time.sleep(0.2)
        job = httpx.get(f"{url}/api/jobs/{job['id']}").json()
        seen.append(job["progress"])
    return job, seen


@pytest.mark.slow
def test_render_job_with_styles_writes_the_viewers_pixels(served):
    styles = [{"seed": 11, "x": -300, "y": 10}, {"seed": 12, "x": 200, "y": -40}]
    c = register(served.url, seed=4, styles=styles, blur=63)
    job, seen = _run_job(served.url, {"canvas": c, "x0": -512, "y0": -256, "width": 768, "height": 256,
                                      "name": "fused"})
    assert job["state"] == "done", job
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert job["command"].startswith("igan-render ") and "--styles 11,12" in job["command"]
    out = served.root / "out" / "fused.png"
    download = httpx.get(f"{served.url}{job['download']}")
    assert download.status_code == 200 and download.content == out.read_bytes()
    pixels = np.asarray(Image.open(out))
    assert np.array_equal(pixels, mosaic(served.url, c, 0, [-2, -1, 0], [-1]))
    # the same command line, run by hand, writes the same file
    argv = job["command"].split()[1:]
    by_hand = served.root / "by-hand.png"
    argv[argv.index("--out") + 1] = str(by_hand)
    from igan.engine.cli.render import main

    assert main(argv + ["--quiet", "--device", "cpu"]) == 0
    assert np.array_equal(np.asarray(Image.open(by_hand)), pixels)
    assert sorted(p.name for p in (served.root / "out").iterdir()) == ["fused.png"]  # nothing else written


@pytest.mark.slow
def test_cancelling_a_coarse_tile_stops_its_native_renders(served):
    c = register(served.url, seed=77)
    before = stats(served.url)["render"]
    sock = _raw_get(served.url, f"/tiles/{c}/-3/0/0.png")  # 64 native tiles
    wait_for(lambda: stats(served.url)["render"]["rendered"] >= before["rendered"] + 2, timeout=60,
             what="the first native tiles")
    sock.close()
    wait_for(lambda: stats(served.url)["queued"] == 0 and stats(served.url)["waiting"] == 0, what="the drop")
    after = stats(served.url)["render"]
    assert after["dropped"] - before["dropped"] >= 40
    assert after["rendered"] - before["rendered"] <= 24


@pytest.mark.slow
def test_open_serves_a_tiff_and_a_zarr_from_their_levels(tmp_path):
    tif, zarr_out = tmp_path / "pano.tif", tmp_path / "pano.zarr"
    window = ["--seed", 3, "--x0", 0, "--y0", -200, "--width", 700, "--height", 400]
    igan_render(tif, *window)
    from igan.engine.cli.render import main

    assert main(["--out", str(zarr_out), "--quiet", "--device", "cpu", *map(str, window)]) == 0
    with tifffile.TiffFile(tif) as f:
        levels = [level.asarray() for level in f.series[0].levels]
    assert [lv.shape[:2] for lv in levels] == [(400, 700), (200, 350), (100, 175)]
    cache = tmp_path / "cache"
    cache.mkdir()
    for path in (tif, zarr_out):
        server = Serve("--open", path, "--cache", cache)
        try:
            info = httpx.get(f"{server.url}/api/info").json()
            assert (info["kind"], info["width"], info["height"], info["max_level"]) == ("file", 700, 400, 2)
            c = info["canvas"]
            assert np.array_equal(mosaic(server.url, c, 0, [0, 1, 2], [0, 1]), levels[0])
            assert np.array_equal(mosaic(server.url, c, -1, [0, 1], [0]), levels[1])  # read or reduced: equal
            assert np.array_equal(get_tile(server.url, c, -2, 0, 0), levels[2])
            assert np.array_equal(levels[2], halve(levels[1]))  # the file's pyramid is our reduction
            assert httpx.get(f"{server.url}/tiles/{c}/0/3/0.png").status_code == 404  # beyond the image
            assert httpx.get(f"{server.url}/tiles/{c}/0/-1/0.png").status_code == 404
            r = httpx.post(f"{server.url}/api/jobs", json={"canvas": c, "x0": 0, "y0": 0, "width": 8, "height": 8})
            assert r.status_code == 409
            assert httpx.get(f"{server.url}/api/stats").json()["render"]["rendered"] > 0
        finally:
            server.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "pano.tif", "pano.zarr"]


@pytest.mark.slow
def test_open_keeps_memory_bounded_over_thousands_of_requests(tmp_path):
    """A 4096 x 2048 Zarr (128 tiles at level 0, 171 with its levels), 3,000 requests with a
    1 MiB memory cache: the server's RSS does not follow the number of requests."""
    import zarr

    y, x = np.mgrid[0:2048, 0:4096]
    image = np.stack([(x * 3 + y) % 256, (x ^ y) % 256, (y * 5) % 256], axis=-1).astype(np.uint8)
    arr = zarr.create_array(str(tmp_path / "big.zarr"), shape=image.shape, chunks=(256, 256, 3), dtype="uint8")
    arr[:] = image
    cache = tmp_path / "cache"
    cache.mkdir()
    server = Serve("--open", tmp_path / "big.zarr", "--cache", cache, "--memory-cache", "1MiB")
    try:
        c = httpx.get(f"{server.url}/api/info").json()["canvas"]
        addresses = [(-z, tx, ty) for z in range(4) for ty in range(8 >> z) for tx in range(16 >> z)]
        requests = [addresses[i % len(addresses)] for i in range(3000)]
        with httpx.Client(base_url=server.url, timeout=60) as client, ThreadPoolExecutor(8) as pool:
            def fetch(a):
                return client.get(f"/tiles/{c}/{a[0]}/{a[1]}/{a[2]}.png").status_code
            assert set(pool.map(fetch, requests[:500])) == {200}
            rss = [stats(server.url)["rss"]]
            for i in range(500, 3000, 500):
                assert set(pool.map(fetch, requests[i:i + 500])) == {200}
                rss.append(stats(server.url)["rss"])
        st = stats(server.url)
        assert st["tiles"]["requests"] >= 3000 and st["memory_cache"]["bytes"] <= 1 << 20
        assert st["tiles"]["disk_hits"] > 1000
        assert max(rss) - rss[0] < 30 << 20, [r >> 20 for r in rss]
        assert np.array_equal(get_tile(server.url, c, 0, 15, 7), image[1792:, 3840:])
    finally:
        server.close()


@pytest.mark.slow
def test_a_cancelled_job_leaves_nothing_behind(served):
    c = register(served.url, seed=31)
    r = httpx.post(f"{served.url}/api/jobs", json={"canvas": c, "x0": 0, "y0": -512, "width": 4096, "height": 1024,
                                                   "name": "cancelled"})
    assert r.status_code == 201, r.text
    job = r.json()
    wait_for(lambda: httpx.get(f"{served.url}/api/jobs/{job['id']}").json()["tiles_done"] >= 1, timeout=120,
             what="the job's first tile")
    assert httpx.delete(f"{served.url}/api/jobs/{job['id']}").json()["state"] == "cancelled"
    wait_for(lambda: not list((served.root / "out").glob("*cancelled*")), timeout=60, what="the cleanup")
    time.sleep(1)
    assert httpx.get(f"{served.url}/api/jobs/{job['id']}/file").status_code == 404
    assert not any("cancelled" in p.name for p in (served.root / "out").iterdir())


# ---- for more than one person ----------------------------------------------------------------
TOKEN = "s3cret-token-for-the-test_0123"


def test_with_a_token_every_request_must_carry_it(tmp_path):
    with fake_server(tmp_path, token=TOKEN) as s:
        c_path = "/tiles/0123456789abcdef/0/0/0.png"
        for path in ("/", "/api/info", "/static/viewer.js", c_path, "/api/stats"):
            r = httpx.get(s.url + path)
            assert r.status_code == 401, (path, r.status_code)
            assert "token" in r.json()["error"] and r.headers["www-authenticate"].startswith("Bearer")
        for wrong in ({"params": {"token": TOKEN[:-1]}}, {"headers": {"authorization": "Bearer " + TOKEN + "x"}},
                      {"cookies": {"igan_token": TOKEN}}, {"headers": {"authorization": TOKEN}}):
            assert httpx.get(s.url + "/api/info", **wrong).status_code == 401, wrong
        assert "wrong token" in httpx.get(s.url + "/api/info", params={"token": "x"}).json()["error"]
        assert httpx.post(s.url + "/api/canvas", json={"seed": 1}).status_code == 401

        # the printed address: the page sets the cookie and sends the browser to itself without the token
        r = httpx.get(f"{s.url}/?token={TOKEN}&x=1")
        assert r.status_code == 303 and r.headers["location"] == "/?x=1"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        name, value = cookie.split(";")[0].split("=", 1)
        assert value == TOKEN
        with httpx.Client(base_url=s.url, cookies={name: value}) as browser:
            assert "igan-serve" in browser.get("/").text
            c = browser.post("/api/canvas", json={"seed": 1}).json()["id"]
            tile = browser.get(f"/tiles/{c}/0/0/0.png")
            assert tile.status_code == 200 and np.array_equal(decode_png(tile.content), fake_pixels(1, 0, 0))
        bearer = {"authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{s.url}/tiles/{c}/0/1/0.png", headers=bearer).status_code == 200
        r = httpx.get(f"{s.url}/api/info?token={TOKEN}")  # the token on any URL: answered, and a cookie
        assert r.status_code == 200 and r.json()["kind"] == "canvas" and name in r.headers["set-cookie"]
        assert s.source.rendered == [(1, 0, 0), (1, 1, 0)]


def test_without_a_token_no_credential_is_asked(tmp_path):
    with fake_server(tmp_path) as s:
        assert httpx.get(s.url + "/api/info").status_code == 200
        assert "set-cookie" not in httpx.get(f"{s.url}/?token=anything").headers


def test_root_path_prefixes_the_pages_urls(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "cache").mkdir()
    with fake_server(tmp_path / "cache", root_path="/maps/igan", token=TOKEN, jobs=_job_queue(out)) as s:
        r = httpx.get(f"{s.url}/maps/igan/?token={TOKEN}")  # the proxy passes the prefix on
        assert r.status_code == 303 and r.headers["location"] == "/maps/igan/"
        assert "Path=/maps/igan;" in r.headers["set-cookie"]
        with httpx.Client(base_url=s.url, headers={"authorization": f"Bearer {TOKEN}"}) as client:
            page = client.get("/maps/igan/").text
            assert 'data-root="/maps/igan"' in page
            assert '"/maps/igan/static/leaflet/leaflet.js"' in page and '"/static/' not in page
            moved = client.get("/maps/igan")
            assert moved.status_code == 307 and moved.headers["location"] == "/maps/igan/"
            assert client.get("/maps/igan/api/info").json()["root_path"] == "/maps/igan"
            assert client.get("/api/info").status_code == 200  # a proxy that strips the prefix
            c = client.post("/maps/igan/api/canvas", json={"seed": 2}).json()["id"]
            assert client.get(f"/maps/igan/tiles/{c}/0/0/0.png").status_code == 200
            assert client.get("/maps/igan/static/viewer.js").status_code == 200
    for good, normal in [("", ""), ("/", ""), ("/igan", "/igan"), ("/a/b.c/", "/a/b.c")]:
        assert check_root_path(good) == normal
    for bad in ["igan", "/a b", "/a/../b", "//x", "/a?b", '/a"b', "/<script>"]:
        with pytest.raises(ValueError, match="(--root-path|root_path) must be") as e:
            check_root_path(bad)
        assert repr(bad) in str(e.value)


def test_tiles_have_a_strong_etag_and_if_none_match_gets_304(tmp_path):
    with fake_server(tmp_path) as s:
        c = register(s.url, seed=3, period=768)
        first = httpx.get(f"{s.url}/tiles/{c}/0/1/0.png")
        etag = first.headers["etag"]
        assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
        assert "immutable" in first.headers["cache-control"]
        assert httpx.get(f"{s.url}/tiles/{c}/0/4/0.png").headers["etag"] == etag  # the same tile, a period on
        other = httpx.get(f"{s.url}/tiles/{c}/0/2/0.png")
        assert other.headers["etag"] != etag
        rendered = list(s.source.rendered)
        for header in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
            r = httpx.get(f"{s.url}/tiles/{c}/0/1/0.png", headers={"if-none-match": header})
            assert r.status_code == 304 and r.content == b"", header
            assert r.headers["etag"] == etag and "immutable" in r.headers["cache-control"]
        s.service.memory = MemoryLRU(1 << 20)  # forgotten in memory: still answered without a render
        r = httpx.get(f"{s.url}/tiles/{c}/0/1/0.png", headers={"if-none-match": etag})
        assert r.status_code == 304
        stale = httpx.get(f"{s.url}/tiles/{c}/0/1/0.png", headers={"if-none-match": other.headers["etag"]})
        assert stale.status_code == 200 and stale.content == first.content
        assert s.source.rendered == rendered and stats(s.url)["tiles"]["not_modified"] == 5
        assert register(s.url, seed=4, period=768) != c
        assert httpx.get(f"{s.url}/tiles/{register(s.url, seed=4, period=768)}/0/1/0.png").headers["etag"] != etag


def test_the_scheduler_serves_clients_in_turn_newest_view_first():
    gate, order = threading.Event(), []

    def render(group, items):
        assert gate.wait(30)
        order.extend(items)
        return items

    sched = Scheduler(render, batch=1)
    try:
        hold = sched.submit("g", "held", client="z")
        wait_for(lambda: sched.pending == 0, what="the worker to take the first")
        futures = [sched.submit("g", f"a{i}", client="a") for i in range(5)]
        futures += [sched.submit("g", f"b{i}", client="b", view=1) for i in range(2)]
        futures += [sched.submit("g", "b-new", client="b", view=2), sched.submit("g", "c0", client="c")]
        assert sched.pending_by_client() == {"a": 5, "b": 3, "c": 1}
        gate.set()
        hold.result(30)
        for f in futures:
            f.result(30)
        assert order == ["held", "a0", "b-new", "c0", "a1", "b0", "a2", "b1", "a3", "a4"]
    finally:
        gate.set()
        sched.close()
    # a batch is one group, filled from the client whose turn it is, then from the others
    gate.clear()
    order.clear()
    sched = Scheduler(render, batch=3)
    try:
        hold = sched.submit("g", "held", client="z")
        wait_for(lambda: sched.pending == 0, what="the worker to take the first")
        futures = [sched.submit(g, f"{c}{g}{i}", client=c) for c, g in (("a", "x"), ("b", "y"), ("c", "x"))
                   for i in range(2)]
        gate.set()
        [f.result(30) for f in [hold, *futures]]
        assert order == ["held", "ax0", "ax1", "cx0", "by0", "by1", "cx1"]
    finally:
        gate.set()
        sched.close()


def _hold_worker(s, client="holder"):
    """A request that keeps the render worker busy until the gate opens."""
    s.source.gate.clear()
    c = register(s.url, seed=90)
    held = _raw_get(s.url, f"/tiles/{c}/0/0/0.png?client={client}")
    wait_for(s.source.busy.is_set, what="the first render")
    return held


def test_one_clients_zoom_out_does_not_starve_another_client(tmp_path):
    for named in (True, False):
        (tmp_path / str(named)).mkdir()
        with fake_server(tmp_path / str(named), batch=1) as s:
            held = _hold_worker(s)
            a, b = register(s.url, seed=1), register(s.url, seed=2)
            q = (lambda who: f"?client={who}") if named else (lambda who: "")
            zoom_out = _raw_get(s.url, f"/tiles/{a}/-2/0/0.png{q('alice')}")  # 16 native tiles
            wait_for(lambda: stats(s.url)["queued"] == 16, what="alice's 16 native tiles")
            bob = [_raw_get(s.url, f"/tiles/{b}/0/{x}/5.png{q('bob')}") for x in (0, 1)]
            wait_for(lambda: stats(s.url)["queued"] == 18, what="bob's 2 tiles")
            assert stats(s.url)["queued_clients"] == (2 if named else 1)
            s.source.gate.set()
            assert [_status(r) for r in [held, zoom_out, *bob]] == [200] * 4
            order = [seed for seed, _, _ in s.source.rendered]
            assert len(order) == 19
            if named:  # served in turn: bob's two tiles come second and fourth, not after alice's 16
                assert [i for i, seed in enumerate(order) if seed == 2] == [2, 4], order
            else:  # one address, one queue: first come, first served (what fairness is measured against)
                assert [i for i, seed in enumerate(order) if seed == 2] == [17, 18], order


def test_a_client_that_moves_on_drops_its_requests_for_the_old_view(tmp_path):
    with fake_server(tmp_path, batch=1) as s:
        held = _hold_worker(s)
        c = register(s.url, seed=4)
        old = [_raw_get(s.url, f"/tiles/{c}/-1/{x}/0.png?client=alice") for x in (0, 1)]  # 8 native tiles
        other = _raw_get(s.url, f"/tiles/{c}/-1/0/0.png?client=bob")  # bob shows one of them too
        wait_for(lambda: stats(s.url)["waiting"] == 4, what="four waiting requests")
        assert stats(s.url)["queued"] == 8
        new = _raw_get(s.url, f"/tiles/{c}/0/40/0.png?client=alice")  # alice zoomed in elsewhere
        wait_for(lambda: stats(s.url)["tiles"]["stale"] == 2, what="alice's old requests to be dropped")
        wait_for(lambda: stats(s.url)["queued"] == 5, what="the dropped tiles to leave the queue")
        assert [_status(r) for r in old] == [499, 499]
        s.source.gate.set()
        assert _status(new) == 200 and _status(other) == 200 and _status(held) == 200
        assert sorted(s.source.rendered) == sorted([(90, 0, 0), (4, 40, 0)] + [(4, x, y) for x in (0, 1) for y in (0, 1)])


def test_render_jobs_have_a_quota_of_jobs_at_once_and_of_bytes(tmp_path):
    canvas = Canvas(seed=1)
    queue = _job_queue(tmp_path, max_jobs=2)
    queue.submit(canvas, 0, 0, 64, 64)
    queue.submit(canvas, 0, 0, 64, 64)
    with pytest.raises(JobsFull, match=r"--max-jobs 2") as e:
        queue.submit(canvas, 0, 0, 64, 64)
    assert e.value.status == 429
    queue = _job_queue(tmp_path, max_bytes=100_000)
    first = queue.submit(canvas, 0, 0, 128, 128)  # 48 KiB uncompressed
    with pytest.raises(JobsFull, match=r"200x100 png may write up to 58\.6 KiB; with the 48\.0 KiB of earlier jobs "
                                       r"that passes this server's quota \(--jobs-size 97\.7 KiB\)") as e:
        queue.submit(canvas, 0, 0, 200, 100)
    assert e.value.status == 413
    queue.cancel(first)  # a cancelled job gives its share back; a finished one counts its file
    queue.submit(canvas, 0, 0, 200, 100, "tif")  # 58.6 KiB and its pyramid
    with pytest.raises(JobsFull, match="--jobs-size"):
        queue.submit(canvas, 0, 0, 100, 100)
    (tmp_path / "out").mkdir()
    (tmp_path / "cache").mkdir()
    with fake_server(tmp_path / "cache", jobs=_job_queue(tmp_path / "out", max_bytes=1 << 20)) as s:
        c = register(s.url, seed=0)
        r = httpx.post(f"{s.url}/api/jobs", json={"canvas": c, "x0": 0, "y0": 0, "width": 1024, "height": 1024})
        assert r.status_code == 413 and "--jobs-size 1.0 MiB" in r.json()["error"]
    assert list((tmp_path / "out").iterdir()) == []


def test_cache_folder_is_created_and_the_token_is_required_beyond_loopback(tmp_path, monkeypatch, capsys):
    from igan.engine.cli import serve as cli

    seen = []
    monkeypatch.setattr(cli, "_serve", lambda args, cache: seen.append((args, cache)) or 0)
    cache = tmp_path / "new" / "tiles"
    assert cli.main(["--cache", str(cache)]) == 0
    assert cache.is_dir() and seen[-1][1] == str(cache) and seen[-1][0].token is None  # loopback: no token
    assert cli.main(["--host", "0.0.0.0", "--root-path", "/igan/"]) == 0
    args = seen[-1][0]
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", args.token) and args.root_path == "/igan"
    assert cli.address("0.0.0.0", 8000, args.root_path, args.token) == f"http://0.0.0.0:8000/igan/?token={args.token}"
    assert cli.main(["--host", "::"]) == 0 and seen[-1][0].token != args.token  # a new one each start
    assert cli.main(["--host", "127.0.0.1", "--token", TOKEN]) == 0 and seen[-1][0].token == TOKEN
    (tmp_path / "file").write_text("x")
    for argv, message in [(["--cache", str(tmp_path / "file")], "--cache '%s' exists and is not a folder"
                            % (tmp_path / "file")),
                          (["--token", "short"], "--token must be 16-256"),
                          (["--token", "x" * 20 + "&y"], "with others"),
                          (["--root-path", "../up"], "--root-path must be a URL path like /igan"),
                          (["--max-jobs", "0"], "--max-jobs"), (["--jobs-size", "0"], "--jobs-size")]:
        with pytest.raises(SystemExit):
            cli.main(argv)
        assert message in capsys.readouterr().err, argv
    assert len(seen) == 4


def test_served_beyond_loopback_the_printed_address_carries_the_token(tmp_path):
    import zarr

    arr = zarr.create_array(str(tmp_path / "small.zarr"), shape=(256, 512, 3), chunks=(256, 256, 3), dtype="uint8")
    arr[:] = fake_pixels(0, 0, 0)[:, np.r_[0:256, 0:256]]
    server = Serve("--open", tmp_path / "small.zarr", "--host", "0.0.0.0", "--root-path", "/igan", "--cache",
                   tmp_path / "made-by-igan-serve")
    try:
        line = server.line
        found = re.search(r"http://0\.0\.0\.0:(\d+)/igan/\?token=([A-Za-z0-9_-]{32})\s", line)
        assert found, line
        base, token = f"http://127.0.0.1:{found.group(1)}/igan", found.group(2)
        assert httpx.get(f"{base}/api/info").status_code == 401
        assert httpx.get(f"{base}/api/info", headers={"authorization": f"Bearer {token}"}).status_code == 200
        r = httpx.get(f"{base}/?token={token}")
        assert r.status_code == 303 and r.headers["location"] == "/igan/"
        assert (tmp_path / "made-by-igan-serve").is_dir()
    finally:
        server.close()
