"""Joins the SPU would pair row by row, planned as sort-based joins (issue 16's speed, planner/rewrite_semijoin.py).

`per_key_extremes` (and `distinct_in_pairs`: EXISTS with one inequality): an aggregate ignoring repeats (DISTINCT, MIN, MAX) of one side's columns over an inner
equi-join with one inequality across the sides (Secrecy's aspirin count) reads that side's rows in pairs,
found by a per-key MIN or MAX of the other side and a sort-based join; where the group threshold counts the
other side's rows too, their rows in pairs are unioned in. `keyed_equalities`: an equality across a join
left in the WHERE becomes a key where it makes a side unique (ROW_NUMBER's partition and number: Secrecy's
recurrent C. diff). Each shape against plain DuckDB (the Oracle, group threshold included) over the
hospitals' horizontally split tables (NULL pids and times, repeated pids, ties), 2 and 3 parties, an empty
party, vertically split tables; EXPLAIN saying whether the rewrite applies, `check` agreeing; shapes
outside the rules answered as before."""

import contextlib

import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import PolicyViolation
from tests.test_translate import COMPARED, HOSPITALS, hospital_federation, union_of  # noqa: F401 (a fixture)

D3, M3 = union_of("diagnosis", "pid, diag, time"), union_of("medication", "pid, med, time")
D2, M2 = union_of("diagnosis", "pid, diag, time", HOSPITALS[:2]), union_of("medication", "pid, med, time", HOSPITALS[:2])
NOTE = "rows in pairs:"


def aspirin(where: str = "d.time <= m.time", diagnosis: str = f"({D3})", medication: str = f"({M3})",
            select: str = "COUNT(DISTINCT d.pid) AS patients", group: str = "") -> str:
    return (f"SELECT {select} FROM {diagnosis} d JOIN {medication} m ON d.pid = m.pid "
            f"WHERE d.diag = 'heart' AND m.med = 'aspirin' AND {where}{group}")


@pytest.fixture(scope="module")
def oracles(hospital_federation, oracle_for):
    """{"all": oracle, "h3 empty": oracle}: 3 hospitals of 16 rows per table under the COMPARED grants."""
    with contextlib.ExitStack() as stack:
        yield {name: oracle_for(stack.enter_context(Engine(hospital_federation(COMPARED, empty, n=16), timeout=120)))
               for name, empty in (("all", None), ("h3 empty", "h3"))}


def checked(oracle, sql: str, rewritten: bool, issuer: str = "h1", note: str = NOTE):
    """EXPLAIN names the rewrite iff `rewritten`, `check` accepts, and the answer equals DuckDB's."""
    text = oracle.engine.explain(sql, issuer)
    assert (note in text) is rewritten, sql
    assert oracle.engine.check(sql, issuer) is None
    return oracle.check(sql, issuer)


REWRITTEN = {  # name: (query, engine)
    "aspirin count, 3 parties": (aspirin(), "all"),
    "aspirin count, 2 parties": (aspirin(diagnosis=f"({D2})", medication=f"({M2})"), "all"),
    "an empty party": (aspirin(), "h3 empty"),
    "strictly before": (aspirin("d.time < m.time"), "all"),
    "at or after, written the other way round": (aspirin("m.time <= d.time"), "all"),
    "expressions of each side, ties": (aspirin("d.time + 5 >= m.time + 5"), "all"),
    "no pair at all": (aspirin("d.time > m.time + 1000"), "all"),
    "the other side's key, MIN and MAX": (aspirin(select="COUNT(DISTINCT m.pid) AS n, MIN(m.pid) AS lo, MAX(m.pid) AS hi"),
                                           "all"),
    "without the owners' filters": ("SELECT COUNT(DISTINCT d.pid) AS n FROM "
                                    f"({D3}) d JOIN ({M3}) m ON d.pid = m.pid AND d.time <= m.time", "all"),
    "EXISTS with an inequality, counted": (
        f"SELECT COUNT(DISTINCT d.pid) AS n FROM ({D3}) d WHERE d.diag = 'heart' AND EXISTS (SELECT 1 FROM ({M3}) m "
        "WHERE m.pid = d.pid AND m.med = 'aspirin' AND d.time <= m.time)", "all"),
    "EXISTS with an inequality, rows listed": (
        f"SELECT d.pid FROM ({D3}) d WHERE EXISTS (SELECT 1 FROM ({M2}) m WHERE m.pid = d.pid "
        "AND m.time > d.time)", "all"),
    "the other side the issuer's own, grouped": (
        aspirin(medication="h1.medication", select="d.pid, COUNT(DISTINCT d.time) AS n", group=" GROUP BY d.pid"),
        "all"),
}


@pytest.mark.parametrize("name", REWRITTEN)
def test_rows_in_pairs_match_duckdb(oracles, name):
    sql, engine = REWRITTEN[name]
    checked(oracles[engine], sql, rewritten=True)


KEPT = {  # name: query outside the rules (all pairs, as before) or planned elsewhere
    "vertically split: one table per party (a PSI join on the PLAINTEXT pid)": aspirin(
        diagnosis="h2.diagnosis", medication="h3.medication"),
    "COUNT(*) counts pairs": aspirin(select="COUNT(*) AS pairs"),
    "two inequalities across": aspirin("d.time <= m.time AND d.time + 50 >= m.time"),
    "a column beside the key, the other side counted": aspirin(select="COUNT(DISTINCT d.time) AS n"),
}


@pytest.mark.parametrize("name", KEPT)
def test_shapes_outside_the_rules_answer_as_before(oracles, name):
    checked(oracles["all"], KEPT[name], rewritten=False)


def test_explain_shows_sort_based_joins_only(oracles):
    text = oracles["all"].engine.explain(REWRITTEN["aspirin count, 3 parties"][0], "h1")
    assert "[all pairs" not in text
    assert text.count("[sort-based PK-FK join, right side unique: n+m rows]") == 2
    assert 'MAX("m.time") per key ("m.pid")' in text and 'MIN("d.time") per key ("d.pid")' in text
    assert "then compacted to the m rows of its other side" in text  # the one size it opens: a public one


def test_column_control_reads_the_query_as_written(hospital_federation, assert_refused):
    """Every column only compared: the MAX and MIN per key are the plan's, not the query's, so the count is
    planned; the query's own MAX(d.pid) is still refused."""
    grants = {"PLAINTEXT_AFTER_COMPARE": ("diagnosis.diag", "medication.med", "diagnosis.time", "medication.time",
                                          "diagnosis.pid", "medication.pid")}
    with Engine(hospital_federation(grants, n=16), timeout=120) as engine:
        assert NOTE in engine.explain(aspirin(), "h1")
        assert_refused(engine, aspirin(select="MAX(d.pid) AS hi"), "h1", PolicyViolation, "pid")


RCDIFF = (f"WITH d AS ({D3}), r AS (SELECT pid, time, ROW_NUMBER() OVER (PARTITION BY pid ORDER BY time) AS rn "
          "FROM d WHERE diag = 'cdiff') SELECT DISTINCT r1.pid FROM r r1 JOIN r r2 "
          "ON r1.pid = r2.pid WHERE r2.time - r1.time >= 1 AND r2.time - r1.time <= 60 AND r2.rn = r1.rn + 1")
NEIGHBOURS = {  # name: (query, engine): the row number's equality a join key, the join a sort
    "recurrent C. diff, 3 parties": (RCDIFF, "all"),
    "an empty party": (RCDIFF, "h3 empty"),
    "the previous row, written the other way round": (RCDIFF.replace("r2.rn = r1.rn + 1", "r1.rn - 1 = r2.rn")
                                                      .replace("r2.time - r1.time", "r1.time - r2.time"), "all"),
}


@pytest.mark.parametrize("name", NEIGHBOURS)
def test_neighbours_by_row_number_match_duckdb(oracles, name):
    sql, engine = NEIGHBOURS[name]
    checked(oracles[engine], sql, rewritten=True, note="[sort-based PK-FK join, right side unique")


def test_row_numbers_without_partition_key_stay_all_pairs(oracles):
    """ROW_NUMBER unique per pid, but the join matches on the number only (another partition key):
    the number alone is no unique key, so the pairs stay."""
    sql = RCDIFF.replace("ON r1.pid = r2.pid WHERE", "ON r1.time = r2.time WHERE")
    checked(oracles["all"], sql, rewritten=False, note="[sort-based PK-FK join")
