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
from sqlsecure.errors import OperationalError, ProtocolError
from sqlsecure.executors.runtime import network
from sqlsecure.executors.runtime.network import NetworkChannel
from tests.test_network_mode import (  # noqa: F401 (module-scoped helpers of the network tests)
    PSI_JOIN, SPU_FILTER, _line, _peers, _prepare_body, _versions, data_oracle, small_cluster,
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
    running = small_cluster(tmp_path_factory, "late", (11, 12), timeout=20)
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


# ------------------------------------------------- the waiting side, without processes: scripted probes

QUERY = "cd" * 16


class ScriptedPeer:
    """Stands in for `Peers`: answers each `alive` probe with the next of `answers` (state, process);
    `then(channel)` runs after the last scripted probe, e.g. to deliver the awaited message."""

    def __init__(self, *answers, then=None):
        self.answers, self.then, self.probes = list(answers), then, 0
        self.channel: NetworkChannel | None = None

    def call(self, name, kind, body, timeout):
        assert kind == "alive" and json.loads(body) == {"query": QUERY}
        state, process = self.answers[min(self.probes, len(self.answers) - 1)]
        self.probes += 1
        if self.probes == len(self.answers) and self.then is not None:
            self.then(self.channel)
        return json.dumps({"state": state, "incarnation": process}).encode()


@pytest.fixture
def fast_probes(monkeypatch):
    monkeypatch.setattr(network, "PROBE_EVERY", 0.01)
    monkeypatch.setattr(network, "POLL", 0.0)  # the registration deadline is then the channel's timeout


def waiting_channel(peer: ScriptedPeer, timeout: float = 30.0) -> NetworkChannel:
    peer.channel = NetworkChannel("me", ["me", "shop"], QUERY, peers=peer, timeout=timeout)
    return peer.channel


def test_a_peer_not_yet_registered_is_waited_for(fast_probes):
    peer = ScriptedPeer(("pending", "p1"), ("pending", "p1"), ("running", "p1"),
                        then=lambda ch: ch.deliver("shop", "spu/request", b"r"))
    assert waiting_channel(peer).endpoint("me").recv("shop", "spu/request") == b"r"
    assert peer.probes == 3


def test_a_peer_pending_past_the_issuers_deadline_fails_naming_it(fast_probes):
    peer = ScriptedPeer(("pending", "p1"))
    with pytest.raises(OperationalError, match=r"'shop' has not registered this query 0.2 s after.*'spu/request'"):
        waiting_channel(peer, timeout=0.2).endpoint("me").recv("shop", "spu/request")


@pytest.mark.parametrize("answers, heard, message", [
    ([("ended", "p1")], False, "'shop' ended this query"),
    ([("running", "p1"), ("pending", "p2")], False, "'shop' restarted"),  # another process answers
    ([("pending", "p1")], True, "'shop' restarted"),  # it sent messages of a query it never heard of
    ([("done", "p1")], False, "'shop' finished without sending 'spu/request'"),
    ([("lost", "p1")], False, "'shop' gave a malformed answer"),
])
def test_a_peer_that_ended_or_restarted_fails_the_wait_at_once(fast_probes, answers, heard, message):
    channel = waiting_channel(ScriptedPeer(*answers))
    if heard:
        channel.deliver("shop", "earlier", b"")
        assert channel.endpoint("me").recv("shop", "earlier") == b""
    with pytest.raises(ProtocolError, match=message):
        channel.endpoint("me").recv("shop", "spu/request")


# ------------------------------------------------------------ the answering side: a node's services


def test_a_node_tells_a_query_it_never_heard_of_from_one_that_ended(late_cluster):
    """Never heard of: "pending"; aborted before its `run` arrived: "ended", and the late `run` and
    the streams for it are refused without waiting for the `run`."""
    bank = _peers(late_cluster, "bank")
    query = {"query": uuid.uuid4().hex}
    body = json.dumps(query).encode()
    try:
        first = json.loads(bank.call("shop", "alive", body, 30))
        assert first["state"] == "pending"
        bank.call("shop", "abort", body, 30)  # the issuer's abort overtook the query's run
        assert json.loads(bank.call("shop", "alive", body, 30)) == {"state": "ended",
                                                                    "incarnation": first["incarnation"]}
        stream = bank.open_stream("shop", query["query"])
        with pytest.raises(ProtocolError, match="refused exchange.*runs no query"):  # at the send or the close
            stream.send("x", b"payload")
            stream.close()
        with Engine(late_cluster.path) as embedded:
            plan = embedded.plan(PSI_JOIN, "bank").physical
        with pytest.raises(ProtocolError, match="refused run.*already ended at shop"):
            bank.call("shop", "run", _prepare_body(plan, query["query"], ["bank", "shop"], _versions(bank), PSI_JOIN),
                      30)
    finally:
        bank.close()


def test_a_restarted_node_is_another_incarnation(late_cluster):
    bank = _peers(late_cluster, "bank")
    body = json.dumps({"query": uuid.uuid4().hex}).encode()
    try:
        before = json.loads(bank.call("shop", "alive", body, 30))["incarnation"]
        late_cluster.kill("shop")
        late_cluster.start("shop")
        assert json.loads(bank.call("shop", "alive", body, 30))["incarnation"] != before
    finally:
        bank.close()


def test_a_node_remembers_the_last_ended_queries_only():
    ended = network.EndedQueries(keep=2)
    for query_id in ("q1", "q2", "q2", "q3"):
        ended.add(query_id)
    assert "q1" not in ended and "q2" in ended and "q3" in ended
