"""A scaling model of torchrun renders (issue 30): how efficiently N ranks render one image,
and what stops them first.

A discrete-event simulation of what `run_torchrun` does (engine/executor.py, distributed.py):
every rank starts (process, model load, rendezvous), then claims batches one at a time from
a counter in torchrun's store (a FIFO server: one round trip a claim), renders a batch,
stores each tile (its bytes through the output filesystem, a FIFO server of the measured
bandwidth shared by every rank, plus the fixed cost of a chunk file and a manifest fsync)
and claims again. Rank 0's writer thread encodes the bands top to bottom as their tiles are
all stored (the measured writer rate, and each band read back and written out through the
filesystem); a .zarr output has no writer. The render ends when the last band is written.
Efficiency at N ranks: T(1) / (N T(N)). The first bottleneck at N: of start-up, the tail (the
last batches, when there are few batches a rank), the writer, the filesystem and the store,
the one whose removal (made free) shortens T(N) the most.

Driven by measured figures: seconds a batch, the writer's MP/s, a tile's store cost, the
store's round trip, the filesystem's MB/s and the start-up of N ranks, measured here on the
CPU; and by the paper's GPU figures (8192x8192: 137.44 s on 1 GPU, 19.09 s on 8) with this
machine's writer, store and filesystem. The CPU check compares the model's T(N) with real
1-, 2- and 3-rank torchrun renders of a small image here.

    python benchmarks/scaling_model.py --out benchmarks/results/scaling-model-CPU-DATE.md

Importable (tests/test_scaleout.py runs `simulate`), and not a pytest-benchmark suite:
pytest collects nothing from it.
"""
from __future__ import annotations

import argparse
import heapq
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

PAPER_8192_1GPU_S, PAPER_8192_8GPU_S = 137.44, 19.09
GIGAPIXEL = 32768  # 32768 x 32768: 1.07 gigapixels
SMALL = dict(width=512, height=512, tile=64)  # the CPU check's image (--tile 64: 64 tiles)
RENDER_ARGS = ["--config", "InfinityGAN", "--random-weights", "--device", "cpu", "--bit-exact", "--quiet"]


@dataclass(frozen=True)
class Figures:
    """What the simulation is driven by."""

    name: str
    batch_s: float  # seconds to render one batch on one device (alone on it)
    tile: int  # tile side in pixels
    batch_tiles: int  # tiles a batch
    writer_mps: float  # rank 0's writer: output megapixels a second (inf: a .zarr, no writer)
    put_s: float  # fixed cost of storing one tile: the chunk file and the manifest's fsync
    store_rtt_s: float  # one claim: a round trip to torchrun's store
    fs_mbps: float  # the output filesystem's bandwidth, MB/s, shared by every rank
    startup_s: float  # start of the command to a rank's first claim
    cores: int | None = None  # CPU ranks share these cores (None: a device a rank)
    stored_ratio: float = 1.0  # bytes on disk / 3 bytes a pixel (zstd level 1 chunks)


@dataclass
class Outcome:
    seconds: float
    tiles: int
    batches_per_rank: list[int]


def simulate(f: Figures, width: int, height: int, ranks: int) -> Outcome:
    """Seconds from the command's start to the output in place, for `ranks` ranks."""
    rows, cols = math.ceil(height / f.tile), math.ceil(width / f.tile)
    tiles = [(r, c) for r in range(rows) for c in range(cols)]
    groups = [tiles[i:i + f.batch_tiles] for i in range(0, len(tiles), f.batch_tiles)]
    slow = max(1.0, ranks / f.cores) if f.cores else 1.0  # ranks beyond the cores share them
    batch_s = f.batch_s * slow
    tile_mb = f.tile * f.tile * 3 * f.stored_ratio / 1e6
    fs_s = (lambda mb: mb / f.fs_mbps) if math.isfinite(f.fs_mbps) else (lambda mb: 0.0)
    store_free = fs_free = 0.0
    stored = {}
    taken = [0] * ranks
    ready = [(f.startup_s, r) for r in range(ranks)]
    heapq.heapify(ready)
    for group in groups:
        t, r = heapq.heappop(ready)
        start = max(t, store_free)  # the store answers claims one at a time
        store_free = start + f.store_rtt_s / 2
        t = start + f.store_rtt_s + batch_s
        for tile in group:
            begin = max(t, fs_free)
            fs_free = begin + fs_s(tile_mb)
            t = fs_free + f.put_s
            stored[tile] = t
        taken[r] += 1
        heapq.heappush(ready, (t, r))
    last = max(stored.values())
    end = last
    if math.isfinite(f.writer_mps):
        writer = 0.0
        for r in range(rows):
            band_ready = max(stored[(r, c)] for c in range(cols))
            band_px = min(f.tile, height - r * f.tile) * width
            begin = max(writer, band_ready)
            io = fs_s(2 * band_px * 3 * f.stored_ratio / 1e6)  # read back from the store, write out
            fs_free = max(fs_free, begin) + io
            writer = begin + band_px / 1e6 / f.writer_mps + io
        end = max(end, writer)
    return Outcome(end, len(tiles), taken)


_FREE = {"start-up": dict(startup_s=0.0), "writer": dict(writer_mps=math.inf),
         "filesystem": dict(fs_mbps=math.inf, put_s=0.0), "store": dict(store_rtt_s=0.0)}


def bottleneck(f: Figures, width: int, height: int, ranks: int) -> str:
    """What, made free, shortens T(ranks) the most (the tail: perfect division of the
    batches' compute); with its share of T."""
    base = simulate(f, width, height, ranks).seconds
    gains = {name: base - simulate(replace(f, **free), width, height, ranks).seconds for name, free in _FREE.items()}
    batches = math.ceil(math.ceil(width / f.tile) * math.ceil(height / f.tile) / f.batch_tiles)
    slow = max(1.0, ranks / f.cores) if f.cores else 1.0
    even = f.startup_s + batches * f.batch_s * slow / ranks
    tail = simulate(replace(f, **_FREE["writer"], **_FREE["filesystem"], **_FREE["store"]), width, height,
                    ranks).seconds
    gains["tail (batches / ranks)"] = max(0.0, tail - even)
    if f.cores and ranks > f.cores:
        gains[f"cores ({ranks} ranks on {f.cores})"] = base - simulate(replace(f, cores=None), width, height,
                                                                       ranks).seconds
    name, gain = max(gains.items(), key=lambda kv: kv[1])
    return f"{name} ({gain / base:.0%} of T)" if gain > 0.02 * base else "none (compute-bound)"


def efficiency_rows(f: Figures, sizes, ranks=(1, 8, 64)) -> list[str]:
    out = []
    for label, (w, h) in sizes:
        t1 = simulate(f, w, h, 1).seconds
        for n in ranks:
            tn = simulate(f, w, h, n).seconds
            out.append(f"| {f.name} | {label} | {n} | {tn:,.1f} | {t1 / (n * tn):.0%} | {bottleneck(f, w, h, n)} |")
    return out


# ---- measuring this machine ---------------------------------------------------------------------------
def measure_batch(width=SMALL["width"], height=SMALL["height"], tile=SMALL["tile"], n=6):
    """(seconds a batch, tiles a batch, work ratio, rendered tiles) of the CPU check's render,
    one thread (torchrun's OMP_NUM_THREADS=1), the --bit-exact path."""
    import torch

    from igan.engine import executor, pipeline, sources
    from igan.engine.request import RenderRequest

    torch.set_num_threads(1)
    req = RenderRequest(config="InfinityGAN", random_weights=True, width=width, height=height, tile=tile,
                        device="cpu", cpu_path="reference", out="unused.png", quiet=True)
    model = pipeline.load_model(req)
    runner = sources.make_runner(req.backend, model, "cpu", req.precision, req.cpu_path)
    spec, plan = pipeline.plan_request(req, model.config, runner.device)
    renderer, field = executor.build(executor.Render(req, plan, spec, {}, {}), runner)
    groups = [plan.tiles[i:i + plan.batch] for i in range(0, len(plan.tiles), plan.batch)][:n + 1]
    times, images, last = [], [], time.perf_counter()
    for k, (t, img) in enumerate(renderer.pixels(field, plan, groups=iter(groups))):
        images.append(img.copy())
        if (k + 1) % plan.batch == 0:
            now = time.perf_counter()
            times.append(now - last)
            last = now
    times = sorted(times[1:])  # the first includes the warm-up
    return times[len(times) // 2], plan.batch, plan.work_ratio, images


def measure_writer(images, ext: str, side=2048) -> float:
    """MP/s of igan's sink writing a side x side image of the rendered tiles (default options)."""
    import numpy as np

    from igan.engine import sinks

    t = images[0].shape[0]
    band = np.concatenate([images[(i % len(images))] for i in range(side // t)], axis=1)
    with tempfile.TemporaryDirectory() as d:
        sink = sinks.open_sink(Path(d) / f"w{ext}", side, side, band_height=t, temp_dir=d)
        start = time.perf_counter()
        for y in range(0, side, t):
            sink.write(0, y, np.roll(band, y, axis=1))
        sink.close()
        return side * side / 1e6 / (time.perf_counter() - start)


def measure_put(images, n=64) -> float:
    """Seconds to store one tile in a work directory (chunk file, manifest line, fsync)."""
    from igan.engine.store import TileStore

    t = images[0].shape[0]
    with tempfile.TemporaryDirectory(dir=".") as d:
        store = TileStore.create(Path(d) / "w", {"width": 8 * t, "height": 8 * t, "tile_height": t, "tile_width": t})
        store.writer("m")
        start = time.perf_counter()
        for i in range(n):
            y, x = divmod(i, 8)
            store.put(i, y * t, x * t, images[i % len(images)])
        took = (time.perf_counter() - start) / n
        store.close()
        return took


def measure_store_rtt(n=2000) -> float:
    """Seconds of one store.add on a TCPStore client of a server on this machine."""
    import torch.distributed as dist

    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    client = dist.TCPStore("127.0.0.1", server.port, is_master=False, wait_for_workers=False)
    start = time.perf_counter()
    for _ in range(n):
        client.add("k", 1)
    return (time.perf_counter() - start) / n


def measure_fs_mbps(mb=256) -> float:
    """MB/s of writing `mb` MB and fsyncing it, in the current directory."""
    block = os.urandom(1 << 20)
    with tempfile.NamedTemporaryFile(dir=".") as f:
        start = time.perf_counter()
        for _ in range(mb):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
        return mb * 1.048576 / (time.perf_counter() - start)


def torchrun(ranks: int, width: int, height: int, tile: int, out: Path) -> float:
    """Wall seconds of a real `torchrun --nproc-per-node ranks` render here, a thread a rank
    (torchrun's default for more than one rank, made the default for one too)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
           "-m", "igan.engine.cli.render", *RENDER_ARGS, "--width", str(width), "--height", str(height),
           "--tile", str(tile), "--out", str(out)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    out.unlink()
    return took


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="the Markdown report to write")
    p.add_argument("--cpu-name", default="Intel Xeon (Sapphire Rapids-class, AVX-512) 2-core")
    args = p.parse_args(argv)
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()
    batch_s, batch_tiles, work_ratio, images = measure_batch()
    tif_mps, png_mps = measure_writer(images, ".tif"), measure_writer(images, ".png")
    put_s, rtt, fs = measure_put(images), measure_store_rtt(), measure_fs_mbps()
    print(f"batch {batch_s:.3f} s ({batch_tiles} tile(s) of {SMALL['tile']} px, work ratio {work_ratio:.2f}); "
          f"writer TIFF {tif_mps:.1f} MP/s, PNG {png_mps:.1f} MP/s; put {put_s * 1e3:.2f} ms; store "
          f"{rtt * 1e6:.0f} us; filesystem {fs:.0f} MB/s", file=sys.stderr)
    # start-up of N ranks: a one-tile render (its one batch taken off); then the real renders
    with tempfile.TemporaryDirectory(dir=".") as d:
        torchrun(2, SMALL["tile"], SMALL["tile"], SMALL["tile"], Path(d) / "s.tif")  # warm the caches
        startup = {n: max(0.0, min(torchrun(n, SMALL["tile"], SMALL["tile"], SMALL["tile"], Path(d) / "s.tif")
                                   for _ in range(2)) - batch_s) for n in (1, 2, 3)}
        real = {n: min(torchrun(n, SMALL["width"], SMALL["height"], SMALL["tile"], Path(d) / f"r{n}.tif")
                       for _ in range(2)) for n in (1, 2, 3)}
    cpu = Figures("CPU here", batch_s, SMALL["tile"], batch_tiles, tif_mps, put_s, rtt, fs, startup[1], cores=cores)
    check = []
    for n in (1, 2, 3):
        pred = simulate(replace(cpu, startup_s=startup[n]), SMALL["width"], SMALL["height"], n).seconds
        check.append(f"| {n} | {startup[n]:.1f} | {pred:.1f} | {real[n]:.1f} | {(pred - real[n]) / real[n]:+.0%} | "
                     f"{real[1] / (n * real[n]):.0%} |")
    # the GPU: the paper's 1-GPU time, spread over igan's tiles of 8192x8192 on an 80 GB GPU (2048 px)
    from igan.engine import planner, sources

    cfg = sources.load(None, "InfinityGAN", random_weights=True).config

    def gpu_plan(side, tile=None):
        return planner.plan(cfg, planner.Window(0, 0, side, side), tile=tile, batch=1, memory_budget=int(48 * 2**30),
                            itemsize=4, tiles="least-work")

    p8 = gpu_plan(8192)
    work_px_s = PAPER_8192_1GPU_S / (len(p8.tiles) * p8.tile_width * p8.tile_height * p8.work_ratio)
    gpus = []
    for tile in (p8.tile_width, 1024):
        pt = gpu_plan(8192, tile)
        g = Figures(f"GPU (paper), tile {tile}, .tif", work_px_s * tile * tile * pt.work_ratio, tile, 1, tif_mps, put_s, rtt,
                    fs, 0.0)
        gpus.append(g)
    zarr = replace(gpus[0], name=f"GPU (paper), tile {gpus[0].tile}, .zarr (no writer)", writer_mps=math.inf)
    pred8 = simulate(gpus[0], 8192, 8192, 8).seconds
    # the CPU at the large sizes: the measured seconds a pixel of work, on igan's CPU tiles (512 px, 3 GiB)
    cpu_big = replace(cpu, name="CPU here (512 px tiles, 1 core a rank), .tif", cores=None, startup_s=startup[1],
                      batch_s=batch_s / (SMALL["tile"] ** 2 * work_ratio) * 512 * 512 * 1.02, tile=512)
    sizes = [("8192x8192", (8192, 8192)), (f"{GIGAPIXEL}x{GIGAPIXEL} (1.07 GP)", (GIGAPIXEL, GIGAPIXEL))]
    lines = [
        f"# Scaling model of torchrun renders: {args.cpu_name}, {time.strftime('%Y-%m-%d')}",
        "",
        f"`python benchmarks/scaling_model.py --out benchmarks/results/{Path(args.out).name}` (issue 30; the model: "
        f"the script's docstring). Each rank one thread (OMP_NUM_THREADS=1, torchrun's default for several ranks).",
        "",
        "## Measured here",
        "",
        f"- a batch: {batch_s:.3f} s ({batch_tiles} tile of {SMALL['tile']}x{SMALL['tile']} px, work ratio "
        f"{work_ratio:.2f}; InfinityGAN, random weights, --bit-exact, 1 thread as torchrun gives a rank)",
        f"- rank 0's writer (igan's sinks, default options, 2048x2048): TIFF {tif_mps:.1f} MP/s, PNG {png_mps:.1f} MP/s",
        f"- storing a tile (zarr chunk + manifest line + fsync): {put_s * 1e3:.2f} ms",
        f"- a claim (TCPStore add, localhost): {rtt * 1e6:.0f} us",
        f"- the filesystem here (256 MB written, fsync): {fs:.0f} MB/s",
        "- start-up (command to first claim; the faster of two one-tile torchrun renders, less its batch): "
        + ", ".join(f"{n} rank(s) {s:.1f} s" for n, s in startup.items()),
        "",
        f"## The CPU check: {SMALL['width']}x{SMALL['height']} TIFF, --tile {SMALL['tile']}, torchrun on {cores} cores",
        "",
        f"Real T: the faster of two runs. The machine is shared: load average {load_before[0]:.1f} before the "
        f"measurements, {os.getloadavg()[0]:.1f} after.",
        "",
        "| ranks | start-up (s, measured) | model T (s) | real T (s) | model error | real efficiency |",
        "|---|---|---|---|---|---|",
        *check,
        "",
        "## Predictions",
        "",
        f"GPU rows: the paper's {PAPER_8192_1GPU_S} s for 8192x8192 on 1 GPU spread over igan's plan of it on an 80 GB "
        f"GPU ({len(p8.tiles)} tiles of {p8.tile_width} px, work ratio {p8.work_ratio:.3f}; a 1024 px tile costs its "
        f"own work ratio), generation only (start-up 0, as the paper's timings), with this machine's writer, store and "
        f"filesystem. The paper's 8 GPUs: {PAPER_8192_8GPU_S} s ({PAPER_8192_1GPU_S / (8 * PAPER_8192_8GPU_S):.0%}); "
        f"the model's for igan's torchrun: {pred8:.1f} s ({PAPER_8192_1GPU_S / (8 * pred8):.0%}). CPU rows: one core a "
        f"rank, the measured seconds a pixel of work on 512 px tiles.",
        "",
        "| figures, output | image | ranks | T (s) | efficiency | first bottleneck |",
        "|---|---|---|---|---|---|",
        *[row for g in (*gpus, zarr, cpu_big) for row in efficiency_rows(g, sizes)],
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
