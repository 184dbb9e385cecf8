"""The Flight SQL endpoint, driven by a real client: ADBC's Flight SQL driver over TLS with a password.

The server runs in-process on 127.0.0.1 (a free port) with a certificate issued at test time by a
throwaway CA; every answer is compared with what `Engine.execute` returns for the same issuer.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

adbc_flightsql = pytest.importorskip("adbc_driver_flightsql.dbapi")
import adbc_driver_manager

from sqlsecure import errors
from sqlsecure.engine import Engine
from sqlsecure.flight_sql import BearerTokens, Credentials, FlightSqlServer
from sqlsecure.flight_sql import FlightSql_pb2 as pb
from sqlsecure.flight_sql.metadata import like_pattern, sql_info_table
from sqlsecure.flight_sql.protocol import CommandError, pack, unpack

USER, PASSWORD = "dashboard", "correct horse battery staple"
TIMEOUT = "30"  # seconds, for every RPC the client makes

# bank may join on shop's keys and read its categories, but shop's amounts only aggregated
GRANTS = """
[[grants]]
party = "bank"
columns = ["shop.orders.order_id", "shop.orders.customer_id", "shop.orders.category", "shop.orders.region",
           "insurer.*.*"]
constraint = "PLAINTEXT"

[[grants]]
party = "bank"
columns = ["shop.orders.amount"]
constraint = "PLAINTEXT_AFTER_AGGREGATE"

[[grants]]
party = "shop"
columns = ["bank.*.*", "insurer.*.*"]
constraint = "PLAINTEXT"

[[grants]]
party = "insurer"
columns = ["bank.*.*", "shop.*.*"]
constraint = "PLAINTEXT"
"""

JOIN = """SELECT o.category, COUNT(*) AS orders, SUM(o.amount) AS revenue
          FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id
          GROUP BY o.category"""


# -- certificates -----------------------------------------------------------------------------------------

def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def issue_certificates(directory: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost signed by it (PEM files)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("sqlsecure test CA")).issuer_name(_name("sqlsecure test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca": directory / "ca.pem", "cert": directory / "server.pem", "key": directory / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return paths


# -- fixtures ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, Path]:
    return issue_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def fed_engine(tmp_path_factory, make_federation):
    path = make_federation(tmp_path_factory.mktemp("flight_federation"), grants=GRANTS)
    with Engine(path, timeout=60) as engine:
        yield engine


@pytest.fixture(scope="module")
def server(fed_engine, certs):
    tls = [flight.CertKeyPair(cert=certs["cert"].read_bytes(), key=certs["key"].read_bytes())]
    srv = FlightSqlServer(fed_engine, "bank", credentials=Credentials({USER: PASSWORD}), host="127.0.0.1", port=0,
                          tls_certificates=tls)
    try:
        yield srv
    finally:
        srv.shutdown()


def connect(server, certs, password: str = PASSWORD):
    return adbc_flightsql.connect(server.uri, db_kwargs={
        "username": USER,
        "password": password,
        "adbc.flight.sql.client_option.tls_root_certs": certs["ca"].read_text(),
        "adbc.flight.sql.rpc.timeout_seconds.fetch": TIMEOUT,
        "adbc.flight.sql.rpc.timeout_seconds.query": TIMEOUT,
        "adbc.flight.sql.rpc.timeout_seconds.update": TIMEOUT,
    }, autocommit=True)


@pytest.fixture()
def conn(server, certs):
    with connect(server, certs) as connection:
        yield connection


def sorted_rows(table: pa.Table) -> list[tuple]:
    return sorted((tuple(row.values()) for row in table.to_pylist()), key=repr)


# -- queries ----------------------------------------------------------------------------------------------

def test_uri_is_tls_on_loopback(server):
    assert server.uri.startswith("grpc+tls://127.0.0.1:") and server.port > 0


def test_federated_query_matches_the_engine(conn, fed_engine):
    with conn.cursor() as cur:
        cur.execute(JOIN)
        got = cur.fetch_arrow_table()
    want = fed_engine.execute(JOIN, "bank").table
    assert got.num_rows > 0
    assert got.schema.names == want.schema.names
    assert sorted_rows(got) == sorted_rows(want)


def test_single_party_query_with_types(conn, fed_engine):
    sql = "SELECT id, name, age, income, region FROM bank.customers ORDER BY name LIMIT 7"
    with conn.cursor() as cur:
        cur.execute(sql)
        got = cur.fetch_arrow_table()
    want = fed_engine.execute(sql, "bank").table
    assert got.schema.types == want.schema.types  # decimals, int32, strings survive the trip unchanged
    assert got.to_pylist() == want.to_pylist()


def test_prepared_statement_binds_a_parameter(conn, fed_engine):
    sql = "SELECT name, age FROM bank.customers WHERE age > ? ORDER BY name"
    with conn.cursor() as cur:
        cur.execute(sql, (60,))
        got = cur.fetch_arrow_table()
        cur.execute(sql, (75,))  # same statement, new value
        again = cur.fetch_arrow_table()
    assert got.to_pylist() == fed_engine.execute(sql, "bank", [60]).table.to_pylist()
    assert again.to_pylist() == fed_engine.execute(sql, "bank", [75]).table.to_pylist()
    assert 0 < again.num_rows < got.num_rows


def test_prepared_federated_query_with_parameter(conn, fed_engine):
    sql = """SELECT o.category, COUNT(*) AS orders FROM bank.customers c
             JOIN shop.orders o ON c.id = o.customer_id WHERE c.age >= ? GROUP BY o.category"""
    with conn.cursor() as cur:
        cur.execute(sql, (30,))
        got = cur.fetch_arrow_table()
    assert sorted_rows(got) == sorted_rows(fed_engine.execute(sql, "bank", [30]).table)


def test_policy_violation_reaches_the_client_with_its_message(conn, fed_engine):
    sql = "SELECT o.amount FROM shop.orders o"
    with pytest.raises(errors.PolicyViolation) as direct:
        fed_engine.execute(sql, "bank")
    with conn.cursor() as cur, pytest.raises(adbc_driver_manager.Error) as refused:
        cur.execute(sql)
        cur.fetchall()
    text = str(refused.value)
    assert "PolicyViolation" in text and str(direct.value) in text
    assert "Traceback" not in text and ".py" not in text


def test_plan_error_reaches_the_client_without_traceback(conn):
    with conn.cursor() as cur, pytest.raises(adbc_driver_manager.Error) as refused:
        cur.execute("SELECT nope FROM bank.customers")
        cur.fetchall()
    assert "PlanError" in str(refused.value) and "Traceback" not in str(refused.value)


@pytest.mark.parametrize("sql", ["DELETE FROM bank.customers", "INSERT INTO bank.accounts VALUES (1, 2, 3.0)",
                                 "CREATE TABLE mine AS SELECT * FROM bank.customers", "DROP TABLE bank.accounts"])
def test_writes_are_refused(conn, fed_engine, sql):
    with conn.cursor() as cur, pytest.raises(adbc_driver_manager.Error) as refused:
        cur.execute(sql)
        cur.fetchall()
    assert "read-only" in str(refused.value) and "Traceback" not in str(refused.value)
    assert fed_engine.execute("SELECT COUNT(*) AS n FROM bank.accounts", "bank").table.column("n").to_pylist() == [60]


def test_read_only_query_accepts_queries_only():
    from sqlsecure.flight_sql.server import count_parameters, read_only_query

    assert count_parameters(read_only_query("SELECT a FROM bank.t WHERE a > ? AND b = ?", "duckdb")) == 2
    read_only_query("EXPLAIN SELECT 1 UNION ALL SELECT 2", "duckdb")  # EXPLAIN of a query is a query
    for sql in ("UPDATE bank.t SET a = 1", "EXPLAIN DELETE FROM bank.t", "ATTACH 'x.db'", "SET threads = 1"):
        with pytest.raises(errors.Error):
            read_only_query(sql, "duckdb")


def test_concurrent_clients_get_correct_answers(server, certs, fed_engine):
    queries = [
        (JOIN, None),
        ("SELECT region, COUNT(*) AS n FROM bank.customers GROUP BY region", None),
        ("SELECT name, age FROM bank.customers WHERE age > ? ORDER BY name", (50,)),
        ("SELECT COUNT(*) AS n FROM bank.customers c JOIN insurer.policies p ON c.id = p.customer_id", None),
    ]
    expected = [sorted_rows(fed_engine.execute(sql, "bank", params).table) for sql, params in queries]
    start = threading.Barrier(8, timeout=60)

    def client(i: int):
        with connect(server, certs) as connection, connection.cursor() as cur:
            start.wait()
            answers = []
            for k in range(len(queries)):
                sql, params = queries[(i + k) % len(queries)]
                cur.execute(sql, params)
                answers.append(((i + k) % len(queries), sorted_rows(cur.fetch_arrow_table())))
            return answers

    with ThreadPoolExecutor(8) as pool:
        results = [future.result(timeout=240) for future in [pool.submit(client, i) for i in range(8)]]
    for answers in results:
        for index, rows in answers:
            assert rows == expected[index]


def test_unexpected_failure_is_an_internal_error_without_traceback(conn, fed_engine, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret server detail")

    monkeypatch.setattr(fed_engine, "execute", broken)
    with conn.cursor() as cur, pytest.raises(adbc_driver_manager.Error) as failed:
        cur.execute("SELECT COUNT(*) AS n FROM bank.customers")
        cur.fetchall()
    text = str(failed.value)
    assert "INTERNAL" in text and "internal error" in text
    assert "secret server detail" not in text and "Traceback" not in text


def test_engine_errors_map_to_flight_errors():
    from sqlsecure.flight_sql import flight_error

    assert isinstance(flight_error(errors.PolicyViolation("no")), flight.FlightUnauthorizedError)
    assert isinstance(flight_error(errors.ProtocolError("gone")), flight.FlightUnavailableError)
    assert isinstance(flight_error(errors.InternalError("bug")), flight.FlightInternalError)
    assert isinstance(flight_error(errors.NotSupportedError("later")), flight.FlightServerError)
    assert str(flight_error(errors.PlanError("bad"))).startswith("PlanError: bad")

class FakeClock:
    """A clock the test moves by hand, so that no test sleeps or depends on machine speed."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def flight_client(server, certs):
    return flight.connect(server.uri, tls_root_certs=certs["ca"].read_bytes())


BAD_REQUESTS = {
    "do_get of garbage": lambda c, o: c.do_get(flight.Ticket(b"\x00\xffgarbage"), o).read_all(),
    "do_get of an empty ticket": lambda c, o: c.do_get(flight.Ticket(b""), o).read_all(),
    "do_get of an unknown handle": lambda c, o: c.do_get(
        flight.Ticket(pack(pb.TicketStatementQuery(statement_handle=b"nope"))), o).read_all(),
    "do_get of a query command": lambda c, o: c.do_get(
        flight.Ticket(pack(pb.CommandStatementQuery(query="SELECT 1"))), o).read_all(),
    "get_flight_info of a path": lambda c, o: c.get_flight_info(flight.FlightDescriptor.for_path("a", "b"), o),
    "get_flight_info of garbage": lambda c, o: c.get_flight_info(flight.FlightDescriptor.for_command(b"\xff\x00"), o),
    "get_flight_info of bad SQL": lambda c, o: c.get_flight_info(
        flight.FlightDescriptor.for_command(pack(pb.CommandStatementQuery(query="SELECT 'abc"))), o),
    "get_flight_info of a deep query": lambda c, o: c.get_flight_info(flight.FlightDescriptor.for_command(
        pack(pb.CommandStatementQuery(query="SELECT " + "(" * 500 + "1" + ")" * 500))), o),
    "get_flight_info of an unknown statement": lambda c, o: c.get_flight_info(flight.FlightDescriptor.for_command(
        pack(pb.CommandPreparedStatementQuery(prepared_statement_handle=b"nope"))), o),
    "list_flights with garbage criteria": lambda c, o: list(c.list_flights(b"\xff\xfe", o)),
    "do_action with a garbage body": lambda c, o: list(c.do_action(flight.Action("CreatePreparedStatement",
                                                                                   b"\xff"), o)),
    "do_action of an unknown type": lambda c, o: list(c.do_action(flight.Action("Nope", b""), o)),
    "do_put to a path": lambda c, o: c.do_put(flight.FlightDescriptor.for_path("x"), pa.schema([("a", pa.int64())]),
                                              o)[0].close(),
}


@pytest.mark.parametrize("request_", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_bad_requests_get_a_clean_flight_error_never_a_traceback(server, certs, request_):
    client = flight_client(server, certs)
    try:
        options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(USER, PASSWORD)], timeout=30)
        try:
            result = request_(client, options)
        except flight.FlightError as exc:
            text = str(exc)
            assert "Traceback" not in text and 'File "' not in text and "sqlsecure/" not in text, text
        else:
            assert not result  # list_flights: nothing to list
    finally:
        client.close()


def test_failed_logins_back_off_per_user_without_sleeping():
    from sqlsecure.flight_sql.auth import HeaderAuthMiddlewareFactory, LoginThrottle

    clock = FakeClock()
    factory = HeaderAuthMiddlewareFactory(Credentials({USER: PASSWORD, "other": "pw"}), BearerTokens(),
                                          LoginThrottle(free=5, free_all=1000, base=1.0, cap=60.0, clock=clock))

    class Info:
        method = flight.FlightMethod.HANDSHAKE

    def login(user, password):
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        return factory.start_call(Info(), {"authorization": [f"Basic {basic}"]})

    for _ in range(5):
        with pytest.raises(flight.FlightUnauthenticatedError, match="invalid user name or password"):
            login(USER, "wrong")
    with pytest.raises(flight.FlightUnauthenticatedError, match="invalid user name or password"):
        login(USER, "wrong")  # the 6th failure: blocked for 1 s from now
    for _ in range(200):
        with pytest.raises(flight.FlightUnauthenticatedError, match="too many failed logins: retry in 1 s"):
            login(USER, "wrong")
    with pytest.raises(flight.FlightUnauthenticatedError, match="too many failed logins"):
        login(USER, PASSWORD)  # the right password waits too: it is not even checked
    assert login("other", "pw").user == "other"  # other users are not affected
    clock.now += 1.0
    with pytest.raises(flight.FlightUnauthenticatedError, match="invalid user name or password"):
        login(USER, "wrong")  # the 7th failure: blocked for 2 s
    clock.now += 1.5
    with pytest.raises(flight.FlightUnauthenticatedError, match="retry in 1 s"):
        login(USER, PASSWORD)
    clock.now += 0.5
    assert login(USER, PASSWORD).user == USER
    assert factory.throttle.retry_after(USER) == 0
    for _ in range(5):  # a success cleared the count: five free failures again
        with pytest.raises(flight.FlightUnauthenticatedError, match="invalid user name or password"):
            login(USER, "wrong")


def test_guessing_one_password_for_many_names_backs_off_server_wide():
    from sqlsecure.flight_sql.auth import LoginThrottle

    clock = FakeClock()
    throttle = LoginThrottle(free=5, free_all=20, base=1.0, cap=60.0, clock=clock)
    for i in range(21):
        throttle.failed(f"user{i}")
    assert throttle.retry_after("someone-new") == 1.0
    clock.now += 61
    assert throttle.retry_after("someone-new") == 0


def test_the_server_throttles_failed_logins(fed_engine, certs):
    from sqlsecure.flight_sql.auth import LoginThrottle

    clock = FakeClock()
    tls = [flight.CertKeyPair(cert=certs["cert"].read_bytes(), key=certs["key"].read_bytes())]
    srv = FlightSqlServer(fed_engine, "bank", credentials=Credentials({USER: PASSWORD}), host="127.0.0.1", port=0,
                          tls_certificates=tls, throttle=LoginThrottle(clock=clock))
    client = flight_client(srv, certs)
    try:
        messages = []
        for _ in range(20):
            with pytest.raises(flight.FlightUnauthenticatedError) as refused:
                client.authenticate_basic_token(USER, "wrong")
            messages.append(str(refused.value))
        assert sum("too many failed logins" in m for m in messages) == 14
        with pytest.raises(flight.FlightUnauthenticatedError, match="too many failed logins"):
            client.authenticate_basic_token(USER, PASSWORD)
        clock.now += 300
        assert client.authenticate_basic_token(USER, PASSWORD)
    finally:
        client.close()
        srv.shutdown()


# -- metadata ---------------------------------------------------------------------------------------------

def test_get_objects_lists_parties_and_tables(conn, fed_engine):
    objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    assert [c["catalog_name"] for c in objects] == [fed_engine.config.name]
    schemas = {s["db_schema_name"]: s for s in objects[0]["catalog_db_schemas"]}
    assert set(schemas) == set(fed_engine.catalog.tables)
    customers = next(t for t in schemas["bank"]["db_schema_tables"] if t["table_name"] == "customers")
    assert customers["table_type"] == "TABLE"
    assert [c["column_name"] for c in customers["table_columns"]] == [
        name for name, _ in fed_engine.catalog.tables["bank"]["customers"]]
    assert conn.adbc_get_table_types() == ["TABLE", "VIEW"]


def test_get_table_schema_matches_query_types(conn, fed_engine):
    schema = conn.adbc_get_table_schema("customers", db_schema_filter="bank")
    result = fed_engine.execute("SELECT * FROM bank.customers", "bank").table
    assert schema.names == result.schema.names
    assert schema.types == result.schema.types
    assert schema.field("income").metadata[b"ARROW:FLIGHT:SQL:TYPE_NAME"] == b"DECIMAL(12,2)"


def test_get_objects_filters(conn):
    objects = conn.adbc_get_objects(depth="tables", db_schema_filter="sh%", table_name_filter="ord_rs")
    tables = [(s["db_schema_name"], t["table_name"]) for c in objects.read_all().to_pylist()
              for s in c["catalog_db_schemas"] for t in s["db_schema_tables"]]
    assert tables == [("shop", "orders")]


def test_sql_info_over_the_wire(conn):
    info = conn.adbc_get_info()
    assert info["vendor_name"] == "sqlsecure"
    assert info["vendor_version"]


def test_sql_info_with_flight_client(server, certs):
    """GetSqlInfo read directly: the fields SQLAlchemy-style dialects look for."""
    client = flight.connect(server.uri, tls_root_certs=certs["ca"].read_bytes())
    try:
        token = client.authenticate_basic_token(USER, PASSWORD)
        options = flight.FlightCallOptions(headers=[token], timeout=30)
        command = pb.CommandGetSqlInfo(info=[pb.FLIGHT_SQL_SERVER_NAME, pb.FLIGHT_SQL_SERVER_READ_ONLY,
                                             pb.SQL_IDENTIFIER_QUOTE_CHAR, pb.FLIGHT_SQL_SERVER_VERSION])
        info = client.get_flight_info(flight.FlightDescriptor.for_command(pack(command)), options)
        table = client.do_get(info.endpoints[0].ticket, options).read_all()
        values = {row["info_name"]: row["value"] for row in table.to_pylist()}
        assert values[pb.FLIGHT_SQL_SERVER_NAME] == "sqlsecure"
        assert values[pb.FLIGHT_SQL_SERVER_READ_ONLY] is True
        assert values[pb.SQL_IDENTIFIER_QUOTE_CHAR] == '"'
        assert values[pb.FLIGHT_SQL_SERVER_VERSION]

        # a plain statement query (no prepared statement): GetFlightInfo then DoGet of its ticket, once
        query = pack(pb.CommandStatementQuery(query="SELECT COUNT(*) AS n FROM bank.customers"))
        info = client.get_flight_info(flight.FlightDescriptor.for_command(query), options)
        assert client.do_get(info.endpoints[0].ticket, options).read_all().column("n").to_pylist() == [120]
        with pytest.raises(flight.FlightError, match="unknown or expired"):
            client.do_get(info.endpoints[0].ticket, options).read_all()
    finally:
        client.close()


# -- authentication ---------------------------------------------------------------------------------------

def test_wrong_password_is_refused(server, certs):
    with pytest.raises(adbc_driver_manager.Error) as refused, connect(server, certs, password="wrong") as connection:
        connection.cursor().execute("SELECT 1 FROM bank.customers LIMIT 1")
    assert "invalid user name or password" in str(refused.value)


def test_unauthenticated_calls_are_refused(server, certs):
    client = flight.connect(server.uri, tls_root_certs=certs["ca"].read_bytes())
    try:
        options = flight.FlightCallOptions(timeout=30)
        command = pack(pb.CommandGetCatalogs())
        with pytest.raises(flight.FlightUnauthenticatedError):
            client.get_flight_info(flight.FlightDescriptor.for_command(command), options)
        forged = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer not-a-token")], timeout=30)
        with pytest.raises(flight.FlightUnauthenticatedError):
            client.get_flight_info(flight.FlightDescriptor.for_command(command), forged)
        with pytest.raises(flight.FlightUnauthenticatedError):
            client.do_get(flight.Ticket(command), options).read_all()
    finally:
        client.close()


def test_untrusted_certificate_is_refused(server, tmp_path):
    other_ca = issue_certificates(tmp_path)["ca"]
    options = {"username": USER, "password": PASSWORD, "adbc.flight.sql.rpc.timeout_seconds.query": "10",
               "adbc.flight.sql.client_option.tls_root_certs": other_ca.read_text()}
    with pytest.raises(adbc_driver_manager.Error), adbc_flightsql.connect(server.uri, db_kwargs=options) as connection:
        connection.cursor().execute("SELECT 1 FROM bank.customers LIMIT 1")


# -- units ------------------------------------------------------------------------------------------------

def test_like_patterns():
    assert like_pattern("ba%").fullmatch("bank")
    assert like_pattern("b_nk").fullmatch("bank")
    assert not like_pattern("b_nk").fullmatch("baank")
    assert like_pattern(r"a\_b").fullmatch("a_b") and not like_pattern(r"a\_b").fullmatch("axb")


def test_messages_round_trip_and_unknown_ones_are_refused():
    message = pb.CommandStatementQuery(query="SELECT 1")
    assert unpack(pack(message)) == message
    with pytest.raises(CommandError, match="CommandStatementUpdate is not supported"):
        unpack(pack(pb.CommandStatementUpdate(query="DELETE FROM bank.customers")))
    with pytest.raises(CommandError):
        unpack(b"\xff\x00garbage")


def test_sql_info_union_layout():
    from sqlsecure.flight_sql.metadata import server_sql_info

    info = server_sql_info(version="1", dialect="mysql", statement_timeout_ms=5)
    table = sql_info_table(info, [pb.SQL_IDENTIFIER_QUOTE_CHAR, pb.FLIGHT_SQL_SERVER_READ_ONLY, 99999])
    assert table.to_pylist() == [{"info_name": pb.SQL_IDENTIFIER_QUOTE_CHAR, "value": "`"},
                                 {"info_name": pb.FLIGHT_SQL_SERVER_READ_ONLY, "value": True}]


def test_password_file(tmp_path):
    path = tmp_path / "users.txt"
    path.write_text("# dashboards\nalice:s3cret:with:colons\n\nbob:pw\n", encoding="utf-8")
    credentials = Credentials.from_file(path)
    assert credentials.check("alice", "s3cret:with:colons") and credentials.check("bob", "pw")
    assert not credentials.check("bob", "PW") and not credentials.check("carol", "pw")
    path.write_text("alice\n", encoding="utf-8")
    with pytest.raises(errors.ConfigError, match="expected user:password"):
        Credentials.from_file(path)


# -- the command ------------------------------------------------------------------------------------------

def test_serve_command(tmp_path, make_federation, certs):
    """`sqlsecure serve` in its own process: announces its address, answers a client, stops cleanly on SIGTERM."""
    path = make_federation(tmp_path, grants=GRANTS)
    users = tmp_path / "users.txt"
    users.write_text(f"{USER}:{PASSWORD}\n", encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "sqlsecure.cli", "serve", "-F", str(path), "--as", "bank", "--listen", "127.0.0.1:0",
         "--tls-cert", str(certs["cert"]), "--tls-key", str(certs["key"]), "--password-file", str(users)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env={**os.environ})
    try:
        lines: list[str] = []  # the announcement, read in a thread so that a silent server cannot hang the test
        reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=60)
        line = lines[0] if lines else ""
        if "grpc+tls://127.0.0.1:" not in line:
            process.kill()
            pytest.fail(f"no announcement (exit {process.wait(timeout=10)}): {process.stderr.read()[-2000:]}")
        uri = line.split(" on ", 1)[1].split()[0]
        with adbc_flightsql.connect(uri, db_kwargs={
            "username": USER, "password": PASSWORD,
            "adbc.flight.sql.client_option.tls_root_certs": certs["ca"].read_text(),
            "adbc.flight.sql.rpc.timeout_seconds.query": TIMEOUT,
            "adbc.flight.sql.rpc.timeout_seconds.fetch": TIMEOUT,
        }, autocommit=True) as connection, connection.cursor() as cur:
            cur.execute("SELECT COUNT(*) AS n FROM bank.customers")
            assert cur.fetchall() == [(120,)]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        process.stdout.close()
        process.stderr.close()


def test_serve_refuses_clear_text_off_loopback(tmp_path, make_federation):
    from click.testing import CliRunner

    from sqlsecure.cli import main

    path = make_federation(tmp_path, grants=GRANTS)
    result = CliRunner().invoke(main, ["serve", "-F", str(path), "--as", "bank", "--listen", "0.0.0.0:0",
                                       "--user", "u", "--password", "p"])
    assert result.exit_code != 0 and "TLS" in result.output
