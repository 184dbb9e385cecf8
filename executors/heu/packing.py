"""Slot packing: many fixed-width signed values in one Paillier plaintext.

Layout of a plaintext P < 2^(|n|-1) < n with k slots of W bits each (slot 0 least significant):

    P = sum_{j<k} s_j * 2^(j W)        W = b + h + sigma + 1,   k = floor((|n| - 1) / W)

    b      value_bits: a value v is a signed integer, -2^(b-1) <= v < 2^(b-1) (int64: b = 64;
           fixed point: v = round(x * 2^F), see `to_fixed_point`)
    offset each value is stored as v + 2^(b-1) in [0, 2^b), so slots only ever hold non-negative
           numbers and negative values never borrow from the slot above (offset encoding)
    h      headroom bits: a slot receives at most N = max_terms additions, h = ceil(log2 N), so a
           sum of N encoded values stays below 2^(b+h)
    sigma  mask bits (statistical security, default 40): before a sum goes back to the key owner
           it is masked with r uniform on [0, 2^(b+h+sigma)), so x + r < 2^(b+h+sigma+1) = 2^W
           and x is hidden within statistical distance 2^-sigma per slot
           (x + r for x < 2^(b+h) differs from r by at most 2^(b+h) / 2^(b+h+sigma)).

Sums can therefore never carry into the next slot nor wrap modulo n; inputs outside the value range
and sums of more than N terms are refused with `DataError` -- never wrapped. The layout is public
(it is fixed by the schema and the public row count), so it reveals nothing about the values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from sqlsecure.errors import DataError
from sqlsecure.executors.heu.fixed_base import choose_window, windows_for
from sqlsecure.executors.heu.kernels import owner_window
from sqlsecure.executors.heu.teichmuller import BUILD_COST

MASK_BITS = 40  # sigma: statistical security of the masks, per slot


@dataclass(frozen=True)
class SlotLayout:
    """Slot widths for signed `value_bits`-bit values summed at most `max_terms` times."""

    value_bits: int = 64
    max_terms: int = 1
    mask_bits: int = MASK_BITS

    def __post_init__(self):
        if not 2 <= self.value_bits <= 64:
            raise DataError(f"value_bits must be in [2, 64], got {self.value_bits}")
        if self.max_terms < 1:
            raise DataError(f"max_terms must be at least 1, got {self.max_terms}")
        if self.mask_bits < MASK_BITS:
            raise DataError(f"mask_bits must be at least {MASK_BITS}, got {self.mask_bits}")

    @property
    def headroom_bits(self) -> int:
        return (self.max_terms - 1).bit_length()

    @property
    def sum_bits(self) -> int:
        """Bits of a sum of `max_terms` encoded values (before masking)."""
        return self.value_bits + self.headroom_bits

    @property
    def slot_bits(self) -> int:
        return self.sum_bits + self.mask_bits + 1

    @property
    def offset(self) -> int:
        return 1 << (self.value_bits - 1)

    @property
    def mask_limit(self) -> int:
        """Masks are uniform on [0, mask_limit)."""
        return 1 << (self.sum_bits + self.mask_bits)

    def slots(self, n_bits: int) -> int:
        """Slots per plaintext for a modulus of n_bits bits."""
        k = (n_bits - 1) // self.slot_bits
        if k < 1:
            raise DataError(f"a {self.slot_bits}-bit slot does not fit a {n_bits}-bit Paillier key")
        return k

    def check_terms(self, count: int) -> None:
        """Refuse a sum of more terms than the headroom allows (it could overflow its slot)."""
        if count > self.max_terms:
            raise DataError(f"a sum of {count} values exceeds the slot headroom of {self.max_terms} "
                            f"terms ({self.headroom_bits} bits); it could overflow, so it is refused")

    def encode(self, values: np.ndarray) -> list[int]:
        """Offset-encoded values v + 2^(b-1), after checking every v is in range."""
        values = np.asarray(values)
        if values.dtype.kind not in "iu":
            raise DataError(f"HE sums take integers (fixed point via to_fixed_point), got {values.dtype}")
        if values.dtype.kind == "u" and len(values) and int(values.max()) >= self.offset:
            raise DataError(f"value {int(values.max())} outside the {self.value_bits}-bit signed range")
        values = values.astype(np.int64)
        if self.value_bits == 64:
            return (values.view(np.uint64) ^ np.uint64(1 << 63)).tolist()
        if len(values):
            lo, hi = int(values.min()), int(values.max())
            if lo < -self.offset or hi >= self.offset:
                bad = lo if lo < -self.offset else hi
                raise DataError(f"value {bad} outside the {self.value_bits}-bit signed range "
                                f"[{-self.offset}, {self.offset})")
        return (values + self.offset).tolist()


def pack(encoded: list[list[int]], slot_bits: int) -> list[int]:
    """Row-wise plaintexts: sum_j encoded[j][row] << (j * slot_bits) (at most k columns)."""
    if len(encoded) == 1:
        return list(encoded[0])
    out = []
    for row in zip(*encoded):
        p = 0
        for j in range(len(row) - 1, -1, -1):
            p = (p << slot_bits) | row[j]
        out.append(p)
    return out


def unpack(plaintext: int, count: int, slot_bits: int) -> list[int]:
    """The first `count` slots of a plaintext."""
    mask = (1 << slot_bits) - 1
    return [(plaintext >> (j * slot_bits)) & mask for j in range(count)]


def column_chunks(columns: int, slots: int) -> list[range]:
    """Which columns each per-row ciphertext carries: consecutive runs of at most `slots`."""
    return [range(c, min(columns, c + slots)) for c in range(0, columns, slots)]


class Entry(NamedTuple):
    """One accumulator in a returned ciphertext: the sum, over group `group`'s rows at row position
    `position` of their ciphertexts, of the packed plaintexts of chunk `chunk`. It spans `span` slots
    (rows_per_ciphertext * width); the `width` slots from position * width on hold group `group`'s
    sums of columns first .. first + width - 1, the other slots are sums of the neighbouring rows
    (masked like the rest, and ignored)."""

    group: int
    position: int
    chunk: int
    first: int
    width: int
    span: int


@dataclass(frozen=True)
class PackingPlan:
    """How values travel in ciphertexts and sums come back (public: from rows, groups, columns, key).

    rows_per_ciphertext = R: with all columns in one chunk (R * columns <= slots), each ciphertext
    carries R consecutive rows, row j of it in slots [j * columns, (j + 1) * columns). The label
    owner then keeps G * R accumulators (group, position) instead of G: it multiplies each
    ciphertext into the accumulator of each of its rows' (group, position), so it still does one
    multiplication per row, while the value owner encrypts R times fewer ciphertexts. R = 1 with
    columns > slots splits the columns into chunks, one ciphertext per row and chunk.

    merge: returned ciphertexts carry several accumulators side by side (shifted by whole slot
    spans, Horner) as long as they fit in `slots`; otherwise one accumulator each. Shifting costs
    one squaring per bit, returning a ciphertext one randomiser plus one decryption: `choose_packing`
    weighs them.
    """

    columns: int
    slots: int
    rows_per_ciphertext: int = 1
    merge: bool = True

    def __post_init__(self):
        R = self.rows_per_ciphertext
        if self.columns < 1 or self.slots < 1 or R < 1:
            raise DataError(f"invalid packing: {self.columns} columns, {self.slots} slots, {R} rows per ciphertext")
        if R > 1 and R * self.columns > self.slots:
            raise DataError(f"{R} rows of {self.columns} columns do not fit {self.slots} slots")

    @property
    def chunks(self) -> list[range]:
        if self.rows_per_ciphertext > 1:
            return [range(self.columns)]
        return column_chunks(self.columns, self.slots)

    def ciphertexts(self, rows: int) -> int:
        """Ciphertexts per chunk for `rows` rows."""
        return -(-rows // self.rows_per_ciphertext)

    def accumulators(self, groups: int) -> int:
        return groups * self.rows_per_ciphertext * len(self.chunks)

    def accumulator(self, group: int, position: int, chunk: int) -> int:
        return (group * self.rows_per_ciphertext + position) * len(self.chunks) + chunk

    def pack_rows(self, encoded: list[list[int]], slot_bits: int) -> list[list[int]]:
        """Per chunk, the plaintexts of `encoded` rows ([column][row], offset-encoded): row r goes
        to ciphertext r // R, slots from (r % R) * width on."""
        R, out = self.rows_per_ciphertext, []
        for chunk in self.chunks:
            rows = pack([encoded[j] for j in chunk], slot_bits)
            if R == 1:
                out.append(rows)
                continue
            shift = len(chunk) * slot_bits
            packed = []
            for t in range(0, len(rows), R):
                p = 0
                for v in reversed(rows[t:t + R]):
                    p = (p << shift) | v
                packed.append(p)
            out.append(packed)
        return out

    def result_plan(self, groups: int) -> list[list[Entry]]:
        """The accumulators each returned ciphertext carries, from slot 0 up (group-major order;
        an accumulator is never split across ciphertexts)."""
        plan: list[list[Entry]] = []
        used = self.slots
        R = self.rows_per_ciphertext
        chunks = self.chunks
        for g in range(groups):
            for j in range(R):
                for c, chunk in enumerate(chunks):
                    span = R * len(chunk)
                    if not self.merge or used + span > self.slots:
                        plan.append([])
                        used = 0
                    plan[-1].append(Entry(g, j, c, chunk.start, len(chunk), span))
                    used += span
        return plan


# Cost model of `choose_packing`, in multiplications mod n^2 (process CPU time, 2048-bit key, from
# profiles of he_group_sum at 10^4-10^5 rows with two worker processes; bench/he.py). Only ratios
# matter; the per-operation costs scale with the exponent lengths, i.e. with |n|.
LOOKUP_HALF = 0.20       # one half-width table lookup mod p^2 (or q^2) inside an encryption, memory included
LOOKUP_FULL = 0.75       # one table multiplication mod n^2 inside a randomiser
BUILD_HALF = LOOKUP_HALF * BUILD_COST  # one entry of a half-width table (carry, inverse, quotient steps)
BUILD_FULL = 0.6         # one multiplication mod n^2 building the randomiser table
ENCRYPT_EXTRA = 3.0      # per encryption beyond the table: (1 + m n) mod p^2, q^2 and the CRT
ADD_COST = 1.15          # one homomorphic addition at the label owner (one multiplication + parsing)
DECRYPT_COST = 290.0     # one CRT decryption at 2048 bits (two exponentiations mod p^2 and q^2)
DECRYPT_HALF_COST = 134.0  # decryption mod p^2 alone (plaintext below p)
SHIFT_COST = 1.0         # per bit of a shift (one squaring mod n^2)


def _table_cost(exponent_bits: int, w: int, tables: int, lookup: float, build: float) -> tuple[float, float]:
    """(cost per use, build cost per process) of `tables` fixed-base tables with w-bit windows."""
    windows = windows_for(exponent_bits, w)
    return tables * windows * lookup, tables * windows * (1 << w) * build


def packing_cost(plan: PackingPlan, rows: int, groups: int, slot_bits: int, n_bits: int,
                 processes: int = 1) -> float:
    """Estimated CPU cost of an HE group sum with `plan` (see the constants above): encryptions and
    their tables at the value owner, additions, shifts and randomisers at the label owner, and
    decryptions at the value owner. Tables are built once per worker process."""
    P = max(1, processes)
    chunks = plan.chunks
    encryptions = plan.ciphertexts(rows) * len(chunks)
    exponent_bits = -(-((n_bits + 1) // 2) // 8) * 8  # paillier.djn_exponent_bits
    w = owner_window(exponent_bits, -(-encryptions // P), n_bits)
    per_enc, build_enc = _table_cost(exponent_bits, w, 2, LOOKUP_HALF, BUILD_HALF)
    cost = encryptions * (per_enc + ENCRYPT_EXTRA) + (build_enc * P if encryptions else 0)
    cost += rows * len(chunks) * ADD_COST
    prime_bits = n_bits // 2 - 2
    if plan.merge:
        if plan.rows_per_ciphertext > 1:
            span = plan.rows_per_ciphertext * plan.columns
            per = max(1, plan.slots // span)
            returned = -(-groups * plan.rows_per_ciphertext // per)
            shifts = (groups * plan.rows_per_ciphertext - returned) * span * slot_bits
            bits = min(per * span, plan.slots) * slot_bits
        else:
            returned = -(-groups * plan.columns // plan.slots) if plan.columns <= plan.slots else groups * len(chunks)
            shifts = max(0, groups * len(chunks) - returned) * plan.columns * slot_bits
            bits = plan.slots * slot_bits
    else:
        returned = plan.accumulators(groups)
        shifts = 0
        bits = plan.rows_per_ciphertext * max(len(c) for c in chunks) * slot_bits
    scale = n_bits / 2048
    decrypt = (DECRYPT_HALF_COST if bits <= prime_bits else DECRYPT_COST) * scale
    w = choose_window(n_bits + 128, -(-returned // P), 2 * n_bits)
    per_rand, build_rand = _table_cost(n_bits + 128, w, 1, LOOKUP_FULL, BUILD_FULL)
    return cost + returned * (per_rand + decrypt) + build_rand * min(P, returned) + shifts * SHIFT_COST


def choose_packing(rows: int, groups: int, columns: int, slots: int, slot_bits: int, n_bits: int,
                   processes: int = 1) -> PackingPlan:
    """The packing plan of least estimated cost: rows per ciphertext R in [1, slots // columns]
    (few groups and many rows: large R; many groups: R = 1), merged returns or not.

    >>> choose_packing(10**6, 1000, 2, 16, 125, 2048, processes=2).rows_per_ciphertext
    8
    >>> choose_packing(20_000, 10_000, 1, 16, 120, 2048).rows_per_ciphertext
    1
    """
    best, best_cost = None, None
    top = max(1, slots // columns) if columns <= slots else 1
    for R in range(1, top + 1):
        for merge in (True, False):
            plan = PackingPlan(columns, slots, R, merge)
            cost = packing_cost(plan, rows, max(groups, 1), slot_bits, n_bits, processes)
            if best_cost is None or cost < best_cost:
                best, best_cost = plan, cost
    return best


# Seconds of one cost unit (a multiplication mod n^2 at 2048 bits) in a whole he_group_sum, all
# overheads included, on the cores it runs on: fitted on bench/he.py's protocol runs
# on a quiet 2-core machine (2026-12-07, load ~1.2, 32 groups, 2 worker processes: 1.4 s wall for 0.28 M
# units at 10^4 rows, 4.4 s for 1.00 M at 10^5), wall = fixed + units x UNIT_SECONDS / processes:
# 8.3 us and 0.23 s (`cost.HE_FIXED` stays 1.0 s: the SPU's fixed price beside it, `cost.SPU_FIXED`, was
# measured under load, and a quiet HE_FIXED alone would price HE below the SPU for the smallest queries in
# process). (That run's "cpu s" column missed the workers' CPU, read since from /proc.) Before:
# 11 us, CPU seconds per unit under load 10-17 (2026-12-07), 12 us before that (2026-11-22): the model's HE
# then stood 2-2.7x above bench/network.py's quiet class-4 runs. What is left of that gap is the rows: the
# planner prices the published 131,072 (16,384) rows per party, and the bench's query joins about half of
# its 10^5 (10^4) (docs/benchmarks.md, "HE's price on a quiet machine").
UNIT_SECONDS = 8.3e-6


def he_group_sum_seconds(rows: int, groups: int, columns: int, key_bits: int = 2048, processes: int = 2,
                         value_bits: int = 64, mask_bits: int = MASK_BITS) -> tuple[float, float, PackingPlan]:
    """(CPU seconds, wall seconds on `processes` cores, plan) the cost model expects for an HE group
    sum of `rows` rows, `groups` groups and `columns` value columns (the engine sends two per
    aggregated column: value and validity), with the plan `choose_packing` would pick. Wall time
    assumes the work spreads over the cores (the label owner's additions, ~7% at 10^6 rows, run
    beside the encryptions)."""
    layout = SlotLayout(value_bits, max(1, rows), mask_bits)
    slots = layout.slots(key_bits)
    plan = choose_packing(rows, groups, columns, slots, layout.slot_bits, key_bits, processes)
    units = packing_cost(plan, rows, max(groups, 1), layout.slot_bits, key_bits, processes)
    scale = (key_bits / 2048) ** 1.6  # a multiplication mod n^2: 6.7 us at 2048 bits, 12.8 us at 3072
    cpu = units * UNIT_SECONDS * scale
    return cpu, cpu / max(1, processes), plan


def to_fixed_point(values, frac_bits: int, value_bits: int = 64) -> np.ndarray:
    """round(x * 2^F) as int64, refusing non-finite values and values outside the b-bit range."""
    x = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise DataError("HE sums of NaN or infinite values are not defined")
    scaled = np.rint(x * float(1 << frac_bits))
    limit = float(1 << (value_bits - 1))
    if len(scaled) and (scaled.min() < -limit or scaled.max() >= limit):
        raise DataError(f"fixed-point value outside the {value_bits}-bit range with {frac_bits} "
                        f"fractional bits")
    return scaled.astype(np.int64)


def from_fixed_point(value: int, frac_bits: int) -> float:
    """A fixed-point integer back to a float (exact scaling, rounding only in the division)."""
    return value / (1 << frac_bits)
