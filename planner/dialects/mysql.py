"""MySQL's meaning in DuckDB: one rule per difference, composed in `RULES` (applied in order).

Each rule is `rule(tree, context) -> tree` over a type-annotated tree. What sqlglot's transpiler already
gets right (`/` and `%` giving NULL for a zero divisor, `%`'s sign following the dividend, `CONCAT` giving
NULL if any argument is NULL, `IF`, `DATEDIFF`) is left to it and covered by tests/test_dialects.py.
"""

from __future__ import annotations

import decimal
import re

from sqlglot import exp
from sqlglot.dialects.mysql import MySQL

from sqlsecure.errors import NotSupportedError
from sqlsecure.planner.dialects import common
from sqlsecure.planner.dialects.common import (DATES, DATETIMES, FLOATS, INTEGERS, NUMBERS, STRINGS, TIMES,
                                               DialectContext, DType, bare_decimal, finite_test, like_escape, local_now,
                                               refuse_unknown_functions, rewrite_up, round_half_even, template, type_of)

ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.IntDiv)
COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ)

# MySQL's string-to-number conversion: the longest numeric prefix (after leading blanks), 0 if none.
MYSQL_NUMBER = ("CASE WHEN _s IS NULL THEN NULL ELSE COALESCE(TRY_CAST(NULLIF(REGEXP_EXTRACT(_s, "
                "'^[ \\t\\n\\r]*([+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?)', 1), '') AS DOUBLE), 0) END")

MYSQL_INTEGER = ("CASE WHEN _s IS NULL THEN NULL ELSE COALESCE(TRY_CAST(NULLIF(REGEXP_EXTRACT(_s, "
                 "'^[ \\t\\n\\r]*([+-]?[0-9]+)', 1), '') AS HUGEINT), 0) END")
DIV_PRECISION_INCREMENT = 4  # MySQL's default: `/` adds 4 decimals to the dividend's scale

# CAST / CONVERT targets MariaDB accepts (checked on MariaDB 10.11: anything else is a syntax error there),
# by the first word as sqlglot's MySQL tokenizer reads it; VARCHAR only with a length, FLOAT only without.
# (MariaDB's INET6 and UUID are left out: the engine has no such types, and MySQL has neither.)
# sqlglot reads several of the refused ones (BIGINT, TEXT) as the same type as an accepted one, so the
# check is on the query's tokens (planner/parse.py `check_cast_targets`), not on the parsed tree.
CAST_TARGETS = {"BINARY", "CHAR", "CHARACTER", "NCHAR", "DATE", "DATETIME", "TIME", "DECIMAL", "DEC", "DOUBLE",
                "FLOAT", "INT", "INT4", "INTEGER", "SIGNED", "SIGNED INTEGER", "UNSIGNED", "UNSIGNED INTEGER", "VARCHAR"}
CAST_TARGETS_NEED_LENGTH = {"VARCHAR"}
CAST_TARGETS_WITHOUT_LENGTH = {"FLOAT"}
PORTABLE_CAST_TARGETS = "BINARY, CHAR[(n)], DATE, DATETIME, DECIMAL[(m, d)], DOUBLE, FLOAT, SIGNED, TIME, UNSIGNED"
CAST_INSTEAD = {  # a refused target's nearest accepted one
    **dict.fromkeys(("BIGINT", "SMALLINT", "TINYINT", "MEDIUMINT", "INT1", "INT2", "INT3", "INT8",
                     "BOOL", "BOOLEAN", "BIT", "YEAR", "HUGEINT"), "SIGNED (UNSIGNED for a non-negative integer)"),
    **dict.fromkeys(("VARCHAR", "TEXT", "TINYTEXT", "MEDIUMTEXT", "LONGTEXT", "STRING", "NVARCHAR",
                     "CHARACTER VARYING"), "CHAR"),
    **dict.fromkeys(("NUMERIC", "FIXED", "NUMBER"), "DECIMAL(m, d)"),
    **dict.fromkeys(("REAL", "DOUBLE PRECISION", "FLOAT", "FLOAT4", "FLOAT8"), "DOUBLE"),
    **dict.fromkeys(("TIMESTAMP", "TIMESTAMPTZ"), "DATETIME"),
    **dict.fromkeys(("VARBINARY", "BLOB", "TINYBLOB", "MEDIUMBLOB", "LONGBLOB", "BYTEA"), "BINARY"),
}


def cast_target_refusal(target: str, has_length: bool) -> str | None:
    """Why MySQL / MariaDB reject `CAST(x AS target[(...)])`, with what to write instead; None if they accept it.

    >>> cast_target_refusal("SIGNED", False) is None, cast_target_refusal("VARCHAR", True) is None
    (True, True)
    >>> cast_target_refusal("BIGINT", False)
    'MySQL and MariaDB cannot cast to BIGINT: write SIGNED (UNSIGNED for a non-negative integer) instead; they cast to BINARY, CHAR[(n)], DATE, DATETIME, DECIMAL[(m, d)], DOUBLE, FLOAT, SIGNED, TIME, UNSIGNED'
    """
    target = " ".join(target.upper().split())
    if target in CAST_TARGETS and (has_length or target not in CAST_TARGETS_NEED_LENGTH) and not (
            has_length and target in CAST_TARGETS_WITHOUT_LENGTH):
        return None
    shown = f"{target}(...)" if has_length else target
    instead = f"write {CAST_INSTEAD[target]} instead; " if target in CAST_INSTEAD else ""
    return f"MySQL and MariaDB cannot cast to {shown}: {instead}they cast to {PORTABLE_CAST_TARGETS}"


# DATE_FORMAT / STR_TO_DATE specifiers with an exact DuckDB equivalent; any other one is refused.
MYSQL_TO_STRFTIME = {
    "a": "%a", "b": "%b", "c": "%-m", "d": "%d", "e": "%-d", "f": "%f", "H": "%H", "h": "%I", "I": "%I",
    "i": "%M", "j": "%j", "k": "%-H", "l": "%-I", "M": "%B", "m": "%m", "p": "%p", "r": "%I:%M:%S %p",
    "S": "%S", "s": "%S", "T": "%H:%M:%S", "U": "%U", "W": "%A", "w": "%w", "Y": "%Y", "y": "%y", "%": "%%",
}
# sqlglot's strftime-like spelling of MySQL's specifiers, back to MySQL's (one specifier at a time).
PARSED_TO_MYSQL = {python: mysql for mysql, python in MySQL.TIME_MAPPING.items() if len(python) <= 3}
DATE_UNITS = {"DAY", "WEEK", "MONTH", "QUARTER", "YEAR"}


def integer_division(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """`a DIV b`: NULL when b is 0, the quotient truncated toward zero, as an integer (a non-zero constant b
    needs no zero test).

    >>> from sqlglot import parse_one
    >>> integer_division(parse_one("SELECT 7 DIV 2, 7 DIV b", read="mysql"), None).sql("duckdb")
    'SELECT CAST(TRUNC(7 / 2) AS BIGINT), CAST(TRUNC(7 / NULLIF(b, 0)) AS BIGINT)'
    """
    def rewrite(node):
        if not isinstance(node, exp.IntDiv):
            return node
        divisor = "_b" if nonzero_constant(node.expression) else "NULLIF(_b, 0)"
        if type_of(node.this) in INTEGERS and type_of(node.expression) in INTEGERS:
            return template(f"_a // {divisor}", a=node.this, b=node.expression)
        return template(f"CAST(TRUNC(_a / {divisor}) AS BIGINT)", a=node.this, b=node.expression)

    return rewrite_up(tree, rewrite)


def constant_value(node: exp.Expression) -> decimal.Decimal | None:
    """The value of a numeric literal (through parentheses and minus signs), else None."""
    node = node.unnest()
    if isinstance(node, exp.Neg):
        inner = constant_value(node.this)
        return None if inner is None else -inner
    if not isinstance(node, exp.Literal) or node.is_string:
        return None
    try:
        return decimal.Decimal(node.this)
    except decimal.InvalidOperation:
        return None


def nonzero_constant(node: exp.Expression) -> bool:
    """Whether node is a numeric literal other than 0 (through parentheses and minus signs)."""
    value = constant_value(node)
    return value is not None and value != 0


def constant_divisors(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """`/` and `%` by a non-zero constant need no zero test: sqlglot writes MySQL's `x / c` as
    `x / NULLIF(c, 0)`, which the SPU takes for a division by a secret (a narrow range, a costly kernel);
    without it, the SPU divides by the constant exactly. A constant 0 keeps NULLIF (the answer is NULL).

    >>> from sqlglot import parse_one
    >>> constant_divisors(parse_one("SELECT x / 10000, x % -3, x / 0, x / y", read="mysql"), None).sql("duckdb")
    'SELECT x / 10000, x % -3, x / NULLIF(0, 0), x / NULLIF(y, 0)'
    """
    for node in tree.find_all(exp.Div, exp.Mod):
        if node.args.get("safe") and nonzero_constant(node.expression):
            node.set("safe", None)
    for node in list(tree.find_all(exp.Nullif)):
        if nonzero_constant(node.this) and constant_value(node.expression) == 0:
            node.replace(node.this.copy())  # NULLIF(c, 0) with c <> 0 is c
    return tree


def zero_divisors(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """MySQL's `/` and `%` by zero are NULL: sqlglot reads them as safe divisions, which its DuckDB writer turns
    into `x / NULLIF(y, 0)` only as it prints each one, and not the inner ones of a chain (`a / b / c` printed
    `a / b / NULLIF(c, 0)`: infinity where b is 0, or a failed query). Written into the tree, the NULLIF is
    there for every division, and the SPU and column control see the guarded divisor (it fails no row).

    >>> from sqlglot import parse_one
    >>> zero_divisors(parse_one("SELECT a / b / c, a % b % c", read="mysql"), None).sql("duckdb")
    'SELECT a / NULLIF(b, 0) / NULLIF(c, 0), a % NULLIF(b, 0) % NULLIF(c, 0)'
    """
    for node in list(tree.find_all(exp.Div, exp.Mod)):
        if node.args.get("safe"):
            divisor = node.expression
            guarded = exp.Nullif(this=divisor.copy(), expression=exp.Literal.number(0))
            guarded.type = divisor.type
            node.set("expression", guarded)
            node.set("safe", None)
    return tree


def mysql_number(node: exp.Expression) -> exp.Expression:
    """A string as MySQL reads it in arithmetic: its numeric prefix as a DOUBLE ('3abc' -> 3, 'x' -> 0)."""
    return exp.paren(template(MYSQL_NUMBER, s=node), copy=False)


def implicit_numbers(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """Strings in arithmetic, or compared with numbers, are converted as MySQL converts them.

    >>> from sqlglot import parse_one
    >>> from sqlglot.optimizer.annotate_types import annotate_types
    >>> "REGEXP_EXTRACT" in implicit_numbers(annotate_types(parse_one("SELECT '3' + 4")), None).sql("duckdb")
    True
    """
    def rewrite(node):
        if isinstance(node.args.get("expression"), exp.Interval):
            return node  # date arithmetic: date_arithmetic_types
        if isinstance(node, ARITHMETIC + (exp.Neg,)):
            for operand in (node.this, node.args.get("expression")):
                if operand is not None and type_of(operand) == DType.BOOLEAN:
                    operand.replace(exp.cast(operand.copy(), "INTEGER"))  # TRUE + 1 = 2
        operands = [node.this, node.args.get("expression")] if isinstance(node, ARITHMETIC + (exp.Neg,)) else []
        if isinstance(node, COMPARISONS):
            operands = [node.this, node.expression]
        elif isinstance(node, exp.In) and not node.args.get("query"):
            operands = [node.this, *node.expressions]
        elif isinstance(node, exp.Between):
            operands = [node.this, node.args["low"], node.args["high"]]
        if not isinstance(node, ARITHMETIC + (exp.Neg,)) and not {type_of(o) for o in operands} & NUMBERS:
            return node  # strings compared with strings (or dates) stay strings
        for operand in operands:
            if operand is not None and type_of(operand) in STRINGS:
                operand.replace(mysql_number(operand.copy()))
        return node

    return rewrite_up(tree, rewrite)


def mixed_extremes(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """GREATEST / LEAST of strings and numbers are refused: MySQL compares them as strings, MariaDB as
    numbers, DuckDB not at all (a string column) — no one meaning to give them. NULL where any argument is
    NULL is sqlglot's own transpilation (tests/test_dialects.py checks it against MariaDB).

    >>> from sqlglot import parse_one
    >>> from sqlglot.optimizer.annotate_types import annotate_types
    >>> mixed_extremes(annotate_types(parse_one("SELECT GREATEST('3', 4)")), None)
    Traceback (most recent call last):
    ...
    sqlsecure.errors.NotSupportedError: GREATEST('3', 4): GREATEST of strings and numbers (MySQL compares them as strings, MariaDB as numbers); CAST the arguments to one type
    """
    for node in tree.find_all(exp.Greatest, exp.Least):
        types = {type_of(a) for a in (node.this, *node.expressions) if not isinstance(a, exp.Null)}
        if types & STRINGS and types & NUMBERS:
            name = type(node).__name__.upper()
            raise NotSupportedError(f"{node.sql('mysql')}: {name} of strings and numbers (MySQL compares them as "
                                    "strings, MariaDB as numbers); CAST the arguments to one type")
    return tree


NUMERIC_FUNCTIONS = (exp.Abs, exp.Round, exp.Floor, exp.Ceil, exp.Sqrt, exp.Pow, exp.Exp, exp.Ln, exp.Log,
                     exp.Sign, exp.Sum, exp.Avg)


def numeric_arguments(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """A string given to a numeric function (ABS, ROUND, SUM, …) is read as MySQL reads it ('-3x' -> -3), a
    boolean as 1 or 0 (`AVG(x > 0)` is the fraction of rows where x > 0; DuckDB has no AVG(BOOLEAN))."""
    def rewrite(node):
        if isinstance(node, NUMERIC_FUNCTIONS):
            for argument in list(node.iter_expressions()):
                if type_of(argument) in STRINGS:
                    argument.replace(mysql_number(argument.copy()))
                elif type_of(argument) == DType.BOOLEAN:
                    argument.replace(exp.cast(argument.copy(), "INTEGER"))
        return node

    return rewrite_up(tree, rewrite)


DIFFERENT_BY_NAME = {  # DuckDB has these names with another meaning
    "YEARWEEK": "DuckDB's YEARWEEK counts ISO weeks, MySQL's (mode 0) weeks starting on Sunday",
}


def string_functions(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """LENGTH counts bytes ('é' is 2), SUBSTRING from position 0 is '' (DuckDB starts at 1); functions that
    DuckDB has under the same name with another meaning are refused."""
    def rewrite(node):
        if isinstance(node, exp.Length) and node.args.get("binary"):
            return exp.Anonymous(this="STRLEN", expressions=[exp.cast(node.this, "VARCHAR")])
        if isinstance(node, exp.Substring):
            start = node.args.get("start")
            if start is None or (isinstance(start, exp.Literal) and not start.is_string
                                 and float(start.this) != 0):
                return node
            return template("CASE WHEN _p = 0 AND _s IS NOT NULL THEN '' ELSE _whole END", p=start, s=node.this,
                            whole=node)
        if isinstance(node, exp.Anonymous) and node.name.upper() in DIFFERENT_BY_NAME:
            raise NotSupportedError(f"{node.name.upper()}(): {DIFFERENT_BY_NAME[node.name.upper()]}")
        return node

    return rewrite_up(tree, rewrite)


def truth_values(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """A number or a string used as a condition is true when it (a string: its numeric prefix) is not 0:
    `IF(x, a, b)` is `IF(x <> 0, a, b)` (IF(-3, 1, 2) = 1, IF('abc', 1, 2) = 2; NULL stays NULL, so false),
    which the SPU evaluates as a comparison instead of taking x for a 0/1 boolean.

    >>> from sqlglot import parse_one
    >>> from sqlglot.optimizer.annotate_types import annotate_types
    >>> truth_values(annotate_types(parse_one("SELECT IF(2.5, 1, 0)", read="mysql")), None).sql("duckdb")
    'SELECT CASE WHEN (2.5 <> 0) THEN 1 ELSE 0 END'
    """
    def condition(node):
        if node is None or isinstance(node, exp.Null):
            return
        kind = type_of(node)
        if kind in STRINGS:
            node.replace(exp.paren(exp.NEQ(this=mysql_number(node.copy()), expression=exp.Literal.number(0))))
        elif kind in NUMBERS - {DType.BOOLEAN}:
            node.replace(exp.paren(exp.NEQ(this=node.copy(), expression=exp.Literal.number(0))))

    def rewrite(node):
        if isinstance(node, exp.If | exp.Where | exp.Having | exp.Not):
            condition(node.this)
        elif isinstance(node, exp.Case) and node.this is None:
            for branch in node.args.get("ifs", []):
                condition(branch.this)
        elif isinstance(node, exp.And | exp.Or | exp.Xor):
            condition(node.this)
            condition(node.expression)
        return node

    return rewrite_up(tree, rewrite)


def mysql_temporal_number(node: exp.Expression) -> exp.Expression | None:
    """A DATE, DATETIME or TIME as MySQL reads it in arithmetic: 20240131, 20240131235959.000000, 235959."""
    kind = type_of(node)
    if kind in DATES:
        return template("CAST(STRFTIME(_d, '%Y%m%d') AS BIGINT)", d=node)
    if kind in DATETIMES:
        return template("CAST(STRFTIME(_d, '%Y%m%d%H%M%S.%f') AS DECIMAL(21, 6))", d=node)
    if kind in TIMES:
        return template("CAST(STRFTIME(DATE '2000-01-01' + _d, '%H%M%S') AS BIGINT)", d=node)
    return None


def temporal_numbers(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """Dates and times in arithmetic without an INTERVAL are numbers in MySQL: DATE '2024-03-01' -
    DATE '2024-02-28' is 20240301 - 20240228 = 73, not 2 days; datetime - datetime likewise."""
    def rewrite(node):
        if not isinstance(node, ARITHMETIC):
            return node
        if isinstance(node.this, exp.Interval) or isinstance(node.expression, exp.Interval):
            return node
        for key in ("this", "expression"):
            number = mysql_temporal_number(node.args[key])
            if number is not None:
                node.set(key, exp.paren(number, copy=False))
        return node

    return rewrite_up(tree, rewrite)


def branches(node: exp.Expression) -> list[exp.Expression]:
    """The value expressions of IFNULL/COALESCE, IF and CASE (the candidates for the result)."""
    if isinstance(node, exp.Coalesce):
        return [node.this, *node.expressions]
    if isinstance(node, exp.If):
        return [v for v in (node.args.get("true"), node.args.get("false")) if v is not None]
    if isinstance(node, exp.Case):
        return [i.args["true"] for i in node.args.get("ifs", [])] + ([node.args["default"]]
                                                                       if node.args.get("default") else [])
    return []


def as_mysql_string(value: exp.Expression, function: str) -> exp.Expression:
    """A non-string branch as the string MySQL makes of it (TRUE -> '1')."""
    kind = type_of(value)
    if kind == DType.BOOLEAN:
        return template("CAST(CAST(_v AS INTEGER) AS VARCHAR)", v=value)
    if kind in FLOATS and not isinstance(value, exp.Literal):
        raise NotSupportedError(
            f"{function} mixes a string with the floating-point value {value.sql('mysql')}: MySQL's text form "
            "of a DOUBLE differs from DuckDB's; CAST it to DECIMAL first")
    return exp.cast(value, "VARCHAR")


def mixed_type_results(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """IFNULL/COALESCE/IF/CASE with string and non-string results, or with dates and numbers, return a string
    in MySQL (`IFNULL(name, 0)` is '0' where name is NULL, `COALESCE(n, d)` '2024-02-10'), where DuckDB would
    try to make the string a number, or refuse to mix a date with a number."""
    def rewrite(node):
        values = branches(node)
        kinds = {type_of(v) for v in values if not isinstance(v, exp.Null)}
        dated = bool(kinds & (DATES | DATETIMES)) and bool(kinds & NUMBERS)
        if not dated and (not (kinds & STRINGS) or kinds <= STRINGS | {DType.UNKNOWN}):
            return node
        function = {exp.Coalesce: "IFNULL/COALESCE", exp.If: "IF", exp.Case: "CASE"}[type(node)]
        for value in values:
            if type_of(value) not in STRINGS | {DType.UNKNOWN} and not isinstance(value, exp.Null):
                value.replace(as_mysql_string(value, function))
        return node

    return rewrite_up(tree, rewrite)


def string_nullif(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """NULLIF of a string and a number compares them as numbers (the string's numeric prefix) and returns the
    first argument unchanged: `NULLIF(name, 1)` is 'Alice' ('Alice' reads as 0), where DuckDB would cast 'Alice'
    to a number and fail.

    >>> from sqlglot import parse_one
    >>> from sqlglot.optimizer.annotate_types import annotate_types
    >>> "REGEXP_EXTRACT" in string_nullif(annotate_types(parse_one("SELECT NULLIF('a', 1)")), None).sql("duckdb")
    True
    """
    def rewrite(node):
        if not isinstance(node, exp.Nullif) or {type_of(node.this), type_of(node.expression)} & STRINGS == set() \
                or not {type_of(node.this), type_of(node.expression)} & NUMBERS:
            return node
        if type_of(node.expression) in STRINGS:
            node.expression.replace(mysql_number(node.expression.copy()))
            return node
        return template("CASE WHEN _n = _b THEN NULL ELSE _a END", n=mysql_number(node.this.copy()), b=node.expression,
                        a=node.this)

    return rewrite_up(tree, rewrite)


def mysql_format(node: exp.Expression, function: str) -> str:
    """The format of DATE_FORMAT/STR_TO_DATE as the user wrote it (sqlglot holds it in strftime's notation)."""
    if not isinstance(node, exp.Literal) or not node.is_string:
        raise NotSupportedError(f"{function} needs a constant format string, not {node.sql('mysql')}")
    return re.sub(r"%-?.", lambda m: PARSED_TO_MYSQL.get(m.group(0), m.group(0)), node.this)


def strftime_format(mysql: str, function: str) -> str:
    """MySQL's format specifiers as DuckDB's; a specifier without an exact equivalent is refused.

    >>> strftime_format("%M %e, %Y %H:%i", "DATE_FORMAT")
    '%B %-d, %Y %H:%M'
    """
    def one(match: re.Match) -> str:
        spec = match.group(1)
        if spec not in MYSQL_TO_STRFTIME:
            raise NotSupportedError(
                f"{function}: the specifier %{spec} has no exact equivalent here (supported: "
                f"{' '.join('%' + s for s in sorted(MYSQL_TO_STRFTIME))})")
        return MYSQL_TO_STRFTIME[spec]

    return re.sub(r"%(.|$)", one, mysql)


def date_formats(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """DATE_FORMAT's and STR_TO_DATE's specifiers mean MySQL's (`%M` month name, `%i` minutes, `%e` day
    without padding); STR_TO_DATE of a string that does not match is NULL, as in MySQL."""
    def rewrite(node):
        if isinstance(node, exp.TimeToStr):
            function = "DATE_FORMAT"
        elif isinstance(node, (exp.StrToDate, exp.StrToTime)):
            function = "STR_TO_DATE"
            node.set("safe", True)
        else:
            return node
        form = strftime_format(mysql_format(node.args["format"], function), function)
        node.set("format", exp.Literal.string(form))
        return node

    return rewrite_up(tree, rewrite)


# Functions whose argument MySQL reads as a date or datetime, a string included (NULL if it is none).
DATE_ARGUMENT = (exp.LastDay, exp.Year, exp.Quarter, exp.Month, exp.Day, exp.DayOfMonth, exp.DayOfWeek, exp.DayOfYear,
                 exp.Week, exp.WeekOfYear, exp.Hour, exp.Minute, exp.Second, exp.TimeToStr, exp.Dayname, exp.Monthname)
# Functions of text that MySQL gives a number's decimal text (LPAD(7, 3, '0') = '007'); DuckDB refuses numbers.
TEXT_ARGUMENT = (exp.Pad, exp.Left, exp.Right, exp.Upper, exp.Lower, exp.Reverse, exp.Repeat, exp.Trim, exp.Substring,
                 exp.Replace, exp.Initcap)


def as_datetime(node: exp.Expression, kind: str = "TIMESTAMP") -> exp.Expression:
    """A string as MySQL reads it where a date is expected: a date or a datetime, NULL if it is neither."""
    read = exp.TryCast(this=node.copy(), to=exp.DataType.build("TIMESTAMP"))
    return read if kind == "TIMESTAMP" else exp.cast(read, kind)


def string_dates(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """A string where MySQL expects a date — DATEDIFF, LAST_DAY, YEAR … SECOND, DATE_FORMAT, a comparison
    with a DATE or DATETIME — is read as one, NULL if it is none. Runs after `date_arithmetic_types`, whose
    string ± INTERVAL is a string again (`LAST_DAY(ADDDATE('2024-01-01', n))`)."""
    def strings(*nodes):
        return [n for n in nodes if n is not None and type_of(n) in STRINGS | {DType.UNKNOWN}
                and not isinstance(n, exp.Null)]

    def rewrite(node):
        if isinstance(node, exp.DateDiff) and node.args.get("date_part_boundary") is not None:
            for argument in strings(node.this, node.expression):
                argument.replace(as_datetime(argument, "DATE"))
        elif isinstance(node, DATE_ARGUMENT):
            for argument in strings(node.this):
                argument.replace(as_datetime(argument, "DATE" if isinstance(node, exp.LastDay) else "TIMESTAMP"))
        elif isinstance(node, exp.Extract):
            for argument in strings(node.expression):
                argument.replace(as_datetime(argument))
        elif isinstance(node, COMPARISONS):
            sides = (node.left, node.right)
            for this, other in (sides, sides[::-1]):
                if type_of(other) in DATES | DATETIMES and strings(this) and not isinstance(this, exp.Literal):
                    this.replace(as_datetime(this, "DATE" if type_of(other) in DATES else "TIMESTAMP"))
        elif isinstance(node, TEXT_ARGUMENT) and type_of(node.this) in NUMBERS:
            node.set("this", exp.cast(node.this, "VARCHAR"))
        return node

    return rewrite_up(tree, rewrite)


def as_interval(argument: exp.Expression) -> tuple[exp.Expression, exp.Expression]:
    """ADDDATE's second argument as (amount, unit): an INTERVAL, or a number of days."""
    if isinstance(argument, exp.Interval):
        return argument.this, argument.args.get("unit") or exp.var("DAY")
    return argument, exp.var("DAY")


def add_date(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """ADDDATE(d, n) / SUBDATE(d, n) (n days or an INTERVAL) are DATE_ADD / DATE_SUB.

    >>> from sqlglot import parse_one
    >>> add_date(parse_one("SELECT ADDDATE(d, 5)", read="mysql"), None).sql("mysql")
    'SELECT DATE_ADD(d, INTERVAL 5 DAY)'
    """
    def rewrite(node):
        if not isinstance(node, exp.Anonymous) or node.name.upper() not in ("ADDDATE", "SUBDATE"):
            return node
        if len(node.expressions) != 2:
            raise NotSupportedError(f"{node.name.upper()} takes two arguments: a date and a number of days "
                                    "or an INTERVAL")
        day, step = node.expressions
        amount, unit = as_interval(step)
        kind = exp.DateAdd if node.name.upper() == "ADDDATE" else exp.DateSub
        return kind(this=day, expression=amount, unit=unit)

    return rewrite_up(tree, rewrite)


def string_date_arithmetic(node: exp.Expression, day: exp.Expression, unit: str) -> exp.Expression:
    """A string ± INTERVAL: a string again, a date's if it held a date and the unit is days or longer."""
    def moved(kind: str) -> exp.Expression:
        copy = node.copy()
        copy.set("this", exp.TryCast(this=day.copy(), to=exp.DataType.build(kind)))
        return copy

    if unit not in DATE_UNITS:
        return template("CAST(_t AS VARCHAR)", t=moved("TIMESTAMP"))
    return template("CASE WHEN LENGTH(TRIM(_s)) <= 10 THEN CAST(CAST(_d AS DATE) AS VARCHAR) "
                    "ELSE CAST(_t AS VARCHAR) END", s=day, d=moved("DATE"), t=moved("TIMESTAMP"))


def date_arithmetic_types(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """A DATE plus or minus days, weeks, months, quarters or years is a DATE in MySQL (DuckDB makes a
    TIMESTAMP of it); a string plus or minus an interval is a string, keeping its time of day if it had one."""
    def rewrite(node):
        if isinstance(node, (exp.DateAdd, exp.DateSub)):
            unit = node.text("unit").upper() or "DAY"
        elif isinstance(node, (exp.Add, exp.Sub)) and isinstance(node.expression, exp.Interval):
            unit = node.expression.text("unit").upper() or "DAY"
        else:
            return node
        day = node.this.this if isinstance(node.this, exp.TsOrDsToDate) else node.this
        if type_of(day) in STRINGS:
            return string_date_arithmetic(node, day, unit)
        if unit in DATE_UNITS and type_of(day) in DATES:
            return exp.cast(node, "DATE")
        return node

    return rewrite_up(tree, rewrite)


def current_time_in_zone(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """CURDATE()/NOW()/CURTIME() (and their synonyms) read the wall clock of the federation's time_zone,
    in whole seconds; UTC_DATE()/UTC_TIMESTAMP() read UTC's."""
    def rewrite(node):
        name = node.name.upper() if isinstance(node, exp.Anonymous) else ""
        if isinstance(node, (exp.UtcTimestamp, exp.UtcDate)):
            now = local_now("UTC")
            return now if isinstance(node, exp.UtcTimestamp) else exp.cast(now, "DATE")
        if isinstance(node, (exp.CurrentTimestamp, exp.Localtime, exp.Localtimestamp)) or name in (
                "NOW", "SYSDATE", "LOCALTIMESTAMP", "LOCALTIME"):
            return local_now(context.time_zone)
        if isinstance(node, exp.CurrentDate) or name in ("CURDATE",):
            return exp.cast(local_now(context.time_zone), "DATE")
        if isinstance(node, exp.CurrentTime) or name in ("CURTIME",):
            return exp.cast(local_now(context.time_zone), "TIME")
        return node

    return rewrite_up(tree, rewrite)


def exact_scale(node: exp.Expression) -> int | None:
    """The decimal scale MySQL gives an exact (integer or DECIMAL) expression (`/` and AVG: 4 more decimals
    than the dividend, at most 30); None if it is approximate.

    >>> from sqlglot import parse_one
    >>> exact_scale(parse_one("1.25 * 2 + 1 / 3"))
    4
    """
    return common.exact_scale(node, lambda s: min(s + DIV_PRECISION_INCREMENT, 30))


def exact_division(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """`/` and AVG of exact values are DECIMALs in MySQL, rounded to 4 more decimals than the dividend
    (div_precision_increment): 2 / 3 = 0.6667, AVG of 1, 2, 2 = 1.6667. The rounding is applied once, to the
    outermost arithmetic around the division, as MySQL rounds only the result (1 / 3 * 3 = 1.0000); SUM and
    AVG add up the unrounded quotients (SUM(v / 3) over three rows of 1 is 1.0000, not 0.9999).

    >>> from sqlglot import parse_one
    >>> exact_division(parse_one("SELECT SUM(1 / 3) FROM t", read="mysql"), None).sql("duckdb")
    'SELECT ROUND(CAST(SUM(1 / NULLIF(3, 0)) AS DECIMAL(38, 9)), 4) FROM t'
    """
    enclosing = ARITHMETIC + (exp.Round, exp.Sum, exp.Avg)
    def outer(node):
        parent = node.parent
        while isinstance(parent, exp.Paren):
            parent = parent.parent
        return parent

    def needs_rounding(node):
        if not isinstance(node, ARITHMETIC + (exp.Avg, exp.Sum)) or isinstance(outer(node), enclosing):
            return False  # the enclosing arithmetic, SUM or AVG (or the user's ROUND) is the result
        return any(isinstance(n, exp.Div | exp.Avg) for n in node.walk()) and exact_scale(node) is not None

    def rewrite(node):
        if needs_rounding(node):
            scale = exact_scale(node)  # rounded half away from zero as a DECIMAL (DuckDB's DOUBLE rounds to even)
            exact = exp.cast(node.copy(), exp.DataType.build(f"DECIMAL(38, {quotient_scale(node, scale)})"))
            return exp.Round(this=exact, decimals=exp.Literal.number(scale))
        if (isinstance(outer(node), exp.Round) and outer(node).this in (node, node.parent)
                and any(isinstance(n, exp.Div | exp.Avg) for n in node.walk()) and exact_scale(node) is not None):
            # the user's ROUND of an exact quotient rounds the exact value half away from zero
            return exp.cast(node.copy(), exp.DataType.build(f"DECIMAL(38, {quotient_scale(node, exact_scale(node))})"))
        return node

    return rewrite_up(tree, rewrite)


GUARD_SCALE = 9  # DOUBLE quotients are held to 9 decimals before MySQL's rounding: a DOUBLE's error stays below them


def quotient_scale(node: exp.Expression, scale: int) -> int:
    """The scale the DOUBLE that DuckDB computes for `node` is held at before it is rounded to MySQL's `scale`:
    the digits of its exact value where they are known and few (`x / 10000` of an integer has 4: no guard
    digits, so the SPU keeps |x / 10000| < 2^45 / 10^4 instead of 2^45 / 10^9), else `GUARD_SCALE` (a
    quotient by a secret, AVG), so that DuckDB's DOUBLE, a hair off a tie, rounds as the exact quotient.

    >>> from sqlglot import parse_one
    >>> [quotient_scale(parse_one(q), 4) for q in ("1 / 10000", "3 / 64", "1 / 3", "AVG(1)")]
    [4, 6, 9, 9]
    """
    digits = exact_digits(node)
    return max(scale, digits) if digits is not None and digits <= max(GUARD_SCALE, scale) else \
        max(GUARD_SCALE, scale)


def exact_digits(node: exp.Expression) -> int | None:
    """How many decimals the exact value of an exact expression has at most (a quotient by a constant
    2^i 5^j 10^k ends), None where it may have infinitely many (a quotient by anything else, AVG)."""
    if isinstance(node, exp.Paren | exp.Neg | exp.Abs | exp.Sum | exp.Max | exp.Min):
        return exact_digits(node.this)
    if isinstance(node, exp.Div):
        dividend, divisor = exact_digits(node.this), terminating_reciprocal(node.expression)
        return None if dividend is None or divisor is None else max(0, dividend - divisor[1]) + divisor[0]
    if isinstance(node, exp.Add | exp.Sub | exp.Mul):
        left, right = exact_digits(node.this), exact_digits(node.expression)
        if left is None or right is None:
            return None
        return left + right if isinstance(node, exp.Mul) else max(left, right)
    if isinstance(node, exp.Avg | exp.Mod):
        return None
    return exact_scale(node)


def terminating_reciprocal(node: exp.Expression) -> tuple[int, int] | None:
    """(d, k) for a non-zero constant c = m / 10^k whose m is ±2^i 5^j: x / c = x * 10^k / m adds at most
    d = max(i, j) decimals; None for any other divisor."""
    value = constant_value(node)
    if not value:
        return None
    _, digits, exponent = value.normalize().as_tuple()
    m, k = int("".join(map(str, digits))), max(0, -exponent)
    m *= 10 ** max(0, exponent)
    powers = {}
    for prime in (2, 5):
        powers[prime] = 0
        while m % prime == 0:
            m, powers[prime] = m // prime, powers[prime] + 1
    return (max(powers.values()), k) if m == 1 else None


def weekdays(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """DAYOFWEEK is 1 (Sunday) .. 7, WEEKDAY 0 (Monday) .. 6, WEEK(d) (mode 0) the %U week; WEEK with
    another mode is refused."""
    def rewrite(node):
        if isinstance(node, exp.DayOfWeek):
            return template("(DAYOFWEEK(_d) + 1)", d=node.this)
        if isinstance(node, exp.Anonymous) and node.name.upper() == "WEEKDAY" and len(node.expressions) == 1:
            return template("(ISODOW(CAST(_d AS DATE)) - 1)", d=node.expressions[0])
        if isinstance(node, exp.Week):
            mode = node.args.get("mode")
            if mode is not None and not (isinstance(mode, exp.Literal) and mode.this == "0"):
                raise NotSupportedError(f"WEEK with mode {mode.sql('mysql')}: only mode 0 (the default, weeks "
                                        "starting on Sunday) has an exact equivalent here")
            return template("CAST(STRFTIME(_d, '%U') AS BIGINT)", d=node.this)
        return node

    return rewrite_up(tree, rewrite)


def whole_unit_differences(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """TIMESTAMPDIFF counts whole units (2024-01-31 to 2024-02-10 is 0 months), not boundaries crossed."""
    def rewrite(node):
        if not isinstance(node, exp.TimestampDiff):
            return node
        unit = (node.text("unit") or "DAY").upper()
        return exp.Anonymous(this="DATE_SUB", expressions=[
            exp.Literal.string(unit), exp.cast(node.expression, "TIMESTAMP"), exp.cast(node.this, "TIMESTAMP")])

    return rewrite_up(tree, rewrite)


def string_casts(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """CAST(string AS SIGNED/UNSIGNED/DECIMAL/DOUBLE) reads the string's numeric prefix, as MySQL does
    ('3abc' -> 3; an integer cast takes the integer prefix: '3.7' -> 3)."""
    def rewrite(node):
        if not isinstance(node, exp.Cast) or type_of(node.this) not in STRINGS:
            return node
        target = node.to.this
        if target in INTEGERS:
            node.set("this", exp.paren(template(MYSQL_INTEGER, s=node.this), copy=False))
        elif target in NUMBERS:
            node.set("this", mysql_number(node.this))
        return node

    return rewrite_up(tree, rewrite)


def default_decimal(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """CAST(x AS DECIMAL) without a precision is DECIMAL(10, 0) in MySQL (2.567 -> 3), not DuckDB's
    DECIMAL(18, 3).

    >>> from sqlglot import parse_one
    >>> default_decimal(parse_one("SELECT CAST(x AS DECIMAL)", read="mysql"), None).sql("duckdb")
    'SELECT CAST(x AS DECIMAL(10, 0))'
    """
    def rewrite(node):
        if bare_decimal(node):
            node.set("to", exp.DataType.build("DECIMAL(10, 0)"))
        return node

    return rewrite_up(tree, rewrite)


def approximate_rounding(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """ROUND of a DOUBLE rounds half to even in MySQL (ROUND(2.5e0) = 2); exact values round half away.
    The digits must be a whole constant (MySQL's ROUND(x, column) is refused)."""
    def rewrite(node):
        if not (isinstance(node, exp.Round) and type_of(node.this) in FLOATS and not isinstance(node.this, exp.Literal)):
            return node
        digits = node.args.get("decimals") or exp.Literal.number(0)
        literal = digits.this if isinstance(digits, exp.Neg) else digits
        d = literal.to_py() if isinstance(literal, exp.Literal) and not literal.is_string else None
        d = -d if isinstance(digits, exp.Neg) and isinstance(d, int) else d
        if not isinstance(d, int):
            raise NotSupportedError(f"{node.sql('mysql')}: ROUND of a DOUBLE to a number of digits that is not a "
                                    "whole constant")
        return round_half_even(node.this, d)

    return rewrite_up(tree, rewrite)


def concat_strings(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """CONCAT's arguments are strings in MySQL (CONCAT(2.5) is '2.5', TRUE is '1')."""
    def rewrite(node):
        if isinstance(node, exp.Concat):
            for value in node.expressions:
                if type_of(value) not in STRINGS | {DType.UNKNOWN} and not isinstance(value, exp.Null):
                    value.replace(as_mysql_string(value, "CONCAT"))
        return node

    return rewrite_up(tree, rewrite)


def unix_time_in_zone(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """FROM_UNIXTIME(n) is the wall-clock time of the federation's time_zone, a TIMESTAMP."""
    def rewrite(node):
        if isinstance(node, exp.UnixToTime) and node.args.get("format") is None:
            zone = exp.Literal.string(context.time_zone).sql()
            return template(f"CAST(TIMEZONE({zone}, TO_TIMESTAMP(_n)) AS TIMESTAMP)", n=node.this)
        return node

    return rewrite_up(tree, rewrite)


def two_argument_atan(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """MySQL's ATAN(y, x) is ATAN2(y, x); DuckDB's ATAN takes one argument.

    >>> from sqlglot import parse_one
    >>> two_argument_atan(parse_one("SELECT ATAN(y, x), ATAN(y)", read="mysql"), None).sql("duckdb")
    'SELECT ATAN2(y, x), ATAN(y)'
    """
    def rewrite(node):
        if isinstance(node, exp.Atan) and node.args.get("expression") is not None:
            return exp.Atan2(this=node.this, expression=node.expression)
        return node

    return rewrite_up(tree, rewrite)


DOMAIN_TESTS = {exp.Sqrt: "_v >= 0", exp.Ln: "_v > 0", exp.Asin: "_v BETWEEN -1 AND 1", exp.Acos: "_v BETWEEN -1 AND 1"}


def domain_nulls(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """SQRT of a negative, LN / LOG / LOG2 / LOG10 of 0 or a negative (or to a base <= 0 or 1), ASIN / ACOS
    beyond ±1 are NULL in MySQL, where DuckDB gives NaN or -infinity (and the SPU refuses the row): the
    argument outside the domain is made NULL first.

    >>> from sqlglot import parse_one
    >>> domain_nulls(parse_one("SELECT SQRT(x), LOG(b, y)", read="mysql"), None).sql("duckdb")
    'SELECT SQRT(CASE WHEN x >= 0 THEN x END), LOG(CASE WHEN b > 0 AND b <> 1 THEN b END, CASE WHEN y > 0 THEN y END)'
    """
    def within(value: exp.Expression, test: str) -> exp.Expression:
        if isinstance(value, exp.Literal) and not value.is_string and holds_for_literal(test, value):
            return value
        return exp.Case(ifs=[exp.If(this=template(test, v=value), true=value.copy())])

    def rewrite(node):
        if type(node) in DOMAIN_TESTS:
            node.set("this", within(node.this, DOMAIN_TESTS[type(node)]))
        elif isinstance(node, exp.Log) and node.args.get("expression") is not None:
            node.set("this", within(node.this, "_v > 0 AND _v <> 1"))
            node.set("expression", within(node.expression, "_v > 0"))
        return node

    return rewrite_up(tree, rewrite)


def holds_for_literal(test: str, literal: exp.Literal) -> bool:
    """Whether `test` holds for a numeric literal (LOG(2, x)'s base needs no guard)."""
    v = decimal.Decimal(literal.this)
    return {"_v >= 0": v >= 0, "_v > 0": v > 0, "_v BETWEEN -1 AND 1": -1 <= v <= 1,
            "_v > 0 AND _v <> 1": v > 0 and v != 1}[test]


def out_of_range(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """EXP, POW/POWER and COT whose finite arguments give no finite DOUBLE (EXP(1000), POW(-8, 0.5), COT(0))
    raise "DOUBLE value is out of range" in MySQL, where DuckDB returns infinity or NaN: the same error,
    written as the guard `postgres.checked_value` reads (the SPU refuses such a counted row with DataError;
    the enclave, which raises no ERROR, refuses the guard at plan time).

    >>> from sqlglot import parse_one
    >>> out_of_range(parse_one("SELECT EXP(x)", read="mysql"), None).sql("duckdb")
    "SELECT CASE WHEN ISFINITE(x) AND NOT ISFINITE(EXP(x)) THEN ERROR('EXP(x): DOUBLE value is out of range, an error in MySQL') ELSE EXP(x) END"
    """
    def rewrite(node):
        if not isinstance(node, (exp.Exp, exp.Pow, exp.Cot)):
            return node
        message = exp.Literal.string(f"{node.sql(dialect='mysql')}: DOUBLE value is out of range, an error in MySQL")
        return exp.Case(ifs=[exp.If(this=finite_test(node), true=exp.Anonymous(this="ERROR", expressions=[message]))],
                        default=node.copy())

    return rewrite_up(tree, rewrite)


RULES = (mixed_extremes, default_decimal, add_date, string_casts, truth_values, string_nullif, implicit_numbers,
         numeric_arguments, temporal_numbers, constant_divisors, exact_division, integer_division, approximate_rounding, mixed_type_results, concat_strings,
         date_formats, date_arithmetic_types, string_dates, weekdays, whole_unit_differences, current_time_in_zone,
         unix_time_in_zone, string_functions, two_argument_atan, domain_nulls, out_of_range, like_escape,
         refuse_unknown_functions, zero_divisors)
