"""Real training patches from a folder of images (official-training-apps.md 1.3).

Each image is centre-cropped to a square, LANCZOS-resized to `full_size` once (kept in
memory as uint8), then per sample: a horizontal flip with p = 0.5 and a random
patch_size crop at row xst / column yst, uniform in {0..full-patch} (both ends, unlike the
official randrange). The vertical label is 2 xst / (full - patch) - 1: -1 at the top.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def list_images(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"--data {str(folder)!r} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
    if not files:
        raise ValueError(f"--data {str(folder)!r} holds no images ({', '.join(sorted(EXTENSIONS))})")
    return files


def load_square(path: Path, size: int) -> np.ndarray:
    """Centre square crop (shorter side) then LANCZOS resize to size x size: uint8 [size, size, 3]."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = min(w, h)
            im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
            return np.asarray(im.resize((size, size), Image.LANCZOS))
    except OSError as e:
        raise ValueError(f"cannot read image {str(path)!r}: {e}") from e


class PatchDataset:
    """All images at full_size in memory; `batch()` draws random patches with labels."""

    def __init__(self, folder: str | os.PathLike, full_size: int, patch_size: int):
        if patch_size > full_size:
            raise ValueError(f"patch_size {patch_size} is larger than full_size {full_size}")
        self.paths = list_images(folder)
        self.full_size, self.patch_size = full_size, patch_size
        self.images = torch.from_numpy(np.stack([load_square(p, full_size) for p in self.paths]))  # [N, S, S, 3]

    def __len__(self) -> int:
        return len(self.paths)

    def batch(self, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(patches [B, 3, P, P] in [-1, 1], vertical labels [B])."""
        span = self.full_size - self.patch_size
        idx = torch.randint(0, len(self), (size,), generator=gen)
        xst = torch.randint(0, span + 1, (size,), generator=gen)
        yst = torch.randint(0, span + 1, (size,), generator=gen)
        flip = torch.rand(size, generator=gen) < 0.5
        p = self.patch_size
        out = []
        for k in range(size):
            img = self.images[idx[k]]
            if flip[k]:
                img = img.flip(1)
            out.append(img[xst[k]:xst[k] + p, yst[k]:yst[k] + p])
        x = torch.stack(out).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        labels = 2.0 * xst.float() / span - 1.0 if span else torch.zeros(size)
        return x.contiguous(), labels
