"""Helpers shared by the dialect rules: column types, DuckDB templates, the time zone."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import duckdb
import sqlglot
from sqlglot import exp

from sqlsecure.errors import NotSupportedError

DType = exp.DataType.Type
STRINGS = {DType.VARCHAR, DType.CHAR, DType.TEXT, DType.NVARCHAR, DType.NCHAR}
INTEGERS = set(exp.DataType.INTEGER_TYPES)
FLOATS = {DType.FLOAT, DType.DOUBLE}
DATES = {DType.DATE, DType.DATE32}
DATETIMES = set(exp.DataType.TEMPORAL_TYPES) - DATES - {DType.TIME, DType.TIMETZ}
TIMES = {DType.TIME, DType.TIMETZ}
NUMBERS = set(exp.DataType.NUMERIC_TYPES) | {DType.BOOLEAN}


@dataclass(frozen=True)
class DialectContext:
    """What a rule may need besides the tree: the dialect, and the zone of CURDATE()/NOW()."""

    dialect: str
    time_zone: str = "UTC"


def type_of(node: exp.Expression) -> DType:
    """The annotated type of a node (UNKNOWN when sqlglot could not tell, e.g. a bare NULL)."""
    return node.type.this if node.type is not None else DType.UNKNOWN


def template(sql: str, **parts: exp.Expression) -> exp.Expression:
    """A DuckDB expression `sql` whose placeholder columns `_name` are replaced by `parts[name]`.

    >>> template("_a // NULLIF(_b, 0)", a=exp.column("x"), b=exp.Literal.number(2)).sql("duckdb")
    'x // NULLIF(2, 0)'
    """
    tree = sqlglot.parse_one(sql, read="duckdb")
    for column in list(tree.find_all(exp.Column)):
        name = column.name
        if name.startswith("_") and name[1:] in parts and not column.table:
            column.replace(parts[name[1:]].copy())
    return tree


def rewrite_up(tree: exp.Expression, rewrite) -> exp.Expression:
    """Apply `rewrite(node) -> node` to every node, children before parents, so that a pattern nested in
    another (`(a DIV b) DIV c`) is rewritten at every depth. (sqlglot's `transform` does not descend into
    the node that replaces one.)

    >>> import sqlglot
    >>> def double(n): return exp.Mul(this=n.copy(), expression=exp.Literal.number(2)) if n.is_int else n
    >>> rewrite_up(sqlglot.parse_one("1 + (3 + 4)"), double).sql()
    '1 * 2 + (3 * 2 + 4 * 2)'
    """
    for node in reversed(list(tree.walk(bfs=False))):
        new = rewrite(node)
        if new is not node:
            if node is tree:
                return new
            node.replace(new)
    return tree


def local_now(time_zone: str) -> exp.Expression:
    """The statement's current time as a TIMESTAMP on the wall clock of `time_zone` (whole seconds)."""
    return template(f"CAST(DATE_TRUNC('second', TIMEZONE({exp.Literal.string(time_zone).sql()}, "
                    "CURRENT_TIMESTAMP)) AS TIMESTAMP)")


@cache
def duckdb_function_names() -> frozenset[str]:
    """The names of DuckDB's built-in functions (a constant of the installed DuckDB)."""
    with duckdb.connect(":memory:") as con:
        return frozenset(n.upper() for (n,) in con.execute("SELECT DISTINCT function_name FROM duckdb_functions()")
                         .fetchall())


SQL_FORMS = {"CAST", "TRY_CAST", "COALESCE", "EXTRACT", "EXISTS", "GROUPING", "IFNULL"}  # syntax, not functions
ENGINE_FUNCTIONS = {"GEODIST"}  # SCQL's, evaluated by the SPU (planner/geodist.py rewrites the plaintext ones)
CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\(")


def joined_acronyms(name: str) -> str:
    """`J_S_O_N_OBJECT_AGG` -> `JSON_OBJECT_AGG`: sqlglot's name of `JSONObjectAgg`, a run of one-letter parts
    being one word as the user writes it."""
    words: list[str] = []
    letters: list[str] = []
    for part in [*name.split("_"), ""]:
        if len(part) == 1:
            letters.append(part)
            continue
        words += ["".join(letters)] if len(letters) > 1 else letters
        letters = []
        words += [part] if part else []
    return "_".join(words)


def refuse_unknown_functions(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    """A function of the dialect that neither sqlglot nor a rule made into one DuckDB has (MySQL's ELT, MID)
    is refused at plan time, by name, rather than failing at a party at run time."""
    for node in tree.find_all(exp.Func):
        call = CALL.match(node.sql(dialect="duckdb"))
        name = call.group(1).upper() if call else None
        if name and name not in SQL_FORMS | ENGINE_FUNCTIONS and name not in duckdb_function_names():
            source = node.name.upper() if isinstance(node, exp.Anonymous) else joined_acronyms(node.sql_name())
            raise NotSupportedError(f"{source}() has no equivalent here in the {context.dialect} dialect "
                                    "(see docs/federation.md, Dialects)")
    return tree


# rint(x * 10^d) / 10^d, ties to even (MySQL's and PostgreSQL's ROUND of a DOUBLE), written with ROUND (ties
# away from zero), FLOOR, ABS and a comparison, which every device evaluates (the SPU exactly on its encoding).
ROUND_HALF_EVEN = ("CASE WHEN ABS(_y) - FLOOR(ABS(_y)) = 0.5 AND CAST(FLOOR(ABS(_y)) AS BIGINT) % 2 = 0 "
                   "THEN (CASE WHEN _y < 0 THEN -FLOOR(ABS(_y)) ELSE FLOOR(ABS(_y)) END) _back ELSE ROUND(_x, _d) END")


def round_half_even(x: exp.Expression, d: int) -> exp.Expression:
    """x rounded to d digits, ties to even, in DuckDB SQL every device evaluates.

    >>> round_half_even(exp.column("x"), 0).sql("duckdb")
    '(CASE WHEN ABS((x)) - FLOOR(ABS((x))) = 0.5 AND CAST(FLOOR(ABS((x))) AS BIGINT) % 2 = 0 THEN (CASE WHEN (x) < 0 THEN -FLOOR(ABS((x))) ELSE FLOOR(ABS((x))) END) / 1 ELSE ROUND(x, 0) END)'
    """
    inner = exp.paren(x.copy(), copy=False)
    scale = exp.Literal.number(10 ** abs(d))
    y = inner if d == 0 else exp.paren(exp.Mul(this=inner, expression=scale) if d > 0 else
                                       exp.Div(this=inner, expression=scale), copy=False)
    back = " / 1" if d == 0 else (" / _s" if d > 0 else " * _s")
    return exp.paren(template(ROUND_HALF_EVEN.replace(" _back", back), y=y, x=x, d=exp.Literal.number(d), s=scale),
                     copy=False)


DUCKDB_DECIMAL_DIGITS = 38  # DuckDB's widest DECIMAL (a HUGEINT); MySQL's holds 65 digits, PostgreSQL's 1000


def refuse_wide_decimals(tree: exp.Expression, dialect: str) -> None:
    """Refuse a DECIMAL(p, s) with p > 38, naming it (NotSupportedError): the parties compute in DuckDB,
    whose DECIMAL holds 38 digits at most, and no narrower type gives the dialect's answer for every value
    (DECIMAL(38, s') keeps fewer digits or another scale; DOUBLE rounds). Run before anything is bound,
    so check, EXPLAIN and execution refuse it alike.

    >>> import sqlglot
    >>> refuse_wide_decimals(sqlglot.parse_one("SELECT CAST(x AS DECIMAL(38, 30))", read="mysql"), "mysql")
    >>> refuse_wide_decimals(sqlglot.parse_one("SELECT CAST(x AS DECIMAL(64, 30))", read="mysql"), "mysql")
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sqlsecure.errors.NotSupportedError: CAST(x AS DECIMAL(64, 30)): DECIMAL(64, 30) has 64 digits, ...
    """
    for node in tree.find_all(exp.DataType):
        precision = _decimal_precision(node)
        if precision is None or precision <= DUCKDB_DECIMAL_DIGITS:
            continue
        where = node.parent if isinstance(node.parent, (exp.Cast, exp.TryCast)) else node
        raise NotSupportedError(
            f"{where.sql(dialect=dialect)}: {node.sql(dialect=dialect)} has {precision} digits, more than the "
            f"{DUCKDB_DECIMAL_DIGITS} of DuckDB's DECIMAL, in which the parties compute; no narrower type gives "
            f"{dialect}'s answer for every value, so it is refused: CAST to DECIMAL(38, s) with the digits the "
            "values need (or to DOUBLE)")


def exact_scale(node: exp.Expression, quotient=None, most: int = 30) -> int | None:
    """The decimals an exact (integer or DECIMAL) expression holds, composed through + - * % (at most
    `most`); None if it is approximate (a DOUBLE, a string, something not known here). `quotient(s)`: the
    dialect's scale of a / or AVG whose dividend has scale s (None: not exact).

    >>> from sqlglot import parse_one
    >>> exact_scale(parse_one("1.25 * 2 + 3"))
    2
    """
    def scale(e):
        return exact_scale(e, quotient, most)

    if isinstance(node, exp.Paren | exp.Neg | exp.Abs | exp.Sum | exp.Max | exp.Min):
        return scale(node.this)
    if isinstance(node, exp.Null) or isinstance(node, exp.Count | exp.IntDiv):
        return 0
    if isinstance(node, exp.Literal):
        text = node.this
        if node.is_string or "e" in text.lower():
            return None
        return len(text.split(".")[1]) if "." in text else 0
    if isinstance(node, exp.Avg | exp.Div):
        left = scale(node.this)
        right = scale(node.expression) if isinstance(node, exp.Div) else 0
        return None if quotient is None or left is None or right is None else quotient(left)
    if isinstance(node, exp.Add | exp.Sub | exp.Mul | exp.Mod):
        left, right = scale(node.this), scale(node.expression)
        if left is None or right is None:
            return None
        return min(left + right if isinstance(node, exp.Mul) else max(left, right), most)
    kind = type_of(node)
    if kind in INTEGERS:
        return 0
    if kind == DType.DECIMAL and not isinstance(node, exp.Literal):
        params = node.type.expressions
        return int(params[1].name) if len(params) > 1 else 0
    return None


def bare_decimal(node: exp.Expression) -> bool:
    """Whether `node` is a CAST to DECIMAL / NUMERIC written without a precision: its meaning is each
    dialect's own (MySQL: DECIMAL(10, 0); PostgreSQL: the value's own digits; DuckDB: DECIMAL(18, 3))."""
    return isinstance(node, (exp.Cast, exp.TryCast)) and node.to.this == DType.DECIMAL and not node.to.expressions


def _decimal_precision(node: exp.DataType) -> int | None:
    """p of a DECIMAL(p[, s]) / NUMERIC(p[, s]) written with its precision, else None."""
    if node.this != DType.DECIMAL or not node.expressions:
        return None
    written = node.expressions[0].name
    return int(written) if written.isdigit() else None


def like_escape(tree: exp.Expression, context: DialectContext) -> exp.Expression:
    r"""LIKE / ILIKE escape with a backslash in PostgreSQL and MySQL ('a_b' LIKE 'a\_%'), DuckDB's with nothing unless
    ESCAPE says so: a pattern with a backslash, or not a constant, is given ESCAPE '\'.

    >>> from sqlglot import parse_one
    >>> like_escape(parse_one(r"SELECT s LIKE 'a\_%', s ILIKE 'a%'", read="postgres"), None).sql("duckdb")
    "SELECT s LIKE 'a\\_%' ESCAPE '\\', s ILIKE 'a%'"
    """
    def rewrite(node):
        if not isinstance(node, (exp.Like, exp.ILike)) or isinstance(node.parent, exp.Escape):
            return node
        pattern = node.expression
        if isinstance(pattern, exp.Literal) and pattern.is_string and "\\" not in pattern.this:
            return node
        return exp.Escape(this=node.copy(), expression=exp.Literal.string("\\"))

    return rewrite_up(tree, rewrite)


def finite_test(r: exp.Expression) -> exp.Expression:
    """Whether a function's result r is NaN or infinite though its arguments are finite (the guards of
    `postgres.domain_errors` and `mysql.out_of_range`, read by `postgres.checked_value`)."""
    finite = [exp.Anonymous(this="ISFINITE", expressions=[a.copy()]) for a in r.iter_expressions()]
    return exp.and_(*finite, exp.not_(exp.Anonymous(this="ISFINITE", expressions=[r.copy()])), copy=False)
