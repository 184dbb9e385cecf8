"""Round 14's red team, continued (issue 16): a scalar subquery read anywhere but the SELECT list was not
thresholded, so a condition on a lone row's aggregate read it as surely as an output would.

Leaks found and fixed, each at its class (planner/subqueries.py, tree.py, place_threshold.py, gather.py,
place_local.py, __init__.py):
1. WHERE / HAVING / an inner join's ON: `WHERE (SELECT SUM(o.amount) ... WHERE o.customer_id = 1) > 700`
   returned rows and `> 800` none, a binary search for one order's amount; the correlated form (`=
   c.id`) named customer 1, a correlated COUNT `= 1` named the customers with one order. Every subquery
   the user wrote is now thresholded wherever it is read: NULL below the threshold, for COUNT too (an
   empty group reads as a hidden one). An ON's subquery was also dropped by the spine (a wrong answer).
2. IN / EXISTS / ANY / ALL: `700 < ANY (SELECT SUM(o.amount) ... GROUP BY o.customer_id)` was true through
   customer 1's lone order; an aggregating subquery's groups are now thresholded there too. A per-row
   comparison (`EXISTS (... AND o.amount > 700)`) stays refused by the grant (PLAINTEXT_AFTER_AGGREGATE).
3. A query of the shop alone (pushed down whole), a PSI member set and a query the issuer computes itself
   (PLAINTEXT grants) thresholded only their own aggregate: `SELECT COUNT(*) FROM shop.orders o WHERE
   (SELECT SUM(...)) > 700` read the lone order the same way. Under DP the pushed-down query let such an
   exact inner aggregate choose the noised count's rows: refused now, as the translation refuses it.
Small ones beside them: `SELECT (SELECT SUM(...))` without FROM was an InternalError (KeyError in
threshold_pushdown); a GROUP BY key with a subquery passed `check` and failed at run time (ProtocolError),
now refused at plan time.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import NotSupportedError, PolicyViolation

LONE = "(SELECT SUM(o.amount) FROM shop.orders o WHERE o.customer_id = 1)"  # one order, of 777.0
ENOUGH = "(SELECT SUM(o.amount) FROM shop.orders o WHERE o.customer_id > 1)"  # twelve orders, 120 in all
TABLES = {
    "bank": {"customers": pa.table({"id": pa.array(range(1, 13), pa.int64()),
                                    "region": ["north"] * 6 + ["south"] * 6})},
    "shop": {"orders": pa.table({"order_id": pa.array(range(1, 14), pa.int64()),
                                 "customer_id": pa.array([1] + [2] * 4 + [3] * 4 + [4] * 4, pa.int64()),
                                 "amount": pa.array([777.0] + [10.0] * 12)})},
}


@pytest.fixture(scope="module")
def lone(tmp_path_factory, federation_writer, grants_for):
    """Customer 1 has one order (777.0), below the threshold; customers 2-4 four orders each."""
    grants = grants_for(("bank", ("shop.orders.customer_id",), "PLAINTEXT_AFTER_COMPARE"),
                        ("shop", ("bank.customers.id", "bank.customers.region"), "PLAINTEXT_AFTER_COMPARE"),
                        ("bank", ("shop.orders.amount", "shop.orders.order_id"), "PLAINTEXT_AFTER_AGGREGATE"))
    directory = tmp_path_factory.mktemp("attacks_s14b")
    federation_writer(directory, TABLES, grants, parties=("bank", "shop"))
    with Engine(directory / "federation.toml", timeout=120) as engine:
        yield engine


@pytest.fixture(scope="module")
def plain(tmp_path_factory, federation_writer, plaintext_grants):
    """The same tables, every column PLAINTEXT to the other party: queries the issuer may compute itself."""
    directory = tmp_path_factory.mktemp("attacks_s14b_plain")
    federation_writer(directory, TABLES, plaintext_grants(("bank", "shop")), parties=("bank", "shop"))
    with Engine(directory / "federation.toml", timeout=120) as engine:
        yield engine


# -- 1. WHERE, HAVING, ON: a condition on a lone row's aggregate ---------------------------------------
@pytest.mark.parametrize("sql", [
    f"SELECT c.id FROM bank.customers c WHERE {LONE} > 700",
    f"SELECT c.id FROM bank.customers c WHERE {LONE} > 800",
    "SELECT c.id FROM bank.customers c WHERE (SELECT SUM(o.amount) FROM shop.orders o WHERE o.customer_id = c.id) > 700",
    "SELECT c.id FROM bank.customers c WHERE (SELECT COUNT(*) FROM shop.orders o WHERE o.customer_id = c.id) = 1",
    f"SELECT c.region, COUNT(*) AS n FROM bank.customers c GROUP BY c.region HAVING {LONE} > 700",
    f"SELECT c.region FROM bank.customers c GROUP BY c.region HAVING MAX(c.id) + {LONE} > 700",
    f"SELECT c.id FROM bank.customers c JOIN bank.customers d ON c.id = d.id AND {LONE} > 700",
    f"SELECT c.id FROM bank.customers c JOIN shop.orders p ON p.customer_id = c.id WHERE {LONE} > 700",
    f"SELECT c.id FROM (SELECT c.id FROM bank.customers c WHERE {LONE} > 700) c",
    "SELECT c.id FROM bank.customers c WHERE 700 < ANY (SELECT SUM(o.amount) FROM shop.orders o GROUP BY o.customer_id)",
    "SELECT c.id FROM bank.customers c WHERE NOT 700 > ALL (SELECT SUM(o.amount) FROM shop.orders o "
    "GROUP BY o.customer_id)",
    # the subquery does not aggregate, its derived table does: that aggregate is the one read
    "SELECT c.id FROM bank.customers c WHERE 700 < (SELECT t.s FROM (SELECT SUM(p.amount) AS s "
    "FROM shop.orders p WHERE p.customer_id = 1) t)",
])
def test_a_condition_on_a_lone_rows_aggregate_reads_nothing(lone, oracle_for, sql):
    """Every one of these returned rows exactly when order 1's amount passed the condition."""
    assert lone.execute(sql, "bank").table.num_rows == 0
    oracle_for(lone).check(sql, "bank")


@pytest.mark.parametrize("sql, rows", [
    (f"SELECT c.id FROM bank.customers c WHERE {ENOUGH} > 100", 12),
    (f"SELECT c.region, COUNT(*) AS n FROM bank.customers c GROUP BY c.region HAVING {ENOUGH} > 100", 2),
    (f"SELECT c.id FROM bank.customers c JOIN bank.customers d ON c.id = d.id AND {ENOUGH} > 100", 12),
    ("SELECT c.id FROM bank.customers c WHERE (SELECT COUNT(*) FROM shop.orders o WHERE o.customer_id = c.id) = 4", 3),
])
def test_a_condition_on_enough_rows_is_answered(lone, oracle_for, sql, rows):
    assert oracle_for(lone).check(sql, "bank").num_rows == rows


def test_a_correlated_count_reads_null_for_empty_and_small_groups_alike(lone, oracle_for):
    """Customers 5-12 have no order, customer 1 one: both read NULL, so IS NULL cannot tell them apart."""
    sql = "SELECT c.id FROM bank.customers c WHERE (SELECT COUNT(*) FROM shop.orders o WHERE o.customer_id = c.id) IS NULL"
    got = oracle_for(lone).check(sql, "bank")
    assert sorted(got.column("id").to_pylist()) == [1, *range(5, 13)]


def test_a_case_on_a_lone_rows_aggregate_reads_null(lone, oracle_for):
    sql = f"SELECT c.id, CASE WHEN {LONE} > 700 THEN 1 ELSE 0 END AS f FROM bank.customers c"
    assert set(oracle_for(lone).check(sql, "bank").column("f").to_pylist()) == {0}


def test_an_outer_joins_on_with_a_subquery_is_refused_at_plan_time(lone, assert_refused):
    assert_refused(lone, f"SELECT c.id FROM bank.customers c LEFT JOIN bank.customers d ON c.id = d.id AND {LONE} > 7",
                   "bank", NotSupportedError, "LEFT JOIN")


# -- 2. IN / EXISTS: a per-row comparison is the grant's to allow --------------------------------------
@pytest.mark.parametrize("sql", [
    "SELECT c.id FROM bank.customers c WHERE EXISTS (SELECT 1 FROM shop.orders o WHERE o.customer_id = c.id "
    "AND o.amount > 700)",
    "SELECT c.id FROM bank.customers c WHERE c.id IN (SELECT o.customer_id FROM shop.orders o WHERE o.amount > 700)",
])
def test_a_per_row_comparison_in_a_subquery_is_refused_by_the_grant(lone, assert_refused, sql):
    assert_refused(lone, sql, "bank", PolicyViolation, "shop.orders.amount")


# -- 3. a query of the shop alone, and one the issuer computes itself ----------------------------------
@pytest.mark.parametrize("sql", [
    f"SELECT COUNT(*) AS n FROM shop.orders o WHERE {LONE} > 700",
    f"SELECT SUM(p.amount) AS s FROM shop.orders p HAVING {LONE} > 700",
    "SELECT COUNT(*) AS n FROM shop.orders o WHERE 700 < (SELECT t.s FROM (SELECT SUM(p.amount) AS s "
    "FROM shop.orders p WHERE p.customer_id = 1) t)",
    "WITH t AS (SELECT * FROM shop.orders) SELECT COUNT(*) AS n FROM shop.orders o "
    "WHERE (SELECT SUM(t.amount) FROM t WHERE t.customer_id = 1) > 700",
])
def test_a_single_party_query_thresholds_its_subqueries(lone, oracle_for, sql):
    assert lone.execute(sql, "bank").table.num_rows == 0
    oracle_for(lone).check(sql, "bank")


def test_a_single_party_querys_correlated_count_reads_null_below_the_threshold(lone, oracle_for):
    """13 orders counted told that customer 1 has one order (12 without it): its count reads NULL now."""
    sql = ("SELECT COUNT(*) AS n FROM shop.orders o WHERE (SELECT COUNT(*) FROM shop.orders p "
           "WHERE p.customer_id = o.customer_id) = 1 OR o.customer_id > 1")
    assert oracle_for(lone).check(sql, "bank").column("n").to_pylist() == [12]


@pytest.mark.parametrize("sql, want", [(f"SELECT {LONE} AS s", [None]), (f"SELECT {ENOUGH} AS s", [120])])
def test_a_select_without_from_thresholds_its_subquery(lone, oracle_for, sql, want):
    """It was an InternalError (KeyError 'from_' in threshold_pushdown)."""
    assert oracle_for(lone).check(sql, "bank").column("s").to_pylist() == want


@pytest.mark.parametrize("sql", [
    f"SELECT c.region, COUNT(*) AS n FROM bank.customers c GROUP BY c.region HAVING {LONE} > 700",
    f"SELECT c.region, COUNT(*) AS n FROM bank.customers c JOIN shop.orders p ON p.customer_id = c.id "
    f"GROUP BY c.region HAVING {LONE} > 700",
])
def test_the_issuers_own_computation_thresholds_subqueries(plain, oracle_for, sql):
    plan = plain.plan(sql, "bank")
    assert any("computed at bank in plaintext" in note for note in plan.physical.notes)
    assert plain.execute(sql, "bank").table.num_rows == 0
    oracle_for(plain).check(sql, "bank")


# -- small ones: check = execution ---------------------------------------------------------------------
@pytest.mark.parametrize("sql", [
    f"SELECT c.region, COUNT(*) AS n FROM bank.customers c JOIN shop.orders p ON p.customer_id = c.id "
    f"GROUP BY c.region, {LONE}",
])
def test_a_group_by_key_with_a_subquery_is_refused_at_plan_time(lone, assert_refused, sql):
    """It passed `check` and failed at run time: ProtocolError ("o.amount is not a column of the child")."""
    assert_refused(lone, sql, "bank", NotSupportedError, "GROUP BY")



def test_a_psi_members_aggregate_is_thresholded(plain, oracle_for):
    """A member set pushed down to its owner for the PSI (the spine): customer 1 was a member by its lone
    order's amount."""
    sql = ("SELECT c.id FROM bank.customers c WHERE c.id IN (SELECT o.customer_id FROM shop.orders o "
           "GROUP BY o.customer_id HAVING SUM(o.amount) > 700)")
    assert "PSI" in plain.explain(sql, "bank")
    assert plain.execute(sql, "bank").table.num_rows == 0
    oracle_for(plain).check(sql, "bank")


def test_under_dp_a_single_partys_exact_inner_aggregate_is_refused(tmp_path, make_federation, plaintext_grants,
                                                                  bank_dp, assert_refused):
    """The noised count's rows were chosen by an exact inner aggregate (the translation refused it; the
    pushdown did not): order 1's amount moved the count by every row, far beyond the declared bound."""
    with Engine(make_federation(tmp_path, plaintext_grants() + bank_dp), timeout=60) as engine:
        assert_refused(engine, f"SELECT COUNT(*) AS n FROM shop.orders p WHERE {LONE} > 700", "bank",
                       NotSupportedError, "inner aggregate")
