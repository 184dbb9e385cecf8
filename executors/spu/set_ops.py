"""INTERSECT / EXCEPT (DISTINCT and ALL) and the FULL OUTER JOIN over secret relations (issue 16).

Kept apart from `secret_relation` (whose operators they reuse) so that module stays small. Like every
secret-relation operator, each keeps the rows of its inputs in place, weighted by a secret validity
bit: the output size is a public function of the input sizes (a set operation: n + m; a full join:
n*m + n + m) and nothing is opened.

Set operations compare whole rows with NULLs equal (SQL's rule for DISTINCT and set operations), as
Secrecy's sort-based operators do: both inputs concatenated with a side tag (right 0, left 1), sorted
by (invalid, every compared column, tag), so each run of equal valid rows holds the right rows first,
then the left ones. Two segmented sums give, at a left row, how many right rows its run holds (r) and
its own number among the run's left rows (l): INTERSECT ALL keeps it when l <= r (min(a, b) copies),
EXCEPT ALL when l > r (max(a - b, 0) copies), INTERSECT when l = 1 and r > 0, EXCEPT when l + r = 1.
"""

from __future__ import annotations

import numpy as np

from sqlsecure.executors.spu import arith, compare, relational
from sqlsecure.executors.spu import secret_relation as sr
from sqlsecure.executors.spu.session import SpuSession
from sqlsecure.executors.spu.shares import ArithShare
from sqlsecure.executors.spu.stage import SV

SET_KINDS = ("intersect", "except")


def set_operation(s: SpuSession, kind: str, keep_all: bool, left: sr.SecretRelation, right: sr.SecretRelation,
                  kinds: list[str], carry: list[str]) -> sr.SecretRelation:
    """`left` INTERSECT / EXCEPT [ALL] `right`, comparing left's columns but `carry` (passed through from
    the kept left row, e.g. provenance) with right's, in order, as `kinds`. The n + m rows with left's
    columns, valid at the kept left rows. Rounds: 1 (canonical) + the sort + neighbour tests + 1 +
    2 log2 n (both counts in one scan) + one or two comparisons (~7 each) + 1-2 products."""
    n, m = left.n, right.n
    compared = [c for c in left.columns if c not in carry]
    right_rows = sr.SecretRelation(dict(zip(compared, right.columns.values())), right.valid)
    both = sr.union_all(s, [sr.SecretRelation({c: left.columns[c] for c in compared}, left.valid), right_rows], kinds)
    carried = {c: _padded(s, left.columns[c], m) for c in carry}
    rel = sr.SecretRelation({**both.columns, **carried}, both.valid)
    if n + m == 0:
        return rel
    tag = arith.public(s, np.concatenate([np.ones(n, np.int64), np.zeros(m, np.int64)]))
    values = sr.canonical(s, list(both.columns.values()))
    invalid = sr._ones(s, n + m) - rel.valid
    keys = [invalid, *sr._key_columns(values), tag]
    left_row, right_row = arith.beaver_mul_many(s, [(rel.valid, tag), (rel.valid, sr._ones(s, n + m) - tag)])
    sorted_keys, payload = relational.sort(s, keys, [*sr._flatten(rel), left_row, right_row])
    starts = relational.neighbour_starts(s, sorted_keys[:-1])
    own, seen = relational.segmented_sum(s, [payload[-2], payload[-1]], starts)
    keep = arith.beaver_mul(s, payload[-2], _kept(s, kind, keep_all, own, seen))
    return sr.SecretRelation(sr._rebuild(payload[:-2], rel.columns), keep)


def _padded(s: SpuSession, v: SV, m: int) -> SV:
    """A left column followed by m NULLs (the right rows' part of a carried column; local)."""
    null = sr.null_column(v.kind, m, s.frac_bits, like=v)
    return SV([arith.concat([a, b]) for a, b in zip(v.limbs, null.limbs)], arith.concat([v.valid, null.valid]), v.kind)


def _kept(s: SpuSession, kind: str, keep_all: bool, own: ArithShare, seen: ArithShare) -> ArithShare:
    """At a left row numbered `own` in its run, after `seen` right rows of it: 1 where the operator keeps it."""
    ones = sr._ones(s, len(own))
    if keep_all:
        within = compare.less_equal(s, own, seen, arith=True)
        return within if kind == "intersect" else ones - within
    if kind == "except":
        return compare.equal(s, own + seen, ones, arith=True)
    first = compare.equal(s, own, ones, arith=True)
    return arith.beaver_mul(s, first, compare.greater_than(s, seen, sr._zeros(len(own)), arith=True))


def full_join(s: SpuSession, left: sr.SecretRelation, right: sr.SecretRelation, left_keys, right_keys,
              right_kinds: dict[str, str]) -> sr.SecretRelation:
    """FULL OUTER JOIN: the LEFT join's n*m pairs and n unmatched left rows (`secret_relation.pairs_join`),
    then the m right rows with NULL left columns, valid where the right row is valid and no pair matched
    it. Rounds: the LEFT join's + a comparison (7) + 1 (its matches counted with the left side's)."""
    n, m = left.n, right.n
    joined = sr.pairs_join(s, left, right, left_keys, right_keys, None, True, right_kinds)
    pairs = joined.valid.data[:n * m].reshape(n, m)
    matches = ArithShare(pairs.sum(axis=0, dtype=np.uint64) if m else np.zeros(0, np.uint64))
    matched = compare.greater_than(s, matches, sr._zeros(m), arith=True) if m else sr._zeros(0)
    lonely = arith.beaver_mul(s, right.valid, sr._ones(s, m) - matched) if m else sr._zeros(0)
    unmatched = {**{c: sr.null_column(v.kind, m, s.frac_bits) for c, v in left.columns.items()}, **right.columns}
    return sr.union_all(s, [joined, sr.SecretRelation(unmatched, lonely)], [v.kind for v in joined.columns.values()])
