"""The layout promises of docs/architecture.md: no import cycles between igan's modules
(counting imports inside functions too), only the command-line layer prints, and the
console scripts answer --help without loading torch or the model."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"engine": "igan.engine", "kernels": "igan.kernels", "export": "igan.export", "trainer": "igan.trainer"}


def _modules() -> dict[str, Path]:
    found = {"igan": ROOT / "engine" / "_root" / "__init__.py"}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            if "_root" in rel.parts:
                continue
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str) -> set[str]:
    """Every igan module that `name` imports, at the top or inside a function (TYPE_CHECKING
    blocks excluded)."""
    tree = ast.parse(MODULES[name].read_text())
    package = name if _is_package(name) else name.rpartition(".")[0]
    out = set()

    def add(target: str) -> None:
        while target and target not in MODULES:  # `from pkg.mod import name` -> pkg.mod
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("igan"):
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("igan"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                add(sub if sub in MODULES else target)
    return out


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    colour, stack = {}, []

    def visit(node):
        colour[node] = "grey"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if colour.get(nxt) == "grey":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in colour and (found := visit(nxt)):
                return found
        stack.pop()
        colour[node] = "black"
        return None

    for node in sorted(graph):
        if node not in colour and (found := visit(node)):
            return found
    return None


def test_no_import_cycles():
    # A package's __init__ is imported with any of its modules; the edge from a package to
    # its own submodules is the package's content, not a cycle.
    graph = {name: {t for t in _imports(name) if not t.startswith(name + ".")} for name in MODULES}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checker_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


# The layers of docs/architecture.md, top to bottom: a module imports only from its own layer
# and those below it (imports inside functions too). Each entry is a module or a package prefix
# (the longest match wins).
LAYERS = [
    ("entry points", ["igan", "igan.engine.cli", "igan.export.cli", "igan.trainer.cli", "igan.trainer.eval.cli",
                      "igan.kernels.aot"]),
    ("APIs and services", ["igan.engine.api", "igan.engine.serve", "igan.engine.native.capi"]),
    ("the pipeline", ["igan.engine.pipeline", "igan.engine.recipe", "igan.engine.video"]),
    ("requests, executors and applications", ["igan.engine.request", "igan.engine.executor", "igan.engine.distributed",
                                              "igan.engine.identity",
                                              "igan.engine.workdir", "igan.engine.assembly", "igan.engine.apps",
                                              "igan.trainer"]),
    ("storage, rendering and model sources", ["igan.engine.store", "igan.engine.lease", "igan.engine.sinks", "igan.engine.paths",
                                              "igan.engine.renderer", "igan.engine.sources", "igan.export"]),
    ("runners, the model and the canvas", ["igan.engine.runner", "igan.engine.exactcpu", "igan.engine.fastcpu",
                                           "igan.engine.determinism",
                                           "igan.engine.model", "igan.engine.walk", "igan.engine.latent", "igan.engine.rng",
                                           "igan.engine.fusion", "igan.engine.checkpoint", "igan.engine.embedded",
                                           "igan.kernels"]),
    ("tiles and geometry", ["igan.engine.planner", "igan.engine.geometry"]),
    ("foundations", ["igan.engine", "igan.engine.config", "igan.engine.ops", "igan.engine.errors",
                     "igan.engine.provenance", "igan.engine.values", "igan.engine.quantize", "igan.engine.cpu",
                     "igan.engine.native"]),
]


def _layer(name: str) -> int:
    best, layer = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, layer = len(prefix), i
    assert layer is not None, f"{name} is in no layer of LAYERS: place it (and in docs/architecture.md)"
    return layer


def test_layers_import_only_downward():
    upward = []
    for name in MODULES:
        for target in _imports(name):
            if _layer(target) < _layer(name) and not target.startswith(name + "."):
                upward.append(f"{name} ({LAYERS[_layer(name)][0]}) imports {target} ({LAYERS[_layer(target)][0]})")
    assert not upward, "imports against the layers:\n" + "\n".join(sorted(upward))


def test_the_layer_check_finds_an_upward_import():
    assert _layer("igan.engine.runner") > _layer("igan.engine.pipeline") > _layer("igan.engine.cli.render")
    assert _layer("igan.engine.native") == len(LAYERS) - 1 and _layer("igan.engine.native.capi") == 1


# Modules allowed to print: the console scripts, and tools run as scripts.
PRINTERS = ("igan.engine.cli", "igan.export.cli", "igan.trainer.cli", "igan.trainer.eval.cli",
            "igan.engine.native.build", "igan.kernels.aot", "igan.trainer.scenes")


def test_only_the_command_line_layer_prints():
    offenders = []
    for name, path in MODULES.items():
        if name.startswith(PRINTERS):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, "library code prints (raise or log instead): " + ", ".join(offenders)


@pytest.mark.parametrize("script", ["igan.engine.cli.render", "igan.engine.cli.apps", "igan.engine.cli.bench"])
def test_help_does_not_load_torch(script):
    code = (f"import sys; sys.argv = ['x', '--help']\nfrom {script} import *\nimport {script} as m\n"
            "main = getattr(m, 'main', None) or m.outpaint_main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [n for n in ('torch', 'numpy', 'onnx', 'triton') if n in sys.modules]\n"
            "print('HEAVY', heavy, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "usage:" in proc.stdout, proc.stderr
    assert "HEAVY []" in proc.stderr, proc.stderr
