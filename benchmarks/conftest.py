"""Speed suites (pytest-benchmark). Run: ./run bench  (add --benchmark-json=FILE to keep
the numbers). Every benchmark puts its figures of merit in extra_info; they are printed
as one table at the end."""
import os

import pytest

os.environ.setdefault("TRITON_INTERPRET", "1")

import igan.engine.determinism  # noqa: E402,F401  (MKL reproducible mode before torch computes)

_ROWS = []


def record(name: str, **figures):
    """Remember one row of figures for the end-of-run table."""
    _ROWS.append((name, figures))


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-benchmark
def pytest_benchmark_update_machine_info(config, machine_info):
    """--benchmark-json files name the CPU as igan describes it (ISA flags, MKL/oneDNN branches)."""
    from igan.engine import cpu

    machine_info["igan_cpu"] = cpu.describe()


def pytest_terminal_summary(terminalreporter):
    if not _ROWS:
        return
    from igan.engine import cpu

    terminalreporter.section("igan figures of merit")
    terminalreporter.write_line(f"CPU: {cpu.summary()}")
    for name, figures in _ROWS:
        terminalreporter.write_line(f"{name:<48} " + "  ".join(f"{k}={v}" for k, v in figures.items()))
