"""igan-video against its encoder alone: how close rendering the canvas comes to the rate at
which the same encoder takes frames that already exist (the limit on this machine).

For each size: `igan-video --size WxH --seconds S --fps 30 --pan 4,0 --codec h264 --crf 18`
with the embedded model, timed whole (start-up, model load, every tile rendered once, the
encoder); then the same H.264 encoder (libx264, yuv420p, crf 18, the same frame conversion as
igan-video's, engine/video.py) fed that video's frames, decoded into memory beforehand, timed
from the first frame to the last packet. Reported: frames/s of each, their ratio, and igan-video's
ratio to real time.

    python benchmarks/video_speed.py --out benchmarks/results/video-speed-cpu-2core-DATE.md
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

CASES = [((1280, 720), 20.0), ((1280, 720), 60.0), ((1920, 1080), 10.0)]
FPS, PAN, CRF = 30, "4,0", 18


def igan_video(size, seconds, out: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of `igan-video` for one case (in a process of its own)."""
    cmd = [sys.executable, "-m", "igan.engine.cli.video", "--size", f"{size[0]}x{size[1]}", "--seconds", str(seconds),
           "--fps", str(FPS), f"--pan={PAN}", "--codec", "h264", "--crf", str(CRF), "--device", "cpu", "--quiet",
           "--out", str(out)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return time.perf_counter() - start, _cpu(resource.getrusage(resource.RUSAGE_CHILDREN), before)


def _cpu(after, before) -> float:
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def encoder_alone(video: Path, out: Path) -> tuple[int, float, float]:
    """(frames, wall seconds, CPU seconds) of libx264 encoding `video`'s frames, decoded into
    memory first."""
    import av

    from igan.engine.video import CODECS, _to_frame

    with av.open(str(video)) as source:
        images = [f.to_ndarray(format="rgb24") for f in source.decode(video=0)]
    codec = CODECS["h264"]
    h, w = images[0].shape[:2]
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    with av.open(str(out), "w", format="mp4") as container:
        stream = container.add_stream(codec.encoder, rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = w, h, codec.pix_fmt
        stream.codec_context.options = {"crf": str(CRF)}
        for image in images:
            for packet in stream.encode(_to_frame(av, image)):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    wall = time.perf_counter() - start
    return len(images), wall, _cpu(resource.getrusage(resource.RUSAGE_SELF), before)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="write the report (markdown) here")
    args = p.parse_args()
    from igan.engine import cpu

    rows = []
    with tempfile.TemporaryDirectory() as d:
        for size, seconds in CASES:
            fly = Path(d) / f"fly-{size[0]}-{seconds:g}.mp4"
            t_video, cpu_video = igan_video(size, seconds, fly)
            frames, t_enc, cpu_enc = encoder_alone(fly, Path(d) / f"enc-{size[0]}-{seconds:g}.mp4")
            row = dict(size=size, frames=frames, video_s=seconds, igan_s=t_video, igan_fps=frames / t_video,
                       enc_fps=frames / t_enc, igan_cpu=cpu_video, enc_cpu=cpu_enc)
            print(f"{size[0]}x{size[1]}: igan-video {row['igan_fps']:.1f} frames/s ({t_video:.1f} s), encoder alone "
                  f"{row['enc_fps']:.1f} frames/s: {row['igan_fps'] / row['enc_fps']:.2f}", flush=True)
            rows.append(row)
    lines = ["# igan-video against its encoder alone: embedded model, H.264", "",
             f"Machine: {cpu.summary()}; {time.strftime('%Y-%m-%d')}. Command: `python benchmarks/video_speed.py`. "
             f"Camera: {PAN} px per frame, {FPS} fps, `--codec h264 --crf {CRF}` (libx264, yuv420p); igan-video timed "
             "whole (start-up and model load included); the encoder alone fed the same video's frames, decoded into "
             "memory first.", "",
             "CPU s: user + system seconds of every thread (igan-video's process; the encoder alone's). Their "
             "quotient bounds the frames/s ratio on a machine whose cores both runs keep busy: the CPU igan-video "
             "spends beyond its encoder is rendering the canvas (start-up, model load and the first frame's tiles "
             "included).", "",
             "| size | frames | igan-video s | igan-video frames/s | x real time | encoder alone frames/s | ratio | "
             "igan-video CPU s | encoder CPU s | CPU bound |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['size'][0]}x{r['size'][1]} | {r['frames']} | {r['igan_s']:.1f} | {r['igan_fps']:.1f} | "
                     f"{r['igan_fps'] / FPS:.2f} | {r['enc_fps']:.1f} | {r['igan_fps'] / r['enc_fps']:.2f} | "
                     f"{r['igan_cpu']:.1f} | {r['enc_cpu']:.1f} | {r['enc_cpu'] / r['igan_cpu']:.2f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
