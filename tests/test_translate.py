"""The operator-by-operator translation (issue 16, planner side): any query shape as RunLocal steps, one
secret program on the SPU and a Finish, checked against plain DuckDB (the Oracle, with the group threshold
of nested shapes); refusals at plan time, `check` agreeing."""

import numpy as np
import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import NotSupportedError, PolicyViolation

HOSPITALS = ("h1", "h2", "h3")
DIAGNOSES = np.array(["cdiff", "flu", "heart", "asthma"])
MEDICINES = np.array(["aspirin", "ibuprofen", "statin"])


def hospital_tables(seed: int = 7, n: int = 40, empty: str | None = None) -> dict[str, dict[str, pa.Table]]:
    """Each hospital's diagnosis(pid, diag, time) and medication(pid, med, time) over shared patients (NULL
    pids and times included), a website's logins(uid, pwd) and an agency's scores(id, score)."""
    rng = np.random.default_rng(seed)
    out = {}
    for h in HOSPITALS:
        rows = 0 if h == empty else n

        def ids(nulls: int) -> pa.Array:
            return pa.array([None if i % nulls == 0 else int(v) for i, v in enumerate(rng.integers(1, 15, rows))],
                            pa.int64())

        out[h] = {
            "diagnosis": pa.table({"pid": ids(11), "diag": pa.array(DIAGNOSES[rng.integers(0, 4, rows)]),
                                   "time": pa.array(rng.integers(0, 100, rows), pa.int64())}),
            "medication": pa.table({"pid": ids(13), "med": pa.array(MEDICINES[rng.integers(0, 3, rows)]),
                                    "time": pa.array([None if i % 9 == 0 else int(v) for i, v in
                                                      enumerate(rng.integers(0, 100, rows))], pa.int64())}),
            "logins": pa.table({"uid": pa.array(rng.integers(1, 8, rows), pa.int64()),
                                "pwd": pa.array(np.array(["123456", "secret", "hunter2"])[rng.integers(0, 3, rows)])}),
            "scores": pa.table({"id": pa.array(rng.integers(1, 10, rows), pa.int64()),
                                "score": pa.array(rng.integers(300, 850, rows), pa.int64())}),
        }
    return out


def hospital_grants(grants_toml) -> str:
    """Every hospital lets the others use its columns in aggregates, groups, joins and comparisons only."""
    grants = []
    for viewer in HOSPITALS:
        others = [h for h in HOSPITALS if h != viewer]
        grants.append((viewer, tuple(f"{h}.{t}.*" for h in others for t in ("diagnosis", "medication", "logins",
                                                                             "scores")), "PLAINTEXT_AFTER_AGGREGATE"))
    return grants_toml(*grants)


def union_of(table: str, columns: str, parties=HOSPITALS) -> str:
    return " UNION ALL ".join(f"SELECT {columns} FROM {h}.{table}" for h in parties)


@pytest.fixture(scope="module")
def hospital_federation(tmp_path_factory, federation_writer, grants_for):
    """hospital_federation(empty=None): a 3-hospital federation (min_group_size 2), one hospital's tables
    empty if asked."""

    def make(empty: str | None = None):
        directory = tmp_path_factory.mktemp("hospitals")
        federation_writer(directory, hospital_tables(empty=empty), hospital_grants(grants_for), parties=HOSPITALS,
                          min_group_size=2)
        return directory / "federation.toml"

    return make


@pytest.fixture(scope="module")
def hospitals(hospital_federation):
    with Engine(hospital_federation(), timeout=120) as engine:
        yield engine


@pytest.fixture(scope="module")
def hospital_oracle(hospitals, oracle_for):
    return oracle_for(hospitals)


DIAGNOSIS = union_of("diagnosis", "pid, diag, time")
MEDICATION = union_of("medication", "pid, med, time")

WORKLOADS = {
    "comorbidity": f"SELECT diag, COUNT(*) AS cnt FROM ({DIAGNOSIS}) d GROUP BY diag ORDER BY cnt DESC, diag LIMIT 3",
    "recurrent_cdiff": f"WITH d AS ({DIAGNOSIS}), r AS (SELECT pid, time, ROW_NUMBER() OVER (PARTITION BY pid "
                       "ORDER BY time) AS rn FROM d WHERE diag = 'cdiff' AND pid IS NOT NULL) "
                       "SELECT COUNT(DISTINCT r1.pid) AS patients FROM r r1 JOIN r r2 ON r1.pid = r2.pid "
                       "WHERE r2.rn = r1.rn + 1 AND r2.time - r1.time BETWEEN 1 AND 60",
    "aspirin_count": f"SELECT COUNT(DISTINCT d.pid) AS patients FROM ({DIAGNOSIS}) d JOIN ({MEDICATION}) m "
                     "ON d.pid = m.pid WHERE d.diag = 'heart' AND m.med = 'aspirin' AND d.time <= m.time",
    "password_reuse": "SELECT COUNT(*) AS reused FROM (SELECT uid, pwd FROM ("
                      f"{union_of('logins', 'uid, pwd')}) l GROUP BY uid, pwd HAVING COUNT(*) > 1) t",
    "credit_score": "SELECT COUNT(*) AS spread FROM (SELECT id, MAX(score) - MIN(score) AS gap FROM ("
                    f"{union_of('scores', 'id, score')}) s GROUP BY id) t WHERE gap > 100",
}


@pytest.mark.parametrize("name", WORKLOADS)
def test_horizontal_workloads_match_duckdb(hospitals, hospital_oracle, name):
    hospital_oracle.check(WORKLOADS[name], "h1")


def test_distinct_over_union_all_two_parties(hospitals, hospital_oracle):
    hospital_oracle.check(f"SELECT DISTINCT diag FROM ({union_of('diagnosis', 'diag', ('h2', 'h3'))}) u "
                          "JOIN h1.medication m ON 1 = 1 WHERE m.med = 'statin'", "h1")


def test_self_join_over_union(hospitals, hospital_oracle):
    hospital_oracle.check(f"SELECT a.diag, COUNT(*) AS n FROM ({DIAGNOSIS}) a JOIN ({DIAGNOSIS}) b "
                          "ON a.pid = b.pid AND a.diag <> b.diag GROUP BY a.diag", "h1")


def test_tpch_q13_shape(oracle):
    oracle.check("SELECT cnt, COUNT(*) AS custdist FROM (SELECT c.id, COUNT(o.order_id) AS cnt FROM "
                 "bank.customers c LEFT JOIN shop.orders o ON c.id = o.customer_id GROUP BY c.id) AS t "
                 "GROUP BY cnt ORDER BY custdist DESC, cnt DESC", "bank")


def test_window_partition_over_join(oracle):
    oracle.check("SELECT c.id, o.order_id, ROW_NUMBER() OVER (PARTITION BY c.region ORDER BY o.amount, "
                 "o.order_id) AS r FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id", "bank")


def test_in_subquery_joining_two_parties(oracle):
    oracle.check("SELECT name FROM bank.customers WHERE id IN (SELECT o.customer_id FROM shop.orders o "
                 "JOIN insurer.policies p ON o.customer_id = p.customer_id)", "bank")


def test_aggregate_of_derived_table_of_three_parties(oracle):
    oracle.check("SELECT t.region, COUNT(*) AS n, SUM(t.premium) AS s FROM (SELECT c.region, p.premium FROM "
                 "bank.customers c JOIN shop.orders o ON c.id = o.customer_id JOIN insurer.policies p "
                 "ON p.customer_id = c.id) t GROUP BY t.region", "bank")


def test_empty_party(hospital_federation, oracle_for):
    with Engine(hospital_federation(empty="h3"), timeout=120) as engine:
        oracle_for(engine).check(WORKLOADS["aspirin_count"], "h1")


def test_explain_prints_the_operator_tree(hospitals):
    text = hospitals.explain(WORKLOADS["recurrent_cdiff"], "h1")
    assert "secret program" in text
    assert "window on SPU(h1, h2, h3): row_number() over partition" in text
    assert "share r1 from PYU(h2)" in text
    assert "groups kept with >= 2 distinct" in text
    assert "h2: the row count of each program input" in text


REFUSED = [
    (f"SELECT diag FROM ({DIAGNOSIS}) d INTERSECT SELECT med FROM h2.medication", NotSupportedError, "INTERSECT"),
    (f"SELECT d.pid FROM ({DIAGNOSIS}) d ORDER BY d.time LIMIT 3", PolicyViolation, "pid"),
    (f"SELECT diag, COUNT(*) AS n FROM ({DIAGNOSIS}) d GROUP BY diag ORDER BY MAX(time)", NotSupportedError,
     "ORDER BY"),
    ("SELECT COUNT(*) FROM h1.diagnosis d WHERE EXISTS (SELECT 1 FROM h2.medication m WHERE m.time > d.time "
     "AND m.pid = d.pid)", NotSupportedError, "EXISTS"),
    (f"SELECT diag, STRING_AGG(CAST(pid AS VARCHAR), ',') FROM ({DIAGNOSIS}) d GROUP BY diag", NotSupportedError,
     "STRING_AGG"),
]


@pytest.mark.parametrize("sql, error, named", REFUSED)
def test_refusals_at_plan_time_and_check_agrees(hospitals, sql, error, named):
    with pytest.raises(error) as refused:
        hospitals.plan(sql, "h1")
    assert named.lower() in str(refused.value).lower()
    assert hospitals.check(sql, "h1") == f"{error.__name__}: {refused.value}"
