"""Class 4 on HE (the HEU) on the spine: GROUP BY keys at one party, SUM / AVG / COUNT of another
party's values summed under Paillier by the group party; whether HE or the SPU runs it (the
federation's choice, or the cost model's), and the HEGroupBy step with what each party learns."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlglot import exp

from sqlsecure.errors import PolicyViolation
from sqlsecure.planner.cost import choose, estimate, one_hot_chosen
from sqlsecure.planner.group_path import threshold_summed
from sqlsecure.planner.logical import aggregates_in
from sqlsecure.planner.physical import HEGroupBy
from sqlsecure.planner.place_outputs import party_set, to_piece
from sqlsecure.planner.place_threshold import threshold_having
from sqlsecure.policy.grants import Use

if TYPE_CHECKING:
    from sqlsecure.planner.place_local import Assignment


def class_4_on_he(items, group_party, aggregate, ctx, rows: int | None = None) -> bool:
    """Whether class 4 goes to HE: by the federation's choice, or else by the cost model, on `rows` (the
    join's estimated output; default: the largest published size of the parties summing and grouping).
    Never with `[enclave] placement = "always"`: the enclave computes class 4 there, or the query is refused."""
    if ctx.enclave == "always":
        return False
    if ctx.group_sums == "he" and group_party is not None and (ranked := _rank_only_keys(items, group_party, ctx)):
        raise PolicyViolation(f"[federation] group_sums = \"he\" opens the sums at {group_party}, but the ORDER BY key "
                              f"{ranked} may be revealed only as its rank (REVEAL_RANK): set group_sums to \"auto\" or "
                              "\"spu\" (the SPU sorts on shares), or grant its columns PLAINTEXT_AFTER_AGGREGATE")
    if ctx.group_sums != "auto" or group_party is None:
        return ctx.group_sums == "he"
    values = [e for _, e in items if party_set(e, ctx.parties) - {group_party} and he_aggregate(e, ctx.parties)]
    if not values or ctx.dp is not None or ctx.masks:
        return False  # nothing for HE to sum, or what HE group sums do not support yet
    owners = frozenset().union(*(party_set(e, ctx.parties) for e in values)) | {group_party}
    sizes = [n for n in (ctx.rows_of(p) for p in owners) if n is not None]
    limbs = [_key_limbs(key, ctx) for key in aggregate.group_by]
    coded = all(isinstance(key, exp.Column) for key in aggregate.group_by)  # the group party numbers the groups
    arguments = len({e.this.sql(dialect="duckdb") for e in values})  # HE sends each distinct column once
    groups = _groups_bound(aggregate.group_by, ctx)
    parties = len(owners | {party for party, _ in ctx.protected})  # the SPU's compute parties
    priced = estimate(rows if rows is not None else max(sizes, default=1 << 14), len(values),
                      1 if coded else sum(limbs), ctx.link, key_bits=ctx.he_key_bits, arguments=arguments,
                      carried=sum(1 + n for n in limbs) if coded else 0, groups=groups,
                      one_hot=coded and _one_hot(items, aggregate, groups, group_party, parties, ctx),
                      parties=parties)
    ctx.class_4 = choose(priced, _class_4_incapable(items, group_party, aggregate, ctx))
    return ctx.class_4.engine == "he"


def _one_hot(items, aggregate, groups: int | None, group_party: str, parties: int, ctx) -> bool:
    """Whether the SPU would run this class-4 query's GROUP BY as one-hot group sums: `planner.group_path`'s
    rules on the same plan-time facts the stage records: every aggregate a sum, the group threshold's
    distinct-row counts sums (`threshold_summed`: the protected inputs whose rows appear once, or the group
    party's own; no cross-party filter here, else the SPU would have been the only choice), G bounded, and
    the bytes between the `parties` compute parties."""
    having = [aggregate.having] if aggregate.having is not None else []
    found = [a for _, e in items for a in aggregates_in(e)] + [a for h in having for a in aggregates_in(h)]
    summed = all(isinstance(a, (exp.Count, exp.Sum, exp.Avg)) and not isinstance(a.this, exp.Distinct) for a in found)
    count = len({a.sql(dialect="duckdb") for a in found})
    return summed and threshold_summed(ctx.protected, ctx.rows_once, group_party, False) and \
        one_hot_chosen(groups, count, parties)


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
    foreign = [e for _, e in items if party_set(e, ctx.parties) - {group_party}]
    if any(not he_aggregate(e, ctx.parties) for e in foreign) or \
            any(party_set(h, ctx.parties) - {group_party} for h in having):
        cannot["he"] = "it sums only SUM, AVG and COUNT of one other party's values"
    elif any(not _he_number(c, ctx) for e in foreign for c in e.find_all(exp.Column)):
        cannot["he"] = "it sums only numbers (integers, decimals, floats, booleans)"
    elif ranked := _rank_only_keys(items, group_party, ctx):
        cannot["he"] = f"it opens its sums at {group_party}, and the ORDER BY key {ranked} may be revealed only as " \
            "its rank"
    return cannot


def _rank_only_keys(items, group_party, ctx) -> str | None:
    """An ORDER BY key that is no output (`h<i>`), summed under HE, whose sums the group party and the
    issuer may not see (a grant below PLAINTEXT_AFTER_AGGREGATE, e.g. REVEAL_RANK): HE would open them
    there; the SPU sorts on shares."""
    viewers = {group_party, ctx.issuer}
    for name, e in items:
        if name.startswith("h") and party_set(e, ctx.parties) - {group_party} and any(
                viewer != ref.party and not ctx.usage.grants.allows(ref, viewer, Use.AGGREGATE)
                for c in e.find_all(exp.Column) for ref in ctx.usage.refs(c)[0] for viewer in viewers):
            return e.sql(dialect="duckdb")
    return None


# what executors/heu/group_by.py encodes as integers
HE_TYPES = (*INTEGER_TYPES, "BOOLEAN", "DECIMAL", "DOUBLE", "FLOAT", "REAL")


def _he_number(column: exp.Column, ctx) -> bool:
    """Whether HE can sum values of this column (its catalog type is a number HE encodes)."""
    dtype = (ctx.column_type(column.table, column.name) or "").split("(")[0].upper()
    return dtype in HE_TYPES


def he_aggregate(expression: exp.Expression, parties) -> bool:
    """SUM / AVG / COUNT (not DISTINCT) of an expression over exactly one party's columns."""
    return (isinstance(expression, (exp.Sum, exp.Avg, exp.Count)) and not isinstance(expression.this, exp.Distinct)
            and len(party_set(expression.this, parties)) == 1)


def he_steps(steps, rel, assignment: Assignment, aggregate, threshold, ctx, protected=()) -> tuple[list, dict]:
    """Class 4 on HEU: the group party's own outputs and the HE sums of the value party's. The
    threshold: the group party's distinct rows ("__n"; its rows when it is the issuer) and, for a
    protected value party, enough rows ("__rows") for its most repeated row (`HEGroupBy.value_rows`)."""
    keys = [to_piece(g) for g in aggregate.group_by]
    code = exp.Sub(this=exp.Window(this=exp.Anonymous(this="DENSE_RANK"), order=exp.Order(expressions=[
        exp.Ordered(this=k.copy()) for k in keys])), expression=exp.Literal.number(1))
    local = assignment.by_party.get(assignment.group_party, [])
    groups = exp.Select().from_("piece").group_by(*[k.copy() for k in keys])
    keep = to_piece(assignment.having) if assignment.having is not None else exp.true()
    own = [c.this for c in threshold_having(assignment.group_party, protected, max(threshold, 1))]
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
        elif isinstance(expression, exp.Count):  # COUNT needs only which values are NULL: a 1 of any type
            argument = exp.If(this=exp.Not(this=exp.Is(this=argument.copy(), expression=exp.Null())),
                              true=exp.Literal.number(1))
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


def he_leakage(assignment: Assignment, protected) -> list[tuple[str, str]]:
    """What HE group sums tell the value party and the group party."""
    leakage = [(assignment.he_party, f"the number of groups (HE group sum with {assignment.group_party})"),
               (assignment.group_party, f"nothing of {assignment.he_party}'s values (Paillier ciphertexts)")]
    if any(p == assignment.he_party for p, _ in protected):
        leakage.append((assignment.group_party, f"the most joined rows any one of {assignment.he_party}'s rows "
                                                "appears in (for the minimum group size)"))
    return leakage
