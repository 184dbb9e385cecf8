"""The operator-by-operator translation (issue 16, planner side): any query shape as RunLocal steps, one
secret program on the SPU and a Finish, checked against plain DuckDB (the Oracle, with the group threshold
of nested shapes); refusals at plan time, `check` agreeing."""

import numpy as np
import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import NotSupportedError, PolicyViolation
from sqlsecure.planner.physical import RunLocal, SecretQuery
from sqlsecure.planner.translate import translate

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


GROUPED = {"PLAINTEXT_AFTER_GROUP_BY": ("diagnosis.diag", "medication.med", "logins.uid", "logins.pwd", "scores.id"),
           "PLAINTEXT_AFTER_AGGREGATE": ("diagnosis.pid", "diagnosis.time", "medication.pid", "medication.time",
                                         "scores.score")}
COMPARED = {"PLAINTEXT_AFTER_COMPARE": ("diagnosis.diag", "medication.med", "diagnosis.time", "medication.time"),
            "PLAINTEXT": ("diagnosis.pid", "medication.pid")}


def hospital_grants(grants_toml, grants: dict) -> str:
    """Every hospital lets the others use its columns as `grants` says ({constraint: (table.column, ...)})."""
    sections = []
    for viewer in HOSPITALS:
        others = [h for h in HOSPITALS if h != viewer]
        sections += [(viewer, tuple(f"{h}.{c}" for h in others for c in columns), constraint)
                     for constraint, columns in grants.items()]
    return grants_toml(*sections)


def union_of(table: str, columns: str, parties=HOSPITALS) -> str:
    return " UNION ALL ".join(f"SELECT {columns} FROM {h}.{table}" for h in parties)


@pytest.fixture(scope="module")
def hospital_federation(tmp_path_factory, federation_writer, grants_for):
    """hospital_federation(grants, empty=None, n=40): a 3-hospital federation (min_group_size 2) under `grants`,
    n rows per table, one hospital's tables empty if asked."""

    def make(grants: dict, empty: str | None = None, n: int = 40):
        directory = tmp_path_factory.mktemp("hospitals")
        federation_writer(directory, hospital_tables(n=n, empty=empty), hospital_grants(grants_for, grants),
                          parties=HOSPITALS, min_group_size=2)
        return directory / "federation.toml"

    return make


@pytest.fixture(scope="module")
def hospitals(hospital_federation):
    """{"grouped": engine, "compared": engine}: the same data under the GROUPED and the COMPARED grants."""
    engines = {name: Engine(hospital_federation(grants), timeout=120)
               for name, grants in (("grouped", GROUPED), ("compared", COMPARED))}
    yield engines
    for engine in engines.values():
        engine.close()


@pytest.fixture(scope="module")
def hospital_oracles(hospitals, oracle_for):
    return {name: oracle_for(engine) for name, engine in hospitals.items()}


DIAGNOSIS = union_of("diagnosis", "pid, diag, time")
MEDICATION = union_of("medication", "pid, med, time")

WORKLOADS = {  # name: (query, the grants it needs)
    "comorbidity": (f"SELECT diag, COUNT(*) AS cnt FROM ({DIAGNOSIS}) d GROUP BY diag ORDER BY cnt DESC, diag "
                    "LIMIT 3", "grouped"),
    "recurrent_cdiff": (f"WITH d AS ({DIAGNOSIS}), r AS (SELECT pid, time, ROW_NUMBER() OVER (PARTITION BY pid "
                        "ORDER BY time) AS rn FROM d WHERE diag = 'cdiff' AND pid IS NOT NULL) "
                        "SELECT COUNT(DISTINCT r1.pid) AS patients FROM r r1 JOIN r r2 ON r1.pid = r2.pid "
                        "WHERE r2.rn = r1.rn + 1 AND r2.time - r1.time BETWEEN 1 AND 60", "compared"),
    "aspirin_count": (f"SELECT COUNT(DISTINCT d.pid) AS patients FROM ({DIAGNOSIS}) d JOIN ({MEDICATION}) m "
                      "ON d.pid = m.pid WHERE d.diag = 'heart' AND m.med = 'aspirin' AND d.time <= m.time",
                      "compared"),
    "password_reuse": ("SELECT COUNT(*) AS reused FROM (SELECT uid, pwd FROM ("
                       f"{union_of('logins', 'uid, pwd')}) l GROUP BY uid, pwd HAVING COUNT(*) > 1) t", "grouped"),
    "credit_score": ("SELECT COUNT(*) AS spread FROM (SELECT id, MAX(score) - MIN(score) AS gap FROM ("
                     f"{union_of('scores', 'id, score')}) s GROUP BY id) t WHERE gap > 100", "grouped"),
}


@pytest.mark.parametrize("name", WORKLOADS)
def test_horizontal_workloads_match_duckdb(hospital_oracles, name):
    sql, grants = WORKLOADS[name]
    hospital_oracles[grants].check(sql, "h1")


def test_distinct_over_union_all_beside_a_join(hospital_oracles):
    hospital_oracles["compared"].check(
        f"SELECT DISTINCT u.pid FROM ({union_of('diagnosis', 'pid', ('h2', 'h3'))}) u "
        "JOIN h1.medication m ON u.pid = m.pid WHERE m.med = 'statin'", "h1")


def test_self_join_over_union(hospital_oracles):
    hospital_oracles["compared"].check(f"SELECT COUNT(*) AS n FROM ({DIAGNOSIS}) a JOIN ({DIAGNOSIS}) b "
                                       "ON a.pid = b.pid WHERE a.diag = 'flu' AND b.diag = 'heart'", "h1")


def test_empty_party(hospital_federation, oracle_for):
    with Engine(hospital_federation(COMPARED, empty="h3"), timeout=120) as engine:
        oracle_for(engine).check(WORKLOADS["aspirin_count"][0], "h1")


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
    """Published sizes 128 x 256 x 64: the all-pairs join would hold 2^21 rows, refused before any party
    is asked (check agreeing); with two parties it runs."""
    sql = ("SELECT t.region, COUNT(*) AS n, SUM(t.premium) AS s FROM (SELECT c.region, p.premium FROM "
           "bank.customers c JOIN shop.orders o ON c.id = o.customer_id JOIN insurer.policies p "
           "ON p.customer_id = c.id WHERE c.age < 40 AND o.amount < 250 AND p.claims < 2) t GROUP BY t.region")
    with pytest.raises(NotSupportedError, match="beyond the 1,048,576 rows") as refused:
        oracle.engine.plan(sql, "bank")
    assert oracle.engine.check(sql, "bank") == f"NotSupportedError: {refused.value}"
    oracle.check("SELECT t.region, COUNT(*) AS n, SUM(t.premium) AS s FROM (SELECT c.region, p.premium FROM "
                 "bank.customers c JOIN insurer.policies p ON p.customer_id = c.id WHERE c.age < 40 "
                 "AND p.claims < 2) t GROUP BY t.region", "bank")


def test_explain_prints_the_operator_tree(hospitals):
    text = hospitals["compared"].explain(WORKLOADS["recurrent_cdiff"][0], "h1")
    assert "secret program" in text
    assert "window on SPU(h1, h2, h3): row_number() over partition" in text
    assert "share r1 from PYU(h2)" in text
    assert "groups kept with >= 2 distinct" in text
    assert "h2: the row count of each program input" in text


DERIVED = ("(SELECT c.region, o.category, o.amount FROM bank.customers c JOIN shop.orders o "
           "ON c.id = o.customer_id) t")
REFUSED = [  # (query, error, what the message names): shapes neither placement answers
    (f"SELECT t.region, STRING_AGG(t.category, ',') AS s FROM {DERIVED} GROUP BY t.region", NotSupportedError,
     "aggregates are COUNT, SUM, AVG, MIN, MAX"),
    (f"SELECT t.region, COUNT(*) AS n FROM {DERIVED} GROUP BY t.region ORDER BY MAX(t.amount)", NotSupportedError,
     "ORDER BY"),
    (f"SELECT t.region FROM {DERIVED} FULL JOIN bank.customers c ON c.region = t.region AND c.age > 40",
     NotSupportedError, "FULL JOIN"),
    ("SELECT COUNT(*) AS n FROM bank.customers c WHERE c.age > ANY (SELECT o.amount FROM shop.orders o "
     "WHERE o.customer_id = c.id)", NotSupportedError, "ANY"),
    (f"SELECT t.region, t.amount FROM {DERIVED} RIGHT JOIN insurer.policies p ON p.customer_id = t.amount "
     "AND p.premium > t.amount", NotSupportedError, "pairs every row with every row"),  # its ON decides the pairs
]


@pytest.mark.parametrize("sql, error, named", REFUSED)
def test_refusals_at_plan_time_and_check_agrees(engine, sql, error, named):
    """Refused naming the construct, check agreeing; or — every column read being PLAINTEXT to the issuer
    in this federation — computed at the issuer (planner/gather.py), the translation refusing it."""
    try:
        plan = engine.plan(sql, "bank")
    except error as refused:
        assert named.lower() in str(refused).lower()
        assert engine.check(sql, "bank") == f"{error.__name__}: {refused}"
        return
    assert plan.physical.steps[-1].mode == "tables"
    with pytest.raises(error) as refused:
        translate(plan.qualified, engine.catalog, "bank", 4)
    assert named.lower() in str(refused.value).lower()


def test_a_single_party_filter_runs_on_shares_not_at_its_owner(hospital_oracles):
    """Pushed down, h2's filter would tell the other compute parties how many of its rows pass it: a
    single-party filter, join, aggregate or DISTINCT runs at its owner only when every other party may
    see each column it reads as PLAINTEXT; otherwise on the SPU."""
    sql = ("SELECT COUNT(*) AS n FROM (SELECT pid FROM h2.diagnosis WHERE time > 50 UNION ALL "
           "SELECT pid FROM (SELECT pid, COUNT(*) AS k FROM h3.medication GROUP BY pid) g) u "
           "JOIN h1.medication m ON u.pid = m.pid")
    oracle = hospital_oracles["compared"]
    plan = oracle.engine.plan(sql, "h1").physical
    assert any(isinstance(step, SecretQuery) for step in plan.steps)
    local = {step.party: step.sql.upper() for step in plan.steps if isinstance(step, RunLocal)}
    assert "WHERE" not in local["h2"]  # time is only PLAINTEXT_AFTER_COMPARE to h1 and h3
    assert "GROUP BY" in local["h3"]  # pid is PLAINTEXT to h1 and h2: its group count may be known
    oracle.check(sql, "h1")


def test_an_issuer_that_owns_no_input_receives_the_result(hospital_oracles):
    """h1 asks about h2's and h3's rows only: the compute parties send it their shares of the result."""
    sql = ("SELECT COUNT(*) AS n FROM (SELECT d.pid FROM h2.diagnosis d JOIN h3.medication m ON d.pid = m.pid "
           "WHERE d.time < m.time) t")
    oracle = hospital_oracles["compared"]
    step = next(s for s in oracle.engine.plan(sql, "h1").physical.steps if isinstance(s, SecretQuery))
    assert "h1" not in step.compute
    oracle.check(sql, "h1")


def test_threshold_refuses_a_protected_part_that_repeats_rows(hospitals):
    """The group threshold counts h2's distinct rows: a join of h2's own tables could repeat one."""
    sql = ("SELECT COUNT(*) AS n FROM (SELECT d.pid FROM h2.diagnosis d JOIN h2.medication m ON d.pid = m.pid "
           "UNION ALL SELECT pid FROM h3.diagnosis) t JOIN h1.diagnosis x ON t.pid = x.pid")
    with pytest.raises(PolicyViolation, match="repeat a row"):
        hospitals["compared"].plan(sql, "h1")
    assert hospitals["compared"].check(sql, "h1").startswith("PolicyViolation: ")
