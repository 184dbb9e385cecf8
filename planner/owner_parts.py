"""Owner-evaluated sub-expressions of a secret program (issue 17): `owner_values` for the operator translation.

An operator a secret program runs over several parties' rows (a projection, an aggregate's arguments, a filter,
a sort) may read a sub-expression of one party's columns that fixed point would not compute exactly (a DOUBLE
compared with a constant, a quotient, SQRT ...): that part is computed by its owner on the rows it shares
anyway and read from one more column of its input (`owner_parts`). The owner's subtree must keep its table's
rows (scans, projections, its own flag filters), so the part is evaluated in its RunLocal; over a UNION ALL
each branch's owner computes it over its branch's columns.
"""

from __future__ import annotations

import dataclasses
import itertools

import sqlglot
from sqlglot import exp

from sqlsecure.planner.owner_values import OwnerColumns
from sqlsecure.planner.tree import Aggregate, Filter, Join, Op, Project, Sort, UnionAll, parties_of, quoted, rebuilt


def owner_parts(root: Op, type_of_ref, origins, keeps_rows) -> tuple[Op, tuple[str, ...]]:
    """(`root` with each owner part computed by its owner, EXPLAIN's notes). `type_of_ref(ColumnRef)`: a base
    column's DuckDB type; `origins(op)`: column -> base columns; `keeps_rows(op)`: a subtree its owner runs
    row for row."""
    notes: list[str] = []
    numbers = itertools.count(1)

    def visit(op: Op) -> Op:
        op = rebuilt(op, visit)
        child = op.children[0] if len(op.children) == 1 else None
        if child is None or len(parties_of(child)) < 2 or not isinstance(op, (Project, Aggregate, Filter, Sort)):
            return op
        if isinstance(op, Filter) and op.flag is not None:
            return op
        bases = origins(child)

        def unit_of(column: exp.Column):
            home = _home(child, column.name, keeps_rows)
            return id(home) if home is not None else None

        def type_of(column: exp.Column):
            types = {type_of_ref(ref) for ref in bases.get(column.name, ())}
            return types.pop() if len(types) == 1 else None

        owned = OwnerColumns(unit_of, type_of, prefix=f"__own_{next(numbers)}_")

        def sql(text: str | None) -> str | None:
            if text is None:
                return None
            return owned.rewritten(sqlglot.parse_one(text, read="duckdb")).sql(dialect="duckdb")

        if isinstance(op, Project):
            new = dataclasses.replace(op, items=tuple((n, sql(s)) for n, s in op.items))
        elif isinstance(op, Aggregate):  # keys and DISTINCT arguments stay: a DOUBLE key is refused naming it
            new = dataclasses.replace(op, aggregates=tuple((n, f, a if d else sql(a), d)
                                                           for n, f, a, d in op.aggregates))
        elif isinstance(op, Filter):
            new = dataclasses.replace(op, condition=sql(op.condition))
        else:
            new = dataclasses.replace(op, keys=tuple((sql(s), d, n) for s, d, n in op.keys))
        if not owned.by_unit:
            return op
        words = {unit: _owner_words(child, unit) for unit in owned.by_unit}
        for unit, parts in owned.by_unit.items():
            child = _attached(child, unit, parts)
        notes.extend(owned.notes(words.get))
        return dataclasses.replace(new, child=child)

    out = visit(root)
    return out, tuple(notes)


def _home(op: Op, name: str, keeps_rows) -> Op | None:
    """The subtree whose owner computes a part reading column `name` of `op`: one party's rows kept row for row
    (or a UNION ALL of such branches), reached through joins, filters and sorts; None where there is none."""
    if len(parties_of(op)) == 1:
        return op if keeps_rows(op) or (isinstance(op, Filter) and op.flag is not None) else None
    if isinstance(op, Join):
        if name in op.left.columns:
            return _home(op.left, name, keeps_rows)
        return _home(op.right, name, keeps_rows) if op.kind not in ("semi", "anti") else None
    if isinstance(op, UnionAll):
        return op if all(len(parties_of(b)) == 1 and _home(b, b.columns[0], keeps_rows) is b for b in op.inputs) \
            else None
    if isinstance(op, (Filter, Sort)):
        return _home(op.child, name, keeps_rows)
    inner = _renaming(op).get(name)
    return _home(op.child, inner, keeps_rows) if inner is not None else None


def _renaming(op: Op) -> dict[str, str]:
    """A projection's columns that are its child's columns as is: name -> the child's name."""
    if not isinstance(op, Project):
        return {}
    by_sql = {quoted(c): c for c in op.child.columns}
    return {name: by_sql[sql] for name, sql in op.items if sql in by_sql}


def _holds(op: Op, unit: int) -> bool:
    return id(op) == unit or any(_holds(child, unit) for child in op.children)


def _attached(op: Op, unit: int, parts) -> Op:
    """`op` with the subtree `unit` also computing each part (name, expression over its columns, type)."""
    if id(op) == unit:
        if isinstance(op, UnionAll):
            return UnionAll(tuple(_computed(b, [(n, _renamed(e, dict(zip(op.columns, b.columns))))
                                                for n, e, _ in parts]) for b in op.inputs))
        if isinstance(op, Filter):  # its owner's flag filter: the part joins the flag's projection
            return dataclasses.replace(op, child=_computed(op.child, [(n, e) for n, e, _ in parts]))
        return _computed(op, [(n, e) for n, e, _ in parts])
    if isinstance(op, Join):
        return dataclasses.replace(op, left=_attached(op.left, unit, parts), right=_attached(op.right, unit, parts))
    if isinstance(op, (Filter, Sort)):
        return dataclasses.replace(op, child=_attached(op.child, unit, parts))
    if isinstance(op, Project) and _holds(op.child, unit):  # a renaming: the parts read its child's names
        names = _renaming(op)
        below = [(n, _renamed(e, names), dtype) for n, e, dtype in parts]
        return dataclasses.replace(op, child=_attached(op.child, unit, below),
                                   items=op.items + tuple((n, quoted(n)) for n, _, _ in parts))
    return op


def _computed(op: Op, parts) -> Project:
    """A projection of `op`'s columns and each (name, expression)."""
    return Project(op, tuple((c, quoted(c)) for c in op.columns) + tuple(
        (name, node.sql(dialect="duckdb")) for name, node in parts))


def _renamed(node: exp.Expression, names: dict[str, str]) -> exp.Expression:
    return node.copy().transform(lambda n: exp.column(names[n.name], quoted=True)
                                 if isinstance(n, exp.Column) and n.name in names else n)


def _owner_words(root: Op, unit: int) -> str:
    """Who evaluates the parts of subtree `unit`: its party, or each branch's owner of a UNION ALL."""
    stack = [root]
    while stack:
        op = stack.pop()
        if id(op) == unit:
            return "each branch's owner" if isinstance(op, UnionAll) else next(iter(parties_of(op)))
        stack.extend(op.children)
    return "its owner"
