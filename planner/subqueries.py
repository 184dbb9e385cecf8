"""Subqueries in expressions, as operators of the translation (issue 16): scalar subqueries, correlated
ones, EXISTS with any correlation, and `x op ANY / ALL (subquery)`.

Each becomes a join with the query around it (`tree.py` calls these functions):
- an uncorrelated scalar subquery: a relation of exactly one row (an ungrouped aggregate, or at most
  one row made one by MAX: NULL when empty) cross-joined to its consumer, its value read as a column;
  one that may return several rows is refused (DuckDB raises an error at run time);
- a correlated scalar aggregate: grouped by its correlation keys and LEFT-joined on them (COUNT's empty
  group is 0, not NULL: the count bug; revealed under a group threshold, NULL: see `_correlated_scalar`);
- a correlated IN: a semi join on (correlation keys, the IN value); NOT IN: an anti join on them, then
  SQL's NULL rule per group (empty: kept; x NULL or a NULL value in the group: dropped);
- EXISTS / NOT EXISTS with non-equality correlations: an inner join with the residual (EXISTS, made one
  row per outer row by DISTINCT over a row number), or a LEFT join keeping the unmatched rows (NOT EXISTS);
- `x op ANY / ALL (subquery)`: COUNT(*), COUNT(value), MIN and MAX of the subquery in one row, and SQL's
  three-valued rule over them (empty: ANY false, ALL true; a NULL among the values: NULL unless decided).

Column control is inferred on the query text (`ccl.py` treats a subquery as a value of its columns and
rows). The group threshold: a subquery's rows never count toward the query around it; a scalar or
correlated aggregate the query reveals is thresholded on its own (`Subquery.thresholded`), so a group of
fewer than k rows of a protected owner reads NULL (docs/federation.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from sqlsecure.errors import NotSupportedError
from sqlsecure.planner.build import conjuncts_of
from sqlsecure.planner.tree import (
    Aggregate, Distinct, Filter, Join, Op, Project, Sort, Unary, Window, _aggregates, _outer_columns, _sql, named,
    quoted,
)


@dataclass(frozen=True)
class Subquery(Unary):
    """A subquery's relation used by the query around it. `one_row`: made exactly one row (MAX of each
    column: NULLs when empty). `thresholded`: its aggregates keep only groups of >= k rows of each
    protected owner, as a query's own would: every subquery the user wrote, wherever it is read (a value,
    a condition, IN, EXISTS, ANY / ALL); False only for the counts and extremes the translation computes
    over such a relation (those are not revealed, the relation beneath them is thresholded)."""

    one_row: bool = False
    thresholded: bool = True


COMPARISONS = {exp.GT: ">", exp.GTE: ">=", exp.LT: "<", exp.LTE: "<=", exp.EQ: "=", exp.NEQ: "<>"}


def own_nodes(expression: exp.Expression):
    """The nodes of `expression` outside its subqueries (each subquery node itself included)."""
    stack = [expression]
    while stack:
        node = stack.pop()
        yield node
        if node is expression or not isinstance(node, (exp.Subquery, exp.Select, exp.Exists, exp.Any, exp.All)):
            stack.extend(node.iter_expressions())


def value_subqueries(expression: exp.Expression) -> list[exp.Subquery]:
    """The scalar subqueries of `expression` (not IN / EXISTS / ANY / ALL ones, not nested ones)."""
    return [node for node in own_nodes(expression) if isinstance(node, exp.Subquery) and node is not expression
            and not isinstance(node.parent, (exp.In, exp.Exists, exp.Any, exp.All))]


def memberships(expression: exp.Expression) -> list[exp.In]:
    """The `x IN (subquery)` of `expression` (not nested in a subquery)."""
    return [node for node in own_nodes(expression) if isinstance(node, exp.In) and node.args.get("query") is not None]


def own_aggregates(expression: exp.Expression) -> list[exp.AggFunc]:
    """The aggregate calls of `expression` itself: not in a window, not in a subquery."""
    return [node for node in own_nodes(expression) if isinstance(node, exp.AggFunc)
            and node.find_ancestor(exp.Window) is None]


def quantified(expression: exp.Expression) -> list[exp.Expression]:
    """The `x op ANY / ALL (subquery)` comparisons of `expression`."""
    return [c for c in expression.find_all(*COMPARISONS) if isinstance(c.expression, (exp.Any, exp.All))]


def attach(builder, op: Op, expression: exp.Expression, ctes: dict, qualified: bool) -> tuple[Op, exp.Expression]:
    """`op` joined with each scalar subquery and ANY / ALL comparison of `expression`, and `expression`
    reading their values as columns (`qualified`: as `"tag"."column"`, so a WHERE conjunct is pushed no
    lower than the join; otherwise one identifier, for SELECT items and HAVING over an aggregate)."""
    expression, joins = prepare(builder, expression, ctes, qualified)
    return graft(op, joins), expression


def prepare(builder, expression: exp.Expression, ctes: dict, qualified: bool, correlated: bool = True):
    """`expression` reading its subqueries' values as columns, and the joins (functions of the operator
    they join to) that bring those columns; `correlated` False refuses correlated ones (after GROUP BY
    the outer columns are gone). Every scalar subquery is thresholded, wherever it is read."""
    holder = exp.Paren(this=expression.copy())  # the expression may be a subquery itself
    joins = []
    for comparison in quantified(holder):
        join, value = _any_all(builder, comparison, ctes, qualified)
        joins.append(join)
        comparison.replace(value)
    for member in memberships(holder):
        if not correlated:
            raise NotSupportedError(f"{_sql(member)[:80]} beside GROUP BY across parties is not supported; "
                                    "compute it in a derived table and aggregate that")
        join, value = _in_value(builder, member, ctes, qualified)
        joins.append(join)
        member.replace(value)
    for sub in value_subqueries(holder):
        if not _outer_columns(sub.this):
            join, value = _scalar(builder, sub, ctes, qualified)
        elif correlated:
            join, value = _correlated_scalar(builder, sub, ctes, qualified)
        else:
            raise NotSupportedError(f"the correlated subquery {_sql(sub)[:80]} beside GROUP BY across parties "
                                    "is not supported; aggregate it in a derived table and join that")
        joins.append(join)
        sub.replace(value)
    return holder.this, joins


def graft(op: Op, joins) -> Op:
    """`op` with the joins `prepare` made, in order."""
    for join in joins:
        op = join(op)
    return op


def _column(tag: str, name: str, qualified: bool) -> exp.Column:
    return exp.column(name, table=tag, quoted=True) if qualified else exp.column(f"{tag}.{name}", quoted=True)


def _scalar(builder, sub: exp.Subquery, ctes: dict, qualified: bool):
    """An uncorrelated scalar subquery: its one row cross-joined, its value a column, thresholded."""
    inner = builder.query(sub.this, ctes)
    if len(inner.columns) != 1:
        raise NotSupportedError(f"the scalar subquery {_sql(sub)[:80]} returns {len(inner.columns)} columns; "
                                "a value is one column")
    if not at_most_one_row(inner):
        raise NotSupportedError(f"the scalar subquery {_sql(sub)[:80]} may return more than one row (DuckDB "
                                "raises an error then); make it an aggregate without GROUP BY, or add LIMIT 1")
    side = builder.side(Subquery(inner, one_row=True))
    return (lambda op: Join("cross", op, side)), _column(side.columns[0].split(".", 1)[0], inner.columns[0],
                                                         qualified)


def at_most_one_row(op: Op) -> bool:
    """Whether `op` yields at most one row whatever the data: an ungrouped aggregate, a LIMIT 0 or 1, or
    an operator that keeps or drops the rows of one."""
    if isinstance(op, Aggregate) and not op.keys:
        return True
    if isinstance(op, Sort) and op.limit is not None and op.limit <= 1:
        return True
    if isinstance(op, (Filter, Project, Window, Sort, Distinct, Subquery)):
        return at_most_one_row(op.child)
    return isinstance(op, Join) and op.kind in ("semi", "anti") and at_most_one_row(op.left)


# -- correlation ---------------------------------------------------------------------------------------
def correlation(body: exp.Select, what: str) -> tuple[list, list, list, list]:
    """(outer keys, inner keys, residual conjuncts, uncorrelated conjuncts) of a subquery's WHERE: an
    equality `inner = outer` is a key pair; any other conjunct that refers to the outer query a residual."""
    outer = _outer_columns(body)
    where = body.args.get("where")
    outer_keys, inner_keys, residual, kept = [], [], [], []
    for c in conjuncts_of(where.this if where else None):
        if not {col.table for col in c.find_all(exp.Column)} & outer:
            kept.append(c)
            continue
        sides = (c.left, c.right) if isinstance(c, exp.EQ) else ()
        tables = [{col.table for col in s.find_all(exp.Column)} for s in sides]
        pair = [i for i, ts in enumerate(tables) if ts and ts <= outer and not tables[1 - i] & outer and tables[1 - i]]
        if len(pair) == 1:
            outer_keys.append(sides[pair[0]])
            inner_keys.append(sides[1 - pair[0]])
        else:
            residual.append(c)
    for clause in ("expressions", "group", "having", "order", "joins"):
        value = body.args.get(clause)
        for part in value if isinstance(value, list) else [value]:
            if part is not None and {col.table for col in part.find_all(exp.Column)} & outer:
                raise NotSupportedError(f"{what}: the subquery refers to the outer query outside its WHERE "
                                        f"({_sql(part)[:80]}); move the correlation into WHERE")
    return outer_keys, inner_keys, residual, kept


def _with_where(body: exp.Select, conjuncts: list) -> exp.Select:
    body.set("where", exp.Where(this=exp.and_(*conjuncts)) if conjuncts else None)
    return body


def _keys_join(kind: str, op: Op, side: Op, outer_keys, tag: str, condition: str | None = None) -> Join:
    """`op` joined to a subquery's side on outer key i = the side's `__key<i>`."""
    return Join(kind, op, side, tuple(_sql(named(k)) for k in outer_keys),
                tuple(quoted(f"{tag}.__key{i}") for i in range(len(outer_keys))), condition)


def _correlated_scalar(builder, sub: exp.Subquery, ctes: dict, qualified: bool):
    """`(SELECT agg(y) FROM t2 WHERE t2.k = t1.k ...)`: the aggregate grouped by the inner keys,
    LEFT-joined on the outer keys; an outer row without a group reads the aggregate over no rows.
    Its groups are thresholded wherever it is read (a condition on a lone row's aggregate reads it as
    an output does). A COUNT whose groups the threshold hides reads NULL for a missing group, empty or
    hidden alike: telling them apart would reveal whether a small group has rows."""
    what = f"the correlated subquery {_sql(sub)[:80]}"
    body = sub.this
    if not isinstance(body, exp.Select) or len(body.expressions) != 1:
        raise NotSupportedError(f"{what}: a correlated scalar subquery is a SELECT of one value")
    outer_keys, inner_keys, residual, kept = correlation(body, what)
    value = body.expressions[0].unalias()
    if residual or not outer_keys:
        raise NotSupportedError(f"{what}: across parties a correlated scalar subquery refers to the outer "
                                f"query only in equalities inner = outer, not in {_sql(residual[0])[:80] if residual else 'none'}")
    if any(body.args.get(c) for c in ("group", "limit", "offset", "having", "distinct")) or not _aggregates(value):
        raise NotSupportedError(f"{what}: across parties a correlated scalar subquery is one aggregate without "
                                "GROUP BY, HAVING, DISTINCT or LIMIT (one value per outer row)")
    empty = empty_value(value, what)
    body = _with_where(body.copy(), kept)
    body.set("expressions", [exp.alias_(k.copy(), f"__key{i}", quoted=True) for i, k in enumerate(inner_keys)]
             + [exp.alias_(value.copy(), "__value", quoted=True)])
    body.set("group", exp.Group(expressions=[k.copy() for k in inner_keys]))
    side = builder.side(Subquery(builder.query(body, ctes)))
    tag = side.columns[0].split(".", 1)[0]
    column = _column(tag, "__value", qualified)
    if empty is not None and builder.suppresses(side):
        empty = None  # a missing group is empty or hidden by the threshold, and which must not show: NULL
    read = column if empty is None else exp.Coalesce(this=column, expressions=[empty])
    return (lambda op: _keys_join("left", op, side, outer_keys, tag)), read


def empty_value(value: exp.Expression, what: str) -> exp.Expression | None:
    """What an aggregate value is over no rows, when it is not NULL: COUNT(...) is 0. An expression of a
    COUNT, or one that turns NULL into a value (COALESCE, CASE, IS), is refused: its empty value would
    need evaluating."""
    if isinstance(value, exp.Count):
        return exp.Literal.number(0)
    if value.find(exp.Count, exp.Coalesce, exp.Case, exp.If, exp.Is) is not None:
        raise NotSupportedError(f"{what}: across parties a correlated aggregate is COUNT, or an expression "
                                "of SUM, AVG, MIN, MAX without COUNT, COALESCE, CASE or IS (its value over "
                                "no rows is then NULL); apply the rest in the outer query")
    return None


def correlated_in(builder, op: Op, node: exp.In, negated: bool, ctes: dict) -> Op:
    """`x IN (SELECT y FROM t2 WHERE t2.k = t1.k ...)`: a semi join on (outer keys, x) = (inner keys, y)."""
    what = f"the correlated subquery of {_sql(node)[:80]}"
    query = node.args["query"]
    body = query.this if isinstance(query, exp.Subquery) else query
    if not isinstance(body, exp.Select) or len(body.expressions) != 1:
        raise NotSupportedError(f"{what}: IN (subquery) needs a SELECT of one column")
    outer_keys, inner_keys, residual, kept = correlation(body, what)
    if residual:
        raise NotSupportedError(f"{what}: across parties a correlated IN refers to the outer query only in "
                                f"equalities inner = outer, not in {_sql(residual[0])[:80]}; write EXISTS")
    if any(body.args.get(c) for c in ("limit", "offset")):
        raise NotSupportedError(f"{what}: a correlated IN (subquery) with LIMIT across parties is not supported")
    member = body.expressions[0].unalias()
    body = _with_where(body.copy(), kept)
    body.set("expressions", [exp.alias_(k.copy(), f"__key{i}", quoted=True)
                             for i, k in enumerate([*inner_keys, member])])
    if _aggregates(member) or body.args.get("having"):
        raise NotSupportedError(f"{what}: a correlated IN over an aggregate across parties is not supported")
    body.set("group", None)  # without aggregates a GROUP BY only removes duplicates, which a semi join ignores
    body.set("distinct", None)
    side = builder.side(Subquery(builder.query(body, ctes)))
    tag = side.columns[0].split(".", 1)[0]
    if not negated:
        return _keys_join("semi", op, side, [*outer_keys, node.this], tag)
    return _not_in_group(builder, _keys_join("anti", op, side, [*outer_keys, node.this], tag), body, outer_keys,
                         inner_keys, member, node.this, ctes)


def _not_in_group(builder, kept: Op, body: exp.Select, outer_keys, inner_keys, member, x, ctes: dict) -> Op:
    """A correlated NOT IN's NULL rule per outer row, after the anti join on (keys, x) dropped the rows
    whose x is among their group's values: the row stays when its group is empty, or when x is not NULL
    and no value of the group is NULL (COUNT(*), COUNT(value) per group, LEFT-joined on the keys)."""
    counts = body.copy()
    counts.set("expressions", [exp.alias_(k.copy(), f"__key{i}", quoted=True) for i, k in enumerate(inner_keys)]
               + [exp.alias_(exp.Count(this=exp.Star()), "__n", quoted=True),
                  exp.alias_(exp.Count(this=member.copy()), "__nn", quoted=True)])
    counts.set("group", exp.Group(expressions=[k.copy() for k in inner_keys]))
    side = builder.side(Subquery(builder.query(counts, ctes), thresholded=False))
    tag = side.columns[0].split(".", 1)[0]
    n, nn = quoted(f"{tag}.__n"), quoted(f"{tag}.__nn")
    rule = f"{n} IS NULL OR (({_sql(named(x))}) IS NOT NULL AND {nn} = {n})"
    columns = tuple((c, quoted(c)) for c in kept.columns)
    return Project(Filter(_keys_join("left", kept, side, outer_keys, tag), rule), columns)


def exists_with_residual(builder, op: Op, body: exp.Select, negated: bool, ctes: dict) -> Op:
    """EXISTS with equalities and other conditions on the outer query: the pairs that satisfy them
    (an inner join with the residual condition). EXISTS: each outer row once (DISTINCT over a row
    number); NOT EXISTS: the outer rows a LEFT join leaves unmatched."""
    what = "EXISTS across parties"
    outer_keys, inner_keys, residual, kept = correlation(body, what)
    inner_columns = sorted({col for c in residual for col in c.find_all(exp.Column)
                            if col.table not in _outer_columns(body)}, key=lambda c: c.sql())
    body = _with_where(body.copy(), kept)
    names = {c.sql(): f"__c{i}" for i, c in enumerate(inner_columns)}
    body.set("expressions", [exp.alias_(k.copy(), f"__key{i}", quoted=True) for i, k in enumerate(inner_keys)]
             + [exp.alias_(c.copy(), names[c.sql()], quoted=True) for c in inner_columns]
             + [exp.alias_(exp.Literal.number(1), "__hit", quoted=True)])
    body.set("distinct", None)
    side = builder.side(Subquery(builder.query(body, ctes)))
    tag = side.columns[0].split(".", 1)[0]

    def rename(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column) and node.sql() in names:
            return exp.column(f"{tag}.{names[node.sql()]}", quoted=True)
        return node

    condition = _sql(named(exp.and_(*(c.copy() for c in residual)).transform(rename)))
    columns = tuple((c, quoted(c)) for c in op.columns)
    if negated:  # unmatched: a matched row's key is not NULL (`rewrite_semijoin.anti_in_pairs` reads this)
        joined = _keys_join("left", op, side, outer_keys, tag, condition)
        unmatched = joined.right_keys[0] if outer_keys else quoted(tag + '.__hit')
        return Project(Filter(joined, f"{unmatched} IS NULL"), columns)
    row = builder.name("row")
    numbered = Window(op, row, "row_number", None, (), ())
    kind = "inner" if outer_keys else "cross"
    pairs = _keys_join(kind, numbered, side, outer_keys, tag, condition)
    return Project(Distinct(Project(pairs, columns + ((row, quoted(row)),))), columns)


def _one_column(builder, query: exp.Expression, ctes: dict, correlated: str) -> Op:
    """The operator tree of an uncorrelated subquery of one column (`correlated`: the refusal otherwise),
    thresholded (its aggregates keep groups of >= k rows of each protected owner: `Subquery`)."""
    body = query.this if isinstance(query, exp.Subquery) else query
    if not isinstance(body, exp.Query):
        raise NotSupportedError(f"{_sql(query)[:80]}: a subquery is needed here")
    if _outer_columns(body):
        raise NotSupportedError(correlated)
    inner = builder.query(body, ctes)
    if len(inner.columns) != 1:
        raise NotSupportedError(f"the subquery {_sql(query)[:80]} returns {len(inner.columns)} columns; one is "
                                "needed here")
    return thresholded(inner)


def thresholded(op: Op) -> Op:
    """`op` as a thresholded `Subquery` when it aggregates anywhere (its groups are then counted as a
    query's own are), else as is: an IN member or ANY / ALL value may be a lone row's aggregate."""
    stack = [op]
    while stack:
        node = stack.pop()
        if isinstance(node, Aggregate):
            return Subquery(op)
        stack.extend(node.children)
    return op


def _any_all(builder, comparison: exp.Expression, ctes: dict, qualified: bool):
    """`x op ANY / ALL (subquery)`: COUNT(*), COUNT(v), MIN(v), MAX(v) of the subquery in one row, and
    SQL's rule: ANY is false over no rows, ALL true; decided by MIN / MAX; else NULL if a value or x is NULL."""
    quantifier = comparison.expression
    sign = COMPARISONS[type(comparison)]
    inner = _one_column(builder, quantifier.this, ctes, f"{_sql(comparison)[:80]}: a correlated ANY / ALL "
                        "subquery across parties is not supported; write it with EXISTS / NOT EXISTS")
    value = quoted(inner.columns[0])
    stats = Aggregate(inner, (), (("n", "COUNT", None, False), ("nn", "COUNT", value, False),
                                  ("mn", "MIN", value, False), ("mx", "MAX", value, False)))
    side = builder.side(Subquery(stats, one_row=True, thresholded=False))
    tag = side.columns[0].split(".", 1)[0]
    n, nn, mn, mx = (_column(tag, c, qualified).sql(dialect="duckdb") for c in ("n", "nn", "mn", "mx"))
    x = f"({comparison.this.sql(dialect='duckdb')})"
    every = isinstance(quantifier, exp.All)
    if sign in ("=", "<>"):
        decided = f"{x} <> {mn} OR {x} <> {mx}"  # some value differs from x
        if (sign == "=") != every:
            raise NotSupportedError(f"{_sql(comparison)[:80]}: = ANY is IN, <> ALL is NOT IN: write them so, as a "
                                    "WHERE condition")
    else:
        extreme = mn if (sign in (">", ">=")) != every else mx
        decided = f"NOT ({x} {sign} {extreme})" if every else f"{x} {sign} {extreme}"
    known = "FALSE" if every else "TRUE"
    text = (f"(CASE WHEN {n} = 0 THEN {'TRUE' if every else 'FALSE'} WHEN {decided} THEN {known} "
            f"WHEN {nn} < {n} OR {x} IS NULL THEN NULL ELSE {'TRUE' if every else 'FALSE'} END) = TRUE")
    return (lambda op: Join("cross", op, side)), exp.paren(exp.maybe_parse(text, dialect="duckdb"))


def as_membership(inner: exp.Expression, negated: bool) -> exp.Expression | None:
    """`x = ANY (q)` as `x IN (q)`, `x <> ALL (q)` as `x NOT IN (q)` (a WHERE conjunct: a semi or
    null-aware anti join); None for anything else."""
    quantifier = inner.expression if isinstance(inner, (exp.EQ, exp.NEQ)) else None
    if not isinstance(quantifier, (exp.Any, exp.All)) or isinstance(inner, exp.EQ) == isinstance(quantifier, exp.All):
        return None
    query = quantifier.this
    member = exp.In(this=inner.this.copy(), query=query.copy() if isinstance(query, exp.Subquery)
                    else exp.Subquery(this=query.copy()))
    return exp.Not(this=member) if isinstance(inner, exp.NEQ) != negated else member


def without_limit(body: exp.Select) -> exp.Select:
    """A correlated EXISTS subquery without its ORDER BY and LIMIT (n >= 1: any row is a row)."""
    limit, offset = body.args.get("limit"), body.args.get("offset")
    if offset is not None:
        raise NotSupportedError("EXISTS across parties: a correlated subquery with OFFSET is not supported")
    if limit is not None:
        value = limit.args.get("expression") if limit.args.get("expression") is not None else limit.this
        if not (isinstance(value, exp.Literal) and value.is_int and int(value.this) >= 1):
            raise NotSupportedError(f"EXISTS across parties: LIMIT {_sql(value)} in a correlated subquery; "
                                    "a LIMIT of at least 1 (or none) is supported")
    body = body.copy()
    body.set("limit", None)
    body.set("order", None)
    return body


def _in_value(builder, node: exp.In, ctes: dict, qualified: bool):
    """`x IN (subquery)` as a value: a LEFT join to the subquery's distinct values on x (a match is TRUE),
    and its COUNT(*), COUNT(value) in one row for SQL's rule otherwise (no rows: FALSE; a NULL among the
    values, or x NULL: NULL; else FALSE)."""
    inner = _one_column(builder, node.args["query"], ctes, f"the correlated subquery of {_sql(node)[:80]} inside "
                        "an expression across parties is not supported; write IN as a WHERE condition of its own")
    value = quoted(inner.columns[0])
    values = builder.side(Subquery(Distinct(Project(inner, (("__v", value), ("__hit", "1")))), thresholded=False))
    stats = builder.side(Subquery(Aggregate(inner, (), (("n", "COUNT", None, False), ("nn", "COUNT", value, False))),
                                  one_row=True, thresholded=False))
    vtag, stag = (side.columns[0].split(".", 1)[0] for side in (values, stats))
    hit = _column(vtag, "__hit", qualified).sql(dialect="duckdb")
    n, nn = (_column(stag, c, qualified).sql(dialect="duckdb") for c in ("n", "nn"))
    x = f"({node.this.sql(dialect='duckdb')})"
    text = (f"(CASE WHEN {hit} IS NOT NULL THEN TRUE WHEN {n} = 0 THEN FALSE WHEN {nn} < {n} OR {x} IS NULL "
            "THEN NULL ELSE FALSE END) = TRUE")

    def join(op: Op) -> Op:
        return Join("cross", Join("left", op, values, (_sql(named(node.this)),), (quoted(f"{vtag}.__v"),)), stats)

    return join, exp.paren(exp.maybe_parse(text, dialect="duckdb"))
