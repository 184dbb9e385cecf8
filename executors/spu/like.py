"""LIKE with a constant pattern on secret text: `text LIKE pattern` as a 0/1 share per row.

The pattern is public (the query text is), the text is secret: shared as big-endian limbs of 7 bytes
(`values.text_limbs`), zero-padded to its width class W (no zero byte occurs inside UTF-8 text).
DuckDB's semantics, which the federation's dialects keep (docs/federation.md: string comparison and
LIKE are binary, case-sensitive): `%` matches any run of characters, `_` exactly one character (1 to
4 UTF-8 bytes), every other pattern character itself, byte for byte; `ESCAPE 'c'` makes the character
after c literal. The match is evaluated as a regular automaton over byte positions j = 0 .. W:

  R[j] = "the pattern's tokens so far match the text's first j bytes" (R = [1, 0, ..., 0] at first)
  literal run r of L bytes   R'[j + L] = R[j] AND M_r[j],  M_r[j] = AND_t [byte j+t == r_t]
  `_`                        R'[j + d] = XOR_d R[j] AND lead_d[j]  (d = 1..4: byte j starts a
                             character of d bytes; the d cases exclude each other, so XOR is OR)
  `%`                        R'[j] = OR_{i <= j} R[i]  (an oblivious prefix OR, Kogge-Stone)
  end                        [text LIKE p] = XOR_j R[j] AND [byte j == 0 or j == W]  (R holds at
                             most one j <= n there, n the text's length), or OR_j R[j] after a `%`.

A literal match at byte j is a character match: UTF-8 is self-synchronising, so a run of whole
characters equal to the text's bytes at j starts and ends on character boundaries. Patterns longer
than W never match: an answer (false), not an error. A NULL text keeps its NULL (validity passes).

Protocol (boolean shares, `spu.boolean`): (1) A2B of the limbs; the bytes are then local; (2) the
equality bits [byte j == c] for every distinct pattern byte c (and 0 for the end) by an AND tree over
each byte's 8 bits (its two nibbles' trees shared between the pattern's bytes), in bit planes packed 8
positions per byte — 3 rounds, with the lead-byte classes lead_2..4 beside them; (3) every run's M_r
by an AND tree over its L bytes — ceil(log2 L_max) rounds, lead_1 in the first; (4) the automaton:
1 round per literal run or `_`, ceil(log2(W + 1)) per `%` (none while R is still public: the tokens
before the first secret one are local), 1 for the end or ceil(log2(W + 1)) for a trailing `%`; (5) B2A
of the bit, 1 round. `rounds` states the total: 7 (A2B, 2 parties; 8 for 3) + 3 + ceil(log2 L_max) +
the automaton's + 1.

Bytes between 2 compute parties, per row (an AND of XOR-shared bits opens 2 bits each way: 1/2 B), with
W8 = W rounded up to a multiple of 8, h the distinct nibbles of the pattern's bytes and 0, D those bytes
and 0, u = 1 where the pattern has `_`:
  384 ceil(W / 7)                            A2B: 12 word ANDs of Kogge-Stone per 7-byte limb (the bulk)
  + W8 (3 h + D + 6 u) / 2                   byte equalities (nibble trees shared between bytes), lead classes
  + sum over runs of (L - 1) W8 / 2          the runs' AND trees
  + (W + 1) (n_runs + 4 n_ + log2(W + 1) n_% + 1) / 2 at most: the automaton
(Q13's '%special%requests%' at W = 133: 7,296 + 4,430 = 11,726 B, measured; tests/test_spu_like.py).
Nothing is opened but Beaver-masked values (`boolean.and_arrays_many`): the parties learn nothing.
"""

from __future__ import annotations

import math

import numpy as np

from sqlsecure.executors.spu import boolean
from sqlsecure.executors.spu.session import SpuSession
from sqlsecure.executors.spu.shares import ArithShare, BoolShare
from sqlsecure.executors.spu.values import LIMB_BYTES

ANY = "%"  # a token: any run of characters
ONE_CHAR = "_"  # a token: exactly one character
ESCAPE_MEANING = ("a backslash in a LIKE pattern escapes the next character in MySQL and PostgreSQL and is a "
                  "plain character in DuckDB: say which with ESCAPE '\\' (or another escape character)")


class PatternError(ValueError):
    """A pattern the SPU cannot match exactly; its message says why and what to do."""


def pattern_tokens(pattern: str, escape: str | None = None) -> tuple:
    """The pattern as tokens: `ANY`, `ONE_CHAR` and literal runs (UTF-8 bytes), consecutive `%` merged.
    Without an ESCAPE clause a backslash is refused (its meaning differs between the dialects)."""
    if escape is not None and len(escape) > 1:
        raise PatternError(f"ESCAPE {escape!r}: the escape must be empty or one character")
    if not escape and "\\" in pattern and escape is None:
        raise PatternError(ESCAPE_MEANING)
    if "\0" in pattern:  # the SPU's text is zero-padded: a NUL would match the padding
        raise PatternError("a NUL character in a LIKE pattern cannot be matched on the SPU; match it at one party")
    tokens: list = []
    chars = iter(pattern)
    for c in chars:
        if escape and c == escape:
            c = next(chars, None)
            if c is None:
                raise PatternError(f"the LIKE pattern {pattern!r} ends with its escape character {escape!r}")
            _add_literal(tokens, c)
        elif c == ANY:
            if not tokens or tokens[-1] != ANY:
                tokens.append(ANY)
        elif c == ONE_CHAR:
            tokens.append(ONE_CHAR)
        else:
            _add_literal(tokens, c)
    return tuple(tokens)


def _add_literal(tokens: list, c: str) -> None:
    if tokens and isinstance(tokens[-1], bytes):
        tokens[-1] += c.encode("utf-8")
    else:
        tokens.append(c.encode("utf-8"))


def rounds(tokens: tuple, width: int, nparties: int) -> int:
    """The rounds of `like_match` for these tokens on text of `width` bytes (limbs * 7) and N parties."""
    if public_answer(tokens, width) is not None:
        return 0
    runs = [len(t) for t in tokens if isinstance(t, bytes)]
    tree = max([math.ceil(math.log2(n)) for n in runs] + [1 if ONE_CHAR in tokens else 0])
    scan = math.ceil(math.log2(width + 1))
    ends_open = bool(tokens) and tokens[-1] == ANY
    automaton, public = 0, True
    for t in tokens[:-1] if ends_open else tokens:
        automaton += 0 if public else scan if t == ANY else 1
        public = public and t == ANY
    automaton += 0 if public else scan if ends_open else 1
    return 7 + _carry_save_layers(nparties) + 3 + tree + automaton + 1


def public_answer(tokens: tuple, width: int) -> int | None:
    """1 or 0 where the pattern alone decides (only `%`: every text; a run longer than the text: none)."""
    if any(isinstance(t, bytes) and len(t) > width for t in tokens):
        return 0
    return 1 if tokens and set(tokens) == {ANY} else None


def _carry_save_layers(nparties: int) -> int:
    layers, n = 0, nparties
    while n > 2:
        n -= n // 3
        layers += 1
    return layers


def like_match(s: SpuSession, limbs: list[ArithShare], tokens: tuple) -> ArithShare:
    """0/1 additive shares of [text LIKE pattern] per row; `limbs` the text's 7-byte limbs (width W =
    7 * len(limbs)), `tokens` from `pattern_tokens`. Rounds: `rounds`."""
    n, width = len(limbs[0]), LIMB_BYTES * len(limbs)
    if (answer := public_answer(tokens, width)) is not None:  # NULLs stay NULL: their validity is kept
        return _public_bit(s, np.full(n, answer, np.uint8))
    text = _text_bytes(s, limbs)
    equal, lead = _byte_classes(s, text, tokens)
    runs = _run_matches(s, equal, lead, tokens, width)
    state = _Automaton(s, n, width)
    ends_open = tokens[-1] == ANY if tokens else False
    for t in tokens[:-1] if ends_open else tokens:
        if t == ANY:
            state.any_run()
        elif t == ONE_CHAR:
            state.one_char(lead)
        else:
            state.literal(runs[t], len(t))
    bit = state.open_end() if ends_open else state.at_end(equal[0])
    return _to_arith(s, bit)


def _public_bit(s: SpuSession, bits: np.ndarray) -> ArithShare:
    """A public 0/1 per row as an additive share (party 0 holds it)."""
    return ArithShare(bits.astype(np.uint64) if s.is_first else np.zeros(len(bits), np.uint64), 0)


def _to_arith(s: SpuSession, bit: np.ndarray) -> ArithShare:
    """XOR-shared 0/1 per row -> additive share (1 round, `boolean.b2a_bits`)."""
    return boolean.b2a_bits(s, BoolShare(bit.astype(np.uint64), 1))


def _text_bytes(s: SpuSession, limbs: list[ArithShare]) -> np.ndarray:
    """XOR shares of the text's bytes, (rows, W) uint8: A2B of every limb (one batch), then shifts."""
    words = boolean.a2b_many(s, limbs)
    shifts = np.arange(LIMB_BYTES - 1, -1, -1, dtype=np.uint64) * np.uint64(8)
    per_limb = [((w.data[:, None] >> shifts) & np.uint64(0xFF)).astype(np.uint8) for w in words]
    return np.concatenate(per_limb, axis=1)


def _byte_classes(s: SpuSession, text: np.ndarray, tokens: tuple) -> tuple[dict, dict]:
    """{byte c: [text byte j == c]} for the pattern's bytes and 0, and, if the pattern has `_`,
    {d: [byte j leads a character of d bytes]} for d = 2..4 and "b7": its top bit; all shares of bits
    packed 8 positions j per byte (`np.packbits`: 1/8 of the memory and of the bytes sent).
    3 rounds: [high nibble == h] and [low nibble == l] by AND trees over the text's bit planes (2 rounds,
    one per distinct nibble of the pattern's bytes), then [byte == c] = high AND low (1 round)."""
    planes = [np.packbits((text >> k) & 1, axis=1) for k in range(8)]
    flip = np.uint8(0xFF) if s.is_first else np.uint8(0)
    wanted = sorted({0, *(b for t in tokens if isinstance(t, bytes) for b in t)})
    nibbles = {(shift, c >> shift & 15) for c in wanted for shift in (4, 0)}
    levels = {(shift, v): [planes[shift + k] ^ (np.uint8(0) if v >> k & 1 else flip) for k in range(4)]
              for shift, v in nibbles}
    with_chars = ONE_CHAR in tokens
    top = (planes[7], planes[6], planes[5], planes[4])
    lead: dict = {}
    for half in (2, 1, 0):
        own = ([(bits[k], bits[k + half]) for bits in levels.values() for k in range(half)] if half
               else [(levels[4, c >> 4][0], levels[0, c & 15][0]) for c in wanted])
        extra = _lead_round(half, top, lead, flip) if with_chars else []
        got = boolean.and_arrays_many(s, own + extra)
        if half:
            for at, key in enumerate(levels):
                levels[key] = got[at * half:(at + 1) * half]
        if with_chars:
            lead.update(_lead_results(half, got[len(own):]))
    lead = {d: v for d, v in lead.items() if d in (2, 3, 4)}
    if with_chars:
        lead["b7"] = planes[7]
    return dict(zip(wanted, got[:len(wanted)])), lead


def _lead_round(half: int, top: tuple, lead: dict, flip) -> list:
    """The lead-byte classes' ANDs of one round (b7..b4 the top bits): b7 b6, then with b5, then b4."""
    b7, b6, b5, b4 = top
    if half == 2:
        return [(b7, b6)]
    if half == 1:
        return [(lead["x"], b5 ^ flip), (lead["x"], b5)]
    return [(lead["y"], b4 ^ flip), (lead["y"], b4)]


def _lead_results(half: int, got: list) -> dict:
    if half == 2:
        return {"x": got[0]}
    if half == 1:
        return {2: got[0], "y": got[1]}
    return {3: got[0], 4: got[1]}


def _run_matches(s: SpuSession, equal: dict, lead: dict, tokens: tuple, width: int) -> dict:
    """{run: M_r} with M_r[j] = [the run's bytes at j, j+1, ...] per start j = 0 .. W - L (packed bits),
    by AND trees over the run's bytes (ceil(log2 L) rounds, all runs side by side); lead_1 = [byte j is
    ASCII and not 0] rides in the first round when the pattern has `_`."""
    runs = {t for t in tokens if isinstance(t, bytes)}
    pending = {r: [None] * len(r) for r in runs}
    for c in {b for r in runs for b in r}:  # each byte's bits unpacked once, its slices packed again
        bits = _unpack(equal[c], width)
        for r in runs:
            for t in (t for t, b in enumerate(r) if b == c):
                pending[r][t] = np.packbits(bits[:, t:t + width - len(r) + 1], axis=1)
    flip = np.uint8(0xFF) if s.is_first else np.uint8(0)
    if ONE_CHAR in tokens:
        pending["lead1"] = [lead.pop("b7") ^ flip, equal[0] ^ flip]
    while any(len(parts) > 1 for parts in pending.values()):
        pairs = [(parts[i], parts[i + 1]) for parts in pending.values() for i in range(0, len(parts) - 1, 2)]
        got = iter(boolean.and_arrays_many(s, pairs))
        pending = {key: [next(got) for _ in range(len(parts) // 2)] + parts[len(parts) - len(parts) % 2:]
                   for key, parts in pending.items()}
    if ONE_CHAR in tokens:
        lead[1] = pending.pop("lead1")[0]
    return {r: parts[0] for r, parts in pending.items()}


def _unpack(packed: np.ndarray, count: int) -> np.ndarray:
    """Packed bit shares -> (rows, count) uint8 0/1 shares."""
    return np.unpackbits(packed, axis=1, count=count)


class _Automaton:
    """The match state R over byte positions 0 .. W, public (numpy 0/1, the same at every party) until
    the first token that reads the text, XOR-shared after."""

    def __init__(self, s: SpuSession, rows: int, width: int):
        self.s, self.width = s, width
        self.state = np.zeros((rows, width + 1), np.uint8)
        self.state[:, 0] = 1
        self.public = True

    def _and(self, pairs: list) -> list:
        """ANDs of the state's slices with secret bits: local while the state is public, else 1 round."""
        if self.public:
            return [x & y for x, y in pairs]
        return boolean.and_bits_many(self.s, pairs)

    def literal(self, matches: np.ndarray, length: int) -> None:
        starts = self.width - length + 1
        (got,) = self._and([(self.state[:, :starts], _unpack(matches, starts))])
        self.state = np.zeros_like(self.state)
        self.state[:, length:length + starts] = got
        self.public = False

    def one_char(self, lead: dict) -> None:
        pairs = [(self.state[:, :self.width + 1 - d], _unpack(lead[d], self.width + 1 - d)) for d in (1, 2, 3, 4)]
        got = self._and(pairs)
        self.state = np.zeros_like(self.state)
        for d, moved in zip((1, 2, 3, 4), got):
            self.state[:, d:] ^= moved
        self.public = False

    def any_run(self) -> None:
        """R'[j] = OR_{i <= j} R[i]: Kogge-Stone, ceil(log2(W + 1)) rounds (local while public)."""
        if self.public:
            self.state = np.maximum.accumulate(self.state, axis=1)
            return
        step = 1
        while step <= self.width:
            a, b = self.state[:, step:], self.state[:, :-step]
            (both,) = boolean.and_bits_many(self.s, [(a, b)])
            self.state = self.state.copy()
            self.state[:, step:] = a ^ b ^ both
            step *= 2

    def open_end(self) -> np.ndarray:
        """After a trailing `%`: OR_j R[j] (any match of the rest), an OR tree of ceil(log2(W + 1)) rounds."""
        parts = self.state
        if self.public:
            return parts.max(axis=1) if self.s.is_first else np.zeros(len(parts), np.uint8)
        while parts.shape[1] > 1:
            half = parts.shape[1] // 2
            a, b, rest = parts[:, :half], parts[:, half:2 * half], parts[:, 2 * half:]
            (both,) = boolean.and_bits_many(self.s, [(a, b)])
            parts = np.concatenate([a ^ b ^ both, rest], axis=1)
        return parts[:, 0]

    def at_end(self, zero: np.ndarray) -> np.ndarray:
        """XOR_j R[j] AND [byte j == 0 or j == W] (`zero` packed): the match ends with the text (1 round)."""
        last = np.full((len(zero), 1), 1 if self.s.is_first else 0, np.uint8)  # j == W: a share of 1
        end = np.concatenate([_unpack(zero, self.width), last], axis=1)
        (got,) = self._and([(self.state, end)])
        return np.bitwise_xor.reduce(got, axis=1)
