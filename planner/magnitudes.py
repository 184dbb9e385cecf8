"""The SPU's exact range proven at plan time, from the magnitude classes the owners publish.

A secure stage's input column may only hold values its expressions compute exactly in the ring
(`executors/spu/ranges.py`). Without statistics that is known only when the owner encodes its values,
so `check` and EXPLAIN accepted queries that execution then refused. Each owner therefore publishes,
in the catalog it already publishes (schema, sizes rounded up to a power of two), the magnitude class
of each numeric column: M with every |value| < 2^M, the bit length of the largest |value| (the same
kind of leak as the text width classes). `bind_ranges` gives each stage its input columns' classes and
a row bound (`row_bounds`: from the published sizes and the declared unique keys; none where a join may
multiply rows) and refuses, with a DataError naming the column, every stage in which a class exceeds
what the stage computes exactly. Execution then proves its limits with the same classes and its actual
row count, at most the bound, which only loosens them: a classed column is refused at plan time or not
at all (by its owner at run time only if its data moved beyond the class it published).
"""

from __future__ import annotations

import dataclasses
import math
import re

import sqlglot
from sqlglot import exp

from sqlsecure.errors import DataError
from sqlsecure.executors.spu.ranges import beyond_classes, input_limits
from sqlsecure.executors.spu.values import decimal_scales, range_kind

from sqlsecure.planner.physical import EquiJoin, PhysicalPlan, RunLocal, SecureStage

PROVENANCE = "__prov_"  # an owner's row numbers, for the group threshold's distinct rows (placement.py)
INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "INT", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
                 "UINTEGER", "UBIGINT"}
PLAIN_KINDS = {"DOUBLE": "fixed", "FLOAT": "fixed", "REAL": "fixed", "BOOLEAN": "bool", "DATE": "date",
               "TIMESTAMP": "timestamp", "VARCHAR": "text", "TEXT": "text"}


def bind_ranges(physical: PhysicalPlan, tables: dict[str, tuple[str, str]], catalog, column_type) -> PhysicalPlan:
    """`physical` with each secure stage's published classes and row bound (`SecureStage.bounds`,
    `.row_bound`, 0 where its joins may multiply rows: then proven at run time only); DataError where a
    class exceeds the stage's exact range. Unchanged without published classes (network mode), or where
    a stage's inputs are not all typed base columns."""
    if catalog.magnitudes is None:
        return physical
    read: dict[tuple[str, str], set[str]] = {}  # what the stages read of each table: only that is asked
    for step in physical.steps:
        for party, column in step.inputs if isinstance(step, SecureStage) else ():
            alias, _, name = column.partition(".")
            if tables.get(alias, ("",))[0] == party:
                read.setdefault(tables[alias], set()).add(name)
    classes = {source: catalog.magnitudes(*source, tuple(sorted(names))) for source, names in read.items()}

    def class_of(party: str, table: str) -> dict[str, int]:
        return classes.get((party, table), {})

    bounds = row_bounds(physical.steps, tables, catalog)
    steps = tuple(_bound_stage(step, tables, class_of, column_type, bounds.get(step.rel, (None,))[0])
                  if isinstance(step, SecureStage) and not step.union and not step.secret_join else step
                  for step in physical.steps)
    return dataclasses.replace(physical, steps=steps)


def row_bounds(steps, tables: dict[str, tuple[str, str]], catalog) -> dict[str, tuple[float, dict[str, float]]]:
    """Relation -> (most rows it can have, base relation -> most times one of its rows repeats in it), from
    the published sizes and declared unique keys alone: a pushdown of one table has at most its size; a join
    on a key unique on the right keeps the left's rows, one on a key unique in the left's base relation has
    at most the right's rows times that base's repeats; semi and anti joins keep at most the left's rows, a
    LEFT join adds them. Anything else (a pushdown joining tables, a join that may multiply rows) is
    unbounded (infinity): a bound as loose as the product of the sizes would refuse at plan time what the
    actual rows allow, so such a stage's range stays proven at run time."""
    out: dict[str, tuple[float, dict[str, float]]] = {}
    single: dict[str, tuple[str, str]] = {}  # a pushdown of one table: its (party, table)
    for step in steps:
        if isinstance(step, RunLocal):
            read = {t.name for t in sqlglot.parse_one(step.sql, read="duckdb").find_all(exp.Table)}
            sizes = catalog.sizes(step.party) if catalog.sizes is not None else {}
            rows = float(sizes.get(next(iter(read)), math.inf)) if len(read) == 1 else math.inf
            out[step.out] = (rows, {step.out: 1.0})
            if len(read) == 1:
                single[step.out] = (step.party, read.pop())
        elif isinstance(step, EquiJoin) and step.left in out and step.right in out:
            out[step.out] = _joined(step, out[step.left], out[step.right][0],
                                    _unique(single.get(step.right), step.right_keys, catalog),
                                    _unique(single.get(step.left_base), step.left_keys, catalog))
    return out


def _joined(step, left, right_rows: float, right_unique: bool, left_unique: bool):
    rows, repeats = left
    if step.mode in ("semi", "anti"):
        return rows, repeats
    if right_unique:  # each left row meets at most one right row
        joined, repeats = rows, {**repeats, step.right: rows}
    elif left_unique:  # each right row meets at most one base row, repeated as often as that row is
        base = repeats.get(step.left_base, math.inf)
        joined = right_rows * base
        repeats = {**{r: math.inf for r in repeats}, step.right: base}
    else:
        joined, repeats = math.inf, {r: math.inf for r in (*repeats, step.right)}
    return (joined + rows if step.mode == "left" else joined), repeats


def _unique(source: tuple[str, str] | None, keys: tuple[str, ...], catalog) -> bool:
    """Whether `keys` (piece columns "alias.column") contain a key the owner declares unique in the one
    table its pushdown reads."""
    if source is None:
        return False
    names = {key.partition(".")[2] for key in keys}
    return any(set(declared) <= names for declared in catalog.unique_keys(*source))


def _bound_stage(step: SecureStage, tables, class_of, column_type, most_rows: float | None) -> SecureStage:
    kinds, bounds = {}, {}
    for party, column in step.inputs:
        alias, _, name = column.partition(".")
        kind = plan_kind(column_type(alias, name) or "") if alias in tables and tables[alias][0] == party else \
            "int" if column.startswith(PROVENANCE) else None
        if kind is None:
            return step  # an input computed by its owner (no published class): proven at run time
        kinds[column] = kind
        if alias in tables and name in class_of(*tables[alias]):
            bounds[column] = class_of(*tables[alias])[name]
    if not bounds:
        return step
    if most_rows is None or not math.isfinite(most_rows):  # joins that may multiply rows: the classes still
        return dataclasses.replace(step, bounds=tuple(sorted(bounds.items())))  # split products; checked at run time
    rows = int(most_rows)
    plan = input_limits(step, {c: range_kind(k) for c, k in kinds.items()}, rows, step.frac_bits,
                        _parse, decimal_scales(kinds), bounds)
    beyond = beyond_classes(plan)
    if beyond:
        raise DataError(f"{'; '.join(beyond)}, over up to {rows:,} rows (bounded by the published sizes and "
                        "unique keys): filter or scale the column first, or keep the computation on one party")
    return dataclasses.replace(step, bounds=tuple(sorted(bounds.items())), row_bound=rows)


def plan_kind(dtype: str) -> str | None:
    """The SPU kind (`executors/spu/values.kind_of`) of a DuckDB column type, None where it has none."""
    text = dtype.upper().strip()
    decimal = re.fullmatch(r"(?:DECIMAL|NUMERIC)\s*(?:\(\s*\d+\s*(?:,\s*(\d+)\s*)?\))?", text)
    if decimal is not None:
        return f"decimal.{decimal.group(1) or (3 if '(' not in text else 0)}"
    if text in INTEGER_TYPES:
        return "int"
    return PLAIN_KINDS.get(text)


def magnitude_lines(step) -> list[str]:
    """EXPLAIN: the magnitude classes a secure stage was planned with (public: the owners publish them)."""
    if not isinstance(step, SecureStage) or not step.bounds:
        return []
    classes = ", ".join(f"{column} |x| < 2^{bits}" for column, bits in step.bounds)
    proven = f"at plan time for up to {step.row_bound:,} rows" if step.row_bound else \
        "at run time (its joins may multiply rows: no row bound at plan time)"
    return [f"everyone: the owners' published magnitude classes {classes} (the bit length of each column's "
            f"largest |value|), with which the SPU's exact range is proven {proven}"]


def _parse(sql: str):
    from sqlsecure.executors.spu.stage import _parse as parse  # late: the stage imports the planner's steps

    return parse(sql)
