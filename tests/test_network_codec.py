"""The plan codec: every step round-trips through JSON; anything else is refused (never unpickled)."""

import json
import pickle

import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import ProtocolError
from sqlsecure.executors.runtime.plan_codec import decode_plan, encode_plan
from sqlsecure.policy.masking import Mask as MaskSpec
from sqlsecure.planner.physical import EnclaveStage, Finish, Mask, Noise, PhysicalPlan, RunLocal
from sqlsecure.policy.privacy import NoiseSpec, Release

QUERIES = [  # PSI joins, per-party compute, HE group-by, SPU stages, UNION ALL, semi joins, single party
    "SELECT region, COUNT(*) FROM bank.customers GROUP BY region",
    "SELECT c.name, o.amount FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id",
    "SELECT o.category, SUM(o.amount) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "GROUP BY o.category HAVING SUM(o.amount) > 100",
    "SELECT c.region, SUM(o.amount), AVG(o.amount) FROM bank.customers c JOIN shop.orders o "
    "ON c.id = o.customer_id GROUP BY c.region",
    "SELECT COUNT(*) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id WHERE c.age > o.amount",
    "SELECT c.region, o.category, MAX(o.amount) FROM bank.customers c JOIN shop.orders o "
    "ON c.id = o.customer_id GROUP BY c.region, o.category ORDER BY 3 DESC LIMIT 3",
    "SELECT c.id, p.premium FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "JOIN insurer.policies p ON o.customer_id = p.customer_id",
    "SELECT region, COUNT(*) FROM (SELECT region FROM bank.customers UNION ALL SELECT region FROM shop.orders) u "
    "GROUP BY region",
    "SELECT COUNT(*) FROM bank.customers WHERE id IN (SELECT customer_id FROM shop.orders)",
]


@pytest.fixture(scope="module")
def plans(tmp_path_factory, make_federation):
    path = make_federation(tmp_path_factory.mktemp("codec"), group_sums="he")
    with Engine(path) as engine:
        return [engine.plan(sql, issuer).physical for sql in QUERIES for issuer in ("bank", "shop")]


def test_every_plan_round_trips(plans):
    kinds = set()
    for plan in plans:
        data = encode_plan(plan)
        again = decode_plan(data, PhysicalPlan)
        assert again == plan and again.uses == plan.uses
        assert encode_plan(again) == data  # canonical
        kinds |= {type(s).__name__ for s in plan.steps}
    assert {"RunLocal", "EquiJoin", "Compute", "Reveal", "Finish", "HEGroupBy", "SecureStage"} <= kinds


def test_value_objects_round_trip():
    noise = Noise("shop", "p0", Release((NoiseSpec("o1", "sum", 4.5, 1.0, False), NoiseSpec("o2", "count")),
                                        0.5, 1e-7, "gaussian", 12.5))
    mask = Mask("bank", "p1", (("o0", MaskSpec("partial", keep=2)), ("o1", MaskSpec("generalise", bucket=5.0))))
    enclave = EnclaveStage("r1", (("bank", "a.x", "x0", "int"),), '{"op": "group"}', (("o0", "c0", "int"),),
                           "bank", "p2", True, ("ab" * 32,))
    plan = PhysicalPlan("bank", (RunLocal("bank", "SELECT 1", "r0"), noise, mask, enclave,
                                 Finish("bank", (("bank", "p1"),), "rows", None)),
                        leakage=(("shop", "the size"),), epsilon=0.5, delta=1e-6)
    assert decode_plan(encode_plan(plan), PhysicalPlan) == plan


def _plan_json(plans) -> dict:
    return json.loads(encode_plan(plans[2]))


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p.update({"$": "Popen"}), "unknown type"),
    (lambda p: p["steps"][0].update({"$": "os.system"}), "unknown type"),
    (lambda p: p["steps"][0].update({"extra": 1}), "unknown fields"),
    (lambda p: p["steps"][0].pop("sql"), "lacks field"),
    (lambda p: p["steps"][0].update({"sql": 5}), "expected a string"),
    (lambda p: p.update({"min_group_size": "4"}), "expected an integer"),
    (lambda p: p.update({"min_group_size": True}), "expected an integer"),
    (lambda p: p.update({"steps": {"a": 1}}), "expected a list"),
    (lambda p: p.update({"steps": [p["leakage"]]}), "expected a step"),
    (lambda p: p.update({"steps": [{"$": "NoiseSpec", "name": "x", "kind": "sum"}]}), "not a plan step"),
])
def test_malformed_plans_are_refused(plans, mutate, message):
    raw = _plan_json(plans)
    mutate(raw)
    with pytest.raises(ProtocolError, match=message):
        decode_plan(json.dumps(raw).encode(), PhysicalPlan)


def test_non_json_is_refused(plans):
    for data in (pickle.dumps(plans[0]), b"\xff\xfe", b"[1, 2]", b'{"$": "PhysicalPlan", "x": NaN}',
                 b"[" * 100000 + b"]" * 100000):
        with pytest.raises(ProtocolError):
            decode_plan(data, PhysicalPlan)
    with pytest.raises(ProtocolError, match="expected a PhysicalPlan"):
        decode_plan(encode_plan(RunLocal("bank", "SELECT 1", "r0")), PhysicalPlan)
