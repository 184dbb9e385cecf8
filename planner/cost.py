"""Cost model for class 4 — GROUP BY keys at one party, SUM/AVG/COUNT of another's values — on HE or the SPU.

The two paths cost differently. HE (`he_group_sum`) is compute-bound: the value owner encrypts
ciphertexts that each carry several rows (`executors/heu/packing.py` chooses how many), the key
owner multiplies them into per-group accumulators, and the value owner decrypts one masked sum per
group and row slot; three rounds and 512 B per ciphertext (2048-bit keys). The SPU sorts the rows
by key on secret shares: cheaper per row at small sizes but several hundred rounds, kilobytes per
row between the parties, and a per-row cost that grows with the size (memory traffic). So the SPU
wins on a fast link up to a few 10^5 rows, HE on large inputs or a slow link.

`estimate` prices both from the rows entering the aggregate (upper bound: the larger of the two
parties' input tables, whose row counts the parties publish rounded up to a power of two), the
groups (no statistic on distinct values is shared, so the model assumes √rows), the value columns,
the key's limbs (text keys are compared as 4 limbs on the SPU) and the link. HE's compute comes
from `he_group_sum_seconds` (calibrated by `bench/he.py`); the SPU's from the engine's class-4
query in the same bench. They set the crossover on the reference machine, not a promise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlsecure.executors.heu.packing import he_group_sum_seconds

HE_ROUNDS = 3
HE_FIXED = 1.0  # s: a fresh Paillier key pair, fixed-base tables, worker start (measured at ~150 rows)

# SPU group-by through the engine (PSI-aligned rows shared, sorted, segmented sums) — bench/he.py:
# CPU ≈ 9.9 s at 10^5 rows and 181 s at 10^6 for a key and two value columns; its parties are threads
# that share the interpreter, so wall ≈ CPU.
SPU_FIXED = 0.5  # s: setup, shapes, the dealer's seeds, the result's opening (measured at ~150 rows)
SPU_ROW = 3.3e-5  # s per row and per key limb or value column, at 10^5 rows
SPU_GROWTH = 0.26  # per-row cost ∝ (rows / 10^5) ** SPU_GROWTH above 10^5 rows
SPU_ROUNDS_BASE, SPU_ROUNDS_PER_DOUBLING = 250, 40  # rounds ≈ base + per_doubling · log2(rows)
SPU_BYTES_ROW = 2500  # bytes between the parties per row and per key limb or value column


@dataclass(frozen=True)
class Link:
    """The link between the parties as the planner assumes it: round-trip seconds and bytes/second."""

    rtt: float = 0.0
    bandwidth: float = math.inf

    def describe(self) -> str:
        if self.rtt == 0 and math.isinf(self.bandwidth):
            return "in-process link"
        return f"link {self.rtt * 1000:g} ms round trip, {self.bandwidth * 8 / 1e6:g} Mbit/s"


@dataclass(frozen=True)
class Estimate:
    engine: str  # "he" or "spu"
    he_seconds: float
    spu_seconds: float
    why: str


def estimate(rows: int, columns: int, key_limbs: int, link: Link, cores: int = 2,
             key_bits: int = 2048) -> Estimate:
    """Price both paths for `rows` rows and `columns` aggregated value columns; pick the cheaper."""
    rows = max(int(rows), 1)
    groups = max(1, math.isqrt(rows))
    # the engine sends a validity column beside each value column
    _, he_compute, plan = he_group_sum_seconds(rows, groups, 2 * columns, key_bits, cores)
    ciphertexts = math.ceil(rows / plan.rows_per_ciphertext)
    he = HE_FIXED + he_compute + HE_ROUNDS * link.rtt + ciphertexts * (2 * key_bits // 8) / link.bandwidth
    width = key_limbs + columns
    per_row = SPU_ROW * max(1.0, rows / 1e5) ** SPU_GROWTH
    spu = (SPU_FIXED + rows * width * per_row
           + (SPU_ROUNDS_BASE + SPU_ROUNDS_PER_DOUBLING * math.log2(rows)) * link.rtt
           + rows * width * SPU_BYTES_ROW / link.bandwidth)
    engine = "he" if he < spu else "spu"
    why = (f"cost model: ~{rows:,} rows, ~{groups:,} groups (assumed √rows), {columns} value column(s), "
           f"{key_limbs} key limb(s), {link.describe()}: HE ≈ {he:.3g} s "
           f"({plan.rows_per_ciphertext} row(s) per ciphertext), SPU ≈ {spu:.3g} s")
    return Estimate(engine, he, spu, why)
