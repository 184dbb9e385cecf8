"""Keys the SPU could only compare in fixed point: refused at plan time, naming the key.

A DOUBLE enters the SPU as round(x * 2^F) (`values`, F = 16), so doubles closer than 2^-F share one code:
as a GROUP BY, DISTINCT, COUNT / SUM / AVG(DISTINCT), INTERSECT / EXCEPT, join or PARTITION BY key they
would be merged where DuckDB keeps them apart (60 values 1e-6 apart counted as 5). A computed DOUBLE
(x * 2, a product with a DOUBLE factor, a quotient, AVG) carries the encoding's error besides, so equal
doubles could even split. A key whose value is such a DOUBLE is therefore refused (`double_part`); what
makes a key exact again is kept: ROUND(x, d) with d <= MAX_ROUNDED_DIGITS (distinct rounded values lie
10^-d > 2^-F apart, and equal ones get one code), FLOOR / CEIL, a CAST to an integer, DECIMAL or text, a
comparison, a COUNT. DECIMAL keys are exact (their exact limb is compared: `stage.compared_limbs`), and so are
GROUP BY / DISTINCT keys that are one party's plain columns in a stage (not a union, not a secret join): that
party numbers their exact values and the SPU sorts its numbers (`stage.group_code`).
"""

from __future__ import annotations

from sqlglot import exp

from sqlsecure.errors import NotSupportedError
from sqlsecure.executors.spu.ranges import ROUNDING, TRIG, is_geodist, rounding_digits

MAX_ROUNDED_DIGITS = 4  # 10^-4 > 2^-16: ROUND(x, d) of a DOUBLE gives distinct codes to distinct results
FLOAT_TYPES = (exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT)
DOUBLE_RESULTS = (exp.Div, exp.Avg, exp.Sqrt, exp.Ln, exp.Log, exp.Exp, exp.Pi, *TRIG)  # DOUBLE in DuckDB
EXACT_RESULTS = (exp.Predicate, exp.Not, exp.And, exp.Or, exp.Boolean, exp.Count, exp.Window, exp.IntDiv,
                 exp.Literal, exp.Null)


def double_part(e: exp.Expression, is_double) -> exp.Expression | None:
    """The outermost node of `e` whose value is a DOUBLE the SPU holds in fixed point, or None when `e`
    is exact (`is_double(column)`: whether a column holds such a DOUBLE)."""
    if isinstance(e, exp.Paren):
        return double_part(e.this, is_double)
    if isinstance(e, exp.Column):
        return e if is_double(e) else None
    if isinstance(e, EXACT_RESULTS) or isinstance(e, (exp.Floor, exp.Ceil)):
        return None
    if isinstance(e, ROUNDING):  # ROUND(x, d)
        return None if rounding_digits(e) <= MAX_ROUNDED_DIGITS or double_part(e.this, is_double) is None else e
    if isinstance(e, exp.Cast):  # to DOUBLE: as inexact as what it casts
        return None if e.to.this not in FLOAT_TYPES or double_part(e.this, is_double) is None else e
    if isinstance(e, DOUBLE_RESULTS) or is_geodist(e) or (isinstance(e, exp.Pow) and not _whole(e.expression)):
        return e
    return e if any(double_part(child, is_double) is not None for child in e.iter_expressions()) else None


def _whole(e: exp.Expression) -> bool:
    """A whole-number constant (an exponent POWER takes by squaring)."""
    return isinstance(e, exp.Literal) and e.is_int


def refuse_double_keys(keys, use: str, is_double, where: str = "", shown=lambda key: key) -> None:
    """NotSupportedError naming the first key (as `shown(key)`, the user's expression) whose value is a
    DOUBLE held in fixed point, where it is used as `use`."""
    for key in keys:
        part = double_part(key, is_double)
        if part is not None:
            named = shown(key).sql(dialect="duckdb")
            inner = shown(part).sql(dialect="duckdb")
            raise NotSupportedError(
                f"{where}{named} as {use} in secure computation: "
                f"{'it is' if inner == named else f'{inner} is'} a DOUBLE, which the SPU holds in fixed point "
                f"(steps of 2^-16), so distinct doubles closer than that would be taken as equal where DuckDB "
                f"keeps them apart; use ROUND({inner}, n) or CAST({inner} AS DECIMAL(18, n)) with n <= "
                f"{MAX_ROUNDED_DIGITS}, FLOOR({inner}), or compute it at one party")
