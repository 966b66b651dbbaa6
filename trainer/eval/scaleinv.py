"""ScaleInv FID: the official protocol (official-training-apps.md, section 2), on igan's engine.

For scale N the fakes are generated at N times the training field of view and brought to the
real images' resolution in two bilinear stages without antialiasing:
  real_res R (128), full_size F (197), fov = F / R, eval_gen_res = R N,
  raw = ceil(R N fov); generate the one-shot size: the smallest 2^U (n - 5) + 5 >= raw
  (197, 405, 789, 1589, 3157 for N = 1, 2, 4, 8, 16), centred on the horizon with the
  official test-time coordinates;
  1. F.interpolate(bilinear, align_corners=True, scale_factor=1/fov): floor(size / fov) px;
  2. centre crop to R N (offset (size - R N) // 2), unless already <= R N;
  3. F.interpolate(bilinear, align_corners=True, size=R)  (or PIL BILINEAR: --use-pil-resize);
  4. (x + 1) / 2 clamped to [0, 1] -> feature extractor.
Reals: the first 50,000 images of a folder in sorted order, each centre-cropped to a square and
LANCZOS-resized to R (uint8), then / 255.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from igan.engine import planner
from igan.engine.config import GeneratorConfig
from igan.engine.errors import PathError, RequestError
from igan.engine.latent import LatentField
from igan.engine.renderer import Renderer

from .fid import FeatureStats

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
OFFICIAL_SAMPLES = 50_000

Extractor = Callable[[torch.Tensor], torch.Tensor]  # [B, 3, H, W] in [0, 1] -> [B, D]


def default_full_size(cfg: GeneratorConfig) -> int:
    """The training image size of the official configs: 2 * patch - 5 (101 -> 197, 389 -> 773).
    InfinityGAN-UR (773 patches) was trained on 1024 images: pass full_size explicitly."""
    return 2 * cfg.patch_size - 5


@dataclass(frozen=True)
class Protocol:
    scale: int
    real_res: int = 128
    full_size: int = 197
    upscale: int = 16  # pixels per TS-input cell of the generator (2^U)

    def __post_init__(self):
        for name in ("scale", "real_res", "full_size", "upscale"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise RequestError(f"{name} must be a positive integer, got {v!r}")

    @classmethod
    def for_config(cls, cfg: GeneratorConfig, scale: int, real_res: int = 128, full_size: int | None = None):
        return cls(scale, real_res, full_size or default_full_size(cfg), cfg.upscale)

    @property
    def fov_scale(self) -> float:
        return self.full_size / self.real_res

    @property
    def eval_gen_res(self) -> int:
        return self.real_res * self.scale

    @property
    def raw_gen_res(self) -> int:
        return int(np.ceil(self.eval_gen_res * self.fov_scale))

    @property
    def generated_size(self) -> int:
        """The official one-shot output: the smallest 2^U (n - 5) + 5 >= raw_gen_res, n >= 5."""
        n = 5 + max(0, -(-(self.raw_gen_res - 5) // self.upscale))
        return self.upscale * (n - 5) + 5

    @property
    def scaled_size(self) -> int:
        """Size after step 1, as torch computes it: floor(size * (1 / fov))."""
        return math.floor(self.generated_size * (1 / self.fov_scale))


def postprocess(images: torch.Tensor, proto: Protocol, use_pil_resize: bool = False) -> torch.Tensor:
    """Steps 1-3 on generator output [B, 3, S, S] in [-1, 1] -> [B, 3, R, R] in [-1, 1]-ish."""
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise RequestError(f"expected square images [B, 3, S, S], got {tuple(images.shape)}")
    x = F.interpolate(images, scale_factor=1 / proto.fov_scale, mode="bilinear", align_corners=True)
    size, crop = x.shape[-1], proto.eval_gen_res
    if size > crop:
        o = (size - crop) // 2
        x = x[..., o:o + crop, o:o + crop]
    if not use_pil_resize:
        return F.interpolate(x, size=(proto.real_res, proto.real_res), mode="bilinear", align_corners=True)
    # As torchvision's to_pil_image: [0, 1] * 255 truncated to uint8 (clamped first, so that
    # out-of-range values saturate instead of wrapping), PIL BILINEAR, back to [-1, 1].
    u8 = ((x + 1) / 2).clamp(0, 1).mul(255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = [np.asarray(Image.fromarray(im).resize((proto.real_res, proto.real_res), Image.BILINEAR))
           for im in u8]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div(255).mul(2).sub(1).to(images.device)


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped (what the official FID feeds its Inception)."""
    return ((images + 1) / 2).clamp(0, 1)


# ---- reals ---------------------------------------------------------------------------------------
def list_images(folder: str | Path, limit: int | None = None) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise PathError(f"real image folder {str(folder)!r} does not exist or is not a directory")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise PathError(f"real image folder {str(folder)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files[:limit] if limit else files


def load_real(path: Path, real_res: int) -> np.ndarray:
    """uint8 [R, R, 3]: RGB, centre square crop (torchvision's rounding), LANCZOS to R."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except (OSError, Image.DecompressionBombError) as e:
        raise PathError(f"cannot read real image {str(path)!r}: {e}") from e
    if im.size != (real_res, real_res):
        w, h = im.size
        s = min(w, h)
        left, top = int(round((w - s) / 2.0)), int(round((h - s) / 2.0))
        im = im.crop((left, top, left + s, top + s)).resize((real_res, real_res), Image.LANCZOS)
    return np.asarray(im)


def real_batches(files: list[Path], real_res: int, batch: int) -> Iterator[torch.Tensor]:
    """[b, 3, R, R] float in [0, 1]."""
    for i in range(0, len(files), batch):
        arr = np.stack([load_real(p, real_res) for p in files[i:i + batch]])
        yield torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(255)


# ---- fakes ---------------------------------------------------------------------------------------
def fake_image(renderer: Renderer, proto: Protocol, seed: int, tile: int | None, memory_budget: int | None,
               itemsize: int = 4) -> torch.Tensor:
    """One generated image [1, 3, S, S] float32 in [-1, 1] on the host: the window (0, 0, S, S)
    of canvas `seed` with the horizon on its middle row, i.e. the official test-time grid
    (vertical centre on the middle z_l row, horizontal angle -pi at z_l column 0)."""
    field, plan = fake_request(renderer.runner.config, proto, seed, tile, memory_budget, itemsize)
    return torch.from_numpy(renderer.render_array(field, plan)).permute(2, 0, 1)[None]


def fake_request(cfg: GeneratorConfig, proto: Protocol, seed: int, tile: int | None = None,
                 memory_budget: int | None = None, itemsize: int = 4) -> tuple[LatentField, planner.Plan]:
    """The field and plan of one fake: its z_l window starts at cell (0, 0), where the canvas's
    horizontal angle is -pi, and the horizon row (S - 1) / 2 puts the vertical centre on the
    window's middle z_l row."""
    s = proto.generated_size
    whole = -(-s // planner.TILE_ALIGN) * planner.TILE_ALIGN
    if tile is None and planner.tile_bytes(cfg, whole, 1, itemsize) <= (memory_budget or 2 << 30):
        tile = whole  # one forward per image, as the official one-shot path (no halo recomputation)
    plan = planner.plan(cfg, planner.Window(0, 0, s, s), tile=tile, memory_budget=memory_budget, itemsize=itemsize)
    return LatentField(cfg, seed, horizon=(s - 1) / 2), plan


def _features(extractor: Extractor, images01: torch.Tensor, device) -> torch.Tensor:
    with torch.inference_mode():
        return extractor(images01.to(device)).float().reshape(images01.shape[0], -1)


def real_stats(extractor: Extractor, files: list[Path], proto: Protocol, *, batch: int = 50, device="cpu",
               progress: bool = True) -> FeatureStats:
    """Streaming feature statistics of the real images."""
    stats = None
    with tqdm(total=len(files), unit="img", desc="reals", disable=not progress, file=sys.stderr,
              dynamic_ncols=True) as bar:
        for imgs in real_batches(files, proto.real_res, batch):
            feats = _features(extractor, imgs, device)
            stats = stats or FeatureStats(feats.shape[1])
            stats.update(feats)
            bar.update(imgs.shape[0])
    return stats


def fake_stats(extractor: Extractor, renderer: Renderer, proto: Protocol, n: int, *, seed: int = 0,
               batch: int = 16, device="cpu", tile: int | None = None, memory_budget: int | None = None,
               use_pil_resize: bool = False, itemsize: int = 4, progress: bool = True) -> FeatureStats:
    """Streaming feature statistics of n generated images (canvas seeds seed .. seed + n - 1);
    images are post-processed one by one and fed to the extractor in batches."""
    stats, pending = None, []
    with tqdm(total=n, unit="img", desc=f"fakes {proto.scale}x", disable=not progress, file=sys.stderr,
              dynamic_ncols=True) as bar:
        for i in range(n):
            img = fake_image(renderer, proto, seed + i, tile, memory_budget, itemsize).to(device)  # resize there
            pending.append(to_unit_range(postprocess(img, proto, use_pil_resize)))
            if len(pending) == batch or i == n - 1:
                feats = _features(extractor, torch.cat(pending), device)
                stats = stats or FeatureStats(feats.shape[1])
                stats.update(feats)
                bar.update(len(pending))
                pending = []
    return stats
