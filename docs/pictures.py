"""Render the README's pictures with the embedded model on the CPU (about two minutes):

    .venv/bin/python docs/pictures.py

Each picture is the output of the console command printed beside it (PNG, metadata and all;
fly.webp: igan-video's animated WebP),
except wrap-seam.png, which shows the 360-degree panorama rolled by half its width so that its
seam sits in the middle, and wide-crop.png, the first 1024 columns of the 8192x512 render whose
preview is wide-8192x512.png.
"""
from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent / "images"
COMMON = ["--device", "cpu", "--quiet"]


def run(script: str, *args: str) -> None:
    print("$", script, shlex.join(args), flush=True)
    module = {"igan-render": "igan.engine.cli.render", "igan-video": "igan.engine.cli.video"}.get(script)
    if module:
        cmd = [sys.executable, "-m", module, *args, *COMMON]
    else:  # the applications' console scripts
        main = script.removeprefix("igan-") + "_main"
        cmd = [sys.executable, "-c", f"import sys; from igan.engine.cli import apps; sys.exit(apps.{main}(sys.argv[1:]))",
               *args, *COMMON]
    subprocess.run(cmd, check=True)


def main() -> int:
    HERE.mkdir(exist_ok=True)
    run("igan-render", "--width", "1024", "--height", "256", "--seed", "1", "--out",
        str(HERE.parent / "default_model_sample.png"))
    with tempfile.TemporaryDirectory() as tmp:  # the wide render: its preview and a crop at full size
        wide = Path(tmp) / "wide.png"
        run("igan-render", "--width", "8192", "--height", "512", "--seed", "7", "--out", str(wide), "--preview",
            str(HERE / "wide-8192x512.png"), "--preview-size", "2048")
        Image.open(wide).crop((0, 0, 1024, 512)).save(HERE / "wide-crop.png", optimize=True)
    fly = HERE / "fly.webp"  # a seamless loop: the camera crosses the 1024-px cyclic canvas once
    fly.unlink(missing_ok=True)  # igan-video never overwrites
    run("igan-video", "--size", "384x128", "--wrap", "--period", "1024", "--pan", "8,0", "--seed", "7", "--codec",
        "webp", "--out", str(fly))
    run("igan-render", "--width", "1536", "--height", "256", "--styles", "3,17,42", "--style-blur", "255",
        "--out", str(HERE / "fusion.png"))
    run("igan-render", "--width", "1024", "--height", "256", "--wrap", "--seed", "5", "--out", str(HERE / "wrap.png"))
    pano = np.asarray(Image.open(HERE / "wrap.png"))
    Image.fromarray(np.roll(pano, pano.shape[1] // 2, axis=1)).save(HERE / "wrap-seam.png", optimize=True)
    run("igan-render", "--seeds", "0-3", "--width", "256", "--height", "128", "--outdir", str(HERE / "seeds"))
    with tempfile.TemporaryDirectory() as tmp:  # outpainting: invert a 96x64 crop, then widen it
        target = Path(tmp) / "crop.png"
        run("igan-render", "--width", "96", "--height", "64", "--seed", "9", "--out", str(target))
        record = Path(tmp) / "crop.inv.safetensors"
        run("igan-invert", str(target), "--steps", "200", "--out", str(record))
        run("igan-outpaint", str(record), "--width", "768", "--height", "128", "--seed", "3",
            "--out", str(HERE / "outpaint.png"))
        crop = np.asarray(Image.open(target))
        canvas = np.full((128, 768, 3), 255, np.uint8)
        canvas[32:96, 336:432] = crop  # where igan-outpaint centres it
        Image.fromarray(canvas).save(HERE / "outpaint-input.png", optimize=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
