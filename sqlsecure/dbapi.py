"""PEP 249 driver: `sqlsecure.connect("federation.toml", party="bank")`.

A connection is one party's view of the federation: every query it runs is issued by that party,
and results are revealed only to it.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa

from sqlsecure import errors
from sqlsecure.engine import Engine
from sqlsecure.formatting import rows_of
from sqlsecure.planner.parse import check_parameters

apilevel = "2.0"
threadsafety = 1  # threads may share the module, not connections
paramstyle = "qmark"


def connect(federation: str | Path, party: str, *, timeout: float = 120.0) -> "Connection":
    """Open a federation file as `party` (the issuer of every query on this connection)."""
    engine = Engine(federation, timeout=timeout, writer=party)
    try:
        engine.check_issuer(party)
    except errors.Error:
        engine.close()
        raise
    return Connection(engine, party)


class Connection:
    Error = errors.Error
    Warning = errors.Warning
    InterfaceError = errors.InterfaceError
    DatabaseError = errors.DatabaseError
    DataError = errors.DataError
    OperationalError = errors.OperationalError
    IntegrityError = errors.IntegrityError
    InternalError = errors.InternalError
    ProgrammingError = errors.ProgrammingError
    NotSupportedError = errors.NotSupportedError

    def __init__(self, engine: Engine, party: str):
        self.engine = engine
        self.party = party
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise errors.InterfaceError("connection is closed")

    def cursor(self) -> "Cursor":
        self._check()
        return Cursor(self)

    def execute(self, sql: str, parameters=None) -> "Cursor":
        return self.cursor().execute(sql, parameters)

    def explain(self, sql: str) -> str:
        self._check()
        return self.engine.explain(sql, self.party)

    def commit(self) -> None:
        self._check()  # queries are read-only: nothing to commit

    def rollback(self) -> None:
        self._check()

    def close(self) -> None:
        """Close the connection; closing it again is an error (PEP 249)."""
        self._check()
        self.engine.close()
        self._closed = True

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        if not self._closed:
            self.close()


class DBAPITypeObject:
    """A PEP 249 type object: equal to every type code of its kind."""

    def __init__(self, name: str, test):
        self.name, self._test = name, test

    def __eq__(self, other) -> bool:
        return isinstance(other, str) and self._test(other)

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return self.name


STRING = DBAPITypeObject("STRING", lambda t: t in ("string", "large_string"))
BINARY = DBAPITypeObject("BINARY", lambda t: t in ("binary", "large_binary"))
NUMBER = DBAPITypeObject("NUMBER", lambda t: t.startswith(("int", "uint", "double", "float", "halffloat", "decimal"))
                         or t == "bool")
DATETIME = DBAPITypeObject("DATETIME", lambda t: t.startswith(("date", "timestamp", "time")))
ROWID = DBAPITypeObject("ROWID", lambda t: False)
Date, Time, Timestamp, Binary = datetime.date, datetime.time, datetime.datetime, bytes


def DateFromTicks(ticks: float) -> datetime.date:  # noqa: N802 - PEP 249 name
    return datetime.date.fromtimestamp(ticks)


def TimeFromTicks(ticks: float) -> datetime.time:  # noqa: N802
    return datetime.datetime.fromtimestamp(ticks).time()


def TimestampFromTicks(ticks: float) -> datetime.datetime:  # noqa: N802
    return datetime.datetime.fromtimestamp(ticks)


class Cursor:
    def __init__(self, connection: Connection):
        self.connection = connection
        self.arraysize = 1
        self._table: pa.Table | None = None
        self._rows: list[tuple] = []
        self._pos = 0
        self._closed = False
        self.description = None
        self.rowcount = -1
        self.last_plan = None
        self.last_stats = None
        self.messages: list[tuple[type, str]] = []  # PEP 249 extension: (class, message) of the last execute

    def _check(self) -> None:
        if self._closed:
            raise errors.InterfaceError("cursor is closed")
        self.connection._check()

    def execute(self, sql: str, parameters=None) -> "Cursor":
        """Run a query; `?` markers are bound to `parameters` as literals after parsing."""
        self._check()
        check_parameters(parameters)
        self.messages = []
        result = self.connection.engine.execute(sql, self.connection.party, parameters)
        self.last_plan, self.last_stats = result.plan, result.stats
        self.messages = [(errors.Warning, notice) for notice in result.notices]
        if result.table is None:  # a write: no result set
            self._table, self._rows, self._pos = None, [], 0
            self.rowcount, self.description = result.rowcount, None
            return self
        self._table = result.table
        self._rows = rows_of(result.table)
        self._pos = 0
        self.rowcount = len(self._rows)
        self.description = [
            (f.name, str(f.type), None, None, None, None, f.nullable)
            for f in result.table.schema
        ]
        return self

    def executemany(self, sql: str, seq_of_parameters) -> "Cursor":
        """Run the query once per parameter sequence; the cursor keeps the last result."""
        if isinstance(seq_of_parameters, (str, bytes, bytearray)) or not isinstance(seq_of_parameters, Iterable):
            raise errors.ProgrammingError(f"executemany needs a sequence of parameter sequences, not "
                                          f"{type(seq_of_parameters).__name__}")
        total = 0
        for parameters in seq_of_parameters:
            self.execute(sql, parameters)
            total += max(self.rowcount, 0)
        if self._table is None:
            self.rowcount = total
        return self

    def callproc(self, name, parameters=None):
        raise errors.NotSupportedError("sqlsecure has no stored procedures")

    def nextset(self):
        raise errors.NotSupportedError("a query returns one result set")

    def to_arrow_reader(self, batch_size: int = 65536) -> pa.RecordBatchReader:
        self._need_result()
        return pa.RecordBatchReader.from_batches(self._table.schema, self._table.to_batches(batch_size))

    def fetchdf(self):
        """The result as a pandas DataFrame (needs pandas: the `pandas` extra)."""
        self._need_result()
        try:
            import pandas  # noqa: F401  (pyarrow's to_pandas needs it)
        except ImportError:
            raise errors.InterfaceError("fetchdf() needs pandas: pip install 'sqlsecure[pandas]' "
                                        "(or use to_arrow_table())") from None
        return self._table.to_pandas()

    def _need_result(self) -> None:
        self._check()
        if self._table is None:
            raise errors.InterfaceError("no result set: call execute() with a query first")

    def fetchone(self):
        self._need_result()
        if self._pos >= len(self._rows):
            return None
        row = self._rows[self._pos]
        self._pos += 1
        return row

    def fetchmany(self, size: int | None = None):
        self._need_result()
        size = self.arraysize if size is None else size
        rows = self._rows[self._pos:self._pos + size]
        self._pos += len(rows)
        return rows

    def fetchall(self):
        self._need_result()
        rows = self._rows[self._pos:]
        self._pos = len(self._rows)
        return rows

    def to_arrow_table(self) -> pa.Table:
        self._need_result()
        return self._table

    def __iter__(self):
        return iter(self.fetchone, None)

    def setinputsizes(self, sizes) -> None:
        pass

    def setoutputsize(self, size, column=None) -> None:
        pass

    def close(self) -> None:
        self._closed = True
        self._table = None
        self._rows = []

    def __enter__(self) -> "Cursor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
