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

import duckdb
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
    """A query that `check` accepted and execution refused with NotSupportedError `refusal` (docs/design.md
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


# -- the classes behind the reproductions above, each against the oracle or refused at plan time ----------

UNION = "(SELECT k, i, f, s, dt FROM bank.t UNION ALL SELECT k, i, f, s, dt FROM shop.t) u"
A, B, C = "(u.f > 1)", "(CASE WHEN u.i <= 6 THEN u.i > 4 END)", "(u.f < 1)"  # each NULL on some rows

THREE_VALUED_LOGIC = [  # NULL stays NULL through NOT / AND / OR / BETWEEN / IN until WHERE or CASE reads it
    f"SELECT u.i AS i, NOT {A} AS na, NOT {B} AS nb, {A} AND {B} AS ab, {A} OR {B} AS a_or_b, {C} AND {B} AS cb, "
    f"{C} OR {B} AS c_or_b, NOT ({C} OR {B}) AS n_cb, ({A} AND {B}) IS NULL AS unknown FROM {UNION}",
    f"SELECT u.i AS i, u.f BETWEEN 1 AND 2 AS btw, u.f NOT BETWEEN 1 AND 2 AS nbtw, u.f IN (0.5, 2) AS inl, "
    f"u.f NOT IN (0.5, 2) AS ninl, u.i IN (1, NULL) AS in_null FROM {UNION}",
    f"SELECT u.i AS i, CASE WHEN NOT {A} THEN 'n' WHEN {A} OR {B} THEN 'y' ELSE 'u' END AS c FROM {UNION}",
    f"SELECT u.i AS i FROM {UNION} WHERE NOT ({A} AND {B})",
    f"SELECT COUNT(*) AS n, SUM(CASE WHEN {C} OR {B} THEN 1 ELSE 0 END) AS t FROM {UNION} WHERE NOT {B} OR {A}",
]

LIKE = [  # a constant whole value or prefix on the SPU's text limbs; any other constant pattern: spu.like
    f"SELECT u.i AS i, u.s LIKE 'd%' AS d, u.s LIKE 'a' AS a, u.s NOT LIKE 'b%' AS nb, u.s LIKE '%' AS any, "
    f"u.s LIKE 'dd%' AS dd, u.s LIKE '' AS empty FROM {UNION}",
    f"SELECT COUNT(*) AS n FROM {UNION} WHERE u.s LIKE '%d'",
    f"SELECT COUNT(*) AS n FROM {UNION} WHERE u.s LIKE 'd_'",
    "SELECT x.i AS a, y.i AS b FROM bank.t x JOIN shop.t y ON x.k = y.k WHERE y.s LIKE 'b%' OR x.i > y.i",
]

TEXT_EXTREMES = [  # MIN/MAX of text: grouped on one party's keys, over a union, ungrouped, empty, in HAVING
    "SELECT x.k AS k, MIN(y.s) AS lo, MAX(y.s) AS hi, COUNT(*) AS n FROM bank.t x JOIN shop.t y ON x.k = y.k "
    "GROUP BY x.k",
    f"SELECT u.k AS k, MIN(u.s) AS lo, MAX(u.s) AS hi, MAX(u.i) AS top FROM {UNION} GROUP BY u.k",
    f"SELECT u.k AS k, MAX(u.s) AS hi FROM {UNION} WHERE u.f > 0.7 GROUP BY u.k HAVING MAX(u.s) > 'b'",
    f"SELECT MIN(u.s) AS lo, MAX(u.s) AS hi FROM {UNION} WHERE u.i > 2",
    f"SELECT MIN(u.s) AS lo, MAX(u.s) AS hi FROM {UNION} WHERE u.i > 100",
]

DATES = [  # a DATE constant is a public day number on the SPU
    f"SELECT u.i AS i, u.dt >= DATE '2024-01-03' AS later FROM {UNION} WHERE u.dt BETWEEN DATE '2024-01-02' "
    "AND DATE '2024-01-05'",
    f"SELECT COUNT(*) AS n FROM {UNION} WHERE u.dt IN (DATE '2024-01-01', DATE '2024-01-06')",
    f"SELECT COUNT(*) AS n FROM {UNION} WHERE u.dt > CAST('2024-01-01 10:00' AS TIMESTAMP)",  # a date at midnight
]


CASTS = [  # the kinds of a subquery's or a UNION's columns are known at plan time, as a table's are
    f"SELECT CAST(u.i AS DOUBLE) AS q, CAST(u.k AS BIGINT) AS k FROM {UNION}",
    "SELECT CAST(x.i AS DOUBLE) * y.f AS q FROM (SELECT k, i FROM bank.t WHERE i > 1) x JOIN shop.t y ON x.k = y.k",
    "SELECT CAST(u.a AS DOUBLE) AS q FROM (SELECT i FROM bank.t UNION ALL SELECT i FROM shop.t) u(a)",
    "SELECT CAST(x.i + y.i AS DOUBLE) AS q, CAST(x.i * y.i AS BIGINT) AS r, CAST(y.dt AS DATE) AS d, "
    "CAST(-y.f AS DOUBLE) AS m FROM bank.t x JOIN shop.t y ON x.k = y.k WHERE x.i < y.i",
    "SELECT CAST(SUM(x.i * y.i) AS DOUBLE) AS q, CAST(COUNT(*) AS DOUBLE) AS n FROM bank.t x JOIN shop.t y "
    "ON x.k = y.k WHERE x.i > y.i",
    f"SELECT u.i / u.k AS q FROM {UNION} WHERE u.k <> 0",  # a secret divisor (spu.functions)
]


@pytest.mark.parametrize("sql", THREE_VALUED_LOGIC + LIKE + TEXT_EXTREMES + DATES + CASTS)
def test_the_spu_evaluates_as_duckdb_does(plaintext_oracle, sql):
    assert plaintext_oracle.engine.check(sql, "bank") is None
    plaintext_oracle.check(sql, "bank")


NOT_EVALUATED = [  # without a rule in executors/spu/stage.SPU_RULES: refused by check, before anything runs
    f"SELECT COUNT(*) AS n FROM {UNION} WHERE u.s ILIKE 'A%'",
    f"SELECT COUNT(*) AS n FROM {UNION} WHERE LENGTH(u.s) > 1",
    f"SELECT COUNT(*) AS n FROM {UNION} WHERE CAST(u.s AS DATE) > DATE '2024-01-01'",
    f"SELECT CBRT(u.i) AS q FROM {UNION}",  # (u.i / u.k and SIN are evaluated now: tests/test_spu_functions.py)
    f"SELECT CAST(u.s AS DOUBLE) AS q FROM {UNION}",
    # a UNION ALL column of text in one branch and numbers or dates in another (the stage unifies only numbers)
    "SELECT x.c AS c FROM (SELECT i AS c FROM shop.t UNION ALL SELECT s AS c FROM bank.t) x ORDER BY c LIMIT 2",
    f"SELECT SUM(DISTINCT u.i) AS n FROM {UNION}",
    f"SELECT COUNT(*) FILTER (WHERE u.i > 2) AS n FROM {UNION}",
    f"SELECT u.i AS i, ROW_NUMBER() OVER (ORDER BY u.i) AS r, RANK() OVER (ORDER BY u.f) AS q FROM {UNION}",
    "SELECT x.i AS a, y.i AS b FROM bank.t x LEFT JOIN shop.t y ON x.k = y.k AND x.i < y.i",
    "SELECT x.i AS a, y.i AS b FROM bank.t x LEFT JOIN shop.t y ON x.k + 0 = y.k",
]


def test_a_union_of_numbers_and_dates_is_refused_at_plan_time(plaintext_oracle):
    """DuckDB fails on the first row of a UNION ALL column mixing numbers and dates (not at its binder): with
    each branch's owner filtering its rows the engine answered instead; now `check` and execution refuse it."""
    sql = "SELECT COUNT(*) AS n FROM (SELECT i AS c FROM shop.t UNION ALL SELECT dt AS c FROM bank.t) x WHERE x.c IS NULL"
    assert "UNION column 1 mixes date and number" in plaintext_oracle.engine.check(sql, "bank")
    with pytest.raises(sqlsecure.NotSupportedError, match="UNION column 1 mixes date and number"):
        plaintext_oracle.engine.execute(sql, "bank")
    with pytest.raises(duckdb.Error):
        plaintext_oracle.expected(sql, "bank")


@pytest.mark.parametrize("sql", NOT_EVALUATED)
def test_what_the_spu_does_not_evaluate_is_refused_at_plan_time(plaintext_oracle, sql):
    """The secure placement refuses them at plan time; under these all-PLAINTEXT grants the issuer
    computes them instead (planner/gather.py), and `check` agrees. A filter over a UNION ALL whose columns
    are PLAINTEXT to the other parties is now applied by each branch's owner (planner/placement.py
    `owner_filtered`), so those are answered on the secure placement: equal to the oracle either way."""
    assert plaintext_oracle.engine.check(sql, "bank") is None
    plan = plaintext_oracle.engine.plan(sql, "bank").physical
    owners_filter = "WHERE" in sql and "UNION ALL" in sql and "LIMIT" not in sql
    assert (plan.steps[-1].mode == "tables" and "the secure placement could not" in plan.notes[0]) or owners_filter
    try:
        plaintext_oracle.expected(sql, "bank")
    except duckdb.Error:  # DuckDB fails on these values: so does the issuer, with the engine's DataError
        with pytest.raises(sqlsecure.DataError):
            plaintext_oracle.engine.execute(sql, "bank")
        return
    if "ROW_NUMBER" not in sql and "LIMIT" not in sql:  # these may order tied rows either way
        plaintext_oracle.check(sql, "bank")


@pytest.mark.parametrize("sql", [
    "SELECT x.i AS a FROM bank.t x LEFT JOIN shop.t y ON x.k = y.i WHERE y.k NOT IN (SELECT v.i FROM bank.t v)",
    "SELECT x.i AS a FROM bank.t x LEFT JOIN shop.t y ON x.k = y.i WHERE y.k NOT IN (SELECT v.i FROM bank.t v "
    "WHERE v.i > 100)",
    "SELECT x.i AS a FROM bank.t x LEFT JOIN shop.t y ON x.k = y.i WHERE NOT EXISTS (SELECT 1 FROM bank.t v "
    "WHERE v.i = y.k)",
    "SELECT x.i AS a, y.i AS b FROM bank.t x LEFT JOIN shop.t y ON x.k = y.k AND y.f > 1",
])
def test_outer_join_null_side(plaintext_oracle, sql):
    """Semi / anti joins on a LEFT JOIN's NULL side (its unmatched rows have a NULL key), and an ON
    condition on the NULL side alone (a filter before the join)."""
    plaintext_oracle.check(sql, "bank")


# -- found by the extended grammar (windows, aggregates of aggregates, issue 17's functions, postgres) -----

@pytest.fixture
def threshold_oracle(tmp_path, federation_writer, plaintext_grants, oracle_for):
    """Every column PLAINTEXT to the other party, a group threshold of 2 rows of the other party's."""
    path = federation_writer(tmp_path, two_parties(), plaintext_grants(PARTIES), parties=PARTIES, min_group_size=2)
    with Engine(path) as engine:
        yield oracle_for(engine)


SHOP_SUMS = "(SELECT y.k AS c0, SUM(y.i) AS c1 FROM bank.t x JOIN shop.t y ON x.k = y.k WHERE y.i > 5 GROUP BY y.k)"


@pytest.mark.parametrize("sql", [
    f"SELECT q.c0 AS k, q.c1 AS total FROM {SHOP_SUMS} q",
    f"SELECT q.c0 AS k, q.c1 AS total, COUNT(*) OVER () AS groups FROM {SHOP_SUMS} q",
    f"SELECT DISTINCT q.c0 AS k FROM {SHOP_SUMS} q JOIN bank.t z ON q.c0 = z.k",
])
def test_an_inner_aggregate_keeps_the_group_threshold_under_any_outer_select(threshold_oracle, sql):
    """Computed at the issuer (every column PLAINTEXT), an aggregate of shop's rows beneath a projection,
    a window or a DISTINCT kept groups of fewer than k shop rows (the threshold bound an aggregating
    outer SELECT only): key 2 has one shop row with i > 5, so it is withheld, as the oracle withholds it."""
    assert_check_agrees(threshold_oracle, sql, "bank")


@pytest.mark.parametrize("sql", [
    "SELECT q.c1 AS total, y.k AS k FROM (SELECT v.k AS k, SUM(v.i) AS c1 FROM bank.t v GROUP BY v.k) q "
    "JOIN shop.t y ON q.k = y.k WHERE q.c1 > y.i",
    "SELECT q.c1 + y.i AS total FROM (SELECT v.k AS k, SUM(v.i) AS c1 FROM bank.t v GROUP BY v.k) q "
    "JOIN shop.t y ON q.k = y.k WHERE q.c1 > y.i",
    "WITH q AS (SELECT w.k AS c0, SUM(v.i) AS c1 FROM shop.t w LEFT JOIN bank.t v ON w.k = v.k GROUP BY w.k) "
    "SELECT y.k AS k, y.dt AS d FROM q x JOIN bank.t y ON x.c0 = y.k",
])
def test_an_integer_sum_at_its_owner_enters_the_spu(threshold_oracle, sql):
    """A party's SUM of integers is a HUGEINT, which Arrow carries as DECIMAL(38, 0): the spine's SPU
    refused to reveal it as an integer (DataError, 'gives a decimal.0 value where DuckDB gives int'), and a
    secret program's input (an eager partial) failed with ProtocolError; `check` accepted both."""
    assert_check_agrees(threshold_oracle, sql, "bank")


def test_postgres_modulo_of_a_double_is_refused_on_the_spu_at_plan_time(tmp_path, federation_writer,
                                                                        plaintext_grants, oracle_for):
    """PostgreSQL's zero-checked divisor (CASE WHEN y = 0 THEN ERROR(...) ELSE y END) hid the divisor's kind
    from the SPU's plan-time rule, so `%` of a DOUBLE passed `check` and was refused at run time; now the
    SPU refuses it at plan time and, every column being PLAINTEXT, the issuer computes it."""
    path = federation_writer(tmp_path, two_parties(), plaintext_grants(PARTIES), parties=PARTIES,
                             min_group_size=0, dialect="postgres")
    with Engine(path) as engine:
        sql = "SELECT AVG(x.k % x.f) AS m FROM bank.t x JOIN shop.t y ON x.k = y.k AND x.f > y.f"
        assert_check_agrees(oracle_for(engine), sql, "bank")


def test_one_partys_derived_aggregate_is_thresholded(threshold_oracle):
    """shop's COUNT per key revealed beside bank's rows: key 2 has one shop row with i > 5, fewer than k = 2."""
    sql = ("SELECT y.i AS i, q.n AS n FROM (SELECT v.k AS k, COUNT(*) AS n FROM shop.t v WHERE v.i > 5 GROUP BY v.k) q "
           "JOIN bank.t y ON q.k = y.k")
    rows = threshold_oracle.engine.execute(sql, "bank").table.to_pylist()
    assert rows and all(r["n"] >= 2 for r in rows)
    assert_check_agrees(threshold_oracle, sql, "bank")
    with_cte = ("WITH q AS (SELECT v.k AS k, COUNT(*) AS n FROM shop.t v WHERE v.i > 5 GROUP BY v.k) "
                "SELECT y.i AS i, q.n AS n FROM q JOIN bank.t y ON q.k = y.k")
    assert_check_agrees(threshold_oracle, with_cte, "bank")


@pytest.mark.parametrize("dialect, sql", [
    ("postgres", "SELECT DISTINCT x.f / 0 * 10 AS q, y.dt AS d FROM bank.t x JOIN shop.t y ON x.k = y.k"),
    ("duckdb", "SELECT x.i % 0 AS q, y.dt AS d FROM bank.t x JOIN shop.t y ON x.k = y.k"),
])
def test_a_division_by_zero_at_a_party_is_a_data_error(tmp_path, federation_writer, plaintext_grants, dialect, sql):
    """A party's DuckDB raising 'division by zero' (its own `%`, or PostgreSQL's ERROR()) reached the issuer as
    OperationalError; it depends on the rows, so it is PEP 249's DataError, as the SPU's own refusal is."""
    path = federation_writer(tmp_path, two_parties(), plaintext_grants(PARTIES), parties=PARTIES,
                             min_group_size=0, dialect=dialect)
    with Engine(path) as engine:
        assert engine.check(sql, "bank") is None
        with pytest.raises(sqlsecure.DataError, match="division by zero"):
            engine.execute(sql, "bank")
