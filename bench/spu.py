"""Benchmark: SPU protocols (additive sharing over Z_2^64 with a trusted dealer), parties as threads.

For each size n, the compute parties (p0, p1[, p2]) and the dealer run in threads of one process
over an `InProcessChannel`, as the embedded runtime will run them. Inputs are shared first (not
timed); each operation is then timed from start to finish at all parties. Reported per (op, n):

  s         wall seconds of the operation (all parties, dealer included)
  elem/s    n / s
  rounds    communication rounds among compute parties
  party MB  bytes between compute parties;  dealer MB: requests + corrections
  ok        the revealed result equals the plaintext numpy reference (exit 1 if not)

  cpu s     process CPU seconds during the operation (all threads: parties and dealer) — less
            sensitive than wall time to other work on a shared machine

Ops: sum (local SUM of n shares), mul (beaver_mul of n pairs), compare (less_than of n pairs,
XOR-shared bits out), sort (n random 64-bit-range keys in [-2^62, 2^62), plus one payload column),
groupby (n rows, ~n/16 groups, SUM + COUNT + MAX), agg_sum / agg_max (SUM / MAX of one secret
column of values in [-1000, 1000): `arith.total`, `compare.max_all`).

Peer: with agg_sum / agg_max among the ops, the same aggregate runs on SecretFlow's SPU (SEMI2K,
FM64, 2 parties as threads) through `bench/peers/spu_peer.py`, in SPU's own virtualenv (it pins
numpy 1.26): `--peer-python` (default $SQLSECURE_SPU_PEER_PYTHON or /work/spu-venv/bin/python).
If that interpreter is missing the peer is skipped with a message; a side-by-side table with the
ratio (peer seconds / our seconds, > 1: we are faster) closes the run.

The machine may be shared with other running work: numbers are indicative. Python threads share
one interpreter; numpy releases the GIL only inside array kernels.

Run:  python bench/spu.py [--sizes 10000,100000,1000000] [--parties 2]
                          [--ops sum,mul,compare,sort,groupby,agg_sum,agg_max] [--peer-python PATH]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

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
    elif op in ("agg_sum", "agg_max"):
        x = rng.integers(-1000, 1000, n)
        y = np.zeros(n, np.int64)
    elif op == "sort":
        x = rng.integers(-(2**62), 2**62, n)
        y = np.arange(n)
    else:
        x = rng.integers(0, max(1, n // 16), n)
        y = rng.integers(-10**6, 10**6, n)
    marks = {}

    def mark(name):  # runs once, when every party has reached the barrier: exact counts
        def action():
            marks[name] = marks["channel"].stats.snapshot()
            marks[name + "_cpu"] = time.process_time()
        return action

    start = threading.Barrier(nparties, action=mark("before"))
    done = threading.Barrier(nparties, action=mark("after"))

    def program(s):
        marks["channel"] = s.endpoint.channel
        xs, ys = share(s, x, 0), share(s, y, nparties - 1)
        start.wait()  # every party starts the timed part together
        r0 = s.rounds
        t0 = time.perf_counter()
        if op in ("sum", "agg_sum"):
            out = [arith.total(xs)]
        elif op == "agg_max":
            out = [compare.max_all(s, xs)]
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
        done.wait()  # everyone is done (dealer corrections included: the last party waited for them)
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
    if op in ("sum", "agg_sum"):
        ok = to_signed(got[0])[0] == x.sum()
    elif op == "agg_max":
        ok = to_signed(got[0])[0] == x.max()
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
    return seconds, marks["after_cpu"] - marks["before_cpu"], rounds, party, dealer, ok


PEER_SCRIPT = Path(__file__).resolve().parent / "peers" / "spu_peer.py"
DEFAULT_PEER_PYTHON = os.environ.get("SQLSECURE_SPU_PEER_PYTHON", "/work/spu-venv/bin/python")


def run_peer(python: str, ops: list[str], sizes: list[int], seed: int) -> dict[tuple[str, int], tuple[float, bool]]:
    """SecretFlow SPU on the same aggregates, in its own interpreter; {(op, n): (seconds, ok)}."""
    if not Path(python).exists():
        print(f"# peer skipped: no SPU interpreter at {python} (create it: python3.11 -m venv /work/spu-venv && "
              f"/work/spu-venv/bin/pip install spu; or pass --peer-python)")
        return {}
    cmd = [python, str(PEER_SCRIPT), "--ops", ",".join(ops), "--sizes", ",".join(map(str, sizes)),
           "--seed", str(seed)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("#"):
            print(line)
        parts = line.split()
        if len(parts) == 5 and parts[0] == "peer":
            results[(parts[1], int(parts[2]))] = (float(parts[3]), parts[4] == "ok")
    if proc.returncode != 0 or not results:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        print(f"# peer failed (exit {proc.returncode}): {tail}")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--parties", type=int, default=2)
    parser.add_argument("--ops", default="sum,mul,compare,sort,groupby")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--peer-python", default=DEFAULT_PEER_PYTHON,
                        help="python of SecretFlow SPU's virtualenv (agg_* ops run on it too)")
    args = parser.parse_args(argv)
    sizes = [int(float(v)) for v in args.sizes.split(",")]
    ops = args.ops.split(",")
    rng = np.random.default_rng(args.seed)
    print(f"# SPU bench: {args.parties} parties + dealer as threads, {os.cpu_count()} cores, "
          f"{platform.python_implementation()} {platform.python_version()}, numpy {np.__version__}")
    print("# machine shared with other work: numbers are indicative")
    header = (f"{'op':8} {'n':>9} {'s':>9} {'cpu s':>8} {'elem/s':>12} {'rounds':>7} {'party MB':>9} "
              f"{'dealer MB':>9}  ok")
    print(header)
    print("-" * len(header))
    failed = False
    ours = {}
    for op in ops:
        for n in sizes:
            seconds, cpu, rounds, party, dealer, ok = bench_op(op, n, args.parties, rng)
            ours[(op, n)] = seconds
            failed |= not ok
            print(f"{op:8} {n:>9} {seconds:>9.3f} {cpu:>8.2f} {n / seconds if seconds else float('inf'):>12.3g} "
                  f"{rounds:>7} {party / 1e6:>9.1f} {dealer / 1e6:>9.1f}  {'ok' if ok else 'WRONG'}", flush=True)
    peer_ops = [op for op in ops if op in ("agg_sum", "agg_max")]
    if peer_ops:
        if args.parties != 2:
            print("# peer skipped: the SPU peer runs 2 parties (SEMI2K)")
            return 1 if failed else 0
        print()
        peer = run_peer(args.peer_python, [op[4:] for op in peer_ops], sizes, args.seed)
        if peer:
            print(f"{'aggregate':10} {'n':>9} {'sqlsecure s':>12} {'SPU s':>10} {'SPU/ours':>9}")
            for op in peer_ops:
                for n in sizes:
                    theirs = peer.get((op[4:], n))
                    if theirs is None:
                        print(f"{op[4:].upper():10} {n:>9} {ours[(op, n)]:>12.4f} {'-':>10} {'-':>9}")
                        continue
                    failed |= not theirs[1]
                    print(f"{op[4:].upper():10} {n:>9} {ours[(op, n)]:>12.4f} {theirs[0]:>10.4f} "
                          f"{theirs[0] / ours[(op, n)]:>9.2f}{'' if theirs[1] else '  (peer WRONG)'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
