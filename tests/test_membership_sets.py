"""A semi- or anti-join's subquery is pushed down as a set (bench/tpch.py Q4 at SF1 spent most of its
engine time deduplicating 3.8M lineitem keys in Python before the PSI): SELECT DISTINCT at the member's
party, except under a LIMIT, where repeats decide which values are kept. Answers equal the oracle."""

import pytest

from sqlsecure.errors import Error
from sqlsecure.planner import logical
from sqlsecure.planner.build import build_logical
from sqlsecure.planner.parse import load_query

AS_SETS = [  # shop.orders repeats customer_id: each subquery has duplicate member values
    "SELECT c.name FROM bank.customers c WHERE c.id IN (SELECT customer_id FROM shop.orders WHERE amount > 100)",
    "SELECT c.name FROM bank.customers c WHERE c.id NOT IN (SELECT customer_id FROM shop.orders)",
    "SELECT c.name FROM bank.customers c WHERE EXISTS (SELECT 1 FROM shop.orders o WHERE o.customer_id = c.id)",
    "SELECT c.region, COUNT(*) FROM bank.customers c WHERE NOT EXISTS (SELECT 1 FROM shop.orders o "
    "WHERE o.customer_id = c.id AND o.amount > 300) GROUP BY c.region",
    "SELECT c.name FROM bank.customers c WHERE c.id IN (SELECT customer_id FROM shop.orders GROUP BY customer_id "
    "HAVING COUNT(*) > 1)",
]
LIMITED = ("SELECT c.name FROM bank.customers c WHERE c.id IN (SELECT customer_id FROM shop.orders "
           "ORDER BY order_id LIMIT 7)")


def member_selects(engine, sql: str, issuer: str) -> list[str]:
    """The SQL each membership's party is asked to run."""
    tree = load_query(sql, engine.catalog, engine.config.dialect, None, issuer)
    plan = build_logical(tree, engine.catalog, issuer)
    return [m.query.select.sql("duckdb") for node in logical.walk(plan) for m in getattr(node, "memberships", ())]


@pytest.mark.parametrize("sql", AS_SETS)
def test_member_values_are_pushed_down_distinct(oracle, sql):
    selects = member_selects(oracle.engine, sql, "bank")
    assert selects and all(s.startswith("SELECT DISTINCT") for s in selects)
    oracle.check(sql, "bank")


def test_a_limited_subquery_keeps_its_repeats(oracle):
    (select,) = member_selects(oracle.engine, LIMITED, "bank")
    assert not select.startswith("SELECT DISTINCT")
    try:
        oracle.check(LIMITED, "bank")
    except Error:  # refused is fine; a wrong answer is not
        pass
