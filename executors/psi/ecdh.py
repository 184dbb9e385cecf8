"""ECDH-PSI inner equi-join with multiplicities (Meadows 1986; Huberman–Franklin–Hogg 1999).

Both parties run `psi_join_indices` with their own key column(s); each gets the row indices of
its side of the join, in one common order, without seeing the other side's keys.

Rounds (each party sends, then receives; both directions at once):
  1. blinded:   its distinct keys, hashed to the curve and blinded with its fresh key, shuffled.
  2. reblinded: the peer's blinded keys blinded again with its own key, in the peer's order.
     Now each party holds H(x)^ab for its own keys and for the peer's, and sees which of its
     keys are in the intersection; the common order is the order of the H(x)^ab values.
  3. counts:    its row count for each intersection key (4 B each), in the common order.
Output order: by key (common order), then left row, then right row — so the left side repeats
each of its rows once per matching right row, and the right side tiles its rows.

Rounds 1 and 2 are streamed in messages of `BATCH` points (2 MiB): full batches, then one shorter
(possibly empty) batch that ends the round, so the receiver needs no count up front. A party sends
each blinded batch as soon as the workers finish it and re-blinds each of the peer's batches as it
arrives, with at most `WINDOW` batches being blinded at once (so both parties' batches interleave on
the process's shared X25519 workers). Messages per direction: (my distinct keys // BATCH + 1) +
(the peer's // BATCH + 1) + 1 for the counts (none in `psi_membership`) — 3 below 65,536 distinct
keys a side; the bytes are those of the unbatched protocol: 32 B per distinct key per round, 4 B
per common key.

Memory per party is a few numpy arrays of 32 B per distinct key (its points, the peer's re-blinded
points it sent, its own double-blinded points, their sort) and 8 B per row; no Python object per
key. Keys are told apart by their points (SHA-256), as the protocol itself does.

Leakage (semi-honest): each party learns the number of distinct keys of the other, which of its
own keys are in the intersection, and the other's multiplicity for each intersection key (all of
which the join result shows anyway). Nothing about non-matching keys crosses in the clear.
"""

from __future__ import annotations

import os
from collections import deque
from typing import NamedTuple

import numpy as np

from sqlsecure.errors import ProtocolError
from sqlsecure.executors.runtime.channel import Endpoint
from sqlsecure.executors.psi.blinding import POINT, BlindingKey, GroupWorkers, hash_to_buffer
from sqlsecure.executors.psi.encoding import Keys, distinct_encoded, per_row

BATCH = 1 << 16  # points per blinded / re-blinded message (2 MiB); a shorter batch is the last
WINDOW = 2  # batches being blinded at once per party: bounds memory, interleaves the parties' work


def group_rows(encoded: list[bytes | None]) -> dict[bytes, list[int]]:
    """Distinct non-NULL key -> its row indices, in row order."""
    groups: dict[bytes, list[int]] = {}
    for i, key in enumerate(encoded):
        if key is not None:
            groups.setdefault(key, []).append(i)
    return groups


def random_permutation(n: int) -> np.ndarray:
    """A uniformly random permutation from the OS's CSPRNG."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    return np.argsort(np.frombuffer(os.urandom(8 * n), dtype=np.uint64), kind="stable")


def expand(rows: list[list[int]], mine: np.ndarray, theirs: np.ndarray, left: bool) -> np.ndarray:
    """Row indices of my side of the join, given my rows per common key and both multiplicities."""
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64)
    flat = np.fromiter((r for group in rows for r in group), dtype=np.int64, count=int(mine.sum()))
    return expand_flat(flat, mine, theirs, left)


def expand_flat(flat: np.ndarray, mine: np.ndarray, theirs: np.ndarray, left: bool) -> np.ndarray:
    """`expand` with my rows concatenated key after key (`mine[i]` rows for key i)."""
    if len(mine) == 0:
        return np.zeros(0, dtype=np.int64)
    if left:
        return np.repeat(flat, np.repeat(theirs, mine))
    block = theirs * mine  # left count x right count per key
    total = int(block.sum())
    out_start = np.repeat(np.cumsum(block) - block, block)
    my_start = np.repeat(np.cumsum(mine) - mine, block)
    position = np.arange(total, dtype=np.int64) - out_start
    return flat[my_start + position % np.repeat(mine, block)]


def local_join_indices(left: list[bytes | None], right: list[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
    """Plaintext reference (and the local join of one party's two relations)."""
    lg, rg = group_rows(left), group_rows(right)
    common = sorted(set(lg) & set(rg))
    lrows, rrows = [lg[k] for k in common], [rg[k] for k in common]
    lcount = np.array([len(r) for r in lrows], dtype=np.int64)
    rcount = np.array([len(r) for r in rrows], dtype=np.int64)
    return expand(lrows, lcount, rcount, True), expand(rrows, rcount, lcount, False)


class Intersection(NamedTuple):
    """What a party holds after any PSI's matching rounds (ECDH, KKRT16, unbalanced)."""

    ids: np.ndarray  # per row of mine: the index of its distinct key, -1 for NULL
    distinct: int  # how many distinct keys I have
    common: np.ndarray  # indices of my distinct keys in the intersection, in the common order


def _distinct_points(encoded: Keys) -> tuple[np.ndarray, np.ndarray]:
    """(per row: index of its distinct key or -1 for NULL, the distinct keys' points as an S32 array).

    Only the distinct keys are hashed; keys are told apart by their hashes (SHA-256), as the protocol
    itself does."""
    rows, keys = distinct_encoded(encoded)
    hashed = np.frombuffer(hash_to_buffer(keys), dtype="S32")
    distinct, inverse = np.unique(hashed, return_inverse=True)
    return per_row(rows, inverse.reshape(-1)), distinct


def _batches(n: int) -> list[tuple[int, int]]:
    """Point ranges of the messages for n points: full BATCHes, then one shorter (maybe empty) batch."""
    return [(start, min(start + BATCH, n)) for start in range(0, n + 1, BATCH)]


def _intersect(endpoint: Endpoint, peer: str, tag: str, encoded: Keys,
               workers: GroupWorkers | None) -> Intersection:
    """Rounds 1-2, streamed in batches of BATCH points with at most WINDOW batches being blinded."""
    ids, distinct = _distinct_points(encoded)
    d = len(distinct)
    order = random_permutation(d)
    mine = memoryview(distinct[order].tobytes())  # shuffled
    del distinct
    key = BlindingKey()
    bounds = _batches(d)

    # Round 1: my blinded keys, sent batch by batch as the workers finish them.
    pending: deque = deque()
    for start, stop in bounds:
        pending.append(key.blind_later(mine[start * POINT:stop * POINT], workers))
        if len(pending) >= WINDOW:
            endpoint.send(peer, f"{tag}/blinded", pending.popleft().result())
    while pending:
        endpoint.send(peer, f"{tag}/blinded", pending.popleft().result())
    del mine

    # Round 2: the peer's blinded keys, re-blinded batch by batch; I keep what I send back.
    their_double: list = []
    more = True
    while more:
        theirs = endpoint.recv(peer, f"{tag}/blinded")
        if len(theirs) % POINT or len(theirs) > BATCH * POINT:
            raise ProtocolError(f"{peer} sent a malformed PSI message ({len(theirs)} bytes; at most "
                                f"{BATCH} points of {POINT} bytes each)")
        more = len(theirs) == BATCH * POINT
        pending.append(key.blind_later(theirs, workers))
        while pending and (len(pending) >= WINDOW or not more or pending[0].done()):
            their_double.append(pending.popleft().result())
            endpoint.send(peer, f"{tag}/reblinded", their_double[-1])
    mine_double = bytearray(d * POINT)
    for start, stop in bounds:
        got = endpoint.recv(peer, f"{tag}/reblinded")
        if len(got) != (stop - start) * POINT:
            raise ProtocolError(f"{peer} re-blinded {len(got) // POINT} keys of the batch starting at key "
                                f"{start}, expected {stop - start} (of {d})")
        mine_double[start * POINT:stop * POINT] = got

    # H(x)^ab sorted: a common value appears twice, mine first (a stable sort); that order is the common one.
    points = np.concatenate([np.frombuffer(mine_double, dtype="S32"),
                             *(np.frombuffer(b, dtype="S32") for b in their_double)])
    del mine_double, their_double
    by_point = np.argsort(points, kind="stable")
    ordered = points[by_point]
    del points
    hit = np.flatnonzero((ordered[1:] == ordered[:-1]) & (by_point[:-1] < d) & (by_point[1:] >= d))
    return Intersection(ids, d, order[by_point[hit]])


def _common_rows(found: Intersection) -> tuple[np.ndarray, np.ndarray]:
    """(my rows of the common keys, grouped by key in the common order, row order within a key; count per key).
    Only the rows of common keys are sorted, by their key's place in the common order."""
    place = np.full(found.distinct + 1, -1, dtype=np.int64)  # the extra -1 is for NULL rows (id -1)
    place[found.common] = np.arange(len(found.common))
    of_row = place[found.ids]
    kept = np.flatnonzero(of_row >= 0)
    of_kept = of_row[kept]
    counts = np.bincount(of_kept, minlength=len(found.common)).astype(np.int64)
    return kept[np.argsort(of_kept, kind="stable")], counts


def join_from(endpoint: Endpoint, peer: str, tag: str, found: Intersection, left: bool) -> np.ndarray:
    """The last round of every PSI join: exchange my row count per common key, then expand to my
    row indices of the join in the common order."""
    flat, my_counts = _common_rows(found)
    endpoint.send(peer, f"{tag}/counts", my_counts.astype("<u4").tobytes())
    raw = endpoint.recv(peer, f"{tag}/counts")
    if len(raw) != 4 * len(my_counts):
        raise ProtocolError(f"{peer} sent {len(raw) // 4} multiplicities for {len(my_counts)} common keys")
    their_counts = np.frombuffer(raw, dtype="<u4").astype(np.int64)
    if len(my_counts) and their_counts.min() < 1:
        raise ProtocolError(f"{peer} sent a zero multiplicity for a common key")
    return expand_flat(flat, my_counts, their_counts, left)


def membership_of(found: Intersection) -> np.ndarray:
    """For each of my rows, whether its key is in the intersection (NULL never is)."""
    in_common = np.zeros(found.distinct + 1, dtype=bool)  # the extra False is for NULL (id -1)
    in_common[found.common] = True
    return in_common[found.ids]


def psi_join_indices(endpoint: Endpoint, peer: str, tag: str, encoded: Keys, left: bool,
                     workers: GroupWorkers | None = None) -> np.ndarray:
    """Run the ECDH-PSI with `peer`; return my row indices of the join, in the common order."""
    return join_from(endpoint, peer, tag, _intersect(endpoint, peer, tag, encoded, workers), left)


def psi_membership(endpoint: Endpoint, peer: str, tag: str, encoded: Keys,
                   workers: GroupWorkers | None = None) -> np.ndarray:
    """Rounds 1-2 only (a semi- or anti-join): for each of my rows, whether its key is also the peer's.
    No multiplicities cross."""
    return membership_of(_intersect(endpoint, peer, tag, encoded, workers))


def compose_matches(provenance: np.ndarray, matched: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map PSI matches on base rows onto the rows of a joined relation.

    `provenance[t]` is the base row behind row t; `matched[k]` the base row of match k. Returns
    (t, k) for every row t and match k with matched[k] == provenance[t], ordered by t then k.
    """
    order = np.argsort(matched, kind="stable")
    ordered = matched[order]
    lo = np.searchsorted(ordered, provenance, side="left")
    hi = np.searchsorted(ordered, provenance, side="right")
    counts = hi - lo
    total = int(counts.sum())
    rows = np.repeat(np.arange(len(provenance), dtype=np.int64), counts)
    offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    return rows, order[np.repeat(lo, counts) + offsets].astype(np.int64)
