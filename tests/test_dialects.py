"""The federation's dialect means that dialect's answers (planner/dialects/).

Each expression runs in a one-party federation (parties run DuckDB) and in the real engine — MariaDB,
started here from Debian's packages, for `mysql`; the session's PostgreSQL (tests/conftest.py) for
`postgres` — over the same one-row table `p.t`, and the two answers must be equal. Without the engine
the comparison is skipped, except under CI, where .ci/run installs it.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import math
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import ConfigError, DataError, Error, NotSupportedError
from tests.conftest import same_multiset

ROW = {"i": 7, "z": 0, "n": None, "neg": -7, "big": 9007199254740993, "x": 2.5, "s": "3abc", "name": "Alice",
       "sn": None, "d": datetime.date(2024, 2, 10), "ts": datetime.datetime(2024, 1, 2, 0, 0, 0)}
TABLE = pa.table({
    "i": pa.array([7], pa.int64()), "z": pa.array([0], pa.int64()), "n": pa.array([None], pa.int64()),
    "neg": pa.array([-7], pa.int64()), "big": pa.array([ROW["big"]], pa.int64()),
    "x": pa.array([2.5], pa.float64()), "s": pa.array(["3abc"]), "name": pa.array(["Alice"]),
    "sn": pa.array([None], pa.string()), "d": pa.array([ROW["d"]], pa.date32()),
    "ts": pa.array([ROW["ts"]], pa.timestamp("us")),
})
COLUMNS_MYSQL = ("i BIGINT, z BIGINT, n BIGINT, neg BIGINT, big BIGINT, x DOUBLE, s VARCHAR(20), "
                 "name VARCHAR(20), sn VARCHAR(20), d DATE, ts DATETIME")
COLUMNS_POSTGRES = ("i BIGINT, z BIGINT, n BIGINT, neg BIGINT, big BIGINT, x DOUBLE PRECISION, s TEXT, "
                    "name TEXT, sn TEXT, d DATE, ts TIMESTAMP")
VALUES = ("7, 0, NULL, -7, 9007199254740993, 2.5, '3abc', 'Alice', NULL, DATE '2024-02-10', "
          "TIMESTAMP '2024-01-02 00:00:00'")

MYSQL = [
    # division: NULL for a zero divisor; DIV truncates toward zero; % follows the dividend's sign
    "1 / 0", "i / z", "i / n", "i / 2", "7 DIV 2", "-7 DIV 2", "neg DIV 2", "i DIV z", "7.5 DIV 2",
    "-7.5 DIV 2", "x DIV 1", "big DIV 1", "-7 % 3", "7 % -3", "MOD(neg, 3)", "i % z", "-7.5 % 2", "MOD(n, 2)",
    # IFNULL / COALESCE / IF with MySQL's result types
    "IFNULL(sn, 1)", "IFNULL(name, 1)", "IFNULL(n, 'none')", "COALESCE(sn, i)", "IFNULL(n, 5)",
    "IF(i > 0, 'x', 0)", "IF(n > 0, 1, 2)", "IF(i < 0, 'x', 1.5)", "IFNULL(sn, TRUE)",
    # CONCAT: NULL if any argument is NULL
    "CONCAT(name, NULL)", "CONCAT(name, i)", "CONCAT(name, sn)", "CONCAT(name, '-', d)",
    # strings read as numbers
    "'3' + 4", "s + 1", "'1e2' + 0", "'abc' + 1", "sn + 1", "' 12x' * 2", "s = 3", "'3' < 10", "-'2.5'",
    "'.5' + 0", "s DIV 2",
    # DATE_FORMAT and STR_TO_DATE specifiers
    "DATE_FORMAT(ts, '%M %d %Y %i %H %W %j %p')", "DATE_FORMAT(d, '%e/%c/%y %k:%l %a %b %f')",
    "DATE_FORMAT('2024-12-31 23:59:58', '%h %I %s %S %r %T %w %U %%')", "DATE_FORMAT(n, '%Y')",
    "DATE_FORMAT('2024-01-07 13:05:09', '%U %k %l %p')",
    "STR_TO_DATE('05/03/2024', '%d/%m/%Y')", "STR_TO_DATE('2024-03-05 14:07', '%Y-%m-%d %H:%i')",
    "STR_TO_DATE('x', '%Y')", "STR_TO_DATE(sn, '%Y')",
    # LAST_DAY, ADDDATE / SUBDATE / DATE_ADD, date arithmetic, DATEDIFF
    "LAST_DAY(d)", "LAST_DAY('2024-02-10')", "LAST_DAY(ts)", "LAST_DAY(NULL)", "LAST_DAY('2024-02-30')",
    "ADDDATE(d, 5)", "ADDDATE(d, INTERVAL 1 MONTH)", "ADDDATE('2024-01-31', INTERVAL 1 MONTH)", "SUBDATE(d, 10)",
    "SUBDATE(d, INTERVAL 1 YEAR)", "DATE_ADD(d, INTERVAL 1 YEAR)", "d + INTERVAL 20 DAY",
    "ADDDATE(ts, INTERVAL 1 HOUR)",
    "DATE_ADD('2024-01-31 10:00:00', INTERVAL 1 HOUR)", "ADDDATE('2024-02-29', INTERVAL 1 YEAR)",
    "ts - TIMESTAMP('2024-01-01 23:59:59')", "d - DATE('2024-01-28')", "d + 1", "d - 1", "d * 1",
    "DATEDIFF(d, '2023-12-31')", "DATEDIFF(ts, d)",
    # exact division and AVG: DECIMALs with 4 more decimals, rounded once, on the result
    "i / 3", "2 / 3", "7.5 / 2", "x / 3", "AVG(i)", "SUM(i) / 3", "COUNT(*) / 3", "ROUND(i / 3, 2)",
    "1 / 3 + 1 / 3", "1 / 3 * 3", "(i / 3) + 1", "AVG(i) / 3", "i / 3 > 2.3333", "1 / 32", "-1 / 32",
    # casts of strings, rounding of doubles, CONCAT of non-strings
    "CAST(s AS SIGNED)", "CAST('3.7' AS SIGNED)", "CAST(s AS DECIMAL(10,2))", "CAST(sn AS SIGNED)",
    "CAST(x AS DECIMAL)", "CAST(2.567 AS DECIMAL)", "CAST(-2.5 AS DECIMAL)", "CAST(s AS DECIMAL)",
    "CAST(i AS DECIMAL)", "CAST(x * 3 AS DECIMAL(5))",
    "ROUND(x)", "ROUND(2.5)", "ROUND(-x)", "ROUND(x + 0.25, 1)", "ROUND(-x - 0.25, 1)", "ROUND(x * 10, -1)",
    "ROUND(x - 1, 0)", "ROUND(x / 20, 2)", "ROUND(x / 7, 3)", "ROUND(-x / 20, 2)", "ROUND(x * 3)", "ROUND(x * i, -1)",
    "CONCAT(name, TRUE)", "CONCAT(i, '/', d)",
    # weekdays, whole-unit differences, Unix time
    "DAYOFWEEK(d)", "WEEKDAY(d)", "WEEKDAY(ts)", "WEEK(d)", "WEEK('2024-01-07')", "WEEK('2023-01-01')",
    "TIMESTAMPDIFF(MONTH, '2024-01-31', d)", "TIMESTAMPDIFF(DAY, '2024-01-01 23:00:00', '2024-01-02 01:00:00')",
    "TIMESTAMPDIFF(MONTH, d, '2024-01-31')", "TIMESTAMPDIFF(YEAR, '2020-02-29', '2024-02-28')",
    "TIMESTAMPDIFF(SECOND, ts, '2024-01-02 00:01:00')", "FROM_UNIXTIME(0)", "FROM_UNIXTIME(1700000000)",
    # strings and booleans as conditions, in IN / BETWEEN, in arithmetic
    "IF(s, 1, 2)", "IF(name, 1, 2)", "IF(sn, 1, 2)", "CASE WHEN s THEN 'y' ELSE 'n' END", "NOT name", "name AND 1",
    "s IN (3, 4)", "i IN ('7', 'x')", "name IN ('Alice', 'b')", "s BETWEEN 1 AND 5", "i BETWEEN '1' AND '9x'",
    "i + TRUE", "-TRUE", "SUM(i > 5)", "AVG(i > 5)", "AVG(n > 5)", "AVG(x < 1) + 1", "i = '7.0'",
    # nested rewrites, strings with intervals, negative operands, edge dates
    "(i DIV 2) DIV 0", "(i DIV 2) DIV 2", "ADDDATE(ADDDATE(d, 1), 1)", "IFNULL(IFNULL(sn, n), 1)",
    "'2024-02-10' + INTERVAL 1 DAY", "'2024-02-10' + INTERVAL 1 HOUR", "'2024-02-10 10:00:00' - INTERVAL 1 DAY",
    "CONCAT(name, '') + INTERVAL 1 DAY", "-7 DIV -2", "7 DIV -2", "-7 % -3", "MOD(-7.5, -2)", "neg / -3",
    "LAST_DAY('2023-02-15')", "LAST_DAY('1900-02-01')", "ADDDATE('2024-12-31', 1)", "ADDDATE(d, INTERVAL -1 MONTH)",
    "STR_TO_DATE('2024-02-10 7:5:3', '%Y-%m-%d %H:%i:%s')", "STR_TO_DATE('Feb 10 2024', '%b %d %Y')",
    "DATE_FORMAT('1969-07-20 20:17:40', '%Y-%m-%d %H:%i:%s %W %j')", "DATE('2024-01-01') - DATE('2024-12-31')",
    "TIMESTAMP('1969-12-31 23:59:59') - TIMESTAMP('1970-01-01 00:00:00')", "d - 20240000",
    "TIMESTAMPDIFF(MINUTE, ts, '2023-12-31 23:00:30')", "DATE_ADD(d, INTERVAL 1 HOUR)", "IFNULL(sn, d)",
    "IFNULL(n, 2.5)", "CONCAT(d, ts)", "x / 0", "x DIV 0", "x % 0", "'abc' / 0",
    # strings where a date is expected (also a string ± INTERVAL, which is a string), numbers given to text functions
    "LAST_DAY(ADDDATE('2024-01-01', i))", "DATEDIFF(ADDDATE('2024-01-01', i), '2024-01-01')", "LAST_DAY(name)",
    "YEAR(ADDDATE('2024-12-31', i))", "LAST_DAY('2024-01-06 10:00:00')", "DATE_FORMAT(ADDDATE('2024-01-01', i), '%Y-%m')",
    "MONTH(SUBDATE('2024-03-01 10:00:00', INTERVAL i DAY))", "EXTRACT(DAY FROM ADDDATE('2024-01-01', i))",
    "d < CONCAT('2024-02-1', i)", "ts = CONCAT('2024-01-02 00:00:0', z)", "CURDATE() > ADDDATE('2024-01-01', i)",
    "DATEDIFF(sn, d)", "DATEDIFF(name, d)", "LPAD(i, 3, '0')", "LEFT(big, 4)", "UPPER(x)", "REVERSE(neg)",
    "SUBSTRING(big, 2, 3)",
    # strings given to numeric functions
    "ABS('-3x')", "ROUND('2.567', 1)", "ROUND('2.5')", "SUM(s)", "AVG(s)", "FLOOR(s)", "SQRT('16')", "POW('2', 3)",
    "SIGN('-0.5')", "CEIL(name)", "MAX(s)", "ABS(sn)",
    # LENGTH in bytes, SUBSTRING from 0
    "LENGTH('é')", "LENGTH(sn)", "LENGTH(i)", "CHAR_LENGTH('é')", "SUBSTRING(name, 0)", "SUBSTRING(name, 0, 2)",
    "SUBSTRING(sn, 0)", "SUBSTRING(name, -3)", "SUBSTRING(name, z + 1, 2)",
    # ATAN(y, x) is ATAN2(y, x): every quadrant, the axes, NULL
    "ATAN(i, x)", "ATAN(neg, x)", "ATAN(i, -x)", "ATAN(neg, -x)", "ATAN(z, neg)", "ATAN(i, z)", "ATAN(n, x)",
    "ATAN(x)", "ATAN(ATAN(i, z), 1)",
    # numbers as conditions are `x <> 0` (NULL: false); NULLIF of a constant divisor folded; a quotient by a
    # constant held at its exact digits (ties at the 5th decimal: -7 / 20000 = -0.00035 -> -0.0004)
    "IF(neg, 1, 2)", "IF(z, 1, 2)", "IF(n, 1, 2)", "IF(x, 1, 2)", "IF(x - 2.5, 1, 2)", "IF(i * 0.5, 'y', 'n')",
    "CASE WHEN z THEN 1 WHEN neg THEN 2 END", "CASE WHEN n THEN 1 ELSE 0 END", "NOT neg", "NOT z", "z OR neg",
    "i / 10000", "neg / 10000", "i / -8", "neg / 20000", "i / 64", "(i + 0.5) / 8", "big / 10000", "i / 0.25",
    "i / 7", "neg / 3000", "AVG(neg)", "i % -4", "neg DIV 4", "x / 10000", "i / (2 - 2)", "NULLIF(5, 0)",
    # GREATEST / LEAST: NULL if any argument is NULL; ties; numbers of mixed types, dates, text
    "GREATEST(i, n)", "LEAST(n, i, x)", "GREATEST(i, neg, z)", "LEAST(i, 7)", "GREATEST(i, x, 2.25)",
    "LEAST(neg, -7.5)", "GREATEST(d, DATE '2024-03-01')", "LEAST(d, ts)", "GREATEST(name, 'B')", "LEAST(sn, name)",
    "GREATEST(big, i)",
    # NULLIF and COALESCE with mixed types: a date and a string, numbers of different types, a string and a number
    "COALESCE(d, '2024-01-01')", "COALESCE(n, d)", "NULLIF(d, '2024-02-10')", "NULLIF(i, 7.0)", "NULLIF(x, 2.5)",
    "NULLIF(i, '7')", "NULLIF(name, 1)", "NULLIF(s, 3)", "NULLIF(sn, 1)", "NULLIF(TRUE, 1)", "COALESCE(n, 2.5, i)",
    "COALESCE(i, d)", "IF(i > 0, d, 0)", "COALESCE(n, ts)",
]

POSTGRES = [
    "7 / 2", "-7 / 2", "i / 2", "neg / 2", "big / 1", "7.0 / 2", "i / 2.0", "x / 2", "-7 % 3", "neg % 3",
    "n / 2", "i / n", "'a' || NULL", "name || i", "name || sn", "CONCAT(name, NULL, 'b')", "CONCAT(sn)",
    "d - DATE '2024-01-28'", "d + 1", "d - 1", "d + INTERVAL '1 month'", "DATE '2024-01-31' + INTERVAL '1 month'",
    "EXTRACT(EPOCH FROM ts - TIMESTAMP '2024-01-01 23:59:59')", "ts + INTERVAL '1 hour'", "7 / -2",
    "SUM(i) / 2", "COUNT(*) / 2", "AVG(i)", "SUM(i) / COUNT(*)", "i / 2 * 2", "big / 3", "7 / 2.5", "x / 0.5",
    "ROUND(2.5)", "ROUND(x)", "ROUND(-x)", "ROUND(x + 1)", "ROUND(x * 3)", "ROUND(x / 3)", "ROUND(7.0 / 3, 2)", "'3' + 4", "i > '5'", "7 % 2.5",
    "CAST(i AS INTEGER) / 2", "EXTRACT(DOW FROM d)", "d - INTERVAL '1 day'", "ts::date", "'a' < 'B'",
    "1.23456::numeric", "CAST(i AS NUMERIC)", "CAST(neg AS NUMERIC) / 3", "'-2.125'::numeric", "CAST(i * 1.25 AS NUMERIC)",
    "GREATEST(i, n)", "LEAST(n, i, x)", "GREATEST(i, neg, z)", "LEAST(i, 7)", "GREATEST(i, x, 2.25)", "LEAST(n, n)",
    "GREATEST(d, DATE '2024-03-01')", "LEAST(d, ts)", "GREATEST(name, 'B')", "LEAST(sn, name)", "GREATEST(big, i)",
    "COALESCE(d, '2024-01-01')", "COALESCE(n, 2.5, i)", "NULLIF(d, '2024-02-10')", "NULLIF(i, 7.0)", "NULLIF(x, 2.5)",
    "NULLIF(i, '7')", "COALESCE(sn, name)",
]
POSTGRES_DIVISION_BY_ZERO = ["1 / 0", "i / z", "i % z", "1.0 / z", "x / z", "i / (z * 2)", "SUM(i) / SUM(z)"]


def normal(value):
    """One answer in a form both engines share: numbers as floats, dates and times as ISO text."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float, decimal.Decimal)):
        return float(value)
    if isinstance(value, datetime.datetime):
        return value.isoformat(" ")
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode()
    return value


def same(got, want) -> bool:
    if isinstance(got, float) and isinstance(want, float):
        return math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-9)
    return got == want


def federation(directory: Path, federation_writer, dialect: str, **options) -> Engine:
    path = federation_writer(directory, {"p": {"t": TABLE}}, "", parties=("p",), dialect=dialect,
                             min_group_size=0, **options)
    return Engine(path)


def answer(engine: Engine, expression: str):
    return normal(engine.execute(f"SELECT {expression} AS v FROM p.t", "p").table.column(0)[0].as_py())


# --- MariaDB, started by the test --------------------------------------------------------------------

START_SECONDS = 60  # bounds a start that never completes; the poll returns as soon as the server answers


class MariaDB:
    """A throwaway MariaDB server on 127.0.0.1 (a temp data directory, no grant tables)."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="sqlsecure-mariadb-"))
        self.port = _free_port()
        user = ["--user=mysql"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            shutil.chown(self.root, "mysql")
        data = self.root / "data"
        subprocess.run([mariadb_program("mariadb-install-db"), f"--datadir={data}",
                        "--auth-root-authentication-method=normal",
                        "--skip-test-db", *user], check=True, capture_output=True)
        self.server = subprocess.Popen(
            [mariadb_program("mariadbd"), f"--datadir={data}", f"--socket={self.root / 'sock'}", f"--port={self.port}",
             "--bind-address=127.0.0.1", "--skip-grant-tables", f"--pid-file={self.root / 'pid'}",
             f"--log-error={self.root / 'log'}", *user], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self.connection = self._connect()
        except BaseException:
            self.connection = None
            self.stop()
            raise

    def _connect(self):
        import pymysql

        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                return pymysql.connect(host="127.0.0.1", port=self.port, user="root", autocommit=True)
            except pymysql.err.OperationalError:
                if self.server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mariadbd did not start: {(self.root / 'log').read_text()[-2000:]}")
                time.sleep(0.2)

    def sql(self, statement: str):
        with self.connection.cursor() as cursor:
            cursor.execute(statement)
            return cursor.fetchall()

    def stop(self) -> None:
        try:
            if self.connection is not None:
                self.connection.close()
            self.server.terminate()
            self.server.wait(timeout=START_SECONDS)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def mariadb_program(name: str) -> str | None:
    """Where Debian's mariadb-server put `name` (mariadbd is in /usr/sbin, not always on PATH)."""
    return shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mariadb_with(statements: list[str]):
    """A MariaDB server in UTC after `statements`, stopped on exit; the test is skipped where MariaDB is not
    installed (failed under CI)."""
    if mariadb_program("mariadbd") is None or mariadb_program("mariadb-install-db") is None:
        if os.environ.get("CI"):
            pytest.fail("MariaDB is not installed: .ci/run installs Debian's mariadb-server package")
        pytest.skip("MariaDB is not installed (apt-get install mariadb-server)")
    pytest.importorskip("pymysql")
    server = MariaDB()
    try:
        for statement in ["SET GLOBAL time_zone = '+00:00'", *statements]:
            server.sql(statement)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def mariadb():
    with mariadb_with(["CREATE DATABASE p", f"CREATE TABLE p.t ({COLUMNS_MYSQL})",
                       f"INSERT INTO p.t VALUES ({VALUES})"]) as server:
        yield server


@pytest.fixture(scope="module")
def mysql_engine(tmp_path_factory, federation_writer):
    engine = federation(tmp_path_factory.mktemp("mysql"), federation_writer, "mysql")
    yield engine
    engine.close()


@pytest.mark.parametrize("expression", MYSQL)
def test_mysql_answers_as_mariadb(mariadb, mysql_engine, expression):
    want = normal(mariadb.sql(f"SELECT {expression} FROM p.t")[0][0])
    got = answer(mysql_engine, expression)
    assert same(got, want), f"{expression}: sqlsecure {got!r}, MariaDB {want!r}"


def test_mysql_string_condition_in_where(mariadb, mysql_engine):
    """WHERE s keeps the row when the string's numeric prefix is not 0."""
    for condition in ("s", "name", "s AND NOT name", "i", "z", "n", "neg AND i", "x - 2.5 OR z"):
        want = mariadb.sql(f"SELECT COUNT(*) FROM p.t WHERE {condition}")[0][0]
        got = mysql_engine.execute(f"SELECT COUNT(*) FROM p.t WHERE {condition}", "p").table.column(0)[0].as_py()
        assert got == want, condition


def test_mysql_views_mean_mysql(tmp_path, federation_writer):
    """A federation view is written in the federation's dialect too, and rewritten with the query."""
    views = "[views]\nv = \"SELECT i DIV z AS q, IFNULL(sn, 1) AS f, d - 1 AS e FROM p.t\"\n"
    path = federation_writer(tmp_path, {"p": {"t": TABLE}}, views, parties=("p",), dialect="mysql",
                             min_group_size=0)
    engine = Engine(path)
    try:
        assert engine.execute("SELECT q, f, e FROM v", "p").table.to_pylist() == [{"q": None, "f": "1", "e": 20240209}]
    finally:
        engine.close()


def test_mysql_refuses_what_it_cannot_match(mysql_engine):
    """DATE_FORMAT specifiers without an exact equivalent, a format that is not constant, a DOUBLE's text,
    GREATEST / LEAST of strings and numbers (MySQL compares them as strings, MariaDB as numbers)."""
    for expression, named in (("DATE_FORMAT(d, '%D of %M')", "%D"), ("DATE_FORMAT(d, '%v')", "%v"),
                              ("DATE_FORMAT(d, '%u')", "%u"), ("STR_TO_DATE('1st', '%D')", "%D"),
                              ("DATE_FORMAT(d, name)", "constant format"), ("IFNULL(x, 'none')", "IFNULL"),
                              ("IF(i > 0, x, 'a')", "IF"), ("CONCAT(name, x)", "CONCAT"),
                              ("WEEK(d, 3)", "WEEK"), ("YEARWEEK(d)", "YEARWEEK"), ("MID(name, 2, 2)", "MID"),
                              ("ELT(2, 'a', 'b')", "ELT"), ("LEAST(s, 5)", "LEAST of strings and numbers"),
                              ("GREATEST(i, '10', n)", "GREATEST of strings and numbers")):
        with pytest.raises(NotSupportedError, match=named):
            answer(mysql_engine, expression)


def test_mysql_string_comparison_is_binary(mariadb, mysql_engine):
    """Documented difference: strings compare byte by byte (as MySQL's utf8mb4_bin collation), not
    case-insensitively as MySQL's and MariaDB's default collations do."""
    assert answer(mysql_engine, "'a' = 'A'") == 0.0
    assert normal(mariadb.sql("SELECT 'a' = 'A' COLLATE utf8mb4_bin")[0][0]) == 0.0
    assert normal(mariadb.sql("SELECT 'a' = 'A'")[0][0]) == 1.0


def test_mysql_clock_reads_the_federation_time_zone(tmp_path, federation_writer):
    """NOW()/CURDATE() read the wall clock of [federation] time_zone (Asia/Kolkata: UTC+05:30, no DST)."""
    engine = federation(tmp_path, federation_writer, "mysql", time_zone="Asia/Kolkata")
    try:
        assert answer(engine, "TIMESTAMPDIFF(MINUTE, UTC_TIMESTAMP(), NOW())") == 330.0
        assert answer(engine, "CURDATE() = DATE(NOW())") == 1.0
        assert answer(engine, "NOW() = DATE_FORMAT(NOW(), '%Y-%m-%d %H:%i:%s')") == 1.0  # whole seconds
        assert answer(engine, "DATE(UTC_TIMESTAMP()) = UTC_DATE()") == 1.0
    finally:
        engine.close()


def test_mysql_clock_in_a_query_across_parties(tmp_path, make_federation):
    """NOW()/CURDATE() are constants to column control: compared with a party's column in a join of
    two parties, the issuer may learn the comparison (SCQL's `date func (now, curdate)`)."""
    with Engine(make_federation(tmp_path, dialect="mysql"), timeout=60) as engine:
        sql = ("SELECT o.order_id, CURDATE() > '2000-01-01' AS after, YEAR(NOW()) >= 2026 AS y, "
               "DATE(NOW()) = CURDATE() AS today FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id")
        rows = engine.execute(sql, "bank").table.to_pylist()
        assert rows and all(r["after"] and r["y"] and r["today"] for r in rows)
        assert engine.check(sql, "bank") is None


def test_postgres_division_across_parties(tmp_path, make_federation, oracle_for):
    """PostgreSQL's division by zero is an error: the parties' DuckDB raise it through ERROR(), the SPU by
    refusing a counted row that divides by zero (DataError); otherwise the quotient is computed on shares."""
    joined = "FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id WHERE o.amount > c.age"
    with Engine(make_federation(tmp_path, dialect="postgres"), timeout=60) as engine:
        oracle = oracle_for(engine)
        sql = f"SELECT o.order_id, o.amount / c.age AS r, o.order_id % c.age AS m {joined}"
        assert "SPU(" in engine.explain(sql, "bank")
        oracle.check(sql, "bank")
        with pytest.raises(DataError, match="divides by zero"):
            engine.execute(f"SELECT o.order_id, o.amount / (c.age - c.age) AS r {joined}", "bank")
        # round(double precision) ties to even: x.50 amounts are exact ties in binary
        sql = f"SELECT o.order_id, ROUND(o.amount + c.age) AS r {joined}"
        assert "SPU(" in engine.explain(sql, "bank")
        want = oracle.con.sql(f"SELECT o.order_id, ROUND_EVEN(o.amount + c.age, 0) AS r {joined}").to_arrow_table()
        assert same_multiset(engine.execute(sql, "bank").table, want)


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../etc/passwd", 5])
def test_time_zone_is_validated(tmp_path, federation_writer, zone):
    with pytest.raises(ConfigError, match="time_zone"):
        federation(tmp_path, federation_writer, "mysql", time_zone=zone)


# --- PostgreSQL, the session's server (tests/conftest.py) ---------------------------------------------

@pytest.fixture(scope="module")
def postgres_table(postgres):
    database = postgres.database("dialects")
    postgres.sql(f"CREATE SCHEMA p; CREATE TABLE p.t ({COLUMNS_POSTGRES}); INSERT INTO p.t VALUES ({VALUES})",
                 database)
    return postgres.uri(database)


@pytest.fixture(scope="module")
def postgres_engine(tmp_path_factory, federation_writer):
    engine = federation(tmp_path_factory.mktemp("postgres"), federation_writer, "postgres")
    yield engine
    engine.close()


def postgres_answer(uri: str, expression: str):
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(uri) as con, con.cursor() as cursor:
        cursor.execute(f"SELECT {expression} FROM p.t")
        result = cursor.fetch_arrow_table()
    value = result.column(0)[0].as_py()
    metadata = result.schema.field(0).metadata or {}
    if metadata.get(b"ADBC:postgresql:typname") == b"numeric" and value is not None:
        value = decimal.Decimal(value)  # the driver hands NUMERIC over as text
    return normal(value)


@pytest.mark.parametrize("expression", POSTGRES)
def test_postgres_answers_as_postgresql(postgres_table, postgres_engine, expression):
    want = postgres_answer(postgres_table, expression)
    got = answer(postgres_engine, expression)
    assert same(got, want), f"{expression}: sqlsecure {got!r}, PostgreSQL {want!r}"


def test_postgres_refuses_functions_it_does_not_have(postgres_engine):
    with pytest.raises(NotSupportedError, match="SPLIT_PART_X"):
        answer(postgres_engine, "split_part_x(name, 'l', 1)")


@pytest.mark.parametrize("expression", ["x::numeric", "CAST(name AS NUMERIC)", "CAST(x / 3 AS DECIMAL)"])
def test_postgres_refuses_numeric_without_precision_of_a_double_or_text(postgres_engine, expression):
    """PostgreSQL keeps such a value's own digits, which no fixed DuckDB DECIMAL holds for every value."""
    with pytest.raises(NotSupportedError, match="NUMERIC without a precision"):
        answer(postgres_engine, expression)
    assert "NotSupportedError: " in postgres_engine.check(f"SELECT {expression} AS v FROM p.t", "p")


@pytest.mark.parametrize("expression", POSTGRES_DIVISION_BY_ZERO)
def test_postgres_division_by_zero_is_an_error(postgres_table, postgres_engine, expression):
    import adbc_driver_manager

    with pytest.raises(adbc_driver_manager.Error, match="division by zero"):
        postgres_answer(postgres_table, expression)
    with pytest.raises(Error, match="division by zero"):
        answer(postgres_engine, expression)
