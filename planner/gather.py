"""Gather placement: compute at the issuer, in plaintext, when the grants make every column the query
reads PLAINTEXT to the issuer (SCQL moves such columns to the issuer and computes there).

Each owner runs one pushed-down query per table it contributes (only the columns the query reads, the
single-table WHERE conjuncts of the query applied), the results cross to the issuer (RunLocal -> Reveal),
and the issuer runs the query itself over them in DuckDB (Finish in mode "tables"). It is the planner's
fallback for shapes the placement does not handle (`gather_plan`), so existing plans are unchanged.

The project's extra protections stay as the other paths apply them: the group threshold counts each
protected owner's distinct rows per group (per input of the outer SELECT, as `placement` does); a
query under differential privacy (or `[enclave] placement = "always"`), with a mask on a column that
would cross, or reading a table whose analysis rule limits how its columns are used (aggregations,
dimension columns, never_output) is not gathered: raw rows crossing to the issuer could not honour
those, so it keeps its original refusal.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp
from sqlglot.optimizer.pushdown_projections import pushdown_projections
from sqlglot.optimizer.scope import traverse_scope

from sqlsecure.errors import NotSupportedError
from sqlsecure.executors.spu.ranges import is_geodist
from sqlsecure.planner.analysis import Threshold, with_threshold
from sqlsecure.planner.build import _describe, conjuncts_of, parties_of
from sqlsecure.planner.catalog import Catalog
from sqlsecure.planner.logical import aggregates_in
from sqlsecure.planner.physical import Finish, PhysicalPlan, Reveal, RunLocal
from sqlsecure.planner.place_threshold import check_rows_kept, threshold_subqueries
from sqlsecure.policy.grants import ColumnRef, Constraint, RevealPolicy

ROW = "__row"  # a gathered table's provenance column: its owner's row number, for the group threshold
BRANCH = "__branch"  # a UNION ALL branch's number, for the group threshold
PRESENT = "__present"  # the one column of a gathered table none of whose columns the query reads
UNPUSHABLE = (exp.Subquery, exp.Select, exp.AggFunc, exp.Window, exp.Rand, exp.Anonymous, exp.Placeholder)


@dataclass(frozen=True)
class Gathered:
    """One table an owner sends the issuer: the columns the query reads, the rows its filters keep."""

    party: str
    table: str
    columns: tuple[str, ...]
    where: exp.Expression | None
    provenance: bool  # with the owner's row numbers (ROW), for the group threshold
    name: str  # the revealed part, and the issuer's view of it

    def pushdown_sql(self) -> str:
        items = [exp.column(c, quoted=True) for c in self.columns]
        if self.provenance:
            items.append(exp.alias_(exp.Window(this=exp.RowNumber()), ROW, quoted=True))
        if not items:
            items = [exp.alias_(exp.true(), PRESENT, quoted=True)]
        select = exp.select(*items).from_(exp.Table(this=exp.to_identifier(self.table, quoted=True)))
        if self.where is not None:
            select = select.where(self.where.copy())
        return select.sql(dialect="duckdb")

    def describe(self, size: int | None) -> str:
        columns = "the columns " + ", ".join(self.columns) if self.columns else "no column (only its row count)"
        rows = "all its rows" if self.where is None else f"its rows where {self.where.sql(dialect='duckdb')}"
        bound = f" (at most {size}, {self.party}'s published size)" if size is not None else ""
        return f"from {self.party}.{self.table} {columns}; {rows}{bound}"


def gather_plan(tree: exp.Expression, unsupported: NotSupportedError, *, catalog: Catalog,
                policy: RevealPolicy, issuer: str, threshold: Threshold, private: bool) -> PhysicalPlan:
    """The issuer computes the whole query over the columns its owners send it; raise `unsupported`
    (the placement's refusal) where the grants or the extra protections do not allow that.
    `private`: differential privacy is on for this query, or the federation computes only in its enclave."""
    owners = {t.db for t in tree.find_all(exp.Table) if t.db}
    if private or not owners - {issuer} or tree.find(exp.TableSample):  # a random sample: no answer to check
        raise unsupported
    if any(is_geodist(f) for f in tree.find_all(exp.Anonymous)):
        raise unsupported  # SCQL's function: its rules (arity, types) are the SPU's and the pushdown's
    # a derived table's (a view's, a UNION ALL's) columns no outer level uses are not read: they stay home
    tree = pushdown_projections(with_threshold(tree.copy(), threshold))
    reads = _columns_read(tree)
    if not _allowed(reads, policy, issuer):
        raise unsupported
    _describe(tree, catalog)  # a query DuckDB cannot bind is refused now (PlanError), not when run
    k = _group_size(reads, policy, issuer, threshold.k)
    counts, protected, provenance = _threshold_counts(tree, issuer, k, unsupported, catalog)
    gathered = tuple(
        Gathered(party, table, _in_catalog_order(catalog, party, table, columns), _pushable_where(tree, party, table),
                 (party, table) in provenance, f"g{i}")
        for i, ((party, table), columns) in enumerate(sorted(reads.items())))
    if k > 0:  # a subquery's aggregate of an owner's rows, wherever it is read (the rows sent are as before)
        try:  # several parties (the issuer's too): the translation counts each owner's rows
            threshold_subqueries(tree, k, catalog, subquery_owners(tree, issuer))
        except NotSupportedError:
            raise unsupported from None
    steps: list = []
    for part in gathered:
        steps += [RunLocal(part.party, part.pushdown_sql(), part.name), Reveal(part.party, part.name, issuer)]
    issuer_sql = _issuer_query(tree, gathered, counts, k).sql(dialect="duckdb")
    steps.append(Finish(issuer, tuple((p.party, p.name) for p in gathered), "tables", issuer_sql))
    notes = (f"computed at {issuer} in plaintext: every column the query reads is PLAINTEXT to {issuer} "
             f"(the secure placement could not: {unsupported})",)
    uses = tuple(f"{ColumnRef(p.party, p.table, c)} -> {issuer}: REVEAL allowed by PLAINTEXT"
                 for p in gathered if p.party != issuer for c in p.columns)
    return PhysicalPlan(issuer, tuple(steps), _leakage(gathered, catalog, issuer), notes=notes,
                        min_group_size=k if counts else 0, counted=tuple(dict.fromkeys(protected)), uses=uses)


def _leakage(gathered, catalog: Catalog, issuer: str) -> tuple[tuple[str, str], ...]:
    """What the issuer learns: each owner's columns and rows, and the result; the owners learn nothing."""
    sizes = {p.party: catalog.sizes(p.party) if catalog.sizes is not None else {} for p in gathered}
    learned = [(issuer, p.describe(sizes[p.party].get(p.table))) for p in gathered if p.party != issuer]
    return tuple(dict.fromkeys(learned + [(issuer, "the query result")]))


def _group_size(reads: dict, policy: RevealPolicy, issuer: str, k: int) -> int:
    """The group threshold: the federation's (or the outer tables' rules'), raised by the rule of any
    other party's table the query reads."""
    rules = [policy.rules[t].min_group_size or 0 for t in reads if t in policy.rules and t[0] != issuer]
    return max([k, *rules])


def _allowed(reads: dict, policy: RevealPolicy, issuer: str) -> bool:
    """Every column that would cross is PLAINTEXT to the issuer, unmasked for it, and in a table whose
    analysis rule does not restrict how its columns are used."""
    for (party, table), columns in reads.items():
        if party == issuer:
            continue
        rule = policy.rules.get((party, table))
        if rule is not None and (rule.aggregations or rule.dimension_columns is not None
                                 or set(columns) & set(rule.never_output)):
            return False
        for column in columns:
            ref = ColumnRef(party, table, column)
            if policy.grants.constraint(ref, issuer) is not Constraint.PLAINTEXT or (ref, issuer) in policy.masks:
                return False
    return True


def _columns_read(tree: exp.Expression) -> dict[tuple[str, str], set[str]]:
    """(party, table) -> the names of its columns the query reads, for every table it reads."""
    reads: dict[tuple[str, str], set[str]] = {(t.db, t.name): set() for t in tree.find_all(exp.Table) if t.db}
    for scope in traverse_scope(tree):
        for column in scope.columns:
            source = _source_of(scope, column.table)
            if isinstance(source, exp.Table) and source.db:
                reads[(source.db, source.name)].add(column.name)
    return reads


def _source_of(scope, alias: str):
    """The FROM item an alias names, in the scope or (a correlated column) an enclosing one."""
    while scope is not None and alias not in scope.sources:
        scope = scope.parent
    return scope.sources[alias] if scope is not None else None


def _in_catalog_order(catalog: Catalog, party: str, table: str, columns: set[str]) -> tuple[str, ...]:
    return tuple(name for name, _ in catalog.columns(party, table) if name in columns)


def _pushable_where(tree: exp.Expression, party: str, table: str) -> exp.Expression | None:
    """The rows of `party.table` the query can use: the OR over its references of each one's single-table
    conjuncts (WHERE and inner-join ON of the SELECT reading it); None when a reference keeps every row."""
    filters = []
    for ref in tree.find_all(exp.Table):
        if ref.db != party or ref.name != table:
            continue
        conjuncts = _own_conjuncts(ref)
        if not conjuncts:
            return None
        filters.append(exp.and_(*conjuncts))
    return exp.or_(*filters) if len(filters) > 1 else filters[0]


def _own_conjuncts(ref: exp.Table) -> list[exp.Expression]:
    """Conjuncts of the SELECT reading `ref` that only read `ref`'s columns, with its qualifier removed;
    none when that SELECT joins otherwise than inner (an outer join's filter may keep NULL-extended rows,
    a positional one pairs rows by their place)."""
    select = ref.parent.parent if isinstance(ref.parent, (exp.From, exp.Join)) else None
    if not isinstance(select, exp.Select):
        return []
    joins = select.args.get("joins") or []
    if any(j.side or j.kind not in ("", "INNER", "CROSS") or j.args.get("method") for j in joins):
        return []  # an outer, semi, anti, ASOF, POSITIONAL or NATURAL join
    conditions = [select.args["where"].this] if select.args.get("where") else []
    conditions += [j.args["on"] for j in joins if j.args.get("on")]
    alias = ref.alias_or_name
    own = []
    for condition in conditions:
        for conjunct in condition.flatten() if isinstance(condition, exp.And) else [condition]:
            columns = list(conjunct.find_all(exp.Column))
            if columns and all(c.table == alias for c in columns) and not conjunct.find(*UNPUSHABLE):
                own.append(conjunct.copy().transform(_unqualified))
    return own


def _unqualified(node: exp.Expression) -> exp.Expression:
    return exp.column(node.name, quoted=True) if isinstance(node, exp.Column) else node


def _issuer_query(tree: exp.Expression, gathered, counts: list[exp.Expression], k: int) -> exp.Expression:
    """The query over the issuer's views of the gathered tables, with the group threshold in HAVING."""
    view = {(p.party, p.table): p.name for p in gathered}

    def to_view(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and node.db:
            alias = exp.TableAlias(this=exp.to_identifier(node.alias_or_name, quoted=True))
            return exp.Table(this=exp.to_identifier(view[(node.db, node.name)], quoted=True), alias=alias)
        return node

    query = tree.transform(to_view)
    if counts and isinstance(query, exp.Select):
        cond = exp.and_(*(exp.GTE(this=c, expression=exp.Literal.number(k)) for c in counts))
        having = query.args.get("having")
        query.set("having", exp.Having(this=exp.and_(having.this, cond) if having else cond))
    return query


def _aggregates(select: exp.Expression) -> bool:
    return isinstance(select, exp.Select) and bool(
        select.args.get("group") or any(aggregates_in(e) for e in select.expressions))


def _threshold_counts(tree: exp.Expression, issuer: str, k: int, unsupported: NotSupportedError, catalog: Catalog):
    """The group threshold's counts (numbering derived tables and branches of `tree` in place), the
    protected owners they count, and the base tables whose owners number their rows (ROW).

    As on the other paths, it binds an aggregating outer SELECT: per input of its FROM owned by a party
    other than the issuer, that owner's distinct rows (a base table's row numbers, but not a table joined
    on its declared key to another of its party's: `lookup_aliases`; a single-owner derived table's result rows); per UNION ALL branch reading such a party, its rows; COUNT(*) when
    no input counts. A set operation of aggregates at the top cannot be bounded so, nor a derived table
    reading several parties (its rows carry their owners' row numbers up, docs/federation.md: the
    translation does that), nor an aggregate of another party's rows beneath an outer SELECT that does
    not aggregate (no threshold would bind it): not gathered."""
    if k <= 0:
        return [], [], set()
    if not isinstance(tree, exp.Select):
        if any(_aggregates(s) for s in tree.find_all(exp.Select)):
            raise unsupported
        return [], [], set()
    ctes = {cte.alias_or_name: cte for cte in tree.find_all(exp.CTE)}
    if not _aggregates(tree):
        if any(_aggregates(s) and parties_of(_ctes_inlined(s, ctes)) - {issuer}
               for s in tree.find_all(exp.Select) if s is not tree):
            raise unsupported  # an inner aggregate of a protected owner's rows reaches the issuer unbounded
        return [], [], set()
    if not tree.args.get("group") and all(a.find_ancestor(exp.Select) is not tree
                                          for e in tree.expressions for a in aggregates_in(e)):
        raise unsupported  # only subqueries in its SELECT list aggregate: no group to count rows in
    counts, protected, provenance = [], [], set()
    items = [tree.args["from_"].this] if tree.args.get("from_") else []
    lookups = lookup_aliases(tree, catalog)
    for item in items + [j.this for j in tree.args.get("joins") or []]:
        alias = item.alias_or_name
        if isinstance(item, exp.Table) and item.db:
            if item.db != issuer and alias not in lookups:
                counts.append(_distinct(alias, ROW))
                protected.append(item.db)
                provenance.add((item.db, item.name))
            continue
        holder = ctes.get(item.name) if isinstance(item, exp.Table) else item
        body = holder.this if isinstance(holder, (exp.CTE, exp.Subquery)) else None
        if isinstance(body, exp.Union):
            branch_counts, owners = _branch_counts(body, alias, issuer, unsupported, catalog)
            counts += branch_counts
            protected += owners
        elif isinstance(body, exp.Select):
            inlined = _ctes_inlined(body, ctes)
            parties = set(parties_of(inlined))
            if len(parties) == 1 and parties != {issuer}:
                check_rows_kept(next(iter(parties)), inlined, catalog)
                if ROW not in body.named_selects:  # a CTE read twice is numbered once
                    holder.set("this", _numbered(body))
                counts.append(_distinct(alias, ROW))
                protected += parties
            elif parties - {issuer}:  # the threshold through nested shapes: the secret program's rule
                raise unsupported
    return counts or [exp.Count(this=exp.Star())], protected, provenance


def subquery_owners(tree: exp.Expression, issuer: str):
    """`owners(select)` for `threshold_subqueries`: the parties a subquery of `tree` reads (through its
    CTEs), when one of them is not the issuer (whose own rows are never counted); else none."""
    ctes = {cte.alias_or_name: cte for cte in tree.find_all(exp.CTE)}

    def owners(select: exp.Expression) -> set[str]:
        parties = set(parties_of(_ctes_inlined(select, ctes)))
        return parties if parties - {issuer} else set()

    return owners


def _ctes_inlined(node: exp.Expression, ctes: dict[str, exp.CTE]) -> exp.Expression:
    """A copy of `node` with each bare reference to one of `ctes` replaced by its body, recursively: the
    parties a CTE reads through another CTE, and the rows it repeats, are those of the bodies it names."""
    def inline(table: exp.Expression) -> exp.Expression:
        if not (isinstance(table, exp.Table) and not table.db and table.name in ctes):
            return table
        body = _ctes_inlined(ctes[table.name].this, {n: c for n, c in ctes.items() if n != table.name})
        return exp.Subquery(this=body, alias=exp.TableAlias(this=exp.to_identifier(table.alias_or_name)))
    return node.copy().transform(inline)


def lookup_aliases(select: exp.Select, catalog: Catalog) -> set[str]:
    """FROM tables whose rows the group threshold need not count: each joined (WHERE, an inner join's ON)
    on every column of a key its party declares unique to another of that party's
    tables, whose rows it then meets at most once each (TPC-H Q10's nation beside customer), so the
    other table's distinct rows are that party's; of a party whose every table is such, the first counts."""
    tables = {t.alias_or_name: t for t in _sources(select) if isinstance(t, exp.Table) and t.db}
    names = {alias: {c for c, _ in catalog.columns(t.db, t.name)} for alias, t in tables.items()
             if catalog.has_table(t.db, t.name)}

    def owner(column: exp.Column) -> str | None:  # its table's alias (an unqualified column: the one table having it)
        having = [alias for alias, columns in names.items() if column.name in columns]
        return column.table or (having[0] if len(having) == 1 else None)

    equal: set[tuple[str, str, str]] = set()  # (alias, column, other alias) of each equality between tables
    for conjunct in _join_conjuncts(select):
        if isinstance(conjunct, exp.EQ) and all(isinstance(s, exp.Column) for s in (conjunct.left, conjunct.right)):
            (a, b), (x, y) = (conjunct.left, conjunct.right), (owner(conjunct.left), owner(conjunct.right))
            equal |= {(x, a.name, y), (y, b.name, x)}
    lookups = {alias for alias, t in tables.items() for key in catalog.unique_keys(t.db, t.name)
               if any(other != alias and tables.get(other) is not None and tables[other].db == t.db
                      and all((alias, c, other) in equal for c in key) for other in tables)}
    for party in {t.db for t in tables.values()}:
        own = [alias for alias, t in tables.items() if t.db == party]
        if set(own) <= lookups:
            lookups.discard(own[0])
    return lookups


def _sources(select: exp.Select) -> list[exp.Expression]:
    return ([select.args["from_"].this] if select.args.get("from_") else []) + [
        j.this for j in select.args.get("joins") or []]


def _join_conjuncts(select: exp.Select) -> list[exp.Expression]:
    """WHERE's conjuncts and those of each inner join's ON (a LEFT JOIN's NULL side counts its own rows,
    none in its NULL-extended rows, as on the spine, which joins it as an input of its own)."""
    where = select.args.get("where")
    found = list(conjuncts_of(where.this)) if where else []
    for join in select.args.get("joins") or []:
        if not join.args.get("side") and join.args.get("on") is not None:
            found += conjuncts_of(join.args["on"])
    return found


def _distinct(alias: str, column: str) -> exp.Expression:
    return exp.Count(this=exp.Distinct(expressions=[exp.column(column, alias, quoted=True)]))


def _numbered(body: exp.Select) -> exp.Select:
    """The derived table's rows, each with its row number (ROW)."""
    inner = exp.Subquery(this=body, alias=exp.TableAlias(this=exp.to_identifier("__rows", quoted=True)))
    return exp.select(exp.Star(), exp.alias_(exp.Window(this=exp.RowNumber()), ROW, quoted=True)).from_(inner)


def _branches(body: exp.Expression) -> list[exp.Expression]:
    if isinstance(body, exp.Union):
        return _branches(body.left) + _branches(body.right)
    return _branches(body.this) if isinstance(body, exp.Subquery) else [body]


def _branch_counts(body: exp.Union, alias: str, issuer: str, unsupported, catalog: Catalog):
    """Distinct rows per group of each UNION ALL branch that reads a party other than the issuer (its
    number BRANCH and its row numbers ROW: a join above the union, the CTE joined with itself say, repeats
    a row in a group, and a repeated row must not count twice), and those parties."""
    unions = [body, *body.find_all(exp.Union)]
    branches = _branches(body)
    if any(type(u) is not exp.Union or u.args.get("distinct") for u in unions) or \
            not all(isinstance(b, exp.Select) for b in branches):
        raise unsupported
    counts, protected = [], []
    for i, branch in enumerate(branches):
        owners = {t.db for t in branch.find_all(exp.Table) if t.db} - {issuer}
        for owner in sorted(owners):
            check_rows_kept(owner, branch, catalog)
            protected.append(owner)
        if BRANCH not in branch.named_selects:  # a CTE read twice is numbered once
            branch.replace(_numbered_branch(branch, i))
        if owners:
            in_branch = exp.EQ(this=exp.column(BRANCH, alias, quoted=True), expression=exp.Literal.number(i))
            counts.append(exp.Count(this=exp.Distinct(expressions=[
                exp.If(this=in_branch, true=exp.column(ROW, alias, quoted=True))])))
    return counts, protected


def _numbered_branch(branch: exp.Select, number: int) -> exp.Select:
    """A UNION ALL branch with its number (BRANCH) and its rows' numbers (ROW) as its last columns."""
    if branch.args.get("distinct"):  # numbered after its DISTINCT, as _numbered numbers a derived table
        branch = exp.select(exp.Star()).from_(
            exp.Subquery(this=branch.copy(), alias=exp.TableAlias(this=exp.to_identifier("__rows", quoted=True))))
    else:
        branch = branch.copy()
    return branch.select(exp.alias_(exp.Literal.number(number), BRANCH, quoted=True),
                         exp.alias_(exp.Window(this=exp.RowNumber()), ROW, quoted=True), copy=False)

