"""InfinityGAN's training losses (official-training-apps.md 1.6), each a small pure function.

Deviations from the official code, on purpose:
- the diversity loss uses the paper's L1 ratio (Eq. 2), not the shipped "angular
  similarity", which rewards similar structures and can NaN (issue #4);
- the path length follows StyleGAN2: the sum over channels and the mean over layers of the
  squared gradient (the official mean over channels makes it 1/sqrt(D) as large).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def d_adversarial(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating logistic D loss: mean softplus(-D(real)) + mean softplus(D(fake))."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_adversarial(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating G loss: mean softplus(-D(fake))."""
    return F.softplus(-fake_logits).mean()


def coord_regression(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """L1 between the predicted and true vertical position, both [B] in [-1, 1]."""
    return (pred - label).abs().mean()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """mean over the batch of |d sum D(real) / d real|^2 (real_images must require grad)."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def diversity(z_local: torch.Tensor, structure: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mode-seeking loss on dual pairs (2k, 2k+1), L1 form of the paper's Eq. 2:
    1 / (x_d / z_d + eps), x_d / z_d = mean L1 distance of the pairs' structure latents /
    of their local latents. z_local [B, C, Hz, Wz], structure [B, C, h, w], B even."""
    if z_local.shape[0] % 2:
        # internal invariant
        raise ValueError(f"the diversity loss needs an even batch of dual pairs, got {z_local.shape[0]}")
    z_d = (z_local[0::2] - z_local[1::2]).abs().flatten(1).mean(1).mean()
    x_d = (structure[0::2] - structure[1::2]).abs().flatten(1).mean(1).mean()
    return 1.0 / (x_d / z_d + eps)


def path_lengths(images: torch.Tensor, styles: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Per-sample path length: sqrt(mean over layers of sum over channels of grad^2) of
    sum(images * noise) w.r.t. the W+ styles [B, L, D] (noise ~ N(0,1)/sqrt(H W))."""
    (grad,) = torch.autograd.grad((images * noise).sum(), styles, create_graph=True)
    return grad.pow(2).sum(2).mean(1).sqrt()


def path_penalty(lengths: torch.Tensor, mean_length: torch.Tensor, decay: float = 0.01
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (length - running mean)^2, the updated running mean a + decay (mean - a))."""
    new_mean = mean_length + decay * (lengths.detach().mean() - mean_length)
    return (lengths - new_mean).pow(2).mean(), new_mean.detach()
