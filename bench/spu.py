"""Benchmark: SPU protocols (additive sharing over Z_2^64 with a trusted dealer), parties as threads.

For each size n, the compute parties (p0, p1[, p2]) and the dealer run in threads of one process
over an `InProcessChannel`, as the embedded runtime will run them. Inputs are shared first (not
timed); each operation is then timed from start to finish at all parties. Reported per (op, n):

  s         wall seconds of the operation (all parties, dealer included)
  elem/s    n / s
  rounds    communication rounds among compute parties
  party MB  bytes between compute parties;  dealer MB: requests + corrections
  ok        the revealed result equals the plaintext numpy reference (exit 1 if not)

Ops: sum (local SUM of n shares), mul (beaver_mul of n pairs), compare (less_than of n pairs,
XOR-shared bits out), sort (n random 64-bit-range keys in [-2^62, 2^62), plus one payload column),
groupby (n rows, ~n/16 groups, SUM + COUNT + MAX).

The machine may be shared with other running work: numbers are indicative. Python threads share
one interpreter; numpy releases the GIL only inside array kernels.

Run:  python bench/spu.py [--sizes 10000,100000,1000000] [--parties 2] [--ops sum,mul,compare,sort,groupby]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

from sqlsecure.executors.spu import arith, compare, relational
from sqlsecure.executors.spu.local import run_spu
from sqlsecure.executors.spu.shares import as_ring, to_signed


def share(s, values, owner):
    return arith.share_input(s, owner, as_ring(values) if s.index == owner else None, values.shape)


def bench_op(op: str, n: int, nparties: int, rng) -> tuple[float, int, int, int, bool]:
    if op in ("sum", "mul", "compare"):
        x = rng.integers(-2**40, 2**40, n)
        y = rng.integers(-2**40, 2**40, n)
    elif op == "sort":
        x = rng.integers(-(2**62), 2**62, n)
        y = np.arange(n)
    else:
        x = rng.integers(0, max(1, n // 16), n)
        y = rng.integers(-10**6, 10**6, n)
    marks = {}

    def program(s):
        xs, ys = share(s, x, 0), share(s, y, nparties - 1)
        # barrier-like: a tiny opening so every party starts the timed part together
        arith.reveal(s, arith.zeros(s, (1,)))
        stats = s.endpoint.channel.stats
        if s.index == 0:
            marks["before"] = stats.snapshot()
        r0 = s.rounds
        t0 = time.perf_counter()
        if op == "sum":
            out = [arith.total(xs)]
        elif op == "mul":
            out = [arith.beaver_mul(s, xs, ys)]
        elif op == "compare":
            out = [compare.less_than(s, xs, ys, arith=False)]
        elif op == "sort":
            keys, payload = relational.sort(s, [xs], [ys])
            out = [*keys, *payload]
        else:
            g = relational.group_by(s, [xs], [("sum", ys), ("count", None), ("max", ys)])
            out = [g.last, *g.keys, *g.aggregates]
        seconds = time.perf_counter() - t0
        rounds = s.rounds - r0
        if s.index == 0:
            marks["after"] = stats.snapshot()
        if op == "compare":
            revealed = s.open_many(bits=[out[0].data])
        else:
            revealed = arith.reveal_many(s, out)
        return seconds, rounds, revealed

    run = run_spu(nparties, program)
    seconds = max(r[0] for r in run.results)
    rounds = run.results[0][1]
    got = run.results[0][2]
    used = marks["after"].since(marks["before"])
    party = sum(b for (a, c), b in used.bytes.items() if "dealer" not in (a, c))
    dealer = sum(b for (a, c), b in used.bytes.items() if "dealer" in (a, c))
    if op == "sum":
        ok = to_signed(got[0])[0] == x.sum()
    elif op == "mul":
        ok = bool((to_signed(got[0]) == x * y).all())
    elif op == "compare":
        ok = bool((got[0].astype(bool) == (x < y)).all())
    elif op == "sort":
        order = np.argsort(x, kind="stable")
        ok = bool((to_signed(got[0]) == x[order]).all() and (to_signed(got[1]) == y[order]).all())
    else:
        last, keys, sums, counts, maxes = (to_signed(c) for c in got)
        sel = last == 1
        uk, inv = np.unique(x, return_inverse=True)
        ref_sum = np.bincount(inv, weights=y, minlength=len(uk)).astype(np.int64)
        ref_cnt = np.bincount(inv, minlength=len(uk))
        ref_max = np.full(len(uk), np.iinfo(np.int64).min)
        np.maximum.at(ref_max, inv, y)
        ok = bool((keys[sel] == uk).all() and (sums[sel] == ref_sum).all() and (counts[sel] == ref_cnt).all()
                  and (maxes[sel] == ref_max).all())
    return seconds, rounds, party, dealer, ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--parties", type=int, default=2)
    parser.add_argument("--ops", default="sum,mul,compare,sort,groupby")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    sizes = [int(float(v)) for v in args.sizes.split(",")]
    ops = args.ops.split(",")
    rng = np.random.default_rng(args.seed)
    print(f"# SPU bench: {args.parties} parties + dealer as threads, {os.cpu_count()} cores, "
          f"{platform.python_implementation()} {platform.python_version()}, numpy {np.__version__}")
    print("# machine shared with other work: numbers are indicative")
    header = f"{'op':8} {'n':>9} {'s':>9} {'elem/s':>12} {'rounds':>7} {'party MB':>9} {'dealer MB':>9}  ok"
    print(header)
    print("-" * len(header))
    failed = False
    for op in ops:
        for n in sizes:
            seconds, rounds, party, dealer, ok = bench_op(op, n, args.parties, rng)
            failed |= not ok
            print(f"{op:8} {n:>9} {seconds:>9.3f} {n / seconds if seconds else float('inf'):>12.3g} "
                  f"{rounds:>7} {party / 1e6:>9.1f} {dealer / 1e6:>9.1f}  {'ok' if ok else 'WRONG'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
