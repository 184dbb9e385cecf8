"""A party's data in a database reached through ADBC: PostgreSQL, SQLite, or an Arrow Flight SQL endpoint.

The party's pushed-down SQL is written by the planner in DuckDB's dialect. `AdbcStore.query` runs it
where the data lives:

- **whole**, when every construct in it means the same in the source's dialect and fails on the same rows
  only (`PUSHABLE`, checked node by node: columns, literals, AND / OR / NOT, `=` / `<>`, ordering
  comparisons of numbers and dates, `+ - *` and SUM on the number families that compute as DuckDB's
  (`ARITHMETIC_FAMILIES`, `SUMMED_FAMILIES`), IS NULL, IN lists, COUNT / MIN / MAX, GROUP BY, DISTINCT,
  inner joins of its own tables): the query is transpiled by sqlglot and only its result leaves the database;
- **finished locally** otherwise (a function with no exact equivalent, integer division, AVG, ORDER
  BY over text collations...): each table's needed columns are fetched with a pushed-down projection
  and the pushable WHERE conjuncts, and the original query runs over them in a private DuckDB.

Either way the result has exactly the types DuckDB gives the query (the query is typed over an empty
mirror of the tables and the source's result cast to that schema), so the planner cannot tell a
PostgreSQL party from a DuckDB one. `pushdown(sql)` says which way a query goes, for EXPLAIN.

Types (Arrow as the ADBC driver maps them, then DuckDB's names): integers, floats, text, bytes,
booleans, dates, times, timestamps (with time zone: UTC) as is; SQLite columns by their declared
type's affinity, rows of another type refused (connectors/sqlite_types.py); PostgreSQL `numeric(p, s)` with
p <= 38 as DECIMAL(p, s), unconstrained `numeric` as DOUBLE (as DuckDB's own PostgreSQL scanner
does); any other type (arrays, JSON, geometric, ...) leaves its table out of the catalog with a
warning in the party's log. The connection is read-only (PostgreSQL `default_transaction_read_only`,
SQLite `mode=ro`); the store never writes.

Tables are found in the source's metadata (ADBC GetObjects), each qualified by the schema it is in;
`Source.schema` limits them to one schema, and a table name found in two schemas is a ConfigError
asking for it. The private DuckDBs (typing mirror, local finish) run in UTC, so timestamps with time
zone come back as `TIMESTAMP WITH TIME ZONE` in UTC whatever the machine's zone.

**Arrow Flight SQL** (`grpc://host:port`, `grpc+tls://host:port`; ADBC's Flight SQL driver): the
endpoint may front any engine, so its dialect is unknown and nothing is pushed whole: the store sends
only `SELECT "col", ... FROM "schema"."table"` (ANSI double-quoted identifiers, no WHERE, function or
aggregate) and finishes every query locally; `sizes()` adds `SELECT COUNT(*) AS n FROM` each table.
These are the only statements it ever sends, which is
what keeps it read-only there (Flight SQL has no read-only session). Column types come from the
endpoint's metadata (CommandGetTables with the table's Arrow schema), mapped as above. The user name is
the URI's (`grpc+tls://analyst@host:port`), the password comes from `password_file` (or the URI), both
sent as the driver's `username` / `password` (HTTP basic login on Handshake, then a bearer token); the
URI given to the driver carries no user info. For a certificate not signed by a system CA,
`Source.tls_root_certs` names the PEM file of the CA to trust (the driver's
`adbc.flight.sql.client_option.tls_root_certs`). Failures to connect or to read the catalog are
ConfigErrors naming the URI with its password masked and the driver's reason.
"""

from __future__ import annotations

import logging
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, SqlglotError

from sqlsecure.connectors.duckdb_store import local_error, numeric_type, party_log
from sqlsecure.connectors.sqlite_types import declared_schema, refuse_odd_values, storage_guard
from sqlsecure.errors import ConfigError, DataError, OperationalError

log = logging.getLogger(__name__)

SCHEMES = {"postgresql": "postgres", "postgres": "postgres", "sqlite": "sqlite", "grpc": "flightsql",
           "grpc+tls": "flightsql", "grpc+tcp": "flightsql"}
DIALECTS = {"postgres": "postgres", "sqlite": "sqlite", "flightsql": None}  # Flight SQL: unknown engine

# Node types whose meaning is the same in DuckDB and the source's dialect (after sqlglot's transpiling).
PUSHABLE = (
    exp.Select, exp.From, exp.Join, exp.Table, exp.TableAlias, exp.Column, exp.Identifier, exp.Star,
    exp.Literal, exp.Null, exp.Boolean, exp.Alias, exp.Where, exp.Group, exp.Having, exp.Distinct,
    exp.Paren, exp.And, exp.Or, exp.Not, exp.EQ, exp.NEQ, exp.Is, exp.In, exp.Count, exp.Sum, exp.Min,
    exp.Max, exp.Limit, exp.Neg,
)
ORDERED = (exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Between)  # pushable on numbers and dates only
ARITHMETIC = (exp.Add, exp.Sub, exp.Mul)                    # pushable on numbers only
NUMERIC_OR_DATE = {"int", "float", "decimal", "date", "timestamp"}
# The number families each dialect computes `+ - *` and SUM of as DuckDB does, failing on the same rows only: a
# source failing on other rows tells the issuer of them (PostgreSQL's float8 arithmetic and SUM fail on overflow
# and underflow where DuckDB's give inf or 0; SQLite's integer SUM fails past BIGINT where DuckDB's is a HUGEINT,
# and it computes a DECIMAL constant's product as a float that then may not fit DuckDB's DECIMAL)
ARITHMETIC_FAMILIES = {"postgres": {"int", "decimal"}, "sqlite": {"int", "float"}}
SUMMED_FAMILIES = {"postgres": {"int", "decimal"}, "sqlite": {"float"}}
# What a source's refusal crosses to the issuer as: its SQLSTATE (class) in fixed words, never its text
SQLSTATE_KINDS = {"22": "a data exception (a value that does not convert, or is out of range)",
                  "25006": "a write refused (the session is read-only)",
                  "42": "a type, name, syntax or permission error", "53": "insufficient resources",
                  "57": "an operator intervention (cancelled, shutting down)"}


def source_kind(uri: str) -> str | None:
    """'postgres', 'sqlite' or 'flightsql' for a database URI, None for a file path."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    return SCHEMES.get(scheme)


@dataclass(frozen=True)
class Source:
    """Where a party's tables live: an ADBC URI, the schema its tables are in, a password file, and for
    `grpc+tls://` the PEM file of the CA that signed the endpoint's certificate (else the system's CAs)."""

    uri: str
    schema: str | None = None
    password_file: Path | None = None
    tls_root_certs: Path | None = None

    @property
    def kind(self) -> str:
        kind = source_kind(self.uri)
        if kind is None:
            raise ConfigError(f"not a database URI: {redact(self.uri)}")
        return kind

    @property
    def dialect(self) -> str | None:
        return DIALECTS[self.kind]


def sqlite_path(uri: str) -> Path:
    """The file of `sqlite:///abs/file.db` (also SQLAlchemy's `sqlite:////abs/file.db`; `sqlite://rel.db` is
    relative to the working directory)."""
    path = uri.split("://", 1)[1]
    return Path("/" + path.lstrip("/") if path.startswith("/") else path)


def redact(uri: str) -> str:
    """The URI with any password replaced, for messages and logs."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _connect(source: Source):
    """An ADBC DB-API connection, read-only."""
    kind = source.kind
    if source.tls_root_certs is not None and not source.uri.lower().startswith("grpc+tls://"):
        raise ConfigError(f"tls_root_certs is for a grpc+tls:// endpoint, not {redact(source.uri)}: "
                          "remove it or use grpc+tls://")
    try:
        if kind == "postgres":
            import adbc_driver_postgresql.dbapi as driver
            uri = source.uri
            if source.password_file is not None:
                parts = urllib.parse.urlsplit(uri)
                password = urllib.parse.quote(source.password_file.read_text().strip(), safe="")
                user = parts.username or ""
                host = parts.netloc.rsplit("@", 1)[-1]
                uri = urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))
            con = driver.connect(uri)
            with con.cursor() as cur:
                cur.execute("SET default_transaction_read_only = on")
            con.commit()
            return con
        if kind == "sqlite":
            import adbc_driver_sqlite.dbapi as driver
            path = sqlite_path(source.uri)
            if not path.is_file():
                raise ConfigError(f"no SQLite database at {path} (from {redact(source.uri)}; write "
                                  "sqlite:///absolute/path/file.db)")
            return driver.connect(f"file:{urllib.parse.quote(str(path))}?mode=ro")
        import adbc_driver_flightsql.dbapi as driver
        uri, options = _flightsql_options(source)
        return driver.connect(uri, db_kwargs=options, autocommit=True)
    except ImportError as exc:
        extra = {"postgres": "postgresql", "sqlite": "sqlite", "flightsql": "flightsql"}[kind]
        raise ConfigError(f"the {kind} source needs its ADBC driver: pip install 'sqlsecure[{extra}]' "
                          f"({exc.name} is missing)") from None


def _flightsql_options(source: Source) -> tuple[str, dict[str, str]]:
    """The endpoint URI without user info, and the driver's options: the user and password (from the URI
    or the password file) for HTTP basic authentication, the CA certificates to trust for TLS."""
    parts = urllib.parse.urlsplit(source.uri)
    options = {}
    if parts.username:
        options["username"] = urllib.parse.unquote(parts.username)
    if source.password_file is not None:
        options["password"] = source.password_file.read_text().strip()
    elif parts.password is not None:
        options["password"] = urllib.parse.unquote(parts.password)
    if source.tls_root_certs is not None:
        try:
            options["adbc.flight.sql.client_option.tls_root_certs"] = source.tls_root_certs.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read tls_root_certs {source.tls_root_certs}: {exc.strerror}") from None
    host = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit(parts._replace(netloc=host)), options


def _reason(exc: Exception, source: Source) -> str:
    """The driver's error message, first line, with the URI's password (if any) masked."""
    message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    password = urllib.parse.urlsplit(source.uri).password
    return message.replace(password, "***") if password else message


def _numeric_type(field: pa.Field) -> pa.DataType:
    """PostgreSQL numeric(p, s) (typmod = ((p << 16) | s) + 4) as DECIMAL(p, s); unconstrained as DOUBLE."""
    typmod = int((field.metadata or {}).get(b"POSTGRESQL:typmod", b"-1"))
    if typmod < 4:
        return pa.float64()
    precision, scale = (typmod - 4) >> 16, (typmod - 4) & 0xFFFF
    return pa.decimal128(precision, scale) if precision <= 38 else pa.float64()


def _plain_type(field: pa.Field) -> pa.DataType | None:
    """The Arrow type a source column is read as, or None where it has no exact DuckDB equivalent."""
    t = field.type
    if isinstance(t, pa.BaseExtensionType):
        if getattr(t, "type_name", None) == "numeric":
            return _numeric_type(field)
        return None
    if pa.types.is_timestamp(t) and t.tz is not None:
        return pa.timestamp(t.unit, tz="UTC")
    if (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_string(t)
            or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_boolean(t)
            or pa.types.is_date(t) or pa.types.is_time(t) or pa.types.is_timestamp(t)):
        return t
    return None


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A source's result with `schema`'s names and types: opaque numerics parsed from their text, then
    exact casts only (a value that does not fit is a DataError naming the column, never rounded)."""
    if table.num_columns != len(schema):
        raise OperationalError(f"the source returned {table.num_columns} columns, expected {len(schema)}")
    columns = []
    for column, field in zip(table.columns, schema):
        if isinstance(column.type, pa.BaseExtensionType):
            column = pa.chunked_array([c.storage for c in column.chunks], type=column.type.storage_type)
        try:
            columns.append(pc.cast(column, field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise DataError(f"column {field.name!r}: a source value does not fit {field.type}") from None
    return pa.Table.from_arrays(columns, schema=schema)


def _family(duck_type: str) -> str:
    t = duck_type.upper()
    if t.startswith(("DECIMAL", "NUMERIC")):
        return "decimal"
    if t in {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}:
        return "int"
    if t in {"FLOAT", "DOUBLE", "REAL"}:
        return "float"
    if t == "DATE":
        return "date"
    if t.startswith("TIMESTAMP"):
        return "timestamp"
    return "other"


class AdbcStore:
    """One party's tables in a database reached through ADBC; read-only SQL over them (module docstring)."""

    writable = False

    def __init__(self, party: str, source: Source):
        self.party = party
        self.source = source
        self._lock = threading.Lock()
        try:
            self._con = _connect(source)
        except ConfigError:
            raise
        except Exception as exc:  # the driver's own error classes
            raise ConfigError(f"party {party!r}: cannot connect to {redact(source.uri)}: {_reason(exc, source)}; "
                              "check the party's database URI and credentials") from exc
        self._schemas = self._read_catalog()
        self._mirror = _utc_duckdb()  # empty tables of the same types: typing only
        for name, schema in self._schemas.items():
            self._mirror.register(name, pa.Table.from_batches([], schema=schema))
        self._types = {name: {c: t for c, t in self._describe(name)} for name in self._schemas}
        self._classes: dict[tuple[str, str], int | None] = {}  # (table, column) -> magnitude class

    # -- catalog ----------------------------------------------------------------------------------
    def _qualified(self, table: str) -> str:
        return exp.table_(table, db=self._homes.get(table), quoted=True).sql(dialect=self.source.dialect or "")

    def _table_homes(self) -> dict[str, str | None]:
        """Table name -> the schema it is in (None where the source has one namespace), from the source's
        metadata. A name found in two schemas (or catalogs) is a ConfigError: the party sets `schema`."""
        objects = self._con.adbc_get_objects(depth="tables", db_schema_filter=self.source.schema).read_all()
        homes: dict[str, list[str | None]] = {}
        for catalog in objects.to_pylist():
            for schema in catalog["catalog_db_schemas"] or []:
                if self.source.kind == "postgres" and schema["db_schema_name"] in ("pg_catalog", "information_schema"):
                    continue
                home = None if self.source.kind == "sqlite" else schema["db_schema_name"] or None
                for table in schema["db_schema_tables"] or []:
                    if table["table_type"] in ("table", "view", "TABLE", "VIEW", "BASE TABLE"):
                        homes.setdefault(table["table_name"], []).append(home)
        for name, found in homes.items():
            if len(found) > 1:
                raise ConfigError(f"party {self.party!r}: table {name!r} is in more than one schema of "
                                  f"{redact(self.source.uri)} ({', '.join(sorted(map(str, found)))}): "
                                  "set the party's schema")
        return {name: found[0] for name, found in sorted(homes.items())}

    def _read_catalog(self) -> dict[str, pa.Schema]:
        out = {}
        try:
            self._homes = self._table_homes()
            for name, home in self._homes.items():
                if self.source.kind == "sqlite":  # dynamically typed: its declared types (ADBC's follow its values)
                    raw, untyped = declared_schema(self._fetch(f"PRAGMA table_info({self._qualified(name)})"))
                    if untyped:
                        log.warning("party %s: table %s left out: column %s has no exact DuckDB type (SQLite "
                                    "stores integers or reals by value there)", self.party, name, untyped[0])
                        continue
                elif self.source.kind == "flightsql":  # the endpoint's metadata (CommandGetTables): any engine
                    raw = self._con.adbc_get_table_schema(name, db_schema_filter=home)
                else:  # a typed result carries PostgreSQL's numeric precision (typmod)
                    raw = self._fetch(f"SELECT * FROM {self._qualified(name)} LIMIT 0").schema
                fields = []
                for field in raw:
                    plain = _plain_type(field)
                    if plain is None:
                        log.warning("party %s: table %s left out: column %s has type %s with no DuckDB equivalent",
                                    self.party, name, field.name, field.type)
                        break
                    fields.append(pa.field(field.name, plain))
                else:
                    out[name] = pa.schema(fields)
        except (ConfigError, OperationalError):
            raise
        except Exception as exc:
            raise ConfigError(f"party {self.party!r}: cannot read the catalog of {redact(self.source.uri)}: "
                              f"{_reason(exc, self.source)}; check that the source runs and is reachable at "
                              "that address") from exc
        return out

    def _describe(self, name: str) -> list[tuple[str, str]]:
        rows = self._mirror.execute(f"DESCRIBE {exp.to_identifier(name, quoted=True).sql()}").fetchall()
        return [(r[0], r[1]) for r in rows]

    def schema(self) -> dict[str, list[tuple[str, str]]]:
        """Table name -> [(column, DuckDB type)], from the source's own metadata."""
        return {name: self._describe(name) for name in self._schemas}

    def sizes(self) -> dict[str, int]:
        """Table name -> row count rounded up to a power of two (as `PartyStore.sizes`)."""
        out = {}
        for name in self._schemas:
            (count,) = self._fetch(f"SELECT COUNT(*) AS n FROM {self._qualified(name)}").column(0).to_pylist()
            out[name] = 1 << max(int(count) - 1, 0).bit_length()
        return out

    def magnitudes(self, table: str, columns: tuple[str, ...] | None = None) -> dict[str, int]:
        """Numeric column (of `columns`, default all) -> its magnitude class, published as a DuckDB party's
        (`PartyStore.magnitudes`): without one the SPU's range is proven at run time only, where a refusal
        tells the issuer of one row's magnitude. From the column's MIN and MAX at the source (no ABS, which
        fails on the least BIGINT there); a column whose extremes do not read as numbers has no class."""
        from sqlsecure.executors.spu.ranges import magnitude_class  # late: the store does not need numpy

        numeric = [c for c, t in self._types.get(table, {}).items() if numeric_type(t)
                   and (columns is None or c in columns) and (table, c) not in self._classes]
        if numeric:
            quoted = [exp.to_identifier(c, quoted=True).sql() for c in numeric]
            extremes = ", ".join(f"MIN({q}) AS \"l{i}\", MAX({q}) AS \"h{i}\"" for i, q in enumerate(quoted))
            try:
                (row,) = self.query(f"SELECT {extremes} FROM {exp.to_identifier(table, quoted=True).sql()}").to_pylist()
            except (DataError, OperationalError):  # the source's values are not the catalog's type
                row = {}
            for i, column in enumerate(numeric):
                ends = [magnitude_class(row.get(f"{end}{i}")) for end in "lh"]  # None: empty, NaN, infinite
                self._classes[(table, column)] = None if None in ends else max(ends)
        return {c: bits for (t, c), bits in self._classes.items()
                if t == table and bits is not None and (columns is None or c in columns)}

    # -- queries ----------------------------------------------------------------------------------
    def _fetch(self, sql: str) -> pa.Table:
        try:
            with self._lock:
                cur = self._con.cursor()
                try:
                    cur.execute(sql)
                    return cur.fetch_arrow_table()
                finally:
                    cur.close()
                    if self.source.kind == "postgres":
                        self._con.rollback()  # end the read-only transaction
        except Exception as exc:
            raise self._refused(exc, sql) from None

    def _refused(self, exc: Exception, sql: str) -> OperationalError | DataError:
        """The source's refusal without its text (which may quote the owner's values): that stays in the
        party's log and on the error as `private_detail`, for the party itself only (as `local_error`)."""
        password = urllib.parse.urlsplit(self.source.uri).password
        text = str(exc).replace(password, "***") if password else str(exc)
        party_log(self.party).error("pushed-down query at %s failed: %s\n  SQL: %s", self.party, text, sql)
        code = str(getattr(exc, "sqlstate", None) or "")
        kind = SQLSTATE_KINDS.get(code) or SQLSTATE_KINDS.get(code[:2], "an error")
        message = (f"party {self.party!r}: its source refused the pushed-down query {sql} with {kind}"
                   f"{f' (SQLSTATE {code})' if code.isalnum() and len(code) == 5 else ''}; the full text is in "
                   f"{self.party}'s log")
        error = DataError(message) if code.startswith("22") else OperationalError(message)
        error.private_detail = text
        return error

    def _family_of(self, node: exp.Expression, tables: dict[str, str]) -> str:
        """The type family of a column (or 'other' where it is not a plain column)."""
        if isinstance(node, exp.Column):
            table = tables.get(node.table) if node.table else next(iter(tables.values()), None)
            return _family(self._types.get(table, {}).get(node.name, "other"))
        if isinstance(node, exp.Literal) and not node.is_string:  # DuckDB's: 1 an integer, 1.5 a DECIMAL, 1e5 a DOUBLE
            return "int" if node.is_int else "float" if "e" in node.this.lower() else "decimal"
        if isinstance(node, (exp.Paren, exp.Neg)):
            return self._family_of(node.this, tables)
        if isinstance(node, ARITHMETIC):  # the widest operand's
            families = {self._family_of(o, tables) for o in (node.this, node.expression)}
            return next((f for f in ("other", "float", "decimal", "int") if f in families), "other")
        return "other"

    def _pushable(self, tree: exp.Expression, tables: dict[str, str]) -> bool:
        """Whether every node of `tree` means the same in the source's dialect."""
        if self.source.dialect is None:
            return False
        for node in tree.walk():
            if isinstance(node, ORDERED + ARITHMETIC):
                operands = [node.this, *(node.args.get(k) for k in ("expression", "low", "high"))]
                families = {self._family_of(o, tables) for o in operands if o is not None}
                allowed = ARITHMETIC_FAMILIES[self.source.kind] if isinstance(node, ARITHMETIC) else NUMERIC_OR_DATE
                if not families <= allowed:
                    return False
            elif isinstance(node, exp.Sum) and self._family_of(node.this, tables) not in SUMMED_FAMILIES[self.source.kind]:
                return False
            elif isinstance(node, exp.In) and node.args.get("query") is not None:
                return False
            elif isinstance(node, exp.Join) and (node.side or node.kind not in ("", "INNER")):
                return False
            elif isinstance(node, exp.Count) and isinstance(node.this, exp.Distinct):
                continue
            elif not isinstance(node, PUSHABLE):
                return False
        return True

    def _tables(self, tree: exp.Expression) -> dict[str, str]:
        """alias -> table name of every table the query reads (all must be this party's)."""
        out = {}
        for table in tree.find_all(exp.Table):
            if table.name not in self._schemas:
                raise OperationalError(f"party {self.party!r}: no table {table.name!r} in its source")
            out[table.alias_or_name] = table.name
        return out

    def pushdown(self, sql: str) -> tuple[str, bool]:
        """(the SQL the source runs, whether the query runs there whole); for EXPLAIN."""
        tree = sqlglot.parse_one(sql, read="duckdb")
        tables = self._tables(tree)
        if self._pushable(tree, tables):
            return self._transpiled(tree), True
        return "; ".join(self._fetch_plan(tree, name, tables)[0] for name in sorted(set(tables.values()))), False

    def _transpiled(self, tree: exp.Expression) -> str:
        tree = tree.copy()
        for table in tree.find_all(exp.Table):
            if self._homes.get(table.name):
                table.set("db", exp.to_identifier(self._homes[table.name], quoted=True))
        try:
            return tree.sql(dialect=self.source.dialect, unsupported_level=ErrorLevel.RAISE)
        except SqlglotError as exc:
            raise OperationalError(f"party {self.party!r}: cannot write the query for its source: {exc}") from None

    def _fetch_plan(self, tree: exp.Expression, name: str, tables: dict[str, str]) -> tuple[str, pa.Schema]:
        """SELECT the columns of table `name` the query uses (with the WHERE conjuncts that push, when the
        query reads that table alone), and the schema of what it returns."""
        aliases = {alias for alias, table in tables.items() if table == name}
        schema = self._schemas[name]
        columns = self._columns_used(tree, name)
        query = exp.select(*[exp.column(c, quoted=True) for c in columns]).from_(
            exp.table_(name, db=self._homes.get(name), quoted=True))
        where = tree.args.get("where") if isinstance(tree, exp.Select) else None
        if where is not None and len(tables) == 1 and self.source.dialect is not None:
            (alias,) = aliases
            for conjunct in where.this.flatten() if isinstance(where.this, exp.And) else [where.this]:
                if self._pushable(conjunct, {alias: name}):
                    query = query.where(conjunct.copy().transform(_unqualify), copy=False)
        return query.sql(dialect=self.source.dialect or ""), pa.schema([schema.field(c) for c in columns])

    def _columns_used(self, tree: exp.Expression, name: str) -> list[str]:
        """The columns of table `name` a query reads (by name: a derived table's alias may qualify them)."""
        used = {c.name for c in tree.find_all(exp.Column)}
        schema = self._schemas[name]
        every = any(isinstance(star.parent, exp.Select) or isinstance(star.parent, exp.Column)
                    for star in tree.find_all(exp.Star))  # SELECT * or t.* passes every column on
        return [f.name for f in schema if every or f.name in used] or [schema[0].name]

    def _refuse_odd_values(self, tree: exp.Expression, tables: dict[str, str]) -> None:
        """SQLite: a DataError where a column the query reads holds a value of another type than declared."""
        for name in sorted(set(tables.values())):
            columns = self._columns_used(tree, name)
            counts = self._fetch(storage_guard(self._qualified(name), self._schemas[name], columns))
            refuse_odd_values(self.party, name, columns, self._types[name], counts)

    def query(self, sql: str) -> pa.Table:
        """Run DuckDB-dialect read-only SQL over this party's tables where they live; DuckDB's result types."""
        tree = sqlglot.parse_one(sql, read="duckdb")
        tables = self._tables(tree)
        if self.source.kind == "sqlite":
            self._refuse_odd_values(tree, tables)
        try:
            expected = self._mirror.sql(sql).to_arrow_table().schema
        except duckdb.Error as exc:
            raise local_error(self.party, exc, sql) from None
        if self._pushable(tree, tables):
            return _conform(self._fetch(self._transpiled(tree)), expected)
        local = _utc_duckdb()
        try:
            for name in set(tables.values()):
                fetch, wanted = self._fetch_plan(tree, name, tables)
                local.register(name, _conform(self._unchanged(name, self._fetch(fetch)), wanted))
            try:
                return _conform(local.sql(sql).to_arrow_table(), expected)
            except duckdb.Error as exc:
                raise local_error(self.party, exc, sql) from None
        finally:
            local.close()

    def _unchanged(self, name: str, fetched: pa.Table) -> pa.Table:
        """A PostgreSQL table's fetched columns, refused where the source now holds one with another type than
        its catalog said when the store opened (a column retyped while the engine runs): the plan was typed with
        the catalog's, and a cast would read the new values as the old type."""
        if self.source.kind != "postgres":  # SQLite's driver types a result by its values; Flight SQL's: unknown
            return fetched
        published = self._schemas[name]
        changed = [f"{field.name}: {published.field(field.name).type}, now {_plain_type(field) or field.type}"
                   for field in fetched.schema if _plain_type(field) != published.field(field.name).type]
        if changed:
            raise OperationalError(f"party {self.party!r}: table {name!r} changed in its source since its schema "
                                   f"was published ({', '.join(changed)}): open the federation again to plan "
                                   "with the new schema")
        return fetched

    def write(self, sql: str, result: pa.Table | None = None) -> int:
        raise OperationalError(f"party {self.party!r}: its source {redact(self.source.uri)} is read-only here")

    def close(self) -> None:
        self._mirror.close()
        self._con.close()


def _utc_duckdb() -> duckdb.DuckDBPyConnection:
    """A private in-memory DuckDB whose time zone is UTC, so results and casts of timestamps with time zone
    do not depend on the machine's."""
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    return con


def _unqualify(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Column) and node.table:
        return exp.column(node.name, quoted=True)
    return node

