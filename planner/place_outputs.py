"""The outputs of a placed spine, shared by every device: their names (o0, o1, ... and hidden ORDER BY
keys h0, ...), the SPU kind and DuckDB type of each, the piece columns parties compute over, the
issuer's finishing query, and the PhysicalPlan with its notes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlglot import exp

from sqlsecure.planner.logical import Limit, Project, Sort, aliases_of, column_key
from sqlsecure.planner.physical import Finish, HEGroupBy, Mask, Noise, PhysicalPlan, SecureStage

if TYPE_CHECKING:
    from sqlsecure.planner.placement import PlacementContext


KIND_OF_TYPE = {'"NULL"': "any", "BOOLEAN": "bool", "DATE": "date", "TIMESTAMP": "timestamp", "VARCHAR": "text",
                "DOUBLE": "fixed",
                "FLOAT": "fixed", "REAL": "fixed", "DECIMAL": "fixed", **{t: "int" for t in (
                    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                    "UBIGINT", "UHUGEINT")}}


def to_piece(expression: exp.Expression) -> exp.Expression:
    """Rewrite `"alias"."col"` to the piece column `"alias.col"`."""

    def rewrite(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column) and node.table:
            return exp.column(column_key(node), quoted=True)
        return node

    return expression.copy().transform(rewrite)


def party_set(expression: exp.Expression, parties: dict[str, str]) -> frozenset[str]:
    """The parties whose columns `expression` reads (`parties`: alias -> party)."""
    return frozenset(parties[a] for a in aliases_of(expression))


def hidden_sort_keys(project: Project, sort: Sort | None):
    """(h<i>, key) of each ORDER BY key that is no output: computed along with the outputs, for the sort."""
    if sort is None:
        return []
    names = {e.alias_or_name for e in project.expressions}
    inner = {(e.this if isinstance(e, exp.Alias) else e).sql() for e in project.expressions}
    hidden = []
    for i, ordered in enumerate(sort.order):
        key = ordered.this
        if isinstance(key, exp.Column) and not key.table and key.name in names:
            continue
        if key.sql() in inner:
            continue
        hidden.append((f"h{i}", key))
    return hidden


def as_duckdb_type(column: exp.Expression, project: Project, i: int) -> exp.Expression:
    """Output i cast to DuckDB's type of it, so every device's result has the schema DuckDB gives
    (MIN of a DECIMAL(12, 2) is DECIMAL(12, 2), SUM of an INTEGER a HUGEINT, a constant NULL of the
    NULL type); as is when unknown."""
    dtype = project.types[i] if i < len(project.types) else ""
    kind = KIND_OF_TYPE.get(dtype.split("(")[0].upper())
    if kind == "any":  # DuckDB's NULL type: a constant NULL, which the issuer writes as such
        return exp.Null()
    if kind is None:
        return column
    return exp.cast(column, exp.DataType.build(dtype, dialect="duckdb"))


def finish_outputs(project: Project, issuer: str, out: str) -> Finish:
    """The issuer names the outputs o0, o1, ... of a stage that already sorted and limited them."""
    finish = exp.Select().from_("result")
    finish.set("expressions", [exp.alias_(as_duckdb_type(exp.column(f"o{i}", quoted=True), project, i),
                                         e.alias_or_name, quoted=True)
                               for i, e in enumerate(project.expressions)])
    return Finish(issuer, ((issuer, out),), "rows", finish.sql(dialect="duckdb"))


def finish_sql(finish_cols, outputs, project: Project, sort: Sort | None, limit: Limit | None) -> str:
    select = exp.Select().from_("result")
    select.set("expressions", [
        exp.alias_(as_duckdb_type(exp.maybe_parse(finish_cols[f"o{i}"], dialect="duckdb"), project, i), name,
                   quoted=True)
        for i, name in enumerate(outputs)
    ])
    if project.distinct:
        select.set("distinct", exp.Distinct())
    if sort is not None:
        by_inner = {(e.this if isinstance(e, exp.Alias) else e).sql(): f"o{i}" for i, e in enumerate(project.expressions)}
        names = {e.alias_or_name: f"o{i}" for i, e in enumerate(project.expressions)}
        order = []
        for i, ordered in enumerate(sort.order):
            key = ordered.this
            if isinstance(key, exp.Column) and not key.table and key.name in names:
                ref = names[key.name]
            elif key.sql() in by_inner:
                ref = by_inner[key.sql()]
            else:
                ref = f"h{i}"
            column = exp.maybe_parse(finish_cols.get(ref, exp.column(ref, quoted=True).sql()), dialect="duckdb")
            new = ordered.copy()
            new.set("this", column)
            order.append(new)
        select.set("order", exp.Order(expressions=order))
    if limit is not None:
        if limit.limit is not None:
            select.set("limit", exp.Limit(expression=limit.limit.copy()))
        if limit.offset is not None:
            select.set("offset", exp.Offset(expression=limit.offset.copy()))
    return select.sql(dialect="duckdb")


def physical_plan(ctx: PlacementContext, steps, leakage, threshold: int, counted=()) -> PhysicalPlan:
    notes = tuple(ctx.dp.describe()) if ctx.dp is not None else ()
    if ctx.dp is not None and ctx.dp.grouped:
        (noise,) = [s for s in steps if isinstance(s, Noise) and s.release.threshold is not None][:1] or [None]
        if noise is not None:
            notes += (f"  groups are released when their noisy row count reaches {noise.release.threshold:.1f}",)
    if ctx.class_4 is not None and any(isinstance(s, (HEGroupBy, SecureStage)) for s in steps):
        on = "HE" if any(isinstance(s, HEGroupBy) for s in steps) else "the SPU"
        notes += (f"class 4 on {on} ([federation] group_sums = \"auto\"); {ctx.class_4.why}",)
    for step in steps:
        if isinstance(step, Mask):
            notes += tuple(f"masked for {ctx.issuer}: {column} ({mask.describe()})" for column, mask in step.columns)
    return PhysicalPlan(ctx.issuer, tuple(steps), tuple(dict.fromkeys(leakage)), notes=notes,
                        min_group_size=threshold, counted=tuple(dict.fromkeys(counted)) if threshold else (),
                        uses=ctx.usage.passed(),
                        epsilon=ctx.dp.epsilon if ctx.dp else 0.0, delta=ctx.dp.delta if ctx.dp else 0.0)
