"""Outpainting and inbetweening render through igan-render's pipeline (RenderRequest ->
planner -> executor -> tile store -> sink): worker processes and kill/--resume give the same
bytes, the work directory's protections apply, and a resume must be the same request."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import zarr
from PIL import Image

from igan.engine.apps import outpaint as apps
from igan.engine.cli import apps as apps_cli
from igan.engine.apps.record import InversionRecord
from igan.engine.cli.render import main as render_main
from igan.engine.store import work_dir_for

APPS = ("import sys; from igan.engine.cli import apps as apps_cli; "
        "sys.exit(getattr(apps_cli, sys.argv[1])(sys.argv[2:]))")
COMMON = ["--device", "cpu", "--quiet", "--tile", "64"]


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    d = tmp_path_factory.mktemp("apps")
    assert render_main(["--width", "96", "--height", "64", "--seed", "9", "--device", "cpu", "--quiet",
                        "--out", str(d / "target.png")]) == 0
    path = d / "rec.safetensors"
    assert apps_cli.invert_main([str(d / "target.png"), "--steps", "8", "--device", "cpu", "--quiet",
                                 "--out", str(path)]) == 0
    return path


def _args(kind, record, out, *extra):
    if kind == "outpaint":
        return ["outpaint_main", str(record), "--width", "256", "--height", "128", "--seed", "3", *COMMON,
                "--out", str(out), *extra]
    gap = apps.min_gap(InversionRecord.load(record)) + 32
    return ["inbetween_main", str(record), str(record), "--gap", str(gap), "--seed", "3", *COMMON,
            "--out", str(out), *extra]


def _run(args, env=None):
    return subprocess.run([sys.executable, "-c", APPS, *args], capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["outpaint", "inbetween"])
def test_workers_and_kill_resume_give_the_same_bytes(tmp_path, record, kind):
    ref = tmp_path / "ref.png"
    assert getattr(apps_cli, _args(kind, record, ref)[0])(_args(kind, record, ref)[1:]) == 0
    workers = _run(_args(kind, record, tmp_path / "w.png", "--workers", "2"))
    assert workers.returncode == 0, workers.stderr
    assert (tmp_path / "w.png").read_bytes() == ref.read_bytes()
    out = tmp_path / "k.png"
    killed = _run(_args(kind, record, out), env=dict(os.environ, IGAN_FAILPOINT="kill:before-output"))
    assert killed.returncode == -signal.SIGKILL and not out.exists() and work_dir_for(out).is_dir()
    again = _run(_args(kind, record, out))
    assert again.returncode != 0 and "--resume" in again.stderr
    resumed = _run(_args(kind, record, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert out.read_bytes() == ref.read_bytes() and not work_dir_for(out).exists()


def test_outpaint_to_zarr_and_a_resume_of_another_request_is_refused(tmp_path, record, capsys):
    out = tmp_path / "o.zarr"
    assert apps_cli.outpaint_main(_args("outpaint", record, out, "--keep-work")[1:]) == 0
    png = tmp_path / "o.png"
    assert apps_cli.outpaint_main(_args("outpaint", record, png)[1:]) == 0
    assert np.array_equal(zarr.open_array(str(out), mode="r")[:], np.asarray(Image.open(png)))
    # the kept work directory belongs to seed 3: a resume of seed 4 names the difference
    (work_dir_for(out) / "finished.json").unlink()
    assert apps_cli.outpaint_main([*_args("outpaint", record, out, "--resume")[1:], "--seed", "4"]) != 0
    assert "different render" in capsys.readouterr().err
