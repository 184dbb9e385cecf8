"""The federation's dialect means that dialect's answers, even though parties run DuckDB.

sqlglot's transpiler already turns most of a MySQL or PostgreSQL query into DuckDB SQL of the same
meaning; the rules of `mysql.py` and `postgres.py` rewrite what it leaves meaning something else (or
refuse it, naming the function, where no DuckDB expression means exactly the same). They run once, on
the qualified tree (so column types are known), right after parsing in `planner.parse.load_query`.
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.schema import Schema

from sqlsecure.planner.dialects import mysql, postgres
from sqlsecure.planner.dialects.common import DialectContext

RULES = {"mysql": mysql.RULES, "postgres": postgres.RULES}


def to_duckdb_meaning(tree: exp.Expression, dialect: str, schema: Schema | None = None,
                      time_zone: str = "UTC") -> exp.Expression:
    """`tree` (parsed in `dialect`) rewritten so that its DuckDB SQL returns what `dialect` returns."""
    context = DialectContext(dialect, time_zone)
    for rule in RULES.get(dialect, ()):
        tree = rule(annotate_types(tree, schema=schema, dialect=dialect), context)
    return tree
