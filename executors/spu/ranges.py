"""The SPU's exact range: which input values a stage can compute on exactly, decided before any share.

The SPU computes in Z_2^64 (fixed point with F fractional bits for DECIMAL and DOUBLE). A value is
exact while its ring encoding stays within these ranges (|raw| counts ring units, F = 16):

  revealed as is       |raw| < 2^63: BIGINT's whole range; fixed point |x| < 2^(63-F) (1.4e14)
  compared, sorted, grouped, MIN/MAX, COUNT(DISTINCT), AVG's division input
                       |raw| < 2^62 (`compare`: the sign of x - y needs |x - y| < 2^63; MIN/MAX
                       fill empty slots with ±2^62): integers and dates |x| < 2^62, fixed point
                       |x| < 2^(62-F) (7.0e13)
  fixed x fixed        the product |x*y| < 2^(62-F) (`arith.mul_wide`; `arith.mul`, one round
                       cheaper, where the limits prove |x*y| < 2^(62-2F)); fixed x public real
                       constant |x*c| < 2^(62-2F) (1.07e9: one truncation of the 2F-bit product)
  SUM over n rows      |sum| within the range of where it is used, so each term |x| < range / n
                       (inside SUM/AVG/MIN/MAX, a column the WHERE bounds on both sides by constants
                       counts with that bound: a row the WHERE drops adds 0 whatever it holds)
  DECIMAL(p, s)        its exact limb x * 10^s within the same ranges: for s > 4 (10^s > 2^F) the
                       limits shrink by 2^F / 10^s (`exact_scale`: a product adds the scales; a CAST
                       to DECIMAL(p, t) and a ROUND of a DECIMAL give their scale)
  ROUND / CAST         to d decimals: x * 10^d (a DECIMAL's limb x * 10^s) within half the compared
                       range; the result is as large as x, so a limit from above carries over unscaled
                       (MySQL's AVG, ROUND(CAST(AVG(x) AS DECIMAL(38, 9)), 4): |AVG(x)| < 2^45 / 10^9;
                       AVG's mean is no larger than its terms: only its sum divides by the rows)
  text                 at most its width class, <= MAX_TEXT_BYTES bytes of UTF-8 (`values.text_width`)

An intermediate's range cannot be checked after it has wrapped around the ring, so it is proven
from its inputs instead: `input_limits` walks the stage's expressions from the results down
(`need(e, limit)`: e must stay below `limit`), splits each requirement over the operands (a sum
of two operands gets the larger operand's share reduced by the smaller's bound; a product divides
the limit by the other operand's bound, or takes its square root for two unbounded operands) and
ends with one limit per input column. Each owner checks its own values against its columns'
limits while encoding (`values.encode`), before anything is shared: a value beyond gives a
DataError naming the column, the limit and why — the SQL answer is never wrapped garbage. The
limits depend only on the query, the column kinds and the public row count, so refusals reveal
nothing beyond the fact that some value of the owner's column lies outside.

Published magnitude classes (`bounds`: column -> M, every |value| < 2^M; the owner publishes the bit
length of its column's largest |value| in its catalog, like the sizes) make two things exact at plan
time. `info` bounds such a column by 2^M, so a product splits its limit by the operands' known bounds
instead of a square root each (Q3's `l_extendedprice * (1 - l_discount)` over 30,519 rows: 48,018 for
each operand without classes, since the ORDER BY's comparison range 2^(62-F) / rows = 2.3e9 was split
as its square root; with them |l_extendedprice| < 2^17 and |1 - l_discount| < 1 + 2^-3 + 2^-F). And
`beyond_classes` names every column whose limit is below its class: the planner refuses the query there
(`check`, EXPLAIN and execution alike) with the stage's row bound (planner/magnitudes.py); execution,
with at most that many rows, only loosens the limits (each divides by the rows), so an accepted plan is
not refused at run time by a classed column. A numeric constant counts as |c| + 2^-F (its encoding is
exact, or rounded by at most 2^-(F+1)), not |c| + 1.
"""

from __future__ import annotations

import decimal
import math
from dataclasses import dataclass, field

from sqlglot import exp

from sqlsecure.errors import DataError

COMPARE_BITS = 62  # |raw| < 2^62: compared, sorted, MIN/MAX (see the module docstring)
REVEAL_BITS = 63  # |raw| < 2^63: two's complement in 64 bits
FOLDED = (exp.Add, exp.Sub, exp.Mul)
ROUNDING = (exp.Round, exp.Floor, exp.Ceil)  # spu.functions: exact through a bit decomposition
EXTREMES = (exp.Greatest, exp.Least)  # their arguments compared, then one of them chosen (`stage.Stage._extreme`)
DATE_PARTS = (exp.Extract, exp.Year, exp.Month, exp.Day, exp.DayOfMonth, exp.Hour, exp.Minute, exp.Second,
              exp.DateDiff)
NARROW_INTEGERS = {exp.DataType.Type.INT: 31}  # CAST to INTEGER: |x| < 2^31 (a rounded DOUBLE: within 1 of it)
DATE_LIMIT = 2.0 ** 40
TIMESTAMP_LIMIT = 2.0 ** 62  # microseconds: spu.functions.split_timestamp's exact division (146,000 years)
MICROS_PER_DAY = 86_400_000_000
INTERVAL_MICROS = 366.0 * MICROS_PER_DAY  # an INTERVAL unit at most (a year's day): bounds dates and timestamps
NORMALISED_LIMIT = 2.0 ** 43  # SQRT, LN, LOG: spu.functions.NORMALISED_BITS - F
POWER_EXPONENT_LIMIT = 2.0 ** 14  # POWER(x, y) as EXP(y * LN(x)): |y| (|y ln x| < 2^19 keeps y * LN at 44 bits in the ring)
MAX_POWER = 62  # POWER(x, n) by square-and-multiply: a whole constant 0 <= n <= 62
EXP_LIMIT = 31.0  # EXP: e^31 < 2^45  # days from 1970 that spu.functions.civil_from_days takes apart exactly
TRIG = (exp.Sin, exp.Cos, exp.Tan, exp.Asin, exp.Acos, exp.Atan, exp.Atan2)  # spu.functions: sin_cos_fixed, atan2_fixed
TRIG_LIMIT = 2.0 ** 24  # SIN, COS, TAN: the reduction to turns loses |x| 2^-49 turns (spu.functions._sin_cos_wide)
GEODIST = "GEODIST"  # SCQL's GEODIST(lon1, lat1, lon2, lat2[, radius]): sqlglot's Anonymous function
EARTH_RADIUS = 6371  # SCQL's default radius (km)
RADIUS_LIMIT = 2.0 ** 15  # GEODIST's radius when it is secret: the angle times it stays within the ring
TAN_BOUND = 2.0 ** 8  # |TAN(x)|: rows nearer a pole refuse the query (spu.functions.POLE_DISTANCE)
DIVIDEND_LIMIT = 2.0 ** 27  # x / y, x // y by a secret y (spu.functions.divide_secret: compare.divide's range)
MAX_DECIMAL_SCALE = 18  # an exact DECIMAL limb x * 10^s: s <= 18 (10^19 > 2^63)
DIVISOR_LIMIT = {"int": 2.0 ** 31, "fixed": 2.0 ** 23}  # |y|: its raw encoding below 2^(y_bits - 1)


@dataclass
class Limit:
    """|x| < value (in SQL units), and the first reason it is that small."""

    value: float
    reason: str


@dataclass
class RangePlan:
    """Column limits for one SPU stage: `kinds` column -> kind, `rows` the stage's public row count,
    `scales` the scale s of each DECIMAL column (its exact limb counts x * 10^s)."""

    kinds: dict[str, str]
    frac: int
    rows: int
    limits: dict[str, Limit] = field(default_factory=dict)
    scales: dict[str, int] = field(default_factory=dict)
    filtered: dict[str, float] = field(default_factory=dict)  # |x| <= bound on every row the WHERE keeps
    weighted: bool = False  # walking an aggregate's argument: only the rows the WHERE keeps count
    bounds: dict[str, int] = field(default_factory=dict)  # column -> M: its published class, |x| < 2^M
    ring: dict[str, Limit] = field(default_factory=dict)  # column -> the ring's limit alone (no class)

    def __post_init__(self):
        self.rows = max(self.rows, 1)
        for column, kind in self.kinds.items():
            self.limits[column] = Limit(self.reveal_range(kind), "the SPU's 64-bit encoding")
            self.ring[column] = self.limits[column]
            if column in self.bounds and kind not in ("text", "bool") and \
                    power_of_two(self.bounds[column]) < self.limits[column].value:
                self.limits[column] = Limit(power_of_two(self.bounds[column]), f"its published magnitude class "
                                                                               f"(|x| < 2^{self.bounds[column]})")

    def at_decimal_units(self) -> "RangePlan":
        """The limits as the owners check them: a DECIMAL(p, s) whose exact limb counts 10^s > 2^F ring
        units per unit has its ring limits shrunk by 2^F / 10^s (every ring bound then holds for both
        limbs); a published class bounds the values themselves, so it is not shrunk. Called once, last, so
        `check` (planner/magnitudes.py) and the owners (`values.check_range`) compare the same limits."""
        for column, s in self.scales.items():
            if column in self.ring and 10 ** s > 2 ** self.frac:
                ring = self.ring[column]
                shrunk = ring.value * 2.0 ** self.frac / 10 ** s
                if shrunk < self.limits[column].value:
                    self.limits[column] = Limit(shrunk, f"{ring.reason}, at the decimal's 10^{s} units")
        return self

    # -- ranges of a kind -----------------------------------------------------------------------
    def reveal_range(self, kind: str) -> float:
        return 2.0 ** (REVEAL_BITS - self.frac) if kind == "fixed" else 2.0 ** REVEAL_BITS

    def compare_range(self, kind: str) -> float:
        return 2.0 ** (COMPARE_BITS - self.frac) if kind == "fixed" else 2.0 ** COMPARE_BITS

    # -- forward: kind and bound of an expression -----------------------------------------------
    def info(self, e: exp.Expression) -> tuple[str, float]:
        """(kind, bound): every value of e satisfies |v| < bound, given the current column limits."""
        if isinstance(e, exp.Paren):
            return self.info(e.this)
        if isinstance(e, exp.Column):
            kind = self.kinds.get(e.name, "int")
            bound = self.limits[e.name].value if e.name in self.limits else 2.0 ** REVEAL_BITS
            return kind, min(bound, self.filtered.get(e.name, bound) * 1.001) if self.weighted else bound
        if isinstance(e, exp.Literal):
            if e.is_string:
                return "text", 0.0
            value = literal_value(e)  # encoded exactly (an integer, a DECIMAL's limb) or within 2^-(F+1);
            bound = math.nextafter(abs(float(value)) + 2.0 ** -self.frac, math.inf)  # and past float's rounding
            return ("int" if isinstance(value, int) else "fixed"), bound
        if isinstance(e, (exp.Boolean, exp.Null)):
            return "bool" if isinstance(e, exp.Boolean) else "int", 2.0
        if isinstance(e, (exp.Neg, exp.Abs)):
            return self.info(e.this)
        if isinstance(e, ROUNDING):  # rounding moves a value by less than one unit of its last digit
            kind, bound = self.info(e.this)
            return kind, bound + 10.0 ** max(0, -rounding_digits(e))
        if isinstance(e, (exp.Add, exp.Sub)):
            (ka, a), (kb, b) = self.info(e.left), self.info(e.right)
            return _numeric_kind(ka, kb), a + b
        if isinstance(e, exp.Mul):
            (ka, a), (kb, b) = self.info(e.left), self.info(e.right)
            return _numeric_kind(ka, kb), a * b
        if isinstance(e, exp.Div):
            kind, a = self.info(e.left)
            divisor = constant(e.right)
            if divisor is None:  # by a secret: as small as 2^-F when fixed point, 1 when whole
                return "fixed", a * (2.0 ** self.frac if self.info(e.right)[0] == "fixed" else 1.0)
            return "fixed", (a / abs(divisor) if divisor else math.inf)
        if isinstance(e, (exp.IntDiv, exp.Mod)):
            return "int", self.info(e.left)[1]
        if isinstance(e, exp.Interval):  # at most 366 days a unit, in microseconds (a timestamp's unit)
            digits = "".join(ch for ch in str(e.this.this if isinstance(e.this, exp.Literal) else "") if ch.isdigit())
            return "int", INTERVAL_MICROS * float(digits or 0) + 1.0
        if isinstance(e, (exp.Sqrt, exp.Ln, exp.Log, exp.Exp)):
            bound = self.info(e.this if not isinstance(e, exp.Log) or e.expression is None else e.expression)[1]
            return "fixed", (math.sqrt(bound) + 1.0 if isinstance(e, exp.Sqrt) else
                             math.exp(min(bound, EXP_LIMIT)) + 1.0 if isinstance(e, exp.Exp) else 64.0)
        if isinstance(e, exp.Pi):
            return "fixed", 4.0
        if is_geodist(e):  # at most half a great circle
            arguments = e.expressions
            radius = self.info(arguments[4])[1] if len(arguments) == 5 else float(EARTH_RADIUS)
            return "fixed", 4.0 * radius + 1.0
        if isinstance(e, TRIG):  # TAN up to its pole bound; the angles below pi; SIN and COS at most 1
            return "fixed", TAN_BOUND + 1.0 if isinstance(e, exp.Tan) else 4.0
        if isinstance(e, exp.Pow) and not whole_power(e):  # EXP(y * LN(x)), refused beyond e^31
            return "fixed", math.exp(EXP_LIMIT) + 1.0
        if isinstance(e, exp.Pow):
            kind, bound = self.info(e.this)
            return kind, min(max(bound, 1.0) ** (constant(e.expression) or 0), 2.0 ** REVEAL_BITS)
        if isinstance(e, DATE_PARTS):  # a year, month or day number; DATEDIFF's units (microseconds at most)
            return "int", (2.0 ** REVEAL_BITS if isinstance(e, exp.DateDiff) else 2.0 ** 30)
        if isinstance(e, exp.Nullif):
            return self.info(e.this)
        if isinstance(e, (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Between, exp.In, exp.And,
                          exp.Or, exp.Not, exp.Is)):
            return "bool", 2.0
        if isinstance(e, (exp.Case, exp.If, exp.Coalesce, *EXTREMES)):
            found = [self.info(v) for v in choices(e)]
            kinds = {k for k, _ in found}
            if {"date", "timestamp"} <= kinds:  # GREATEST / LEAST of both: dates taken at midnight
                return "timestamp", max(b * MICROS_PER_DAY if k == "date" else b for k, b in found)
            return ("fixed" if "fixed" in kinds else found[0][0]), max(b for _, b in found)
        if isinstance(e, exp.Cast):
            kind, bound = self.info(e.this)
            if kind in ("date", "timestamp") and e.to.this == exp.DataType.Type.DATE:
                return "date", (bound / MICROS_PER_DAY + 1.0 if kind == "timestamp" else bound)
            if kind in ("date", "timestamp"):  # to TIMESTAMP
                return "timestamp", (bound * MICROS_PER_DAY if kind == "date" else bound)
            return ("fixed" if e.to.this in FIXED_TYPES else kind), bound
        if isinstance(e, exp.Count):
            return "int", self.rows + 1.0
        if isinstance(e, exp.Sum):
            kind, bound = self.info(e.this)
            return kind, bound * self.rows
        if isinstance(e, exp.Avg):
            return "fixed", self.info(e.this)[1]
        if isinstance(e, (exp.Min, exp.Max)):
            return self.info(e.this)
        if isinstance(e, exp.Window):
            return "int", self.rows + 1.0
        return "int", 2.0 ** REVEAL_BITS  # anything else the stage refuses by itself

    def exact_scale(self, e: exp.Expression) -> int | None:
        """The scale s of e's exact DECIMAL limb (x * 10^s, as DuckDB types e: a product adds its operands'
        scales, a sum takes the larger; `stage.Stage._exact_arithmetic`), None where e has none."""
        if isinstance(e, (exp.Paren, exp.Neg, exp.Abs, exp.Sum, exp.Min, exp.Max)):
            return self.exact_scale(e.this)
        if isinstance(e, exp.Column):
            return self.scales.get(e.name)
        if isinstance(e, exp.Literal):
            return decimal_literal(e)[1] if decimal_literal(e) is not None else None
        if isinstance(e, (exp.Case, exp.If, exp.Coalesce, *EXTREMES)):  # the branches at the larger scale
            return self._common_scale([b for b in choices(e) if not isinstance(b, exp.Null)])
        if isinstance(e, exp.Cast) and e.to.this == exp.DataType.Type.DECIMAL:
            return decimal_scale_of(e.to)
        if isinstance(e, ROUNDING) and (scale := self.exact_scale(e.this)) is not None:  # `_round_decimal`
            digits = rounding_digits(e)
            return scale if isinstance(e, exp.Round) and digits >= scale else \
                max(0, digits) if isinstance(e, exp.Round) else 0
        if not isinstance(e, (exp.Add, exp.Sub, exp.Mul)) or exp.Null in (type(e.left), type(e.right)):
            return None  # x + NULL: NULL, computed in fixed point
        scales = self._scales([e.left, e.right])
        return None if scales is None else sum(scales) if isinstance(e, exp.Mul) else max(scales)

    def _scales(self, operands: list[exp.Expression]) -> list[int] | None:
        """The operands' scales where DuckDB computes with them in DECIMAL (integers at scale 0; one at
        least a DECIMAL), else None."""
        own = [self.exact_scale(o) for o in operands]
        if not operands or all(s is None for s in own):
            return None
        scales = [s if s is not None else 0 if self.info(o)[0] == "int" else None for s, o in zip(own, operands)]
        return None if None in scales else scales

    def _common_scale(self, operands: list[exp.Expression]) -> int | None:
        scales = self._scales(operands)
        return None if scales is None else max(scales)

    def room(self, e: exp.Expression, ring_range: float) -> float:
        """A ring range (`reveal_range` / `compare_range`, in SQL units) for e, whose exact DECIMAL limb may
        count more ring units per unit than fixed point (`exact_limit`)."""
        return self.exact_limit(self.exact_scale(e), ring_range)

    def rounding_room(self, e: exp.Expression, kind: str) -> float:
        """The range of ROUND / FLOOR / CEIL's argument: a DECIMAL's exact limb x * 10^s is divided by a power
        of ten (|x * 10^s| < 2^61); any other value is scaled by 10^d and gets a half added before a bit
        decomposition (|x * 10^d| within half the compared range). The result is as large as the argument,
        so a limit on it carries over as it is."""
        scale = self.exact_scale(e.this)
        if scale is not None:
            return self.exact_limit(scale, self.compare_range("fixed") / 2)
        return self.compare_range(kind) / 2 / 10.0 ** max(0, rounding_digits(e))

    def exact_limit(self, scale: int | None, limit: float) -> float:
        """A ring range `limit` (in SQL units, for fixed point's 2^F ring units per unit) for a value whose exact
        limb counts 10^scale ring units per unit: smaller by 2^F / 10^scale where that is below 1. Applied to
        ranges, never to a limit already derived from one."""
        if scale is None or 10 ** scale <= 2 ** self.frac:
            return limit
        return limit * 2.0 ** self.frac / 10.0 ** scale

    # -- backward: make e stay below `limit` ----------------------------------------------------
    def need(self, e: exp.Expression, limit: float, why: str) -> None:
        """Tighten the column limits so that every value of e satisfies |v| < limit."""
        if isinstance(e, (exp.Paren, exp.Neg)):
            return self.need(e.this, limit, why)
        if isinstance(e, exp.Column):
            if self.weighted and e.name in self.filtered and self.filtered[e.name] * 1.001 <= limit:
                return None  # the WHERE bounds it on every row that counts; the others are weighted by 0
            if e.name in self.limits and limit < self.limits[e.name].value:
                self.limits[e.name] = Limit(limit, why)
            if e.name in self.ring and limit < self.ring[e.name].value:
                self.ring[e.name] = Limit(limit, why)
            return None
        if isinstance(e, exp.Literal):
            if not e.is_string and abs(float(literal_value(e))) >= limit:
                raise DataError(f"the constant {e.sql()} is beyond the SPU's exact range here (|x| < {limit:.4g}: "
                                f"{why}); rewrite the query without it")
            return None
        kind, bound = self.info(e)
        if isinstance(e, exp.Abs):
            return self.need(e.this, limit, why)
        if isinstance(e, ROUNDING):
            return self.need(e.this, min(limit, self.rounding_room(e, kind)), f"{e.sql()} rounds ({why})")
        if isinstance(e, (exp.Add, exp.Sub)) and any(calendar_interval(o) for o in (e.left, e.right)):
            date = e.right if calendar_interval(e.left) else e.left  # spu.functions.add_months: civil_from_days
            return self.need(date, self.calendar_limit(date), f"{e.sql()} moves a date by calendar months")
        if isinstance(e, (exp.Add, exp.Sub)):
            limit = min(limit, self.room(e, self.reveal_range(kind)))
            return self._need_sum(e.left, e.right, limit, kind, why)
        if isinstance(e, exp.Mul):
            return self._need_product(e, min(limit, self.room(e, self.reveal_range(kind))), why)
        if isinstance(e, (exp.Div, exp.IntDiv, exp.Mod)) and constant(e.right) is None:
            return self._need_secret_division(e, limit, why)
        if isinstance(e, (exp.IntDiv, exp.Mod)):  # by a constant: an exact division of |x| < 2^61
            return self.need(e.left, min(limit * abs(constant(e.right) or 1), 2.0 ** 61), f"{e.sql()} divides")
        if isinstance(e, exp.Nullif):
            self._need_compared([e.this, e.expression], e.sql())
            return self.need(e.this, limit, why)
        if isinstance(e, (exp.Sqrt, exp.Ln, exp.Log)):  # the leading bit among the raw value's lowest 59
            argument = e.expression if isinstance(e, exp.Log) and e.expression is not None else e.this
            return self.need(argument, NORMALISED_LIMIT, f"{e.sql()} normalises its argument")
        if isinstance(e, exp.Exp):
            return self.need(e.this, EXP_LIMIT, f"{e.sql()}: e^x stays within fixed point")
        if isinstance(e, TRIG):
            return self._need_trig(e)
        if is_geodist(e):  # degrees reduced to turns: each coordinate, and l1 - l2, below TRIG_LIMIT
            for coordinate in e.expressions[:4]:
                self.need(coordinate, TRIG_LIMIT / 2, f"{e.sql()} reduces its coordinates to turns")
            if len(e.expressions) == 5:
                self.need(e.expressions[4], RADIUS_LIMIT, f"{e.sql()} multiplies the angle by the radius")
            return None
        if isinstance(e, exp.Pow) and not whole_power(e):  # LN normalises x; y * LN(x) is one product
            self.need(e.this, NORMALISED_LIMIT, f"{e.sql()} takes the logarithm of its base")
            return self.need(e.expression, POWER_EXPONENT_LIMIT, f"{e.sql()} multiplies the logarithm")
        if isinstance(e, exp.Pow):  # square-and-multiply: every product within the kind's range
            n = constant(e.expression) or 1
            top = min(limit, self.compare_range(kind)) if kind == "fixed" else min(limit, self.reveal_range(kind))
            return self.need(e.this, top ** (1.0 / max(n, 1)), f"{e.sql()} multiplies ({why})")
        if isinstance(e, DATE_PARTS):  # civil_from_days divides days exactly for |days| < 2^40
            dates = [d for d in (e.this, e.args.get("expression")) if d is not None and not isinstance(d, exp.Var)]
            unit = e.args.get("unit")
            at_midnight = any(self.info(d)[0] == "timestamp" for d in dates) or \
                (unit is not None and unit.name.upper() not in ("DAY", "MONTH", "YEAR"))
            for date in dates:
                self.need(date, self.calendar_limit(date, at_midnight), f"{e.sql()} takes the calendar date apart")
            return None
        if isinstance(e, (exp.Add, exp.Sub)) and any(isinstance(o, exp.Interval) for o in (e.left, e.right)):
            interval, moved = (e.left, e.right) if isinstance(e.left, exp.Interval) else (e.right, e.left)
            room = max(min(limit, TIMESTAMP_LIMIT) - self.info(interval)[1], 1.0)  # microseconds
            days = self.info(moved)[0] != "timestamp"  # DuckDB's date ± INTERVAL is a TIMESTAMP
            return self.need(moved, room / MICROS_PER_DAY if days else room, f"{e.sql()} moves a date or timestamp")
        if isinstance(e, exp.Anonymous) and str(e.this).upper() == "DATE_SUB":  # b - a divided exactly: < 2^61
            for moment in e.expressions[1:]:
                self.need(moment, self.calendar_limit(moment, True) / 4, f"{e.sql()} subtracts timestamps")
            return None
        if isinstance(e, exp.Cast) and self.info(e.this)[0] in ("date", "timestamp") and \
                e.to.this != exp.DataType.Type.DATE:  # a date at midnight: microseconds
            return self.need(e.this, self.calendar_limit(e.this, True), f"{e.sql()} takes a date at midnight")
        if isinstance(e, exp.Cast) and self.info(e.this)[0] == "timestamp":  # to DATE: split_timestamp
            return self.need(e.this, TIMESTAMP_LIMIT, f"{e.sql()} takes the date of a timestamp")
        if isinstance(e, exp.Cast) and e.to.this in NARROW_INTEGERS:  # DuckDB refuses values beyond the type
            bits = NARROW_INTEGERS[e.to.this]
            return self.need(e.this, min(limit, 2.0 ** bits - 1), f"{e.sql()} casts to a {bits + 1}-bit integer")
        if isinstance(e, exp.Cast) and e.to.this == exp.DataType.Type.DECIMAL:  # exact at scale t: x * 10^t
            scale = decimal_scale_of(e.to)  # the value keeps its size: only the ring's range is scaled
            return self.need(e.this, min(limit, self.compare_range("fixed") / 2 / 10.0 ** scale),
                             f"{e.sql()} scales by 10^{scale} ({why})")
        if isinstance(e, exp.Div):
            divisor = abs(constant(e.right) or 1.0)
            narrow = 2.0 ** (COMPARE_BITS - 2 * self.frac)
            limit = min(min(limit, narrow) * divisor, self.compare_range("fixed"))  # floor_div_public: raw < 2^62
            return self.need(e.left, limit, f"{e.sql()}: a division by a constant ({why})")
        if isinstance(e, (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)):
            return self._need_compared([e.left, e.right], e.sql())
        if isinstance(e, exp.Between):
            return self._need_compared([e.this, e.args["low"], e.args["high"]], e.sql())
        if isinstance(e, exp.In):
            return self._need_compared([e.this, *e.expressions], e.sql())
        if isinstance(e, (exp.And, exp.Or, exp.Not)):
            for child in (e.this, e.args.get("expression")):
                if child is not None:
                    self.need(child, 2.0, why)
            return None
        if isinstance(e, exp.Is):
            return self.need(e.this, self.reveal_range(self.info(e.this)[0]), why)
        if isinstance(e, EXTREMES):  # compared with one another, then one of them is the value
            self._need_compared(choices(e), f"{e.sql()} ({why})")
        if isinstance(e, (exp.Case, exp.If, exp.Coalesce, *EXTREMES)):
            for cond in _conditions(e):
                self.need(cond, 2.0, why)
            for value in choices(e):
                self.need(value, min(limit, self.room(e, self.reveal_range(kind))), why)
            return None
        if isinstance(e, exp.Cast):
            return self.need(e.this, min(limit, self.reveal_range(kind)), why)
        if isinstance(e, exp.Count):
            if isinstance(e.this, exp.Distinct):
                self._need_compared(e.this.expressions, f"{e.sql()} sorts its argument")
            return None
        if isinstance(e, (exp.Sum, exp.Avg, exp.Min, exp.Max)):
            return self._need_weighted(e, limit, why)
        if isinstance(e, exp.Window):
            return self._need_compared([o.this for o in (e.args.get("order") or exp.Order()).expressions],
                                       f"{e.sql()} sorts")
        return None

    def _need_weighted(self, e: exp.AggFunc, limit: float, why: str) -> None:
        """SUM, AVG, MIN, MAX: their argument on the rows the WHERE keeps (`filtered` bounds hold there; a
        row it drops enters as 0 or as MIN/MAX's fill, whatever its value)."""
        weighted, self.weighted = self.weighted, True
        try:
            if isinstance(e, exp.Sum):
                limit = min(limit, self.room(e, self.reveal_range(self.info(e.this)[0]))) / self.rows
                return self.need(e.this, limit, f"{e.sql()} adds up to {self.rows} rows ({why})")
            if isinstance(e, exp.Avg):  # AVG's sum is scaled to fixed point and range-checked (compared); the
                room = min(self.compare_range("fixed"), self.room(e.this, self.reveal_range("fixed")))  # mean is
                return self.need(e.this, min(limit, room / self.rows),  # no larger than its terms
                                 f"{e.sql()} adds up to {self.rows} rows ({why})")
            return self.need(e.this, min(limit, self.room(e, self.compare_range(self.info(e.this)[0]))),
                             f"{e.sql()} compares")
        finally:
            self.weighted = weighted

    def _need_secret_division(self, e: exp.Expression, limit: float, why: str) -> None:
        """x / y, x // y, x % y by a secret y: compare.divide's range (spu.functions: |x| < 2^27, |y| below
        2^31 or 2^23), and x small enough that x / y stays below `limit` however small y is."""
        divisor_kind = "fixed" if self.info(e.right)[0] == "fixed" else "int"
        smallest = 2.0 ** -self.frac if divisor_kind == "fixed" and isinstance(e, exp.Div) else 1.0
        why = f"{e.sql()} divides by a secret ({why})"
        self.need(e.left, min(DIVIDEND_LIMIT, limit * smallest), why)
        self.need(e.right, DIVISOR_LIMIT[divisor_kind], why)

    def _need_trig(self, e: exp.Expression) -> None:
        """SIN / COS / TAN reduce x to turns (|x| < 2^24); ATAN / ATAN2 divide their arguments (|y|, |x| below
        the fixed-point divisor's limit); ASIN / ACOS compare theirs with ±1 (a row beyond refuses the query)."""
        arguments = [a for a in (e.this, e.args.get("expression")) if a is not None]
        if isinstance(e, (exp.Sin, exp.Cos, exp.Tan)):
            limit, why = TRIG_LIMIT, f"{e.sql()} reduces its argument to turns"
        elif isinstance(e, (exp.Atan, exp.Atan2)):
            limit, why = DIVISOR_LIMIT["fixed"], f"{e.sql()} divides its arguments"
        else:
            limit, why = self.compare_range("fixed"), f"{e.sql()} compares its argument with 1"
        for argument in arguments:
            self.need(argument, limit, why)

    def calendar_limit(self, e: exp.Expression, at_midnight: bool = False) -> float:
        """The limit of a date (days) or timestamp (microseconds) taken apart into calendar parts; a date that
        becomes a timestamp (`at_midnight`: beside a timestamp, or moved by a time of day) in days."""
        if self.info(e)[0] == "timestamp":
            return TIMESTAMP_LIMIT
        return TIMESTAMP_LIMIT / MICROS_PER_DAY if at_midnight else DATE_LIMIT

    def _need_compared(self, operands: list[exp.Expression], what: str) -> None:
        kinds = {self.info(o)[0] for o in operands}
        if "text" in kinds and not kinds & {"date", "timestamp"}:  # a string beside a date is cast to one
            return None
        limit = self.compare_range("fixed" if "fixed" in kinds else "int")
        scales = [s for s in map(self.exact_scale, operands) if s is not None]  # compared at the larger scale
        limit = self.exact_limit(max(scales), limit) if scales and "fixed" in kinds else limit
        for operand in operands:
            midnight = "timestamp" in kinds and self.info(operand)[0] == "date"  # compared in microseconds
            self.need(operand, limit / MICROS_PER_DAY if midnight else limit, f"{what} compares")

    def _need_sum(self, a: exp.Expression, b: exp.Expression, limit: float, kind: str, why: str) -> None:
        (_, bound_a), (_, bound_b) = self.info(a), self.info(b)
        if bound_a + bound_b <= limit:
            self.need(a, limit, why)  # still checks the operands' own insides
            self.need(b, limit, why)
            return
        small, large = sorted([(bound_a, a), (bound_b, b)], key=lambda t: t[0])
        share = small[0] if small[0] <= limit / 2 else limit / 2
        self.need(small[1], share, why)
        self.need(large[1], limit - share, why)

    def _need_product(self, e: exp.Mul, limit: float, why: str) -> None:
        a, b = e.left, e.right
        ca, cb = constant(a), constant(b)
        why = f"{e.sql()} ({why})"
        if ca is not None or cb is not None:
            k, x = (ca, b) if ca is not None else (cb, a)
            if isinstance(k, float) and abs(k) >= self.reveal_range("fixed"):
                raise DataError(f"the constant {k:g} in {e.sql()} has no fixed-point encoding on the SPU "
                                f"(|c| < {self.reveal_range('fixed'):.4g}); write it as an integer or rescale")
            if isinstance(k, float):
                limit = min(limit, 2.0 ** (COMPARE_BITS - 2 * self.frac))  # one truncation of x * k
            return self.need(x, limit / abs(k) if k else limit, why)
        (kind_a, bound_a), (kind_b, bound_b) = self.info(a), self.info(b)
        if kind_a == kind_b == "fixed":  # arith.mul_wide: truncates both operands, then the product
            limit = min(limit, self.compare_range("fixed"))
        if bound_a * bound_b <= limit:
            self.need(a, limit, why)
            self.need(b, limit, why)
            return
        root = math.sqrt(limit)
        small, large = sorted([(bound_a, a), (bound_b, b)], key=lambda t: t[0])
        share = small[0] if small[0] <= root else root
        self.need(small[1], share, why)
        self.need(large[1], limit / share, why)


FIXED_TYPES = (exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT, exp.DataType.Type.DECIMAL)


MONTHS_PER_UNIT = {"MONTH": 1, "MONTHS": 1, "QUARTER": 3, "QUARTERS": 3, "YEAR": 12, "YEARS": 12}


def interval_months(e: exp.Expression) -> int | None:
    """The months of INTERVAL n MONTH / QUARTER / YEAR with a whole constant n, else None."""
    if not isinstance(e, exp.Interval) or not isinstance(e.this, exp.Literal):
        return None
    scale = MONTHS_PER_UNIT.get((e.unit.name if e.unit is not None else "").upper())
    try:
        return int(str(e.this.this)) * scale if scale is not None else None
    except ValueError:
        return None


def calendar_interval(e: exp.Expression) -> bool:
    return interval_months(e) is not None


def whole_power(e: exp.Pow) -> bool:
    """POWER(x, n) with a whole constant 0 <= n <= MAX_POWER (square-and-multiply); other exponents go
    through EXP(y * LN(x))."""
    n = constant(e.expression)
    return isinstance(n, int) and 0 <= n <= MAX_POWER


def is_geodist(e: exp.Expression) -> bool:
    return isinstance(e, exp.Anonymous) and str(e.this).upper() == GEODIST


def literal_value(e: exp.Literal) -> int | float:
    """A numeric literal as DuckDB types it (and the stage reads it): digits alone are an integer; a '.'
    or an exponent makes a DOUBLE or DECIMAL (ValueError / OverflowError for text that is no number)."""
    text = e.this
    return int(text) if text.lstrip("-").isdigit() else float(text)


def decimal_literal(e: exp.Expression) -> tuple[int, int] | None:
    """(x * 10^s, s) of a literal DuckDB types DECIMAL(p, s) (digits with a '.', no exponent, p <= 18),
    else None: the SPU computes with it exactly, as DuckDB does."""
    if not isinstance(e, exp.Literal) or e.is_string or "." not in e.this or any(c in e.this for c in "eE"):
        return None
    try:
        number = decimal.Decimal(e.this)
    except decimal.InvalidOperation:
        return None
    digits = number.as_tuple()
    if len(digits.digits) > MAX_DECIMAL_SCALE or not isinstance(digits.exponent, int):
        return None
    return int(number.scaleb(-digits.exponent)), -digits.exponent


def constant(e: exp.Expression) -> int | float | None:
    """The value of a numeric literal (through parentheses and minus signs), else None."""
    if isinstance(e, exp.Paren):
        return constant(e.this)
    if isinstance(e, exp.Neg):
        inner = constant(e.this)
        return -inner if inner is not None else None
    if isinstance(e, exp.Literal) and not e.is_string:
        return literal_value(e)
    return None


def decimal_scale_of(to: exp.DataType) -> int:
    """The scale of a DECIMAL(p, s) type (DuckDB's DECIMAL alone is DECIMAL(18, 3))."""
    params = to.expressions
    return int(params[1].this.this) if len(params) > 1 else 0 if params else 3


def rounding_digits(e: exp.Expression) -> int:
    """d of ROUND(x, d) (0 when absent, and for FLOOR / CEIL); the SPU's rule admits whole constants only."""
    digits = constant(e.args["decimals"]) if e.args.get("decimals") is not None else 0
    return digits if isinstance(digits, int) else 0


def _numeric_kind(a: str, b: str) -> str:
    if "fixed" in (a, b):
        return "fixed"
    for temporal in ("timestamp", "date"):  # date ± days, timestamp ± microseconds
        if temporal in (a, b):
            return temporal
    return a if a == b else "int"


def choices(e: exp.Expression) -> list[exp.Expression]:
    """The values CASE / IF / COALESCE / GREATEST / LEAST choose among."""
    if isinstance(e, (exp.Coalesce, *EXTREMES)):
        return [e.this, *e.expressions]
    if isinstance(e, exp.If):
        return [v for v in (e.args.get("true"), e.args.get("false")) if v is not None]
    return [i.args["true"] for i in e.args.get("ifs", [])] + ([e.args["default"]] if e.args.get("default") else [])


def _conditions(e: exp.Expression) -> list[exp.Expression]:
    if isinstance(e, (exp.Coalesce, *EXTREMES)):
        return []
    if isinstance(e, exp.If):
        return [e.this]
    return [i.this for i in e.args.get("ifs", [])]


def input_limits(step, kinds: dict[str, str], rows: int, frac: int, parse, scales: dict[str, int] | None = None,
                 bounds: dict[str, int] | None = None) -> RangePlan:
    """The stage's plan: per input column (`.limits`), the limit its owner checks before sharing (see
    the module docstring); its `info` then bounds every expression of the stage (`bounds`: the
    published magnitude classes of its input columns)."""
    plan = RangePlan({c: k for c, k in kinds.items()}, frac, rows, scales=dict(scales or {}),
                     bounds=dict(bounds or {}))
    outputs = [parse(sql) for _, sql in step.outputs]
    for sql in step.filters:
        plan.need(parse(sql), 2.0, "a filter")
    for sql in step.group_by:
        plan._need_compared([parse(sql)], f"GROUP BY {sql}")
    if step.having:
        plan.need(parse(step.having), 2.0, "HAVING")
    for index, _, _ in step.order or ():
        plan._need_compared([outputs[index]], "ORDER BY")
    plan.filtered = filter_bounds([parse(sql) for sql in step.filters])
    for e in outputs:
        plan.need(e, plan.reveal_range(plan.info(e)[0]), "the result")
    return plan.at_decimal_units()


def beyond_classes(plan: RangePlan, label=str) -> list[str]:
    """Each column whose published class (|x| < 2^M) exceeds the limit the stage needs, with why: the
    values the class admits are not all computed exactly, so the planner refuses the query. `label`:
    the column's name in the query, from its name in the plan."""
    return [f"column {label(column)!r} has values outside the SPU's exact range for this query: its published "
            f"magnitude class is |{label(column)}| < 2^{bits}, and it needs |{label(column)}| < "
            f"{plan.limits[column].value:.6g} ({plan.limits[column].reason})"
            for column, bits in plan.bounds.items()
            if column in plan.limits and plan.limits[column].value < power_of_two(bits)]


def power_of_two(bits: int) -> float:
    """2^bits as a float (infinity past DOUBLE's range: a class of 1e308 exceeds every limit)."""
    return math.ldexp(1.0, bits) if bits < 1024 else math.inf


def magnitude_class(largest: int | float | decimal.Decimal | None) -> int | None:
    """The least M with |x| < 2^M for a column whose largest |value| is `largest`, exactly (an integer's
    bit length; a DECIMAL's or DOUBLE's binary exponent, corrected where the float rounded across a
    power of two). None for an empty column, NaN or infinity: no class, nothing proven."""
    if largest is None:
        return None
    if isinstance(largest, int):
        return abs(largest).bit_length()
    value = abs(decimal.Decimal(largest))
    if not value.is_finite():
        return None
    if value == 0:
        return 0
    bits = math.frexp(float(value))[1]
    if decimal.Decimal(2) ** bits <= value:
        return bits + 1
    return bits - 1 if value < decimal.Decimal(2) ** (bits - 1) else bits


def filter_bounds(conditions: list[exp.Expression]) -> dict[str, float]:
    """Column -> B with |column| <= B on every row all `conditions` keep (conjuncts `x BETWEEN a AND b`, or
    both `x >= a` and `x <= b`, with constants): so `SUM(price * discount) ... WHERE discount BETWEEN 0.05
    AND 0.07` leaves price the room of a product by 0.07, not the square root of a product's range."""
    low, high = {}, {}
    conjuncts = list(conditions)
    while conjuncts:
        c = conjuncts.pop().unnest()
        if isinstance(c, exp.And):
            conjuncts += [c.this, c.expression]
        elif isinstance(c, exp.Between) and isinstance(c.this, exp.Column):
            _bound(low, c.this.name, constant(c.args["low"]), max)
            _bound(high, c.this.name, constant(c.args["high"]), min)
        elif isinstance(c, (exp.GT, exp.GTE, exp.LT, exp.LTE)):
            column, value, upper = (c.left, constant(c.right), isinstance(c, (exp.LT, exp.LTE))) \
                if isinstance(c.left, exp.Column) else (c.right, constant(c.left), isinstance(c, (exp.GT, exp.GTE)))
            if isinstance(column, exp.Column):
                _bound(high if upper else low, column.name, value, min if upper else max)
    return {name: max(abs(low[name]), abs(high[name])) for name in low.keys() & high.keys()}


def _bound(bounds: dict[str, float], name: str, value, tighter) -> None:
    if value is not None:
        bounds[name] = tighter(bounds[name], float(value)) if name in bounds else float(value)
