"""The enclave's stage on the spine (the TEEU): grouping, COUNT / SUM / AVG / MIN / MAX, sorting and
limiting columns or scalar expressions of several parties' columns, sealed in and sealed out; what
it cannot express is refused by name (the SPU keeps it, or the query, with `placement = "always"`)."""

from __future__ import annotations

import json

from sqlglot import exp

from sqlsecure.errors import NotSupportedError
from sqlsecure.executors.spu.ranges import is_geodist
from sqlsecure.executors.tee.expressions import (ALL_LIMBS, NULL_FLAG, enclave_refusal, enclave_type_refusal,
                                                 kind_of_type, result_type)
from sqlsecure.executors.tee.program import EnclaveProgram
from sqlsecure.executors.tee.stage import sealed_text_widths
from sqlsecure.planner.geodist import great_circle
from sqlsecure.planner.logical import column_key
from sqlsecure.planner.physical import EnclaveStage
from sqlsecure.planner.place_outputs import finish_outputs


ENCLAVE_KINDS = {"int": ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "BOOLEAN"),
                 "fixed": ("DECIMAL", "DOUBLE", "FLOAT", "REAL"), "text": ("VARCHAR",), "date": ("DATE",),
                 "timestamp": ("TIMESTAMP",)}
ENCLAVE_AGGREGATES = {exp.Count: "count", exp.Sum: "sum", exp.Avg: "avg", exp.Min: "min", exp.Max: "max"}


def _enclave_kind(column: exp.Column, ctx) -> str:
    """The enclave's kind of a column; a DECIMAL(p, s) is `decimal.<s>`: exact int64 of x * 10^s."""
    full = ctx.column_type(column.table, column.name) or ""
    dtype = full.split("(")[0].upper()
    if dtype == "DECIMAL":
        return f"decimal.{int(full.split(',')[1].rstrip(') ')) if ',' in full else 0}"
    for kind, names in ENCLAVE_KINDS.items():
        if dtype in names:
            return kind
    raise NotSupportedError(enclave_type_refusal(column.sql(), dtype))


def _enclave_output_kind(func: str, kind: str) -> str:
    """The kind of an enclave aggregate's result: COUNT and MIN/MAX of integers are integers, SUM / MIN /
    MAX of a decimal its exact decimal, AVG of a decimal the average of x * 10^s (`scaled.<s>`), other
    AVGs and floats fixed (float64)."""
    if func == "count" or (kind == "int" and func in ("min", "max")):
        return "int"
    if func in ("sum", "avg") and kind in ("text", "date", "timestamp"):
        raise NotSupportedError(f"{func.upper()} of a {kind} column has no enclave rule; use MIN/MAX/COUNT, or the SPU")
    if kind.startswith("decimal."):
        return f"scaled.{kind.split('.')[1]}" if func == "avg" else kind
    return "fixed" if func == "avg" or kind == "fixed" else kind


def enclave_stage_plan(residual, project, aggregate, sort, limit, ctx, rel, protected=()) -> EnclaveStage:
    """The same work on the enclave, when it is only grouping, aggregating plain columns and sorting.

    Cost model: an enclave sorts in the clear behind its access-pattern-oblivious network
    (n log^2 n compare-exchanges of plain numbers), while the SPU's sort and group-by cost
    rounds of secure comparisons; so a stage the enclave can express goes there when the federation has
    one; the rest (HAVING, DISTINCT over aggregates) stays on the SPU."""
    if aggregate is not None and (aggregate.having is not None or project.distinct):
        raise NotSupportedError("HAVING and DISTINCT over aggregates are for the SPU")
    if any(e.find(exp.Window) for e in project.expressions):
        raise NotSupportedError("window functions are for the SPU")
    inputs: dict[str, tuple[str, str, str, str]] = {}

    counts: set[str] = set()  # the outputs that are COUNTs
    computed: dict[str, tuple[str, str, str]] = {}  # DuckDB SQL -> (name, SQL, kind), evaluated in the enclave
    typed: dict[str, tuple[str, str, str]] = {}  # input -> (input, kind, SQL type), what `computed` reads

    def plain_input(column: exp.Column) -> tuple[str, str]:
        if not isinstance(column, exp.Column) or not column.table:
            raise NotSupportedError(f"{column.sql()}: the enclave takes columns of the query's tables")
        kind = _enclave_kind(column, ctx)
        key = column_key(column)
        inputs.setdefault(key, (ctx.parties[column.table], key, key, kind))
        return key, kind

    def column_input(e: exp.Expression) -> tuple[str, str]:
        """A plain column, or a scalar expression the enclave evaluates (a computed column)."""
        if isinstance(e, exp.Column):
            return plain_input(e)
        sql, reads = _enclave_expression(e, plain_input, ctx)
        if sql not in computed:
            typed.update(reads)
            dtype = result_type(sql, list(reads.values()))
            kind = kind_of_type(dtype)
            if kind is None:
                raise NotSupportedError(f"{e.sql(dialect='duckdb')} is {dtype}: the enclave carries numbers, "
                                        "booleans, dates and timestamps out of an expression")
            computed[sql] = (f"e{len(computed)}", sql, kind)
        name, _, kind = computed[sql]
        return name, kind

    def names_of(key: str, kind: str) -> list[str]:
        flag = [] if key in counts else [f"{key}{NULL_FLAG}"]  # a COUNT is never NULL: it has no flag
        return flag + [f"{key}{ALL_LIMBS}" if kind == "text" else key]  # text: every limb, at its width class

    outputs, order, aggregates, group_keys, select = [], [], [], [], []
    items = [(f"o{i}", e.this if isinstance(e, exp.Alias) else e) for i, e in enumerate(project.expressions)]
    by_name = {e.alias_or_name: i for i, e in enumerate(project.expressions)}
    if aggregate is not None:
        keys = {}
        for g in aggregate.group_by:
            key, kind = column_input(g)
            keys[g.sql()] = (key, kind)
            group_keys += names_of(key, kind)
        for name, e in items:
            if e.sql() in keys:
                key, kind = keys[e.sql()]
                outputs.append((name, key, kind))
            elif type(e) in ENCLAVE_AGGREGATES and not isinstance(e.this, exp.Distinct):
                func = ENCLAVE_AGGREGATES[type(e)]
                if func == "count":
                    counts.add(name)
                if isinstance(e.this, exp.Star):
                    aggregates.append(("count", None, name))
                    outputs.append((name, name, "int"))
                    continue
                key, kind = column_input(e.this)
                aggregates.append((func, f"{key}{ALL_LIMBS}" if kind == "text" else key, name))
                outputs.append((name, name, _enclave_output_kind(func, kind)))
            else:
                raise NotSupportedError(f"{e.sql()}: the enclave computes group keys and COUNT/SUM/AVG/MIN/MAX")
        result_columns = {name: (column, kind) for name, column, kind in outputs}
    else:  # SELECT DISTINCT: every output a group key
        for name, e in items:
            key, kind = column_input(e)
            outputs.append((name, key, kind))
            (group_keys if project.distinct else select).extend(names_of(key, kind))
        result_columns = {name: (column, kind) for name, column, kind in outputs}
    for ordered in sort.order if sort else []:
        key = ordered.this
        desc = bool(ordered.args.get("desc"))
        if isinstance(key, exp.Column) and not key.table and key.name in by_name:
            column, kind = result_columns[f"o{by_name[key.name]}"]
        elif key.sql() in {e.sql() for _, e in items}:
            column, kind = result_columns[next(n for n, e in items if e.sql() == key.sql())]
        elif aggregate is None and not project.distinct:
            column, kind = column_input(key)
        else:
            raise NotSupportedError(f"ORDER BY {key.sql()}: the enclave sorts by output columns")
        nulls_first = bool(ordered.args.get("nulls_first"))  # DuckDB's default: NULLS LAST either way
        order += [(c, nulls_first if c.endswith(NULL_FLAG) else desc) for c in names_of(column, kind)]
    limit_value = None
    if limit is not None:
        if limit.offset is not None or not (isinstance(limit.limit, exp.Literal) and limit.limit.is_int):
            raise NotSupportedError("OFFSET, or a LIMIT that is not a whole number, is for the SPU")
        limit_value = int(limit.limit.this)
    where = column_input(exp.and_(*residual))[0] if residual else None  # cross-party WHERE: TRUE rows count
    for party, column in protected:  # the group threshold counts each protected owner's distinct rows
        inputs.setdefault(column, (party, column, column, "int"))
    program = EnclaveProgram(tuple(group_keys), tuple(aggregates), tuple(order), limit_value,
                             max(ctx.min_group_size, 1) if aggregate is not None else 1,
                             None if aggregate is not None or project.distinct else tuple(select),
                             tuple(c for _, c in protected),
                             tuple(computed.values()), tuple(typed.values()), where)
    return EnclaveStage(rel, tuple(inputs.values()), json.dumps(program.to_json(), sort_keys=True),
                        tuple(outputs), ctx.issuer, f"{rel}_tee_out", measurements=ctx.measurements)


def _enclave_expression(e: exp.Expression, plain_input, ctx) -> tuple[str, dict]:
    """`e` as DuckDB SQL over the enclave's input names (GEODIST in its standard-SQL form), and the
    inputs it reads {name: (name, kind, SQL type)}; NotSupportedError naming a part without an enclave rule."""
    why = enclave_refusal(e)
    if why is not None:
        raise NotSupportedError(why)
    e = e.transform(lambda n: great_circle(n.expressions) if is_geodist(n) else n)
    reads = {}
    for column in e.find_all(exp.Column):
        key, kind = plain_input(column)
        reads[key] = (key, kind, ctx.column_type(column.table, column.name))
    renamed = e.transform(lambda n: exp.column(column_key(n), quoted=True) if isinstance(n, exp.Column) else n)
    return renamed.sql(dialect="duckdb"), reads


def enclave_steps(stage: EnclaveStage, project, issuer: str) -> tuple[list, list]:
    """The enclave's stage (`enclave_stage_plan`) and the issuer's finish; and what each party learns there."""
    leakage = [("enclave", "the joined rows of the inputs, inside the enclave only (sealed in, sealed out)")]
    leakage += sealed_text_widths(stage.inputs)
    if json.loads(stage.program)["computed"]:
        leakage += [(p, "whether an expression computed in the enclave failed on some row (the query is then "
                        "refused with a DataError), not which row") for p in (*stage.inputs_by_party, issuer)]
    leakage.append((issuer, "the query result (computed in a SIMULATED enclave: no hardware protection)"))
    return [stage, finish_outputs(project, issuer, stage.out)], leakage
