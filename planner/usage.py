"""Policy check at plan time: what each party would learn of each column, against the grants.

Every column a query touches is given a *use* for each party that would learn something from it
(the issuer through the result; PSI peers through the intersection), and each use must be
permitted by that party's grant on the column (`sqlsecure.policy.PERMITS`). This is the
foundation's conservative check: shapes it cannot analyse precisely (subqueries, CTEs, set
operations, window functions) require PLAINTEXT for every column they mention.
"""

from __future__ import annotations

from sqlglot import exp

from sqlsecure.errors import PolicyViolation
from sqlsecure.planner.catalog import Catalog
from sqlsecure.planner.logical import InnerJoin
from sqlsecure.policy import PERMITS, ColumnRef, Grants, Use


def _in_aggregate(column: exp.Column) -> bool:
    return column.find_ancestor(exp.AggFunc, exp.Select) is not None and isinstance(
        column.find_ancestor(exp.AggFunc, exp.Select), exp.AggFunc
    )


def _is_simple(tree: exp.Expression) -> bool:
    if not isinstance(tree, exp.Select) or tree.args.get("with_"):
        return False
    items = [tree.args["from_"].this] + [j.this for j in tree.args.get("joins") or []]
    if not all(isinstance(i, exp.Table) and i.db for i in items):
        return False
    return tree.find(exp.Subquery, exp.Window, exp.Exists) is None and not any(
        isinstance(i.args.get("query"), exp.Query) for i in tree.find_all(exp.In)
    )


class Usage:
    """Collects (column, viewer, use) and checks each against the grants."""

    def __init__(self, tree: exp.Expression, issuer: str, grants: Grants, catalog: Catalog):
        self.tree = tree
        self.issuer = issuer
        self.grants = grants
        self.catalog = catalog
        self._passed: list[str] = []
        self.lineage: dict[str, tuple[str, str | None, frozenset[ColumnRef]]] = {}
        if isinstance(tree, exp.Select) and tree.args.get("from_"):
            items = [tree.args["from_"].this] + [j.this for j in tree.args.get("joins") or []]
            for item in items:
                alias = item.alias_or_name
                if isinstance(item, exp.Table) and item.db:
                    self.lineage[alias] = (item.db, item.name, frozenset())
                else:
                    self.lineage[alias] = ("", None, frozenset(self._mentioned(item)))

    # -- column resolution -------------------------------------------------------------------
    def _mentioned(self, tree: exp.Expression) -> set[ColumnRef]:
        """Every base column a tree could mention, by name (conservative)."""
        names = {c.name for c in tree.find_all(exp.Column)}  # stars are expanded by qualify
        out = set()
        for table in tree.find_all(exp.Table):
            if table.db and self.catalog.has_table(table.db, table.name):
                for column, _ in self.catalog.columns(table.db, table.name):
                    if column in names:
                        out.add(ColumnRef(table.db, table.name, column))
        return out

    def refs(self, column: exp.Column) -> tuple[frozenset[ColumnRef], bool]:
        """Base columns behind a qualified column, and whether that lineage is exact."""
        party, table, derived = self.lineage.get(column.table, ("", None, frozenset()))
        if table is not None:
            return frozenset({ColumnRef(party, table, column.name)}), True
        return derived, False

    # -- checks --------------------------------------------------------------------------------
    def require(self, column: exp.Column, viewers, use: Use, context: str) -> None:
        refs, exact = self.refs(column)
        for ref in refs:
            for viewer in viewers:
                needed = use if exact else Use.REVEAL
                self._require(ref, viewer, needed, context)

    def _require(self, ref: ColumnRef, viewer: str, use: Use, context: str) -> None:
        if viewer == ref.party:
            return
        constraint = self.grants.constraint(ref, viewer)
        if constraint not in PERMITS[use]:
            needs = " or ".join(sorted(c.value for c in PERMITS[use]))
            raise PolicyViolation(
                f"{viewer} may not learn {ref} {use.value}: its grant is {constraint.value}, this needs "
                f"{needs} (in {context}); ask {ref.party} for a grant, or change the query"
            )
        line = f"{ref} -> {viewer}: {use.name} allowed by {constraint.value}"
        if line not in self._passed:
            self._passed.append(line)

    def passed(self) -> tuple[str, ...]:
        return tuple(self._passed)

    def _upper_uses(self, expressions, group_by, having, order, hidden_use: Use, outputs) -> None:
        grouped = bool(group_by) or any(e.find(exp.AggFunc) for e in expressions)
        issuer = (self.issuer,)
        for e in expressions:
            for col in e.find_all(exp.Column):
                if _in_aggregate(col):
                    self.require(col, issuer, Use.AGGREGATE, f"SELECT {e.sql()}")
                else:
                    self.require(col, issuer, Use.GROUP_KEY if grouped else Use.REVEAL, f"SELECT {e.sql()}")
        for g in group_by:
            for col in g.find_all(exp.Column):
                self.require(col, issuer, Use.GROUP_KEY, f"GROUP BY {g.sql()}")
        if having is not None:
            for col in having.find_all(exp.Column):
                use = Use.AGGREGATE if _in_aggregate(col) else Use.GROUP_KEY
                self.require(col, issuer, use, f"HAVING {having.sql()}")
        for o in order:
            key = o.this
            if isinstance(key, exp.Column) and not key.table and key.name in outputs:
                continue
            for col in key.find_all(exp.Column):
                use = Use.AGGREGATE if _in_aggregate(col) else hidden_use
                self.require(col, issuer, use, f"ORDER BY {key.sql()}")

    def check_single_party(self, localized: exp.Expression, party: str) -> None:
        tree = self.tree
        if not _is_simple(tree):
            for ref in sorted(self._mentioned(tree), key=str):
                self._require(ref, self.issuer, Use.REVEAL, "a query with subqueries, CTEs, set operations "
                              "or window functions (checked conservatively)")
            return
        conds = [j.args.get("on") for j in tree.args.get("joins") or []]
        where = tree.args.get("where")
        conds += [where.this] if where else []
        for cond in filter(None, conds):
            for col in cond.find_all(exp.Column):
                self.require(col, (self.issuer,), Use.COMPARE, f"WHERE/ON {cond.sql()}")
        group = tree.args.get("group")
        having = tree.args.get("having")
        order = tree.args.get("order")
        self._upper_uses(
            tree.expressions, group.expressions if group else [], having.this if having else None,
            order.expressions if order else [], Use.RANK, set(tree.named_selects),
        )

    def check_cross_party(self, join: InnerJoin, holders, aggregate, project, sort) -> None:
        viewers = tuple(dict.fromkeys((*holders, self.issuer)))
        for conjunct in join.conjuncts:
            for col in conjunct.find_all(exp.Column):
                self.require(col, viewers, Use.JOIN_KEY, f"join condition {conjunct.sql()}")
        for query in join.inputs:
            where = query.select.args.get("where")
            if where is None:
                continue
            for col in where.this.find_all(exp.Column):
                # columns in a local query are qualified by the query aliases; resolve by alias
                self.require(col, viewers, Use.COMPARE, f"filter {where.this.sql()} at {query.party}")
        self._upper_uses(
            project.expressions,
            aggregate.group_by if aggregate else [],
            aggregate.having if aggregate else None,
            sort.order if sort else [],
            Use.REVEAL,
            {e.alias_or_name for e in project.expressions},
        )
