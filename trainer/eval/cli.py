"""igan-eval: evaluation commands. `igan-eval scaleinv-fid` computes the paper's ScaleInv FID;
`igan-eval swd` ProGAN's multi-scale sliced Wasserstein distance (no downloaded network)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from pathlib import Path

from igan.engine.cli import command, guarded
from igan.engine.values import positive, size_bytes
from igan.engine.paths import refuse_unsafe_paths
from igan.engine.provenance import igan_version

from .inception import WEIGHTS_FILE, WEIGHTS_SHA256_PREFIX


EXAMPLES = f"""\
examples (pt_inception.pth: pytorch-fid's {WEIGHTS_FILE}):
  igan-eval scaleinv-fid --checkpoint best_fid.pth.tar --real data/train --scale 4 --inception pt_inception.pth
  igan-eval scaleinv-fid --real data/train --scale 1 --inception pt_inception.pth --save-real-stats real128.npz
  igan-eval scaleinv-fid --real real128.npz --scale 8 --inception pt_inception.pth --num-fake 10000 --json fid8.json
  igan-eval swd --real scenes:v1:1000:320x256 --count 64
  igan-eval swd --checkpoint runs/v2/model.safetensors --real scenes:v2:1000 --size 101x101 --json swd.json"""


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter  # the examples keep their lines
    p = argparse.ArgumentParser(prog="igan-eval", description="Evaluate InfinityGAN generators.", epilog=EXAMPLES,
                                formatter_class=raw)
    p.add_argument("--version", action="version", version=f"%(prog)s {igan_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "scaleinv-fid", help="ScaleInv FID (paper Table 1 protocol)", formatter_class=raw,
        description=textwrap.fill(
            "Generate images at SCALE times the training field of view, bring them to the real resolution with "
            "the official two-stage bilinear resize, and compute the FID against real images (centre square "
            "crop, LANCZOS to --real-res).", 79),
        epilog=textwrap.fill(f"The Inception weights must be pytorch-fid's FID Inception state dict {WEIGHTS_FILE} "
                             "(the TF 2015-12-05 graph ported to torch); nothing is downloaded.", 79)
        + "\n\n" + EXAMPLES)
    s.add_argument("--checkpoint", default=None,
                   help="official best_fid.pth.tar or igan .safetensors (default: the embedded model)")
    s.add_argument("--config", default=None, help="preset of an official checkpoint (default: inferred)")
    s.add_argument("--real", required=True,
                   help="folder of real images (the train split; sorted order), or a .npz written by --save-real-stats")
    s.add_argument("--scale", type=positive, required=True, help="N: generate at N x the field of view (1, 2, 4, 8, 16)")
    s.add_argument("--inception", required=True, metavar="PATH", help=f"FID Inception weights ({WEIGHTS_FILE})")
    s.add_argument("--num-fake", type=positive, default=50_000, help="generated images (official: 50000)")
    s.add_argument("--num-real", type=positive, default=50_000, help="first N real images (official: 50000)")
    s.add_argument("--real-res", type=positive, default=128, help="real resolution R (official: 128)")
    s.add_argument("--full-size", type=positive, default=None,
                   help="training full image size (default 2*patch-5: 197 for InfinityGAN; 1024 for -UR)")
    s.add_argument("--use-pil-resize", action="store_true", help="step 3 with PIL BILINEAR (official flag)")
    s.add_argument("--standard-input", action="store_true",
                   help="feed the Inception [-1, 1] (standard FID) instead of the official [0, 1]")
    s.add_argument("--save-real-stats", default=None, metavar="PATH.npz", help="also save the real statistics")
    s.add_argument("--seed", type=int, default=0, help="fake i uses canvas seed SEED + i (default 0)")
    s.add_argument("--batch", type=positive, default=50, help="images per Inception forward (default 50)")
    s.add_argument("--tile", type=positive, default=None, help="generator tile size (default: memory budget)")
    s.add_argument("--memory-budget", type=size_bytes, default=None, help="generator memory, e.g. 4GiB")
    s.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    s.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"], help="generator precision")
    s.add_argument("--json", default=None, metavar="PATH", help="also write the result as JSON")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    _swd_parser(sub, raw)
    return p


def _swd_parser(sub, raw) -> None:
    from .swd import DIRS, MIN_RES, NHOODS, REPEATS

    s = sub.add_parser(
        "swd", help="multi-scale sliced Wasserstein distance (ProGAN)", formatter_class=raw,
        description=textwrap.fill(
            "Render N images from a model (canvases SEED..SEED+N-1, centred on the horizon) or read a set, and "
            "compare them with N reference images by ProGAN's multi-scale sliced Wasserstein distance: 7x7 patches "
            "of each Laplacian pyramid level, normalised per channel, 4 x 512 random projections; SWD x 1e3 per "
            "level and the average (lower is closer). Also two diversity figures of each set: the mean per-pixel "
            "std across images, and the SWD between the set's two halves (for the reals: the noise floor).", 79),
        epilog="examples:\n  igan-eval swd --real scenes:v1:1000:320x256 --count 64\n"
               "  igan-eval swd --checkpoint runs/v2/model.safetensors --real scenes:v2:1000 --size 101x101\n"
               "  igan-eval swd --fake renders/ --real photos/ --size 256x256 --json swd.json\n\n"
               + textwrap.fill("Procedural scene sets: scenes:STYLE:SEED[:WxH], scenes 0..N-1 of that seed rendered "
                               "at WxH (default 512x256 for v2, 320x256 for v1, the training commands' sizes); the "
                               "training sets use seed 0, so evaluate on another (1000 by convention).", 79))
    src = s.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", default=None,
                     help="model to render: igan .safetensors, official best_fid.pth.tar, a model igan ships "
                          "(builtin:landscapes-v2, builtin:landscapes-v1) or 'default' (the embedded model, also used "
                          "when neither --checkpoint nor --fake is given)")
    src.add_argument("--fake", default=None, metavar="DIR|scenes:STYLE:SEED",
                     help="compare this set of images instead of a model's renders")
    s.add_argument("--config", default=None, help="preset of an official checkpoint (default: inferred)")
    s.add_argument("--real", required=True, metavar="DIR|scenes:STYLE:SEED[:WxH]",
                   help="reference images: a folder (the first N in sorted order) or procedural scenes")
    s.add_argument("--count", type=positive, default=64, help="images per set (default 64)")
    s.add_argument("--size", default=None, metavar="WxH",
                   help="compared size; the reals are centre-cropped to its aspect and LANCZOS-resized (default for "
                        "a model: its training image size, 2 x patch - 5 square: 101x101 for config mini)")
    s.add_argument("--seed", type=int, default=0, help="fake i renders canvas SEED + i (default 0)")
    s.add_argument("--sample-seed", type=int, default=0, help="seed of the patch positions and directions (0)")
    s.add_argument("--nhoods", type=positive, default=NHOODS, help=f"7x7 patches per image and level ({NHOODS})")
    s.add_argument("--dirs", type=positive, default=DIRS, help=f"random directions per repeat ({DIRS})")
    s.add_argument("--repeats", type=positive, default=REPEATS, help=f"repeats of the directions ({REPEATS})")
    s.add_argument("--min-res", type=positive, default=MIN_RES, help=f"smaller side of the coarsest level ({MIN_RES})")
    s.add_argument("--norm", choices=("each", "reference"), default="each",
                   help="each: each set by its own channel statistics (ProGAN, blind to uniform colour casts); "
                        "reference: both by the real set's")
    s.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    s.add_argument("--threads", type=positive, default=None, help="torch threads")
    s.add_argument("--save-fakes", default=None, metavar="DIR", help="also write the rendered images (PNG)")
    s.add_argument("--json", default=None, metavar="PATH", help="also write the result as JSON")


def main(argv: list[str] | None = None) -> int:
    with command("igan-eval"):  # igan's log on stderr; errors name options as flags
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "swd":
        if args.count < 2:
            parser.error(f"--count must be at least 2, got {args.count}")
        files = {k: v for k, v in {"--checkpoint": args.checkpoint, "--real": args.real, "--fake": args.fake}.items()
                 if v and v != "default" and not v.startswith(("scenes:", "builtin:"))}
        refuse_unsafe_paths(parser, files, {"--json": args.json}, {"--save-fakes": args.save_fakes})
        return guarded("igan-eval", lambda: _swd(args))
    refuse_unsafe_paths(parser, {"--checkpoint": args.checkpoint, "--real": args.real, "--inception": args.inception},
                        {"--save-real-stats": args.save_real_stats, "--json": args.json})
    return guarded("igan-eval", lambda: _scaleinv(args))


def _scaleinv(args) -> int:
    import torch

    from igan.engine import sources
    from igan.engine.pipeline import default_budget
    from igan.engine.renderer import Renderer
    from igan.engine.runner import PRECISIONS, TorchRunner, resolve_device

    from . import scaleinv
    from .fid import frechet_distance, load_stats
    from .inception import FIDFeatures, load_fid_inception, sha256_prefix

    device = resolve_device(args.device)
    real_path = Path(args.real)
    if not real_path.exists():
        raise ValueError(f"--real {args.real!r} does not exist")
    weights = Path(args.inception)
    if not weights.is_file():
        load_fid_inception(weights)  # raises the error that names the file to use
    digest = sha256_prefix(weights)
    if digest != WEIGHTS_SHA256_PREFIX:
        print(f"igan-eval: warning: {args.inception} has sha256 {digest}..., not {WEIGHTS_SHA256_PREFIX}... "
              f"({WEIGHTS_FILE}): the numbers will not be comparable", file=sys.stderr)
    model = sources.load(args.checkpoint, args.config)
    proto = scaleinv.Protocol.for_config(model.config, args.scale, args.real_res, args.full_size)
    meta = dict(protocol="scaleinv", real_res=proto.real_res, inception=digest,
                input="standard[-1,1]" if args.standard_input else "official[0,1]", torch=torch.__version__)
    start = time.perf_counter()
    if real_path.is_file():  # checked before the slow part starts
        n_real, mu_r, cov_r, file_meta = load_stats(real_path)
        for key in ("protocol", "real_res", "inception", "input"):
            if file_meta.get(key) != str(meta[key]):
                raise ValueError(f"real statistics {args.real!r} were made with {key}={file_meta.get(key)!r}, "
                                 f"this run uses {meta[key]!r}")
    extractor = FIDFeatures(load_fid_inception(weights), normalize_input=args.standard_input).to(device)
    if not real_path.is_file():
        files = scaleinv.list_images(real_path, args.num_real)
        real = scaleinv.real_stats(extractor, files, proto, batch=args.batch, device=device, progress=not args.quiet)
        n_real, mu_r, cov_r = real.count, real.mean, real.cov
        if args.save_real_stats:
            real.save(args.save_real_stats, {k: str(v) for k, v in meta.items()} | {"folder": str(real_path)})
    renderer = Renderer(TorchRunner(model, device, args.precision))
    budget = args.memory_budget or default_budget(device)
    fake = scaleinv.fake_stats(extractor, renderer, proto, args.num_fake, seed=args.seed, batch=args.batch,
                               device=device, tile=args.tile, memory_budget=budget,
                               use_pil_resize=args.use_pil_resize, itemsize=PRECISIONS[args.precision].itemsize,
                               progress=not args.quiet)
    fid = frechet_distance(fake.mean, fake.cov, mu_r, cov_r)
    result = dict(fid=fid, scale=args.scale, eval_gen_res=proto.eval_gen_res, generated_size=proto.generated_size,
                  raw_gen_res=proto.raw_gen_res, num_fake=fake.count, num_real=n_real,
                  seconds=round(time.perf_counter() - start, 2), checkpoint=args.checkpoint or "embedded",
                  use_pil_resize=args.use_pil_resize, **meta)
    print(f"igan-eval: ScaleInv FID {args.scale}x = {fid:.4f} ({fake.count} fakes of {proto.generated_size}px "
          f"-> {proto.real_res}px vs {n_real} reals, {result['seconds']:.0f} s)")
    if args.json:
        tmp = Path(args.json).with_name(f".{Path(args.json).name}.igan-tmp-{os.getpid()}")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, args.json)
    return 0


def _swd(args) -> int:
    import numpy as np
    from PIL import Image

    from . import swd

    start = time.perf_counter()
    size = swd.parse_size(args.size) if args.size else None
    if args.fake:
        if size is None:
            raise ValueError("--size is required with --fake")
        fake, fake_desc = swd.load_set(args.fake, args.count, size)
    else:
        import igan

        from .scaleinv import default_full_size

        checkpoint = None if args.checkpoint in (None, "default") else args.checkpoint
        model = igan.load(checkpoint, config=args.config, device=args.device, threads=args.threads)
        if size is None:
            size = (default_full_size(model.config),) * 2
        fake = swd.render_set(model, args.count, size, args.seed)
        fake_desc = f"{checkpoint or 'the embedded model'}, canvases {args.seed}..{args.seed + args.count - 1}"
        if args.save_fakes:
            out = Path(args.save_fakes)
            out.mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(fake):
                Image.fromarray(np.ascontiguousarray(img)).save(out / f"seed{args.seed + i:05d}.png")
    real, real_desc = swd.load_set(args.real, args.count, size)
    options = dict(nhoods=args.nhoods, dirs=args.dirs, repeats=args.repeats, min_res=args.min_res,
                   seed=args.sample_seed)
    result = swd.swd(real, fake, norm=args.norm, **options)
    div_fake, div_real = swd.diversity(fake, **options), swd.diversity(real, **options)
    seconds = time.perf_counter() - start
    half = args.count // 2
    print(f"SWD x 1e3 ({args.norm} normalisation), {args.count} images of {size[0]}x{size[1]}")
    print(f"  fake: {fake_desc}")
    print(f"  real: {real_desc}")
    for name, value in result.levels.items():
        print(f"  level {name:>9}: {value:8.2f}")
    print(f"  average        : {result.average:8.2f}")
    print("diversity            fake     real")
    print(f"  pixel std      {div_fake['pixel_std']:8.2f} {div_real['pixel_std']:8.2f}   (0..255, across images)")
    print(f"  SWD of halves  {div_fake['swd_halves']:8.2f} {div_real['swd_halves']:8.2f}   "
          f"(reals: the noise floor of {half} vs {half} images)")
    print(f"({seconds:.1f} s)")
    if args.json:
        doc = dict(result.as_dict(), fake=fake_desc, real=real_desc, fake_seeds=None if args.fake else args.seed,
                   checkpoint=None if args.fake else (args.checkpoint or "default"),
                   diversity=dict(fake=div_fake, real=div_real), seconds=round(seconds, 2), igan=igan_version())
        tmp = Path(args.json).with_name(f".{Path(args.json).name}.igan-tmp-{os.getpid()}")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
