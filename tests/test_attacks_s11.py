"""Round 11's red team (issue 16, deny by default): a hostile analyst at the bank, and a curious compute party,
against last round's features: owners' filters over a UNION ALL, the failing-row rule's exceptions, ORDER BY /
LIMIT / OFFSET over protected values, owners' error texts, EXPLAIN.

The federation is round 10's (tests/test_attacks_s10.py: the shop's order ids PLAINTEXT_AFTER_AGGREGATE to the
bank, its amounts and notes PLAINTEXT_AFTER_COMPARE, its customer ids and priorities PLAINTEXT_AFTER_JOIN).

Leaks found, each of the failing-row class (a query that fails on one row's value tells the issuer about that row,
before the group threshold drops its group):
1, a CAST that always fits its target (the published magnitude class proves it) of a DOUBLE: the SPU's guard of its
   rounding failed the query where a lone row lay near a rounding boundary (`failing_arguments` returned the
   narrowing check's "cannot fail" without asking the SPU's guard);
2, an integer `//` whose divisor is guarded by NULLIF(divisor, 0): DuckDB's "Overflow in division" of the type's
   least value by -1 still fails on one row.
"""

import sqlglot
import pytest
from sqlglot.optimizer.annotate_types import annotate_types

from sqlsecure.errors import PolicyViolation
from sqlsecure.planner.ccl_rules import failing_arguments, type_class
from tests.test_attacks_s10 import JOIN, fed, lone_order  # noqa: F401  (module fixtures, reused)


# -- leak 1: a CAST that always fits, of a DOUBLE, rounds under the SPU's guard -------------------------------
# SUM(CAST(CAST(o.order_id AS DOUBLE) * m AS BIGINT)) over the bank's one customer's single order: the order ids'
# class proves the value fits BIGINT, so the cast "cannot fail"; but the SPU rounds a DOUBLE only where it lies
# beyond the encoding's error from a .5 boundary, else a DataError: trying multipliers m located the order's id.

@pytest.mark.parametrize("rounded", ["CAST(CAST(o.order_id AS DOUBLE) * {m} AS BIGINT)",
                                     "CAST(CAST(o.order_id AS DOUBLE) - {m} AS INTEGER)",
                                     "CAST(CAST(o.order_id AS FLOAT) * {m} AS DECIMAL(18, 2))"])
def test_a_cast_that_fits_still_rounds_a_double_under_the_spus_guard(fed, lone_order, assert_refused, rounded):
    customer, _ = lone_order
    sql = f"SELECT c.region, SUM({rounded.format(m=0.3)}) {JOIN} WHERE c.id = {customer} GROUP BY c.region"
    assert_refused(fed, sql, "bank", PolicyViolation, "shop.orders.order_id")


def test_a_cast_of_an_exact_value_that_fits_is_answered(fed, oracle_for):
    oracle_for(fed).check(f"SELECT c.region, SUM(CAST(o.order_id AS BIGINT)) AS s {JOIN} GROUP BY c.region", "bank")


# -- leak 2: NULLIF(divisor, 0) does not guard an integer division's overflow ---------------------------------
# DuckDB's `x // y` fails ("Overflow in division") where x is its type's least value and y is -1: a row's pair of
# values, below the threshold, decided whether the query failed. The dividend must be proven above that value by
# its published class, or both operands be ones the issuer may compare.

@pytest.mark.parametrize("value, classes, fails", [
    ("t.x // NULLIF(t.y, 0)", {}, True),  # an INTEGER's class allows -2^31
    ("t.x // NULLIF(t.y, 0)", {"x": 20}, False),  # published: |x| < 2^20
    ("CAST(t.x AS BIGINT) // NULLIF(t.y, 0)", {}, False),  # BIGINT holds every INTEGER negated
    ("t.x % NULLIF(t.y, 0)", {}, False),  # DuckDB's MIN % -1 is 0
    ("CAST(t.dbl AS BIGINT)", {"dbl": 20}, True),  # leak 1, as a rule: fits, but a DOUBLE's rounding
    ("CAST(t.x AS BIGINT)", {}, False),
])
def test_which_values_fail_on_a_row(value, classes, fails):
    schema = {"p": {"t": {"x": "INTEGER", "y": "INTEGER", "dbl": "DOUBLE"}}}
    tree = annotate_types(sqlglot.parse_one(f"SELECT {value} FROM p.t AS t", read="duckdb"), schema=schema)
    known = {"x": type_class("INTEGER"), "y": type_class("INTEGER"), **classes}
    node = tree.expressions[0]
    node = node.this if isinstance(node, sqlglot.exp.Alias) else node
    assert bool(failing_arguments(node, lambda column: known.get(column.name))[0]) is fails


def test_an_overflowing_division_guarded_by_nullif_is_refused(fed, lone_order, assert_refused):
    """TRY_CAST never fails, but it makes INTEGER's least value of the lone order's id minus k; divided by the id
    minus j as an INTEGER (-1 where j is the id plus 1) the query failed exactly when k was the id plus 2^31."""
    customer, order = lone_order
    sql = (f"SELECT c.region, SUM(TRY_CAST(o.order_id - {order + 2 ** 31} AS INTEGER) // "
           f"NULLIF(TRY_CAST(o.order_id - {order + 1} AS INTEGER), 0)) {JOIN} WHERE c.id = {customer} GROUP BY c.region")
    assert_refused(fed, sql, "bank", PolicyViolation, "shop.orders.order_id")
