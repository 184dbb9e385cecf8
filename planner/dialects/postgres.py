"""PostgreSQL's meaning in DuckDB: one rule per difference, composed in `RULES` (applied in order).

What sqlglot's transpiler already gets right (`||` giving NULL with a NULL operand, CONCAT skipping
NULLs, date - date in days, date + integer, timestamp - timestamp as an interval) is left to it and
covered by tests/test_dialects.py.
"""

from __future__ import annotations

import re

from sqlglot import exp

from sqlsecure.errors import NotSupportedError
from sqlsecure.planner.dialects import common
from sqlsecure.planner.dialects.common import (DUCKDB_DECIMAL_DIGITS, FLOATS, INTEGERS, NUMBERS, DialectContext,
                                               DType, bare_decimal, local_now, refuse_unknown_functions, rewrite_up,
                                               round_half_even, template, type_of)

ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod)
COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)

DIVISION_BY_ZERO = "CASE WHEN _b = 0 THEN ERROR('division by zero') ELSE _b END"


def nonzero_literal(node: exp.Expression) -> bool:
    return isinstance(node, exp.Literal) and not node.is_string and float(node.this) != 0


WIDENED_BY_SUM = {DType.BIGINT, DType.UBIGINT, DType.INT128}  # SUM(bigint) is NUMERIC


def pg_integer(node: exp.Expression) -> bool:
    """Whether PostgreSQL types `node` as an integer (SUM of a bigint is NUMERIC there)."""
    if isinstance(node, exp.Sum) and type_of(node.this) in WIDENED_BY_SUM:
        return False
    return type_of(node) in INTEGERS


def integer_division(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """integer / integer truncates toward zero and stays an integer (exactly, also beyond 2**53).

    >>> from sqlglot import parse_one
    >>> from sqlglot.optimizer.annotate_types import annotate_types
    >>> integer_division(annotate_types(parse_one("SELECT -7 / 2", read="postgres")), None).sql("duckdb")
    'SELECT -7 // 2'
    """
    def rewrite(node):
        if not isinstance(node, exp.Div):
            return node
        if pg_integer(node.this) and pg_integer(node.expression):
            return exp.IntDiv(this=node.this, expression=node.expression)
        node.set("typed", False)  # else sqlglot's DuckDB SQL would truncate by the DuckDB types
        return node

    return rewrite_up(tree, rewrite)


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

    return rewrite_up(tree, rewrite)


def zero_checked(e: exp.Expression) -> exp.Expression | None:
    """y of a divisor `division_by_zero` wrote (`CASE WHEN y = 0 THEN ERROR('division by zero') ELSE y END`),
    else None: column control and the SPU read it as y (the SPU's division refuses a counted row dividing
    by zero with DataError, which is what the ERROR means; ERROR itself stays without a rule)."""
    ifs = e.args.get("ifs") if isinstance(e, exp.Case) and e.this is None else None
    if not ifs or len(ifs) != 1 or e.args.get("default") is None:
        return None
    test, then, y = ifs[0].this, ifs[0].args.get("true"), e.args["default"]
    if (isinstance(then, exp.Anonymous) and then.name.upper() == "ERROR" and isinstance(test, exp.EQ)
            and test.this == y and isinstance(test.expression, exp.Literal) and test.expression.this == "0"):
        return y
    return None


def untyped_literals(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """A quoted literal beside a number takes the number's type ('3' + 4 = 7; 'x' + 4 is an error),
    as PostgreSQL resolves an unknown-typed literal."""
    def rewrite(node):
        if not isinstance(node, ARITHMETIC + COMPARISONS):
            return node
        for key, other in (("this", "expression"), ("expression", "this")):
            literal, partner = node.args[key], node.args[other]
            if isinstance(literal, exp.Literal) and literal.is_string and type_of(partner) in NUMBERS:
                node.set(key, exp.cast(literal, partner.type.copy()))
        return node

    return rewrite_up(tree, rewrite)


def approximate_rounding(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """round(double precision) rounds half to even in PostgreSQL (round(2.5::float8) = 2)."""
    def rewrite(node):
        if isinstance(node, exp.Round) and type_of(node.this) in FLOATS and node.args.get("decimals") is None \
                and not isinstance(node.this, exp.Literal):
            return round_half_even(node.this, 0)
        return node

    return rewrite_up(tree, rewrite)


def unconstrained_numeric(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """CAST(x AS NUMERIC) without a precision keeps x's own digits in PostgreSQL (1.23456::numeric is
    1.23456, where DuckDB's bare DECIMAL is DECIMAL(18, 3)): an integer or a DECIMAL(p, s) keeps its scale
    in DECIMAL(38, s), a number written in the query keeps its written decimals; a double precision (15
    significant digits, any scale) or a column of text has no DuckDB DECIMAL for every value: refused.

    >>> from sqlglot import parse_one
    >>> unconstrained_numeric(parse_one("SELECT 1.23456::numeric", read="postgres"), None).sql("duckdb")
    'SELECT CAST(1.23456 AS DECIMAL(38, 5))'
    """
    def rewrite(node):
        if not bare_decimal(node):
            return node
        scale = _exact_scale(node.this)
        if scale is None:
            raise NotSupportedError(
                f"{node.sql(dialect='postgres')}: NUMERIC without a precision keeps each value's own digits in "
                "PostgreSQL, which no fixed DuckDB DECIMAL holds for this argument (a double precision, text, or a value "
                "whose scale is not fixed): write NUMERIC(p, s)")
        node.set("to", exp.DataType.build(f"DECIMAL({DUCKDB_DECIMAL_DIGITS}, {scale})"))
        return node

    return rewrite_up(tree, rewrite)


def _exact_scale(value: exp.Expression) -> int | None:
    """The decimals `value` holds exactly (`common.exact_scale`: integers, NUMERIC(p, s), written numbers
    and + - * of them; no quotient), a quoted number literal included ('-2.125'::numeric)."""
    if isinstance(value, exp.Literal) and value.is_string:
        return common.exact_scale(exp.Literal.number(value.this.strip()), most=DUCKDB_DECIMAL_DIGITS) \
            if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)", value.this.strip()) else None
    return common.exact_scale(value, most=DUCKDB_DECIMAL_DIGITS)


def current_date_in_zone(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """CURRENT_DATE is the date on the wall clock of the federation's time_zone."""
    def rewrite(node):
        if isinstance(node, exp.CurrentDate):
            return exp.cast(local_now(context.time_zone), "DATE")
        return node

    return rewrite_up(tree, rewrite)


RULES = (untyped_literals, unconstrained_numeric, integer_division, division_by_zero, approximate_rounding, current_date_in_zone,
         refuse_unknown_functions)
