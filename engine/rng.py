"""The canvas's random numbers: every value is a pure function of (seed, stream, channel, row,
column), computed per window with a counter-based generator (latent.py builds the canvas's
latents, noises and coordinates from them).

Two generators draw the normal values, selected by name (`LatentField(..., rng=...)`, see
LATENT_RNGS; each has a version string, LATENT_RNG_VERSIONS, to record with an output):

- "v1" (`hash_normal`, "igan-hash-v1"): a 32-bit hash chain over (seed, stream, channel,
  row, column). Its column index is XORed into one 32-bit row hash, so (channel, row) pairs
  whose row hashes differ only in the low 4 bits repeat each other's values, permuted within
  16-column blocks; kept, bit for bit, for the outputs already made with it.
- "philox" (`philox_normal`, "philox4x32-10/v1"): Philox4x32-10 (Random123; the generator
  of CUDA's curand and JAX) keyed by the seed, with (column, row, channel, stream) as the
  128-bit counter: one counter per value, and for one seed distinct counters give distinct
  outputs (the block function is a bijection for a fixed key).

Both end in a Box-Muller transform whose log and cosine are evaluated with fixed
polynomials in float32 (+, *, / only, correctly rounded in IEEE 754, and a sqrt corrected
to be correctly rounded), so the bits are the same on CPU and GPU, for any window, in any
order and with any number of threads. All integer arithmetic
stays below 2^63 in int64 (32x16-bit partial products), so nothing relies on overflow.
"""
from __future__ import annotations

import math

import torch

from .errors import RequestError

MASK32 = 0xFFFFFFFF
STREAM_GLOBAL = 1
STREAM_LOCAL = 2
STREAM_NOISE = 16  # + layer index
_SALT = 0x1C6A9D3B
_OUT2 = 0x68E31DA4


def _mul32(x, c: int):
    """(x * c) mod 2^32 for 0 <= x < 2^32, without leaving int64 (or for Python ints)."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & MASK32


def _mix32(x):
    """A 32-bit bijective integer hash (two multiply-xorshift rounds)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x21F0AAAD)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x735A2D97)
    return x ^ (x >> 15)


def _check_seed(seed) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise RequestError(f"seed must be an integer in [0, 2^63), got {seed!r}")


def _key(seed: int, stream: int) -> int:
    _check_seed(seed)
    h = _mix32(_SALT ^ (seed & MASK32))
    h = _mix32(h ^ (seed >> 32))
    return _mix32(h ^ stream)


def _log_unit(u: torch.Tensor) -> torch.Tensor:
    """log(u) for u in (0, 1] (normal floats), float32, from +, *, / only."""
    bits = u.view(torch.int32)
    e = (bits >> 23) - 127
    m = ((bits & 0x7FFFFF) | 0x3F800000).view(torch.float32)  # mantissa in [1, 2)
    big = m > 1.4142135
    m = torch.where(big, m * 0.5, m)
    e = e + big.to(torch.int32)
    f = m - 1.0
    s = f / (f + 2.0)
    s2 = s * s
    poly = s2 * (1 / 3 + s2 * (1 / 5 + s2 * (1 / 7 + s2 * (1 / 9 + s2 * (1 / 11)))))
    return e.to(torch.float32) * 0.6931472 + (2.0 * s + 2.0 * s * poly)


def _sqrt_exact(x: torch.Tensor) -> torch.Tensor:
    """Correctly rounded float32 sqrt of x >= 0. torch's vectorised CPU sqrt is not
    (measured: 0.7% of values 1 ulp off, while the scalar tail path is exact), so the bits
    would depend on where a value falls in a thread's chunk. A float64 estimate, rounded,
    is corrected against the exact squares of the neighbouring midpoints (25-bit numbers,
    exact in float64)."""
    xd = x.double()
    r = torch.sqrt(xd).float()
    up = torch.nextafter(r, torch.full_like(r, float("inf")))
    r = torch.where(((r.double() + up.double()) * 0.5) ** 2 < xd, up, r)
    down = torch.nextafter(r, torch.zeros_like(r))
    return torch.where(((r.double() + down.double()) * 0.5) ** 2 > xd, down, r)


def _cos_turn(b: torch.Tensor) -> torch.Tensor:
    """cos(2 pi b / 2^32) for 32-bit integers b, float32, from +, * only."""
    quadrant = b >> 30
    a = ((b >> 8) & 0x3FFFFF).to(torch.float32) * (math.pi / 2 / 2**22)  # in [0, pi/2)
    a2 = a * a
    c = 1.0 + a2 * (-1 / 2 + a2 * (1 / 24 + a2 * (-1 / 720 + a2 * (1 / 40320 + a2 * (
        -1 / 3628800 + a2 * (1 / 479001600 + a2 * (-1 / 87178291200)))))))
    s = a * (1.0 + a2 * (-1 / 6 + a2 * (1 / 120 + a2 * (-1 / 5040 + a2 * (1 / 362880 + a2 * (
        -1 / 39916800 + a2 * (1 / 6227020800 + a2 * (-1 / 1307674368000))))))))
    return torch.where(quadrant == 0, c, torch.where(quadrant == 1, -s, torch.where(quadrant == 2, -c, s)))


def _mul32_(x: torch.Tensor, c: int, tmp: torch.Tensor) -> None:
    """In-place _mul32 on an int64 tensor (tmp: scratch of the same shape)."""
    torch.mul(x, c >> 16, out=tmp)
    tmp.bitwise_and_(0xFFFF).bitwise_left_shift_(16)
    x.mul_(c & 0xFFFF).add_(tmp).bitwise_and_(MASK32)


def _mix32_(x: torch.Tensor, tmp: torch.Tensor) -> None:
    """In-place _mix32 (the same function, without temporaries)."""
    for shift, mul in ((16, 0x21F0AAAD), (15, 0x735A2D97)):
        x.bitwise_xor_(torch.bitwise_right_shift(x, shift, out=tmp))
        _mul32_(x, mul, tmp)
    x.bitwise_xor_(torch.bitwise_right_shift(x, 15, out=tmp))


# Elements per step: on CPU small enough that the int64 temporaries stay in cache; on a GPU
# large, so that a window takes a handful of launches.
_CHUNK = {"cpu": 1 << 16}
_CHUNK_DEFAULT = 1 << 24


def hash_normal(seed: int, stream: int, channels: torch.Tensor, rows: torch.Tensor,
                cols: torch.Tensor) -> torch.Tensor:
    """N(0, 1) float32 values [C, R, W] at int64 indices channels [C] x rows [R] x cols [W]:
    the "v1" generator ("igan-hash-v1"; unchanged, see the module docstring for its flaw).

    Rows and columns may be negative (|index| < 2^31); the value at an index never
    depends on the other indices asked for at the same time.
    """
    c, r, w = channels.numel(), rows.numel(), cols.numel()
    h_rows = _mix32(_mix32(channels.reshape(c, 1) ^ _key(seed, stream)) ^ (rows.reshape(1, r) & MASK32))
    h_rows = h_rows.reshape(c * r, 1)
    cols = cols.reshape(1, w) & MASK32
    out = torch.empty(c * r, w, dtype=torch.float32, device=channels.device)
    step = max(1, _CHUNK.get(channels.device.type, _CHUNK_DEFAULT) // max(1, w))
    for a in range(0, c * r, step):
        h = h_rows[a:a + step] ^ cols
        tmp = torch.empty_like(h)
        _mix32_(h, tmp)
        u = ((h >> 8) + 1).to(torch.float32).mul_(2.0**-24)  # (0, 1]
        radius = _sqrt_exact(_log_unit(u).mul_(-2.0))
        _mix32_(h.bitwise_xor_(_OUT2), tmp)
        out[a:a + step] = radius * _cos_turn(h)
    return out.reshape(c, r, w)


# ---- Philox4x32-10 -----------------------------------------------------------------------------
PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57  # round multipliers (Random123 PHILOX_M4x32_0/1)
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85  # key schedule increments (PHILOX_W32_0/1)
PHILOX_ROUNDS = 10


def _mulhilo(a, m: int):
    """(hi, lo) 32-bit halves of a * m for 0 <= a, m < 2^32, in int64 without overflow: m is
    split into 16-bit halves, so the partial products stay below 2^48 and their sum below 2^49."""
    x = a * (m & 0xFFFF)
    t = a * (m >> 16) + (x >> 16)  # a * m = t * 2^16 + (x & 0xFFFF)
    return t >> 16, ((t & 0xFFFF) << 16) | (x & 0xFFFF)


def _philox_round(c0, c1, c2, c3, k0: int, k1: int):
    hi0, lo0 = _mulhilo(c0, PHILOX_M0)
    hi1, lo1 = _mulhilo(c2, PHILOX_M1)
    return hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0


def philox4x32_10(c0, c1, c2, c3, k0: int, k1: int):
    """The Philox4x32-10 block function of Random123 (philox4x32_R with R = 10), words in
    Random123's order: counter (c0, c1, c2, c3), key (k0, k1), result (w0, w1, w2, w3).

    Counter words are int64 tensors (broadcast against each other) or Python ints in
    [0, 2^32); key words are Python ints in [0, 2^32). Exact integer arithmetic only, so the
    result is the same on every device. Round i (0-based) uses the key (k0 + i W0, k1 + i W1)
    mod 2^32."""
    for k in (k0, k1):
        if not 0 <= k <= MASK32:
            raise ValueError(f"Philox key words must be in [0, 2^32), got {k!r}")  # internal invariant
    c = (c0, c1, c2, c3)
    for i in range(PHILOX_ROUNDS):
        c = _philox_round(*c, (k0 + i * PHILOX_W0) & MASK32, (k1 + i * PHILOX_W1) & MASK32)
    return c


def _mulhilo_(a: torch.Tensor, m: int, lo: torch.Tensor, tmp: torch.Tensor) -> None:
    """In-place _mulhilo: a <- hi(a * m), lo <- lo(a * m) (tmp: scratch; all of a's shape)."""
    torch.mul(a, m & 0xFFFF, out=lo)
    a.mul_(m >> 16).add_(torch.bitwise_right_shift(lo, 16, out=tmp))
    lo.bitwise_and_(0xFFFF).bitwise_or_(torch.bitwise_and(a, 0xFFFF, out=tmp).bitwise_left_shift_(16))
    a.bitwise_right_shift_(16)


def _philox_w01(c0, c1, c2, c3, k0: int, k1: int):
    """Words w0, w1 of philox4x32_10 for counters c0 [1, W], c1, c2 [S, 1], c3 (an int).

    The first two rounds run out of place, on the broadcast shapes (round 0 only on vectors);
    they leave c0 and c2 full [S, W] new tensors, and the remaining rounds update those in
    place, recycling the two words each round frees; the last round's second multiply (for
    w2, w3) is skipped. The same integer operations as philox4x32_10, so the same bits."""
    def key(i):
        return (k0 + i * PHILOX_W0) & MASK32, (k1 + i * PHILOX_W1) & MASK32

    c = (c0, c1, c2, c3)
    for i in range(2):
        c = _philox_round(*c, *key(i))
    c0, c1, c2, c3 = c
    tmp = torch.empty_like(c0)
    spare = None
    for i in range(2, PHILOX_ROUNDS - 1):
        lo0, lo1 = spare or (torch.empty_like(c0), torch.empty_like(c0))
        ki0, ki1 = key(i)
        _mulhilo_(c0, PHILOX_M0, lo0, tmp)
        _mulhilo_(c2, PHILOX_M1, lo1, tmp)
        c2.bitwise_xor_(c1).bitwise_xor_(ki0)
        c0.bitwise_xor_(c3).bitwise_xor_(ki1)
        # the words this round freed: from round 3 on, full lo buffers of the round before
        spare = (c1, c3) if i > 2 else None
        c0, c1, c2, c3 = c2, lo1, c0, lo0
    lo1 = spare[0]
    _mulhilo_(c2, PHILOX_M1, lo1, tmp)
    return c2.bitwise_xor_(c1).bitwise_xor_(key(PHILOX_ROUNDS - 1)[0]), lo1


def philox_key(seed: int) -> tuple[int, int]:
    """The Philox key of a seed: its 64 bits, low word first (k0 = seed mod 2^32,
    k1 = seed >> 32); distinct seeds, distinct keys."""
    _check_seed(seed)
    return seed & MASK32, seed >> 32


def _box_muller(w0: torch.Tensor, w1: torch.Tensor) -> torch.Tensor:
    """sqrt(-2 log u) cos(2 pi w1 / 2^32) with u = (floor(w0 / 2^8) + 1) / 2^24 in (0, 1],
    float32, from the exact helpers (the transform of hash_normal)."""
    u = ((w0 >> 8) + 1).to(torch.float32).mul_(2.0**-24)
    return _sqrt_exact(_log_unit(u).mul_(-2.0)).mul_(_cos_turn(w1))


def philox_normal(seed: int, stream: int, channels: torch.Tensor, rows: torch.Tensor,
                  cols: torch.Tensor) -> torch.Tensor:
    """N(0, 1) float32 values [C, R, W] at int64 indices channels [C] x rows [R] x cols [W]:
    the "philox" generator, version "philox4x32-10/v1".

    The value at (seed, stream, channel, row, col) is, exactly:

        key     = (seed mod 2^32, seed >> 32)                       (seed in [0, 2^63))
        counter = (col mod 2^32, row mod 2^32, channel, stream)     (words c0, c1, c2, c3)
        w0, w1, w2, w3 = Philox4x32-10(counter, key)                (Random123 word order)
        u       = (floor(w0 / 2^8) + 1) / 2^24                      (in (0, 1], exact in float32)
        value   = sqrt(-2 log u) * cos(2 pi w1 / 2^32)              (float32: _box_muller)

    Rows and columns may be negative (|index| < 2^31; taken mod 2^32, two's complement),
    channels are in [0, 2^32), stream in [0, 2^32); w2 and w3 are unused (reserved). The
    value at an index never depends on the other indices asked for at the same time, on the
    device, on chunking or on threads. Changing any of this is a new version.
    """
    k0, k1 = philox_key(seed)
    if not isinstance(stream, int) or not 0 <= stream <= MASK32:
        raise RequestError(f"stream must be an integer in [0, 2^32), got {stream!r}")
    c, r, w = channels.numel(), rows.numel(), cols.numel()
    if c and not (0 <= int(channels.min()) and int(channels.max()) <= MASK32):
        raise RequestError("channels must be in [0, 2^32)")
    ch = channels.reshape(c, 1).expand(c, r).reshape(c * r, 1)
    rw = (rows.reshape(1, r) & MASK32).expand(c, r).reshape(c * r, 1)
    cols = cols.reshape(1, w) & MASK32
    out = torch.empty(c * r, w, dtype=torch.float32, device=channels.device)
    step = max(1, _CHUNK.get(channels.device.type, _CHUNK_DEFAULT) // max(1, w))
    for a in range(0, c * r, step):
        # [1, W] and [rows, 1] words broadcast: the first two rounds run partly on vectors
        w0, w1 = _philox_w01(cols, rw[a:a + step], ch[a:a + step], stream, k0, k1)
        out[a:a + step] = _box_muller(w0, w1)
    return out.reshape(c, r, w)


# ---- generator registry ------------------------------------------------------------------------
LATENT_RNGS = {"v1": hash_normal, "philox": philox_normal}  # versions: provenance.LATENT_RNG_VERSIONS


def latent_rng(name: str):
    """The normal generator called `name` (a key of LATENT_RNGS)."""
    try:
        return LATENT_RNGS[name]
    except (KeyError, TypeError):
        raise RequestError(f"unknown latent generator {name!r}; choose one of {sorted(LATENT_RNGS)}") from None
