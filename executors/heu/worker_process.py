"""An HE worker: a small process that does Paillier batches (encryption, decryption, randomisers).

`workers.HEWorkers` starts it as ``python -I <this file> <host pid> <heu dir> <site dirs>...``: a
fresh interpreter that imports gmpy2, numpy and this package's `kernels` / `fixed_base` by path --
not `sqlsecure`, not the host's ``__main__`` -- so it works whatever the host script looks like (no
``if __name__ == "__main__":`` guard needed) and costs ~30 MB before its tables.

Wire format on the worker's stdin / stdout: frames of a 9-byte header ``<B op or status> <Q length>``
(little-endian) and a payload. The host is this process's parent and the only peer, so payloads are
pickles (of ints, bytes and tuples):

  worker -> host, once at start: READY (empty), or FAILED with a UTF-8 message.
  host -> worker:  JOB, pickle((kind, key, args)), kind one of
                   "encrypt" key ("owner", n, h_s, p, q, exponent bits, window) or
                                 ("public", n, h_s, exponent bits, window); args (plaintexts, width)
                                 -> the ciphertexts as one fixed-width big-endian blob
                   "factors" key ("public", ...); args (count, width) -> blob of h_s^a mod n^2
                   "decrypt" key ("decrypt", n, p, q); args (blob, width, plaintext bits or None)
                                 -> list of plaintexts
  worker -> host:  READY, pickle(result); or FAILED, a UTF-8 message.
The worker keeps one kernel (fixed-base tables, up to ~130 MiB) per kind of job: the encryption
tables of the last key, the randomiser table of the last key, the last decryption key. EOF on
stdin ends it; so does its host's death (PR_SET_PDEATHSIG on Linux, a broken pipe elsewhere).
SIGINT is ignored (Ctrl-C goes to the host). The key owner's p and q reach its own worker
processes only; nothing here crosses a channel.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys

HEADER = struct.Struct("<BQ")
JOB = 1
READY, FAILED = 0, 2


def _die_with_parent(host_pid: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != host_pid:
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
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view):]


def _kernel(kernels, cache: dict, key: tuple):
    """The kernel of `key`, built on first use; one per slot (kind and exponent size): a new key
    replaces the last one of its slot, so a worker holds one query's tables at a time."""
    kind = key[0]
    slot = (kind, key[-2]) if kind in ("owner", "public") else (kind,)
    held = cache.get(slot)
    if held is not None and held[0] == key:
        return held[1]
    cache.pop(slot, None)  # free the old tables before building the new ones
    if kind == "owner":
        _, n, hs, p, q, bits, w = key
        made = kernels.OwnerKernel(n, hs, p, q, bits, w)
    elif kind == "public":
        _, n, hs, bits, w = key
        made = kernels.PublicKernel(n, hs, bits, w)
    elif kind == "decrypt":
        _, n, p, q = key
        made = kernels.CrtDecryptor(n, p, q)
    else:
        raise ValueError(f"unknown key kind {kind!r}")
    cache[slot] = (key, made)
    return made


def run_job(kernels, cache: dict, kind: str, key: tuple, args: tuple):
    kernel = _kernel(kernels, cache, key)
    if kind == "encrypt":
        plaintexts, width = args
        return kernels.to_blob(kernel.encrypt(plaintexts), width)
    if kind == "factors":
        count, width = args
        return kernels.to_blob(kernel.factors(count), width)
    if kind == "decrypt":
        blob, width, bits = args
        return kernel.decrypt(kernels.from_blob(blob, width), bits)
    raise ValueError(f"unknown job {kind!r}")


def serve(rfd: int, wfd: int) -> int:
    try:
        import kernels  # the package's kernels.py, by path (argv[2] is on sys.path)
    except Exception as exc:
        _reply(wfd, FAILED, f"cannot import the HE kernels ({sys.executable}): {exc!r}".encode())
        return 1
    cache: dict = {}
    _reply(wfd, READY)
    while True:
        header = _read_exact(rfd, HEADER.size)
        if header is None:
            return 0
        op, length = HEADER.unpack(header)
        payload = _read_exact(rfd, length)
        if payload is None:
            return 0
        try:
            if op != JOB:
                raise ValueError(f"bad request: op {op}")
            kind, key, args = pickle.loads(payload)
            out = pickle.dumps(run_job(kernels, cache, kind, key, args), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            _reply(wfd, FAILED, repr(exc).encode())
        else:
            _reply(wfd, READY, out)


def main(argv: list[str]) -> int:
    host_pid = int(argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(host_pid)
    sys.path.insert(0, argv[2])  # executors/heu: kernels.py and fixed_base.py
    for extra in argv[3:]:       # where the host found gmpy2 and numpy (-I ignores PYTHONPATH)
        if extra not in sys.path:
            sys.path.append(extra)
    rfd, wfd = os.dup(0), os.dup(1)  # the protocol owns fds 0 and 1; stray prints go to stderr
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(2, 1)
    os.close(null)
    try:
        return serve(rfd, wfd)
    except (BrokenPipeError, ConnectionResetError):
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
