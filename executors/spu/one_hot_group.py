"""Group sums without a sort, where one compute party knows every row's group and the groups are few.

When the GROUP BY keys are plain input columns of one compute party A (`stage._group_key_columns`),
A knows the group of every SPU row in plaintext: its number c[i] in [0, G), where G is a public bound
on the groups (the keys' published magnitude classes: `planner.cost.one_hot_groups`). With b the
n x G one-hot matrix of c, a group's sum of a shared column y (a row weight, a weighted value, ...) is

    total[g] = sum_i b[i, g] * y[i] = sum_i b[i, g] * y_A[i] + sum over B != A of sum_i b[i, g] * y_B[i].

A's part is local (a scatter-add of its shares by group). For each other compute party B, ONE round
of a Beaver-style product with the dealer, whose message from A carries no column:

  dealer  u (n x G) uniform, from the seed it shares with A; R (n x C) uniform, from B's seed; it sends
          B c = u^T R - w (G x C words), w (G x C) from A's seed, so A and B hold shares w, c of u^T R.
  round   A -> B: e = b - u (n x G words);  B -> A: f = y_B - R (n x C words). Independent: one round.
  shares  A: sum_i b[i] f[i] + w (local: a scatter-add);  B: e^T R + c (local: a G x n by n x C product).
  check   sum b f + e^T R + u^T R = sum b (y_B - R) + (b - u)^T R + u^T R = sum b y_B.

With 3 compute parties A runs it with each other party in the same round (two dealer requests).

Bytes: n G 8 from A to each B, n C 8 from each B to A, G C 8 from the dealer to each B; rounds: 1
whatever n and G (`rounds` below), against the sort's ~60 at 10^5 rows (`relational.group_by`).

What each learns: B sees e, the one-hot masked by the uniform u it does not know: nothing; A sees f,
B's shares masked by the uniform R: nothing new; the dealer sees only the public sizes (n, G, C) and
never a share. G is public (a published bound), and the output is G shared group rows: which rows are
real groups (and how many) stays secret until the caller's compaction opens the number it keeps.
A's group numbers are A's own data and never leave A except masked.
"""

from __future__ import annotations

import numpy as np

from sqlsecure.errors import ProgrammingError
from sqlsecure.executors.spu.session import SpuSession
from sqlsecure.executors.spu.shares import ArithShare

ROUNDS = 1


def scatter_sums(codes: np.ndarray, values: np.ndarray, groups: int) -> np.ndarray:
    """sum_i onehot(codes)[i, g] * values[i, :] mod 2^64, as a groups x C array (local: O(n C)).
    Sorted by group once, then one `np.add.reduceat` per column."""
    cols = values.shape[1]
    out = np.zeros((groups, cols), np.uint64)
    if not len(codes):
        return out
    order = np.argsort(codes, kind="stable")
    ordered = codes[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    out[ordered[starts]] = np.add.reduceat(values[order], starts, axis=0)
    return out


def one_hot_group_sums(s: SpuSession, owner: int, codes: np.ndarray | None, groups: int,
                       columns: list[ArithShare]) -> list[ArithShare]:
    """Shares of each column's sums per group (G = `groups` values per column, group g at position g),
    the rows' groups `codes` (ints in [0, groups)) known to party `owner` alone (the others pass None).
    1 round; see the module docstring for the protocol, its bytes and what it reveals."""
    if not columns:
        raise ProgrammingError("one_hot_group_sums of no column")
    n = len(columns[0])
    if any(len(c) != n for c in columns):
        raise ProgrammingError("one_hot_group_sums: columns of different lengths")
    if groups < 1:
        raise ProgrammingError(f"one_hot_group_sums needs at least one group, got {groups}")
    cols = len(columns)
    y = np.stack([c.data for c in columns], axis=1) if n else np.zeros((0, cols), np.uint64)
    tag = s.tag("one-hot")
    s.rounds += ROUNDS
    # every party requests the same randomness in the same order: one request per party but the owner
    mine = [s.dealer.one_hot(owner, j, n, groups, cols) for j in range(s.nparties) if j != owner]
    if s.index == owner:
        codes = np.asarray(codes, dtype=np.int64)
        if codes.shape != (n,) or (n and (codes.min() < 0 or codes.max() >= groups)):
            raise ProgrammingError(f"one_hot_group_sums: {n} group numbers in [0, {groups}) expected")
        total = scatter_sums(codes, y, groups)  # A's own shares
        rows = np.arange(n)
        for j, (u, w) in zip(s.others(), mine):
            np.negative(u, out=u)  # e = b - u, in u's buffer
            u[rows, codes] += np.uint64(1)
            s.send_words(j, tag, u.ravel())
            total += w
        for j in s.others():
            total += scatter_sums(codes, s.recv_words(j, tag, n * cols).reshape(n, cols), groups)
    else:
        if codes is not None:
            raise ProgrammingError("one_hot_group_sums: only the owner knows the group numbers")
        r, c = mine[s.index - (s.index > owner)]
        s.send_words(owner, tag, y - r)
        e = s.recv_words(owner, tag, n * groups).reshape(n, groups)
        total = e.T @ r + c
    return [ArithShare(np.ascontiguousarray(total[:, k]), columns[k].frac) for k in range(cols)]
