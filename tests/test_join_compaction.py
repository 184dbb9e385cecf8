"""A sort-based join whose valid rows can only be one side's (an inner PK-FK join's or a LEFT one's preserving
its many side: that side; a semi- or anti-join: the left) is cut from n + m rows to that side's m
(`program._kept_rows`): the rows shuffled, then a public side marker opened, which shows m ones at random
places (m is public). The operators above then
hold m rows. Answers against DuckDB with the node tables of tests/test_secret_program.py (NULL keys,
repeated many keys, unique keys no many row names, empty sides) and the engine over a federation."""

from __future__ import annotations

import pytest

from sqlsecure.executors.spu import program
from tests.test_secret_pk_join import PK_JOINS, pk_node, tpch, tpch_engine  # noqa: F401 - fixtures
from tests.test_secret_program import (PEOPLE, PEOPLE_COLUMNS, SEMI, VISIT_COLUMNS, VISITS_A,  # noqa: F401
                                       _compare_rows, check, inp)


@pytest.fixture
def opened_rows(monkeypatch) -> list[int]:
    """The row count of every relation the SPU opens, as each compute party holds it."""
    counts, open_result = [], program._open_result

    def counting(s, prog, rel, *args):
        counts.append(rel.n)
        return open_result(s, prog, rel, *args)

    monkeypatch.setattr(program, "_open_result", counting)
    return counts


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("left,right,kind,unique,condition,sql", PK_JOINS)
@pytest.mark.parametrize("empty", [None, 0, 1])
def test_a_join_holds_its_many_sides_rows_only(opened_rows, nparties, left, right, kind, unique, condition, sql,
                                               empty):
    tables = [VISITS_A, PEOPLE]
    if empty is not None:
        tables[empty] = tables[empty].slice(0, 0)
    check(nparties, pk_node(left, right, kind, unique, condition), [VISIT_COLUMNS, PEOPLE_COLUMNS], tables, sql)
    many = tables[left if unique == "right" else right].num_rows
    compacted = kind == "inner" or unique == "right"
    assert set(opened_rows) == {many if compacted else tables[0].num_rows + tables[1].num_rows}


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("kind,null_aware,sql", SEMI)
@pytest.mark.parametrize("empty", [None, 0, 1])
def test_a_semi_or_anti_join_holds_its_left_rows_only(opened_rows, nparties, kind, null_aware, sql, empty):
    tables = [VISITS_A, PEOPLE]
    if empty is not None:
        tables[empty] = tables[empty].slice(0, 0)
    right = {"op": "filter", "child": inp(1), "condition": '"limit_" > 2'}
    root = {"op": "join", "kind": kind, "left": inp(0), "right": right, "left_keys": ['"pid"'],
            "right_keys": ['"id"'], "condition": None, "null_aware": null_aware}
    check(nparties, root, [VISIT_COLUMNS, PEOPLE_COLUMNS], tables, sql)
    assert opened_rows == [tables[0].num_rows] * nparties


GROUPED_OVER_INNER = ("SELECT t.n, COUNT(*) AS k FROM (SELECT o.o_custkey, COUNT(*) AS n FROM shop.orders o JOIN "
                      "bank.customer c ON o.o_custkey = c.c_custkey WHERE o.o_amount > c.c_age GROUP BY o.o_custkey) t "
                      "GROUP BY t.n ORDER BY k DESC, t.n LIMIT 2")
DISTINCT_OVER_LEFT = ("SELECT DISTINCT t.n FROM (SELECT o.o_custkey, COUNT(c.c_age) AS n FROM shop.orders o LEFT JOIN "
                      "bank.customer c ON o.o_custkey = c.c_custkey GROUP BY o.o_custkey) t")


@pytest.mark.parametrize("sql,issuer", [(GROUPED_OVER_INNER, "shop"), (DISTINCT_OVER_LEFT, "shop")])
def test_operators_over_a_compacted_join_match_duckdb(tpch, sql, issuer):
    tpch.check(sql, issuer)


def test_explain_says_the_join_is_compacted(tpch):
    text = tpch.engine.explain(GROUPED_OVER_INNER, "shop")
    assert "then compacted to the m rows of its other side (shuffled, each row's side opened: m is public)" in text
