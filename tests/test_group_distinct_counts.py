"""Distinct values per group for several counted columns at once (issue 16: the group threshold
without one full re-sort of the group keys per counted party).

`relational.group_by(within=[Counted, ...])` counts, per group, the distinct values among the rows
of weight 1 of each counted column: the first rides along the group sort, each further one is
sorted on the group's secret rank packed with its weight and (known-width) value. Every case is
checked against a plaintext reference; the cost against the old way (one whole group sort per
counted column).
"""

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlsecure.executors.spu import arith, relational
from sqlsecure.executors.spu.local import run_spu
from sqlsecure.executors.spu.shares import as_ring, to_signed
from sqlsecure.executors.spu.stage import dense_rows

VALUE_BITS = 4  # the values below lie in [0, 8): `sort`'s key width 4


def _share(s, values, owner=0):
    values = np.asarray(values, dtype=np.int64)
    return arith.share_input(s, owner, as_ring(values) if s.index == owner else None, values.shape)


def reference_distinct_counts(keys, counted) -> dict:
    """Per group (a tuple of key columns' values): for each (weights, values), the number of distinct
    values among the group's rows of weight 1 (0 where it has none)."""
    groups = {}
    for row, key in enumerate(zip(*keys)):
        groups.setdefault(key, []).append(row)
    return {key: tuple(len({int(v[r]) for r in rows if w[r]}) for w, v in counted) for key, rows in groups.items()}


def secure_distinct_counts(nparties, keys, counted, widths) -> dict:
    """The same through `group_by`, opened at the groups' last rows: key -> counts."""
    def program(s):
        within = [relational.Counted(_share(s, w, 1), (_share(s, v, nparties - 1),), widths)
                  for w, v in counted]
        g = relational.group_by(s, [_share(s, k) for k in keys], [("count", None)], within=within)
        kept = relational.compact(s, g.last, [*g.keys, *g.distinct])
        return [to_signed(c) for c in arith.reveal_many(s, kept)]

    opened = run_spu(nparties, program).results[0]
    group_keys, counts = opened[:len(keys)], opened[len(keys):]
    return {tuple(int(k[i]) for k in group_keys): tuple(int(c[i]) for c in counts)
            for i in range(len(group_keys[0]))}


rows_strategy = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1),
                                   *[st.tuples(st.integers(0, 1), st.integers(0, 7)) for _ in range(3)]),
                         min_size=1, max_size=24)


@pytest.mark.parametrize("parties_counted", [1, 2, 3])
@pytest.mark.parametrize("widths", [None, (VALUE_BITS,)])
@settings(max_examples=4, deadline=None)
@given(rows=rows_strategy)
def test_distinct_values_per_group_match_the_reference(parties_counted, widths, rows):
    """Two key columns (the first a NULL flag, as the SPU groups NULL keys), 1-3 counted columns of
    repeated values and zero weights, of unknown and of known width."""
    keys = [np.array([r[i] for r in rows], dtype=np.int64) for i in range(2)]
    counted = [(np.array([r[2 + j][0] for r in rows], dtype=np.int64),
                np.array([r[2 + j][1] for r in rows], dtype=np.int64)) for j in range(parties_counted)]
    assert secure_distinct_counts(2, keys, counted, widths) == reference_distinct_counts(keys, counted)


@pytest.mark.parametrize("nparties", [2, 3])
def test_ties_null_keys_and_groups_without_counted_rows(nparties):
    """Groups whose counted rows all repeat one value (1), have weight 0 only (0), NULL keys as one
    group (key flag 1), and values that tie across groups but count in each."""
    null_key = np.array([1, 1, 0, 0, 0, 0, 0, 0, 1], dtype=np.int64)
    key = np.array([0, 0, 5, 5, 5, 6, 6, 7, 0], dtype=np.int64)
    first = (np.array([1, 1, 1, 1, 1, 0, 0, 1, 1]), np.array([3, 3, 3, 3, 3, 3, 1, 2, 4]))
    second = (np.array([0, 1, 1, 0, 1, 0, 0, 0, 1]), np.array([1, 2, 2, 2, 7, 7, 7, 7, 2]))
    third = (np.array([1, 0, 1, 1, 1, 1, 1, 1, 1]), np.array([6, 6, 6, 6, 6, 6, 6, 6, 6]))
    counted = [first, second, third]
    expected = reference_distinct_counts([null_key, key], counted)
    assert expected == {(1, 0): (2, 1, 1), (0, 5): (1, 2, 1), (0, 6): (0, 0, 1), (0, 7): (1, 0, 1)}
    assert secure_distinct_counts(nparties, [null_key, key], counted, (VALUE_BITS,)) == expected


def test_no_rows_no_groups_and_one_row():
    def program(s):
        empty = arith.public(s, np.zeros(0, np.int64))
        g = relational.group_by(s, [empty], [("count", None)],
                                within=[relational.Counted(empty, (empty,)), relational.Counted(empty, (empty,), (4,))])
        return [len(d) for d in g.distinct]

    assert run_spu(2, program).results[0] == [0, 0]
    counted = [(np.array([1]), np.array([2])), (np.array([0]), np.array([3]))]
    assert secure_distinct_counts(2, [np.array([9])], counted, (VALUE_BITS,)) == {(9,): (1, 0)}


def test_packed_keys_are_equal_exactly_when_their_fields_are():
    """Known widths are packed into one key (unknown ones stay apart), and its order is the fields'."""
    a, b, c = np.array([0, 1, 1, 3, 3]), np.array([1, 0, 1, 1, 1]), np.array([-5, 2, 2, 9, 9])

    def program(s):
        keys, widths = relational.packed_keys(s, [_share(s, a), _share(s, b), _share(s, c)], [3, 2, 64])
        return widths, [to_signed(k) for k in arith.reveal_many(s, keys)]

    widths, (packed, rest) = run_spu(2, program).results[0]
    assert widths == [4, 64]
    assert packed.tolist() == (a * 2 + b).tolist() and rest.tolist() == c.tolist()


def test_dense_rows_keep_equal_rows_equal_and_nulls_null():
    rows = pa.chunked_array([pa.array([40, 7, None, 40], pa.int64()), pa.array([1_000_000, 7], pa.int64())])
    dense = dense_rows(rows)
    values = dense.to_pylist()
    assert values[2] is None and max(v for v in values if v is not None) < len(values)
    kept = [(x, y) for x, y in zip(rows.to_pylist(), values) if x is not None]
    assert len({x for x, _ in kept}) == len({y for _, y in kept})
    assert all((x1 == x2) == (y1 == y2) for x1, y1 in kept for x2, y2 in kept)
    assert dense_rows(pa.chunked_array([], pa.int64())).to_pylist() == []


@pytest.mark.parametrize("widths", [None, (10,)])
def test_further_counted_columns_cost_less_than_a_group_sort_each(widths):
    """Two counted columns in one `group_by` move fewer bytes between the parties than the old way,
    one `group_by` per counted column (each a whole sort of the group keys, carried along)."""
    n = 300
    rng = np.random.default_rng(3)
    key = rng.integers(0, 20, n)
    counted = [(rng.integers(0, 2, n), rng.integers(0, 500, n)) for _ in range(2)]

    def shared(s):
        return _share(s, key), [relational.Counted(_share(s, w, 1), (_share(s, v, 1),), widths) for w, v in counted]

    def together(s):
        k, within = shared(s)
        g = relational.group_by(s, [k], [("count", None)], within=within)
        return [to_signed(d) for d in arith.reveal_many(s, [g.last, *g.distinct])]

    def one_by_one(s):
        k, within = shared(s)
        distinct = [relational.group_by(s, [k], [("count", None)], within=[c]) for c in within]
        return [to_signed(d) for d in arith.reveal_many(s, [distinct[0].last, *(g.distinct[0] for g in distinct)])]

    new, old = run_spu(2, together), run_spu(2, one_by_one)
    assert np.array_equal(new.results[0][0], old.results[0][0])  # the groups' last rows are the same
    last = new.results[0][0] == 1
    for got, want in zip(new.results[0][1:], old.results[0][1:]):
        assert got[last].tolist() == want[last].tolist()
    assert new.party_bytes() < old.party_bytes()
