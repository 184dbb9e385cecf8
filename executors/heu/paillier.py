"""Paillier encryption with DJN randomness, on top of phe's key types.

Scheme (Paillier, EUROCRYPT 1999, with g = n + 1; randomness as in Damgård, Jurik and Nielsen,
"A generalization of Paillier's public-key system with applications to electronic voting",
Int. J. Inf. Secur. 9(6), 2010, section 4.2 optimisation, s = 1):

    key:     n = pq from `phe.paillier.generate_paillier_keypair` (2048 bits default; 3072 selectable),
             a fresh pair per query (`group_sum.py`); x uniform in Z_n^*, h = -x^2 mod n,
             h_s = h^n mod n^2.  Public key (n, h_s).
    encrypt: c = (1 + m n) * h_s^a mod n^2,  a uniform on [0, 2^l),  l >= ceil(k/2),  k = |n|
             (l = ceil(k/2) rounded up to whole windows of the table: 1034 bits at k = 2048 with
             11-bit windows). (1 + n)^m = 1 + m n mod n^2, so the message costs one multiplication;
             h_s^a comes from a fixed-base table (`fixed_base.py`): ceil(l/w) multiplications.
    owner:   the key owner (who encrypts in `he_group_sum`) computes the same c modulo p^2 and q^2
             with the SAME a and tables of h_s mod p^2 and mod q^2, and joins them by the CRT
             (`OwnerEncryptor`, `kernels.OwnerKernel`). h_s mod p^2 lies in the subgroup of order
             p - 1, whose elements are fixed by their residue mod p: the tables hold |p|-bit
             residues and Fermat quotients, multiplied and summed, then corrected once
             (`teichmuller.py`), ~0.6x the cost of full-width tables. The ciphertext is identical to
             the public-key computation's for the same a, so its distribution is unchanged (tested
             bit for bit).
             Reducing a modulo the order of h_s mod p^2 (which divides p - 1, since h_s is an n-th
             residue) would also give the same c, but saves nothing: a already has ~|p| bits.
    decrypt: CRT decryption mod p^2 and q^2 (phe's formula, `kernels.CrtDecryptor`): h_s^a = (h^a)^n
             is an n-th residue, so c is an ordinary Paillier ciphertext for phe's key -- phe's
             `raw_decrypt`, its `EncryptedNumber` and homomorphic addition work on it as is (tested).
             A caller that knows the plaintext is below p decrypts mod p^2 alone (half the work).

Security (semi-honest): semantic security under the Decisional Composite Residuosity assumption
(Paillier 1999) when a is uniform modulo the order of h_s; with a of ceil(k/2) bits, additionally
that h^a for such short a is indistinguishable from h^a for a uniform full-length a. Håstad, Schrift
and Shamir ("The discrete logarithm modulo a composite hides O(n) bits", JCSS 47(3), 1993) show
that exponentiation modulo a composite hides the top half of the exponent's bits under the
factoring assumption, which DCR implies; this is the argument DJN give for ceil(k/2)-bit
exponents, and the choice of SecretFlow HEU (`dj`, `zpaillier`) and ABY (`djn`). We do NOT use
shorter exponents (e.g. 2 lambda = 256 bits): they would need a short-exponent discrete-log
assumption in Z_n^* that no standard reduction supports.

Re-randomisation of results that go back to the key owner: that party can open the randomness of
a ciphertext with the factorisation, so a sum it decrypts must carry randomness independent of
which of its ciphertexts went into it. Two ways:
  * `rerandomize`: Paillier's c * r^n mod n^2 with r uniform in Z_n^* (one full exponentiation;
    for single ciphertexts);
  * `Randomizer`: c * h_s^a' mod n^2 with a' uniform on [0, 2^(k+128)), from a fixed-base table
    (~6x cheaper). Every ciphertext the protocol sums has randomness in the cyclic group <h_s>
    (h_s^a, products of such, and 1), and ord(h_s) < n, so a' mod ord(h_s) is within statistical
    distance 2^-128 of uniform and the product's randomness is uniform on <h_s> whatever went into
    it. This needs no assumption (it is statistical, not DJN's computational argument, which does
    not hold against the party that knows the factorisation).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import gmpy2
from gmpy2 import mpz
from phe import paillier

from sqlsecure.errors import DataError, ProtocolError
from sqlsecure.executors.heu.fixed_base import choose_window, random_exponent
from sqlsecure.executors.heu.kernels import CrtDecryptor, OwnerKernel, PublicKernel, from_blob, owner_window, to_blob

DEFAULT_KEY_BITS = 2048
TABLE_MIN = 256  # below this many public-key encryptions, square-and-multiply beats building a table
RANDOMIZER_SLACK = 128  # statistical distance 2^-128 of randomisers from uniform on <h_s>
RANDOMIZER_TABLE_MIN = 4  # fewer randomisers: one powmod each


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
    """The key owner's side: phe's private key plus the public key it belongs to."""

    def __init__(self, public_key: PublicKey, phe_key: paillier.PaillierPrivateKey):
        if phe_key.public_key.n != public_key.n:
            raise ValueError("phe private key does not match the public key")
        self.public_key = public_key
        self.phe = phe_key
        self._decryptor: CrtDecryptor | None = None

    @property
    def p(self) -> int:
        return self.phe.p

    @property
    def q(self) -> int:
        return self.phe.q

    def decrypt(self, ciphertexts, plaintext_bits: int | None = None) -> list[int]:
        """Plaintexts in [0, n) of raw ciphertexts (CRT decryption; mod p^2 alone when the caller
        knows every plaintext is below 2^plaintext_bits <= p)."""
        if self._decryptor is None:
            self._decryptor = CrtDecryptor(self.public_key.n, self.p, self.q)
        return self._decryptor.decrypt([mpz(c) for c in ciphertexts], plaintext_bits)


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


def check_plaintexts(public_key: PublicKey, plaintexts) -> list:
    """The plaintexts as a list, after checking each is in [0, n)."""
    plaintexts = list(plaintexts)
    n = public_key.n
    for m in plaintexts:
        if not 0 <= m < n:
            raise DataError("Paillier plaintext out of range [0, n): encode (pack) values first")
    return plaintexts


class Encryptor:
    """Encrypts under one public key: (1 + m n) h_s^a mod n^2 with a fixed-base table mod n^2.

    `uses` (expected number of encryptions) sizes the table's window (`fixed_base.choose_window`);
    without it the first batch does. Below `TABLE_MIN` encryptions no table is built.
    """

    def __init__(self, public_key: PublicKey, uses: int | None = None):
        self.public_key = public_key
        self._uses = uses
        self._kernel: PublicKernel | None = None

    def encrypt(self, plaintexts) -> list[mpz]:
        """Ciphertexts of plaintexts m in [0, n), a fresh exponent per message."""
        pk = self.public_key
        plaintexts = check_plaintexts(pk, plaintexts)
        uses = self._uses or len(plaintexts)
        if self._kernel is None and max(uses, len(plaintexts)) >= TABLE_MIN:
            w = choose_window(pk.exponent_bits, uses, 2 * pk.n_bits)
            self._kernel = PublicKernel(pk.n, pk.hs, pk.exponent_bits, w)
        if self._kernel is not None:
            return self._kernel.encrypt(plaintexts)
        n, n2, hs, bits = mpz(pk.n), mpz(pk.nsquare), mpz(pk.hs), pk.exponent_bits
        return [(1 + m * n) * gmpy2.powmod(hs, random_exponent(bits), n2) % n2 for m in plaintexts]


class OwnerEncryptor:
    """The key owner's encryptor: the same ciphertexts as `Encryptor`, computed mod p^2 and q^2.

    Same exponent a, two tables (mod p^2 and mod q^2, half the width of n^2, with |p|-bit entries:
    `teichmuller.TeichmullerTable`), joined by the CRT (`kernels.OwnerKernel`): ~2x faster than
    `Encryptor` at the same window. The distribution of c is exactly that of `Encryptor` (tested).
    `uses` sizes the tables as for `Encryptor`.
    """

    def __init__(self, private_key: PrivateKey, uses: int | None = None):
        self.private_key = private_key
        self.public_key = private_key.public_key
        self._uses = uses
        self._kernel: OwnerKernel | None = None

    @property
    def window_bits(self) -> int | None:
        return self._kernel.table_p.window_bits if self._kernel is not None else None

    def encrypt(self, plaintexts) -> list[mpz]:
        pk, sk = self.public_key, self.private_key
        plaintexts = check_plaintexts(pk, plaintexts)
        if self._kernel is None:
            w = owner_window(pk.exponent_bits, max(self._uses or 0, len(plaintexts), 1), pk.n_bits)
            self._kernel = OwnerKernel(pk.n, pk.hs, sk.p, sk.q, pk.exponent_bits, w)
        return self._kernel.encrypt(plaintexts)


def randomizer_bits(n_bits: int) -> int:
    """Exponent bits of a randomiser h_s^a: |n| + 128, so that a mod ord(h_s) (ord(h_s) < n) is
    within statistical distance 2^-128 of uniform; rounded up to bytes."""
    return -(-(n_bits + RANDOMIZER_SLACK) // 8) * 8


class Randomizer:
    """Fresh randomisers h_s^a mod n^2 with a of `randomizer_bits` (uniform on <h_s>, statistically).

    Multiplying a ciphertext whose randomness lies in <h_s> -- every ciphertext of `Encryptor` and
    `OwnerEncryptor`, and their products -- by such a factor makes its randomness uniform on <h_s>
    and independent of where it came from, even for the key owner (see the module docstring).
    """

    def __init__(self, public_key: PublicKey, uses: int = 1):
        self.public_key = public_key
        self.bits = randomizer_bits(public_key.n_bits)
        self._uses = uses
        self._kernel: PublicKernel | None = None

    def factors(self, count: int) -> list[mpz]:
        pk = self.public_key
        if self._kernel is None and max(self._uses, count) < RANDOMIZER_TABLE_MIN:
            n2, hs = mpz(pk.nsquare), mpz(pk.hs)
            return [gmpy2.powmod(hs, random_exponent(self.bits), n2) for _ in range(count)]
        if self._kernel is None:
            w = choose_window(self.bits, max(self._uses, count), 2 * pk.n_bits)
            self._kernel = PublicKernel(pk.n, pk.hs, self.bits, w)
        return self._kernel.factors(count)


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


def mask_and_randomize(public_key: PublicKey, ciphertext, plaintext_add: int, factor) -> mpz:
    """c * (1 + m' n) * factor mod n^2: adds m' and multiplies in a randomiser from `Randomizer`."""
    n, n2 = mpz(public_key.n), mpz(public_key.nsquare)
    return mpz(ciphertext) * ((1 + (plaintext_add % n) * n) % n2) % n2 * mpz(factor) % n2


def add(public_key: PublicKey, a, b) -> mpz:
    """Enc(x) * Enc(y) = Enc(x + y mod n)."""
    return mpz(a) * mpz(b) % public_key.nsquare


def shift_left(public_key: PublicKey, ciphertext, bits: int) -> mpz:
    """Enc(x) -> Enc(x * 2^bits mod n): c^(2^bits) mod n^2, i.e. `bits` squarings."""
    return gmpy2.powmod(mpz(ciphertext), mpz(1) << bits, public_key.nsquare)


def ciphertexts_to_blob(ciphertexts, width: int) -> bytes:
    """Fixed-width big-endian concatenation (the buffer of an Arrow fixed_size_binary column)."""
    return to_blob(ciphertexts, width)


def ciphertexts_from_blob(blob: bytes, public_key: PublicKey, frm: str = "peer") -> list[mpz]:
    """Parse and range-check fixed-width ciphertexts (0 < c < n^2)."""
    width = public_key.ciphertext_bytes
    if len(blob) % width:
        raise ProtocolError(f"{frm} sent {len(blob)} ciphertext bytes, not a multiple of {width}")
    n2 = mpz(public_key.nsquare)
    out = from_blob(blob, width)
    for c in out:
        if not 0 < c < n2:
            raise ProtocolError(f"{frm} sent a ciphertext outside (0, n^2)")
    return out
