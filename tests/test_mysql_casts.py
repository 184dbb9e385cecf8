"""The mysql dialect's CAST / CONVERT targets are MariaDB's: a target MariaDB rejects as a syntax error (BIGINT,
VARCHAR without a length, TEXT, ...) is refused at parse time by name, with what to write instead, even where
sqlglot reads it as the same type as an accepted one (BIGINT and SIGNED). `ACCEPTED` documents MariaDB 10.11's
answers; the real MariaDB (started by tests/test_dialects.py's fixture) confirms them where it is installed."""

from __future__ import annotations

import pytest

from sqlsecure.errors import PlanError, ProgrammingError
from sqlsecure.planner.parse import parse_query
from tests.test_dialects import answer, mariadb, mysql_engine, normal, same  # noqa: F401 (fixtures)

# target -> does MariaDB 10.11 accept CAST('12' AS target)?
ACCEPTED = {
    "SIGNED": True, "SIGNED INTEGER": True, "UNSIGNED": True, "UNSIGNED INTEGER": True, "INT": True,
    "INTEGER": True, "INT4": True, "CHAR": True, "CHAR(3)": True, "CHAR CHARACTER SET utf8mb4": True, "CHARACTER": True,
    "NCHAR": True, "VARCHAR(10)": True, "BINARY": True, "BINARY(4)": True, "DATE": True, "DATETIME": True,
    "DATETIME(3)": True, "TIME": True, "DECIMAL": True, "DECIMAL(5,2)": True, "DEC(5,2)": True, "DOUBLE": True,
    "DOUBLE(10,2)": True, "FLOAT": True,
    "BIGINT": False, "VARCHAR": False, "TEXT": False, "SMALLINT": False, "TINYINT": False, "MEDIUMINT": False,
    "INT8": False, "BOOLEAN": False, "BOOL": False, "NUMERIC": False, "REAL": False,
    "DOUBLE PRECISION": False, "FLOAT(10)": False, "TIMESTAMP": False, "VARBINARY": False, "BLOB": False,
    "LONGTEXT": False, "YEAR": False, "JSON": False,
}
# what the refusal of a target suggests instead
INSTEAD = {"BIGINT": "SIGNED", "INT8": "SIGNED", "BOOLEAN": "SIGNED", "VARCHAR": "CHAR", "TEXT": "CHAR",
           "LONGTEXT": "CHAR", "NUMERIC": "DECIMAL", "REAL": "DOUBLE", "DOUBLE PRECISION": "DOUBLE",
           "FLOAT(10)": "DOUBLE", "TIMESTAMP": "DATETIME", "VARBINARY": "BINARY", "BLOB": "BINARY"}


def refusal(sql: str) -> str | None:
    """The parse-time refusal of `sql` in the mysql dialect, None if it parses."""
    try:
        parse_query(sql, "mysql")
    except PlanError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("target", sorted(ACCEPTED))
def test_cast_targets_are_mariadb_s(target):
    for sql in (f"SELECT CAST(x AS {target}) FROM p.t", f"SELECT CONVERT(x, {target}) FROM p.t"):
        why = refusal(sql)
        if ACCEPTED[target]:
            assert why is None, why
        else:
            head = target.split("(")[0]
            assert why is not None and f"cannot cast to {head}" in why, (sql, why)
            assert "they cast to BINARY, CHAR[(n)], DATE, DATETIME, DECIMAL" in why, why
            if target in INSTEAD:
                assert f"write {INSTEAD[target]}" in why, why


def test_mariadb_answers_as_documented(mariadb):
    import pymysql

    for target, accepted in ACCEPTED.items():
        try:
            mariadb.sql(f"SELECT CAST('12' AS {target})")
            said = True
        except pymysql.err.ProgrammingError:
            said = False
        assert said == accepted, f"MariaDB {'accepts' if said else 'rejects'} CAST(... AS {target})"


@pytest.mark.parametrize("sql, where, named", [
    ("SELECT CAST(i AS BIGINT) FROM p.t", "line 1, column 8", "BIGINT"),
    ("SELECT i,\n  CAST(CAST(i AS CHAR) AS VARCHAR) FROM p.t", "line 2, column 3", "VARCHAR"),
    ("SELECT i FROM p.t WHERE CONVERT(s, TEXT) = 'a'", "line 1, column 25", "TEXT"),
    ("SELECT i FROM p.t WHERE i IN (SELECT CAST(z AS SMALLINT) FROM p.t)", "line 1, column 38", "SMALLINT"),
])
def test_check_explain_and_execution_refuse_by_name(mysql_engine, sql, where, named):
    said = mysql_engine.check(sql, "p")
    assert said is not None and said.startswith(f"PlanError: syntax error at {where}") and named in said, said
    for run in (mysql_engine.explain, mysql_engine.execute):
        with pytest.raises(ProgrammingError) as refused:
            run(sql, "p")
        assert f"PlanError: {refused.value}" == said


@pytest.mark.parametrize("sql, named", [("SELECT i::BIGINT FROM p.t", "::"),
                                        ("SELECT TRY_CAST(s AS SIGNED) FROM p.t", "TRY_CAST")])
def test_casts_mysql_lacks_are_refused(mariadb, sql, named):
    import pymysql

    with pytest.raises(pymysql.err.MySQLError):  # a syntax error (::), an unknown function (TRY_CAST)
        mariadb.sql(sql)
    assert f"have no {named}; write CAST(x AS type)" in refusal(sql)


def test_accepted_targets_keep_their_answers(mariadb, mysql_engine):
    """The check refuses nothing MariaDB answers: accepted casts give MariaDB's values."""
    for expression in ("CAST(s AS SIGNED)", "CAST(x AS INTEGER)", "CONVERT(s, SIGNED)", "CAST(i AS CHAR)",
                       "CAST(x AS DECIMAL(5,2))", "CAST(neg AS DOUBLE)"):
        want = normal(mariadb.sql(f"SELECT {expression} FROM p.t")[0][0])
        assert same(answer(mysql_engine, expression), want), expression
