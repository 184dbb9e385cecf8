"""Exact outputs (issue 18): DECIMAL aggregates exact at the column's scale on every device, results of
DuckDB's types, DOUBLE results of the SPU rounded to the digits its fixed-point error supports."""

import pytest

from sqlsecure.engine import Engine

from tests.test_enclave_queries import enclave_section

AGGREGATES = "COUNT(*), COUNT({v}), SUM({v}), AVG({v}), MIN({v}), MAX({v})"
VALUES = {  # a value column of each type the parties hold, and where it lives
    "bank": ["c.income", "c.age"],  # DECIMAL(12, 2), INTEGER
    "shop": ["o.amount", "o.order_id", "o.customer_id"],  # DOUBLE, BIGINT, INTEGER
}
JOIN = "FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id"


def matrix(keys: str) -> list[str]:
    """One query per value column: every aggregate of it, grouped by `keys`."""
    return [f"SELECT {keys}, {AGGREGATES.format(v=v)} {JOIN} GROUP BY {keys}"
            for columns in VALUES.values() for v in columns]


@pytest.fixture(scope="module")
def devices(tmp_path_factory, make_federation, oracle_for, plaintext_grants):
    """An oracle per device: SPU and HE by `group_sums`, the enclave by an `[enclave]` section."""
    engines = {how: Engine(make_federation(tmp_path_factory.mktemp(how), group_sums=how)) for how in ("he", "spu")}
    directory = tmp_path_factory.mktemp("enclave")
    engines["enclave"] = Engine(make_federation(directory, plaintext_grants() + enclave_section(directory)))
    yield {how: oracle_for(engine) for how, engine in engines.items()}
    for engine in engines.values():
        engine.close()


def assert_duckdb_types(oracle, sql: str, issuer: str = "bank"):
    """The engine's answer equals DuckDB's, and so do its Arrow schema and DB-API description."""
    got = oracle.check(sql, issuer)
    want = oracle.expected(sql, issuer)
    assert [(f.name, f.type) for f in got.schema] == [(f.name, f.type) for f in want.schema], sql
    return got


@pytest.mark.parametrize("sql", matrix("c.region, o.category"))
@pytest.mark.parametrize("device", ["spu", "enclave"])
def test_types_of_cross_party_groups(devices, device, sql):
    assert_duckdb_types(devices[device], sql)
    assert ("TEEU(" if device == "enclave" else "SPU(") in devices[device].engine.explain(sql, "bank")


@pytest.mark.parametrize("keys, columns", [("o.category", VALUES["bank"]), ("c.region", VALUES["shop"])])
@pytest.mark.parametrize("device", ["spu", "he"])
def test_types_of_class_4(devices, device, keys, columns):
    for v in columns:
        sql = f"SELECT {keys}, COUNT({v}), SUM({v}), AVG({v}) {JOIN} GROUP BY {keys}"
        assert_duckdb_types(devices[device], sql)
        assert ("HEU(" if device == "he" else "SPU(") in devices[device].engine.explain(sql, "bank")
