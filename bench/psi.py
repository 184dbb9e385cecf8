"""Benchmark: the engine's ECDH-PSI inner join (X25519), two parties in one process.

For each size n, two parties ("a" left, "b" right) each hold n random 64-bit integer keys, half of
them shared (plus ~1% duplicated rows per side). Keys are encoded with `encode_keys`, then each party
runs `psi_join_indices` in its own thread with its own `GroupWorkers` pool, over an
`InProcessChannel` -- as the embedded runtime does. Pools are warmed up (started) before timing,
as in a long-lived runtime. Reported per n:

  wall s      both threads, start to finish of psi_join_indices (encoding excluded)
  raw s       the X25519 work alone: 2*(distinct_a + distinct_b) exchanges -- the number the
              protocol does -- in one batch through one warm GroupWorkers pool over all cores
              (with --repeat R, both are the best of R runs over the same keys; each run goes to stderr)
  ratio       wall / raw: protocol overhead beyond the group operations
  peak MB     peak RSS of the whole process tree (main + forkserver + pool workers) during the
              run, sampled every 50 ms (psutil if installed, else /proc/<pid>/status VmRSS)
  chan MB/msgs  bytes and messages over the channel
  common/rows distinct common keys / join output rows
  ok          the (left, right) row pairs equal `local_join_indices` (order-insensitive: the PSI
              orders keys by their double-blinded points, the reference by key). Exit 1 if not.

Run:  python bench/psi.py [--sizes 10000,100000,1000000] [--repeat R] [--processes N] [--seed S]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time

import numpy as np
import pyarrow as pa

from sqlsecure.executors.channel import InProcessChannel
from sqlsecure.executors.ecdh import PARALLEL_MIN, POINT, BlindingKey, GroupWorkers, hash_to_points
from sqlsecure.executors.encoding import encode_keys
from sqlsecure.executors.psi import local_join_indices, psi_join_indices

try:
    import psutil
except ImportError:
    psutil = None


def tree_pids() -> list[int]:
    """This process and all its descendants (the forkserver and the pool workers under it)."""
    if psutil is not None:
        return [os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))]
    parent = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                parent[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            pass
    tree, frontier = [os.getpid()], [os.getpid()]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, pp in parent.items() if pp == pid]
        tree += kids
        frontier += kids
    return tree


def rss(pids: list[int]) -> int:
    """Sum of the resident set sizes of `pids`, in bytes (shared pages count once per process)."""
    total = 0
    for pid in pids:
        try:
            if psutil is not None:
                total += psutil.Process(pid).memory_info().rss
            else:
                with open(f"/proc/{pid}/status") as f:
                    total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024
        except (OSError, StopIteration, ValueError) if psutil is None else psutil.Error:
            pass
    return total


def tree_rss() -> int:
    return rss(tree_pids())


class PeakSampler(threading.Thread):
    """Peak of `tree_rss()`, sampled every `interval` s (the process list is refreshed every 1 s)."""

    def __init__(self, interval: float = 0.05):
        super().__init__(daemon=True)
        self.interval, self.pids, self._done = interval, tree_pids(), threading.Event()
        self.peak = rss(self.pids)

    def run(self) -> None:
        ticks = 0
        while not self._done.wait(self.interval):
            ticks += 1
            if ticks % round(1 / self.interval) == 0:
                self.pids = tree_pids()
            self.peak = max(self.peak, rss(self.pids))

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
        keys[rng.integers(0, n, n // 100)] = keys[rng.integers(0, n, n // 100)]  # some duplicates
        sides.append(rng.permutation(keys))
    return sides[0], sides[1]


def run_size(n: int, rng: np.random.Generator, pools: dict[str, GroupWorkers], repeat: int) -> dict:
    """One key set of n rows per side; the PSI and the raw bound `repeat` times each, best time kept."""
    a, b = make_keys(n, rng)
    enc = {p: encode_keys(pa.table({"k": keys}), ("k",)) for p, keys in (("a", a), ("b", b))}
    ref_l, ref_r = local_join_indices(enc["a"], enc["b"])
    pairs = lambda l, r: np.stack([l, r])[:, np.lexsort((r, l))]
    reference = pairs(ref_l, ref_r)
    distinct_a, distinct_b = np.unique(a), np.unique(b)
    points = hash_to_points([b"i%d" % v for v in np.concatenate([distinct_a, distinct_b]).tolist()])
    r = dict(n=n, wall=float("inf"), raw=float("inf"), peak=0, ok=True, ops=2 * len(points) // POINT,
             common=len(np.intersect1d(distinct_a, distinct_b)), rows=len(ref_l))
    for _ in range(repeat):
        channel = InProcessChannel(["a", "b"])
        out, errors = {}, []

        def party(me: str, peer: str) -> None:
            try:
                out[me] = psi_join_indices(channel.endpoint(me), peer, "bench", enc[me], me == "a", pools[me])
            except BaseException as exc:
                errors.append(exc)
                channel.abort(f"{me} failed: {exc}")

        threads = [threading.Thread(target=party, args=pq) for pq in (("a", "b"), ("b", "a"))]
        sampler = PeakSampler()
        sampler.start()
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        r["wall"] = min(r["wall"], wall)
        r["peak"] = max(r["peak"], sampler.stop())
        if errors:
            raise errors[0]
        r["ok"] &= len(out["a"]) == len(out["b"]) and np.array_equal(pairs(out["a"], out["b"]), reference)
        r.update(bytes=channel.stats.total_bytes(), msgs=channel.stats.total_messages())

        # the raw bound: as many X25519 exchanges as the protocol made, on one warm pool
        t0 = time.perf_counter()
        blinded = BlindingKey().blind(points * 2, pools["a"])  # X25519 is constant-time in its input
        raw = time.perf_counter() - t0
        r["raw"] = min(r["raw"], raw)
        assert len(blinded) == 2 * len(points)
        print(f"# {time.strftime('%H:%M:%S')} n={n:,}: wall {wall:.2f} s, raw {raw:.2f} s", file=sys.stderr, flush=True)
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated rows per side")
    ap.add_argument("--processes", type=int, default=None, help="pool processes per party (default: cores)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per size; the best wall and raw times are kept")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    import cryptography

    print(f"# python {platform.python_version()}, cryptography {cryptography.__version__}, "
          f"{os.cpu_count()} cores, RSS via {'psutil' if psutil else '/proc'}", flush=True)
    pools = {p: GroupWorkers(args.processes) for p in ("a", "b")}
    try:
        for pool in pools.values():  # start the pools now, as a long-lived runtime would have
            BlindingKey().blind((b"\x09" + bytes(31)) * PARALLEL_MIN, pool)
        print(f"# process tree RSS with both pools warm, before any run: {tree_rss() / 2**20:,.0f} MB", flush=True)
        print("| n per side | wall s | raw X25519 s | wall / raw | X25519 ops | peak RSS MB "
              "| channel MB | messages | common keys | join rows | = reference |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|")
        failed = False
        rng = np.random.default_rng(args.seed)
        for n in sizes:
            r = run_size(n, rng, pools, args.repeat)
            failed |= not r["ok"]
            print(f"| {r['n']:,} | {r['wall']:.2f} | {r['raw']:.2f} | {r['wall'] / r['raw']:.2f} | {r['ops']:,} "
                  f"| {r['peak'] / 2**20:,.0f} | {r['bytes'] / 1e6:,.1f} | {r['msgs']} | {r['common']:,} "
                  f"| {r['rows']:,} | {'yes' if r['ok'] else 'NO'} |", flush=True)
    finally:
        for pool in pools.values():
            pool.close()
    if failed:
        print("FAILED: the PSI join differs from local_join_indices", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
