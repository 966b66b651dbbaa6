"""Float pixels in [-1, 1] to bytes: the quantizers an output can be written with (their
names: provenance.QUANTIZERS). A bottom layer, so the C++ hot paths (engine/native) can take
`to_uint8` as the reference their native twin must match.
"""
from __future__ import annotations

import torch


def to_uint8(rgb: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 with round-half-up: floor((clamp(x) + 1) * 127.5 + 0.5)."""
    return ((rgb.clamp(-1.0, 1.0) + 1.0) * 127.5 + 0.5).floor_().to(torch.uint8)


def to_uint8_official(rgb: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 as the official code's PNGs: the image clamped to [-1, 1],
    mapped to [0, 1] by (x + 1) / 2 and written by matplotlib's imsave, which truncates
    (`(x * 255).astype(np.uint8)`): floor(((clamp(x) + 1) / 2) * 255), each step in the
    tensor's float precision (float32), as the official code computes it. About a third of
    the values are one below to_uint8's, which rounds to the nearest level."""
    return (((rgb.clamp(-1.0, 1.0) + 1.0) / 2.0) * 255.0).floor_().to(torch.uint8)


QUANTIZE = {"round": to_uint8, "official": to_uint8_official}  # names: provenance.QUANTIZERS
