"""Owner-evaluated sub-expressions of the SPU's stage (issue 17): exact where fixed point is not.

The SPU holds a DOUBLE in fixed point (2^-16 steps), so a comparison of it with a constant, a quotient by a
tiny value or an approximate function (SQRT, LN, ...) of it can answer otherwise than DuckDB's doubles. A
sub-expression that reads one party's columns only (and constants) needs no secure computation to be
exact: that party evaluates it in its own DuckDB on its own rows, in the SQL its stage would have run, and
shares the result (a boolean as a secret bit, a value as its shares) as one more column of its input; the
SPU computes the rest of the expression over that column. Nothing new is revealed: the column is shared
secretly like the columns it replaces, and the result the issuer sees is checked by column control on the
query as written. A failure of the expression at its owner is contained like every party's local error
(its class and the public expression, never its values).

Taken: the largest sub-expressions (`owner_parts`) that read columns of one unit (a join input of one
party, or the rows of a UNION ALL, each branch's owner evaluating them on its own rows), are deterministic
scalars (no aggregate, window, subquery, clock or a dialect's ERROR guard, which must fail for the rows
that count only), and involve a value fixed point does not hold exactly:
a DOUBLE / FLOAT column, or a division by NULLIF(y, 0) or a non-zero constant (DuckDB's `/` is a DOUBLE).
A part with another division or a function with poles (LN, SQRT, POWER, EXP, TAN ...) stays on shares: at
its owner it could give an infinity on a row that does not count (one the join drops), which on shares is
never refused.
"""

from __future__ import annotations

import dataclasses

from sqlglot import exp

from sqlsecure.planner.build import described
from sqlsecure.planner.logical import LocalQuery, UnionScan, column_key

PREFIX = "__own_"  # the computed columns' names (a number follows)
DOUBLE_TYPES = ("DOUBLE", "FLOAT", "REAL")
INEXACT = (exp.Div, exp.Pow, exp.Sqrt, exp.Ln, exp.Log, exp.Exp, exp.Cbrt, exp.Sin, exp.Cos, exp.Tan, exp.Asin,
           exp.Acos, exp.Atan, exp.Atan2, exp.Cot, exp.Degrees, exp.Radians)
NOT_SCALAR = (exp.AggFunc, exp.Window, exp.Subquery, exp.Select, exp.Exists, exp.Star, exp.Rand, exp.CurrentDate,
              exp.CurrentTime, exp.CurrentTimestamp, exp.Placeholder, exp.Parameter)
NOT_A_VALUE = (exp.Ordered, exp.Alias, exp.DataType, exp.Distinct, exp.Tuple, exp.Interval, exp.If, exp.Literal,
               exp.Column, exp.Null, exp.Boolean, exp.Identifier, exp.WindowSpec)


@dataclasses.dataclass
class OwnerColumns:
    """The columns owners compute: unit -> [(name, SQL over the unit's columns, DuckDB type)], in order."""

    unit_of: callable  # qualified column -> its unit (a hashable), or None where no owner alone holds it
    type_of: callable  # qualified column -> its DuckDB type, or None
    prefix: str = PREFIX
    by_unit: dict = dataclasses.field(default_factory=dict)
    named: dict = dataclasses.field(default_factory=dict)  # (unit, SQL) -> the computed column

    def rewritten(self, expression: exp.Expression | None) -> exp.Expression | None:
        """`expression` with each owner part (`owner_parts`) read from the column its owner computes."""
        if expression is None:
            return None
        return expression.copy().transform(self._part_as_column)

    def _part_as_column(self, node: exp.Expression) -> exp.Expression:
        unit = self._owner_part(node)
        if unit is None:
            return node
        sql = node.sql(dialect="duckdb")
        if (unit, sql) not in self.named:
            dtype = self._duckdb_type(node)
            if dtype is None:
                return node
            table = next(node.find_all(exp.Column)).table
            name = f"{self.prefix}{len(self.named) + 1}"
            self.named[(unit, sql)] = exp.column(name, table, quoted=True) if table else exp.column(name, quoted=True)
            self.by_unit.setdefault(unit, []).append((name, node.copy(), dtype))
        return self.named[(unit, sql)].copy()

    def _owner_part(self, node: exp.Expression):
        """The unit whose owner evaluates `node`, or None (not a whole scalar of one unit needing it)."""
        if isinstance(node, NOT_A_VALUE):
            return None
        columns = list(node.find_all(exp.Column))
        if not columns or node.find(*NOT_SCALAR) is not None or _guarded(node):
            return None  # a dialect's ERROR guard fails for the counted rows only: on shares, as before
        units = {self.unit_of(c) for c in columns}
        if len(units) != 1 or None in units:
            return None
        if any(_unbounded(n) for n in node.find_all(*INEXACT)):
            return None
        inexact = node.find(*INEXACT) is not None or any(
            (self.type_of(c) or "").split("(")[0].upper() in DOUBLE_TYPES for c in columns)
        return units.pop() if inexact else None

    def _duckdb_type(self, node: exp.Expression) -> str | None:
        """DuckDB's type of `node`, by DESCRIBE over one row of typed NULLs named as the columns it reads."""
        tables: dict[str, dict[str, str]] = {}
        for column in node.find_all(exp.Column):
            dtype = self.type_of(column)
            if dtype is None:
                return None
            tables.setdefault(column.table, {})[column.name] = dtype
        sources = ", ".join(
            "(SELECT " + ", ".join(f'CAST(NULL AS {dtype}) AS "{name}"' for name, dtype in columns.items())
            + f') AS "{table or "__r"}"' for table, columns in tables.items())
        kind, rows = described((), f"SELECT {node.sql(dialect='duckdb')} AS v FROM {sources}")
        return rows[0][1] if kind == "rows" else None

    def notes(self, describe_unit) -> tuple[str, ...]:
        """EXPLAIN's line per computed column: who evaluates what (`describe_unit(unit)`: its owner's words)."""
        return tuple(f"evaluated by {describe_unit(unit)} on its own rows, exactly, shared as a secret "
                     f"{'bit' if dtype.upper() == 'BOOLEAN' else 'value'} {name}: {node.sql(dialect='duckdb')} "
                     "(on shares, fixed point would hold its DOUBLEs to 2^-16 only)"
                     for unit, parts in self.by_unit.items() for name, node, dtype in parts)


def _unbounded(node: exp.Expression) -> bool:
    """Whether `node` may give a value the SPU cannot carry (infinity, NaN) on a row that does not count (one a
    join or a later filter drops; on shares such a row is never refused): a division but by NULLIF(y, 0) or a
    non-zero constant, and the functions with poles or a bounded domain (LN, SQRT, POWER, EXP, TAN ...)."""
    if not isinstance(node, exp.Div):
        return True
    divisor = node.expression.unnest()
    if isinstance(divisor, exp.Nullif):
        zero = divisor.expression
        return not (isinstance(zero, exp.Literal) and zero.is_number and float(zero.this) == 0)
    return not (isinstance(divisor, exp.Literal) and divisor.is_number and float(divisor.this) != 0)


def _guarded(node: exp.Expression) -> bool:
    """Whether `node` holds or sits in a CASE / IF with a dialect's ERROR guard (`CASE WHEN y = 0 THEN ERROR(..)`),
    which the SPU evaluates as one pattern for its counted rows only."""
    def has_error(e: exp.Expression) -> bool:
        return any(f.name.upper() == "ERROR" for f in e.find_all(exp.Anonymous))

    if has_error(node):
        return True
    parent = node.parent
    while parent is not None:
        if isinstance(parent, (exp.Case, exp.If)) and has_error(parent):
            return True
        parent = parent.parent
    return False


def with_join_columns(query: LocalQuery, parts) -> LocalQuery:
    """A join input that also outputs each part (name, SQL over its own columns, type) as `alias.name`."""
    if not parts or query.select.args.get("group"):
        return query
    select = query.select.copy()
    for name, node, _ in parts:
        alias = next(node.find_all(exp.Column)).table
        select = select.select(exp.alias_(node.copy(), f"{alias}.{name}", quoted=True), copy=False)
    return dataclasses.replace(query, select=select, output=query.output + tuple(
        f"{next(node.find_all(exp.Column)).table}.{name}" for name, node, _ in parts))


def with_branch_columns(branch: LocalQuery, union: UnionScan, parts) -> LocalQuery:
    """A UNION ALL branch that also outputs each part, evaluated by its owner over the branch's outputs."""
    if not parts:
        return branch
    at_branch = [exp.alias_(node.copy().transform(
        lambda n: exp.column(column_key(n), quoted=True) if isinstance(n, exp.Column) else n),
        f"{union.alias}.{name}", quoted=True) for name, node, _ in parts]
    select = exp.select(*(exp.column(name, quoted=True) for name in branch.output), *at_branch).from_(
        exp.Subquery(this=branch.select.copy(), alias=exp.TableAlias(this=exp.to_identifier("__branch"))))
    return dataclasses.replace(branch, select=select,
                               output=branch.output + tuple(f"{union.alias}.{name}" for name, _, _ in parts))


def spine_rewritten(owned: OwnerColumns, project, aggregate, sort):
    """(project, aggregate, sort) with their owner parts read from the owners' columns."""
    project = dataclasses.replace(project, expressions=tuple(owned.rewritten(e) for e in project.expressions))
    if aggregate is not None:
        aggregate = dataclasses.replace(aggregate, group_by=tuple(owned.rewritten(g) for g in aggregate.group_by),
                                        having=owned.rewritten(aggregate.having))
    if sort is not None:
        sort = dataclasses.replace(sort, order=tuple(owned.rewritten(o) for o in sort.order))
    return project, aggregate, sort


def types_of(owned: OwnerColumns) -> dict[tuple[str, str], str]:
    """(alias, computed column) -> its DuckDB type, for the placement's `column_type`."""
    return {(next(node.find_all(exp.Column)).table, name): dtype
            for parts in owned.by_unit.values() for name, node, dtype in parts}
