"""igan's exceptions, and how an error names an option.

Every error igan raises on purpose is an IganError; each kind also derives from the builtin
exception it refines (ValueError for bad input, OSError for files), so callers can catch
either. Library code raises and logs (the "igan" logger); only the command lines
(igan.engine.cli) print. A plain ValueError is left only where it guards an internal
invariant, a programming error no option, file or API input reaches, and says so with the
comment `# internal invariant` (tests/test_errors.py holds both rules).

An error about an option names it the way the caller spelled it: `width` from Python, `--width`
on the command line (the CLIs run inside `cli_option_names()`).
"""
from __future__ import annotations

import contextlib
import contextvars

_CLI_NAMES = contextvars.ContextVar("igan_cli_option_names", default=False)


def option(name: str) -> str:
    """`name` (a RenderRequest field or another option) as the caller knows it."""
    return "--" + name.replace("_", "-") if _CLI_NAMES.get() else name


@contextlib.contextmanager
def cli_option_names():
    """Within the block, errors name options as command-line flags."""
    token = _CLI_NAMES.set(True)
    try:
        yield
    finally:
        _CLI_NAMES.reset(token)


class IganError(Exception):
    """Base of the errors igan raises on purpose."""


class RequestError(IganError, ValueError):
    """A render request (options, sizes, devices) that cannot be carried out."""


class PathError(IganError, ValueError):
    """An input or output path that cannot be used (missing, unwritable, the same file as another)."""


class CheckpointError(IganError, ValueError):
    """A checkpoint or model file that cannot be read or does not fit the model config."""


class StoreError(IganError, ValueError):
    """A work directory (tile store) that is not igan's, belongs to another request, or is damaged."""


class WriteError(IganError, OSError):
    """Writing an output failed (a full disk, a vanished folder); finished work is kept."""


class BackendError(IganError, RuntimeError):
    """A backend, device or precision that is not available here."""
