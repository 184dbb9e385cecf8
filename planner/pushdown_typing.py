"""Plan-time typing of the work a party runs alone, so that `check`, EXPLAIN and execution agree.

A party runs its part of a plan as SQL text: in its own DuckDB, or (a PostgreSQL or other ADBC source)
partly in its own database, whose rules for types are stricter than DuckDB's. Whatever would fail there
for a reason the query and the catalog already tell is refused here, naming the function or operator,
before anything runs (and so the owner's database never gets to say anything about it):

- `type_query`: the query, typed with the catalog's column types by the rules the SPU types its
  expressions with, whichever device will run it: CASE / IF / COALESCE / GREATEST / LEAST choose
  among values of one family (numbers, text, dates with timestamps, times, booleans; a text constant
  beside dates is a date, beside anything else text); comparisons, BETWEEN, IN lists and NULLIF
  compare one family (a text constant beside a number or a date must read as one); a CAST of a
  constant must succeed; a condition (WHERE, HAVING, ON, AND / OR / NOT, CASE WHEN) is a boolean.
  Numeric constants and + - * % over them are typed as DuckDB types them (`duckdb_numeric_types`:
  `0.3` is DECIMAL(2,1), `BIGINT * 0.3` DECIMAL(21,1); MySQL's and PostgreSQL's are exact too).
- `bind_pushdown`: each party's SQL of the plan (`RunLocal`: whole single-party queries, owners' flags,
  padded aggregates, the parts planner/place_local.py sends) bound to empty tables of the catalog's
  types in a private in-memory DuckDB (`typing_mirror`, one per catalog), which refuses what DuckDB's
  binder refuses (a function without an overload for its arguments' types, a function DuckDB lacks).
"""

from __future__ import annotations

import functools

import duckdb
from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types

from sqlsecure.connectors.duckdb_store import located_expression
from sqlsecure.errors import NotSupportedError, PlanError
from sqlsecure.executors.spu.ranges import EXTREMES, choices
from sqlsecure.planner.catalog import Catalog
from sqlsecure.planner.geodist import with_great_circle
from sqlsecure.planner.physical import PhysicalPlan, RunLocal

T = exp.DataType.Type
FAMILIES = (("text", exp.DataType.TEXT_TYPES), ("number", exp.DataType.NUMERIC_TYPES),
            ("date", {T.DATE, T.DATE32, T.DATETIME, T.TIMESTAMP, T.TIMESTAMPTZ, T.TIMESTAMPLTZ, T.TIMESTAMP_S,
                      T.TIMESTAMP_MS, T.TIMESTAMP_NS}),
            ("time", {T.TIME, T.TIMETZ}), ("boolean", {T.BOOLEAN}))
COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ, exp.Nullif)
CHOOSERS = (exp.Case, exp.If, exp.Coalesce, *EXTREMES)
CONDITIONS = {exp.Where: ("this",), exp.Having: ("this",), exp.Qualify: ("this",), exp.Join: ("on",),
              exp.And: ("this", "expression"), exp.Or: ("this", "expression"), exp.Not: ("this",),
              exp.If: ("this",)}
SUBQUERIES = (exp.Any, exp.All, exp.Subquery, exp.Exists)  # typed by their query (not here)
CAST_HINT = "CAST them to one type"


def family(node: exp.Expression) -> str | None:
    """What a typed value compares as: number, text, date (dates and timestamps), time, boolean; None: unknown.
    A difference of two temporal values is sqlglot's DATE or TIMESTAMP, but DuckDB's and PostgreSQL's days
    (date − date, a number) or an interval (unknown here: left to the binder)."""
    dtype = node.type
    if dtype is None or isinstance(node, (exp.Null, *SUBQUERIES)):
        return None
    if isinstance(node, exp.Sub) and family(node.this) == family(node.expression) == "date":
        dates = all(o.type is not None and o.type.this in (T.DATE, T.DATE32) for o in (node.this, node.expression))
        return "number" if dates else None
    return next((name for name, types in FAMILIES if dtype.this in types), None)


def text_constant(node: exp.Expression) -> bool:
    return isinstance(node, exp.Literal) and node.is_string


Declared = tuple[tuple[str, tuple[tuple[str, tuple[tuple[str, str], ...]], ...]], ...]


def declared(catalog: Catalog) -> Declared:
    """The catalog's tables as a hashable key: ((party, ((table, ((column, type), ...)), ...)), ...)."""
    return tuple((party, tuple((table, tuple(columns)) for table, columns in sorted(tables.items())))
                 for party, tables in sorted(catalog.tables.items()))


@functools.lru_cache(maxsize=8)
def typing_mirror(tables: Declared) -> duckdb.DuckDBPyConnection:
    """A private in-memory DuckDB with every party's tables, empty, of the catalog's types, one schema per party
    (a party with a type DuckDB cannot declare is left out: its SQL is not bound). Opening a DuckDB costs
    more than planning a query, so one is kept per catalog; each use takes its own cursor."""
    con = duckdb.connect(":memory:")
    con.execute("SET enable_external_access = false")
    for party, party_tables in tables:
        try:
            con.execute(f"CREATE SCHEMA {_quote(party)}")
            for table, columns in party_tables:
                typed = ", ".join(f"{_quote(c)} {dtype}" for c, dtype in columns)
                con.execute(f"CREATE TABLE {_quote(party)}.{_quote(table)} ({typed})")
        except duckdb.Error:
            con.execute(f"DROP SCHEMA IF EXISTS {_quote(party)} CASCADE")
    return con


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@functools.lru_cache(maxsize=4096)
def reads_as(constant: str, dtype: str) -> bool:
    """Whether DuckDB reads the constant (SQL text) as the type (a fact of the installed DuckDB, kept)."""
    cursor = typing_mirror(()).cursor()
    try:
        return bool(cursor.execute(f"SELECT TRY_CAST({constant} AS {dtype}) IS NOT NULL").fetchone()[0])
    except duckdb.Error:
        return False
    finally:
        cursor.close()


def constant_reads_as(constant: exp.Expression, dtype: exp.DataType) -> bool:
    return reads_as(constant.sql(dialect="duckdb"), dtype.sql(dialect="duckdb"))


def operator_name(node: exp.Expression) -> str:
    """How the user wrote the function or operator: GREATEST, COALESCE, =, IN, BETWEEN, ..."""
    if isinstance(node, exp.Binary) and not isinstance(node, exp.Func):
        return {exp.EQ: "=", exp.NEQ: "<>", exp.GT: ">", exp.GTE: ">=", exp.LT: "<", exp.LTE: "<=",
                exp.NullSafeEQ: "IS NOT DISTINCT FROM", exp.NullSafeNEQ: "IS DISTINCT FROM"}.get(type(node),
                                                                                              node.key.upper())
    return node.key.upper()


def check_constants(node: exp.Expression, texts: list[exp.Expression], partner: exp.Expression) -> None:
    """Each quoted constant of `node` must read as the type of `partner`, the typed value beside it."""
    dtype = partner.type.sql(dialect="duckdb")
    for text in texts:
        if not constant_reads_as(text, partner.type):
            raise PlanError(f"{node.sql(dialect='duckdb')}: {text.sql()} is not of type {dtype}, beside which "
                            f"{operator_name(node)} reads it; write a constant of that type, or CAST the values to "
                            "TEXT")


def check_choices(node: exp.Expression) -> None:
    """CASE / IF / COALESCE / GREATEST / LEAST choose among values of one family (the SPU's rule)."""
    values = [v for v in choices(node) if v is not None and not isinstance(v, exp.Null)]
    texts = [v for v in values if text_constant(v)]
    typed = [v for v in values if v not in texts and family(v) is not None]
    families = {family(v) for v in typed}
    if texts and len(families) == 1 and families != {"text"}:  # DuckDB and PostgreSQL read '5' beside a number as one
        check_constants(node, texts, typed[0])
    elif texts:
        families.add("text")
    if len(families) > 1:
        name = operator_name(node)
        raise NotSupportedError(f"{node.sql(dialect='duckdb')}: {name} of {' and '.join(sorted(families))} values "
                                f"(it chooses among values of one kind, on every device); {CAST_HINT}")


def compared(node: exp.Expression) -> list[exp.Expression]:
    """The operands one comparison, BETWEEN, IN list or NULLIF compares with each other."""
    if isinstance(node, exp.Between):
        return [node.this, node.args.get("low"), node.args.get("high")]
    if isinstance(node, exp.In):
        return [node.this, *node.expressions] if node.args.get("query") is None else []
    return [node.this, node.expression]


def check_comparison(node: exp.Expression) -> None:
    """A comparison compares one family; a text constant beside a typed value must read as its type
    (DuckDB casts a text column to a number row by row, failing on the first that is not one; PostgreSQL
    refuses both)."""
    operands = [o for o in compared(node) if o is not None and not isinstance(o, exp.Null)]
    typed = [o for o in operands if not text_constant(o) and family(o) is not None]
    families = {family(o) for o in typed}
    name = operator_name(node)
    if len(families) > 1:
        raise NotSupportedError(f"{node.sql(dialect='duckdb')}: {name} compares {' and '.join(sorted(families))} "
                                f"values (only values of one kind compare, on every device); {CAST_HINT}")
    if families and families != {"text"}:
        check_constants(node, [o for o in operands if text_constant(o)], typed[0])


def check_condition(node: exp.Expression) -> None:
    """WHERE, HAVING, ON, AND / OR / NOT and CASE WHEN take booleans (PostgreSQL refuses a number there)."""
    if isinstance(node, exp.If) and isinstance(node.parent, exp.Case):  # a WHEN of CASE: checked by its CASE
        return
    parts = [node.args.get(key) for key in CONDITIONS.get(type(node), ())]
    if isinstance(node, exp.Case):  # CASE x WHEN value ...: its WHENs are values, not conditions
        parts = [i.this for i in node.args.get("ifs") or []] if node.this is None else []
    for part in parts:
        kind = family(part) if part is not None else None
        if kind is not None and kind != "boolean":
            where = operator_name(node) if not isinstance(node, (exp.Where, exp.Having, exp.Qualify, exp.Join)) \
                else {exp.Where: "WHERE", exp.Having: "HAVING", exp.Qualify: "QUALIFY", exp.Join: "ON"}[type(node)]
            raise PlanError(f"{part.sql(dialect='duckdb')}: a {kind} where {where} takes a boolean condition; "
                            f"write a comparison (e.g. {part.sql(dialect='duckdb')} IS NOT NULL)")


def check_constant_cast(node: exp.Cast) -> None:
    """A CAST of a constant must succeed (DuckDB fails at run time, PostgreSQL before it reads a row)."""
    value = node.this
    if isinstance(value, exp.Literal) and not constant_reads_as(value, node.to):
        raise PlanError(f"{node.sql(dialect='duckdb')}: {value.sql()} is not of type {node.to.sql(dialect='duckdb')}; "
                        "write a constant of that type")


def reads_data(node: exp.Expression) -> bool:
    """Whether `node` reads a column; constants alone are DuckDB's to type (`bind_pushdown`)."""
    return node.find(exp.Column) is not None


def annotated(tree: exp.Expression, catalog: Catalog) -> exp.Expression:
    """`tree` (in place) with the catalog's column types and DuckDB's numeric types."""
    return duckdb_numeric_types(annotate_types(tree, schema=catalog.sqlglot_schema("duckdb"), dialect="duckdb"))


def type_query(tree: exp.Expression, catalog: Catalog) -> None:
    """Refuse what the typing rules (module docstring) refuse in `tree` (qualified, in DuckDB's meaning)."""
    annotated(tree, catalog)
    for node in tree.walk():
        if isinstance(node, CHOOSERS) and reads_data(node):
            check_choices(node)
        if isinstance(node, (*COMPARISONS, exp.Between, exp.In)) and reads_data(node):
            check_comparison(node)
        if isinstance(node, exp.Cast) and not isinstance(node, exp.TryCast):
            check_constant_cast(node)
        if type(node) in CONDITIONS or isinstance(node, exp.Case):
            check_condition(node)
        if isinstance(node, exp.SetOperation):
            check_set_operation(node)


# Kinds a set operation's column may mix (DuckDB unifies them: text with anything but booleans' pairs below
# is text, a boolean with a number a number); any other pair fails on DuckDB's first row, not at its binder.
UNIFIED = {frozenset(pair) for pair in (("number", "text"), ("date", "text"), ("time", "text"), ("boolean", "text"),
                                        ("boolean", "number"))}


def check_set_operation(node: exp.SetOperation) -> None:
    """Each column of UNION / INTERSECT / EXCEPT mixes only kinds DuckDB unifies (a number with a date fails
    on its first row at the party or the issuer, after `check` would have passed)."""
    sides = [_branch_outputs(node.this), _branch_outputs(node.expression)]
    if any(side is None for side in sides) or len(sides[0]) != len(sides[1]):
        return
    for position, (left, right) in enumerate(zip(*sides), start=1):
        kinds = {family(left), family(right)}
        if None not in kinds and len(kinds) > 1 and frozenset(kinds) not in UNIFIED:
            raise NotSupportedError(f"{node.key.upper()} column {position} mixes {' and '.join(sorted(kinds))} "
                                    f"values ({left.sql(dialect='duckdb')}, {right.sql(dialect='duckdb')}); "
                                    f"{CAST_HINT}")


def _branch_outputs(branch: exp.Expression) -> list[exp.Expression] | None:
    """The output expressions of a set operation's branch (its left-most SELECT's, for a nested one)."""
    while isinstance(branch, (exp.Subquery, exp.SetOperation)):
        branch = branch.this
    return [e.unalias() for e in branch.expressions] if isinstance(branch, exp.Select) else None


def bind_pushdown(physical: PhysicalPlan, catalog: Catalog) -> None:
    """Bind each party's SQL of the plan to the typing mirror's empty tables; what DuckDB's binder refuses
    there is a PlanError naming the expression, found before anything runs."""
    steps = [s for s in physical.steps if isinstance(s, RunLocal)]
    if not steps:
        return
    cursor = typing_mirror(declared(catalog)).cursor()
    try:
        mirrored = {name for (name,) in cursor.execute("SELECT schema_name FROM duckdb_schemas()").fetchall()}
        for step in steps:
            if step.party not in mirrored:
                continue
            cursor.execute("SET schema = " + "'" + step.party.replace("'", "''") + "'")
            try:
                cursor.sql(with_great_circle(step.sql))  # bound, not run: a constant subquery costs nothing here
            except duckdb.Error as exc:
                raise refused_pushdown(step, str(exc)) from None
    finally:
        cursor.close()


def refused_pushdown(step: RunLocal, text: str) -> PlanError:
    """The error for a party's SQL DuckDB's binder refuses: its first line (about types and functions, never
    data: the tables are empty) and the expression it points at."""
    first = text.strip().splitlines()[0] if text.strip() else "refused"
    expression = located_expression(text, step.sql)
    where = f"{expression}: " if expression and len(expression) > 2 else ""
    return PlanError(f"{where}{first} (in the work pushed down to {step.party}: {step.sql}); rewrite that "
                     "expression (CAST arguments to the types its function takes)")


# DuckDB's (and MySQL's, PostgreSQL's) exact arithmetic: a constant with a decimal point and no exponent is
# DECIMAL(digits, decimals), not sqlglot's DOUBLE; + - * % of integers and DECIMALs is a DECIMAL. An integer
# type's digits as a DECIMAL (an integer constant is an INTEGER, or a BIGINT beyond it):
INTEGER_DIGITS = {T.TINYINT: 3, T.UTINYINT: 3, T.SMALLINT: 5, T.USMALLINT: 5, T.INT: 10, T.UINT: 10, T.BIGINT: 19,
                  T.UBIGINT: 20, T.INT128: 38, T.UINT128: 38}
EXACT_ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Mod)


def duckdb_numeric_types(tree: exp.Expression) -> exp.Expression:
    """Retype (in place, bottom-up) numeric constants and + - * % over them as DuckDB types them, so
    that a rounding or CAST of `BIGINT * 0.3` is known exact (a DECIMAL), as DuckDB computes it."""
    for node in list(tree.walk(bfs=False))[::-1]:
        decimal = _duckdb_decimal(node)
        if decimal is not None:
            node.type = exp.DataType.build(f"DECIMAL({decimal[0]}, {decimal[1]})") if decimal[0] <= 38 \
                else exp.DataType.build("DOUBLE")
    return tree


def _duckdb_decimal(node: exp.Expression) -> tuple[int, int] | None:
    """(precision, scale) DuckDB gives `node` where it is a DECIMAL constant or exact arithmetic over one;
    None where sqlglot's type stands."""
    if isinstance(node, exp.Literal) and not node.is_string and "." in node.this and "e" not in node.this.lower():
        whole, _, decimals = node.this.lstrip("+-").partition(".")
        return len(whole) + len(decimals), len(decimals)
    if isinstance(node, (exp.Neg, exp.Paren)):
        return _digits(node.this, decimal_only=True)
    if not isinstance(node, EXACT_ARITHMETIC):
        return None
    left, right = _digits(node.this), _digits(node.expression)
    if left is None or right is None or not (_digits(node.this, True) or _digits(node.expression, True)):
        return None
    (p1, s1), (p2, s2) = left, right
    if isinstance(node, exp.Mul):
        return min(p1 + p2, 38), s1 + s2
    scale = max(s1, s2)
    return min(max(p1 - s1, p2 - s2) + scale + (0 if isinstance(node, exp.Mod) else 1), 38), scale


def _digits(node: exp.Expression, decimal_only: bool = False) -> tuple[int, int] | None:
    """(precision, scale) of a DECIMAL (or, unless `decimal_only`, an integer) operand; None otherwise."""
    dtype = node.type
    if dtype is not None and dtype.this is T.DECIMAL:
        params = dtype.expressions
        if len(params) == 2:
            return int(params[0].this.this), int(params[1].this.this)
        return None
    if decimal_only or dtype is None:
        return None
    if isinstance(node, exp.Literal) and not node.is_string and node.is_int:
        return (10, 0) if abs(int(node.this)) < 2 ** 31 else (19, 0) if abs(int(node.this)) < 2 ** 63 else None
    return (INTEGER_DIGITS[dtype.this], 0) if dtype.this in INTEGER_DIGITS else None
