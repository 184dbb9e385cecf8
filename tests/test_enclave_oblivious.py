"""Oblivious operators against plaintext references (plain Python, no pandas), and their access
pattern: the compare-exchange sequence is the same for any two inputs of the same size."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from sqlsecure.errors import DataError, ProgrammingError
from sqlsecure.executors.tee.oblivious import (
    AccessTrace, bitonic_sort, group_by, order_and_limit, sortable, unsortable,
)
from sqlsecure.executors.tee.program import EnclaveProgram, evaluate

INT64 = st.integers(-(2**63), 2**63 - 1)
SMALL = st.integers(-3, 3)
FLOAT = st.floats(allow_nan=False, allow_infinity=True, width=64)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(INT64, SMALL, FLOAT), max_size=70), st.lists(st.booleans(), min_size=3, max_size=3))
def test_bitonic_sort_matches_sorted(rows, desc):
    cols = [np.array([r[i] for r in rows], dtype=np.int64 if i < 2 else np.float64) for i in range(3)]
    payload = np.arange(len(rows), dtype=np.int64)
    keys, (perm,) = bitonic_sort(cols, [payload], descending=desc)

    def key(r):
        return tuple(-v if d else v for v, d in zip(r, desc))
    expected = sorted((tuple(float(x) if i == 2 else int(x) for i, x in enumerate(r)) for r in rows), key=key)
    got = list(zip(*(k.tolist() for k in keys))) if rows else []
    assert [key(r) for r in got] == [key(r) for r in expected]
    assert sorted(perm.tolist()) == list(range(len(rows)))
    for k, c in zip(keys, cols):  # the payload followed its row
        assert np.array_equal(k.view(np.int64), c[perm].view(np.int64)) or np.array_equal(k, c[perm])


def test_sortable_is_order_preserving_and_invertible():
    x = np.array([-np.inf, -1e300, -2.5, -0.0, 0.0, 1e-310, 3.0, np.inf])
    s = sortable(x)
    assert np.all(np.diff(s) >= 0) and s[3] == s[4]
    assert np.array_equal(unsortable(s, np.float64), x + 0.0)


def reference_group_by(keys, values, min_group_size=1):
    groups = defaultdict(list)
    for row in zip(*keys, values):
        groups[row[:-1]].append(row[-1])
    return {k: (len(v), sum(v), sum(v) / len(v), min(v), max(v)) for k, v in groups.items() if len(v) >= min_group_size}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(SMALL, SMALL, st.integers(-10**6, 10**6)), max_size=80), st.integers(1, 4))
def test_group_by_matches_reference(rows, min_group_size):
    k1 = np.array([r[0] for r in rows], dtype=np.int64)
    k2 = np.array([r[1] for r in rows], dtype=np.int64)
    v = np.array([r[2] for r in rows], dtype=np.int64)
    g = group_by([k1, k2], [("count", None), ("sum", v), ("avg", v), ("min", v), ("max", v)],
                 min_group_size=min_group_size)
    got = {(int(a), int(b)): (int(c), int(s), float(m), int(lo), int(hi))
           for a, b, c, s, m, lo, hi, keep in zip(*g.keys, *g.aggregates, g.keep) if keep}
    ref = reference_group_by([k1.tolist(), k2.tolist()], v.tolist(), min_group_size)
    assert got.keys() == ref.keys()
    for k in ref:
        assert got[k][:2] == ref[k][:2] and got[k][3:] == ref[k][3:]
        assert math.isclose(got[k][2], ref[k][2], rel_tol=1e-12)
    assert int(np.count_nonzero(g.last)) == len({(a, b) for a, b, _ in rows})


def test_float_aggregates_and_no_keys():
    v = np.array([0.5, -1.25, 3.0, 2.0])
    g = group_by([], [("sum", v), ("avg", v), ("min", v), ("max", v), ("count", None)])
    assert g.keep.tolist() == [False, False, False, True]
    assert [a[-1] for a in g.aggregates] == [4.25, 4.25 / 4, -1.25, 3.0, 4]
    assert not group_by([], [("count", None)], min_group_size=5, rows=4).keep.any()
    assert group_by([], [("count", None)], rows=4).aggregates[0][-1] == 4


def test_order_and_limit():
    a = np.array([3, 1, 2, 1, 3], dtype=np.int64)
    b = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    out = order_and_limit([a, b], [(a, True), (b, False)], limit=3)
    assert out[0].tolist() == [3, 3, 2] and out[1].tolist() == [0.1, 0.5, 0.3]
    keep = np.array([True, False, True, True, False])
    out = order_and_limit([a, b], [(b, True)], keep=keep)
    assert out[1].tolist() == [0.4, 0.3, 0.1]
    assert order_and_limit([a], [(a, False)], limit=0)[0].tolist() == []
    with pytest.raises(ProgrammingError):
        order_and_limit([a], [], limit=-1)


def reference_program(rows, program):
    """A tiny SQL-like reference over a list of dicts."""
    if program.grouped:
        groups = defaultdict(list)
        for r in rows:
            groups[tuple(r[k] for k in program.group_keys)].append(r)
        out = []
        for key, members in groups.items():
            if len(members) < program.min_group_size:
                continue
            row = dict(zip(program.group_keys, key))
            for a in program.aggregates:
                vals = [m[a.column] for m in members] if a.column else members
                row[a.name] = {"count": len, "sum": sum, "min": min, "max": max,
                               "avg": lambda xs: sum(xs) / len(xs)}[a.kind](vals)
            out.append(row)
        order = program.order or [(k, False) for k in program.group_keys]
    else:
        out = [{c: r[c] for c in (program.select or r.keys())} | {c: r[c] for c, _ in program.order} for r in rows]
        order = program.order
    for column, desc in reversed(order):  # stable sorts, least significant key first
        out.sort(key=lambda r: r[column], reverse=desc)
    return out if program.limit is None else out[:program.limit]


PROGRAMS = [
    EnclaveProgram(group_keys=["a", "b"], aggregates=[("count", None, "n"), ("sum", "x"), ("avg", "y"),
                                                      ("min", "y"), ("max", "x")], min_group_size=3),
    EnclaveProgram(group_keys=["a"], aggregates=[("sum", "y", "s"), ("count", None, "n")], order=[("s", True)],
                   limit=2),
    EnclaveProgram(aggregates=[("count", None), ("max", "y")]),
    EnclaveProgram(select=["x", "a"], order=[("y", True)], limit=7),
    EnclaveProgram(order=[("a", False), ("x", True)]),
]


@pytest.mark.parametrize("program", PROGRAMS)
@pytest.mark.parametrize("n", [0, 1, 37, 300])
def test_program_matches_reference(program, n):
    rng = np.random.default_rng(n)
    cols = {"a": rng.integers(0, 4, n), "b": rng.integers(-1, 2, n), "x": rng.integers(-50, 50, n),
            "y": rng.normal(size=n).round(3)}
    table = evaluate(program, cols)
    rows = [dict(zip(cols, vals)) for vals in zip(*(c.tolist() for c in cols.values()))]
    ref = reference_program(rows, program)
    got = table.to_pylist()
    assert len(got) == len(ref)
    names = table.column_names

    def canon(row, columns):
        return tuple(round(row[c], 6) if isinstance(row[c], float) else row[c] for c in columns)
    keys = [c for c, _ in program.order]
    if keys and all(k in names for k in keys):
        # ties in the sort key may come in any order: compare the key sequence, then (without LIMIT) multisets
        assert [canon(r, keys) for r in got] == [canon(r, keys) for r in ref]
        if program.limit is not None:
            return
    elif keys:  # a float sort key outside the output: no ties, the order is unique
        assert [canon(r, names) for r in got] == [canon(r, names) for r in ref]
    assert sorted(canon(r, names) for r in got) == sorted(canon(r, names) for r in ref)


def test_program_errors():
    with pytest.raises(ProgrammingError, match="reads columns no party sent"):
        evaluate(EnclaveProgram(group_keys=["z"], aggregates=[("count", None)]), {"a": np.arange(3)})
    with pytest.raises(ProgrammingError, match="unknown aggregate"):
        EnclaveProgram(aggregates=[("median", "a")])
    with pytest.raises(ProgrammingError, match="not an output"):
        EnclaveProgram(group_keys=["a"], aggregates=[("count", None)], order=[("b", False)])
    with pytest.raises(DataError, match="overflow"):
        evaluate(EnclaveProgram(aggregates=[("sum", "a")]), {"a": np.array([2**62, 2**62, 1])})


# --- access pattern ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 13, 64, 100])
def test_sort_access_pattern_is_data_independent(n):
    rng = np.random.default_rng(n)
    traces = []
    for keys in ([np.arange(n), np.zeros(n, np.int64)],                 # already sorted
                 [np.arange(n)[::-1].copy(), rng.integers(-9, 9, n)],   # reversed
                 [rng.integers(-(2**63), 2**63 - 1, n), rng.integers(0, 2, n)]):
        trace = AccessTrace()
        bitonic_sort(keys, [rng.normal(size=n)], descending=[False, True], trace=trace)
        traces.append(trace)
    assert traces[0].pairs() == traces[1].pairs() == traces[2].pairs()
    assert len({t.digest() for t in traces}) == 1
    size = 1 << max(0, (n - 1).bit_length())
    lg = size.bit_length() - 1
    assert traces[0].compare_exchanges == size * lg * (lg + 1) // 4
    assert all(lo < hi for lo, hi in traces[0].pairs())


def test_program_access_pattern_is_data_independent():
    """The whole grouped program (sort, group marks, scans, ordering) traces identically for inputs of
    the same size; only the final cut depends on the result size (which the recipient learns anyway)."""
    n = 200
    program = EnclaveProgram(group_keys=["a", "b"], aggregates=[("sum", "x"), ("max", "y"), ("count", None, "n")],
                             order=[("n", True)], min_group_size=2)
    rng = np.random.default_rng(7)
    digests = set()
    for cols in ({"a": np.zeros(n, np.int64), "b": np.zeros(n, np.int64), "x": np.zeros(n, np.int64),
                  "y": np.zeros(n)},
                 {"a": rng.integers(0, 1000, n), "b": rng.integers(0, 1000, n), "x": rng.integers(-9, 9, n),
                  "y": rng.normal(size=n)}):
        trace = AccessTrace(keep_pairs=False)
        evaluate(program, cols, trace=trace)
        cut = [e for e in trace.events if e[0] == "cut"]
        assert len(cut) == 1
        digests.add(tuple(e for e in trace.events if e[0] != "cut") + (trace.compare_exchanges,))
    assert len(digests) == 1
