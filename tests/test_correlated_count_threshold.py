"""A correlated COUNT a SELECT item reveals, under the group threshold (issue 16, docs/federation.md):
a group of fewer than k rows of a protected owner reads NULL, and so does a group with no rows at all,
as the uncorrelated form does (telling "no rows" from "hidden" apart would reveal whether a small group
has rows); without a threshold, or over the issuer's own rows, an empty group reads 0 as SQL says. In a
condition it is the same value (a filter on it reads it as surely as an output: tests/test_attacks_s14b.py).
Each checked against the oracle."""

import pyarrow as pa
import pytest

from sqlsecure.engine import Engine

PARTIES = ("bank", "shop")
# shop's orders per region: a 5, b 2, c none; bank's customers in a, b, c and one without a region
TABLES = {"bank": {"c": pa.table({"id": pa.array([1, 2, 3, 4], pa.int64()),
                                  "region": pa.array(["a", "b", "c", None], pa.string())})},
          "shop": {"o": pa.table({"region": pa.array(["a"] * 5 + ["b"] * 2, pa.string()),
                                  "amount": pa.array([500, 501, 502, 503, 504, 600, 601], pa.int64())})}}
COUNT = ("SELECT c.id, (SELECT COUNT(*) FROM shop.o o WHERE o.region = c.region AND o.amount > 495) AS n "
         "FROM bank.c c")
EXPECTED = {0: {1: 5, 2: 2, 3: 0, 4: 0}, 4: {1: 5, 2: None, 3: None, 4: None}}


@pytest.fixture(scope="module", params=sorted(EXPECTED), ids=lambda k: f"k={k}")
def federation(request, tmp_path_factory, federation_writer, grants_for, oracle_for):
    grants = grants_for(("bank", ("shop.o.region", "shop.o.amount"), "PLAINTEXT_AFTER_COMPARE"),
                        ("shop", ("bank.c.region",), "PLAINTEXT_AFTER_COMPARE"),
                        ("shop", ("bank.c.id",), "PLAINTEXT"))
    path = federation_writer(tmp_path_factory.mktemp("corrcount"), TABLES, grants, parties=PARTIES,
                             min_group_size=request.param)
    with Engine(path, timeout=120) as engine:
        yield request.param, oracle_for(engine)


def test_a_revealed_count_reads_null_where_the_threshold_applies(federation):
    """k = 0: 5, 2, 0, 0 (DuckDB's counts); k = 4: the group of 2 and the empty ones read NULL alike."""
    k, oracle = federation
    assert oracle.engine.check(COUNT, "bank") is None
    assert "SPU" in oracle.engine.explain(COUNT, "bank")
    got = oracle.check(COUNT, "bank")
    assert dict(zip(got.column("id").to_pylist(), got.column("n").to_pylist())) == EXPECTED[k]


def test_a_count_in_a_condition_reads_as_revealed(federation):
    """In WHERE the count is thresholded as in SELECT: k = 0, the empty groups' 0 (DuckDB's); k = 4, the
    empty groups read NULL as the small one does, so `= 0` keeps none and `IS NULL` all three."""
    k, oracle = federation
    sql = "SELECT c.id FROM bank.c c WHERE (SELECT COUNT(*) FROM shop.o o WHERE o.region = c.region) {}"
    assert oracle.engine.check(sql.format("= 0"), "bank") is None
    assert sorted(oracle.check(sql.format("= 0"), "bank").column("id").to_pylist()) == ([3, 4] if k == 0 else [])
    assert sorted(oracle.check(sql.format("IS NULL"), "bank").column("id").to_pylist()) == ([] if k == 0 else [2, 3, 4])


def test_a_count_of_the_issuers_own_rows_reads_zero_when_empty(federation):
    """Issued by shop over its own orders: no protected owner's rows to count, so no threshold: 0."""
    _, oracle = federation
    assert oracle.engine.check(COUNT, "shop") is None
    got = oracle.check(COUNT, "shop")
    assert dict(zip(got.column("id").to_pylist(), got.column("n").to_pylist())) == EXPECTED[0]
