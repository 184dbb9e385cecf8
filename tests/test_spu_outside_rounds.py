"""Rounds around the SPU's operators: what a class-4 query opens outside the group-by itself.

The stage tests each counted column's groups for emptiness (SUM of no value is NULL) once, all
columns side by side in the group threshold's comparison on the sorted rows (`stage.count_tests`,
on the bits the row count needs), the B2As and the threshold's product with the groups' last rows in
one round after it (`compare.bits_times_many`): 6 rounds at 10^5 rows for 2 parties (was the
threshold's 7 + 1, then 7 for the tests on the groups), none more for COUNTs alone. Answers against
plain DuckDB."""

import math

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from sqlsecure.executors.spu import arith, boolean, compare
from sqlsecure.executors.spu.local import run_spu
from sqlsecure.executors.spu.shares import BoolShare, as_ring
from sqlsecure.executors.spu.stage import count_tests


def share(s, values, owner=0):
    values = np.asarray(values, dtype=np.int64)
    return arith.share_input(s, owner, as_ring(values) if s.index == owner else None, values.shape)


def lane_rounds(nparties: int, most: int | None) -> int:
    """C of a comparison of counts up to `most` (64 bits without): log2 of its high lane, one more to
    join a split low lane of 2 bits or more (`boolean.comparison_lanes`), 2 more for 3 parties."""
    lanes = boolean.comparison_lanes(64 if most is None else max(most, 1).bit_length() + 1, False)
    joined = len(lanes) > 1 and lanes[1] > 1
    return math.ceil(math.log2(max(8, lanes[0]))) + joined + (0 if nparties == 2 else 2)


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("counts, tested, most", [(1, 0, None), (1, 2, 100_000), (2, 1, 100_000), (3, 3, 1000),
                                                  (1, 1, 10), (1, 1, 50_000)])
def test_count_tests_equal_plaintext_in_one_comparison_and_one_round(nparties, counts, tested, most):
    """every count >= k (ANDed) times the row flag, and [t > 0] of each tested count: C + ceil(log2
    counts) + 1 rounds, whatever the number of tested counts."""
    rng = np.random.default_rng(counts + tested)
    plain = [rng.integers(0, 9, 50) for _ in range(counts + tested)]
    flag = rng.integers(-7, 7, 50)

    def program(s):
        xs, times = [share(s, v) for v in plain], share(s, flag, owner=1)
        s.rounds = 0
        keep, nonempty = count_tests(s, xs[:counts], 4, xs[counts:], times=times, most=most)
        return s.rounds, [arith.reveal(s, x) for x in (keep, *nonempty)]

    rounds, (keep, *nonempty) = run_spu(nparties, program).results[0]
    assert rounds == lane_rounds(nparties, most) + math.ceil(math.log2(counts)) + 1
    assert np.asarray(keep).astype(np.int64).tolist() == (np.all([v >= 4 for v in plain[:counts]], axis=0) * flag).tolist()
    for got, v in zip(nonempty, plain[counts:], strict=True):
        assert np.asarray(got).astype(np.int64).tolist() == (v > 0).astype(np.int64).tolist()


@pytest.mark.parametrize("nparties", [2, 3])
def test_bits_times_many_is_one_round_for_products_and_b2as(nparties):
    bits, values = np.array([1, 0, 1, 1, 0]), np.array([5, -3, -(1 << 40), 0, 9])

    def program(s):  # party 0 holds the bits' XOR share, the others 0
        mine = bits.astype(np.uint64) if s.index == 0 else np.zeros(5, np.uint64)
        c, x = BoolShare(mine, 1), share(s, values, owner=1)
        s.rounds = 0
        out = compare.bits_times_many(s, [(c, x), (c, None), (BoolShare(mine[:2].copy(), 1), None)])
        return s.rounds, [arith.reveal(s, o) for o in out]

    rounds, (product, bit, first) = run_spu(nparties, program).results[0]
    assert rounds == 1
    assert np.asarray(product).astype(np.int64).tolist() == (bits * values).tolist()
    assert np.asarray(bit).astype(np.int64).tolist() == bits.tolist()
    assert np.asarray(first).astype(np.int64).tolist() == bits[:2].tolist()


@pytest.mark.parametrize("nparties", [2, 3])
def test_positive_many_equals_plaintext(nparties):
    """Rounds: tests/test_spu_rounds.py."""
    vectors = [np.array([0, 1, 2, 0, 5 << 40], np.int64), np.array([], np.int64), np.array([-3, 0, 7], np.int64),
               np.arange(-20, 21, dtype=np.int64)]

    def program(s):
        shares = [arith.share_input(s, 0, as_ring(v) if s.index == 0 else None, v.shape) for v in vectors]
        return [arith.reveal(s, b) for b in compare.positive_many(s, shares)]

    got = run_spu(nparties, program).results[0]
    for v, g in zip(vectors, got):
        assert g.tolist() == (v > 0).astype(np.int64).tolist()


def test_positive_many_of_nothing_opens_nothing():
    assert run_spu(2, lambda s: (compare.positive_many(s, []), s.rounds)).results[0] == ([], 1)


@pytest.fixture(scope="module")
def spu_oracle(tmp_path_factory, make_federation, oracle_for):
    from sqlsecure.engine import Engine

    engine = Engine(make_federation(tmp_path_factory.mktemp("spu"), group_sums="spu"))
    yield oracle_for(engine)
    engine.close()


@pytest.mark.parametrize("sql", [
    # several counted columns: COUNT(*), the orders' amounts, the customers' ages (NULL where no order)
    "SELECT o.category, SUM(c.age) AS s, COUNT(*) AS n, COUNT(o.amount) AS k, MAX(o.amount) AS m "
    "FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id GROUP BY o.category",
    # COUNTs alone: no empty-group test at all
    "SELECT o.category, COUNT(*) AS n, COUNT(c.age) AS k FROM bank.customers c JOIN shop.orders o "
    "ON c.id = o.customer_id GROUP BY o.category",
    # groups whose summed column is NULL on every row (no order that large): SUM NULL, COUNT(*) > 0
    "SELECT c.age % 7 AS g, SUM(o.amount) AS s, COUNT(*) AS n, AVG(o.amount) AS a, COUNT(o.amount) AS k "
    "FROM bank.customers c LEFT JOIN shop.orders o ON c.id = o.customer_id AND o.amount > 495 GROUP BY g",
])
def test_group_by_tests_every_counted_column_at_once(spu_oracle, sql):
    assert "SPU(" in spu_oracle.engine.explain(sql, "bank")
    spu_oracle.check(sql, "bank")


ACCOUNTS = pa.table({"k": pa.array([1, None, 3, 1, None, 4, 1], pa.int64()),  # group 3: SUM NULL
                     "v": pa.array([10, 2, None, 5, None, 1, 3], pa.int64())})
COUNTS_ONLY = [["n", "COUNT", None, False], ["nv", "COUNT", '"v"', False]]
WITH_SUM = [*COUNTS_ONLY, ["sv", "SUM", '"v"', False]]


@pytest.mark.parametrize("keys", [[["k", '"k"']], []])
@pytest.mark.parametrize("threshold", [None, {"k": 2, "provenance": []}])
def test_a_tested_column_adds_only_its_product_round(keys, threshold, rows_match):
    """A secret program's aggregate (7 rows: one sort level, so the rounds are exact): SUM(v) beside
    COUNT(*), COUNT(v) adds one round (w * v, with the weights' round shared) where a threshold is
    compared, its empty-group test riding along (was 1 + 7); without one, its own narrow comparison
    and B2A; ungrouped, the round that zeroes a NULL SUM before it is opened (COUNTs alone need none).
    Answers against plain DuckDB."""
    from tests.test_secret_program import program_of, run

    rounds = []
    for calls in (COUNTS_ONLY, WITH_SUM):
        root = {"op": "aggregate", "child": {"op": "input", "index": 0}, "keys": keys, "aggregates": calls,
                "threshold": threshold}
        got, result = run(2, program_of(root, [[["k", "int"], ["v", "int"]]]), [ACCOUNTS])
        rounds.append(result.rounds)
    zeroing = 0 if keys else 1  # ungrouped COUNTs are never NULL: opened without the zeroing round SUM's NULL takes
    assert rounds[1] == rounds[0] + 1 + zeroing + (0 if threshold else lane_rounds(2, len(ACCOUNTS)) + 1)
    con = duckdb.connect()
    con.register("accounts", ACCOUNTS)
    want = con.sql(f"SELECT {'k, ' if keys else ''}COUNT(*) AS n, COUNT(v) AS nv, SUM(v) AS sv FROM accounts "
                   f"{'GROUP BY k' if keys else ''} {'HAVING COUNT(*) >= 2' if threshold and keys else ''}").to_arrow_table()
    assert rows_match(got, want), f"\n got: {got.to_pylist()}\nwant: {want.to_pylist()}"
