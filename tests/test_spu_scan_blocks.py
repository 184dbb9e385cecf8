"""The segmented scan's prefix network with Brent–Kung block levels around a Sklansky core
(`relational._scan_levels`), checked in plaintext first: every prefix of sums and of segmented sums,
at sizes that are and are not powers of two, with and without block levels; then on the SPU."""

import numpy as np
import pytest

from sqlsecure.executors.spu import arith, relational
from sqlsecure.executors.spu.local import run_spu
from sqlsecure.executors.spu.shares import as_ring

SIZES = [0, 1, 2, 3, 5, 8, 13, 17, 64, 100, 1000, 4097]


def apply_levels(levels, values, flags):
    """The segmented combine level by level in plaintext, as `segmented_scan` does on shares: every
    right row reads its left neighbour's value and flag as they were before the level."""
    v, f = values.copy(), flags.copy()
    for left, right in levels:
        assert not np.isin(left, right).any() and (left < right).all()
        v[right] = np.where(f[right] == 1, v[right], v[left] + v[right])
        f[right] = f[left] | f[right]
    return v


def segmented_reference(values, flags):
    run = np.cumsum(flags)
    return np.array([values[(run == run[i]) & (np.arange(values.size) <= i)].sum() for i in range(values.size)],
                    dtype=np.int64)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("blocks", [0, 1, 2, 3])
def test_block_levels_compute_every_prefix(n, blocks):
    """Any number of block levels gives all prefix sums, in ceil(log2(n >> k)) + 2 k levels."""
    rng = np.random.default_rng(n)
    x = rng.integers(-50, 50, n)
    levels = relational._scan_levels(n, blocks)
    assert apply_levels(levels, x, np.zeros(n, np.int64)).tolist() == np.cumsum(x).tolist()
    k = min(blocks, max(0, (n.bit_length() - 1)))
    assert len(levels) == relational.scan_depth(n, blocks)
    assert len(levels) <= (relational.log2_ceil(n >> k) + 2 * k if n > 1 else 0)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("blocks", [0, 3])
def test_block_levels_restart_at_every_start_with_duplicates(n, blocks):
    """Segmented sums over runs of equal keys (runs of 1, long runs, a start on row 0 or not) equal
    the per-run running sums."""
    rng = np.random.default_rng(n + 1)
    keys = np.sort(rng.integers(0, max(1, n // 7), n))
    flags = np.r_[1, (keys[1:] != keys[:-1]).astype(np.int64)][:n]
    x = rng.integers(-50, 50, n)
    levels = relational._scan_levels(n, blocks)
    assert apply_levels(levels, x, flags).tolist() == segmented_reference(x, flags).tolist()


def test_block_levels_cut_the_combines_of_a_long_scan():
    """At 10^5 rows: 3 block levels (20 levels, 2.58 n combines) against Sklansky's 17 levels of <= n/2
    (8.15 n); short scans keep Sklansky's depth."""
    n = 100_000
    assert relational.scan_blocks(n, extremes=False) == 3
    assert relational.scan_blocks(10_000, extremes=False) == 0
    assert relational.scan_blocks(n, extremes=True) == 1
    levels = relational._scan_levels(n, 3)
    assert len(levels) == 20
    assert sum(r.size for _, r in levels) <= 2.6 * n
    assert sum(r.size for _, r in relational._scan_levels(n, 0)) == 815_024


@pytest.mark.parametrize("n", [0, 1, 2, 3, 17, 1000])
def test_segmented_scan_with_block_levels_equals_plaintext(n, monkeypatch):
    """On the SPU (2 parties): SUM, COUNT and MAX per run, NULL-like runs of one row, with the block
    levels' thresholds lowered so that 1000 rows take them (2 for the sums, 1 with MAX)."""
    monkeypatch.setattr(relational, "SCAN_BLOCK_ROWS", 128)
    monkeypatch.setattr(relational, "SCAN_BLOCK_ROWS_EXTREMES", 256)
    assert n < 1000 or (relational.scan_blocks(n, extremes=False), relational.scan_blocks(n, extremes=True)) == (2, 1)
    rng = np.random.default_rng(n)
    flags = (rng.random(n) < 0.02).astype(np.int64)
    flags[:1] = 1
    x = rng.integers(-1000, 1000, n)

    def program(s):
        v = arith.share_input(s, 0, as_ring(x) if s.index == 0 else None, (n,))
        f = arith.share_input(s, 1, as_ring(flags) if s.index == 1 else None, (n,))
        ones = arith.public(s, np.ones(n, np.int64))
        sums, ext = relational.segmented_scan(s, [v, ones], [v], f, [True])
        return [s.open_many(arith=[c.data])[0] for c in (*sums, *ext)]

    total, count, high = run_spu(2, program).results[0]
    run = np.cumsum(flags)  # ascending: the runs' rows in order
    assert total.astype(np.int64).tolist() == segmented_reference(x, flags).tolist()
    assert count.astype(np.int64).tolist() == segmented_reference(np.ones(n, np.int64), flags).tolist()
    want = np.concatenate([np.maximum.accumulate(x[run == r]) for r in np.unique(run)]) if n else x
    assert high.astype(np.int64).tolist() == want.tolist()
