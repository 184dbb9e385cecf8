"""Values chosen on shares: GREATEST / LEAST (`stage.Stage._extreme`: each argument compared with the choice so
far and taken where it beats it or that is NULL) and CASE / IF / COALESCE / NULLIF over branches of mixed types,
against the DuckDB oracle over two parties, with NULLs, ties and range edges (three parties and secret programs:
tests/test_spu_functions.py's timestamp queries). In the mysql dialect GREATEST / LEAST are NULL where any
argument is (MySQL's; sqlglot writes it as a CASE around DuckDB's GREATEST, which ignores NULLs as PostgreSQL
does), compared with DuckDB over the dialect's rewrite (tests/test_dialects.py compares that rewrite with MariaDB
and PostgreSQL). What the SPU cannot choose among is refused at plan time, naming the function."""

import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import DataError
from tests.conftest import same_multiset, sorted_rows
from tests.test_enclave_dialect_functions import rewritten_in_duckdb
from tests.test_spu_functions import EDGE_JOIN, TWO, edge_tables, refused_by_the_spu

# b.big reaches 2^61 - 1 and -(2^61 - 1); fx 2^45 / 100 - 1; dec a DECIMAL(18, 2); s.k ties b.id on some rows
EXTREMES = [
    f"SELECT b.id, GREATEST(b.big, s.k) AS g, LEAST(b.big, -s.k) AS l, GREATEST(b.id, s.k) AS tie, "
    f"LEAST(b.big, s.k, NULL) AS n {EDGE_JOIN} WHERE b.id >= s.id",
    # integers with DECIMALs exactly, with DOUBLEs in fixed point; a DECIMAL constant
    f"SELECT b.id, LEAST(b.fx, s.k, b.dec) AS l, GREATEST(b.dec, s.k, 0.5) AS d, GREATEST(b.dec, -b.dec) AS a, "
    f"LEAST(b.dec, s.k * 0.25) AS q {EDGE_JOIN} WHERE b.id >= s.id",
    # dates (year 1 to 9999), with a DATE constant and a date string; booleans
    f"SELECT b.id, LEAST(b.day, s.due) AS t, GREATEST(s.due, b.day, DATE '2000-01-01') AS u, "
    f"LEAST(b.day, '1950-06-01') AS v, LEAST(b.flag, s.k > 1) AS f {EDGE_JOIN} WHERE b.id >= s.id",
    # in conditions, under aggregates and under CASE, where a NULL branch takes the other branches' type
    f"SELECT s.k, SUM(GREATEST(b.id, s.k)) AS s, MIN(LEAST(b.dec, s.k)) AS m, MAX(GREATEST(b.big, s.k)) AS x, "
    f"COUNT(GREATEST(b.fx, s.k)) AS c {EDGE_JOIN} WHERE GREATEST(b.id, s.k) <= 5 GROUP BY s.k",
    f"SELECT b.id, CASE WHEN b.flag THEN NULL ELSE GREATEST(s.due, b.day) END AS c, "
    f"IF(s.k > 1, NULL, LEAST(b.dec, s.k)) AS i {EDGE_JOIN} WHERE b.id >= s.id",
]


MIXED_BRANCHES = [
    # a date string beside a date is one (DuckDB casts it); a NULL branch takes the others' type
    f"SELECT b.id, COALESCE(b.day, '2024-01-01') AS a, CASE WHEN b.flag THEN b.day ELSE '2024-01-01' END AS e, "
    f"IF(b.flag, NULL, s.due) AS n, CASE WHEN b.flag THEN NULL WHEN s.k = 1 THEN b.dec END AS d {EDGE_JOIN} "
    f"WHERE b.id >= s.id",
    # NULLIF of a DECIMAL and an integer (exactly), a DOUBLE and an integer, a date and a date string
    f"SELECT b.id, NULLIF(b.dec, s.k) AS x, NULLIF(s.k, b.dec) AS y, NULLIF(b.fx, s.k) AS z, "
    f"NULLIF(b.day, '2000-02-29') AS w, NULLIF(b.day, s.due) AS v {EDGE_JOIN} WHERE b.id >= s.id",
]


@pytest.fixture(scope="module")
def edges(tmp_path_factory, federation_writer, plaintext_grants, oracle_for):
    """{dialect: oracle} over the edge tables of tests/test_spu_functions.py, in DuckDB's and MySQL's dialect."""
    made = {}
    for dialect in ("duckdb", "mysql"):
        path = federation_writer(tmp_path_factory.mktemp(dialect), edge_tables(2 ** 61 - 1, 2.0 ** 45 / 100 - 1),
                                 plaintext_grants(TWO), parties=TWO, min_group_size=0, dialect=dialect)
        made[dialect] = oracle_for(Engine(path, timeout=60))
    yield made
    for oracle in made.values():
        oracle.engine.close()


@pytest.mark.parametrize("sql", EXTREMES + MIXED_BRANCHES)
def test_choices_across_two_parties_match_duckdb(edges, sql):
    assert "SPU(" in edges["duckdb"].engine.explain(sql, "bank")
    edges["duckdb"].check(sql, "bank")


@pytest.mark.parametrize("sql", EXTREMES)
def test_mysql_greatest_and_least_are_null_where_any_argument_is(edges, sql):
    mysql = edges["mysql"]
    assert "SPU(" in mysql.engine.explain(sql, "bank")
    got, want = mysql.engine.execute(sql, "bank").table, rewritten_in_duckdb(mysql, sql)
    assert same_multiset(got, want), (sorted_rows(got), sorted_rows(want))


def test_the_dialects_differ_on_a_null_argument(edges):
    """The same query: DuckDB's GREATEST skips b.big's NULL (row 5), MySQL's is NULL there."""
    sql = f"SELECT b.id, GREATEST(b.big, s.k) AS g {EDGE_JOIN} WHERE b.id = 5 AND s.k > 0"
    answers = {d: edges[d].engine.execute(sql, "bank").table.to_pylist() for d in ("duckdb", "mysql")}
    assert answers == {"duckdb": [{"id": 5, "g": 2}], "mysql": [{"id": 5, "g": None}]}


@pytest.mark.parametrize("sql,name", [
    (f"SELECT GREATEST(s.k, '5') {EDGE_JOIN} WHERE b.id > s.k", "GREATEST of number and text"),  # DuckDB: 5
    (f"SELECT LEAST(b.flag, s.k) {EDGE_JOIN} WHERE b.id > s.k", "LEAST of boolean and number"),  # a BIGINT
    (f"SELECT COALESCE(s.k, '5') {EDGE_JOIN} WHERE b.id > s.k", "COALESCE of number and text"),
    (f"SELECT CASE WHEN b.flag THEN b.dec ELSE '7.5' END {EDGE_JOIN} WHERE b.id > s.k", "CASE of number and text"),
    (f"SELECT IF(b.flag, s.k, b.flag) {EDGE_JOIN} WHERE b.id > s.k", "IF of boolean and number"),
])
def test_values_the_spu_cannot_type_as_duckdb_are_refused_naming_the_function(edges, sql, name):
    """DuckDB answers each (the text read as a number, the boolean as 0 or 1); the SPU chooses among values of
    one kind. The conditionals were refused at run time only (check passed): now at plan time, as GREATEST."""
    refused_by_the_spu(edges["duckdb"].engine, sql, name)
