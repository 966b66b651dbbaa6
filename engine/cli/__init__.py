"""igan.engine.cli: the console scripts (igan-render, igan-bench, igan-invert, igan-outpaint,
igan-inbetween) and their shared argument types (args.py).

Only this layer prints. The library raises igan.engine.errors exceptions and logs to the
"igan" logger; `command(prog)` is the frame of every console script: it shows those log
records as `prog: message` on stderr and makes errors name options as flags (`--width`).
Nothing heavy is imported here, so every script answers --help at once.
"""
from __future__ import annotations

import contextlib
import logging
import sys

from ..errors import IganError, cli_option_names

# What a console script reports as "prog: error: ..." (exit 1) instead of a traceback: igan's
# own errors, bad input, files and devices. Anything else is a bug and keeps its traceback.
REPORTED = (IganError, ValueError, OSError, RuntimeError)


class _StderrHandler(logging.Handler):
    """Log records as `prog: message` lines on the current sys.stderr (looked up on each
    record, so redirections and test captures see them)."""

    def __init__(self, prog: str):
        super().__init__(logging.INFO)
        self.prog = prog

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = "warning: " if record.levelno >= logging.WARNING else ""
            print(f"{self.prog}: {level}{record.getMessage()}", file=sys.stderr)
        except Exception:  # logging's contract: a failing handler never raises into the caller
            self.handleError(record)


def guarded(prog: str, body, *, interrupted: str = "interrupted", reported: tuple = REPORTED) -> int:
    """body()'s exit status, with Ctrl-C (130) and the `reported` errors (1) said in one line
    on stderr as every console script says them."""
    try:
        return body()
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    except reported as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def command(prog: str):
    """Run a console script's body: igan's log records go to stderr as `prog: ...`, and
    errors name options as the command line spells them."""
    logger = logging.getLogger("igan")
    handler, level = _StderrHandler(prog), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with cli_option_names():
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
