"""Round 11's review leftovers (issue 16, deny by default): what the SPU opens when an AVG sum is out of range,
the parties an enclave program reads through HAVING, a HUGEINT sum at its owner, and plan-time typing done once."""

import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import DataError
from tests.test_enclave_queries import enclave_section

AVG_JOIN = "FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id"


def big_sums(n: int = 24) -> dict:
    """Every order worth 3·10^8: any group's AVG sum is beyond the SPU division's 2^29."""
    return {"bank": {"customers": pa.table({"id": pa.array(range(n), pa.int64()),
                                            "region": pa.array(["north", "south"] * (n // 2))})},
            "shop": {"orders": pa.table({"customer_id": pa.array(range(n), pa.int64()),
                                         "big": pa.array([300_000_000] * n, pa.int64())})}}


def test_an_avg_out_of_range_opens_one_bit_and_names_only_the_aggregate(tmp_path, federation_writer, grants_for,
                                                                        monkeypatch):
    """Both groups' sums are out of range; the issuer learns only that one is (not how many: a count would
    include groups below the threshold), and the message holds no number of sums."""
    from sqlsecure.executors.spu.session import SpuSession
    grants = grants_for(("bank", ("shop.orders.big",), "PLAINTEXT_AFTER_AGGREGATE"),
                        ("bank", ("shop.orders.customer_id",), "PLAINTEXT_AFTER_JOIN"),
                        ("shop", ("bank.customers.id",), "PLAINTEXT_AFTER_JOIN"))
    federation_writer(tmp_path, big_sums(), grants, parties=("bank", "shop"), group_sums="spu")
    opened, original = [], SpuSession.open_many

    def spy(self, *args, **kwargs):
        values = original(self, *args, **kwargs)
        opened.append(values)
        return values

    monkeypatch.setattr(SpuSession, "open_many", spy)
    with Engine(tmp_path / "federation.toml") as engine:
        with pytest.raises(DataError, match=r"^a sum of AVG\(\"o.big\"\) exceeds the range") as error:
            engine.execute(f"SELECT c.region, AVG(o.big) AS a {AVG_JOIN} GROUP BY c.region", "bank")
    assert "2" not in str(error.value).split("exceeds")[0]
    assert [int(v) for v in opened[-1][0]] == [1]  # the last opening: one bit, set


# -- a party read only in HAVING sends its columns to the enclave ---------------------------------------------

def test_a_party_read_only_in_having_is_part_of_the_enclave_program(tmp_path, federation_writer, grants_for,
                                                                     tables, oracle_for):
    """The insurer's premium is read by HAVING alone; the SPU refuses ILIKE, so the enclave runs the stage: the
    insurer's rows must reach it (the shop's were left out before: a KeyError at the shop)."""
    grants = grants_for(
        ("bank", ("shop.orders.amount", "shop.orders.category", "insurer.policies.premium"),
         "PLAINTEXT_AFTER_AGGREGATE"),
        ("bank", ("shop.orders.customer_id", "insurer.policies.customer_id"), "PLAINTEXT_AFTER_JOIN"),
        ("shop", ("bank.customers.id", "insurer.policies.customer_id"), "PLAINTEXT_AFTER_JOIN"),
        ("insurer", ("bank.customers.id", "shop.orders.customer_id"), "PLAINTEXT_AFTER_JOIN"))
    federation_writer(tmp_path, tables, grants + enclave_section(tmp_path), min_group_size=0)
    sql = ("SELECT c.region, COUNT(*) AS n FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
           "JOIN insurer.policies p ON c.id = p.customer_id GROUP BY c.region "
           "HAVING MIN(o.category ILIKE 'B%') OR MAX(p.premium) > 500")
    with Engine(tmp_path / "federation.toml") as engine:
        assert engine.check(sql, "bank") is None
        assert "kept by bank, shop, insurer" in engine.explain(sql, "bank")
        oracle_for(engine).check(sql, "bank")


# -- an integer SUM beyond BIGINT at its owner: fixed words, before anything is shared -------------------------

HUGE_SUMS = ("SELECT u.region, COUNT(*) AS n, SUM(u.v) AS v FROM (SELECT c.region, t.v FROM (SELECT o.customer_id, "
             "SUM(o.order_id) AS v FROM shop.orders o GROUP BY o.customer_id) t JOIN bank.customers c "
             "ON c.id = t.customer_id) u GROUP BY u.region")


def test_an_integer_sum_beyond_bigint_fails_at_its_owner_naming_the_aggregate(tmp_path, tables, federation_writer,
                                                                              grants_for):
    """Order ids near 2^62: a customer's sum is past BIGINT at the shop, which pads it for the SPU. A DataError
    naming the aggregate, no value (DuckDB's conversion error quoted it, and named an internal column)."""
    from tests.test_padded_aggregates import padded_grants, padded_tables
    data = padded_tables(tables)
    orders = data["shop"]["orders"]
    data["shop"]["orders"] = orders.set_column(0, "order_id", pa.array([(1 << 62) + i for i in range(orders.num_rows)],
                                                                        pa.int64()))
    federation_writer(tmp_path, data, padded_grants(grants_for, ("bank", "shop")), parties=("bank", "shop"))
    with Engine(tmp_path / "federation.toml") as engine:
        assert engine.check(HUGE_SUMS, "shop") is None
        with pytest.raises(DataError, match=r"the integer sum SUM\(\"o.order_id\"\) is beyond BIGINT") as error:
            engine.execute(HUGE_SUMS, "shop")
    assert not any(ch.isdigit() for ch in str(error.value).replace("SPU", ""))


@pytest.mark.parametrize("value, fails", [((1 << 62), True), (-(1 << 62), True), (1000, False), (None, False)])
def test_as_bigints_fails_with_fixed_words_only_beyond_bigint(value, fails):
    import duckdb
    from sqlsecure.planner.translate import BEYOND_BIGINT, as_bigints
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT CAST(? AS BIGINT) AS x FROM range(3)", [value])
    sql = as_bigints('SELECT SUM(x) AS "s" FROM t', {"s": "HUGEINT"})
    if not fails:
        assert con.execute(sql).fetchall() == [(None if value is None else 3 * value,)]
        return
    with pytest.raises(duckdb.Error) as error:
        con.execute(sql)
    assert f"{BEYOND_BIGINT}SUM(x)" in str(error.value) and str(3 * value) not in str(error.value)


# -- plan-time typing once --------------------------------------------------------------------------------------

def test_column_control_uses_the_types_the_loaded_query_has(engine, monkeypatch):
    """`pushdown_typing.type_query` typed the query; column control does not annotate it again (it did, a copy
    of the whole tree per plan). Its refusals by type (tests/test_attacks_s10.py's narrowing CASTs) stand."""
    from sqlsecure.planner import ccl
    calls = []
    monkeypatch.setattr(ccl, "annotated", lambda *a, **k: calls.append(a) or a[0])
    sql = f"SELECT c.region, SUM(CAST(o.amount AS INTEGER)) AS s {AVG_JOIN} GROUP BY c.region"
    engine.plan(sql, "bank")
    assert calls == []


# -- HE counts values of any type: check = execution ----------------------------------------------------------

def test_he_counts_values_of_any_type(tmp_path, federation_writer, grants_for, tables, oracle_for):
    """COUNT of a date the shop computes, summed under HE: only whether each value is NULL crosses (a 1 or NULL),
    so the date's type does not matter. `check` passed it and execution failed ("HE sums need numeric values")."""
    grants = grants_for(("bank", ("shop.orders.order_id",), "PLAINTEXT_AFTER_COMPARE"),
                        ("bank", ("shop.orders.customer_id",), "PLAINTEXT_AFTER_JOIN"),
                        ("shop", ("bank.customers.id",), "PLAINTEXT_AFTER_JOIN"))
    federation_writer(tmp_path, tables, grants, parties=("bank", "shop"), group_sums="he", min_group_size=0)
    sql = (f"SELECT c.region, COUNT(DATE '2020-01-01' + CAST(NULLIF(o.order_id % 3, 0) AS INTEGER)) AS n, "
           f"COUNT(*) AS m {AVG_JOIN} GROUP BY c.region")
    with Engine(tmp_path / "federation.toml") as engine:
        assert engine.check(sql, "bank") is None
        assert "HE" in engine.explain(sql, "bank")
        oracle_for(engine).check(sql, "bank")
