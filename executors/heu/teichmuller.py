"""Fixed-base exponentiation mod p^2 with half-width tables: the key owner's encryption kernel.

The key owner computes DJN randomness h_s^a mod p^2 (and mod q^2, joined by the CRT). Since
h_s = h^n is an n-th residue, h_s mod p^2 lies in the subgroup T of order p - 1 of (Z/p^2)^*
(the Teichmüller lifts: raising to n kills the order-p part). An element t of T is fixed by
y = t mod p, and for every integer y prime to p

    t = y * (1 + p Q(y)) mod p^2,      Q(y) = (y^(p-1) - 1) / p mod p   (the Fermat quotient),

with Q(xy) = Q(x) + Q(y) mod p and Q(y + k p) = Q(y) - k / y mod p. So a product of table
entries t_i is the product of their half-width residues y_i, corrected once:

    prod t_i = (prod y_i mod p^2) * (1 + p * sum Q(y_i)) mod p^2.

A table keeps, for each window i and digit d, y = (h_s^(d 2^(w i)) mod p^2) mod p as an mpz of
|p| bits and Q(y) as 32-bit limbs in numpy; an exponentiation multiplies half-width entries into
a p^2 accumulator (two per reduction: y y' is |p^2| bits, then one multiplication and one
reduction mod p^2) and sums the quotients in numpy -- the same ceil(bits / w) table lookups as
`fixed_base.FixedBaseTable`, at about 60% of its cost. The results are the same integers
(tested): only the arithmetic changes, not the ciphertexts or their distribution.

Rows are built from y_{d+1} = y_d g mod p with carry k = floor(y_d g / p):
Q(y_{d+1}) = Q(y_d) + Q(g) + k / y_{d+1}, where 1 / y_{d+1} = (1 / g)^(d+1) comes from a second
chain (one inversion per row).

Like `fixed_base`, this module imports only gmpy2 and numpy: the HE worker processes load it alone.
"""

from __future__ import annotations

import gmpy2
import numpy as np
from gmpy2 import mpz

LIMB_BITS = 32
ENTRY_SLACK = 1.33  # resident bytes per entry / bytes of its objects (allocator overhead of the build)
BUILD_COST = 2.3  # building one entry (a carry, an inverse and a quotient step) ~ 2.3 lookups
BLOCK = 256  # exponentiations computed together: their accumulators and one table row stay in cache


def entry_bytes(prime_bits: int) -> int:
    """Resident memory of one table entry: an mpz residue and its quotient's limbs, with slack."""
    return int(((prime_bits + 63) // 64 * 8 + 48 + 4 * -(-prime_bits // LIMB_BITS)) * ENTRY_SLACK)


def fermat_quotient(y, p) -> mpz:
    """Q(y) = (y^(p-1) - 1) / p mod p for y prime to p (one exponentiation; the reference of tests)."""
    p = mpz(p)
    return (gmpy2.powmod(y, p - 1, p * p) - 1) // p % p


def _limbs(values: list, count: int) -> np.ndarray:
    """Non-negative ints below 2^(32 count) as a (len, count) array of little-endian 32-bit limbs."""
    raw = b"".join([int(v).to_bytes(4 * count, "little") for v in values])
    return np.frombuffer(raw, dtype="<u4").reshape(len(values), count)


def _from_limb_sums(sums: np.ndarray) -> list[int]:
    """The ints whose 32-bit limbs are the rows of `sums` (uint64 limbs, carries not yet propagated)."""
    width = 4 * sums.shape[1]
    low = np.ascontiguousarray(sums & 0xFFFFFFFF, dtype="<u4").tobytes()
    high = np.ascontiguousarray(sums >> 32, dtype="<u4").tobytes()
    return [int.from_bytes(low[i:i + width], "little") + (int.from_bytes(high[i:i + width], "little") << 32)
            for i in range(0, len(low), width)]


class TeichmullerTable:
    """Powers base^a mod p^2 of a base of order dividing p - 1, from half-width tables.

    Rows: `residues[i][d]` = y_{i,d} = (base^(d 2^(w i)) mod p^2) mod p (mpz, |p| bits) and
    `quotients[i, d]` = Q(y_{i,d}) as 32-bit limbs, for i < windows and d < 2^w. Memory per entry:
    one |p|-bit mpz plus |p| / 8 bytes of limbs, as much as one |p^2|-bit entry of `FixedBaseTable`.
    """

    def __init__(self, base: int, p: int, exponent_bits: int, window_bits: int):
        if exponent_bits < 1:
            raise ValueError("exponent_bits must be positive")
        if not 1 <= window_bits <= 16:
            raise ValueError("window_bits must be in [1, 16]")
        p = self.p = mpz(p)
        p2 = self.p2 = p * p
        t = mpz(base) % p2
        if t % p == 0 or gmpy2.powmod(t, p - 1, p2) != 1:
            raise ValueError("the base must lie in the subgroup of order p - 1 mod p^2 (an n-th residue)")
        self.window_bits = w = window_bits
        self.windows = -(-exponent_bits // w)
        self.exponent_bits = self.windows * w
        self.limbs = -(-p.bit_length() // LIMB_BITS)
        z, g = gmpy2.t_divmod(t, p)          # t = g + p z = g (1 + p Q(g)): Q(g) = z / g
        qg = z * gmpy2.invert(g, p) % p
        size = 1 << w
        residues: list[list[mpz]] = []
        quotients = np.empty((self.windows, size, self.limbs), dtype="<u4")
        for i in range(self.windows):
            g_inv = gmpy2.invert(g, p)
            ys, qs = [mpz(1)], [mpz(0)]
            y, qy, inv = mpz(1), mpz(0), mpz(1)
            for _ in range(size):            # the last step gives the next row's g = g^(2^w)
                k, y = gmpy2.t_divmod(y * g, p)
                inv = inv * g_inv % p
                qy = (qy + qg + k * inv) % p
                ys.append(y)
                qs.append(qy)
            residues.append(ys[:size])
            quotients[i] = _limbs(qs[:size], self.limbs)
            g, qg = ys[size], qs[size]
        self.residues = residues
        self.quotients = quotients

    def powers(self, digits: np.ndarray, offsets: list[int] | None = None) -> list[mpz]:
        """[(1 + p o) * base^a mod p^2] for each exponent a, given as a row of `digits` (count x
        windows, w-bit digits, least significant first), and offset o (default 0).

        The offset folds a factor of the form 1 + p o into the one correction: the key owner's
        message factor (1 + m n) mod p^2 = 1 + p (m q mod p)."""
        digits = np.asarray(digits, dtype=np.intp)
        if digits.ndim != 2 or digits.shape[1] != self.windows:
            raise ValueError(f"expected {self.windows} exponent digits per exponent, got shape {digits.shape}")
        count = digits.shape[0]
        if count and (digits.min() < 0 or digits.max() >= 1 << self.window_bits):
            raise ValueError(f"exponent digits must be in [0, 2^{self.window_bits})")
        if offsets is None:
            offsets = [0] * count
        elif len(offsets) != count:
            raise ValueError(f"{len(offsets)} offsets for {count} exponents")
        out: list[mpz] = []
        for start in range(0, count, BLOCK):
            out += self._powers(digits[start:start + BLOCK], offsets[start:start + BLOCK])
        return out

    def _powers(self, digits: np.ndarray, offsets: list[int]) -> list[mpz]:
        p, p2, Y = self.p, self.p2, self.residues
        cols = digits.T.tolist()
        # products of half-width entries, two per reduction mod p^2
        acc = [Y[0][a] for a in cols[0]]
        first = 1
        if self.windows > 1:
            Ya = Y[1]
            acc = [x * Ya[a] for x, a in zip(acc, cols[1])]
            first = 2
        for i in range(first, self.windows - 1, 2):
            Ya, Yb, ca, cb = Y[i], Y[i + 1], cols[i], cols[i + 1]
            acc = [x * (Ya[a] * Yb[b]) % p2 for x, a, b in zip(acc, ca, cb)]
        if (self.windows - first) % 2:
            Ya = Y[self.windows - 1]
            acc = [x * Ya[a] for x, a in zip(acc, cols[-1])]
        # sum of the quotients, limb by limb (limbs < 2^32: uint64 sums are exact up to 2^32 windows)
        rows = np.arange(self.windows)[:, None]
        sums = self.quotients[rows, digits.T].sum(axis=0, dtype=np.uint64)
        return [x * (1 + p * ((o + s) % p)) % p2 for x, o, s in zip(acc, offsets, _from_limb_sums(sums))]
