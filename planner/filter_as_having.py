"""A filter over a grouped derived table is a HAVING (issue 16: Secrecy's credit score).

`SELECT S.id FROM (SELECT id, MIN(cs) AS cs1, MAX(cs) AS cs2 FROM r WHERE ... GROUP BY id) AS S
WHERE S.cs2 - S.cs1 > 100` asks for the same rows as `SELECT id FROM r WHERE ... GROUP BY id HAVING
MAX(cs) - MIN(cs) > 100`: a SELECT whose only FROM item is a grouped derived table (or a CTE read once),
which only projects and filters its columns, is merged into it: the outer WHERE joins the inner HAVING
(each column replaced by the inner expression it names), the outer projection becomes the SELECT list,
and the outer ORDER BY / LIMIT / OFFSET move in when the inner query has none. The classic view merging
of a query normaliser; afterwards one grouped SELECT reads the parties' rows, which the spine places
on every device (a derived table reading several parties is refused there).

Exact by construction, so applied for every placement; anything whose meaning the merge could change
is left as written: an outer aggregate, window, DISTINCT, join, subquery or other clause; an inner
DISTINCT, window, ORDER BY, LIMIT, ROLLUP / CUBE / GROUPING SETS, or a volatile function; a column of
the outer query that is not the derived table's.
"""

from __future__ import annotations

from sqlglot import exp

OUTER_CLAUSES = frozenset({"expressions", "from_", "where", "order", "limit", "offset", "with_"})
INNER_CLAUSES = frozenset({"expressions", "from_", "joins", "where", "group", "having", "with_"})
VOLATILE = (exp.Rand, exp.Randn, exp.Uuid)  # evaluated once per row: not to be copied into two places


def filter_as_having(tree: exp.Expression) -> exp.Expression:
    """`tree` with every such SELECT merged into its grouped derived table, innermost first (so a chain
    of filters over one grouped table becomes one HAVING); `tree` itself when nothing merges."""
    selects = [node for node in tree.walk() if isinstance(node, exp.Select)]
    if not any(_grouped_source(select) is not None for select in selects):
        return tree
    written, tree, changed = tree, tree.copy(), False
    for select in reversed([node for node in tree.walk() if isinstance(node, exp.Select)]):  # children first
        merged = merged_select(select, tree)
        if merged is not None:
            changed = True
            if select is tree:
                merged.meta.update(tree.meta)
                tree = merged
            else:
                select.replace(merged)
    return tree if changed else written


def merged_select(outer: exp.Select, root: exp.Expression) -> exp.Select | None:
    """The one grouped SELECT equal to `outer` over its grouped derived table, or None (left as written)."""
    found = _grouped_source(outer, root)
    if found is None:
        return None
    inner, alias, cte = found
    names = [c.name for c in alias.columns] if alias is not None and alias.columns else inner.named_selects
    if len(names) != len(inner.expressions) or len(set(names)) != len(names):
        return None
    by_name = {name: e.unalias() for name, e in zip(names, inner.expressions)}
    outputs = {e.alias_or_name for e in outer.expressions}
    where, order = outer.args.get("where"), outer.args.get("order")
    ordered = [c for c in order.find_all(exp.Column)] if order is not None else []
    for column in [c for part in [*outer.expressions, where] if part is not None for c in part.find_all(exp.Column)]:
        if not _reads_inner(column, by_name, alias_name(outer)):
            return None
    for column in ordered:  # ORDER BY may also name an output
        if not _reads_inner(column, by_name, alias_name(outer)) and not (not column.table and column.name in outputs):
            return None
    merged = inner.copy()
    merged.set("expressions", [_aliased(_substituted(e, by_name, alias_name(outer)), e.alias_or_name)
                               for e in outer.expressions])
    if where is not None:
        condition = _substituted(where.this, by_name, alias_name(outer))
        having = inner.args.get("having")
        merged.set("having", exp.Having(this=exp.and_(having.this.copy(), condition) if having else condition))
    for clause in ("order", "limit", "offset"):
        value = outer.args.get(clause)
        if value is not None:
            merged.set(clause, _substituted(value, by_name, alias_name(outer)) if clause == "order" else value.copy())
    with_ = outer.args.get("with_")
    if with_ is not None:
        kept = [c.copy() for c in with_.expressions if c is not cte]
        merged.set("with_", exp.With(expressions=kept, recursive=with_.args.get("recursive")) if kept else None)
    return merged


def _reads_inner(column: exp.Column, by_name: dict[str, exp.Expression], alias: str) -> bool:
    """A column of the derived table whose inner expression may be copied (no volatile function)."""
    return column.table == alias and column.name in by_name and by_name[column.name].find(*VOLATILE) is None


def alias_name(outer: exp.Select) -> str:
    return outer.args["from_"].this.alias_or_name


def _grouped_source(outer: exp.Select, root: exp.Expression | None = None):
    """(inner SELECT, its TableAlias or None, the CTE node or None) when `outer` only projects, filters,
    orders and limits the columns of one grouped derived table or CTE; else None."""
    if set(k for k, v in outer.args.items() if v not in (None, False, [], "")) - OUTER_CLAUSES:
        return None
    from_ = outer.args.get("from_")
    if from_ is None:
        return None
    parts = [*outer.expressions, *(outer.args[c] for c in ("where", "order") if outer.args.get(c) is not None)]
    if any(p.find(exp.AggFunc, exp.Window, exp.Query, exp.Subquery, exp.Exists) is not None for p in parts):
        return None
    item, cte = from_.this, None
    if isinstance(item, exp.Subquery):
        if set(k for k, v in item.args.items() if v not in (None, False, [], "")) - {"this", "alias"}:
            return None
        inner, alias = item.this, item.args.get("alias")
    elif isinstance(item, exp.Table) and not item.db and not item.args.get("catalog"):
        with_ = outer.args.get("with_")
        cte = next((c for c in (with_.expressions if with_ else []) if c.alias_or_name == item.name), None)
        if cte is None or with_.args.get("recursive") or cte.args.get("materialized") is not None:
            return None
        scope = root if root is not None else outer
        if sum(1 for t in scope.find_all(exp.Table) if t.name == item.name and not t.db) != 1:
            return None  # read elsewhere too: it stays a CTE
        if set(k for k, v in item.args.items() if v not in (None, False, [], "")) - {"this", "alias"}:
            return None
        inner, alias = cte.this, item.args.get("alias")
        alias = alias if alias is not None and alias.columns else cte.args.get("alias")
    else:
        return None
    if not _grouped(inner):
        return None
    if inner.args.get("with_") is not None and outer.args.get("with_") is not None:
        return None
    return inner, alias, cte


def _grouped(inner: exp.Expression) -> bool:
    """A SELECT with plain GROUP BY keys and nothing computed after its HAVING."""
    if not isinstance(inner, exp.Select):
        return False
    if set(k for k, v in inner.args.items() if v not in (None, False, [], "")) - INNER_CLAUSES:
        return False
    group = inner.args.get("group")
    if group is None or not group.expressions or any(
            group.args.get(k) for k in ("grouping_sets", "cube", "rollup", "totals", "all")) or any(
            isinstance(key, (exp.Rollup, exp.Cube, exp.GroupingSets)) for key in group.expressions):
        return False
    return not any(e.find(exp.Window, exp.Query, exp.Subquery, exp.Exists) is not None for e in inner.expressions)


def _substituted(part: exp.Expression, by_name: dict[str, exp.Expression], alias: str) -> exp.Expression:
    """`part` with each `alias.column` replaced by the inner expression it names (parenthesised inside
    an operator, so precedence is kept)."""

    def replace(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column) and node.table == alias and node.name in by_name:
            value = by_name[node.name].copy()
            atomic = isinstance(value, (exp.Column, exp.Literal, exp.Func, exp.Paren, exp.Null, exp.Boolean))
            keep = atomic or isinstance(node.parent, (exp.Alias, exp.Where, exp.Ordered, exp.Paren))
            return value if keep else exp.Paren(this=value)
        return node

    return part.copy().transform(replace)


def _aliased(expression: exp.Expression, name: str) -> exp.Expression:
    """The outer output under its own name."""
    if isinstance(expression, exp.Alias):
        return expression
    return exp.alias_(expression, name, quoted=True)
