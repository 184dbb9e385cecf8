"""Comparisons and what is built on them: mux, abs/sign, min/max, division.

Domain: comparisons take the MSB of the difference, so operands must satisfy |x - y| < 2^63 in the
ring — guaranteed for signed values in [-2^62, 2^62) (fixed point: raw encodings in that range).
Both operands must have the same scale (`frac`).

Rounds (2 parties; with 3 parties add 1 carry-save round, and equality costs a second sign
circuit (of -d) and 1 AND round):
  compare_bits(s, d)        6 rounds: 2 parties compare their own words d0 and -d1 with one
                            carry-lookahead tree that yields the sign and equality together
                            (`boolean.less_equal_circuit`: 31.6 B per element and direction, was
                            7 rounds and 12 + 5 word-ANDs = 272 B with a Kogge–Stone A2B beside
                            a zero test); `bits=k` for operands known to satisfy |d| < 2^(k-1)
                            (the sort's packed keys and tiebreak): log2(W) rounds for lanes of
                            W = 2^ceil(log2 k) bits, `boolean.comparison_bytes(k)` per element
                            and direction (11.6 B for 18 bits, 19.6 for 35: a lane of
                            2^floor(log2 k) bits and one of the rest). 3 parties: 8 rounds (9
                            with eq).
  less_than / less_equal / greater_* / equal / not_equal
                            as compare_bits (equal alone: the 6-round zero test, ~16 B); results
                            are XOR-shared bits (`BoolShare`, bits=1);
                            `arith=True` adds 1 B2A round and returns 0/1 `ArithShare`s.
  mux(s, c, x, y)           c ? x : y = y + c*(x - y): 1 round, also for a BoolShare c (its B2A
                            fused into the product: `mux_bits_many`).
  bits_times_many(s, items) c * x for XOR-shared bits c (or c's B2A alone), all in 1 round.
  positive_many(s, xs)      [x > 0] for a list of vectors: one comparison with 0 of them all
                            side by side + B2A, 7 rounds (9 for 3 parties) however many.
  sign / abs_               compare with 0 (6) + B2A (1) [+ 1 product for abs].
  minimum / maximum         elementwise: compare + fused mux = 7 rounds.
  min_all / max_all         tournament: ceil(log2 n) levels of compare + fused mux (7 rounds
                            each; 9 for 3 parties), CrypTen's tree reduction.
Every round count here is independent of n (the elements are compared side by side), except the
tournament's; tests/test_spu_rounds.py checks them at several n.
  divide(s, x, y)           Newton–Raphson reciprocal after a secret normalisation
                            (Catrina–Saxena, FC 2010; SecretFlow's fxp division):
                            A2B(y) (7) -> prefix OR (6) -> one-hot msb, its K bits to arithmetic
                            (1) -> m = 2^(K-1-msb(y)), y*m in [2^(K-1), 2^K) (1+1) -> w0 =
                            2.9142 - 2*y_norm, 3 Newton steps w <- w(2 - y_norm w) (12) ->
                            q = x*w*m / 2^(K+...) with x split into two limbs to stay in range (4).
                            33 rounds for 2 parties, 34 for 3, whatever n. See `divide` for its
                            range and precision.

Leakage: none — every opening inside is masked by dealer randomness; results stay shared.
"""

from __future__ import annotations

import numpy as np

from sqlsecure.errors import ProgrammingError
from sqlsecure.executors.spu import arith, boolean
from sqlsecure.executors.spu.session import SpuSession
from sqlsecure.executors.spu.shares import ArithShare, BoolShare

ONE = np.uint64(1)
MSB = np.uint64(63)


def compare_circuit(s: SpuSession, d: np.ndarray, want_lt: bool = True, want_eq: bool = True, bits: int = 64):
    """Circuit (see `boolean.run_circuits`) giving XOR shares (uint8 0/1) of ([d < 0], [d == 0])
    (None for what is not wanted), d an additive share of signed values with |d| < 2^(bits-1).

    2 parties: d = d_0 - (-d_1), a comparison of party 0's own word with party 1's:
    `boolean.less_equal_circuit` gives the sign and, in the same tree, equality (6 rounds and
    31.6 B per element and direction for 64 bits, `boolean.comparison_bytes(bits)` for fewer). Equality alone: d = 0 <=> NOT(d_0 XOR -d_1) is all ones, `boolean.zero_circuit`
    (6 rounds, cheaper).
    N > 2 parties: a carry-save layer reduces the N private addends of d (and of -d when equality
    is wanted) to 2, then the sign circuit; [d == 0] = NOT[d < 0] AND NOT[-d < 0] (1 more round).
    The layer works on the narrowest words holding `bits` bits (`boolean.low_words`: the sign is
    bit bits-1 of the sum, exact mod 2^width), so a sort's narrow packed columns AND 1/8 to 1/2 of
    the 16 B per element and direction that 64-bit words take."""
    n = d.size
    if s.nparties == 2:
        if want_lt:  # sign and equality from one tree
            tree = boolean.less_equal_circuit(s, d, bits, want_eq)
            del d  # this frame lives through every round: the tree alone holds d, until it is cut to lanes
            lt, eq = yield from tree
            return lt, eq
        z = np.invert(d) if s.index == 0 else np.negative(d)
        del d
        eq = yield from boolean.zero_circuit(z)
        return None, eq
    both = boolean.low_words(np.concatenate([d, np.negative(d)]) if want_eq else d, bits)
    operands = [boolean.private_input(s, i, both) for i in range(s.nparties)]
    a, b = yield from boolean.csa_circuit(operands)
    signs = yield from boolean.sign_circuit(a.astype(np.uint64, copy=False), b.astype(np.uint64, copy=False), bits)
    lt = signs[:n]
    if not want_eq:
        return lt, None
    not_neg, not_pos = signs[:n], signs[n:]
    if s.is_first:
        not_neg, not_pos = not_neg ^ 1, not_pos ^ 1
    (eq,) = yield [(not_neg, not_pos)]
    return (lt if want_lt else None), eq


def compare_bits(s: SpuSession, d: np.ndarray, want_eq: bool = True, bits: int = 64
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """XOR shares (bit 0 of uint64 words) of [d < 0] and [d == 0] for an additive share d of
    signed values (|d| < 2^(bits-1)). 7 rounds for 2 parties (eq rides along), 8 for 3 parties
    (9 with eq)."""
    (lt, eq), = boolean.run_circuits(s, [compare_circuit(s, d, True, want_eq, bits)])
    return lt.astype(np.uint64), (eq.astype(np.uint64) if want_eq else None)


def _diff(x: ArithShare, y: ArithShare) -> np.ndarray:
    if x.frac != y.frac:
        raise ProgrammingError(f"comparison of shares with different scales ({x.frac} vs {y.frac})")
    if x.shape != y.shape:
        raise ProgrammingError(f"comparison of shapes {x.shape} and {y.shape}")
    return x.data - y.data


def _result(s: SpuSession, bit: np.ndarray, arith_out: bool):
    share = BoolShare(bit, 1)
    return boolean.b2a_bits(s, share) if arith_out else share


def less_than(s: SpuSession, x: ArithShare, y: ArithShare, arith: bool = False, bits: int = 64):
    """[x < y]: 6 rounds for 2 parties, 8 for 3 (+1 with `arith`), whatever n; `bits`: |x - y| < 2^(bits-1)
    known, compared on fewer bits (fewer bytes, and rounds for 3 parties: `compare_circuit`)."""
    lt, _ = compare_bits(s, _diff(x, y), want_eq=False, bits=bits)
    return _result(s, lt, arith)


def greater_than(s: SpuSession, x: ArithShare, y: ArithShare, arith: bool = False, bits: int = 64):
    return less_than(s, y, x, arith, bits)


def positive_many(s: SpuSession, xs: list[ArithShare]) -> list[ArithShare]:
    """[x > 0] as 0/1 integer shares for every x, side by side in ONE comparison and one B2A:
    7 rounds for 2 parties, 9 for 3, however many vectors (was 7 each, one after another: a
    group-by's empty-group tests, one per counted column). |x| < 2^62, of any scale."""
    if not xs:
        return []
    lt, _ = compare_bits(s, np.negative(np.concatenate([x.data.ravel() for x in xs])), want_eq=False)
    flat, out, at = boolean.b2a_bits(s, BoolShare(lt, 1)), [], 0
    for x in xs:
        out.append(ArithShare(flat.data[at:at + x.data.size].reshape(x.shape), 0))
        at += x.data.size
    return out


def less_equal(s: SpuSession, x: ArithShare, y: ArithShare, arith: bool = False, bits: int = 64):
    """[x <= y] = NOT [y < x]: as `less_than`, 6 rounds for 2 parties, 8 for 3 (+1 with `arith`);
    `bits` as there."""
    lt, _ = compare_bits(s, _diff(y, x), want_eq=False, bits=bits)
    return _result(s, lt ^ ONE if s.is_first else lt, arith)


def greater_equal(s: SpuSession, x: ArithShare, y: ArithShare, arith: bool = False, bits: int = 64):
    return less_equal(s, y, x, arith, bits)


def equal(s: SpuSession, x: ArithShare, y: ArithShare, arith: bool = False):
    """[x == y]: 6 rounds for 2 parties (a zero test), 9 for 3 (+1 with `arith`), whatever n."""
    d = _diff(x, y)
    (_, eq), = boolean.run_circuits(s, [compare_circuit(s, d, want_lt=False, want_eq=True)])
    return _result(s, eq.astype(np.uint64), arith)


def not_equal(s: SpuSession, x: ArithShare, y: ArithShare, arith: bool = False):
    eq = equal(s, x, y)
    return _result(s, eq.data ^ ONE if s.is_first else eq.data, arith)


def to_arith_bit(s: SpuSession, c) -> ArithShare:
    if isinstance(c, BoolShare):
        return boolean.b2a_bits(s, c)
    if c.frac != 0:
        raise ProgrammingError("a condition must be an integer 0/1 share")
    return c


def mux_many(s: SpuSession, items: list[tuple[ArithShare, ArithShare, ArithShare]]) -> list[ArithShare]:
    """[c ? x : y for (c, x, y)], with c arithmetic 0/1 shares: ONE round for all."""
    prods = arith.beaver_mul_many(s, [(c, x - y) for c, x, y in items])
    return [y + p.with_frac(y.frac) for (_, _, y), p in zip(items, prods)]


def mux_bits_many(s: SpuSession, items: list[tuple[BoolShare, ArithShare, ArithShare]]) -> list[ArithShare]:
    """[c ? x : y for (c, x, y)] with c XOR-shared bits: ONE round (B2A fused with the product,
    `bits_times_many`)."""
    for _, x, y in items:
        if x.frac != y.frac or x.shape != y.shape:
            raise ProgrammingError("mux: branches have different scales or shapes")
    products = bits_times_many(s, [(c, x - y) for c, x, y in items])
    return [y + p for (_, _, y), p in zip(items, products)]


def bits_times_many(s: SpuSession, items: list[tuple[BoolShare, ArithShare | None]]) -> list[ArithShare]:
    """[c * x for (c, x)] as additive shares, c XOR-shared bits; x None: c itself as a 0/1 integer
    (its B2A). ONE round for all: the B2As and the products open together.

    With a dabit r (XOR share rb, additive share ra) and a Beaver triple (a, b, ab), open
    e = c ^ rb (1 bit), D = ra - a and E = x - b together; then [r x] is the Beaver product and,
    as c = e + r - 2er for public e, c x = e x + (1 - 2e) r x is local. Everything opened is masked
    by fresh dealer randomness, as in B2A followed by a product (2 rounds)."""
    if not items:
        return []
    for c, x in items:
        if x is not None and x.data.size != np.size(c.data):
            raise ProgrammingError(f"bits_times_many: {np.size(c.data)} bits times {x.data.size} values")
    sizes = [np.size(c.data) for c, _ in items]
    ends = np.cumsum(sizes)
    bits = np.concatenate([np.asarray(c.data).ravel() & ONE for c, _ in items])
    times = [i for i, (_, x) in enumerate(items) if x is not None]
    rb, ra = s.dealer.dabit(bits.size)
    if not times:
        (e,) = s.open_many(bits=[bits ^ rb])
    else:
        at = np.concatenate([np.arange(ends[i] - sizes[i], ends[i]) for i in times])
        v = np.concatenate([items[i][1].data.ravel() for i in times])
        a, b, fetch_c = s.dealer.arith_triple_deferred(v.size)
        d_open, e_open, e = s.open_many(arith=[ra[at] - a, v - b], bits=[bits ^ rb])
        if s.is_first:  # rv = c + d (b + e at party 0) + e a, in b (c may be a read-only correction)
            b += e_open
        rv = np.multiply(d_open, b, out=b)
        rv += np.multiply(e_open, a, out=a)
        rv += fetch_c()
        product = e[at] * v + (ONE - np.uint64(2) * e[at]) * rv
    bit = ra * (ONE - np.uint64(2) * e)
    if s.is_first:
        bit += e
    out, done = [], 0
    for (c, x), size, end in zip(items, sizes, ends):
        if x is None:
            out.append(ArithShare(bit[end - size:end].reshape(np.shape(c.data)), 0))
        else:
            out.append(ArithShare(product[done:done + size].reshape(x.shape), x.frac))
            done += size
    return out


def mux(s: SpuSession, c, x: ArithShare, y: ArithShare) -> ArithShare:
    """CASE WHEN c THEN x ELSE y: c a 0/1 share (BoolShare bit: 1 round, fused B2A; or
    ArithShare: 1 round)."""
    if x.frac != y.frac:
        raise ProgrammingError("mux: branches have different scales")
    if isinstance(c, BoolShare):
        return mux_bits_many(s, [(c, x, y)])[0]
    return mux_many(s, [(to_arith_bit(s, c), x, y)])[0]


def sign(s: SpuSession, x: ArithShare) -> ArithShare:
    """SQL SIGN: -1, 0 or 1 as an integer share. 7 rounds for 2 parties, 10 for 3 (compare
    with equality + B2A), whatever n."""
    lt, eq = compare_bits(s, x.data)
    neg, zero = boolean.b2a_bits_many(s, [BoolShare(lt, 1), BoolShare(eq, 1)])
    one = arith.public(s, np.ones(x.shape, dtype=np.int64))
    return one - neg * 2 - zero


def abs_(s: SpuSession, x: ArithShare) -> ArithShare:
    """|x|: x * (1 - 2[x < 0]): compare (6; 8 for 3 parties) + B2A + 1 product, whatever n."""
    lt, _ = compare_bits(s, x.data, want_eq=False)
    neg = boolean.b2a_bits(s, BoolShare(lt, 1))
    factor = arith.public(s, np.ones(x.shape, dtype=np.int64)) - neg * 2
    return arith.beaver_mul(s, x, factor)


def minimum(s: SpuSession, x: ArithShare, y: ArithShare) -> ArithShare:
    """Elementwise MIN: compare + fused mux, 7 rounds for 2 parties, 9 for 3, whatever n."""
    return mux(s, less_than(s, x, y), x, y)


def maximum(s: SpuSession, x: ArithShare, y: ArithShare) -> ArithShare:
    """Elementwise MAX: as `minimum`, 7 rounds for 2 parties, 9 for 3."""
    return mux(s, less_than(s, x, y), y, x)


def _tournament(s: SpuSession, x: ArithShare, take_max: bool) -> ArithShare:
    if x.data.ndim != 1 or len(x) == 0:
        raise ProgrammingError("min/max of an empty or non-vector share")
    cur = x
    while len(cur) > 1:
        half = len(cur) // 2
        a, b, rest = cur[:half], cur[half:2 * half], cur[2 * half:]
        c = less_than(s, a, b)  # XOR-shared bits; the mux fuses their B2A
        win = mux_bits_many(s, [(c, b, a) if take_max else (c, a, b)])[0]
        cur = arith.concat([win, rest]) if len(rest) else win
    return cur


def min_all(s: SpuSession, x: ArithShare) -> ArithShare:
    """MIN over a vector: ceil(log2 n) levels of compare + fused mux, 7 rounds each (9 for 3 parties)."""
    return _tournament(s, x, take_max=False)


def max_all(s: SpuSession, x: ArithShare) -> ArithShare:
    return _tournament(s, x, take_max=True)


NEWTON_STEPS = 3


def leading_bit(s: SpuSession, x: ArithShare, width: int = 63) -> ArithShare:
    """One-hot 0/1 integer shares (shape (width, n)) of the position of the leading bit of the raw value
    0 <= X < 2^width (all zero for X = 0): bit decomposition, a prefix OR (6 AND rounds), B2A of `width`
    bits. The normalisation of `divide`, and of SQRT and LN in `spu.functions`."""
    (words,) = boolean.a2b_many(s, [x])
    prefix = words.data & np.uint64((1 << width) - 1)
    for k in (1, 2, 4, 8, 16, 32):
        shifted = prefix >> np.uint64(k)
        (both,) = boolean.and_words_many(s, [(prefix, shifted)])
        prefix = prefix ^ shifted ^ both
    onehot = prefix ^ (prefix >> ONE)
    bits = np.stack([(onehot >> np.uint64(j)) & ONE for j in range(width)])
    (ab,) = boolean.b2a_bits_many(s, [BoolShare(bits.ravel(), 1)])
    return ArithShare(ab.data.reshape(width, -1), 0)


def divide(s: SpuSession, x: ArithShare, y: ArithShare, y_bits: int = 32) -> ArithShare:
    """x / y for y > 0, result in fixed point with the session's F fractional bits.

    x: integer or fixed-point share; y: positive integer (e.g. a COUNT) or fixed-point share whose
    raw encoding Y satisfies 0 < Y < 2^y_bits. Range: |X| < 2^(61-F) and
    |X| < 2^(62 - y_bits + h) with h = min(61 - y_bits, y_bits + x.frac - y.frac - F) (raw X). With
    F = 16 and y_bits = 32 this is |x| < 2^29 for an integer count y < 2^32.
    Precision: relative error at most 2^-(F-1) (W = 1/y_norm carries F fractional bits; Newton
    from the 2.9142 - 2y start, 3 steps,
    converges far below the fixed-point resolution), plus a few units in the last place from the
    truncations. y = 0 gives 0 (SQL gives NULL: mask the result with [count > 0]).
    Rounds: 33 for 2 parties, 34 for 3, whatever n (module docstring).
    """
    F = s.frac_bits
    K = y_bits
    if not F < K <= 61:
        raise ProgrammingError(f"divide: y_bits must be in {F + 1}..61, got {K}")
    if x.shape != y.shape:
        raise ProgrammingError(f"divide: shapes {x.shape} and {y.shape}")
    n = x.data.size
    # 1. one-hot of y's leading bit (bits, prefix OR downwards, B2A)
    onehot = leading_bit(s, y, K)
    # 2. m = 2^(K-1-msb): bit j of the one-hot word contributes 2^(K-1-j)
    weights = (np.uint64(1) << (np.uint64(K - 1) - np.arange(K, dtype=np.uint64)))
    m = ArithShare((onehot.data.reshape(K, n) * weights[:, None]).sum(axis=0, dtype=np.uint64).reshape(x.shape), 0)
    # 3. y_norm = Y*m / 2^(K-F), fixed point in [0.5, 1)
    y_raw = ArithShare(y.data, 0)
    ynorm = arith.truncate(s, arith.beaver_mul(s, y_raw, m), K - F).with_frac(F)
    # 4. Newton-Raphson for w = 1/y_norm
    two = arith.public(s, np.full(x.shape, 2.0), F)
    w = arith.public(s, np.full(x.shape, 2.9142), F) - ynorm * 2
    for _ in range(NEWTON_STEPS):
        e = arith.mul(s, ynorm, w)
        w = arith.mul(s, w, two - e)
    # 5. q = X*W*m >> (K + Fx - Fy): U = X*W >> F, then U*m in two limbs
    shift = K + x.frac - y.frac - F
    if shift < 0:
        raise ProgrammingError("divide: y has too many fractional bits for y_bits")
    u = arith.truncate(s, arith.beaver_mul(s, x.with_frac(0), w.with_frac(0)), F).with_frac(0)
    h = min(61 - K, shift)
    u_hi = arith.truncate(s, u, h) if h > 0 else u
    u_lo = u - u_hi.lshift(h)
    hi_m, lo_m = arith.beaver_mul_many(s, [(u_hi, m), (u_lo, m)])
    todo = [(hi_m, shift - h), (lo_m, shift)]
    shifted = arith.truncate_many(s, [t for t, b in todo if b > 0], [b for _, b in todo if b > 0])
    parts = [t for t, b in todo if b == 0] + shifted
    q = parts[0] + parts[1]
    return ArithShare(q.data, F)


__all__ = [
    "compare_bits", "less_than", "less_equal", "greater_than", "greater_equal", "equal", "not_equal",
    "mux", "mux_many", "mux_bits_many", "bits_times_many", "sign", "abs_", "minimum", "maximum", "min_all", "max_all", "divide",
    "leading_bit",
    "to_arith_bit",
]
