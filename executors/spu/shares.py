"""Share types of the SPU: additive shares over Z_2^64 and XOR shares of 64-bit words.

`ArithShare` — one party's additive share, a numpy uint64 array (arithmetic wraps mod 2^64
natively). The shared value is the sum of all parties' shares. Signed integers are two's
complement; fixed-point values carry `frac` fractional bits (0 for integers), so a product of two
fixed-point shares has `frac = 2F` until it is truncated.

`BoolShare` — one party's XOR share of packed bit vectors: each uint64 word holds the 64 bits of
one element. `bits` says how many low bits are meaningful (64 after A2B, 1 for a comparison bit).

Local operations (no communication): `+`, `-`, unary `-`, `* int` on `ArithShare`; `^`, `&` with a
public mask, shifts on `BoolShare`. Operations that need to know which party adds a public
constant take the session (`add_public`, `bool_not` in `arith`/`boolean`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sqlsecure.errors import ProgrammingError

U64 = np.uint64


def as_ring(values) -> np.ndarray:
    """Integers (any numpy int type or Python ints, negative allowed) -> uint64 two's complement."""
    arr = np.asarray(values)
    if arr.dtype == np.uint64:
        return arr
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64).view(np.uint64)
    if arr.dtype == object:  # Python ints beyond int64 range, e.g. 2**63
        return np.array([int(v) % (1 << 64) for v in arr.ravel()], dtype=np.uint64).reshape(arr.shape)
    raise ProgrammingError(f"cannot encode {arr.dtype} values as ring elements; use encode_fixed for floats")


def encode_fixed(values, frac: int) -> np.ndarray:
    """Reals -> fixed point with `frac` fractional bits, rounded to nearest, as ring elements."""
    arr = np.asarray(values, dtype=np.float64)
    scaled = np.rint(arr * float(1 << frac))
    if arr.size and np.abs(scaled).max() >= 2.0 ** 63:
        raise ProgrammingError(f"value out of range for fixed point with {frac} fractional bits")
    return scaled.astype(np.int64).view(np.uint64)


def decode_fixed(ring: np.ndarray, frac: int) -> np.ndarray:
    """Ring elements -> reals (two's complement, `frac` fractional bits)."""
    return ring.view(np.int64).astype(np.float64) / float(1 << frac)


def to_signed(ring: np.ndarray) -> np.ndarray:
    return np.asarray(ring, dtype=np.uint64).view(np.int64)


@dataclass(frozen=True, eq=False)
class ArithShare:
    """This party's additive share of a vector over Z_2^64 (fixed point if `frac` > 0)."""

    data: np.ndarray
    frac: int = 0

    def __post_init__(self):
        if self.data.dtype != np.uint64:
            raise ProgrammingError(f"ArithShare needs uint64 data, got {self.data.dtype}")

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index) -> "ArithShare":
        return ArithShare(self.data[index], self.frac)

    def _same_scale(self, other: "ArithShare", op: str) -> None:
        if not isinstance(other, ArithShare):
            raise ProgrammingError(f"{op}: ArithShare with {type(other).__name__}; use add_public for constants")
        if other.frac != self.frac:
            raise ProgrammingError(f"{op}: fixed-point scales differ ({self.frac} vs {other.frac} fractional bits)")

    def __add__(self, other: "ArithShare") -> "ArithShare":
        self._same_scale(other, "+")
        return ArithShare(self.data + other.data, self.frac)

    def __sub__(self, other: "ArithShare") -> "ArithShare":
        self._same_scale(other, "-")
        return ArithShare(self.data - other.data, self.frac)

    def __neg__(self) -> "ArithShare":
        return ArithShare(np.negative(self.data), self.frac)

    def __mul__(self, k) -> "ArithShare":
        """Multiply by a public integer (scalar or array); the scale is unchanged."""
        if isinstance(k, ArithShare):
            raise ProgrammingError("share * share needs a protocol: use beaver_mul or mul")
        return ArithShare(self.data * as_ring(k), self.frac)

    __rmul__ = __mul__

    def lshift(self, bits: int) -> "ArithShare":
        return ArithShare(self.data << U64(bits), self.frac)

    def with_frac(self, frac: int) -> "ArithShare":
        return ArithShare(self.data, frac)


@dataclass(frozen=True, eq=False)
class BoolShare:
    """This party's XOR share of packed 64-bit words (one word per element)."""

    data: np.ndarray
    bits: int = 64

    def __post_init__(self):
        if self.data.dtype != np.uint64:
            raise ProgrammingError(f"BoolShare needs uint64 data, got {self.data.dtype}")

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index) -> "BoolShare":
        return BoolShare(self.data[index], self.bits)

    def __xor__(self, other: "BoolShare") -> "BoolShare":
        if not isinstance(other, BoolShare):
            raise ProgrammingError("^: BoolShare with a non-share; XOR a public value with xor_public")
        return BoolShare(self.data ^ other.data, max(self.bits, other.bits))

    def mask(self, public) -> "BoolShare":
        """AND with a public mask (local)."""
        return BoolShare(self.data & as_ring(public), self.bits)

    def rshift(self, k: int) -> "BoolShare":
        return BoolShare(self.data >> U64(k), self.bits)

    def lshift(self, k: int) -> "BoolShare":
        return BoolShare(self.data << U64(k), self.bits)

    def bit(self, i: int) -> "BoolShare":
        """Bit i of every word, moved to bit 0."""
        return BoolShare((self.data >> U64(i)) & U64(1), 1)
