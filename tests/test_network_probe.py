"""A node that registers a query late (its `run` still queued or slow) is not taken for one that
dropped it: a peer's liveness probe answers "pending" for a query it never heard of, "ended" for one
it finished or aborted, so a waiting node keeps waiting in the first case and fails in the second.

The late node is made late by a hook, not a sleep: its `run` is held until a given peer has probed it
about that very query (and been answered), so the probe meets the race every time."""

from __future__ import annotations

import json
import uuid

import pytest

from sqlsecure.engine import Engine
from tests.test_network_mode import (  # noqa: F401 (module-scoped helpers of the network tests)
    OVERHEAD_ROWS, PSI_JOIN, SPU_FILTER, _line, _peers, data_oracle, two_party_cluster, write_party,
)

LATE_NODE = """
import json, sys, threading
from sqlsecure.executors.runtime import network
from sqlsecure.cli import main

prober, do_action = sys.argv.pop(1), network.Node.do_action
probed, changed = set(), threading.Condition()

def query_of(action):
    return json.loads(action.body.to_pybytes().partition(b"\\n")[0]).get("query")

def registers_late(self, context, action):
    if action.type == "run":  # prepared only once `prober` asked about the query and was answered
        with changed:
            seen = changed.wait_for(lambda: query_of(action) in probed, timeout=60)
        print("RUN", "after its probe" if seen else "unprobed", flush=True)
        return do_action(self, context, action)
    answer = do_action(self, context, action)
    if action.type == "alive" and self._caller(context) == prober:
        with changed:
            probed.add(query_of(action))
            changed.notify_all()
    return answer

network.Node.do_action = registers_late
sys.argv[0] = "sqlsecure"
main()
"""


@pytest.fixture(scope="module")
def late_cluster(tmp_path_factory):
    directory = tmp_path_factory.mktemp("network-late")
    write_party(directory, "bank", "v", OVERHEAD_ROWS, 11)
    write_party(directory, "shop", "w", OVERHEAD_ROWS, 12)
    running = two_party_cluster(directory, "late", timeout=20)
    yield running
    running.stop()


@pytest.mark.parametrize("sql, late, prober", [(PSI_JOIN, "shop", "bank"), (SPU_FILTER, "shop", "dealer"),
                                               (SPU_FILTER, "dealer", "shop")],
                         ids=["party-late-for-psi", "party-late-for-the-dealer", "dealer-late-for-a-party"])
def test_a_node_that_registers_the_query_late_still_answers(late_cluster, oracle_for, sql, late, prober):
    """`late` takes the query only after `prober` found it silent and asked whether it runs it."""
    late_cluster.kill(late)
    late_cluster.start(late, script=(LATE_NODE, prober))
    try:
        with Engine(late_cluster.path, runtime="network", identity="bank") as issuer:
            data_oracle(late_cluster, issuer, oracle_for).check(sql, "bank")
        assert _line(late_cluster.procs[late], 60).strip() == "RUN after its probe"  # the race was met
    finally:
        late_cluster.kill(late)
        late_cluster.start(late)
