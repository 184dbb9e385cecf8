"""Worker processes for Paillier batches: encryption, decryption and randomisers across cores.

Big-integer arithmetic in gmpy2 holds the GIL, so large batches go to worker processes
(`worker_processes`, running `worker_process.py`): each a fresh ``python -I`` that loads only
gmpy2, numpy and the `kernels` module -- it never imports `sqlsecure` nor runs the host's
``__main__``, so a host script needs no ``if __name__ == "__main__":`` guard (a `multiprocessing`
pool would re-run an unguarded script in every worker). `ecdh.GroupWorkers` uses the same machinery
for PSI.

The worker processes are shared by every party of the process (`HEWorkers` is a handle on them): in
the embedded runtime the label owner's randomisers and the value owner's encryptions go to one job
queue served by one worker per core, instead of a pool per party. They start on the first large
batch; a worker left idle for `IDLE_SECONDS` ends (and frees its tables), and a new one starts on
the next batch. Jobs carry their key as plain integers (the key owner's jobs carry p and q: they
are that party's own processes, and nothing they hold crosses a channel); each worker keeps the
kernels -- fixed-base tables -- of the last key of each kind of job. Failures never hang a caller:
a worker that crashes, or stays silent past its deadline, fails its job with `OperationalError`.
"""

from __future__ import annotations

import atexit
import os
import pickle
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Iterable, Iterator

import gmpy2
import numpy

from sqlsecure.executors.heu.fixed_base import TABLE_BUDGET, choose_window  # per worker process and key
from sqlsecure.executors.heu.kernels import from_blob, owner_window
from sqlsecure.executors.heu.paillier import (
    Encryptor,
    OwnerEncryptor,
    PrivateKey,
    PublicKey,
    Randomizer,
    check_plaintexts,
    ciphertexts_to_blob,
    randomizer_bits,
)
from sqlsecure.executors.runtime.worker_processes import WorkerJob, WorkerProcesses

PARALLEL_MIN = 1_024  # items; smaller batches run in the caller's thread
PIECE = 512           # encryptions per job (~0.1-0.3 s of one core at 2048 bits)
START_SECONDS = 60.0  # a new worker must report ready within this
JOB_SECONDS = 600.0   # a job's deadline: this plus 50 ms per item (building tables takes seconds)
IDLE_SECONDS = 60.0   # a worker with no job for this long ends and frees its tables

WORKER_SCRIPT = Path(__file__).with_name("worker_process.py")
SITE_DIRS = sorted({str(Path(m.__file__).resolve().parent.parent) for m in (gmpy2, numpy)})


_WORKERS = WorkerProcesses(
    "HE", lambda: [str(WORKER_SCRIPT), str(WORKER_SCRIPT.parent), *SITE_DIRS], handle="HEWorkers",
    start_seconds=START_SECONDS, idle_seconds=IDLE_SECONDS, decode=pickle.loads)


def worker_pids() -> list[int]:
    """Process ids of this process's HE worker processes (started so far, still running)."""
    return _WORKERS.worker_pids()


def shutdown_workers() -> None:
    """End this process's HE worker processes (at exit; new ones start on the next large batch)."""
    _WORKERS.shutdown()


atexit.register(shutdown_workers)


def _key_spec(key: PublicKey | PrivateKey, uses: int, processes: int) -> tuple:
    """What a worker needs to rebuild the encryption kernel, with the window for `uses` per process."""
    public = key.public_key if isinstance(key, PrivateKey) else key
    bits, per_process = public.exponent_bits, -(-uses // processes)
    if isinstance(key, PrivateKey):
        w = owner_window(bits, per_process, public.n_bits, budget=TABLE_BUDGET)
        return ("owner", public.n, public.hs, int(key.p), int(key.q), bits, w)
    w = choose_window(bits, per_process, 2 * public.n_bits, budget=TABLE_BUDGET)
    return ("public", public.n, public.hs, bits, w)


class PendingFactors:
    """Randomisers being computed (`HEWorkers.factors_later`); `result()` waits for them."""

    def __init__(self, futures: list[Future] | None, width: int, done: list | None = None):
        self._futures, self._width, self._done = futures, width, done

    def result(self) -> list:
        if self._done is None:
            self._done = [c for f in self._futures for c in from_blob(f.result(), self._width)]
        return self._done


class HEWorkers:
    """A party's handle on the process's HE worker processes.

    `processes` is how many workers its batches are spread over (default: one per core); the shared
    set grows to the largest number any handle asks for. With `processes=1` everything runs in the
    caller's thread.
    """

    def __init__(self, processes: int | None = None):
        self.processes = processes or os.cpu_count() or 1

    def _submit(self, kind: str, key: tuple, args: tuple, items: int) -> Future:
        payload = pickle.dumps((kind, key, args), protocol=pickle.HIGHEST_PROTOCOL)
        job = WorkerJob((payload,), f"doing a job of {items:,} items", JOB_SECONDS + items * 0.05)
        return _WORKERS.submit(self.processes, job)

    def encrypt_stream(self, key: PublicKey | PrivateKey, batches: Iterable[list[int]],
                       total: int) -> Iterator[bytes]:
        """Fixed-width ciphertext blobs, one per batch of plaintexts, in order.

        `total` (the number of plaintexts in all batches) sizes the fixed-base tables. With a
        `PrivateKey` (the key owner) the CRT kernel is used. At most two batches per worker are in
        flight, so memory stays bounded by the batch size.
        """
        public = key.public_key if isinstance(key, PrivateKey) else key
        width = public.ciphertext_bytes
        if self.processes <= 1 or total < PARALLEL_MIN:
            local = OwnerEncryptor(key, uses=total) if isinstance(key, PrivateKey) else Encryptor(public, uses=total)
            for batch in batches:
                yield ciphertexts_to_blob(local.encrypt(batch), width)
            return
        spec = _key_spec(key, total, self.processes)
        pending: deque[list[Future]] = deque()
        for batch in batches:
            check_plaintexts(public, batch)
            pending.append([self._submit("encrypt", spec, (batch[i:i + PIECE], width), len(batch[i:i + PIECE]))
                            for i in range(0, len(batch), PIECE)])
            if len(pending) >= 2 * self.processes:
                yield b"".join(f.result() for f in pending.popleft())
        while pending:
            yield b"".join(f.result() for f in pending.popleft())

    def decrypt(self, private_key: PrivateKey, ciphertexts: list, plaintext_bits: int | None = None) -> list[int]:
        """Plaintexts of `ciphertexts`, spread over the workers when there are many.

        `plaintext_bits`: every plaintext is known to be below 2^plaintext_bits (one prime suffices
        when that is below p)."""
        cts = list(ciphertexts)
        if self.processes <= 1 or len(cts) < 4 * self.processes:
            return private_key.decrypt(cts, plaintext_bits)
        public = private_key.public_key
        width = public.ciphertext_bytes
        spec = ("decrypt", public.n, int(private_key.p), int(private_key.q))
        step = max(1, min(256, -(-len(cts) // (2 * self.processes))))
        futures = [self._submit("decrypt", spec, (ciphertexts_to_blob(cts[i:i + step], width), width,
                                                  plaintext_bits), len(cts[i:i + step]))
                   for i in range(0, len(cts), step)]
        return [m for f in futures for m in f.result()]

    def factors_later(self, public_key: PublicKey, count: int) -> PendingFactors:
        """Start computing `count` randomisers h_s^a mod n^2, a of `randomizer_bits` bits."""
        width = public_key.ciphertext_bytes
        if self.processes <= 1 or count < 8 * self.processes:
            return PendingFactors(None, width, Randomizer(public_key, uses=count).factors(count))
        bits = randomizer_bits(public_key.n_bits)
        per_process = -(-count // self.processes)
        w = choose_window(bits, per_process, 2 * public_key.n_bits, budget=TABLE_BUDGET)
        spec = ("public", public_key.n, public_key.hs, bits, w)
        step = max(1, min(256, -(-count // (2 * self.processes))))
        futures = [self._submit("factors", spec, (min(step, count - i), width), min(step, count - i))
                   for i in range(0, count, step)]
        return PendingFactors(futures, width)

    def close(self) -> None:
        """Nothing to release: the worker processes are the process's; idle ones end by themselves."""
