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
                                               DType, bare_decimal, finite_test, like_escape, local_now,
                                               refuse_unknown_functions, rewrite_up, round_half_even, template, type_of)

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


def checked_value(e: exp.Expression) -> exp.Expression | None:
    """v of a guard a rule of this module wrote, `CASE WHEN <test of v> THEN ERROR('...') ELSE v END` (a divisor
    tested for 0 by `division_by_zero`, a result tested for a finite value by `domain_errors`, a substring's
    length tested for a negative by `substring_positions`), else None:
    column control and the SPU read it as v (the SPU refuses a counted row dividing by zero, or whose result
    is not finite, with DataError, which is what the ERROR means; ERROR itself stays without a rule)."""
    ifs = e.args.get("ifs") if isinstance(e, exp.Case) and e.this is None else None
    if not ifs or len(ifs) != 1 or e.args.get("default") is None:
        return None
    test, then, v = ifs[0].this, ifs[0].args.get("true"), e.args["default"]
    if not (isinstance(then, exp.Anonymous) and then.name.upper() == "ERROR"):
        return None
    zero = exp.Literal.number(0)
    return v if test in (exp.EQ(this=v.copy(), expression=zero), exp.LT(this=v.copy(), expression=zero.copy()),
                         finite_test(v)) else None


def in_list_order(items: list[exp.Expression]) -> list[exp.Expression]:
    """The items of `x IN (...)` in the order PostgreSQL compares them, each only where no earlier one matched:
    those without a column first where there are several (its `x = ANY(ARRAY[...])`), then the others as
    written (an OR of `x = item`); otherwise as written. A guard in a later item is not reached by a row that
    matched before it.

    >>> from sqlglot import parse_one
    >>> [i.sql() for i in in_list_order(parse_one("x IN (a / b, 7, -7)").expressions)]
    ['7', '-7', 'a / b']
    """
    constants = [i for i in items if i.find(exp.Column) is None]
    return constants + [i for i in items if i.find(exp.Column) is not None] if len(constants) > 1 else list(items)


DOMAIN_CHECKED = (exp.Sqrt, exp.Ln, exp.Log, exp.Exp, exp.Pow, exp.Asin, exp.Acos)


def domain_errors(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """sqrt of a negative, ln / log of 0 or a negative, asin / acos beyond ±1, a negative to a fractional
    power, 0 to a negative power, exp / power beyond double precision raise an error in PostgreSQL, where
    DuckDB returns NaN or ±infinity: the same error, wherever the finite arguments give no finite result.

    >>> from sqlglot import parse_one
    >>> domain_errors(parse_one("SELECT sqrt(x)", read="postgres"), None).sql("duckdb")
    "SELECT CASE WHEN ISFINITE(x) AND NOT ISFINITE(SQRT(x)) THEN ERROR('SQRT(x): argument out of its domain, an error in PostgreSQL') ELSE SQRT(x) END"
    """
    def rewrite(node):
        if not isinstance(node, DOMAIN_CHECKED):
            return node
        message = exp.Literal.string(f"{node.sql(dialect='postgres')}: argument out of its domain, an error in PostgreSQL")
        return exp.Case(ifs=[exp.If(this=finite_test(node), true=exp.Anonymous(this="ERROR", expressions=[message]))],
                        default=node.copy())

    return rewrite_up(tree, rewrite)


def numeric_div(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """div(a, b) truncates the exact quotient toward zero (div(1.25, 2) = 0), which sqlglot's `a // b` does
    for integers only: exact numbers are scaled to integers first; of a double precision it is refused (PostgreSQL
    takes the double's decimal text, which no DuckDB expression reproduces for every value).

    >>> from sqlglot import parse_one
    >>> numeric_div(parse_one("SELECT div(1.25, 2)", read="postgres"), None).sql("duckdb")
    'SELECT CAST(CAST(1.25 * 100 AS INT128) // CAST(2 * 100 AS INT128) AS DECIMAL)'
    """
    def rewrite(node):
        if not (bare_decimal(node) and isinstance(node.this, exp.IntDiv)):
            return node
        a, b = node.this.this, node.this.expression
        scales = [common.exact_scale(v, most=DUCKDB_DECIMAL_DIGITS) for v in (a, b)]
        if None in scales:
            raise NotSupportedError(f"{node.sql(dialect='postgres')}: DIV of a double precision truncates its decimal "
                                    "text's quotient in PostgreSQL, which is not matched here: CAST the arguments to "
                                    "NUMERIC(p, s) first")
        if max(scales):
            scale = exp.Literal.number(10 ** max(scales))
            a, b = (exp.cast(exp.Mul(this=v.copy(), expression=scale.copy()), "HUGEINT") for v in (a, b))
            node.set("this", exp.IntDiv(this=a, expression=b))
        return node

    return rewrite_up(tree, rewrite)


# strftime specifiers that mean what sqlglot's translation of a to_char template pattern means in PostgreSQL
# (YYYY YY MM DD DDD HH24 HH12 MI SS US IYYY IW, their FM forms, TMDay TMDy TMMonth TMMon); D and WW (other
# week days and weeks), time zones, and any pattern sqlglot leaves as text (Day, Month, AM, Q, ...) are not.
TO_CHAR_SPECIFIERS = re.compile(r"%-?[YymdjHIMSfGV]|%[aAbB]")


def time_formats(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """to_char(date or timestamp, constant template) with the patterns DuckDB's strftime writes alike; any
    other to_char is refused by name (a number's, a pattern without an exact equivalent, a template that is
    not a constant)."""
    for node in tree.find_all(exp.TimeToStr):
        template_ = node.args.get("format")
        literal = template_.this if isinstance(template_, exp.Literal) and template_.is_string else None
        rest = None if literal is None else TO_CHAR_SPECIFIERS.sub("", literal)
        why = ("a number's to_char (its template patterns are not matched here)" if type_of(node.this) not in
               common.DATES | common.DATETIMES else "a template that is not a constant" if literal is None else
               None if not re.search(r"[A-Za-z%]", rest) else "a template pattern without an exact equivalent here "
               "(supported: YYYY YY MM DD DDD HH24 HH12 MI SS US IYYY IW, FM forms, TMDay TMDy TMMonth TMMon)")
        if why:
            raise NotSupportedError(f"TO_CHAR({node.this.sql(dialect='postgres')}, ...): {why}")
    return tree


def text_of_doubles(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """A double precision as text (::text, ||, concat) is written differently by PostgreSQL (1, 1e+15) and
    DuckDB (1.0, 1000000000000000.0): refused by name, as no DuckDB expression writes PostgreSQL's text."""
    for node in tree.find_all(exp.Cast, exp.TryCast, exp.DPipe, exp.Concat, exp.ConcatWs):
        if isinstance(node, (exp.Cast, exp.TryCast)):
            parts = [node.this] if node.to.this in common.STRINGS else []
        else:
            parts = node.expressions if isinstance(node, (exp.Concat, exp.ConcatWs)) else [node.this, node.expression]
        if any(pg_double(part) for part in parts):
            raise NotSupportedError(f"{node.sql(dialect='postgres')}: the text of a double precision is written "
                                    "differently here; CAST it to NUMERIC(p, s) first")
    return tree


SUBSTRING_FROM = "CASE WHEN _m < 1 THEN 1 ELSE _m END"
SUBSTRING_FOR = "CASE WHEN _m < 1 THEN GREATEST(_m + _n - 1, 0) ELSE _n END"
NEGATIVE_LENGTH = "CASE WHEN _n < 0 THEN ERROR('negative substring length not allowed') ELSE _n END"


def substring_positions(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """substr(s, m, n) counts m from the start even below 1 (substr('abc', -1, 3) = 'a'; DuckDB counts a
    negative m from the end), and a negative n is an error.

    >>> from sqlglot import parse_one
    >>> substring_positions(parse_one("SELECT substr(s, -1)", read="postgres"), None).sql("duckdb")
    'SELECT SUBSTRING(s, CASE WHEN -1 < 1 THEN 1 ELSE -1 END)'
    """
    def natural(e):
        return e is None or isinstance(e, exp.Literal) and e.is_int and int(e.this) >= 0

    def rewrite(node):
        if not isinstance(node, exp.Substring):
            return node
        m, n = node.args.get("start"), node.args.get("length")
        if m is None or natural(m) and natural(n):
            return node
        if n is not None:
            node.set("length", template(SUBSTRING_FOR, m=m, n=template(NEGATIVE_LENGTH, n=n)))
        node.set("start", template(SUBSTRING_FROM, m=m))
        return node

    return rewrite_up(tree, rewrite)


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


def pg_double(node: exp.Expression) -> bool:
    """Whether PostgreSQL types `node` double precision (a written 2.5 is NUMERIC there, a DOUBLE to sqlglot)."""
    return type_of(node) in FLOATS and common.exact_scale(node, quotient=lambda s: s) is None


def approximate_rounding(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """round(double precision) rounds half to even in PostgreSQL (round(2.5::float8) = 2; round(2.5) is a
    NUMERIC's, half away from zero); round(double precision, n) does not exist there: refused by name."""
    def rewrite(node):
        if not (isinstance(node, exp.Round) and pg_double(node.this)):
            return node
        if node.args.get("decimals") is not None:
            call = f"round({node.this.sql(dialect='postgres')}, {node.args['decimals'].sql(dialect='postgres')})"
            raise NotSupportedError(f"{call}: PostgreSQL has no round(double precision, integer): CAST the value to "
                                    "NUMERIC(p, s) first")
        return round_half_even(node.this, 0)

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


RULES = (untyped_literals, numeric_div, unconstrained_numeric, integer_division, division_by_zero,
         approximate_rounding, domain_errors, like_escape, time_formats, text_of_doubles, substring_positions,
         current_date_in_zone, refuse_unknown_functions)
