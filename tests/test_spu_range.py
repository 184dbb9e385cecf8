"""The SPU's exact range (executors/spu/ranges.py, values.py): just inside every edge the answer is the
oracle's, just outside it is a DataError raised by the owner before any share; NaN and infinities are
refused on the SPU and in the enclave; aggregates over no rows are SQL's NULL / 0 on every device."""

import dataclasses
import datetime
import math
import re

import numpy as np
import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp

from sqlsecure.engine import Engine
from sqlsecure.errors import DataError
from sqlsecure.executors.spu import arith
from sqlsecure.executors.spu.local import run_spu
from sqlsecure.executors.spu.ranges import Limit, RangePlan, literal_value
from sqlsecure.executors.spu.values import encode
from sqlsecure.executors.tee import create_authority, expected_measurement

IDS = [1, 2, 3, 4, 5, 6]
INSIDE = 2 ** 62 - 1  # compared, MIN/MAX: |x| < 2^62
FIXED_INSIDE = 2.0 ** 46 - 2.0 ** -6  # DECIMAL/DOUBLE compared: |x| < 2^46 (the largest double below)
BIGINT_MAX = 2 ** 63 - 1


def _table(**columns) -> pa.Table:
    return pa.table({"id": pa.array(IDS, pa.int64()), **columns})


def range_tables() -> dict[str, dict[str, pa.Table]]:
    edge = [INSIDE, -INSIDE, 5, -5, 0, 7]  # just inside the comparison range
    wide = [BIGINT_MAX, -BIGINT_MAX, 2 ** 62, -(2 ** 62), 1, 0]  # just outside it (and 2^63 apart)
    bank = {
        "edge": _table(big=pa.array(edge, pa.int64()), age=pa.array([30, 40, 50, 60, 20, 10], pa.int64()),
                       score=pa.array([1.5, 2.5, -3.0, 4.0, 0.0, 1.0]),
                       fx=pa.array([FIXED_INSIDE, -FIXED_INSIDE, 0.5, -0.25, 1e-3, 7.0]),
                       day=pa.array([datetime.date(1, 1, 1), datetime.date(9999, 12, 31)] * 3),
                       word=pa.array(["a" * 28, "é" * 14, "c", "", "e", "f"])),
        "wide": _table(big=pa.array(wide, pa.int64()), fx=pa.array([2.0 ** 46, 1.0, -1.0, 0.0, 2.0, 3.0]),
                       day=pa.array([datetime.date(1, 1, 1), datetime.date(9999, 12, 31)] * 3),
                       word=pa.array(["a" * 28, "b" * 1025, "c", "d", "e", "f"])),
        "none": pa.table({"id": pa.array([101, 102, 103, 104, 105, 106], pa.int64()), "x": pa.array([1.0] * 6)}),
    }
    shop = {
        "edge": _table(big=pa.array(list(reversed(edge)), pa.int64()), qty=pa.array([1, 0, 2, 0, 3, 1], pa.int64()),
                       amount=pa.array([3.0e6, -2.5e6, 8.0e6, 1.0, 0.5, -7.25]),
                       region=pa.array(["n", "s", "n", "s", "n", "s"])),
        "wide": _table(big=pa.array(list(reversed(wide)), pa.int64())),
        "special": _table(f_nan=pa.array([1.0, float("nan"), 2.0, 3.0, 4.0, 5.0]),
                          f_inf=pa.array([1.0, 2.0, float("inf"), 3.0, 4.0, 5.0]),
                          f_ninf=pa.array([1.0, 2.0, 3.0, float("-inf"), 4.0, 5.0]),
                          f_huge=pa.array([1.0, 2.0, 3.0, 4.0, 1e308, 5.0]),
                          f_ok=pa.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
                          g=pa.array(["a", "a", "b", "b", "a", "b"])),
        "none": _table(y=pa.array([2.0] * 6)),
    }
    insurer = {"wide": _table(big=pa.array([1, 2, 3, 2 ** 62, 5, 6], pa.int64())),
               # products |x * y| < 2^46 need |x|, |y| < 2^23 (8.4e6): f inside, f_out not
               "edge": _table(f=pa.array([2.0e6, 1.0e6, -4.0e6, 0.25, 3.0, 8.0e6]),
                              f_out=pa.array([2.0e6, 1.0e6, -4.0e6, 0.25, 3.0, 9.0e6]),
                              cat=pa.array(["x", "y", "x", "y", "x", "y"]))}
    return {"bank": bank, "shop": shop, "insurer": insurer}


def unique_ids() -> str:
    """Every table's `id` declared unique: its joins are PK-FK, so a stage's rows are bounded at plan time
    and the range refusals of published magnitude classes come from the planner (planner/magnitudes.py)."""
    return "\n".join(f"[parties.{party}.unique]\n" + "\n".join(f'{name} = [["id"]]' for name in tables) + "\n"
                     for party, tables in range_tables().items())


def _range_oracle(directory, federation_writer, plaintext_grants, oracle_for, extra: str = ""):
    path = federation_writer(directory, range_tables(), unique_ids() + plaintext_grants() + extra, min_group_size=0,
                             group_sums="spu")
    return Engine(path, timeout=60)


@pytest.fixture(scope="module")
def range_oracle(tmp_path_factory, federation_writer, plaintext_grants, oracle_for):
    """No enclave: the cost model would send row-wise expressions there, and these cases are the SPU's."""
    with _range_oracle(tmp_path_factory.mktemp("ranges"), federation_writer, plaintext_grants, oracle_for) as engine:
        yield oracle_for(engine)


@pytest.fixture(scope="module")
def enclave_range_oracle(tmp_path_factory, federation_writer, plaintext_grants, oracle_for):
    """An enclave the parties trust, for the TEEU cases."""
    directory = tmp_path_factory.mktemp("ranges_tee")
    create_authority(directory / "authority.key")
    enclave = f'\n[enclave]\nauthority = "authority.key"\nmeasurements = ["{expected_measurement().hex()}"]\n'
    with _range_oracle(directory, federation_writer, plaintext_grants, oracle_for, enclave) as engine:
        yield oracle_for(engine)


def on_spu(oracle, sql: str) -> None:
    assert "SPU(" in oracle.engine.explain(sql, "bank"), sql


JOIN = "FROM bank.edge b JOIN shop.edge s ON b.id = s.id"
JOIN_WIDE = "FROM bank.wide b JOIN shop.wide s ON b.id = s.id"
UNION = "FROM (SELECT big FROM bank.{t} UNION ALL SELECT big FROM shop.{t}) u"

INSIDE_QUERIES = [
    f"SELECT b.id, b.big > s.big AS gt, b.big = s.big AS eq, s.big < b.big AS lt {JOIN}",  # 2^63 - 2 apart
    f"SELECT b.id {JOIN} WHERE b.big >= s.big",
    f"SELECT b.id, b.big + s.big AS total, b.big - s.big AS diff {JOIN} WHERE b.id > 4",  # 2^62 + 6, revealed
    f"SELECT MIN(big), MAX(big), COUNT(*) {UNION.format(t='edge')}",
    f"SELECT b.id, b.age * s.qty * 1000000000 > 5 AS c {JOIN}",
    "SELECT s.id, s.amount * i.f AS p FROM shop.edge s JOIN insurer.edge i ON s.id = i.id",  # 6.4e13 > 2^30
    f"SELECT b.id, b.score * s.amount > 1000000 AS c {JOIN}",
    f"SELECT b.id, b.fx > s.amount AS gt, b.fx + s.qty AS x, b.day, b.word, "
    f"b.word < s.region AS before {JOIN}",
    f"SELECT MIN(b.fx), MAX(b.fx), MIN(b.day), MAX(b.day), SUM(b.age * s.qty) {JOIN}",
    f"SELECT s.region, MIN(b.big), MAX(b.big), MIN(b.fx), MAX(b.fx), SUM(b.age * s.qty) {JOIN} GROUP BY s.region",
    f"SELECT SUM(s.qty * b.age), AVG(s.amount + b.score), MIN(s.amount - b.score), MAX(b.score * 2 + s.qty) {JOIN}",
]


@pytest.mark.parametrize("sql", INSIDE_QUERIES)
def test_values_just_inside_the_range_are_exact(range_oracle, sql):
    on_spu(range_oracle, sql)
    range_oracle.check(sql)


def test_the_edges_reach_the_spu_exactly(range_oracle):
    got = range_oracle.check(f"SELECT MIN(big) AS lo, MAX(big) AS hi {UNION.format(t='edge')}")
    assert got.to_pylist() == [{"lo": -INSIDE, "hi": INSIDE}]


OUTSIDE_QUERIES = [  # (query, the column the error names)
    (f"SELECT b.id {JOIN_WIDE} WHERE b.big > s.big", "big"),  # 2^63 apart: beyond the comparison range
    (f"SELECT MIN(big), MAX(big) {UNION.format(t='wide')}", "big"),  # ±(2^63 - 1): returned ∓2^60
    (f"SELECT AVG(big) {UNION.format(t='edge')}", "big"),  # ~4.6e18: returned 0 or ±1
    (f"SELECT SUM(big) {UNION.format(t='edge')}", "big"),  # a sum that could leave 64 bits
    (f"SELECT b.id {JOIN} WHERE s.qty * 9223372036854775807 > b.age", "qty"),  # DuckDB raises
    (f"SELECT b.id {JOIN} WHERE s.amount * 1e20 > b.score", "constant 1e20"),  # a DOUBLE literal beyond 2^47
    (f"SELECT b.big * s.big {JOIN}", "big"),  # an integer product beyond 64 bits
    (f"SELECT b.big + s.big {JOIN_WIDE}", "big"),  # 2^63 - 1 + 1: DuckDB raises an overflow
    ("SELECT b.fx > s.amount FROM bank.wide b JOIN shop.edge s ON b.id = s.id", "fx"),  # 2^46: DOUBLE's edge
    ("SELECT b.word < s.region FROM bank.wide b JOIN shop.edge s ON b.id = s.id", "word"),  # 1025 bytes: beyond the widest text class
    ("SELECT s.amount * i.f_out FROM shop.edge s JOIN insurer.edge i ON s.id = i.id", "f_out"),  # 9e6 > 2^23
]


PROVEN_AT_RUN_TIME = ("b.word",)  # text: no published class


@pytest.mark.parametrize("sql,column", OUTSIDE_QUERIES)
def test_values_just_outside_the_range_are_refused(range_oracle, sql, column):
    """By `check` too (planner/magnitudes.py: the owners' published magnitude classes, UNION ALL branches
    included), except where a stage's inputs have no class (text widths): there by the owner, before any share."""
    outside = rf"column '\w+\.{column}' has (values outside .*\|\w+\.{column}\| <|text longer)"
    if column.startswith("constant"):  # a constant is refused when the query is planned
        outside = rf"the {column} has no fixed-point encoding"
    if any(part in sql for part in PROVEN_AT_RUN_TIME):
        on_spu(range_oracle, sql)
    else:
        assert re.search(outside, range_oracle.engine.check(sql, "bank") or ""), sql
    with pytest.raises(DataError, match=outside):
        range_oracle.engine.execute(sql, "bank")


def test_an_avg_beyond_the_division_range_names_itself(range_oracle):
    sql = f"SELECT AVG(s.amount * 100 + b.score) AS a {JOIN}"  # sum 1.7e9 >= 2^29, every term inside
    with pytest.raises(DataError, match=r"a sum of AVG\(.*s\.amount.*\) exceeds .*\|sum\| < 5.36871e\+08"):
        range_oracle.engine.execute(sql, "bank")
    range_oracle.check(sql.replace("* 100", "* 10"))  # 1.7e8: exact


@pytest.mark.parametrize("constant", ["99999999999999999999", "1.5e300"])
def test_constants_beyond_the_ring_are_refused_wherever_they_stand(range_oracle, constant):
    sql = f"SELECT COUNT(b.score + s.qty + {constant}) AS n {JOIN}"  # COUNT never bounds its argument
    for run in (range_oracle.engine.plan, range_oracle.engine.execute):  # refused at plan time: check agrees
        with pytest.raises(DataError, match=r"the constant .* (is beyond|has no fixed-point)"):
            run(sql, "bank")


def test_one_owner_of_three_refuses_and_the_others_stop(range_oracle, monkeypatch):
    """At run time: the catalog without magnitude classes (with them the planner refuses it, as above)."""
    monkeypatch.setattr(range_oracle.engine, "catalog", dataclasses.replace(range_oracle.engine.catalog, magnitudes=None))
    sql = ("SELECT MIN(big), MAX(big) FROM (SELECT big FROM bank.edge UNION ALL SELECT big FROM shop.edge "
           "UNION ALL SELECT big FROM insurer.{t}) u")
    on_spu(range_oracle, sql.format(t="wide"))
    with pytest.raises(DataError, match=r"column 'u\.big' has values outside .*\|u\.big\| < 4.61169e\+18"):
        range_oracle.engine.execute(sql.format(t="wide"), "bank")
    range_oracle.check(sql.format(t="wide WHERE big < 100"))


def test_a_sum_just_inside_64_bits_is_exact(range_oracle):
    sql = f"SELECT SUM(b.big) AS s {JOIN} WHERE b.id > 2"  # the limit is per stage row: 2^63 / 6
    range_oracle.check(sql)


SPECIAL = [  # (expression over shop.special s joined with bank.edge b, column, value class)
    ("SELECT s.f_nan + b.score {join}", "f_nan", "NaN"),
    ("SELECT b.id {join} WHERE s.f_inf > b.score", "f_inf", "infinite"),
    ("SELECT b.id {join} WHERE s.f_ninf < b.score", "f_ninf", "infinite"),
    ("SELECT s.f_huge + b.score {join}", "f_huge", "values outside the SPU's exact range"),
    ("SELECT s.f_nan, SUM(b.score) FROM shop.special s JOIN bank.edge b ON b.id = s.id GROUP BY s.f_nan",
     "f_nan", "NaN"),
    ("SELECT s.f_inf, SUM(b.age) FROM shop.special s JOIN bank.edge b ON b.id = s.id GROUP BY s.f_inf",
     "f_inf", "infinite"),
]


@pytest.mark.parametrize("sql,column,what", SPECIAL)
def test_special_floats_are_refused_by_their_owner(range_oracle, sql, column, what):
    sql = sql.format(join="FROM shop.special s JOIN bank.edge b ON b.id = s.id")
    with pytest.raises(DataError, match=rf"column 's\.{column}' has {what}"):
        range_oracle.engine.execute(sql, "bank")


def test_special_floats_are_refused_by_the_enclave_path(enclave_range_oracle):
    range_oracle = enclave_range_oracle
    sql = ("SELECT s.g, i.cat, COUNT(*), SUM(s.f_nan) FROM shop.special s JOIN insurer.edge i ON s.id = i.id "
           "GROUP BY s.g, i.cat")
    assert "TEEU(" in range_oracle.engine.explain(sql, "bank")
    with pytest.raises(DataError, match="column .*f_nan.* has NaN"):
        range_oracle.engine.execute(sql, "bank")
    range_oracle.check(sql.replace("f_nan", "f_ok"))


def test_finite_floats_still_go_through(range_oracle):
    range_oracle.check("SELECT s.f_ok + b.score AS x FROM shop.special s JOIN bank.edge b ON b.id = s.id "
                       "WHERE s.f_ok > b.score")


EMPTY = ("COUNT(*) AS n, COUNT(s.y + b.x) AS c, SUM(s.y * b.x) AS s, AVG(s.y - b.x) AS a, MIN(s.y + b.x) AS lo, "
         "MAX(b.x - s.y) AS hi")


@pytest.mark.parametrize("sql", [
    f"SELECT {EMPTY} FROM bank.none b JOIN shop.none s ON b.id = s.id",  # PSI, then the SPU on no rows
    f"SELECT {EMPTY} FROM bank.none b JOIN shop.none s ON b.id = s.id WHERE s.y > b.x",
    f"SELECT {EMPTY.replace('s.y', 's.amount')} FROM bank.none b JOIN shop.edge s ON b.id = s.id",
    f"SELECT COUNT(*), SUM(big), AVG(big), MIN(big), MAX(big) FROM (SELECT big FROM bank.edge WHERE big > 10 "
    "AND big < 0 UNION ALL SELECT big FROM shop.edge WHERE big > 10 AND big < 0) u",
])
def test_aggregates_over_no_rows_on_the_spu(range_oracle, sql):
    on_spu(range_oracle, sql)
    got = range_oracle.check(sql)
    assert got.num_rows == 1 and got.column(0).to_pylist() == [0]


@pytest.mark.parametrize("device,sql", [
    ("SPU(", f"SELECT s.y, {EMPTY} FROM bank.none b JOIN shop.none s ON b.id = s.id GROUP BY s.y"),
    ("TEEU(", "SELECT b.x, s.y, COUNT(*), SUM(s.y), AVG(b.x), MIN(s.y), MAX(b.x) FROM bank.none b "
              "JOIN shop.none s ON b.id = s.id GROUP BY b.x, s.y"),
])
def test_grouped_aggregates_over_no_rows(request, device, sql):
    range_oracle = request.getfixturevalue("enclave_range_oracle" if device == "TEEU(" else "range_oracle")
    assert device in range_oracle.engine.explain(sql, "bank")
    assert range_oracle.check(sql).num_rows == 0


def test_he_group_sums_over_no_rows(tmp_path, federation_writer, plaintext_grants, oracle_for):
    path = federation_writer(tmp_path, range_tables(), plaintext_grants(), min_group_size=0, group_sums="he")
    sql = "SELECT b.x, COUNT(*), SUM(s.y), AVG(s.y), COUNT(s.y) FROM bank.none b JOIN shop.none s " \
          "ON b.id = s.id GROUP BY b.x"
    with Engine(path, timeout=60) as engine:
        assert "HEU" in engine.explain(sql, "bank")
        assert oracle_for(engine).check(sql).num_rows == 0


# -- the analysis and the primitives, against plaintext references ------------------------------------

def test_literals_keep_every_digit():
    assert literal_value(exp.Literal.number("9223372036854775807")) == 2 ** 63 - 1
    assert literal_value(exp.Literal.number("1e20")) == 10 ** 20
    assert literal_value(exp.Literal.number("2.5")) == 2.5


def test_limits_follow_the_operations():
    def limits(sql: str, rows: int = 4) -> dict[str, float]:
        plan = RangePlan({"a": "int", "b": "int", "x": "fixed", "y": "fixed"}, 16, rows)
        plan.need(sqlglot.parse_one(sql), 2.0 ** 63, "the result")
        return {c: v.value for c, v in plan.limits.items()}

    assert limits("a > b")["a"] == 2.0 ** 62
    assert limits("SUM(a)", rows=8)["a"] == 2.0 ** 60
    assert limits("a * 4 > b")["a"] == 2.0 ** 60
    assert limits("x * y")["x"] == limits("x * y")["y"] == 2.0 ** 23
    assert limits("x * 0.5")["x"] == 2.0 ** 31  # one truncation of the 2F-bit product: |x * 0.5| < 2^30
    assert limits("MIN(x)")["x"] == 2.0 ** 46


def test_the_owner_checks_its_values_before_encoding():
    compared = Limit(2.0 ** 46, "x > y compares")
    encode(pa.chunked_array([pa.array([1.0, -2.0 ** 46 + 1])]), "fixed", 16, compared, "x")
    with pytest.raises(DataError, match=r"column 'x'.*\|x\| < 7.03687e\+13 \(x > y compares\)"):
        encode(pa.chunked_array([pa.array([2.0 ** 46])]), "fixed", 16, compared, "x")
    with pytest.raises(DataError, match="column 'x' has NaN"):
        encode(pa.chunked_array([pa.array([math.nan, None])]), "fixed", 16, None, "x")
    with pytest.raises(DataError, match="column 'x' has infinite"):
        encode(pa.chunked_array([pa.array([-math.inf])]), "fixed", 16, None, "x")
    encode(pa.chunked_array([pa.array([2 ** 62 - 1], pa.int64())]), "int", 16, Limit(2.0 ** 62, "compared"), "n")
    with pytest.raises(DataError, match=r"column 'n'.*\|n\| < 4.61169e\+18"):
        encode(pa.chunked_array([pa.array([-(2 ** 62)], pa.int64())]), "int", 16, Limit(2.0 ** 62, "compared"), "n")


@pytest.mark.parametrize("nparties", [2, 3])
def test_mul_wide_matches_the_plaintext_product(nparties):
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.uniform(-2 ** 23, 2 ** 23, 60), [2 ** 23 - 1, -(2 ** 23 - 1), 0.0, 1.5]])
    y = np.concatenate([rng.uniform(-2 ** 23, 2 ** 23, 60), [2 ** 23 - 1, 2 ** 23 - 1, 5.0, -2.25]])

    def program(s):
        a = arith.share_fixed(s, 0, x if s.index == 0 else None, x.shape)
        b = arith.share_fixed(s, nparties - 1, y if s.index == nparties - 1 else None, y.shape)
        return arith.reveal(s, arith.mul_wide(s, a, b), to=0)

    run = run_spu(nparties, program)
    got = run.results[0].view(np.int64) / 2.0 ** 16
    assert np.allclose(got, x * y, rtol=0, atol=3 * 2.0 ** -16 * (1 + np.abs(x) + np.abs(y)))
    assert run.rounds == 4  # split, three products, one truncation, reveal


def test_constants_beyond_fixed_point_are_refused_at_plan_time():
    plan = RangePlan({"x": "fixed"}, 16, 4)
    with pytest.raises(DataError, match="the constant 1.5e\\+300 .* no fixed-point encoding"):
        plan.need(sqlglot.parse_one("x * 1.5e300"), 2.0 ** 47, "the result")
    with pytest.raises(DataError, match="the constant 4611686018427387904 is beyond"):
        plan.need(sqlglot.parse_one("x > 4611686018427387904"), 2.0, "a filter")


def test_the_cheaper_product_only_where_the_limits_prove_it():
    narrow = 2.0 ** (62 - 32)
    for rows, proven in ((6, False), (1 << 20, True)):
        plan = RangePlan({"x": "fixed", "y": "fixed"}, 16, rows)
        plan.need(sqlglot.parse_one("SUM(x * y)"), 2.0 ** 47, "the result")
        assert (plan.info(sqlglot.parse_one("x * y"))[1] <= narrow) is proven
