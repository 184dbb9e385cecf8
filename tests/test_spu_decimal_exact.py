"""DECIMAL arithmetic on shares is exact as DuckDB types it (issue 16, Secrecy's Q6): a product of two
DECIMALs is DECIMAL(p1 + p2, s1 + s2), sums and differences of several scales are exact at the larger,
SUM / AVG / comparisons of them agree with plain DuckDB to the last digit, in the spine's SPU stage and
in the translation's secret programs, over 2 and 3 parties. Values beyond the exact range are refused
with a DataError before anything is shared."""

import decimal

import numpy as np
import pyarrow as pa
import pytest
import sqlglot

from sqlsecure.engine import Engine
from sqlsecure.errors import DataError
from sqlsecure.planner.views import expand_views

PARTIES = ("p1", "p2", "p3")
PRICE, RATE = pa.decimal128(15, 2), pa.decimal128(15, 2)


def cents(rng, n: int, low: int, high: int) -> list:
    """n DECIMAL values with two decimals (cents), NULL every 13th, drawn in [low, high) cents."""
    return [None if i % 13 == 0 else decimal.Decimal(int(v)).scaleb(-2)
            for i, v in enumerate(rng.integers(low, high, n))]


def items(seed: int, n: int) -> pa.Table:
    """Line items whose products have four decimals: fixed point (2^-16) is off in the cents of a sum."""
    rng = np.random.default_rng(seed)
    return pa.table({"id": pa.array(np.arange(n) + seed * 10_000, pa.int64()),
                     "price": pa.array(cents(rng, n, 90_000, 10_500_000), PRICE),
                     "rate": pa.array(cents(rng, n, 0, 11), RATE),
                     "fee": pa.array([None if v is None else v.scaleb(-1) for v in cents(rng, n, -5_000, 5_000)],
                                     pa.decimal128(12, 3)),
                     "qty": pa.array(rng.integers(1, 50, n), pa.int32()),
                     "micro": pa.array([decimal.Decimal(int(v)).scaleb(-6) for v in rng.integers(-5 * 10 ** 8, 5 * 10 ** 8, n)],
                                       pa.decimal128(18, 6)),
                     "note": pa.array([f"a comment longer than the SPU's 28 bytes, row {i}" for i in range(n)]),
                     "huge": pa.array(rng.uniform(1e200, 1e300, n))})  # beyond fixed point: never to be shared


def federation(directory, federation_writer, grants, parties, n: int = 300):
    """`parties` each holding `items` (ids shared, so they join), a view `allitems` of their UNION ALL."""
    tables = {p: {"items": items(i + 1, n).set_column(0, "id", pa.array(np.arange(n), pa.int64()))}
              for i, p in enumerate(parties)}
    union = " UNION ALL ".join(f"SELECT id, price, rate, fee, qty, micro, note, huge FROM {p}.items" for p in parties)
    return federation_writer(directory, tables, f'[views]\nallitems = "{union}"\n\n' + grants, parties=parties)


@pytest.fixture(scope="module", params=[2, 3], ids=["2 parties", "3 parties"])
def oracle(request, tmp_path_factory, federation_writer, plaintext_grants, oracle_for):
    parties = PARTIES[:request.param]
    engine = Engine(federation(tmp_path_factory.mktemp("decimal"), federation_writer, plaintext_grants(parties),
                               parties))
    yield oracle_for(engine)
    engine.close()


def exactly(oracle, sql: str, issuer: str = "p1"):
    """The engine's answer is DuckDB's, value for value and type for type (no tolerance)."""
    assert "SPU" in oracle.engine.explain(sql, issuer), sql
    got = oracle.engine.execute(sql, issuer).table
    want = oracle.expected(expand_views(sqlglot.parse_one(sql, read="duckdb"), oracle.engine.config.views).sql("duckdb"),
                           issuer)
    assert got.schema.types == want.schema.types, (sql, got.schema, want.schema)
    key = lambda row: tuple((v is None, str(v)) for v in row)  # noqa: E731
    assert sorted(map(tuple, (r.values() for r in got.to_pylist())), key=key) == \
        sorted(map(tuple, (r.values() for r in want.to_pylist())), key=key), sql
    return got


UNION_QUERIES = [  # the SPU stage over a view of every party's rows
    "SELECT SUM(price * rate) AS revenue FROM allitems WHERE rate BETWEEN 0.05 AND 0.07 AND qty < 24",
    "SELECT SUM(price * (1 - rate)) AS s, SUM(rate * (1 + fee)) AS t FROM allitems",
    "SELECT SUM(price + fee) AS a, SUM(fee - price) AS b, SUM(price * qty) AS c, SUM(-price * 3) AS d FROM allitems",
    "SELECT AVG(price * rate) AS a, MIN(price * rate) AS lo, MAX(price - fee) AS hi FROM allitems",
    "SELECT COUNT(*) AS n FROM allitems WHERE price * rate > 1000.5 AND price + fee <> 5000.125",
    "SELECT SUM(micro * rate) AS a, SUM(micro - fee) AS b, COUNT(*) AS n FROM allitems WHERE micro > 0.0000015",
    "SELECT SUM(CASE WHEN qty < 10 THEN price * (1 - rate) ELSE 0 END) AS promo, SUM(COALESCE(fee, 0.5)) AS f, "
    "MAX(CASE WHEN rate > 0.05 THEN fee ELSE rate END) AS m, SUM(ABS(fee - 1)) AS a FROM allitems",
]
PROGRAM_QUERIES = [  # the translation's secret programs (an aggregate of an aggregate)
    "SELECT COUNT(*) AS n, SUM(t.s) AS total FROM (SELECT qty, SUM(fee * rate) AS s FROM allitems "
    "WHERE rate BETWEEN 0.05 AND 0.07 GROUP BY qty) t WHERE t.s > -1.5",
    "SELECT MAX(t.s) AS m, MIN(t.d) AS d FROM (SELECT qty, SUM(price - fee * 2) AS s, MIN(-fee + 0.0005) AS d "
    "FROM allitems GROUP BY qty) t",
    "SELECT t.c, COUNT(*) AS n FROM (SELECT qty, COUNT(*) AS c FROM allitems GROUP BY qty) t GROUP BY t.c",
    "SELECT SUM(t.s) AS s, MIN(t.c) AS c FROM (SELECT qty, SUM(CASE WHEN qty < 10 THEN fee * rate ELSE 0 END) AS s, "
    "MAX(COALESCE(fee, rate)) AS c FROM allitems GROUP BY qty) t",
    "SELECT MAX(t.a) AS a FROM (SELECT qty, SUM(ABS(fee) * rate) AS a FROM allitems GROUP BY qty) t",
]
JOIN_QUERIES = [  # the spine's SPU stage (a join across two parties)
    "SELECT SUM(a.price * b.rate) AS revenue FROM p1.items a JOIN p2.items b ON a.id = b.id "
    "WHERE b.rate BETWEEN 0.05 AND 0.07 AND b.qty < 24",
    "SELECT SUM(a.price * (1 - b.rate)) AS s, SUM(a.fee + b.price) AS t, AVG(a.price * b.rate) AS m "
    "FROM p1.items a JOIN p2.items b ON a.id = b.id",
    "SELECT COUNT(*) AS n FROM p1.items a JOIN p2.items b ON a.id = b.id WHERE a.price * b.rate >= b.price * a.rate",
    "SELECT SUM(CASE WHEN b.qty > 20 THEN a.price * (1 - b.rate) ELSE 0 END) AS promo, "
    "SUM(COALESCE(a.fee, b.rate)) AS f FROM p1.items a JOIN p2.items b ON a.id = b.id",
]


@pytest.mark.parametrize("sql", UNION_QUERIES)
def test_union_stage_is_exact(oracle, sql):
    exactly(oracle, sql)


@pytest.mark.parametrize("sql", PROGRAM_QUERIES)
def test_secret_programs_are_exact(oracle, sql):
    assert "secret program" in oracle.engine.explain(sql, "p1")
    exactly(oracle, sql)


@pytest.mark.parametrize("sql", JOIN_QUERIES)
def test_join_stage_is_exact(oracle, sql):
    exactly(oracle, sql)


@pytest.mark.parametrize("sql", [
    "SELECT SUM(micro * micro) AS s FROM allitems",  # scale 12: x * 10^12 wraps the ring
    "SELECT SUM(a.micro * b.micro) AS s FROM p1.items a JOIN p2.items b ON a.id = b.id",
])
def test_exact_range_beyond_the_ring_is_refused(oracle, sql):
    with pytest.raises(DataError, match="micro"):
        oracle.engine.execute(sql, "p1")


# -- program inputs carry only the columns the program reads (issue 16, `check` agreeing with execution) --

@pytest.mark.parametrize("sql", [
    "SELECT COUNT(*) AS n, SUM(qty) AS q FROM allitems WHERE rate > 0.05",
    "SELECT t.qty, COUNT(*) AS n FROM (SELECT * FROM p1.items UNION ALL SELECT * FROM p2.items) t GROUP BY t.qty",
    "SELECT COUNT(*) AS n FROM (SELECT * FROM p1.items UNION ALL SELECT * FROM p2.items) t",
])
def test_unread_columns_are_not_shared(oracle, sql):
    """`note` (text longer than the SPU takes) and `huge` (beyond fixed point) are in every row of the
    view and of `SELECT *`, but no operator reads them: they are not shared, so they refuse nothing."""
    exactly(oracle, sql)


def test_read_columns_still_refuse(oracle):
    """A number beyond fixed point that the query does read is still refused by its owner, before sharing
    (the long text would now be shared at its width class: text up to 1024 bytes is supported)."""
    with pytest.raises(DataError, match="huge"):
        oracle.engine.execute("SELECT MAX(huge) AS m FROM allitems", "p1")


def test_union_of_decimal_scales_is_exact(tmp_path, federation_writer, plaintext_grants, oracle_for):
    """A UNION ALL of DECIMAL(15, 2), DECIMAL(12, 3) and INTEGER columns is DECIMAL at scale 3 in DuckDB:
    0.0011 + 0.001 must not become one fixed-point value."""
    rng = np.random.default_rng(5)
    parts = {"p1": pa.decimal128(15, 2), "p2": pa.decimal128(12, 3), "p3": pa.int32()}
    tables = {p: {"items": pa.table({"v": pa.array(
        [decimal.Decimal(int(x)).scaleb(-(t.scale if pa.types.is_decimal(t) else 0)) for x in rng.integers(-9999, 9999, 60)]
        if pa.types.is_decimal(t) else rng.integers(-99, 99, 60), t)})} for p, t in parts.items()}
    union = " UNION ALL ".join(f"SELECT v FROM {p}.items" for p in parts)
    engine = Engine(federation_writer(tmp_path, tables, f'[views]\nallv = "{union}"\n\n' + plaintext_grants(tuple(parts)),
                                      parties=tuple(parts)))
    try:
        exactly(oracle_for(engine), "SELECT SUM(v) AS s, MIN(v) AS lo, COUNT(*) AS n FROM allv WHERE v > 0.005")
    finally:
        engine.close()


@pytest.fixture(scope="module")
def big_prices(tmp_path_factory, federation_writer, plaintext_grants, oracle_for):
    """Two parties' line items with prices up to 5e7: beyond the square root of a SUM's range over their rows."""
    tables = {}
    for i, party in enumerate(PARTIES[:2]):
        rng = np.random.default_rng(40 + i)
        tables[party] = {"items": pa.table({"price": pa.array(cents(rng, 400, 10 ** 8, 5 * 10 ** 9), PRICE),
                                            "rate": pa.array(cents(rng, 400, 0, 11), RATE),
                                            "qty": pa.array(rng.integers(1, 50, 400), pa.int32())})}
    union = " UNION ALL ".join(f"SELECT price, rate, qty FROM {p}.items" for p in PARTIES[:2])
    directory = tmp_path_factory.mktemp("big")
    engine = Engine(federation_writer(directory, tables, f'[views]\nlineitem = "{union}"\n\n' +
                                      plaintext_grants(PARTIES[:2]), parties=PARTIES[:2]))
    yield oracle_for(engine)
    engine.close()


def test_a_filter_bounds_the_factor_it_keeps(big_prices):
    """Secrecy's Q6 at 10^5 rows: `discount BETWEEN 0.05 AND 0.07` bounds the other factor's room in
    SUM(price * discount) by 0.07 on every counted row (a dropped row adds 0 whatever its product), so
    prices beyond the square root of the SUM's range are answered, exactly."""
    exactly(big_prices, "SELECT SUM(price * rate) AS revenue FROM lineitem WHERE rate BETWEEN 0.05 AND 0.07 "
                        "AND qty < 24")


def test_a_factor_bounded_by_its_published_class_is_answered_exactly(big_prices):
    """No WHERE bounds price from above, but its owner's published magnitude class does: the product's
    range splits by the operands' classes, not a square root each, and the SUM is exact."""
    exactly(big_prices, "SELECT SUM(price * rate) AS revenue FROM lineitem WHERE rate > 0.05")
