"""Paillier encryption with DJN short randomness, on top of phe's key types.

Scheme (Paillier, EUROCRYPT 1999, with g = n + 1; randomness as in Damgård, Jurik and Nielsen,
"A generalization of Paillier's public-key system with applications to electronic voting",
Int. J. Inf. Secur. 9(6), 2010, section 4.2 optimisation, s = 1):

    key:     n = pq from `phe.paillier.generate_paillier_keypair` (2048 bits default; 3072 selectable);
             x uniform in Z_n^*, h = -x^2 mod n, h_s = h^n mod n^2.  Public key (n, h_s).
    encrypt: c = (1 + m n) * h_s^a mod n^2,  a uniform on [0, 2^ceil(k/2)),  k = |n|.
             (1 + n)^m = 1 + m n mod n^2, so the message costs one multiplication; h_s^a comes from a
             byte-windowed fixed-base table (`fixed_base.py`): ceil(k/16) multiplications mod n^2.
    decrypt: phe's CRT decryption (mod p^2 and q^2), unchanged: h_s^a = (h^a)^n is an n-th residue,
             so c is an ordinary Paillier ciphertext for phe's key -- phe's `raw_decrypt`, its
             `EncryptedNumber` and homomorphic addition work on it as is (tested).

Security (semi-honest): semantic security under the Decisional Composite Residuosity assumption
(Paillier 1999) when a is uniform modulo the order of h_s; with a of ceil(k/2) bits, additionally
that h^a for such short a is indistinguishable from h^a for a uniform full-length a. Håstad, Schrift
and Shamir ("The discrete logarithm modulo a composite hides O(n) bits", JCSS 47(3), 1993) show
that exponentiation modulo a composite hides the top half of the exponent's bits under the
factoring assumption, which DCR implies; this is the argument DJN give for ceil(k/2)-bit
exponents, and the choice of SecretFlow HEU (`dj`, `zpaillier`) and ABY (`djn`). We do NOT use
shorter exponents (e.g. 2 lambda = 256 bits): they would need a short-exponent discrete-log
assumption in Z_n^* that no standard reduction supports.

Re-randomisation (`rerandomize`, used by the party that returns results to the key owner) is
Paillier's: c * r^n mod n^2 with r uniform in Z_n^*. Its output is a fresh encryption with uniform
randomness whatever the randomness of c, so the key owner, who can open randomness with the
factorisation, learns nothing from it beyond the plaintext.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import gmpy2
from gmpy2 import mpz
from phe import paillier

from sqlsecure.errors import DataError, ProtocolError
from sqlsecure.executors.heu.fixed_base import FixedBaseTable, random_exponent

DEFAULT_KEY_BITS = 2048
TABLE_MIN = 256  # below this many encryptions, building a 16 MiB table costs more than it saves


def djn_exponent_bits(n_bits: int) -> int:
    """ceil(k/2) bits of randomness exponent for a k-bit modulus (DJN 2010), rounded up to bytes."""
    return -(-((n_bits + 1) // 2) // 8) * 8


@dataclass(frozen=True)
class PublicKey:
    """(n, h_s): phe's modulus plus the DJN randomness base h_s = (-x^2)^n mod n^2."""

    n: int
    hs: int

    @property
    def n_bits(self) -> int:
        return self.n.bit_length()

    @property
    def nsquare(self) -> int:
        return self.n * self.n

    @property
    def exponent_bits(self) -> int:
        return djn_exponent_bits(self.n_bits)

    @property
    def ciphertext_bytes(self) -> int:
        return (self.nsquare.bit_length() + 7) // 8

    def to_phe(self) -> paillier.PaillierPublicKey:
        return paillier.PaillierPublicKey(self.n)

    def to_bytes(self) -> bytes:
        nb = (self.n_bits + 7) // 8
        return nb.to_bytes(4, "big") + self.n.to_bytes(nb, "big") + self.hs.to_bytes(2 * nb, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> "PublicKey":
        if len(data) < 4:
            raise ProtocolError("truncated HE public key")
        nb = int.from_bytes(data[:4], "big")
        if len(data) != 4 + 3 * nb or nb < 64:
            raise ProtocolError(f"malformed HE public key ({len(data)} bytes)")
        n = int.from_bytes(data[4:4 + nb], "big")
        hs = int.from_bytes(data[4 + nb:], "big")
        if n % 2 == 0 or not 1 < hs < n * n or math.gcd(hs, n) != 1:
            raise ProtocolError("invalid HE public key")
        return cls(n, hs)


class PrivateKey:
    """The key owner's side: phe's private key (CRT decryption) plus the public key it belongs to."""

    def __init__(self, public_key: PublicKey, phe_key: paillier.PaillierPrivateKey):
        if phe_key.public_key.n != public_key.n:
            raise ValueError("phe private key does not match the public key")
        self.public_key = public_key
        self.phe = phe_key

    @property
    def p(self) -> int:
        return self.phe.p

    @property
    def q(self) -> int:
        return self.phe.q

    def decrypt(self, ciphertexts) -> list[int]:
        """Plaintexts in [0, n) of raw ciphertexts (phe's CRT decryption)."""
        raw = self.phe.raw_decrypt
        return [raw(int(c)) for c in ciphertexts]


def keypair_from_phe(phe_public: paillier.PaillierPublicKey,
                     phe_private: paillier.PaillierPrivateKey) -> tuple[PublicKey, PrivateKey]:
    """Add a fresh DJN base h_s to an existing phe key pair."""
    n = mpz(phe_public.n)
    while True:
        x = mpz(int.from_bytes(os.urandom((phe_public.n.bit_length() + 7) // 8 + 16), "big")) % n
        if x > 1 and gmpy2.gcd(x, n) == 1:
            break
    h = (-(x * x)) % n
    public = PublicKey(int(n), int(gmpy2.powmod(h, n, n * n)))
    return public, PrivateKey(public, phe_private)


def generate_keypair(n_length: int = DEFAULT_KEY_BITS) -> tuple[PublicKey, PrivateKey]:
    """A fresh key pair; n_length 2048 (default) or 3072 for production, 1024 only in tests."""
    if n_length < 1024 or n_length % 8:
        raise ValueError(f"key length {n_length} not allowed (at least 1024 bits, whole bytes)")
    phe_public, phe_private = paillier.generate_paillier_keypair(n_length=n_length)
    return keypair_from_phe(phe_public, phe_private)


class Encryptor:
    """Encrypts under one public key; builds the fixed-base table on the first large batch."""

    def __init__(self, public_key: PublicKey):
        self.public_key = public_key
        self._n = mpz(public_key.n)
        self._n2 = mpz(public_key.nsquare)
        self._table: FixedBaseTable | None = None

    def _check(self, plaintexts) -> list:
        n = self.public_key.n
        for m in plaintexts:
            if not 0 <= m < n:
                raise DataError("Paillier plaintext out of range [0, n): encode (pack) values first")
        return plaintexts

    def encrypt(self, plaintexts) -> list[mpz]:
        """Ciphertexts (1 + m n) h_s^a mod n^2 of plaintexts m in [0, n), a fresh per message."""
        plaintexts = self._check(list(plaintexts))
        n, n2 = self._n, self._n2
        starts = [(1 + m * n) % n2 for m in plaintexts]
        if self._table is None and len(plaintexts) >= TABLE_MIN:
            self._table = FixedBaseTable(self.public_key.hs, n2, self.public_key.exponent_bits)
        if self._table is not None:
            return self._table.random_powers(starts)
        hs, bits = mpz(self.public_key.hs), self.public_key.exponent_bits
        return [s * gmpy2.powmod(hs, random_exponent(bits), n2) % n2 for s in starts]


class OwnerEncryptor:
    """The key owner's encryptor: the same ciphertexts as `Encryptor`, computed mod p^2 and q^2.

    (1 + m n) h_s^a is computed modulo p^2 and q^2 with the same exponent a and combined by the
    CRT; multiplications at half the width cost about a third, so this is ~1.4x faster. Only the
    key owner knows p and q, so only it can use this; the distribution of c is unchanged.
    """

    def __init__(self, private_key: PrivateKey):
        pk = private_key.public_key
        self.public_key = pk
        p, q = mpz(private_key.p), mpz(private_key.q)
        self._n, self._p2, self._q2 = mpz(pk.n), p * p, q * q
        self._q2_inv = gmpy2.invert(self._q2, self._p2)
        self._tp: FixedBaseTable | None = None
        self._tq: FixedBaseTable | None = None

    def _tables(self) -> tuple[FixedBaseTable, FixedBaseTable]:
        if self._tp is None:
            bits, hs = self.public_key.exponent_bits, mpz(self.public_key.hs)
            self._tp = FixedBaseTable(hs, self._p2, bits)
            self._tq = FixedBaseTable(hs, self._q2, bits)
        return self._tp, self._tq

    def encrypt(self, plaintexts) -> list[mpz]:
        plaintexts = list(plaintexts)
        n = self.public_key.n
        for m in plaintexts:
            if not 0 <= m < n:
                raise DataError("Paillier plaintext out of range [0, n): encode (pack) values first")
        tp, tq = self._tables()
        w = tp.windows
        noise = os.urandom(w * len(plaintexts))
        p2, q2, q2_inv, nn = self._p2, self._q2, self._q2_inv, self._n
        out = []
        for k, m in enumerate(plaintexts):
            a = noise[k * w:(k + 1) * w]
            start = 1 + m * nn
            cp = tp.power(a, start % p2)
            cq = tq.power(a, start % q2)
            out.append(cq + q2 * ((cp - cq) * q2_inv % p2))
        return out


def random_unit(n: int) -> mpz:
    """A uniform element of Z_n^* (rejection sampling from the OS CSPRNG)."""
    nbits = n.bit_length()
    nbytes = (nbits + 7) // 8
    excess = 8 * nbytes - nbits
    while True:
        r = int.from_bytes(os.urandom(nbytes), "big") >> excess
        if 0 < r < n and math.gcd(r, n) == 1:
            return mpz(r)


def rerandomize(public_key: PublicKey, ciphertext, plaintext_add: int = 0) -> mpz:
    """c * (1 + m' n) * r^n mod n^2, r uniform in Z_n^*: a fresh encryption of (m + m') mod n."""
    n, n2 = mpz(public_key.n), mpz(public_key.nsquare)
    noise = gmpy2.powmod(random_unit(public_key.n), n, n2)
    return mpz(ciphertext) * ((1 + (plaintext_add % n) * n) % n2) % n2 * noise % n2


def add(public_key: PublicKey, a, b) -> mpz:
    """Enc(x) * Enc(y) = Enc(x + y mod n)."""
    return mpz(a) * mpz(b) % public_key.nsquare


def shift_left(public_key: PublicKey, ciphertext, bits: int) -> mpz:
    """Enc(x) -> Enc(x * 2^bits mod n): c^(2^bits) mod n^2, i.e. `bits` squarings."""
    return gmpy2.powmod(mpz(ciphertext), mpz(1) << bits, public_key.nsquare)


def ciphertexts_to_blob(ciphertexts, width: int) -> bytes:
    """Fixed-width big-endian concatenation (the buffer of an Arrow fixed_size_binary column)."""
    return b"".join(mpz(c).to_bytes(width, "big") for c in ciphertexts)


def ciphertexts_from_blob(blob: bytes, public_key: PublicKey, frm: str = "peer") -> list[mpz]:
    """Parse and range-check fixed-width ciphertexts (0 < c < n^2)."""
    width = public_key.ciphertext_bytes
    if len(blob) % width:
        raise ProtocolError(f"{frm} sent {len(blob)} ciphertext bytes, not a multiple of {width}")
    n2 = mpz(public_key.nsquare)
    out = [mpz.from_bytes(blob[i:i + width], "big") for i in range(0, len(blob), width)]
    for c in out:
        if not 0 < c < n2:
            raise ProtocolError(f"{frm} sent a ciphertext outside (0, n^2)")
    return out
