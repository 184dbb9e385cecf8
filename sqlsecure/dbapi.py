"""PEP 249 driver: `sqlsecure.connect("federation.toml", party="bank")`.

A connection is one party's view of the federation: every query it runs is issued by that party,
and results are revealed only to it.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from sqlsecure import errors
from sqlsecure.engine import Engine

apilevel = "2.0"
threadsafety = 1  # threads may share the module, not connections
paramstyle = "qmark"


def connect(federation: str | Path, party: str, *, timeout: float = 120.0) -> "Connection":
    """Open a federation file as `party` (the issuer of every query on this connection)."""
    engine = Engine(federation, timeout=timeout)
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
        if not self._closed:
            self.engine.close()
            self._closed = True

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_TYPE_CODES = {
    "string": "STRING", "large_string": "STRING", "bool": "BOOLEAN", "date32[day]": "DATE",
    "double": "DOUBLE", "float": "FLOAT", "int64": "BIGINT", "int32": "INTEGER", "int16": "SMALLINT",
    "int8": "TINYINT",
}


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

    def _check(self) -> None:
        if self._closed:
            raise errors.InterfaceError("cursor is closed")
        self.connection._check()

    def execute(self, sql: str, parameters=None) -> "Cursor":
        self._check()
        if parameters:
            raise errors.NotSupportedError("query parameters are not supported yet; write literals")
        result = self.connection.engine.execute(sql, self.connection.party)
        self._table = result.table
        self.last_plan, self.last_stats = result.plan, result.stats
        self._rows = [tuple(r.values()) for r in result.table.to_pylist()]
        self._pos = 0
        self.rowcount = len(self._rows)
        self.description = [
            (f.name, _TYPE_CODES.get(str(f.type), str(f.type).upper()), None, None, None, None, f.nullable)
            for f in result.table.schema
        ]
        return self

    def _need_result(self) -> None:
        self._check()
        if self._table is None:
            raise errors.InterfaceError("no result: call execute() first")

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
