"""Comparing an approximate value on the SPU (`Stage._refuse_within_error`, executors/spu/approximation.py):
a counted row whose operands lie within their combined error bound of each other refuses the query with
DataError; rows outside it compare as DuckDB compares them. Each case has a row just inside the band (a
quotient, root, logarithm, exponential or sine that DuckDB's double puts on or within 10^-6 of the other
side), and rows just and well outside it, in three federations that differ only in that row. Comparisons
without an error bound, and keys that group, join or rank by an approximate value, are refused at plan time."""

import contextlib
import json
import math

import numpy as np
import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp

from sqlsecure.engine import Engine
from sqlsecure.errors import DataError, NotSupportedError
from sqlsecure.executors.spu import approximation, arith
from sqlsecure.executors.spu.local import run_spu
from sqlsecure.executors.spu.program import parse_program
from sqlsecure.executors.spu.stage import SV, Stage
from tests.test_spu_functions import F, share
from tests.test_spu_rounding_error import BANDS, TWO, band_federations
from tests.test_spu_rounding_error import band_tables as rounding_band_tables
from tests.test_spu_rounds import C

JOIN = "FROM bank.v b JOIN shop.w s ON b.id = s.id"

# column -> (just inside the band, just outside it (a few times the stated accuracy), well outside it, then
# two ordinary rows far from every threshold the cases compare with)
BANK = {"qx": (4.01 + 2e-6, 4.01 + 2e-3, 4.016, 1.3, 2.6), "sq": (10, 10, 10, 1, 2),
        "ex": (math.log(20.0), math.log(20.0) + 2e-4, 1.0, 1.3, 2.6), "ln": (1, 1, 1, 2, 2),
        "sn": (math.pi / 6, math.pi / 6 + 1e-4, 0.3, 1.3, 2.6), "cn": (5, 7, 7, 1, 2)}
SHOP = {"qy": (2, 2, 2, 3, 7), "sq": (6, 7, 7, 2, 5), "ln": (1, 3, 3, 2, 5), "cy": (2, 3, 3, 3, 7)}
DOUBLES = {"qx", "ex", "sn"}

WHERE = [  # conditions of approximate values: the first row of "inside" lies on or next to the other side
    "b.qx / s.qy > 2.005",  # a quotient by a secret: 2.005 + 10^-6
    "b.qx / s.qy <= 2.005",
    "SQRT(b.sq + s.sq) >= 4",  # SQRT(16) = 4 exactly for DuckDB
    "SQRT(b.sq + s.sq) * 2 + 1 < 9",  # composed through * and + with constants
    "EXP(b.ex + s.qy - s.qy) > 20",  # EXP(LN(20)) = 20.000000000000004
    "LN(b.ln * s.ln) = 0",  # LN(1) = 0: equality of an approximate value
    "LN(b.ln * s.ln) <> 0",
    "b.qx / s.qy BETWEEN 1 AND 2.005",
    "SIN(b.sn + s.qy - s.qy) * 10 IN (5, 7)",  # SIN(pi / 6) * 10 = 4.999999999999999
    "b.cn / s.cy > SQRT(b.sq + s.sq) - 1.5",  # approximate on both sides: 2.5 against 4 - 1.5
]
OUTPUTS = [  # comparisons inside CASE / IF / NULLIF, as an output
    "CASE WHEN b.qx / s.qy > 2.005 THEN 1 ELSE 0 END",
    "IF(SQRT(b.sq + s.sq) < 4, 'low', 'high')",
    "NULLIF(b.cn / s.cy, 2.5)",
]


def band_tables(band: str) -> dict[str, dict[str, pa.Table]]:
    """Three rows: the case's row (inside the band, just outside or well outside it) and two ordinary ones."""
    return rounding_band_tables(band, BANK, SHOP, DOUBLES)


@pytest.fixture(scope="module")
def band_oracles(tmp_path_factory, federation_writer, plaintext_grants, oracle_for):
    with band_federations(tmp_path_factory, federation_writer, plaintext_grants(TWO), oracle_for, band_tables) as made:
        yield made


def filtered(condition: str) -> str:
    return f"SELECT b.id {JOIN} WHERE {condition}"


def shown(expression: str) -> str:
    return f"SELECT b.id, {expression} AS r {JOIN} WHERE b.id > s.id - 1"


@pytest.mark.parametrize("sql", [filtered(c) for c in WHERE] + [shown(e) for e in OUTPUTS])
def test_an_approximate_comparison_within_its_error_is_refused(band_oracles, sql):
    engine = band_oracles["inside"].engine
    assert "SPU(" in engine.explain(sql, "bank")
    with pytest.raises(DataError, match="within their error"):
        engine.execute(sql, "bank")


@pytest.mark.parametrize("band", ["near", "outside"])
@pytest.mark.parametrize("sql", [filtered(c) for c in WHERE] + [shown(e) for e in OUTPUTS])
def test_an_approximate_comparison_outside_its_error_band_matches_duckdb(band_oracles, sql, band):
    band_oracles[band].check(sql, "bank")


@pytest.mark.parametrize("sql", [
    filtered("b.qx * 2 > s.qy * 4.01"),  # exact arithmetic on encoded values: today's comparison
    filtered("ROUND(b.qx / s.qy, 2) > 2"),  # a rounded value: its own guard, then compared exactly
    filtered("CAST(b.cn / s.cy AS INTEGER) = 2"),
    shown("CASE WHEN b.sq + s.sq >= 16 THEN b.qx / s.qy END"),  # an exact condition choosing an approximation
])
def test_comparisons_of_exact_and_rounded_values_are_computed(band_oracles, sql):
    band_oracles["outside"].check(sql, "bank")


def test_a_row_outside_the_counted_rows_does_not_refuse(band_oracles):
    """The inside row of a group the HAVING compares is not the group's: only kept groups count."""
    band_oracles["inside"].check(
        f"SELECT b.id, SUM(b.qx) / SUM(s.qy) AS r {JOIN} WHERE b.id > 1 GROUP BY b.id "
        "HAVING SUM(b.qx) / SUM(s.qy) > 0.3", "bank")


def test_having_a_quotient_of_sums_within_its_error_is_refused(band_oracles):
    with pytest.raises(DataError, match="within their error"):
        band_oracles["inside"].engine.execute(
            f"SELECT b.id {JOIN} GROUP BY b.id HAVING SUM(b.qx) / SUM(s.qy) > 2.005", "bank")


@pytest.mark.parametrize("band", BANDS)
@pytest.mark.parametrize("sql", [
    f"SELECT MIN(b.qx / s.qy) AS lo, MAX(SQRT(b.sq + s.sq)) AS hi {JOIN}",  # each within its error of DuckDB's
    f"SELECT b.id, b.qx / s.qy AS q {JOIN} ORDER BY q",  # the same rows; near-equal ones may swap places
])
def test_min_max_and_order_of_approximate_values_are_within_their_error(band_oracles, band, sql):
    band_oracles[band].check(sql, "bank")


@pytest.fixture(scope="module")
def granted(tmp_path_factory, federation_writer, grants_for):
    """granted(constraint): an engine over the "outside" data where bank sees shop's id as a join key and
    its other columns only under `constraint`, so nothing is gathered at bank: the SPU computes or refuses."""
    made = {}
    with contextlib.ExitStack() as stack:
        def engine(constraint: str) -> Engine:
            if constraint not in made:
                grants = grants_for(("bank", ("shop.w.id",), "PLAINTEXT_AFTER_JOIN"),
                                    ("bank", tuple(f"shop.w.{name}" for name in SHOP), constraint))
                path = federation_writer(tmp_path_factory.mktemp(constraint.lower()), band_tables("outside"), grants,
                                         parties=TWO, min_group_size=0)
                made[constraint] = stack.enter_context(Engine(path, timeout=60))
            return made[constraint]
        yield engine


@pytest.mark.parametrize("sql,named", [
    (f"SELECT COUNT(*) AS c {JOIN} HAVING AVG(b.qx / s.qy) < 3", "AVG"),  # an aggregate of approximations
    (f"SELECT SUM(CASE WHEN ASIN(b.qx / s.qy / 10) > 0.1 THEN 1 ELSE 0 END) AS c {JOIN}", "ASIN"),
    (f"SELECT SUM(b.cn) AS c {JOIN} WHERE ATAN2(b.qx, s.qy * 0.5) > 1", "ATAN2"),
])
def test_comparing_a_value_without_an_error_bound_is_refused_at_plan_time(granted, assert_refused, sql, named):
    refusal = assert_refused(granted("PLAINTEXT_AFTER_AGGREGATE"), sql, "bank", NotSupportedError, named)
    assert "bounds no error" in str(refusal)


@pytest.mark.parametrize("constraint,sql,named", [
    ("PLAINTEXT_AFTER_GROUP_BY", f"SELECT b.qx / NULLIF(s.qy, 0) AS q, COUNT(*) AS c {JOIN} "
     "GROUP BY b.qx / NULLIF(s.qy, 0)", "GROUP BY"),
    ("PLAINTEXT_AFTER_GROUP_BY", f"SELECT COUNT(*) AS c {JOIN} GROUP BY EXP((b.sq + s.sq) / 1000)", "GROUP BY"),
    ("PLAINTEXT_AFTER_AGGREGATE",
     f"SELECT b.id, SUM(b.qx) / SUM(s.qy) AS q {JOIN} GROUP BY b.id ORDER BY q DESC LIMIT 2", "LIMIT"),
    ("REVEAL_RANK", f"SELECT b.id, RANK() OVER (ORDER BY EXP((b.sq + s.sq) / 1000)) AS k {JOIN}", "ORDER BY"),
])
def test_grouping_or_ranking_by_an_approximate_value_is_refused_at_plan_time(granted, assert_refused, constraint,
                                                                             sql, named):
    refusal = assert_refused(granted(constraint), sql, "bank", NotSupportedError, named)
    assert "approximate value" in str(refusal)


@pytest.mark.parametrize("sql", [
    f"SELECT b.id, ROUND(AVG(b.qx) / AVG(s.qy), 2) AS q {JOIN} GROUP BY b.id ORDER BY q DESC, b.id LIMIT 2",
    f"SELECT b.id, SUM(b.qx) / SUM(s.qy) AS q {JOIN} GROUP BY b.id ORDER BY q DESC",  # no LIMIT: the same rows
    f"SELECT COUNT(*) AS c {JOIN} HAVING AVG(ROUND(b.qx / s.qy, 2)) < 3",  # rounded terms: bounded
])
def test_ordering_by_a_rounded_or_unlimited_approximation_is_planned(granted, oracle_for, sql):
    engine = granted("PLAINTEXT_AFTER_AGGREGATE")
    assert "SPU(" in engine.explain(sql, "bank")
    oracle_for(engine).check(sql, "bank")


@pytest.mark.parametrize("sql", [
    f"SELECT b.qx / s.qy AS q, COUNT(*) AS c {JOIN} WHERE b.id > s.id - 1 GROUP BY b.qx / s.qy",
    f"SELECT b.id {JOIN} WHERE b.id > s.id - 1 ORDER BY b.qx / s.qy DESC LIMIT 2",
])
def test_where_the_grants_allow_it_an_approximate_key_is_computed_in_plaintext(band_oracles, sql):
    """The secure placement refuses the key; every column being plain to bank, bank computes it exactly."""
    assert "approximate value" in band_oracles["inside"].engine.explain(sql, "bank")
    band_oracles["inside"].check(sql, "bank")


@pytest.mark.parametrize("sql,named", [
    (f"SELECT COUNT(*) AS c FROM (SELECT b.qx / s.qy AS q {JOIN}) t WHERE q > 2", "t.q"),
    (f"SELECT SUM(CASE WHEN m > 2 THEN 1 ELSE 0 END) AS c FROM (SELECT MAX(b.qx / s.qy) AS m {JOIN} GROUP BY b.id) t",
     "t.m"),
])
def test_comparing_an_approximation_from_an_earlier_step_is_refused_at_plan_time(granted, assert_refused, sql, named):
    """A subquery's or an aggregate's approximate column: its error bound stayed in the step that made it."""
    refusal = assert_refused(granted("PLAINTEXT_AFTER_AGGREGATE"), sql, "bank", NotSupportedError, named)
    assert "bounds no error" in str(refusal) and "earlier step" in str(refusal)


def comparison_rounds(nparties: int, sql: str, x, k) -> int:
    """Rounds of evaluating `sql` over a DOUBLE column x and an integer column k, after its inputs are shared."""
    n, e = len(x), sqlglot.parse_one(sql, read="duckdb")

    def program(s):
        stage = Stage(s, None, n)
        ones = arith.public(s, np.ones(n, dtype=np.int64))
        stage.cols = {"x": SV([share(s, x, frac=F)], ones, "fixed"), "k": SV([share(s, k, owner=1)], ones, "int")}
        s.rounds = 0
        stage.ev(e)
        return s.rounds

    return run_spu(nparties, program, frac_bits=F).results[0]


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("sql", ["x > k", "x * 2 + 1 <= k", "ROUND(x, 1) = k", "x BETWEEN k AND 5", "k IN (1, 3)",
                                 "NULLIF(x, k)", "CASE WHEN CAST(x / k AS INTEGER) > 1 THEN x END"])
def test_an_exact_comparison_keeps_its_rounds(monkeypatch, nparties, sql):
    """Exact, encoded or rounded operands are not guarded: the guard is never asked, and the rounds are
    those of the same evaluation with every operand taken as exact."""
    k = np.array([-7, -5, -3, -2, -1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13], dtype=np.int64)
    x = 1.2 * k  # x / k = 1.2: far from CAST's rounding boundaries

    def no_guard(*args):
        raise AssertionError(f"{sql}: the comparison guard ran on exact operands")
    monkeypatch.setattr(Stage, "_refuse_within_error", no_guard)
    rounds = comparison_rounds(nparties, sql, x, k)
    monkeypatch.setattr(approximation, "is_approximate", lambda e: False)
    assert rounds == comparison_rounds(nparties, sql, x, k)


def test_an_approximate_comparison_pays_for_its_guard():
    """x / k > 1 costs the quotient, its bound, the comparison and the guard's opening: more than the
    quotient and one comparison, so the guard ran (and passed: no row lies near 1)."""
    x, k = np.full(8, 3.3), np.arange(1, 9, dtype=np.int64)
    quotient = comparison_rounds(2, "x / k", x, k)
    assert comparison_rounds(2, "x / k > 1", x, k) > quotient + C[2] + 2


class Forgetful(dict):
    """A stage's `error_bounds` that keeps nothing: every comparison computes its operands' bounds anew."""

    def __setitem__(self, key, value):
        pass


def in_list(nparties: int, sql: str, x, k, valid, forget: bool) -> tuple[list, list, int]:
    """(the result's values, its validity, rounds) of `sql` over a DOUBLE x and an integer k with NULLs where
    `valid` is 0, with the stage's bounds kept or (`forget`) recomputed for each comparison."""
    n, e = len(x), sqlglot.parse_one(sql, read="duckdb")

    def program(s):
        stage = Stage(s, None, n)
        if forget:
            stage.error_bounds = Forgetful()
        mask = share(s, valid)
        stage.cols = {"x": SV([share(s, x, frac=F)], mask, "fixed"), "k": SV([share(s, k, owner=1)], mask, "int")}
        s.rounds = 0
        got = stage.ev(e)
        rounds = s.rounds
        return [v.tolist() for v in arith.reveal_many(s, [got.value, got.valid])] + [rounds]

    return run_spu(nparties, program, frac_bits=F).results[0]


@pytest.mark.parametrize("nparties", [2, 3])
def test_an_in_lists_operand_bound_is_computed_once_and_the_result_is_unchanged(monkeypatch, nparties):
    """x / k IN (1, 2, 3, 5): the quotient's error bound once for the list, not once per element; the same
    answers (false, NULL where x / k is) in fewer rounds than with every bound recomputed."""
    k = np.array([-7, -5, -3, -2, -1, 1, 2, 3, 4, 5, 6, 7], dtype=np.int64)
    x, valid = 1.2 * k, np.array([1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 1], dtype=np.int64)  # x / k = 1.2: no element near
    quotient, bounded = approximation.RULES[exp.Div], []
    monkeypatch.setitem(approximation.RULES, exp.Div, lambda b, e: bounded.append(e.sql()) or quotient(b, e))
    sql = "x / k IN (1, 2, 3, 5)"
    *kept, kept_rounds = in_list(nparties, sql, x, k, valid, forget=False)
    assert bounded == ["x / k"] * nparties  # once at each party
    bounded.clear()
    *recomputed, recomputed_rounds = in_list(nparties, sql, x, k, valid, forget=True)
    assert bounded == ["x / k"] * 4 * nparties
    assert kept == recomputed == [[0] * len(k), valid.tolist()]
    assert kept_rounds < recomputed_rounds


QUOTIENT = {"op": "project", "child": {"op": "input", "index": 0},
            "columns": [["k", '"k"'], ["q", '"x" / "y"']]}  # q: an approximate value, from an earlier step
KEYED = [[["k", "int"], ["x", "fixed"], ["y", "int"]], [["j", "int"], ["z", "fixed"]]]


@pytest.mark.parametrize("root,named", [
    ({"op": "join", "kind": "inner", "left": QUOTIENT, "right": {"op": "input", "index": 1}, "left_keys": ['"q"'],
      "right_keys": ['"z"'], "condition": None}, "a join key"),
    ({"op": "join", "kind": "semi", "left": {"op": "input", "index": 1}, "right": {"op": "input", "index": 0},
      "left_keys": ['"z"'], "right_keys": ['"x" / "y"'], "condition": None}, "a join key"),
    ({"op": "distinct", "child": QUOTIENT}, "DISTINCT"),
    ({"op": "aggregate", "child": QUOTIENT, "keys": [["g", '"q" * 2']], "threshold": None,
      "aggregates": [["c", "COUNT", None, False]]}, "GROUP BY"),
    ({"op": "window", "child": QUOTIENT, "name": "r", "func": "row_number", "arg": None, "partition": ['"q"'],
      "order": [['"k"', False, False]], "frame": None}, "PARTITION BY"),
    ({"op": "sort", "child": QUOTIENT, "keys": [['"q"', True, False]], "limit": 3, "offset": 0}, "LIMIT"),
    ({"op": "filter", "child": QUOTIENT, "condition": '"q" BETWEEN 1 AND 2'}, "earlier step"),
])
def test_a_secret_program_refuses_approximate_keys_and_comparisons_from_an_earlier_step(root, named):
    text = json.dumps({"inputs": [{"columns": c} for c in KEYED], "root": root})
    with pytest.raises(NotSupportedError, match=named):
        parse_program(text)


@pytest.mark.parametrize("root", [
    {"op": "sort", "child": QUOTIENT, "keys": [['"q"', True, False]], "limit": None, "offset": 0},  # all rows
    {"op": "filter", "child": {"op": "input", "index": 0}, "condition": '"x" / "y" > 1'},  # guarded when run
    {"op": "aggregate", "child": QUOTIENT, "keys": [], "threshold": None,
     "aggregates": [["m", "MAX", '"q"', False]]},  # within the largest error of DuckDB's
])
def test_a_secret_program_accepts_what_is_guarded_or_within_its_error(root):
    parse_program(json.dumps({"inputs": [{"columns": c} for c in KEYED], "root": root}))
