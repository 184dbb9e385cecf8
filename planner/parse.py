"""Parse, validate and qualify a federated query.

A federated query is one read-only SELECT (with CTEs, subqueries, set operations) whose tables are
all `party.table` names from the catalog. Anything that could reach outside the federation —
other statements, table functions, functions that read files or settings — is refused here; the
parties' DuckDB connections are also locked down, so this is the first of two fences.
"""

from __future__ import annotations

import datetime
import decimal

import sqlglot
from sqlglot import exp
from sqlglot.errors import OptimizeError, ParseError
from sqlglot.optimizer.qualify import qualify

from sqlsecure.errors import PlanError
from sqlsecure.planner.catalog import Catalog
from sqlsecure.planner.dialects import to_duckdb_meaning
from sqlsecure.planner.views import expand_views, used_views

# Scalar functions that read the host environment or files.
DENIED_FUNCTIONS = {
    "getenv", "current_setting", "read_text", "read_blob", "glob", "read_csv", "read_csv_auto",
    "read_parquet", "read_json", "read_json_auto", "read_ndjson", "parquet_scan", "sniff_csv",
    "duckdb_settings", "duckdb_extensions", "pragma_version", "query", "query_table",
}


def where(node: exp.Expression, sql: str) -> str:
    """'line L, column C' of a node, for error messages."""
    meta = node.meta if node.meta else getattr(node.this, "meta", None) or {}
    if "line" in meta:
        return f" (line {meta['line']}, column {meta['col']})"
    return ""


def parse_statement(sql: str, dialect: str) -> exp.Expression:
    """Parse exactly one statement (of any kind)."""
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        pos = f" at line {first.get('line')}, column {first.get('col')}" if first else ""
        desc = first.get("description", str(exc))
        raise PlanError(f"syntax error{pos}: {desc}") from None
    if len(statements) != 1:
        raise PlanError(f"expected one statement, got {len(statements)}")
    return statements[0]


def parse_query(sql: str, dialect: str) -> exp.Expression:
    """Parse one read-only query; refuse every other kind of statement."""
    tree = parse_statement(sql, dialect)
    if not isinstance(tree, exp.Query):
        kind = tree.key.upper() if not isinstance(tree, exp.Command) else str(tree.this).upper()
        raise PlanError(f"only SELECT queries are allowed; got {kind}")
    if tree.find(exp.Into) is not None:
        raise PlanError("SELECT ... INTO is not allowed: queries are read-only")
    return tree


def check_references(tree: exp.Expression, catalog: Catalog, sql: str, issuer: str | None = None) -> None:
    """Every table must be a known `party.table` (or a CTE); no table functions, no denied functions.

    An unqualified name that is neither a CTE nor ambiguous means the issuer's own table (its search
    path), and is qualified in place."""
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            raise PlanError(f"table functions are not allowed: {table.this.sql()}{where(table, sql)}")
        party, name = table.db, table.name
        if table.catalog:
            raise PlanError(f"tables are addressed as party.table, not {table.sql()}{where(table, sql)}")
        if not party:
            if name in ctes:
                continue
            if issuer is not None and catalog.has_table(issuer, name):
                table.set("db", exp.to_identifier(issuer))
                continue
            raise PlanError(f"table {name!r} needs its party: write party.{name}{where(table, sql)}")
        if not catalog.has_party(party):
            known = ", ".join(sorted(catalog.tables))
            raise PlanError(f"unknown party {party!r}{where(table, sql)}; parties are: {known}")
        if not catalog.has_table(party, name):
            known = ", ".join(sorted(catalog.tables[party])) or "(none)"
            raise PlanError(f"unknown table {party}.{name}{where(table, sql)}; {party} has: {known}")
    for func in tree.find_all(exp.Func):
        name = (func.name if isinstance(func, exp.Anonymous) else func.sql_name()).lower()
        if name in DENIED_FUNCTIONS or isinstance(func, (exp.ReadCSV,)):
            raise PlanError(f"function {name}() is not allowed in a federated query{where(func, sql)}")


def qualify_query(tree: exp.Expression, catalog: Catalog, dialect: str, sql: str) -> exp.Expression:
    """Qualify every column as `"alias"."column"` against the catalog; unknown names are PlanErrors."""
    try:
        return qualify(
            tree,
            schema=catalog.sqlglot_schema(dialect),
            dialect=dialect,
            quote_identifiers=True,
            validate_qualify_columns=True,
        )
    except OptimizeError as exc:
        raise PlanError(f"{exc}") from None


def bind_parameters(tree: exp.Expression, parameters) -> exp.Expression:
    """Replace each `?` with a literal of the matching parameter, in order — on the parsed tree, never by
    string interpolation, so a parameter can only ever be a value."""
    placeholders = list(tree.find_all(exp.Placeholder))
    values = list(parameters or ())
    if len(placeholders) != len(values):
        raise PlanError(f"the query has {len(placeholders)} parameter marker(s) (?), {len(values)} value(s) given")
    for placeholder, value in zip(placeholders, values):
        if value is not None and not isinstance(value, (bool, int, float, str, bytes, decimal.Decimal,
                                                        datetime.date, datetime.time, datetime.datetime)):
            raise PlanError(f"unsupported parameter type {type(value).__name__}")
        placeholder.replace(exp.convert(value))
    return tree


def resolved_names(tree: exp.Expression, catalog: Catalog, issuer: str | None) -> tuple[str, ...]:
    """How each bare table name of a query resolves, for EXPLAIN: a federation view, or the issuer's table."""
    out = [f"{name}: the federation view {name}" for name in used_views(tree, catalog.views)]
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    for table in tree.find_all(exp.Table):
        name = table.name
        line = f"{name}: {issuer}.{name} (the issuer's own table)"
        if (not table.db and name not in ctes and name not in catalog.views and issuer is not None
                and catalog.has_table(issuer, name) and line not in out):
            out.append(line)
    return tuple(out)


def load_query(sql: str, catalog: Catalog, dialect: str, parameters=None, issuer: str | None = None,
               time_zone: str = "UTC") -> exp.Expression:
    """Parse, bind `?` parameters, expand federation views, check references, qualify, then rewrite what
    DuckDB would answer differently from `dialect` (planner/dialects/; CURDATE() etc. in `time_zone`)."""
    tree = expand_views(bind_parameters(parse_query(sql, dialect), parameters), catalog.views)
    check_references(tree, catalog, sql, issuer)
    tree = qualify_query(tree, catalog, dialect, sql)
    return to_duckdb_meaning(tree, dialect, catalog.sqlglot_schema(dialect), time_zone)
