"""The enclave's stage on the spine (the TEEU): grouping, COUNT / SUM / AVG / MIN / MAX, sorting and
limiting columns or scalar expressions of several parties' columns (joined rows, or a UNION ALL's rows
stacked), sealed in and sealed out; what
it cannot express is refused by name (the SPU keeps it, or the query, with `placement = "always"`)."""

from __future__ import annotations

import dataclasses
import json

from sqlglot import exp

from sqlsecure.errors import NotSupportedError
from sqlsecure.executors.spu.ranges import is_geodist
from sqlsecure.executors.tee.expressions import (ALL_LIMBS, NULL_FLAG, enclave_refusal, enclave_type_refusal,
                                                 kind_of_type, raises, result_type, short_circuit)
from sqlsecure.executors.tee.program import BRANCH, EnclaveProgram
from sqlsecure.executors.tee.stage import sealed_text_widths
from sqlsecure.planner.ccl_rules import function_name
from sqlsecure.planner.geodist import great_circle
from sqlsecure.planner.logical import column_key
from sqlsecure.planner.physical import EnclaveStage
from sqlsecure.planner.place_outputs import finish_outputs


ENCLAVE_KINDS = {"int": ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "BOOLEAN"),
                 "fixed": ("DECIMAL", "DOUBLE", "FLOAT", "REAL"), "text": ("VARCHAR",), "date": ("DATE",),
                 "timestamp": ("TIMESTAMP",)}
ENCLAVE_AGGREGATES = {exp.Count: "count", exp.Sum: "sum", exp.Avg: "avg", exp.Min: "min", exp.Max: "max"}
DISTINCT_AGGREGATES = {"count": "count_distinct", "sum": "sum_distinct", "avg": "avg_distinct"}


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
    """The kind of an enclave aggregate's result: COUNT, COUNT(DISTINCT) and MIN/MAX of integers are
    integers, SUM / MIN / MAX of a decimal its exact decimal, AVG of a decimal the average of x * 10^s (`scaled.<s>`), other
    AVGs and floats fixed (float64)."""
    func = func.removesuffix("_distinct") if func != "count_distinct" else func  # SUM(DISTINCT x) is typed as SUM
    if func in ("count", "count_distinct") or (kind == "int" and func in ("min", "max")):
        return "int"
    if func in ("sum", "avg") and kind in ("text", "date", "timestamp"):
        raise NotSupportedError(f"{func.upper()} of a {kind} column has no enclave rule; use MIN/MAX/COUNT, or the SPU")
    if kind.startswith("decimal."):
        return f"scaled.{kind.split('.')[1]}" if func == "avg" else kind
    return "fixed" if func == "avg" or kind == "fixed" else kind


def enclave_stage_plan(residual, project, aggregate, sort, limit, ctx, rel, protected=(), union=None,
                       branch_rows=(), set_operation=None) -> EnclaveStage:
    """The same work on the enclave, when it is only grouping, aggregating plain columns and sorting.

    `union`: a UnionScan the stage reads instead of joined rows: each member party sends its branches'
    rows stacked as one part (`p<j>/<column>`), which the enclave stacks in turn (`program.union_rows`);
    `branch_rows`: the branches (protected owners') each kept group needs the threshold's rows of;
    `set_operation`: ("intersect" / "except", the left side's branches) over a SELECT DISTINCT of the union
    (planner/set_operations.py): MIN / MAX of each distinct row's branches, never output, decide it.

    Cost model: an enclave sorts in the clear behind its access-pattern-oblivious network
    (n log^2 n compare-exchanges of plain numbers), while the SPU's sort and group-by cost
    rounds of secure comparisons; so a stage the enclave can express goes there when the federation has
    one; the rest (DISTINCT over aggregates, windows) stays on the SPU."""
    _refuse_windows_it_cannot_run(project, aggregate)
    inputs: dict[str, tuple[str, str, str, str]] = {}
    members = () if union is None else tuple(dict.fromkeys(b.party for b in union.branches))
    for j, party in enumerate(members):  # each part's branch of every row: its row count, even with no column read
        inputs[f"p{j}/{BRANCH}"] = (party, BRANCH, f"p{j}/{BRANCH}", "int")

    counts: set[str] = set()  # the outputs that are COUNTs
    computed: dict[str, tuple[str, str, str]] = {}  # DuckDB SQL -> (name, SQL, kind), evaluated in the enclave
    typed: dict[str, tuple[str, str, str]] = {}  # input -> (input, kind, SQL type), what `computed` reads
    sql_types: dict[str, str] = {}  # enclave column -> its SQL type (what HAVING reads of a group key)

    def plain_input(column: exp.Column) -> tuple[str, str]:
        if not isinstance(column, exp.Column) or not column.table:
            raise NotSupportedError(f"{column.sql()}: the enclave takes columns of the query's tables")
        kind = _enclave_kind(column, ctx)
        key = column_key(column)
        if union is not None and column.table == union.alias:  # every part sends it, under its prefix
            for j, party in enumerate(members):
                inputs.setdefault(f"p{j}/{key}", (party, key, f"p{j}/{key}", kind))
        else:
            inputs.setdefault(key, (ctx.parties[column.table], key, key, kind))
        sql_types[key] = ctx.column_type(column.table, column.name)
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
            sql_types[computed[sql][0]] = dtype
        name, _, kind = computed[sql]
        return name, kind

    def names_of(key: str, kind: str) -> list[str]:
        flag = [] if key in counts else [f"{key}{NULL_FLAG}"]  # a COUNT is never NULL: it has no flag
        return flag + [f"{key}{ALL_LIMBS}" if kind == "text" else key]  # text: every limb, at its width class

    def ordered_names(column: str, kind: str, ordered: exp.Ordered) -> list[tuple[str, bool]]:
        """ORDER BY (enclave column, descending) pairs: the NULL flag first (NULLS LAST unless NULLS FIRST,
        DuckDB's default either way), then the value (a text's every limb)."""
        desc, nulls_first = bool(ordered.args.get("desc")), bool(ordered.args.get("nulls_first"))
        return [(c, nulls_first if c.endswith(NULL_FLAG) else desc) for c in names_of(column, kind)]

    def window_column(w: exp.Window, name: str) -> tuple[str, str]:
        """The enclave window computing `w` as `name`: (name, kind of its value)."""
        func, argument, offset = _enclave_window(w)
        partition = [c for p in w.args.get("partition_by") or () for c in names_of(*column_input(p))]
        order_by = w.args.get("order")
        by = [pair for o in (order_by.expressions if order_by else ()) for pair in ordered_names(*column_input(o.this), o)]
        if argument is None:
            column, kind = None, "int"
        else:
            key, kind = column_input(argument)
            column = f"{key}{ALL_LIMBS}" if kind == "text" else key
            if func in ("sum", "avg", "min", "max"):
                kind = _enclave_output_kind(func, kind)
        if func in ("row_number", "rank", "dense_rank", "count"):
            counts.add(name)
            kind = "int"
        windows.append((func, column, name, partition, by, offset))
        return name, kind

    outputs, order, aggregates, group_keys, select, windows = [], [], [], [], [], []
    items = [(f"o{i}", e.this if isinstance(e, exp.Alias) else e) for i, e in enumerate(project.expressions)]
    by_name = {e.alias_or_name: i for i, e in enumerate(project.expressions)}
    hidden: list[str] = []  # group keys and aggregates (HAVING's, ORDER BY's) that are not outputs: never revealed
    projected: list[tuple[str, str, str]] = []  # outputs computed per group over its keys and aggregates
    projected_typed: dict[str, tuple[str, str, str]] = {}  # what `projected` reads
    having: tuple = (None, ())
    if aggregate is not None:
        keys = {}
        for g in aggregate.group_by:
            key, kind = column_input(g)
            keys[g.sql()] = (key, kind)
            group_keys += names_of(key, kind)

        def aggregate_column(e: exp.Expression, name: str) -> tuple[str, str]:
            """The enclave aggregate computing `e` as `name` (its SQL type in `sql_types`): (name, kind)."""
            func, argument = _enclave_aggregate(e)
            if argument is None:
                aggregates.append(("count", None, name))
                kind, sql_types[name] = "int", "BIGINT"
            else:
                key, kind = column_input(argument)
                aggregates.append((func, f"{key}{ALL_LIMBS}" if kind == "text" else key, name))
                kind, sql_types[name] = _enclave_output_kind(func, kind), _aggregate_type(e, sql_types[key])
            if func in ("count", "count_distinct"):
                counts.add(name)
            return name, kind

        for name, e in items:
            if e.sql() in keys or _is_aggregate(e):
                outputs.append((name, *keys[e.sql()]) if e.sql() in keys else (name, *aggregate_column(e, name)))
        result_columns = {name: (column, kind) for name, column, kind in outputs}
        aggregated = {e.sql(): result_columns[name] for name, e in items if name in result_columns
                      and e.sql() not in keys}

        def group_column(e: exp.Expression) -> tuple[str, str, str] | None:
            """A group key or an aggregate (an output's, else a hidden one): (enclave column, kind, SQL type);
            None for anything else."""
            if e.sql() in keys:
                column, kind = keys[e.sql()]
            elif _is_aggregate(e):
                if e.sql() not in aggregated:
                    aggregated[e.sql()] = aggregate_column(e, f"h{len(hidden)}")
                    hidden.append(aggregated[e.sql()][0])
                column, kind = aggregated[e.sql()]
            else:
                return None
            return column, kind, sql_types[column]

        if aggregate.having is not None:
            having = _having(aggregate.having, group_column)
        for position, (name, e) in enumerate(items):  # an expression of group keys and aggregates, per group
            if name not in result_columns:
                sql, reads = _over_groups(e, group_column, "SELECT")
                dtype = result_type(sql, list(reads))
                kind = kind_of_type(dtype)
                if kind is None:
                    raise NotSupportedError(f"{e.sql(dialect='duckdb')} is {dtype}: the enclave carries numbers, "
                                            "booleans, dates and timestamps out of an expression")
                projected.append((name, sql, kind))
                projected_typed.update({r[0]: r for r in reads})
                sql_types[name] = dtype
                outputs.insert(position, (name, name, kind))
        result_columns = {name: (column, kind) for name, column, kind in outputs}
        selected = {e.sql() for _, e in items}
        for g in aggregate.group_by:  # grouped by, not selected: never sealed to the issuer
            if g.sql() not in selected:
                hidden += [n for n in names_of(*keys[g.sql()]) if n not in hidden]
    else:  # SELECT DISTINCT: every output a group key
        for name, e in items:
            key, kind = window_column(e, f"w{name}") if isinstance(e, exp.Window) else column_input(e)
            outputs.append((name, key, kind))
            (group_keys if project.distinct else select).extend(names_of(key, kind))
        result_columns = {name: (column, kind) for name, column, kind in outputs}
    for ordered in sort.order if sort else []:
        key = ordered.this
        if isinstance(key, exp.Column) and not key.table and key.name in by_name:
            column, kind = result_columns[f"o{by_name[key.name]}"]
        elif key.sql() in {e.sql() for _, e in items}:
            column, kind = result_columns[next(n for n, e in items if e.sql() == key.sql())]
        elif aggregate is None and not project.distinct:
            column, kind = column_input(key)
        elif aggregate is not None and group_column(key) is not None:  # a group key, or a hidden aggregate
            column, kind, _ = group_column(key)
        else:
            raise NotSupportedError(f"ORDER BY {key.sql()}: the enclave sorts by output columns")
        order += ordered_names(column, kind, ordered)
    limit_value, offset = _limit_and_offset(limit)
    # cross-party WHERE: TRUE rows count; conjuncts that cannot raise first (PostgreSQL's cost order), so a
    # dialect's guard (a division by zero) is evaluated only on rows the others keep
    residual = sorted(residual, key=raises)
    where = column_input(exp.and_(*residual))[0] if residual else None
    if set_operation is not None:  # which sides hold each distinct row: its branches' lowest and highest
        operation, split = set_operation
        aggregates += [("min", BRANCH, "set_lo"), ("max", BRANCH, "set_hi")]
        hidden += ["set_lo", "set_hi"]
        having = (f'"set_lo" < {split} AND "set_hi" >= {split}' if operation == "intersect" else f'"set_hi" < {split}',
                  (("set_lo", "int", "BIGINT"), ("set_hi", "int", "BIGINT")))
    for party, column in protected:  # the group threshold counts each protected owner's distinct rows
        inputs.setdefault(column, (party, column, column, "int"))
    program = EnclaveProgram(tuple(group_keys), tuple(aggregates), tuple(order), limit_value,
                             ctx.min_group_size if aggregate is not None else 1,  # 0: SQL's one row over none
                             None if aggregate is not None or project.distinct else tuple(select),
                             tuple(c for _, c in protected),
                             tuple(computed.values()), tuple(typed.values()), where, *having, tuple(hidden), offset,
                             distinct=bool(project.distinct and aggregate is not None), windows=tuple(windows),
                             projected=tuple(projected), projected_typed=tuple(projected_typed.values()),
                             union=tuple(f"p{j}/" for j in range(len(members))),
                             branch_rows=tuple(branch_rows) if aggregate is not None else ())
    branches = () if union is None else tuple((b.party, f"u{i}") for i, b in enumerate(union.branches))
    return EnclaveStage(rel, tuple(inputs.values()), json.dumps(program.to_json(), sort_keys=True),
                        tuple(outputs), ctx.issuer, f"{rel}_tee_out", measurements=ctx.measurements, union=branches)


def union_typed(union, ctx):
    """The UnionScan with each branch's outputs CAST to the union's column types (DuckDB's, as plain
    DuckDB's UNION ALL casts them), so every party encodes a column at one kind and one scale; a column
    whose type is unknown is refused by name."""
    types = []
    for column in union.columns:
        dtype = ctx.column_type(union.alias, column)
        if not dtype:
            raise NotSupportedError(f"{union.alias}.{column}: the type of this UNION ALL column is unknown, and "
                                    "the enclave encodes every branch's values at the union's type")
        types.append(dtype)
    branches = []
    for branch in union.branches:
        body = exp.Subquery(this=branch.select.copy(), alias=exp.TableAlias(this=exp.to_identifier("__branch")))
        casts = [exp.alias_(exp.cast(exp.column(name, quoted=True), exp.DataType.build(dtype, dialect="duckdb")),
                            name, quoted=True) for name, dtype in zip(branch.output, types)]
        branches.append(dataclasses.replace(branch, select=exp.select(*casts).from_(body)))
    return dataclasses.replace(union, branches=tuple(branches))


ENCLAVE_WINDOWS = {exp.RowNumber: "row_number", exp.Rank: "rank", exp.DenseRank: "dense_rank", exp.Lag: "lag",
                   exp.Lead: "lead", **ENCLAVE_AGGREGATES}


def _refuse_windows_it_cannot_run(project, aggregate) -> None:
    """Window functions run in a plain program, each a whole output (not inside an expression, nor with
    GROUP BY or SELECT DISTINCT, whose rows are not the input's); refused by name otherwise."""
    for e in project.expressions:
        e = e.this if isinstance(e, exp.Alias) else e
        window = e.find(exp.Window)
        if window is None:
            continue
        where = ("over a grouped query" if aggregate is not None else "under SELECT DISTINCT" if project.distinct
                 else "inside an expression" if window is not e else None)
        if where is not None:
            raise NotSupportedError(f"{e.sql(dialect='duckdb')}: the enclave computes window functions as whole "
                                    f"outputs of a query without GROUP BY or DISTINCT, not {where}; the SPU may")


def _enclave_window(w: exp.Window) -> tuple[str, exp.Expression | None, int]:
    """(the enclave's window kind, its argument or None, LAG / LEAD's offset) of a window function with the
    default frame; NotSupportedError naming what the enclave does not compute."""
    func = w.this
    if type(func) not in ENCLAVE_WINDOWS or (type(func) in ENCLAVE_AGGREGATES and isinstance(func.this, exp.Distinct)):
        raise NotSupportedError(f"{func.sql(dialect='duckdb')} OVER: the enclave computes ROW_NUMBER, RANK, DENSE_RANK, "
                                "COUNT / SUM / AVG / MIN / MAX and LAG / LEAD over a window; the SPU may")
    if w.args.get("spec") is not None or w.args.get("alias") is not None:
        raise NotSupportedError(f"{w.sql(dialect='duckdb')}: the enclave runs windows with the default frame only "
                                "(no ROWS / RANGE clause, no named window)")
    kind = ENCLAVE_WINDOWS[type(func)]
    offset = 1
    if kind in ("lag", "lead"):
        given, default = func.args.get("offset"), func.args.get("default")
        if given is not None and not (isinstance(given, exp.Literal) and given.is_int):
            raise NotSupportedError(f"{func.sql(dialect='duckdb')}: the enclave takes a constant whole-number offset")
        if default is not None and not isinstance(default, exp.Null):
            raise NotSupportedError(f"{func.sql(dialect='duckdb')}: the enclave's {kind.upper()} has no default value "
                                    "(NULL outside the partition); wrap it in COALESCE at the issuer, or use the SPU")
        offset = 1 if given is None else int(given.this)
    argument = func.this if kind not in ("row_number", "rank", "dense_rank") else None
    return kind, None if isinstance(argument, exp.Star) else argument, offset


def _is_aggregate(e: exp.Expression) -> bool:
    """Any aggregate call: one the enclave lacks is refused by name (`_enclave_aggregate`), not as its columns."""
    return isinstance(e, exp.AggFunc)


def _enclave_aggregate(e: exp.Expression) -> tuple[str, exp.Expression | None]:
    """(the enclave's aggregate kind, its argument; None for COUNT(*)) of an aggregate of the query:
    COUNT / SUM / AVG / MIN / MAX, and COUNT(DISTINCT x) of one argument (a second oblivious sort)."""
    if type(e) not in ENCLAVE_AGGREGATES:
        raise NotSupportedError(f"{e.sql(dialect='duckdb')}: the aggregate {function_name(e)} is not supported in the "
                                "enclave, which computes COUNT / SUM / AVG / MIN / MAX and COUNT(DISTINCT x)")
    func = ENCLAVE_AGGREGATES[type(e)]
    if isinstance(e.this, exp.Distinct):
        if len(e.this.expressions) != 1:
            raise NotSupportedError(f"{e.sql()}: the enclave computes DISTINCT aggregates of one value only")
        # MIN / MAX of the distinct values are those of all values; the others sort (keys, x) once more
        return DISTINCT_AGGREGATES.get(func, func), e.this.expressions[0]
    return func, None if isinstance(e.this, exp.Star) else e.this


def _aggregate_type(e: exp.Expression, argument_type: str) -> str:
    """DuckDB's type of the aggregate `e` over an argument of `argument_type` (plan time, no data)."""
    distinct = "DISTINCT " if isinstance(e.this, exp.Distinct) else ""
    call = f"{type(e).__name__.upper()}({distinct}x)"
    return result_type(call, [("x", "", argument_type)])


def _having(condition: exp.Expression, group_column) -> tuple[str, tuple]:
    """HAVING as DuckDB SQL over the grouped columns, and what it reads (`_over_groups`), typed at plan time."""
    sql, reads = _over_groups(condition, group_column, "HAVING")
    result_type(sql, list(reads))  # typed at plan time: an ill-typed HAVING is refused here
    return sql, reads


def _over_groups(condition: exp.Expression, group_column, clause: str) -> tuple[str, tuple]:
    """An expression of a grouped query's `clause` (HAVING, a SELECT item) as DuckDB SQL over the grouped
    columns, and what it reads [(column, kind, SQL type)]: each group key and aggregate becomes its enclave
    column (`group_column` adds an aggregate the outputs lack, computed but never revealed); a column
    outside both is refused by name."""
    reads: dict[str, tuple[str, str, str]] = {}

    def grouped(node: exp.Expression) -> exp.Expression:
        found = group_column(node)
        if found is None:
            if isinstance(node, exp.Column):
                raise NotSupportedError(f"{clause} reads {node.sql()}, which is neither a group key nor inside an "
                                        "aggregate; group by it or aggregate it")
            return node
        column, kind, dtype = found
        name = column[:-len(ALL_LIMBS)] if column.endswith(ALL_LIMBS) else column
        reads[name] = (name, kind, dtype)
        return exp.column(name, quoted=True)

    rewritten = condition.transform(grouped)
    why = enclave_refusal(rewritten)
    if why is not None:
        raise NotSupportedError(f"{clause} {why}")
    return short_circuit(rewritten).sql(dialect="duckdb"), tuple(reads.values())


def _limit_and_offset(limit) -> tuple[int | None, int]:
    """LIMIT and OFFSET as whole numbers (constants of the query: the enclave's cut is public)."""
    if limit is None:
        return None, 0
    values = []
    for clause, value in (("LIMIT", limit.limit), ("OFFSET", limit.offset)):
        if value is not None and not (isinstance(value, exp.Literal) and value.is_int):
            raise NotSupportedError(f"{clause} {value.sql()}: the enclave takes a whole number; the SPU may not")
        values.append(None if value is None else int(value.this))
    return values[0], values[1] or 0


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
    return short_circuit(renamed).sql(dialect="duckdb"), reads


def enclave_steps(stage: EnclaveStage, project, issuer: str) -> tuple[list, list]:
    """The enclave's stage (`enclave_stage_plan`) and the issuer's finish; and what each party learns there."""
    rows = "every branch's rows of the UNION ALL" if stage.union else "the joined rows of the inputs"
    leakage = [("enclave", f"{rows}, inside the enclave only (sealed in, sealed out)")]
    if stage.union:
        leakage.append(("enclave", "the row count of each party's branches (the size of its sealed batches)"))
    leakage += sealed_text_widths(stage.inputs)
    program = json.loads(stage.program)
    if program["computed"] or program["having"] or program["projected"]:
        leakage += [(p, "whether an expression computed in the enclave failed on some row (the query is then "
                        "refused with a DataError), not which row") for p in (*stage.inputs_by_party, issuer)]
    leakage.append((issuer, "the query result (computed in a SIMULATED enclave: no hardware protection)"))
    return [stage, finish_outputs(project, issuer, stage.out)], leakage
