"""The enclave process: `python -m sqlsecure.executors.tee.main [--parent PID]`.

Reads frames from stdin, hands each envelope to `EnclaveCore`, writes the answers as frames to
stdout. Anything else that would print to stdout goes to stderr instead, so the frame stream
cannot be corrupted. The process exits on `shutdown`, at end of input (the host closed the pipe
or died), on a corrupt frame, and — checked by a watchdog thread every 0.2 s, even in the middle
of a computation — as soon as its parent process is gone.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

from sqlsecure.errors import ProtocolError
from sqlsecure.executors.tee import wire
from sqlsecure.executors.tee.core import EnclaveCore, failure_of

PROVISION_FRAME_LIMIT = 1 << 20
WATCH_INTERVAL = 0.2


def watch_parent(parent: int) -> None:
    """Exit the process at once when `parent` is no longer our parent (it died; we were re-parented)."""

    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(3)
            time.sleep(WATCH_INTERVAL)

    threading.Thread(target=watch, name="enclave-parent-watch", daemon=True).start()


def serve(frames_in, frames_out) -> int:
    core = EnclaveCore()
    while True:
        limit = core.config.max_frame_bytes if core.config else PROVISION_FRAME_LIMIT
        try:
            envelope = wire.read_frame(frames_in, limit, wire.HOST)
        except ProtocolError as exc:  # the stream cannot be resynchronised: say why, then stop
            wire.write_frame(frames_out, wire.Envelope(wire.ENCLAVE, wire.HOST, wire.FAILURE,
                                                       failure_of(exc).to_bytes()))
            return 2
        if envelope is None or envelope.tag == wire.SHUTDOWN:
            return 0
        for answer in core.handle(envelope):
            wire.write_frame(frames_out, answer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sqlsecure.executors.tee.main")
    parser.add_argument("--parent", type=int, default=None, help="exit when this process is no longer the parent")
    args = parser.parse_args(argv)
    parent = os.getppid() if args.parent is None else args.parent
    if os.getppid() != parent:
        return 3
    watch_parent(parent)
    frames_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints can no longer reach the frame stream
    sys.stdout = sys.stderr
    frames_in = os.fdopen(os.dup(sys.stdin.fileno()), "rb")
    try:
        return serve(frames_in, frames_out)
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the host is gone


if __name__ == "__main__":
    sys.exit(main())
