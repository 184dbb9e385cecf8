"""Bytes per comparison (issue 20): the 2-party comparison on k bits in split lanes, and the sort's
keys of known widths packed with the tiebreak into one ring element — each against its plaintext
reference (numpy's sign, `plain_sort_order`), at range edges, ties, negatives and NULL-coded rows,
with the bytes the docstrings state."""

import numpy as np
import pytest

from sqlsecure.executors.spu import arith, boolean, compare, relational
from sqlsecure.executors.spu.local import run_spu
from sqlsecure.executors.spu.shares import as_ring

WIDTHS = [2, 8, 9, 12, 16, 17, 18, 19, 24, 31, 32, 33, 35, 40, 48, 62, 63, 64]


def share(s, values, owner=0):
    values = np.asarray(values, dtype=np.int64)
    return arith.share_input(s, owner, as_ring(values) if s.index == owner else None, values.shape)


def edge_differences(k: int, n: int, seed: int = 0) -> np.ndarray:
    """n differences with |d| < 2^(k-1): the range's edges ±(2^(k-1) - 1), ±1, 0 (equal values),
    the powers of two at the lanes' seams, then random values."""
    lim = (1 << (k - 1)) - 1
    seams = [v for j in range(k - 1) for v in (1 << j, -(1 << j), (1 << j) - 1)]
    fixed = np.array([lim, -lim, 1, -1, 0, 0, *seams], dtype=np.int64)
    rng = np.random.default_rng(seed + k)
    return np.concatenate([fixed, rng.integers(-lim, lim, n - fixed.size, endpoint=True)])[:n]


def lane_rounds(k: int) -> int:
    return max(8, 1 << (k - 1).bit_length()).bit_length() - 1


@pytest.mark.parametrize("want_eq", [True, False])
@pytest.mark.parametrize("k", WIDTHS)
def test_k_bit_comparison_against_numpy_with_its_stated_bytes(k, want_eq):
    """[d < 0] and [d == 0] on k bits equal numpy's at the range's edges, in at most log2(W) rounds
    and exactly `comparison_bytes(k)` per element and direction (the sharing sends nothing from p0)."""
    n = 512
    d = edge_differences(k, n)

    def program(s):
        x = share(s, d, owner=1)
        s.rounds = 0
        lt, eq = compare.compare_bits(s, x.data, want_eq=want_eq, bits=k)
        rounds = s.rounds
        return rounds, s.open_many(bits=[lt, *([eq] if want_eq else [])])

    run = run_spu(2, program)
    rounds, opened = run.results[0]
    assert (opened[0].astype(bool) == (d < 0)).all()
    if want_eq:
        assert (opened[1].astype(bool) == (d == 0)).all()
    assert rounds <= lane_rounds(k)
    opening = (len(opened) * n) // 8
    assert run.channel.stats.bytes[("p0", "p1")] - opening == boolean.comparison_bytes(k, want_eq) * n


def test_split_lanes_cost_less_and_never_more_rounds():
    """Every width costs at most its whole lane, and 18 bits (the tiebreak of 10^5 rows) and 35
    bits (a group code packed with it) cost about 3/4 and 5/8 of it."""
    for k in range(2, 65):
        for want_eq in (True, False):
            assert boolean.comparison_bytes(k, want_eq) <= boolean.lane_bytes(max(8, 1 << (k - 1).bit_length()), want_eq)
    assert boolean.comparison_bytes(18, True) == pytest.approx(11.625)
    assert boolean.comparison_bytes(35, False) == pytest.approx(19.375)
    assert boolean.comparison_bytes(64, True) == pytest.approx(31.625)
