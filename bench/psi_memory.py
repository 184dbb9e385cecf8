"""Benchmark: the ECDH-PSI join's memory (process tree RSS), time against the raw X25519 bound, messages.

Two parties ("a" left, "b" right) as threads in this process over an `InProcessChannel`, each with
its own `GroupWorkers` handle (both on the process's shared X25519 worker processes), as the
embedded runtime runs them. Each side holds n random 64-bit keys, half of them shared, ~1% of
rows overwritten with another row's key (duplicates), encoded with `encode_keys` (not timed). The
reference join is computed with numpy on the int64 keys before the run (so it adds little to the
baseline) and compared pair for pair, order-insensitive.

Printed per n:
  before MB   process tree RSS (this process + worker processes) just before the join starts
  peak MB     the maximum of the tree RSS sampled every 20 ms during the join (the tree is
              re-listed every second, so a worker that starts late counts too)
  wall s      the join, both parties, start to finish
  cpu s       CPU time (user + system) the tree used during the join; host cpu s: this process's
              share (hashing, sorting, the channel, relaying jobs), the rest is the workers'
  raw s       the X25519 work alone: as many exchanges as the join makes, 2 * (distinct a +
              distinct b), as one batch through the same workers; raw cpu likewise
  wall/raw, cpu/raw   on a shared machine the CPU ratio is the steadier figure
  msgs, MB    messages and bytes over the channel (both directions)
  load        1-minute load average at the start of the join (other processes on the machine)
Before the table: the idle tree (this process with numpy/pyarrow/sqlsecure imported, and the
warm workers) and each worker's RSS.

Run:  python bench/psi_memory.py [--sizes 10000,100000,1000000] [--processes N] [--seed S]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import numpy as np
import pyarrow as pa
import psutil

from sqlsecure.executors.runtime.channel import InProcessChannel
from sqlsecure.executors.psi.blinding import PARALLEL_MIN, BlindingKey, GroupWorkers, hash_to_points, worker_pids
from sqlsecure.executors.psi.encoding import encode_keys
from sqlsecure.executors.psi.ecdh import psi_join_indices

MB = 2 ** 20


def tree() -> list[psutil.Process]:
    me = psutil.Process()
    return [me, *me.children(recursive=True)]


def tree_rss(processes: list[psutil.Process] | None = None) -> int:
    total = 0
    for p in processes or tree():
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def tree_cpu() -> tuple[float, float]:
    """CPU seconds of (this process, its live children) -- the workers live for the whole run."""
    total = [0.0, 0.0]
    for i, p in enumerate(tree()):
        try:
            t = p.cpu_times()
            total[i > 0] += t.user + t.system
        except psutil.Error:
            pass
    return total[0], total[1]


class PeakSampler(threading.Thread):
    """Peak tree RSS every `interval` s; the tree is re-listed every 1 s (listing it scans /proc)."""

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        self.interval, self.peak, self._done = interval, tree_rss(), threading.Event()

    def run(self) -> None:
        processes, listed = tree(), time.monotonic()
        while not self._done.wait(self.interval):
            if time.monotonic() - listed > 1:
                processes, listed = tree(), time.monotonic()
            self.peak = max(self.peak, tree_rss(processes))

    def stop(self) -> int:
        self._done.set()
        self.join()
        return max(self.peak, tree_rss())


def make_keys(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    draw = lambda k: rng.integers(-2**63, 2**63 - 1, size=k, dtype=np.int64)
    shared = draw(n // 2)
    sides = []
    for _ in range(2):
        keys = np.concatenate([shared, draw(n - n // 2)])
        keys[rng.integers(0, n, n // 100)] = keys[rng.integers(0, n, n // 100)]
        sides.append(rng.permutation(keys))
    return sides[0], sides[1]


def reference_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Every (i, j) with a[i] == b[j], as a 2 x m array sorted by (i, j)."""
    oa, ob = np.argsort(a, kind="stable"), np.argsort(b, kind="stable")
    ua, sa, ca = np.unique(a[oa], return_index=True, return_counts=True)
    ub, sb, cb = np.unique(b[ob], return_index=True, return_counts=True)
    _, xa, xb = np.intersect1d(ua, ub, assume_unique=True, return_indices=True)
    ca, cb, sa, sb = ca[xa], cb[xb], sa[xa], sb[xb]
    per = ca * cb
    k = np.repeat(np.arange(len(per)), per)
    pos = np.arange(int(per.sum())) - np.repeat(np.cumsum(per) - per, per)
    left = oa[sa[k] + pos // cb[k]]
    right = ob[sb[k] + pos % cb[k]]
    return sorted_pairs(left, right)


def sorted_pairs(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return np.stack([left, right])[:, np.lexsort((right, left))]


def run_size(n: int, rng: np.random.Generator, processes: int | None) -> dict:
    a, b = make_keys(n, rng)
    enc = {p: encode_keys(pa.table({"k": keys}), ("k",)) for p, keys in (("a", a), ("b", b))}
    reference = reference_pairs(a, b)
    ops = 2 * (len(np.unique(a)) + len(np.unique(b)))
    channel = InProcessChannel(["a", "b"], timeout=600)
    workers = {p: GroupWorkers(processes) for p in ("a", "b")}
    out, errors = {}, []

    def party(me: str, peer: str) -> None:
        try:
            out[me] = psi_join_indices(channel.endpoint(me), peer, "bench", enc[me], me == "a", workers[me])
        except BaseException as exc:
            errors.append(exc)
            channel.abort(f"{me} failed: {exc}")

    threads = [threading.Thread(target=party, args=pq) for pq in (("a", "b"), ("b", "a"))]
    load = os.getloadavg()[0]
    before = tree_rss()
    sampler = PeakSampler()
    sampler.start()
    (host0, workers0), t0 = tree_cpu(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, (host1, workers1) = time.perf_counter() - t0, tree_cpu()
    host, cpu = host1 - host0, host1 + workers1 - host0 - workers0
    peak = sampler.stop()
    if errors:
        raise errors[0]
    ok = len(out["a"]) == len(out["b"]) and np.array_equal(sorted_pairs(out["a"], out["b"]), reference)

    points = hash_to_points(b"%d" % i for i in range(ops // 2))
    raw_cpu0, t0 = sum(tree_cpu()), time.perf_counter()
    BlindingKey().blind(points * 2, workers["a"])  # X25519 is constant-time in its input
    raw, raw_cpu = time.perf_counter() - t0, sum(tree_cpu()) - raw_cpu0
    return dict(n=n, before=before, peak=peak, wall=wall, cpu=cpu, host=host, raw=raw, raw_cpu=raw_cpu, ops=ops,
                msgs=channel.stats.total_messages(), bytes=channel.stats.total_bytes(), rows=reference.shape[1],
                load=load, ok=ok)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated rows per side")
    ap.add_argument("--processes", type=int, default=None, help="worker processes (default: cores)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    BlindingKey().blind((b"\x09" + bytes(31)) * PARALLEL_MIN, GroupWorkers(args.processes))  # start the workers
    per_worker = [psutil.Process(pid).memory_info().rss / MB for pid in worker_pids()]
    print(f"# {os.cpu_count()} cores; idle tree RSS {tree_rss() / MB:,.0f} MB "
          f"(workers: {', '.join(f'{w:.0f}' for w in per_worker)} MB)", flush=True)
    print("| n per side | before MB | peak MB | wall s | cpu s | host cpu s | raw s | raw cpu s | wall/raw | cpu/raw "
          "| X25519 ops | msgs | channel MB | join rows | load | = reference |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|")
    failed = False
    rng = np.random.default_rng(args.seed)
    for n in (int(s) for s in args.sizes.split(",")):
        r = run_size(n, rng, args.processes)
        failed |= not r["ok"]
        print(f"| {n:,} | {r['before'] / MB:,.0f} | {r['peak'] / MB:,.0f} | {r['wall']:.2f} | {r['cpu']:.2f} | {r['host']:.2f} "
              f"| {r['raw']:.2f} | {r['raw_cpu']:.2f} | {r['wall'] / r['raw']:.2f} | {r['cpu'] / r['raw_cpu']:.2f} "
              f"| {r['ops']:,} | {r['msgs']} | {r['bytes'] / 1e6:,.1f} | {r['rows']:,} | {r['load']:.1f} "
              f"| {'yes' if r['ok'] else 'NO'} |", flush=True)
    if failed:
        print("FAILED: the PSI join differs from the reference", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
