"""Federated TPC-H plans (issue 16): customer at a bank, orders at a shop, lineitem at a carrier, issued by the
shop. A chain of PSI joins needs each key granted PLAINTEXT_AFTER_JOIN only to its own edge's partner (SCQL's
rule), because only the two parties of an edge see its keys; these tests check that against the bytes that
cross and against the plan's leakage statement."""

import re
import sys
from pathlib import Path

import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import Error, PolicyViolation
from sqlsecure.executors.runtime.channel import InProcessChannel
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
