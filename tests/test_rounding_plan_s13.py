"""A rounding the SPU can never decide is refused at plan time (issue 17): a CAST to DECIMAL(p, s) of a SUM of
fixed-point values (DOUBLEs, quotients, products with a DOUBLE factor) sums its rows' error bounds beside it
(`Stage.guarded_aggregates`), one row's alone at least one unit of 2^-16, twice which spans a whole spacing of
10^-s from s = 5: no group could pass the guard, so `check`, EXPLAIN and execution refuse it alike with
NotSupportedError naming the CAST (`stage._finer_than_error`, `approximation.least_bound`). Roundings the guard
can decide (fewer decimals), and a ROUND finer than the encoding (which returns its argument), are still
answered as DuckDB answers them."""

from decimal import Decimal

import pyarrow as pa
import pytest
from sqlglot import exp, parse_one

from sqlsecure.engine import Engine
from sqlsecure.errors import NotSupportedError
from sqlsecure.executors.spu.stage import spu_refusal
from tests.conftest import grants_toml

TWO = ("bank", "shop")
JOIN = "FROM bank.v b JOIN shop.w s ON b.id = s.id"

# shop's values reach bank only aggregated, so only the SPU may compute across the two (no plaintext fallback)
GRANTS = grants_toml(("shop", ("bank.*.*",), "PLAINTEXT"), ("bank", ("shop.w.id",), "PLAINTEXT_AFTER_JOIN"),
                     ("bank", ("shop.w.y", "shop.w.k"), "PLAINTEXT_AFTER_AGGREGATE"))

REFUSED = [  # (select list, the refused rounding as the message names it)
    "CAST(SUM(b.x + s.y) AS DECIMAL(38, 9))",  # a SUM of DOUBLEs
    "CAST(SUM(b.c / 3 + s.k) AS DECIMAL(38, 6))",  # a SUM of quotients (MySQL's SUM(c / 3) at 9 decimals)
    "CAST(SUM(b.x * s.k) + 1 AS DECIMAL(20, 5))",  # a product with a DOUBLE factor, then exact arithmetic
    "CAST(AVG(b.x * s.y) AS DECIMAL(20, 7))",  # an AVG of an amplified encoding
]
ANSWERED = [
    "CAST(SUM(b.x + s.y) AS DECIMAL(18, 2))",  # the guard decides it: a boundary's spacing is far above the bound
    "ROUND(SUM(b.x + s.y), 1)",
    "ROUND(SUM(b.x + s.y), 9)",  # finer than the encoding: its argument, unguarded, as before
    "CAST(SUM(b.c + s.k) AS DECIMAL(38, 9))",  # a SUM of DECIMALs and integers: exact
]


@pytest.fixture(scope="module")
def oracle(tmp_path_factory, federation_writer, oracle_for):
    """Three joined rows far from every boundary at the decimals ANSWERED rounds them to."""
    ids = pa.array([1, 2, 3], pa.int64())
    bank = pa.table({"id": ids, "x": pa.array([1.25, 2.5, 3.75]),
                     "c": pa.array([Decimal("1.10"), Decimal("2.20"), Decimal("3.30")], pa.decimal128(10, 2))})
    shop = pa.table({"id": ids, "y": pa.array([0.1, 0.2, 0.3]), "k": pa.array([2, 4, 6], pa.int64())})
    path = federation_writer(tmp_path_factory.mktemp("rounding"), {"bank": {"v": bank}, "shop": {"w": shop}},
                             GRANTS, parties=TWO, min_group_size=0)
    with Engine(path, timeout=60) as engine:
        yield oracle_for(engine)


@pytest.mark.parametrize("select", REFUSED)
def test_undecidable_rounding_refused_at_plan_time(oracle, assert_refused, select):
    """check, plan and execution all refuse it with NotSupportedError, naming the CAST and what to write."""
    sql = f"SELECT {select} AS r {JOIN}"
    refused = assert_refused(oracle.engine, sql, "bank", NotSupportedError, "CAST(")
    assert "decimals at most" in str(refused) and "one party" in str(refused)
    with pytest.raises(NotSupportedError) as executed:
        oracle.engine.execute(sql, "bank")
    assert str(executed.value) == str(refused)


@pytest.mark.parametrize("select", ANSWERED)
def test_decidable_rounding_answered_as_duckdb(oracle, select):
    oracle.check(f"SELECT {select} AS r {JOIN}", "bank")


def test_refusal_follows_the_scale():
    """The stage's rule itself (shared by the planner and the secret program's expressions): DECIMAL(p, 4)
    of a SUM of DOUBLEs passes, DECIMAL(p, 5) is refused; without the columns' kinds nothing is summed."""
    kinds = {"x": "fixed", "k": "int"}.get

    def refusal(sql, kind_of=lambda c: kinds(c.name)):
        return spu_refusal(parse_one(sql, read="duckdb"), kind_of)

    assert refusal("CAST(SUM(x + k) AS DECIMAL(18, 4))") is None
    assert "CAST(SUM(x + k) AS DECIMAL(18, 5))" in refusal("CAST(SUM(x + k) AS DECIMAL(18, 5))")
    assert refusal("CAST(SUM(k * 2) AS DECIMAL(18, 9))") is None  # integers: exact
    assert refusal("CAST(SUM(x + k) AS DECIMAL(18, 9))", lambda c: None) is None
    assert isinstance(parse_one("CAST(SUM(x) AS DECIMAL(18, 9))"), exp.Cast)
