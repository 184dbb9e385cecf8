"""A filter over a UNION ALL of the parties' parts of a table, evaluated by each branch's owner (issue 16, speed;
planner/placement.py `owner_filtered`, the spine's counterpart of planner/translate.py `owner_flags`).

Horizontally partitioned data (a federation view, or the UNION ALL written out) read `FROM parts WHERE cond`:
each conjunct over the union's columns is evaluated by each branch's owner on its own rows, into one secret
boolean per row the SPU ANDs into the row's validity (the columns only the conditions read are not shared, the
row count shared stays the branch's); where every column a conjunct reads is PLAINTEXT to the other parties,
the owner simply filters. Checked against plain DuckDB (the oracle, with the group threshold counting each
protected branch's kept rows) with 2 and 3 parties, NULLs in the filtered columns, a filter keeping no row of
one branch, stacked conjuncts, LIKE / IN / BETWEEN / dates, an IN-subquery (Secrecy's comorbidity), DP; EXPLAIN
says who evaluates what; refusals unchanged.
"""

import datetime

import numpy as np
import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import PolicyViolation
from sqlsecure.planner.physical import RunLocal, SecureStage
from sqlsecure.policy import privacy

HOSPITALS = ("h1", "h2", "h3")
DEPTS = np.array(["cardio", "er", "icu", "onco", "card-surg"])
DIAGS = np.array(["flu", "cdiff", "covid", "asthma"])


def part(seed: int, n: int = 48) -> dict[str, pa.Table]:
    """One hospital's diagnoses (NULLs in every filtered column; h1 has no 'onco' rows) and its C. diff cohort."""
    rng = np.random.default_rng(seed)
    depts = DEPTS[:4 if seed == 0 else 5][rng.integers(0, 4 if seed == 0 else 5, n)]
    depts = [d if d != "onco" or seed else "er" for d in depts]

    def nulls(values, every):
        return [None if i % every == 3 else v for i, v in enumerate(values)]

    day0 = datetime.date(2020, 1, 1)
    diagnosis = pa.table({
        "pid": pa.array(nulls(rng.integers(1, 40, n).tolist(), 19), pa.int64()),
        "diag": pa.array(DIAGS[rng.integers(0, 4, n)].tolist()),
        "dept": pa.array(nulls(list(depts), 7)),
        "visit": pa.array(nulls([day0 + datetime.timedelta(days=int(d)) for d in rng.integers(0, 365, n)], 11),
                          pa.date32()),
        "ward": pa.array(nulls(rng.integers(0, 6, n).tolist(), 13), pa.int32()),
        "cost": pa.array(rng.integers(100, 5000, n) / 10.0),
    })
    return {"diagnosis": diagnosis, "cohort": pa.table({"pid": pa.array(rng.integers(1, 40, 12), pa.int64())})}


def view(parties, table="diagnosis") -> str:
    columns = "pid, diag, dept, visit, ward, cost" if table == "diagnosis" else "pid"
    return " UNION ALL ".join(f"SELECT {columns} FROM {h}.{table}" for h in parties)


def union_grants(grants_toml, parties) -> str:
    """Each hospital lets the others join on pid, group by diag, compare dept and visit, aggregate cost; ward
    is PLAINTEXT to the others at every hospital but the last, where it may only be compared."""
    sections = []
    for viewer in parties:
        for owner in parties:
            if owner == viewer:
                continue
            sections += [(viewer, (f"{owner}.diagnosis.pid", f"{owner}.cohort.pid"), "PLAINTEXT_AFTER_JOIN"),
                         (viewer, (f"{owner}.diagnosis.diag",), "PLAINTEXT_AFTER_GROUP_BY"),
                         (viewer, (f"{owner}.diagnosis.dept", f"{owner}.diagnosis.visit"), "PLAINTEXT_AFTER_COMPARE"),
                         (viewer, (f"{owner}.diagnosis.cost",), "PLAINTEXT_AFTER_AGGREGATE"),
                         (viewer, (f"{owner}.diagnosis.ward",),
                          "PLAINTEXT_AFTER_COMPARE" if owner == parties[-1] else "PLAINTEXT")]
    return grants_toml(*sections)


def with_views(path, parties, extra: str = "") -> None:
    """The federation file at `path` with the views `diagnosis` and `cohort` over the parties' parts."""
    views = f'[views]\ndiagnosis = "{view(parties)}"\ncohort = "{view(parties, "cohort")}"\n\n'
    path.write_text(path.read_text().replace(f"[parties.{parties[0]}]", views + f"[parties.{parties[0]}]", 1) + extra)


@pytest.fixture(scope="module")
def hospitals(tmp_path_factory, federation_writer, grants_for, oracle_for):
    """{2: oracle, 3: oracle} over the hospitals' parts, the views defined, min_group_size 4."""
    oracles = {}
    for parties in (HOSPITALS[:2], HOSPITALS):
        directory = tmp_path_factory.mktemp(f"union{len(parties)}")
        tables = {h: part(i) for i, h in enumerate(parties)}
        path = federation_writer(directory, tables, union_grants(grants_for, parties), parties=parties)
        with_views(path, parties)
        oracles[len(parties)] = oracle_for(Engine(path, timeout=120))
    yield oracles
    for oracle in oracles.values():
        oracle.engine.close()


def written_out(sql: str, parties) -> str:
    """`sql` over the UNION ALL written out (the oracle has no views; the engine expands them to the same)."""
    return sql.replace("FROM diagnosis", f"FROM ({view(parties)}) AS diagnosis").replace(
        "FROM cohort", f"FROM ({view(parties, 'cohort')}) AS cohort")


def stage_of(engine, sql: str, issuer: str = "h1"):
    """(the spine's UNION ALL stage, each branch's pushdown SQL) of the plan of `sql`."""
    steps = engine.plan(sql, issuer).physical.steps
    return next(s for s in steps if isinstance(s, SecureStage)), [s.sql for s in steps if isinstance(s, RunLocal)]


SECRET_FILTERS = [
    "SELECT diag, COUNT(*) AS n FROM diagnosis WHERE dept LIKE 'card%' GROUP BY diag",
    "SELECT diag, COUNT(*) AS n, SUM(cost) AS s FROM diagnosis WHERE dept IN ('er', 'icu') "
    "AND visit BETWEEN DATE '2020-03-01' AND DATE '2020-10-31' GROUP BY diag",
    "SELECT diag, COUNT(*) AS n FROM diagnosis WHERE visit >= DATE '2020-04-01' AND dept <> 'er' "
    "AND dept NOT LIKE '%surg' GROUP BY diag",
    "SELECT diag, COUNT(*) AS n FROM diagnosis WHERE dept = 'onco' GROUP BY diag",  # no row of h1's branch
    "SELECT diag, COUNT(*) AS n FROM diagnosis WHERE NOT (dept = 'er') OR visit IS NULL GROUP BY diag",
    "SELECT COUNT(*) AS n, SUM(cost) AS s FROM diagnosis WHERE dept IS NOT NULL AND visit < DATE '2020-07-01'",
    "SELECT diag, COUNT(*) AS n FROM diagnosis WHERE dept = 'nowhere' GROUP BY diag",  # no row at all
]


@pytest.mark.parametrize("parties", (2, 3))
@pytest.mark.parametrize("sql", SECRET_FILTERS)
def test_each_branchs_owner_evaluates_the_filter_as_the_oracle_answers(hospitals, parties, sql):
    """The conditions run at the owners as one flag per row; the columns only they read are not shared."""
    oracle = hospitals[parties]
    stage, local = stage_of(oracle.engine, sql)
    assert stage.filters == ('"diagnosis.__own"',)
    assert not {"diagnosis.dept", "diagnosis.visit"} & {column for _, column in stage.inputs}
    assert all("COALESCE" in text and "WHERE" not in text.split("FROM (")[0] for text in local)
    oracle.check(written_out(sql, HOSPITALS[:parties]), "h1")


@pytest.mark.parametrize("parties", (2, 3))
def test_a_filter_on_a_column_plaintext_to_the_others_is_applied_by_its_owner(hospitals, parties):
    """ward is PLAINTEXT to the others at every hospital but the last: those filter it as a WHERE (the rows
    kept may be known), the last evaluates it into its flag; stacked with a secret conjunct."""
    sql = "SELECT diag, COUNT(*) AS n FROM diagnosis WHERE ward BETWEEN 1 AND 4 AND dept LIKE '%o' GROUP BY diag"
    oracle = hospitals[parties]
    stage, local = stage_of(oracle.engine, sql)
    assert stage.filters == ('"diagnosis.__own"',)
    assert "diagnosis.ward" not in {column for _, column in stage.inputs}
    *public, last = local
    assert all('WHERE "diagnosis.ward" BETWEEN 1 AND 4' in text for text in public)
    assert "WHERE" not in last.split(") AS __branch")[-1] and '"diagnosis.ward" BETWEEN 1 AND 4' in last
    filtering = ", ".join(HOSPITALS[:parties - 1])
    assert f"of {filtering}: the rows its WHERE keeps" in oracle.engine.explain(sql, "h1")  # what the others learn
    oracle.check(written_out(sql, HOSPITALS[:parties]), "h1")


def test_a_filter_plaintext_everywhere_needs_no_flag(hospitals):
    """With every branch's conjuncts PLAINTEXT to the others, each owner filters and nothing is flagged."""
    sql = "SELECT diag, COUNT(*) AS n FROM diagnosis WHERE ward > 1 GROUP BY diag"
    oracle = hospitals[2]  # h1 and h2: ward PLAINTEXT at h1 to h2; at h2 (the last) only comparable by h1
    stage, local = stage_of(oracle.engine, sql, "h2")
    assert "ward" in local[0] and "COALESCE" in local[1]  # h2 is the issuer: h1's rows kept known to h2 only
    oracle.check(written_out(sql, HOSPITALS[:2]), "h2")


@pytest.mark.parametrize("parties", (2, 3))
def test_the_group_threshold_counts_each_branchs_kept_rows(hospitals, parties):
    """Groups with fewer than k kept rows of a protected branch are withheld, as the oracle withholds them (the
    condition keeps few rows per group, so some groups are cut: checked against the unthresholded answer)."""
    oracle = hospitals[parties]
    sql = written_out("SELECT diag, COUNT(*) AS n FROM diagnosis WHERE dept = 'icu' "
                      "AND visit >= DATE '2020-02-01' GROUP BY diag", HOSPITALS[:parties])
    got = oracle.check(sql, "h1")
    assert got.num_rows < oracle.con.sql(sql).to_arrow_table().num_rows


@pytest.mark.parametrize("parties", (2, 3))
def test_comorbidity_an_in_subquery_over_the_parties_cohorts(hospitals, parties):
    """Secrecy's comorbidity: the IN-subquery reads every party's cohort (it stays on secret shares), the
    owners' conjunct beside it still becomes their flags."""
    oracle = hospitals[parties]
    for where in ("pid IN (SELECT pid FROM cohort)", "pid IN (SELECT pid FROM cohort) AND dept LIKE 'c%'"):
        sql = f"SELECT diag, COUNT(*) AS cnt FROM diagnosis WHERE {where} GROUP BY diag ORDER BY cnt DESC, diag"
        oracle.check(written_out(sql, HOSPITALS[:parties]), "h1")


def test_explain_says_the_owners_evaluate_the_condition_and_its_columns_are_not_shared(hospitals):
    text = hospitals[3].engine.explain(
        "SELECT diag, COUNT(*) AS n FROM diagnosis WHERE dept LIKE 'card%' AND ward < 3 GROUP BY diag", "h1")
    for i, h in enumerate(HOSPITALS):
        assert f"filter evaluated by {h} on its own rows (u{i}), shared as a secret bit diagnosis.__own: " \
               f"\"diagnosis\".\"dept\" LIKE 'card%'" in text
    assert "filter evaluated by h1 on its own rows (u0), as a WHERE: \"diagnosis\".\"ward\" < 3" in text
    assert 'WHERE "diagnosis.__own"' in text
    assert "its 3 input column(s)" not in text and "its 2 input column(s)" in text  # diag and the flag


def test_column_control_still_applies_to_the_filter(hospitals, assert_refused):
    """The condition's visibility rule holds whoever evaluates it: cost may not be compared by the others."""
    assert_refused(hospitals[2].engine, "SELECT diag, COUNT(*) AS n FROM diagnosis WHERE cost > 100 GROUP BY diag",
                   "h1", PolicyViolation, "cost")


DP = """
[privacy.h1]
epsilon = 3.0
query_epsilon = 1.0
delta = 1e-5

[rules."h1.diagnosis"]
identity_column = "pid"
max_rows_per_identity = 100

[rules."h2.diagnosis"]
identity_column = "pid"
max_rows_per_identity = 100
"""


def test_differential_privacy_over_the_owners_flags(tmp_path, federation_writer, grants_for, oracle_for,
                                                    monkeypatch):
    """Under DP (the translation's plan: the spine's SPU stage takes no DP) the noisy count reads the rows
    each owner's flag keeps: with the sampler drawing 0, the exact count."""
    parties = HOSPITALS[:2]
    path = federation_writer(tmp_path, {h: part(i) for i, h in enumerate(parties)},
                             union_grants(grants_for, parties), parties=parties)
    with_views(path, parties, DP)
    monkeypatch.setattr(privacy, "sample", lambda values, scale, integer, noise: [0] * len(list(values)))
    with Engine(path, timeout=120) as engine:
        sql = "SELECT COUNT(*) AS n FROM diagnosis WHERE dept LIKE 'card%' AND visit >= DATE '2020-03-01'"
        got = engine.execute(sql, "h1").table.to_pylist()
        assert "evaluated by h2 on its own rows" in engine.explain(sql, "h1")
        want = oracle_for(engine).con.sql(written_out(sql, parties)).to_arrow_table().to_pylist()
        assert got == want
