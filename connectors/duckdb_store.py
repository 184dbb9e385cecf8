"""A party's own data store: one DuckDB connection over the party's database and data files.

The store is opened, its file tables registered, and then it is locked down: external access is
switched off (only the registered data files stay readable) and the configuration is frozen, so a
query can read the party's tables and nothing else on the machine.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from sqlsecure.errors import ConfigError, DataError, Error, OperationalError

FILE_READERS = {".parquet": "read_parquet", ".csv": "read_csv_auto", ".tsv": "read_csv_auto"}


@dataclass(frozen=True)
class TableSource:
    """A data file registered as a table of a party; `types`: the column types its owner declares
    (`[parties.NAME.types]`, canonical DuckDB names), which a CSV is read with."""

    name: str
    path: Path
    types: tuple[tuple[str, str], ...] = ()

    @property
    def reader(self) -> str:
        suffix = self.path.suffix.lower()
        if suffix not in FILE_READERS:
            raise ConfigError(f"table {self.name!r}: unsupported file type {suffix!r} (use .parquet or .csv)")
        return FILE_READERS[suffix]

    @property
    def is_csv(self) -> bool:
        return self.reader == "read_csv_auto"

    @property
    def header_only(self) -> bool:
        return self.is_csv and _header_only(self.path)

    def read_sql(self, types: dict[str, str] | None = None, header: bool | None = None) -> str:
        """The table function call that reads the file; a CSV with `types` (column -> DuckDB type) read
        as those types, and with `header` as given. A CSV with a header and no data rows is read with
        header=true: DuckDB's sniffer cannot tell a lone line of names from a row of text."""
        call = f"{self.reader}({_literal(str(self.path))}"
        if self.is_csv:
            if header is None and self.header_only:
                header = True
            if header is not None:
                call += f", header = {str(header).lower()}"
            if types:
                call += ", types = {" + ", ".join(f"{_literal(c)}: {_literal(t)}" for c, t in types.items()) + "}"
        return call + ")"


def _header_only(path: Path) -> bool:
    """Whether a text file has at most one non-blank line (a header without rows); reads no further
    than its second such line."""
    try:
        with path.open("rb") as lines:
            return next(itertools.islice((line for line in lines if line.strip()), 1, None), None) is None
    except OSError:
        return False  # the reader reports the missing or unreadable file itself


CATEGORY = re.compile(r"^([A-Z][A-Za-z ]{0,40}) Error:")  # DuckDB's error kind: fixed words, never a value
# DuckDB's own (`%`, `//`) and PostgreSQL's (ERROR('division by zero'), planner/dialects/postgres.py): PEP 249's DataError
DIVISION_BY_ZERO = re.compile(r"^Invalid Input Error: division by zero", re.I)
POINTER = re.compile(r"^(LINE \d+: )(.*)\n( *)(\^+)", re.M)  # DuckDB's caret line under the failing expression


def party_log(party: str) -> logging.Logger:
    """The party's own log: the only place a failure's full text (with its data values) is kept."""
    return logging.getLogger(f"sqlsecure.party.{party}")


def located_expression(message: str, sql: str) -> str | None:
    """The expression of `sql` that DuckDB's caret line points at, or None. Only text found in `sql`
    itself (the public query) is returned, never text of the message around it."""
    match = POINTER.search(message)
    if match is None:
        return None
    prefix, line, pad, carets = match.groups()
    start = len(pad) - len(prefix)
    expression = line[start:start + len(carets)].strip() if start >= 0 else ""
    return expression if expression and expression in sql else None


def local_error(party: str, exc: duckdb.Error, sql: str, doing: str = "local query") -> Error:
    """A DuckDB failure at `party` as the engine's error: its kind and the offending expression of the
    (public) SQL, never the data value DuckDB quotes. The full text goes to the party's own log and
    stays on the error as `private_detail`, which only the party itself may read (see
    `executors.runtime.party.contained_error`)."""
    text = str(exc)
    party_log(party).error("%s at %s failed: %s\n  SQL: %s", doing, party, text, sql)
    kind = CATEGORY.match(text)
    kind = f"{kind.group(1)} error" if kind else type(exc).__name__
    expression = located_expression(text, sql)
    where = f"in {expression!r}" if expression else f"in its {doing}: {sql}"
    if isinstance(exc, duckdb.DataError):  # conversion, out of range: PEP 249's DataError, as in DuckDB
        error = DataError(f"party {party!r}: {kind} {where}; the value that failed stays in {party}'s log "
                          "(check the expression's types and the data's range)")
    elif DIVISION_BY_ZERO.match(text):
        error = DataError(f"party {party!r}: division by zero {where}; the row that failed stays in {party}'s log")
    else:
        error = OperationalError(f"party {party!r}: {kind} {where}; the full text is in {party}'s log")
    error.private_detail = text
    return error


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class PartyStore:
    """One party's DuckDB: its tables, their schemas, and read-only SQL over them."""

    def __init__(self, party: str, database: Path | None, tables: tuple[TableSource, ...] = (),
                 writable: bool = False):
        """The database file is opened read-only, so other processes may read it at the same time; a
        `writable` store (the DB-API connection of the party itself) reopens it for writing only while
        one write runs (`write`)."""
        self.party = party
        self.writable = writable
        self.database, self.tables = database, tables
        self._lock = threading.Lock()  # temp views live on this one connection
        self._classes: dict[tuple[str, str], int | None] = {}  # (table, column) -> magnitude class, until a write
        self._sizes: tuple[tuple, dict[str, int]] | None = None  # ((writes, files' stamp), sizes)
        self._writes = 0  # writes begun and ended: part of the sizes' and the schema's key
        self._schema: tuple[int, dict] | None = None  # (writes, schema)
        from sqlsecure.connectors.source_types import pinned_reads  # it reads this module's quoting

        self._reads = pinned_reads(party, tables)  # table -> the SELECT of its view (connectors/source_types.py)
        self._read_stamp = files_stamp([s.path for s in tables])  # the data files as their schema was read
        self._con = self._open(read_only=True)

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """A locked-down connection with the party's file tables registered."""
        try:
            con = duckdb.connect(":memory:" if self.database is None else str(self.database),
                                 read_only=read_only and self.database is not None)
        except duckdb.Error as exc:
            raise ConfigError(f"party {self.party!r}: cannot open database {self.database}: "
                              f"{_lock_holder(exc) or exc}") from None
        try:
            for source in self.tables:
                try:
                    con.execute(f"CREATE TEMP VIEW {_quote(source.name)} AS {self._reads[source.name]}")
                except duckdb.Error as exc:
                    raise ConfigError(f"party {self.party!r}: table {source.name!r} from {source.path}: "
                                      f"{exc}") from exc
            paths = ", ".join(_literal(str(s.path)) for s in self.tables)
            con.execute(f"SET allowed_paths = [{paths}]")
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
        except BaseException:
            con.close()
            raise
        return con

    def schema(self) -> dict[str, list[tuple[str, str]]]:
        """Table name -> [(column, DuckDB type)] of every table this party holds. Kept until this store
        writes: a file table's columns are fixed when its view is made (the store is reopened to see new
        ones), and the read-only database changes only through this store's own writes."""
        kept = self._schema
        if kept is None or kept[0] != self._writes:
            kept = self._schema = (self._writes, self._read_schema())
        return {table: list(columns) for table, columns in kept[1].items()}

    def _read_schema(self) -> dict[str, list[tuple[str, str]]]:
        rows = self._con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema IN ('main', 'temp') ORDER BY table_name, ordinal_position"
        ).fetchall()
        out: dict[str, list[tuple[str, str]]] = {}
        for table, column, dtype in rows:
            out.setdefault(table, []).append((column, dtype))
        return out

    def sizes(self) -> dict[str, int]:
        """Table name -> row count rounded up to a power of two: the coarse size the planner's cost
        model uses (published like the schema; the exact count stays here).

        Kept while no file of the store changed (size and modification time of each data file and of the
        database and its WAL) and the store did not write: every plan asks for the sizes several times, and
        counting re-reads a CSV file each time. A file that cannot be stat'ed (gone, a pattern) is never kept."""
        files = self._files_stamp()
        stamp = None if files is None else (self._writes, files)
        cached = self._sizes
        if stamp is not None and cached is not None and cached[0] == stamp:
            return dict(cached[1])
        out = {}
        with self._lock:
            self._check_files()
            for table in self.schema():
                ((count,),) = self._con.execute(f"SELECT count(*) FROM {_quote(table)}").fetchall()
                out[table] = 1 << max(int(count) - 1, 0).bit_length()
        self._sizes = (stamp, dict(out)) if stamp is not None else None
        return out

    def _files_stamp(self) -> tuple | None:
        """`files_stamp` of the data files, the database and its WAL; None if a file (not the WAL, which
        exists only while writes are pending) cannot be stat'ed."""
        paths = [s.path for s in self.tables] + ([self.database] if self.database is not None else [])
        stamp = files_stamp(paths)
        if any(size is None for _, size, _ in stamp):
            return None
        return stamp + files_stamp([f"{self.database}.wal"] if self.database is not None else [])

    def magnitudes(self, table: str, columns: tuple[str, ...] | None = None) -> dict[str, int]:
        """Numeric column (of `columns`, default all) -> its magnitude class M (every |value| < 2^M: the
        bit length of the largest |value|), published like the sizes so the planner proves the SPU's exact
        range at plan time (`spu.ranges.magnitude_class`; an empty column, NaN or infinity: no class).
        Kept until this store writes: a class gone stale makes the owner refuse the query at run time
        (its values are checked against the class), never a wrong answer."""
        from sqlsecure.executors.spu.ranges import magnitude_class  # late: the store does not need numpy

        numeric = [(c, t) for c, t in self.schema().get(table, []) if numeric_type(t)
                   and (columns is None or c in columns) and (table, c) not in self._classes]
        if numeric:
            largest = ", ".join(f"max(abs({_quote(c)}{'::HUGEINT' if _integer_type(t) else ''}))"  # abs(-2^63)
                                for c, t in numeric)
            with self._lock:
                self._check_files()
                ((*values,),) = self._con.execute(f"SELECT {largest} FROM {_quote(table)}").fetchall()
            self._classes.update({(table, c): magnitude_class(v) for (c, _), v in zip(numeric, values)})
        return {c: bits for (t, c), bits in self._classes.items()
                if t == table and bits is not None and (columns is None or c in columns)}

    def query(self, sql: str) -> pa.Table:
        """Run read-only SQL over this party's tables and return the result as Arrow."""
        try:
            with self._lock:
                self._check_files()
                return self._con.sql(sql).to_arrow_table()
        except duckdb.Error as exc:
            raise local_error(self.party, exc, sql) from None

    def _check_files(self) -> None:
        """Refuse to read a data file rewritten, since its schema was published, with other columns or types:
        a plan made with the published types would read values of others (a CSV is read with its published
        types, so only its columns can go). One stat per file while nothing changed."""
        stamp = files_stamp([s.path for s in self.tables])
        if stamp == self._read_stamp:
            return
        from sqlsecure.connectors.source_types import changed_columns
        published = self.schema()
        changed = {s.name: changed_columns(self._con, self._reads[s.name], published.get(s.name, []))
                   for s in self.tables if s.path.is_file()}
        changed = {name: columns for name, columns in changed.items() if columns}
        if changed:
            raise OperationalError(
                f"party {self.party!r}: a data file changed since its schema was published ("
                + "; ".join(f"table {name!r}: {', '.join(columns)}" for name, columns in sorted(changed.items()))
                + "): open the federation again to plan with the new schema")
        self._read_stamp = stamp

    def write(self, sql: str, result: pa.Table | None = None) -> int:
        """Run one write statement on this party's own database; `result` is visible as "__result".

        Returns the number of rows affected (-1 for DDL)."""
        self._classes.clear()
        self._writes += 1
        self._sizes = None
        if not self.writable:
            raise OperationalError(f"party {self.party!r}: this connection may not write its database")
        try:
            with self._lock:
                if self.database is None:  # in memory: nothing to reopen
                    rows = self._run_write(self._con, sql, result)
                else:  # the file is writable only while this write runs; readers elsewhere wait only that long
                    self._con.close()
                    try:
                        try:
                            con = self._open(read_only=False)
                        except ConfigError as exc:
                            raise OperationalError(f"party {self.party!r}: cannot open its database for writing: "
                                                   f"{exc.problems[0].split(': ', 1)[-1]}") from None
                        try:
                            rows = self._run_write(con, sql, result)
                        finally:
                            con.close()
                    finally:
                        self._con = self._open(read_only=True)
        finally:
            self._writes += 1  # a sizes() that counted during the write is not kept
        if rows and len(rows[0]) == 1 and isinstance(rows[0][0], int):
            return rows[0][0]
        return -1

    def _run_write(self, con, sql: str, result: pa.Table | None) -> list:
        try:
            if result is not None:
                con.register("__result", result)
            try:
                return con.execute(sql).fetchall()
            finally:
                if result is not None:
                    con.unregister("__result")
        except duckdb.Error as exc:
            raise OperationalError(f"party {self.party!r}: {exc}\n  SQL: {sql}") from exc

    def close(self) -> None:
        self._con.close()


def files_stamp(paths) -> tuple:
    """What identifies files' content: (path, size, modification time) of each; (path, None, None) for one
    that cannot be stat'ed."""
    stamp = []
    for path in paths:
        try:
            st = os.stat(path)
            stamp.append((str(path), st.st_size, st.st_mtime_ns))
        except OSError:
            stamp.append((str(path), None, None))
    return tuple(stamp)


def _lock_holder(exc: duckdb.Error) -> str | None:
    """DuckDB's "Conflicting lock is held in PROGRAM (PID n)", said so a user can act on it."""
    match = re.search(r"Conflicting lock is held in (.*?) \(PID (\d+)\)", str(exc))
    if match is None:
        return None
    return (f"another process ({match.group(1)}, PID {match.group(2)}) has the file open for writing; "
            "close it (or wait for its write to end) and try again")


INTEGER_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                 "UBIGINT")
NUMERIC_TYPES = (*INTEGER_TYPES, "FLOAT", "DOUBLE", "REAL", "DECIMAL")


def numeric_type(dtype: str) -> bool:
    """Whether a DuckDB column type is a number (a magnitude class is published for it)."""
    return dtype.upper().split("(", 1)[0] in NUMERIC_TYPES


def _integer_type(dtype: str) -> bool:
    return dtype.upper() in INTEGER_TYPES
