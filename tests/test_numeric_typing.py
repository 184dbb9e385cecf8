"""Plan-time types of numeric constants and arithmetic follow DuckDB (planner/pushdown_typing.py
`duckdb_numeric_types`): `0.3` is DECIMAL(2,1), `BIGINT * 0.3` DECIMAL(21,1), so a CAST of it to an integer is an
exact rounding, not a DOUBLE's (which the SPU guards, so the failing-row rule refuses it for values the issuer
may only aggregate). A narrowing CAST of a DECIMAL that may not fit is still refused. Federation: round 10's
(tests/test_attacks_s10.py: the shop's order ids PLAINTEXT_AFTER_AGGREGATE to the bank)."""

import duckdb
import pytest
import sqlglot
from sqlglot.optimizer.annotate_types import annotate_types

from sqlsecure.errors import PolicyViolation
from sqlsecure.planner.ccl_rules import failing_arguments, type_class
from sqlsecure.planner.pushdown_typing import duckdb_numeric_types
from tests.test_attacks_s10 import JOIN, fed, lone_order  # noqa: F401  (module fixtures, reused)


@pytest.mark.parametrize("value", [
    "CAST(o.order_id * 0.3 AS BIGINT)", "CAST(o.order_id * 0.3 AS DECIMAL(18, 2))", "ROUND(o.order_id * 0.25, 1)",
    "FLOOR(o.order_id - 0.5)", "CAST(o.order_id + 1.25 AS INTEGER)",
])
def test_rounding_exact_decimal_arithmetic_is_answered(fed, oracle_for, value):
    oracle_for(fed).check(f"SELECT c.region, SUM({value}) AS s {JOIN} GROUP BY c.region", "bank")


@pytest.mark.parametrize("value", [
    "CAST((o.order_id - {k}) * 1000.5 AS TINYINT)",  # a DECIMAL beyond TINYINT for some ids: fails on that row
    "CAST(CAST(o.order_id AS DOUBLE) * 0.3 AS BIGINT)",  # a DOUBLE's rounding, guarded on the SPU
])
def test_a_cast_that_can_fail_on_a_row_is_still_refused(fed, lone_order, assert_refused, value):
    customer, order = lone_order
    sql = f"SELECT c.region, SUM({value.format(k=order)}) {JOIN} WHERE c.id = {customer} GROUP BY c.region"
    assert_refused(fed, sql, "bank", PolicyViolation, "shop.orders.order_id")


SCHEMA = {"p": {"t": {"b": "BIGINT", "i": "INTEGER", "s": "SMALLINT", "d": "DECIMAL(10,2)", "f": "DOUBLE"}}}


@pytest.mark.parametrize("value", [
    "0.3", ".5", "-0.3", "0.30", "12345678901234567890.5", "1e3", "t.b * 0.3", "t.i + 0.25", "t.s - 0.5",
    "t.d * 0.3", "t.b % 0.3", "t.d + t.b", "0.3 * 2", "0.1 + 0.2", "t.f * 0.3", "t.b / 0.3", "(t.b * 0.3) * t.d",
    "-(t.i * 1.5)", "t.b * 1000000000000.25",
])
def test_numeric_types_are_duckdbs(value):
    tree = annotate_types(sqlglot.parse_one(f"SELECT {value} FROM p.t AS t", read="duckdb"), schema=SCHEMA,
                          dialect="duckdb")
    typed = duckdb_numeric_types(tree).expressions[0].type
    con = duckdb.connect()  # as DuckDB types the SQL the engine sends (sqlglot writes `.5` as `0.5`)
    con.execute("CREATE SCHEMA p; CREATE TABLE p.t (b BIGINT, i INTEGER, s SMALLINT, d DECIMAL(10,2), f DOUBLE)")
    con.execute("INSERT INTO p.t VALUES (NULL, NULL, NULL, NULL, NULL)")
    want = con.execute(f"SELECT typeof({tree.expressions[0].sql('duckdb')}) FROM p.t AS t").fetchone()[0]
    assert typed.sql("duckdb").replace(" ", "") == want.replace(" ", "")


@pytest.mark.parametrize("value, classes, fails", [
    ("CAST(t.b * 0.3 AS BIGINT)", {}, True),  # DECIMAL(21,1): BIGINT cannot hold every value
    ("CAST(t.b * 0.3 AS BIGINT)", {"b": 20}, False),  # published: |b| < 2^20, exact
    ("CAST(t.f * 0.3 AS BIGINT)", {"f": 20}, True),  # a DOUBLE's rounding
    ("ROUND(t.i * 0.25, 1)", {}, False), ("CAST(t.i * 0.25 AS SMALLINT)", {}, True),
])
def test_which_decimal_casts_fail_on_a_row(value, classes, fails):
    tree = annotate_types(sqlglot.parse_one(f"SELECT {value} FROM p.t AS t", read="duckdb"), schema=SCHEMA,
                          dialect="duckdb")
    known = {"b": type_class("BIGINT"), "i": type_class("INTEGER"), **classes}
    found = failing_arguments(duckdb_numeric_types(tree).expressions[0], lambda column: known.get(column.name))
    assert bool(found[0]) is fails
