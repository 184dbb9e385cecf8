"""Worker processes for batches that hold the GIL: ``python -I`` scripts fed over stdin / stdout.

X25519 blinding (`psi.blinding`, script `psi/blinding_worker.py`) and Paillier arithmetic (`heu.workers`, script
`heu/worker_process.py`) send large batches here. Each worker is a fresh
``python -I <script> <host pid> <args>...`` that imports the standard library, `worker_main` (its
side of the frames) and its own arithmetic only -- never `sqlsecure` nor the host's ``__main__`` --
so a host script needs no ``if __name__ == "__main__":`` guard and may come from stdin (a
`multiprocessing` pool would re-run an unguarded script in every worker).

A `WorkerProcesses` is the process's set of workers of one kind: a FIFO queue of `WorkerJob`s served
by one daemon thread per worker process, which starts the process, waits for its READY, then writes
each job's request and reads its reply against the job's deadline (poll(), so a busy server's
descriptors may be above FD_SETSIZE; no deadline where pipes cannot be polled, i.e. Windows). The
set starts on the first job, grows to the largest `size` any caller asks for, and lives until
`shutdown` (at exit); with `idle_seconds`, a worker left without a job that long ends. A forked
child starts its own. The workers are OS resources, as a thread pool's threads are, with no
protocol state: every protocol still receives its handle on them explicitly.

A worker ends on EOF (its pipe closed, at exit or by `shutdown`), on a broken pipe, and on Linux at
once when the host dies (PR_SET_PDEATHSIG, tied to its relay thread: it also covers a forked child
that keeps the pipes open). Failures never hang a caller: a worker that crashes, is killed, or stays
silent past its deadline fails its job with `OperationalError` naming the process and how it ended
(a new worker starts on the next batch); a FAILED reply, or a status the kind maps to an error,
fails only its job. A FAILED reply's text (which may quote the values of the job) goes to the host's
log (`sqlsecure.workers`); the job's error names only the exception's class.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import select
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from typing import Callable

from sqlsecure.errors import OperationalError
from sqlsecure.executors.runtime.worker_main import FAILED, HEADER, READY, REQUEST

log = logging.getLogger("sqlsecure.workers")


class WorkerJob:
    """One request: its payload `parts` (written after a header), `what` it does (for messages, e.g.
    "blinding 4,096 points"), `seconds` to its deadline once a worker takes it, and `out`, where a
    READY reply is read (its exact size; None: into a new buffer, passed to the kind's `decode`)."""

    __slots__ = ("parts", "what", "seconds", "out", "future")

    def __init__(self, parts: tuple, what: str, seconds: float, out: memoryview | None = None):
        self.parts, self.what, self.seconds, self.out, self.future = parts, what, seconds, out, Future()


class WorkerProcesses:
    """The process's worker processes of one kind, started on the first job.

    `label` names them in messages ("PSI worker process 1234 ..."); `command()` gives the script and
    its arguments after the host pid; `handle` is the caller-facing class named when no worker can
    start; `decode` turns a READY payload into the job's result; `errors` maps the kind's own reply
    statuses to a function of the message giving the job's exception.
    """

    def __init__(self, label: str, command: Callable[[], list[str]], *, handle: str, start_seconds: float,
                 idle_seconds: float | None = None, decode: Callable | None = None,
                 errors: dict[int, Callable[[str], BaseException]] | None = None):
        self.label, self.command, self.handle = label, command, handle
        self.start_seconds, self.idle_seconds = start_seconds, idle_seconds
        self.decode, self.errors = decode, errors or {}
        self._lock = threading.Lock()
        self._pool: _Pool | None = None

    def submit(self, size: int, job: WorkerJob) -> Future:
        """Queue `job` for the first free worker, first starting workers until there are `size`."""
        with self._lock:
            if self._pool is None or self._pool.pid != os.getpid():  # a forked child starts its own
                self._pool = _Pool(self)
            pool = self._pool
        return pool.submit(size, job)

    def worker_pids(self) -> list[int]:
        """Process ids of this process's workers of this kind (started so far, still running)."""
        with self._lock:
            pool = self._pool
        return pool.worker_pids() if pool is not None and pool.pid == os.getpid() else []

    def shutdown(self) -> None:
        """End the workers, failing jobs not started yet; new ones start on the next job."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None and pool.pid == os.getpid():
            pool.shutdown()


class _Pool:
    """One process's worker threads (one worker process each) and their FIFO job queue."""

    def __init__(self, kind: WorkerProcesses) -> None:
        self.kind = kind
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._threads: list[_WorkerThread] = []

    def submit(self, size: int, job: WorkerJob) -> Future:
        with self._lock:  # with retire*(): a job is never queued with no thread left to take or fail it
            while len(self._threads) < size:
                thread = _WorkerThread(self)
                self._threads.append(thread)
                thread.start()
            self.jobs.put(job)
        return job.future

    def retire_if_idle(self, thread: "_WorkerThread") -> bool:
        with self._lock:
            if not self.jobs.empty():
                return False
            self._threads.remove(thread)
            return True

    def retire(self, thread: "_WorkerThread", error: BaseException | None) -> None:
        with self._lock:
            if thread in self._threads:
                self._threads.remove(thread)
            orphans = [] if self._threads else self._drain()
        self._fail(orphans, error)

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [t.proc.pid for t in self._threads if t.proc is not None]

    def shutdown(self) -> None:
        with self._lock:
            threads = list(self._threads)
            orphans = self._drain()  # jobs not started yet are failed, not run
            for _ in threads:
                self.jobs.put(None)
        self._fail(orphans, None)
        for thread in threads:
            thread.join(timeout=10)

    def _drain(self) -> list:
        jobs = []
        while True:
            try:
                jobs.append(self.jobs.get_nowait())
            except queue.Empty:
                return jobs

    def _fail(self, jobs: list, error: BaseException | None) -> None:
        for job in jobs:
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(error or OperationalError(
                    f"the {self.kind.label} worker processes were shut down"))


class _WorkerThread(threading.Thread):
    """Starts one worker process and relays jobs to it until idle, told to stop, or the process fails."""

    def __init__(self, pool: _Pool):
        super().__init__(name=f"sqlsecure-{pool.kind.label.lower()}-worker", daemon=True)
        self._pool, self._kind = pool, pool.kind
        self.proc: subprocess.Popen | None = None

    def run(self) -> None:
        error = None
        try:
            self._start()
            while True:
                try:
                    job = self._pool.jobs.get(timeout=self._kind.idle_seconds)
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
                except BaseException as exc:
                    error = self._fault(exc)
                    job.future.set_exception(error)
                    break
                if isinstance(result, BaseException):  # the job failed, the worker is fine
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)
                job = result = None  # let go of the caller's buffers while waiting for the next job
        except BaseException as exc:  # could not start (or a bug here): fail, never leave callers waiting
            error = self._fault(exc)
        self._end_process(kill=error is not None)
        self._pool.retire(self, error)

    def _fault(self, exc: BaseException) -> OperationalError:
        if isinstance(exc, OperationalError):
            return exc
        return OperationalError(f"{self._kind.label} worker process {self._pid()}: {exc!r}")

    def _pid(self) -> str:
        return str(self.proc.pid) if self.proc is not None else "?"

    def _start(self) -> None:
        label = self._kind.label
        if not sys.executable:
            raise OperationalError(f"cannot start a {label} worker process: sys.executable is empty "
                                   f"(an embedded interpreter); use {self._kind.handle}(processes=1)")
        script, *args = self._kind.command()
        command = [sys.executable, "-I", script, str(os.getpid()), *args]
        try:
            self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        except OSError as exc:
            raise OperationalError(f"cannot start a {label} worker process ({sys.executable}): {exc}") from None
        if hasattr(select, "poll"):
            os.set_blocking(self.proc.stdin.fileno(), False)  # writes wait in poll(), with a deadline
        status, message = self._read_reply(time.monotonic() + self._kind.start_seconds, "starting", None)
        if status != READY:
            raise OperationalError(f"{label} worker process {self._pid()} could not start: "
                                   f"{message.decode('utf-8', 'replace')}")

    def _run(self, job: WorkerJob):
        """The job's result, or the exception that fails the job alone; raises if the worker failed."""
        deadline = time.monotonic() + job.seconds
        length = sum(memoryview(part).nbytes for part in job.parts)
        self._write(deadline, job.what, HEADER.pack(REQUEST, length), *job.parts)
        status, payload = self._read_reply(deadline, job.what, job.out)
        if status == READY:
            return self._kind.decode(payload) if self._kind.decode is not None else payload
        message = payload.decode("utf-8", "replace")
        if status in self._kind.errors:
            return self._kind.errors[status](message)
        if status == FAILED:  # the worker's text may quote the party's values: it stays in the party's log
            log.error("%s worker process %s failed %s: %s", self._kind.label, self._pid(), job.what, message)
            kind = re.match(r"[A-Za-z_]\w*", message)
            return OperationalError(f"{self._kind.label} worker process {self._pid()} failed {job.what}"
                                    f"{f' ({kind.group()})' if kind else ''}; the process's log has the details")
        raise OperationalError(f"{self._kind.label} worker process {self._pid()} sent status {status} "
                               f"while {job.what}")

    def _read_reply(self, deadline: float, what: str, out: memoryview | None) -> tuple[int, bytearray | None]:
        """Status and payload of the next reply; a READY payload goes into `out` if given (then None)."""
        header = bytearray(HEADER.size)
        self._read(deadline, what, memoryview(header))
        status, length = HEADER.unpack(header)
        if status == READY and out is not None:
            out = memoryview(out).cast("B")
            if length != len(out):
                raise OperationalError(f"{self._kind.label} worker process {self._pid()} sent {length} bytes "
                                       f"{what}, expected {len(out)}")
            self._read(deadline, what, out)
            return status, None
        payload = bytearray(length)
        self._read(deadline, what, memoryview(payload))
        return status, payload

    def _wait(self, fd: int, writing: bool, deadline: float, what: str) -> None:
        if not hasattr(select, "poll"):  # no deadline where pipes cannot be polled (Windows)
            return
        poll = select.poll()  # not select(): a busy server's descriptors may be above FD_SETSIZE
        poll.register(fd, select.POLLOUT if writing else select.POLLIN)
        if not poll.poll(max(deadline - time.monotonic(), 0) * 1000):  # POLLHUP / POLLERR count as ready
            self.proc.kill()
            raise OperationalError(f"{self._kind.label} worker process {self._pid()} was still {what} at its "
                                   "deadline and was killed (a new one starts on the next batch)")

    def _read(self, deadline: float, what: str, view: memoryview) -> None:
        fd, got = self.proc.stdout.fileno(), 0
        while got < len(view):
            self._wait(fd, False, deadline, what)
            k = os.readv(fd, [view[got:]])
            if k == 0:
                raise self._died(what)
            got += k

    def _write(self, deadline: float, what: str, *parts) -> None:
        fd = self.proc.stdin.fileno()
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
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            how = "closed its pipe"
        else:
            how = f"exited with code {code}" if code >= 0 else f"was killed by {_signal_name(-code)}"
        return OperationalError(f"{self._kind.label} worker process {self._pid()} {how} while {what} "
                                "(a new one starts on the next batch; run the query again)")

    def _end_process(self, kill: bool) -> None:
        proc = self.proc
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
