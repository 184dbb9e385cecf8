"""Leak 3 of issue 15: a party's local error crosses to the issuer as its class and the offending
expression of the (public) query, never a data value; the full text stays in the party's own log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import DataError, Error, InternalError, OperationalError, PlanError
from sqlsecure.executors.runtime import worker_main
from sqlsecure.executors.runtime.party import PartyExecutor
from sqlsecure.executors.runtime.worker_processes import WorkerJob, WorkerProcesses

# (query issued by bank, the error's class, the expression it must name); every failure is at shop
AT_SHOP = [
    ("SELECT COUNT(*) FROM shop.orders WHERE order_id = 7 GROUP BY CAST(category AS INT)",
     DataError, "CAST(category AS INT)"),
    ("SELECT SUM(CAST(CAST(amount AS VARCHAR) || 'x' AS DOUBLE)) FROM shop.orders",
     DataError, "CAST(CAST(amount AS"),  # VARCHAR is TEXT in the pushed-down SQL
    ("SELECT CAST(order_id AS TINYINT) * 1000 FROM shop.orders", DataError, "CAST(order_id AS TINYINT)"),
    ("SELECT COUNT(*) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
     "WHERE CAST(o.category AS INT) > 1", DataError, "CAST"),
    ("SELECT COUNT(*) FROM shop.orders WHERE strptime(category, '%Y') IS NOT NULL", OperationalError, "strptime"),
]


@pytest.fixture(scope="module")
def engine(tmp_path_factory, make_federation):
    with Engine(make_federation(tmp_path_factory.mktemp("owner-errors")), timeout=60) as eng:
        yield eng


@pytest.mark.parametrize("sql, cls, expression", AT_SHOP)
def test_a_partys_error_reaches_the_issuer_without_its_values(engine, tables, caplog, contained_error, sql, cls,
                                                              expression):
    with caplog.at_level(logging.ERROR, logger="sqlsecure.party.shop"):
        with pytest.raises(cls) as info:
            engine.execute(sql, "bank")
    values = contained_error.shop_values(tables)
    contained_error.check(str(info.value), "shop", expression, values)
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert not hasattr(info.value, "private_detail")
    owner_log = "\n".join(r.getMessage() for r in caplog.records if r.name == "sqlsecure.party.shop")
    assert "Error" in owner_log and any(contained_error.mentions(owner_log, v) for v in values), owner_log


def test_the_issuer_keeps_its_own_datas_error_text(engine, contained_error):
    """The message is the same for every issuer; the issuer's own values are in `private_detail`."""
    with pytest.raises(DataError) as info:
        engine.execute("SELECT COUNT(*) FROM bank.customers GROUP BY CAST(region AS INT)", "bank")
    contained_error.check(str(info.value), "bank", "CAST(region AS INT)", ["north", "south", "east", "west"])
    assert any(region in info.value.private_detail for region in ("north", "south", "east", "west"))


def test_another_issuer_sees_only_the_expression(engine, contained_error):
    with pytest.raises(DataError) as info:
        engine.execute("SELECT COUNT(*) FROM bank.customers GROUP BY CAST(region AS INT)", "shop")
    contained_error.check(str(info.value), "bank", "CAST(region AS INT)", ["north", "south", "east", "west"])


def test_a_library_exception_at_a_party_crosses_as_its_class_only(engine, monkeypatch, caplog):
    """Python's and pyarrow's messages quote values: only the class name may cross."""
    join = PartyExecutor._join

    def failing_join(self, step, pieces, tag):
        if self.name == "shop":
            raise ValueError("Float value 123.45 was truncated")
        return join(self, step, pieces, tag)

    monkeypatch.setattr(PartyExecutor, "_join", failing_join)
    with caplog.at_level(logging.ERROR, logger="sqlsecure.party.shop"):
        with pytest.raises(InternalError, match="'shop' failed with ValueError") as info:
            engine.execute("SELECT COUNT(*) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id",
                           "bank")
    assert "123.45" not in str(info.value)
    assert any("123.45" in (r.exc_text or "") or r.exc_info and "123.45" in str(r.exc_info[1])
               for r in caplog.records)


def test_error_is_refused_at_plan_time(engine):
    """error(x) raises with its argument as the message: refused before anything runs."""
    with pytest.raises(PlanError, match="error"):
        engine.execute("SELECT error(CAST(amount AS VARCHAR)) FROM shop.orders", "bank")


def test_a_worker_processs_failure_text_stays_in_the_log(tmp_path, caplog):
    """A worker's exception may quote the values of its job: the job's error names only its class."""
    script = tmp_path / "failing_worker.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(Path(worker_main.__file__).parent)!r})\n"
                      "from worker_main import run\n\n"
                      "def load():\n"
                      "    def handle(op, payload):\n"
                      "        raise ValueError(f'cannot encode {payload.decode()}')\n"
                      "    return handle\n\n"
                      "sys.exit(run(sys.argv, load, 'nothing'))\n")
    workers = WorkerProcesses("Test", lambda: [str(script)], handle="TestWorkers", start_seconds=60)
    try:
        with caplog.at_level(logging.ERROR, logger="sqlsecure.workers"):
            with pytest.raises(OperationalError, match=r"failed encoding \(ValueError\)") as info:
                workers.submit(1, WorkerJob((b"123.45",), "encoding", 60)).result(timeout=60)
    finally:
        workers.shutdown()
    assert "123.45" not in str(info.value)
    assert any("123.45" in r.getMessage() for r in caplog.records if r.name == "sqlsecure.workers")


ISSUE_GRANTS = [("bank", ("shop.orders.order_id",), "PLAINTEXT"),
                ("bank", ("shop.orders.amount",), "PLAINTEXT_AFTER_AGGREGATE"),
                ("bank", ("shop.orders.category",), "PLAINTEXT_AFTER_GROUP_BY"),
                ("bank", ("shop.orders.customer_id",), "PLAINTEXT_AFTER_JOIN"),
                ("shop", ("bank.customers.id",), "PLAINTEXT_AFTER_JOIN")]


@pytest.mark.parametrize("sql", [sql for sql, _, _ in AT_SHOP])
def test_under_the_issues_grants_refused_or_contained(tmp_path, make_federation, grants_for, tables,
                                                      contained_error, sql):
    """With the issue's grants a query may be refused by column control or fail at shop; either way
    the error is a PEP 249 class and quotes no value of shop's."""
    with Engine(make_federation(tmp_path, grants_for(*ISSUE_GRANTS)), timeout=60) as engine:
        with pytest.raises(Error) as info:
            engine.execute(sql, "bank")
    leaked = [v for v in contained_error.shop_values(tables) if contained_error.mentions(str(info.value), v)]
    assert not leaked, (leaked[:5], str(info.value))
    assert info.value.__cause__ is None and not hasattr(info.value, "private_detail")
