"""The column types a party's source publishes, fixed when its store opens.

A Parquet file, a DuckDB database, PostgreSQL and SQLite say what type each column is; a CSV file does not:
DuckDB's sniffer guesses from the rows, and a header-only file or a column with no value gives it nothing to
guess from (it would say VARCHAR, and a query comparing the column with a number then fails in DuckDB's binder,
or a UNION turns the other parties' numbers into text). So:

- the owner may declare a table's column types in the federation file (`[parties.NAME.types]`); a declaration
  of a typed source must say what the source says (else a ConfigError naming the table and column), a CSV is
  read with the declared types;
- a CSV column that is neither declared nor typed by a value (a header-only file, a column of only NULLs) is a
  ConfigError naming the table and its columns, with the declaration to add;
- a CSV is then always read with the types it was published with (the view names its columns and pins their
  types), so a file rewritten while the engine runs cannot change a column's type under a plan: a value that
  no longer reads as the type is a DataError; a Parquet file rewritten with other types is refused by
  `changed_columns` before the store reads it.
"""

from __future__ import annotations

import re

import duckdb

from sqlsecure.connectors.duckdb_store import INTEGER_TYPES, _literal, _quote
from sqlsecure.errors import ConfigError, DataError

TYPE_TEXT = re.compile(r"^[A-Za-z][A-Za-z0-9_ ]{0,40}(\(\s*\d{1,3}\s*(,\s*\d{1,3}\s*)?\))?$")  # no SQL but a type


def duckdb_type(text) -> str | None:
    """DuckDB's own name of a declared scalar column type (`int` -> INTEGER, `text` -> VARCHAR,
    `decimal(12,2)` -> DECIMAL(12,2)), or None where DuckDB knows no such type."""
    if not isinstance(text, str) or not TYPE_TEXT.match(text.strip()):
        return None
    con = duckdb.connect()
    try:
        (name,) = con.execute(f"SELECT typeof(CAST(NULL AS {text.strip()}))").fetchone()
    except duckdb.Error:
        return None
    finally:
        con.close()
    return name


def _columns(con, sql: str) -> list[tuple[str, str]]:
    return [(row[0], row[1]) for row in con.execute(f"DESCRIBE {sql}").fetchall()]


def declaration(party: str, table: str, columns) -> str:
    """The federation file's lines that declare `columns` ((name, type) pairs) of a table."""
    body = ", ".join(f'{name} = "{dtype}"' for name, dtype in columns)
    return f"[parties.{party}.types] {table} = {{ {body} }}"


def pinned_reads(party: str, tables) -> dict[str, str]:
    """Table name -> the SELECT its view is made of: its columns by name (a column added to the file later is
    not read), a CSV's with the types published for them (declared, else sniffed from its rows). Checks each
    CSV once: ConfigError for a declared column it lacks or a column whose type nothing tells; DataError for a
    value that does not read as its column's type (the value is not quoted)."""
    con = duckdb.connect()
    try:
        return {source.name: _pinned(con, party, source) for source in tables}
    except duckdb.Error as exc:
        raise ConfigError(f"party {party!r}: cannot read its data files: {exc}") from None
    finally:
        con.close()


def _pinned(con, party: str, source) -> str:
    where = f"party {party!r}: table {source.name!r} ({source.path.name})"
    if not source.is_csv:
        names = ", ".join(_quote(name) for name, _ in _columns(con, f"SELECT * FROM {source.read_sql()}"))
        return f"SELECT {names} FROM {source.read_sql()}"
    header = source.header_only or con.execute(f"SELECT HasHeader FROM sniff_csv({_literal(str(source.path))})"
                                               ).fetchall()[0][0]
    names = [name for name, _ in _columns(con, f"SELECT * FROM {source.read_sql(header=header)}")]
    declared = dict(source.types)
    unknown = [c for c in declared if c not in names]
    if unknown:
        raise ConfigError(f"{where} has no column {', '.join(map(repr, unknown))} (its columns: "
                          f"{', '.join(names)}): fix parties.{party}.types.{source.name}")
    sniffed = _columns(con, f"SELECT * FROM {source.read_sql(declared, header)}")
    undeclared = [c for c in names if c not in declared]
    if undeclared and source.header_only:
        raise ConfigError(f"{where} has a header and no rows, so the types of its columns "
                          f"{', '.join(undeclared)} cannot be read from it: declare them, e.g. "
                          f"{declaration(party, source.name, [(c, '...') for c in undeclared])}")
    pinned = (f"SELECT {', '.join(_exactly(name, dtype) for name, dtype in sniffed)} FROM "
              + source.read_sql({name: "VARCHAR" if _exact_pattern(dtype) else dtype for name, dtype in sniffed},
                                header))
    counts = _counts(con, pinned, dict(sniffed), where, declared)
    untyped = [c for c in undeclared if counts[c] == 0] if counts["*"] else []
    if untyped:
        raise ConfigError(f"{where}: column {', '.join(untyped)} holds no value, so its type cannot be read from "
                          f"the file: declare it, e.g. {declaration(party, source.name, [(c, '...') for c in untyped])}")
    return pinned


DECIMAL_TYPE = re.compile(r"^DECIMAL\((\d+),\s*(\d+)\)$")


def _exact_pattern(dtype: str) -> str | None:
    """The text of a value an integer or DECIMAL(p, s) column holds exactly; None for other types. DuckDB's
    CSV reader (and CAST from text) rounds "5.5" to the integer 6 and "1.005" to DECIMAL(10,2)'s 1.01."""
    decimal = DECIMAL_TYPE.match(dtype)
    if dtype in (*INTEGER_TYPES, "UHUGEINT") or (decimal and decimal[2] == "0"):
        return r"\s*[+-]?[0-9]+\s*"
    if decimal:
        return rf"\s*[+-]?([0-9]+(\.[0-9]{{0,{decimal[2]}}})?|\.[0-9]{{1,{decimal[2]}}})\s*"
    return None


def _exactly(name: str, dtype: str) -> str:
    """A CSV column (read as text where `_exact_pattern` applies) as `dtype`; a value it would round fails the
    cast of a fixed text instead (a DataError that quotes no value)."""
    pattern = _exact_pattern(dtype)
    if pattern is None:
        return _quote(name)
    q = _quote(name)
    return (f"CAST(CASE WHEN {q} IS NULL OR regexp_full_match({q}, {_literal(pattern)}) THEN {q} "
            f"ELSE {_literal(f'a value that is not exactly a {dtype}')} END AS {dtype}) AS {q}")


def _counts(con, pinned: str, types: dict[str, str], where: str, declared: dict) -> dict[str, int]:
    """Non-NULL values of each column and `*` rows, reading every value as its pinned type once."""
    names = list(types)
    sql = f"SELECT count(*), {', '.join(f'count({_quote(c)})' for c in names)} FROM ({pinned})"
    try:
        (row,) = con.execute(sql).fetchall()
    except duckdb.ConversionException:
        for name in names:  # the column that fails, without quoting its value
            try:
                con.execute(f"SELECT count({_quote(name)}) FROM ({pinned})").fetchall()
            except duckdb.ConversionException:
                said = "declared" if name in declared else "read from its first rows as"
                raise DataError(f"{where}: column {name!r} is {said} {types[name]}, but a value of it does not "
                                "read exactly as that type: fix the value, or declare the column's type") from None
        raise
    return {"*": row[0], **dict(zip(names, row[1:]))}


def check_declared(party: str, declared, schema: dict[str, list[tuple[str, str]]]) -> None:
    """ConfigError listing each declared (table, ((column, type), ...)) that the store's published schema
    contradicts: a table or column it lacks, or another type."""
    problems = []
    for table, columns in declared:
        key = f"parties.{party}.types.{table}"
        if table not in schema:
            problems.append(f"{key}: {party} has no table {table!r}")
            continue
        published = dict(schema[table])
        for column, dtype in columns:
            if column not in published:
                problems.append(f"{key}.{column}: table {table!r} has no column {column!r}")
            elif published[column] != dtype:
                problems.append(f"{key}.{column}: declared {dtype}, but its source stores {published[column]}: "
                                "declare the source's type (or convert the source)")
    if problems:
        raise ConfigError(problems)


def changed_columns(con, pinned: str, published: list[tuple[str, str]]) -> list[str]:
    """The published columns of a file table that its file, rewritten since, no longer holds with their
    published type (`"n: BIGINT, now DOUBLE"`), read through the table's `pinned` SELECT."""
    try:
        now = dict(_columns(con, pinned))
    except duckdb.Error:
        return ["its published columns no longer read from the file"]
    return [f"{name}: {dtype}, now {now.get(name, 'gone')}" for name, dtype in published if now.get(name) != dtype]
