"""The minimum group size on the spine: whose distinct rows it counts (every owner but the issuer, by
the provenance column of each of its join inputs), where plaintext compute can count them, and the
refusal of an owner's part that could repeat one of its rows, which would inflate its count."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlglot import exp

from sqlsecure.errors import NotSupportedError, PolicyViolation
from sqlsecure.planner.catalog import Catalog
from sqlsecure.planner.logical import InnerJoin
from sqlsecure.planner.tree import Join as TreeJoin, build_tree, describe_join, quoted, repeating_op, unique_on

if TYPE_CHECKING:
    from sqlsecure.planner.placement import PlacementContext


def threshold_pushdown(party: str, select: exp.Select, k: int, catalog: Catalog) -> exp.Select:
    """Add a HAVING that reveals only groups of at least k of `party`'s rows: `COUNT(*) >= k` over one
    input; over a join of its own tables, k distinct rows of each input (each table or subquery in FROM
    numbers its rows), so a row the join repeats counts once (a LEFT JOIN's NULL-extended rows count none)."""
    sources = [select.args["from_"].this, *(j.this for j in select.args.get("joins") or [])]
    if len(sources) == 1:
        check_rows_kept(party, select, catalog)
        conds = [exp.GTE(this=exp.Count(this=exp.Star()), expression=exp.Literal.number(k))]
        select = select.copy()
    else:
        for source in sources:
            if isinstance(source, exp.Subquery):
                check_rows_kept(party, source, catalog)
            elif not isinstance(source, exp.Table):
                raise _repeats(party, "a row source other than its tables", source.sql(dialect="duckdb"))
        select = select.copy()
        sources = [select.args["from_"].this, *(j.this for j in select.args.get("joins") or [])]
        conds = [exp.GTE(this=exp.Count(this=exp.Distinct(expressions=[_number_rows(source, f"__rows_{i}")])),
                         expression=exp.Literal.number(k)) for i, source in enumerate(sources)]
    having = select.args.get("having")
    cond = exp.and_(*conds)
    select.set("having", exp.Having(this=exp.and_(having.this, cond) if having else cond))
    return select


def threshold_subqueries(query: exp.Expression, k: int, catalog: Catalog, owners) -> bool:
    """In place: every subquery in an expression of `query` (a value, a condition, IN, EXISTS, ANY / ALL;
    not a FROM item) that aggregates a protected owner's rows keeps only groups of >= k of that owner's
    distinct rows (`threshold_pushdown`), wherever it is read, as the operator translation's `Subquery`
    does: a filter on a lone row's aggregate reads it as surely as an output does. `owners(select)`: the
    protected parties a subquery reads (NotSupportedError for several: counting each needs the secret
    program's provenance). Returns whether any subquery was thresholded."""
    bodies = [node.this if isinstance(node, exp.Subquery) else node for node in query.find_all(exp.Subquery, exp.Query)
              if not isinstance(node.parent, (exp.From, exp.Join, exp.CTE, exp.Subquery, exp.SetOperation))
              and (isinstance(node, exp.Subquery) or isinstance(node.parent, (exp.In, exp.Exists, exp.Any, exp.All)))
              and node is not query]
    selects = [s for body in bodies for s in _first_aggregates(body)]
    found = False
    for select in sorted(selects, key=_depth, reverse=True):  # the innermost
        if not select.args.get("from_"):  # first (thresholding copies a SELECT); without FROM it reads no rows
            continue
        parties = owners(select)
        if len(parties) > 1:
            raise NotSupportedError(f"the subquery {select.sql(dialect='duckdb')[:80]} aggregates the rows of "
                                    f"{', '.join(sorted(parties))}: its threshold counts each in a secret program")
        if parties:
            select.replace(threshold_pushdown(parties.pop(), select, k, catalog))
            found = True
    return found


def _depth(node: exp.Expression) -> int:
    return 0 if node.parent is None else 1 + _depth(node.parent)


def _first_aggregates(body: exp.Expression) -> list[exp.Select]:
    """The aggregating SELECTs nearest the top of a subquery: its own, else its FROM items' (as the
    translation's thresholded `Subquery` places them), through set operations' branches."""
    if isinstance(body, exp.SetOperation):
        return _first_aggregates(body.left) + _first_aggregates(body.right)
    if isinstance(body, exp.Subquery):
        return _first_aggregates(body.this)
    if not isinstance(body, exp.Select):
        return []
    if own_aggregates(body):
        return [body]
    items = [body.args["from_"].this] if body.args.get("from_") else []
    return [s for item in items + [j.this for j in body.args.get("joins") or []] if isinstance(item, exp.Subquery)
            for s in _first_aggregates(item)]


def own_aggregates(select: exp.Expression) -> bool:
    """Whether `select` is a SELECT that aggregates by itself (GROUP BY, or an aggregate of its own outside
    a window), not only through its subqueries."""
    if not isinstance(select, exp.Select):
        return False
    own = [a for e in [*select.expressions, select.args.get("having")] if e is not None for a in e.find_all(exp.AggFunc)
           if a.find_ancestor(exp.Select) is select and a.find_ancestor(exp.Window) is None]
    return bool(select.args.get("group")) or bool(own)


def _number_rows(source: exp.Expression, name: str) -> exp.Column:
    """Replace `source` (a table or subquery in FROM, in place) by itself with its rows numbered in a
    column `name`; returns that column, qualified by the source's alias."""
    alias = source.alias_or_name
    inner = source.copy()
    if isinstance(inner, exp.Table):
        inner.set("alias", None)
        body = exp.select(exp.Star()).from_(inner)
    else:
        body = inner.this.copy()
        body = exp.select(exp.Star()).from_(exp.Subquery(this=body, alias=exp.TableAlias(this=exp.to_identifier("t"))))
    body = body.select(exp.alias_(exp.Window(this=exp.RowNumber()), name, quoted=True), copy=False)
    source.replace(exp.Subquery(this=body, alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True))))
    return exp.column(name, table=alias, quoted=True)


def protected_rows(join: InnerJoin, aggregate, ctx: PlacementContext) -> tuple[tuple[str, str], ...]:
    """(party, provenance column) of each join input whose distinct rows the group threshold counts:
    every input of a party other than the issuer (the issuer's own rows never count towards it)."""
    if aggregate is None or ctx.dp is not None or ctx.min_group_size <= 0:
        return ()
    protected = tuple((q.party, f"__prov_r{i}", q.select) for i, q in enumerate(join.inputs) if q.party != ctx.issuer)
    for party, _, select in protected:
        check_rows_kept(party, select, ctx.usage.catalog)
    return tuple((party, column) for party, column, _ in protected)


def rows_once(join: InnerJoin, order, protected, ctx: PlacementContext) -> frozenset[str]:
    """The provenance columns of `protected` whose owner's rows each appear at most once in the joined
    relation: walking the PSI joins of `order` ((joined input i, new input j, keys of i, keys of j)), every
    joined row meets at most one row of j where j's query is unique on its keys, and a row of j at most one
    joined row where i's query is (and i's rows appeared once so far). A LEFT JOIN's NULL extension adds no
    repeat; semi- and anti-joins keep rows as they are. Uniqueness by shape (GROUP BY, DISTINCT) or by a
    declared key (`tree.unique_on`); a declared one may be false, so the stage has each such owner check
    its joined piece before sharing (`stage.check_rows_once`: a DataError, never a wrong count). For those
    columns the group threshold's distinct rows are the weighted rows, a sum (`SecureStage.rows_once`)."""
    def unique(k: int, keys) -> bool:
        query = join.inputs[k]
        if not hasattr(query, "select"):  # a UNION ALL of several parties: no key proven
            return False
        tree = party_tree(query.party, query.select, ctx.usage.catalog)
        return tree is not None and unique_on(tree, tuple(quoted(key) for key in keys), ctx.usage.catalog) is not None

    once = {0: True}
    for i, j, keys_i, keys_j in order:
        j_unique = unique(j, keys_j)
        once[j] = once[i] and unique(i, keys_i)
        for k in [k for k in once if k != j]:
            once[k] = once[k] and j_unique
    columns = {f"__prov_r{k}" for k, flag in once.items() if flag}
    return frozenset(column for _, column in protected if column in columns)


def check_rows_kept(party: str, select: exp.Expression, catalog: Catalog) -> None:
    """Refuse a protected owner's pushed-down part that can repeat one of its rows (a UNION ALL, UNNEST, a
    join of its own tables with no side unique on its keys): the group threshold counts the rows of that
    part, which repetition would inflate as duplicates of the issuer's own would. A join one of whose
    sides is unique on its keys (`tree.kept_side`) keeps each row of the other side at most once, so the
    part's rows are that side's distinct rows."""
    for node, what in ((exp.Union, "a UNION ALL"), (exp.Unnest, "UNNEST"), (exp.Explode, "UNNEST")):
        found = next((n for n in select.find_all(node) if not (isinstance(n, exp.Union) and n.args.get("distinct"))),
                     None)
        if found is not None:
            raise _repeats(party, what, found.sql(dialect="duckdb"))
    join = select.find(exp.Join)
    if join is None:
        return
    tree = party_tree(party, select, catalog)
    found = None if tree is None else repeating_op(tree, catalog)
    if isinstance(found, TreeJoin):
        raise _repeats(party, "a join of its own tables neither of whose sides is unique on its join keys",
                       describe_join(found), party)
    if tree is None or found is not None:
        raise _repeats(party, "a join of its own tables", join.sql(dialect="duckdb"), party)


def party_tree(party: str, select: exp.Expression, catalog: Catalog):
    """The operator tree (`tree.build_tree`) of a party's pushed-down SQL, its tables qualified by the
    party; None where the tree has no operator for it."""
    select = select.copy()
    for table in select.find_all(exp.Table):
        if not table.db and catalog.has_table(party, table.name):
            table.set("db", exp.to_identifier(party))
    try:
        return build_tree(select, catalog)
    except NotSupportedError:
        return None


def _repeats(party: str, what: str, found: str, declares: str | None = None) -> PolicyViolation:
    todo = f", or declare the key that makes one side unique in [parties.{declares}.unique]" if declares else ""
    return PolicyViolation(
        f"the minimum group size counts {party}'s distinct rows, but {party}'s part of the query "
        f"({what}: {found[:80]}) can repeat a row of it; aggregate over {party}'s "
        f"tables without repeating their rows{todo}")


def local_threshold(assignment, protected, outer: set[str]) -> None:
    """Plaintext compute can count only the computing party's own distinct rows per group: a protected
    party that does not compute the groups sends the query to the SPU (NotSupportedError). An
    ungrouped aggregate gets a part at every protected party, each checking its own rows."""
    owners = {party for party, _ in protected}
    if assignment.group_party is None:
        for party in owners:
            assignment.by_party.setdefault(party, [])
        return
    if assignment.he_party is not None and assignment.he_party not in outer:
        owners -= {assignment.he_party}  # HE: the value party bounds its rows' multiplicity (HEGroupBy.value_rows)
    others = sorted(owners - {assignment.group_party})
    if others:
        raise NotSupportedError(f"the minimum group size counts {', '.join(others)}'s distinct rows in groups "
                                f"formed at {assignment.group_party}")


def threshold_having(party: str, protected, threshold: int) -> list[exp.Expression]:
    """`COUNT(DISTINCT provenance) >= k` for each of `party`'s protected relations."""
    return [exp.GTE(this=exp.Count(this=exp.Distinct(expressions=[exp.column(column, quoted=True)])),
                    expression=exp.Literal.number(threshold)) for owner, column in protected if owner == party]
