"""Canonical, typed encoding of join keys, so both parties hash the same value to the same bytes.

Rule: the value's *family* tags the bytes, so `1` (integer) and `'1'` (string) never collide,
while every integer width (TINYINT ... HUGEINT, signed or not) encodes alike: INTEGER 5 and
BIGINT 5 match. DECIMALs encode their exact value without trailing zeros (5.50 and 5.5 match); a DOUBLE's -0.0
encodes as 0.0 (they are equal in SQL).
A row with a NULL in any key column encodes to None and never matches. Several key columns
encode as length-prefixed parts.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pt


def _family(dtype: pa.DataType):
    if pt.is_integer(dtype):
        return lambda v: b"i" + str(v).encode()
    if pt.is_decimal(dtype):
        return lambda v: b"d" + format(v.normalize(), "f").encode() if v != 0 else b"d0"
    if pt.is_string(dtype) or pt.is_large_string(dtype):
        return lambda v: b"s" + v.encode("utf-8")
    if pt.is_boolean(dtype):
        return lambda v: b"b1" if v else b"b0"
    if pt.is_date(dtype):
        return lambda v: b"D" + v.isoformat().encode()
    if pt.is_timestamp(dtype):
        return lambda v: b"T" + v.isoformat().encode()
    if pt.is_binary(dtype) or pt.is_large_binary(dtype):
        return lambda v: b"x" + bytes(v)
    if pt.is_floating(dtype):  # + 0.0: -0.0 becomes 0.0, which SQL's = equals (NaN encodes as "nan": DuckDB's NaN = NaN)
        return lambda v: b"f" + repr(float(v) + 0.0).encode()
    tag = str(dtype).encode()
    return lambda v: b"?" + tag + b":" + str(v).encode()


# Families whose encoding is a tag and Arrow's own text of the value (`str(v)` of an integer, the UTF-8
# of a string), so one key column of them encodes in Arrow's kernels, not one Python call per row.
ARROW_TEXT = ((pt.is_integer, b"i"), (pt.is_string, b"s"), (pt.is_large_string, b"s"))


def _encode_in_arrow(column: pa.ChunkedArray) -> list[bytes | None] | None:
    """`encode_keys` of one integer or string column, computed in Arrow; None for other types."""
    tag = next((tag for test, tag in ARROW_TEXT if test(column.type)), None)
    if tag is None:
        return None
    text = pc.cast(pc.cast(column, pa.large_string()), pa.large_binary())
    return pc.binary_join_element_wise(pa.scalar(tag, pa.large_binary()), text,
                                       pa.scalar(b"", pa.large_binary())).to_pylist()


@dataclass(frozen=True)
class NumberedKeys:
    """A relation's join keys as `distinct_encoded` numbers them: what every PSI works on."""

    rows: np.ndarray  # per row: the index of its key among `distinct`, -1 where a key column is NULL
    distinct: list[bytes]  # the distinct encodings, in order of first appearance


Keys = list[bytes | None] | NumberedKeys  # what a PSI takes: one encoding per row, or those numbered


def distinct_encoded(encoded: Keys) -> tuple[np.ndarray, list[bytes]]:
    """(per row: the index of its key among the distinct keys, -1 for NULL; the distinct keys, in order
    of first appearance). Each PSI hashes or MACs only the distinct keys (a table's rows often repeat a
    key: TPC-H's lineitem a few times per order key, millions of times per nation key). Keys that
    `numbered_keys` already numbered pass through."""
    if isinstance(encoded, NumberedKeys):
        return encoded.rows, encoded.distinct
    coded = pc.dictionary_encode(pa.array(encoded, type=pa.large_binary()))  # exact bytes; NULL stays NULL
    rows = coded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return rows, coded.dictionary.to_pylist()


def numbered_keys(table: pa.Table, columns: tuple[str, ...]) -> NumberedKeys:
    """`distinct_encoded(encode_keys(table, columns))`, with one key column numbered by its values in
    Arrow first, so only the distinct values are encoded (TPC-H's 3·10^6 lineitem order keys hold
    ~8·10^5 values): no Python object per row."""
    column = table.column(columns[0])
    if len(columns) != 1 or pt.is_dictionary(column.type):
        return NumberedKeys(*distinct_encoded(encode_keys(table, columns)))
    try:
        coded = pc.dictionary_encode(column.combine_chunks())
    except pa.ArrowNotImplementedError:  # a type Arrow cannot hash: encode every row
        return NumberedKeys(*distinct_encoded(encode_keys(table, columns)))
    rows = coded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    distinct = _encode_in_arrow(coded.dictionary)  # an integer's or a string's text: distinct values stay apart
    if distinct is not None:
        return NumberedKeys(rows, distinct)
    of_value, distinct = distinct_encoded(encode_keys(pa.table({"v": coded.dictionary}), ("v",)))  # NaNs alike
    return NumberedKeys(per_row(rows, of_value), distinct)


def per_row(rows: np.ndarray, of_distinct: np.ndarray) -> np.ndarray:
    """`of_distinct[i]` for each row's distinct key i (`distinct_encoded`), -1 for a NULL row."""
    out = np.full(len(rows), -1, dtype=np.int64)
    valid = rows >= 0
    out[valid] = of_distinct[rows[valid]]
    return out


def encode_keys(table: pa.Table, columns: tuple[str, ...]) -> list[bytes | None]:
    """One encoding per row; None where any key is NULL."""
    if len(columns) == 1:
        fast = _encode_in_arrow(table.column(columns[0]))
        if fast is not None:
            return fast
    encoders = [_family(table.schema.field(c).type) for c in columns]
    values = [table.column(c).to_pylist() for c in columns]
    if len(columns) == 1:
        enc = encoders[0]
        return [None if v is None else enc(v) for v in values[0]]
    out: list[bytes | None] = []
    for row in zip(*values):
        if any(v is None for v in row):
            out.append(None)
            continue
        parts = [e(v) for e, v in zip(encoders, row)]
        out.append(b"".join(len(p).to_bytes(4, "big") + p for p in parts))
    return out


decimal.getcontext().prec = max(decimal.getcontext().prec, 50)
