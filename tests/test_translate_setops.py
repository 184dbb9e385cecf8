"""Set operations (INTERSECT / EXCEPT, DISTINCT and ALL; UNION), RIGHT and FULL OUTER joins and window
frames over secret relations (issue 16): each secret-program operator against DuckDB with 2 and 3 compute
parties (NULLs, duplicates, empty inputs), then whole queries through the translation against the Oracle;
refusals at plan time, `check` agreeing."""

import re

import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import DataError, NotSupportedError, PolicyViolation, ProtocolError
from sqlsecure.executors.spu.program import parse_program
from sqlsecure.planner.physical import RunLocal, SecretQuery
from tests.conftest import same_multiset
from tests.test_secret_program import (  # noqa: F401 (_compare_rows: its autouse fixture)
    EMPTY_A, PARTIES, PEOPLE, PEOPLE_COLUMNS, VISIT_COLUMNS, VISITS_A, VISITS_B, _compare_rows, check, inp, program_of,
)
from tests.test_translate import COMPARED, hospital_federation, hospital_oracles, hospitals  # noqa: F401

SETS = [("intersect", False, "INTERSECT"), ("intersect", True, "INTERSECT ALL"), ("except", False, "EXCEPT"),
        ("except", True, "EXCEPT ALL")]
PROJECTED = ["pid", "age", "diag"]  # columns with NULLs and duplicate rows on both sides


def projected(index: int) -> dict:
    return {"op": "project", "child": inp(index), "columns": [[c, f'"{c}"'] for c in PROJECTED]}


@pytest.mark.parametrize("nparties", PARTIES)
@pytest.mark.parametrize("kind, keep_all, written", SETS)
@pytest.mark.parametrize("empty", [None, 0, 1])
def test_set_operations_match_duckdb(nparties, kind, keep_all, written, empty):
    tables = [VISITS_A, VISITS_B]
    if empty is not None:
        tables[empty] = EMPTY_A
    root = {"op": "set", "kind": kind, "all": keep_all, "children": [projected(0), projected(1)]}
    columns = ", ".join(PROJECTED)
    check(nparties, root, [VISIT_COLUMNS, VISIT_COLUMNS], tables,
          f"SELECT {columns} FROM t0 {written} SELECT {columns} FROM t1")


@pytest.mark.parametrize("nparties", PARTIES)
@pytest.mark.parametrize("kind, keep_all, written", SETS)
def test_set_operations_of_a_relation_with_itself_and_invalid_rows(nparties, kind, keep_all, written):
    """Duplicated rows on both sides (a UNION ALL of a table with itself), invalid rows on the right."""
    left = {"op": "union_all", "children": [projected(0), projected(0), projected(1)]}
    right = {"op": "filter", "child": projected(0), "condition": '"age" > 40 OR "pid" IS NULL'}
    root = {"op": "set", "kind": kind, "all": keep_all, "children": [left, right]}
    columns = ", ".join(PROJECTED)
    check(nparties, root, [VISIT_COLUMNS, VISIT_COLUMNS], [VISITS_A, VISITS_B],
          f"(SELECT {columns} FROM t0 UNION ALL SELECT {columns} FROM t0 UNION ALL SELECT {columns} FROM t1) "
          f"{written} (SELECT {columns} FROM t0 WHERE age > 40 OR pid IS NULL)")


@pytest.mark.parametrize("nparties", PARTIES)
@pytest.mark.parametrize("empty", [None, 0, 1])
def test_full_join_matches_duckdb(nparties, empty):
    """NULL keys on both sides never match: their rows come out unmatched, once each."""
    tables = [VISITS_A, PEOPLE]
    if empty is not None:
        tables[empty] = tables[empty].slice(0, 0)
    root = {"op": "join", "kind": "full", "left": inp(0), "right": inp(1), "left_keys": ['"pid"'],
            "right_keys": ['"id"'], "condition": None}
    check(nparties, root, [VISIT_COLUMNS, PEOPLE_COLUMNS], tables, "SELECT * FROM t0 FULL JOIN t1 ON t0.pid = t1.id")


BAD_SETS = [  # (node, what the ProtocolError names)
    ({"kind": "union", "all": False}, "a kind in"),
    ({"kind": "intersect", "all": "yes"}, "boolean 'all'"),
    ({"kind": "except", "all": True, "carry": ["nope"]}, "'carry' lists columns"),
    ({"kind": "except", "all": True, "carry": ["diag"]}, "3 compared columns on the left, 4 on the right"),
]


@pytest.mark.parametrize("fields, named", BAD_SETS)
def test_parse_refuses_bad_set_nodes(fields, named):
    root = {"op": "set", "children": [inp(0), inp(1)], **fields}
    with pytest.raises(ProtocolError, match=re.escape(named)):
        parse_program(program_of(root, [VISIT_COLUMNS, VISIT_COLUMNS]))


# -- whole queries through the translation --------------------------------------------------------------
# The filters on PLAINTEXT_AFTER_COMPARE times keep the issuer from computing the query itself (gather.py):
# these run on the SPU, which the tests assert.

D2 = "SELECT pid, time > 50 AS late FROM h2.diagnosis WHERE time > 30"
D3 = "SELECT pid, time > 50 AS late FROM h3.diagnosis WHERE time < 80"
M1 = "SELECT pid, time > 50 AS late FROM h1.medication WHERE time < 60"
WRITTEN = ["UNION", "INTERSECT", "INTERSECT ALL", "EXCEPT", "EXCEPT ALL", "UNION ALL"]


def on_the_spu(oracle, sql: str, issuer: str = "h1"):
    """The query's plan has a secret program, and its answer is DuckDB's."""
    assert any(isinstance(step, SecretQuery) for step in oracle.engine.plan(sql, issuer).physical.steps)
    return oracle.check(sql, issuer)


@pytest.mark.parametrize("written", WRITTEN)
def test_set_operations_of_two_parties(hospital_oracles, written):
    on_the_spu(hospital_oracles["compared"], f"{D2} {written} {D3}")


def test_explain_names_the_set_operation(hospitals):
    assert "set on SPU(h2, h3): except all (rows compared whole, NULLs equal)" in hospitals["compared"].explain(
        f"{D2} EXCEPT ALL {D3}", "h1")


@pytest.mark.parametrize("written", WRITTEN)
def test_set_operations_of_three_parties(hospital_oracles, written):
    """A UNION ALL of two hospitals against the third's rows (duplicates on both sides)."""
    on_the_spu(hospital_oracles["compared"], f"({D2} UNION ALL {D3}) {written} {M1}")


@pytest.mark.parametrize("written", ["INTERSECT", "EXCEPT ALL"])
def test_set_operations_with_an_empty_party(hospital_federation, oracle_for, written):
    with Engine(hospital_federation(COMPARED, empty="h3"), timeout=120) as engine:
        on_the_spu(oracle_for(engine), f"{D2} {written} {D3}")
        on_the_spu(oracle_for(engine), f"{D3} {written} {D2}")


@pytest.mark.parametrize("written", ["INTERSECT", "EXCEPT", "INTERSECT ALL"])
def test_aggregate_over_a_set_operation_keeps_the_threshold(hospital_oracles, written):
    on_the_spu(hospital_oracles["compared"],
               f"SELECT late, COUNT(*) AS n, COUNT(DISTINCT pid) AS p FROM ({D2} {written} {M1}) t GROUP BY late")


def test_set_operation_in_a_cte_joined_on(hospital_oracles):
    on_the_spu(hospital_oracles["compared"],
               f"WITH both AS ({D2} INTERSECT {D3}) SELECT b.pid, m.pid AS mp FROM both b JOIN h1.medication m "
               "ON b.pid = m.pid WHERE m.time > 20")


OUTER = {  # shapes of RIGHT and FULL joins, 2 and 3 parties, NULL keys on every side
    "right": f"SELECT d.pid, d.late, m.pid AS mp FROM ({D2}) d RIGHT JOIN ({M1}) m ON d.pid = m.pid",
    "right, 2 keys": f"SELECT m.pid AS mp, d.pid FROM ({D2}) d RIGHT OUTER JOIN ({M1}) m ON d.pid = m.pid "
                     "AND m.late = d.late",
    "right, ON filters the NULL side": f"SELECT d.pid, m.pid AS mp FROM ({D2}) d RIGHT JOIN ({M1}) m "
                                       "ON d.pid = m.pid AND d.late",
    "full": f"SELECT d.pid, m.pid AS mp, m.late FROM ({D2}) d FULL JOIN ({M1}) m ON d.pid = m.pid",
    "full, then WHERE": f"SELECT d.pid, m.pid AS mp FROM ({D2}) d FULL OUTER JOIN ({M1}) m ON m.pid = d.pid "
                        "WHERE d.pid IS NULL OR m.late",
    "full of three": f"SELECT d.pid, m.pid AS mp, x.pid AS xp FROM ({D2}) d FULL JOIN ({M1}) m ON d.pid = m.pid "
                     f"FULL JOIN ({D3}) x ON x.pid = m.pid",
    "right after inner": f"SELECT d.pid, m.pid AS mp, x.pid AS xp FROM ({D2}) d JOIN ({M1}) m ON d.pid = m.pid "
                         f"RIGHT JOIN ({D3}) x ON x.pid = d.pid",
    "counted": f"SELECT COUNT(*) AS n, COUNT(d.pid) AS a, COUNT(m.pid) AS b FROM ({D2}) d FULL JOIN ({M1}) m "
               "ON d.pid = m.pid",
}


@pytest.mark.parametrize("shape", OUTER)
def test_right_and_full_joins_match_duckdb(hospital_oracles, shape):
    if shape == "right":  # the derived tables pass pid through (PLAINTEXT): a PSI join, not the SPU
        hospital_oracles["compared"].check(OUTER[shape], "h1")
        return
    on_the_spu(hospital_oracles["compared"], OUTER[shape])


def test_full_join_with_an_empty_party(hospital_federation, oracle_for):
    with Engine(hospital_federation(COMPARED, empty="h3"), timeout=120) as engine:
        on_the_spu(oracle_for(engine), f"SELECT d.pid, x.pid AS xp FROM ({D2}) d FULL JOIN ({D3}) x ON d.pid = x.pid")


OUTER_REFUSED = [  # (query, what the message names): a FULL join's ON is equalities between the sides (a LEFT or
    # RIGHT join's may hold any condition: tests/test_shapes_s12.py)
    (f"SELECT d.pid, m.pid AS mp FROM ({D2}) d FULL JOIN ({M1}) m ON d.pid = m.pid AND m.late", "FULL JOIN ... ON"),
    (f"SELECT d.pid, m.pid AS mp FROM ({D2}) d FULL JOIN ({M1}) m ON d.pid < m.pid", "FULL JOIN ... ON"),
]


@pytest.mark.parametrize("sql, named", OUTER_REFUSED)
def test_outer_join_refusals_at_plan_time_and_check_agrees(hospitals, sql, named):
    engine = hospitals["compared"]
    with pytest.raises(NotSupportedError, match=re.escape(named)) as refused:
        engine.plan(sql, "h1")
    assert engine.check(sql, "h1") == f"NotSupportedError: {refused.value}"


JOINED = {"PLAINTEXT_AFTER_JOIN": ("medication.pid",), "PLAINTEXT_AFTER_COMPARE": ("diagnosis.time",)}


@pytest.fixture(scope="module")
def joined_keys(hospital_federation, oracle_for):
    with Engine(hospital_federation(JOINED), timeout=120) as engine:
        yield oracle_for(engine)


def test_a_join_key_is_plain_only_to_the_preserved_side(joined_keys):
    """SCQL's rule for outer joins: h2's PLAINTEXT_AFTER_JOIN key becomes plain to h1 after a LEFT join that
    preserves h1's rows (each value is one of h1's); RIGHT and FULL joins also reveal h2's unmatched keys."""
    on_the_spu(joined_keys, "SELECT d.pid, m.pid AS mp FROM h1.diagnosis d LEFT JOIN h2.medication m ON d.pid = m.pid")
    for side in ("RIGHT", "FULL"):
        sql = f"SELECT d.pid, m.pid AS mp FROM h1.diagnosis d {side} JOIN h2.medication m ON d.pid = m.pid"
        with pytest.raises(PolicyViolation, match="h2.medication.pid") as refused:
            joined_keys.engine.plan(sql, "h1")
        assert joined_keys.engine.check(sql, "h1") == f"PolicyViolation: {refused.value}"


# -- window frames and AVG ------------------------------------------------------------------------------

FRAMES = {"rows": "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW",
          "partition": "ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING"}
EVERY_COLUMN = '"pid", "age", "cost", "diag"'  # ordered by whole rows, ROWS frames are deterministic


@pytest.mark.parametrize("nparties", PARTIES)
@pytest.mark.parametrize("frame", FRAMES)
@pytest.mark.parametrize("func, arg", [("sum", '"cost"'), ("count", '"age"'), ("min", '"age"'), ("max", '"cost"')])
def test_window_frames_match_duckdb(nparties, frame, func, arg):
    union = {"op": "union_all", "children": [inp(0), inp(1)]}
    order = [[c, False, False] for c in EVERY_COLUMN.split(", ")]
    root = {"op": "window", "child": union, "name": "w", "func": func, "arg": arg, "partition": ['"diag"'],
            "order": order, "frame": frame}
    check(nparties, root, [VISIT_COLUMNS, VISIT_COLUMNS], [VISITS_A, VISITS_B],
          f"SELECT *, {func.upper()}({arg}) OVER (PARTITION BY diag ORDER BY {EVERY_COLUMN} NULLS LAST "
          f"{FRAMES[frame]}) AS w FROM (SELECT * FROM t0 UNION ALL SELECT * FROM t1)")


SCORED = {**COMPARED, "PLAINTEXT": (*COMPARED["PLAINTEXT"], "scores.id", "scores.score")}
SCORES = ("FROM h2.scores s JOIN (SELECT pid FROM h3.diagnosis WHERE time > 30 UNION ALL "
          "SELECT pid FROM h1.diagnosis WHERE time < 60) d ON s.id = d.pid")


@pytest.fixture(scope="module")
def scored(hospital_federation, oracle_for):
    """Scores PLAINTEXT to every hospital, joined with diagnoses filtered on compared times: on the SPU."""
    with Engine(hospital_federation(SCORED), timeout=120) as engine:
        yield oracle_for(engine)


WINDOWED = [
    "SUM(s.score) OVER (PARTITION BY s.id ORDER BY s.score ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)",
    "COUNT(*) OVER (ORDER BY s.id, s.score ROWS UNBOUNDED PRECEDING)",
    "MAX(s.score) OVER (PARTITION BY s.id ORDER BY s.score ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)",
    "MIN(s.score) OVER (PARTITION BY s.id ORDER BY s.score RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)",
    "AVG(s.score) OVER (PARTITION BY s.id)",
    "AVG(s.score) OVER (PARTITION BY s.id ORDER BY s.score)",
    "AVG(s.score) OVER (ORDER BY s.id, s.score ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)",
    "SUM(s.score) OVER (ORDER BY s.id, s.score ROWS UNBOUNDED PRECEDING) - COUNT(*) OVER (ORDER BY s.id, s.score "
    "ROWS UNBOUNDED PRECEDING)",  # tied (equal) rows in one order for both windows, as DuckDB's one sort
    "ROW_NUMBER() OVER (PARTITION BY s.id ORDER BY s.score ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)",
    "PERCENT_RANK() OVER (PARTITION BY s.id ORDER BY s.score)",  # 0 in one-row partitions
    "PERCENT_RANK() OVER (ORDER BY s.score DESC)", "PERCENT_RANK() OVER (PARTITION BY s.id)",
    "CUME_DIST() OVER (PARTITION BY s.id ORDER BY s.score)", "CUME_DIST() OVER (ORDER BY s.id DESC, s.score)",
]


@pytest.mark.parametrize("window", WINDOWED)
def test_window_frames_and_avg_across_parties(scored, window):
    on_the_spu(scored, f"SELECT s.id, s.score, {window} AS w {SCORES}")


def test_a_row_a_filter_dropped_does_not_refuse_the_query(scored):
    """A division by zero refuses the query only on rows that count: a refusal caused by a dropped row
    would tell the issuer that some dropped row holds that value."""
    on_the_spu(scored, f"SELECT s.id, 1000.0 / (s.score - 322) AS r {SCORES} WHERE s.score + 0 * d.pid <> 322")
    with pytest.raises(DataError, match="divides by zero"):
        scored.engine.execute(f"SELECT s.id, 1000.0 / (s.score - 322) AS r {SCORES}", "h1")


FRAMES_REFUSED = ["ROWS BETWEEN 1 PRECEDING AND CURRENT ROW", "ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING",
                  "RANGE BETWEEN UNBOUNDED PRECEDING AND 2 FOLLOWING",
                  "GROUPS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"]


@pytest.mark.parametrize("frame", FRAMES_REFUSED)
def test_other_window_frames_are_refused_naming_the_frame(scored, frame):
    sql = f"SELECT s.id, SUM(s.score) OVER (PARTITION BY s.id ORDER BY s.score {frame}) AS w {SCORES}"
    with pytest.raises(NotSupportedError, match=re.escape(frame)) as refused:
        scored.engine.plan(sql, "h1")
    assert scored.engine.check(sql, "h1") == f"NotSupportedError: {refused.value}"


def test_a_single_party_set_operation_beside_another_party_runs_on_shares(hospital_oracles):
    """h2's INTERSECT would tell the other compute parties how many of its rows pass it: on the SPU."""
    sql = ("SELECT u.pid, m.pid AS mp FROM ((SELECT pid FROM h2.diagnosis WHERE time > 20 EXCEPT ALL "
           "SELECT pid FROM h2.medication) UNION ALL SELECT pid FROM h3.diagnosis) u "
           "JOIN h1.medication m ON u.pid = m.pid")
    assert "EXCEPT" not in " ".join(pushed_down_matching_duckdb(hospital_oracles["compared"], sql).values())


def test_a_public_single_party_set_operation_and_full_join_run_at_their_owner(scored):
    """Every column h2's part reads is PLAINTEXT to the others: its INTERSECT ALL and FULL JOIN run at h2."""
    sql = ("SELECT u.id FROM ((SELECT id FROM h2.scores WHERE score > 400 INTERSECT ALL SELECT s.id FROM h2.scores s "
           "FULL JOIN h2.scores t ON s.id = t.score) UNION ALL SELECT pid FROM h3.diagnosis WHERE time > 30) u")
    local = pushed_down_matching_duckdb(scored, sql)
    assert "INTERSECT ALL" in local["h2"] and "FULL JOIN" in local["h2"]


def pushed_down_matching_duckdb(oracle, sql: str) -> dict[str, str]:
    """Each party's pushed-down SQL (upper case) of a query with a secret program and no aggregate (so no
    threshold: plain DuckDB is the oracle; the Oracle's provenance rewrite takes UNIONs only), its answer
    checked."""
    plan = oracle.engine.plan(sql, "h1").physical
    assert any(isinstance(step, SecretQuery) for step in plan.steps)
    assert same_multiset(oracle.engine.execute(sql, "h1").table, oracle.con.sql(sql).to_arrow_table())
    return {step.party: step.sql.upper() for step in plan.steps if isinstance(step, RunLocal)}
