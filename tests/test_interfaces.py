"""The DB-API driver, the command line, the demo, the packaging and other dialects."""

import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

import sqlsecure
from sqlsecure.cli import main

ROOT = Path(__file__).resolve().parent.parent
JOIN_COUNT = "SELECT COUNT(*) AS n FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id"


def test_dbapi(federation_dir):
    assert (sqlsecure.apilevel, sqlsecure.paramstyle) == ("2.0", "qmark")
    with sqlsecure.connect(federation_dir / "federation.toml", party="bank") as con:
        assert con.Error is sqlsecure.Error and con.ProgrammingError is sqlsecure.ProgrammingError
        cur = con.cursor()
        with pytest.raises(sqlsecure.InterfaceError):
            cur.fetchone()
        assert cur.execute("SELECT region, COUNT(*) AS n FROM bank.customers GROUP BY region ORDER BY region") is cur
        assert [d[0] for d in cur.description] == ["region", "n"] and len(cur.description[0]) == 7
        assert cur.rowcount == 4
        first = cur.fetchone()
        assert first[0] == "east"
        assert len(cur.fetchmany(2)) == 2 and len(cur.fetchall()) == 1 and cur.fetchone() is None
        assert cur.to_arrow_table().num_rows == 4
        n = con.execute(JOIN_COUNT).fetchone()[0]
        assert n > 0
        assert "PSI(bank, shop)" in con.explain(JOIN_COUNT)
        rows = con.execute("EXPLAIN " + JOIN_COUNT).fetchall()
        assert any("PSI" in r[0] for r in rows)
        cur.execute("SELECT name FROM bank.customers WHERE region = ? AND age > ?", ("north", 30))
        assert cur.rowcount > 0 and cur.description[0][1] == sqlsecure.STRING
        assert cur.execute("SELECT COUNT(*) FROM bank.customers").description[0][1] == sqlsecure.NUMBER
        with pytest.raises(sqlsecure.ProgrammingError, match="parameter"):
            cur.execute("SELECT * FROM bank.customers WHERE id = ?", ())
        with pytest.raises(sqlsecure.NotSupportedError):
            cur.callproc("p")
        reader = cur.execute("SELECT * FROM bank.customers").to_arrow_reader(batch_size=10)
        assert sum(b.num_rows for b in reader) == cur.rowcount
    with pytest.raises(sqlsecure.InterfaceError):
        con.cursor()


def test_connect_unknown_party(federation_dir):
    with pytest.raises(sqlsecure.ConfigError):
        sqlsecure.connect(federation_dir / "federation.toml", party="nobody")


def test_cli_query_and_explain(federation_dir):
    fed = str(federation_dir / "federation.toml")
    runner = CliRunner()
    result = runner.invoke(main, ["query", "-F", fed, "--as", "bank", "--format", "csv", JOIN_COUNT])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "n" and int(result.output.splitlines()[1]) > 0
    result = runner.invoke(main, ["query", "-F", fed, "--as", "bank", "--format", "json", JOIN_COUNT])
    assert result.exit_code == 0 and '"n":' in result.output
    result = runner.invoke(main, ["explain", "-F", fed, "--as", "bank", JOIN_COUNT])
    assert result.exit_code == 0 and "PSI(bank, shop)" in result.output and "what each party learns" in result.output


def test_cli_errors_are_one_line(federation_dir):
    result = CliRunner().invoke(main, ["query", "-F", str(federation_dir / "federation.toml"), "--as", "bank",
                                       "SELECT * FROM bank.nothing"])
    assert result.exit_code == 1
    assert "error: PlanError: unknown table bank.nothing" in result.output and "Traceback" not in result.output


def test_demo_runs(tmp_path):
    result = CliRunner().invoke(main, ["demo", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert result.output.count("PSI(") >= 3 and "refused: PolicyViolation" in result.output
    assert (tmp_path / "demo" / "federation.toml").exists()


def test_every_package_folder_is_in_the_build_config():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = set(config["package-dir"].values())
    listed = set(config["packages"])
    folders = {p.parent.relative_to(ROOT).as_posix() for p in ROOT.glob("*/**/__init__.py")
               if not any(part.startswith((".", "build", "tests")) for part in p.relative_to(ROOT).parts)}
    folders |= {p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name not in ("tests",)}
    assert folders <= mapped, f"package folders missing from package-dir: {folders - mapped}"
    assert set(config["package-dir"]) == listed


@pytest.mark.parametrize("dialect, sql", [
    ("postgres", "SELECT COUNT(*)::BIGINT AS n FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id"),
    ("mysql", "SELECT COUNT(*) AS n FROM `bank`.`customers` c JOIN `shop`.`orders` o ON c.id = o.customer_id"),
])
def test_other_dialects(tmp_path, make_federation, dialect, sql):
    path = make_federation(tmp_path, parties=("bank", "shop"), dialect=dialect)
    with sqlsecure.connect(path, party="bank") as con:
        assert con.execute(sql).fetchone()[0] > 0


def test_examples_run(tmp_path):
    import subprocess
    import sys

    for script in sorted((ROOT / "examples").glob("*.py")):
        done = subprocess.run([sys.executable, str(script), str(tmp_path / script.stem)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{script.name}:\n{done.stderr}"
        assert done.stdout.strip()


def test_parameters_stay_literals(federation_dir):
    with sqlsecure.connect(federation_dir / "federation.toml", party="bank") as con:
        attack = "x' OR '1'='1"
        assert con.execute("SELECT COUNT(*) FROM bank.customers WHERE name = ?", (attack,)).fetchone()[0] == 0
        assert con.execute("SELECT COUNT(*) FROM bank.customers WHERE name = ?", ("c1",)).fetchone()[0] == 1
        drop = "'; DROP TABLE customers; --"
        con.execute("SELECT COUNT(*) FROM bank.customers WHERE name = ?", (drop,))
        assert con.execute("SELECT COUNT(*) FROM bank.customers").fetchone()[0] > 0
        cur = con.cursor().executemany("SELECT COUNT(*) FROM bank.customers WHERE age > ?", [(20,), (70,)])
        assert cur.fetchone()[0] < 60


def test_writes_on_the_issuers_own_database(tmp_path, make_federation):
    path = make_federation(tmp_path, parties=("bank", "shop"))
    with sqlsecure.connect(path, party="bank") as con:
        cur = con.cursor()
        cur.execute("CREATE TABLE notes (id INTEGER, text VARCHAR)")
        assert cur.execute("INSERT INTO notes VALUES (?, ?), (2, 'b')", (1, "a")).rowcount == 2
        assert cur.execute("UPDATE notes SET text = 'z' WHERE id = 2").rowcount == 1
        assert cur.execute("SELECT text FROM notes ORDER BY id").fetchall() == [("a",), ("z",)]
        assert cur.execute("DELETE FROM bank.notes WHERE id = 1").rowcount == 1
        cur.execute("CREATE TABLE spend AS SELECT o.category, COUNT(*) AS n FROM bank.customers c "
                    "JOIN shop.orders o ON c.id = o.customer_id GROUP BY o.category")
        assert len(cur.execute("SELECT * FROM spend").fetchall()) == 3
        cur.execute("INSERT INTO notes SELECT COUNT(*), 'orders' FROM bank.customers c JOIN shop.orders o "
                    "ON c.id = o.customer_id")
        assert cur.execute("SELECT COUNT(*) FROM notes").fetchone()[0] == 2
        for statement, error in [("INSERT INTO shop.orders VALUES (1, 1, 1.0, 'x', 'y')", sqlsecure.PolicyViolation),
                                 ("DROP TABLE shop.orders", sqlsecure.PolicyViolation),
                                 ("CREATE TABLE x AS SELECT * FROM read_csv('/etc/passwd')", sqlsecure.PlanError),
                                 ("CREATE VIEW v AS SELECT 1", sqlsecure.NotSupportedError),
                                 ("ATTACH '/tmp/x.duckdb'", sqlsecure.PlanError)]:
            with pytest.raises(error):
                cur.execute(statement)
        cur.execute("DROP TABLE notes")
        with pytest.raises(sqlsecure.PlanError):
            cur.execute("SELECT * FROM notes")
    with sqlsecure.connect(path, party="shop") as shop:  # the bank's in-memory tables are the bank's alone
        with pytest.raises(sqlsecure.PolicyViolation):
            shop.execute("DELETE FROM bank.customers")


def test_analyst_session_transcript(tmp_path):
    """examples/analyst_session.sql, run through the shell on the demo federation, prints exactly
    examples/analyst_session.out (and stops with exit code 1 at the refused query)."""
    import subprocess

    from sqlsecure.demo import write_demo

    federation = write_demo(tmp_path / "demo")
    sqlsecure_cli = str(Path(sys.executable).with_name("sqlsecure"))
    done = subprocess.run([sqlsecure_cli, "shell", "-F", str(federation), "--as", "bank", "-f",
                           str(ROOT / "examples" / "analyst_session.sql")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1 and "PolicyViolation" in done.stderr
    assert done.stdout == (ROOT / "examples" / "analyst_session.out").read_text()
