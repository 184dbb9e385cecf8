"""`sqlsecure query` and the shell are read-only unless --write opens the issuer's own database."""

import pytest
from click.testing import CliRunner

from sqlsecure.cli import main
from sqlsecure.demo import write_demo


@pytest.fixture()
def demo(tmp_path):
    return str(write_demo(tmp_path / "demo", customers=40))


def run(*args):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("statement", ["DELETE FROM customers WHERE age > 30", "DROP TABLE customers",
                                       "INSERT INTO bank.customers SELECT * FROM customers",
                                       "UPDATE customers SET age = 1", "CREATE TABLE t AS SELECT 1 AS x"])
def test_query_is_read_only_and_says_how_to_write(demo, statement):
    result = run("query", "-F", demo, "--as", "bank", statement)
    assert result.exit_code == 1
    assert "error: PlanError: sqlsecure query is read-only" in result.output
    assert "--write" in result.output and "may not write" not in result.output


def test_write_flag_writes_the_issuers_own_database(demo):
    deleted = run("query", "-F", demo, "--as", "bank", "--write", "DELETE FROM customers WHERE customer_id > 30")
    assert deleted.exit_code == 0 and "OK (10 rows affected)" in deleted.output
    count = run("query", "-F", demo, "--as", "bank", "--format", "csv", "SELECT COUNT(*) AS n FROM customers")
    assert count.output.splitlines() == ["n", "30"]


def test_write_flag_never_reaches_another_partys_data(demo):
    result = run("query", "-F", demo, "--as", "bank", "--write", "DELETE FROM shop.orders")
    assert result.exit_code == 1 and "error: PolicyViolation: shop.orders belongs to shop" in result.output


def test_shell_is_read_only_without_write(demo):
    refused = run("shell", "-F", demo, "--as", "bank", "-c", "DELETE FROM customers")
    assert refused.exit_code == 1 and "PlanError: the shell is read-only" in refused.output
    written = run("shell", "-F", demo, "--as", "bank", "--write", "-c", "DELETE FROM customers WHERE age > 0")
    assert written.exit_code == 0 and "OK (40 rows affected)" in written.output


def test_write_flag_refuses_a_write_that_would_be_lost(demo):
    """The shop's tables are files: its database is in memory, gone when the command ends."""
    result = run("query", "-F", demo, "--as", "shop", "--write", "CREATE TABLE t AS SELECT 1 AS x")
    assert result.exit_code == 1
    assert "error: PlanError: shop has no database file in the federation (parties.shop.database)" in result.output
