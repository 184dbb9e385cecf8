"""Issue 17's audit of `dialect = "mysql"` against a real MariaDB 10.11 (started here, tests/test_dialects.py).

The shape of tests/test_postgres_dialect_audit.py: each group of expressions runs three ways over the same
rows — at one party (`{b}` is the party's own table, the query pushed down whole), across two parties (`{b}`
is the other party's table: the SPU, or a party the grants let compute it) and in the enclave (`placement =
"always"`) — and every answer is compared with what MariaDB returns for the same query over the same two
tables (databases `bank` and `corp`). A device a group names `None` must refuse the query at plan time
(NotSupportedError naming what it cannot evaluate, `check` agreeing). The other party's rows are the first's
rotated by two, so cross-party operands differ; NULLs, negatives, halves, zeros, a leap day and month ends
are among them. MariaDB's strings use `utf8mb4_bin`: this engine's string comparison is binary on purpose
(docs/federation.md). The SPU's fixed-point answers are compared within the oracle's stated tolerance
(tests/conftest.py REL_TOL, ABS_TOL), the others to 1e-12.
"""

from __future__ import annotations

import datetime

import pyarrow as pa
import pytest

from sqlsecure.errors import DataError, Error, NotSupportedError
from tests.conftest import REL_TOL
from tests.dialect_audit import (CROSS, ENCLAVE, LOCAL, PARTIES, PARTY, POWER_REL_TOL, SPU, TEE, arrow_table,
                                 audit_engines, device_of, query, rotated, same_rows, sorted_rows, sql_values)
from tests.test_dialects import mariadb_with

COLUMNS = ("id BIGINT, i BIGINT, j BIGINT, x DOUBLE, y DOUBLE, c DECIMAL(10, 2), d DATE, ts DATETIME, "
           "s VARCHAR(20) COLLATE utf8mb4_bin, k BIGINT")
D, T = datetime.date, datetime.datetime
ROWS = [  # id, i, j, x, y, c, d, ts, s, k
    (1, 7, 2, 2.5, 0.5, "1.25", D(2024, 2, 29), T(2024, 2, 29, 13, 5, 9), "Alice", 0),
    (2, -7, 2, -2.5, 3.0, "-2.50", D(2024, 1, 31), T(2024, 1, 31), "bob", 0),
    (3, None, 3, None, None, None, None, None, None, 0),
    (4, 0, -3, 0.5, 1.5, "0.05", D(1999, 12, 31), T(1999, 12, 31, 23, 59, 59), "", 0),
    (5, 1000001, 1000, 1.5, -0.25, "12.35", D(2000, 3, 1), T(2000, 3, 1, 12), "al_%x", 0),
]
TYPES = [pa.int64(), pa.int64(), pa.int64(), pa.float64(), pa.float64(), pa.decimal128(10, 2), pa.date32(),
         pa.timestamp("us"), pa.string(), pa.int64()]
NAMES = ["id", "i", "j", "x", "y", "c", "d", "ts", "s", "k"]

# group: (expressions over {a} and {b}, the device of each variant: (cross, enclave); None: refused)
GROUPS = {
    # DIV truncates, % takes the dividend's sign, a zero divisor gives NULL
    "division": (["{a}.i DIV {b}.j", "{a}.i % {b}.j", "MOD({a}.i, {b}.j)", "{a}.x / {b}.y", "{a}.i DIV {b}.k",
                  "{a}.i % {b}.k", "{a}.x / ({b}.y * {b}.k)", "-{a}.i DIV {b}.j", "({a}.i + {b}.j) / 4"], (SPU, TEE)),
    # `/` of exact values is a DECIMAL with 4 more decimals, rounded half away from zero once
    "exact division": (["{a}.i / {b}.j", "{a}.c / {b}.j", "{a}.i / {b}.k", "{a}.c % {b}.j", "{a}.x % {b}.y",
                        "{a}.x DIV {b}.j", "{a}.c DIV {b}.j"], (PARTY, TEE)),
    "arithmetic": (["ABS({a}.x - {b}.y)", "ABS({a}.c + {b}.k)", "-{a}.i + {b}.k", "{a}.i * {b}.j",
                    "{a}.c * {b}.c", "{a}.x * {b}.y", "{a}.c + {b}.x"], (SPU, TEE)),
    # ROUND of a DECIMAL or an integer: half away from zero; of a DOUBLE: to even (C's rint)
    "rounding": (["ROUND({a}.c + {b}.k, 1)", "ROUND({a}.x + {b}.y)", "ROUND({a}.c * {b}.j, -1)",
                  "FLOOR({a}.x + {b}.y)", "CEIL({a}.x - {b}.y)", "FLOOR({a}.c * {b}.j)", "CEILING({a}.c + {b}.k)",
                  "CAST({a}.x + {b}.y AS SIGNED)", "CAST({a}.c + {b}.k AS SIGNED)",
                  "CAST({a}.x + {b}.k AS DECIMAL(10, 1))", "ROUND(({a}.i + {b}.k) / 4, 1)"], (SPU, TEE)),
    # ROUND of an exact quotient rounds the quotient's exact value (1000001 / 2 -> 500001)
    "exact rounding": (["ROUND({a}.i / {b}.j)", "ROUND({a}.i / {b}.j, 2)", "TRUNCATE({a}.c * {b}.j, 1)"],
                       (PARTY, TEE)),
    # outside its domain a function is NULL in MySQL (SQRT(-1), LN(0), ACOS(2))
    "math": (["SQRT({a}.x * {a}.x + {b}.y * {b}.y)", "LN({a}.j * {a}.j + {b}.k)",
              "LOG({a}.j * {a}.j + {b}.k)", "LOG10({a}.j * {a}.j + {b}.k)", "LOG2({a}.j * {a}.j + {b}.k)",
              "ASIN({a}.y / 4 + {b}.k)",
              "ACOS({a}.y / 4 + {b}.k)", "LOG(2, {a}.j * {a}.j + {b}.k)"], (SPU, TEE)),
    # EXP, POW and COT beyond a DOUBLE raise an error in MySQL: every device evaluates the dialect's guard
    "overflow checked": (["EXP({a}.x + {b}.y)", "POWER({a}.x + {b}.k, 2)"], (SPU, TEE)),
    # a secret exponent: EXP(y LN x) on the SPU, within its stated accuracy (1000^2 has come out 1000016)
    "power": (["POW({a}.j, {b}.k + 2)", "POWER({a}.x + {b}.k, {b}.j - 1)"], (SPU, TEE), POWER_REL_TOL),
    "domains": (["SQRT({a}.x + {b}.k)", "LN({a}.i + {b}.k)", "LOG({a}.x + {b}.y)", "LOG10({a}.j + {b}.k)",
                 "LOG2({a}.i + {b}.k)", "ACOS({a}.x + {b}.k)", "ASIN({a}.x - {b}.y)"], (SPU, TEE)),
    "trigonometry": (["SIN({a}.x + {b}.y)", "COS({a}.x + {b}.y)", "TAN({a}.x + {b}.k)", "ATAN({a}.x + {b}.y)",
                      "ATAN2({a}.x, {b}.y)", "ATAN({a}.x, {b}.y)", "{a}.x * PI() < {b}.y + 1"], (SPU, TEE)),
    "other math": (["SIGN({a}.i - {b}.j)", "DEGREES({a}.x + {b}.k)", "RADIANS({a}.x + {b}.k)", "COT({a}.x + {b}.y)"],
                   (PARTY, None)),
    "party math": (["LOG({a}.j + {b}.k, 8)"], (PARTY, TEE)),
    "conditionals": (["COALESCE({a}.i, {b}.j)", "COALESCE({a}.x, {b}.j)", "COALESCE({a}.c, {b}.i)",
                      "NULLIF({a}.i, {b}.i)", "IFNULL({a}.i, {b}.j)", "IFNULL({a}.c, {b}.x)",
                      "IF({a}.i > {b}.j, {a}.i, {b}.j)", "IF({a}.i, 1, 2) + {b}.k",
                      "CASE WHEN {a}.i > {b}.j THEN 1 WHEN {a}.x > 0 THEN 2 ELSE 3 END",
                      "CASE WHEN {b}.j > 2 THEN {a}.x END", "{a}.i + {b}.k IN (7, 0, -7)",
                      "{a}.i + {b}.k NOT IN (7, NULL)", "{a}.i BETWEEN {b}.j AND 10", "{a}.i + NULL + {b}.k",
                      "{a}.i > 0 AND {b}.j > 0", "NOT ({a}.i > 0 OR {b}.j > 2)"], (SPU, TEE)),
    # a string and a number: MySQL's result is a string
    "mixed types": (["IFNULL({a}.s, {b}.i)", "COALESCE({a}.s, {b}.j)", "IFNULL({a}.i, {b}.s)",
                     "IF({a}.i > {b}.j, {a}.s, {b}.j)", "COALESCE({a}.d, {b}.s)"], (PARTY, None)),
    # LIKE escapes with a backslash unless ESCAPE says otherwise
    "string comparison": (["{a}.s LIKE 'al\\_%' OR {b}.k = 1", "{a}.s LIKE 'A%' AND {b}.k = 0",
                           "{a}.s LIKE '%x' OR {b}.k = 1", "{a}.s NOT LIKE '%b%' AND {b}.k = 0",
                           "{a}.s LIKE 'al|_%' ESCAPE '|' OR {b}.k = 1", "{a}.s < {b}.s", "{a}.s = {b}.s",
                           "{a}.s IN ('bob', 'Alice') OR {b}.k = 1", "{a}.s >= 'al' AND {b}.k = 0"], (SPU, TEE)),
    "strings": (["CONCAT({a}.s, {b}.s)", "CONCAT({a}.i, {b}.s)", "SUBSTRING({a}.s, 2, 3) = {b}.s",
                 "CONCAT(SUBSTRING({a}.s, -2), {b}.s)", "LENGTH({a}.s) + {b}.k", "CHAR_LENGTH({a}.s) + {b}.k",
                 "CONCAT(UPPER({a}.s), LOWER({b}.s))", "CONCAT({a}.c, {b}.s)", "CONCAT({a}.d, {b}.s)",
                 "CONCAT(LEFT({a}.s, 2), RIGHT({b}.s, 2))", "CONCAT(TRIM(CONCAT(' ', {a}.s)), {b}.s)",
                 "CONCAT(REPLACE({a}.s, 'l', 'L'), {b}.s)", "CONCAT(CAST({a}.c AS CHAR), {b}.s)",
                 "CAST({a}.s AS SIGNED) + {b}.k", "CONCAT(CAST({a}.d AS CHAR), {b}.s)"], (PARTY, None)),
    "dates": (["{a}.d + INTERVAL 1 DAY < {b}.d", "{a}.d - INTERVAL 1 MONTH < {b}.d", "DATEDIFF({a}.d, {b}.d)",
               "{a}.d < {b}.d", "{a}.d < DATE '2000-01-01' OR {b}.k = 1", "EXTRACT(YEAR FROM {a}.d) + {b}.k",
               "EXTRACT(HOUR FROM {a}.ts) + {b}.k", "MINUTE({a}.ts) + SECOND({b}.ts)", "DATEDIFF({a}.ts, {b}.d)",
               "TIMESTAMPDIFF(DAY, {a}.ts, {b}.ts)", "CAST({a}.ts AS DATE) < {b}.d"], (SPU, TEE)),
    "calendar": (["ADDDATE({a}.d, {b}.j)", "SUBDATE({a}.d, INTERVAL 1 YEAR) < {b}.d", "YEAR({a}.d) + {b}.k",
                  "MONTH({a}.ts) + {b}.k", "DAY({a}.d) + {b}.k", "DAYOFWEEK({a}.d) + {b}.k",
                  "DAYOFYEAR({a}.d) + {b}.k", "QUARTER({a}.d) + {b}.k", "LAST_DAY({a}.d) < {b}.d",
                  "LAST_DAY({a}.d) = {b}.d", "DATE({a}.ts) = {b}.d", "DATE_ADD({a}.d, INTERVAL {b}.j DAY)",
                  "YEAR(ADDDATE({a}.d, {b}.k))", "WEEKDAY({a}.d) + {b}.k", "WEEKDAY(ADDDATE({a}.d, {b}.k))",
                  "LAST_DAY(ADDDATE({a}.d, {b}.j))", "CAST({a}.i AS CHAR) = {b}.s",
                  "CAST({a}.d AS DATETIME) < {b}.ts"], (PARTY, TEE)),
    # date - date and datetime - datetime are numbers (YYYYMMDD, YYYYMMDDhhmmss) in MySQL, so is date + n
    "date numbers": (["{a}.d - {b}.d", "{a}.ts - {b}.ts", "{a}.d + {b}.j"], (PARTY, None)),
    "date text": (["DATE_FORMAT({a}.ts, '%M %i %Y %d %H %s %W') = {b}.s", "CONCAT(DATE_FORMAT({a}.d, '%Y-%m'), {b}.s)",
                   "CONCAT(DATE_FORMAT({a}.ts, '%b %e %k:%i %p %j'), {b}.s)",
                   "STR_TO_DATE(CONCAT({a}.s, '2024'), '%Y') = {b}.d",
                   "STR_TO_DATE(DATE_FORMAT({a}.d, '%d/%m/%Y'), '%d/%m/%Y') = {b}.d"], (PARTY, None)),
    "casts": (["CAST({a}.x AS DECIMAL(10, 2)) + {b}.c", "CAST({a}.i AS DOUBLE) / {b}.y",
               "CAST({a}.c AS DOUBLE) * {b}.x", "CAST({a}.i AS DECIMAL(12, 2)) + {b}.c"], (SPU, TEE)),
}
AGGREGATES = {  # one row each; MySQL's AVG of integers is a DECIMAL with 4 more decimals
    "aggregates": (["SUM({a}.i > {b}.j)", "AVG(CASE WHEN {a}.i > {b}.j THEN {a}.x ELSE {b}.y END)",
                    "COUNT(DISTINCT {a}.j + {b}.k)", "AVG({a}.j + {b}.k)", "SUM({a}.i * {b}.j)", "AVG({a}.c + {b}.c)",
                    "COUNT({a}.i + {b}.k)", "SUM({a}.x + {b}.k)", "MAX({a}.c - {b}.c)",
                    "ROUND(SUM({a}.c * {b}.j), 1)"], (SPU, TEE)),
    # SUM and AVG of exact quotients add the unrounded quotients
    "exact aggregates": (["SUM({a}.i / {b}.j)", "AVG({a}.i / {b}.j)", "MIN(ADDDATE({a}.d, {b}.j))"],
                         (PARTY, TEE)),
    # MySQL's SUM of c / 3 is a DECIMAL at 9 decimals; the SPU's quotient is fixed point, its sum's summed error
    # far above 10^-9: the SPU refuses the CAST at plan time (tests/test_rounding_plan_s13.py), so the
    # plaintext grants place it at the issuer
    "undecidable sums": (["SUM({a}.c / 3 + {b}.k)"], (PARTY, TEE)),
}
GROUPED = {  # GROUP BY a key of the first table, aggregates over both
    "group by": ("{a}.j > 0", ["SUM({a}.i + {b}.k)", "AVG({a}.x * {b}.y)", "SUM({a}.c > {b}.c)", "MAX({b}.d)"],
                 (SPU, TEE)),
    "group count": ("{a}.j > 0", ["COUNT(*)", "COUNT(DISTINCT {b}.j)", "COUNT(DISTINCT {a}.j + {b}.j)"], (PARTY, TEE)),
}
# MariaDB raises "DOUBLE (or BIGINT) value is out of range"; so must every device
ERRORS = ["EXP({a}.x * 1000 + {b}.k)", "POW({a}.x - 3, {b}.y + 0.25)", "COT({a}.x * 0 + {b}.k)",
          "{a}.i * 10000000000000 * {b}.j"]
# refused by name on every device, at plan time
REFUSED = [("DATE_FORMAT({a}.d, '%D') = {b}.s", "%D"), ("IFNULL({a}.x, {b}.s)", "IFNULL"),
           ("CONCAT({a}.x, {b}.s)", "CONCAT")]
# the SPU refuses a row it cannot compute exactly (DataError) where a party or the enclave answers
# (a rounding boundary within a DOUBLE's fixed-point error; a 9-decimal AVG beyond the ring's exact range)
SPU_DATA_ERRORS = [("ROUND({a}.x * {b}.j, 1)", False), ("AVG({a}.i + {b}.k)", True)]


@pytest.fixture(scope="module")
def mariadb():
    """One MariaDB server for the module: the two parties' tables as databases bank and corp."""
    with mariadb_with([statement for party in PARTIES for statement in (
            f"CREATE DATABASE {party}", f"CREATE TABLE {party}.t ({COLUMNS})",
            f"INSERT INTO {party}.t VALUES {sql_values(rotated(ROWS, party))}")]) as server:
        yield server


@pytest.fixture(scope="module")
def engines(tmp_path_factory, federation_writer, plaintext_grants):
    tables = {p: {"t": arrow_table(rotated(ROWS, p), NAMES, TYPES)} for p in PARTIES}
    with audit_engines(tmp_path_factory, federation_writer, plaintext_grants, tables, "mysql") as engines:
        yield engines


def case_sql(group: str, variant: str) -> tuple[str, tuple, float]:
    """The group's query for `variant`, the devices it runs on, and the SPU's tolerance."""
    if group in GROUPED:
        key, expressions, devices = GROUPED[group]
        return query(expressions, variant, key=key), devices, REL_TOL
    expressions, devices, *rel_tol = GROUPS.get(group) or AGGREGATES[group]
    return query(expressions, variant, aggregate=group in AGGREGATES), devices, (rel_tol or [REL_TOL])[0]


CASES = [(name, variant) for groups in (GROUPS, AGGREGATES, GROUPED) for name in groups
         for variant in (LOCAL, CROSS, ENCLAVE)]


@pytest.mark.parametrize("group, variant", CASES, ids=[f"{g}-{v}" for g, v in CASES])
def test_answers_as_mariadb(mariadb, engines, group, variant):
    sql, (cross, enclave), rel_tol = case_sql(group, variant)
    device = {LOCAL: PARTY, CROSS: cross, ENCLAVE: enclave}[variant]
    engine = engines[variant]
    if device is None:
        with pytest.raises(NotSupportedError, match="cannot run this query"):
            engine.explain(sql, "bank")
        assert engine.check(sql, "bank").startswith("NotSupportedError: ")
        return
    assert device_of(engine, sql) == device
    got = sorted_rows(engine.execute(sql, "bank").table)
    want = sorted_rows(mariadb.sql(sql))
    assert same_rows(got, want, device == SPU, rel_tol), f"{sql}\n got: {got}\nwant: {want}"


@pytest.mark.parametrize("expression", ERRORS)
@pytest.mark.parametrize("variant", [LOCAL, CROSS, ENCLAVE])
def test_errors_as_mariadb(mariadb, engines, expression, variant):
    """Where MariaDB raises (a DOUBLE or BIGINT out of range), every device raises a PEP 249 error too: never
    infinity, NaN or a wrapped integer."""
    import pymysql

    sql = query([expression], variant)
    with pytest.raises(pymysql.err.MySQLError, match="out of range"):
        mariadb.sql(sql)
    with pytest.raises(Error):
        engines[variant].execute(sql, "bank")


@pytest.mark.parametrize("expression, named", REFUSED)
@pytest.mark.parametrize("variant", [LOCAL, CROSS, ENCLAVE])
def test_refused_by_name(engines, assert_refused, expression, named, variant):
    """What MySQL means and no device matches is refused at plan time, naming it (check agreeing)."""
    assert_refused(engines[variant], query([expression], variant), "bank", NotSupportedError, named)


@pytest.mark.parametrize("expression, aggregate", SPU_DATA_ERRORS)
def test_spu_refuses_inexact_rows(mariadb, engines, expression, aggregate):
    """Where the SPU cannot give MariaDB's exact answer it raises DataError (at plan time where the published
    magnitudes already show it) rather than a wrong value; the enclave answers as MariaDB."""
    with pytest.raises(DataError, match="SPU|fixed-point"):
        engines[CROSS].execute(query([expression], CROSS, aggregate), "bank")
    enclave = query([expression], ENCLAVE, aggregate)
    got = sorted_rows(engines[ENCLAVE].execute(enclave, "bank").table)
    assert same_rows(got, sorted_rows(mariadb.sql(enclave)), approximate=False)
