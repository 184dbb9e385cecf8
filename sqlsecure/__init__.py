"""sqlsecure: one SQL query over several parties' tables, answered without any party seeing another's rows.

    import sqlsecure
    con = sqlsecure.connect("federation.toml", party="bank")
    con.execute("SELECT COUNT(*) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id").fetchall()
"""

import os as _os

# From a checkout, `planner/`, `executors/` and `connectors/` sit beside this folder (an installed
# package holds them inside it): let `import sqlsecure.planner` find them there.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "pyproject.toml")) and _os.path.isdir(_os.path.join(_root, "planner")):
    __path__.append(_root)  # noqa: F821 -- the package's own search path

from sqlsecure.dbapi import (
    BINARY, DATETIME, NUMBER, ROWID, STRING, Binary, Connection, Cursor, Date, DateFromTicks, Time, TimeFromTicks,
    Timestamp, TimestampFromTicks, apilevel, connect, paramstyle, threadsafety,
)
from sqlsecure.engine import Engine
from sqlsecure.errors import (
    ConfigError, DatabaseError, DataError, Error, IntegrityError, InterfaceError, InternalError,
    NotSupportedError, OperationalError, PlanError, PolicyViolation, ProgrammingError, ProtocolError,
    Warning,
)

__version__ = "0.1.0"

__all__ = [
    "connect", "Connection", "Cursor", "Engine", "apilevel", "paramstyle", "threadsafety",
    "STRING", "BINARY", "NUMBER", "DATETIME", "ROWID", "Date", "Time", "Timestamp", "Binary",
    "DateFromTicks", "TimeFromTicks", "TimestampFromTicks",
    "Error", "Warning", "InterfaceError", "DatabaseError", "DataError", "OperationalError",
    "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError", "ConfigError",
    "PlanError", "PolicyViolation", "ProtocolError",
]
