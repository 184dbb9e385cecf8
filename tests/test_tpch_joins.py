"""Joins of a party's own tables inside a cross-party query, and join cycles between parties (issue 16: TPC-H
Q10 and Q5 over a bank holding customer, nation, region, a shop holding orders, a carrier holding lineitem and
supplier, issued by the shop). Small tables with NULL keys, keys that match nothing and repeated keys."""

import datetime

import numpy as np
import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import PolicyViolation
from sqlsecure.planner.physical import EquiJoin, SecureStage

PARTIES = ("bank", "shop", "carrier")
UNIQUE = """
[parties.bank.unique]
customer = [["c_custkey"]]
nation = [["n_nationkey"]]
region = [["r_regionkey"]]

[parties.shop.unique]
orders = [["o_orderkey"]]

[parties.carrier.unique]
supplier = [["s_suppkey"]]
"""
GRANTS = [  # as bench/tpch.py's: join keys to the join partner, group keys, measures, filter columns
    ("shop", ("bank.customer.c_custkey", "bank.customer.c_nationkey", "bank.nation.n_nationkey",
              "bank.nation.n_regionkey", "bank.region.r_regionkey", "carrier.lineitem.l_orderkey",
              "carrier.lineitem.l_suppkey", "carrier.supplier.s_suppkey", "carrier.supplier.s_nationkey"),
     "PLAINTEXT_AFTER_JOIN"),
    ("bank", ("shop.orders.o_custkey", "carrier.supplier.s_nationkey"), "PLAINTEXT_AFTER_JOIN"),
    ("carrier", ("shop.orders.o_orderkey", "bank.customer.c_nationkey", "bank.nation.n_nationkey"),
     "PLAINTEXT_AFTER_JOIN"),
    ("shop", ("bank.customer.c_name", "bank.customer.c_acctbal", "bank.nation.n_name"), "PLAINTEXT_AFTER_GROUP_BY"),
    ("shop", ("carrier.lineitem.l_extendedprice", "carrier.lineitem.l_discount"), "PLAINTEXT_AFTER_AGGREGATE"),
    ("shop", ("bank.region.r_name", "carrier.lineitem.l_returnflag"), "PLAINTEXT_AFTER_COMPARE"),
    ("bank", ("shop.orders.o_orderdate", "carrier.lineitem.l_returnflag"), "PLAINTEXT_AFTER_COMPARE"),
    ("carrier", ("bank.region.r_name", "shop.orders.o_orderdate"), "PLAINTEXT_AFTER_COMPARE"),
]


def tables(seed: int = 5, customers: int = 30, orders: int = 90, lineitems: int = 300, suppliers: int = 12):
    """Nations 0..5 in regions 0..2; customers' and suppliers' nation keys include NULL and 9 (no nation);
    orders' customer keys repeat and include NULL."""
    rng = np.random.default_rng(seed)
    nation_keys = [None, 9, 0, 1, 2, 3, 4, 5]

    def nation_of(n: int) -> pa.Array:
        return pa.array([nation_keys[i] for i in rng.integers(0, len(nation_keys), n)], pa.int64())

    customer = pa.table({
        "c_custkey": pa.array(np.arange(1, customers + 1), pa.int64()),
        "c_name": pa.array([f"Customer#{i:09d}" for i in range(1, customers + 1)]),
        "c_acctbal": pa.array(rng.integers(-99999, 999999, customers) / 100.0),
        "c_nationkey": nation_of(customers),
    })
    nation = pa.table({
        "n_nationkey": pa.array(np.arange(6), pa.int64()),
        "n_name": pa.array(["CHINA", "INDIA", "JAPAN", "FRANCE", "KENYA", "PERU"]),
        "n_regionkey": pa.array([0, 0, 0, 1, 2, 2], pa.int64()),
    })
    region = pa.table({"r_regionkey": pa.array([0, 1, 2], pa.int64()), "r_name": pa.array(["ASIA", "EUROPE", "AFRICA"])})
    day = datetime.date(1993, 6, 1)
    order = pa.table({
        "o_orderkey": pa.array(np.arange(1, orders + 1), pa.int64()),
        "o_custkey": pa.array([None if i % 11 == 0 else int(v) for i, v in
                               enumerate(rng.integers(1, customers + 5, orders))], pa.int64()),
        "o_orderdate": pa.array([day + datetime.timedelta(days=int(d)) for d in rng.integers(0, 700, orders)],
                                pa.date32()),
    })
    lineitem = pa.table({
        "l_orderkey": pa.array(rng.integers(1, orders + 1, lineitems), pa.int64()),
        "l_suppkey": pa.array(rng.integers(1, suppliers + 1, lineitems), pa.int64()),
        "l_extendedprice": pa.array(rng.integers(100000, 1000000, lineitems) / 100.0),
        "l_discount": pa.array(rng.integers(0, 11, lineitems) / 100.0),
        "l_returnflag": pa.array(np.array(["R", "A", "N"])[rng.integers(0, 3, lineitems)]),
    })
    supplier = pa.table({"s_suppkey": pa.array(np.arange(1, suppliers + 1), pa.int64()),
                         "s_nationkey": nation_of(suppliers)})
    return {"bank": {"customer": customer, "nation": nation, "region": region}, "shop": {"orders": order},
            "carrier": {"lineitem": lineitem, "supplier": supplier}}


def tpch_engine(directory, federation_writer, grants_for, min_group_size: int = 1, unique: str = UNIQUE) -> Engine:
    path = federation_writer(directory, tables(), grants_for(*GRANTS), parties=PARTIES,
                             min_group_size=min_group_size)
    with path.open("a", encoding="utf-8") as out:
        out.write(unique)
    return Engine(path)


@pytest.fixture(scope="module")
def tpch(tmp_path_factory, federation_writer, grants_for, oracle_for):
    with tpch_engine(tmp_path_factory.mktemp("tpch_joins"), federation_writer, grants_for) as engine:
        yield oracle_for(engine)


Q10 = """SELECT c.c_custkey, c.c_name, SUM(l.l_extendedprice * (1 - l.l_discount)) AS revenue, c.c_acctbal, n.n_name
FROM bank.customer c, shop.orders o, carrier.lineitem l, bank.nation n
WHERE c.c_custkey = o.o_custkey AND l.l_orderkey = o.o_orderkey AND o.o_orderdate >= DATE '1993-10-01'
  AND l.l_returnflag = 'R' AND c.c_nationkey = n.n_nationkey
GROUP BY c.c_custkey, c.c_name, c.c_acctbal, n.n_name ORDER BY revenue DESC LIMIT 20"""

OWN_JOINS = {  # the bank's part joins its own tables, one side unique on its keys each time
    "q10": Q10,
    "two_lookups_and_a_filter": """SELECT n.n_name, COUNT(*) AS orders FROM bank.customer c, bank.nation n,
        bank.region r, shop.orders o WHERE c.c_nationkey = n.n_nationkey AND n.n_regionkey = r.r_regionkey
        AND r.r_name = 'ASIA' AND c.c_custkey = o.o_custkey GROUP BY n.n_name""",
    "unique_side_first": """SELECT n.n_name, COUNT(o.o_orderkey) AS orders FROM bank.nation n
        JOIN bank.customer c ON n.n_nationkey = c.c_nationkey JOIN shop.orders o ON c.c_custkey = o.o_custkey
        GROUP BY n.n_name""",
    "left_join_keeps_null_keys": """SELECT n.n_name, COUNT(*) AS orders FROM bank.customer c
        LEFT JOIN bank.nation n ON c.c_nationkey = n.n_nationkey JOIN shop.orders o ON c.c_custkey = o.o_custkey
        GROUP BY n.n_name""",
}


@pytest.mark.parametrize("sql", OWN_JOINS.values(), ids=OWN_JOINS.keys())
def test_a_join_of_own_tables_on_a_unique_key_equals_duckdb(tpch, sql):
    assert tpch.check(sql, "shop").num_rows > 0


@pytest.fixture(scope="module")
def threshold_3(tmp_path_factory, federation_writer, grants_for, oracle_for):
    with tpch_engine(tmp_path_factory.mktemp("tpch_joins_k3"), federation_writer, grants_for, 3) as engine:
        yield oracle_for(engine)


@pytest.mark.parametrize("name", OWN_JOINS)
def test_the_threshold_counts_the_rows_the_unique_side_joins(threshold_3, name):
    """A group is revealed with >= 3 distinct customers of the bank in it: a nation row an inner join gives
    many customers counts as their rows (the oracle's `lookup_aliases`), never as 3 rows of its own; a LEFT
    JOIN's NULL side is an input of its own, counted as such (one nation per group: none revealed)."""
    got = threshold_3.check(OWN_JOINS[name], "shop")
    if name in ("two_lookups_and_a_filter", "unique_side_first"):  # one nation per group, >= 3 customers
        assert got.num_rows > 0


UNPROVABLE = {  # joins of the bank's own tables that can repeat a row it owns
    "no_key_declared": ("SELECT n.n_name, COUNT(*) AS orders FROM bank.customer c, bank.nation n, shop.orders o "
                        "WHERE c.c_nationkey = n.n_nationkey AND c.c_custkey = o.o_custkey GROUP BY n.n_name", ""),
    "not_on_the_key": ("SELECT n.n_name, COUNT(*) AS orders FROM bank.customer c, bank.nation n, shop.orders o "
                       "WHERE c.c_nationkey = n.n_regionkey AND c.c_custkey = o.o_custkey GROUP BY n.n_name", UNIQUE),
    "left_join_of_the_unique_side": (
        "SELECT n.n_name, COUNT(*) AS orders FROM bank.nation n LEFT JOIN bank.customer c ON "
        "n.n_nationkey = c.c_nationkey JOIN shop.orders o ON c.c_custkey = o.o_custkey GROUP BY n.n_name", UNIQUE),
}


@pytest.mark.parametrize("sql, unique", UNPROVABLE.values(), ids=UNPROVABLE.keys())
def test_a_join_of_own_tables_that_can_repeat_a_row_is_refused(tmp_path, federation_writer, grants_for,
                                                               assert_refused, sql, unique):
    with tpch_engine(tmp_path, federation_writer, grants_for, min_group_size=2, unique=unique) as engine:
        assert_refused(engine, sql, "shop", PolicyViolation, "can repeat a row of it")


# -- join cycles between parties ---------------------------------------------------------------------------
CYCLE_GRANTS = [  # beyond bench/tpch.py's: every party of the join sees the effect of each party's own joins
    ("bank", ("carrier.lineitem.l_suppkey", "carrier.supplier.s_suppkey"), "PLAINTEXT_AFTER_JOIN"),
    ("carrier", ("bank.nation.n_regionkey", "bank.region.r_regionkey"), "PLAINTEXT_AFTER_JOIN"),
]

Q5 = """SELECT n.n_name, SUM(l.l_extendedprice * (1 - l.l_discount)) AS revenue
FROM bank.customer c, shop.orders o, carrier.lineitem l, carrier.supplier s, bank.nation n, bank.region r
WHERE c.c_custkey = o.o_custkey AND l.l_orderkey = o.o_orderkey AND l.l_suppkey = s.s_suppkey
  AND c.c_nationkey = s.s_nationkey AND s.s_nationkey = n.n_nationkey AND n.n_regionkey = r.r_regionkey
  AND r.r_name = 'ASIA' AND o.o_orderdate >= DATE '1994-01-01' AND o.o_orderdate < DATE '1995-06-01'
GROUP BY n.n_name ORDER BY revenue DESC"""

CYCLES = {
    "q5": Q5,
    "triangle_closed_by_a_many_to_many_edge": """SELECT COUNT(*) AS lines, SUM(l.l_extendedprice) AS total
        FROM bank.customer c, shop.orders o, carrier.lineitem l, carrier.supplier s
        WHERE c.c_custkey = o.o_custkey AND l.l_orderkey = o.o_orderkey AND l.l_suppkey = s.s_suppkey
          AND c.c_nationkey = s.s_nationkey""",
    "closing_edge_written_first": """SELECT n.n_name, COUNT(*) AS lines
        FROM carrier.supplier s JOIN bank.customer c ON c.c_nationkey = s.s_nationkey
        JOIN carrier.lineitem l ON l.l_suppkey = s.s_suppkey JOIN shop.orders o ON l.l_orderkey = o.o_orderkey
          AND c.c_custkey = o.o_custkey JOIN bank.nation n ON n.n_nationkey = s.s_nationkey GROUP BY n.n_name""",
    # a LEFT JOIN's ON is no filter after the join: the spine refuses the cycle, the translation joins on shares
    "through_the_null_side_of_a_left_join": """SELECT COUNT(*) AS lines, SUM(l.l_extendedprice) AS total
        FROM bank.customer c JOIN shop.orders o ON c.c_custkey = o.o_custkey
        JOIN carrier.lineitem l ON l.l_orderkey = o.o_orderkey
        LEFT JOIN carrier.supplier s ON s.s_suppkey = l.l_suppkey AND s.s_nationkey = c.c_nationkey""",
}


@pytest.fixture(scope="module")
def cycles(tmp_path_factory, federation_writer, grants_for, oracle_for):
    path = federation_writer(tmp_path_factory.mktemp("tpch_cycles"), tables(), grants_for(*GRANTS, *CYCLE_GRANTS),
                             parties=PARTIES, min_group_size=1)
    with path.open("a", encoding="utf-8") as out:
        out.write(UNIQUE)
    with Engine(path) as engine:
        yield oracle_for(engine)


@pytest.mark.parametrize("sql", CYCLES.values(), ids=CYCLES.keys())
def test_a_join_cycle_between_parties_equals_duckdb(cycles, sql):
    assert cycles.engine.check(sql, "shop") is None
    assert cycles.check(sql, "shop").num_rows > 0


def test_a_cycles_closing_edge_filters_the_pk_fk_joins(cycles):
    """Q5: the PSI joins follow the unique keys (c_custkey, o_orderkey, n_nationkey); the many-to-many
    c_nationkey = s_nationkey, which closes the cycle, is a filter on the joined shares."""
    steps = cycles.engine.plan(Q5, "shop").physical.steps
    joined = [(s.left_keys, s.right_keys) for s in steps if isinstance(s, EquiJoin)]
    assert joined == [(("c.c_custkey",), ("o.o_custkey",)), (("o.o_orderkey",), ("l.l_orderkey",)),
                      (("s.s_nationkey",), ("n.n_nationkey",))]
    (stage,) = [s for s in steps if isinstance(s, SecureStage)]
    assert any("c_nationkey" in f and "s_nationkey" in f for f in stage.filters), stage.filters


def test_q5_with_the_bench_grants_is_refused_at_plan_time(tmp_path, federation_writer, grants_for, assert_refused):
    """The carrier joins its lineitem to its suppliers before the PSI, so the bank (which joins the carrier's rows
    on the nation key) sees which lineitems had a supplier: without a grant of l_suppkey it may not."""
    with tpch_engine(tmp_path, federation_writer, grants_for) as engine:
        assert_refused(engine, Q5, "shop", PolicyViolation, "bank may not learn carrier.lineitem.l_suppkey")



def test_gathering_counts_the_rows_the_unique_side_joins(tmp_path, federation_writer, plaintext_grants, oracle_for):
    """Every column PLAINTEXT to the shop and a window the spine does not place: the shop computes the query
    (planner/gather.py) and the threshold counts the customers each nation row is joined to, not the nation."""
    sql = """SELECT n.n_name, COUNT(*) AS orders, ROW_NUMBER() OVER (ORDER BY n.n_name) AS r
        FROM bank.customer c, bank.nation n, shop.orders o
        WHERE c.c_nationkey = n.n_nationkey AND c.c_custkey = o.o_custkey GROUP BY n.n_name"""
    path = federation_writer(tmp_path, tables(), plaintext_grants(PARTIES), parties=PARTIES, min_group_size=3)
    with path.open("a", encoding="utf-8") as out:
        out.write(UNIQUE)
    with Engine(path) as engine:
        assert engine.plan(sql, "shop").physical.steps[-1].mode == "tables"
        assert oracle_for(engine).check(sql, "shop").num_rows > 0
