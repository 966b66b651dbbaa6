"""igan-train: train an InfinityGAN on a folder of images.

    igan-train --data scenes/ --config small --out runs/small --steps 2000
    torchrun --nproc-per-node 4 -m igan.trainer.cli --data DIR --config NAME --out RUN_DIR
"""
from __future__ import annotations

import argparse
import sys

from igan.engine.config import PRESETS, from_name
from igan.engine.paths import is_within, refuse_unsafe_paths

from .train import Trainer, TrainOptions


def build_parser() -> argparse.ArgumentParser:
    d = TrainOptions()
    p = argparse.ArgumentParser(prog="igan-train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", required=True, help="folder of training images (any size; centre-cropped)")
    p.add_argument("--config", required=True, help=f"model preset: {', '.join(PRESETS)}")
    p.add_argument("--out", required=True, help="run folder: model.safetensors, checkpoints/, samples/, state.pt")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/state.pt")
    p.add_argument("--steps", type=int, default=d.steps, help="total iterations (including resumed ones)")
    p.add_argument("--batch", type=int, default=d.batch, help="images per process per step (even)")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--full-size", type=int, default=None,
                   help="size the images are resized to before patch crops (default patch + 6 cells)")
    p.add_argument("--d-width", type=int, default=d.d_width, help="discriminator base channels")
    p.add_argument("--r1", type=float, default=d.r1_gamma, dest="r1_gamma")
    p.add_argument("--path-weight", type=float, default=d.path_weight)
    p.add_argument("--diversity-weight", type=float, default=d.diversity_weight)
    p.add_argument("--coord-weight", type=float, default=d.coord_weight)
    p.add_argument("--mixing", type=float, default=d.mixing)
    p.add_argument("--ema-kimg", type=float, default=d.ema_kimg, help="EMA half-life in thousands of images")
    p.add_argument("--ema-rampup", type=float, default=None, help="cap the half-life at this x images seen")
    p.add_argument("--save-every", type=int, default=d.save_every)
    p.add_argument("--sample-every", type=int, default=d.sample_every)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--precision", default=d.precision, choices=["fp32", "bf16", "fp16"])
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    refuse_unsafe_paths(parser, {"--data": args.data}, {}, {"--out": args.out})  # before the run folder is made
    if is_within(args.out, args.data):  # images are found recursively: the run's samples would become data
        parser.error(f"--out {args.out!r} lies inside --data {args.data!r}: the run's sample images would be "
                     f"read as training images; choose a run folder outside the data")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cfg = from_name(args.config)
        opts = TrainOptions(
            steps=args.steps, batch=args.batch, lr=args.lr, r1_gamma=args.r1_gamma, path_weight=args.path_weight,
            mixing=args.mixing, diversity_weight=args.diversity_weight, coord_weight=args.coord_weight,
            ema_kimg=args.ema_kimg, ema_rampup=args.ema_rampup, d_width=args.d_width, full_size=args.full_size,
            save_every=args.save_every, sample_every=args.sample_every, log_every=args.log_every, seed=args.seed,
            precision=args.precision)
        trainer = Trainer(cfg, args.data, args.out, opts, device=args.device, resume=args.resume,
                          progress=not args.quiet)
        try:
            trainer.run()
        finally:
            trainer.close()
    except KeyboardInterrupt:
        print("igan-train: interrupted; the last saved state is in --out (resume with --resume)", file=sys.stderr)
        return 130
    except (ValueError, OSError, FloatingPointError) as e:
        print(f"igan-train: error: {e}", file=sys.stderr)
        return 1
    if trainer.rank == 0:
        print(f"igan-train: {trainer.step} steps -> {args.out}/model.safetensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
