"""Encoding of SQL values into the SPU ring (Z_2^64) and back.

Every column enters as a *secret value*: one or more ring limbs plus a validity bit (1 where not
NULL). Kinds: `int` (integers, dates as days since 1970-01-01: exact), `bool` (0/1), `fixed`
(DECIMAL and floating point as fixed point with F fractional bits: absolute error ≤ 2^-F per
value, |x| < 2^29 where a division is involved), `text` (UTF-8, 7 bytes per limb, `TEXT_LIMBS`
limbs: order-preserving and exactly reversible, so text can be compared, grouped, sorted and
revealed without a dictionary; longer text is refused).
"""

from __future__ import annotations

import datetime

import numpy as np
import pyarrow as pa

from sqlsecure.errors import DataError
from sqlsecure.executors.spu.shares import as_ring, decode_fixed, encode_fixed, to_signed

TEXT_LIMBS = 4
LIMB_BYTES = 7
EPOCH = datetime.date(1970, 1, 1)


def kind_of(dtype: pa.DataType) -> str:
    if pa.types.is_boolean(dtype):
        return "bool"  # 0/1, so conditions and SUM (which counts the true ones) see a boolean
    if pa.types.is_integer(dtype):
        return "int"
    if pa.types.is_date(dtype):
        return "date"
    if pa.types.is_decimal(dtype) or pa.types.is_floating(dtype):
        return "fixed"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "text"
    raise DataError(f"values of type {dtype} cannot enter secure computation yet")


def limbs_of(kind: str) -> int:
    return TEXT_LIMBS if kind == "text" else 1


def encode(column: pa.ChunkedArray, kind: str, frac: int) -> tuple[list[np.ndarray], np.ndarray]:
    """(ring limbs, validity) of a column."""
    values = column.to_pylist()
    valid = np.array([v is not None for v in values], dtype=np.uint64)
    if kind in ("int", "bool"):
        return [as_ring(np.array([int(v) if v is not None else 0 for v in values], dtype=np.int64))], valid
    if kind == "date":
        return [as_ring(np.array([(v - EPOCH).days if v is not None else 0 for v in values], dtype=np.int64))], valid
    if kind == "fixed":
        return [encode_fixed(np.array([float(v) if v is not None else 0.0 for v in values]), frac)], valid
    return [np.array(limb, dtype=np.uint64) for limb in text_limbs(values)], valid


def text_limbs(values: list) -> list[list[int]]:
    """UTF-8 text as TEXT_LIMBS big-endian integers of LIMB_BYTES bytes each (NULL as zeros):
    order-preserving and exactly reversible."""
    limbs = [[0] * len(values) for _ in range(TEXT_LIMBS)]
    for i, v in enumerate(values):
        if v is None:
            continue
        raw = v.encode("utf-8")
        if len(raw) > TEXT_LIMBS * LIMB_BYTES:
            raise DataError(f"text longer than {TEXT_LIMBS * LIMB_BYTES} bytes cannot enter secure computation yet")
        raw = raw.ljust(TEXT_LIMBS * LIMB_BYTES, b"\0")
        for k in range(TEXT_LIMBS):
            limbs[k][i] = int.from_bytes(raw[k * LIMB_BYTES:(k + 1) * LIMB_BYTES], "big")
    return limbs


def decode(limbs: list[np.ndarray], valid: np.ndarray, kind: str, frac: int) -> pa.Array:
    mask = to_signed(valid) == 0
    if kind == "fixed":
        return pa.array(decode_fixed(limbs[0], frac), pa.float64(), mask=mask)
    if kind == "bool":
        return pa.array(to_signed(limbs[0]) != 0, pa.bool_(), mask=mask)
    if kind == "date":
        days = to_signed(limbs[0])
        return pa.array([None if m else EPOCH + datetime.timedelta(days=int(d)) for d, m in zip(days, mask)],
                        pa.date32())
    if kind == "text":
        out = []
        for i, m in enumerate(mask):
            if m:
                out.append(None)
                continue
            raw = b"".join(int(limb[i]).to_bytes(LIMB_BYTES, "big") for limb in limbs)
            out.append(raw.rstrip(b"\0").decode("utf-8", errors="replace"))
        return pa.array(out, pa.string())
    return pa.array(to_signed(limbs[0]), pa.int64(), mask=mask)
