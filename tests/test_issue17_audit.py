"""Issue 17 audit (every listed function against the real engines): regressions the audit found.

A product with a DOUBLE factor magnifies that factor's encoding error (2^-17) by the other factor:
1e6 * 1e-5 is 15.26 on the SPU, 10 in DuckDB. Compared (WHERE, CASE, BETWEEN, NULLIF), such a value
took the other side than DuckDB's without a word; it is now guarded as an approximate value is
(`approximation.needs_comparison_guard`): a counted row within its error refuses the query (DataError),
any other row compares as DuckDB's doubles do.

A query the SPU refuses goes to the enclave: every party whose columns its cross-party WHERE reads must
keep its piece of the join for the enclave's stage (a party read only there failed with KeyError)."""

import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import DataError
from tests.conftest import sorted_rows
from tests.test_enclave_queries import enclave_section

PARTIES = ("bank", "corp")
JOIN = "FROM bank.t a JOIN corp.u b ON a.id = b.id WHERE a.id >= b.k"


def product_tables() -> dict:
    """A large and a small DOUBLE side by side (1e6 * 1e-5), zeros, NULLs, an integer factor."""
    ids = pa.array([1, 2, 3, 4, 5, 6], pa.int64())
    t = pa.table({"id": ids, "x": pa.array([1e6, -3.75, 0.1, 2.0**20, None, 0.0]),
                  "i": pa.array([3, -7, 0, 12, 5, None], pa.int64())})
    u = pa.table({"id": ids, "k": pa.array([0] * 6, pa.int64()), "y": pa.array([1e-5, 2.5, 0.1, 0.1, 7.0, 1e6])})
    return {"bank": {"t": t}, "corp": {"u": u}}


def product_oracle(directory, grants: str, federation_writer, oracle_for):
    """An oracle over `product_tables` with these grants (and [enclave] section, if any)."""
    path = federation_writer(directory, product_tables(), grants, parties=PARTIES, min_group_size=0)
    with Engine(path, timeout=60) as engine:
        yield oracle_for(engine)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory, federation_writer, plaintext_grants, oracle_for):
    yield from product_oracle(tmp_path_factory.mktemp("issue17"), plaintext_grants(PARTIES), federation_writer,
                              oracle_for)


@pytest.fixture(scope="module")
def enclave_oracle(tmp_path_factory, federation_writer, plaintext_grants, oracle_for):
    """The same tables with an enclave that runs every cross-party query (`placement = "always"`)."""
    directory = tmp_path_factory.mktemp("issue17-enclave")
    always = enclave_section(directory).replace("[enclave]\n", '[enclave]\nplacement = "always"\n')
    yield from product_oracle(directory, plaintext_grants(PARTIES) + always, federation_writer, oracle_for)


@pytest.mark.parametrize("condition", [
    "a.x * b.y > 12", "a.x * b.y BETWEEN 12 AND 20", "a.x * 1000000 > 12",
    "NULLIF(a.x * b.y, 10) IS NULL",
])
def test_a_product_of_a_double_near_what_it_is_compared_with_refuses(oracle, condition):
    """Row 1: 1e6 * 1e-5 is 10 in DuckDB and 15.26 on the SPU (1e-5 held as 2^-16): never a wrong side."""
    sql = f"SELECT a.id, {condition} AS v {JOIN}"
    assert "SPU(" in oracle.engine.explain(sql, "bank")
    with pytest.raises(DataError, match="within their error"):
        oracle.engine.execute(sql, "bank")


@pytest.mark.parametrize("federation, device, sql", [
    ("oracle", "SPU(", f"SELECT a.id, a.x * b.y > 1000 AS v, a.x * b.y < -50 AS w, a.i * b.y > 2 AS z {JOIN}"),
    ("oracle", "SPU(", f"SELECT a.id, a.i * b.k > 0 AS v, a.x + b.y > 0.3 AS w {JOIN}"),
    # TRUNC has no SPU rule (the enclave runs it alone); corp's b.k is read by the WHERE only
    ("enclave_oracle", "TEEU(enclave", f"SELECT a.id, TRUNC(a.x / 2) AS v {JOIN}"),
    ("enclave_oracle", "TEEU(enclave", f"SELECT a.i, COUNT(*) AS n, MAX(TRUNC(a.x)) AS m {JOIN} GROUP BY a.i"),
])
def test_answers_match_duckdb(request, federation, device, sql):
    """Products of DOUBLEs far from what they are compared with; the enclave given a WHERE-only party's columns."""
    oracle = request.getfixturevalue(federation)
    assert device in oracle.engine.explain(sql, "bank")
    oracle.check(sql, "bank")


def test_dates_beyond_9999_and_before_0001_from_the_spu_match_duckdb(tmp_path, federation_writer, plaintext_grants,
                                                                      oracle_for):
    """A date moved past 9999-12-31 or before 0001-01-01 on the SPU is revealed as DuckDB's DATE holds it (days
    since 1970 in date32), not through Python's dates, which end at year 9999 (an OverflowError before)."""
    import datetime
    ids = pa.array([1, 2, 3], pa.int64())
    t = pa.table({"id": ids, "d": pa.array([datetime.date(9999, 12, 31), datetime.date(1, 1, 1), None], pa.date32())})
    u = pa.table({"id": ids, "k": pa.array([0, 0, 0], pa.int64()), "n": pa.array([1, -3, 2], pa.int32())})
    path = federation_writer(tmp_path, {"bank": {"t": t}, "corp": {"u": u}}, plaintext_grants(PARTIES),
                             parties=PARTIES, min_group_size=0)
    with Engine(path, timeout=60) as engine:
        for sql in (f"SELECT a.id, a.d + b.n AS v {JOIN}", f"SELECT a.id, a.d + 1 AS v, a.d - 3 AS w {JOIN}"):
            assert "SPU(" in engine.explain(sql, "bank")
            days = [_as_days(t) for t in (engine.execute(sql, "bank").table, oracle_for(engine).expected(sql, "bank"))]
            assert sorted_rows(days[0]) == sorted_rows(days[1])


def _as_days(table: pa.Table) -> pa.Table:
    """Dates as their days since 1970 (Python's dates, which the row comparison uses, end at year 9999)."""
    return pa.table({n: c.cast(pa.int32()) if pa.types.is_date32(c.type) else c
                     for n, c in zip(table.column_names, table.columns)})
