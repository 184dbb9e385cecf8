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


CLASS_4_KEY_ONLY_HE_CAN_RUN = ("SELECT c.region || '-x' AS k, SUM(o.amount), COUNT(o.amount) FROM bank.customers c "
                               "JOIN shop.orders o ON c.id = o.customer_id GROUP BY 1")


def test_cost_model_picks_among_devices_that_can_run_the_query(engine, oracle):
    """group_sums = "auto" (the default): the SPU is cheaper here but cannot evaluate ||, so HE runs it."""
    assert engine.config.group_sums == "auto"
    oracle.check(CLASS_4_KEY_ONLY_HE_CAN_RUN)
    explained = engine.explain(CLASS_4_KEY_ONLY_HE_CAN_RUN, "bank")
    assert "only HE can run it" in explained and "||" in explained


def test_choose_keeps_the_priced_device_when_both_can_or_neither_can():
    from sqlsecure.planner.cost import Estimate, choose

    spu = Estimate("spu", 2.0, 1.0, "priced")
    assert choose(spu, {}) is spu
    assert choose(spu, {"he": "x", "spu": "y"}) is spu
    assert choose(spu, {"spu": "it cannot evaluate a || b on shares"}).engine == "he"
    assert choose(Estimate("he", 1.0, 2.0, "priced"), {"he": "MAX"}).engine == "spu"


def test_spu_capability_is_deny_by_default():
    import sqlglot

    from sqlsecure.executors.spu.stage import spu_cannot_evaluate

    def part(sql):
        found = spu_cannot_evaluate(sqlglot.parse_one(sql, read="duckdb"))
        return found.sql(dialect="duckdb") if found is not None else None

    assert part("SUM(CASE WHEN a > 1 THEN b * 2 ELSE 0 END)") is None
    assert part("a || '-x'") == "a || '-x'"
    assert part("UPPER(a)") == "UPPER(a)"
    assert part("CAST(a AS TEXT)") == "CAST(a AS TEXT)"
