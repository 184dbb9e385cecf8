"""Which rows reach the part of an expression being evaluated: a refusal counts those rows only.

PostgreSQL raises its errors (a division by zero, SQRT of a negative) only on the rows that reach the
expression: not in a CASE branch a row does not take, not on the right of an AND / OR its left already decides,
not on a COALESCE argument after a non-NULL one, not on an IN-list item after one that matched, not on a row a
WHERE conjunct evaluated first dropped. The SPU evaluates every part on every row (obliviously), so a refusal
(`stage.Stage._refuse_counted`: a division by zero, a value outside a function's domain, an approximation's
guard) counts a row only where it reaches that part: the product of the secret 0/1 factors of the position,
times the stage's row weight. Factors are shares the evaluation computes anyway (a CASE condition's truth) or
functions giving one (an AND's left "not false"), called and multiplied only when a refusal is tested, so a
query with no refusal inside a branch pays no round for them.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Union

from sqlglot import exp

from sqlsecure.executors.spu import arith
from sqlsecure.executors.spu.ranges import constant
from sqlsecure.executors.spu.shares import ArithShare

Factor = Union[ArithShare, Callable[[], ArithShare]]
DIVISIONS = (exp.Div, exp.IntDiv, exp.Mod)
REFUSING = (exp.Sqrt, exp.Ln, exp.Log, exp.Exp, exp.Pow, exp.Tan, exp.Asin, exp.Acos,  # a domain or range test
            exp.Round, exp.Floor, exp.Ceil, exp.Cast)  # a rounding's boundary guard


class Reach:
    """The factors of the position being evaluated, innermost last (`within` adds them for a part)."""

    def __init__(self, s):
        self.s = s
        self.factors: list[Factor] = []

    @contextmanager
    def within(self, *factors: Factor):
        """Evaluate a part reached where every factor is 1 (and the enclosing ones are)."""
        depth = len(self.factors)
        self.factors.extend(factors)
        try:
            yield
        finally:
            del self.factors[depth:]

    def counted(self, bad: ArithShare, weight: ArithShare | None = None) -> ArithShare:
        """`bad` (a 0/1 share per row) where the row reaches the current part and its `weight` is 1: the
        product with every factor (a factor given as a function is computed once), pairwise, in
        ceil(log2(k + 2)) rounds for k factors (one, `bad` times the weight, outside any branch)."""
        for i, factor in enumerate(self.factors):
            if callable(factor):
                self.factors[i] = factor()
        level = [bad, *(f for f in [*self.factors, weight] if f is not None and len(f) == len(bad))]
        while len(level) > 1:
            products = arith.beaver_mul_many(self.s, list(zip(level[0::2], level[1::2])))
            level = products + level[len(products) * 2:]
        return level[0]


def may_refuse(e: exp.Expression) -> bool:
    """Whether evaluating `e` on the SPU may refuse a row: a division by anything but a nonzero constant or
    NULLIF(y, 0) (MySQL's rule: NULL, no refusal), a function with a domain or range test, a rounding or CAST
    (their boundary guards). A static over-approximation: it only orders a WHERE's conjuncts.

    >>> import sqlglot
    >>> may_refuse(sqlglot.parse_one("b <> 2")), may_refuse(sqlglot.parse_one("a / (b - 2) > 1"))
    (False, True)
    >>> may_refuse(sqlglot.parse_one("a / NULLIF(b, 0) + a / 3"))
    False
    """
    for node in e.walk():
        if isinstance(node, DIVISIONS):
            divisor = node.expression.unnest()
            null_on_zero = isinstance(divisor, exp.Nullif) and constant(divisor.expression) == 0
            if not (constant(divisor) or null_on_zero):
                return True
        elif isinstance(node, REFUSING):
            return True
    return False


def pg_filter_order(filters: list[str], parse) -> list[str]:
    """A WHERE's conjuncts (SQL text) in the order they are evaluated: those that cannot refuse a row first,
    as PostgreSQL tests the cheaper quals first (a guard costs a division or a function), then the others in
    the written order; each one then counts only the rows the earlier ones keep (the stage's weight)."""
    return sorted(filters, key=lambda sql: may_refuse(parse(sql)))
