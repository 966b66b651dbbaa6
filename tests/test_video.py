"""igan-video: frames decoded from FFV1 are igan-render's windows byte for byte (pans in any
direction, a loop over a cyclic canvas, styles spread along the path, a path with turns); the
lossy codecs decode at the right size and count; bad input is refused before anything starts,
naming the option; the output appears whole or not at all."""
from __future__ import annotations

import json

import numpy as np
import pytest

av = pytest.importorskip("av", reason="igan-video needs PyAV (pip install 'igan[video]')")

import igan  # noqa: E402
from igan.engine import video  # noqa: E402
from igan.engine.cli.video import main  # noqa: E402

W, H = 64, 48
BASE = ["--size", f"{W}x{H}", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def model():
    return igan.load(device="cpu")


def decode(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def make(tmp_path, name, *argv) -> list[np.ndarray]:
    out = tmp_path / name
    assert main([*BASE, *argv, "--out", str(out)]) == 0
    assert out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    return decode(out)


def check_windows(model, frames, positions, alone=True, **options):
    """Each frame is igan-render's window at its position: all of them cut from one window
    covering them (the windows of one canvas join: test_api), the first and the last also
    rendered on their own (`alone`)."""
    xs, ys = [x for x, _ in positions], [y for _, y in positions]
    x0, y0 = min(xs), min(ys)
    whole = model.render(max(xs) - x0 + W, max(ys) - y0 + H, x0=x0, y0=y0, array=True, **options)
    assert len(frames) == len(positions)
    for k, ((x, y), frame) in enumerate(zip(positions, frames)):
        assert frame.shape == (H, W, 3) and np.array_equal(frame, whole[y - y0:y - y0 + H, x - x0:x - x0 + W]), \
            f"frame {k} at {x},{y}"
    for k in (0, len(frames) - 1) if alone else ():
        x, y = positions[k]
        assert np.array_equal(frames[k], model.render(W, H, x0=x, y0=y, array=True, **options)), f"frame {k}"


@pytest.mark.parametrize("pan,start", [((5, 0), (-50, -30)), ((3, -2), (7, -24)), ((-4, 3), (0, -40))],
                         ids=["right", "diagonal-up", "left-down"])
def test_ffv1_frames_are_igan_render_windows(tmp_path, model, pan, start):
    frames = make(tmp_path, "pan.mkv", "--codec", "ffv1", "--seed", "3", f"--pan={pan[0]},{pan[1]}",
                  f"--start={start[0]},{start[1]}", "--frames", "8")
    check_windows(model, frames, [(start[0] + k * pan[0], start[1] + k * pan[1]) for k in range(8)], seed=3)


def test_the_default_start_is_igan_render_s_window(tmp_path, model):
    frames = make(tmp_path, "default.mkv", "--codec", "ffv1", "--frames", "3")
    for k, frame in enumerate(frames):  # --pan 4,0, x from 0, y centred on the horizon
        assert np.array_equal(frame, model.render(W, H, x0=4 * k, array=True)), f"frame {k}"


def test_a_loop_closes_on_its_first_frame(tmp_path, model):
    period, dx = 128, 16
    frames = make(tmp_path, "loop.mkv", "--codec", "ffv1", "--seed", "2", "--wrap", "--period", str(period),
                  f"--pan={dx},0")
    assert len(frames) == period // dx  # the frames default to one period
    panorama = model.render(period, H, seed=2, x0=0, wrap=True, array=True)  # igan-render --wrap --width 128
    cyclic = np.concatenate([panorama, panorama], 1)
    for k, frame in enumerate(frames):
        x = (k * dx) % period
        assert np.array_equal(frame, cyclic[:, x:x + W]), f"frame {k}"
    after_last = cyclic[:, (len(frames) * dx) % period:][:, :W]  # frame N of the cyclic canvas
    assert np.array_equal(after_last, frames[0])
    # the last frame continues into the first: its columns shifted by the pan are frame 0's
    assert np.array_equal(frames[-1][:, dx:], frames[0][:, :W - dx])


def test_styles_spread_along_the_path(tmp_path, model):
    # centres are fractions of the canvas the video covers: frames 0..7 at 8 px per frame from
    # x 0 cover x 0..120 and y -24..24, so 0.25,0.5 and 0.75,0.5 are canvas pixels (30, 0), (90, 0)
    frames = make(tmp_path, "styles.mkv", "--codec", "ffv1", "--styles", "3,17", "--style-centers",
                  "0.25,0.5:0.75,0.5", "--pan", "8,0", "--frames", "8")
    for k in (0, 3, 7):
        x0 = 8 * k
        centres = ((30 - x0) / W, 0.5), ((90 - x0) / W, 0.5)  # the same points as fractions of this window
        want = model.render(W, H, x0=x0, styles=(3, 17), style_centers=centres, array=True)
        assert np.array_equal(frames[k], want), f"frame {k}"
    # igan-render's window over the whole path, with the centres as fractions of it
    check_windows(model, frames, [(8 * k, -24) for k in range(8)], alone=False, styles=(3, 17),
                  style_centers=((0.25, 0.5), (0.75, 0.5)))
    assert not np.array_equal(frames[0], model.render(W, H, x0=0, array=True))  # the styles changed the canvas


def test_a_path_with_turns(tmp_path, model):
    frames = make(tmp_path, "turn.mkv", "--codec", "ffv1", "--path", "0,-24:20,-24:20,-4", "--pan", "5,0")
    assert len(frames) == 9  # 40 px at 5 px per frame
    path = video.polyline_path((W, H), ((0, -24), (20, -24), (20, -4)), 5.0, None)
    positions = [path.position(k) for k in range(9)]
    assert positions == [(0, -24), (5, -24), (10, -24), (15, -24), (20, -24), (20, -19), (20, -14), (20, -9),
                         (20, -4)]
    check_windows(model, frames, positions)


def test_diagonal_path_positions_round_to_whole_pixels():
    path = video.polyline_path((8, 8), ((0, 0), (10, 10)), 3.0, None)
    assert path.frames == 5 and path.position(1) == (2, 2) and path.position(4) == (8, 8)


def test_h264_decodes_at_its_size_and_count_with_the_recipe(tmp_path):
    out = tmp_path / "fly.mp4"
    assert main([*BASE, "--frames", "10", "--seed", "4", "--out", str(out)]) == 0
    frames = decode(out)
    assert len(frames) == 10 and all(f.shape == (H, W, 3) for f in frames)
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name in ("h264", "libx264")
    recipe = video.read_recipe(out)
    assert recipe["command"].startswith("igan-video ") and "--seed 4" in recipe["command"]
    assert recipe["video"]["frames"] == 10 and recipe["request"]["seed"] == 4


def test_ffv1_records_the_recipe(tmp_path):
    out = tmp_path / "r.mkv"
    assert main([*BASE, "--frames", "2", "--codec", "ffv1", "--out", str(out)]) == 0
    recipe = video.read_recipe(out)
    assert recipe["video"]["codec"] == "ffv1" and recipe["request"]["model"]


@pytest.mark.parametrize("codec,name", [("vp9", "a.webm"), ("gif", "a.gif"), ("h265", "a.mp4"), ("av1", "a.mkv")])
def test_other_codecs_decode(tmp_path, codec, name):
    frames = make(tmp_path, name, "--codec", codec, "--frames", "4", "--pan", "8,0")
    assert len(frames) == 4 and frames[0].shape == (H, W, 3)


def test_a_gif_keeps_the_colours_of_its_first_frame(tmp_path, model):
    frames = make(tmp_path, "a.gif", "--codec", "gif", "--frames", "3", "--pan", "8,0")
    want = model.render(W, H, x0=0, array=True).astype(int)
    assert np.abs(frames[0].astype(int) - want).mean() < 4  # 256 colours of its own, not a fixed 3-3-2 palette


def test_an_animated_webp_loops(tmp_path):
    from PIL import Image  # FFmpeg decodes no animated WebP; Pillow does

    out = tmp_path / "a.webp"
    assert main([*BASE, "--codec", "webp", "--frames", "4", "--pan", "8,0", "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert (im.format, im.size, im.n_frames, im.info.get("loop")) == ("WEBP", (W, H), 4, 0)


@pytest.mark.parametrize("argv,named", [
    (["--size", "0x48"], "--size"),
    (["--size", "64x-2"], "--size"),
    (["--size", "65x48"], "--size 66x48"),
    (["--pan", "0,0", "--seconds", "2"], "--pan"),
    (["--pan", "0,0", "--frames", "5"], "--pan"),
    (["--codec", "mpeg1"], "--codec"),
    (["--codec", "vp9"], "--out"),  # a .mp4 is not WebM
    (["--out", "x.avi"], "--out"),
    (["--wrap", "--period", "128", "--pan", "24,0"], "--period"),  # 24 does not divide 128
    (["--wrap", "--period", "128", "--pan", "16,0", "--frames", "5"], "--frames 8"),
    (["--wrap", "--pan", "16,0"], "--period"),
    (["--period", "128"], "--wrap"),
    (["--wrap", "--period", "128", "--pan", "16,2"], "--pan"),
    (["--frames", "0"], "--frames"),
    (["--fps", "0"], "--fps"),
    (["--path", "0,0"], "--path"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_input_is_refused_naming_the_option(tmp_path, capsys, monkeypatch, argv, named):
    monkeypatch.chdir(tmp_path)
    defaults = {"--size": f"{W}x{H}", "--out": "v.mp4"}
    full = list(argv) + [x for k, v in defaults.items() if k not in argv for x in (k, v)]
    with pytest.raises(SystemExit) as done:
        main(["--device", "cpu", "--quiet", *full])
    assert done.value.code == 2
    assert named in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_loop_that_cannot_close_says_which_frames_would(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([*BASE, "--wrap", "--period", "128", "--pan", "16,0", "--seconds", "1", "--out", str(tmp_path / "l.mp4")])
    err = capsys.readouterr().err
    assert "closes after 8 frames" in err and "--frames 8" in err


def test_a_period_not_a_multiple_of_the_upscale_is_refused(tmp_path, capsys):
    assert main([*BASE, "--wrap", "--period", "100", "--pan", "4,0", "--out", str(tmp_path / "l.mkv"),
                 "--codec", "ffv1"]) == 1
    assert "--period" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


def test_a_codec_missing_from_pyav_is_refused(tmp_path, capsys, monkeypatch):
    real = av.codec.Codec

    def codec(name, mode="r"):
        if name == "libx265":
            raise av.codec.codec.UnknownCodecError(name) if hasattr(av.codec.codec, "UnknownCodecError") \
                else ValueError(name)
        return real(name, mode)

    monkeypatch.setattr(av.codec, "Codec", codec)
    with pytest.raises(SystemExit) as done:
        main([*BASE, "--codec", "h265", "--out", str(tmp_path / "x.mp4")])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "--codec h265" in err and "libx265" in err and list(tmp_path.iterdir()) == []


def test_an_existing_output_is_refused(tmp_path, capsys):
    out = tmp_path / "v.mp4"
    out.write_bytes(b"keep")
    assert main([*BASE, "--frames", "2", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "--out" in err and "already exists" in err and out.read_bytes() == b"keep"


def test_a_failing_encode_leaves_no_file(tmp_path, capsys, monkeypatch):
    calls = []
    real = video._to_frame

    def failing(av_, image, palette=None):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("disk full (test)")
        return real(av_, image, palette)

    monkeypatch.setattr(video, "_to_frame", failing)
    out = tmp_path / "v.mkv"
    assert main([*BASE, "--frames", "8", "--codec", "ffv1", "--out", str(out)]) == 1
    assert "disk full" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_interrupt_leaves_no_file(tmp_path, capsys, monkeypatch):
    real = video.TileBand.frame
    calls = []

    def interrupted(self, *a, **kw):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    monkeypatch.setattr(video.TileBand, "frame", interrupted)
    out = tmp_path / "v.mp4"
    assert main([*BASE, "--frames", "8", "--out", str(out)]) == 130
    assert "no video was written" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


def test_memory_holds_only_the_tiles_of_the_current_frame():
    rendered = []

    def tile(x, y, w, h):
        rendered.append((x, y))
        return np.zeros((h, w, 3), np.uint8)

    band = video.TileBand(tile, (32, 48, 0, -24))
    for k in range(40):
        band.frame(4 * k, -24, W, H)
        assert len(band.tiles) <= W // 32 + 1
    assert len(rendered) == len(set(rendered)) == band.rendered  # each tile once
    assert band.new_pixels == band.rendered * 32 * 48


def test_help_does_not_load_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom igan.engine.cli.video import main\n"
            "for flag in ('--help', '--version'):\n"
            "    try:\n        main([flag])\n    except SystemExit as e:\n        assert e.code == 0\n"
            "print('HEAVY', [n for n in ('torch', 'numpy', 'av') if n in sys.modules], file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "HEAVY []" in done.stderr, done.stderr


def test_a_loop_renders_each_tile_of_its_period_once():
    rendered = []

    def tile(x, y, w, h):
        rendered.append((x, y, w, h))
        return np.zeros((h, w, 3), np.uint8)

    path = video.linear_path((W, H), (-16, -24), (16, 0), 24, period=384)
    band = video.TileBand(tile, path.grid(), path.period)
    assert path.grid()[0] == 384  # the largest divisor of the period up to GRID (512)
    for k in range(path.frames):
        band.frame(*path.position(k), W, H)
    assert sorted(rendered) == [(-16, -24, 384, 48)]  # the period, once


def test_the_recorded_command_renders_the_same_frames(tmp_path):
    import shlex

    first = tmp_path / "a.mkv"
    assert main([*BASE, "--codec", "ffv1", "--frames", "4", "--seed", "6", "--pan=-3,2", "--out", str(first)]) == 0
    command = shlex.split(video.read_recipe(first)["command"])
    assert command[0] == "igan-video"
    again = tmp_path / "b.mkv"
    assert main([*command[1:], "--device", "cpu", "--quiet", "--out", str(again)]) == 0
    a, b = decode(first), decode(again)
    assert len(a) == 4 and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_the_next_tiles_render_while_frames_are_cut():
    from concurrent.futures import ThreadPoolExecutor

    rendered = []

    def tile(x, y, w, h):
        rendered.append((x, y))
        return np.full((h, w, 3), (x // 32) % 251, np.uint8)

    path = video.linear_path((W, H), (0, -24), (4, 0), 40)
    assert path.lookahead() == 128  # a 512 px tile at 4 px per frame
    with ThreadPoolExecutor(1) as pool:
        band = video.TileBand(tile, (32, 48, 0, -24), None, pool)
        for k in range(40):
            frame = band.frame(4 * k, -24, W, H, ahead=(4 * min(k + 8, 39), -24))
            assert frame[0, 0, 0] == ((4 * k) // 32) % 251
            assert len(band.tiles) <= 2 * (W // 32 + 1)
            if k == 0:
                pool.submit(lambda: None).result()  # the worker has rendered what frame 0 asked for
                assert (64, -24) in rendered  # frame 8's tile, before the camera needs it
    assert len(rendered) == len(set(rendered)) == band.rendered


def test_ffv1_takes_odd_sizes_and_seconds_count_frames(tmp_path, model):
    out = tmp_path / "odd.mkv"
    assert main(["--size", "63x47", "--device", "cpu", "--quiet", "--codec", "ffv1", "--seconds", "0.2", "--fps",
                 "15", "--pan=2,1", "--out", str(out)]) == 0
    frames = decode(out)
    assert len(frames) == 3  # 0.2 s at 15 fps
    for k, frame in enumerate(frames):
        want = model.render(63, 47, x0=2 * k, y0=-23 + k, array=True)  # y from -(47 // 2)
        assert np.array_equal(frame, want), f"frame {k}"


def test_from_renders_a_video_again_with_overrides(tmp_path):
    first = tmp_path / "a.mkv"
    assert main([*BASE, "--codec", "ffv1", "--frames", "4", "--seed", "6", "--pan=-3,2", "--out", str(first)]) == 0
    again = tmp_path / "b.mkv"
    assert main(["--from", str(first), "--device", "cpu", "--quiet", "--out", str(again)]) == 0
    a, b = decode(first), decode(again)
    assert len(b) == 4 and all(np.array_equal(x, y) for x, y in zip(a, b))
    short = tmp_path / "c.mkv"
    assert main(["--from", str(first), "--frames", "2", "--device", "cpu", "--quiet", "--out", str(short)]) == 0
    c = decode(short)
    assert len(c) == 2 and all(np.array_equal(x, y) for x, y in zip(a, c))
    lossy = tmp_path / "d.mp4"
    assert main(["--from", str(first), "--codec", "h264", "--device", "cpu", "--quiet", "--out", str(lossy)]) == 0
    assert len(decode(lossy)) == 4


def _crafted(path, recipe: dict) -> None:
    """A one-frame 64x48 FFV1 video at `path` whose container carries `recipe` as igan's metadata."""
    with av.open(str(path), "w") as container:
        container.metadata["igan"] = json.dumps(recipe)
        stream = container.add_stream("ffv1", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "bgr0"
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def _recorded(tmp_path, *argv) -> dict:
    """The recipe of a 2-frame FFV1 video made with `argv`."""
    first = tmp_path / "first.mkv"
    assert main([*BASE, "--codec", "ffv1", "--frames", "2", *argv, "--out", str(first)]) == 0
    return video.read_recipe(first)


def test_from_takes_only_what_decides_the_frames(tmp_path):
    recipe = _recorded(tmp_path, "--seed", "5")
    crafted = tmp_path / "crafted.mkv"  # where it would write, what it would start and read: never obeyed
    _crafted(crafted, recipe | {
        "command": "igan-video --threads 99 --device cuda:7 --out /nowhere/x.mkv --checkpoint /etc/passwd",
        "request": recipe["request"] | {"out": "/nowhere/x.mkv", "device": "cuda:7", "threads": 99, "gpus": 8}})
    out = tmp_path / "x.mkv"
    assert main(["--from", str(crafted), "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    assert [np.array_equal(a, b) for a, b in zip(decode(out), decode(tmp_path / "first.mkv"))] == [True, True]
    assert not __import__("os").path.exists("/nowhere")


@pytest.mark.parametrize("change,named", [
    ({"video": {"frames": 10**9}}, "video.frames"),
    ({"video": {"codec": "sh -c"}}, "codec"),
    ({"video": {"size": [64, -48]}}, "video.size"),
    ({"video": {"path": [[0, 0]]}}, "video.path"),
    ({"video": {"exec": "rm -rf /"}}, "'exec'"),
    ({"request": {"seed": -1}}, "seed"),
    ({"request": {"window": {"x0": 0, "y0": 0, "width": 64, "height": 48}}}, "window"),
    ({"request": {"model": "/etc/passwd"}}, "model"),
], ids=["frames", "codec", "size", "path", "unknown", "seed", "window", "model"])
def test_from_refuses_a_recipe_out_of_its_schema(tmp_path, capsys, change, named):
    recipe = _recorded(tmp_path)
    crafted = tmp_path / "crafted.mkv"
    _crafted(crafted, {k: recipe[k] | change.get(k, {}) if isinstance(recipe[k], dict) else recipe[k] for k in recipe})
    out = tmp_path / "x.mkv"
    with pytest.raises(SystemExit) as done:
        main(["--from", str(crafted), "--device", "cpu", "--quiet", "--out", str(out)])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "--from" in err and named in err, err
    assert not out.exists()


def test_from_asks_before_a_recipe_s_huge_video(tmp_path, capsys):
    recipe = _recorded(tmp_path)
    crafted = tmp_path / "crafted.mkv"
    _crafted(crafted, recipe | {"video": recipe["video"] | {"frames": 10**8}})
    out = tmp_path / "x.mkv"
    with pytest.raises(SystemExit) as done:
        main(["--from", str(crafted), "--device", "cpu", "--quiet", "--out", str(out)])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "--frames" in err and "100000000 frames" in err and not out.exists()
    assert main(["--from", str(crafted), "--frames", "2", "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    assert len(decode(out)) == 2


def test_from_never_reads_a_style_map_the_recipe_names(tmp_path, capsys):
    recipe = _recorded(tmp_path, "--styles", "1,2")
    field = recipe["request"]["field"]
    crafted = tmp_path / "crafted.mkv"
    _crafted(crafted, recipe | {"request": recipe["request"] | {"field": {
        "styles": field["styles"], "blur": field["blur"], "label_map": {"sha256": "a" * 64, "path": "/dev/zero"}}}})
    out = tmp_path / "x.mkv"
    with pytest.raises(SystemExit) as done:
        main(["--from", str(crafted), "--device", "cpu", "--quiet", "--out", str(out)])
    assert done.value.code == 2 and "give --style-map" in capsys.readouterr().err and not out.exists()


def test_from_keeps_the_styles_where_they_were_on_the_canvas(tmp_path):
    first = tmp_path / "a.mkv"
    assert main([*BASE, "--codec", "ffv1", "--frames", "6", "--pan", "6,0", "--styles", "3,17",
                 "--out", str(first)]) == 0
    short = tmp_path / "b.mkv"  # a shorter path: the styles' centres stay on the canvas, not in the frame
    assert main(["--from", str(first), "--frames", "3", "--device", "cpu", "--quiet", "--out", str(short)]) == 0
    a, b = decode(first), decode(short)
    assert len(b) == 3 and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_from_a_file_that_is_not_a_video_is_refused(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(SystemExit) as done:
        main(["--from", str(bad), "--out", str(tmp_path / "x.mp4")])
    assert done.value.code == 2 and "--from" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_from_checks_the_model_the_video_was_made_with(tmp_path, capsys):
    first = tmp_path / "a.mkv"
    assert main([*BASE, "--codec", "ffv1", "--frames", "2", "--out", str(first)]) == 0
    recipe = video.read_recipe(first)
    forged = tmp_path / "forged.mkv"
    _crafted(forged, recipe | {"request": recipe["request"] | {"model": "0" * 64}})
    out = tmp_path / "x.mkv"
    with pytest.raises(SystemExit) as done:  # a model igan does not ship: the user names the file
        main(["--from", str(forged), "--device", "cpu", "--quiet", "--out", str(out)])
    assert done.value.code == 2 and "--checkpoint" in capsys.readouterr().err and not out.exists()
    argv = ["--from", str(forged), "--checkpoint", "builtin:landscapes-v1", "--device", "cpu", "--quiet"]
    assert main([*argv, "--out", str(out)]) == 1  # not the model it records
    assert "model" in capsys.readouterr().err and not out.exists()


# ---- resuming: segments in the work directory ------------------------------------------------------
# 70 frames at 3 fps: segments of 30 frames (10 s), the last one of 10.
LONG = ["--size", "128x64", "--fps", "3", "--frames", "70", "--pan", "8,0", "--device", "cpu", "--quiet"]


def run_video(*argv, kill: str | None = None):
    import os
    import subprocess
    import sys

    env = dict(os.environ, IGAN_FAILPOINT=f"kill:{kill}") if kill else {
        k: v for k, v in os.environ.items() if k != "IGAN_FAILPOINT"}
    return subprocess.run([sys.executable, "-m", "igan.engine.cli.video", *argv], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("codec,suffix,stage,segments", [
    ("h264", ".mp4", "video-frame:45", 1),  # mid-segment (the queue holds 8 frames: the first segment is whole): the first segment kept, the second rendered again
    ("h264", ".mp4", "video-before-output", 3),  # after the join, before the rename
    pytest.param("ffv1", ".mkv", "video-frame:5", 0, marks=pytest.mark.slow),  # before any segment is whole
    pytest.param("vp9", ".webm", "video-frame:69", 2, marks=pytest.mark.slow),
], ids=["h264-mid-segment", "h264-joined", "ffv1-first-segment", "vp9-last-frame"])
def test_a_killed_video_resumes_into_the_file_an_uninterrupted_run_writes(tmp_path, codec, suffix, stage, segments):
    whole, out = tmp_path / f"whole{suffix}", tmp_path / f"v{suffix}"
    argv = [*LONG, "--codec", codec]
    assert run_video(*argv, "--out", str(whole)).returncode == 0
    killed = run_video(*argv, "--out", str(out), kill=stage)
    assert killed.returncode == -9, killed.stderr
    work = tmp_path / f".v{suffix}.igan-work"
    assert not out.exists() and len(list((work / "segments").glob("0*.mp4"))) == segments
    again = run_video(*argv, "--out", str(out))  # not without --resume: that would discard work
    assert again.returncode != 0 and "--resume" in again.stderr and "--restart" in again.stderr
    resumed = run_video(*argv, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert out.read_bytes() == whole.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([whole.name, out.name])
    assert len(decode(out)) == 70


def test_a_video_killed_after_its_rename_is_finished(tmp_path):
    out = tmp_path / "v.mp4"
    argv = [*LONG, "--frames", "20", "--out", str(out)]
    assert run_video(*argv, kill="video-after-output").returncode == -9
    first = out.read_bytes()
    refused = run_video(*argv)
    assert refused.returncode != 0 and "--resume" in refused.stderr and out.read_bytes() == first
    done = run_video(*argv, "--resume")
    assert done.returncode == 0 and "nothing to do" in done.stdout, done.stderr
    assert out.read_bytes() == first and [p.name for p in tmp_path.iterdir()] == ["v.mp4"]


def test_resume_refuses_another_recipe_and_restart_discards(tmp_path):
    out = tmp_path / "v.mp4"
    argv = [*LONG, "--out", str(out)]
    assert run_video(*argv, kill="video-frame:40").returncode == -9
    other = run_video(*argv, "--crf", "30", "--resume")
    assert other.returncode != 0 and "different render" in other.stderr and "crf" in other.stderr, other.stderr
    assert not out.exists()
    assert run_video(*argv, "--restart", "--crf", "30").returncode == 0
    assert video.read_recipe(out)["video"]["crf"] == 30 and len(decode(out)) == 70


def test_a_second_run_on_the_same_output_is_refused_while_the_first_runs(tmp_path):
    from igan.engine.lease import Lease
    from igan.engine.store import work_dir_for

    out = tmp_path / "v.mp4"
    argv = [*LONG, "--out", str(out)]
    assert run_video(*argv, kill="video-frame:40").returncode == -9
    lease = Lease.take(work_dir_for(out))  # this test process stands for a live first run
    try:
        second = run_video(*argv, "--resume")
    finally:
        lease.release()
    assert second.returncode != 0 and f"PID {__import__('os').getpid()}" in second.stderr, second.stderr
    assert not out.exists()


@pytest.mark.parametrize("argv", [
    ["--wrap", "--period", "64", "--pan", "16,0", "--styles", "4,9"],
    ["--path", "0,-24:40,-24:40,10", "--pan", "7,0", "--frames", "9"],
], ids=["loop-with-styles", "path-with-turns"])
def test_from_renders_loops_and_paths_again(tmp_path, argv):
    first = tmp_path / "a.mkv"
    assert main([*BASE, "--codec", "ffv1", *argv, "--out", str(first)]) == 0
    again = tmp_path / "b.mkv"
    assert main(["--from", str(first), "--device", "cpu", "--quiet", "--out", str(again)]) == 0
    a, b = decode(first), decode(again)
    assert len(a) == len(b) > 1 and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.slow
def test_worker_processes_render_the_same_video(tmp_path):
    argv = ["--size", "96x64", "--frames", "40", "--pan=9,-2", "--codec", "ffv1", "--device", "cpu", "--quiet"]
    one, two = tmp_path / "one.mkv", tmp_path / "two.mkv"
    assert run_video(*argv, "--out", str(one)).returncode == 0
    done = run_video(*argv, "--workers", "2", "--out", str(two))
    assert done.returncode == 0, done.stderr
    assert one.read_bytes() == two.read_bytes()


def test_gpus_beyond_the_machine_are_refused(tmp_path, capsys):
    import torch

    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    out = tmp_path / "v.mp4"
    assert main([*BASE, "--frames", "2", "--gpus", str(have + 1), "--out", str(out)]) != 0
    assert f"--gpus {have + 1}" in capsys.readouterr().err and not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []
