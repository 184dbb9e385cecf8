"""Micro benchmark: the SPU's building blocks, to measure local-computation work before and after a change.

Two groups of rows, each printed with wall and process CPU seconds (CPU seconds are the number to
compare on a shared machine: other processes do not add to them) and elements per CPU second:

  protocol rows   mul (Beaver products), compare (less-than, XOR-shared bits out), sort (n rows,
                  one payload column) and groupby (GROUP BY a 64-bit key with SUM, COUNT, MAX)
                  through `bench/spu.py`'s `bench_op`: the parties and the dealer as threads of
                  this process, the result checked against numpy; with their rounds and the MB
                  sent between the parties and by the dealer (exact: the channel counts them).
  local rows      work that involves no other party, timed alone in this thread (best of --repeat):
                    prg      `Prg.words`: uint64 words of AES-128-CTR keystream
                    dealer   `Dealer.produce` of one boolean triple request of n words (every
                             party's seeded words derived, the correction computed)

The machine may be shared: run it twice (before and after a change) in the same conditions and
compare the CPU columns. bench/spu.py has the wider table (group-by, aggregates, the SPU peer).

Run:  python bench/spu_ops.py [--sizes 10000,100000,1000000] [--parties 2,3]
                             [--ops mul,compare,sort,groupby,prg,dealer]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

from spu import bench_op  # bench/spu.py

from sqlsecure.executors.spu.dealer import Dealer, RandomnessRequest
from sqlsecure.executors.spu.prg import Prg, fresh_seed

PROTOCOL_OPS = ("mul", "compare", "sort", "groupby")
LOCAL_OPS = ("prg", "dealer")


def timed(work) -> tuple[float, float]:
    """(wall s, process CPU s) of one call of `work`."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def local_op(op: str, n: int, nparties: int, repeat: int) -> tuple[float, float]:
    """The best of `repeat` timings of one local building block on n elements."""
    if op == "prg":
        prg = Prg(fresh_seed())
        work = lambda rid: prg.words(rid, n)  # noqa: E731
    else:
        dealer = Dealer(None, [f"p{i}" for i in range(nparties)])
        dealer.prgs = [Prg(fresh_seed()) for _ in range(nparties)]
        work = lambda rid: dealer.produce(RandomnessRequest(rid, "bool_triple", (n,)))  # noqa: E731
    runs = [timed(lambda: work(rid)) for rid in range(repeat)]
    return min(w for w, _ in runs), min(c for _, c in runs)


def row(op: str, parties: int, n: int, wall: float, cpu: float, check: str, rounds="-", party="-", dealer="-") -> str:
    rate = n / cpu if cpu > 0 else float("inf")
    mb = [f"{v / 1e6:.2f}" if isinstance(v, int) else v for v in (party, dealer)]
    return (f"{op:8} {parties:>7} {n:>9} {wall:>9.3f} {cpu:>8.3f} {rate:>12.3g} {rounds:>6} {mb[0]:>8} {mb[1]:>9}"
            f"  {check}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--parties", default="2,3")
    parser.add_argument("--ops", default=",".join(PROTOCOL_OPS + LOCAL_OPS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5, help="local rows: the best of this many runs")
    args = parser.parse_args(argv)
    sizes = [int(float(v)) for v in args.sizes.split(",")]
    party_counts = [int(v) for v in args.parties.split(",")]
    ops = args.ops.split(",")
    unknown = [op for op in ops if op not in PROTOCOL_OPS + LOCAL_OPS]
    if unknown:
        parser.error(f"unknown ops {unknown}; known: {', '.join(PROTOCOL_OPS + LOCAL_OPS)}")
    rng = np.random.default_rng(args.seed)
    print(f"# SPU building blocks; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"{platform.python_implementation()} {platform.python_version()}, numpy {np.__version__}")
    header = (f"{'op':8} {'parties':>7} {'n':>9} {'wall s':>9} {'cpu s':>8} {'elem/cpu s':>12} {'rounds':>6}"
              f" {'party MB':>8} {'dealer MB':>9}  check")
    print(header)
    print("-" * len(header))
    failed = False
    for op in ops:
        for parties in ([1] if op == "prg" else party_counts):
            for n in sizes:
                if op in LOCAL_OPS:
                    print(row(op, parties, n, *local_op(op, n, parties, args.repeat), "-"), flush=True)
                    continue
                wall, cpu, rounds, party, dealer, ok = bench_op(op, n, parties, rng)
                failed |= not ok
                print(row(op, parties, n, wall, cpu, "ok" if ok else "WRONG", rounds, party, dealer), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
