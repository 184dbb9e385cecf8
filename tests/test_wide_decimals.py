"""DECIMAL(p, s) with p > 38 (MySQL allows 65, PostgreSQL 1000; SCQL's regression queries use DECIMAL(64, 30)):
refused at plan time naming the type and DuckDB's limit (planner/dialects/common.refuse_wide_decimals), the
same in check, EXPLAIN and execution, wherever the cast is computed; 38 digits and fewer are computed."""

import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import NotSupportedError

JOINED = "FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id"
WIDE = [
    ("mysql", "SELECT CAST(o.amount AS DECIMAL(64, 30)) AS a FROM shop.orders o", "DECIMAL(64, 30)"),
    ("mysql", f"SELECT SUM(CAST(c.income * o.amount AS DECIMAL(65, 2))) AS a {JOINED}", "DECIMAL(65, 2)"),
    ("mysql", "SELECT CONVERT(o.amount, DECIMAL(39, 4)) AS a FROM shop.orders o", "DECIMAL(39, 4)"),
    ("postgres", f"SELECT o.amount::NUMERIC(50) AS a {JOINED}", "DECIMAL(50)"),
    ("duckdb", f"SELECT TRY_CAST(c.income AS DECIMAL(40, 1)) AS a {JOINED} WHERE o.amount > 3", "DECIMAL(40, 1)"),
]


@pytest.fixture(scope="module")
def engines(tmp_path_factory, make_federation):
    with Engine(make_federation(tmp_path_factory.mktemp("mysql"), dialect="mysql"), timeout=60) as mysql, \
            Engine(make_federation(tmp_path_factory.mktemp("postgres"), dialect="postgres"), timeout=60) as postgres, \
            Engine(make_federation(tmp_path_factory.mktemp("duckdb")), timeout=60) as duckdb:
        yield {"mysql": mysql, "postgres": postgres, "duckdb": duckdb}


@pytest.mark.parametrize("dialect,sql,named", WIDE)
def test_a_decimal_wider_than_38_digits_is_refused_by_name_everywhere(engines, assert_refused, dialect, sql, named):
    engine = engines[dialect]
    refusal = assert_refused(engine, sql, "bank", NotSupportedError, named)
    assert "38" in str(refusal)
    for run in (engine.explain, engine.execute):
        with pytest.raises(NotSupportedError, match=r"more than the 38"):
            run(sql, "bank")


@pytest.mark.parametrize("dialect", ["mysql", "postgres", "duckdb"])
def test_a_decimal_of_38_digits_is_computed(engines, oracle_for, dialect):
    oracle_for(engines[dialect]).check("SELECT o.order_id, CAST(o.amount AS DECIMAL(38, 30)) AS a FROM shop.orders o",
                                       "bank")
