"""The PSI group: keys hashed onto Curve25519 and blinded by X25519 scalar multiplication.

`hash_to_points` maps encoded keys to 32-byte u-coordinates with SHA-256 under a domain tag;
X25519 is twist-secure, so every 32-byte string is a safe input. A `BlindingKey` is a fresh
random scalar; blinding is u -> X25519(k, u), which commutes: X25519(a, X25519(b, u)) equals
X25519(b, X25519(a, u)).

The exchange holds the GIL, so batches of `PARALLEL_MIN` points or more go to worker processes
(`ecdh_worker.py`), in jobs of at most `PIECE` points: each worker is a fresh ``python -I`` that
imports `cryptography` and nothing else (~20 MB RSS, against ~100 MB for a process that imports
`sqlsecure`), talks over its stdin / stdout, and never runs the host's ``__main__`` -- a host
script needs no ``if __name__ == "__main__":`` guard and may come from stdin. Each worker process
is started and fed by one daemon thread of the host. A worker ends on EOF (the host closed its
pipe, at exit or by `shutdown_workers`), on a broken pipe, and on Linux at once when the host dies
(PR_SET_PDEATHSIG, tied to that thread: it also covers a forked child that keeps the pipes open).

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
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import cryptography

from sqlsecure.errors import OperationalError, ProtocolError
from sqlsecure.executors.ecdh_worker import BLIND, HEADER, INVALID, POINT, READY, blind_points

DOMAIN = b"sqlsecure/psi/x25519-sha256/v1\x00"
PARALLEL_MIN = 1_024  # points; smaller batches are blinded in the caller's thread
PIECE = 4_096  # points per worker job at most (128 KiB each way, ~0.25 s of one core)
START_SECONDS = 60.0  # a new worker must report ready within this
JOB_SECONDS = 60.0  # a job's deadline: this plus 1 ms per point (~20x the normal time)

WORKER_SCRIPT = Path(__file__).with_name("ecdh_worker.py")
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


class _Job:
    __slots__ = ("key", "points", "out", "future")

    def __init__(self, key: bytes, points: memoryview, out: memoryview):
        self.key, self.points, self.out, self.future = key, points, out, Future()


class _WorkerThread(threading.Thread):
    """Starts one worker process and relays jobs to it until told to stop or the process fails."""

    def __init__(self, pool: "_WorkerPool"):
        super().__init__(name="sqlsecure-ecdh-worker", daemon=True)
        self._pool = pool
        self._proc: subprocess.Popen | None = None

    def run(self) -> None:
        error = None
        try:
            self._start()
            while True:
                job = self._pool.jobs.get()
                if job is None:
                    break
                if not job.future.set_running_or_notify_cancel():
                    continue
                try:
                    self._blind(job)
                except ProtocolError as exc:  # the worker is fine; the input was not
                    job.future.set_exception(exc)
                except BaseException as exc:
                    error = exc if isinstance(exc, OperationalError) else OperationalError(
                        f"PSI worker process {self._pid()}: {exc!r}")
                    job.future.set_exception(error)
                    break
                else:
                    job.future.set_result(None)
                job = None  # let go of the caller's buffers while waiting for the next job
        except BaseException as exc:  # could not start (or a bug here): fail, never leave callers waiting
            error = exc if isinstance(exc, OperationalError) else OperationalError(
                f"PSI worker process {self._pid()}: {exc!r}")
        finally:
            self._end_process(kill=error is not None)
            self._pool.retire(self, error)

    def _pid(self) -> str:
        return str(self._proc.pid) if self._proc is not None else "?"

    def _start(self) -> None:
        if not sys.executable:
            raise OperationalError("cannot start a PSI worker process: sys.executable is empty "
                                   "(an embedded interpreter); use GroupWorkers(processes=1)")
        command = [sys.executable, "-I", str(WORKER_SCRIPT), str(os.getpid()), CRYPTOGRAPHY_DIR]
        try:
            self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        except OSError as exc:
            raise OperationalError(f"cannot start a PSI worker process ({sys.executable}): {exc}") from None
        if hasattr(select, "poll"):
            os.set_blocking(self._proc.stdin.fileno(), False)  # writes wait in poll(), with a deadline
        status, message = self._read_reply(time.monotonic() + START_SECONDS, "starting", None)
        if status != READY:
            raise OperationalError(f"PSI worker process {self._pid()} could not start: {message}")

    def _blind(self, job: _Job) -> None:
        n = len(job.points) // POINT
        what = f"blinding {n:,} points"
        deadline = time.monotonic() + JOB_SECONDS + n / 1000
        self._write(deadline, what, HEADER.pack(BLIND, POINT + len(job.points)), job.key, job.points)
        status, message = self._read_reply(deadline, what, job.out)
        if status == INVALID:
            raise ProtocolError(f"invalid group element in PSI message: {message}")
        if status != READY:
            raise OperationalError(f"PSI worker process {self._pid()} failed {what}: {message}")

    def _read_reply(self, deadline: float, what: str, out: memoryview | None) -> tuple[int, str]:
        header = bytearray(HEADER.size)
        self._read(deadline, what, memoryview(header))
        status, length = HEADER.unpack(header)
        if status == READY:
            if length != (0 if out is None else len(out)):
                raise OperationalError(f"PSI worker process {self._pid()} sent {length} bytes {what}, "
                                       f"expected {0 if out is None else len(out)}")
            if length:
                self._read(deadline, what, out)
            return status, ""
        message = bytearray(length)
        self._read(deadline, what, memoryview(message))
        return status, message.decode("utf-8", "replace")

    def _wait(self, fd: int, writing: bool, deadline: float, what: str) -> None:
        if not hasattr(select, "poll"):  # no deadline where pipes cannot be polled (Windows)
            return
        poll = select.poll()  # not select(): a busy server's descriptors may be above FD_SETSIZE
        poll.register(fd, select.POLLOUT if writing else select.POLLIN)
        if not poll.poll(max(deadline - time.monotonic(), 0) * 1000):  # POLLHUP / POLLERR count as ready
            self._proc.kill()
            raise OperationalError(f"PSI worker process {self._pid()} was still {what} at its deadline "
                                   "and was killed (a new one starts on the next batch)")

    def _read(self, deadline: float, what: str, view: memoryview) -> None:
        fd, got = self._proc.stdout.fileno(), 0
        while got < len(view):
            self._wait(fd, False, deadline, what)
            k = os.readv(fd, [view[got:]])
            if k == 0:
                raise self._died(what)
            got += k

    def _write(self, deadline: float, what: str, *parts) -> None:
        fd = self._proc.stdin.fileno()
        for part in parts:
            view = memoryview(part).cast("B")
            while view:
                self._wait(fd, True, deadline, what)
                try:
                    view = view[os.write(fd, view):]
                except BlockingIOError:
                    continue
                except BrokenPipeError:
                    raise self._died(what) from None

    def _died(self, what: str) -> OperationalError:
        try:
            code = self._proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            how = "closed its pipe"
        else:
            how = f"exited with code {code}" if code >= 0 else f"was killed by {_signal_name(-code)}"
        return OperationalError(f"PSI worker process {self._pid()} {how} while {what} "
                                "(a new one starts on the next batch; run the query again)")

    def _end_process(self, kill: bool) -> None:
        proc = self._proc
        if proc is None:
            return
        if kill and proc.poll() is None:
            proc.kill()
        for pipe in (proc.stdin, proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=5)  # EOF on stdin ends it
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class _WorkerPool:
    """The process's worker threads (one worker process each) and their FIFO job queue."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._threads: list[_WorkerThread] = []

    def submit(self, size: int, key: bytes, points: memoryview, out: memoryview) -> Future:
        job = _Job(key, points, out)
        with self._lock:  # with retire(): a job is never queued with no thread left to take or fail it
            while len(self._threads) < size:
                thread = _WorkerThread(self)
                self._threads.append(thread)
                thread.start()
            self.jobs.put(job)
        return job.future

    def retire(self, thread: _WorkerThread, error: BaseException | None) -> None:
        orphans = []
        with self._lock:
            self._threads.remove(thread)
            if not self._threads:
                while True:
                    try:
                        orphans.append(self.jobs.get_nowait())
                    except queue.Empty:
                        break
        for job in orphans:
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(error or OperationalError("the PSI worker processes were shut down"))

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [t._proc.pid for t in self._threads if t._proc is not None]

    def shutdown(self) -> None:
        orphans = []
        with self._lock:
            threads = list(self._threads)
            while True:  # jobs not started yet are failed, not run
                try:
                    orphans.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            for _ in threads:
                self.jobs.put(None)
        for job in orphans:
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(OperationalError("the PSI worker processes were shut down"))
        for thread in threads:
            thread.join(timeout=10)


_shared: _WorkerPool | None = None
_shared_lock = threading.Lock()


def _shared_pool() -> _WorkerPool:
    global _shared
    with _shared_lock:
        if _shared is None or _shared.pid != os.getpid():  # a forked child starts its own
            _shared = _WorkerPool()
        return _shared


def worker_pids() -> list[int]:
    """Process ids of this process's PSI worker processes (started so far, still running)."""
    with _shared_lock:
        pool = _shared
    return pool.worker_pids() if pool is not None and pool.pid == os.getpid() else []


def shutdown_workers() -> None:
    """End this process's PSI worker processes (at exit; new ones start on the next large batch)."""
    global _shared
    with _shared_lock:
        pool, _shared = _shared, None
    if pool is not None and pool.pid == os.getpid():
        pool.shutdown()


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
        pool = _shared_pool()
        out = bytearray(n * POINT)
        piece = min(PIECE, max(PARALLEL_MIN // 4, -(-n // (2 * self.processes))))
        src, dst = memoryview(points).cast("B"), memoryview(out)
        futures = [pool.submit(self.processes, raw_key, src[i * POINT:(i + piece) * POINT],
                               dst[i * POINT:(i + piece) * POINT]) for i in range(0, n, piece)]
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
