"""Benchmark: Paillier operations (phe default vs sqlsecure HEU) and he_group_sum end to end.

Part 1, operations per second on one core, same key, side by side:
  encrypt      phe `PaillierPublicKey.encrypt` (r^n with full-length r)  vs  HEU `Encryptor` (public
               key, DJN randomness h_s^a with ceil(k/2)-bit a from a fixed-base table) and
               `OwnerEncryptor` (the key owner's CRT variant: the same ciphertexts)
  encrypt xP   HEU key-owner encryption through a `HEWorkers` pool of P processes (all cores)
  decrypt      phe `decrypt` (CRT)  vs  HEU `PrivateKey.decrypt` (phe's raw CRT decryption)
  add          phe `EncryptedNumber.__add__`  vs  HEU one multiplication mod n^2
Part 2, he_group_sum: B (values, key owner, with a worker pool) and A (labels) in two threads over
an `InProcessChannel`, one int64 column, random labels; wall time, channel bytes and messages, and
whether the revealed sums equal the plaintext reference (exit 1 if not).

The machine is shared with other work: numbers are indicative.

Run:  python bench/he.py [--key-bits 2048] [--ops 200] [--rows 100000] [--groups 1000] [--processes N]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import numpy as np
from phe import paillier

from sqlsecure.executors.channel import InProcessChannel
from sqlsecure.executors.heu import (
    Encryptor,
    HEParams,
    HEWorkers,
    OwnerEncryptor,
    group_sum_reference,
    he_group_sum_labels,
    he_group_sum_values,
    keypair_from_phe,
    reveal_group_sums,
)
from sqlsecure.executors.heu.paillier import add, ciphertexts_from_blob


def rate(fn, count: int) -> float:
    start = time.perf_counter()
    fn()
    return count / (time.perf_counter() - start)


def operations(key_bits: int, count: int, processes: int) -> None:
    phe_pk, phe_sk = paillier.generate_paillier_keypair(n_length=key_bits)
    pk, sk = keypair_from_phe(phe_pk, phe_sk)
    msgs = list(range(count))
    rows = []
    phe_enc = rate(lambda: [phe_pk.encrypt(m) for m in msgs[:max(20, count // 4)]], max(20, count // 4))
    enc = Encryptor(pk)
    enc.encrypt([1] * 300)  # builds the table (its cost is reported for the owner's tables)
    heu_enc = rate(lambda: enc.encrypt(msgs), count)
    owner = OwnerEncryptor(sk)
    start = time.perf_counter()
    owner.encrypt([0])
    table_s = time.perf_counter() - start
    owner_enc = rate(lambda: owner.encrypt(msgs), count)
    workers = HEWorkers(processes)
    big = 4 * count * processes
    list(workers.encrypt_stream(sk, iter([msgs[:1] * 2500]), 2500))  # start workers and their tables
    pool_enc = rate(lambda: list(workers.encrypt_stream(sk, iter([list(range(big))]), big)), big)
    workers.close()
    rows.append(("encrypt", phe_enc, heu_enc, f"public key; owner CRT {owner_enc:,.0f}/s "
                 f"({owner_enc / phe_enc:.1f}x); tables {table_s:.2f} s"))
    rows.append((f"encrypt x{processes}", phe_enc, pool_enc, "key owner, worker pool"))
    phe_cts = [phe_pk.encrypt(m) for m in msgs[:40]]
    heu_cts = owner.encrypt(msgs[:40])
    rows.append(("decrypt", rate(lambda: [phe_sk.decrypt(c) for c in phe_cts], 40),
                 rate(lambda: sk.decrypt(heu_cts), 40), "both phe's CRT decryption"))
    a, b = phe_cts[0], phe_cts[1]
    ca, cb = heu_cts[0], heu_cts[1]
    n_add = 20 * count
    rows.append(("add", rate(lambda: [a + b for _ in range(n_add)], n_add),
                 rate(lambda: [add(pk, ca, cb) for _ in range(n_add)], n_add), "ciphertext + ciphertext"))
    print(f"\nPaillier {key_bits}-bit, ops/s (one core unless noted)")
    print(f"{'op':<12}{'phe':>12}{'sqlsecure':>12}{'ratio':>8}  note")
    for name, base, ours, note in rows:
        print(f"{name:<12}{base:>12,.0f}{ours:>12,.0f}{ours / base:>7.1f}x  {note}")


def group_sum(key_bits: int, rows: int, groups: int, processes: int) -> bool:
    rng = np.random.default_rng(1)
    values = [rng.integers(-(10**12), 10**12, rows)]
    codes = rng.integers(0, groups, rows)
    params = HEParams(key_bits=key_bits)
    channel = InProcessChannel(["a", "b"], timeout=3600)
    workers = HEWorkers(processes)
    list(workers.encrypt_stream(keypair_from_phe(*paillier.generate_paillier_keypair(n_length=key_bits))[1],
                                iter([[0] * 2500]), 2500))  # warm pool, as in a long-lived runtime
    out, errors = {}, []

    def party(name, fn):
        try:
            share = fn(channel.endpoint(name))
            out[name] = reveal_group_sums(channel.endpoint(name), "b" if name == "a" else "a", "g", share, "a")
        except Exception as exc:  # pragma: no cover
            errors.append(exc)
            channel.abort(str(exc))

    start = time.perf_counter()
    threads = [
        threading.Thread(target=party, args=("a", lambda ep: he_group_sum_labels(ep, "b", "g", codes, groups, params))),
        threading.Thread(target=party, args=("b", lambda ep: he_group_sum_values(ep, "a", "g", values, params, workers))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    workers.close()
    if errors:
        raise errors[0]
    ok = out["a"].sums == group_sum_reference(codes, groups, values).sums
    st = channel.stats
    print(f"\nhe_group_sum {key_bits}-bit, {rows:,} rows x {groups:,} groups, {processes} worker processes for B")
    print(f"  wall {wall:.1f} s ({rows / wall:,.0f} rows/s); B->A {st.bytes[('b', 'a')] / 1e6:.1f} MB in "
          f"{st.messages[('b', 'a')]} msgs; A->B {st.bytes[('a', 'b')] / 1e3:.1f} kB in "
          f"{st.messages[('a', 'b')]} msgs; sums ok: {ok}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--ops", type=int, default=200)
    ap.add_argument("--rows", default="100000", help="comma-separated row counts for he_group_sum")
    ap.add_argument("--groups", type=int, default=1000)
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.2f} -- shared machine, indicative numbers")
    operations(args.key_bits, args.ops, args.processes)
    ok = all(group_sum(args.key_bits, int(r), args.groups, args.processes) for r in args.rows.split(",") if r)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
