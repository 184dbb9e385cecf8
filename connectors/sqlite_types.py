"""A SQLite party's column types: its declared types, and a guard that its rows hold values of them.

SQLite is dynamically typed: a column declared INTEGER may hold text, a real or a blob in some rows. ADBC
reads a table's schema from its values (a column holding text anywhere becomes VARCHAR, an empty REAL column
BIGINT), which would publish to every party whether some row holds an odd value, and make answers depend
on it. So the catalog follows the declared type's affinity (SQLite's rules, "Datatypes In SQLite" 3.1):
INTEGER -> BIGINT, REAL -> DOUBLE, TEXT and DATE / TIME -> VARCHAR, BLOB -> BLOB; a column of NUMERIC
affinity (NUMERIC, DECIMAL, BOOLEAN) or without a type holds integers or reals (or anything) by value, which
no one DuckDB type holds exactly, so its table is left out with a warning in the party's log.

Before a query reads a table, `storage_guard` counts the rows whose storage class (`typeof`) is not its
column's; any is a DataError naming the table and column, never the value (SQLite would compute on it:
SUM reads 'abc' as 0, a comparison orders text after every number; tests/test_attacks_s14.py).
"""

from __future__ import annotations

import pyarrow as pa
from sqlglot import exp

from sqlsecure.errors import DataError

# type -> the storage classes its column's values may have (an integer in a REAL column is stored as real)
STORAGE = {pa.int64(): ("integer",), pa.float64(): ("real", "integer"), pa.string(): ("text",),
           pa.binary(): ("blob",)}


def declared_type(declared: str) -> pa.DataType | None:
    """The Arrow type of a SQLite column of declared type `declared`; None: NUMERIC affinity or none."""
    t = declared.upper()
    if "INT" in t:
        return pa.int64()
    if any(k in t for k in ("CHAR", "CLOB", "TEXT")):
        return pa.string()
    if "BLOB" in t:
        return pa.binary()
    if any(k in t for k in ("REAL", "FLOA", "DOUB")):
        return pa.float64()
    if any(k in t for k in ("DATE", "TIME")):  # dates as SQLite keeps them: ISO text
        return pa.string()
    return None


def declared_schema(table_info: pa.Table) -> tuple[pa.Schema, list[str]]:
    """The schema of a table from its `PRAGMA table_info` rows, and the columns without a type (messages)."""
    fields, untyped = [], []
    for row in table_info.select(["name", "type"]).to_pylist():
        t = declared_type(row["type"] or "")
        if t is None:
            untyped.append(f"{row['name']} ({row['type'] or 'no type'})")
        fields.append(pa.field(row["name"], t if t is not None else pa.null()))
    return pa.schema(fields), untyped


def storage_guard(table_sql: str, schema: pa.Schema, columns: list[str]) -> str:
    """SQL counting, per column of `columns`, the rows of the table whose value is not of its type."""
    counts = []
    for i, name in enumerate(columns):
        kinds = ", ".join(f"'{k}'" for k in STORAGE[schema.field(name).type] + ("null",))
        column = exp.to_identifier(name, quoted=True).sql(dialect="sqlite")
        counts.append(f"SUM(typeof({column}) NOT IN ({kinds})) AS \"c{i}\"")
    return f"SELECT {', '.join(counts)} FROM {table_sql}"


def refuse_odd_values(party: str, table: str, columns: list[str], types: dict[str, str], counts: pa.Table) -> None:
    """DataError naming the first column with values of another storage class than its type (`types`:
    column -> DuckDB type name)."""
    row = counts.to_pylist()[0] if counts.num_rows else {}
    for i, name in enumerate(columns):
        if row.get(f"c{i}"):
            raise DataError(f"party {party!r}: column {table}.{name} is {types[name]} but "
                            f"some rows hold values SQLite stores as another type; {party} fixes its data (or "
                            "declares the column's type so) before it can be queried")
