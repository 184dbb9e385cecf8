"""Smoke test of bench/tpch.py and bench/secrecy.py at a tiny scale: every query of their lists parses
and plans, or is refused at plan time with one of the planner's PEP 249 errors (never a crash or an
InternalError); and the generated data gives each query one right answer, so their checks are fair."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import NotSupportedError, PlanError, PolicyViolation

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import secrecy  # noqa: E402
import tpch  # noqa: E402

REFUSALS = (PlanError, PolicyViolation, NotSupportedError)


def plans_or_refuses(engine: Engine, sql: str, issuer: str) -> None:
    try:
        engine.plan(sql, issuer)
    except REFUSALS as exc:
        assert str(exc), f"a refusal without a message for {sql}"


@pytest.fixture(scope="module")
def tpch_engine(tmp_path_factory):
    with Engine(tpch.write_federation(tmp_path_factory.mktemp("tpch"), 0.001)) as engine:
        yield engine


@pytest.mark.parametrize("name", list(tpch.QUERIES))
def test_tpch_query_plans_or_is_refused(tpch_engine, name):
    plans_or_refuses(tpch_engine, tpch.QUERIES[name], tpch.ISSUER)


def test_tpch_refusal_is_reported_not_raised(tpch_engine):
    """`measure` turns a refusal into its class and message (a query no grant allows, to stay refused)."""
    sql = "SELECT c_phone FROM bank.customer"
    measured = tpch.measure(tpch_engine, tpch.Oracle(tpch_engine), sql, tpch.ISSUER)
    assert measured.engine_s is None and not measured.failed
    assert measured.check.startswith("PolicyViolation: ") and "c_phone" in measured.check


@pytest.mark.parametrize("name", list(secrecy.WORKLOADS))
def test_secrecy_query_plans_or_is_refused(tmp_path, name):
    workload = secrecy.WORKLOADS[name]
    with Engine(secrecy.write_federation(tmp_path, workload, 200, None)) as engine:
        plans_or_refuses(engine, workload.sql, workload.parties[0])


def test_secrecy_split_keeps_every_row_once(tmp_path):
    workload = secrecy.WORKLOADS["aspirin"]
    secrecy.write_federation(tmp_path, workload, 300, None)
    for name in ("diagnosis", "medication"):
        parts = [pq.read_table(tmp_path / f"{party}.{name}.parquet") for party in workload.parties]
        assert sum(p.num_rows for p in parts) == 300 and all(p.num_rows for p in parts)


def test_rcdiff_visits_of_a_patient_are_on_distinct_days():
    """ROW_NUMBER() OVER (PARTITION BY pid ORDER BY visit_time) has one answer only without ties."""
    table = secrecy.rcdiff_tables(2000, np.random.default_rng(1))["diagnosis"]
    pairs = set(zip(table["pid"].to_pylist(), table["visit_time"].to_pylist()))
    assert len(pairs) == table.num_rows


def test_comorbidity_top_ten_counts_are_distinct():
    """ORDER BY cnt DESC LIMIT 10 has one answer only when the cohort's counts do not tie."""
    tables = secrecy.comorbidity_tables(500, np.random.default_rng(1))
    cohort = tables["cdiff_cohort"]["pid"]
    diag = tables["diagnosis"].filter(pc.is_in(tables["diagnosis"]["pid"], cohort))["diag"]
    counts = sorted(pc.value_counts(diag).field("counts").to_pylist(), reverse=True)
    assert len(set(counts[:11])) == 11


def test_too_large_names_the_reason():
    workload = secrecy.WORKLOADS["q6"]
    assert "--max-rows 1,000" in secrecy.too_large(workload, 2000, 1000)
    assert "GiB" in secrecy.too_large(workload, 10**12, None)
    assert secrecy.too_large(workload, 1000, None) is None


@pytest.mark.parametrize("name", ["pwd", "credit"])
@pytest.mark.parametrize("rows", [1000, 10_000])
def test_grouped_workloads_reveal_some_groups_and_withhold_others(tmp_path, name, rows):
    """password reuse and credit score group by person: with the default min_group_size (4 rows of the
    group at each party but the issuer) some groups are revealed and some withheld, and credit's filter
    rejects some revealed groups, so the oracle's comparison checks the query and the threshold, not an
    empty result. (password reuse's HAVING COUNT(*) > 1 holds for every group the threshold reveals, which
    has at least 8 rows: it rejects groups only under `--min-group-size 0`.)"""
    import duckdb

    workload = secrecy.WORKLOADS[name]
    secrecy.write_federation(tmp_path, workload, rows, None)
    con = duckdb.connect()
    for i, party in enumerate(workload.parties):
        con.register(f"p{i}", pq.read_table(tmp_path / f"{party}.R.parquet"))
    union = " UNION ALL ".join(f"SELECT *, {i} AS party FROM p{i}" for i in range(3))
    if name == "pwd":  # groups (id, pwd); a user is answered when one of its groups reuses and is revealed
        grouped = f"SELECT id, COUNT(*) > 1 AS answer, {{}} AS revealed FROM ({union}) GROUP BY id, pwd"
    else:  # groups id over 2019's scores; answered when they differ by more than 100
        grouped = (f"SELECT id, MAX(cs) - MIN(cs) > 100 AS answer, {{}} AS revealed FROM ({union}) "
                   "WHERE cs_year = 2019 GROUP BY id")
    enough = "COUNT(*) FILTER (WHERE party = 1) >= 4 AND COUNT(*) FILTER (WHERE party = 2) >= 4"
    revealed, answered, withheld = con.sql(
        f"SELECT COUNT(DISTINCT id) FILTER (WHERE revealed AND answer), "
        f"COUNT(DISTINCT id) FILTER (WHERE revealed AND NOT answer), COUNT(DISTINCT id) FILTER (WHERE NOT revealed) "
        f"FROM ({grouped.format(enough)})").fetchall()[0]
    assert revealed > 0 and withheld > 0 and (answered > 0 if name == "credit" else answered == 0), \
        (revealed, answered, withheld)
