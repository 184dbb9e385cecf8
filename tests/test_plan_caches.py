"""What the planner keeps between queries is never stale (issue 16, CI time): a party store's published
sizes follow its files and its own writes, its schema its writes; the empty mirror that types queries (planner/build.py) follows
the catalog's declared types. Small tables, no query run."""

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sqlsecure.connectors.duckdb_store import PartyStore, TableSource
from sqlsecure.errors import PlanError
from sqlsecure.planner.build import duckdb_types, subquery_columns
from sqlsecure.planner.catalog import Catalog
from sqlsecure.planner.parse import parse_statement


def test_sizes_follow_a_rewritten_data_file(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": list(range(3))}), path)
    store = PartyStore("bank", None, (TableSource("t", path),))
    assert store.sizes() == {"t": 4} and store.sizes() == {"t": 4}
    pq.write_table(pa.table({"x": list(range(9))}), path)  # another size: another stamp
    assert store.sizes() == {"t": 16}
    store.close()


def test_sizes_and_schema_follow_the_stores_own_writes(tmp_path):
    database = tmp_path / "bank.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute("CREATE TABLE t AS SELECT range AS x FROM range(3)")
    store = PartyStore("bank", database, writable=True)
    assert store.sizes() == {"t": 4}
    store.write("INSERT INTO t SELECT range FROM range(20)")
    assert store.sizes() == {"t": 32}
    assert store.schema() == {"t": [("x", "BIGINT")]}
    store.write("ALTER TABLE t ADD COLUMN y VARCHAR")
    assert store.schema() == {"t": [("x", "BIGINT"), ("y", "VARCHAR")]}
    store.close()


def test_the_typing_mirror_follows_the_catalogs_types():
    sql = "SELECT a.x + 1 AS y FROM bank.t AS a"
    tree = parse_statement(sql, "duckdb")
    as_integer = Catalog({"bank": {"t": (("x", "INTEGER"),)}})
    as_text = Catalog({"bank": {"t": (("x", "VARCHAR"),)}})
    assert duckdb_types(tree, as_integer) == ("INTEGER",)
    with pytest.raises(PlanError):  # text + 1 does not bind: the mirror of the other catalog is not reused
        duckdb_types(tree, as_text)
    assert duckdb_types(tree, as_integer) == ("INTEGER",)
    assert subquery_columns(parse_statement("SELECT x FROM bank.t", "duckdb"), as_text) == {"x": "VARCHAR"}
