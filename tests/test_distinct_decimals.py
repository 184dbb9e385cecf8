"""DISTINCT aggregates of DECIMALs on the SPU compare the values exactly (issue 17): COUNT / SUM / AVG
(DISTINCT d) of a DECIMAL(12, 5) whose values lie 1e-5 apart must not merge two of them on one
fixed-point code (16 fractional bits: 2^-16 > 1e-5), grouped and ungrouped, over a view of every
party's rows and over a cross-party join, with NULLs and duplicates, 2 and 3 parties, against plain
DuckDB to the last digit; the join's also in the enclave (DECIMALs there are exact x * 10^s)."""

import decimal

import numpy as np
import pyarrow as pa
import pytest
import sqlglot

from sqlsecure.engine import Engine
from sqlsecure.planner.views import expand_views
from tests.conftest import same_multiset, sorted_rows
from tests.test_enclave_queries import enclave_section
from tests.test_spu_decimal_exact import PARTIES, exactly

STEP = decimal.Decimal("0.00001")


def values(seed: int, n: int) -> pa.Table:
    """n rows: `d` a DECIMAL(12, 5) drawn from 40 neighbours 1e-5 apart (so each value repeats, also
    across parties), NULL every 7th; `g` a group of 3; `note` text that differs only in its last byte."""
    rng = np.random.default_rng(seed)
    steps = rng.integers(0, 40, n)
    return pa.table({"id": pa.array(np.arange(n), pa.int64()),
                     "g": pa.array(rng.integers(0, 3, n), pa.int32()),
                     "d": pa.array([None if i % 7 == 3 else decimal.Decimal("-1.00020") + int(k) * STEP
                                    for i, k in enumerate(steps)], pa.decimal128(12, 5)),
                     "coarse": pa.array([decimal.Decimal(int(k)).scaleb(-3) for k in rng.integers(0, 20, n)],
                                        pa.decimal128(9, 3)),
                     "note": pa.array([f"a note long enough to need more than one limb: {int(k) % 9}" for k in steps])})


def aggregate_grants(parties) -> str:
    """Each party sees the others' `g` after GROUP BY, `id` after a join and the rest after aggregation
    only: the DISTINCT aggregates must run on the SPU, not at the issuer."""
    constraints = {"id": "PLAINTEXT_AFTER_JOIN", "g": "PLAINTEXT_AFTER_GROUP_BY", "d": "PLAINTEXT_AFTER_AGGREGATE",
                   "coarse": "PLAINTEXT_AFTER_AGGREGATE", "note": "PLAINTEXT_AFTER_AGGREGATE"}
    return "\n".join(f'[[grants]]\nparty = "{party}"\ncolumns = ["{owner}.vals.{column}"]\nconstraint = "{constraint}"\n'
                     for party in parties for owner in parties if owner != party
                     for column, constraint in constraints.items())


@pytest.fixture(scope="module", params=[2, 3], ids=["2 parties", "3 parties"])
def oracle(request, tmp_path_factory, federation_writer, oracle_for):
    parties = PARTIES[:request.param]
    tables = {p: {"vals": values(i + 7, 60)} for i, p in enumerate(parties)}
    union = " UNION ALL ".join(f"SELECT id, g, d, coarse, note FROM {p}.vals" for p in parties)
    engine = Engine(federation_writer(tmp_path_factory.mktemp("distinct"), tables,
                                      f'[views]\nallvals = "{union}"\n\n' + aggregate_grants(parties), parties=parties))
    yield oracle_for(engine)
    engine.close()


UNION_QUERIES = [
    "SELECT COUNT(DISTINCT d) AS n FROM allvals",
    "SELECT g, COUNT(DISTINCT d) AS n, COUNT(*) AS c FROM allvals GROUP BY g",
    "SELECT COUNT(DISTINCT d) AS n, SUM(DISTINCT d) AS s FROM allvals",
    "SELECT g, SUM(DISTINCT d) AS s, COUNT(DISTINCT d) AS n FROM allvals GROUP BY g",
    "SELECT COUNT(DISTINCT d + 0.00001) AS n, COUNT(DISTINCT d * 2) AS m, COUNT(DISTINCT -d) AS k FROM allvals",
    "SELECT g, COUNT(DISTINCT CASE WHEN g = 1 THEN d ELSE coarse END) AS n FROM allvals GROUP BY g",
    "SELECT COUNT(DISTINCT d) AS n, COUNT(DISTINCT coarse) AS c, COUNT(DISTINCT note) AS t FROM allvals",
    "SELECT g, COUNT(DISTINCT d) AS n FROM allvals GROUP BY g HAVING COUNT(DISTINCT d) > 20",
]
JOIN_QUERIES = [
    "SELECT COUNT(DISTINCT CASE WHEN a.g = 1 THEN b.d ELSE a.d END) AS n FROM p1.vals a JOIN p2.vals b ON a.id = b.id",
    "SELECT a.g, COUNT(DISTINCT b.d) AS n, SUM(DISTINCT b.d) AS s FROM p1.vals a JOIN p2.vals b ON a.id = b.id "
    "GROUP BY a.g",
    "SELECT COUNT(DISTINCT a.d - b.d) AS n FROM p1.vals a JOIN p2.vals b ON a.id = b.id",
]


AVERAGE_QUERIES = [  # AVG of a secret program is its fixed-point quotient (a DOUBLE); the counts beside it exact
    "SELECT AVG(DISTINCT d) AS a, COUNT(DISTINCT d) AS n FROM allvals",
    "SELECT g, AVG(DISTINCT d) AS a, COUNT(DISTINCT d) AS n FROM allvals GROUP BY g",
]


@pytest.mark.parametrize("sql", UNION_QUERIES + JOIN_QUERIES)
def test_distinct_decimals_are_exact(oracle, sql):
    exactly(oracle, sql)


@pytest.fixture(scope="module")
def enclave_oracle(tmp_path_factory, federation_writer, oracle_for):
    """Two parties' `vals` with `[enclave] placement = "always"`: the same DISTINCT aggregates in the enclave."""
    directory = tmp_path_factory.mktemp("distinct-enclave")
    enclave = enclave_section(directory).replace("[enclave]\n", '[enclave]\nplacement = "always"\n')
    tables = {p: {"vals": values(i + 7, 60)} for i, p in enumerate(PARTIES[:2])}
    union = " UNION ALL ".join(f"SELECT id, g, d, coarse, note FROM {p}.vals" for p in PARTIES[:2])
    with Engine(federation_writer(directory, tables, f'[views]\nallvals = "{union}"\n\n' + aggregate_grants(PARTIES[:2])
                                  + enclave, parties=PARTIES[:2])) as engine:
        yield oracle_for(engine)


@pytest.mark.parametrize("sql", JOIN_QUERIES)
def test_distinct_decimals_in_the_enclave_are_exact(enclave_oracle, sql):
    assert "TEEU(enclave" in enclave_oracle.engine.explain(sql, "p1"), sql
    want = enclave_oracle.expected(expand_views(sqlglot.parse_one(sql, read="duckdb"),
                                                enclave_oracle.engine.config.views).sql("duckdb"), "p1")
    assert sorted_rows(enclave_oracle.engine.execute(sql, "p1").table) == sorted_rows(want), sql


@pytest.mark.parametrize("sql", AVERAGE_QUERIES)
def test_distinct_averages_of_decimals_are_close(oracle, sql):
    assert "SPU" in oracle.engine.explain(sql, "p1"), sql
    got = oracle.engine.execute(sql, "p1").table
    want = oracle.expected(expand_views(sqlglot.parse_one(sql, read="duckdb"), oracle.engine.config.views).sql("duckdb"),
                           "p1")
    assert same_multiset(got, want), f"{sql}\n got: {sorted_rows(got)}\nwant: {sorted_rows(want)}"


def test_the_data_would_collide_in_fixed_point():
    """The test's premise: among these values some distinct neighbours share a 16-bit fixed-point code."""
    column = values(7, 60).column("d").to_pylist()
    present = {v for v in column if v is not None}
    assert len({round(float(v) * 2 ** 16) for v in present}) < len(present)
