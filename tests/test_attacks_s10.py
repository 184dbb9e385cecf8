"""Round 10's red team: a hostile analyst at the bank against the operator-by-operator planner (issue 16).

Each leak found is pinned by a test that asserts refusal at plan time (PEP 249 class, the rule named, `check`
agreeing) or an answer that carries nothing beyond the grants; attempts the engine already stops are kept
only where they pin a non-obvious rule. The federation is `tests/test_padded_aggregates.py`'s (the bank and
the shop): the shop's order ids are PLAINTEXT_AFTER_AGGREGATE to the bank, its amounts and notes
PLAINTEXT_AFTER_COMPARE, its customer ids and priorities PLAINTEXT_AFTER_JOIN, its regions ENCRYPTED_ONLY.

Leaks found, all of one class (a query that fails on one row's value tells the issuer about that row, before
the group threshold drops its group or DP noises it): 1, a division by zero and LN / SQRT / ... outside their
domain, or CHR, MAKE_DATE, STRPTIME, UNHEX of a value they reject; 2, a narrowing CAST or an integer
overflow; 3, the SPU's guards of approximate roundings and comparisons (all fixed: planner/ccl.py
`_check_failures`, the failing values listed by planner/ccl_rules.py `failing_arguments`).
"""

import math

import pytest

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types

from sqlsecure.engine import Engine
from sqlsecure.errors import PolicyViolation
from sqlsecure.planner.ccl_rules import failing_arguments, holds, type_class
from tests import test_translate_dp as dp_tables
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


# -- leak 2: a CAST or an integer sum that fails on a row's value does the same ---------------------------
# CAST(o.order_id - k AS UTINYINT) runs at the shop over the rows joined to the bank's one customer; it failed
# (DataError "Conversion error") exactly when k exceeded the lone order's id, whatever the threshold drops; so
# did an integer product past BIGINT ("Out of Range"). Refused unless the target holds every value of the
# argument's type or of its published magnitude class (planner/magnitudes.py); TRY_CAST never fails.

def test_narrowing_cast_of_an_aggregated_value_is_refused(fed, lone_order, assert_refused):
    customer, order = lone_order
    sql = (f"SELECT c.region, SUM(CAST(o.order_id - {order + 1} AS UTINYINT)) {JOIN} WHERE c.id = {customer} "
           "GROUP BY c.region")
    assert_refused(fed, sql, "bank", PolicyViolation, "shop.orders.order_id")


@pytest.mark.parametrize("failing", ["CAST(o.order_id AS BIGINT) * 4611686018427387904",  # past BIGINT
                                     "CAST(o.order_id - {k} AS UTINYINT)", "CAST(o.order_id * 1000 AS SMALLINT)",
                                     "CAST(o.order_id AS DECIMAL(3, 1))", "-CAST(o.order_id * {k} AS TINYINT)"])
def test_value_failing_on_a_row_is_refused(fed, lone_order, assert_refused, failing):
    customer, order = lone_order
    sql = f"SELECT c.region, SUM({failing.format(k=order)}) {JOIN} WHERE c.id = {customer} GROUP BY c.region"
    error = assert_refused(fed, sql, "bank", PolicyViolation, "shop.orders.order_id")
    assert "fails" in str(error)
    for run in (fed.explain, fed.execute):  # EXPLAIN and execution refuse it the same way
        with pytest.raises(PolicyViolation, match="fails"):
            run(sql, "bank")


def test_narrowing_cast_refusal_says_what_to_do(fed, assert_refused):
    error = assert_refused(fed, f"SELECT SUM(CAST(o.order_id - 5 AS UTINYINT)) {JOIN}", "bank", PolicyViolation,
                           "CAST")
    assert "TRY_CAST" in str(error)


@pytest.mark.parametrize("sql", [
    f"SELECT c.region, SUM(TRY_CAST(o.order_id - 108 AS UTINYINT)) {JOIN} GROUP BY c.region",  # never fails
    f"SELECT c.region, SUM(CAST(o.order_id AS BIGINT)) {JOIN} GROUP BY c.region",  # widening
    f"SELECT c.region, SUM(CAST(o.order_id - 108 AS INTEGER) * 3) {JOIN} GROUP BY c.region",  # its class fits
    f"SELECT c.region, SUM(CAST(o.order_id AS SMALLINT)) {JOIN} GROUP BY c.region",  # its class fits SMALLINT
    f"SELECT c.region, COUNT(CAST(o.amount AS INTEGER)) {JOIN} GROUP BY c.region",  # comparable: may fail
])
def test_value_that_cannot_fail_is_answered(fed, oracle_for, sql):
    oracle_for(fed).check(sql, "bank")


def test_failing_value_of_a_comparable_argument_is_planned(fed):
    """PLAINTEXT_AFTER_COMPARE arguments may fail the query: whether a row does is a comparison of them."""
    fed.plan(f"SELECT c.region, COUNT(CASE WHEN EXP(o.amount / 100) > 3 THEN 1 END) {JOIN} GROUP BY c.region",
             "bank")
    fed.plan(f"SELECT c.region, COUNT(ROUND(o.amount * 1.5, 1)) {JOIN} GROUP BY c.region", "bank")


@pytest.mark.parametrize("target, source, held", [
    ("BIGINT", "INT", True), ("UTINYINT", "INT", False), ("INT", "DECIMAL(9, 2)", True),
    ("INT", "DECIMAL(12, 2)", False), ("DECIMAL(5, 2)", "DECIMAL(10, 3)", False), ("DOUBLE", "BIGINT", True),
    ("FLOAT", "DOUBLE", False), ("BIGINT", "DOUBLE", False), ("INT", "VARCHAR", False), ("DATE", "VARCHAR", False),
    ("VARCHAR", "DOUBLE", True), ("DATE", "TIMESTAMP", True), ("TIMESTAMP", "DATE", False)])
def test_cast_holds_its_source_type(target, source, held):
    """Which casts never fail (DuckDB's): text to a number or a date parses, a DATE past year 294247 is no
    TIMESTAMP, NaN is no integer."""
    build = lambda t: exp.DataType.build(t, dialect="duckdb")
    assert holds(build(target), build(source)) is held


@pytest.mark.parametrize("value, fails", [
    ("CAST(t.note AS INTEGER)", True), ("CAST(t.note AS DATE)", True), ("TRY_CAST(t.note AS INTEGER)", False), ("TRY_CAST(t.dbl AS INTEGER)", True),
    ("t.d + INTERVAL 3 DAY", True), ("CAST(t.d AS VARCHAR)", False), ("t.x * 2", True), ("CAST(t.x AS BIGINT) * 2", False), ("CAST(t.x AS BIGINT) * t.x * t.x", True),
    ("-t.x", True), ("ROUND(t.dbl, 1)", True), ("ROUND(t.x, -1)", False), ("ROUND(t.x / 2, 1)", True), ("t.dbl > 3", False),
    ("SQRT(t.x) > 3", True), ("GREATEST(EXP(t.x), 2)", True)])
def test_failing_values_without_magnitude_classes(value, fails):
    """Which values may fail on a row where no magnitude class bounds the column (only its type does): text parsed
    as a number or a date, a date moved past TIMESTAMP's range, an INTEGER overflowing (not once cast to BIGINT),
    the SPU's guards of a DOUBLE's rounding (even one exact in fact: deny by default; a TRY_CAST too, which the SPU
    rounds under the same guard) and of an approximate comparison."""
    schema = {"p": {"t": {"note": "VARCHAR", "d": "DATE", "x": "INTEGER", "dbl": "DOUBLE"}}}
    tree = annotate_types(sqlglot.parse_one(f"SELECT {value} FROM p.t AS t", read="duckdb"), schema=schema)
    classes = {"x": type_class("INTEGER")}  # what column control gives a base column without a published class
    assert bool(failing_arguments(tree.expressions[0], lambda column: classes.get(column.name))[0]) is fails


def test_approximate_guard_of_a_noised_aggregate_is_refused(tmp_path, federation_writer, plaintext_grants,
                                                            assert_refused):
    """Under DP the SPU's guard of ROUND(SUM(x) / 7.0) would fail on the exact sum, before the noise: refused by
    column control, naming the function, before the DP translation's own rule (outputs are noised aggregates)."""
    path = federation_writer(tmp_path, dp_tables.TABLES, plaintext_grants(dp_tables.HOSPITALS) + dp_tables.DP,
                             parties=dp_tables.HOSPITALS)
    with Engine(path, timeout=60) as engine:
        error = assert_refused(engine, f"SELECT ROUND(SUM(d.cost) / 7.0, 0) AS r FROM {dp_tables.UNION}", "registry",
                               PolicyViolation, "differential privacy")
        assert "ROUND" in str(error)


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


# -- leak 3: the SPU's guards of approximate values do the same ----------------------------------------------
# ROUND / FLOOR / CAST of an approximate value (EXP, a division, a DOUBLE's encoding) refuses the query where a
# counted row lies within its error of a rounding boundary, and a comparison of approximate values where a row's
# two sides lie within their error: trying k read the lone order's EXP(order_id / 100) to within that error.
# Counting the failing rows over the groups the threshold keeps would not do (a kept group's one row near the
# boundary still fails it, and DP cannot noise a failure): such operands need per-row comparisons, at plan time.

@pytest.mark.parametrize("guarded", ["ROUND(EXP(o.order_id / 100) - {k} + 0.5, 0)",
                                     "CASE WHEN EXP(o.order_id / 100) > {k} THEN 1 ELSE 0 END"])
def test_approximate_guard_of_an_aggregated_value_is_refused(fed, lone_order, assert_refused, guarded):
    customer, order = lone_order
    sql = (f"SELECT c.region, SUM({guarded.format(k=f'{math.exp(order / 100):.12f}')}) {JOIN} "
           f"WHERE c.id = {customer} GROUP BY c.region")
    assert_refused(fed, sql, "bank", PolicyViolation, "shop.orders.order_id")
    for run in (fed.explain, fed.execute):
        with pytest.raises(PolicyViolation, match="approximate"):
            run(sql, "bank")
