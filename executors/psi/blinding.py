"""The PSI group: keys hashed onto Curve25519 and blinded by X25519 scalar multiplication.

`hash_to_points` maps encoded keys to 32-byte u-coordinates with SHA-256 under a domain tag;
X25519 is twist-secure, so every 32-byte string is a safe input. A `BlindingKey` is a fresh
random scalar; blinding is u -> X25519(k, u), which commutes: X25519(a, X25519(b, u)) equals
X25519(b, X25519(a, u)).

The exchange holds the GIL, so batches of `PARALLEL_MIN` points or more go to worker processes
(`worker_processes`, running `blinding_worker.py`), in jobs of at most `PIECE` points: each worker is a
fresh ``python -I`` that imports `cryptography` and nothing else (~20 MB RSS, against ~100 MB for a
process that imports `sqlsecure`), and never runs the host's ``__main__`` -- a host script needs no
``if __name__ == "__main__":`` guard and may come from stdin. A worker ends with its pipe or its
host (see `worker_processes`).

The worker processes are shared by every party of the process (`GroupWorkers` is a handle on
them): in the embedded runtime both parties' batches go to one FIFO job queue served by one worker
per core, instead of a pool per party. They start together on the first large batch and live
until the process exits. They are a process-wide object, as a thread pool is: OS resources, no
protocol state; every protocol still receives its `GroupWorkers` explicitly.

Failures never hang a caller: a worker that crashes, is killed, or stays silent past its
deadline fails its job with `OperationalError` naming the process and how it ended (a new worker
starts on the next batch); an invalid point in a peer's message is a `ProtocolError`.
"""

from __future__ import annotations

import atexit
import hashlib
import os
from concurrent.futures import Future
from pathlib import Path

import cryptography

from sqlsecure.errors import ProtocolError
from sqlsecure.executors.psi.blinding_worker import INVALID, POINT, blind_points
from sqlsecure.executors.runtime.worker_processes import WorkerJob, WorkerProcesses

DOMAIN = b"sqlsecure/psi/x25519-sha256/v1\x00"
PARALLEL_MIN = 1_024  # points; smaller batches are blinded in the caller's thread
PIECE = 4_096  # points per worker job at most (128 KiB each way, ~0.25 s of one core)
START_SECONDS = 60.0  # a new worker must report ready within this
JOB_SECONDS = 60.0  # a job's deadline: this plus 1 ms per point (~20x the normal time)

WORKER_SCRIPT = Path(__file__).with_name("blinding_worker.py")
CRYPTOGRAPHY_DIR = str(Path(cryptography.__file__).resolve().parent.parent)


def hash_to_buffer(encoded) -> bytearray:
    """`hash_to_points` into a growing buffer (no list of digests, no final copy)."""
    prefix = hashlib.sha256(DOMAIN)
    out = bytearray()
    for item in encoded:
        h = prefix.copy()
        h.update(item)
        out += h.digest()
    return out


def hash_to_points(encoded) -> bytes:
    """Concatenated 32-byte points, one per encoded key."""
    return bytes(hash_to_buffer(encoded))


def _blind(raw_key: bytes, points) -> bytes:
    try:
        return blind_points(raw_key, points)
    except ValueError as exc:  # a low-order point: never produced by honest hashing
        raise ProtocolError(f"invalid group element in PSI message: {exc}") from None


class PendingBlind:
    """Points being blinded; `result()` waits for them (a bytearray, in the input's order)."""

    def __init__(self, out: bytearray, futures: list[Future]):
        self._out, self._futures = out, futures

    @classmethod
    def finished(cls, out: bytes) -> "PendingBlind":
        return cls(out, [])

    def done(self) -> bool:
        return all(f.done() for f in self._futures)

    def result(self):
        for f in self._futures:
            try:
                f.result()
            except BaseException:
                for g in self._futures:
                    g.cancel()  # the others' results are of no use now
                raise
        return self._out


def _blinding_job(raw_key: bytes, points: memoryview, out: memoryview) -> WorkerJob:
    n = len(points) // POINT
    return WorkerJob((raw_key, points), f"blinding {n:,} points", JOB_SECONDS + n / 1000, out)


_WORKERS = WorkerProcesses(
    "PSI", lambda: [str(WORKER_SCRIPT), CRYPTOGRAPHY_DIR], handle="GroupWorkers", start_seconds=START_SECONDS,
    errors={INVALID: lambda message: ProtocolError(f"invalid group element in PSI message: {message}")})


def worker_pids() -> list[int]:
    """Process ids of this process's PSI worker processes (started so far, still running)."""
    return _WORKERS.worker_pids()


def shutdown_workers() -> None:
    """End this process's PSI worker processes (at exit; new ones start on the next large batch)."""
    _WORKERS.shutdown()


atexit.register(shutdown_workers)


class GroupWorkers:
    """A party's handle on the process's PSI worker processes.

    `processes` is how many workers its batches are spread over (default: one per core); the shared
    set grows to the largest number any handle asks for. With `processes=1` every batch is blinded
    in the caller's thread.
    """

    def __init__(self, processes: int | None = None):
        self.processes = processes or os.cpu_count() or 1

    def blind_later(self, raw_key: bytes, points) -> PendingBlind:
        """Start blinding `points` (bytes-like, 32 B each) with `raw_key`; small batches finish at once."""
        n = len(points) // POINT
        if self.processes <= 1 or n < PARALLEL_MIN:
            return PendingBlind.finished(_blind(raw_key, points))
        out = bytearray(n * POINT)
        piece = min(PIECE, max(PARALLEL_MIN // 4, -(-n // (2 * self.processes))))
        src, dst = memoryview(points).cast("B"), memoryview(out)
        futures = [_WORKERS.submit(self.processes, _blinding_job(raw_key, src[i * POINT:(i + piece) * POINT],
                                                                 dst[i * POINT:(i + piece) * POINT]))
                   for i in range(0, n, piece)]
        return PendingBlind(out, futures)

    def map_blind(self, raw_key: bytes, points: bytes) -> bytes:
        return bytes(self.blind_later(raw_key, points).result())

    def close(self) -> None:
        """Nothing to release: the worker processes are the process's, and end with it."""


class BlindingKey:
    """A fresh secret scalar for one PSI run; never leaves its party (and its worker processes)."""

    def __init__(self) -> None:
        self._raw = os.urandom(32)

    def blind(self, points: bytes, workers: GroupWorkers | None = None) -> bytes:
        return bytes(self.blind_later(points, workers).result())

    def blind_later(self, points, workers: GroupWorkers | None = None) -> PendingBlind:
        """Start blinding; `.result()` gives the blinded points (workers=None: in this thread, now)."""
        if len(points) % POINT:
            raise ProtocolError(f"PSI message of {len(points)} bytes is not a whole number of points")
        if workers is None:
            return PendingBlind.finished(_blind(self._raw, points))
        return workers.blind_later(self._raw, points)
