"""Logical plan: immutable nodes with tuple children; a rewrite returns a new node.

Expressions are sqlglot trees, already qualified (`"alias"."column"`). A `Source` is one table
(or one single-party derived table) of the FROM clause; `LocalQuery` is a subtree pushed down whole
to one party, as one SQL statement for that party's DuckDB.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp


@dataclass(frozen=True)
class Node:
    @property
    def children(self) -> tuple["Node", ...]:
        return ()


@dataclass(frozen=True)
class Source(Node):
    """A FROM item owned by one party: a base table or a derived table (subquery) of one party."""

    alias: str
    party: str
    relation: exp.Expression  # the local table, or the local subquery, with party prefixes removed
    columns: tuple[str, ...]  # the source's output column names


@dataclass(frozen=True)
class Filter(Node):
    child: Node
    conjuncts: tuple[exp.Expression, ...]

    @property
    def children(self):
        return (self.child,)


@dataclass(frozen=True)
class Membership:
    """A semi- or anti-join from `key IN (subquery)`, `EXISTS`, `NOT IN`, `NOT EXISTS`: keep the rows
    whose `key` is (anti: is not) among the values of another party's single-party subquery, whose
    one output column is "__member". `null_aware`: NOT IN, where a NULL among the values (or as the
    key) keeps no row."""

    key: exp.Column
    query: "LocalQuery"
    anti: bool = False
    null_aware: bool = False


@dataclass(frozen=True)
class InnerJoin(Node):
    """An n-ary inner join: inner joins commute, so the order is chosen at placement."""

    inputs: tuple[Node, ...]
    conjuncts: tuple[exp.Expression, ...]
    memberships: tuple[Membership, ...] = ()
    outer: tuple[str, ...] = ()  # aliases on the NULL-extended side of a LEFT JOIN (each joined last, by keys)

    @property
    def children(self):
        return self.inputs


@dataclass(frozen=True)
class LocalQuery(Node):
    """A subtree pushed down to one party: `select` runs in that party's DuckDB.

    `aliases` are the query aliases whose columns this node outputs; the output column for
    `alias.column` is named `alias.column`, and `keys` maps a pushed-down join-key expression's SQL
    to its output column name.
    """

    party: str
    aliases: tuple[str, ...]
    select: exp.Select
    output: tuple[str, ...] = ()
    keys: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class UnionScan(Node):
    """UNION ALL of single-party branches (a FROM item); each branch is pushed down to its party and
    its output columns are named `alias.column` after the union's column names."""

    alias: str
    branches: tuple[LocalQuery, ...]
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Aggregate(Node):
    child: Node
    group_by: tuple[exp.Expression, ...]
    having: exp.Expression | None

    @property
    def children(self):
        return (self.child,)


@dataclass(frozen=True)
class Project(Node):
    child: Node
    expressions: tuple[exp.Expression, ...]  # each an exp.Alias naming an output column
    distinct: bool = False
    types: tuple[str, ...] = ()  # DuckDB's type of each output (empty: unknown), which secure results must have

    @property
    def children(self):
        return (self.child,)


@dataclass(frozen=True)
class Sort(Node):
    child: Node
    order: tuple[exp.Ordered, ...]

    @property
    def children(self):
        return (self.child,)


@dataclass(frozen=True)
class Limit(Node):
    child: Node
    limit: exp.Expression | None
    offset: exp.Expression | None = None

    @property
    def children(self):
        return (self.child,)


def column_key(column: exp.Column) -> str:
    """The pushed-down output name of a qualified column: `alias.column`."""
    return f"{column.table}.{column.name}"


def aliases_of(expression: exp.Expression) -> frozenset[str]:
    """Query aliases referenced by an expression (outside nested subqueries)."""
    return frozenset(c.table for c in expression.find_all(exp.Column) if c.table)


def aggregates_in(expression: exp.Expression) -> list[exp.AggFunc]:
    """Aggregate calls of an expression, outside window functions (RANK() OVER ... is no aggregate)."""
    return [a for a in expression.find_all(exp.AggFunc) if a.find_ancestor(exp.Window) is None
            and not isinstance(a.parent, exp.Window)]


def walk(node: Node):
    yield node
    for child in node.children:
        yield from walk(child)


__all__ = [
    "Node", "Source", "Filter", "InnerJoin", "LocalQuery", "UnionScan", "Aggregate", "Project", "Sort", "Limit",
    "column_key", "aliases_of", "walk", "aggregates_in",
]
