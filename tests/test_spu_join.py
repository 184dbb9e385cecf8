"""SPU oblivious PK-FK join, its sorting network and permutation application, against plaintext
references; its traffic must not depend on which rows match."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlsecure.errors import ProgrammingError
from sqlsecure.executors.spu import arith, join
from sqlsecure.executors.spu.dealer import DEALER
from sqlsecure.executors.spu.local import run_spu
from sqlsecure.executors.spu.shares import as_ring, decode_fixed, to_signed

PARTIES = [2, 3]
TOP = (1 << 60) - 1  # the largest key limb


def share(s, values, owner=0):
    values = np.asarray(values, dtype=np.int64)
    return arith.share_input(s, owner, as_ring(values) if s.index == owner else None, values.shape)


def limbs_of(ids, nlimbs=2, seed=7):
    """Key ids -> nlimbs limbs in [0, 2^60) (equal ids, equal limbs), as a caller's hash would."""
    table = np.random.default_rng(seed).integers(0, 1 << 60, (nlimbs, 1024), dtype=np.int64)
    table[:, 0], table[:, 1] = 0, TOP  # extremes of the limb range
    return [t[np.asarray(ids, np.int64)] for t in table]


def run_join(nparties, u_ids, u_valid, u_pay, m_ids, m_valid, m_pay, nlimbs=2, fixed=()):
    """Share the unique side at party 0 and the many side at the last party, join, reveal.
    Payload columns named in `fixed` (("u", i) / ("m", i)) are shared as fixed point."""
    uk, mk = limbs_of(u_ids, nlimbs), limbs_of(m_ids, nlimbs)

    def pay(s, cols, side, owner):
        return [arith.share_fixed(s, owner, c if s.index == owner else None, np.shape(c))
                if (side, i) in fixed else share(s, c, owner) for i, c in enumerate(cols)]

    def program(s):
        last = s.nparties - 1
        j = join.oblivious_pk_join(
            s, [share(s, k) for k in uk], share(s, u_valid), pay(s, u_pay, "u", 0),
            [share(s, k, last) for k in mk], share(s, m_valid, last), pay(s, m_pay, "m", last))
        cols = [j.match, *j.many_payload, *j.unique_payload]
        opened = arith.reveal_many(s, cols)
        return [decode_fixed(v, c.frac) if c.frac else to_signed(v) for v, c in zip(opened, cols)]

    run = run_spu(nparties, program)
    match, *rest = run.results[0]
    return run, match, rest[:len(m_pay)], rest[len(m_pay):]


def reference_join(u_ids, u_valid, u_pay, m_ids, m_valid, m_pay):
    """Matched rows as sorted (many payload..., unique payload...) tuples."""
    where = {k: i for i, (k, v) in enumerate(zip(u_ids, u_valid)) if v}
    rows = []
    for i, (k, v) in enumerate(zip(m_ids, m_valid)):
        if v and k in where:
            rows.append(tuple(c[i] for c in m_pay) + tuple(c[where[k]] for c in u_pay))
    return sorted(rows)


def check(got, u_ids, u_valid, u_pay, m_ids, m_valid, m_pay):
    _, match, many, unique = got
    n = len(u_ids) + len(m_ids)
    assert len(match) == n and all(len(c) == n for c in (*many, *unique))
    assert set(match.tolist()) <= {0, 1}
    hit = match == 1
    rows = sorted(zip(*[c[hit].tolist() for c in (*many, *unique)]))
    assert rows == reference_join(u_ids, u_valid, u_pay, m_ids, m_valid, m_pay)
    assert all((c[~hit] == 0).all() for c in unique)
    # every many row is carried once; rows from the unique side carry zeros
    carried = sorted(zip(*[c.tolist() for c in many]))
    assert carried == sorted(list(zip(*[np.asarray(c).tolist() for c in m_pay])) + [(0,) * len(m_pay)] * len(u_ids))


def case(rng, nu, nm, key_space, null_rate=0.2):
    u_ids = rng.permutation(key_space)[:nu]
    m_ids = rng.integers(0, key_space, nm)
    u_valid = (rng.random(nu) >= null_rate).astype(np.int64)
    m_valid = (rng.random(nm) >= null_rate).astype(np.int64)
    u_pay = [np.arange(nu) + 100, rng.integers(-10**6, 10**6, nu)]
    m_pay = [np.arange(nm) + 1, rng.integers(-10**6, 10**6, nm)]
    return u_ids, u_valid, u_pay, m_ids, m_valid, m_pay


# --- the network and the permutation ------------------------------------------------------------------

@pytest.mark.parametrize("n", range(0, 15))
def test_sorting_network_sorts_every_zero_one_input(n):
    """0-1 principle (Knuth, TAOCP 5.3.4): a comparator network sorts everything iff it sorts all
    2^n zero-one inputs; within a layer no position is used twice."""
    layers = join.sorting_network(n)
    for lo, hi in layers:
        assert (lo < hi).all() and (hi < n).all()
        assert len(np.union1d(lo, hi)) == 2 * lo.size
    x = (np.arange(2 ** n)[:, None] >> np.arange(n)) & 1
    for lo, hi in layers:
        a, b = np.minimum(x[:, lo], x[:, hi]), np.maximum(x[:, lo], x[:, hi])
        x[:, lo], x[:, hi] = a, b
    assert (np.diff(x, axis=1) >= 0).all()


@pytest.mark.parametrize("n", [100, 1000, 1025])
def test_sorting_network_size(n):
    """ceil(log2 n)(ceil(log2 n)+1)/2 layers, fewer comparators than a bitonic sort padded to 2^L."""
    L = (n - 1).bit_length()
    layers = join.sorting_network(n)
    x = np.random.default_rng(n).integers(0, 40, n)
    for lo, hi in layers:
        a, b = np.minimum(x[lo], x[hi]), np.maximum(x[lo], x[hi])
        x[lo], x[hi] = a, b
    assert (np.diff(x) >= 0).all()
    assert len(layers) == L * (L + 1) // 2
    assert sum(lo.size for lo, _ in layers) < (1 << L) // 2 * L * (L + 1) // 2


@pytest.mark.parametrize("nparties", PARTIES)
def test_network_sort_against_lexsort(nparties):
    rng = np.random.default_rng(3)
    n = 77
    k1 = rng.choice([0, 1, 5, (1 << 63) - 1], n)
    k2 = rng.integers(0, 4, n)
    rowid = np.arange(n)

    def program(s):
        keys, (rows,) = join.network_sort(s, [share(s, k1), share(s, k2, 1)], [share(s, rowid)])
        return [to_signed(v) for v in arith.reveal_many(s, [*keys, rows])]

    run = run_spu(nparties, program)
    got1, got2, rows = run.results[0]
    order = np.lexsort((k2, k1))
    assert got1.tolist() == k1[order].tolist() and got2.tolist() == k2[order].tolist()
    assert (k1[rows] == got1).all() and (k2[rows] == got2).all()  # the payload moved with its row
    if nparties == 2:  # 6 comparison rounds, 1 AND, 1 mux per layer, then the reveal
        assert run.rounds == 8 * len(join.sorting_network(n)) + 1


@pytest.mark.parametrize("nparties", PARTIES)
def test_apply_permutation_gathers_rows(nparties):
    n = 50
    perm = np.random.default_rng(5).permutation(n)
    col = np.arange(n) * 3 - 20

    def program(s):
        frac_col = arith.share_fixed(s, 1, col / 4 if s.index == 1 else None, (n,))
        out = join.apply_permutation(s, share(s, perm), [share(s, col, 1), frac_col])
        return to_signed(arith.reveal(s, out[0])), decode_fixed(arith.reveal(s, out[1]), out[1].frac)

    run = run_spu(nparties, program)
    got, got_frac = run.results[0]
    assert got.tolist() == col[perm].tolist() and got_frac.tolist() == (col[perm] / 4).tolist()
    assert run.rounds == 2 * nparties + 2 + 2


def test_apply_permutation_refuses_a_non_permutation():
    def program(s):
        return join.apply_permutation(s, share(s, [0, 0, 1]), [share(s, [1, 2, 3])])

    with pytest.raises(Exception, match="not a permutation"):
        run_spu(2, program)


# --- the join ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("nparties", PARTIES)
@pytest.mark.parametrize("seed", [1, 2])
def test_join_random_keys_with_duplicates_and_nulls(nparties, seed):
    rng = np.random.default_rng(seed)
    data = case(rng, 23, 41, key_space=40)
    check(run_join(nparties, *data), *data)


@settings(max_examples=12, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.booleans()), max_size=10, unique_by=lambda r: r[0]),
       st.lists(st.tuples(st.integers(0, 9), st.booleans()), max_size=14))
def test_join_against_reference_any_shape(unique_rows, many_rows):
    u_ids = np.array([r[0] for r in unique_rows], np.int64)
    u_valid = np.array([r[1] for r in unique_rows], np.int64)
    m_ids = np.array([r[0] for r in many_rows], np.int64)
    m_valid = np.array([r[1] for r in many_rows], np.int64)
    u_pay, m_pay = [u_ids * 10 + 7], [np.arange(len(m_ids)) + 1]
    data = (u_ids, u_valid, u_pay, m_ids, m_valid, m_pay)
    check(run_join(2, *data), *data)


@pytest.mark.parametrize("nparties", PARTIES)
def test_nulls_never_match_even_with_a_valid_rows_key(nparties):
    """NULL rows carrying the very limbs of valid rows (on either side) match nothing and do not
    disturb the valid rows of that key."""
    u_ids, u_valid = np.array([1, 1, 2, 3, 3]), np.array([1, 0, 0, 0, 1])
    m_ids, m_valid = np.array([1, 1, 2, 2, 3, 3, 1]), np.array([1, 0, 1, 0, 0, 1, 1])
    u_pay, m_pay = [np.array([10, 11, 20, 30, 31])], [np.arange(7) + 1]
    data = (u_ids, u_valid, u_pay, m_ids, m_valid, m_pay)
    got = run_join(nparties, *data)
    check(got, *data)
    assert got[1].sum() == 3  # many rows 1, 6 (key 1 -> 10), 5 (key 3 -> 31)


@pytest.mark.parametrize("nparties", PARTIES)
def test_no_overlap_full_overlap_and_one_to_one(nparties):
    ids = np.arange(12)
    ones = np.ones(12, np.int64)
    pay_u, pay_m = [ids + 100], [ids + 1]
    none = (ids, ones, pay_u, ids + 20, ones, pay_m)
    got = run_join(nparties, *none)
    check(got, *none)
    assert got[1].sum() == 0
    one_to_one = (ids, ones, pay_u, ids[::-1], ones, pay_m)
    got = run_join(nparties, *one_to_one)
    check(got, *one_to_one)
    assert got[1].sum() == 12
    full = (ids[:4], ones[:4], [ids[:4] + 100], np.repeat(ids[:4], 3), np.ones(12, np.int64), pay_m)
    got = run_join(nparties, *full)
    check(got, *full)
    assert got[1].sum() == 12


@pytest.mark.parametrize("nparties", PARTIES)
def test_empty_sides(nparties):
    e = np.zeros(0, np.int64)
    ids = np.array([1, 2, 2])
    ones = np.ones(3, np.int64)
    for data in [(e, e, [e], ids, ones, [ids + 1]), (ids[:2], ones[:2], [ids[:2]], e, e, [e]),
                 (e, e, [e], e, e, [e]), (ids[:1], ones[:1], [ids[:1]], ids[1:2], ones[:1], [ids[:1]])]:
        check(run_join(nparties, *data), *data)


@pytest.mark.parametrize("nparties", PARTIES)
def test_fixed_point_payloads_keep_their_scale(nparties):
    rng = np.random.default_rng(11)
    u_ids, m_ids = np.arange(8), rng.integers(0, 12, 15)
    u_pay = [np.round(rng.normal(0, 100, 8), 2), np.arange(8)]
    m_pay = [np.round(rng.normal(0, 100, 15), 2)]
    run, match, many, unique = run_join(nparties, u_ids, np.ones(8), u_pay, m_ids, np.ones(15), m_pay,
                                        fixed={("u", 0), ("m", 0)})
    hit = match == 1
    tol = 2.0 ** -16
    want = {float(m_pay[0][i]): (u_pay[0][k], k) for i, k in enumerate(m_ids) if k < 8}
    assert hit.sum() == len(want)
    for mv, uf, ui in zip(many[0][hit], unique[0][hit], unique[1][hit]):
        key = min(want, key=lambda w: abs(w - mv))
        assert abs(key - mv) <= tol and abs(want[key][0] - uf) <= tol and want[key][1] == ui
    assert (unique[0][~hit] == 0).all()


@pytest.mark.parametrize("nlimbs", [1, 3])
def test_other_limb_counts(nlimbs):
    rng = np.random.default_rng(nlimbs)
    data = case(rng, 9, 20, key_space=14)
    uk = limbs_of(data[0], nlimbs)
    assert len(uk) == nlimbs
    check(run_join(2, *data, nlimbs=nlimbs), *data)


def test_duplicate_unique_keys_give_one_of_them():
    """Outside the contract: no crash, match stays 0/1, each matched row gets one duplicate's payload."""
    u_ids, u_pay = np.array([4, 4, 4, 5]), [np.array([40, 41, 42, 50])]
    m_ids, m_pay = np.array([4, 4, 5, 6]), [np.arange(4) + 1]
    _, match, many, unique = run_join(2, u_ids, np.ones(4), u_pay, m_ids, np.ones(4), m_pay)
    assert set(match.tolist()) <= {0, 1} and match.sum() == 3
    got = {m: u for m, u, f in zip(many[0], unique[0], match) if f}
    assert got[1] in (40, 41, 42) and got[2] in (40, 41, 42) and got[3] == 50


def test_rows_come_out_in_a_random_order():
    data = (np.arange(10), np.ones(10), [np.arange(10)], np.arange(10), np.ones(10), [np.arange(10) + 1])
    orders = {tuple(run_join(2, *data)[2][0].tolist()) for _ in range(3)}
    assert len(orders) > 1


def test_bad_inputs_are_refused():
    def program(s):
        x = share(s, [1, 2])
        with pytest.raises(ProgrammingError, match="number"):
            join.oblivious_pk_join(s, [x, x], x, [], [x], x, [])
        with pytest.raises(ProgrammingError, match="one length"):
            join.oblivious_pk_join(s, [x], share(s, [1]), [], [x], x, [])
        with pytest.raises(ProgrammingError, match="integers"):
            join.oblivious_pk_join(s, [x.with_frac(16)], x, [], [x], x, [])
        return True

    assert run_spu(2, program).results == [True, True]


# --- traffic -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("nparties", PARTIES)
def test_traffic_does_not_depend_on_which_rows_match(nparties):
    """Equal sizes, 0% / 100% / partly matching / all-NULL inputs: the same messages and bytes on
    every ordered pair (dealer requests included), the same rounds."""
    nu, nm = 30, 50
    rng = np.random.default_rng(9)
    ones_u, ones_m = np.ones(nu, np.int64), np.ones(nm, np.int64)
    pays = ([np.arange(nu), np.arange(nu)], [np.arange(nm), np.arange(nm)])
    inputs = {
        "none": (np.arange(nu), ones_u, pays[0], nu + np.arange(nm) % (64 - nu), ones_m, pays[1]),
        "all": (np.arange(nu), ones_u, pays[0], rng.integers(0, nu, nm), ones_m, pays[1]),
        "some": case(rng, nu, nm, key_space=60),
        "nulls": (np.arange(nu), ones_u * 0, pays[0], rng.integers(0, nu, nm), ones_m * 0, pays[1]),
    }
    seen, matches = {}, {}
    for name, data in inputs.items():
        got = run_join(nparties, *data)
        check(got, *data)
        stats = got[0].channel.stats
        seen[name] = (dict(stats.messages), dict(stats.bytes), got[0].rounds)
        matches[name] = int(got[1].sum())
    assert matches["none"] == matches["nulls"] == 0 and matches["all"] == nm
    assert len({repr(sorted(v[0].items())) for v in seen.values()}) == 1
    assert len({repr(sorted(v[1].items())) for v in seen.values()}) == 1
    assert len({v[2] for v in seen.values()}) == 1
    last = f"p{nparties - 1}"
    requests = {v[0][(last, DEALER)] for v in seen.values()}
    assert len(requests) == 1 and requests.pop() > 0


def test_rounds_and_bytes_are_bounded():
    """2 parties: 8 rounds per network layer plus O(log n); about 112 B per comparator and
    direction (two 64-bit comparison trees + 3 muxed columns) plus O(n log n) for the rest (the
    copy-down is a Sklansky scan: ceil(log2 n) levels of n/2 products per column)."""
    nu, nm = 200, 300
    rng = np.random.default_rng(2)
    data = case(rng, nu, nm, key_space=400)
    run, *_ = run_join(2, *data)
    n = nu + nm
    layers = join.sorting_network(n)
    L = (n - 1).bit_length()
    assert 8 * len(layers) < run.rounds <= 8 * len(layers) + 2 * L + 24
    comparators = sum(lo.size for lo, _ in layers)
    assert run.channel.stats.bytes[("p0", "p1")] <= 116 * comparators + 400 * n + 16 * n * L
