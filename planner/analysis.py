"""Analysis rules (`sqlsecure/policy/rules.py`) checked against a qualified query, and the group threshold
they imply. Rules bind every issuer but the table's owner."""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from sqlsecure.planner.logical import aggregates_in

from sqlsecure.errors import PolicyViolation

AGG_NAMES = {exp.Sum: "SUM", exp.Avg: "AVG", exp.Count: "COUNT", exp.Min: "MIN", exp.Max: "MAX"}


@dataclass(frozen=True)
class Threshold:
    """Groups revealed to the issuer need at least `k` rows, or `k` distinct `identity` values."""

    k: int
    identity: exp.Column | None = None


def _sources(select: exp.Select) -> dict[str, tuple[str, str]]:
    items = ([select.args["from_"].this] if select.args.get("from_") else []) + [
        j.this for j in select.args.get("joins") or []]
    return {i.alias_or_name: (i.db, i.name) for i in items if isinstance(i, exp.Table) and i.db}


def _agg_name(node: exp.AggFunc) -> str:
    if isinstance(node, exp.Count) and isinstance(node.this, exp.Distinct):
        return "COUNT_DISTINCT"
    return AGG_NAMES.get(type(node), node.sql_name().upper())


def check_rules(tree: exp.Expression, rules: dict, issuer: str, min_group_size: int) -> Threshold:
    """Raise PolicyViolation for a broken rule; return the threshold for the query's revealed groups."""
    threshold = Threshold(min_group_size)
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
                if rule is None:
                    continue
                ref = f"{rule.party}.{rule.table}.{column.name}"
                if column.name in rule.never_output:
                    raise PolicyViolation(f"{ref} may never be output (its rule never_output), in {output.sql()}")
                allowed = rule.aggregations.get(column.name)
                if allowed is not None:
                    agg = column.find_ancestor(exp.AggFunc)
                    if agg is None or _agg_name(agg) not in allowed:
                        used = _agg_name(agg) if agg is not None else "no aggregate"
                        raise PolicyViolation(f"{ref} may only be output inside {', '.join(sorted(allowed))} "
                                              f"(its rule aggregations); found {used} in {output.sql()}")
    return threshold


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
    if threshold.identity is None or threshold.k <= 0 or not isinstance(tree, exp.Select):
        return tree
    if not (tree.args.get("group") or any(aggregates_in(e) for e in tree.expressions)):
        return tree
    tree = tree.copy()
    cond = exp.GTE(this=exp.Count(this=exp.Distinct(expressions=[threshold.identity.copy()])),
                   expression=exp.Literal.number(threshold.k))
    having = tree.args.get("having")
    tree.set("having", exp.Having(this=exp.and_(having.this, cond) if having else cond))
    return tree
