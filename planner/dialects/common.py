"""Helpers shared by the dialect rules: column types, DuckDB templates, the time zone."""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp

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


def is_null(node: exp.Expression) -> bool:
    return isinstance(node, exp.Null)


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


def binary_operands(node: exp.Binary) -> tuple[exp.Expression, exp.Expression]:
    return node.this, node.expression


def local_now(time_zone: str) -> exp.Expression:
    """The statement's current time as a TIMESTAMP on the wall clock of `time_zone` (whole seconds)."""
    return template(f"CAST(DATE_TRUNC('second', TIMEZONE({exp.Literal.string(time_zone).sql()}, "
                    "CURRENT_TIMESTAMP)) AS TIMESTAMP)")
