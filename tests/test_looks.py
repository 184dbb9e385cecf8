"""Issue 18, "answers that look right": DuckDB's output names, exact decimals on every device, the
group threshold's notice, and the cost model choosing only among devices that can run the query."""

from __future__ import annotations

import pytest

NAMED_LIKE_DUCKDB = [
    "SELECT COUNT(*), SUM(o.amount) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id",
    "SELECT c.region, COUNT(*), AVG(c.income) + 1 FROM bank.customers c JOIN shop.orders o "
    "ON c.id = o.customer_id GROUP BY 1 ORDER BY COUNT(*) DESC",
    "SELECT o.category, MAX(o.amount) * 2, SUM(c.age) AS total FROM bank.customers c "
    "JOIN shop.orders o ON c.id = o.customer_id GROUP BY o.category ORDER BY 2",
    "SELECT COUNT(*), MIN(income), region || '-x' FROM bank.customers GROUP BY region",
    "SELECT SUM(p.premium), COUNT(p.claims) FROM bank.customers c JOIN insurer.policies p ON c.id = p.customer_id",
    "SELECT category, COUNT(*), AVG(amount) FROM shop.orders GROUP BY 1",  # pushed down whole to shop
    "SELECT c.id, o.amount, CAST(o.amount AS DOUBLE), CAST(c.age AS BIGINT) AS a FROM bank.customers c "
    "JOIN shop.orders o ON c.id = o.customer_id",  # qualify would call the CAST 'amount', as the column beside it
    "SELECT amount, CAST(amount AS INTEGER) FROM shop.orders ORDER BY amount",
]


@pytest.mark.parametrize("sql", NAMED_LIKE_DUCKDB)
def test_unnamed_outputs_are_named_as_duckdb_names_them(engine, oracle, sql):
    got = engine.execute(sql, "bank").table
    assert got.column_names == oracle.expected(sql, "bank").column_names
    assert not any(name.startswith("_col_") for name in got.column_names)


CLASS_4_KEY_ONLY_HE_CAN_RUN = ("SELECT c.region || '-x' AS k, SUM(o.amount), COUNT(o.amount) FROM bank.customers c "
                               "JOIN shop.orders o ON c.id = o.customer_id GROUP BY 1")


def test_cost_model_picks_among_devices_that_can_run_the_query(engine, oracle):
    """group_sums = "auto" (the default): the SPU is cheaper here but cannot evaluate ||, so HE runs it."""
    assert engine.config.group_sums == "auto"
    oracle.check(CLASS_4_KEY_ONLY_HE_CAN_RUN)
    explained = engine.explain(CLASS_4_KEY_ONLY_HE_CAN_RUN, "bank")
    assert "only HE can run it" in explained and "||" in explained


def test_choose_keeps_the_priced_device_when_both_can_or_neither_can():
    from sqlsecure.planner.cost import Estimate, choose

    spu = Estimate("spu", 2.0, 1.0, "priced")
    assert choose(spu, {}) is spu
    assert choose(spu, {"he": "x", "spu": "y"}) is spu
    assert choose(spu, {"spu": "it cannot evaluate a || b on shares"}).engine == "he"
    assert choose(Estimate("he", 1.0, 2.0, "priced"), {"he": "MAX"}).engine == "spu"


def test_spu_capability_is_deny_by_default():
    import sqlglot

    from sqlsecure.executors.spu.stage import spu_cannot_evaluate

    def part(sql):
        found = spu_cannot_evaluate(sqlglot.parse_one(sql, read="duckdb"))
        return found.sql(dialect="duckdb") if found is not None else None

    assert part("SUM(CASE WHEN a > 1 THEN b * 2 ELSE 0 END)") is None
    assert part("a || '-x'") == "a || '-x'"
    assert part("UPPER(a)") == "UPPER(a)"
    assert part("CAST(a AS TEXT)") == "CAST(a AS TEXT)"


# -- the group threshold's notice (README, security model: no count, no flag) ---------------------------

WITHHELD_TOTAL = ("SELECT COUNT(*), SUM(o.amount) FROM bank.customers c JOIN shop.orders o "
                  "ON c.id = o.customer_id WHERE o.order_id = 5")
GROUPED = ("SELECT c.region, COUNT(*) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
           "GROUP BY c.region")
KEPT_TOTAL = "SELECT COUNT(*) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id"


def test_notices_say_what_the_threshold_withholds_and_no_more(engine, oracle):
    withheld = engine.execute(WITHHELD_TOTAL, "bank")
    assert withheld.table.num_rows == 0 and oracle.expected(WITHHELD_TOTAL, "bank").num_rows == 0
    (notice,) = withheld.notices
    assert "fewer than 4 distinct rows of shop" in notice and "min_group_size 4" in notice
    (grouped,) = engine.execute(GROUPED, "bank").notices
    assert "groups covering fewer than 4" in grouped and "whether any were is not revealed" in grouped
    assert not any(ch.isdigit() for ch in grouped.replace("4", ""))  # no count of withheld groups
    assert engine.execute(KEPT_TOTAL, "bank").notices == ()  # a kept ungrouped row: nothing to say
    assert engine.execute("SELECT region, COUNT(*) FROM bank.customers GROUP BY 1", "bank").notices == ()


def test_notice_is_the_same_whether_or_not_groups_were_withheld(engine):
    """The notice depends on the plan, not the data: narrowing to one customer tells nothing more."""
    narrowed = GROUPED.replace("GROUP BY", "WHERE c.id = 7 GROUP BY")
    assert engine.execute(narrowed, "bank").notices == engine.execute(GROUPED, "bank").notices


def test_dbapi_cursor_messages(federation_dir):
    from sqlsecure import dbapi
    from sqlsecure.errors import Warning as SqlsecureWarning

    with dbapi.connect(federation_dir / "federation.toml", "bank") as con:
        cur = con.cursor()
        cur.execute(WITHHELD_TOTAL)
        assert cur.fetchall() == []
        ((cls, message),) = cur.messages
        assert cls is SqlsecureWarning and "min_group_size 4" in message
        cur.execute(KEPT_TOTAL)
        assert cur.messages == []


def test_cli_prints_the_notice_on_stderr(federation_dir):
    from click.testing import CliRunner

    from sqlsecure.cli import main

    result = CliRunner().invoke(main, ["query", "-F", str(federation_dir / "federation.toml"), "--as", "bank",
                                       "--format", "csv", WITHHELD_TOTAL])
    assert result.exit_code == 0, result.output
    assert "NOTICE: no row" in result.stderr and "NOTICE" not in result.stdout


def test_flight_sql_app_metadata_carries_the_notice(engine):
    import json

    import pyarrow.flight as flight

    from sqlsecure.flight_sql import FlightSql_pb2 as pb
    from sqlsecure.flight_sql.auth import Credentials
    from sqlsecure.flight_sql.protocol import pack
    from sqlsecure.flight_sql.server import FlightSqlServer

    server = FlightSqlServer(engine, "bank", credentials=Credentials({"ana": "s3cret-pass"}), port=0)
    try:
        client = flight.connect(server.uri)
        options = flight.FlightCallOptions(headers=[client.authenticate_basic_token("ana", "s3cret-pass")])
        info = client.get_flight_info(flight.FlightDescriptor.for_command(
            pack(pb.CommandStatementQuery(query=WITHHELD_TOTAL))), options)
        (notice,) = json.loads(info.app_metadata)["notices"]
        assert "min_group_size 4" in notice and info.total_records == 0
        client.close()
    finally:
        server.shutdown()


# -- DECIMAL columns are exact at their scale on every device -------------------------------------------

EXACT_DECIMALS = [
    "SELECT c.region, SUM(c.income), MIN(c.income), MAX(c.income), COUNT(c.income) FROM bank.customers c "
    "JOIN shop.orders o ON c.id = o.customer_id GROUP BY 1",
    "SELECT o.category, SUM(c.income) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "GROUP BY o.category HAVING SUM(c.income) > 1000",
    "SELECT o.region, SUM(c.income), MAX(c.income), COUNT(*) FROM bank.customers c JOIN shop.orders o "
    "ON c.id = o.customer_id GROUP BY o.region",
    "SELECT u.r, SUM(u.v), MAX(u.v) FROM (SELECT region AS r, income AS v FROM bank.customers UNION ALL "
    "SELECT region AS r, CAST(amount AS DECIMAL(12, 2)) AS v FROM shop.orders) u GROUP BY u.r",
]


def exactly_equal(got, want) -> None:
    """Same rows as exact values (no tolerance) and, for DECIMAL results, DuckDB's type."""
    from tests.conftest import sorted_rows

    assert sorted_rows(got) == sorted_rows(want)
    for mine, duck in zip(got.schema, want.schema):
        if str(duck.type).startswith("decimal") and duck.type.precision == 38:  # SUM of DECIMAL(p, s)
            assert mine.type == duck.type, (mine, duck)


@pytest.fixture(scope="module")
def spu_engine(tmp_path_factory, make_federation):
    from sqlsecure.engine import Engine

    with Engine(make_federation(tmp_path_factory.mktemp("spu"), group_sums="spu"), timeout=60) as eng:
        yield eng


@pytest.mark.parametrize("sql", EXACT_DECIMALS)
def test_spu_sums_of_decimals_are_exact(spu_engine, oracle_for, sql):
    assert "spu" in spu_engine.explain(sql, "bank").lower()
    exactly_equal(spu_engine.execute(sql, "bank").table, oracle_for(spu_engine).expected(sql, "bank"))


def test_spu_decimal_in_arithmetic_and_comparisons_still_answers(spu_engine, oracle_for):
    sql = ("SELECT c.income, o.amount FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
           "WHERE c.income > o.amount * 3 AND c.income < 20000")
    assert str(spu_engine.execute(sql, "bank").table.schema.field(0).type) == "decimal128(12, 2)"
    oracle_for(spu_engine).check(sql)
    oracle_for(spu_engine).check("SELECT SUM(c.income + o.amount), AVG(c.income) FROM bank.customers c "
                                 "JOIN shop.orders o ON c.id = o.customer_id")


def test_spu_ungrouped_decimal_sum_is_exact(tmp_path, make_federation, grants_for, oracle_for):
    """A cross-party predicate on a column bank may only see aggregated: the whole query on the SPU."""
    from sqlsecure.engine import Engine

    grants = grants_for(("bank", ("shop.orders.customer_id",), "PLAINTEXT_AFTER_JOIN"),
                        ("bank", ("shop.orders.amount",), "PLAINTEXT_AFTER_COMPARE"),
                        ("shop", ("bank.customers.id",), "PLAINTEXT_AFTER_JOIN"),
                        ("shop", ("bank.customers.income",), "PLAINTEXT_AFTER_COMPARE"))
    sql = ("SELECT SUM(c.income), MIN(c.income), COUNT(*) FROM bank.customers c JOIN shop.orders o "
           "ON c.id = o.customer_id WHERE c.income > o.amount * 100")
    with Engine(make_federation(tmp_path, grants=grants), timeout=60) as eng:
        assert "SPU" in eng.explain(sql, "bank")
        exactly_equal(eng.execute(sql, "bank").table, oracle_for(eng).expected(sql, "bank"))


def test_he_sums_of_decimals_are_exact(tmp_path, make_federation, oracle_for):
    from sqlsecure.engine import Engine

    sql = ("SELECT o.category, SUM(c.income), COUNT(c.income) FROM bank.customers c JOIN shop.orders o "
           "ON c.id = o.customer_id GROUP BY o.category")
    with Engine(make_federation(tmp_path, group_sums="he"), timeout=60) as eng:
        assert "HE" in eng.explain(sql, "shop")
        result = eng.execute(sql, "shop")
        exactly_equal(result.table, oracle_for(eng).expected(sql, "shop"))
        assert any("min_group_size 4" in notice for notice in result.notices)  # HE drops small groups too


def test_decimal_values_beyond_the_ring_are_refused_by_their_owner():
    import decimal

    import pyarrow as pa

    from sqlsecure.errors import DataError
    from sqlsecure.executors.spu.values import encode, kind_of

    big = pa.chunked_array([pa.array([decimal.Decimal("1234567890123456.789")], pa.decimal128(38, 3))])
    kind = kind_of(big.type)
    assert kind == "decimal.3"
    with pytest.raises(DataError, match="'income'"):
        encode(big, kind, 16, name="income")
    six = pa.chunked_array([pa.array([decimal.Decimal("12345678901234.123456")], pa.decimal128(24, 6))])
    with pytest.raises(DataError, match="'rate'"):  # 10^6 ring units per unit: the limit shrinks by 2^16/10^6
        encode(six, kind_of(six.type), 16, name="rate")


def test_enclave_sums_of_decimals_are_exact(tmp_path, make_federation, plaintext_grants, oracle_for):
    from sqlsecure.engine import Engine
    from tests.test_enclave_queries import enclave_section

    sql = ("SELECT c.region, o.category, SUM(c.income), MIN(c.income), MAX(c.income), COUNT(*) "
           "FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id GROUP BY c.region, o.category")
    with Engine(make_federation(tmp_path, plaintext_grants() + enclave_section(tmp_path))) as eng:
        assert "TEEU" in eng.explain(sql, "bank")
        result = eng.execute(sql, "bank")
        exactly_equal(result.table, oracle_for(eng).expected(sql, "bank"))
        assert any("min_group_size 4" in notice for notice in result.notices)  # the enclave drops small groups
        oracle_for(eng).check(sql.replace("SUM(c.income)", "AVG(c.income)"))
