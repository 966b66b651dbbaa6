"""igan-export: a checkpoint as ONNX graphs (for --backend onnx) and/or packed kernel weights.

Nothing heavy is imported before the options are parsed, so --help and --version answer at once.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from igan.engine.cli import command, guarded
from igan.engine.paths import refuse_unsafe_paths
from igan.engine.provenance import igan_version

EXAMPLES = """\
examples:
  igan-export --checkpoint best_fid.pth.tar --onnx export/
  igan-export --checkpoint runs/small/model.safetensors --packed small.packed
  igan-export --onnx embedded/ --precisions fp32

Render an export with: igan-render --backend onnx --model DIR ...; packed weights with:
igan-render --checkpoint FILE.packed ...; time an export with: igan-bench --backend onnx --model DIR"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="igan-export",
        description="Export an InfinityGAN generator: ONNX graphs (mapping, structure and texture synthesizers;\n"
                    "dynamic batch/height/width) and/or weights packed for the fused kernels.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {igan_version()}")
    p.add_argument("--checkpoint", default=None,
                   help="official checkpoint (.pth.tar) or igan .safetensors model (default: the embedded model)")
    p.add_argument("legacy_checkpoint", nargs="?", default=None, metavar="CHECKPOINT",
                   help="deprecated: the checkpoint as a positional argument; use --checkpoint CHECKPOINT")
    p.add_argument("--config", default=None, help="preset of an official checkpoint (default: inferred)")
    p.add_argument("--onnx", default=None, metavar="DIR", help="write the ONNX graphs into the new directory DIR")
    p.add_argument("--precisions", default="fp32,fp16",
                   help="comma-separated graph precisions to export (default fp32,fp16)")
    p.add_argument("--packed", default=None, metavar="FILE",
                   help="write the packed kernel weights to FILE (suffix .packed)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def main(argv: list[str] | None = None) -> int:
    with command("igan-export"):  # igan's log on stderr; errors name options as flags
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    checkpoint_option = "--checkpoint"
    if args.legacy_checkpoint is not None:
        if args.checkpoint is not None:
            parser.error(f"the checkpoint is given twice, as --checkpoint {args.checkpoint!r} and as the deprecated "
                         f"positional CHECKPOINT {args.legacy_checkpoint!r}: give only --checkpoint")
        print("igan-export: warning: the positional CHECKPOINT is deprecated and will be removed; "
              f"use --checkpoint {args.legacy_checkpoint}", file=sys.stderr)
        args.checkpoint, checkpoint_option = args.legacy_checkpoint, "CHECKPOINT"
    if args.onnx is None and args.packed is None:
        parser.error("nothing to do: give --onnx DIR and/or --packed FILE")
    if args.packed is not None and not args.packed.endswith(".packed"):
        parser.error(f"--packed {args.packed!r}: the file name must end in .packed (igan-render reads it by suffix)")
    precisions = tuple(p.strip() for p in args.precisions.split(",") if p.strip())
    refuse_unsafe_paths(parser, {checkpoint_option: args.checkpoint}, {"--packed": args.packed}, {"--onnx": args.onnx})
    if args.onnx is not None and os.path.exists(args.onnx):  # checked before anything is written
        parser.error(f"--onnx {args.onnx!r} already exists: choose a new directory for the export")
    def export() -> int:
        from igan.engine import determinism  # noqa: F401  (MKL's reproducible mode before torch computes)
        from igan.engine import checkpoint, sources

        from . import source_digest

        model = sources.load(args.checkpoint, args.config)
        if not isinstance(model, checkpoint.Generator):
            raise ValueError(f"{args.checkpoint!r} is not a checkpoint (an ONNX export cannot be exported again)")
        source = source_digest(args.checkpoint, model)
        say = (lambda text: None) if args.quiet else (lambda text: print(f"igan-export: {text}", file=sys.stderr))
        if args.packed is not None:
            from .packed import save_packed

            save_packed(model, args.packed, source)
            say(f"wrote {args.packed}")
        if args.onnx is not None:
            from .onnx_export import export_onnx

            start = time.perf_counter()
            export_onnx(model, args.onnx, source, precisions,
                        progress=lambda f: say(f"exported {f} ({time.perf_counter() - start:.0f} s)"))
            say(f"wrote {args.onnx}")
        return 0

    return guarded("igan-export", export, interrupted="interrupted; nothing was written")


if __name__ == "__main__":
    sys.exit(main())
