"""The `sqlsecure` command: query, explain, check, budget, demo."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

from sqlsecure.errors import Error
from sqlsecure.formatting import FORMATS


def _fail(exc: BaseException, debug: bool) -> None:
    if debug:
        raise exc
    click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
    sys.exit(1)


def _with_engine(federation: str, debug: bool, work):
    """Open the federation, run `work(engine)`, and turn engine errors into one line and exit 1."""
    from sqlsecure.engine import Engine

    try:
        with Engine(federation) as engine:
            return work(engine)
    except Error as exc:
        _fail(exc, debug)


federation_option = click.option(
    "-F", "--federation", "federation", required=True, type=click.Path(dir_okay=False),
    help="The federation file (TOML).",
)
issuer_option = click.option("--as", "issuer", required=True, help="The party issuing the query.")
debug_option = click.option("--debug", is_flag=True, help="Show Python tracebacks on errors.")


@click.group()
@click.version_option(package_name="sqlsecure")
def main() -> None:
    """sqlsecure: SQL over several parties' tables, answered without any party seeing another's rows."""


@main.command()
@federation_option
@issuer_option
@click.option("--format", "fmt", type=click.Choice(sorted(FORMATS)), default="table", show_default=True)
@debug_option
@click.argument("sql")
def query(federation: str, issuer: str, fmt: str, debug: bool, sql: str) -> None:
    """Run a federated query as ISSUER and print the result."""
    result = _with_engine(federation, debug, lambda engine: engine.execute(sql, issuer))
    click.echo(FORMATS[fmt](result.table))


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
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@debug_option
def demo(directory: str | None, debug: bool) -> None:
    """Write a demo federation (bank, shop, insurer) into DIRECTORY and run federated queries on it."""
    from sqlsecure.demo import run_demo, write_demo

    target = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="sqlsecure-demo-"))
    try:
        path = write_demo(target)
        run_demo(path, click.echo)
    except Error as exc:
        _fail(exc, debug)


if __name__ == "__main__":
    main()
