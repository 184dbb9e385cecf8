"""Bad input: clear errors of the right class, nothing answered insecurely, nothing outside the federation."""

import re

import duckdb
import pytest

from sqlsecure.errors import DataError, OperationalError, PlanError, PolicyViolation, ProgrammingError

NOT_SUPPORTED = [
    ("SELECT c.name FROM bank.customers c FULL JOIN shop.orders o ON c.id = o.customer_id", "FULL"),
    ("SELECT c.name FROM bank.customers c LEFT JOIN shop.orders o ON c.id = o.customer_id WHERE o.amount IS NULL",
     "reject NULLs"),
    ("SELECT c.region, COUNT(DISTINCT o.amount + c.age) FROM bank.customers c JOIN shop.orders o "
     "ON c.id = o.customer_id GROUP BY c.region", None),
    ("SELECT DISTINCT COUNT(*) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
     "GROUP BY c.region, c.age * o.amount", "DISTINCT"),
    ("SELECT c.name || o.category FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id", "DPIPE"),
    ("SELECT id FROM bank.customers UNION ALL SELECT customer_id FROM shop.orders", "set operations"),
    ("SELECT k FROM (SELECT region AS k FROM bank.customers UNION SELECT category FROM shop.orders) u", "UNION"),
    ("SELECT COUNT(*) FROM bank.customers c, shop.orders o", "cross join"),
    ("SELECT c.id FROM bank.customers c WHERE c.id IN (SELECT customer_id FROM shop.orders o "
     "WHERE o.amount > c.age)", "subquery"),
]

# Answered on the secure placement now (an ungrouped aggregate of shop's rows under a non-aggregating SELECT is
# translated with its group threshold, not gathered at the issuer: planner/gather.py).
TRANSLATED = ["SELECT c.id FROM bank.customers c WHERE c.age > (SELECT AVG(amount) FROM shop.orders)"]


@pytest.mark.parametrize("sql", TRANSLATED)
def test_an_aggregate_of_another_party_under_a_plain_select_is_translated(engine, oracle, sql):
    assert engine.plan(sql, "bank").physical.steps[-1].mode != "tables"
    oracle.check(sql, "bank")


@pytest.mark.parametrize("sql, fragment", NOT_SUPPORTED)
def test_not_yet_supported_is_computed_at_the_issuer(engine, oracle, sql, fragment):
    """The secure placement refuses these (`fragment`); with every column they read PLAINTEXT to the
    issuer (this module's grants) the issuer computes them instead (planner/gather.py); with weaker
    grants they stay refused (tests/test_gather.py)."""
    plan = engine.plan(sql, "bank").physical
    assert plan.steps[-1].mode == "tables" and re.search(fragment or "", plan.notes[0])
    oracle.check(sql, "bank")


@pytest.mark.parametrize("sql, fragment", [
    ("SELEC 1", "syntax error"),
    ("SELECT * FROM nobody.customers", "unknown party 'nobody'"),
    ("SELECT * FROM bank.nothing", "unknown table bank.nothing"),
    ("SELECT * FROM orders", "needs its party"),
    ("SELECT nope FROM bank.customers", "nope"),
    ("INSERT INTO bank.customers VALUES (1)", "only SELECT"),
    ("DELETE FROM bank.customers", "only SELECT"),
    ("COPY bank.customers TO '/tmp/x.csv'", "only SELECT"),
    ("ATTACH '/tmp/x.duckdb'", "only SELECT"),
    ("SELECT * FROM read_csv('/etc/passwd')", "table functions"),
    ("SELECT getenv('HOME') FROM bank.customers", "getenv"),
    ("SELECT 1; SELECT 2", "one statement"),
    ("SELECT region FROM bank.customers GROUP BY", "incomplete GROUP BY"),
    ("SELECT c.region FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id GROUP BY",
     "incomplete GROUP BY"),
])
def test_bad_queries_are_plan_errors(engine, sql, fragment):
    with pytest.raises(PlanError, match=fragment):
        engine.plan(sql, "bank")


def test_plan_error_names_position(engine):
    with pytest.raises(PlanError, match=r"line 2, column"):
        engine.plan("SELECT 1\nFROM bank.nothing", "bank")


def test_errors_are_pep249_classes():
    assert issubclass(PlanError, ProgrammingError) and issubclass(PolicyViolation, ProgrammingError)


def test_party_store_is_locked_down(engine):
    store = engine._stores["bank"]
    for sql in ["SELECT * FROM read_csv('/etc/passwd')", "COPY (SELECT 1) TO '/tmp/sqlsecure-x.csv'",
                "ATTACH '/tmp/sqlsecure-y.duckdb'", "SET enable_external_access = true"]:
        with pytest.raises(OperationalError):
            store.query(sql)
    assert store.query("SELECT COUNT(*) AS n FROM customers").column("n")[0].as_py() > 0


def test_party_executor_reaches_only_its_own_store(engine):
    from sqlsecure.executors.runtime.channel import InProcessChannel
    from sqlsecure.executors.runtime.party import PartyExecutor

    channel = InProcessChannel(engine.parties)
    executor = PartyExecutor("bank", engine._stores["bank"], channel.endpoint("bank"))
    stores = [v for v in vars(executor).values() if type(v).__name__ == "PartyStore"]
    assert stores == [engine._stores["bank"]]
    with pytest.raises(OperationalError):  # the shop's table is not in the bank's DuckDB
        engine._stores["bank"].query("SELECT * FROM orders")


def test_unknown_issuer(engine):
    from sqlsecure.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown party 'mallory'"):
        engine.plan("SELECT 1 FROM bank.customers", "mallory")


def test_duckdb_error_is_operational_not_traceback(engine):
    with pytest.raises((OperationalError, PlanError, DataError)):  # DataError: PEP 249's class for a failed cast
        engine.execute("SELECT CAST(name AS INTEGER) FROM bank.customers", "bank")
    assert isinstance(duckdb.__version__, str)
