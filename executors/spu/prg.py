"""The PRG behind seed-compressed randomness: AES-128 in counter mode, expanded into uint64 words.

A `Prg` is keyed by a 16-byte seed. `words(stream, n)` returns n pseudo-random uint64 words of
stream number `stream` (a 64-bit label, e.g. a randomness-request id): the AES-CTR initial counter
block is `stream || 0^64`, so distinct streams never overlap (each is < 2^64 blocks). Two holders of
the same seed derive the same words for the same stream without talking — this is how the dealer
sends a party its shares of a triple as one 16-byte seed per session instead of arrays per request.

Speed: the keystream is written with `update_into` straight into the numpy array's buffer (one
pass, ~5 GB/s with AES-NI), 4 MiB per call from one fixed zero buffer (it used to grow to the
largest request and stay); `update()` returning a fresh `bytes` object, then copying it into an
array, measured 10x slower for >= 10^5 words (two large allocations and their page faults).
`keystream(stream, start)` reads a stream on piece by piece with one cipher set-up (~10 us), for
the dealer's chunked corrections (`Keystream`).
"""

from __future__ import annotations

import os

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SEED_BYTES = 16
_BLOCK = 16
SPARE_WORDS = 3  # room `words_into` needs beyond n words: the cipher's slack


ZERO_CHUNK = 1 << 22  # bytes of keystream per update_into call
_ZEROS = memoryview(bytes(ZERO_CHUNK))  # the CTR plaintext (keystream = E(counter)), shared, read-only


def fresh_seed() -> bytes:
    return os.urandom(SEED_BYTES)


class Prg:
    """AES-128-CTR keyed by a seed; deterministic uint64 streams."""

    def __init__(self, seed: bytes):
        if len(seed) != SEED_BYTES:
            raise ValueError(f"a PRG seed is {SEED_BYTES} bytes, got {len(seed)}")
        self._algorithm = algorithms.AES(seed)

    def words(self, stream: int, n: int) -> np.ndarray:
        """n uint64 words of stream `stream`."""
        if n == 0:
            return np.zeros(0, dtype=np.uint64)
        return self.words_into(stream, 0, np.empty(n + SPARE_WORDS, dtype=np.uint64), n)

    def words_into(self, stream: int, start: int, buf: np.ndarray, n: int) -> np.ndarray:
        """Words start..start+n-1 of stream `stream` (the same as `words(stream, start + n)[start:]`),
        written into `buf` (uint64, at least n + SPARE_WORDS long) and returned as a view of it: a
        caller that reuses `buf` expands a long stream piece by piece without fresh pages."""
        return self.keystream(stream, start).into(buf, n)

    def keystream(self, stream: int, start: int = 0) -> "Keystream":
        """Stream `stream` read in order from word `start` on, with one cipher set-up."""
        return Keystream(self._algorithm, stream, start)

    def permutation(self, stream: int, n: int) -> np.ndarray:
        """A pseudo-random permutation of range(n) (argsort of n random 64-bit words)."""
        return np.argsort(self.words(stream, n), kind="stable")


class Keystream:
    """One PRG stream read in order, piece by piece, from a word on: the cipher is set up once, so
    a caller that expands a long stream in small reused buffers (the dealer's chunked corrections)
    pays one set-up (~10 us) per stream, not one per piece."""

    def __init__(self, algorithm: algorithms.AES, stream: int, start: int):
        # a block holds 2 words: an odd start begins one word into its block, skipped here once
        nonce = int(stream).to_bytes(8, "big") + (start >> 1).to_bytes(8, "big")
        self._encryptor = Cipher(algorithm, modes.CTR(nonce)).encryptor()
        if start & 1:
            self._encryptor.update(bytes(8))

    def into(self, buf: np.ndarray, n: int) -> np.ndarray:
        """The stream's next n words, written into `buf` (uint64, at least n + SPARE_WORDS long:
        update_into needs len(out) >= len(in) + block - 1) and returned as a view of it. The
        keystream comes in chunks of a fixed zero buffer (CTR: keystream = E(counter))."""
        if buf.size < n + SPARE_WORDS:
            raise ValueError(f"a keystream buffer for {n} words needs {n + SPARE_WORDS}, got {buf.size}")
        view = memoryview(buf.view(np.uint8))
        total = 8 * n
        for at in range(0, total, ZERO_CHUNK):
            size = min(ZERO_CHUNK, total - at)
            self._encryptor.update_into(_ZEROS[:size], view[at:at + size + _BLOCK])
        return buf[:n]
