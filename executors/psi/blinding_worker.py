"""A PSI blinding worker: a small process that does X25519 scalar multiplications for its host.

`ecdh.GroupWorkers` starts it (through `worker_processes`) as
``python -I <this file> <host pid> <dir of cryptography>``: a fresh interpreter that imports the
standard library, `worker_main` and `cryptography` only -- not `sqlsecure`, not the host's
``__main__`` -- so it costs ~17 MB and works whatever the host script looks like (no
``if __name__ == "__main__":`` guard needed, a script read from stdin, a REPL).

Frames, start-up, EOF and the host's death are `worker_main`'s. The request and its replies:

  host -> worker:  REQUEST, payload = 32-byte scalar || points (32 B each)
  worker -> host:  READY, payload = the blinded points (same count, same order);
                   INVALID, a UTF-8 message (a point of low order: never produced by honest hashing);
                   FAILED, a UTF-8 message (anything else).

This module imports nothing from `sqlsecure` but `runtime/worker_main`, so `blinding` reuses
`blind_points` for small batches blinded in the host's own thread.
"""

from __future__ import annotations

import importlib
import os
import sys

if __package__:  # imported by the host
    from ..runtime.worker_main import FAILED, READY, REQUEST, run
else:  # run as a worker: python -I leaves the executors' directories off sys.path
    sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runtime"))
    from worker_main import FAILED, READY, REQUEST, run  # type: ignore[no-redef]

INVALID = 1
POINT = 32


def blind_points(raw_key: bytes, points: bytes) -> bytes:
    """X25519(raw_key, u) for each 32-byte u in `points`; ValueError on a point of low order."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    exchange = X25519PrivateKey.from_private_bytes(raw_key).exchange
    load = X25519PublicKey.from_public_bytes
    points = bytes(points)
    return b"".join([exchange(load(points[i:i + POINT])) for i in range(0, len(points), POINT)])


def handle(op: int, payload: bytearray) -> tuple[int, bytes]:
    if op != REQUEST or len(payload) < POINT or len(payload) % POINT:
        return FAILED, f"bad request: op {op}, {len(payload)} bytes".encode()
    try:
        return READY, blind_points(bytes(payload[:POINT]), memoryview(payload)[POINT:])
    except ValueError as exc:
        return INVALID, str(exc).encode()


def load():
    importlib.import_module("cryptography.hazmat.primitives.asymmetric.x25519")
    return handle


def main(argv: list[str]) -> int:
    if len(argv) > 2 and argv[2] not in sys.path:
        sys.path.append(argv[2])  # where the host found `cryptography` (-I ignores PYTHONPATH)
    return run(argv, load, "cryptography")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
