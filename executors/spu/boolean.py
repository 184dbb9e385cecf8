"""Boolean protocols on XOR-shared 64-bit words, and the arithmetic <-> boolean conversions.

  and_many(s, pairs)     1 round: Beaver AND on packed words with a boolean triple (a, b, a&b):
                         open d = x^a, e = y^b; z = c ^ (d&b) ^ (e&a) (^ d&e at party 0).
                         16 B per word per ordered party pair; dealer -> last party 8 B per word.
  add_bits(s, a, b)      7 rounds: Kogge–Stone parallel-prefix adder on packed words
                         (Kogge & Stone 1973; as used for A2B by ABY, Demmler et al. NDSS 2015):
                         g = a&b, p = a^b (round 1); for k = 1, 2, 4, 8, 16, 32 (rounds 2..7):
                         g ^= p & (g << k), p &= p << k (XOR replaces OR: g and p stay disjoint);
                         sum = a ^ b ^ (g << 1).
  a2b(s, x)              Bit decomposition of an additive share: party i's share is a private
                         boolean input (XOR-shared trivially); with N > 2 parties a carry-save
                         layer (1 round each, majority = ((a^c)&(b^c))^c) reduces N inputs to 2;
                         then add_bits. 7 rounds for 2 parties, 8 for 3.
  zero_test(s, w)        6 rounds: AND-tree over the 64 bits of NOT w (w = 0 <=> all ones).
  b2a_bits(s, bits)      1 round (dabit method, e.g. Rotaru–Wood, INDOCRYPT 2019): the dealer
                         shares a random bit r both ways; open c = bit ^ r (packed, 1 bit per
                         element on the wire); [bit] = c + [r] - 2c[r].

Leakage: every opened value is masked by a fresh uniform dealer value; nothing is revealed.
"""

from __future__ import annotations

import numpy as np

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


def and_words_many(s: SpuSession, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """AND of several pairs of XOR-shared word arrays, ONE round."""
    if not pairs:
        return []
    xs = np.concatenate([x.ravel() for x, _ in pairs])
    ys = np.concatenate([y.ravel() for _, y in pairs])
    if xs.size == 0:
        return [np.zeros_like(x) for x, _ in pairs]
    a, b, c = s.dealer.bool_triple(xs.size)
    d, e = s.open_many(xor=[xs ^ a, ys ^ b])
    z = c ^ (d & b) ^ (e & a)
    if s.is_first:
        z ^= d & e
    out, at = [], 0
    for x, _ in pairs:
        out.append(z[at:at + x.size].reshape(x.shape))
        at += x.size
    return out


def and_many(s: SpuSession, pairs: list[tuple[BoolShare, BoolShare]]) -> list[BoolShare]:
    got = and_words_many(s, [(x.data, y.data) for x, y in pairs])
    return [BoolShare(z, min(x.bits, y.bits)) for z, (x, y) in zip(got, pairs)]


def bool_and(s: SpuSession, x: BoolShare, y: BoolShare) -> BoolShare:
    return and_many(s, [(x, y)])[0]


def bool_or(s: SpuSession, x: BoolShare, y: BoolShare) -> BoolShare:
    """x | y = x ^ y ^ (x & y): 1 round."""
    return x ^ y ^ bool_and(s, x, y)


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
    t = w ^ ALL if s.is_first else w.copy()
    extra_out: list[np.ndarray] = []
    for level, k in enumerate((32, 16, 8, 4, 2, 1)):
        pairs = [(t, t >> np.uint64(k))] + (list(extra) if level == 0 else [])
        got = and_words_many(s, pairs)
        t = got[0]
        if level == 0:
            extra_out = got[1:]
    return t & ONE, extra_out


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
