"""`encode_keys` of one integer or string column runs in Arrow's kernels (issue 16: millions of lineitem keys
per PSI); its bytes must stay exactly the per-value encoding's, or the two parties' keys stop matching."""

import pyarrow as pa
import pytest

from sqlsecure.executors.psi.encoding import _family, encode_keys

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
