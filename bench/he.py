"""Benchmark: Paillier operations (phe default vs sqlsecure HEU), he_group_sum, and the class-4 query
end to end through the engine on HE and on the SPU, side by side in one run.

Part "ops", operations per second, same 2048-bit key (--key-bits), side by side:
  per core   CPU-time rate of one thread (robust to other work on a shared machine), the best
             of 3 rounds with phe and ours interleaved in each
  workers    wall-clock rate through `HEWorkers` (--processes worker processes, all cores)
  encrypt    phe `PaillierPublicKey.encrypt` (r^n, full-length r)  vs  HEU `OwnerEncryptor` (the
             key owner's CRT path: h_s^a mod p^2 and q^2, a of ceil(k/2) bits, half-width
             fixed-base tables (`teichmuller`); what he_group_sum uses) and `Encryptor` (public key
             only, one table mod n^2)
  decrypt    phe `decrypt`  vs  HEU CRT decryption (and mod p^2 alone, for plaintexts below p)
  randomise  HEU `Randomizer` (h_s^a, a of |n| + 128 bits): what the label owner pays per returned sum
  add        phe `EncryptedNumber.__add__`  vs  HEU one multiplication mod n^2
  The fixed-base tables are built before timing; their build time is printed.
Part "protocol": `he_group_sum` alone, B (values, key owner) and A (labels) in two threads over an
  `InProcessChannel`, both with `HEWorkers` (as in the engine), pools warm; one int64 value column
  plus its validity column (as the engine sends), --groups random labels. R and merge: the packing
  plan (rows per ciphertext, merged returns); Munits: the cost model's estimate (`packing_cost`);
  us/unit: CPU seconds per unit -- the calibration of `packing.UNIT_SECONDS` on this machine.
Part "engine": the class-4 query
      SELECT a.label, SUM(b.value), COUNT(b.value), AVG(b.value) FROM a.t a JOIN b.t b
      ON a.id = b.id GROUP BY a.label
  (labels at party a, values at party b, a PSI join on id, issuer a) through `Engine` with
  `[federation] group_sums = "he"` and `= "spu"`, against DuckDB over both tables (exit 1 if any
  answer differs). Reported: total wall seconds, the class-4 step's seconds (the HE group-by, or
  the SPU stage) and the join's, from the runtime's progress callback; beside them the cost model's
  price of the step (`planner/cost.py` at the run's rows and groups): "model cpu" to compare with
  "cpu s" on a shared machine, "model s" the wall seconds it expects on an idle one.
Every timed run reports the process tree's peak RSS (main + worker processes, sampled every 50 ms)
and its CPU seconds (main + workers + reaped children).

The machine may be shared with other work: numbers are indicative; the load average is printed.

Run:  python bench/he.py [--parts ops,protocol,engine] [--sizes 100000,1000000] [--groups 1000]
                         [--key-bits 2048] [--ops 400] [--processes N] [--modes he,spu] [--seed S]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from phe import paillier

from sqlsecure.executors.runtime.channel import InProcessChannel
from sqlsecure.executors.heu import (
    Encryptor,
    HEParams,
    HEWorkers,
    OwnerEncryptor,
    Randomizer,
    SlotLayout,
    choose_packing,
    group_sum_reference,
    he_group_sum_labels,
    he_group_sum_values,
    keypair_from_phe,
    reveal_group_sums,
)
from sqlsecure.executors.heu.packing import packing_cost
from sqlsecure.executors.heu.paillier import add
from sqlsecure.executors.heu.workers import worker_pids

try:
    import psutil
except ImportError:
    psutil = None


# ---------------------------------------------------------------- measuring

def tree_rss() -> int:
    """Resident bytes of this process and its descendants (shared pages count once per process)."""
    if psutil is not None:
        procs = [psutil.Process()]
        procs += procs[0].children(recursive=True)
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total
    total = 0
    for pid in [os.getpid(), *worker_pids()]:
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024
        except (OSError, StopIteration, ValueError):
            pass
    return total


def tree_cpu() -> float:
    """CPU seconds of this process, its live descendants and its reaped children. The HE worker
    processes live across runs (they are reaped only at exit), so their CPU is read live: from psutil,
    or without it from /proc (it was missed then: the "cpu s" column showed the parent's alone)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime
    if psutil is not None:
        for p in psutil.Process().children(recursive=True):
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total
    return total + sum(proc_cpu(pid) for pid in worker_pids())


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process, from /proc/<pid>/stat (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14, 15


class Meter:
    """Wall seconds, CPU seconds and peak RSS of the process tree over a `with` block."""

    def __enter__(self):
        self.peak, self._stop = tree_rss(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self.cpu0, self.t0 = tree_cpu(), time.perf_counter()
        return self

    def _sample(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, tree_rss())

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        self.cpu = tree_cpu() - self.cpu0
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss())


def cpu_rate(fn, count: int) -> float:
    """count / CPU seconds of this thread running fn()."""
    start = time.thread_time()
    fn()
    return count / max(time.thread_time() - start, 1e-9)


def best_rates(fns: list, counts: list[int], rounds: int = 3) -> list[float]:
    """The best `cpu_rate` of each fn over `rounds` rounds, the fns interleaved in every round, so
    that all of them see the same states of a shared machine (its other work slows some rounds)."""
    best = [0.0] * len(fns)
    for _ in range(rounds):
        for i, (fn, count) in enumerate(zip(fns, counts)):
            best[i] = max(best[i], cpu_rate(fn, count))
    return best


def wall_rate(fn, count: int) -> float:
    start = time.perf_counter()
    fn()
    return count / (time.perf_counter() - start)


# ---------------------------------------------------------------- part 1: operations

def operations(key_bits: int, count: int, processes: int) -> None:
    phe_pk, phe_sk = paillier.generate_paillier_keypair(n_length=key_bits)
    pk, sk = keypair_from_phe(phe_pk, phe_sk)
    msgs = [int(m) for m in np.random.default_rng(0).integers(0, 2**62, count)]
    few = max(20, count // 10)
    owner = OwnerEncryptor(sk, uses=count * 100)  # the window of a large batch, as in he_group_sum
    start = time.perf_counter()
    owner.encrypt([0])
    owner_table_s = time.perf_counter() - start
    public = Encryptor(pk, uses=count * 100)
    start = time.perf_counter()
    public.encrypt([0] * 300)
    public_table_s = time.perf_counter() - start
    phe_enc, owner_enc, public_enc = best_rates(
        [lambda: [phe_pk.encrypt(m) for m in msgs[:few]], lambda: owner.encrypt(msgs), lambda: public.encrypt(msgs)],
        [few, count, count])

    workers = HEWorkers(processes)
    big = max(4 * count * processes, 4096)
    list(workers.encrypt_stream(sk, iter([[0] * big]), big))  # start workers, build their tables
    pool_enc = wall_rate(lambda: list(workers.encrypt_stream(sk, iter([list(range(big))]), big)), big)

    phe_cts = [phe_pk.encrypt(m) for m in msgs[:40]]
    heu_cts = owner.encrypt(msgs)
    phe_dec, heu_dec, heu_dec_half = best_rates(
        [lambda: [phe_sk.decrypt(c) for c in phe_cts], lambda: sk.decrypt(heu_cts), lambda: sk.decrypt(heu_cts, 64)],
        [len(phe_cts), count, count])
    many = heu_cts * max(1, 2000 // count)
    workers.decrypt(sk, many[:64])
    pool_dec = wall_rate(lambda: workers.decrypt(sk, many), len(many))

    randomizer = Randomizer(pk, uses=count * 10)
    start = time.perf_counter()
    randomizer.factors(1)
    rand_table_s = time.perf_counter() - start
    heu_rand = cpu_rate(lambda: randomizer.factors(count), count)
    workers.factors_later(pk, 8 * count).result()  # warm the workers' table
    pool_rand = wall_rate(lambda: workers.factors_later(pk, 8 * count).result(), 8 * count)

    a, b = phe_cts[0], phe_cts[1]
    ca, cb = heu_cts[0], heu_cts[1]
    n_add = 20 * count
    phe_add, heu_add = best_rates([lambda: [a + b for _ in range(n_add)],
                                   lambda: [add(pk, ca, cb) for _ in range(n_add)]], [n_add, n_add])

    rows = [
        ("encrypt (key owner, CRT)", phe_enc, owner_enc, pool_enc,
         f"window {owner.window_bits} bits, tables {owner_table_s:.2f} s"),
        ("encrypt (public key)", phe_enc, public_enc, None, f"tables {public_table_s:.2f} s"),
        ("decrypt (CRT)", phe_dec, heu_dec, pool_dec, "both primes, as phe"),
        ("decrypt (< p, mod p^2 only)", phe_dec, heu_dec_half, None, "packed sums that fit below p"),
        ("randomiser h_s^a", None, heu_rand, pool_rand, f"|n|+128-bit a; table {rand_table_s:.2f} s"),
        ("add", phe_add, heu_add, None, "one multiplication mod n^2 in both"),
    ]
    print(f"\nPaillier {key_bits}-bit, operations per second (per core: CPU time of one thread; "
          f"workers: wall time, {processes} processes)")
    print(f"{'op':<30}{'phe/core':>10}{'ours/core':>11}{'ratio':>8}{'ours x' + str(processes):>11}  note")
    for name, base, ours, pool, note in rows:
        ratio = f"{ours / base:7.1f}x" if base else f"{'':>8}"
        base_s = f"{base:>10,.0f}" if base else f"{'-':>10}"
        pool_s = f"{pool:>11,.0f}" if pool else f"{'-':>11}"
        print(f"{name:<30}{base_s}{ours:>11,.0f}{ratio}{pool_s}  {note}")
    print(f"(encryption target >= 30x phe per core: {owner_enc / phe_enc:.1f}x "
          f"{'met' if owner_enc >= 30 * phe_enc else 'NOT met'} in this run)")


# ---------------------------------------------------------------- part 2: he_group_sum alone

def group_sum(key_bits: int, rows: int, groups: int, processes: int, seed: int) -> bool:
    rng = np.random.default_rng(seed)
    values = [rng.integers(-(10**12), 10**12, rows), np.ones(rows, dtype=np.int64)]
    codes = rng.integers(0, groups, rows)
    params = HEParams(key_bits=key_bits)
    layout = SlotLayout(params.value_bits, rows, params.mask_bits)
    plan = choose_packing(rows, groups, 2, layout.slots(key_bits), layout.slot_bits, key_bits, processes)
    units = packing_cost(plan, rows, groups, layout.slot_bits, key_bits, processes)
    channel = InProcessChannel(["a", "b"], timeout=3600)
    workers = HEWorkers(processes)
    _, warm_sk = keypair_from_phe(*paillier.generate_paillier_keypair(n_length=key_bits))
    list(workers.encrypt_stream(warm_sk, iter([[0] * 4096]), 4096))  # workers started, as in a long-lived runtime

    def party(peer, fn):
        return lambda ep: reveal_group_sums(ep, peer, "g", fn(ep), "a")

    with Meter() as m:
        out = channel.run({
            "a": party("b", lambda ep: he_group_sum_labels(ep, "b", "g", codes, groups, params, workers)),
            "b": party("a", lambda ep: he_group_sum_values(ep, "a", "g", values, params, workers))})
    ok = out["a"].sums == group_sum_reference(codes, groups, values).sums
    st = channel.stats
    print(f"{rows:>10,} {groups:>7,} {plan.rows_per_ciphertext:>4} {'yes' if plan.merge else 'no':>5} "
          f"{m.wall:>8.1f} {m.cpu:>8.1f} {m.peak / 2**20:>8.0f} {st.bytes[('b', 'a')] / 1e6:>9.1f} "
          f"{st.bytes[('a', 'b')] / 1e6:>9.2f} {units / 1e6:>8.2f} {m.cpu / units * 1e6:>8.1f} "
          f"{'yes' if ok else 'NO':>4}", flush=True)
    return ok


# ---------------------------------------------------------------- part 3: the engine, HE vs SPU

QUERY = ("SELECT a.label, SUM(b.value) AS s, COUNT(b.value) AS c, AVG(b.value) AS m "
         "FROM a.t a JOIN b.t b ON a.id = b.id GROUP BY a.label")
GRANTS = """
[[grants]]
party = "a"
columns = ["b.t.id"]
constraint = "PLAINTEXT_AFTER_JOIN"

[[grants]]
party = "a"
columns = ["b.t.value"]
constraint = "PLAINTEXT_AFTER_AGGREGATE"

[[grants]]
party = "b"
columns = ["a.t.id"]
constraint = "PLAINTEXT_AFTER_JOIN"
"""


def write_tables(directory: Path, rows: int, groups: int, seed: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    ids = rng.permutation(rows).astype(np.int64)
    (directory / "a").mkdir(parents=True, exist_ok=True)
    (directory / "b").mkdir(parents=True, exist_ok=True)
    labels = np.char.add("g", rng.integers(0, groups, rows).astype(str))
    pq.write_table(pa.table({"id": ids, "label": labels}), directory / "a" / "t.parquet")
    pq.write_table(pa.table({"id": rng.permutation(ids), "value": rng.integers(-10**6, 10**6, rows)}),
                   directory / "b" / "t.parquet")


def federation(directory: Path, group_sums: str) -> Path:
    path = directory / f"federation-{group_sums}.toml"
    path.write_text("\n".join([
        "[federation]", 'name = "bench"', "min_group_size = 4", f'group_sums = "{group_sums}"', "",
        "[parties.a]", "[parties.a.tables]", 't = "a/t.parquet"', "",
        "[parties.b]", "[parties.b.tables]", 't = "b/t.parquet"', "", GRANTS]), encoding="utf-8")
    return path


def expected(directory: Path):
    import duckdb

    con = duckdb.connect()
    return con.sql(QUERY.replace("a.t a", f"'{directory}/a/t.parquet' a").replace(
        "b.t b", f"'{directory}/b/t.parquet' b") + " HAVING COUNT(*) >= 4").to_arrow_table()


def same(got, want) -> bool:
    """Sums and counts exact; averages within the oracle tests' tolerance (the SPU's fixed point
    has 16 fractional bits)."""
    key = lambda r: r["label"]  # noqa: E731
    g = sorted(got.to_pylist(), key=key)
    w = sorted(want.to_pylist(), key=key)
    return len(g) == len(w) and all(
        a["label"] == b["label"] and int(a["s"]) == int(b["s"]) and int(a["c"]) == int(b["c"])
        and math.isclose(float(a["m"]), float(b["m"]), rel_tol=1e-5, abs_tol=1e-3) for a, b in zip(g, w))


def predicted(group_sums: str, rows: int, groups: int) -> tuple[float, float]:
    """(wall s on an idle machine, CPU s) `planner/cost.py` prices the class-4 step at for this run: its
    rows (every id joins) and groups (a bound: at most √rows are priced), 3 aggregates of 1 value column,
    the text key sorted on the owner's code with its validity and 4 limbs carried, in process. The SPU's
    parties are threads (wall = CPU)."""
    from sqlsecure.planner.cost import Link, estimate

    model = estimate(rows, 3, 1, Link(), arguments=1, carried=5, groups=groups)
    if group_sums == "he":
        return model.he_seconds, model.he_cpu_seconds
    return model.spu_seconds, model.spu_seconds


def engine_run(directory: Path, group_sums: str, rows: int, groups: int, want) -> bool:
    from sqlsecure.engine import Engine

    with Engine(federation(directory, group_sums), timeout=3600) as engine:
        plan_text = engine.explain(QUERY, "a")
        starts: dict[int, tuple[float, str]] = {}
        lock = threading.Lock()

        def progress(step, steps, label):
            with lock:
                starts.setdefault(step, (time.perf_counter(), str(label)))

        engine.runtime.progress = progress
        with Meter() as m:
            got = engine.execute(QUERY, "a").table
        end = time.perf_counter()
    marks = sorted(starts.items())
    spans = {}
    for i, (step, (t, label)) in enumerate(marks):
        spans[label] = spans.get(label, 0.0) + ((marks[i + 1][1][0] if i + 1 < len(marks) else end) - t)
    join_s = sum(s for label, s in spans.items() if "PSI" in label or "join" in label.lower())
    step_s = sum(s for label, s in spans.items() if ("HEU" in label if group_sums == "he" else "SPU" in label))
    ok = same(got, want)
    device = "HEU" if "HEU(" in plan_text else ("SPU" if "SPU(" in plan_text else "?")
    model_wall, model_cpu = predicted(group_sums, rows, groups)
    print(f"{rows:>10,} {groups:>7,} {group_sums:>4} {device:>6} {m.wall:>8.1f} {step_s:>8.1f} {join_s:>8.1f} "
          f"{m.cpu:>8.1f} {model_cpu:>8.1f} {model_wall:>8.1f} {m.peak / 2**20:>8.0f} {'yes' if ok else 'NO':>4}",
          flush=True)
    if device == "?" or not ok:
        print(plan_text)
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Parts: ops (operations per second), protocol (he_group_sum alone), "
                                        "engine (the class-4 query on HE and on the SPU).")
    ap.add_argument("--parts", default="ops,protocol,engine", help="comma-separated: ops,protocol,engine")
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated row counts (protocol, engine)")
    ap.add_argument("--groups", type=int, default=1000)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--ops", type=int, default=400, help="operations per timed op (part ops)")
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="HE worker processes")
    ap.add_argument("--modes", default="he,spu", help="comma-separated class-4 paths of part engine: he,spu")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    sizes = [int(float(s)) for s in args.sizes.split(",") if s]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f} at start -- a shared machine gives indicative numbers", flush=True)
    ok = True
    if "ops" in parts:
        operations(args.key_bits, args.ops, args.processes)
    if "protocol" in parts:
        print(f"\nhe_group_sum alone, {args.key_bits}-bit key, 1 value column + validity, "
              f"{args.processes} worker processes shared by both parties")
        print(f"{'rows':>10} {'groups':>7} {'R':>4} {'merge':>5} {'wall s':>8} {'cpu s':>8} {'peak MB':>8} "
              f"{'B->A MB':>9} {'A->B MB':>9} {'Munits':>8} {'us/unit':>8} {'ok':>4}")
        for rows in sizes:
            ok &= group_sum(args.key_bits, rows, args.groups, args.processes, args.seed)
    if "engine" in parts:
        print(f"\nclass-4 query through the engine (issuer a), group_sums = he | spu; "
              f"load average {os.getloadavg()[0]:.2f}\n  {QUERY}")
        print(f"{'rows':>10} {'groups':>7} {'mode':>4} {'device':>6} {'wall s':>8} {'step s':>8} {'join s':>8} "
              f"{'cpu s':>8} {'model cpu':>8} {'model s':>8} {'peak MB':>8} {'ok':>4}")
        for rows in sizes:
            with tempfile.TemporaryDirectory(prefix="sqlsecure-bench-he-") as tmp:
                directory = Path(tmp)
                write_tables(directory, rows, args.groups, args.seed)
                want = expected(directory)
                for mode in args.modes.split(","):
                    ok &= engine_run(directory, mode, rows, args.groups, want)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
