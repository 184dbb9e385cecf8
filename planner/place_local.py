"""Plaintext compute at one party (the PYU) on the spine: a single-party query pushed down whole (with
the group threshold, or rewritten for a noisy release), and after a join across parties each output
computed by the one party holding its inputs, over its piece of the joined rows, then revealed to the
issuer (class 4's values summed on HE: `place_he`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlglot import exp

from sqlsecure.errors import NotSupportedError
from sqlsecure.planner.logical import LocalQuery, aggregates_in
from sqlsecure.planner.physical import Compute, Finish, Mask, Noise, PhysicalPlan, Reveal, RunLocal
from sqlsecure.planner.place_he import class_4_on_he, he_aggregate, he_leakage, he_steps
from sqlsecure.planner.place_outputs import finish_sql, hidden_sort_keys, party_set, physical_plan, to_piece
from sqlsecure.planner.place_threshold import own_aggregates, threshold_having, threshold_pushdown
from sqlsecure.planner.reveal import DPContext

if TYPE_CHECKING:
    from sqlsecure.planner.placement import PlacementContext


def place_pushdown(query: LocalQuery, ctx: PlacementContext) -> PhysicalPlan:
    """A query reading one party, pushed down to it whole and revealed to the issuer: for another issuer
    an aggregate is thresholded (`threshold_pushdown`) or noised, and masked outputs are masked."""
    party, issuer = query.party, ctx.issuer
    select = query.select
    threshold = 0
    finishing = None
    release = None
    if party != issuer:
        if ctx.dp is not None:
            select, release, finishing = _dp_pushdown(select, ctx.dp)
        elif ctx.min_group_size > 0:  # its subqueries' aggregates are thresholded (planner/__init__.py)
            if own_aggregates(select):  # not only through its subqueries (a SELECT without FROM, say)
                threshold = ctx.min_group_size
                select = threshold_pushdown(party, select, threshold, ctx.usage.catalog)
    steps = [RunLocal(party, select.sql(dialect="duckdb"), "result")]
    if release is not None:
        steps.append(Noise(party, "result", release))
    if ctx.masks:
        names = select.named_selects if isinstance(select, exp.Select) else []
        steps.append(Mask(party, "result", tuple((names[i], m) for i, m in sorted(ctx.masks.items()))))
    steps += [Reveal(party, "result", issuer), Finish(issuer, ((party, "result"),), "rows", finishing)]
    leakage = ((issuer, "the query result"),) if party != issuer else ()
    return physical_plan(ctx, steps, leakage, threshold)


def _dp_pushdown(select: exp.Expression, dp: DPContext):
    """Rewrite a single-party aggregate for a noisy release; ORDER BY / LIMIT move to the issuer."""
    if not isinstance(select, exp.Select):
        raise NotSupportedError("under differential privacy only a single aggregating SELECT can be answered")
    if select.args.get("having"):
        raise NotSupportedError("HAVING is not supported under differential privacy (filter the noisy result)")
    inner = next((s for s in select.find_all(exp.Subquery, exp.Exists) if not isinstance(s.parent, (exp.From, exp.Join))
                  and any(a.find_ancestor(exp.Window) is None for a in s.find_all(exp.AggFunc))), None)
    if inner is not None:  # its exact value decides which rows the noised aggregate counts, as in the translation
        raise NotSupportedError(f"under differential privacy an inner aggregate ({inner.sql(dialect='duckdb')[:80]}) "
                                "feeds the noised aggregate, its exact value unbounded by the rules; aggregate once, "
                                "over the rows")
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


def assign_outputs(project, aggregate, sort, default, ctx, rows: int | None = None) -> Assignment:
    parties = ctx.parties
    items = [(f"o{i}", e.this if isinstance(e, exp.Alias) else e) for i, e in enumerate(project.expressions)]
    items += [(name, expr) for name, expr in hidden_sort_keys(project, sort)]
    assigned: dict[str, list[tuple[str, exp.Expression]]] = {}
    constants: dict[str, exp.Expression] = {}
    group_party = None
    if aggregate is not None and aggregate.group_by:
        group_parties = frozenset().union(*(party_set(g, parties) for g in aggregate.group_by))
        if len(group_parties) > 1:
            raise NotSupportedError(
                f"GROUP BY keys from several parties ({', '.join(sorted(group_parties))}) need the SPU or an "
                "enclave, which are not implemented yet"
            )
        group_party = next(iter(group_parties), default)
    he_party, he_items = None, []
    use_he = class_4_on_he(items, group_party, aggregate, ctx, rows)
    for name, expression in items:
        owners = party_set(expression, parties)
        if (use_he and group_party is not None and owners and owners != {group_party}
                and he_aggregate(expression, parties)):
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
        owners = party_set(having, parties)
        if len(owners) > 1 or (group_party and owners and owners != {group_party}):
            raise NotSupportedError(f"HAVING {having.sql()!r} combines several parties' data; needs the SPU")
        having_party = group_party or next(iter(owners), default)
        assigned.setdefault(having_party, [])
    if not assigned:  # e.g. SELECT DISTINCT 1 FROM a JOIN b: someone must still count the rows
        assigned[default] = []
    return Assignment(assigned, constants, group_party, having, having_party, he_party, tuple(he_items))


def compute_at_parties(steps: list, leakage: list, rel: str, assignment: Assignment, project, aggregate, sort, limit,
                       threshold: int, protected, ctx: PlacementContext) -> PhysicalPlan:
    """The plan that computes each output at the party `assignment` gives it, over its piece of the joined
    relation `rel` (class 4's values summed on HE), reveals them to the issuer, and finishes there."""
    if ctx.dp is not None:
        if aggregate is None:
            raise NotSupportedError("under differential privacy only aggregates can be revealed")
        if aggregate.having is not None:
            raise NotSupportedError("HAVING is not supported under differential privacy (filter the noisy result)")
        ctx.dp.count_values([i for items in assignment.by_party.values() for i in items],
                            {g.sql() for g in aggregate.group_by})
    outputs = [e.alias_or_name for e in project.expressions]
    if assignment.he_party is not None:
        parts, finish_cols = he_steps(steps, rel, assignment, aggregate, threshold, ctx, protected)
        leakage += he_leakage(assignment, protected)
    else:
        parts, finish_cols = output_steps(steps, rel, assignment, aggregate, threshold, ctx, protected)
    mode = "single" if aggregate is not None and assignment.group_party is None else "rows"
    steps.append(Finish(ctx.issuer, tuple(parts), mode, finish_sql(finish_cols, outputs, project, sort, limit)))
    leakage.append((ctx.issuer, "the query result"))
    return physical_plan(ctx, steps, leakage, threshold if aggregate else 0, [p for p, _ in protected])


def ranked(key: exp.Expression) -> exp.Expression:
    """A hidden sort key as its rank among the rows (NULL stays NULL): the issuer sorts by it as by the key,
    and learns the order only (REVEAL_RANK), never another party's values."""
    order = exp.Order(expressions=[exp.Ordered(this=key.copy())])
    rank = exp.Window(this=exp.Anonymous(this="DENSE_RANK"), order=order)
    return exp.Case(ifs=[exp.If(this=exp.Is(this=key.copy(), expression=exp.Null()), true=exp.Null())], default=rank)


def output_steps(steps, rel, assignment: Assignment, aggregate, threshold, ctx, protected=()):
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
        rank = release is None and party != ctx.issuer  # under DP the noised key is what DP releases
        columns = [exp.alias_(ranked(to_piece(e)) if rank and n.startswith("h") else to_piece(e), n, quoted=True)
                   for n, e in exprs]
        select.set("expressions", columns or [exp.alias_(exp.Literal.number(1), f"__kept_{party}", quoted=True)])
        if aggregate is None:
            select = select.order_by(exp.column("__row", quoted=True))
        else:
            if assignment.group_party is not None:
                select = select.group_by(*[to_piece(g) for g in aggregate.group_by])
            conds = []
            if assignment.having is not None and party == assignment.having_party:
                conds.append(to_piece(assignment.having))
            if threshold > 0:  # no other owner's rows in the groups (a semi-join's only filter): rows, as elsewhere
                conds += threshold_having(party, protected, threshold) if protected else [
                    exp.GTE(this=exp.Count(this=exp.Star()), expression=exp.Literal.number(threshold))]
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
