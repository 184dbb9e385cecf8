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
    f"ROUND(SUM(o.amount * c.age), 1) {JOINED} WHERE o.amount > c.age",
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
    f"SELECT b.id, ROUND(b.big, -1) AS r, ROUND(b.fx, 2) AS f, ROUND(b.dec, 1) AS d, FLOOR(b.dec) AS fl, "
    f"CEIL(b.dec) AS ce, ROUND(b.dec, -2) AS h {EDGE_JOIN} WHERE b.id > s.k",
    f"SELECT s.k, ROUND(SUM(b.dec), 1) AS d, FLOOR(MIN(b.fx)) AS f {EDGE_JOIN} WHERE b.id > s.k GROUP BY s.k",
])
def test_rounding_at_the_range_edge_and_on_nulls_matches_duckdb(edge_oracles, sql):
    on_spu = edge_oracles["inside"]
    assert "SPU(" in on_spu.engine.explain(sql, "bank")
    on_spu.check(sql)


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
    f"CAST(b.fx AS DECIMAL(18, 2)) AS fd, CAST(s.k AS DOUBLE) / 4 AS kq {EDGE_JOIN} WHERE b.id >= s.k",
    f"SELECT YEAR(b.day) AS y, COUNT(*) AS n, SUM(DATEDIFF('day', b.day, s.due)) AS total {EDGE_JOIN} "
    f"WHERE b.id >= s.k GROUP BY YEAR(b.day)",
]


@pytest.mark.parametrize("sql", DATE_AND_CAST_QUERIES)
def test_dates_and_casts_across_parties_match_duckdb(edge_oracles, sql):
    inside = edge_oracles["inside"]
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


@pytest.mark.parametrize("sql,name", [
    (f"SELECT b.day + INTERVAL 1 MONTH > s.due {EDGE_JOIN}", "INTERVAL"),
    (f"SELECT EXTRACT(DOW FROM b.day) {EDGE_JOIN} WHERE b.id > s.k", "DOW"),
    (f"SELECT DATEDIFF('hour', b.day, s.due) {EDGE_JOIN}", "HOUR"),
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
    (f"SELECT POWER(o.amount, 0.5) {JOINED} WHERE o.amount > c.age", "POWER"),
    (f"SELECT POWER(o.amount, c.age) {JOINED}", "POWER"),
    (f"SELECT LOG(c.age, o.amount) {JOINED}", "LOG"),
    (f"SELECT SIN(o.amount * c.age) {JOINED}", "SIN"),
]


@pytest.mark.parametrize("sql", ROUNDING_QUERIES + DIVISION_QUERIES + MATH_QUERIES)
def test_scalar_functions_across_parties_match_duckdb(oracle, sql):
    oracle.check(sql, "bank")
    assert "SPU(" in oracle.engine.explain(sql, "bank")


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
