"""Constants too large to build while planning, refused before any DuckDB sees the query.

DuckDB's binder folds a constant expression to learn its type: `DESCRIBE SELECT LENGTH(REPEAT('x', 2^31))`
builds the 2 GiB text (4 GB of memory, seconds of CPU) in the planner's typing DuckDB (planner/build.py
`duckdb_names`, planner/pushdown_typing.py `bind_pushdown`), and again at the party that runs it. So a query
could make planning, `check` and EXPLAIN exhaust the issuer's machine. `refuse_huge_constants` bounds the size of
every constant (no column, aggregate, window or subquery) whose size grows with a count — REPEAT, LPAD / RPAD,
SPACE, REPLACE, concatenations, PRINTF / FORMAT widths, BITSTRING, RANGE / GENERATE_SERIES and list resizes —
from the query's text alone, and refuses one beyond `CONSTANT_BYTES`, or one whose count it cannot bound (deny by
default), naming the function and the limit.
"""

from __future__ import annotations

import math
import re

from sqlglot import exp

from sqlsecure.errors import DataError
from sqlsecure.planner.ccl_rules import function_name, magnitude

CONSTANT_BYTES = 2 ** 24  # 16 MiB: the largest constant the planner lets DuckDB build to type a query
NUMBER_BYTES = 64  # the longest text of a number or date
WIDTHS = re.compile(r"\d+")  # PRINTF's and FORMAT's widths and precisions in a constant format string
# Functions sqlglot does not type, by name: (the count argument's position, bytes per unit of the count)
COUNTED = {"bitstring": (1, 1), "list_resize": (1, 16), "array_resize": (1, 16), "array_fill": (1, 16)}
FORMATTING = {"printf", "format"}


def _count(e: exp.Expression | None) -> float:
    """The largest |value| of a constant count, from its literals through + - * and casts; infinite where the
    text does not bound it."""
    if e is None:
        return 0
    bound = magnitude(e, lambda column: None)
    return math.inf if bound is None else bound


def constant_bytes(e: exp.Expression) -> float:
    """B with the constant `e`'s value at most B bytes (a list: 16 bytes an element); infinite where unbounded."""
    if isinstance(e, exp.Literal):
        return len(e.this.encode()) if e.is_string else NUMBER_BYTES
    if isinstance(e, exp.Repeat):
        return constant_bytes(e.this) * _count(e.args.get("times"))
    if isinstance(e, exp.Pad):
        return max(constant_bytes(e.this), 4 * _count(e.expression))
    if isinstance(e, exp.Space):
        return _count(e.this)
    if isinstance(e, exp.Replace):
        return constant_bytes(e.this) * max(constant_bytes(e.args.get("replacement") or exp.null()), 1)
    if isinstance(e, (exp.GenerateSeries, exp.ExplodingGenerateSeries)):
        ends = [_count(e.args.get(k)) for k in ("start", "end")]
        return 16 * (sum(ends) + 1) if "end" in e.args or "start" in e.args else math.inf
    name = e.name.lower() if isinstance(e, exp.Anonymous) else ""
    if isinstance(e, exp.Format) or name in FORMATTING:
        pattern = e.this if isinstance(e, exp.Format) else (e.expressions or [None])[0]
        widths = sum(int(w) for w in WIDTHS.findall(pattern.this)) if isinstance(pattern, exp.Literal) else math.inf
        return widths + sum(constant_bytes(a) for a in e.iter_expressions())
    if name in COUNTED:
        position, unit = COUNTED[name]
        arguments = e.expressions
        count = _count(arguments[position]) if len(arguments) > position else math.inf
        return unit * count + sum(constant_bytes(a) for a in arguments)
    # any other function: no larger than its arguments together (concatenations, casts, CASE, lists, ...)
    return NUMBER_BYTES + sum(constant_bytes(a) for a in e.iter_expressions())


GROWING = (exp.Repeat, exp.Pad, exp.Space, exp.Replace, exp.GenerateSeries, exp.ExplodingGenerateSeries,
           exp.Format, exp.DPipe, exp.Concat, exp.ConcatWs, exp.Anonymous)


def _constant(e: exp.Expression) -> bool:
    return e.find(exp.Column, exp.AggFunc, exp.Window, exp.Query, exp.Placeholder) is None


def refuse_huge_constants(tree: exp.Expression) -> None:
    """DataError naming the first (innermost) constant whose size grows with a count beyond `CONSTANT_BYTES`, or
    cannot be bounded from the query's text; nothing else is evaluated to decide."""
    for node in reversed(list(tree.walk())):  # children before their parents: the innermost is named
        if not isinstance(node, GROWING) or not _constant(node) or isinstance(node.parent, (exp.Table, exp.From)):
            continue  # a series in FROM is a table function's rows, streamed at the party, never folded
        size = constant_bytes(node)
        if size > CONSTANT_BYTES:
            shown = node.sql(dialect="duckdb")
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            amount = "a size the query's text does not bound" if math.isinf(size) else f"about {_bytes(size)}"
            raise DataError(
                f"{_name(node)} in {shown} builds a constant of {amount}; constants above "
                f"{_bytes(CONSTANT_BYTES)} are refused at plan time (typing the query would build them), and text "
                "is limited to 4 GiB anyway: use smaller integer constant counts, or compute it from a column")


def _name(node: exp.Expression) -> str:
    if isinstance(node, exp.Pad):
        return "LPAD" if node.args.get("is_left") else "RPAD"
    return function_name(node)


def _bytes(n: float) -> str:
    for unit, size in (("TiB", 2 ** 40), ("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} bytes"
