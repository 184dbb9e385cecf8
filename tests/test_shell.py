"""The shell, driven as a person would: a real pseudo-terminal (pexpect), and scripts (-c, -f, pipes)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pexpect
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prompt_toolkit.document import Document
from prompt_toolkit.filters import to_filter
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from sqlsecure.engine import Engine
from sqlsecure.shell import Relations, Shell, SqlCompleter, prompt_session

SQLSECURE = str(Path(sys.executable).with_name("sqlsecure"))


def shell_env(tmp_path):
    return {**os.environ, "TERM": "xterm", "PAGER": "cat", "HOME": str(tmp_path), "COLUMNS": "120", "LINES": "200"}


@pytest.fixture(scope="module")
def big_federation(tmp_path_factory):
    """Two parties with 80,000 keys each, so a PSI runs long enough to be interrupted."""
    directory = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(5)
    for party in ("a", "b"):
        keys = rng.integers(0, 10**9, 80_000)
        pq.write_table(pa.table({"k": keys, "v": rng.integers(0, 100, 80_000)}), directory / f"{party}.parquet")
    (directory / "federation.toml").write_text(
        '[federation]\nname = "big"\n[parties.a.tables]\nt = "a.parquet"\n[parties.b.tables]\nt = "b.parquet"\n'
        '[[grants]]\nparty = "b"\ncolumns = ["a.t.k"]\nconstraint = "PLAINTEXT_AFTER_JOIN"\n'
        '[[grants]]\nparty = "a"\ncolumns = ["b.t.k"]\nconstraint = "PLAINTEXT_AFTER_JOIN"\n')
    return directory / "federation.toml"


def spawn(federation, tmp_path, party="bank"):
    child = pexpect.spawn(SQLSECURE, ["shell", "-F", str(federation), "--as", party],
                          env=shell_env(tmp_path), cwd=str(tmp_path), encoding="utf-8", timeout=30,
                          dimensions=(200, 120))
    child.expect(f"{party}>")
    return child


def test_interactive_session(federation_dir, tmp_path):
    child = spawn(federation_dir / "federation.toml", tmp_path)
    child.sendline("SELECT region, COUNT(*) AS n")  # a statement over two lines
    child.sendline("FROM bank.customers GROUP BY region ORDER BY region;")
    child.expect(r"east\s+\|\s+\d+")
    child.expect(r"\(4 rows\)")
    child.expect("bank>")
    child.sendline("\\d bank.customers")
    child.expect("income")
    child.expect("bank>")
    child.sendline("\\timing")
    child.expect("timing is on")
    child.sendline("SELECT COUNT(*) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id;")
    child.expect(r"Time: [\d.]+ ms")
    child.sendline("SELECT nope FROM bank.customers;")
    child.expect("ERROR: PlanError")
    child.expect(r"\^")
    child.expect("bank>")
    child.send("SELECT COUNT(*) FROM bank.custo")
    child.send("\t")  # completion from the catalog
    child.expect("bank.customers")
    child.sendline(";")
    child.expect(r"\(1 row\)")
    child.sendline("\\q")
    child.expect(pexpect.EOF)
    assert (tmp_path / ".sqlsecure_history").read_text().count("SELECT") >= 3  # history persists


# Loaded by the shell's Python (sitecustomize on PYTHONPATH): party b holds its part of the query until the
# user cancels, while party a runs the real PSI and waits for b's messages. So the query is always still
# running when Ctrl-C arrives, however fast the machine; nothing in the shell or the engine is changed.
HOLD_UNTIL_CANCELLED = """
import threading

from sqlsecure.executors.runtime import embedded, party

cancelled = threading.Event()
original_run, original_cancel = party.PartyExecutor.run, embedded.EmbeddedRuntime.cancel


def run(self, plan, query_id, *args, **kwargs):
    if self.name == "b" and not cancelled.is_set():
        self._progress(1, len(plan.steps), "held until Ctrl-C")
        if not cancelled.wait(120):
            raise RuntimeError("the test's Ctrl-C never came")
    return original_run(self, plan, query_id, *args, **kwargs)


def cancel(self):
    original_cancel(self)
    cancelled.set()


party.PartyExecutor.run, embedded.EmbeddedRuntime.cancel = run, cancel
print("test hook: party b waits for Ctrl-C")
"""


def test_ctrl_c_cancels_and_the_session_goes_on(big_federation, tmp_path):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(HOLD_UNTIL_CANCELLED)
    env = {**shell_env(tmp_path), "PYTHONPATH": os.pathsep.join(filter(None, [str(hooks),
                                                                              os.environ.get("PYTHONPATH")]))}
    child = pexpect.spawn(SQLSECURE, ["shell", "-F", str(big_federation), "--as", "a"], env=env, cwd=str(tmp_path),
                          encoding="utf-8", timeout=30, dimensions=(200, 120))
    child.expect("test hook: party b waits for Ctrl-C")
    child.expect("a>")
    child.sendline("SELECT COUNT(*) FROM a.t x JOIN b.t y ON x.k = y.k;")
    child.expect(r"\[#")  # the progress bar: the query is running, and stays so until Ctrl-C
    child.sendintr()
    child.expect("cancelled: nothing was revealed", timeout=90)
    child.expect("a>")
    child.sendline("SELECT COUNT(*) AS n FROM a.t;")
    child.expect("80000")
    child.sendline("SELECT COUNT(*) AS n FROM a.t x JOIN b.t y ON x.k = y.k;")  # the next join runs to the end
    child.expect(r"\(1 row\)", timeout=120)
    child.sendline("\\q")
    child.expect(pexpect.EOF)


def test_scripts_and_exit_codes(federation_dir, tmp_path):
    fed = str(federation_dir / "federation.toml")
    ok = subprocess.run([SQLSECURE, "shell", "-F", fed, "--as", "bank", "--format", "csv",
                         "-c", "SELECT COUNT(*) AS n FROM bank.customers"], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.splitlines()[0] == "n"
    script = tmp_path / "s.sql"
    script.write_text("-- a report\n\\format json\nSELECT COUNT(*) AS n\nFROM bank.customers;\nSELECT * FROM bank.nope;\n")
    bad = subprocess.run([SQLSECURE, "shell", "-F", fed, "--as", "bank", "-f", str(script)],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and '"n":' in bad.stdout
    assert "ERROR: PlanError: unknown table bank.nope" in bad.stderr and "Traceback" not in bad.stderr
    piped = subprocess.run([SQLSECURE, "shell", "-F", fed, "--as", "bank"], input="\\x\nSELECT 1 AS one;\n",
                           capture_output=True, text=True)
    assert piped.returncode == 0 and "one | 1" in piped.stdout
    debug = subprocess.run([SQLSECURE, "shell", "-F", fed, "--as", "bank", "--debug", "-c", "SELECT * FROM x.y"],
                           capture_output=True, text=True)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


VIEW = "SELECT region, amount FROM shop.orders UNION ALL SELECT region, income FROM bank.customers"


@pytest.fixture(scope="module")
def viewed_federation(tmp_path_factory, make_federation, grants_for):
    """bank may join on the shop's customer ids and aggregate its amounts; a view over both parties."""
    path = make_federation(tmp_path_factory.mktemp("viewed"), grants_for(
        ("bank", ("shop.orders.customer_id",), "PLAINTEXT_AFTER_JOIN"),
        ("bank", ("shop.orders.amount",), "PLAINTEXT_AFTER_AGGREGATE")))
    path.write_text(path.read_text() + f'\n[views]\nall_regions = "{VIEW}"\n')
    return path


@pytest.fixture(scope="module")
def viewed_engine(viewed_federation):
    with Engine(viewed_federation) as engine:
        yield engine


def converse(federation, tmp_path, exchanges) -> None:
    """Send each line and expect its patterns in order (a pattern matches only output after the last
    match), then quit: a whole session, paced by the shell's own output."""
    child = spawn(federation, tmp_path)
    for line, patterns in exchanges:
        child.sendline(line)
        for pattern in patterns:
            child.expect(pattern)
    child.sendline("\\q")
    child.expect(pexpect.EOF)


def test_describe_lists_types_views_and_your_grants(viewed_federation, tmp_path):
    converse(viewed_federation, tmp_path, [
        ("\\d", [r"name\s+\| kind\s+\| columns",
                 r"bank\.customers\s+\| table \| id BIGINT, name VARCHAR, age INTEGER, income DECIMAL\(12,2\)",
                 r"shop\.orders\s+\| table \| order_id BIGINT, customer_id BIGINT, amount DOUBLE",
                 r"all_regions\s+\| view\s+\| region VARCHAR, amount DOUBLE", "bank>"]),
        ("\\d shop.orders", [r"column\s+\| type\s+\| bank may learn", r"order_id\s+\| BIGINT\s+\| ENCRYPTED_ONLY",
                             r"customer_id\s+\| BIGINT\s+\| PLAINTEXT_AFTER_JOIN",
                             r"amount\s+\| DOUBLE\s+\| PLAINTEXT_AFTER_AGGREGATE", "bank>"]),
        # a bare name: the connected party's own table
        ("\\d customers", [r"income\s+\| DECIMAL\(12,2\)\s+\| PLAINTEXT \(yours\)", "bank>"]),
        # a view: the grant on each column it reads
        ("\\d all_regions", [r"amount\s+\| DOUBLE\s+\| bank\.customers\.income: PLAINTEXT \(yours\); "
                             r"shop\.orders\.amount: PLAINTEXT_AFTER_AGGREGATE", "bank>"]),
        ("\\d shop.order", ["ERROR: PlanError: no table or view shop.order; did you mean shop.orders?"]),
    ])


def test_errors_point_at_the_token_and_suggest(federation_dir, tmp_path):
    converse(federation_dir / "federation.toml", tmp_path, [
        ("SELEC region FROM customers;", [
            r"ERROR: PlanError: syntax error at line 1, column 1 near 'SELEC': .* did you mean SELECT\?",
            r"\r\n  SELEC region FROM customers\r\n  \^\r\n"]),
        ("SELECT regoin FROM bank.customers;", [
            r"unknown column regoin at line 1, column 8; did you mean region\?",
            r"\r\n  SELECT regoin FROM bank.customers\r\n         \^\r\n"]),
        ("SELECT o.amout FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id;",
         [r"unknown column amout at line 1, column 10; did you mean amount\?"]),
        ("\\explain SELECT agee FROM customers", [r"unknown column agee at line 1, column 8; did you mean age\?"]),
        ("\\explain", [r"usage: \\explain SQL", "bank>"]),
    ])


def test_tab_completes_from_the_statements_tables(federation_dir, tmp_path):
    """Each Tab's completion is awaited before the next key, so the test never races the prompt."""
    child = spawn(federation_dir / "federation.toml", tmp_path)
    child.send("SELECT COUNT(*) AS n FROM bank.customers c WHERE c.reg")
    child.expect_exact(".reg")  # the echo (highlighting puts escape codes between the tokens)
    child.send("\t")
    child.expect_exact("ion")
    child.send(" = 'north' AND c.inc")
    child.expect_exact(".inc")
    child.send("\t")
    child.expect_exact("ome")
    child.sendline(" > 0;")
    child.expect(r"\(1 row\)")
    child.sendline("\\q")
    child.expect(pexpect.EOF)


def completions(engine, text, party="bank", cursor=None):
    completer = SqlCompleter(Relations(engine, party))
    document = Document(text, len(text) if cursor is None else cursor)
    return [c.text for c in completer.get_completions(document, None)]


def test_completion_is_context_aware(viewed_engine):
    tables = ["bank.customers", "bank.accounts", "shop.orders", "insurer.policies", "all_regions"]
    assert set(tables) <= set(completions(viewed_engine, "SELECT * FROM "))
    assert set(tables) <= set(completions(viewed_engine, "SELECT * FROM shop.orders o JOIN "))
    assert completions(viewed_engine, "SELECT * FROM bank.acc") == ["bank.accounts"]
    assert completions(viewed_engine, "SELECT * FROM all_reg") == ["all_regions"]
    assert completions(viewed_engine, "SELECT * FROM shop.") == ["shop.orders"]
    assert completions(viewed_engine, "SELECT * FROM bank.customers WHERE inc") == ["income"]
    assert completions(viewed_engine, "SELECT * FROM bank.customers WHERE categ") == []  # shop's column
    assert completions(viewed_engine, "SELECT o.cat FROM shop.orders AS o", cursor=12) == ["o.category"]
    assert completions(viewed_engine, "SELECT amo FROM all_regions", cursor=10) == ["amount"]
    assert completions(viewed_engine, "SELECT balance FROM customers", cursor=14) == []  # accounts' column
    assert completions(viewed_engine, "SEL") == ["SELECT"]


def test_completion_waits_for_tab(viewed_engine, tmp_path):
    shell = Shell(viewed_engine, "bank")
    with create_pipe_input() as pipe:
        session = prompt_session(shell, tmp_path / "history", vi=False, input=pipe, output=DummyOutput())
    assert session.completer is not None and not to_filter(session.complete_while_typing)()


def test_shell_prints_the_group_threshold_notice(federation_dir, tmp_path):
    """Issue 18: "(0 rows)" with its reason; a grouped result says groups below the threshold are withheld."""
    child = spawn(federation_dir / "federation.toml", tmp_path)
    child.sendline("SELECT COUNT(*), SUM(o.amount) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
                   "WHERE o.order_id = 5;")
    child.expect(r"\(0 rows\)")
    child.expect(r"NOTICE: no row: the aggregate covers fewer than 4 distinct rows of shop")
    child.expect("bank>")
    child.sendline("SELECT c.region, COUNT(*) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
                   "GROUP BY c.region;")
    child.expect(r"NOTICE: groups covering fewer than 4 distinct rows of shop are withheld")
    child.expect("bank>")
    child.sendline("\\q")
    child.expect(pexpect.EOF)
