"""The `sqlsecure` command: query, explain, check, budget, audit, shell, demo, serve, init-certs, party."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from sqlsecure.errors import unexpected
from sqlsecure.formatting import FORMATS, affected


def _fail(exc: BaseException, debug: bool) -> None:
    """One line `error: Class: message` and exit 1 (`--debug`: the traceback); an exception that is not
    an engine error is shown as the PEP 249 error it stands for (safety net: never a bare traceback)."""
    if debug:
        raise exc
    error = unexpected(exc, "running the command")
    click.echo(f"error: {type(error).__name__}: {error}", err=True)
    sys.exit(1)


def _with_engine(federation: str, debug: bool, work, writer: str | None = None):
    """Open the federation (`writer`: the party whose own database may be written), run `work(engine)`,
    and turn engine errors into one line and exit 1."""
    from sqlsecure.engine import Engine

    try:
        with Engine(federation, writer=writer) as engine:
            return work(engine)
    except click.ClickException:
        raise
    except Exception as exc:
        _fail(exc, debug)


federation_option = click.option(
    "-F", "--federation", "federation", required=True, type=click.Path(dir_okay=False),
    help="The federation file (TOML).",
)
issuer_option = click.option("--as", "issuer", required=True, help="The party issuing the query.")
debug_option = click.option("--debug", is_flag=True, help="Show Python tracebacks on errors.")
write_option = click.option("--write", is_flag=True,
                            help="Open ISSUER's own database writable (CREATE, INSERT, UPDATE, DELETE, DROP).")


def refuse_write(engine, sql: str, issuer: str, command: str, lasting: bool = False) -> None:
    """Without --write the command is read-only: a write statement is a PlanError saying how to write,
    raised before anything runs (the engine's own refusal would blame the connection's party). `lasting`:
    the write must outlive the command, so a party without a database file (its writes would go to an
    in-memory database dropped at exit) is refused too."""
    from sqlsecure.engine import EXPLAIN
    from sqlsecure.errors import PlanError
    from sqlsecure.planner.parse import parse_statement
    from sqlsecure.writes import is_write

    if EXPLAIN.match(sql) or not is_write(tree := parse_statement(sql, engine.config.dialect)):
        return
    kind = tree.key.upper()
    if engine.writer != issuer:
        raise PlanError(f"{command} is read-only: {kind} writes {issuer}'s database; run it with --write to "
                        f"write {issuer}'s own database (or through a DB-API connection, "
                        f"sqlsecure.connect(FILE, party={issuer!r}))")
    if lasting and engine.config.parties[issuer].database is None:
        raise PlanError(f"{issuer} has no database file in the federation (parties.{issuer}.database): the "
                        f"{kind} would go to an in-memory database that is gone when {command} ends; name "
                        f"{issuer}'s database in the federation file to write it")


@click.group()
@click.version_option(package_name="sqlsecure")
def main() -> None:
    """sqlsecure: SQL over several parties' tables, answered without any party seeing another's rows."""


@main.command()
@federation_option
@issuer_option
@click.option("--format", "fmt", type=click.Choice(sorted(FORMATS)), default="table", show_default=True)
@write_option
@debug_option
@click.argument("sql")
def query(federation: str, issuer: str, fmt: str, write: bool, debug: bool, sql: str) -> None:
    """Run a federated query as ISSUER and print the result (with --write, a write on ISSUER's own database)."""

    def run(engine) -> str:
        engine.check_issuer(issuer)
        refuse_write(engine, sql, issuer, "sqlsecure query", lasting=True)
        result = engine.execute(sql, issuer)
        if result.table is None:
            return affected(result.rowcount)
        return _answer(result, fmt)

    click.echo(_with_engine(federation, debug, run, writer=issuer if write else None))


def _answer(result, fmt: str) -> str:
    """The result in format `fmt`; its notices (what the minimum group size withholds) go to stderr,
    so stdout stays the data."""
    for notice in result.notices:
        click.echo(f"NOTICE: {notice}", err=True)
    return FORMATS[fmt](result.table)


@main.command()
@federation_option
@issuer_option
@debug_option
@click.argument("sql")
def explain(federation: str, issuer: str, debug: bool, sql: str) -> None:
    """Print the physical plan: devices, movements between parties, what each party learns."""
    click.echo(_with_engine(federation, debug, lambda engine: engine.explain(sql, issuer)))


@main.command()
@federation_option
@issuer_option
@debug_option
@click.argument("sql")
def check(federation: str, issuer: str, debug: bool, sql: str) -> None:
    """Dry run: would ISSUER's query be answered? Exit 0 if allowed, 1 if not. Reads no data."""
    reason = _with_engine(federation, debug, lambda engine: engine.check(sql, issuer))
    if reason is None:
        click.echo("allowed")
    else:
        click.echo(f"refused: {reason}")
        sys.exit(1)


@main.command()
@federation_option
@click.option("--as", "issuer", default=None, help="Show only this party's budget.")
@debug_option
def budget(federation: str, issuer: str | None, debug: bool) -> None:
    """Show the differential-privacy budget ledger: spent and left per issuer, and recent charges."""

    def show(engine) -> None:
        budgets = engine.policy.budgets
        if issuer is not None:
            engine.check_issuer(issuer)
        if not budgets:
            click.echo("no [privacy] budgets in this federation: differential privacy is off")
            return
        for name, b in sorted(budgets.items()):
            if issuer not in (None, name):
                continue
            spent = engine.ledger.spent(name)
            click.echo(f"{name}: ε spent {spent.epsilon:g} of {b.epsilon:g} ({b.epsilon - spent.epsilon:g} left), "
                       f"δ spent {spent.delta:g} of {b.delta:g}, {spent.queries} queries charged "
                       f"({b.noise} noise, ε={b.query_epsilon:g} per query)")
        for who, eps, delta, sql, _ in engine.ledger.history(issuer):
            click.echo(f"  {who}  ε={eps:g} δ={delta:g}  {sql}")

    _with_engine(federation, debug, show)


@main.command()
@federation_option
@issuer_option
@click.option("-c", "--command", "commands", multiple=True, help="Run this statement and exit (repeatable).")
@click.option("-f", "--file", "script", type=click.Path(exists=True, dir_okay=False), help="Run a script and exit.")
@click.option("--format", "fmt", type=click.Choice(sorted(FORMATS)), default="table", show_default=True)
@click.option("--vi", is_flag=True, help="vi key bindings (emacs by default).")
@click.option("--history", type=click.Path(dir_okay=False), default=str(Path.home() / ".sqlsecure_history"),
              show_default=True)
@click.option("--no-pager", is_flag=True, help="Never page long results.")
@write_option
@debug_option
def shell(federation, issuer, commands, script, fmt, vi, history, no_pager, write, debug) -> None:
    """Interactive SQL shell as ISSUER; with -c or -f (or a pipe) it runs statements and exits 1 on error."""
    from sqlsecure.shell import Shell, interactive, split_statements

    def session(engine) -> bool:
        engine.check_issuer(issuer)
        sh = Shell(engine, issuer, fmt=fmt, pager=not no_pager, debug=debug, progress=sys.stderr.isatty())
        if commands or script or not sys.stdin.isatty():
            text = "\n".join(commands) if commands else (
                Path(script).read_text(encoding="utf-8") if script else sys.stdin.read())
            statements = split_statements(text if not commands else ";\n".join(c.rstrip(";") for c in commands))
            for statement in statements:
                sh.run(statement)
                if sh.failed:
                    break
        else:
            interactive(sh, Path(history), vi)
        return sh.failed

    if _with_engine(federation, debug, session, writer=issuer if write else None):
        sys.exit(1)


@main.command()
@federation_option
@click.option("--as", "party", required=True, help="The party whose audit log to print.")
@click.option("--since", help="Only entries from this time on: an ISO 8601 date or time, or 30m, 12h, 7d back.")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON lines, as stored.")
@debug_option
def audit(federation: str, party: str, since: str | None, as_json: bool, debug: bool) -> None:
    """Print PARTY's audit log: each query it took part in or refused, what of its data was used and revealed."""
    import json

    from sqlsecure.audit import AuditLog, format_entry, parse_since
    from sqlsecure.errors import ConfigError
    from sqlsecure.federation import load_federation

    try:
        start = parse_since(since) if since else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    try:
        config = load_federation(federation)
        if party not in config.parties:
            raise ConfigError(f"unknown party {party!r}; parties are: {', '.join(config.parties)}")
        settings = config.parties[party].audit
        if settings is None:
            raise ConfigError(f"{config.path}: parties.{party}.audit_dir: not set, so {party} keeps no audit log; "
                              "set it (docs/federation.md)")
        entries = AuditLog(party, settings).entries(start)
    except Exception as exc:
        _fail(exc, debug)
    for entry in entries:
        click.echo(json.dumps(entry, sort_keys=True, ensure_ascii=False) if as_json else format_entry(entry))
    if not entries and not as_json:
        click.echo(f"no entries in {settings.directory}" + (f" since {since}" if since else ""), err=True)


@main.command("enclave-init")
@click.option("--authority", type=click.Path(dir_okay=False), default="enclave-authority.key", show_default=True,
              help="Where to create the simulation test authority's key (kept if it exists).")
def enclave_init(authority: str) -> None:
    """Create a SIMULATION enclave authority and print the [enclave] section for the federation file.

    The measurement printed is this installation's enclave code: parties accept only listed ones."""
    from sqlsecure.executors.tee import create_authority, expected_measurement

    path = Path(authority)
    if not path.exists():
        create_authority(path)
    click.echo(f'[enclave]\nauthority = "{path}"\nmeasurements = ["{expected_measurement().hex()}"]\n'
               'placement = "cost"   # or "always"\n'
               "# SIMULATION: the authority is a local test key, not a hardware platform; see docs/enclave.md")


@main.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@debug_option
def demo(directory: str | None, debug: bool) -> None:
    """Write a demo federation (bank, shop, insurer) into DIRECTORY and run federated queries on it.

    Without DIRECTORY it runs in a temporary directory, removed afterwards."""
    from sqlsecure.demo import in_directory, run_demo, write_demo

    try:
        in_directory(lambda target: run_demo(write_demo(target), click.echo), directory, "sqlsecure-demo-")
    except click.ClickException:
        raise
    except Exception as exc:
        _fail(exc, debug)


@main.command()
@federation_option
@issuer_option
@click.option("--listen", default="127.0.0.1:32010", show_default=True, metavar="HOST:PORT",
              help="Address to listen on (port 0 picks a free port).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="Server certificate chain (PEM).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="Server private key (PEM).")
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False),
              help="File of user:password lines, the users allowed to connect.")
@click.option("--user", help="The one user allowed to connect (with --password).")
@click.option("--password", envvar="SQLSECURE_PASSWORD", help="Password of --user (or $SQLSECURE_PASSWORD).")
@click.option("--log-file", type=click.Path(dir_okay=False),
              help="Append the log (logins, queries, refusals, errors, with user names) here instead of stderr.")
@debug_option
def serve(federation: str, issuer: str, listen: str, tls_cert: str | None, tls_key: str | None,
          password_file: str | None, user: str | None, password: str | None, log_file: str | None,
          debug: bool) -> None:
    """Serve ISSUER's view of the federation as an Arrow Flight SQL endpoint (for dashboards and BI tools).

    Every query is issued as ISSUER and answered only as the grants allow. Clients log in with a user
    name and password (Basic, exchanged for a bearer token); without TLS only a loopback address is allowed.
    Each login (failed or not), query, refusal and error is logged at INFO with the user name.
    """
    import ipaddress

    from sqlsecure.flight_sql import Credentials
    from sqlsecure.flight_sql.server import parse_listen, serve_federation
    from sqlsecure.logs import log_to

    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen") from None
    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if bool(password_file) == bool(user or password) or bool(user) != bool(password):
        raise click.UsageError("give either --password-file or --user with --password")
    if not tls_cert:
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise click.UsageError("without --tls-cert/--tls-key passwords would cross the network in clear: "
                                   "listen on a loopback address or enable TLS")
        click.echo("warning: no TLS; passwords and results travel in clear (loopback only)", err=True)
    try:
        log_to(log_file)
        credentials = Credentials.from_file(password_file) if password_file else Credentials({user: password})
        serve_federation(federation, issuer, host=host, port=port, credentials=credentials, tls_cert=tls_cert,
                         tls_key=tls_key, announce=lambda text: click.echo(text) or sys.stdout.flush())
    except click.ClickException:
        raise
    except Exception as exc:
        _fail(exc, debug)



@main.command("init-certs")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--parties", default="", help="Comma-separated party names (bank,shop,insurer) for network mode.")
@click.option("--actors", default="dealer", show_default=True,
              help="Comma-separated non-data nodes that also get a certificate (dealer, enclave; '' for none).")
@click.option("--base-port", type=int, default=47001, show_default=True,
              help="First port of the printed 127.0.0.1 addresses.")
@click.option("--serve", "for_serve", is_flag=True,
              help="Also make what `sqlsecure serve` needs: server.pem / server.key and a users file.")
@click.option("--server-host", "server_hosts", multiple=True, default=("localhost", "127.0.0.1"), show_default=True,
              help="A name or address clients reach `sqlsecure serve` at (repeatable; with --serve).")
@click.option("--users", default="analyst", show_default=True,
              help="Comma-separated users added to users.txt with random passwords (with --serve).")
@click.option("--federation", "federation", type=click.Path(dir_okay=False, exists=True),
              help="Add the network keys this federation file lacks, in place (comments kept), "
                   "instead of printing them.")
def init_certs(directory: str, parties: str, actors: str, base_port: int, for_serve: bool,
               server_hosts: tuple[str, ...], users: str, federation: str | None) -> None:
    """Create a TEST federation CA (or reuse DIRECTORY's) and a certificate + key per party in DIRECTORY.

    Prints the network keys for the federation file, or with --federation adds the missing ones to it.
    With --serve it also makes the Flight SQL server's certificate and users file and prints the
    `sqlsecure serve` command. Each key file is created with mode 600; in a real federation each party
    keeps its own key and the CA is run by whoever admits members."""
    from sqlsecure.certs import SERVER, USERS, init_certs as make, server_certificate, write_users
    from sqlsecure.federation import NAME

    names = [n.strip() for n in parties.split(",") if n.strip()]
    extra = [n.strip() for n in actors.split(",") if n.strip()] if names else []
    bad = [n for n in names + extra if not NAME.match(n)]
    if bad or not (names or for_serve):
        raise click.BadParameter(f"party names are identifiers: {', '.join(bad) or '(none given; or use --serve)'}",
                                 param_hint="--parties")
    if set(extra) - {"dealer", "enclave"}:
        raise click.BadParameter("actors are dealer and/or enclave", param_hint="--actors")
    user_names = [u.strip() for u in users.split(",") if u.strip()]
    if for_serve and (not user_names or any(":" in u or not u.isprintable() or " " in u for u in user_names)):
        raise click.BadParameter("user names without ':' or spaces, comma-separated", param_hint="--users")
    target = Path(directory)
    base = Path(federation).resolve().parent if federation else None

    def shown(path: Path) -> str:  # relative to the federation file, which reads its paths so
        return os.path.relpath(path.resolve(), base) if base else str(path)

    try:
        if names:
            make(target, names + extra)
            sections = {"federation": {"ca": shown(target / "ca.pem")}}
            for i, name in enumerate(names + extra):
                sections[f"parties.{name}" if name in names else name] = {
                    "address": f"127.0.0.1:{base_port + i}", "certificate": shown(target / f"{name}.pem"),
                    "private_key": shown(target / f"{name}.key")}
            _show_sections(sections, federation)
        if for_serve:
            server_certificate(target, list(server_hosts))
            added = write_users(target / USERS, user_names)
    except Exception as exc:
        _fail(exc, False)
    if for_serve:
        click.echo(f"# sqlsecure serve: {target / SERVER}.pem / .key for {', '.join(server_hosts)}; clients trust "
                   f"{target / 'ca.pem'}; users in {target / USERS}"
                   + (f" (new: {', '.join(added)})" if added else ""))
        click.echo(f"sqlsecure serve -F {federation or 'federation.toml'} --as PARTY --listen 127.0.0.1:32010 "
                   f"--tls-cert {target / SERVER}.pem --tls-key {target / SERVER}.key "
                   f"--password-file {target / USERS}")


def _show_sections(sections: dict[str, dict[str, str]], federation: str | None) -> None:
    """Print the sections as TOML, or add the keys the federation file lacks and say which."""
    from sqlsecure.certs import merge_sections, toml_string

    if federation:
        added = merge_sections(federation, sections)
        click.echo(f"updated {federation}: added {', '.join(added)}" if added
                   else f"{federation} already has every network key (kept as it is)")
        return
    lines = ["# add to the federation file (it reads these paths relative to itself; or use --federation FILE):"]
    for section, keys in sections.items():
        lines += [f"[{section}]", *(f"{k} = {toml_string(v)}" for k, v in keys.items()), ""]
    click.echo("\n".join(lines).rstrip())


@main.group()
def party() -> None:
    """Network mode: run a party (or the dealer / enclave) as its own service; query through them."""


@party.command("serve")
@federation_option
@click.option("--name", required=True, help="The party to serve (or 'dealer' / 'enclave').")
@click.option("--timeout", type=float, help="Seconds a silent peer may take (default: federation.network_timeout).")
@click.option("--log-file", type=click.Path(dir_okay=False),
              help="Append the log (its database's and protocols' errors, in full) here instead of stderr.")
@debug_option
def party_serve(federation: str, name: str, timeout: float | None, log_file: str | None, debug: bool) -> None:
    """Serve NAME's part of federated queries over Arrow Flight with mutual TLS (docs/network.md).

    Opens only NAME's own data. Runs until SIGTERM or Ctrl-C. Its log (INFO and up: a failure's full
    text, which never crosses to another party) goes to stderr or --log-file."""
    from sqlsecure.errors import OperationalError
    from sqlsecure.logs import log_to
    from sqlsecure.party_service import PartyService

    try:
        log_to(log_file)
        service = PartyService(federation, name, timeout=timeout)
    except OSError as exc:  # e.g. the port is taken
        _fail(OperationalError(f"cannot serve {name}: {exc}"), debug)
    except Exception as exc:
        _fail(exc, debug)
    click.echo(f"{name} serving on {service.config.nodes[name].address} (mutual TLS)")
    sys.stdout.flush()
    service.serve_forever()


@party.command("query")
@federation_option
@issuer_option
@click.option("--format", "fmt", type=click.Choice(sorted(FORMATS)), default="table", show_default=True)
@debug_option
@click.argument("sql")
def party_query(federation: str, issuer: str, fmt: str, debug: bool, sql: str) -> None:
    """Run a federated query as ISSUER over the parties' running services (network mode)."""
    from sqlsecure.engine import Engine

    try:
        with Engine(federation, runtime="network", identity=issuer) as engine:
            text = _answer(engine.execute(sql, issuer), fmt)
    except click.ClickException:
        raise
    except Exception as exc:
        _fail(exc, debug)
    click.echo(text)


if __name__ == "__main__":
    main()
