"""igan-eval: evaluation commands. `igan-eval scaleinv-fid` computes the paper's ScaleInv FID."""
from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from pathlib import Path

from igan.engine.cli import guarded
from igan.engine.cli.args import positive, size_bytes
from igan.engine.paths import refuse_unsafe_paths
from igan.engine.provenance import igan_version

from .inception import WEIGHTS_FILE, WEIGHTS_SHA256_PREFIX


EXAMPLES = f"""\
examples (pt_inception.pth: pytorch-fid's {WEIGHTS_FILE}):
  igan-eval scaleinv-fid --checkpoint best_fid.pth.tar --real data/train --scale 4 --inception pt_inception.pth
  igan-eval scaleinv-fid --real data/train --scale 1 --inception pt_inception.pth --save-real-stats real128.npz
  igan-eval scaleinv-fid --real real128.npz --scale 8 --inception pt_inception.pth --num-fake 10000 --json fid8.json"""


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
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
