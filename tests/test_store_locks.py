"""A party's DuckDB file stays readable by other processes while a DB-API connection that may write it
is open; it is opened for writing only while a write runs, and a lock held elsewhere is named."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import duckdb
import pytest

import sqlsecure
from sqlsecure.errors import OperationalError


@pytest.fixture
def federation(tmp_path):
    database = tmp_path / "bank.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("CREATE TABLE accounts AS SELECT range AS id, range * 10 AS balance FROM range(5)")
    path = tmp_path / "federation.toml"
    path.write_text('[federation]\nname = "locks"\n\n[parties.bank]\ndatabase = "bank.duckdb"\n')
    return path, database


def read_elsewhere(database) -> subprocess.CompletedProcess:
    """Another process reads the file (read-only), as a report or a backup would."""
    code = textwrap.dedent(f"""
        import duckdb
        with duckdb.connect({str(database)!r}, read_only=True) as con:
            print(con.execute("SELECT COUNT(*) FROM accounts").fetchone()[0])
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_other_processes_read_while_a_writable_connection_is_open(federation):
    path, database = federation
    con = sqlsecure.connect(path, "bank")
    try:
        seen = read_elsewhere(database)
        assert seen.returncode == 0, seen.stderr
        assert seen.stdout.strip() == "5"
        con.cursor().execute("INSERT INTO accounts VALUES (5, 50)")
        assert read_elsewhere(database).stdout.strip() == "6"  # the write is on disk, the lock released
        cur = con.cursor().execute("SELECT COUNT(*) FROM bank.accounts")
        assert cur.fetchone() == (6,)
    finally:
        con.close()


def hold(database, read_only: bool) -> subprocess.Popen:
    """Another process that keeps the file open until told to stop (a line on its stdin)."""
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, sys
        con = duckdb.connect({str(database)!r}, read_only={read_only})
        print("held", flush=True)
        sys.stdin.readline()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_write_while_another_process_reads_names_it_and_the_connection_goes_on(federation):
    path, database = federation
    con = sqlsecure.connect(path, "bank")
    try:
        holder = hold(database, read_only=True)
        try:
            with pytest.raises(OperationalError, match=rf"PID {holder.pid}\).*close it"):
                con.cursor().execute("INSERT INTO accounts VALUES (6, 60)")
            assert con.cursor().execute("SELECT COUNT(*) FROM bank.accounts").fetchone() == (5,)
        finally:
            holder.communicate("\n", timeout=60)
        con.cursor().execute("INSERT INTO accounts VALUES (6, 60)")
        assert con.cursor().execute("SELECT COUNT(*) FROM bank.accounts").fetchone() == (6,)
    finally:
        con.close()


def test_opening_a_file_another_process_writes_names_that_process(federation):
    path, database = federation
    holder = hold(database, read_only=False)
    try:
        with pytest.raises(sqlsecure.ConfigError, match=rf"PID {holder.pid}\).*close it"):
            sqlsecure.connect(path, "bank")
    finally:
        holder.communicate("\n", timeout=60)
