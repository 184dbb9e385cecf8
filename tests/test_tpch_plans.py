"""Federated TPC-H plans (issue 16): customer at a bank, orders at a shop, lineitem at a carrier, issued by the
shop. A chain of PSI joins needs each key granted PLAINTEXT_AFTER_JOIN only to its own edge's partner (SCQL's
rule), because only the two parties of an edge see its keys; these tests check that against the bytes that
cross and against the plan's leakage statement."""

import re
import sys
from pathlib import Path

import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import PolicyViolation
from sqlsecure.executors.runtime.channel import InProcessChannel
from sqlsecure.planner.ccl import CCLInference
from sqlsecure.planner.parse import load_query
from sqlsecure.planner.physical import EquiJoin

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the TPC-H-shaped tables of test_ccl_tpch, reused
from test_ccl_tpch import PARTIES, Q3, tpch_tables  # noqa: E402

EDGE_KEYS = [  # each key to its edge's partner only: the carrier is granted nothing of the bank's c_custkey
    ("shop", ("bank.customer.c_custkey", "carrier.lineitem.l_orderkey"), "PLAINTEXT_AFTER_JOIN"),
    ("bank", ("shop.orders.o_custkey",), "PLAINTEXT_AFTER_JOIN"),
    ("carrier", ("shop.orders.o_orderkey",), "PLAINTEXT_AFTER_JOIN"),
]
REST = [  # filter columns to every party of the join (the matches show which rows passed), measures to the shop
    ("shop", ("bank.customer.c_mktsegment", "carrier.lineitem.l_shipdate"), "PLAINTEXT_AFTER_COMPARE"),
    ("bank", ("shop.orders.o_orderdate", "carrier.lineitem.l_shipdate"), "PLAINTEXT_AFTER_COMPARE"),
    ("carrier", ("bank.customer.c_mktsegment", "shop.orders.o_orderdate"), "PLAINTEXT_AFTER_COMPARE"),
    ("shop", ("carrier.lineitem.l_extendedprice", "carrier.lineitem.l_discount"), "PLAINTEXT_AFTER_AGGREGATE"),
]


def engine_with(tmp_path, federation_writer, grants_for, grants) -> Engine:
    path = federation_writer(tmp_path, tpch_tables(), grants_for(*grants), parties=PARTIES, min_group_size=1)
    return Engine(path)


@pytest.fixture
def per_edge(tmp_path, federation_writer, grants_for, oracle_for):
    with engine_with(tmp_path, federation_writer, grants_for, EDGE_KEYS + REST) as engine:
        yield oracle_for(engine)


def test_q3_with_each_key_granted_to_its_edge_partner_only_equals_duckdb(per_edge):
    assert per_edge.check(Q3, "shop").num_rows > 0


def psi_traffic(monkeypatch) -> list[tuple[str, str, int]]:
    """(sender, receiver, plan step) of every PSI message the in-process channel carries from now on."""
    sent, original = [], InProcessChannel._send

    def spy(self, src, dst, tag, payload):
        found = re.search(r"/(\d+)/psi", tag)
        if found:
            sent.append((src, dst, int(found.group(1))))
        original(self, src, dst, tag, payload)

    monkeypatch.setattr(InProcessChannel, "_send", spy)
    return sent


def test_only_an_edges_two_parties_exchange_its_keys_as_the_leakage_says(per_edge, monkeypatch):
    """Every PSI message of a join step runs between that step's two parties, and the plan says that exactly
    those two learn which key values they share: no third party of the chain sees the edge's keys."""
    sent = psi_traffic(monkeypatch)
    result = per_edge.engine.execute(Q3, "shop")
    steps = result.plan.physical.steps
    joins = {i: s for i, s in enumerate(steps) if isinstance(s, EquiJoin) and s.left_party != s.right_party}
    assert len(joins) == 2
    for index, step in joins.items():
        crossed = {frozenset((src, dst)) for src, dst, i in sent if i == index}
        assert crossed == {frozenset((step.left_party, step.right_party))}, (index, crossed)
    learners = {party for party, what in result.plan.physical.leakage if what.startswith("which of its ")}
    assert learners == {p for s in joins.values() for p in (s.left_party, s.right_party)}
    for step in joins.values():
        keys = ", ".join(step.left_keys)
        told = {party for party, what in result.plan.physical.leakage if what.startswith(f"which of its {keys} ")}
        assert told == {step.left_party}, (keys, told)


def test_a_key_not_granted_to_its_edge_partner_is_never_psi_joined(tmp_path, federation_writer, grants_for):
    """Without the carrier's grant of o_orderkey the shop-carrier edge keeps its intersection secret: no PSI
    runs between them (the query is placed on shares instead)."""
    grants = [g for g in EDGE_KEYS if g[0] != "carrier"] + REST
    with engine_with(tmp_path, federation_writer, grants_for, grants) as engine:
        steps = engine.plan(Q3, "shop").physical.steps
        assert not any(isinstance(s, EquiJoin) and {s.left_party, s.right_party} == {"shop", "carrier"}
                       for s in steps)


def test_a_filter_column_not_granted_to_a_later_edge_is_refused(tmp_path, federation_writer, grants_for):
    """The carrier's matches show which orders survived the bank's c_mktsegment filter (the shop's index
    vector maps them), so the carrier needs that column PLAINTEXT_AFTER_COMPARE though it joins no bank key."""
    rest = [g for g in REST if g[0] != "carrier"] + [
        ("carrier", ("shop.orders.o_orderdate",), "PLAINTEXT_AFTER_COMPARE")]
    with engine_with(tmp_path, federation_writer, grants_for, EDGE_KEYS + rest) as engine:
        with pytest.raises(PolicyViolation, match="carrier may not learn bank.customer.c_mktsegment"):
            engine.plan(Q3, "shop")
        assert engine.check(Q3, "shop").startswith("PolicyViolation")


Q13 = """SELECT c_count, COUNT(*) AS custdist
FROM (SELECT c.c_custkey, COUNT(o.o_orderkey) AS c_count
      FROM bank.customer c LEFT OUTER JOIN shop.orders o ON c.c_custkey = o.o_custkey
      GROUP BY c.c_custkey) AS c_orders
GROUP BY c_count ORDER BY custdist DESC, c_count DESC"""
Q13_KEYS = [("shop", ("bank.customer.c_custkey",), "PLAINTEXT_AFTER_JOIN"),
            ("bank", ("shop.orders.o_custkey",), "PLAINTEXT_AFTER_JOIN")]


def column_control(engine: Engine, sql: str, issuer: str) -> None:
    tree = load_query(sql, engine.catalog, engine.config.dialect, None, issuer)
    CCLInference(engine.policy.grants, engine.catalog, issuer).check_reveal(tree)


@pytest.fixture
def q13_engine(tmp_path, federation_writer, grants_for):
    """Q13's grants (SCQL's: the join keys PLAINTEXT_AFTER_JOIN to the partner), customer's key declared unique."""
    path = federation_writer(tmp_path, tpch_tables(), grants_for(*Q13_KEYS), parties=PARTIES, min_group_size=1)
    with path.open("a", encoding="utf-8") as out:
        out.write('\n[parties.bank.unique]\ncustomer = [["c_custkey"]]\n')
    with Engine(path) as engine:
        yield engine


def test_q13_groups_by_a_unique_key_matched_with_the_issuers_own_keys(q13_engine):
    """As SCQL allows: each group of c_custkey is one customer and the shop's own orders of it, so the
    counts tell the shop nothing of the bank's keys beyond what the join may (`check` agrees)."""
    column_control(q13_engine, Q13, "shop")
    verdict = q13_engine.check(Q13, "shop")
    assert verdict is None or not verdict.startswith("PolicyViolation"), verdict


@pytest.mark.parametrize("sql, refusal", [
    ("SELECT c.c_custkey, COUNT(o.o_orderkey) AS n FROM bank.customer c LEFT JOIN shop.orders o "
     "ON c.c_custkey = o.o_custkey GROUP BY c.c_custkey",  # the key itself, unmatched ones included
     "bank.customer.c_custkey through the output column 'c_custkey'"),
    ("SELECT n, COUNT(*) AS k FROM (SELECT c.c_custkey, COUNT(o.o_orderkey) AS n FROM bank.customer c LEFT JOIN "
     "shop.orders o ON c.c_custkey = o.o_custkey WHERE c.c_acctbal > 0 GROUP BY c.c_custkey) t GROUP BY n",
     "bank.customer.c_acctbal"),  # the groups then count rows of a filter the shop may not learn
    ("SELECT n, COUNT(*) AS k FROM (SELECT c.c_custkey, COUNT(o.o_orderkey) AS n FROM (SELECT c_custkey FROM "
     "bank.customer UNION ALL SELECT c_custkey FROM bank.customer) c LEFT JOIN shop.orders o "
     "ON c.c_custkey = o.o_custkey GROUP BY c.c_custkey) t GROUP BY n",  # the declared key, repeated by a union
     "bank.customer.c_custkey .*after GROUP BY"),
])
def test_what_a_counted_key_does_not_allow(q13_engine, sql, refusal):
    with pytest.raises(PolicyViolation, match=refusal):
        column_control(q13_engine, sql, "shop")
    assert q13_engine.check(sql, "shop").startswith("PolicyViolation")


def test_q13_over_a_key_not_declared_unique_stays_refused(tmp_path, federation_writer, grants_for):
    """A repeated key's group sizes are its histogram: PLAINTEXT_AFTER_GROUP_BY is needed (stricter than SCQL)."""
    path = federation_writer(tmp_path, tpch_tables(), grants_for(*Q13_KEYS), parties=PARTIES, min_group_size=1)
    with Engine(path) as engine:
        with pytest.raises(PolicyViolation, match="bank.customer.c_custkey.*PLAINTEXT_AFTER_JOIN"):
            column_control(engine, Q13, "shop")
