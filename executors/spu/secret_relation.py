"""Secret relations and the relational operators over them (issue 16; Secrecy's design, NSDI 2023).

A `SecretRelation` is shares of every column (each an `SV`: ring limbs + a validity share, so NULL
is per value) plus a secret 0/1 validity bit per row. Every operator here consumes and produces
one, so they chain to any depth. Row counts are public and no operator opens anything that depends
on the data except where its docstring says so (the AVG range check opens how many sums are out of
range, normally 0). Where the order of tied rows is seen (ORDER BY, its LIMIT, ROW_NUMBER) the rows
are shuffled first, so ties say nothing about the input order. Invalid rows keep their place and
are simply weighted 0: an operator's output size is a public function of its inputs' sizes
(filter: n; aggregate: n, n + 1 per row with a NULL group; join: n*m (+n for LEFT), or n+m when one side's keys are unique
(`pk_join`); semi/anti: n+m).

Rounds are stated per operator as a function of n (2 parties; each comparison is ~7 rounds, a sort
~(6 + 1 per extra key + 1) per level with at most ceil(log2 n / 3) + 2 levels, a segmented scan
log2 n).
Expressions are evaluated by `stage.Stage` (three-valued logic; NULL conditions count as false).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlglot import exp

from sqlsecure.errors import DataError, NotSupportedError, ProtocolError
from sqlsecure.executors.spu import arith, compare, relational
from sqlsecure.executors.spu.session import SpuSession
from sqlsecure.executors.spu.shares import ArithShare
from sqlsecure.executors.spu.stage import (AVG_LIMIT, SENTINEL, SV, Stage, _at_least, _sort_keys, _total, canonical,
                                           canonical_weighted, count_tests, compared_limbs, level_text, pad_text,
                                           tested_columns)
from sqlsecure.executors.spu.values import decimal_scale, limb_fracs

AGGREGATE_NODES = {"COUNT": exp.Count, "SUM": exp.Sum, "AVG": exp.Avg, "MIN": exp.Min, "MAX": exp.Max}


@dataclass
class SecretRelation:
    """Shares of every column (name -> SV, in order) and a secret 0/1 validity bit per row."""

    columns: dict[str, SV]
    valid: ArithShare

    @property
    def n(self) -> int:
        return len(self.valid)


# -- helpers -----------------------------------------------------------------------------------------

def _ones(s: SpuSession, n: int) -> ArithShare:
    return arith.public(s, np.ones(n, dtype=np.int64))


def _zeros(n: int, frac: int = 0) -> ArithShare:
    return ArithShare(np.zeros(n, np.uint64), frac)


def null_column(kind: str, n: int, frac_bits: int, like: SV | None = None) -> SV:
    """n NULLs of a kind (a LEFT JOIN's unmatched right columns); text as wide as `like`, if given."""
    null = SV([_zeros(n, f) for f in limb_fracs(kind, frac_bits)], _zeros(n), kind)
    return pad_text(null, len(like.limbs)) if like is not None and kind == "text" else null


def stage_over(s: SpuSession, rel: SecretRelation) -> Stage:
    """The SQL expression evaluator over a relation's columns (no SecureStage step needed). Only valid
    rows count where a value refuses the query (a division by zero, a logarithm of 0): a row a filter
    dropped neither refuses the query nor tells anyone it would have."""
    stage = Stage(s, None, rel.n)
    stage.cols = dict(rel.columns)
    stage.weight = rel.valid
    return stage


def evaluate(s: SpuSession, rel: SecretRelation, e: exp.Expression) -> SV:
    """The value of an SQL expression on every row of `rel`, constants made secret."""
    stage = stage_over(s, rel)
    return stage.secret(stage.ev(e), rel.n)


def truth(s: SpuSession, rel: SecretRelation, condition: exp.Expression) -> ArithShare:
    """A condition as a 0/1 share per row, NULL as false."""
    stage = stage_over(s, rel)
    return stage.truth(stage.ev(condition))


def conform(s: SpuSession, v: SV, kind: str) -> SV:
    """`v` in the declared kind: integers widen to fixed point, decimals to their fixed limb,
    integers and decimals to a decimal of a larger scale (exactly), 0/1 integers become booleans;
    other differences are a ProtocolError (never a wrong value)."""
    if v.kind == kind:
        return v
    if kind == "fixed" and (v.kind == "int" or decimal_scale(v.kind) is not None):
        return Stage(s, None, len(v.valid)).to_fixed(v)
    scale, own = decimal_scale(kind), 0 if v.kind == "int" else decimal_scale(v.kind)
    if scale is not None and own is not None and own <= scale:  # exact: x * 10^scale, and its fixed limb
        return Stage(s, None, len(v.valid)).rescaled(v, scale)
    if (v.kind, kind) in (("int", "bool"), ("bool", "int")):
        return SV(v.limbs, v.valid, kind)
    raise ProtocolError(f"secret program: a {v.kind} value where the program declares {kind}")


def _key_columns(values: list[SV]) -> list[ArithShare]:
    """What sorts and compares keys: each value's validity and the limbs that decide equality
    (`compared_limbs`: a DECIMAL's exact limb, not its fixed-point one, which may differ between equal
    computed values); callers carry the whole values along."""
    return [c for v in values for c in (v.valid, *compared_limbs(v))]


def _uncompared_limbs(values: list[SV]) -> list[ArithShare]:
    """The limbs `_key_columns` leaves out (a DECIMAL's fixed-point limb), carried beside the keys."""
    return [limb for v in values for limb in v.limbs[len(compared_limbs(v)):]]


def _flatten(rel: SecretRelation) -> list[ArithShare]:
    return [c for v in rel.columns.values() for c in (*v.limbs, v.valid)]


def _rebuild(flat: list[ArithShare], like: dict[str, SV]) -> dict[str, SV]:
    out, i = {}, 0
    for name, v in like.items():
        k = len(v.limbs)
        out[name] = SV(flat[i:i + k], flat[i + k], v.kind)
        i += k + 1
    return out


def _take(v: SV, index: np.ndarray) -> SV:
    return SV([limb[index] for limb in v.limbs], v.valid[index], v.kind)


def _broadcast(x: ArithShare, n: int) -> ArithShare:
    """A one-element share repeated n times (local)."""
    return ArithShare(np.repeat(x.data, n), x.frac)


def shuffled(s: SpuSession, rel: SecretRelation) -> SecretRelation:
    """The rows in a secret uniform order (`relational.shuffle`: N rounds, 8 B per value and party).
    Before a sort whose order among ties is seen (ORDER BY, its LIMIT, ROW_NUMBER): `relational.sort`
    breaks ties by the rows' positions, which would otherwise tell the issuer the input order (which
    party's rows came first, or an earlier operator's order by columns it never sees)."""
    if rel.n <= 1:
        return rel
    flat = relational.shuffle(s, [*_flatten(rel), rel.valid])
    return SecretRelation(_rebuild(flat[:-1], rel.columns), flat[-1])


def _order_keys(s: SpuSession, values: list[SV], order: list[tuple[bool, bool]]) -> tuple[list, list, list]:
    """(keys, descending, widths) of ORDER BY values (`_sort_keys`)."""
    keys, desc, bits = [], [], []
    for v, (descending, nulls_first) in zip(values, order):
        kk, dd, bb = _sort_keys(v, descending, nulls_first, s)
        keys += kk
        desc += dd
        bits += bb
    return keys, desc, bits


# -- row operators -----------------------------------------------------------------------------------

def filter_rows(s: SpuSession, rel: SecretRelation, condition: exp.Expression) -> SecretRelation:
    """valid &= condition (NULL counts as false). Rounds: the condition's, + 2 (truth, AND)."""
    return SecretRelation(rel.columns, arith.beaver_mul(s, rel.valid, truth(s, rel, condition)))


def project(s: SpuSession, rel: SecretRelation, columns: list[tuple[str, exp.Expression, str]]) -> SecretRelation:
    """New columns [(name, expression, kind)]; the row validity is kept. Rounds: the expressions'."""
    return SecretRelation({name: conform(s, evaluate(s, rel, e), kind) for name, e, kind in columns}, rel.valid)


def union_all(s: SpuSession, children: list[SecretRelation], kinds: list[str]) -> SecretRelation:
    """UNION ALL: concatenation (local, 0 rounds); the first child's names, the merged kinds; text
    at the widest child's width."""
    names = list(children[0].columns)
    columns = {}
    for index, (name, kind) in enumerate(zip(names, kinds)):
        parts = [conform(s, list(c.columns.values())[index], kind) for c in children]
        width = max(len(p.limbs) for p in parts)
        parts = [pad_text(p, width) if kind == "text" else p for p in parts]
        columns[name] = SV([arith.concat([p.limbs[k] for p in parts]) for k in range(width)],
                           arith.concat([p.valid for p in parts]), kind)
    return SecretRelation(columns, arith.concat([c.valid for c in children]))


def sort_rows(s: SpuSession, rel: SecretRelation, keys: list[tuple[exp.Expression, bool, bool]],
              limit: int | None, offset: int) -> SecretRelation:
    """ORDER BY keys (desc, nulls_first per key), invalid rows last, then rows [offset, offset+limit):
    invalid rows never count toward the limit; ties come out in a random order (`shuffled`).
    Rounds: N (the shuffle) + 1 (canonical keys) + the oblivious sort (`relational.sort`: N
    shuffle rounds + at most ceil(log2 n / 3) + 2 levels of (7 + ceil(log2 of the compared columns)); with a
    LIMIT only the first offset + limit rows are sorted)."""
    rel = shuffled(s, rel)
    values = canonical(s, [evaluate(s, rel, e) for e, _, _ in keys])
    sort_keys, desc, bits = _order_keys(s, values, [(d, nf) for _, d, nf in keys])
    invalid = _ones(s, rel.n) - rel.valid
    end = rel.n if limit is None else offset + limit
    _, payload = relational.sort(s, [invalid, *sort_keys], [*_flatten(rel), rel.valid], [False, *desc],
                                 key_bits=[2, *bits], first=end)
    payload = relational.limit(payload, end - offset, offset)
    return SecretRelation(_rebuild(payload[:-1], rel.columns), payload[-1])


def distinct(s: SpuSession, rel: SecretRelation, key_classes: list[int | None] | None = None) -> SecretRelation:
    """DISTINCT (sort-based): sort by (invalid, every column with NULLs equal), keep the first row of
    each run of equal valid rows. The 0/1 flags (invalid, each value's NULL) are compared on 2 bits and a
    classed integer column (`key_classes`, per column: M where |v| < 2^M, `program.key_classes`), zeroed
    on invalid rows and offset by 2^M, on M + 2, packed with the sort's tiebreak; other limbs on 64.
    Rounds: 1 (+ 1 with a classed column) + the sort + neighbour tests (~7 + ceil(log2 limbs), + 1) + 1."""
    values = canonical(s, list(rel.columns.values()))
    if rel.n == 0:
        return rel
    classed = [bits if bits is not None and v.kind == "int" and len(v.limbs) == 1 else None
               for v, bits in zip(values, key_classes or [None] * len(values))]
    values = _classed_keys(s, values, rel.valid, classed)
    keys, widths = [_ones(s, rel.n) - rel.valid], [2]
    for v, bits in zip(values, classed):
        limbs = compared_limbs(v)
        keys += [v.valid, *(limbs if bits is None else [arith.add_public(s, limbs[0], 1 << bits)])]
        widths += [2, *([64] * len(limbs) if bits is None else [bits + 2])]
    sorted_keys, payload = relational.sort(s, keys, [*_flatten(rel), rel.valid], key_bits=widths)
    starts = relational.neighbour_starts(s, sorted_keys, widths)
    return SecretRelation(_rebuild(payload[:-1], rel.columns), arith.beaver_mul(s, payload[-1], starts))


# -- aggregates --------------------------------------------------------------------------------------

def aggregate_node(func: str, arg: exp.Expression | None) -> exp.AggFunc:
    """The sqlglot node of FUNC(arg) (COUNT(*) for a null arg), so the stage's aggregates apply."""
    if arg is None:
        return exp.Count(this=exp.Star())
    return AGGREGATE_NODES[func](this=arg.copy())


def aggregate(s: SpuSession, rel: SecretRelation, keys: list[tuple[str, exp.Expression]],
              aggregates: list[tuple[str, str, exp.Expression | None, bool]],
              threshold: tuple[int, list[str]] | None, kinds: list[str], key_classes: list[int | None] | None = None,
              per_row: dict | None = None, provenance_bits: dict[str, int] | None = None, once=()) -> SecretRelation:
    """GROUP BY keys (or one row without keys). The row validity is every row's weight; invalid rows
    form no group. Keyed: the n sorted rows, valid at the last row of each kept group. Threshold
    (k, provenance): a group is kept only if each provenance column holds >= k distinct valid values
    (no columns: >= k valid rows); no count is opened. Rounds: the arguments' + 1 (weights) + the
    group sort (the first COUNT(DISTINCT) or provenance column riding along as minor keys) + neighbour
    tests + log2 n (segmented sums; MIN/MAX 8 per scan level) + one sort per further COUNT(DISTINCT) and
    provenance column, on the group's rank and that column only (`relational.group_by`) + AVG's division and its one range opening + 2 (no keys:
    every MIN/MAX tournament side by side, ceil(log2 n) levels of ~8, `_totals`). `kinds`:
    the output columns' kinds (keys, then aggregates); `key_classes`: per key, M where its integer values are
    known to hold |v| < 2^M (`program.key_classes`): the sort compares M + 2 bits of it, not 64 (+ 1 round:
    zeroed on invalid rows). `per_row`: the keys are unique in the input (the planner's `tree.rows_as_groups`),
    so each row is its own group and nothing is sorted (`_per_row`). `provenance_bits`: each provenance
    column's width (`program.provenance_bits`), so a MIN of it over all rows compares that many bits.
    `once`: the provenance columns whose every value is on one row at most (the planner's word: no join
    beneath repeats a row), so a group's distinct rows of each are its valid rows with the column not NULL,
    a sum in the group's segmented scan (or the total) instead of a distinct count: no sort of its own, and
    no minor key in the group sort (the threshold's outcome is the same)."""
    if keys and per_row is not None and (rel.n or per_row["null_group"]):
        return _per_row(s, rel, keys, aggregates, threshold, kinds, per_row["null_group"], provenance_bits)
    if keys and rel.n == 0:  # no rows, no groups
        names = [name for name, _ in keys] + [a[0] for a in aggregates]
        return SecretRelation({name: null_column(kind, 0, s.frac_bits) for name, kind in zip(names, kinds)}, _zeros(0))
    stage = stage_over(s, rel)
    stage.provenance_bits = dict(provenance_bits or {})
    plain = [(name, aggregate_node(f, e)) for name, f, e, d in aggregates if not d]
    inputs, plan = stage.aggregate_inputs([node for _, node in plain], rel.valid)
    distinct_args = [(name, f, _distinct_arg(f, e)) for name, f, e, d in aggregates if d]
    named = threshold[1] if threshold else []
    provenance = [exp.column(p, quoted=True) for p in named if p not in once]
    summed = [exp.column(p, quoted=True) for p in named if p in once]
    if keys:
        classed = [bits if bits is not None and kind == "int" else None
                   for bits, kind in zip(key_classes or [None] * len(keys), kinds)]
        return _grouped(s, rel, stage, keys, plain, inputs, plan, distinct_args, provenance, threshold, classed,
                        summed)
    return _ungrouped(s, rel, stage, plain, inputs, plan, distinct_args, provenance, threshold, summed=summed)


def _distinct_arg(func: str, arg: exp.Expression) -> exp.Expression:
    """A DISTINCT aggregate's argument as it evaluates: under a copy of its own call, whatever tree it hangs
    in, so a DECIMAL keeps its exact limb (`stage.EXACT_DECIMAL_USES`) and distinct values 1e-5 apart are
    not counted as one fixed-point value."""
    return aggregate_node(func, arg).this


def _per_row(s, rel, keys, aggregates, threshold, kinds, null_group: bool, provenance_bits=None) -> SecretRelation:
    """GROUP BY keys unique in `rel`: each valid row is its group, so every aggregate is a per-row expression
    of its input (SUM(x) = x, COUNT(x) = x IS NOT NULL, MIN / MAX(x) = x, COUNT(DISTINCT x) = x IS NOT NULL,
    AVG(x) = x, not divided by its count of 1: `Stage.finish_aggregates`), and a group's distinct rows of each protected owner are that row's (1, or 0 where its
    provenance is NULL), compared with k as the sorted GROUP BY compares its counts. `null_group`: the one key
    may be NULL on several rows; those rows are one group, aggregated as `_ungrouped` over them and appended
    as one more row (n + 1 rows, a public size), valid when it holds a row. Rounds: the arguments' + 1
    (weights) + the threshold's comparison, + AVG's range check (one comparison, one opening); with the NULL
    group, + 1 (its weights) + its `_ungrouped` (MIN / MAX tournaments, ceil(log2 n) levels, then its bounds, the
    nonempty tests riding in the first's comparison: `count_tests`). Saved: the group sort and its
    neighbour tests and segmented scans (`relational.group_by`), and the per-aggregate nonempty comparisons
    (a count here is 0 or 1)."""
    names = [name for name, _ in keys] + [a[0] for a in aggregates]
    plain = [(name, aggregate_node(f, e)) for name, f, e, d in aggregates if not d or f != "COUNT"]  # one row: x
    distinct_args = [(name, f, e) for name, f, e, d in aggregates if d and f == "COUNT"]
    provenance = [exp.column(p, quoted=True) for p in (threshold[1] if threshold else [])]
    key_values = [evaluate(s, rel, e) for _, e in keys]
    weight = arith.beaver_mul(s, rel.valid, key_values[0].valid) if null_group and rel.n else rel.valid
    if rel.n:
        stage = stage_over(s, rel)
        inputs, plan = stage.aggregate_inputs([node for _, node in plain], weight)
        stage.finish_aggregates(plan, [c for _, c in inputs] + [limb for _, _, limbs in stage.text_extremes
                                                                for limb in limbs], counts_are_bits=True)
        counts = [w for w, _ in _weighted(s, SecretRelation(rel.columns, weight),
                                          [e for _, _, e in distinct_args] + provenance)]
        columns = dict(zip([name for name, _ in keys], key_values))
        columns.update({name: stage.aggs[node.sql(dialect="duckdb")] for name, node in plain})
        columns.update({name: SV([count], _ones(s, rel.n), "int") for (name, _, _), count in zip(distinct_args, counts)})
        valid = weight
        if threshold is not None:
            valid = _at_least(s, counts[len(distinct_args):] or [weight], threshold[0], times=valid, most=1)
        _assert_avg_ranges(s, stage, valid)
        out = SecretRelation({name: columns[name] for name in names}, valid)
    else:
        out = SecretRelation({name: null_column(kind, 0, s.frac_bits) for name, kind in zip(names, kinds)}, _zeros(0))
    if not null_group:
        return out
    nulls = SecretRelation(rel.columns, rel.valid - weight)
    nulls_stage = stage_over(s, nulls)
    nulls_stage.provenance_bits = dict(provenance_bits or {})  # its MIN(provenance) on their widths
    plain = [(name, aggregate_node(f, e)) for name, f, e, d in aggregates if not d]
    inputs, plan = nulls_stage.aggregate_inputs([node for _, node in plain], nulls.valid)
    group = _ungrouped(s, nulls, nulls_stage, plain, inputs, plan,
                       [(n, f, _distinct_arg(f, e)) for n, f, e, d in aggregates if d], provenance, threshold,
                       as_group=True)
    group.columns[keys[0][0]] = null_column(kinds[0], 1, s.frac_bits, like=key_values[0])
    return union_all(s, [out, SecretRelation({name: group.columns[name] for name in names}, group.valid)], kinds)


def _weighted(s: SpuSession, rel: SecretRelation, args: list[exp.Expression]) -> list[tuple[ArithShare, SV]]:
    """(row valid * value valid, canonical value) of each argument: one product round for all."""
    return canonical_weighted(s, [], [evaluate(s, rel, e) for e in args], rel.valid)[1]


def _grouped(s, rel, stage, keys, plain, inputs, plan, distinct_args, provenance, threshold, classed, summed=()
             ) -> SecretRelation:
    n = rel.n
    key_values, minor = canonical_weighted(s, [evaluate(s, rel, e) for _, e in keys],
                                           [evaluate(s, rel, e) for e in
                                            [e for _, _, e in distinct_args] + provenance + list(summed)],
                                           rel.valid)  # one round: the keys, and the DISTINCT aggregates' weights
    once = [("sum", w) for w, _ in minor[len(minor) - len(summed):]]  # counted in the groups' scan
    minor = minor[:len(minor) - len(summed)]
    key_values = _classed_keys(s, key_values, rel.valid, classed)
    offsets = [None, *(o for v, bits in zip(key_values, classed)  # 2^M: a classed value in [0, 2^(M + 1))
                       for o in (None, *([None] * len(compared_limbs(v)) if bits is None else [1 << bits])))]
    group_keys = _offset([_ones(s, n) - rel.valid, *_key_columns(key_values)], offsets, s, 1)
    widths = [2, *(w for v, bits in zip(key_values, classed)  # the 0/1 flags at 2 bits
                   for w in (2, *([64] * len(compared_limbs(v)) if bits is None else [bits + 2])))]
    summing = [f != "COUNT" for _, f, _ in distinct_args] + [False] * len(provenance)
    counted = [relational.Counted(w, tuple(compared_limbs(v)), summed=tuple(v.limbs) if sums else ())
               for (w, v), sums in zip(minor, summing)]  # the first rides along the sort
    grouped = relational.group_by(s, group_keys, [*inputs, *once], key_bits=widths, within=counted,
                                  carry=_uncompared_limbs(key_values))
    grouped.keys[:] = _offset(grouped.keys, offsets, s, -1)
    once_counts = grouped.aggregates[len(inputs):]
    results = grouped.aggregates[:len(inputs)] + stage.text_extreme_limbs(group_keys)
    stage.n = n
    valid = arith.beaver_mul(s, grouped.last, _ones(s, n) - grouped.keys[0]) if n else _zeros(0)
    bounded = (grouped.distinct[len(distinct_args):] + once_counts or [results[0]]) \
        if threshold is not None and n else []
    # the threshold beside the empty-group tests: one comparison (`count_tests`)
    valid, nonempty = count_tests(s, bounded, threshold[0] if bounded else 0, [results[c] for c in tested_columns(plan)],
                                  times=valid, most=n)
    stage.finish_aggregates(plan, results, nonempty=nonempty)
    columns, i, j = {}, 1, 0
    for (name, _), v in zip(keys, key_values):
        compared, rest = len(compared_limbs(v)), len(v.limbs) - len(compared_limbs(v))
        limbs = [*grouped.keys[i + 1:i + 1 + compared], *grouped.carried[j:j + rest]]
        columns[name] = SV(limbs, grouped.keys[i], v.kind)
        i, j = i + 1 + compared, j + rest
    counts = grouped.distinct
    for name, node in plain:
        columns[name] = stage.aggs[node.sql(dialect="duckdb")]
    for (name, func, _), count, sums, (_, v) in zip(distinct_args, counts, grouped.distinct_sums, minor):
        columns[name] = _of_distinct(s, stage, func, count, sums, v.kind)
    _assert_avg_ranges(s, stage, valid)
    return SecretRelation(columns, valid)


def _ungrouped(s, rel, stage, plain, inputs, plan, distinct_args, provenance, threshold, as_group: bool = False,
               summed=()) -> SecretRelation:
    """One row of every aggregate over the valid rows; `as_group`: a group's row, valid only if it holds a
    row (SQL's ungrouped aggregate is one row even over none). `summed`: provenance columns counted by
    their weights' total (`aggregate`'s `once`)."""
    n = rel.n
    totals = _totals(s, inputs, stage.input_bits)
    totals += [limb[n - 1:] if n else arith.public(s, np.zeros(1, dtype=np.int64))
               for limb in stage.text_extreme_limbs()]
    stage.n = 1
    summing = [f != "COUNT" for _, f, _ in distinct_args] + [False] * len(provenance)
    weighted = _weighted(s, rel, [e for _, _, e in distinct_args] + provenance + list(summed))
    once_counts = [arith.total(w) for w, _ in weighted[len(weighted) - len(summed):]]
    weighted = weighted[:len(weighted) - len(summed)]
    found = [stage.distinct_totals(w, compared_limbs(v), summed=tuple(v.limbs) if sums else ()) if n else
             (_zeros(1), [_zeros(1, limb.frac) for limb in v.limbs] if sums else [])
             for (w, v), sums in zip(weighted, summing)]
    counts = [count for count, _ in found]
    bounds = [(counts[len(distinct_args):] + once_counts or [totals[0]], threshold[0])] if threshold is not None else []
    bounds += [([totals[0]], 1)] if as_group else []
    # the empty-group tests ride in the first bound's comparison (`count_tests`)
    valid, nonempty = count_tests(s, *(bounds[0] if bounds else ([], 0)), [totals[c] for c in tested_columns(plan)],
                                  times=None if bounds else _ones(s, 1), most=n)
    for counted, k in bounds[1:]:
        valid = _at_least(s, counted, k, times=valid, most=n)
    stage.finish_aggregates(plan, totals, nonempty=nonempty)
    columns = {name: stage.aggs[node.sql(dialect="duckdb")] for name, node in plain}
    for (name, func, _), (count, sums), (_, v) in zip(distinct_args, found, weighted):
        columns[name] = _of_distinct(s, stage, func, count, sums, v.kind)
    _assert_avg_ranges(s, stage, valid)
    return SecretRelation(columns, valid)


def _of_distinct(s: SpuSession, stage: Stage, func: str, count: ArithShare, sums: list[ArithShare], kind: str) -> SV:
    """COUNT / SUM / AVG (DISTINCT x) from the number of x's distinct values and the sums of their limbs
    (`relational.Counted.summed`): SUM is NULL over none (one comparison), AVG their sum over their number,
    divided and range-checked as AVG is (`Stage.quotient`, `check_range`)."""
    if func == "COUNT":
        return SV([count], _ones(s, len(count)), "int")
    (nonempty,) = compare.positive_many(s, [count])
    if func == "SUM":
        return SV(sums, nonempty, kind)
    total = sums[-1]  # a DECIMAL's fixed-point limb follows its exact one
    if total.frac == 0:
        total = ArithShare(total.data * np.uint64(1 << s.frac_bits), s.frac_bits)
    stage.check_range(total, AVG_LIMIT)
    return SV([stage.quotient(total, count + (_ones(s, len(count)) - nonempty))], nonempty, "fixed")


def _totals(s: SpuSession, inputs: list[tuple[str, ArithShare]], bits: dict[int, int] | None = None
            ) -> list[ArithShare]:
    """Every aggregate input over all rows (`stage._total`), the MIN/MAX tournaments side by side:
    ceil(log2 n) levels of one batched comparison and mux for all of them (not per aggregate), on the
    widest of their `bits` (input index -> the bits its comparisons need; 64 where not given)."""
    out = [_total(s, kind, column) if kind == "sum" or len(column) == 0 else None for kind, column in inputs]
    racing = {i: column for i, (kind, column) in enumerate(inputs) if out[i] is None}
    while any(len(c) > 1 for c in racing.values()):
        playing = [i for i, c in racing.items() if len(c) > 1]
        halves = {i: len(racing[i]) // 2 for i in playing}
        firsts = [racing[i][:halves[i]] for i in playing]
        seconds = [racing[i][halves[i]:2 * halves[i]] for i in playing]
        less = compare.less_than(s, arith.concat([x.with_frac(0) for x in firsts]),
                                 arith.concat([y.with_frac(0) for y in seconds]),
                                 bits=max((bits or {}).get(i, 64) for i in playing))
        items, at = [], 0
        for i, a, b in zip(playing, firsts, seconds):
            c = less[at:at + len(a)]
            at += len(a)
            items.append((c, b, a) if inputs[i][0] == "max" else (c, a, b))
        for i, win in zip(playing, compare.mux_bits_many(s, items)):
            rest = racing[i][2 * halves[i]:]
            racing[i] = arith.concat([win, rest]) if len(rest) else win
    for i, column in racing.items():
        out[i] = column
    return out


def _assert_avg_ranges(s: SpuSession, stage: Stage, valid: ArithShare) -> None:
    """Open how many kept AVG sums exceed the division's range (one round; normally 0)."""
    if stage.out_of_range:
        stage.out_of_range = arith.beaver_mul_many(s, [(bit, valid) for bit in stage.out_of_range])
        stage.assert_ranges()


# -- windows -----------------------------------------------------------------------------------------

WINDOW_FUNCS = ("row_number", "rank", "dense_rank", "count", "sum", "min", "max")
WINDOW_FRAMES = ("rows", "partition")  # ROWS ... AND CURRENT ROW; ... AND UNBOUNDED FOLLOWING


def window(s: SpuSession, rel: SecretRelation, name: str, func: str, arg: exp.Expression | None,
           partition: list[exp.Expression], order: list[tuple[exp.Expression, bool, bool]],
           frame: str | None = None) -> SecretRelation:
    """Append func() OVER (PARTITION BY ... ORDER BY ...) (SQL's default frame: the running value up to
    the current row's last peer; `frame` "rows": up to the current row; "partition": the whole
    partition). Sorts by (invalid, partition, order), so the rows come back in that order. ROW_NUMBER
    and the "rows" frame see peers in a random order (`shuffled`, N rounds more); otherwise peers get one
    value. Rounds: 1 + the sort + 2 neighbour tests + 2-4 segmented scans (log2 n each; MIN/MAX 8 per
    level) + a comparison (7) + 2."""
    if func == "row_number" or frame == "rows":
        rel = shuffled(s, rel)
    n = rel.n
    values = canonical(s, [evaluate(s, rel, e) for e in [*partition, *(o for o, _, _ in order),
                                                           *([_window_arg(func, arg)] if arg is not None else [])]])
    part, ords = values[:len(partition)], values[len(partition):len(partition) + len(order)]
    arg_value = values[-1] if arg is not None else None
    order_keys, desc, _ = _order_keys(s, ords, [(d, nf) for _, d, nf in order])
    invalid = _ones(s, n) - rel.valid
    part_keys = [invalid, *_key_columns(part)]
    extra = [*arg_value.limbs, arg_value.valid] if arg_value is not None else []
    if n == 0:
        kind = "int" if arg_value is None or func in ("count", "row_number", "rank", "dense_rank") else arg_value.kind
        return SecretRelation({**rel.columns, name: null_column(kind, 0, s.frac_bits)}, rel.valid)
    sorted_keys, payload = relational.sort(s, [*part_keys, *order_keys], [*_flatten(rel), rel.valid, *extra],
                                           [False] * len(part_keys) + desc)
    flat, valid, extra = payload[:len(payload) - len(extra) - 1], payload[len(payload) - len(extra) - 1], \
        payload[len(payload) - len(extra):]
    columns = _rebuild(flat, rel.columns)
    part_starts = relational.neighbour_starts(s, sorted_keys[:len(part_keys)])
    peer_starts = relational.neighbour_starts(s, sorted_keys) if order and frame is None else \
        _ones(s, n) if frame == "rows" else part_starts  # each row its own peer; or the whole partition
    ones = _ones(s, n)
    if func == "row_number":
        value = SV([relational.segmented_sum(s, [ones], part_starts)[0]], ones, "int")
    elif func == "rank":
        number = relational.segmented_sum(s, [ones], part_starts)[0]
        at_start = arith.beaver_mul(s, peer_starts, number)
        value = SV([relational.segmented_sum(s, [at_start], peer_starts)[0]], ones, "int")
    elif func == "dense_rank":
        value = SV([relational.segmented_sum(s, [peer_starts], part_starts)[0]], ones, "int")
    else:
        value = _running_aggregate(s, func, SV(extra[:-1], extra[-1], arg_value.kind) if extra else None,
                                   valid, part_starts, peer_starts)
    return SecretRelation({**columns, name: value}, valid)


def _window_arg(func: str, arg: exp.Expression) -> exp.Expression:
    """A window aggregate's argument as it evaluates: under a copy of its own call (as `_distinct_arg`),
    whatever tree it hangs in, so a DECIMAL keeps its exact limb (`stage.EXACT_DECIMAL_USES`), the kind
    the program declares for SUM / MIN / MAX OVER of a DECIMAL."""
    return aggregate_node(func.upper(), arg).this


def _running_aggregate(s: SpuSession, func: str, arg: SV | None, valid: ArithShare,
                       part_starts: ArithShare, peer_starts: ArithShare) -> SV:
    """COUNT/SUM/MIN/MAX from the partition's start to the current row's last peer."""
    n = len(valid)
    ones = _ones(s, n)
    w = valid if arg is None else arith.beaver_mul(s, valid, arg.valid)
    if func == "count":
        count = _to_last_peer(s, relational.segmented_sum(s, [w], part_starts), peer_starts)[0]
        return SV([count], ones, "int")
    if arg.kind == "text":
        raise NotSupportedError(f"{func.upper()}() OVER (...) of text in secure computation")
    if func == "sum":
        weighted = arith.beaver_mul_many(s, [(w, limb) for limb in arg.limbs])
        scanned = relational.segmented_sum(s, [w, *[x.with_frac(limb.frac) for x, limb in zip(weighted, arg.limbs)]],
                                           part_starts)
    else:
        take_max = func == "max"
        fill = [ArithShare(arith.public(s, np.full(n, -SENTINEL if take_max else SENTINEL, np.int64)).data, limb.frac)
                for limb in arg.limbs]
        filled = compare.mux_many(s, [(w, limb, f) for limb, f in zip(arg.limbs, fill)])
        scanned = relational.segmented_sum(s, [w], part_starts)
        scanned += relational.segmented_extreme(s, filled, part_starts, [take_max] * len(filled))
    count, *limbs = _to_last_peer(s, scanned, peer_starts)
    nonempty = compare.greater_than(s, count, _zeros(n), arith=True)
    return SV(limbs, nonempty, arg.kind)


def _to_last_peer(s: SpuSession, columns: list[ArithShare], peer_starts: ArithShare) -> list[ArithShare]:
    """Every row takes the value at the last row of its run of peers: a segmented copy over the
    reversed rows (1 product round + log2 n)."""
    n = len(peer_starts)
    ends = ArithShare(np.concatenate([peer_starts.data[1:], _ones(s, 1).data]))[::-1]
    at_end = arith.beaver_mul_many(s, [(ends, c[::-1]) for c in columns])
    copied = relational.segmented_sum(s, [x.with_frac(c.frac) for x, c in zip(at_end, columns)], ends)
    return [ArithShare(np.ascontiguousarray(c.data[::-1]), c.frac) for c in copied] if n else list(columns)


# -- joins -------------------------------------------------------------------------------------------

def exact_key_scale(ka: str, kb: str) -> int | None:
    """Join keys of two kinds among int and decimals compare exactly at the larger scale (their
    fixed-point limbs would round 0.00011 and 0.0001 alike); None for other pairs of kinds."""
    scales = [0 if k == "int" else decimal_scale(k) for k in (ka, kb)]
    return None if None in scales else max(scales)


def _at_scale(v: SV, scale: int) -> SV:
    """An int or decimal key as the exact integer x * 10^scale (local: a public factor)."""
    own = 0 if v.kind == "int" else decimal_scale(v.kind)
    return SV([ArithShare(v.limbs[0].data * np.uint64(10 ** (scale - own)), 0)], v.valid, "int")


def _key_pairs(s: SpuSession, left: SecretRelation, right: SecretRelation, left_keys, right_keys
               ) -> tuple[list[SV], list[SV]]:
    """Both sides' keys, each pair in one kind (numbers of mixed kinds as fixed point)."""
    lv = [evaluate(s, left, e) for e in left_keys]
    rv = [evaluate(s, right, e) for e in right_keys]
    out_l, out_r = [], []
    for a, b in zip(lv, rv):
        if a.kind != b.kind:
            if "text" in (a.kind, b.kind):
                raise NotSupportedError(f"join keys of kinds {a.kind} and {b.kind} in secure computation")
            if exact_key_scale(a.kind, b.kind) is not None:
                a, b = _at_scale(a, exact_key_scale(a.kind, b.kind)), _at_scale(b, exact_key_scale(a.kind, b.kind))
            else:
                a, b = conform(s, a, "fixed"), conform(s, b, "fixed")
        elif a.kind == "text":  # keys of two widths: both at the wider
            a, b = level_text(a, b)
        out_l.append(a)
        out_r.append(b)
    return out_l, out_r


def product(s: SpuSession, factors: list[ArithShare]) -> ArithShare:
    """The elementwise product of 0/1 shares as a balanced tree: ceil(log2 k) rounds for k factors."""
    return products(s, [factors])[0]


def products(s: SpuSession, lists: list[list[ArithShare]]) -> list[ArithShare]:
    """`product` of each list, the trees side by side: ceil(log2 of the longest) rounds in all."""
    lists = [list(f) for f in lists]
    while any(len(f) > 1 for f in lists):
        pairs = [list(zip(f[0::2], f[1::2])) for f in lists]
        got = iter(arith.beaver_mul_many(s, [p for ps in pairs for p in ps]))
        lists = [[next(got) for _ in ps] + f[len(ps) * 2:] for f, ps in zip(lists, pairs)]
    return [f[0] for f in lists]


def _keys_match(s: SpuSession, left_valid: ArithShare, right_valid: ArithShare, lk: list[SV], rk: list[SV],
                li: np.ndarray, ri: np.ndarray) -> ArithShare:
    """Per pair (li[p], ri[p]): both rows valid, every key pair equal and neither NULL. One batched
    equality test over every key (and text limb) at once (~7 rounds), then a product tree over the
    2 + 3k factors (ceil(log2(2 + 3k)) rounds) -- not one comparison and 3 products per key in turn."""
    factors, xs, ys = [left_valid, right_valid], [], []
    for a, b in zip(lk, rk):
        a, b = _take(a, li), _take(b, ri)
        if a.kind == "text":
            xs += a.limbs
            ys += b.limbs
        else:  # the same kind already (`_key_pairs`); a decimal compares its exact limb
            xs.append(a.value.with_frac(0))
            ys.append(b.value.with_frac(0))
        factors += [a.valid, b.valid]
    if xs:
        size = len(li)
        eq = compare.equal(s, arith.concat(xs), arith.concat([y.with_frac(0) for y in ys]), arith=True)
        factors += [eq[i * size:(i + 1) * size] for i in range(len(xs))]
    return product(s, factors)


def pairs_join(s: SpuSession, left: SecretRelation, right: SecretRelation, left_keys, right_keys,
               condition: exp.Expression | None, keep_unmatched: bool, right_kinds: dict[str, str]) -> SecretRelation:
    """INNER / CROSS (and LEFT with `keep_unmatched`) join as Secrecy's nested-loop join: every pair
    (n*m rows, a public size: O(n*m) work and bytes), valid = both valid * keys equal and not NULL *
    the residual condition. LEFT appends the n left rows with NULL right columns, valid where the
    left row is valid and no pair matched. Rounds: every key's equality in one batch (~7) +
    ceil(log2(2 + 3k)) (`_keys_match`) + the condition's + 1 (+ a comparison, 7, and 1 for LEFT)."""
    n, m = left.n, right.n
    li, ri = np.repeat(np.arange(n), m), np.tile(np.arange(m), n)
    lk, rk = _key_pairs(s, left, right, left_keys, right_keys)
    columns = {**{c: _take(v, li) for c, v in left.columns.items()},
               **{c: _take(v, ri) for c, v in right.columns.items()}}
    pairs = SecretRelation(columns, _keys_match(s, left.valid[li], right.valid[ri], lk, rk, li, ri))
    if condition is not None:
        pairs = filter_rows(s, pairs, condition)
    if not keep_unmatched:
        return pairs
    matches = ArithShare(pairs.valid.data.reshape(n, m).sum(axis=1, dtype=np.uint64) if n else np.zeros(0, np.uint64))
    matched = compare.greater_than(s, matches, _zeros(n), arith=True)
    lonely = arith.beaver_mul(s, left.valid, _ones(s, n) - matched)
    unmatched = {**left.columns, **{c: null_column(k, n, s.frac_bits) for c, k in right_kinds.items()}}
    return union_all(s, [pairs, SecretRelation(unmatched, lonely)],
                     [v.kind for v in pairs.columns.values()])


def semi_join(s: SpuSession, left: SecretRelation, right: SecretRelation, left_keys, right_keys,
              anti: bool, null_aware: bool = False, key_classes: list[int | None] | None = None) -> SecretRelation:
    """SEMI / ANTI join, sort-based as in Secrecy: both sides' rows concatenated with a side tag (right
    0, left 1), sorted by (keys not NULL, keys, tag), so a key's right rows precede its left rows; a
    segmented sum counts the valid right rows of each run and a left row matches where it is > 0.
    The result: the n + m concatenated rows with left's columns, valid only at kept left rows (a public
    size; `program._kept_rows` cuts them back to the n left rows); nothing is opened, so no party learns
    which rows matched. ANTI keeps unmatched left rows (a NULL key never matches); `null_aware` is NOT
    IN's rule: no row when the right side holds a NULL key, every left row when the right side is empty.
    `key_classes` (as `pk_join`'s): a classed integer key, zeroed on the rows that match nothing, is compared
    on M + 2 bits, and the 0/1 flags on 2, all packed with the sort's tiebreak (`relational.packed_groups`),
    not each on 64 bits (one more round, zeroing the classed keys, where there is one).

    Rounds, for n + m rows, N compute parties (C, C_eq: a comparison's and an equality's rounds, 6 and 6
    for 2 parties, 8 and 9 for 3; S = ceil(log2(n + m)), the segmented sum's levels for n + m < 8192;
    k key columns of one limb each): 1 (NULL keys zeroed) + ceil(log2(k + 1)) (row and key validity) +
    the sort of k + 2 columns (keys not NULL, the keys, the side tag; `relational.sort`: N + L (C_eq +
    ceil(log2(k + 3)) + 1), L its levels, at most ceil(ceil(log2(n + m)) / 3) + 2 with high probability)
    + C_eq + ceil(log2(k + 1)) + 1 (run starts) + S (the count per run) + C + 1 (count > 0) + 1 (valid *
    key valid * match); NOT IN + 1 (its two totals ride in the same comparison). One key, 2 parties:
    C_eq + C + 6 + S + the sort = 18 + S + the sort, NOT IN 19 + S + the sort (tests/test_spu_rounds.py)."""
    n, m = left.n, right.n
    if null_aware and len(left_keys) != 1:
        raise NotSupportedError("NOT IN with a tuple of several columns in secure computation; write NOT EXISTS")
    lk, rk = _key_pairs(s, left, right, left_keys, right_keys)
    both_keys = canonical(s, [*lk, *rk])
    lk, rk = both_keys[:len(lk)], both_keys[len(lk):]
    kv_l, kv_r, right_ok, left_ok = products(s, [[v.valid for v in lk] or [_ones(s, n)],
                                                 [v.valid for v in rk] or [_ones(s, m)],
                                                 [right.valid, *(v.valid for v in rk)],
                                                 [left.valid, *(v.valid for v in lk)]])  # keys not NULL
    classed = [bits if bits is not None and len(a.limbs) == 1 else None
               for a, bits in zip(lk, key_classes or [None] * len(lk))]
    lk, rk = _classed_pairs(s, lk, rk, left_ok, right_ok, classed)
    keys, widths = _paired_keys(s, lk, rk, classed)
    keys, widths = [arith.concat([kv_l, kv_r]), *keys], [2, *widths]
    tag = arith.public(s, np.concatenate([np.ones(n, np.int64), np.zeros(m, np.int64)]))
    pad = {c: null_column(v.kind, m, s.frac_bits) for c, v in left.columns.items()}
    both = union_all(s, [left, SecretRelation(pad, _zeros(m))], [v.kind for v in left.columns.values()])
    if n + m == 0:
        return both
    sorted_keys, payload = relational.sort(s, [*keys, tag], [*_flatten(both), both.valid,
                                                             arith.concat([left_ok, _zeros(m)]),
                                                             arith.concat([_zeros(n), right_ok])],
                                           key_bits=[*widths, 2])
    flat, valid, joinable, right_rows = payload[:-3], payload[-3], payload[-2], payload[-1]
    starts = relational.neighbour_starts(s, sorted_keys[:-1], widths)
    seen = relational.segmented_sum(s, [right_rows], starts)[0]
    if not null_aware:
        hit = compare.greater_than(s, seen, _zeros(n + m), arith=True)
        (matched,) = arith.beaver_mul_many(s, [(joinable, hit)])  # valid, key not NULL, matched
        return SecretRelation(_rebuild(flat, left.columns), valid - matched if anti else matched)
    # NOT IN: the right side's valid rows and those with a NULL key (right.valid - right_ok: one key) counted,
    # and compared with 0 in the same batch as the runs' counts
    counts = arith.concat([seen, arith.total(right.valid), arith.total(right.valid - right_ok)])
    found = compare.greater_than(s, counts, _zeros(n + m + 2), arith=True)
    hit, nonempty, has_null = found[:n + m], found[n + m:n + m + 1], found[n + m + 1:]
    matched, emptied, clean = arith.beaver_mul_many(
        s, [(joinable, hit), (valid, _broadcast(nonempty, n + m)), (nonempty, _ones(s, 1) - has_null)])
    # kept: valid AND (right empty OR (no NULL on the right AND key not NULL AND unmatched))
    (alone,) = arith.beaver_mul_many(s, [(_broadcast(clean, n + m), joinable - matched)])
    return SecretRelation(_rebuild(flat, left.columns), valid - emptied + alone)


def pk_join(s: SpuSession, left: SecretRelation, right: SecretRelation, left_keys, right_keys, unique: str,
            keep_unmatched: bool, declared: str | None = None, key_classes: list[int | None] | None = None,
            declared_many: str | None = None) -> SecretRelation:
    """INNER (LEFT with `keep_unmatched`) equi-join where the `unique` side ("left" | "right") has no two
    valid rows with one non-NULL key: sort-based, as Secrecy's and Krastnikov et al.'s PK-FK joins, in
    n_u + n_m rows (a public size), not n_u * n_m.

    The unique rows (tag 0) and the many rows (tag 1) are concatenated and sorted by (group, key limbs,
    tag); group = 1 for a valid row with no NULL key, 2 for any other many row, and a distinct 3 + i for
    any other unique row i (local: public factors), so only joinable rows share a run and a run's unique
    row comes first. A segmented sum copies the unique row's columns down its run: each many row gets its
    match's values (NULL, all zero, where it has none) and `found`. Valid: a many row with a match
    (inner); every valid many row (LEFT, many side preserved); and, LEFT with the unique side preserved,
    also a valid unique row whose next row is not of its run (matched by none). `declared` (a party's
    declared key, not a structural one): a unique row not starting its run repeats a valid key; how many
    do is compared with 0 and that one bit is opened: DataError naming the key if set. `key_classes`: per
    key pair, M where both sides' integer keys are known to hold |v| < 2^M (their owners' published
    classes, `program.key_classes`), so the sort compares M + 2 bits of it, not 64. `declared_many`: the many
    side's declared key, where a GROUP BY above takes its rows as groups (`tree.rows_as_groups`): its rows'
    joinable flags ride the sort, and whether two of them share a run is opened (one bit, DataError).
    Rounds: the keys' + 1 (canonical) + ceil(log2(k + 1)) (row and key validity) + the sort
    (`relational.sort`) + neighbour tests (~7 + ceil(log2 limbs)) + 2 ceil(log2 n) - 1 (the copy) + 1 (LEFT
    with the unique side preserved), + 1 + 7 + 1 for a declared key, + 1 with a classed key (zeroed on the
    rows that join nothing)."""
    lk, rk = _key_pairs(s, left, right, left_keys, right_keys)
    both_keys = canonical(s, [*lk, *rk])
    lk, rk = both_keys[:len(lk)], both_keys[len(lk):]
    uniq, many, uk, mk = (left, right, lk, rk) if unique == "left" else (right, left, rk, lk)
    nu, nm = uniq.n, many.n
    n = nu + nm
    if n == 0:
        return SecretRelation({**left.columns, **right.columns}, _zeros(0))
    ok_u, ok_m = products(s, [[uniq.valid, *(v.valid for v in uk)], [many.valid, *(v.valid for v in mk)]])
    group = arith.concat([arith.add_public(s, ok_u * -(np.arange(nu) + 2), np.arange(nu) + 3),
                          arith.add_public(s, -ok_m, 2)])
    classed = [bits if bits is not None and len(a.limbs) == 1 else None
               for a, bits in zip(uk, key_classes or [None] * len(uk))]
    uk, mk = _classed_keys(s, uk, ok_u, classed), _classed_keys(s, mk, ok_m, classed)
    keys, widths = _paired_keys(s, uk, mk, classed)
    keys, widths = [group, *keys], [(nu + 2).bit_length() + 1, *widths]  # group in [1, nu + 2]
    keys.append(arith.public(s, np.concatenate([np.zeros(nu, np.int64), np.ones(nm, np.int64)])))
    widths.append(2)  # the side tag, 0/1: known widths are packed with the sort's tiebreak
    u_flat, m_flat = _flatten(uniq), _flatten(many)
    payload = [arith.concat([c, _zeros(nm, c.frac)]) for c in u_flat] + [arith.concat([_zeros(nu, c.frac), c])
                                                                         for c in m_flat]
    payload += [arith.concat([_zeros(nu), many.valid]), arith.concat([uniq.valid, _zeros(nm)])]
    payload += [arith.concat([_zeros(nu), ok_m])] if declared_many is not None else []
    sorted_keys, payload = relational.sort(s, keys, payload, key_bits=widths)
    joinable_many = payload.pop() if declared_many is not None else None
    tag, many_valid, unique_valid = sorted_keys[-1], payload[-2], payload[-1]
    starts = relational.neighbour_starts(s, sorted_keys[:-1], widths[:-1])
    copied = relational.segmented_sum(s, [_ones(s, n) - tag, *payload[:len(u_flat)]], starts)
    found = copied[0] - (_ones(s, n) - tag)  # a many row: its run's unique rows; a unique row: 0 (the others)
    if declared is not None:
        _check_declared(s, starts, tag, declared)
    if declared_many is not None:
        _check_declared_many(s, starts, tag, joinable_many, declared_many)
    if not keep_unmatched:
        valid = found
    elif unique == "right":
        valid = many_valid
    else:  # a valid unique row the next row of whose run is not (no match), with NULL right columns
        next_same = ArithShare(np.concatenate([(_ones(s, n - 1) - starts[1:]).data, _zeros(1).data]))
        valid = found + unique_valid - arith.beaver_mul(s, unique_valid, next_same)
    unique_columns = _rebuild([c.with_frac(f.frac) for c, f in zip(copied[1:], u_flat)], uniq.columns)
    many_columns = _rebuild(payload[len(u_flat):len(u_flat) + len(m_flat)], many.columns)
    by_side = {"left": unique_columns, "right": many_columns} if unique == "left" else \
        {"left": many_columns, "right": unique_columns}
    return SecretRelation({**by_side["left"], **by_side["right"]}, valid)


def _offset(columns: list[ArithShare], offsets: list[int | None], s: SpuSession, sign: int) -> list[ArithShare]:
    """Each column plus (sign 1) or minus (-1) its public offset, where it has one (local)."""
    return [c if o is None else arith.add_public(s, c, sign * o) for c, o in zip(columns, offsets)]


def _paired_keys(s: SpuSession, first: list[SV], second: list[SV], classed: list[int | None]
                 ) -> tuple[list[ArithShare], list[int]]:
    """Each key pair's limbs as sort keys (the first side's rows, then the second's) and their widths: a
    classed key offset by 2^M on M + 2 bits (|v| < 2^M: v + 2^M in [0, 2^(M + 1))), any other limb on 64."""
    keys, widths = [], []
    for a, b, bits in zip(first, second, classed):
        for x, y in zip(a.limbs, b.limbs):
            key = arith.concat([x, y.with_frac(x.frac)])
            keys.append(key if bits is None else arith.add_public(s, key, 1 << bits))
            widths.append(64 if bits is None else bits + 2)
    return keys, widths


def _classed_pairs(s: SpuSession, lk: list[SV], rk: list[SV], left_ok: ArithShare, right_ok: ArithShare,
                   classed: list[int | None]) -> tuple[list[SV], list[SV]]:
    """Both sides' keys with each classed pair zeroed on the rows that match nothing (`_classed_keys`), in
    one product round for both sides (none without a classed key)."""
    if all(bits is None for bits in classed):
        return lk, rk
    pairs = [(v.value, ok) for side, ok in ((lk, left_ok), (rk, right_ok)) for v, bits in zip(side, classed)
             if bits is not None]
    got = iter(arith.beaver_mul_many(s, pairs))
    return tuple([v if bits is None else SV([next(got).with_frac(v.value.frac)], v.valid, v.kind)
                  for v, bits in zip(side, classed)] for side in (lk, rk))


def _classed_keys(s: SpuSession, keys: list[SV], ok: ArithShare, classed: list[int | None]) -> list[SV]:
    """The keys with each classed one zeroed on rows that join nothing (`ok` 0: invalid, or a NULL key),
    so every row's value lies in its class whatever an invalid row carries (one product round, none
    without a classed key)."""
    if all(bits is None for bits in classed):
        return keys
    got = iter(arith.beaver_mul_many(s, [(v.value, ok) for v, bits in zip(keys, classed) if bits is not None]))
    return [v if bits is None else SV([next(got).with_frac(v.value.frac)], v.valid, v.kind)
            for v, bits in zip(keys, classed)]


def _check_declared(s: SpuSession, starts: ArithShare, tag: ArithShare, declared: str) -> None:
    """Open whether any unique row repeats its run's key (a valid one: the other groups hold one unique
    row each): one product round, a comparison with 0, one opened bit; DataError naming the key."""
    n = len(tag)
    ones = _ones(s, n)
    _fail_if_repeated(s, arith.total(arith.beaver_mul(s, ones - starts, ones - tag)), declared)


def _check_declared_many(s: SpuSession, starts: ArithShare, tag: ArithShare, joinable: ArithShare,
                         declared: str) -> None:
    """Open whether two many rows that can join (valid, no NULL key) share a key: such a row, not starting its
    run, after another many row (its run's rows are all joinable: group 1). Two product rounds, a comparison
    with 0, one opened bit; DataError naming the key."""
    if len(tag) < 2:
        return
    after_many, joinable_inside = arith.beaver_mul_many(s, [(tag[1:], tag[:-1]),
                                                            (_ones(s, len(tag) - 1) - starts[1:], joinable[1:])])
    _fail_if_repeated(s, arith.total(arith.beaver_mul(s, after_many, joinable_inside)), declared)


def _fail_if_repeated(s: SpuSession, repeats: ArithShare, declared: str) -> None:
    """Open one bit, whether `repeats` (a secret count) is above 0; DataError naming the declared key if so."""
    (broken,) = s.open_many(arith=[compare.greater_than(s, repeats, _zeros(1), arith=True).data])
    if int(broken[0]) & 1:
        raise DataError(f"the key {declared} is declared unique, but its table repeats a value of it that this "
                        "query relies on; correct the data or remove the declaration from the federation file")
