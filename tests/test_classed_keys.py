"""The SPU's sorts compare a classed integer key on its published width (issue 16 speed, TPC-H Q13).

A PK-FK join's sort (`secret_relation.pk_join`) and a GROUP BY's (`secret_relation.aggregate`) compared
every key as a 64-bit ring value, each its own comparison column. Their 0/1 flags and the join's group
number (at most n_u + 2) have known widths, and an integer key whose values are an input column's (as
they are, or a MIN/MAX of them) lies in its owner's published class, |v| < 2^M, which the owner checks
before sharing: offset by 2^M it is compared on M + 2 bits (`program.key_classes`), so the join's and
the group's keys pack into one comparison column with the sort's tiebreak. Rows that join or group
nothing (invalid, NULL keys) compare their key as 0. Checked against DuckDB with 2 and 3 parties,
negative keys, NULLs, repeated and dangling keys, empty sides; the widths the sorts receive; which
keys are classed.
"""

import json

import pyarrow as pa
import pytest

from sqlsecure.executors.spu import relational
from sqlsecure.executors.spu.program import parse_program
from tests.conftest import same_multiset
from tests.test_secret_program import inp, oracle, run

VISITS = pa.table({  # pid repeats, is negative, NULL, or names no person
    "pid": pa.array([-7, -7, 3, 0, None, 5, 7, -2, 3, 6, -6, None], pa.int64()),
    "cost": pa.array([1.5, 2.0, 3.25, None, 4.0, 5.5, 0.5, 9.0, 2.5, 1.0, 8.0, 3.0], pa.float64()),
})
PEOPLE = pa.table({  # id unique (NULL once), negative too
    "id": pa.array([-7, -3, 0, 3, None, 7, 11, -11], pa.int64()),
    "age": pa.array([30, 41, 52, None, 19, 64, 27, 38], pa.int64()),
})
VISIT_COLUMNS = [["pid", "int"], ["cost", "fixed"]]
PEOPLE_COLUMNS = [["id", "int"], ["age", "int"]]
CLASSES = [[["pid", 3]], [["id", 4], ["age", 7]]]  # |pid| < 8, |id| < 16, |age| < 128


def classed_program(root: dict, tables: list[pa.Table]) -> tuple[dict, list]:
    """(root, inputs with their classes) for `check`'s program text."""
    columns = {id(VISITS): VISIT_COLUMNS, id(PEOPLE): PEOPLE_COLUMNS}
    return root, [{"columns": columns[id(t)], "classes": CLASSES[0 if t is VISITS else 1]} for t in tables]


def run_classed(nparties: int, root: dict, tables: list[pa.Table], sql: str, empty: int | None = None) -> None:
    """The program with the inputs' published classes equals DuckDB; input `empty` without rows."""
    _, inputs = classed_program(root, tables)
    shared = [t.slice(0, 0) if i == empty else t for i, t in enumerate(tables)]
    got, _ = run(nparties, json.dumps({"inputs": inputs, "root": root}, sort_keys=True), shared)
    want = oracle(sql, shared)
    assert same_multiset(got, want), f"\n got: {got.to_pylist()}\nwant: {want.to_pylist()}"


def join_node(kind: str, unique: str, left: int = 0) -> dict:
    keys = ['"pid"', '"id"'] if left == 0 else ['"id"', '"pid"']
    return {"op": "join", "kind": kind, "left": inp(0), "right": inp(1), "left_keys": [keys[0]],
            "right_keys": [keys[1]], "condition": None, "unique": unique}


JOINS = [  # (kind, unique, tables in order, SQL)
    ("inner", "right", 0, "SELECT * FROM t0 JOIN t1 ON t0.pid = t1.id"),
    ("left", "right", 0, "SELECT * FROM t0 LEFT JOIN t1 ON t0.pid = t1.id"),
    ("left", "left", 1, "SELECT * FROM t0 LEFT JOIN t1 ON t0.id = t1.pid"),
    ("inner", "left", 1, "SELECT * FROM t0 JOIN t1 ON t0.id = t1.pid"),
]


@pytest.mark.parametrize("nparties,empty", [(2, None), (3, 1)])
@pytest.mark.parametrize("kind,unique,order,sql", JOINS)
def test_a_classed_pk_join_matches_duckdb(nparties, kind, unique, order, sql, empty):
    tables = [VISITS, PEOPLE] if order == 0 else [PEOPLE, VISITS]
    run_classed(nparties, join_node(kind, unique, order), tables, sql, empty)


Q13_SHAPE = {  # people LEFT JOIN (visits counted per pid), counted per person, then a histogram
    "op": "aggregate", "keys": [["n", '"n"']], "aggregates": [["people", "COUNT", None, False]], "threshold": None,
    "child": {"op": "project", "columns": [["id", '"id"'], ["n", 'COALESCE("visits", 0)']], "child": {
        "op": "aggregate", "keys": [["id", '"id"']], "threshold": None,
        "aggregates": [["visits", "SUM", '"v"', False], ["oldest", "MAX", '"age"', False]],
        "child": {"op": "join", "kind": "left", "unique": "right", "left": inp(1), "left_keys": ['"id"'],
                  "right_keys": ['"vpid"'], "condition": None, "right": {
                      "op": "aggregate", "child": {"op": "filter", "child": inp(0), "condition": '"cost" > 1.2'},
                      "keys": [["vpid", '"pid"']], "aggregates": [["v", "COUNT", None, False]], "threshold": None}}}},
}
Q13_SQL = ("SELECT n, COUNT(*) AS people FROM (SELECT id, COALESCE(SUM(v), 0) AS n, MAX(age) AS oldest FROM t1 "
           "LEFT JOIN (SELECT pid AS vpid, COUNT(*) AS v FROM t0 WHERE cost > 1.2 GROUP BY pid) ON id = vpid "
           "GROUP BY id) GROUP BY n")


@pytest.mark.parametrize("nparties,empty", [(2, None), (3, None), (2, 0), (3, 1)])
def test_q13s_shape_over_classed_keys_matches_duckdb(nparties, empty):
    """The aggregate's key, the join's keys and the GROUP BY id are classed; the filter leaves invalid rows."""
    run_classed(nparties, Q13_SHAPE, [VISITS, PEOPLE], Q13_SQL, empty)


def recorded_widths(monkeypatch) -> list:
    """The `key_bits` of every `relational.sort` from here on (party 0's), in order."""
    seen = []
    real = relational.sort

    def recording(s, keys, payload=(), descending=None, key_bits=None, first=None):
        if s.index == 0:
            seen.append(list(key_bits) if key_bits is not None else None)
        return real(s, keys, payload, descending, key_bits, first)

    monkeypatch.setattr(relational, "sort", recording)
    return seen


def test_the_sorts_compare_classed_keys_on_their_widths(monkeypatch):
    """The join sorts (group, key + 16, side) on (5, 6, 2) bits, one packed column with the tiebreak; the GROUP
    BYs sort (invalid, NULL flag, key + 16) on (2, 2, 6) bits; the histogram's key is a SUM: 64 bits."""
    seen = recorded_widths(monkeypatch)
    run_classed(2, Q13_SHAPE, [VISITS, PEOPLE], Q13_SQL)
    assert [2, 2, 5] in seen  # the visits grouped by pid: |pid| < 8
    assert [5, 6, 2] in seen  # the join: group in [1, 14], (key + 16) within 6 bits (|v| < 16), the side tag
    assert [2, 2, 6] in seen  # people grouped by id: |id| < 16
    assert [2, 2, 64] in seen  # the histogram of a SUM: no class


def _parsed(root: dict, tables) -> dict:
    _, inputs = classed_program(root, tables)
    return parse_program(json.dumps({"inputs": inputs, "root": root}))


def test_which_keys_are_classed():
    """Classed: an input column as it is, renamed by a projection, a GROUP BY key, a MIN / MAX of one. Not: an
    expression of one, a SUM, a column without a class, a side whose key has none."""
    root = _parsed(Q13_SHAPE, [VISITS, PEOPLE]).root
    outer, project = root, root.children[0]
    by_id = project.children[0]
    join = by_id.children[0]
    assert join.args["key_classes"] == [4] and by_id.args["key_classes"] == [4]
    assert join.children[1].args["key_classes"] == [3]
    assert outer.args["key_classes"] == [None]
    expression = {**join_node("inner", "right"), "left_keys": ['"pid" + 1']}
    assert _parsed(expression, [VISITS, PEOPLE]).root.args["key_classes"] == [None]
    renamed = {"op": "project", "child": inp(1), "columns": [["k", '"id"'], ["a", '"age"']]}
    extreme = {"op": "aggregate", "child": inp(0), "keys": [], "threshold": None,
               "aggregates": [["top", "MAX", '"pid"', False], ["total", "SUM", '"pid"', False]]}
    for right_key, want in (('"k"', [4]), ('"a"', [7])):
        node = {**join_node("inner", "right"), "right": renamed, "right_keys": [right_key]}
        assert _parsed(node, [VISITS, PEOPLE]).root.args["key_classes"] == want
    for key, want in (('"top"', [3]), ('"total"', [None])):
        node = {"op": "join", "kind": "inner", "unique": "left", "left": extreme, "right": inp(1),
                "left_keys": [key], "right_keys": ['"id"'], "condition": None}
        assert _parsed(node, [VISITS, PEOPLE]).root.args["key_classes"] == [max(want[0], 4) if want[0] else None]
    unclassed = parse_program(json.dumps({"inputs": [{"columns": VISIT_COLUMNS}, {"columns": PEOPLE_COLUMNS}],
                                          "root": join_node("inner", "right")}))
    assert unclassed.root.args["key_classes"] == [None]
