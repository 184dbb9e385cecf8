"""ECDH-PSI against its plaintext reference; encoding rules; communication bounds."""

import decimal
import threading
from itertools import product

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlsecure.errors import ProtocolError
from sqlsecure.executors.channel import InProcessChannel
from sqlsecure.executors.ecdh import BlindingKey, hash_to_points
from sqlsecure.executors.encoding import encode_keys
from sqlsecure.executors.psi import compose_matches, local_join_indices, psi_join_indices


def nested_loop_join(left, right):
    """The reference of the reference: every (i, j) with equal non-NULL keys."""
    return sorted((i, j) for (i, a), (j, b) in product(enumerate(left), enumerate(right))
                  if a is not None and a == b)


def run_psi(left, right, channel=None):
    channel = channel or InProcessChannel(["a", "b"], timeout=30)
    out, errors = {}, []

    def side(name, peer, keys, is_left):
        try:
            out[name] = psi_join_indices(channel.endpoint(name), peer, "t", keys, is_left)
        except Exception as exc:  # pragma: no cover - surfaced below
            errors.append(exc)
            channel.abort(str(exc))

    threads = [threading.Thread(target=side, args=("a", "b", left, True)),
               threading.Thread(target=side, args=("b", "a", right, False))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out["a"], out["b"], channel


def enc(values):
    return [None if v is None else str(v).encode() for v in values]


def test_local_reference_matches_nested_loop():
    left = enc([1, 2, 2, None, 3, 5])
    right = enc([2, 2, 3, 3, None, 7, 1])
    li, ri = local_join_indices(left, right)
    assert sorted(zip(li.tolist(), ri.tolist())) == nested_loop_join(left, right)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(0, 8)), max_size=25),
       st.lists(st.one_of(st.none(), st.integers(0, 8)), max_size=25))
def test_psi_equals_reference(left_values, right_values):
    left, right = enc(left_values), enc(right_values)
    li, ri, _ = run_psi(left, right)
    assert len(li) == len(ri)
    assert sorted(zip(li.tolist(), ri.tolist())) == nested_loop_join(left, right)


def test_psi_communication_is_bounded():
    left = enc(list(range(100)) * 2)  # 100 distinct keys, each twice
    right = enc(range(50, 130))  # 80 distinct, 50 in common
    li, ri, channel = run_psi(left, right)
    assert len(li) == 100
    stats = channel.stats
    assert stats.messages[("a", "b")] == 3 and stats.messages[("b", "a")] == 3
    assert stats.bytes[("a", "b")] == 32 * 100 + 32 * 80 + 4 * 50
    assert stats.bytes[("b", "a")] == 32 * 80 + 32 * 100 + 4 * 50


def test_no_plaintext_key_crosses():
    secret = b"s" + b"customer-4711-secret"
    channel = InProcessChannel(["a", "b"])
    sent = []
    original = channel._send

    def spy(src, dst, tag, payload):
        sent.append(bytes(payload))
        original(src, dst, tag, payload)

    channel._send = spy
    run_psi([secret, b"i1"], [b"i1", b"i2"], channel)
    assert sent and not any(secret in m or b"customer-4711" in m for m in sent)


def test_empty_and_disjoint():
    li, ri, _ = run_psi([], enc([1, 2]))
    assert len(li) == len(ri) == 0
    li, ri, _ = run_psi(enc([1]), enc([2]))
    assert len(li) == 0


def test_blinding_commutes():
    points = hash_to_points([b"x", b"y"])
    a, b = BlindingKey(), BlindingKey()
    assert a.blind(b.blind(points)) == b.blind(a.blind(points))
    with pytest.raises(ProtocolError):
        a.blind(b"short")


def test_peer_that_vanishes_fails_with_its_name():
    channel = InProcessChannel(["a", "b"], timeout=0.5)
    with pytest.raises(ProtocolError, match="'b'"):
        psi_join_indices(channel.endpoint("a"), "b", "t", enc([1, 2]), True)


def test_typed_encoding():
    ints = pa.table({"k": pa.array([5, 1], pa.int32())})
    bigints = pa.table({"k": pa.array([5], pa.int64())})
    strings = pa.table({"k": pa.array(["5", "1"])})
    decimals = pa.table({"k": pa.array([decimal.Decimal("5.50"), decimal.Decimal("500")], pa.decimal128(6, 2))})
    decimals2 = pa.table({"k": pa.array([decimal.Decimal("5.5")], pa.decimal128(4, 1))})
    assert encode_keys(ints, ("k",))[0] == encode_keys(bigints, ("k",))[0]
    assert not set(encode_keys(ints, ("k",))) & set(encode_keys(strings, ("k",)))
    assert encode_keys(decimals, ("k",))[0] == encode_keys(decimals2, ("k",))[0]
    assert encode_keys(decimals, ("k",))[1] == b"d500"
    two = pa.table({"a": ["x", "xy", None], "b": ["yz", "z", "q"]})
    encoded = encode_keys(two, ("a", "b"))
    assert encoded[0] != encoded[1] and encoded[2] is None  # no ambiguity from concatenation


def test_compose_matches_reference():
    rng = np.random.default_rng(3)
    provenance = rng.integers(0, 10, 40)
    matched = rng.integers(0, 12, 30)
    rows, pairs = compose_matches(provenance, matched)
    expected = [(t, k) for t in range(40) for k in range(30) if matched[k] == provenance[t]]
    assert list(zip(rows.tolist(), pairs.tolist())) == expected
