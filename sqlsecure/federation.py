"""The federation file (TOML): parties, their data, the query dialect and the grants.

`load_federation` checks the file's shape and that every data file exists; `resolve_grants`
checks the grants against the parties' real schemas. Both collect every problem and raise one
`ConfigError` that names the file and key of each.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
import urllib.parse
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path

import sqlglot

from sqlsecure.connectors import TableSource
from sqlsecure.connectors.adbc_store import Source, redact, source_kind
from sqlsecure.connectors.source_types import duckdb_type
from sqlsecure.audit import KEEP, MAX_BYTES, AuditSettings
from sqlsecure.errors import ConfigError
from sqlsecure.policy.masking import parse_masks
from sqlsecure.policy.privacy import parse_privacy
from sqlsecure.policy.grants import ColumnRef, Constraint, Grants
from sqlsecure.planner.views import parse_views

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
FEDERATION_KEYS = {"name", "dialect", "min_group_size", "ledger", "mask_key_file", "ca", "network_timeout",
                   "group_sums", "he_key_bits", "link_rtt_ms", "link_mbps", "psi", "time_zone"}
HOLD_KEYS = ("peer_bytes", "peer_messages", "query_bytes", "query_messages")  # network_hold_*: network.HoldLimits
FEDERATION_KEYS |= {f"network_hold_{key}" for key in HOLD_KEYS}
NODE_KEYS = {"address", "certificate", "private_key"}  # network mode: where a party (or actor) listens, who it is
AUDIT_KEYS = {"audit_dir", "audit_max_bytes", "audit_keep"}  # the party's audit log (sqlsecure/audit.py)
PARTY_KEYS = {"database", "tables", "schema", "password_file", "tls_root_certs", "unique", "types"} | NODE_KEYS | AUDIT_KEYS
GRANT_KEYS = {"party", "columns", "constraint"}
TOP_KEYS = {"federation", "parties", "grants", "privacy", "rules", "masks", "enclave", "dealer", "views"}
ENCLAVE_KEYS = {"authority", "measurements", "placement"} | NODE_KEYS
ADDRESS = re.compile(r"^(?P<host>[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})$")


@dataclass(frozen=True)
class PartyConfig:
    name: str
    database: Path | None
    tables: tuple[TableSource, ...]
    source: Source | None = None  # a database reached through ADBC (PostgreSQL, SQLite, Flight SQL)
    audit: AuditSettings | None = None  # where the party logs the queries it takes part in (None: nowhere)
    unique: tuple[tuple[str, tuple[str, ...]], ...] = ()  # declared unique keys: (table, columns), public schema
    types: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()  # declared column types: (table, ((column, type), ...))


@dataclass(frozen=True)
class NodeConfig:
    """Network mode: one party's (or the dealer's / enclave's) service address and certificate.

    The private key path is only read by the node itself (serving) or by an engine acting as it;
    another party's copy of the federation file need not have it."""

    name: str
    host: str
    port: int
    certificate: Path
    private_key: Path | None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class GrantConfig:
    party: str
    columns: tuple[str, ...]
    constraint: Constraint
    where: str  # "grants[2]", for messages


@dataclass(frozen=True)
class FederationConfig:
    path: Path
    name: str
    dialect: str
    min_group_size: int
    parties: dict[str, PartyConfig]
    grants: tuple[GrantConfig, ...]
    ledger: Path = Path("ledger.sqlite")  # the privacy budget ledger
    mask_key_file: Path = Path("mask.key")  # the keyed-hash masking key (created on first use)
    privacy: dict = field(default_factory=dict)  # issuer -> PrivacyBudget
    masks: tuple = ()  # MaskConfig, resolved against the schema by the engine
    rules: dict = field(default_factory=dict)  # raw [rules."party.table"] sections, resolved by the engine
    enclave: "EnclaveConfigEntry | None" = None
    ca: Path | None = None  # network mode: the federation CA's certificate
    network_timeout: float = 30.0  # network mode: a peer silent this long fails the query
    nodes: dict = field(default_factory=dict)  # network mode: name -> NodeConfig (parties, dealer, enclave)
    group_sums: str = "auto"  # class 4 (keys at one party, SUM/AVG/COUNT of another's values): "auto", "he", "spu"
    link_rtt_ms: float = 1.0  # network mode: the round trip the cost model assumes between parties
    link_mbps: float = 1000.0  # network mode: the bandwidth it assumes
    psi: str = "kkrt"  # the PSI protocol of joins across parties: "kkrt" (OT-based) or "ecdh" (X25519)
    he_key_bits: int = 2048  # the Paillier modulus of HE group sums: 2048 or 3072
    views: dict = field(default_factory=dict)  # [views]: name -> parsed query (planner/views.py)
    time_zone: str = "UTC"  # the IANA zone whose wall clock CURDATE()/NOW() read (planner/dialects/)
    network_hold: dict = field(default_factory=dict)  # network mode: the network_hold_* limits given (HoldLimits)


@dataclass(frozen=True)
class EnclaveConfigEntry:
    """[enclave]: the test authority (simulation), the measurements parties accept, placement policy."""

    authority: Path
    measurements: tuple[bytes, ...]
    placement: str  # "cost" (by the planner's cost model) or "always"


def _parse_enclave(raw, path: Path, problem) -> EnclaveConfigEntry | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problem("enclave", "must be a table")
        return None
    for k in sorted(set(raw) - ENCLAVE_KEYS):
        problem(f"enclave.{k}", "unknown key")
    authority = raw.get("authority")
    if not isinstance(authority, str):
        problem("enclave.authority", "the path of the enclave's (test) authority key is required")
        return None
    authority_path = (path.parent / authority).resolve()
    if not authority_path.is_file() or not Path(str(authority_path) + ".pub").is_file():
        problem("enclave.authority", f"no authority key at {authority_path} (and .pub): create one with "
                                     "`sqlsecure enclave-init`")
    measurements = raw.get("measurements")
    if not isinstance(measurements, list) or not measurements or not all(
            isinstance(m, str) and re.fullmatch(r"[0-9a-f]{64}", m) for m in measurements):
        problem("enclave.measurements", "a non-empty list of accepted measurements (64 hex digits each)")
        measurements = []
    placement = raw.get("placement", "cost")
    if placement not in ("cost", "always"):
        problem("enclave.placement", 'must be "cost" or "always"')
    return EnclaveConfigEntry(authority_path, tuple(bytes.fromhex(m) for m in measurements), placement)


def _parse_node(name: str, key: str, body: dict, path: Path, problem) -> NodeConfig | None:
    """address / certificate / private_key of one node, or None when it has none of them."""
    given = {k: body[k] for k in NODE_KEYS if k in body}
    if not given:
        return None
    ok = True
    for k in ("address", "certificate"):
        if not isinstance(given.get(k), str) or not given[k]:
            problem(f"{key}.{k}", "required in network mode (with address, certificate and private_key)")
            ok = False
    match = ADDRESS.match(given.get("address") or "") if isinstance(given.get("address"), str) else None
    if isinstance(given.get("address"), str) and (match is None or not 0 < int(match["port"]) < 65536):
        problem(f"{key}.address", f"{given['address']!r} is not HOST:PORT (e.g. \"127.0.0.1:47001\")")
        ok = False
    private_key = given.get("private_key")
    if private_key is not None and (not isinstance(private_key, str) or not private_key):
        problem(f"{key}.private_key", "must be a path string")
        ok = False
    if not ok:
        return None
    certificate = (path.parent / given["certificate"]).resolve()
    if not certificate.is_file():
        problem(f"{key}.certificate", f"no such certificate file: {certificate} (`sqlsecure init-certs` makes test ones)")
    return NodeConfig(name, match["host"].strip("[]"), int(match["port"]), certificate,
                      (path.parent / private_key).resolve() if private_key else None)


def _check_network(nodes: dict, parties: dict, ca_raw, path: Path, problem) -> Path | None:
    """Every party needs a node once one has; certificates must be the CA's and name their node."""
    if not nodes and ca_raw is None:
        return None
    if not isinstance(ca_raw, str) or not ca_raw:
        problem("federation.ca", "network mode needs the federation CA's certificate (a path)")
        return None
    ca_path = (path.parent / ca_raw).resolve()
    if not ca_path.is_file():
        problem("federation.ca", f"no such certificate file: {ca_path}")
        return ca_path
    from sqlsecure.certs import certificate_name, check_issued_by, load_certificate
    from sqlsecure.errors import ConfigError as _ConfigError

    try:
        ca = load_certificate(ca_path)
    except _ConfigError as exc:
        problem("federation.ca", str(exc))
        return ca_path
    for party in parties:
        if party not in nodes:
            problem(f"parties.{party}", "network mode: every party needs address, certificate and private_key")
    seen: dict[tuple[str, int], str] = {}
    for name, node in nodes.items():
        key = f"parties.{name}" if name in parties else name
        if (node.host, node.port) in seen:
            problem(f"{key}.address", f"{node.address} is also {seen[(node.host, node.port)]!r}'s address")
        seen[(node.host, node.port)] = name
        if not node.certificate.is_file():
            continue
        try:
            cert = load_certificate(node.certificate)
        except _ConfigError as exc:
            problem(f"{key}.certificate", str(exc))
            continue
        wrong = check_issued_by(cert, ca, str(node.certificate))
        if wrong:
            problem(f"{key}.certificate", wrong)
        elif certificate_name(cert) != name:
            problem(f"{key}.certificate", f"names {certificate_name(cert)!r}, not {name!r}: peers authorise by "
                                          "the certificate's name")
    return ca_path


def _dialect_ok(dialect: str) -> bool:
    try:
        sqlglot.Dialect.get_or_raise(dialect)
    except ValueError:
        return False
    return True


def _time_zone_ok(name) -> bool:
    """An IANA time zone name that this machine's zone database knows."""
    if not isinstance(name, str) or not name or name.startswith(("/", ".")):
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def load_federation(path: str | Path) -> FederationConfig:
    """Read and validate a federation file; raise ConfigError listing every problem."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such federation file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; give the federation file (TOML)") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the federation file: {exc.strerror}") from None
    try:
        return _validate(raw, path)
    except (TypeError, ValueError, AttributeError) as exc:  # a value of a type no check foresaw
        raise ConfigError(f"{path}: a value has the wrong type ({type(exc).__name__}: {exc}); check the file "
                          "against docs/federation.md") from None


def _existing_file(value: Path, key: str, what: str, problem) -> None:
    """A path that exists must be a file (a directory there is a mistake, reported with its key)."""
    if value.exists() and not value.is_file():
        problem(key, f"{value} is a directory, not {what}; give a file path")


def _validate(raw: dict, path: Path) -> FederationConfig:
    """Check every key of a parsed federation file; raise one ConfigError listing every problem."""
    problems: list[str] = []

    def problem(key: str, text: str) -> None:
        problems.append(f"{path}: {key}: {text}")

    for key in sorted(set(raw) - TOP_KEYS):
        problem(key, "unknown key")

    fed = raw.get("federation")
    if not isinstance(fed, dict):
        problem("federation", "missing [federation] table")
        fed = {}
    for key in sorted(set(fed) - FEDERATION_KEYS):
        problem(f"federation.{key}", "unknown key")
    name = fed.get("name", path.stem)
    if not isinstance(name, str) or not name:
        problem("federation.name", "must be a non-empty string")
    dialect = fed.get("dialect", "duckdb")
    if not isinstance(dialect, str) or not _dialect_ok(dialect):
        problem("federation.dialect", f"unknown SQL dialect {dialect!r} (e.g. duckdb, postgres, mysql)")
    min_group_size = fed.get("min_group_size", 4)
    if not isinstance(min_group_size, int) or isinstance(min_group_size, bool) or min_group_size < 0:
        problem("federation.min_group_size", "must be a whole number >= 0 (0 disables the threshold)")
        min_group_size = 4

    parties: dict[str, PartyConfig] = {}
    nodes: dict[str, NodeConfig] = {}
    raw_parties = raw.get("parties")
    if not isinstance(raw_parties, dict) or not raw_parties:
        problem("parties", "at least one [parties.NAME] table is needed")
        raw_parties = {}
    seen_lower: dict[str, str] = {}
    for pname, body in raw_parties.items():
        key = f"parties.{pname}"
        if not NAME.match(pname):
            problem(key, "party names are identifiers (letters, digits, _)")
            continue
        if pname.lower() in seen_lower:
            problem(key, f"duplicate party (same name as {seen_lower[pname.lower()]!r} up to case)")
            continue
        seen_lower[pname.lower()] = pname
        if not isinstance(body, dict):
            problem(key, "must be a table")
            continue
        for k in sorted(set(body) - PARTY_KEYS):
            problem(f"{key}.{k}", "unknown key")
        database = body.get("database")
        db_path = source = None
        if database is not None:
            if not isinstance(database, str):
                problem(f"{key}.database", "must be a path string or a database URI")
            elif source_kind(database) is not None:
                source = _parse_source(database, key, body, path, problem)
            elif "://" in database:
                problem(f"{key}.database", f"unknown kind of database URI {redact(database)!r} (postgresql://, "
                                           "sqlite://, grpc:// or grpc+tls://)")
            else:
                db_path = (path.parent / database).resolve()
                if not db_path.exists():
                    problem(f"{key}.database", f"no such database file: {db_path}")
                _existing_file(db_path, f"{key}.database", "a database file", problem)
        if source is None:
            for k in ("schema", "password_file", "tls_root_certs"):
                if k in body:
                    problem(f"{key}.{k}", "only for a database URI (postgresql://, sqlite://, grpc+tls://)")
        tables = []
        types = _parse_types(key, body.get("types", {}), problem)
        raw_tables = body.get("tables", {})
        if not isinstance(raw_tables, dict):
            problem(f"{key}.tables", "must be a table of name = \"path\"")
            raw_tables = {}
        for tname, tpath in raw_tables.items():
            tkey = f"{key}.tables.{tname}"
            if not NAME.match(tname):
                problem(tkey, "table names are identifiers (letters, digits, _)")
            elif not isinstance(tpath, str):
                problem(tkey, "must be a path string")
            else:
                file = (path.parent / tpath).resolve()
                if not file.is_file():
                    problem(tkey, f"no such data file: {file}")
                elif file.suffix.lower() not in (".parquet", ".csv", ".tsv"):
                    problem(tkey, f"unsupported file type {file.suffix!r} (use .parquet or .csv)")
                else:
                    tables.append(TableSource(tname, file, dict(types).get(tname, ())))
        node = _parse_node(pname, key, body, path, problem)
        if node is not None:
            nodes[pname] = node
        if db_path is None and not tables and database is None and node is None:
            problem(key, "has no data: give a database or tables")
        if source is not None and tables:
            problem(f"{key}.tables", "a party reads either a database URI or its own files, not both")
        parties[pname] = PartyConfig(pname, db_path, tuple(tables), source, _parse_audit(key, body, path, problem),
                                     _parse_unique(key, body.get("unique", {}), problem), types)

    grants: list[GrantConfig] = []
    raw_grants = raw.get("grants", [])
    if not isinstance(raw_grants, list):
        problem("grants", "must be an array of tables ([[grants]])")
        raw_grants = []
    for i, g in enumerate(raw_grants):
        key = f"grants[{i}]"
        if not isinstance(g, dict):
            problem(key, "must be a table")
            continue
        for k in sorted(set(g) - GRANT_KEYS):
            problem(f"{key}.{k}", "unknown key")
        party = g.get("party")
        if not isinstance(party, str) or party not in parties:
            problem(f"{key}.party", f"unknown party {party!r}: the name of one party (a string), one grant per party")
            party = None
        columns = g.get("columns")
        if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
            problem(f"{key}.columns", "must be a non-empty list of \"party.table.column\" patterns")
            columns = []
        try:
            constraint = Constraint(g.get("constraint"))
        except ValueError:
            allowed = ", ".join(c.value for c in Constraint)
            problem(f"{key}.constraint", f"unknown constraint {g.get('constraint')!r} (one of {allowed})")
            continue
        if party in parties and columns:
            grants.append(GrantConfig(party, tuple(columns), constraint, key))

    paths = {}
    for key, default in (("ledger", f"{path.stem}.ledger.sqlite"), ("mask_key_file", f"{path.stem}.mask.key")):
        value = fed.get(key, default)
        if not isinstance(value, str) or not value:
            problem(f"federation.{key}", "must be a path string")
            value = default
        paths[key] = (path.parent / value).resolve()
        _existing_file(paths[key], f"federation.{key}", "a file", problem)
    privacy = parse_privacy(raw.get("privacy", {}), problem, parties)
    masks = parse_masks(raw.get("masks", []), problem, parties)
    rules = raw.get("rules", {})
    views = parse_views(raw.get("views", {}), dialect if isinstance(dialect, str) else "duckdb", problem)
    for view in views:
        if not NAME.match(view):
            problem(f"views.{view}", "view names are identifiers (letters, digits, _)")
    enclave = _parse_enclave(raw.get("enclave"), path, problem)
    for actor in ("dealer", "enclave"):
        body = raw.get(actor)
        if actor == "dealer" and body is not None and not isinstance(body, dict):
            problem("dealer", "must be a table")
        elif actor == "dealer" and isinstance(body, dict):
            for k in sorted(set(body) - NODE_KEYS):
                problem(f"dealer.{k}", "unknown key")
        if isinstance(body, dict) and (node := _parse_node(actor, actor, body, path, problem)) is not None:
            nodes[actor] = node
    timeout = fed.get("network_timeout", 30.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 86400:
        problem("federation.network_timeout", "must be a number of seconds > 0")
        timeout = 30.0
    ca = _check_network(nodes, parties, fed.get("ca"), path, problem)
    hold = {key: fed[f"network_hold_{key}"] for key in HOLD_KEYS if f"network_hold_{key}" in fed}
    for key, value in list(hold.items()):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problem(f"federation.network_hold_{key}", "must be a whole number > 0")
            del hold[key]
    group_sums = fed.get("group_sums", "auto")
    if not isinstance(group_sums, str) or group_sums not in ("auto", "he", "spu"):
        problem("federation.group_sums", 'must be "auto" (the planner\'s cost model), "he" (Paillier group sums) '
                                         'or "spu" (secret shares)')
    time_zone = fed.get("time_zone", "UTC")
    if not _time_zone_ok(time_zone):
        problem("federation.time_zone", f"unknown time zone {time_zone!r}: an IANA name such as "
                                        "\"UTC\" or \"Europe/Paris\"")
        time_zone = "UTC"
    he_key_bits = fed.get("he_key_bits", 2048)
    if not isinstance(he_key_bits, int) or isinstance(he_key_bits, bool) or he_key_bits not in (2048, 3072):
        problem("federation.he_key_bits", "must be 2048 or 3072 (bits of the Paillier modulus of HE group sums)")
        he_key_bits = 2048
    psi = fed.get("psi", "kkrt")
    if not isinstance(psi, str) or psi not in ("kkrt", "ecdh"):
        problem("federation.psi", 'must be "kkrt" (OT-based PSI, KKRT16) or "ecdh" (ECDH-PSI over X25519)')
    link = {}
    for key, default, low, top, unit in (("link_rtt_ms", 1.0, 0, 60_000, "milliseconds"),
                                         ("link_mbps", 1000.0, 1e-3, 1e6, "Mbit/s")):
        value = fed.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= top:
            problem(f"federation.{key}", f"must be a number of {unit} in {low:g}..{top:g}")
            value = default
        link[key] = float(value)
    if problems:
        raise ConfigError(problems)
    return FederationConfig(path, name, dialect, min_group_size, parties, tuple(grants), paths["ledger"],
                            paths["mask_key_file"], privacy, tuple(masks), rules, enclave, ca, float(timeout),
                            nodes, group_sums, **link, psi=psi, he_key_bits=he_key_bits, views=views,
                            time_zone=time_zone, network_hold=hold)


def resolve_grants(config: FederationConfig, columns: list[ColumnRef]) -> Grants:
    """Expand grant patterns against the federation's real columns."""
    problems: list[str] = []
    grants = Grants()
    names = {str(c): c for c in columns}
    for g in config.grants:
        for pattern in g.columns:
            if pattern.count(".") != 2:
                problems.append(f"{config.path}: {g.where}.columns: {pattern!r} is not party.table.column")
                continue
            matched = [names[n] for n in fnmatch.filter(names, pattern)]
            if not matched:
                problems.append(f"{config.path}: {g.where}.columns: {pattern!r} matches no column")
            if pattern.split(".")[0] == g.party:
                problems.append(f"{config.path}: {g.where}: {pattern} belongs to {g.party!r}, which sees its own "
                                "columns: grant them to another party, or remove the grant")
                continue
            for column in matched:
                if column.party == g.party:  # a wildcard over the grantee's own columns: nothing to grant
                    continue
                previous = grants.table.get((column, g.party))
                if previous is not None and previous != g.constraint:
                    problems.append(
                        f"{config.path}: {g.where}: conflicting grants for {column} to {g.party!r}: "
                        f"{previous.value} and {g.constraint.value}"
                    )
                grants.table[(column, g.party)] = g.constraint
    if problems:
        raise ConfigError(problems)
    return grants


def _parse_unique(key: str, raw, problem) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """`[parties.NAME.unique] table = [["col", ...], ...]`: keys the party declares unique in its table
    (public schema metadata; the planner joins on them by a sort, and the SPU checks them obliviously)."""
    if not isinstance(raw, dict):
        problem(f"{key}.unique", 'must be a table of table = [["column", ...], ...]')
        return ()
    out = []
    for table, keys in raw.items():
        if not isinstance(keys, list) or not keys or not all(
                isinstance(k, list) and k and all(isinstance(c, str) for c in k) for k in keys):
            problem(f"{key}.unique.{table}", 'must be a list of column lists, e.g. [["c_custkey"]]')
            continue
        out += [(table, tuple(k)) for k in keys]
    return tuple(out)


def _parse_types(key: str, raw, problem) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    """`[parties.NAME.types] table = { column = "TYPE", ... }`: the column types the party declares (public
    schema metadata, in DuckDB's type names): what a CSV is read as, and what a typed source must say
    (connectors/source_types.py). A type DuckDB does not know is a problem naming the column's key."""
    if not isinstance(raw, dict):
        problem(f"{key}.types", 'must be a table of table = { column = "TYPE", ... }')
        return ()
    out = []
    for table, columns in raw.items():
        if not NAME.match(table) or not isinstance(columns, dict) or not columns:
            problem(f"{key}.types.{table}", 'must be a table name with { column = "TYPE", ... }, e.g. '
                                           '{ code = "VARCHAR", amount = "DECIMAL(12,2)" }')
            continue
        declared = []
        for column, text in columns.items():
            dtype = duckdb_type(text)
            if dtype is None:
                problem(f"{key}.types.{table}.{column}", f"unknown column type {text!r} (a DuckDB type: BIGINT, "
                                                         "DOUBLE, DECIMAL(12,2), VARCHAR, DATE, TIMESTAMP, BOOLEAN, ...)")
            else:
                declared.append((column, dtype))
        out.append((table, tuple(declared)))
    return tuple(out)


def declared_unique(config: FederationConfig, catalog) -> dict[str, dict[str, tuple[tuple[str, ...], ...]]]:
    """party -> table -> declared unique keys, each checked against the catalog (ConfigError naming the
    key of a table or column that does not exist)."""
    out: dict[str, dict[str, tuple[tuple[str, ...], ...]]] = {}
    problems = []
    for party, body in config.parties.items():
        for table, columns in body.unique:
            where = f"{config.path}: parties.{party}.unique.{table}"
            if not catalog.has_table(party, table):
                problems.append(f"{where}: {party} has no table {table}")
                continue
            known = {c for c, _ in catalog.columns(party, table)}
            missing = [c for c in columns if c not in known]
            if missing:
                problems.append(f"{where}: {table} has no column {', '.join(missing)}")
                continue
            keys = out.setdefault(party, {}).setdefault(table, ())
            out[party][table] = keys + (columns,)
    if problems:
        raise ConfigError(problems)
    return out


def _parse_audit(key: str, body: dict, path: Path, problem) -> AuditSettings | None:
    """`audit_dir` (relative to the file; created on first use) and its rotation, `audit_max_bytes` and
    `audit_keep`, which mean nothing without it."""
    directory = body.get("audit_dir")
    if directory is None:
        for k in sorted(AUDIT_KEYS & set(body)):
            problem(f"{key}.{k}", "only with audit_dir (the directory of the party's audit log)")
        return None
    if not isinstance(directory, str) or not directory:
        problem(f"{key}.audit_dir", "must be a directory path string")
        return None
    resolved = (path.parent / directory).resolve()
    if resolved.exists() and not resolved.is_dir():
        problem(f"{key}.audit_dir", f"{resolved} is a file, not a directory")
    limits = {}
    for name, default, low in (("audit_max_bytes", MAX_BYTES, 1024), ("audit_keep", KEEP, 1)):
        value = body.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            problem(f"{key}.{name}", f"must be a whole number >= {low}")
            value = default
        limits[name] = value
    return AuditSettings(resolved, limits["audit_max_bytes"], limits["audit_keep"])


def _parse_source(uri: str, key: str, body: dict, path: Path, problem) -> Source | None:
    """A party's ADBC source: the URI (no password in it), the schema its tables are in, a password file."""
    if urllib.parse.urlsplit(uri).password is not None:
        problem(f"{key}.database", "put no password in the federation file: use PGPASSWORD, ~/.pgpass or "
                                   "password_file")
        return None
    schema = body.get("schema")
    if schema is not None and (not isinstance(schema, str) or not schema):
        problem(f"{key}.schema", "must be a schema name")
        schema = None
    if schema is None and source_kind(uri) == "postgres":
        schema = "public"
    files = {}
    for name in ("password_file", "tls_root_certs"):
        value = body.get(name)
        if value is not None:
            if not isinstance(value, str) or not value:
                problem(f"{key}.{name}", "must be a path string")
                value = None
            else:
                value = (path.parent / value).resolve()
                if not value.is_file():
                    problem(f"{key}.{name}", f"no such file: {value}")
                    value = None
        files[name] = value
    if files["tls_root_certs"] is not None and not uri.lower().startswith("grpc+tls://"):
        problem(f"{key}.tls_root_certs", "only for a grpc+tls:// endpoint")
    return Source(uri, schema, files["password_file"], files["tls_root_certs"])
