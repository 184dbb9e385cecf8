"""Rounds around the SPU's operators: what a class-4 query opens outside the group-by itself.

The stage tests each counted column's groups for emptiness (SUM of no value is NULL) once, all
columns side by side in one comparison (`compare.positive_many`): 7 rounds for 2 parties, 9 for 3,
however many aggregates (was 7 per aggregate, one after another), none for COUNTs alone. Answers
against plain DuckDB."""

import numpy as np
import pytest

from sqlsecure.executors.spu import arith, compare
from sqlsecure.executors.spu.local import run_spu
from sqlsecure.executors.spu.shares import as_ring


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
