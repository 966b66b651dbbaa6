"""Loading and saving generator weights.

Two formats:
- Official InfinityGAN checkpoints (`best_fid.pth.tar`, a torch pickle whose `g_ema` entry
  is the generator state dict). Loaded with `torch.load(weights_only=True)` and an allow
  list for the few numpy objects the official trainer stores (`best_fid` is a numpy
  float64), so loading never runs code from the file. Keys and shapes are checked strictly
  against the official layout of the config (given, or inferred from the shapes).
- Our own: one `.safetensors` file whose metadata holds the JSON config.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from .config import PRESETS, GeneratorConfig, from_name
from .errors import CheckpointError
from .rng import hash_normal
from .model import EqualLinear, Generator

FORMAT_NAME = "igan"
FORMAT_VERSION = "1"


def _numpy_safe_globals() -> list:
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    allowed = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, (np.dtype, "numpy.dtype")]
    allowed += [getattr(np.dtypes, n) for n in ("Float64DType", "Float32DType", "Int64DType", "Int32DType")
                if hasattr(np, "dtypes")]
    return allowed


# ---- official layout ---------------------------------------------------------------------------
def official_shapes(cfg: GeneratorConfig) -> dict[str, tuple[int, ...]]:
    """Every key of the official generator's state dict for `cfg`, with its shape: our
    parameters plus the buffers (and the unused constant input) the official model holds."""
    shapes = {k: tuple(v.shape) for k, v in Generator(cfg).to("meta").state_dict().items()}
    ts = "texture_synthesizer"
    shapes[f"{ts}.const_z.input"] = (1, cfg.local_latent_dim, 4, 4)
    for i in range(0, cfg.num_convs, 2):
        shapes[f"{ts}.convs.{i}.conv.blur.kernel"] = (3, 3)
    for k in range(cfg.num_stages):
        shapes[f"{ts}.to_rgbs.{k}.upsample.kernel"] = (3, 3)
    for i in range(cfg.num_convs):
        side = 2 ** ((i + 5) // 2)
        shapes[f"{ts}.noises.noise_{i}"] = (1, 1, side, side)
    return shapes


def _ignored(key: str) -> bool:
    """Official entries that never influence the output."""
    return (key.endswith((".blur.kernel", ".upsample.kernel")) or ".noises.noise_" in key
            or key.endswith("const_z.input"))


def _describe(keys, limit=8) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_state_dict(state: dict, expected: dict[str, tuple], source: str, config_name: str) -> None:
    """Raise CheckpointError listing missing, unexpected and mis-shaped keys."""
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    misshaped = {k: (tuple(state[k].shape), expected[k]) for k in set(state) & set(expected)
                 if tuple(state[k].shape) != tuple(expected[k])}
    if not (missing or unexpected or misshaped):
        return
    lines = [f"checkpoint {source} does not match model config {config_name!r}:"]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {_describe(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {_describe(unexpected)}")
    if misshaped:
        items = [f"{k} {got} (expected {want})" for k, (got, want) in sorted(misshaped.items())]
        lines.append(f"  mis-shaped keys ({len(items)}): " + "; ".join(items[:8])
                     + (f" (+{len(items) - 8} more)" if len(items) > 8 else ""))
    raise CheckpointError("\n".join(lines))


def infer_config(state: dict) -> GeneratorConfig:
    """The architecture an official state dict was built with, from its shapes; named after
    the first preset with that architecture."""
    ts = "texture_synthesizer"
    if f"{ts}.convs.0.conv.weight" not in state:
        raise CheckpointError("not an InfinityGAN generator state dict (no texture_synthesizer.convs.0)")
    num_convs = len({m.group(1) for k in state if (m := re.match(rf"{ts}\.convs\.(\d+)\.conv\.weight$", k))})
    channels = tuple(int(state[f"{ts}.convs.{i}.conv.weight"].shape[1]) for i in range(1, num_convs, 2))
    local_dim = int(state[f"{ts}.convs.0.conv.weight"].shape[2])
    style_dim = int(state[f"{ts}.convs.0.conv.modulation.weight"].shape[1])
    n_mlp = len({k for k in state if re.match(rf"{ts}\.mapping\.\d+\.weight$", k)})
    ss_layers = sorted({int(m.group(1)) for k in state
                        if (m := re.match(r"structure_synthesizer\.implicit_model\.conv_stack\.(\d+)\.", k))})
    base = dict(patch_size=6 * 2 ** (num_convs // 2) + 5, ts_input_size=11, global_latent_dim=style_dim,
                local_latent_dim=local_dim, n_mlp=n_mlp, channels=channels)
    if ss_layers:
        w = state["structure_synthesizer.implicit_model.conv_stack.0.conv.conv.weight"]
        base.update(use_ss=True, ss_n_layers=len(ss_layers), ss_unfold_radius=(int(w.shape[-1]) - 1) // 2,
                    coord_num_dir=int(w.shape[2]) - local_dim)
    else:
        base.update(use_ss=False, coord_num_dir=0)
    try:
        cfg = GeneratorConfig(name="custom", **base)
    except ValueError as e:
        raise CheckpointError(f"cannot infer the model config from the state dict: {e}") from e
    for preset in PRESETS.values():
        if preset.architecture() == cfg.architecture():
            return preset
    return cfg


_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."  # torch.save's pre-1.6 format: a pickled magic number
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _unreadable_reason(path: Path) -> str:
    """Why torch.load(weights_only=True) refused `path`, from the file itself, in igan's words:
    torch's own text suggests retrying with weights_only=False, which would run code from the
    file, so none of it is passed on (and its OSErrors, e.g. EINVAL for a cut zip, mislead)."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_LEGACY_MAGIC))
    except OSError as e:
        return e.strerror or type(e).__name__
    if not head:
        return "the file is empty"
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as z:
                if not any(n.endswith("/data.pkl") for n in z.namelist()):
                    return "it is a zip archive but not a torch file (no data.pkl)"
        except zipfile.BadZipFile:
            return "it is a truncated or corrupted torch file (a zip archive without its end)"
        return "it is a corrupted torch file, or one holding more than tensors and plain containers"
    if head == _LEGACY_MAGIC:
        return "it is a truncated or corrupted torch file"
    return "it is not a torch checkpoint file, or it is corrupted"


def safe_torch_load(path: str | os.PathLike, what: str, allow=()) -> object:
    """torch.load(path, weights_only=True) with the extra globals `allow`, so loading never runs
    code from the file; every failure becomes a one-line CheckpointError naming `what` and the
    file: not a torch file, truncated, or a disallowed global (named)."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling junk raises many types (UnpicklingError, RuntimeError, EOFError, ...)
        found = _GLOBAL.search(str(e)) if isinstance(e, pickle.UnpicklingError) else None
        if found:
            raise CheckpointError(
                f"refusing to load {what} {str(path)!r}: it references {found.group(1)}, which is outside "
                f"igan's allow list (igan never runs code from a file)") from e
        raise CheckpointError(f"cannot read {what} {str(path)!r}: {_unreadable_reason(path)}") from e


def _load_torch_file(path: Path) -> dict:
    obj = safe_torch_load(path, "checkpoint", _numpy_safe_globals())
    if not isinstance(obj, dict):
        raise CheckpointError(f"{str(path)!r} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def load_official(path: str | os.PathLike, config: str | GeneratorConfig | None = None) -> Generator:
    """Build a Generator from an official checkpoint (its `g_ema`, or a bare state dict)."""
    path = Path(path)
    obj = _load_torch_file(path)
    state = obj.get("g_ema", obj)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{str(path)!r} has no generator state dict under 'g_ema'")
    state = {k: v for k, v in state.items() if "tmp_var" not in k}  # as the official loader does
    cfg = from_name(config) if isinstance(config, str) else config or infer_config(state)
    check_state_dict(state, official_shapes(cfg), repr(str(path)), cfg.name)
    model = Generator(cfg)
    model.load_state_dict({k: v for k, v in state.items() if not _ignored(k)}, strict=True)
    return model.eval()


# ---- our format --------------------------------------------------------------------------------
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once at import: there is no way to read the umask without setting it


def write_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> Path:
    """Tensors + string metadata as one safetensors file, atomically: written under a temporary
    name beside `path`, then renamed, so a failed write never leaves a truncated file there."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(f".{path.name}.igan-tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), meta)
        os.chmod(tmp, 0o666 & ~_UMASK)  # safetensors creates 0600 files; others (ranks, users) read them too
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save(model: Generator, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write weights + config as one safetensors file, atomically."""
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": model.config.to_json()}
    meta.update(metadata or {})
    return write_safetensors(path, {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, meta)


def load_igan(path: str | os.PathLike) -> Generator:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT_NAME:
                raise CheckpointError(f"{str(path)!r} is a safetensors file but not an igan model "
                                      f"(metadata format {meta.get('format')!r})")
            if meta.get("format_version") != FORMAT_VERSION:
                raise CheckpointError(f"{str(path)!r} has igan format version {meta.get('format_version')!r}; "
                                      f"this igan reads version {FORMAT_VERSION}")
            cfg = GeneratorConfig.from_json(meta["config"])
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"cannot read igan model {str(path)!r}: {e}") from e
    model = Generator(cfg)
    check_state_dict(state, {k: tuple(v.shape) for k, v in model.state_dict().items()},
                     repr(str(path)), cfg.name)
    model.load_state_dict(state, strict=True)
    return model.eval()


def init_deterministic(model: Generator, seed: int) -> Generator:
    """Re-initialise every weight matrix with the counter-based normal generator (official
    init: randn, divided by lr_mul for equalized-lr linears), so a random model is the same
    on every machine and torch version."""
    lr_mul = {f"{name}.weight": m.lr_mul for name, m in model.named_modules() if isinstance(m, EqualLinear)}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.dim() >= 2:
                idx = torch.arange(p.numel())
                values = hash_normal(seed, zlib.crc32(name.encode()), idx[:1], idx[:1], idx)
                p.copy_(values.reshape(p.shape) / lr_mul.get(name, 1.0))
    return model
