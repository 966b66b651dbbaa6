"""igan-render's command line for the C++ API: `igan::parse_command_line` (engine/native/cpp)
calls `parse_command_line` here, so a C++ program takes igan-render's arguments, parsed by the
console script's own parser; the C++ API's other calls go to engine/native/capi.py, below the
console scripts."""
from __future__ import annotations

from ..errors import RequestError
from ..native.capi import CARRIED, UNSUPPORTED
from . import render as cli


def parse_command_line(argv: list[str]) -> dict:
    """igan-render's arguments -> their values by RenderRequest name (those igan::CommandLine
    carries: capi.CARRIED), y0 resolved (argparse prints the usage and raises SystemExit on
    bad input or --help)."""
    request = cli.parse_args(argv)
    for name in UNSUPPORTED:
        if getattr(request, name):
            raise RequestError(f"--{name.replace('_', '-')} is not available through the C++ API (one model, "
                               f"one process); use igan-render for it")
    request = request.replace(y0=request.top)
    return {name: getattr(request, name) for name in CARRIED}
