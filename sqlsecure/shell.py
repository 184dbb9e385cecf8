"""`sqlsecure shell`: an interactive SQL shell for one party of a federation (psql / duckdb CLI style).

Statements end with `;` and may span lines; meta commands start with a backslash (or `.tables`).
Results print as an aligned table (or unicode, csv, json, markdown, vertical); long results go
through a pager; errors print as one message with the query position marked, never a traceback
(`--debug` shows it). Ctrl-C cancels a running query and keeps the session; Ctrl-D leaves.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
import traceback
from pathlib import Path

import click

from sqlsecure.errors import PlanError, unexpected
from sqlsecure.formatting import FORMATS
from sqlsecure.policy.grants import Constraint, ColumnRef

HELP = """\
  \\d  or .tables      tables of every party, with what you may learn of each column
  \\d TABLE            one table's columns (TABLE as party.table, or your own table's name)
  \\explain SQL        the plan: devices, what moves between parties, who learns what
  \\policy             the grants that concern you, given and received
  \\budget             your differential-privacy budget
  \\format NAME        table | unicode | csv | json | markdown | vertical
  \\x                  toggle vertical display
  \\timing             toggle timing of each statement
  \\pager on|off       page long results
  \\help or \\?         this help
  \\q                  quit"""

KEYWORDS = (
    "SELECT FROM WHERE GROUP BY HAVING ORDER LIMIT OFFSET JOIN INNER LEFT RIGHT ON USING AS AND OR NOT "
    "IN IS NULL BETWEEN LIKE CASE WHEN THEN ELSE END DISTINCT COUNT SUM AVG MIN MAX UNION ALL WITH "
    "EXPLAIN CREATE TABLE INSERT INTO VALUES UPDATE SET DELETE DROP ASC DESC ROW_NUMBER RANK OVER PARTITION"
).split()


class Shell:
    """One session: an engine opened as one party, display settings, and the statement loop."""

    def __init__(self, engine, party: str, out=None, err=None, fmt: str = "table", pager: bool = True,
                 debug: bool = False, progress: bool = True):
        self.engine = engine
        self.party = party
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.fmt = fmt
        self.vertical = False
        self.timing = False
        self.pager = pager
        self.debug = debug
        self.progress = progress
        self.failed = False

    # -- output ---------------------------------------------------------------------------------
    def echo(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def error(self, exc: BaseException, sql: str = "") -> None:
        self.failed = True
        if self.debug:
            traceback.print_exception(exc, file=self.err)
        exc = unexpected(exc, "running the statement")
        message = f"ERROR: {type(exc).__name__}: {exc}"
        print(message, file=self.err, flush=True)
        marker = self._marker(str(exc), sql)
        if marker:
            print(marker, file=self.err, flush=True)

    @staticmethod
    def _marker(message: str, sql: str) -> str | None:
        """The statement's line with a caret under the position an error names."""
        found = re.search(r"[Ll]ine:? (\d+), [Cc]ol(?:umn)?:? (\d+)", message)
        if not found or not sql:
            return None
        line, col = int(found.group(1)), int(found.group(2))
        lines = sql.splitlines()
        if not 1 <= line <= len(lines):
            return None
        return f"  {lines[line - 1]}\n  {' ' * max(0, col - 1)}^"

    def show(self, table) -> None:
        text = FORMATS["vertical" if self.vertical else self.fmt](table)
        height = os.get_terminal_size(self.out.fileno()).lines if self._tty() else 0
        if self.pager and height and text.count("\n") + 1 > height - 2:
            click.echo_via_pager(text)
        else:
            self.echo(text)

    def _tty(self) -> bool:
        try:
            return self.out.isatty()
        except (AttributeError, ValueError):
            return False

    # -- statements -----------------------------------------------------------------------------
    def run(self, text: str) -> None:
        """Run one statement or meta command."""
        text = text.strip()
        if not text:
            return
        if text.startswith("\\") or text.startswith(".tables"):
            self.meta(text.rstrip(";"))
            return
        sql = text.rstrip().rstrip(";")
        started = time.perf_counter()
        try:
            result = self._execute(sql)
        except KeyboardInterrupt:
            self.failed = True
            print("cancelled: nothing was revealed", file=self.err, flush=True)
            return
        except Exception as exc:  # an engine error, or (safety net) what it stands for
            self.error(exc, sql)
            return
        try:
            self._report(result, started)
        except Exception as exc:
            self.error(exc, sql)

    def _report(self, result, started: float) -> None:
        """Show a statement's result (rows, or the rows a write affected) and, with \\timing, its time."""
        if result.table is not None:
            self.show(result.table)
            if (result.table.schema.metadata or {}).get(b"sqlsecure.enclave.simulated") == b"true":
                self.echo("(computed in a SIMULATED enclave: no hardware protection)")
            for notice in result.notices:  # e.g. what the minimum group size withholds; on stderr, as psql
                print(f"NOTICE: {notice}", file=self.err, flush=True)
        else:
            self.echo(f"OK ({result.rowcount} row{'s' if result.rowcount != 1 else ''} affected)"
                      if result.rowcount >= 0 else "OK")
        if self.timing:
            self.echo(f"Time: {1000 * (time.perf_counter() - started):.1f} ms")

    def _execute(self, sql: str):
        """Run the query in a worker thread, so Ctrl-C here can cancel it cleanly; while it runs
        longer than half a second, a progress line on stderr shows the current step."""
        box: dict = {}
        runtime = self.engine.runtime
        state = {"step": 0, "steps": 0, "label": "", "drawn": False}

        def report(step: int, steps: int, label: str) -> None:
            if step > state["step"]:
                state.update(step=step, steps=steps, label=label)

        def work() -> None:
            try:
                box["result"] = self.engine.execute(sql, self.party)
            except BaseException as exc:  # re-raised in the shell's thread
                box["error"] = exc

        started = time.perf_counter()
        runtime.progress = report
        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.25)
                elapsed = time.perf_counter() - started
                if self.progress and worker.is_alive() and elapsed > 0.5 and state["steps"]:
                    done, steps = state["step"], state["steps"]
                    bar = "#" * done + "." * (steps - done)
                    print(f"\r[{bar}] {done}/{steps} {state['label']:<24} {elapsed:5.1f}s", end="",
                          file=self.err, flush=True)
                    state["drawn"] = True
        except KeyboardInterrupt:
            runtime.cancel()
            worker.join(30)
            raise
        finally:
            runtime.progress = None
            if state["drawn"]:
                print("\r" + " " * 72 + "\r", end="", file=self.err, flush=True)
        if "error" in box:
            raise box["error"]
        return box["result"]

    # -- meta commands ------------------------------------------------------------------------------
    def meta(self, text: str) -> None:
        command, _, arg = text.partition(" ")
        arg = arg.strip()
        handlers = {
            "\\d": self.describe, ".tables": self.describe, "\\explain": self.explain, "\\policy": self.policy,
            "\\budget": self.budget, "\\format": self.set_format, "\\x": self.toggle_vertical,
            "\\timing": self.toggle_timing, "\\pager": self.set_pager, "\\help": self.help, "\\?": self.help,
        }
        handler = handlers.get(command)
        if handler is None:
            self.failed = True
            print(f"ERROR: unknown command {command}; \\help lists the commands", file=self.err, flush=True)
            return
        try:
            handler(arg)
        except Exception as exc:
            self.error(exc, arg)

    def help(self, _: str) -> None:
        self.echo(HELP)

    def describe(self, name: str) -> None:
        catalog, grants = self.engine.catalog, self.engine.grants
        if not name:
            for party, tables in catalog.tables.items():
                for table, columns in tables.items():
                    seen = [f"{c} ({self._visibility(ColumnRef(party, table, c))})" for c, _ in columns]
                    self.echo(f"{party}.{table}: {', '.join(seen)}")
            return
        party, _, table = name.rpartition(".")
        party = party or self.party
        if not catalog.has_table(party, table):
            raise PlanError(f"no table {party}.{table}")
        for column, dtype in catalog.columns(party, table):
            self.echo(f"  {column:<24} {dtype:<16} you: {self._visibility(ColumnRef(party, table, column))}")

    def _visibility(self, ref: ColumnRef) -> str:
        constraint = self.engine.grants.constraint(ref, self.party)
        return "PLAINTEXT (yours)" if ref.party == self.party else constraint.value

    def explain(self, sql: str) -> None:
        self.echo(self.engine.explain(sql.rstrip(";"), self.party))

    def policy(self, _: str) -> None:
        received = [(ref, c) for (ref, p), c in self.engine.grants.table.items() if p == self.party]
        given = [(ref, p, c) for (ref, p), c in self.engine.grants.table.items() if ref.party == self.party]
        self.echo(f"you ({self.party}) may learn:")
        for ref, c in sorted(received, key=lambda x: str(x[0])) or []:
            self.echo(f"  {ref}: {c.value}")
        if not received:
            self.echo("  nothing of other parties' columns beyond ENCRYPTED_ONLY")
        self.echo("others may learn of your columns:")
        for ref, p, c in sorted(given, key=lambda x: (str(x[0]), x[1])):
            self.echo(f"  {ref} -> {p}: {c.value}")
        if not given:
            self.echo(f"  nothing (every column is {Constraint.ENCRYPTED_ONLY.value} to them)")

    def budget(self, _: str) -> None:
        budget = self.engine.policy.budgets.get(self.party)
        if budget is None:
            self.echo("differential privacy is off for you (no [privacy] budget)")
            return
        spent = self.engine.ledger.spent(self.party)
        self.echo(f"ε spent {spent.epsilon:g} of {budget.epsilon:g} ({budget.epsilon - spent.epsilon:g} left), "
                  f"{spent.queries} queries, {budget.query_epsilon:g} per query, {budget.noise} noise")

    def set_format(self, name: str) -> None:
        if name not in FORMATS:
            raise PlanError(f"unknown format {name!r}; one of {', '.join(FORMATS)}")
        self.fmt = name
        self.echo(f"format is {name}")

    def toggle_vertical(self, _: str) -> None:
        self.vertical = not self.vertical
        self.echo(f"vertical display is {'on' if self.vertical else 'off'}")

    def toggle_timing(self, _: str) -> None:
        self.timing = not self.timing
        self.echo(f"timing is {'on' if self.timing else 'off'}")

    def set_pager(self, arg: str) -> None:
        self.pager = arg != "off"
        self.echo(f"pager is {'on' if self.pager else 'off'}")


def split_statements(text: str) -> list[str]:
    """Statements of a script: `;`-terminated SQL (quotes respected) and one-line meta commands."""
    out, buf, quote = [], [], None
    for line in text.splitlines(keepends=True):
        pending = "".join(buf).strip()
        if not pending and line.strip().startswith(("\\", ".tables")):
            out.append(line.strip())
            buf = []
            continue
        if not pending and line.strip().startswith("--"):
            continue
        for ch in line:
            if quote:
                quote = None if ch == quote else quote
            elif ch in "'\"":
                quote = ch
            elif ch == ";":
                out.append("".join(buf).strip() + ";")
                buf = []
                continue
            buf.append(ch)
    if "".join(buf).strip():
        out.append("".join(buf).strip())
    return [s for s in out if s.strip(";").strip()]


def completer_for(engine):
    from prompt_toolkit.completion import WordCompleter

    words = list(KEYWORDS) + list(engine.catalog.tables)
    for party, tables in engine.catalog.tables.items():
        for table, columns in tables.items():
            words.append(f"{party}.{table}")
            words += [c for c, _ in columns]
    return WordCompleter(sorted(set(words)), ignore_case=True, WORD=True)


def interactive(shell: Shell, history: Path, vi: bool) -> None:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.key_binding import KeyBindings
    from prompt_toolkit.lexers import PygmentsLexer
    from pygments.lexers.sql import SqlLexer

    keys = KeyBindings()

    @keys.add("enter")
    def _(event) -> None:
        buffer = event.current_buffer
        text = buffer.text.strip()
        if not text or text.endswith(";") or text.startswith(("\\", ".tables")):
            buffer.validate_and_handle()
        else:
            buffer.insert_text("\n")

    history.parent.mkdir(parents=True, exist_ok=True)
    session = PromptSession(
        history=FileHistory(str(history)), lexer=PygmentsLexer(SqlLexer), completer=completer_for(shell.engine),
        multiline=True, key_bindings=keys, vi_mode=vi, prompt_continuation=lambda width, n, soft: "... ".rjust(width),
    )
    shell.echo(f"sqlsecure shell — {shell.engine.config.name} as {shell.party}. \\help for help, \\q to quit.")
    while True:
        try:
            text = session.prompt(f"{shell.party}> ")
        except KeyboardInterrupt:
            continue
        except EOFError:
            break
        if text.strip() in ("\\q", "\\quit", "exit", "quit"):
            break
        for statement in split_statements(text):
            shell.run(statement)
