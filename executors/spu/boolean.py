"""Boolean protocols on XOR-shared words, and the arithmetic <-> boolean conversions.

  and_arrays_many(s, items)  1 round for any number of ANDs: Beaver AND on XOR-shared arrays of
                         any width (uint8..uint64, packed byte-wise into words) with a boolean
                         triple (a, b, a&b): open d = x^a, e = y^b; z = c ^ (d&b) ^ (e&a)
                         (^ d&e at party 0). 16 B per word per ordered party pair; dealer -> last
                         party 8 B per word. Two cheaper kinds ride in the same round:
                         `FanoutAnd(x, y1, y2)` (x opened once: 24 B per word for 2 products) and,
                         for 2 parties, `PrivateAnd(x, y)` with x party 0's own value and y party
                         1's (8 B per word). `and_words_many` / `and_bits_many` are the uint64 and
                         packed single-bit front ends.
  circuits               generators yielding one round of ANDs at a time, run side by side by
                         `run_circuits` (all circuits' ANDs of a round in one opening):
    less_equal_circuit   2 parties: [d < 0] and [d == 0] for d = d_0 + d_1 as a comparison of
                         the private words d_0 and -d_1 (one tree gives both; 6 rounds,
                         31.6 B per element and direction for 64 bits; k-bit inputs with
                         |d| < 2^(k-1) use lanes of 2^floor(log2 k) bits and of the rest,
                         joined by one AND round, in log2(2^ceil(log2 k)) rounds:
                         `comparison_bytes(k)`, e.g. 11.6 B for 18 bits, 19.6 for 35).
    sign_circuit         MSB of a + b (N > 2 parties, after the carry-save layer): carry-lookahead
                         tree computing the one carry into bit k-1, 1 + log2 W rounds.
    zero_circuit         [w == 0]: AND tree halving the lane each level, 6 rounds, ~8 B.
    csa_circuit          carry-save layers reducing N addends to 2, 1 round each, on the
                         narrowest words that hold the bits the sign needs (`low_words`).
  add_bits(s, a, b)      7 rounds: Kogge–Stone parallel-prefix adder on packed words
                         (Kogge & Stone 1973; as used for A2B by ABY, Demmler et al. NDSS 2015):
                         g = a&b, p = a^b (round 1); for k = 1, 2, 4, 8, 16, 32 (rounds 2..7):
                         g ^= p & (g << k), p &= p << k (XOR replaces OR: g and p stay disjoint);
                         sum = a ^ b ^ (g << 1). Used when every bit is needed (A2B, division);
                         comparisons need one carry and use the trees above.
  a2b(s, x)              Bit decomposition of an additive share: party i's share is a private
                         boolean input (XOR-shared trivially); with N > 2 parties a carry-save
                         layer (1 round each, majority = ((a^c)&(b^c))^c) reduces N inputs to 2;
                         then add_bits. 7 rounds for 2 parties, 8 for 3.
  zero_test(s, w)        6 rounds: `zero_circuit` over NOT w (w = 0 <=> all ones).
  b2a_bits(s, bits)      1 round (dabit method, e.g. Rotaru–Wood, INDOCRYPT 2019): the dealer
                         shares a random bit r both ways; open c = bit ^ r (packed, 1 bit per
                         element on the wire); [bit] = c + [r] - 2c[r].

Leakage: every opened value is masked by a fresh uniform dealer value (a private AND's by a mask
only the dealer and the sender know); nothing is revealed. Which ANDs a circuit computes is
public (it depends only on sizes and the public width k).
"""

from __future__ import annotations

import numpy as np

from sqlsecure.errors import ProgrammingError
from sqlsecure.executors.spu.session import SpuSession
from sqlsecure.executors.spu.shares import ArithShare, BoolShare

ONE = np.uint64(1)
ALL = np.uint64((1 << 64) - 1)


def private_input(s: SpuSession, owner: int, words: np.ndarray) -> np.ndarray:
    """XOR share of a value one party holds in the clear (0 rounds): owner keeps it, others 0."""
    return words if s.index == owner else np.zeros_like(words)


def bool_not(s: SpuSession, x: BoolShare) -> BoolShare:
    """NOT on the meaningful bits (party 0 flips)."""
    mask = ALL if x.bits == 64 else np.uint64((1 << x.bits) - 1)
    return BoolShare(x.data ^ mask if s.is_first else x.data.copy(), x.bits)


def xor_public(s: SpuSession, x: BoolShare, value) -> BoolShare:
    return BoolShare(x.data ^ np.uint64(value) if s.is_first else x.data.copy(), x.bits)


class PrivateAnd:
    """An AND whose left input is party 0's private value and right input party 1's (2 parties;
    each party's XOR share of the other's input is 0). Costs half a Beaver AND: each party
    sends one masked word instead of two (see `and_arrays_many`)."""

    __slots__ = ("x", "y")

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x, y


def _words_of(arrays: list[np.ndarray]) -> tuple[list[int], int]:
    """Offsets (in bytes, 8-aligned) of each array in a packed word buffer, and its word count."""
    offsets, at = [], 0
    for x in arrays:
        offsets.append(at)
        at += (x.nbytes + 7) // 8 * 8
    return offsets, at // 8


def _pack_masked(dst_words: np.ndarray, arrays: list[np.ndarray], offsets: list[int], mask: np.ndarray) -> None:
    """Write each array XOR its slice of `mask` into `dst_words` at its byte offset (padding bytes
    get the mask's): the packing and the masking of an opening in one pass over memory."""
    raw, mraw = dst_words.view(np.uint8), mask.view(np.uint8)
    for x, at in zip(arrays, offsets):
        end = at + x.nbytes
        np.bitwise_xor(x, mraw[at:end].view(x.dtype).reshape(x.shape), out=raw[at:end].view(x.dtype).reshape(x.shape))
        pad = (x.nbytes + 7) // 8 * 8 - x.nbytes
        if pad:
            raw[end:end + pad] = mraw[end:end + pad]


def _unpack(src_words: np.ndarray, like: list[np.ndarray], offsets: list[int]) -> list[np.ndarray]:
    raw = src_words.view(np.uint8)
    return [raw[at:at + x.nbytes].view(x.dtype).reshape(x.shape) for x, at in zip(like, offsets)]


class FanoutAnd:
    """Two ANDs sharing their left input: (x & y1, x & y2). With a `bool_fanout` triple whose
    mask of x is common to both, x - masked - is opened once: 3 arrays cross instead of 4."""

    __slots__ = ("x", "y1", "y2")

    def __init__(self, x: np.ndarray, y1: np.ndarray, y2: np.ndarray):
        self.x, self.y1, self.y2 = x, y1, y2


def and_arrays_many(s: SpuSession, pairs: list) -> list:
    """AND of several pairs of XOR-shared unsigned arrays (any of uint8..uint64; both arrays of a
    pair of the same dtype and size), ONE round for all. Arrays are packed byte-wise into words,
    so a uint8 pair costs 1/8 of a uint64 pair. `FanoutAnd` items (result: a pair of arrays) and
    `PrivateAnd` items (2 parties) ride in the same round.

    Beaver AND (regular pairs): open d = x^a, e = y^b; z = c ^ (d&b) ^ (e&a) (^ d&e at party 0).
    Fan-out AND (`FanoutAnd`): the same with one d for both products (triple `bool_fanout`).
    Private AND (`PrivateAnd`, Beaver's trick with one-sided masks): the dealer gives party 0 a
    mask a, party 1 a mask b, and XOR shares c_0, c_1 of a&b. Party 0 sends d = x^a, party 1
    sends e = y^b; z_0 = (x&e) ^ c_0, z_1 = (d&b) ^ c_1, so z_0 ^ z_1 = x&y. Each party sees only
    the other's input under a fresh uniform mask.
    One message per ordered party pair: 16 B per regular word, 24 B per fan-out word (two
    products), 8 B per private word."""
    if not pairs:
        return []
    regular = [(i, p) for i, p in enumerate(pairs) if not isinstance(p, (FanoutAnd, PrivateAnd))]
    fanout = [(i, p) for i, p in enumerate(pairs) if isinstance(p, FanoutAnd)]
    private = [(i, p) for i, p in enumerate(pairs) if isinstance(p, PrivateAnd)]
    if private and s.nparties != 2:
        raise ProgrammingError("a private AND needs exactly 2 parties")
    checks = [p for _, p in regular] + [(q.x, q.y) for _, q in private]
    checks += [(q.x, y) for _, q in fanout for y in (q.y1, q.y2)]
    for x, y in checks:
        if x.dtype != y.dtype or x.size != y.size:
            raise ProgrammingError(f"AND of {x.dtype}{x.shape} with {y.dtype}{y.shape}")
    reg_like = [p[0] for _, p in regular]
    reg_off, nr = _words_of(reg_like)
    fan_like = [q.x for _, q in fanout]
    fan_off, nf = _words_of(fan_like)
    priv_like = [p.x for _, p in private]
    priv_off, np_ = _words_of(priv_like)
    out: list = [None] * len(pairs)
    if nr + nf + np_ == 0:
        for i, p in enumerate(pairs):
            if isinstance(p, FanoutAnd):
                out[i] = (np.zeros_like(p.x), np.zeros_like(p.x))
            else:
                out[i] = np.zeros_like(p.x if isinstance(p, PrivateAnd) else p[0])
        return out
    if nr:
        a, b, fetch_c = s.dealer.bool_triple_deferred(nr)
    if nf:
        fa, fb, fetch_fc = s.dealer.bool_fanout_deferred(nf, 2)
    if np_:
        mask, fetch_pc = s.dealer.private_and_deferred(np_)
    # [regular d | regular e | fan-out d | fan-out e1 | fan-out e2 | private]
    buf = s.outgoing(2 * nr + 3 * nf + np_)  # no result is a view of it
    opened = 2 * nr + 3 * nf
    if nr:
        _pack_masked(buf[:nr], [p[0] for _, p in regular], reg_off, a)
        _pack_masked(buf[nr:2 * nr], [p[1] for _, p in regular], reg_off, b)
    if nf:
        base = 2 * nr
        _pack_masked(buf[base:base + nf], [q.x for _, q in fanout], fan_off, fa)
        _pack_masked(buf[base + nf:base + 2 * nf], [q.y1 for _, q in fanout], fan_off, fb[:nf])
        _pack_masked(buf[base + 2 * nf:base + 3 * nf], [q.y2 for _, q in fanout], fan_off, fb[nf:])
    if np_:
        _pack_masked(buf[opened:], [p.x if s.index == 0 else p.y for _, p in private], priv_off, mask)
    received = s.exchange(buf)
    for theirs in received:
        buf[:opened] ^= theirs[:opened]
    if nr:  # z = c ^ d&(b ^ e at party 0) ^ e&a, in b (c may be a read-only correction)
        d, e = buf[:nr], buf[nr:2 * nr]
        if s.is_first:
            b ^= e
        z = np.bitwise_and(b, d, out=b)
        z ^= np.bitwise_and(a, e, out=a)
        z ^= fetch_c()
        for (i, _), got in zip(regular, _unpack(z, reg_like, reg_off)):
            out[i] = got
    if nf:
        base = 2 * nr
        d, e = buf[base:base + nf], buf[base + nf:base + 3 * nf]
        fb2, e2 = fb.reshape(2, nf), e.reshape(2, nf)  # rows: the products with y1, with y2
        if s.is_first:
            fb2 ^= e2
        z = np.bitwise_and(fb2, d, out=fb2)  # d & (b_j ^ e_j at party 0), d broadcast over the rows
        z ^= np.bitwise_and(e2, fa, out=e2)  # e_j & a
        z ^= fetch_fc().reshape(2, nf)
        z = z.ravel()
        z1 = _unpack(z[:nf], fan_like, fan_off)
        z2 = _unpack(z[nf:], fan_like, fan_off)
        for (i, _), g1, g2 in zip(fanout, z1, z2):
            out[i] = (g1, g2)
    if np_:
        theirs = received[0][opened:]
        if s.index == 0:  # (sent ^ a = x) & e, in the mask
            np.bitwise_xor(buf[opened:], mask, out=mask)
        zp = np.bitwise_and(mask, theirs, out=mask)  # party 1: d & b
        zp ^= fetch_pc()
        for (i, _), got in zip(private, _unpack(zp, priv_like, priv_off)):
            out[i] = got
    return out


def and_words_many(s: SpuSession, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """AND of several pairs of XOR-shared word arrays, ONE round."""
    if not pairs:
        return []
    return and_arrays_many(s, [(np.asarray(x, np.uint64), np.asarray(y, np.uint64)) for x, y in pairs])


def and_bits_many(s: SpuSession, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """AND of XOR-shared single bits (bit 0 of each element), packed 8 per byte: ONE round.
    Returns uint8 0/1 arrays."""
    packed = [(np.packbits(np.asarray(x, np.uint8) & 1), np.packbits(np.asarray(y, np.uint8) & 1))
              for x, y in pairs]
    got = and_arrays_many(s, packed)
    return [np.unpackbits(g, count=np.size(x)).reshape(np.shape(x)) for g, (x, _) in zip(got, pairs)]


# --- circuits: generators batched round by round ------------------------------------------------

def run_circuits(s: SpuSession, circuits: list) -> list:
    """Run boolean circuits in lockstep and return their results.

    A circuit is a generator: each `yield [pair, ...]` is one round's ANDs (`(x, y)` or
    `PrivateAnd`); it is resumed with their products and finally `return`s its result. All
    circuits' ANDs of a round go into ONE opening, so k circuits of depth r cost r rounds."""
    driver = parallel_circuit(circuits)
    try:
        request = next(driver)
        while True:
            request = driver.send(and_arrays_many(s, request))
    except StopIteration as stop:
        return stop.value


_UINT = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}


def _delta_swap(x: np.ndarray, delta: int, mask: int) -> np.ndarray:
    """Swap the bits selected by `mask` with those `delta` positions higher (Knuth, TAOCP 7.1.3)."""
    t = x.dtype.type
    sw = np.right_shift(x, t(delta))  # the one temporary: large arrays cost page faults
    sw ^= x
    sw &= t(mask)
    x ^= sw
    np.left_shift(sw, t(delta), out=sw)
    x ^= sw
    return x


def _index_reversal_swaps(width: int) -> list[tuple[int, int]]:
    """Delta swaps moving lane bit j to lane bit rev(j) (its log2(width)-bit index reversed):
    one swap of index bits (i, L-1-i) each."""
    bits = width.bit_length() - 1
    swaps = []
    for i in range(bits // 2):
        k = bits - 1 - i
        mask = sum(1 << j for j in range(width) if (j >> i) & 1 and not (j >> k) & 1)
        swaps.append(((1 << k) - (1 << i), mask))
    return swaps


_SWAPS = {w: _index_reversal_swaps(w) for w in (8, 16, 32, 64)}


def _bit_index_reverse(x: np.ndarray, width: int) -> np.ndarray:
    """Permute the bits of every lane: bit j -> bit rev(j) (local, linear: works on XOR shares);
    in place on x. 3 delta swaps for 64-bit lanes."""
    for delta, mask in _SWAPS[width]:
        _delta_swap(x, delta, mask)
    return x


_LITTLE = np.little_endian


def _halves(v: np.ndarray, h: int) -> tuple[np.ndarray, np.ndarray]:
    """(high, low) h-bit halves of v's 2h-bit lanes (v: uint8 for 2h <= 8, else uint(2h), C
    contiguous). Halves of 8 bits or more are strided views of v's half-width words: no pass
    over memory, no copy (the AND's packing reads them as they are)."""
    if h >= 8:
        pair = v.view(_UINT[h]).reshape(-1, 2)
        return (pair[:, 1], pair[:, 0]) if _LITTLE else (pair[:, 0], pair[:, 1])
    return v >> np.uint8(h), v & np.uint8((1 << h) - 1)


def _pack_lanes(v: np.ndarray, h: int) -> np.ndarray:
    """Lanes of h < 8 bits held one per uint8 -> 8/h per byte, lane j of a byte in bits j h..
    (local; applied alike to both inputs of an AND, so the packed AND is the AND of the packed
    lanes). 2 and 4 bits: the 8/h bytes of a group read as one word and folded by shifts (a
    few passes over n/8 h-wide words instead of one strided pass per lane)."""
    if h == 1:
        return np.packbits(v)
    per = 8 // h
    bulk = v.size - v.size % per
    if h == 4:
        x = v[:bulk].view(np.uint16)
        packed = (x | (x >> np.uint16(4))).astype(np.uint8)
    else:  # h == 2
        x = v[:bulk].view(np.uint32)
        x = x | (x >> np.uint32(6))
        packed = (x | (x >> np.uint32(12))).astype(np.uint8)
    if bulk == v.size:
        return packed
    tail = np.uint8(0)
    for j, lane in enumerate(v[bulk:]):
        tail |= lane << np.uint8(j * h)
    return np.append(packed, tail)


def _unpack_lanes(packed: np.ndarray, h: int, n: int) -> np.ndarray:
    """Inverse of `_pack_lanes`: n lanes of h bits, one per uint8."""
    if h == 1:
        return np.unpackbits(packed, count=n)
    if h == 4:
        x = packed.astype(np.uint16)
        x = (x | (x << np.uint16(4))) & np.uint16(0x0F0F)
    else:  # h == 2
        x = packed.astype(np.uint32)
        x = (x | (x << np.uint32(12))) & np.uint32(0x000F000F)
        x = (x | (x << np.uint32(6))) & np.uint32(0x03030303)
    return x.view(np.uint8)[:n]


def _prefix_tree(g: np.ndarray, p: np.ndarray, width: int, want_p: bool):
    """Circuit: the up-sweep of a carry-lookahead (Brent–Kung) tree over `width`-bit lanes laid
    out by `_bit_index_reverse`: (G, P) of the whole lane, with the block operator
    G = G_hi ^ (P_hi & G_lo), P = P_hi & P_lo (G_hi and P_hi exclusive, so ^ is |).
    In the index-reversed layout the two blocks combined at each level are the high and low
    halves of a lane, so a level is two ANDs on half-width lanes sharing P_hi: one `FanoutAnd`.
    log2(width) rounds; lanes narrower than a byte are packed 8/h per byte on the wire.
    Returns uint8 0/1 arrays (P None unless `want_p`)."""
    w, n = width, g.size
    while w > 1:
        h = w // 2
        (p_hi, p_lo), (g_hi, g_lo) = _halves(p, h), _halves(g, h)
        small = h < 8

        def pk(v, h=h, small=small):
            return _pack_lanes(v, h) if small else v

        if h == 1 and not want_p:
            (z,) = yield [(pk(p_hi), pk(g_lo))]
            z = _unpack_lanes(z, h, n) if small else z
            return g_hi ^ z, None
        ((z1, z2),) = yield [FanoutAnd(pk(p_hi), pk(g_lo), pk(p_lo))]
        if small:
            z1, z2 = _unpack_lanes(z1, h, n), _unpack_lanes(z2, h, n)
        g, p, w = g_hi ^ z1, z2, h
    return g, (p if want_p else None)


def _lane_width(bits: int) -> int:
    width = 8
    while width < bits:
        width *= 2
    return width


def sign_circuit(a: np.ndarray, b: np.ndarray, k: int = 64):
    """Circuit: XOR share (uint8 0/1) of bit k-1 of a + b, for XOR-shared uint64 words a, b —
    the sign of a k-bit two's-complement sum (k = 64: the MSB). Used after the carry-save layer
    for N > 2 parties (2 parties: `less_equal_circuit`).

    Only the carry into bit k-1 is needed, so instead of a full Kogge–Stone adder (all 64 carries,
    12 word-ANDs) a carry-lookahead tree computes the one group-generate G[0..k-2] of
    (g, p) = (a & b, a ^ b) (Brent–Kung's up-sweep; the MSB-only circuit of ABY3 / CrypTFlow's
    ReLU): bits 0..k-2 go to the top of a W-bit lane (W = 8..64; the lower, empty positions have
    g = p = 0), lanes are index-reversed once (3 delta swaps for W = 64), then `_prefix_tree`.
    1 + log2(W) rounds (7 for k = 64)."""
    top = (((a ^ b) >> np.uint64(k - 1)) & ONE).astype(np.uint8)
    m = k - 1  # carry into bit k-1 comes from bits 0..k-2
    if m == 0:
        return top
    width = _lane_width(m)
    t = _UINT[width]
    up, down = np.uint64(64 - m), np.uint64(64 - width)
    av = _bit_index_reverse(((a << up) >> down).astype(t), width)
    bv = _bit_index_reverse(((b << up) >> down).astype(t), width)
    (g,) = yield [(av, bv)]
    p = np.bitwise_xor(av, bv, out=av)
    carry, _ = yield from _prefix_tree(g, p, width, want_p=False)
    return top ^ carry


def lane_bytes(width: int, want_eq: bool) -> float:
    """Bytes per element and direction of one `_lane_compare` of a `width`-bit lane: the first
    level's 5 private ANDs of half lanes (5 W / 16), then `_prefix_tree`'s levels (3 arrays of h
    bits, h = W/4 .. 1; the last level 2 arrays without equality)."""
    total, h = 5 * width / 16, width // 4
    while h >= 1:
        total += (2 if h == 1 and not want_eq else 3) * h / 8
        h //= 2
    return total


def comparison_lanes(k: int, want_eq: bool) -> tuple[int, ...]:
    """The lane contents (high first) of a 2-party k-bit comparison: k content bits (k - 1 data
    bits and the sign's slot) in one lane of W = 2^ceil(log2 k) bits (at least 8), or split as
    (a, k - a) with a = 2^floor(log2 k) when that moves fewer bytes (`comparison_bytes`): the two
    trees run side by side and one AND round joins them, so the rounds stay log2(W)."""
    width = _lane_width(k)
    split = 1 << (k.bit_length() - 1)
    if split == k or split < 8:
        return (k,)
    return (split, k - split) if _split_bytes(split, k - split, want_eq) < lane_bytes(width, want_eq) else (k,)


def _split_bytes(split: int, rest: int, want_eq: bool) -> float:
    """Bytes per element and direction of a high lane of `split` bits and a low one of the `rest`,
    joined by one AND round (a low lane of the slot alone costs nothing: its EQ is local)."""
    if rest == 1:
        return lane_bytes(split, True) + (2 / 8 if want_eq else 0.0)
    return lane_bytes(split, True) + lane_bytes(_lane_width(rest), want_eq) + (3 if want_eq else 2) / 8


def comparison_bytes(k: int, want_eq: bool) -> float:
    """Bytes per element and direction of `less_equal_circuit` at width k (the model the tests
    check; `relational.pair_bytes` sums it over a sort's columns): 31.6 for 64 bits, 15.6 for 32, 19.6 for 35 (lanes of
    32 and 8 bits), 11.6 for 18 (16 and 8) with equality."""
    lanes = comparison_lanes(k, want_eq)
    return lane_bytes(_lane_width(k), want_eq) if len(lanes) == 1 else _split_bytes(*lanes, want_eq)


def _lane(content: np.ndarray, lo: int, count: int, width: int) -> np.ndarray:
    """Bits lo .. lo + count - 1 of the uint64 words `content` at the top of a `width`-bit lane
    (lower positions 0), index-reversed for `_prefix_tree`. `content` is overwritten when lo is 0
    (its last use: the high lane, if any, is cut first)."""
    lane = np.right_shift(content, np.uint64(lo)) if lo else content
    if count < 64:
        lane &= np.uint64((1 << count) - 1)
    lane <<= np.uint64(width - count)
    return _bit_index_reverse(lane if width == 64 else lane.astype(_UINT[width]), width)


def _lane_compare(s: SpuSession, lane: np.ndarray, width: int, slot: int | None, want_eq: bool):
    """Circuit, 2 parties: XOR shares (uint8 0/1) of (LT, EQ) of party 0's lane u against party
    1's lane v (each party passes its own), lexicographic from the lane's top: LT = [u < v] with
    position `slot` (a position of the lane before index reversal, or None) never counting as
    less, EQ = [u == v] (None unless `want_eq`). log2(width) rounds.

    Per bit lt_i = NOT u_i AND v_i and eq_i = NOT(u_i XOR v_i); the first level pairs the bits
    (hi, lo) of each half lane straight from the private inputs: with x = NOT u (party 0) and
    x' = x with the slot cleared,
      LT = x'_h v_h ^ (x_h x'_l) v_l ^ x'_l (v_h v_l)
      EQ = (x_h x_l) ^ (v_h v_l) ^ x_h v_l ^ x_l v_h
    — every cross term a party-0 value AND a party-1 value: 5 private ANDs of half lanes in ONE
    round; then `_prefix_tree` with (G, P) = (LT, EQ)."""
    t = _UINT[width]
    h = width // 2
    n = lane.size
    if s.index == 0:
        x = np.invert(lane, out=lane)  # the lane is this circuit's own (`_lane`)
        p = x if slot is None else x & ~_bit_index_reverse(np.array([1 << slot], t), width)[0]
        (xh, xl), (ph, pl) = _halves(x, h), _halves(p, h)
        mine = [ph, xh & pl, pl, xh, xl]
        local_eq = xh & xl
        del x, p, xh, xl, ph, pl
    else:
        vh, vl = _halves(lane, h)
        mine = [vh, vl, vh & vl, vl, vh]
        local_eq = vh & vl
        del vh, vl
    del lane  # the frame lives through every round: the inputs go with the first round's request
    if h < 8:
        mine = [_pack_lanes(v, h) for v in mine]
    zero = np.broadcast_to(mine[0].dtype.type(0), mine[0].shape)  # the other party's input: no memory
    request = [PrivateAnd(v, zero) if s.index == 0 else PrivateAnd(zero, v) for v in mine]
    del mine, zero
    got = yield request
    del request
    if h < 8:
        got = [_unpack_lanes(z, h, n) for z in got]
    lt1 = got[0] ^ got[1] ^ got[2]
    eq1 = got[3] ^ got[4] ^ local_eq
    return (yield from _prefix_tree(lt1, eq1, h, want_p=want_eq))


def _content_word(mine: np.ndarray, m: int) -> np.ndarray:
    """A party's comparison word of k = m + 1 bits: its m low bits moved up one above the sign's
    slot (bit 0, which holds bit m). One new word per element (the slot's bit is ORed in place)."""
    content = np.left_shift(mine, np.uint64(64 - m))
    content >>= np.uint64(63 - m)  # bits 0 .. m-1 moved up one: the slot is bit 0
    top = np.right_shift(mine, np.uint64(m), out=np.empty_like(content))
    top &= ONE
    content |= top
    return content


def less_equal_circuit(s: SpuSession, d: np.ndarray, k: int = 64, want_eq: bool = True):
    """Circuit, 2 parties: XOR shares (uint8 0/1) of ([d < 0], [d == 0]) for an additive share d
    of a value with |d| < 2^(k-1) (eq None unless `want_eq`).

    d = d_0 + d_1 = u - v with u = d_0 party 0's own word and v = -d_1 party 1's, so this is a
    comparison of two private inputs (the millionaires' problem) rather than an addition: the
    sign is u_{k-1} ^ v_{k-1} ^ [u mod 2^(k-1) < v mod 2^(k-1)] (the wrap mod 2^64 does not touch
    bit k-1), and d == 0 iff the low k bits agree. Each party's content word holds its k - 1 low
    bits above a slot with bit k-1, whose position counts for EQ and never for LT; it goes
    into the lanes of `comparison_lanes`: one lane compared by `_lane_compare`, or a high and a
    low lane compared side by side and joined by one AND round (LT = LT_hi ^ EQ_hi LT_lo, EQ =
    EQ_hi EQ_lo; a low lane of the slot alone has LT = 0 and a local EQ).
    Rounds: log2(W), W = 2^ceil(log2 k) and at least 8 (6 for k = 64). Bytes per element and
    direction: `comparison_bytes(k, want_eq)` (31.6 for k = 64, against 62 for a sign circuit
    beside a zero test)."""
    if s.nparties != 2:
        raise ProgrammingError("less_equal_circuit is the 2-party comparison")
    if not 2 <= k <= 64:
        raise ProgrammingError(f"comparison width must be in 2..64 bits, got {k}")
    m, n = k - 1, d.size
    content = _content_word(d if s.index == 0 else np.negative(d), m)  # u at party 0, v at party 1
    del d  # this frame lives through every round: it keeps no per-pair word it no longer needs
    sign = (content & ONE).astype(np.uint8)
    lanes = comparison_lanes(k, want_eq)
    if len(lanes) == 1:
        width = _lane_width(k)
        lane = _lane(content, 0, k, width)
        del content
        lt, eq = yield from _lane_compare(s, lane, width, width - k, want_eq)
        return sign ^ lt, eq
    split, rest = lanes
    high = _lane_compare(s, _lane(content, rest, split, split), split, None, True)
    if rest == 1:  # the slot alone: EQ = NOT(u_{k-1} ^ v_{k-1}), LT = 0
        lt_hi, eq_hi = yield from high
        if not want_eq:
            return sign ^ lt_hi, None
        eq_lo = sign ^ np.uint8(1) if s.index == 0 else sign
        (eq,) = yield [(_pack_lanes(eq_hi, 1), _pack_lanes(eq_lo, 1))]
        return sign ^ lt_hi, _unpack_lanes(eq, 1, n)
    width = _lane_width(rest)
    low = _lane_compare(s, _lane(content, 0, rest, width), width, width - rest, want_eq)
    del content
    (lt_hi, eq_hi), (lt_lo, eq_lo) = yield from parallel_circuit([high, low])
    if want_eq:
        ((z, eq),) = yield [FanoutAnd(_pack_lanes(eq_hi, 1), _pack_lanes(lt_lo, 1), _pack_lanes(eq_lo, 1))]
        return sign ^ lt_hi ^ _unpack_lanes(z, 1, n), _unpack_lanes(eq, 1, n)
    (z,) = yield [(_pack_lanes(eq_hi, 1), _pack_lanes(lt_lo, 1))]
    return sign ^ lt_hi ^ _unpack_lanes(z, 1, n), None


def zero_circuit(t: np.ndarray):
    """Circuit: XOR share (uint8 0/1) of [all 64 bits of t are 1], t XOR-shared uint64 words.
    An AND tree that halves the lane each level (64 -> 32 -> ... -> 1): 6 rounds, about 8 bytes
    of AND per element (lanes under a byte packed) instead of 6 words."""
    cur, w = np.ascontiguousarray(t, np.uint64), 64
    n = t.size
    while w > 1:
        h = w // 2
        hi, lo = _halves(cur, h)
        if h < 8:
            (z,) = yield [(_pack_lanes(lo, h), _pack_lanes(hi, h))]
            cur = _unpack_lanes(z, h, n)
        else:
            (cur,) = yield [(lo, hi)]
        w = h
    return cur


def parallel_circuit(circuits: list):
    """Circuit: several circuits side by side (their ANDs share rounds); returns their results."""
    circuits = list(circuits)
    results: list = [None] * len(circuits)
    pending: dict[int, list] = {}
    for i, circuit in enumerate(circuits):
        try:
            pending[i] = next(circuit)
        except StopIteration as stop:
            results[i] = stop.value
    while pending:
        order = list(pending)
        got = yield [pair for i in order for pair in pending[i]]
        at, nxt = 0, {}
        for i in order:
            k = len(pending[i])
            try:
                nxt[i] = circuits[i].send(got[at:at + k])
            except StopIteration as stop:
                results[i] = stop.value
            at += k
        pending = nxt
    return results


def low_words(x: np.ndarray, bits: int) -> np.ndarray:
    """x's low `bits` bits in the narrowest unsigned words holding them (8, 16, 32 or 64 bits): a
    sum whose low `bits` bits are all that is needed is exact there mod 2^width, and its ANDs move
    width/64 of a uint64 word's bytes."""
    return x.astype(_UINT[_lane_width(bits)], copy=False)


def csa_circuit(operands: list[np.ndarray]):
    """Circuit: carry-save layers reducing N XOR-shared addends to 2 (1 round each):
    (a, b, c) -> (a^b^c, maj(a, b, c) << 1) with maj = ((a^c)&(b^c))^c, in the operands' unsigned
    dtype (a sum mod 2^width: `low_words`)."""
    operands = list(operands)
    one = operands[0].dtype.type(1)
    while len(operands) > 2:
        groups = [operands[i:i + 3] for i in range(0, len(operands) - len(operands) % 3, 3)]
        rest = operands[len(groups) * 3:]
        majorities = yield [(a ^ c, b ^ c) for a, b, c in groups]
        operands = rest
        for (a, b, c), m in zip(groups, majorities):
            operands += [a ^ b ^ c, (m ^ c) << one]
    return operands[0], operands[1]


def and_many(s: SpuSession, pairs: list[tuple[BoolShare, BoolShare]]) -> list[BoolShare]:
    got = and_words_many(s, [(x.data, y.data) for x, y in pairs])
    return [BoolShare(z, min(x.bits, y.bits)) for z, (x, y) in zip(got, pairs)]


def bool_and(s: SpuSession, x: BoolShare, y: BoolShare) -> BoolShare:
    return and_many(s, [(x, y)])[0]


def bool_or(s: SpuSession, x: BoolShare, y: BoolShare) -> BoolShare:
    """x | y = x ^ y ^ (x & y): 1 round."""
    return x ^ y ^ bool_and(s, x, y)


def _pair_from_the_right(items: list) -> tuple[list, list]:
    """(pairs of neighbours, the leftmost item when their number is odd): a balanced tree that
    pairs from the right, so the last item (a comparison's tiebreak, whose EQ is never needed)
    always meets its left neighbour."""
    odd = len(items) % 2
    return [(items[i], items[i + 1]) for i in range(odd, len(items) - 1, 2)], items[:odd]


def lexicographic_bits(s: SpuSession, parts: list[tuple[np.ndarray, np.ndarray | None]]) -> np.ndarray:
    """XOR share (uint8 0/1) of LT_0 ^ EQ_0 (LT_1 ^ EQ_1 (... LT_g-1)) for g (LT, EQ) pairs of uint8
    0/1 shares (column 0 the most significant, the last EQ None: never needed): a balanced tree of
    the carry operator (G, P) = (G_hi ^ P_hi G_lo, P_hi P_lo), neighbours paired from the right,
    ceil(log2 g) rounds (a chain from the right took g - 1). Bytes per element and direction:
    `lexicographic_bytes(g)`. Only bit 0 of each input counts (circuits may leave higher bits set)."""
    parts = [(g & 1, None if p is None else p & 1) for g, p in ((np.asarray(g, np.uint8), p) for g, p in parts)]
    while len(parts) > 1:
        pairs, left = _pair_from_the_right(parts)
        items = [(np.packbits(p_hi), np.packbits(g_lo)) if p_lo is None else
                 FanoutAnd(np.packbits(p_hi), np.packbits(g_lo), np.packbits(p_lo))
                 for (_, p_hi), (g_lo, p_lo) in pairs]
        n = parts[0][0].size
        merged = []
        for ((g_hi, _), (_, p_lo)), got in zip(pairs, and_arrays_many(s, items)):
            z, p = (got, None) if p_lo is None else got
            merged.append((g_hi ^ np.unpackbits(z, count=n), None if p is None else np.unpackbits(p, count=n)))
        parts = left + merged
    return parts[0][0]


def lexicographic_bytes(g: int) -> float:
    """Bytes per element and direction of `lexicographic_bits` over g columns: 2/8 for a merge
    that needs only G, 3/8 for one that also needs P (a `FanoutAnd`)."""
    has_eq, total = [True] * (g - 1) + [False], 0.0
    while len(has_eq) > 1:
        pairs, left = _pair_from_the_right(has_eq)
        total += sum(3 / 8 if lo else 2 / 8 for _, lo in pairs)
        has_eq = left + [lo for _, lo in pairs]
    return total


def and_tree_bits(s: SpuSession, parts: list[np.ndarray]) -> np.ndarray:
    """XOR share (uint8 0/1) of the AND of several uint8 shares of one length (bit 0 of each), bits
    packed on the wire: a balanced tree, ceil(log2 k) rounds for k parts (a chain took k - 1)."""
    return and_trees_bits(s, [parts])[0]


def and_trees_bits(s: SpuSession, trees: list[list[np.ndarray]]) -> list[np.ndarray]:
    """`and_tree_bits` of several lists side by side: their levels share rounds, max ceil(log2 k)."""
    trees = [[np.asarray(x, np.uint8) & 1 for x in parts] for parts in trees]
    while any(len(parts) > 1 for parts in trees):
        split = [_pair_from_the_right(parts) for parts in trees]
        got = iter(and_bits_many(s, [pair for pairs, _ in split for pair in pairs]))
        trees = [left + [next(got) for _ in pairs] for pairs, left in split]
    return [parts[0] for parts in trees]


def add_words_many(s: SpuSession, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """Kogge–Stone: (a + b) mod 2^64 on XOR-shared words, for several pairs at once: 7 rounds."""
    if not pairs:
        return []
    a = np.concatenate([x.ravel() for x, _ in pairs])
    b = np.concatenate([y.ravel() for _, y in pairs])
    p = a ^ b
    (g,) = and_words_many(s, [(a, b)])
    for k in (1, 2, 4, 8, 16, 32):
        sk = np.uint64(k)
        if k < 32:
            carry, p_next = and_words_many(s, [(p, g << sk), (p, p << sk)])
            p = p_next
        else:
            (carry,) = and_words_many(s, [(p, g << sk)])
        g = g ^ carry
    total = a ^ b ^ (g << ONE)
    out, at = [], 0
    for x, _ in pairs:
        out.append(total[at:at + x.size].reshape(x.shape))
        at += x.size
    return out


def a2b(s: SpuSession, x: ArithShare) -> BoolShare:
    """Bit decomposition: XOR shares of the 64-bit two's-complement words of x."""
    return a2b_many(s, [x])[0]


def a2b_many(s: SpuSession, xs: list[ArithShare]) -> list[BoolShare]:
    """Bit decomposition of several shares at once (same rounds as one)."""
    flat = np.concatenate([x.data.ravel() for x in xs]) if xs else np.zeros(0, np.uint64)
    operands = [private_input(s, i, flat) for i in range(s.nparties)]
    while len(operands) > 2:  # carry-save layer: three addends -> two, one AND round
        groups = [operands[i:i + 3] for i in range(0, len(operands) - len(operands) % 3, 3)]
        rest = operands[len(groups) * 3:]
        majorities = and_words_many(s, [(a ^ c, b ^ c) for a, b, c in groups])
        operands = rest
        for (a, b, c), m in zip(groups, majorities):
            operands += [a ^ b ^ c, (m ^ c) << ONE]
    (words,) = add_words_many(s, [(operands[0], operands[1])])
    out, at = [], 0
    for x in xs:
        out.append(BoolShare(words[at:at + x.data.size].reshape(x.shape), 64))
        at += x.data.size
    return out


def zero_test_words(s: SpuSession, w: np.ndarray, extra=()) -> tuple[np.ndarray, list[np.ndarray]]:
    """XOR share of [w == 0] in bit 0 (6 rounds). `extra` AND pairs ride along in the first round."""
    t = w ^ ALL if s.is_first else w

    def extra_circuit():
        got = yield list(extra)
        return got

    circuits = [zero_circuit(t)] + ([extra_circuit()] if extra else [])
    results = run_circuits(s, circuits)
    return results[0].astype(np.uint64), (results[1] if extra else [])


def zero_test(s: SpuSession, x: BoolShare) -> BoolShare:
    bit, _ = zero_test_words(s, x.data)
    return BoolShare(bit, 1)


def b2a_bits(s: SpuSession, x: BoolShare) -> ArithShare:
    """Bit 0 of each XOR-shared word -> additive share of that bit (integer 0/1): 1 round."""
    return b2a_bits_many(s, [x])[0]


def b2a_bits_many(s: SpuSession, xs: list[BoolShare]) -> list[ArithShare]:
    flat = np.concatenate([x.data.ravel() for x in xs]) & ONE if xs else np.zeros(0, np.uint64)
    rb, ra = s.dealer.dabit(flat.size)
    (c,) = s.open_many(bits=[flat ^ rb])
    y = ra * (ONE - np.uint64(2) * c)
    if s.is_first:
        y = y + c
    out, at = [], 0
    for x in xs:
        out.append(ArithShare(y[at:at + x.data.size].reshape(x.shape), 0))
        at += x.data.size
    return out
