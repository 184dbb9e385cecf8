"""An HE worker: a small process that does Paillier batches (encryption, decryption, randomisers).

`workers.HEWorkers` starts it (through `worker_processes`) as
``python -I <this file> <host pid> <heu dir> <site dirs>...``: a fresh interpreter that imports
`worker_main`, gmpy2, numpy and this package's `kernels` / `fixed_base` by path -- not `sqlsecure`,
not the host's ``__main__`` -- so it works whatever the host script looks like (no
``if __name__ == "__main__":`` guard needed) and costs ~30 MB before its tables.

Frames, start-up, EOF and the host's death are `worker_main`'s. The host is this process's parent
and the only peer, so payloads are pickles (of ints, bytes and tuples):

  host -> worker:  REQUEST, pickle((kind, key, args)), kind one of
                   "encrypt" key ("owner", n, h_s, p, q, exponent bits, window) or
                                 ("public", n, h_s, exponent bits, window); args (plaintexts, width)
                                 -> the ciphertexts as one fixed-width big-endian blob
                   "factors" key ("public", ...); args (count, width) -> blob of h_s^a mod n^2
                   "decrypt" key ("decrypt", n, p, q); args (blob, width, plaintext bits or None)
                                 -> list of plaintexts
  worker -> host:  READY, pickle(result); or FAILED, a UTF-8 message.
The worker keeps one kernel (fixed-base tables, up to ~160 MiB) per kind of job: the encryption
tables of the last key, the randomiser table of the last key, the last decryption key. The key
owner's p and q reach its own worker processes only; nothing here crosses a channel.
"""

from __future__ import annotations

import os
import pickle
import sys

if __package__:  # imported by the host
    from ..runtime.worker_main import READY, REQUEST, run
else:  # run as a worker: python -I leaves this file's directories off sys.path
    sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runtime"))
    from worker_main import READY, REQUEST, run  # type: ignore[no-redef]


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


def load():
    import kernels  # the package's kernels.py, by path (argv[2] is on sys.path)

    cache: dict = {}

    def handle(op: int, payload: bytearray) -> tuple[int, bytes]:
        if op != REQUEST:
            raise ValueError(f"bad request: op {op}")
        kind, key, args = pickle.loads(payload)
        return READY, pickle.dumps(run_job(kernels, cache, kind, key, args), protocol=pickle.HIGHEST_PROTOCOL)

    return handle


def main(argv: list[str]) -> int:
    sys.path.insert(0, argv[2])  # executors/heu: kernels.py and fixed_base.py
    for extra in argv[3:]:       # where the host found gmpy2 and numpy (-I ignores PYTHONPATH)
        if extra not in sys.path:
            sys.path.append(extra)
    return run(argv, load, "the HE kernels")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
