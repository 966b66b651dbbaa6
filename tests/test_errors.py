"""The error promises of docs/architecture.md ("Errors, logs and output"): library code raises
the typed errors of engine/errors.py, never a plain ValueError, and names an option the way
its caller spells it (`width` from Python, `--width` on a command line).

A plain `raise ValueError(...)` stays only where it guards an internal invariant (a
programming error no option, file or API input reaches): it carries the comment
`# internal invariant` on the raise statement or on the line just above it."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from igan.engine import errors
from igan.engine.errors import (BackendError, CheckpointError, IganError, PathError, RequestError, StoreError,
                                WriteError, cli_option_names)

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("engine", "export", "kernels", "trainer")
# The console scripts (pyproject's [project.scripts], and kernels/aot.py, run with python -m):
# they speak to a person and may raise what their framing (engine/cli.guarded) reports.
CONSOLE_SCRIPTS = ("engine/cli/", "export/cli.py", "trainer/cli.py", "trainer/eval/cli.py", "kernels/aot.py")
MARK = "# internal invariant"
BUILTIN_ERRORS = {"Exception", "ValueError", "RuntimeError", "OSError", "TypeError", "KeyError", "LookupError",
                  "IndexError", "ArithmeticError"}


def _library_files() -> list[Path]:
    files = []
    for folder in LIBRARY:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if not rel.startswith(CONSOLE_SCRIPTS):
                files.append(path)
    return files


def _raises_value_error(node: ast.Raise) -> bool:
    exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
    return isinstance(exc, ast.Name) and exc.id == "ValueError"


def plain_value_errors(source: str) -> list[int]:
    """Lines of the `raise ValueError` statements of `source` not marked as an internal invariant."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Raise) and node.exc is not None and _raises_value_error(node):
            statement = lines[node.lineno - 1:node.end_lineno]
            above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
            if not any(MARK in line for line in statement) and above != MARK:
                found.append(node.lineno)
    return sorted(found)


def test_library_code_raises_typed_errors():
    offenders = [f"{path.relative_to(ROOT)}:{line}" for path in _library_files()
                 for line in plain_value_errors(path.read_text())]
    assert not offenders, (
        "plain ValueError in library code: raise a typed error of engine/errors.py naming the option with "
        f"errors.option(name), or mark a true internal invariant with `{MARK}`:\n" + "\n".join(offenders))


def test_the_check_finds_a_plain_value_error():
    source = ("def f(x):\n"
              "    if x:\n"
              "        raise ValueError('bad x')\n"
              "    raise ValueError(\n"
              "        'bad')  " + MARK + "\n"
              "    " + MARK + "\n"
              "    raise ValueError('an invariant')\n"
              "    raise ValueError\n"
              "    raise RequestError('typed')\n")
    assert plain_value_errors(source) == [3, 8]


def test_library_error_classes_derive_from_igan_errors():
    """A module's own error class refines an errors.py class (private helpers excepted)."""
    offenders = []
    for path in _library_files():
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
                if bases & BUILTIN_ERRORS:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not offenders, "error classes that are not IganErrors:\n" + "\n".join(offenders)


@pytest.mark.parametrize("error, builtin", [(RequestError, ValueError), (PathError, ValueError),
                                            (CheckpointError, ValueError), (StoreError, ValueError),
                                            (WriteError, OSError), (BackendError, RuntimeError)])
def test_each_error_is_also_the_builtin_it_refines(error, builtin):
    assert issubclass(error, IganError) and issubclass(error, builtin)


def test_module_error_classes_are_igan_errors():
    from igan.engine.native.build import BuildUnavailable
    from igan.engine.serve.canvas import CanvasError
    from igan.engine.serve.jobs import JobError, JobsFull
    from igan.engine.serve.service import Overloaded
    from igan.engine.serve.tiles import TileError
    from igan.engine.sinks import SinkError

    for cls in (CanvasError, JobError, TileError):
        assert issubclass(cls, RequestError)
    assert issubclass(BuildUnavailable, BackendError) and issubclass(SinkError, WriteError)
    assert issubclass(JobsFull, IganError) and issubclass(Overloaded, IganError)


def _message(call, cli: bool) -> tuple[type, str]:
    try:
        if cli:
            with cli_option_names():
                call()
        else:
            call()
    except IganError as e:
        return type(e), str(e)
    raise AssertionError("no error")


@pytest.mark.parametrize("call, python, flag", [
    (lambda: __import__("igan.engine.planner", fromlist=["Window"]).Window(0, 0, 0, 8),
     "width must be a positive integer, got 0", "--width must be a positive integer, got 0"),
    (lambda: __import__("igan.engine.planner", fromlist=["check_tile"]).check_tile(20),
     "tile must be a positive multiple of 16", "--tile must be a positive multiple of 16"),
    (lambda: __import__("igan.engine.runner", fromlist=["resolve_device"]).resolve_device("tpu"),
     "unknown device 'tpu' (device:", "unknown device 'tpu' (--device:"),
    (lambda: __import__("igan.engine.sources", fromlist=["make_runner"]).make_runner("jax", None),
     "unknown backend 'jax'", "unknown --backend 'jax'"),
])
def test_errors_name_options_as_the_caller_spells_them(call, python, flag):
    kind, text = _message(call, cli=False)
    assert kind is RequestError and text.startswith(python), text
    kind, text = _message(call, cli=True)
    assert kind is RequestError and text.startswith(flag), text


def test_style_options_are_named_by_the_request_field():
    from igan.engine.config import PRESETS
    from igan.engine.fusion import spec_from_options
    from igan.engine.planner import Window

    cfg = next(iter(PRESETS.values()))
    window = Window(0, 0, 64, 64)
    build = lambda **kw: lambda: spec_from_options(cfg, window, 0, styles=(1, 2), **kw)  # noqa: E731
    assert _message(build(blur=0), cli=False) == (
        RequestError, "style_blur must be an integer from 1 to 4096 (pixels), got 0")
    assert _message(build(blur=10**8), cli=True)[1].startswith("--style-blur must be an integer from 1 to 4096")
    assert _message(build(centers=((0.5, float("nan")), (0.2, 0.5))), cli=True)[1].startswith(
        "--style-centers must be finite")


def test_option_spelling():
    assert errors.option("style_blur") == "style_blur"
    with cli_option_names():
        assert errors.option("style_blur") == "--style-blur"
    assert errors.option("style_blur") == "style_blur"


@pytest.mark.parametrize("main, argv", [
    ("igan.export.cli", ["--checkpoint", "builtin:landscapes-v2", "--config", "InfinityGAN", "--packed", "{d}/m.packed"]),
    ("igan.trainer.eval.cli", ["swd", "--checkpoint", "builtin:landscapes-v2", "--config", "InfinityGAN", "--real",
                               "scenes:sky", "--count", "2"]),
])
def test_every_console_script_names_options_as_flags(main, argv, tmp_path, capsys):
    """igan-export, igan-train and igan-eval run inside cli.command as igan-render does: an
    error the library raises names the option the user typed (--config), not its field."""
    import importlib

    module = importlib.import_module(main)
    code = module.main([a.replace("{d}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert code == 1 and "error: --config is for official checkpoints" in err, err
