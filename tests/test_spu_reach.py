"""`spu.reach`: the rows reaching a part of an expression, against a plaintext reference (the product of the
position's 0/1 factors and the row weight), for 2 and 3 compute parties; its rounds (ceil(log2(k + 2)) for k
factors, none for a factor never tested) and the WHERE order it gives."""

import math

import numpy as np
import pytest
import sqlglot

from sqlsecure.executors.spu import arith
from sqlsecure.executors.spu.local import run_spu
from sqlsecure.executors.spu.reach import Reach, may_refuse, pg_filter_order


def run(nparties: int, bad, weight, factors, lazy: int):
    """Share `bad`, `weight` and `factors` from party 0 (the last `lazy` factors given as functions), open
    `Reach.counted` inside them; (opened, rounds, how many functions were called)."""
    n = len(bad)

    def program(s):
        share = lambda v: arith.share_input(s, 0, np.asarray(v, np.uint64) if s.index == 0 else None, (n,))  # noqa: E731
        b, w, fs = share(bad), None if weight is None else share(weight), [share(f) for f in factors]
        calls = []
        lazy_fs = [(lambda f=f: calls.append(1) or f) for f in fs[len(fs) - lazy:]]
        reach = Reach(s)
        with reach.within(*fs[:len(fs) - lazy]):
            with reach.within(*lazy_fs):
                s.rounds = 0
                counted = reach.counted(b, w)
                rounds = s.rounds
                reach.counted(b, w)  # a second refusal at the same position calls no function again
        assert reach.factors == []
        return arith.reveal(s, counted).astype(np.uint64).tolist(), rounds, len(calls)

    return run_spu(nparties, program).results[0]


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("k", [0, 1, 2, 5])
def test_counted_rows_are_the_product_of_the_position(nparties, k):
    rng = np.random.default_rng(nparties * 10 + k)
    n = 12
    bad, weight = rng.integers(0, 2, n), rng.integers(0, 2, n)
    factors = [rng.integers(0, 2, n) for _ in range(k)]
    opened, rounds, calls = run(nparties, bad, weight, factors, lazy=min(k, 2))
    want = bad * weight * np.prod(factors, axis=0) if k else bad * weight
    assert opened == want.tolist()
    assert rounds == math.ceil(math.log2(k + 2)) and calls == min(k, 2)


def test_no_factor_and_no_weight_costs_no_round():
    opened, rounds, calls = run(2, [1, 0, 1], None, [], lazy=0)
    assert (opened, rounds, calls) == ([1, 0, 1], 0, 0)


def test_the_where_conjuncts_that_cannot_fail_come_first():
    filters = ["a / (b - 2) > 0", "b <> 2", "SQRT(x) > 1", "a / NULLIF(b, 0) > 1", "x > 0"]
    assert pg_filter_order(filters, duckdb_sql) == ["b <> 2", "a / NULLIF(b, 0) > 1", "x > 0",
                                                           "a / (b - 2) > 0", "SQRT(x) > 1"]
    assert not may_refuse(duckdb_sql("a % 3 + a // -(2)")) and may_refuse(duckdb_sql("a // (b - b)"))
    assert may_refuse(duckdb_sql("CAST(a * 1.5 AS INT)"))


def duckdb_sql(sql: str):
    return sqlglot.parse_one(sql, read="duckdb")
