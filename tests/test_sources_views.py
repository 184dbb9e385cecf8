"""A federation with one party on PostgreSQL, and federation views over a table partitioned across parties:
answers checked against plain DuckDB over all parties' data (the oracle)."""

from __future__ import annotations

import adbc_driver_postgresql.dbapi as pg
import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import ConfigError

PG_TYPES = {pa.int32(): "INTEGER", pa.int64(): "BIGINT", pa.float64(): "DOUBLE PRECISION", pa.string(): "TEXT"}


def pg_type(dtype: pa.DataType) -> str:
    if pa.types.is_decimal(dtype):
        return f"NUMERIC({dtype.precision}, {dtype.scale})"
    return PG_TYPES[dtype]


def load_into_postgres(uri: str, tables: dict[str, pa.Table]) -> None:
    """CREATE each table with the column types the store maps back exactly, then ingest its rows."""
    with pg.connect(uri) as con:
        with con.cursor() as cur:
            for name, table in tables.items():
                columns = ", ".join(f'"{f.name}" {pg_type(f.type)}' for f in table.schema)
                cur.execute(f'CREATE TABLE "{name}" ({columns})')
                cur.adbc_ingest(name, table, mode="append")
        con.commit()


@pytest.fixture(scope="module")
def pg_federation(tmp_path_factory, postgres, tables, federation_writer, plaintext_grants):
    """bank on PostgreSQL, shop and insurer on their files; every party sees every column (correctness)."""
    directory = tmp_path_factory.mktemp("pg-federation")
    uri = postgres.uri(postgres.database("bank"))
    load_into_postgres(uri, tables["bank"])
    path = federation_writer(directory, tables, plaintext_grants(), parties=("shop", "insurer"))
    text = path.read_text().replace("[parties.shop]", f'[parties.bank]\ndatabase = "{uri}"\n\n[parties.shop]', 1)
    path.write_text(text.replace('"shop.*.*", "insurer.*.*"', '"shop.*.*", "insurer.*.*"'))
    path.write_text(path.read_text() + "\n" + plaintext_grants(("bank", "shop", "insurer")))
    return path


@pytest.fixture(scope="module")
def pg_engine(pg_federation):
    with Engine(pg_federation, timeout=60) as engine:
        yield engine


@pytest.fixture(scope="module")
def pg_oracle(pg_engine, oracle_for):
    return oracle_for(pg_engine)


PG_QUERIES = [
    "SELECT COUNT(*) AS n, SUM(income) AS s FROM bank.customers WHERE age > 40",  # pushed down whole
    "SELECT region, AVG(income) AS a FROM bank.customers GROUP BY region",          # AVG: finished locally
    "SELECT c.region, COUNT(*) AS n, SUM(o.amount) AS s FROM bank.customers c JOIN shop.orders o "
    "ON c.id = o.customer_id GROUP BY c.region",
    "SELECT o.category, SUM(a.balance) AS b FROM bank.accounts a JOIN shop.orders o "
    "ON a.customer_id = o.customer_id WHERE a.balance > 900 GROUP BY o.category",
    "SELECT COUNT(*) AS n FROM bank.customers c JOIN insurer.policies p ON c.id = p.customer_id "
    "WHERE c.income > 20000",
    "SELECT c.name FROM bank.customers c WHERE c.id IN (SELECT customer_id FROM shop.orders) AND c.age < 30",
]


@pytest.mark.parametrize("sql", PG_QUERIES)
def test_a_party_on_postgresql_answers_as_the_oracle(pg_oracle, sql):
    pg_oracle.check(sql, "shop")


def test_explain_shows_the_sql_the_source_runs(pg_engine):
    text = pg_engine.explain("SELECT COUNT(*) AS n FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id",
                             "shop")
    assert "PYU(bank)" in text and "PostgreSQL" in text


# -- views over a table partitioned across parties -------------------------------------------------

HOSPITALS = ("h1", "h2", "h3")


def diagnoses(seed: int) -> pa.Table:
    import numpy as np
    rng = np.random.default_rng(seed)
    n = 40
    return pa.table({"pid": pa.array(rng.integers(1, 30, n), pa.int64()),
                     "diag": pa.array(np.array(["flu", "cdiff", "covid", "asthma"])[rng.integers(0, 4, n)]),
                     "time": pa.array(rng.integers(0, 100, n), pa.int32())})


VIEW = " UNION ALL ".join(f"SELECT pid, diag, time FROM {h}.diagnosis" for h in HOSPITALS)


@pytest.fixture(scope="module")
def hospitals(tmp_path_factory, federation_writer, plaintext_grants):
    directory = tmp_path_factory.mktemp("hospitals")
    tables = {h: {"diagnosis": diagnoses(i)} for i, h in enumerate(HOSPITALS)}
    path = federation_writer(directory, tables, plaintext_grants(HOSPITALS), parties=HOSPITALS)
    text = path.read_text().replace("[parties.h1]", f'[views]\ndiagnosis = "{VIEW}"\n'
                                    "\n[parties.h1]", 1)
    path.write_text(text)
    with Engine(path, timeout=60) as engine:
        yield engine


@pytest.fixture(scope="module")
def hospital_oracle(hospitals, oracle_for):
    oracle = oracle_for(hospitals)
    oracle.con.execute(f"CREATE VIEW diagnosis AS {VIEW}")
    return oracle


VIEW_QUERIES = [
    "SELECT diag, COUNT(*) AS n FROM diagnosis GROUP BY diag",
    "SELECT d.diag, MAX(d.time) AS t FROM diagnosis AS d GROUP BY d.diag",
    "SELECT COUNT(*) AS n FROM diagnosis WHERE diag = 'flu'",
    "SELECT DISTINCT diag FROM diagnosis",
]


@pytest.mark.parametrize("sql", VIEW_QUERIES)
def test_a_view_over_partitioned_tables_answers_as_the_oracle(hospital_oracle, sql):
    hospital_oracle.check(sql, "h1")


def test_a_bare_name_is_a_view_first_and_explain_says_so(hospitals):
    text = hospitals.explain("SELECT diag, COUNT(*) AS n FROM diagnosis GROUP BY diag", "h1")
    assert "diagnosis: the federation view diagnosis" in text


def test_a_view_reading_an_unknown_column_is_a_config_error_naming_it(tmp_path, federation_writer, plaintext_grants):
    tables = {h: {"diagnosis": diagnoses(i)} for i, h in enumerate(HOSPITALS)}
    path = federation_writer(tmp_path, tables, plaintext_grants(HOSPITALS), parties=HOSPITALS)
    path.write_text(path.read_text().replace("[parties.h1]", '[views]\nbad = "SELECT nope FROM h1.diagnosis"\n\n'
                                                             "[parties.h1]", 1))
    with pytest.raises(ConfigError, match=r"views: view 'bad'.*nope"):
        Engine(path)


def test_views_are_listed_by_the_flight_sql_metadata(hospitals):
    from sqlsecure.flight_sql import FlightSql_pb2 as pb
    from sqlsecure.flight_sql.metadata import FederationCatalog

    catalog = FederationCatalog("test", hospitals.catalog.tables, hospitals.view_columns)
    listed = catalog.tables(pb.CommandGetTables(include_schema=True)).to_pylist()
    (view,) = [row for row in listed if row["table_type"] == "VIEW"]
    assert view["table_name"] == "diagnosis" and view["db_schema_name"] is None
    schema = pa.ipc.read_schema(pa.py_buffer(view["table_schema"]))
    assert [(f.name, str(f.type)) for f in schema] == [("pid", "int64"), ("diag", "string"), ("time", "int32")]
    only_views = catalog.tables(pb.CommandGetTables(table_types=["VIEW"])).to_pylist()
    assert [row["table_name"] for row in only_views] == ["diagnosis"]
