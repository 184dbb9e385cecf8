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


def run(self, plan, query_id):
    if self.name == "b" and not cancelled.is_set():
        self._progress(1, len(plan.steps), "held until Ctrl-C")
        if not cancelled.wait(120):
            raise RuntimeError("the test's Ctrl-C never came")
    return original_run(self, plan, query_id)


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
