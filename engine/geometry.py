"""Sizes, alignment and FLOPs of the padding-free generator: pure functions of the config.

Canvas convention. z_l cells and pixels are indexed by global integers. A forward pass on
the z_l window whose first cell is `c0` (per axis) produces the pixels whose first global
index is `upscale * c0`; layer i of the TS produces its grid starting at `step(i) * c0`.
The network is exactly translation-equivariant (all crops are constant), so any two
windows agree wherever they overlap: this is what makes tiling seamless.
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import GeneratorConfig
from .errors import RequestError, option


def ts_sizes(cfg: GeneratorConfig, n: int) -> list[int]:
    """Output sizes of the TS convs for a TS input of size n (11 -> 19,17,31,...,101)."""
    sizes = []
    for _ in range(cfg.num_stages):
        n = 2 * n - 3  # transposed conv (2n+1), crop 1 each side, 3x3 blur
        sizes.append(n)
        n = n - 2  # 3x3 valid conv
        sizes.append(n)
    return sizes


def ts_input_sizes(cfg: GeneratorConfig, n: int) -> list[int]:
    """Input sizes of the TS convs for a TS input of size n."""
    return [n] + ts_sizes(cfg, n)[:-1]


def ss_sizes(cfg: GeneratorConfig, n_z: int) -> list[int]:
    """Output sizes of the SS layers for a z_l window of size n_z."""
    k = cfg.ss_kernel - 1
    return [n_z - k * (l + 1) for l in range(cfg.ss_n_layers)] if cfg.use_ss else []


def output_size(cfg: GeneratorConfig, n_z: int) -> int:
    """Pixels produced from a z_l window of n_z cells (per axis): 2^U (n_z - 2 halo - 5) + 5."""
    return cfg.upscale * (n_z - 2 * cfg.ss_halo - 5) + 5


def min_latent_size(cfg: GeneratorConfig) -> int:
    """Smallest z_l window the padding-free layers accept (5 TS-input cells)."""
    return 2 * cfg.ss_halo + 5


def layer_steps(cfg: GeneratorConfig) -> list[int]:
    """Grid step of each TS conv output per z_l cell: [2, 2, 4, 4, 8, 8, ...]."""
    return [2 << (i // 2) for i in range(cfg.num_convs)]


def latent_window(cfg: GeneratorConfig, start: int, length: int) -> tuple[int, int, int]:
    """The z_l window covering pixels [start, start + length) along one axis.

    Returns (c0, n_z, offset): the first cell, the number of cells, and where the wanted
    pixels begin inside the window's output.
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")  # internal invariant
    up = cfg.upscale
    c0 = start // up
    offset = start - up * c0
    n_ts = 5 + max(0, -(-(offset + length - 5) // up))
    return c0, n_ts + 2 * cfg.ss_halo, offset


def pixel_extent(cfg: GeneratorConfig, c0: int, n: int) -> tuple[int, int] | None:
    """The longest pixel range (start, length) whose z_l window (latent_window) lies inside
    cells [c0, c0 + n): it starts on cell c0's first pixel and has 2^U (n - 2 halo - 5) + 5
    pixels; None when n cells render no pixel."""
    length = cfg.upscale * (n - 2 * cfg.ss_halo - 5) + 5
    return (c0 * cfg.upscale, length) if length >= 1 else None


def pixel_to_cell(cfg: GeneratorConfig, p: float) -> float:
    """The z_l cell (fractional) a canvas pixel is centred on: (p - 2)/2^U + 2 + halo."""
    return (p - 2) / cfg.upscale + 2 + cfg.ss_halo


def cell_to_pixel(cfg: GeneratorConfig, c: float) -> float:
    return (c - 2 - cfg.ss_halo) * cfg.upscale + 2


@dataclass(frozen=True)
class LayerShape:
    name: str
    c_in: int
    c_out: int
    kernel: int
    out_h: int
    out_w: int
    kind: str  # "ss", "up", "conv", "rgb"

    @property
    def macs(self) -> int:
        """Multiply-accumulates (a transposed stride-2 3x3 conv is counted per input pixel)."""
        if self.kind == "up":
            in_h, in_w = (self.out_h + 3) // 2, (self.out_w + 3) // 2
            return in_h * in_w * self.c_in * self.c_out * 9
        return self.out_h * self.out_w * self.c_in * self.c_out * self.kernel**2


def layer_shapes(cfg: GeneratorConfig, n_h: int, n_w: int) -> list[LayerShape]:
    """Every conv of a forward pass on an n_h x n_w z_l window, in execution order."""
    shapes = []
    c = cfg.local_latent_dim
    if cfg.use_ss:
        for l, (h, w) in enumerate(zip(ss_sizes(cfg, n_h), ss_sizes(cfg, n_w))):
            shapes.append(LayerShape(f"ss{l}", c + cfg.coord_num_dir, c, cfg.ss_kernel, h, w, "ss"))
    n0h, n0w = n_h - 2 * cfg.ss_halo, n_w - 2 * cfg.ss_halo
    for i, (h, w) in enumerate(zip(ts_sizes(cfg, n0h), ts_sizes(cfg, n0w))):
        c_out = cfg.stage_channels[i // 2]
        shapes.append(LayerShape(f"conv{i}", c, c_out, 3, h, w, "up" if i % 2 == 0 else "conv"))
        c = c_out
        if i % 2 == 1:
            shapes.append(LayerShape(f"rgb{i // 2}", c, 3, 1, h, w, "rgb"))
    return shapes


def forward_flops(cfg: GeneratorConfig, n_h: int, n_w: int, batch: int = 1) -> int:
    """FLOPs (2 per MAC) of the convolutions of one forward pass."""
    return 2 * batch * sum(s.macs for s in layer_shapes(cfg, n_h, n_w))


def activation_bytes(cfg: GeneratorConfig, n_h: int, n_w: int, batch: int, itemsize: int = 4) -> int:
    """Estimated peak bytes of the tensors alive during one forward pass: at each layer its
    input plus a few output-sized temporaries (upsampling: interleave buffer, two blur
    passes, output; 3x3 conv: output, noise add, activation)."""
    peak = 0
    c_prev, h_prev, w_prev = cfg.local_latent_dim + cfg.coord_num_dir, n_h, n_w
    for s in layer_shapes(cfg, n_h, n_w):
        if s.kind == "rgb":
            continue
        temporaries = 4 if s.kind == "up" else 3
        peak = max(peak, c_prev * h_prev * w_prev + temporaries * s.c_out * (s.out_h + 2) * (s.out_w + 2))
        c_prev, h_prev, w_prev = s.c_out, s.out_h, s.out_w
    return peak * batch * itemsize


def divup(a: int, b: int) -> int:
    return -(-a // b)


def check_positive(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RequestError(f"{option(name)} must be a positive integer, got {value!r}")
    return value


__all__ = [
    "LayerShape", "activation_bytes", "cell_to_pixel", "check_positive", "divup", "forward_flops",
    "latent_window", "layer_shapes", "layer_steps", "min_latent_size", "output_size", "pixel_extent", "pixel_to_cell",
    "ss_sizes", "ts_input_sizes", "ts_sizes",
]
