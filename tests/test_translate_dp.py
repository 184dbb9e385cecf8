"""Differential privacy through the operator translation (issue 16): one compute party other than the
issuer adds OpenDP noise to its shares of the outermost aggregate before the result opens; groups are
kept by a secret comparison of their noisy count; a UNION ALL adds contribution bounds, a join
multiplies them; what the bounds do not cover is refused at plan time, `check` agreeing; the budget is
charged only when the query runs."""

import decimal
import json

import numpy as np
import pyarrow as pa
import pytest
import sqlglot

from sqlsecure.engine import Engine
from sqlsecure.errors import NotSupportedError, PolicyViolation
from sqlsecure.executors.spu.local import run_spu
from sqlsecure.executors.spu.program import parse_program, run_program
from sqlsecure.planner.physical import SecretQuery
from sqlsecure.planner.reveal import contribution_bound
from sqlsecure.policy import privacy
from tests.conftest import noise_mismatch

HOSPITALS = ("h1", "h2", "registry")


def diagnoses(seed: int, patients: int, most: int) -> pa.Table:
    """A hospital's diagnosis rows: at most `most` per patient (its declared bound), integer costs."""
    rng = np.random.default_rng(seed)
    ids = [p for p in range(1, patients + 1) for _ in range(int(rng.integers(1, most + 1)))]
    return pa.table({"patient_id": pa.array(ids, pa.int64()),
                     "code": pa.array(np.array(["flu", "cdiff", "asthma"])[rng.integers(0, 3, len(ids))]),
                     "cost": pa.array(rng.integers(0, 1200, len(ids)), pa.int64())})  # some above the bound


TABLES = {"h1": {"diagnosis": diagnoses(1, 30, 3)}, "h2": {"diagnosis": diagnoses(2, 25, 2)},
          "registry": {"codes": pa.table({"code": ["flu", "cdiff", "asthma"], "label": ["F", "C", "A"]})}}

DP = """
[privacy.registry]
epsilon = 10.0
query_epsilon = 1.0
delta = 1e-5

[rules."h1.diagnosis"]
identity_column = "patient_id"
max_rows_per_identity = 3
bounds = { cost = [0, 1000] }

[rules."h2.diagnosis"]
identity_column = "patient_id"
max_rows_per_identity = 2
bounds = { cost = [0, 1000] }

[rules."registry.codes"]
identity_column = "code"
max_rows_per_identity = 1
"""

UNION = "(SELECT patient_id, code, cost FROM h1.diagnosis UNION ALL SELECT patient_id, code, cost FROM h2.diagnosis) d"
TOTALS = f"SELECT COUNT(*) AS n, SUM(d.cost) AS s FROM {UNION}"
CLAMPED = f"SELECT COUNT(*) AS n, SUM(LEAST(d.cost, 1000)) AS s FROM {UNION}"


@pytest.fixture
def hospitals(tmp_path, federation_writer, plaintext_grants):
    path = federation_writer(tmp_path, TABLES, plaintext_grants(HOSPITALS) + DP, parties=HOSPITALS)
    with Engine(path, timeout=60) as engine:
        yield engine


@pytest.fixture
def exact(hospitals, oracle_for):
    """exact(sql): plain DuckDB over every party's data (DP off, no group threshold), the oracle's."""
    con = oracle_for(hospitals).con
    return lambda sql: con.sql(sql).to_arrow_table().to_pylist()


@pytest.fixture
def draws(monkeypatch):
    """Every noise draw (scale, integer, mechanism, values), from OpenDP's sampler as it ships."""
    recorded = []
    sample = privacy.sample

    def recording(values, scale, integer, noise):
        out = sample(values, scale, integer, noise)
        recorded.append((scale, integer, noise, out))
        return out

    monkeypatch.setattr(privacy, "sample", recording)
    return recorded


@pytest.fixture
def no_noise(monkeypatch):
    """The sampler draws 0: the noisy values are the exact ones, to compare with the oracle."""
    monkeypatch.setattr(privacy, "sample", lambda values, scale, integer, noise: np.zeros(len(list(values)),
                                                                                           int if integer else float))


def noise_of(engine, sql: str, issuer: str = "registry") -> dict:
    program = json.loads(next(s for s in engine.plan(sql, issuer).physical.steps if isinstance(s, SecretQuery)).program)
    return program["noise"]


def test_union_all_of_two_hospitals_is_answered_with_noise_on_a_share(hospitals, exact, draws):
    """The answer is the exact total plus one draw per value, drawn by a compute party (h1) that is not
    the issuer, at the spine's scales: ε = 1 split over 2 values, an identity in at most 3 + 2 rows."""
    noise = noise_of(hospitals, TOTALS)
    assert noise["party"] == "h1" and noise["mechanism"] == "laplace" and noise["threshold"] is None
    got = hospitals.execute(TOTALS, "registry").table.to_pylist()[0]
    want = exact(CLAMPED)[0]
    (count_scale, count_int, _, n), (sum_scale, sum_int, _, s) = draws
    assert (count_scale, sum_scale) == (pytest.approx(5 / 0.5), pytest.approx(5 * 1000 / 0.5))
    assert count_int and sum_int  # integer data, integer bounds: discrete noise, as on the spine
    assert got["n"] == want["n"] + int(n[0]) and got["s"] == want["s"] + int(s[0])
    assert hospitals.ledger.spent("registry").epsilon == pytest.approx(1.0)


def test_budget_is_spent_only_when_the_query_runs(hospitals):
    text = hospitals.explain(TOTALS, "registry")
    assert "differential privacy (laplace): this query spends ε=1" in text
    assert "noise added by h1 to its shares" in text and "h1: its own noise draws" in text
    assert hospitals.check(TOTALS, "registry") is None
    hospitals.plan(TOTALS, "registry")
    assert hospitals.ledger.spent("registry").epsilon == 0
    hospitals.execute(TOTALS, "registry")
    hospitals.execute(TOTALS, "registry")
    assert hospitals.ledger.spent("registry").epsilon == pytest.approx(2.0)


def test_groups_are_kept_by_a_secret_comparison_of_the_noisy_count(hospitals, exact, no_noise, monkeypatch):
    """With the sampler drawing 0 the noisy values are the exact ones: a group opens iff its count reaches
    the threshold; AVG is the clamped SUM over the COUNT, as on the spine."""
    sql = f"SELECT d.code, COUNT(*) AS n, AVG(d.cost) AS a FROM {UNION} GROUP BY d.code " \
          "ORDER BY n DESC LIMIT 5 OFFSET 1"
    noise = noise_of(hospitals, sql)
    name, at_least = noise["threshold"]
    want = exact(f"SELECT d.code, COUNT(*) AS n, AVG(LEAST(d.cost, 1000)) AS a FROM {UNION} "
                            "GROUP BY d.code ORDER BY n DESC")
    counts = sorted(r["n"] for r in want)
    threshold = (counts[0] + counts[1]) // 2 + 1  # between the two smallest groups: one is dropped
    monkeypatch.setattr("sqlsecure.planner.translate_dp.noisy_count_threshold", lambda dp, scale: threshold)
    got = hospitals.execute(sql, "registry").table.to_pylist()
    assert name == "__n" and at_least > 0
    kept = [r for r in want if r["n"] >= threshold]
    assert len(kept) == len(want) - 1
    kept = kept[1:]  # ORDER BY, LIMIT and OFFSET by the issuer, over the rows released
    assert [r["code"] for r in got] == [r["code"] for r in kept]
    for g, w in zip(got, kept):
        assert g["n"] == w["n"] and g["a"] == pytest.approx(w["a"], abs=1e-3)


def test_an_empty_sum_opens_as_noise_around_zero(hospitals, no_noise):
    """As on the spine (which noises `SUM or 0`): a noised value is never NULL."""
    got = hospitals.execute(f"SELECT COUNT(*) AS n, SUM(d.cost) AS s FROM {UNION} WHERE d.cost < 0", "registry")
    assert got.table.to_pylist() == [{"n": 0, "s": 0}]


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_noise_on_a_share_has_the_samplers_distribution(mechanism):
    """4,000 rows noised by party 1 of 2 (the issuer is party 0), as the spine's sampler test: each opens as
    its value plus one OpenDP draw of the stated scale (variance 2b^2 for Laplace, sigma^2 for Gaussian),
    mean and scale within Chernoff bounds (chance failure below 1e-10 per column); integers get integer
    noise, fixed point real noise, a DECIMAL noise rounded to its digits."""
    n, scale = 4000, 3.0
    table = pa.table({"v": pa.array(np.full(n, 100), pa.int64()), "x": pa.array(np.full(n, 2.5)),
                      "d": pa.array([decimal.Decimal("2.50")] * n, pa.decimal128(12, 2))})
    text = json.dumps({"inputs": [{"columns": [["v", "int"], ["x", "fixed"], ["d", "decimal.2"]]}],
                       "root": {"op": "input", "index": 0},
                       "noise": {"party": "p1", "mechanism": mechanism, "threshold": None, "hidden": [],
                                 "columns": [["v", scale], ["x", scale], ["d", scale]]}})
    program = parse_program(text)
    got = run_spu(2, lambda s: run_program(s, program, {0: table} if s.index == 0 else {}, 0)).results[0]
    for column, true, integer, step in (("v", 100, True, 0), ("x", 2.5, False, 2**-16), ("d", 2.5, False, 0.01)):
        values = [float(v) for v in got.column(column).to_pylist()]
        assert noise_mismatch(values, true, mechanism, scale, integer, resolution=step) is None
    assert all(isinstance(v, int) for v in got.column("v").to_pylist())
    assert len(set(got.column("x").to_pylist())) > n / 2
    assert all(v == v.quantize(decimal.Decimal("0.01")) for v in got.column("d").to_pylist())


@pytest.mark.parametrize("text, bound", [
    ("SELECT 1 FROM h1.diagnosis a JOIN h2.diagnosis b ON a.patient_id = b.patient_id", 6),
    (f"SELECT 1 FROM {UNION}", 5),
    (f"WITH u AS (SELECT patient_id FROM h1.diagnosis UNION ALL SELECT patient_id FROM h2.diagnosis) "
     "SELECT 1 FROM u JOIN registry.codes c ON u.patient_id = c.code", 5),
    ("SELECT 1 FROM h1.diagnosis a JOIN h1.diagnosis b ON a.patient_id = b.patient_id", 9),
    ("SELECT 1 FROM h1.diagnosis WHERE patient_id IN (SELECT patient_id FROM h2.diagnosis)", 6),
])
def test_contribution_bound_adds_over_union_all_and_multiplies_over_joins(text, bound):
    bounds = {("h1", "diagnosis"): 3, ("h2", "diagnosis"): 2, ("registry", "codes"): 1}
    assert contribution_bound(sqlglot.parse_one(text), bounds.get) == bound


@pytest.mark.parametrize("sql, bound", [
    ("SELECT COUNT(*) AS n FROM h1.diagnosis a JOIN h2.diagnosis b ON a.patient_id = b.patient_id", 6),
    ("SELECT COUNT(*) AS n FROM (SELECT patient_id FROM h1.diagnosis UNION ALL SELECT patient_id FROM h1.diagnosis) u "
     "JOIN h2.diagnosis b ON u.patient_id = b.patient_id", 12),  # a table stacked on itself: 3 + 3, times 2
])
def test_the_spines_bound_adds_over_union_all(hospitals, sql, bound):
    """Queries the spine places: `_dp_context` took each table once and multiplied (6 for the second,
    half the rows one identity can put there); the translation takes the same bounds (TOTALS: 3 + 2)."""
    assert not any(isinstance(s, SecretQuery) for s in hospitals.plan(sql, "registry").physical.steps)
    assert f"contributes at most {bound} row(s)" in hospitals.explain(sql, "registry")
    assert "contributes at most 5 row(s)" in hospitals.explain(TOTALS, "registry")


REFUSED = [
    (f"SELECT COUNT(*) AS n FROM (SELECT DISTINCT d.patient_id FROM {UNION}) t", NotSupportedError, "DISTINCT"),
    (f"SELECT SUM(t.r) AS s FROM (SELECT ROW_NUMBER() OVER (PARTITION BY d.code ORDER BY d.cost) AS r FROM {UNION}) t",
     NotSupportedError, "window"),
    (f"SELECT COUNT(*) AS n FROM {UNION} WHERE d.code IN (SELECT code FROM registry.codes)", NotSupportedError,
     "semi / anti join"),
    (f"SELECT COUNT(*) AS n FROM (SELECT d.code, COUNT(*) AS m FROM {UNION} GROUP BY d.code) t", NotSupportedError,
     "inner aggregate"),
    (f"SELECT d.code, COUNT(*) AS n FROM {UNION} GROUP BY d.code HAVING COUNT(*) > 3", NotSupportedError, "HAVING"),
    (f"SELECT MAX(d.cost) AS m FROM {UNION}", NotSupportedError, "MAX"),
    (f"SELECT COUNT(DISTINCT d.patient_id) AS m FROM {UNION}", NotSupportedError, "DISTINCT"),
    (f"SELECT d.code FROM {UNION}", NotSupportedError, "only aggregates"),
    (f"SELECT COUNT(*) * 2 AS n FROM {UNION}", NotSupportedError, "computes over them"),
    (f"SELECT SUM(d.cost + 1) AS n FROM {UNION}", NotSupportedError, "a column as is"),
    (f"SELECT COUNT(*) AS n FROM (SELECT d.cost FROM {UNION} ORDER BY d.cost LIMIT 5) t", NotSupportedError,
     "LIMIT"),
    (f"SELECT SUM(d.patient_id) AS n FROM {UNION}", PolicyViolation, "clamping bounds"),
]


@pytest.mark.parametrize("sql, error, named", REFUSED)
def test_what_the_contribution_bound_does_not_cover_is_refused_unspent(hospitals, assert_refused, sql, error, named):
    assert_refused(hospitals, sql, "registry", error, named)
    with pytest.raises(error):
        hospitals.execute(sql, "registry")
    assert hospitals.ledger.spent("registry").epsilon == 0
