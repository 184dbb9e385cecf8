"""Arithmetic protocols over Z_2^64: sharing, reveal, Beaver multiplication, truncation.

Every function takes the party's `SpuSession` first; all parties call the same functions in the
same order. Rounds are rounds of messages between compute parties (`session.rounds`); the dealer's
request/correction (see `dealer.py`) is listed separately.

  share_input(s, owner, values)  0 rounds, 0 bytes: every non-owner's share is drawn from the PRG
                                 it shares with the owner; the owner keeps x - sum(those).
  reveal(s, x, to=None)          1 round: everyone sends its share to `to` (or to everyone).
  beaver_mul(s, x, y)            1 round (Beaver 1991): open d = x - a, e = y - b for a triple
                                 (a, b, c = ab); z = c + d*b + e*a (+ d*e at party 0).
                                 Bytes: 16 per element per ordered party pair; dealer -> last
                                 party 8 per element.
  matmul(s, X, Y)                1 round with a matrix triple (A, B, AB) (Mohassel–Zhang,
                                 SecureML 2017): opens X - A and Y - B only (m*k + k*p words).
  truncate(s, x, bits)           1 round, probabilistic truncation with a dealer pair
                                 (Escudero–Ghosh–Keller–Rachuri–Scholl, CRYPTO 2020, "TruncPr" with
                                 an edaBit-style pair; as SecretFlow SEMI2K's TruncAPr):
                                 the dealer shares r uniform in Z_2^64, r_msb = r >> 63 and
                                 r_mid = (r mod 2^63) >> bits. With x' = x + 2^62 (so x' in
                                 [0, 2^63) when |x| < 2^62), open c = x' + r (uniform: hides x).
                                 b = msb(c) XOR r_msb is the msb of x' + (r mod 2^63), and
                                 x' >> bits = (c mod 2^63) >> bits - r_mid + b*2^(63-bits) + e
                                 with e in {0, 1}; the 2^62 offset is removed publicly.
                                 Error bound: the result is floor(x / 2^bits) or that + 1
                                 (at most one unit in the last place), never a wrap-around error,
                                 provided |x| < 2^62. Works for any number of parties.
  mul(s, x, y)                   beaver_mul then truncate when both are fixed point: 2 rounds.
                                 Exact while |x*y| < 2^(62-2F) (the 2F-bit product is truncated).
  mul_wide(s, x, y)              fixed x fixed for the whole fixed-point range: 3 rounds. Split
                                 both operands into x_hi = x >> F and x_lo = x - x_hi*2^F (1
                                 truncation round); x*y = x*y_hi + x_hi*y_lo + (x_lo*y_lo >> F)
                                 (1 round of three products, 1 truncation round): no term is
                                 truncated beyond its range, so the result is exact (up to 2 units
                                 in the last place) while |x*y| < 2^(62-F) and |x|, |y| < 2^(62-F).

Leakage: every opened value is a share-value masked by a uniform dealer value (d, e, c above), so
openings are uniform and independent of the inputs; nothing but sizes is revealed.
"""

from __future__ import annotations

import numpy as np

from sqlsecure.errors import ProgrammingError
from sqlsecure.executors.spu.session import SpuSession
from sqlsecure.executors.spu.shares import ArithShare, as_ring, encode_fixed

MSB = np.uint64(63)
LOW63 = np.uint64((1 << 63) - 1)
HALF = np.uint64(1 << 62)


def share_input(s: SpuSession, owner: int, values: np.ndarray | None, shape=None, frac: int = 0) -> ArithShare:
    """Secret-share ring values held by party `owner` (0 rounds, 0 bytes: PRG-seeded shares).

    The owner passes `values` (uint64 ring elements, see `as_ring` / `encode_fixed`); every other
    party passes `values=None` and the public `shape`."""
    s.tag("share")
    if s.index == owner:
        data = as_ring(values).copy()
        for j in s.others():
            data -= s.pair_words(j, data.size).reshape(data.shape)
        return ArithShare(data, frac)
    if shape is None:
        raise ProgrammingError("share_input: a non-owner must pass the public shape")
    size = int(np.prod(shape))
    return ArithShare(s.pair_words(owner, size).reshape(shape), frac)


def share_fixed(s: SpuSession, owner: int, values=None, shape=None) -> ArithShare:
    """Share reals as fixed point with the session's precision."""
    frac = s.frac_bits
    ring = encode_fixed(values, frac) if s.index == owner else None
    return share_input(s, owner, ring, shape, frac)


def reveal(s: SpuSession, x: ArithShare, to: int | None = None) -> np.ndarray | None:
    """Reconstruct x at party `to` (or at every party): 1 round. Returns uint64 ring values."""
    out = s.open_many(arith=[x.data], to=to)
    return out[0] if out else None


def reveal_many(s: SpuSession, xs: list[ArithShare], to: int | None = None) -> list[np.ndarray] | None:
    """Reveal several shares in one round."""
    out = s.open_many(arith=[x.data for x in xs], to=to)
    return out if out else None


def zeros(s: SpuSession, shape, frac: int = 0) -> ArithShare:
    return ArithShare(np.zeros(shape, dtype=np.uint64), frac)


def public(s: SpuSession, values, frac: int = 0) -> ArithShare:
    """A public constant as a (trivial) share: party 0 holds it, the others hold 0."""
    ring = as_ring(values) if frac == 0 else encode_fixed(values, frac)
    return ArithShare(ring.copy() if s.is_first else np.zeros(ring.shape, np.uint64), frac)


def add_public(s: SpuSession, x: ArithShare, values) -> ArithShare:
    """x + c for public c (already encoded at x's scale if x is fixed point: use `public`)."""
    c = as_ring(values)
    return ArithShare(x.data + c if s.is_first else x.data.copy(), x.frac)


def concat(xs: list[ArithShare]) -> ArithShare:
    """UNION ALL: concatenate shares (local)."""
    if not xs:
        raise ProgrammingError("concat of no shares")
    if len({x.frac for x in xs}) > 1:
        raise ProgrammingError("concat: fixed-point scales differ")
    return ArithShare(np.concatenate([x.data for x in xs]), xs[0].frac)


def total(x: ArithShare) -> ArithShare:
    """SUM over all elements (local, 0 rounds): a share of one value."""
    return ArithShare(np.atleast_1d(x.data.sum(dtype=np.uint64)), x.frac)


def beaver_mul_many(s: SpuSession, pairs: list[tuple[ArithShare, ArithShare]]) -> list[ArithShare]:
    """Elementwise products of several pairs in ONE opening round (shapes may differ per pair)."""
    if not pairs:
        return []
    for x, y in pairs:
        if x.shape != y.shape:
            raise ProgrammingError(f"beaver_mul: shapes differ {x.shape} vs {y.shape}")
    sizes = [x.data.size for x, _ in pairs]
    n = sum(sizes)
    a, b, fetch_c = s.dealer.arith_triple_deferred(n)
    buf = np.empty(2 * n, np.uint64)  # [x - a | y - b], opened in place
    at = 0
    for (x, y), size in zip(pairs, sizes):
        buf[at:at + size] = x.data.ravel()
        buf[n + at:n + at + size] = y.data.ravel()
        at += size
    buf[:n] -= a
    buf[n:] -= b
    s.open_words(buf, n_arith=2 * n)
    d, e = buf[:n], buf[n:]
    if s.is_first:  # z = c + d (b + e at party 0) + e a, in b (c may be a read-only correction)
        b += e
    z = np.multiply(d, b, out=b)
    z += np.multiply(e, a, out=a)
    z += fetch_c()
    out, at = [], 0
    for (x, y), size in zip(pairs, sizes):
        out.append(ArithShare(z[at:at + size].reshape(x.shape), x.frac + y.frac))
        at += size
    return out


def beaver_mul_fanout(s: SpuSession, x: ArithShare, ys: list[ArithShare]) -> list[ArithShare]:
    """[x * y for y in ys] in ONE round, x opened once: with an `arith_fanout` triple (a, b_j,
    c_j = a b_j) open d = x - a and e_j = y_j - b_j; x y_j = c_j + d b_j + e_j a + d e_j (the last
    term at party 0). 8 (1 + k) B per element and direction for k products, against 16 k."""
    if not ys:
        return []
    if any(y.shape != x.shape for y in ys):
        raise ProgrammingError("beaver_mul_fanout: every factor needs x's shape")
    n, k = x.data.size, len(ys)
    a, b, fetch_c = s.dealer.arith_fanout_deferred(n, k)
    buf = np.empty((1 + k) * n, np.uint64)  # [x - a | y_1 - b_1 | ... ], opened in place
    np.subtract(x.data.ravel(), a, out=buf[:n])
    for j, y in enumerate(ys):
        np.subtract(y.data.ravel(), b[j * n:(j + 1) * n], out=buf[(1 + j) * n:(2 + j) * n])
    s.open_words(buf, n_arith=buf.size)
    d, e = buf[:n], buf[n:].reshape(k, n)
    b = b.reshape(k, n)
    if s.is_first:  # z_j = c_j + d (b_j + e_j at party 0) + e_j a, in b
        b += e
    z = np.multiply(b, d, out=b)
    z += np.multiply(e, a, out=e)
    z += fetch_c().reshape(k, n)
    return [ArithShare(z[j].reshape(x.shape), x.frac + y.frac) for j, y in enumerate(ys)]


def beaver_mul(s: SpuSession, x: ArithShare, y: ArithShare) -> ArithShare:
    """Elementwise x*y mod 2^64 (scale = sum of scales, no truncation): 1 round."""
    return beaver_mul_many(s, [(x, y)])[0]


def matmul(s: SpuSession, x: ArithShare, y: ArithShare) -> ArithShare:
    """Matrix product (m x k) @ (k x p), or inner product of two vectors: 1 round."""
    vector = x.data.ndim == 1 and y.data.ndim == 1
    xm = x.data.reshape(1, -1) if vector else x.data
    ym = y.data.reshape(-1, 1) if vector else y.data
    if xm.ndim != 2 or ym.ndim != 2 or xm.shape[1] != ym.shape[0]:
        raise ProgrammingError(f"matmul: incompatible shapes {x.shape} @ {y.shape}")
    m, k = xm.shape
    p = ym.shape[1]
    a, b, c = s.dealer.matrix_triple(m, k, p)
    d, e = s.open_many(arith=[xm - a, ym - b])
    z = c + np.matmul(d, b) + np.matmul(a, e)
    if s.is_first:
        z += np.matmul(d, e)
    return ArithShare(z.reshape(1) if vector else z, x.frac + y.frac)


dot = matmul


def truncate_many(s: SpuSession, xs: list[ArithShare], bits: int | list[int]) -> list[ArithShare]:
    """Divide each x by 2^bits (probabilistic, see the module docstring), ONE round for all."""
    if not xs:
        return []
    shifts = [bits] * len(xs) if isinstance(bits, int) else list(bits)
    groups: dict[int, list[int]] = {}
    for i, b in enumerate(shifts):
        if not 0 <= b < 62:
            raise ProgrammingError(f"truncate: shift {b} out of range 0..61")
        groups.setdefault(b, []).append(i)
    flat = np.concatenate([x.data.ravel() for x in xs])
    shift = np.concatenate([np.full(x.data.size, b, dtype=np.uint64) for x, b in zip(xs, shifts)])
    n = flat.size
    # one pair request per distinct shift keeps r_mid exact; usually there is one shift
    r = np.empty(n, np.uint64)
    r_msb = np.empty(n, np.uint64)
    r_mid = np.empty(n, np.uint64)
    offsets = np.cumsum([0] + [x.data.size for x in xs])
    for b, members in groups.items():
        idx = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in members])
        r[idx], r_msb[idx], r_mid[idx] = s.dealer.trunc_pair(idx.size, b)
    shifted = flat + HALF if s.is_first else flat
    (c,) = s.open_many(arith=[shifted + r])
    c_msb = c >> MSB
    # b = c_msb XOR r_msb = c_msb + r_msb - 2 c_msb r_msb (c_msb public)
    b_share = r_msb * (np.uint64(1) - np.uint64(2) * c_msb)
    if s.is_first:
        b_share = b_share + c_msb
    top = np.uint64(63) - shift
    y = (b_share << top) - r_mid
    if s.is_first:
        y = y + ((c & LOW63) >> shift) - (HALF >> shift)
    out = []
    for x, b, lo, hi in zip(xs, shifts, offsets[:-1], offsets[1:]):
        out.append(ArithShare(y[lo:hi].reshape(x.shape), x.frac - b if x.frac >= b else 0))
    return out


def truncate(s: SpuSession, x: ArithShare, bits: int | None = None) -> ArithShare:
    """x / 2^bits (default: bring a fixed-point product back to the session's precision)."""
    if bits is None:
        bits = x.frac - s.frac_bits
    if bits <= 0:
        return x
    return truncate_many(s, [x], bits)[0]


def rescale_many(s: SpuSession, xs: list[ArithShare]) -> list[ArithShare]:
    """Truncate every share whose scale exceeds the session precision, in one round."""
    todo = [i for i, x in enumerate(xs) if x.frac > s.frac_bits]
    out = list(xs)
    done = truncate_many(s, [xs[i] for i in todo], [xs[i].frac - s.frac_bits for i in todo])
    for i, x in zip(todo, done):
        out[i] = x
    return out


def mul_many(s: SpuSession, pairs: list[tuple[ArithShare, ArithShare]]) -> list[ArithShare]:
    """Products rescaled to the session precision: 1 round, + 1 if any product is fixed x fixed."""
    return rescale_many(s, beaver_mul_many(s, pairs))


def mul(s: SpuSession, x: ArithShare, y: ArithShare) -> ArithShare:
    return mul_many(s, [(x, y)])[0]


def mul_wide(s: SpuSession, x: ArithShare, y: ArithShare) -> ArithShare:
    """x * y for fixed-point shares over the whole range |x*y| < 2^(62-F): 3 rounds (module docstring)."""
    F = s.frac_bits
    if x.frac != F or y.frac != F:
        raise ProgrammingError(f"mul_wide takes fixed-point shares with {F} fractional bits")
    x_hi, y_hi = (h.with_frac(0) for h in truncate_many(s, [x.with_frac(0), y.with_frac(0)], F))
    x_lo = ArithShare(x.data - x_hi.lshift(F).data)
    y_lo = ArithShare(y.data - y_hi.lshift(F).data)
    whole, cross, low = beaver_mul_many(s, [(x.with_frac(0), y_hi), (x_hi, y_lo), (x_lo, y_lo)])
    (low,) = truncate_many(s, [low], F)
    return ArithShare((whole + cross + low.with_frac(0)).data, F)


def mul_public(s: SpuSession, x: ArithShare, value: float | int) -> ArithShare:
    """x times a public constant: local for an integer, 1 truncation round for a real."""
    if isinstance(value, (int, np.integer)):
        return x * int(value)
    k = encode_fixed(value, s.frac_bits)
    return truncate(s, ArithShare(x.data * k, x.frac + s.frac_bits), s.frac_bits)
