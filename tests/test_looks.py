"""Issue 18, "answers that look right": DuckDB's output names, exact decimals on every device, the
group threshold's notice, and the cost model choosing only among devices that can run the query."""

from __future__ import annotations

import pytest

NAMED_LIKE_DUCKDB = [
    "SELECT COUNT(*), SUM(o.amount) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id",
    "SELECT c.region, COUNT(*), AVG(c.income) + 1 FROM bank.customers c JOIN shop.orders o "
    "ON c.id = o.customer_id GROUP BY 1 ORDER BY COUNT(*) DESC",
    "SELECT o.category, MAX(o.amount) * 2, SUM(c.age) AS total FROM bank.customers c "
    "JOIN shop.orders o ON c.id = o.customer_id GROUP BY o.category ORDER BY 2",
    "SELECT COUNT(*), MIN(income), region || '-x' FROM bank.customers GROUP BY region",
    "SELECT SUM(p.premium), COUNT(p.claims) FROM bank.customers c JOIN insurer.policies p ON c.id = p.customer_id",
]


@pytest.mark.parametrize("sql", NAMED_LIKE_DUCKDB)
def test_unnamed_outputs_are_named_as_duckdb_names_them(engine, oracle, sql):
    got = engine.execute(sql, "bank").table
    assert got.column_names == oracle.expected(sql, "bank").column_names
    assert not any(name.startswith("_col_") for name in got.column_names)
