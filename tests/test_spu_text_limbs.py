"""A text column's SPU limbs are computed in Arrow and numpy (issue 16: TPC-H Q10 shares ~115k customers'
names, addresses, phones and comments, ~34 limbs a row, which a Python loop over values spent seconds on).
They must stay exactly the per-value definition: each value's UTF-8 bytes, zero-padded to the width, read
7 bytes at a time as big-endian integers; NULL as zeros; longer text refused by name; and the owner's
width class the same as `text_width` of its values."""

import pyarrow as pa
import pytest

from sqlsecure.errors import DataError
from sqlsecure.executors.spu.values import (LIMB_BYTES, encode, shared_kind, text_kind, text_limb_arrays,
                                            text_limbs, text_width)

VALUES = ["", None, "a", "é" * 14, "k" * 28, "ü €\x01z", None, "x" * 7, "y" * 8]


def per_value(values: list, width: int) -> list[list[int]]:
    """The definition, one value at a time."""
    count = -(-width // LIMB_BYTES)
    limbs = [[0] * len(values) for _ in range(count)]
    for i, v in enumerate(values):
        raw = b"" if v is None else v.encode("utf-8").ljust(count * LIMB_BYTES, b"\0")
        for k in range(count if v is not None else 0):
            limbs[k][i] = int.from_bytes(raw[k * LIMB_BYTES:(k + 1) * LIMB_BYTES], "big")
    return limbs


COLUMNS = {
    "plain": pa.array(VALUES, pa.string()),
    "large": pa.array(VALUES, pa.large_string()),
    "chunked": pa.chunked_array([pa.array(VALUES[:3]), pa.array([], pa.string()), pa.array(VALUES[3:])]),
    "sliced": pa.array(["skipped", *VALUES, "skipped too"]).slice(1, len(VALUES)),
    "empty": pa.array([], pa.string()),
    "all null": pa.array([None, None], pa.string()),
}


@pytest.mark.parametrize("name", COLUMNS)
@pytest.mark.parametrize("width", [28, 32, 128, 1024])
def test_limbs_are_the_per_value_definition(name, width):
    column = COLUMNS[name]
    values = column.to_pylist()
    assert [limb.tolist() for limb in text_limb_arrays(column, "t", width)] == per_value(values, width)
    assert text_limbs(values, "t", width) == per_value(values, width)
    limbs, valid = encode(column, text_kind(width) if width > 28 else "text", 16)
    assert [limb.tolist() for limb in limbs] == per_value(values, width)
    assert valid.tolist() == [int(v is not None) for v in values]


def test_many_rows_span_several_chunks():
    values = [None if i % 97 == 0 else "v" * (i % 40) + str(i) for i in range(70_000)]
    got = text_limb_arrays(pa.array(values), "t", 64)
    assert [limb.tolist() for limb in got] == per_value(values, 64)


def test_longer_text_is_refused_by_name():
    with pytest.raises(DataError, match="'notes'.*longer than 28 bytes"):
        text_limb_arrays(pa.array(["ok", "é" * 15]), "notes", 28)


@pytest.mark.parametrize("name", COLUMNS)
def test_width_class_as_text_width(name):
    column = COLUMNS[name]
    assert shared_kind(column, "t") == text_kind(text_width(column.to_pylist(), "t"))
