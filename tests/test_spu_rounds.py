"""Round bounds of the SPU operators, as their docstrings state them, at several sizes.

Every operator runs over the in-process channel (`run_spu`); the session counts its rounds (one per
batched exchange or opening). Over a real link each round costs one round-trip time, so a change
that adds rounds to an operator fails here before it slows a deployment across regions.

Notation of the docstrings: N compute parties; C the rounds of one batched comparison (6 for 2
parties, 8 for 3), C_eq with equality from the same tree (6 for 2 parties, 9 for 3); S the levels of
a Sklansky scan over n rows, ceil(log2 n); L the multi-pivot quicksort's levels, random (a
function of the shuffle's permutation), bounded by ceil(ceil(log2 n) / 3) + 2 with high probability
and made deterministic here by a fixed dealer seed (the shuffles' permutations come from the
dealer's seeds only).
"""

import math
import random

import numpy as np
import pytest
import sqlglot

from sqlsecure.executors.spu import arith, compare, dealer, join, relational, secret_relation
from sqlsecure.executors.spu.local import run_spu
from sqlsecure.executors.spu.shares import as_ring
from sqlsecure.executors.spu.stage import SV

SIZES = [16, 64, 256]
SORT_SIZES = [2, 3, 16, 17, 64, 256, 1000]
C = {2: 6, 3: 8}
C_EQ = {2: 6, 3: 9}


@pytest.fixture(autouse=True)
def fixed_dealer_seed(monkeypatch):
    """The dealer's seeds (hence every shuffle's permutation, hence the quicksort's levels) from a
    fixed generator: the dealer draws them one after another in its own thread."""
    rng = random.Random(20)
    monkeypatch.setattr(dealer, "fresh_seed", lambda: rng.randbytes(16))


def share(s, values, owner=0):
    values = np.asarray(values, dtype=np.int64)
    return arith.share_input(s, owner, as_ring(values) if s.index == owner else None, values.shape)


def rounds_of(nparties: int, operator) -> int:
    """Rounds of `operator(session)` alone: `operator` shares its inputs (one round each, not
    counted: the counter is reset after them) and returns the call to count."""
    def program(s):
        call = operator(s)
        s.rounds = 0
        call()
        return s.rounds

    return run_spu(nparties, program).results[0]


def log2(n: int) -> int:
    return math.ceil(math.log2(n))


def scan_levels(n: int, extremes: bool = False) -> int:
    """S of a segmented scan (`relational.segmented_scan`): ceil(log2(n >> k)) + 2 k, k block levels
    (one per doubling of n from 8192 rows for sums, from 32768 with MIN/MAX; at most 3)."""
    rows = 32768 if extremes else 8192
    k = min(3, int(math.log2(n // rows))) if n >= rows else 0
    return log2(n >> k) + 2 * k if n > 1 else 0


def level_bound(n: int) -> int:
    """The sort's stated bound on its levels L (`relational.sort`)."""
    return -(-log2(n) // 3) + 2


def quicksort_levels(rounds: int, nparties: int, keys: int, n: int) -> int:
    """L from a sort's rounds N + L (C_eq + ceil(log2(keys + 1)) + 1) (keys of unknown width, and
    the tiebreak: keys + 1 compared columns joined in a balanced tree); checks the form, and L <= the
    stated bound."""
    per_level = C_EQ[nparties] + log2(keys + 1) + 1
    levels, rest = divmod(rounds - nparties, per_level)
    assert rest == 0, f"{rounds} rounds is not N + L * {per_level}"
    assert 1 <= levels <= level_bound(n)
    return levels


def sort_rounds_spent(monkeypatch) -> list[int]:
    """The rounds of each `relational.sort` call from now on, in order (every party records the same)."""
    spent = []
    sort = relational.sort

    def counted_sort(s, *args, **kwargs):
        before = s.rounds
        out = sort(s, *args, **kwargs)
        spent.append(s.rounds - before)
        return out

    monkeypatch.setattr(relational, "sort", counted_sort)
    return spent


def plaintext_levels(n: int, rng, first: int | None = None) -> tuple[int, int]:
    """(levels, comparisons) of the sort's partitioning on a random order of n distinct rows, in
    plaintext (what the opened comparisons would be); checks the first rows come out sorted."""
    rank = rng.permutation(n)
    wanted = n if first is None else min(first, n)
    counted = []

    def less(x, y):
        counted.append(x.size)
        return rank[x] < rank[y]

    perm = relational.partition_order(n, wanted, less)
    assert rank[perm][:wanted].tolist() == list(range(wanted))
    return len(counted), sum(counted)


def data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed + n)
    return rng.integers(-1000, 1000, n), rng.integers(-1000, 1000, n), rng.integers(0, 8, n)


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("n", SIZES)
def test_comparison_and_equality_are_constant_round(nparties, n):
    x, y, _ = data(n)
    lt = rounds_of(nparties, lambda s: (a := share(s, x), b := share(s, y, 1),
                                        lambda: compare.less_than(s, a, b))[-1])
    lt_arith = rounds_of(nparties, lambda s: (a := share(s, x), b := share(s, y, 1),
                                              lambda: compare.less_than(s, a, b, arith=True))[-1])
    eq = rounds_of(nparties, lambda s: (a := share(s, x), b := share(s, y, 1),
                                        lambda: compare.equal(s, a, b))[-1])
    assert (lt, lt_arith, eq) == (C[nparties], C[nparties] + 1, C_EQ[nparties])


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("n", SIZES)
def test_functions_built_on_comparisons_are_constant_round(nparties, n):
    x, y, _ = data(n)
    divide_rounds = {2: 33, 3: 34}
    stated = {
        "sign": (lambda s, a, b: compare.sign(s, a), C_EQ[nparties] + 1),
        "abs": (lambda s, a, b: compare.abs_(s, a), C[nparties] + 2),
        "minimum": (compare.minimum, C[nparties] + 1),
        "maximum": (compare.maximum, C[nparties] + 1),
        "divide": (lambda s, a, b: compare.divide(s, a, arith.add_public(s, b, 1001)), divide_rounds[nparties]),
    }
    for name, (function, rounds) in stated.items():
        got = rounds_of(nparties, lambda s: (a := share(s, x), b := share(s, y, 1), lambda: function(s, a, b))[-1])
        assert got == rounds, name


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("n", SIZES)
def test_shuffle_and_compact(nparties, n):
    x, y, _ = data(n)
    assert rounds_of(nparties, lambda s: (a := share(s, x), b := share(s, y, 1),
                                          lambda: relational.shuffle(s, [a, b]))[-1]) == nparties
    assert rounds_of(nparties, lambda s: (f := share(s, (x > 0).astype(np.int64)), b := share(s, y, 1),
                                          lambda: relational.compact(s, f, [b]))[-1]) == nparties + 1


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("keys", [1, 2, 3])
@pytest.mark.parametrize("n", SORT_SIZES)
def test_sort_is_a_shuffle_then_levels_of_one_comparison_and_one_opening(nparties, keys, n):
    x, y, k = data(n)
    columns = [k, x, y][:keys]
    rounds = rounds_of(nparties, lambda s: (ks := [share(s, c, i % 2) for i, c in enumerate(columns)],
                                            p := share(s, y, 1), lambda: relational.sort(s, ks, [p]))[-1])
    quicksort_levels(rounds, nparties, keys, n)


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("n", SORT_SIZES)
def test_top_k_takes_no_more_levels_than_a_sort(nparties, n):
    x, y, _ = data(n)
    for first in (1, 10, n):
        rounds = rounds_of(nparties, lambda s: (a := share(s, x), p := share(s, y, 1),
                                                lambda: relational.sort(s, [a], [p], first=first))[-1])
        quicksort_levels(rounds, nparties, 1, n)


@pytest.mark.parametrize("n", [2, 16, 17, 100, 1000, 4097, 10_000])
def test_sort_levels_stay_below_the_bound_for_random_orders(n):
    """The levels over 50 random orders (plaintext partitioning; fixed seed) stay below the
    stated bound, and a top-10 compares far fewer rows than a full sort."""
    rng = np.random.default_rng(n)
    for _ in range(50):
        levels, comparisons = plaintext_levels(n, rng)
        top_levels, top_comparisons = plaintext_levels(n, rng, first=10)
        assert levels <= level_bound(n) and top_levels <= level_bound(n)
        assert top_comparisons <= 2 * n * relational.PIVOTS
        assert n < 10_000 or top_comparisons <= comparisons // 2
        assert comparisons <= 4 * n * max(log2(n), 1)


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("n", SIZES)
def test_runs_and_segmented_scans(nparties, n):
    x, _, k = data(n)
    starts = (np.arange(n) % 5 == 0).astype(np.int64)
    sorted_k = np.sort(k)
    for keys in (1, 2, 3, 4):  # the keys' equalities joined in a balanced tree, then one B2A
        assert rounds_of(nparties, lambda s: (ks := [share(s, sorted_k, i % 2) for i in range(keys)],
                                              lambda: relational.neighbour_starts(s, ks))[-1]) \
            == C_EQ[nparties] + log2(keys) + 1
    assert rounds_of(nparties, lambda s: (v := share(s, x), f := share(s, starts, 1),
                                          lambda: relational.segmented_sum(s, [v, v], f))[-1]) == scan_levels(n)
    assert rounds_of(nparties, lambda s: (v := share(s, x), f := share(s, starts, 1),
                                          lambda: relational.segmented_extreme(s, [v, v], f, [True, False]))[-1]) \
        == (C[nparties] + 2) * scan_levels(n)
    assert rounds_of(nparties, lambda s: (v := share(s, x), f := share(s, starts, 1),
                                          lambda: relational.segmented_scan(s, [v, f], [v], f, [True]))[-1]) \
        == (C[nparties] + 2) * scan_levels(n)


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("n", SIZES)
def test_min_all_is_a_tournament(nparties, n):
    x, _, _ = data(n)
    assert rounds_of(nparties, lambda s: (a := share(s, x), lambda: compare.min_all(s, a))[-1]) \
        == (C[nparties] + 1) * log2(n)


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("extremes", [False, True])
@pytest.mark.parametrize("n", [2, 17, 64, 256, 1000])
def test_group_by_is_a_sort_then_runs_then_one_scan(nparties, extremes, n):
    x, y, k = data(n)

    def aggregates(s):
        aggs = [("sum", share(s, x, 1)), ("count", None)]
        return aggs + [("min", share(s, y, 1)), ("max", share(s, x, 1))] if extremes else aggs

    rounds = rounds_of(nparties, lambda s: (g := share(s, k), aggs := aggregates(s),
                                            lambda: relational.group_by(s, [g], aggs))[-1])
    runs = C_EQ[nparties] + 1
    scans = scan_levels(n, extremes) * (C[nparties] + 2 if extremes else 1)  # SUM and COUNT ride in MIN/MAX's rounds
    quicksort_levels(rounds - runs - scans, nparties, 1, n)


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("limbs", [1, 2])
@pytest.mark.parametrize("n", SIZES)
def test_oblivious_join_rounds_depend_on_the_sizes_only(nparties, limbs, n):
    """layers (C' + limbs) + (2N + 2) + (C_eq + limbs) + S + 1 + N, with C' = C for one limb and C_eq
    for more (the leading limbs' equality rides in the comparison tree), layers at most
    ceil(log2 n)(ceil(log2 n) + 1)/2 (`sorting_network` prunes comparators beyond n)."""
    nu = n // 4
    nm = n - nu
    rng = np.random.default_rng(n)
    u_keys = [rng.permutation(4 * n)[:nu] for _ in range(limbs)]
    m_keys = [rng.integers(0, 4 * n, nm) for _ in range(limbs)]
    payload = rng.integers(-50, 50, nm)

    def operator(s):
        uk, mk = [share(s, c) for c in u_keys], [share(s, c, 1) for c in m_keys]
        uv, mv = share(s, np.ones(nu, np.int64)), share(s, np.ones(nm, np.int64), 1)
        up, mp = share(s, np.arange(nu)), share(s, payload, 1)
        return lambda: join.oblivious_pk_join(s, uk, uv, [up], mk, mv, [mp])

    layers = len(join.sorting_network(n))
    assert layers <= log2(n) * (log2(n) + 1) // 2
    per_layer = (C_EQ if limbs > 1 else C)[nparties] + limbs
    stated = layers * per_layer + (2 * nparties + 2) + (C_EQ[nparties] + limbs) \
        + scan_levels(n) + 1 + nparties
    assert rounds_of(nparties, operator) == stated


# --- bytes ------------------------------------------------------------------------------------------

def sent_by_p0(operator) -> tuple[int, int]:
    """(bytes p0 sent p1 during `operator(session)`'s call, pairs the sort's levels compared): 2 parties;
    the sharing before the call is not counted."""
    pairs = []
    partition = relational.partition_order

    def counting(n, wanted, less):
        return partition(n, wanted, lambda x, y: (pairs.append(x.size), less(x, y))[1])

    def program(s):
        call = operator(s)
        stats = s.endpoint.channel.stats
        before = stats.bytes[("p0", "p1")]
        call()
        return stats.bytes[("p0", "p1")] - before

    relational.partition_order = counting
    try:
        sent = run_spu(2, program).results[0]
    finally:
        relational.partition_order = partition
    return sent, sum(pairs) // 2  # both parties' threads counted the pairs


@pytest.mark.parametrize("key_bits, keys", [(None, 1), (None, 2), ([5], 1), ([2, 64, 2, 64], 4)])
@pytest.mark.parametrize("n", [17, 256, 1000])
def test_sort_bytes_are_pairs_times_the_stated_bytes_per_pair(n, key_bits, keys):
    """Bytes party 0 sends: the shuffle's 8 n per column, then `relational.pair_bytes` per compared
    pair (within the words' padding), for unknown and known key widths."""
    rng = np.random.default_rng(n)
    widths = key_bits or [64] * keys
    columns = [rng.integers(0, 2 ** min(b - 1, 40), n) for b in widths]
    packed = sum(1 for g in relational.packed_groups(widths, [False] * keys, (n - 1).bit_length())
                 if g[0].bits is not None)
    sent, pairs = sent_by_p0(lambda s: (ks := [share(s, c) for c in columns], p := share(s, np.arange(n), 1),
                                        lambda: relational.sort(s, ks, [p], key_bits=key_bits))[-1])
    shuffled = 8 * n * (keys + packed + 1)
    model = pairs * relational.pair_bytes(key_bits, keys, n)
    assert model <= sent - shuffled <= model + 64 * 8 * (keys + 2) * level_bound(n)


@pytest.mark.parametrize("n", [256, 1000])
def test_top_k_bytes_are_its_pairs_times_the_stated_bytes_per_pair(n):
    """A top-5 compares fewer pairs than a full sort (n (p + p/16 + ...)), each at `pair_bytes`."""
    x = data(n)[0]
    full, all_pairs = sent_by_p0(lambda s: (a := share(s, x), lambda: relational.sort(s, [a]))[-1])
    top, pairs = sent_by_p0(lambda s: (a := share(s, x), lambda: relational.sort(s, [a], first=5))[-1])
    model = pairs * relational.pair_bytes(None, 1, n)
    assert pairs < all_pairs and top < full
    assert model <= top - 16 * n <= model + 64 * 8 * 3 * level_bound(n)


@pytest.mark.parametrize("columns", [1, 2, 3])
@pytest.mark.parametrize("n", [16, 17, 1000])
def test_segmented_sum_bytes_are_8_c_plus_2_per_combine(n, columns):
    """A segmented SUM of c columns sends 8 (c + 2) B per combine (1 - f_r opened once for the
    columns and the flags; the last level has no flags: 8 (c + 1)), (n/2) ceil(log2 n) combines."""
    x, _, _ = data(n)
    starts = (np.arange(n) % 5 == 0).astype(np.int64)
    sent, _ = sent_by_p0(lambda s: (v := share(s, x), f := share(s, starts, 1),
                                    lambda: relational.segmented_sum(s, [v] * columns, f))[-1])
    levels = relational._scan_levels(n)
    stated = sum(8 * (columns + 2 - (d == len(levels) - 1)) * right.size for d, (_, right) in enumerate(levels))
    assert sent == stated


@pytest.mark.parametrize("n, blocks", [(16_383, 0), (16_384, 1), (20_000, 1), (40_000, 2)])
def test_a_long_segmented_sum_takes_block_levels_for_fewer_bytes(n, blocks):
    """From 16,384 rows a sums-only scan adds Brent–Kung block levels: S = ceil(log2(n >> k)) + 2 k
    rounds, and 8 (c + 2) B per combine of its levels (fewer combines than Sklansky's (n/2) log2 n)."""
    x, _, _ = data(n)
    starts = (np.arange(n) % 7 == 0).astype(np.int64)
    assert relational.scan_blocks(n, extremes=False) == blocks
    assert rounds_of(2, lambda s: (v := share(s, x), f := share(s, starts, 1),
                                   lambda: relational.segmented_sum(s, [v, v], f))[-1]) == scan_levels(n)
    sent, _ = sent_by_p0(lambda s: (v := share(s, x), f := share(s, starts, 1),
                                    lambda: relational.segmented_sum(s, [v, v], f))[-1])
    levels = relational._scan_levels(n, blocks)
    combines = sum(right.size for _, right in levels)
    assert sent == sum(8 * (4 - (d == len(levels) - 1)) * right.size for d, (_, right) in enumerate(levels))
    assert combines <= (n // 2) * log2(n) if blocks == 0 else combines < 0.7 * (n // 2) * log2(n)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 17, 18, 100, 1000, 4097])
@pytest.mark.parametrize("first", [None, 1, 5])
def test_partition_order_equals_a_plaintext_sort_with_duplicates(n, first):
    """The partitioning (budgeted pivots) orders keys with duplicates as a stable plaintext sort
    does, ties broken by the row number as the SPU's tiebreak breaks them; with `first`, the first
    rows only."""
    rng = np.random.default_rng(n)
    keys = rng.integers(0, max(1, n // 4), n)
    reference = np.lexsort((np.arange(n), keys))

    def less(x, y):
        return (keys[x] < keys[y]) | ((keys[x] == keys[y]) & (x < y))

    wanted = n if first is None else min(first, n)
    perm = relational.partition_order(n, wanted, less)
    assert sorted(perm.tolist()) == list(range(n))
    assert perm[:wanted].tolist() == reference[:wanted].tolist()


@pytest.mark.parametrize("n", [100, 1000, 4097, 10_000])
def test_the_pair_budget_ends_the_random_tail_in_one_level(n):
    """With `relational.PAIR_BUDGET` pairs per row, the levels of 50 random orders stay at
    ceil(ceil(log2 n) / 3) + 1 (one below the stated bound; 4 at 10^3, 5 at 10^4: were 5 and 6) for
    at most 46 n comparisons up to LONG rows, 38 n beyond (35.5 n on average at 10^4 with 7 pivots,
    42.6 n with 15), and a top-10 within 4 levels."""
    rng = np.random.default_rng(n + 1)
    for _ in range(50):
        levels, comparisons = plaintext_levels(n, rng)
        top_levels, _ = plaintext_levels(n, rng, first=10)
        assert levels <= -(-log2(n) // 3) + 1 and top_levels <= 4
        assert comparisons <= (46 if n <= relational.LONG else 38) * n


def test_a_long_sort_takes_7_pivots_per_level_for_fewer_pairs():
    """At 10^5 rows the segments longer than 16 rows take LONG_PIVOTS (7) pivots: 7 levels (one
    below the stated bound) for at most 48 pairs per row (44.7 on average; 54.7 in 6 levels with 15
    pivots for segments of up to 4096 rows), and a top-5 keeps its 3-4 levels."""
    n = 100_000
    rng = np.random.default_rng(7)
    for _ in range(3):
        levels, comparisons = plaintext_levels(n, rng)
        top_levels, top_comparisons = plaintext_levels(n, rng, first=5)
        assert levels <= level_bound(n) - 1 and comparisons <= 48 * n
        assert top_levels <= 4 and top_comparisons <= 14 * n


def equality_rounds(nparties: int, bits: int) -> int:
    """Rounds of a zero test on b bits (`relational.neighbour_equal`): log2 of the comparison's lane,
    at least 8 bits wide, for 2 parties (6 on 64 bits); 3 parties: the carry-save layer, the sign
    circuit of b - 1 bits (1 + log2 W) and the AND of the two signs (9 on 64 bits)."""
    lane = max(8, 2 ** log2(bits if nparties == 2 else bits - 1))
    return log2(lane) + (0 if nparties == 2 else 3)


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("key_bits", [[2], [6], [9], [18], [6, 64], [6, 5, 3]])
@pytest.mark.parametrize("n", [0, 1, 2, 17, 256])
def test_run_starts_on_known_widths_test_fewer_bits(nparties, key_bits, n):
    """Keys of known widths: the slowest key's zero test on its bits, then ceil(log2 k) ANDs and one
    B2A (3 + 1 rounds for a group code of up to 8 bits, 2 parties: was 7); the starts equal the
    plaintext's, duplicates included."""
    rng = np.random.default_rng(n + len(key_bits))
    columns = np.stack([rng.integers(0, 2 ** (min(b, 20) - 1), n) for b in key_bits]) if n else np.zeros((len(key_bits), 0))
    columns = columns[:, np.lexsort(columns[::-1])] if n else columns

    def program(s):
        keys = [share(s, c, i % 2) for i, c in enumerate(columns)]
        s.rounds = 0
        starts = relational.neighbour_starts(s, keys, key_bits)
        rounds = s.rounds
        return rounds, s.open_many(arith=[starts.data])[0]

    rounds, opened = run_spu(nparties, program).results[0]
    want = np.concatenate([[1], np.any(np.diff(columns, axis=1) != 0, axis=0)]).astype(np.int64)[:n]
    assert opened.astype(np.int64).tolist() == want.tolist()
    if n >= 2:
        assert rounds == max(equality_rounds(nparties, b) for b in key_bits) + log2(len(key_bits)) + 1


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("n", [17, 256])
def test_group_by_with_a_counted_column_tests_both_runs_in_one_batch(nparties, n, monkeypatch):
    """Outside its sorts, a group-by on a 6-bit code with a `within` column pays one batch of
    neighbour equalities for the groups' runs and the counted column's (the slowest: its 64-bit
    value), their AND trees side by side (2 rounds: three keys), one B2A, one product (the weights)
    and the scan: was two `neighbour_starts` one after the other."""
    x, y, k = data(n)
    spent = sort_rounds_spent(monkeypatch)

    def operator(s):
        code, value, weight = share(s, k), share(s, x, 1), share(s, (y > 0).astype(np.int64), 1)
        within = [relational.Counted(weight, (share(s, y, 1),))]
        return lambda: relational.group_by(s, [code], [("sum", value), ("count", None)], key_bits=[6], within=within)

    rounds = rounds_of(nparties, operator)
    outside = rounds - spent[-1]  # the one sort (every party records the same count)
    assert outside == equality_rounds(nparties, 64) + log2(3) + 1 + 1 + scan_levels(n)


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("columns", [1, 4])
def test_empty_group_tests_are_one_comparison_for_any_number_of_columns(nparties, columns):
    """`compare.positive_many` (the stage's [count > 0] per counted column): C + 1 rounds, not
    (C + 1) per column."""
    def operator(s):
        xs = [share(s, np.arange(17) - 8) for _ in range(columns)]
        return lambda: compare.positive_many(s, xs)

    assert rounds_of(nparties, operator) == C[nparties] + 1


def _relation(s, keys, owner):
    """A secret relation of one int key column (None: NULL) and a payload, every 7th row invalid, shared
    by `owner`."""
    n = len(keys)
    key = np.array([0 if k is None else k for k in keys], np.int64)
    valid = np.array([k is not None for k in keys], np.int64)
    return secret_relation.SecretRelation(
        {f"k{owner}": SV([share(s, key, owner)], share(s, valid, owner), "int"),
         f"p{owner}": SV([share(s, np.arange(n), owner)], share(s, np.ones(n, np.int64), owner), "int")},
        share(s, (np.arange(n) % 7 != 3).astype(np.int64), owner))


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("n, m", [(1, 1), (5, 3), (16, 16), (64, 40), (200, 300), (7, 0)])
@pytest.mark.parametrize("anti, null_aware", [(False, False), (True, False), (True, True)])
def test_semi_join_is_one_sort_then_constant_rounds_and_one_scan(nparties, n, m, anti, null_aware, monkeypatch):
    """`secret_relation.semi_join` (IN, EXISTS, NOT EXISTS; NOT IN `null_aware`) outside its one sort:
    C_eq + C + 6 + S rounds for n + m rows (S = ceil(log2(n + m))), NOT IN one more; the sort sorts 3
    columns (keys not NULL, the key, the side tag)."""
    rng = np.random.default_rng(n * 31 + m)
    left = [None if i % 9 == 4 else int(v) for i, v in enumerate(rng.integers(0, n + 3, n))]
    right = [None if i % 11 == 5 else int(v) for i, v in enumerate(rng.integers(0, n + 3, m))]
    spent = sort_rounds_spent(monkeypatch)
    keys = [sqlglot.parse_one('"k0"'), sqlglot.parse_one('"k1"')]

    def operator(s):
        a, b = _relation(s, left, 0), _relation(s, right, 1)
        return lambda: secret_relation.semi_join(s, a, b, keys[:1], keys[1:], anti, null_aware)

    rounds = rounds_of(nparties, operator)
    sorted_rounds = spent[-1]
    assert rounds - sorted_rounds == C_EQ[nparties] + C[nparties] + 6 + log2(n + m) + (1 if null_aware else 0)
    quicksort_levels(sorted_rounds, nparties, 3, n + m)  # keys not NULL, the key, the side tag
