"""Column control, operator by operator (after SCQL's buildCCL): what a party may learn of each value.

Every value gets a `Vis` for one party (the viewer) — the constraint under which it may see the
value, and the parties whose data it is computed from — inferred bottom-up through the query's
operators (scans, joins, filters, aggregates, windows, set operations, subqueries, CTEs) from the
grants. Each expression class has one rule in `planner/ccl_rules.py` (deny by default: a class
without a rule is ENCRYPTED_ONLY, and a refusal names it). Per operator, as SCQL's translator does:

- scan: each column its grant (the owner always PLAINTEXT); a constant: PLAINTEXT;
- join: a key equality needs PLAINTEXT_AFTER_JOIN (or _COMPARE, or PLAINTEXT) on both keys; after an
  inner join a PLAINTEXT_AFTER_JOIN key is PLAINTEXT to the viewer when the other key is the viewer's
  own data, PLAINTEXT to it (for an outer join, only the preserved side's viewer learns the other
  key); PLAINTEXT_AS_JOIN_PAYLOAD columns of a party the viewer so inner-joined are PLAINTEXT;
- filter (WHERE, ON, HAVING, QUALIFY, a semi-join): every column and the rows themselves are
  restricted by the condition's visibility (a comparison of PLAINTEXT_AFTER_COMPARE values is PLAINTEXT);
- aggregate: PLAINTEXT_AFTER_GROUP_BY keys are PLAINTEXT once grouped; SUM, AVG, MIN, MAX of
  PLAINTEXT_AFTER_AGGREGATE values are PLAINTEXT; COUNT follows the rows (its filter and group keys)
  and its argument, PLAINTEXT_AFTER_AGGREGATE or PLAINTEXT_AFTER_COMPARE, or a PLAINTEXT_AFTER_JOIN key
  NULL exactly where its row found no match (`matched_keys`: it counts the matched rows; COUNT(DISTINCT
  key) would count distinct key values, which no join shows, so it is not); every output is
  restricted by the group keys' visibility (the groups are the keys' histogram), except by a
  `counted` key (a declared unique key an outer join matched with the viewer's own keys);
- window: per row; PARTITION BY keys as comparisons, ORDER BY keys need REVEAL_RANK;
- set operations: per column, the stricter branch; DISTINCT and set operations other than UNION
  ALL compare whole rows, so their row count is restricted by every column; SELECT DISTINCT is a
  GROUP BY of its outputs (as SCQL plans it): PLAINTEXT_AFTER_GROUP_BY outputs are plain after it;
- sort: ORDER BY keys need PLAINTEXT or REVEAL_RANK (checked at every level);
- a value that fails the query on some rows only, before any group threshold (a function defined on part of
  its domain: a divisor, LN, CHR, ...; a narrowing CAST; an integer overflow no magnitude class rules out; a
  date moved by an INTERVAL; the SPU's guard of an approximate rounding or comparison:
  `ccl_rules.failing_arguments`): its arguments need PLAINTEXT_AFTER_COMPARE per row (PLAINTEXT_AFTER_AGGREGATE
  too where no threshold or DP protects the results); under DP no guard may apply to another party's aggregate.

`check_reveal` then requires every output column, and the number of rows, to be PLAINTEXT to the
issuer. A refusal names the column, the party, its constraint, the clause that restricted it and
the clause that reveals it. docs/federation.md lists where this stays stricter than SCQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sqlglot import exp

from sqlsecure.errors import PolicyViolation
from sqlsecure.planner.catalog import Catalog
from sqlsecure.planner.pushdown_typing import annotated
from sqlsecure.planner.ccl_rules import (Rule, failing_arguments, function_name, guarded_arguments, magnitude, rule_of,
                                        type_class)
from sqlsecure.planner.dialects.postgres import checked_value
from sqlsecure.planner.logical import aggregates_in
from sqlsecure.planner.row_counts import class_of_rows, counted_rows, counts_rows, derived_class, from_item
from sqlsecure.policy.grants import ColumnRef, Constraint, Grants

C = Constraint


@dataclass(frozen=True)
class Vis:
    constraint: Constraint
    source: ColumnRef | None = None  # the column that limits it, for messages
    unknown: str = ""  # the function without a column-control rule that closed it, for messages
    parties: frozenset[str] = frozenset()  # whose data the value is computed from (SCQL's source parties)
    clause: str = ""  # the filter, join or GROUP BY that restricted it, for messages
    counted: bool = False  # a unique key an outer join matched with the viewer's own keys: its groups' sizes
    # are the viewer's own rows per key (see `CCLInference._join`)

    @property
    def plain(self) -> bool:
        return self.constraint is C.PLAINTEXT


PLAIN = Vis(C.PLAINTEXT)


def combine(parts: list[Vis]) -> Vis:
    """The visibility of an expression of `parts`: a shared restriction carries over, mixed ones close."""
    parties = frozenset().union(*(v.parties for v in parts))
    restricted = [v for v in parts if not v.plain]
    if not restricted:
        return Vis(C.PLAINTEXT, parties=parties)
    closed = next((v for v in restricted if v.unknown), restricted[0])
    if len({v.constraint for v in restricted}) == 1:
        return replace(closed, parties=parties)
    return replace(closed, constraint=C.ENCRYPTED_ONLY, parties=parties)


def restrict(vis: Vis, by: Vis, clause: str) -> Vis:
    """`vis` after an operator whose outcome has visibility `by` (a filter's condition, the group keys)."""
    if by.plain:
        return vis
    out = combine([by, vis])  # named after the clause's column when that is what closes it
    return out if out.clause else replace(out, clause=clause)


def unknown(e: exp.Expression) -> Vis:
    """Deny by default: a function or operator without a rule is ENCRYPTED_ONLY, and says so."""
    line, col = e.meta.get("line"), e.meta.get("col")
    where = f" at line {line}, column {col}" if line is not None else ""
    return Vis(C.ENCRYPTED_ONLY, None, f"{function_name(e)}{where} ({e.sql()[:80]})")


def promote(vis: Vis, *allowed: Constraint) -> Vis:
    """PLAINTEXT if `vis` is PLAINTEXT or one of `allowed`; otherwise unchanged."""
    return Vis(C.PLAINTEXT, parties=vis.parties) if vis.plain or vis.constraint in allowed else vis


def close(vis: Vis) -> Vis:
    """ENCRYPTED_ONLY unless PLAINTEXT: for uses no later operator may promote."""
    return vis if vis.plain else replace(vis, constraint=C.ENCRYPTED_ONLY)


def conjuncts(cond: exp.Expression | None) -> list[exp.Expression]:
    """The AND-ed parts of a condition."""
    if cond is None:
        return []
    if isinstance(cond, exp.Paren):
        return conjuncts(cond.this)
    if isinstance(cond, exp.And):
        return conjuncts(cond.left) + conjuncts(cond.right)
    return [cond]


def column_equality(cond: exp.Expression) -> tuple[exp.Column, exp.Column] | None:
    """`a.x = b.y` of two tables' columns: a join key pair."""
    if (isinstance(cond, exp.EQ) and isinstance(cond.left, exp.Column) and isinstance(cond.right, exp.Column)
            and cond.left.table != cond.right.table):
        return cond.left, cond.right
    return None


def matched_keys(joins: list[exp.Join], where: exp.Expression | None) -> frozenset[tuple[str, str]]:
    """The join keys (`alias`, `column`) that are NULL on a row exactly where it found no match: both keys
    of an inner join's (or WHERE's) equality, the NULL-supplying side's key of an outer join's (a RIGHT or
    FULL join after it NULL-extends the rows before it, so those drop out). COUNT of such a key counts the
    matched rows, which the join shows to whoever may see its result (SCQL: COUNT follows the group keys)."""
    matched: set[tuple[str, str]] = set()
    for join in joins:
        if join.side in ("RIGHT", "FULL"):
            matched.clear()
        if join.kind in ("SEMI", "ANTI", "CROSS") or join.side == "FULL":
            continue
        alias = join.this.alias_or_name
        for cond in conjuncts(join.args.get("on")):
            for column in column_equality(cond) or ():
                joined = column.table == alias
                if join.side == "" or (join.side == "LEFT") == joined:
                    matched.add((column.table, column.name))
    for cond in conjuncts(where):
        matched.update((c.table, c.name) for c in column_equality(cond) or ())
    return frozenset(matched)


@dataclass
class Scope:
    """Visibility of each `alias.column` available in one SELECT (and, for a correlated subquery,
    in the query around it), and of the rows themselves (which rows exist, after its filters)."""

    columns: dict[tuple[str, str], Vis]
    parent: "Scope | None" = None
    rows: Vis = PLAIN
    matched: frozenset[tuple[str, str]] = frozenset()  # join keys NULL exactly where their row found no match

    def column(self, column: exp.Column) -> Vis:
        key = (column.table, column.name)
        if key in self.columns:
            return self.columns[key]
        matches = [v for (t, n), v in self.columns.items() if n == column.name and not column.table]
        if matches:
            return matches[0]
        return self.parent.column(column) if self.parent is not None else Vis(C.ENCRYPTED_ONLY)

    def restrict(self, by: Vis, clause: str) -> None:
        """A filter: every column, and the rows, take the condition's visibility."""
        self.columns = {k: restrict(v, by, clause) for k, v in self.columns.items()}
        self.rows = restrict(self.rows, by, clause)


@dataclass(frozen=True)
class Relation:
    """What a query yields: (name, visibility) per output column, and the visibility of its rows."""

    columns: list[tuple[str, Vis]] = field(default_factory=list)
    rows: Vis = PLAIN


class CCLInference:
    """Infers and checks what `viewer` would learn from a qualified query."""

    def __init__(self, grants: Grants, catalog: Catalog, viewer: str, protected: bool = True, noised: bool = False):
        self.grants = grants
        self.catalog = catalog
        self.viewer = viewer
        self.protected = protected  # a group threshold or DP hides more of the results than the grants do
        self.noised = noised  # DP noises the results: nothing computed before the noise may fail on a value
        self.pushed_down = False  # the query reads one party's tables: its DuckDB runs it whole, no SPU guard
        self.checking = True  # False once asked for visibility only (EXPLAIN): nested ORDER BYs are not enforced
        self.sizes: dict[str, dict[str, int]] = {}  # party -> its published sizes, for counts' classes

    # -- operators ------------------------------------------------------------------------
    def outputs(self, query: exp.Expression, ctes: dict[str, exp.Expression], check: bool,
                parent: Scope | None = None) -> list[tuple[str, Vis]]:
        """(name, visibility) of each output column of a query."""
        return self.relation(query, ctes, check, parent).columns

    def relation(self, query: exp.Expression, ctes: dict[str, exp.Expression], check: bool,
                 parent: Scope | None = None) -> Relation:
        """The visibility of a query's outputs and rows; with `check`, enforce its sort keys (and those
        of the queries nested in it)."""
        if not check:
            self.checking = False
        if isinstance(query, exp.Subquery):
            return self.relation(query.this, ctes, check, parent)
        ctes = dict(ctes)
        with_ = query.args.get("with_")
        for cte in with_.expressions if with_ else []:
            ctes[cte.alias_or_name] = cte.this
        if isinstance(query, exp.SetOperation):
            return self._set_operation(query, ctes, check, parent)
        if not isinstance(query, exp.Select):
            raise PolicyViolation(f"cannot infer column control for {query.key}: only SELECT and set "
                                  "operations are queries; rewrite it as one")
        return self._select(query, ctes, check, parent)

    def _set_operation(self, query: exp.SetOperation, ctes, check: bool, parent) -> Relation:
        """UNION ALL: per column the stricter branch. UNION, INTERSECT, EXCEPT also compare whole rows."""
        left = self.relation(query.left, ctes, check, parent)
        right = self.relation(query.right, ctes, check, parent)
        columns = [(name, combine([a, b])) for (name, a), (_, b) in zip(left.columns, right.columns)]
        rows = combine([left.rows, right.rows])
        if not (isinstance(query, exp.Union) and not query.args.get("distinct")):
            equal = combine([promote(v, C.PLAINTEXT_AFTER_JOIN, C.PLAINTEXT_AFTER_COMPARE) for _, v in columns])
            rows = restrict(rows, equal, f"{query.key.upper()} (rows compared)")
        return Relation(columns, rows)

    def _select(self, query: exp.Select, ctes, check: bool, parent) -> Relation:
        scope = self._scope(query, ctes, parent)
        group = query.args.get("group")
        groups = group.expressions if group else []
        keys = {g.sql() for g in groups}
        grouped = bool(keys) or any(aggregates_in(e) for e in query.expressions)
        outs = [(e.alias_or_name, self.value(e.unalias(), scope, ctes, keys, grouped)) for e in query.expressions]
        rows = scope.rows
        if grouped:  # one row per group: the groups are the keys' histogram
            clause = f"GROUP BY {', '.join(g.sql() for g in groups)}"
            rows = restrict(PLAIN, combine([self._group_key(g, scope, ctes) for g in groups]), clause)
            outs = [(n, restrict(v, rows, clause)) for n, v in outs]
        else:
            outs = [(n, restrict(v, rows, rows.clause)) for n, v in outs]
        for clause in ("having", "qualify"):
            node = query.args.get(clause)
            if node is not None:
                cond = self.value(node.this, scope, ctes, keys, clause == "having" or grouped)
                text = f"{clause.upper()} {node.this.sql()}"
                outs = [(n, restrict(v, cond, text)) for n, v in outs]
                rows = restrict(rows, cond, text)
        if query.args.get("distinct"):
            equal = combine([promote(v, C.PLAINTEXT_AFTER_COMPARE, C.PLAINTEXT_AFTER_GROUP_BY) for _, v in outs])
            rows = restrict(rows, equal, "SELECT DISTINCT (rows compared)")
            if self._distinct_is_grouping(query, grouped):
                outs = [(n, restrict(promote(v, C.PLAINTEXT_AFTER_GROUP_BY), rows, "SELECT DISTINCT")
                         if v.constraint is C.PLAINTEXT_AFTER_GROUP_BY else v) for n, v in outs]
        if check:
            self._check_order(query, dict(outs), scope, ctes, keys, grouped)
        return Relation(outs, rows)

    @staticmethod
    def _distinct_is_grouping(query: exp.Select, grouped: bool) -> bool:
        """SELECT DISTINCT of plain outputs is a GROUP BY of all of them (SCQL's translator plans it as one):
        its PLAINTEXT_AFTER_GROUP_BY outputs are keys, plain once grouped. Not DISTINCT ON, nor a
        DISTINCT of a grouped query's or a window's outputs (those are not the rows' own values)."""
        distinct = query.args["distinct"]
        return not grouped and distinct.args.get("on") is None and \
            not any(e.find(exp.Window) for e in query.expressions)

    def _group_key(self, key: exp.Expression, scope: Scope, ctes) -> Vis:
        """What the groups of `key` (their number and sizes) show: PLAINTEXT_AFTER_GROUP_BY keys, and
        `counted` ones, whose group sizes are the viewer's own rows per key, are PLAINTEXT."""
        vis = self.value(key, scope, ctes, frozenset(), False)
        return promote(vis, C.PLAINTEXT_AFTER_GROUP_BY, *((vis.constraint,) if vis.counted else ()))

    def _check_order(self, query: exp.Select, names: dict[str, Vis], scope, ctes, keys, grouped) -> None:
        """ORDER BY ranks the rows: each key needs PLAINTEXT or REVEAL_RANK."""
        order = query.args.get("order")
        for o in order.expressions if order else []:
            key = o.this
            if isinstance(key, exp.Column) and not key.table and key.name in names:
                vis = names[key.name]
            else:
                vis = self.value(key, scope, ctes, keys, grouped)
            self.require(promote(vis, C.REVEAL_RANK), f"ORDER BY {key.sql()}")

    # -- scans and joins --------------------------------------------------------------------
    def _scope(self, select: exp.Select, ctes, parent: Scope | None) -> Scope:
        """FROM and its joins, then WHERE: the visibility of each column the SELECT may use."""
        scope = Scope({}, parent)
        from_ = select.args.get("from_")
        joins = select.args.get("joins") or []
        items = ([from_.this] if from_ else []) + [j.this for j in joins]
        scope.rows = combine([self._scan(item, select, ctes, scope) for item in items])
        conditions, pairs = [], []
        seen = {items[0].alias_or_name} if items else set()
        for join in joins:
            alias = join.this.alias_or_name
            for cond in conjuncts(join.args.get("on")):
                conditions.append((cond, f"JOIN ... ON {cond.sql()}"))
                pair = column_equality(cond)
                if pair and join.kind not in ("SEMI", "ANTI"):
                    left, right = pair if pair[1].table == alias else pair[::-1]
                    if left.table in seen and right.table == alias:
                        pairs.append((left, right, join.side))
            seen.add(alias)
        where = select.args.get("where")
        for cond in conjuncts(where.this if where else None):
            conditions.append((cond, f"WHERE {where.this.sql()}"))
            pair = column_equality(cond)
            if pair and all(c.table in seen for c in pair):
                pairs.append((*pair, ""))
        visibility = [(self.condition(cond, scope, ctes), text) for cond, text in conditions]
        scope.matched = matched_keys(joins, where.this if where else None)
        # a key's groups can be counted only over its own table and one partner (no other join repeats it)
        self._join(scope, pairs, {i.alias_or_name for i in items if isinstance(i, exp.Table) and i.db}
                   if len(items) == 2 else set())
        for vis, text in visibility:
            scope.restrict(vis, text)
        scope.columns = {k: restrict(v, scope.rows, scope.rows.clause) for k, v in scope.columns.items()}
        return scope

    def _scan(self, item: exp.Expression, select: exp.Select, ctes, scope: Scope) -> Vis:
        """Add one FROM item's columns to `scope`; the visibility of its rows."""
        alias = item.alias_or_name
        if isinstance(item, exp.Table) and item.db:
            for column, _ in self.catalog.columns(item.db, item.name):
                ref = ColumnRef(item.db, item.name, column)
                scope.columns[(alias, column)] = Vis(self.grants.constraint(ref, self.viewer), ref,
                                                     parties=frozenset({item.db}))
            return PLAIN
        if isinstance(item, exp.Table) and item.name in ctes:
            relation = self.relation(ctes[item.name], ctes, check=self.checking)
        elif isinstance(item, (exp.Subquery, exp.Query)):
            relation = self.relation(item, ctes, check=self.checking)
        else:  # unnest, table functions, ...: nothing known, nothing revealed
            for column in select.find_all(exp.Column):
                if column.table == alias:
                    scope.columns[(alias, column.name)] = Vis(C.ENCRYPTED_ONLY)
            return PLAIN
        for name, vis in relation.columns:
            scope.columns[(alias, name)] = vis
        return relation.rows

    def _join(self, scope: Scope, pairs: list[tuple[exp.Column, exp.Column, str]], tables: set[str]) -> None:
        """SCQL's join rule for the viewer: a PLAINTEXT_AFTER_JOIN key is PLAINTEXT to the viewer when the
        other key is the viewer's own data, PLAINTEXT to it (its values are then ones the viewer has; a key
        computed with others' restricted values would not be) — inner join; an outer join only for its
        preserved side — and PLAINTEXT_AS_JOIN_PAYLOAD columns of a party so inner-joined are PLAINTEXT.
        `tables`: the aliases of base tables whose keys may be `counted` (`_counted`)."""
        partners: set[str] = set()
        keys = set()
        for left, right, side in pairs:
            lv, rv = scope.column(left), scope.column(right)
            knows_left, knows_right = (self.viewer in v.parties and v.plain for v in (lv, rv))
            joined = ((left, promote(lv, C.PLAINTEXT_AFTER_JOIN) if knows_right and side in ("", "RIGHT") else lv),
                      (right, promote(rv, C.PLAINTEXT_AFTER_JOIN) if knows_left and side in ("", "LEFT") else rv))
            if side == "":
                partners |= (rv.parties if knows_left else set()) | (lv.parties if knows_right else set())
            for (column, vis), before, knows_other in zip(joined, (lv, rv), (knows_right, knows_left)):
                key = (column.table, column.name)
                if key in scope.columns:
                    counted = column.table in tables and self._counted(before, vis, knows_other)
                    scope.columns[key] = replace(vis, parties=lv.parties | rv.parties, counted=counted)
                    keys.add(key)
        for key, vis in scope.columns.items():
            if key not in keys and vis.constraint is C.PLAINTEXT_AS_JOIN_PAYLOAD and vis.parties & partners:
                scope.columns[key] = promote(vis, C.PLAINTEXT_AS_JOIN_PAYLOAD)

    def _counted(self, before: Vis, after: Vis, knows_other: bool) -> bool:
        """Whether an outer join leaves a PLAINTEXT_AFTER_JOIN key whose groups the viewer may count: it
        joined the viewer's own PLAINTEXT key, and its table declares it unique, so each group is one
        row of that table with the viewer's own matching rows (unmatched: one row each, and how many
        there are follows from the table's public size). The key's values stay unseen (SCQL's outer
        join), but unlike a repeated key (PLAINTEXT_AFTER_GROUP_BY only) its histogram tells nothing."""
        source = before.source
        return (knows_other and not after.plain and before.constraint is C.PLAINTEXT_AFTER_JOIN
                and source is not None and before.parties == {source.party}
                and (source.column,) in self.catalog.unique_keys(source.party, source.table))

    def condition(self, cond: exp.Expression, scope: Scope, ctes) -> Vis:
        """A row filter's visibility: an equality of two sources' columns is a join, for which
        PLAINTEXT_AFTER_JOIN suffices; anything else is a value (comparisons by their rule)."""
        if isinstance(cond, (exp.And, exp.Or)):
            return combine([self.condition(cond.left, scope, ctes), self.condition(cond.right, scope, ctes)])
        if isinstance(cond, exp.Paren):
            return self.condition(cond.this, scope, ctes)
        pair = column_equality(cond)
        if pair:  # a join key needs PLAINTEXT_AFTER_JOIN: nothing aggregated later may make up for it (SCQL)
            return combine([close(promote(scope.column(s), C.PLAINTEXT_AFTER_JOIN, C.PLAINTEXT_AFTER_COMPARE))
                            for s in pair])
        return self.value(cond, scope, ctes, frozenset(), False)

    # -- values ---------------------------------------------------------------------------
    def value(self, e: exp.Expression, scope: Scope, ctes, keys, grouped: bool) -> Vis:
        """The visibility of `e`, by the rule `planner/ccl_rules.py` gives its class (none: refused)."""
        if grouped and e.sql() in keys:
            return promote(self.value(e, scope, ctes, keys, False), C.PLAINTEXT_AFTER_GROUP_BY)
        if isinstance(e, exp.Column):
            return scope.column(e)
        if (checked := checked_value(e)) is not None:  # PostgreSQL's guarded divisor or result: raises, else itself
            return self.value(checked, scope, ctes, keys, grouped)
        if isinstance(e, exp.In) and e.args.get("query") is not None and isinstance(e.this, exp.Column):
            # membership in another query's values is a (semi-)join on that column
            sub = self.relation(e.args["query"], ctes, check=self.checking, parent=scope)
            return combine([promote(v, C.PLAINTEXT_AFTER_JOIN, C.PLAINTEXT_AFTER_COMPARE)
                            for v in [scope.column(e.this), *(v for _, v in sub.columns)]] + [sub.rows])
        rule = rule_of(e)
        if rule is Rule.LEAF:
            return PLAIN
        if rule is Rule.WINDOW:
            return self._window(e, scope, ctes, keys, grouped)
        if rule in (Rule.AGGREGATE, Rule.COUNT, Rule.VALUE_AGGREGATE, Rule.COLLECT):
            return self._aggregate(e, rule, scope, ctes, keys)
        if rule is Rule.FILTERED_AGGREGATE:  # the filter is a WHERE of the aggregate's own
            inner = rule_of(e.this)
            if inner not in (Rule.AGGREGATE, Rule.COUNT, Rule.VALUE_AGGREGATE, Rule.COLLECT):
                return unknown(e.this)
            # PLAINTEXT only: the group threshold counts the group's rows, not the ones FILTER keeps
            cond = restrict(PLAIN, close(self.condition(e.expression.this, scope, ctes)),
                            f"FILTER ({e.expression.sql()})")
            return self._aggregate(e.this, inner, scope, ctes, keys, cond)
        if rule is Rule.SUBQUERY:
            if isinstance(e, (exp.Any, exp.All)):
                return self.value(e.this, scope, ctes, keys, grouped)
            sub = self.relation(e, ctes, check=self.checking, parent=scope)
            return combine([v for _, v in sub.columns] + [sub.rows])
        if rule is Rule.EXISTS:  # which rows the subquery has
            return self.relation(e.this, ctes, check=self.checking, parent=scope).rows
        if rule not in (Rule.SCALAR, Rule.COMPARE):  # ranking and value window functions need OVER
            return unknown(e)
        self._check_failures(e, scope, ctes, keys, grouped)
        parts = [self.value(a, scope, ctes, keys, grouped) for a in e.iter_expressions()]
        if rule is Rule.COMPARE:
            return combine([promote(p, C.PLAINTEXT_AFTER_COMPARE) for p in parts])
        return combine(parts)

    def _check_failures(self, e: exp.Expression, scope: Scope, ctes, keys, grouped: bool) -> None:
        """A value that fails the query on some rows only (a divisor, LN's argument, a narrowing CAST, an
        overflowing sum, the SPU's guard of an approximate value: `ccl_rules.failing_arguments`) does so before
        any group threshold drops the row's group or DP noises it: whether a row fails is a comparison of its
        arguments, so they must be ones the viewer may compare (unprotected, PLAINTEXT_AFTER_AGGREGATE ones
        too: COUNT(CASE WHEN y = 0 THEN 1 END) tells as much)."""
        if not self.checking:  # not when asked for visibility only
            return
        arguments, why = failing_arguments(e, lambda column: self._magnitude_class(column), not self.pushed_down)
        allowed = (C.PLAINTEXT_AFTER_COMPARE,) + (() if self.protected else (C.PLAINTEXT_AFTER_AGGREGATE,))
        for argument in arguments:
            self.require(promote(self.value(argument, scope, ctes, keys, grouped), *allowed),
                         f"whether a row fails {function_name(e)} in {e.sql()[:80]} ({why})")
        if self.noised and not self.pushed_down:
            self._check_noised_guard(e, scope, ctes, keys, grouped)

    def _check_noised_guard(self, e: exp.Expression, scope: Scope, ctes, keys, grouped: bool) -> None:
        """Under DP an aggregate of others' data is revealed only noised, but the SPU's guard of its rounding or
        comparison (`ccl_rules.guarded_arguments`) fails the query on the exact value, before the noise, where
        it lies within its error of a boundary; no noise covers a failure, so such a guard is refused."""
        arguments, _ = guarded_arguments(e)
        for argument in arguments:
            vis = self.value(argument, scope, ctes, keys, grouped)
            if any(isinstance(node, exp.AggFunc) for node in argument.walk()) and vis.parties - {self.viewer}:
                raise PolicyViolation(
                    f"{self.viewer} may not compute {function_name(e)} in {e.sql()[:80]} under differential privacy: "
                    f"the SPU refuses the query where the exact {argument.sql()[:60]} lies within its error of a "
                    "rounding boundary or of what it is compared with, before any noise, and noise cannot hide a "
                    "failure; round or compare exact (integer or DECIMAL) values, or round the noised result yourself")

    def _magnitude_class(self, e: exp.Expression) -> int | None:
        """The magnitude class of a value (`ccl_rules.magnitude`): a count's from the published sizes of the rows
        it counts; a column read straight from a base table of its own SELECT its published class, else its
        integer type's; a CTE's or subquery's column the class of the expressions defining it."""
        if counts_rows(e):
            return class_of_rows(counted_rows(e, self._sizes))
        table = from_item(e)
        if table is None or not (isinstance(table, exp.Table) and table.db):
            return derived_class(e, lambda defining: magnitude(defining, self._magnitude_class))
        published = self.catalog.magnitudes(table.db, table.name, (e.name,)) if self.catalog.magnitudes else {}
        return published.get(e.name, type_class(self.catalog.column_type(table.db, table.name, e.name)))

    def _sizes(self, party: str) -> dict[str, int]:
        """A party's published sizes (table -> rows rounded up to a power of two), asked once."""
        if party not in self.sizes:
            self.sizes[party] = self.catalog.sizes(party) if self.catalog.sizes is not None else {}
        return self.sizes[party]

    def _aggregate(self, func: exp.Expression, rule: Rule, scope: Scope, ctes, keys, cond: Vis = PLAIN) -> Vis:
        """An aggregate over the rows that passed the filters (and its own FILTER `cond`); group keys are
        PLAINTEXT inside it when PLAINTEXT_AFTER_GROUP_BY (SCQL's columns after GROUP BY)."""
        arguments = self._arguments(func, scope, ctes, keys, bool(keys))
        if rule is Rule.COUNT and isinstance(func.this, exp.Column) and \
                (func.this.table, func.this.name) in scope.matched:  # counts the matched rows: what the join shows
            arguments = [promote(v, C.PLAINTEXT_AFTER_JOIN) for v in arguments]
        vis = combine([cond, scope.rows] + arguments)
        if rule is Rule.COLLECT:
            return close(vis)
        if rule is Rule.AGGREGATE:
            return promote(vis, C.PLAINTEXT_AFTER_AGGREGATE)
        if rule is Rule.COUNT:
            return promote(vis, C.PLAINTEXT_AFTER_AGGREGATE, C.PLAINTEXT_AFTER_COMPARE)
        return vis

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
        spec = w.args.get("spec")
        for offset in (spec.args.get("start"), spec.args.get("end")) if spec is not None else ():
            if isinstance(offset, exp.Expression) and offset.find(exp.Column, exp.AggFunc, exp.Query) is not None:
                # a frame offset of a row's value fails the query where negative or NULL, and picks which rows count
                self.require(promote(self.value(offset, scope, ctes, keys, grouped), C.PLAINTEXT_AFTER_COMPARE),
                             f"a window frame's offset {offset.sql()[:60]} (a negative or NULL one fails the query)")
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
        if rule not in (Rule.RANKING, Rule.AGGREGATE, Rule.COUNT, Rule.VALUE_AGGREGATE, Rule.COLLECT,
                        Rule.WINDOW_VALUE):
            return unknown(func)
        vis = combine(parts + self._arguments(func, scope, ctes, keys, grouped))
        return close(vis) if rule is Rule.COLLECT else vis

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
        grant = self.grants.constraint(vis.source, self.viewer) if vis.source else vis.constraint
        state = f"its grant to {self.viewer} is {grant.value}"
        if vis.clause:
            state += f"; after {vis.clause} it is {vis.constraint.value} to {self.viewer}"
        elif grant is not vis.constraint:
            state += f"; with the other values of this expression it is {vis.constraint.value}"
        raise PolicyViolation(
            f"{self.viewer} may not learn {column} through {where}: {state}; ask "
            f"{vis.source.party if vis.source else 'its owner'} for a grant that allows this use, or change the query")

    def _typed(self, tree: exp.Expression) -> exp.Expression:
        """`tree` with sqlglot's types from the catalog's, for the values that fail on some rows
        (`failing_arguments`; untyped, a CAST counts as narrowing: deny by default). A query from
        `load_query` is typed already (`pushdown_typing.type_query`): it is used as it is, not typed again."""
        if tree.type is not None:
            return tree
        try:
            return annotated(tree.copy(), self.catalog)
        except Exception:  # sqlglot's inference is best effort: without types every CAST is checked
            return tree.copy()

    def check_reveal(self, tree: exp.Expression) -> None:
        """Refuse unless the viewer may learn every output, the number of rows and every sort key."""
        self.pushed_down = len({t.db for t in tree.find_all(exp.Table) if t.db}) <= 1
        relation = self.relation(self._typed(tree), {}, check=True)
        for name, vis in relation.columns:
            self.require(vis, f"the output column {name!r}")
        self.require(relation.rows, "the number of result rows")
