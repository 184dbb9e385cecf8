"""Differential privacy through the operator translation (issue 16).

The query's outermost aggregate is computed on the SPU as usual, with the spine's rewrite (planner/
reveal.py `DPContext.rewrite`): SUMs of clamped values, AVG as a SUM and a COUNT, a grouped query's row
count `__n`. Before the result opens, one compute party other than the issuer adds a draw of OpenDP's
sampler to its *share* of each of them (executors/spu/program.py `add_noise`), so the issuer sees only
noisy values and the noise party only its draws; a group stays only if its noisy count reaches the
spine's threshold, by a secret comparison. The issuer's Finish divides AVG's noisy SUM by its noisy
COUNT, then orders and limits the noisy rows. Distributions, ε split and threshold are the spine's.

What the contribution bound does not cover is refused at plan time, naming why: an inner aggregate,
DISTINCT or window under the noised aggregate, a semi / anti join, a LIMIT below it, COUNT(DISTINCT),
MIN / MAX, HAVING, and outputs other than group keys and COUNT / SUM / AVG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlsecure.errors import NotSupportedError, PolicyViolation
from sqlsecure.planner.reveal import DPContext
from sqlsecure.planner.tree import Aggregate, Distinct, Filter, Join, Op, Project, Sort, Window, quoted
from sqlsecure.policy.privacy import Release, group_threshold

GROUP_COUNT = "__n"  # a grouped query's noisy row count: thresholds the group, never opened


@dataclass(frozen=True)
class NoisedAggregate:
    """The program's outermost aggregate and what happens to its outputs."""

    aggregate: Aggregate  # keys, clamped SUMs, AVG's SUM and COUNT, GROUP_COUNT if grouped
    outputs: tuple[tuple[str, str], ...]  # (the query's output column, SQL over the program's columns)
    noised: tuple[tuple[str, float], ...]  # (program column, noise scale)
    threshold: int | None  # the least noisy GROUP_COUNT a group needs
    order: Sort | None  # the query's ORDER BY / LIMIT, done by the issuer on the noisy rows
    mechanism: str

    def program_noise(self, compute: tuple[str, ...], issuer: str) -> dict:
        """The program's "noise" field: the first compute party other than the issuer adds it."""
        party = next(p for p in compute if p != issuer)
        threshold = [GROUP_COUNT, self.threshold] if self.threshold is not None else None
        return {"party": party, "mechanism": self.mechanism, "columns": [[c, s] for c, s in self.noised],
                "threshold": threshold, "hidden": [GROUP_COUNT] if self.threshold is not None else []}


def noised_aggregate(root: Op, dp: DPContext, origins) -> NoisedAggregate:
    """The DP form of a translated query (`origins(op)`: column -> base columns, translate.py's)."""
    order = root if isinstance(root, Sort) else None
    top = order.child if order else root
    project = top if isinstance(top, Project) else None
    aggregate = project.child if project else top
    if isinstance(aggregate, Filter) and isinstance(aggregate.child, Aggregate):
        raise NotSupportedError("HAVING is not supported under differential privacy (filter the noisy result)")
    if not isinstance(aggregate, Aggregate):
        raise NotSupportedError("under differential privacy only aggregates can be revealed: the query's "
                                "outermost SELECT must aggregate (COUNT / SUM / AVG, by group keys)")
    refuse_unbounded(aggregate.child)
    dp.noisy_values, dp.grouped = noisy_values(aggregate), bool(aggregate.keys)
    release = Release((), dp.value_epsilon(), dp.value_delta(), dp.budget.noise, None)
    calls, noised, finish = [], [], {}
    base = origins(aggregate.child)
    count_scale = release.scale(dp.count_sensitivity)
    for name, func, arg, distinct in aggregate.aggregates:
        if distinct or func not in ("COUNT", "SUM", "AVG"):
            what = f"{func}(DISTINCT ...)" if distinct else f"{func}(...)"
            raise NotSupportedError(f"under differential privacy an output must be a group key or COUNT/SUM/AVG "
                                    f"of a column; {what} is not (its sensitivity is not bounded by the rules)")
        if func == "COUNT":
            calls.append((name, func, arg, False))
            noised.append((name, count_scale))
            finish[name] = quoted(name)
            continue
        low, high = clamping_range(arg, aggregate.child.columns, base, dp)
        clamped = (f"CASE WHEN {arg} < {_number(low)} THEN {_number(low)} WHEN {arg} > {_number(high)} "
                   f"THEN {_number(high)} ELSE {arg} END")
        sums, counts = f"{name}__sum", f"{name}__count"
        calls.append((sums, "SUM", clamped, False))
        noised.append((sums, release.scale(dp.count_sensitivity * max(abs(low), abs(high)))))
        finish[name] = quoted(sums)
        if func == "AVG":
            calls.append((counts, "COUNT", arg, False))
            noised.append((counts, count_scale))
            finish[name] = f"CASE WHEN {quoted(counts)} > 0 THEN {quoted(sums)} / {quoted(counts)} END"
    threshold = None
    if aggregate.keys:
        calls.append((GROUP_COUNT, "COUNT", None, False))
        noised.append((GROUP_COUNT, count_scale))
        threshold = noisy_count_threshold(dp, count_scale)
    finish.update({name: quoted(name) for name, _ in aggregate.keys})
    outputs = tuple((name, _output(sql, finish)) for name, sql in project.items) if project else \
        tuple((name, finish[name]) for name in aggregate.columns)
    program = Aggregate(aggregate.child, aggregate.keys, tuple(calls))
    return NoisedAggregate(program, outputs, tuple(noised), threshold, order, dp.budget.noise)


def noisy_values(aggregate: Aggregate) -> int:
    """Noisy values per group, over which ε is split (the spine's count): AVG is two; a grouped query's
    row count one more."""
    return sum(2 if func == "AVG" else 1 for _, func, _, _ in aggregate.aggregates) + (1 if aggregate.keys else 0)


def noisy_count_threshold(dp: DPContext, count_scale: float) -> int:
    """The spine's threshold on a group's noisy row count, as the integer a noisy count must reach."""
    delta = dp.budget.query_delta / 2 if dp.budget.noise == "gaussian" else dp.budget.query_delta
    threshold = group_threshold(dp.budget.noise, count_scale, dp.count_sensitivity, delta, dp.min_group_size)
    if math.isinf(threshold):
        raise PolicyViolation(f"differential privacy for {dp.budget.issuer} has query_delta = 0, so no group of a "
                              "grouped query could ever be released; set query_delta > 0 or drop the GROUP BY")
    return math.ceil(threshold)


def _output(sql: str, finish: dict[str, str]) -> str:
    """An output of the query: a group key or a noised aggregate as is, nothing computed from them."""
    for name, value in finish.items():
        if sql == quoted(name):
            return value
    raise NotSupportedError(f"under differential privacy an output must be a group key or COUNT/SUM/AVG of a "
                            f"column; {sql} computes over them (compute it from the noisy result)")


def clamping_range(arg: str | None, columns, base: dict, dp: DPContext) -> tuple[float, float]:
    """The declared clamping range of a SUM / AVG argument, a column read as is (every table it may come
    from, through UNION ALL branches: the widest); PolicyViolation when one declares none."""
    column = next((c for c in columns if quoted(c) == arg), None)
    if column is None or not base.get(column):
        raise NotSupportedError(f"under differential privacy SUM and AVG take a column as is; {arg} is not one "
                                "(its clamping range is unknown)")
    ranges = []
    for ref in sorted(base[column], key=str):
        bounds = dp.columns.get(ref, (None, False))[0]
        if bounds is None:
            raise PolicyViolation(f"differential privacy needs clamping bounds for {ref} (declare them in the "
                                  "table's rules: bounds = { column = [low, high] })")
        ranges.append(bounds)
    return min(low for low, _ in ranges), max(high for _, high in ranges)


def refuse_unbounded(op: Op) -> None:
    """Refuse, naming why, an operator under the noised aggregate that breaks the contribution bound
    (one identity's rows would change more than max_rows_per_identity rows of its input)."""
    why = None
    if isinstance(op, Aggregate):
        why = ("an inner aggregate feeds the noised aggregate: one identity changes a whole group's row, "
               "whose value no declared bound limits; aggregate once, over the rows")
    elif isinstance(op, Distinct):
        why = "DISTINCT merges rows of several identities, so one identity's rows are not bounded by the rules"
    elif isinstance(op, Window):
        why = "a window computes each row from other identities' rows, so its values are not bounded by the rules"
    elif isinstance(op, Join) and op.kind in ("semi", "anti"):
        why = ("a semi / anti join (IN, EXISTS, NOT IN) lets one identity's rows keep or drop any number of "
               "other rows; join on the key instead")
    elif isinstance(op, Sort) and op.limit is not None:
        why = "a LIMIT below the aggregate lets one identity's rows push any number of other rows out"
    if why is not None:
        raise NotSupportedError(f"under differential privacy {why}")
    for child in op.children:
        refuse_unbounded(child)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
