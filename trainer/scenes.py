"""Procedural landscape scenes: the small, deterministic data set the default model is
trained on (no download). Image k of a set is a pure function of (seed, k).

Two generations of scenes:

* **v2** (`scene`, the default): wide panoramic landscapes. Layered mountain ranges whose
  ridgelines are ridged fractal noise, paler and bluer with distance (atmospheric perspective)
  and misty at their feet; snow above a snow line on high peaks; clouds on a perspective plane
  with lit tops and darker bases; in some scenes a lake that mirrors the sky and the ridges
  (darkened, with faint ripples), in some dark jagged conifer tree lines along the foreground
  hills or the far shore; five times of day (day, golden hour, dusk, overcast, night). Every
  feature is a function of world coordinates (x and y in units of the image height), so a
  wider image shows more of the same world rather than a stretched one, and the ranges, lakes,
  forests and clouds change along x.
* **v1** (`scene_v1`, `--style v1`): the first generator (sky gradient, soft clouds, 2-3
  ridgelines, grass or rippled water), on which the embedded default model was trained;
  kept byte-for-byte so that data set stays reproducible.

    python -m igan.trainer.scenes --out scenes/ --count 384                      # v2, 512x256
    python -m igan.trainer.scenes --out scenes_v1/ --count 384 --style v1 --width 320 --height 256
    python -m igan.trainer.scenes --contact-sheet docs/images/scenes.png --count 24
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from igan.engine.errors import RequestError

STYLES = ("v1", "v2")
# Seed of held-out scenes for evaluation (igan.trainer.eval.swd): never train on it.
HELDOUT_SEED = 1000


# ---- v1: the first generator, kept byte-for-byte ----------------------------------------------
def _fbm_1d(rng: np.random.Generator, n: int, octaves: int = 5, base: int = 4) -> np.ndarray:
    """Fractal 1-D noise in about [-1, 1] over n samples (sum of interpolated random octaves)."""
    out = np.zeros(n)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        k = base * 2**o + 1
        knots = rng.uniform(-1, 1, k)
        out += amp * np.interp(np.linspace(0, k - 1, n), np.arange(k), knots)
        total += amp
        amp *= 0.5
    return out / total


def _blur_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth 2-D value noise in [0, 1]: a coarse random grid, bilinearly upsampled."""
    gh, gw = max(2, h * cells // w), cells
    grid = rng.uniform(0, 1, (gh + 1, gw + 1)).astype(np.float32)
    img = Image.fromarray(grid).resize((w, h), Image.BILINEAR)
    return np.asarray(img, dtype=np.float64)


def _mix(a, b, t):
    return a + (b - a) * t


def scene_v1(seed: int, index: int, width: int = 256, height: int = 256) -> np.ndarray:
    """v1 scene `index` of set `seed`: uint8 [height, width, 3] (the embedded model's data)."""
    rng = np.random.default_rng([seed, index])
    h, w = height, width
    yy = np.linspace(0, 1, h)[:, None, None]  # 0 top, 1 bottom
    # Sky: zenith -> horizon gradient; some scenes are dusk-coloured.
    dusk = rng.random() < 0.25
    zenith = np.array([0.10, 0.25, 0.60]) + rng.uniform(-0.05, 0.05, 3)
    horizon_col = (np.array([0.95, 0.60, 0.40]) if dusk else np.array([0.70, 0.82, 0.95])) + rng.uniform(-0.05, 0.05, 3)
    horizon = rng.uniform(0.45, 0.65)  # horizon row as a fraction of the height
    t = np.clip(yy / horizon, 0, 1) ** 1.5
    img = _mix(zenith, horizon_col, t) * np.ones((1, w, 1))
    # Clouds: thresholded smooth noise, brighter near the top.
    cover = rng.uniform(0.3, 0.75)
    n = 0.6 * _blur_noise(rng, h, w, 6) + 0.4 * _blur_noise(rng, h, w, 16)
    cloud = np.clip((n - cover) / 0.15, 0, 1)[..., None] * (yy < horizon) * np.clip(1.2 - yy / horizon, 0, 1)
    cloud_col = np.array([1.0, 0.85, 0.8]) if dusk else np.array([0.97, 0.97, 0.98])
    img = _mix(img, cloud_col, 0.85 * cloud)
    # Ridgelines, far (pale, high) to near (dark, low).
    xs = np.arange(w)
    ground = np.array([0.20, 0.45, 0.18]) + rng.uniform(-0.05, 0.05, 3)
    rock = np.array([0.30, 0.30, 0.35]) + rng.uniform(-0.05, 0.05, 3)
    n_ridges = int(rng.integers(2, 4))
    for r in range(n_ridges):
        depth = (r + 1) / n_ridges  # 1 = nearest
        base = horizon - rng.uniform(0.05, 0.25) * (1.2 - depth)
        amp = rng.uniform(0.08, 0.3) * (1.3 - 0.5 * depth)
        top = base - amp * (0.5 + 0.5 * _fbm_1d(rng, w, octaves=6, base=int(rng.integers(2, 6))))
        col = _mix(horizon_col * 0.9, _mix(rock, ground, 0.4 * depth), 0.35 + 0.6 * depth)
        mask = (yy[:, :, 0] >= top[None, :]) & (yy[:, :, 0] < horizon + 0.02)
        shade = 1.0 - 0.25 * np.clip((yy[:, :, 0] - top[None, :]) / max(amp, 1e-3), 0, 1)
        img[mask] = (col[None, :] * shade[mask][:, None])
    below = np.broadcast_to(yy[:, :, 0] >= horizon, (h, w))
    if rng.random() < 0.45:  # water: darker sky reflection with horizontal ripples
        ripple = 0.04 * np.sin(np.arange(h)[:, None] * rng.uniform(0.3, 0.6) + 3 * _blur_noise(rng, h, w, 12))
        refl = _mix(zenith, horizon_col, 0.6) * 0.75 + ripple[..., None]
        img[below] = refl[below]
    else:  # grass: green with dark noise, lighter towards the horizon
        tex = 0.75 + 0.25 * _blur_noise(rng, h, w, 40)[..., None]
        near = np.clip((yy - horizon) / (1 - horizon), 0, 1)
        grass = _mix(ground * 1.25, ground * 0.7, near) * tex
        img[below] = grass[below]
    img = img + rng.normal(0, 0.01, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)



# ---- v2: panoramic landscapes ----------------------------------------------------------------
_P1, _P2 = 1024, 128  # periods of the 1-D and 2-D noise lattices (in lattice cells)
_OCTAVES = 8


def _smooth(f):
    return f * f * (3.0 - 2.0 * f)


class _Noise:
    """Value noise on periodic random lattices, one table per octave: a pure function of the
    generator state it was built from and of the (world) coordinates it is evaluated at."""

    def __init__(self, rng: np.random.Generator):
        self.t1 = rng.random((_OCTAVES, _P1))
        self.t2 = rng.random((_OCTAVES, _P2, _P2))

    def n1(self, x, o: int = 0):
        i = np.floor(x)
        s = _smooth(x - i)
        i = i.astype(np.int64) % _P1
        t = self.t1[o]
        a = t[i]
        return a + (t[(i + 1) % _P1] - a) * s

    def n2(self, x, y, o: int = 0):
        """2-D value noise; x and y broadcast (e.g. [1, W] and [H, 1])."""
        ix, iy = np.floor(x), np.floor(y)
        sx, sy = _smooth(x - ix), _smooth(y - iy)
        ix, iy = ix.astype(np.int64) % _P2, iy.astype(np.int64) % _P2
        jx, jy = (ix + 1) % _P2, (iy + 1) % _P2
        t = self.t2[o]
        a, b, c, d = t[iy, ix], t[iy, jx], t[jy, ix], t[jy, jx]
        top = a + (b - a) * sx
        return top + (c + (d - c) * sx - top) * sy

    def fbm1(self, x, octaves: int, gain: float = 0.5):
        """Fractal sum in [0, 1] (mean 0.5)."""
        out, amp, total = 0.0, 1.0, 0.0
        for o in range(octaves):
            out = out + amp * self.n1(x * 2**o + 17.31 * o, o)
            total += amp
            amp *= gain
        return out / total

    def fbm2(self, x, y, octaves: int, gain: float = 0.5):
        out, amp, total = 0.0, 1.0, 0.0
        for o in range(octaves):
            out = out + amp * self.n2(x * 2**o + 17.31 * o, y * 2**o + 5.77 * o, o)
            total += amp
            amp *= gain
        return out / total

    def ridged1(self, x, octaves: int, gain: float = 0.5):
        """Ridged multifractal (Musgrave): sharp crests, with more detail on the high parts."""
        out, amp, total, weight = 0.0, 1.0, 0.0, 1.0
        for o in range(octaves):
            sig = 1.0 - np.abs(2.0 * self.n1(x * 2**o + 31.7 * o, o) - 1.0)
            sig = sig * sig * weight
            weight = np.clip(sig * 2.0, 0.0, 1.0)
            out = out + amp * sig
            total += amp
            amp *= gain
        return out / total

    def ridged2(self, x, y, octaves: int, gain: float = 0.5):
        out, amp, total = 0.0, 1.0, 0.0
        for o in range(octaves):
            sig = 1.0 - np.abs(2.0 * self.n2(x * 2**o + 11.3 * o, y * 2**o + 3.1 * o, o) - 1.0)
            out = out + amp * sig * sig
            total += amp
            amp *= gain
        return out / total


def _hash01(ix, iy, salt: int) -> np.ndarray:
    """A uniform [0, 1) value per integer pair (a 64-bit mix): grain and stars that depend on
    the pixel, not on the image size."""
    with np.errstate(over="ignore"):
        h = (np.asarray(ix, np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ \
            (np.asarray(iy, np.int64).astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)) ^ np.uint64(salt)
        h = h ^ (h >> np.uint64(33))
        h = h * np.uint64(0xFF51AFD7ED558CCD)
        h = h ^ (h >> np.uint64(33))
        h = h * np.uint64(0xC4CEB9FE1A85EC53)
        h = h ^ (h >> np.uint64(33))
    return (h >> np.uint64(11)).astype(np.float64) / float(2**53)


def _c(*rgb):
    return np.array(rgb, np.float64)


# Times of day: probabilities and palettes (RGB in [0, 1]). haze = horizon mixed towards the
# zenith by haze_mix: the colour distant ranges fade into.
TIMES = ("day", "golden", "dusk", "overcast", "night")
_TIME_P = (0.38, 0.20, 0.12, 0.15, 0.15)
_PALETTES = {
    "day": dict(zenith=_c(0.14, 0.33, 0.68), horizon=_c(0.72, 0.83, 0.94), light=_c(1.0, 0.97, 0.90),
                ambient=_c(0.50, 0.58, 0.72), cloud_lit=_c(1.0, 1.0, 1.0), cloud_dark=_c(0.58, 0.64, 0.74),
                rock=_c(0.46, 0.44, 0.45), hill=_c(0.24, 0.40, 0.15), grass=_c(0.36, 0.55, 0.20),
                forest=_c(0.05, 0.14, 0.07), water=_c(0.10, 0.22, 0.32), snow=_c(0.97, 0.98, 1.0),
                haze_mix=0.2, fog=0.62, mist=0.4, cover=(0.50, 0.64), soft=0.07),
    "golden": dict(zenith=_c(0.24, 0.32, 0.58), horizon=_c(1.0, 0.72, 0.45), light=_c(1.0, 0.80, 0.52),
                   ambient=_c(0.42, 0.38, 0.55), cloud_lit=_c(1.0, 0.82, 0.62), cloud_dark=_c(0.46, 0.38, 0.50),
                   rock=_c(0.52, 0.40, 0.34), hill=_c(0.32, 0.34, 0.14), grass=_c(0.48, 0.48, 0.18),
                   forest=_c(0.07, 0.07, 0.06), water=_c(0.14, 0.16, 0.26), snow=_c(1.0, 0.92, 0.84),
                   haze_mix=0.45, fog=0.58, mist=0.45, cover=(0.52, 0.66), soft=0.06),
    "dusk": dict(zenith=_c(0.08, 0.12, 0.32), horizon=_c(0.95, 0.52, 0.38), light=_c(0.85, 0.55, 0.50),
                 ambient=_c(0.25, 0.24, 0.40), cloud_lit=_c(0.98, 0.58, 0.50), cloud_dark=_c(0.22, 0.18, 0.32),
                 rock=_c(0.30, 0.24, 0.30), hill=_c(0.14, 0.14, 0.16), grass=_c(0.20, 0.20, 0.16),
                 forest=_c(0.03, 0.03, 0.05), water=_c(0.06, 0.07, 0.16), snow=_c(0.85, 0.72, 0.80),
                 haze_mix=0.55, fog=0.55, mist=0.35, cover=(0.55, 0.70), soft=0.06),
    "overcast": dict(zenith=_c(0.55, 0.58, 0.63), horizon=_c(0.80, 0.81, 0.83), light=_c(0.85, 0.86, 0.88),
                     ambient=_c(0.62, 0.64, 0.68), cloud_lit=_c(0.86, 0.87, 0.89), cloud_dark=_c(0.50, 0.52, 0.57),
                     rock=_c(0.40, 0.40, 0.40), hill=_c(0.24, 0.32, 0.20), grass=_c(0.32, 0.42, 0.24),
                     forest=_c(0.08, 0.12, 0.10), water=_c(0.26, 0.30, 0.33), snow=_c(0.92, 0.93, 0.95),
                     haze_mix=0.1, fog=0.72, mist=0.6, cover=(0.30, 0.42), soft=0.12),
    "night": dict(zenith=_c(0.02, 0.04, 0.12), horizon=_c(0.12, 0.18, 0.34), light=_c(0.55, 0.62, 0.80),
                  ambient=_c(0.18, 0.22, 0.36), cloud_lit=_c(0.36, 0.40, 0.55), cloud_dark=_c(0.07, 0.09, 0.17),
                  rock=_c(0.16, 0.18, 0.26), hill=_c(0.07, 0.10, 0.12), grass=_c(0.08, 0.12, 0.13),
                  forest=_c(0.01, 0.02, 0.04), water=_c(0.03, 0.05, 0.12), snow=_c(0.62, 0.70, 0.88),
                  haze_mix=0.3, fog=0.55, mist=0.35, cover=(0.55, 0.70), soft=0.07),
}


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """a[y + dy, x + dx] with the edges repeated."""
    h, w = a.shape[:2]
    return a[np.clip(np.arange(h) + dy, 0, h - 1)][:, np.clip(np.arange(w) + dx, 0, w - 1)]


def _trees(nz: _Noise, u, v, ground, spacing, height, density, threshold, off, salt):
    """Conifer silhouettes standing on the line `ground` (row coordinate per column): a mask
    [H, W], its lit side, and the forest cover per column in [0, 1]. Trees sit on a jittered
    grid along x, present where the density noise exceeds `threshold` (clearings elsewhere)
    and the ground is in view; jagged sawtooth outlines."""
    h, w = v.shape[0], u.shape[0]
    k0 = np.floor(u / spacing).astype(np.int64)
    mask = np.zeros((h, w), bool)
    lit = np.zeros((h, w), bool)
    lo = max(0, int((ground.min() - 1.4 * height) * h) - 1)
    hi = min(h, int(np.ceil((ground.max() + 0.02) * h)) + 1)
    cover = np.clip((nz.fbm1(u * density + off, 2) - threshold) / 0.15 + 0.5, 0, 1) * (ground < 0.99)
    if lo >= hi:
        return mask, lit, cover
    vv = v[lo:hi, None]
    for dk in range(-2, 3):
        k = k0 + dk
        c = (k + 0.5 + 0.7 * (_hash01(k, 1, salt) - 0.5)) * spacing
        g = np.interp(c, u, ground)
        cov = np.clip((nz.fbm1(c * density + off, 2) - threshold) / 0.15 + 0.5, 0, 1)
        present = (cov > 0.1) & (g < 0.99) & (_hash01(k, 5, salt) < 0.3 + cov)
        th = height * (0.55 + 0.8 * _hash01(k, 2, salt)) * (0.35 + 0.65 * cov)  # smaller at the edges
        tip = g - th
        depth = (vv - tip) / th  # 0 at the tip, 1 at the foot
        jag = 0.62 + 0.38 * np.mod(depth * (4 + 3 * _hash01(k, 3, salt)) + _hash01(k, 4, salt), 1.0)
        half = th * 0.2 * depth * jag
        du = u[None, :] - c
        inside = present & (depth >= 0) & (vv <= g + 0.02) & (np.abs(du) <= half)
        mask[lo:hi] |= inside
        lit[lo:hi] |= inside & (du > 0.25 * half)
    return mask, lit, cover


def _render_v2(seed: int, index: int, width: int, height: int) -> tuple[np.ndarray, dict]:
    if width < 2 or height < 2:
        raise RequestError(f"v2 scenes are at least 2x2 pixels, got {width}x{height}")
    rng = np.random.default_rng([seed, index, 2])
    nz = _Noise(rng)
    salt = int(rng.integers(0, 2**62))
    # Rendered with a margin on the right (wider than the widest smoothing and shading
    # reach) and cropped, so that a wider image extends this one: scene(..., 2 w, h)[:, :w]
    # == scene(..., w, h).
    h, w = height, width + int(np.ceil(0.4 * height)) + 8
    u = (np.arange(w) + 0.5) / h + rng.uniform(0, 300)  # world x, in image heights
    v = (np.arange(h) + 0.5) / h  # 0 top, 1 bottom
    uu, vv = u[None, :], v[:, None]
    tod = str(rng.choice(TIMES, p=_TIME_P))  # time of day
    pal = {k: (val * rng.uniform(0.92, 1.08, 3) if isinstance(val, np.ndarray) else val)  # colours jittered
           for k, val in _PALETTES[tod].items()}
    haze = _mix(pal["horizon"], pal["zenith"], pal["haze_mix"])
    light, ambient = pal["light"], pal["ambient"]
    lake = rng.random() < 0.4
    vh = rng.uniform(0.56, 0.68) if not lake else rng.uniform(0.50, 0.60)  # horizon / far shore
    sun_u = u[0] + rng.uniform(0.1, 1.9)  # in a 2:1 view; independent of the width
    sun_side = 1.0 if rng.random() < 0.5 else -1.0  # light from the right (+1) or the left
    info = dict(time=tod, lake=lake, horizon_row=int(round(vh * h)))

    # Sky: zenith-to-horizon gradient, sun/moon glow, stars at night.
    t = np.clip(v / vh, 0, 1) ** rng.uniform(1.3, 2.2)
    img = np.broadcast_to(_mix(pal["zenith"], pal["horizon"], t[:, None])[:, None, :], (h, w, 3)).copy()
    if tod in ("day", "golden", "night"):
        sun_v = {"day": rng.uniform(-0.3, 0.15), "golden": vh - rng.uniform(0.03, 0.15),
                 "night": rng.uniform(0.08, 0.3)}[tod]
        dist = np.sqrt((uu - sun_u) ** 2 + (vv - sun_v) ** 2)
        glow_col = {"day": _c(1.0, 0.98, 0.9), "golden": _c(1.0, 0.8, 0.5), "night": _c(0.5, 0.55, 0.7)}[tod]
        strength, radius = {"day": (0.25, 0.3), "golden": (0.6, 0.22), "night": (0.25, 0.08)}[tod]
        img += (strength * np.exp(-dist / radius))[..., None] * glow_col
        if tod != "day":
            disc = np.clip((0.026 - dist) * h * 0.7, 0, 1)[..., None]
            img = _mix(img, _c(1.0, 0.95, 0.8) if tod == "golden" else _c(0.92, 0.93, 0.86), disc)
    elif tod == "dusk":  # the afterglow: a warm band low in the sky, strongest near the set sun
        band = np.exp(-np.clip(vh - vv, 0, None) / 0.12) * (0.5 + 0.5 * np.exp(-np.abs(uu - sun_u) / 0.9))
        img += (0.35 * band)[..., None] * _c(1.0, 0.55, 0.35)
    if tod == "night":
        px, py = np.arange(w)[None, :], np.arange(h)[:, None]
        star = (_hash01(px, py, salt + 7) > 0.9965) * (vv < vh)
        img += (star * (0.4 + 0.6 * _hash01(px, py, salt + 8)) * np.clip(1 - t[:, None] * 1.3, 0, 1))[..., None]

    # Clouds on a perspective plane: smaller and flatter towards the horizon; lit tops
    # (density rising towards the light) and darker bases; they fade into the haze low down.
    rows = max(1, int(np.ceil(vh * h)))
    d = np.maximum(vh - v[:rows], 1e-3)[:, None]
    z = 1.0 / (d + 0.12)
    sx, sy = rng.uniform(1.2, 2.2), rng.uniform(2.5, 4.0)
    cu = (uu - sun_u) * z * sx + rng.uniform(0, 100)
    dens = nz.fbm2(cu, z * sy + rng.uniform(0, 100), 5)
    cover = rng.uniform(*pal["cover"])
    alpha = np.clip((dens - cover) / pal["soft"], 0, 1) * np.clip(d / 0.1, 0, 1) ** 0.8
    k = max(1, int(round(0.025 * h)))
    if tod in ("golden", "dusk"):  # light from the low sun's side and below the tops
        toward = _shift(dens, -k // 2, int(np.sign(sun_u - u[0] - 1.0) or sun_side) * k)
    else:
        toward = _shift(dens, -k, int(sun_side * k // 2))
    lightness = np.clip(0.62 + 9.0 * (dens - toward) - 2.0 * np.clip(dens - cover - 0.05, 0, None), 0, 1)
    ccol = _mix(pal["cloud_dark"], pal["cloud_lit"], lightness[..., None])
    ccol = _mix(ccol, haze, (0.6 * np.clip(1 - d / 0.35, 0, 1))[..., None])
    img[:rows] = _mix(img[:rows], ccol, (0.95 * alpha)[..., None])
    cloud_alpha = np.zeros((h, w))
    cloud_alpha[:rows] = alpha

    row_w = int(round(vh * h))
    if not lake:
        # The plain below the horizon, hazy far away; perspective texture of fields (the
        # nearer ranges' foothills stand on it).
        e = np.maximum(v[row_w:] - vh, 0)[:, None]
        zg = 1.0 / (e + 0.04)
        tex = nz.fbm2((uu - sun_u) * zg * 2.0 + 7.0, zg * 3.0, 4)
        near = np.clip(e / 0.15, 0, 1)
        gcol = pal["grass"] * _mix(ambient, light, 0.7) * (0.7 + 0.6 * tex[..., None])
        img[row_w:] = _mix(haze, gcol, (0.5 + 0.5 * near)[..., None])

    # Mountain ranges, far to near. Each ridgeline is ridged fbm under a slow envelope along
    # x (tall massifs and low passes). A face is lit by the slope of its ridgeline smoothed
    # over a width that grows with the depth below the crest (broad facets under each peak),
    # plus fine gullies; snow above a ragged snow line; hazed by distance, misty at its foot.
    gul_fx = rng.uniform(6, 10)
    n_r = int(rng.choice([2, 3, 4, 5], p=[0.1, 0.35, 0.35, 0.2]))
    snowy = rng.random() < (0.3 if tod == "overcast" else 0.7)
    snow_mask = np.zeros((h, w), bool)
    range_map = np.full((h, w), -1, np.int8)
    widths = [max(1, int(round(k * h / 256))) for k in (1, 3, 9, 27, 81)]
    for r in range(n_r):
        tr = r / (n_r - 1)
        amp = _mix(rng.uniform(0.2, 0.4), rng.uniform(0.05, 0.12), tr)
        freq = _mix(rng.uniform(1.0, 2.0), rng.uniform(0.8, 1.6), tr)
        prof = nz.ridged1(u * freq + rng.uniform(0, 500), 7 if tr < 0.5 else 5)
        prof = np.clip((prof - 0.1) / 0.55, 0, 1.2)
        env = 0.3 + 0.7 * _smooth(np.clip((nz.fbm1(u * 0.3 + rng.uniform(0, 500), 3) - 0.3) / 0.4, 0, 1))
        base = vh if lake else vh + tr * rng.uniform(0.0, 0.05)
        elev = amp * (0.1 + 0.9 * prof) * env
        top = base - elev
        y0, y1 = max(0, int(top.min() * h)), min(h, int(np.ceil((base + (0.0 if lake else 0.02)) * h)))
        if y0 >= y1:
            continue
        vb = v[y0:y1, None]
        mask = vb >= top[None, :]
        alt = np.clip((base - vb) / amp, 0, 1.5)  # 0 at the foot, ~1 on the highest crests
        slope = -np.gradient(elev) / np.gradient(u)  # > 0: the face turns to the right
        smooth = np.stack([np.convolve(np.pad(slope, k, mode="edge"), np.ones(2 * k + 1) / (2 * k + 1), "valid")
                           for k in widths])  # [levels, W]
        below = np.maximum(vb - top[None, :], 0) * h  # pixels below the crest
        lvl = np.clip(np.log1p(below / widths[0]) / np.log(3.0), 0, len(widths) - 1.001)
        i0 = lvl.astype(np.int64)
        fr = lvl - i0
        cols = np.arange(w)[None, :]
        facet = smooth[i0, cols] * (1 - fr) + smooth[i0 + 1, cols] * fr
        gul = nz.ridged2(uu * gul_fx * freq + 50.0 * r, vb * gul_fx * freq * 0.4 + 9.0, 3)
        dgul = np.gradient(gul, axis=1) * h / (gul_fx * freq)
        lam = 0.5 + 0.45 * np.clip(facet * sun_side * 1.2, -1, 1) + 0.06 * np.clip(dgul * sun_side, -2, 2)
        if tod == "overcast":
            lam = 0.65 + 0.35 * (lam - 0.65)
        lam = np.clip(lam, 0.03, 1.0)[..., None]
        body = _mix(pal["rock"], pal["hill"], min(1.0, tr * 1.2)) * (0.9 + 0.2 * gul[..., None])
        col = _mix(body * ambient * 0.6, body * light * 1.1, lam)
        snow = np.zeros(mask.shape, bool)
        if snowy and tr < 0.7 and amp > 0.12:
            line = rng.uniform(0.4, 0.65)
            snow = mask & (alt > line + 0.3 * (gul - 0.5) + 0.25 * (1 - env[None, :]))
            scol = _mix(pal["snow"] * ambient * 1.05, pal["snow"] * light, lam)
            col = np.where(snow[..., None], scol, col)
        fog = pal["fog"] * (1 - tr) ** 1.2 + 0.04
        col = _mix(col, haze, fog)
        mist_h = 0.4 * amp
        mist = np.clip((vb - (base - mist_h)) / mist_h, 0, 1) ** 1.5 * pal["mist"] * (1 - 0.5 * tr)
        col = _mix(col, haze, mist[..., None])
        band = img[y0:y1]
        band[mask] = col[mask]
        snow_mask[y0:y1][mask] = snow[mask]  # a nearer range hides the snow behind it
        range_map[y0:y1][mask] = r

    tree_mask = np.zeros((h, w), bool)
    water_mask = np.zeros((h, w), bool)
    forest = rng.random() < 0.55
    if lake:
        # Far-shore tree line (mirrored with the rest), then the water: the image above the
        # shore mirrored, pushed sideways by ripples, darkened and tinted towards deep water
        # near the viewer, with faint horizontal ripple streaks.
        if forest and rng.random() < 0.6:
            th = rng.uniform(0.018, 0.035)
            tm, tl, _ = _trees(nz, u, v, np.full(w, vh + 0.003), th * 0.35, th, rng.uniform(0.6, 1.5),
                               rng.uniform(0.35, 0.5), rng.uniform(0, 500), salt + 11)
            tcol = _mix(pal["forest"], haze, 0.35)
            img[tm] = tcol
            img[tm & tl] = _mix(tcol, tcol * light * 1.6, 0.5)
            tree_mask |= tm
            range_map[tm] = -1
        e = np.maximum(v[row_w:] - vh, 0)[:, None]
        zw = 1.0 / (e + 0.03)
        ripple = nz.fbm2((uu - sun_u) * zw * 1.5 + 3.0, zw * 7.0 + 1.0, 3) - 0.5
        dx = np.round(ripple * h * 0.02 * (0.3 + 3 * e)).astype(np.int64)
        src_y = np.clip(2 * row_w - 1 - np.arange(row_w, h), 0, h - 1)[:, None]
        src_x = np.clip(np.arange(w)[None, :] + dx, 0, w - 1)
        refl = img[src_y, src_x]
        f = np.clip(e / max(1e-3, 1 - vh), 0, 1) ** 0.8
        dark = rng.uniform(0.72, 0.85)
        water = _mix(refl * dark, pal["water"], (0.08 + 0.5 * f)[..., None]) * (1 + 0.35 * ripple[..., None])
        img[row_w:] = water
        water_mask[row_w:] = True
        range_map[row_w:] = -1
        info["water_row"] = row_w
        fg = []
        if rng.random() < 0.6:  # a near bank along some stretches of the shore
            bank_n = nz.fbm1(u * rng.uniform(0.4, 0.8) + rng.uniform(0, 500), 3)
            bank = 1.03 - rng.uniform(0.12, 0.3) * _smooth(np.clip((bank_n - 0.45) / 0.2, 0, 1)) \
                - 0.02 * nz.fbm1(u * 6 + 7, 3)
            fg.append((bank, forest))
    else:
        fg = []
        for i in range(int(rng.integers(1, 3))):
            lvl = vh + rng.uniform(0.04, 0.12) + 0.12 * i
            crest = nz.fbm1(u * rng.uniform(0.6, 1.4) + rng.uniform(0, 500), 4)
            hill = lvl - rng.uniform(0.05, 0.16) * _smooth(np.clip((crest - 0.3) / 0.4, 0, 1))
            fg.append((hill, forest and rng.random() < 0.8))
    # Foreground hills / banks, far to near: slope-lit, textured, forested in stretches: a
    # dark canopy on the hill with jagged conifer silhouettes along its top.
    for i, (top, wooded) in enumerate(fg):
        y0 = max(0, int(top.min() * h))
        if y0 >= h:
            continue
        vb = v[y0:, None]
        mask = vb >= top[None, :]
        slope = np.gradient(top) / np.gradient(u)  # > 0: the slope turns to the right
        lam = np.clip(0.55 + 0.5 * np.clip(slope * sun_side, -1, 1), 0.1, 1)[None, :, None]
        tex = nz.fbm2(uu * 9.0 + 3.0 * i, vb * 9.0, 3)[..., None]
        body = pal["hill"] * (0.75 + 0.5 * tex)
        col = _mix(body * ambient * 0.6, body * light, lam)
        col = _mix(col, haze, 0.12 * (len(fg) - i) / len(fg))
        fcol = _mix(pal["forest"], haze, 0.06 * (len(fg) - i))
        tm = tl = None
        if wooded:
            th = rng.uniform(0.05, 0.1)
            tm, tl, fcover = _trees(nz, u, v, top + 0.01, th * 0.3, th, rng.uniform(0.5, 1.4),
                                   rng.uniform(0.38, 0.5), rng.uniform(0, 500), salt + 20 + i)
            canopy = fcol * (0.6 + 0.8 * nz.fbm2(uu * 60.0 + 1.0, vb * 40.0, 2)[..., None])
            # The wooded area: under the trees, down to a ragged lower edge, with irregular sides.
            below = vb - top[None, :]
            depth = (rng.uniform(0.06, 0.3) * (0.5 + nz.fbm1(u * 2.0 + 40.0, 3)) * _smooth(fcover))[None, :]
            edge = fcover[None, :] + 0.9 * (nz.fbm2(uu * 10.0 + 9.0, vb * 10.0, 3) - 0.5) \
                - np.clip((below - depth) / 0.04, 0, None)
            alpha = np.clip((edge - 0.5) / 0.08 + 0.5, 0, 1) * np.clip(below * h / 3, 0, 1)
            col = _mix(col, canopy, alpha[..., None])
        band = img[y0:]
        band[mask] = col[mask]
        water_mask[y0:][mask] = False
        snow_mask[y0:][mask] = False
        range_map[y0:][mask] = -1
        if tm is not None:
            img[tm] = fcol
            img[tm & tl] = _mix(fcol, fcol * light * 2.0, 0.5)
            tree_mask |= tm
            water_mask &= ~tm
            snow_mask &= ~tm
            range_map[tm] = -1
    info["forest"] = bool(tree_mask[:, :width].any())
    info["snow"] = bool(snow_mask[:, :width].any())
    # Film grain, a function of the pixel (so scenes of any size share it).
    px, py = np.arange(w)[None, :], np.arange(h)[:, None]
    img += ((_hash01(px, py, salt) - 0.5) * 0.025)[..., None]
    crop = slice(0, width)
    info.update(ranges=n_r, snow_mask=snow_mask[:, crop], tree_mask=tree_mask[:, crop],
                water_mask=water_mask[:, crop], cloud_alpha=cloud_alpha[:, crop], range_map=range_map[:, crop])
    return img[:, crop], info


def scene_v2(seed: int, index: int, width: int = 512, height: int = 256) -> np.ndarray:
    """v2 scene `index` of set `seed`: uint8 [height, width, 3]."""
    img, _ = _render_v2(seed, index, width, height)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def scene_layers(seed: int, index: int, width: int = 512, height: int = 256) -> dict:
    """The v2 scene with what it contains: image (uint8), time ('day', 'golden', 'dusk',
    'overcast', 'night'), lake, forest, snow (bools), ranges (how many), horizon_row,
    water_row (lake scenes), the masks snow_mask, tree_mask, water_mask [H, W] bool,
    cloud_alpha [H, W] float, and range_map [H, W] int8: the visible mountain range of each
    pixel (0 the farthest), -1 elsewhere."""
    img, info = _render_v2(seed, index, width, height)
    return dict(image=(np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), **info)


def scene(seed: int, index: int, width: int = 512, height: int = 256, style: str = "v2") -> np.ndarray:
    """Scene `index` of set `seed`: uint8 [height, width, 3]; style 'v2' (default) or 'v1'."""
    if style == "v1":
        return scene_v1(seed, index, width, height)
    if style != "v2":
        raise RequestError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    return scene_v2(seed, index, width, height)


# ---- writing sets, the contact sheet, the command line ----------------------------------------
def write_scenes(out: str | os.PathLike, count: int, seed: int = 0, width: int = 512, height: int = 256,
                 style: str = "v2") -> list[Path]:
    """Write scenes 0..count-1 as PNGs (scene_00000.png, ...) under `out`."""
    if count < 1:
        raise RequestError(f"count must be >= 1, got {count}")
    if style not in STYLES:
        raise RequestError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        path = out / f"scene_{k:05d}.png"
        tmp = path.with_name(f".{path.name}.tmp")
        Image.fromarray(scene(seed, k, width, height, style)).save(tmp, format="PNG")
        os.replace(tmp, path)
        paths.append(path)
    return paths


def contact_sheet(count: int = 24, seed: int = 0, style: str = "v2", columns: int = 4,
                  thumb: tuple[int, int] = (256, 128), width: int | None = None, height: int | None = None,
                  gap: int = 4) -> Image.Image:
    """Scenes 0..count-1 of set `seed` as a grid of thumb-sized images (rendered at
    width x height, default twice the thumbnail, then LANCZOS-reduced), `gap` white pixels apart."""
    if count < 1 or columns < 1:
        raise RequestError(f"count and columns must be >= 1, got {count} and {columns}")
    tw, th = thumb
    width, height = width or 2 * tw, height or 2 * th
    rows = -(-count // columns)
    sheet = Image.new("RGB", (columns * tw + (columns - 1) * gap, rows * th + (rows - 1) * gap), (255, 255, 255))
    for k in range(count):
        im = Image.fromarray(scene(seed, k, width, height, style))
        if im.size != (tw, th):
            im = im.resize((tw, th), Image.LANCZOS)
        sheet.paste(im, ((k % columns) * (tw + gap), (k // columns) * (th + gap)))
    return sheet


def save_contact_sheet(path: str | os.PathLike, count: int = 24, seed: int = 0, style: str = "v2",
                       palette: bool = True, **options) -> Path:
    """Write `contact_sheet(count, seed, style, **options)` as a PNG (atomically). With
    `palette` (the default) it is stored with 256 colours, Floyd-Steinberg dithered: about a
    third of the size of the RGB file (~0.3 MB for 24 thumbnails of 256x128)."""
    sheet = contact_sheet(count, seed, style, **options)
    if palette:
        sheet = sheet.quantize(palette=sheet.quantize(256, method=Image.Quantize.FASTOCTREE),
                               dither=Image.Dither.FLOYDSTEINBERG)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    sheet.save(tmp, format="PNG", optimize=True)
    os.replace(tmp, out)
    return out


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH, e.g. 256x128, got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return w, h


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m igan.trainer.scenes", description=__doc__.split("\n\n")[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", help="output folder: one PNG per scene")
    what.add_argument("--contact-sheet", metavar="PNG", help="write one PNG grid of the scenes instead")
    p.add_argument("--count", type=int, default=384)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--style", choices=STYLES, default="v2", help="v2 (default) or v1, the embedded model's data")
    p.add_argument("--width", type=int, default=None, help="default 512 (v2), 320 (v1)")
    p.add_argument("--height", type=int, default=256,
                   help="default 256 (contact sheet: scenes are rendered at twice the thumbnail and reduced)")
    p.add_argument("--columns", type=int, default=4, help="contact sheet: scenes per row")
    p.add_argument("--thumb", type=_size, default=(256, 128), help="contact sheet: thumbnail WxH (default 256x128)")
    p.add_argument("--rgb", action="store_true", help="contact sheet: full colour (default: 256 colours, dithered)")
    args = p.parse_args(argv)
    if args.count < 1:
        p.error(f"--count must be >= 1, got {args.count}")
    if args.contact_sheet:
        out = save_contact_sheet(args.contact_sheet, args.count, args.seed, args.style, palette=not args.rgb,
                                 columns=args.columns, thumb=args.thumb, width=args.width,
                                 height=args.height if args.width else None)
        print(f"wrote a contact sheet of {args.count} {args.style} scenes to {out} ({out.stat().st_size:,} bytes)")
        return 0
    width = args.width or (512 if args.style == "v2" else 320)
    write_scenes(args.out, args.count, args.seed, width, args.height, args.style)
    print(f"wrote {args.count} {args.style} scenes of {width}x{args.height} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
