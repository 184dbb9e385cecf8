"""`sqlsecure shell`: an interactive SQL shell for one party of a federation (psql / duckdb CLI style).

Statements end with `;` and may span lines; meta commands start with a backslash (or `.tables`).
Results print as an aligned table (or unicode, csv, json, markdown, vertical); long results go
through a pager; errors print as one message with the query position marked, never a traceback
(`--debug` shows it); an unknown column names the nearest ones in scope. Tab completes from the
context (tables and views after FROM / JOIN, the columns of the statement's tables); no menu pops up
while typing. Writes need `--write` (the issuer's own database). Ctrl-C cancels a running query and
keeps the session; Ctrl-D leaves.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import threading
import time
import traceback
from pathlib import Path

import click
import pyarrow as pa
from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.document import Document
from sqlglot import exp
from sqlglot.dialects import Dialect
from sqlglot.errors import SqlglotError
from sqlglot.lineage import lineage
from sqlglot.optimizer.qualify import qualify
from sqlglot.tokens import TokenType

from sqlsecure.cli import refuse_write
from sqlsecure.errors import PlanError, unexpected
from sqlsecure.formatting import FORMATS, affected
from sqlsecure.planner.parse import parse_statement
from sqlsecure.planner.views import expand_views
from sqlsecure.policy.grants import Constraint, ColumnRef

HELP = """\
  \\d  or .tables      every party's tables and the federation's views, with their columns' types
  \\d NAME             one table's or view's columns: type, and what you may learn of each
                      (NAME as party.table, a view, or your own table's name)
  \\explain SQL        the plan: devices, what moves between parties, who learns what
  \\policy             the grants that concern you, given and received
  \\budget             your differential-privacy budget
  \\format NAME        table | unicode | csv | json | markdown | vertical
  \\x                  toggle vertical display
  \\timing             toggle timing of each statement
  \\pager on|off       page long results
  \\help or \\?         this help
  \\q                  quit"""

EXPLAIN_USAGE = """\
usage: \\explain SQL
  the plan of the query SQL, without running it: each party's pushed-down SQL, each secure operator and
  its device, what crosses between which parties, what each party learns. Example:
  \\explain SELECT COUNT(*) FROM bank.customers"""

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
        """The statement's line with a caret under the position an error names (sqlglot names a token by
        its last character: with the token quoted as `near 'TOKEN'`, the caret goes to its first)."""
        found = re.search(r"[Ll]ine:? (\d+), [Cc]ol(?:umn)?:? (\d+)", message)
        if not found or not sql:
            return None
        line, col = int(found.group(1)), int(found.group(2))
        lines = sql.splitlines()
        if not 1 <= line <= len(lines):
            return None
        near = re.search(r"near '([^']+)'", message)
        token = near.group(1) if near else ""
        if token and col >= len(token) and lines[line - 1][col - len(token):col] == token:
            col -= len(token) - 1
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
            self._check_statement(sql)
            result = self._execute(sql)
        except KeyboardInterrupt:
            self.failed = True
            print("cancelled: nothing was revealed", file=self.err, flush=True)
            return
        except Exception as exc:  # an engine error, or (safety net) what it stands for
            self.error(with_column_hint(exc, sql, Relations(self.engine, self.party)), sql)
            return
        try:
            self._report(result, started)
        except Exception as exc:
            self.error(exc, sql)

    def _check_statement(self, sql: str) -> None:
        """Refusals the shell words better than the engine: a leading word that is no keyword, a write."""
        error = leading_word_error(sql, self.engine.config.dialect)
        if error is not None:
            raise error
        refuse_write(self.engine, sql, self.party, "the shell")

    def _report(self, result, started: float) -> None:
        """Show a statement's result (rows, or the rows a write affected) and, with \\timing, its time."""
        if result.table is not None:
            self.show(result.table)
            if (result.table.schema.metadata or {}).get(b"sqlsecure.enclave.simulated") == b"true":
                self.echo("(computed in a SIMULATED enclave: no hardware protection)")
            for notice in result.notices:  # e.g. what the minimum group size withholds; on stderr, as psql
                print(f"NOTICE: {notice}", file=self.err, flush=True)
        else:
            self.echo(affected(result.rowcount))
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
            self.error(with_column_hint(exc, arg, Relations(self.engine, self.party)), arg)

    def help(self, _: str) -> None:
        self.echo(HELP)

    def describe(self, name: str) -> None:
        """`\\d`: every table and view with its columns' types; `\\d NAME`: one relation's columns, their
        types and what you may learn of each (the grant to you, or of each column a view reads)."""
        relations = Relations(self.engine, self.party)
        self.show(relations.listing() if not name else relations.columns_table(name))

    def explain(self, sql: str) -> None:
        if not sql.strip(" ;"):
            self.echo(EXPLAIN_USAGE)
            return
        error = leading_word_error(sql.rstrip(";"), self.engine.config.dialect)
        if error is not None:
            raise error
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


STATEMENT_STARTS = ("SELECT", "WITH", "FROM", "VALUES", "EXPLAIN", "CREATE", "INSERT", "UPDATE", "DELETE", "DROP")


def leading_word_error(sql: str, dialect: str) -> PlanError | None:
    """A statement that starts with a plain word (`SELEC region FROM t`, `foo`): sqlglot reads the word as a
    column or an alias and reports a later token, or none; point at the word and name the nearest keyword.
    Statements sqlglot keeps whole as a command (PRAGMA, ...) keep the planner's own refusal."""
    try:
        first = Dialect.get_or_raise(dialect).tokenize(sql)[0]
    except (SqlglotError, IndexError):
        return None
    if first.token_type != TokenType.VAR:
        return None
    try:
        if isinstance(parse_statement(sql, dialect), exp.Command):
            return None
    except PlanError:
        pass
    close = difflib.get_close_matches(first.text.upper(), STATEMENT_STARTS, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else f"a statement starts with {', '.join(STATEMENT_STARTS[:5])}, …"
    column = first.col - len(first.text) + 1
    return PlanError(f"syntax error at line {first.line}, column {column} near '{first.text}': "
                     f"{first.text!r} does not start a statement; {hint}")


UNKNOWN_COLUMN = re.compile(r"^(?:Column '(?P<quoted>[^']+)' could not be resolved|Unknown column: (?P<bare>\S+))")


def with_column_hint(exc: Exception, sql: str, relations: "Relations") -> Exception:
    """An unknown column's error, with the nearest column names of the tables and views the query reads
    (\"did you mean region?\") and, where the planner gave none, the column's position in the query."""
    found = UNKNOWN_COLUMN.match(str(exc)) if isinstance(exc, PlanError) else None
    if found is None:
        return exc
    name = found.group("quoted") or found.group("bare")
    scope = relations.columns_in_scope(sql)
    close = difflib.get_close_matches(name, scope, n=3, cutoff=0.6)
    position = relations.position_of_column(sql, name)
    message = f"unknown column {name}" + (f" at line {position[0]}, column {position[1]}" if position else "")
    if close:
        message += f"; did you mean {' or '.join(close)}?"
    elif scope:
        message += f"; the tables read have {', '.join(sorted(scope)[:12])}"
    hinted = PlanError(message)
    hinted.__cause__ = exc  # --debug still shows where the planner raised it
    return hinted


class Relations:
    """The tables and views one party's shell can name: `party.table`, the federation's views, and the
    party's own tables by bare name (a bare name is a view before an own table, as the planner resolves it)."""

    def __init__(self, engine, party: str):
        self.engine, self.party = engine, party
        self.catalog = engine.catalog

    def tables(self) -> list[str]:
        return [f"{party}.{table}" for party, tables in self.catalog.tables.items() for table in tables]

    def views(self) -> list[str]:
        return list(self.catalog.views)

    def names(self) -> list[str]:
        """Every name a FROM clause may use here."""
        return self.tables() + self.views() + list(self.catalog.tables.get(self.party, {}))

    def resolve(self, name: str) -> tuple[str, str] | None:
        """(party, table) of a table, ("", view) of a view, None if the name is neither."""
        party, _, table = name.rpartition(".")
        if party:
            return (party, table) if self.catalog.has_table(party, table) else None
        if name in self.catalog.views:
            return "", name
        return (self.party, name) if self.catalog.has_table(self.party, name) else None

    def column_names(self, name: str) -> list[str]:
        found = self.resolve(name)
        if found is None:
            return []
        party, table = found
        columns = self.engine.view_columns[table] if not party else self.catalog.columns(party, table)
        return [c for c, _ in columns]

    def _query_tree(self, sql: str) -> exp.Expression | None:
        try:
            return parse_statement(sql, self.engine.config.dialect)
        except PlanError:
            return None

    def columns_in_scope(self, sql: str) -> list[str]:
        """The column names of every table and view the query reads (its CTEs' outputs too)."""
        tree = self._query_tree(sql)
        if tree is None:
            return []
        names = [c.alias_or_name for cte in tree.find_all(exp.CTE) for c in cte.this.selects]
        for table in tree.find_all(exp.Table):
            names += self.column_names(f"{table.db}.{table.name}" if table.db else table.name)
        return list(dict.fromkeys(names))

    def position_of_column(self, sql: str, name: str) -> tuple[int, int] | None:
        """Line and column where the query first names the column (sqlglot's token positions)."""
        tree = self._query_tree(sql)
        for column in tree.find_all(exp.Column) if tree is not None else ():
            meta = column.this.meta if isinstance(column.this, exp.Identifier) else {}
            if column.name == name and "line" in meta:
                return meta["line"], meta["col"] - len(name) + 1
        return None

    def listing(self) -> pa.Table:
        """One row per table and view: its name, kind and columns with their types."""
        names, kinds, columns = [], [], []
        for name in self.tables() + self.views():
            party, table = self.resolve(name)
            typed = self.catalog.columns(party, table) if party else self._view_types(table)
            names.append(name)
            kinds.append("table" if party else "view")
            columns.append(", ".join(f"{c} {t}" for c, t in typed))
        return pa.table({"name": names, "kind": kinds, "columns": columns})

    def columns_table(self, name: str) -> pa.Table:
        """One row per column of NAME: its type and what the connected party may learn of it."""
        found = self.resolve(name)
        if found is None:
            close = difflib.get_close_matches(name, self.names(), n=1)
            hint = f"; did you mean {close[0]}?" if close else "; \\d lists the tables and views"
            raise PlanError(f"no table or view {name}{hint}")
        party, table = found
        if party:
            typed = self.catalog.columns(party, table)
            learn = [self.visibility(ColumnRef(party, table, c)) for c, _ in typed]
        else:
            typed = self._view_types(table)
            learn = [self._view_visibility(table, c) for c, _ in typed]
        return pa.table({"column": [c for c, _ in typed], "type": [t for _, t in typed],
                         f"{self.party} may learn": learn})

    def visibility(self, ref: ColumnRef) -> str:
        """The constraint granted to the connected party on one column (its own: PLAINTEXT)."""
        if ref.party == self.party:
            return "PLAINTEXT (yours)"
        return self.engine.grants.constraint(ref, self.party).value

    def _expanded_view(self, view: str) -> exp.Query:
        dialect = self.engine.config.dialect
        tree = expand_views(exp.select("*").from_(exp.to_table(view)), self.catalog.views)
        return qualify(tree, schema=self.catalog.sqlglot_schema(dialect), dialect=dialect)

    def _view_types(self, view: str) -> list[tuple[str, str]]:
        """The view's columns with the types DuckDB gives them (`?` where they cannot be derived)."""
        return [(name, dtype or "?") for name, dtype in self.engine.view_columns[view]]

    def _view_visibility(self, view: str, column: str) -> str:
        """What the connected party may learn of each table column a view's column is computed from."""
        dialect = self.engine.config.dialect
        node = lineage(column, self._expanded_view(view), schema=self.catalog.sqlglot_schema(dialect),
                       dialect=dialect)
        sources = sorted({ColumnRef(n.source.db, n.source.name, n.name.rpartition(".")[2].strip('"'))
                          for n in node.walk() if isinstance(n.source, exp.Table)}, key=str)
        return "; ".join(f"{ref}: {self.visibility(ref)}" for ref in sources) or "(no table column)"


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


TABLE_REFERENCE = re.compile(r"\b(?:FROM|JOIN)\s+([\w.]+)(?:\s+(?:AS\s+)?(\w+))?", re.IGNORECASE)
TABLE_CONTEXT = re.compile(r"\b(?:FROM|JOIN)\s+(?:[\w.]+\s*,\s*)*$", re.IGNORECASE)


class SqlCompleter(Completer):
    """Context-aware completion: tables and views after FROM / JOIN, `party.` its tables, `alias.` the
    columns of the table it names, elsewhere the columns of the tables the statement reads and keywords."""

    def __init__(self, relations: Relations):
        self.relations = relations

    def candidates(self, text: str, before: str, word: str) -> list[str]:
        """Names that fit where the cursor is (`before`: the text before the word being typed)."""
        aliases = {}
        for name, alias in TABLE_REFERENCE.findall(text):
            if self.relations.resolve(name) is not None:
                aliases[name] = name
                if alias and alias.upper() not in KEYWORDS:
                    aliases[alias] = name
        if TABLE_CONTEXT.search(before):
            return self.relations.names()
        qualifier, dot, _ = word.rpartition(".")
        if dot and qualifier in aliases:
            return [f"{qualifier}.{c}" for c in self.relations.column_names(aliases[qualifier])]
        if dot:
            return [name for name in self.relations.tables() if name.startswith(f"{qualifier}.")]
        columns = [c for name in dict.fromkeys(aliases.values()) for c in self.relations.column_names(name)]
        return list(dict.fromkeys(columns)) + list(KEYWORDS)

    def get_completions(self, document: Document, complete_event):
        word = document.get_word_before_cursor(WORD=True)
        word = re.split(r"[(),=<>+*/-]", word)[-1]
        before = document.text_before_cursor[:len(document.text_before_cursor) - len(word)]
        for candidate in self.candidates(document.text, before, word):
            if candidate.lower().startswith(word.lower()) and candidate != word:
                yield Completion(candidate, start_position=-len(word))


def prompt_session(shell: Shell, history: Path, vi: bool, **io):
    """The prompt: history, SQL highlighting, `;` ends a statement; completion only on Tab, never a menu
    popping up while typing. `io`: prompt_toolkit's input/output (tests)."""
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
    return PromptSession(
        history=FileHistory(str(history)), lexer=PygmentsLexer(SqlLexer),
        completer=SqlCompleter(Relations(shell.engine, shell.party)), complete_while_typing=False,
        multiline=True, key_bindings=keys, vi_mode=vi, prompt_continuation=lambda width, n, soft: "... ".rjust(width),
        **io,
    )


def interactive(shell: Shell, history: Path, vi: bool) -> None:
    session = prompt_session(shell, history, vi)
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
