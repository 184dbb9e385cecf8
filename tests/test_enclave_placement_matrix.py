"""`check`, EXPLAIN and execution agree for every query shape under both enclave placements (issue 16):
shapes over a federation view that is a UNION ALL of two parties' tables (grouped and ungrouped DISTINCT
aggregates, SELECT DISTINCT, windows, ORDER BY / LIMIT, a derived table, HAVING), over the parties' rows
combined by UNION [ALL] / INTERSECT [ALL] / EXCEPT, and over a join of the parties (the same, a semi-join, a
LEFT JOIN), each run through `check` and then executed:
refused with the same PEP 249 class `check` named, or equal to plain DuckDB over both parties' rows. With
`placement = "always"` a shape is never answered by another device than the enclave without EXPLAIN saying
so, and a refusal names the enclave."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import sqlglot

from sqlsecure import errors
from sqlsecure.engine import Engine
from sqlsecure.planner.views import expand_views
from tests.conftest import same_multiset, sorted_rows
from tests.test_enclave_queries import enclave_section

PARTIES = ("bank", "shop")
J = "FROM bank.t a JOIN shop.t b ON a.id = b.id"


def rows(seed: int, n: int = 10) -> pa.Table:
    """Keys with duplicates, values with NULLs (every fifth) and repeats; ids 0..n-1 at both parties."""
    rng = np.random.default_rng(seed)
    return pa.table({"id": pa.array(np.arange(n), pa.int64()), "k": pa.array(rng.integers(0, 3, n), pa.int64()),
                     "v": pa.array([None if i % 5 == 0 else int(x) for i, x in enumerate(rng.integers(0, 4, n))],
                                   pa.int64())})


SHAPES = [
    "SELECT k, COUNT(DISTINCT v) AS n FROM allv GROUP BY k",
    "SELECT COUNT(DISTINCT v) AS n FROM allv",
    "SELECT k, SUM(DISTINCT v) AS s, AVG(DISTINCT v) AS a FROM allv GROUP BY k",
    "SELECT DISTINCT k FROM allv",
    "SELECT DISTINCT k, v FROM allv",
    "SELECT DISTINCT k FROM allv WHERE v > 1",
    "SELECT k, COUNT(*) AS c, SUM(v) AS s, MIN(v) AS lo, MAX(v) AS hi FROM allv GROUP BY k HAVING COUNT(*) > 2",
    "SELECT k, v, RANK() OVER (PARTITION BY k ORDER BY v) AS r FROM allv",
    "SELECT k, v, id FROM allv ORDER BY v DESC, k, id LIMIT 4",
    "SELECT COUNT(*) AS c FROM (SELECT DISTINCT k, v FROM allv) t",
    "SELECT k, COUNT(*) AS c FROM (SELECT k, v FROM allv WHERE v > 1) t GROUP BY k",
    f"SELECT a.k, COUNT(DISTINCT b.v) AS n {J} GROUP BY a.k",
    f"SELECT DISTINCT a.k, b.k AS bk {J}",
    f"SELECT a.k + b.k AS s, COUNT(*) AS c, SUM(b.v) AS t {J} GROUP BY a.k + b.k",
    f"SELECT a.id, RANK() OVER (PARTITION BY a.k ORDER BY b.v) AS r {J}",
    f"SELECT a.id, a.k, b.v {J} WHERE a.v > b.v OR b.v IS NULL",
    "SELECT a.k, COUNT(*) AS c FROM bank.t a WHERE a.id IN (SELECT id FROM shop.t WHERE v > 1) GROUP BY a.k",
    "SELECT a.k, b.v FROM bank.t a LEFT JOIN shop.t b ON a.id = b.id AND b.v > 1",
    "SELECT k FROM bank.t UNION SELECT k FROM shop.t",
    f"SELECT COUNT(*) AS c, SUM(s) AS t FROM (SELECT a.k, a.v + b.v AS s {J}) d",
    # set operations and unions of the parties' rows (the enclave's union stage, or the SPU's)
    "SELECT k, v FROM bank.t INTERSECT SELECT k, v FROM shop.t",
    "SELECT k, v FROM shop.t EXCEPT SELECT k, v FROM bank.t",
    "SELECT k, v FROM bank.t INTERSECT ALL SELECT k, v FROM shop.t",
    "SELECT id, v FROM bank.t UNION ALL SELECT id, k FROM shop.t",
    "WITH w AS (SELECT k, v FROM allv WHERE id > 2) SELECT k, MAX(v) AS m, COUNT(*) AS c FROM w GROUP BY k",
    "SELECT k, v, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v, id) AS r FROM (SELECT k, v, id FROM allv) t",
    "SELECT k, COUNT(DISTINCT v) AS n FROM (SELECT k, v FROM bank.t UNION SELECT k, v FROM shop.t) u GROUP BY k",
]


@pytest.fixture(scope="module", params=["always", "cost"])
def oracle(request, tmp_path_factory, federation_writer, plaintext_grants, oracle_for):
    directory = tmp_path_factory.mktemp(f"matrix-{request.param}")
    placement = enclave_section(directory).replace("[enclave]\n", f'[enclave]\nplacement = "{request.param}"\n')
    view = " UNION ALL ".join(f"SELECT id, k, v FROM {p}.t" for p in PARTIES)
    path = federation_writer(directory, {p: {"t": rows(i + 3)} for i, p in enumerate(PARTIES)},
                             f'[views]\nallv = "{view}"\n\n' + plaintext_grants(PARTIES) + placement,
                             parties=PARTIES, min_group_size=0)
    with Engine(path) as engine:
        yield oracle_for(engine)


@pytest.mark.parametrize("sql", SHAPES)
def test_check_explain_and_execution_agree(oracle, sql):
    engine = oracle.engine
    verdict = engine.check(sql, "bank")
    if verdict is not None:
        kind = verdict.split(":")[0]
        with pytest.raises(getattr(errors, kind)) as refused:
            engine.execute(sql, "bank")
        assert f"{kind}: {refused.value}" == verdict  # the same refusal, before anything ran
        if engine.config.enclave.placement == "always":
            assert "enclave" in verdict, verdict
        return
    text = engine.explain(sql, "bank")
    if engine.config.enclave.placement == "always":
        assert "TEEU(" in text or "SPU(" not in text, f"answered on the SPU with placement = always:\n{text}"
    got = engine.execute(sql, "bank").table
    want = oracle.expected(expand_views(sqlglot.parse_one(sql, read="duckdb"), engine.config.views).sql("duckdb"),
                           "bank")
    assert same_multiset(got, want), f"{sql}\n got: {sorted_rows(got)}\nwant: {sorted_rows(want)}"
