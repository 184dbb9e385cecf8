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


QUOTIENT_BITS = {"int": 32, "fixed": 40}  # compare.divide's y_bits for an integer / a fixed-point divisor


def _magnitude_and_zero(s: SpuSession, y: ArithShare) -> tuple[ArithShare, ArithShare, ArithShare]:
    """(|y| + [y == 0], [y < 0], [y == 0]): a divisor that is never zero, its sign and the zero bit.
    Two comparisons, one product."""
    zero = arith.public(s, np.zeros(len(y), dtype=np.int64), y.frac)
    negative = compare.less_than(s, y, zero, arith=True)
    is_zero = compare.equal(s, y, zero, arith=True)
    one = is_zero.data << np.uint64(y.frac)  # 1 in y's encoding
    return ArithShare(_with_sign(s, y, negative).data + one, y.frac), negative, is_zero


def divide_secret(s: SpuSession, x: ArithShare, y: ArithShare) -> tuple[ArithShare, ArithShare]:
    """(x / y in fixed point, [y == 0]) for a fixed-point x and an integer or fixed-point y.

    Goldschmidt/Newton–Raphson reciprocal as in CrypTen's `reciprocal` (crypten/common/functions/
    approximations.py), here `compare.divide`: normalise |y| by its leading bit (exact, bit
    decomposition), 3 Newton steps for 1/y_norm, multiply back; then one refinement on the remainder
    (x - q*y) / y, as AVG does. Where y = 0 the divisor is replaced by 1 and the zero bit returned
    (DuckDB gives ±infinity or NaN there, which the SPU cannot hold: the stage refuses the query).
    Range: |x| < 2^27 and |y| < 2^31 (integer) or 2^23 (fixed point) — `spu.ranges.DIVIDEND_LIMIT`,
    `DIVISOR_LIMIT`. Accuracy: |error| <= 2^-14 * |x / y| + 2^-14 (measured bound with the test's
    margin; the truncations contribute a few units of 2^-16). Rounds: 2 comparisons, 2 divisions
    (about 30 rounds each), 3 products."""
    bits = QUOTIENT_BITS["fixed" if y.frac else "int"]
    safe, negative, is_zero = _magnitude_and_zero(s, y)
    first = compare.divide(s, x, safe, y_bits=bits)
    product = arith.mul_wide(s, first, safe) if safe.frac else arith.beaver_mul(s, first, safe)
    remainder = x - product
    quotient = first + compare.divide(s, remainder, safe, y_bits=bits)
    return _with_sign(s, quotient, negative), is_zero


def truncated_divide_secret(s: SpuSession, x: ArithShare, y: ArithShare) -> tuple[ArithShare, ArithShare]:
    """(x // y rounded toward zero, [y == 0]) for integer shares, as DuckDB's `//` (and `%` = x - (x // y) * y):
    |x| / |y| approximated by `divide_secret`'s method, floored (exact, bit decomposition), then
    corrected by one unit with the exact remainder (one batched comparison), and signed.
    Exact for |x| < 2^27, |y| < 2^31. Rounds: those of divide_secret, floor_pow2, 3 comparisons, 4 products."""
    safe, negative_y, is_zero = _magnitude_and_zero(s, y)
    negative_x = _negative(s, x)
    magnitude = _with_sign(s, x, negative_x)
    fixed = magnitude.lshift(s.frac_bits).with_frac(s.frac_bits)
    first = compare.divide(s, fixed, safe)
    remainder = fixed - ArithShare(arith.beaver_mul(s, first.with_frac(0), safe).data, s.frac_bits)
    approx = floor_pow2(s, first + compare.divide(s, remainder, safe), s.frac_bits)
    rest = magnitude - arith.beaver_mul(s, approx, safe)
    lanes = len(rest)
    spare = safe - arith.public(s, np.ones(lanes, dtype=np.int64)) - rest  # r >= |y|  <=>  |y| - 1 - r < 0
    bits = compare.less_than(s, arith.concat([rest, spare]), arith.public(s, np.zeros(2 * lanes, dtype=np.int64)),
                             arith=True)
    quotient = approx + bits[lanes:] - bits[:lanes]
    flip = negative_x + negative_y - arith.beaver_mul(s, negative_x, negative_y) * 2
    return _with_sign(s, quotient, flip), is_zero


def truncated_divide_public(s: SpuSession, x: ArithShare, c: int) -> ArithShare:
    """x // c rounded toward zero for an integer share and a public integer c != 0 (DuckDB's `//`):
    sign(x) * sign(c) * floor(|x| / |c|), exact for |x| < 2^61. Rounds: a comparison, 2 products, floor_div_public."""
    negative = _negative(s, x)
    quotient = _with_sign(s, floor_div_public(s, _with_sign(s, x, negative), abs(c), 2.0 ** 61), negative)
    return -quotient if c < 0 else quotient


def round_half_even_fixed(s: SpuSession, x: ArithShare) -> ArithShare:
    """x rounded to an integer, ties to even (DuckDB's CAST of a DOUBLE to an integer), as an integer
    share: y = x + 1/2 decomposed into bits (a2b); floor(y) from its bits F..63, minus 1 where y has
    no fractional bits (x was a tie) and floor(y) is odd (bit F). Exact on the encoding.
    Rounds: a2b, a zero test (6), one AND, one B2A."""
    frac = x.frac
    half = arith.public(s, np.full(x.shape, 1 << (frac - 1), dtype=np.int64))
    (words,) = boolean.a2b_many(s, [ArithShare((x.with_frac(0) + half).data, 0)])
    fraction = words.data & np.uint64((1 << frac) - 1)  # AND with a public mask: local on XOR shares
    tie, _ = boolean.zero_test_words(s, fraction)
    odd = (words.data >> np.uint64(frac)) & ONE
    (tie_and_odd,) = boolean.and_words_many(s, [(tie & ONE, odd)])
    bits = np.stack([(words.data >> np.uint64(j)) & ONE for j in range(frac, 64)] + [tie_and_odd & ONE])
    (ab,) = boolean.b2a_bits_many(s, [BoolShare(bits.ravel(), 1)])
    weights = np.array([1 << (j - frac) for j in range(frac, 63)] + [(1 << 64) - (1 << (63 - frac)), (1 << 64) - 1],
                       dtype=np.uint64)
    data = (ab.data.reshape(65 - frac, -1) * weights[:, None]).sum(axis=0, dtype=np.uint64)
    return ArithShare(data.reshape(x.shape), 0)


def civil_from_days(s: SpuSession, days: ArithShare) -> tuple[ArithShare, ArithShare, ArithShare]:
    """(year, month, day) of a date held as days since 1970-01-01, exactly: H. Hinnant's
    `civil_from_days` ("chrono-Compatible Low-Level Date Algorithms", 2013), whose divisions are all by
    public constants (`floor_div_public`, exact) and whose one branch is a secret comparison.
    For |days| < 2^40 (every DATE DuckDB holds). Rounds: 9 exact divisions (most of them of small
    bounded values: one bit decomposition and one comparison each), 2 comparisons."""
    z = arith.add_public(s, days, 719468)  # days since 0000-03-01
    era = floor_div_public(s, z, 146097, 2.0 ** 41)
    doe = z - era * 146097  # [0, 146096]
    yoe_num = doe - floor_div_public(s, doe, 1460, 146097) + floor_div_public(s, doe, 36524, 146097) \
        - floor_div_public(s, doe, 146096, 146097)
    yoe = floor_div_public(s, yoe_num, 365, 146097)  # [0, 399]
    doy = doe - (yoe * 365 + floor_div_public(s, yoe, 4, 400) - floor_div_public(s, yoe, 100, 400))  # [0, 365]
    mp = floor_div_public(s, doy * 5 + arith.public(s, np.full(len(doy), 2, dtype=np.int64)), 153, 1830)  # [0, 11]
    day = doy - floor_div_public(s, mp * 153 + arith.public(s, np.full(len(mp), 2, dtype=np.int64)), 5, 1700)
    day = arith.add_public(s, day, 1)
    january_or_february = compare.greater_equal(s, mp, arith.public(s, np.full(len(mp), 10, dtype=np.int64)),
                                                arith=True)
    month = arith.add_public(s, mp - january_or_february * 12, 3)
    year = yoe + era * 400 + january_or_february
    return year, month, day
