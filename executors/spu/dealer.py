"""The trusted dealer ("crypto producer" in TF-Encrypted, the TTP of SecretFlow SEMI2K, CrypTen's
TTP provider): correlated randomness for the SPU, seed-compressed.

Roles. `Dealer` is its own actor on the channel (named "dealer" in the embedded runtime), never a
data party: it sees no share of any input and takes part in no opening. `DealerClient` is a compute
party's handle to it (held by the `SpuSession`).

Messages (all counted by the channel):
  0. setup (once per session): the dealer sends every party i a fresh 16-byte AES seed s_i.
  1. request (per randomness request): the *last* party sends a `RandomnessRequest`
     (id, kind, sizes; ~60 bytes) — all parties run the same program, so all know the request.
  2. correction (per request): the dealer sends the one component that cannot be derived from a
     seed, to the one party that needs it: the request names it (the permuter of a shuffle; for
     every other kind the party that has received the fewest words so far, from its peers in the
     query (`SpuSession.setup` shares the counts) and from the dealer, ties to the last party —
     `DealerClient.receiver_for`), so the parties' incoming links carry the same bytes (class 4 at
     10^5 rows: 82.4 / 82.2 MB into the two parties; when triples went to the last party and
     private ANDs to party 0, a group-by alone sent 35.6 / 20.1 MB to party 0 / 1). No round is
     added: every party counts the same public sizes, in the same order.

Seed compression: party i's shares of request r are `Prg(s_i).words(r, ...)`; the dealer computes
the same words, so only the correcting component moves. What moves per element:

  kind            seeded (every party; r the receiver)      correction (8 B words, to r)
  arith_triple    a_i, b_i; c_i for i != r                  c_r = a*b - sum_{i!=r} c_i (1)
  bool_triple     same with XOR/AND                         1 word
  matrix_triple   A_i (m x k), B_i (k x n); C_i for i != r  C_r (m x n)
  trunc_pair      r_i; r_msb_i, r_mid_i for i != r          r_msb_r, r_mid_r (2)
  bool_fanout(k)  a_i (n), b_i (k n); c_i for i != r with   k n words
                  c = (a || a || ...) AND b: one mask a for k ANDs sharing their left input
  arith_fanout(k) the same with + and *: k products x * y_j   k n words
  private_and     (2 parties) p0: a; p1: b; the other: c_o  c_r = (a AND b) XOR c_o (1 word)
  dabit           boolean bit rb_i; arith ra_i for i != r   ra_r (1)
  shuffle(j)      pi_j (party j); A_i, B_i (i != j)         Delta_j = pi_j(sum A_i) - sum B_i (1, r = j)
  one_hot(o, b)   o: u (n x G), w (G x C); b: R (n x C)     u^T R - w (G x C words, r = b): the group
                  (o owns the group numbers, b one other    sums without a sort (`spu.one_hot_group`)
                  compute party; nobody else derives any)

Security: each correction is one party's share of a fresh random secret, uniform given that
party's own seeded words, so a party learns nothing; the dealer learns only the public request
sizes. Assumes the dealer does not collude with a compute party (the model of SEMI2K + TTP).
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass

import numpy as np

from sqlsecure.errors import ProtocolError
from sqlsecure.executors.runtime.channel import Endpoint
from sqlsecure.executors.spu.prg import SPARE_WORDS, Prg, fresh_seed

DEALER = "dealer"
SEED_TAG = "spu/seed"
REQUEST_TAG = "spu/request"
MSB = np.uint64(63)
LOW63 = np.uint64((1 << 63) - 1)
ONE = np.uint64(1)
DEALER_CHUNK = 1 << 16  # elements per pass over a triple request: 3 reused buffers of 512 KiB


def correction_tag(rid: int) -> str:
    return f"spu/rand/{rid}"


@dataclass(frozen=True)
class RandomnessRequest:
    """One request to the dealer: its id, kind and public sizes."""

    rid: int
    kind: str
    sizes: tuple[int, ...] = ()
    receiver: int | None = None  # the party the correction goes to; None: the kind's default

    def to_bytes(self) -> bytes:
        return json.dumps([self.rid, self.kind, list(self.sizes), self.receiver], separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes, frm: str = "party") -> "RandomnessRequest":
        try:
            rid, kind, sizes, receiver = json.loads(data)
            return cls(int(rid), str(kind), tuple(int(s) for s in sizes), None if receiver is None else int(receiver))
        except (ValueError, TypeError) as exc:
            raise ProtocolError(f"malformed randomness request from {frm!r}: {exc}") from None


def correction_words(kind: str, sizes: tuple[int, ...]) -> int:
    """Words of a request's correction, from its public sizes (what the receiver's link carries)."""
    if kind in ("arith_fanout", "bool_fanout"):
        return sizes[0] * sizes[1]
    if kind == "matrix_triple":
        return sizes[0] * sizes[2]
    if kind == "trunc_pair":
        return 2 * sizes[0]
    if kind == "shuffle":
        return sizes[1] * sizes[2]
    if kind == "one_hot":
        return sizes[3] * sizes[4]
    return sizes[0] if sizes else 0


def _split(words: np.ndarray, *sizes: int) -> list[np.ndarray]:
    out, at = [], 0
    for s in sizes:
        out.append(words[at:at + s])
        at += s
    return out


# --- layouts: which seeded words party `index` of `nparties` derives for a request ----------------
# Shared by the dealer and the client, so both sides always agree.

def _receives(index: int, nparties: int, receiver: int | None) -> bool:
    return index == (nparties - 1 if receiver is None else receiver)


def seeded_triple(prg: Prg, rid: int, index: int, nparties: int, sa: int, sb: int, sc: int,
                  receiver: int | None = None):
    """(a_i, b_i, c_i or None for the receiver (default the last party)) as flat arrays."""
    corrected = _receives(index, nparties, receiver)
    words = prg.words(rid, sa + sb + (0 if corrected else sc))
    a, b, c = _split(words, sa, sb, sc)
    return a, b, (None if corrected else c)


def seeded_trunc(prg: Prg, rid: int, index: int, nparties: int, n: int, receiver: int | None = None):
    corrected = _receives(index, nparties, receiver)
    words = prg.words(rid, n if corrected else 3 * n)
    r, msb, mid = _split(words, n, n, n)
    return r, (None if corrected else msb), (None if corrected else mid)


def seeded_dabit(prg: Prg, rid: int, index: int, nparties: int, n: int, receiver: int | None = None):
    corrected = _receives(index, nparties, receiver)
    words = prg.words(rid, n if corrected else 2 * n)
    rb, ra = _split(words, n, n)
    return rb & ONE, (None if corrected else ra)


def seeded_private_and(prg: Prg, rid: int, index: int, n: int, receiver: int = 0):
    """(this party's mask: a at party 0, b at party 1; its c share, None at the receiver, whose
    c_r is the dealer's correction)."""
    if index != receiver:
        words = prg.words(rid, 2 * n)
        return words[:n], words[n:]
    return prg.words(rid, n), None


def seeded_shuffle(prg: Prg, rid: int, index: int, permuter: int, rows: int, cols: int):
    """The permuter's permutation, or another party's (A_i, B_i) masks as (rows, cols) arrays."""
    if index == permuter:
        return prg.permutation(rid, rows)
    words = prg.words(rid, 2 * rows * cols)
    return words[:rows * cols].reshape(rows, cols), words[rows * cols:].reshape(rows, cols)


def seeded_one_hot(prg: Prg, rid: int, index: int, owner: int, other: int, rows: int, groups: int, cols: int):
    """A one-hot product's seeded words: the owner's (u: rows x groups, w: groups x cols), the other
    party's R (rows x cols); None for any third party (it takes no part)."""
    if index == owner:
        words = prg.words(rid, rows * groups + groups * cols)
        return words[:rows * groups].reshape(rows, groups), words[rows * groups:].reshape(groups, cols)
    if index == other:
        return prg.words(rid, rows * cols).reshape(rows, cols)
    return None


class Dealer:
    """The dealer actor: sends seeds, then answers requests until the session closes."""

    def __init__(self, endpoint: Endpoint, parties: list[str], timeout: float | None = None):
        if len(parties) < 2:
            raise ProtocolError("the SPU needs at least 2 compute parties")
        self.endpoint = endpoint
        self.parties = list(parties)
        self.timeout = timeout
        self.prgs: list[Prg] = []
        self.served = 0
        self._scratch: np.ndarray | None = None  # `_elementwise_correction`'s buffers, made at first use

    @property
    def requester(self) -> str:
        return self.parties[-1]

    def setup(self) -> None:
        """Round 0: one fresh seed to every party."""
        for party in self.parties:
            seed = fresh_seed()
            self.prgs.append(Prg(seed))
            self.endpoint.send(party, SEED_TAG, seed)

    def serve(self) -> int:
        """Set up, then answer requests until `close`; returns the number of requests served."""
        if not self.prgs:
            self.setup()
        while True:
            raw = self.endpoint.recv(self.requester, REQUEST_TAG, self.timeout)
            request = RandomnessRequest.from_bytes(raw, self.requester)
            if request.kind == "close":
                return self.served
            target, correction = self.produce(request)
            self.endpoint.send(self.parties[target], correction_tag(request.rid), correction.tobytes())
            self.served += 1

    def produce(self, request: RandomnessRequest) -> tuple[int, np.ndarray]:
        """(index of the party that receives the correction, the correction words)."""
        n, rid = len(self.parties), request.rid
        kind, sizes = request.kind, request.sizes
        default = 0 if kind == "private_and" else n - 1
        to = default if request.receiver is None else request.receiver
        if not 0 <= to < n:
            raise ProtocolError(f"randomness request {rid} names receiver {to} of {n} parties")
        if kind in ("arith_triple", "bool_triple"):
            return to, self._elementwise_correction(rid, sizes[0], 1, kind == "bool_triple", to)
        if kind in ("arith_fanout", "bool_fanout"):
            count, fan = sizes
            return to, self._elementwise_correction(rid, count, fan, kind == "bool_fanout", to)
        if kind == "matrix_triple":
            m, k, p = sizes
            parts = [seeded_triple(prg, rid, i, n, m * k, k * p, m * p, to) for i, prg in enumerate(self.prgs)]
            a, b = parts[0][0], parts[0][1]  # fresh PRG output: combined in place
            for p_a, p_b, _ in parts[1:]:
                a += p_a
                b += p_b
            c = np.matmul(a.reshape(m, k), b.reshape(k, p)).ravel()
            for part in parts:
                if part[2] is not None:
                    c -= part[2]
            return to, c
        if kind == "private_and":
            if n != 2:
                raise ProtocolError(f"private_and is a 2-party correlation, this SPU has {n} parties")
            return to, self._private_and_correction(rid, sizes[0], to)
        if kind == "trunc_pair":
            count, bits = sizes
            parts = [seeded_trunc(prg, rid, i, n, count, to) for i, prg in enumerate(self.prgs)]
            others = [p for i, p in enumerate(parts) if i != to]
            r = np.sum([p[0] for p in parts], axis=0, dtype=np.uint64)
            msb = (r >> MSB) - np.sum([p[1] for p in others], axis=0, dtype=np.uint64)
            mid = ((r & LOW63) >> np.uint64(bits)) - np.sum([p[2] for p in others], axis=0, dtype=np.uint64)
            return to, np.concatenate([msb, mid])
        if kind == "dabit":
            count = sizes[0]
            parts = [seeded_dabit(prg, rid, i, n, count, to) for i, prg in enumerate(self.prgs)]
            bit = np.bitwise_xor.reduce([p[0] for p in parts])
            return to, bit - np.sum([p[1] for i, p in enumerate(parts) if i != to], axis=0, dtype=np.uint64)
        if kind == "shuffle":
            permuter, rows, cols = sizes
            total_a = np.zeros((rows, cols), dtype=np.uint64)
            total_b = np.zeros((rows, cols), dtype=np.uint64)
            perm = None
            for i, prg in enumerate(self.prgs):
                got = seeded_shuffle(prg, rid, i, permuter, rows, cols)
                if i == permuter:
                    perm = got
                else:
                    total_a += got[0]
                    total_b += got[1]
            return permuter, (total_a[perm] - total_b).ravel()
        if kind == "one_hot":
            owner, other, rows, groups, cols = sizes
            if not (0 <= owner < n and 0 <= other < n and owner != other):
                raise ProtocolError(f"one_hot request {rid} names parties {owner} and {other} of {n}")
            return other, self._one_hot_correction(rid, owner, other, rows, groups, cols)
        raise ProtocolError(f"unknown randomness request kind {kind!r} from {self.requester!r}")

    def _buffers(self) -> np.ndarray:
        """The chunked corrections' 3 reused buffers of DEALER_CHUNK words, made at first use."""
        if self._scratch is None:
            self._scratch = np.empty((3, DEALER_CHUNK + SPARE_WORDS), np.uint64)
        return self._scratch

    def _elementwise_correction(self, rid: int, count: int, fan: int, boolean: bool, to: int) -> np.ndarray:
        """c_to (the receiver's) of a triple (fan 1) or fan-out (`fan` products sharing a) request of `count`
        elements, in the seeded layout of `seeded_triple` (a: count words, b and c: fan rows of
        count): row j of c is a op b_j minus the other parties' c_j. Computed DEALER_CHUNK
        elements at a time in buffers reused across chunks and requests, each party's streams read
        on by `Keystream`s (one cipher set-up per stream): the keystream lands in cache-resident
        pages already mapped, and the dealer holds 1.5 MiB of scratch instead of (3N - 1) arrays
        of the request's size (N parties: 256 MB for a 4·10^6-element triple of 3 parties)."""
        out = np.empty(fan * count, np.uint64)
        acc_a, acc_b, buf = self._buffers()
        combine = np.bitwise_xor if boolean else np.add
        remove = np.bitwise_xor if boolean else np.subtract
        product = np.bitwise_and if boolean else np.multiply
        rows = range(fan)
        streams = [(prg.keystream(rid, 0), [prg.keystream(rid, count * (1 + j)) for j in rows],
                    [prg.keystream(rid, count * (1 + fan + j)) for j in rows] if i != to else [])
                   for i, prg in enumerate(self.prgs)]
        for lo in range(0, count, DEALER_CHUNK):
            m = min(DEALER_CHUNK, count - lo)
            a = _combined(combine, [s_a for s_a, _, _ in streams], acc_a, buf, m)
            for j in rows:
                b = _combined(combine, [s_b[j] for _, s_b, _ in streams], acc_b, buf, m)
                c = out[j * count + lo:j * count + lo + m]
                product(a, b, out=c)
                for _, _, s_c in streams:
                    if s_c:
                        remove(c, s_c[j].into(buf, m), out=c)
        return out

    def _one_hot_correction(self, rid: int, owner: int, other: int, rows: int, groups: int, cols: int) -> np.ndarray:
        """The other party's share u^T R - w of a one-hot product (layout `seeded_one_hot`), u and R read
        on DEALER_CHUNK // groups rows at a time, so the dealer holds a chunk, not the n x G mask."""
        total = np.zeros((groups, cols), np.uint64)
        stream_u, stream_r = self.prgs[owner].keystream(rid, 0), self.prgs[other].keystream(rid, 0)
        step = max(1, DEALER_CHUNK // max(groups, cols))
        buf_u = np.empty(step * groups + SPARE_WORDS, np.uint64)
        buf_r = np.empty(step * cols + SPARE_WORDS, np.uint64)
        for lo in range(0, rows, step):
            m = min(step, rows - lo)
            u = stream_u.into(buf_u, m * groups).reshape(m, groups)
            r = stream_r.into(buf_r, m * cols).reshape(m, cols)
            total += u.T @ r
        w = self.prgs[owner].keystream(rid, rows * groups).into(np.empty(groups * cols + SPARE_WORDS, np.uint64),
                                                              groups * cols)
        return (total.ravel() - w).astype(np.uint64)

    def _private_and_correction(self, rid: int, count: int, to: int) -> np.ndarray:
        """The receiver's c_to = (a AND b) XOR c_other of a private AND (layout `seeded_private_and`:
        party 0's stream is a, party 1's b, the other party's then its c), chunked like
        `_elementwise_correction`."""
        out = np.empty(count, np.uint64)
        buf_a, buf_b, buf = self._buffers()
        stream_a, stream_b = self.prgs[0].keystream(rid, 0), self.prgs[1].keystream(rid, 0)
        stream_c = self.prgs[1 - to].keystream(rid, count)
        for lo in range(0, count, DEALER_CHUNK):
            m = min(DEALER_CHUNK, count - lo)
            c = out[lo:lo + m]
            np.bitwise_and(stream_a.into(buf_a, m), stream_b.into(buf_b, m), out=c)
            np.bitwise_xor(c, stream_c.into(buf, m), out=c)
        return out


def _combined(combine, streams: list, acc: np.ndarray, buf: np.ndarray, m: int) -> np.ndarray:
    """The next m words of every stream, combined (XOR or +) into `acc` (the first read straight
    into it); `buf` the reused read buffer of the others. Both hold m + SPARE_WORDS words."""
    total = streams[0].into(acc, m)
    for stream in streams[1:]:
        combine(total, stream.into(buf, m), out=total)
    return total


POOL_START = 1 << 12        # first batch of a pooled kind, in elements
POOL_MAX = 1 << 16          # batches double up to this
POOL_REQUEST_MAX = 1 << 13  # larger requests go to the dealer directly: their round trip is
                            # amortised, and a batch's unused tail would be wasted work
POOLED = ("arith_triple", "bool_triple", "bool_fanout", "private_and", "dabit")


class _Batch:
    """A batch of one pooled kind: this party's seeded arrays (`rows` > 1: rows of `size` each)
    and, at the party that receives it, the dealer's correction (fetched at first use)."""

    __slots__ = ("rid", "size", "seeded", "rows", "correction_count", "correction", "pos")

    def __init__(self, rid, size, seeded, rows, correction_count):
        self.rid, self.size, self.seeded, self.rows = rid, size, seeded, rows
        self.correction_count, self.correction, self.pos = correction_count, None, 0


class DealerClient:
    """A compute party's handle to the dealer: returns this party's share of each request.

    A correction the dealer sent comes back as a read-only view of the message (no copy); the
    seeded arrays are the caller's to overwrite. Protocols therefore combine into their seeded
    arrays (a, b, masks) and add c last, never write into c.

    Pooling (`pooling=True`, the default): elementwise kinds (triples, fan-out and private AND
    masks, dabits) are requested in batches — POOL_START elements, doubling to POOL_MAX — and
    requests of up to POOL_REQUEST_MAX elements are served from the current batch, so most small
    rounds involve no dealer message at all (a dealer round trip measured ~0.25 ms of a ~0.45 ms
    round at small sizes). Every
    party runs the same requests in the same order, so all consume the same batches in lockstep;
    the correlations are the same as unbatched ones, only produced ahead. Larger requests,
    matrix triples, truncation pairs and shuffles go to the dealer directly.
    Corrections are received in the order the dealer sends them (= request order) and kept until
    used."""

    def __init__(self, endpoint: Endpoint, parties: list[str], index: int, dealer: str = DEALER,
                 timeout: float | None = None, pooling: bool = True):
        self.endpoint = endpoint
        self.parties = parties
        self.index = index
        self.dealer = dealer
        self.timeout = timeout
        self.prg: Prg | None = None
        self.next_rid = 0
        self.pooling = pooling
        self._pools: dict[str, _Batch] = {}
        self._promised: dict[str, int] = {}  # per pooled kind: elements `ahead` set aside in the current batch
        self._next_batch: dict[str, int] = {}
        self._expected: deque[int] = deque()  # rids whose correction comes to this party, in order
        self._received: dict[int, bytes] = {}
        self.correction_load = [0] * len(parties)  # words each party received (`start_balance`) and corrections

    @property
    def nparties(self) -> int:
        return len(self.parties)

    @property
    def is_last(self) -> bool:
        return self.index == self.nparties - 1

    def setup(self) -> None:
        self.prg = Prg(self.endpoint.recv(self.dealer, SEED_TAG, self.timeout))

    def start_balance(self, received_bytes: list[int]) -> None:
        """Start the balance from the bytes each party received from the others before the session."""
        self.correction_load = [b // 8 for b in received_bytes]

    def receiver_for(self, kind: str, sizes: tuple[int, ...]) -> int:
        """The party that has received the fewest words so far (ties: party 0 for a private AND,
        as before, else the last party): every party computes the same from public sizes, so no
        message says it."""
        if kind == "private_and":
            return 0 if self.correction_load[0] <= self.correction_load[1] else 1
        least = min(self.correction_load)
        return max(i for i, load in enumerate(self.correction_load) if load == least)

    def _request(self, kind: str, *sizes: int, receiver: int | None = None) -> tuple[int, int]:
        """(request id, the party its correction goes to): `receiver` if the kind fixes it (a
        shuffle's permuter), else `receiver_for`'s choice."""
        if self.prg is None:
            raise ProtocolError("SPU session used before setup() received the dealer's seed")
        rid = self.next_rid
        self.next_rid += 1
        to = self.receiver_for(kind, sizes) if receiver is None else receiver
        self.correction_load[to] += correction_words(kind, sizes)
        if self.is_last:
            self.endpoint.send(self.dealer, REQUEST_TAG, RandomnessRequest(rid, kind, sizes, to).to_bytes())
        if self.index == to:
            self._expected.append(rid)
        return rid, to

    def _correction(self, rid: int, count: int) -> np.ndarray:
        while rid not in self._received:
            if not self._expected:
                raise ProtocolError(f"no correction expected for request {rid}")
            nxt = self._expected.popleft()
            self._received[nxt] = self.endpoint.recv(self.dealer, correction_tag(nxt), self.timeout)
        raw = self._received.pop(rid)
        if len(raw) != 8 * count:
            raise ProtocolError(f"dealer sent {len(raw)} bytes for request {rid}, expected {8 * count}")
        return np.frombuffer(raw, dtype=np.uint64)  # read-only, no copy: consumers add it, never write it

    def close(self) -> None:
        """The last party tells the dealer the session is over."""
        if self.is_last and self.prg is not None:
            self.endpoint.send(self.dealer, REQUEST_TAG, RandomnessRequest(self.next_rid, "close").to_bytes())

    # --- pools --------------------------------------------------------------------------------------

    def _new_batch(self, kind: str, size: int, fan: int) -> _Batch:
        n, idx = self.nparties, self.index
        if kind in ("arith_triple", "bool_triple", "bool_fanout"):
            rid, to = self._request(kind, *((size,) if kind != "bool_fanout" else (size, fan)))
            a, b, c = seeded_triple(self.prg, rid, idx, n, size, fan * size, fan * size, to)
            return _Batch(rid, size, [a, b, c], [1, fan, fan], fan * size)
        if kind == "private_and":
            rid, to = self._request(kind, size)
            mask, c = seeded_private_and(self.prg, rid, idx, size, to)
            return _Batch(rid, size, [mask, c], [1, 1], size)
        rid, to = self._request(kind, size)  # dabit
        rb, ra = seeded_dabit(self.prg, rid, idx, n, size, to)
        return _Batch(rid, size, [rb, ra], [1, 1], size)

    def ahead(self, kind: str, count: int) -> None:
        """Set aside `count` elements of pooled `kind` for a take to come, requesting their batch now
        if the current one cannot hold them beside what is already set aside: the request and the
        dealer's correction then travel while the parties compute, where a request at first use
        puts its round trip (to the dealer, then to the receiver: two legs) on the critical path.
        Only the timing changes: the batch is one `_take` would request, its elements used in order.
        Counts the pools do not serve are requested at use, as before."""
        if kind not in POOLED or not self._pooled(kind, count):
            return
        batch, promised = self._pools.get(kind), self._promised.get(kind, 0)
        if batch is None or batch.size - batch.pos - promised < count:  # a new batch, for these and those set aside
            self._refill(kind, promised + count, 2 if kind == "bool_fanout" else 1)
        self._promised[kind] = promised + count

    def _refill(self, kind: str, count: int, fan: int) -> _Batch:
        size = max(count, self._next_batch.get(kind, POOL_START))
        self._next_batch[kind] = min(POOL_MAX, 2 * size)
        self._promised[kind] = 0
        batch = self._pools[kind] = self._new_batch(kind, size, fan)
        return batch

    def _take(self, kind: str, count: int, fan: int = 1):
        """This party's arrays for `count` elements of a pooled kind, the last one (the component
        a correction may provide) as a fetch callable."""
        batch = self._pools.get(kind)
        if batch is None or batch.size - batch.pos < count:
            batch = self._refill(kind, count, fan)
        self._promised[kind] = max(0, self._promised.get(kind, 0) - count)
        lo, hi = batch.pos, batch.pos + count
        batch.pos = hi

        def cut(array, rows):
            if rows == 1:
                return array[lo:hi]
            grid = array.reshape(rows, batch.size)
            return np.ascontiguousarray(grid[:, lo:hi]).ravel()

        *front, last = batch.seeded
        out = [cut(a, r) for a, r in zip(front, batch.rows)]
        if last is not None:
            piece = cut(last, batch.rows[-1])
            return out, lambda: piece

        def fetch():
            if batch.correction is None:
                batch.correction = self._correction(batch.rid, batch.correction_count)
            return cut(batch.correction, batch.rows[-1])
        return out, fetch

    def _pooled(self, kind: str, count: int) -> bool:
        return self.pooling and 0 < count <= POOL_REQUEST_MAX

    # --- kinds ------------------------------------------------------------------------------------

    def arith_triple(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Shares of (a, b, a*b mod 2^64), n elements each."""
        return self._triple("arith_triple", (n,), n, n, n)

    def bool_triple(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """XOR shares of (a, b, a AND b) on n 64-bit words."""
        return self._triple("bool_triple", (n,), n, n, n)

    def matrix_triple(self, m: int, k: int, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Shares of (A, B, A @ B) with A m x k, B k x p."""
        a, b, c = self._triple("matrix_triple", (m, k, p), m * k, k * p, m * p)
        return a.reshape(m, k), b.reshape(k, p), c.reshape(m, p)

    def _triple(self, kind, sizes, sa, sb, sc):
        a, b, fetch_c = self._triple_deferred(kind, sizes, sa, sb, sc)
        return a, b, fetch_c()

    def _triple_deferred(self, kind, sizes, sa, sb, sc):
        if kind in POOLED and self._pooled(kind, sizes[0]):
            (a, b), fetch_c = self._take(kind, sizes[0], sizes[1] if kind == "bool_fanout" else 1)
            return a, b, fetch_c
        rid, to = self._request(kind, *sizes)
        a, b, c = seeded_triple(self.prg, rid, self.index, self.nparties, sa, sb, sc, to)
        if c is None:
            return a, b, lambda: self._correction(rid, sc)
        return a, b, lambda: c

    def arith_triple_deferred(self, n: int):
        """As `arith_triple`, but c comes from a callable: the last party collects the dealer's
        correction only when it needs c (after the opening), so the dealer's work overlaps the
        parties' exchange instead of delaying it."""
        return self._triple_deferred("arith_triple", (n,), n, n, n)

    def bool_triple_deferred(self, n: int):
        """As `bool_triple`, with c deferred (see `arith_triple_deferred`)."""
        return self._triple_deferred("bool_triple", (n,), n, n, n)

    def bool_fanout_deferred(self, n: int, fan: int):
        """XOR shares of a (n words), b (fan*n) and c = (a repeated fan times) AND b, c deferred:
        for `fan` ANDs that share their left input, which is then opened once."""
        return self._triple_deferred("bool_fanout", (n, fan), n, fan * n, fan * n)

    def arith_fanout_deferred(self, n: int, fan: int):
        """Shares of a (n), b (fan*n) and c = (a repeated fan times) * b mod 2^64, c deferred: for
        `fan` products sharing their left factor, which is then opened once (not pooled: the
        fan varies)."""
        return self._triple_deferred("arith_fanout", (n, fan), n, fan * n, fan * n)

    def private_and_deferred(self, n: int):
        """2 parties: party 0 gets (a, fetch c_0), party 1 (b, fetch c_1), with
        c_0 XOR c_1 = a AND b; a is party 0's alone, b party 1's alone."""
        if self._pooled("private_and", n):
            (mask,), fetch_c = self._take("private_and", n)
            return mask, fetch_c
        rid, to = self._request("private_and", n)
        mask, c = seeded_private_and(self.prg, rid, self.index, n, to)
        if c is None:
            return mask, lambda: self._correction(rid, n)
        return mask, lambda: c

    def trunc_pair(self, n: int, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Shares of r (uniform in Z_2^64), r_msb = r >> 63 and r_mid = (r mod 2^63) >> bits."""
        rid, to = self._request("trunc_pair", n, bits)
        r, msb, mid = seeded_trunc(self.prg, rid, self.index, self.nparties, n, to)
        if msb is None:
            msb, mid = _split(self._correction(rid, 2 * n), n, n)
        return r, msb, mid

    def dabit(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """A random bit r in two forms: XOR share (0/1 words) and additive share."""
        if self._pooled("dabit", n):
            (rb,), fetch_ra = self._take("dabit", n)
            return rb, fetch_ra()
        rid, to = self._request("dabit", n)
        rb, ra = seeded_dabit(self.prg, rid, self.index, self.nparties, n, to)
        if ra is None:
            ra = self._correction(rid, n)
        return rb, ra

    def one_hot(self, owner: int, other: int, rows: int, groups: int, cols: int):
        """A one-hot product's randomness (`seeded_one_hot`): the owner gets (u, w), the other party
        (R, c) with c = u^T R - w the dealer's correction, a third party None."""
        rid, _ = self._request("one_hot", owner, other, rows, groups, cols, receiver=other)
        got = seeded_one_hot(self.prg, rid, self.index, owner, other, rows, groups, cols)
        if self.index == other:
            return got, self._correction(rid, groups * cols).reshape(groups, cols)
        return got

    def shuffle(self, permuter: int, rows: int, cols: int):
        """Permuter: (pi, Delta); others: (A_i, B_i). See the module docstring."""
        rid, _ = self._request("shuffle", permuter, rows, cols, receiver=permuter)
        got = seeded_shuffle(self.prg, rid, self.index, permuter, rows, cols)
        if self.index == permuter:
            return got, self._correction(rid, rows * cols).reshape(rows, cols)
        return got
