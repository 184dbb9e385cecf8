"""Benchmark: the TEEU enclave (simulation backend) against plain DuckDB on the same data.

Two parties hold aligned columns of n rows: `a` holds k1 (1,000 distinct values), `b` holds k2 (50
distinct values), v (int64) and w (float64). Ops:

  groupby  GROUP BY k1, k2: COUNT(*), SUM(v), AVG(w), MAX(v)   (~50,000 groups for n >= 10^6)
  sort     ORDER BY k1, v DESC, all four columns out (a full sort, no LIMIT)

Reported per (op, n):

  enclave s     the oblivious program alone, in this process (what the enclave computes)
  end-to-end s  through the enclave subprocess: both parties seal (X25519 + AES-GCM per 64k-row Arrow
                batch), frames to the enclave, open, evaluate, seal the result, frames back, the
                recipient opens it (attestation and process start not included)
  spu s         the same work on the SPU (secret shares between the two parties and a dealer, as
                threads): the oblivious group-by / sort of `sqlsecure.executors.spu.relational`
                (run for n <= --spu-max only: it is much slower)
  duckdb s      plain DuckDB over the same Arrow data, no security at all
  ok            the enclave's result equals DuckDB's (AVG within 1e-9 relative); exit 1 if not

The machine may be shared with other running work: numbers are indicative.

Run:  python bench/enclave.py [--sizes 100000,1000000] [--ops groupby,sort]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import duckdb
import numpy as np
import pyarrow as pa

from sqlsecure.executors.tee import (
    EnclaveHost, EnclaveProgram, ResultKey, SessionSpec, SimulationAuthority, evaluate, expected_measurement,
    fresh_nonce, open_result, seal_inputs, verify_quote,
)

PROGRAMS = {
    "groupby": (EnclaveProgram(group_keys=["k1", "k2"], aggregates=[("count", None, "n"), ("sum", "v", "s"),
                                                                     ("avg", "w", "a"), ("max", "v", "m")]),
                "SELECT k1, k2, COUNT(*) AS n, SUM(v) AS s, AVG(w) AS a, MAX(v) AS m FROM t GROUP BY k1, k2 "
                "ORDER BY k1, k2"),
    "sort": (EnclaveProgram(order=[("k1", False), ("v", True)]),
             "SELECT k1, k2, v, w FROM t ORDER BY k1, v DESC"),
}


def data(n: int, rng) -> tuple[pa.Table, pa.Table]:
    a = pa.table({"k1": rng.integers(0, 1000, n)})
    b = pa.table({"k2": rng.integers(0, 50, n), "v": rng.integers(-10**6, 10**6, n), "w": rng.normal(0, 1, n)})
    return a, b


def same(got: pa.Table, expected: pa.Table, op: str) -> bool:
    if got.num_rows != expected.num_rows:
        return False
    for name in expected.column_names:
        x = got.column(name).to_numpy()
        y = expected.column(name).to_numpy()
        if op == "sort" and name in ("k2", "w"):  # rows tied on (k1, v) may come in any order
            x, y = np.sort(x), np.sort(y)
        if x.dtype.kind == "f":
            if not np.allclose(x, y, rtol=1e-9, atol=1e-9):
                return False
        elif not np.array_equal(x, y):
            return False
    return True


def spu_seconds(op: str, a: pa.Table, b: pa.Table) -> float:
    """The SPU path on the same data: a shares k1, b shares k2, v and w (fixed point)."""
    from sqlsecure.executors.spu import arith, relational
    from sqlsecure.executors.spu.local import run_spu

    n = a.num_rows

    def program(s):
        k1 = arith.share_input(s, 0, a["k1"].to_numpy().astype(np.uint64) if s.index == 0 else None, (n,))
        k2 = arith.share_input(s, 1, b["k2"].to_numpy().astype(np.uint64) if s.index == 1 else None, (n,))
        v = arith.share_input(s, 1, b["v"].to_numpy().astype(np.int64).view(np.uint64) if s.index == 1 else None, (n,))
        w = arith.share_fixed(s, 1, b["w"].to_numpy() if s.index == 1 else None, (n,))
        if op == "groupby":
            g = relational.group_by(s, [k1, k2], [("count", None), ("sum", v), ("sum", w), ("max", v)])
            return relational.compact(s, g.last, [*g.keys, *g.aggregates])
        return relational.sort(s, [k1, v], [k2, w], [False, True])

    started = time.perf_counter()
    run_spu(2, program)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--ops", default="groupby,sort")
    parser.add_argument("--spu-max", type=int, default=100000, help="largest n to run on the SPU (0: never)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    ops = args.ops.split(",")
    rng = np.random.default_rng(2026)
    authority = SimulationAuthority.generate()
    measurement = expected_measurement()  # pinned once, as a verifier would
    print(f"# python {platform.python_version()}, numpy {np.__version__}, duckdb {duckdb.__version__}, "
          f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}; enclave: SIMULATION backend")
    print(f"{'op':8} {'n':>9} {'enclave s':>10} {'end-to-end s':>13} {'spu s':>8} {'duckdb s':>9} {'x duckdb':>9} "
          f"{'rows out':>9}  ok")
    failed = False
    with EnclaveHost(authority, {measurement}, timeout=3600) as host:
        for n in sizes:
            a, b = data(n, rng)
            joined = pa.table({**{c: a[c] for c in a.column_names}, **{c: b[c] for c in b.column_names}})
            con = duckdb.connect()
            con.register("t", joined)
            for op in ops:
                program, sql = PROGRAMS[op]
                t0 = time.perf_counter()
                evaluate(program, {c: joined[c].to_numpy() for c in joined.column_names})
                inside = time.perf_counter() - t0

                t0 = time.perf_counter()
                nonce = fresh_nonce()
                enclave = verify_quote(host.quote(nonce), authority.public_key, {measurement}, nonce)
                key = ResultKey.generate()
                spec = SessionSpec(f"bench-{op}-{n}", program, ("a", "b"), "a", key.public_bytes)
                sealed = host.run(spec, {"a": seal_inputs(enclave, spec, "a", a), "b": seal_inputs(enclave, spec, "b", b)})
                result = open_result(enclave, spec, key, sealed)
                end_to_end = time.perf_counter() - t0

                t0 = time.perf_counter()
                expected = con.sql(sql).to_arrow_table()
                plain = time.perf_counter() - t0
                got = result.table
                if op == "groupby":  # the enclave orders groups by their keys too
                    got = got.select(expected.column_names)
                ok = same(got, expected, op)
                failed |= not ok
                spu = f"{spu_seconds(op, a, b):8.2f}" if n <= args.spu_max else f"{'-':>8}"
                print(f"{op:8} {n:>9} {inside:>10.2f} {end_to_end:>13.2f} {spu} {plain:>9.3f} "
                      f"{end_to_end / max(plain, 1e-9):>9.0f} {got.num_rows:>9}  {'ok' if ok else 'MISMATCH'}",
                      flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
