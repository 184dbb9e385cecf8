"""Federation views: one name for a query over parties' tables, e.g. a table partitioned across parties.

```toml
[views]
diagnosis = "SELECT pid, diag, time FROM h1.diagnosis UNION ALL SELECT pid, diag, time FROM h2.diagnosis"
```

A bare table name resolves to a CTE of the query first (SQL's own scoping), then to a view, then to
the issuer's own table. `expand_views` replaces each view reference by the view's query as a derived
table with the reference's alias, before the query is qualified, so a view's columns keep each
owner's grants exactly as if the query had been written out. Views may use other views; a cycle, or a
view reading an unknown party, table or column, is a `ConfigError` naming the view (`check_views`).
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.errors import OptimizeError, SqlglotError
from sqlglot.optimizer.qualify import qualify

from sqlsecure.errors import ConfigError, DataError, PlanError
from sqlsecure.planner.catalog import Catalog

MAX_DEPTH = 32  # views of views, at most this deep


def parse_views(raw: dict, dialect: str, problem=None) -> dict[str, exp.Query]:
    """Each view's parsed query. A view that is not one SELECT is reported as `problem(key, text)` (the
    federation loader's collector) or, without one, raised as a ConfigError naming the view."""
    from sqlsecure.planner.parse import parse_query  # parse imports this module

    def report(key: str, text: str) -> None:
        if problem is None:
            raise ConfigError(f"[{key}]: {text}" if key == "views" else f"[views].{key[6:]}: {text}")
        problem(key, text)

    if not isinstance(raw, dict):
        report("views", 'must be a table of name = "SELECT ..."')
        return {}
    views = {}
    for name, sql in raw.items():
        if not isinstance(sql, str):
            report(f"views.{name}", "must be a string holding one SELECT query")
            continue
        if name.lower() in views:
            report(f"views.{name}", "another view has this name in other letter case (names are case-insensitive)")
            continue
        try:
            views[name.lower()] = parse_query(sql, dialect)
        except PlanError as exc:
            report(f"views.{name}", str(exc))
    return views


def _references(tree: exp.Expression, ctes: set[str]) -> list[exp.Table]:
    """The bare table references of `tree` that are not names of its CTEs (names compared case-insensitively,
    as SQL compares unquoted identifiers)."""
    own = {name.lower() for name in ctes} | {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    return [t for t in tree.find_all(exp.Table) if not t.db and not t.catalog and isinstance(t.this, exp.Identifier)
            and t.name.lower() not in own]


def expand_views(tree: exp.Expression, views: dict[str, exp.Query], ctes: frozenset[str] = frozenset(),
                 chain: tuple[str, ...] = ()) -> exp.Expression:
    """`tree` with every reference to a view replaced by `(view query) AS alias`, recursively."""
    if not views:
        return tree
    for table in _references(tree, set(ctes)):
        name = table.name.lower()
        if name not in views:
            continue
        if name in chain or len(chain) >= MAX_DEPTH:
            path = " -> ".join((*chain, name))
            raise ConfigError(f"view {chain[0] if chain else name!r} refers to itself: {path}")
        body = expand_views(views[name].copy(), views, frozenset(), (*chain, name))
        alias = table.args.get("alias") or exp.TableAlias(this=exp.to_identifier(table.name))
        table.replace(exp.Subquery(this=body, alias=alias.copy()))
    return tree


def used_views(tree: exp.Expression, views: dict[str, exp.Query]) -> list[str]:
    """The views a query refers to by bare name (for EXPLAIN), in order of first use."""
    out: list[str] = []
    for table in _references(tree, set()):
        if table.name.lower() in views and table.name.lower() not in out:
            out.append(table.name.lower())
    return out


def check_views(views: dict[str, exp.Query], catalog: Catalog, dialect: str) -> dict[str, list[tuple[str, str]]]:
    """Every view expands (no cycle) and reads known parties, tables and columns; returns its columns
    with the types DuckDB gives them (for `\\d` and the Flight SQL metadata; "" where DuckDB cannot
    type the view's text as it stands, e.g. MySQL's IFNULL(text, 1) before the dialect's rewrites)."""
    from sqlsecure.planner.build import duckdb_types  # build imports the parser, which imports this module

    out = {}
    for name in views:
        tree = expand_views(exp.select("*").from_(exp.to_table(name)), views)
        for table in tree.find_all(exp.Table):
            if not table.db:
                raise ConfigError(f"view {name!r} reads {table.name!r}: write its party as party.{table.name}")
            if not catalog.has_table(table.db, table.name):
                raise ConfigError(f"view {name!r} reads unknown table {table.db}.{table.name}")
        try:
            qualified = qualify(tree, schema=catalog.sqlglot_schema(dialect), dialect=dialect,
                                validate_qualify_columns=True)
        except (OptimizeError, SqlglotError) as exc:
            raise ConfigError(f"view {name!r}: {exc}") from None
        try:  # for display only: a query over the view is typed (and refused) in the federation's dialect
            types = duckdb_types(qualified, catalog) or ("",) * len(qualified.selects)
        except (PlanError, DataError):
            types = ("",) * len(qualified.selects)
        out[name] = [(e.alias_or_name, t) for e, t in zip(qualified.selects, types)]
    return out
