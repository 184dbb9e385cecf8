"""The worker's side of `worker_processes`: request / reply frames on stdin / stdout until EOF.

A worker script (`psi/blinding_worker.py`, `heu/worker_process.py`) runs as
``python -I <script> <host pid> <dirs>...``: a fresh interpreter that never imports `sqlsecure` nor
the host's ``__main__``. So this module imports the standard library only; the script puts this
file's directory on `sys.path` (``-I`` leaves the script's own out), imports it and calls `run`.

Wire format on the worker's stdin / stdout, little-endian; every frame is a 9-byte header
``<B op or status> <Q payload length>`` and the payload:

  worker -> host, once at start: READY (payload empty), or FAILED with a UTF-8 message.
  host -> worker:  REQUEST, a payload the script's handler reads.
  worker -> host:  the handler's status and payload: READY and the result, FAILED and a UTF-8
                   message (also for any exception the handler raises), or a status of its own.
EOF on stdin ends the worker. It also ends when its host dies: a write to a closed pipe fails, and
on Linux ``PR_SET_PDEATHSIG`` kills it at once, even in the middle of a job. SIGINT is ignored
(Ctrl-C goes to the host, whose exit then ends the worker).
"""

from __future__ import annotations

import os
import signal
import struct
import sys
from typing import Callable

HEADER = struct.Struct("<BQ")
REQUEST = 1
READY, FAILED = 0, 2

Handler = Callable[[int, bytearray], tuple[int, bytes]]  # (op, payload) -> (status, reply payload)


def _die_with_parent(host_pid: int) -> None:
    """Linux: SIGKILL this process when the host thread that started it ends (pipe EOF elsewhere)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: pipe EOF still ends the worker
            pass
    if os.getppid() != host_pid:  # the host died before the signal was armed
        os._exit(0)


def _read_exact(fd: int, n: int) -> bytearray | None:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = os.readv(fd, [view[got:]])
        if k == 0:
            return None
        got += k
    return buf


def _reply(fd: int, status: int, payload: bytes = b"") -> None:
    for part in (HEADER.pack(status, len(payload)), payload):
        view = memoryview(part).cast("B")
        while view:
            view = view[os.write(fd, view):]


def _serve(rfd: int, wfd: int, handle: Handler) -> int:
    """Answer requests from `rfd` on `wfd` until EOF."""
    while True:
        header = _read_exact(rfd, HEADER.size)
        if header is None:
            return 0
        op, length = HEADER.unpack(header)
        payload = _read_exact(rfd, length)
        if payload is None:
            return 0
        try:
            status, out = handle(op, payload)
        except Exception as exc:
            status, out = FAILED, repr(exc).encode()
        _reply(wfd, status, out)


def run(argv: list[str], load: Callable[[], Handler], needs: str) -> int:
    """Serve the host whose pid is argv[1]: `load()` imports what the jobs need (`needs` names it in
    the error reported to the host) and returns the handler of requests."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(int(argv[1]))
    rfd, wfd = os.dup(0), os.dup(1)  # the protocol owns fds 0 and 1; stray prints go to stderr
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(2, 1)
    os.close(null)
    try:
        try:
            handle = load()  # fail here, not on the first job
        except Exception as exc:  # reported to the host, which raises OperationalError with it
            _reply(wfd, FAILED, f"cannot import {needs} ({sys.executable}): {exc!r}".encode())
            return 1
        _reply(wfd, READY)
        return _serve(rfd, wfd, handle)
    except (BrokenPipeError, ConnectionResetError):  # the host went away
        return 0
