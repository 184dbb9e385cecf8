"""Worker processes for Paillier batches: encryption, decryption and randomisers across cores.

Big-integer arithmetic in gmpy2 holds the GIL, so large batches go to worker processes
(`worker_process.py`): each a fresh ``python -I`` that loads only gmpy2, numpy and the `kernels`
module -- it never imports `sqlsecure` nor runs the host's ``__main__``, so a host script needs no
``if __name__ == "__main__":`` guard (a `multiprocessing` pool would re-run an unguarded script in
every worker). Each worker process is owned by one daemon thread of the host that relays its jobs,
as `ecdh.GroupWorkers` does for PSI.

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
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Iterable, Iterator

import gmpy2
import numpy

from sqlsecure.errors import OperationalError
from sqlsecure.executors.heu.fixed_base import choose_window
from sqlsecure.executors.heu.kernels import from_blob
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
from sqlsecure.executors.heu.worker_process import HEADER, JOB, READY

PARALLEL_MIN = 1_024  # items; smaller batches run in the caller's thread
PIECE = 512           # encryptions per job (~0.1-0.3 s of one core at 2048 bits)
START_SECONDS = 60.0  # a new worker must report ready within this
JOB_SECONDS = 600.0   # a job's deadline: this plus 50 ms per item (building tables takes seconds)
IDLE_SECONDS = 60.0   # a worker with no job for this long ends and frees its tables
TABLE_BUDGET = 128 << 20  # bytes of fixed-base tables per worker process and key

WORKER_SCRIPT = Path(__file__).with_name("worker_process.py")
SITE_DIRS = sorted({str(Path(m.__file__).resolve().parent.parent) for m in (gmpy2, numpy)})


class _Job:
    __slots__ = ("payload", "items", "future")

    def __init__(self, payload: bytes, items: int):
        self.payload, self.items, self.future = payload, items, Future()


class _WorkerThread(threading.Thread):
    """Starts one worker process and relays jobs to it until idle, told to stop, or failed."""

    def __init__(self, pool: "_WorkerPool"):
        super().__init__(name="sqlsecure-he-worker", daemon=True)
        self._pool = pool
        self._proc: subprocess.Popen | None = None

    def run(self) -> None:
        error = None
        try:
            self._start()
            while True:
                try:
                    job = self._pool.jobs.get(timeout=IDLE_SECONDS)
                except queue.Empty:
                    if self._pool.retire_if_idle(self):
                        return self._end_process(kill=False)
                    continue
                if job is None:
                    break
                if not job.future.set_running_or_notify_cancel():
                    continue
                try:
                    result = self._run(job)
                except OperationalError as exc:
                    error = exc
                    job.future.set_exception(exc)
                    break
                except BaseException as exc:
                    error = OperationalError(f"HE worker process {self._pid()}: {exc!r}")
                    job.future.set_exception(error)
                    break
                else:
                    if isinstance(result, OperationalError):  # the job failed, the worker is fine
                        job.future.set_exception(result)
                    else:
                        job.future.set_result(result)
        except BaseException as exc:  # could not start
            error = exc if isinstance(exc, OperationalError) else OperationalError(
                f"cannot start an HE worker process: {exc!r}")
        self._end_process(kill=error is not None)
        self._pool.retire(self, error)

    def _pid(self) -> str:
        return str(self._proc.pid) if self._proc is not None else "?"

    def _start(self) -> None:
        if not sys.executable:
            raise OperationalError("cannot start an HE worker process: sys.executable is empty "
                                   "(an embedded interpreter); use HEWorkers(processes=1)")
        command = [sys.executable, "-I", str(WORKER_SCRIPT), str(os.getpid()), str(WORKER_SCRIPT.parent),
                   *SITE_DIRS]
        try:
            self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        except OSError as exc:
            raise OperationalError(f"cannot start an HE worker process ({sys.executable}): {exc}") from None
        os.set_blocking(self._proc.stdin.fileno(), False)
        status, payload = self._read_reply(time.monotonic() + START_SECONDS, "starting")
        if status != READY:
            raise OperationalError(f"HE worker process {self._pid()} could not start: "
                                   f"{payload.decode('utf-8', 'replace')}")

    def _run(self, job: _Job):
        what = f"a job of {job.items:,} items"
        deadline = time.monotonic() + JOB_SECONDS + job.items * 0.05
        self._write(deadline, what, HEADER.pack(JOB, len(job.payload)), job.payload)
        status, payload = self._read_reply(deadline, what)
        if status != READY:
            return OperationalError(f"HE worker process {self._pid()} failed {what}: "
                                    f"{payload.decode('utf-8', 'replace')}")
        return pickle.loads(payload)

    def _read_reply(self, deadline: float, what: str) -> tuple[int, bytearray]:
        header = bytearray(HEADER.size)
        self._read(deadline, what, memoryview(header))
        status, length = HEADER.unpack(header)
        payload = bytearray(length)
        if length:
            self._read(deadline, what, memoryview(payload))
        return status, payload

    def _wait(self, fd: int, writing: bool, deadline: float, what: str) -> None:
        left = max(deadline - time.monotonic(), 0)
        ready = select.select([], [fd], [], left) if writing else select.select([fd], [], [], left)
        if not any(ready):
            self._proc.kill()
            raise OperationalError(f"HE worker process {self._pid()} was still doing {what} at its "
                                   "deadline and was killed (a new one starts on the next batch)")

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
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        return OperationalError(f"HE worker process {self._pid()} {how} while doing {what} "
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


class _WorkerPool:
    """The process's HE worker threads (one worker process each) and their FIFO job queue."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._threads: list[_WorkerThread] = []

    def submit(self, size: int, payload: bytes, items: int) -> Future:
        job = _Job(payload, items)
        with self._lock:  # with retire*(): a job is never queued with no thread left to take or fail it
            while len(self._threads) < size:
                thread = _WorkerThread(self)
                self._threads.append(thread)
                thread.start()
            self.jobs.put(job)
        return job.future

    def retire_if_idle(self, thread: _WorkerThread) -> bool:
        with self._lock:
            if not self.jobs.empty():
                return False
            self._threads.remove(thread)
            return True

    def retire(self, thread: _WorkerThread, error: BaseException | None) -> None:
        orphans = []
        with self._lock:
            if thread in self._threads:
                self._threads.remove(thread)
            if not self._threads:
                while True:
                    try:
                        orphans.append(self.jobs.get_nowait())
                    except queue.Empty:
                        break
        for job in orphans:
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(error or OperationalError("the HE worker processes were shut down"))

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [t._proc.pid for t in self._threads if t._proc is not None]

    def shutdown(self) -> None:
        orphans = []
        with self._lock:
            threads = list(self._threads)
            while True:
                try:
                    orphans.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            for _ in threads:
                self.jobs.put(None)
        for job in orphans:
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(OperationalError("the HE worker processes were shut down"))
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
    """Process ids of this process's HE worker processes (started so far, still running)."""
    with _shared_lock:
        pool = _shared
    return pool.worker_pids() if pool is not None and pool.pid == os.getpid() else []


def shutdown_workers() -> None:
    """End this process's HE worker processes (at exit; new ones start on the next large batch)."""
    global _shared
    with _shared_lock:
        pool, _shared = _shared, None
    if pool is not None and pool.pid == os.getpid():
        pool.shutdown()


atexit.register(shutdown_workers)


def _key_spec(key: PublicKey | PrivateKey, uses: int, processes: int) -> tuple:
    """What a worker needs to rebuild the encryption kernel, with the window for `uses` per process."""
    public = key.public_key if isinstance(key, PrivateKey) else key
    bits, per_process = public.exponent_bits, -(-uses // processes)
    if isinstance(key, PrivateKey):
        w = choose_window(bits, per_process, public.n_bits, tables=2, budget=TABLE_BUDGET)
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
        return _shared_pool().submit(self.processes, payload, items)

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
