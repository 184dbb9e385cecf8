"""Rounding an approximate value on the SPU (executors/spu/approximation.py, `Stage._refuse_near_a_boundary`):
a value within its error bound of a rounding boundary refuses the query with DataError; one outside
it is rounded as DuckDB rounds it. Each case has a row just inside the band (a quotient, root, logarithm,
exponential, power or sine that DuckDB's double puts on or within 10^-6 of a boundary) and a row well
outside it, in two federations that differ only in that row."""

import contextlib
import math

import numpy as np
import pyarrow as pa
import pytest
import sqlglot

from sqlsecure.engine import Engine
from sqlsecure.errors import DataError, NotSupportedError
from sqlsecure.executors.spu import approximation, arith
from sqlsecure.executors.spu.local import run_spu
from sqlsecure.executors.spu.shares import ArithShare, decode_fixed, to_signed
from sqlsecure.executors.spu.stage import SV, Stage
from tests.conftest import same_multiset, sorted_rows
from tests.test_enclave_dialect_functions import rewritten_in_duckdb
from tests.test_spu_functions import F, share

TWO = ("bank", "shop")
JOIN = "FROM bank.v b JOIN shop.w s ON b.id = s.id"

# column -> (just inside the band, just outside it (a few times the stated accuracy, doubles only), well
# outside it, then two ordinary rows far from every boundary)
BANK = {"qx": (4.01 + 2e-6, 4.01 + 2e-3, 4.016, 1.3, 2.6), "sq": (10, 10, 10, 1, 2),
        "ex": (math.log(20.0), math.log(20.0) + 2e-4, 1.0, 1.3, 2.6), "ln": (1, 1, 1, 1, 2),
        "sn": (math.pi / 6, math.pi / 6 + 1e-4, 0.3, 1.3, 2.6), "cn": (5, 7, 7, 1, 2), "dn": (1, 1, 1, 1, 2)}
SHOP = {"qy": (2, 2, 2, 3, 7), "sq": (6, 7, 7, 2, 5), "ln": (1, 3, 3, 2, 5), "pw": (9, 10, 10, 2, 5),
        "cy": (2, 3, 3, 3, 7), "dy": (4, 3, 3, 3, 7),
        "sd": (2.0, 2.0, 2.0, 3.0, 7.0)}
BANDS = ("inside", "near", "outside")
DOUBLES = {"qx", "ex", "sn", "sd"}

CASES = [  # (expression, what it approximates)
    "ROUND(b.qx / s.qy, 2)",  # a quotient by a secret: 2.005 + 10^-6
    "ROUND(b.qx / s.sd, 2)",  # the same by a DOUBLE: its encoding's error divided by |y| too
    "FLOOR(SQRT(b.sq + s.sq))",  # SQRT(16) = 4 exactly for DuckDB
    "FLOOR(SQRT(b.sq + s.sq) * 2 + 1)",  # composed through * and + with constants: 9
    "CEIL(EXP(b.ex))",  # EXP(LN(20)) = 20.000000000000004
    "FLOOR(LN(b.ln * s.ln))",  # LN(1) = 0
    "CEIL(POWER(s.pw, 0.5))",  # POWER(9, 0.5) = 3
    "FLOOR(SIN(b.sn) * 10)",  # SIN(pi / 6) * 10 = 4.999999999999999
    "CAST(b.cn / s.cy AS INTEGER)",  # 5 / 2 = 2.5: a tie, to even
    "CAST(b.dn / s.dy AS DECIMAL(10, 1))",  # 1 / 4 = 0.25: a tie at one digit
]


def band_tables(band: str, bank_columns=BANK, shop_columns=SHOP, doubles=DOUBLES) -> dict[str, dict[str, pa.Table]]:
    """Three rows: the case's row (inside the band, just outside or well outside it) and two ordinary ones."""
    pick = BANDS.index(band)

    def column(name, values):
        return pa.array([values[pick], *values[3:]], pa.float64() if name in doubles else pa.int64())

    ids = pa.array([1, 2, 3], pa.int64())
    bank = pa.table({"id": ids, **{name: column(name, values) for name, values in bank_columns.items()}})
    shop = pa.table({"id": ids, **{name: column(name, values) for name, values in shop_columns.items()}})
    return {"bank": {"v": bank}, "shop": {"w": shop}}


@contextlib.contextmanager
def band_federations(tmp_path_factory, federation_writer, grants: str, oracle_for, tables=band_tables):
    """An oracle per band over `tables(band)`, both parties' columns under `grants`."""
    made = {}
    with contextlib.ExitStack() as stack:
        for name in BANDS:
            path = federation_writer(tmp_path_factory.mktemp(name), tables(name), grants, parties=TWO, min_group_size=0)
            made[name] = oracle_for(stack.enter_context(Engine(path, timeout=60)))
        yield made


@pytest.fixture(scope="module")
def band_oracles(tmp_path_factory, federation_writer, plaintext_grants, oracle_for):
    with band_federations(tmp_path_factory, federation_writer, plaintext_grants(TWO), oracle_for) as made:
        yield made


def query(expression: str) -> str:
    return f"SELECT b.id, {expression} AS r {JOIN} WHERE b.id > s.id - 1"


@pytest.mark.parametrize("expression", CASES)
def test_an_approximate_value_within_its_error_of_a_boundary_is_refused(band_oracles, expression):
    engine = band_oracles["inside"].engine
    assert "SPU(" in engine.explain(query(expression), "bank")
    with pytest.raises(DataError, match="rounding boundary"):
        engine.execute(query(expression), "bank")


@pytest.mark.parametrize("band", ["near", "outside"])
@pytest.mark.parametrize("expression", CASES)
def test_an_approximate_value_outside_its_error_band_rounds_as_duckdb(band_oracles, expression, band):
    band_oracles[band].check(query(expression), "bank")


def test_an_exact_value_on_a_boundary_is_still_computed(band_oracles):
    """Integers and DOUBLE ties exact in binary keep today's guard: 1.5 and 2.75 round as DuckDB's."""
    band_oracles["inside"].check(query("ROUND(b.sq + s.sq, -1) + ROUND(b.qx * 0 + 2.5) + FLOOR(b.cn / 1)"), "bank")


@pytest.fixture(scope="module")
def aggregate_only(tmp_path_factory, federation_writer, grants_for):
    """The same data, shop's columns revealed to bank only after aggregation: nothing is gathered at bank."""
    grants = grants_for(("bank", ("shop.w.id",), "PLAINTEXT_AFTER_JOIN"),
                        ("bank", tuple(f"shop.w.{name}" for name in SHOP), "PLAINTEXT_AFTER_AGGREGATE"))
    path = federation_writer(tmp_path_factory.mktemp("aggregate_only"), band_tables("outside"), grants,
                             parties=TWO, min_group_size=0)
    with Engine(path, timeout=60) as engine:
        yield engine


@pytest.mark.parametrize("sql,named", [
    (f"SELECT ROUND(SUM(b.qx / s.qy), 2) {JOIN}", "SUM"),
    # a SUM of DOUBLEs errs by its rows' summed encoding errors (n 2^-17), a bound the next step lacks
    (f"SELECT ROUND(SUM(b.qx + s.qy), 1) AS r {JOIN}", "SUM"),
    (f"SELECT FLOOR(AVG(SQRT(b.sq + s.sq))) {JOIN}", "AVG"),
    (f"SELECT SUM(CAST(ASIN(b.qx / s.qy) * 10 AS INTEGER)) {JOIN}", "ASIN"),
    (f"SELECT SUM(FLOOR(POWER(b.qx, s.qy * 0.5))) {JOIN}", "POWER"),
    (f"SELECT SUM(CAST(ATAN2(b.qx, s.qy) AS DECIMAL(10, 2))) {JOIN}", "ATAN2"),
    (f"SELECT SUM(ROUND(q, 2)) FROM (SELECT b.qx / s.qy AS q {JOIN}) t", "b.qx"),  # from a subquery: no bound
    (f"SELECT MAX(FLOOR(r)) FROM (SELECT SQRT(b.sq + s.sq) * 2 AS r {JOIN}) t", "SQRT"),
    # a secret program's aggregate step sums its rows' magnified errors and leaves them behind (issue 17)
    (f"SELECT ROUND(SUM(b.qx * s.qy), 1) AS r {JOIN}", "SUM"),
])
def test_rounding_a_value_without_an_error_bound_is_refused_at_plan_time(aggregate_only, assert_refused, sql, named):
    refusal = assert_refused(aggregate_only, sql, "bank", NotSupportedError, named)
    assert "bounds no error" in str(refusal)


@pytest.mark.parametrize("sql", [
    f"SELECT SUM(ROUND(b.qx / s.qy, 2)) AS r {JOIN}",  # each term rounded: guarded row by row
    f"SELECT SUM(FLOOR(POWER(s.pw, 0.5))) AS r {JOIN}",  # an integer base, a constant exponent: bounded
    f"SELECT ROUND(AVG(b.qx + s.qy), 1) AS r {JOIN}",  # exact arithmetic on encoded values: the encoding's slack
])
def test_rounding_a_value_with_an_error_bound_is_planned_and_matches_duckdb(aggregate_only, oracle_for, sql):
    oracle_for(aggregate_only).check(sql, "bank")


@pytest.fixture(scope="module")
def aggregate_only_mysql(tmp_path_factory, federation_writer, grants_for):
    """`aggregate_only` in the mysql dialect (ROUND of a DOUBLE: ties to even, written with FLOOR)."""
    grants = grants_for(("bank", ("shop.w.id",), "PLAINTEXT_AFTER_JOIN"),
                        ("bank", tuple(f"shop.w.{name}" for name in SHOP), "PLAINTEXT_AFTER_AGGREGATE"))
    path = federation_writer(tmp_path_factory.mktemp("aggregate_only_mysql"), band_tables("outside"), grants,
                             parties=TWO, min_group_size=0, dialect="mysql")
    with Engine(path, timeout=60) as engine:
        yield engine


FINER_THAN_THE_ERROR = [  # (rounding, named): twice the least error bound spans a boundary spacing: every row
    ("ROUND(b.qx / s.qy, 4)", "ROUND"),  # a quotient's 2^-14: 10^-4 apart
    ("ROUND(b.cn / s.cy, 4)", "ROUND"),  # MySQL: an exact quotient the user rounds
    ("ROUND(b.qx / s.sd, 7)", "ROUND"),  # finer than the encoding: its argument unguarded, beyond its accuracy
    ("FLOOR(SQRT(b.sq + s.sq) * 10000)", "FLOOR"),  # scaled by a constant
    ("CAST(LN(b.ln * s.ln) * 5000 AS INTEGER)", "CAST"),
    ("CAST(EXP(b.ex * s.ln) AS DECIMAL(10, 5))", "CAST"),
    ("ROUND(GREATEST(b.qx / s.qy, 1.5), 4)", "ROUND"),
]


@pytest.mark.parametrize("dialect", ["duckdb", "mysql"])
@pytest.mark.parametrize("rounding,named", FINER_THAN_THE_ERROR)
def test_rounding_finer_than_an_approximate_values_error_is_refused_at_plan_time(
        aggregate_only, aggregate_only_mysql, assert_refused, dialect, rounding, named):
    """The run-time guard would refuse every row (MySQL's ROUND of a DOUBLE too, its FLOOR named as the ROUND
    the user wrote): check, EXPLAIN and execution refuse it by name, suggesting fewer decimals."""
    engine = aggregate_only if dialect == "duckdb" else aggregate_only_mysql
    sql = f"SELECT SUM({rounding}) AS r {JOIN}"
    refusal = assert_refused(engine, sql, "bank", NotSupportedError, named)
    assert "every row lies within its error of a rounding boundary" in str(refusal)
    with pytest.raises(NotSupportedError) as executed:
        engine.execute(sql, "bank")
    assert str(executed.value) == str(refusal)


@pytest.mark.parametrize("dialect", ["duckdb", "mysql"])
def test_a_rounding_of_one_partys_values_is_computed_exactly_by_that_party(
        aggregate_only, aggregate_only_mysql, oracle_for, dialect):
    """SUM(CAST(EXP(b.ex) AS DECIMAL(10, 5))) reads the bank's column only: the bank pre-aggregates it by the join
    key (eager aggregation, padded by its owner), in plaintext, exactly: no approximation to refuse."""
    engine = aggregate_only if dialect == "duckdb" else aggregate_only_mysql
    sql = f"SELECT SUM(CAST(EXP(b.ex) AS DECIMAL(10, 5))) AS r {JOIN}"
    assert "padded" in engine.explain(sql, "bank")
    oracle_for(engine).check(sql, "bank")


@pytest.mark.parametrize("sql", [
    f"SELECT SUM(ROUND(b.qx / s.qy, 2)) AS r, SUM(FLOOR(SQRT(b.sq + s.sq) * 100)) AS f {JOIN}",
    f"SELECT SUM(CAST(LN(b.ln * s.ln) * 100 AS INTEGER)) AS c, SUM(ROUND(SIN(b.sn), 1)) AS s {JOIN}",
])
def test_a_rounding_coarser_than_twice_the_least_error_is_still_guarded_per_row(aggregate_only_mysql, oracle_for,
                                                                                 sql):
    """In the mysql dialect too (ROUND ties to even), against DuckDB over the dialect's rewrite."""
    assert aggregate_only_mysql.check(sql, "bank") is None
    got = aggregate_only_mysql.execute(sql, "bank").table
    want = rewritten_in_duckdb(oracle_for(aggregate_only_mysql), sql)
    assert same_multiset(got, want), (sorted_rows(got), sorted_rows(want))


BOUNDED = {  # SQL over a DOUBLE x, a positive DOUBLE p and a non-zero integer k -> the same in numpy (DuckDB's doubles)
    "x / k": lambda x, p, k: x / k,
    "x / p": lambda x, p, k: x / p,
    "SQRT(p)": lambda x, p, k: np.sqrt(p),
    "SQRT(p) * 2 + x": lambda x, p, k: np.sqrt(p) * 2 + x,
    "EXP(x / 4)": lambda x, p, k: np.exp(x / 4),
    "LN(p) + x": lambda x, p, k: np.log(p) + x,
    "LOG(p)": lambda x, p, k: np.log10(p),
    "POWER(k, 0.5)": lambda x, p, k: np.abs(k) ** 0.5,
    "POWER(x, 3)": lambda x, p, k: x ** 3,
    "SIN(x) * 10 - COS(p)": lambda x, p, k: np.sin(x) * 10 - np.cos(p),
    "TAN(x / 8)": lambda x, p, k: np.tan(x / 8),
    "ATAN(x) * k": lambda x, p, k: np.arctan(x) * k,
    "x * p / k": lambda x, p, k: x * p / k,
    "CASE WHEN x > 0 THEN x / k ELSE SQRT(p) END": lambda x, p, k: np.where(x > 0, x / k, np.sqrt(p)),
}


@pytest.mark.parametrize("sql", sorted(BOUNDED))
def test_the_error_bound_covers_the_spus_distance_from_duckdbs_double(sql):
    """Row by row, |SPU value - numpy's double| <= the bound `approximation.error_bound` computes on the
    shares (the guard's slack), over values from 2^-6 to 2^6 and their signs (p, k: the function's domain)."""
    rng = np.random.default_rng(17)
    n = 48
    x = np.concatenate([[0.5, -0.5, 1e-3, 5.0, -5.0, 3.14159], rng.uniform(-8, 8, n - 6)])
    p = np.concatenate([[0.25, 0.01, 1.0, 16.0, 60.0, 2.0 ** -6], rng.uniform(0.3, 60, n - 6)])
    k = np.concatenate([[1, -1, 3, 7, -9, 2], rng.choice([-7, -3, -2, 1, 2, 3, 5, 11], n - 6)]).astype(np.int64)
    if sql == "POWER(k, 0.5)":
        k = np.abs(k)
    e = sqlglot.parse_one(sql, read="duckdb")

    def program(s):
        stage = Stage(s, None, n)
        ones = arith.public(s, np.ones(n, dtype=np.int64))
        stage.cols = {"x": SV([share(s, x, frac=F)], ones, "fixed"), "p": SV([share(s, p, frac=F)], ones, "fixed"),
                      "k": SV([share(s, k, owner=1)], ones, "int")}
        stage.rounding_depth = 1  # as under a rounding: the nodes' values are remembered for the bound
        value = stage.to_fixed(stage.ev(e)).value
        bound = approximation.error_bound(stage, e, n)
        bound = bound if isinstance(bound, ArithShare) else arith.public(s, np.full(n, math.ceil(bound), np.int64))
        return arith.reveal_many(s, [value, bound])

    got, bound = run_spu(2, program, frac_bits=F).results[0]
    distance = np.abs(decode_fixed(got, F) - BOUNDED[sql](x, p, k))
    allowed = to_signed(bound) * 2.0 ** -F
    assert (distance <= allowed).all(), (sql, (distance - allowed).max(), np.argmax(distance - allowed))
    assert (allowed < 2.0 ** -6 * (1 + np.abs(BOUNDED[sql](x, p, k)))).mean() > 0.9  # and not vacuous
