"""A party's pool of worker processes for Paillier batches (encryption and decryption).

Big-integer arithmetic in gmpy2 holds the GIL, so large batches are split across processes
(forkserver, as `ecdh.GroupWorkers`). Keys travel to the workers as plain integers; each worker
builds its fixed-base tables once per key and keeps only the latest key's tables. The key owner's
workers receive p and q: they are that party's own processes, and nothing they hold crosses a
channel.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Iterable, Iterator

from sqlsecure.executors.heu.paillier import (
    Encryptor,
    OwnerEncryptor,
    PrivateKey,
    PublicKey,
    ciphertexts_to_blob,
)
from phe import paillier

PARALLEL_MIN = 2_000  # rows; below this one process is faster than starting tables in workers
PIECE = 512           # rows per task

_worker_state: dict = {}  # per worker process: the latest key's encryptor (tables are 16-35 MiB)


def _encryptor(n: int, hs: int, p: int | None, q: int | None):
    key = (n, hs, p is not None)
    if _worker_state.get("key") != key:
        _worker_state.clear()
        public = PublicKey(n, hs)
        if p is None:
            _worker_state["enc"] = Encryptor(public)
        else:
            phe_pub = paillier.PaillierPublicKey(n)
            _worker_state["enc"] = OwnerEncryptor(PrivateKey(public, paillier.PaillierPrivateKey(phe_pub, p, q)))
        _worker_state["key"] = key
    return _worker_state["enc"]


def _encrypt_piece(n: int, hs: int, p: int | None, q: int | None, plaintexts: list[int]) -> bytes:
    enc = _encryptor(n, hs, p, q)
    return ciphertexts_to_blob(enc.encrypt(plaintexts), PublicKey(n, hs).ciphertext_bytes)


def _decrypt_piece(n: int, p: int, q: int, ciphertexts: list[int]) -> list[int]:
    key = paillier.PaillierPrivateKey(paillier.PaillierPublicKey(n), p, q)
    return [key.raw_decrypt(c) for c in ciphertexts]


class HEWorkers:
    """Worker processes for one party, started on the first large batch; `close()` ends them."""

    def __init__(self, processes: int | None = None):
        self.processes = processes or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            ctx = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(self.processes, mp_context=ctx)
        return self._pool

    def encrypt_stream(self, key: PublicKey | PrivateKey, batches: Iterable[list[int]],
                       total_rows: int) -> Iterator[bytes]:
        """Fixed-width ciphertext blobs, one per batch of plaintexts, in order.

        With a `PrivateKey` (the key owner) workers use the CRT encryptor. At most two batches per
        process are in flight, so memory stays bounded by the batch size.
        """
        public = key.public_key if isinstance(key, PrivateKey) else key
        p, q = (int(key.p), int(key.q)) if isinstance(key, PrivateKey) else (None, None)
        width = public.ciphertext_bytes
        if self.processes <= 1 or total_rows < PARALLEL_MIN:
            local = OwnerEncryptor(key) if isinstance(key, PrivateKey) else Encryptor(public)
            for batch in batches:
                yield ciphertexts_to_blob(local.encrypt(batch), width)
            return
        pool = self._executor()
        pending: deque[list[Future]] = deque()
        for batch in batches:
            pending.append([pool.submit(_encrypt_piece, public.n, public.hs, p, q, batch[i:i + PIECE])
                            for i in range(0, len(batch), PIECE)])
            if len(pending) >= 2 * self.processes:
                yield b"".join(f.result() for f in pending.popleft())
        while pending:
            yield b"".join(f.result() for f in pending.popleft())

    def decrypt(self, private_key: PrivateKey, ciphertexts: list) -> list[int]:
        """Plaintexts of `ciphertexts`, spread over the pool when there are many."""
        cts = [int(c) for c in ciphertexts]
        if self.processes <= 1 or len(cts) < 4 * self.processes:
            return private_key.decrypt(cts)
        n, p, q = private_key.public_key.n, int(private_key.p), int(private_key.q)
        step = -(-len(cts) // (2 * self.processes))
        futures = [self._executor().submit(_decrypt_piece, n, p, q, cts[i:i + step])
                   for i in range(0, len(cts), step)]
        return [m for f in futures for m in f.result()]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
