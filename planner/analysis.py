"""Analysis rules (`sqlsecure/policy/rules.py`) checked against a qualified query, and the group threshold
they imply. Rules bind every issuer but the table's owner.

An `aggregations` column may appear only as the direct argument of one of its allowed aggregates
(through the rule's `scalar_functions`), never windowed or FILTERed, anywhere in the query: so
`SUM(CASE WHEN id = 950 THEN amount END)`, `SUM(amount > 300)` and `SUM(amount) OVER (...)` are
refused. With `dimension_columns` the rule is an aggregation rule (AWS Clean Rooms): every column
used must be classified, dimensions only in SELECT (as GROUP BY keys) / GROUP BY / WHERE / ORDER BY,
join columns only in joins, and the table is read only by the revealed, aggregating SELECT."""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from sqlsecure.planner.logical import aggregates_in

from sqlsecure.errors import PolicyViolation
from sqlsecure.planner.ccl_rules import Rule, function_name, rule_of

AGG_NAMES = {exp.Sum: "SUM", exp.Avg: "AVG", exp.Count: "COUNT", exp.Min: "MIN", exp.Max: "MAX"}


@dataclass(frozen=True)
class Threshold:
    """Groups revealed to the issuer need at least `k` rows, or `k` distinct `identity` values."""

    k: int
    identity: exp.Column | None = None


def _from_items(select: exp.Select) -> list[exp.Expression]:
    """FROM's item and each JOIN's, in order."""
    return ([select.args["from_"].this] if select.args.get("from_") else []) + [
        j.this for j in select.args.get("joins") or []]


def _sources(select: exp.Select) -> dict[str, tuple[str, str]]:
    return {i.alias_or_name: (i.db, i.name) for i in _from_items(select) if isinstance(i, exp.Table) and i.db}


def _agg_name(node: exp.AggFunc) -> str:
    if isinstance(node, exp.Count) and isinstance(node.this, exp.Distinct):
        return "COUNT_DISTINCT"
    return AGG_NAMES.get(type(node), node.sql_name().upper())


def check_rules(tree: exp.Expression, rules: dict, issuer: str, min_group_size: int) -> Threshold:
    """Raise PolicyViolation for a broken rule; return the threshold for the query's revealed groups."""
    read = {(t.db, t.name) for t in tree.find_all(exp.Table) if t.db and t.db != issuer}
    stricter = [rules[src].min_group_size or 0 for src in read if src in rules]
    threshold = Threshold(max([min_group_size, *stricter]))  # a table's rule binds wherever it is read
    for select in tree.find_all(exp.Select):
        sources = _sources(select)
        bound = {alias: rules[src] for alias, src in sources.items()
                 if src in rules and src[0] != issuer}
        if not bound:
            continue
        parties = {party for party, _ in sources.values()}
        for alias, rule in bound.items():
            name = f"{rule.party}.{rule.table}"
            if rule.join_required and issuer not in parties:
                raise PolicyViolation(f"{name} may only be queried joined with a table of {issuer} "
                                      f"(its rule join_required)")
            if select is tree:  # thresholds bind the revealed (outermost) query
                k = max(threshold.k, rule.min_group_size or 0)
                identity = threshold.identity or (
                    exp.column(rule.identity_column, alias, quoted=True) if rule.identity_column else None)
                threshold = Threshold(k, identity)
        for cond in _join_equalities(select):
            for column in (cond.left, cond.right):
                rule = bound.get(column.table)
                if rule and rule.join_columns is not None and column.name not in rule.join_columns:
                    raise PolicyViolation(
                        f"{rule.party}.{rule.table}.{column.name} may not be joined on: its rule allows "
                        f"join_columns {', '.join(rule.join_columns) or '(none)'}")
        for output in select.expressions:
            for column in output.find_all(exp.Column):
                rule = bound.get(column.table)
                if rule is not None and column.name in rule.never_output:
                    raise PolicyViolation(f"{rule.party}.{rule.table}.{column.name} may never be output "
                                          f"(its rule never_output), in {output.sql()}")
        for column in _own_columns(select):
            rule = bound.get(column.table)
            if rule is None:
                continue
            if column.name in rule.aggregations:
                _check_aggregate_argument(column, rule)
            elif rule.dimension_columns is not None:
                _check_classified(column, rule, select, select is tree)
    return threshold


def _own_columns(select: exp.Select):
    """Columns naming a FROM / JOIN item of `select`, also from correlated subqueries nested in it."""
    for column in select.find_all(exp.Column):
        owner = column.find_ancestor(exp.Select)
        while owner is not None and owner is not select and column.table not in _aliases(owner):
            owner = owner.find_ancestor(exp.Select)
        if owner is select:
            yield column


def _aliases(select: exp.Select) -> set[str]:
    items = ([select.args["from_"].this] if select.args.get("from_") else []) + [
        j.this for j in select.args.get("joins") or []]
    return {i.alias_or_name for i in items}


def _passes_through(node: exp.Expression, rule) -> bool:
    """Between an aggregate column and its aggregate: parentheses, DISTINCT, the rule's scalar functions."""
    return isinstance(node, (exp.Paren, exp.Distinct)) or (
        not isinstance(node, exp.AggFunc) and function_name(node).upper() in rule.scalar_functions)


def _check_aggregate_argument(column: exp.Column, rule) -> None:
    """The column is the direct argument of an allowed aggregate that is neither windowed nor filtered."""
    node = column.parent
    while node is not None and _passes_through(node, rule):
        node = node.parent
    allowed = rule.aggregations[column.name]
    if (isinstance(node, exp.AggFunc) and _agg_name(node) in allowed and rule_of(node) in (Rule.AGGREGATE, Rule.COUNT)
            and not isinstance(node.parent, (exp.Window, exp.Filter))):
        return
    found = column.find_ancestor(exp.AggFunc)
    used = (f"{_agg_name(found)} over {node.sql()}" if found is not None and node is not found
            else _agg_name(found) if found is not None else "no aggregate")
    if found is not None and isinstance(found.parent, (exp.Window, exp.Filter)):
        used = f"{found.parent.sql()} (a window or FILTER is not an aggregation)"
    via = f" (or through {', '.join(sorted(rule.scalar_functions))})" if rule.scalar_functions else ""
    raise PolicyViolation(
        f"{rule.party}.{rule.table}.{column.name} may only be output inside {', '.join(sorted(allowed))}, as "
        f"their direct argument{via}, not windowed (its rule aggregations); found {used} in "
        f"{_clause_of(column).sql()[:120]}; aggregate the column itself, or ask {rule.party} to allow this")


DIMENSION_CLAUSES = {"expressions", "group", "where", "order"}


def _clause_of(column: exp.Column, select: exp.Select | None = None) -> exp.Expression:
    """The clause of `select` (default: the nearest SELECT) that holds the column."""
    node = column
    while node.parent is not None and (node.parent is not select if select is not None
                                       else not isinstance(node.parent, exp.Select)):
        node = node.parent
    return node


def _check_classified(column: exp.Column, rule, select: exp.Select, outermost: bool) -> None:
    """Under an aggregation rule: join columns only in joins, dimensions only where grouping shows them."""
    ref = f"{rule.party}.{rule.table}.{column.name}"
    name = f"{rule.party}.{rule.table}"
    if not outermost:
        raise PolicyViolation(f"{name} has an aggregation rule: read it in the outermost SELECT, not in a "
                              f"subquery or CTE (found {ref} in {select.sql()[:120]})")
    if not (select.args.get("group") or any(aggregates_in(e) for e in select.expressions)):
        raise PolicyViolation(f"{name} has an aggregation rule: the query must aggregate (found {ref} in a "
                              "SELECT without aggregates or GROUP BY)")
    clause = _clause_of(column, select).arg_key
    if column.name in (rule.join_columns or ()) and clause == "joins":
        return
    if column.name not in rule.dimension_columns:
        raise PolicyViolation(f"{ref} is not a dimension, aggregate or join column of its aggregation rule, "
                              f"so it may not be used in {clause.upper()}; ask {rule.party} to classify it")
    inside = column.find_ancestor(exp.AggFunc, exp.Window, exp.Filter)
    if clause not in DIMENSION_CLAUSES or inside is not None:
        where = inside.sql()[:80] if inside is not None else clause.upper()
        raise PolicyViolation(f"{ref} is a dimension column: only in SELECT (as a GROUP BY key), GROUP BY, "
                              f"WHERE or ORDER BY, never inside an aggregate or window (found in {where})")
    group = select.args.get("group")
    keys = {g.sql() for g in (group.expressions if group else [])}
    if clause == "expressions" and not _under_key(column, select, keys):
        raise PolicyViolation(f"{ref} is a dimension column: output it only as a GROUP BY key")


def _under_key(column: exp.Column, select: exp.Select, keys: set[str]) -> bool:
    """Whether the column is (inside) an expression the SELECT groups by."""
    node = column
    while node is not None and node is not select:
        if node.sql() in keys:
            return True
        node = node.parent
    return False


def _join_equalities(select: exp.Select):
    conds = [j.args.get("on") for j in select.args.get("joins") or []]
    where = select.args.get("where")
    conds.append(where.this if where else None)
    for cond in filter(None, conds):
        for eq in cond.find_all(exp.EQ):
            if all(isinstance(s, exp.Column) for s in (eq.left, eq.right)) and eq.left.table != eq.right.table:
                yield eq


def with_threshold(tree: exp.Expression, threshold: Threshold) -> exp.Expression:
    """Add `HAVING COUNT(DISTINCT identity) >= k` to an aggregating outer SELECT (row counts are added
    by placement); other shapes are returned unchanged."""
    if threshold.identity is None or threshold.k <= 0 or not isinstance(tree, exp.Select) or not _aggregates(tree):
        return tree
    tree = tree.copy()
    cond = exp.GTE(this=exp.Count(this=exp.Distinct(expressions=[threshold.identity.copy()])),
                   expression=exp.Literal.number(threshold.k))
    having = tree.args.get("having")
    tree.set("having", exp.Having(this=exp.and_(having.this, cond) if having else cond))
    return tree


def with_owner_thresholds(tree: exp.Expression, issuer: str, k: int) -> exp.Expression:
    """A protected owner's (any party but the issuer's) aggregate in FROM of a SELECT that does not aggregate
    keeps its groups of >= k rows at the owner (`HAVING COUNT(*) >= k` on its first aggregating level), as the
    operator translation does (docs/federation.md, "The group threshold through nested shapes"): no outer
    aggregate's threshold bounds its groups, so a group of one row would reveal that row's aggregate."""
    if k <= 0 or not isinstance(tree, exp.Select) or _aggregates(tree):
        return tree
    tree = tree.copy()
    ctes = {cte.alias_or_name: cte.this for cte in tree.find_all(exp.CTE)}
    done: set[int] = set()
    for item in _from_items(tree):
        body = item.this if isinstance(item, exp.Subquery) else (
            ctes.get(item.name) if isinstance(item, exp.Table) and not item.db else None)
        owners = {t.db for t in body.find_all(exp.Table) if t.db} if body is not None else set()
        if len(owners) == 1 and owners != {issuer} and id(body) not in done:
            done.add(id(body))  # a CTE read twice is thresholded once
            _threshold_first_aggregate(body, k)
    return tree


def _aggregates(select: exp.Select) -> bool:
    """Whether a SELECT aggregates (GROUP BY, or an aggregate outside a window)."""
    return bool(select.args.get("group")) or any(aggregates_in(e) for e in select.expressions)


def _threshold_first_aggregate(query: exp.Expression, k: int) -> None:
    """`HAVING COUNT(*) >= k` on the aggregating SELECTs nearest the top of a single-party query (in place)."""
    if isinstance(query, exp.Subquery):
        _threshold_first_aggregate(query.this, k)
    elif isinstance(query, exp.SetOperation):
        _threshold_first_aggregate(query.this, k)
        _threshold_first_aggregate(query.expression, k)
    elif isinstance(query, exp.Select) and _aggregates(query):
        cond = exp.GTE(this=exp.Count(this=exp.Star()), expression=exp.Literal.number(k))
        having = query.args.get("having")
        query.set("having", exp.Having(this=exp.and_(having.this, cond) if having else cond))
    elif isinstance(query, exp.Select):
        for item in _from_items(query):
            if isinstance(item, exp.Subquery):
                _threshold_first_aggregate(item.this, k)
