"""`SpuSession`: one compute party's context for SPU protocols.

A session holds everything a protocol may use and nothing global: this party's channel `Endpoint`,
the ordered list of compute parties and its own index, a `DealerClient` for correlated randomness,
pairwise PRG seeds shared with every other compute party (for input sharing and resharing without
sending arrays), and the fixed-point precision (`frac_bits`, default 16). `pooling` (default on)
lets the dealer client fetch elementwise randomness in batches (see `DealerClient`).

All parties run the same sequence of protocol calls on their own session; a per-session counter
names every message (`spu/<n>/<what>`), so parties stay in lockstep and a desynchronised party
fails with a `ProtocolError` naming the tag instead of reading the wrong data.

Communication primitives (each is one round; `rounds` counts them):
  - `open_many(arith=[...], xor=[...], bits=[...])`: every party sends all its shares to every
    other party at once, and everybody reconstructs — a batched opening.
  - `exchange(words)` / `open_words(words, n_arith)`: the lean forms behind Beaver products and
    ANDs — one contiguous uint64 buffer sent as is (a memoryview: the channel's copy is the only
    one; to several parties, one `bytes` copy that all of them share) and, for `open_words`,
    combined in place; no concatenations or temporaries.
  - `send_words` / `recv_words`: point-to-point word arrays, for protocols (shuffle) whose
    messages go to one party; such protocols count their own rounds.
Setup (`setup()`, 1 round among the parties + the dealer's seeds): party i sends every party j
the bytes it has sent each party in this query so far (8 B each) and, for j > i, a fresh 16-byte
seed (`offer`), then receives theirs (`accept`): a caller that sends its own first message between
the two (a stage's shapes, a program's sizes) pays one leg for both; the
dealer client starts its balance of corrections from these counts (`DealerClient.receiver_for`),
so a query's earlier one-sided traffic (a PSI's larger direction) is evened out by where the
dealer's corrections go.
"""

from __future__ import annotations

import numpy as np

from sqlsecure.errors import ProgrammingError, ProtocolError
from sqlsecure.executors.runtime.channel import Endpoint
from sqlsecure.executors.spu.dealer import DEALER, DealerClient
from sqlsecure.executors.spu.prg import Prg, fresh_seed

DEFAULT_FRAC_BITS = 16


def _one_copy(payload: memoryview, receivers: int) -> memoryview | bytes:
    """What to send to `receivers` parties: the view itself for one (the channel copies it), one
    immutable copy shared by all for more (a channel does not copy `bytes` again), so a 3-party
    opening copies its buffer once, not twice."""
    return bytes(payload) if receivers > 1 else payload


class SpuSession:
    """One compute party of an SPU: channel endpoint, party list, dealer handle, precision."""

    def __init__(self, endpoint: Endpoint, parties: list[str], dealer: str = DEALER,
                 frac_bits: int = DEFAULT_FRAC_BITS, timeout: float | None = None, pooling: bool = True):
        if endpoint.party not in parties:
            raise ProgrammingError(f"party {endpoint.party!r} is not one of the SPU parties {parties}")
        if len(parties) < 2:
            raise ProgrammingError("an SPU needs at least 2 compute parties")
        if not 0 <= frac_bits <= 30:
            raise ProgrammingError(f"frac_bits must be in 0..30, got {frac_bits}")
        self.endpoint = endpoint
        self.parties = list(parties)
        self.me = endpoint.party
        self.index = self.parties.index(self.me)
        self.frac_bits = frac_bits
        self.timeout = timeout
        self.dealer = DealerClient(endpoint, self.parties, self.index, dealer, timeout, pooling=pooling)
        self.pair_prgs: dict[int, Prg] = {}
        self.rounds = 0
        self._step = 0
        self._ready = False
        self._offered: str | None = None  # the setup's tag, once `offer` has sent it
        self._mine = np.zeros(0, np.uint64)
        self._outgoing = np.zeros(0, np.uint64)

    # --- identity -----------------------------------------------------------------------------------

    @property
    def nparties(self) -> int:
        return len(self.parties)

    @property
    def is_first(self) -> bool:
        """Party 0 adds public constants to its share."""
        return self.index == 0

    def others(self) -> list[int]:
        return [j for j in range(self.nparties) if j != self.index]

    def tag(self, what: str) -> str:
        self._step += 1
        return f"spu/{self._step}/{what}"

    # --- lifecycle ----------------------------------------------------------------------------------

    def setup(self) -> "SpuSession":
        """Receive the dealer's seed; agree a pairwise seed with every other party and learn the
        bytes each party has received from the others in this query (1 round)."""
        return self.offer().accept()

    def offer(self) -> "SpuSession":
        """Setup's sending half: the pair seeds and byte counts go out now, so a caller's own first
        message (a stage's shapes, a program's sizes) can follow in the same leg, before `accept`."""
        if self._offered is None:
            self._offered = self.tag("pair-seeds")
            stats = self.endpoint.channel.stats.bytes
            mine = np.array([stats[(self.me, p)] if p != self.me else 0 for p in self.parties], np.uint64)
            for j in self.others():
                seed = fresh_seed() if j > self.index else b""
                if seed:
                    self.pair_prgs[j] = Prg(seed)
                self.endpoint.send(self.parties[j], self._offered, mine.tobytes() + seed)
            self._mine = mine
        return self

    def accept(self) -> "SpuSession":
        """Setup's receiving half (after `offer`): the dealer's seed, the peers' pair seeds and counts."""
        if self._ready:
            return self
        if self._offered is None:
            raise ProgrammingError("SpuSession.accept() before offer()")
        self.dealer.setup()
        tag, received = self._offered, self._mine.copy()
        for j in self.others():
            raw = self._recv(j, tag)
            if len(raw) != 8 * self.nparties + (16 if j < self.index else 0):
                raise ProtocolError(f"party {self.parties[j]!r} sent {len(raw)} bytes for {tag}")
            received += np.frombuffer(raw[:8 * self.nparties], np.uint64)
            if j < self.index:
                self.pair_prgs[j] = Prg(raw[8 * self.nparties:])
        self.dealer.start_balance([int(b) for b in received])
        self.rounds += 1
        self._ready = True
        return self

    def close(self) -> None:
        self.dealer.close()

    def __enter__(self) -> "SpuSession":
        return self.setup() if not self._ready else self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()

    # --- raw messages -------------------------------------------------------------------------------

    def send_words(self, j: int, tag: str, words: np.ndarray) -> None:
        self.endpoint.send(self.parties[j], tag, np.ascontiguousarray(words, dtype=np.uint64).tobytes())

    def recv_words(self, j: int, tag: str, count: int) -> np.ndarray:
        raw = self._recv(j, tag)
        if len(raw) != 8 * count:
            raise ProtocolError(f"party {self.parties[j]!r} sent {len(raw)} bytes for {tag}, expected {8 * count}")
        return np.frombuffer(raw, dtype=np.uint64).copy()

    def _recv(self, j: int, tag: str) -> bytes:
        return self.endpoint.recv(self.parties[j], tag, self.timeout)

    def pair_words(self, j: int, n: int) -> np.ndarray:
        """n words from the PRG shared with party j; both call this at the same step."""
        return self.pair_prgs[j].words(self._step, n)

    # --- openings -----------------------------------------------------------------------------------

    def outgoing(self, n: int) -> np.ndarray:
        """A reused buffer of n uint64 words for one opening's message, to fill and `exchange`:
        a channel copies what it sends, so the buffer is free again when `exchange` returns, and a
        large round writes into pages already mapped instead of faulting in fresh ones. Valid until
        the next call: a protocol keeps no view of it past its round."""
        if self._outgoing.size < n:
            self._outgoing = np.empty(n, np.uint64)
        return self._outgoing[:n]

    def exchange(self, words: np.ndarray) -> list[np.ndarray]:
        """ONE round: send this uint64 buffer to every other party and return what each other
        party sent (read-only arrays, in `others()` order). Every party sends the same length."""
        if words.dtype != np.uint64 or words.ndim != 1 or not words.flags.c_contiguous:
            raise ProgrammingError("exchange needs a contiguous 1-d uint64 buffer")
        tag = self.tag("open")
        self.rounds += 1
        payload = _one_copy(memoryview(words).cast("B"), self.nparties - 1)
        for j in self.others():
            self.endpoint.send(self.parties[j], tag, payload)
        expect = 8 * words.size
        got = []
        for j in self.others():
            raw = self._recv(j, tag)
            if len(raw) != expect:
                raise ProtocolError(f"party {self.parties[j]!r} opened {len(raw)} bytes, expected {expect} ({tag})")
            got.append(np.frombuffer(raw, dtype=np.uint64))
        return got

    def open_words(self, words: np.ndarray, n_arith: int = 0) -> np.ndarray:
        """Open ONE uint64 buffer in place, in one round: its first `n_arith` words are additive
        shares, the rest XOR shares. The buffer is sent as is (the channel makes the one copy a
        network would) and every other party's shares are combined into it; returns `words`.
        The lean path behind Beaver products and ANDs (no concatenation, no temporaries)."""
        for theirs in self.exchange(words):
            if n_arith:
                words[:n_arith] += theirs[:n_arith]
            if n_arith < words.size:
                words[n_arith:] ^= theirs[n_arith:]
        return words

    def open_many(self, arith=(), xor=(), bits=(), to: int | None = None) -> list[np.ndarray]:
        """Open shares in ONE round: additive (`arith`), XOR words (`xor`) and XOR single bits
        (`bits`, bit 0 of each word, packed 8 per byte on the wire). With `to`, only that party
        learns the values (the others get an empty list)."""
        arith, xor, bits = [np.asarray(a) for a in arith], [np.asarray(a) for a in xor], [np.asarray(a) for a in bits]
        shapes = [a.shape for a in (*arith, *xor, *bits)]
        na = sum(a.size for a in arith)
        nx = sum(a.size for a in xor)
        nb = sum(a.size for a in bits)
        words = np.empty(na + nx + (nb + 63) // 64, np.uint64)  # words, then the packed bits
        at = 0
        for a in (*arith, *xor):
            words[at:at + a.size] = a.ravel()
            at += a.size
        if nb:
            flat_bits = np.concatenate([a.ravel() for a in bits]) if len(bits) > 1 else bits[0].ravel()
            packed = np.packbits(flat_bits.astype(np.uint8) & 1)
            tail = words[at:].view(np.uint8)
            tail[:packed.size] = packed
        payload = memoryview(words).cast("B")[:8 * (na + nx) + (nb + 7) // 8]
        words = words[:na + nx]
        tag = self.tag("open")
        self.rounds += 1
        receivers = self.others() if to is None else ([to] if to != self.index else [])
        payload = _one_copy(payload, len(receivers))
        for j in receivers:
            self.endpoint.send(self.parties[j], tag, payload)
        if to is not None and to != self.index:
            return []
        total_w = words
        total_b = np.unpackbits(packed, count=nb) if nb else np.zeros(0, np.uint8)
        expect = 8 * (na + nx) + (nb + 7) // 8
        for j in self.others():
            raw = self._recv(j, tag)
            if len(raw) != expect:
                raise ProtocolError(f"party {self.parties[j]!r} opened {len(raw)} bytes, expected {expect} ({tag})")
            theirs = np.frombuffer(raw, dtype=np.uint64, count=na + nx)
            if na:
                total_w[:na] += theirs[:na]
            if nx:
                total_w[na:] ^= theirs[na:]
            if nb:
                total_b ^= np.unpackbits(np.frombuffer(raw, np.uint8, offset=8 * (na + nx)), count=nb)
        flat = [total_w[:na], total_w[na:], total_b.astype(np.uint64)]
        out, at_w, at_b = [], 0, 0
        for i, shape in enumerate(shapes):
            size = int(np.prod(shape)) if shape else 1
            if i < len(arith) + len(xor):
                out.append(total_w[at_w:at_w + size].reshape(shape))
                at_w += size
            else:
                out.append(flat[2][at_b:at_b + size].reshape(shape))
                at_b += size
        return out
