"""A PSI blinding worker: a small process that does X25519 scalar multiplications for its host.

`ecdh.GroupWorkers` starts it as ``python -I <this file> <host pid> <dir of cryptography>``: a fresh
interpreter that imports the standard library and `cryptography` only -- not `sqlsecure`, not the
host's ``__main__`` -- so it costs ~17 MB and works whatever the host script looks like (no
``if __name__ == "__main__":`` guard needed, a script read from stdin, a REPL).

Wire format on the worker's stdin / stdout, little-endian; every frame is a 9-byte header
``<B op or status> <Q payload length>`` and the payload:

  worker -> host, once at start: READY (payload empty), or FAILED with a UTF-8 message.
  host -> worker:  BLIND, payload = 32-byte scalar || points (32 B each)
  worker -> host:  READY, payload = the blinded points (same count, same order);
                   INVALID, a UTF-8 message (a point of low order: never produced by honest hashing);
                   FAILED, a UTF-8 message (anything else).
EOF on stdin ends the worker. It also ends when its host dies: a write to a closed pipe fails, and
on Linux ``PR_SET_PDEATHSIG`` kills it at once, even in the middle of a batch. SIGINT is ignored
(Ctrl-C goes to the host, whose exit then ends the worker).

This module imports nothing from `sqlsecure`, so `ecdh` reuses `blind_points` for small batches
blinded in the host's own thread.
"""

from __future__ import annotations

import importlib
import os
import signal
import struct
import sys

HEADER = struct.Struct("<BQ")
BLIND = 1
READY, INVALID, FAILED = 0, 1, 2
POINT = 32


def blind_points(raw_key: bytes, points: bytes) -> bytes:
    """X25519(raw_key, u) for each 32-byte u in `points`; ValueError on a point of low order."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    exchange = X25519PrivateKey.from_private_bytes(raw_key).exchange
    load = X25519PublicKey.from_public_bytes
    points = bytes(points)
    return b"".join([exchange(load(points[i:i + POINT])) for i in range(0, len(points), POINT)])


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


def _write_all(fd: int, *parts: bytes) -> None:
    for part in parts:
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view):]


def _reply(fd: int, status: int, payload: bytes = b"") -> None:
    _write_all(fd, HEADER.pack(status, len(payload)), payload)


def serve(rfd: int, wfd: int) -> int:
    """Answer requests from `rfd` on `wfd` until EOF."""
    try:
        importlib.import_module("cryptography.hazmat.primitives.asymmetric.x25519")  # fail here, not on a batch
    except Exception as exc:  # reported to the host, which raises OperationalError with it
        _reply(wfd, FAILED, f"cannot import cryptography ({sys.executable}): {exc!r}".encode())
        return 1
    _reply(wfd, READY)
    while True:
        header = _read_exact(rfd, HEADER.size)
        if header is None:
            return 0
        op, length = HEADER.unpack(header)
        payload = _read_exact(rfd, length)
        if payload is None:
            return 0
        if op != BLIND or length < POINT or (length - POINT) % POINT:
            _reply(wfd, FAILED, f"bad request: op {op}, {length} bytes".encode())
            continue
        try:
            out = blind_points(bytes(payload[:POINT]), memoryview(payload)[POINT:])
        except ValueError as exc:
            _reply(wfd, INVALID, str(exc).encode())
        except Exception as exc:
            _reply(wfd, FAILED, repr(exc).encode())
        else:
            _reply(wfd, READY, out)


def main(argv: list[str]) -> int:
    host_pid = int(argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(host_pid)
    if len(argv) > 2 and argv[2] not in sys.path:
        sys.path.append(argv[2])  # where the host found `cryptography` (-I ignores PYTHONPATH)
    # The protocol owns fds 0 and 1; anything printed by accident goes to stderr instead.
    rfd, wfd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(2, 1)
    os.close(null)
    try:
        return serve(rfd, wfd)
    except (BrokenPipeError, ConnectionResetError):  # the host went away
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
