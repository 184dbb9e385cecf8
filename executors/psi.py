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

Leakage (semi-honest): each party learns the number of distinct keys of the other, which of its
own keys are in the intersection, and the other's multiplicity for each intersection key (all of
which the join result shows anyway). Nothing about non-matching keys crosses in the clear.
"""

from __future__ import annotations

import os

import numpy as np

from sqlsecure.errors import ProtocolError
from sqlsecure.executors.channel import Endpoint
from sqlsecure.executors.ecdh import POINT, BlindingKey, GroupWorkers, hash_to_points


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


def _split(blob: bytes) -> list[bytes]:
    return [blob[i:i + POINT] for i in range(0, len(blob), POINT)]


def _intersect(endpoint: Endpoint, peer: str, tag: str, encoded: list[bytes | None],
               workers: GroupWorkers | None) -> tuple[dict[bytes, list[int]], list[bytes]]:
    """Rounds 1-2: (my distinct keys -> rows, my keys in the intersection in the common order)."""
    groups = group_rows(encoded)
    keys = list(groups)
    order = random_permutation(len(keys))
    shuffled = [keys[i] for i in order]
    key = BlindingKey()

    mine = key.blind(hash_to_points(shuffled), workers)
    endpoint.send(peer, f"{tag}/blinded", mine)
    theirs = endpoint.recv(peer, f"{tag}/blinded")
    if len(theirs) % POINT:
        raise ProtocolError(f"{peer} sent a malformed PSI message ({len(theirs)} bytes)")

    their_double = key.blind(theirs, workers)
    endpoint.send(peer, f"{tag}/reblinded", their_double)
    mine_double = endpoint.recv(peer, f"{tag}/reblinded")
    if len(mine_double) != len(mine):
        raise ProtocolError(f"{peer} re-blinded {len(mine_double) // POINT} keys, expected {len(keys)}")

    theirs_set = set(_split(their_double))
    common = sorted((point, k) for point, k in zip(_split(mine_double), shuffled) if point in theirs_set)
    return groups, [k for _, k in common]


def psi_join_indices(endpoint: Endpoint, peer: str, tag: str, encoded: list[bytes | None], left: bool,
                     workers: GroupWorkers | None = None) -> np.ndarray:
    """Run the ECDH-PSI with `peer`; return my row indices of the join, in the common order."""
    groups, common = _intersect(endpoint, peer, tag, encoded, workers)
    rows = [groups[k] for k in common]
    my_counts = np.array([len(r) for r in rows], dtype=np.uint32)
    endpoint.send(peer, f"{tag}/counts", my_counts.tobytes())
    raw = endpoint.recv(peer, f"{tag}/counts")
    if len(raw) != 4 * len(rows):
        raise ProtocolError(f"{peer} sent {len(raw) // 4} multiplicities for {len(rows)} common keys")
    their_counts = np.frombuffer(raw, dtype=np.uint32).astype(np.int64)
    if len(rows) and their_counts.min() < 1:
        raise ProtocolError(f"{peer} sent a zero multiplicity for a common key")
    return expand(rows, my_counts.astype(np.int64), their_counts, left)


def psi_membership(endpoint: Endpoint, peer: str, tag: str, encoded: list[bytes | None],
                   workers: GroupWorkers | None = None) -> np.ndarray:
    """Rounds 1-2 only (a semi- or anti-join): for each of my rows, whether its key is also the peer's.
    No multiplicities cross."""
    groups, common = _intersect(endpoint, peer, tag, encoded, workers)
    member = np.zeros(len(encoded), dtype=bool)
    for k in common:
        member[groups[k]] = True
    return member


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
