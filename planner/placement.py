"""Placement: turn the optimized logical plan into physical steps, checking the grants on the way.

Cross-party shape handled here: a tree of equi-joins between parties' local queries (PSI), then
either row-level projections each computed by one party, or aggregates computed by the party that
holds their inputs (group keys and aggregated values at one party; ungrouped aggregates each at
its own party). Everything else raises NotSupportedError naming the feature.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field, replace

from sqlglot import exp

from sqlsecure.errors import NotSupportedError, PlanError, PolicyViolation
from sqlsecure.planner.cost import Estimate, Link, choose, estimate, expected_rows
from sqlsecure.planner.logical import (
    aggregates_in,
    Aggregate, Filter, InnerJoin, Limit, LocalQuery, Node, Project, Sort, UnionScan, aliases_of, column_key,
)
from sqlsecure.planner.physical import (
    Compute, EnclaveStage, EquiJoin, Finish, HEGroupBy, Mask, Noise, PhysicalPlan, Reveal, RunLocal, SecureStage,
)
from sqlsecure.executors.tee.expressions import (ALL_LIMBS, NULL_FLAG, enclave_refusal, enclave_type_refusal,
                                                 kind_of_type, result_type)
from sqlsecure.executors.tee.program import EnclaveProgram
from sqlsecure.executors.tee.stage import sealed_text_widths
from sqlsecure.executors.spu.ranges import is_geodist
from sqlsecure.planner.geodist import great_circle
from sqlsecure.planner.catalog import Catalog
from sqlsecure.planner.reveal import DPContext
from sqlsecure.planner.tree import Join as TreeJoin, build_tree, describe_join, quoted, repeating_op, unique_on
from sqlsecure.planner.usage import Usage
from sqlsecure.policy.grants import Use

KEY_FAMILIES = {
    "TINYINT": "integer", "SMALLINT": "integer", "INTEGER": "integer", "BIGINT": "integer",
    "HUGEINT": "integer", "UTINYINT": "integer", "USMALLINT": "integer", "UINTEGER": "integer",
    "UBIGINT": "integer", "UHUGEINT": "integer", "VARCHAR": "string", "DATE": "date",
    "BOOLEAN": "boolean", "TIMESTAMP": "timestamp", "UUID": "uuid", "BLOB": "binary",
}


def key_family(dtype: str | None) -> str | None:
    if dtype is None:
        return None
    base = dtype.split("(")[0].upper()
    if base == "DECIMAL":
        return "decimal"
    if base in ("FLOAT", "DOUBLE", "REAL"):
        return "float"
    return KEY_FAMILIES.get(base, base.lower())


@dataclass
class PlacementContext:
    issuer: str
    parties: dict[str, str]  # alias -> party
    usage: Usage
    min_group_size: int
    column_type: callable  # (alias, column) -> DuckDB type or None
    dp: DPContext | None = None  # differential privacy for this issuer's query, if any
    masks: dict = field(default_factory=dict)  # output index -> Mask for the issuer
    he_key_bits: int = 2048  # Paillier modulus for HE group sums
    enclave: str | None = None  # "cost" or "always" when the federation has an attested enclave
    measurements: tuple[str, ...] = ()  # the enclave measurements the federation accepts (hex)
    group_sums: str = "auto"  # class 4 on HE ("he"), on the SPU ("spu"), or by the cost model ("auto")
    link: Link = Link()  # the link the cost model assumes between parties
    rows_of: callable = lambda party: None  # party -> largest published size of its tables in the query
    magnitude_of: callable = lambda alias, column: None  # a column's published magnitude class, or None
    class_4: Estimate | None = None  # the cost model's verdict, when it was asked
    psi: str = "kkrt"  # the PSI protocol of joins across parties: "kkrt" (OT-based) or "ecdh"


def to_piece(expression: exp.Expression) -> exp.Expression:
    """Rewrite `"alias"."col"` to the piece column `"alias.col"`."""

    def rewrite(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column) and node.table:
            return exp.column(column_key(node), quoted=True)
        return node

    return expression.copy().transform(rewrite)


def _spine(plan: Node):
    limit = sort = aggregate = None
    if isinstance(plan, Limit):
        limit, plan = plan, plan.child
    if isinstance(plan, Sort):
        sort, plan = plan, plan.child
    if not isinstance(plan, Project):
        raise PlanError(f"unexpected plan shape: {type(plan).__name__}")
    project, plan = plan, plan.child
    if isinstance(plan, Aggregate):
        aggregate, plan = plan, plan.child
    return limit, sort, project, aggregate, plan


def _party_set(expression: exp.Expression, parties: dict[str, str]) -> frozenset[str]:
    return frozenset(parties[a] for a in aliases_of(expression))


def place(plan: Node, ctx: PlacementContext) -> PhysicalPlan:
    if isinstance(plan, LocalQuery):
        return _place_pushdown(plan, ctx)
    limit, sort, project, aggregate, child = _spine(plan)
    if isinstance(child, UnionScan) or (isinstance(child, Filter) and isinstance(child.child, UnionScan)):
        return _place_union(child, limit, sort, project, aggregate, ctx)
    return _place_cross_party(plan, ctx)


def _place_union(child, limit, sort, project, aggregate, ctx: PlacementContext) -> PhysicalPlan:
    """UNION ALL across parties: each branch pushed down, the rest on the SPU over the concatenation."""
    union = child.child if isinstance(child, Filter) else child
    filters = child.conjuncts if isinstance(child, Filter) else ()
    steps: list = [RunLocal(b.party, b.select.sql(dialect="duckdb"), f"u{i}") for i, b in enumerate(union.branches)]
    parties = {union.alias: None}
    plan_ctx = PlacementContext(ctx.issuer, {**ctx.parties, **parties}, ctx.usage, ctx.min_group_size,
                                ctx.column_type, ctx.dp, ctx.masks, ctx.he_key_bits)
    members = tuple(sorted({b.party for b in union.branches}))
    secure = _secure_stage_plan(list(filters), project, aggregate, sort, limit, plan_ctx, None, members)
    threshold = ctx.min_group_size if aggregate is not None else 0
    protected = tuple(i for i, b in enumerate(union.branches) if b.party != ctx.issuer) if threshold else ()
    for i in protected:
        _check_rows_kept(union.branches[i].party, union.branches[i].select, ctx.usage.catalog)
    out = "union_spu_out"
    steps.append(SecureStage("", out=out, issuer=ctx.issuer, threshold=threshold, branch_rows=protected,
                             union=tuple((b.party, f"u{i}") for i, b in enumerate(union.branches)), **secure))
    steps.append(_finish_outputs(project, ctx.issuer, out))
    leakage = [(p, "the row count of every branch of the UNION ALL, and the result's size") for p in members]
    leakage.append((ctx.issuer, "the query result"))
    return _plan(ctx, steps, leakage, threshold, [union.branches[i].party for i in protected])


def _place_pushdown(query: LocalQuery, ctx: PlacementContext) -> PhysicalPlan:
    party, issuer = query.party, ctx.issuer
    select = query.select
    threshold = 0
    finish_sql = None
    release = None
    if party != issuer:
        aggregates = isinstance(select, exp.Select) and (
            select.args.get("group") or any(aggregates_in(e) for e in select.expressions)
        )
        if ctx.dp is not None:
            select, release, finish_sql = _dp_pushdown(select, ctx.dp)
        elif aggregates and ctx.min_group_size > 0:
            threshold = ctx.min_group_size
            select = _with_threshold(party, select, threshold, ctx.usage.catalog)
    steps = [RunLocal(party, select.sql(dialect="duckdb"), "result")]
    if release is not None:
        steps.append(Noise(party, "result", release))
    if ctx.masks:
        names = select.named_selects if isinstance(select, exp.Select) else []
        steps.append(Mask(party, "result", tuple((names[i], m) for i, m in sorted(ctx.masks.items()))))
    steps += [Reveal(party, "result", issuer), Finish(issuer, ((party, "result"),), "rows", finish_sql)]
    leakage = ((issuer, "the query result"),) if party != issuer else ()
    return _plan(ctx, steps, leakage, threshold)


def _plan(ctx: PlacementContext, steps, leakage, threshold: int, counted=()) -> PhysicalPlan:
    notes = tuple(ctx.dp.describe()) if ctx.dp is not None else ()
    if ctx.dp is not None and ctx.dp.grouped:
        (noise,) = [s for s in steps if isinstance(s, Noise) and s.release.threshold is not None][:1] or [None]
        if noise is not None:
            notes += (f"  groups are released when their noisy row count reaches {noise.release.threshold:.1f}",)
    if ctx.class_4 is not None and any(isinstance(s, (HEGroupBy, SecureStage)) for s in steps):
        on = "HE" if any(isinstance(s, HEGroupBy) for s in steps) else "the SPU"
        notes += (f"class 4 on {on} ([federation] group_sums = \"auto\"); {ctx.class_4.why}",)
    for step in steps:
        if isinstance(step, Mask):
            notes += tuple(f"masked for {ctx.issuer}: {column} ({mask.describe()})" for column, mask in step.columns)
    return PhysicalPlan(ctx.issuer, tuple(steps), tuple(dict.fromkeys(leakage)), notes=notes,
                        min_group_size=threshold, counted=tuple(dict.fromkeys(counted)) if threshold else (),
                        uses=ctx.usage.passed(),
                        epsilon=ctx.dp.epsilon if ctx.dp else 0.0, delta=ctx.dp.delta if ctx.dp else 0.0)


def _dp_pushdown(select: exp.Expression, dp: DPContext):
    """Rewrite a single-party aggregate for a noisy release; ORDER BY / LIMIT move to the issuer."""
    if not isinstance(select, exp.Select):
        raise NotSupportedError("under differential privacy only a single aggregating SELECT can be answered")
    if select.args.get("having"):
        raise NotSupportedError("HAVING is not supported under differential privacy (filter the noisy result)")
    group = select.args.get("group")
    group_sqls = {g.sql() for g in (group.expressions if group else [])}
    items = [(e.alias_or_name, e.this if isinstance(e, exp.Alias) else e) for e in select.expressions]
    dp.count_values(items, group_sqls)
    sql_items, release = dp.rewrite(items, group_sqls)
    names = [n for n, _ in items]
    finish = exp.Select().from_("result")
    finish.set("expressions", [exp.column(n, quoted=True) for n in names])
    inner = {e.sql(): n for n, e in items}
    order = select.args.get("order")
    if order:
        keys = []
        for o in order.expressions:
            key = o.this
            ref = key.name if isinstance(key, exp.Column) and not key.table and key.name in names else inner.get(key.sql())
            if ref is None:
                raise NotSupportedError(f"under differential privacy ORDER BY must use output columns: {key.sql()}")
            new = o.copy()
            new.set("this", exp.column(ref, quoted=True))
            keys.append(new)
        finish.set("order", exp.Order(expressions=keys))
    for clause in ("limit", "offset"):
        if select.args.get(clause):
            finish.set(clause, select.args[clause].copy())
    local = select.copy()
    for clause in ("order", "limit", "offset"):
        local.set(clause, None)
    local.set("expressions", [exp.alias_(e, n, quoted=True) for n, e in sql_items])
    return local, release, finish.sql(dialect="duckdb")


def _finish_outputs(project: Project, issuer: str, out: str) -> Finish:
    """The issuer names the outputs o0, o1, ... of a stage that already sorted and limited them."""
    finish = exp.Select().from_("result")
    finish.set("expressions", [exp.alias_(as_duckdb_type(exp.column(f"o{i}", quoted=True), project, i),
                                         e.alias_or_name, quoted=True)
                               for i, e in enumerate(project.expressions)])
    return Finish(issuer, ((issuer, out),), "rows", finish.sql(dialect="duckdb"))


def as_duckdb_type(column: exp.Expression, project: Project, i: int) -> exp.Expression:
    """Output i cast to DuckDB's type of it, so every device's result has the schema DuckDB gives
    (MIN of a DECIMAL(12, 2) is DECIMAL(12, 2), SUM of an INTEGER a HUGEINT, a constant NULL of the
    NULL type); as is when unknown."""
    dtype = project.types[i] if i < len(project.types) else ""
    kind = KIND_OF_TYPE.get(dtype.split("(")[0].upper())
    if kind == "any":  # DuckDB's NULL type: a constant NULL, which the issuer writes as such
        return exp.Null()
    if kind is None:
        return column
    return exp.cast(column, exp.DataType.build(dtype, dialect="duckdb"))


def _with_threshold(party: str, select: exp.Select, k: int, catalog: Catalog) -> exp.Select:
    """Add a HAVING that reveals only groups of at least k of `party`'s rows: `COUNT(*) >= k` over one
    input; over a join of its own tables, k distinct rows of each input (each table or subquery in FROM
    numbers its rows), so a row the join repeats counts once (a LEFT JOIN's NULL-extended rows count none)."""
    sources = [select.args["from_"].this, *(j.this for j in select.args.get("joins") or [])]
    if len(sources) == 1:
        _check_rows_kept(party, select, catalog)
        conds = [exp.GTE(this=exp.Count(this=exp.Star()), expression=exp.Literal.number(k))]
        select = select.copy()
    else:
        for source in sources:
            if isinstance(source, exp.Subquery):
                _check_rows_kept(party, source, catalog)
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


def _protected_rows(join: InnerJoin, aggregate, ctx: PlacementContext) -> tuple[tuple[str, str], ...]:
    """(party, provenance column) of each join input whose distinct rows the group threshold counts:
    every input of a party other than the issuer (the issuer's own rows never count towards it)."""
    if aggregate is None or ctx.dp is not None or ctx.min_group_size <= 0:
        return ()
    protected = tuple((q.party, f"__prov_r{i}", q.select) for i, q in enumerate(join.inputs) if q.party != ctx.issuer)
    for party, _, select in protected:
        _check_rows_kept(party, select, ctx.usage.catalog)
    return tuple((party, column) for party, column, _ in protected)


def _check_rows_kept(party: str, select: exp.Expression, catalog: Catalog) -> None:
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
    tree = _party_tree(party, select, catalog)
    found = None if tree is None else repeating_op(tree, catalog)
    if isinstance(found, TreeJoin):
        raise _repeats(party, "a join of its own tables neither of whose sides is unique on its join keys",
                       describe_join(found), party)
    if tree is None or found is not None:
        raise _repeats(party, "a join of its own tables", join.sql(dialect="duckdb"), party)


def _party_tree(party: str, select: exp.Expression, catalog: Catalog):
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


def _local_threshold(assignment, protected, outer: set[str]) -> None:
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


def _threshold_having(party: str, protected, threshold: int) -> list[exp.Expression]:
    """`COUNT(DISTINCT provenance) >= k` for each of `party`'s protected relations."""
    return [exp.GTE(this=exp.Count(this=exp.Distinct(expressions=[exp.column(column, quoted=True)])),
                    expression=exp.Literal.number(threshold)) for owner, column in protected if owner == party]


def _join_edges(join: InnerJoin, ctx: PlacementContext):
    """The equi-join edges between inputs ((i, j) -> [(key of i, key of j)], i < j), the cross-party
    conjuncts that are no edge (residual) and the conjuncts written for each edge."""
    owner = {}
    for i, query in enumerate(join.inputs):
        for alias in query.aliases:
            owner[alias] = i
    edges: dict[tuple[int, int], list[tuple[str, str]]] = {}

    def output_name(query: LocalQuery, side: exp.Expression) -> str:
        if isinstance(side, exp.Column):
            return column_key(side)
        return dict(query.keys)[side.sql()]

    residual, written = [], {}
    for conjunct in join.conjuncts:
        sides = (conjunct.left, conjunct.right) if isinstance(conjunct, exp.EQ) else ()
        owners = [{owner[a] for a in aliases_of(s)} for s in sides]
        if not sides or any(len(o) != 1 for o in owners) or owners[0] == owners[1]:
            residual.append(conjunct)  # a cross-party predicate: evaluated on the SPU after the join
            continue
        i, j = owners[0].pop(), owners[1].pop()
        left, right = (conjunct.left, conjunct.right) if i < j else (conjunct.right, conjunct.left)
        i, j = min(i, j), max(i, j)
        _check_key_types(left, right, ctx)
        pair = (output_name(join.inputs[i], left), output_name(join.inputs[j], right))
        edges.setdefault((i, j), []).append(pair)
        written.setdefault((i, j), []).append(conjunct)
    return edges, residual, written


def _check_key_types(left: exp.Expression, right: exp.Expression, ctx: PlacementContext) -> None:
    if not (isinstance(left, exp.Column) and isinstance(right, exp.Column)):
        return
    lf = key_family(ctx.column_type(left.table, left.name))
    rf = key_family(ctx.column_type(right.table, right.name))
    for family, col in ((lf, left), (rf, right)):
        if family == "float":
            raise NotSupportedError(
                f"join key {col.sql()} is floating point; exact matching needs INTEGER, DECIMAL or VARCHAR "
                "(CAST it in the query)"
            )
    if lf and rf and lf != rf:
        raise PlanError(
            f"join keys {left.sql()} ({lf}) and {right.sql()} ({rf}) have different types; "
            "values of different types never match: CAST one side so both are the same type"
        )


def _join_order(join: InnerJoin, edges, ctx: PlacementContext):
    """Breadth-first tree over the join graph: (joined component i, new component j, keys of i, keys of j)
    per join, and the edges that close a cycle (`_spanning_edges`), which the caller applies as filters on
    the joined relation: an inner join's condition holds the same after the joins as in them."""
    n = len(join.inputs)
    spanning = _spanning_edges(join, edges, ctx)
    joined, queue, order = {0}, deque([0]), []
    while queue:
        i = queue.popleft()
        for (a, b), pairs in sorted(spanning.items()):
            j = b if a == i else a if b == i else None
            if j is None or j in joined:
                continue
            keys_i = tuple(p[0] if a == i else p[1] for p in pairs)
            keys_j = tuple(p[1] if a == i else p[0] for p in pairs)
            order.append((i, j, keys_i, keys_j))
            joined.add(j)
            queue.append(j)
    if len(joined) != n:
        missing = ", ".join(sorted({join.inputs[k].party for k in range(n) if k not in joined}))
        raise NotSupportedError(f"no equi-join condition links {missing} to the rest: a cross join "
                                "between parties is not supported")
    closing = sorted(set(edges) - set(spanning))
    outer = {k for k, q in enumerate(join.inputs) if set(q.aliases) & set(join.outer)}
    if any(set(edge) & outer for edge in closing):
        raise NotSupportedError("join conditions form a cycle through the NULL side of a LEFT JOIN; only "
                                "tree-shaped outer joins (chains and stars) are supported")
    return order, closing


def _spanning_edges(join: InnerJoin, edges, ctx: PlacementContext) -> dict:
    """A spanning tree of the join graph (Kruskal): edges with a side known unique on its keys first (PK-FK
    joins, n + m rows), then the others in order, so a cycle is closed by a many-to-many edge (TPC-H Q5's
    `c_nationkey = s_nationkey`), which then only filters the rows the PK-FK joins produced."""
    root = list(range(len(join.inputs)))

    def find(k: int) -> int:
        while root[k] != k:
            k = root[k]
        return k

    def many_to_many(edge) -> bool:
        return not any(_known_unique(join.inputs[k], tuple(p[side] for p in edges[edge]), ctx)
                       for side, k in enumerate(edge))

    chosen = {}
    for edge in sorted(edges, key=lambda e: (many_to_many(e), e)) if len(edges) >= len(join.inputs) else edges:
        a, b = find(edge[0]), find(edge[1])
        if a != b:
            root[a] = b
            chosen[edge] = edges[edge]
    return chosen


def _place_cross_party(plan: Node, ctx: PlacementContext) -> PhysicalPlan:
    limit, sort, project, aggregate, join = _spine(plan)
    if not isinstance(join, InnerJoin):
        raise PlanError(f"unexpected plan shape under the projection: {type(join).__name__}")
    steps: list = [RunLocal(q.party, q.select.sql(dialect="duckdb"), f"r{i}") for i, q in enumerate(join.inputs)]
    edges, residual, written = _join_edges(join, ctx)
    order, closing = _join_order(join, edges, ctx)
    residual += [c for edge in closing for c in written[edge]]
    edges = {edge: pairs for edge, pairs in edges.items() if edge not in closing}
    members = [q.party for q in join.inputs]
    hidden = _secret_keys(join, ctx)
    if hidden:
        return _place_secret_join(join, steps, edges, hidden, residual, limit, sort, project, aggregate, ctx)
    if set(join.inputs[0].aliases) & set(join.outer):
        raise NotSupportedError("the preserved side of a LEFT JOIN must come first in FROM")
    default = ctx.issuer if ctx.issuer in members else members[0]
    protected = _protected_rows(join, aggregate, ctx)
    secure, spu_refused = None, ""
    try:
        if residual or any(e.find(exp.Window) for e in project.expressions):
            raise NotSupportedError("cross-party predicates or window functions")
        assignment = _assign_outputs(project, aggregate, sort, default, ctx, _join_rows(join, ctx))
        _local_threshold(assignment, protected, {q.party for q in join.inputs if set(q.aliases) & set(join.outer)})
        computing = set(assignment.parties)
        if limit is not None and sort is not None and aggregate is None and len(computing) > 1 and ctx.dp is None \
                and not ctx.masks and not project.distinct:
            # a LIMIT over several parties' rows: sort and limit on shares, so only the kept rows are opened
            secure = _secure_stage_plan(residual, project, aggregate, sort, limit, ctx, None)
            computing = set(secure["compute"])
    except NotSupportedError as local_error:
        try:
            keyed = _group_keys_at_one_party(project, aggregate, sort, _psi_equal_columns(join, order, ctx), ctx)
            secure = _secure_stage_plan(residual, *keyed, limit, ctx, local_error, protected=protected)
            computing = set(secure["compute"])
        except NotSupportedError as spu_error:
            if not ctx.enclave:
                raise
            spu_refused = f" (nor can the SPU: {spu_error})"
            secure, computing = {}, _parties_read(project, aggregate, sort, ctx) | {p for p, _ in protected}

    # A party keeps a piece of a joined relation only while it still needs one: to compute outputs,
    # or to supply keys for a later join. Others never see the join's row structure.
    leakage: list[tuple[str, str]] = []
    current, inside, holding = "r0", [members[0]], (members[0],)
    for n, (i, j, keys_i, keys_j) in enumerate(order, 1):
        later_keys = {members[a] for a, *_ in order[n:]} | {
            members[next(k for k, q in enumerate(join.inputs) if m.key.table in q.aliases)] for m in join.memberships}
        inside = inside + [members[j]]
        keep = tuple(p for p in dict.fromkeys(inside) if p in computing or p in later_keys)
        out = f"j{n}"
        pi, pj = members[i], members[j]
        left_outer = bool(set(join.inputs[j].aliases) & set(join.outer))
        if left_outer and any(j in (a, b) for (a, b) in edges if i not in (a, b)):
            raise NotSupportedError("the NULL side of a LEFT JOIN across parties must join nothing else")
        if set(join.inputs[i].aliases) & set(join.outer):
            raise NotSupportedError("a LEFT JOIN whose NULL side is joined on by another table is not supported yet")
        psi, large = _psi_protocol(pi, pj, ctx, leakage)
        steps.append(EquiJoin(current, f"r{j}", pi, f"r{i}", keys_i, pj, keys_j, out, holding, keep,
                              mode="left" if left_outer else "inner", psi=psi, large=large))
        if left_outer:
            leakage.append((pj, f"how many rows of {out} found no match (the NULL-extended rows of the LEFT JOIN)"))
        if pi != pj:
            for me, mine, peer, theirs in ((pi, keys_i, pj, keys_j), (pj, keys_j, pi, keys_i)):
                leakage.append((me, f"which of its {', '.join(mine)} values are also {peer}'s {', '.join(theirs)}; "
                                    f"{peer}'s number of distinct keys and row count per common key"))
        for holder in keep:
            if holder != pi:
                leakage.append((holder, f"the row structure of join {out} (which of its rows match, how often)"))
        current, holding = out, keep

    for m, membership in enumerate(join.memberships):  # semi- and anti-joins, after the inner joins
        i = next(k for k, q in enumerate(join.inputs) if membership.key.table in q.aliases)
        pi, pj = members[i], membership.query.party
        if pi == pj:
            raise NotSupportedError("an IN / EXISTS subquery of the same party as its key, inside a cross-party "
                                    "query, is not supported yet: move it into a subquery in FROM")
        steps.append(RunLocal(pj, membership.query.select.sql(dialect="duckdb"), f"m{m}"))
        out = f"s{m}"
        psi, large = _psi_protocol(pi, pj, ctx, leakage)
        steps.append(EquiJoin(current, f"m{m}", pi, f"r{i}", (column_key(membership.key),), pj, ("__member",), out,
                              holding, holding, mode="anti" if membership.anti else "semi",
                              null_aware=membership.null_aware, psi=psi, large=large))
        leakage.append((pi, f"which of its {column_key(membership.key)} values are among {pj}'s subquery values"))
        leakage.append((pj, f"which of its subquery values are {pi}'s {column_key(membership.key)} values"
                            + (", and whether it has none or a NULL (told to the peer)"
                               if membership.null_aware else "")))
        current = out

    ctx.usage.check_cross_party(join, tuple(dict.fromkeys(members)), aggregate, project, sort, residual)
    threshold = ctx.min_group_size if ctx.dp is None else 0
    enclave = None
    if secure is not None and ctx.enclave:
        try:
            if protected and join.outer:
                raise NotSupportedError("the enclave cannot count distinct rows of a LEFT JOIN's NULL side")
            enclave = _enclave_stage_plan(residual, project, aggregate, sort, limit, ctx, current, protected)
        except NotSupportedError as why:
            if ctx.enclave == "always" or not secure:  # not secure: the SPU refused it too
                raise NotSupportedError(f"the enclave cannot run this query: {why}{spu_refused}") from None
    if enclave is not None:
        steps.append(enclave)
        leakage.append(("enclave", "the joined rows of the inputs, inside the enclave only (sealed in, sealed out)"))
        leakage += sealed_text_widths(enclave.inputs)
        if json.loads(enclave.program)["computed"]:
            leakage += [(p, "whether an expression computed in the enclave failed on some row (the query is then "
                            "refused with a DataError), not which row") for p in (*enclave.inputs_by_party, ctx.issuer)]
        steps.append(_finish_outputs(project, ctx.issuer, enclave.out))
        leakage.append((ctx.issuer, "the query result (computed in a SIMULATED enclave: no hardware protection)"))
        return _plan(ctx, steps, leakage, ctx.min_group_size if aggregate else 0, [p for p, _ in protected])
    if secure is not None:
        out = f"{current}_spu_out"
        steps.append(SecureStage(current, out=out, issuer=ctx.issuer, threshold=threshold if aggregate else 0,
                                 **secure))
        leakage += [(p, "the number of rows (or groups) in the result, from the SPU's compaction")
                    for p in secure["compute"]]
        steps.append(_finish_outputs(project, ctx.issuer, out))
        leakage.append((ctx.issuer, "the query result"))
        return _plan(ctx, steps, leakage, threshold if aggregate else 0, [p for p, _ in protected])
    if ctx.dp is not None:
        if aggregate is None:
            raise NotSupportedError("under differential privacy only aggregates can be revealed")
        if aggregate.having is not None:
            raise NotSupportedError("HAVING is not supported under differential privacy (filter the noisy result)")
        ctx.dp.count_values([i for items in assignment.by_party.values() for i in items],
                            {g.sql() for g in aggregate.group_by})
    outputs = [e.alias_or_name for e in project.expressions]
    if assignment.he_party is not None:
        parts, finish_cols = _he_steps(steps, current, assignment, aggregate, threshold, ctx, protected)
        leakage += [(assignment.he_party, f"the number of groups (HE group sum with {assignment.group_party})"),
                    (assignment.group_party, f"nothing of {assignment.he_party}'s values (Paillier ciphertexts)")]
        if any(p == assignment.he_party for p, _ in protected):
            leakage.append((assignment.group_party, f"the most joined rows any one of {assignment.he_party}'s rows "
                                                    "appears in (for the minimum group size)"))
    else:
        parts, finish_cols = _output_steps(steps, current, assignment, aggregate, threshold, ctx, protected)
    finish_sql = _finish_sql(finish_cols, outputs, project, sort, limit)
    mode = "single" if aggregate is not None and assignment.group_party is None else "rows"
    steps.append(Finish(ctx.issuer, tuple(parts), mode, finish_sql))
    leakage.append((ctx.issuer, "the query result"))
    return _plan(ctx, steps, leakage, threshold if aggregate else 0, [p for p, _ in protected])



def _psi_equal_columns(join: InnerJoin, order, ctx: PlacementContext) -> dict[str, list[exp.Column]]:
    """Columns equal on every row the PSI joins keep: both keys of an inner join edge (`order`), of one
    declared type (so the SPU encodes them alike), neither on a LEFT JOIN's NULL side.
    Column key -> the columns of other parties it equals."""
    spanning = {frozenset(pair) for *_, keys_i, keys_j in order for pair in zip(keys_i, keys_j)}
    equal: dict[str, list[exp.Column]] = {}
    for conjunct in join.conjuncts:
        sides = (conjunct.left, conjunct.right) if isinstance(conjunct, exp.EQ) else ()
        if not sides or not all(isinstance(c, exp.Column) and c.table for c in sides):
            continue
        a, b = sides
        if ctx.parties[a.table] == ctx.parties[b.table] or {a.table, b.table} & set(join.outer) \
                or frozenset((column_key(a), column_key(b))) not in spanning:
            continue
        if ctx.column_type(a.table, a.name) is None or ctx.column_type(a.table, a.name) != \
                ctx.column_type(b.table, b.name):
            continue
        equal.setdefault(column_key(a), []).append(b)
        equal.setdefault(column_key(b), []).append(a)
    return equal


def _group_keys_at_one_party(project: Project, aggregate, sort, equal: dict[str, list[exp.Column]],
                             ctx: PlacementContext):
    """(project, aggregate, sort) with each GROUP BY column of another party replaced, everywhere, by a
    column of one party that the PSI made equal to it on every joined row: with all its keys at one
    party, that party numbers the groups and the SPU sorts one narrow code instead of every key's
    limbs. Unchanged unless every key is a column that can be brought to one party. The column control
    and grants were checked on the query as written; the values revealed are the same."""
    if aggregate is None or not aggregate.group_by or not all(isinstance(g, exp.Column) and g.table
                                                              for g in aggregate.group_by):
        return project, aggregate, sort
    keys = list(aggregate.group_by)
    owners = {ctx.parties[c.table] for g in keys for c in [g, *equal.get(column_key(g), [])]}
    for target in sorted(owners, key=lambda p: (-sum(ctx.parties[g.table] == p for g in keys), p)):
        swap = {}
        for g in keys:
            if ctx.parties[g.table] != target:
                same = [c for c in equal.get(column_key(g), []) if ctx.parties[c.table] == target]
                if not same:
                    break
                swap[column_key(g)] = same[0]
        else:
            if not swap:
                return project, aggregate, sort
            return _with_columns(project, aggregate, sort, swap)
    return project, aggregate, sort


def _with_columns(project: Project, aggregate, sort, swap: dict[str, exp.Column]):
    """(project, aggregate, sort) with the columns of `swap` (column key -> column) replaced."""
    def rewrite(e: exp.Expression) -> exp.Expression:
        return e.copy().transform(
            lambda n: swap[column_key(n)].copy() if isinstance(n, exp.Column) and n.table
            and column_key(n) in swap else n)

    project = replace(project, expressions=tuple(rewrite(e) for e in project.expressions))
    aggregate = replace(aggregate, group_by=tuple(rewrite(g) for g in aggregate.group_by),
                        having=rewrite(aggregate.having) if aggregate.having is not None else None)
    if sort is not None:
        sort = replace(sort, order=tuple(rewrite(o) for o in sort.order))
    return project, aggregate, sort

UNBALANCED_RATIO = 64  # published sizes this far apart (and the large one >= UNBALANCED_MIN) -> unbalanced PSI
UNBALANCED_MIN = 1 << 16


def _psi_protocol(a: str, b: str, ctx: PlacementContext, leakage: list) -> tuple[str, str]:
    """The PSI between parties a and b: the federation's, or the unbalanced ECDH-PSI when one side's
    published size dwarfs the other's (its blinded set is then prepared once and reused)."""
    if a == b:
        return ctx.psi, ""
    sizes = {p: ctx.rows_of(p) for p in (a, b)}
    if None in sizes.values():
        return ctx.psi, ""
    large, small = (a, b) if sizes[a] >= sizes[b] else (b, a)
    if sizes[large] < UNBALANCED_MIN or sizes[large] < UNBALANCED_RATIO * sizes[small]:
        return ctx.psi, ""
    leakage.append((large, f"which of {small}'s query keys recur across queries while its PSI key is kept "
                           "(unbalanced PSI: keys and the prepared set rotate daily or every 1,000 queries)"))
    return "unbalanced", large


def _secret_keys(join: InnerJoin, ctx: PlacementContext) -> tuple[exp.Expression, ...]:
    """The join conditions whose keys one party of their own PSI edge may not learn the intersection of.

    A PSI edge runs between the two parties owning its keys (`EquiJoin`: the left party's base rows
    against the right party's), so only they see key values: SCQL's rule, PLAINTEXT_AFTER_JOIN makes a
    key plain to the join partner. Other parties of the chain learn only which rows survive (listed
    under the join's leakage; their filters are checked by `Usage.check_cross_party`)."""
    hidden = []
    for conjunct in join.conjuncts:
        if not isinstance(conjunct, exp.EQ) or len(aliases_of(conjunct)) < 2:
            continue
        refs = [r for c in conjunct.find_all(exp.Column) for r in ctx.usage.refs(c)[0]]
        viewers = ctx.usage.edge_parties(conjunct)
        if any(v != r.party and not ctx.usage.grants.allows(r, v, Use.JOIN_KEY) for r in refs for v in viewers):
            hidden.append(conjunct)
    return tuple(hidden)


def _place_secret_join(join, steps, edges, hidden, residual, limit, sort, project, aggregate, ctx) -> PhysicalPlan:
    """A join whose key is not granted PLAINTEXT_AFTER_JOIN: both parties secret-share their rows and
    keys, the SPU joins them obliviously (`executors/spu/join.py`), and the rest of the query runs on
    the joined shares. Nobody learns which rows matched; the parties learn each other's row counts."""
    members = [q.party for q in join.inputs]
    if len(join.inputs) != 2 or len(set(members)) != 2 or len(edges) != 1 or join.memberships or join.outer:
        raise NotSupportedError(
            f"the join on {hidden[0].sql()} must keep its intersection secret (its key is not granted "
            "PLAINTEXT_AFTER_JOIN to every party of the join); such oblivious joins are supported so far as one "
            "inner equi-join of two parties' tables, without IN / EXISTS subqueries or outer joins")
    if ctx.dp is not None or ctx.masks:
        raise NotSupportedError("an oblivious join with differential privacy or masking is not supported yet")
    ((_, pairs),) = edges.items()
    if not any(_known_unique(q, keys, ctx) for q, keys in zip(join.inputs, zip(*pairs))):
        raise NotSupportedError(
            f"the oblivious join on {hidden[0].sql()} needs one side's join keys unique at plan time (a GROUP BY "
            "or DISTINCT of that side, or a key its party declares unique in [parties.NAME.unique])")
    secure = _secure_stage_plan(residual, project, aggregate, sort, limit, ctx, None, union_parties=tuple(members),
                                protected=_protected_rows(join, aggregate, ctx))
    ctx.usage.check_cross_party(join, tuple(members), aggregate, project, sort, (*residual, *join.conjuncts))
    threshold = ctx.min_group_size if aggregate is not None else 0
    sides = ((members[0], "r0", tuple(a for a, _ in pairs)), (members[1], "r1", tuple(b for _, b in pairs)))
    out = "oblivious_join_spu_out"
    steps.append(SecureStage("", out=out, issuer=ctx.issuer, threshold=threshold, secret_join=sides, **secure))
    leakage = [(p, f"{q}'s number of rows entering the join and whether its join keys are unique; not which rows "
                   "match (an oblivious join on secret shares)") for p, q in (members, members[::-1])]
    leakage += [(p, "the number of rows (or groups) in the result, from the SPU's compaction") for p in members]
    steps.append(_finish_outputs(project, ctx.issuer, out))
    leakage.append((ctx.issuer, "the query result"))
    return _plan(ctx, steps, leakage, threshold, [p for p in members if p != ctx.issuer])


def _known_unique(query, keys: tuple[str, ...], ctx: PlacementContext) -> bool:
    """Whether a join input's output columns `keys` are unique at plan time (`tree.unique_on`: GROUP BY
    keys, DISTINCT, a declared key), so `spu.join.oblivious_pk_join` cannot meet repeats on both sides
    except where a party's data breaks its declaration (a DataError at run time)."""
    tree = _party_tree(query.party, query.select, ctx.usage.catalog)
    return tree is not None and unique_on(tree, tuple(quoted(k) for k in keys), ctx.usage.catalog) is not None


@dataclass
class Assignment:
    """Which party computes each output (o0, o1, ... and hidden sort keys h0, ...)."""

    by_party: dict[str, list[tuple[str, exp.Expression]]]
    constants: dict[str, exp.Expression]
    group_party: str | None
    having: exp.Expression | None
    having_party: str | None
    he_party: str | None = None  # the party whose values the group party sums under HE
    he_items: tuple[tuple[str, exp.Expression], ...] = ()  # (output, SUM/AVG/COUNT over he_party's data)

    @property
    def parties(self) -> list[str]:
        return list(self.by_party) + ([self.he_party] if self.he_party else [])


def _join_rows(join: InnerJoin, ctx) -> int | None:
    """The cost model's row estimate for the join's output, from the published sizes and the filters the
    query states at each party (`cost.expected_rows`): nothing a party has not published."""
    local = [b for q in join.inputs for b in (q.branches if isinstance(q, UnionScan) else (q,))]
    filters = [q.select.args["where"].this for q in local
               if isinstance(q, LocalQuery) and q.select.args.get("where") is not None]
    sizes = [sum(ctx.rows_of(b.party) or 0 for b in q.branches) or None if isinstance(q, UnionScan)
             else ctx.rows_of(q.party) if isinstance(q, LocalQuery) else None for q in join.inputs]
    return expected_rows(sizes, filters)


def _assign_outputs(project, aggregate, sort, default, ctx, rows: int | None = None) -> Assignment:
    parties = ctx.parties
    items = [(f"o{i}", e.this if isinstance(e, exp.Alias) else e) for i, e in enumerate(project.expressions)]
    items += [(name, expr) for name, expr in _hidden_sort_keys(project, sort)]
    assigned: dict[str, list[tuple[str, exp.Expression]]] = {}
    constants: dict[str, exp.Expression] = {}
    group_party = None
    if aggregate is not None and aggregate.group_by:
        group_parties = frozenset().union(*(_party_set(g, parties) for g in aggregate.group_by))
        if len(group_parties) > 1:
            raise NotSupportedError(
                f"GROUP BY keys from several parties ({', '.join(sorted(group_parties))}) need the SPU or an "
                "enclave, which are not implemented yet"
            )
        group_party = next(iter(group_parties), default)
    he_party, he_items = None, []
    use_he = _class_4_on_he(items, group_party, aggregate, ctx, rows)
    for name, expression in items:
        owners = _party_set(expression, parties)
        if (use_he and group_party is not None and owners and owners != {group_party}
                and _he_aggregate(expression, parties)):
            if he_party not in (None, *owners):
                raise NotSupportedError("aggregated values from several parties under one GROUP BY need the SPU")
            if ctx.dp is not None or ctx.masks:
                raise NotSupportedError("HE group sums with differential privacy or masking are not supported yet")
            he_party = next(iter(owners))
            he_items.append((name, expression))
            continue
        if len(owners) > 1:
            raise NotSupportedError(
                f"expression {expression.sql()!r} combines columns of {', '.join(sorted(owners))}; "
                "cross-party expressions need the SPU, which is not implemented yet"
            )
        if group_party is not None:
            if owners and owners != {group_party}:
                raise NotSupportedError(
                    f"GROUP BY keys are at {group_party} but {expression.sql()!r} uses "
                    f"{next(iter(owners))}'s data: group keys at one party with values at another need HE or "
                    "the SPU, which are not implemented yet"
                )
            assigned.setdefault(group_party, []).append((name, expression))
        elif owners:
            assigned.setdefault(next(iter(owners)), []).append((name, expression))
        elif aggregate is not None and aggregates_in(expression):
            assigned.setdefault(default, []).append((name, expression))
        else:
            constants[name] = expression
    having = aggregate.having if aggregate is not None else None
    having_party = None
    if having is not None:
        owners = _party_set(having, parties)
        if len(owners) > 1 or (group_party and owners and owners != {group_party}):
            raise NotSupportedError(f"HAVING {having.sql()!r} combines several parties' data; needs the SPU")
        having_party = group_party or next(iter(owners), default)
        assigned.setdefault(having_party, [])
    if not assigned:  # e.g. SELECT DISTINCT 1 FROM a JOIN b: someone must still count the rows
        assigned[default] = []
    return Assignment(assigned, constants, group_party, having, having_party, he_party, tuple(he_items))


def _secure_stage_plan(residual, project, aggregate, sort, limit, ctx, local_error, union_parties=(),
                       protected=()) -> dict:
    """The SPU stage for what no single party may compute: cross-party predicates and expressions,
    group keys from several parties, values aggregated away from their group keys, secret sorts."""
    if ctx.dp is not None or ctx.masks:
        raise NotSupportedError(f"{local_error}; with differential privacy or masking the SPU is not supported yet")
    items = [(f"o{i}", e.this if isinstance(e, exp.Alias) else e) for i, e in enumerate(project.expressions)]
    items += list(_hidden_sort_keys(project, sort))
    names = {e.alias_or_name: i for i, e in enumerate(project.expressions)}
    by_sql = {expr.sql(): i for i, (_, expr) in enumerate(items)}
    order = []
    for i, ordered in enumerate(sort.order if sort else []):
        key = ordered.this
        if isinstance(key, exp.Column) and not key.table and key.name in names:
            index = names[key.name]
        else:
            index = by_sql[key.sql()] if key.sql() in by_sql else next(
                k for k, (n, _) in enumerate(items) if n == f"h{i}")
        order.append((index, bool(ordered.args.get("desc")), bool(ordered.args.get("nulls_first"))))
    used = [*residual, *(e for _, e in items)]
    group_by = _distinct_keys(project, aggregate, items)
    if aggregate is not None:
        group_by = aggregate.group_by
        used += ([aggregate.having] if aggregate.having is not None else [])
    used += list(group_by)
    inputs = {}
    for expression in used:
        for column in expression.find_all(exp.Column):
            if column.table:
                _check_spu_type(column, ctx)
                inputs[column_key(column)] = ctx.parties[column.table]
    inputs.update({column: party for party, column in protected})  # the threshold counts their distinct values
    compute = tuple(sorted(set(inputs.values()))) if not union_parties else union_parties
    if len(compute) < 2:
        raise local_error or NotSupportedError("a secure stage needs two compute parties")
    limit_value = offset_value = None
    if limit is not None:
        for node, name in ((limit.limit, "LIMIT"), (limit.offset, "OFFSET")):
            if node is not None and not (isinstance(node, exp.Literal) and node.is_int):
                raise NotSupportedError(f"{name} must be a whole number on the SPU")
        limit_value = int(limit.limit.this) if limit.limit is not None else None
        offset_value = int(limit.offset.this) if limit.offset is not None else 0
    _check_literals(used)
    _refuse_before_running([e for _, e in items] + ([aggregate.having] if aggregate and aggregate.having else []),
                           grouped=bool(group_by))
    _check_spu_rules(used, ctx)
    from sqlsecure.executors.spu.approximation import refuse_approximate_keys  # late: no cycle
    refuse_approximate_keys(group_by, "a GROUP BY or DISTINCT key")
    refuse_approximate_keys([items[i][1] for i, _, _ in order] if limit is not None else [], "an ORDER BY key under LIMIT")
    sql = lambda e: to_piece(e).sql(dialect="duckdb")  # noqa: E731
    return dict(
        compute=compute, inputs=tuple((p, c) for c, p in inputs.items()),
        filters=tuple(sql(c) for c in residual), aggregate=aggregate is not None or bool(group_by),
        group_by=tuple(sql(g) for g in group_by),
        having=sql(aggregate.having) if aggregate is not None and aggregate.having is not None else None,
        outputs=tuple((n, sql(e)) for n, e in items), reveal=tuple(range(len(project.expressions))),
        order=tuple(order), limit=limit_value, offset=offset_value or 0, kinds=_result_kinds(project),
        distinct_rows=tuple(column for _, column in protected))


KIND_OF_TYPE = {'"NULL"': "any", "BOOLEAN": "bool", "DATE": "date", "TIMESTAMP": "timestamp", "VARCHAR": "text",
                "DOUBLE": "fixed",
                "FLOAT": "fixed", "REAL": "fixed", "DECIMAL": "fixed", **{t: "int" for t in (
                    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                    "UBIGINT", "UHUGEINT")}}


def _result_kinds(project: Project) -> tuple[str, ...]:
    """The SPU kind of each output, from DuckDB's type of it; a type the SPU cannot produce is refused
    here, so a secure result is never of another type than DuckDB's."""
    kinds = []
    for expression, dtype in zip(project.expressions, project.types):
        kind = KIND_OF_TYPE.get(dtype.split("(")[0].upper())
        if kind is None:
            raise NotSupportedError(f"{expression.sql(dialect='duckdb')} is of type {dtype}, which secure "
                                    "computation does not produce; compute it at one party or CAST it")
        kinds.append(kind)
    return tuple(kinds)


def _refuse_before_running(expressions, grouped: bool) -> None:
    """What the SPU stage cannot compute across expressions, refused at plan time rather than when run
    (each expression on its own is checked by `_check_spu_rules`): windows over different ORDER BYs,
    COUNT(DISTINCT x) with GROUP BY."""
    windows = [w for e in expressions for w in e.find_all(exp.Window)]
    for window in windows:
        if window.args.get("order") != windows[0].args.get("order"):
            raise NotSupportedError(f"{window.sql(dialect='duckdb')}: secure windows share one common "
                                    "OVER (ORDER BY ...)")
    for expression in expressions:
        for node in expression.find_all(exp.Distinct):
            if grouped and isinstance(node.parent, exp.Count):
                raise NotSupportedError(f"{node.parent.sql(dialect='duckdb')} in secure computation: only an "
                                        "ungrouped COUNT(DISTINCT x) is supported")


def _check_spu_rules(expressions, ctx) -> None:
    """Refuse at plan time every expression the SPU stage does not evaluate, by the stage's own table
    (executors/spu/stage.SPU_RULES), so check, EXPLAIN and execution agree."""
    from sqlsecure.executors.spu.stage import spu_refusal  # the stage's own rule (imported late: no cycle)

    def kind_of(column: exp.Column) -> str | None:
        return KIND_OF_TYPE.get((ctx.column_type(column.table, column.name) or "").split("(")[0].upper())

    for expression in expressions:
        why = spu_refusal(expression, kind_of)
        if why is not None:
            raise NotSupportedError(why)


def _check_literals(expressions) -> None:
    """Every number in a secure stage must fit the SPU's ring: a DataError names any that does not."""
    from sqlsecure.executors.spu.stage import literal_value  # the stage's own rule (imported late: no cycle)

    for expression in expressions:
        for literal in expression.find_all(exp.Literal):
            literal_value(literal)


def _distinct_keys(project: Project, aggregate: Aggregate | None, items) -> tuple[exp.Expression, ...]:
    """SELECT DISTINCT on the SPU: the outputs become the group keys of a grouping without aggregates
    (no group threshold: DISTINCT reveals no more than the rows themselves). Over an aggregate,
    DISTINCT is a no-op only when every group key is an output; other shapes are refused."""
    if not project.distinct:
        return ()
    outputs = [e for name, e in items if name.startswith("o")]
    if any(e.find(exp.Window) for e in outputs):
        raise NotSupportedError("SELECT DISTINCT with window functions across parties is not supported")
    if len(outputs) != len(items):
        raise PlanError("for SELECT DISTINCT, ORDER BY expressions must appear in the select list")
    if aggregate is None:
        return tuple(e.copy() for e in outputs)
    shown = {e.sql() for e in outputs}
    if any(g.sql() not in shown for g in aggregate.group_by):
        raise NotSupportedError("SELECT DISTINCT over groups whose keys are not all selected is not supported on "
                                "the SPU; select every GROUP BY key or drop DISTINCT")
    return ()


# The column types an owner can encode for the SPU: those of a result kind, but NULL (no column has it)
# and UHUGEINT (beyond the ring even when small: executors/spu/values.kind_of has no such input).
SPU_TYPES = frozenset(KIND_OF_TYPE) - {'"NULL"', "UHUGEINT"}


def _check_spu_type(column: exp.Column, ctx) -> None:
    """Refuse at plan time a column whose type the SPU cannot encode (executors/spu/values.kind_of)."""
    dtype = (ctx.column_type(column.table, column.name) or "").split("(")[0].upper()
    if dtype and dtype not in SPU_TYPES:
        raise NotSupportedError(f"{column.sql()} of type {dtype} cannot enter secure computation yet (the SPU takes "
                                "integers, decimals, floats, dates, TIMESTAMP without time zone and text); use it "
                                "where its owner alone computes")


ENCLAVE_KINDS = {"int": ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "BOOLEAN"),
                 "fixed": ("DECIMAL", "DOUBLE", "FLOAT", "REAL"), "text": ("VARCHAR",), "date": ("DATE",),
                 "timestamp": ("TIMESTAMP",)}
ENCLAVE_AGGREGATES = {exp.Count: "count", exp.Sum: "sum", exp.Avg: "avg", exp.Min: "min", exp.Max: "max"}


def _enclave_kind(column: exp.Column, ctx) -> str:
    """The enclave's kind of a column; a DECIMAL(p, s) is `decimal.<s>`: exact int64 of x * 10^s."""
    full = ctx.column_type(column.table, column.name) or ""
    dtype = full.split("(")[0].upper()
    if dtype == "DECIMAL":
        return f"decimal.{int(full.split(',')[1].rstrip(') ')) if ',' in full else 0}"
    for kind, names in ENCLAVE_KINDS.items():
        if dtype in names:
            return kind
    raise NotSupportedError(enclave_type_refusal(column.sql(), dtype))


def _enclave_output_kind(func: str, kind: str) -> str:
    """The kind of an enclave aggregate's result: COUNT and MIN/MAX of integers are integers, SUM / MIN /
    MAX of a decimal its exact decimal, AVG of a decimal the average of x * 10^s (`scaled.<s>`), other
    AVGs and floats fixed (float64)."""
    if func == "count" or (kind == "int" and func in ("min", "max")):
        return "int"
    if func in ("sum", "avg") and kind in ("text", "date", "timestamp"):
        raise NotSupportedError(f"{func.upper()} of a {kind} column has no enclave rule; use MIN/MAX/COUNT, or the SPU")
    if kind.startswith("decimal."):
        return f"scaled.{kind.split('.')[1]}" if func == "avg" else kind
    return "fixed" if func == "avg" or kind == "fixed" else kind


def _enclave_stage_plan(residual, project, aggregate, sort, limit, ctx, rel, protected=()) -> EnclaveStage:
    """The same work on the enclave, when it is only grouping, aggregating plain columns and sorting.

    Cost model: an enclave sorts in the clear behind its access-pattern-oblivious network
    (n log^2 n compare-exchanges of plain numbers), while the SPU's sort and group-by cost
    rounds of secure comparisons; so grouped and sorted work goes to the enclave when the
    federation has one, and arithmetic over several parties (which it cannot express) stays on the SPU."""
    if aggregate is not None and (aggregate.having is not None or project.distinct):
        raise NotSupportedError("HAVING and DISTINCT over aggregates are for the SPU")
    if any(e.find(exp.Window) for e in project.expressions):
        raise NotSupportedError("window functions are for the SPU")
    inputs: dict[str, tuple[str, str, str, str]] = {}

    counts: set[str] = set()  # the outputs that are COUNTs
    computed: dict[str, tuple[str, str, str]] = {}  # DuckDB SQL -> (name, SQL, kind), evaluated in the enclave
    typed: dict[str, tuple[str, str, str]] = {}  # input -> (input, kind, SQL type), what `computed` reads

    def plain_input(column: exp.Column) -> tuple[str, str]:
        if not isinstance(column, exp.Column) or not column.table:
            raise NotSupportedError(f"{column.sql()}: the enclave takes columns of the query's tables")
        kind = _enclave_kind(column, ctx)
        key = column_key(column)
        inputs.setdefault(key, (ctx.parties[column.table], key, key, kind))
        return key, kind

    def column_input(e: exp.Expression) -> tuple[str, str]:
        """A plain column, or a scalar expression the enclave evaluates (a computed column)."""
        if isinstance(e, exp.Column):
            return plain_input(e)
        sql, reads = _enclave_expression(e, plain_input, ctx)
        if sql not in computed:
            typed.update(reads)
            dtype = result_type(sql, list(reads.values()))
            kind = kind_of_type(dtype)
            if kind is None:
                raise NotSupportedError(f"{e.sql(dialect='duckdb')} is {dtype}: the enclave carries numbers, "
                                        "booleans, dates and timestamps out of an expression")
            computed[sql] = (f"e{len(computed)}", sql, kind)
        name, _, kind = computed[sql]
        return name, kind

    def names_of(key: str, kind: str) -> list[str]:
        flag = [] if key in counts else [f"{key}{NULL_FLAG}"]  # a COUNT is never NULL: it has no flag
        return flag + [f"{key}{ALL_LIMBS}" if kind == "text" else key]  # text: every limb, at its width class

    outputs, order, aggregates, group_keys, select = [], [], [], [], []
    items = [(f"o{i}", e.this if isinstance(e, exp.Alias) else e) for i, e in enumerate(project.expressions)]
    by_name = {e.alias_or_name: i for i, e in enumerate(project.expressions)}
    if aggregate is not None:
        keys = {}
        for g in aggregate.group_by:
            key, kind = column_input(g)
            keys[g.sql()] = (key, kind)
            group_keys += names_of(key, kind)
        for name, e in items:
            if e.sql() in keys:
                key, kind = keys[e.sql()]
                outputs.append((name, key, kind))
            elif type(e) in ENCLAVE_AGGREGATES and not isinstance(e.this, exp.Distinct):
                func = ENCLAVE_AGGREGATES[type(e)]
                if func == "count":
                    counts.add(name)
                if isinstance(e.this, exp.Star):
                    aggregates.append(("count", None, name))
                    outputs.append((name, name, "int"))
                    continue
                key, kind = column_input(e.this)
                aggregates.append((func, f"{key}{ALL_LIMBS}" if kind == "text" else key, name))
                outputs.append((name, name, _enclave_output_kind(func, kind)))
            else:
                raise NotSupportedError(f"{e.sql()}: the enclave computes group keys and COUNT/SUM/AVG/MIN/MAX")
        result_columns = {name: (column, kind) for name, column, kind in outputs}
    else:  # SELECT DISTINCT: every output a group key
        for name, e in items:
            key, kind = column_input(e)
            outputs.append((name, key, kind))
            (group_keys if project.distinct else select).extend(names_of(key, kind))
        result_columns = {name: (column, kind) for name, column, kind in outputs}
    for ordered in sort.order if sort else []:
        key = ordered.this
        desc = bool(ordered.args.get("desc"))
        if isinstance(key, exp.Column) and not key.table and key.name in by_name:
            column, kind = result_columns[f"o{by_name[key.name]}"]
        elif key.sql() in {e.sql() for _, e in items}:
            column, kind = result_columns[next(n for n, e in items if e.sql() == key.sql())]
        elif aggregate is None and not project.distinct:
            column, kind = column_input(key)
        else:
            raise NotSupportedError(f"ORDER BY {key.sql()}: the enclave sorts by output columns")
        nulls_first = bool(ordered.args.get("nulls_first"))  # DuckDB's default: NULLS LAST either way
        order += [(c, nulls_first if c.endswith(NULL_FLAG) else desc) for c in names_of(column, kind)]
    limit_value = None
    if limit is not None:
        if limit.offset is not None or not (isinstance(limit.limit, exp.Literal) and limit.limit.is_int):
            raise NotSupportedError("OFFSET, or a LIMIT that is not a whole number, is for the SPU")
        limit_value = int(limit.limit.this)
    where = column_input(exp.and_(*residual))[0] if residual else None  # cross-party WHERE: TRUE rows count
    for party, column in protected:  # the group threshold counts each protected owner's distinct rows
        inputs.setdefault(column, (party, column, column, "int"))
    program = EnclaveProgram(tuple(group_keys), tuple(aggregates), tuple(order), limit_value,
                             max(ctx.min_group_size, 1) if aggregate is not None else 1,
                             None if aggregate is not None or project.distinct else tuple(select),
                             tuple(c for _, c in protected),
                             tuple(computed.values()), tuple(typed.values()), where)
    return EnclaveStage(rel, tuple(inputs.values()), json.dumps(program.to_json(), sort_keys=True),
                        tuple(outputs), ctx.issuer, f"{rel}_tee_out", measurements=ctx.measurements)


def _parties_read(project, aggregate, sort, ctx) -> set[str]:
    """The parties whose columns the outputs, group keys and ORDER BY read."""
    used = [*project.expressions, *(aggregate.group_by if aggregate is not None else ()),
            *(sort.order if sort is not None else ())]
    return {ctx.parties[c.table] for e in used for c in e.find_all(exp.Column) if c.table in ctx.parties}


def _enclave_expression(e: exp.Expression, plain_input, ctx) -> tuple[str, dict]:
    """`e` as DuckDB SQL over the enclave's input names (GEODIST in its standard-SQL form), and the
    inputs it reads {name: (name, kind, SQL type)}; NotSupportedError naming a part without an enclave rule."""
    why = enclave_refusal(e)
    if why is not None:
        raise NotSupportedError(why)
    e = e.transform(lambda n: great_circle(n.expressions) if is_geodist(n) else n)
    reads = {}
    for column in e.find_all(exp.Column):
        key, kind = plain_input(column)
        reads[key] = (key, kind, ctx.column_type(column.table, column.name))
    renamed = e.transform(lambda n: exp.column(column_key(n), quoted=True) if isinstance(n, exp.Column) else n)
    return renamed.sql(dialect="duckdb"), reads


def _class_4_on_he(items, group_party, aggregate, ctx, rows: int | None = None) -> bool:
    """Whether class 4 goes to HE: by the federation's choice, or else by the cost model, on `rows` (the
    join's estimated output; default: the largest published size of the parties summing and grouping)."""
    if ctx.group_sums != "auto" or group_party is None:
        return ctx.group_sums == "he"
    values = [e for _, e in items if _party_set(e, ctx.parties) - {group_party} and _he_aggregate(e, ctx.parties)]
    if not values or ctx.dp is not None or ctx.masks:
        return False  # nothing for HE to sum, or what HE group sums do not support yet
    owners = frozenset().union(*(_party_set(e, ctx.parties) for e in values)) | {group_party}
    sizes = [n for n in (ctx.rows_of(p) for p in owners) if n is not None]
    limbs = [_key_limbs(key, ctx) for key in aggregate.group_by]
    coded = all(isinstance(key, exp.Column) for key in aggregate.group_by)  # the group party numbers the groups
    arguments = len({e.this.sql(dialect="duckdb") for e in values})  # HE sends each distinct column once
    priced = estimate(rows if rows is not None else max(sizes, default=1 << 14), len(values),
                      1 if coded else sum(limbs), ctx.link, key_bits=ctx.he_key_bits, arguments=arguments,
                      carried=sum(1 + n for n in limbs) if coded else 0, groups=_groups_bound(aggregate.group_by, ctx))
    ctx.class_4 = choose(priced, _class_4_incapable(items, group_party, aggregate, ctx))
    return ctx.class_4.engine == "he"


INTEGER_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT")


def _groups_bound(keys, ctx) -> int | None:
    """At most how many groups integer GROUP BY columns form, from their published magnitude classes (|v| <
    2^M: 2^(M+1) - 1 values, and one more for NULL); None when a key has no class."""
    bound = 1
    for key in keys:
        dtype = (ctx.column_type(key.table, key.name) or "").split("(")[0].upper() \
            if isinstance(key, exp.Column) else ""
        magnitude = ctx.magnitude_of(key.table, key.name) if dtype in INTEGER_TYPES else None
        if magnitude is None:
            return None
        bound *= 2 ** (magnitude + 1)
    return bound


def _key_limbs(key: exp.Expression, ctx) -> int:
    """The limbs the SPU holds a GROUP BY key in: 4 for text (an assumed width), else 1."""
    dtype = ctx.column_type(key.table, key.name) if isinstance(key, exp.Column) else None
    return 4 if dtype is not None and dtype.upper().startswith(("VARCHAR", "TEXT", "STRING")) else 1


def _class_4_incapable(items, group_party, aggregate, ctx) -> dict[str, str]:
    """Why HE or the SPU cannot run this class-4 query ({} when both can): the SPU evaluates every output,
    key and HAVING on shares; HE sums only SUM / AVG / COUNT of one other party's values, with HAVING at the
    group party."""
    from sqlsecure.executors.spu.stage import spu_cannot_evaluate  # the stage's own table (late: no cycle)

    cannot = {}
    having = [aggregate.having] if aggregate.having is not None else []
    for expression in [*(e for _, e in items), *aggregate.group_by, *having]:
        part = spu_cannot_evaluate(expression)
        if part is not None:
            cannot["spu"] = f"it cannot evaluate {part.sql(dialect='duckdb')} on shares"
            break
    foreign = [e for _, e in items if _party_set(e, ctx.parties) - {group_party}]
    if any(not _he_aggregate(e, ctx.parties) for e in foreign) or \
            any(_party_set(h, ctx.parties) - {group_party} for h in having):
        cannot["he"] = "it sums only SUM, AVG and COUNT of one other party's values"
    elif any(not _he_number(c, ctx) for e in foreign for c in e.find_all(exp.Column)):
        cannot["he"] = "it sums only numbers (integers, decimals, floats, booleans)"
    return cannot


HE_TYPES = (*INTEGER_TYPES, "BOOLEAN", "DECIMAL", "DOUBLE", "FLOAT", "REAL")  # what executors/heu/group_by.py
# encodes as integers


def _he_number(column: exp.Column, ctx) -> bool:
    """Whether HE can sum values of this column (its catalog type is a number HE encodes)."""
    dtype = (ctx.column_type(column.table, column.name) or "").split("(")[0].upper()
    return dtype in HE_TYPES


def _he_aggregate(expression: exp.Expression, parties) -> bool:
    """SUM / AVG / COUNT (not DISTINCT) of an expression over exactly one party's columns."""
    return (isinstance(expression, (exp.Sum, exp.Avg, exp.Count)) and not isinstance(expression.this, exp.Distinct)
            and len(_party_set(expression.this, parties)) == 1)


def _he_steps(steps, rel, assignment: Assignment, aggregate, threshold, ctx, protected=()) -> tuple[list, dict]:
    """Class 4 on HEU: the group party's own outputs and the HE sums of the value party's. The
    threshold: the group party's distinct rows ("__n"; its rows when it is the issuer) and, for a
    protected value party, enough rows ("__rows") for its most repeated row (`HEGroupBy.value_rows`)."""
    keys = [to_piece(g) for g in aggregate.group_by]
    code = exp.Sub(this=exp.Window(this=exp.Anonymous(this="DENSE_RANK"), order=exp.Order(expressions=[
        exp.Ordered(this=k.copy()) for k in keys])), expression=exp.Literal.number(1))
    local = assignment.by_party.get(assignment.group_party, [])
    groups = exp.Select().from_("piece").group_by(*[k.copy() for k in keys])
    keep = to_piece(assignment.having) if assignment.having is not None else exp.true()
    own = [c.this for c in _threshold_having(assignment.group_party, protected, max(threshold, 1))]
    distinct = exp.Least(this=own[0], expressions=own[1:]) if len(own) > 1 else own[0] if own else None
    groups.set("expressions", [exp.alias_(to_piece(e), n, quoted=True) for n, e in local] + [
        exp.alias_(distinct or exp.Count(this=exp.Star()), "__n", quoted=True),
        exp.alias_(exp.Count(this=exp.Star()), "__rows", quoted=True), exp.alias_(keep, "__keep", quoted=True),
        exp.alias_(code.copy(), "__code", quoted=True)])
    codes = exp.Select().from_("piece").select(exp.alias_(code, "__code", quoted=True)).order_by(
        exp.column("__row", quoted=True))
    arguments: dict[str, int] = {}
    sums = []
    for name, expression in assignment.he_items:
        argument = expression.this
        if isinstance(argument, exp.Star):  # COUNT(*) of the value party's rows: every row counts
            argument = exp.Literal.number(1)
        j = arguments.setdefault(to_piece(argument).sql(dialect="duckdb"), len(arguments))
        kind = {exp.Sum: "sum", exp.Avg: "avg", exp.Count: "count"}[type(expression)]
        sums.append((name, kind, j))
    values = exp.Select().from_("piece").order_by(exp.column("__row", quoted=True))
    values.set("expressions", [exp.alias_(exp.maybe_parse(sql, dialect="duckdb"), f"v{j}", quoted=True)
                               for sql, j in arguments.items()])
    out = f"{rel}_he_out"
    steps.append(HEGroupBy(rel, assignment.group_party, assignment.he_party, ctx.issuer,
                           groups.sql(dialect="duckdb"), codes.sql(dialect="duckdb"), values.sql(dialect="duckdb"),
                           tuple(n for n, _ in local), tuple(sums), threshold, ctx.he_key_bits, out,
                           tuple(c for p, c in protected if p == assignment.he_party)))
    finish_cols = {n: exp.column(n, quoted=True).sql(dialect="duckdb") for n, _ in local + list(assignment.he_items)}
    for name, expression in assignment.constants.items():
        finish_cols[name] = expression.sql(dialect="duckdb")
    return [(ctx.issuer, out)], finish_cols


def _output_steps(steps, rel, assignment: Assignment, aggregate, threshold, ctx, protected=()):
    """Compute each party's outputs over its piece of the joined relation, and reveal them."""
    parts = []
    finish_cols: dict[str, str] = {}
    group_sqls = {g.sql() for g in aggregate.group_by} if aggregate is not None else set()
    for party, exprs in assignment.by_party.items():
        release = None
        outputs = exprs
        if ctx.dp is not None and exprs:
            exprs, release = ctx.dp.rewrite(exprs, group_sqls)
        select = exp.Select().from_("piece")
        columns = [exp.alias_(to_piece(e), n, quoted=True) for n, e in exprs]
        select.set("expressions", columns or [exp.alias_(exp.Literal.number(1), f"__kept_{party}", quoted=True)])
        if aggregate is None:
            select = select.order_by(exp.column("__row", quoted=True))
        else:
            if assignment.group_party is not None:
                select = select.group_by(*[to_piece(g) for g in aggregate.group_by])
            conds = []
            if assignment.having is not None and party == assignment.having_party:
                conds.append(to_piece(assignment.having))
            if threshold > 0:
                conds += _threshold_having(party, protected, threshold)
            if conds:
                select.set("having", exp.Having(this=exp.and_(*conds)))
        out = f"{rel}_{party}_out"
        steps.append(Compute(party, rel, select.sql(dialect="duckdb"), out))
        if release is not None:
            steps.append(Noise(party, out, release))
        masked = tuple((n, ctx.masks[int(n[1:])]) for n, _ in outputs if n.startswith("o") and int(n[1:]) in ctx.masks)
        if masked:
            steps.append(Mask(party, out, masked))
        steps.append(Reveal(party, out, ctx.issuer))
        parts.append((party, out))
        for name, _ in outputs:
            finish_cols[name] = exp.column(name, quoted=True).sql(dialect="duckdb")
    for name, expression in assignment.constants.items():
        finish_cols[name] = expression.sql(dialect="duckdb")
    return parts, finish_cols


def _hidden_sort_keys(project: Project, sort: Sort | None):
    if sort is None:
        return []
    names = {e.alias_or_name for e in project.expressions}
    inner = {(e.this if isinstance(e, exp.Alias) else e).sql() for e in project.expressions}
    hidden = []
    for i, ordered in enumerate(sort.order):
        key = ordered.this
        if isinstance(key, exp.Column) and not key.table and key.name in names:
            continue
        if key.sql() in inner:
            continue
        hidden.append((f"h{i}", key))
    return hidden


def _finish_sql(finish_cols, outputs, project: Project, sort: Sort | None, limit: Limit | None) -> str:
    select = exp.Select().from_("result")
    select.set("expressions", [
        exp.alias_(as_duckdb_type(exp.maybe_parse(finish_cols[f"o{i}"], dialect="duckdb"), project, i), name,
                   quoted=True)
        for i, name in enumerate(outputs)
    ])
    if project.distinct:
        select.set("distinct", exp.Distinct())
    if sort is not None:
        by_inner = {(e.this if isinstance(e, exp.Alias) else e).sql(): f"o{i}" for i, e in enumerate(project.expressions)}
        names = {e.alias_or_name: f"o{i}" for i, e in enumerate(project.expressions)}
        order = []
        for i, ordered in enumerate(sort.order):
            key = ordered.this
            if isinstance(key, exp.Column) and not key.table and key.name in names:
                ref = names[key.name]
            elif key.sql() in by_inner:
                ref = by_inner[key.sql()]
            else:
                ref = f"h{i}"
            column = exp.maybe_parse(finish_cols.get(ref, exp.column(ref, quoted=True).sql()), dialect="duckdb")
            new = ordered.copy()
            new.set("this", column)
            order.append(new)
        select.set("order", exp.Order(expressions=order))
    if limit is not None:
        if limit.limit is not None:
            select.set("limit", exp.Limit(expression=limit.limit.copy()))
        if limit.offset is not None:
            select.set("offset", exp.Offset(expression=limit.offset.copy()))
    return select.sql(dialect="duckdb")
