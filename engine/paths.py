"""The paths of one command must not destroy each other: no output may name an input or another
output, and outputs must be writable before any long work starts.

Every igan command that writes files calls these checks right after parsing its arguments,
before loading a model, so that `--out` spelled like `--checkpoint` (the same string, a `..`
detour, a symlink or a hard link) is refused instead of overwriting the user's file after
minutes of work. Messages name the user-facing option and its value, on one line.
"""
from __future__ import annotations

import os
from typing import Mapping

from .errors import PathError

PathArg = str | os.PathLike | None


class PathConflict(PathError):
    """Two paths of one command name the same file."""


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True if `a` and `b` name one file: equal once symlinks and '..' are resolved, or (when
    both exist) one inode under two names, as hard links or a case-insensitive disk give."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): then only the spelling could match
        return False


def is_within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True if `path` is `folder` or lies anywhere below it (symlinks and '..' resolved)."""
    if same_file(path, folder):
        return True
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def _given(paths: Mapping[str, PathArg] | None) -> list[tuple[str, str]]:
    return [(name, os.fspath(p)) for name, p in (paths or {}).items() if p is not None]


def check_distinct(inputs: Mapping[str, PathArg], outputs: Mapping[str, PathArg],
                   output_dirs: Mapping[str, PathArg] | None = None) -> None:
    """Raise PathConflict if any output names the same file as an input or as another output.

    Keys are the user-facing option names ("--out", "--checkpoint", "IMAGE"); None values are
    skipped. Same file = same os.path.realpath, or os.path.samefile when both exist. An output
    inside an input folder is fine (only equality conflicts). `output_dirs` are folders the
    command creates or writes into (igan-train --out, igan-export --onnx): an input or output
    equal to one of them, or lying inside it, conflicts too, since the command writes there."""
    ins, outs, dirs = _given(inputs), _given(outputs), _given(output_dirs)
    written = outs + dirs
    for i, (name, path) in enumerate(written):
        for in_name, inp in ins:
            if same_file(path, inp):
                raise PathConflict(f"{name} {path!r} would overwrite the input {in_name} {inp!r}; "
                                   "choose another path")
        for earlier_name, earlier in written[:i]:
            if same_file(path, earlier):
                raise PathConflict(f"{earlier_name} {earlier!r} and {name} {path!r} name the same file; "
                                   "choose different paths")
    for dir_name, folder in dirs:
        for name, path in ins + outs:
            if is_within(path, folder):
                raise PathConflict(f"{name} {path!r} lies inside {dir_name} {folder!r}, a folder this command "
                                   "writes into; choose another path")


def check_writable(option: str, path: str | os.PathLike) -> None:
    """Raise PathError unless a file can be written at `path`: it is not a directory, and its
    directory exists and is writable. Checked before the work, not found out after it."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise PathError(f"{option} {path!r} is a directory; give a file path")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise PathError(f"{option} {path!r}: directory {parent!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PathError(f"{option} {path!r}: directory {parent!r} is not writable")


def refuse_unsafe_paths(parser, inputs: Mapping[str, PathArg], outputs: Mapping[str, PathArg],
                        output_dirs: Mapping[str, PathArg] | None = None) -> None:
    """check_distinct, then check_writable on every output file, as the command-line error of
    `parser` (`prog: error: ...`, exit status 2): the one call every CLI makes before its work."""
    try:
        check_distinct(inputs, outputs, output_dirs)
        for option, path in _given(outputs):
            check_writable(option, path)
    except PathError as e:
        parser.error(str(e))
