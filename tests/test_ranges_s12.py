"""Ranges proven where they hold (issue 17, session 12): counts' magnitudes from the row bound, a SUM of
encoded products compared with its proven error, DOUBLE results within their stated bound.

1. ROW_NUMBER, RANK, DENSE_RANK and COUNT (aggregate or window) are at most the rows their SELECT reads,
   which the published sizes bound (`planner/row_counts.py`): `r2.rn = r1.rn + 1` (Secrecy's recurrent
   C. diff), `rk * 2 + dr - c`, `n + 1` over a CTE's COUNT cannot overflow BIGINT, so column control no longer
   asks for their rows' visibility; a product beyond BIGINT stays refused; a division by a group's COUNT(*)
   or a row number never fails. Each against plain DuckDB over the hospitals' horizontally split tables
   (NULL pids and times, ties), `check` agreeing with execution."""

import contextlib
import math

import pytest
import sqlglot
from sqlglot import exp

from sqlsecure.engine import Engine
from sqlsecure.errors import DataError, PolicyViolation
from sqlsecure.planner.row_counts import class_of_rows, counted_rows, never_zero, query_rows
from tests.test_translate import hospital_federation, union_of  # noqa: F401 (a fixture)

D3 = union_of("diagnosis", "pid, diag, time")
NUMBERED = (f"WITH d AS ({D3}), r AS (SELECT pid, time, ROW_NUMBER() OVER (PARTITION BY pid ORDER BY time) AS rn, "
            "RANK() OVER (PARTITION BY pid ORDER BY time) AS rk, DENSE_RANK() OVER (PARTITION BY pid ORDER BY time) "
            "AS dr, COUNT(*) OVER (PARTITION BY pid) AS c FROM d) ")
# Times only aggregated, pids only compared: a row number's overflow was asked of the times' rows before.
AGGREGATED = {"PLAINTEXT_AFTER_AGGREGATE": ("diagnosis.time", "diagnosis.pid"),
              "PLAINTEXT_AFTER_COMPARE": ("diagnosis.diag",)}
COMPARED_PIDS = {"PLAINTEXT_AFTER_AGGREGATE": ("diagnosis.time",),
                 "PLAINTEXT_AFTER_COMPARE": ("diagnosis.pid", "diagnosis.diag")}


@pytest.fixture(scope="module")
def hospitals(hospital_federation, oracle_for):
    """{"aggregated": oracle, "compared": oracle}: 3 hospitals of 16 rows per table."""
    with contextlib.ExitStack() as stack:
        yield {name: oracle_for(stack.enter_context(Engine(hospital_federation(grants, n=16), timeout=120)))
               for name, grants in (("aggregated", AGGREGATED), ("compared", COMPARED_PIDS))}


COUNTED = {  # name: (query, engine), each refused by the overflow rule before
    "recurrent C. diff's neighbours by row number": (
        NUMBERED + "SELECT COUNT(*) AS n FROM r r1 JOIN r r2 ON r1.pid = r2.pid WHERE r2.rn = r1.rn + 1", "compared"),
    "the previous row, written the other way round": (
        NUMBERED + "SELECT COUNT(*) AS n FROM r r1 JOIN r r2 ON r1.pid = r2.pid WHERE r1.rn - 1 = r2.rn", "compared"),
    "ranks, dense ranks and window counts in arithmetic": (
        NUMBERED + "SELECT SUM(rk * 2 + dr - c) AS n, SUM(rn * rn) AS m, MAX(c + 1) AS top FROM r", "aggregated"),
    "a CTE's COUNT plus one": (
        f"WITH g AS (SELECT pid, COUNT(*) AS n FROM ({D3}) d GROUP BY pid) SELECT SUM(n + 1) AS m, SUM(n * n) AS q FROM g",
        "aggregated"),
    "a subquery's COUNT through two levels": (
        f"SELECT SUM(k * 3) AS m FROM (SELECT n + 1 AS k FROM (SELECT pid, COUNT(time) AS n FROM ({D3}) d "
        "GROUP BY pid) g) h", "aggregated"),
    "a division by a window's count and by a row number": (
        NUMBERED + "SELECT SUM(time / c) AS per_row, SUM(time / rn) AS by_number FROM r", "aggregated"),
}


@pytest.mark.parametrize("name", COUNTED)
def test_arithmetic_on_counts_matches_duckdb(hospitals, name):
    sql, engine = COUNTED[name]
    oracle = hospitals[engine]
    assert oracle.engine.check(sql, "h1") is None
    oracle.check(sql, "h1")


def test_a_product_of_counts_beyond_bigint_stays_refused(hospitals, assert_refused):
    """48 rows (3 x 16, published as 16 each): a row number below 2^6, its 11th power not below 2^63."""
    eleven = " * ".join(["rn"] * 11)
    refused = assert_refused(hospitals["aggregated"].engine, NUMBERED + f"SELECT SUM({eleven}) AS n FROM r", "h1",
                             PolicyViolation, "whether a row fails")
    assert "BIGINT" in str(refused)
    seven = " * ".join(["rn"] * 7)  # below 2^42: proven
    sql = NUMBERED + f"SELECT SUM({seven}) AS n FROM r"
    assert hospitals["aggregated"].engine.check(sql, "h1") is None


def test_a_count_that_may_be_zero_still_guards_its_division(hospitals, assert_refused):
    """COUNT(x) of a group may be 0 (x NULL on all its rows): whether a row divides by it stays compared."""
    sql = f"WITH g AS (SELECT pid, COUNT(time) AS n, SUM(time) AS s FROM ({D3}) d GROUP BY pid) SELECT SUM(s // n) AS q FROM g"
    assert_refused(hospitals["aggregated"].engine, sql, "h1", PolicyViolation, "whether a row fails")


def _sizes(party):
    return {"t": 16, "u": 8}


def _select(sql: str) -> exp.Expression:
    return sqlglot.parse_one(sql, read="duckdb")


@pytest.mark.parametrize("sql, rows", [
    ("SELECT * FROM p.t", 16), ("SELECT * FROM p.t JOIN p.u ON t.a = u.a", 17 * 9),
    ("SELECT * FROM p.t UNION ALL SELECT * FROM p.u", 24), ("SELECT COUNT(*) FROM p.t WHERE false", 16),
    ("SELECT a FROM p.t GROUP BY a", 16), ("SELECT * FROM p.t LIMIT 3", 3), ("SELECT 1", 1),
    ("WITH c AS (SELECT * FROM p.u) SELECT * FROM c, c AS d", 81), ("SELECT * FROM p.missing", math.inf),
    ("SELECT * FROM range(10)", math.inf), ("WITH RECURSIVE c AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM c) "
                                            "SELECT * FROM c", math.inf),
])
def test_the_rows_of_a_query_are_bounded_by_the_published_sizes(sql, rows):
    assert query_rows(_select(sql), _sizes) == rows


def test_a_count_is_in_the_class_of_its_selects_input_rows():
    count = _select("SELECT COUNT(*) FROM p.t JOIN p.u ON t.a = u.a").find(exp.Count)
    assert counted_rows(count, _sizes) == 153 and class_of_rows(153) == 8  # 153 < 2^8
    assert class_of_rows(16) == 5 and class_of_rows(0) == 0 and class_of_rows(math.inf) is None


@pytest.mark.parametrize("sql, never", [
    ("SELECT a, SUM(x) / COUNT(*) FROM t GROUP BY a", True), ("SELECT SUM(x) / COUNT(*) FROM t", False),
    ("SELECT a, SUM(x) / COUNT(*) FROM t GROUP BY ROLLUP (a)", False), ("SELECT a, SUM(x) / COUNT(x) FROM t GROUP BY a", False),
    ("SELECT x / ROW_NUMBER() OVER (ORDER BY a) FROM t", True), ("SELECT x / RANK() OVER (ORDER BY a) FROM t", True),
    ("SELECT x / COUNT(*) OVER (PARTITION BY a) FROM t", True),
    ("SELECT x / COUNT(*) OVER (ORDER BY a ROWS BETWEEN 1 FOLLOWING AND 2 FOLLOWING) FROM t", False),
])
def test_which_counts_are_never_zero(sql, never):
    assert never_zero(_select(sql).find(exp.Div).expression) is never


# -- 3. DOUBLE results within their stated bound --------------------------------------------------------------
# A DECIMAL and a DOUBLE are each held to 2^-17 (the DECIMAL's fixed-point limb, the DOUBLE's encoding), so their
# sum is computed within b = 2^-16; revealed, it was rounded to the d = 4 decimals b supports, which moved
# 1.23 + 4e-5 to 1.23 (4e-5 > 2b off). Now a value is rounded only where that moves it by at most b: within
# 2b of DuckDB's, and an exact result with d decimals (money) still rounds back to itself.
DECIMALS = ["1.23", "0.00", "-5.55", "12345.67", None, "99.99", "0.01", "-0.01", "7.77"]
DOUBLES = [1e-5, 4e-5, -4.9e-5, 4e-5, 1e-5, None, 0.1, 3e-5, 0.004]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, federation_writer, plaintext_grants, oracle_for):
    """bank.a(id, dec DECIMAL(10, 2)) and shop.b(id, x DOUBLE), NULLs on both sides, one row each per id."""
    import decimal

    import pyarrow as pa

    ids = pa.array(range(len(DECIMALS)), pa.int64())
    tables = {"bank": {"a": pa.table({"id": ids, "dec": pa.array([None if d is None else decimal.Decimal(d)
                                                                   for d in DECIMALS], pa.decimal128(10, 2))})},
              "shop": {"b": pa.table({"id": ids, "x": pa.array(DOUBLES, pa.float64())})},
              "insurer": {"c": pa.table({"id": pa.array([1], pa.int64())})}}
    path = federation_writer(tmp_path_factory.mktemp("mixed"), tables, plaintext_grants(), min_group_size=0)
    with Engine(path, timeout=120) as engine:
        yield oracle_for(engine)


@pytest.mark.parametrize("expression, bound", [("a.dec + b.x", 2.0 ** -16), ("b.x + a.dec", 2.0 ** -16),
                                               ("a.dec - b.x", 2.0 ** -16), ("a.dec + b.x + 1", 2.0 ** -16)])
def test_a_decimal_plus_a_double_is_within_twice_its_bound_of_duckdb(mixed, expression, bound):
    sql = f"SELECT a.id, {expression} AS s FROM bank.a a JOIN shop.b b ON a.id = b.id"
    assert "SPU(" in mixed.engine.explain(sql, "insurer") and mixed.engine.check(sql, "insurer") is None
    got = {r["id"]: r["s"] for r in mixed.engine.execute(sql, "insurer").table.to_pylist()}
    want = {r["id"]: r["s"] for r in mixed.expected(sql, "insurer").to_pylist()}
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert (got[key] is None) is (value is None), key
        if value is not None:
            assert abs(got[key] - float(value)) <= 2 * bound, (key, got[key], value)


def test_a_rounding_to_the_supported_digits_never_moves_a_value_beyond_the_bound():
    import numpy as np

    from sqlsecure.executors.spu.values import honest_digits

    bound = 2.0 ** -16  # 4 decimals supported
    computed = np.array([80612 / 65536, 80609 / 65536, 1.0 + 2.0 ** -17, 12.34567])
    shown = honest_digits(computed, bound)
    assert shown[0] == computed[0]  # 1.2300415: rounding to 1.23 would move it by 4.2e-5 > b
    assert shown[1] == 1.23 and shown[2] == 1.0  # within b of 4 decimals: money rounds back
    assert all(abs(s - c) <= bound for s, c in zip(shown, computed))


# -- 2. a SUM of products with a DOUBLE factor, compared or rounded, guarded by its proven error -------------
# Each row's product errs by |y| err(x) + |x| err(y) + a truncation (1e-5 is held as 2^-16: x 1000, 345 units
# of 2^-16 per row), and a SUM adds its rows' errors. The guard took 4 units for any SUM, so a sum 6 units
# from the constant (just past the old guard) was compared on the SPU's side of it, not DuckDB's. The rows'
# bounds are now summed beside the aggregate (`Stage.aggregate_errors`) and a group within them refuses.
GROUP = 10  # rows of group 1: x = 1e-5, y = 1000 (DuckDB's sum 0.1, the SPU's 10 * 1000 * 2^-16 = 0.1526)
PRODUCTS = "FROM bank.t a JOIN corp.u b ON a.id = b.id"
JUST_PAST_THE_OLD_GUARD = 0.1001  # 1e-4 = 6.6 units of 2^-16 above DuckDB's sum: the old guard took 5


@pytest.fixture(scope="module")
def products(tmp_path_factory, federation_writer, plaintext_grants, oracle_for):
    """bank.t(id, g, x) and corp.u(id, y): group 1 the sum above, group 2 exact values far from any constant,
    group 3 NULLs on either side (not counted)."""
    import pyarrow as pa

    g = [1] * GROUP + [2] * 4 + [3] * 2
    x = [1e-5] * GROUP + [0.5, 0.25, 2.0, 1.5] + [None, 3.0]
    y = [1000.0] * GROUP + [4.0, 8.0, 1.0, 2.0] + [5.0, None]
    ids = pa.array(range(len(g)), pa.int64())
    tables = {"bank": {"t": pa.table({"id": ids, "g": pa.array(g, pa.int64()), "x": pa.array(x, pa.float64())})},
              "corp": {"u": pa.table({"id": ids, "y": pa.array(y, pa.float64())})}}
    path = federation_writer(tmp_path_factory.mktemp("products"), tables, plaintext_grants(("bank", "corp")),
                             parties=("bank", "corp"), min_group_size=0, group_sums="spu")
    with Engine(path, timeout=120) as engine:
        yield oracle_for(engine)


SUMS = {  # query: whether a counted group lies within its error of the constant or boundary (refused)
    f"SELECT a.g, SUM(a.x * b.y) > {JUST_PAST_THE_OLD_GUARD} AS above {PRODUCTS} GROUP BY a.g": True,
    f"SELECT a.g {PRODUCTS} GROUP BY a.g HAVING SUM(a.x * b.y) > {JUST_PAST_THE_OLD_GUARD}": True,
    f"SELECT a.g, AVG(a.x * b.y) < 0.0099 AS below {PRODUCTS} GROUP BY a.g": True,
    f"SELECT SUM(a.x * b.y) > {JUST_PAST_THE_OLD_GUARD} AS above {PRODUCTS} WHERE a.g = 1": True,
    f"SELECT a.g, ROUND(SUM(a.x * b.y), 1) AS r {PRODUCTS} GROUP BY a.g": True,  # 0.1526 is 0.2, DuckDB's 0.1
    f"SELECT a.g, SUM(a.x * b.y) > 1.0 AS above, SUM(a.x * b.y) < -1 AS below {PRODUCTS} GROUP BY a.g": False,
    f"SELECT a.g, COUNT(*) AS n {PRODUCTS} GROUP BY a.g HAVING SUM(a.x * b.y) > 0.5": False,
    f"SELECT a.g, AVG(a.x * b.y) > 0.5 AS above {PRODUCTS} WHERE a.g > 1 GROUP BY a.g": False,
    f"SELECT a.g, ROUND(SUM(a.x * b.y), 1) AS r {PRODUCTS} WHERE a.g > 1 GROUP BY a.g": False,
}


@pytest.mark.parametrize("sql", SUMS)
def test_a_sum_of_double_products_is_duckdbs_or_refused_within_its_proven_error(products, sql):
    """Group 1 within its error: DuckDB's 0.1 below the constant, the SPU's 0.1526 above it; refused
    (DataError), never the wrong side. Beyond the error: DuckDB's answers."""
    assert products.engine.check(sql, "bank") is None
    if not SUMS[sql]:
        products.check(sql, "bank")
        return
    with pytest.raises(DataError, match="within their error|within its error of a rounding boundary"):
        products.engine.execute(sql, "bank")
