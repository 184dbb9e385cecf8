"""The PSI group: keys hashed onto Curve25519 and blinded by X25519 scalar multiplication.

`hash_to_points` maps encoded keys to 32-byte u-coordinates with SHA-256 under a domain tag;
X25519 is twist-secure, so every 32-byte string is a safe input. A `BlindingKey` is a fresh
random scalar; blinding is u -> X25519(k, u), which commutes: X25519(a, X25519(b, u)) equals
X25519(b, X25519(a, u)). Large batches are split across worker processes (the exchange holds the
GIL), so blinding uses every core.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from sqlsecure.errors import ProtocolError

DOMAIN = b"sqlsecure/psi/x25519-sha256/v1\x00"
POINT = 32
PARALLEL_MIN = 20_000  # below this, one process is faster than shipping work to the pool


def hash_to_points(encoded) -> bytes:
    """Concatenated 32-byte points, one per encoded key."""
    sha = hashlib.sha256
    prefix = sha(DOMAIN)
    out = bytearray()
    for item in encoded:
        h = prefix.copy()
        h.update(item)
        out += h.digest()
    return bytes(out)


def _blind(raw_key: bytes, points: bytes) -> bytes:
    key = X25519PrivateKey.from_private_bytes(raw_key)
    exchange, load = key.exchange, X25519PublicKey.from_public_bytes
    out = bytearray()
    try:
        for i in range(0, len(points), POINT):
            out += exchange(load(points[i:i + POINT]))
    except ValueError as exc:  # a low-order point: never produced by honest hashing
        raise ProtocolError(f"invalid group element in PSI message: {exc}") from None
    return bytes(out)


class GroupWorkers:
    """A party's pool of worker processes for group operations, started on first large batch."""

    def __init__(self, processes: int | None = None):
        self.processes = processes or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None

    def map_blind(self, raw_key: bytes, points: bytes) -> bytes:
        n = len(points) // POINT
        if self.processes <= 1 or n < PARALLEL_MIN:
            return _blind(raw_key, points)
        if self._pool is None:
            ctx = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(self.processes, mp_context=ctx)
        chunk = -(-n // (self.processes * 4))
        pieces = [points[i * POINT:(i + chunk) * POINT] for i in range(0, n, chunk)]
        return b"".join(self._pool.map(_blind, [raw_key] * len(pieces), pieces))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


class BlindingKey:
    """A fresh secret scalar for one PSI run; never leaves its party."""

    def __init__(self) -> None:
        self._raw = os.urandom(32)

    def blind(self, points: bytes, workers: GroupWorkers | None = None) -> bytes:
        if len(points) % POINT:
            raise ProtocolError(f"PSI message of {len(points)} bytes is not a whole number of points")
        if workers is None:
            return _blind(self._raw, points)
        return workers.map_blind(self._raw, points)
