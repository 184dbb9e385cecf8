"""Exact division of secret integers: the quotient's binary digits, a sticky bit and the sign.

AVG of a DECIMAL is its exact sum S (x * 10^s summed, an integer) over the count c. `long_divide`
gives, on shares and revealing nothing, q = floor(|S| * 2^m / D) for D = c * 10^s, whether the
remainder is non-zero, and the sign of S: from these the issuer rounds S / D to the nearest DOUBLE
exactly (`decode_quotient`), which fixed point (2^-16 absolute) cannot.

Restoring long division in radix 2^RADIX_BITS (Knuth, TAOCP 4.3.1), as SecretFlow's and MP-SPDZ's
integer division reduce to comparisons:

  1. [S < 0] and |S| (compare 6 + B2A 1 + one product 1 round); the bits of |S| (A2B 7, B2A 1);
  2. per digit: R <- R * 2^r + the next r bits of |S| (local); the digit is the number of
     t in 1..2^r - 1 with R >= t * D (one batched comparison: 7 rounds); R <- R - digit * D (1);
  3. the sticky bit [R != 0] (7 rounds).

Range: |S| < 2^62, and D * 2^r < 2^62 so that every comparison stays in the ring's signed range;
the quotient's integer part must be below 2^int_bits (an average is at most its largest value).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from sqlsecure.errors import ProgrammingError
from sqlsecure.executors.spu import arith, boolean, compare
from sqlsecure.executors.spu.session import SpuSession
from sqlsecure.executors.spu.shares import ArithShare, BoolShare

RADIX_BITS = 3
LOW_BITS = 60  # the quotient's low limb; a multiple of RADIX_BITS
DOUBLE_BITS = 53
MAGNITUDE_BITS = 62  # |S| < 2^62


def fraction_bits(largest_divisor: int) -> int:
    """Fractional quotient bits that fix the nearest DOUBLE of any S / D with D <= largest_divisor:
    the smallest non-zero quotient is 1 / D, and its 53 significant bits and a rounding bit must
    all be computed."""
    return DOUBLE_BITS + 2 + int(largest_divisor).bit_length()


def long_divide(s: SpuSession, numerator: ArithShare, divisor: ArithShare, int_bits: int,
                frac_bits: int) -> list[ArithShare]:
    """[negative, high, low] shares: |numerator| * 2^frac_bits / divisor = high * 2^LOW_BITS + low
    (rounded down), with `low` doubled and its last bit the sticky bit (remainder non-zero)."""
    if numerator.frac or divisor.frac:
        raise ProgrammingError("long_divide takes integer shares")
    digits = -(-(int_bits + frac_bits) // RADIX_BITS)
    if digits * RADIX_BITS - frac_bits > MAGNITUDE_BITS:
        raise ProgrammingError(f"long_divide: {int_bits} integer bits do not fit the ring")
    n = len(numerator)
    zero = arith.public(s, np.zeros(n, dtype=np.int64))
    negative = compare.less_than(s, numerator, zero, arith=True)
    magnitude = numerator - arith.beaver_mul(s, negative, numerator * 2)
    top = digits * RADIX_BITS - frac_bits  # bits of |S| consumed by the digits, below the start
    bits = _bits(s, magnitude, MAGNITUDE_BITS)
    remainder = sum((bits[j] * (1 << (j - top)) for j in range(top, MAGNITUDE_BITS)), zero)  # |S| >> top
    high, low = zero, zero
    steps = [t * divisor for t in range(1, 1 << RADIX_BITS)]
    for d in range(digits):
        position = (digits - 1 - d) * RADIX_BITS  # of this digit in the quotient
        below = position + RADIX_BITS - frac_bits  # bits of |S| this digit brings down: below-r .. below-1
        fresh = sum((bits[j] * (1 << (j - below + RADIX_BITS)) for j in range(max(below - RADIX_BITS, 0), below)),
                    zero)
        remainder = remainder * (1 << RADIX_BITS) + fresh
        ge = compare.greater_equal(s, arith.concat([remainder] * len(steps)), arith.concat(steps), arith=True)
        digit = sum((ge[i * n:(i + 1) * n] for i in range(len(steps))), zero)
        remainder = remainder - arith.beaver_mul(s, digit, divisor)
        if position >= LOW_BITS:
            high = high + digit * (1 << (position - LOW_BITS))
        else:
            low = low + digit * (1 << position)
    sticky = compare.not_equal(s, remainder, zero, arith=True)
    return [negative, high, low * 2 + sticky]


def _bits(s: SpuSession, x: ArithShare, count: int) -> list[ArithShare]:
    """0/1 arithmetic shares of the low `count` bits of x >= 0."""
    (words,) = boolean.a2b_many(s, [x])
    stacked = np.stack([(words.data >> np.uint64(j)) & np.uint64(1) for j in range(count)])
    (flat,) = boolean.b2a_bits_many(s, [BoolShare(stacked.ravel(), 1)])
    return [ArithShare(flat.data[j * len(x):(j + 1) * len(x)], 0) for j in range(count)]



def decode_quotient(negative: int, high: int, low: int, frac_bits: int) -> float:
    """The DOUBLE nearest the quotient `long_divide` opened: (2q + sticky) / 2^(frac_bits + 1) lies
    strictly between the same two rounding boundaries as the exact quotient (they are multiples of
    2^-frac_bits, `fraction_bits`), so Python's correctly rounded Fraction -> float is exact."""
    magnitude = float(Fraction((high << (LOW_BITS + 1)) + low, 1 << (frac_bits + 1)))
    return -magnitude if negative else magnitude
