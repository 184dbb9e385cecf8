"""Encoding of SQL values into the SPU ring (Z_2^64) and back.

Every column enters as a *secret value*: one or more ring limbs plus a validity bit (1 where not
NULL). Kinds: `int` (integers, dates as days since 1970-01-01: exact), `bool` (0/1), `fixed`
(floating point as fixed point with F fractional bits: absolute error ≤ 2^-F per value, |x| < 2^29
where a division is involved), `decimal.<s>` (DECIMAL(p, s): two limbs, the value times 10^s as an
exact ring integer — so SUM, MIN, MAX, group keys, revealed values, +, -, * and comparisons with
integers and DECIMALs are exact as DuckDB types them (`stage.Stage._exact_arithmetic`) — and the same
value in fixed point, which DOUBLE contexts (/, AVG's quotient, SQRT, CAST to DOUBLE) use; AVG divides
the exact limb's sum: `quotient.<m>`, see `exact_division`), `text` (UTF-8, 7 bytes per limb:
order-preserving and exactly reversible, so text can be compared, grouped, sorted and revealed
without a dictionary).

Text width: a text column is shared as `text.<w>`, w bytes in ceil(w / 7) limbs, where w is its
owner's *width class* (`text_width`): 28 (4 limbs) when every value fits, else the longest value's
UTF-8 length rounded up to a power of two (32 .. MAX_TEXT_BYTES). The compute parties agree on the
class before sharing (the largest of the owners'), so each owner reveals at most log2 of its
longest value's length, never the length itself; longer text is refused with a DataError. In the
evaluator a text value's kind is `text` and its width is its number of limbs; two text operands of
different widths are padded with zero limbs to the larger (`pad_text`), which keeps comparisons,
grouping and joins exact (a zero byte never occurs inside UTF-8 text).

Exact ranges (F = 16; `spu.ranges` derives each query's tighter limits from these):

  SQL type                  kind   encoding                 revealed as is    compared / MIN/MAX / sorted
  BOOLEAN, TINYINT..BIGINT  int    two's complement         |x| < 2^63        |x| < 2^62 (4.6e18)
  DATE                      date   days since 1970-01-01    all DATE values   all DATE values
  DECIMAL(p, s)             decimal.s  x * 10^s, exact;     |x| < 2^47        |x| < 2^46 (7.0e13)
                                   and round(x * 2^F)       (times 2^F / 10^s where s > 4: both limbs in range)
  REAL, DOUBLE              fixed  round(x * 2^F)           |x| < 2^47        |x| < 2^46 (7.0e13)
                                   (absolute error 2^-(F+1))
  TIMESTAMP                 timestamp  microseconds since    |x| < 2^63 us     |x| < 2^62 us (146,000 years from 1970)
                                   1970-01-01 00:00:00
  VARCHAR                   text   ceil(w / 7) limbs of 7   w UTF-8 bytes     w UTF-8 bytes
                                   bytes, w = `text_width`  (w <= MAX_TEXT_BYTES = 1024)
  TIMESTAMPTZ, others       refused (DataError)

NaN and ±infinity have no fixed-point encoding: their owner refuses them with a DataError naming
the column and the value class before sharing anything (as the HE path does). Every value beyond
its column's limit for the query (`encode`'s `limit`) is refused the same way.
"""

from __future__ import annotations

import datetime
import decimal
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlsecure.errors import DataError
from sqlsecure.executors.spu.exact_division import decode_quotient
from sqlsecure.executors.spu.ranges import Limit
from sqlsecure.executors.spu.shares import as_ring, decode_fixed, encode_fixed, to_signed

TEXT_LIMBS = 4  # the default width class: 28 bytes
MAX_TEXT_BYTES = 1024  # the widest class: longer text is refused
TEXT_CLASSES = ("text", *(f"text.{1 << p}" for p in range(5, MAX_TEXT_BYTES.bit_length())))  # 28, 32, .., 1024 B
QUOTIENT_LIMBS = 4  # an exact AVG: its fixed-point value, then `exact_division.long_divide`'s sign, high, low
LIMB_BYTES = 7
EPOCH = datetime.date(1970, 1, 1)
MICROS_PER_DAY = 86_400_000_000


def kind_of(dtype: pa.DataType) -> str:
    if pa.types.is_boolean(dtype):
        return "bool"  # 0/1, so conditions and SUM (which counts the true ones) see a boolean
    if pa.types.is_integer(dtype):
        return "int"
    if pa.types.is_date(dtype):
        return "date"
    if pa.types.is_timestamp(dtype):
        return timestamp_kind(dtype)
    if pa.types.is_decimal(dtype):
        return f"decimal.{dtype.scale}"
    if pa.types.is_floating(dtype):
        return "fixed"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "text"
    raise DataError(f"values of type {dtype} cannot enter secure computation yet")


def shared_kind(column: pa.ChunkedArray, name: str) -> str:
    """A column's kind as its owner shares it: `kind_of` its type, with a text column's width class."""
    kind = kind_of(column.type)
    return text_kind(width_class(_longest_utf8(column), name)) if kind == "text" else kind


def timestamp_kind(dtype: pa.TimestampType) -> str:
    """TIMESTAMP (microseconds, no time zone) is `timestamp`; a zone or another unit is refused by name."""
    if dtype.tz is not None:
        raise DataError(f"TIMESTAMPTZ values ({dtype}) cannot enter secure computation: the SPU takes TIMESTAMP "
                        "without time zone; CAST them to TIMESTAMP (the wall clock of one stated zone) first")
    if dtype.unit != "us":
        raise DataError(f"TIMESTAMP values in {dtype.unit} ({dtype}) cannot enter secure computation: CAST them to "
                        "TIMESTAMP (microseconds) first")
    return "timestamp"


def decimal_scale(kind: str) -> int | None:
    """The scale s of a `decimal.<s>` kind, None for any other kind."""
    return int(kind.split(".", 1)[1]) if kind.startswith("decimal.") else None


def decimal_scales(kinds: dict[str, str]) -> dict[str, int]:
    """The scale of each DECIMAL column of `kinds` (for `spu.ranges.RangePlan.scales`)."""
    return {column: scale for column, kind in kinds.items() if (scale := decimal_scale(kind)) is not None}


def union_decimal_scale(kinds: list[str]) -> int | None:
    """The largest scale when every kind is int or a decimal and one at least is a decimal: the scale of
    DuckDB's UNION ALL (or CASE) of them."""
    scales = [0 if k == "int" else decimal_scale(k) for k in kinds]
    if None in scales or all(k == "int" for k in kinds):
        return None
    return max(scales)


def quotient_bits(kind: str) -> int | None:
    """The fractional bits m of a `quotient.<m>` kind (an exact AVG of a DECIMAL), None for any other."""
    return int(kind.split(".", 1)[1]) if kind.startswith("quotient.") else None


def text_bytes(kind: str) -> int | None:
    """The width in bytes of a `text` (28) or `text.<w>` kind of TEXT_CLASSES, None for any other kind."""
    if kind not in TEXT_CLASSES:
        return None
    return TEXT_LIMBS * LIMB_BYTES if kind == "text" else int(kind.split(".", 1)[1])


def text_kind(width: int) -> str:
    """The shared kind of text of a width class: `text` for the default 28 bytes, else `text.<w>`."""
    return "text" if width <= TEXT_LIMBS * LIMB_BYTES else f"text.{width}"


def value_kind(kind: str) -> str:
    """The evaluator's kind of a shared kind: every text width is `text` (its width is its limb count)."""
    return "text" if text_bytes(kind) is not None else kind


def text_width(values: list, name: str) -> int:
    """The owner's public width class of its text values (see the module docstring): 28 bytes, or the
    longest UTF-8 length rounded up to a power of two; a DataError (naming the column, before any
    share) beyond MAX_TEXT_BYTES."""
    return width_class(max((len(v.encode("utf-8")) for v in values if v is not None), default=0), name)


def width_class(longest: int, name: str) -> int:
    """`text_width` of text whose longest value has `longest` bytes of UTF-8."""
    if longest > MAX_TEXT_BYTES:
        raise DataError(f"column {name!r} has text longer than {MAX_TEXT_BYTES} bytes of UTF-8, the widest the SPU "
                        f"carries; shorten it (e.g. LEFT({name}, {MAX_TEXT_BYTES // 4})) or keep it on one party")
    default = TEXT_LIMBS * LIMB_BYTES
    return default if longest <= default else 1 << (longest - 1).bit_length()


def _longest_utf8(column: pa.ChunkedArray | pa.Array) -> int:
    """The most UTF-8 bytes of any value of a text column (0 for none), in Arrow."""
    longest = pc.max(pc.binary_length(column)).as_py() if len(column) else None
    return longest or 0


def limbs_of(kind: str) -> int:
    if quotient_bits(kind) is not None:
        return QUOTIENT_LIMBS
    width = text_bytes(kind)
    if width is not None:
        return -(-width // LIMB_BYTES)
    return 2 if decimal_scale(kind) is not None else 1


def limb_fracs(kind: str, frac: int) -> list[int]:
    """The fractional bits of each limb of a kind: a decimal's exact limb is an integer, its second
    limb fixed point."""
    if kind == "fixed":
        return [frac]
    if quotient_bits(kind) is not None:
        return [frac] + [0] * (QUOTIENT_LIMBS - 1)
    return [0, frac] if decimal_scale(kind) is not None else [0] * limbs_of(kind)


def range_kind(kind: str) -> str:
    """The kind `spu.ranges` derives limits for: a decimal's as fixed point (its fixed limb is what
    arithmetic uses; `check_range` shrinks the limit where 10^s > 2^F, for the exact limb)."""
    if text_bytes(kind) is not None:
        return "text"
    return "fixed" if decimal_scale(kind) is not None or quotient_bits(kind) is not None else kind


def encode(column: pa.ChunkedArray, kind: str, frac: int, limit: Limit | None = None,
           name: str = "a column") -> tuple[list[np.ndarray], np.ndarray]:
    """(ring limbs, validity) of a column, after its owner checked every value against `limit`
    (|x| < limit.value; default: the kind's whole range) and refused NaN and infinities."""
    if kind == "timestamp":  # as integers: Python's datetime ends at year 9999, DuckDB's TIMESTAMP does not
        column = column.cast(pa.int64())
    if text_bytes(kind) is not None:
        return text_limb_arrays(column, name, text_bytes(kind)), _validity(column)
    values = column.to_pylist()
    valid = np.array([v is not None for v in values], dtype=np.uint64)
    scale = decimal_scale(kind)
    if kind in ("int", "fixed", "timestamp"):
        check_range(values, "fixed" if kind == "fixed" else "int", frac, limit, name)
    if scale is not None:
        check_range(values, "fixed", frac, limit, name, ring_units=10 ** scale)
        exact = [int(decimal.Decimal(v).scaleb(scale)) if v is not None else 0 for v in values]
        floats = [float(v) if v is not None else 0.0 for v in values]
        return [as_ring(np.array(exact, dtype=np.int64)), encode_fixed(np.array(floats), frac)], valid
    if kind == "date":
        check_range([(v - EPOCH).days if v is not None else None for v in values], "int", 0, limit, name)
    if kind in ("int", "bool", "timestamp"):
        return [as_ring(np.array([int(v) if v is not None else 0 for v in values], dtype=np.int64))], valid
    if kind == "date":
        return [as_ring(np.array([(v - EPOCH).days if v is not None else 0 for v in values], dtype=np.int64))], valid
    if kind == "fixed":
        return [encode_fixed(np.array([float(v) if v is not None else 0.0 for v in values]), frac)], valid
    return [np.array(limb, dtype=np.uint64) for limb in text_limbs(values, name)], valid


def _validity(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """1 where a value is not NULL, as ring words."""
    return np.asarray(column.is_valid(), dtype=bool).astype(np.uint64)


def check_range(values: list, kind: str, frac: int, limit: Limit | None, name: str,
                ring_units: int | None = None) -> None:
    """DataError (naming the column and the range or value class, never a value or a row) if a value
    has no exact encoding here: done by the owner, on its own values, before anything is shared.
    `ring_units`: a decimal's exact limb counts 10^s ring units per unit, so where that is more than
    fixed point's 2^F the whole ring's bound shrinks by 2^F / 10^s (every ring bound then holds for both
    limbs); a stage's `limit` is already at those units (`ranges.RangePlan.at_decimal_units`)."""
    present = [float(v) if kind == "fixed" else int(v) for v in values if v is not None]
    if not present:
        return
    if kind == "fixed":
        refuse_special_floats(present, name)
    whole = 2.0 ** (63 - frac) if kind == "fixed" else 2.0 ** 63
    if ring_units is not None and ring_units > 2 ** frac:
        whole *= 2.0 ** frac / ring_units
    bound = min(limit.value, whole) if limit is not None else whole
    reason = limit.reason if limit is not None and limit.value < whole else "the SPU's 64-bit encoding"
    largest = max(abs(v) for v in present)
    if largest >= bound or (kind == "fixed" and round(largest * 2.0 ** frac) >= 2.0 ** 63):
        raise DataError(f"column {name!r} has values outside the SPU's exact range for this query: it needs "
                        f"|{name}| < {bound:.6g} ({reason}); filter or scale the column first")


def refuse_special_floats(values: list[float], name: str) -> None:
    """DataError naming the column and the value class if any value is NaN or infinite (no row, no value)."""
    floats = np.array(values, dtype=np.float64)
    if np.isnan(floats).any():
        raise DataError(f"column {name!r} has NaN values, which secure computation cannot carry; "
                        f"filter them out (WHERE NOT isnan({name})) or keep the column on one party")
    if np.isinf(floats).any():
        raise DataError(f"column {name!r} has infinite values, which secure computation cannot carry; "
                        f"filter them out (WHERE isfinite({name})) or keep the column on one party")


def text_limbs(values: list, name: str = "a text value", width: int = TEXT_LIMBS * LIMB_BYTES) -> list[list[int]]:
    """UTF-8 text of at most `width` bytes as ceil(width / LIMB_BYTES) big-endian integers of
    LIMB_BYTES bytes each (NULL as zeros): order-preserving and exactly reversible. A longer value
    is a DataError naming the column and the width (the width classes were agreed before sharing)."""
    return [limb.tolist() for limb in text_limb_arrays(pa.array(values, pa.large_string()), name, width)]


TEXT_CHUNK_ROWS = 1 << 16  # rows whose padded bytes are laid out at once: bounds the temporaries


def text_limb_arrays(column: pa.ChunkedArray | pa.Array, name: str = "a text value",
                     width: int = TEXT_LIMBS * LIMB_BYTES) -> list[np.ndarray]:
    """`text_limbs` of a text column as uint64 arrays, from its UTF-8 bytes in Arrow: each value's
    bytes are laid out zero-padded to the limbs' width, and each 7-byte slice read as a big-endian word."""
    count = -(-width // LIMB_BYTES)
    raw = pc.cast(column, pa.large_binary())
    raw = raw.combine_chunks() if isinstance(raw, pa.ChunkedArray) else raw
    n = len(raw)
    lengths = pc.fill_null(pc.binary_length(raw), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    if n and lengths.max() > width:
        raise DataError(f"column {name!r} has text longer than {width} bytes of UTF-8, its width for this "
                        f"query; shorten it (e.g. LEFT({name}, {width // 4}): 4 bytes per character at most) first")
    starts = np.frombuffer(raw.buffers()[1], dtype=np.int64)[raw.offset:raw.offset + n] if n else lengths
    data = raw.buffers()[2] if n else None
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)
    padded = count * LIMB_BYTES
    windows = np.lib.stride_tricks.sliding_window_view(np.concatenate([data, np.zeros(padded, np.uint8)]), padded)
    limbs = np.empty((count, n), dtype=np.uint64)
    for lo in range(0, n, TEXT_CHUNK_ROWS):
        hi = min(n, lo + TEXT_CHUNK_ROWS)
        text = windows[starts[lo:hi]] * (np.arange(padded) < lengths[lo:hi, None])  # bytes past a value zeroed
        words = np.zeros((hi - lo, count, 8), dtype=np.uint8)
        words[:, :, 8 - LIMB_BYTES:] = text.reshape(hi - lo, count, LIMB_BYTES)
        limbs[:, lo:hi] = words.view(">u8").reshape(hi - lo, count).T
    return list(limbs)


def decode_column(limbs: list[np.ndarray], valid: np.ndarray, kind: str, frac: int,
                  error_bound: float | None = None) -> pa.Array:
    """An opened column as Arrow values of its kind; fixed point rounded to the decimals its
    `error_bound` (the largest absolute error of the computation, None: unknown) supports."""
    mask = to_signed(valid) == 0
    scale = decimal_scale(kind)
    if scale is not None:  # DuckDB's SUM of DECIMAL(p, s) is DECIMAL(38, s)
        exact = to_signed(limbs[0])
        return pa.array([None if m else decimal.Decimal(int(x)).scaleb(-scale) for x, m in zip(exact, mask)],
                        pa.decimal128(38, scale))
    bits = quotient_bits(kind)
    if bits is not None:
        sign, high, low = (to_signed(limb) for limb in limbs[1:])
        return pa.array([None if m else decode_quotient(int(n), int(h), int(lo), bits)
                         for n, h, lo, m in zip(sign, high, low, mask)], pa.float64())
    if kind == "fixed":
        return pa.array(honest_digits(decode_fixed(limbs[0], frac), error_bound), pa.float64(), mask=mask)
    if kind == "bool":
        return pa.array(to_signed(limbs[0]) != 0, pa.bool_(), mask=mask)
    if kind == "date":
        days = to_signed(limbs[0])  # date32's days since 1970-01-01, as DuckDB's DATE: years 10000+ and BC too
        if len(days) and np.any(~np.asarray(mask, dtype=bool) & ((days < -2**31) | (days >= 2**31))):
            raise DataError("a date result is beyond DATE's range (2^31 days from 1970-01-01)")
        return pa.array(np.where(mask, 0, days).astype(np.int32), pa.int32(), mask=mask).cast(pa.date32())
    if kind == "timestamp":
        return pa.array(to_signed(limbs[0]), pa.int64(), mask=mask).cast(pa.timestamp("us"))
    if text_bytes(kind) is not None:
        out = []
        for i, m in enumerate(mask):
            if m:
                out.append(None)
                continue
            raw = b"".join(int(limb[i]).to_bytes(LIMB_BYTES, "big") for limb in limbs)
            out.append(raw.rstrip(b"\0").decode("utf-8", errors="replace"))
        return pa.array(out, pa.string())
    return pa.array(to_signed(limbs[0]), pa.int64(), mask=mask)


def supported_decimals(error_bound: float | None) -> int | None:
    """The most decimals d that an error below `error_bound` leaves right: error_bound < 10^-d / 2, so
    a value whose exact result has d decimals (money) rounds back to it. None: no bound, no rounding."""
    if not error_bound:
        return None
    return math.floor(-math.log10(2 * error_bound))


def honest_digits(values: np.ndarray, error_bound: float | None) -> np.ndarray:
    """Fixed-point results rounded to `supported_decimals` where the rounding moves them by at most
    `error_bound` (each value correctly rounded by Python), else as computed: an exact result with d
    decimals (within the bound of the computed value) rounds back to itself, and no result moves further
    from DuckDB's than twice the bound (rounding every value would add up to half a last digit, 10^-d / 2,
    which exceeds the bound by up to 10 times: 1.23 + 1e-5 shown as 1.23)."""
    decimals = supported_decimals(error_bound)
    if decimals is None:
        return values
    rounded = [round(float(v), decimals) for v in values]
    return np.array([r if abs(r - float(v)) <= error_bound else float(v) for r, v in zip(rounded, values)],
                    dtype=np.float64)
