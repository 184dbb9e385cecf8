"""Placement of the spine: turn the optimized logical plan into physical steps, checking the grants on the way.

The spine is one shape: joins -> filter -> project -> aggregate -> sort -> limit. A query reading one
party is pushed down to it whole (`place_local`); a UNION ALL of parties' branches runs in the enclave
when the federation has one that can express it (`_place_union_in_enclave`), else on the SPU (`place_spu`),
its WHERE evaluated by each branch's owner on its own rows (`owner_filtered`). A join of
parties' local queries is a tree of PSI joins (`place_psi`; an oblivious join on the SPU where a key's
intersection must stay secret); the rest of the spine then runs where it may: each output at the one
party holding its inputs (`place_local`; class 4's values summed on HE: `place_he`), else on the SPU's
secure stage (`place_spu`), or in the enclave (`place_enclave`) when the federation has one and can
express it. Shared by all: the group threshold (`place_threshold`) and the outputs, their types and the
issuer's finishing query (`place_outputs`). Any other shape raises NotSupportedError naming the feature.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from sqlglot import exp

from sqlsecure.errors import NotSupportedError, PlanError
from sqlsecure.planner.cost import Estimate, Link
from sqlsecure.planner.logical import Aggregate, Filter, InnerJoin, Limit, LocalQuery, Node, Project, Sort, UnionScan
from sqlsecure.planner.physical import EnclaveStage, PhysicalPlan, RunLocal, SecureStage
from sqlsecure.planner.place_enclave import enclave_stage_plan, enclave_steps, union_typed
from sqlsecure.planner.place_local import assign_outputs, compute_at_parties, place_pushdown
from sqlsecure.planner.place_outputs import finish_outputs, physical_plan
from sqlsecure.planner.place_psi import (join_edges, join_order, join_rows, psi_equal_columns, psi_join_steps,
                                        secret_keys)
from sqlsecure.planner.place_spu import group_keys_at_one_party, place_secret_join, secure_stage_plan, secure_steps
from sqlsecure.planner.place_threshold import check_rows_kept, local_threshold, protected_rows, rows_once
from sqlsecure.planner.reveal import DPContext
from sqlsecure.planner.usage import Usage
from sqlsecure.policy.grants import ColumnRef, Constraint

ENCLAVE_NO_UNION = "the enclave cannot run this query over a UNION ALL of several parties' rows"
FLAG = "__own"  # the column of each branch's flag (its owner's filters), as the translation names its flags


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
    # the spine's protected join inputs ((party, provenance column)) and those whose rows appear at most once
    # in the joined relation (`place_threshold.rows_once`): the SPU's group path and its price read both
    protected: tuple[tuple[str, str], ...] = ()
    rows_once: frozenset[str] = frozenset()
    psi: str = "kkrt"  # the PSI protocol of joins across parties: "kkrt" (OT-based) or "ecdh"
    set_operation: tuple[str, int] | None = None  # INTERSECT / EXCEPT as a union (planner/set_operations.py)


def _spine(plan: Node):
    """(limit, sort, project, aggregate, what is below them) of a spine-shaped plan; each may be None but
    the projection."""
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


def place(plan: Node, ctx: PlacementContext) -> PhysicalPlan:
    """The physical plan of an optimized logical plan of the spine's shape; NotSupportedError for others."""
    if isinstance(plan, LocalQuery):
        return place_pushdown(plan, ctx)
    limit, sort, project, aggregate, child = _spine(plan)
    if isinstance(child, UnionScan) or (isinstance(child, Filter) and isinstance(child.child, UnionScan)):
        if ctx.enclave:  # the enclave when it can run the stage (as over joins), else the SPU unless "always"
            try:
                return _place_union_in_enclave(child, limit, sort, project, aggregate, ctx)
            except NotSupportedError as why:
                if ctx.enclave == "always" or ctx.set_operation:  # INTERSECT / EXCEPT: the SPU's stage lacks them
                    raise NotSupportedError(f"{ENCLAVE_NO_UNION}: {why}") from None
        return _place_union(child, limit, sort, project, aggregate, ctx)
    return _place_cross_party(plan, ctx)


def _place_union(child, limit, sort, project, aggregate, ctx: PlacementContext) -> PhysicalPlan:
    """UNION ALL across parties: each branch pushed down, the rest on the SPU over the concatenation."""
    union = child.child if isinstance(child, Filter) else child
    threshold = ctx.min_group_size if aggregate is not None else 0
    protected = tuple(i for i, b in enumerate(union.branches) if b.party != ctx.issuer) if threshold else ()
    for i in protected:
        check_rows_kept(union.branches[i].party, union.branches[i].select, ctx.usage.catalog)
    members = tuple(sorted({b.party for b in union.branches}))
    union, filters, notes, filtering = owner_filtered(union, child.conjuncts if isinstance(child, Filter) else (),
                                                      set(members) | {ctx.issuer}, ctx)
    steps: list = [RunLocal(b.party, b.select.sql(dialect="duckdb"), f"u{i}") for i, b in enumerate(union.branches)]
    parties = {union.alias: None}
    plan_ctx = PlacementContext(ctx.issuer, {**ctx.parties, **parties}, ctx.usage, ctx.min_group_size,
                                ctx.column_type, ctx.dp, ctx.masks, ctx.he_key_bits)
    secure = secure_stage_plan(list(filters), project, aggregate, sort, limit, plan_ctx, None, members)
    out = "union_spu_out"
    steps.append(SecureStage("", out=out, issuer=ctx.issuer, threshold=threshold, branch_rows=protected,
                             union=tuple((b.party, f"u{i}") for i, b in enumerate(union.branches)), **secure))
    steps.append(finish_outputs(project, ctx.issuer, out))
    kept = f" (of {', '.join(filtering)}: the rows its WHERE keeps)" if filtering else ""
    leakage = [(p, f"the row count of every branch of the UNION ALL{kept}, and the result's size") for p in members]
    leakage.append((ctx.issuer, "the query result"))
    plan = physical_plan(ctx, steps, leakage, threshold, [union.branches[i].party for i in protected])
    return dataclasses.replace(plan, notes=plan.notes + notes)


def _place_union_in_enclave(child, limit, sort, project, aggregate, ctx: PlacementContext) -> PhysicalPlan:
    """UNION ALL across parties in the enclave: each branch pushed down (cast to the union's types), each
    party's branches sealed as one part, the WHERE and the rest of the spine run in the enclave over the
    stacked rows; the group threshold counts each protected (not the issuer's) branch's rows, as the SPU's."""
    if ctx.dp is not None or ctx.masks:
        raise NotSupportedError("differential privacy and masks over a UNION ALL have no enclave rule")
    union = union_typed(child.child if isinstance(child, Filter) else child, ctx)
    threshold = ctx.min_group_size if aggregate is not None else 0
    protected = tuple(i for i, b in enumerate(union.branches) if b.party != ctx.issuer) if threshold else ()
    for i in protected:
        check_rows_kept(union.branches[i].party, union.branches[i].select, ctx.usage.catalog)
    stage = enclave_stage_plan(list(child.conjuncts) if isinstance(child, Filter) else [], project, aggregate, sort,
                               limit, ctx, "union", union=union, branch_rows=protected,
                               set_operation=ctx.set_operation)
    steps: list = [RunLocal(b.party, b.select.sql(dialect="duckdb"), f"u{i}") for i, b in enumerate(union.branches)]
    more, learned = enclave_steps(stage, project, ctx.issuer)
    return physical_plan(ctx, steps + more, learned, threshold, [union.branches[i].party for i in protected])


# -- a filter over a UNION ALL, evaluated by each branch's owner ----------------------------------------
def owner_filtered(union: UnionScan, conjuncts, viewers: set[str], ctx: PlacementContext):
    """(the union, the conjuncts left to the SPU, EXPLAIN's notes, the parties that filter) with each
    conjunct over the union's own columns (no subquery) evaluated by each branch's owner on its own rows:
    simply as a WHERE where every column it reads is PLAINTEXT to the other `viewers` (`public_at_owner`:
    the rows kept may be known), else into one boolean column COALESCE(condition, FALSE) the SPU ANDs into
    the row's validity, as the translation's `owner_flags`. Every row is shared as before, the flag a secret
    share, and the columns only the conditions read are no longer shared."""
    own = [c for c in conjuncts if over_union_columns(c, union)]
    if not own:
        return union, list(conjuncts), (), ()
    split = [[c for c in own if public_at_owner(c, b, union, viewers, ctx)] for b in union.branches]
    flagged = any(len(public) < len(own) for public in split)
    flag = flag_name(union) if flagged else None
    branches, notes = [], []
    for index, (branch, public) in enumerate(zip(union.branches, split)):
        secret = [c for c in own if c not in public]
        branches.append(branch_filtered(branch, union, public, secret, flag))
        notes += owner_filter_notes(f"{branch.party} on its own rows (u{index})", public, secret,
                                    f"{union.alias}.{flag}")
    spu = [c for c in conjuncts if c not in own]
    if flag is not None:
        spu.insert(0, exp.column(flag, table=union.alias))
    filtering = tuple(dict.fromkeys(b.party for b, public in zip(union.branches, split) if public))
    return dataclasses.replace(union, branches=tuple(branches)), spu, tuple(notes), filtering


def owner_filter_notes(where: str, public, secret, flag: str) -> list[str]:
    """EXPLAIN's lines for one branch: the conjuncts its owner filters on, and those it shares as `flag`."""
    def text(conjuncts):  # noqa: E306
        return " AND ".join(c.sql(dialect="duckdb") for c in conjuncts)
    notes = [f"filter evaluated by {where}, as a WHERE: {text(public)} (every column it reads is PLAINTEXT to the "
             "other parties: the rows it keeps may be known)"] if public else []
    return notes + ([f"filter evaluated by {where}, shared as a secret bit {flag}: {text(secret)} (every row "
                     "shared, as without the filter; the columns only the condition reads are not)"] if secret else [])


def flag_name(union: UnionScan) -> str:
    """The flag's column name: FLAG, with underscores appended while the union has a column of that name."""
    name = FLAG
    while name in union.columns:
        name += "_"
    return name


def over_union_columns(conjunct: exp.Expression, union: UnionScan) -> bool:
    """Whether `conjunct` reads only the union's columns and no subquery: its owner can evaluate it on each row."""
    if conjunct.find(exp.Subquery, exp.Select, exp.Exists) is not None:
        return False
    return all(c.table == union.alias and c.name in union.columns for c in conjunct.find_all(exp.Column))


def public_at_owner(conjunct: exp.Expression, branch, union: UnionScan, viewers: set[str], ctx) -> bool:
    """Whether every base column `conjunct` reads in `branch` is PLAINTEXT to every other viewer, each union
    column read being a plain column of the branch's table (no aggregate, DISTINCT or window there)."""
    select = branch.select
    if select.args.get("group") or select.args.get("distinct") or select.find(exp.AggFunc, exp.Window):
        return False
    tables = {t.alias_or_name: t.name for t in select.find_all(exp.Table)}
    expressions = dict(zip(union.columns, select.expressions))
    for column in conjunct.find_all(exp.Column):
        source = expressions[column.name].unalias()
        if not isinstance(source, exp.Column) or source.table not in tables or \
                not ctx.usage.catalog.has_table(branch.party, tables[source.table]):
            return False
        ref = ColumnRef(branch.party, tables[source.table], source.name)
        if any(ctx.usage.grants.constraint(ref, viewer) is not Constraint.PLAINTEXT
               for viewer in viewers - {branch.party}):
            return False
    return True


def branch_filtered(branch: LocalQuery, union: UnionScan, public, secret, flag: str | None) -> LocalQuery:
    """`branch` as its owner runs it: its rows kept where the `public` conjuncts hold and, if there is a
    `flag`, that column of the `secret` ones appended (TRUE where it has none), over the branch's outputs."""
    if not public and flag is None:
        return branch
    def at_branch(conjunct):  # noqa: E306
        return conjunct.copy().transform(lambda n: exp.column(f"{union.alias}.{n.name}", quoted=True)
                                         if isinstance(n, exp.Column) else n)
    select = exp.select(*(exp.column(name, quoted=True) for name in branch.output)).from_(
        exp.Subquery(this=branch.select.copy(), alias=exp.TableAlias(this=exp.to_identifier("__branch"))))
    if public:
        select = select.where(exp.and_(*(at_branch(c) for c in public)))
    output = branch.output
    if flag is not None:
        own = exp.and_(*(at_branch(c) for c in secret)) if secret else exp.true()
        value = exp.cast(exp.func("COALESCE", exp.paren(own), exp.false()), "BOOLEAN")
        select = select.select(exp.alias_(value, f"{union.alias}.{flag}", quoted=True))
        output += (f"{union.alias}.{flag}",)
    return dataclasses.replace(branch, select=select, output=output)


def _place_cross_party(plan: Node, ctx: PlacementContext) -> PhysicalPlan:
    """Parties' local queries joined by PSI (or obliviously on the SPU), then the rest of the spine at the
    parties, in the enclave or on the SPU (`_compute_devices`)."""
    limit, sort, project, aggregate, join = _spine(plan)
    if not isinstance(join, InnerJoin):
        raise PlanError(f"unexpected plan shape under the projection: {type(join).__name__}")
    steps: list = [RunLocal(q.party, q.select.sql(dialect="duckdb"), f"r{i}") for i, q in enumerate(join.inputs)]
    edges, residual, written = join_edges(join, ctx)
    order, closing = join_order(join, edges, ctx)
    residual += [c for edge in closing for c in written[edge]]
    edges = {edge: pairs for edge, pairs in edges.items() if edge not in closing}
    members = [q.party for q in join.inputs]
    viewers = tuple(dict.fromkeys((*members, ctx.issuer)))
    secret = [m for m in join.memberships if not ctx.usage.psi_membership_allowed(m, viewers)]
    if secret:  # the translation places an oblivious semi-join (executors/spu/secret_relation.semi_join)
        raise NotSupportedError(
            f"the IN / EXISTS subquery on {secret[0].key.sql()} must keep its matches secret (its keys or filters "
            "are not granted PLAINTEXT_AFTER_JOIN / PLAINTEXT_AFTER_COMPARE to the parties of a PSI semi-join)")
    hidden = secret_keys(join, ctx)
    ctx.protected, ctx.rows_once = (), frozenset()
    if hidden:
        if ctx.enclave == "always":  # the SPU's oblivious join would run it; the enclave takes PSI-joined rows
            raise NotSupportedError(f"the enclave cannot run this query: the join on {hidden[0].sql()} must keep its "
                                    "intersection secret (its key is not granted PLAINTEXT_AFTER_JOIN to every party "
                                    "of the join), and the enclave takes rows joined by PSI; with [enclave] "
                                    "placement = \"cost\" the SPU joins them obliviously")
        return place_secret_join(join, steps, edges, hidden, residual, limit, sort, project, aggregate, ctx)
    if set(join.inputs[0].aliases) & set(join.outer):
        raise NotSupportedError("the preserved side of a LEFT JOIN must come first in FROM")
    protected = protected_rows(join, aggregate, ctx)
    ctx.protected, ctx.rows_once = protected, rows_once(join, order, protected, ctx)
    assignment, secure, computing, spu_refused = _compute_devices(join, order, residual, limit, sort, project,
                                                                  aggregate, protected, ctx)
    leakage: list[tuple[str, str]] = []
    current = psi_join_steps(join, order, edges, computing, ctx, steps, leakage)
    ctx.usage.check_cross_party(join, tuple(dict.fromkeys(members)), aggregate, project, sort, residual)
    threshold = ctx.min_group_size if ctx.dp is None else 0
    counted = [p for p, _ in protected]
    enclave = None
    if secure is not None and ctx.enclave:
        enclave = _enclave_stage(join, residual, limit, sort, project, aggregate, protected, ctx, current,
                                 spu_ran=bool(secure), spu_refused=spu_refused)
    if enclave is not None:
        more, learned = enclave_steps(enclave, project, ctx.issuer)
        return physical_plan(ctx, steps + more, leakage + learned, ctx.min_group_size if aggregate else 0, counted)
    if secure is not None:
        more, learned = secure_steps(current, secure, project, threshold if aggregate else 0, ctx.issuer)
        return physical_plan(ctx, steps + more, leakage + learned, threshold if aggregate else 0, counted)
    return compute_at_parties(steps, leakage, current, assignment, project, aggregate, sort, limit, threshold,
                              protected, ctx)


def _compute_devices(join: InnerJoin, order, residual, limit, sort, project, aggregate, protected,
                     ctx: PlacementContext):
    """Where the spine above the joins runs: (outputs assigned to parties, the SPU stage or None, the
    parties that compute, why the SPU refused). At the parties in plaintext (HE for class 4) when each
    output's inputs are at one party; else the SPU's secure stage; else, with an enclave, a stage of `{}`
    and the parties read, for the enclave to try."""
    members = [q.party for q in join.inputs]
    default = ctx.issuer if ctx.issuer in members else members[0]
    assignment, secure, spu_refused = None, None, ""
    try:
        if residual or any(e.find(exp.Window) for e in project.expressions):
            raise NotSupportedError("cross-party predicates or window functions")
        assignment = assign_outputs(project, aggregate, sort, default, ctx, join_rows(join, ctx))
        local_threshold(assignment, protected, {q.party for q in join.inputs if set(q.aliases) & set(join.outer)})
        computing = set(assignment.parties)
        if limit is not None and sort is not None and aggregate is None and len(computing) > 1 and ctx.dp is None \
                and not ctx.masks and not project.distinct:
            # a LIMIT over several parties' rows: sort and limit on shares, so only the kept rows are opened
            secure = secure_stage_plan(residual, project, aggregate, sort, limit, ctx, None)
            computing = set(secure["compute"])
    except NotSupportedError as local_error:
        try:
            keyed = group_keys_at_one_party(project, aggregate, sort, psi_equal_columns(join, order, ctx), ctx)
            secure = secure_stage_plan(residual, *keyed, limit, ctx, local_error, protected=protected)
            computing = set(secure["compute"])
        except NotSupportedError as spu_error:
            if not ctx.enclave:
                raise
            spu_refused = f" (nor can the SPU: {spu_error})"
            secure, computing = {}, _parties_read(project, aggregate, sort, residual, ctx) | {p for p, _ in protected}
    return assignment, secure, computing, spu_refused


def _enclave_stage(join: InnerJoin, residual, limit, sort, project, aggregate, protected, ctx: PlacementContext,
                   rel: str, spu_ran: bool, spu_refused: str) -> EnclaveStage | None:
    """The enclave's stage over the joined relation `rel`, or None to keep the SPU's (`spu_ran`); refused
    when the enclave cannot run it and the federation always wants it, or the SPU refused it too."""
    try:
        if protected and join.outer:
            raise NotSupportedError("the enclave cannot count distinct rows of a LEFT JOIN's NULL side")
        return enclave_stage_plan(residual, project, aggregate, sort, limit, ctx, rel, protected)
    except NotSupportedError as why:
        if ctx.enclave == "always" or not spu_ran:
            raise NotSupportedError(f"the enclave cannot run this query: {why}{spu_refused}") from None
    return None


def _parties_read(project, aggregate, sort, residual, ctx) -> set[str]:
    """The parties whose columns the outputs (windows included), group keys, HAVING, ORDER BY and the
    cross-party predicates read: each sends its columns to the enclave's program."""
    used = [*project.expressions, *residual, *(sort.order if sort is not None else ())]
    if aggregate is not None:
        used += [*aggregate.group_by, *([aggregate.having] if aggregate.having is not None else [])]
    return {ctx.parties[c.table] for e in used for c in e.find_all(exp.Column) if c.table in ctx.parties}
