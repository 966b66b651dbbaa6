"""One dataclass describes every generator igan runs, with named presets.

The official presets reproduce `configs/model/*.yaml` of the official InfinityGAN code
(see shared/docs/official-generator.md, section 2). The small presets keep the official
geometry rules but use few channels, for tests, CPU benchmarks and the embedded model.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from .errors import CheckpointError, RequestError

# Official TS channel table, keyed by the stage's nominal resolution (StyleGAN2 style).
_BASE_CHANNELS = {8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of an InfinityGAN generator (inference-relevant fields only)."""

    name: str
    patch_size: int = 101  # training patch: output of one ts_input_size window
    ts_input_size: int = 11  # TS input size of one training patch
    global_latent_dim: int = 512  # z_g size; also the style (w) size
    local_latent_dim: int = 256  # z_l channels; also the SS width and TS input channels
    n_mlp: int = 8  # mapping network depth
    lr_mlp: float = 0.01  # equalized-lr multiplier of the mapping network
    channel_multiplier: int = 2
    channels: tuple[int, ...] | None = None  # TS out channels per stage; None = official table
    use_ss: bool = True  # structure synthesizer present
    ss_n_layers: int = 4
    ss_unfold_radius: int = 3  # SS convs are (2r+1)x(2r+1), valid
    coord_num_dir: int = 3  # coordinate channels: tanh(vertical), cos, sin (horizontal)
    coord_vert_sample_size: int = 10  # V in the paper
    coord_hori_occupy_ratio: float = 0.25
    coord_vert_cut_pt: float = 3.0

    def __post_init__(self):
        if self.ts_input_size < 5:
            raise CheckpointError(f"ts_input_size must be >= 5 for the padding-free TS, got {self.ts_input_size}")
        n_up = (self.patch_size - 5) / (self.ts_input_size - 5)
        if n_up < 2 or n_up != int(n_up) or int(n_up) & (int(n_up) - 1):
            raise CheckpointError(
                f"patch_size {self.patch_size} is not 2^U*(ts_input_size-5)+5 for ts_input_size "
                f"{self.ts_input_size}: the padding-free TS cannot produce it")
        if self.channels is not None and len(self.channels) != self.num_stages:
            raise CheckpointError(f"channels {self.channels} must list {self.num_stages} stages")
        if self.use_ss and self.coord_num_dir not in (3,):
            raise CheckpointError(f"coord_num_dir {self.coord_num_dir} is not supported (only 3)")
        if not self.use_ss and self.coord_num_dir != 0:
            raise CheckpointError("a generator without structure synthesizer has no coordinates: set coord_num_dir=0")

    # ---- derived architecture -------------------------------------------------------
    @property
    def num_stages(self) -> int:
        """U: number of (upsample conv, 3x3 conv) stages of the TS."""
        return int((self.patch_size - 5) // (self.ts_input_size - 5)).bit_length() - 1

    @property
    def upscale(self) -> int:
        """Pixels per TS-input (and z_l) cell: 2^U."""
        return 1 << self.num_stages

    @property
    def num_convs(self) -> int:
        return 2 * self.num_stages

    @property
    def n_latent(self) -> int:
        """Style slots: one per TS conv plus the last ToRGB's extra slot."""
        return self.num_convs + 1

    @property
    def stage_channels(self) -> tuple[int, ...]:
        if self.channels is not None:
            return tuple(self.channels)
        out = []
        for k in range(1, self.num_stages + 1):
            res = 4 << k
            base = _BASE_CHANNELS[res]
            out.append(base * self.channel_multiplier if res >= 64 else base)
        return tuple(out)

    @property
    def ss_halo(self) -> int:
        """z_l cells the SS consumes on each side."""
        return self.ss_n_layers * self.ss_unfold_radius if self.use_ss else 0

    @property
    def ss_kernel(self) -> int:
        return 2 * self.ss_unfold_radius + 1

    def torgb_slot(self, k: int) -> int:
        """Style slot of ToRGB k (official: 3, 5, 7, ..., and num_convs for the last)."""
        return min(2 * k + 3, self.num_convs)

    # ---- (de)serialisation -----------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "GeneratorConfig":
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"unknown generator config fields {unknown}")
        if data.get("channels") is not None:
            data["channels"] = tuple(data["channels"])
        return cls(**data)

    def replace(self, **changes) -> "GeneratorConfig":
        return dataclasses.replace(self, **changes)

    def architecture(self) -> dict:
        """Everything that changes the weights' shapes or the math (the name excluded)."""
        d = dataclasses.asdict(self)
        d.pop("name")
        d["channels"] = self.stage_channels
        d.pop("channel_multiplier")
        return d


_INFINITYGAN = GeneratorConfig(name="InfinityGAN")

PRESETS: dict[str, GeneratorConfig] = {
    # The paper's main model and the same architecture trained on other data.
    "InfinityGAN": _INFINITYGAN,
    "InfinityGAN-IOF": _INFINITYGAN.replace(name="InfinityGAN-IOF"),
    "InfinityGAN-IOP": _INFINITYGAN.replace(name="InfinityGAN-IOP"),
    # Higher-resolution patches: the config (not the README table) fixes patch 389 / 773.
    "InfinityGAN-HR": _INFINITYGAN.replace(name="InfinityGAN-HR", patch_size=389),
    "InfinityGAN-UR": _INFINITYGAN.replace(name="InfinityGAN-UR", patch_size=773),
    # Padding-free StyleGAN2 texture synthesizer fed z_l directly: no SS, no coordinates.
    "StyleGAN2_NCI_FCG": _INFINITYGAN.replace(name="StyleGAN2_NCI_FCG", use_ss=False, coord_num_dir=0),
    # Small models with the official geometry (16 px per latent cell, 101 px patches).
    "small": GeneratorConfig(
        name="small", global_latent_dim=128, local_latent_dim=32, n_mlp=4, channels=(64, 64, 64, 32)),
    # Three TS stages (8 px per latent cell, 53-px patches): the embedded default model,
    # small enough to train on a CPU in an hour (trainer/, README "Training").
    "mini": GeneratorConfig(
        name="mini", patch_size=53, global_latent_dim=128, local_latent_dim=32, n_mlp=4, channels=(64, 64, 32)),
    "tiny": GeneratorConfig(
        name="tiny", patch_size=29, global_latent_dim=16, local_latent_dim=8, n_mlp=2,
        channels=(16, 8), ss_n_layers=2, ss_unfold_radius=1),
}


def from_name(name: str) -> GeneratorConfig:
    """The preset called `name` (case-insensitive)."""
    for key, cfg in PRESETS.items():
        if key.lower() == name.lower():
            return cfg
    raise RequestError(f"unknown model config {name!r}; presets: {', '.join(PRESETS)}")
