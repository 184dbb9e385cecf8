"""The PRG behind seed-compressed randomness: AES-128 in counter mode, expanded into uint64 words.

A `Prg` is keyed by a 16-byte seed. `words(stream, n)` returns n pseudo-random uint64 words of
stream number `stream` (a 64-bit label, e.g. a randomness-request id): the AES-CTR initial counter
block is `stream || 0^64`, so distinct streams never overlap (each is < 2^64 blocks). Two holders of
the same seed derive the same words for the same stream without talking — this is how the dealer
sends a party its shares of a triple as one 16-byte seed per session instead of arrays per request.
"""

from __future__ import annotations

import os

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SEED_BYTES = 16


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
        return np.frombuffer(encryptor.update(bytes(8 * n)), dtype=np.uint64).copy()

    def permutation(self, stream: int, n: int) -> np.ndarray:
        """A pseudo-random permutation of range(n) (argsort of n random 64-bit words)."""
        return np.argsort(self.words(stream, n), kind="stable")
