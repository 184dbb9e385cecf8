"""SQL scalar expressions inside the enclave: which it evaluates (`ENCLAVE_RULES`) and how (DuckDB).

The enclave holds the rows in the clear, so a scalar function of one row is evaluated exactly, by an
in-enclave DuckDB over the decoded inputs: `/`, `%`, ROUND, dates, CASTs, NULLs and errors (a `//` or
`%` by zero, a CAST out of range) are DuckDB's own. Access-pattern obliviousness concerns the operators
that move rows (sort, group-by), not a per-row function. A computed column enters the oblivious
operators as an int64 / float64 value plus a `<name>#null` flag (1 for NULL, its value then 0).

Deny by default: a node whose class is not in ENCLAVE_RULES is refused at plan time, naming it;
a rule may refuse further (a LIKE with a pattern that is not a constant, GEODIST is rewritten before).
A dialect's guard `CASE WHEN <test> THEN ERROR('...') ELSE v END` (PostgreSQL's division by zero, domain
errors) is evaluated as DuckDB's CASE, on the rows that reach it only (`short_circuit`, and the program's
WHERE first: docs/enclave.md).
"""

from __future__ import annotations

import decimal
import functools

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from sqlsecure.errors import DataError, NotSupportedError

NULL_FLAG = "#null"  # suffix of a computed column's NULL flag
ALL_LIMBS = "#*"  # `<c>#*` in a program: every limb `<c>#0`, `<c>#1`, .. of a text column, at its width class


def _constant_pattern(e: exp.Expression) -> str | None:
    """LIKE / ILIKE with a constant pattern (DuckDB's own matching, ILIKE's case folding included), and
    ESCAPE with a constant character after one of them."""
    if isinstance(e, exp.Escape) and not isinstance(e.this, (exp.Like, exp.ILike)):
        return "ESCAPE follows LIKE or ILIKE only"
    name = "ESCAPE" if isinstance(e, exp.Escape) else type(e).__name__.upper()
    return None if isinstance(e.expression, exp.Literal) else f"{name} needs a constant in the enclave"


ELAPSED_UNITS = {"MICROSECOND", "MILLISECOND", "SECOND", "MINUTE", "HOUR", "DAY", "WEEK", "MONTH", "QUARTER", "YEAR"}


def _plain_function(e: exp.Expression) -> str | None:
    """GEODIST (rewritten before DuckDB runs it), and DuckDB's DATE_SUB(unit, a, b) — whole units
    elapsed, MySQL's TIMESTAMPDIFF as planner/dialects/mysql.py writes it — with a constant unit."""
    name = str(e.this).upper()
    if name == "ERROR":
        return "ERROR(...) is evaluated only as the federation dialect's guard of a divisor or a function's domain"
    if name == "DATE_SUB":
        unit = e.expressions[0] if e.expressions else None
        constant_unit = isinstance(unit, exp.Literal) and unit.is_string and unit.this.upper() in ELAPSED_UNITS
        return None if constant_unit and len(e.expressions) == 3 else \
            f"DATE_SUB takes (unit, a, b) with a constant unit among {', '.join(sorted(ELAPSED_UNITS))}"
    if name != "GEODIST":
        return "the enclave evaluates no named function but GEODIST and DATE_SUB(unit, a, b)"
    return None if len(e.expressions) in (4, 5) else "GEODIST takes (lon1, lat1, lon2, lat2[, radius])"


def _is_guard(e: exp.Expression | None) -> bool:
    """Whether `e` is a guard `CASE WHEN <test of v> THEN ERROR('...') ELSE v END` that a dialect rule wrote
    (PostgreSQL's division by zero, a function outside its domain, a negative substring length)."""
    from sqlsecure.planner.dialects.postgres import checked_value  # plan time only (the enclave never checks)

    return isinstance(e, exp.Case) and checked_value(e) is not None


def _unparen(e: exp.Expression) -> exp.Expression:
    while isinstance(e, exp.Paren):
        e = e.this
    return e


def raises(e: exp.Expression) -> bool:
    """Whether evaluating `e` may raise a guard's ERROR."""
    return any(isinstance(n, exp.Anonymous) and n.name.upper() == "ERROR" for n in e.walk())


def short_circuit(e: exp.Expression) -> exp.Expression:
    """`e` with every AND / OR over a guard (`raises`) evaluated left to right, as PostgreSQL does: DuckDB
    evaluates both operands of AND / OR on every row of a projection, so a guard would raise on rows the
    left operand already decides (`b <> 0 AND a / b > 1`); its CASE evaluates a branch only on the rows
    that reach it (BETWEEN and IN over a guard first become the AND / OR PostgreSQL evaluates:
    `_as_postgresql_evaluates`). `a AND b` becomes `CASE WHEN (a) IS FALSE THEN FALSE ELSE (a) AND (b) END` (OR: TRUE),
    SQL's three-valued answer unchanged. A division by a guarded divisor is NULL where its dividend is
    (PostgreSQL's division is strict: its guard is not reached).

    >>> import sqlglot
    >>> short_circuit(sqlglot.parse_one("b <> 0 AND a / CASE WHEN b = 0 THEN ERROR('x') ELSE b END > 1")).sql()
    "CASE WHEN (b <> 0) IS FALSE THEN FALSE ELSE (b <> 0) AND (CASE WHEN (a) IS NULL THEN NULL ELSE a / CASE WHEN b = 0 THEN ERROR('x') ELSE b END END > 1) END"
    """
    def rewrite(node: exp.Expression) -> exp.Expression:
        if isinstance(node, (exp.Div, exp.IntDiv, exp.Mod)) and _is_guard(_unparen(node.expression)):
            # a division is strict: NULL / 0 is NULL in PostgreSQL, never its error
            return exp.Case(ifs=[exp.If(this=exp.Is(this=exp.paren(node.this.copy(), copy=False), expression=exp.null()),
                                        true=exp.null())], default=node.copy())
        if not isinstance(node, exp.Connector) or not raises(node.expression):
            return node
        decided = exp.false() if isinstance(node, exp.And) else exp.true()
        left, right = exp.paren(node.this.copy(), copy=False), exp.paren(node.expression.copy(), copy=False)
        both = type(node)(this=left, expression=right)
        return exp.Case(ifs=[exp.If(this=exp.Is(this=left.copy(), expression=decided), true=decided.copy())],
                        default=both)

    from sqlsecure.planner.dialects.common import rewrite_up  # plan time only

    return rewrite_up(rewrite_up(e.copy(), _as_postgresql_evaluates), rewrite)


def _as_postgresql_evaluates(node: exp.Expression) -> exp.Expression:
    """BETWEEN and IN (list) over a guard (`raises`) as PostgreSQL evaluates them, for `short_circuit`:
    `x >= a AND x <= b`, and `x = a OR x = b ..` in `postgres.in_list_order` (DuckDB evaluates every operand
    of both on every row, so a guard would raise on rows that PostgreSQL's comparisons never reach)."""
    from sqlsecure.planner.dialects.postgres import in_list_order  # plan time only

    if isinstance(node, exp.Between) and raises(node) and not node.args.get("symmetric"):
        x, low, high = node.this, node.args["low"], node.args["high"]
        return exp.And(this=exp.GTE(this=x.copy(), expression=low.copy()),
                       expression=exp.LTE(this=x.copy(), expression=high.copy()))
    if isinstance(node, exp.In) and not node.args.get("query") and any(map(raises, node.expressions)):
        tests = [exp.EQ(this=node.this.copy(), expression=item.copy()) for item in in_list_order(node.expressions)]
        return functools.reduce(lambda either, test: exp.Or(this=either, expression=test), tests)
    return node


ALLOWED = (
    exp.Column, exp.Literal, exp.Boolean, exp.Null, exp.DataType, exp.Paren, exp.Var, exp.Interval,
    exp.Neg, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.IntDiv, exp.Mod, exp.Abs,
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Between, exp.In, exp.Is, exp.And, exp.Or, exp.Not,
    exp.If, exp.Case, exp.Coalesce, exp.Nullif, exp.Greatest, exp.Least,
    exp.Round, exp.Floor, exp.Ceil, exp.Sqrt, exp.Exp, exp.Ln, exp.Log, exp.Pow, exp.Pi,
    exp.Sin, exp.Cos, exp.Tan, exp.Cot, exp.Asin, exp.Acos, exp.Atan, exp.Atan2,
    exp.Year, exp.Month, exp.Day, exp.DayOfMonth, exp.Extract, exp.DateDiff, exp.DateAdd, exp.DateSub,
    exp.Quarter, exp.Week, exp.DayOfWeek, exp.DayOfWeekIso, exp.DayOfYear, exp.Hour, exp.Minute, exp.Second,
    exp.DateTrunc, exp.TimestampTrunc, exp.TimeToUnix, exp.LastDay,
    exp.TsOrDsToDate,  # MySQL's YEAR(d), DAYOFWEEK(d), ..: CAST(d AS DATE)
    exp.Trunc,  # MySQL's DIV of a DOUBLE: CAST(TRUNC(x / NULLIF(y, 0)) AS BIGINT)
    exp.Cast, exp.TryCast,
)
LEAVES = (exp.Column, exp.Literal, exp.DataType, exp.Var)  # their children are names, not expressions
ENCLAVE_RULES = {**{cls: None for cls in ALLOWED}, exp.Like: _constant_pattern, exp.ILike: _constant_pattern,
                 exp.Escape: _constant_pattern, exp.Anonymous: _plain_function}


def enclave_refusal(e: exp.Expression) -> str | None:
    """Why the enclave cannot evaluate the scalar expression `e` (naming the part), or None."""
    for node in e.walk(prune=lambda n: isinstance(n, LEAVES) or _is_guard(n)):
        if _is_guard(node):  # the dialect's test and ERROR are the guard's; its value is checked as any
            why = enclave_refusal(node.args["default"])
            if why is not None:
                return why
            continue
        if type(node) not in ENCLAVE_RULES:
            return (f"{node.sql(dialect='duckdb')}: {type(node).__name__.upper()} has no enclave rule; compute it "
                    "at one party or use the SPU (docs/enclave.md: functions)")
        rule = ENCLAVE_RULES[type(node)]
        why = rule(node) if rule is not None else None
        if why is not None:
            return f"{node.sql(dialect='duckdb')}: {why}"
    return None


# --- kinds: how a SQL type is carried in int64 / float64 ---------------------------------------------

def kind_of_type(sql_type: str) -> str | None:
    """The enclave kind of a DuckDB result type (None: not carried)."""
    t = sql_type.upper()
    if t in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "BOOLEAN"):
        return "int"
    if t in ("DOUBLE", "FLOAT", "REAL"):
        return "fixed"
    if t.startswith("DECIMAL"):
        return f"decimal.{int(t.split(',')[1].rstrip(') ')) if ',' in t else 0}"
    return {"DATE": "date", "TIMESTAMP": "timestamp"}.get(t)


def enclave_type_refusal(what: str, sql_type: str) -> str:
    """Why a column of `sql_type` cannot enter the enclave, and what to do (a zone or a unit named)."""
    if "TIME ZONE" in sql_type or sql_type == "TIMESTAMPTZ":
        return (f"{what} is {sql_type}: the enclave takes TIMESTAMP without time zone (microseconds since 1970, as "
                "the SPU); CAST it to TIMESTAMP (the wall clock of one stated zone) at its owner first")
    if sql_type.startswith("TIMESTAMP_"):
        return f"{what} is {sql_type}: the enclave takes TIMESTAMP in microseconds; CAST it to TIMESTAMP first"
    return (f"{what} of type {sql_type or 'unknown'} cannot enter the enclave (it takes integers, booleans, "
            "DECIMAL, DOUBLE, DATE, TIMESTAMP and VARCHAR)")


def _typed_inputs_sql(typed) -> str:
    return ", ".join(f'CAST("{column}" AS {sql_type}) AS "{column}"' for column, _, sql_type in typed)


def result_type(sql: str, typed) -> str:
    """DuckDB's type of `sql` over inputs [(column, kind, sql type)] (plan time: no data)."""
    empty = ", ".join(f'CAST(NULL AS {t}) AS "{c}"' for c, _, t in typed) or "1 AS __one"
    cursor = _typing_database().cursor()
    try:
        return str(cursor.execute(f"DESCRIBE SELECT {sql} FROM (SELECT {empty}) LIMIT 0").fetchall()[0][1])
    except duckdb.Error as exc:
        raise NotSupportedError(f"{sql}: the enclave cannot type this expression ({str(exc).splitlines()[0]})") \
            from None
    finally:
        cursor.close()


@functools.lru_cache(maxsize=1)
def _typing_database() -> duckdb.DuckDBPyConnection:
    """An empty in-memory DuckDB that types expressions (no tables: DESCRIBE over NULL constants only), kept
    for the process: opening one costs ~15 ms of CPU, typing an expression well under 1 ms; each use
    takes its own cursor (safe across threads)."""
    return duckdb.connect()


def sql_column(name: str) -> str:
    """The SQL column an enclave column belongs to: `<c>` for a text limb `<c>#k`, `<c>#*` or a flag `<c>#null`."""
    base, _, suffix = name.rpartition("#")
    return base if base and (suffix.isdigit() or suffix in ("*", NULL_FLAG[1:])) else name


def null_flag(column: str) -> str:
    """The NULL flag's name of an enclave column (a text limb `<c>#k` or `<c>#*`: the text's `<c>#null`)."""
    return f"{sql_column(column)}{NULL_FLAG}"


def text_limb_count(names, column: str) -> int:
    """How many limbs `<column>#0`, `<column>#1`, .. are among `names` (a text column's width class)."""
    present = set(names)
    count = 0
    while f"{column}#{count}" in present:
        count += 1
    return count


def limb_names(reference: str, names) -> list[str]:
    """The columns a program's `reference` stands for: a text's `<c>#*` its limbs among `names`, else itself."""
    if not reference.endswith(ALL_LIMBS):
        return [reference]
    base = reference[:-len(ALL_LIMBS)]
    return [f"{base}#{k}" for k in range(text_limb_count(names, base))]


def _decoded(columns: dict[str, np.ndarray], column: str, kind: str) -> pa.Array:
    """An input column back as SQL values, NULL where its flag says so."""
    values = _decoded_values(columns, column, kind)
    flag = columns.get(null_flag(column))
    return values if flag is None else pc.if_else(pa.array(flag == 1), pa.nulls(len(values), values.type), values)


def _decoded_values(columns: dict[str, np.ndarray], column: str, kind: str) -> pa.Array:
    """An input column back as SQL values (the inverse of the parties' encoding)."""
    if kind == "text":
        limbs = [columns[f"{column}#{k}"] for k in range(text_limb_count(columns, column))]
        return pa.array([b"".join(int(limb[i]).to_bytes(7, "big") for limb in limbs).rstrip(b"\0").decode()
                         for i in range(len(limbs[0]))], pa.string())
    values = columns[column]
    if kind == "date":
        return pa.array(values.astype(np.int32)).cast(pa.date32())
    if kind == "timestamp":
        return pa.array(values).cast(pa.timestamp("us"))
    if kind.startswith("decimal."):
        scale = int(kind.split(".")[1])
        return pa.array([decimal.Decimal(int(v)).scaleb(-scale) for v in values], pa.decimal128(38, scale))
    if kind.startswith("scaled."):  # an AVG of a DECIMAL(p, s): the average of x * 10^s, a float
        return pa.array(values.astype(np.float64) / 10 ** int(kind.split(".")[1]))
    return pa.array(values)


def _encoded(values: pa.ChunkedArray, kind: str, name: str) -> dict[str, np.ndarray]:
    """A computed column as its enclave value and NULL flag."""
    nulls = np.asarray(values.is_null().to_numpy(zero_copy_only=False), dtype=np.int64)
    items = values.to_pylist()
    if kind == "fixed":
        data = np.array([0.0 if v is None else float(v) for v in items], np.float64)
        data[np.isnan(data)] = np.nan  # one NaN: DuckDB groups all NaNs together
    elif kind in ("date", "timestamp"):  # days, or microseconds, since 1970-01-01
        data = np.array(values.cast(pa.int32() if kind == "date" else pa.int64()).fill_null(0)
                        .to_numpy(zero_copy_only=False), np.int64)
    elif kind.startswith("decimal."):
        scale = int(kind.split(".")[1])
        scaled = [0 if v is None else int(v.scaleb(scale)) for v in items]
        if any(not -(1 << 63) < x < (1 << 63) for x in scaled):
            raise DataError(f"{name}: a DECIMAL result is beyond the enclave's 64-bit integers at its scale")
        data = np.array(scaled, np.int64)
    else:
        data = np.array([0 if v is None else int(v) for v in items], np.int64)
    return {name: data, f"{name}{NULL_FLAG}": nulls}


def evaluate_expressions(computed, typed, columns: dict[str, np.ndarray],
                         reach: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The computed columns [(name, sql, kind)] over the decoded inputs [(column, kind, sql type)]; with
    `reach` (a row mask: the rows a WHERE keeps) only on those rows, NULL on the others (DuckDB's CASE
    evaluates its branch on the rows that take it only, so a guard's ERROR never sees another row)."""
    n = len(next(iter(columns.values()))) if columns else 0
    inputs = pa.table({column: _decoded(columns, column, kind) for column, kind, _ in typed}
                      | {"__row": pa.array(np.arange(n, dtype=np.int64)),
                         "__reach": pa.array(np.ones(n, bool) if reach is None else np.asarray(reach, bool))})
    typed_sql = _typed_inputs_sql(typed)
    select = ", ".join((f'{sql} AS "{name}"' if reach is None else f'CASE WHEN __reach THEN {sql} END AS "{name}"')
                       for name, sql, _ in computed)
    query = (f"SELECT {select} FROM (SELECT {typed_sql + ', ' if typed_sql else ''}__row, __reach FROM inputs) "
             "ORDER BY __row")
    try:
        with duckdb.connect() as con:
            con.register("inputs", inputs)
            table = con.sql(query).to_arrow_table()
    except duckdb.Error as exc:
        raise DataError(f"the enclave could not evaluate {select}: {str(exc).splitlines()[0]}") from None
    out: dict[str, np.ndarray] = {}
    for name, _, kind in computed:
        out.update(_encoded(table.column(name), kind, name))
    return out
