"""Unbalanced PSI against the plaintext reference and the balanced ECDH path; epochs, rotation, bad messages."""

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlsecure.errors import ProgrammingError, ProtocolError
from sqlsecure.executors.psi import unbalanced as unbalanced_psi
from sqlsecure.executors.runtime.channel import InProcessChannel
from sqlsecure.executors.psi.blinding import PARALLEL_MIN, GroupWorkers, hash_to_points
from sqlsecure.executors.psi.ecdh import local_join_indices, psi_join_indices
from sqlsecure.executors.psi.unbalanced import (JOIN, LARGE, MEMBERSHIP, NO_EPOCH, SMALL, EpochAnswer, Hello,
                                                Matches, PsiCache, unbalanced_join_indices,
                                                unbalanced_membership)

HELLO, EPOCH = Hello.FORMAT.size, EpochAnswer.FORMAT.size


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def enc(values):
    return [None if v is None else b"k%d" % v for v in values]


def random_keys(rng, n, universe, nulls=0.05):
    return [None if rng.random() < nulls else b"k%d" % v for v in rng.integers(0, universe, n).tolist()]


def run(small, large, caches, small_is_left=True, membership=False, workers=None, scope="t1.k",
        channel=None, tag="q"):
    """Small side "s" and large side "l" as two threads; returns (s result, l result, channel stats of this run)."""
    channel = channel or InProcessChannel(["s", "l"], timeout=30)
    before = channel.stats.snapshot()

    def side(name, peer, keys, is_large, is_left):
        if membership:
            return lambda ep: unbalanced_membership(ep, peer, tag, keys, is_large, caches[name], workers, scope)
        return lambda ep: unbalanced_join_indices(ep, peer, tag, keys, is_left, is_large, caches[name], workers,
                                                  scope)

    out = channel.run({"s": side("s", "l", small, False, small_is_left),
                       "l": side("l", "s", large, True, not small_is_left)})
    return out["s"], out["l"], channel.stats.since(before)


def pairs(left, right):
    return sorted(zip(left.tolist(), right.tolist()))


def reference(left, right):
    return pairs(*local_join_indices(left, right))


def caches(**kw):
    return {"s": PsiCache(**kw), "l": PsiCache(**kw)}


def check_join(small, large, c, small_is_left=True, **kw):
    s, l, stats = run(small, large, c, small_is_left, **kw)
    assert len(s) == len(l)
    if small_is_left:
        assert pairs(s, l) == reference(small, large)
    else:
        assert pairs(l, s) == reference(large, small)
    return stats


def balanced(left, right):
    out = InProcessChannel(["a", "b"], timeout=30).run({
        "a": lambda ep: psi_join_indices(ep, "b", "t", left, True),
        "b": lambda ep: psi_join_indices(ep, "a", "t", right, False)})
    return out["a"], out["b"]


# --- results -------------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(0, 8)), max_size=12),
       st.lists(st.one_of(st.none(), st.integers(0, 8)), max_size=40),
       st.booleans())
def test_join_equals_reference(small_values, large_values, small_is_left):
    check_join(enc(small_values), enc(large_values), caches(), small_is_left)


def test_join_equals_the_balanced_ecdh_path_in_its_common_order():
    rng = np.random.default_rng(1)
    small, large = random_keys(rng, 60, 200), random_keys(rng, 900, 200)
    s, l, _ = run(small, large, caches())
    bs, bl = balanced(small, large)
    assert pairs(s, l) == pairs(bs, bl) == reference(small, large)
    assert len(set(zip(s.tolist(), l.tolist()))) == len(s)  # each pair once


@pytest.mark.parametrize("small_is_left", [True, False])
def test_join_with_nulls_and_duplicates_on_both_sides(small_is_left):
    rng = np.random.default_rng(2)
    c = caches()
    for _ in range(3):  # the later runs reuse the epoch
        small, large = random_keys(rng, 50, 100, nulls=0.2), random_keys(rng, 700, 100, nulls=0.2)
        check_join(small, large, c, small_is_left)


def test_membership_equals_reference():
    rng = np.random.default_rng(3)
    small, large = random_keys(rng, 80, 300), random_keys(rng, 1000, 300)
    c = caches()
    for _ in range(2):
        ms, ml, _ = run(small, large, c, membership=True)
        assert ms.dtype == bool and ml.dtype == bool
        assert ms.tolist() == [k is not None and k in set(large) for k in small]
        assert ml.tolist() == [k is not None and k in set(small) for k in large]


def test_empty_sides():
    c = caches()
    s, l, _ = run([], enc([1, 2]), c)
    assert len(s) == len(l) == 0
    s, l, _ = run(enc([1, None]), [], caches())
    assert len(s) == len(l) == 0
    s, l, _ = run([None], [None, None], caches())
    assert len(s) == len(l) == 0


def test_no_plaintext_key_crosses(channel_spy):
    channel = InProcessChannel(["s", "l"], timeout=30)
    sent = channel_spy(channel)
    run([b"customer-4711-secret", b"i1"], [b"i1", b"i2", b"large-secret-99"], caches(), channel=channel)
    assert sent and not any(b"customer-4711" in m or b"large-secret" in m for m in sent)


# --- epochs: reuse, change, rotation ----------------------------------------------------------------


def query_bytes(n_small, common):
    """Both directions of a query that reuses the epoch: hello, epoch, points, matches, counts."""
    s_to_l = HELLO + 32 * n_small + 8 * common + 4 * common
    l_to_s = HELLO + EPOCH + 32 * n_small + 4 * common
    return s_to_l, l_to_s


def test_second_query_reuses_the_prepared_set():
    small = enc(list(range(40)) + [None, 3, 3])  # 40 distinct, 5..39 common with the large side
    large = enc(list(range(5, 2005)) * 2)  # 2,000 distinct
    c = caches()
    first = check_join(small, large, c)
    s_to_l, l_to_s = query_bytes(40, 35)
    assert first.bytes[("s", "l")] == s_to_l
    assert first.bytes[("l", "s")] == l_to_s + 32 * 2000
    second = check_join(small, large, c)
    assert second.bytes[("s", "l")] == s_to_l and second.bytes[("l", "s")] == l_to_s
    # hello, blinded, matches, counts / hello, epoch, reblinded, counts
    assert second.messages[("s", "l")] == 4 and second.messages[("l", "s")] == 4
    assert len(c["s"]) == len(c["l"]) == 1
    assert c["s"].nbytes() >= 20 * 2000 and c["l"].nbytes() >= 4 * 2000
    # A different small set against the same prepared set: still no P.
    third = check_join(enc(range(1000, 1100)), large, c)
    assert third.bytes[("l", "s")] == query_bytes(100, 100)[1]


def test_the_same_keys_in_another_row_order_keep_the_epoch():
    rng = np.random.default_rng(4)
    small, large = random_keys(rng, 50, 400), random_keys(rng, 1500, 400)
    c = caches()
    check_join(small, large, c)
    shuffled = [large[i] for i in rng.permutation(len(large))] + large[:100]  # same distinct keys
    stats = check_join(small, shuffled, c)
    assert stats.bytes[("l", "s")] < 32 * 60 + 200


def test_a_change_of_the_large_keys_starts_a_new_epoch():
    rng = np.random.default_rng(5)
    small, large = random_keys(rng, 50, 400), random_keys(rng, 1500, 400)
    c = caches()
    check_join(small, large, c)
    changed = large + [b"k%d" % 10_000, small[0] or b"k1"]  # one new key outside the old set
    n_large = len(set(changed) - {None})
    stats = check_join(small + [b"k%d" % 10_000], changed, c)
    assert stats.bytes[("l", "s")] >= 32 * n_large  # P sent again
    stats = check_join(small, changed, c)  # and reused from then on
    assert stats.bytes[("l", "s")] < 32 * 60 + 200
    removed = [k for k in changed if k != b"k%d" % 10_000]
    stats = check_join(small + [b"k%d" % 10_000], removed, c)
    assert stats.bytes[("l", "s")] >= 32 * (n_large - 1)


def prepared(stats, n_large):
    return stats.bytes[("l", "s")] >= 32 * n_large


def test_rotation_after_max_uses():
    small, large = enc(range(10)), enc(range(300))
    c = caches(max_uses=2)
    assert [prepared(check_join(small, large, c), 300) for _ in range(5)] == [True, False, True, False, True]


@pytest.mark.parametrize("side", ["s", "l"])
def test_rotation_after_lifetime_on_either_side(side):
    clock = Clock()
    c = {"s": PsiCache(), "l": PsiCache()}
    c[side] = PsiCache(lifetime=60.0, clock=clock)
    small, large = enc(range(10)), enc(range(300))
    epochs = []
    for advance in (0, 30, 29, 2, 10):
        clock.now += advance
        assert prepared(check_join(small, large, c), 300) == (advance in (0, 2))
        epochs.append(c["s"]._lookup(SMALL, "l", "t1.k").epoch)
    assert epochs[0] == epochs[1] == epochs[2] != epochs[3] == epochs[4]


def test_default_rotation():
    cache = PsiCache()
    assert cache.lifetime == 86_400.0 and cache.max_uses == 1_000
    with pytest.raises(ProgrammingError):
        PsiCache(lifetime=0)
    with pytest.raises(ProgrammingError):
        PsiCache(max_uses=0)


def test_small_side_that_lost_its_cache_gets_a_new_epoch():
    small, large = enc(range(10)), enc(range(300))
    c = caches()
    check_join(small, large, c)
    old = c["l"]._lookup(LARGE, "s", "t1.k")
    c["s"].forget("l")
    assert prepared(check_join(small, large, c), 300)
    new = c["l"]._lookup(LARGE, "s", "t1.k")
    assert new.epoch != old.epoch and new.key._raw != old.key._raw


def test_epochs_are_kept_per_scope_and_evicted_least_recently_used():
    small, large = enc(range(10)), enc(range(300))
    c = caches(max_entries=2)
    assert prepared(check_join(small, large, c, scope="A"), 300)
    assert prepared(check_join(small, large, c, scope="B"), 300)
    a_s, b_s = (c["s"]._lookup(SMALL, "l", x).key._raw for x in "AB")
    assert a_s != b_s  # a is per scope: S's blinded keys do not link across scopes
    assert not prepared(check_join(small, large, c, scope="A"), 300)
    assert prepared(check_join(small, large, c, scope="C"), 300)  # evicts B (least recently used)
    assert prepared(check_join(small, large, c, scope="B"), 300)
    assert len(c["s"]) == len(c["l"]) == 2


def test_concurrent_queries_on_one_cache_stay_correct():
    rng = np.random.default_rng(6)
    c = caches()
    results, errors = [], []
    smalls = [random_keys(rng, 30, 200) for _ in range(4)]
    large = random_keys(rng, 500, 200)
    def one(i):  # a channel per query; the two parties' caches are shared
        try:
            s, l, _ = run(smalls[i], large, c, tag=f"q{i}")
            results.append(pairs(s, l) == reference(smalls[i], large))
        except Exception as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [True] * 4


# --- batches and the worker processes --------------------------------------------------------------


def test_prepared_set_in_batches_on_the_workers(monkeypatch):
    monkeypatch.setattr(unbalanced_psi, "BATCH", 1024)
    rng = np.random.default_rng(8)
    small = random_keys(rng, 1500, 20_000)
    large = random_keys(rng, 3000, 20_000) + small[:200]
    c = caches()
    first = check_join(small, large, c, workers=GroupWorkers(processes=2))
    n_large = len(set(large) - {None})
    assert n_large > PARALLEL_MIN
    assert first.messages[("l", "s")] == 2 + (n_large // 1024 + 1) + (len(set(small) - {None}) // 1024 + 1) + 1
    second = check_join(small, large, c, workers=GroupWorkers(processes=2))
    assert second.bytes[("l", "s")] == first.bytes[("l", "s")] - 32 * n_large


def test_prefix_sort_falls_back_to_the_exact_sort_on_a_shared_prefix():
    rng = np.random.default_rng(9)
    points = rng.integers(0, 256, (50, 32), dtype=np.uint8)
    points[10, :8] = points[20, :8]  # two different points with one 8-byte prefix
    points[30] = points[40]  # and a real duplicate
    inverse, first = unbalanced_psi._sorted_distinct(points)
    _, ref_first, ref_inverse = np.unique(points.view("S32").ravel(), return_index=True, return_inverse=True)
    assert inverse.tolist() == ref_inverse.reshape(-1).tolist() and first.tolist() == ref_first.tolist()
    fast = np.delete(points, 10, axis=0)  # no shared prefix left: the fast path, in the same order
    inverse, first = unbalanced_psi._sorted_distinct(fast)
    _, ref_first, ref_inverse = np.unique(fast.view("S32").ravel(), return_index=True, return_inverse=True)
    assert inverse.tolist() == ref_inverse.reshape(-1).tolist()
    assert (fast[first] == fast[ref_first]).all()


def test_lookup_handles_a_shared_64_bit_prefix_in_the_prepared_set():
    rng = np.random.default_rng(10)
    d = rng.integers(0, 2 ** 63, (6, 4), dtype=np.uint64)
    d[3, 0] = d[1, 0]  # points 1 and 3 share their first 8 bytes
    by = np.argsort(d[:, 0], kind="stable")
    entry = unbalanced_psi._SmallEpoch(b"e" * 16, None, 6, d[by, 0], d[by, 1], by.astype(np.uint32), 0.0)
    query = np.concatenate([d[[3, 1, 5]], rng.integers(0, 2 ** 63, (1, 4), dtype=np.uint64)])
    query[2, 1] ^= 1  # same low word as point 5, different high word: no match
    found = unbalanced_psi._find(entry, query.astype("<u8").view(np.uint8).reshape(-1, 32))
    assert found.tolist() == [3, 1, -1, -1]


# --- messages --------------------------------------------------------------------------------------


def test_messages_round_trip():
    hello = Hello(SMALL, JOIN, b"s" * 16, b"e" * 16)
    assert Hello.from_bytes(hello.to_bytes(), "p") == hello
    answer = EpochAnswer(b"e" * 16, 12345, True)
    assert EpochAnswer.from_bytes(answer.to_bytes(), "p") == answer
    m = Matches(np.array([0, 5, 9], dtype=np.int64))
    assert Matches.from_bytes(m.to_bytes(), "p", 10, 3).positions.tolist() == [0, 5, 9]


@pytest.mark.parametrize("data", [b"", b"x" * (HELLO - 1), b"\x02" + Hello(SMALL, JOIN, b"s" * 16).to_bytes()[1:],
                                  Hello(SMALL, JOIN, b"s" * 16).to_bytes()[:1] + b"\x07" + b"\x01" * (HELLO - 2)])
def test_bad_hello_is_refused(data):
    with pytest.raises(ProtocolError):
        Hello.from_bytes(data, "p")


@pytest.mark.parametrize("data", [b"x" * 24, NO_EPOCH + bytes(9), b"e" * 16 + bytes(8) + b"\x02"])
def test_bad_epoch_answer_is_refused(data):
    with pytest.raises(ProtocolError):
        EpochAnswer.from_bytes(data, "p")


@pytest.mark.parametrize("positions,size,most", [([1, 1], 10, 5), ([3, 2], 10, 5), ([0, 10], 10, 5),
                                                 ([0, 1, 2], 10, 2)])
def test_bad_matches_are_refused(positions, size, most):
    with pytest.raises(ProtocolError):
        Matches.from_bytes(np.array(positions, dtype="<u8").tobytes(), "p", size, most)
    with pytest.raises(ProtocolError):
        Matches.from_bytes(b"1234567", "p", size, most)


def test_both_sides_large_or_small_is_refused():
    with pytest.raises(ProtocolError, match="both took the large side"):
        run_roles(True, True)
    with pytest.raises(ProtocolError):
        run_roles(False, False)


def run_roles(s_large, l_large):
    c = caches()

    def side(name, peer, is_large):
        return lambda ep: unbalanced_join_indices(ep, peer, "q", enc([1, 2]), True, is_large, c[name])

    InProcessChannel(["s", "l"], timeout=5).run({"s": side("s", "l", s_large), "l": side("l", "s", l_large)})


def test_scope_or_mode_mismatch_is_refused():
    channel = InProcessChannel(["s", "l"], timeout=5)
    channel.endpoint("s").send("l", "q/hello", Hello(SMALL, JOIN, unbalanced_psi._scope_hash("other")).to_bytes())
    with pytest.raises(ProtocolError, match="different scope"):
        unbalanced_join_indices(channel.endpoint("l"), "s", "q", enc([1]), True, True, PsiCache(), scope="mine")
    channel = InProcessChannel(["s", "l"], timeout=5)
    channel.endpoint("s").send("l", "q/hello", Hello(SMALL, MEMBERSHIP, unbalanced_psi._scope_hash("")).to_bytes())
    with pytest.raises(ProtocolError, match="membership"):
        unbalanced_join_indices(channel.endpoint("l"), "s", "q", enc([1]), True, True, PsiCache())


def refused_by(me, messages):
    """Run side `me` ("s" small, "l" large) against scripted messages from its peer; what it raised."""
    peer, large = ("l", False) if me == "s" else ("s", True)
    channel = InProcessChannel(["s", "l"], timeout=5)
    scripted = channel.endpoint(peer)
    scripted.send(me, "q/hello", Hello(SMALL if large else LARGE, JOIN, unbalanced_psi._scope_hash("")).to_bytes())
    for tag, payload in messages:
        scripted.send(me, tag, payload)
    with pytest.raises(ProtocolError) as info:
        unbalanced_join_indices(channel.endpoint(me), peer, "q", enc(range(5) if large else [1, 2]), True, large,
                                PsiCache())
    return info.value


def test_malformed_large_side_messages_are_refused():
    points = hash_to_points([b"a", b"b", b"c"])
    assert "bytes of its prepared set" in str(refused_by("s",
        [("q/epoch", EpochAnswer(b"e" * 16, 3, True).to_bytes()), ("q/prepared", points[:64])]))
    assert "repeats a point" in str(refused_by("s",
        [("q/epoch", EpochAnswer(b"e" * 16, 3, True).to_bytes()), ("q/prepared", points[:64] + points[:32])]))
    assert "do not hold" in str(refused_by("s",
        [("q/epoch", EpochAnswer(b"e" * 16, 3, False).to_bytes())]))
    assert "invalid group element" in str(refused_by("s",  # a low-order point
        [("q/epoch", EpochAnswer(b"e" * 16, 1, True).to_bytes()), ("q/prepared", bytes(32))]))
    assert "re-blinded" in str(refused_by("s",
        [("q/epoch", EpochAnswer(b"e" * 16, 3, True).to_bytes()), ("q/prepared", points),
         ("q/reblinded", points[:32])]))
    assert "epoch answer" in str(refused_by("s", [("q/epoch", b"short")]))


def test_malformed_small_side_messages_are_refused():
    points = hash_to_points([b"a", b"b"])
    assert "malformed" in str(refused_by("l", [("q/blinded", points + b"x")]))
    assert "matches" in str(refused_by("l", [("q/blinded", points), ("q/matches", np.array(
        [0, 1, 2], dtype="<u8").tobytes())]))  # more matches than points sent
    assert "ascending" in str(refused_by("l", [("q/blinded", points), ("q/matches", np.array(
        [1, 0], dtype="<u8").tobytes())]))
    assert "multiplicities" in str(refused_by("l", [("q/blinded", points), ("q/matches", np.array(
        [0], dtype="<u8").tobytes()), ("q/counts", b"")]))
