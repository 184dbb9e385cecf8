"""PostgreSQL's meaning in DuckDB: one rule per difference, composed in `RULES` (applied in order).

What sqlglot's transpiler already gets right (`||` giving NULL with a NULL operand, CONCAT skipping
NULLs, date - date in days, date + integer, timestamp - timestamp as an interval) is left to it and
covered by tests/test_dialects.py.
"""

from __future__ import annotations

from sqlglot import exp

from sqlsecure.planner.dialects.common import INTEGERS, DialectContext, local_now, template, type_of

DIVISION_BY_ZERO = "CASE WHEN _b = 0 THEN ERROR('division by zero') ELSE _b END"


def nonzero_literal(node: exp.Expression) -> bool:
    return isinstance(node, exp.Literal) and not node.is_string and float(node.this) != 0


def integer_division(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """integer / integer truncates toward zero and stays an integer (exactly, also beyond 2**53).

    >>> from sqlglot import parse_one
    >>> from sqlglot.optimizer.annotate_types import annotate_types
    >>> integer_division(annotate_types(parse_one("SELECT -7 / 2", read="postgres")), None).sql("duckdb")
    'SELECT -7 // 2'
    """
    def rewrite(node):
        if isinstance(node, exp.Div) and type_of(node.this) in INTEGERS and type_of(node.expression) in INTEGERS:
            return exp.IntDiv(this=node.this, expression=node.expression)
        return node

    return tree.transform(rewrite)


def division_by_zero(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """`/` and `%` by zero raise 'division by zero' in PostgreSQL (DuckDB returns NULL or infinity).

    >>> from sqlglot import parse_one
    >>> division_by_zero(parse_one("SELECT a / b", read="postgres"), None).sql("duckdb")
    "SELECT a / CASE WHEN b = 0 THEN ERROR('division by zero') ELSE b END"
    """
    def rewrite(node):
        if isinstance(node, (exp.Div, exp.IntDiv, exp.Mod)) and not nonzero_literal(node.expression):
            node.set("expression", template(DIVISION_BY_ZERO, b=node.expression))
        return node

    return tree.transform(rewrite)


def current_date_in_zone(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """CURRENT_DATE is the date on the wall clock of the federation's time_zone."""
    def rewrite(node):
        if isinstance(node, exp.CurrentDate):
            return exp.cast(local_now(context.time_zone), "DATE")
        return node

    return tree.transform(rewrite)


RULES = (integer_division, division_by_zero, current_date_in_zone)
