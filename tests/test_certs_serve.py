"""From `sqlsecure init-certs` to `sqlsecure serve` to a client, as the README's quick start does it:
init-certs makes the server certificate and users file and merges its keys into the federation file
(in place, comments kept, never a second [federation]); serve logs logins, queries, refusals and
errors with the user name, to its --log-file or stderr."""

from __future__ import annotations

import logging
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

adbc_flightsql = pytest.importorskip("adbc_driver_flightsql.dbapi")
import adbc_driver_manager

from sqlsecure.certs import check_issued_by, load_certificate
from sqlsecure.engine import Engine
from sqlsecure.federation import load_federation
from sqlsecure.logs import log_to

GRANTS = (("bank", ("shop.orders.customer_id", "shop.orders.category"), "PLAINTEXT"),
          ("bank", ("shop.orders.amount",), "PLAINTEXT_AFTER_AGGREGATE"),
          ("shop", ("bank.customers.id",), "PLAINTEXT_AFTER_JOIN"))
QUERY = ("SELECT o.category, COUNT(*) AS orders FROM bank.customers c JOIN shop.orders o "
         "ON c.id = o.customer_id GROUP BY o.category ORDER BY o.category")
REFUSED = "SELECT o.amount FROM shop.orders o"


def sqlsecure(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    # run from the test's folder, not the checkout (whose sqlsecure/ is not the installed package)
    return subprocess.run([sys.executable, "-m", "sqlsecure.cli", *args], capture_output=True, text=True, cwd=cwd,
                          check=check, timeout=120)


def users_of(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split(":", 1) for line in lines)


@pytest.fixture()
def federation(tmp_path, make_federation, grants_for) -> Path:
    path = make_federation(tmp_path, grants_for(*GRANTS), parties=("bank", "shop"))
    path.write_text("# the retail federation, kept by the bank\n" + path.read_text().replace(
        "[federation]\n", "[federation]  # shared settings\n", 1))
    return path


def test_init_certs_merges_its_keys_into_the_federation_file(federation, tmp_path):
    out = sqlsecure("init-certs", "certs", "--parties", "bank,shop", "--federation", str(federation),
                    cwd=tmp_path).stdout
    assert "updated" in out and "parties.bank.address" in out and "federation.ca" in out
    text = federation.read_text()
    assert text.startswith("# the retail federation, kept by the bank\n") and "# shared settings" in text
    assert text.count("[federation]") == 1 and 'ca = "certs/ca.pem"' in text
    config = load_federation(federation)  # valid, with every node
    assert set(config.nodes) == {"bank", "shop", "dealer"} and config.nodes["bank"].certificate.is_file()
    again = sqlsecure("init-certs", "certs", "--parties", "bank,shop", "--federation", str(federation),
                      cwd=tmp_path).stdout
    assert "already has every network key" in again and federation.read_text() == text
    ca = load_certificate(tmp_path / "certs" / "ca.pem")  # the CA was reused: old certificates stay valid
    assert check_issued_by(load_certificate(config.nodes["bank"].certificate), ca, "bank") is None


def test_init_certs_prints_sections_when_no_file_is_given(tmp_path):
    out = sqlsecure("init-certs", "c", "--parties", "bank", "--actors", "", cwd=tmp_path).stdout
    sections = tomllib.loads(out)
    assert sections["parties"]["bank"]["certificate"] == "c/bank.pem" and "dealer" not in sections


def test_init_certs_leaves_a_file_it_cannot_merge_into_unchanged(tmp_path):
    federation = tmp_path / "inline.toml"
    federation.write_text('[federation]\nname = "x"\n[parties]\nbank = { database = "bank.duckdb" }\n')
    before = federation.read_text()
    done = sqlsecure("init-certs", "certs", "--parties", "bank", "--federation", str(federation), cwd=tmp_path,
                     check=False)
    assert done.returncode == 1 and "error: ConfigError" in done.stderr and "by hand" in done.stderr
    assert federation.read_text() == before


def test_init_certs_needs_parties_or_serve(tmp_path):
    done = sqlsecure("init-certs", "c", cwd=tmp_path, check=False)
    assert done.returncode == 2 and "--parties" in done.stderr
    done = sqlsecure("init-certs", "c", "--serve", "--users", "a:b", cwd=tmp_path, check=False)
    assert done.returncode == 2 and "--users" in done.stderr


def test_init_certs_then_serve_then_a_client(federation, tmp_path):
    out = sqlsecure("init-certs", "certs", "--serve", "--users", "analyst,viewer", "--federation",
                    str(federation), cwd=tmp_path).stdout
    certs = tmp_path / "certs"
    assert "sqlsecure serve -F" in out and (certs / "server.pem").is_file()
    assert (certs / "users.txt").stat().st_mode & 0o077 == 0 and (certs / "server.key").stat().st_mode & 0o077 == 0
    passwords = users_of(certs / "users.txt")
    assert set(passwords) == {"analyst", "viewer"}
    sqlsecure("init-certs", "certs", "--serve", "--users", "analyst", cwd=tmp_path)
    assert users_of(certs / "users.txt") == passwords  # kept, not regenerated
    log = tmp_path / "serve.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "sqlsecure.cli", "serve", "-F", str(federation), "--as", "bank", "--listen",
         "127.0.0.1:0", "--tls-cert", "certs/server.pem", "--tls-key", "certs/server.key", "--password-file",
         "certs/users.txt", "--log-file", str(log)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=tmp_path)
    try:
        line = server.stdout.readline()
        assert "serving" in line, line + server.stderr.read()
        uri = line.split(" on ")[1].split()[0]

        def connect(user: str, password: str):
            return adbc_flightsql.connect(uri, db_kwargs={
                "username": user, "password": password,
                "adbc.flight.sql.client_option.tls_root_certs": (certs / "ca.pem").read_text(),
                "adbc.flight.sql.rpc.timeout_seconds.query": "60"}, autocommit=True)

        with connect("analyst", passwords["analyst"]) as conn, conn.cursor() as cur:
            cur.execute(QUERY)
            got = cur.fetch_arrow_table()
            with pytest.raises(adbc_driver_manager.Error, match="PolicyViolation"):
                cur.execute(REFUSED)
        with pytest.raises(adbc_driver_manager.Error, match="invalid user name or password"), \
                connect("viewer", "not the password") as conn:
            conn.cursor().execute(QUERY)
    finally:
        server.terminate()
        server.wait(timeout=30)
    with Engine(federation) as engine:
        assert got.to_pylist() == engine.execute(QUERY, "bank").table.to_pylist()
    text = log.read_text()
    assert "login of 'analyst'" in text and "login of 'viewer' failed" in text
    assert f"query by analyst as bank: {QUERY}" in text
    assert "refused for analyst: PolicyViolation" in text
    assert passwords["analyst"] not in text and passwords["viewer"] not in text


def test_serve_logs_to_stderr_by_default():
    root = logging.getLogger("sqlsecure")
    level = root.level
    handler = log_to(None)
    try:
        assert isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr
        assert logging.getLogger("sqlsecure.flight_sql").isEnabledFor(logging.INFO)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.mark.parametrize("command", [["serve", "--as", "bank", "--listen", "127.0.0.1:0", "--user", "u",
                                      "--password", "p"], ["party", "serve", "--name", "bank"]])
def test_an_unwritable_log_file_is_a_clean_error(federation_dir, tmp_path, command):
    from click.testing import CliRunner

    from sqlsecure.cli import main

    where = tmp_path / "missing" / "x.log"
    root = logging.getLogger("sqlsecure")
    handlers = list(root.handlers)
    result = CliRunner().invoke(main, [*command, "-F", str(federation_dir / "federation.toml"),
                                       "--log-file", str(where)])
    for handler in set(root.handlers) - set(handlers):
        root.removeHandler(handler)
    assert result.exit_code != 0 and f"--log-file {where}: cannot append to it" in result.output
    assert "Traceback" not in result.output


def readme_commands(names: set[str]) -> list[list[str]]:
    """The README's `sqlsecure NAME ...` command lines (continuations joined, comments dropped)."""
    import shlex

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text().replace("\\\n", " ")
    lines = [shlex.split(line, comments=True) for line in text.splitlines() if line.startswith("sqlsecure ")]
    return [words[1:] for words in lines if words[1] in names]


def test_the_readme_uses_only_options_these_commands_have():
    from sqlsecure.cli import main

    commands = readme_commands({"init-certs", "serve", "audit"})
    assert {words[0] for words in commands} == {"init-certs", "serve", "audit"}
    for name, *args in commands:
        known = {opt for param in main.commands[name].params for opt in param.opts}
        used = {arg for arg in args if arg.startswith("-")}
        assert used <= known, f"sqlsecure {name}: {used - known}"
