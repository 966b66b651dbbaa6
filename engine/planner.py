"""The planner: pure functions from a render request to tiles.

A request is a window (x0, y0, width, height) of the infinite canvas. It is cut into a
grid of tiles (multiples of 16 pixels, anchored at the window's top-left corner); each
tile carries its z_l window, which includes exactly the halo the padding-free layers
consume. All tiles share one compute shape (the last row and column are computed at full
size and cropped) so batches are static. The tile size comes from a memory budget unless
given; the plan reports its work ratio: FLOPs executed / FLOPs of the one-shot forward
that produces the whole window.
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import GeneratorConfig
from .errors import RequestError, option
from .geometry import activation_bytes, check_positive, divup, forward_flops, latent_window

TILE_ALIGN = 16
MAX_SIDE = 1 << 20  # pixels per side; beyond this a request is almost surely a mistake
_CONV_SCRATCH = 64 << 20  # banded conv scratch (ops._CPU_BAND_BYTES) plus slack


@dataclass(frozen=True)
class Window:
    x0: int
    y0: int
    width: int
    height: int

    def __post_init__(self):
        for name in ("width", "height"):
            check_positive(name, getattr(self, name))
            if getattr(self, name) > MAX_SIDE:
                raise RequestError(f"{option(name)} {getattr(self, name)} exceeds the limit of {MAX_SIDE} pixels per "
                                   "side")
        for name in ("x0", "y0"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or abs(v) > 1 << 34:
                raise RequestError(f"{option(name)} must be an integer with |{name}| <= 2^34, got {v!r}")

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class Tile:
    index: int  # row-major position in the grid
    row: int
    col: int
    x: int  # the tile's pixels, relative to the window's top-left corner
    y: int
    width: int
    height: int
    cell_row: int  # first z_l cell of the tile's latent window (canvas coordinates)
    cell_col: int
    offset_y: int  # where the tile's pixels start inside the latent window's output
    offset_x: int


@dataclass(frozen=True)
class Plan:
    config: GeneratorConfig
    window: Window
    tile_height: int
    tile_width: int
    latent_height: int  # z_l cells of every tile's window (compute shape)
    latent_width: int
    rows: int
    cols: int
    tiles: tuple[Tile, ...]
    flops_per_tile: int
    flops_oneshot: int
    batch: int = 1  # tiles per forward (a runner that pads batches pads a short one to this)

    @property
    def flops(self) -> int:
        return self.flops_per_tile * len(self.tiles)

    @property
    def work_ratio(self) -> float:
        return self.flops / self.flops_oneshot


def _axis(cfg: GeneratorConfig, start: int, size: int, tile: int):
    """Tile starts along one axis, the shared latent length and per-tile (c0, offset)."""
    tile = min(tile, divup(size, TILE_ALIGN) * TILE_ALIGN)
    starts = list(range(0, size, tile))
    windows = [latent_window(cfg, start + s, tile) for s in starts]
    n_z = max(w[1] for w in windows)
    return tile, starts, n_z, [(w[0], w[2]) for w in windows]


def _balanced(size: int, tile: int) -> int:
    """The smallest multiple of 16 that covers `size` in as few tiles as `tile` does, so the
    last tile is not mostly wasted work."""
    n = divup(size, tile)
    return divup(divup(size, n), TILE_ALIGN) * TILE_ALIGN


def check_tile(tile: int) -> int:
    if not isinstance(tile, int) or isinstance(tile, bool) or tile < TILE_ALIGN or tile % TILE_ALIGN:
        raise RequestError(f"{option('tile')} must be a positive multiple of {TILE_ALIGN} pixels, got {tile!r}")
    return tile


def tile_bytes(cfg: GeneratorConfig, tile: int, batch: int = 1, itemsize: int = 4) -> int:
    """Estimated peak memory of rendering a batch of tile x tile tiles."""
    _, n_z, _ = latent_window(cfg, 0, tile)
    n_z += 1  # worst case over offsets
    return activation_bytes(cfg, n_z, n_z, batch, itemsize) + _CONV_SCRATCH


def tile_for_budget(cfg: GeneratorConfig, budget_bytes: int, batch: int = 1, itemsize: int = 4,
                    largest: int = 8192) -> int:
    """The largest tile (multiple of 16, at most `largest`) whose batch fits the budget."""
    best = None
    tile = TILE_ALIGN
    while tile <= largest and tile_bytes(cfg, tile, batch, itemsize) <= budget_bytes:
        best = tile
        tile += TILE_ALIGN if tile < 256 else 64
    if best is None:
        need = tile_bytes(cfg, TILE_ALIGN, batch, itemsize)
        raise RequestError(f"{option('memory_budget')} {budget_bytes / 2**20:.0f} MiB is too small for the smallest "
                           f"tile ({TILE_ALIGN} px at {option('batch')} {batch} needs about {need / 2**20:.0f} MiB)")
    return best


def _axis_work(cfg: GeneratorConfig, start: int, size: int, tile: int) -> tuple[int, int]:
    """(tiles, z_l cells of each) along one axis for `tile`, as _axis computes them, without
    listing every tile: a tile's cells depend on its start modulo the cell size only."""
    tile = min(tile, divup(size, TILE_ALIGN) * TILE_ALIGN)
    count = divup(size, tile)
    n_z = max(latent_window(cfg, start + k * tile, tile)[1] for k in range(min(count, cfg.upscale)))
    return count, n_z


def least_work_tiles(cfg: GeneratorConfig, window: Window, budget_bytes: int, batch: int = 1,
                     itemsize: int = 4) -> tuple[int, int]:
    """(tile height, tile width), multiples of 16, whose batch fits `budget_bytes` and whose
    tiles do the least work (FLOPs of all tiles; the halo each tile recomputes and the cells a
    tile misaligned with the z_l grid wastes); among equal work the fewest tiles."""
    largest = tile_for_budget(cfg, budget_bytes, batch, itemsize,
                              divup(max(window.width, window.height), TILE_ALIGN) * TILE_ALIGN)
    sizes = range(TILE_ALIGN, largest + 1, TILE_ALIGN)
    rows = {t: _axis_work(cfg, window.y0, window.height, t) for t in sizes}
    cols = {t: _axis_work(cfg, window.x0, window.width, t) for t in sizes}
    best = None
    for th, (n_rows, n_h) in rows.items():
        for tw, (n_cols, n_w) in cols.items():
            if activation_bytes(cfg, n_h, n_w, batch, itemsize) + _CONV_SCRATCH > budget_bytes:
                continue
            key = (n_rows * n_cols * forward_flops(cfg, n_h, n_w), n_rows * n_cols, -th, -tw)
            if best is None or key < best[0]:
                best = (key, th, tw)
    if best is None:
        return largest, largest
    return best[1], best[2]


def plan(cfg: GeneratorConfig, window: Window, *, tile: int | tuple[int, int] | None = None, batch: int = 1,
         memory_budget: int | None = None, itemsize: int = 4, tiles: str = "least-work") -> Plan:
    """Cut `window` into tiles: of `tile` pixels (or (height, width)) if given, else the
    least-work tiles that fit `memory_budget` bytes (default 2 GiB) at this batch size
    (`least_work_tiles`); with tiles="0.4", igan 0.3-0.4's choice (the largest square tile
    that fits, shrunk per axis to split the window evenly), which the fast-0.4 CPU path's
    bytes depend on."""
    check_positive("batch", batch)
    if tile is None and tiles == "0.4":
        largest = divup(max(window.width, window.height), TILE_ALIGN) * TILE_ALIGN
        tile = tile_for_budget(cfg, memory_budget or 2 << 30, batch, itemsize, largest)
        tile_h, tile_w = _balanced(window.height, tile), _balanced(window.width, tile)
    elif tile is None:
        tile_h, tile_w = least_work_tiles(cfg, window, memory_budget or 2 << 30, batch, itemsize)
    elif isinstance(tile, tuple):
        tile_h, tile_w = (check_tile(t) for t in tile)
    else:
        tile_h = tile_w = check_tile(tile)
    th, ys, n_h, rows = _axis(cfg, window.y0, window.height, tile_h)
    tw, xs, n_w, cols = _axis(cfg, window.x0, window.width, tile_w)
    tiles = []
    for r, (y, (cr, oy)) in enumerate(zip(ys, rows)):
        for c, (x, (cc, ox)) in enumerate(zip(xs, cols)):
            tiles.append(Tile(len(tiles), r, c, x, y, min(tw, window.width - x), min(th, window.height - y),
                              cr, cc, oy, ox))
    one_h = latent_window(cfg, window.y0, window.height)[1]
    one_w = latent_window(cfg, window.x0, window.width)[1]
    return Plan(cfg, window, th, tw, n_h, n_w, len(ys), len(xs), tuple(tiles),
                forward_flops(cfg, n_h, n_w), forward_flops(cfg, one_h, one_w), batch)
