"""The minimum group size counts each protected owner's distinct rows, never joined rows (issue 15, leak 4).

A group (or an ungrouped aggregate) revealed to an issuer passes only if every other party whose
rows the aggregate reads contributes at least k distinct rows to it: duplicates on the issuer's
side (5 bank rows of one customer, an issuer-made table of repeated ids) never inflate it.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlsecure.executors.spu import arith, relational
from sqlsecure.executors.spu.local import run_spu
from sqlsecure.executors.spu.shares import as_ring, to_signed


def _share(s, values, owner=0):
    values = np.asarray(values, dtype=np.int64)
    return arith.share_input(s, owner, as_ring(values) if s.index == owner else None, values.shape)


def reference_distinct(keys, weights, values) -> dict:
    """Per group: the number of distinct values among its rows of weight 1."""
    return {key: len({v for k, w, v in zip(keys, weights, values) if k == key and w})
            for key in set(keys.tolist())}


@pytest.mark.parametrize("nparties", [2, 3])
@settings(max_examples=6, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1), st.integers(0, 5)), min_size=1, max_size=30))
def test_group_by_within_counts_distinct_weighted_values(nparties, rows):
    keys, weights, values = (np.array([r[i] for r in rows], dtype=np.int64) for i in range(3))

    def program(s):
        g = relational.group_by(s, [_share(s, keys)], [("sum", _share(s, weights, 1)), ("count", None)],
                                within=(_share(s, weights, 1), _share(s, values, nparties - 1)))
        kept = relational.compact(s, g.last, [*g.keys, g.distinct, *g.aggregates])
        return [to_signed(c) for c in arith.reveal_many(s, kept)]

    key, distinct, total, count = run_spu(nparties, program).results[0]
    assert dict(zip(key.tolist(), distinct.tolist())) == reference_distinct(keys, weights, values)
    assert dict(zip(key.tolist(), count.tolist())) == {k: int((keys == k).sum()) for k in set(keys.tolist())}
    assert dict(zip(key.tolist(), total.tolist())) == {k: int(weights[keys == k].sum()) for k in set(keys.tolist())}
