"""The FID Inception-v3 (TensorFlow's 2015-12-05 graph as ported by pytorch-fid), in plain torch.

torchvision has no CPU build here, so the network is written out: module names, parameter
names and shapes follow the state dict of pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`
(torchvision's Inception3 layout, 1008 classes, no aux head), so that file loads strictly by
key and shape. The FID variant differs from torchvision's Inception in its pooling branches:
the average pools exclude the zero padding (TensorFlow semantics) and the last block
(Mixed_7c) max-pools. Output: the 2048-d average-pool features ("pool3").
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_SHA256_PREFIX = "6726825d"  # the hash prefix in the file's name (torch.hub convention)
FEATURE_DIM = 2048
INPUT_SIZE = 299
NUM_CLASSES = 1008  # the TF graph's classifier; loaded for a strict key match, unused for FID


class BasicConv(nn.Module):
    """conv (no bias) -> batch norm (eps 1e-3, running statistics) -> ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_same(x):
    """3x3 stride-1 average pool that divides by the number of real (not padded) inputs."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class MixedA(nn.Module):
    """35x35 block: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg pool -> 1x1."""

    def __init__(self, c_in: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv(c_in, 64, 1)
        self.branch5x5_1 = BasicConv(c_in, 48, 1)
        self.branch5x5_2 = BasicConv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv(96, 96, 3, padding=1)
        self.branch_pool = BasicConv(c_in, pool_features, 1)

    def forward(self, x):
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_avg_pool_same(x))
        return torch.cat([a, b, c, d], 1)


class ReductionB(nn.Module):
    """35 -> 17 reduction: 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | max pool 3x3/2."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3 = BasicConv(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv(96, 96, 3, stride=2)

    def forward(self, x):
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class MixedC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (1x7 and 7x1)."""

    def __init__(self, c_in: int, c7: int):
        super().__init__()
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = BasicConv(c_in, 192, 1)
        self.branch7x7_1 = BasicConv(c_in, c7, 1)
        self.branch7x7_2 = BasicConv(c7, c7, **row)
        self.branch7x7_3 = BasicConv(c7, 192, **col)
        self.branch7x7dbl_1 = BasicConv(c_in, c7, 1)
        self.branch7x7dbl_2 = BasicConv(c7, c7, **col)
        self.branch7x7dbl_3 = BasicConv(c7, c7, **row)
        self.branch7x7dbl_4 = BasicConv(c7, c7, **col)
        self.branch7x7dbl_5 = BasicConv(c7, 192, **row)
        self.branch_pool = BasicConv(c_in, 192, 1)

    def forward(self, x):
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            c = conv(c)
        d = self.branch_pool(_avg_pool_same(x))
        return torch.cat([a, b, c, d], 1)


class ReductionD(nn.Module):
    """17 -> 8 reduction: 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | max pool 3x3/2."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3_1 = BasicConv(c_in, 192, 1)
        self.branch3x3_2 = BasicConv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv(c_in, 192, 1)
        self.branch7x7x3_2 = BasicConv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv(192, 192, 3, stride=2)

    def forward(self, x):
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class MixedE(nn.Module):
    """8x8 block with split 1x3 / 3x1 heads; `max_pool` selects the FID graph's last-block
    max pool instead of the padding-excluding average pool."""

    def __init__(self, c_in: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv(c_in, 320, 1)
        self.branch3x3_1 = BasicConv(c_in, 384, 1)
        self.branch3x3_2a = BasicConv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv(c_in, 448, 1)
        self.branch3x3dbl_2 = BasicConv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv(c_in, 192, 1)

    def forward(self, x):
        a = self.branch1x1(x)
        b = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(b), self.branch3x3_2b(b)], 1)
        c = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(c), self.branch3x3dbl_3b(c)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool_same(x)
        return torch.cat([a, b, c, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 of the FID metric: [B, 3, 299, 299] in [-1, 1] -> [B, 2048] pool features."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv(80, 192, 3)
        self.Mixed_5b = MixedA(192, 32)
        self.Mixed_5c = MixedA(256, 64)
        self.Mixed_5d = MixedA(288, 64)
        self.Mixed_6a = ReductionB(288)
        self.Mixed_6b = MixedC(768, 128)
        self.Mixed_6c = MixedC(768, 160)
        self.Mixed_6d = MixedC(768, 160)
        self.Mixed_6e = MixedC(768, 192)
        self.Mixed_7a = ReductionD(768)
        self.Mixed_7b = MixedE(1280, max_pool=False)
        self.Mixed_7c = MixedE(2048, max_pool=True)
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)  # in the weights file; not used by forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # [B, 64, 147, 147]
        x = F.max_pool2d(x, 3, stride=2)  # [B, 64, 73, 73]
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # [B, 192, 71, 71]
        x = F.max_pool2d(x, 3, stride=2)  # [B, 192, 35, 35]
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                      self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)  # ... -> [B, 768, 17, 17] -> [B, 2048, 8, 8]
        return x.mean(dim=(2, 3))  # [B, 2048]


class FIDFeatures(nn.Module):
    """What the official FID feeds the network: images [B, 3, H, W] in [0, 1] are resized
    bilinearly to 299 (align_corners=False, no antialias); with `normalize_input` they are then
    mapped to [-1, 1] (standard FID). The official InfinityGAN evaluation does NOT normalise
    (it feeds [0, 1], official-training-apps.md 1.12), so its numbers need normalize_input=False."""

    def __init__(self, net: nn.Module, normalize_input: bool = False):
        super().__init__()
        self.net = net
        self.normalize_input = normalize_input

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        if self.normalize_input:
            x = 2 * x - 1
        return self.net(x)


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every key of the weights file with its shape (num_batches_tracked excluded: files
    written by old torch versions lack it; it never changes the output)."""
    state = FIDInceptionV3().to("meta").state_dict()
    return {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}


def sha256_prefix(path: Path, n: int = 8) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:n]


def load_fid_inception(path: str | os.PathLike) -> FIDInceptionV3:
    """The FID Inception with the weights of `path` (pytorch-fid's pt_inception-2015-12-05-
    6726825d.pth state dict), loaded with weights_only=True and checked strictly by key and
    shape. Raises ValueError naming the file and what does not match."""
    from igan.engine.checkpoint import CheckpointError, check_state_dict, safe_torch_load

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"Inception weights {str(path)!r} not found: pass pytorch-fid's FID Inception state dict "
            f"{WEIGHTS_FILE} (it cannot be downloaded at run time here)")
    state = safe_torch_load(path, "Inception weights")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"Inception weights {str(path)!r} are not a state dict of tensors")
    weights = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    check_state_dict(weights, expected_shapes(), repr(str(path)), f"FID InceptionV3 ({WEIGHTS_FILE})")
    net = FIDInceptionV3()
    net.load_state_dict(weights, strict=False)  # strict check above; num_batches_tracked is optional
    return net.eval().requires_grad_(False)
