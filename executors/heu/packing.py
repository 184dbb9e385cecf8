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

import numpy as np

from sqlsecure.errors import DataError

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


def result_plan(groups: int, columns: int, slots: int) -> list[list[tuple[int, int, int]]]:
    """How per-group sums are packed into returned ciphertexts (public: from G, columns, k).

    Each returned ciphertext lists (group, first column, width) entries filling its slots from
    slot 0 up; entries are in group-major order and never split across ciphertexts.
    """
    plan: list[list[tuple[int, int, int]]] = []
    used = slots
    for g in range(groups):
        for chunk in column_chunks(columns, slots):
            width = len(chunk)
            if used + width > slots:
                plan.append([])
                used = 0
            plan[-1].append((g, chunk.start, width))
            used += width
    return plan


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
