"""PostgreSQL's errors in the enclave (`dialect = "postgres"`, `[enclave] placement = "always"`), against a real
PostgreSQL 15 over the same rows (tests/test_postgres_dialect_audit.py's tables and server): the dialect's guards
(division by zero, sqrt / ln / asin outside their domain) raise only on the rows that reach the expression, as
PostgreSQL evaluates them — not on rows the WHERE drops, not in a CASE branch not taken, not on the right of an
AND / OR the left already decides, not for a NULL dividend (a division is strict), not for a group HAVING drops
— and raise where PostgreSQL raises. Such an error depending on dropped rows would also tell the issuer about
a row the query filtered out. The SPU path (the default placement) answers and refuses the same, and more shapes of
the class: nested CASE, a later WHEN's condition, COALESCE, NULLIF, IN lists, BETWEEN, WHERE conjuncts, HAVING."""

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


# More of the class, on both devices (the SPU evaluates every part of an expression on every row and counts a
# guard's failure only where the row reaches it: executors/spu/reach.py; the enclave's DuckDB evaluates IN and
# BETWEEN as PostgreSQL does: tee.expressions.short_circuit). `b.j + a.k` is b.j computed across parties (k is 0),
# so no conjunct is pushed down to corp; b.j - 2 is 0 in rows 4 and 5, whose a.i are 0 and 1000001, b.i 7 and -7.
MORE_ANSWERED = [
    f"SELECT a.id, CASE WHEN b.j + a.k = 2 THEN 0 ELSE CASE WHEN a.f THEN a.i / (b.j - 2) ELSE -1 END END AS q {J}",
    f"SELECT a.id, CASE WHEN b.j + a.k = 2 THEN -1 WHEN a.i / (b.j - 2) > 0 THEN 1 ELSE 0 END AS w {J}",
    f"SELECT a.id, coalesce(CASE WHEN b.j + a.k = 2 THEN a.i END, a.i / (b.j - 2)) AS q {J}",
    f"SELECT a.id, CASE WHEN b.j + a.k <> 2 THEN nullif(a.i / (b.j - 2), 1) END AS q {J}",
    f"SELECT a.id, b.i + a.k IN (a.i / (b.j - 2), 7, -7) AS m {J}",  # the constants first: their x = ANY(...)
    f"SELECT a.id, b.j + a.k BETWEEN 3 AND a.i / (b.j - 2) AS m {J}",
    f"SELECT a.id {J} WHERE a.i / (b.j - 2 + a.k) > 0 AND b.j + a.k <> 2",  # the conjunct that cannot fail first
    f"SELECT a.id {J} WHERE b.j + a.k = 2 OR a.i % (b.j - 2) = 1",
    f"SELECT a.f, sum(a.i + b.k) / (count(*) - 2) AS m {J} GROUP BY a.f HAVING count(*) <> 2",  # outputs of kept groups
    f"SELECT sum(a.i + b.k) / (count(*) - 5) AS m {J} HAVING count(*) <> 5",
    f"SELECT a.f, sum(CASE WHEN b.j + a.k <> 2 THEN a.i / (b.j - 2) END) AS s {J} GROUP BY a.f",
]
MORE_RAISED = [
    f"SELECT a.id, CASE WHEN b.j + a.k = 2 THEN a.i / (b.j - 2) END AS q {J}",
    f"SELECT a.id, coalesce(nullif(a.i, 0), a.i / (b.j - 2)) AS q {J}",
    f"SELECT a.id, b.i + a.k IN (a.i / (b.j - 2), 7) AS m {J}",  # one constant: in the written order
    f"SELECT a.id, b.j + a.k <> 2 OR a.i / (b.j - 2) > 0 AS o {J}",  # NULL OR .. goes on; FALSE OR .. too
    f"SELECT a.id {J} WHERE b.j + a.k >= 2 AND a.i / (b.j - 2 + a.k) > 1",
    f"SELECT a.f, sum(a.i + b.k) / (count(*) - 2) AS m {J} GROUP BY a.f HAVING count(*) <> 1",
]


@pytest.fixture(scope="module")
def enclave(tmp_path_factory, federation_writer, plaintext_grants):
    directory = tmp_path_factory.mktemp("pg-guards")
    always = enclave_section(directory).replace("[enclave]\n", '[enclave]\nplacement = "always"\n')
    with federation(directory, federation_writer, plaintext_grants, always) as engine:
        yield engine


@pytest.mark.parametrize("sql", ANSWERED + MORE_ANSWERED)
def test_guards_raise_only_on_rows_that_reach_them(postgresql, enclave, sql):
    assert "TEEU(" in enclave.explain(sql, "bank")
    got = sorted_rows(enclave.execute(sql, "bank").table)
    want = postgresql_rows(postgresql, sql)
    assert same_rows(got, want, approximate=False), f"{sql}\n got: {got}\nwant: {want}"


def refused_where_postgresql_raises(postgresql, engine, sql: str, device: str, message: str) -> None:
    """PostgreSQL raises on `sql`; `engine` plans it on `device` and fails it with DataError only when run."""
    import adbc_driver_manager

    with pytest.raises(adbc_driver_manager.Error):
        postgresql_rows(postgresql, sql)
    assert engine.check(sql, "bank") is None and device in engine.explain(sql, "bank")  # found when run
    with pytest.raises(DataError, match=message):
        engine.execute(sql, "bank")


@pytest.mark.parametrize("sql", RAISED + MORE_RAISED)
def test_guards_raise_where_postgresql_raises(postgresql, enclave, sql):
    refused_where_postgresql_raises(postgresql, enclave, sql, "TEEU(", "division by zero|out of its domain")


@pytest.fixture(scope="module")
def secret(tmp_path_factory, federation_writer, plaintext_grants):
    with federation(tmp_path_factory.mktemp("pg-guards-spu"), federation_writer, plaintext_grants) as engine:
        yield engine


@pytest.mark.parametrize("sql", [s for i, s in enumerate(ANSWERED)
                                 if i not in (0, 7, 9)] + MORE_ANSWERED)  # divisions only: the SPU's sqrt is slow
def test_the_spu_path_answers_as_postgresql(postgresql, secret, sql):
    assert "SPU(" in secret.explain(sql, "bank")
    got = sorted_rows(secret.execute(sql, "bank").table)
    want = postgresql_rows(postgresql, sql)
    assert same_rows(got, want, approximate=True), f"{sql}\n got: {got}\nwant: {want}"


@pytest.mark.parametrize("sql", [s for s in RAISED if "sqrt" not in s] + MORE_RAISED)
def test_the_spu_path_refuses_where_postgresql_raises(postgresql, secret, sql):
    refused_where_postgresql_raises(postgresql, secret, sql, "SPU(", "divides by zero")
