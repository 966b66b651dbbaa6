"""igan-train: train an InfinityGAN on a folder of images.

    igan-train --data scenes/ --config small --out runs/small --steps 2000
    torchrun --nproc-per-node 4 -m igan.trainer.cli --data DIR --config NAME --out RUN_DIR
"""
from __future__ import annotations

import argparse
import math
import os
import sys

from igan.engine.cli import command, guarded
from igan.engine.config import PRESETS, from_name
from igan.engine.errors import IganError
from igan.engine.paths import is_within, refuse_unsafe_paths
from igan.engine.provenance import igan_version

from .train import Trainer, TrainOptions


EXAMPLES = """\
examples:
  igan-train --data scenes/ --config small --out runs/small --steps 2000
  igan-train --data scenes/ --config small --out runs/small --steps 4000 --resume
  torchrun --nproc-per-node 4 -m igan.trainer.cli --data scenes/ --config InfinityGAN --out runs/full --precision bf16

Render the result with: igan-render --checkpoint runs/small/model.safetensors"""


# ---- numeric options: checked by the parser, so a bad value is named with its flag at once ----------------
def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _number(text: str, what: str, ok) -> float:
    """float(text) if it is finite and ok(value), else ArgumentTypeError "must be {what}"."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not ok(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def even_batch(text: str) -> int:
    value = _integer(text)
    if value < 2 or value % 2:
        raise argparse.ArgumentTypeError(f"must be even and >= 2 (dual pairs), got {value}")
    return value


def seed(text: str) -> int:
    value = _integer(text)
    if abs(value) > MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer in [-2^53, 2^53], got {value}")
    return value


def positive_number(text: str) -> float:
    return _number(text, "a finite positive number", lambda v: v > 0)


def weight(text: str) -> float:
    return _number(text, "a finite number >= 0", lambda v: v >= 0)


def probability(text: str) -> float:
    return _number(text, "a probability in [0, 1]", lambda v: 0 <= v <= 1)


MAX_SEED = 2 ** 53  # the seeds of the ranks' generators are seed * 1000 + rank + 1, within torch's int64


def check_run_folder(parser, out: str) -> None:
    """--out is the run folder: an existing folder, or a path where one can be made (its nearest
    existing parent a writable folder); refused before torch loads or the model is built."""
    if os.path.lexists(out) and not os.path.isdir(out):
        parser.error(f"--out {out!r} is a file, not a folder: RUN_DIR is the run folder (model.safetensors, "
                     f"checkpoints/, samples/, state.pt); choose a folder, new or existing")
    parent = os.path.abspath(out)
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        parser.error(f"--out {out!r}: {parent!r} is a file, not a folder; choose a run folder elsewhere")
    if not os.access(parent, os.W_OK | os.X_OK):
        parser.error(f"--out {out!r}: {parent!r} is not writable")


def build_parser() -> argparse.ArgumentParser:
    d = TrainOptions()
    p = argparse.ArgumentParser(prog="igan-train", description=__doc__.split("\n\n")[0], epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {igan_version()}")
    p.add_argument("--data", required=True, help="folder of training images, searched recursively (any size; "
                                                 "centre-cropped) (required)")
    p.add_argument("--config", required=True, help=f"model preset: {', '.join(PRESETS)} (required)")
    p.add_argument("--out", required=True, metavar="RUN_DIR",
                   help="run folder: model.safetensors, checkpoints/, samples/, state.pt (required)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/state.pt (default: a new run)")
    p.add_argument("--steps", type=positive_int, default=d.steps,
                   help="total iterations, including resumed ones (default %(default)s)")
    p.add_argument("--batch", type=even_batch, default=d.batch,
                   help="images per process per step, even (dual pairs) (default %(default)s)")
    p.add_argument("--lr", type=positive_number, default=d.lr, help="Adam learning rate of G and D (default %(default)s)")
    p.add_argument("--keep-aspect", action="store_true",
                   help="keep a wide image's whole width (resized to --full-size rows), patches drawn across it; "
                        "default: the centre square, as the official code")
    p.add_argument("--full-size", type=positive_int, default=None,
                   help="size the images are resized to before patch crops (default: patch size + 6 cells, "
                        "197 for 101-px patches)")
    p.add_argument("--d-width", type=positive_int, default=d.d_width, help="discriminator base channels (default %(default)s)")
    p.add_argument("--r1", type=weight, default=d.r1_gamma, dest="r1_gamma",
                   help="R1 penalty weight gamma on real images (default %(default)s)")
    p.add_argument("--path-weight", type=weight, default=d.path_weight,
                   help="path length regularisation weight, 0 turns it off (default %(default)s)")
    p.add_argument("--diversity-weight", type=weight, default=d.diversity_weight,
                   help="weight of the structure synthesizer's L1 diversity loss, 0 turns it off "
                        "(default %(default)s)")
    p.add_argument("--coord-weight", type=weight, default=d.coord_weight,
                   help="weight of the discriminator's coordinate L1 loss (default %(default)s)")
    p.add_argument("--mixing", type=probability, default=d.mixing,
                   help="probability that a batch of fakes mixes two styles (default %(default)s)")
    p.add_argument("--ema-kimg", type=weight, default=d.ema_kimg,
                   help="EMA half-life in thousands of images (default %(default)s)")
    p.add_argument("--ema-rampup", type=positive_number, default=None, metavar="X",
                   help="cap the EMA half-life at X times the images seen, as StyleGAN2-ADA (default: off)")
    p.add_argument("--save-every", type=positive_int, default=d.save_every,
                   help="steps between checkpoints and state.pt (default %(default)s; the last step always saves)")
    p.add_argument("--sample-every", type=positive_int, default=d.sample_every,
                   help="steps between sample grids in RUN_DIR/samples/ (default %(default)s)")
    p.add_argument("--log-every", type=positive_int, default=d.log_every,
                   help="steps between loss records (loss curves, progress bar) (default %(default)s)")
    p.add_argument("--seed", type=seed, default=d.seed,
                   help="seed of the initial weights, data order, latents and noise (default %(default)s)")
    p.add_argument("--precision", default=d.precision, choices=["fp32", "bf16", "fp16"],
                   help="autocast precision: fp32, bf16 (GPU or CPU) or fp16 (GPU only) (default %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default %(default)s)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch (default: all)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: show it)")
    return p


def main(argv: list[str] | None = None) -> int:
    with command("igan-train"):  # igan's log on stderr; errors name options as flags
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # before torch loads and the model is built: the preset, the data folder, the run folder
    try:
        cfg = from_name(args.config)
    except ValueError as e:
        parser.error(f"--config: {e}")
    if not os.path.isdir(args.data):
        parser.error(f"--data {args.data!r} " + ("is not a folder" if os.path.lexists(args.data) else "does not exist"))
    refuse_unsafe_paths(parser, {"--data": args.data}, {}, {"--out": args.out})  # before the run folder is made
    if is_within(args.out, args.data):  # images are found recursively: the run's samples would become data
        parser.error(f"--out {args.out!r} lies inside --data {args.data!r}: the run's sample images would be "
                     f"read as training images; choose a run folder outside the data")
    check_run_folder(parser, args.out)
    if args.full_size is not None and args.full_size < cfg.patch_size:
        parser.error(f"--full-size {args.full_size} is smaller than the {cfg.name} patch ({cfg.patch_size} px): the "
                     f"patches are cropped from images of that size")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    def train() -> int:
        opts = TrainOptions(
            steps=args.steps, batch=args.batch, lr=args.lr, r1_gamma=args.r1_gamma, path_weight=args.path_weight,
            mixing=args.mixing, diversity_weight=args.diversity_weight, coord_weight=args.coord_weight,
            ema_kimg=args.ema_kimg, ema_rampup=args.ema_rampup, d_width=args.d_width, full_size=args.full_size,
            keep_aspect=args.keep_aspect,
            save_every=args.save_every, sample_every=args.sample_every, log_every=args.log_every, seed=args.seed,
            precision=args.precision)
        trainer = Trainer(cfg, args.data, args.out, opts, device=args.device, resume=args.resume,
                          progress=not args.quiet)
        try:
            trainer.run()
        finally:
            trainer.close()
        if trainer.rank == 0:
            print(f"igan-train: {trainer.step} steps -> {args.out}/model.safetensors")
        return 0

    return guarded("igan-train", train, interrupted="interrupted; the last saved state is in --out (resume with "
                   "--resume)", reported=(IganError, ValueError, OSError, FloatingPointError))


if __name__ == "__main__":
    sys.exit(main())
