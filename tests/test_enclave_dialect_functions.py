"""Issue 17's functions inside the enclave as the MySQL dialect writes them (`[enclave] placement = "always"`),
each against plain DuckDB over the same rewrite: MySQL's DIV of DOUBLEs (TRUNC), TIMESTAMPDIFF (DuckDB's
DATE_SUB(unit, a, b)), YEAR / DAYOFWEEK (a CAST to DATE first), LAST_DAY, GREATEST / LEAST (NULL where any
argument is); and what stays refused, by name."""

import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import NotSupportedError
from sqlsecure.planner.parse import load_query
from tests.test_enclave_functions import JOIN, enclave_federation


@pytest.fixture(scope="module")
def mysql_enclave(tmp_path_factory, federation_writer, oracle_for, plaintext_grants):
    with Engine(enclave_federation(tmp_path_factory.mktemp("enclave-mysql"), federation_writer, plaintext_grants,
                                   dialect="mysql")) as engine:
        yield oracle_for(engine)


ROWS = {
    "division": "v.amount DIV NULLIF(b.score, 0), v.qty DIV b.n, v.qty MOD b.n, v.amount / b.score, "
                "ROUND(v.qty / b.n, 2)",
    "elapsed": "TIMESTAMPDIFF(DAY, b.born, v.day), TIMESTAMPDIFF(MONTH, b.born, v.day), "
               "TIMESTAMPDIFF(YEAR, b.born, v.when_), DATEDIFF(v.day, b.born)",
    "calendar": "YEAR(b.born) + v.qty, DAYOFWEEK(v.day) + b.n, EXTRACT(MONTH FROM v.day) - MONTH(b.born), "
                "LAST_DAY(v.day) > b.born, ADDDATE(v.day, 3) > b.born, SUBDATE(v.day, INTERVAL 2 DAY) > b.born",
    "conditionals": "IF(b.flag, v.qty, b.n), IFNULL(b.bonus, v.qty), NULLIF(v.qty, b.n), "
                    "CASE WHEN v.qty > 0 THEN b.label LIKE 'p1%' END, v.qty + b.n IN (1, 2, 3), "
                    "v.qty BETWEEN b.n AND 10, CAST(v.amount + b.score AS SIGNED)",
    "extremes": "GREATEST(v.qty, b.n), LEAST(b.bonus, v.coupon), GREATEST(b.bonus, v.coupon, 1), "
                "LEAST(v.when_, b.born), GREATEST(b.price, v.qty, b.bonus)",  # NULL where any argument is
}


def rewritten_in_duckdb(oracle, sql: str):
    """DuckDB's answer over all parties' data to the query as the mysql dialect rewrites it (the meaning
    planner/dialects/mysql.py gives it; tests/test_dialects.py checks that meaning against MySQL's)."""
    engine = oracle.engine
    tree = load_query(sql, engine.catalog, "mysql", issuer="bank", time_zone=engine.config.time_zone)
    return oracle.con.sql(tree.sql(dialect="duckdb")).to_arrow_table()


@pytest.mark.parametrize("group", sorted(ROWS))
def test_mysql_functions_in_the_enclave_match_duckdb(mysql_enclave, rows_match, group):
    sql = f"SELECT b.id, v.qty, {ROWS[group]} {JOIN}"
    assert "TEEU(enclave" in mysql_enclave.engine.explain(sql, "bank")
    assert rows_match(mysql_enclave.engine.execute(sql, "bank").table, rewritten_in_duckdb(mysql_enclave, sql))


@pytest.mark.parametrize("expression, named", [
    ("DATE_SUB('fortnight', b.born, v.day)", "DATE_SUB takes"),
    ("DATE_SUB(b.label, b.born, v.day)", "DATE_SUB takes"),
])
def test_what_the_enclave_does_not_evaluate_is_refused_by_name(tmp_path_factory, federation_writer,
                                                                 plaintext_grants, expression, named):
    path = enclave_federation(tmp_path_factory.mktemp("enclave-duckdb"), federation_writer, plaintext_grants)
    with Engine(path) as engine, pytest.raises(NotSupportedError, match=named):
        engine.explain(f"SELECT b.id, {expression} {JOIN}", "bank")
