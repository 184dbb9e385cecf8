"""Class 4's device as the planner chooses it (issues 16 and 20), on what the plan knows: the published sizes
and the query's filters (`cost.expected_rows`), the group party's code (the SPU sorts one narrow code and
carries the keys), the keys' published magnitude classes (`_groups_bound`). Plans only: no data at SF 1."""

import dataclasses
import sys
from pathlib import Path

import pytest
from sqlglot import parse_one

from sqlsecure.planner import plan_query
from sqlsecure.planner.cost import Link, estimate, expected_rows, selectivity
from sqlsecure.planner.physical import HEGroupBy, SecureStage

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the TPC-H-shaped federation of test_tpch_joins
from test_tpch_joins import tpch_engine  # noqa: E402

SF1 = {  # TPC-H SF 1 row counts, rounded up to a power of two as the parties publish them
    "bank": {"customer": 2 ** 18, "nation": 2 ** 5, "region": 2 ** 3},
    "shop": {"orders": 2 ** 21},
    "carrier": {"lineitem": 2 ** 23, "supplier": 2 ** 14},
}
Q10 = """SELECT c.c_custkey, c.c_name, SUM(l.l_extendedprice * (1 - l.l_discount)) AS revenue, c.c_acctbal, n.n_name
FROM bank.customer c, shop.orders o, carrier.lineitem l, bank.nation n
WHERE c.c_custkey = o.o_custkey AND l.l_orderkey = o.o_orderkey AND o.o_orderdate >= DATE '1993-10-01'
  AND o.o_orderdate < DATE '1994-01-01' AND l.l_returnflag = 'R' AND c.c_nationkey = n.n_nationkey
GROUP BY c.c_custkey, c.c_name, c.c_acctbal, n.n_name ORDER BY revenue DESC LIMIT 20"""
BY_KEY = """SELECT c.c_custkey, SUM(l.l_extendedprice) AS revenue
FROM bank.customer c, shop.orders o, carrier.lineitem l
WHERE c.c_custkey = o.o_custkey AND l.l_orderkey = o.o_orderkey AND o.o_orderdate >= DATE '1993-10-01'
  AND o.o_orderdate < DATE '1994-01-01' AND l.l_returnflag = 'R' GROUP BY c.c_custkey"""
WAN = Link(rtt=0.08, bandwidth=2e6)  # 80 ms, 16 Mbit/s


@pytest.fixture(scope="module")
def engine(tmp_path_factory, federation_writer, grants_for):
    with tpch_engine(tmp_path_factory.mktemp("cost_choice"), federation_writer, grants_for) as engine:
        yield engine


def planned(engine, sql: str, link: Link = Link(), magnitudes=None):
    """The shop's plan of `sql` as if the parties had published SF 1's sizes (and these magnitude classes)."""
    catalog = dataclasses.replace(engine.catalog, sizes=lambda party: SF1[party],
                                  magnitudes=magnitudes or (lambda party, table, columns: {}))
    return plan_query(sql, catalog=catalog, policy=engine.policy, issuer="shop", link=link)


def device(plan) -> str:
    steps = plan.physical.steps
    assert any(isinstance(s, HEGroupBy) for s in steps) != any(isinstance(s, SecureStage) for s in steps)
    return "he" if any(isinstance(s, HEGroupBy) for s in steps) else "spu"


def test_q10_at_sf1_sizes_goes_to_the_spu(engine):
    """Q10's join is priced at 2^23 x 1/3 x 1/3 x 1/10 = 93,207 rows (lineitem's published size, the order
    dates' two ranges, the return flag's equality; SF 1's join keeps 114,705), and the SPU sorts the bank's
    one group code with the four keys' 14 columns (validity and limbs) carried: SPU ≈ 2.1 s against HE ≈ 12 s
    in process. Priced at 2^23 rows and the keys' 10 limbs compared, as before, HE won (by the SPU's memory)."""
    plan = planned(engine, Q10)
    assert device(plan) == "spu"
    why = plan.explain()
    assert "~93,207 rows" in why and "1 key limb(s) compared, 14 carried" in why
    old = estimate(2 ** 23, 1, 10, Link(), arguments=1, memory=24 << 30)
    assert old.engine == "he" and "more than a quarter of a compute party's assumed memory" in old.why


def test_q10_over_a_slow_link_goes_to_he(engine):
    """Over 80 ms / 16 Mbit the SPU's ~56 round trips and ~173 MB cost ≈ 93 s; HE's ~55 round trips (18, and
    one per 320 KB of its ~12 MB of ciphertexts) ≈ 21 s."""
    plan = planned(engine, Q10, WAN)
    assert device(plan) == "he"
    assert "80 ms round trip" in plan.explain()


def test_few_groups_by_a_published_magnitude_class_keep_he_over_a_link(engine):
    """Q10's filters (~93,207 rows) grouped by c_custkey, whose magnitude class 4 (|v| < 16) allows at most
    32 groups, not √rows = 305: over 80 ms / 200 Mbit (issue 20's link) HE packs more rows per ciphertext,
    ≈ 9.4 s, against the SPU's sort's ≈ 11.6 s; priced with √rows groups HE's ≈ 15.9 s lost. In process the
    SPU (≈ 1.2 s) wins either way. With the class the SPU runs no sort but the one-hot group sums (the
    group threshold's counts are sums: carrier's lineitems are joined once by the declared order key, the
    bank counts its own customers), ≈ 3.4 s: it wins there too, and EXPLAIN's price is that path's."""
    classes = {("bank", "customer"): {"c_custkey": 4}}

    def published(party, table, columns):
        return classes.get((party, table), {})

    slow = Link(rtt=0.08, bandwidth=25e6)
    bounded = planned(engine, BY_KEY, slow, published)
    assert device(bounded) == "spu" and "~32 groups (at most" in bounded.explain()
    assert "one-hot group sums into 32 group rows" in bounded.explain() and "no sort: one-hot group sums, 1 round" \
        in bounded.explain()
    sort = estimate(93_207, 1, 1, slow, arguments=1, carried=2, groups=32)  # the SPU's sort instead
    assert sort.engine == "he" and sort.he_seconds < sort.spu_seconds
    assumed = planned(engine, BY_KEY, slow)
    assert device(assumed) == "spu" and "~305 groups (assumed √rows)" in assumed.explain()
    assert device(planned(engine, BY_KEY, Link(), published)) == "spu"


def test_he_wins_with_many_rows_few_groups_and_a_slow_link():
    """10^6 rows, 16 groups, 80 ms / 16 Mbit: HE's 8 rows per ciphertext cost ≈ 87 s (~64 MB, 218 round
    trips); the SPU's sort moves ~1.9 GB (≈ 960 s)."""
    priced = estimate(10 ** 6, 1, 1, WAN, arguments=1, carried=2, groups=16)
    assert priced.engine == "he" and priced.he_seconds < priced.spu_seconds / 5
    assert "~16 groups (at most" in priced.why


def test_carried_key_limbs_cost_less_than_compared_ones():
    """Q10's seven keys (22 limbs) at 10^5 rows: sorted on one code with 29 columns carried the SPU costs
    ≈ 3.3 s, comparing all 22 limbs ≈ 7.6 s; HE's price does not depend on the keys."""
    coded = estimate(10 ** 5, 1, 1, Link(), arguments=1, carried=29)
    compared = estimate(10 ** 5, 1, 22, Link(), arguments=1)
    assert coded.spu_seconds < compared.spu_seconds / 2 and coded.he_seconds == compared.he_seconds


@pytest.mark.parametrize("condition, fraction", [
    ("l_returnflag = 'R'", 1 / 10),
    ("o_orderdate >= DATE '1993-10-01' AND o_orderdate < DATE '1994-01-01'", 1 / 9),
    ("x BETWEEN 1 AND 5", 1 / 4),
    ("x IN (1, 2, 3)", 3 / 10),
    ("x = 1 OR y = 2", 1 / 10 + 1 / 10 - 1 / 100),
    ("NOT x = 1", 9 / 10),
    ("c_nationkey = n_nationkey", 1.0),  # a join inside one party: no reduction assumed
    ("f(x, y) > 0", 1.0),
])
def test_default_selectivities(condition, fraction):
    assert selectivity(parse_one(condition)) == pytest.approx(fraction)


def test_expected_rows_start_from_the_largest_published_size():
    assert expected_rows([2 ** 18, None, 2 ** 23], [parse_one("l_returnflag = 'R'")]) == round(2 ** 23 / 10)
    assert expected_rows([None], []) is None
    assert expected_rows([8], [parse_one("a = 1"), parse_one("b = 2")]) == 1  # at least one row
