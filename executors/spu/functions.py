"""SQL's scalar functions on shares: secure kernels the SPU stage (`stage.Stage._ev`) calls.

Protocols are plain functions over `ArithShare`s of the session's ring, as in CrypTen's
`crypten/mpc/primitives` and `crypten/common/functions`: the randomness comes from the session's
dealer, the bytes through its channel. Each docstring states its rounds and its accuracy.

Exactness comes from bit decomposition (`boolean.a2b_many`, a carry-lookahead adder over XOR
shares), not from the probabilistic truncation of `arith.truncate` (whose result may be one unit
off): FLOOR, CEIL and ROUND must land on the right integer, and a DECIMAL stays exact.

  kernel             rounds (2 parties)               result
  floor_pow2         a2b (8) + 1 (B2A)                floor(x / 2^k), exact
  floor_fixed        floor_pow2                       FLOOR of fixed point, exact on the encoding
  round_fixed        2 x floor_pow2 + 2 products      half away from zero (DuckDB), exact on the encoding
  floor_div_public   (1 + splits) x floor_pow2 + 1 compare     floor(x / c) for a public c, exact
  round_div_public   floor_div_public + 1 a2b + 2 products     x / c rounded half away from zero, exact

The fixed-point error of a FLOOR / CEIL / ROUND of a DOUBLE is the encoding's (the input is
round(x * 2^F) / 2^F, |error| <= 2^-(F+1)), so a value within 2^-(F+1) of an integer (or, with d
digits, of a multiple of 10^-d) may round the other way than DuckDB's double; with d != 0 the result
is scaled back by a public real (one truncation: |error| <= 2^-F). On integers and DECIMALs they
are exact.
"""

from __future__ import annotations

import math

import numpy as np

from sqlsecure.errors import ProgrammingError
from sqlsecure.executors.spu import arith, boolean, compare
from sqlsecure.executors.spu.session import SpuSession
from sqlsecure.executors.spu.shares import ArithShare, BoolShare

ONE = np.uint64(1)
SPLIT_TARGET = 28  # floor_div_public reduces |x| below 2^28 * sqrt(c) before its one approximate division


def floor_pow2(s: SpuSession, x: ArithShare, k: int) -> ArithShare:
    """floor(X / 2^k) of the raw ring value X (two's complement), exact: the arithmetic right shift.

    1. a2b: XOR shares of X's 64 bits (CSA layers for more than 2 parties, then Kogge–Stone);
    2. B2A of bits k..63 (one round, daBits), weighted 2^(j-k), bit 63 negatively.
    Result: an integer share (frac 0) with |result| < 2^(63-k)."""
    if not 0 < k < 64:
        raise ProgrammingError(f"floor_pow2: shift {k} out of range 1..63")
    (words,) = boolean.a2b_many(s, [x])
    bits = np.stack([(words.data >> np.uint64(j)) & ONE for j in range(k, 64)])
    (ab,) = boolean.b2a_bits_many(s, [BoolShare(bits.ravel(), 1)])
    weights = np.array([1 << (j - k) for j in range(k, 63)] + [(1 << 64) - (1 << (63 - k))], dtype=np.uint64)
    data = (ab.data.reshape(64 - k, -1) * weights[:, None]).sum(axis=0, dtype=np.uint64)
    return ArithShare(data.reshape(x.shape), 0)


def floor_fixed(s: SpuSession, x: ArithShare) -> ArithShare:
    """FLOOR of a fixed-point share, as fixed point: floor_pow2(X, F) * 2^F (exact on the encoding)."""
    return floor_pow2(s, x, x.frac).lshift(x.frac).with_frac(x.frac)


def ceil_fixed(s: SpuSession, x: ArithShare) -> ArithShare:
    """CEIL of a fixed-point share: -FLOOR(-x) (exact on the encoding)."""
    return -floor_fixed(s, -x)


def _negative(s: SpuSession, x: ArithShare) -> ArithShare:
    """[x < 0] as a 0/1 integer share (one secure comparison)."""
    return compare.less_than(s, x, arith.public(s, np.zeros(x.shape, dtype=np.int64), x.frac), arith=True)


def _with_sign(s: SpuSession, magnitude: ArithShare, negative: ArithShare) -> ArithShare:
    """magnitude * (1 - 2 negative): one product."""
    flip = arith.beaver_mul(s, magnitude.with_frac(0), negative)
    return ArithShare((magnitude.with_frac(0) - flip * 2).data, magnitude.frac)


def round_fixed(s: SpuSession, x: ArithShare) -> ArithShare:
    """ROUND(x) of a fixed-point share, halves away from zero as DuckDB rounds a DOUBLE:
    sign(x) * floor(|x| + 1/2). Rounds: a comparison, 2 products and floor_pow2. Exact on the
    encoding (see the module docstring for what that means against a double)."""
    negative = _negative(s, x)
    magnitude = _with_sign(s, x, negative)
    half = arith.public(s, np.full(x.shape, 0.5), x.frac)
    return _with_sign(s, floor_fixed(s, magnitude + half), negative)


def floor_div_public(s: SpuSession, x: ArithShare, c: int, bound: float = 2.0 ** 62) -> ArithShare:
    """floor(X / c) exactly (an integer share, frac 0), for the raw ring value X of a share with |X| < bound <= 2^62 and a public integer c >= 1.

    Integer division by a constant as in Granlund–Montgomery ("Division by invariant integers
    using multiplication", PLDI 1994), made exact on shares:
    1. while the bound is large: split X = H * 2^t + L (H = floor_pow2(X, t), 0 <= L < 2^t) and
       use 2^t = c*Q + R (public): X = c*(H*Q) + (H*R + L), so floor(X/c) = H*Q + floor(Y/c) with
       the much smaller Y = H*R + L (2^t ~ sqrt(bound * c): the bound falls to ~2 sqrt(bound * c));
    2. q = floor(Y * M / 2^L) with M = floor(2^L / c), 2^L >= 2|Y| (exact shift): q is floor(Y/c)
       or one off;
    3. r = Y - q*c; q += [r >= c] - [r < 0] (one batched comparison).
    Rounds: (splits + 1) x floor_pow2 + 1 comparison; splits is 1 or 2 for c <= 10^12."""
    if c < 1 or bound > 2.0 ** 62:
        raise ProgrammingError(f"floor_div_public: divisor {c} or bound {bound:g} out of range")
    if c == 1:
        return x.with_frac(0)
    quotient, y = None, x.with_frac(0)  # on the raw ring value: a fixed-point share divides its encoding
    while bound > 2.0 ** SPLIT_TARGET * math.sqrt(c):
        t = min(61, max(1, round(math.log2(math.sqrt(bound * c)))))
        big_q, rest = divmod(1 << t, c)
        high = floor_pow2(s, y, t)
        low = y - high.lshift(t)
        part = high * big_q
        quotient = part if quotient is None else quotient + part
        y = high * rest + low
        following = (bound / 2.0 ** t + 1) * rest + 2.0 ** t
        if following >= bound:
            raise ProgrammingError(f"floor_div_public: no progress dividing by {c}")
        bound = following
    shift = max(1, math.ceil(math.log2(bound)) + 1)
    approx = floor_pow2(s, y * ((1 << shift) // c), shift)
    remainder = y - approx * c
    lanes = len(remainder)
    spare = arith.public(s, np.full(lanes, c - 1, dtype=np.int64)) - remainder  # r >= c  <=>  c - 1 - r < 0
    bits = compare.less_than(s, arith.concat([remainder, spare]),
                             arith.public(s, np.zeros(2 * lanes, dtype=np.int64)), arith=True)
    below, above = bits[:lanes], bits[lanes:]
    approx = approx + ArithShare((above.data - below.data).reshape(approx.shape), 0)
    return approx if quotient is None else quotient + approx


def round_div_public(s: SpuSession, x: ArithShare, c: int, bound: float = 2.0 ** 61) -> ArithShare:
    """X / c rounded to an integer, halves away from zero (DuckDB's ROUND of a DECIMAL or of an
    integer to tens): sign(X) * floor((|X| + c // 2) / c), exact for |X| < bound <= 2^61 and even
    or odd c (for odd c, c // 2 is below the half, which no integer X reaches exactly).
    Rounds: a comparison, 2 products and floor_div_public."""
    if c == 1:
        return x
    negative = _negative(s, x)
    magnitude = _with_sign(s, x, negative)
    half = arith.public(s, np.full(x.shape, c // 2, dtype=np.int64))
    return _with_sign(s, floor_div_public(s, magnitude + half, c, bound + c), negative)
