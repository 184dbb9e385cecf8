"""Benchmark: unbalanced PSI (a prepared large set reused across queries) vs the balanced ECDH-PSI.

A small side of `--small` rows (default 10^3) against a large side of N rows for each N in
`--sizes` (default 10^5 and 10^6; `--with-10m` adds 10^7 -- several minutes and ~2 GB). Keys are
random 64-bit integers, encoded with `encode_keys` (not timed); the large side has ~1% duplicate
rows, and half of each small query's keys are drawn from the large side. Two parties as threads
in this process over an `InProcessChannel`, sharing the process's X25519 worker processes
(`--processes` per party, default all cores), started before timing; one `PsiCache` per party.

Printed per N:
  prepare s / MB    the first query: preparation of the epoch (L blinds its N distinct keys and
                    streams P; S raises P to its key and indexes it) plus the query itself
  query s / KB      the median of `--queries` later queries (each with fresh small keys) that
                    reuse the epoch, and their channel traffic (both directions)
  L local s         of each query, the large side's local work: hashing its N rows, sorting their
                    prefixes and the digest that detects a change of its keys
  balanced s / MB   `psi_join_indices` (the balanced ECDH-PSI) on the same tables, one query;
                    skipped above `--balanced-max` (default 10^6: its cost is about a preparation's)
  S cache MB, L cache MB   what each party keeps for the epoch (`PsiCache.nbytes`)
  load              1-minute load average at the start of the row (other processes on the machine)
Every result is checked (pairs of equal keys, as many as the plaintext join has); exit 1 if not.

Run:  python bench/unbalanced_psi.py [--sizes 100000,1000000] [--with-10m] [--queries 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import pyarrow as pa

from sqlsecure.executors.runtime.channel import InProcessChannel
from sqlsecure.executors.psi.blinding import BlindingKey, GroupWorkers, hash_to_points
from sqlsecure.executors.psi.encoding import encode_keys
from sqlsecure.executors.psi.ecdh import psi_join_indices
from sqlsecure.executors.psi.unbalanced import PsiCache, _keys, unbalanced_join_indices

MB = 2 ** 20


def encoded(values: np.ndarray) -> list[bytes | None]:
    return encode_keys(pa.table({"k": pa.array(values, pa.int64())}), ("k",))


def both(channel: InProcessChannel, run_small, run_large) -> tuple[float, np.ndarray, np.ndarray]:
    """Run the two parties (endpoint -> result) as threads; (wall seconds, small side's result,
    large side's result)."""
    start = time.perf_counter()
    out = channel.run({"s": run_small, "l": run_large})
    return time.perf_counter() - start, out["s"], out["l"]


def check(small: np.ndarray, large: np.ndarray, si: np.ndarray, li: np.ndarray) -> bool:
    """Every pair joins equal keys, each pair once, and there are as many as the plaintext join has."""
    values, counts = np.unique(large, return_counts=True)
    at = np.clip(np.searchsorted(values, small), 0, len(values) - 1)
    expected = int(np.where(values[at] == small, counts[at], 0).sum())
    distinct = len(np.unique(si.astype(np.int64) * len(large) + li)) == len(si)
    return len(si) == len(li) == expected and distinct and bool(np.all(small[si] == large[li]))


def traffic(channel: InProcessChannel, before) -> int:
    return channel.stats.since(before).total_bytes()


def run_size(n: int, args: argparse.Namespace, rng: np.random.Generator) -> tuple[str, bool]:
    load = os.getloadavg()[0]
    large = rng.integers(-2 ** 63, 2 ** 63 - 1, n, dtype=np.int64)
    dup = rng.random(n) < 0.01
    large[dup] = large[rng.integers(0, n, int(dup.sum()))]
    large_enc = encoded(large)

    def small_query() -> np.ndarray:
        half = args.small // 2
        return np.concatenate([large[rng.integers(0, n, half)],
                               rng.integers(-2 ** 63, 2 ** 63 - 1, args.small - half, dtype=np.int64)])

    workers = {p: GroupWorkers(args.processes) for p in "sl"}
    cache = {"s": PsiCache(), "l": PsiCache()}
    channel = InProcessChannel(["s", "l"], timeout=3600)
    ok = True
    times, sizes = [], []
    for q in range(args.queries + 1):
        small = small_query()
        small_enc = encoded(small)
        before = channel.stats.snapshot()
        wall, si, li = both(
            channel,
            lambda ep: unbalanced_join_indices(ep, "l", f"q{q}", small_enc, True, False, cache["s"], workers["s"],
                                               "large.t(k)"),
            lambda ep: unbalanced_join_indices(ep, "s", f"q{q}", large_enc, False, True, cache["l"], workers["l"],
                                               "large.t(k)"))
        ok &= check(small, large, si, li)
        times.append(wall)
        sizes.append(traffic(channel, before))
        print(f"  N={n:,} query {q}: {wall:.2f} s, {sizes[-1] / 1024:,.1f} KB", file=sys.stderr)

    start = time.perf_counter()
    _keys(large_enc).digest()
    local = time.perf_counter() - start

    balanced = "-", "-"
    if n <= args.balanced_max:
        small = small_query()
        small_enc = encoded(small)
        before = channel.stats.snapshot()
        wall, si, li = both(
            channel,
            lambda ep: psi_join_indices(ep, "l", "balanced", small_enc, True, workers["s"]),
            lambda ep: psi_join_indices(ep, "s", "balanced", large_enc, False, workers["l"]))
        ok &= check(small, large, si, li)
        balanced = f"{wall:.2f}", f"{traffic(channel, before) / MB:.1f}"
        print(f"  N={n:,} balanced: {wall:.2f} s", file=sys.stderr)

    row = (f"{n:>12,} {times[0]:>10.2f} {sizes[0] / MB:>8.1f} {statistics.median(times[1:]):>8.2f} "
           f"{statistics.median(sizes[1:]) / 1024:>8.1f} {local:>8.2f} {balanced[0]:>11} {balanced[1]:>11} "
           f"{cache['s'].nbytes() / MB:>8.1f} {cache['l'].nbytes() / MB:>8.1f} {load:>5.1f} {'ok' if ok else 'WRONG'}")
    return row, ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated large-side rows (default 10^5,10^6)")
    ap.add_argument("--with-10m", action="store_true", help="add N = 10^7 (run it once: minutes, ~2 GB)")
    ap.add_argument("--small", type=int, default=1000, help="small-side rows per query (default 10^3)")
    ap.add_argument("--queries", type=int, default=3, help="queries after the preparing one (default 3)")
    ap.add_argument("--balanced-max", type=float, default=1e6, help="largest N to run the balanced PSI at")
    ap.add_argument("--processes", type=int, default=None, help="X25519 worker processes per party (default: cores)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.queries < 1:
        ap.error("--queries must be at least 1")
    sizes = [int(float(s)) for s in args.sizes.split(",") if s]
    if args.with_10m and 10 ** 7 not in sizes:
        sizes.append(10 ** 7)
    rng = np.random.default_rng(args.seed)

    warm = GroupWorkers(args.processes)  # start the worker processes before timing
    BlindingKey().blind(hash_to_points([b"%d" % i for i in range(4096)]), warm)

    print(f"unbalanced PSI: {args.small:,} small rows against N large rows; {os.cpu_count()} cores; "
          f"{args.queries} reusing queries per N")
    print(f"{'N':>12} {'prepare s':>10} {'prep MB':>8} {'query s':>8} {'query KB':>8} {'L local s':>8} "
          f"{'balanced s':>11} {'balanced MB':>11} {'S cache':>8} {'L cache':>8} {'load':>5} check")
    ok = True
    for n in sizes:
        row, good = run_size(n, args, rng)
        print(row, flush=True)
        ok &= good
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
