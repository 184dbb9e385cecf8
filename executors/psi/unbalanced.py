"""Unbalanced ECDH-PSI: the large side's blinded set is prepared once and reused across queries.

Same contracts as `ecdh.psi_join_indices` / `ecdh.psi_membership` (my row indices of the inner join
in a common order; a bool per row), for a small set X (side S, ~10^3 rows) against a large set Y
(side L, ~10^7 rows). The balanced ECDH-PSI costs 2(|X| + |Y|) X25519 operations per query; here
the |Y|-sized work is done once per *epoch* and each later query costs 2|X| operations plus L's
local hashing of its rows -- the offline / online split of Kiss, Liu, Schneider, Asokan, Pinkas,
"Private Set Intersection for Unequal Set Sizes with Mobile Applications" (PoPETs 2017), there with
a DH-OPRF that S unblinds by a scalar inverse. X25519 (`blinding.py`; keys hashed by SHA-256) has
clamped scalars and no inverse, so here S instead raises L's prepared set to its own long-lived key
once per epoch and compares doubly blinded points.

State (a `PsiCache` per party process, in memory only, keyed by (peer, scope)):
  L keeps, per epoch: a random 16-byte epoch id, its key b, the SHA-256 digest of its sorted distinct
    key points, and the map from positions in its prepared set P = shuffled {H(y)^b} to its
    distinct keys (4 B per key). P itself is not kept: it is only sent once per epoch.
  S keeps, per epoch: L's epoch id, its key a and D = {p^a : p in P} = {H(y)^ba} as 128-bit
    prefixes sorted for lookup, with each one's position in P (20 B per key in numpy arrays).

Rounds of one query (tags `{tag}/...`):
  1. hello (both ways, 35 B): version, role, join or membership, a hash of `scope`, and from S the
     L-epoch it holds (zeros: none). Both check that the roles are complementary and the rest equal.
  2. epoch (L -> S, 25 B): L's current epoch id and its distinct key count |Y|, and whether P
     follows. L starts a new epoch (fresh b, fresh id, new shuffle) when S does not hold L's current
     one, when L's epoch expired (see rotation), or when L's distinct keys changed -- detected by the
     digest, recomputed every query: a SHA-256 hash of each of L's rows and a sort of 8-byte prefixes
     (measured at 10^7 rows: ~14 s of one core and ~0.5 GB of numpy arrays for the query, against
     ~9 min of X25519 work for a preparation on two idle cores -- 54 s measured at 10^6 -- and
     29 min measured on a loaded machine).
     prepared (L -> S, only in a new epoch): P, streamed in batches of BATCH points (32 B per key);
     S draws a fresh a, computes D batch by batch and keeps it.
  3. blinded (S -> L): {H(x)^a} for S's distinct keys, shuffled, in batches.
  4. reblinded (L -> S): the same points raised to b, in S's order. S finds H(x)^ab in D.
  5. matches (S -> L): the positions in P of the common keys, ascending (8 B each): the common order.
  6. counts (both ways, joins only): the row count per common key in the common order, as in ecdh.py.

Rotation: an epoch ends, and the next query prepares a new one, when either side's key is older
than `PsiCache.lifetime` (default 86,400 s: one day) or has served `max_uses` queries (default
1,000), when L's distinct keys change, or when S no longer holds it (restart, eviction after
`max_entries` (peer, scope) pairs). Both keys are replaced together: a new epoch always has a fresh
b, a fresh a and a fresh shuffle of P. Keys never leave memory; a process restart rotates them.

Leakage (semi-honest), beyond the balanced ECDH-PSI (which reveals the other side's distinct key
count, which of my keys are common, and the multiplicities of the common keys):
  - L sees H(x)^a with the same a for every query of the epoch, so it can tell which of S's keys
    -- common or not -- recur across the epoch's queries, i.e. how S's query sets overlap. a is
    per (peer, scope), so nothing links across scopes or epochs. (Removing this needs S to unblind
    a fresh per-query blind, i.e. a scalar inverse; X25519's clamped scalars offer none.)
  - S keeps D, L's doubly blinded set, until the epoch ends (as it could keep the one message of a
    balanced run). It learns, one bit per query, whether L's epoch changed; an early change before
    `lifetime` / `max_uses` says that L's set of distinct keys changed (the balanced protocol shows
    only the count). Common keys keep their position in P within an epoch, which S can link anyway.
  - Nothing about a key of L outside the intersection, or a key of S, crosses in the clear.
  - Not a leak to a semi-honest S, but a change of cost: an S that sent keys other than its own
    could test them against Y at 2 operations each, where a balanced run costs it |Y| more.
  Matching compares 128-bit prefixes of H(.)^ab: a false match has probability <= |X||Y| 2^-128 per
  query (truncating PSI outputs to lambda + log2(|X||Y|) bits is standard, e.g. KKRT16).

Concurrent queries on one (peer, scope) are correct but may prepare twice (the last one stays).
Malformed messages raise `ProtocolError`.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Callable, NamedTuple

import numpy as np

from sqlsecure.errors import ProgrammingError, ProtocolError
from sqlsecure.executors.runtime.channel import Endpoint
from sqlsecure.executors.psi.blinding import POINT, BlindingKey, GroupWorkers, hash_to_points
from sqlsecure.executors.psi.ecdh import Intersection, join_from, membership_of, random_permutation
from sqlsecure.executors.psi.encoding import Keys, distinct_encoded, per_row

BATCH = 1 << 16  # points per message of P, of blinded and of re-blinded points (2 MiB)
WINDOW = 2  # batches of P being blinded at once per party, so the workers never wait for a send
VERSION = 1
LARGE, SMALL = 1, 2
JOIN, MEMBERSHIP = 1, 2
EPOCH_ID = 16
NO_EPOCH = bytes(EPOCH_ID)
DEFAULT_LIFETIME = 86_400.0  # seconds a pair of epoch keys may live
DEFAULT_MAX_USES = 1_000  # queries an epoch may serve
DEFAULT_MAX_ENTRIES = 8  # (role, peer, scope) epochs kept per party; least recently used goes first

_ROLE = {LARGE: "large", SMALL: "small"}
_MODE = {JOIN: "join", MEMBERSHIP: "membership"}


# --- messages -------------------------------------------------------------------------------------


def _scope_hash(scope: str) -> bytes:
    return hashlib.sha256(b"sqlsecure/unbalanced-psi/scope\x00" + scope.encode()).digest()[:16]


@dataclass(frozen=True)
class Hello:
    """Round 1, both ways: who I am in this run, and (from S) the L-epoch whose set I hold."""

    role: int
    mode: int
    scope: bytes  # _scope_hash(scope)
    epoch: bytes = NO_EPOCH

    FORMAT = struct.Struct("<BBB16s16s")

    def to_bytes(self) -> bytes:
        return self.FORMAT.pack(VERSION, self.role, self.mode, self.scope, self.epoch)

    @classmethod
    def from_bytes(cls, data: bytes, peer: str) -> "Hello":
        if len(data) != cls.FORMAT.size:
            raise ProtocolError(f"{peer} sent an unbalanced-PSI hello of {len(data)} bytes, "
                                f"expected {cls.FORMAT.size}")
        version, role, mode, scope, epoch = cls.FORMAT.unpack(data)
        if version != VERSION:
            raise ProtocolError(f"{peer} speaks unbalanced-PSI version {version}, I speak {VERSION}: "
                                "run the same sqlsecure release on both parties")
        if role not in _ROLE or mode not in _MODE:
            raise ProtocolError(f"{peer} sent an unbalanced-PSI hello with role {role}, mode {mode}")
        return cls(role, mode, scope, epoch)


@dataclass(frozen=True)
class EpochAnswer:
    """Round 2, L -> S: L's current epoch, its distinct key count, and whether P follows."""

    epoch: bytes
    size: int
    prepared: bool

    FORMAT = struct.Struct("<16sQB")

    def to_bytes(self) -> bytes:
        return self.FORMAT.pack(self.epoch, self.size, int(self.prepared))

    @classmethod
    def from_bytes(cls, data: bytes, peer: str) -> "EpochAnswer":
        if len(data) != cls.FORMAT.size:
            raise ProtocolError(f"{peer} sent an unbalanced-PSI epoch answer of {len(data)} bytes, "
                                f"expected {cls.FORMAT.size}")
        epoch, size, prepared = cls.FORMAT.unpack(data)
        if epoch == NO_EPOCH or prepared not in (0, 1):
            raise ProtocolError(f"{peer} sent an invalid unbalanced-PSI epoch answer")
        return cls(epoch, size, bool(prepared))


@dataclass(frozen=True)
class Matches:
    """Round 5, S -> L: positions in P of the common keys, strictly ascending (the common order)."""

    positions: np.ndarray

    def to_bytes(self) -> bytes:
        return self.positions.astype("<u8").tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, peer: str, size: int, most: int) -> "Matches":
        if len(data) % 8 or len(data) // 8 > most:
            raise ProtocolError(f"{peer} sent {len(data)} bytes of matches; expected 8 B per match and at "
                                f"most {most} matches (the points it sent)")
        positions = np.frombuffer(data, dtype="<u8")
        if len(positions) and (positions[-1] >= size or np.any(positions[1:] <= positions[:-1])):
            raise ProtocolError(f"{peer} sent match positions that are not strictly ascending below {size}")
        return cls(positions.astype(np.int64))


# --- the cache ------------------------------------------------------------------------------------


@dataclass(eq=False)
class _LargeEpoch:
    epoch: bytes
    key: BlindingKey  # b
    digest: bytes  # SHA-256 over my sorted distinct key points
    size: int
    order: np.ndarray  # position in P -> index of my sorted distinct key
    created: float
    uses: int = 1

    def nbytes(self) -> int:
        return self.order.nbytes + 100


@dataclass(eq=False)
class _SmallEpoch:
    epoch: bytes
    key: BlindingKey  # a
    size: int
    low: np.ndarray  # first 8 bytes of each point of D, as uint64, sorted
    high: np.ndarray  # the next 8 bytes, in the same order
    position: np.ndarray  # each one's position in P
    created: float
    uses: int = 1

    def nbytes(self) -> int:
        return self.low.nbytes + self.high.nbytes + self.position.nbytes + 100


class PsiCache:
    """One party's unbalanced-PSI epochs (keys and prepared sets), kept across queries; thread-safe.

    Per process, in memory only. An epoch is dropped once older than `lifetime` seconds or after
    `max_uses` queries; at most `max_entries` epochs are kept (least recently used dropped first).
    `clock` (monotonic seconds) is for tests.
    """

    def __init__(self, lifetime: float = DEFAULT_LIFETIME, max_uses: int = DEFAULT_MAX_USES,
                 max_entries: int = DEFAULT_MAX_ENTRIES, clock: Callable[[], float] = time.monotonic):
        if not lifetime > 0 or max_uses < 1 or max_entries < 1:
            raise ProgrammingError(f"PsiCache needs lifetime > 0, max_uses >= 1, max_entries >= 1 "
                                   f"(got {lifetime}, {max_uses}, {max_entries})")
        self.lifetime, self.max_uses, self.max_entries, self.clock = lifetime, max_uses, max_entries, clock
        self._lock = threading.Lock()
        self._epochs: OrderedDict = OrderedDict()

    def _expired(self, entry) -> bool:
        return entry.uses >= self.max_uses or self.clock() - entry.created >= self.lifetime

    def _lookup(self, role: int, peer: str, scope: str):
        """The live epoch for (role, peer, scope), or None (an expired one is dropped)."""
        with self._lock:
            entry = self._epochs.get((role, peer, scope))
            if entry is None:
                return None
            if self._expired(entry):
                del self._epochs[(role, peer, scope)]
                return None
            self._epochs.move_to_end((role, peer, scope))
            return entry

    def _use(self, entry) -> None:
        with self._lock:
            entry.uses += 1

    def _store(self, role: int, peer: str, scope: str, entry) -> None:
        with self._lock:
            self._epochs[(role, peer, scope)] = entry
            self._epochs.move_to_end((role, peer, scope))
            while len(self._epochs) > self.max_entries:
                self._epochs.popitem(last=False)

    def forget(self, peer: str | None = None) -> None:
        """Drop every epoch (with `peer`: those shared with it); the next query prepares anew."""
        with self._lock:
            for k in [k for k in self._epochs if peer is None or k[1] == peer]:
                del self._epochs[k]

    def __len__(self) -> int:
        with self._lock:
            return len(self._epochs)

    def nbytes(self) -> int:
        """Approximate memory held by the kept epochs."""
        with self._lock:
            return sum(e.nbytes() for e in self._epochs.values())


# --- keys of one party ----------------------------------------------------------------------------


class _Keys(NamedTuple):
    ids: np.ndarray  # per row: index of its key among my sorted distinct keys, -1 for NULL
    points: np.ndarray  # (distinct keys, 32) uint8: H(key) per distinct encoded key
    first: np.ndarray  # per distinct key, in sorted order: its row of `points`

    @property
    def size(self) -> int:
        return len(self.first)

    def distinct_points(self, which: np.ndarray) -> bytes:
        """The points of my distinct keys `which` (indices in sorted order), concatenated."""
        return self.points[self.first[which]].tobytes()

    def digest(self) -> bytes:
        """SHA-256 over my sorted distinct points: changes exactly when my set of distinct keys does."""
        h = hashlib.sha256(struct.pack("<Q", self.size))
        for start in range(0, self.size, BATCH):
            h.update(self.points[self.first[start:start + BATCH]])
        return h.digest()


def _hash_rows(encoded: list[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
    """(mask of non-NULL rows, their points as a (rows, 32) uint8 array), hashed in chunks."""
    present = np.fromiter((k is not None for k in encoded), dtype=bool, count=len(encoded))
    m = int(present.sum())
    points = np.empty((m, POINT), dtype=np.uint8)
    keys = (k for k in encoded if k is not None)
    for start in range(0, m, BATCH):
        chunk = list(islice(keys, BATCH))
        points[start:start + len(chunk)] = np.frombuffer(hash_to_points(chunk), dtype=np.uint8).reshape(-1, POINT)
    return present, points


def _sorted_distinct(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(per row: index of its point among the distinct points in byte order, per distinct: a row).

    Sorts 8-byte big-endian prefixes (a numpy uint64 sort, ~6x faster than sorting 32-byte
    strings); falls back to the exact sort only if two different points share a prefix."""
    m = len(points)
    if m == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    prefix = np.ascontiguousarray(points[:, :8]).view(">u8").ravel().astype(np.uint64)
    by = np.argsort(prefix, kind="stable")
    ordered = prefix[by]
    del prefix
    same = ordered[1:] == ordered[:-1]
    del ordered
    tied = np.flatnonzero(same)
    if len(tied) and not np.array_equal(points[by[tied]], points[by[tied + 1]]):
        _, first, inverse = np.unique(points.view("S32").ravel(), return_index=True, return_inverse=True)
        return inverse.reshape(-1).astype(np.int64), first.astype(np.int64)
    new = np.concatenate([[True], ~same])
    inverse = np.empty(m, dtype=np.int64)
    inverse[by] = np.cumsum(new) - 1
    return inverse, by[new]


def _keys(encoded: Keys) -> _Keys:
    """My rows' keys, hashing only the distinct ones."""
    rows, distinct = distinct_encoded(encoded)
    _, points = _hash_rows(distinct)
    inverse, first = _sorted_distinct(points)
    return _Keys(per_row(rows, inverse), points, first)


# --- the protocol ---------------------------------------------------------------------------------


def _batches(n: int) -> list[tuple[int, int]]:
    """Point ranges of the messages for n points: full BATCHes, then one shorter (maybe empty) batch."""
    return [(start, min(start + BATCH, n)) for start in range(0, n + 1, BATCH)]


def _index_type(n: int):
    return np.uint32 if n < 2 ** 32 else np.int64


def _handshake(endpoint: Endpoint, peer: str, tag: str, mine: Hello) -> Hello:
    endpoint.send(peer, f"{tag}/hello", mine.to_bytes())
    theirs = Hello.from_bytes(endpoint.recv(peer, f"{tag}/hello"), peer)
    if theirs.role == mine.role:
        raise ProtocolError(f"{peer} and I both took the {_ROLE[mine.role]} side of unbalanced PSI {tag!r}: "
                            "the planner must tell exactly one party that it holds the large set")
    if theirs.mode != mine.mode:
        raise ProtocolError(f"{peer} runs an unbalanced-PSI {_MODE[theirs.mode]} and I a {_MODE[mine.mode]} "
                            f"for {tag!r}")
    if theirs.scope != mine.scope:
        raise ProtocolError(f"{peer} names a different scope for unbalanced PSI {tag!r}: both parties must "
                            "be given the same scope string")
    return theirs


def _large_side(endpoint: Endpoint, peer: str, tag: str, encoded: Keys, mode: int,
                cache: PsiCache, workers: GroupWorkers | None, scope: str) -> Intersection:
    keys = _keys(encoded)
    digest = keys.digest()
    hello = _handshake(endpoint, peer, tag, Hello(LARGE, mode, _scope_hash(scope)))
    entry = cache._lookup(LARGE, peer, scope)
    if entry is not None and entry.digest == digest and entry.epoch == hello.epoch:
        cache._use(entry)
        endpoint.send(peer, f"{tag}/epoch", EpochAnswer(entry.epoch, entry.size, False).to_bytes())
    else:
        entry = _prepare_large(endpoint, peer, tag, keys, digest, cache.clock(), workers)
        cache._store(LARGE, peer, scope, entry)

    # Rounds 3-4: the peer's blinded points, re-blinded with b batch by batch, in its order.
    received, more = 0, True
    while more:
        theirs = endpoint.recv(peer, f"{tag}/blinded")
        if len(theirs) % POINT or len(theirs) > BATCH * POINT:
            raise ProtocolError(f"{peer} sent a malformed unbalanced-PSI batch ({len(theirs)} bytes; at "
                                f"most {BATCH} points of {POINT} bytes each)")
        more, received = len(theirs) == BATCH * POINT, received + len(theirs) // POINT
        endpoint.send(peer, f"{tag}/reblinded", entry.key.blind(theirs, workers))

    matches = Matches.from_bytes(endpoint.recv(peer, f"{tag}/matches"), peer, entry.size, received)
    return Intersection(keys.ids, keys.size, entry.order[matches.positions].astype(np.int64))


def _prepare_large(endpoint: Endpoint, peer: str, tag: str, keys: _Keys, digest: bytes, now: float,
                   workers: GroupWorkers | None) -> _LargeEpoch:
    """A new epoch: fresh b, fresh id and shuffle; P = {H(y)^b} streamed to the peer."""
    epoch = NO_EPOCH
    while epoch == NO_EPOCH:
        epoch = os.urandom(EPOCH_ID)
    entry = _LargeEpoch(epoch, BlindingKey(), digest, keys.size,
                        random_permutation(keys.size).astype(_index_type(keys.size)), now)
    endpoint.send(peer, f"{tag}/epoch", EpochAnswer(epoch, keys.size, True).to_bytes())
    batches = (keys.distinct_points(entry.order[start:stop]) for start, stop in _batches(keys.size))
    for blinded in _blind_ahead(entry.key, batches, workers):
        endpoint.send(peer, f"{tag}/prepared", blinded)
    return entry


def _small_side(endpoint: Endpoint, peer: str, tag: str, encoded: Keys, mode: int,
                cache: PsiCache, workers: GroupWorkers | None, scope: str) -> Intersection:
    keys = _keys(encoded)
    entry = cache._lookup(SMALL, peer, scope)
    held = NO_EPOCH if entry is None else entry.epoch
    _handshake(endpoint, peer, tag, Hello(SMALL, mode, _scope_hash(scope), held))
    answer = EpochAnswer.from_bytes(endpoint.recv(peer, f"{tag}/epoch"), peer)
    if answer.prepared:
        if answer.epoch == held:
            raise ProtocolError(f"{peer} started a new unbalanced-PSI epoch under the id I hold")
        entry = _prepare_small(endpoint, peer, tag, answer, cache.clock(), workers)
        cache._store(SMALL, peer, scope, entry)
    elif entry is None or answer.epoch != held or answer.size != entry.size:
        raise ProtocolError(f"{peer} kept an unbalanced-PSI epoch that I do not hold, without sending its set")
    else:
        cache._use(entry)

    # Rounds 3-4: my distinct points blinded with a, shuffled; L raises them to b.
    order = random_permutation(keys.size)
    double = np.empty((keys.size, POINT), dtype=np.uint8)
    for start, stop in _batches(keys.size):
        endpoint.send(peer, f"{tag}/blinded", entry.key.blind(keys.distinct_points(order[start:stop]), workers))
        got = endpoint.recv(peer, f"{tag}/reblinded")
        if len(got) != (stop - start) * POINT:
            raise ProtocolError(f"{peer} re-blinded {len(got) // POINT} keys of the batch starting at key "
                                f"{start}, expected {stop - start} (of {keys.size})")
        double[start:stop] = np.frombuffer(got, dtype=np.uint8).reshape(-1, POINT)

    found = _find(entry, double)  # per shuffled key: its position in P, -1 if not common
    hit = np.flatnonzero(found >= 0)
    by_position = np.argsort(found[hit], kind="stable")
    positions = found[hit][by_position]
    if np.any(positions[1:] == positions[:-1]):
        raise ProtocolError(f"{peer} re-blinded two of my keys onto the same point of its set")
    endpoint.send(peer, f"{tag}/matches", Matches(positions).to_bytes())
    return Intersection(keys.ids, keys.size, order[hit[by_position]])


def _prepare_small(endpoint: Endpoint, peer: str, tag: str, answer: EpochAnswer, now: float,
                   workers: GroupWorkers | None) -> _SmallEpoch:
    """A new epoch: receive P batch by batch, keep D = P^a as sorted 128-bit prefixes with positions."""
    key = BlindingKey()
    low = np.empty(answer.size, dtype=np.uint64)
    high = np.empty(answer.size, dtype=np.uint64)
    bounds = _batches(answer.size)

    def received():
        for start, stop in bounds:
            got = endpoint.recv(peer, f"{tag}/prepared")
            if len(got) != (stop - start) * POINT:
                raise ProtocolError(f"{peer} sent {len(got)} bytes of its prepared set at key {start}, "
                                    f"expected {(stop - start) * POINT} (of {answer.size} keys)")
            yield got

    for i, blinded in enumerate(_blind_ahead(key, received(), workers)):
        start, stop = bounds[i]
        words = np.frombuffer(blinded, dtype="<u8").reshape(-1, POINT // 8)
        low[start:stop], high[start:stop] = words[:, 0], words[:, 1]
    by = np.argsort(low, kind="stable")
    low, high = low[by], high[by]
    if np.any((low[1:] == low[:-1]) & (high[1:] == high[:-1])):
        raise ProtocolError(f"{peer}'s prepared set repeats a point")
    return _SmallEpoch(answer.epoch, key, answer.size, low, high, by.astype(_index_type(answer.size)), now)


def _blind_ahead(key: BlindingKey, batches, workers: GroupWorkers | None):
    """Blind each batch of points, in order, with up to WINDOW batches in flight (threads that wait
    on the worker processes), so producing or consuming one batch overlaps blinding the next."""
    with ThreadPoolExecutor(WINDOW, thread_name_prefix="sqlsecure-upsi") as pool:
        pending: deque = deque()
        try:
            for batch in batches:
                pending.append(pool.submit(key.blind, batch, workers))
                if len(pending) >= WINDOW:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _find(entry: _SmallEpoch, double: np.ndarray) -> np.ndarray:
    """For each point H(x)^ab: its position in P if it is in D (by 128-bit prefix), else -1."""
    words = double.view("<u8")
    low, high = words[:, 0].copy(), words[:, 1].copy()
    lo = np.searchsorted(entry.low, low, side="left")
    hi = np.searchsorted(entry.low, low, side="right")
    found = np.full(len(double), -1, dtype=np.int64)
    single = np.flatnonzero(hi - lo == 1)
    ok = single[entry.high[lo[single]] == high[single]]
    found[ok] = entry.position[lo[ok]]
    for i in np.flatnonzero(hi - lo > 1):  # 64-bit prefixes shared within D: rare
        same = np.flatnonzero(entry.high[lo[i]:hi[i]] == high[i])
        if len(same):
            found[i] = entry.position[lo[i] + same[0]]
    return found


def _intersect(endpoint: Endpoint, peer: str, tag: str, encoded: Keys, large: bool, mode: int,
               cache: PsiCache, workers: GroupWorkers | None, scope: str) -> Intersection:
    side = _large_side if large else _small_side
    return side(endpoint, peer, tag, encoded, mode, cache, workers, scope)


def unbalanced_join_indices(endpoint: Endpoint, peer: str, tag: str, encoded: Keys, left: bool,
                            large: bool, cache: PsiCache, workers: GroupWorkers | None = None,
                            scope: str = "") -> np.ndarray:
    """Unbalanced PSI join with `peer`: my row indices of the inner join, in the common order.

    `large`: whether I hold the large set (exactly one party does); `scope` names that set for
    both parties (e.g. L's pushed-down SQL and key columns): epochs are kept per (peer, scope)."""
    return join_from(endpoint, peer, tag, _intersect(endpoint, peer, tag, encoded, large, JOIN, cache, workers,
                                                      scope), left)


def unbalanced_membership(endpoint: Endpoint, peer: str, tag: str, encoded: Keys, large: bool,
                          cache: PsiCache, workers: GroupWorkers | None = None, scope: str = "") -> np.ndarray:
    """Unbalanced PSI semi-join: for each of my rows, whether its key is also the peer's (no counts cross)."""
    return membership_of(_intersect(endpoint, peer, tag, encoded, large, MEMBERSHIP, cache, workers, scope))
