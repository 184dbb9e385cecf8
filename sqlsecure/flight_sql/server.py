"""The Flight SQL endpoint: one party's view of a federation, served over Arrow Flight (pyarrow.flight).

Every query arriving here is issued by the server's party (`--as`), exactly as `sqlsecure query
--as party` would run it: planned, checked against the grants, run by the parties' executors, and
revealed to that party only. A dashboard therefore sees what that party may see, nothing more.

How each Flight SQL call is answered:

- GetFlightInfo(CommandStatementQuery) runs the query once and keeps the result under a random
  handle; the FlightInfo carries the result's schema and a TicketStatementQuery naming the handle;
  DoGet(ticket) streams it and forgets it. Running at GetFlightInfo time means the schema is exact,
  refusals (PolicyViolation, ...) reach the client at once, and a differentially private query
  spends its budget once. Unclaimed results expire.
- Prepared statements: the CreatePreparedStatement action parses the query (and plans it when it has
  no `?` markers, so a refusal comes at once); DoPut(CommandPreparedStatementQuery) binds parameter
  rows, each row one set of values for the `?` markers, in order; GetFlightInfo(
  CommandPreparedStatementQuery) runs it once per bound row (results concatenated) like a statement;
  ClosePreparedStatement forgets it. Idle statements expire.
- Metadata (GetSqlInfo, GetCatalogs, GetDbSchemas, GetTables, GetTableTypes): the FlightInfo's
  ticket is the command itself; DoGet computes the answer (see `metadata.py`).
- Updates, bulk ingest, Substrait, transactions, and any SQL statement that is not a query: refused,
  the endpoint is read-only (even when the engine it serves may write its issuer's database).

Errors: engine errors reach the client as Flight errors carrying `ErrorClass: message` (a policy
refusal as PERMISSION_DENIED, a failed protocol as UNAVAILABLE, a bug as INTERNAL, any other engine
error as UNKNOWN); nothing else of the server (no traceback) is sent. Python's own exceptions
would travel with their traceback through pyarrow, so every handler converts them first.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
import signal
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata

import pyarrow as pa
import pyarrow.flight as flight
from sqlglot import exp

from sqlsecure import errors
from sqlsecure.engine import EXPLAIN, Engine
from sqlsecure.flight_sql import FlightSql_pb2 as pb
from sqlsecure.flight_sql.auth import (
    AUTH_MIDDLEWARE,
    BearerTokens,
    Credentials,
    HeaderAuthMiddlewareFactory,
    HeaderHandshake,
    LoginThrottle,
)
from sqlsecure.flight_sql.metadata import (
    CATALOGS_SCHEMA,
    DB_SCHEMAS_SCHEMA,
    SQL_INFO_SCHEMA,
    TABLE_TYPES_SCHEMA,
    TABLES_SCHEMA,
    TABLES_WITH_SCHEMA_SCHEMA,
    FederationCatalog,
    server_sql_info,
    sql_info_table,
)
from sqlsecure.flight_sql.protocol import (
    CLOSE_PREPARED_STATEMENT,
    CREATE_PREPARED_STATEMENT,
    CommandError,
    pack,
    unpack,
)
from sqlsecure.planner.parse import parse_statement

log = logging.getLogger("sqlsecure.flight_sql")

METADATA_COMMANDS = (pb.CommandGetSqlInfo, pb.CommandGetCatalogs, pb.CommandGetDbSchemas, pb.CommandGetTables,
                     pb.CommandGetTableTypes)
QUERY_COMMANDS = (pb.CommandStatementQuery, pb.CommandPreparedStatementQuery)
REFUSALS = (errors.ProgrammingError, errors.NotSupportedError)  # PlanError, PolicyViolation: the query's fault
def flight_error(exc: errors.Error) -> flight.FlightError:
    """The Flight error a client receives for an engine error: its class name and message, nothing else."""
    text = f"{type(exc).__name__}: {exc}"
    extra = f"sqlsecure.errors.{type(exc).__name__}".encode()
    if isinstance(exc, errors.PolicyViolation):
        return flight.FlightUnauthorizedError(text, extra)
    if isinstance(exc, errors.OperationalError) or (isinstance(exc, errors.InterfaceError)
                                                    and not isinstance(exc, errors.ConfigError)):
        return flight.FlightUnavailableError(text, extra)
    if isinstance(exc, errors.InternalError):
        return flight.FlightInternalError(text, extra)
    return flight.FlightServerError(text, extra)


def _answering(method):
    """Run a Flight handler; turn whatever it raises into a Flight error without a traceback."""

    @functools.wraps(method)
    def handler(self, context, *args):
        try:
            return method(self, context, *args)
        except flight.FlightError:
            raise
        except CommandError as exc:
            raise flight.FlightServerError(str(exc)) from None
        except errors.Error as exc:
            what = "refused" if isinstance(exc, REFUSALS) else "failed"
            log.info("%s %s for %s: %s: %s", method.__name__, what, _user(context), type(exc).__name__, exc)
            raise flight_error(exc) from None
        except Exception:
            log.exception("%s failed for %s", method.__name__, _user(context))
            raise flight.FlightInternalError(
                "internal error in the Flight SQL endpoint (the server log has the details)") from None

    return handler


def _user(context) -> str:
    caller = context.get_middleware(AUTH_MIDDLEWARE) if context is not None else None
    return caller.user if caller is not None else "?"


class Handles:
    """Server state that clients name by an opaque random handle: owned by one user, forgotten when idle
    for `ttl` seconds, at most `limit` at a time."""

    def __init__(self, what: str, ttl: float, limit: int):
        self.what, self.ttl, self.limit = what, ttl, limit
        self._items: dict[bytes, tuple[str, object, float]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, owner: str, value) -> bytes:
        handle = secrets.token_bytes(16)
        now = time.monotonic()
        with self._lock:
            self._items = {h: item for h, item in self._items.items() if item[2] > now}
            if len(self._items) >= self.limit:
                raise flight.FlightUnavailableError(
                    f"too many open {self.what}s ({self.limit}); close some or retry later")
            self._items[handle] = (owner, value, now + self.ttl)
        return handle

    def get(self, handle: bytes, owner: str, *, pop: bool = False):
        now = time.monotonic()
        with self._lock:
            item = self._items.get(handle)
            if item is None or item[0] != owner or item[2] <= now:
                raise flight.FlightServerError(f"unknown or expired {self.what}")
            if pop:
                del self._items[handle]
            else:
                self._items[handle] = (owner, item[1], now + self.ttl)
        return item[1]

    def discard(self, handle: bytes, owner: str) -> None:
        with self._lock:
            item = self._items.get(handle)
            if item is not None and item[0] == owner:
                del self._items[handle]


@dataclass
class PreparedStatement:
    sql: str
    parameter_count: int
    parameter_sets: list[tuple] = field(default_factory=list)


def read_only_query(sql: str, dialect: str) -> exp.Expression:
    """Parse one statement and refuse anything but a query (or EXPLAIN of one): the endpoint is read-only,
    whatever the engine it serves may allow its own DB-API connections to write."""
    tree = parse_statement(EXPLAIN.sub("", sql, count=1), dialect)
    if not isinstance(tree, exp.Query):
        raise errors.NotSupportedError(f"the Flight SQL endpoint is read-only and answers queries only; "
                                       f"got {tree.key.upper()}")
    return tree


def count_parameters(tree: exp.Expression) -> int:
    """How many `?` markers the statement has."""
    return len(list(tree.find_all(exp.Placeholder)))


def _package_version() -> str:
    try:
        return importlib_metadata.version("sqlsecure")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


class FlightSqlServer(flight.FlightServerBase):
    """Serve `issuer`'s view of the federation opened by `engine` on host:port (port 0: any free port).

    Listening starts on construction; `serve()` blocks until `shutdown()`. With `tls_certificates`
    (a list of `pyarrow.flight.CertKeyPair`) the endpoint is `grpc+tls://`, else `grpc+tcp://`. The
    engine is not closed by the server: its owner closes it after `shutdown()`.
    """

    def __init__(self, engine: Engine, issuer: str, *, credentials: Credentials, host: str = "127.0.0.1",
                 port: int = 0, tls_certificates: list[flight.CertKeyPair] | None = None,
                 token_ttl: float = 3600.0, statement_ttl: float = 3600.0, result_ttl: float = 600.0,
                 throttle: LoginThrottle | None = None):
        engine.check_issuer(issuer)
        self.engine = engine
        self.issuer = issuer
        self.host = host
        self.scheme = "grpc+tls" if tls_certificates else "grpc+tcp"
        self.catalog = FederationCatalog(engine.config.name, engine.catalog.tables, engine.view_columns)
        self.sql_info = server_sql_info(version=_package_version(), dialect=engine.config.dialect,
                                        statement_timeout_ms=int(statement_ttl * 1000))
        self.statements = Handles("prepared statement", statement_ttl, limit=4096)
        self.results = Handles("query result", result_ttl, limit=1024)
        netloc = f"[{host}]" if ":" in host else host
        super().__init__(
            f"{self.scheme}://{netloc}:{port}",
            auth_handler=HeaderHandshake(),
            tls_certificates=tls_certificates or [],
            middleware={AUTH_MIDDLEWARE: HeaderAuthMiddlewareFactory(credentials, BearerTokens(token_ttl), throttle)},
        )

    @property
    def uri(self) -> str:
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{netloc}:{self.port}"

    # -- running queries -------------------------------------------------------------------------------

    def _execute(self, context, sql: str, parameter_sets: list[tuple]) -> tuple[pa.Table, tuple[str, ...]]:
        """The result (one table over every parameter set) and its notices."""
        user = _user(context)
        log.info("query by %s as %s: %s", user, self.issuer, " ".join(sql.split())[:500])
        read_only_query(sql, self.engine.config.dialect)
        results = [self.engine.execute(sql, self.issuer, list(params) if params is not None else None)
                   for params in (parameter_sets or [None])]
        notices = tuple(dict.fromkeys(n for r in results for n in r.notices))
        if len(results) == 1:
            return results[0].table, notices
        return pa.concat_tables([r.table for r in results], promote_options="permissive"), notices

    def _result_info(self, context, descriptor, answer: tuple[pa.Table, tuple[str, ...]]) -> flight.FlightInfo:
        """FlightInfo of a result; its notices travel as app metadata, JSON {"notices": [...]}."""
        table, notices = answer
        handle = self.results.add(_user(context), table)
        ticket = flight.Ticket(pack(pb.TicketStatementQuery(statement_handle=handle)))
        return flight.FlightInfo(table.schema, descriptor, [flight.FlightEndpoint(ticket, [])],
                                 table.num_rows, table.nbytes,
                                 app_metadata=json.dumps({"notices": list(notices)}).encode())

    @staticmethod
    def _no_transactions(command) -> None:
        if command.HasField("transaction_id"):
            raise flight.FlightServerError("transactions are not supported: the endpoint is read-only")

    # -- Flight RPCs -------------------------------------------------------------------------------------

    @_answering
    def get_flight_info(self, context, descriptor):
        command = unpack(self._command(descriptor), *QUERY_COMMANDS, *METADATA_COMMANDS)
        if isinstance(command, pb.CommandStatementQuery):
            self._no_transactions(command)
            return self._result_info(context, descriptor, self._execute(context, command.query, []))
        if isinstance(command, pb.CommandPreparedStatementQuery):
            statement = self.statements.get(command.prepared_statement_handle, _user(context))
            answer = self._execute(context, statement.sql, statement.parameter_sets)
            return self._result_info(context, descriptor, answer)
        endpoint = flight.FlightEndpoint(flight.Ticket(descriptor.command), [])
        return flight.FlightInfo(self._metadata_schema(command), descriptor, [endpoint], -1, -1)

    @_answering
    def get_schema(self, context, descriptor):
        command = unpack(self._command(descriptor), *QUERY_COMMANDS, *METADATA_COMMANDS)
        if isinstance(command, QUERY_COMMANDS):
            # a result's schema is known once the query ran; running it here would run it twice
            raise flight.FlightServerError("GetSchema of a query is not supported: execute it (GetFlightInfo) "
                                           "and read the schema of its FlightInfo")
        return flight.SchemaResult(self._metadata_schema(command))

    @_answering
    def do_get(self, context, ticket):
        command = unpack(ticket.ticket, pb.TicketStatementQuery, *METADATA_COMMANDS)
        if isinstance(command, pb.TicketStatementQuery):
            table = self.results.get(command.statement_handle, _user(context), pop=True)
        else:
            table = self._metadata(command)
        return flight.RecordBatchStream(table)

    @_answering
    def do_put(self, context, descriptor, reader, writer):
        command = unpack(self._command(descriptor), pb.CommandPreparedStatementQuery)
        statement = self.statements.get(command.prepared_statement_handle, _user(context))
        try:
            parameters = reader.read_all()
        except pa.ArrowException as exc:
            raise flight.FlightServerError(f"unreadable parameters: {exc}") from None
        columns = [column.to_pylist() for column in parameters.columns]
        rows = list(zip(*columns)) if columns else []
        if parameters.num_columns != statement.parameter_count:
            raise flight.FlightServerError(
                f"the query has {statement.parameter_count} parameter marker(s) (?), "
                f"{parameters.num_columns} parameter column(s) bound")
        statement.parameter_sets = rows

    @_answering
    def do_action(self, context, action):
        if action.type == CREATE_PREPARED_STATEMENT:
            request = unpack(action.body.to_pybytes(), pb.ActionCreatePreparedStatementRequest)
            self._no_transactions(request)
            count = count_parameters(read_only_query(request.query, self.engine.config.dialect))
            if count == 0:
                self.engine.plan(request.query, self.issuer)  # refuse now what would be refused at execution
            handle = self.statements.add(_user(context), PreparedStatement(request.query, count))
            result = pb.ActionCreatePreparedStatementResult(prepared_statement_handle=handle)
            return [flight.Result(pack(result))]
        if action.type == CLOSE_PREPARED_STATEMENT:
            request = unpack(action.body.to_pybytes(), pb.ActionClosePreparedStatementRequest)
            self.statements.discard(request.prepared_statement_handle, _user(context))
            return []
        raise flight.FlightServerError(f"unsupported action {action.type!r}: this endpoint supports "
                                       f"{CREATE_PREPARED_STATEMENT} and {CLOSE_PREPARED_STATEMENT}")

    def list_actions(self, context):
        return [
            flight.ActionType(CREATE_PREPARED_STATEMENT, "Prepare a query with ? parameter markers"),
            flight.ActionType(CLOSE_PREPARED_STATEMENT, "Forget a prepared statement"),
        ]

    @_answering
    def list_flights(self, context, criteria):
        return iter(())

    # -- metadata --------------------------------------------------------------------------------------

    @staticmethod
    def _command(descriptor) -> bytes:
        if descriptor.descriptor_type != flight.DescriptorType.CMD:
            raise flight.FlightServerError("a Flight SQL request needs a command descriptor, not a path")
        return descriptor.command

    @staticmethod
    def _metadata_schema(command) -> pa.Schema:
        if isinstance(command, pb.CommandGetSqlInfo):
            return SQL_INFO_SCHEMA
        if isinstance(command, pb.CommandGetCatalogs):
            return CATALOGS_SCHEMA
        if isinstance(command, pb.CommandGetDbSchemas):
            return DB_SCHEMAS_SCHEMA
        if isinstance(command, pb.CommandGetTables):
            return TABLES_WITH_SCHEMA_SCHEMA if command.include_schema else TABLES_SCHEMA
        return TABLE_TYPES_SCHEMA

    def _metadata(self, command) -> pa.Table:
        if isinstance(command, pb.CommandGetSqlInfo):
            return sql_info_table(self.sql_info, list(command.info))
        if isinstance(command, pb.CommandGetCatalogs):
            return self.catalog.catalogs()
        if isinstance(command, pb.CommandGetDbSchemas):
            return self.catalog.db_schemas(command)
        if isinstance(command, pb.CommandGetTables):
            return self.catalog.tables(command)
        return self.catalog.table_types()


def parse_listen(text: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port)."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT (port 0 picks a free one), not {text!r}")
    return host, int(port)


def serve_federation(federation, issuer: str, *, host: str, port: int, credentials: Credentials,
                     tls_cert: str | None = None, tls_key: str | None = None, announce=print,
                     timeout: float = 120.0) -> None:
    """Open the federation, serve `issuer`'s view of it until interrupted (Ctrl-C, SIGTERM), then close it."""
    from pathlib import Path

    certificates = None
    if tls_cert and tls_key:
        certificates = [flight.CertKeyPair(cert=Path(tls_cert).read_bytes(), key=Path(tls_key).read_bytes())]
    with Engine(federation, timeout=timeout) as engine:
        try:
            server = FlightSqlServer(engine, issuer, credentials=credentials, host=host, port=port,
                                     tls_certificates=certificates)
        except (pa.ArrowException, OSError) as exc:
            raise errors.OperationalError(f"cannot serve on {host}:{port}: {exc}") from None
        previous = None
        if threading.current_thread() is threading.main_thread():  # SIGTERM stops the server like Ctrl-C
            previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            announce(f"serving {engine.config.name!r} as {issuer} on {server.uri} (Ctrl-C stops)")
            log.info("serving %r as %s on %s", engine.config.name, issuer, server.uri)
            server.serve()
        except KeyboardInterrupt:
            announce("stopped")
        finally:
            server.shutdown()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
