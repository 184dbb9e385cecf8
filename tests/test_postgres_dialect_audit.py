"""Issue 17's audit of `dialect = "postgres"` against a real PostgreSQL (the session's server, tests/conftest.py).

Each group of expressions runs three ways over the same rows — at one party (`{b}` is the party's own table,
the query pushed down whole), across two parties (`{b}` is the other party's table: the SPU, or a party the
grants let compute it) and in the enclave (`placement = "always"`) — and every answer is compared with what
PostgreSQL returns for the same query over the same two tables. A device a group names `None` must refuse
the query at plan time (NotSupportedError naming what it cannot evaluate). The other party's rows are the
first's rotated by two, so cross-party operands differ; NULLs, negatives, halves, zeros, a leap day and
month ends are among them. The SPU's fixed-point answers are compared within the oracle's stated tolerance
(tests/conftest.py REL_TOL, ABS_TOL), the others to 1e-12.
"""

from __future__ import annotations

import datetime
import decimal

import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import Error, NotSupportedError
from tests.conftest import REL_TOL
from tests.dialect_audit import (CROSS, ENCLAVE, LOCAL, PARTIES, PARTY, POWER_REL_TOL, SPU, TEE, arrow_table,
                                 audit_engines, audit_federation, device_of, query, rotated, same_rows, sorted_rows,
                                 sql_values)

COLUMNS = ("id bigint, i bigint, j bigint, x double precision, y double precision, c numeric(10, 2), d date, "
           "ts timestamp, s text, k bigint, f boolean")
D, T = datetime.date, datetime.datetime
ROWS = [  # id, i, j, x, y, c, d, ts, s, k, f
    (1, 7, 2, 2.5, 0.5, "1.25", D(2024, 2, 29), T(2024, 2, 29, 13, 5, 9), "Alice", 0, True),
    (2, -7, 2, -2.5, 3.0, "-2.50", D(2024, 1, 31), T(2024, 1, 31), "bob", 0, False),
    (3, None, 3, None, None, None, None, None, None, 0, None),
    (4, 0, -3, 0.5, 1.5, "0.05", D(1999, 12, 31), T(1999, 12, 31, 23, 59, 59), "", 0, True),
    (5, 1000001, 1000, 1.5, -0.25, "12.35", D(2000, 3, 1), T(2000, 3, 1, 12), "al_%x", 0, False),
]
TYPES = [pa.int64(), pa.int64(), pa.int64(), pa.float64(), pa.float64(), pa.decimal128(10, 2), pa.date32(),
         pa.timestamp("us"), pa.string(), pa.int64(), pa.bool_()]
NAMES = ["id", "i", "j", "x", "y", "c", "d", "ts", "s", "k", "f"]


# group: (expressions over {a} and {b}, the device of each variant: (cross, enclave); None: refused)
GROUPS = {
    # integer / integer truncates toward zero, % takes the dividend's sign, div() truncates the exact quotient;
    # the enclave raises PostgreSQL's division-by-zero error (its guard) on the rows that reach the division
    "division": (["{a}.i / {b}.j", "{a}.i % {b}.j", "mod({a}.i, {b}.j)", "{a}.i / {b}.j::float8", "{a}.c / {b}.j",
                  "{a}.i::numeric / {b}.j", "{a}.x / {b}.y"], (SPU, TEE)),
    "exact div": (["div({a}.i, {b}.j)", "div({a}.c, {b}.j)", "div({a}.c, {b}.c)", "{a}.c % {b}.j"], (PARTY, TEE)),
    "arithmetic": (["abs({a}.x - {b}.y)", "abs({a}.c + {b}.k)", "-{a}.i + {b}.k", "{a}.i * {b}.j",
                    "{a}.c * {b}.c", "{a}.x * {b}.y"], (SPU, TEE)),
    # round(double precision) ties to even, round(numeric) away from zero; ::int of a double ties to even,
    # of a numeric away from zero
    "rounding": (["round({a}.c + {b}.k, 1)", "round({a}.x + {b}.y)", "round(2.5 + {b}.k)", "round({a}.c * {b}.j, -1)",
                  "floor({a}.x + {b}.y)", "ceil({a}.x - {b}.y)", "floor({a}.c * {b}.j)", "ceiling({a}.c + {b}.k)",
                  "{a}.x::int + {b}.k", "{a}.c::int + {b}.k", "(({a}.x + {b}.y) * 10)::int",
                  "{a}.c::numeric(10, 1) + {b}.k", "{a}.x::bigint + {b}.k"], (SPU, TEE)),
    "math": (["sqrt({a}.x * {a}.x + {b}.y * {b}.y)", "exp({a}.x + {b}.y)", "ln({a}.j * {a}.j + {b}.k)",
              "log({a}.j * {a}.j + {b}.k)", "power({a}.x + {b}.k, 2)",
              "asin({a}.y / 4 + {b}.k)", "acos({a}.y / 4 + {b}.k)"], (SPU, TEE)),
    # a secret exponent: EXP(y LN x) on the SPU, within its stated accuracy
    "power": (["{a}.j ^ ({b}.k + 2)"], (SPU, TEE), POWER_REL_TOL),
    "trigonometry": (["sin({a}.x + {b}.y)", "cos({a}.x + {b}.y)", "tan({a}.x + {b}.k)", "atan({a}.x + {b}.y)",
                      "atan2({a}.x, {b}.y)", "pi() * {a}.j + {b}.k"], (SPU, TEE)),
    "conditionals": (["coalesce({a}.i, {b}.j)", "coalesce({a}.x, {b}.j)", "nullif({a}.i, {b}.i)",
                      "CASE WHEN {a}.i > {b}.j THEN 1 WHEN {a}.f THEN 2 ELSE 3 END", "CASE WHEN {b}.f THEN {a}.x END",
                      "{a}.i + {b}.k IN (7, 0, -7)", "{a}.i + {b}.k NOT IN (7, NULL)", "{a}.i BETWEEN {b}.j AND 10",
                      "{a}.i BETWEEN SYMMETRIC 10 AND {b}.j", "{a}.i + NULL + {b}.k", "{a}.f AND {b}.f",
                      "NOT ({a}.f OR {b}.f)"], (SPU, TEE)),
    "strings": (["{a}.s LIKE 'al\\_%' OR {b}.f", "{a}.s ILIKE 'AL\\_%' OR {b}.f", "{a}.s LIKE {b}.s",
                 "{a}.s NOT LIKE '%b%' AND {b}.k = 0", "{a}.s < {b}.s", "{a}.s || {b}.s", "{a}.i || {b}.s",
                 "substr({a}.s, -1, 3) || {b}.s", "substr({a}.s, 0, {b}.k::int + 2)", "substr({a}.s, {b}.j::int)",
                 "{a}.c::text || {b}.s", "{a}.d::text || {b}.s", "{a}.f::text || {b}.s", "upper({a}.s) || {b}.s",
                 "to_char({a}.ts, 'YYYY-MM-DD HH24:MI:SS') || {b}.s",
                 "to_char({a}.ts, 'FMDD/FMMM TMDay TMMon IYYY-IW DDD US') || {b}.s"], (PARTY, None)),
    "dates": (["{a}.d + {b}.j::int", "{a}.d - {b}.d", "{a}.d - {b}.j::int", "{a}.d + interval '1 month' < {b}.d + 40",
               "{a}.d < {b}.d + 1", "{a}.ts::date < {b}.d", "extract(year from {a}.d) + {b}.k",
               "extract(month from {a}.ts) + {b}.k", "date_part('day', {a}.d) + {b}.k"], (SPU, TEE)),
    "calendar": (["extract(dow from {a}.d) + {b}.k", "extract(isodow from {a}.d) + {b}.k",
                  "extract(doy from {a}.d) + {b}.k", "extract(week from {a}.d) + {b}.k",
                  "extract(quarter from {a}.d) + {b}.k", "extract(epoch from {a}.ts) + {b}.k",
                  "date_trunc('month', {a}.ts) < {b}.ts", "age({a}.d, {b}.d)",
                  "extract(epoch from {a}.ts - {b}.ts)"], (PARTY, None)),
}
AGGREGATES = {  # one row each; avg of integers is NUMERIC in PostgreSQL, sum of bigints NUMERIC
    "aggregates": (["avg({a}.i + {b}.k)", "avg({a}.j + {b}.k)", "sum({a}.i * {b}.j)", "sum({a}.j + {b}.k) / count(*)",
                    "avg({a}.c + {b}.c)", "count(DISTINCT {a}.j + {b}.k)", "count({a}.i + {b}.k)",
                    "sum({a}.x + {b}.k)", "min({a}.d + {b}.j::int)"], (SPU, TEE)),
    "text aggregates": (["string_agg({a}.s || {b}.s, ',' ORDER BY {a}.id)", "max({a}.s || {b}.s)",
                         "bool_and({a}.f AND {b}.f)", "stddev({a}.j + {b}.k)"], (PARTY, None)),
}
# PostgreSQL raises an error; so must every device
ERRORS = ["{a}.i / ({b}.j - {b}.j)", "{a}.i % ({b}.k)", "sqrt({a}.x + {b}.k)", "ln({a}.y + {b}.k)",
          "log({a}.j + {b}.j)", "asin({a}.y + {b}.k)", "power({a}.x - 3, {b}.y + 0.25)", "exp({a}.x * 1000 + {b}.k)",
          "substr({a}.s, 1, -1 + {b}.k::int)"]
# refused by name on every device, at plan time
REFUSED = [("round({a}.x * {b}.j, 1)", "round(double precision, integer)"), ("div({a}.x, {b}.j)", "DIV"),
           ("({a}.x + {b}.y)::text", "text of a double precision"), ("{a}.x || {b}.s", "text of a double precision"),
           ("to_char({a}.ts, 'HH12 AM') || {b}.s", "TO_CHAR"), ("to_char({a}.ts, 'Day') || {b}.s", "TO_CHAR"),
           ("to_char({a}.ts, 'D WW') || {b}.s", "TO_CHAR"), ("to_char({a}.x, '999.99') || {b}.s", "number's to_char"),
           ("{a}.x::numeric + {b}.k", "NUMERIC without a precision")]


@pytest.fixture(scope="module")
def postgresql(postgres):
    """The two parties' tables in one PostgreSQL database, schemas bank and corp."""
    database = postgres.database("postgres_dialect_audit")
    statements = [f"CREATE SCHEMA {p}; CREATE TABLE {p}.t ({COLUMNS}); "
                  f"INSERT INTO {p}.t VALUES {sql_values(rotated(ROWS, p))};" for p in PARTIES]
    postgres.sql(" ".join(statements), database)
    return postgres.uri(database)


def postgresql_rows(uri: str, sql: str) -> list[tuple]:
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(uri) as con, con.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")
        cursor.execute(sql)
        table = cursor.fetch_arrow_table()
    numeric = [(f.metadata or {}).get(b"ADBC:postgresql:typname") == b"numeric" for f in table.schema]
    return sorted_rows(pa.table([pa.array([None if v is None else decimal.Decimal(v) for v in c.to_pylist()])
                                 if n else c for c, n in zip(table.columns, numeric)], names=table.column_names))


TABLES = {p: {"t": arrow_table(rotated(ROWS, p), NAMES, TYPES)} for p in PARTIES}


def federation(directory, federation_writer, plaintext_grants, extra: str = "") -> Engine:
    """One postgres-dialect federation over the audit's tables (tests/test_enclave_postgres_guards.py)."""
    return audit_federation(directory, federation_writer, plaintext_grants, TABLES, "postgres", extra)


@pytest.fixture(scope="module")
def engines(tmp_path_factory, federation_writer, plaintext_grants):
    with audit_engines(tmp_path_factory, federation_writer, plaintext_grants, TABLES, "postgres") as engines:
        yield engines


CASES = [(name, variant) for groups in (GROUPS, AGGREGATES) for name in groups for variant in (LOCAL, CROSS, ENCLAVE)]


@pytest.mark.parametrize("group, variant", CASES, ids=[f"{g}-{v}" for g, v in CASES])
def test_answers_as_postgresql(postgresql, engines, group, variant):
    expressions, (cross, enclave), *rel_tol = GROUPS.get(group) or AGGREGATES[group]
    sql = query(expressions, variant, aggregate=group in AGGREGATES)
    device = {LOCAL: PARTY, CROSS: cross, ENCLAVE: enclave}[variant]
    engine = engines[variant]
    if device is None:
        with pytest.raises(NotSupportedError, match="cannot run this query"):
            engine.explain(sql, "bank")
        return
    assert device_of(engine, sql) == device
    got = sorted_rows(engine.execute(sql, "bank").table)
    want = postgresql_rows(postgresql, sql)
    assert same_rows(got, want, device == SPU, (rel_tol or [REL_TOL])[0]), f"{sql}\n got: {got}\nwant: {want}"


@pytest.mark.parametrize("expression", ERRORS)
@pytest.mark.parametrize("variant", [LOCAL, CROSS, ENCLAVE])
def test_errors_as_postgresql(postgresql, engines, expression, variant):
    """Where PostgreSQL raises (division by zero, a function outside its domain, a negative length), every
    device raises a PEP 249 error too: never NaN, infinity or a value."""
    import adbc_driver_manager

    sql = query([expression], variant)
    with pytest.raises(adbc_driver_manager.Error):
        postgresql_rows(postgresql, sql)
    with pytest.raises(Error):
        engines[variant].execute(sql, "bank")


@pytest.mark.parametrize("expression, named", REFUSED)
@pytest.mark.parametrize("variant", [LOCAL, CROSS, ENCLAVE])
def test_refused_by_name(engines, assert_refused, expression, named, variant):
    """What PostgreSQL means and no device matches is refused at plan time, naming it (check agreeing)."""
    assert_refused(engines[variant], query([expression], variant), "bank", NotSupportedError, named)
