"""What a Flight SQL client learns about the federation: SqlInfo, catalogs, schemas, tables, table types.

The federation is one catalog (named after the federation); each party is a database schema and
its tables are that schema's tables, so a client's `"party"."table"` is exactly what the planner
reads. Table schemas are public in sqlsecure's security model (docs/design.md: query text and schemas
are public), so every party's tables are listed, whoever the issuer is; whether a query over them
is answered is the policy's decision at run time.

Each function here returns a `pyarrow.Table` with the schema the Flight SQL specification fixes
for that command (the comments in FlightSql.proto).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import sqlglot

from sqlsecure.flight_sql import FlightSql_pb2 as pb

TABLE_TYPE = "TABLE"
VIEW_TYPE = "VIEW"  # a federation view ([views]): addressed by its bare name, so in no party's schema

CATALOGS_SCHEMA = pa.schema([pa.field("catalog_name", pa.utf8(), nullable=False)])
DB_SCHEMAS_SCHEMA = pa.schema([
    pa.field("catalog_name", pa.utf8()),
    pa.field("db_schema_name", pa.utf8(), nullable=False),
])
TABLES_SCHEMA = pa.schema([
    pa.field("catalog_name", pa.utf8()),
    pa.field("db_schema_name", pa.utf8()),
    pa.field("table_name", pa.utf8(), nullable=False),
    pa.field("table_type", pa.utf8(), nullable=False),
])
TABLES_WITH_SCHEMA_SCHEMA = TABLES_SCHEMA.append(pa.field("table_schema", pa.binary(), nullable=False))
TABLE_TYPES_SCHEMA = pa.schema([pa.field("table_type", pa.utf8(), nullable=False)])

# CommandGetSqlInfo's value column: a dense union whose type codes are the order of its members.
SQL_INFO_VALUE = pa.dense_union([
    pa.field("string_value", pa.utf8()),
    pa.field("bool_value", pa.bool_()),
    pa.field("bigint_value", pa.int64()),
    pa.field("int32_bitmask", pa.int32()),
    pa.field("string_list", pa.list_(pa.utf8())),
    pa.field("int32_to_int32_list_map", pa.map_(pa.int32(), pa.list_(pa.int32()))),
])
SQL_INFO_SCHEMA = pa.schema([
    pa.field("info_name", pa.uint32(), nullable=False),
    pa.field("value", SQL_INFO_VALUE, nullable=False),
])
STRING, BOOL, BIGINT, INT32, STRING_LIST = 0, 1, 2, 3, 4  # type codes of SQL_INFO_VALUE


@dataclass(frozen=True)
class SqlInfoValue:
    kind: int  # a type code of SQL_INFO_VALUE
    value: object


def server_sql_info(*, version: str, dialect: str, statement_timeout_ms: int) -> dict[int, SqlInfoValue]:
    """The SqlInfo this server reports: who it is, that it is read-only, and how identifiers are quoted."""
    try:
        quote = sqlglot.Dialect.get_or_raise(dialect).IDENTIFIER_START or '"'
    except ValueError:
        quote = '"'
    return {
        pb.FLIGHT_SQL_SERVER_NAME: SqlInfoValue(STRING, "sqlsecure"),
        pb.FLIGHT_SQL_SERVER_VERSION: SqlInfoValue(STRING, version),
        pb.FLIGHT_SQL_SERVER_ARROW_VERSION: SqlInfoValue(STRING, pa.__version__),
        pb.FLIGHT_SQL_SERVER_READ_ONLY: SqlInfoValue(BOOL, True),
        pb.FLIGHT_SQL_SERVER_SQL: SqlInfoValue(BOOL, True),
        pb.FLIGHT_SQL_SERVER_SUBSTRAIT: SqlInfoValue(BOOL, False),
        pb.FLIGHT_SQL_SERVER_TRANSACTION: SqlInfoValue(INT32, pb.SQL_SUPPORTED_TRANSACTION_NONE),
        pb.FLIGHT_SQL_SERVER_CANCEL: SqlInfoValue(BOOL, False),
        pb.FLIGHT_SQL_SERVER_STATEMENT_TIMEOUT: SqlInfoValue(INT32, statement_timeout_ms),
        pb.FLIGHT_SQL_SERVER_TRANSACTION_TIMEOUT: SqlInfoValue(INT32, 0),
        pb.SQL_DDL_CATALOG: SqlInfoValue(BOOL, False),
        pb.SQL_DDL_SCHEMA: SqlInfoValue(BOOL, False),
        pb.SQL_DDL_TABLE: SqlInfoValue(BOOL, False),
        pb.SQL_IDENTIFIER_QUOTE_CHAR: SqlInfoValue(STRING, quote),
        # the grants decide per query whether a table may be read, so not every table is selectable
        pb.SQL_ALL_TABLES_ARE_SELECTABLE: SqlInfoValue(BOOL, False),
        pb.SQL_SEARCH_STRING_ESCAPE: SqlInfoValue(STRING, "\\"),
        pb.SQL_SUPPORTS_COLUMN_ALIASING: SqlInfoValue(BOOL, True),
        pb.SQL_SCHEMA_TERM: SqlInfoValue(STRING, "party"),
        pb.SQL_CATALOG_TERM: SqlInfoValue(STRING, "federation"),
        pb.SQL_TRANSACTIONS_SUPPORTED: SqlInfoValue(BOOL, False),
        pb.SQL_BATCH_UPDATES_SUPPORTED: SqlInfoValue(BOOL, False),
        pb.SQL_SAVEPOINTS_SUPPORTED: SqlInfoValue(BOOL, False),
        pb.SQL_NAMED_PARAMETERS_SUPPORTED: SqlInfoValue(BOOL, False),
    }


def sql_info_table(info: dict[int, SqlInfoValue], requested) -> pa.Table:
    """One row per requested id that the server knows (all of them if none is requested), in id order."""
    ids = sorted(info) if not requested else [i for i in dict.fromkeys(requested) if i in info]
    members = [[] for _ in SQL_INFO_VALUE]
    type_ids, offsets = [], []
    for i in ids:
        item = info[i]
        type_ids.append(item.kind)
        offsets.append(len(members[item.kind]))
        members[item.kind].append(item.value)
    children = [pa.array(values, type=field.type) for values, field in zip(members, SQL_INFO_VALUE)]
    value = pa.UnionArray.from_dense(pa.array(type_ids, pa.int8()), pa.array(offsets, pa.int32()), children,
                                     [field.name for field in SQL_INFO_VALUE], list(SQL_INFO_VALUE.type_codes))
    return pa.Table.from_arrays([pa.array(ids, pa.uint32()), value], schema=SQL_INFO_SCHEMA)


def like_pattern(pattern: str) -> re.Pattern:
    """A Flight SQL filter pattern (`%` any run, `_` one character, `\\` escapes) as a regular expression."""
    out, chars = [], iter(pattern)
    for ch in chars:
        if ch == "\\":
            out.append(re.escape(next(chars, "\\")))
        elif ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def _matches(pattern: str | None, name: str) -> bool:
    return pattern is None or like_pattern(pattern).fullmatch(name) is not None


def _optional(message, field: str) -> str | None:
    return getattr(message, field) if message.HasField(field) else None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def table_schema(catalog: str, party: str, table: str, columns) -> pa.Schema:
    """The Arrow schema of a party's table, from its DuckDB column types (as DuckDB itself exports them),
    each field annotated with the Flight SQL column metadata."""
    con = duckdb.connect()
    try:
        fields = []
        for name, duck_type in columns:
            try:
                probe = con.sql(f"SELECT CAST(NULL AS {duck_type}) AS {_quote(name)}")
                arrow_type = probe.to_arrow_table().schema[0].type
            except duckdb.Error:  # a type only the party's own database knows (an ENUM, say): report it as text
                arrow_type = pa.utf8()
            metadata = {
                "ARROW:FLIGHT:SQL:CATALOG_NAME": catalog,
                "ARROW:FLIGHT:SQL:DB_SCHEMA_NAME": party,
                "ARROW:FLIGHT:SQL:TABLE_NAME": table,
                "ARROW:FLIGHT:SQL:TYPE_NAME": duck_type,
                "ARROW:FLIGHT:SQL:IS_READ_ONLY": "1",
                "ARROW:FLIGHT:SQL:IS_AUTO_INCREMENT": "0",
            }
            if pa.types.is_decimal(arrow_type):
                metadata["ARROW:FLIGHT:SQL:PRECISION"] = str(arrow_type.precision)
                metadata["ARROW:FLIGHT:SQL:SCALE"] = str(arrow_type.scale)
            fields.append(pa.field(name, arrow_type, nullable=True, metadata=metadata))
        return pa.schema(fields)
    finally:
        con.close()


class FederationCatalog:
    """The federation as Flight SQL metadata: one catalog, a schema per party, their tables and Arrow schemas."""

    def __init__(self, name: str, tables: dict[str, dict[str, tuple]], views: dict[str, list] | None = None):
        self.name = name
        self.parties = sorted(tables)
        self.schemas = {
            (party, table): table_schema(name, party, table, columns)
            for party in self.parties for table, columns in sorted(tables[party].items())
        }
        self.views = {view: table_schema(name, "", view, [(c, t or "VARCHAR") for c, t in columns])
                      for view, columns in sorted((views or {}).items())}

    def _catalog_matches(self, catalog: str | None) -> bool:
        return catalog is None or catalog == self.name

    def catalogs(self) -> pa.Table:
        return pa.Table.from_pylist([{"catalog_name": self.name}], schema=CATALOGS_SCHEMA)

    def db_schemas(self, command: pb.CommandGetDbSchemas) -> pa.Table:
        pattern = _optional(command, "db_schema_filter_pattern")
        rows = [{"catalog_name": self.name, "db_schema_name": party} for party in self.parties
                if self._catalog_matches(_optional(command, "catalog")) and _matches(pattern, party)]
        return pa.Table.from_pylist(rows, schema=DB_SCHEMAS_SCHEMA)

    def tables(self, command: pb.CommandGetTables) -> pa.Table:
        schema_pattern = _optional(command, "db_schema_filter_pattern")
        table_pattern = _optional(command, "table_name_filter_pattern")
        types = set(command.table_types)
        rows = []
        listed = []
        if self._catalog_matches(_optional(command, "catalog")):
            if not types or TABLE_TYPE in types:
                listed += [(party, table, TABLE_TYPE, schema) for (party, table), schema in self.schemas.items()
                           if _matches(schema_pattern, party)]
            if (not types or VIEW_TYPE in types) and schema_pattern in (None, "", "%"):
                listed += [(None, view, VIEW_TYPE, schema) for view, schema in self.views.items()]
        for party, table, kind, schema in listed:
            if _matches(table_pattern, table):
                row = {"catalog_name": self.name, "db_schema_name": party, "table_name": table, "table_type": kind}
                if command.include_schema:
                    row["table_schema"] = schema.serialize().to_pybytes()
                rows.append(row)
        return pa.Table.from_pylist(rows, schema=TABLES_WITH_SCHEMA_SCHEMA if command.include_schema else TABLES_SCHEMA)

    @staticmethod
    def table_types() -> pa.Table:
        return pa.Table.from_pylist([{"table_type": TABLE_TYPE}, {"table_type": VIEW_TYPE}], schema=TABLE_TYPES_SCHEMA)
