"""What a party's source publishes about its columns' types (connectors/source_types.py): declared in the
federation file (`[parties.NAME.types]`), read from a typed source, or refused where nothing tells; a data file
rewritten under a running engine is refused, never read with other types than the plan's."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import ConfigError, DataError, OperationalError
from sqlsecure.federation import load_federation

from tests.conftest import all_plaintext

CUSTOMERS = pa.table({"id": pa.array([1, 2, 2, 3, 4, 5, 6, None], pa.int64()),
                      "name": pa.array(["a", "b", "c", "d", "e", "f", "g", "h"])})
POLICIES = pa.table({"customer_id": pa.array([1, 2, 3, 3, 5, 7], pa.int64()),
                     "premium": pa.array([1.5, 2.0, 3.25, 1.0, 4.0, 0.5])})
ORDERS = {"order_id": "BIGINT", "customer_id": "BIGINT", "code": "VARCHAR", "amount": "DOUBLE"}
SQLITE = {"BIGINT": "INTEGER", "VARCHAR": "TEXT", "DOUBLE": "REAL"}


def orders_source(kind: str, directory: Path, postgres=None) -> str:
    """shop's TOML lines for an EMPTY orders table of `kind`."""
    columns = ", ".join(f"{c} {t}" for c, t in ORDERS.items())
    if kind == "csv":
        (directory / "orders.csv").write_text(",".join(ORDERS) + "\n")
        declared = ", ".join(f'{c} = "{t}"' for c, t in ORDERS.items())
        return f'[parties.shop.tables]\norders = "orders.csv"\n[parties.shop.types]\norders = {{ {declared} }}\n'
    if kind == "parquet":
        con = duckdb.connect()
        con.execute(f"CREATE TABLE orders ({columns})")
        pq.write_table(con.sql("SELECT * FROM orders").to_arrow_table(), directory / "orders.parquet")
        return '[parties.shop.tables]\norders = "orders.parquet"\n'
    if kind == "duckdb":
        con = duckdb.connect(str(directory / "shop.duckdb"))
        con.execute(f"CREATE TABLE orders ({columns})")
        con.close()
        return 'database = "shop.duckdb"\n'
    if kind == "sqlite":
        con = sqlite3.connect(directory / "shop.db")
        con.execute(f"CREATE TABLE orders ({', '.join(f'{c} {SQLITE[t]}' for c, t in ORDERS.items())})")
        con.commit()
        con.close()
        return f'database = "sqlite://{directory / "shop.db"}"\n'
    database = postgres.database("src14_empty")
    postgres.sql(f"DROP TABLE IF EXISTS orders; CREATE TABLE orders ({columns.replace('DOUBLE', 'DOUBLE PRECISION')})",
                 database)
    return f'database = "{postgres.uri(database)}"\nschema = "public"\n'


def federation(directory: Path, shop: str, parties=("bank", "shop", "insurer"), extra: str = "") -> Path:
    pq.write_table(CUSTOMERS, directory / "customers.parquet")
    pq.write_table(POLICIES, directory / "policies.parquet")
    bank = '[parties.bank.tables]\ncustomers = "customers.parquet"\n'
    insurer = '[parties.insurer.tables]\npolicies = "policies.parquet"\n'
    body = {"bank": bank, "shop": shop, "insurer": insurer}
    text = "[federation]\nmin_group_size = 2\n\n" + "".join(
        f"[parties.{p}]\n{body[p]}\n" for p in parties) + extra + all_plaintext(parties)
    path = directory / "federation.toml"
    path.write_text(text)
    return path


EMPTY_SIDE = [
    "SELECT c.id FROM bank.customers c WHERE c.id IN (SELECT o.customer_id FROM shop.orders o)",
    "SELECT c.id, c.name FROM bank.customers c WHERE c.id NOT IN (SELECT o.customer_id FROM shop.orders o)",
    "SELECT c.name, o.code, o.amount FROM bank.customers c LEFT JOIN shop.orders o ON c.id = o.customer_id",
    "SELECT COUNT(*) AS n, SUM(o.amount) AS s FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id",
]
THREE_PARTIES = [
    "SELECT c.id, p.premium FROM bank.customers c JOIN insurer.policies p ON c.id = p.customer_id "
    "WHERE c.id NOT IN (SELECT o.customer_id FROM shop.orders o)",
    "SELECT COUNT(*) AS n FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "JOIN insurer.policies p ON p.customer_id = c.id",
]
KINDS = ["csv", "parquet", "duckdb", "sqlite", "postgres"]


@pytest.fixture(params=KINDS)
def empty_shop(request, tmp_path):
    postgres = request.getfixturevalue("postgres") if request.param == "postgres" else None
    return tmp_path, orders_source(request.param, tmp_path, postgres)


def test_an_empty_table_of_every_source_kind_answers_as_duckdb(empty_shop, oracle_for):
    """Two parties, then three: an empty table of every kind of source has its columns' types (declared for a
    CSV), so every answer equals plain DuckDB's over the same data, never a binder error."""
    directory, shop = empty_shop
    with Engine(federation(directory, shop, ("bank", "shop"))) as engine:
        assert dict(engine.catalog.columns("shop", "orders")) == ORDERS
        for sql in EMPTY_SIDE:
            oracle_for(engine).check(sql, "bank")
    with Engine(federation(directory, shop)) as engine:
        for sql in THREE_PARTIES:
            oracle_for(engine).check(sql, "insurer")


def test_a_header_only_csv_without_declared_types_names_the_table(tmp_path):
    """The helper's reproduction: an IN over an empty CSV was DuckDB's 'Cannot compare values of type BIGINT
    and VARCHAR' at plan time. Nothing tells the columns' types: the federation does not open, and says which
    table and columns to declare."""
    (tmp_path / "orders.csv").write_text("order_id,code\n")
    with pytest.raises(ConfigError) as caught:
        Engine(federation(tmp_path, '[parties.shop.tables]\norders = "orders.csv"\n', ("bank", "shop")))
    message = str(caught.value)
    assert "table 'orders'" in message and "order_id, code" in message and "[parties.shop.types]" in message
    assert "Binder" not in message


def test_a_csv_column_of_only_nulls_must_be_declared(tmp_path, oracle_for):
    (tmp_path / "orders.csv").write_text("order_id,customer_id\n1,\n2,\n")
    shop = '[parties.shop.tables]\norders = "orders.csv"\n'
    with pytest.raises(ConfigError, match=r"table 'orders'.*column customer_id holds no value"):
        Engine(federation(tmp_path, shop, ("bank", "shop")))
    declared = shop + '[parties.shop.types]\norders = { customer_id = "bigint" }\n'
    with Engine(federation(tmp_path, declared, ("bank", "shop"))) as engine:
        assert engine.catalog.columns("shop", "orders") == (("order_id", "BIGINT"), ("customer_id", "BIGINT"))
        oracle_for(engine).check(EMPTY_SIDE[1], "bank")


def test_declared_types_read_codes_as_text(tmp_path, oracle_for):
    """A declaration decides what the sniffer would guess: codes with leading zeros and dates kept as text,
    numbers as DECIMAL; the oracle reads the same file with the same types."""
    (tmp_path / "orders.csv").write_text("order_id,customer_id,code,day,amount\n1,1,7,2024-01-02,1.5\n"
                                         "2,2,007,2024-01-03,2.25\n3,2,070,2024-01-04,3\n")
    shop = ('[parties.shop.tables]\norders = "orders.csv"\n[parties.shop.types]\n'
            'orders = { code = "text", day = "varchar", amount = "decimal(10,2)" }\n')
    with Engine(federation(tmp_path, shop, ("bank", "shop"))) as engine:
        assert dict(engine.catalog.columns("shop", "orders")) == {
            "order_id": "BIGINT", "customer_id": "BIGINT", "code": "VARCHAR", "day": "VARCHAR",
            "amount": "DECIMAL(10,2)"}
        got = oracle_for(engine).check("SELECT o.code, o.day, o.amount FROM bank.customers c "
                                       "JOIN shop.orders o ON c.id = o.customer_id", "bank")
        assert sorted(got.column("code").to_pylist()) == ["007", "007", "070", "070", "7"]


@pytest.mark.parametrize("declared, message", [
    ('orders = { code = "nope" }', r"parties\.shop\.types\.orders\.code: unknown column type 'nope'"),
    ('orders = { code = "int); DROP TABLE x; --" }', r"parties\.shop\.types\.orders\.code: unknown column type"),
    ('orders = { code = 5 }', r"parties\.shop\.types\.orders\.code: unknown column type 5"),
    ('orders = []', r"parties\.shop\.types\.orders: must be"),
])
def test_a_declaration_that_is_not_a_type_is_refused_with_its_key(tmp_path, declared, message):
    (tmp_path / "orders.csv").write_text("order_id,code\n1,a\n")
    shop = f'[parties.shop.tables]\norders = "orders.csv"\n[parties.shop.types]\n{declared}\n'
    with pytest.raises(ConfigError, match=message):
        load_federation(federation(tmp_path, shop, ("bank", "shop")))


@pytest.mark.parametrize("kind, declared, message", [
    ("csv", 'orders = { cod = "VARCHAR" }', r"table 'orders' \(orders.csv\) has no column 'cod'"),
    ("parquet", 'orders = { code = "BIGINT" }',
     r"parties\.shop\.types\.orders\.code: declared BIGINT, but its source stores VARCHAR"),
    ("duckdb", 'orders = { amount = "FLOAT" }',
     r"parties\.shop\.types\.orders\.amount: declared FLOAT, but its source stores DOUBLE"),
    ("duckdb", 'order = { amount = "DOUBLE" }', r"parties\.shop\.types\.order: shop has no table 'order'"),
    ("sqlite", 'orders = { nope = "DOUBLE" }', r"parties\.shop\.types\.orders\.nope: table 'orders' has no column"),
])
def test_a_declaration_its_source_contradicts_is_refused(tmp_path, kind, declared, message):
    shop = orders_source(kind, tmp_path)
    if "[parties.shop.types]" in shop:
        shop = shop[:shop.index("[parties.shop.types]")]
    with pytest.raises(ConfigError, match=message):
        Engine(federation(tmp_path, shop + f"[parties.shop.types]\n{declared}\n", ("bank", "shop")))


@pytest.mark.parametrize("value, dtype", [("secret-value", "BIGINT"), ("5.5", "BIGINT"), ("300", "TINYINT"),
                                          ("1.005", "DECIMAL(10,2)"), ("12345.5", "DECIMAL(5,1)")])
def test_a_csv_value_that_is_not_exactly_its_declared_type_is_a_data_error(tmp_path, value, dtype):
    """Never rounded: DuckDB's CSV reader would read 5.5 as the BIGINT 6 and 1.005 as the DECIMAL(10,2) 1.01."""
    (tmp_path / "orders.csv").write_text(f"order_id,code\n1,{value}\n")
    shop = f'[parties.shop.tables]\norders = "orders.csv"\n[parties.shop.types]\norders = {{ code = "{dtype}" }}\n'
    with pytest.raises(DataError) as caught:
        Engine(federation(tmp_path, shop, ("bank", "shop")))
    assert f"column 'code' is declared {dtype}" in str(caught.value) and value not in str(caught.value)


def rewrite(path: Path, write) -> None:
    """Rewrite a data file so its stamp surely differs (size or modification time)."""
    before = os.stat(path).st_mtime_ns
    write()
    os.utime(path, ns=(before + 10**9, before + 10**9))


def test_a_parquet_file_retyped_under_a_running_engine_is_refused(tmp_path, oracle_for):
    """The plan reads the published type; a file rewritten with another is refused, not read as it."""
    shop = orders_source("parquet", tmp_path)
    sql = "SELECT c.name, o.amount FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id"
    with Engine(federation(tmp_path, shop, ("bank", "shop"))) as engine:
        oracle_for(engine).check(sql, "bank")
        rows = pa.table({"order_id": pa.array([1, 2], pa.int64()), "customer_id": pa.array([1, 2], pa.int64()),
                         "code": ["a", "b"], "amount": pa.array([1, 2], pa.int64())})  # DOUBLE -> BIGINT
        rewrite(tmp_path / "orders.parquet", lambda: pq.write_table(rows, tmp_path / "orders.parquet"))
        with pytest.raises(OperationalError, match=r"table 'orders': amount: DOUBLE, now BIGINT"):
            engine.execute(sql, "bank")
        same = rows.set_column(3, "amount", pa.array([1.5, 2.5]))  # the published types again: answered
        rewrite(tmp_path / "orders.parquet", lambda: pq.write_table(same, tmp_path / "orders.parquet"))
        assert sorted(engine.execute(sql, "bank").table.column("amount").to_pylist()) == [1.5, 2.5, 2.5]


def test_a_csv_rewritten_under_a_running_engine_keeps_its_published_types(tmp_path):
    """A CSV is read with its published types: a new column is not read, a value of another type is a
    DataError (not a column turned DOUBLE or VARCHAR under the plan), a column gone is refused by name."""
    path = tmp_path / "orders.csv"
    path.write_text("order_id,customer_id,amount\n1,1,5\n2,2,6\n")
    sql = "SELECT c.name, o.amount FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id"
    with Engine(federation(tmp_path, '[parties.shop.tables]\norders = "orders.csv"\n', ("bank", "shop"))) as engine:
        assert dict(engine.catalog.columns("shop", "orders"))["amount"] == "BIGINT"
        rewrite(path, lambda: path.write_text("order_id,customer_id,amount,extra\n1,1,5,x\n2,2,7,y\n"))
        assert sorted(engine.execute(sql, "bank").table.column("amount").to_pylist()) == [5, 7, 7]
        rewrite(path, lambda: path.write_text("order_id,customer_id,amount\n1,1,5.5\n2,2,6\n"))
        with pytest.raises(DataError, match="party 'shop'"):  # not the BIGINT 6
            engine.execute(sql, "bank")
        rewrite(path, lambda: path.write_text("order_id,customer_id\n1,1\n"))
        with pytest.raises(OperationalError, match=r"table 'orders': its published columns no longer read"):
            engine.execute(sql, "bank")


def test_a_postgresql_column_retyped_under_a_running_engine_is_refused(tmp_path, postgres, oracle_for):
    """A query the party finishes locally fetches the column: its new type is refused, not cast to the old."""
    shop = orders_source("postgres", tmp_path, postgres)
    postgres.sql("INSERT INTO orders VALUES (1, 1, 'a', 1.5), (2, 2, 'b', 2.5)", "src14_empty")
    sql = "SELECT c.name, o.code FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id " \
          "WHERE o.amount / 2 > 0"  # `/` has no exact PostgreSQL equivalent: fetched, finished in DuckDB
    with Engine(federation(tmp_path, shop, ("bank", "shop"))) as engine:
        oracle_for(engine).check(sql, "bank")
        postgres.sql("ALTER TABLE orders ALTER COLUMN amount TYPE text", "src14_empty")
        with pytest.raises(OperationalError, match=r"table 'orders' changed in its source.*amount: double, now string"):
            engine.execute(sql, "bank")


def test_a_csv_value_past_the_sniffed_rows_is_never_rounded(tmp_path):
    """DuckDB's sniffer types a column from a sample of rows: 60,000 whole numbers make `code` a BIGINT, and
    plain read_csv_auto then reads a later 5.5 as 6. The store reads every value once when it opens: a
    DataError naming the column and the type it was sniffed as, not the value."""
    rows = "".join(f"{i},{i}\n" for i in range(60_000))
    (tmp_path / "orders.csv").write_text(f"order_id,code\n{rows}60000,5.5\n")
    with pytest.raises(DataError, match=r"column 'code' is read from its first rows as BIGINT") as caught:
        Engine(federation(tmp_path, '[parties.shop.tables]\norders = "orders.csv"\n', ("bank", "shop")))
    assert "5.5" not in str(caught.value)
