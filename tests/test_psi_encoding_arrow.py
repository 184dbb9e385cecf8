"""`encode_keys` of one integer or string column runs in Arrow's kernels (issue 16: millions of lineitem keys
per PSI); its bytes must stay exactly the per-value encoding's, or the two parties' keys stop matching.
`numbered_keys` numbers a column's values in Arrow before encoding only the distinct ones: its rows and
distinct keys must be exactly `distinct_encoded` of the per-row encoding."""

import datetime
import decimal

import pyarrow as pa
import pytest

from sqlsecure.executors.psi.encoding import _family, distinct_encoded, encode_keys, numbered_keys

INTEGERS = [None, 0, 1, -1, 127, -128]
COLUMNS = {
    **{str(t): pa.array(INTEGERS, t) for t in (pa.int8(), pa.int16(), pa.int32(), pa.int64())},
    "uint64": pa.array([None, 0, 2**64 - 1, 2**63], pa.uint64()),
    "string": pa.array(["a", None, "", "é €", "5"], pa.string()),
    "large_string": pa.array(["a", None, "", "é €"], pa.large_string()),
    "chunked": pa.chunked_array([pa.array([1, None], pa.int32()), pa.array([], pa.int32()), pa.array([3], pa.int32())]),
    "empty": pa.array([], pa.int64()),
}


def per_value(column) -> list:
    encode = _family(column.type)
    return [None if v is None else encode(v) for v in column.to_pylist()]


@pytest.mark.parametrize("name", COLUMNS)
def test_the_arrow_encoding_is_the_per_value_encoding(name):
    column = COLUMNS[name]
    assert encode_keys(pa.table({"k": column}), ("k",)) == per_value(column)


def test_integer_and_text_keys_of_one_value_still_differ():
    ints, texts = (encode_keys(pa.table({"k": pa.array(v)}), ("k",)) for v in ([5], ["5"]))
    assert ints == [b"i5"] and texts == [b"s5"]


OTHER_TYPES = {
    "decimal": pa.array([decimal.Decimal("5.50"), None, decimal.Decimal("0.00"), decimal.Decimal("5.50"),
                         decimal.Decimal("-1.25")], pa.decimal128(10, 2)),
    "date": pa.array([datetime.date(1995, 3, 15), None, datetime.date(1995, 3, 15), datetime.date(1, 1, 1)]),
    "timestamp": pa.array([datetime.datetime(2020, 1, 1, 12), datetime.datetime(2020, 1, 1, 12), None],
                          pa.timestamp("us")),
    "float": pa.array([0.0, -0.0, float("nan"), None, 1.5, float("nan"), 0.0], pa.float64()),
    "bool": pa.array([True, None, False, True]),
    "binary": pa.array([b"", b"\x00", None, b"\x00", b"ab"], pa.binary()),
    "dictionary": pa.array(["x", "y", None, "x"]).dictionary_encode(),
    "all null": pa.array([None, None], pa.int64()),
    "repeated": pa.chunked_array([pa.array([7, 3, 7], pa.int64()), pa.array([3, None, 9, 7], pa.int64())]),
}


@pytest.mark.parametrize("name", [*COLUMNS, *OTHER_TYPES])
def test_numbered_keys_are_the_per_row_encodings_numbered(name):
    table = pa.table({"k": {**COLUMNS, **OTHER_TYPES}[name]})
    rows, distinct = distinct_encoded(encode_keys(table, ("k",)))
    numbered = numbered_keys(table, ("k",))
    assert numbered.rows.tolist() == rows.tolist() and numbered.distinct == distinct


def test_numbered_keys_of_several_columns():
    table = pa.table({"a": pa.array([1, 1, None, 1]), "b": pa.array(["x", "x", "y", "z"])})
    rows, distinct = distinct_encoded(encode_keys(table, ("a", "b")))
    numbered = numbered_keys(table, ("a", "b"))
    assert numbered.rows.tolist() == rows.tolist() == [0, 0, -1, 1] and numbered.distinct == distinct
