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
at all (by its owner at run time only if its data moved beyond the class it published). Without a row
bound the planner proves the limits over a single row, the loosest (more rows only narrow them): a class
beyond even those is refused at plan time, the rest is proven at run time for the actual rows. A stage
input from a derived table of one party (a subquery or CTE in FROM) has the class of what computes it
where that is known (`derived_column_class`: a base column passed through, a COUNT), so the one-hot
GROUP BY (`group_path.py`) applies to its keys as to a base table's.

The same proof covers every SPU step whose inputs are pushdowns (`pushdown_bounds`: a SELECT of one
table, filtered or grouped, has at most its published size, and a column it passes through as is has
its base column's class): UNION ALL stages (a column's class the largest of its branches', the rows
their sum), oblivious joins (n + m rows) and the translation's secret programs (`bind_program_ranges`:
`program.range_plan` with the pushdowns' sizes, n + m rows for a PK-FK join, n * m for all pairs; the
classes travel in the program's inputs, so each owner checks its values against them). Inputs no class
bounds are listed in the plan's notes: their range is proven by their owner at run time only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re

import sqlglot
from sqlglot import exp

from sqlsecure.errors import DataError, ProtocolError
from sqlsecure.executors.spu.ranges import beyond_classes, filter_bounds, input_limits, magnitude_class
from sqlsecure.executors.spu.values import decimal_scales, range_kind

from sqlsecure.planner.group_path import with_group_path
from sqlsecure.planner.physical import EquiJoin, PhysicalPlan, RunLocal, SecretQuery, SecureStage
from sqlsecure.planner.row_counts import (class_of_rows, counted_rows, counts_rows, defining_query, from_item,
                                          output_expressions)

PROVENANCE = "__prov_"  # an owner's row numbers, for the group threshold's distinct rows (place_threshold.py)
INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "INT", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
                 "UINTEGER", "UBIGINT"}
PLAIN_KINDS = {"DOUBLE": "fixed", "FLOAT": "fixed", "REAL": "fixed", "BOOLEAN": "bool", "DATE": "date",
               "TIMESTAMP": "timestamp", "VARCHAR": "text", "TEXT": "text"}


def bind_ranges(physical: PhysicalPlan, tables: dict[str, tuple[str, str]], catalog, column_type,
                derived: dict[str, str] | None = None, derived_of=None) -> PhysicalPlan:
    """`physical` with each secure stage's published classes and row bound (`SecureStage.bounds`,
    `.row_bound`, 0 where its joins may multiply rows: then proven at run time only); DataError where a
    class exceeds the stage's exact range. Unchanged without published classes, or where a stage's
    inputs are not all typed columns its owners publish classes of (noted for EXPLAIN). `derived`: the
    query's derived tables (subqueries, CTEs) of one party, alias -> that party; `derived_of(alias,
    column)`: such a column's class (`derived_column_class`), None where unknown."""
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

    def input_class(party: str, alias: str, name: str) -> tuple[bool, int | None]:
        """(whether the input is `party`'s own column as its table or derived table holds it, its class)."""
        if alias in tables:
            return tables[alias][0] == party, class_of(*tables[alias]).get(name)
        if (derived or {}).get(alias) == party:
            return True, derived_of(alias, name) if derived_of is not None else None
        return False, None

    bounds = row_bounds(physical.steps, tables, catalog)
    pushed = any(isinstance(step, SecureStage) and (step.union or step.secret_join) for step in physical.steps)
    sizes = published_sizes(catalog)
    pushdowns = {step.out: pushdown_bounds(step, catalog, sizes) for step in physical.steps
                 if pushed and isinstance(step, RunLocal)}
    bound = [_bound_stage(step, input_class, column_type, bounds.get(step.rel, (None,))[0])
             if isinstance(step, SecureStage) and not step.union and not step.secret_join else
             _bound_pushed_stage(step, pushdowns) if isinstance(step, SecureStage) else (step, [])
             for step in physical.steps]
    return _with_bound(physical, bound)


def _with_bound(physical: PhysicalPlan, bound: list[tuple]) -> PhysicalPlan:
    """`physical` with its bound steps ((step, unproven columns) each), the unproven ones noted."""
    notes = tuple(unproven_note(step, columns) for step, columns in bound if columns)
    return dataclasses.replace(physical, steps=tuple(step for step, _ in bound), notes=physical.notes + notes)


def bind_program_ranges(physical: PhysicalPlan, catalog, known: dict | None = None) -> PhysicalPlan:
    """`physical` (the operator translation's) with each secret program's inputs carrying their owners'
    published classes and the row bound its ranges were proven with (`SecretQuery.row_bound`): the same
    limits the owners check at run time (`program.range_plan`), with the published sizes for the row
    counts; DataError naming the column where a class exceeds them. A pushdown whose rows or columns the
    published sizes and classes do not bound leaves its columns to the run-time check (noted). `known`:
    relation -> its `Pushdown` where the translation knows it (an aggregate padded to a public bound)."""
    if catalog.magnitudes is None:
        return physical
    sizes = published_sizes(catalog)
    pushdowns = {step.out: pushdown_bounds(step, catalog, sizes) for step in physical.steps
                 if isinstance(step, RunLocal)} | (known or {})
    return _with_bound(physical, [_bound_program(step, pushdowns) if isinstance(step, SecretQuery) else (step, [])
                                  for step in physical.steps])


@dataclasses.dataclass(frozen=True)
class Pushdown:
    """What the published sizes and classes say of a pushdown's output: at most `rows` rows (infinity:
    unbounded); per output column passed through from a base column, (its SPU kind, its class or None)."""

    rows: float
    columns: dict[str, tuple[str | None, int | None]]


UNBOUNDED = Pushdown(math.inf, {})


def published_sizes(catalog):
    """party -> its published sizes, asked of each party once (`Catalog.sizes`; {} where none)."""
    asked: dict[str, dict[str, int]] = {}

    def sizes(party: str) -> dict[str, int]:
        if party not in asked:
            asked[party] = catalog.sizes(party) if catalog.sizes is not None else {}
        return asked[party]

    return sizes


def pushdown_bounds(step: RunLocal, catalog, sizes=None) -> Pushdown:
    """The bounds of a pushdown's output (`Pushdown`): a SELECT of one table (or of a subquery of one),
    filtered, grouped or not, has at most the table's published size; a column it passes through as is
    has its base column's class. Joins, set operations and CTEs of the owner's tables are unbounded.
    `sizes`: party -> its published sizes (`published_sizes`)."""
    try:
        tree = sqlglot.parse_one(step.sql, read="duckdb")
    except sqlglot.errors.ParseError:
        return UNBOUNDED
    return _select_bounds(tree, step.party, catalog, (sizes or published_sizes(catalog))(step.party))


def _select_bounds(select, party: str, catalog, sizes: dict) -> Pushdown:
    if not isinstance(select, exp.Select) or select.args.get("joins") or select.args.get("with_") \
            or select.args.get("with") or not select.args.get("from_"):
        return UNBOUNDED
    source = select.args["from_"].this
    if isinstance(source, exp.Subquery):
        below = _select_bounds(source.this, party, catalog, sizes)
    elif isinstance(source, exp.Table) and not source.db and catalog.has_table(party, source.name):
        below = _table_bounds(party, source.name, select, catalog, sizes)
    else:
        return UNBOUNDED
    below = _filtered(below, select.args.get("where"))
    columns = {}
    for item in select.expressions:
        value = item.this if isinstance(item, exp.Alias) else item
        if isinstance(value, exp.Star):
            columns.update(below.columns)
        elif isinstance(value, exp.Column) and value.name in below.columns:
            columns[item.alias_or_name] = below.columns[value.name]
        elif isinstance(value, exp.Cast) and value.to.is_type(exp.DataType.Type.BOOLEAN):
            columns[item.alias_or_name] = ("bool", None)  # a flag its owner computes (0/1: no class needed)
    return Pushdown(below.rows, columns)


def _filtered(source: Pushdown, where) -> Pushdown:
    """`source` with each column its WHERE bounds on both sides by constants (`ranges.filter_bounds`:
    |x| <= B on every row kept) in the class of B where that is narrower: `WHERE big > 10 AND big < 0`
    keeps no row of a class-62 column, so no sum of them leaves the ring."""
    found = filter_bounds([where.this]) if where is not None else {}
    return Pushdown(source.rows, {c: (kind, _narrower(bits, magnitude_class(found[c]) if c in found else None))
                                  for c, (kind, bits) in source.columns.items()})


def _narrower(bits: int | None, bound: int | None) -> int | None:
    """A published class narrowed by a WHERE's bound; none stays none (a masked column has none: its mask
    may move a value past the bound its WHERE tested)."""
    return bits if bits is None or bound is None else min(bits, bound)


def _table_bounds(party: str, table: str, select, catalog, sizes: dict) -> Pushdown:
    """A base table's published size, and the kinds and classes of the columns `select` names."""
    named = {c.name for c in select.find_all(exp.Column)} | ({c for c, _ in catalog.columns(party, table)}
                                                            if select.find(exp.Star) else set())
    typed = {c: plan_kind(t) for c, t in catalog.columns(party, table) if c in named}
    published = catalog.magnitudes(party, table, tuple(sorted(typed)))
    return Pushdown(float(sizes.get(table, math.inf)), {c: (k, published.get(c)) for c, k in typed.items()})


def derived_column_class(body, name: str, catalog, sizes) -> int | None:
    """The class of a derived table's (a subquery's or CTE's, `body`) output column `name` where what
    computes it bounds it: a base table's column passed through as is (by projection, WHERE, GROUP BY,
    DISTINCT or a join its values are some of that column's, or NULL) has its published class; a count of
    rows (`row_counts.counts_rows`) the class of the rows its SELECT reads (`counted_rows`, from the
    published sizes); a UNION's column the largest of its branches'. None for anything else: an expression
    may leave its inputs' range. Sound however stale: the owner checks its values against every class the
    stage carries before sharing (`ranges.RangePlan` limits a classed input by 2^M; a one-hot GROUP BY
    refuses more groups than its keys' classes allow), so a wrong class is a DataError, never a wrong
    answer. `sizes`: party -> its published sizes (`published_sizes`)."""
    outputs = output_expressions(body, name)
    classes = [_expression_class(e.unnest(), catalog, sizes) for e in outputs or []]
    return max(classes) if classes and None not in classes else None


def _expression_class(e, catalog, sizes) -> int | None:
    if counts_rows(e):
        return class_of_rows(counted_rows(e, sizes))
    item = from_item(e) if isinstance(e, exp.Column) else None
    if isinstance(item, exp.Table) and item.db:
        return catalog.magnitudes(item.db, item.name, (e.name,)).get(e.name) if catalog.has_table(item.db, item.name) \
            else None
    query = defining_query(item) if item is not None else None
    return derived_column_class(query, e.name, catalog, sizes) if query is not None else None


def _bound_program(step: SecretQuery, pushdowns: dict[str, Pushdown]):
    """(the step with its program's inputs' classes and, where every input's rows are bounded, its ranges
    proven with them (`program.range_plan`; DataError naming the column beyond), the numeric inputs no
    class bounds)."""
    from sqlsecure.executors.spu.program import input_column, parse_program, range_plan

    program = json.loads(step.program)
    rows, unproven = {}, []
    for index, (spec, (_, relation)) in enumerate(zip(program["inputs"], step.inputs)):
        found = pushdowns.get(relation, UNBOUNDED)
        classes = {c: found.columns.get(c, (None, None))[1] for c, kind in spec["columns"]
                   if classed(kind) and not c.startswith(PROVENANCE)}
        spec.pop("classes", None)
        if any(bits is not None for bits in classes.values()):
            spec["classes"] = sorted([c, bits] for c, bits in classes.items() if bits is not None)
        unproven += [c for c, bits in classes.items() if bits is None]
        rows[index] = found.rows
    text = json.dumps(program, sort_keys=True, separators=(",", ":"))
    bounded = all(math.isfinite(n) for n in rows.values())
    plan = range_plan(parse_program(text), {i: int(n) if bounded else 1 for i, n in rows.items()}, step.frac_bits)
    refuse_beyond(beyond_classes(plan, input_column), plan.rows if bounded else None)
    return dataclasses.replace(step, program=text, row_bound=plan.rows if bounded else 0), unproven


def _bound_pushed_stage(step: SecureStage, pushdowns: dict[str, Pushdown]):
    """A UNION ALL or oblivious-join stage, whose inputs are its branches' or sides' pushdowns: a column's
    class is the largest of its branches' (none if one has none), the rows their published sizes' sum
    (the stage runs on the concatenation, or on the n + m rows of the oblivious PK-FK join). Returns
    (the stage, its numeric inputs no class bounds)."""
    from sqlsecure.executors.spu.program import merged_kind

    sources = [(party, relation) for party, relation in step.union] or \
        [(party, relation) for party, relation, _ in step.secret_join]
    found = {relation: pushdowns.get(relation, UNBOUNDED) for _, relation in sources}
    kinds, bounds, unproven = {}, {}, []
    for owner, column in step.inputs:
        seen = [found[r].columns.get(column, (None, None)) for p, r in sources if owner in (None, p)]
        branch_kinds = [kind for kind, _ in seen]
        try:  # the branches' kinds merged as the stage merges them (`stage.exchange_shapes`)
            kinds[column] = merged_kind(branch_kinds, column) if seen and None not in branch_kinds else None
        except ProtocolError:  # of kinds no branch merges
            kinds[column] = None  # (None: a column its owner computes has no kind here)
        if seen and all(bits is not None for _, bits in seen):
            bounds[column] = max(bits for _, bits in seen)
        elif kinds[column] is None or classed(kinds[column]):
            unproven.append(column)
    if None in kinds.values():
        return step, unproven
    return _proven(step, kinds, bounds, sum(found[r].rows for _, r in sources)), unproven


def refuse_beyond(beyond: list[str], rows: int | None) -> None:
    """DataError listing every column whose class exceeds its limit (`ranges.beyond_classes`), if any, over
    up to `rows` rows (None: no row bound, and beyond even over one row, so over any number)."""
    if beyond:
        over = f"over up to {rows:,} rows (bounded by the published sizes and unique keys)" if rows is not None \
            else "even over a single row (and more rows only narrow the range)"
        raise DataError(re.sub(r"#\d+\.", "", f"{'; '.join(beyond)}, {over}: filter or scale the column first, "
                                               "or keep the computation on one party"))


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


def _bound_stage(step: SecureStage, input_class, column_type, most_rows: float | None):
    """(the stage bound by its inputs' classes (`_proven`), the numeric inputs no class bounds).
    `input_class(party, alias, column)`: (whether it is the party's own column, its class or None)."""
    kinds, bounds, unproven = {}, {}, []
    for party, column in step.inputs:
        alias, _, name = column.partition(".")
        owned, bits = input_class(party, alias, name)
        kind = plan_kind(column_type(alias, name) or "") if owned else \
            "int" if column.startswith(PROVENANCE) else None
        kinds[column] = kind
        if bits is not None:
            bounds[column] = bits
        elif kind is None or classed(kind) and not column.startswith(PROVENANCE):
            unproven.append(column)
    if None in kinds.values():
        return step, unproven  # an input computed by its owner (no published class): proven at run time
    proven = _proven(step, kinds, bounds, math.inf if most_rows is None else most_rows)
    return with_group_path(proven, kinds), unproven


def classed(kind: str) -> bool:
    """Whether a magnitude class bounds values of this SPU kind (numbers)."""
    return kind in ("int", "fixed") or kind.startswith("decimal.")


def unproven_note(step, columns: list[str]) -> str:
    """EXPLAIN: the inputs of an SPU step whose exact range only its owners' run-time check proves."""
    return (f"SPU range ({step.out}): proven at run time only for {', '.join(columns)} (no magnitude class "
            "published: computed by its owner, masked, or from a source that publishes none); each owner checks "
            "its values against the step's limits before sharing")


def _proven(step: SecureStage, kinds: dict[str, str], bounds: dict[str, int], most_rows: float) -> SecureStage:
    """The stage with its inputs' classes and, where its rows are bounded, its ranges proven with them
    (`ranges.input_limits`, as its owners check at run time); DataError naming a column beyond."""
    if not bounds:
        return step
    bounded = math.isfinite(most_rows)  # else joins that may multiply rows: proven at run time, and here
    rows = int(most_rows) if bounded else 1  # over one row, the loosest limits (more rows only tighten them)
    plan = input_limits(step, {c: range_kind(k) for c, k in kinds.items()}, rows, step.frac_bits,
                        _parse, decimal_scales(kinds), bounds)
    refuse_beyond(beyond_classes(plan), rows if bounded else None)
    return dataclasses.replace(step, bounds=tuple(sorted(bounds.items())), row_bound=rows if bounded else 0)


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
    """EXPLAIN: the magnitude classes an SPU step was planned with (public: the owners publish them)."""
    if isinstance(step, SecretQuery):
        inputs = json.loads(step.program)["inputs"]
        bounds = [(f"{step.inputs[i][1]}.{column}", bits) for i, spec in enumerate(inputs)
                  for column, bits in spec.get("classes", [])]
    else:
        bounds = list(step.bounds) if isinstance(step, SecureStage) else []
    if not bounds:
        return []
    classes = ", ".join(f"{column} |x| < 2^{bits}" for column, bits in bounds)
    proven = f"at plan time for up to {step.row_bound:,} rows" if step.row_bound else \
        "at run time for its actual rows (the published sizes do not bound them: a join that may multiply " \
        "them, or a pushdown joining its owner's tables), at plan time over a single row"
    return [f"everyone: the owners' published magnitude classes {classes} (the bit length of each column's "
            f"largest |value|), with which the SPU's exact range is proven {proven}"]


def _parse(sql: str):
    from sqlsecure.executors.spu.stage import _parse as parse  # late: the stage imports the planner's steps

    return parse(sql)
