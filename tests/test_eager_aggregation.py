"""Eager aggregation over a secret join (issue 16, planner/tree.py `eager_join`): an aggregate over an
inner or LEFT (RIGHT) equi-join whose aggregates read one side only and decompose is computed over that
side pre-aggregated by its join keys, which makes it unique on them, so the SPU joins by a sort (n + m
rows) instead of all pairs (n * m); over a join a side's unique keys already make a sort, only where the
partial's owner computes it padded (tests/test_padded_aggregates.py). Each shape against plain DuckDB (the Oracle, group threshold included)
over the hospitals' horizontally split tables (NULL and repeated pids on both sides, 2 and 3 parties, an
empty party), EXPLAIN saying whether the rewrite applies; shapes it must not rewrite answered as before."""

import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import NotSupportedError
from tests.test_translate import (  # noqa: F401 (hospital_federation: a fixture)
    HOSPITALS, hospital_federation, hospital_grants, hospital_tables, union_of,
)

GRANTS = {"PLAINTEXT": ("diagnosis.pid", "medication.pid", "medication.med"),
          "PLAINTEXT_AFTER_GROUP_BY": ("diagnosis.diag",),
          "PLAINTEXT_AFTER_AGGREGATE": ("diagnosis.time", "medication.time")}
D3, M3 = union_of("diagnosis", "pid, diag, time"), union_of("medication", "pid, med, time")
D2, M2 = union_of("diagnosis", "pid, diag, time", HOSPITALS[:2]), union_of("medication", "pid, med, time", HOSPITALS[:2])
CALLS = ("COUNT(m.time) AS c", "COUNT(*) AS n", "SUM(m.time) AS s", "MIN(m.time) AS lo", "MAX(m.time) AS hi")
ROWS = 16  # per hospital table
TOTAL = {"c": "SUM", "n": "SUM", "s": "SUM", "mean": "MAX", "lo": "MIN", "hi": "MAX"}  # per output, over patients


def per_patient(diagnosis: str, medication: str, join: str = "LEFT JOIN", calls=CALLS, on: str = "d.pid = m.pid",
                having: str = "") -> str:
    """The aggregates of each patient's medications over all parties' rows (an inner aggregate: each
    patient's values totalled by the outer one, so every value is checked)."""
    names = [call.rsplit(" AS ", 1)[1] for call in calls]
    totals = ", ".join(f"{TOTAL[n]}(t.{n}) AS {n}" for n in names)
    return (f"SELECT COUNT(*) AS groups, {totals} FROM (SELECT d.pid, {', '.join(calls)} FROM ({diagnosis}) d "
            f"{join} ({medication}) m ON {on} GROUP BY d.pid{having}) t")


@pytest.fixture(scope="module")
def eager(hospital_federation):
    """{"all": engine, "h1 empty": engine, "h3 empty": engine} over the same data under GRANTS: 16 rows per
    table (NULL and repeated pids, every group non-empty); the all-pairs shapes cost (3n)^2 pairs."""
    engines = {"all": Engine(hospital_federation(GRANTS, n=ROWS), timeout=120),
               "h1 empty": Engine(hospital_federation(GRANTS, empty="h1", n=ROWS), timeout=120),
               "h3 empty": Engine(hospital_federation(GRANTS, empty="h3", n=ROWS), timeout=120)}
    yield engines
    for engine in engines.values():
        engine.close()


@pytest.fixture(scope="module")
def oracles(eager, oracle_for):
    return {name: oracle_for(engine) for name, engine in eager.items()}


def checked(oracle, sql: str, rewritten: bool, issuer: str = "h1"):
    """The answer equals DuckDB's; EXPLAIN names the eager aggregation iff `rewritten`."""
    assert ("eager aggregation:" in oracle.engine.explain(sql, issuer)) is rewritten, sql
    return oracle.check(sql, issuer)


REWRITTEN = {  # name: (query, engine): the rewrite applies
    "q13 histogram, 3 parties": (
        f"SELECT cnt, COUNT(*) AS custdist FROM (SELECT d.pid, COUNT(m.time) AS cnt FROM ({D3}) d LEFT JOIN "
        f"({M3}) m ON d.pid = m.pid AND m.med = 'aspirin' GROUP BY d.pid) t GROUP BY cnt", "all"),
    "q13 histogram, 2 parties": (
        f"SELECT cnt, COUNT(*) AS custdist FROM (SELECT d.pid, COUNT(m.time) AS cnt FROM ({D2}) d LEFT JOIN "
        f"({M2}) m ON d.pid = m.pid GROUP BY d.pid) t GROUP BY cnt", "all"),
    "left, every aggregate": (per_patient(D3, M3), "all"),
    "inner, every aggregate": (per_patient(D3, M3, "JOIN"), "all"),
    "right, every aggregate": (per_patient(D3, M3).replace(f"({D3}) d LEFT JOIN ({M3}) m",
                                                           f"({M3}) m RIGHT JOIN ({D3}) d"), "all"),
    "left, 2 parties": (per_patient(D2, M2), "all"),
    "two join keys": (per_patient(D3, M3, on="d.pid = m.pid AND d.pid % 3 = m.pid % 3"), "all"),
    "inner, an expression of one side": (per_patient(D3, M3, "JOIN", ("COUNT(COALESCE(m.time, 0)) AS c",
                                                                                 "SUM(GREATEST(m.time, 1)) AS s")), "all"),
    "other side's MIN and MAX": (per_patient(D3, M3, "JOIN", ("MIN(d.time) AS lo", "MAX(d.time) AS hi", "COUNT(*) AS n")),
                                 "all"),
    "DECIMAL SUM": (per_patient(D3, M3, calls=("SUM(CAST(m.time AS DECIMAL(38, 2)) / 8) AS s",)), "all"),
    "HAVING over the partials": (per_patient(D3, M3, having=" HAVING COUNT(m.time) > 1 AND SUM(m.time) > 60"), "all"),
    "an empty party": (per_patient(D3, M3), "h3 empty"),
    "the issuer's side, revealed as is": (
        f"SELECT d.diag, {', '.join(CALLS)} FROM ({D3}) d LEFT JOIN h1.medication m ON d.pid = m.pid GROUP BY d.diag", "all"),
    "the issuer's side, inner, HAVING": (
        f"SELECT d.diag, {', '.join(CALLS)} FROM ({D3}) d JOIN h1.medication m ON d.pid = m.pid GROUP BY d.diag "
        "HAVING COUNT(*) > 8", "all"),  # keeps 2 of its 3 groups
    "the issuer's side empty": (
        f"SELECT d.diag, {', '.join(CALLS)} FROM ({D3}) d LEFT JOIN h1.medication m ON d.pid = m.pid GROUP BY d.diag", "h1 empty"),
    "the issuer's side empty, inner": (
        f"SELECT d.diag, {', '.join(CALLS)} FROM ({D3}) d JOIN h1.medication m ON d.pid = m.pid GROUP BY d.diag", "h1 empty"),
    "grouped by the pre-aggregated side's join key": (
        f"SELECT COUNT(*) AS groups, SUM(n) AS n FROM (SELECT m.pid, COUNT(*) AS n FROM ({D3}) d LEFT JOIN "
        f"({M3}) m ON d.pid = m.pid GROUP BY m.pid) t", "all"),
}


@pytest.mark.parametrize("name", REWRITTEN)
def test_eager_aggregation_matches_duckdb(oracles, name):
    sql, federation = REWRITTEN[name]
    checked(oracles[federation], sql, rewritten=True)


# (Expressions that cannot fail on a row: `m.time * 2`, `m.time - d.time` or a CAST to DECIMAL(10, 2) of a
# BIGINT could, which column control refuses for PLAINTEXT_AFTER_AGGREGATE columns under a threshold.)
KEPT = {  # name: query: not decomposable, or not exact: answered by the all-pairs join as before
    "COUNT(DISTINCT)": per_patient(D3, M3, calls=("COUNT(DISTINCT m.time) AS c",)),
    "AVG": per_patient(D3, M3, calls=("AVG(CAST(m.time AS DECIMAL(38, 2))) AS mean", "COUNT(m.time) AS c")),
    "an aggregate reading both sides": per_patient(D3, M3, "JOIN", ("SUM(GREATEST(m.time, d.time)) AS s",)),
    "SUM of the other side": per_patient(D3, M3, "JOIN", ("SUM(d.time) AS s", "COUNT(m.time) AS c")),
    "left, not NULL on an unmatched row": per_patient(D3, M3, calls=("COUNT(COALESCE(m.time, 0)) AS c",)),
    "grouped by the other side's column": (
        f"SELECT COUNT(*) AS groups, SUM(n) AS n FROM (SELECT d.pid, m.med, COUNT(m.time) AS n FROM ({D3}) d "
        f"JOIN ({M3}) m ON d.pid = m.pid GROUP BY d.pid, m.med) t"),
    "outermost over counted rows": (  # its threshold counts h2's and h3's medication rows
        f"SELECT d.diag, COUNT(m.time) AS c FROM ({D3}) d JOIN ({M3}) m ON d.pid = m.pid GROUP BY d.diag"),
}


@pytest.mark.parametrize("name", KEPT)
def test_shapes_not_rewritten_answer_as_before(oracles, name):
    checked(oracles["all"], KEPT[name], rewritten=False)


def test_explain_shows_the_sort_based_join(eager):
    text = eager["all"].explain(REWRITTEN["q13 histogram, 3 parties"][0], "h1")
    assert "[sort-based PK-FK join, right side unique: n+m rows]" in text
    assert "[all pairs" not in text
    assert 'eager aggregation: COUNT("m.time") of h1, h2, h3\'s rows pre-aggregated by the join keys ("m.pid")' in text


def test_check_size_counts_the_sort_based_join(tmp_path, federation_writer, grants_for, assert_refused):
    """1,100 rows per hospital: the all-pairs join of the unions would hold millions of rows, refused at plan
    time (`check` agreeing); pre-aggregated, the join holds n + m rows and is planned."""
    federation_writer(tmp_path, hospital_tables(n=1100), hospital_grants(grants_for, GRANTS), parties=HOSPITALS,
                      min_group_size=2)
    with Engine(tmp_path / "federation.toml", timeout=120) as engine:
        assert "eager aggregation:" in engine.explain(REWRITTEN["q13 histogram, 3 parties"][0], "h1")
        assert_refused(engine, KEPT["COUNT(DISTINCT)"], "h1", NotSupportedError, "beyond the 1,048,576 rows")
