"""Writes on the issuer's own database: CREATE TABLE (also AS a federated query), INSERT (VALUES or
a federated query), UPDATE, DELETE, DROP TABLE — each run as the issuer's local work.

Every table a write names must be the issuer's own (unqualified, or `issuer.table`); other parties'
tables stay read-only, except as the source of a federated query, which is planned, checked
against the grants and answered like any SELECT before its revealed rows are stored. Anything
reaching outside the federation stays refused (table functions, host-reading functions), and the
issuer's DuckDB stays locked down.
"""

from __future__ import annotations

from sqlglot import exp

from sqlsecure.errors import NotSupportedError, PlanError, PolicyViolation
from sqlsecure.planner.build import localize
from sqlsecure.planner.parse import DENIED_FUNCTIONS, bind_parameters, where

WRITES = (exp.Create, exp.Insert, exp.Update, exp.Delete, exp.Drop)


def is_write(tree: exp.Expression) -> bool:
    return isinstance(tree, WRITES)


def _source_query(tree: exp.Expression) -> exp.Query | None:
    source = tree.args.get("expression")
    return source if isinstance(source, exp.Query) else None


def run_write(engine, tree: exp.Expression, issuer: str, sql: str, parameters=None) -> int:
    """Run a write statement as `issuer`; returns the rows affected (-1 for DDL)."""
    tree = bind_parameters(tree, parameters)
    if isinstance(tree, (exp.Create, exp.Drop)) and str(tree.args.get("kind", "")).upper() != "TABLE":
        raise NotSupportedError(f"{tree.key.upper()} {tree.args.get('kind')} is not supported; only tables")
    source = _source_query(tree)
    result = None
    if source is not None and any(t.db and t.db != issuer for t in source.find_all(exp.Table)):
        # a federated query: answered (and policy-checked) like any SELECT, then stored locally
        result = engine.execute(source.sql(dialect=engine.config.dialect), issuer).table
        tree = tree.copy()
        tree.set("expression", exp.select("*").from_("__result"))
    ctes = {c.alias_or_name for c in tree.find_all(exp.CTE)}
    for table in tree.find_all(exp.Table):
        if table.name == "__result" and result is not None:
            continue
        if not isinstance(table.this, exp.Identifier) or table.catalog:
            raise PlanError(f"not allowed in a write: {table.sql()}{where(table, sql)}")
        if table.db and table.db != issuer:
            raise PolicyViolation(f"{table.db}.{table.name} belongs to {table.db}: only {issuer}'s own tables "
                                  f"can be written, or read by a local write{where(table, sql)}")
        if not table.db and table.name in ctes:
            continue
    for func in tree.find_all(exp.Func):
        name = (func.name if isinstance(func, exp.Anonymous) else func.sql_name()).lower()
        if name in DENIED_FUNCTIONS or isinstance(func, exp.ReadCSV):
            raise PlanError(f"function {name}() is not allowed{where(func, sql)}")
    store = engine.store_of(issuer)
    rows = store.write(localize(tree).sql(dialect="duckdb"), result)
    engine.refresh_catalog(issuer)
    return rows
