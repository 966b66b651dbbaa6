"""One declaration of a render: every RenderRequest field is declared once (request.declare)
and every entry point derives from it. For each declared option this finds it in igan-render's
parser, the Python API, the C++ carry list and igan.cpp, the recipe (command(), --from's
schema) and, for the applications, in their parsers, or fails naming where it is missing."""
from __future__ import annotations

import dataclasses
import random
import shlex
from pathlib import Path

import pytest

from igan.engine import request as req
from igan.engine.cli import render as render_cli
from igan.engine.native import capi
from igan.engine.request import PIXEL_FIELDS, RenderRequest, declared

CPP = Path(capi.__file__).parent / "cpp" / "src" / "igan.cpp"


def _dests(parser) -> set[str]:
    return {a.dest for a in parser._actions}


@pytest.mark.parametrize("f", declared(), ids=lambda f: f.name)
def test_every_declared_option_reaches_every_entry_point(f):
    meta = f.metadata
    assert meta["help"], f"{f.name}: declared without help"
    assert f.name in _dests(render_cli.build_parser()), f"{f.name}: missing from igan-render's parser"
    RenderRequest.from_options({f.name: f.default})  # the Python API's keyword check knows it
    if f.name not in capi.UNSUPPORTED:
        assert f.name in capi.CARRIED
        assert f'"{f.name}"' in CPP.read_text(), f"{f.name}: igan.cpp (igan::CommandLine) does not carry it"
    assert (f.name in PIXEL_FIELDS) == meta["pixels"]


def test_internal_fields_are_typed_and_never_on_a_command_line():
    internal = {f.name: f for f in dataclasses.fields(RenderRequest) if f.metadata["group"] == "internal"}
    assert set(internal) == {"expect", "field"}
    assert "object" not in str(internal["field"].type)  # the application canvas has a type
    assert not set(internal) & _dests(render_cli.build_parser())


def _old_command(r: RenderRequest) -> str:
    """command() as igan 0.4 spelled it (the recipes in files already written), for comparison,
    but for the CPU path: 0.4 wrote --bit-exact for the reference path and nothing for its
    default (fast); since 0.5 --cpu-path names any path but the default (exact) at --bit-exact's
    place, and --bit-exact is never written."""
    parts = ["igan-render"]
    for name in ("checkpoint", "model", "config"):
        if getattr(r, name) is not None:
            parts += ["--" + name, str(getattr(r, name))]
    if r.random_weights:
        parts.append("--random-weights")
    parts += ["--width", str(r.width), "--height", str(r.height), "--x0", str(r.x0), "--y0", str(r.top),
              "--seed", str(r.seed)]
    if r.styles is not None:
        parts += ["--styles", ",".join(map(str, r.styles))]
    if r.style_centers is not None:
        parts += ["--style-centers", ":".join(f"{x!r},{y!r}" for x, y in r.style_centers)]
    if r.style_map is not None:
        parts += ["--style-map", r.style_map]
    if r.style_blur is not None:
        parts += ["--style-blur", str(r.style_blur)]
    if r.wrap:
        parts.append("--wrap")
    if r.trunc != 1.0:
        parts += ["--trunc", repr(float(r.trunc))]
    parts += ["--latent-rng", r.latent_rng]
    for name, default in (("quantize", "round"), ("precision", "fp32"), ("backend", "torch")):
        if getattr(r, name) != default:
            parts += ["--" + name, getattr(r, name)]
    if r.cpu_path != "exact":
        parts += ["--cpu-path", r.cpu_path]
    return shlex.join(parts)


def test_the_derived_command_spells_recipes_as_before():
    """command() derives from the declaration; the recipes it writes are byte for byte those of
    0.4 (the bytes of every output embed it) but for the CPU path (_old_command), on random
    requests."""
    rng = random.Random()
    for _ in range(2000):
        n = rng.randint(1, 3)
        cpu_path = rng.choice(["exact", "reference", "fast-0.4"])
        r = RenderRequest(
            checkpoint=rng.choice([None, "best_fid.pth.tar", "a b/c'd.pt", "builtin:landscapes-v1"]),
            config=rng.choice([None, "InfinityGAN", "tiny"]), random_weights=rng.random() < 0.2,
            width=rng.randint(1, 5000), height=rng.randint(1, 5000), x0=rng.randint(-10**6, 10**6),
            y0=rng.choice([None, rng.randint(-10**6, 10**6)]), seed=rng.randrange(2**63),
            styles=rng.choice([None, tuple(rng.randrange(2**40) for _ in range(n))]),
            style_centers=rng.choice([None, tuple((rng.uniform(-1, 2), rng.random() / 3) for _ in range(n))]),
            style_map=rng.choice([None, "map.png"]), style_blur=rng.choice([None, 1, 127, 4096]),
            wrap=rng.random() < 0.3, trunc=rng.choice([1, 1.0, 0.7, rng.uniform(-2, 2)]),
            latent_rng=rng.choice(["philox", "v1"]), quantize=rng.choice(["round", "official"]),
            precision=rng.choice(["fp32", "fp16", "bf16"]), backend=rng.choice(["torch", "triton", "onnx"]),
            cpu_path=cpu_path, bit_exact=cpu_path != "fast-0.4" and rng.random() < 0.3, tile=rng.choice([None, 64]),
            workers=rng.choice([None, 1]),
            out=rng.choice(["a.png", "b.tif"]), metadata=rng.random() < 0.5)
        assert r.command() == _old_command(r)


SAMPLES = {"checkpoint": "c.pt", "model": "export", "config": "tiny", "random_weights": True, "width": 64,
           "height": 32, "x0": 5, "y0": 7, "seed": 3, "styles": (1, 2), "style_centers": ((0.25, 0.5), (0.75, 0.5)),
           "style_map": "m.png", "style_blur": 31, "wrap": True, "trunc": 0.5, "latent_rng": "v1",
           "quantize": "official", "precision": "fp16", "backend": "onnx", "cpu_path": "fast-0.4"}


@pytest.mark.parametrize("f", declared(pixels=True), ids=lambda f: f.name)
def test_the_recipe_names_every_pixel_option(f):
    """A pixel option is in command() when set (the window and the generator always), and the
    recipe's schema (--from) knows it."""
    assert f.name in SAMPLES, f"{f.name}: a pixel option this test has no sample value for"
    assert (req.flag(f) in shlex.split(RenderRequest().command())) == f.metadata["always"]
    assert req.flag(f) in shlex.split(RenderRequest(**{f.name: SAMPLES[f.name]}).command())


def test_the_applications_take_the_declared_render_options():
    """igan-outpaint and igan-inbetween take every declared option but their own canvas's: a
    new option is either on their command lines or listed here with the reason."""
    from igan.engine.cli import apps

    own_canvas = {"out", "width", "height", "x0", "y0", "styles", "style_centers", "style_map", "style_blur", "wrap",
                  "trunc"}  # the application's window and canvas
    not_invertible = {"model", "random_weights"}  # an ONNX export or random weights have no inversion
    taken = set(apps.COMMON + apps.RENDERS)
    assert {f.name for f in declared()} - taken == own_canvas | not_invertible
    for parser in (apps.outpaint_parser(), apps.inbetween_parser()):
        assert taken <= _dests(parser)
    assert set(apps.COMMON) <= _dests(apps.invert_parser())


def test_igan_serve_takes_every_pixel_option_its_page_does_not_set():
    """A tile's and a 'render this view' job's pixels are decided by the page's canvas (PAGE)
    and by the declared options igan-serve takes (RENDER_OPTIONS): together, every pixel
    option (and the device, and --bit-exact: --cpu-path reference as igan 0.2-0.4 spelled it)."""
    from igan.engine import serve
    from igan.engine.cli import serve as serve_cli

    assert set(serve.PAGE) | set(serve.RENDER_OPTIONS) == set(PIXEL_FIELDS) | {"device", "bit_exact"}
    assert set(serve.RENDER_OPTIONS) <= _dests(serve_cli.build_parser())
