"""Bugs found by the property test (tests/test_property.py), each as a minimal reproduction over a
small two-party federation with every column PLAINTEXT to the other party (so only correctness is
in question) and no group threshold.

Each test states what a fix must achieve whichever way it goes: the query is either refused by
`check` and by execution alike (an error of the PEP 249 tree), or answered with the oracle's rows.
They are `xfail(strict=True)`: un-xfail each as its fix lands (a strict xfail that passes fails).
"""

from __future__ import annotations

import datetime
import decimal

import pyarrow as pa
import pytest

import sqlsecure
from sqlsecure.engine import Engine

PARTIES = ("bank", "shop")


def two_parties() -> dict[str, dict[str, pa.Table]]:
    """bank.t and shop.t, 6 rows each, keys 1..3 on both sides (each key twice), one NULL in f."""
    keys = [1, 1, 2, 2, 3, 3]
    return {party: {"t": pa.table({
        "k": pa.array(keys, pa.int64()),
        "i": pa.array([n + offset for n in range(6)], pa.int64()),
        "f": pa.array([0.5 * n if n else None for n in range(6)]),
        "d": pa.array([decimal.Decimal(n) / 4 for n in range(6)], pa.decimal128(8, 2)),
        "s": pa.array(["a", "b", "c", "dd", "a", "b"]),
        "dt": pa.array([datetime.date(2024, 1, 1 + n) for n in range(6)], pa.date32()),
    })} for party, offset in zip(PARTIES, (0, 3))}


@pytest.fixture
def plaintext_oracle(tmp_path, federation_writer, plaintext_grants, oracle_for):
    """Every column PLAINTEXT to the other party, no threshold: only correctness is in question."""
    path = federation_writer(tmp_path, two_parties(), plaintext_grants(PARTIES), parties=PARTIES, min_group_size=0)
    with Engine(path) as engine:
        yield oracle_for(engine)


def assert_check_agrees(oracle, sql: str, issuer: str) -> None:
    """Refused by check and execution alike, or answered with the oracle's rows."""
    if oracle.engine.check(sql, issuer) is not None:
        with pytest.raises(sqlsecure.Error):
            oracle.engine.execute(sql, issuer)
    else:
        oracle.check(sql, issuer)


def found(sql: str, reason: str):
    """A reproduction, xfail until its fix lands."""
    return pytest.param(sql, marks=pytest.mark.xfail(strict=True, reason=reason))


def refused_only_at_run_time(sql: str, refusal: str):
    """A query that `check` accepted and execution refused with NotSupportedError `refusal` (DESIGN.md
    wants every refusal before execution: check = EXPLAIN = execution); the SPU stage evaluates it now."""
    return pytest.param(sql, id=refusal[:40])


def fixed(sql: str, reason: str):
    """A reproduction whose fix landed: `reason` says what was wrong."""
    return pytest.param(sql, id=reason[:40])


RUN_TIME_REFUSALS = [  # mostly the SPU stage's expression compiler refusing what the planner let through
    refused_only_at_run_time("SELECT x.s AS g, MAX(y.s) AS m FROM bank.t x JOIN shop.t y ON x.k = y.k GROUP BY x.s",
                             "MIN/MAX of text in secure computation"),
    refused_only_at_run_time("SELECT MIN(y.s) AS m FROM bank.t x JOIN shop.t y ON x.k = y.k WHERE x.i > y.i",
                             "MIN/MAX of text in secure computation"),
    refused_only_at_run_time("SELECT y.dt > DATE '2024-01-03' AS later FROM bank.t x JOIN shop.t y ON x.k = y.k "
                             "WHERE x.i > y.i", "CAST to DATE in secure computation"),
    refused_only_at_run_time("SELECT CASE WHEN y.dt > DATE '2024-01-03' THEN y.i ELSE -2 END AS v FROM bank.t x "
                             "JOIN shop.t y ON x.k = y.k WHERE x.i < y.i", "CAST to DATE in secure computation"),
    refused_only_at_run_time("SELECT COUNT(*) AS n FROM (SELECT s FROM bank.t UNION ALL SELECT s FROM shop.t) u "
                             "WHERE u.s LIKE 'a%'", '"u.s" LIKE \'a%\' in secure computation'),
    refused_only_at_run_time("SELECT COUNT(*) AS n FROM bank.t x JOIN shop.t y ON x.k = y.k "
                             "WHERE y.s LIKE 'a%' OR x.i > y.i", '"y.s" LIKE \'a%\' in secure computation'),
    # COUNT(DISTINCT) grouped across parties: refused only at run time once; answered now
    "SELECT x.s AS g, COUNT(DISTINCT y.i) AS n FROM bank.t x JOIN shop.t y ON x.k = y.k GROUP BY x.s",
    fixed("SELECT x.i AS a FROM bank.t x LEFT JOIN shop.t y ON x.k = y.i WHERE y.k IN (SELECT v.i FROM bank.t v)",
          "IN / NOT IN / NOT EXISTS on a cross-party LEFT JOIN's NULL side: check accepts it, execution raises "
          "InternalError 'IndexError: arrays used as indices must be of integer (or boolean) type'"),
]

WRONG_ANSWERS = [
    fixed("SELECT x.i AS a, y.i AS b FROM bank.t x LEFT JOIN shop.t y ON x.k = y.k AND x.f > y.f",
          "a LEFT JOIN with a cross-party condition beside its keys acts as an inner join: the preserved side's "
          "rows without a match are dropped (2 rows, not 6)"),
    fixed("SELECT u.i AS i FROM (SELECT i, f FROM bank.t UNION ALL SELECT i, f FROM shop.t) u WHERE NOT (u.f = 1)",
          "NOT of a comparison with NULL on the SPU is true, not NULL: the rows whose f is NULL are kept"),
    fixed("SELECT u.f AS f, u.f BETWEEN 1 AND 10 AS b FROM (SELECT f FROM bank.t UNION ALL SELECT f FROM shop.t) u "
          "WHERE u.f IS NULL OR u.f < 1",
          "NULL BETWEEN 1 AND 10 on the SPU is false, not NULL (a comparison like u.f > 1 is right)"),
    # issue 15's first wrong answer, found again by the property test on its own data (DISTINCT over a
    # cross-party UNION ALL was dropped: every row came back)
    "SELECT DISTINCT u.s AS s FROM (SELECT s FROM bank.t UNION ALL SELECT s FROM shop.t) u",
    "WITH q AS (SELECT s FROM bank.t UNION ALL SELECT s FROM shop.t) SELECT DISTINCT x.s AS s FROM q x "
    "ORDER BY s LIMIT 3",
]


@pytest.mark.parametrize("sql", RUN_TIME_REFUSALS + WRONG_ANSWERS)
def test_refused_at_plan_time_or_answered(plaintext_oracle, sql):
    assert_check_agrees(plaintext_oracle, sql, "bank")


def test_an_empty_csv_table_keeps_its_column_names(tmp_path, federation_writer, plaintext_grants):
    """The conftest writer puts shop's tables on CSV; an empty one keeps its header only."""
    tables = two_parties()
    tables["shop"]["t"] = tables["shop"]["t"].slice(0, 0)
    path = federation_writer(tmp_path, tables, plaintext_grants(PARTIES), parties=PARTIES)
    with Engine(path) as engine:
        assert engine.execute("SELECT k, i, f, d, s, dt FROM shop.t", "shop").table.num_rows == 0
