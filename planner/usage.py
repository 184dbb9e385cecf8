"""Policy check at plan time: what each party would learn of each column, against the grants.

The issuer learns the result: `check_issuer` runs column control inference (`planner/ccl.py`) over
the whole query. The other parties of a cross-party query learn through the PSI: each join-key
column needs PLAINTEXT_AFTER_JOIN, and each column filtered before the join
PLAINTEXT_AFTER_COMPARE, for every party of the query (`check_cross_party`). A derived table's or CTE's
column that passes a base column through unchanged (projected, filtered, DISTINCT, a GROUP BY key) is that
column (SCQL's translator carries CCL through projections so); its filters are checked as filters, its
DISTINCT / GROUP BY as grouping (`passed_through`). Any other derived column is checked conservatively
(PLAINTEXT for every column its derived table mentions).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from sqlsecure.errors import NotSupportedError, PolicyViolation
from sqlsecure.planner.build import conjuncts_of
from sqlsecure.planner.catalog import Catalog
from sqlsecure.planner.logical import InnerJoin, aggregates_in
from sqlsecure.planner.ccl import CCLInference
from sqlsecure.policy.grants import PERMITS, ColumnRef, Grants, Use


class Usage:
    """Collects (column, viewer, use) and checks each against the grants."""

    def __init__(self, tree: exp.Expression, issuer: str, grants: Grants, catalog: Catalog):
        self.tree = tree
        self.issuer = issuer
        self.grants = grants
        self.catalog = catalog
        self._passed: list[str] = []
        self.lineage: dict[str, tuple[str, str | None, frozenset[ColumnRef]]] = {}
        self.derived: dict[str, PassedThrough] = {}  # alias -> the base columns its derived table passes on
        if isinstance(tree, exp.Select) and tree.args.get("from_"):
            with_ = tree.args.get("with_")
            ctes = {c.alias_or_name: c.this for c in (with_.expressions if with_ else [])}
            items = [tree.args["from_"].this] + [j.this for j in tree.args.get("joins") or []]
            for item in items:
                alias = item.alias_or_name
                if isinstance(item, exp.Table) and item.db:
                    self.lineage[alias] = (item.db, item.name, frozenset())
                    continue
                body = ctes.get(item.name, item) if isinstance(item, exp.Table) else item
                body = body.this if isinstance(body, exp.Subquery) else body  # a CTE's body, not its name
                self.lineage[alias] = ("", None, frozenset(self._mentioned(body)))
                passed = passed_through(body, catalog)
                if passed is not None:
                    self.derived[alias] = passed

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
        passed = self.derived.get(column.table)
        if passed is not None and column.name in passed.columns:
            return frozenset({passed.columns[column.name]}), True
        return derived, False

    # -- checks --------------------------------------------------------------------------------
    def require(self, column: exp.Column, viewers, use: Use, context: str) -> None:
        refs, exact = self.refs(column)
        for ref in sorted(refs, key=str):  # a set: sorted, so the uses listed and the first refusal never vary
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

    def check_issuer(self, protected: bool = True, noised: bool = False) -> None:
        """What the issuer learns from the result: column control inference over the whole query (`protected`:
        a group threshold or DP protects its results; `noised`: DP does, `CCLInference`)."""
        CCLInference(self.grants, self.catalog, self.issuer, protected, noised).check_reveal(self.tree)

    def _membership_uses(self, membership, viewers) -> list[tuple[ColumnRef, str, Use, str]]:
        """(column, viewer, use, context) each party of a PSI semi-join would make of an IN / EXISTS
        subquery's columns: its key on both sides a join key, the subquery's filters comparisons."""
        query = membership.query
        tables = {t.alias_or_name: t.name for t in query.select.find_all(exp.Table)}
        party = query.party

        def refs(column: exp.Column) -> list[ColumnRef]:
            if column.table in tables and self.catalog.has_table(party, tables[column.table]):
                return [ColumnRef(party, tables[column.table], column.name)]
            return []

        key, exact = self.refs(membership.key)
        uses = [(ref, viewer, Use.JOIN_KEY if exact else Use.REVEAL, f"IN / EXISTS on {membership.key.sql()}")
                for ref in sorted(key, key=str) for viewer in viewers]
        member = query.select.expressions[0]
        uses += [(ref, viewer, Use.JOIN_KEY, "an IN / EXISTS subquery's key")
                 for column in member.find_all(exp.Column) for ref in refs(column) for viewer in viewers]
        where = query.select.args.get("where")
        uses += [(ref, viewer, Use.COMPARE, f"the filter of an IN / EXISTS subquery at {party}")
                 for column in (where.this.find_all(exp.Column) if where else []) for ref in refs(column)
                 for viewer in viewers]
        return uses

    def psi_membership_allowed(self, membership, viewers) -> bool:
        """Whether the grants let a PSI semi-join run `membership` (`_membership_uses`); where not, an
        oblivious semi-join on the SPU keeps its matches secret (planner/translate.py)."""
        return all(viewer == ref.party or self.grants.allows(ref, viewer, use)
                   for ref, viewer, use, _ in self._membership_uses(membership, viewers))

    def edge_parties(self, conjunct: exp.Expression) -> tuple[str, ...]:
        """The parties owning a join condition's columns: the two ends of its PSI edge, the only parties
        that see its keys (SCQL: PLAINTEXT_AFTER_JOIN makes a key plain to the join partner)."""
        return tuple(sorted({r.party for c in conjunct.find_all(exp.Column) for r in self.refs(c)[0]}))

    def check_cross_party(self, join: InnerJoin, holders, aggregate, project, sort, secure=()) -> None:
        viewers = tuple(dict.fromkeys((*holders, self.issuer)))
        for conjunct in join.conjuncts:
            if any(conjunct is c for c in secure):  # evaluated on shares: no peer learns it
                continue
            for col in conjunct.find_all(exp.Column):
                self.require(col, self.edge_parties(conjunct), Use.JOIN_KEY, f"join condition {conjunct.sql()}")
        for membership in join.memberships:
            for ref, viewer, use, context in self._membership_uses(membership, viewers):
                self._require(ref, viewer, use, context)
        try:
            self._check_derived(join, viewers)
        except PolicyViolation as why:
            raise _left_to_secret_operators(why) from None
        for query in join.inputs:
            where = query.select.args.get("where")
            if where is None:
                continue
            for conjunct in conjuncts_of(where.this):
                for col in conjunct.find_all(exp.Column):
                    # columns in a local query are qualified by the query aliases; resolve by alias
                    joins = _own_join(conjunct)
                    try:
                        self.require_local(col, viewers, joins, f"filter {where.this.sql()} at {query.party}" + (
                            f"; a join of {query.party}'s own tables, so PLAINTEXT_AFTER_JOIN suffices too"
                            if joins else ""))
                    except PolicyViolation as why:
                        if self.refs(col)[1]:  # a base column: no other path reveals less
                            raise
                        raise _left_to_secret_operators(why) from None

    def _check_derived(self, join: InnerJoin, viewers) -> None:
        """A derived table whose columns pass base columns through, as what it does before the join: its WHERE
        compares (PLAINTEXT_AFTER_COMPARE for each party of the query but its owner, as a pushed-down filter);
        its DISTINCT / GROUP BY sets how often each join key repeats, so its grouped columns other than the
        join keys are group keys (PLAINTEXT_AFTER_GROUP_BY, or PLAINTEXT_AFTER_COMPARE: rows compared)."""
        keys = {r for c in join.conjuncts for col in c.find_all(exp.Column) for r in self.refs(col)[0]}
        for alias, passed in self.derived.items():
            for ref in passed.compared:
                for viewer in viewers:
                    self._require(ref, viewer, Use.COMPARE, f"the filter of derived table {alias} at {ref.party}")
            for ref in passed.grouped:
                if ref in keys:  # how often a join key repeats is what the join shows of it
                    continue
                for viewer in viewers:
                    use = Use.COMPARE if self.grants.allows(ref, viewer, Use.COMPARE) else Use.GROUP_KEY
                    self._require(ref, viewer, use, f"the DISTINCT / GROUP BY of derived table {alias} at "
                                                    f"{ref.party} (how often each of its rows repeats)")

    def require_local(self, column: exp.Column, viewers, joins: bool, context: str) -> None:
        """A column of a party's pushed-down WHERE: compared (PLAINTEXT_AFTER_COMPARE), or, in an equality
        joining two of its own tables, a join key (SCQL's PLAINTEXT_AFTER_JOIN) as well."""
        if joins:
            refs, exact = self.refs(column)
            keyed = [v for v in viewers if exact and all(
                v == r.party or self.grants.constraint(r, v) in PERMITS[Use.JOIN_KEY] for r in refs)]
            self.require(column, keyed, Use.JOIN_KEY, context)  # passes; listed among the uses allowed
            viewers = [v for v in viewers if v not in keyed]
        self.require(column, viewers, Use.COMPARE, context)


def _left_to_secret_operators(why: PolicyViolation) -> NotSupportedError:
    """What a derived table does before a PSI join (its filter, its grouping, a computed column filtered) that
    the PSI's parties may not see: not this path's to run; the secret operators may evaluate it where no party
    sees it (the translation, with its own checks)."""
    return NotSupportedError(f"{why} (before a PSI join)")


def _own_join(conjunct: exp.Expression) -> bool:
    """An equality between columns of two different tables (of one party's pushed-down query)."""
    return isinstance(conjunct, exp.EQ) and all(isinstance(s, exp.Column) for s in (conjunct.left, conjunct.right)) \
        and conjunct.left.table != conjunct.right.table


@dataclass(frozen=True)
class PassedThrough:
    """What a derived table does to the base columns it passes on unchanged."""

    columns: dict[str, ColumnRef]  # output name -> the base column it is
    compared: tuple[ColumnRef, ...]  # the columns its WHERE compares
    grouped: tuple[ColumnRef, ...]  # the columns its DISTINCT / GROUP BY compares whole rows on


def passed_through(body: exp.Expression, catalog: Catalog) -> PassedThrough | None:
    """The base columns a derived table's body passes through unchanged: a SELECT of one party's table, no
    join, subquery, HAVING, QUALIFY, LIMIT or DISTINCT ON; an output that is a column of that table (a
    GROUP BY key where it groups) is that column. None: not such a body (its columns stay inexact)."""
    if not isinstance(body, exp.Select) or body.args.get("with_") or body.args.get("joins"):
        return None
    if any(body.args.get(k) for k in ("having", "qualify", "limit", "offset", "laterals", "pivots")):
        return None
    from_ = body.args.get("from_")
    table = from_.this if from_ else None
    if not (isinstance(table, exp.Table) and table.db and catalog.has_table(table.db, table.name)):
        return None
    if any(q is not body for q in body.find_all(exp.Query)) or body.find(exp.Subquery, exp.Exists) is not None:
        return None
    distinct = body.args.get("distinct")
    if distinct is not None and distinct.args.get("on") is not None:
        return None
    alias, known = table.alias_or_name, {c for c, _ in catalog.columns(table.db, table.name)}

    def ref(e: exp.Expression) -> ColumnRef | None:
        if isinstance(e, exp.Column) and e.table in ("", alias) and e.name in known:
            return ColumnRef(table.db, table.name, e.name)
        return None

    group = body.args.get("group")
    keys = [ref(g) for g in (group.expressions if group else [])]
    grouped = bool(group) or any(aggregates_in(e) for e in body.expressions)
    if grouped and not all(keys):  # grouped by an expression: its rows are not the base rows' values
        return None
    columns = {}
    for e in body.expressions:
        column = ref(e.unalias())
        if column is not None and (not grouped or column in keys):
            columns[e.alias_or_name] = column
    if not columns:
        return None
    where = body.args.get("where")
    compared = [r for c in (where.this.find_all(exp.Column) if where else []) if (r := ref(c)) is not None]
    if where is not None and any(ref(c) is None for c in where.this.find_all(exp.Column)):
        return None
    rows = list(keys) if grouped else [ref(e.unalias()) for e in body.expressions] if distinct else []
    if any(r is None for r in rows):  # DISTINCT of computed values: which rows are equal is not a column's
        return None
    return PassedThrough(columns, tuple(dict.fromkeys(compared)), tuple(dict.fromkeys(rows)))
