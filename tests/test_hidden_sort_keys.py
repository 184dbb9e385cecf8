"""An ORDER BY key that is no output (a hidden sort key) granted only REVEAL_RANK: the issuer learns its
rank, never its values (it was revealed in clear where a party computed the outputs, and HE opened its
sums at the group party); the order, ties and NULL placement stay the query's."""

import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import PolicyViolation
from sqlsecure.planner.physical import Compute

KEYS = (("bank", ("shop.orders.customer_id",), "PLAINTEXT_AFTER_JOIN"),
        ("shop", ("bank.customers.id",), "PLAINTEXT_AFTER_JOIN"),
        ("bank", ("shop.orders.amount",), "REVEAL_RANK"),
        ("bank", ("shop.orders.order_id", "shop.orders.category"), "PLAINTEXT"))
JOIN = "FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id"


@pytest.fixture(scope="module", params=["auto", "he"])
def ranked(request, tmp_path_factory, make_federation, grants_for):
    path = make_federation(tmp_path_factory.mktemp(f"rank-{request.param}"), grants=grants_for(*KEYS),
                           parties=("bank", "shop"), min_group_size=0, group_sums=request.param)
    with Engine(path) as engine:
        yield engine


def ordered_like_duckdb(engine, oracle_for, sql: str) -> None:
    """The engine's rows in DuckDB's order (the first output unique, so the order is exact)."""
    want = oracle_for(engine).con.sql(sql).to_arrow_table()
    assert engine.execute(sql, "bank").table.column(0).to_pylist() == want.column(0).to_pylist()


@pytest.mark.parametrize("order", ["o.amount", "o.amount DESC", "o.amount DESC NULLS LAST", "o.amount NULLS FIRST",
                                   "o.amount * 2 DESC, o.order_id", "NULLIF(o.amount, 10) NULLS FIRST, o.order_id"])
def test_a_hidden_key_computed_at_its_owner_is_revealed_as_its_rank(ranked, oracle_for, order):
    sql = f"SELECT o.order_id {JOIN} ORDER BY {order}"
    ordered_like_duckdb(ranked, oracle_for, sql)
    shop_sql = next(step.sql for step in ranked.plan(sql, "bank").physical.steps if isinstance(step, Compute))
    assert "DENSE_RANK() OVER" in shop_sql and '"o.amount" AS "h0"' not in shop_sql


def test_an_aggregated_hidden_key_at_its_owner_is_ranked(ranked, oracle_for):
    sql = f"SELECT o.category, COUNT(*) AS n {JOIN} GROUP BY o.category ORDER BY SUM(o.amount) DESC"
    ordered_like_duckdb(ranked, oracle_for, sql)
    assert "DENSE_RANK() OVER (ORDER BY SUM(" in ranked.explain(sql, "bank")


def test_he_never_opens_a_rank_only_key(ranked, oracle_for, assert_refused):
    """Class 4 (groups at the bank, sums of the shop's amounts): HE would open SUM(amount) at the bank."""
    sql = f"SELECT c.region, COUNT(*) AS n {JOIN} GROUP BY c.region ORDER BY SUM(o.amount)"
    if ranked.config.group_sums == "he":
        assert_refused(ranked, sql, "bank", PolicyViolation, "may be revealed only as its rank")
        return
    assert "HEU(" not in ranked.explain(sql, "bank") and "SPU(" in ranked.explain(sql, "bank")
    ordered_like_duckdb(ranked, oracle_for, sql)
