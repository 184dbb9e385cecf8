"""The column-control rule of every expression the planner accepts (deny by default).

`RULES` maps each sqlglot expression class to one `Rule`; `rule_of` answers None for anything
else, and column control then makes that value ENCRYPTED_ONLY with a message naming the function
(`planner/ccl.py`), so an unknown function can never be revealed. The listing in
docs/federation.md is generated from this table by `listing()` (tests/test_ccl_table.py keeps the
two equal).

Why each aggregate is where it is: only aggregates whose result hides the individual rows
promote PLAINTEXT_AFTER_AGGREGATE (SCQL's set: SUM, COUNT, AVG, MIN, MAX; COUNT(DISTINCT x) is
COUNT of a DISTINCT argument, allowed as in SCQL: it reveals how many distinct values a group has,
never one of them). COUNT has its own rule: it reveals no value, only how many rows (or non-NULL,
or distinct values) there are, which comparisons alone determine, so PLAINTEXT_AFTER_COMPARE
suffices too. Aggregates that return an input value or a list of them (STRING_AGG, LIST,
FIRST, ANY_VALUE, MODE, MEDIAN, quantiles, ARG_MAX, ...) or statistics that pin down single values
of small groups (STDDEV, VARIANCE, ...) keep their argument's constraint unchanged; those that collect
many values into one list or string close it (MAX over such lists would pick one whole list).
"""

from __future__ import annotations

import enum
import math

from sqlglot import exp

from sqlsecure.planner.dialects.common import joined_acronyms
from sqlsecure.planner.dialects.postgres import checked_value
from sqlsecure.planner.row_counts import counts_rows, never_zero


class Rule(enum.Enum):
    LEAF = "a constant: PLAINTEXT (a column: its grant)"
    SCALAR = "a deterministic function of its inputs: their combined visibility"
    COMPARE = "a comparison: PLAINTEXT when every input is PLAINTEXT or PLAINTEXT_AFTER_COMPARE"
    AGGREGATE = "hides individual rows: PLAINTEXT_AFTER_AGGREGATE inputs become PLAINTEXT"
    COUNT = "counts rows: PLAINTEXT_AFTER_AGGREGATE or PLAINTEXT_AFTER_COMPARE inputs and rows become PLAINTEXT"
    VALUE_AGGREGATE = "returns input values: the argument's constraint, unchanged"
    COLLECT = "collects many input values: PLAINTEXT if the argument is, else ENCRYPTED_ONLY"
    FILTERED_AGGREGATE = "AGG(...) FILTER (WHERE cond): the aggregate's, and cond as a WHERE condition"
    RANKING = "a rank over the window's ORDER BY: PLAINTEXT when the keys are PLAINTEXT or REVEAL_RANK"
    WINDOW_VALUE = "another row's value (LAG, FIRST_VALUE, ...): the argument's constraint, unchanged"
    WINDOW = "a window: per row, no aggregation; PARTITION BY keys as comparisons, ORDER BY keys as ranks"
    SUBQUERY = "a subquery: its outputs' visibility, its own clauses checked"
    EXISTS = "EXISTS: PLAINTEXT once the subquery's clauses pass"


LEAVES = (exp.Column, exp.Literal, exp.Null, exp.Boolean, exp.Star, exp.DataType, exp.Var, exp.Placeholder,
          exp.Parameter, exp.Identifier, exp.CurrentDate, exp.CurrentTimestamp, exp.CurrentTime, exp.Pi)

OPERATORS = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.IntDiv, exp.Mod, exp.Pow, exp.Neg, exp.BitwiseAnd,
             exp.BitwiseOr, exp.BitwiseXor, exp.BitwiseNot, exp.BitwiseLeftShift, exp.BitwiseRightShift,
             exp.Paren, exp.Not, exp.And, exp.Or, exp.Xor, exp.DPipe, exp.Cast, exp.TryCast, exp.Case, exp.If,
             exp.Interval, exp.Distinct, exp.IgnoreNulls, exp.RespectNulls, exp.Ordered, exp.Order, exp.Tuple,
             exp.Collate, exp.Escape)

SCALAR_FUNCTIONS = (
    # conditional (GREATEST / LEAST compare their arguments and return one: as CASE WHEN a > b THEN a ELSE b
    # END, whose comparison is no more visible than the values it chooses between)
    exp.Coalesce, exp.Nullif, exp.Nvl2, exp.Greatest, exp.Least,
    # numeric
    exp.Abs, exp.Round, exp.Ceil, exp.Floor, exp.Trunc, exp.Sqrt, exp.Cbrt, exp.Exp, exp.Ln, exp.Log, exp.Sign,
    exp.SafeDivide, exp.Radians, exp.Degrees, exp.Sin, exp.Cos, exp.Tan, exp.Asin, exp.Acos, exp.Atan,
    exp.Atan2, exp.Cot, exp.Sinh, exp.Factorial, exp.IsNan, exp.IsInf, exp.ToNumber, exp.ToDouble,
    # text
    exp.Upper, exp.Lower, exp.Length, exp.ByteLength, exp.BitLength, exp.Substring, exp.Concat, exp.ConcatWs,
    exp.Trim, exp.Pad, exp.Left, exp.Right, exp.StrPosition, exp.Reverse, exp.Repeat, exp.Initcap,
    exp.Replace, exp.Translate, exp.Overlay, exp.SplitPart, exp.RegexpExtract, exp.RegexpReplace, exp.Chr,
    exp.Ascii, exp.Unicode, exp.Hex, exp.Unhex, exp.Levenshtein, exp.MD5, exp.SHA, exp.SHA2, exp.ToChar,
    # dates and times
    exp.DateTrunc, exp.TimestampTrunc, exp.Extract, exp.DateAdd, exp.DateSub, exp.DateDiff, exp.TimestampAdd,
    exp.TimestampSub, exp.TimestampDiff, exp.TimeAdd, exp.DatetimeDiff, exp.TsOrDsAdd, exp.TsOrDsDiff,
    exp.Year, exp.Quarter, exp.Month, exp.Week, exp.WeekOfYear, exp.Day, exp.DayOfWeek, exp.DayOfWeekIso,
    exp.DayOfMonth, exp.DayOfYear, exp.Hour, exp.Minute, exp.Second, exp.LastDay, exp.MonthsBetween,
    exp.DateFromParts,
    exp.StrToDate, exp.StrToTime, exp.StrToUnix, exp.TimeToStr, exp.TimeToUnix, exp.UnixToTime, exp.Date,
    exp.TsOrDsToDate, exp.TsOrDsToTimestamp, exp.Timestamp, exp.DateStrToDate, exp.Dayname, exp.Monthname, exp.DateBin,
    # other deterministic functions
    exp.Format, exp.Split, exp.Array, exp.ArraySize, exp.Uuid, exp.Rand,
)

# Functions sqlglot parses as Anonymous that are deterministic scalars in DuckDB, by lower-case name.
ANONYMOUS_SCALARS = frozenset({
    "date_part", "datepart", "strlen", "age", "even", "prefix", "suffix", "gcd", "lcm", "bit_count", "printf",
    "signbit", "weekday", "millisecond", "microsecond", "epoch", "epoch_ms", "now", "hash", "isodow",
    "isoyear", "yearweek", "era", "century", "decade", "nanosecond",
    "round_even",  # ROUND of a DOUBLE, ties to even (PostgreSQL's, planner/dialects/)
    "timezone",  # the wall clock of a zone (CURDATE()/NOW() in the federation's time_zone, planner/dialects/)
    "date_sub",  # whole units elapsed (MySQL's TIMESTAMPDIFF, planner/dialects/mysql.py); on the SPU for fixed units
    "geodist",  # SCQL's; evaluated on the SPU (planner/geodist.py rewrites a one-party GEODIST into DuckDB SQL)
})

# Defined on part of their domain: where a counted row falls outside it the query fails (at the SPU or at the
# owner), before any group threshold, so whether one does is a comparison of those arguments, per row.
# (class, the arguments checked: "divisor" is the operator's right operand, "all" every argument)
PARTIAL = {exp.Div: "divisor", exp.IntDiv: "divisor", exp.Mod: "divisor", exp.Ln: "all", exp.Log: "all",
           exp.Sqrt: "all", exp.Pow: "all", exp.Asin: "all", exp.Acos: "all", exp.Tan: "all", exp.Cot: "all",
           exp.Chr: "all", exp.DateFromParts: "all", exp.StrToDate: "all", exp.StrToTime: "all", exp.Unhex: "all",
           # out of range on some values: a shift by a negative or too wide count, epoch seconds beyond TIMESTAMP,
           # a date moved by a number of days beyond DATE's, a factorial beyond its type
           exp.BitwiseLeftShift: "all", exp.UnixToTime: "all", exp.DateAdd: "all", exp.DateSub: "all",
           exp.Factorial: "all"}

COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Between, exp.In, exp.Like, exp.ILike,
               exp.Is, exp.NullSafeEQ, exp.NullSafeNEQ, exp.Glob, exp.SimilarTo, exp.RegexpLike,
               exp.StartsWith, exp.EndsWith, exp.Contains)

AGGREGATES = (exp.Sum, exp.Avg, exp.Min, exp.Max)

# A list or string of many rows' values: no later aggregate may hide them (MAX of lists is a list).
COLLECTING = (exp.GroupConcat, exp.ArrayAgg)

VALUE_AGGREGATES = (exp.First, exp.Last, exp.AnyValue, exp.Mode, exp.Median,
                    exp.Quantile, exp.ApproxQuantile, exp.PercentileCont, exp.PercentileDisc, exp.WithinGroup,
                    exp.ArgMax, exp.ArgMin, exp.Stddev, exp.StddevPop, exp.StddevSamp, exp.Variance,
                    exp.VariancePop, exp.CountIf, exp.LogicalAnd, exp.LogicalOr, exp.ApproxDistinct,
                    exp.Kurtosis, exp.Skewness, exp.Corr, exp.CovarSamp, exp.CovarPop, exp.BitwiseAndAgg,
                    exp.BitwiseOrAgg, exp.BitwiseXorAgg)

RANKING = (exp.RowNumber, exp.Rank, exp.DenseRank, exp.PercentRank, exp.CumeDist, exp.Ntile)

WINDOW_VALUES = (exp.Lag, exp.Lead, exp.FirstValue, exp.LastValue, exp.NthValue)

SUBQUERIES = (exp.Subquery, exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Any, exp.All)

RULES: dict[type[exp.Expression], Rule] = {
    **{c: Rule.LEAF for c in LEAVES},
    **{c: Rule.SCALAR for c in OPERATORS + SCALAR_FUNCTIONS},
    **{c: Rule.COMPARE for c in COMPARISONS},
    **{c: Rule.AGGREGATE for c in AGGREGATES},
    exp.Count: Rule.COUNT,
    **{c: Rule.VALUE_AGGREGATE for c in VALUE_AGGREGATES},
    **{c: Rule.COLLECT for c in COLLECTING},
    exp.Filter: Rule.FILTERED_AGGREGATE,
    **{c: Rule.RANKING for c in RANKING},
    **{c: Rule.WINDOW_VALUE for c in WINDOW_VALUES},
    exp.Window: Rule.WINDOW,
    **{c: Rule.SUBQUERY for c in SUBQUERIES},
    exp.Exists: Rule.EXISTS,
}


def rule_of(e: exp.Expression) -> Rule | None:
    """The rule of an expression's exact class; None (refused) for anything not listed."""
    if isinstance(e, exp.Anonymous):
        return Rule.SCALAR if str(e.this).lower() in ANONYMOUS_SCALARS else None
    rule = RULES.get(type(e))
    if rule is Rule.AGGREGATE and any(v not in (None, [], False) for k, v in e.args.items()
                                      if k not in ("this", "big_int")):
        return Rule.COLLECT  # MAX(x, 3), MIN(x, 3): the top n values, as a list
    return rule


def domain_arguments(e: exp.Expression) -> list[exp.Expression]:
    """The arguments of a partial function (`PARTIAL`) whose values decide whether a row fails the query; a
    divisor written NULLIF(y, 0) never does (nor PostgreSQL's zero-checked NULLIF(y, 0)), nor a count that is
    never zero (`row_counts.never_zero`: a group's COUNT(*), a row number)."""
    which = PARTIAL.get(type(e))
    if which == "divisor":
        divisor = checked_value(e.expression) or e.expression  # PostgreSQL's checked divisor: y itself
        guarded = isinstance(divisor, exp.Nullif) and divisor.expression == exp.Literal.number(0) or \
            never_zero(divisor)
        return [] if guarded else [divisor]
    return list(e.iter_expressions()) if which else []


def function_name(e: exp.Expression) -> str:
    """What a user wrote: the Anonymous function's own name, a function's SQL name, an operator's symbol."""
    if isinstance(e, exp.Anonymous):
        return str(e.this).upper()
    return display(type(e))


SYMBOLS = {exp.Add: "+", exp.Sub: "-", exp.Mul: "*", exp.Div: "/", exp.IntDiv: "//", exp.Mod: "%",
           exp.Pow: "^", exp.Neg: "unary -", exp.BitwiseAnd: "&", exp.BitwiseOr: "|", exp.BitwiseXor: "XOR()",
           exp.BitwiseNot: "~", exp.BitwiseLeftShift: "<<", exp.BitwiseRightShift: ">>", exp.Paren: "( )",
           exp.Not: "NOT", exp.And: "AND", exp.Or: "OR", exp.Xor: "XOR", exp.DPipe: "||", exp.Cast: "CAST",
           exp.TryCast: "TRY_CAST", exp.Case: "CASE", exp.If: "IF", exp.Interval: "INTERVAL",
           exp.Distinct: "DISTINCT", exp.IgnoreNulls: "IGNORE NULLS", exp.RespectNulls: "RESPECT NULLS",
           exp.Ordered: "ORDER BY item", exp.Order: "ORDER BY (inside an aggregate)", exp.Tuple: "(a, b)",
           exp.Collate: "COLLATE", exp.EQ: "=",
           exp.NEQ: "<>", exp.GT: ">", exp.GTE: ">=", exp.LT: "<", exp.LTE: "<=", exp.Between: "BETWEEN",
           exp.In: "IN", exp.Like: "LIKE", exp.ILike: "ILIKE", exp.Is: "IS", exp.NullSafeEQ: "IS NOT DISTINCT FROM",
           exp.NullSafeNEQ: "IS DISTINCT FROM", exp.Glob: "GLOB", exp.SimilarTo: "SIMILAR TO",
           exp.Escape: "ESCAPE", exp.Filter: "FILTER (WHERE ...)", exp.WithinGroup: "WITHIN GROUP",
           exp.Window: "OVER (...)"}


def display(cls: type[exp.Expression]) -> str:
    """The name the docs list a class under, as SQL spells it."""
    if cls in SYMBOLS:
        return SYMBOLS[cls]
    if issubclass(cls, exp.Func):
        return joined_acronyms(cls.sql_name())
    return cls.key.upper()


def names(rule: Rule) -> list[str]:
    """Sorted display names of every class (and Anonymous function name) with `rule`."""
    anonymous = {n.upper() for n in ANONYMOUS_SCALARS} if rule is Rule.SCALAR else set()
    return sorted({display(c) for c, r in RULES.items() if r is rule} | anonymous)


def listing() -> str:
    """Markdown: per constraint, what it allows the issuer to learn (docs/federation.md embeds it)."""

    def items(rule: Rule) -> str:
        return ", ".join(f"`{n}`" for n in names(rule))

    return "\n".join([
        "| constraint | what the issuer may learn of the column |",
        "|---|---|",
        "| `PLAINTEXT` | anything: every function, operator and clause below |",
        f"| `PLAINTEXT_AFTER_AGGREGATE` | the result of {items(Rule.AGGREGATE)}, {items(Rule.COUNT)} over it (not "
        "windowed; `MAX(x, n)` and `MIN(x, n)` are lists of values, as below), also through scalar functions and "
        "operators inside the aggregate; as a filter's condition it restricts every column and the rows to the same "
        "(so `COUNT(*)` or `SUM(y)` of the rows that pass may be learned) |",
        f"| `PLAINTEXT_AFTER_COMPARE` | the result of {items(Rule.COMPARE)} (in the output, in CASE conditions, "
        f"in WHERE / ON / HAVING / QUALIFY / FILTER); {items(Rule.COUNT)} over it; as a window's PARTITION BY key |",
        "| `PLAINTEXT_AFTER_GROUP_BY` | as a GROUP BY key (output or not), and inside the aggregates of its groups |",
        "| `PLAINTEXT_AFTER_JOIN` | in a join equality of two tables' columns (ON, WHERE) and IN (subquery); "
        "PLAINTEXT to the issuer after an inner join where the other key is the issuer's (after an outer join "
        "only when the issuer's side is preserved); `COUNT` of a join key NULL exactly where its row found no "
        "match (either key of an inner join, the NULL-supplying side's of an outer one: the matched rows), not "
        "`COUNT(DISTINCT …)` |",
        f"| `REVEAL_RANK` | as an ORDER BY key; as the window ORDER BY key of {items(Rule.RANKING)} |",
        "| `PLAINTEXT_AS_JOIN_PAYLOAD` | PLAINTEXT to the issuer after an inner join of the column's party with the "
        "issuer's data; nothing otherwise |",
        "| `ENCRYPTED_ONLY` | nothing |",
        "",
        f"Scalar operators (the inputs' combined visibility): "
        f"{', '.join(f'`{n}`' for n in names(Rule.SCALAR) if n in SYMBOLS.values())}.",
        "",
        f"Scalar functions (the inputs' combined visibility): "
        f"{', '.join(f'`{n}`' for n in names(Rule.SCALAR) if n not in SYMBOLS.values())}.",
        "",
        f"Aggregates that collect input values into a list or string: {items(Rule.COLLECT)}, `MAX(x, n)`, "
        "`MIN(x, n)`: "
        "PLAINTEXT arguments only; their result is ENCRYPTED_ONLY otherwise (no later MIN or MAX may pick one "
        "collection).",
        "",
        "Other aggregates return input values, or statistics that pin down single values of small groups: "
        f"the argument's constraint, unchanged (revealed as is only when PLAINTEXT): {items(Rule.VALUE_AGGREGATE)}.",
        "",
        "Windows (`OVER (...)`) are per row: an aggregate over a window is no aggregation (the argument's "
        "constraint applies per row, whatever the frame); PARTITION BY keys need `PLAINTEXT_AFTER_COMPARE` "
        "(rows of one partition are shown equal), ORDER BY keys `REVEAL_RANK`, a frame offset read from a row "
        "(`ROWS BETWEEN x PRECEDING`) `PLAINTEXT_AFTER_COMPARE` (a negative one fails the query). Window functions returning "
        f"another row's value keep the argument's constraint: {items(Rule.WINDOW_VALUE)}.",
        "",
        "Functions defined on part of their domain fail the query where a row falls outside it, before any "
        "group threshold, which shows a comparison of the row's value: the divisor of "
        f"{', '.join(f'`{display(c)}`' for c, w in PARTIAL.items() if w == 'divisor')} and every argument of "
        f"{', '.join(f'`{display(c)}`' for c, w in PARTIAL.items() if w == 'all')} need `PLAINTEXT` or "
        "`PLAINTEXT_AFTER_COMPARE` (per row, also inside an aggregate; `PLAINTEXT_AFTER_AGGREGATE` too where no group "
        "threshold or DP protects the issuer's results); a divisor written `NULLIF(y, 0)` never divides by zero (the "
        "mysql dialect writes MySQL's `/` and `%` so), nor "
        "does a count that is at least 1 on every row (`ROW_NUMBER`, `RANK`, `DENSE_RANK`, `COUNT(*)` over a window "
        "without a frame or of a `GROUP BY` group, or a CTE's or subquery's column defined by one: "
        "`planner/row_counts.py`), but an integer `//` also fails dividing its type's least value by -1, so its operands need the same unless the "
        "dividend's published magnitude class proves it above that value. So do, by the "
        "same rule, the argument of a `CAST` whose target cannot hold every value of its type nor of its published "
        "magnitude class (`AVG`, `MIN`, `MAX` and a quotient by an integer have their argument's; `TRY_CAST` never "
        "fails), the operands of integer `+`, `-`, `*`, `ABS` and negation unless "
        "the magnitude classes prove the result fits its type (a count — `COUNT`, `ROW_NUMBER`, `RANK`, `DENSE_RANK`, "
        "`COUNT` over a window, and a CTE's or subquery's column defined by one — has the class of the rows its "
        "SELECT reads, bounded by the published sizes: `r2.rn = r1.rn + 1` and `COUNT(*) + 1` never overflow, "
        "`planner/row_counts.py`), a date or timestamp moved by an `INTERVAL` or a number "
        "of days (the date and the amount), the counts of `SUBSTRING` (start and length beyond ±2^32), `LEFT` "
        "(beyond 2^32), `REPEAT` (text beyond 4 GiB: a constant count too, unless its text's length, known from "
        "constants and counts, times the count stays below) and `LPAD` / `RPAD` (a huge count; also the text and fill "
        "where the fill is not a non-empty constant) unless constants or proven small by their magnitude classes "
        "(`RIGHT`, `SPLIT_PART`, `OVERLAY` never fail), the pattern of a regular expression (`REGEXP_MATCHES`, "
        "`REGEXP_EXTRACT`, `REGEXP_REPLACE`, `SIMILAR TO`) and `FORMAT`'s format string unless constants, and the "
        "operands of a rounding (`ROUND`, `FLOOR`, `CEIL`, a `CAST` to an integer or DECIMAL, even one its target "
        "holds) of a DOUBLE or "
        "approximate value and of a comparison (also `NULLIF`, `GREATEST`, `LEAST`) of an approximate value (a "
        "quotient by a secret, `SQRT`, `LN`, `EXP`, ...), which the SPU refuses within their error of a boundary (not "
        "a divisor's `NULLIF(y, 0)` whose y is at least 1 on every row, `y * y + 1`: the SPU does not compare it); "
        "under DP such a rounding or comparison of another party's aggregate is refused. So do a unit, time zone or "
        "format DuckDB parses on each row (`DATE_TRUNC`, `DATE_DIFF`, `DATE_PART`, `TIMEZONE`, `PRINTF`), text read as a "
        "date or number by a function (`DATE`, `TO_NUMBER`, `STRPTIME`'s format, ...), and the parts of a "
        "concatenation or `REPLACE` whose grown text (`REPEAT`, `LPAD`, `REPLACE`) may pass 4 GiB; and, deny by "
        "default, every non-constant argument of a scalar function not proven never to fail (`NEVER_FAILING` in "
        "planner/ccl_rules.py: `LCM`, an `INTERVAL`'s amount, `TIME_BUCKET`, `TIMESTAMPADD`, ...).",
        "",
        "Subqueries (scalar, `IN`, `EXISTS`, `ANY` / `ALL`), CTEs and set operations: their outputs' "
        "visibility, with their own clauses checked. `AGG(...) FILTER (WHERE cond)`: the aggregate's, with "
        "`cond` checked as a WHERE condition.",
        "",
        "Any other function, aggregate or operator (including user-defined and dialect-specific functions "
        "sqlglot does not know) is refused with `PolicyViolation` naming it, whatever the grants. Names are "
        "sqlglot's; each dialect's spellings map to them (`strpos` and `instr` are `STR_POSITION`).",
    ])


# -- values that may fail the query on one row ----------------------------------------------------------
# Besides `PARTIAL`, a value fails the query at its owner (DuckDB's "Conversion Error", "Out of Range") or on
# the SPU (its range and approximation guards) for some rows only; whether a row does is then a comparison of
# the arguments, so `failing_arguments` names them, with why, for planner/ccl.py to check like a divisor.

T = exp.DataType.Type
INTEGER_RANGES = {T.TINYINT: 7, T.SMALLINT: 15, T.INT: 31, T.BIGINT: 63, T.INT128: 127,
                  T.UTINYINT: 8, T.USMALLINT: 16, T.UINT: 32, T.UBIGINT: 64, T.UINT128: 128}
UNSIGNED = (T.UTINYINT, T.USMALLINT, T.UINT, T.UBIGINT, T.UINT128)
FLOATS = (T.DOUBLE, T.FLOAT)
TEXTS = (T.VARCHAR, T.TEXT, T.CHAR, T.NVARCHAR, T.NCHAR)
TIMES = (T.DATE, T.TIMESTAMP, T.TIMESTAMPTZ, T.TIMESTAMPNTZ, T.DATETIME)
FLOAT_LIMIT = {T.DOUBLE: 1.7e308, T.FLOAT: 3.4e38}


def type_limit(dtype: exp.DataType) -> tuple[float, float] | None:
    """(least, greatest) value a numeric type holds; None for other types."""
    if dtype.this in INTEGER_RANGES:
        bits = INTEGER_RANGES[dtype.this]
        return (0.0, 2.0 ** bits - 1) if dtype.this in UNSIGNED else (-2.0 ** bits, 2.0 ** bits - 1)
    if dtype.this is T.DECIMAL:
        precision, scale = decimal_digits(dtype)
        return -(10.0 ** (precision - scale)) + 1, 10.0 ** (precision - scale) - 1
    if dtype.this in FLOATS:
        return -FLOAT_LIMIT[dtype.this], FLOAT_LIMIT[dtype.this]
    if dtype.this is T.BOOLEAN:
        return 0.0, 1.0
    return None


def decimal_digits(dtype: exp.DataType) -> tuple[int, int]:
    """DECIMAL(p, s)'s (p, s): DuckDB's DECIMAL alone is DECIMAL(18, 3), DECIMAL(p) DECIMAL(p, 0)."""
    given = [int(p.this.this) for p in dtype.expressions if isinstance(p.this, exp.Literal)]
    if not given:
        return 18, 3
    return given[0], given[1] if len(given) > 1 else 0


def holds(target: exp.DataType, source: exp.DataType) -> bool:
    """Whether every value of `source` converts to `target` without an error (DuckDB): text holds anything,
    a number type a range containing the source's, a DATE or TIMESTAMP a TIMESTAMP's or DATE's days up to
    year 294247 only (a later DATE fails as a TIMESTAMP); text to anything else parses, and may fail."""
    if target.this in TEXTS or target == source:
        return True
    if source.this in TEXTS or source.this in (T.UNKNOWN, T.NULL):
        return False
    if target.this is T.DATE and source.this in TIMES:
        return True
    wide, narrow = type_limit(target), type_limit(source)
    if wide is None or narrow is None:
        return False
    if source.this in FLOATS and target.this not in FLOATS:
        return False  # NaN and infinity fit no integer or DECIMAL
    return wide[0] <= narrow[0] and narrow[1] <= wide[1]


def fits_bound(target: exp.DataType, bound: float | None) -> bool:
    """Whether every value with |value| < `bound` converts to `target` without an error (rounded to an
    integer, |value| <= ceil(bound); an unsigned type only 0, the sign being unknown)."""
    limit = type_limit(target)
    return bound is not None and limit is not None and min(-limit[0], limit[1]) >= math.ceil(bound)


def type_class(dtype: str | None) -> int | None:
    """The magnitude class every value of an integer column type has (M with |value| < 2^M); None for others."""
    parsed = exp.DataType.build(dtype, dialect="duckdb") if dtype else None
    return INTEGER_RANGES[parsed.this] + 1 if parsed is not None and parsed.this in INTEGER_RANGES else None


def magnitude(e: exp.Expression, class_of) -> float | None:
    """B with |e| < B on every row, from the columns' published magnitude classes (`class_of(column)`: M with
    |value| < 2^M, None unknown; `class_of(count)` the class of a count's rows, `row_counts`) and constants,
    through + - * ABS, negation and numeric casts; None where unknown."""
    if isinstance(e, (exp.Paren, exp.Neg, exp.Abs)):
        return magnitude(e.this, class_of)
    if isinstance(e, (exp.Cast, exp.TryCast)) and type_limit(e.to) is not None:
        inner = magnitude(e.this, class_of)  # a number cast to a number: rounded at most
        return None if inner is None else inner + 1
    if isinstance(e, exp.Column) or counts_rows(e):  # a count: the class of its SELECT's input rows
        bits = class_of(e)
        return None if bits is None else 2.0 ** bits
    if isinstance(e, exp.Literal) and not e.is_string:
        return abs(float(e.this)) + 1
    if isinstance(e, (exp.Add, exp.Sub, exp.Mul)):
        a, b = magnitude(e.left, class_of), magnitude(e.right, class_of)
        if a is None or b is None:
            return None
        return a * b if isinstance(e, exp.Mul) else a + b
    if isinstance(e, (exp.Avg, exp.Min, exp.Max)) and not _has_options(e):  # a mean or one of the values
        return magnitude(e.this, class_of)
    if isinstance(e, exp.Div) and _integer_valued(e.expression):  # |x / y| <= |x| where y is a non-zero integer
        return magnitude(e.this, class_of)
    return None


def _has_options(e: exp.Expression) -> bool:
    """Whether an aggregate has arguments beyond its value (MAX(x, 3) is a list of the top 3)."""
    return any(v not in (None, [], False) for k, v in e.args.items() if k not in ("this", "big_int"))


def _integer_valued(e: exp.Expression) -> bool:
    """Whether `e` is an integer on every row, NULLIF(y, 0) of one included (a quotient by it is NULL at 0)."""
    e = e.unnest()
    if isinstance(e, exp.Nullif):
        e = e.this.unnest()
    return e.type is not None and e.type.this in INTEGER_RANGES


def integer_type(e: exp.Expression) -> exp.DataType | None:
    """The integer type DuckDB computes + - * and negation of `e`'s operands in: the widest operand's, a
    constant typed by the least of TINYINT ... HUGEINT holding it (it adapts to a wider operand); None
    unless every operand is an integer."""
    widths = []
    for operand in (e.left, e.right) if isinstance(e, exp.Binary) else (e.this,):
        if isinstance(operand, exp.Literal) and not operand.is_string and operand.is_int:
            value = abs(int(operand.this))
            fits = [t for t in (T.TINYINT, T.SMALLINT, T.INT, T.BIGINT, T.INT128) if value < 2 ** INTEGER_RANGES[t]]
            if not fits:  # beyond HUGEINT: a DOUBLE (or DuckDB's refusal), not an integer operation
                return None
            widths.append(fits[0])
        elif operand.type is not None and operand.type.this in INTEGER_RANGES:
            widths.append(operand.type.this)
        else:
            return None
    return exp.DataType.build(max(widths, key=lambda t: INTEGER_RANGES[t]))


def failing_arguments(e: exp.Expression, class_of, secure: bool = True) -> tuple[list[exp.Expression], str]:
    """(the arguments whose values decide whether `e` fails the query on a row, why) — none when it never
    fails; `e` is typed (sqlglot's `annotate_types`), `class_of` as `magnitude`'s; `secure`: `e` may be
    computed on the SPU (not in a query one party's DuckDB runs whole), whose guards may fail too."""
    if isinstance(e, exp.IntDiv) and _dividing_overflow(e, class_of):
        return _dividing_overflow(e, class_of), (
            "integer `//` fails the query on a row dividing its type's least value by -1 (\"Overflow in "
            "division\"), before any group threshold, and no published magnitude class proves the dividend "
            "cannot be it (NULLIF(divisor, 0) does not guard it); CAST the dividend to a wider type first")
    if PARTIAL.get(type(e)):
        return domain_arguments(e), ("a row dividing by zero, or LN, SQRT, ... of a value outside its domain, fails "
                                     "the query before any group threshold; guard a divisor as NULLIF(divisor, 0)")
    if isinstance(e, exp.Cast) and not isinstance(e, exp.TryCast) and not e.args.get("safe"):  # TRY_CAST never fails
        narrowing = _narrowing(e, class_of)
        if narrowing[0] or not secure:  # a CAST that always fits may still round on the SPU: its guard, below
            return narrowing
    if isinstance(e, (exp.Add, exp.Sub, exp.Mul, exp.Neg, exp.Abs)):
        return _overflowing(e, class_of)
    if type(e) in TEXT_LIMITS:
        return _text_out_of_range(e, class_of)
    pattern = e.args.get(PATTERNS.get(type(e), ""))
    if pattern is not None and not _constant(pattern):
        return [pattern], (f"{display(type(e))} fails the query on a row whose pattern or format does not parse (a "
                           "regular expression, FORMAT's format string), before any group threshold; use a constant "
                           "pattern, or one the issuer may compare (PLAINTEXT_AFTER_COMPARE)")
    if isinstance(e, (exp.DPipe, exp.Concat, exp.ConcatWs, exp.Replace)):
        return _text_beyond_longest(e, class_of)
    if parsed := parsed_arguments(e):
        return parsed, (f"{function_name(e)} fails the query on a row whose unit, time zone, format or text does not "
                        "parse (DuckDB reads it on each row), before any group threshold; use a constant, or a value "
                        "the issuer may compare (PLAINTEXT_AFTER_COMPARE)")
    if not never_fails(e):
        return [a for a in e.iter_expressions() if not _constant(a)], (
            f"{function_name(e)} is not proven never to fail on a row (deny by default: planner/ccl_rules.py "
            "`NEVER_FAILING`), and a failure shows the row's value before any group threshold; use its arguments "
            "only where the issuer may compare them (PLAINTEXT_AFTER_COMPARE)")
    return guarded_arguments(e) if secure else ([], "")


# Scalars proven never to fail the query on any value of the types they accept (DuckDB's, and the SPU's and the
# enclave's implementations): deny by default, every other scalar's non-constant arguments decide whether a row
# fails (LCM's overflow, INTERVAL's or TIME_BUCKET's amount, a date moved by TIMESTAMPADD, ...). The classes other
# rules above check (a CAST's narrowing, + - * overflow, text counts, patterns, `PARTIAL`) pass here once checked.
NEVER_FAILING = frozenset({
    exp.BitwiseAnd, exp.BitwiseOr, exp.BitwiseXor, exp.BitwiseNot, exp.BitwiseRightShift, exp.Paren, exp.Not,
    exp.And, exp.Or, exp.Xor, exp.Case, exp.If, exp.Distinct, exp.IgnoreNulls, exp.RespectNulls, exp.Ordered,
    exp.Order, exp.Tuple, exp.Collate, exp.Escape, exp.Cast, exp.TryCast, exp.Add, exp.Sub, exp.Mul, exp.Neg,
    exp.Abs, exp.Coalesce, exp.Nullif, exp.Nvl2, exp.Greatest, exp.Least, exp.Round, exp.Ceil, exp.Floor,
    exp.Trunc, exp.Cbrt, exp.Exp, exp.Sign, exp.SafeDivide, exp.Radians, exp.Degrees, exp.Sin, exp.Cos, exp.Atan,
    exp.Atan2, exp.Sinh, exp.IsNan, exp.IsInf, exp.Upper, exp.Lower, exp.Length, exp.ByteLength, exp.BitLength,
    exp.Trim, exp.StrPosition, exp.Reverse, exp.Initcap, exp.Translate, exp.Overlay, exp.SplitPart, exp.Right,
    exp.Substring, exp.Left, exp.Pad, exp.Repeat, exp.RegexpExtract, exp.RegexpReplace, exp.Format, exp.Ascii,
    exp.Unicode, exp.Hex, exp.Levenshtein, exp.MD5, exp.SHA, exp.SHA2, exp.ToChar, exp.Extract, exp.Year,
    exp.Quarter, exp.Month, exp.Week, exp.WeekOfYear, exp.Day, exp.DayOfWeek, exp.DayOfWeekIso, exp.DayOfMonth,
    exp.DayOfYear,
    exp.Hour, exp.Minute, exp.Second, exp.LastDay, exp.Dayname, exp.Monthname, exp.TimeToUnix, exp.Split,
    exp.Array, exp.ArraySize, exp.Uuid, exp.Rand, exp.DateTrunc, exp.TimestampTrunc, exp.DateDiff,
    exp.TimestampDiff, exp.DatetimeDiff, exp.TsOrDsDiff, exp.DPipe, exp.Concat, exp.ConcatWs, exp.Replace, *PARTIAL})
NEVER_FAILING_NAMES = frozenset({
    "strlen", "age", "even", "prefix", "suffix", "gcd", "bit_count", "signbit", "weekday", "millisecond",
    "microsecond", "epoch", "epoch_ms", "now", "hash", "isodow", "isoyear", "yearweek", "era", "century", "decade",
    "nanosecond", "round_even", "geodist", "date_part", "datepart", "date_sub", "timezone", "printf"})

# Arguments DuckDB parses on each row, failing where one does not: a unit (DATE_TRUNC, DATE_DIFF, DATE_PART), a time
# zone (TIMEZONE), PRINTF's format; and text read as a date, a timestamp or a number (DATE(x), TO_NUMBER(x), ...),
# which a DATE, TIMESTAMP or number never fails.
PARSED = {exp.DateTrunc: "unit", exp.TimestampTrunc: "unit", exp.DateDiff: "unit", exp.TimestampDiff: "unit",
          exp.DatetimeDiff: "unit", exp.TsOrDsDiff: "unit"}
PARSED_FIRST = frozenset({"date_part", "datepart", "date_sub", "timezone", "printf"})
READING_TEXT = (exp.Date, exp.Timestamp, exp.TsOrDsToDate, exp.TsOrDsToTimestamp, exp.DateStrToDate, exp.ToNumber,
                exp.ToDouble, exp.StrToUnix)


def never_fails(e: exp.Expression) -> bool:
    """Whether `e`'s function is proven never to fail on a row (`NEVER_FAILING`), apart from the arguments
    `failing_arguments` checks; anything else (not a scalar: a comparison, an aggregate) is checked elsewhere."""
    if isinstance(e, exp.Anonymous):
        return str(e.this).lower() in NEVER_FAILING_NAMES
    if isinstance(e, READING_TEXT):
        return True  # parsed_arguments names the text
    return type(e) in NEVER_FAILING or RULES.get(type(e)) is not Rule.SCALAR


def parsed_arguments(e: exp.Expression) -> list[exp.Expression]:
    """The non-constant arguments DuckDB parses on each row (`PARSED`, `PARSED_FIRST`, `READING_TEXT`)."""
    if isinstance(e, exp.Anonymous):
        found = e.expressions[:1] if str(e.this).lower() in PARSED_FIRST else []
    elif isinstance(e, READING_TEXT):
        kind = e.this.type if e.this is not None else None  # STR_TO_UNIX(): no argument at all
        reads = e.this is not None and (kind is None or kind.this not in (*TIMES, *FLOATS, *INTEGER_RANGES, T.DECIMAL))
        found = [e.this] * reads + [a for k, a in e.args.items() if k != "this" and isinstance(a, exp.Expression)]
    else:
        found = [e.args[PARSED[type(e)]]] if e.args.get(PARSED.get(type(e), "")) is not None else []
    return [a for a in found if not _constant(a)]


GROWING = (exp.Repeat, exp.Pad, exp.Replace)


def _text_beyond_longest(e: exp.Expression, class_of) -> tuple[list[exp.Expression], str]:
    """A concatenation with a grown text (REPEAT, LPAD / RPAD, REPLACE) fails on a row where the parts together
    pass DuckDB's largest string: REPEAT(LEFT(x, 1), 2^29) || REPEAT(LEFT(x, 1), 2^29) fails exactly where x's first
    character takes 4 bytes. REPLACE fails where its replacement, longer than what it replaces, grows the text so."""
    if isinstance(e, exp.Replace):
        search, replacement = e.expression, e.args.get("replacement")
        if replacement is None:
            return [], ""
        parts = [e.this, search, replacement]
        shrinks = isinstance(search, exp.Literal) and search.is_string and bool(search.this) and \
            text_bytes(replacement, class_of) <= len(search.this.encode())
        beyond = not shrinks and text_bytes(e.this, class_of) * max(text_bytes(replacement, class_of), 1) > LONGEST_TEXT
    else:
        parts = [e.this, e.expression] if isinstance(e, exp.DPipe) else list(e.expressions)
        separators = text_bytes(parts[0], class_of) * max(len(parts) - 2, 0) if isinstance(e, exp.ConcatWs) else 0
        beyond = any(p.find(*GROWING) for p in parts) and \
            sum(text_bytes(p, class_of) for p in parts) + separators > LONGEST_TEXT
    if not beyond:
        return [], ""
    return [p for p in parts if not _constant(p)], (
        f"{display(type(e))} of a grown text (REPEAT, LPAD, REPLACE) fails the query on a row whose text passes 4 GiB, "
        "before any group threshold; keep the counts small, or use values the issuer may compare")


# Arguments DuckDB parses on each row and fails the query on where malformed ("Invalid Input Error"): a regular
# expression's pattern, FORMAT's format string (their options and STRFTIME's format must be constants anyway).
PATTERNS = {exp.RegexpLike: "expression", exp.RegexpExtract: "expression", exp.RegexpReplace: "expression",
            exp.SimilarTo: "expression", exp.Format: "this"}


# Text functions that fail on a row (DuckDB's "Out of Range", "Insufficient padding") for some values of their
# counts only: SUBSTRING's start and length beyond ±2^32, LEFT's length beyond 2^32, REPEAT's string beyond
# 4 GiB, LPAD / RPAD with an empty fill. (class, the count arguments, the |count| below which none fails)
# RIGHT, SPLIT_PART, OVERLAY and string slices never fail; CHR is `PARTIAL`; REGEXP_EXTRACT's group is a constant.
TEXT_LIMITS = {exp.Substring: (("start", "length"), 2.0 ** 32), exp.Left: (("expression",), 2.0 ** 32),
               exp.Repeat: (("times",), 2.0), exp.Pad: (("expression",), 2.0 ** 24)}


def _text_out_of_range(e: exp.Expression, class_of) -> tuple[list[exp.Expression], str]:
    """The counts of a text function (`TEXT_LIMITS`) that are neither constants nor proven small by their
    published magnitude classes (a REPEAT of a constant count fails only beyond 4 GiB of text, a pad's huge
    count exhausts memory); a pad's fill too unless a non-empty constant (an empty one fails)."""
    names, bound = TEXT_LIMITS[type(e)]
    counts = [e.args[n] for n in names if e.args.get(n) is not None]
    failing = [c for c in counts if not _constant(c) and (magnitude(c, class_of) or math.inf) > bound]
    if isinstance(e, exp.Repeat) and text_bytes(e.this, class_of) * _largest_count(e.args["times"], class_of) > \
            LONGEST_TEXT:  # its count times its text's length: also for a constant count
        failing = [a for a in (e.this, e.args["times"]) if not _constant(a)]
    fill = e.args.get("fill_pattern")
    if isinstance(e, exp.Pad) and fill is not None and not (isinstance(fill, exp.Literal) and fill.this):
        failing = [e.this, e.expression, fill]
    return failing, (f"{display(type(e))} fails the query on a row whose count is out of its range (a start or "
                     "length beyond 2^32, a string beyond 4 GiB, an empty pad), before any group threshold; use "
                     "constant counts or ones the issuer may compare (PLAINTEXT_AFTER_COMPARE)")


LONGEST_TEXT = 2 ** 32 - 1  # DuckDB's largest string, in bytes ("Cannot create a string of size")
NON_TEXT_BYTES = 64  # the longest text of a number, date or timestamp cast to text


def text_bytes(e: exp.Expression, class_of) -> float:
    """B with every row's text `e` at most B bytes long (UTF-8): from constants, concatenations, REPEAT and
    the functions whose length is a count (LEFT, SUBSTRING, LPAD, RPAD: at most 4 bytes a character); a
    column's or any other text's is unknown, so DuckDB's largest string."""
    if isinstance(e, exp.Paren):
        return text_bytes(e.this, class_of)
    if isinstance(e, exp.Literal):
        return len(e.this.encode()) if e.is_string else NON_TEXT_BYTES
    if isinstance(e, exp.Null):
        return 0
    if isinstance(e, (exp.Cast, exp.TryCast)) and e.to.this in TEXTS and e.this.type is not None \
            and (type_limit(e.this.type) is not None or e.this.type.this in TIMES):
        return NON_TEXT_BYTES
    if isinstance(e, exp.DPipe):
        return min(text_bytes(e.this, class_of) + text_bytes(e.expression, class_of), LONGEST_TEXT)
    if isinstance(e, exp.Concat):
        return min(sum(text_bytes(part, class_of) for part in e.expressions), LONGEST_TEXT)
    if isinstance(e, exp.Repeat):
        return min(text_bytes(e.this, class_of) * _largest_count(e.args["times"], class_of), LONGEST_TEXT)
    counted = {exp.Left: "expression", exp.Substring: "length", exp.Pad: "expression"}.get(type(e))
    if counted and e.args.get(counted) is not None:
        return min(4 * _largest_count(e.args[counted], class_of), LONGEST_TEXT)
    return LONGEST_TEXT


def _largest_count(e: exp.Expression, class_of) -> float:
    """The largest |count| on any row (a constant's own), from the published magnitude classes; unbounded
    where unknown."""
    bound = magnitude(e, class_of)
    return math.inf if bound is None else max(math.ceil(bound) - 1, 0)


def _constant(e: exp.Expression) -> bool:
    """Whether `e` is the same on every row (no column, aggregate, window or subquery): a failure then tells
    nothing of a row."""
    return e.find(exp.Column, exp.AggFunc, exp.Window, exp.Query) is None


def _dividing_overflow(e: exp.IntDiv, class_of) -> list[exp.Expression]:
    """The operands of an integer `//` that may divide its type's least value by -1 (DuckDB's "Overflow in
    division"): none where the dividend's published magnitude classes prove it is above that value."""
    kind = integer_type(e)
    if kind is None or fits_bound(kind, magnitude(e.left, class_of)):
        return []
    return [e.left, e.expression]


def _temporal(e: exp.Expression) -> bool:
    """Whether `e` is a DATE or TIMESTAMP, which a number of days added to it may move beyond its range."""
    return e.type is not None and e.type.this in (T.DATE, T.DATETIME, T.TIMESTAMP, T.TIMESTAMPTZ)


def _narrowing(cast: exp.Cast, class_of) -> tuple[list[exp.Expression], str]:
    """A CAST whose target cannot hold every value of its argument's type (nor every value its published
    magnitude classes allow) fails on a row out of the target's range ("Conversion Error")."""
    source = cast.this.type
    if source is not None and holds(cast.to, source) or fits_bound(cast.to, magnitude(cast.this, class_of)):
        return [], ""
    return [cast.this], (f"CAST to {cast.to.sql('duckdb')} fails the query on a row whose value "
                         f"{cast.to.sql('duckdb')} cannot hold, before any group threshold; write "
                         "TRY_CAST (NULL where it does not fit) or cast to a type holding every value")


def _overflowing(e: exp.Expression, class_of) -> tuple[list[exp.Expression], str]:
    """Integer + - * ABS and negation overflow ("Out of Range") on a row beyond their type's range, unless
    the published magnitude classes prove they cannot; a date moved by an INTERVAL may leave TIMESTAMP's."""
    operands = [e.left, e.right] if isinstance(e, exp.Binary) else [e.this]
    moved = sum(_temporal(o) for o in operands) == 1 and len(operands) == 2  # date ± days (date − date never fails)
    if moved or any(isinstance(o, exp.Interval) for o in operands):  # the interval's amount decides too
        return [o.this if isinstance(o, exp.Interval) else o for o in operands], (
            "a date or timestamp moved by an INTERVAL fails the query on a row beyond TIMESTAMP's range, before "
            "any group threshold; compare it (PLAINTEXT_AFTER_COMPARE) or compute it at its owner's")
    kind = integer_type(e)
    if kind is None or fits_bound(kind, magnitude(e, class_of)):
        return [], ""
    return operands, (f"`{display(type(e))}` of {kind.sql('duckdb')} values fails the query on a row whose result "
                      f"{kind.sql('duckdb')} cannot hold, before any group threshold, and no published magnitude "
                      "class proves it cannot; CAST an operand to a wider type (HUGEINT, DOUBLE) first")


def guarded_arguments(e: exp.Expression) -> tuple[list[exp.Expression], str]:
    """The SPU refuses the query where a counted row's approximate value (a quotient by a secret, SQRT, EXP,
    ..., a DOUBLE's encoding) lies within its error of a rounding boundary, or of what it is compared with
    (executors/spu/approximation.py): a scan of the boundary then locates the row, so the operands need per-row
    visibility. Counting the failing rows only over the groups a threshold keeps would not do: a kept group's
    one row near the boundary still fails it."""
    from sqlsecure.executors.spu.approximation import is_approximate, is_rounding, needs_comparison_guard
    if is_rounding(e):
        inexact = e.this.type is None or e.this.type.this in (*FLOATS, T.UNKNOWN)  # text is parsed, not rounded
        if inexact or is_approximate(e.this):
            return [e.this], (f"{display(type(e))} of an approximate or DOUBLE value is refused on the SPU where a "
                              "row lies within its error of a rounding boundary, before any group threshold; round "
                              "an exact (integer or DECIMAL) value, or a value the issuer may compare")
    compared = isinstance(e, (*COMPARISONS, exp.Nullif, exp.Greatest, exp.Least)) and not _divisor_away_from_zero(e)
    if compared and any(needs_comparison_guard(o) for o in e.iter_expressions()):
        return list(e.iter_expressions()), (
            f"{display(type(e))} of an approximate value is refused on the SPU where a row's operands lie within "
            "their error of each other, before any group threshold; compare a rounded exact value, or values the "
            "issuer may compare")
    return [], ""


def _divisor_away_from_zero(e: exp.Expression) -> bool:
    """Whether `e` is a divisor's NULLIF(y, 0) whose y is at least a positive constant on every row (`y * y + 1`):
    the SPU does not compare it (the division's zero test of y's encoding clears the row, `Stage._divide_or_null`),
    and no approximation of y comes near 0, so no guard can fail on it."""
    parent = e.parent
    while isinstance(parent, exp.Paren):
        parent = parent.parent
    divides = isinstance(parent, (exp.Div, exp.IntDiv, exp.Mod)) and parent.expression.unnest() is e
    if not (divides and isinstance(e, exp.Nullif) and e.expression == exp.Literal.number(0)):
        return False
    least = _least_value(e.this)
    return least is not None and least >= 1


def _least_value(e: exp.Expression) -> float | None:
    """L with e >= L on every row where e is not NULL, from constants, squares (`x * x`), ABS and sums of them;
    None where unknown. (On the SPU a square's truncation may lose one unit in the last place: L >= 1 stays away.)"""
    e = e.unnest()
    if isinstance(e, exp.Literal) and not e.is_string:
        return float(e.this)
    if isinstance(e, exp.Abs) or isinstance(e, exp.Mul) and e.left.unnest() == e.right.unnest():
        return 0.0
    if isinstance(e, exp.Add):
        left, right = _least_value(e.left), _least_value(e.right)
        return None if left is None or right is None else left + right
    return None
