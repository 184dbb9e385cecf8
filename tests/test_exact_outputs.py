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


# -- AVG of a DECIMAL: the exact sum over the count, rounded once ------------------------------------

def money_tables(seed: int = 7) -> dict:
    """Decimal amounts with NULLs, one-row groups and groups whose sums reach the SPU's AVG range
    (|sum| < 2^29): bank holds the payments (Parquet keeps their DECIMAL type), shop the people."""
    import decimal

    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    people = pa.table({"id": pa.array(np.arange(1, 41), pa.int64()),
                       "region": pa.array([f"r{i % 5}" for i in range(40)])})
    ids, kinds, amounts = [], [], []
    for i in range(160):
        ids.append(int(rng.integers(1, 41)))
        kinds.append(["small", "large", "negative"][i % 3])
        scale = {"small": 10 ** 4, "large": 5 * 10 ** 11, "negative": -10 ** 10}[kinds[-1]]
        amounts.append(None if i % 11 == 0 else decimal.Decimal(int(rng.integers(1, scale) if scale > 0 else
                                                                    rng.integers(scale, 10 ** 9))).scaleb(-4))
    ids += [41, 42]  # one-row groups: people of their own region
    kinds += ["single", "single"]
    amounts += [decimal.Decimal("0.0001"), decimal.Decimal("-33333333.3333")]
    people = pa.concat_tables([people, pa.table({"id": pa.array([41, 42], pa.int64()),
                                                 "region": pa.array(["alone1", "alone2"])})])
    payments = pa.table({"id": pa.array(ids, pa.int64()), "kind": pa.array(kinds),
                         "amount": pa.array(amounts, pa.decimal128(18, 4))})
    return {"bank": {"payments": payments}, "shop": {"people": people}}


@pytest.fixture(scope="module")
def money(tmp_path_factory, federation_writer, plaintext_grants, oracle_for):
    directory = tmp_path_factory.mktemp("money")
    path = federation_writer(directory, money_tables(), plaintext_grants(("bank", "shop")), parties=("bank", "shop"),
                             min_group_size=1, group_sums="spu")
    with Engine(path) as engine:
        yield oracle_for(engine)


def exact_averages(oracle, sql: str) -> list:
    """Each row of `sql` with its AVG(p.amount) replaced by the exact sum over the count, rounded once to a DOUBLE."""
    from fractions import Fraction

    exact = sql.replace("AVG(p.amount)", "SUM(p.amount), COUNT(p.amount)")
    rows = []
    for row in oracle.con.sql(exact).fetchall():
        total, count = row[-2], row[-1]
        rows.append((*row[:-2], float(Fraction(total) / count) if count else None))
    return rows


def ulps(a: float, b: float) -> float:
    import math

    return abs(a - b) / math.ulp(max(abs(a), abs(b)))


@pytest.mark.parametrize("sql", [
    "SELECT c.id, p.kind, AVG(p.amount) FROM shop.people c JOIN bank.payments p ON c.id = p.id GROUP BY c.id, p.kind",
    "SELECT c.region, p.kind, AVG(p.amount) FROM shop.people c JOIN bank.payments p ON c.id = p.id "
    "GROUP BY c.region, p.kind",
    "SELECT c.region, AVG(p.amount) FROM shop.people c JOIN bank.payments p ON c.id = p.id GROUP BY c.region",
])
def test_spu_avg_of_a_decimal_is_the_exact_quotient(money, sql):
    """Every group's AVG is the nearest DOUBLE to its exact sum over its count (NULLs not counted,
    one-row groups, sums near 2^29, negative ones); DuckDB rounds the sum to a DOUBLE first, so its
    AVG is within one unit in the last place of it."""
    assert "SPU(" in money.engine.explain(sql, "bank")
    got = sorted(money.engine.execute(sql, "bank").table.to_pylist(), key=lambda r: tuple(map(str, r.values())))
    want = sorted(exact_averages(money, sql), key=lambda r: tuple(map(str, r)))
    assert [tuple(r.values()) for r in got] == want
    duckdb_rows = sorted(money.expected(sql, "bank").to_pylist(), key=lambda r: tuple(map(str, r.values())))
    assert all(ulps(g[-1], d[-1]) <= 1 for g, d in ((tuple(a.values()), tuple(b.values()))
                                                     for a, b in zip(got, duckdb_rows)) if g[-1] is not None)
    assert any(abs(r[-1]) > 1e7 for r in want if r[-1] is not None)  # sums near the range's edge were averaged


def test_spu_exact_avg_ungrouped_ordered_and_in_expressions(money):
    """Ungrouped; ORDER BY the AVG with a LIMIT; AVG inside arithmetic and HAVING (fixed point there)."""
    sql = "SELECT AVG(p.amount) FROM shop.people c JOIN bank.payments p ON c.id = p.id WHERE p.kind = 'single'"
    assert money.engine.execute(sql, "bank").table.column(0).to_pylist() == [r[-1] for r in exact_averages(money, sql)]
    top = ("SELECT c.region, p.kind, AVG(p.amount) FROM shop.people c JOIN bank.payments p ON c.id = p.id "
           "GROUP BY c.region, p.kind ORDER BY AVG(p.amount) DESC LIMIT 3")
    got = money.engine.execute(top, "bank").table
    want = sorted(exact_averages(money, top.split(" ORDER BY")[0]), key=lambda r: -r[-1])[:3]
    assert [tuple(r.values()) for r in got.to_pylist()] == want
    money.check("SELECT c.region, AVG(p.amount) * 2 AS twice FROM shop.people c JOIN bank.payments p ON c.id = p.id "
                "GROUP BY c.region HAVING AVG(p.amount) > 0")


# -- DOUBLE results of the SPU: the digits its fixed-point error supports ---------------------------

@pytest.mark.parametrize("sql", [
    "SELECT c.region, o.category, SUM(o.amount) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "GROUP BY c.region, o.category",
    "SELECT SUM(o.amount + 1.5), MAX(o.amount), SUM(o.amount) FROM bank.customers c "
    "JOIN shop.orders o ON c.id = o.customer_id WHERE o.amount > c.age",
])
def test_spu_sums_of_double_money_are_duckdbs_rounded_to_the_documented_digits(devices, sql):
    """Money (two decimals) read as DOUBLE: SUM over n rows errs by at most n * 2^-17, so the SPU
    reveals the decimals that bound supports (docs/architecture.md), which equal DuckDB's rounded."""
    from sqlsecure.executors.spu.values import supported_decimals

    oracle = devices["spu"]
    assert "SPU(" in oracle.engine.explain(sql, "bank")
    got = oracle.engine.execute(sql, "bank").table
    want = oracle.expected(sql, "bank")
    ((rows,),) = oracle.con.sql("SELECT COUNT(*) FROM bank.customers c JOIN shop.orders o "
                                "ON c.id = o.customer_id").fetchall()  # the SPU stage's rows
    decimals = supported_decimals(rows * 2.0 ** -17)  # SUM's bound; MAX's supports more
    assert decimals == 2
    key = lambda r: tuple(map(str, r[:2]))  # noqa: E731
    got_rows = sorted((tuple(r.values()) for r in got.to_pylist()), key=key)
    want_rows = sorted((tuple(r.values()) for r in want.to_pylist()), key=key)
    assert [tuple(v if not isinstance(v, float) else round(v, decimals) for v in r) for r in got_rows] == \
        [tuple(v if not isinstance(v, float) else round(v, decimals) for v in r) for r in want_rows]
    assert got_rows == [tuple(v if not isinstance(v, float) else round(v, decimals) for v in r) for r in got_rows]


@pytest.mark.parametrize("sql, bound", [
    ("SUM(t.x)", 100 * 2.0 ** -17), ("AVG(t.x)", 2.0 ** -17 + 2.0 ** -15), ("MIN(t.x) - MAX(t.y)", 2.0 ** -16),
    ("SUM(t.x * 2) + 1", 100 * (2 * 2.0 ** -17 + 2.0 ** -16)), ("COUNT(*)", 0.0),
    ("SUM(t.x * t.y)", None), ("AVG(t.x) / 3", None), ("'text'", None),
])
def test_error_bounds_of_fixed_point_results(sql, bound):
    from sqlglot import parse_one

    from sqlsecure.executors.spu.stage import error_bound

    assert error_bound(parse_one(sql, read="duckdb"), 100, 16) == bound


@pytest.mark.parametrize("nparties", [2, 3])
def test_long_divide_gives_the_nearest_double(nparties):
    """The protocol against its plaintext reference (Fraction -> float, correctly rounded): signs, zero,
    one-row quotients, the largest sums and divisors the precision is set for."""
    from fractions import Fraction

    import numpy as np

    from sqlsecure.executors.spu import arith
    from sqlsecure.executors.spu.exact_division import decode_quotient, fraction_bits, long_divide
    from sqlsecure.executors.spu.local import run_spu
    from sqlsecure.executors.spu.shares import as_ring, to_signed

    largest = 500 * 10 ** 4
    sums = np.array([0, 1, -1, 12345, -2 ** 61 // 3, 2 ** 61 // 3, 7, -19070000, 33333333, 10 ** 15], dtype=np.int64)
    divisors = np.array([10 ** 4, 3 * 10 ** 4, 7 * 10 ** 4, 10 ** 4, largest, largest, largest, 7 * 10 ** 4,
                         3 * 10 ** 4, 499 * 10 ** 4], dtype=np.int64)
    bits = fraction_bits(largest)

    def program(s):
        mine = lambda v, owner: arith.share_input(s, owner, as_ring(v) if s.index == owner else None, v.shape)  # noqa: E731
        return arith.reveal_many(s, long_divide(s, mine(sums, 0), mine(divisors, nparties - 1), 47, bits))

    negative, high, low = (to_signed(x) for x in run_spu(nparties, program).results[0])
    got = [decode_quotient(int(n), int(h), int(lo), bits) for n, h, lo in zip(negative, high, low)]
    assert got == [float(Fraction(int(a), int(b))) for a, b in zip(sums, divisors)]
