"""Magnitudes of a query's row counts, from the published sizes: COUNT, ROW_NUMBER, RANK, DENSE_RANK.

A count of rows (`COUNT(...)`, `COUNT(...) OVER (...)`, ROW_NUMBER / RANK / DENSE_RANK) is at most the
number of rows its SELECT reads, and that number is bounded by the sizes the owners publish (each rounded
up to a power of two, public like the schema): a table has at most its size, a join at most the product
of its sides' rows (each plus one: an outer join's unmatched rows), a UNION the sum of its branches', an
aggregate at least one row and no more than its input, a LIMIT its count. So `r2.rn = r1.rn + 1` or
`COUNT(*) + 1` cannot overflow BIGINT, and column control (`ccl_rules.magnitude`) proves it instead of
asking for per-row visibility. A column of a CTE or subquery gets the class of the expression that
defines it (`derived_class`). Anything the sizes do not bound (a table function, an unpublished size)
has no class: infinity rows, nothing proven.
"""

from __future__ import annotations

import math

from sqlglot import exp

COUNTING_WINDOWS = (exp.RowNumber, exp.Rank, exp.DenseRank, exp.Count)


def counts_rows(e: exp.Expression) -> bool:
    """Whether `e` is a number of rows of its SELECT's input: COUNT (plain or DISTINCT), or ROW_NUMBER,
    RANK, DENSE_RANK, COUNT over a window (at most the partition's rows)."""
    if isinstance(e, exp.Window):
        return isinstance(e.this, COUNTING_WINDOWS)
    return isinstance(e, exp.Count) and not isinstance(e.parent, exp.Window)


def never_zero(e: exp.Expression) -> bool:
    """Whether a count is at least 1 on every row it yields: ROW_NUMBER, RANK, DENSE_RANK (the row's own
    number), COUNT(*) over a window without a frame (its partition holds the row), COUNT(*) of a SELECT
    with a plain GROUP BY (a group has a row; ROLLUP, CUBE and GROUPING SETS add groups of none), or a
    CTE's or subquery's column that is one of these in every branch. So a division by it never fails."""
    if isinstance(e, exp.Paren):
        return never_zero(e.this)
    if isinstance(e, exp.Column):
        item = from_item(e)
        query = defining_query(item) if item is not None else None
        outputs = output_expressions(query, e.name) if query is not None else None
        return bool(outputs) and all(map(never_zero, outputs))
    if isinstance(e, exp.Window):
        return isinstance(e.this, (exp.RowNumber, exp.Rank, exp.DenseRank)) or \
            (isinstance(e.this, exp.Count) and isinstance(e.this.this, exp.Star) and e.args.get("spec") is None)
    if not (isinstance(e, exp.Count) and isinstance(e.this, exp.Star) and counts_rows(e)):
        return False
    select = e.find_ancestor(exp.Select)
    group = select.args.get("group") if select is not None else None
    groupings = [*(group.expressions if group else []), *(group.args.get(k) for k in ("rollup", "cube", "grouping_sets")
                                                           if group and group.args.get(k))]
    return bool(groupings) and not any(isinstance(g, (exp.Rollup, exp.Cube, exp.GroupingSets, list))
                                       for g in groupings)


def class_of_rows(rows: float) -> int | None:
    """The magnitude class (M with |n| < 2^M) of a count of at most `rows` rows; None if unbounded."""
    return int(rows).bit_length() if math.isfinite(rows) else None


def counted_rows(e: exp.Expression, sizes) -> float:
    """The most rows the count `e` (`counts_rows`) can count: its SELECT's input rows. `sizes(party)`:
    table -> published size ({} where none)."""
    select = e.find_ancestor(exp.Select)
    return input_rows(select, sizes) if select is not None else math.inf


def input_rows(select: exp.Select, sizes) -> float:
    """The most rows a SELECT's FROM and joins produce: one item's rows, or the product of every item's
    rows plus one (an outer join adds the unmatched rows of a side); one row without FROM."""
    from_ = select.args.get("from_")
    items = ([from_.this] if from_ else []) + [j.this for j in select.args.get("joins") or []]
    if not items:
        return 1.0
    if len(items) == 1:
        return item_rows(items[0], sizes)
    return math.prod(item_rows(item, sizes) + 1 for item in items)


def item_rows(item: exp.Expression, sizes) -> float:
    """The most rows of one FROM item: a base table's published size, a CTE's or subquery's rows."""
    if isinstance(item, exp.Table) and item.db:
        return float(sizes(item.db).get(item.name, math.inf))
    query = defining_query(item)
    return query_rows(query, sizes) if query is not None else math.inf


def query_rows(query: exp.Expression, sizes) -> float:
    """The most rows a query returns (see the module docstring)."""
    if isinstance(query, exp.Subquery):
        return query_rows(query.this, sizes)
    if isinstance(query, exp.Union):
        return query_rows(query.left, sizes) + query_rows(query.right, sizes)
    if isinstance(query, (exp.Intersect, exp.Except)):
        return query_rows(query.left, sizes)
    if isinstance(query, exp.Values):
        return float(len(query.expressions))
    if not isinstance(query, exp.Select):
        return math.inf
    rows = input_rows(query, sizes)
    if query.args.get("group") is None and any(a.find_ancestor(exp.Window, exp.Select) is query
                                               for e in query.expressions for a in e.find_all(exp.AggFunc)):
        rows = max(rows, 1.0)  # an aggregate without GROUP BY: one row, even over none
    limit = query.args.get("limit")
    count = limit.expression if isinstance(limit, exp.Limit) else None
    if isinstance(count, exp.Literal) and count.is_int:
        rows = min(rows, float(count.this))
    return rows


def defining_query(item: exp.Expression) -> exp.Expression | None:
    """The query behind a FROM item: a subquery's own, or the CTE of that name nearest above it (None for a
    recursive CTE's: its rows feed themselves)."""
    if isinstance(item, exp.Subquery):
        return item.this
    if not isinstance(item, exp.Table) or item.db:
        return None
    node = item.parent
    while node is not None:
        with_ = node.args.get("with_") if isinstance(node, exp.Query) else None
        for cte in with_.expressions if with_ else []:
            if cte.alias_or_name == item.name:
                return None if with_.args.get("recursive") else cte.this
        node = node.parent
    return None


def from_item(column: exp.Column) -> exp.Expression | None:
    """The FROM or JOIN item of the column's own SELECT that its qualifier names."""
    select = column.find_ancestor(exp.Select)
    if select is None:
        return None
    from_ = select.args.get("from_")
    items = ([from_.this] if from_ else []) + [j.this for j in select.args.get("joins") or []]
    return next((item for item in items if item.alias_or_name == column.table), None)


def output_expressions(query: exp.Expression, name: str) -> list[exp.Expression] | None:
    """The expressions a query's output column `name` takes its values from (one per UNION branch, by
    position), None where it has none (a star, an unknown name)."""
    if isinstance(query, exp.Subquery):
        return output_expressions(query.this, name)
    if isinstance(query, exp.SetOperation):
        left = query.left
        while isinstance(left, (exp.SetOperation, exp.Subquery)):
            left = left.left if isinstance(left, exp.SetOperation) else left.this
        if not isinstance(left, exp.Select) or name not in left.named_selects:
            return None
        return _branch_outputs(query, left.named_selects.index(name))
    if isinstance(query, exp.Select) and name in query.named_selects:
        return [query.expressions[query.named_selects.index(name)].unalias()]
    return None


def _branch_outputs(query: exp.Expression, index: int) -> list[exp.Expression] | None:
    if isinstance(query, exp.Subquery):
        return _branch_outputs(query.this, index)
    if isinstance(query, exp.SetOperation):
        left, right = _branch_outputs(query.left, index), _branch_outputs(query.right, index)
        return None if left is None or right is None else left + right
    if isinstance(query, exp.Select) and index < len(query.expressions) and not query.find(exp.Star):
        return [query.expressions[index].unalias()]
    return None


def derived_class(column: exp.Column, magnitude) -> int | None:
    """The magnitude class of a CTE's or subquery's column: the class of the bound `magnitude(e)` (B with
    |e| < B, None unknown) of every expression defining it. None where it is not derived or not bounded."""
    item = from_item(column)
    query = defining_query(item) if item is not None else None
    outputs = output_expressions(query, column.name) if query is not None else None
    if not outputs:
        return None
    bounds = [magnitude(e) for e in outputs]
    if any(b is None or not math.isfinite(b) for b in bounds):
        return None
    return bits_above(max(bounds))


def bits_above(bound: float) -> int:
    """The least M with 2^M >= bound: |x| < bound gives |x| < 2^M."""
    return max(math.ceil(math.log2(bound)), 0) if bound > 1 else 0
