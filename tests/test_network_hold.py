"""What a node holds of a query's messages before its executor asks for them is bounded per peer
and per query (`HoldLimits`); beyond, the query fails with a ProtocolError naming the limit.

The mailboxes alone, without processes: `deliver` is what a node's message-stream handler calls for
every frame; the limits over real streams are tested in test_network_mode.py."""

import pytest

from sqlsecure.errors import ConfigError, ProtocolError
from sqlsecure.executors.runtime.network import HoldLimits, NetworkChannel

QUERY = "ab" * 16


def channel(**limits) -> NetworkChannel:
    """Node `me`'s channel of a query with peers a and b (no sends: no Flight clients needed)."""
    return NetworkChannel("me", ["a", "b", "me"], QUERY, peers=None, timeout=5, limits=HoldLimits(**limits))


def test_defaults_are_generous_but_finite():
    limits = HoldLimits()
    assert 64 << 20 <= limits.peer_bytes <= limits.query_bytes <= 4 << 30
    assert 1000 <= limits.peer_messages <= limits.query_messages <= 100_000


def test_one_peer_beyond_its_bytes_or_messages_fails_the_query():
    ch = channel(peer_bytes=10, peer_messages=3)
    ch.deliver("a", "t1", b"x" * 6)
    ch.deliver("b", "t1", b"y" * 10)  # another peer has its own budget
    with pytest.raises(ProtocolError, match=r"16 bytes from 'a' > 10 \(network_hold_peer_bytes\)"):
        ch.deliver("a", "t2", b"x" * 10)
    me = ch.endpoint("me")
    assert me.recv("b", "t1") == b"y" * 10  # what was held before is still received, in order
    with pytest.raises(ProtocolError, match="query aborted.*network_hold_peer_bytes"):  # then the executor stops
        me.recv("b", "t2")
    with pytest.raises(ProtocolError, match="query aborted"):
        me.send("a", "t3", b"")

    ch = channel(peer_bytes=100, peer_messages=2)
    ch.deliver("a", "t1", b"")
    ch.deliver("a", "t2", b"")
    with pytest.raises(ProtocolError, match=r"network_hold_peer_messages"):
        ch.deliver("a", "t3", b"")


def test_received_messages_free_the_budget():
    ch = channel(peer_bytes=10, peer_messages=2)
    me = ch.endpoint("me")
    for round_ in range(5):  # far more than the limits in all, never more than them held
        ch.deliver("a", f"t{round_}", b"x" * 10)
        assert me.recv("a", f"t{round_}") == b"x" * 10
    ch.deliver("a", "u1", b"x" * 5)
    ch.deliver("a", "u2", b"x" * 5)
    assert me.recv("a", "u1") == b"x" * 5


def test_all_peers_together_are_bounded_per_query():
    ch = channel(peer_bytes=10, query_bytes=15)
    ch.deliver("a", "t", b"x" * 8)
    with pytest.raises(ProtocolError, match=r"16 bytes from all peers > 15 \(network_hold_query_bytes\)"):
        ch.deliver("b", "t", b"y" * 8)

    ch = channel(peer_messages=5, query_messages=3)
    for peer in ("a", "b", "a"):
        ch.deliver(peer, "t", b"")
    with pytest.raises(ProtocolError, match="network_hold_query_messages"):
        ch.deliver("b", "t", b"")


def test_the_limits_come_from_the_federation_file(tmp_path, make_federation):
    from sqlsecure.federation import load_federation

    path = make_federation(tmp_path)
    text = path.read_text()
    path.write_text(text.replace("[federation]\n", "[federation]\nnetwork_hold_peer_bytes = 2048\n"
                                                    "network_hold_query_messages = 9\n", 1))
    assert HoldLimits.from_config(load_federation(path)) == HoldLimits(peer_bytes=2048, query_messages=9)
    path.write_text(text.replace("[federation]\n", "[federation]\nnetwork_hold_peer_bytes = -1\n"
                                                    "network_hold_query_bytes = 1.5\n", 1))
    with pytest.raises(ConfigError, match="network_hold_peer_bytes.*whole number(.|\n)*network_hold_query_bytes"):
        load_federation(path)
