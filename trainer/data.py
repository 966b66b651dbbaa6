"""Real training patches from a folder of images (official-training-apps.md 1.3).

Each image is centre-cropped to a square, LANCZOS-resized to `full_size` once (kept in
memory as uint8), then per sample: a horizontal flip with p = 0.5 and a random
patch_size crop at row xst / column yst, uniform in {0..full-patch} (both ends, unlike the
official randrange). The vertical label is 2 xst / (full - patch) - 1: -1 at the top.

`keep_aspect` (igan-train --keep-aspect; not in the official code) keeps a wide image's
whole width instead: it is resized to `full_size` rows and its width in proportion, and
the column yst is uniform over that width, so panoramas teach horizontal variety rather
than their centre square only.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from igan.engine.errors import PathError, RequestError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def list_images(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise PathError(f"--data {str(folder)!r} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
    if not files:
        raise PathError(f"--data {str(folder)!r} holds no images ({', '.join(sorted(EXTENSIONS))})")
    return files


def load_rows(path: Path, size: int) -> np.ndarray:
    """LANCZOS resize to `size` rows, the width in proportion (at least `size`):
    uint8 [size, W, 3]."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            return np.asarray(im.resize((max(size, round(w * size / h)), size), Image.LANCZOS))
    except OSError as e:
        raise PathError(f"cannot read image {str(path)!r}: {e}") from e


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
        raise PathError(f"cannot read image {str(path)!r}: {e}") from e


class PatchDataset:
    """All images at full_size in memory; `batch()` draws random patches with labels."""

    def __init__(self, folder: str | os.PathLike, full_size: int, patch_size: int, keep_aspect: bool = False):
        if patch_size > full_size:
            raise RequestError(f"patch_size {patch_size} is larger than full_size {full_size}")
        self.paths = list_images(folder)
        self.full_size, self.patch_size, self.keep_aspect = full_size, patch_size, keep_aspect
        if keep_aspect:  # [S, W_k, 3] each
            self.images = [torch.from_numpy(load_rows(p, full_size).copy()) for p in self.paths]
        else:
            self.images = torch.from_numpy(np.stack([load_square(p, full_size) for p in self.paths]))  # [N, S, S, 3]
        self.widths = torch.tensor([img.shape[1] for img in self.images])

    def __len__(self) -> int:
        return len(self.paths)

    def batch(self, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(patches [B, 3, P, P] in [-1, 1], vertical labels [B])."""
        span = self.full_size - self.patch_size
        idx = torch.randint(0, len(self), (size,), generator=gen)
        xst = torch.randint(0, span + 1, (size,), generator=gen)
        if self.keep_aspect:  # uniform over each image's width - patch + 1 columns
            yst = (torch.rand(size, generator=gen, dtype=torch.float64)
                   * (self.widths[idx] - self.patch_size + 1)).long()
        else:
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
