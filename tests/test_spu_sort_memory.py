"""Peak memory of the SPU sort, per compared pair of its largest level (issue 16: Q13's sort held the
memory peak in `_lexicographic_less`).

The comparison circuits are generators whose frames live through every round; they used to hold
each pair's difference, its comparison word and its first-round inputs until the last round (~500 B
per pair of the largest level, both parties and the dealer in one process). They now drop them as
soon as they are cut into lanes, and a level's positions are int32. The bound is on bytes that
numpy reports to tracemalloc, a function of the sizes only (fixed dealer seeds: fixed levels), not of
the machine's speed.
"""

import random
import tracemalloc

import numpy as np
import pytest

from sqlsecure.executors.spu import dealer, relational
from sqlsecure.executors.spu.local import run_spu
from tests.test_spu_rounds import share

PEAK_PER_PAIR = 420  # bytes per pair of the largest level (measured ~370 at 4096 rows, ~340 at 20000; was ~500-560)


@pytest.fixture(autouse=True)
def fixed_dealer_seed(monkeypatch):
    rng = random.Random(20)
    monkeypatch.setattr(dealer, "fresh_seed", lambda: rng.randbytes(16))


def sort_peak(monkeypatch, n: int) -> tuple[int, int]:
    """(peak traced bytes of a 2-party sort of one 64-bit key over n rows, pairs of its largest level)."""
    keys = np.random.default_rng(n).integers(-2 ** 40, 2 ** 40, n)
    pairs = []
    partition = relational.partition_order
    monkeypatch.setattr(relational, "partition_order", lambda rows, wanted, less: partition(
        rows, wanted, lambda x, y: (pairs.append(x.size), less(x, y))[1]))
    tracemalloc.start()
    try:
        run_spu(2, lambda s: share(s, keys))  # the imports and the channel's first buffers, out of the count
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        sorted_keys = run_spu(2, lambda s: s.open_many(arith=[relational.sort(s, [share(s, keys)])[0][0].data])[0])
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert np.array_equal(sorted_keys.results[0].view(np.int64), np.sort(keys))
    return peak, max(pairs)


def test_sort_peak_memory_is_bounded_per_compared_pair(monkeypatch):
    peak, pairs = sort_peak(monkeypatch, 4096)
    assert peak <= PEAK_PER_PAIR * pairs
