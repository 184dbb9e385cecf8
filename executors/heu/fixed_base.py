"""Fixed-base exponentiation with windowed precomputed tables.

When one base g is raised to many random exponents modulo one modulus M (the randomness of
DJN-Paillier encryption, `h_s^a mod n^2`), split the exponent into w-bit digits a = sum_i d_i 2^(w i)
and precompute for every digit position i the 2^w powers g^(d 2^(w i)), d < 2^w. Then
g^a = prod_i T[i][d_i] mod M: ceil(bits / w) modular multiplications per exponent instead of
~1.2 per exponent bit for square-and-multiply (Brickell, Gordon, McCurley and Wilson, "Fast
exponentiation with precomputation", EUROCRYPT 1992; Menezes, van Oorschot and Vanstone, Handbook
of Applied Cryptography, alg. 14.109).

The window trades memory and set-up for speed: a table holds ceil(bits / w) * 2^w residues and
costs as many multiplications to build. `choose_window` picks the w that minimises build + use for
the number of exponentiations expected, within a memory budget (for the 2048-bit key owner's two
tables mod p^2 and q^2 and 10^4-10^5 uses per process: w = 10-11, 94 multiplications per exponent
and prime at w = 11 instead of 128 at w = 8, ~150 MiB; larger tables gain little, their lookups
miss the caches). The key owner's tables are `teichmuller.TeichmullerTable`s: the same lookups on
half-width entries.

Exponents are drawn as w-bit digits straight from the OS CSPRNG (`random_digits`), so a is uniform
on [0, 2^(w * windows)) -- at least the requested bits, never fewer.

This module imports nothing from `sqlsecure` (only gmpy2 and numpy): the HE worker processes load
it on its own.
"""

from __future__ import annotations

import os

import numpy as np
from gmpy2 import mpz

MIN_WINDOW, MAX_WINDOW = 4, 16
TABLE_BUDGET = 160 << 20  # bytes of table entries one `choose_window` call may plan for
ENTRY_OVERHEAD = 48       # bytes of a gmpy2 mpz object beyond its limbs


def windows_for(exponent_bits: int, window_bits: int) -> int:
    return -(-exponent_bits // window_bits)


def table_bytes(exponent_bits: int, window_bits: int, modulus_bits: int, entry_bytes: int | None = None) -> int:
    """Memory of one table: windows * 2^w residues of modulus_bits bits (or of `entry_bytes` each)."""
    entry = entry_bytes or (modulus_bits + 63) // 64 * 8 + ENTRY_OVERHEAD
    return windows_for(exponent_bits, window_bits) * (1 << window_bits) * entry


def choose_window(exponent_bits: int, uses: int, modulus_bits: int, tables: int = 1,
                  budget: int = TABLE_BUDGET, build_cost: float = 1.0, entry_bytes: int | None = None) -> int:
    """The window w minimising build + use, ceil(bits/w) * (build_cost 2^w + uses) (`build_cost`:
    building one entry in units of one lookup), for `tables` tables of `modulus_bits`-bit residues
    (or of `entry_bytes` per entry) within `budget` bytes (w >= 4 in any case)."""
    best, best_cost = MIN_WINDOW, None
    for w in range(MIN_WINDOW, MAX_WINDOW + 1):
        if w > MIN_WINDOW and tables * table_bytes(exponent_bits, w, modulus_bits, entry_bytes) > budget:
            break
        cost = windows_for(exponent_bits, w) * (build_cost * (1 << w) + max(0, uses))
        if best_cost is None or cost < best_cost:
            best, best_cost = w, cost
    return best


def random_digits(count: int, windows: int, window_bits: int) -> np.ndarray:
    """`count` fresh exponents, each uniform on [0, 2^(w * windows)), as a (count, windows) int64
    array of their w-bit digits (least significant first), from the OS CSPRNG."""
    w = window_bits
    if count <= 0:
        return np.zeros((0, windows), dtype=np.int64)
    if w == 8:
        return np.frombuffer(os.urandom(count * windows), np.uint8).reshape(count, windows).astype(np.int64)
    nbits = windows * w
    nbytes = -(-nbits // 8)
    raw = np.frombuffer(os.urandom(count * nbytes), np.uint8).reshape(count, nbytes)
    bits = np.unpackbits(raw, axis=1, bitorder="little")[:, :nbits].reshape(count, windows, w)
    return bits.astype(np.int64) @ (np.int64(1) << np.arange(w, dtype=np.int64))


def random_indices(count: int, windows: int, window_bits: int) -> list[list[int]]:
    """`count` fresh exponents (as `random_digits`) as flat table indices i * 2^w + d_i."""
    if count <= 0:
        return []
    digits = random_digits(count, windows, window_bits)
    return (digits + (np.arange(windows, dtype=np.int64) << window_bits)).tolist()


def digits_of(indices, window_bits: int) -> np.ndarray:
    """The digit array of flat table `indices` (the inverse of `random_indices`' encoding)."""
    return np.asarray(indices, dtype=np.int64) & ((1 << window_bits) - 1)


def exponent_of(indices: list[int], window_bits: int) -> int:
    """The exponent a whose digits `random_indices` drew (for tests)."""
    mask = (1 << window_bits) - 1
    return sum((k & mask) << (window_bits * i) for i, k in enumerate(indices))


class FixedBaseTable:
    """Powers g^(d * 2^(w i)) mod M for i < windows, d < 2^w, in one flat list (index i * 2^w + d)."""

    def __init__(self, base: int, modulus: int, exponent_bits: int, window_bits: int = 8):
        if exponent_bits < 1:
            raise ValueError("exponent_bits must be positive")
        if not 1 <= window_bits <= MAX_WINDOW:
            raise ValueError(f"window_bits must be in [1, {MAX_WINDOW}]")
        M = self.modulus = mpz(modulus)
        self.window_bits = window_bits
        self.windows = windows_for(exponent_bits, window_bits)
        self.exponent_bits = self.windows * window_bits
        size = 1 << window_bits
        table: list[mpz] = []
        g = mpz(base) % M
        for _ in range(self.windows):
            row = [mpz(1), g]
            for _ in range(size - 2):
                row.append(row[-1] * g % M)
            table.extend(row)
            g = row[-1] * g % M  # g^(2^(w (i+1)))
        self.entries = table

    def random_indices(self, count: int) -> list[list[int]]:
        return random_indices(count, self.windows, self.window_bits)

    def power(self, indices: list[int], start: int = 1) -> mpz:
        """start * g^a mod M for the exponent whose digit indices are `indices`."""
        if len(indices) != self.windows:
            raise ValueError(f"expected {self.windows} exponent digits, got {len(indices)}")
        T, M = self.entries, self.modulus
        acc = mpz(start)
        for k in indices:
            acc = acc * T[k] % M
        return acc

    def random_powers(self, starts: list[int], indices: list[list[int]] | None = None) -> list[mpz]:
        """[s * g^a_s mod M for s in starts], each a_s fresh and uniform on [0, 2^exponent_bits)
        (or the exponents whose digit `indices` are given, for tests)."""
        T, M = self.entries, self.modulus
        out = []
        for s, digits in zip(starts, indices if indices is not None else self.random_indices(len(starts))):
            acc = mpz(s)
            for k in digits:
                acc = acc * T[k] % M
            out.append(acc)
        return out


def random_exponent(bits: int) -> mpz:
    """A uniform exponent on [0, 2^bits) (bits rounded up to whole bytes)."""
    nbytes = -(-bits // 8)
    return mpz(int.from_bytes(os.urandom(nbytes), "little"))
