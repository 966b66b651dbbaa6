"""igan-serve: explore the endless canvas in a browser (or an igan output with --open).

Only the command line lives here; igan.engine.serve does the work. Nothing heavy is imported
before the options are parsed, so `igan-serve --help` answers at once.
"""
from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import textwrap

from ..embedded import DESCRIPTION as EMBEDDED_DESCRIPTION
from ..errors import IganError, RequestError
from ..provenance import igan_version
from ..serve import RENDER_OPTIONS
from ..values import positive, size_bytes
from . import command
from .args import add_request_options

EXAMPLES = """examples:
  igan-serve
  igan-serve --checkpoint best_fid.pth.tar --seed 7 --cache tiles --output renders
  igan-serve --wrap 4096 --port 8080
  igan-serve --open pano.tif
  igan-serve --host 0.0.0.0 --root-path /igan
"""
LOOPBACK = ("127.0.0.1", "localhost", "::1")
TOKEN = re.compile(r"[A-Za-z0-9_~.-]{16,256}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="igan-serve",
        description="Pan and zoom over an endless InfinityGAN canvas in the browser, rendered as you move; "
                    "save any view as a file.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES + "\n" + textwrap.fill(f"Without --checkpoint igan renders with the {EMBEDDED_DESCRIPTION}. "
                                                 "See docs/serve.md.", width=88))
    p.add_argument("--version", action="version", version=f"%(prog)s {igan_version()}")
    p.add_argument("--open", default=None, metavar="FILE",
                   help="serve an existing igan output (.tif/.tiff pyramid or .zarr) instead of a model")
    p.add_argument("--seed", type=int, default=0, help="the canvas the page opens on (default 0)")
    p.add_argument("--wrap", type=positive, nargs="?", const=4096, default=None, metavar="PERIOD",
                   help="open in 360-degree mode: the canvas repeats every PERIOD pixels (a multiple of 256; "
                        "default 4096)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; any other needs a token)")
    p.add_argument("--token", default=None,
                   help="the secret every request must carry (default: none on loopback; beyond it, a random one "
                        "printed in the address); 16-256 letters, digits, '_', '~', '.', '-'")
    p.add_argument("--root-path", default="", metavar="PATH",
                   help="the prefix a reverse proxy serves igan-serve under, e.g. /igan (the page's URLs and the "
                        "printed address carry it)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="folder of rendered tiles, kept between runs (default: a temporary folder, removed at exit)")
    p.add_argument("--output", default=".", metavar="DIR",
                   help="where 'render this view' writes its files (default: the current folder)")
    p.add_argument("--batch", type=positive, default=None,
                   help="tiles per forward pass (default: 1 on CPU, 8 on a GPU)")
    p.add_argument("--queue", type=positive, default=64,
                   help="tile requests that may wait for rendering; more get HTTP 503 (default 64)")
    p.add_argument("--max-jobs", type=positive, default=8, metavar="N",
                   help="'render this view' jobs queued or running at once; more get HTTP 429 (default 8)")
    p.add_argument("--jobs-size", type=size_bytes, default=16 << 30, metavar="SIZE",
                   help="what all 'render this view' jobs of this server may write, counted at a job's uncompressed "
                        "size until it is done; more get HTTP 413 (default 16GiB)")
    p.add_argument("--memory-cache", type=size_bytes, default=256 << 20, metavar="SIZE",
                   help="PNG tiles kept in memory (default 256MiB); the disk cache holds the rest")
    p.add_argument("--max-level", type=int, default=None, metavar="N",
                   help="how far the view zooms out: 1:2^N (default 3; at most 8). A tile there is built "
                        "from 4^N rendered tiles")
    add_request_options(p, RENDER_OPTIONS, titles={"model": "the model (tiles and render jobs, as igan-render)"})
    return p


def main(argv: list[str] | None = None) -> int:
    with command("igan-serve"):
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.open is not None and (args.checkpoint or args.model or args.random_weights or args.wrap):
        parser.error("--open serves a file: not with --checkpoint, --model or --wrap")
    if args.open is not None and not os.path.exists(args.open):
        parser.error(f"--open {args.open!r} does not exist")
    if args.output is not None and not os.path.isdir(args.output):
        parser.error(f"--output {args.output!r} is not a folder")
    if args.cache is not None:
        if os.path.lexists(args.cache) and not os.path.isdir(args.cache):
            parser.error(f"--cache {args.cache!r} exists and is not a folder")
        try:
            os.makedirs(args.cache, exist_ok=True)  # the folder the user named, and only it
        except OSError as e:
            parser.error(f"--cache {args.cache!r} cannot be created: {e.strerror}")
    if args.token is not None and not TOKEN.fullmatch(args.token):
        parser.error(f"--token must be 16-256 letters, digits, '_', '~', '.' or '-', got {len(args.token)} "
                     "character(s)" + ("" if re.fullmatch(r"[A-Za-z0-9_~.-]*", args.token) else " with others"))
    from ..serve.app import check_root_path  # torch-free

    try:
        args.root_path = check_root_path(args.root_path)
    except RequestError as e:
        parser.error(str(e))
    if args.token is None and args.host not in LOOPBACK:
        args.token = secrets.token_urlsafe(24)
    if args.wrap is not None and args.wrap % 256:
        parser.error(f"--wrap must be a multiple of 256 pixels (whole tiles), got {args.wrap}")
    if args.max_level is not None and not 0 <= args.max_level <= 8:
        parser.error(f"--max-level must be between 0 and 8, got {args.max_level}")
    if not 0 <= args.port < 65536:
        parser.error(f"--port must be 0-65535, got {args.port}")
    cache = args.cache or tempfile.mkdtemp(prefix="igan-serve-")
    try:
        return _serve(args, cache)
    finally:
        if args.cache is None:
            shutil.rmtree(cache, ignore_errors=True)


def address(host: str, port: int, root_path: str = "", token: str | None = None) -> str:
    """The page's address as printed: the proxy's prefix, and the token a browser needs."""
    return f"http://{host}:{port}{root_path}/" + (f"?token={token}" if token else "")


def _serve(args, cache: str) -> int:
    import uvicorn  # after the options: these load torch and the model

    from ..serve.server import ServeOptions, build

    options = ServeOptions(cache=cache, output=args.output, render={k: getattr(args, k) for k in RENDER_OPTIONS},
                           open=args.open, seed=args.seed, wrap=args.wrap, batch=args.batch, queue=args.queue,
                           memory_cache=args.memory_cache, max_level=args.max_level, host=args.host,
                           token=args.token, root_path=args.root_path, max_jobs=args.max_jobs,
                           jobs_size=args.jobs_size)
    try:
        app, info = build(options)
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
        # listening before the URL is printed: a client that connects the moment it reads the
        # URL waits in the backlog until uvicorn accepts, instead of being refused
        sock.listen(2048)
    except (IganError, ValueError, OSError, RuntimeError) as e:
        print(f"igan-serve: error: {e}", file=sys.stderr)
        return 1
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"igan-serve: {info['model']}", file=sys.stderr)
    url = address(shown, port, args.root_path, args.token)
    if args.host not in LOOPBACK:
        print(f"igan-serve: listening on {args.host}: whoever has the address with its token can use this server "
              "(render jobs included); share it as a secret", file=sys.stderr)
    print(f"igan-serve: {url}  (tiles cached in {cache}; Ctrl-C stops)", flush=True)
    if host in ("0.0.0.0", "::"):
        print(f"igan-serve: from other machines: {address(socket.gethostname(), port, args.root_path, args.token)}",
              file=sys.stderr)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully, then re-raises the signal
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
