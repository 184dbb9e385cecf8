"""Cost model for class 4 — GROUP BY keys at one party, SUM/AVG/COUNT of another's values — on HE or the SPU.

The two paths cost differently. HE (`he_group_sum`) is compute-bound: the value owner encrypts one
Paillier ciphertext per row (several value columns share one by packing), the key owner multiplies
ciphertexts into their groups, and the value owner decrypts one masked sum per group; it needs two
rounds and moves 2·|n| bits per row. The SPU sorts the rows by key on secret shares: little compute
per row but several hundred rounds and a few kilobytes per row between the parties. So the SPU wins
on a fast link, HE on a slow one (high round-trip time, low bandwidth).

`estimate` prices both from the rows entering the aggregate (upper bound: the larger of the two
parties' input tables, whose row counts the parties publish rounded up to a power of two), the
groups (no statistic on distinct values is shared, so the model assumes √rows), the value columns,
the key's limbs (text keys are compared as 4 limbs on the SPU) and the link. The constants were
measured on the 2-core reference machine (docs/benchmarks.md); they set the crossover, not a promise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# HE (Paillier, 2048-bit n; per core unless stated) — bench/he.py
HE_ENCRYPT = 1 / 1500  # s per ciphertext (DJN randomness, fixed-base tables)
HE_ADD = 1.2e-5  # s per ciphertext folded into a group sum at the key owner (one mulmod mod n^2)
HE_DECRYPT = 1 / 400  # s per masked group sum decrypted
HE_SLOTS = 16  # value columns (and the row count) packed into one plaintext
HE_ROUNDS = 3

# SPU group-by (sort on shares, segmented sums) — bench/spu.py --ops groupby
SPU_ROW = 1.5e-5  # s per row and per key limb or value column
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
    ciphertexts_per_row = math.ceil((columns + 1) / HE_SLOTS)
    ciphertext_bytes = 2 * key_bits // 8
    he = (rows * ciphertexts_per_row * (HE_ENCRYPT * (key_bits / 2048) ** 2 / cores + HE_ADD)
          + groups * ciphertexts_per_row * HE_DECRYPT
          + HE_ROUNDS * link.rtt + rows * ciphertexts_per_row * ciphertext_bytes / link.bandwidth)
    width = key_limbs + columns
    spu = (rows * width * SPU_ROW
           + (SPU_ROUNDS_BASE + SPU_ROUNDS_PER_DOUBLING * math.log2(rows)) * link.rtt
           + rows * width * SPU_BYTES_ROW / link.bandwidth)
    engine = "he" if he < spu else "spu"
    why = (f"cost model: ~{rows:,} rows, ~{groups:,} groups (assumed √rows), {columns} value column(s), "
           f"{key_limbs} key limb(s), {link.describe()}: HE ≈ {he:.3g} s, SPU ≈ {spu:.3g} s")
    return Estimate(engine, he, spu, why)
