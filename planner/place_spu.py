"""The SPU's secure stage on the spine: what no single party may compute (cross-party predicates and
expressions, group keys from several parties, values aggregated away from their group keys, secret
sorts, DISTINCT, windows), refused at plan time by the stage's own rules (executors/spu/stage.py) so
`check`, EXPLAIN and execution agree; and the oblivious join of two parties whose join key must keep
its intersection secret."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from sqlglot import exp

from sqlsecure.errors import NotSupportedError, PlanError
from sqlsecure.planner.logical import Aggregate, Project, column_key
from sqlsecure.planner.physical import PhysicalPlan, SecureStage
from sqlsecure.planner.place_outputs import KIND_OF_TYPE, finish_outputs, hidden_sort_keys, physical_plan, to_piece
from sqlsecure.planner.place_psi import known_unique
from sqlsecure.planner.place_threshold import protected_rows

if TYPE_CHECKING:
    from sqlsecure.planner.placement import PlacementContext


def place_secret_join(join, steps, edges, hidden, residual, limit, sort, project, aggregate, ctx) -> PhysicalPlan:
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
    if not any(known_unique(q, keys, ctx) for q, keys in zip(join.inputs, zip(*pairs))):
        raise NotSupportedError(
            f"the oblivious join on {hidden[0].sql()} needs one side's join keys unique at plan time (a GROUP BY "
            "or DISTINCT of that side, or a key its party declares unique in [parties.NAME.unique])")
    secure = secure_stage_plan(residual, project, aggregate, sort, limit, ctx, None, union_parties=tuple(members),
                                protected=protected_rows(join, aggregate, ctx))
    ctx.usage.check_cross_party(join, tuple(members), aggregate, project, sort, (*residual, *join.conjuncts))
    threshold = ctx.min_group_size if aggregate is not None else 0
    sides = ((members[0], "r0", tuple(a for a, _ in pairs)), (members[1], "r1", tuple(b for _, b in pairs)))
    out = "oblivious_join_spu_out"
    steps.append(SecureStage("", out=out, issuer=ctx.issuer, threshold=threshold, secret_join=sides, **secure))
    leakage = [(p, f"{q}'s number of rows entering the join and whether its join keys are unique; not which rows "
                   "match (an oblivious join on secret shares)") for p, q in (members, members[::-1])]
    leakage += [(p, "the number of rows (or groups) in the result, from the SPU's compaction") for p in members]
    steps.append(finish_outputs(project, ctx.issuer, out))
    leakage.append((ctx.issuer, "the query result"))
    return physical_plan(ctx, steps, leakage, threshold, [p for p in members if p != ctx.issuer])


def secure_steps(rel: str, secure: dict, project: Project, threshold: int, issuer: str) -> tuple[list, list]:
    """The SPU stage (`secure_stage_plan`) over the joined relation `rel` and the issuer's finish; and what
    each party learns there."""
    out = f"{rel}_spu_out"
    steps = [SecureStage(rel, out=out, issuer=issuer, threshold=threshold, **secure),
             finish_outputs(project, issuer, out)]
    leakage = [(p, "the number of rows (or groups) in the result, from the SPU's compaction")
               for p in secure["compute"]]
    leakage.append((issuer, "the query result"))
    return steps, leakage


def secure_stage_plan(residual, project, aggregate, sort, limit, ctx, local_error, union_parties=(),
                       protected=()) -> dict:
    """The SPU stage for what no single party may compute: cross-party predicates and expressions,
    group keys from several parties, values aggregated away from their group keys, secret sorts."""
    if ctx.dp is not None or ctx.masks:
        raise NotSupportedError(f"{local_error}; with differential privacy or masking the SPU is not supported yet")
    items = [(f"o{i}", e.this if isinstance(e, exp.Alias) else e) for i, e in enumerate(project.expressions)]
    items += list(hidden_sort_keys(project, sort))
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
    owner_numbered = not union_parties and bool(group_by) and all(
        isinstance(g, exp.Column) and g.table for g in group_by) and len({ctx.parties[g.table] for g in group_by}) == 1
    _refuse_double_keys(() if owner_numbered else group_by, used, ctx)  # the owner numbers exact values
    sql = lambda e: to_piece(e).sql(dialect="duckdb")  # noqa: E731
    return dict(
        compute=compute, inputs=tuple((p, c) for c, p in inputs.items()),
        filters=tuple(sql(c) for c in residual), aggregate=aggregate is not None or bool(group_by),
        group_by=tuple(sql(g) for g in group_by),
        having=sql(aggregate.having) if aggregate is not None and aggregate.having is not None else None,
        outputs=tuple((n, sql(e)) for n, e in items), reveal=tuple(range(len(project.expressions))),
        order=tuple(order), limit=limit_value, offset=offset_value or 0, kinds=_result_kinds(project),
        distinct_rows=tuple(column for _, column in protected),
        rows_once=tuple(column for _, column in protected if column in ctx.rows_once))


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


def _refuse_double_keys(group_by, used, ctx) -> None:
    """GROUP BY / DISTINCT keys and COUNT / SUM / AVG(DISTINCT x) arguments that are DOUBLEs, which the SPU
    would compare in fixed point (executors/spu/fixed_keys), refused naming the key. Keys that are one
    party's plain columns are not passed here: that party numbers their exact values (`stage.group_code`)."""
    from sqlsecure.executors.spu.fixed_keys import refuse_double_keys  # late: no cycle

    def is_double(column: exp.Column) -> bool:
        return KIND_OF_TYPE.get((ctx.column_type(column.table, column.name) or "").split("(")[0].upper()) == "fixed" \
            and not (ctx.column_type(column.table, column.name) or "").upper().startswith("DECIMAL")

    def shown(e: exp.Expression) -> exp.Expression:  # as the user wrote it: columns unquoted
        return e.copy().transform(lambda x: exp.column(x.name, x.table) if isinstance(x, exp.Column) else x)

    refuse_double_keys(group_by, "a GROUP BY or DISTINCT key", is_double, shown=shown)
    arguments = [a for e in used for d in e.find_all(exp.Distinct) if isinstance(d.parent, exp.AggFunc)
                 for a in d.expressions]
    refuse_double_keys(arguments, "a DISTINCT aggregate's argument", is_double, shown=shown)


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


def group_keys_at_one_party(project: Project, aggregate, sort, equal: dict[str, list[exp.Column]],
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
