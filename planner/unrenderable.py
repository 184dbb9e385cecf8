"""Constructs sqlglot fails on, refused by name instead of surfacing as an InternalError.

sqlglot raises plain Python exceptions (AttributeError, AssertionError, ...) on some valid SQL: rendering
`DATETIME(x)` or `JSON_OBJECT(...)` in DuckDB's dialect, qualifying a `PIVOT` inside a subquery. The planner renders
and qualifies every query, so such a query failed as "internal error: this is a bug". `refuse_unrenderable` renders
each node of the parsed query once, before anything else does, and refuses the innermost one sqlglot cannot render
with a NotSupportedError naming it; `unqualifiable` names the construct when qualification itself fails.
"""

from __future__ import annotations

from sqlglot import exp

from sqlsecure.errors import NotSupportedError, PlanError
from sqlsecure.planner.ccl_rules import function_name

ADVICE = "rewrite it with the functions and clauses docs/federation.md lists"
# Clauses sqlglot's scope analysis does not handle everywhere, named when qualification fails.
SHAPES = (exp.Pivot, exp.Unnest, exp.Lateral, exp.TableSample, exp.Lambda, exp.Columns)


def _renders(node: exp.Expression) -> bool:
    try:
        node.sql(dialect="duckdb")
        return True
    except Exception:  # noqa: BLE001 - any failure of sqlglot's generator: the node is refused by name below
        return False


def refuse_unrenderable(tree: exp.Expression) -> None:
    """PlanError naming a function called without an argument it requires (`CEIL()`: sqlglot's typing fails on
    it); NotSupportedError naming a function whose argument list sqlglot built as one value (`J_S_O_N_OBJECT_AGG(x)`)
    or the innermost node of `tree` sqlglot cannot render in DuckDB's dialect."""
    for func in tree.find_all(exp.Func):
        missing = [k for k, required in func.arg_types.items() if required and func.args.get(k) in (None, [])]
        if missing:
            raise PlanError(f"{function_name(func)}() is missing its argument(s) ({', '.join(missing)}): "
                            f"{func.sql(dialect='duckdb') if _renders(func) else function_name(func)}")
        if not isinstance(func.args.get("expressions") or [], list):  # sqlglot built a list argument from one value
            raise NotSupportedError(f"{function_name(func)} is not supported here: the SQL translator (sqlglot) read "
                                    f"its arguments wrongly; {ADVICE}")
    if _renders(tree):
        return
    failing = tree
    for node in tree.walk():  # parents before children: the last failing one is innermost
        if node is not tree and not _renders(node):
            failing = node
    raise NotSupportedError(f"{function_name(failing)} is not supported here: the SQL translator (sqlglot) cannot "
                            f"render it for the parties' databases; {ADVICE}")


def unqualifiable(tree: exp.Expression, error: Exception) -> NotSupportedError:
    """The refusal of a query sqlglot's qualification failed on with a plain exception (a bug of sqlglot)."""
    shape = next((n for n in tree.walk() if isinstance(n, SHAPES)), None)
    named = function_name(shape) if shape is not None else "this query's shape"
    return NotSupportedError(f"{named} is not supported here: the SQL translator (sqlglot) cannot resolve the "
                             f"query's columns ({type(error).__name__}); {ADVICE}")
