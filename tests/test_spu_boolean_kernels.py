"""The boolean protocols' local kernels against plaintext references: packing lanes of 1, 2 and 4
bits for the wire, splitting lanes into halves, and the 2-party comparison circuit they serve."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlsecure.executors.spu import boolean, compare
from sqlsecure.executors.spu.local import run_spu


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([1, 2, 4]), st.lists(st.integers(0, 255), max_size=70))
def test_packed_lanes_hold_each_lane_once_and_unpack_to_themselves(h, raw):
    lanes = (np.array(raw, np.int64) % (1 << h)).astype(np.uint8)
    packed = boolean._pack_lanes(lanes, h)
    assert packed.dtype == np.uint8 and packed.size == (lanes.size * h + 7) // 8
    assert (boolean._unpack_lanes(packed, h, lanes.size) == lanes).all()
    bits = np.unpackbits(packed, bitorder="big" if h == 1 else "little")  # packbits is MSB first
    want = [(int(v) >> b) & 1 for v in lanes for b in (range(h) if h > 1 else [0])]
    assert bits[:len(want)].tolist() == want and not bits[len(want):].any()


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([4, 8, 16, 32]), st.lists(st.integers(0, 2**64 - 1), max_size=30))
def test_halves_are_the_high_and_low_bits_of_each_lane(h, raw):
    words = np.array(raw, np.uint64) & np.uint64((1 << 2 * h) - 1)
    lanes = words.astype(boolean._UINT[max(2 * h, 8)])
    hi, lo = boolean._halves(lanes, h)
    assert (hi.astype(np.uint64) == words >> np.uint64(h)).all()
    assert (lo.astype(np.uint64) == words & np.uint64((1 << h) - 1)).all()


@pytest.mark.parametrize("k", [2, 8, 9, 18, 35, 63, 64])
def test_comparison_circuit_matches_plaintext_at_every_width(k):
    rng = np.random.default_rng(k)
    limit = 2 ** (k - 1) - 1
    d = np.concatenate([rng.integers(-limit, limit + 1, 300), [0, 1, -1, limit, -limit]]).astype(np.int64)
    share0 = rng.integers(0, 2**63, d.size, dtype=np.uint64)
    share1 = d.astype(np.uint64) - share0

    def program(s):
        lt, eq = boolean.run_circuits(s, [boolean.less_equal_circuit(s, share0 if s.index == 0 else share1, k)])[0]
        (lt_open, eq_open) = s.open_many(bits=[lt, eq])
        return lt_open, eq_open

    lt, eq = run_spu(2, program).results[0]
    assert (lt.astype(bool) == (d < 0)).all() and (eq.astype(bool) == (d == 0)).all()


@pytest.mark.parametrize("bits, width", [(7, 8), (18, 32), (35, 64), (16, 16)])
def test_carry_save_layer_on_narrow_words_sums_exactly_and_moves_their_bytes(bits, width):
    rng = np.random.default_rng(bits)
    n = 257
    words = [rng.integers(0, 2**63, n, dtype=np.uint64) for _ in range(3)]

    def program(s):
        operands = [boolean.private_input(s, i, boolean.low_words(words[i], bits)) for i in range(3)]
        stats = s.endpoint.channel.stats
        before = stats.bytes[("p0", "p1")]
        (a, b), = boolean.run_circuits(s, [boolean.csa_circuit(operands)])
        sent = stats.bytes[("p0", "p1")] - before
        return s.open_many(xor=[a.astype(np.uint64), b.astype(np.uint64)]), sent, a.dtype

    (a, b), sent, dtype = run_spu(3, program).results[0]
    assert dtype == np.dtype(f"uint{width}") and sent == 2 * 8 * -(-n * width // 64)  # d, e: packed in words
    ring = 2**width
    assert [(int(x) + int(y)) % ring for x, y in zip(a, b)] == [sum(int(w[i]) for w in words) % ring for i in range(n)]


@pytest.mark.parametrize("bits", [8, 18, 35, 64])
def test_three_party_comparison_at_narrow_widths_matches_plaintext(bits):
    rng = np.random.default_rng(bits)
    limit = 2 ** (bits - 1) - 1
    d = np.concatenate([rng.integers(-limit, limit + 1, 200), [0, 1, -1, limit, -limit]]).astype(np.int64)
    shares = [rng.integers(0, 2**63, d.size, dtype=np.uint64) for _ in range(2)]
    shares.append(d.astype(np.uint64) - shares[0] - shares[1])

    def program(s):
        (lt, eq), = boolean.run_circuits(s, [compare.compare_circuit(s, shares[s.index], bits=bits)])
        return s.open_many(bits=[lt, eq])

    lt, eq = run_spu(3, program).results[0]
    assert (lt.astype(bool) == (d < 0)).all() and (eq.astype(bool) == (d == 0)).all()


@pytest.mark.parametrize("nparties", [2, 3])
def test_an_and_rounds_results_outlive_the_next_round(nparties):
    """Each round's message is written into a buffer the session reuses and a correction is read in
    place: results of one round must stay exact after later rounds (no result aliases either)."""
    rng = np.random.default_rng(nparties)
    rounds = [[rng.integers(0, 2**63, 300, dtype=np.uint64) for _ in range(3)] for _ in range(3)]

    def shares(s, value):
        return value if s.index == 0 else np.zeros_like(value)

    def program(s):
        kept = []
        for x, y1, y2 in rounds:
            items = [(shares(s, x), shares(s, y1)), boolean.FanoutAnd(shares(s, x), shares(s, y1), shares(s, y2))]
            if nparties == 2:
                items.append(boolean.PrivateAnd(x if s.index == 0 else np.zeros_like(x), y2 if s.index == 1 else np.zeros_like(y2)))
            got = boolean.and_arrays_many(s, items)
            kept.append([got[0], *got[1], *got[2:]])
        return [s.open_many(xor=products) for products in kept]

    for (x, y1, y2), products in zip(rounds, run_spu(nparties, program).results[0]):
        want = [x & y1, x & y1, x & y2] + ([x & y2] if nparties == 2 else [])
        assert all((got == w).all() for got, w in zip(products, want))
