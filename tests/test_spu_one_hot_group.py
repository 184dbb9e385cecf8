"""The one-hot group sums (`spu.one_hot_group`): against a plaintext reference, for 2 and 3 compute
parties, with random shares and edge cases, one round, and its bytes exactly as the docstring says."""

import numpy as np
import pytest

from sqlsecure.executors.spu import arith
from sqlsecure.executors.spu.dealer import DEALER
from sqlsecure.executors.spu.local import run_spu
from sqlsecure.executors.spu.one_hot_group import one_hot_group_sums, scatter_sums
from sqlsecure.executors.spu.shares import ArithShare, as_ring

TOP = (1 << 64) - 1


def reference(codes, columns, groups):
    """The plaintext protocol: per group and column, the sum of the column's rows in that group mod 2^64."""
    out = [[0] * groups for _ in columns]
    for k, column in enumerate(columns):
        for code, value in zip(codes, column):
            out[k][code] = (out[k][code] + int(value)) % (1 << 64)
    return out


def run(nparties, owner, codes, columns, groups, value_owner=None):
    """Share each column from `value_owner` (default: a party other than the key owner; -1: random
    shares at every party), run the protocol, open the sums; (sums, run)."""
    columns = [np.asarray(c, dtype=np.uint64) for c in columns]
    n = len(codes)
    rng = np.random.default_rng(n + groups + nparties)
    splits = [[rng.integers(0, 1 << 63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64)
               for _ in range(nparties - 1)] for _ in columns]

    def program(s):
        shared = []
        for k, column in enumerate(columns):
            if value_owner == -1:  # arbitrary random additive shares at every party
                parts = splits[k]
                mine = parts[s.index] if s.index < nparties - 1 else column - np.sum(parts, axis=0, dtype=np.uint64)
                shared.append(ArithShare(np.asarray(mine, np.uint64)))
            else:
                holder = (owner + 1) % nparties if value_owner is None else value_owner
                shared.append(arith.share_input(s, holder, column if s.index == holder else None, (n,)))
        s.rounds = 0
        sums = one_hot_group_sums(s, owner, np.asarray(codes) if s.index == owner else None, groups, shared)
        rounds = s.rounds
        return rounds, [arith.reveal(s, x) for x in sums]

    result = run_spu(nparties, program)
    rounds, opened = result.results[0]
    assert rounds == 1
    return [o.astype(np.uint64).tolist() for o in opened], result


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("owner", [0, 1])
@pytest.mark.parametrize("value_owner", [None, -1])
def test_random_shares_equal_the_reference(nparties, owner, value_owner):
    rng = np.random.default_rng(7)
    groups, n = 5, 40
    codes = rng.integers(0, groups - 1, n)  # the last group has no row
    columns = [rng.integers(0, 1 << 63, n, dtype=np.uint64) * np.uint64(2), rng.integers(0, 2, n)]
    got, _ = run(nparties, owner, codes, columns, groups, value_owner)
    assert got == reference(codes, columns, groups)
    assert got[1][groups - 1] == 0 and got[0][groups - 1] == 0


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("codes, groups", [([], 1), ([], 4), ([0], 1), ([2], 3), ([0] * 9, 1), ([3] * 9, 4)])
def test_edge_cases(nparties, codes, groups):
    """No row, one row, every row one group (the first or the last of G)."""
    columns = [np.arange(1, len(codes) + 1), np.full(len(codes), TOP, dtype=np.uint64)]
    got, _ = run(nparties, 0, codes, columns, groups)
    assert got == reference(codes, columns, groups)


@pytest.mark.parametrize("nparties", [2, 3])
def test_values_near_the_ring_range_wrap_as_the_ring_does(nparties):
    """Negative values (two's complement) and values at ±2^63 sum exactly mod 2^64."""
    values = as_ring(np.array([-1, -(1 << 62), (1 << 62) - 1, -(1 << 63), 5, -5], dtype=np.int64))
    codes = [1, 1, 0, 0, 2, 2]
    got, _ = run(nparties, 1, codes, [values], 3, value_owner=-1)
    assert got == reference(codes, [values], 3)
    signed = np.array(got[0], dtype=np.uint64).view(np.int64).tolist()
    assert signed == [(1 << 62) - 1 - (1 << 63), -1 - (1 << 62), 0]


@pytest.mark.parametrize("nparties", [2, 3])
def test_bytes_are_the_docstrings(nparties):
    """n G 8 from the owner to each other party, n C 8 back, G C 8 of correction from the dealer to
    each other party (plus its requests, ~100 B each), nothing else."""
    n, groups, cols = 50, 6, 3
    codes = np.arange(n) % groups
    columns = [np.arange(n) * (k + 1) for k in range(cols)]
    got, result = run(nparties, 0, codes, columns, groups)
    assert got == reference(codes, columns, groups)
    stats = result.channel.stats.bytes
    opened = 8 * groups * (nparties - 1)  # the test's reveal of the G sums per column: to every party
    for j in range(1, nparties):
        sent = stats[("p0", f"p{j}")] - cols * opened // (nparties - 1)
        assert sent == 8 * n * groups
        assert stats[(f"p{j}", "p0")] - cols * 8 * groups == 8 * n * cols
        assert stats[(DEALER, f"p{j}")] == 8 * groups * cols
    assert stats[(DEALER, "p0")] == 0
    if nparties == 3:
        assert stats[("p1", "p2")] == stats[("p2", "p1")] == cols * 8 * groups  # the reveal only


def test_the_owner_alone_gives_group_numbers():
    from sqlsecure.errors import ProgrammingError

    def program(s):
        x = arith.share_input(s, 0, np.arange(3, dtype=np.uint64) if s.index == 0 else None, (3,))
        return one_hot_group_sums(s, 0, np.array([0, 1, 5]) if s.index == 0 else None, 2, [x])

    with pytest.raises(ProgrammingError, match="group numbers in"):
        run_spu(2, program, timeout=10)


def test_scatter_sums_is_the_one_hot_product():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 7, 100)
    values = rng.integers(0, 1 << 63, (100, 2), dtype=np.uint64) * np.uint64(2)
    onehot = np.zeros((100, 7), np.uint64)
    onehot[np.arange(100), codes] = 1
    assert (scatter_sums(codes, values, 7) == onehot.T @ values).all()
