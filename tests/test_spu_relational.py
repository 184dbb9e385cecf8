"""SPU shuffle, sort, group-by, ranks, LIMIT, UNION ALL and compaction against plaintext numpy."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlsecure.executors.spu import arith, relational
from sqlsecure.executors.spu.dealer import DEALER
from sqlsecure.executors.spu.local import run_spu
from sqlsecure.executors.spu.shares import as_ring, to_signed

PARTIES = [2, 3]
KEY = st.sampled_from([0, -1, 1, 2**62 - 1, -(2**62), 7]) | st.integers(-5, 5)


def share(s, values, owner=0):
    values = np.asarray(values, dtype=np.int64)
    return arith.share_input(s, owner, as_ring(values) if s.index == owner else None, values.shape)


def reveal(s, columns):
    return [to_signed(c) for c in arith.reveal_many(s, list(columns))] if columns else []


@pytest.mark.parametrize("nparties", PARTIES)
def test_shuffle_permutes_rows_together_with_bounded_bytes(nparties):
    n = 500
    a, b = np.arange(n), np.arange(n) * 3 - 7

    def program(s):
        return reveal(s, relational.shuffle(s, [share(s, a), share(s, b, 1)]))

    run = run_spu(nparties, program)
    got_a, got_b = run.results[0]
    assert sorted(got_a.tolist()) == a.tolist() and (got_b == got_a * 3 - 7).all()
    assert not (got_a == a).all()
    assert run.rounds == nparties + 1  # one resharing round per permuter, then the reveal
    stats = run.channel.stats
    # round j: each other party sends 8*n*2 bytes to j; the dealer sends Delta_j (8*n*2) to j
    assert stats.bytes[("p1", "p0")] == 16 * n + 8 * n * 2
    assert stats.bytes[(DEALER, "p0")] == 16 * n


def run_sort(nparties, keys, payload, descending=None):
    def program(s):
        ks = [share(s, k, i % nparties) for i, k in enumerate(keys)]
        ps = [share(s, p, nparties - 1) for p in payload]
        sk, sp = relational.sort(s, ks, ps, descending)
        return reveal(s, [*sk, *sp])

    return run_spu(nparties, program).results[0]


@pytest.mark.parametrize("nparties", PARTIES)
@settings(max_examples=10, deadline=None)
@given(st.lists(st.tuples(KEY, KEY), max_size=40), st.booleans())
def test_sort_is_stable_and_exact_with_ties(nparties, rows, desc_second):
    k1 = np.array([r[0] for r in rows], dtype=np.int64)
    k2 = np.array([r[1] for r in rows], dtype=np.int64)
    rowid = np.arange(len(rows))
    got = run_sort(nparties, [k1, k2], [rowid], [False, desc_second])
    order = np.lexsort((rowid, -k2 if desc_second else k2, k1))
    assert [g.tolist() for g in got] == [k1[order].tolist(), k2[order].tolist(), rowid[order].tolist()]


@pytest.mark.parametrize("nparties", PARTIES)
def test_sort_all_equal_single_and_empty(nparties):
    got = run_sort(nparties, [np.full(33, 5)], [np.arange(33)])
    assert got[1].tolist() == list(range(33))  # stable
    assert [g.tolist() for g in run_sort(nparties, [np.array([9])], [np.array([1])])] == [[9], [1]]
    assert [len(g) for g in run_sort(nparties, [np.zeros(0)], [np.zeros(0)])] == [0, 0]


@pytest.mark.parametrize("nparties", PARTIES)
@settings(max_examples=10, deadline=None)
@given(st.lists(st.tuples(KEY, st.integers(0, 3)), max_size=60), st.integers(0, 70), st.booleans())
def test_top_k_orders_the_first_rows_like_a_full_sort(nparties, rows, first, desc):
    """`first` (ORDER BY ... LIMIT): the first rows equal a full stable sort's, ties and
    duplicates included; every row is still there."""
    k1 = np.array([r[0] for r in rows], dtype=np.int64)
    k2 = np.array([r[1] for r in rows], dtype=np.int64)
    rowid = np.arange(len(rows))

    def program(s):
        ks = [share(s, k2), share(s, k1, 1)]
        sk, sp = relational.sort(s, ks, [share(s, rowid, nparties - 1)], [desc, False], first=first)
        return reveal(s, [*sk, *sp])

    got = run_spu(nparties, program).results[0]
    order = np.lexsort((rowid, k1, -k2 if desc else k2))[:first]
    assert [g[:first].tolist() for g in got] == [k2[order].tolist(), k1[order].tolist(), rowid[order].tolist()]
    assert sorted(got[2].tolist()) == rowid.tolist()


def test_sort_reveals_only_a_uniform_order():
    """With all-equal keys the opened comparison results must not be the identity pattern:
    the secret tiebreaker makes them depend on the random shuffle only."""
    patterns = set()
    for _ in range(4):
        def program(s):
            opened = []
            original = s.open_many

            def spy(*args, **kwargs):
                out = original(*args, **kwargs)
                if kwargs.get("bits"):
                    opened.append(tuple(out[0].tolist()))
                return out
            s.open_many = spy
            relational.sort(s, [share(s, np.zeros(8))])
            return tuple(opened)
        patterns.add(run_spu(2, program).results[0])
    assert len(patterns) > 1


def reference_groups(keys, aggs):
    out = {}
    for key in sorted(set(keys.tolist())):
        m = keys == key
        row = []
        for kind, col in aggs:
            row.append(int(m.sum()) if kind == "count" else int(getattr(col[m], kind)()))
        out[key] = tuple(row)
    return out


@pytest.mark.parametrize("nparties", PARTIES)
@settings(max_examples=8, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), KEY, st.integers(-1000, 1000)), max_size=40))
def test_group_by_against_reference(nparties, rows):
    keys = np.array([r[0] for r in rows], dtype=np.int64)
    v = np.array([r[1] for r in rows], dtype=np.int64) // 4  # sums stay in range
    w = np.array([r[2] for r in rows], dtype=np.int64)
    aggs = [("sum", v), ("count", None), ("min", v), ("max", v), ("max", w), ("min", w), ("sum", w)]

    def program(s):
        ks, vs, ws = share(s, keys), share(s, v, nparties - 1), share(s, w, 1)
        cols = {id(v): vs, id(w): ws}
        g = relational.group_by(s, [ks], [(kind, None if c is None else cols[id(c)]) for kind, c in aggs])
        kept = relational.compact(s, g.last, [*g.keys, *g.aggregates])
        return reveal(s, kept)

    got = run_spu(nparties, program).results[0]
    result = {row[0]: tuple(row[1:]) for row in zip(*[c.tolist() for c in got])}
    assert result == reference_groups(keys, aggs)


@pytest.mark.parametrize("nparties", PARTIES)
def test_group_by_all_equal_keys_two_keys_and_having(nparties):
    k1 = np.array([1, 1, 1, 1, 2, 2, 1])
    k2 = np.array([5, 5, 5, 5, 5, 6, 5])
    v = np.array([10, 20, 30, 40, 50, 60, 70])

    def program(s):
        g = relational.group_by(s, [share(s, k1), share(s, k2, 1)], [("sum", share(s, v)), ("count", None)])
        one = relational.group_by(s, [share(s, np.full(5, 3))], [("sum", share(s, np.arange(5)))])
        return reveal(s, [g.last, *g.keys, *g.aggregates]), reveal(s, [one.last, one.aggregates[0]])

    (last, sk1, sk2, sums, counts), (last1, sum1) = run_spu(nparties, program).results[0]
    rows = {(a, b): (c, d) for a, b, c, d, f in zip(sk1, sk2, sums, counts, last) if f}
    assert rows == {(1, 5): (170, 5), (2, 5): (50, 1), (2, 6): (60, 1)}
    assert last1.tolist() == [0, 0, 0, 0, 1] and sum1[-1] == 10


@pytest.mark.parametrize("nparties", PARTIES)
def test_window_functions_limit_union(nparties):
    a = np.array([3, 1, 3, 2, 1, 3])
    b = np.array([0, 5])

    def program(s):
        (sk,), _ = relational.sort(s, [relational.union_all([[share(s, a)], [share(s, b, 1)]])[0]])
        n = len(sk)
        starts = relational.neighbour_starts(s, [sk])
        top = relational.limit([sk], 3)
        return reveal(s, [sk, relational.row_number(s, n), relational.rank(s, [sk]),
                          relational.dense_rank(s, [sk]), relational.row_number(s, n, starts), *top])

    sk, rn, rk, drk, rn_part, top = run_spu(nparties, program).results[0]
    ref = np.sort(np.concatenate([a, b]))
    assert sk.tolist() == ref.tolist() and top.tolist() == ref[:3].tolist()
    assert rn.tolist() == list(range(1, 9))
    assert rk.tolist() == (np.searchsorted(ref, ref) + 1).tolist()
    assert drk.tolist() == (np.searchsorted(np.unique(ref), ref) + 1).tolist()
    assert rn_part.tolist() == [1, 1, 2, 1, 1, 2, 3, 1]  # sorted: 0 1 1 2 3 3 3 5


@pytest.mark.parametrize("nparties", PARTIES)
def test_empty_inputs(nparties):
    def program(s):
        empty = share(s, np.zeros(0))
        g = relational.group_by(s, [empty], [("sum", empty), ("count", None)])
        shuffled = relational.shuffle(s, [empty])
        return [len(c) for c in (*g.keys, g.last, *g.aggregates, *shuffled)]

    assert run_spu(nparties, program).results[0] == [0] * 5


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 8, 13, 64, 100])
def test_scan_levels_compute_every_prefix(n):
    """Sklansky levels (plaintext): combining right <- left + right level by level gives all
    prefix sums, in ceil(log2 n) levels of at most n/2 combines."""
    x = np.arange(1, n + 1)
    levels = relational._scan_levels(n)
    for left, right in levels:
        assert not np.isin(left, right).any() and right.size <= n // 2
        x[right] = x[left] + x[right]
    assert x.tolist() == np.cumsum(np.arange(1, n + 1)).tolist()
    assert len(levels) == (int(np.ceil(np.log2(n))) if n > 1 else 0)


@pytest.mark.parametrize("nparties", PARTIES)
@pytest.mark.parametrize("n", [1, 2, 3, 1000])
def test_segmented_scan_sums_and_extremes_in_shared_rounds(nparties, n):
    """ceil(log2 n) product rounds for sums alone; the sums equal per-run running sums and the
    extremes per-run running MIN/MAX, from one scan."""
    rng = np.random.default_rng(n)
    starts = (rng.random(n) < 0.2).astype(np.int64)
    starts[:1] = 1
    v = rng.integers(-1000, 1000, n)

    def program(s):
        vals, flags = share(s, v), share(s, starts, 1)
        r0 = s.rounds
        (alone,) = relational.segmented_sum(s, [vals], flags)
        sum_rounds = s.rounds - r0
        sums, ext = relational.segmented_scan(s, [vals], [vals, vals], flags, [False, True])
        return sum_rounds, reveal(s, [alone, *sums, *ext])

    run = run_spu(nparties, program)
    sum_rounds, (alone, total, low, high) = run.results[0]
    run_id = np.cumsum(starts)
    want = [[f(v[(run_id == run_id[i]) & (np.arange(n) <= i)]) for i in range(n)] for f in (np.sum, np.min, np.max)]
    assert [alone.tolist(), total.tolist(), low.tolist(), high.tolist()] == [want[0], want[0], want[1], want[2]]
    assert sum_rounds == (int(np.ceil(np.log2(n))) if n > 1 else 0)


def test_group_code_numbers_keys_as_group_by_does():
    """Dense codes from the owner's exact values: NULL one group, -0.0 and 0.0 one, NaN one, and doubles
    closer than the SPU's fixed-point step apart."""
    import pyarrow as pa

    from sqlsecure.executors.spu.stage import group_code

    region = pa.chunked_array([["n", "s", None], ["n", None, "s"]])
    age = pa.chunked_array([[30, 30, 7, 31, 7, 30]])
    code = group_code([region, age])
    assert code.min() == 0 and code.max() == len(set(code.tolist())) - 1
    tuples = list(zip(region.to_pylist(), age.to_pylist()))
    assert all((code[i] == code[j]) == (tuples[i] == tuples[j]) for i in range(6) for j in range(6))
    score = pa.chunked_array([[0.0, -0.0, 1.5, None, 1.5, 0.0, float("nan"), 1.5 + 1e-9, float("nan")]])
    codes = group_code([score])
    assert codes[0] == codes[1] == codes[5] and codes[2] == codes[4] and codes[6] == codes[8]
    assert len(set(codes.tolist())) == 5  # 0.0, 1.5, NULL, NaN, 1.5 + 1e-9
    assert group_code([pa.chunked_array([[]], pa.string())]).size == 0
