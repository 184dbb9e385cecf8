"""PostgreSQL's errors in the enclave (`dialect = "postgres"`, `[enclave] placement = "always"`), against a real
PostgreSQL 15 over the same rows (tests/test_postgres_dialect_audit.py's tables and server): the dialect's guards
(division by zero, sqrt / ln / asin outside their domain) raise only on the rows that reach the expression, as
PostgreSQL evaluates them — not on rows the WHERE drops, not in a CASE branch not taken, not on the right of an
AND / OR the left already decides, not for a NULL dividend (a division is strict), not for a group HAVING drops
— and raise where PostgreSQL raises. Such an error depending on dropped rows would also tell the issuer about
a row the query filtered out."""

from __future__ import annotations

import pytest

from sqlsecure.errors import DataError
from tests.test_enclave_queries import enclave_section
from tests.test_postgres_dialect_audit import (  # noqa: F401 (the fixture)
    federation, postgresql, postgresql_rows, same_rows, sorted_rows,
)

J = "FROM bank.t a JOIN corp.t b ON a.id = b.id"  # corp's j: 3, -3, 1000, 2, 2; k: 0; a.i NULL in row 3
ANSWERED = [
    f"SELECT a.id, sqrt(a.x - b.y) AS r {J} WHERE a.x > b.y",
    f"SELECT a.id, a.i / (b.j - 2) AS q {J} WHERE b.j <> 2",
    f"SELECT a.id {J} WHERE a.i / (b.j - 2) > 1 AND b.j <> 2",  # PostgreSQL tests the cheaper conjunct first
    f"SELECT a.id, CASE WHEN b.j <> 2 THEN a.i / (b.j - 2) END AS q, "
    f"CASE WHEN a.x > b.y THEN ln(a.x - b.y) ELSE 0 END AS l {J}",
    f"SELECT a.id, b.j = 2 OR a.i / (b.j - 2) > 1 AS o, b.j <> 2 AND a.i % (b.j - 2) = 0 AS n {J}",
    f"SELECT a.id, nullif(a.i, a.i) / b.k AS q, nullif(a.x, a.x) / b.k AS d {J}",  # NULL / 0 is NULL
    f"SELECT a.f, sum(a.i / (b.j - 2)) AS s, count(*) AS c {J} WHERE b.j <> 2 GROUP BY a.f",
    f"SELECT a.f, count(*) AS c {J} GROUP BY a.f HAVING sum(b.j) <> 4 AND sum(a.i) / (sum(b.j) - 4) > 0",
    f"SELECT a.f, CASE WHEN count(*) > 1 THEN sum(a.j + b.k) / (count(*) - 1) END AS m {J} GROUP BY a.f",
    f"SELECT a.id, asin(a.y / 4 + b.k) AS s {J} WHERE a.y BETWEEN -4 AND 4 ORDER BY a.id LIMIT 3",
]
RAISED = [
    f"SELECT a.id, a.i / (b.j - 2) AS q {J}",
    f"SELECT a.id {J} WHERE b.j >= 2 AND a.i / (b.j - 2) > 1",
    f"SELECT a.id, CASE WHEN b.j = 2 THEN a.i / (b.j - 2) END AS q {J}",
    f"SELECT a.id, sqrt(a.x - b.y) AS r {J} WHERE a.x > -10",
    f"SELECT a.f, sum(a.i + b.k) / (count(*) - 2) AS m {J} GROUP BY a.f",
]


@pytest.fixture(scope="module")
def enclave(tmp_path_factory, federation_writer, plaintext_grants):
    directory = tmp_path_factory.mktemp("pg-guards")
    always = enclave_section(directory).replace("[enclave]\n", '[enclave]\nplacement = "always"\n')
    with federation(directory, federation_writer, plaintext_grants, always) as engine:
        yield engine


@pytest.mark.parametrize("sql", ANSWERED)
def test_guards_raise_only_on_rows_that_reach_them(postgresql, enclave, sql):
    assert "TEEU(" in enclave.explain(sql, "bank")
    got = sorted_rows(enclave.execute(sql, "bank").table)
    want = postgresql_rows(postgresql, sql)
    assert same_rows(got, want, approximate=False), f"{sql}\n got: {got}\nwant: {want}"


@pytest.mark.parametrize("sql", RAISED)
def test_guards_raise_where_postgresql_raises(postgresql, enclave, sql):
    import adbc_driver_manager

    with pytest.raises(adbc_driver_manager.Error):
        postgresql_rows(postgresql, sql)
    assert enclave.check(sql, "bank") is None and "TEEU(" in enclave.explain(sql, "bank")  # found when run
    with pytest.raises(DataError, match="division by zero|out of its domain"):
        enclave.execute(sql, "bank")


# The SPU's stage refuses a counted row whose guarded divisor is 0 even where the guard is not reached (a CASE
# branch not taken, per row or per group; the right of an OR / AND the left decides): PostgreSQL answers these
# (executors/spu/stage.py reads the guard as its value; left for the SPU's owners, issue 17).
SPU_GUARD_GAPS = {3, 4, 8}


@pytest.fixture(scope="module")
def secret(tmp_path_factory, federation_writer, plaintext_grants):
    with federation(tmp_path_factory.mktemp("pg-guards-spu"), federation_writer, plaintext_grants) as engine:
        yield engine


@pytest.mark.parametrize("sql", [pytest.param(s, marks=pytest.mark.xfail(strict=True, raises=DataError,
                                                                          reason="SPU: guard outside its branch"))
                                 if i in SPU_GUARD_GAPS else s for i, s in enumerate(ANSWERED)
                                 if i not in (0, 7, 9)])  # the divisions only: the SPU's sqrt / asin are slow
def test_the_spu_path_answers_as_postgresql(postgresql, secret, sql):
    got = sorted_rows(secret.execute(sql, "bank").table)
    want = postgresql_rows(postgresql, sql)
    assert same_rows(got, want, approximate=True), f"{sql}\n got: {got}\nwant: {want}"
