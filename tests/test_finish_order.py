"""The root ORDER BY: the SPU sorts only where the issuer's Finish cannot (translate.sorted_by_finish).

Without LIMIT / OFFSET and with every key a revealed column, the rows open shuffled and the Finish sorts
them (the same order DuckDB gives); a LIMIT or an OFFSET keeps the oblivious sort on the SPU, so no row
beyond them is opened. A key that is no output column is refused at plan time."""

from __future__ import annotations

import json

import pytest

from sqlsecure.errors import NotSupportedError

from sqlsecure.planner.physical import SecretQuery

Q13_SHAPE = ("SELECT cnt, COUNT(*) AS custdist FROM (SELECT c.id, COUNT(o.order_id) AS cnt FROM bank.customers c "
             "LEFT JOIN shop.orders o ON c.id = o.customer_id GROUP BY c.id) AS t GROUP BY cnt")


def program_ops(engine, sql: str, issuer: str = "bank") -> list[str]:
    """The operators of the query's secret program, root first."""
    steps = engine.plan(sql, issuer).physical.steps
    node = json.loads(next(s for s in steps if isinstance(s, SecretQuery)).program)["root"]
    found, todo = [], [node]
    while todo:
        node = todo.pop()
        found.append(node["op"])
        todo += [node["child"]] if "child" in node else list(node.get("children", ()))
    return found


def test_order_by_revealed_columns_is_the_finish_s(oracle):
    """Q13's shape: no sort on the SPU, and the rows come in DuckDB's order (cnt breaks every tie)."""
    sql = Q13_SHAPE + " ORDER BY custdist DESC, cnt DESC"
    assert "sort" not in program_ops(oracle.engine, sql)
    got = oracle.check(sql)
    assert got.to_pylist() == oracle.expected(sql, "bank").to_pylist()


def test_ascending_order_is_the_finish_s(oracle):
    sql = Q13_SHAPE + " ORDER BY cnt ASC"
    assert "sort" not in program_ops(oracle.engine, sql)
    got = oracle.check(sql)
    assert got.to_pylist() == oracle.expected(sql, "bank").to_pylist()


def test_limit_keeps_the_sort_on_the_spu(oracle):
    """A LIMIT: only the first rows may open, so the SPU sorts."""
    sql = Q13_SHAPE + " ORDER BY custdist DESC, cnt DESC LIMIT 3"
    assert program_ops(oracle.engine, sql)[0] == "sort"
    got = oracle.check(sql)
    assert got.to_pylist() == oracle.expected(sql, "bank").to_pylist()


def test_offset_keeps_the_sort_on_the_spu(oracle):
    sql = Q13_SHAPE + " ORDER BY custdist DESC, cnt DESC LIMIT 100 OFFSET 2"
    assert program_ops(oracle.engine, sql)[0] == "sort"
    oracle.check(sql)


def test_a_key_that_is_no_output_is_refused_at_plan_time(oracle):
    """Only output columns order a cross-party result, so the Finish can always sort what opens."""
    sql = Q13_SHAPE + " ORDER BY COUNT(*) * 2 + cnt DESC"
    with pytest.raises(NotSupportedError, match="orders by its output columns"):
        oracle.engine.plan(sql, "bank")
