"""Files that torch.load(weights_only=True) refuses get one clear line from every loader
(checkpoint, training state, Inception weights): what the file is, never torch's advice to
retry with weights_only=False, which would run code from the file."""
import io
import os
import zipfile

import pytest
import torch

from igan.engine.cli import apps as apps_cli
from igan.engine import sources
from igan.engine.checkpoint import CheckpointError
from igan.trainer.eval.inception import load_fid_inception
from igan.trainer.state import load_state

LOADERS = {"checkpoint": sources.load, "training state": load_state, "Inception weights": load_fid_inception}


def _torch_bytes(**kw) -> bytes:
    buf = io.BytesIO()
    torch.save({"g_ema": {"w": torch.arange(4096.0)}}, buf, **kw)
    return buf.getvalue()


def _with_data_pkl(pkl: bytes) -> bytes:
    """A real torch zip whose pickle is replaced by `pkl`."""
    src = zipfile.ZipFile(io.BytesIO(_torch_bytes()))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name in src.namelist():
            z.writestr(name, pkl if name.endswith("/data.pkl") else src.read(name))
    return buf.getvalue()


def _zip_of_text() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("notes.txt", "hello")
    return buf.getvalue()


# Protocol 2 by hand: GLOBAL os.system, a string argument, REDUCE. Never executed: torch's
# weights-only unpickler refuses the global before anything is called.
OS_SYSTEM_PICKLE = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R."

CASES = {
    "random": (lambda: os.urandom(2048), r"it is not a torch checkpoint file, or it is corrupted"),
    "empty": (lambda: b"", r"the file is empty"),
    "truncated": (lambda: _torch_bytes()[:9000], r"truncated or corrupted torch file"),
    "truncated-legacy": (lambda: _torch_bytes(_use_new_zipfile_serialization=False)[:9000],
                         r"truncated or corrupted torch file"),
    "zip": (_zip_of_text, r"a zip archive but not a torch file"),
    "bad-pickle": (lambda: _with_data_pkl(b"garbage"), r"it is a corrupted torch file"),
    "os.system": (lambda: OS_SYSTEM_PICKLE, r"references os\.system, which is outside igan's allow list"),
    "os.system-in-zip": (lambda: _with_data_pkl(OS_SYSTEM_PICKLE), r"references os\.system"),
}


@pytest.mark.parametrize("what", LOADERS)
@pytest.mark.parametrize("case", CASES)
def test_unreadable_torch_files_get_one_clear_line(tmp_path, what, case):
    make, expected = CASES[case]
    path = tmp_path / "file.pth.tar"
    path.write_bytes(make())
    with pytest.raises(CheckpointError, match=expected) as err:
        LOADERS[what](path)
    message = str(err.value)
    assert f"{what} {str(path)!r}" in message
    assert "\n" not in message and "weights_only" not in message
    assert ("allow list" in message) == case.startswith("os.system")  # only real disallowed globals say so


def test_an_allowed_file_still_loads(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"version": 1, "step": 3}, path)
    assert load_state(path)["step"] == 3


def test_the_cli_says_a_junk_checkpoint_is_not_a_torch_checkpoint(tmp_path, capsys):
    from PIL import Image

    img = tmp_path / "a.png"
    Image.new("RGB", (16, 16)).save(img)
    junk = tmp_path / "best_fid.pth.tar"
    junk.write_bytes(os.urandom(4096))
    assert apps_cli.invert_main([str(img), "--checkpoint", str(junk), "--out", str(tmp_path / "r.safetensors"),
                                 "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err == f"igan-invert: error: cannot read checkpoint {str(junk)!r}: it is not a torch checkpoint file, " \
                  "or it is corrupted\n"
