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
"""

from __future__ import annotations

import os

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SEED_BYTES = 16
_BLOCK = 16


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
        nonce = int(stream).to_bytes(8, "big") + bytes(8)
        encryptor = Cipher(self._algorithm, modes.CTR(nonce)).encryptor()
        # update_into needs len(out) >= len(in) + block - 1: two spare words. The counter runs on
        # from call to call, so the keystream comes in chunks of a fixed zero buffer.
        out = np.empty(n + 2, dtype=np.uint64)
        view = memoryview(out.view(np.uint8))
        for start in range(0, 8 * n, ZERO_CHUNK):
            size = min(ZERO_CHUNK, 8 * n - start)
            encryptor.update_into(_ZEROS[:size], view[start:start + size + _BLOCK])
        return out[:n]

    def permutation(self, stream: int, n: int) -> np.ndarray:
        """A pseudo-random permutation of range(n) (argsort of n random 64-bit words)."""
        return np.argsort(self.words(stream, n), kind="stable")
