"""Which GROUP BY an SPU stage runs: the oblivious sort, or the one-hot group sums without a sort.

The one-hot sums (`executors/spu/one_hot_group.py`, issue 20) take one round where the sort takes ~60 at
10^5 rows. They apply when the key owner knows every row's group in plaintext and the groups are
publicly bounded: the GROUP BY keys are plain integer input columns of one compute party
(`stage._group_key_columns`), each with a published magnitude class M (|v| < 2^M: at most 2^(M+1) - 1
values, and NULL: 2^(M+1) group numbers per key, G their product); every aggregate is a sum (COUNT,
SUM, AVG; MIN / MAX and DISTINCT need the sort); and the group threshold's count of each protected
owner's distinct rows is a sum (`threshold_summed`): that owner's rows appear at most once in the stage's
rows (`SecureStage.rows_once`: its distinct rows are its weighted rows), or it is the key owner itself
and no cross-party filter weighs the rows (it counts its distinct rows per group in plaintext and shares
the G counts: `owner_counted`); else the sort counts them. The cost model then chooses by bytes
(`cost.one_hot_chosen`). The choice is recorded in the stage (`SecureStage.one_hot_groups`): EXPLAIN
prints it and execution follows it; the class-4 price (`place_he`) applies the same rules to the same
plan-time facts, so the price EXPLAIN shows is that of the path that runs.
"""

from __future__ import annotations

import dataclasses
import math

from sqlglot import exp

from sqlsecure.planner.cost import one_hot_chosen
from sqlsecure.planner.logical import aggregates_in
from sqlsecure.planner.physical import SecureStage

SUMMED = (exp.Count, exp.Sum, exp.Avg)


def published_groups(step: SecureStage, kinds: dict[str, str | None]) -> int | None:
    """G: at most how many groups the key owner's plain integer keys form by their published classes
    (None: the keys are not one party's plain integer columns, or one has no class)."""
    from sqlsecure.executors.spu.stage import _group_key_columns  # late: the stage imports the planner

    keys = _group_key_columns(step)
    classes = dict(step.bounds)
    if not keys or any(kinds.get(column) != "int" or column not in classes for _, column in keys):
        return None
    return math.prod(2 ** (classes[column] + 1) for _, column in keys)


def summed_aggregates(step: SecureStage) -> int | None:
    """How many distinct aggregates the stage computes, when all are sums (COUNT, SUM, AVG, none
    DISTINCT); None when one is not."""
    from sqlsecure.executors.spu.stage import _parse  # late: the stage imports the planner

    found = {}
    for sql in [*(sql for _, sql in step.outputs), *([step.having] if step.having else [])]:
        for node in aggregates_in(_parse(sql)):
            if not isinstance(node, SUMMED) or isinstance(node.this, exp.Distinct):
                return None
            found[node.sql(dialect="duckdb")] = node
    return len(found)


def threshold_summed(protected, once, key_owner: str | None, filtered: bool) -> bool:
    """Whether the group threshold's distinct-row count of every protected (party, provenance column) is a
    sum the one-hot group sums give: its rows appear at most once (`once`), or it is the key owner and no
    cross-party filter (`filtered`) makes a row's weight secret (`owner_counted`)."""
    return all(column in once or (party == key_owner and not filtered) for party, column in protected)


def owner_counted(step: SecureStage) -> tuple[str, ...]:
    """The provenance columns the key owner counts itself on a one-hot stage (`threshold_summed`): its
    own, where its rows may repeat (not in `rows_once`) and no filter weighs the rows."""
    from sqlsecure.executors.spu.stage import _group_key_columns  # late: the stage imports the planner

    keys = _group_key_columns(step)
    if not keys or step.filters:
        return ()
    owner_of = {column: party for party, column in step.inputs}
    return tuple(c for c in step.distinct_rows if c not in step.rows_once and owner_of.get(c) == keys[0][0])


def with_group_path(step: SecureStage, kinds: dict[str, str | None]) -> SecureStage:
    """The stage with its GROUP BY's path chosen (`one_hot_groups` = G, or 0 for the sort)."""
    from sqlsecure.executors.spu.stage import _group_key_columns  # late: the stage imports the planner

    if not step.aggregate or not step.group_by:
        return step
    keys, owner_of = _group_key_columns(step), {column: party for party, column in step.inputs}
    protected = [(owner_of.get(c), c) for c in step.distinct_rows]
    if step.threshold and not threshold_summed(protected, step.rows_once, keys[0][0] if keys else None,
                                               bool(step.filters)):
        return step
    groups, aggregates = published_groups(step, kinds), summed_aggregates(step)
    if groups is None or aggregates is None or not one_hot_chosen(groups, aggregates, len(step.compute)):
        return step
    return dataclasses.replace(step, one_hot_groups=groups)
