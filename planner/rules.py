"""Rewrite rules over the logical plan: each one small function `rule(plan, ctx) -> plan`.

Applied in order by `optimize` (the `RULES` tuple):

1. `merge_filters` — WHERE conjuncts join the ON conjuncts of the inner join below them;
2. `push_source_predicates` — a conjunct over one source becomes a Filter on that source;
3. `fuse_party_sources` — sources of one party linked by that party's own conjuncts become one
   `LocalQuery`, so the party joins and filters its tables in its own DuckDB;
4. `push_projections` — each `LocalQuery` selects only the columns used above it, plus its
   join-key expressions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlglot import exp

from sqlsecure.planner.logical import (
    Filter, InnerJoin, LocalQuery, Node, Source, aliases_of, column_key,
)


@dataclass(frozen=True)
class RuleContext:
    parties: dict[str, str]  # alias -> party


def _map_join(plan: Node, fn) -> Node:
    """Apply fn to the InnerJoin (or Filter over it) at the bottom of the plan's single-child spine."""
    if isinstance(plan, (InnerJoin,)) or (isinstance(plan, Filter) and isinstance(plan.child, InnerJoin)):
        return fn(plan)
    if hasattr(plan, "child"):
        return replace(plan, child=_map_join(plan.child, fn))
    return plan


def merge_filters(plan: Node, ctx: RuleContext) -> Node:
    """Filter(InnerJoin(inputs, c1), c2) -> InnerJoin(inputs, c1 + c2).

    >>> from sqlglot import parse_one
    >>> j = InnerJoin((), (parse_one("a.x = b.y"),))
    >>> merge_filters(Filter(j, (parse_one("a.z > 1"),)), None).conjuncts[1].sql()
    'a.z > 1'
    """

    def merge(node: Node) -> Node:
        if isinstance(node, Filter):
            return replace(node.child, conjuncts=node.child.conjuncts + node.conjuncts)
        return node

    return _map_join(plan, merge)


def push_source_predicates(plan: Node, ctx: RuleContext) -> Node:
    """Conjuncts over at most one source move onto that source as a Filter."""

    def push(join: Node) -> Node:
        if not isinstance(join, InnerJoin):
            return join
        local: dict[str, list[exp.Expression]] = {}
        rest = []
        first = _alias(join.inputs[0])
        for conjunct in join.conjuncts:
            aliases = aliases_of(conjunct)
            if len(aliases) <= 1:
                local.setdefault(next(iter(aliases), first), []).append(conjunct)
            else:
                rest.append(conjunct)
        inputs = []
        for node in join.inputs:
            extra = tuple(local.get(_alias(node), ()))
            if extra:
                node = Filter(node.child, node.conjuncts + extra) if isinstance(node, Filter) else Filter(node, extra)
            inputs.append(node)
        return replace(join, inputs=tuple(inputs), conjuncts=tuple(rest))

    return _map_join(plan, push)


def _alias(node: Node) -> str:
    return node.child.alias if isinstance(node, Filter) else node.alias


def _source_of(node: Node) -> tuple[Source, tuple[exp.Expression, ...]]:
    return (node.child, node.conjuncts) if isinstance(node, Filter) else (node, ())


def fuse_party_sources(plan: Node, ctx: RuleContext) -> Node:
    """Sources of one party that its own conjuncts connect become one LocalQuery."""

    def fuse(join: Node) -> Node:
        if not isinstance(join, InnerJoin):
            return join
        parent = {_alias(n): _alias(n) for n in join.inputs}

        def find(a: str) -> str:
            while parent[a] != a:
                a = parent[a]
            return a

        local, cross = [], []
        for conjunct in join.conjuncts:
            aliases = sorted(aliases_of(conjunct))
            if len({ctx.parties[a] for a in aliases}) == 1 and not set(aliases) & set(join.outer):
                for a in aliases[1:]:
                    parent[find(a)] = find(aliases[0])
                local.append(conjunct)
            else:
                cross.append(conjunct)
        groups: dict[str, list[Node]] = {}
        for node in join.inputs:
            groups.setdefault(find(_alias(node)), []).append(node)
        queries = []
        for members in groups.values():
            sources = [_source_of(m) for m in members]
            aliases = tuple(s.alias for s, _ in sources)
            where = [c for _, conj in sources for c in conj]
            where += [c for c in local if aliases_of(c) <= set(aliases)]
            select = exp.Select().from_(sources[0][0].relation.copy())
            for source, _ in sources[1:]:
                select = select.join(source.relation.copy(), join_type="CROSS")
            if where:
                select = select.where(exp.and_(*[c.copy() for c in where]))
            queries.append(LocalQuery(party=sources[0][0].party, aliases=aliases, select=select))
        return replace(join, inputs=tuple(queries), conjuncts=tuple(cross))

    return _map_join(plan, fuse)


def _used_columns(plan: Node) -> list[exp.Column]:
    """Columns referenced above the local queries (projections, groups, sort, cross conjuncts)."""
    found: list[exp.Column] = []
    node = plan
    while node is not None:
        for value in vars(node).values():
            items = value if isinstance(value, tuple) else (value,)
            for item in items:
                if isinstance(item, exp.Expression):
                    found += list(item.find_all(exp.Column))
        node = getattr(node, "child", None)
        if isinstance(node, InnerJoin):
            for conjunct in node.conjuncts:
                found += list(conjunct.find_all(exp.Column))
            found += [m.key for m in node.memberships]
            break
    return found


def push_projections(plan: Node, ctx: RuleContext) -> Node:
    """Each LocalQuery outputs `alias.column` for the columns used above it, and its key expressions."""
    used = _used_columns(plan)

    def project(join: Node) -> Node:
        if not isinstance(join, InnerJoin):
            return join
        key_exprs = []
        for conjunct in join.conjuncts:
            if isinstance(conjunct, exp.EQ):
                key_exprs += [side for side in (conjunct.left, conjunct.right) if not isinstance(side, exp.Column)]
        queries = []
        for query in join.inputs:
            names: dict[str, exp.Expression] = {}
            for column in used:
                if column.table in query.aliases:
                    names.setdefault(column_key(column), exp.column(column.name, column.table, quoted=True))
            keys = []
            for i, expression in enumerate(key_exprs):
                if aliases_of(expression) and aliases_of(expression) <= set(query.aliases):
                    name = f"__key{i}"
                    names.setdefault(name, expression.copy())
                    keys.append((expression.sql(), name))
            if not names:
                names["__one"] = exp.Literal.number(1)
            select = query.select.copy()
            select.set("expressions", [exp.alias_(e, n, quoted=True) for n, e in names.items()])
            queries.append(replace(query, select=select, output=tuple(names), keys=tuple(keys)))
        return replace(join, inputs=tuple(queries))

    return _map_join(plan, project)


RULES = (merge_filters, push_source_predicates, fuse_party_sources, push_projections)


def optimize(plan: Node, ctx: RuleContext, rules=RULES) -> Node:
    for rule in rules:
        plan = rule(plan, ctx)
    return plan
