"""Oblivious transfer for the KKRT PSI: base OTs, their IKNP extension, and KKRT's 1-out-of-∞ OT.

Three layers, each a pair of plain functions (one per role) that talk only through an `Endpoint`:

1. Base OT — Chou and Orlandi, "The Simplest Protocol for Oblivious Transfer" (LATINCRYPT 2015),
   semi-honest, in the quadratic-residue subgroup (prime order q = (p-1)/2) of the RFC 7919
   ffdhe3072 group, g = 2 (128-bit security). Exponents are 256 bits, twice the security strength,
   as NIST SP 800-56A rev. 3 allows for safe-prime groups. Each side checks that every group
   element it receives lies in that subgroup (Legendre symbol). Keys are
   SHA-256(domain ‖ j ‖ A ‖ B_j ‖ K)[:16]. The receiver raises its two bases to its ~128 exponents
   with fixed-base tables.
     a. sender:   A = g^a
     b. receiver: B_j = g^(b_j) · A^(c_j); its key is H(j, A, B_j, A^(b_j))
     sender keys: k0_j = H(j, A, B_j, B_j^a), k1_j = H(j, A, B_j, (B_j / A)^a)
2. IKNP extension — Ishai, Kilian, Nissim, Petrank (CRYPTO 2003): κ = 128 base OTs become the
   512 random OTs that KKRT needs (as libPSI does), with the roles reversed. One message: the
   receiver's correction matrix u (128 columns x n bits). Outputs go through the tweakable
   correlation-robust hash H(j, x) = π(π(x) ⊕ j) ⊕ π(x) with π fixed-key AES (Guo, Katz, Wang, Yu,
   "Efficient and Secure Multiparty Computation from Fixed-Key Block Ciphers", S&P 2020).
3. KKRT extension — Kolesnikov, Kumaresan, Rosulek, Trieu, "Efficient Batched Oblivious PRF with
   Applications to Private Set Intersection" (CCS 2016): the 512 OTs, with the repetition
   code of IKNP replaced by a pseudorandom code C of width k = 512 bits, give one OPRF instance per
   row. The receiver holds seed pairs and a choice row d_i = C(w_i) per instance; it sends
   u_i = t0_i ⊕ t1_i ⊕ d_i (rows of the PRG-expanded columns) and keeps t0_i; the sender, who holds
   s ∈ {0,1}^512 and the seeds t_(s_j, j), gets q_i = t0_i ⊕ (d_i ∧ s). The OPRF is then
   F(i, w) = H(i, q_i ⊕ (C(w) ∧ s)), which the receiver knows for its own w_i as H(i, t0_i).

The code is C(w) = (AES_k1(w) ⊕ w) ‖ ... ‖ (AES_k4(w) ⊕ w), as in KKRT's implementation (libOTe):
two inputs' codewords are at distance < κ = 128 with probability 2^-102.3 (binomial tail), so the
minimum distance stays ≥ κ over any 2^62 pairs except with probability 2^-40.

The wide hash for the 512-bit rows is Merkle–Damgård over the fixed-key MMO function
g(x) = π(x) ⊕ x of GKWY20, with the tweak (instance, hash index) as the IV:
z_0 = tweak, z_b = g(z_(b-1) ⊕ row_b) for the four 128-bit blocks. In the random-permutation
model an adversary who knows t0_i but not s has to guess every bit of s under the (≥ κ) positions
where two codewords differ at once: the feed-forward makes g one-way, so there is no
meet-in-the-middle over the blocks (as there would be for the XOR of per-block hashes). libOTe's
KKRT hashes rows with its random oracle (BLAKE2); here that would be one hashlib call per value.
The PRG that stretches a seed into a column is AES-128-CTR keyed by the seed.

Bit layout: a row is 512 bits stored little-endian (bit j is byte j // 8, bit j % 8); a column is
the n bits of one PRG stream in the same order. Rows move in chunks of `CHUNK_ROWS`, so memory stays
bounded by the chunk, not the set.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator

import gmpy2
import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from sqlsecure.errors import ProtocolError
from sqlsecure.executors.runtime.channel import Endpoint

KAPPA = 128  # computational security, and the number of base OTs
CODE_BITS = 512  # width of the pseudorandom code = number of KKRT base OTs
CODE_BYTES = CODE_BITS // 8
BLOCK = 16
CHUNK_ROWS = 1 << 16  # OT instances per correction message

# RFC 7919 ffdhe3072: p = 2^3072 - 2^3008 + (floor(2^2942 e) + 2625351) 2^64 - 1, a safe prime.
FFDHE3072_P = gmpy2.mpz(
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695A9E13641146433FBCC939DCE249B3EF9"
    "7D2FE363630C75D8F681B202AEC4617AD3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935"
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797ABC0AB182B324FB61D108A94BB2C8E3FB"
    "B96ADAB760D7F4681D4F42A3DE394DF4AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61"
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005C58EF1837D1683B2C6F34A26C1B2EFFA"
    "886B4238611FCFDCDE355B3B6519035BBC34F4DEF99C023861B46FC9D6E6C9077AD91D2691F7F7EE598CB0FAC186D91C"
    "AEFE130985139270B4130C93BC437944F4FD4452E2D74DD364F2E21E71F54BFF5CAE82AB9C9DF69EE86D2BC522363A0D"
    "ABC521979B0DEADA1DBF9A42D5C4484E0ABCD06BFA53DDEF3C1B20EE3FD59D7C25E41D2B66C62E37FFFFFFFFFFFFFFFF",
    16,
)
GENERATOR = 2  # generates the subgroup of quadratic residues, of prime order (p - 1) / 2
EXPONENT_BITS = 256
ELEMENT = 384  # bytes of a group element
BASE_OT_DOMAIN = b"sqlsecure/ot/chou-orlandi/ffdhe3072/v1\x00"


# --- AES over numpy arrays of 16-byte blocks ---------------------------------------------------

class AesBlocks:
    """AES-128 under one key applied to every 16-byte block of an array (ECB): the fixed-key
    permutation π of the hashes, and each quarter of the code. Thread-safe: the one OpenSSL
    context is used under a lock (two parties in one process may share a public key's instance)."""

    def __init__(self, key: bytes):
        self._encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        self._lock = threading.Lock()

    def __call__(self, blocks: np.ndarray) -> np.ndarray:
        blocks = np.ascontiguousarray(blocks).view(np.uint8)
        out = np.empty(blocks.size + BLOCK, dtype=np.uint8)  # update_into wants one spare block
        with self._lock:
            self._encryptor.update_into(blocks, out)
        return out[:blocks.size].reshape(blocks.shape)


class SeedStreams:
    """One AES-CTR stream per 16-byte seed: the PRG that stretches each base-OT key into a column."""

    def __init__(self, seeds: np.ndarray):
        self._streams = [Cipher(algorithms.AES(bytes(seed)), modes.CTR(bytes(BLOCK))).encryptor()
                         for seed in np.asarray(seeds, dtype=np.uint8)]

    def next(self, nbytes: int) -> np.ndarray:
        """The next `nbytes` of every stream, one stream per row."""
        zeros = bytes(nbytes)
        out = np.empty((len(self._streams), nbytes + BLOCK), dtype=np.uint8)
        for stream, row in zip(self._streams, out):
            stream.update_into(zeros, row)
        return out[:, :nbytes]


# --- bit-matrix transposition -----------------------------------------------------------------

# Stage s of a 64x64 bit-matrix transposition swaps bit j + s of word c with bit j of word c + s,
# for every c and j whose bit s is clear: `mask` holds those bits j.
_SWAP_STAGES = tuple((np.uint64(s), np.uint64(mask)) for s, mask in (
    (32, 0x00000000FFFFFFFF), (16, 0x0000FFFF0000FFFF), (8, 0x00FF00FF00FF00FF),
    (4, 0x0F0F0F0F0F0F0F0F), (2, 0x3333333333333333), (1, 0x5555555555555555)))


def _transpose_64x64(words: np.ndarray) -> None:
    """Transpose, in place, the 64x64 bit matrices of `words`, shape (blocks, 64, lanes) uint64:
    bit r of words[b, c, l] <-> bit c of words[b, r, l]. Six stages of masked swaps (Warren,
    "Hacker's Delight", 7-3), each a few numpy passes over runs of `lanes` contiguous words."""
    blocks, _, lanes = words.shape
    scratch = np.empty((blocks, 32, lanes), dtype=np.uint64)
    shifted = np.empty_like(scratch)
    for shift, mask in _SWAP_STAGES:
        s = int(shift)
        pairs = words.reshape(blocks, 32 // s, 2, s, lanes)
        low, high = pairs[:, :, 0], pairs[:, :, 1]  # words c with bit s of c clear, and c + s
        t, u = scratch.reshape(low.shape), shifted.reshape(low.shape)
        np.right_shift(low, shift, out=t)
        t ^= high
        t &= mask
        high ^= t
        np.left_shift(t, shift, out=u)
        low ^= u


def columns_to_rows(columns: np.ndarray) -> np.ndarray:
    """(k columns, n/8 bytes) -> (n rows, k/8 bytes): bit i of column j becomes bit j of row i.

    Each column is read as little-endian uint64 words of 64 rows (zero-padded to whole words and to
    64 columns), every 64x64 block is transposed in place on the column axis, with the 64-row words
    as the contiguous lanes, and one copy reorders the blocks into rows."""
    k, nbytes = columns.shape
    if k % 8:
        raise ValueError(f"{k} columns: the count must be a multiple of 8")
    padded = np.zeros((-(-k // 64) * 64, -(-nbytes // 8) * 8), dtype=np.uint8)
    padded[:k, :nbytes] = columns
    words = padded.view("<u8").reshape(len(padded) // 64, 64, -1)  # (64 columns, column in them, 64 rows)
    _transpose_64x64(words)  # now (64 columns, row in them, 64 rows): bit c = column 64 v + c
    rows = np.ascontiguousarray(words.transpose(2, 1, 0)).view(np.uint8).reshape(-1, len(padded) // 8)
    return np.ascontiguousarray(rows[:nbytes * 8, :k // 8])


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Booleans -> bytes in this module's (little-endian) bit order."""
    return np.packbits(np.asarray(bits, dtype=bool), bitorder="little")


def random_bits(n: int) -> np.ndarray:
    """n uniformly random booleans from the OS's CSPRNG."""
    raw = np.frombuffer(os.urandom((n + 7) // 8), dtype=np.uint8)
    return np.unpackbits(raw, bitorder="little")[:n].astype(bool)


# --- correlation-robust hashes and the pseudorandom code --------------------------------------

def tweak_blocks(first: np.ndarray, second: np.ndarray | int = 0) -> np.ndarray:
    """(n, 16) tweak blocks holding two unsigned 64-bit words (little-endian)."""
    tweaks = np.zeros((len(first), 2), dtype="<u8")
    tweaks[:, 0] = first
    tweaks[:, 1] = second
    return tweaks.view(np.uint8)


def tccr_hash(pi: AesBlocks, tweaks: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """GKWY20's tweakable circular correlation-robust hash of 128-bit blocks: π(π(x) ⊕ i) ⊕ π(x)."""
    once = pi(blocks)
    return pi(once ^ tweaks) ^ once


def row_hash(pi: AesBlocks, tweaks: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The correlation-robust hash of wide rows: Merkle–Damgård over g(x) = π(x) ⊕ x, IV = tweak."""
    words = np.ascontiguousarray(rows).view(np.uint64).reshape(len(rows), -1, 2)
    state = np.ascontiguousarray(tweaks).view(np.uint64).reshape(-1, 2)
    for b in range(words.shape[1]):
        chained = state ^ words[:, b]
        state = pi(chained).view(np.uint64) ^ chained
    return state.view(np.uint8)


class PseudorandomCode:
    """KKRT's pseudorandom code of width 512: C(w) = (AES_k1(w) ⊕ w) ‖ ... ‖ (AES_k4(w) ⊕ w)."""

    def __init__(self, keys: list[bytes]):
        if len(keys) * BLOCK * 8 != CODE_BITS:
            raise ValueError(f"the code needs {CODE_BITS // (8 * BLOCK)} AES keys")
        self._quarters = [AesBlocks(key) for key in keys]

    def encode(self, inputs: np.ndarray) -> np.ndarray:
        """(n, 16) input blocks -> (n, 64) codewords."""
        inputs = np.ascontiguousarray(inputs, dtype=np.uint8)
        out = np.empty((len(inputs), len(self._quarters), BLOCK), dtype=np.uint8)
        for q, aes in enumerate(self._quarters):
            np.bitwise_xor(aes(inputs), inputs, out=out[:, q])
        return out.reshape(len(inputs), CODE_BYTES)


# --- base OT (Chou–Orlandi) ---------------------------------------------------------------------

class FixedBase:
    """Powers of one base by a table of base^(d·16^i): at most 64 multiplications per exponent,
    about 5x faster than `powmod` when one base is raised to the ~128 exponents of a base-OT batch."""

    def __init__(self, base):
        p, x = FFDHE3072_P, gmpy2.mpz(base)
        self._rows = []
        for _ in range(EXPONENT_BITS // 4):
            row = [gmpy2.mpz(1), x]
            for _ in range(14):
                row.append(row[-1] * x % p)
            self._rows.append(row)
            x = row[-1] * x % p

    def pow(self, exponent) -> gmpy2.mpz:
        p, e, out = FFDHE3072_P, int(exponent), gmpy2.mpz(1)
        for row in self._rows:
            if e & 15:
                out = out * row[e & 15] % p
            e >>= 4
        return out


def _exponent() -> gmpy2.mpz:
    while True:
        e = gmpy2.mpz(int.from_bytes(os.urandom(EXPONENT_BITS // 8), "big"))
        if e:
            return e


def _encode(x) -> bytes:
    return int(x).to_bytes(ELEMENT, "big")


def _decode(raw: bytes, peer: str) -> gmpy2.mpz:
    """A group element from the peer, checked to lie in the prime-order subgroup."""
    x = gmpy2.mpz(int.from_bytes(raw, "big"))
    if not 1 < x < FFDHE3072_P - 1 or gmpy2.legendre(x, FFDHE3072_P) != 1:
        raise ProtocolError(f"{peer} sent a base-OT value outside the ffdhe3072 subgroup")
    return x


def _base_key(j: int, a: bytes, b: bytes, shared) -> bytes:
    return hashlib.sha256(BASE_OT_DOMAIN + j.to_bytes(4, "big") + a + b + _encode(shared)).digest()[:BLOCK]


def base_ot_first() -> tuple[gmpy2.mpz, bytes]:
    """The sender's message a, (its exponent a, A = g^a encoded): data-independent, so a KKRT run
    makes it before the roles are known and sends it with its first message (`kkrt.py`)."""
    a = _exponent()
    return a, _encode(gmpy2.powmod(GENERATOR, a, FFDHE3072_P))


def base_ot_send(endpoint: Endpoint, peer: str, tag: str, count: int,
                 first: tuple[gmpy2.mpz, bytes] | None = None) -> np.ndarray:
    """Chou–Orlandi as sender: `count` random key pairs, shape (count, 2, 16). `first`: message a,
    already sent (`base_ot_first`); None makes and sends it here."""
    p = FFDHE3072_P
    if first is None:
        first = base_ot_first()
        endpoint.send(peer, f"{tag}/base-ot/a", first[1])
    a, a_raw = first
    big_a = gmpy2.mpz(int.from_bytes(a_raw, "big"))
    raw = endpoint.recv(peer, f"{tag}/base-ot/b")
    if len(raw) != count * ELEMENT:
        raise ProtocolError(f"{peer} sent {len(raw)} bytes of base-OT choices, expected {count * ELEMENT}")
    unblind = gmpy2.invert(gmpy2.powmod(big_a, a, p), p)
    keys = np.empty((count, 2, BLOCK), dtype=np.uint8)
    for j in range(count):
        b_raw = raw[j * ELEMENT:(j + 1) * ELEMENT]
        shared = gmpy2.powmod(_decode(b_raw, peer), a, p)
        keys[j, 0] = np.frombuffer(_base_key(j, a_raw, b_raw, shared), dtype=np.uint8)
        keys[j, 1] = np.frombuffer(_base_key(j, a_raw, b_raw, shared * unblind % p), dtype=np.uint8)
    return keys


def base_ot_receive(endpoint: Endpoint, peer: str, tag: str, choices: np.ndarray,
                    a_raw: bytes | None = None) -> np.ndarray:
    """Chou–Orlandi as receiver: the key of each chosen side, shape (len(choices), 16). `a_raw`: the
    sender's message a if it came already (with a KKRT run's first message); None receives it."""
    p = FFDHE3072_P
    if a_raw is None:
        a_raw = endpoint.recv(peer, f"{tag}/base-ot/a")
    if len(a_raw) != ELEMENT:
        raise ProtocolError(f"{peer} sent a base-OT key of {len(a_raw)} bytes, expected {ELEMENT}")
    big_a = _decode(a_raw, peer)
    g, a_powers = FixedBase(GENERATOR), FixedBase(big_a)
    keys = np.empty((len(choices), BLOCK), dtype=np.uint8)
    message = bytearray()
    for j, choice in enumerate(np.asarray(choices, dtype=bool)):
        b = _exponent()
        big_b = g.pow(b)
        if choice:
            big_b = big_b * big_a % p
        b_raw = _encode(big_b)
        message += b_raw
        keys[j] = np.frombuffer(_base_key(j, a_raw, b_raw, a_powers.pow(b)), dtype=np.uint8)
    endpoint.send(peer, f"{tag}/base-ot/b", bytes(message))
    return keys


# --- IKNP: κ base OTs -> `count` random OTs ------------------------------------------------------

def extend_ots_receive(endpoint: Endpoint, peer: str, tag: str, base_pairs: np.ndarray,
                       choices: np.ndarray, pi: AesBlocks) -> np.ndarray:
    """IKNP receiver (it was the base-OT sender): one key per choice, shape (len(choices), 16)."""
    count = len(choices)
    t0 = SeedStreams(base_pairs[:, 0]).next(count // 8)
    t1 = SeedStreams(base_pairs[:, 1]).next(count // 8)
    endpoint.send(peer, f"{tag}/iknp/u", (t0 ^ t1 ^ pack_bits(choices)).tobytes())
    return tccr_hash(pi, tweak_blocks(np.arange(count)), columns_to_rows(t0))


def extend_ots_send(endpoint: Endpoint, peer: str, tag: str, base_keys: np.ndarray, delta: np.ndarray,
                    count: int, pi: AesBlocks) -> np.ndarray:
    """IKNP sender (it was the base-OT receiver with choices `delta`): key pairs, (count, 2, 16)."""
    raw = endpoint.recv(peer, f"{tag}/iknp/u")
    if len(raw) != len(delta) * count // 8:
        raise ProtocolError(f"{peer} sent an OT-extension matrix of {len(raw)} bytes, "
                            f"expected {len(delta) * count // 8}")
    u = np.frombuffer(raw, dtype=np.uint8).reshape(len(delta), count // 8)
    mask = np.where(np.asarray(delta, dtype=bool), 0xFF, 0).astype(np.uint8)[:, None]
    q = columns_to_rows(SeedStreams(base_keys).next(count // 8) ^ (u & mask))
    tweaks = tweak_blocks(np.arange(count))
    return np.stack([tccr_hash(pi, tweaks, q), tccr_hash(pi, tweaks, q ^ pack_bits(delta))], axis=1)


def kkrt_base_send(endpoint: Endpoint, peer: str, tag: str, pi: AesBlocks, a_raw: bytes | None = None) -> np.ndarray:
    """The OPRF receiver's setup: CODE_BITS random seed pairs, shape (512, 2, 16). `a_raw`: the
    base OTs' message a, if it came already (`base_ot_receive`)."""
    delta = random_bits(KAPPA)
    base = base_ot_receive(endpoint, peer, tag, delta, a_raw)
    return extend_ots_send(endpoint, peer, tag, base, delta, CODE_BITS, pi)


def kkrt_base_receive(endpoint: Endpoint, peer: str, tag: str, pi: AesBlocks,
                      first: tuple[gmpy2.mpz, bytes] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The OPRF sender's setup: its secret s ∈ {0,1}^512 and the seed t_(s_j, j) of each pair.
    `first`: the base OTs' message a, already sent (`base_ot_send`)."""
    base = base_ot_send(endpoint, peer, tag, KAPPA, first)
    s = random_bits(CODE_BITS)
    return s, extend_ots_receive(endpoint, peer, tag, base, s, pi)


# --- KKRT: one 1-out-of-∞ OT (an OPRF instance) per row --------------------------------------------

def kkrt_extend_receive(endpoint: Endpoint, peer: str, tag: str, seed_pairs: np.ndarray, rows: int,
                        choice_rows: Callable[[int, int], np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
    """OPRF receiver: for each chunk of instances, send u = t0 ⊕ t1 ⊕ d and yield (start, t0 rows).

    `choice_rows(start, stop)` gives the codewords d of those instances, shape (stop - start, 64);
    `rows` must be a multiple of 64."""
    zero, one = SeedStreams(seed_pairs[:, 0]), SeedStreams(seed_pairs[:, 1])
    for start in range(0, rows, CHUNK_ROWS):
        stop = min(rows, start + CHUNK_ROWS)
        t0 = zero.next((stop - start) // 8)
        t0_rows = columns_to_rows(t0)
        u = columns_to_rows(t0 ^ one.next((stop - start) // 8))
        u ^= choice_rows(start, stop)
        endpoint.send(peer, f"{tag}/kkrt/u", u.tobytes())
        yield start, t0_rows


def kkrt_extend_send(endpoint: Endpoint, peer: str, tag: str, s: np.ndarray, seeds: np.ndarray,
                     rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """OPRF sender: for each chunk of instances received, yield (start, q rows), q = t0 ⊕ (d ∧ s)."""
    streams, s_row = SeedStreams(seeds), pack_bits(s)
    for start in range(0, rows, CHUNK_ROWS):
        stop = min(rows, start + CHUNK_ROWS)
        raw = endpoint.recv(peer, f"{tag}/kkrt/u")
        if len(raw) != (stop - start) * CODE_BYTES:
            raise ProtocolError(f"{peer} sent an OPRF correction of {len(raw)} bytes, "
                                f"expected {(stop - start) * CODE_BYTES}")
        q = columns_to_rows(streams.next((stop - start) // 8))
        q ^= np.frombuffer(raw, dtype=np.uint8).reshape(stop - start, CODE_BYTES) & s_row
        yield start, q
