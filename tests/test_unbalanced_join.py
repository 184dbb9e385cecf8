"""The planner picks the unbalanced PSI when one side's published size dwarfs the other's; its
prepared set is reused by the next query (few bytes cross), and answers match the oracle."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sqlsecure.engine import Engine

BIG, SMALL = 70_000, 300

FEDERATION = """[federation]
name = "unbalanced"
min_group_size = 4
[parties.bank.tables]
clients = "bank/clients.parquet"
[parties.shop.tables]
orders = "shop/orders.parquet"
[[grants]]
party = "bank"
columns = ["shop.orders.*"]
constraint = "PLAINTEXT"
[[grants]]
party = "shop"
columns = ["bank.clients.*"]
constraint = "PLAINTEXT"
"""

QUERIES = [
    "SELECT COUNT(*) AS n, SUM(o.amount) AS s FROM bank.clients c JOIN shop.orders o ON c.id = o.client",
    "SELECT c.segment, COUNT(*) AS n FROM bank.clients c JOIN shop.orders o ON c.id = o.client GROUP BY c.segment",
    "SELECT COUNT(*) FROM bank.clients c WHERE c.id IN (SELECT client FROM shop.orders WHERE amount > 50)",
]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    directory = tmp_path_factory.mktemp("unbalanced")
    rng = np.random.default_rng(5)
    for party in ("bank", "shop"):
        (directory / party).mkdir()
    pq.write_table(pa.table({"id": pa.array(rng.choice(4 * SMALL, SMALL, replace=False), pa.int64()),
                             "segment": pa.array(np.array(["a", "b", "c"])[rng.integers(0, 3, SMALL)])}),
                   directory / "bank" / "clients.parquet")
    pq.write_table(pa.table({"client": pa.array(rng.integers(0, 20 * SMALL, BIG), pa.int64()),
                             "amount": pa.array(rng.integers(100, 10000, BIG) / 100.0)}),
                   directory / "shop" / "orders.parquet")
    (directory / "federation.toml").write_text(FEDERATION)
    with Engine(directory / "federation.toml") as eng:
        yield eng


def test_the_planner_picks_the_unbalanced_psi_and_says_why(engine):
    text = engine.explain(QUERIES[0], "bank")
    assert "unbalanced ECDH-PSI (shop's set prepared once, reused)" in text
    assert "which of bank's query keys recur across queries" in text


@pytest.mark.parametrize("sql", QUERIES)
def test_unbalanced_joins_against_the_oracle(engine, oracle_for, sql):
    oracle_for(engine).check(sql, "bank")


def test_the_prepared_set_crosses_once(engine, oracle_for):
    oracle = oracle_for(engine)
    sql = QUERIES[0] + " WHERE o.amount < 20"  # a new scope: the first run prepares shop's set
    oracle.check(sql, "bank")
    first = engine.runtime.last_stats.bytes[("shop", "bank")]
    oracle.check(sql, "bank")
    again = engine.runtime.last_stats.bytes[("shop", "bank")]
    assert first > 32 * 3_000 and again < first / 10  # ~5,500 distinct keys of 32 B, then none
