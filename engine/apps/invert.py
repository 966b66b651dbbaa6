"""GAN inversion: find z_g, z_l, W+ styles and noise maps that make the generator reproduce an
image placed on the canvas (official-training-apps.md, section 3.1).

What follows the official inversion:
- optimised: the SS z_g (Adam, lr 0.1 x base), the z_l window with its SS halo (0.1 x base),
  the TS W+ styles, decoupled from z_g (base), and one noise map per TS conv (base);
- W+ starts at the de-gaussianised mean of 10,000 mapped samples, copied to every slot;
- lr(t) = base * cosine ramp-down over the last 25% * linear ramp-up over the first 5%;
- exploration noise with r(t) = max(0, 1 - t/0.75)^2: W+ fed as w + N * mean(sigma) * 0.05 r
  (the prior uses the un-noised w), z_l and z_g perturbed by N * 0.2 r (used by the
  generator and by their priors);
- losses: 0.5 mean squared error (10), the StyleGAN2 noise regulariser (1000), |mean z_g| (10),
  RMS of z_l (10), |std - 1| of z_g and z_l (1, as the IOF246 configs), the Mahalanobis
  prior of the gaussianised W+ (0.01);
- after each step every noise map is renormalised to zero mean and unit std.

What differs: LPIPS-VGG (official weight 10) needs pretrained VGG and LPIPS weights that
cannot be downloaded here. It is replaced by `multiscale_loss`: the mean L1 distance of the
images and of their horizontal and vertical finite differences, on an average-pooled
pyramid down to 8 px (weight 10). DiffAugment (official: on) is optional (`diff_aug`): it
slows convergence of a fit that needs no regularisation against a generator's own images.

Generation goes through the renderer's math: Generator.prepare (styles folded into the
weights, differentiable) then Generator.synthesize on the image's latent window with the
canvas coordinates, so rendering the saved latents reproduces the fit.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..determinism import reproducible_cpu_convs
from ..errors import RequestError, option
from ..geometry import latent_window, ts_sizes
from ..latent import LatentField
from ..model import Generator
from .record import InversionRecord, Placement, model_digest

PERCEPTUAL_REPLACEMENT = ("multiscale L1 of pixels and of their x/y finite differences on an average-pooled "
                          "pyramid down to 8 px (replaces LPIPS-VGG, whose weights are not available offline)")


@dataclass(frozen=True)
class LossWeights:
    pixel: float = 10.0  # official pixel_dist
    perceptual: float = 10.0  # official lpips_dist, here the multiscale loss
    noise_reg: float = 1000.0
    ss_global_prior: float = 10.0
    ss_local_prior: float = 10.0
    ss_global_std: float = 1.0
    ss_local_std: float = 1.0
    ts_prior: float = 0.01


@dataclass(frozen=True)
class InversionSettings:
    steps: int = 3000
    lr: float = 0.1
    ss_lr_mult: float = 0.1
    rampup: float = 0.05
    rampdown: float = 0.25
    perturb_ramp: float = 0.75
    styles_perturb: float = 0.05
    ss_local_perturb: float = 0.2
    ss_global_perturb: float = 0.2
    noise_renorm: bool = True
    diff_aug: bool = False
    stat_samples: int = 10000
    seed: int = 0  # initial latents and exploration noise
    weights: LossWeights = field(default_factory=LossWeights)

    def __post_init__(self):
        if not isinstance(self.steps, int) or self.steps < 1:
            raise RequestError(f"{option('steps')} must be a positive integer, got {self.steps!r}")
        if not self.lr > 0:
            raise RequestError(f"{option('lr')} must be positive, got {self.lr!r}")


# ---- gaussianised W space (Wulff & Torralba) ------------------------------------------------------
def gaussianize(w: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(w, 5.0) / math.sqrt(2.0)


def degaussianize(g: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(g * math.sqrt(2.0), 0.2)


@dataclass
class StyleStats:
    mean: torch.Tensor  # [D] mean of gaussianised w
    std: torch.Tensor  # [D] per-dimension std
    invcov: torch.Tensor  # [D, D]


@torch.no_grad()
def style_statistics(model: Generator, n: int = 10000, seed: int = 0) -> StyleStats:
    """Mean, per-dim std and inverse covariance of gaussianised mapping(z), z ~ N(0, I).
    The covariance gets a ridge of 1e-6 of its mean variance so a degenerate mapping (a
    random or tiny model) still has an inverse; the official code inverts it as is."""
    d = model.config.global_latent_dim
    z = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    device = next(model.parameters()).device
    g = gaussianize(model.mapping(z.to(device))).double()
    mean = g.mean(0)
    centred = g - mean
    cov = centred.T @ centred / (n - 1)
    cov += torch.eye(d, dtype=cov.dtype, device=cov.device) * 1e-6 * cov.diagonal().mean()
    std = (centred.pow(2).sum(0) / n).sqrt()
    return StyleStats(mean.float(), std.float(), torch.linalg.inv(cov).float())


# ---- losses -----------------------------------------------------------------------------------
def _pyramid(x: torch.Tensor, smallest: int = 8):
    while True:
        yield x
        if min(x.shape[-2:]) <= smallest:
            return
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        x = F.avg_pool2d(x[..., :h, :w], 2)


def multiscale_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over pyramid levels of L1(a, b) + L1 of their x and y finite differences."""
    total, levels = 0.0, 0
    for pa, pb in zip(_pyramid(a), _pyramid(b)):
        d = pa - pb
        total = total + d.abs().mean()
        if d.shape[-1] > 1:
            total = total + (d[..., 1:] - d[..., :-1]).abs().mean()
        if d.shape[-2] > 1:
            total = total + (d[..., 1:, :] - d[..., :-1, :]).abs().mean()
        levels += 1
    return total / levels


def noise_regularizer(noises: list[torch.Tensor]) -> torch.Tensor:
    """StyleGAN2 projector regulariser: squared autocorrelation at lag 1 in x and y, summed
    over maps and a 2x2-pooled pyramid down to 8 px (odd sizes trimmed)."""
    loss = 0.0
    for n in noises:
        n = n.reshape(1, 1, *n.shape[-2:])
        while True:
            loss = loss + (n * torch.roll(n, 1, 3)).mean() ** 2 + (n * torch.roll(n, 1, 2)).mean() ** 2
            if min(n.shape[-2:]) <= 8:
                break
            h, w = n.shape[-2] // 2 * 2, n.shape[-1] // 2 * 2
            n = F.avg_pool2d(n[..., :h, :w], 2)
    return loss


def _std_loss(x: torch.Tensor) -> torch.Tensor:
    loss = (x.std() - 1).abs()
    return loss if loss.item() >= 1e-6 else torch.zeros_like(loss)


def ts_prior(styles: torch.Tensor, stats: StyleStats) -> torch.Tensor:
    """Mean over W+ slots of the Mahalanobis distance of gaussianised w to the mapped prior."""
    d = gaussianize(styles) - stats.mean  # [n_latent, D]
    return torch.sqrt(((d @ stats.invcov) * d).sum(1)).mean()


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Translate the last two dims by (dy, dx) with zero fill."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    src_y, dst_y = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    src_x, dst_x = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., dst_y, dst_x] = x[..., src_y, src_x]
    return out


def diff_augment(a: torch.Tensor, b: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """DiffAugment 'color,translation,cutout' with the same random transform on both images."""
    x = torch.stack([a, b])  # [2, 3, H, W]
    r = lambda *s: torch.rand(*s, generator=gen).to(x.device)  # noqa: E731
    x = x + (r(1) - 0.5)
    mean = x.mean(1, keepdim=True)
    x = (x - mean) * (r(1) * 2) + mean
    mean = x.mean([1, 2, 3], keepdim=True)
    x = (x - mean) * (r(1) + 0.5) + mean
    h, w = x.shape[-2:]
    dy, dx = (int(torch.randint(-(s // 8), s // 8 + 1, (1,), generator=gen)) for s in (h, w))
    x = _shift(x, dy, dx)
    ch, cw = h // 2, w // 2
    cy = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
    cx = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
    mask = torch.ones(h, w, device=x.device)
    mask[cy:cy + ch, cx:cx + cw] = 0
    x = x * mask
    return x[0], x[1]


def learning_rate(t: float, base: float, rampup: float, rampdown: float) -> float:
    """Official schedule: linear ramp-up over `rampup`, cosine ramp-down over the last `rampdown`."""
    down = 0.5 - 0.5 * math.cos(math.pi * min(1.0, (1.0 - t) / rampdown))
    return base * down * min(1.0, t / rampup)


# ---- the inversion ----------------------------------------------------------------------------
@dataclass
class _Problem:
    """The image's latent window on the canvas."""

    placement: Placement
    offset: tuple[int, int]  # where the image starts inside the window's output (y, x)
    n_h: int
    n_w: int
    coords: torch.Tensor | None  # [ncoord, n_h, n_w]
    noise_shapes: list[tuple[int, int]]


def _problem(model: Generator, width: int, height: int, x0: int, y0: int, horizon: float, device) -> _Problem:
    cfg = model.config
    r0, n_h, oy = latent_window(cfg, y0, height)
    c0, n_w, ox = latent_window(cfg, x0, width)
    coords = LatentField(cfg, 0, horizon=horizon).coords(r0, c0, n_h, n_w, device) if cfg.use_ss else None
    halo = cfg.ss_halo
    shapes = list(zip(ts_sizes(cfg, n_h - 2 * halo), ts_sizes(cfg, n_w - 2 * halo)))
    return _Problem(Placement(x0, y0, width, height, r0, c0), (oy, ox), n_h, n_w, coords, shapes)


def synthesize_window(model: Generator, z_g, styles, z_l, coords, noises, offset, height, width) -> torch.Tensor:
    """The image [3, H, W] the generator makes from a latent window (differentiable)."""
    prepared = model.prepare(z_g, styles)
    out = model.synthesize(prepared, z_l[None], None if coords is None else coords[None],
                           [n[None, None] for n in noises])
    oy, ox = offset
    return out[0, :, oy:oy + height, ox:ox + width]


_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def invert(model: Generator, target: torch.Tensor, *, x0: int | None = None, y0: int | None = None,
           horizon: float = 0.0, settings: InversionSettings = InversionSettings(), progress: bool = True,
           digest: str | None = None, style: tuple[torch.Tensor, torch.Tensor] | None = None,
           on_step=None) -> InversionRecord:
    """Fit the latents of the canvas window whose top-left pixel is (x0, y0) to `target`
    [3, H, W] (float, [-1, 1]). Default placement: x0 = 0, y0 = -H // 2 (centred on the
    horizon, as igan-render places images). `style` = (z_g [D], W+ [n_latent, D]) fixes the
    styles (only z_l and the noise maps are fitted: for several images sharing one style).
    `on_step(step, losses)` is called after every step.
    Returns the record; its `fit` is the generator's output for the saved latents."""
    if target.dim() != 3 or target.shape[0] != 3:
        raise RequestError(f"target must be an RGB image [3, H, W], got shape {tuple(target.shape)}")
    cfg = model.config
    device = next(model.parameters()).device
    height, width = target.shape[1:]
    x0 = 0 if x0 is None else x0
    y0 = -(height // 2) if y0 is None else y0
    target = target.to(device, torch.float32)
    prob = _problem(model, width, height, x0, y0, horizon, device)
    s, lw = settings, settings.weights
    gen = torch.Generator().manual_seed(s.seed)
    randn = lambda *shape: torch.randn(*shape, generator=gen).to(device)  # noqa: E731
    saved_flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        stats = style_statistics(model, s.stat_samples, s.seed)
        z_g = randn(cfg.global_latent_dim)
        z_l = randn(cfg.local_latent_dim, prob.n_h, prob.n_w).requires_grad_(True)
        styles = degaussianize(stats.mean).repeat(cfg.n_latent, 1)
        if style is not None:
            z_g, styles = _fixed_style(cfg, *style, device)
        noises = [randn(h, w).requires_grad_(True) for h, w in prob.noise_shapes]
        free = style is None
        ss_opt = torch.optim.Adam([z_g.requires_grad_(free), z_l] if free else [z_l], lr=s.lr * s.ss_lr_mult)
        ts_opt = torch.optim.Adam([styles.requires_grad_(free), *noises] if free else noises, lr=s.lr)
        style_sigma = float(stats.std.mean())
        bar = tqdm(range(s.steps), desc="igan-invert", unit="step", disable=not progress, file=sys.stderr,
                   dynamic_ncols=True, bar_format=_BAR)
        losses = {}
        for step in bar:
            t = step / s.steps
            for opt, base in ((ts_opt, s.lr), (ss_opt, s.lr * s.ss_lr_mult)):
                for group in opt.param_groups:
                    group["lr"] = learning_rate(t, base, s.rampup, s.rampdown)
            r = max(0.0, 1.0 - t / s.perturb_ramp) ** 2
            styles_in = styles + randn(*styles.shape) * (style_sigma * s.styles_perturb * r) if free else styles
            z_l_in = z_l + randn(*z_l.shape) * (s.ss_local_perturb * r)
            z_g_in = z_g + randn(*z_g.shape) * (s.ss_global_perturb * r) if free else z_g
            fit = synthesize_window(model, z_g_in, styles_in, z_l_in, prob.coords, noises, prob.offset, height, width)
            a, b = diff_augment(fit, target, gen) if s.diff_aug else (fit, target)
            terms = {
                "pixel": 0.5 * (a - b).pow(2).mean(),
                "perceptual": multiscale_loss(a[None], b[None]),
                "noise_reg": noise_regularizer(noises),
                "ss_global_prior": z_g_in.mean().abs(),
                "ss_local_prior": z_l_in.pow(2).mean().sqrt(),
                "ss_global_std": _std_loss(z_g_in),
                "ss_local_std": _std_loss(z_l_in),
                "ts_prior": ts_prior(styles, stats),
            }
            if not free:  # priors of fixed values carry no gradient
                for k in ("ss_global_prior", "ss_global_std", "ts_prior"):
                    terms[k] = terms[k].detach()
            total = sum(getattr(lw, k) * v for k, v in terms.items())
            ss_opt.zero_grad(set_to_none=True)
            ts_opt.zero_grad(set_to_none=True)
            total.backward()
            if not torch.isfinite(total):
                raise RuntimeError(f"inversion diverged at step {step}: loss {float(total)}")
            ss_opt.step()
            ts_opt.step()
            if s.noise_renorm:
                with torch.no_grad():
                    for n in noises:
                        n.sub_(n.mean()).div_(n.std())
            losses = {k: float(v.detach()) for k, v in terms.items()} | {"total": float(total.detach())}
            bar.set_postfix_str(f"loss {losses['total']:.4f}, mse {2 * losses['pixel']:.5f}", refresh=False)
            if on_step is not None:
                on_step(step, losses)
        bar.close()
        with torch.no_grad(), reproducible_cpu_convs():
            fit = synthesize_window(model, z_g, styles, z_l, prob.coords, noises, prob.offset, height, width)
        mse = float((fit - target).pow(2).mean())
        losses["final_mse"] = mse
        losses["final_psnr_db"] = psnr(fit, target)
    finally:
        for p, flag in zip(model.parameters(), saved_flags):
            p.requires_grad_(flag)
    settings_json = dataclasses.asdict(settings) | {"perceptual_loss": PERCEPTUAL_REPLACEMENT,
                                                    "fixed_style": style is not None}
    return InversionRecord(cfg, digest or model_digest(model), prob.placement, float(horizon), z_g.detach().cpu(),
                           styles.detach().cpu(), z_l.detach().cpu(),
                           None if prob.coords is None else prob.coords.cpu(),
                           [n.detach().cpu() for n in noises], fit.cpu(), losses, settings_json)


def _fixed_style(cfg, z_g: torch.Tensor, styles: torch.Tensor, device):
    z_g = z_g.detach().reshape(-1).to(device, torch.float32)
    styles = styles.detach().reshape(-1, cfg.global_latent_dim).to(device, torch.float32)
    if z_g.numel() != cfg.global_latent_dim or styles.shape[0] not in (1, cfg.n_latent):
        raise RequestError(f"style must be (z_g [{cfg.global_latent_dim}], W+ [{cfg.n_latent}, "
                           f"{cfg.global_latent_dim}]), got shapes {tuple(z_g.shape)}, {tuple(styles.shape)}")
    return z_g, styles.expand(cfg.n_latent, -1).clone()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [-1, 1] (peak-to-peak 2)."""
    mse = float((a.clamp(-1, 1) - b.clamp(-1, 1)).pow(2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(4.0 / mse)


__all__ = ["InversionSettings", "LossWeights", "PERCEPTUAL_REPLACEMENT", "StyleStats", "degaussianize",
           "gaussianize", "invert", "learning_rate", "multiscale_loss", "noise_regularizer", "psnr",
           "style_statistics", "synthesize_window", "ts_prior"]
