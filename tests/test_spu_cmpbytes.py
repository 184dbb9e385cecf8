"""Bytes per comparison (issue 20): the 2-party comparison on k bits in split lanes, and the sort's
keys of known widths packed with the tiebreak into one ring element — each against its plaintext
reference (numpy's sign, `plain_sort_order`), at range edges, ties, negatives and NULL-coded rows,
with the bytes the docstrings state."""

import numpy as np
import pytest

from sqlsecure.executors.spu import arith, boolean, compare, relational
from sqlsecure.executors.spu.local import run_spu
from sqlsecure.executors.spu.shares import as_ring

WIDTHS = [2, 8, 9, 12, 16, 17, 18, 19, 24, 31, 32, 33, 35, 40, 48, 62, 63, 64]


def share(s, values, owner=0):
    values = np.asarray(values, dtype=np.int64)
    return arith.share_input(s, owner, as_ring(values) if s.index == owner else None, values.shape)


def edge_differences(k: int, n: int, seed: int = 0) -> np.ndarray:
    """n differences with |d| < 2^(k-1): the range's edges ±(2^(k-1) - 1), ±1, 0 (equal values),
    the powers of two at the lanes' seams, then random values."""
    lim = (1 << (k - 1)) - 1
    seams = [v for j in range(k - 1) for v in (1 << j, -(1 << j), (1 << j) - 1)]
    fixed = np.array([lim, -lim, 1, -1, 0, 0, *seams], dtype=np.int64)
    rng = np.random.default_rng(seed + k)
    return np.concatenate([fixed, rng.integers(-lim, lim, n - fixed.size, endpoint=True)])[:n]


def lane_rounds(k: int) -> int:
    return max(8, 1 << (k - 1).bit_length()).bit_length() - 1


@pytest.mark.parametrize("want_eq", [True, False])
@pytest.mark.parametrize("k", WIDTHS)
def test_k_bit_comparison_against_numpy_with_its_stated_bytes(k, want_eq):
    """[d < 0] and [d == 0] on k bits equal numpy's at the range's edges, in at most log2(W) rounds
    and exactly `comparison_bytes(k)` per element and direction (the sharing sends nothing from p0)."""
    n = 512
    d = edge_differences(k, n)

    def program(s):
        x = share(s, d, owner=1)
        s.rounds = 0
        lt, eq = compare.compare_bits(s, x.data, want_eq=want_eq, bits=k)
        rounds = s.rounds
        return rounds, s.open_many(bits=[lt, *([eq] if want_eq else [])])

    run = run_spu(2, program)
    rounds, opened = run.results[0]
    assert (opened[0].astype(bool) == (d < 0)).all()
    if want_eq:
        assert (opened[1].astype(bool) == (d == 0)).all()
    assert rounds <= lane_rounds(k)
    opening = (len(opened) * n) // 8
    assert run.channel.stats.bytes[("p0", "p1")] - opening == boolean.comparison_bytes(k, want_eq) * n


def test_split_lanes_cost_less_and_never_more_rounds():
    """Every width costs at most its whole lane, and 18 bits (the tiebreak of 10^5 rows) and 35
    bits (a group code packed with it) cost about 3/4 and 5/8 of it."""
    for k in range(2, 65):
        for want_eq in (True, False):
            assert boolean.comparison_bytes(k, want_eq) <= boolean.lane_bytes(max(8, 1 << (k - 1).bit_length()), want_eq)
    assert boolean.comparison_bytes(18, True) == pytest.approx(11.625)
    assert boolean.comparison_bytes(35, False) == pytest.approx(19.375)
    assert boolean.comparison_bytes(64, True) == pytest.approx(31.625)


def plain_sort_order(keys: list[np.ndarray], descending: list[bool]) -> np.ndarray:
    """The plaintext reference of `relational.sort`: row numbers in lexicographic order of the keys
    (descending ones reversed), ties in input order (the sort is stable)."""
    columns = [(-k if d else k).astype(object) for k, d in zip(keys, descending)]
    return np.array(sorted(range(len(keys[0])), key=lambda i: (*[c[i] for c in columns], i)))


def test_packed_groups_fill_columns_left_to_right():
    """Known widths pack with the tiebreak up to 62 bits; a 64-bit key stands alone."""
    groups = relational.packed_groups([2, 64, 2, 30, 40], [False, True, False, True, False], 17)
    assert [[(f.key, f.bits, f.offset) for f in g] for g in groups] == [
        [(0, 1, 0)], [(1, None, 0)], [(2, 1, 29), (3, 29, 0)], [(4, 39, 17), (5, 17, 0)]]


def sort_case(n: int, seed: int):
    """Keys at their widths' edges: a NULL key (0/1), a signed 64-bit value (negatives, ties, 0 on
    NULL-coded rows), a descending 12-bit code with its maximum 2^11 - 1, a 2-bit flag."""
    rng = np.random.default_rng(seed)
    null = (rng.random(n) < 0.2).astype(np.int64)
    value = np.where(null == 1, 0, rng.choice([-(2**61), -5, -1, 0, 1, 7, 2**61 - 1], n))
    code = rng.choice([0, 1, 2**11 - 2, 2**11 - 1], n)
    flag = rng.integers(0, 2, n)
    return [null, value, code, flag], [False, True, True, False], [2, 64, 12, 2]


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("n, first", [(2, None), (17, None), (300, None), (300, 7)])
def test_sort_with_packed_keys_against_the_plaintext_order(nparties, n, first):
    keys, desc, widths = sort_case(n, n)
    want = plain_sort_order(keys, desc)

    def program(s):
        shared = [share(s, k, i % nparties) for i, k in enumerate(keys)]
        _, (rows,) = relational.sort(s, shared, [share(s, np.arange(n))], desc, key_bits=widths, first=first)
        return arith.reveal(s, rows)

    got = run_spu(nparties, program).results[0].view(np.int64)
    end = n if first is None else first
    assert got[:end].tolist() == want[:end].tolist()


def test_packing_a_group_code_with_the_tiebreak_saves_bytes_and_rounds():
    """The group-by's sort on one code of b bits: one packed 2b - 1 bit comparison per pair (split
    lanes) instead of a code tree with equality, a tiebreak tree and an AND round — fewer bytes
    per comparison and one round less per level."""
    n = 4096
    code = np.random.default_rng(1).integers(0, n, n)
    bits = (n - 1).bit_length() + 1

    def program(s, widths):
        x = share(s, code)
        s.rounds = 0
        relational.sort(s, [x], [], key_bits=widths)
        return s.rounds

    packed, plain = run_spu(2, lambda s: program(s, [bits])), run_spu(2, lambda s: program(s, None))
    assert packed.results[0] < plain.results[0]
    assert packed.party_bytes() < 0.8 * plain.party_bytes()


def test_the_dealer_sends_private_and_corrections_to_party_0():
    """A 64-bit comparison's private ANDs (20 B per element) are corrected at party 0, its fan-out
    ANDs (8 B) at party 1: the two incoming links share the dealer's bytes."""
    n = 1 << 14

    def program(s):
        x = share(s, edge_differences(64, n), owner=1)
        compare.compare_bits(s, x.data, want_eq=True)

    run = run_spu(2, program)
    to_p0, to_p1 = (run.channel.stats.bytes[("dealer", p)] for p in ("p0", "p1"))
    assert to_p0 == 20 * n and to_p1 <= 12 * n


@pytest.mark.parametrize("nparties", [2, 3])
def test_fanout_products_against_numpy(nparties):
    """x * y_j for several y_j with x opened once: equal to numpy's products mod 2^64, negatives
    and range edges included."""
    rng = np.random.default_rng(nparties)
    x = np.concatenate([[0, 1, -1, 2**31 - 1, -(2**31)], rng.integers(-(2**31), 2**31, 95)])
    ys = [rng.integers(-(2**31), 2**31, x.size) for _ in range(3)]

    def program(s):
        got = arith.beaver_mul_fanout(s, share(s, x), [share(s, y, 1) for y in ys])
        return arith.reveal_many(s, got)

    got = run_spu(nparties, program).results[0]
    for y, z in zip(ys, got):
        assert (z.view(np.int64) == x * y).all()


ORDERED_WITH_NULLS = [  # NULL sort keys on the SPU: the 2-bit NULL key packed with its neighbours
    "SELECT c.name, o.order_id FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "ORDER BY CASE WHEN c.age > 50 THEN o.amount + c.age END DESC NULLS FIRST, o.order_id, c.name LIMIT 9",
    "SELECT c.name, o.order_id FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "ORDER BY CASE WHEN o.amount > 200 THEN c.age - o.amount END NULLS LAST, o.order_id DESC, c.name LIMIT 6",
    "SELECT c.name, o.order_id, ROW_NUMBER() OVER (ORDER BY CASE WHEN c.age < 40 THEN o.amount END NULLS FIRST, "
    "o.order_id, c.name) AS r FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id",
]


@pytest.mark.parametrize("sql", ORDERED_WITH_NULLS)
def test_order_by_null_keys_on_the_spu_equals_duckdb(oracle, sql):
    oracle.check(sql, "bank")
    assert "SPU(" in oracle.engine.explain(sql, "bank")
