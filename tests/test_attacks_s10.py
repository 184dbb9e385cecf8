"""Round 10's red team: a hostile analyst at the bank against the operator-by-operator planner (issue 16).

Each leak found is pinned by a test that asserts refusal at plan time (PEP 249 class, the rule named, `check`
agreeing) or an answer that carries nothing beyond the grants; attempts the engine already stops are kept
only where they pin a non-obvious rule. The federation is `tests/test_padded_aggregates.py`'s (the bank and
the shop): the shop's order ids are PLAINTEXT_AFTER_AGGREGATE to the bank, its amounts and notes
PLAINTEXT_AFTER_COMPARE, its customer ids and priorities PLAINTEXT_AFTER_JOIN, its regions ENCRYPTED_ONLY.

Leaks found, all of one class (a query that fails on one row's value tells the issuer about that row, before
the group threshold drops its group or DP noises it): 1, a division by zero and LN / SQRT / ... outside their
domain, or CHR, MAKE_DATE, STRPTIME, UNHEX of a value they reject (fixed: planner/ccl.py
`_check_domain`); 2, a failing narrowing CAST and 3, the SPU's guards of
approximate roundings and comparisons (pinned, xfail).
"""

import math

import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import PolicyViolation
from tests.test_padded_aggregates import padded_grants, padded_tables

JOIN = "FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id"


@pytest.fixture(scope="module")
def fed(tmp_path_factory, tables, federation_writer, grants_for):
    directory = tmp_path_factory.mktemp("attacks_s10")
    federation_writer(directory, padded_tables(tables), padded_grants(grants_for, ("bank", "shop")),
                      parties=("bank", "shop"))
    with Engine(directory / "federation.toml", timeout=120) as engine:
        yield engine


@pytest.fixture(scope="module")
def lone_order(tables) -> tuple[int, int]:
    """(customer id, order id) of a bank customer with exactly one order: a group below the threshold."""
    ids = tables["bank"]["customers"].column("id").to_pylist()
    orders = tables["shop"]["orders"]
    per_customer: dict[int, list[int]] = {}
    for customer, order in zip(orders.column("customer_id").to_pylist(), orders.column("order_id").to_pylist()):
        per_customer.setdefault(customer, []).append(order)
    return next((c, found[0]) for c, found in sorted(per_customer.items(), key=lambda kv: str(kv[0]))
                if c is not None and len(found) == 1 and ids.count(c) == 1)


# -- leak 1: a data-dependent failure reveals a row's value below the group threshold -------------------------
# SUM(o.order_id // (o.order_id - k)) over one customer's single order: its group is dropped (fewer than 4 of
# the shop's rows), but the query failed ("a row divides by zero") exactly when k was the order's id, so
# trying k = 1, 2, ... read it. The same for %, / and the functions defined on part of their domain (LN, LOG,
# SQRT, POWER, ASIN, ACOS): whether a row is outside the domain is a comparison of the argument, so the
# argument must be one the issuer may compare (PLAINTEXT or PLAINTEXT_AFTER_COMPARE), or the divisor guarded.

PARTIAL = ["o.order_id // (o.order_id - {k})", "o.order_id % (o.order_id - {k})", "o.order_id / (o.order_id - {k})",
           "LN(o.order_id - {k})", "SQRT(o.order_id - {k})", "LOG(10, o.order_id - {k})",
           "POWER(o.order_id - {k}, 0.5)", "ASIN(o.order_id - {k})",
           # failing at the owner's DuckDB: an invalid code point, month, text to parse, hex digit
           "LENGTH(CHR(o.order_id - {k}))", "YEAR(MAKE_DATE(2020, o.order_id - {k}, 1))",
           "YEAR(STRPTIME(CAST(o.order_id - {k} AS VARCHAR), '%Y'))", "LENGTH(UNHEX(CAST(o.order_id - {k} AS VARCHAR)))"]


@pytest.mark.parametrize("partial", PARTIAL)
def test_partial_function_of_an_aggregated_value_is_refused(fed, lone_order, assert_refused, partial):
    customer, order = lone_order
    sql = f"SELECT c.region, SUM({partial.format(k=order)}) {JOIN} WHERE c.id = {customer} GROUP BY c.region"
    assert_refused(fed, sql, "bank", PolicyViolation, "shop.orders.order_id")


def test_partial_function_refusal_says_what_to_do(fed, assert_refused):
    error = assert_refused(fed, f"SELECT SUM(o.order_id // o.priority) {JOIN}", "bank", PolicyViolation,
                           "shop.orders.priority")
    assert "NULLIF" in str(error)


@pytest.mark.parametrize("sql", [
    f"SELECT c.region, SUM(o.order_id // NULLIF(o.order_id - 108, 0)) {JOIN} GROUP BY c.region",  # guarded
    f"SELECT c.region, SUM(o.order_id) // (SUM(o.order_id) - 108) {JOIN} GROUP BY c.region",  # per group, revealed
    f"SELECT c.region, SUM(o.order_id / 7) {JOIN} GROUP BY c.region",  # a constant divisor
    f"SELECT c.region, COUNT(c.age / (o.amount - 100.005)) {JOIN} GROUP BY c.region",  # a comparable divisor
])
def test_partial_function_with_a_safe_argument_is_answered(fed, oracle_for, sql):
    oracle_for(fed).check(sql, "bank")


def test_aggregated_divisor_without_threshold_or_dp_is_answered(tmp_path, tables, federation_writer, grants_for,
                                                                oracle_for):
    """Without a group threshold or DP, COUNT(CASE WHEN y = 0 THEN 1 END) shows what a failing row does: the
    grants alone (PLAINTEXT_AFTER_AGGREGATE) then allow the divisor."""
    federation_writer(tmp_path, padded_tables(tables), padded_grants(grants_for, ("bank", "shop")),
                      parties=("bank", "shop"), min_group_size=0)
    with Engine(tmp_path / "federation.toml") as engine:
        oracle_for(engine).check(f"SELECT c.region, SUM(o.order_id // (o.order_id + 1)) {JOIN} GROUP BY c.region",
                                 "bank")


# -- leak 2 (not fixed): a CAST that fails on a row's value does the same -----------------------------------
# CAST(o.order_id - k AS UTINYINT) runs at the shop over the rows joined to the bank's one customer; it fails
# (DataError "Conversion error") exactly when k exceeds the lone order's id, whatever the threshold drops.
# Refusing it needs the cast's source type (a widening cast never fails), which column control does not see.

def test_narrowing_cast_of_an_aggregated_value_is_refused(fed, lone_order, assert_refused):
    customer, order = lone_order
    sql = (f"SELECT c.region, SUM(CAST(o.order_id - {order + 1} AS UTINYINT)) {JOIN} WHERE c.id = {customer} "
           "GROUP BY c.region")
    assert_refused(fed, sql, "bank", PolicyViolation, "shop.orders.order_id")


def test_guarded_divisor_passes_in_postgres_dialect(tmp_path, tables, federation_writer, grants_for):
    """PostgreSQL's division raises on a zero divisor; the dialect writes that check around it, and a
    NULLIF(y, 0) divisor under it is still the guarded one."""
    federation_writer(tmp_path, padded_tables(tables), padded_grants(grants_for, ("bank", "shop")),
                      parties=("bank", "shop"), dialect="postgres")
    with Engine(tmp_path / "federation.toml") as engine:
        engine.plan(f"SELECT c.region, SUM(o.order_id / NULLIF(o.order_id - 108, 0)) {JOIN} GROUP BY c.region",
                    "bank")
        with pytest.raises(PolicyViolation, match="NULLIF"):
            engine.plan(f"SELECT c.region, SUM(o.order_id / (o.order_id - 108)) {JOIN} GROUP BY c.region", "bank")


# -- leak 3 (not fixed): the SPU's guards of approximate values do the same ----------------------------------
# ROUND / FLOOR / CAST of an approximate value (EXP, a division, a DOUBLE's encoding) refuses the query where a
# counted row lies within its error of a rounding boundary, and a comparison of approximate values where a row's
# two sides lie within their error: trying k reads the lone order's EXP(order_id / 100) to within that error.
# Column control cannot tell an exact operand from an approximate one; the fix belongs in the SPU (open the
# failing rows' count only over the groups the threshold keeps, and refuse such guards under DP).

@pytest.mark.parametrize("guarded", ["ROUND(EXP(o.order_id / 100) - {k} + 0.5, 0)",
                                     "CASE WHEN EXP(o.order_id / 100) > {k} THEN 1 ELSE 0 END"])
def test_approximate_guard_of_an_aggregated_value_is_refused(fed, lone_order, assert_refused, guarded):
    customer, order = lone_order
    sql = (f"SELECT c.region, SUM({guarded.format(k=f'{math.exp(order / 100):.12f}')}) {JOIN} "
           f"WHERE c.id = {customer} GROUP BY c.region")
    assert_refused(fed, sql, "bank", PolicyViolation, "shop.orders.order_id")
