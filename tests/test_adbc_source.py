"""Parties' data in PostgreSQL and SQLite through ADBC: catalog, types, pushdown, read-only."""

from __future__ import annotations

import decimal
import math
import sqlite3

import duckdb
import pytest

from sqlsecure.connectors.adbc_store import AdbcStore, Source, source_kind
from sqlsecure.errors import ConfigError, OperationalError

ROWS = """
CREATE TABLE orders (order_id INTEGER, customer_id BIGINT, amount NUMERIC(10, 2), category TEXT, odate DATE,
                     score DOUBLE PRECISION, free NUMERIC);
INSERT INTO orders VALUES
  (1, 10, 12.50, 'garden', '2024-01-02', 0.5, 1.25), (2, 10, 7.25, 'tools', '2024-02-03', NULL, NULL),
  (3, 11, NULL, 'garden', NULL, -1.5, 3), (4, NULL, 99999999.99, NULL, '2023-12-31', 2.0, 0.1),
  (5, 12, 0.01, 'Books', '2024-03-04', 1e300, -7);
"""

QUERIES = [
    'SELECT "o"."order_id" AS "order_id", "o"."amount" AS "amount" FROM "orders" AS "o" WHERE "o"."amount" > 5',
    'SELECT SUM("o"."amount") AS "s", COUNT(*) AS "n", MIN("o"."odate") AS "d" FROM "orders" AS "o"',
    'SELECT "o"."category" AS "c", SUM("o"."amount") AS "s" FROM "orders" AS "o" GROUP BY "o"."category"',
    'SELECT AVG("o"."amount") AS "a", "o"."category" || \'!\' AS "c" FROM "orders" AS "o" GROUP BY 2',
    'SELECT "o"."order_id" / 2 AS "h" FROM "orders" AS "o" WHERE "o"."category" < \'h\' AND "o"."order_id" >= 2',
    'SELECT DISTINCT "o"."customer_id" AS "k" FROM "orders" AS "o" WHERE "o"."customer_id" IS NOT NULL',
    'SELECT "a"."order_id" AS "x", "b"."order_id" AS "y" FROM "orders" AS "a" JOIN "orders" AS "b" '
    'ON "a"."customer_id" = "b"."customer_id"',
    'SELECT "o"."category" AS "c" FROM "orders" AS "o" ORDER BY "o"."category" DESC LIMIT 2',
    'SELECT SUM("o"."free") AS "f", MAX("o"."score") AS "m" FROM "orders" AS "o"',
    # an owner's flag and its padded aggregate, as planner/translate.py writes them (finished locally)
    'SELECT "o"."order_id" AS "i", CAST(COALESCE(("o"."category" NOT LIKE \'%a%\'), FALSE) AS BOOLEAN) AS "f" '
    'FROM "orders" AS "o"',
    'SELECT "_g"."k" AS "k", "_g"."n" AS "n", CASE WHEN "_p"."slot" IS NULL THEN ERROR(\'over the bound\') '
    'ELSE "_g"."__slot" IS NOT NULL END AS "v" FROM (SELECT UNNEST(RANGE(LEAST(16, (SELECT COUNT(*) FROM '
    '"orders")))) AS "slot") AS "_p" FULL JOIN (SELECT *, ROW_NUMBER() OVER () - 1 AS "__slot" FROM (SELECT '
    '"o"."customer_id" AS "k", COUNT("o"."order_id") AS "n" FROM "orders" AS "o" WHERE "o"."amount" > 1 '
    'GROUP BY "o"."customer_id") AS "_") AS "_g" ON "_g"."__slot" = "_p"."slot"',
]


@pytest.fixture(scope="module")
def pg_store(postgres):
    postgres.sql(ROWS, database=postgres.database("adbc"))
    store = AdbcStore("shop", Source(postgres.uri("adbc"), schema="public"))
    yield store
    store.close()


@pytest.fixture(scope="module")
def oracle():
    """The same table in DuckDB with the types the store maps to."""
    con = duckdb.connect()
    con.execute(ROWS.replace("DOUBLE PRECISION", "DOUBLE").replace("NUMERIC,", "DOUBLE,")
                .replace("free NUMERIC)", "free DOUBLE)").replace("NUMERIC(10, 2)", "DECIMAL(10, 2)"))
    yield con
    con.close()


def rows(table):
    return sorted(map(repr, table.to_pylist()))


def close(a, b) -> bool:
    """Equal rows, floats within 1e-12 relative (an unconstrained NUMERIC sums exactly at the source)."""
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(math.isclose(x[k], y[k], rel_tol=1e-12) if isinstance(x[k], float) else x[k] == y[k]
                                     for k in x) for x, y in zip(a, b))


def test_source_kinds():
    assert source_kind("postgresql://u@h/db") == "postgres"
    assert source_kind("sqlite:///tmp/x.db") == "sqlite"
    assert source_kind("grpc+tls://h:1") == "flightsql"
    assert source_kind("data/bank.duckdb") is None


def test_catalog_types_from_the_source(pg_store):
    assert pg_store.schema() == {"orders": [
        ("order_id", "INTEGER"), ("customer_id", "BIGINT"), ("amount", "DECIMAL(10,2)"), ("category", "VARCHAR"),
        ("odate", "DATE"), ("score", "DOUBLE"), ("free", "DOUBLE")]}
    assert pg_store.sizes() == {"orders": 8}


@pytest.mark.parametrize("sql", QUERIES)
def test_answers_and_types_equal_duckdb(pg_store, oracle, sql):
    got = pg_store.query(sql)
    want = oracle.sql(sql).to_arrow_table()
    assert got.schema == want.schema
    if "LIMIT" in sql:  # ORDER BY ... LIMIT: the order itself is the answer
        assert got.to_pylist() == want.to_pylist()
    else:
        assert close(sorted(got.to_pylist(), key=repr), sorted(want.to_pylist(), key=repr))


def test_what_runs_at_the_source(pg_store):
    whole, pushed = pg_store.pushdown(QUERIES[1])
    assert pushed and whole.startswith('SELECT SUM("o"."amount")') and '"public"."orders"' in whole
    fetch, pushed = pg_store.pushdown(QUERIES[4])  # integer division and a text comparison: finished locally
    assert not pushed
    assert fetch == 'SELECT "order_id", "category" FROM "public"."orders" WHERE "order_id" >= 2'


def test_decimal_sums_are_exact(pg_store):
    (total,) = pg_store.query('SELECT SUM("o"."amount") AS "s" FROM "orders" AS "o"').column(0).to_pylist()
    assert total == sum(map(decimal.Decimal, ["12.50", "7.25", "99999999.99", "0.01"]))


def test_the_connection_is_read_only(pg_store):
    with pytest.raises(OperationalError, match="read-only"):
        pg_store._fetch("CREATE TABLE stolen (x INTEGER)")
    with pytest.raises(OperationalError, match="read-only"):
        pg_store.write("DELETE FROM orders")


def test_a_password_file_is_read_not_stored(postgres, pg_store, tmp_path):
    postgres.sql("CREATE ROLE analyst LOGIN PASSWORD 'correct horse'; GRANT SELECT ON orders TO analyst", "adbc")
    secret = tmp_path / "pw"
    secret.write_text("correct horse\n")
    store = AdbcStore("shop", Source(postgres.uri("adbc", user="analyst"), schema="public", password_file=secret))
    try:
        assert "orders" in store.schema()
        assert "correct" not in repr(store.source)
    finally:
        store.close()


def test_sqlite_source(tmp_path):
    path = tmp_path / "shop.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE orders (order_id INTEGER, category TEXT, amount REAL)")
    con.executemany("INSERT INTO orders VALUES (?, ?, ?)", [(1, "a", 1.5), (2, "b", None), (3, "a", 2.0)])
    con.commit()
    con.close()
    store = AdbcStore("shop", Source(f"sqlite://{path}"))
    try:
        assert store.schema() == {"orders": [("order_id", "BIGINT"), ("category", "VARCHAR"), ("amount", "DOUBLE")]}
        got = store.query('SELECT "o"."category" AS "c", SUM("o"."amount") AS "s" FROM "orders" AS "o" '
                          'GROUP BY "o"."category"')
        assert sorted(got.to_pylist(), key=repr) == [{"c": "a", "s": 3.5}, {"c": "b", "s": None}]
        with pytest.raises(OperationalError):
            store._fetch("DELETE FROM orders")
    finally:
        store.close()


def test_sqlite_paths(tmp_path):
    """An absolute path with three slashes or SQLAlchemy's four opens the file; a missing file is a ConfigError
    naming the path (not SQLite's "failed to allocate memory")."""
    path = tmp_path / "odd name.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (a INTEGER)")
    con.commit()
    con.close()
    for uri in (f"sqlite://{path}", f"sqlite:///{path}"):
        store = AdbcStore("shop", Source(uri))
        try:
            assert store.schema() == {"t": [("a", "BIGINT")]}
        finally:
            store.close()
    with pytest.raises(ConfigError, match="no SQLite database at .*missing.sqlite"):
        AdbcStore("shop", Source(f"sqlite://{tmp_path}/missing.sqlite")).schema()
