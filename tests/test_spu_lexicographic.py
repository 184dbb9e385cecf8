"""The balanced trees that join a sort's compared columns (`boolean.lexicographic_bits`) and a run
test's keys (`boolean.and_tree_bits`), against plaintext references: rounds ceil(log2 g), bytes as
`boolean.lexicographic_bytes` states, for 2 and 3 parties and n = 0, 1, 2 and odd sizes."""

import math

import numpy as np
import pytest

from sqlsecure.executors.spu import boolean
from sqlsecure.executors.spu.local import run_spu


def xor_shares(rng, bits: np.ndarray, nparties: int) -> list[np.ndarray]:
    """nparties uint8 XOR shares of 0/1 `bits`."""
    shares = [rng.integers(0, 2, bits.size).astype(np.uint8) for _ in range(nparties - 1)]
    return shares + [np.bitwise_xor.reduce([bits.astype(np.uint8), *shares])]


def reference_less(lts: list[np.ndarray], eqs: list[np.ndarray]) -> np.ndarray:
    """LT_0 | (EQ_0 & (LT_1 | (EQ_1 & ...))) in plaintext, from the last column up."""
    result = lts[-1].copy()
    for lt, eq in zip(lts[-2::-1], eqs[-1::-1]):
        result = lt | (eq & result)
    return result


def run_tree(nparties: int, parts_of, n: int):
    """(each party's output share, rounds, bytes party 0 sent party 1) of `parts_of(session)`."""
    def program(s):
        call = parts_of(s)
        stats = s.endpoint.channel.stats
        s.rounds, before = 0, stats.bytes[("p0", "p1")]
        out = call()
        return out, s.rounds, stats.bytes[("p0", "p1")] - before

    results = run_spu(nparties, program).results
    return np.bitwise_xor.reduce([r[0] for r in results]) if n else results[0][0], results[0][1], results[0][2]


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("g", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("n", [0, 1, 2, 17, 1000])
def test_lexicographic_bits_equals_the_plaintext_chain(nparties, g, n):
    rng = np.random.default_rng(100 * g + n)
    lts, eqs = [], []
    for _ in range(g):  # LT and EQ of one column are exclusive
        lt = rng.integers(0, 2, n).astype(np.uint8)
        lts.append(lt)
        eqs.append((rng.integers(0, 2, n).astype(np.uint8) & (1 - lt)).astype(np.uint8))
    eqs = eqs[:-1]
    lt_sh = [xor_shares(rng, x, nparties) for x in lts]
    eq_sh = [xor_shares(rng, x, nparties) for x in eqs] + [None]

    def parts_of(s):
        parts = [(lt[s.index], None if eq is None else eq[s.index]) for lt, eq in zip(lt_sh, eq_sh)]
        return lambda: boolean.lexicographic_bits(s, parts)

    got, rounds, sent = run_tree(nparties, parts_of, n)
    assert got.tolist() == reference_less(lts, eqs).tolist()
    assert rounds == (math.ceil(math.log2(g)) if g > 1 and n else 0)  # no rows: nothing to exchange
    if nparties == 2 and n >= 1000:  # whole bytes of packed bits: within one word per merge
        stated = boolean.lexicographic_bytes(g) * n
        assert stated <= sent <= stated + 8 * (g - 1)


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("n", [0, 1, 2, 99])
def test_and_tree_bits_equals_the_plaintext_and(nparties, k, n):
    rng = np.random.default_rng(10 * k + n)
    parts = [rng.integers(0, 2, n).astype(np.uint8) | (rng.integers(0, 4, n) > 0).astype(np.uint8) for _ in range(k)]
    shared = [xor_shares(rng, x, nparties) for x in parts]
    got, rounds, _ = run_tree(nparties, lambda s: (lambda: boolean.and_tree_bits(s, [x[s.index] for x in shared])), n)
    assert got.tolist() == np.bitwise_and.reduce(parts).tolist() if n else got.size == 0
    assert rounds == (math.ceil(math.log2(k)) if k > 1 and n else 0)


def test_lexicographic_bytes_pairs_from_the_right():
    """2 columns: one G-only merge (2/8); 3: two G-only merges, as the chain (4/8); 4: a merge with
    P (3/8) beside a G-only one, then a G-only one (7/8, one round less than the chain's 6/8)."""
    assert [boolean.lexicographic_bytes(g) for g in (1, 2, 3, 4)] == [0.0, 2 / 8, 4 / 8, 7 / 8]


def with_high_bits(rng, share: np.ndarray) -> np.ndarray:
    """The same XOR share of bit 0 with random higher bits, as some circuits leave them."""
    return share | (rng.integers(0, 128, share.size).astype(np.uint8) << 1)


@pytest.mark.parametrize("nparties", [2, 3])
def test_only_bit_0_of_the_inputs_counts(nparties):
    rng = np.random.default_rng(7)
    n = 300
    lts = [rng.integers(0, 2, n).astype(np.uint8) for _ in range(4)]
    eqs = [(rng.integers(0, 2, n).astype(np.uint8) & (1 - lt)) for lt in lts[:-1]]
    lt_sh = [[with_high_bits(rng, x) for x in xor_shares(rng, lt, nparties)] for lt in lts]
    eq_sh = [[with_high_bits(rng, x) for x in xor_shares(rng, eq, nparties)] for eq in eqs] + [None]
    got, _, _ = run_tree(nparties, lambda s: (lambda: boolean.lexicographic_bits(
        s, [(lt[s.index], None if eq is None else eq[s.index]) for lt, eq in zip(lt_sh, eq_sh)])), n)
    assert got.tolist() == reference_less(lts, eqs).tolist()
    anded, _, _ = run_tree(nparties, lambda s: (lambda: boolean.and_tree_bits(s, [lt[s.index] for lt in lt_sh])), n)
    assert anded.tolist() == np.bitwise_and.reduce(lts).tolist()


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("keys", [1, 2, 3])
@pytest.mark.parametrize("n", [2, 17, 300])
def test_a_sort_of_several_keys_equals_a_plaintext_sort(nparties, keys, n):
    """The sort's columns joined by `lexicographic_bits`, with 2 and 3 parties (3: the sign circuit's
    outputs), keys with duplicates and negative values, against a stable plaintext sort."""
    from sqlsecure.executors.spu import arith, relational
    from sqlsecure.executors.spu.shares import as_ring

    rng = np.random.default_rng(n * keys)
    columns = [rng.integers(-3, 3, n) for _ in range(keys)]

    def program(s):
        shared = [arith.share_input(s, i % 2, as_ring(c) if s.index == i % 2 else None, c.shape)
                  for i, c in enumerate([*columns, np.arange(n)])]
        _, (row,) = relational.sort(s, shared[:-1], shared[-1:])
        return s.open_many(arith=[row.data])[0]

    got = run_spu(nparties, program).results[0].astype(np.int64)
    assert got.tolist() == np.lexsort(columns[::-1]).tolist()
