"""Videos of a camera travelling over the canvas (igan-video).

A `CameraPath` says where each frame's window is; `render_video` renders the canvas in tiles
of a fixed grid (each the in-memory render of `pipeline.render_into`, the bytes igan-render
computes for that window), keeps only the tiles the current frame needs, cuts every frame
from them and hands it to an encoder thread (PyAV) through a bounded queue, so the cost grows
with the new pixels, rendering and encoding overlap and memory stays bounded whatever the
length. The frames are encoded in segments of SEGMENT_SECONDS kept in a work directory beside
the output, so a killed run resumes (`--resume`) where it stopped, and joined into the output,
which is renamed into place whole.
"""
from __future__ import annotations

import bisect
import dataclasses
import json
import logging
import math
import os
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from . import pipeline, planner
from .errors import PathError, RequestError, WriteError, option
from .fusion import spec_from_options
from .identity import request_identity
from .provenance import igan_version
from .renderer import peak_rss_bytes
from .request import RenderRequest, cpu_count

log = logging.getLogger(__name__)


# The canvas grid's tile side (pixels) along the directions the camera moves: about the width of
# the exact CPU path's least-work tiles (planner.least_work_tiles).
GRID = 512


@dataclass(frozen=True)
class Codec:
    """A --codec: its FFmpeg encoder, the pixel format it encodes, the suffixes of --out, and
    whether it takes --crf and needs even sizes (4:2:0 chroma)."""

    encoder: str
    pix_fmt: str
    suffixes: tuple[str, ...]
    crf: bool = False
    even: bool = False


CODECS = {
    "h264": Codec("libx264", "yuv420p", (".mp4", ".mkv"), crf=True, even=True),
    "h265": Codec("libx265", "yuv420p", (".mp4", ".mkv"), crf=True, even=True),
    "av1": Codec("libsvtav1", "yuv420p", (".mp4", ".mkv"), crf=True, even=True),
    "vp9": Codec("libvpx-vp9", "yuv420p", (".webm",), crf=True, even=True),
    "ffv1": Codec("ffv1", "bgr0", (".mkv",)),  # lossless RGB (bgr0): igan-render's bytes
    "gif": Codec("gif", "pal8", (".gif",)),  # 256 colours: the first frame's palette (median cut)
    "webp": Codec("libwebp_anim", "yuv420p", (".webp",)),
}
CONTAINERS = {".mp4": "mp4", ".mkv": "matroska", ".webm": "webm", ".gif": "gif", ".webp": "webp"}


def check_codec(codec: str, out: str, size: tuple[int, int]) -> Codec:
    """The Codec of `codec` for writing `out` at `size` (W, H), or a RequestError naming the
    option: an unknown codec, one the installed PyAV lacks, a suffix that does not fit it, an
    odd size for a 4:2:0 codec."""
    if codec not in CODECS:
        raise RequestError(f"{option('codec')} {codec!r} is unknown; use one of {', '.join(CODECS)}")
    c = CODECS[codec]
    suffix = os.path.splitext(out)[1].lower()
    if suffix not in c.suffixes:
        raise RequestError(f"{option('out')} {out!r} does not fit {option('codec')} {codec}: give it a "
                           f"{' or '.join(c.suffixes)} name (or choose another {option('codec')})")
    w, h = size
    if c.even and (w % 2 or h % 2):
        raise RequestError(f"{option('size')} {w}x{h}: {option('codec')} {codec} encodes 4:2:0 chroma, which needs "
                           f"an even width and height: use {option('size')} {w + w % 2}x{h + h % 2} (or "
                           f"{max(2, w - w % 2)}x{max(2, h - h % 2)}), or {option('codec')} ffv1")
    try:
        import av
    except ImportError:
        raise RequestError(f"{option('codec')} {codec}: igan-video encodes through PyAV, which is not installed "
                           "(pip install 'igan[video]')") from None
    try:
        av.codec.Codec(c.encoder, "w")
    except Exception:  # PyAV raises UnknownCodecError (a ValueError) or FFmpegError
        raise RequestError(f"{option('codec')} {codec}: the installed PyAV {av.__version__} has no {c.encoder} "
                           f"encoder; choose another {option('codec')}") from None
    return c


# ---- the camera's path ------------------------------------------------------------------------------
@dataclass(frozen=True)
class CameraPath:
    """Where frame k's window (x, y, width, height) lies on the canvas: on a straight line
    (`start` + k * `pan`) or along `points` (straight segments at `speed` pixels per frame,
    each position rounded to the nearest pixel, halves up); `period`: the cyclic canvas of a
    loop (frame `frames` would be frame 0)."""

    size: tuple[int, int]
    frames: int
    start: tuple[int, int]
    pan: tuple[int, int]
    points: tuple[tuple[int, int], ...] | None = None
    speed: float | None = None
    period: int | None = None

    def position(self, k: int) -> tuple[int, int]:
        if self.points is None:
            return self.start[0] + k * self.pan[0], self.start[1] + k * self.pan[1]
        s = k * self.speed
        ends = self._ends()
        i = min(bisect.bisect_right(ends, s) - 1, len(self.points) - 2)
        (ax, ay), (bx, by) = self.points[i], self.points[i + 1]
        length = ends[i + 1] - ends[i]
        t = 0.0 if length == 0 else min(1.0, (s - ends[i]) / length)
        return math.floor(ax + (bx - ax) * t + 0.5), math.floor(ay + (by - ay) * t + 0.5)

    def _ends(self) -> list[float]:
        ends = [0.0]
        for (ax, ay), (bx, by) in zip(self.points, self.points[1:]):
            ends.append(ends[-1] + math.hypot(bx - ax, by - ay))
        return ends

    @property
    def length(self) -> float:
        """The length of `points` in pixels."""
        return self._ends()[-1]

    def extent(self) -> planner.Window:
        """The canvas the video covers, where --style-centers' fractions and --style-map lie:
        for a loop, one period from the start by the frame height; else the box of every
        frame (found by walking the path: straight segments, so their ends bound it)."""
        w, h = self.size
        if self.period is not None:
            return planner.Window(self.start[0], self.start[1], self.period, h)
        if self.points is None:
            corners = [self.position(0), self.position(self.frames - 1)]
        else:
            corners = [self.position(k) for k in range(self.frames)] if self.frames < 100_000 else list(self.points)
        xs, ys = [c[0] for c in corners], [c[1] for c in corners]
        return planner.Window(min(xs), min(ys), max(xs) - min(xs) + w, max(ys) - min(ys) + h)

    def grid(self) -> tuple[int, int, int, int]:
        """(tile width, tile height, origin x, origin y) of the canvas grid the frames are cut
        from: GRID pixels along each direction the camera moves (for a loop, the largest
        divisor of the period up to GRID, so the tiles repeat with it); across a still
        direction one tile exactly the frame's extent (a horizontal pan renders only the
        frame's rows)."""
        w, h = self.size
        moves_x = self.points is not None or self.pan[0] != 0
        moves_y = self.points is not None or self.pan[1] != 0
        tw, ox = (GRID, 0) if moves_x else (w, self.start[0])
        if self.period is not None:
            tw, ox = max(d for d in range(1, min(GRID, self.period) + 1) if self.period % d == 0), self.start[0]
        th, oy = (GRID, 0) if moves_y else (h, self.start[1])
        return tw, th, ox, oy


    def lookahead(self) -> int:
        """How many frames ahead the next tiles are rendered: the frames the camera takes to
        cross one tile along its motion."""
        tw, th, _, _ = self.grid()
        if self.points is not None:
            return max(1, math.ceil(min(tw, th) / self.speed))
        dx, dy = map(abs, self.pan)
        crossing = [t / d for t, d in ((tw, dx), (th, dy)) if d]
        return max(1, math.ceil(min(crossing))) if crossing else 1


def linear_path(size, start, pan, frames, period=None) -> CameraPath:
    return CameraPath(tuple(size), frames, tuple(start), tuple(pan), period=period)


def polyline_path(size, points, speed: float, frames: int | None) -> CameraPath:
    """Along `points` at `speed` px/frame; `frames` None: to the end of the path."""
    path = CameraPath(tuple(size), 1, tuple(points[0]), (0, 0), tuple(map(tuple, points)), float(speed))
    whole = math.floor(path.length / speed + 1e-9) + 1
    if frames is not None and frames > whole:
        raise RequestError(f"{option('path')} is {path.length:.1f} px long: at {speed:g} px per frame it has "
                           f"{whole} frames, fewer than the {frames} asked for ({option('frames')}/"
                           f"{option('seconds')}): give fewer, or a longer {option('path')}")
    return dataclasses.replace(path, frames=whole if frames is None else frames)


def loop_frames(period: int, dx: int) -> int:
    """The frames of a loop over `period` at `dx` px/frame, or a RequestError saying why none."""
    if dx == 0 or period % abs(dx):
        raise RequestError(f"a loop over {option('period')} {period} cannot close with {option('pan')} {dx},0: the "
                           f"horizontal pan must divide the period (e.g. {option('pan')} "
                           f"{_divisor_near(period, abs(dx) or 4)},0)")
    return period // abs(dx)


def _divisor_near(n: int, d: int) -> int:
    return min((k for k in range(1, n + 1) if n % k == 0), key=lambda k: (abs(k - d), k))


# ---- the tiles ------------------------------------------------------------------------------------
class TileBand:
    """The tiles of the canvas grid that the current frame needs, each rendered once (the
    window igan-render computes for it) and dropped once the camera has passed it; with an
    `executor` (a thread, or worker processes: --workers, --gpus), the tiles of frames further
    along the path are rendered while the frames before them are cut and encoded."""

    def __init__(self, render_tile, grid: tuple[int, int, int, int], period: int | None = None, executor=None):
        """`period`: a cyclic canvas whose period is a multiple of the tile width: tiles a
        period apart are one tile, and those of the first frame are kept for the frames that
        close the loop (so a loop renders each pixel of its period once)."""
        self.render_tile = render_tile  # (x, y, w, h) -> uint8 [h, w, 3]
        self.tw, self.th, self.ox, self.oy = grid
        self.cycle = period // self.tw if period is not None and period % self.tw == 0 else None
        self.keep: set[tuple[int, int]] | None = None if self.cycle is None else set()
        self.executor = executor
        self.tiles: dict[tuple[int, int], object] = {}  # key -> uint8 [th, tw, 3], or its Future
        self.rendered = 0  # tiles
        self.new_pixels = 0

    def _cells(self, x: int, y: int, w: int, h: int) -> list[tuple[int, int]]:
        gx0, gx1 = (x - self.ox) // self.tw, (x + w - 1 - self.ox) // self.tw
        gy0, gy1 = (y - self.oy) // self.th, (y + h - 1 - self.oy) // self.th
        return [(gx, gy) for gx in range(gx0, gx1 + 1) for gy in range(gy0, gy1 + 1)]

    def _origin(self, key: tuple[int, int]) -> tuple[int, int, int, int]:
        kx, ky = key  # the canonical cell: its bytes are those of every cell a period apart
        return self.ox + kx * self.tw, self.oy + ky * self.th, self.tw, self.th

    def _count(self) -> None:
        self.rendered += 1
        self.new_pixels += self.tw * self.th

    def _ask(self, keys) -> None:
        for key in keys:
            if key not in self.tiles:
                if self.executor is None:
                    self.tiles[key] = None  # rendered when the frame is cut
                else:
                    self.tiles[key] = self.executor.submit(self.render_tile, *self._origin(key))

    def prime(self, x: int, y: int, w: int, h: int, threads: int) -> None:
        """Render the tiles of the frame at (x, y, w, h) now, `threads` at a time (before the
        encoder starts, its cores are free: each tile on one torch thread, several tiles at
        once, the bytes of one at a time)."""
        keys = [k for k in sorted({self._key(gx, gy) for gx, gy in self._cells(x, y, w, h)}) if k not in self.tiles]
        with ThreadPoolExecutor(max(1, min(threads, len(keys))), thread_name_prefix="igan-video-first") as pool:
            for key, tile in zip(keys, pool.map(lambda k: self.render_tile(*self._origin(k)), keys)):
                self.tiles[key] = tile
                self._count()

    def frame(self, x: int, y: int, w: int, h: int, ahead=None) -> np.ndarray:
        """The frame whose window is (x, y, w, h); `ahead`: the top-left corner of a later
        frame, or a list of them, whose tiles are rendered next (kept until then)."""
        cells = self._cells(x, y, w, h)
        need = {self._key(gx, gy) for gx, gy in cells}
        corners = [] if ahead is None else [ahead] if isinstance(ahead[0], int) else list(ahead)
        later = [self._key(gx, gy) for corner in corners for gx, gy in sorted(self._cells(*corner, w, h))]
        if self.keep is not None and not self.keep:
            self.keep = set(need)  # the first frame's: the loop's last frames come back to them
        for key in [k for k in self.tiles if k not in need and k not in later
                    and not (self.keep and k in self.keep)]:  # passed
            tile = self.tiles.pop(key)
            if tile is not None and not isinstance(tile, np.ndarray):
                tile.cancel()
        self._ask(sorted(need))
        self._ask(k for k in dict.fromkeys(later) if k not in need)  # nearest first
        out = np.empty((h, w, 3), np.uint8)
        for gx, gy in cells:
            key = self._key(gx, gy)
            tile = self.tiles[key]
            if tile is None:
                tile = self.render_tile(*self._origin(key))
                self._count()
            elif not isinstance(tile, np.ndarray):
                tile = tile.result()
                self._count()
            self.tiles[key] = tile
            tx, ty = self.ox + gx * self.tw, self.oy + gy * self.th
            x0, x1 = max(x, tx), min(x + w, tx + self.tw)
            y0, y1 = max(y, ty), min(y + h, ty + self.th)
            out[y0 - y:y1 - y, x0 - x:x1 - x] = tile[y0 - ty:y1 - ty, x0 - tx:x1 - tx]
        return out

    def _key(self, gx: int, gy: int) -> tuple[int, int]:
        return (gx % self.cycle, gy) if self.cycle else (gx, gy)


# ---- the work directory: finished segments, for --resume ------------------------------------------
# A video is encoded in segments of SEGMENT_SECONDS, each by an encoder of its own (so each starts
# on a key frame and refers to no frame outside it: a closed GOP), written whole into the work
# directory (.NAME.igan-work/segments/, the directory igan-render's renders use, with its marker,
# lease and request) and joined into the output at the end by copying their packets. A run killed
# at any moment keeps the segments it finished; `--resume` renders only the others, and the
# join writes the file an uninterrupted run writes (same machine: the encoders' bytes may
# depend on the CPU's thread count). GIF and WebP animations are short loops written in one
# piece: a resumed one starts again.
SEGMENT_SECONDS = 10
SEGMENTS = "segments"


def segment_frames(codec: str, fps: int, frames: int) -> int:
    """Frames per segment: SEGMENT_SECONDS of video; the whole video for GIF and WebP."""
    return frames if codec in ("gif", "webp") else max(1, SEGMENT_SECONDS * fps)


class VideoWork:
    """The work directory of one video (a TileStore without tiles: its marker, lease,
    request.json, tmp/ and finished.json), holding the finished segments."""

    def __init__(self, store, count: int):
        self.store, self.count = store, count

    @property
    def root(self) -> Path:
        return self.store.root

    def segment(self, i: int) -> Path:
        return self.root / SEGMENTS / f"{i:06d}.mp4"

    def done(self) -> set[int]:
        return {i for i in range(self.count) if self.segment(i).is_file()}

    def commit(self, tmp: Path, i: int) -> None:
        """Put a finished segment in place (flushed to disk first: the name vouches for it)."""
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.segment(i))

    def finish(self, tmp: Path, out: Path) -> None:
        if os.path.lexists(out):
            raise PathError(f"cannot move the finished video to {str(out)!r}: something was created there meanwhile; "
                            f"its segments stay in {str(self.root)!r}")
        os.replace(tmp, out)
        _kill_point("video-after-output")
        self.store.mark_finished(out)
        self.store.remove()

    def abandon(self) -> str | None:
        """After a failure: the finished segments stay for --resume (a directory with none
        goes); the message that says so, or None."""
        done = len(self.done())
        if done == 0:
            self.store.remove()
            return None
        self.store.release()
        return (f"{done} of {self.count} segments are finished and kept in {str(self.root)!r}; run the same command "
                f"with {option('resume')} to continue")


def open_work(out: Path, request: dict, count: int, *, resume: bool, restart: bool) -> VideoWork | None:
    """The work directory of the video `request` (its recipe) into `out`, lease held: new,
    resumed (the request checked) or restarted; None when `out` is that video, finished (a
    --resume after a kill while its work directory was removed). Refuses a folder igan did not
    create, one another live process holds (naming it), unfinished work without --resume or
    --restart, and an existing `out`."""
    from .lease import Lease
    from .store import (FINISHED, STORE_VERSION, StoreExists, TileStore, finished_removals, is_work_dir, sweep_stale,
                        work_dir_for)

    root = work_dir_for(out)
    if not os.path.lexists(root) and os.path.lexists(out):
        if resume and (finished_removals(root, out, request) or _recipe_of(out) == request.get("recipe")):
            sweep_stale(root)
            return None
        check_output(str(out))
    sweep_stale(root)
    while True:
        if not os.path.lexists(root):
            try:
                store = TileStore.create(root, request, lease=True, tiles=False, folders=(SEGMENTS,))
            except StoreExists:
                continue  # another process created it since we looked: look again (and name its owner)
            if store is not None:
                return VideoWork(store, count)
            continue  # another process created it this instant: look again (and name its owner)
        if not root.is_dir() or root.is_symlink() or not is_work_dir(root):
            raise PathError(f"{str(root)!r} is in the way of the work directory of {str(out)!r} but igan did not "
                            f"create it: move it away or choose another {option('out')}")
        lease = Lease.take(root)
        if lease is None:
            continue
        held = TileStore(root, dict(request, store_version=STORE_VERSION), None, lease)
        try:
            finished = (root / FINISHED).is_file()
            if restart or (finished and not out.exists()):
                held.remove()
                continue
            if finished or (resume and out.exists() and _recipe_of(out) == request.get("recipe")):
                if not resume:  # (killed between the output's rename and finished.json: its recipe says)
                    check_output(str(out))
                TileStore.check_request(root, request)
                held.remove()
                return None
            work = VideoWork(held, count)
            if not resume:
                raise PathError(f"an unfinished video of {str(out)!r} is in {str(root)!r} ({len(work.done())} of "
                                f"{count} segments done): add {option('resume')} to finish it, or "
                                f"{option('restart')} to discard it")
            TileStore.check_request(root, request)
            if os.path.lexists(out):
                check_output(str(out))
            held.clear_tmp()
            for stale in (root / SEGMENTS).glob(".*"):  # a segment a kill cut short
                stale.unlink(missing_ok=True)
            return work
        except BaseException:
            lease.release()
            raise


def _recipe_of(path: Path):
    try:
        return read_recipe(path)
    except Exception:  # noqa: BLE001  (not a video igan can read)
        return None


def _kill_point(stage: str) -> None:
    """Tests only: IGAN_FAILPOINT=kill:<stage> SIGKILLs this process at `stage`."""
    from .workdir import failpoint

    if failpoint("kill") == stage:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


# ---- the video ------------------------------------------------------------------------------------
@dataclass
class VideoStats:
    frames: int
    fps: int
    seconds: float  # wall time
    new_pixels: int
    tiles: int
    peak_rss: int
    workers: int = 0  # worker processes (--workers, --gpus)
    worker_rss: int = 0  # the largest peak RSS among them

    @property
    def video_seconds(self) -> float:
        return self.frames / self.fps

    def summary(self) -> str:
        real = self.video_seconds / self.seconds if self.seconds else float("inf")
        return (f"{self.frames} frames, {self.video_seconds:.2f} s of video at {self.fps} fps, in {self.seconds:.1f} s "
                f"({real:.2f}x real time, {self.frames / self.seconds:.1f} frames/s), "
                f"{self.new_pixels / 1e6 / self.seconds:.2f} MP/s of new pixels ({self.tiles} tiles), "
                f"peak RSS {self.peak_rss / 2**30:.2f} GiB" + (
                    f" (+ {self.workers} workers, each at most {self.worker_rss / 2**30:.2f} GiB)" if self.workers
                    else ""))


def check_output(out: str) -> None:
    """--out is a new file in a writable folder (igan-video never overwrites)."""
    from .paths import check_writable

    from .store import work_dir_for

    if os.path.lexists(out):
        hint = (f" (a run killed as it finished left {str(work_dir_for(out))!r}: {option('resume')} checks the video "
                "and tidies up)" if os.path.lexists(work_dir_for(out)) else "")
        raise PathError(f"{option('out')} {out!r} already exists; igan-video does not overwrite a video: remove it or "
                        f"choose another {option('out')}{hint}")
    check_writable(option("out"), out)


def canvas_spec(request: RenderRequest, path: CameraPath, cfg):
    """The canvas of the video (fusion.FieldSpec, or None for the plain canvas): --styles with
    centres as fractions of the path's extent (CameraPath.extent), --style-map stretched over
    it, a loop's period."""
    if path.period is not None and path.period % cfg.upscale:
        raise RequestError(f"{option('period')} must be a multiple of {cfg.upscale} for model config "
                           f"{cfg.name!r}, got {path.period}")
    if request.styles is None and path.period is None:
        return None
    return spec_from_options(cfg, path.extent(), request.seed, styles=request.styles,
                             centers=request.style_centers, style_map=request.style_map, blur=request.style_blur,
                             wrap=path.period is not None)


def _to_frame(av, image: np.ndarray, palette=None):
    """A frame for the encoder: RGB (the stream converts it to its pixel format), or with
    `palette` (a PIL "P" image) the image in those colours, as pal8 for GIF."""
    if palette is None:
        return av.VideoFrame.from_ndarray(image, format="rgb24")
    from PIL import Image

    indices = np.asarray(Image.fromarray(image).quantize(palette=palette, dither=Image.Dither.NONE))
    rgb = np.zeros((256, 3), np.uint8)
    colours = np.frombuffer(bytes(palette.getpalette()[:768]), np.uint8).reshape(-1, 3)
    rgb[:len(colours)] = colours
    argb = np.concatenate([np.full((256, 1), 255, np.uint8), rgb], 1)
    return av.VideoFrame.from_ndarray((indices, argb), format="pal8")


def gif_palette(image: np.ndarray):
    """The 256 colours of a GIF: the first frame's, by median cut (deterministic)."""
    from PIL import Image

    return Image.fromarray(image).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


def render_video(request: RenderRequest, path: CameraPath, out: str, *, codec: str = "h264", fps: int = 30,
                 crf: int | None = None, command: str | None = None, video: dict | None = None,
                 progress: bool = True, model=None) -> VideoStats:
    """Render the frames of `path` over the canvas of `request` (its model, seed, styles,
    trunc, generator, quantizer, device, backend, precision; not its window) and encode them
    with `codec` into `out`, written atomically. `command`, `video`: the recipe recorded in
    the container's metadata."""
    import av
    import torch

    c = check_codec(codec, out, path.size)
    if not request.resume:
        check_output(out)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(request.threads or render_threads())
        return _render_video(av, torch, c, request, path, out, codec=codec, fps=fps, crf=crf, command=command,
                             video=video, progress=progress, model=model)
    finally:
        torch.set_num_threads(threads)


def render_threads() -> int:
    """torch's threads when --threads is not given: half the CPUs, the encoder's threads take
    the other half (measured on the 2-core CPU at 1280x720, H.264: 38 frames/s with one
    torch thread, 3 with two, whose parallel regions stall behind the encoder's)."""
    from .request import cpu_count

    return max(1, cpu_count() // 2)


def _render_video(av, torch, c, request, path, out, *, codec, fps, crf, command, video, progress, model):
    model = pipeline.load_model(request) if model is None else model
    cfg = model.config
    spec = canvas_spec(request, path, cfg)
    pipeline.check_expected(request, model, spec)  # --from: the model the video was made with
    base = request.replace(styles=None, style_centers=None, style_map=None, style_blur=None, wrap=False,
                           field=spec, out="igan.png", stats_json=None, preview=None, expect=())
    devices = pipeline.devices_for(request) if request.workers or request.gpus else None
    device = devices[0] if devices else (
        request.device if request.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    render_tile, runner = tile_renderer(base, model, device)

    w, h = path.size
    tw, th, _, _ = grid = path.grid()
    tile_request = base.replace(x0=0, y0=0, width=tw, height=th)
    _, plan = pipeline.plan_request(tile_request, cfg, runner.device)
    identity = {k: v for k, v in request_identity(tile_request, plan, model, spec).items()
                if k not in ("window", "width", "height", "tile_height", "tile_width")}
    if isinstance(identity.get("config"), str) and identity["config"].startswith("{"):
        identity["config"] = json.loads(identity["config"])
    recipe = {"igan": igan_version(), "command": command, "video": video or {}, "request": identity}
    metadata = {"comment": command or "", "igan": json.dumps(recipe, sort_keys=True, separators=(",", ":"))}

    final = Path(out)
    per = segment_frames(codec, fps, path.frames)
    count = -(-path.frames // per)
    work = open_work(final, {"recipe": json.loads(metadata["igan"]), "segment_frames": per}, count,
                     resume=request.resume, restart=request.restart)
    if work is None:
        return None
    done = work.done()
    todo = [i for i in range(count) if i not in done]
    muxer = CONTAINERS[final.suffix.lower()]
    joined = codec not in ("gif", "webp")  # else the one segment is the file
    product = work.store.tmp / f"video{final.suffix.lower()}"
    if devices:  # tiles rendered by worker processes, one per device; this process cuts and encodes
        renderer = _worker_pool(base, devices, request.threads)
        band = TileBand(_worker_tile, grid, path.period, renderer)
    else:
        renderer = ThreadPoolExecutor(1, thread_name_prefix="igan-video-tiles")
        band = TileBand(render_tile, grid, path.period, renderer)
    lookahead, workers = path.lookahead(), len(devices or [device])
    frames: queue.Queue = queue.Queue(maxsize=8)
    failed: list[BaseException] = []
    start = time.perf_counter()

    def open_segment(i):
        if joined:
            tmp = work.segment(i).with_name(f".{work.segment(i).name}.tmp-{os.getpid()}")
            container = av.open(str(tmp), "w", format="mp4", options=dict(BITEXACT))
        else:
            tmp = product
            container = _open_output(av, tmp, muxer, metadata)
        return i, tmp, container, _add_stream(container, c, path.size, fps, crf)

    def close_segment(segment, encoded: int):
        """Flush and close a segment; into place only when it holds all its frames (the
        producer may stop early: an interrupt, a failure)."""
        i, tmp, container, stream = segment
        for packet in stream.encode(None):
            container.mux(packet)
        container.close()
        if joined and encoded == _frames(i, per, path.frames):
            work.commit(tmp, i)

    def encode():
        segment, palette, encoded = None, None, 0
        try:
            while (item := frames.get()) is not None:
                i, k, image = item
                if segment is None or segment[0] != i:
                    if segment is not None:
                        close_segment(segment, encoded)
                    segment, encoded = open_segment(i), 0
                if c.pix_fmt == "pal8" and palette is None:
                    palette = gif_palette(image)
                frame = _to_frame(av, image, palette)
                frame.pts = k - i * per
                for packet in segment[3].encode(frame):
                    segment[2].mux(packet)
                encoded += 1
            if segment is not None:
                segment, last = None, segment
                close_segment(last, encoded)
        except BaseException as e:  # reported by the rendering thread
            failed.append(e)
            if segment is not None:
                with _quiet_oserror():
                    segment[2].close()
            while frames.get() is not None:  # let the producer finish its puts
                pass

    bar = None
    try:
        encoder = threading.Thread(target=encode, name="igan-video-encoder", daemon=True)
        encoder.start()
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=path.frames, initial=path.frames - sum(_frames(i, per, path.frames) for i in todo),
                       unit="frame", file=sys.stderr, desc="igan-video", dynamic_ncols=True)
        if todo and not devices:  # the first frame's tiles on every core while the encoder waits
            band.prime(*path.position(todo[0] * per), w, h, threads=cpu_count())
        try:
            for i in todo:
                for k in range(i * per, i * per + _frames(i, per, path.frames)):
                    if failed:
                        break
                    x, y = path.position(k)
                    ahead = [path.position(min(k + j * lookahead, path.frames - 1)) for j in range(1, workers + 1)]
                    frames.put((i, k, band.frame(x, y, w, h, ahead=ahead)))
                    _kill_point(f"video-frame:{k}")
                    if bar is not None:
                        bar.update(1)
                        rate = bar.format_dict.get("rate") or 0
                        bar.set_postfix_str(f"{rate / fps:.2f}x real time", refresh=False)
        finally:
            renderer.shutdown(wait=True, cancel_futures=True)
            frames.put(None)
            encoder.join()
        if failed:
            raise WriteError(f"{option('out')} {out!r}: encoding failed: {failed[0]}") from failed[0]
        if joined:
            _join(av, [work.segment(i) for i in range(count)], product, muxer, metadata, fps)
        _kill_point("video-before-output")
        work.finish(product, final)
    except BaseException:
        kept = work.abandon() if work.store.lease is not None else None
        if kept:
            log.warning(kept)
        raise
    finally:
        if bar is not None:
            bar.close()
    import resource

    return VideoStats(sum(_frames(i, per, path.frames) for i in todo), fps, time.perf_counter() - start,
                      band.new_pixels, band.rendered, peak_rss_bytes(), len(devices or ()),
                      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 if devices else 0)


def tile_renderer(base: RenderRequest, model, device: str):
    """(render_tile, runner): render_tile(x, y, w, h) is the uint8 [h, w, 3] window igan-render
    computes there, on the canvas of `base` (its FieldSpec in base.field), by `model` on `device`."""
    from . import sources

    runner = sources.make_runner(base.backend, model, device, base.precision, base.cpu_path)
    spec = base.field
    field = spec.build(model.config, base.seed, base.latent_rng) if spec is not None else None
    if field is None:
        from .latent import LatentField

        field = LatentField(model.config, base.seed, rng=base.latent_rng)

    def render_tile(x, y, w, h):
        img = np.empty((h, w, 3), np.uint8)
        pipeline.render_into(img, base.replace(x0=x, y0=y, width=w, height=h), runner, field)
        return img

    return render_tile, runner


# ---- worker processes (--workers N on the CPU, --gpus N) ------------------------------------------
_WORKER: dict = {}  # in a worker process: its render_tile


def _worker_pool(base: RenderRequest, devices: list[str], threads: int | None):
    """A pool of len(devices) spawned processes, each loading the model onto its own device
    and rendering the tiles it is handed (TileBand submits _worker_tile)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from .request import cpu_count

    ctx = multiprocessing.get_context("spawn")  # never fork a process that runs torch's threads
    queue_ = ctx.Queue()
    for d in devices:
        queue_.put(d)
    cpu = [d for d in devices if d == "cpu"]
    per = threads or (max(1, render_threads() // len(cpu)) if cpu else 1)
    if cpu and threads is None and len(cpu) > cpu_count():
        per = 1
    return ProcessPoolExecutor(len(devices), mp_context=ctx, initializer=_start_worker,
                               initargs=(base, queue_, per, os.getpid()))


def _start_worker(base: RenderRequest, devices, threads: int, parent: int) -> None:
    import torch

    from . import determinism  # noqa: F401  (MKL's reproducible mode, before any GEMM)
    from .executor import _die_with_parent

    _die_with_parent(parent)
    torch.set_num_threads(threads)
    device = devices.get()
    _WORKER["render"] = tile_renderer(base, pipeline.load_model(base), device)[0]


def _worker_tile(x: int, y: int, w: int, h: int) -> np.ndarray:
    return _WORKER["render"](x, y, w, h)


def _frames(i: int, per: int, total: int) -> int:
    """The frames of segment `i`."""
    return min(per, total - i * per)


# Containers without what differs from run to run (matroska's random UIDs, the muxer's version).
BITEXACT = {"fflags": "+bitexact"}


def _open_output(av, path: Path, muxer: str, metadata: dict):
    """The output container, with the recipe in its metadata."""
    options = {"mp4": {"movflags": "use_metadata_tags"}, "gif": {"loop": "0"}, "webp": {"loop": "0"}}.get(muxer, {})
    container = av.open(str(path), "w", format=muxer, options=options | BITEXACT)
    for key, value in metadata.items():
        container.metadata[key] = value
    return container


def _add_stream(container, c: Codec, size, fps: int, crf: int | None):
    """The encoder's stream of `c` at `size` and `fps`."""
    stream = container.add_stream(c.encoder, rate=Fraction(fps))
    stream.width, stream.height = size
    stream.pix_fmt = c.pix_fmt
    options = {}
    if c.crf and crf is not None:
        options["crf"] = str(crf)
    if c.encoder == "libvpx-vp9":
        options |= {"b": "0", "row-mt": "1"}
    if c.encoder == "libsvtav1":
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its configuration otherwise: errors only
    if c.encoder == "libx265":
        options["x265-params"] = "log-level=error"
    stream.codec_context.options = options
    return stream


def _join(av, parts: list[Path], path: Path, muxer: str, metadata: dict, fps: int) -> None:
    """Write the segments' packets one after the other into `path`, each segment's timestamps
    (in frames) after the last one's: no frame is decoded or encoded again."""
    tb = Fraction(1, fps)
    container = _open_output(av, path, muxer, metadata)
    try:
        stream, offset = None, 0
        for part in parts:
            with av.open(str(part)) as source:
                src = source.streams.video[0]
                if stream is None:
                    stream = container.add_stream_from_template(src, opaque=True)
                    stream.time_base = tb
                n = 0
                for packet in source.demux(src):
                    if packet.size == 0:
                        continue
                    pts, dts = (Fraction(v) * packet.time_base / tb for v in (packet.pts, packet.dts))
                    if pts.denominator != 1 or dts.denominator != 1:
                        raise WriteError(f"segment {str(part)!r} has a packet between frames (pts {packet.pts}, dts "
                                         f"{packet.dts} in {packet.time_base}); --restart renders it again")
                    packet.stream = stream
                    packet.time_base = tb
                    packet.pts, packet.dts, packet.duration = int(pts) + offset, int(dts) + offset, 1
                    container.mux(packet)
                    n += 1
                offset += n
    finally:
        container.close()


class _quiet_oserror:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        return kind is not None and issubclass(kind, OSError)


def read_recipe(path: str | os.PathLike) -> dict | None:
    """The recipe igan-video recorded in a video's container metadata (the JSON of the
    version, the igan-video command, the camera and the canvas's request), or None; as data:
    `recipe.read_video` checks it before anything is rendered from it."""
    from .recipe import video_metadata

    return video_metadata(path)
