"""A render is planned once (issue: one declaration, planned once): the plan is computed by
the pipeline and handed to executors, workers and ranks, which never plan again. Counted in
every process a render starts (the main process, --workers processes, torchrun ranks) by a
sitecustomize module that wraps planner.plan before anything imports it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ARGS = ["--width", "160", "--height", "96", "--tile", "64", "--seed", "2", "--device", "cpu", "--quiet"]
SITE = '''
import os
import igan.engine.planner as _planner

_original = _planner.plan


def _counted(*args, **kwargs):
    with open(os.environ["IGAN_TEST_PLAN_LOG"], "a") as f:
        f.write(f"{os.getpid()}\\n")
    return _original(*args, **kwargs)


_planner.plan = _counted
'''


def _plans(tmp_path: Path, argv: list[str], timeout: int = 300) -> list[str]:
    """Run `argv` with planner.plan counted in every Python process it starts: the pids of
    the calls."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITE)
    log = tmp_path / "plans.log"
    log.write_text("")
    env = dict(os.environ, IGAN_TEST_PLAN_LOG=str(log),
               PYTHONPATH=os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]))
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return log.read_text().split()


def test_the_command_line_plans_once(tmp_path):
    calls = _plans(tmp_path, [sys.executable, "-m", "igan.engine.cli.render", *ARGS, "--out", "a.png"])
    assert len(calls) == 1, calls


def test_the_python_api_plans_once(tmp_path):
    script = ("import igan\nm = igan.load(device='cpu')\n"
              "m.render_to_file('b.png', 160, 96, seed=2, tile=64)\nm.render(160, 96, seed=2, tile=64)\n")
    calls = _plans(tmp_path, [sys.executable, "-c", script])
    assert len(calls) == 2, calls  # one per render: the file and the in-memory one


@pytest.mark.slow
def test_worker_processes_do_not_plan(tmp_path):
    calls = _plans(tmp_path, [sys.executable, "-m", "igan.engine.cli.render", *ARGS, "--workers", "2",
                              "--out", "w.png"])
    assert len(calls) == 1, calls  # the main process's; the two workers receive the plan


@pytest.mark.slow
def test_torchrun_ranks_plan_once_each(tmp_path):
    calls = _plans(tmp_path, [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                              "-m", "igan.engine.cli.render", *ARGS, "--bit-exact", "--out", "t.tif"], timeout=600)
    assert len(calls) == 2 and len(set(calls)) == 2, calls  # each rank is a pipeline: one plan each
