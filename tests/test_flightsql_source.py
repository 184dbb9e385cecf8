"""A party's data behind an Arrow Flight SQL endpoint, read through ADBC's Flight SQL driver.

No Flight SQL server on PyPI serves DuckDB or SQLite without downloading a binary at first use, so the
endpoint here is the smallest one that ADBC's driver talks to, written with pyarrow.flight over an
in-memory DuckDB and independent of sqlsecure's own server (only the standard proto's generated
message classes are shared): GetFlightInfo + DoGet for statement queries (the query travels in the
ticket's handle) and for the metadata commands behind `adbc_get_objects` and `adbc_get_table_schema`
(CommandGetCatalogs, CommandGetDbSchemas, CommandGetTables with the standard result schemas). It
listens on 127.0.0.1 only, on a free port, plain or TLS with a certificate made at test time.
"""

from __future__ import annotations

import base64
import importlib.util
import logging
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from google.protobuf import any_pb2

from sqlsecure.certs import init_certs
from sqlsecure.connectors.adbc_store import AdbcStore, Source
from sqlsecure.errors import ConfigError, OperationalError
from sqlsecure.flight_sql import FlightSql_pb2 as proto

CATALOGS = pa.schema([pa.field("catalog_name", pa.utf8(), nullable=False)])
DB_SCHEMAS = pa.schema([pa.field("catalog_name", pa.utf8()), pa.field("db_schema_name", pa.utf8(), nullable=False)])
TABLES = pa.schema([pa.field("catalog_name", pa.utf8()), pa.field("db_schema_name", pa.utf8()),
                    pa.field("table_name", pa.utf8(), nullable=False),
                    pa.field("table_type", pa.utf8(), nullable=False)])
TABLES_WITH_SCHEMA = TABLES.append(pa.field("table_schema", pa.binary(), nullable=False))

USER_OBJECTS = """
    SELECT database_name AS catalog_name, schema_name AS db_schema_name, table_name, 'TABLE' AS table_type
    FROM duckdb_tables() WHERE NOT internal
    UNION ALL
    SELECT database_name, schema_name, view_name, 'VIEW' FROM duckdb_views() WHERE NOT internal
"""


class BearerReply(flight.ServerMiddleware):
    def __init__(self, token: str | None):
        self.token = token

    def sending_headers(self):
        return {"authorization": f"Bearer {self.token}"} if self.token else {}


class BasicLogin(flight.ServerMiddlewareFactory):
    """One user: HTTP basic credentials on Handshake get a bearer token, every other call must carry it."""

    token = "flight-sql-test-token"

    def __init__(self, user: str, password: str):
        self.basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode().rstrip("=")

    def start_call(self, info, headers):
        sent = (headers.get("authorization") or [""])[0]
        if info.method == flight.FlightMethod.HANDSHAKE and sent.rstrip("=") == self.basic:
            return BearerReply(self.token)
        if sent != f"Bearer {self.token}":
            raise flight.FlightUnauthenticatedError("invalid user name or password")
        return BearerReply(None)


class NoHandshakePayload(flight.ServerAuthHandler):
    """Handshake answers; the headers were checked by `BasicLogin`."""

    def authenticate(self, outgoing, incoming):
        pass

    def is_valid(self, token):
        return ""


def _pack(message) -> bytes:
    wrapped = any_pb2.Any()
    wrapped.Pack(message)
    return wrapped.SerializeToString()


def _unpack(data: bytes):
    """The Flight SQL message inside a serialized Any, of the class its type URL names."""
    wrapped = any_pb2.Any()
    wrapped.ParseFromString(data)
    name = wrapped.TypeName().rsplit(".", 1)[-1]
    cls = getattr(proto, name, None)
    if cls is None:
        raise flight.FlightUnimplementedError(f"not served here: {wrapped.TypeName()}")
    message = cls()
    wrapped.Unpack(message)
    return message


class DuckDBFlightSql(flight.FlightServerBase):
    """Flight SQL over one in-memory DuckDB: statement queries and the catalog metadata commands."""

    def __init__(self, con: duckdb.DuckDBPyConnection, location: str, **kwargs):
        super().__init__(location, **kwargs)
        self.con = con
        self.statements: list[str] = []  # every query a client sent, in order

    def _sql(self, sql: str, params=None) -> pa.Table:
        try:
            return self.con.cursor().sql(sql, params=params).to_arrow_table()
        except duckdb.Error as exc:
            raise flight.FlightServerError(str(exc)) from None

    def _objects(self, command) -> pa.Table:
        """Catalogs, schemas or tables as the command asks, filtered by its (LIKE) patterns."""
        if isinstance(command, proto.CommandGetCatalogs):
            rows = self._sql(f"SELECT DISTINCT catalog_name FROM ({USER_OBJECTS}) ORDER BY 1")
            return rows.cast(CATALOGS)
        catalog = command.catalog if command.HasField("catalog") else None
        schema = command.db_schema_filter_pattern if command.HasField("db_schema_filter_pattern") else None
        where = "($1 IS NULL OR catalog_name = $1) AND ($2 IS NULL OR db_schema_name LIKE $2)"
        if isinstance(command, proto.CommandGetDbSchemas):
            rows = self._sql(f"SELECT DISTINCT catalog_name, db_schema_name FROM ({USER_OBJECTS}) WHERE {where} "
                             "ORDER BY 1, 2", [catalog, schema])
            return rows.cast(DB_SCHEMAS)
        table = command.table_name_filter_pattern if command.HasField("table_name_filter_pattern") else None
        types = list(command.table_types) or None
        rows = self._sql(f"SELECT * FROM ({USER_OBJECTS}) WHERE {where} AND ($3 IS NULL OR table_name LIKE $3) "
                         "AND ($4 IS NULL OR list_contains($4, table_type)) ORDER BY 1, 2, 3",
                         [catalog, schema, table, types]).cast(TABLES)
        if not command.include_schema:
            return rows
        schemas = [self._sql(f'SELECT * FROM "{r["catalog_name"]}"."{r["db_schema_name"]}"."{r["table_name"]}" '
                             "LIMIT 0").schema.serialize().to_pybytes() for r in rows.to_pylist()]
        return rows.append_column(TABLES_WITH_SCHEMA.field("table_schema"), pa.array(schemas, pa.binary()))

    def _result(self, ticket: bytes) -> pa.Table:
        command = _unpack(ticket)
        if isinstance(command, proto.TicketStatementQuery):
            return self._sql(command.statement_handle.decode())
        if isinstance(command, (proto.CommandGetCatalogs, proto.CommandGetDbSchemas, proto.CommandGetTables)):
            return self._objects(command)
        raise flight.FlightUnimplementedError(f"not served here: {type(command).__name__}")

    def get_flight_info(self, context, descriptor):
        command = _unpack(descriptor.command)
        if isinstance(command, proto.CommandStatementQuery):
            self.statements.append(command.query)
            ticket = _pack(proto.TicketStatementQuery(statement_handle=command.query.encode()))
        else:
            ticket = descriptor.command  # a metadata command is its own ticket
        schema = self._result(ticket).schema
        return flight.FlightInfo(schema, descriptor, [flight.FlightEndpoint(ticket, [])], -1, -1)

    def do_get(self, context, ticket):
        return flight.RecordBatchStream(self._result(ticket.ticket))



def _adbc_source_tests():
    """tests/test_adbc_source.py, for its table and queries: the same checks run against this source."""
    path = Path(__file__).with_name("test_adbc_source.py")
    spec = importlib.util.spec_from_file_location("adbc_source_cases", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CASES = _adbc_source_tests()
MORE_ROWS = """
CREATE TABLE events (id BIGINT, seen TIMESTAMPTZ, local_at TIMESTAMP, hour TIME, ok BOOLEAN, payload BLOB);
INSERT INTO events VALUES
  (1, '2024-01-02 10:00:00+02', '2024-01-02 10:00:00', '10:00:00', true, 'ab'),
  (2, '2024-01-02 23:30:00-05', NULL, '23:30:00', false, NULL), (3, NULL, '2023-06-01 00:00:01', NULL, NULL, '');
CREATE TABLE tagged (id INTEGER, tags VARCHAR[]);
CREATE SCHEMA sales;
CREATE TABLE sales.returns (order_id INTEGER, reason VARCHAR);
INSERT INTO sales.returns VALUES (1, 'late'), (3, 'broken'), (3, 'late');
"""
MORE_QUERIES = [
    'SELECT "e"."id" AS "id", "e"."seen" AS "seen" FROM "events" AS "e" '
    'WHERE "e"."seen" > TIMESTAMPTZ \'2024-01-02 12:00:00+00\'',
    'SELECT COUNT(*) AS "n", MIN("e"."local_at") AS "first", MAX("e"."hour") AS "h" FROM "events" AS "e" '
    'WHERE "e"."ok"',
    'SELECT "e"."payload" AS "p", "e"."ok" IS NULL AS "unknown" FROM "events" AS "e"',
    'SELECT "o"."category" AS "c", COUNT(DISTINCT "e"."id") AS "n" FROM "orders" AS "o" JOIN "events" AS "e" '
    'ON "o"."order_id" = "e"."id" GROUP BY "o"."category"',
]


def duckdb_with_rows() -> duckdb.DuckDBPyConnection:
    """The shop's data in DuckDB: what the Flight SQL server serves and what the oracle reads."""
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(CASES.ROWS + MORE_ROWS)
    return con


def start(con: duckdb.DuckDBPyConnection, **options) -> DuckDBFlightSql:
    """A server on a free port of 127.0.0.1; TLS when `options` carry tls_certificates."""
    scheme = "grpc+tls" if "tls_certificates" in options else "grpc"
    return DuckDBFlightSql(con, f"{scheme}://127.0.0.1:0", **options)


@pytest.fixture(scope="module")
def oracle():
    con = duckdb_with_rows()
    yield con
    con.close()


@pytest.fixture(scope="module")
def server():
    con = duckdb_with_rows()
    endpoint = start(con)
    yield endpoint
    endpoint.shutdown()
    con.close()


@pytest.fixture(scope="module")
def store(server):
    shop = AdbcStore("shop", Source(f"grpc://127.0.0.1:{server.port}"))
    yield shop
    shop.close()


def described(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in con.execute(f"DESCRIBE {table}").fetchall()]


def test_catalog_and_types_from_the_endpoint_metadata(server, oracle, caplog):
    with caplog.at_level(logging.WARNING):
        shop = AdbcStore("shop", Source(f"grpc://127.0.0.1:{server.port}"))
    try:
        assert shop.schema() == {"events": described(oracle, "events"), "orders": described(oracle, "orders"),
                                 "returns": described(oracle, "sales.returns")}
        assert shop.sizes() == {"events": 4, "orders": 8, "returns": 4}
        assert "table tagged left out: column tags" in caplog.text
    finally:
        shop.close()


@pytest.mark.parametrize("sql", CASES.QUERIES + MORE_QUERIES)
def test_answers_and_types_equal_duckdb(store, oracle, sql):
    CASES.test_answers_and_types_equal_duckdb(store, oracle, sql)  # the PostgreSQL source's check, as is


def test_the_endpoint_only_returns_projections(store, server):
    """Its engine (so its dialect) is unknown: the store fetches the columns a query needs, then finishes
    the query locally; no filter, function or aggregate is sent, so none can mean something else there."""
    fetch, pushed = store.pushdown(CASES.QUERIES[4])
    assert not pushed
    assert fetch == 'SELECT "order_id", "category" FROM "main"."orders"'
    fetch, pushed = store.pushdown(MORE_QUERIES[3])
    assert not pushed
    assert fetch == 'SELECT "id" FROM "main"."events"; SELECT "order_id", "category" FROM "main"."orders"'
    server.statements.clear()
    store.query(CASES.QUERIES[1])
    assert server.statements == ['SELECT "amount", "odate" FROM "main"."orders"']


def test_a_schema_of_the_endpoint(server, oracle):
    shop = AdbcStore("shop", Source(f"grpc://127.0.0.1:{server.port}", schema="sales"))
    try:
        assert shop.schema() == {"returns": described(oracle, "sales.returns")}
        got = shop.query('SELECT "r"."reason" AS "r", COUNT(*) AS "n" FROM "returns" AS "r" GROUP BY "r"."reason"')
        assert sorted(got.to_pylist(), key=repr) == [{"r": "broken", "n": 1}, {"r": "late", "n": 2}]
    finally:
        shop.close()


def test_tables_in_their_schemas(store, oracle):
    sql = 'SELECT "o"."category" AS "c", COUNT(*) AS "n" FROM "orders" AS "o" JOIN "returns" AS "r" ' \
          'ON "o"."order_id" = "r"."order_id" GROUP BY "o"."category"'
    assert store.pushdown(sql)[0] == 'SELECT "order_id", "category" FROM "main"."orders"; ' \
                                     'SELECT "order_id" FROM "sales"."returns"'
    assert sorted(store.query(sql).to_pylist(), key=repr) == sorted(oracle.sql(
        sql.replace('"returns"', '"sales"."returns"')).to_arrow_table().to_pylist(), key=repr)


def test_a_table_name_in_two_schemas_needs_the_party_schema():
    con = duckdb.connect(":memory:")
    con.execute("CREATE SCHEMA old; CREATE TABLE orders (id INTEGER); CREATE TABLE old.orders (id INTEGER)")
    endpoint = start(con)
    try:
        with pytest.raises(ConfigError, match="table 'orders' is in more than one schema .* set the party's schema"):
            AdbcStore("shop", Source(f"grpc://127.0.0.1:{endpoint.port}"))
        shop = AdbcStore("shop", Source(f"grpc://127.0.0.1:{endpoint.port}", schema="old"))
        assert shop.pushdown('SELECT "o"."id" AS "id" FROM "orders" AS "o"')[0] == 'SELECT "id" FROM "old"."orders"'
        shop.close()
    finally:
        endpoint.shutdown()
        con.close()


def test_the_store_never_writes(store, server):
    server.statements.clear()
    with pytest.raises(OperationalError, match="read-only"):
        store.write('DELETE FROM "orders"')
    with pytest.raises(OperationalError, match="no table"):
        store.query('SELECT * FROM "orders" AS "o" WHERE "o"."order_id" IN (SELECT 1 FROM "secrets")')
    assert server.statements == []


def _free_port() -> int:
    probe = start(duckdb.connect(":memory:"))
    port = probe.port
    probe.shutdown()
    return port


def test_a_user_and_a_password_file(tmp_path):
    """The user from the URI, the password from the party's password file: HTTP basic login, bearer token."""
    secret = tmp_path / "pw"
    secret.write_text("correct horse\n")
    con = duckdb_with_rows()
    endpoint = start(con, auth_handler=NoHandshakePayload(),
                     middleware={"login": BasicLogin("analyst", "correct horse")})
    uri = f"grpc://analyst@127.0.0.1:{endpoint.port}"
    try:
        shop = AdbcStore("shop", Source(uri, password_file=secret))
        assert set(shop.schema()) == {"events", "orders", "returns"}
        shop.close()
        secret.write_text("wrong")
        with pytest.raises(ConfigError, match=f"cannot connect to {uri}: .*invalid user name or password"):
            AdbcStore("shop", Source(uri, password_file=secret))
    finally:
        endpoint.shutdown()
        con.close()


def test_an_unreachable_endpoint_is_a_config_error_without_credentials(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("correct horse\n")
    uri = f"grpc+tls://analyst:hunter2@127.0.0.1:{_free_port()}"
    for source in (Source(uri), Source(uri.replace(":hunter2", ""), password_file=secret)):
        with pytest.raises(ConfigError, match=r"grpc\+tls://analyst(:\*\*\*)?@127\.0\.0\.1") as refused:
            AdbcStore("shop", source)
        assert "hunter2" not in str(refused.value) and "correct horse" not in str(refused.value)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    certs = tmp_path_factory.mktemp("tls")
    init_certs(certs, ["localhost"])
    con = duckdb_with_rows()
    pair = flight.CertKeyPair(cert=(certs / "localhost.pem").read_bytes(), key=(certs / "localhost.key").read_bytes())
    endpoint = start(con, tls_certificates=[pair])
    yield endpoint, certs / "ca.pem"
    endpoint.shutdown()
    con.close()


def test_a_tls_endpoint_with_the_federation_ca(tls_server, oracle):
    endpoint, ca = tls_server
    shop = AdbcStore("shop", Source(f"grpc+tls://127.0.0.1:{endpoint.port}", tls_root_certs=ca))
    try:
        sql = CASES.QUERIES[2]
        assert shop.query(sql) .sort_by("c").equals(oracle.sql(sql).to_arrow_table().sort_by("c"))
    finally:
        shop.close()


def test_a_tls_endpoint_with_an_untrusted_certificate_is_refused(tls_server, tmp_path):
    endpoint, _ = tls_server
    init_certs(tmp_path, [], ca_name="another CA")
    with pytest.raises(ConfigError, match=f"grpc\\+tls://127.0.0.1:{endpoint.port}"):
        AdbcStore("shop", Source(f"grpc+tls://127.0.0.1:{endpoint.port}", tls_root_certs=tmp_path / "ca.pem"))


def test_tls_root_certs_need_a_tls_endpoint(server, tls_server):
    _, ca = tls_server
    with pytest.raises(ConfigError, match="tls_root_certs is for a grpc\\+tls:// endpoint"):
        AdbcStore("shop", Source(f"grpc://127.0.0.1:{server.port}", tls_root_certs=ca))
    with pytest.raises(ConfigError, match="tls_root_certs is for a grpc\\+tls:// endpoint, not sqlite://"):
        AdbcStore("shop", Source("sqlite:///nowhere.sqlite", tls_root_certs=ca))
    with pytest.raises(ConfigError, match="cannot read tls_root_certs"):
        AdbcStore("shop", Source(f"grpc+tls://127.0.0.1:{server.port}", tls_root_certs=ca.with_name("missing.pem")))
