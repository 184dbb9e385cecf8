"""GROUP BY keys of several parties that PSI joins made equal to one party's columns (issue 16, TPC-H Q3's
`GROUP BY l_orderkey, o_orderdate, o_shippriority`): on every row an inner PSI join keeps, `l_orderkey`
equals the shop's `o_orderkey`, so the secure stage groups by the shop's columns, which the shop numbers
itself (the SPU then sorts one narrow code, not every key's limbs). Answers stay DuckDB's; a LEFT JOIN's
NULL side, or keys of different declared types, are never swapped."""

import sys
from pathlib import Path

import pytest

from sqlsecure.planner.physical import SecureStage

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the TPC-H-shaped federation of test_tpch_joins
from test_tpch_joins import tpch_engine  # noqa: E402

SWAPPED = {  # query -> the secure stage's GROUP BY, all at one party
    "carrier_key_by_the_shops_unique_key": (
        """SELECT l.l_orderkey, o.o_orderdate, SUM(l.l_extendedprice * (1 - l.l_discount)) AS revenue
        FROM bank.customer c, shop.orders o, carrier.lineitem l
        WHERE c.c_custkey = o.o_custkey AND l.l_orderkey = o.o_orderkey
        GROUP BY l.l_orderkey, o.o_orderdate ORDER BY revenue DESC, l.l_orderkey LIMIT 7""",
        ('"o.o_orderkey"', '"o.o_orderdate"')),
    "repeated_and_null_keys_with_having": (
        """SELECT o.o_custkey, c.c_name, COUNT(*) AS lines, SUM(l.l_extendedprice) AS total
        FROM bank.customer c, shop.orders o, carrier.lineitem l
        WHERE c.c_custkey = o.o_custkey AND l.l_orderkey = o.o_orderkey
        GROUP BY o.o_custkey, c.c_name HAVING COUNT(*) > 2 ORDER BY o.o_custkey""",
        ('"c.c_custkey"', '"c.c_name"')),
    "keys_of_two_parties_both_equal_to_a_third_partys": (
        """SELECT c.c_custkey, l.l_orderkey, COUNT(*) AS n FROM bank.customer c, shop.orders o, carrier.lineitem l
        WHERE c.c_custkey = o.o_custkey AND l.l_orderkey = o.o_orderkey GROUP BY c.c_custkey, l.l_orderkey""",
        ('"o.o_custkey"', '"o.o_orderkey"')),
}


@pytest.fixture(scope="module")
def tpch(tmp_path_factory, federation_writer, grants_for, oracle_for):
    with tpch_engine(tmp_path_factory.mktemp("psi_group_keys"), federation_writer, grants_for) as engine:
        yield oracle_for(engine)


def secure_stage(engine, sql: str) -> SecureStage:
    return next(s for s in engine.plan(sql, "shop").physical.steps if isinstance(s, SecureStage))


@pytest.mark.parametrize("name", SWAPPED)
def test_group_keys_equated_by_a_psi_join_are_grouped_at_one_party(tpch, name):
    sql, group_by = SWAPPED[name]
    assert secure_stage(tpch.engine, sql).group_by == group_by
    assert tpch.check(sql, "shop").num_rows > 0


def test_a_left_joins_null_side_key_is_not_swapped(tpch):
    """On a NULL-extended row the NULL side's key is NULL, not the preserved side's: no swap, same answer."""
    sql = """SELECT o.o_orderkey, c.c_name, COUNT(*) AS n FROM shop.orders o
        LEFT JOIN bank.customer c ON c.c_custkey = o.o_custkey GROUP BY o.o_orderkey, c.c_name"""
    stage = next((s for s in tpch.engine.plan(sql, "shop").physical.steps if isinstance(s, SecureStage)), None)
    if stage is not None:
        assert '"c.c_name"' in stage.group_by and '"o.o_orderkey"' in stage.group_by
    assert tpch.check(sql, "shop").num_rows > 0
