"""How far a value the SPU computed may lie from DuckDB's: the error bound the rounding guard needs.

ROUND / FLOOR / CEIL / CAST to an integer or DECIMAL of a value near a rounding boundary can round the
other way than DuckDB's double when the SPU's value differs from it (`stage.Stage._refuse_near_a_boundary`).
For an input's encoding (a DOUBLE held to 2^-(F+1)) and exact operations on it, the guard's public slack
`TIE_SLACK` covers the difference; an approximate kernel's value (a quotient by a secret, SQRT, LN, EXP,
POWER, the trigonometric functions, GEODIST) lies further off, by the kernel's stated accuracy
(docs/architecture.md) plus its inputs' own error magnified by the function's slope.

`error_bound(stage, e)` composes those bounds over `e`'s tree from the values the stage computed for
its nodes (`Stage.values`), in ring units of 2^-F:

  - a float: `e` is exact or encoded (no approximate kernel below): the same bound for every row;
  - an integer share (frac 0): `e` holds an approximate kernel, the bound of each row (it depends on the
    row's magnitudes: |error| <= A + R |v|); the guard then never exempts a row on a boundary.

Rows whose bound the kernels' slopes do not give (LN or SQRT of an inexact input below 1/2, ASIN /
ACOS / ATAN2 / POWER of an inexact input) get `UNBOUNDED`, beyond every boundary's spacing: rounded,
such a row refuses the query. Rounds: one |v| (a comparison) per approximate node and a few products,
paid only where an approximate value is rounded or compared.

A comparison of an approximate value (`stage.Stage._refuse_within_error`) refuses a row whose operands
lie within `comparison_bound` of each other, or whose bound reaches `UNBOUNDED`; keys that group, match
or rank rows by an approximate value have no such threshold and are refused at plan time
(`refuse_approximate_keys`).
"""

from __future__ import annotations

import math

import numpy as np
from sqlglot import exp

from sqlsecure.errors import NotSupportedError
from sqlsecure.executors.spu import arith, compare, functions
from sqlsecure.executors.spu.ranges import (EARTH_RADIUS, RADIUS_LIMIT, POWER_EXPONENT_LIMIT, ROUNDING, TRIG,
                                           choices, constant, is_geodist, whole_power)
from sqlsecure.executors.spu.shares import ArithShare
from sqlsecure.executors.spu.values import decimal_scale

UNBOUNDED = float(1 << 30)  # ring units (2^14 at F = 16): beyond any rounding spacing; a comparison refuses it
KERNEL_BITS = 14  # divide_secret, SQRT, EXP, TAN, ATAN: |error| <= 2^-14 (|v| + 1) (spu.functions)
APPROXIMATE = (exp.Sqrt, exp.Ln, exp.Log, exp.Exp, *TRIG)
EXACT_KINDS = ("int", "bool", "date", "timestamp")
ENCODED = 4.0  # an encoded input after a few exact operations (`stage.TIE_SLACK`)
ROUNDED_TYPES = (exp.DataType.Type.BIGINT, exp.DataType.Type.INT, exp.DataType.Type.DECIMAL)  # `stage.INTEGER_CASTS`


def is_approximate(e: exp.Expression) -> bool:
    """Whether `e` holds a node whose SPU value is an approximation (a kernel of spu.functions), not
    the exact value of its encoded inputs. A rounding's result is not one: its guard refused any row it
    could round otherwise than DuckDB, so what is below it does not count."""
    if _approximate_node(e):
        return True
    return not is_rounding(e) and any(is_approximate(child) for child in e.iter_expressions())


def amplified_encoding(e: exp.Expression) -> bool:
    """Whether `e` holds a product (not under a rounding) with a factor that may be a DOUBLE's encoding:
    that factor's error (up to 2^-(F+1)) is magnified by the other factor (1e6 * 1e-5 is 15.26 on the
    SPU, 10 in DuckDB), far beyond a plain encoding's, so a comparison of `e` needs the same guard as an
    approximate value's (`stage.Stage._refuse_within_error`). A factor typed as an integer, boolean or
    DECIMAL, or a constant exact in fixed point, is held exactly; an untyped one may be a DOUBLE. A small
    constant factor (|c| <= `ENCODED`) keeps the error within the encoding's slack: not amplified."""
    if is_rounding(e):
        return False
    if isinstance(e, exp.Mul) and any(_may_be_encoded(f) and _magnifies(g) for f, g in ((e.left, e.right),
                                                                                     (e.right, e.left))):
        return True
    return any(amplified_encoding(child) for child in e.iter_expressions())


def _magnifies(factor: exp.Expression) -> bool:
    """A secret factor, or a constant beyond the encoding's slack (x * 2 stays within `ENCODED` units)."""
    c = constant(factor)
    return not isinstance(c, (int, float)) or abs(float(c)) > ENCODED


def needs_comparison_guard(e: exp.Expression) -> bool:
    """Whether a comparison of `e` is guarded against its error: an approximate value, or an amplified
    encoding."""
    return is_approximate(e) or amplified_encoding(e)


def _may_be_encoded(e: exp.Expression) -> bool:
    e = _unwrapped(e)
    if isinstance(e, exp.Literal):
        return not e.is_string and not float(float(e.this) * 2 ** 16).is_integer()
    exact = (*exp.DataType.INTEGER_TYPES, exp.DataType.Type.BOOLEAN, exp.DataType.Type.DECIMAL)
    return not (isinstance(e.type, exp.DataType) and e.type.this in exact)


def is_rounding(e: exp.Expression) -> bool:
    """ROUND / FLOOR / CEIL, or a CAST to an integer or DECIMAL: guarded by `Stage._refuse_near_a_boundary`."""
    return isinstance(e, ROUNDING) or (isinstance(e, exp.Cast) and e.to.this in ROUNDED_TYPES)


def _approximate_node(node: exp.Expression) -> bool:
    if isinstance(node, exp.Div):
        divisor = constant(node.expression)
        return divisor is None or not _exact_constant_divisor(divisor)
    if isinstance(node, exp.Pow):
        return not whole_power(node)
    return isinstance(node, APPROXIMATE) or is_geodist(node)


def unbounded_part(e: exp.Expression, kind_of) -> tuple[exp.Expression, str] | None:
    """(the part of `e` whose SPU error no bound covers, why), or None: an aggregate or window over an
    approximate value (its rows' errors add up unseen), ASIN / ACOS / ATAN2 / POWER(x, y) (y not a whole
    constant) of an input that is not exact (their slope is unbounded near ±1, 0 or x = 0). Known from
    the query and the columns' kinds, so a rounding of such a part is refused at plan time."""
    for node in e.walk():
        if isinstance(node, (exp.AggFunc, exp.Window)) and is_approximate(node):
            return node, "an aggregate of approximate values, whose errors add up"
        steep = isinstance(node, (exp.Asin, exp.Acos, exp.Atan2)) or (isinstance(node, exp.Pow) and not whole_power(node))
        inputs = [x for x in (node.this, node.args.get("expression")) if isinstance(x, exp.Expression)]
        if steep and not all(_exact_input(x, kind_of) for x in inputs):
            return node, "a function whose slope is unbounded, of an input that is not an exact integer"
    return None


def refuse_approximate_keys(keys, use: str, approximate=lambda key: False, where: str = "") -> None:
    """Refuse keys that are approximate values (or, `approximate(key)`, hold one from an earlier step) where
    they are used as `use`: a GROUP BY / DISTINCT / join / PARTITION BY key compares them for equality and
    an ORDER BY under LIMIT or a ranking picks rows by their order, so rows within their error of each
    other could be grouped, matched, kept or numbered otherwise than DuckDB does it, with no bound to guard
    them (a sort compares rows pairwise, not against one threshold)."""
    for key in keys:
        if is_approximate(key) or approximate(key):
            raise NotSupportedError(
                f"{where}{key.sql(dialect='duckdb')} as {use} in secure computation: an approximate value (a quotient by "
                "a secret, SQRT, LN, EXP, POWER, a trigonometric function, GEODIST), whose rows within their error "
                "of each other could be grouped, matched or ordered otherwise than by DuckDB; use a rounded value "
                "(ROUND(x, d)), or compute it at one party")


def _exact_input(e: exp.Expression, kind_of) -> bool:
    """Whether the SPU holds e exactly (an integer or boolean, a constant exact in fixed point); True
    where its kind is not known from the query (the stage's own bound decides)."""
    from sqlsecure.executors.spu.stage import static_kind
    if isinstance(e, exp.Literal) and not e.is_string:
        return float(float(e.this) * 2 ** 16).is_integer()
    return static_kind(e, kind_of) in ("int", "bool", None)


def _exact_constant_divisor(divisor) -> bool:
    from sqlsecure.executors.spu.stage import decimal_ratio  # the division's own choice (exact or reciprocal)
    return decimal_ratio(divisor) is not None


# The least a kernel's bound adds on any row (ring units): its stated absolute accuracy (`_Bounds.kernel`'s
# `absolute`, LN's 18, SIN / COS's 2), the relative part being 0 at |v| = 0.
KERNEL_LEAST = {exp.Div: 4.0, exp.Sqrt: 4.0, exp.Ln: 18.0, exp.Log: 18.0, exp.Exp: 2.0, exp.Pow: 2.0,
                exp.Sin: 2.0, exp.Cos: 2.0, exp.Tan: 4.0, exp.Atan: 4.0, exp.Atan2: 4.0, exp.Asin: 4.0,
                exp.Acos: 4.0}


def least_bound(e: exp.Expression, kind_of=None) -> float:
    """A lower bound, in ring units, of `error_bound(stage, e)` on every row, from the query alone: 0 where e
    is exact, else its kernels' least bounds added up as `_Bounds` adds them, times the constants that
    multiply them and divided by those that divide them. With `kind_of` (the columns' kinds), a summed
    aggregate (`summed_aggregate`) counts too: one row's least bound at the least (a group rounded is not
    empty). A rounding guard refuses every row when twice it reaches the boundaries' spacing
    (`stage._finer_than_error`), so such a rounding is refused at plan time."""
    e = _unwrapped(e)
    if is_rounding(e):
        return 0.0  # its guard passed: DuckDB's rounded value (`_rounded`)
    if kind_of is not None and summed_aggregate(e, kind_of):
        return least_row_bound(e.this, kind_of) + (2.0 if isinstance(e, exp.Avg) else 0.0)
    if not is_approximate(e) and (kind_of is None or summed_part(e, kind_of) is None):
        return 0.0
    least = lambda x: least_bound(x, kind_of)  # noqa: E731
    if isinstance(e, (exp.Neg, exp.Abs, exp.Cast)):
        return least(e.this)
    if isinstance(e, (exp.Add, exp.Sub)):
        return least(e.left) + least(e.right)
    if isinstance(e, exp.Mul):
        return least(e.left) * _least_factor(e.right) + least(e.right) * _least_factor(e.left)
    if isinstance(e, exp.Div) and constant(e.expression):
        return least(e.left) / abs(float(constant(e.expression)))
    if isinstance(e, (exp.Case, exp.If, exp.Coalesce, exp.Nullif, exp.Greatest, exp.Least)):
        return sum(least(branch) for branch in _branches(e))
    if isinstance(e, exp.Pow) and whole_power(e):  # one unit per product (`_power`)
        return 2.0 * max(int(constant(e.expression) or 0).bit_length(), 1)
    if is_geodist(e):
        return 2.0
    return KERNEL_LEAST.get(type(e), 0.0)


def summed_aggregate(e: exp.Expression, kind_of) -> bool:
    """Whether `e` is a SUM / AVG whose rows' error bounds the stage sums beside it where it is rounded
    (`Stage.guarded_aggregates`): a SUM of fixed-point values (`Stage.sums_doubles`), or either of an
    amplified encoding. Its bound is a share (`_aggregate`), so its guard exempts no row on a boundary."""
    from sqlsecure.executors.spu.stage import static_kind  # late: no cycle
    if not isinstance(e, (exp.Sum, exp.Avg)) or isinstance(e.this, exp.Distinct):
        return False
    return amplified_encoding(e.this) or (isinstance(e, exp.Sum) and static_kind(e.this, kind_of) == "fixed")


def summed_part(e: exp.Expression, kind_of) -> exp.Expression | None:
    """The first summed aggregate (`summed_aggregate`) within `e` that is not under a rounding, or None."""
    e = _unwrapped(e)
    if is_rounding(e):
        return None
    if summed_aggregate(e, kind_of):
        return e
    return next(filter(None, (summed_part(child, kind_of) for child in e.iter_expressions())), None)


def least_row_bound(e: exp.Expression, kind_of) -> float:
    """A lower bound, in ring units, of one row's `error_bound` of an exact (not approximate) `e`, from
    the query alone, as `_Bounds` composes it: a DOUBLE or DECIMAL column, or a constant inexact in fixed
    point, one unit (`_encoded`); a product or a division by a constant one unit at least (the truncation);
    a sum at least its larger term's; an integer, boolean or date value, or a form not known here, 0. Never
    above one unit, so never above the bound whatever kind the stage finds (a DECIMAL sum's is one unit)."""
    return min(1.0, _least_row(e, kind_of))


def _least_row(e: exp.Expression, kind_of) -> float:
    from sqlsecure.executors.spu.stage import static_kind  # late: no cycle
    e = _unwrapped(e)
    kind = static_kind(e, kind_of)
    if kind in EXACT_KINDS or is_rounding(e):
        return 0.0
    if isinstance(e, exp.Column):
        return 1.0 if kind is not None else 0.0
    if isinstance(e, exp.Literal):
        return 0.0 if e.is_string or float(float(e.this) * 2 ** 16).is_integer() else 1.0
    if isinstance(e, (exp.Mul, exp.Div)):
        return 1.0
    if isinstance(e, (exp.Neg, exp.Abs)):
        return _least_row(e.this, kind_of)
    if isinstance(e, (exp.Add, exp.Sub)):
        return max(_least_row(e.left, kind_of), _least_row(e.right, kind_of))
    return 0.0


def _least_factor(e: exp.Expression) -> float:
    """What a product scales its other operand's bound by at the least: |c| for a constant c, 1 for a
    secret (`_Bounds.units`: ceil |v| + 1)."""
    c = constant(e)
    return abs(float(c)) if isinstance(c, (int, float)) else 1.0


def error_bound(stage, e: exp.Expression, rows: int):
    """|SPU value - DuckDB's value| of `e` (`rows` rows) in ring units: a float (every row) or an integer share."""
    return _Bounds(stage, rows).of(e)


def comparison_bound(stage, left: exp.Expression, right: exp.Expression, rows: int):
    """|(a - b) on the SPU - (a - b) in DuckDB| for a comparison of `left` with `right`: their bounds' sum."""
    bounds = _Bounds(stage, rows)
    return bounds.plus(bounds.of(left), bounds.of(right))


class _Bounds:
    """One walk over an expression tree; `of(node)` is the bound of one node."""

    def __init__(self, stage, rows: int):
        self.stage, self.s, self.n = stage, stage.s, rows

    # -- values and magnitudes -------------------------------------------------------------------
    def value(self, e: exp.Expression):
        node = _unwrapped(e)
        node_and_value = self.stage.values.get(id(node))
        return node_and_value[1] if node_and_value is not None and node_and_value[0] is node else None

    def units(self, e: exp.Expression) -> ArithShare:
        """ceil(|v|) of e's value, an integer share (frac 0): magnitudes that scale another bound."""
        raw = self.magnitude(e)
        return arith.truncate(self.s, raw, self.s.frac_bits) + self._public(2)

    def magnitude(self, e: exp.Expression) -> ArithShare:
        """|v| of e's value in ring units, an integer share (frac 0)."""
        v = self.value(e)
        x = self.stage.to_fixed(self.stage.secret(v, self.n)).value
        return compare.abs_(self.s, x).with_frac(0)

    def _public(self, amount: float) -> ArithShare:
        return arith.public(self.s, np.full(self.n, math.ceil(amount), dtype=np.int64))

    def relative(self, raw: ArithShare, factor: float) -> ArithShare:
        """At least factor * raw for a share of ring units (factor <= 1), without overflow: the magnitude
        is truncated first by about log2(1 / factor) bits (the factor then 4..8, a quarter at most above
        it), the truncation's error covered by one extra factor."""
        bits = min(40, max(0, -math.floor(math.log2(factor))) + 2)
        scale = math.ceil(factor * 2 ** bits)
        return arith.truncate(self.s, raw, bits) * scale + self._public(scale + 1)

    # -- composition -----------------------------------------------------------------------------
    def plus(self, a, b):
        if isinstance(a, float) and isinstance(b, float):
            return a + b
        if isinstance(a, float):
            a, b = b, a
        return a + (b if isinstance(b, ArithShare) else self._public(b))

    def times(self, err, units: ArithShare | float):
        """err scaled by a magnitude (ceil |v| units, a share or a float)."""
        if isinstance(err, float) and isinstance(units, float):
            return err * units
        if isinstance(err, float):
            return units * math.ceil(err) if err else 0.0
        if isinstance(units, float):
            return err * math.ceil(units)
        return arith.beaver_mul(self.s, err, units)

    def approximate(self, err):
        """A bound as a share: the value is an approximation (the guard exempts no row on a boundary)."""
        return err if isinstance(err, ArithShare) else self._public(err)

    def kernel(self, e: exp.Expression, absolute: float, bits: int = KERNEL_BITS) -> ArithShare:
        """A kernel's stated accuracy absolute + 2^-bits |v| (ring units) at e's value."""
        return self.relative(self.magnitude(e), 2.0 ** -bits) + self._public(absolute)

    # -- the rules -------------------------------------------------------------------------------
    def of(self, e: exp.Expression):
        """e's bound, computed once per evaluation: kept in `stage.error_bounds` beside the values it is
        computed from (an IN list's left operand is compared with every element, BETWEEN's twice)."""
        e = _unwrapped(e)
        v = self.value(e)
        if v is None:
            return _unknown(self, e)
        known = self.stage.error_bounds.get((id(e), self.n))
        if known is not None and known[0] is e:
            return known[1]
        bound = self._of(e, v)
        self.stage.error_bounds[(id(e), self.n)] = (e, bound)
        return bound

    def _of(self, e: exp.Expression, v):
        if v.kind in EXACT_KINDS:
            return 0.0
        if isinstance(e, (exp.Column, exp.Literal)) or decimal_scale(v.kind) is not None:
            return self._encoded(v)
        rule = RULES.get(type(e))
        if rule is None:
            rule = _geodist if is_geodist(e) else _unknown
        return rule(self, e)

    def _encoded(self, v):
        """A column or constant: a DOUBLE held to half a unit, a DECIMAL's fixed-point limb to one; a
        constant whose encoding is exact, none."""
        if not hasattr(v, "limbs") and isinstance(v.value, (int, float)) and \
                float(v.value * 2 ** self.s.frac_bits).is_integer():
            return 0.0
        return 1.0


def _unwrapped(e: exp.Expression) -> exp.Expression:
    while isinstance(e, exp.Paren):
        e = e.this
    return e


def _same(b: _Bounds, e: exp.Expression):
    return b.of(e.this)


def _sum(b: _Bounds, e: exp.Expression):
    return b.plus(b.of(e.left), b.of(e.right))


def _product(b: _Bounds, e: exp.Mul):
    """|a| err(b) + |b| err(a) + err(a) err(b) (covered by one more unit per operand) + the truncation."""
    ea, eb = b.of(e.left), b.of(e.right)
    parts = [1.0]
    for err, other in ((ea, e.right), (eb, e.left)):
        if isinstance(err, float) and err == 0.0:
            continue
        value = b.value(other)
        units = abs(float(value.value or 0)) + 2.0 if not hasattr(value, "limbs") else b.units(other)
        parts.append(b.times(b.plus(err, 1.0), units))
    total = parts[0]
    for part in parts[1:]:
        total = b.plus(total, part)
    return total


def _quotient(b: _Bounds, e: exp.Div):
    """x / c: err(x) / |c| (+ |x| times 1/c's encoding error where c is not divided exactly); x / y by a
    secret: divide_secret's 2^-14 (|q| + 1), and (err(x) + |q| err(y)) / |y| (err(x) where y is an exact
    integer, as |y| >= 1; otherwise divided by |y| on the SPU, doubled for the division's own error)."""
    divisor = _divisor(e)
    ex = b.of(e.left)
    c = constant(e.expression)
    if c is not None:
        err = b.plus(b.times(ex, 1.0 / abs(c)), 1.0)
        if _exact_constant_divisor(c):
            return err
        return b.plus(err, b.relative(b.magnitude(e.left), 0.5 ** (b.s.frac_bits + 1)))  # 1/c's encoding
    ey = b.of(divisor)
    err = b.kernel(e, 4.0)
    if isinstance(ey, float) and ey == 0.0:
        return b.plus(err, ex)
    spread = b.plus(ex, b.times(b.plus(ey, 1.0), b.units(e)))
    spread = b.approximate(spread)
    y = b.stage.to_fixed(b.stage.secret(b.value(divisor), b.n)).value
    ratio, _ = functions.divide_secret(b.s, spread.with_frac(b.s.frac_bits), compare.abs_(b.s, y))
    return b.plus(err, ratio.with_frac(0) * 2 + b._public(8))


def _divisor(e: exp.Div) -> exp.Expression:
    from sqlsecure.planner.dialects.postgres import checked_value
    divisor = _unwrapped(e.expression)
    divisor = checked_value(divisor) or divisor
    if isinstance(divisor, exp.Nullif) and constant(divisor.expression) == 0:
        return divisor.this
    return divisor


def _at_least_half(b: _Bounds, e: exp.Expression, near, far):
    """near where e's value >= 1/2, far elsewhere (one comparison): a slope bounded away from 0 only."""
    v = b.stage.to_fixed(b.stage.secret(b.value(e), b.n)).value
    half = arith.public(b.s, np.full(b.n, 0.5), v.frac)
    above = compare.greater_equal(b.s, v, half, arith=True)
    near, far = b.approximate(near), b.approximate(far)
    return far + arith.beaver_mul(b.s, above, near - far)


def _sqrt(b: _Bounds, e: exp.Sqrt):
    """2^-14 (r + 1); the input's err: at most err where r >= 1/2 (slope 1 / (2r) <= 1, doubled), else
    sqrt(err) (a whole float) or unbounded."""
    ex, err = b.of(e.this), b.kernel(e, 4.0)
    if isinstance(ex, float) and ex == 0.0:
        return err
    far = math.sqrt(ex * 2 ** b.s.frac_bits) + 1.0 if isinstance(ex, float) else UNBOUNDED
    return b.plus(err, _at_least_half(b, e, b.times(ex, 2.0), far))


def _logarithm(b: _Bounds, e: exp.Expression):
    """LN's 2^-12; the input's err: slope 1 / x <= 2 where x >= 1/2 (tripled), unbounded below; times
    1 / ln(base) for LOG."""
    argument = e.expression if isinstance(e, exp.Log) and e.expression is not None else e.this
    ex, err = b.of(argument), b.approximate(16.0 + 2.0)
    if not (isinstance(ex, float) and ex == 0.0):
        err = b.plus(err, _at_least_half(b, argument, b.times(ex, 3.0), UNBOUNDED))
    return err


def _exponential(b: _Bounds, e: exp.Exp):
    """2^-14 |v| + 2^-15; the input's err: |v| (e^err - 1) <= 2 |v| err."""
    ex, err = b.of(e.this), b.kernel(e, 2.0)
    if isinstance(ex, float) and ex == 0.0:
        return err
    return b.plus(err, b.times(b.times(b.plus(ex, 1.0), 2.0), b.units(e)))


def _power(b: _Bounds, e: exp.Pow):
    """POWER(x, n), n a whole constant: one unit per product, relative (|v| 2^-16 each), and the input's
    n err (|v| + 1). Any other exponent: EXP(y LN |x|)'s 2^-14 (1 + |y| 2^-8) |v| + 2^-15 where x and y
    are exact, unbounded otherwise."""
    ex = b.of(e.this)
    if whole_power(e):
        n = constant(e.expression) or 0
        products = 2.0 * max(n.bit_length(), 1)
        err = b.plus(b._public(products), b.relative(b.magnitude(e), min(1.0, products * 2.0 ** -b.s.frac_bits)))
        if not (isinstance(ex, float) and ex == 0.0):
            err = b.plus(err, b.times(b.times(b.plus(ex, 1.0), float(n)), b.units(e)))
        return err
    if not all(isinstance(x, float) and x == 0.0 for x in (ex, b.of(e.expression))):
        return b.approximate(UNBOUNDED)
    y = constant(e.expression)
    exponent = POWER_EXPONENT_LIMIT if y is None else abs(float(y))
    factor = min(1.0, 2.0 ** -KERNEL_BITS * (1.0 + exponent * 2.0 ** -8))
    return b.plus(b.relative(b.magnitude(e), factor), 2.0)


def _trig(b: _Bounds, e: exp.Expression):
    """SIN / COS: 2^-15 and the input's err (slope <= 1); TAN: 2^-14 (|t| + 1) and err (1 + t^2);
    ATAN: 2^-14 and err; ATAN2, ASIN, ACOS: 2^-14 where the inputs are exact, unbounded otherwise."""
    inputs = [b.of(x) for x in (e.this, e.args.get("expression")) if x is not None]
    exact = all(isinstance(x, float) and x == 0.0 for x in inputs)
    if isinstance(e, (exp.Sin, exp.Cos)):
        return b.plus(b.approximate(2.0), inputs[0])
    if isinstance(e, exp.Atan) and e.args.get("expression") is None:
        return b.plus(b.approximate(4.0), inputs[0])
    if isinstance(e, exp.Tan):
        err = b.kernel(e, 4.0)
        if exact:
            return err
        units = b.units(e)
        return b.plus(err, b.times(b.plus(inputs[0], 1.0), arith.beaver_mul(b.s, units, units) + b._public(1)))
    return b.approximate(4.0 if exact else UNBOUNDED)


def _geodist(b: _Bounds, e: exp.Anonymous):
    """radius 2^-23 + 2^-15, and radius (pi / 180) times the coordinates' errors (slope <= 1 per radian)."""
    arguments = e.expressions
    radius = float(constant(arguments[4]) or RADIUS_LIMIT) if len(arguments) == 5 else float(EARTH_RADIUS)
    if len(arguments) == 5 and not (isinstance(b.of(arguments[4]), float) and b.of(arguments[4]) == 0.0):
        return b.approximate(UNBOUNDED)
    err = b.approximate(radius * 2.0 ** (b.s.frac_bits - 23) + 2.0)
    for coordinate in arguments[:4]:
        err = b.plus(err, b.times(b.of(coordinate), abs(radius) * math.pi / 180.0 + 1.0))
    return err


def _branches(e: exp.Expression) -> list[exp.Expression]:
    """The values CASE / IF / COALESCE / NULLIF / GREATEST / LEAST choose among."""
    return [e.this] if isinstance(e, exp.Nullif) else choices(e)


def _either(b: _Bounds, e: exp.Expression):
    """CASE / IF / COALESCE / NULLIF / GREATEST / LEAST: the value is one of the branches (or within the larger
    of two close ones' errors of DuckDB's choice): at most the sum of their bounds."""
    total = 0.0
    for branch in _branches(e):
        total = b.plus(total, b.of(branch))
    return total


def _aggregate(b: _Bounds, e: exp.Expression):
    """SUM / AVG of an amplified encoding, or a SUM of DOUBLEs (`Stage.sums_doubles`): its group's per-row bounds summed beside it (`Stage.aggregate_errors`;
    an AVG's mean is no further off than that sum, its division adds 2 units); nowhere summed, unbounded (the
    guard refuses rather than compare on an error it cannot bound). Any other argument: `_unknown`."""
    if not amplified_encoding(e.this) and not b.stage.sums_doubles(e):
        return _unknown(b, e)
    summed = b.stage.aggregate_errors.get(e.sql(dialect="duckdb"))
    if summed is None or len(summed) != b.n:
        return b.approximate(UNBOUNDED)
    return summed + b._public(2) if isinstance(e, exp.Avg) else summed


def _rounded(b: _Bounds, e: exp.Expression):
    """ROUND / FLOOR / CEIL (its guard passed): DuckDB's rounded value, held to its encoding."""
    return 1.0


def _unknown(b: _Bounds, e: exp.Expression):
    """A node without its own rule (an aggregate, AVG's exact quotient): the encoding's slack where no
    approximate kernel lies below it, unbounded otherwise."""
    return b.approximate(UNBOUNDED) if is_approximate(e) else ENCODED


RULES = {
    exp.Neg: _same, exp.Abs: _same, exp.Cast: _same, exp.Add: _sum, exp.Sub: _sum, exp.Mul: _product,
    exp.Div: _quotient, exp.Sqrt: _sqrt, exp.Ln: _logarithm, exp.Log: _logarithm, exp.Exp: _exponential,
    exp.Pow: _power, **{cls: _trig for cls in TRIG}, exp.Case: _either, exp.If: _either,
    exp.Coalesce: _either, exp.Nullif: _either, exp.Greatest: _either, exp.Least: _either,
    **{cls: _rounded for cls in ROUNDING}, exp.Sum: _aggregate, exp.Avg: _aggregate,
}
