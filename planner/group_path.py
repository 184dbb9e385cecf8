"""Which GROUP BY an SPU stage runs: the oblivious sort, or the one-hot group sums without a sort.

The one-hot sums (`executors/spu/one_hot_group.py`, issue 20) take one round where the sort takes ~60 at
10^5 rows. They apply when the key owner knows every row's group in plaintext and the groups are
publicly bounded: the GROUP BY keys are plain integer input columns of one compute party
(`stage._group_key_columns`), each with a published magnitude class M (|v| < 2^M: at most 2^(M+1) - 1
values, and NULL: 2^(M+1) group numbers per key, G their product); every aggregate is a sum (COUNT,
SUM, AVG; MIN / MAX and DISTINCT need the sort); and no group threshold counts an owner's distinct rows
(a distinct count is no sum). The cost model then chooses by bytes (`cost.one_hot_chosen`). The choice
is recorded in the stage (`SecureStage.one_hot_groups`): EXPLAIN prints it and execution follows it.
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


def with_group_path(step: SecureStage, kinds: dict[str, str | None]) -> SecureStage:
    """The stage with its GROUP BY's path chosen (`one_hot_groups` = G, or 0 for the sort)."""
    if not step.aggregate or not step.group_by or (step.threshold and step.distinct_rows):
        return step
    groups, aggregates = published_groups(step, kinds), summed_aggregates(step)
    if groups is None or aggregates is None or not one_hot_chosen(groups, aggregates, len(step.compute)):
        return step
    return dataclasses.replace(step, one_hot_groups=groups)
