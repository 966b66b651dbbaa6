"""Inversion records: the latents that make the generator reproduce an image, and where on
the canvas they sit.

A record is one safetensors file (never a pickle): tensors z_g, z_l (the image's z_l window
with its SS halo), W+ styles, coordinates and one noise map per TS conv, plus JSON metadata
(the image's canvas placement and size, the latent window's origin, the canvas horizon, the
model's config and weight digest, the inversion settings and its final losses).

Canvas convention (see geometry.py): the image's top-left pixel sits at canvas pixel
(x0, y0); its z_l window starts at cell (cell_row, cell_col); noise map i starts at layer-i
grid position step_i * (cell_row, cell_col).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, write_safetensors
from ..config import GeneratorConfig
from ..geometry import layer_steps, ts_sizes
from ..model import Generator

RECORD_FORMAT = "igan-inversion"
RECORD_VERSION = "1"


class RecordError(CheckpointError):
    """A record that cannot be used, with the reason in the message."""


def model_digest(model: Generator) -> str:
    """sha256 of the model's architecture and weights (by content, whatever file they came
    from), so a record can refuse a different model."""
    h = hashlib.sha256(json.dumps(model.config.architecture(), sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


@dataclass
class Placement:
    """Where an image sits on the canvas: its top-left pixel (x0, y0), its size, and the
    first z_l cell of its latent window."""

    x0: int
    y0: int
    width: int
    height: int
    cell_row: int
    cell_col: int

    def shifted(self, dx_cells: int, dy_cells: int, upscale: int) -> "Placement":
        """The same image moved by whole z_l cells (upscale pixels each)."""
        return Placement(self.x0 + dx_cells * upscale, self.y0 + dy_cells * upscale, self.width, self.height,
                         self.cell_row + dy_cells, self.cell_col + dx_cells)


@dataclass
class InversionRecord:
    """Everything needed to render an inverted image again, anywhere on a canvas."""

    config: GeneratorConfig
    model_digest: str
    placement: Placement
    horizon: float
    global_latent: torch.Tensor  # [D]  z_g of the SS
    styles: torch.Tensor  # [n_latent, D]  free W+ of the TS
    local_latent: torch.Tensor  # [C, n_h, n_w]  z_l window with its SS halo
    coords: torch.Tensor | None  # [ncoord, n_h, n_w] (None without SS)
    noises: list[torch.Tensor]  # [h_i, w_i] per TS conv
    fit: torch.Tensor  # [3, H, W]  the generator's output on these latents (float32, [-1, 1]-ish)
    losses: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def __post_init__(self):
        self.check_shapes()

    def check_shapes(self) -> None:
        cfg, p = self.config, self.placement
        n_h, n_w = self.local_latent.shape[-2:]
        want = {"global_latent": (cfg.global_latent_dim,), "styles": (cfg.n_latent, cfg.global_latent_dim),
                "local_latent": (cfg.local_latent_dim, n_h, n_w), "fit": (3, p.height, p.width)}
        if cfg.use_ss:
            want["coords"] = (cfg.coord_num_dir, n_h, n_w)
        for name, shape in want.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise RecordError(f"record tensor {name} has shape {got}, expected {shape}")
        halo = cfg.ss_halo
        sizes = list(zip(ts_sizes(cfg, n_h - 2 * halo), ts_sizes(cfg, n_w - 2 * halo)))
        if len(self.noises) != len(sizes):
            raise RecordError(f"record has {len(self.noises)} noise maps, the model has {len(sizes)} TS convs")
        for i, (n, hw) in enumerate(zip(self.noises, sizes)):
            if tuple(n.shape) != hw:
                raise RecordError(f"record noise {i} has shape {tuple(n.shape)}, expected {hw}")

    def noise_origin(self, layer: int) -> tuple[int, int]:
        step = layer_steps(self.config)[layer]
        return step * self.placement.cell_row, step * self.placement.cell_col

    def check_model(self, model: Generator, digest: str | None = None) -> None:
        """Raise RecordError unless `model` is the one this record was inverted with."""
        digest = digest or model_digest(model)
        if digest != self.model_digest:
            raise RecordError(
                f"the record was made with model {self.model_digest[:16]}… but this model is {digest[:16]}… "
                f"(config {model.config.name!r}); invert the image again with this checkpoint")

    # ---- files --------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (temporary name, then rename)."""
        path = Path(path)
        tensors = {"global_latent": self.global_latent, "styles": self.styles, "local_latent": self.local_latent,
                   "fit": self.fit}
        if self.coords is not None:
            tensors["coords"] = self.coords
        tensors.update({f"noise_{i}": n for i, n in enumerate(self.noises)})
        tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}
        meta = {"format": RECORD_FORMAT, "format_version": RECORD_VERSION, "config": self.config.to_json(),
                "model_digest": self.model_digest, "placement": json.dumps(self.placement.__dict__),
                "horizon": repr(self.horizon), "losses": json.dumps(self.losses),
                "settings": json.dumps(self.settings)}
        return write_safetensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "InversionRecord":
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise RecordError(f"inversion record {str(path)!r} does not exist")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != RECORD_FORMAT:
                    raise RecordError(f"{str(path)!r} is not an igan inversion record "
                                      f"(metadata format {meta.get('format')!r})")
                if meta.get("format_version") != RECORD_VERSION:
                    raise RecordError(f"{str(path)!r} has record version {meta.get('format_version')!r}; "
                                      f"this igan reads version {RECORD_VERSION}")
                t = {k: f.get_tensor(k) for k in f.keys()}
            cfg = GeneratorConfig.from_json(meta["config"])
            return cls(cfg, meta["model_digest"], Placement(**json.loads(meta["placement"])), float(meta["horizon"]),
                       t["global_latent"], t["styles"], t["local_latent"], t.get("coords"),
                       [t[f"noise_{i}"] for i in range(cfg.num_convs)], t["fit"],
                       json.loads(meta["losses"]), json.loads(meta["settings"]))
        except (SafetensorError, OSError, KeyError, TypeError, json.JSONDecodeError) as e:
            raise RecordError(f"cannot read inversion record {str(path)!r}: {e}") from e
