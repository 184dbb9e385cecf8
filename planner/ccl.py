"""Column control inference (after SCQL's ccl_infer): what a party may learn of each value a query computes.

Every value gets a `Vis` for one party — the constraint under which that party may see it — inferred
bottom-up through the query's scopes (CTEs, subqueries, set operations) from the grants. Each
expression class has one rule in `planner/ccl_rules.py` (deny by default: a class without a rule
is ENCRYPTED_ONLY, and a refusal names it):

- a column: its grant (the owner always PLAINTEXT); a constant: PLAINTEXT;
- a comparison (=, <, BETWEEN, IN, LIKE, IS NULL, …) of PLAINTEXT / PLAINTEXT_AFTER_COMPARE values:
  PLAINTEXT (the comparison's result may be revealed);
- SUM, COUNT, AVG, MIN, MAX of PLAINTEXT / PLAINTEXT_AFTER_AGGREGATE values: PLAINTEXT; COUNT(*):
  PLAINTEXT; aggregates that return input values (FIRST, MEDIAN, ARG_MAX, …): the argument's
  constraint, unchanged; aggregates that collect many values (STRING_AGG, LIST): PLAINTEXT
  arguments only, ENCRYPTED_ONLY otherwise;
- a GROUP BY key that is PLAINTEXT_AFTER_GROUP_BY: PLAINTEXT once grouped;
- a window function: per row, nothing aggregated away; PARTITION BY keys as comparisons, ORDER BY
  keys need REVEAL_RANK, the function's arguments keep their constraint;
- a listed scalar function or operator (arithmetic, CASE, CAST, …): PLAINTEXT if all inputs are; if
  all restricted inputs share one constraint, that constraint carries over (so SUM(x * 2) works for
  an aggregate-only x); otherwise ENCRYPTED_ONLY;
- UNION / INTERSECT / EXCEPT: per column, the most restrictive of the branches.

`check_reveal` then requires, for the issuer: every output column PLAINTEXT; every GROUP BY key
PLAINTEXT or PLAINTEXT_AFTER_GROUP_BY (the groups reveal its distribution); every WHERE / ON /
HAVING / QUALIFY condition PLAINTEXT (the issuer learns which rows pass; a join's key equality also
passes with PLAINTEXT_AFTER_JOIN); every ORDER BY key PLAINTEXT or REVEAL_RANK. A refusal names the
column, the party, its constraint and the clause.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from sqlsecure.planner.logical import aggregates_in

from sqlsecure.errors import PolicyViolation
from sqlsecure.planner.catalog import Catalog
from sqlsecure.planner.ccl_rules import Rule, function_name, rule_of
from sqlsecure.policy.grants import ColumnRef, Constraint, Grants

C = Constraint


@dataclass(frozen=True)
class Vis:
    constraint: Constraint
    source: ColumnRef | None = None  # the column that limits it, for messages
    unknown: str = ""  # the function without a column-control rule that closed it, for messages

    @property
    def plain(self) -> bool:
        return self.constraint is C.PLAINTEXT


PLAIN = Vis(C.PLAINTEXT)


def combine(parts: list[Vis]) -> Vis:
    """The visibility of an expression of `parts`: a shared restriction carries over, mixed ones close."""
    restricted = [v for v in parts if not v.plain]
    if not restricted:
        return PLAIN
    closed = next((v for v in restricted if v.unknown), restricted[0])
    if len({v.constraint for v in restricted}) == 1:
        return closed
    return Vis(C.ENCRYPTED_ONLY, closed.source, closed.unknown)


def unknown(e: exp.Expression) -> Vis:
    """Deny by default: a function or operator without a rule is ENCRYPTED_ONLY, and says so."""
    line, col = e.meta.get("line"), e.meta.get("col")
    where = f" at line {line}, column {col}" if line is not None else ""
    return Vis(C.ENCRYPTED_ONLY, None, f"{function_name(e)}{where} ({e.sql()[:80]})")


def promote(vis: Vis, *allowed: Constraint) -> Vis:
    """PLAINTEXT if `vis` is PLAINTEXT or one of `allowed`; otherwise unchanged."""
    return PLAIN if vis.plain or vis.constraint in allowed else vis


class Scope:
    """Visibility of each `alias.column` available in one SELECT (and, for a correlated subquery,
    in the query around it)."""

    def __init__(self, columns: dict[tuple[str, str], Vis], parent: "Scope | None" = None):
        self.columns = columns
        self.parent = parent

    def column(self, column: exp.Column) -> Vis:
        key = (column.table, column.name)
        if key in self.columns:
            return self.columns[key]
        matches = [v for (t, n), v in self.columns.items() if n == column.name and not column.table]
        if matches:
            return matches[0]
        return self.parent.column(column) if self.parent is not None else Vis(C.ENCRYPTED_ONLY)


class CCLInference:
    """Infers and checks what `viewer` would learn from a qualified query."""

    def __init__(self, grants: Grants, catalog: Catalog, viewer: str):
        self.grants = grants
        self.catalog = catalog
        self.viewer = viewer
        self.used: list[str] = []
        self.checking = True  # False once asked for visibility only (EXPLAIN): nested clauses are not enforced

    # -- scopes ---------------------------------------------------------------------------
    def outputs(self, query: exp.Expression, ctes: dict[str, exp.Expression], check: bool,
                parent: Scope | None = None) -> list[tuple[str, Vis]]:
        """(name, visibility) of each output column of a query; with `check`, enforce its conditions
        (and those of the queries nested in it)."""
        if not check:
            self.checking = False
        if isinstance(query, exp.Subquery):
            return self.outputs(query.this, ctes, check, parent)
        ctes = dict(ctes)
        with_ = query.args.get("with_")
        for cte in with_.expressions if with_ else []:
            ctes[cte.alias_or_name] = cte.this
        if isinstance(query, exp.SetOperation):
            left = self.outputs(query.left, ctes, check, parent)
            right = self.outputs(query.right, ctes, check, parent)
            return [(name, combine([a, b])) for (name, a), (_, b) in zip(left, right)]
        if not isinstance(query, exp.Select):
            raise PolicyViolation(f"cannot infer column control for {query.key}")
        scope = self._scope(query, ctes)
        scope.parent = parent
        group = query.args.get("group")
        keys = {g.sql() for g in (group.expressions if group else [])}
        grouped = bool(keys) or any(aggregates_in(e) for e in query.expressions)
        if check:
            self._check_conditions(query, scope, ctes, keys)
            for g in group.expressions if group else []:  # the groups' sizes reveal the key's distribution
                vis = self.value(g, scope, ctes, frozenset(), False)
                self.require(promote(vis, C.PLAINTEXT_AFTER_GROUP_BY), f"GROUP BY {g.sql()}")
        outs = []
        for e in query.expressions:
            outs.append((e.alias_or_name, self.value(e.this if isinstance(e, exp.Alias) else e, scope, ctes,
                                                     keys, grouped)))
        if check:
            names = {n: v for n, v in outs}
            order = query.args.get("order")
            for o in order.expressions if order else []:
                key = o.this
                if isinstance(key, exp.Column) and not key.table and key.name in names:
                    vis = names[key.name]
                else:
                    vis = self.value(key, scope, ctes, keys, grouped)
                self.require(promote(vis, C.REVEAL_RANK), f"ORDER BY {key.sql()}")
        return outs

    def _scope(self, select: exp.Select, ctes) -> Scope:
        columns: dict[tuple[str, str], Vis] = {}
        items = ([select.args["from_"].this] if select.args.get("from_") else []) + [
            j.this for j in select.args.get("joins") or []]
        for item in items:
            alias = item.alias_or_name
            if isinstance(item, exp.Table) and item.db:
                for column, _ in self.catalog.columns(item.db, item.name):
                    ref = ColumnRef(item.db, item.name, column)
                    columns[(alias, column)] = Vis(self.grants.constraint(ref, self.viewer), ref)
            elif isinstance(item, exp.Table) and item.name in ctes:
                for name, vis in self.outputs(ctes[item.name], ctes, check=self.checking):
                    columns[(alias, name)] = vis
            elif isinstance(item, (exp.Subquery, exp.Query)):
                for name, vis in self.outputs(item, ctes, check=self.checking):
                    columns[(alias, name)] = vis
            else:  # unnest, table functions, ...: nothing known, nothing revealed
                for column in select.find_all(exp.Column):
                    if column.table == alias:
                        columns[(alias, column.name)] = Vis(C.ENCRYPTED_ONLY)
        return Scope(columns)

    def _check_conditions(self, select: exp.Select, scope: Scope, ctes, keys) -> None:
        for join in select.args.get("joins") or []:
            on = join.args.get("on")
            if on is not None:
                self.require(self.condition(on, scope, ctes), f"JOIN ... ON {on.sql()}")
        where = select.args.get("where")
        if where is not None:
            self.require(self.condition(where.this, scope, ctes), f"WHERE {where.this.sql()}")
        for clause in ("having", "qualify"):
            node = select.args.get(clause)
            if node is not None:
                grouped = clause == "having" or bool(keys)
                vis = self.value(node.this, scope, ctes, keys, grouped)
                self.require(vis, f"{clause.upper()} {node.this.sql()}")

    def condition(self, cond: exp.Expression, scope: Scope, ctes) -> Vis:
        """A row filter: each conjunct's result is learned through the rows that pass.

        An equality of two sources' columns is a join: PLAINTEXT_AFTER_JOIN suffices for it.
        """
        if isinstance(cond, (exp.And, exp.Or)):
            return combine([self.condition(cond.left, scope, ctes), self.condition(cond.right, scope, ctes)])
        if isinstance(cond, exp.Paren):
            return self.condition(cond.this, scope, ctes)
        if (isinstance(cond, exp.EQ) and all(isinstance(s, exp.Column) for s in (cond.left, cond.right))
                and cond.left.table != cond.right.table):
            return combine([promote(scope.column(s), C.PLAINTEXT_AFTER_JOIN, C.PLAINTEXT_AFTER_COMPARE)
                            for s in (cond.left, cond.right)])
        return self.value(cond, scope, ctes, frozenset(), False)

    # -- values ---------------------------------------------------------------------------
    def value(self, e: exp.Expression, scope: Scope, ctes, keys, grouped: bool) -> Vis:
        """The visibility of `e`, by the rule `planner/ccl_rules.py` gives its class (none: refused)."""
        if grouped and e.sql() in keys:
            return promote(self.value(e, scope, ctes, keys, False), C.PLAINTEXT_AFTER_GROUP_BY)
        if isinstance(e, exp.Column):
            return scope.column(e)
        if isinstance(e, exp.In) and e.args.get("query") is not None and isinstance(e.this, exp.Column):
            # membership in another query's values is a (semi-)join on that column
            outs = self.outputs(e.args["query"], ctes, check=self.checking, parent=scope)
            return combine([promote(v, C.PLAINTEXT_AFTER_JOIN, C.PLAINTEXT_AFTER_COMPARE)
                            for v in [scope.column(e.this), *(v for _, v in outs)]])
        rule = rule_of(e)
        if rule is Rule.LEAF:
            return PLAIN
        if rule is Rule.WINDOW:
            return self._window(e, scope, ctes, keys, grouped)
        if rule in (Rule.AGGREGATE, Rule.VALUE_AGGREGATE, Rule.COLLECT):
            vis = combine(self._arguments(e, scope, ctes))
            if rule is Rule.COLLECT and not vis.plain:
                return Vis(C.ENCRYPTED_ONLY, vis.source, vis.unknown)
            return promote(vis, C.PLAINTEXT_AFTER_AGGREGATE) if rule is Rule.AGGREGATE else vis
        if rule is Rule.FILTERED_AGGREGATE:  # the filter is a WHERE of the aggregate's own
            return combine([self.value(e.this, scope, ctes, keys, False),
                            self.condition(e.expression.this, scope, ctes)])
        if rule is Rule.SUBQUERY:
            if isinstance(e, (exp.Any, exp.All)):
                return self.value(e.this, scope, ctes, keys, grouped)
            return combine([v for _, v in self.outputs(e, ctes, check=self.checking, parent=scope)])
        if rule is Rule.EXISTS:
            self.outputs(e.this, ctes, check=self.checking, parent=scope)
            return PLAIN
        if rule not in (Rule.SCALAR, Rule.COMPARE):  # ranking and value window functions need OVER
            return unknown(e)
        parts = [self.value(a, scope, ctes, keys, grouped) for a in e.iter_expressions()]
        if rule is Rule.COMPARE:
            return combine([promote(p, C.PLAINTEXT_AFTER_COMPARE) for p in parts])
        return combine(parts)

    def _arguments(self, func: exp.Expression, scope: Scope, ctes, keys=frozenset(), grouped=False) -> list[Vis]:
        """Visibility of a function's arguments: per row inside an aggregate, per group in a window of a
        grouped query."""
        return [self.value(a, scope, ctes, keys, grouped) for a in func.iter_expressions()
                if not isinstance(a, exp.Star)]

    def _window(self, w: exp.Window, scope: Scope, ctes, keys, grouped: bool) -> Vis:
        """A window's output is per row: nothing is aggregated away (SUM(x) OVER (ROWS CURRENT ROW) is
        x). PARTITION BY keys tell which rows are equal: comparisons. ORDER BY keys order the rows:
        ranks. The function's arguments keep their own constraint."""
        parts = [promote(self.value(p, scope, ctes, keys, grouped), C.PLAINTEXT_AFTER_COMPARE)
                 for p in w.args.get("partition_by") or []]
        order = w.args.get("order")
        parts += [promote(self.value(o.this, scope, ctes, keys, grouped), C.REVEAL_RANK)
                  for o in (order.expressions if order else [])]
        if w.args.get("alias") is not None:  # OVER w: its PARTITION BY / ORDER BY are not here to check
            return unknown(w)
        func = w.this
        while isinstance(func, (exp.IgnoreNulls, exp.RespectNulls)):
            func = func.this
        rule = rule_of(func)
        if rule is Rule.FILTERED_AGGREGATE:
            parts.append(self.condition(func.expression.this, scope, ctes))  # FILTER: a WHERE per row
            func = func.this
            rule = rule_of(func)
        if rule not in (Rule.RANKING, Rule.AGGREGATE, Rule.VALUE_AGGREGATE, Rule.COLLECT, Rule.WINDOW_VALUE):
            return unknown(func)
        vis = combine(parts + self._arguments(func, scope, ctes, keys, grouped))
        if rule is Rule.COLLECT and not vis.plain:
            return Vis(C.ENCRYPTED_ONLY, vis.source, vis.unknown)
        return vis

    # -- checks ---------------------------------------------------------------------------
    def require(self, vis: Vis, where: str) -> None:
        if vis.plain:
            return
        if vis.unknown:
            raise PolicyViolation(
                f"{self.viewer} may not learn the result of {vis.unknown} through {where}: it has no "
                "column-control rule, so it is refused (deny by default; docs/federation.md lists the "
                "functions, aggregates and window functions each constraint allows); rewrite the query "
                "with those")
        column = str(vis.source) if vis.source else "a value"
        raise PolicyViolation(
            f"{self.viewer} may not learn {column} through {where}: its grant to {self.viewer} is "
            f"{vis.constraint.value}; ask {vis.source.party if vis.source else 'its owner'} for a grant that "
            "allows this use, or change the query"
        )

    def check_reveal(self, tree: exp.Expression) -> None:
        """Refuse unless the viewer may learn every output, condition and sort key of the query."""
        for name, vis in self.outputs(tree, {}, check=True):
            self.require(vis, f"the output column {name!r}")
