"""The render pipeline: a RenderRequest -> planner -> executor -> tile store -> sink.

`run(request)` is what igan-render, the Python API (`igan.Model.render_to_file`), the C++ API
and the applications (outpainting, inbetweening) all call; `plan_request` is the canvas and
the tiles of a request, shared with the in-memory renders so they compute the same pixels.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from . import cpu, executor, planner, sources
from .errors import RequestError, option
from .fusion import spec_from_options
from .identity import model_identity, model_source, request_identity
from .latent import LatentField
from .provenance import DEFAULT_CPU_PATH, describe
from .renderer import Renderer
from .request import RenderRequest
from .runner import PRECISIONS
from .store import write_atomic

log = logging.getLogger(__name__)


def default_budget(device, cpu_path: str = DEFAULT_CPU_PATH) -> int:
    """Memory for one batch of tiles when the request names none: 60% of a GPU's free memory;
    on a CPU a quarter of the RAM, at most 3 GiB, where the least-work tiles of the default
    config (512 px, work ratio 1.02 at 1024x1024; 1.9 GiB peak RSS measured) fit; at most
    1 GiB for fast-0.4, whose bytes depend on the tiles 0.4 chose from that budget."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.6)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min(total // 4, (1 << 30) if cpu_path == "fast-0.4" else (3 << 30))


def tile_rule(cpu_path: str) -> str:
    """How the planner chooses tiles when the request names none (planner.plan's `tiles`):
    the least work, except for fast-0.4, whose bytes depend on 0.4's choice."""
    return "0.4" if cpu_path == "fast-0.4" else "least-work"


def run(request: RenderRequest, model=None, *, checked: bool = False):
    """Carry out `request` (with `model` if given: the Python and C++ APIs pass the one they
    hold). The request is checked (unless the caller just did: `checked`), planned once, and
    handed to an executor (this process, one worker per device, or this torchrun rank), which
    renders the tiles into the work directory and the output.
    Returns the RenderStats, or None when there is nothing to report (another torchrun
    rank's share, or an output that was already finished)."""
    if not checked:
        request.validate()
        request.check_outputs()
    if request.threads:
        torch.set_num_threads(request.threads)
    devices = devices_for(request, executor.distributed_env())
    model = load_model(request) if model is None else model
    # fails early: backend/device/precision
    runner = sources.make_runner(request.backend, model, devices[0], request.precision, request.cpu_path)
    if runner.device.type == "cpu" and request.precision != "fp32" and request.backend != "onnx":
        check_cpu_precision(request.precision, request.cpu_path)
    spec, plan = plan_request(request, model.config, runner.device)
    check_expected(request, model, spec)
    batches = -(-len(plan.tiles) // plan.batch)
    if len(devices) > batches:  # a worker more than there is work for would only cost its start-up
        log.info("%d tile batch%s to render: %d worker%s, not %d", batches, "es" if batches > 1 else "",
                 batches, "s" if batches > 1 else "", len(devices))
        devices = devices[:batches]
    identity = request_identity(request, plan, model, spec)
    metadata = describe(identity, request.command()) if request.metadata else None
    sink = dict(metadata=metadata, preview=request.preview_path, preview_size=request.preview_size,
                compression=request.compression, ome=request.ome)
    stats = executor.execute(executor.Render(request, plan, spec, identity, sink), runner, devices)
    if stats is not None and request.stats_json:  # atomic: a kill never leaves a truncated file
        write_atomic(Path(request.stats_json),
                     json.dumps(dataclasses.asdict(stats) | {"mp_per_s": stats.mp_per_s, "out": request.out,
                                                             "cpu": cpu.describe()}, indent=1))
    return stats


def render_into(out: np.ndarray, request: RenderRequest, runner, field=None) -> None:
    """The window of `request` into `out` (uint8 [height, width, 3], any row stride) with
    `runner`'s model, tiled as igan-render tiles it: the in-memory render that the Python API
    (`Model.render`), the C++ API and igan-serve's tiles share, so every option that decides
    pixels (styles, wrap, trunc, generator, quantizer, CPU path) is honoured there as in files.
    `field`: the canvas the request's spec builds, when the caller renders many windows of
    one canvas and has built it once (igan-serve)."""
    cfg = runner.model.config
    spec, plan = plan_request(request, cfg, runner.device)
    if field is None:
        field = (spec.build(cfg, request.seed, request.latent_rng) if spec is not None
                 else LatentField(cfg, request.seed, rng=request.latent_rng))
    for t, img in Renderer(runner, request.quantize, request.trunc).pixels(field, plan, request.batch):
        out[t.y:t.y + t.height, t.x:t.x + t.width] = img


def check_expected(request: RenderRequest, model, spec) -> None:
    """What `request.expect` says the render must reproduce (igan-render --from: the model it
    was made with, its config, its style map's labels), or a RequestError naming the option
    that gives it."""
    for key, want in request.expect:
        if key == "model":
            source = model_source(request)
            got = model_identity(source, request.config, request.random_weights)
            if got != want:
                raise RequestError(f"the image was made with the model {want[:24]}..., but "
                                   f"{source or 'the embedded model'} is {got[:24]}...: give {option('checkpoint')} "
                                   f"the model it was made with")
        elif key == "config":
            if json.loads(model.config.to_json()) != json.loads(want):
                raise RequestError(f"the image was made with model config {json.loads(want).get('name')!r}, but this "
                                   f"model's is {model.config.name!r}: give {option('config')} "
                                   f"{json.loads(want).get('name')}")
        elif key == "label_map":
            got = (spec.identity().get("label_map") or {}).get("sha256") if spec is not None else None
            if got != want:
                raise RequestError(f"{option('style_map')} {request.style_map!r} is not the style map the image was "
                                   f"made with (its labels' sha256 {want[:16]}...)")
        else:
            raise RequestError(f"unknown expectation {key!r}")


@functools.lru_cache(maxsize=8)
def cpu_conv_gflops(precision: str, cpu_path: str = DEFAULT_CPU_PATH) -> float:
    """GFLOP/s of a 3x3 conv (128 channels, 32x32 output) on the CPU conv path igan would
    take (`cpu_path`: "exact" as im2col + torch.mm, "reference" as ATen's im2col + GEMM,
    "fast-0.4" through oneDNN) in `precision`, measured now (best of a few runs, about 0.1 s)."""
    from .determinism import reproducible_cpu_convs
    from .exactcpu import gemm_conv, gemm_weight
    from .fastcpu import onednn_convs
    from .runner import PRECISIONS

    dtype = PRECISIONS[precision]
    x, w = torch.randn(1, 128, 34, 34, dtype=dtype), torch.randn(128, 128, 3, 3, dtype=dtype)
    if cpu_path == "exact":
        xh, wm = x.permute(0, 2, 3, 1).contiguous(), gemm_weight(w)

        def conv():
            gemm_conv(xh, wm, 3, 3)

        path = contextlib.nullcontext()
    else:
        if cpu_path == "reference":
            path = reproducible_cpu_convs()
        else:
            x, w = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
            path = onednn_convs()

        def conv():
            torch.nn.functional.conv2d(x, w)

    best = float("inf")
    with torch.inference_mode(), path:
        for _ in range(3):
            start = time.perf_counter()
            conv()
            best = min(best, time.perf_counter() - start)
    return 2 * 128 * 128 * 9 * 32 * 32 / best / 1e9


def check_cpu_precision(precision: str, cpu_path: str = DEFAULT_CPU_PATH) -> None:
    """Refuse a reduced precision that this CPU runs slower than fp32 on the path the render
    takes (measured: on the project's machines bf16 convolutions run at a tenth of fp32's
    rate or less, on the reference and 0.4 paths)."""
    low, full = cpu_conv_gflops(precision, cpu_path), cpu_conv_gflops("fp32", cpu_path)
    if low < full:
        raise RequestError(f"{option('precision')} {precision} is slower than fp32 on this CPU (measured now: a 3x3 "
                           f"conv at {low:.1f} GFLOP/s in {precision}, {full:.1f} in fp32): use "
                           f"{option('precision')} fp32, which is also exact")


load_model = executor.load_model  # the model a request names, for the entry points that load it once


def plan_request(request: RenderRequest, cfg, device):
    """(fusion.FieldSpec or None, planner.Plan) of `request` on `device`: its canvas and its
    tiles, which every entry point (files, the in-memory API, the C++ API) shares, so they
    all compute the same pixels."""
    window = planner.Window(request.x0, request.top, request.width, request.height)
    path = request.cpu_path if device.type == "cpu" and request.backend == "torch" else DEFAULT_CPU_PATH
    budget = request.memory_budget or default_budget(device, path)
    spec = request.field if request.field is not None else _field_spec(request, window, cfg)
    if spec is not None and spec.spatial:
        budget //= 2  # the spatial-style path holds a style tensor as large as each layer's input
    plan = planner.plan(cfg, window, tile=request.tile, batch=request.batch, memory_budget=budget,
                        itemsize=PRECISIONS[request.precision].itemsize, tiles=tile_rule(path))
    return spec, plan


def _field_spec(request: RenderRequest, window, cfg):
    """fusion.FieldSpec of --styles/--style-*/--wrap, or None for the plain canvas."""
    if not request.fused:
        return None
    return spec_from_options(cfg, window, request.seed, styles=request.styles, centers=request.style_centers,
                             style_map=request.style_map, blur=request.style_blur, wrap=request.wrap)


def devices_for(args: RenderRequest, dist=None) -> list[str]:
    """The device of each worker (one entry: a single process)."""
    if dist is not None:
        rank, world, local = dist
        if args.gpus or args.workers:
            raise RequestError(f"under torchrun each rank is one worker: drop {option('gpus')}/{option('workers')}")
        if args.device == "auto":  # each rank on its own: its local GPU, else the CPU
            return [f"cuda:{local}" if torch.cuda.is_available() else "cpu"]
        return [f"cuda:{local}" if args.device == "cuda" else args.device]
    if args.gpus:
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if have < args.gpus:
            raise RequestError(f"{option('gpus')} {args.gpus} asked for {args.gpus} GPUs but this machine has {have}")
        return [f"cuda:{i}" for i in range(args.gpus)]
    if args.workers:
        if args.device != "cpu":
            raise RequestError(f"{option('workers')} is for CPU processes: add {option('device')} cpu (got "
                               f"{option('device')} {args.device}); "
                             f"use {option('gpus')} N for GPUs")
        return ["cpu"] * args.workers
    return [args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")]

