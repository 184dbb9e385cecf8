"""Crashes and unclear errors (issue 15): every error that leaves the engine is a PEP 249 class whose
message says what is wrong and what to do; deep-but-legal queries and every parameter type still work."""

from __future__ import annotations

import datetime
import decimal
import math
import re

import duckdb
import pytest

import sqlsecure
from sqlsecure import errors
from sqlsecure.planner import parse
from sqlsecure.planner.parse import MAX_EXPRESSION_DEPTH, MAX_NESTING

JOIN = " FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id"


def nested(opening: str, inner: str, closing: str, n: int) -> str:
    return opening * n + inner + closing * n


TOO_DEEP = {
    "500 summed terms": "SELECT " + "+".join(["c.age"] * 500) + JOIN,
    "90 nested subqueries": "SELECT * FROM " + nested("(SELECT * FROM ", "bank.customers", ") t", 90),
    "deep parentheses": "SELECT " + nested("(", "c.age", ")", 300) + JOIN,
    "deep CASE": "SELECT " + nested("CASE WHEN c.age > 1 THEN ", "1", " ELSE 0 END", 120) + JOIN,
    "deep function calls": "SELECT " + nested("abs(", "o.amount", ")", 200) + JOIN,
    "deep scalar subqueries": "SELECT " + nested("(SELECT ", "1", ")", 100),
    "deep CTE bodies": "WITH a AS " + nested("(SELECT * FROM ", "bank.customers", ") t", 60) + " SELECT * FROM a",
    "long AND chain": "SELECT c.id" + JOIN + " WHERE " + " AND ".join(["c.age > 1"] * 600),
}


@pytest.mark.parametrize("sql", TOO_DEEP.values(), ids=TOO_DEEP.keys())
def test_a_query_nested_too_deeply_is_refused_with_the_limit(engine, sql):
    for call in (lambda: engine.plan(sql, "bank"), lambda: engine.execute(sql, "bank"),
                 lambda: engine.explain(sql, "bank")):
        with pytest.raises(errors.NotSupportedError, match=f"nests too deeply.*{MAX_NESTING}.*{MAX_EXPRESSION_DEPTH}"):
            call()
    assert "nests too deeply" in engine.check(sql, "bank")


def test_python_running_out_of_stack_anywhere_is_refused_as_too_deep(engine, monkeypatch):
    def recurse(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(sqlsecure.engine, "plan_query", recurse)
    with pytest.raises(errors.NotSupportedError, match="nests too deeply"):
        engine.execute("SELECT c.age" + JOIN, "bank")


LEGAL = {
    "parentheses at the limit": "SELECT " + nested("(", "c.age + o.amount", ")", MAX_NESTING) + JOIN,
    "CASE at the limit": "SELECT " + nested("CASE WHEN o.amount > 1 THEN ", "c.age", " ELSE 0 END", MAX_NESTING) + JOIN,
    "subqueries near the limit": "SELECT COUNT(*) AS n FROM " + nested("(SELECT * FROM ", "shop.orders", ") t",
                                                                       MAX_NESTING - 1)
                                 + " JOIN bank.customers c ON c.id = t.customer_id",
    "a long sum": "SELECT SUM(" + "+".join(["o.amount"] * (MAX_EXPRESSION_DEPTH - 8)) + ") AS s" + JOIN,
    "a long sum per row": "SELECT " + "+".join(["o.amount"] * (MAX_EXPRESSION_DEPTH - 8)) + " AS s" + JOIN,
}


@pytest.mark.parametrize("sql", LEGAL.values(), ids=LEGAL.keys())
def test_deep_but_legal_queries_are_answered(oracle, sql):
    oracle.check(sql)


SYNTAX = {
    "SELECT 'abc": "line 1, column 8: unterminated quoted text; close it with '",
    'SELECT "abc FROM bank.customers': "line 1, column 8: unterminated quoted text",
    "/*": "line 1, column 1: unterminated comment; close it with */",
    "SELECT age FROM bank.customers\nWHERE name = 'x": "line 2, column 14: unterminated",
    "SELECT 1 /* a comment": "line 1, column 10: unterminated comment",
}


@pytest.mark.parametrize("sql, message", SYNTAX.items(), ids=range(len(SYNTAX)))
def test_text_the_tokenizer_cannot_read_is_a_plan_error_with_its_position(engine, sql, message):
    with pytest.raises(errors.PlanError, match=message.replace("*", r"\*").replace("(", r"\(")):
        engine.execute(sql, "bank")


MALFORMED = ["SELECT FROM", "SELECT * FROM bank.customers WHERE", "SELECT COUNT( FROM bank.customers",
             "SELECT * FROM bank.customers c JOIN shop.orders o ON", "SELECT CAST(age AS) FROM bank.customers",
             "SELECT * FROM bank.customers GROUP BY", "SELECT 1 +", "WITH a AS SELECT 1", "SELECT * FROM (",
             "SELECT )", "SELECT CASE WHEN THEN END"]


@pytest.mark.parametrize("sql", MALFORMED)
def test_syntax_errors_name_the_place_and_never_sqlglot_internals(engine, sql):
    with pytest.raises(errors.Error) as caught:
        engine.execute(sql, "bank")
    text = str(caught.value)
    if text.startswith("syntax error"):
        assert " at line " in text, text
    for internal in ("<Token", "TokenType", "sqlglot", "Required keyword", "<class", "SENTINEL"):
        assert internal not in text, text


def test_a_stray_exception_is_an_internal_error_without_its_text(engine, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("secret-value-42")

    monkeypatch.setattr(sqlsecure.engine, "plan_query", broken)
    with pytest.raises(errors.InternalError, match="KeyError.*bug") as caught:
        engine.execute("SELECT c.age" + JOIN, "bank")
    assert "secret-value-42" not in str(caught.value)


@pytest.mark.parametrize("parameters", [5, 2.5, {"a": 1}, "ab", b"ab", object()],
                         ids=["int", "float", "dict", "str", "bytes", "object"])
def test_parameters_that_are_not_a_sequence_are_a_programming_error(federation_dir, engine, parameters):
    with sqlsecure.connect(federation_dir / "federation.toml", party="bank") as con:
        with pytest.raises(errors.ProgrammingError, match="sequence"):
            con.execute("SELECT ? AS v", parameters)
    with pytest.raises(errors.ProgrammingError, match="sequence"):
        engine.execute("SELECT ? AS v", "bank", parameters)


PARAMETERS = [True, False, 0, -5, 2 ** 31, 2 ** 63 - 1, -(2 ** 63), 2 ** 63, 2 ** 64 + 1, -(2 ** 100),
              0.1, -0.0, 1e308, 5e-324, float("nan"), float("inf"), float("-inf"), decimal.Decimal("12.345"),
              decimal.Decimal("-0.001"), "it's", "", "a\nb\\'c", b"\x00a'", datetime.date(2020, 1, 2),
              datetime.time(1, 2, 3, 4), datetime.datetime(2020, 1, 2, 3, 4, 5, 6),
              datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=2))), None]


def same_value(got, want) -> bool:
    """Equal value and type; an integer beyond 64 bits comes back as Arrow's decimal128(38, 0)."""
    if isinstance(want, float) and math.isnan(want):
        return isinstance(got, float) and math.isnan(got)
    if isinstance(want, int) and not isinstance(want, bool) and not -(2 ** 63) <= want < 2 ** 63:
        return isinstance(got, decimal.Decimal) and got == want
    return type(got) is type(want) and got == want and str(got) == str(want)


@pytest.mark.parametrize("value", PARAMETERS, ids=[repr(v)[:30] for v in PARAMETERS])
def test_every_parameter_type_round_trips_as_duckdb_binds_it(federation_dir, value):
    want = duckdb.connect().execute("SELECT ? AS v", [value]).fetchone()[0]
    with sqlsecure.connect(federation_dir / "federation.toml", party="bank") as con:
        got = con.execute("SELECT ? AS v", [value]).fetchone()[0]
    assert same_value(got, want), (got, want)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 150.5, decimal.Decimal("150.5")],
                         ids=repr)
def test_float_parameters_compare_as_doubles_across_parties(oracle, federation_dir, value):
    sql = "SELECT c.id, o.amount" + JOIN + " WHERE o.amount < ?"
    want = oracle.con.execute(sql, [value]).fetchall()
    with sqlsecure.connect(federation_dir / "federation.toml", party="bank") as con:
        got = con.execute(sql, [value]).fetchall()
    assert sorted(got) == sorted(want)


def test_an_integer_parameter_beyond_128_bits_is_a_data_error(engine):
    with pytest.raises(errors.DataError, match="parameter 1 .*128-bit"):
        engine.execute("SELECT ? AS v", "bank", [2 ** 130])


def test_an_unsupported_parameter_type_is_named(engine):
    with pytest.raises(errors.PlanError, match="parameter 2 has unsupported type list"):
        engine.execute("SELECT ? AS a, ? AS b", "bank", [1, [1, 2]])


REPEATED = [
    "SELECT c.age AS x, c.income AS x FROM bank.customers c",
    "SELECT c.age AS x, o.amount AS x, c.id AS x" + JOIN,
    "SELECT c.region AS x, COUNT(*) AS x, SUM(o.amount) AS x" + JOIN + " GROUP BY c.region",
    "SELECT c.age, c.age" + JOIN,
    "SELECT o.amount AS x, p.premium AS x FROM shop.orders o JOIN insurer.policies p ON o.customer_id = p.customer_id",
]


@pytest.mark.parametrize("sql", REPEATED)
def test_rows_keep_every_column_of_a_repeated_name(oracle, federation_dir, sql):
    want = oracle.expected(sql, "bank")
    with sqlsecure.connect(federation_dir / "federation.toml", party="bank") as con:
        cur = con.execute(sql)
        rows = cur.fetchall()
    assert all(len(row) == len(cur.description) == want.num_columns for row in rows)
    assert len(rows) == want.num_rows
    expected = sorted(zip(*[c.to_pylist() for c in want.columns]), key=repr)
    assert all(math.isclose(float(a), float(b), rel_tol=1e-5) if isinstance(b, float) else a == b
               for got, exp_row in zip(sorted(rows, key=repr), expected) for a, b in zip(got, exp_row))


def test_csv_output_keeps_every_column_of_a_repeated_name(engine):
    from sqlsecure.formatting import as_csv, as_table

    table = engine.execute("SELECT c.age AS x, c.region AS x FROM bank.customers c LIMIT 1", "bank").table
    assert len(as_csv(table).splitlines()[1].split(",")) == 2
    assert table.column(1)[0].as_py() in as_table(table)


ANY_ALL = [
    "SELECT c.id FROM bank.customers c WHERE c.age > ALL (SELECT o.amount FROM shop.orders o "
    "JOIN bank.accounts a ON o.customer_id = a.customer_id)",
    "SELECT c.id FROM bank.customers c WHERE c.age > ALL (SELECT o.amount FROM shop.orders o)",
    "SELECT c.id FROM bank.customers c WHERE c.age = ANY (SELECT o.customer_id FROM shop.orders o)",
    "SELECT c.id, o.amount" + JOIN + " WHERE o.amount > ALL (SELECT a.balance FROM bank.accounts a)",
    "SELECT c.id, c.age > ALL (SELECT o.amount FROM shop.orders o) AS above FROM bank.customers c",
]


@pytest.mark.parametrize("sql", ANY_ALL)
def test_any_all_subqueries_across_parties_are_computed_at_the_issuer(engine, oracle, sql):
    """The secure placement refuses them by name; with every column they read PLAINTEXT to the issuer
    (this module's grants) the issuer computes them instead (planner/gather.py)."""
    plan = engine.plan(sql, "bank").physical
    assert plan.steps[-1].mode == "tables" and "subquer" in plan.notes[0]
    oracle.check(sql, "bank")


def test_parse_limits_are_checked_without_recursion():
    sql = "SELECT " + "(" * 5000 + "1" + ")" * 5000
    with pytest.raises(errors.NotSupportedError, match="nests too deeply"):
        parse.parse_statement(sql, "duckdb")


def test_the_command_line_shows_a_stray_exception_as_a_pep249_error(federation_dir, monkeypatch):
    from click.testing import CliRunner

    from sqlsecure.cli import main

    def broken(*args, **kwargs):
        raise ValueError("secret-value-42")

    monkeypatch.setattr(sqlsecure.formatting, "as_csv", broken)
    monkeypatch.setitem(sqlsecure.cli.FORMATS, "csv", broken)
    result = CliRunner().invoke(main, ["query", "-F", str(federation_dir / "federation.toml"), "--as", "bank",
                                       "--format", "csv", "SELECT COUNT(*) AS n FROM bank.customers"])
    assert result.exit_code == 1 and "error: InternalError: internal error (ValueError" in result.output
    assert "secret-value-42" not in result.output and "Traceback" not in result.output


def test_the_command_line_names_an_unreadable_file(tmp_path):
    from click.testing import CliRunner

    from sqlsecure.cli import main

    result = CliRunner().invoke(main, ["query", "-F", str(tmp_path), "--as", "bank", "SELECT 1"])
    assert result.exit_code != 0 and "Traceback" not in result.output


def test_the_shell_shows_a_stray_exception_as_a_pep249_error_and_goes_on(engine, monkeypatch):
    import io

    from sqlsecure.shell import Shell

    out, err = io.StringIO(), io.StringIO()
    shell = Shell(engine, "bank", out=out, err=err)

    def broken(table):
        raise KeyError("secret-value-42")

    monkeypatch.setattr(shell, "show", broken)
    shell.run("SELECT COUNT(*) AS n FROM bank.customers;")
    assert "ERROR: InternalError: internal error (KeyError" in err.getvalue() and shell.failed
    assert "secret-value-42" not in err.getvalue()
    monkeypatch.undo()
    shell.run("SELECT COUNT(*) AS n FROM bank.customers;")
    assert "120" in out.getvalue()


@pytest.fixture(scope="module")
def dated(tmp_path_factory, federation_writer, plaintext_grants, oracle_for):
    """bank and shop with a DATE, a TIMESTAMP and a TIMESTAMPTZ column: types the SPU cannot all encode."""
    import pyarrow as pa

    from sqlsecure.engine import Engine

    n = 60
    start = datetime.datetime(2021, 1, 1, 10)
    tables = {
        "bank": {"c": pa.table({"id": pa.array(range(n), pa.int64()),
                                "joined": pa.array([datetime.date(2020, 1, 1) + datetime.timedelta(days=i)
                                                    for i in range(n)])})},
        "shop": {"o": pa.table({"cid": pa.array([i % 30 for i in range(n)], pa.int64()),
                                "ts": pa.array([start + datetime.timedelta(hours=7 * i) for i in range(n)],
                                               pa.timestamp("us")),
                                "tz": pa.array([start + datetime.timedelta(hours=5 * i) for i in range(n)],
                                               pa.timestamp("us", tz="UTC"))})},
    }
    path = federation_writer(tmp_path_factory.mktemp("dated"), tables, plaintext_grants(("bank", "shop")),
                             parties=("bank", "shop"))
    with Engine(path, timeout=60) as engine:
        yield oracle_for(engine)


@pytest.mark.parametrize("sql", [
    "SELECT AVG(o.ts) AS a FROM bank.c c JOIN shop.o o ON c.id = o.cid",
    "SELECT AVG(o.ts) AS a, MIN(o.tz) AS m, AVG(c.joined) AS j FROM bank.c c JOIN shop.o o ON c.id = o.cid",
    "SELECT COUNT(*) AS n FROM bank.c c JOIN shop.o o ON c.id = o.cid WHERE o.ts > c.joined",  # on the SPU
])
def test_timestamps_across_a_join_are_answered_where_they_can_be(dated, sql):
    dated.check(sql)


@pytest.mark.parametrize("sql", [
    "SELECT c.id % 2 AS g, AVG(o.ts) AS a FROM bank.c c JOIN shop.o o ON c.id = o.cid GROUP BY 1",
    "SELECT c.id % 2 AS g, MAX(o.tz) AS a FROM bank.c c JOIN shop.o o ON c.id = o.cid GROUP BY 1",
])
def test_timestamps_the_spu_cannot_encode_are_computed_at_the_issuer(dated, sql):
    """Refused by the secure placement (AVG of a TIMESTAMP, a TIMESTAMPTZ column); with all-PLAINTEXT grants
    the issuer computes them instead."""
    plan = dated.engine.plan(sql, "bank").physical
    assert re.search(r'"o"\."tz" of type TIMESTAMP WITH TIME ZONE cannot enter secure|AVG of timestamp values',
                     plan.notes[0])
    dated.check(sql)


@pytest.mark.parametrize("seq", [5, "ab", [5], [(1,), 2]], ids=["int", "str", "list of int", "mixed"])
def test_executemany_needs_a_sequence_of_sequences(federation_dir, seq):
    with sqlsecure.connect(federation_dir / "federation.toml", party="bank") as con:
        with pytest.raises(errors.ProgrammingError, match="sequence"):
            con.cursor().executemany("SELECT ? AS v", seq)


def test_a_long_chain_of_ctes_is_answered_or_refused_as_too_deep(engine):
    ctes = ["c0 AS (SELECT id FROM bank.customers)"] + [f"c{i} AS (SELECT id FROM c{i - 1})" for i in range(1, 400)]
    try:
        engine.execute("WITH " + ", ".join(ctes) + " SELECT COUNT(*) AS n FROM c399", "bank")
    except errors.NotSupportedError as exc:
        assert "nests too deeply" in str(exc)
