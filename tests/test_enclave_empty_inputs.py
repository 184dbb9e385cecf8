"""The enclave's clauses (docs/enclave.md, "Clauses") over empty inputs, two parties, against plain DuckDB:
each construct over a join with a party's empty table and over a cross-party WHERE that keeps no row, with
no group threshold (`min_group_size = 0`), so an ungrouped aggregate's one row over no rows (COUNT 0, SUM
NULL) is DuckDB's answer to match (it was no row). Over rows with NULLs and duplicates the same constructs
are tested in tests/test_enclave_clauses.py, test_enclave_windows.py, test_enclave_projected.py."""

from __future__ import annotations

import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from tests.test_enclave_functions import PARTIES, function_tables
from tests.test_enclave_queries import enclave_section

FULL = "FROM bank.people b JOIN shop.visits v ON b.id = v.person_id"
EMPTY = "FROM bank.nothing b JOIN shop.visits v ON b.id = v.person_id"  # bank's table without rows
NONE = f"{FULL} WHERE v.qty > b.n + 1000"  # a cross-party WHERE that keeps no row
CONSTRUCTS = [
    "SELECT COUNT(*) AS c, COUNT(v.coupon + b.n) AS n, SUM(v.qty * b.n) AS s, AVG(v.amount - b.score) AS a, "
    "MIN(b.label) AS lo, MAX(v.when_) AS hi {src}",
    "SELECT COUNT(DISTINCT v.qty) AS d, SUM(DISTINCT v.coupon) AS s, AVG(DISTINCT b.n + v.qty) AS a {src}",
    "SELECT b.label, COUNT(*) AS c, SUM(v.qty) AS s, MIN(b.grade) AS g {src} GROUP BY b.label",
    "SELECT b.grade, COUNT(DISTINCT v.coupon) AS d {src} GROUP BY b.grade HAVING COUNT(*) > 1",
    "SELECT COUNT(*) > 0 AS any_, SUM(v.qty * b.n) / COUNT(*) AS mean {src}",
    "SELECT DISTINCT b.grade, v.coupon + b.n AS c {src}",
    "SELECT DISTINCT b.flag, MAX(v.qty) AS m {src} GROUP BY b.flag, b.label",
    "SELECT b.id, v.qty, v.amount {src} ORDER BY v.amount DESC, b.id, v.qty LIMIT 4 OFFSET 1",
    "SELECT b.label, v.qty, RANK() OVER (PARTITION BY b.label ORDER BY v.qty) AS r, "
    "SUM(v.amount) OVER (PARTITION BY b.label) AS t {src}",
]
CASES = [(c, s) for c in CONSTRUCTS for s in ("empty table", "no row kept")]  # over rows: the other files


@pytest.fixture(scope="module")
def oracle(tmp_path_factory, federation_writer, plaintext_grants, oracle_for):
    directory = tmp_path_factory.mktemp("enclave-empty")
    tables = function_tables()
    people = tables["bank"]["people"]
    tables["bank"]["nothing"] = pa.Table.from_batches([], people.schema)  # Parquet keeps its types
    always = enclave_section(directory).replace("[enclave]\n", '[enclave]\nplacement = "always"\n')
    path = federation_writer(directory, tables, plaintext_grants(PARTIES) + always, parties=PARTIES,
                             min_group_size=0)
    with Engine(path) as engine:
        yield oracle_for(engine)


@pytest.mark.parametrize("construct, source", CASES, ids=[f"{i // 2}-{s}" for i, (_, s) in enumerate(CASES)])
def test_enclave_constructs_over_empty_inputs_match_duckdb(oracle, construct, source):
    sql = construct.format(src={"empty table": EMPTY, "no row kept": NONE}[source])
    assert oracle.engine.check(sql, "bank") is None and "TEEU(enclave" in oracle.engine.explain(sql, "bank")
    oracle.check(sql, "bank")
