"""Parse, validate and qualify a federated query.

A federated query is one read-only SELECT (with CTEs, subqueries, set operations) whose tables are
all `party.table` names from the catalog. Anything that could reach outside the federation —
other statements, table functions, functions that read files or settings — is refused here; the
parties' DuckDB connections are also locked down, so this is the first of two fences.
"""

from __future__ import annotations

import datetime
import decimal
import math
import re
from collections.abc import Sequence

import sqlglot
from sqlglot import exp
from sqlglot.dialects import Dialect
from sqlglot.errors import OptimizeError, ParseError, TokenError
from sqlglot.optimizer.qualify import qualify
from sqlglot.tokens import TokenType

from sqlsecure.errors import DataError, NotSupportedError, PlanError
from sqlsecure.planner.build import duckdb_names, name_outputs
from sqlsecure.planner.catalog import Catalog
from sqlsecure.planner.constant_sizes import refuse_huge_constants
from sqlsecure.planner.unrenderable import refuse_unrenderable, unqualifiable
from sqlsecure.planner.dialects import to_duckdb_meaning
from sqlsecure.planner.dialects.common import refuse_wide_decimals
from sqlsecure.planner.dialects.mysql import cast_target_refusal
from sqlsecure.planner.pushdown_typing import type_query
from sqlsecure.planner.views import expand_views, used_views

# Scalar functions that read the host environment or files.
DENIED_FUNCTIONS = {
    "getenv", "current_setting", "read_text", "read_blob", "glob", "read_csv", "read_csv_auto",
    "read_parquet", "read_json", "read_json_auto", "read_ndjson", "parquet_scan", "sniff_csv",
    "duckdb_settings", "duckdb_extensions", "pragma_version", "query", "query_table", "error",
}


def where(node: exp.Expression, sql: str) -> str:
    """'line L, column C' of a node, for error messages."""
    meta = node.meta if node.meta else getattr(node.this, "meta", None) or {}
    if "line" in meta:
        return f" (line {meta['line']}, column {meta['col']})"
    return ""


# How deeply a query may nest. The parser and the planner recurse once per level, and Python's stack is
# finite: past these limits a query is refused before anything recurses (MAX_NESTING: parentheses, CASE
# and subqueries inside each other; MAX_EXPRESSION_DEPTH: levels of the parsed tree, e.g. a+a+...+a).
MAX_NESTING = 32
MAX_EXPRESSION_DEPTH = 256
TOO_DEEP = ("the query nests too deeply (limits: {nesting} nested parentheses/CASE/subqueries, {depth} levels "
            "of expression); split it into CTEs or simpler expressions")
OPENERS = {TokenType.L_PAREN, TokenType.CASE}
CLOSERS = {TokenType.R_PAREN, TokenType.END}


def too_deep() -> NotSupportedError:
    """The error for a query past the nesting limits (also raised when Python's own stack runs out)."""
    return NotSupportedError(TOO_DEEP.format(nesting=MAX_NESTING, depth=MAX_EXPRESSION_DEPTH))


def position(sql: str, offset: int) -> str:
    """'line L, column C' (1-based) of a character offset in the query text."""
    before = sql[:max(0, offset)]
    return f"line {before.count(chr(10)) + 1}, column {offset - (before.rfind(chr(10)) + 1) + 1}"


def token_error(sql: str, exc: TokenError) -> PlanError:
    """A user's message for text the tokenizer cannot read: an unterminated string, identifier or comment."""
    missing = re.match(r"Missing (\S+) from \d+:(\d+)", str(exc.__cause__ or ""))
    if missing:
        delimiter, offset = missing.group(1), int(missing.group(2))
        return PlanError(f"syntax error at {position(sql, offset)}: unterminated quoted text; "
                         f"close it with {delimiter}")
    comment = sql.rfind("/*")
    if comment >= 0 and "*/" not in sql[comment + 2:]:
        return PlanError(f"syntax error at {position(sql, comment)}: unterminated comment; close it with */")
    return PlanError(f"syntax error at {position(sql, getattr(exc, 'start', 0) or 0)}: the text cannot be read "
                     f"as SQL")


def check_nesting(sql: str, dialect: str) -> None:
    """Refuse a query nested deeper than MAX_NESTING, from its tokens (no recursion), before parsing."""
    try:
        tokens = Dialect.get_or_raise(dialect).tokenize(sql)
    except TokenError as exc:
        raise token_error(sql, exc) from None
    depth = 0
    for token in tokens:
        if token.token_type in OPENERS:
            depth += 1
            if depth > MAX_NESTING:
                raise too_deep()
        elif token.token_type in CLOSERS:
            depth = max(0, depth - 1)


def cast_targets(tokens: list) -> list[tuple[object, str, bool]]:
    """Each CAST(x AS type) / CONVERT(x, type) of a token list: (its first token, the type's first word,
    whether a length follows it). CONVERT(x USING charset) has no type."""
    found = []
    for i, token in enumerate(tokens[:-1]):
        separator = {"CAST": TokenType.ALIAS, "CONVERT": TokenType.COMMA}.get(token.text.upper())
        if separator is None or tokens[i + 1].token_type != TokenType.L_PAREN:
            continue
        depth = 0
        for j in range(i + 1, len(tokens) - 1):
            depth += {TokenType.L_PAREN: 1, TokenType.R_PAREN: -1}.get(tokens[j].token_type, 0)
            if depth == 0:
                break
            if depth == 1 and tokens[j].token_type == separator:
                word = tokens[j + 1]
                found.append((token, word.text, j + 2 < len(tokens) and tokens[j + 2].token_type == TokenType.L_PAREN))
                break
    return found


def check_cast_targets(sql: str, dialect: str) -> None:
    """In the mysql dialect, refuse a CAST / CONVERT to a type MySQL and MariaDB reject (BIGINT, VARCHAR, TEXT,
    ...), and the casts they lack (`x::type`, TRY_CAST): sqlglot reads them as the casts they accept, so
    a query MySQL refuses would be answered. Checked on the tokens, where `BIGINT` and `SIGNED` still differ."""
    if dialect != "mysql":
        return
    tokens = Dialect.get_or_raise(dialect).tokenize(sql)
    for token in tokens:
        if token.token_type == TokenType.DCOLON or token.text.upper() == "TRY_CAST":
            raise PlanError(f"syntax error at {position(sql, token.start)}: MySQL and MariaDB have no "
                            f"{token.text.upper()}; write CAST(x AS type)")
    for cast, target, has_length in cast_targets(tokens):
        why = cast_target_refusal(target, has_length)
        if why is not None:
            raise PlanError(f"syntax error at {position(sql, cast.start)}, in {cast.text.upper()}: {why}")


def check_depth(tree: exp.Expression) -> None:
    """Refuse a parsed tree deeper than MAX_EXPRESSION_DEPTH (measured without recursion)."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_EXPRESSION_DEPTH:
            raise too_deep()
        stack.extend((child, depth + 1) for child in node.iter_expressions())


def clean_description(text: str) -> str:
    """sqlglot's parse error text without its internals (token reprs, class paths, terminal highlighting)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    text = re.sub(r"<Token token_type: TokenType\.SENTINEL[^>]*>", "the end of the query", text)
    text = re.sub(r"<Token token_type: TokenType\.\w+, text: ([^,]*),[^>]*>", r"'\1'", text)
    text = re.sub(r"Required keyword: '(\w+)' missing for <class 'sqlglot\.expressions\.(?:\w+\.)*(\w+)'>",
                  lambda m: f"incomplete {m.group(2).upper()}: its {m.group(1)} part is missing", text)
    return re.sub(r"<class 'sqlglot\.[\w.]*?(\w+)'>", lambda m: m.group(1).upper(), text)


def syntax_error(exc: ParseError) -> PlanError:
    """A PlanError naming the position and what was expected, in the user's words."""
    first = exc.errors[0] if exc.errors else {}
    pos = f" at line {first.get('line')}, column {first.get('col')}" if first.get("line") else ""
    near = f" near '{first['highlight']}'" if first.get("highlight") else ""
    desc = clean_description(first.get("description") or str(exc))
    return PlanError(f"syntax error{pos}{near}: {desc}; check the query text there")


def parse_statement(sql: str, dialect: str) -> exp.Expression:
    """Parse exactly one statement (of any kind), within the nesting limits."""
    check_nesting(sql, dialect)
    try:
        statements = [s for s in _parse_marking_parameters(sql, dialect) if s is not None]
    except ParseError as exc:
        raise syntax_error(exc) from None
    except TokenError as exc:
        raise token_error(sql, exc) from None
    except RecursionError:
        raise too_deep() from None
    if len(statements) != 1:
        raise PlanError(f"expected one statement, got {len(statements)}")
    check_depth(statements[0])
    return statements[0]


def _parse_marking_parameters(sql: str, dialect: str) -> list:
    """sqlglot.parse, each `?` marker's node carrying its offset in `sql` (meta "position"): the tree's
    order is not the text's (a CTE is visited after the SELECT it precedes), and parameters bind in the
    text's order."""
    language = Dialect.get_or_raise(dialect)
    parser = language.parser()
    plain = parser.PLACEHOLDER_PARSERS[TokenType.PLACEHOLDER]

    def marked(self):
        node = plain(self)
        if node is not None:
            node.meta["position"] = self._prev.start
        return node

    parser.PLACEHOLDER_PARSERS = {**parser.PLACEHOLDER_PARSERS, TokenType.PLACEHOLDER: marked}
    return parser.parse(language.tokenize(sql), sql)


def parse_query(sql: str, dialect: str) -> exp.Expression:
    """Parse one read-only query; refuse every other kind of statement."""
    tree = parse_statement(sql, dialect)
    if not isinstance(tree, exp.Query):
        kind = tree.key.upper() if not isinstance(tree, exp.Command) else str(tree.this).upper()
        raise PlanError(f"only SELECT queries are allowed; got {kind}")
    if tree.find(exp.Into) is not None:
        raise PlanError("SELECT ... INTO is not allowed: queries are read-only")
    check_empty_clauses(tree, sql, dialect)
    check_cast_targets(sql, dialect)
    return tree


EMPTY_GROUP_BY = re.compile(r"\bGROUP\s+BY\s*(?=$|\)|;|\b(?:HAVING|ORDER|LIMIT|QUALIFY|WINDOW|UNION|EXCEPT|INTERSECT)\b)",
                            re.IGNORECASE)


def check_empty_clauses(tree: exp.Expression, sql: str, dialect: str) -> None:
    """Refuse a clause the parser accepted with nothing in it (`GROUP BY` at the end of the query, whose
    text would reach a party's database and fail there; `JOIN t ON`, which sqlglot reads as a cross join)."""
    for group in tree.find_all(exp.Group):
        if not any(value for value in group.args.values()):
            found = EMPTY_GROUP_BY.search(sql)
            pos = f" at {position(sql, found.start())}" if found else ""
            raise PlanError(f"syntax error{pos}: incomplete GROUP BY: its expressions part is missing; "
                            "name the grouping columns after GROUP BY, or remove it")
    for join in tree.find_all(exp.Join):
        if ("on" in join.args and join.args["on"] is None) or ("using" in join.args and not join.args["using"]):
            name = join.this.this.meta if isinstance(join.this.this, exp.Identifier) else {}
            pos = f" at line {name['line']}, column {name['col']}" if "line" in name else ""
            raise PlanError(f"syntax error{pos}: JOIN {join.this.sql(dialect=dialect)} has ON or USING without a "
                            "condition; write the join condition after it")


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
        raise PlanError(clean_description(str(exc))) from None
    except (AssertionError, AttributeError, TypeError, KeyError, IndexError, ValueError) as exc:  # sqlglot's bugs
        raise unqualifiable(tree, exc) from None


PARAMETER_TYPES = (bool, int, float, str, bytes, decimal.Decimal, datetime.date, datetime.time, datetime.datetime)
HUGEINT_RANGE = (-(2 ** 127), 2 ** 127 - 1)


def check_parameters(parameters) -> None:
    """PEP 249: parameters are a sequence (list, tuple) of values, one per `?` marker, or None."""
    if parameters is not None and (isinstance(parameters, (str, bytes, bytearray, dict))
                                   or not isinstance(parameters, Sequence)):
        raise PlanError(f"parameters must be a sequence of values (a list or tuple), one per ? marker; "
                        f"got {type(parameters).__name__}")


def parameter_literal(value, index: int) -> exp.Expression:
    """The SQL literal of one parameter, of the type DuckDB's own binding gives it: a float is a DOUBLE
    (NaN and ±inf included, which have no numeric literal), never a DECIMAL or an identifier."""
    if value is not None and not isinstance(value, PARAMETER_TYPES):
        raise PlanError(f"parameter {index} has unsupported type {type(value).__name__}; use bool, int, float, "
                        "Decimal, str, bytes, date, time, datetime or None")
    if isinstance(value, int) and not isinstance(value, bool) and not HUGEINT_RANGE[0] <= value <= HUGEINT_RANGE[1]:
        raise DataError(f"parameter {index} ({value}) is outside the 128-bit integer range; pass it as a "
                        "Decimal or a float")
    if isinstance(value, decimal.Decimal) and not value.is_finite():
        value = float(value)
    if isinstance(value, float):
        text = repr(value) if math.isfinite(value) else str(value)
        return exp.cast(exp.Literal.string(text), exp.DataType.Type.DOUBLE)
    return exp.convert(value)


def bind_parameters(tree: exp.Expression, parameters) -> exp.Expression:
    """Replace each `?` with a literal of the matching parameter, in order — on the parsed tree, never by
    string interpolation, so a parameter can only ever be a value."""
    check_parameters(parameters)
    placeholders = list(tree.find_all(exp.Placeholder, bfs=False))  # the text's order where the parser marked it
    if all("position" in p.meta for p in placeholders):
        placeholders.sort(key=lambda p: p.meta["position"])
    values = list(parameters or ())
    if len(placeholders) != len(values):
        raise PlanError(f"the query has {len(placeholders)} parameter marker(s) (?), {len(values)} value(s) given")
    for index, (placeholder, value) in enumerate(zip(placeholders, values), start=1):
        placeholder.replace(parameter_literal(value, index))
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


def check_like_patterns(tree: exp.Expression) -> None:
    """Refuse a constant LIKE pattern no database accepts (its ESCAPE not one character, or the pattern
    ending with it) before planning, so the refusal never depends on which device evaluates it."""
    for escape in tree.find_all(exp.Escape):
        like, char = escape.this, escape.expression
        pattern = like.expression if isinstance(like, (exp.Like, exp.ILike)) else None
        if not (isinstance(char, exp.Literal) and char.is_string):
            continue
        if len(char.this) > 1:
            raise PlanError(f"the ESCAPE of {escape.sql()} must be one character (or empty), not {char.this!r}")
        if char.this and isinstance(pattern, exp.Literal) and pattern.is_string:
            trailing = len(pattern.this) - len(pattern.this.rstrip(char.this))
            if trailing % 2:
                raise PlanError(f"the LIKE pattern {pattern.this!r} ends with its escape character {char.this!r}: "
                                f"escape it too ({char.this * 2}) to match it, or drop it")


def load_query(sql: str, catalog: Catalog, dialect: str, parameters=None, issuer: str | None = None,
               time_zone: str = "UTC") -> exp.Expression:
    """Parse, bind `?` parameters, expand federation views, check references, qualify, then rewrite what
    DuckDB would answer differently from `dialect` (planner/dialects/; CURDATE() etc. in `time_zone`), then
    type it (planner/pushdown_typing.py)."""
    parsed = bind_parameters(parse_query(sql, dialect), parameters)
    check_like_patterns(parsed)
    resolved = resolved_names(parsed, catalog, issuer)
    tree = expand_views(parsed, catalog.views)
    refuse_unrenderable(tree)  # sqlglot's generator bugs, by name (planner/unrenderable.py)
    refuse_huge_constants(tree)  # before DuckDB types (and so folds) any constant: planner/constant_sizes.py
    refuse_wide_decimals(tree, dialect)
    check_references(tree, catalog, sql, issuer)
    names = duckdb_names(tree, catalog)
    tree = name_outputs(qualify_query(tree, catalog, dialect, sql), names)
    tree = to_duckdb_meaning(tree, dialect, catalog.sqlglot_schema(dialect), time_zone)
    type_query(tree, catalog)  # refused whichever device would run it (planner/pushdown_typing.py)
    tree.meta["resolved_names"] = resolved  # for EXPLAIN: how each bare table name resolved
    return tree
