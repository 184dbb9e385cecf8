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

from sqlglot import exp

from sqlsecure.planner.dialects.postgres import zero_checked


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
    exp.Year, exp.Quarter, exp.Month, exp.Week, exp.WeekOfYear, exp.Day, exp.DayOfWeek, exp.DayOfMonth,
    exp.DayOfYear, exp.Hour, exp.Minute, exp.Second, exp.LastDay, exp.MonthsBetween, exp.DateFromParts,
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
           exp.Chr: "all", exp.DateFromParts: "all", exp.StrToDate: "all", exp.StrToTime: "all", exp.Unhex: "all"}

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
    divisor written NULLIF(y, 0) never does (nor PostgreSQL's zero-checked NULLIF(y, 0))."""
    which = PARTIAL.get(type(e))
    if which == "divisor":
        divisor = zero_checked(e.expression) or e.expression  # PostgreSQL's checked divisor: y itself
        guarded = isinstance(divisor, exp.Nullif) and divisor.expression == exp.Literal.number(0)
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
    """The name the docs list a class under."""
    if cls in SYMBOLS:
        return SYMBOLS[cls]
    if issubclass(cls, exp.Func):
        return cls.sql_name()
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
        "only when the issuer's side is preserved) |",
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
        "(rows of one partition are shown equal), ORDER BY keys `REVEAL_RANK`. Window functions returning "
        f"another row's value keep the argument's constraint: {items(Rule.WINDOW_VALUE)}.",
        "",
        "Functions defined on part of their domain fail the query where a row falls outside it, before any "
        "group threshold, which shows a comparison of the row's value: the divisor of "
        f"{', '.join(f'`{display(c)}`' for c, w in PARTIAL.items() if w == 'divisor')} and every argument of "
        f"{', '.join(f'`{display(c)}`' for c, w in PARTIAL.items() if w == 'all')} need `PLAINTEXT` or "
        "`PLAINTEXT_AFTER_COMPARE` (per row, also inside an aggregate; `PLAINTEXT_AFTER_AGGREGATE` too where no group "
        "threshold or DP protects the issuer's results); a divisor written `NULLIF(y, 0)` never fails.",
        "",
        "Subqueries (scalar, `IN`, `EXISTS`, `ANY` / `ALL`), CTEs and set operations: their outputs' "
        "visibility, with their own clauses checked. `AGG(...) FILTER (WHERE cond)`: the aggregate's, with "
        "`cond` checked as a WHERE condition.",
        "",
        "Any other function, aggregate or operator (including user-defined and dialect-specific functions "
        "sqlglot does not know) is refused with `PolicyViolation` naming it, whatever the grants. Names are "
        "sqlglot's; each dialect's spellings map to them (`strpos` and `instr` are `STR_POSITION`).",
    ])
