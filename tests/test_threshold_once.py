"""The group threshold's distinct rows counted as sums where no join repeats a row (`threshold.once`).

A protected owner's provenance column is its rows' row numbers: through filters, projections, UNION ALL,
semi-joins, DISTINCT and inner aggregates each value stays on one row at most, so a group's distinct rows
of that owner are its valid rows with the column not NULL, a sum in the group's scan; the translation says
so in the program (`once`) and the SPU then sorts no provenance column. Where a join may repeat a row the
column is counted by value, as before (tests/test_threshold_copies.py runs those shapes against DuckDB).
Against plain DuckDB over 3 hospitals, min_group_size 2, at 16 and 40 rows per table (groups on both sides
of the threshold)."""

import contextlib
import json

import pytest

from sqlsecure.engine import Engine
from sqlsecure.planner.physical import SecretQuery
from tests.test_translate import hospital_federation, union_of  # noqa: F401 (a fixture)

GRANTS = {"PLAINTEXT_AFTER_GROUP_BY": ("diagnosis.diag", "logins.uid", "logins.pwd", "scores.id"),
          "PLAINTEXT_AFTER_AGGREGATE": ("diagnosis.time", "scores.score"),
          "PLAINTEXT_AFTER_JOIN": ("diagnosis.pid", "medication.pid")}
D3 = union_of("diagnosis", "pid, diag, time")
S3 = union_of("scores", "id, score")
L3 = union_of("logins", "uid, pwd")

ONCE = {  # name: a query whose every protected provenance column is counted as a sum
    "comorbidity: IN over a UNION ALL, then GROUP BY": f"SELECT diag, COUNT(*) AS n FROM ({D3}) d "
    "WHERE pid IN (SELECT pid FROM h1.medication) GROUP BY diag",
    "password reuse: DISTINCT of GROUP BY two keys, HAVING": f"SELECT DISTINCT uid FROM ({L3}) l GROUP BY uid, pwd "
    "HAVING COUNT(*) > 1",
    "an aggregate of an aggregate (MIN of the provenance per inner group)": "SELECT COUNT(*) AS reused FROM ("
    f"SELECT uid, pwd FROM ({L3}) l GROUP BY uid, pwd HAVING COUNT(*) > 1) t",
    "credit score: MIN and MAX per key, then a filter": f"SELECT COUNT(*) AS spread FROM (SELECT id, MAX(score) - "
    f"MIN(score) AS gap FROM ({S3}) s GROUP BY id) t WHERE gap > 100",
    "no GROUP BY: COUNTs over a semi-join": f"SELECT COUNT(*) AS n, COUNT(time) AS timed FROM ({D3}) d "
    "WHERE pid IN (SELECT pid FROM h2.medication)",
    "DISTINCT beneath the aggregate (MIN of the provenance per distinct row)": "SELECT pwd, COUNT(*) AS n FROM ("
    f"SELECT DISTINCT uid, pwd FROM ({L3}) l) x GROUP BY pwd",
}
JOINED = f"SELECT d.diag, COUNT(*) AS n FROM ({D3}) d JOIN h2.medication m ON d.pid = m.pid GROUP BY d.diag"


@pytest.fixture(scope="module")
def oracles(hospital_federation, oracle_for):
    with contextlib.ExitStack() as stack:
        yield {n: oracle_for(stack.enter_context(Engine(hospital_federation(GRANTS, n=n), timeout=120)))
               for n in (16, 40)}


def thresholds(engine: Engine, sql: str) -> list[dict]:
    """The thresholded aggregates' `threshold` of the query's secret program."""
    step = next(s for s in engine.plan(sql, "h1").physical.steps if isinstance(s, SecretQuery))
    found, todo = [], [json.loads(step.program)["root"]]
    while todo:
        node = todo.pop()
        if node.get("op") == "aggregate" and node.get("threshold"):
            found.append(node["threshold"])
        todo += [v for v in node.values() if isinstance(v, dict)]
        todo += [c for v in node.values() if isinstance(v, list) for c in v if isinstance(c, dict)]
    return found


@pytest.mark.parametrize("n", [16, 40])
@pytest.mark.parametrize("name", ONCE)
def test_counted_as_sums_and_equal_to_duckdb(oracles, name, n):
    (threshold,) = thresholds(oracles[n].engine, ONCE[name])
    assert threshold["provenance"] and threshold["once"] == threshold["provenance"]
    oracles[n].check(ONCE[name], "h1")


def test_joined_rows_are_counted_by_value(oracles):
    """A diagnosis row may pair with several of h2's medication rows and each of those with several diagnoses:
    no provenance column is `once`, the SPU counts them by value as before."""
    (threshold,) = thresholds(oracles[16].engine, JOINED)
    assert len(threshold["provenance"]) == 3 and not threshold.get("once")
    oracles[16].check(JOINED, "h1")


def test_explain_says_which_are_sums(oracles):
    text = oracles[16].engine.explain(ONCE[next(iter(ONCE))], "h1")
    assert "__prov_r1, __prov_r2: each row once, counted as sums without a sort" in text
