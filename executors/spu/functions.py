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
  split_timestamp    floor_div_public                         a TIMESTAMP's day and time of day, exact
  time_of_day        3 x floor_div_public (small bounds)      HOUR, MINUTE, SECOND, exact
  round_div_public   floor_div_public + 1 a2b + 2 products     x / c rounded half away from zero, exact
  sin_cos_fixed      a2b + B2A + 9 products + 2               SIN, COS: |error| <= 2^-15 for |x| < 2^24
  tan_fixed          sin_cos + 1 compare + divide_secret      TAN: |error| <= 2^-14 (|tan x| + 1)
  atan2_fixed        2 compares + divide_secret + 16 products ATAN2 (ATAN, ASIN, ACOS): |error| <= 2^-14
  geodist_fixed      sin_cos + 4 products + sqrt + atan2      GEODIST: |error| <= radius 2^-23 + 2^-15

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
from sqlsecure.executors.spu import arith, boolean, compare, ranges
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


def days_from_civil(s: SpuSession, year: ArithShare, month: ArithShare, day: ArithShare) -> ArithShare:
    """Days since 1970-01-01 of (year, month, day) integer shares, exactly: Hinnant's `days_from_civil`
    (the inverse of `civil_from_days`), its divisions by public constants exact (`floor_div_public`), its
    one branch (January or February counts in the year before) a secret comparison.
    For |year| < 2^31. Rounds: 1 comparison, 4 exact divisions."""
    lanes = len(year)
    early = compare.less_equal(s, month, arith.public(s, np.full(lanes, 2, dtype=np.int64)), arith=True)
    shifted_year = year - early
    era = floor_div_public(s, shifted_year, 400, 2.0 ** 32)
    yoe = shifted_year - era * 400  # [0, 399]
    mp = arith.add_public(s, month + early * 12, -3)  # March = 0 ... February = 11
    doy = floor_div_public(s, arith.add_public(s, mp * 153, 2), 5, 1700) + arith.add_public(s, day, -1)
    doe = yoe * 365 + floor_div_public(s, yoe, 4, 400) - floor_div_public(s, yoe, 100, 400) + doy
    return arith.add_public(s, era * 146097 + doe, -719468)


def add_months(s: SpuSession, days: ArithShare, months: int) -> ArithShare:
    """date + INTERVAL n MONTH as DuckDB computes it, exactly: the calendar month moves by n, the day of the
    month is clamped to the new month's last day (2024-01-31 + 1 month = 2024-02-29). A date is days since
    1970-01-01 with |days| < 2^40. Rounds: civil_from_days, 1 exact division, 1 batched equality (the month
    and the leap-year remainders), 1 comparison, 2 products, days_from_civil."""
    lanes = len(days)
    year, month, day = civil_from_days(s, days)
    total = arith.add_public(s, year * 12 + month, months - 1)  # months since year 0, January = 0
    new_year = floor_div_public(s, total, 12, 2.0 ** 37)
    new_month = arith.add_public(s, total - new_year * 12, 1)
    remainders = [new_year - floor_div_public(s, new_year, k, 2.0 ** 32) * k for k in (4, 100, 400)]
    candidates = [new_month] * 5 + remainders
    wanted = arith.public(s, np.repeat(np.array([2, 4, 6, 9, 11, 0, 0, 0], dtype=np.int64), lanes))
    hits = compare.equal(s, arith.concat(candidates), wanted, arith=True).data.reshape(8, lanes)
    february, short = ArithShare(hits[0], 0), ArithShare(hits[1:5].sum(axis=0, dtype=np.uint64), 0)
    leap = ArithShare(hits[5] - hits[6] + hits[7], 0)
    last = arith.add_public(s, -short - february * 3 + arith.beaver_mul(s, february, leap), 31)
    beyond = compare.less_than(s, last, day, arith=True)
    clamped = day + arith.beaver_mul(s, beyond, last - day)
    return days_from_civil(s, new_year, new_month, clamped)


# -- TIMESTAMP: microseconds since 1970-01-01 00:00:00, taken apart by exact divisions ------------------

MICROS = {"MICROSECOND": 1, "MILLISECOND": 1_000, "SECOND": 1_000_000, "MINUTE": 60_000_000,
          "HOUR": 3_600_000_000, "DAY": 86_400_000_000}
TIMESTAMP_BOUND = 2.0 ** 62  # |micros| below it (spu.ranges: every compared TIMESTAMP)


def split_timestamp(s: SpuSession, micros: ArithShare) -> tuple[ArithShare, ArithShare]:
    """(days since 1970-01-01, microseconds into the day) of a TIMESTAMP, exactly: floor division by a
    day's microseconds (`floor_div_public`), so times before 1970 fall on the right day.
    Rounds: one floor_div_public."""
    days = floor_div_public(s, micros, MICROS["DAY"], TIMESTAMP_BOUND)
    return days, micros - days * MICROS["DAY"]


def time_of_day(s: SpuSession, micros_of_day: ArithShare) -> tuple[ArithShare, ArithShare, ArithShare]:
    """(hour, minute, second) of microseconds into a day (0 <= x < 86,400,000,000), whole and exact.
    Rounds: 3 floor_div_public of small bounded values."""
    seconds = floor_div_public(s, micros_of_day, MICROS["SECOND"], float(MICROS["DAY"]))
    minutes = floor_div_public(s, seconds, 60, 86_400.0)
    hours = floor_div_public(s, minutes, 60, 1_440.0)
    return hours, minutes - hours * 60, seconds - minutes * 60


def units_since_epoch(s: SpuSession, micros: ArithShare, unit: str) -> ArithShare:
    """floor(micros / unit): the number of the unit's boundaries from 1970 (DuckDB's date_diff counts
    boundaries crossed, so date_diff(unit, a, b) is the difference of two of these). Exact."""
    return floor_div_public(s, micros, MICROS[unit], TIMESTAMP_BOUND) if MICROS[unit] > 1 else micros


def add_months_timestamp(s: SpuSession, micros: ArithShare, months: int) -> ArithShare:
    """TIMESTAMP + INTERVAL n MONTH as DuckDB computes it: the date moves as `add_months` moves it (the day
    clamped to the new month's last), the time of day stays. Exact; rounds: split_timestamp + add_months."""
    days, within = split_timestamp(s, micros)
    return add_months(s, days, months) * MICROS["DAY"] + within


# -- SQRT, LN, EXP: exact normalisation by the leading bit, then a polynomial or Newton on a short interval --

def _fit(function, low: float, high: float, degree: int) -> np.ndarray:
    """Power-basis coefficients (lowest first) of a Chebyshev least-squares fit of `function` on [low, high]:
    public constants of the kernels, computed once."""
    grid = np.cos(np.linspace(0, np.pi, 400)) * (high - low) / 2 + (high + low) / 2
    return np.polynomial.Chebyshev.fit(grid, function(grid), degree).convert(kind=np.polynomial.Polynomial).coef


LN_CENTRE, INV_SQRT_CENTRE, EXP_CENTRE = 0.75, 0.625, 0.35  # polynomials in (x - centre): small coefficients
LN_NORMALISED = _fit(lambda u: np.log(u + LN_CENTRE), -0.25, 0.25, 9)  # ln on [0.5, 1): |error| < 1e-9
EXP_REDUCED = _fit(lambda u: np.exp(u + EXP_CENTRE), -0.36, 0.36, 8)  # exp on [0, ln 2) and a little beyond
INV_SQRT_START = _fit(lambda u: 1 / np.sqrt(u + INV_SQRT_CENTRE), -0.375, 0.375, 2)  # Newton's start on [0.25, 1)
NORMALISED_BITS = 59  # SQRT and LN read the leading bit among the raw value's lowest 59: |x| < 2^(59-F) = 2^43
WIDE = 28  # fractional bits of the normalised values (in [0.25, 2)): products stay below 2^60


def _mul_wide_frac(s: SpuSession, a: ArithShare, b: ArithShare) -> ArithShare:
    """a * b for two shares with WIDE fractional bits and |a|, |b| < 4: one product, one truncation."""
    return ArithShare(arith.truncate(s, arith.beaver_mul(s, a.with_frac(0), b.with_frac(0)), WIDE).data, WIDE)


def _constant(s: SpuSession, value: float, shape) -> ArithShare:
    return arith.public(s, np.full(shape, float(value)), WIDE)


def _horner(s: SpuSession, u: ArithShare, coefficients) -> ArithShare:
    """sum c_i u^i by Horner's rule at WIDE fractional bits: one product (2 rounds) per degree."""
    acc = _constant(s, coefficients[-1], u.shape)
    for c in reversed(coefficients[:-1]):
        acc = _mul_wide_frac(s, acc, u) + _constant(s, c, u.shape)
    return acc


def _to_session_frac(s: SpuSession, x: ArithShare, frac: int) -> ArithShare:
    return ArithShare(arith.truncate(s, x.with_frac(0), WIDE - frac).data, frac)


def _weighted(onehot: ArithShare, weights) -> ArithShare:
    """sum_j onehot_j * w_j for public integers w_j (local)."""
    w = np.array([int(v) % (1 << 64) for v in weights], dtype=np.uint64)
    return ArithShare((onehot.data * w[:, None]).sum(axis=0, dtype=np.uint64), 0)


def _scaled(s: SpuSession, x: ArithShare, factor: ArithShare, shift: int) -> ArithShare:
    """x * factor / 2^shift for a secret integer factor (1 product, 1 truncation), at x's scale."""
    return ArithShare(arith.truncate(s, arith.beaver_mul(s, x.with_frac(0), factor), shift).data, x.frac)


def sqrt_fixed(s: SpuSession, x: ArithShare) -> ArithShare:
    """SQRT of a fixed-point share x >= 0 (a negative x gives garbage: the stage refuses it first).

    1. leading bit j of X; scale by an even power of two 2^-e_j so that x' in [0.25, 1), carried
       with WIDE = 28 fractional bits (exact one-hot weights, one product and truncation);
    2. 1/sqrt(x') by a quadratic start and 3 Newton–Raphson steps y <- y (3 - x' y^2) / 2 (as
       CrypTen's `inv_sqrt`, here on a normalised input so the precision is relative);
    3. sqrt(x') = x' y, scaled back by 2^(e_j / 2) to the session's F bits.
    Accuracy: relative 2^-20 plus 2^-16 absolute (the test's bound: 2^-14 * (sqrt(x) + 1)).
    Rounds: a2b, prefix OR, B2A, about 12 products."""
    frac, top = x.frac, NORMALISED_BITS
    shifts = [2 * math.ceil((j + 1 - frac) / 2) for j in range(top)]  # e_j, even
    big = max(shifts)
    onehot = compare.leading_bit(s, x, top)
    norm = _scaled(s, x, _weighted(onehot, [1 << (big - e) for e in shifts]), big + frac - WIDE).with_frac(WIDE)
    y = _horner(s, norm - _constant(s, INV_SQRT_CENTRE, x.shape), INV_SQRT_START)
    three = _constant(s, 3.0, x.shape)
    for _ in range(3):
        y = _mul_wide_frac(s, y, three - _mul_wide_frac(s, norm, _mul_wide_frac(s, y, y)))
        y = ArithShare(arith.truncate(s, y.with_frac(0), 1).data, WIDE)  # / 2
    root = _mul_wide_frac(s, norm, y)
    low = -min(shifts) // 2
    back = _scaled(s, root, _weighted(onehot, [1 << (e // 2 + low) for e in shifts]), low + WIDE - frac)
    return back.with_frac(frac)


def ln_fixed(s: SpuSession, x: ArithShare, wide: bool = False) -> ArithShare:
    """LN of a fixed-point share x > 0 (x <= 0 gives garbage: the stage refuses it first).

    x = x' 2^(j+1-F) with x' in [0.5, 1) from the leading bit j (exact); ln x = P(x') + (j+1-F) ln 2,
    P a degree-9 Chebyshev fit of ln on [0.5, 1) evaluated with WIDE = 28 fractional bits (CrypTen's
    `log` uses Householder iterations over its `exp`; the exact normalisation makes one short interval
    and a polynomial enough). Accuracy: |error| <= 2^-15 (the test's bound; the result's own encoding
    is 2^-17); with `wide`, the result keeps WIDE fractional bits. Rounds: a2b, prefix OR, B2A, 1 product,
    9 fixed-point products."""
    frac, top = x.frac, NORMALISED_BITS
    shifts = [j + 1 - frac for j in range(top)]
    big = max(shifts)
    onehot = compare.leading_bit(s, x, top)
    norm = _scaled(s, x, _weighted(onehot, [1 << (big - e) for e in shifts]), big + frac - WIDE).with_frac(WIDE)
    exponent = _weighted(onehot, shifts)  # j + 1 - F, an integer share
    ln2 = ArithShare(exponent.data * np.uint64(round(math.log(2) * 2 ** WIDE)), WIDE)
    ln = _horner(s, norm - _constant(s, LN_CENTRE, x.shape), LN_NORMALISED) + ln2
    return ln if wide else _to_session_frac(s, ln, frac)


def exp_fixed(s: SpuSession, x: ArithShare) -> ArithShare:
    """EXP of a fixed-point share with |x| < 31 (`spu.ranges.EXP_LIMIT`; below -12 the result rounds to 0).

    x = k ln 2 + r: k = floor(x / ln 2) exactly from the bits of x * (1/ln 2), r = x - k ln 2 in
    [0, ln 2) (at WIDE bits, exactly but for ln 2's rounding); e^r by a degree-8 Chebyshev fit at WIDE = 28 fractional bits; 2^k by a one-hot of k over
    its public range (one batched equality per candidate), each candidate's shift applied locally.
    Accuracy: relative 2^-14 and absolute 2^-15 (the test's bound; the input's own encoding error
    2^-17 makes e^x's relative error 2^-17 at best). Rounds: about 30."""
    frac = x.frac
    scaled = arith.mul_public(s, x, 1 / math.log(2))
    k = floor_pow2(s, scaled, frac)  # an integer share
    k_ln2 = k.data * np.uint64(round(math.log(2) * 2 ** WIDE))  # exact: |k| < 64
    wide_r = ArithShare((x.data << np.uint64(WIDE - frac)) - k_ln2, WIDE)  # r = x - k ln 2, no truncation
    mantissa = _to_session_frac(s, _horner(s, wide_r - _constant(s, EXP_CENTRE, x.shape), EXP_REDUCED), frac)
    candidates = list(range(-frac - 1, int(ranges.EXP_LIMIT / math.log(2)) + 2))
    lanes = len(x)
    wanted = arith.public(s, np.repeat(np.array(candidates, dtype=np.int64), lanes))
    hits = compare.equal(s, ArithShare(np.tile(k.data, len(candidates)), 0), wanted, arith=True)
    picked = arith.beaver_mul(s, hits, ArithShare(np.tile(mantissa.data, len(candidates)), 0))
    rows = picked.data.reshape(len(candidates), lanes)
    up = sum((rows[i] << np.uint64(v) for i, v in enumerate(candidates) if v >= 0), np.zeros(lanes, np.uint64))
    down = sum((rows[i] << np.uint64(v + frac + 1) for i, v in enumerate(candidates) if v < 0),
               np.zeros(lanes, np.uint64))
    return ArithShare(up, frac) + arith.truncate(s, ArithShare(down, 0), frac + 1).with_frac(frac)


POWER_FLOOR = -30.0  # POWER: y * ln x below this gives 0 at F = 16 bits (e^-30 < 2^-43); clamped there


def power_fixed(s: SpuSession, x: ArithShare, y: ArithShare, whole: bool, base: float | None = None
                ) -> tuple[ArithShare, dict]:
    """(x^y, refusal flags) for fixed-point shares x and y: EXP(y * LN|x|), signed by the parity of y where
    x < 0 and y is `whole` (an integer share or a whole constant); 0^y is 0 for y > 0 and 1 for y = 0.
    Flags (0/1 integer shares, for the stage to refuse a counted row): "negative" (x < 0, y not whole),
    "pole" (x = 0, y < 0), "overflow" (y ln|x| >= EXP_LIMIT). y ln|x| below -30 is clamped (e^-30 is 0 at
    F = 16). A public positive `base` (x's value) takes its logarithm in plaintext. Accuracy: relative
    2^-14 (1 + |y| 2^-8) plus 2^-15 absolute (LN at 28 bits times y, one truncation, then EXP's).
    Range: |y ln x| < 2^19 so that the product stays in the ring (`spu.ranges.POWER_EXPONENT_LIMIT`).
    Rounds: 2 comparisons, LN, 1 product, 2 comparisons, EXP, a few products (floor_pow2 for the parity)."""
    safe, negative, is_zero = _magnitude_and_zero(s, x)
    lanes = len(x)
    logarithm = ln_fixed(s, safe, wide=True) if base is None else \
        _constant(s, math.log(base), x.shape)
    exponent = ArithShare(arith.truncate(s, arith.beaver_mul(s, y.with_frac(0), logarithm.with_frac(0)),
                                         WIDE).data, y.frac)
    bounds = arith.public(s, np.concatenate([np.full(lanes, ranges.EXP_LIMIT), np.full(lanes, POWER_FLOOR)]),
                          x.frac)
    sides = compare.less_than(s, arith.concat([exponent, exponent]), bounds, arith=True)
    overflow = arith.public(s, np.ones(lanes, dtype=np.int64)) - sides[:lanes]
    floor = arith.public(s, np.full(lanes, POWER_FLOOR), x.frac)
    exponent = exponent + _select(s, sides[lanes:], floor - exponent)
    power = exp_fixed(s, exponent)
    y_negative = _negative(s, y)
    zero_row, pole, y_zero = arith.beaver_mul_many(s, [(is_zero, power.with_frac(0)), (is_zero, y_negative),
                                                       (is_zero, compare.equal(s, y, arith.public(
                                                           s, np.zeros(lanes, dtype=np.int64), y.frac), arith=True))])
    power = ArithShare((power.with_frac(0) - zero_row).data, x.frac) + ArithShare(y_zero.lshift(x.frac).data, x.frac)
    flags = {"pole": pole, "overflow": overflow}
    if whole:
        half = floor_pow2(s, y, x.frac + 1)  # floor(y / 2), exact
        odd = floor_pow2(s, y, x.frac) - half * 2
        power = _with_sign(s, power, arith.beaver_mul(s, negative, odd))
    else:
        flags["negative"] = negative
    return power, flags


def power_integer(s: SpuSession, x: ArithShare, n: int, multiply) -> ArithShare:
    """x^n for a public integer n >= 1 by square-and-multiply with `multiply` (exact for integers;
    fixed point: one truncation per product). ceil(log2 n) + popcount(n) - 1 products."""
    result, base = None, x
    while n:
        if n & 1:
            result = base if result is None else multiply(result, base)
        n >>= 1
        if n:
            base = multiply(base, base)
    return result


# -- SIN, COS, TAN, ATAN2 (and ATAN, ASIN, ACOS through it): exact range reduction, polynomials at WIDE bits --

SIN_QUARTER = _fit(lambda u: np.sin(2 * np.pi * (u + 0.125)), -0.125, 0.125, 9)  # sin(2 pi v), v in [0, 1/4]: 4e-11
ATAN_UNIT = _fit(lambda t: np.arctan(t + 0.5), -0.5, 0.5, 12)  # atan on [0, 1]: |error| < 3e-10
TAN_SCALE_BITS = 10  # TAN divides sin * 2^10 by cos * 2^10 at F bits: cos keeps F + 10 bits
POLE_DISTANCE = 2.0 ** -8  # TAN: |cos x| below this (|tan x| > 2^8) refuses the row (spu.ranges.TAN_BOUND)


def _bits_as_integers(s: SpuSession, x: ArithShare, positions) -> ArithShare:
    """0/1 integer shares (shape (len(positions), n)) of the given bits of the raw value X: a2b, one B2A."""
    (words,) = boolean.a2b_many(s, [x])
    bits = np.stack([(words.data >> np.uint64(j)) & ONE for j in positions])
    (ab,) = boolean.b2a_bits_many(s, [BoolShare(bits.ravel(), 1)])
    return ArithShare(ab.data.reshape(len(positions), -1), 0)


def _select(s: SpuSession, bit: ArithShare, value: ArithShare) -> ArithShare:
    """bit * value for a 0/1 integer share and a share at any scale: one product, no truncation."""
    return ArithShare(arith.beaver_mul(s, value.with_frac(0), bit).data, value.frac)


def _sin_cos_wide(s: SpuSession, x: ArithShare, period: float = 2 * math.pi) -> tuple[ArithShare, ArithShare]:
    """(sin x, cos x) with WIDE fractional bits for a fixed-point share x of an angle in units of which
    `period` make a whole turn (2pi: radians; 360: degrees).

    1. turns: T = X * round(2^(64-F) / period) mod 2^64 (a local product by a public integer): T / 2^64 is
       x / period modulo whole turns, which wrap away in the ring; |error| <= |x| 2^-(65-F) turns;
    2. the quadrant (bits 63, 62 of T) and v in [0, 1/4) turns (bits 64-WIDE..61): one a2b, one B2A;
    3. sin(2 pi v) and cos(2 pi v) = sin(2 pi (1/4 - v)) by one degree-9 Chebyshev fit on [0, 1/4],
       batched (CrypTen's `cossin` goes through e^ix by repeated squaring; the exact reduction makes
       one short interval and a polynomial enough);
    4. the quadrant picks and signs them: 3 products in 2 rounds.
    Rounds: a2b, B2A, 9 fixed-point products, 2 products."""
    turn = round(2.0 ** (64 - x.frac) / period)
    positions = list(range(64 - WIDE, 64))
    parts = _bits_as_integers(s, ArithShare(x.data * np.uint64(turn), 0), positions)
    weights = [1 << (j - (64 - WIDE)) for j in positions[:-2]]
    quarter = _weighted(parts[:-2], weights).with_frac(WIDE)
    second, top = parts[-2], parts[-1]
    lanes = len(quarter)
    mirrored = arith.concat([quarter, _constant(s, 0.25, quarter.shape) - quarter])
    values = _horner(s, mirrored - _constant(s, 0.125, mirrored.shape), SIN_QUARTER)
    sin_v, cos_v = values[:lanes], values[lanes:]
    moved, both = arith.beaver_mul_many(s, [((sin_v - cos_v).with_frac(0), second), (second, top)])
    sin_size = sin_v - moved.with_frac(WIDE)  # quadrants 1 and 3: cos v
    cos_size = cos_v + moved.with_frac(WIDE)  # quadrants 1 and 3: sin v
    flips = arith.concat([top, top + second - both * 2])  # sin < 0 in quadrants 2, 3; cos in 1, 2
    signed = _select(s, flips, arith.concat([sin_size, cos_size]))
    result = arith.concat([sin_size, cos_size]) - signed * 2
    return result[:lanes], result[lanes:]


def sin_cos_fixed(s: SpuSession, x: ArithShare) -> tuple[ArithShare, ArithShare]:
    """(SIN(x), COS(x)) of a fixed-point share with |x| < 2^24 (`spu.ranges.TRIG_LIMIT`), at x's scale.
    Accuracy: |error| <= 2^-15 against sin/cos of the encoded x (the reduction's 2^-22 at the limit,
    the polynomial's 4e-11, the final truncation's 2^-16); DuckDB's double adds the encoding's 2^-17."""
    sin, cos = _sin_cos_wide(s, x)
    pair = _to_session_frac(s, arith.concat([sin, cos]), x.frac)
    return pair[:len(x)], pair[len(x):]


def tan_fixed(s: SpuSession, x: ArithShare) -> tuple[ArithShare, ArithShare]:
    """(TAN(x), [|cos x| < 2^-8]) of a fixed-point share with |x| < 2^24: sin x / cos x by `divide_secret`
    on both scaled by 2^10 (so cos keeps F + 10 bits). Rows near a pole (|tan x| > 2^8) are flagged: the
    stage refuses them. Accuracy: |error| <= 2^-14 (|tan x| + 1) against tan of the encoded x (measured:
    2^-16 (|tan x| + 1)); DuckDB's double adds the encoding's 2^-17 (1 + tan^2 x). Rounds: _sin_cos_wide, 1 batched
    comparison, 1 product, divide_secret."""
    sin, cos = _sin_cos_wide(s, x)
    lanes = len(x)
    limit = _constant(s, POLE_DISTANCE, (2 * lanes,))
    below = compare.less_than(s, arith.concat([cos, -cos]) - limit, _constant(s, 0.0, (2 * lanes,)), arith=True)
    near_pole = arith.beaver_mul(s, below[:lanes], below[lanes:])
    scaled = arith.truncate(s, arith.concat([sin, cos]).with_frac(0), WIDE - x.frac - TAN_SCALE_BITS)
    quotient, _ = divide_secret(s, scaled[:lanes].with_frac(x.frac), scaled[lanes:].with_frac(x.frac))
    return quotient, near_pole


def atan2_fixed(s: SpuSession, y: ArithShare, x: ArithShare) -> ArithShare:
    """ATAN2(y, x) in (-pi, pi] of two fixed-point shares at the session's scale with |x|, |y| < 2^23
    (`spu.ranges.DIVISOR_LIMIT`), 0 for (0, 0) as DuckDB. Accuracy: |error| <= 2^-14 against atan2 of the
    encoded inputs (the division's 2^-16 on t <= 1 and the result's truncation). Rounds: `_atan2_wide`."""
    return _to_session_frac(s, _atan2_wide(s, y, x, RATIO_BITS), x.frac)


RATIO_BITS = 4  # atan2_fixed: t = min / max carried with F + 4 bits (the dividend stays below 2^27)


def _atan2_wide(s: SpuSession, y: ArithShare, x: ArithShare, ratio_bits: int) -> ArithShare:
    """ATAN2(y, x) with WIDE fractional bits, for two shares at one scale f read as the session's F
    (so |x|, |y| < 2^(23 + f - F) and 2^ratio_bits |y|, 2^ratio_bits |x| < 2^(27 + f - F)).

    1. signs of y and x (one batched comparison), magnitudes (one product), [|y| > |x|] (a comparison);
    2. t = min / max in [0, 1] with F + ratio_bits bits (`divide_secret`; 0 / 0 gives 0);
    3. atan(t) by a degree-12 Chebyshev fit on [0, 1] at WIDE bits, then the octant: pi/2 - a where
       |y| > |x|, pi - a where x < 0, -a where y < 0 (3 products).
    Rounds: 2 comparisons, divide_secret, 12 fixed-point products, 4 products."""
    lanes, frac = len(x), s.frac_bits
    both = arith.concat([y, x]).with_frac(frac)
    signs = _negative(s, both)
    sizes = _with_sign(s, both, signs)
    size_y, size_x = sizes[:lanes], sizes[lanes:]
    swap = compare.less_than(s, size_x, size_y, arith=True)
    numerator = size_y + _select(s, swap, size_x - size_y)
    ratio, _ = divide_secret(s, numerator.lshift(ratio_bits), size_x + size_y - numerator)
    wide = ratio.lshift(WIDE - frac - ratio_bits).with_frac(WIDE)
    angle = _horner(s, wide - _constant(s, 0.5, wide.shape), ATAN_UNIT)
    angle = angle + _select(s, swap, _constant(s, math.pi / 2, wide.shape) - angle * 2)
    angle = angle + _select(s, signs[lanes:], _constant(s, math.pi, wide.shape) - angle * 2)
    return angle - _select(s, signs[:lanes], angle) * 2


def complement_root(s: SpuSession, x: ArithShare) -> ArithShare:
    """sqrt(1 - x^2) for a fixed-point share with |x| <= 1 (beyond gives garbage: the stage refuses it
    first): 1 - x^2 = (1 - x)(1 + x) exactly at 2F bits (one product, no truncation), `sqrt_fixed` there,
    back to F bits. ASIN(x) = ATAN2(x, sqrt(1 - x^2)), ACOS(x) = ATAN2(sqrt(1 - x^2), x)."""
    one = arith.public(s, np.ones(x.shape, dtype=np.int64)).lshift(x.frac)
    rest = arith.beaver_mul(s, (one - x.with_frac(0)), (one + x.with_frac(0)))
    root = sqrt_fixed(s, rest.with_frac(2 * x.frac))
    return ArithShare(arith.truncate(s, root.with_frac(0), x.frac).data, x.frac)


GEODIST_RATIO_BITS = 12  # geodist_fixed divides values below 2 carried at WIDE bits: t keeps WIDE bits
GEODIST_SQUARES = 2 * WIDE - 2  # the sum of squares for the chord's length, at 54 fractional bits (< 2^59 raw)


def geodist_fixed(s: SpuSession, lon1: ArithShare, lat1: ArithShare, lon2: ArithShare, lat2: ArithShare,
                  radius) -> ArithShare:
    """SCQL's GEODIST: the great-circle distance between (lon1, lat1) and (lon2, lat2), in degrees, on a
    sphere of `radius` (a public number or a share at the session's scale), at the session's scale.

    SCQL writes radius * acos(sin p1 sin p2 + cos p1 cos p2 cos(l1 - l2)); the same angle is computed here
    as atan2(|n1 x n2|, n1 . n2) (Vincenty's form), which stays accurate for short distances where acos
    cannot: y = sqrt((cos p2 sin dl)^2 + (cos p1 sin p2 - sin p1 cos p2 cos dl)^2), x = the dot product.
    1. sin and cos of p1, p2 and dl = l1 - l2 in degrees (`_sin_cos_wide`, one batch: exact reduction);
    2. the products at WIDE bits (2 rounds of batched products); y^2 exactly at 56 bits, `sqrt_fixed`;
    3. `_atan2_wide` with the ratio at WIDE bits; times the radius.
    Accuracy: |error| <= radius 2^-23 + 2^-15 against the encoded inputs (measured: radius 2^-25 + 2^-16,
    17 cm on the earth); the inputs' encoding (2^-17 degrees, 0.85 m on the earth) adds its own.
    Rounds: about 90."""
    lanes, frac = len(lon1), lon1.frac
    sin, cos = _sin_cos_wide(s, arith.concat([lat1, lat2, lon1 - lon2]), 360.0)
    s1, s2, sd = sin[:lanes], sin[lanes:2 * lanes], sin[2 * lanes:]
    c1, c2, cd = cos[:lanes], cos[lanes:2 * lanes], cos[2 * lanes:]
    first = _mul_wide_frac(s, arith.concat([c2, c1, s1, s1, c1]), arith.concat([sd, s2, c2, s2, c2]))
    across, c1s2, s1c2, s1s2, c1c2 = (first[i * lanes:(i + 1) * lanes] for i in range(5))
    second = _mul_wide_frac(s, arith.concat([s1c2, c1c2]), arith.concat([cd, cd]))
    along = c1s2 - second[:lanes]
    dot = s1s2 + second[lanes:]
    sides = arith.concat([across, along]).with_frac(0)
    squares = arith.beaver_mul(s, sides, sides)  # exact at 2 WIDE bits
    chord2 = ArithShare(arith.truncate(s, squares[:lanes] + squares[lanes:], 2 * WIDE - GEODIST_SQUARES).data,
                        GEODIST_SQUARES)
    root = sqrt_fixed(s, chord2)
    cross = ArithShare(arith.truncate(s, root.with_frac(0), GEODIST_SQUARES - WIDE).data, WIDE)
    angle = _atan2_wide(s, cross, dot, GEODIST_RATIO_BITS)
    if isinstance(radius, ArithShare):
        scaled = arith.beaver_mul(s, angle.with_frac(0), radius.with_frac(0))
    else:
        scaled = angle.with_frac(0) * int(round(float(radius) * 2 ** frac))
    return ArithShare(arith.truncate(s, scaled, WIDE).data, frac)
