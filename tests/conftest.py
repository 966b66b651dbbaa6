"""Shared fixtures. Environment first: Triton kernels must see TRITON_INTERPRET before they
are decorated, and igan must set MKL's reproducible mode before torch's first GEMM."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import igan.engine.determinism  # noqa: E402,F401  (before any torch computation)
import pytest  # noqa: E402
import torch  # noqa: E402

from igan.engine.checkpoint import init_deterministic, official_shapes  # noqa: E402
from igan.engine.config import GeneratorConfig  # noqa: E402
from igan.engine.model import Generator  # noqa: E402


def random_model(cfg: GeneratorConfig, seed: int = 0) -> Generator:
    """Random weights as the official init draws them, then non-zero noise strengths and
    perturbed biases (as the official stitching harness does), so every input matters."""
    model = init_deterministic(Generator(cfg), seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("noise.weight"):
                p.copy_(torch.rand(p.shape, generator=gen) * 0.5 + 0.5)
            elif name.endswith("bias") and "mapping" not in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return model.eval()


def official_state_dict(model: Generator, seed: int = 0) -> dict:
    """`model` as the official code would save it: our tensors plus the official buffers."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    blur = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4
    gen = torch.Generator().manual_seed(seed)
    for key, shape in official_shapes(model.config).items():
        if key not in sd:
            sd[key] = blur.clone() if key.endswith("kernel") else torch.randn(shape, generator=gen)
    return sd


def small_config(rng, **overrides) -> GeneratorConfig:
    """A random small architecture (2 or 3 TS stages, odd channel counts, SS or not)."""
    stages = int(rng.integers(2, 4))
    use_ss = bool(overrides.pop("use_ss", rng.random() < 0.8))
    fields = dict(
        name="random", patch_size=6 * 2**stages + 5, ts_input_size=11,
        global_latent_dim=int(rng.integers(5, 17)), local_latent_dim=int(rng.integers(3, 9)),
        n_mlp=int(rng.integers(1, 3)), channels=tuple(int(c) for c in rng.integers(3, 12, stages)),
        use_ss=use_ss, ss_n_layers=int(rng.integers(1, 3)), ss_unfold_radius=int(rng.integers(1, 3)),
        coord_num_dir=3 if use_ss else 0)
    fields.update(overrides)
    return GeneratorConfig(**fields)


@pytest.fixture
def rng(request):
    import numpy as np
    import zlib

    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


# Module fixtures that take 15-55 s to build on the 2-core machine (an ONNX export, the AOT
# compile of every kernel launch, an inversion, the apps' models and records): every test that
# uses one belongs to the slow tier, whatever its own time.
_SLOW_FIXTURES = {("test_export.py", "exported"), ("test_aot.py", "rows"), ("test_invert.py", "inverted"),
                  ("test_outpaint.py", "setup"), ("test_cli_conventions.py", "onnx_export")}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(item.path.name == module and name in item.fixturenames for module, name in _SLOW_FIXTURES):
            item.add_marker(pytest.mark.slow)


def recorded_hash(name: str, case: str) -> str:
    """The sha256 benchmarks/output_hashes.py recorded for `case` in results file `name` (e.g.
    "output-hashes-0.2.json") on this CPU's bytes family (cpu.bytes_family: the file itself for
    "avx2", `<stem>.<family>.json` for another); skips, naming the CPU, where none was recorded."""
    import json
    from pathlib import Path

    from igan.engine import cpu

    family = cpu.bytes_family()
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / name
    if family != "avx2":
        path = path.with_name(f"{path.stem}.{family}.json")
    if not path.exists():
        pytest.skip(f"no output hashes recorded for this CPU's bytes family {family!r} ({cpu.summary()}): "
                    f"record them with benchmarks/output_hashes.py --write {path.name}")
    return json.loads(path.read_text())[case]
