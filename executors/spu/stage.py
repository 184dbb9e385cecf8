"""The SPU stage: the part of a cross-party query that no single party may compute, on secret shares.

Every compute party runs `run_stage` in lockstep over its own `SpuSession`: it secret-shares its
input columns (`secure_values`), evaluates the stage's SQL expressions on shares (arithmetic,
comparisons, AND/OR/NOT, CASE, COALESCE, NULLIF, IS NULL, LIKE with a constant pattern (`spu.like`),
and SQL's scalar functions through the kernels of `spu.functions`: ROUND/FLOOR/CEIL, divisions (NULL for a zero divisor under NULLIF, the rule of
MySQL's `/`, DIV and MOD), dates and timestamps (± intervals, parts, differences), casts, SQRT/LN/LOG/EXP/POWER,
SIN/COS/TAN/ASIN/ACOS/ATAN/ATAN2), filters by weighting rows with the secret
filter bit, aggregates (grouped through an oblivious sort — on the group numbers of the keys' owner
when the keys are one party's columns — or, where the planner chose it (`step.one_hot_groups`: that
party's integer keys, G groups by their published classes, sums only), without a sort by the owner's
one-hot group numbers in one round (`one_hot_group`, `one_hot_grouped`); or over all rows), compacts the result
rows (revealing only how many there are), sorts and limits, and opens the outputs to the issuer
alone. NULLs travel as a validity bit beside every value, booleans too (three-valued logic: a NULL
condition stays NULL through NOT, AND, OR until WHERE, HAVING or CASE reads it as false). What it
evaluates is one table, `SPU_RULES`, which the planner checks at plan time.

The group threshold (`SecureStage.threshold`) counts, per protected owner, its distinct rows in a
group: the first owner's provenance column rides along the group sort as a minor key and the starts
of its runs are summed (`relational.group_by(within=...)`); each further owner's is sorted on the
group's secret rank, not on the group keys, and summed in the same scan. Each owner renumbers its
provenance 0, 1, ... before sharing it (`dense_rows`), so those sorts compare ceil(log2 n) bits, not
64. A UNION ALL branch's rows are summed by their public positions. No single count is opened: only
the keep bit, through the compaction. The counts are compared with k on the sorted rows, each
counted column's [count > 0] (SUM of no value is NULL) side by side in the same comparison, on the
bits the row count needs, and their B2As and the keep product in one round after it (`count_tests`:
6 rounds at 10^5 rows for 2 parties, where the threshold took 8 and the empty-group tests 7 more).

What the compute parties learn: the number of rows that pass the filter (row-level results) or of
groups in the result (grouped results), which is the result's size, and — where AVG divides — how
many sums fall outside the division's fixed-point range, and — where a division or SQRT/LN/LOG
reads a secret (and ASIN/ACOS/TAN) — how many counted rows that reach it divide by zero or fall outside the function's
domain (each normally 0; otherwise the query fails with a DataError rather than answer wrongly). A row reaches an
expression as PostgreSQL's evaluation does (`spu.reach`: the CASE branch it takes, the right of an AND / OR its left
leaves open, a COALESCE argument after NULLs, the WHERE's earlier conjuncts, the groups HAVING keeps), a secret bit:
nothing is opened about the rows that do not. Before anything is shared, each owner checks its columns
against the limits `spu.ranges` derives from the query, sort and group keys included (a value
outside, NaN or ±infinity is a DataError naming the column: the others learn only that the query was
refused). The issuer learns the result.
"""

from __future__ import annotations

import datetime
import decimal
import fractions
import functools
import json
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

from sqlsecure.errors import DataError, NotSupportedError, ProgrammingError, ProtocolError
from sqlsecure.executors.spu.join_inputs import joined_inputs
from sqlsecure.executors.spu.values import (EPOCH, LIMB_BYTES, MAX_TEXT_BYTES, MICROS_PER_DAY, TEXT_LIMBS,
                                           decimal_scale, decimal_scales, decode_column, encode, limb_fracs,
                                           limbs_of, quotient_bits, range_kind, shared_kind, text_bytes, text_kind,
                                           text_width, union_decimal_scale, value_kind)
from sqlsecure.executors.spu.exact_division import MAGNITUDE_BITS, RADIX_BITS, fraction_bits, long_divide
from sqlsecure.executors.spu import approximation, arith, boolean, compare, functions, like, relational
from sqlsecure.executors.spu.one_hot_group import one_hot_group_sums
from sqlsecure.executors.spu.reach import Reach, pg_filter_order
from sqlsecure.planner.group_path import owner_counted
from sqlsecure.executors.spu.ranges import (DATE_PARTS, EARTH_RADIUS, EXP_LIMIT, EXTREMES, MAX_DECIMAL_SCALE, ROUNDING,
                                           TRIG, RangePlan, calendar_interval, choices, constant, decimal_literal,
                                           decimal_scale_of, input_limits, interval_months,
                                           is_geodist, literal_value as literal_number, rounding_digits, whole_power)
from sqlsecure.executors.spu.shares import ArithShare, BoolShare, as_ring
from sqlsecure.executors.spu.session import DEFAULT_FRAC_BITS, SpuSession
from sqlsecure.planner.dialects.common import round_half_even
from sqlsecure.planner.dialects.postgres import checked_value, in_list_order
from sqlsecure.planner.logical import aggregates_in

SENTINEL = 1 << 62  # MIN/MAX's fill: beyond every value a comparison accepts (|raw| < 2^62, spu.ranges)
AVG_LIMIT = 2.0 ** 29  # the fixed-point division's input range with F = 16 (see spu.compare.divide)
LOGIC_TYPES = (exp.And, exp.Or, exp.Not)
COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)
EXACT_DECIMAL_USES = (exp.Sum, exp.Avg, exp.Min, exp.Max, exp.Count,  # AVG: both limbs' sums (`exact_average`)
                      *ROUNDING, exp.Cast,  # ROUND / FLOOR / CEIL / CAST of a DECIMAL are exact at its scale
                      exp.Paren, exp.Neg, exp.Abs, exp.Add, exp.Sub, exp.Mul,  # DECIMAL arithmetic: `_exact_arithmetic`
                      exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE,  # compared exactly: `_compared_numbers`
                      exp.If, exp.Case, exp.Coalesce,  # CASE / COALESCE of DECIMALs: `_aligned`
                      exp.Greatest, exp.Least,  # compared exactly, then chosen: `_extreme`
                      exp.Distinct)  # COUNT / SUM / AVG (DISTINCT x): x's distinct values compared exactly


@dataclass
class SV:
    """A secret value: ring limbs (text has several), a 0/1 validity share, and its kind."""

    limbs: list[ArithShare]
    valid: ArithShare
    kind: str  # int | fixed | bool | date | timestamp | text | decimal.<scale> (limbs: exact x * 10^s, fixed point)

    @property
    def value(self) -> ArithShare:
        return self.limbs[0]


class PublicOnes(ArithShare):
    """A validity every party knows is 1 on every row (`Stage.ones`: a COUNT's, a constant's): no NULL
    to zero under it (`nulls_zeroed`). Any operation on it gives a plain `ArithShare`."""


class NullZeroed(ArithShare):
    """A value share known to be 0 wherever its SV's validity is 0 (a comparison's bit times the
    validity, `Stage._compare`): its `truth` is itself. Any operation on it gives a plain `ArithShare`."""


def compared_limbs(v: SV) -> list[ArithShare]:
    """The limbs that decide whether two values are equal: a DECIMAL's exact limb only (the fixed-point
    limb of a computed one, such as a.d - b.d, may differ between equal values and agree between
    distinct ones), every limb of any other kind."""
    return v.limbs[:1] if decimal_scale(v.kind) is not None else v.limbs


def pad_text(v: SV, limbs: int) -> SV:
    """Text `v` widened to `limbs` limbs with zero limbs (local): the same string, as UTF-8 has no zero byte."""
    zeros = [ArithShare(np.zeros(len(v.valid), np.uint64), 0) for _ in range(limbs - len(v.limbs))]
    return SV([*v.limbs, *zeros], v.valid, v.kind)


def _per_limb(bits: ArithShare, n: int) -> list[ArithShare]:
    """A batched comparison over concatenated limbs, split back into one share per limb of n rows."""
    return [bits[k * n:(k + 1) * n] for k in range(len(bits) // n)] if n else [bits]


def level_text(a: SV, b: SV) -> tuple[SV, SV]:
    """Two text values at the wider one's width, so limbwise comparisons stay exact."""
    width = max(len(a.limbs), len(b.limbs))
    return pad_text(a, width), pad_text(b, width)


@dataclass
class PV:
    """A public value (a literal); `exact`: (x * 10^s, s) where DuckDB types it DECIMAL(p, s)."""

    value: object
    kind: str
    exact: tuple[int, int] | None = None


def _parse(sql: str) -> exp.Expression:
    return without_zero_checks(sqlglot.parse_one(sql, read="duckdb"))


def without_zero_checks(e: exp.Expression) -> exp.Expression:
    """`e` with every PostgreSQL guard (`checked_value`: a divisor tested for 0, a result for a finite value)
    replaced by the value it guards (the SPU refuses those rows itself)."""
    return e.transform(lambda node: checked_value(node) or node, copy=False) if e.find(exp.Case) else e


INT64_LIMIT = 1 << 63
SQL_OPERATOR = {exp.Div: "/", exp.IntDiv: "//", exp.Mod: "%"}
MAX_DIGITS = 12  # ROUND(x, d): |d| <= 12 (functions.floor_div_public divides by 10^12 at most in its bounds)
FIXED_LIMIT = 2.0 ** 47  # |c| < 2^(63 - F) with F = 16 fractional bits


def literal_value(e: exp.Literal) -> PV:
    """A literal as a public value: exactly as DuckDB types it (an integer or a fixed-point number),
    or a DataError naming it when the SPU's 64-bit ring cannot hold it."""
    if e.is_string:
        return PV(e.this, "text")
    text = e.this
    shown = f"{text[:40]}{'...' if len(text) > 40 else ''}"
    try:
        number = literal_number(e)
    except (ValueError, OverflowError):
        raise DataError(f"the constant {shown} is not a number the SPU can hold (a literal)") from None
    if isinstance(number, int):
        if not -INT64_LIMIT <= number < INT64_LIMIT:
            raise DataError(f"the constant {shown} is beyond the SPU's 64-bit integers (a literal; |c| < 2^63): "
                            "compute it at one party or use a smaller constant")
        return PV(number, "int")
    if not np.isfinite(number) or abs(number) >= FIXED_LIMIT:
        raise DataError(f"the constant {shown} has no fixed-point encoding on the SPU (a literal; |c| < 2^47): "
                        "compute it at one party or use a smaller constant")
    return PV(number, "fixed", decimal_literal(e))


def _is_decimal(v) -> bool:
    """A DECIMAL operand: a DECIMAL share or a literal DuckDB types DECIMAL."""
    return v.exact is not None if isinstance(v, PV) else decimal_scale(v.kind) is not None


def _numeric_only(where, v) -> None:
    """Arithmetic is on numbers only: text, dates and booleans are refused as DuckDB refuses them."""
    if v.kind not in ("int", "fixed"):
        shown = where if isinstance(where, str) else where.sql(dialect="duckdb")
        raise NotSupportedError(f"{shown}: arithmetic on {v.kind} values in secure computation")


def sum_kind(e: exp.Expression, a: str, b: str) -> str:
    """The kind of a + b or a - b, as DuckDB types it: date - date is a whole number of days,
    date ± integer a date, numbers as usual; anything else is refused."""
    add = isinstance(e, exp.Add)
    if a == b == "date" and not add:
        return "int"
    if "date" in (a, b):
        if (a, b) == ("date", "int") or (add and (a, b) == ("int", "date")):
            return "date"
        raise NotSupportedError(f"{e.sql(dialect='duckdb')}: {a} {'+' if add else '-'} {b} in secure computation")
    if "timestamp" in (a, b):
        raise NotSupportedError(f"{e.sql(dialect='duckdb')}: {a} {'+' if add else '-'} {b} in secure computation (a "
                                "TIMESTAMP takes an INTERVAL; for the time between two, use DATEDIFF('second', a, b) "
                                "or another unit)")
    for kind in (a, b):
        if kind not in ("int", "fixed"):
            raise NotSupportedError(f"{e.sql(dialect='duckdb')}: arithmetic on {kind} values in secure computation")
    return "fixed" if "fixed" in (a, b) else "int"


# -- what the stage evaluates --------------------------------------------------------------------
# One table, read by the planner at plan time (planner/place_spu.py) and by the stage before it runs, so
# `check`, EXPLAIN and execution refuse the same queries. A node class missing here is refused (deny by
# default); a rule returns why its node is refused (None: evaluated). `kind_of(column)` is the column's
# SPU kind (int, fixed, bool, date, text) or None when unknown.

NUMERIC_CASTS = (exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT, exp.DataType.Type.DECIMAL)
INTEGER_CASTS = (exp.DataType.Type.BIGINT, exp.DataType.Type.INT)
TIMESTAMP_CASTS = (exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPNTZ)
ZONED_TYPES = (exp.DataType.Type.TIMESTAMPTZ, exp.DataType.Type.TIMESTAMPLTZ)
TEMPORAL = ("date", "timestamp")
TIME_PARTS = ("HOUR", "MINUTE", "SECOND")
SUB_DAY_UNITS = ("MICROSECOND", "MILLISECOND", "SECOND", "MINUTE", "HOUR")
LEAVES = (exp.Column, exp.Literal, exp.DataType, exp.Star, exp.Interval)  # their children are names, not expressions


def _evaluated(node, kind_of) -> None:
    return None


def static_kind(e: exp.Expression, kind_of) -> str | None:
    """The SPU kind of an expression where it follows from its form alone (None: not known)."""
    if isinstance(e, exp.Paren):
        return static_kind(e.this, kind_of)
    if isinstance(e, exp.Column):
        return kind_of(e)
    if isinstance(e, exp.Literal):
        return "text" if e.is_string else literal_value(e).kind
    if isinstance(e, exp.Cast):
        return {**{t: "fixed" for t in NUMERIC_CASTS}, **{t: "int" for t in INTEGER_CASTS},
                **{t: "timestamp" for t in TIMESTAMP_CASTS}, exp.DataType.Type.DATE: "date"}.get(e.to.this)
    if (checked := checked_value(e)) is not None:  # PostgreSQL's value guarded by ERROR: the value's kind
        return static_kind(checked, kind_of)
    if isinstance(e, (exp.Case, exp.If, exp.Coalesce, *EXTREMES)):
        kinds = {static_kind(b, kind_of) for b in choices(e) if not isinstance(b, exp.Null)}
        return kinds.pop() if len(kinds) == 1 else None
    if isinstance(e, (exp.Predicate, exp.Not, exp.And, exp.Or, exp.Boolean, exp.Escape)):
        return "bool"
    if isinstance(e, (exp.Neg, exp.Abs, exp.Min, exp.Max, *ROUNDING)):
        return static_kind(e.this, kind_of)
    if isinstance(e, (exp.Count, exp.Window)):  # COUNT, ROW_NUMBER, RANK, DENSE_RANK
        return "int"
    if isinstance(e, (exp.Avg, exp.Div, exp.Sqrt, exp.Ln, exp.Log, exp.Exp, exp.Pi, *TRIG)) or is_geodist(e):
        return "fixed"
    if isinstance(e, exp.Pow):
        return static_kind(e.this, kind_of) if whole_power(e) else "fixed"
    if isinstance(e, (exp.IntDiv, exp.Mod, *DATE_PARTS)) or is_date_sub(e):
        return "int"
    if isinstance(e, exp.Interval):
        return "int"  # whole days (only added to or subtracted from a date)
    if isinstance(e, exp.Nullif):
        return static_kind(e.this, kind_of)
    if isinstance(e, exp.Sum):
        return {"bool": "int"}.get(static_kind(e.this, kind_of), static_kind(e.this, kind_of))
    if isinstance(e, (exp.Add, exp.Sub)) and any(isinstance(o, exp.Interval) for o in (e.left, e.right)):
        return _shifted_kind(e, kind_of)
    if isinstance(e, (exp.Add, exp.Sub, exp.Mul)):
        return _arithmetic_kind(e, static_kind(e.left, kind_of), static_kind(e.right, kind_of))
    return None


def _shifted_kind(e: exp.Expression, kind_of) -> str | None:
    """date or timestamp ± INTERVAL: a date moved by whole days or months stays a date on the SPU (revealed
    as DuckDB's TIMESTAMP at midnight, `conform`); anything moved by a time of day is a timestamp."""
    interval, moved = (e.left, e.right) if isinstance(e.left, exp.Interval) else (e.right, e.left)
    kind = static_kind(moved, kind_of)
    if kind == "date" and (_interval_days(interval) is not None or calendar_interval(interval)):
        return "date"
    return "timestamp" if kind in TEMPORAL else None


def _arithmetic_kind(e: exp.Expression, a: str | None, b: str | None) -> str | None:
    """The kind of a + b, a - b or a * b as the stage computes it, None when unknown or refused."""
    if None in (a, b):
        return None
    if isinstance(e, exp.Mul):
        return ("fixed" if "fixed" in (a, b) else "int") if {a, b} <= {"int", "fixed"} else None
    try:
        return sum_kind(e, a, b)
    except NotSupportedError:
        return None


FRAC_BITS = DEFAULT_FRAC_BITS  # the plan's fixed point (physical.SpuStep.frac_bits)
TIE_SLACK = 4  # units of 2^-F: a DOUBLE's encoding error (1/2) with room for a few exact operations on it


def decimal_ratio(value) -> tuple[int, int] | None:
    """A constant divisor c as numerator / denominator for an exact division of the encoding, X * d // n:
    an integer; a whole number; a decimal (as written: 0.1 is 1/10) with |n| < 2^16, so the range plan's
    |x / c| < 2^30 keeps |X * d| < 2^62 (`floor_div_public`'s bound). None: multiply by 1/c instead."""
    if isinstance(value, int):
        return value, 1
    ratio = fractions.Fraction(str(value))
    if ratio.denominator == 1 and abs(ratio.numerator) < 2 ** 40:
        return ratio.numerator, 1
    if abs(ratio.numerator) < 2 ** 16 and ratio.denominator <= 10 ** 6:
        return ratio.numerator, ratio.denominator
    return None


def _division_rule(node: exp.Expression, kind_of) -> str | None:
    """x / y, x // y, x % y: a non-zero constant divisor, or a secret one (spu.functions); `//` and `%`
    of integers only (DuckDB's `//` of a DOUBLE is a real division, `%` of one fmod)."""
    shown, name = node.sql(dialect="duckdb"), SQL_OPERATOR[type(node)]
    if constant(node.expression) == 0:
        return (f"{shown}: {name} by the constant 0 (DuckDB gives an error or ±infinity, which the SPU "
                "cannot hold); remove the division")
    kinds = {static_kind(node.this, kind_of), static_kind(node.expression, kind_of)}
    allowed = {"int", None} if isinstance(node, (exp.IntDiv, exp.Mod)) else {"int", "fixed", None}
    if not kinds <= allowed:
        return (f"{shown}: {name} of {' and '.join(sorted(k for k in kinds if k))} values in secure computation "
                f"(the SPU takes {'integers' if allowed == {'int', None} else 'numbers'}); compute it at one party")
    return None


def _cast_rule(node: exp.Cast, kind_of) -> str | None:
    target, kind = node.to.this, static_kind(node.this, kind_of)
    if target in NUMERIC_CASTS and kind in ("int", "fixed", "bool", None):
        if target != exp.DataType.Type.DECIMAL:
            return None
        if decimal_scale_of(node.to) > MAX_DIGITS:
            return f"{node.sql(dialect='duckdb')}: secure computation casts to DECIMAL with a scale of {MAX_DIGITS} at most"
        return _finer_than_error(node, decimal_scale_of(node.to), kind_of) or _unbounded_rounding(node, kind_of)
    if target in INTEGER_CASTS and kind in ("int", "fixed", "bool"):
        return _unbounded_rounding(node, kind_of) or _finer_than_error(node, 0, kind_of)
    if target in ZONED_TYPES:
        return (f"{node.sql(dialect='duckdb')}: TIMESTAMPTZ in secure computation (the SPU holds TIMESTAMP without "
                "time zone); compute it at one party or CAST to TIMESTAMP there")
    if (target == exp.DataType.Type.DATE or target in TIMESTAMP_CASTS) and kind in (*TEMPORAL, None):
        return None
    if target == exp.DataType.Type.DATE and isinstance(node.this, exp.Literal) and node.this.is_string:
        return None if _date_literal(node.this.this) is not None else f"{node.sql(dialect='duckdb')}: not a date"
    if target in TIMESTAMP_CASTS and isinstance(node.this, exp.Literal) and node.this.is_string:
        return None if _timestamp_literal(node.this.this) is not None else \
            f"{node.sql(dialect='duckdb')}: not a TIMESTAMP without time zone"
    return (f"CAST to {node.to.sql()} in secure computation ({node.sql(dialect='duckdb')}): the SPU casts numbers "
            "and booleans to DOUBLE, DECIMAL, INTEGER and BIGINT, dates and timestamps to DATE and TIMESTAMP, and "
            "DATE '...' / TIMESTAMP '...' constants; compute it at one party")


def _finer_than_error(node: exp.Expression, digits: int, kind_of=lambda column: None,
                      guarded: bool | None = None) -> str | None:
    """Why rounding an approximate value (a quotient by a secret, SQRT, ...) or a summed aggregate (a SUM of
    DOUBLEs: `approximation.summed_aggregate`) at `digits` decimals is refused: twice its least error bound
    (`approximation.least_bound`, capped as the guard caps it) reaches the boundaries' spacing, so every row
    lies within its error of one and `_refuse_near_a_boundary` would refuse the query at run time anyway
    (ROUND finer than the encoding, which returns its argument unguarded, is no different: its digits are
    beyond the value's accuracy). A summed aggregate counts only where the rounding that runs is `guarded`
    (a ROUND at more digits than the encoding holds returns its argument: no guard to fail)."""
    if guarded is None:
        guarded = not (isinstance(node, exp.Round) and 10 ** max(digits, 0) >= 1 << FRAC_BITS)
    if (written := _rounding_as_written(node)) is not node:
        return _finer_than_error(written, rounding_digits(written), kind_of, guarded)
    least = approximation.least_bound(node.this, kind_of if guarded else None)
    if not least or not _always_near_a_boundary(least, digits):
        return None
    coarse = next((d for d in range(digits, -MAX_DIGITS - 1, -1) if not _always_near_a_boundary(least, d)), None)
    name = type(node).__name__.upper()
    fewer = f"round it to {coarse} decimals at most" if coarse is not None else "round its terms first"
    summed = approximation.summed_part(node.this, kind_of) if guarded and not approximation.is_approximate(node.this) \
        else None
    what = "an approximate value on the SPU" if summed is None else (
        f"whose {summed.sql(dialect='duckdb')} adds up fixed-point values (a DOUBLE's encoding, or a quotient) on "
        "the SPU, their errors with them")
    instead = "" if summed is None else ", CAST the summed values to DECIMAL first (SUM(CAST(x AS DECIMAL(p, s))))"
    return (f"{node.sql(dialect='duckdb')}: {name} of {node.this.sql(dialect='duckdb')}, {what} (its error bound is "
            f"{least / 2 ** FRAC_BITS:.2g} at the least: docs/architecture.md), at {digits} "
            f"decimals: every row lies within its error of a rounding boundary; {fewer}{instead}, or "
            "compute it at one party (MySQL's `/` of exact values is rounded at 4 more decimals than the dividend: "
            "a DOUBLE operand, x / CAST(y AS DOUBLE), keeps it a DOUBLE; MySQL's ROUND of a DOUBLE is written "
            "with FLOOR)")


def _rounding_as_written(node: exp.Expression) -> exp.Expression:
    """The ROUND(x, d) a FLOOR belongs to where it is part of ROUND of a DOUBLE with ties to even (MySQL's and
    PostgreSQL's, written with FLOOR by `common.round_half_even`), so a refusal names what the user wrote;
    else `node`."""
    case = node.find_ancestor(exp.Case) if isinstance(node, exp.Floor) else None
    default = case.args.get("default") if case is not None else None
    if isinstance(default, exp.Round) and isinstance(case.parent, exp.Paren) and \
            case.parent.sql() == round_half_even(default.this, rounding_digits(default)).sql():
        return default
    return node


def _always_near_a_boundary(least: float, digits: int) -> bool:
    """Whether a bound of `least` ring units, scaled by 10^d as the guard scales it (capped at two whole
    units), spans a whole spacing of the rounding's boundaries."""
    return 2 * min(least, 2 << FRAC_BITS) * 10 ** max(digits, 0) >= 1 << FRAC_BITS


def _unbounded_rounding(node: exp.Expression, kind_of) -> str | None:
    """Why rounding `node.this` (ROUND, FLOOR, CEIL, CAST to an integer or DECIMAL) is refused: a part of
    it has no error bound on the SPU (`approximation.unbounded_part`), so a row near a boundary could
    round the other way than DuckDB's without a sign. None: its bound guards the rounding at run time."""
    found = approximation.unbounded_part(node.this, kind_of)
    if found is None:
        return None
    part, why = found
    return (f"{node.sql(dialect='duckdb')}: the SPU bounds no error for {part.sql(dialect='duckdb')} ({why}), so "
            "rounding it could differ from DuckDB's answer unseen; round each term first (SUM(ROUND(x / y, 2))), "
            "round exact integers or DECIMALs, or round at one party")


def _date_part_rule(node: exp.Expression, kind_of) -> str | None:
    """EXTRACT(YEAR|MONTH|DAY FROM d), YEAR(d), MONTH(d), DAY(d) of a date or timestamp, and HOUR, MINUTE,
    SECOND of a timestamp; DATEDIFF in years, months, days (of dates or timestamps), hours, minutes, seconds,
    milliseconds or microseconds (of timestamps, or dates taken at midnight)."""
    part = _date_part(node)
    diff = isinstance(node, exp.DateDiff)
    allowed = ("YEAR", "MONTH", "DAY", *SUB_DAY_UNITS) if diff else ("YEAR", "MONTH", "DAY", *TIME_PARTS)
    if part not in allowed:
        return (f"{node.sql(dialect='duckdb')}: secure computation takes {', '.join(allowed)} "
                f"{'differences' if diff else 'parts'} of dates and timestamps (not {part}); compute it at one party")
    arguments = [node.this, node.expression] if diff else [_date_argument(node)]
    kinds = {static_kind(a, kind_of) for a in arguments}
    if not kinds <= {*TEMPORAL, None}:
        return f"{node.sql(dialect='duckdb')}: {part} of a value that is not a DATE or TIMESTAMP in secure computation"
    if part in TIME_PARTS and not diff and "date" in kinds:
        return f"{node.sql(dialect='duckdb')}: {part} of a DATE in secure computation (a DATE has no time of day)"
    return None


def _date_part(node: exp.Expression) -> str:
    if isinstance(node, (exp.Extract, exp.DateDiff)):
        unit = node.this if isinstance(node, exp.Extract) else node.args.get("unit")
        return (unit.name if unit is not None else "DAY").upper()
    return {exp.Year: "YEAR", exp.Month: "MONTH", exp.Day: "DAY", exp.DayOfMonth: "DAY", exp.Hour: "HOUR",
            exp.Minute: "MINUTE", exp.Second: "SECOND"}[type(node)]


def _date_argument(node: exp.Expression) -> exp.Expression:
    return node.expression if isinstance(node, exp.Extract) else node.this


MATH = (exp.Sqrt, exp.Ln, exp.Log, exp.Exp, exp.Pow)


def _math_rule(node: exp.Expression, kind_of) -> str | None:
    """SQRT, EXP, LN, LOG(x) (base 10), LOG(b, x) with a constant base b > 0, b != 1, POWER(x, y), of numbers."""
    shown, name = node.sql(dialect="duckdb"), type(node).__name__.upper()
    argument = node.expression if isinstance(node, exp.Log) and node.expression is not None else node.this
    for operand in (argument, node.expression) if isinstance(node, exp.Pow) else (argument,):
        if static_kind(operand, kind_of) not in ("int", "fixed", None):
            return f"{shown}: {name} of {static_kind(operand, kind_of)} values in secure computation"
    if isinstance(node, exp.Log) and node.expression is not None:
        base = constant(node.this)
        if base is None or base <= 0 or base == 1:
            return f"{shown}: secure computation takes LOG(b, x) with a constant base b > 0, b != 1"
    return None


def _trig_rule(node: exp.Expression, kind_of) -> str | None:
    """SIN, COS, TAN, ASIN, ACOS, ATAN(x), ATAN(y, x) and ATAN2(y, x) of numbers."""
    for argument in (a for a in (node.this, node.args.get("expression")) if a is not None):
        if static_kind(argument, kind_of) not in ("int", "fixed", None):
            return (f"{node.sql(dialect='duckdb')}: {type(node).__name__.upper()} of "
                    f"{static_kind(argument, kind_of)} values in secure computation")
    return None


def _anonymous_rule(node: exp.Anonymous, kind_of) -> str | None:
    """Of the functions sqlglot does not know, SCQL's GEODIST(lon1, lat1, lon2, lat2[, radius]) of numbers and
    DuckDB's DATE_SUB (whole units elapsed; MySQL's TIMESTAMPDIFF)."""
    shown = node.sql(dialect="duckdb")
    if is_date_sub(node):
        return _date_sub_rule(node, kind_of)
    if not is_geodist(node):
        return (f"{shown}: {str(node.this).upper()} is not evaluated in secure computation; compute it at one "
                "party (docs/architecture.md: what the SPU evaluates)")
    if len(node.expressions) not in (4, 5):
        return f"{shown}: GEODIST takes (lon1, lat1, lon2, lat2) or (lon1, lat1, lon2, lat2, radius)"
    kinds = {static_kind(a, kind_of) for a in node.expressions} - {"int", "fixed", None}
    return f"{shown}: GEODIST of {', '.join(sorted(kinds))} values in secure computation" if kinds else None


ELAPSED_UNITS = (*SUB_DAY_UNITS, "DAY", "WEEK")


def is_date_sub(node: exp.Expression) -> bool:
    return isinstance(node, exp.Anonymous) and str(node.this).upper() == "DATE_SUB"


def _elapsed_unit(node: exp.Anonymous) -> str | None:
    unit = node.expressions[0] if node.expressions else None
    return unit.this.upper() if isinstance(unit, exp.Literal) and unit.is_string else None


def _date_sub_rule(node: exp.Anonymous, kind_of) -> str | None:
    """DATE_SUB(unit, a, b): the whole units from a to b (truncated toward zero), for a fixed-length unit
    (MICROSECOND .. WEEK) of dates or timestamps; MySQL's TIMESTAMPDIFF becomes it (planner/dialects)."""
    shown, unit = node.sql(dialect="duckdb"), _elapsed_unit(node)
    if len(node.expressions) != 3 or unit not in ELAPSED_UNITS:
        return (f"{shown}: secure computation counts whole {', '.join(ELAPSED_UNITS)} between timestamps "
                "(DATE_SUB, MySQL's TIMESTAMPDIFF), not months or years; compute it at one party")
    kinds = {static_kind(a, kind_of) for a in node.expressions[1:]} - {*TEMPORAL, None}
    return f"{shown}: DATE_SUB of {', '.join(sorted(kinds))} values in secure computation" if kinds else None


def _formatting_rule(node: exp.Expression, kind_of) -> str | None:
    """Text made of a date is not computed on shares (its bytes depend on the value's digits)."""
    return (f"{node.sql(dialect='duckdb')}: STRFTIME / DATE_FORMAT of a secret date or timestamp is not computed in "
            "secure computation (nor MySQL's arithmetic on dates without INTERVAL, which reads them as numbers "
            "such as 20240131235959); use EXTRACT, DATEDIFF or TIMESTAMPDIFF, or compute it at one party")


def _total_rule(node: exp.Expression, kind_of) -> str | None:
    """SUM and AVG of numbers (SUM of booleans counts them); of dates, timestamps or text refused by name."""
    kind = static_kind(node.this, kind_of)
    if kind in (*TEMPORAL, "text") and not isinstance(node.this, exp.Distinct):
        return (f"{node.sql(dialect='duckdb')}: {type(node).__name__.upper()} of {kind} values in secure computation; "
                "compute it at one party")
    return None


def _sum_rule(node: exp.Expression, kind_of) -> str | None:
    """a + b, a - b of kinds DuckDB adds (`sum_kind`): refused at plan time where the kinds are known."""
    if any(isinstance(o, exp.Interval) for o in (node.left, node.right)):
        return None  # the INTERVAL's own rule
    kinds = (static_kind(node.left, kind_of), static_kind(node.right, kind_of))
    if None in kinds or "any" in kinds:
        return None
    try:
        sum_kind(node, *kinds)
    except NotSupportedError as refused:
        return str(refused)
    return None


TRIG_PUBLIC = {exp.Sin: math.sin, exp.Cos: math.cos, exp.Tan: math.tan, exp.Asin: math.asin, exp.Acos: math.acos,
               exp.Atan: math.atan}


def _trig_public(e: exp.Expression, args: list[float]) -> float:
    """A trigonometric function of constants (ASIN / ACOS beyond ±1 refused, as on shares)."""
    if len(args) == 2:
        return math.atan2(*args)
    try:
        return TRIG_PUBLIC[type(e)](args[0])
    except ValueError:
        raise DataError(f"{e.sql(dialect='duckdb')}: no finite value (DuckDB gives NaN)") from None


def geodist_public(lon1: float, lat1: float, lon2: float, lat2: float, radius: float = EARTH_RADIUS) -> float:
    """GEODIST of constants: the great-circle distance in Vincenty's atan2 form (as on shares)."""
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon1 - lon2)
    across = math.cos(p2) * math.sin(dl)
    along = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    dot = math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(dl)
    return radius * math.atan2(math.hypot(across, along), dot)


def _math_public(e: exp.Expression, x: float) -> float:
    """SQRT / LN / LOG / EXP / POWER of a constant (a domain error is refused, as on shares)."""
    try:
        if isinstance(e, exp.Pow):
            power = x ** constant(e.expression)
            if isinstance(power, complex):
                raise ValueError("a negative number to a fractional power")
            return power
        if isinstance(e, exp.Log):
            return math.log(x, constant(e.this) if e.expression is not None else 10.0)
        return {exp.Sqrt: math.sqrt, exp.Ln: math.log, exp.Exp: math.exp}[type(e)](x)
    except (ValueError, OverflowError, ZeroDivisionError):
        raise DataError(f"{e.sql(dialect='duckdb')}: no finite value (DuckDB gives NaN or ±infinity)") from None


def _unit_rule(node: exp.Var, kind_of) -> str | None:
    """A bare name is evaluated only as the unit of EXTRACT or DATEDIFF (their own rule checks it)."""
    return None if isinstance(node.parent, (exp.Extract, exp.DateDiff)) else \
        f"{node.sql(dialect='duckdb')}: a bare name in secure computation"


def _interval_rule(node: exp.Interval, kind_of) -> str | None:
    """INTERVAL n MICROSECOND .. WEEK, MONTH, QUARTER or YEAR with a whole constant n, added to a date or a
    timestamp or subtracted from one (date/timestamp + INTERVAL, INTERVAL + date/timestamp, date/timestamp -
    INTERVAL)."""
    parent = node.parent
    if (_interval_micros(node) is not None or calendar_interval(node)) and isinstance(parent, (exp.Add, exp.Sub)) \
            and (isinstance(parent, exp.Add) or parent.expression is node):
        other = parent.expression if parent.this is node else parent.this
        return None if static_kind(other, kind_of) in (*TEMPORAL, None) else \
            f"{parent.sql(dialect='duckdb')}: an INTERVAL moves a DATE or a TIMESTAMP in secure computation"
    return (f"{node.sql(dialect='duckdb')} in secure computation: the SPU adds INTERVAL n MICROSECOND, MILLISECOND, "
            "SECOND, MINUTE, HOUR, DAY, WEEK, MONTH, QUARTER or YEAR (a whole constant n) to a date or a timestamp; "
            "compute other intervals at one party")


INTERVAL_MICROS = {**functions.MICROS, "WEEK": 7 * functions.MICROS["DAY"]}


def _interval_in(node: exp.Interval, scales: dict[str, int]) -> int | None:
    """INTERVAL n UNIT with a whole n as n * scales[UNIT] (a plural unit as its singular), else None."""
    unit = (node.unit.name if node.unit is not None else "").upper()
    try:
        count = int(str(node.this.this)) if isinstance(node.this, exp.Literal) else None
    except ValueError:
        return None
    scale = scales.get(unit[:-1] if unit.endswith("S") else unit)
    return count * scale if count is not None and scale is not None else None


def _interval_days(node: exp.Interval) -> int | None:
    """The days of INTERVAL n DAY / WEEK with a whole n, else None."""
    return _interval_in(node, {"DAY": 1, "WEEK": 7})


def _interval_micros(node: exp.Interval) -> int | None:
    """The microseconds of INTERVAL n MICROSECOND .. WEEK with a whole n (a fixed length), else None."""
    return _interval_in(node, INTERVAL_MICROS)


def _timestamp_literal(text: str) -> int | None:
    """A TIMESTAMP constant ('2024-01-31', '2024-01-31 10:00[:00[.123456]]') as microseconds since 1970, as
    DuckDB casts it; None when it is not one (or carries a time zone, which TIMESTAMP has not)."""
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is not None:
        return None
    return (moment - datetime.datetime(1970, 1, 1)) // datetime.timedelta(microseconds=1)


def _public_add_months(day: datetime.date, months: int) -> datetime.date:
    """A DATE constant moved by calendar months, the day clamped to the month's last (as DuckDB)."""
    total = day.year * 12 + day.month - 1 + months
    year, month = divmod(total, 12)
    following = datetime.date(year + (month == 11), (month + 1) % 12 + 1, 1)
    return datetime.date(year, month + 1, min(day.day, (following - datetime.timedelta(days=1)).day))


def _round_public(op, value, digits: int):
    """ROUND / FLOOR / CEIL of a constant, as DuckDB computes it (halves away from zero)."""
    number = decimal.Decimal(str(value))
    if op is exp.Floor:
        return type(value)(number.to_integral_value(decimal.ROUND_FLOOR))
    if op is exp.Ceil:
        return type(value)(number.to_integral_value(decimal.ROUND_CEILING))
    return type(value)(number.quantize(decimal.Decimal(1).scaleb(-digits), decimal.ROUND_HALF_UP))


def _date_literal(text: str) -> int | None:
    """A DATE constant as days since 1970-01-01 (the SPU's dates), or None when it is not a date."""
    try:
        return (datetime.date.fromisoformat(text.strip()) - EPOCH).days
    except ValueError:
        return None


def like_bounds(pattern: str, width: int = MAX_TEXT_BYTES) -> tuple[bytes, bytes] | None:
    """x LIKE pattern as lo <= x <= hi over text limbs of `width` bytes, for a pattern with no
    wildcard (equality) or one trailing '%' (a prefix; UTF-8 has no byte 0xFF, so prefix + 0xFF...
    bounds it). None for other patterns (a '%' or '_' elsewhere, a backslash, more bytes than the
    SPU's widest text holds)."""
    exact = pattern[:-1] if pattern.endswith("%") else pattern
    raw = exact.encode()
    if any(c in exact for c in "%_\\") or len(raw) > MAX_TEXT_BYTES:
        return None
    if exact == pattern:
        return raw, raw
    return raw, raw + b"\xff" * (max(width, len(raw)) - len(raw))


def _like_rule(node: exp.Like, kind_of) -> str | None:
    """LIKE with a constant pattern (any `%` and `_`, an ESCAPE clause), `spu.like`."""
    return _like_pattern(node)[1]


def _like_pattern(node: exp.Like) -> tuple[tuple | None, str | None]:
    """(the pattern's tokens, None) or (None, why the SPU refuses it); reads the ESCAPE clause around `node`."""
    pattern, escape = node.expression, _like_escape(node)
    if not (isinstance(pattern, exp.Literal) and pattern.is_string) or escape is False:
        return None, (f"{node.sql(dialect='duckdb')} in secure computation: the SPU matches LIKE with a constant "
                      "text pattern (and a constant ESCAPE); compute other patterns at one party")
    try:
        return like.pattern_tokens(pattern.this, escape), None
    except like.PatternError as error:
        return None, f"{node.sql(dialect='duckdb')} in secure computation: {error}"


def _like_escape(node: exp.Like) -> str | None | bool:
    """The ESCAPE character around a LIKE (None without ESCAPE, False when it is not a text constant)."""
    if not isinstance(node.parent, exp.Escape) or node.parent.this is not node:
        return None
    escape = node.parent.expression
    return escape.this if isinstance(escape, exp.Literal) and escape.is_string else False


def _escape_rule(node: exp.Escape, kind_of) -> str | None:
    return None if isinstance(node.this, exp.Like) else \
        f"{node.sql(dialect='duckdb')}: secure computation takes ESCAPE after LIKE only"


def _ilike_rule(node: exp.ILike, kind_of) -> str | None:
    return (f"{node.sql(dialect='duckdb')}: ILIKE in secure computation is refused: DuckDB lowercases non-ASCII "
            "text too (U+212A KELVIN SIGN ILIKE 'k' holds), which the SPU's byte matching cannot follow; "
            "compute it at the column's owner, or use LIKE (case-sensitive)")


def _literal_rule(node: exp.Literal, kind_of) -> str | None:
    """A text constant fits the SPU's widest text (a width problem known from the query alone)."""
    if not node.is_string or len(node.this.encode("utf-8")) <= MAX_TEXT_BYTES:
        return None
    return (f"a text constant of {len(node.this.encode('utf-8'))} bytes in secure computation: the SPU's text "
            f"holds at most {MAX_TEXT_BYTES} bytes of UTF-8; shorten the constant or compare at one party")


def _in_rule(node: exp.In, kind_of) -> str | None:
    if node.args.get("query") or node.args.get("unnest") or node.args.get("field") or not node.expressions:
        return f"{node.sql(dialect='duckdb')}: secure computation takes IN with a list of values"
    return _comparison_rule(node, kind_of)


def _comparison_rule(node: exp.Expression, kind_of) -> str | None:
    """Why a comparison (=, <>, <, <=, >, >=, BETWEEN, IN, NULLIF) is refused: an operand is an approximate
    value whose error the SPU does not bound (`approximation.unbounded_part`), so the guard that refuses
    rows within their error of each other (`Stage._refuse_within_error`) has nothing to go by."""
    found = approximation.unbounded_part(node, kind_of)
    if found is None:
        return None
    part, why = found
    return (f"{node.sql(dialect='duckdb')}: the SPU bounds no error for {part.sql(dialect='duckdb')} ({why}), so the "
            "comparison could take the other side than DuckDB's doubles unseen; compare a rounded value "
            "(ROUND(x, d), or an aggregate of rounded terms: AVG(ROUND(x / y, 2)) < 3), or compare at one party")


def _is_rule(node: exp.Is, kind_of) -> str | None:
    return None if isinstance(node.expression, exp.Null) else \
        f"{node.sql(dialect='duckdb')}: secure computation takes IS NULL / IS NOT NULL only"


def _rounding_rule(node: exp.Expression, kind_of) -> str | None:
    """ROUND(x[, d]) / FLOOR(x) / CEIL(x) of a number whose error the SPU bounds, d a whole constant within
    12 digits."""
    name = type(node).__name__.upper()
    if static_kind(node.this, kind_of) not in ("int", "fixed", None):
        return f"{node.sql(dialect='duckdb')}: {name} of {static_kind(node.this, kind_of)} values in secure computation"
    if (unbounded := _unbounded_rounding(node, kind_of)) is not None:
        return unbounded
    digits = node.args.get("decimals")
    if digits is None:
        return _finer_than_error(node, 0, kind_of)
    if isinstance(node, exp.Round) and isinstance(constant(digits), int) and abs(constant(digits)) <= MAX_DIGITS:
        return _finer_than_error(node, constant(digits), kind_of)
    return (f"{node.sql(dialect='duckdb')}: secure computation takes {name}(x) or ROUND(x, d) with d a whole "
            f"constant between -{MAX_DIGITS} and {MAX_DIGITS}; compute it at one party")


def _family(kind: str) -> str:
    """What a kind compares as: numbers (integers, DECIMALs, DOUBLEs), dates (and timestamps), text, booleans."""
    if kind in ("int", "fixed") or decimal_scale(kind) is not None or quotient_bits(kind) is not None:
        return "number"
    return {"date": "date", "timestamp": "date", "bool": "boolean"}.get(kind, "text")


def _branches_rule(node: exp.Expression, kind_of) -> str | None:
    """CASE / IF / COALESCE / GREATEST / LEAST choose among values of one family (`_family`): a text constant
    beside dates is read as a DATE '...' / TIMESTAMP '...' (`Stage._temporal_pair`), a NULL as the others'."""
    if isinstance(node, exp.Case) and node.this is not None:
        return f"{node.sql(dialect='duckdb')}: CASE x WHEN ... in secure computation: write CASE WHEN x = ..."
    values = [v for v in choices(node) if not isinstance(v, exp.Null)]
    texts = [v for v in values if isinstance(v, exp.Literal) and v.is_string]
    families = {_family(kind) for v in values if v not in texts and (kind := static_kind(v, kind_of)) is not None}
    if texts and "date" not in families:
        families.add("text")
    if len(families) <= 1:
        return None
    name = type(node).__name__.upper()
    return (f"{node.sql(dialect='duckdb')}: {name} of {' and '.join(sorted(families))} values in secure computation "
            f"(the SPU chooses among values of one kind); CAST them to one type, or compute {name} at one party")


def _distinct_rule(node: exp.Distinct, kind_of) -> str | None:
    if isinstance(node.parent, exp.Count) and len(node.expressions) == 1:
        return None
    return (f"{(node.parent or node).sql(dialect='duckdb')}: secure computation counts the distinct values of one "
            "expression (COUNT(DISTINCT x)); no other aggregate takes DISTINCT")


def _window_rule(node: exp.Window, kind_of) -> str | None:
    if isinstance(node.this, (exp.RowNumber, exp.Rank, exp.DenseRank)) and not node.args.get("spec") \
            and not node.args.get("partition_by") and node.args.get("order") is not None:
        approximate = next((o.this for o in node.args["order"].expressions if approximation.is_approximate(o.this)), None)
        return None if approximate is None else (
            f"{node.sql(dialect='duckdb')}: ranking by {approximate.sql(dialect='duckdb')}, an approximate value, in "
            "secure computation: rows within their error of each other could be numbered otherwise than by DuckDB; "
            "order by a rounded value (ROUND(x, d)), or rank at one party")
    return (f"{node.sql(dialect='duckdb')}: secure windows are ROW_NUMBER, RANK and DENSE_RANK over one common "
            "OVER (ORDER BY ...) without PARTITION BY or frame")


SPU_RULES = {
    **{cls: _evaluated for cls in (
        exp.Paren, exp.Column, exp.Boolean, exp.Null, exp.DataType, exp.Neg, exp.Mul, exp.And, exp.Or, exp.Not,
        exp.Abs, exp.Pi,
        exp.Count, exp.Min, exp.Max, exp.Star,  # aggregates (Star: COUNT(*))
        exp.RowNumber, exp.Rank, exp.DenseRank, exp.Order, exp.Ordered)},  # windows
    exp.Div: _division_rule, exp.IntDiv: _division_rule, exp.Mod: _division_rule,
    **{cls: _comparison_rule for cls in (*COMPARISONS, exp.Between, exp.Nullif)},
    exp.Literal: _literal_rule, exp.Cast: _cast_rule, exp.Like: _like_rule, exp.Escape: _escape_rule,
    exp.ILike: _ilike_rule, exp.In: _in_rule, exp.Is: _is_rule,
    **{cls: _rounding_rule for cls in ROUNDING}, **{cls: _date_part_rule for cls in DATE_PARTS},
    exp.Interval: _interval_rule, exp.Var: _unit_rule, **{cls: _math_rule for cls in MATH},
    **{cls: _trig_rule for cls in TRIG}, exp.Anonymous: _anonymous_rule,
    exp.Distinct: _distinct_rule, exp.Window: _window_rule,
    **{cls: _branches_rule for cls in (exp.Case, exp.If, exp.Coalesce, *EXTREMES)},
    exp.Add: _sum_rule, exp.Sub: _sum_rule, exp.TimeToStr: _formatting_rule, exp.Sum: _total_rule,
    exp.Avg: _total_rule,
}


def spu_cannot_evaluate(e: exp.Expression, kind_of=lambda column: None) -> exp.Expression | None:
    """The first node of `e` (outermost first) without a rule in SPU_RULES or refused by its rule, or None
    when the SPU stage evaluates all of it (the cost model asks this before it prices the SPU)."""
    if (checked := checked_value(e)) is not None:
        return spu_cannot_evaluate(checked, kind_of)
    rule = SPU_RULES.get(type(e))
    if rule is None or rule(e, kind_of) is not None:
        return e
    if isinstance(e, LEAVES):
        return None
    return next((part for child in e.iter_expressions() if (part := spu_cannot_evaluate(child, kind_of)) is not None),
                None)


def spu_refusal(e: exp.Expression, kind_of=lambda column: None) -> str | None:
    """Why the SPU stage cannot evaluate `e`, or None. Aggregates of text are evaluated; every rule is in
    SPU_RULES."""
    part = spu_cannot_evaluate(e, kind_of)
    if part is None:
        return None
    rule = SPU_RULES.get(type(part))
    if rule is None:
        return (f"{part.sql(dialect='duckdb')}: {type(part).__name__.upper()} is not evaluated in secure computation; "
                "compute it at one party (docs/architecture.md: what the SPU evaluates)")
    return rule(part, kind_of)


class Stage:
    def __init__(self, s: SpuSession, step, n: int, ranges: RangePlan | None = None):
        self.s, self.step, self.n = s, step, n
        self.ranges = ranges  # the input limits its owners checked: bounds that choose the cheaper product
        self.cols: dict[str, SV] = {}
        self.aggs: dict[str, SV] = {}
        self.out_of_range: list[ArithShare] = []
        self.checked: list[str] = []  # the AVGs whose sums `out_of_range` checks, for the error message
        self.group_code: tuple[ArithShare, int] | None = None  # (shared code, its bit width): `group_code`
        # the one-hot group sums (`step.one_hot_groups`): (owner, its rows' group numbers, its groups' key
        # words (validity, limbs per key, G each: `one_hot_keys`) and its own distinct rows per group for each
        # provenance column it counts itself (`group_path.owner_counted`) at the owner, None elsewhere)
        self.one_hot: tuple[int, np.ndarray | None, list[np.ndarray] | None, list[np.ndarray] | None] | None = None
        self.owner_counted: tuple[str, ...] = ()  # those provenance columns: neither sorted nor summed
        self.union_rows: dict[int, int] = {}  # UNION ALL: branch index -> its rows, in concatenation order
        self.once: set[str] = set()  # input columns whose base rows each appear in one row at most
        self.provenance_bits: dict[str, int] = {}  # provenance column -> its width (`dense_rows`), where known
        self.input_bits: dict[int, int] = {}  # aggregate input -> the bits its MIN / MAX compares (`aggregate_inputs`)
        self.text_extremes: list[tuple[bool, ArithShare, list[ArithShare]]] = []  # MIN/MAX of text: (max?, w, limbs)
        self.weight: ArithShare | None = None  # the rows' weight so far (run_stage): which rows a division counts
        self.reach = Reach(s)  # which rows reach the part being evaluated (CASE, AND / OR, ..): `spu.reach`
        self.input_rows = n  # the most rows a group can count (for the exact AVG's precision)
        self.values: dict[int, tuple] = {}  # id(node) -> (node, its value) under a rounding (`_remembered`)
        self.error_bounds: dict[tuple, tuple] = {}  # (id(node), rows) -> (node, its error bound): `approximation`
        self.rounding_depth = 0  # how many roundings `ev` is inside
        self.all_rows: ArithShare | None = None  # the public weight of every row, where no filter or join weighs them
        self.aggregate_errors: dict[str, ArithShare] = {}  # SUM / AVG of an amplified encoding -> its groups'
        # summed per-row error bounds (ring units), for the guard of a comparison or rounding of it (`approximation`)

    # -- constants and conversions --------------------------------------------------------------
    def ones(self, n: int | None = None) -> ArithShare:
        ones = arith.public(self.s, np.ones(self.n if n is None else n, dtype=np.int64))
        return PublicOnes(ones.data, ones.frac)

    def const(self, value, kind: str, n: int | None = None) -> SV:
        n = self.n if n is None else n
        if value is None:  # NULL: zero limbs at each limb's scale (a fixed-point NULL mixes with fixed point)
            zero = arith.public(self.s, np.zeros(n, dtype=np.int64))
            return SV([zero.with_frac(frac) for frac in limb_fracs(kind, self.s.frac_bits)], zero, kind)
        if kind == "text":  # at its own width class (a comparison pads the narrower operand)
            column = pa.chunked_array([pa.array([value] * n, pa.string())])
            limbs, _ = encode(column, text_kind(text_width([value], "a text constant")), 0)
            return SV([arith.public(self.s, limb) for limb in limbs], self.ones(n), kind)
        if kind == "fixed":
            if not abs(float(value)) < 2.0 ** (63 - self.s.frac_bits):
                raise DataError(f"the constant {value} has no fixed-point encoding on the SPU "
                                f"(|c| < 2^{63 - self.s.frac_bits})")
            return SV([arith.public(self.s, np.full(n, float(value)), self.s.frac_bits)], self.ones(n), kind)
        if not -(1 << 63) <= int(value) < (1 << 63):
            raise DataError(f"the constant {value} is beyond the SPU's 64-bit integers (|c| < 2^63)")
        return SV([arith.public(self.s, np.full(n, int(value), dtype=np.int64))], self.ones(n), kind)

    def secret(self, v, n: int | None = None) -> SV:
        return self.const(v.value, v.kind, n) if isinstance(v, PV) else v

    def to_fixed(self, v: SV) -> SV:
        if v.kind == "fixed":
            return v
        if quotient_bits(v.kind) is not None:  # an exact AVG: its fixed-point limb
            return SV([v.limbs[0]], v.valid, "fixed")
        if decimal_scale(v.kind) is not None:
            return SV([v.limbs[1]], v.valid, "fixed")
        if v.kind == "text":
            raise NotSupportedError("arithmetic on text in secure computation")
        x = v.value
        return SV([ArithShare(x.data * np.uint64(1 << self.s.frac_bits), self.s.frac_bits)], v.valid, "fixed")

    def numeric_pair(self, a, b) -> tuple[SV, SV]:
        n = len(a.valid) if isinstance(a, SV) else len(b.valid)
        a, b = self.secret(a, n), self.secret(b, n)
        if "text" in (a.kind, b.kind):
            raise NotSupportedError("arithmetic or ordering between text and numbers in secure computation")
        if "fixed" in (a.kind, b.kind):
            return self.to_fixed(a), self.to_fixed(b)
        return a, b

    def both_valid(self, a: SV, b: SV) -> ArithShare:
        return arith.beaver_mul(self.s, a.valid, b.valid)

    def truth(self, v) -> ArithShare:
        """A condition as a 0/1 share, NULL counting as false (no product where the value is
        `NullZeroed`: a comparison of numbers)."""
        v = self.secret(v)
        if v.kind != "bool":
            raise NotSupportedError("a condition in secure computation must be a comparison or a logical expression")
        if isinstance(v.value, NullZeroed):
            return v.value
        return arith.beaver_mul(self.s, v.value, v.valid)

    # -- expressions ----------------------------------------------------------------------------
    def ev(self, e: exp.Expression):
        """The value of `e`: a decimal stays exact where it is revealed, grouped on or aggregated by
        SUM / MIN / MAX (an output, a key, an aggregate's argument); elsewhere its fixed-point limb."""
        v = self._remembered(e)
        if isinstance(v, SV) and decimal_scale(v.kind) is not None and e.parent is not None \
                and not isinstance(e.parent, EXACT_DECIMAL_USES):
            return self.to_fixed(v)
        if isinstance(v, SV) and quotient_bits(v.kind) is not None and e.parent is not None:
            return self.to_fixed(v)
        return v

    def _remembered(self, e: exp.Expression):
        """_ev(e), remembering the values of the nodes under a rounding (ROUND / FLOOR / CEIL / CAST) or a
        comparison of an approximate value while it is evaluated, for its guard's error bound
        (`spu.approximation`), and forgetting them (and the bounds computed from them) after it, so memory
        stays that of the expressions being evaluated."""
        rounding = isinstance(e, (*ROUNDING, exp.Cast)) or \
            (isinstance(e, (*COMPARISONS, exp.In, exp.Nullif)) and self.guards_comparison(e))
        self.rounding_depth += rounding
        try:
            v = self._ev(e)
        finally:
            self.rounding_depth -= rounding
            if rounding and not self.rounding_depth:
                self.values.clear()
                self.error_bounds.clear()
        if self.rounding_depth:
            self.values[id(e)] = (e, v)
        return v

    def _ev(self, e: exp.Expression):
        s = self.s
        key = e.sql(dialect="duckdb")
        if key in self.aggs:
            return self.aggs[key]
        if isinstance(e, exp.Paren):
            return self.ev(e.this)
        if isinstance(e, exp.Column):
            if e.name not in self.cols:
                raise ProtocolError(f"secure stage: no input column {e.name!r}")
            return self.cols[e.name]
        if isinstance(e, exp.Literal):
            return literal_value(e)
        if isinstance(e, exp.Boolean):
            return PV(1 if e.this else 0, "bool")
        if isinstance(e, exp.Pi):
            return PV(math.pi, "fixed")
        if isinstance(e, exp.Null):
            return PV(None, "int")
        if isinstance(e, exp.Neg):
            v = self.ev(e.this)
            if isinstance(v, PV):
                _numeric_only(e, v)
                return PV(-v.value, v.kind, v.exact and (-v.exact[0], v.exact[1]))
            _numeric_only(e, v if decimal_scale(v.kind) is None else self.to_fixed(v))
            return SV([-limb for limb in v.limbs], v.valid, v.kind)
        if isinstance(e, (exp.Add, exp.Sub)) and any(calendar_interval(o) for o in (e.left, e.right)):
            return self._add_months(e)
        if isinstance(e, (exp.Add, exp.Sub)) and any(isinstance(o, exp.Interval) for o in (e.left, e.right)):
            return self._shift(e)
        if isinstance(e, (exp.Add, exp.Sub, exp.Mul)):
            a, b = self.ev(e.left), self.ev(e.right)
            approximate = self._arithmetic(e, self._as_fixed(a), self._as_fixed(b))
            return self._exact_arithmetic(e, a, b, approximate)
        if isinstance(e, (exp.Div, exp.IntDiv, exp.Mod)):
            return self._divide_or_null(e)
        if isinstance(e, exp.Nullif):  # NULL where x = y (NULL there too where either is NULL: x stays)
            x = self.secret(self.ev(e.this))
            same = self.truth(self._compare(exp.EQ, x, self.ev(e.expression), (e.this, e.expression)))
            return SV(x.limbs, x.valid - arith.beaver_mul(s, x.valid, same), x.kind)
        if isinstance(e, (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)):
            return self._compare(type(e), self.ev(e.left), self.ev(e.right), (e.left, e.right))
        if isinstance(e, exp.Between):
            x = e.this
            return self._logic(exp.And(this=exp.GTE(this=x, expression=e.args["low"]),
                                       expression=exp.LTE(this=x, expression=e.args["high"])))
        if isinstance(e, exp.In) and not e.args.get("query"):
            return self._in_list(e)
        if isinstance(e, LOGIC_TYPES):
            return self._logic(e)
        if isinstance(e, exp.Is) and isinstance(e.expression, exp.Null):
            v = self.secret(self.ev(e.this))
            return SV([self.ones(len(v.valid)) - v.valid], self.ones(len(v.valid)), "bool")
        if isinstance(e, (exp.Case, exp.If)):
            return self._case(e)
        if isinstance(e, exp.Coalesce):
            values = [self._secret_value(v) for v in self._typed_branches(self._until_valid(choices(e)))]
            acc = values[-1]
            for v in reversed(values[:-1]):
                acc = self._mux(v.valid, v, acc)
            return acc
        if isinstance(e, EXTREMES):
            return self._extreme(e)
        if isinstance(e, exp.Abs):
            v = self.secret(self.ev(e.this))
            _numeric_only(e, v if decimal_scale(v.kind) is None else self.to_fixed(v))
            return SV([compare.abs_(s, limb) for limb in v.limbs], v.valid, v.kind)  # a DECIMAL: both limbs
        if isinstance(e, exp.Like):
            return self._like(e)
        if isinstance(e, exp.Escape):
            return self._like(e.this)
        if isinstance(e, ROUNDING):
            return self._rounding(e)
        if isinstance(e, exp.Interval):
            return PV(_interval_days(e), "int")
        if isinstance(e, DATE_PARTS):
            return self._date_part(e)
        if isinstance(e, MATH):
            return self._math(e)
        if isinstance(e, TRIG):
            return self._trig(e)
        if is_geodist(e):
            return self._geodist(e)
        if is_date_sub(e):
            return self._elapsed(e)
        if isinstance(e, exp.Cast):
            v = self.ev(e.this)
            target = e.to.this
            if target == exp.DataType.Type.DATE and isinstance(v, PV) and v.kind == "text" \
                    and _date_literal(v.value) is not None:  # DATE '...': a public day number
                return PV(_date_literal(v.value), "date")
            if target in TIMESTAMP_CASTS or (target == exp.DataType.Type.DATE and v.kind == "timestamp"):
                return self._temporal_cast(e, v)
            if target == exp.DataType.Type.DECIMAL and not isinstance(v, PV):
                return self._to_decimal(v, decimal_scale_of(e.to), e)
            if target in (exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT, exp.DataType.Type.DECIMAL):
                return PV(float(v.value), "fixed") if isinstance(v, PV) else self.to_fixed(v)
            if target in INTEGER_CASTS and not isinstance(v, PV) and v.kind != "text":
                return self._to_integer(v, e)
            if (target in INTEGER_CASTS and v.kind == "int") or (target == exp.DataType.Type.DATE and v.kind == "date"):
                return v
            raise NotSupportedError(f"CAST to {e.to.sql()} in secure computation")
        raise NotSupportedError(f"{e.sql()} in secure computation")

    def _arithmetic(self, e: exp.Expression, a, b):
        """a + b, a - b, a * b of integers and fixed point (a DECIMAL: its fixed-point limb)."""
        if isinstance(e, exp.Mul):
            return self._mul(a, b, self._narrow(e))
        kind = sum_kind(e, a.kind, b.kind)
        if isinstance(a, PV) and isinstance(b, PV):
            return PV(a.value + b.value if isinstance(e, exp.Add) else a.value - b.value, kind)
        a, b = self.numeric_pair(a, b)
        x = a.value + b.value if isinstance(e, exp.Add) else a.value - b.value
        return SV([x], self.both_valid(a, b), kind)

    def _as_fixed(self, v):
        """A DECIMAL operand as fixed point (its second limb, or the literal's DOUBLE), others unchanged."""
        if isinstance(v, PV):
            return PV(v.value, v.kind) if v.exact is not None else v
        return self.to_fixed(v) if decimal_scale(v.kind) is not None else v

    def _exact_arithmetic(self, e: exp.Expression, a, b, approximate):
        """a + b, a - b, a * b as DuckDB types them where one operand is a DECIMAL and the other a DECIMAL
        or an integer: DECIMAL(p, max(s1, s2)) for a sum, DECIMAL(p1 + p2, s1 + s2) for a product, its exact
        limb computed on the operands' exact limbs (a share times a share: one product, no truncation) and
        `approximate` (the same on their fixed-point limbs) as its fixed-point limb. Anything else:
        `approximate`. The ring range of the exact limb is proven by `spu.ranges` (`exact_scale`)."""
        parts = self._exact_operands(a, b)
        if parts is None:
            return approximate
        (x, sx), (y, sy) = parts
        if isinstance(e, exp.Mul):
            scale = sx + sy
            shared = not isinstance(x, int) and not isinstance(y, int)
            exact = arith.beaver_mul(self.s, x, y) if shared else y * x if isinstance(x, int) else x * y
        else:
            scale = max(sx, sy)
            x, y = x * 10 ** (scale - sx), y * 10 ** (scale - sy)
            y = -y if isinstance(e, exp.Sub) else y
            exact = x + y if isinstance(x, int) == isinstance(y, int) else \
                arith.add_public(self.s, y, x) if isinstance(x, int) else arith.add_public(self.s, x, y)
        if scale > MAX_DECIMAL_SCALE:
            raise NotSupportedError(f"{e.sql(dialect='duckdb')}: a DECIMAL of scale {scale} in secure computation "
                                    f"(at most {MAX_DECIMAL_SCALE}); CAST an operand to a smaller scale or to DOUBLE")
        if isinstance(approximate, PV):
            return PV(approximate.value, approximate.kind, (exact, scale))
        return SV([exact, approximate.value], approximate.valid, f"decimal.{scale}")

    def _exact_operands(self, a, b):
        """((x * 10^s, s), (y * 10^t, t)) of two operands DuckDB computes with in DECIMAL (one a DECIMAL,
        the other a DECIMAL or an integer; a share or a public int each), else None."""
        parts = [self._exact_part(v) for v in (a, b)]
        return None if None in parts or not any(map(_is_decimal, (a, b))) else parts

    @staticmethod
    def _exact_part(v) -> tuple | None:
        if isinstance(v, PV):
            if v.exact is not None:
                return v.exact
            return (int(v.value), 0) if v.kind == "int" and v.value is not None else None
        if (scale := decimal_scale(v.kind)) is not None:
            return v.limbs[0], scale
        return (v.value, 0) if v.kind == "int" else None

    def _to_integer(self, v: SV, e: exp.Expression) -> SV:
        """CAST to an integer as DuckDB does it: a DOUBLE rounds ties to even, a DECIMAL halves away from zero
        (both exact on the value the SPU holds), a boolean is 0/1."""
        if v.kind in ("int", "bool", "date"):
            if v.kind == "date":
                raise NotSupportedError("CAST of a DATE to an integer in secure computation (DuckDB refuses it too)")
            return SV(v.limbs[:1], v.valid, "int")
        if (scale := decimal_scale(v.kind)) is not None:
            return SV([functions.round_div_public(self.s, v.limbs[0], 10 ** scale)], v.valid, "int")
        self._refuse_near_a_boundary(e, v.value, functions.round_fixed, 1)  # the same ties as ROUND's
        return SV([functions.round_half_even_fixed(self.s, v.value)], v.valid, "int")

    def _to_decimal(self, v: SV, scale: int, e: exp.Expression) -> SV:
        """CAST to DECIMAL(p, t), exact at scale t: an integer times 10^t; a DECIMAL rescaled (rounding
        halves away from zero); a DOUBLE rounded at t digits, halves away from zero (exact on its encoding)."""
        s = self.s
        if v.kind == "bool":
            v = SV(v.limbs, v.valid, "int")
        _numeric_only("CAST", v if decimal_scale(v.kind) is None else SV(v.limbs, v.valid, "fixed"))
        if v.kind == "int":
            exact = v.value * 10 ** scale
        elif (have := decimal_scale(v.kind)) is not None:
            exact = v.limbs[0] * 10 ** (scale - have) if scale >= have else \
                functions.round_div_public(s, v.limbs[0], 10 ** (have - scale))
        else:
            rounded = self._refuse_near_a_boundary(e, ArithShare((v.value * 10 ** scale).data, v.value.frac),
                                                   functions.round_fixed, 10 ** scale)
            exact = functions.floor_pow2(s, rounded, s.frac_bits)  # a whole number: exact
        fixed = functions.floor_div_public(s, exact.lshift(s.frac_bits), 10 ** scale) if scale else \
            exact.lshift(s.frac_bits)
        return SV([exact, fixed.with_frac(s.frac_bits)], v.valid, f"decimal.{scale}")

    def _date_part(self, e: exp.Expression) -> SV:
        """YEAR / MONTH / DAY of a date or timestamp (spu.functions.civil_from_days, exact), HOUR / MINUTE /
        SECOND of a timestamp (spu.functions.time_of_day), and DATEDIFF (b - a) in the unit's boundaries
        crossed, as DuckDB counts them: months and years of the calendar dates, days of the dates, smaller
        units of the timestamps (a date at midnight)."""
        part = _date_part(e)
        if isinstance(e, exp.DateDiff):
            return self._date_diff(e, part)
        v = self.secret(self.ev(_date_argument(e)))
        if v.kind not in TEMPORAL or (part in TIME_PARTS and v.kind != "timestamp"):
            raise NotSupportedError(_date_part_rule(e, lambda column: v.kind) or f"{e.sql()}: not a date")
        if v.kind == "timestamp":
            days, within = functions.split_timestamp(self.s, v.value)
            if part in TIME_PARTS:
                return SV([functions.time_of_day(self.s, within)[TIME_PARTS.index(part)]], v.valid, "int")
            v = SV([days], v.valid, "date")
        year, month, day = functions.civil_from_days(self.s, v.value)
        return SV([{"YEAR": year, "MONTH": month, "DAY": day}[part]], v.valid, "int")

    def _date_diff(self, e: exp.DateDiff, part: str) -> SV:
        """DATEDIFF(part, a, b): b's boundaries of `part` since 1970 minus a's (both in one batch)."""
        later, earlier = self.ev(e.this), self.ev(e.expression)
        rows = len((later if isinstance(later, SV) else earlier).valid)
        later, earlier = self.secret(later, rows), self.secret(earlier, rows)
        if not {later.kind, earlier.kind} <= set(TEMPORAL):
            raise NotSupportedError(_date_part_rule(e, lambda column: None) or f"{e.sql()}: not a date")
        valid = self.both_valid(later, earlier)
        both = SV([arith.concat([self._as_timestamp(later).value, self._as_timestamp(earlier).value])],
                  arith.concat([later.valid, earlier.valid]), "timestamp")
        if part in SUB_DAY_UNITS:
            units = functions.units_since_epoch(self.s, both.value, part)
            return SV([units[:rows] - units[rows:]], valid, "int")
        days = self._as_date(both).value if "timestamp" in (later.kind, earlier.kind) else \
            arith.concat([later.value, earlier.value])
        if part == "DAY":
            return SV([days[:rows] - days[rows:]], valid, "int")
        year, month, _ = functions.civil_from_days(self.s, days)
        years = year[:rows] - year[rows:]
        return SV([years if part == "YEAR" else years * 12 + (month[:rows] - month[rows:])], valid, "int")

    def _elapsed(self, e: exp.Anonymous) -> SV:
        """DATE_SUB(unit, a, b): (b - a) in microseconds divided by the unit's, truncated toward zero as DuckDB
        (spu.functions.truncated_divide_public, exact for |b - a| < 2^61)."""
        unit = _elapsed_unit(e)
        if _date_sub_rule(e, lambda column: None) is not None:
            raise NotSupportedError(_date_sub_rule(e, lambda column: None))
        earlier, later = (self.ev(a) for a in e.expressions[1:])
        if not {earlier.kind, later.kind} <= set(TEMPORAL):
            raise NotSupportedError(_date_sub_rule(e, lambda column: earlier.kind if earlier.kind not in TEMPORAL
                                                   else later.kind))
        rows = len((later if isinstance(later, SV) else earlier).valid)
        earlier, later = (self.secret(self._as_timestamp(v), rows) for v in (earlier, later))
        micros = later.value - earlier.value
        step = INTERVAL_MICROS[unit]
        elapsed = micros if step == 1 else functions.truncated_divide_public(self.s, micros, step)
        return SV([elapsed], self.both_valid(earlier, later), "int")

    def _as_timestamp(self, v):
        """A date (or timestamp) as a timestamp: midnight of the day, as DuckDB casts it (exact, local)."""
        if v.kind == "timestamp":
            return v
        if isinstance(v, PV):
            return PV(None if v.value is None else int(v.value) * MICROS_PER_DAY, "timestamp")
        return SV([v.value * MICROS_PER_DAY], v.valid, "timestamp")

    def _as_date(self, v):
        """A timestamp's (or date's) calendar date, as CAST(ts AS DATE): the day it falls on (exact)."""
        if v.kind == "date":
            return v
        if isinstance(v, PV):
            return PV(None if v.value is None else int(v.value) // MICROS_PER_DAY, "date")
        return SV([functions.split_timestamp(self.s, v.value)[0]], v.valid, "date")

    def _temporal_cast(self, e: exp.Cast, v):
        """CAST to TIMESTAMP of a timestamp, a date or a TIMESTAMP '...' constant; CAST of a timestamp to DATE."""
        target = e.to.this
        if isinstance(v, PV) and v.value is None:  # CAST(NULL AS TIMESTAMP)
            return PV(None, "timestamp" if target in TIMESTAMP_CASTS else "date")
        if isinstance(v, PV) and v.kind == "text" and target in TIMESTAMP_CASTS:
            micros = _timestamp_literal(v.value)
            if micros is None:
                raise NotSupportedError(f"{e.sql(dialect='duckdb')}: not a TIMESTAMP without time zone")
            return PV(micros, "timestamp")
        if v.kind not in TEMPORAL:
            raise NotSupportedError(_cast_rule(e, lambda column: v.kind) or f"CAST to {e.to.sql()} in secure computation")
        return self._as_timestamp(v) if target in TIMESTAMP_CASTS else self._as_date(v)

    def _shift(self, e: exp.Expression):
        """date / timestamp ± INTERVAL n of a fixed length (MICROSECOND .. WEEK): a date moved by whole days
        stays a date (DuckDB's TIMESTAMP at midnight, see `conform`); otherwise the microseconds are added
        to the timestamp (a date taken at midnight). Exact: a public addition."""
        interval, moved = (e.left, e.right) if isinstance(e.left, exp.Interval) else (e.right, e.left)
        sign = -1 if isinstance(e, exp.Sub) else 1
        v = self.ev(moved)
        days, micros = _interval_days(interval), _interval_micros(interval)
        if v.kind not in TEMPORAL or micros is None or (sign < 0 and interval is e.left):
            raise NotSupportedError(_interval_rule(interval, lambda column: v.kind)
                                    or f"{e.sql(dialect='duckdb')}: INTERVAL arithmetic in secure computation")
        step, v = (days, v) if v.kind == "date" and days is not None else (micros, self._as_timestamp(v))
        if isinstance(v, PV):
            return PV(None if v.value is None else v.value + sign * step, v.kind)
        return SV([arith.add_public(self.s, v.value, sign * step)], v.valid, v.kind)

    def _add_months(self, e: exp.Expression) -> SV | PV:
        """date ± INTERVAL n MONTH / QUARTER / YEAR, as DuckDB: the day clamped to the new month's last day
        (spu.functions.add_months, exact)."""
        interval, date = (e.left, e.right) if calendar_interval(e.left) else (e.right, e.left)
        months = interval_months(interval) * (-1 if isinstance(e, exp.Sub) else 1)
        v = self.ev(date)
        if v.kind not in TEMPORAL:
            raise NotSupportedError(f"{e.sql(dialect='duckdb')}: a calendar interval moves a DATE or a TIMESTAMP in "
                                    "secure computation")
        if isinstance(v, PV) and v.kind == "timestamp":
            day, within = divmod(int(v.value), MICROS_PER_DAY)
            moved = _public_add_months(EPOCH + datetime.timedelta(days=day), months)
            return PV((moved - EPOCH).days * MICROS_PER_DAY + within, "timestamp")
        if isinstance(v, PV):
            moved = _public_add_months(EPOCH + datetime.timedelta(days=int(v.value)), months)
            return PV((moved - EPOCH).days, "date")
        if v.kind == "timestamp":
            return SV([functions.add_months_timestamp(self.s, v.value, months)], v.valid, "timestamp")
        return SV([functions.add_months(self.s, v.value, months)], v.valid, "date")

    def _divide_or_null(self, e: exp.Expression):
        """x / NULLIF(y, 0) (and //, %): NULL where y is 0, the rule of MySQL's `/`, DIV and MOD (sqlglot and
        planner/dialects/mysql.py write them so), computed obliviously: the division's own zero test clears
        the row's validity, so no row is refused and no NULLIF comparison is paid for. Any other divisor:
        `_divide`, where a counted row dividing by zero refuses the query (DuckDB's ±infinity and NaN have no
        encoding; its `//` and `%` by 0, and PostgreSQL's division by 0, are errors)."""
        divisor = e.right.unnest()
        if isinstance(divisor, exp.Nullif) and constant(divisor.expression) == 0:
            y = self.ev(divisor.this)
            if isinstance(y, SV):
                result = self._divide(e, self.ev(e.left), y, null_on_zero=True)  # x / 1 where y = 0: zeroed,
                zeroed = arith.beaver_mul_many(self.s, [(limb, result.valid) for limb in result.limbs])  # not opened
                return SV(zeroed, result.valid, result.kind)
        return self._divide(e, self.ev(e.left), self.ev(e.right))

    def _divide(self, e: exp.Expression, a, b, null_on_zero: bool = False):
        """x / y (fixed point), x // y (rounded toward zero) and x % y (the sign of x), as DuckDB
        computes them, by a constant or by a secret (spu.functions). A counted row dividing by zero
        refuses the query (DuckDB gives ±infinity, NaN or an error there), or with `null_on_zero` gives NULL."""
        s = self.s
        for v in (a, b):
            _numeric_only(e, v)
        if isinstance(a, PV) and isinstance(b, PV):
            raise NotSupportedError(f"{e.sql(dialect='duckdb')}: a division of constants in secure computation")
        whole = not isinstance(e, exp.Div)
        if whole and "fixed" in (a.kind, b.kind):
            raise NotSupportedError(_division_rule(e, lambda column: "fixed"))
        if isinstance(b, PV):
            if not b.value:
                raise NotSupportedError(_division_rule(e, None))
            if not whole:
                a = self.to_fixed(a)
                ratio = decimal_ratio(b.value)
                if ratio is not None:  # an exact division of the encoding: |error| < 2^-F
                    numerator, denominator = ratio
                    quotient = functions.floor_div_public(s, a.value * denominator, abs(numerator))
                    quotient = quotient if numerator > 0 else -quotient
                    return SV([quotient.with_frac(a.value.frac)], a.valid, "fixed")
                return SV([arith.mul_public(s, a.value, 1.0 / float(b.value))], a.valid, "fixed")
            quotient = functions.truncated_divide_public(s, a.value, int(b.value))
            valid, divisor = a.valid, None
        else:
            a = self.secret(a, len(b.valid))
            valid = self.both_valid(a, b)
            if not whole:
                quotient, zero = functions.divide_secret(s, self.to_fixed(a).value, b.value)
                return SV([quotient], self._zero_divisors(e, zero, valid, null_on_zero), "fixed")
            quotient, zero = functions.truncated_divide_secret(s, a.value, b.value)
            valid = self._zero_divisors(e, zero, valid, null_on_zero)
            divisor = b.value
        if isinstance(e, exp.IntDiv):
            return SV([quotient], valid, "int")
        taken = quotient * int(b.value) if divisor is None else arith.beaver_mul(s, quotient, divisor)
        return SV([a.value - taken], valid, "int")

    def _zero_divisors(self, e: exp.Expression, zero: ArithShare, valid: ArithShare, null_on_zero: bool) -> ArithShare:
        """The quotient's validity: NULL where the divisor is 0 (`null_on_zero`), else unchanged after refusing
        the query if a counted row divides by zero."""
        dividing_by_zero = arith.beaver_mul(self.s, zero, valid)
        if null_on_zero:
            return valid - dividing_by_zero
        self._refuse_counted(e, dividing_by_zero, "a row divides by zero (DuckDB gives ±infinity, NaN or an error, "
                                                  "which the SPU cannot hold); exclude those rows, e.g. with "
                                                  "NULLIF(divisor, 0)")
        return valid

    def _refuse_counted(self, e: exp.Expression, bad: ArithShare, why: str) -> None:
        """Open how many counted rows that reach `e` have a 1 in `bad`, and refuse if any does. Rows are
        counted by the stage's current weight where it is known for them (a WHERE's earlier conjuncts, a
        join's matches, HAVING), times the secret bit of `e`'s position (`spu.reach`: the CASE branch taken,
        the AND / OR operand the left leaves open, ...), so a row that does not reach `e` never fails it, as
        in PostgreSQL. What opens is that one count (0 unless the query fails): nothing about the other rows.
        Rounds: ceil(log2(k + 2)) products for k factors (one outside any branch), one opening."""
        bad = self.reach.counted(bad, self.weight)
        (opened,) = self.s.open_many(arith=[arith.total(bad).data])
        if int(opened[0]):
            raise DataError(f"{e.sql(dialect='duckdb')}: {why}")

    def _math(self, e: exp.Expression):
        """SQRT, LN, LOG, EXP and POWER (a whole constant exponent by products, any other by `_power`; accuracy in
        docs/architecture.md). Where DuckDB gives NaN or ±infinity (SQRT of a negative, LN of a number
        <= 0) a counted row refuses the query."""
        s = self.s
        argument, base = (e.expression, e.this) if isinstance(e, exp.Log) and e.expression is not None else \
            (e.this, None)
        v = self.ev(argument)
        _numeric_only(e, v)
        if isinstance(e, exp.Pow) and not whole_power(e):
            return self._power(e, v, self.ev(e.expression))
        if isinstance(v, PV):
            return PV(_math_public(e, float(v.value)), "fixed")
        if isinstance(e, exp.Pow):
            n = constant(e.expression)
            if n == 0:
                return SV([self.const(1.0, "fixed", len(v.valid)).value], v.valid, "fixed")
            multiply = (lambda a, b: arith.beaver_mul(s, a, b)) if v.kind == "int" else \
                (lambda a, b: arith.mul_wide(s, a, b))
            return SV([functions.power_integer(s, v.value, n, multiply)], v.valid, v.kind)
        x = self.to_fixed(v)
        zero = arith.public(s, np.zeros(len(x.valid), dtype=np.int64), x.value.frac)
        if isinstance(e, exp.Exp):
            return SV([functions.exp_fixed(s, x.value)], x.valid, "fixed")
        if isinstance(e, exp.Sqrt):
            negative = compare.less_than(s, x.value, zero, arith=True)
            self._refuse_counted(e, arith.beaver_mul(s, negative, x.valid),
                                 "the square root of a negative number (DuckDB gives NaN, which the SPU cannot hold)")
            return SV([functions.sqrt_fixed(s, x.value)], x.valid, "fixed")
        not_positive = compare.less_equal(s, x.value, zero, arith=True)
        self._refuse_counted(e, arith.beaver_mul(s, not_positive, x.valid),
                             "the logarithm of a number <= 0 (DuckDB gives -infinity or NaN, which the SPU cannot hold)")
        ln = functions.ln_fixed(s, x.value)
        scale = 1.0 if isinstance(e, exp.Ln) else 1.0 / math.log(constant(base) if base is not None else 10.0)
        return SV([ln if scale == 1.0 else arith.mul_public(s, ln, scale)], x.valid, "fixed")

    def _power(self, e: exp.Pow, base, exponent) -> SV | PV:
        """POWER(x, y) for an exponent other than a whole constant 0..62, as EXP(y * LN|x|)
        (spu.functions.power_fixed). DuckDB's NaN (a negative x to an exponent that may be fractional)
        and infinity (0 to a negative power, y * ln x beyond the fixed-point range) refuse the query
        where a counted row meets them; a negative x to a whole exponent (an integer or a whole
        constant) takes the exponent's parity as its sign."""
        _numeric_only(e, exponent)
        if isinstance(base, PV) and isinstance(exponent, PV):
            return PV(_math_public(e, float(base.value)), "fixed")
        rows = len((base if isinstance(base, SV) else exponent).valid)
        x, y = self.to_fixed(self.secret(base, rows)), self.secret(exponent, rows)
        whole = y.kind == "int" or (isinstance(exponent, PV) and float(exponent.value).is_integer())
        valid = self.both_valid(x, y)
        y = self.to_fixed(y)
        public = float(base.value) if isinstance(base, PV) and float(base.value) > 0 else None
        power, flags = functions.power_fixed(self.s, x.value, y.value, whole, public)
        reasons = {"negative": "a negative number to a fractional power (DuckDB gives NaN, which the SPU cannot hold)",
                   "pole": "zero to a negative power (DuckDB gives infinity, which the SPU cannot hold)",
                   "overflow": f"POWER beyond the SPU's fixed-point range (y * ln x >= {EXP_LIMIT:g})"}
        for name, bad in flags.items():
            self._refuse_counted(e, arith.beaver_mul(self.s, bad, valid), reasons[name])
        return SV([power], valid, "fixed")

    def _trig(self, e: exp.Expression):
        """SIN, COS, TAN, ASIN, ACOS, ATAN and ATAN2 (spu.functions; accuracy in docs/architecture.md). Where
        DuckDB gives NaN (ASIN / ACOS beyond ±1) or TAN is within 2^-8 of a pole (|tan x| > 2^8, which fixed
        point cannot give accurately) a counted row refuses the query."""
        s = self.s
        values = [self.ev(a) for a in (e.this, e.args.get("expression")) if a is not None]
        for v in values:
            _numeric_only(e, v)
        if all(isinstance(v, PV) for v in values):
            return PV(_trig_public(e, [float(v.value) for v in values]), "fixed")
        rows = next(len(v.valid) for v in values if isinstance(v, SV))
        args = [self.to_fixed(self.secret(v, rows)) for v in values]
        x, valid = args[0].value, args[0].valid if len(args) == 1 else self.both_valid(*args)
        if isinstance(e, (exp.Sin, exp.Cos)):
            sin, cos = functions.sin_cos_fixed(s, x)
            return SV([sin if isinstance(e, exp.Sin) else cos], valid, "fixed")
        if isinstance(e, exp.Tan):
            tan, near_pole = functions.tan_fixed(s, x)
            self._refuse_counted(e, arith.beaver_mul(s, near_pole, valid),
                                 "a row lies within 2^-8 of a pole of TAN (|tan x| > 256, beyond the SPU's fixed-point "
                                 "accuracy); exclude those rows")
            return SV([tan], valid, "fixed")
        if isinstance(e, (exp.Atan, exp.Atan2)):
            other = args[1].value if len(args) == 2 else self.const(1.0, "fixed", rows).value
            return SV([functions.atan2_fixed(s, x, other)], valid, "fixed")
        one = self.const(1.0, "fixed", 2 * rows).value
        beyond = compare.less_than(s, one, arith.concat([x, -x]), arith=True)  # x > 1 or -x > 1
        self._refuse_counted(e, arith.beaver_mul(s, beyond[:rows] + beyond[rows:], valid),
                             "an argument outside [-1, 1] (DuckDB gives NaN, which the SPU cannot hold)")
        root = functions.complement_root(s, x)
        angle = functions.atan2_fixed(s, x, root) if isinstance(e, exp.Asin) else functions.atan2_fixed(s, root, x)
        return SV([angle], valid, "fixed")

    def _geodist(self, e: exp.Anonymous) -> SV:
        """SCQL's GEODIST(lon1, lat1, lon2, lat2[, radius]) in degrees, radius 6371 (km) by default
        (spu.functions.geodist_fixed). A constant coordinate is shared as a public value."""
        values = [self.ev(a) for a in e.expressions]
        for v in values:
            _numeric_only(e, v)
        if all(isinstance(v, PV) for v in values):
            return PV(geodist_public(*(float(v.value) for v in values)), "fixed")
        rows = next(len(v.valid) for v in values if isinstance(v, SV))
        radius = values[4] if len(values) == 5 else PV(EARTH_RADIUS, "int")
        points = [self.to_fixed(self.secret(v, rows)) for v in values[:4]]
        valid = points[0].valid
        for v in points[1:]:
            valid = arith.beaver_mul(self.s, valid, v.valid)
        if isinstance(radius, SV):
            radius = self.to_fixed(radius)
            valid, radius_value = arith.beaver_mul(self.s, valid, radius.valid), radius.value
        else:
            radius_value = float(radius.value)
        distance = functions.geodist_fixed(self.s, *(p.value for p in points), radius_value)
        return SV([distance], valid, "fixed")

    def _rounding(self, e: exp.Expression):
        """ROUND(x[, d]) (halves away from zero), FLOOR(x), CEIL(x) as DuckDB computes them: integers and
        DECIMALs exactly (a DECIMAL keeps its scale, or takes d or 0 where that is smaller), fixed point
        exactly on its encoding (spu.functions)."""
        digits = rounding_digits(e)
        v = self.ev(e.this)
        if isinstance(v, PV):
            return PV(_round_public(type(e), v.value, digits), v.kind)
        if (scale := decimal_scale(v.kind)) is not None:
            return self._round_decimal(type(e), v, scale, digits)
        _numeric_only(e, v)
        s, x = self.s, v.value
        if v.kind == "int":
            if e.__class__ is not exp.Round or digits >= 0:
                return v
            return SV([functions.round_div_public(s, x, 10 ** -digits) * 10 ** -digits], v.valid, "int")
        if not isinstance(e, exp.Round):
            kernel = functions.floor_fixed if isinstance(e, exp.Floor) else functions.ceil_fixed
            self._refuse_near_a_boundary(e, x, kernel, 1)
            return SV([kernel(s, x)], v.valid, "fixed")
        if 10 ** digits >= 1 << s.frac_bits:  # finer than the encoding: x itself (|error| <= 2^-F)
            return v
        # scaled by 10^d exactly (an exact division of the raw encoding: 10^-d has no exact fixed point)
        scaled = x * 10 ** digits if digits >= 0 else functions.floor_div_public(s, x, 10 ** -digits)
        rounded = self._refuse_near_a_boundary(e, scaled.with_frac(x.frac), functions.round_fixed,
                                               10 ** max(digits, 0))
        back = functions.floor_div_public(s, rounded, 10 ** digits) if digits > 0 else rounded * 10 ** -digits
        return SV([back.with_frac(x.frac)], v.valid, "fixed")

    def _refuse_near_a_boundary(self, e: exp.Expression, y: ArithShare, kernel, scale: int) -> ArithShare:
        """kernel(y) (FLOOR, CEIL or ROUND of fixed point), after refusing the query with DataError if a
        counted row's y (the argument `e.this` times `scale` = 10^d) lies within its error of the kernel's
        boundary (an integer; for ROUND a half), so that it may round the other way than DuckDB's double
        and the answer would silently differ. The error is `spu.approximation.error_bound`'s: for an
        encoded value (a DOUBLE held to 2^-(F+1), more after arithmetic) the public `TIE_SLACK` units, a
        value exactly on the boundary (2.5, 3.0: exact in binary) being computed, and with d digits so fine
        that the slack reaches a quarter of the boundaries' spacing (10^d >= 2^(F-4)) the encoding cannot
        place any value: computed within its stated error (2^-16), unguarded, as before. For an approximate
        value (a kernel's: a quotient by a secret, SQRT, EXP, ...) each row's own bound, capped at two units
        (beyond every spacing), with no exemption on a boundary and no such limit. Rounds: two more kernels
        and three batched comparisons (one for an approximate value, and the bound's), one product, one
        opening."""
        s = self.s
        error = approximation.error_bound(self, e.this, len(y))
        if not isinstance(error, ArithShare):
            if TIE_SLACK * scale >= 1 << (y.frac - 2):
                return kernel(s, y)
            error = arith.public(s, np.full(y.shape, TIE_SLACK, dtype=np.int64))
            approximate = False
        else:
            cap = arith.public(s, np.full(y.shape, 2 << s.frac_bits, dtype=np.int64))
            error, approximate = compare.minimum(s, error, cap), True
        raw, slack = y.with_frac(0), error * scale
        moved = [ArithShare((raw - slack).data, y.frac), ArithShare((raw + slack).data, y.frac)]
        result, low, high = (kernel(s, value) for value in (y, *moved))
        straddles = compare.not_equal(s, low, high, arith=True)
        if not approximate:
            on_boundary = (compare.equal(s, result, y, arith=True) if kernel is not functions.round_fixed else
                           compare.equal(s, result - y, arith.public(s, np.full(y.shape, 0.5), y.frac), arith=True)
                           + compare.equal(s, y - result, arith.public(s, np.full(y.shape, 0.5), y.frac), arith=True))
            straddles = straddles - arith.beaver_mul(s, straddles, on_boundary)
        self._refuse_counted(e, straddles,
                             "a value lies within its error of a rounding boundary (a DOUBLE's fixed-point encoding, "
                             "or an approximate function's stated accuracy: docs/architecture.md), so it may round "
                             "the other way than DuckDB's double; round an exact value instead "
                             "(CAST(x AS DECIMAL(p, s)) first, or integer arithmetic), or round at one party")
        return result

    def _round_decimal(self, op, v: SV, scale: int, digits: int) -> SV:
        """ROUND / FLOOR / CEIL of a DECIMAL of scale s on its exact limb X = x * 10^s: the result's
        exact limb at scale min(s, max(d, 0)) (FLOOR and CEIL: 0), and its fixed-point limb from it."""
        s, exact = self.s, v.limbs[0]
        target = max(0, digits) if op is exp.Round else 0
        if op is exp.Round and digits >= scale:
            return v
        c = 10 ** (scale - target)
        if op is exp.Round:
            q = functions.round_div_public(s, exact, c if digits >= 0 else 10 ** (scale - digits))
            q = q * 10 ** -digits if digits < 0 else q
        elif op is exp.Floor:
            q = functions.floor_div_public(s, exact, c)
        else:
            q = -functions.floor_div_public(s, -exact, c)
        fixed = q.lshift(s.frac_bits)
        if target:
            fixed = functions.floor_div_public(s, fixed, 10 ** target)
        return SV([q, fixed.with_frac(s.frac_bits)], v.valid, f"decimal.{target}")

    def _like(self, e: exp.Like) -> SV:
        """x LIKE 'abc' (equality) or 'abc%' (a range of the text limbs: 'abc' <= x <= 'abc' + 0xFF...);
        any other constant pattern by `spu.like.like_match`."""
        v = self.secret(self.ev(e.this))
        width = len(v.limbs) * LIMB_BYTES
        tokens, refusal = _like_pattern(e)
        if tokens is None or v.kind != "text":
            raise NotSupportedError(refusal or f"{e.sql(dialect='duckdb')}: LIKE of {v.kind} values")
        bounds = like_bounds(e.expression.this, width) if _like_escape(e) is None else None
        if bounds is None:
            bit = like.like_match(self.s, v.limbs, tokens)
        elif bounds[0] == bounds[1]:  # no wildcard: equality
            bit = self._text_compare(exp.EQ, v, self._text_constant(bounds[0], len(v.valid)))
        else:
            lo, hi = (self._text_constant(raw, len(v.valid)) for raw in bounds)
            bit = arith.beaver_mul(self.s, self._text_compare(exp.GTE, v, lo), self._text_compare(exp.LTE, v, hi))
        if e.args.get("negate"):
            bit = self.ones(len(bit)) - bit
        return SV([bit], v.valid, "bool")

    def _text_constant(self, raw: bytes, n: int) -> SV:
        """Bytes as public text limbs (zero-padded, big-endian, as `values.text_limbs`)."""
        count = max(TEXT_LIMBS, -(-len(raw) // LIMB_BYTES))
        raw = raw.ljust(count * LIMB_BYTES, b"\0")
        limbs = [np.full(n, int.from_bytes(raw[k * LIMB_BYTES:(k + 1) * LIMB_BYTES], "big"), dtype=np.uint64)
                 for k in range(count)]
        return SV([arith.public(self.s, limb.astype(np.int64)) for limb in limbs], self.ones(n), "text")

    def _narrow(self, product: exp.Mul) -> bool:
        """Whether |product| < 2^(62-2F) is proven by the checked input limits: then a fixed-point
        product needs one truncation (`arith.mul`, 2 rounds) instead of `arith.mul_wide` (3)."""
        return self.ranges is not None and self.ranges.info(product)[1] <= 2.0 ** (62 - 2 * self.s.frac_bits)

    def _mul(self, a, b, narrow: bool = False):
        s = self.s
        for v in (a, b):
            _numeric_only("*", v)
        if isinstance(a, PV) and isinstance(b, PV):
            return PV(a.value * b.value, "fixed" if "fixed" in (a.kind, b.kind) else "int")
        if isinstance(a, PV):
            a, b = b, a
        if isinstance(b, PV):
            if b.kind == "fixed" and a.kind != "fixed":
                a = self.to_fixed(a)
            return SV([arith.mul_public(s, a.value, b.value)], a.valid, a.kind)
        if a.kind == "fixed" and b.kind == "fixed":
            x = (arith.mul if narrow else arith.mul_wide)(s, a.value, b.value)  # see spu.ranges
        else:
            x = arith.beaver_mul(s, a.value, b.value)
        kind = "fixed" if "fixed" in (a.kind, b.kind) else "int"
        return SV([x], self.both_valid(a, b), kind)

    def _compare(self, op, a, b, operands: tuple[exp.Expression, exp.Expression] | None = None) -> SV:
        """a op b as DuckDB compares them; of `operands` (the compared expressions) where one is an
        approximate value, after `_refuse_within_error`."""
        s = self.s
        if isinstance(a, PV) and isinstance(b, PV):
            raise NotSupportedError("a comparison of constants in secure computation")
        n = len(a.valid) if isinstance(a, SV) else len(b.valid)
        a, b = self._temporal_pair(a, b)
        if "text" in (a.kind, b.kind):
            a, b = self.secret(a, n), self.secret(b, n)
            if a.kind != b.kind:
                raise NotSupportedError("comparing text with a number in secure computation")
            bit = self._text_compare(op, a, b)
        else:
            x, y = self._compared_numbers(a, b, n)
            a, b = self.numeric_pair(self._as_fixed(a), self._as_fixed(b))
            if operands is not None and any(map(self.guards_comparison, operands)):
                self._refuse_within_error(operands, a, b)
            # randomness for the products below, requested now: its round trip overlaps the comparison's
            s.dealer.ahead("arith_triple", n)
            s.dealer.ahead("dabit", n)
            s.dealer.ahead("arith_triple", n)
            bits = 64 if x is not None else self.comparison_bits(operands, a.value.frac)  # exact limbs: 64
            x, y = (x if x is not None else a.value), (y if y is not None else b.value)
            if op in (exp.EQ, exp.NEQ):
                lt = (compare.equal if op is exp.EQ else compare.not_equal)(s, x, y)
            else:
                fn = {exp.GT: compare.greater_than, exp.GTE: compare.greater_equal, exp.LT: compare.less_than,
                      exp.LTE: compare.less_equal}[op]
                lt = fn(s, x, y, bits=bits)
            valid = self.both_valid(a, b)
            # the bit's B2A and its product with the validity in one round: the value is then 0 under NULL
            # already, so a filter's `truth` takes no product (two rounds after the comparison, as the B2A
            # and `both_valid` took, where `truth` took a third)
            (bit,) = compare.bits_times_many(s, [(lt, valid)])
            return SV([NullZeroed(bit.data, bit.frac)], valid, "bool")
        return SV([bit], self.both_valid(a, b), "bool")

    def comparison_bits(self, operands: tuple[exp.Expression, exp.Expression] | None, frac: int) -> int:
        """The width an ordering of two numbers compares on: |a - b| < 2^(bits - 2) in the ring (a
        bit of headroom over the sign, for fixed point's encoding errors) by the input limits the
        owners checked (`RangePlan.info`: published magnitude classes), so a comparison of two
        10-bit columns takes 4 rounds, not 6 (`boolean.less_equal_circuit`: log2 of the lane). 64
        where they prove less, inside an aggregate's argument (bounds of the kept rows only), or
        for other kinds than numbers."""
        if operands is None or self.ranges is None or self.ranges.weighted:
            return 64
        found = [self.ranges.info(e) for e in operands]
        if any(kind not in ("int", "fixed", "bool") for kind, _ in found):
            return 64
        bound = sum(b for _, b in found) * 2.0 ** frac
        if not bound < 2.0 ** 60:
            return 64
        return max(2, min(64, math.ceil(math.log2(bound + 1.0)) + 2))

    def _refuse_within_error(self, operands: tuple[exp.Expression, exp.Expression], a: SV, b: SV) -> None:
        """Refuse the query with DataError if a counted row with both operands valid has |a - b| within
        their combined error bound (`approximation.comparison_bound`), or a bound reaching `UNBOUNDED`:
        the SPU's approximations of a and b may then lie on the other side of each other than DuckDB's
        doubles, and the comparison would silently differ. Exact and encoded operands (a float bound)
        keep today's comparison. Rounds: one batched comparison, three products (and the weight's), one
        opening; the bound's own (`approximation`) besides."""
        s, n = self.s, len(a.valid)
        error = approximation.comparison_bound(self, *operands, n)
        if not isinstance(error, ArithShare):
            if error <= 2 * approximation.ENCODED:  # encodings and exact steps on them: compared as they are
                return
            error = arith.public(s, np.full(n, math.ceil(error), dtype=np.int64))
        gap = (self.to_fixed(a).value - self.to_fixed(b).value).with_frac(0)
        unbounded = arith.public(s, np.full(n, int(approximation.UNBOUNDED), dtype=np.int64))
        signs = compare.greater_equal(s, arith.concat([error + gap, error - gap, error - unbounded]),
                                      arith.public(s, np.zeros(3 * n, dtype=np.int64)), arith=True)
        above, below, beyond = _per_limb(signs, n)
        within, valid = arith.beaver_mul_many(s, [(above, below), (a.valid, b.valid)])
        doubtful = within + beyond - arith.beaver_mul(s, within, beyond)
        left, right = (x.sql(dialect="duckdb") for x in operands)
        self._refuse_counted(operands[0].parent or operands[0], arith.beaver_mul(s, doubtful, valid),
                             f"comparing {left} with {right}: a row's values lie within their error of each other "
                             "(an approximate function's stated accuracy: docs/architecture.md), so the SPU may take "
                             "the other side than DuckDB's doubles; compare a rounded value (ROUND(x, d) > c: its "
                             "guard is exact), or compare at one party")

    def _compared_numbers(self, a, b, n: int) -> tuple[ArithShare | None, ArithShare | None]:
        """The exact limbs that compare a DECIMAL with a DECIMAL or an integer as DuckDB does (both at the
        larger scale: 0.0501 > 0.05 although fixed point cannot tell them apart), else (None, None)."""
        parts = self._exact_operands(a, b)
        if parts is None:
            return None, None
        scale = max(part[1] for part in parts)
        return tuple(arith.public(self.s, np.full(n, x * 10 ** (scale - own), dtype=np.int64)) if isinstance(x, int)
                     else x * 10 ** (scale - own) for x, own in parts)

    def _temporal_pair(self, a, b):
        """Operands of a comparison as DuckDB compares them: a string constant beside a date or timestamp is
        cast to its type ('2024-01-31 10:00' < ts), a date beside a timestamp is taken at midnight."""
        kinds = (a.kind, b.kind)
        if "timestamp" in kinds and "date" in kinds:
            return self._as_timestamp(a), self._as_timestamp(b)
        for kind, parse in (("timestamp", _timestamp_literal), ("date", _date_literal)):
            if kind in kinds and "text" in kinds:
                text = a if a.kind == "text" else b
                value = parse(text.value) if isinstance(text, PV) else None
                if value is None:
                    shown = repr(text.value) if isinstance(text, PV) else "a text value"
                    raise NotSupportedError(f"comparing a {kind.upper()} with {shown} in secure computation: DuckDB "
                                            f"casts it to {kind.upper()}, and this is not one the SPU reads")
                return (PV(value, kind), b) if text is a else (a, PV(value, kind))
        return a, b

    def _text_compare(self, op, a: SV, b: SV) -> ArithShare:
        """Text compared as its limbs lexicographically, at the wider width: every limb's equality (and
        less-than) in one batched comparison whatever the width, then combined limb by limb."""
        s = self.s
        a, b = level_text(a, b)
        if op in (exp.GT, exp.LTE):
            a, b = b, a
        n, x, y = len(a.valid), arith.concat(a.limbs), arith.concat(b.limbs)
        eqs = _per_limb(compare.equal(s, x, y, arith=True), n)
        if op in (exp.EQ, exp.NEQ):
            same = eqs[0]
            for eq in eqs[1:]:
                same = arith.beaver_mul(s, same, eq)
            return same if op is exp.EQ else self.ones(len(same)) - same
        lts = _per_limb(compare.less_than(s, x, y, arith=True), n)
        less = lts[-1]
        for lt, eq in zip(reversed(lts[:-1]), reversed(eqs[:-1])):
            less = lt + arith.beaver_mul(s, eq, less)
        if op in (exp.LTE, exp.GTE):  # a <= b is not (b < a)
            return self.ones(len(less)) - less
        return less

    def _logic(self, e) -> SV:
        """NOT, AND, OR in SQL's three-valued logic: a NULL operand stays NULL unless the other decides
        (false AND NULL is false, true OR NULL is true); only WHERE, HAVING and CASE read NULL as false.
        The right operand is reached where the left does not decide (`spu.reach`), as PostgreSQL evaluates
        AND / OR left to right."""
        if isinstance(e, exp.Not):
            v = self._condition(self.ev(e.this))
            return SV([self.ones(len(v.valid)) - v.value], v.valid, "bool")
        left = self._condition(self.ev(e.left))
        with self.reach.within(functools.cache(lambda: self._undecided(left, isinstance(e, exp.And)))):
            right = self._condition(self.ev(e.right))
        return self._kleene(type(e), left, right)

    def _undecided(self, v: SV, conjunction: bool) -> ArithShare:
        """1 where `v` leaves `v AND x` open (v is TRUE or NULL), or `v OR x` (v is FALSE or NULL)."""
        true = self.truth(v)
        return self.ones(len(v.valid)) - (v.valid - true if conjunction else true)

    def _in_list(self, e: exp.In) -> SV:
        """x IN (a, b, ..) as x = a OR x = b .., NULLs included, in PostgreSQL's order (`in_list_order`), each
        item reached where no earlier one matched (`spu.reach`; NOT IN's `x <> a AND ..` stops at the same row)."""
        x = self.ev(e.this)
        acc, earlier = None, []
        for v in in_list_order(e.expressions):
            with self.reach.within(*earlier):
                eq = self._compare(exp.EQ, x, self.ev(v), (e.this, v))
            earlier.append(functools.cache(lambda eq=eq: self._undecided(eq, conjunction=False)))
            acc = eq if acc is None else self._kleene(exp.Or, acc, eq)
        return acc

    def _until_valid(self, arguments: list[exp.Expression]) -> list:
        """COALESCE's arguments' values, each reached where every earlier one is NULL (`spu.reach`), as
        PostgreSQL evaluates them (none after a non-NULL constant)."""
        values, earlier = [], []
        for a in arguments:
            with self.reach.within(*earlier):
                v = self.ev(a)
            values.append(v)
            if isinstance(v, SV):
                earlier.append(self.ones(len(v.valid)) - v.valid)
            elif v.value is not None:
                earlier.append(arith.public(self.s, np.zeros(self.n, dtype=np.int64)))
        return values

    def _condition(self, v) -> SV:
        """A boolean operand as a secret (value, validity) pair; anything else is refused."""
        v = self.secret(v)
        if v.kind != "bool":
            raise NotSupportedError("a condition in secure computation must be a comparison or a logical expression")
        return v

    def _kleene(self, op, a: SV, b: SV) -> SV:
        """a AND b / a OR b over (value, validity) pairs: the result is known where both are, or where
        one known operand decides it (false for AND, true for OR)."""
        s = self.s
        true_a, true_b = self.truth(a), self.truth(b)
        false_a, false_b = a.valid - true_a, b.valid - true_b
        if op is exp.And:
            known_true = arith.beaver_mul(s, true_a, true_b)
            known_false = false_a + false_b - arith.beaver_mul(s, false_a, false_b)
        else:
            known_true = true_a + true_b - arith.beaver_mul(s, true_a, true_b)
            known_false = arith.beaver_mul(s, false_a, false_b)
        return SV([known_true], known_true + known_false, "bool")

    def _mux(self, c: ArithShare, x: SV, y: SV) -> SV:
        x, y = self._aligned(x, y)
        if x.kind == "text":
            x, y = level_text(x, y)
        items = [(c, xl, yl) for xl, yl in zip(x.limbs, y.limbs)] + [(c, x.valid, y.valid)]
        out = compare.mux_many(self.s, items)
        return SV(out[:-1], out[-1], x.kind)

    def _typed_branches(self, values: list) -> list:
        """The values one CASE / IF / COALESCE chooses among as DuckDB types them together: a NULL of the
        others' kind, a text constant beside dates or timestamps one of them ('2024-01-01': DuckDB casts it,
        `_temporal_pair`)."""
        known = [v for v in values if not (isinstance(v, PV) and v.value is None)] or values
        kind = next((v.kind for v in known if isinstance(v, SV)), known[0].kind)
        temporal = next((v for v in known if v.kind in TEMPORAL), None)
        typed = []
        for v in values:
            if isinstance(v, PV) and v.value is None:
                v = PV(None, kind)
            elif temporal is not None and isinstance(v, PV) and v.kind == "text":
                v = self._temporal_pair(temporal, v)[1]
            typed.append(v)
        return typed

    def _aligned(self, x: SV, y: SV) -> tuple[SV, SV]:
        """Two results of one CASE / COALESCE in one kind, as DuckDB types them: DECIMALs and integers
        as a DECIMAL of the larger scale (exact), other numbers as fixed point, a date beside a timestamp
        at midnight."""
        if x.kind == y.kind:
            return x, y
        if {x.kind, y.kind} == set(TEMPORAL):
            return self._as_timestamp(x), self._as_timestamp(y)
        if "text" in (x.kind, y.kind):
            raise NotSupportedError("CASE mixing text and numbers in secure computation")
        scale = union_decimal_scale([x.kind, y.kind])
        if scale is None:
            return self.to_fixed(x), self.to_fixed(y)
        return self.rescaled(x, scale), self.rescaled(y, scale)

    def rescaled(self, v: SV, scale: int) -> SV:
        """An integer or a DECIMAL of a scale <= `scale` as DECIMAL(p, scale), exactly (a public factor)."""
        own = 0 if v.kind == "int" else decimal_scale(v.kind)
        if own == scale and v.kind != "int":
            return v
        fixed = v.limbs[1] if v.kind != "int" else self.to_fixed(v).value
        return SV([v.limbs[0] * 10 ** (scale - own), fixed], v.valid, f"decimal.{scale}")

    def _secret_value(self, v, n: int | None = None) -> SV:
        """`secret`, a DECIMAL literal as a DECIMAL (exact limb and fixed-point limb)."""
        if isinstance(v, PV) and v.exact is not None:
            n = self.n if n is None else n
            exact = arith.public(self.s, np.full(n, v.exact[0], dtype=np.int64))
            return SV([exact, self.const(v.value, "fixed", n).value], self.ones(n), f"decimal.{v.exact[1]}")
        return self.secret(v, n)

    def _extreme(self, e: exp.Expression):
        """GREATEST / LEAST as DuckDB: the largest (smallest) non-NULL argument, NULL only where every one is
        (`ignore_nulls` False, MySQL's: NULL where any is). Arguments in the kind DuckDB compares them in
        (`_temporal_pair`; integers and DECIMALs exactly, with DOUBLEs in fixed point), each further one
        taken where it is valid and beats the choice so far or that is NULL. An approximate argument needs
        no comparison guard: the value chosen lies within the larger of their errors of DuckDB's, whichever
        of two close values wins. Rounds: one comparison and one multiplexer per further argument."""
        op = exp.GT if isinstance(e, exp.Greatest) else exp.LT
        values = [self.ev(a) for a in [e.this, *e.expressions] if not isinstance(a, exp.Null)]
        if not values:
            return PV(None, "int")
        choice = values[0]
        for value in values[1:]:
            choice = self._extreme_of_two(op, choice, value)
        if isinstance(choice, PV) or e.args.get("ignore_nulls", True):
            return choice
        known = self.ones(len(choice.valid)) * int(len(values) == len(e.expressions) + 1)  # 0: a NULL argument
        for value in values:
            if isinstance(value, SV):
                known = arith.beaver_mul(self.s, known, value.valid)
        return SV(choice.limbs, known, choice.kind)

    def _extreme_of_two(self, op, choice, other):
        """`other` where it is valid and `other op choice` holds, or `choice` is NULL; else `choice`."""
        choice, other = self._temporal_pair(choice, other)
        if isinstance(choice, PV) and isinstance(other, PV):
            if choice.value is None or other.value is None:
                return choice if other.value is None else other
            wins = other.value > choice.value if op is exp.GT else other.value < choice.value
            return other if wins else choice
        n = len(choice.valid) if isinstance(choice, SV) else len(other.valid)
        choice, other = self._secret_value(choice, n), self._secret_value(other, n)
        beats = self.truth(self._compare(op, other, choice))
        vacant = other.valid - arith.beaver_mul(self.s, other.valid, choice.valid)
        return self._mux(beats + vacant, other, choice)

    def _case(self, e) -> SV:
        if isinstance(e, exp.If):
            branches, default = [(e.this, e.args["true"])], e.args.get("false")
        else:
            if e.this is not None:
                raise NotSupportedError("CASE x WHEN ... in secure computation: write CASE WHEN x = ...")
            branches, default = [(i.this, i.args["true"]) for i in e.args["ifs"]], e.args.get("default")
        truths, values, earlier = [], [], []  # each condition and value reached as PostgreSQL's CASE reaches it
        for cond, value in branches:  # (`spu.reach`): a condition where no earlier one held, its value where it holds
            with self.reach.within(*earlier):
                truths.append(self.truth(self.ev(cond)))
            with self.reach.within(*earlier, truths[-1]):
                values.append(self.ev(value))
            earlier.append(self.ones(len(truths[-1])) - truths[-1])
        with self.reach.within(*earlier):
            values.append(self.ev(default) if default is not None else PV(None, "int"))
        values = self._typed_branches(values)
        acc = self._secret_value(values.pop())
        for truth, value in reversed(list(zip(truths, values))):
            acc = self._mux(truth, self._secret_value(value), acc)
        return acc

    # -- aggregates -----------------------------------------------------------------------------
    def aggregate_inputs(self, nodes: list[exp.AggFunc], weight: ArithShare):
        """(kind, column) inputs of the group-by / totals, and how to finish each aggregate. Two product
        rounds for all aggregates (each value's weight, then the weighted values: `weighted`), one where
        every row counts (`weight` is `all_rows`: a value's weight is its validity). A guarded aggregate
        (`guarded_aggregates`) sums its rows' error bounds beside it, in the same round."""
        plan, inputs, limbs = [], [("sum", weight)], []  # input 0: the rows of each group
        guarded = self.guarded_aggregates() if nodes else set()
        values = [None if isinstance(node, exp.Count) and isinstance(node.this, exp.Star)
                  else self._argument(node, node.sql(dialect="duckdb") in guarded) for node in nodes]
        weights = iter(self.weighted(weight, [v.valid for v, _ in filter(None, values)]))
        for node, argument in zip(nodes, values):
            if argument is None:
                plan.append((node, "count", 0, None))
                continue
            v, row_error = argument
            w = next(weights)
            inputs.append(("sum", w))
            counted = len(inputs) - 1
            if row_error is not None:  # summed beside the aggregate: its group's error bound
                limbs.append((w, row_error))
                inputs.append(("sum", lambda p: p))
                plan.append((node, "error", counted, len(inputs) - 1))
            if decimal_scale(v.kind) is not None and isinstance(node, exp.Avg):  # fixed-point sum, then exact
                inputs += [self._aggregate_input(exp.Sum(), w, limb, limbs) for limb in reversed(v.limbs)]
                plan.append((node, "avg", counted, (len(inputs) - 2, "fixed", len(inputs) - 1, decimal_scale(v.kind))))
            elif decimal_scale(v.kind) is not None and isinstance(node, (exp.Sum, exp.Min, exp.Max)):
                plan.append((node, "sum" if isinstance(node, exp.Sum) else "extreme", counted,
                             (len(inputs), v.kind, len(inputs) + 1)))
                inputs += [self._aggregate_input(node, w, limb, limbs) for limb in v.limbs]  # exact, then fixed
            elif isinstance(node, exp.Count):
                plan.append((node, "count", counted, None))
            elif isinstance(node, (exp.Sum, exp.Avg)):
                inputs.append(self._aggregate_input(exp.Sum(), w, v.value, limbs))
                kind = "int" if v.kind == "bool" else v.kind  # SUM of booleans counts the true ones, as in DuckDB
                plan.append((node, "avg" if isinstance(node, exp.Avg) else "sum", counted, (len(inputs) - 1, kind)))
            elif isinstance(node, (exp.Min, exp.Max)) and v.kind == "text":
                self.text_extremes.append((isinstance(node, exp.Max), w, v.limbs))
                plan.append((node, "text_extreme", counted, len(self.text_extremes) - 1))
            else:
                bits = self.provenance_bits.get(node.this.name) if isinstance(node.this, exp.Column) else None
                inputs.append(self._aggregate_input(node, w, v.value, limbs, bits))
                plan.append((node, "extreme", counted, (len(inputs) - 1, v.kind)))
                if bits is not None:  # values and fill in [-2^(b-1), 2^(b-1)]: differences below 2^b
                    self.input_bits[len(inputs) - 1] = bits + 1
        products = iter(arith.beaver_mul_many(self.s, limbs))
        return [(kind, column if isinstance(column, ArithShare) else column(next(products)))
                for kind, column in inputs], plan

    def _argument(self, node: exp.AggFunc, guarded: bool = False) -> tuple[SV, ArithShare | None]:
        """The secret value an aggregate takes and, where `guarded`, its per-row error bound (`_with_error`);
        refused by name where the SPU does not aggregate it."""
        if isinstance(node.this, exp.Distinct):
            raise NotSupportedError("COUNT(DISTINCT ...) in secure computation")
        if not isinstance(node, (exp.Count, exp.Sum, exp.Avg, exp.Min, exp.Max)):
            raise NotSupportedError(f"{node.sql()} in secure computation")
        v, bound = self._with_error(node.this) if guarded else (self.secret(self.ev(node.this)), None)
        if (isinstance(node, (exp.Sum, exp.Avg)) and decimal_scale(v.kind) is None
                and v.kind not in ("int", "fixed") and not (v.kind == "bool" and isinstance(node, exp.Sum))):
            raise NotSupportedError(f"{node.sql(dialect='duckdb')}: {type(node).__name__.upper()} of "
                                    f"{v.kind} values in secure computation")
        return v, bound

    def weighted(self, weight: ArithShare, valid: list[ArithShare]) -> list[ArithShare]:
        """weight * each validity, in one product round; none where every row counts (`all_rows`)."""
        if weight is self.all_rows:
            return list(valid)
        return arith.beaver_mul_many(self.s, [(weight, v) for v in valid])

    def guarded_aggregates(self) -> set[str]:
        """The SUMs and AVGs of an amplified encoding (`approximation.amplified_encoding`: a product with a
        DOUBLE factor) that a guarded comparison or rounding of this stage's outputs or HAVING reads: their
        error grows with the factors' magnitudes and the rows summed, so `aggregate_inputs` sums each row's
        bound beside them. Others (revealed or sorted only) pay nothing."""
        sqls = [sql for _, sql in getattr(self.step, "outputs", ())] + [getattr(self.step, "having", None) or "TRUE"]
        return {agg.sql(dialect="duckdb") for e in map(_parse, sqls) for node in e.walk()
                if approximation.is_rounding(node) or (isinstance(node, (*COMPARISONS, exp.In, exp.Nullif))
                                                       and self.guards_comparison(node))
                for agg in node.find_all(exp.Sum, exp.Avg)
                if approximation.amplified_encoding(agg.this) or self.sums_doubles(agg)}

    def guards_comparison(self, e: exp.Expression) -> bool:
        """Whether a comparison of (or with) `e` is guarded against its error (`_refuse_within_error`): an
        approximate value, an amplified encoding, or a SUM of DOUBLEs (`sums_doubles`)."""
        return approximation.needs_comparison_guard(e) or any(map(self.sums_doubles, e.find_all(exp.Sum, exp.Avg)))

    def sums_doubles(self, agg: exp.Expression) -> bool:
        """Whether a SUM adds DOUBLEs held in fixed point: each row's encoding errs by up to half a unit, so n
        rows' sum errs by up to n / 2 units (a fixed slack would let a comparison flip unseen); its rows'
        bounds are summed beside it where it is compared or rounded (`aggregate_inputs`). An AVG's mean errs
        by no more than its worst row (and its division's 2 units): the encoding's slack covers it."""
        kinds = {name: v.kind for name, v in self.cols.items()}
        return isinstance(agg, exp.Sum) and \
            static_kind(agg.this, lambda c: kinds.get(c.name)) == "fixed"

    def _with_error(self, e: exp.Expression) -> tuple[SV, ArithShare | None]:
        """(e's value, its per-row error bound against DuckDB's doubles in ring units, an integer share, or
        None where e is not fixed point: exact, a DECIMAL's limbs): `approximation.error_bound` over the
        values of e's nodes, remembered while e is evaluated as under a rounding (`guarded_aggregates`)."""
        self.rounding_depth += 1
        try:
            v = self.secret(self.ev(e))
            bound = approximation.error_bound(self, e, len(v.valid)) if v.kind == "fixed" else None
        finally:
            self.rounding_depth -= 1
            if not self.rounding_depth:
                self.values.clear()
                self.error_bounds.clear()
        if isinstance(bound, float):
            bound = arith.public(self.s, np.full(len(v.valid), math.ceil(bound), dtype=np.int64))
        return v, bound

    def _aggregate_input(self, node: exp.AggFunc, w: ArithShare, limb: ArithShare, products: list,
                         bits: int | None = None) -> tuple:
        """One limb's input of SUM (its weighted value) or MIN / MAX (its value, the fill where the row
        does not count: beyond every value, 2^(bits-1) where they are known in [0, 2^(bits-1))): (kind, a
        function of the product w * (limb - fill)), the product appended to `products` for one batched
        round (`aggregate_inputs`)."""
        if isinstance(node, exp.Sum):
            products.append((w, limb))
            return "sum", lambda p: p.with_frac(limb.frac)
        take_max = isinstance(node, exp.Max)
        beyond = SENTINEL if bits is None else 1 << (bits - 1)
        # the sentinel in ring units whatever the scale (scaling it by 2^frac would wrap to 0)
        fill = arith.public(self.s, np.full(len(w), -beyond if take_max else beyond, dtype=np.int64))
        fill = ArithShare(fill.data, limb.frac)
        products.append((w, limb - fill))  # w ? limb : fill = fill + w (limb - fill)
        return ("max" if take_max else "min"), lambda p: fill + p.with_frac(limb.frac)

    def text_extreme_limbs(self, group_keys=(), key_bits=None) -> list[ArithShare]:
        """MIN/MAX of text per group, at each group's last sorted row (where `group_by` puts its
        aggregates): one oblivious sort by (group keys, weight, value), the value descending for MIN,
        so a group's last row holds the extreme of its weighted rows (text limbs compare
        lexicographically, as ORDER BY does). Returns the limbs of every text MIN/MAX, in order."""
        out = []
        for take_max, w, limbs in self.text_extremes:
            keys = [*group_keys, w, *limbs]
            desc = [False] * (len(group_keys) + 1) + [not take_max] * len(limbs)
            bits = None if key_bits is None else [*key_bits, 2, *[64] * len(limbs)]
            out += relational.sort(self.s, keys, [], desc, key_bits=bits)[0][-len(limbs):]
        return out

    def count_distinct(self, node: exp.Count, weight: ArithShare) -> SV:
        """COUNT(DISTINCT x) over all rows: sort (weight, x) obliviously, count where a new run of a
        counted value starts. Reveals nothing but the row count."""
        args = node.this.expressions
        if len(args) != 1:
            raise NotSupportedError("COUNT(DISTINCT a, b) in secure computation")
        v = self.secret(self.ev(args[0]))
        return SV([self.distinct_total(self.weighted(weight, [v.valid])[0], compared_limbs(v))], self.ones(1), "int")

    def distinct_total(self, weight: ArithShare, limbs: list[ArithShare], bits: tuple[int, ...] | None = None
                       ) -> ArithShare:
        """The number of distinct values among the rows of weight 1 (`distinct_totals`)."""
        return self.distinct_totals(weight, limbs, bits)[0]

    def distinct_totals(self, weight: ArithShare, limbs: list[ArithShare], bits: tuple[int, ...] | None = None,
                        summed: tuple[ArithShare, ...] = ()) -> tuple[ArithShare, list[ArithShare]]:
        """(the number of distinct values among the rows of weight 1, each `summed` limb's sum over one row
        of each: SUM(DISTINCT x)): sort (weight, value) carrying `summed`, count run starts (+ one product
        round with `summed`). `bits`: the limbs' widths where known (`relational.Counted`), compared packed."""
        keys = [weight, *limbs]
        sorted_keys, carried = relational.sort(self.s, keys, list(summed), [False] * len(keys),
                                               key_bits=None if bits is None else [2, *bits])
        starts = relational.neighbour_starts(self.s, sorted_keys)
        first = arith.beaver_mul(self.s, starts, sorted_keys[0])
        added = arith.beaver_mul_many(self.s, [(first, c) for c in carried]) if carried else []
        return arith.total(first), [arith.total(a.with_frac(c.frac)) for a, c in zip(added, carried)]

    # -- the group threshold ------------------------------------------------------------------
    def branch_weights(self, weight: ArithShare) -> list[ArithShare]:
        """The weight restricted to each protected UNION ALL branch's rows (public positions: local)."""
        out, offsets = [], np.cumsum([0] + [self.union_rows[i] for i in sorted(self.union_rows)])
        for branch in self.step.branch_rows:
            inside = np.zeros(len(weight), dtype=np.uint64)
            inside[offsets[branch]:offsets[branch + 1]] = 1
            out.append(weight * inside)
        return out

    def provenance(self, weight: ArithShare) -> tuple[list[relational.Counted], list[ArithShare]]:
        """The provenance of each protected owner's relation whose rows may repeat, as counted: its
        base row number (of the width `provenance_bits` knows, if any), and the row weight where it is
        not NULL (a LEFT JOIN's unmatched rows are none of that owner's rows); and the weights alone of
        those whose rows appear once at most (their distinct rows are their weighted rows: no sort, so
        the traffic stays a function of the sizes)."""
        columns = list(self.step.distinct_rows)
        weights = dict(zip(columns, self.weighted(weight, [self.cols[c].valid for c in columns])))
        bits = {c: (self.provenance_bits[c],) if c in self.provenance_bits else None for c in weights}
        counted = [c for c in weights if c not in self.owner_counted]
        return ([relational.Counted(weights[c], (self.cols[c].value,), bits[c]) for c in counted if c not in self.once],
                [weights[c] for c in counted if c in self.once])

    def finish_aggregates(self, plan, results: list[ArithShare], counts_are_bits: bool = False,
                          nonempty: list[ArithShare] | None = None) -> None:
        """Each aggregate from its group's inputs (`aggregate_inputs`); `counts_are_bits`: every count is 0 or
        1 (a group of one row: `secret_relation._per_row`), so it is its own nonempty bit (no comparison).
        `nonempty`: the [count > 0] bits of `tested_columns(plan)`, where the caller tested them with its
        group threshold (`count_tests`); else they are tested here, all in one comparison."""
        s = self.s
        tested = [] if counts_are_bits else tested_columns(plan)
        if nonempty is None:
            nonempty = compare.positive_many(s, [results[c] for c in tested])
        nonempty_of = dict(zip(tested, nonempty))
        for node, kind, counted, value in plan:
            count = results[counted]
            nonempty, n = count if counts_are_bits else nonempty_of.get(counted), len(count)
            if kind == "count":
                self.aggs[node.sql(dialect="duckdb")] = SV([count], self.ones(n), "int")
            elif kind == "error":  # the summed per-row bounds of a SUM / AVG (`aggregate_inputs`)
                self.aggregate_errors[node.sql(dialect="duckdb")] = results[value]
            elif kind in ("sum", "extreme"):  # a decimal's exact and fixed-point limbs: value[2:]
                limbs = [results[i] for i in (value[0], *value[2:])]
                self.aggs[node.sql(dialect="duckdb")] = SV(limbs, nonempty, value[1])
            elif kind == "text_extreme":  # appended last, in order
                first = len(results) - sum(len(limbs) for _, _, limbs in self.text_extremes[value:])
                width = len(self.text_extremes[value][2])
                self.aggs[node.sql(dialect="duckdb")] = SV(results[first:first + width], nonempty, "text")
            else:  # AVG = SUM / COUNT, with COUNT 0 giving NULL
                total = results[value[0]]
                if total.frac == 0:
                    total = ArithShare(total.data * np.uint64(1 << s.frac_bits), s.frac_bits)
                safe = count + (self.ones(n) - nonempty)  # divide by 1 where the group is empty
                self.check_range(total, AVG_LIMIT)
                self.checked.append(node.sql(dialect="duckdb"))
                quotient = total if counts_are_bits else self.quotient(total, safe)  # a row's AVG is its value
                self.aggs[node.sql(dialect="duckdb")] = self.exact_average(node, quotient, nonempty, safe, results, value)

    def quotient(self, total: ArithShare, count: ArithShare) -> ArithShare:
        """total / count in fixed point, refined once: the (small) remainder divided again, so the error
        is ~2^-F absolute."""
        quotient = compare.divide(self.s, total, count)
        remainder = total - arith.beaver_mul(self.s, quotient, count)
        return quotient + compare.divide(self.s, remainder, count)

    def exact_average(self, node, quotient: ArithShare, nonempty: ArithShare, count: ArithShare, results, value) -> SV:
        """AVG of a DECIMAL revealed as it is: the fixed-point quotient beside the exact one
        (`exact_division.long_divide` of the exact sum by count * 10^s), decoded to the nearest DOUBLE;
        in expressions, in a secret program (its AVG is a DOUBLE column) and where the exact division would
        not fit the ring, the fixed-point one."""
        approximate = SV([quotient], nonempty, "fixed")
        if len(value) < 4 or self.step is None or node.sql(dialect="duckdb") not in self.revealed_sql():
            return approximate
        scale = 10 ** value[3]
        largest = max(self.input_rows, 1) * scale
        if AVG_LIMIT * scale >= 2.0 ** MAGNITUDE_BITS or largest << RADIX_BITS >= 1 << MAGNITUDE_BITS:
            return approximate  # a scale or row count beyond the exact division: docs/architecture.md
        bits = fraction_bits(largest)
        limbs = long_divide(self.s, results[value[2]], count * scale, 63 - self.s.frac_bits, bits)
        return SV([quotient, *limbs], nonempty, f"quotient.{bits}")

    def revealed_sql(self) -> set[str]:
        """The revealed outputs' SQL, as aggregates are named in `aggs`."""
        return {_parse(self.step.outputs[i][1]).sql(dialect="duckdb") for i in self.step.reveal}

    def check_range(self, x: ArithShare, limit: float) -> None:
        """Remember a secret bit [|x| >= limit]; `assert_ranges` opens whether any is set, nothing else."""
        bound = arith.public(self.s, np.full(len(x), float(limit)), x.frac) if x.frac else arith.public(
            self.s, np.full(len(x), int(limit), dtype=np.int64))
        self.out_of_range.append(compare.greater_equal(self.s, compare.abs_(self.s, x), bound, arith=True))

    def assert_ranges(self) -> None:
        """Open one bit: was any AVG sum out of range? Refuse the query if so. How many were is never
        opened: with groups below the threshold it would count their rows' large sums. (Sort, group and
        window keys need no such check: `spu.ranges` bounds them through their owners' limits.)"""
        if not self.out_of_range:
            return
        count = sum((arith.total(b) for b in self.out_of_range[1:]), arith.total(self.out_of_range[0]))
        any_out = compare.greater_than(self.s, count, arith.public(self.s, np.zeros(1, dtype=np.int64)), arith=True)
        (opened,) = self.s.open_many(arith=[any_out.data])
        if int(opened[0]):
            names = ", ".join(dict.fromkeys(self.checked))
            raise DataError(f"a sum of {names} exceeds the range of the SPU's fixed-point division "
                            f"(|sum| < {AVG_LIMIT:g}); use SUM and COUNT instead")


def tested_columns(plan) -> list[int]:
    """The counted columns (`Stage.aggregate_inputs`' plan) whose groups are tested for emptiness, each
    once: SUM, AVG, MIN and MAX of no value are NULL; a COUNT needs no test (its value is the count)."""
    return sorted({counted for _, kind, counted, _ in plan if kind != "count"})


def _total(s: SpuSession, kind: str, column: ArithShare) -> ArithShare:
    """One aggregate input over all rows. No rows: SUM's 0, and for MIN/MAX the fill (its count, 0,
    makes the aggregate NULL)."""
    if kind == "sum":
        return arith.total(column)
    if len(column) == 0:
        fill = arith.public(s, np.array([SENTINEL if kind == "min" else -SENTINEL], dtype=np.int64))
        return ArithShare(fill.data, column.frac)
    return compare.min_all(s, column) if kind == "min" else compare.max_all(s, column)


def _at_least(s: SpuSession, counts: list[ArithShare], k: int, times: ArithShare | None = None,
              most: int | None = None) -> ArithShare:
    """0/1 share: every count (of a group, or of the whole relation) is at least k, times `times` if
    given (`count_tests`)."""
    return count_tests(s, counts, k, (), times, most)[0]


def count_tests(s: SpuSession, counts: list[ArithShare], k: int, tested: list[ArithShare] = (),
                times: ArithShare | None = None, most: int | None = None) -> tuple[ArithShare, list[ArithShare]]:
    """(every count >= k, times `times` if given; [t > 0] of each tested count), 0/1 integer shares
    (no counts: `times` as it is).
    The group threshold (one count per protected owner) beside the empty-group tests (SUM of no value
    is NULL) of the same rows: one comparison of them all side by side, on the bits that `most`, the
    largest a count can be, needs (64 without); the counts' ANDs in a balanced tree; then ONE round
    for every B2A and the product with `times` (`compare.bits_times_many`). Rounds: C + ceil(log2
    len(counts)) + 1, C for 2 parties log2 of the comparison's lane (6 on 64 bits; counts of at most
    10^5 rows: 5, 10^4: 4), 2 more for 3 parties; was C + len(counts) on 64 bits for the threshold,
    + 1 for its product and C + 1 more for the tests (tests/test_spu_outside_rounds.py). With no
    threshold (k <= 0) the counts are not compared (a count is never negative): 0 rounds without
    tested columns, C + 1 with."""
    if k <= 0 and counts:  # no threshold: a count (a sum of 0/1 weights) is always >= 0, nothing to compare
        n = len(counts[0])
        every = times if times is not None else arith.public(s, np.ones(n, dtype=np.int64))
        return every, count_tests(s, [], 1, tested, most=most)[1] if tested else []
    xs = [*counts, *tested]
    if not xs:
        return times, []
    n = len(xs[0])
    if any(x.frac or len(x) != n for x in counts) or any(len(x) != n for x in tested):
        raise ProgrammingError("count_tests: counts are integers of one length")
    bounds = np.concatenate([np.full(n, k if i < len(counts) else 1, dtype=np.uint64) for i in range(len(xs))])
    d = np.concatenate([x.data.ravel() for x in xs]) - (bounds if s.is_first else np.uint64(0))
    width = 64 if most is None else min(64, max(most, k, 1).bit_length() + 1)
    lt, _ = compare.compare_bits(s, d, want_eq=False, bits=width)  # raw t >= 1 is t > 0 at any scale
    at_least = lt ^ np.uint64(1) if s.is_first else lt
    parts = [at_least[i * n:(i + 1) * n] for i in range(len(xs))]
    every = [] if not counts else [boolean.and_tree_bits(s, parts[:len(counts)]).astype(np.uint64)
                                   if len(counts) > 1 else parts[0]]
    out = compare.bits_times_many(s, [*((BoolShare(bit, 1), times) for bit in every),
                                      *((BoolShare(bit, 1), None) for bit in parts[len(counts):])])
    return (out[0] if counts else times), out[len(every):]


def _columns(values: list[SV]) -> list[ArithShare]:
    return [limb for v in values for limb in (*v.limbs, v.valid)]


def _rebuild(flat: list[ArithShare], like: list[SV]) -> list[SV]:
    out, i = [], 0
    for v in like:
        k = len(v.limbs)
        out.append(SV(flat[i:i + k], flat[i + k], v.kind))
        i += k + 1
    return out


def canonical(s: SpuSession, values: list[SV]) -> list[SV]:
    """The values with every limb zeroed where the value is NULL (one product round), so equal keys
    and NULLs compare equal whatever an expression left under a NULL."""
    return canonical_weighted(s, values, [], None)[0]


def canonical_computed(s: SpuSession, stage, expressions: list[exp.Expression], values: list[SV],
                       rows: bool = True) -> list[SV]:
    """`canonical` of the values that an expression computed: an input column (`rows`: read on the stage's
    rows, before any aggregate) comes from its owner's encoding, which is zero under a NULL already, so a
    GROUP BY / ORDER BY of plain columns spends no product round."""
    computed = [i for i, e in enumerate(expressions)
                if not (rows and isinstance(e, exp.Column) and e.name in stage.cols)]
    clean = iter(canonical(s, [values[i] for i in computed]) if computed else ())
    return [next(clean) if i in computed else v for i, v in enumerate(values)]


def canonical_weighted(s: SpuSession, values: list[SV], weighted: list[SV], row_valid: ArithShare | None
                       ) -> tuple[list[SV], list[tuple[ArithShare, SV]]]:
    """`canonical(values)`, and (row_valid * value valid, canonical value) of each of `weighted`: all
    in one product round."""
    everything = [*values, *weighted]
    pairs = [(limb, v.valid) for v in everything for limb in v.limbs]
    pairs += [(row_valid, v.valid) for v in weighted]
    got = iter(arith.beaver_mul_many(s, pairs))
    clean = [SV([next(got).with_frac(limb.frac) for limb in v.limbs], v.valid, v.kind) for v in everything]
    weights = list(got)
    return clean[:len(values)], list(zip(weights, clean[len(values):]))


def _sort_keys(v: SV, descending: bool, nulls_first: bool, s: SpuSession
               ) -> tuple[list[ArithShare], list[bool], list[int]]:
    """(keys, descending, `relational.sort`'s key widths): the 0/1 NULL key is 2 bits wide (packed
    with its neighbours and the tiebreak), the value's limbs any ring value."""
    ones = arith.public(s, np.ones(len(v.valid), dtype=np.int64))
    null_key = v.valid if nulls_first else ones - v.valid
    limbs = v.limbs[:1] if quotient_bits(v.kind) is not None else v.limbs  # an exact AVG by its fixed point
    return [null_key, *limbs], [False] + [descending] * len(limbs), [2] + [64] * len(limbs)


def refuse_unevaluated(step, kinds: dict[str, str]) -> None:
    """Refuse, before any share is made, what SPU_RULES does not evaluate: the planner checked the
    same table, so this fires only if a plan was built otherwise."""
    for sql in (*step.filters, *step.group_by, *([step.having] if step.having else []), *(e for _, e in step.outputs)):
        why = spu_refusal(_parse(sql), lambda column: kinds.get(column.name))
        if why is not None:
            raise NotSupportedError(why)


def run_stage(s: SpuSession, step, inputs, kinds: dict[str, str], n: int, union_rows: dict[int, int] | None = None,
              sides: dict | None = None, tag: str = "") -> tuple[list[SV], ArithShare | None]:
    """Evaluate the stage; returns the output values (rows compacted, sorted, limited) and, for an
    ungrouped aggregate, the 0/1 flag saying whether its single row may be revealed. An oblivious
    join's stage gets `sides` (my side index -> my relation) and the sides' row counts in `union_rows`."""
    refuse_unevaluated(step, {c: range_kind(k) for c, k in kinds.items()})
    ranges = input_limits(step, {c: range_kind(k) for c, k in kinds.items()}, n, s.frac_bits, _parse,
                          decimal_scales(kinds), dict(getattr(step, "bounds", ())))  # each owner checks against them
    limits = ranges.limits
    if step.secret_join:  # an oblivious join first: the match bit is the rows' starting weight
        cols, weight, n, many = joined_inputs(s, step, sides, kinds, union_rows, tag, limits)
        stage = Stage(s, step, n, ranges)
        stage.cols.update(cols)
        stage.once = {column for party, column in step.inputs if party == many}
    else:
        stage = _shared_inputs(s, step, inputs, kinds, n, union_rows, ranges)
        stage.union_rows = dict(union_rows or {}) if step.union else {}
        weight = stage.all_rows = stage.ones()  # every row counts, until a filter: `Stage.weighted`
    for sql in pg_filter_order(list(step.filters), _parse):  # each conjunct counts the rows the earlier keep
        stage.weight = weight
        truth = stage.truth(stage.ev(_parse(sql)))
        # the first filter's truth is the weight itself where every row counted (a product with public ones)
        weight = truth if weight is stage.all_rows else arith.beaver_mul(s, weight, truth)
    stage.weight = weight
    return _rest(s, step, stage, weight)


def _shared_inputs(s: SpuSession, step, inputs, kinds, n: int, union_rows, ranges: RangePlan) -> Stage:
    """Each party secret-shares its input columns (a join's aligned piece, or its UNION ALL branches),
    after checking all of them against their limits (so a refusal comes before any share)."""
    stage, limits = Stage(s, step, n, ranges), ranges.limits
    branches = step.union or tuple((party, "") for party in [None])
    key_columns = _group_key_columns(step)
    encoded_keys = {}  # at the keys' owner: (validity, limbs) of each key column, as shared
    owner_of = {column: party for party, column in step.inputs}
    renumbered = set() if step.union else {c for c in step.distinct_rows if kinds.get(c) == "int"}
    check_rows_once(step, inputs, s.me)
    stage.once = set(getattr(step, "rows_once", ()))
    encoded = {(index, column): encode(dense_rows(values) if column in renumbered else values, kinds[column],
                                       s.frac_bits, limits.get(column), column)
               for (index, column), values in inputs.items() if column in owner_of
               and step.compute.index(branches[index][0] if step.union else owner_of[column]) == s.index}
    stage.provenance_bits = {column: max(1, (n - 1).bit_length()) + 1 for column in renumbered}
    for party, column in step.inputs:
        kind = kinds[column]
        fracs = limb_fracs(kind, s.frac_bits)
        parts = []
        for index, (owner_name, _) in enumerate(branches):
            owner = step.compute.index(owner_name if step.union else party)
            rows = union_rows[index] if step.union else n
            mine = inputs.get((index, column)) if s.index == owner else None
            if mine is not None:
                limbs, valid = encoded[(index, column)]
                if (party, column) in key_columns:
                    encoded_keys[column] = (valid, limbs)
            shared = [arith.share_input(s, owner, limbs[k] if mine is not None else None, (rows,), fracs[k])
                      for k in range(limbs_of(kind))]
            parts.append((shared, arith.share_input(s, owner, valid if mine is not None else None, (rows,), 0)))
        limbs_out = [arith.concat([p[0][k] for p in parts]) for k in range(limbs_of(kind))]
        stage.cols[column] = SV(limbs_out, arith.concat([p[1] for p in parts]), value_kind(kind))
    if key_columns:  # the keys' owner numbers the groups: the sort compares one narrow code
        owner = step.compute.index(key_columns[0][0])
        code = group_code([inputs[(0, column)] for _, column in key_columns]) if s.index == owner else None
        if getattr(step, "one_hot_groups", 0):  # no sort: the owner keeps its numbers (`one_hot_group`)
            keys = one_hot_keys(code, [encoded_keys[column] for _, column in key_columns], step.one_hot_groups,
                                [column for _, column in key_columns]) if code is not None else None
            stage.owner_counted = owner_counted(step)
            counted = [distinct_per_group(code, inputs[(0, c)], step.one_hot_groups) for c in stage.owner_counted] \
                if code is not None else None
            stage.one_hot = (owner, code, keys, counted)
            return stage
        stage.group_code = (arith.share_input(s, owner, as_ring(code) if code is not None else None, (n,), 0),
                            max(1, (n - 1).bit_length()) + 1)
    return stage


def check_rows_once(step, inputs, me: str) -> None:
    """Each owner of a `rows_once` provenance column checks on its joined piece, before anything is shared,
    that none of its rows is joined twice: the plan counts its distinct rows as its weighted rows because
    the other join inputs are unique on their join keys, by shape or by a declared key, and a false
    declaration would inflate its count. A DataError then, never a wrong answer; it tells the computing
    parties nothing their PSI did not (each learns its partner's row count per common key)."""
    for party, column in step.inputs:
        if party == me and column in getattr(step, "rows_once", ()) and (0, column) in inputs:
            present = pc.drop_null(inputs[(0, column)])
            if pc.count_distinct(present).as_py() != len(present):
                raise DataError(f"the minimum group size counts {party}'s distinct rows as its joined rows, the "
                                f"other side of the join being unique on its join keys, but a row of {party} is "
                                "joined more than once: a key declared unique ([parties.NAME.unique]) repeats; "
                                "correct the data or remove the declaration")


def distinct_per_group(code: np.ndarray, provenance, groups: int) -> np.ndarray:
    """At the key owner: its distinct rows (non-NULL provenance values) in each of the `groups` groups of
    `code`, the group threshold's count of its own rows where they may repeat (`group_path.owner_counted`)."""
    column = provenance.combine_chunks() if isinstance(provenance, pa.ChunkedArray) else provenance
    valid = ~np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    values = np.asarray(column.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    pairs = np.unique(np.stack([code[valid], values[valid]], axis=1), axis=0) if valid.any() else np.zeros((0, 2), int)
    return np.bincount(pairs[:, 0], minlength=groups).astype(np.uint64)[:groups]


def one_hot_keys(code: np.ndarray, encoded: list[tuple[np.ndarray, list[np.ndarray]]], groups: int,
                 columns: list[str]) -> list[np.ndarray]:
    """At the keys' owner: each group's key words (validity, then limbs, per key), group g at row g,
    the rows past the groups present zero (they count no row, so the count tests drop them). More
    groups than the published bound means a key beyond its class: a DataError naming the columns, as
    the range check before sharing gives (the others learn only that the query was refused)."""
    present = int(code.max()) + 1 if len(code) else 0
    if present > groups:
        raise DataError(f"GROUP BY {', '.join(columns)}: {present} groups, more than the {groups} its published "
                        "magnitude classes allow: a key beyond its class, which its owner must publish anew")
    first = np.unique(code, return_index=True)[1]
    out = []
    for valid, limbs in encoded:
        for words in (valid, *limbs):
            column = np.zeros(groups, np.uint64)
            column[:present] = as_ring(np.asarray(words))[first]
            out.append(column)
    return out


def dense_rows(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A provenance column's base row numbers renumbered 0, 1, ... by their owner (NULLs kept): equal
    rows stay equal and distinct ones distinct, so the threshold counts the same, and the numbers lie
    below the stage's public row count, a width its sorts compare instead of 64 bits."""
    values = column.combine_chunks()
    numbers = pc.fill_null(values, 0).to_numpy(zero_copy_only=False)
    dense = np.unique(numbers, return_inverse=True)[1].reshape(-1).astype(np.int64)
    return pa.chunked_array([pa.array(dense, pa.int64(), mask=values.is_null().to_numpy(zero_copy_only=False))])


def _group_key_columns(step) -> list[tuple[str, str]]:
    """[(party, column)] of the GROUP BY keys when they are plain input columns of one party (not
    UNION branches): that party can number its groups itself. Else []."""
    if step.union or step.secret_join or not step.aggregate or not step.group_by:
        return []
    owner_of = {column: party for party, column in step.inputs}
    keys = [_parse(g) for g in step.group_by]
    if not all(isinstance(k, exp.Column) and k.name in owner_of for k in keys):
        return []
    if len({owner_of[k.name] for k in keys}) != 1:
        return []
    return [(owner_of[k.name], k.name) for k in keys]


def group_code(columns: list[pa.ChunkedArray]) -> np.ndarray:
    """Dense numbers in [0, rows) of the rows' keys, from the owner's exact values: equal exactly where
    GROUP BY finds them equal (NULLs one group, -0.0 and 0.0 one, NaNs one), so a DOUBLE key groups as in
    DuckDB although the SPU holds its values in fixed point (only their revealed values are approximate).
    The keys' owner computes them on its own rows."""
    codes = []
    for column in columns:
        values = column.combine_chunks()
        if pa.types.is_floating(values.type):
            values = pc.add(values, pa.scalar(0.0, values.type))  # -0.0 + 0.0 is 0.0
        codes.append(pc.dictionary_encode(values, null_encoding="encode").indices.to_numpy(zero_copy_only=False))
    if not codes or not len(codes[0]):
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)


def _with_uncompared(keys: list[SV], compared: list[ArithShare], uncompared: list[ArithShare]) -> list[ArithShare]:
    """Each key's (validity, limbs) in `key_cols` order, from its sorted compared limbs and the carried rest."""
    out, i, j = [], 0, 0
    for k in keys:
        c, r = 1 + len(compared_limbs(k)), len(k.limbs) - len(compared_limbs(k))
        out += [*compared[i:i + c], *uncompared[j:j + r]]
        i, j = i + c, j + r
    return out


def _rest(s: SpuSession, step, stage: Stage, weight: ArithShare) -> tuple[list[SV], ArithShare | None]:
    """Aggregate or window, order, limit: everything after the row weights are known."""
    n = stage.n
    outputs = [_parse(sql) for _, sql in step.outputs]
    flag = None
    if step.aggregate:
        having = _parse(step.having) if step.having else None
        nodes, seen = [], set()
        for e in [*outputs, *([having] if having is not None else [])]:
            for node in aggregates_in(e):
                if node.sql() not in seen and not any(a is not node and node in list(a.find_all(exp.AggFunc))
                                                     for a in nodes):
                    seen.add(node.sql())
                    nodes.append(node)
        distinct = [n for n in nodes if isinstance(n, exp.Count) and isinstance(n.this, exp.Distinct)]
        if distinct and step.group_by:
            raise NotSupportedError("COUNT(DISTINCT ...) with GROUP BY in secure computation is not supported yet")
        nodes = [n for n in nodes if not any(n is d for d in distinct)]
        distinct_counts = {d.sql(dialect="duckdb"): stage.count_distinct(d, weight) for d in distinct}
        agg_inputs, plan = stage.aggregate_inputs(nodes, weight)
        threshold = max(step.threshold, 1)
        provenance, once = stage.provenance(weight) if step.threshold else ([], [])
        branches = [*stage.branch_weights(weight), *once] if step.threshold else []
        if step.group_by:
            parsed = [_parse(g) for g in step.group_by]
            keys = canonical_computed(s, stage, parsed, [stage.secret(stage.ev(g)) for g in parsed])
            key_cols = [c for k in keys for c in (k.valid, *k.limbs)]
            # a DECIMAL key is compared on its exact limb; its fixed-point limb rides along (`compared_limbs`)
            compared = [c for k in keys for c in (k.valid, *compared_limbs(k))]
            uncompared = [limb for k in keys for limb in k.limbs[len(compared_limbs(k)):]]

            def group(aggs, within=()):
                if stage.group_code is not None:  # sort on the owner's code, the key values along
                    code, bits = stage.group_code
                    return relational.group_by(s, [code], aggs, key_bits=[bits], carry=key_cols, within=within)
                return relational.group_by(s, compared, aggs, carry=uncompared, within=within)

            if stage.one_hot is not None:  # no sort: G group rows, every one a group's (`one_hot_grouped`)
                group_keys, results, counts, last = one_hot_grouped(s, stage, key_cols, agg_inputs, provenance, branches)
            else:
                # the first protected provenance rides along the group sort; further ones sort on the group's rank
                grouped = group([*agg_inputs, *(("sum", b) for b in branches)], provenance)
                group_keys = grouped.carried if stage.group_code is not None else \
                    _with_uncompared(keys, grouped.keys, grouped.carried)
                results = grouped.aggregates[:len(agg_inputs)]
                if stage.group_code is not None:
                    results += stage.text_extreme_limbs([stage.group_code[0]], [stage.group_code[1]])
                else:
                    results += stage.text_extreme_limbs(compared)
                counts, last = [*grouped.distinct, *grouped.aggregates[len(agg_inputs):]], grouped.last
            # the threshold and the empty-group tests in one comparison on the group rows (counts <= n)
            keep, nonempty = count_tests(s, counts or [results[0]], threshold, [results[c] for c in tested_columns(plan)],
                                         times=last, most=max(n, len(last)))
            if having is None:
                # keep the groups first: AVG's divisions and range checks then run on the kept groups,
                # not on every sorted row (the compaction opens the same count either way)
                kept = relational.compact(s, keep, [*group_keys, *results, *nonempty])
                group_keys, results, nonempty = (kept[:len(group_keys)], kept[len(group_keys):len(kept) - len(nonempty)],
                                                 kept[len(kept) - len(nonempty):])
            stage.n = len(results[0])
            i = 0
            for g, k in zip(step.group_by, keys):
                stage.aggs[_parse(g).sql(dialect="duckdb")] = SV(group_keys[i + 1:i + 1 + len(k.limbs)],
                                                                 group_keys[i], k.kind)
                i += 1 + len(k.limbs)
            checks = len(stage.out_of_range)
            stage.finish_aggregates(plan, results, nonempty=nonempty)
            if having is not None:  # sorted rows, not groups: count only the kept groups' range checks
                stage.out_of_range[checks:] = [arith.beaver_mul(s, bit, keep) for bit in stage.out_of_range[checks:]]
            stage.weight = keep if having is not None else None  # the groups a refusal counts (`_refuse_counted`)
            if having is not None:  # HAVING first: the outputs are evaluated (and may fail) on the groups it keeps
                keep = stage.weight = arith.beaver_mul(s, keep, stage.truth(stage.ev(having)))
            values = [stage.secret(stage.ev(e)) for e in outputs]
            if having is not None:
                values = _rebuild(relational.compact(s, keep, _columns(values)), values)
        else:
            stage.n = 1
            totals = []
            for kind, column in agg_inputs:
                totals.append(_total(s, kind, column))
            totals += [limb[n - 1:] if n else arith.public(s, np.zeros(1, dtype=np.int64))
                       for limb in stage.text_extreme_limbs()]
            counts = [stage.distinct_total(c.weight, list(c.values), c.bits) for c in provenance]
            counts += [arith.total(b) for b in branches]
            flag, nonempty = count_tests(s, counts or [totals[0]], threshold if step.threshold else 0,
                                         [totals[c] for c in tested_columns(plan)], most=n)
            stage.finish_aggregates(plan, totals, nonempty=nonempty)
            stage.aggs.update(distinct_counts)
            stage.weight = flag
            if having is not None:  # HAVING first: the outputs are evaluated on the row it keeps
                flag = stage.weight = arith.beaver_mul(s, flag, stage.truth(stage.ev(having)))
            values = [stage.secret(stage.ev(e), 1) for e in outputs]
    else:
        windows = [e for e in outputs if isinstance(e, exp.Window)]
        plain = [stage.secret(stage.ev(e)) if not isinstance(e, exp.Window) else None for e in outputs]
        window_keys = []
        if windows:
            order = windows[0].args.get("order")
            if any(w.args.get("partition_by") or w.args.get("order") != order for w in windows) or order is None:
                raise NotSupportedError("secure window functions need one common OVER (ORDER BY ...) and no PARTITION BY")
            window_keys = canonical_computed(s, stage, [o.this for o in order.expressions],  # NULLs tie
                                             [stage.secret(stage.ev(o.this)) for o in order.expressions],
                                             rows=not step.aggregate)
        carried = [v for v in plain if v is not None] + window_keys
        if step.filters or step.secret_join:
            carried = _rebuild(relational.compact(s, weight, _columns(carried)), carried)
        stage.n = len(carried[0].valid) if carried else n
        if windows:
            keys, desc, bits = [], [], []
            for o, k in zip(windows[0].args["order"].expressions, carried[len(carried) - len(window_keys):]):
                kk, dd, bb = _sort_keys(k, bool(o.args.get("desc")), bool(o.args.get("nulls_first")), s)
                keys += kk
                desc += dd
                bits += bb
            sorted_keys, payload = relational.sort(s, keys, _columns(carried), desc, key_bits=bits)
            carried = _rebuild(payload, carried)
            rank_keys = sorted_keys
        values, it = [], iter(carried)
        for e, v in zip(outputs, plain):
            if v is not None:
                values.append(next(it))
                continue
            func = e.this
            if isinstance(func, exp.RowNumber):
                number = relational.row_number(s, stage.n)
            elif isinstance(func, exp.Rank):
                number = relational.rank(s, rank_keys)
            elif isinstance(func, exp.DenseRank):
                number = relational.dense_rank(s, rank_keys)
            else:
                raise NotSupportedError(f"{func.sql()} as a secure window function")
            values.append(SV([number], stage.ones(stage.n), "int"))

    if step.order and (flag is None) and values and len(values[0].valid) > 1:
        keys, desc, bits = [], [], []
        ordered = canonical_computed(s, stage, [outputs[index] for index, _, _ in step.order],  # NULLs tie
                                     [values[index] for index, _, _ in step.order], rows=not step.aggregate)
        for v, (_, descending, nulls_first) in zip(ordered, step.order):
            kk, dd, bb = _sort_keys(v, descending, nulls_first, s)
            keys += kk
            desc += dd
            bits += bb
        first = None if step.limit is None else (step.offset or 0) + step.limit  # top-k: no full sort
        _, payload = relational.sort(s, keys, _columns(values), desc, key_bits=bits, first=first)
        values = _rebuild(payload, values)
    stage.assert_ranges()
    if step.limit is not None or step.offset:
        count = step.limit if step.limit is not None else 1 << 62
        values = _rebuild(relational.limit(_columns(values), count, step.offset or 0), values)
        if flag is not None:  # an ungrouped aggregate's one row: its reveal flag goes with it (LIMIT 0, OFFSET 1)
            (flag,) = relational.limit([flag], count, step.offset or 0)
    return values, flag


def one_hot_grouped(s: SpuSession, stage: Stage, key_cols: list[ArithShare], agg_inputs, provenance, branches
                    ) -> tuple[list[ArithShare], list[ArithShare], list[ArithShare], ArithShare]:
    """GROUP BY without a sort (`one_hot_group`): every aggregate input and counted branch summed per group
    in one round, the keys shared by their owner (0 rounds): (group keys, aggregates, counts, the rows that
    are groups: all G). The planner chose it only for sums and no distinct-row threshold (`planner.group_path`)."""
    owner, code, keys, counted = stage.one_hot
    groups = stage.step.one_hot_groups
    if provenance or stage.text_extremes or any(kind != "sum" for kind, _ in agg_inputs):
        raise ProgrammingError("one-hot group sums planned for aggregates that are not sums")
    sums = one_hot_group_sums(s, owner, code, groups, [c for _, c in agg_inputs] + list(branches))
    shared = [arith.share_input(s, owner, keys[i] if keys is not None else None, (groups,), c.frac)
              for i, c in enumerate(key_cols)]
    own = [arith.share_input(s, owner, counted[i] if counted is not None else None, (groups,), 0)
           for i in range(len(stage.owner_counted))]  # the owner's own distinct rows per group (0 rounds)
    return shared, sums[:len(agg_inputs)], sums[len(agg_inputs):] + own, stage.ones(groups)


def conform(stage: Stage, step, shown: list[SV]) -> list[SV]:
    """The revealed outputs in the kinds DuckDB gives them (`step.kinds`): integers where a number
    of DuckDB's is fractional become fixed point, 0/1 integers of a BOOLEAN column become booleans;
    any other difference is refused, never revealed as a value of the wrong type."""
    if not step.kinds:
        return shown
    out = []
    for (name, sql), v, want in zip([step.outputs[i] for i in step.reveal], shown, step.kinds):
        if v.kind == want or want == "any":  # "any": DuckDB's NULL type, a constant NULL of any kind
            out.append(v)
        elif (decimal_scale(v.kind) is not None or quotient_bits(v.kind) is not None) and want == "fixed":
            out.append(v)  # an exact DECIMAL, or an exact AVG as a DOUBLE: as DuckDB types them
        elif (v.kind, want) == ("int", "fixed"):
            out.append(stage.to_fixed(v))
        elif (v.kind, want) == ("int", "bool"):
            out.append(SV(v.limbs, v.valid, "bool"))
        elif (v.kind, want) == ("decimal.0", "int"):  # a HUGEINT (an integer SUM at its owner) arrives as
            out.append(SV([v.limbs[0]], v.valid, "int"))  # DECIMAL(38, 0): its exact limb is the integer
        elif (v.kind, want) == ("date", "timestamp"):  # date ± INTERVAL n DAY / MONTH: midnight of the day
            out.append(stage._as_timestamp(v))
        else:
            raise DataError(f"{sql}: secure computation gives a {v.kind} value where DuckDB gives {want}; refused "
                            "rather than answered with the wrong type")
    return out


def reveal_outputs(s: SpuSession, step, values: list[SV], flag: ArithShare | None,
                   rows: int | None = None) -> pa.Table | None:
    """Open the revealed outputs to the issuer only; the issuer decodes them, fixed point to the
    decimals its error bound over the stage's `rows` input rows supports (`error_bound`)."""
    shown = nulls_zeroed(s, conform(Stage(s, step, 0), step, [values[i] for i in step.reveal]))
    bounds = [None if rows is None else error_bound(_parse(step.outputs[i][1]), rows, s.frac_bits)
              for i in step.reveal]
    arrays = [c.data for c in _columns(shown)] + ([flag.data] if flag is not None else [])
    if step.issuer in step.compute:
        opened = s.open_many(arith=arrays, to=step.compute.index(step.issuer))
        return decode_outputs(step, shown, opened, flag is not None, s.frac_bits, bounds) if opened else None
    table = pa.table({f"c{i}": pa.array(a, pa.uint64()) for i, a in enumerate(arrays)})
    kinds = ",".join(f"{v.kind}:{len(v.limbs)}:{v.value.frac}" for v in shown)
    s.endpoint.send_table(step.issuer, f"{step.out}/shares/{s.me}", table.replace_schema_metadata(
        {"kinds": kinds, "flag": str(flag is not None), "bounds": json.dumps(bounds)}))
    return None


def nulls_zeroed(s: SpuSession, values: list[SV]) -> list[SV]:
    """The values with a NULL's limbs zeroed (one round): a NULL may still hold what its expression
    computed before it became NULL (CASE without ELSE, a failed match, x / NULLIF(y, 0)), which the
    issuer must not see when the value is opened. A value that is never NULL (`PublicOnes` validity, a
    COUNT's) is kept as it is: 0 rounds where every value is such."""
    nullable = [v for v in values if not isinstance(v.valid, PublicOnes)]
    limbs = iter(arith.beaver_mul_many(s, [(limb, v.valid) for v in nullable for limb in v.limbs]))
    return [v if isinstance(v.valid, PublicOnes) else SV([next(limbs) for _ in v.limbs], v.valid, v.kind)
            for v in values]


def error_bound(e: exp.Expression, rows: int, frac: int) -> float | None:
    """The largest absolute error of `e` computed in fixed point with `frac` fractional bits over at
    most `rows` rows (None: not bounded here, e.g. a product of two secrets or a division). A value
    is encoded within 2^-(frac+1) (an integer column too, conservatively); a SUM adds its rows'
    errors; AVG's division adds 2^-(frac-1); a product with a constant scales the error and
    truncates once (2^-frac)."""
    unit = 2.0 ** -(frac + 1)
    if isinstance(e, (exp.Alias, exp.Paren, exp.Neg, exp.Min, exp.Max)):
        return error_bound(e.this, rows, frac)
    if isinstance(e, exp.Column):
        return unit
    if isinstance(e, exp.Literal):
        return None if e.is_string else 0.0 if float(literal_number(e) * 2 ** frac).is_integer() else unit
    if isinstance(e, exp.Count):
        return 0.0
    if not isinstance(e, (exp.Add, exp.Sub, exp.Sum, exp.Avg, exp.Mul)):
        return None
    parts = [error_bound(x, rows, frac) for x in (e.this, e.args.get("expression")) if x is not None]
    if None in parts:
        return None
    if isinstance(e, (exp.Add, exp.Sub)):
        return sum(parts)
    if isinstance(e, exp.Sum):
        return rows * parts[0]
    if isinstance(e, exp.Avg):
        return parts[0] + 2.0 ** -(frac - 1)
    if isinstance(e, exp.Mul):
        constant = next((literal_number(x) for x in (e.this, e.expression) if isinstance(x, exp.Literal)), None)
        if isinstance(constant, (int, float)):
            other = e.expression if isinstance(e.this, exp.Literal) else e.this
            return abs(constant) * error_bound(other, rows, frac) + 2.0 ** -frac
    return None


def receive_outputs(endpoint, step, frac_bits: int) -> pa.Table:
    """At an issuer outside the SPU: add up every compute party's shares of the outputs."""
    total = None
    meta = {}
    for party in step.compute:
        table = endpoint.recv_table(party, f"{step.out}/shares/{party}")
        meta = table.schema.metadata or {}
        bounds = json.loads(meta.get(b"bounds", b"null"))
        arrays = [np.asarray(table.column(i).to_numpy(zero_copy_only=False), dtype=np.uint64)
                  for i in range(table.num_columns)]
        total = arrays if total is None else [a + b for a, b in zip(total, arrays)]
    kinds = [k.split(":") for k in meta.get(b"kinds", b"").decode().split(",") if k]
    shown = [SV([None] * int(limbs), None, kind) for kind, limbs, _ in kinds]
    return decode_outputs(step, shown, total or [], meta.get(b"flag") == b"True", frac_bits, bounds)


def decode_outputs(step, shown: list[SV], opened: list[np.ndarray], flagged: bool, frac: int,
                   bounds: list[float | None] | None = None) -> pa.Table:
    """The issuer's result table from the opened outputs (`bounds`: each output's error bound)."""
    columns, i = {}, 0
    bounds = bounds or [None] * len(shown)
    for (name, _), v, bound in zip([step.outputs[j] for j in step.reveal], shown, bounds):
        k = len(v.limbs)
        columns[name] = decode_column(opened[i:i + k], opened[i + k], v.kind, frac, bound)
        i += k + 1
    table = pa.table(columns)
    if flagged and not (len(opened[i]) and int(opened[i][0])):  # no flag left: LIMIT 0 or an OFFSET past the row
        table = table.slice(0, 0)
    return table


def exchange_shapes(endpoint, step, tables: dict[int, pa.Table], tag: str,
                    before_receiving=None) -> tuple[dict[str, str], dict[int, int]]:
    """Each compute party tells the others the kind of each of its input columns and the row count of
    each of its branches (public schema facts and sizes; a text column's kind carries its owner's
    width class, `values.text_width`). `tables`: branch index (0 for a join's aligned piece) -> this
    party's table. Kinds of one column from several branches are reconciled: integers and fixed point
    give fixed point; text takes the widest class; text with numbers is refused. `before_receiving`
    runs between the sends and the receives (the SPU session's `accept`, whose `offer` went first:
    one leg for both)."""
    me = endpoint.party
    columns = [c for _, c in step.inputs]
    mine = {"kinds": {}, "rows": {}}
    for index, table in tables.items():
        mine["rows"][str(index)] = table.num_rows
        for column in columns:
            if column in table.column_names:
                mine["kinds"].setdefault(column, []).append(shared_kind(table.column(column), column))
    payload = json.dumps(mine).encode()
    reports = [mine]
    for party in step.compute:
        if party != me:
            endpoint.send(party, f"{tag}/shapes", payload)
    if before_receiving is not None:
        before_receiving()
    for party in step.compute:
        if party != me:
            reports.append(json.loads(endpoint.recv(party, f"{tag}/shapes").decode()))
    kinds, rows = {}, {}
    for report in reports:
        rows.update({int(k): v for k, v in report["rows"].items()})
        for column, found in report["kinds"].items():
            kinds.setdefault(column, set()).update(found)
    merged = {}
    for column, found in kinds.items():
        widths = {text_bytes(k) for k in found} - {None}
        if widths and len(widths) == len(found):  # text of several width classes: the widest
            merged[column] = text_kind(max(widths))
        elif len(found) == 1:
            merged[column] = found.pop()
        elif (scale := union_decimal_scale(list(found))) is not None:
            merged[column] = f"decimal.{scale}"  # integers and DECIMALs of several scales: exact, as in DuckDB
        elif all(k in ("int", "fixed") or decimal_scale(k) is not None for k in found):
            merged[column] = "fixed"  # DECIMALs with DOUBLEs: fixed point
        else:
            raise NotSupportedError(f"column {column!r} has values of kinds {sorted(found)} in different branches")
    return merged, rows
