"""Round 11's leftovers (issue 16, deny by default): text functions that fail the query on one row's count.

DuckDB fails SUBSTRING on a start or length beyond ±2^32 ("Substring offset outside of supported range"),
LEFT on a length beyond 2^32, REPEAT on a string beyond 4 GiB, LPAD / RPAD on an empty fill, CHR on an invalid
code point; RIGHT, SPLIT_PART, OVERLAY and string slices never fail. A query failing on one row tells the issuer
about that row before the group threshold drops its group, so those counts need PLAINTEXT_AFTER_COMPARE unless
constant or proven small (planner/ccl_rules.py `failing_arguments`, `TEXT_LIMITS`). Federation: round 10's
(tests/test_attacks_s10.py: the shop's order ids PLAINTEXT_AFTER_AGGREGATE to the bank).
"""

import pytest
import sqlglot
from sqlglot.optimizer.annotate_types import annotate_types

from sqlsecure.errors import PolicyViolation
from sqlsecure.planner.ccl_rules import failing_arguments, type_class
from tests import test_attacks_s10 as attacks_s10
from tests.test_attacks_s10 import JOIN, fed, lone_order  # noqa: F401  (module fixtures, reused)

# Each fails the query exactly where the lone order's id is above k (an id's published class is small, so no
# overflow or narrowing rule applies): trying k reads it.
LONE_ROW_TEXT_FAILURES = [
    "LENGTH(SUBSTRING('abc', (o.order_id - {k}) * 4294967296 + 1))",
    "LENGTH(SUBSTRING('abc', 1, (o.order_id - {k}) * 4294967296 + 1))",
    "LENGTH(LEFT('abc', (o.order_id - {k}) * 4294967296))",
    "LENGTH(REPEAT('abc', (o.order_id - {k}) * 4294967296))",
    "LENGTH(LPAD('abc', CAST(o.order_id - {k} AS INTEGER) + 3, ''))",
]


@pytest.mark.parametrize("failing", LONE_ROW_TEXT_FAILURES)
def test_a_text_count_failing_on_a_lone_row_is_refused(fed, lone_order, assert_refused, failing):
    """SUM of the value over the lone order, by trying k: refused at plan time, `check` agreeing."""
    customer, order = lone_order
    sql = f"SELECT c.region, SUM({failing.format(k=order)}) {JOIN} WHERE c.id = {customer} GROUP BY c.region"
    assert_refused(fed, sql, "bank", PolicyViolation, "shop.orders.order_id")


@pytest.mark.parametrize("sql", [
    f"SELECT c.region, SUM(LENGTH(SUBSTRING(CAST(o.order_id AS VARCHAR), 2, 3))) AS n {JOIN} GROUP BY c.region",  # constant counts
    f"SELECT c.region, SUM(LENGTH(RIGHT('abcdef', CAST(o.order_id AS INTEGER)))) AS n {JOIN} GROUP BY c.region",
    f"SELECT c.region, SUM(LENGTH(LPAD(CAST(o.order_id AS VARCHAR), 5, '*'))) AS n {JOIN} GROUP BY c.region",
])
def test_a_text_function_that_cannot_fail_is_answered(fed, oracle_for, sql):
    oracle_for(fed).check(sql, "bank")


@pytest.mark.parametrize("value, classes, fails", [
    ("SUBSTRING(t.s, t.x, 2)", {}, False),  # an INTEGER start: |x| < 2^31
    ("SUBSTRING(t.s, t.b, 2)", {}, True),  # a BIGINT start may be beyond 2^32
    ("SUBSTRING(t.s, 2, t.b)", {"b": 20}, False),  # published: |b| < 2^20
    ("SUBSTRING(t.s, t.b)", {}, True), ("SUBSTRING(t.s, 4294967296)", {}, False),  # a constant fails on every row
    ("LEFT(t.s, t.b)", {}, True), ("LEFT(t.s, t.x)", {}, False), ("RIGHT(t.s, t.b)", {}, False),
    ("REPEAT(t.s, t.x)", {}, True), ("REPEAT(t.s, 3)", {}, True), ("REPEAT(t.s, 1)", {}, False), ("REPEAT(t.s, t.b)", {"b": 1}, False),
    ("LPAD(t.s, t.x, 'x')", {}, True), ("LPAD(t.s, t.x, 'x')", {"x": 16}, False), ("RPAD(t.s, 9, '.')", {}, False),
    ("LPAD(t.s, 9, t.s)", {}, True), ("RPAD(t.s, 9, '')", {}, True),
    ("CHR(t.x)", {}, True), ("SPLIT_PART(t.s, ',', t.b)", {}, False),
])
def test_which_text_values_fail_on_a_row(value, classes, fails):
    schema = {"p": {"t": {"s": "VARCHAR", "x": "INTEGER", "b": "BIGINT"}}}
    tree = annotate_types(sqlglot.parse_one(f"SELECT {value} FROM p.t AS t", read="duckdb"), schema=schema)
    known = {"x": type_class("INTEGER"), "b": type_class("BIGINT"), **classes}
    assert bool(failing_arguments(tree.expressions[0], lambda column: known.get(column.name))[0]) is fails
