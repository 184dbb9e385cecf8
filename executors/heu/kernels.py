"""Paillier batch arithmetic: DJN encryption (public key and key owner), CRT decryption, randomisers.

The formulas and their security argument are in `paillier.py`; this module only computes. It
imports nothing from `sqlsecure` (gmpy2, numpy, `fixed_base` and `teichmuller` only), so the HE worker processes
(`worker_process.py`) load it on its own, and `paillier.py` wraps it with input checks.

Plaintexts are ints in [0, n) (checked by the callers); ciphertexts are gmpy2 `mpz` in (0, n^2).
"""

from __future__ import annotations

import gmpy2
from gmpy2 import mpz

try:
    from .fixed_base import TABLE_BUDGET, FixedBaseTable, choose_window, digits_of, random_digits
    from .teichmuller import BUILD_COST, TeichmullerTable, entry_bytes
except ImportError:  # loaded as a top-level module by a worker process (see worker_process.py)
    from fixed_base import TABLE_BUDGET, FixedBaseTable, choose_window, digits_of, random_digits  # type: ignore[no-redef]
    from teichmuller import BUILD_COST, TeichmullerTable, entry_bytes  # type: ignore[no-redef]


class PublicKernel:
    """c = (1 + m n) * h_s^a mod n^2 with one fixed-base table mod n^2 (anyone with the public key)."""

    def __init__(self, n: int, hs: int, exponent_bits: int, window_bits: int):
        self.n = mpz(n)
        self.n2 = self.n * self.n
        self.table = FixedBaseTable(hs, self.n2, exponent_bits, window_bits)

    def encrypt(self, plaintexts: list[int], indices: list[list[int]] | None = None) -> list[mpz]:
        """Fresh exponents, or those whose digit `indices` are given (`fixed_base.random_indices`)."""
        n, n2 = self.n, self.n2
        return self.table.random_powers([(1 + m * n) % n2 for m in plaintexts], indices)

    def factors(self, count: int) -> list[mpz]:
        """`count` fresh h_s^a mod n^2 (randomisers)."""
        return self.table.random_powers([1] * count)


def owner_window(exponent_bits: int, uses: int, n_bits: int, budget: int = TABLE_BUDGET) -> int:
    """The window of `OwnerKernel`'s two half-width tables (mod p^2 and q^2) for `uses` encryptions."""
    return choose_window(exponent_bits, uses, n_bits, tables=2, budget=budget, build_cost=BUILD_COST,
                         entry_bytes=entry_bytes(-(-n_bits // 2)))


class OwnerKernel:
    """The same ciphertexts as `PublicKernel`, computed mod p^2 and mod q^2 and joined by the CRT.

    c mod p^2 = ((1 + m n) mod p^2) * (h_s mod p^2)^a and likewise mod q^2, with ONE exponent a
    drawn per message and used in both tables, so c = (1 + m n) h_s^a mod n^2 exactly (Garner:
    c = c_q + q^2 * ((c_p - c_q) * (q^2)^-1 mod p^2)). Only the holder of p and q can do this.
    The tables are half-width (`teichmuller.TeichmullerTable`), and (1 + m n) mod p^2 =
    1 + p (m q mod p) is folded into their one correction.
    """

    def __init__(self, n: int, hs: int, p: int, q: int, exponent_bits: int, window_bits: int):
        self.n = mpz(n)
        self.p, self.q = p, q = mpz(p), mpz(q)
        self.p2, self.q2 = p * p, q * q
        self.q2_inv = gmpy2.invert(self.q2, self.p2)
        self.table_p = TeichmullerTable(hs, p, exponent_bits, window_bits)
        self.table_q = TeichmullerTable(hs, q, exponent_bits, window_bits)

    def encrypt(self, plaintexts: list[int], indices: list[list[int]] | None = None) -> list[mpz]:
        """Fresh exponents, or those whose digit `indices` are given (`fixed_base.random_indices`)."""
        tp = self.table_p
        if indices is not None and len(indices) != len(plaintexts):
            raise ValueError(f"{len(indices)} exponents for {len(plaintexts)} plaintexts")
        if not plaintexts:
            return []
        digits = (random_digits(len(plaintexts), tp.windows, tp.window_bits) if indices is None
                  else digits_of(indices, tp.window_bits))
        p, q, p2, q2, q2_inv = self.p, self.q, self.p2, self.q2, self.q2_inv
        cps = tp.powers(digits, [m * q for m in plaintexts])
        cqs = self.table_q.powers(digits, [m * p for m in plaintexts])
        return [cq + q2 * ((cp - cq) * q2_inv % p2) for cp, cq in zip(cps, cqs)]


class CrtDecryptor:
    """Paillier decryption mod p^2 and q^2 (as phe's), or mod p^2 alone when the plaintext is < p.

    m_p = L_p(c^(p-1) mod p^2) * h_p mod p with L_p(x) = (x - 1) / p and h_p = (-q)^-1 mod p
    (for g = n + 1, L_p(g^(p-1) mod p^2) = (p - 1) q = -q mod p); likewise m_q; m = CRT(m_p, m_q).
    A caller that knows every plaintext is below 2^bits with 2^bits <= p passes `plaintext_bits`
    and saves the second exponentiation: then m = m_p.
    """

    def __init__(self, n: int, p: int, q: int):
        if p < q:  # the larger prime first: it covers the most plaintext bits alone
            p, q = q, p
        self.n, self.p, self.q = mpz(n), mpz(p), mpz(q)
        self.p2, self.q2 = self.p * self.p, self.q * self.q
        self.hp = gmpy2.invert(-self.q % self.p, self.p)
        self.hq = gmpy2.invert(-self.p % self.q, self.q)
        self.q_inv = gmpy2.invert(self.q, self.p)

    def decrypt(self, ciphertexts, plaintext_bits: int | None = None) -> list[int]:
        p, q, p2, q2, hp, hq = self.p, self.q, self.p2, self.q2, self.hp, self.hq
        pm1, qm1 = p - 1, q - 1
        out = []
        if plaintext_bits is not None and plaintext_bits <= p.bit_length() - 1:
            for c in ciphertexts:
                out.append(int((gmpy2.powmod(c, pm1, p2) - 1) // p * hp % p))
            return out
        q_inv = self.q_inv
        for c in ciphertexts:
            mp = (gmpy2.powmod(c, pm1, p2) - 1) // p * hp % p
            mq = (gmpy2.powmod(c, qm1, q2) - 1) // q * hq % q
            out.append(int(mq + q * ((mp - mq) * q_inv % p)))
        return out


def to_blob(values, width: int) -> bytes:
    """Fixed-width big-endian concatenation (the buffer of an Arrow fixed_size_binary column)."""
    return b"".join([mpz(v).to_bytes(width, "big") for v in values])


def from_blob(blob, width: int) -> list[mpz]:
    """The inverse of `to_blob` (no range checks: the callers check what a peer sent)."""
    view = memoryview(blob)
    return [mpz.from_bytes(view[i:i + width], "big") for i in range(0, len(view), width)]
