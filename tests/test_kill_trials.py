"""SIGKILL/resume trials of the real igan-render command line (benchmarks/kill_trials.py):
a render killed at any moment and resumed gives the reference output, leaves nothing next
to it, and leaves no process behind."""
import importlib.util
import random
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "kill_trials.py"


def _load():
    spec = importlib.util.spec_from_file_location("kill_trials", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_killed_and_resumed_renders_are_identical(tmp_path):
    kt = _load()
    render = kt.Render(width=256, height=128, tile=64, seed=3)
    kt.warm_up()
    rng = random.Random(13)
    cases = [("png", 1, "main"), ("tif", 2, "group"), ("zarr", 2, "main")]
    trials = []
    for i, (sink, workers, target) in enumerate(cases, 1):
        ref = kt.make_reference(sink, render, tmp_path)
        # mid-render: once a random number of tiles is finished (start-up costs vary with the load)
        kill_at = ("tiles", rng.randint(1, render.tiles - 1), rng.uniform(0.0, 0.3))
        trials.append(kt.run_trial(i, sink, workers, target, kill_at, ref, render, tmp_path / f"trial-{i}"))
    report = kt.table(trials)
    assert all(t.identical for t in trials), report


def test_leftovers_are_described(tmp_path):
    """A removal or staging folder left beside the output is litter, named for what it is."""
    kt = _load()
    out = tmp_path / "out.png"
    out.write_bytes(b"png")
    (tmp_path / ".out.png.igan-work.del-123-0123abcd").mkdir()
    assert kt.work_state(out, 32) == "output written, removing"
    (tmp_path / ".out.png.igan-work.new-123-0123abcd").mkdir()
    found = kt.litter(tmp_path, out.name)
    assert len(found) == 2 and "removal folder" in found[0] and "staging folder" in found[1], found
