"""he_group_sum / he_sum against the plaintext reference; refusals; communication bounds."""

import math

import numpy as np
import pytest

from sqlsecure.errors import DataError, ProtocolError
from sqlsecure.executors.runtime.channel import InProcessChannel
from sqlsecure.executors.heu import (
    HEParams,
    group_codes,
    group_sum_reference,
    he_group_sum_labels,
    he_group_sum_values,
    he_sum_labels,
    he_sum_values,
    reveal_group_sums,
    to_fixed_point,
)

SMALL = HEParams(key_bits=1024)


def run(values, codes, groups, params=SMALL, to="a", ungrouped=False):
    """A (labels) and B (values, key owner) in two threads; returns (outputs, channel)."""
    channel = InProcessChannel(["a", "b"], timeout=60)
    if ungrouped:
        fa = lambda ep: he_sum_labels(ep, "b", "g", params)  # noqa: E731
        fb = lambda ep: he_sum_values(ep, "a", "g", values, params)  # noqa: E731
    else:
        fa = lambda ep: he_group_sum_labels(ep, "b", "g", codes, groups, params)  # noqa: E731
        fb = lambda ep: he_group_sum_values(ep, "a", "g", values, params)  # noqa: E731

    def party(peer, fn):
        def program(ep):
            share = fn(ep)
            return share, (reveal_group_sums(ep, peer, "g", share, to) if to is not None else None)
        return program

    out = {}
    for name, (share, revealed) in channel.run({"a": party("b", fa), "b": party("a", fb)}).items():
        out[name] = share
        if to is not None:
            out[name + "_revealed"] = revealed
    return out, channel


def check(revealed, codes, groups, values):
    ref = group_sum_reference(codes, groups, values)
    assert revealed.counts.tolist() == ref.counts.tolist()
    assert revealed.sums == ref.sums


def test_negatives_several_columns_revealed_to_either_party():
    rng = np.random.default_rng(3)
    n, g = 700, 9
    values = [rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64), rng.integers(-3, 3, n),
              np.full(n, -1, dtype=np.int64)]
    codes = rng.integers(0, g, n)
    for to in ("a", "b"):
        out, _ = run(values, codes, g, to=to)
        check(out[f"{to}_revealed"], codes, g, values)
        other = "b" if to == "a" else "a"
        assert out[f"{other}_revealed"] is None
    # integer shares add up without a reveal; B's share alone is masked
    total = [[x + y for x, y in zip(a, b)] for a, b in zip(out["a"].shares, out["b"].shares)]
    assert total == group_sum_reference(codes, g, values).sums
    assert out["b"].counts is None and out["a"].counts.sum() == n


def test_shares_mod_2_64_for_the_spu_and_refusal_when_they_could_wrap():
    rng = np.random.default_rng(4)
    n, g = 300, 4
    values = [rng.integers(-(2**40), 2**40, n)]
    codes = rng.integers(0, g, n)
    out, _ = run(values, codes, g, params=HEParams(key_bits=1024, value_bits=48), to=None)
    ring = (out["a"].ring64() + out["b"].ring64()).astype(np.int64)  # wraps mod 2^64 by design
    assert ring[0].tolist() == group_sum_reference(codes, g, values).sums[0]
    out, _ = run(values, codes, g, to=None)  # 64-bit values: a sum may need more than 64 bits
    with pytest.raises(DataError, match="wrap"):
        out["a"].ring64()


def test_fixed_point_sums_and_avg():
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1000, 400).round(3)
    codes = rng.integers(0, 3, 400)
    out, _ = run([to_fixed_point(x, 20)], codes, 3)
    table = out["a_revealed"].to_arrow(frac_bits=[20])
    for gid in range(3):
        sel = x[codes == gid]
        assert table.column("sum_0")[gid].as_py() == pytest.approx(sel.sum(), abs=400 * 2**-20)
        assert table.column("avg_0")[gid].as_py() == pytest.approx(sel.mean(), abs=2**-20)


def test_sums_at_the_slot_limit_are_exact_and_beyond_it_refused():
    n = 257
    params = HEParams(key_bits=1024, value_bits=8)
    codes = np.zeros(n, dtype=np.int64)
    for v in (127, -128):
        values = [np.full(n, v, dtype=np.int64)]
        out, _ = run(values, codes, 1, params=params)
        assert out["a_revealed"].sums == [[v * n]]
    with pytest.raises(DataError, match="outside"):
        run([np.array([128] * 3)], np.zeros(3, dtype=np.int64), 1, params=params)


def test_one_group_and_he_sum():
    values = [np.arange(-50, 50, dtype=np.int64), np.arange(100, dtype=np.int64) * 3]
    out, _ = run(values, None, None, ungrouped=True)
    assert out["a_revealed"].sums == [[-50], [14850]] and out["a_revealed"].counts.tolist() == [100]


def test_empty_groups_and_no_rows():
    codes = np.array([0, 0, 3, 3, 3], dtype=np.int64)
    values = [np.array([1, 2, 3, 4, 5], dtype=np.int64)]
    out, _ = run(values, codes, 5)
    revealed = out["a_revealed"]
    assert revealed.counts.tolist() == [2, 0, 0, 3, 0] and revealed.sums == [[3, 0, 0, 12, 0]]
    assert revealed.avg(0) == [1.5, None, None, 4.0, None]
    out, _ = run([np.zeros(0, dtype=np.int64)], np.zeros(0, dtype=np.int64), 2)
    assert out["a_revealed"].sums == [[0, 0]] and out["a_revealed"].counts.tolist() == [0, 0]


def test_group_codes_from_labels():
    keys, codes = group_codes(["x", None, "y", "x", None])
    assert keys.to_pylist() == ["x", None, "y"] and codes.tolist() == [0, 1, 2, 0, 1]


def test_misaligned_labels_are_refused():
    with pytest.raises(ProtocolError, match="aligned"):
        run([np.arange(5)], np.zeros(4, dtype=np.int64), 1)


@pytest.mark.slow
def test_ten_thousand_groups_with_bounded_communication():
    rng = np.random.default_rng(6)
    n, g = 20_000, 10_000
    values = [rng.integers(-(10**9), 10**9, n)]
    codes = rng.integers(0, g, n)
    params = HEParams(key_bits=1024, batch_rows=8192)
    out, channel = run(values, codes, g, params=params)
    check(out["a_revealed"], codes, g, values)
    width = 256  # bytes of a ciphertext mod n^2 for a 1024-bit n
    k = out["a"].layout.slots(1024)
    stats = channel.stats
    assert out["a"].layout.slot_bits == 64 + 15 + 40 + 1 and k == 8
    assert stats.messages[("b", "a")] == 1 + math.ceil(n / 8192) + 1  # key, batches, reveal
    assert stats.messages[("a", "b")] == 2  # the group count, the masked sums
    assert stats.bytes[("b", "a")] <= n * width * 1.01 + g * 64 + 20_000  # one row per ciphertext
    assert stats.bytes[("a", "b")] <= math.ceil(g / k) * width * 1.01 + 3_000  # k groups per ciphertext


@pytest.mark.parametrize("rows_per_ct,merge", [(1, False), (2, True), (3, True), (3, False), (4, False)])
def test_rows_packed_per_ciphertext(monkeypatch, rows_per_ct, merge):
    """Any packing plan gives the reference sums: rows not a multiple of R, empty (group, position)
    accumulators, negatives, a NULL-like validity column, batches of whole ciphertexts. (A 1024-bit
    key has 8 slots of 114 bits here: up to 4 rows of 2 columns per ciphertext.)"""
    from sqlsecure.executors.heu import group_sum

    chosen = []

    def forced(rows, groups, columns, slots, slot_bits, n_bits, processes=1):
        plan = group_sum.PackingPlan(columns, slots, rows_per_ct, merge)
        chosen.append(plan)
        return plan

    monkeypatch.setattr(group_sum, "choose_packing", forced)
    rng = np.random.default_rng(8)
    n, g = 301, 7
    values = [rng.integers(-(2**62), 2**62, n), rng.integers(0, 2, n)]
    codes = rng.integers(0, g, n)
    codes[:5] = 6  # group 6 only at the first positions
    out, channel = run(values, codes, g, params=HEParams(key_bits=1024, batch_rows=100))
    check(out["a_revealed"], codes, g, values)
    assert chosen[0].rows_per_ciphertext == rows_per_ct
    width = 256
    assert channel.stats.bytes[("b", "a")] >= math.ceil(n / rows_per_ct) * width
    assert channel.stats.bytes[("b", "a")] <= math.ceil(n / rows_per_ct) * width * 1.05 + 20_000


def test_he_sum_packs_many_rows_per_ciphertext():
    values = [np.arange(-500, 500, dtype=np.int64)]
    out, channel = run(values, None, None, ungrouped=True)
    assert out["a_revealed"].sums == [[-500]]
    k = out["a"].layout.slots(1024)
    assert k >= 7 and channel.stats.bytes[("b", "a")] <= math.ceil(1000 / k) * 256 * 1.1 + 10_000


def test_2048_bit_key():
    rng = np.random.default_rng(7)
    values = [rng.integers(-1000, 1000, 300)]
    codes = rng.integers(0, 3, 300)
    out, channel = run(values, codes, 3, params=HEParams())
    check(out["a_revealed"], codes, 3, values)
    # 17 slots of 114 bits at 2048 bits: the cost model packs several rows per 512-byte ciphertext
    assert math.ceil(300 / 17) * 512 <= channel.stats.bytes[("b", "a")] <= 300 * 512 / 2


def test_value_columns_to_integers_with_nulls():
    import decimal

    import pyarrow as pa

    from sqlsecure.executors.heu.group_by import to_integers

    ints, valid, scale = to_integers(pa.chunked_array([pa.array([1, None], pa.int32()), pa.array([-3], pa.int32())]))
    assert ints.tolist() == [1, 0, -3] and valid.tolist() == [1, 0, 1] and scale == "1"
    ints, valid, _ = to_integers(pa.chunked_array([pa.array([True, None, False])]))
    assert ints.tolist() == [1, 0, 0] and valid.tolist() == [1, 0, 1]
    ints, valid, scale = to_integers(pa.chunked_array([pa.array([0.5, None, -1.25, 0.1])]))
    assert ints.tolist() == [500000, 0, -1250000, 100000] and valid.tolist() == [1, 0, 1, 1] and scale == "float"
    ints, _, scale = to_integers(pa.chunked_array([pa.array([decimal.Decimal("1.25"), None], pa.decimal128(5, 2))]))
    assert ints.tolist() == [125, 0] and scale == "1e2"
    assert to_integers(pa.chunked_array([], pa.int64()))[0].tolist() == []
    for bad in (pa.array([2**63], pa.uint64()), pa.array([1e14]), pa.array([float("nan")])):
        with pytest.raises(DataError):
            to_integers(pa.chunked_array([bad]))
