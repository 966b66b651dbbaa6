"""Multi-scale sliced Wasserstein distance (SWD): ProGAN's patch-statistics metric (Karras,
Aila, Laine, Lehtinen, *Progressive Growing of GANs*, ICLR 2018, section 5 and appendix D),
in numpy, seeded and deterministic. It needs no downloaded network, so it can compare a
model with its procedural training scenes anywhere.

Both sets are uint8 images of one shape [N, H, W, 3]:

1. **Laplacian pyramid.** G0 = the image (float, 0..255); G(k+1) = pyrDown(Gk): the 5x5
   binomial filter ([1 4 6 4 1] / 16 separable, edges mirrored without repeating the edge
   pixel, as cv2), every second pixel. Level k = Gk - pyrUp(G(k+1)) (zeros inserted, the same
   filter x 4); the coarsest level is the Gaussian itself. Levels go down while the smaller
   side stays >= `min_res` (16): 256 -> 128 -> 64 -> 32 -> 16 for 256x256 images; 320x256
   gives 320x256 ... 20x16; 101x101 gives 101, 51, 26.
2. **Descriptors.** Per level, `nhoods` (128) random 7x7 neighbourhoods per image (whole
   patches only), 147 numbers each. The positions are drawn from `seed` and the level, and are
   the same for both sets (common random numbers): a set compared with itself gives exactly 0,
   and two sets are compared at the same spread of positions.
3. **Normalisation.** Each set's descriptors at a level are normalised per colour channel by
   that set's own mean and standard deviation over all its patches and pixels (`norm="each"`:
   ProGAN's choice). So a per-channel gain or offset of the whole set (a uniform colour cast,
   a brightness change) is invisible by design, while changes of local structure, texture,
   sharpness, colour correlations (hue, saturation) and of how patches vary are seen.
   `norm="reference"` normalises both sets by the first (reference, usually the real) set's
   statistics instead, which also sees colour casts.
4. **Sliced Wasserstein distance.** `repeats` (4) times, `dirs` (512) random unit directions
   in the 147-dimensional space (from `seed`); both sets are projected, each projection is
   sorted, and the mean absolute difference of the sorted values is the 1-D Wasserstein-1
   distance; averaged over all directions and repeats.
5. **Report.** SWD x 1e3 per level (finest first) and the average over levels. Lower is
   closer; 0 for identical sets. The finest level measures fine detail (edges, grain, noise),
   the coarsest the layout and large colour regions.

Values depend on N, the image size, the patch count and the seed: compare runs made with the
same settings only. With few images the distance has a noise floor: two independent samples
of the same distribution are not at 0 (`diversity` reports it as the SWD between the two
halves of the real set). For two independent sets of v2 scenes at 101x101 the average was
40 with 64 images and 19 with 256: use a few hundred images to tell close models apart.

Command line (`igan-eval swd`, or `python -m igan.trainer.eval.swd` with the same options):
renders N images from a model (canvases SEED..SEED+N-1, centred on the horizon) and compares
them with N reference images, e.g. held-out procedural scenes, printing the SWD per level, the
average and the two diversity figures of both sets:

    igan-eval swd --checkpoint default --real scenes:v1:1000:320x256 --count 64
    igan-eval swd --checkpoint runs/v2/model.safetensors --real scenes:v2:1000 --size 101x101
    igan-eval swd --fake renders/ --real photos/ --size 256x256 --json swd.json
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from igan.engine.errors import PathError, RequestError

NHOODS = 128
NHOOD_SIZE = 7
DIRS = 512
REPEATS = 4
MIN_RES = 16
_BINOMIAL = np.array([1.0, 4.0, 6.0, 4.0, 1.0], np.float32) / 16.0
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


# ---- the metric -----------------------------------------------------------------------------
def _filter(x: np.ndarray, axis: int, kernel: np.ndarray) -> np.ndarray:
    """5-tap filter along `axis` of x, edges mirrored without repeating the edge (reflect-101)."""
    n = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (2, 2)
    if n < 3:  # too short to mirror by 2: repeat the edge instead
        p = np.pad(x, pad, mode="edge")
    else:
        p = np.pad(x, pad, mode="reflect")
    out = None
    for i, k in enumerate(kernel):
        index = [slice(None)] * x.ndim
        index[axis] = slice(i, i + n)
        term = p[tuple(index)] * k
        out = term if out is None else out + term
    return out


def pyr_down(x: np.ndarray) -> np.ndarray:
    """[N, H, W, C] -> [N, ceil(H/2), ceil(W/2), C]: binomial blur, every second pixel (cv2.pyrDown)."""
    return _filter(_filter(x, 1, _BINOMIAL), 2, _BINOMIAL)[:, ::2, ::2]


def pyr_up(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """[N, h, w, C] -> [N, H, W, C] (H <= 2h, W <= 2w): zeros inserted, blurred x 4 (cv2.pyrUp)."""
    n, h, w, c = x.shape
    z = np.zeros((n, 2 * h, 2 * w, c), x.dtype)
    z[:, ::2, ::2] = x
    z = _filter(_filter(z, 1, _BINOMIAL * 2), 2, _BINOMIAL * 2)
    return z[:, :shape[0], :shape[1]]


def level_sizes(height: int, width: int, min_res: int = MIN_RES) -> list[tuple[int, int]]:
    """(H, W) of each pyramid level, finest first: halving (rounding up) while the smaller side
    of the next level stays >= min_res."""
    if min(height, width) < NHOOD_SIZE:
        raise RequestError(f"images must be at least {NHOOD_SIZE}x{NHOOD_SIZE} pixels, got {width}x{height}")
    sizes = [(height, width)]
    while min(-(-sizes[-1][0] // 2), -(-sizes[-1][1] // 2)) >= max(min_res, NHOOD_SIZE):
        sizes.append((-(-sizes[-1][0] // 2), -(-sizes[-1][1] // 2)))
    return sizes


def laplacian_pyramid(images: np.ndarray, levels: int):
    """Yield the `levels` Laplacian levels of uint8/float images [N, H, W, 3], finest first, as
    float32; the last one is the Gaussian level itself."""
    g = np.asarray(images, np.float32)
    for k in range(levels):
        if k == levels - 1:
            yield g
            return
        down = pyr_down(g)
        yield g - pyr_up(down, g.shape[1:3])
        g = down


def patch_positions(n: int, size: tuple[int, int], nhoods: int, seed: int, level: int):
    """Centres (ys, xs), each [n, nhoods], of whole 7x7 patches: a function of (seed, level)."""
    r = NHOOD_SIZE // 2
    rng = np.random.default_rng([seed, 1, level])
    ys = rng.integers(r, size[0] - r, (n, nhoods))
    xs = rng.integers(r, size[1] - r, (n, nhoods))
    return ys, xs


def descriptors(level: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The 7x7x3 neighbourhoods of one level at (ys, xs): [n * nhoods, 7, 7, 3] float64."""
    r = NHOOD_SIZE // 2
    d = np.arange(-r, r + 1)
    img = np.arange(level.shape[0])[:, None, None, None]
    yy = ys[:, :, None, None] + d[None, None, :, None]
    xx = xs[:, :, None, None] + d[None, None, None, :]
    return level[img, yy, xx].reshape(-1, NHOOD_SIZE, NHOOD_SIZE, level.shape[-1]).astype(np.float64)


def normalise(desc: np.ndarray, stats: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Per-channel standardisation of descriptors [M, 7, 7, C] by `stats` (mean, std) or their
    own, flattened to [M, 49 C]."""
    mean, std = stats if stats is not None else channel_stats(desc)
    return ((desc - mean) / std).reshape(desc.shape[0], -1)


def channel_stats(desc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = desc.mean(axis=(0, 1, 2))
    std = desc.std(axis=(0, 1, 2))
    return mean, np.where(std > 1e-8, std, 1.0)  # a flat channel stays 0, not NaN


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, dirs: int = DIRS, repeats: int = REPEATS,
                       seed: int = 0, level: int = 0) -> float:
    """Mean over `repeats` x `dirs` random unit directions of the 1-D Wasserstein-1 distance
    between the projections of a and b ([M, D] each, the same M)."""
    if a.ndim != 2 or a.shape != b.shape:
        raise RequestError(f"descriptor sets must have one shape [M, D], got {a.shape} and {b.shape}")
    rng = np.random.default_rng([seed, 2, level])
    results = []
    for _ in range(repeats):
        d = rng.standard_normal((a.shape[1], dirs))
        d /= np.sqrt(np.sum(d * d, axis=0, keepdims=True))
        pa = np.sort((a @ d).T, axis=1)  # [dirs, M]: sorted along the contiguous axis
        pb = np.sort((b @ d).T, axis=1)
        results.append(np.mean(np.abs(pa - pb)))
    return float(np.mean(results))


@dataclass
class SWDResult:
    levels: dict[str, float]  # "WxH" of the level -> SWD x 1e3, finest first
    average: float  # the mean over levels (x 1e3)
    settings: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(swd_levels=self.levels, swd_avg=self.average, **self.settings)


def swd(real: np.ndarray, fake: np.ndarray, *, nhoods: int = NHOODS, dirs: int = DIRS, repeats: int = REPEATS,
        min_res: int = MIN_RES, seed: int = 0, norm: str = "each") -> SWDResult:
    """Multi-scale SWD x 1e3 between two image sets uint8 [N, H, W, 3] of one shape (see the
    module's docstring). `real` is the reference for norm="reference"; otherwise symmetric."""
    real, fake = np.asarray(real), np.asarray(fake)
    if real.ndim != 4 or real.shape[-1] != 3 or real.shape != fake.shape:
        raise RequestError(f"image sets must be [N, H, W, 3] of one shape, got {real.shape} and {fake.shape}")
    if norm not in ("each", "reference"):
        raise RequestError(f"norm must be 'each' or 'reference', got {norm!r}")
    for name, value in dict(nhoods=nhoods, dirs=dirs, repeats=repeats).items():
        if not isinstance(value, int) or value < 1:
            raise RequestError(f"{name} must be a positive integer, got {value!r}")
    n, h, w, _ = real.shape
    sizes = level_sizes(h, w, min_res)
    out = {}
    for k, (lr, lf) in enumerate(zip(laplacian_pyramid(real, len(sizes)), laplacian_pyramid(fake, len(sizes)))):
        ys, xs = patch_positions(n, lr.shape[1:3], nhoods, seed, k)
        dr, df = descriptors(lr, ys, xs), descriptors(lf, ys, xs)
        stats = channel_stats(dr)
        a = normalise(dr, stats)
        b = normalise(df, stats if norm == "reference" else None)
        out[f"{lr.shape[2]}x{lr.shape[1]}"] = 1e3 * sliced_wasserstein(a, b, dirs, repeats, seed, k)
    settings = dict(count=n, size=f"{w}x{h}", nhoods=nhoods, nhood_size=NHOOD_SIZE, dirs=dirs, repeats=repeats,
                    min_res=min_res, seed=seed, norm=norm)
    return SWDResult(out, float(np.mean(list(out.values()))), settings)


def diversity(images: np.ndarray, **swd_options) -> dict:
    """Two figures of how much a set varies from image to image (uint8 [N, H, W, 3], N >= 2):

    * pixel_std: the standard deviation across the set of each pixel and channel, averaged
      over pixels and channels, in 0..255 units. 0 when every image is the same (a model that
      ignores its seed); compare with the same figure of the real set.
    * swd_halves: the multi-scale SWD average between the first and the second half of the
      set. For the real set it is the metric's noise floor at N/2 images; a generated set far
      below the real floor varies less than the data (mode collapse), one far above varies
      more, or is a mixture of different kinds of image. It is itself noisy at small N: two
      sets of 64 v2 scenes (seeds 0 and 1000) gave 86 and 45 at 101x101; 256 scenes gave 24
      and 21.

    pixel_std is the more direct figure of seed-to-seed variety: the embedded model's 64
    renders of 101x101 have 13.8 where its v1 training scenes have 35."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] < 2:
        raise RequestError(f"diversity needs a set [N >= 2, H, W, 3], got shape {images.shape}")
    half = images.shape[0] // 2
    pixel_std = float(images.astype(np.float64).std(axis=0).mean())
    halves = swd(images[:half], images[half:2 * half], **swd_options)
    return dict(pixel_std=pixel_std, swd_halves=halves.average, swd_halves_levels=halves.levels)


# ---- image sets ------------------------------------------------------------------------------
def fit(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Centre crop to the aspect of size (W, H), then LANCZOS to it: uint8 [H, W, 3] (for a
    square size: the trainer's centre square crop and resize, data.load_square)."""
    image = image.convert("RGB")
    w, h = image.size
    tw, th = size
    if w * th > h * tw:  # too wide
        cw, ch = max(1, round(h * tw / th)), h
    else:
        cw, ch = w, max(1, round(w * th / tw))
    left, top = (w - cw) // 2, (h - ch) // 2
    image = image.crop((left, top, left + cw, top + ch))
    if image.size != (tw, th):
        image = image.resize((tw, th), Image.LANCZOS)
    return np.asarray(image)


def parse_scenes(spec: str) -> tuple[str, int, tuple[int, int] | None]:
    """'scenes:STYLE:SEED[:WxH]' -> (style, seed, native size or None)."""
    parts = spec.split(":")
    if len(parts) not in (3, 4) or parts[0] != "scenes":
        raise RequestError(f"expected scenes:STYLE:SEED or scenes:STYLE:SEED:WxH, got {spec!r}")
    from igan.trainer.scenes import STYLES

    if parts[1] not in STYLES:
        raise RequestError(f"scene style must be one of {', '.join(STYLES)}, got {parts[1]!r} in {spec!r}")
    try:
        seed = int(parts[2])
    except ValueError:
        raise RequestError(f"scene seed must be an integer, got {parts[2]!r} in {spec!r}") from None
    return parts[1], seed, (parse_size(parts[3]) if len(parts) == 4 else None)


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (W, H)."""
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise RequestError(f"expected a size WxH such as 256x256, got {text!r}") from None
    if w < 1 or h < 1:
        raise RequestError(f"sizes must be positive, got {text!r}")
    return w, h


def load_set(source: str, count: int, size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """`count` images fitted to size (W, H) from a folder (the first in sorted order) or from
    'scenes:STYLE:SEED[:WxH]' (scenes 0..count-1 of that seed, rendered at WxH, default 512x256
    for v2 and 320x256 for v1, the training commands' sizes). Returns (uint8 [N, H, W, 3], a
    description)."""
    if source.startswith("scenes:"):
        from igan.trainer.scenes import scene

        style, seed, native = parse_scenes(source)
        native = native or ((512, 256) if style == "v2" else (320, 256))
        imgs = [fit(Image.fromarray(scene(seed, k, native[0], native[1], style)), size) for k in range(count)]
        return np.stack(imgs), f"scenes {style}, seed {seed}, {native[0]}x{native[1]}"
    folder = Path(source)
    if not folder.is_dir():
        raise PathError(f"{source!r} is neither a folder of images nor scenes:STYLE:SEED")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if len(files) < count:
        raise PathError(f"{source!r} holds {len(files)} images, fewer than the {count} asked for")
    imgs = []
    for p in files[:count]:
        try:
            with Image.open(p) as im:
                imgs.append(fit(im, size))
        except OSError as e:
            raise PathError(f"cannot read image {str(p)!r}: {e}") from e
    return np.stack(imgs), f"folder {source} ({count} of {len(files)})"


def render_set(model, count: int, size: tuple[int, int], seed: int) -> np.ndarray:
    """Images of canvases seed .. seed+count-1 (each size (W, H), centred on the horizon)."""
    return np.stack([model.render(size[0], size[1], seed=seed + i, array=True) for i in range(count)])


if __name__ == "__main__":  # python -m igan.trainer.eval.swd ARGS is igan-eval swd ARGS (the printing
    import runpy  # lives in the command-line layer, igan.trainer.eval.cli)

    sys.argv[1:1] = ["swd"]
    runpy.run_module("igan.trainer.eval.cli", run_name="__main__", alter_sys=True)
