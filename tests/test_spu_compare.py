"""SPU comparisons, mux, sign/abs, min/max, division against plaintext numpy, with round bounds."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlsecure.executors.spu import arith, compare
from sqlsecure.executors.spu.local import run_spu
from sqlsecure.executors.spu.shares import as_ring, decode_fixed, encode_fixed, to_signed

PARTIES = [2, 3]
EDGES = [0, 1, -1, 2**62 - 1, -(2**62), 2**62 - 2, -(2**62) + 1, 2**31, -(2**31)]
EDGE = st.sampled_from(EDGES) | st.integers(-(2**62), 2**62 - 1)


def share(s, values, owner=0, frac=0):
    values = np.asarray(values)
    ring = (as_ring(values) if frac == 0 else encode_fixed(values, frac)) if s.index == owner else None
    return arith.share_input(s, owner, ring, values.shape, frac)


@pytest.mark.parametrize("nparties", PARTIES)
@settings(max_examples=12, deadline=None)
@given(st.lists(st.tuples(EDGE, EDGE), min_size=1, max_size=20))
def test_comparisons_on_edge_values(nparties, pairs):
    pairs = pairs + [(v, v) for v, _ in pairs[:3]]  # always some ties
    x = np.array([p[0] for p in pairs], dtype=np.int64)
    y = np.array([p[1] for p in pairs], dtype=np.int64)

    def program(s):
        xs, ys = share(s, x), share(s, y, owner=nparties - 1)
        bools = [compare.less_than(s, xs, ys), compare.less_equal(s, xs, ys), compare.greater_than(s, xs, ys),
                 compare.greater_equal(s, xs, ys), compare.equal(s, xs, ys), compare.not_equal(s, xs, ys)]
        opened = s.open_many(bits=[b.data for b in bools])
        lt_arith = compare.less_than(s, xs, ys, arith=True)
        chosen = compare.mux(s, bools[0], xs, ys)
        return opened, arith.reveal_many(s, [lt_arith, chosen])

    run = run_spu(nparties, program)
    opened, (lt_arith, chosen) = run.results[0]
    want = [x < y, x <= y, x > y, x >= y, x == y, x != y]
    for got, expected in zip(opened, want):
        assert (got.astype(bool) == expected).all()
    assert (lt_arith == (x < y)).all()
    assert (to_signed(chosen) == np.where(x < y, x, y)).all()


@pytest.mark.parametrize("nparties, rounds", [(2, 6), (3, 8)])
def test_less_than_rounds(nparties, rounds):
    def program(s):
        a, b = share(s, np.arange(100)), share(s, np.arange(100)[::-1].copy())
        return compare.less_than(s, a, b)

    assert run_spu(nparties, program).rounds == rounds


def test_equality_rides_along_with_less_than_for_two_parties():
    def program(s):
        return compare.compare_bits(s, share(s, np.array([3, 0, -3])).data)

    assert run_spu(2, program).rounds == 6


@pytest.mark.parametrize("nparties", PARTIES)
def test_fixed_point_compare_mux_sign_abs(nparties):
    x = np.array([-1.5, -0.0001, 0.0, 0.25, 1e6, -1e6, 3.0])
    y = np.array([-1.5, 0.0, -0.0001, 0.5, -1e6, 1e6, 3.0000153])
    f = 16

    def program(s):
        xs, ys = share(s, x, frac=f), share(s, y, owner=1, frac=f)
        lt = compare.less_than(s, xs, ys)
        return arith.reveal_many(s, [compare.mux(s, lt, ys, xs), compare.sign(s, xs), compare.abs_(s, xs),
                                     compare.maximum(s, xs, ys), compare.minimum(s, xs, ys)])

    mx, sign, absx, mx2, mn = run_spu(nparties, program, frac_bits=f).results[0]
    ex, ey = decode_fixed(encode_fixed(x, f), f), decode_fixed(encode_fixed(y, f), f)
    assert (decode_fixed(mx, f) == np.maximum(ex, ey)).all()
    assert (decode_fixed(mx2, f) == np.maximum(ex, ey)).all()
    assert (decode_fixed(mn, f) == np.minimum(ex, ey)).all()
    assert (to_signed(sign) == np.sign(ex)).all()
    assert (decode_fixed(absx, f) == np.abs(ex)).all()


@pytest.mark.parametrize("nparties", PARTIES)
@settings(max_examples=8, deadline=None)
@given(st.lists(EDGE, min_size=1, max_size=17))
def test_min_max_tournament(nparties, values):
    x = np.array(values, dtype=np.int64)

    def program(s):
        xs = share(s, x, owner=nparties - 1)
        return arith.reveal_many(s, [compare.min_all(s, xs), compare.max_all(s, xs)])

    mn, mx = run_spu(nparties, program).results[0]
    assert to_signed(mn)[0] == x.min() and to_signed(mx)[0] == x.max()


@pytest.mark.parametrize("nparties", PARTIES)
def test_divide_for_avg(nparties):
    rng = np.random.default_rng(5)
    sums = np.concatenate([rng.normal(0, 1e6, 40), [0.0, -3.5, 2**28, -(2**28), 1.0]])
    counts = np.concatenate([rng.integers(1, 2**31, 20), rng.integers(1, 50, 20), [1, 7, 1, 3, 2**31 - 1]])
    fx = np.array([10.0, -7.25, 1e-3, 5e5])
    fy = np.array([4.0, 0.5, 3.0, 123.456])
    f = 16

    def program(s):
        q1 = compare.divide(s, share(s, sums, frac=f), share(s, counts, owner=nparties - 1))
        q2 = compare.divide(s, share(s, fx, frac=f), share(s, fy, owner=1, frac=f), y_bits=40)
        return arith.reveal_many(s, [q1, q2])

    q1, q2 = run_spu(nparties, program, frac_bits=f).results[0]
    want1 = decode_fixed(encode_fixed(sums, f), f) / counts
    err1 = np.abs(decode_fixed(q1, f) - want1)
    assert (err1 <= 4 / 2**f + np.abs(want1) * 2**-(f - 1)).all(), err1.max()  # documented bound
    want2 = fx / decode_fixed(encode_fixed(fy, f), f)
    assert np.allclose(decode_fixed(q2, f), want2, rtol=2**-14, atol=4 / 2**f)


@pytest.mark.parametrize("nparties", PARTIES)
@pytest.mark.parametrize("bits", [2, 9, 17, 21, 33, 63, 64])
def test_bounded_width_comparisons(nparties, bits):
    """compare_bits with |d| < 2^(bits-1): the narrower trees (the sort's tiebreak) agree with numpy."""
    lim = 2 ** (bits - 1) - 1
    rng = np.random.default_rng(bits)
    d = np.concatenate([rng.integers(-lim, lim, 200, endpoint=True), [0, 1, -1, lim, -lim]]).astype(np.int64)

    def program(s):
        lt, eq = compare.compare_bits(s, share(s, d, owner=nparties - 1).data, want_eq=True, bits=bits)
        return s.open_many(bits=[lt, eq])

    lt, eq = run_spu(nparties, program).results[0]
    assert (lt.astype(bool) == (d < 0)).all() and (eq.astype(bool) == (d == 0)).all()


@pytest.mark.parametrize("want_eq, tail", [(False, 2 * 64), (True, 3 * 64)])
def test_two_party_comparison_bytes(want_eq, tail):
    """2 parties, 64-bit: a first level of 5 private ANDs on 32-bit half lanes (20 B), fan-out
    levels of 16/8 bits (3 arrays each), packed 4/2/1-bit levels — 31.5 B per element and
    direction in 6 rounds, sign and equality from one tree."""
    n = 512

    def program(s):
        x, y = share(s, np.arange(n)), share(s, np.arange(n)[::-1].copy(), owner=1)
        return compare.compare_bits(s, x.data - y.data, want_eq=want_eq)

    run = run_spu(2, program)
    assert run.rounds == 6
    first = 5 * 4 * n
    fanout = 3 * n * (2 + 1) + 3 * (n // 2 + n // 4)  # h = 16, 8; packed h = 4, 2
    assert run.channel.stats.bytes[("p0", "p1")] == first + fanout + tail
    assert run.channel.stats.messages[("p0", "p1")] == 6  # one message per round
