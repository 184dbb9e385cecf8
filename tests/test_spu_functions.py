"""SQL's scalar functions on shares (executors/spu/functions.py): kernels against plaintext numpy with
parties as threads, then through the engine against the DuckDB oracle."""

import contextlib
import datetime
import decimal
import re

import numpy as np
import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import DataError, NotSupportedError
from sqlsecure.executors.spu import arith, functions
from sqlsecure.executors.spu.local import run_spu
from sqlsecure.executors.spu.values import EPOCH
from sqlsecure.executors.spu.shares import as_ring, decode_fixed, encode_fixed, to_signed
from sqlsecure.planner.geodist import with_great_circle
from tests.conftest import same_multiset, sorted_rows

PARTIES = [2, 3]
F = 16
INT_EDGES = [0, 1, -1, 5, -5, 9, -9, 10, -10, 15, -15, 2**61 - 1, -(2**61) + 1, 123456789012345, -98765432109876]


def share(s, values, owner=0, frac=0):
    values = np.asarray(values)
    ring = (as_ring(values) if frac == 0 else encode_fixed(values, frac)) if s.index == owner else None
    return arith.share_input(s, owner, ring, values.shape, frac)


def half_away(x: float) -> float:
    """DuckDB's ROUND of a DOUBLE: halves away from zero."""
    return float(np.sign(x) * np.floor(np.abs(x) + 0.5))


@pytest.mark.parametrize("nparties", PARTIES)
def test_floor_ceil_round_of_fixed_point_are_exact_on_the_encoding(nparties):
    rng = np.random.default_rng(3)
    x = np.concatenate([[0.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.49999, -0.49999, 3.0, -3.0, 2.0**45, -(2.0**45) + 0.5],
                        rng.uniform(-1e9, 1e9, 40), rng.uniform(-3, 3, 40)])

    def program(s):
        xs = share(s, x, owner=nparties - 1, frac=F)
        return arith.reveal_many(s, [functions.floor_fixed(s, xs), functions.ceil_fixed(s, xs),
                                     functions.round_fixed(s, xs)])

    floor, ceil, rounded = run_spu(nparties, program, frac_bits=F).results[0]
    encoded = decode_fixed(encode_fixed(x, F), F)
    assert (decode_fixed(floor, F) == np.floor(encoded)).all()
    assert (decode_fixed(ceil, F) == np.ceil(encoded)).all()
    assert decode_fixed(rounded, F).tolist() == [half_away(v) for v in encoded]


@pytest.mark.parametrize("nparties", PARTIES)
@pytest.mark.parametrize("c", [1, 2, 7, 10, 100, 1000, 10**6, 10**9 + 7, 10**12])
def test_division_by_a_public_integer_is_exact_over_the_whole_range(nparties, c):
    rng = np.random.default_rng(c)
    x = np.array(INT_EDGES + [c, -c, c - 1, -c + 1, c // 2, -(c // 2)]
                 + rng.integers(-(2**61), 2**61, 30).tolist() + rng.integers(-3 * c, 3 * c, 30).tolist(),
                 dtype=np.int64)

    def program(s):
        xs = share(s, x)
        return arith.reveal_many(s, [functions.floor_div_public(s, xs, c),
                                     functions.round_div_public(s, xs, c)])

    floor, rounded = run_spu(nparties, program).results[0]
    assert to_signed(floor).tolist() == [int(v) // c for v in x]
    want = [int((decimal.Decimal(int(v)) / c).quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP)) for v in x]
    assert to_signed(rounded).tolist() == want


JOINED = "FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id"
ROUNDING_QUERIES = [
    f"SELECT c.region, ROUND(SUM(o.amount), 2) AS s, ROUND(SUM(c.income), 1) AS i, ROUND(SUM(c.income), -3) AS k, "
    f"FLOOR(MAX(o.amount - c.age)) AS f, CEIL(MIN(o.amount - c.age)) AS g {JOINED} GROUP BY c.region",
    f"SELECT ROUND(SUM(o.amount), 2), ROUND(SUM(c.income)), FLOOR(SUM(c.income)), CEIL(SUM(c.income)), "
    # a SUM of DOUBLE x integer products is guarded by its rows' summed bounds, about 2 (|age| + 2) units of
    # 2^-16 each (0.18 here: tests/test_ranges_s12.py); to one decimal every sum lies within that of a boundary
    f"ROUND(SUM(o.amount * c.age), -1) {JOINED} WHERE o.amount > c.age",
    f"SELECT o.order_id, FLOOR(o.amount - c.age) AS f, CEIL(c.age - o.amount) AS g, ROUND(c.income, -2) AS r, "
    f"FLOOR(c.income) AS fi, CEIL(c.income) AS ci, ROUND(c.age * o.order_id, -1) AS ri, ROUND(o.amount + c.age) AS ra "
    f"{JOINED} WHERE o.amount > c.age",
]


TWO = ("bank", "shop")


def edge_tables(big: int, fx: float) -> dict[str, dict[str, pa.Table]]:
    """One party's numbers at a range edge (and NULLs), another's keys and a small factor."""
    ids = pa.array([1, 2, 3, 4, 5, 6], pa.int64())
    bank = {"v": pa.table({"id": ids, "big": pa.array([big, -big, 15, -25, None, 0], pa.int64()),
                           "fx": pa.array([fx, -fx, 2.5, -2.5, None, 0.125]),
                           "dec": pa.array([decimal.Decimal(v) for v in ("123456789.95", "-0.05", "0.04", "-7.50",
                                                                         "0", "99.99")], pa.decimal128(18, 2)),
                           "flag": pa.array([True, False, None, True, False, True]),
                           "day": pa.array([datetime.date(*d) if d else None for d in (
                               (1, 1, 1), (2000, 2, 29), (1900, 3, 1), None, (1969, 12, 31), (2024, 1, 31))])})}
    shop = {"w": pa.table({"id": ids, "k": pa.array([1, 2, 3, 1, 2, None], pa.int64()),
                           "due": pa.array([datetime.date(*d) for d in (
                               (9999, 12, 31), (2001, 3, 1), (1900, 2, 28), (1970, 1, 1), (1970, 1, 1), (2024, 2, 29))])})}
    return {"bank": bank, "shop": shop}


@pytest.fixture(scope="module")
def edge_oracles(tmp_path_factory, federation_writer, plaintext_grants, oracle_for):
    """Federations at the edge of ROUND's exact range: just inside and just outside."""
    made = {}
    with contextlib.ExitStack() as stack:
        for name, big, fx in (("inside", 2**61 - 1, 2.0**45 / 100 - 1), ("outside", 2**61, 2.0**45 / 100)):
            path = federation_writer(tmp_path_factory.mktemp(name), edge_tables(big, fx), plaintext_grants(TWO),
                                     parties=TWO, min_group_size=0)
            made[name] = oracle_for(stack.enter_context(Engine(path, timeout=60)))
        yield made


EDGE_JOIN = "FROM bank.v b JOIN shop.w s ON b.id = s.id"


@pytest.mark.parametrize("sql", [
    f"SELECT b.id, ROUND(b.big, -1) AS r, ROUND(b.fx, 1) AS f, ROUND(b.dec, 1) AS d, FLOOR(b.dec) AS fl, "
    f"CEIL(b.dec) AS ce, ROUND(b.dec, -2) AS h {EDGE_JOIN} WHERE b.id > s.k",
    f"SELECT s.k, ROUND(SUM(b.dec), 1) AS d, FLOOR(MIN(b.fx)) AS f {EDGE_JOIN} WHERE b.id > s.k GROUP BY s.k",
])
def test_rounding_at_the_range_edge_and_on_nulls_matches_duckdb(edge_oracles, sql):
    on_spu = edge_oracles["inside"]
    assert "SPU(" in on_spu.engine.explain(sql, "bank")
    on_spu.check(sql)


@pytest.mark.parametrize("sql", [f"SELECT ROUND(b.fx, 2) {EDGE_JOIN} WHERE b.id > s.k",
                                 f"SELECT CAST(b.fx AS DECIMAL(18, 2)) {EDGE_JOIN} WHERE b.id > s.k"])
def test_a_value_inside_its_limit_but_not_its_class_is_refused_at_plan_time(edge_oracles, sql):
    """fx = 2^45 / 100 - 1 is inside the exact limit 2^45 / 100 of a rounding to cents, but its owner's
    published class is 2^39: the planner proves ranges by classes (power-of-two granularity), so it
    refuses at plan time — check and execution alike — rather than leave a run-time refusal."""
    inside = edge_oracles["inside"]
    assert "DataError" in inside.engine.check(sql, "bank") and "magnitude class" in inside.engine.check(sql, "bank")
    with pytest.raises(DataError, match="magnitude class is .*b.fx"):
        inside.engine.execute(sql, "bank")


@pytest.mark.parametrize("sql,column", [(f"SELECT ROUND(b.big, -1) {EDGE_JOIN} WHERE b.id > s.k", "big"),
                                        (f"SELECT CAST(b.fx AS INTEGER) {EDGE_JOIN} WHERE b.id > s.k", "fx"),
                                        (f"SELECT ROUND(b.fx, 2) {EDGE_JOIN} WHERE b.id > s.k", "fx")])
def test_rounding_beyond_the_exact_range_is_refused_before_sharing(edge_oracles, sql, column):
    with pytest.raises(DataError, match=rf"column '\w+\.{column}' has values outside .* (rounds|casts)"):
        edge_oracles["outside"].engine.execute(sql, "bank")


ROUNDING_REFUSALS = [
    (f"SELECT ROUND(o.amount, c.age) {JOINED}", "ROUND"),
    (f"SELECT ROUND(o.amount * c.age, 13) {JOINED}", "ROUND"),
]


@pytest.mark.parametrize("nparties", PARTIES)
def test_division_by_a_secret_within_its_stated_accuracy(nparties):
    rng = np.random.default_rng(11)
    x = np.concatenate([[0.0, 1.0, -1.0, 7.0, -7.0, 2.0**27 - 1, -(2.0**27) + 1, 1e-4, 5.0],
                        rng.uniform(-2.0**27, 2.0**27, 30), rng.uniform(-10, 10, 30)])
    y_fixed = np.concatenate([[3.0, -3.0, 0.5, 2.0**23 - 1, -(2.0**23) + 1, 1e-3, -1e-3, 1.0, 0.0],
                              rng.uniform(-2.0**23, 2.0**23, 30), rng.uniform(-2, 2, 30)])
    y_int = np.concatenate([[3, -3, 1, 2**31 - 1, -(2**31) + 1, 2, -2, 1, 0],
                            rng.integers(-(2**31), 2**31, 30), rng.integers(-5, 6, 30)]).astype(np.int64)

    def program(s):
        xs = share(s, x, frac=F)
        q1, z1 = functions.divide_secret(s, xs, share(s, y_fixed, owner=nparties - 1, frac=F))
        q2, z2 = functions.divide_secret(s, xs, share(s, y_int, owner=1))
        return arith.reveal_many(s, [q1, z1, q2, z2])

    q1, z1, q2, z2 = run_spu(nparties, program, frac_bits=F).results[0]
    ex, ey = decode_fixed(encode_fixed(x, F), F), decode_fixed(encode_fixed(y_fixed, F), F)
    for got, zero, y in ((q1, z1, ey), (q2, z2, y_int.astype(float))):
        assert to_signed(zero).tolist() == (y == 0).astype(int).tolist()
        safe = np.where(y == 0, 1.0, y)
        want = np.where(y == 0, ex, ex / safe)  # the zero divisor's lane divides by 1 (the stage refuses it)
        err = np.abs(decode_fixed(got, F) - want)
        assert (err <= 2.0**-14 * np.abs(want) + 2.0**-14).all(), err.max()


@pytest.mark.parametrize("nparties", PARTIES)
def test_integer_division_and_modulo_have_duckdbs_signs(nparties):
    rng = np.random.default_rng(12)
    x = np.concatenate([[7, -7, 7, -7, 0, 6, -6, 2**27 - 1, -(2**27) + 1, 5, 2**27 - 1],
                        rng.integers(-(2**27), 2**27, 40), rng.integers(-50, 50, 40)]).astype(np.int64)
    y = np.concatenate([[2, 2, -2, -2, 3, 3, -3, 1, -1, 2**31 - 1, 2**31 - 1],
                        rng.integers(-(2**31), 2**31, 40), rng.integers(1, 9, 40) * rng.choice([-1, 1], 40)])
    y = np.where(y == 0, 1, y).astype(np.int64)

    def program(s):
        xs = share(s, x)
        q, zero = functions.truncated_divide_secret(s, xs, share(s, y, owner=nparties - 1))
        return arith.reveal_many(s, [q, zero, *(functions.truncated_divide_public(s, xs, c) for c in (7, -10, 1))])

    q, zero, *by_constant = run_spu(nparties, program).results[0]
    truncated = [int(a / b) if abs(a) < 2**52 else -(-a // b) if (a < 0) != (b < 0) else a // b
                 for a, b in zip(x.tolist(), y.tolist())]
    assert to_signed(q).tolist() == truncated
    assert not to_signed(zero).any()
    for got, c in zip(by_constant, (7, -10, 1)):
        assert to_signed(got).tolist() == [int(np.trunc(a / c)) for a in x.tolist()]


DIVISION_QUERIES = [
    f"SELECT c.region, SUM(o.amount / c.age) AS q, AVG(CASE WHEN o.amount > c.age THEN o.amount / c.age END) AS a, "
    f"SUM(c.income / o.amount) AS r {JOINED} GROUP BY c.region",
    f"SELECT o.order_id, o.order_id // c.age AS d, o.order_id % c.age AS m, -o.order_id % 7 AS n, "
    f"o.order_id // -3 AS t, (c.age - 50) // (o.order_id % 4 + 1) AS u, (c.age - 50) % -(o.order_id % 4 + 1) AS v, "
    f"NULLIF(c.age % 3, 0) AS z, COALESCE(NULLIF(c.age % 5, 0), o.amount, c.income) AS w, "
    f"IFNULL(NULLIF(o.order_id % 2, 1), c.income) AS i, IF(o.amount > c.income, c.age, o.amount) AS f, "
    f"c.income / o.order_id AS g {JOINED} WHERE o.amount > c.age AND o.order_id > 0",
]


@pytest.mark.parametrize("sql", [
    f"SELECT b.id, b.id / (s.k - 1) AS q, b.id // (s.k - 1) AS d, b.id % (s.k - 1) AS m {EDGE_JOIN} "
    f"WHERE s.k > 1 AND b.id > s.k",  # the rows dividing by zero are filtered out: DuckDB answers
    f"SELECT b.id, CASE WHEN b.flag THEN s.k ELSE -s.k END AS c, IF(b.flag, b.dec, s.k) AS i, "
    f"COALESCE(b.dec, s.k, b.fx) AS co, NULLIF(b.flag, s.k > 1) AS n {EDGE_JOIN} WHERE b.id > s.k",
    f"SELECT SUM(CASE WHEN b.flag THEN s.k END) AS f, AVG(CASE WHEN b.flag THEN b.dec END) AS a, "
    f"SUM(b.id / s.k) AS q {EDGE_JOIN} WHERE b.id >= s.k",
])
def test_division_and_conditions_on_nulls_and_booleans_match_duckdb(edge_oracles, sql):
    inside = edge_oracles["inside"]
    assert "SPU(" in inside.engine.explain(sql, "bank")
    inside.check(sql)


def test_a_counted_row_dividing_by_zero_is_refused(edge_oracles):
    sql = f"SELECT b.id, b.id / (s.k - 1) AS q {EDGE_JOIN} WHERE b.id >= s.k"
    with pytest.raises(DataError, match=r"divides by zero"):
        edge_oracles["inside"].engine.execute(sql, "bank")


DIVISION_REFUSALS = [
    (f"SELECT o.amount // c.age {JOINED}", "//"),
    (f"SELECT o.amount % c.age {JOINED}", "%"),
    (f"SELECT o.order_id // 0 {JOINED} WHERE o.amount > c.age", "//"),
    (f"SELECT o.amount / 0 {JOINED} WHERE o.amount > c.age", "/"),
]


DATE_AND_CAST_QUERIES = [
    f"SELECT b.id, YEAR(b.day) AS y, MONTH(b.day) AS m, DAY(b.day) AS d, EXTRACT(YEAR FROM s.due) AS ey, "
    f"EXTRACT(MONTH FROM s.due) AS em, EXTRACT(DAY FROM s.due) AS ed, DATEDIFF('day', b.day, s.due) AS dd, "
    f"DATEDIFF('month', b.day, s.due) AS dm, DATEDIFF('year', b.day, s.due) AS dy, s.due - b.day AS diff, "
    f"b.day + 7 AS week {EDGE_JOIN} WHERE b.id >= s.k",
    f"SELECT b.id {EDGE_JOIN} WHERE b.day + INTERVAL 5 DAY < s.due AND s.due - INTERVAL 1 WEEK > b.day",
    f"SELECT b.id, CAST(b.fx AS BIGINT) AS i, CAST(b.dec AS INTEGER) AS di, CAST(b.dec AS DECIMAL(18, 1)) AS d1, "
    f"CAST(b.dec AS DECIMAL(18, 4)) AS d4, CAST(s.k AS DECIMAL(10, 2)) AS kd, CAST(b.flag AS INTEGER) AS fi, "
    f"CAST(b.fx AS DECIMAL(18, 1)) AS fd, CAST(s.k AS DOUBLE) / 4 AS kq {EDGE_JOIN} WHERE b.id >= s.k",
    f"SELECT YEAR(b.day) AS y, COUNT(*) AS n, SUM(DATEDIFF('day', b.day, s.due)) AS total {EDGE_JOIN} "
    f"WHERE b.id >= s.k GROUP BY YEAR(b.day)",
]


CALENDAR_QUERIES = [
    f"SELECT b.id, CAST(b.day + INTERVAL 1 MONTH AS DATE) AS m, CAST(b.day + INTERVAL 13 MONTH AS DATE) AS y, "
    f"CAST(s.due - INTERVAL 1 YEAR AS DATE) AS p, CAST(INTERVAL 2 QUARTER + s.due AS DATE) AS q, "
    f"CAST(s.due - INTERVAL 1 MONTH AS DATE) AS f {EDGE_JOIN} WHERE b.id >= s.k AND s.due < DATE '9999-01-01'",
    f"SELECT b.id {EDGE_JOIN} WHERE b.day + INTERVAL 1 MONTH < s.due AND s.due - INTERVAL 2 YEAR > b.day",
    f"SELECT COUNT(*) AS n {EDGE_JOIN} WHERE s.due - INTERVAL 1 MONTH >= b.day + INTERVAL 1 YEAR "
    f"OR s.due < DATE '2000-01-31' + INTERVAL 1 MONTH",
]


@pytest.mark.parametrize("sql", DATE_AND_CAST_QUERIES + CALENDAR_QUERIES)
def test_dates_and_casts_across_parties_match_duckdb(edge_oracles, sql):
    inside = edge_oracles["inside"]
    assert inside.engine.check(sql, "bank") is None
    assert "SPU(" in inside.engine.explain(sql, "bank")
    inside.check(sql)


@pytest.mark.parametrize("nparties", PARTIES)
def test_calendar_dates_and_casts_to_integers_are_exact(nparties):
    rng = np.random.default_rng(13)
    first, last = (datetime.date(1, 1, 1) - EPOCH).days, (datetime.date(9999, 12, 31) - EPOCH).days
    days = np.array([first, last, 0, -1, 59, 60, 10956, 11016, 11017, -25508, -25509]
                    + rng.integers(first, last + 1, 60).tolist(), dtype=np.int64)
    x = np.array([2.5, -2.5, 3.5, -3.5, 0.5, -0.5, 1.49, -1.51, 7.0, 0.0, 2.0**40 + 0.5, -(2.0**40) - 1.5])

    def program(s):
        year, month, day = functions.civil_from_days(s, share(s, days, owner=nparties - 1))
        return arith.reveal_many(s, [year, month, day, functions.round_half_even_fixed(s, share(s, x, frac=F))])

    year, month, day, rounded = run_spu(nparties, program).results[0]
    want = [EPOCH + datetime.timedelta(days=int(d)) for d in days]
    assert to_signed(year).tolist() == [w.year for w in want]
    assert to_signed(month).tolist() == [w.month for w in want]
    assert to_signed(day).tolist() == [w.day for w in want]
    assert to_signed(rounded).tolist() == [int(v) for v in np.rint(x)]  # ties to even, as DuckDB's CAST


@pytest.mark.parametrize("nparties", PARTIES)
def test_adding_months_is_exact_with_end_of_month_clamping(nparties):
    import duckdb
    rng = np.random.default_rng(19)
    first, last = (datetime.date(4, 1, 1) - EPOCH).days, (datetime.date(9997, 1, 31) - EPOCH).days
    edges = [(2024, 1, 31), (2024, 2, 29), (2023, 1, 31), (1900, 1, 31), (2000, 1, 31), (2024, 3, 31), (1969, 12, 31),
             (4, 1, 1), (9997, 1, 31), (2100, 3, 31), (2000, 3, 30)]
    days = np.array([(datetime.date(*d) - EPOCH).days for d in edges] + rng.integers(first, last, 40).tolist())
    shifts = [1, -1, 12, -12, 13, -25, 0, 3]

    def program(s):
        x = share(s, days, owner=nparties - 1)
        return arith.reveal_many(s, [functions.add_months(s, x, n) for n in shifts])

    moved = run_spu(nparties, program).results[0]
    con = duckdb.connect()
    for n, got in zip(shifts, moved):
        want = [con.execute(f"SELECT CAST(DATE '{(EPOCH + datetime.timedelta(days=int(d))).isoformat()}' "
                            f"+ INTERVAL ({n}) MONTH AS DATE)").fetchone()[0] for d in days]
        assert [EPOCH + datetime.timedelta(days=int(v)) for v in to_signed(got)] == want


@pytest.mark.parametrize("sql,name", [
    (f"SELECT b.day + INTERVAL '1.5' HOUR > s.due {EDGE_JOIN}", "INTERVAL"),
    (f"SELECT b.day + INTERVAL (s.k) MONTH > s.due {EDGE_JOIN}", "INTERVAL"),
    (f"SELECT EXTRACT(DOW FROM b.day) {EDGE_JOIN} WHERE b.id > s.k", "DOW"),
    (f"SELECT DATEDIFF('week', b.day, s.due) {EDGE_JOIN}", "WEEK"),
    (f"SELECT HOUR(b.day) {EDGE_JOIN} WHERE b.id > s.k", "HOUR of a DATE"),
])
def test_date_functions_the_spu_cannot_do_are_refused_naming_them(edge_oracles, sql, name):
    refused_by_the_spu(edge_oracles["inside"].engine, sql, name)


@pytest.mark.parametrize("nparties", PARTIES)
def test_sqrt_ln_exp_power_within_their_stated_accuracy(nparties):
    rng = np.random.default_rng(14)
    roots = np.concatenate([[0.0, 2.0**-16, 1e-4, 0.25, 0.5, 1.0, 2.0, 3.0, 2.0**43 - 1], rng.uniform(0, 2.0**43, 20),
                            rng.uniform(0, 100, 20)])
    logs = np.concatenate([[2.0**-16, 1e-4, 0.5, 1.0, 2.0, np.e, 10.0, 2.0**43 - 1], rng.uniform(0, 2.0**43, 20),
                           rng.uniform(1e-3, 100, 20)])
    exps = np.concatenate([[-30.9, -12.0, -1.0, 0.0, 1e-3, 0.5, 1.0, 10.0, 30.9], rng.uniform(-31, 31, 30)])
    bases = np.array([-3, -1, 0, 1, 2, 7, 1000, -(2**20)], dtype=np.int64)

    def program(s):
        xs = [share(s, v, owner=nparties - 1, frac=F) for v in (roots, logs, exps)]
        ints = share(s, bases)
        return arith.reveal_many(s, [functions.sqrt_fixed(s, xs[0]), functions.ln_fixed(s, xs[1]),
                                     functions.exp_fixed(s, xs[2]),
                                     functions.power_integer(s, ints, 3, lambda a, b: arith.beaver_mul(s, a, b))])

    root, ln, ex, cube = run_spu(nparties, program).results[0]
    r, l, e = (decode_fixed(encode_fixed(v, F), F) for v in (roots, logs, exps))
    assert (np.abs(decode_fixed(root, F) - np.sqrt(r)) <= 2.0**-14 * (np.sqrt(r) + 1)).all()
    assert (np.abs(decode_fixed(ln, F) - np.log(l)) <= 2.0**-12).all()
    assert (np.abs(decode_fixed(ex, F) - np.exp(e)) <= 2.0**-14 * np.exp(e) + 2.0**-15).all()
    assert to_signed(cube).tolist() == [int(b) ** 3 for b in bases]


MATH_QUERIES = [
    f"SELECT o.order_id, SQRT(o.amount + c.age) AS r, LN(o.amount + c.age) AS l, LOG(o.amount * c.age) AS t, "
    f"LOG(2, c.age + o.amount) AS b, EXP((o.amount - c.age) / 200) AS e, POWER(c.age - o.order_id, 3) AS p, "
    f"POWER(o.amount / 100 - c.age / 50, 2) AS q, SQRT(NULLIF(c.age - 30, 0) * 0 + o.amount) AS n "
    f"{JOINED} WHERE o.amount > c.age",
    f"SELECT c.region, SQRT(SUM(o.amount)) AS r, LN(AVG(o.amount * c.age)) AS l {JOINED} GROUP BY c.region",
]


def test_a_counted_row_outside_the_domain_is_refused(edge_oracles):
    with pytest.raises(DataError, match="logarithm of a number <= 0"):
        edge_oracles["inside"].engine.execute(f"SELECT LN(b.id - s.k) {EDGE_JOIN} WHERE b.id >= s.k", "bank")
    with pytest.raises(DataError, match="square root of a negative"):
        edge_oracles["inside"].engine.execute(f"SELECT SQRT(s.k - b.id) {EDGE_JOIN} WHERE b.id > s.k", "bank")


MATH_REFUSALS = [
    (f"SELECT LOG(c.age, o.amount) {JOINED}", "LOG"),
    (f"SELECT COT(o.amount * c.age) {JOINED}", "COT"),
]


@pytest.mark.parametrize("nparties", PARTIES)
def test_trigonometric_functions_within_their_stated_accuracy_over_the_whole_range(nparties):
    rng = np.random.default_rng(15)
    limit = 2.0**24 - 1  # spu.ranges.TRIG_LIMIT
    angles = np.concatenate([[0.0, 2.0**-16, -(2.0**-16), np.pi / 2, -np.pi / 2, np.pi, -np.pi, 1.0, limit, -limit],
                             rng.uniform(-limit, limit, 40), rng.uniform(-7, 7, 40)])
    units = np.concatenate([[-1.0, 1.0, 0.0, 0.5, -0.5, 1 - 2.0**-16, -1 + 2.0**-16, 2.0**-16], rng.uniform(-1, 1, 40)])
    wide = 2.0**23 - 1  # spu.ranges.DIVISOR_LIMIT["fixed"]
    ys = np.concatenate([[0.0, 0.0, 0.0, 1.0, -1.0, 1.0, -1.0, 2.0**-16, wide, -wide, 3.0],
                         rng.uniform(-wide, wide, 20), rng.uniform(-5, 5, 40)])
    xs = np.concatenate([[0.0, 1.0, -1.0, 0.0, 0.0, -1.0, -1.0, -wide, wide, 2.0**-16, 3.0],
                         rng.uniform(-wide, wide, 20), rng.uniform(-5, 5, 40)])

    def program(s):
        x, u = share(s, angles, owner=nparties - 1, frac=F), share(s, units, frac=F)
        sin, cos = functions.sin_cos_fixed(s, x)
        tan, near_pole = functions.tan_fixed(s, x)
        root = functions.complement_root(s, u)
        return arith.reveal_many(s, [sin, cos, tan, near_pole, functions.atan2_fixed(s, u, root),
                                     functions.atan2_fixed(s, root, u),
                                     functions.atan2_fixed(s, share(s, ys, frac=F), share(s, xs, owner=1, frac=F))])

    sin, cos, tan, near_pole, asin, acos, atan2 = run_spu(nparties, program).results[0]
    a, u, y, x = (decode_fixed(encode_fixed(v, F), F) for v in (angles, units, ys, xs))
    assert (np.abs(decode_fixed(sin, F) - np.sin(a)) <= 2.0**-15).all()
    assert (np.abs(decode_fixed(cos, F) - np.cos(a)) <= 2.0**-15).all()
    pole = to_signed(near_pole) == 1
    assert pole.tolist() == (np.abs(np.cos(a)) < 2.0**-8).tolist()  # at pi/2 on its encoding, 2^-17 away
    assert (np.abs(decode_fixed(tan, F) - np.tan(a)) <= 2.0**-14 * (np.abs(np.tan(a)) + 1))[~pole].all()
    assert (np.abs(decode_fixed(asin, F) - np.arcsin(u)) <= 2.0**-14).all()
    assert (np.abs(decode_fixed(acos, F) - np.arccos(u)) <= 2.0**-14).all()
    assert (np.abs(decode_fixed(atan2, F) - np.arctan2(y, x)) <= 2.0**-14).all()


TRIG_QUERIES = [
    f"SELECT o.order_id, SIN(o.amount / c.age) AS s, COS(o.amount * c.age / 100) AS c, TAN((o.amount - c.age) / 400) AS t, "
    f"ATAN(o.amount / c.age) AS a, ATAN2(c.age - 50, o.amount - 250) AS a2, ASIN(c.age / o.amount) AS i, "
    f"ACOS((c.age - 50) / 40) AS k, SIN(c.income) AS si {JOINED} WHERE o.amount > c.age",
    f"SELECT c.region, SUM(SIN(o.amount / c.age)) AS s, AVG(COS(o.amount - c.age)) AS c, ATAN(SUM(o.amount)) AS a "
    f"{JOINED} GROUP BY c.region",
]


@pytest.mark.parametrize("sql", [
    f"SELECT b.id, SIN(b.fx / 100000) AS s, COS(b.big // 1000000000000) AS c, TAN(b.dec / 10) AS t, ATAN(b.fx / 100000) AS a, "
    f"ATAN2(b.fx / 100000, s.k) AS a2, ATAN2(s.k, b.dec / 100) AS a3, ASIN(b.fx / 35184372088832.0) AS i, "
    f"ACOS(s.k / 4) AS k, SIN(b.id * s.k) AS n {EDGE_JOIN} WHERE b.id > s.k",
])
def test_trigonometric_functions_on_nulls_and_edges_match_duckdb(edge_oracles, sql):
    inside = edge_oracles["inside"]
    assert inside.engine.check(sql, "bank") is None
    assert "SPU(" in inside.engine.explain(sql, "bank")
    inside.check(sql)


TRIG_DOMAIN_REFUSALS = [
    (f"SELECT ACOS(b.id - s.k) {EDGE_JOIN} WHERE b.id >= s.k", "outside \\[-1, 1\\]"),
    (f"SELECT ASIN(s.k - b.id) {EDGE_JOIN} WHERE b.id > s.k", "outside \\[-1, 1\\]"),
    (f"SELECT TAN(b.id * 0 + s.k * PI() / 2) {EDGE_JOIN} WHERE b.id > s.k", "pole of TAN"),
]


@pytest.mark.parametrize("sql,why", [(f"SELECT SIN(b.fx) {EDGE_JOIN} WHERE b.id > s.k", "turns"),
                                     (f"SELECT ATAN2(s.k, b.fx) {EDGE_JOIN} WHERE b.id > s.k", "divides")])
def test_trigonometric_functions_beyond_their_range_are_refused_before_sharing(edge_oracles, sql, why):
    with pytest.raises(DataError, match=rf"column '\w+\.fx' has values outside .* {why}"):
        edge_oracles["inside"].engine.execute(sql, "bank")


def great_circle(lon1, lat1, lon2, lat2, radius=6371.0):
    """The plaintext reference: SCQL's GEODIST in Vincenty's atan2 form (numpy)."""
    p1, p2, dl = np.radians(lat1), np.radians(lat2), np.radians(lon1 - lon2)
    across = np.cos(p2) * np.sin(dl)
    along = np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl)
    return radius * np.arctan2(np.hypot(across, along), np.sin(p1) * np.sin(p2) + np.cos(p1) * np.cos(p2) * np.cos(dl))


@pytest.mark.parametrize("nparties", PARTIES)
def test_geodist_within_its_stated_accuracy_from_metres_to_antipodes(nparties):
    rng = np.random.default_rng(16)
    lon1 = np.concatenate([[0.0, 0.0, 10.0, 116.39, -180.0, 0.0, 179.9], rng.uniform(-180, 180, 40)])
    lat1 = np.concatenate([[0.0, 90.0, 10.0, 39.9, 0.0, 0.0, -89.9], rng.uniform(-90, 90, 40)])
    lon2 = np.concatenate([[0.0, 0.0, 10.0001, 121.47, 180.0, 180.0, -179.9],
                           lon1[7:] + rng.normal(0, 1, 40) * np.logspace(-4, 2, 40)])
    lat2 = np.concatenate([[0.0, -90.0, 10.0, 31.23, 0.0, 0.0, 89.9], rng.uniform(-90, 90, 40)])
    radius = np.concatenate([[6371.0, 1.0, 6378.137, 6371.0, 2.5, 6371.0, 100.0], rng.uniform(1, 2.0**15, 40)])

    def program(s):
        points = [share(s, v, owner=i % nparties, frac=F) for i, v in enumerate((lon1, lat1, lon2, lat2))]
        return arith.reveal_many(s, [functions.geodist_fixed(s, *points, 6371),
                                     functions.geodist_fixed(s, *points, share(s, radius, frac=F))])

    default, scaled = run_spu(nparties, program).results[0]
    encoded = [decode_fixed(encode_fixed(v, F), F) for v in (lon1, lat1, lon2, lat2, radius)]
    assert (np.abs(decode_fixed(default, F) - great_circle(*encoded[:4])) <= 6371 * 2.0**-23 + 2.0**-15).all()
    assert (np.abs(decode_fixed(scaled, F) - great_circle(*encoded)) <= encoded[4] * 2.0**-23 + 2.0**-15).all()


def test_geodist_in_duckdb_is_scqls_great_circle_distance():
    """The plaintext rewrite (planner/geodist.py) equals SCQL's acos definition wherever acos is accurate."""
    import duckdb
    rng = np.random.default_rng(17)
    rows = [tuple(float(v) for v in row) for row in zip(rng.uniform(-180, 180, 50), rng.uniform(-90, 90, 50),
                                                         rng.uniform(-180, 180, 50), rng.uniform(-90, 90, 50))]
    con = duckdb.connect()
    con.execute("CREATE TABLE p (a DOUBLE, b DOUBLE, c DOUBLE, d DOUBLE)")
    con.executemany("INSERT INTO p VALUES (?, ?, ?, ?)", rows)
    scql = ("6371 * ACOS(SIN(RADIANS(b)) * SIN(RADIANS(d)) + COS(RADIANS(b)) * COS(RADIANS(d)) "
            "* COS(RADIANS(a) - RADIANS(c)))")
    ours, theirs, radius = con.execute(with_great_circle(
        f"SELECT GEODIST(a, b, c, d), {scql}, GEODIST(a, b, c, d, 1.0) FROM p")).fetchnumpy().values()
    assert np.allclose(ours, theirs, rtol=1e-9, atol=1e-6)
    assert np.allclose(ours / 6371, radius, rtol=1e-12)


POWER_QUERIES = [
    f"SELECT o.order_id, POWER(o.amount / 100, 0.5) AS r, POWER(c.age / 40, o.amount / 200) AS g, "
    f"POWER(o.amount / 100, -1.5) AS n, POWER(c.age / 10 - 5, o.order_id % 3) AS w, POWER(c.age / 10 - 5, 3.0) AS c3, "
    f"POWER(o.amount - o.amount, c.age / 50) AS z, POWER(2, o.amount / 100) AS b {JOINED} WHERE o.amount > c.age",
    f"SELECT c.region, SUM(POWER(o.amount / 100, c.age / 80)) AS s {JOINED} GROUP BY c.region",
]


@pytest.mark.parametrize("nparties", PARTIES)
def test_power_with_any_exponent_within_its_stated_accuracy(nparties):
    rng = np.random.default_rng(18)
    x = np.concatenate([[2.0, 2.0, 0.0, 0.0, -2.0, -2.0, 1e-4, 1000.0, 2.0**43 - 1, 10.0, 10.0, 1.0],
                        rng.uniform(1e-3, 100, 40), rng.uniform(-100, 0, 20)])
    y = np.concatenate([[0.5, -1.5, 2.0, 0.0, 3.0, 2.0, 2.0, 4.0, 1.0, 13.4, -14.0, 1e5 / 1e5],
                        rng.uniform(-5, 5, 40), rng.integers(-3, 6, 20)])

    def program(s):
        xs, ys = share(s, x, frac=F), share(s, y, owner=nparties - 1, frac=F)
        whole, flags = functions.power_fixed(s, xs, ys, True)
        real, real_flags = functions.power_fixed(s, xs, ys, False)
        return arith.reveal_many(s, [whole, real, flags["overflow"], flags["pole"], real_flags["negative"]])

    whole, real, overflow, pole, negative = run_spu(nparties, program).results[0]
    ex, ey = (decode_fixed(encode_fixed(v, F), F) for v in (x, y))
    assert to_signed(negative).tolist() == (ex < 0).astype(int).tolist()
    assert not to_signed(overflow).any() and not to_signed(pole).any()
    want = np.power(ex, ey)
    bound = 2.0**-14 * (1 + np.abs(ey) * 2.0**-8) * np.abs(want) + 2.0**-15  # docs/architecture.md
    assert (np.abs(decode_fixed(whole, F) - want) <= bound).all()
    assert (np.abs(decode_fixed(real, F) - want) <= bound)[ex >= 0].all()


@pytest.mark.parametrize("sql,message", TRIG_DOMAIN_REFUSALS + [
    (f"SELECT POWER(s.k - b.id, 0.5) {EDGE_JOIN} WHERE b.id > s.k", "negative number to a fractional power"),
    (f"SELECT POWER(b.id - b.id, s.k - 2) {EDGE_JOIN} WHERE b.id > s.k", "zero to a negative power"),
    (f"SELECT POWER(b.id * 1000, s.k * 5.0) {EDGE_JOIN} WHERE b.id > s.k", "fixed-point range"),
])
def test_a_counted_row_without_a_finite_value_is_refused(edge_oracles, sql, message):
    engine = edge_oracles["inside"].engine
    assert engine.check(sql, "bank") is None  # a property of the data: found while computing, never answered
    with pytest.raises(DataError, match=message):
        engine.execute(sql, "bank")


GEODIST_QUERIES = [
    f"SELECT o.order_id, GEODIST(o.amount / 3 - 90, c.age - 50, c.age * 2.5, o.amount / 6 - 45) AS g, "
    f"GEODIST(c.age, c.age - 40, c.age + o.amount / 10000, c.age - 40, 1) AS near {JOINED} WHERE o.amount > c.age",
    f"SELECT c.region, SUM(GEODIST(o.amount / 3 - 90, 0, c.age, 10, c.age)) AS s {JOINED} GROUP BY c.region",
    f"SELECT COUNT(*) AS n {JOINED} WHERE GEODIST(c.age, c.age, 1.0, 2.0) < o.amount * 10",  # one party's GEODIST
    "SELECT c.id, GEODIST(c.age, c.age - 40, 116.39, 39.9) AS g FROM bank.customers c",  # single-party: DuckDB
]


@pytest.mark.parametrize("sql", GEODIST_QUERIES)
def test_geodist_across_parties_and_at_one_party_matches_duckdb(oracle, rows_match, sql):
    assert oracle.engine.check(sql, "bank") is None
    got = oracle.engine.execute(sql, "bank").table
    assert rows_match(got, oracle.expected(with_great_circle(sql), "bank"))


def test_geodist_on_nulls_and_edges_matches_duckdb(edge_oracles, rows_match):
    sql = (f"SELECT b.id, GEODIST(b.fx / 10000000000, s.k, b.id * 30, -s.k, b.id) AS g, "
           f"GEODIST(b.big // 1000000000000, b.dec / 64, 0, s.k) AS e {EDGE_JOIN} WHERE b.id > s.k")
    inside = edge_oracles["inside"]
    assert "SPU(" in inside.engine.explain(sql, "bank")
    assert rows_match(inside.engine.execute(sql, "bank").table, inside.expected(with_great_circle(sql), "bank"))


def test_geodist_in_the_mysql_dialect_as_scql_users_write_it(tmp_path, make_federation, oracle_for, rows_match):
    with Engine(make_federation(tmp_path, dialect="mysql"), timeout=60) as engine:
        oracle = oracle_for(engine)
        for sql in (f"SELECT o.order_id, GEODIST(o.amount / 3 - 90, c.age - 50, 116.39, 39.9) AS g {JOINED} "
                    f"WHERE o.amount > c.age", "SELECT c.id, GEODIST(c.age, 0, 0, 0, 1) AS g FROM bank.customers c"):
            assert engine.check(sql, "bank") is None
            assert rows_match(engine.execute(sql, "bank").table, oracle.expected(with_great_circle(sql), "bank"))


@pytest.mark.parametrize("sql,error,message", [
    (f"SELECT GEODIST(b.fx, 0, s.k, 0) {EDGE_JOIN} WHERE b.id > s.k", DataError, r"'\w+\.fx' .* turns"),
    (f"SELECT GEODIST(b.id, 0, s.k) {EDGE_JOIN} WHERE b.id > s.k", NotSupportedError, "GEODIST takes"),
    (f"SELECT GEODIST(b.day, 0, s.k, 0) {EDGE_JOIN} WHERE b.id > s.k", NotSupportedError, "GEODIST of date"),
])
def test_geodist_refusals_name_it(edge_oracles, sql, error, message):
    with pytest.raises(error, match=message):
        edge_oracles["inside"].engine.execute(sql, "bank")


@pytest.mark.parametrize("sql", ROUNDING_QUERIES + DIVISION_QUERIES + MATH_QUERIES + TRIG_QUERIES + POWER_QUERIES)
def test_scalar_functions_across_parties_match_duckdb(oracle, sql):
    # POWER with a non-integer-constant exponent: relative 2^-14 (1 + |y| 2^-8), docs/architecture.md
    oracle.check(sql, "bank", rel_tol=2**-13 if sql in POWER_QUERIES else None)
    assert "SPU(" in oracle.engine.explain(sql, "bank")


@pytest.mark.parametrize("expression", ["FLOOR(o.amount * 10)", "ROUND(o.amount, 1)", "CEIL(o.amount * 10 - c.age)",
                                        "CAST(o.amount * 10 AS INTEGER)", "CAST(o.amount AS DECIMAL(8, 1))"])
def test_rounding_a_double_near_a_boundary_is_refused_not_guessed(oracle, expression):
    """Amounts with two decimals: 3.4 * 10 is 34 for DuckDB's double, 33.99998 for its 16-bit encoding, and
    x.x5 is a tie; the SPU cannot tell which way DuckDB rounds, so a counted such row refuses the query."""
    sql = f"SELECT o.order_id, {expression} AS r {JOINED} WHERE o.amount > c.age"
    assert "SPU(" in oracle.engine.explain(sql, "bank")
    with pytest.raises(DataError, match="rounding boundary"):
        oracle.engine.execute(sql, "bank")


def test_rounding_exact_ties_and_values_away_from_boundaries(oracle):
    """x.50 is a tie exactly (binary), computed; amounts + ages to 2 digits are far from any tie."""
    oracle.check(f"SELECT o.order_id, ROUND(o.amount) AS r, ROUND(o.amount + c.age, 2) AS s, "
                 f"CEIL(o.amount - c.age) AS c {JOINED} WHERE o.amount > c.age", "bank")


def test_division_by_a_decimal_constant_is_exact_on_the_encoding(oracle):
    """x / 40.0, x / 2.5, x / -0.3: the encoding divided exactly (X * d // n), |error| < 2^-16 (plus the
    dividend's encoding error divided by |c|) whatever c is; the reciprocal 1/40 at 16 bits was 2.4e-4 relative (EXP(age / 40.0) off by 1.4e-3)."""
    sql = (f"SELECT o.order_id, c.age / 40.0 AS a, o.amount / 2.5 AS b, (o.amount - c.age) / -0.3 AS n, "
           f"EXP(c.age / 40.0) AS e {JOINED} WHERE o.amount > c.age")
    assert "SPU(" in oracle.engine.explain(sql, "bank")
    got, want = (sorted(t.to_pylist(), key=lambda r: (r["order_id"], r["a"])) for t in
                 (oracle.engine.execute(sql, "bank").table, oracle.expected(sql, "bank")))
    assert len(got) == len(want) > 0
    for g, w in zip(got, want):
        # the floor's 2^-16, and the dividend's own encoding (2^-17) divided by |c|
        assert all(abs(g[col] - w[col]) <= 2 ** -16 * (1 + 1 / c) for col, c in (("a", 40), ("b", 2.5), ("n", 0.3))), (g, w)
        assert abs(g["e"] - w["e"]) <= 2 ** -14 * w["e"] + 2 ** -15 + w["e"] * 2 ** -15, (g, w)  # EXP's own error


@pytest.mark.parametrize("sql,name", ROUNDING_REFUSALS + DIVISION_REFUSALS + MATH_REFUSALS)
def test_functions_the_spu_cannot_do_are_refused_at_plan_time_naming_them(engine, sql, name):
    refused_by_the_spu(engine, sql, name)


def refused_by_the_spu(engine, sql: str, name: str) -> None:
    """The SPU's refusal names the function, at plan time: the query is refused, or — every column it
    reads being PLAINTEXT to the issuer, as in these federations — computed at the issuer, with that
    refusal as the plan's note (planner/gather.py; weaker grants keep it refused: tests/test_gather.py)."""
    try:
        plan = engine.plan(sql, "bank").physical
    except NotSupportedError as exc:
        assert name in str(exc)
        return
    assert plan.steps[-1].mode == "tables" and name in plan.notes[0]


# -- TIMESTAMP: microseconds since 1970 on the SPU ------------------------------------------------------

def moment(*parts) -> datetime.datetime | None:
    return datetime.datetime(*parts) if parts else None


def timestamp_tables() -> dict[str, dict[str, pa.Table]]:
    """Timestamps at the edges DuckDB holds exactly (year 1 and 9999, before 1970, fractions of a second,
    month ends, leap days) and NULLs, at three parties."""
    ids = pa.array([1, 2, 3, 4, 5, 6, 7, 8], pa.int64())
    at = [moment(1, 1, 1), moment(1969, 12, 31, 23, 59, 59, 999999), moment(1970, 1, 1), moment(2024, 1, 31, 10, 0),
          moment(2024, 2, 29, 23, 30, 15, 500000), moment(), moment(9999, 12, 31, 23, 59, 59, 999999),
          moment(1900, 3, 1, 0, 0, 1)]
    due = [moment(2000, 1, 1, 12), moment(1970, 1, 1, 0, 0, 0, 1), moment(1969, 12, 31, 22, 30), moment(2024, 3, 31),
           moment(2024, 2, 29, 23, 30, 15, 500000), moment(2020, 6, 15, 8), moment(9999, 12, 31), moment()]
    day = [datetime.date(2000, 1, 1), datetime.date(1969, 12, 31), None, datetime.date(2024, 2, 29),
           datetime.date(2024, 2, 29), datetime.date(1, 1, 1), datetime.date(9999, 12, 31), datetime.date(1900, 3, 1)]
    return {"bank": {"e": pa.table({"id": ids, "at": pa.array(at, pa.timestamp("us")), "day": pa.array(day)})},
            "shop": {"f": pa.table({"id": ids, "k": pa.array([1, 2, 3, 1, 2, 3, None, 1], pa.int64()),
                                    "due": pa.array(due, pa.timestamp("us"))})},
            "insurer": {"g": pa.table({"id": ids, "seen": pa.array(list(reversed(at)), pa.timestamp("us")),
                                       "zoned": pa.array(due, pa.timestamp("us", tz="UTC"))})}}


@pytest.fixture(scope="module")
def timestamp_oracle(tmp_path_factory, federation_writer, plaintext_grants, oracle_for):
    path = federation_writer(tmp_path_factory.mktemp("timestamps"), timestamp_tables(), plaintext_grants(PARTIES_3),
                             parties=PARTIES_3, min_group_size=0)
    with Engine(path, timeout=60) as engine:
        yield oracle_for(engine)


PARTIES_3 = ("bank", "shop", "insurer")
TS_JOIN = "FROM bank.e b JOIN shop.f s ON b.id = s.id"
TIMESTAMP_QUERIES = [
    f"SELECT b.id, b.at, s.due, b.at < s.due AS lt, b.at = s.due AS eq, s.due >= b.day AS gd {TS_JOIN} "
    f"WHERE b.id >= s.k",
    f"SELECT b.id {TS_JOIN} WHERE b.at > TIMESTAMP '1970-01-01 00:00:00' AND s.due <= '2024-03-31' AND b.id >= s.k",
    f"SELECT b.id, b.at + INTERVAL 90 MINUTE AS m, s.due - INTERVAL 1 SECOND AS s1, b.day + INTERVAL 1 HOUR AS dh, "
    f"INTERVAL 2 DAY + s.due AS d2, b.day + INTERVAL 3 DAY AS d3, s.due - INTERVAL 1 WEEK AS w {TS_JOIN} "
    f"WHERE b.id >= s.k AND b.id NOT IN (1, 7)",
    f"SELECT b.id, b.at + INTERVAL 1 MONTH AS m, s.due - INTERVAL 1 YEAR AS y, b.at - INTERVAL 13 MONTH AS p "
    f"{TS_JOIN} WHERE b.id >= s.k AND b.id NOT IN (1, 7)",
    f"SELECT b.id, YEAR(b.at) AS y, MONTH(b.at) AS m, DAY(b.at) AS d, HOUR(b.at) AS h, MINUTE(b.at) AS mi, "
    f"SECOND(b.at) AS sec, EXTRACT(HOUR FROM s.due) AS eh, EXTRACT(SECOND FROM s.due) AS es, "
    f"CAST(b.at AS DATE) AS cd, CAST(b.day AS TIMESTAMP) AS ct {TS_JOIN} WHERE b.id >= s.k",
    f"SELECT b.id, DATEDIFF('hour', b.at, s.due) AS h, date_diff('minute', b.at, s.due) AS mi, "
    f"DATEDIFF('second', s.due, b.at) AS sec, DATEDIFF('millisecond', b.at, s.due) AS ms, "
    f"DATEDIFF('microsecond', b.at, s.due) AS us, DATEDIFF('day', b.at, s.due) AS d, "
    f"DATEDIFF('month', b.at, s.due) AS mo, DATEDIFF('year', b.day, s.due) AS y, DATEDIFF('hour', b.day, s.due) AS dh "
    f"{TS_JOIN} WHERE b.id >= s.k AND b.id NOT IN (1, 7)",
    f"SELECT s.k, MIN(b.at) AS lo, MAX(s.due) AS hi, COUNT(b.at) AS n, COUNT(*) AS rows {TS_JOIN} "
    f"WHERE b.id >= s.k GROUP BY s.k",
    f"SELECT MIN(b.at) AS lo, MAX(b.at) AS hi {TS_JOIN} WHERE s.due IS NULL OR b.at < s.due",
    f"SELECT b.at, COUNT(*) AS n {TS_JOIN} WHERE b.id >= s.k GROUP BY b.at",
    f"SELECT b.id, b.at {TS_JOIN} WHERE b.id >= s.k ORDER BY b.at DESC, b.id LIMIT 4",
    f"SELECT b.id, g.seen {TS_JOIN} JOIN insurer.g g ON g.id = b.id WHERE g.seen BETWEEN b.at AND s.due "
    f"OR g.seen > s.due",
    # GREATEST / LEAST and conditionals over three parties: a date beside a timestamp taken at midnight
    f"SELECT b.id, GREATEST(b.at, s.due, g.seen) AS g, LEAST(b.at, g.seen, s.due) AS l, LEAST(b.day, s.due) AS d, "
    f"GREATEST(b.day, g.seen, TIMESTAMP '1970-01-01 00:00:00') AS t, GREATEST(s.k, b.id) AS k {TS_JOIN} "
    f"JOIN insurer.g g ON g.id = b.id WHERE b.id >= s.k",
    f"SELECT b.id, CASE WHEN b.id > s.k THEN b.day ELSE s.due END AS c, COALESCE(b.day, s.due) AS d, "
    f"COALESCE(b.at, '2024-01-01 10:00:00') AS t, IF(s.k = 1, b.day, g.seen) AS i {TS_JOIN} "
    f"JOIN insurer.g g ON g.id = b.id WHERE b.id >= s.k",
]


@pytest.mark.parametrize("sql", TIMESTAMP_QUERIES)
def test_timestamps_across_parties_match_duckdb(timestamp_oracle, sql):
    assert timestamp_oracle.engine.check(sql, "bank") is None
    assert "SPU(" in timestamp_oracle.engine.explain(sql, "bank")
    timestamp_oracle.check(sql)


def compared_grants(grants_for) -> str:
    """Join keys plain after the join, shop's k after GROUP BY, the timestamps only through comparisons:
    the planner must compute on shares (a secret program), not gather the rows at the issuer."""
    constraints = {"PLAINTEXT_AFTER_JOIN": {"bank": ("e.id",), "shop": ("f.id",), "insurer": ("g.id",)},
                   "PLAINTEXT_AFTER_GROUP_BY": {"shop": ("f.k",)},
                   "PLAINTEXT_AFTER_COMPARE": {"bank": ("e.at", "e.day"), "shop": ("f.due",), "insurer": ("g.seen",)}}
    return grants_for(*[(viewer, columns, constraint) for viewer in PARTIES_3 for constraint, owners in
                        constraints.items() if (columns := tuple(f"{owner}.{c}" for owner, names in owners.items()
                                                                 if owner != viewer for c in names))])


@pytest.fixture(scope="module")
def timestamp_program_oracle(tmp_path_factory, federation_writer, grants_for, oracle_for):
    path = federation_writer(tmp_path_factory.mktemp("timestamp_programs"), timestamp_tables(),
                             compared_grants(grants_for), parties=PARTIES_3, min_group_size=0)
    with Engine(path, timeout=60) as engine:
        yield oracle_for(engine)


TIMESTAMP_PROGRAMS = [  # shapes the spine does not take: the translation's secret programs
    f"SELECT t.lo, COUNT(*) AS n FROM (SELECT s.k, MIN(b.at + INTERVAL 1 MONTH) AS lo {TS_JOIN} "
    f"WHERE b.at < s.due OR s.due IS NULL GROUP BY s.k) t GROUP BY t.lo",
    f"SELECT t.k, MIN(t.at) AS lo, MAX(t.at) AS hi, COUNT(*) AS n FROM (SELECT s.k, b.at {TS_JOIN} "
    f"WHERE b.at < s.due - INTERVAL 1 SECOND) t GROUP BY t.k",
    f"SELECT t.h, COUNT(*) AS n FROM (SELECT HOUR(b.at) AS h, CAST(s.due AS DATE) AS d {TS_JOIN} "
    f"WHERE DATEDIFF('second', b.at, s.due) > 0 AND s.due > '1970-01-01') t GROUP BY t.h",
    # GREATEST / LEAST, the timestamps only compared (column control as for CASE WHEN a > b THEN a ELSE b END)
    f"SELECT t.k, COUNT(*) AS n, SUM(CASE WHEN t.g > TIMESTAMP '2000-01-01 00:00:00' THEN 1 ELSE 0 END) AS late "
    f"FROM (SELECT s.k, GREATEST(b.at, s.due) AS g, LEAST(b.day, s.due) AS l {TS_JOIN} "
    f"WHERE LEAST(b.at, s.due) < TIMESTAMP '2024-01-01 00:00:00') t WHERE t.l > DATE '1960-01-01' GROUP BY t.k",
]


@pytest.mark.parametrize("sql", TIMESTAMP_PROGRAMS)
def test_timestamps_in_secret_programs_match_duckdb(timestamp_program_oracle, sql):
    from sqlsecure.planner.physical import SecretQuery
    steps = timestamp_program_oracle.engine.plan(sql, "bank").physical.steps
    assert any(isinstance(step, SecretQuery) for step in steps)
    timestamp_program_oracle.check(sql)


@pytest.mark.parametrize("sql,name", [
    (f"SELECT s.due - b.at AS gap {TS_JOIN} WHERE b.id > s.k", "DATEDIFF"),
    (f"SELECT EXTRACT(DOW FROM b.at) {TS_JOIN} WHERE b.id > s.k", "DOW"),
    (f"SELECT DATEDIFF('week', b.at, s.due) {TS_JOIN} WHERE b.id > s.k", "WEEK"),
    (f"SELECT b.id {TS_JOIN} WHERE STRFTIME(GREATEST(b.at, s.due), '%Y') = '2024'", "DATE_FORMAT"),
    (f"SELECT b.id {TS_JOIN} WHERE CAST(b.at AS TIMESTAMPTZ) < s.due", "TIMESTAMPTZ"),
    (f"SELECT b.at + INTERVAL (s.k) HOUR {TS_JOIN}", "INTERVAL"),
    (f"SELECT DATE_SUB('month', b.at, s.due) {TS_JOIN} WHERE b.id > s.k", "DATE_SUB"),
])
def test_timestamp_functions_the_spu_cannot_do_are_refused_naming_them(timestamp_oracle, sql, name):
    refused_by_the_spu(timestamp_oracle.engine, sql, name)


def test_timestamptz_columns_are_refused_naming_the_time_zone(timestamp_oracle):
    sql = "SELECT b.id FROM bank.e b JOIN insurer.g g ON b.id = g.id WHERE g.zoned > b.at"
    refused_by_the_spu(timestamp_oracle.engine, sql, "TIME ZONE")


def test_elapsed_units_match_duckdb_date_sub(timestamp_oracle):
    """DATE_SUB (MySQL's TIMESTAMPDIFF): whole units, truncated toward zero, dates taken at midnight."""
    sql = (f"SELECT b.id, DATE_SUB('second', b.at, s.due) AS sec, DATE_SUB('hour', s.due, b.at) AS h, "
           f"DATE_SUB('day', b.at, s.due) AS d, DATE_SUB('week', b.day, s.due) AS w, "
           f"DATE_SUB('microsecond', b.at, s.due) AS us {TS_JOIN} WHERE b.id >= s.k AND b.id NOT IN (1, 7)")
    assert "SPU(" in timestamp_oracle.engine.explain(sql, "bank")
    timestamp_oracle.check(sql)


FAR = 2 ** 62  # microseconds: the SPU compares timestamps below it (146,000 years from 1970)


@pytest.fixture(scope="module")
def far_timestamps(tmp_path_factory, federation_writer, plaintext_grants):
    """Federations with a timestamp just inside the compared range and just outside it."""
    made = {}
    with contextlib.ExitStack() as stack:
        for name, far in (("inside", FAR - 1), ("outside", FAR)):
            tables = {"bank": {"e": pa.table({"id": pa.array([1, 2, 3], pa.int64()),
                                              "at": pa.array([far, -far, None], pa.int64()).cast(pa.timestamp("us"))})},
                      "shop": {"f": pa.table({"id": pa.array([1, 2, 3], pa.int64()), "k": pa.array([0, 0, 0]),
                                              "due": pa.array([0, 1, 2], pa.int64()).cast(pa.timestamp("us"))})}}
            path = federation_writer(tmp_path_factory.mktemp(name), tables, plaintext_grants(TWO), parties=TWO,
                                     min_group_size=0)
            made[name] = stack.enter_context(Engine(path, timeout=60))
        yield made


def test_timestamps_at_the_edge_of_the_compared_range(far_timestamps, oracle_for):
    sql = (f"SELECT b.id, b.at > s.due AS later, b.at < TIMESTAMP '2000-01-01' AS early {TS_JOIN} WHERE b.id > s.k "
           "ORDER BY b.at")  # (Python's datetime cannot show these timestamps: not selected)
    got = oracle_for(far_timestamps["inside"]).check(sql)
    assert got.column("later").to_pylist() == [False, True, None]
    with pytest.raises(DataError, match=r"column '\w+\.at' has values outside"):
        far_timestamps["outside"].execute(sql, "bank")


@pytest.mark.parametrize("nparties", PARTIES)
def test_timestamp_kernels_are_exact_over_the_compared_range(nparties):
    rng = np.random.default_rng(23)
    day = 86_400_000_000
    micros = np.array([0, 1, -1, day - 1, -day, -day + 1, FAR - 1, -FAR + 1, 3_600_000_000, -3_600_000_001]
                      + rng.integers(-FAR + 1, FAR, 30).tolist() + rng.integers(-10 * day, 10 * day, 30).tolist(),
                      dtype=np.int64)

    def program(s):
        x = share(s, micros, owner=nparties - 1)
        days, within = functions.split_timestamp(s, x)
        return arith.reveal_many(s, [days, *functions.time_of_day(s, within),
                                     functions.units_since_epoch(s, x, "MINUTE")])

    days, hour, minute, second, minutes = (to_signed(v) for v in run_spu(nparties, program).results[0])
    exact = [int(m) for m in micros]
    assert days.tolist() == [m // day for m in exact]
    assert hour.tolist() == [m % day // 3_600_000_000 for m in exact]
    assert minute.tolist() == [m % 3_600_000_000 // 60_000_000 for m in exact]
    assert second.tolist() == [m % 60_000_000 // 1_000_000 for m in exact]
    assert minutes.tolist() == [m // 60_000_000 for m in exact]


# -- division by zero: the federation dialect's rule -----------------------------------------------------

def divisor_tables() -> dict[str, dict[str, pa.Table]]:
    ids = pa.array([1, 2, 3, 4, 5, 6, 7], pa.int64())
    return {"bank": {"v": pa.table({"id": ids, "i": pa.array([7, -7, 9, None, 0, 2**26, -5], pa.int64()),
                                    "x": pa.array([2.5, -2.5, 0.0, 1.0, None, 1000.0, -0.125])})},
            "shop": {"w": pa.table({"id": ids, "z": pa.array([0, 2, -3, 0, 4, 0, None], pa.int64()),
                                    "y": pa.array([0.0, 0.5, -4.0, None, 0.0, 2.0, 0.0])})},
            "insurer": {"u": pa.table({"id": ids, "c": pa.array([0, 1, 0, 1, 0, 1, 0], pa.int64())})}}


@pytest.fixture(scope="module")
def mysql_divisions(tmp_path_factory, federation_writer, plaintext_grants, oracle_for):
    path = federation_writer(tmp_path_factory.mktemp("mysql_divisions"), divisor_tables(), plaintext_grants(PARTIES_3),
                             parties=PARTIES_3, min_group_size=0, dialect="mysql")
    with Engine(path, timeout=60) as engine:
        yield oracle_for(engine)


DIVISION_JOIN = "FROM bank.v b JOIN shop.w s ON b.id = s.id"
MYSQL_DIVISIONS = [  # (MySQL, the same in DuckDB with MySQL's NULL for a zero divisor written out)
    (f"SELECT b.id, b.x / s.y AS q, b.i DIV s.z AS d, b.i % s.z AS m, MOD(b.i, s.z) AS mo {DIVISION_JOIN} "
     f"WHERE b.id < 10",
     f"SELECT b.id, b.x / NULLIF(s.y, 0) AS q, b.i // NULLIF(s.z, 0) AS d, b.i % NULLIF(s.z, 0) AS m, "
     f"b.i % NULLIF(s.z, 0) AS mo {DIVISION_JOIN}"),
    (f"SELECT b.id, b.x / s.y AS q {DIVISION_JOIN} JOIN insurer.u u ON u.id = b.id "
     f"WHERE b.i DIV (s.z * u.c) IS NULL",
     f"SELECT b.id, b.x / NULLIF(s.y, 0) AS q {DIVISION_JOIN} JOIN insurer.u u ON u.id = b.id "
     f"WHERE b.i // NULLIF(s.z * u.c, 0) IS NULL"),
    (f"SELECT COUNT(b.i DIV s.z) AS n, SUM(b.i % s.z) AS total {DIVISION_JOIN} WHERE b.id < 10",
     f"SELECT COUNT(b.i // NULLIF(s.z, 0)) AS n, SUM(b.i % NULLIF(s.z, 0)) AS total {DIVISION_JOIN}"),
]


@pytest.mark.parametrize("mysql,duckdb_sql", MYSQL_DIVISIONS)
def test_mysql_division_by_a_secret_zero_is_null(mysql_divisions, mysql, duckdb_sql):
    """MySQL's `/`, DIV and MOD give NULL for a zero divisor (MariaDB agrees: tests/test_dialects.py); on shares
    the division's zero test clears the row's validity, with no refusal and nothing opened."""
    assert "SPU(" in mysql_divisions.engine.explain(mysql, "bank")
    got = mysql_divisions.engine.execute(mysql, "bank").table
    want = mysql_divisions.con.sql(duckdb_sql).to_arrow_table()
    assert same_multiset(got, want), (sorted_rows(got), sorted_rows(want))


def test_duckdb_division_by_a_secret_zero_is_refused(edge_oracles):
    """DuckDB gives ±infinity or NaN for `/` by 0 (no encoding) and an error for `//` and `%`: a DataError."""
    for operator in ("/", "//", "%"):
        with pytest.raises(DataError, match="divides by zero"):
            edge_oracles["inside"].engine.execute(f"SELECT b.id {operator} (s.k - 1) AS q {EDGE_JOIN} "
                                                  "WHERE b.id > s.k", "bank")


@pytest.fixture(scope="module")
def mysql_timestamps(tmp_path_factory, federation_writer, plaintext_grants, oracle_for):
    path = federation_writer(tmp_path_factory.mktemp("mysql_timestamps"), timestamp_tables(),
                             plaintext_grants(PARTIES_3), parties=PARTIES_3, min_group_size=0, dialect="mysql")
    with Engine(path, timeout=60) as engine:
        yield oracle_for(engine)


def test_mysql_timestampdiff_on_shares_counts_whole_units(mysql_timestamps):
    """TIMESTAMPDIFF counts whole units (MySQL; DuckDB's DATE_SUB), truncated toward zero."""
    mysql = (f"SELECT b.id, TIMESTAMPDIFF(SECOND, b.at, s.due) AS sec, TIMESTAMPDIFF(HOUR, s.due, b.at) AS h, "
             f"TIMESTAMPDIFF(DAY, b.at, s.due) AS d, TIMESTAMPDIFF(WEEK, b.day, s.due) AS w {TS_JOIN} "
             f"WHERE b.id >= s.k AND b.id NOT IN (1, 7)")
    duckdb_sql = (f"SELECT b.id, DATE_SUB('second', b.at, s.due), DATE_SUB('hour', s.due, b.at), "
                  f"DATE_SUB('day', b.at, s.due), DATE_SUB('week', CAST(b.day AS TIMESTAMP), s.due) {TS_JOIN} "
                  f"WHERE b.id >= s.k AND b.id NOT IN (1, 7)")
    assert "SPU(" in mysql_timestamps.engine.explain(mysql, "bank")
    got = mysql_timestamps.engine.execute(mysql, "bank").table
    want = mysql_timestamps.con.sql(duckdb_sql).to_arrow_table()
    assert same_multiset(got, want), (sorted_rows(got), sorted_rows(want))


@pytest.mark.parametrize("mysql,name", [
    (f"SELECT s.due - b.at {TS_JOIN} WHERE b.id > s.k", "MySQL's arithmetic on dates"),
    (f"SELECT TIMESTAMPDIFF(MONTH, b.at, s.due) {TS_JOIN} WHERE b.id > s.k", "not months or years"),
])
def test_mysql_datetime_arithmetic_the_spu_cannot_do_is_refused_naming_it(mysql_timestamps, mysql, name):
    refused_by_the_spu(mysql_timestamps.engine, mysql, name)


def test_a_null_output_opens_as_zero_not_as_what_its_expression_held(edge_oracles, monkeypatch):
    """NULLIF(s.k, b.id) is NULL where they are equal, and its limbs still held s.k there: the issuer's
    opened words of every NULL output are zero (`stage.nulls_zeroed`), on the stage and in secret programs."""
    from sqlsecure.executors.spu.session import SpuSession
    opened_to_issuer = []
    original = SpuSession.open_many

    def recording(self, arith=(), xor=(), bits=(), to=None):
        got = original(self, arith=arith, xor=xor, bits=bits, to=to)
        if to is not None and got:
            opened_to_issuer.append(got)
        return got

    monkeypatch.setattr(SpuSession, "open_many", recording)
    oracle = edge_oracles["inside"]
    sql = f"SELECT b.id, NULLIF(s.k, b.id) AS n {EDGE_JOIN}"
    assert "SPU(" in oracle.engine.explain(sql, "bank")
    got = oracle.engine.execute(sql, "bank").table
    assert same_multiset(got, oracle.con.sql(sql).to_arrow_table())
    (words,) = opened_to_issuer[-1:]
    id_limb, id_valid, n_limb, n_valid = words[:4]
    assert (n_valid == 0).sum() >= 3 and not n_limb[n_valid == 0].any()
