"""Joins that keep the intersection secret: when a join key is not granted PLAINTEXT_AFTER_JOIN,
the parties share their rows and the SPU joins them obliviously. Checked against the oracle, and
the channel traffic must not depend on which rows match."""

import numpy as np
import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import DataError, PolicyViolation

PARTIES = ("bank", "shop")
GRANTS = [
    ("bank", ("shop.orders.customer_id",), "PLAINTEXT_AFTER_COMPARE"),
    ("bank", ("shop.orders.amount",), "PLAINTEXT_AFTER_AGGREGATE"),
    ("bank", ("shop.orders.category",), "PLAINTEXT_AFTER_GROUP_BY"),
    ("shop", ("bank.customers.age",), "PLAINTEXT_AFTER_COMPARE"),
]


def tables_with(overlap: float, n: int = 60, m: int = 90, seed: int = 3, repeat_ids: bool = False):
    """Unique customer ids at the bank (with NULLs); orders with repeated ids (and NULLs) at the shop,
    a share `overlap` of which name one of the bank's customers."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(1000, 1000 + n))
    if repeat_ids:
        ids[1::2] = ids[::2][:len(ids[1::2])]
    bank_ids = [None if i % 11 == 5 else int(v) for i, v in enumerate(ids)]
    present = [v for v in bank_ids if v is not None]
    hits = rng.random(m) < overlap
    order_ids = [None if i % 13 == 7 else (int(rng.choice(present)) if hits[i] else int(5000 + rng.integers(0, 40)))
                 for i in range(m)]
    regions = np.array(["north", "south", "east"])
    customers = pa.table({"id": pa.array(bank_ids, pa.int64()),
                          "region": pa.array(regions[rng.integers(0, 3, n)]),
                          "age": pa.array(rng.integers(18, 80, n), pa.int32())})
    orders = pa.table({"order_id": pa.array(np.arange(m), pa.int64()),
                       "customer_id": pa.array(order_ids, pa.int64()),
                       "amount": pa.array(rng.integers(100, 50000, m) / 100.0),
                       "category": pa.array(np.array(["books", "games"])[rng.integers(0, 2, m)])})
    return {"bank": {"customers": customers}, "shop": {"orders": orders}}


@pytest.fixture(scope="module")
def engine_for(tmp_path_factory, federation_writer, grants_for):
    """engine_for(overlap, grants=GRANTS, **shape): an engine over freshly generated tables."""

    def make(overlap: float, grants=GRANTS, **shape) -> Engine:
        directory = tmp_path_factory.mktemp(f"oblivious{int(overlap * 100)}")
        path = federation_writer(directory, tables_with(overlap, **shape), grants_for(*grants), parties=PARTIES)
        path.write_text(path.read_text(encoding="utf-8") + '\n[parties.bank.unique]\ncustomers = [["id"]]\n',
                        encoding="utf-8")  # the spine joins obliviously only on a side unique at plan time
        return Engine(path)

    return make


@pytest.fixture(scope="module")
def half(engine_for):
    with engine_for(0.5) as engine:
        yield engine


QUERIES = [
    "SELECT COUNT(*) AS n FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id",
    "SELECT c.region, SUM(o.amount) AS s, COUNT(*) AS n, AVG(o.amount) AS a FROM bank.customers c "
    "JOIN shop.orders o ON c.id = o.customer_id GROUP BY c.region",
    "SELECT o.category, MAX(c.age), MIN(o.amount), COUNT(*) FROM shop.orders o JOIN bank.customers c "
    "ON o.customer_id = c.id GROUP BY o.category",
    "SELECT c.id, c.region FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id WHERE c.age > 30",
]


@pytest.mark.parametrize("sql", QUERIES)
def test_oblivious_join_against_the_oracle(half, oracle_for, sql):
    oracle_for(half).check(sql, "bank")


def test_explain_names_the_oblivious_join_and_no_psi(half):
    text = half.explain(QUERIES[1], "bank")
    assert "SPU(bank, shop)" in text and "PSI" not in text
    assert "not which rows match (an oblivious join on secret shares)" in text


def test_the_traffic_does_not_depend_on_which_rows_match(engine_for, oracle_for):
    seen, results = [], []
    for overlap in (0.0, 1.0):
        with engine_for(overlap) as engine:
            results.append(oracle_for(engine).check(QUERIES[0], "bank").to_pylist())
            stats = engine.runtime.last_stats
            seen.append((dict(stats.bytes), dict(stats.messages)))
    assert results[0] != results[1]  # no order matches a customer, then every non-NULL one does
    assert seen[0] == seen[1]


def test_a_broken_declared_key_fails_the_oblivious_join(engine_for):
    with engine_for(0.5, repeat_ids=True) as engine:
        assert engine.check(QUERIES[0], "bank") is None  # the declaration is trusted at plan time
        with pytest.raises(DataError, match="both sides repeat a join key, though one side's key is declared unique"):
            engine.execute(QUERIES[0], "bank")


def test_filters_before_an_oblivious_join_still_need_compare_grants(half):
    with pytest.raises(PolicyViolation, match="shop may not learn bank.customers.region"):
        half.execute(QUERIES[0] + " WHERE c.region = 'north'", "bank")


def test_the_psi_is_used_when_the_key_is_granted_after_join(engine_for):
    after_join = [(p, c, "PLAINTEXT_AFTER_JOIN" if k == "PLAINTEXT_AFTER_COMPARE" else k) for p, c, k in GRANTS]
    with engine_for(0.5, after_join + [("shop", ("bank.customers.id",), "PLAINTEXT_AFTER_JOIN")]) as engine:
        assert "PSI" in engine.explain(QUERIES[1], "bank")


def test_the_plan_crosses_the_network_codec(half):
    from sqlsecure.executors.runtime.plan_codec import decode_plan, encode_plan
    from sqlsecure.planner.physical import PhysicalPlan

    plan = half.plan(QUERIES[1], "bank").physical
    assert decode_plan(encode_plan(plan), PhysicalPlan) == plan
