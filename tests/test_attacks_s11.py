"""Round 11's red team (issue 16, deny by default): a hostile analyst at the bank, and a curious compute party,
against last round's features: owners' filters over a UNION ALL, the failing-row rule's exceptions, ORDER BY /
LIMIT / OFFSET over protected values, owners' error texts, EXPLAIN.

The federation is round 10's (tests/test_attacks_s10.py: the shop's order ids PLAINTEXT_AFTER_AGGREGATE to the
bank, its amounts and notes PLAINTEXT_AFTER_COMPARE, its customer ids and priorities PLAINTEXT_AFTER_JOIN).

Leaks found, each of the failing-row class (a query that fails on one row's value tells the issuer about that row,
before the group threshold drops its group), all fixed in planner/ccl_rules.py `failing_arguments`: 1, a CAST
whose target holds every value, of a DOUBLE (the SPU's rounding guard); 2, an integer `//` guarded by NULLIF
(overflow); 3, `<<`, TO_TIMESTAMP, DATE_ADD, a date plus days (out of range). Attempts the engine already stopped
(owners' union filters, ORDER BY / LIMIT / OFFSET over protected values, owners' aggregates in FROM) are not
pinned here.
"""

import sqlglot
import pytest
from sqlglot.optimizer.annotate_types import annotate_types

from sqlsecure.planner.ccl_rules import failing_arguments, type_class
from tests import test_attacks_s10 as attacks_s10
from tests.test_attacks_s10 import JOIN, fed, lone_order  # noqa: F401  (module fixtures, reused)


# Each query reads the bank's one customer's single order (a group below the threshold) through a value that fails
# the query on some values only: trying k located the order's id.
# leak 1: a CAST whose target holds every value (the order ids' class proves it) of a DOUBLE still rounds it on the
#   SPU, whose guard fails the query where it lies within the encoding's error of a .5 boundary;
# leak 2: DuckDB's `x // y` fails ("Overflow in division") where x is its type's least value and y is -1, a
#   divisor guarded by NULLIF(y, 0) included (TRY_CAST never fails, but makes that value of the id minus k);
# leak 3: `1 << n` for a negative or too wide n, TO_TIMESTAMP / EPOCH_MS beyond TIMESTAMP, DATE_ADD and a date plus
#   a number of days (or an INTERVAL of a computed amount) beyond DATE's range.
LONE_ROW_FAILURES = [
    "CAST(CAST(o.order_id AS DOUBLE) * 0.3 AS BIGINT)", "CAST(CAST(o.order_id AS DOUBLE) - 0.3 AS INTEGER)",
    "CAST(CAST(o.order_id AS FLOAT) * 0.3 AS DECIMAL(18, 2))",
    "TRY_CAST(o.order_id - {k} - 2147483648 AS INTEGER) // NULLIF(TRY_CAST(o.order_id - {k} - 1 AS INTEGER), 0)",
    "1 << (o.order_id - {k})", "EPOCH(TO_TIMESTAMP((o.order_id - {k}) * 1e13))",
    "YEAR(DATE_ADD(DATE '2020-01-01', CAST(o.order_id - {k} AS INTEGER) * 8000000))",
    "YEAR(DATE '2020-01-01' + INTERVAL (CAST(o.order_id - {k} AS INTEGER)) DAY)",
    "YEAR(DATE '2020-01-01' + CAST(o.order_id - {k} AS INTEGER) * 8000000)",
]


@pytest.mark.parametrize("failing", LONE_ROW_FAILURES)
def test_a_value_failing_on_a_lone_row_is_refused(fed, lone_order, assert_refused, failing):
    """Round 10's attack (SUM of the value over the lone order, by trying k) with this round's values."""
    attacks_s10.test_partial_function_of_an_aggregated_value_is_refused(fed, lone_order, assert_refused, failing)


def test_a_cast_of_an_exact_value_that_fits_is_answered(fed, oracle_for):
    oracle_for(fed).check(f"SELECT c.region, SUM(CAST(o.order_id AS BIGINT)) AS s {JOIN} GROUP BY c.region", "bank")


@pytest.mark.parametrize("value, classes, fails", [
    ("t.x // NULLIF(t.y, 0)", {}, True),  # an INTEGER's class allows -2^31
    ("t.x // NULLIF(t.y, 0)", {"x": 20}, False),  # published: |x| < 2^20
    ("CAST(t.x AS BIGINT) // NULLIF(t.y, 0)", {}, False),  # BIGINT holds every INTEGER negated
    ("t.x % NULLIF(t.y, 0)", {}, False),  # DuckDB's MIN % -1 is 0
    ("CAST(t.dbl AS BIGINT)", {"dbl": 20}, True),  # fits, but a DOUBLE's rounding
    ("CAST(t.x AS BIGINT)", {}, False),
    ("1 << t.x", {}, True), ("t.x >> 3", {}, False), ("TO_TIMESTAMP(t.x)", {}, True), ("t.d + t.x", {}, True),
    ("t.d + INTERVAL (t.x) DAY", {}, True), ("t.d - t.d", {}, False), ("t.d + INTERVAL 3 DAY", {}, True),
])
def test_which_values_fail_on_a_row(value, classes, fails):
    schema = {"p": {"t": {"x": "INTEGER", "y": "INTEGER", "dbl": "DOUBLE", "d": "DATE"}}}
    tree = annotate_types(sqlglot.parse_one(f"SELECT {value} FROM p.t AS t", read="duckdb"), schema=schema)
    known = {"x": type_class("INTEGER"), "y": type_class("INTEGER"), **classes}
    assert bool(failing_arguments(tree.expressions[0], lambda column: known.get(column.name))[0]) is fails
