"""Expressions of aggregates as outputs of a grouped query in the enclave (`[enclave] placement = "always"`):
`COUNT(*) > 2`, `SUM(x) / COUNT(*)`, a function of a group key and an aggregate, each computed per group inside
the enclave (executors/tee/program.py `projected`, as HAVING is) over aggregates that are never revealed
themselves. Each through `check`, EXPLAIN and execution against plain DuckDB, with NULLs, empty inputs and
groups below the threshold."""

import pytest

from sqlsecure.errors import NotSupportedError
from tests.test_enclave_clauses import oracle, thresholded  # noqa: F401  (module fixtures, reused)
from tests.test_enclave_functions import JOIN

PROJECTED = [
    f"SELECT b.label, COUNT(*) > 2 AS many {JOIN} GROUP BY b.label",
    f"SELECT b.label, SUM(v.qty) / COUNT(*) AS mean, COUNT(*) AS n {JOIN} GROUP BY b.label",
    f"SELECT b.grade, SUM(b.bonus) IS NULL AS none, COALESCE(MAX(v.qty), -1) + 1 AS top {JOIN} GROUP BY b.grade",
    f"SELECT YEAR(v.day) AS y, YEAR(v.day) * 100 + CAST(SUM(b.n) AS BIGINT) AS code {JOIN} GROUP BY YEAR(v.day)",
    f"SELECT CAST(SUM(v.qty) AS BIGINT) // NULLIF(COUNT(b.bonus), 0) AS q, COUNT(*) - COUNT(b.bonus) AS missing {JOIN}",
    f"SELECT b.label, ROUND(AVG(v.amount), 2) AS a {JOIN} GROUP BY b.label HAVING COUNT(*) > 1 "
    "ORDER BY a DESC, b.label LIMIT 3",
    f"SELECT b.label, SUM(v.qty) / COUNT(*) AS mean {JOIN} WHERE v.qty > 1000 GROUP BY b.label",  # no rows
]


@pytest.mark.parametrize("sql", PROJECTED)
def test_expressions_of_aggregates_in_the_enclave_match_duckdb(oracle, sql):
    assert oracle.engine.check(sql, "bank") is None
    assert "TEEU(enclave" in oracle.engine.explain(sql, "bank")
    oracle.check(sql, "bank")


@pytest.mark.parametrize("sql", PROJECTED)
def test_expressions_of_aggregates_keep_the_threshold(thresholded, sql):
    thresholded.check(sql, "bank")


def test_an_aggregate_only_an_expression_reads_is_not_revealed(oracle):
    sql = f"SELECT b.label, SUM(v.qty) / COUNT(*) AS mean {JOIN} GROUP BY b.label"
    assert oracle.engine.execute(sql, "bank").table.column_names == ["label", "mean"]


@pytest.mark.parametrize("sql, named", [
    (f"SELECT b.label, SIGN(SUM(v.qty)) AS s {JOIN} GROUP BY b.label", "SIGN"),  # no enclave rule
    (f"SELECT b.label, SUM(b.n) + 1 AS x {JOIN} GROUP BY b.label", "HUGEINT"),  # SUM of integers: beyond 64 bits
])
def test_what_the_enclave_cannot_compute_per_group_is_named(oracle, sql, named):
    with pytest.raises(NotSupportedError, match="enclave") as refused:
        oracle.engine.plan(sql, "bank")
    assert named.lower() in str(refused.value).lower()
    assert oracle.engine.check(sql, "bank").startswith("NotSupportedError")
