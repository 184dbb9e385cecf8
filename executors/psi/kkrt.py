"""OT-based PSI (KKRT16): a drop-in alternative to the ECDH-PSI of `ecdh.py`, with the same contract.

Kolesnikov, Kumaresan, Rosulek, Trieu, "Efficient Batched Oblivious PRF with Applications to Private
Set Intersection", CCS 2016. The party with more distinct keys is the OPRF receiver R (ties: the
smaller party name), the other the sender S. `kkrt_join_indices` and `kkrt_membership` return
exactly what `psi_join_indices` and `psi_membership` return: my row indices of the inner join in
one order both parties agree on, resp. whether each of my rows' keys is also the peer's.

Rounds (`ot.py` has the OT layers):
  1. hello (both ways, one message each, sent at once): a fresh 16-byte seed, from which with the
     peer's the run's public AES keys (input MAC, cuckoo hashing, code, hashes) are derived with
     SHA-256; the number of distinct keys; and the base OTs' first message A = g^a. The roles
     follow from the sizes, so both parties send an A: S's starts its base OTs, R's (a fresh
     random group element) is discarded. One leg where seed, size and A took three.
  2. base OTs and their IKNP extension (R -> S, S -> R): R gets 512 seed pairs, S a secret
     s ∈ {0,1}^512 and one seed of each pair.
  3. corrections (R -> S, in chunks of 2^16 instances): R cuckoo-hashes its keys into m bins with 3
     hash functions, no stash; bin b holding key x placed by hash function i is the OPRF instance
     with input x‖i (empty bins: codeword 0). R keeps F_b(x‖i) = H(b, i, t0_b).
  4. values (S -> R): for each of its keys y, in a fresh random order, and each i, S sends
     F_(h_i(y))(y‖i), truncated to ℓ = ⌈(λ + log2(n_R · n_S)) / 8⌉ bytes. R compares each of its
     values with S's values for the same hash function only (n_R · n_S comparisons), so a false
     match has probability ≤ 2^-λ.
  5. matched (R -> S): the positions, in S's random order, of S's values that matched, ascending.
     That order is the common order of the intersection keys: S chose it at random, so it says
     nothing about either party's keys.
  6. counts (both ways, join only): each party's row count per common key, as in `ecdh.py`.
Both parties' work is numpy and AES (`cryptography`), which release the GIL, so the two party
threads of the embedded runtime overlap; the corrections stream, so memory stays bounded by the
chunk, plus O(n) arrays of 16-byte blocks.

Parameters:
  - computational security κ = 128: AES-128 throughout, base OTs in ffdhe3072, and a pseudorandom
    code of width k = 512 bits (four AES blocks) whose minimum distance stays ≥ κ except with
    probability ≤ 2^-40 (see `ot.py`);
  - statistical security λ = 40;
  - OPRF outputs of ℓ = ⌈(λ + log2(n_R · n_S)) / 8⌉ bytes, so the n_R · n_S comparisons give a false
    match with probability ≤ 2^-λ;
  - cuckoo hashing with 3 hash functions and no stash into m = ε · max(n_R, 200) bins (rounded up to
    a multiple of 64), ε = (λ − b_n) / a_n from the stash-less fit of Pinkas, Schneider, Weinert,
    Wieder ("Efficient Circuit-based PSI via Cuckoo Hashing", EUROCRYPT 2018) as implemented by
    cryptoTools' `CuckooIndex::selectParams`: ε ≈ 1.48 at 2^12 keys, 1.54 at 10^6, for an insertion
    failure ≤ 2^-λ. A failure raises ProtocolError (and tells S one bit about R's set);
  - keys compressed to 128 bits by CBC-MAC of (length ‖ key), which is prefix-free, under a key
    chosen after the inputs are fixed: distinct keys collide with probability ~2^-128 per pair.
    Rows are grouped by that MAC.

Leakage (semi-honest), the same as the ECDH path: each party learns the other's number of distinct
keys, which of its own keys are in the intersection, and (join only) the other's multiplicity of
each intersection key. R sees only pseudorandom values for S's other keys; S sees only
PRG-masked corrections, and then the positions of its own matching keys.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from sqlsecure.errors import ProtocolError
from sqlsecure.executors.runtime.channel import Endpoint
from sqlsecure.executors.psi.ot import (
    BLOCK, CHUNK_ROWS, CODE_BYTES, ELEMENT, AesBlocks, PseudorandomCode, base_ot_first, kkrt_base_receive,
    kkrt_base_send, kkrt_extend_receive, kkrt_extend_send, pack_bits, row_hash, tweak_blocks,
)
from sqlsecure.executors.psi.ecdh import Intersection, join_from, membership_of, random_permutation
from sqlsecure.executors.psi.encoding import Keys, distinct_encoded, per_row

LAMBDA = 40
HASHES = 3
MIN_TABLE_KEYS = 200  # cuckoo tables are sized for at least this many keys
MAX_KEYS = 1 << 32  # positions in the "matched" message are 32-bit
MAX_CUCKOO_ROUNDS = 10_000
MAC_CHUNK = 1 << 16  # keys per CBC-MAC batch, which bounds its temporary arrays
SESSION_DOMAIN = b"sqlsecure/psi/kkrt16/v1\x00"
HELLO_BYTES = BLOCK + 8 + ELEMENT  # seed, number of distinct keys, base-OT message a


@dataclass(frozen=True)
class SessionKeys:
    """The public AES keys of one run, derived from both parties' seeds."""

    code: PseudorandomCode
    cuckoo: AesBlocks
    mac: AesBlocks
    rows: AesBlocks
    iknp: AesBlocks

    @classmethod
    def derive(cls, first_seed: bytes, second_seed: bytes) -> "SessionKeys":
        """From the seeds of the parties in name order."""
        def key(label: bytes) -> bytes:
            return hashlib.sha256(SESSION_DOMAIN + label + first_seed + second_seed).digest()[:BLOCK]

        return cls(code=PseudorandomCode([key(b"code%d" % q) for q in range(CODE_BYTES // BLOCK)]),
                   cuckoo=AesBlocks(key(b"cuckoo")), mac=AesBlocks(key(b"mac")),
                   rows=AesBlocks(key(b"row-hash")), iknp=AesBlocks(key(b"iknp-hash")))


# --- inputs ---------------------------------------------------------------------------------------

def key_bytes(encoded: list[bytes | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(which rows are not NULL, all keys' bytes, each non-NULL key's start and length in them)."""
    keys = pa.array(encoded, type=pa.large_binary())
    present = keys.is_valid().to_numpy(zero_copy_only=False)
    offsets = np.frombuffer(keys.buffers()[1], dtype=np.int64)[keys.offset:keys.offset + len(keys) + 1]
    data = keys.buffers()[2]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)
    return present, data, offsets[:-1][present], np.diff(offsets)[present]


def cbc_mac(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, mac: AesBlocks) -> np.ndarray:
    """Each key data[start:start + length] as a 128-bit block: CBC-MAC of (le64 length ‖ key), which
    is prefix-free, so CBC-MAC is a PRF of it (Bellare, Kilian, Rogaway 2000).

    Keys of the same number of blocks are MACed together, gathered as rows of a sliding window."""
    out = np.empty((len(lengths), BLOCK), dtype=np.uint8)
    if not len(lengths):
        return out
    blocks = (lengths + 8 + BLOCK - 1) // BLOCK  # 8-byte length prefix, then the key, zero-padded
    source = np.concatenate([data, np.zeros(int(blocks.max()) * BLOCK, dtype=np.uint8)])
    for count in np.unique(blocks).tolist():
        width = count * BLOCK - 8
        windows = np.lib.stride_tricks.sliding_window_view(source, width)
        same = np.flatnonzero(blocks == count)
        for lo in range(0, len(same), MAC_CHUNK):
            keys = same[lo:lo + MAC_CHUNK]
            message = np.empty((len(keys), count * BLOCK), dtype=np.uint8)
            message[:, :8] = lengths[keys].astype("<u8").view(np.uint8).reshape(-1, 8)
            body = message[:, 8:]
            body[...] = windows[starts[keys]]
            body *= np.arange(width) < lengths[keys][:, None]  # zero the bytes past each key
            state = np.zeros((len(keys), BLOCK), dtype=np.uint8)
            for b in range(count):
                state = mac(state ^ message[:, b * BLOCK:(b + 1) * BLOCK])
            out[keys] = state
    return out


def distinct_keys(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(per key: the index of its distinct value, one representative key per distinct value)."""
    words = blocks.view("<u8").reshape(-1, 2)
    order = np.argsort(words[:, 0])
    ordered = np.take(words, order, axis=0)
    if np.any((ordered[1:, 0] == ordered[:-1, 0]) & (ordered[1:, 1] != ordered[:-1, 1])):
        order = np.lexsort((words[:, 1], words[:, 0]))  # two values share a first word (~2^-25 at 10^6)
        ordered = words[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = np.any(ordered[1:] != ordered[:-1], axis=1)
    ids = np.empty(len(order), dtype=np.int64)
    ids[order] = np.cumsum(new) - 1
    return ids, order[new]


def oprf_inputs(blocks: np.ndarray, hash_index: np.ndarray) -> np.ndarray:
    """x‖i: the key's block with its last two bits replaced by the hash function's index."""
    inputs = np.array(blocks, dtype=np.uint8, copy=True)
    inputs[:, -1] = (inputs[:, -1] & 0xFC) | np.asarray(hash_index, dtype=np.uint8)
    return inputs


def value_bytes(receiver_keys: int, sender_keys: int) -> int:
    """ℓ in bytes: λ + log2(n_R · n_S) bits, so that a false match has probability ≤ 2^-λ."""
    return math.ceil((LAMBDA + math.log2(max(1, receiver_keys * sender_keys))) / 8)


# --- cuckoo hashing -------------------------------------------------------------------------------

def cuckoo_bins(keys: int) -> int:
    """Table size for `keys` items, 3 hash functions, no stash, failure ≤ 2^-λ (PSWW18 fit)."""
    n = max(keys, MIN_TABLE_KEYS)
    nn = math.log2(n)
    a = 123.5 / 2 * (1 + math.erf((nn - 6.3) / (2.3 * math.sqrt(2))))
    b = -130 / 2 * (1 + math.erf((nn - 6.45) / (2.18 * math.sqrt(2)))) - nn
    bins = math.ceil((LAMBDA - b) / a * n)
    return -(-bins // 64) * 64


def candidate_bins(blocks: np.ndarray, cuckoo: AesBlocks, bins: int) -> np.ndarray:
    """(n, 3) candidate bins: three disjoint 40-bit slices of AES_k(x) ⊕ x, each mod `bins`."""
    h = (cuckoo(blocks) ^ blocks).view("<u8").reshape(-1, 2)
    lo, hi = h[:, 0], h[:, 1]
    mask, m = np.uint64((1 << 40) - 1), np.uint64(bins)
    out = np.empty((len(h), HASHES), dtype=np.int32 if bins < 1 << 31 else np.int64)
    out[:, 0] = (lo & mask) % m
    out[:, 1] = ((lo >> np.uint64(40)) | ((hi & np.uint64(0xFFFF)) << np.uint64(24))) % m
    out[:, 2] = ((hi >> np.uint64(16)) & mask) % m
    return out


def cuckoo_insert(candidates: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Place every item in one of its candidate bins: (item per bin or -1, hash index per bin).

    Parallel random-walk insertion: each round, every unplaced item takes a free candidate bin if
    it has one, else evicts the occupant of a candidate; one writer wins each bin; evicted items
    retry with a random other hash function."""
    n = len(candidates)
    slot = np.full(bins, -1, dtype=np.int64)
    used = np.zeros(n, dtype=np.int8)
    attempt = np.zeros(n, dtype=np.int8)
    rng = np.random.default_rng(int.from_bytes(os.urandom(16), "little"))
    everyone = np.arange(n, dtype=np.int64)
    slot[candidates[:, 0]] = everyone  # the first round, into an empty table: all take h_0
    pending = everyone[slot[candidates[:, 0]] != everyone]
    for _ in range(MAX_CUCKOO_ROUNDS):
        if len(pending) == 0:
            break
        options = candidates[pending]
        free = slot[options] < 0
        choice = np.where(free.any(axis=1), free.argmax(axis=1), attempt[pending]).astype(np.int8)
        target = options[np.arange(len(pending)), choice]
        previous = slot[target]
        slot[target] = pending
        won = slot[target] == pending
        used[pending[won]] = choice[won]
        evicted = previous[won]
        evicted = evicted[evicted >= 0]
        attempt[evicted] = (used[evicted] + rng.integers(1, HASHES, len(evicted))) % HASHES
        pending = np.concatenate([evicted, pending[~won]])
    else:
        if len(pending):
            raise ProtocolError(f"cuckoo hashing of {n} keys into {bins} bins failed "
                                f"(probability < 2^-{LAMBDA}); run the query again")
    which = np.zeros(bins, dtype=np.int8)
    which[slot >= 0] = used[slot[slot >= 0]]
    return slot, which


def put_rows(dst: np.ndarray, at: np.ndarray, rows: np.ndarray) -> None:
    """dst[at] = rows for 2-D uint8 arrays, moving each row as one opaque item (far faster than
    numpy's element-wise scatter)."""
    item = np.dtype((np.void, dst.shape[1]))
    dst.view(item).reshape(-1)[at] = np.ascontiguousarray(rows).view(item).reshape(-1)


# --- the batched OPRF -----------------------------------------------------------------------------

def _oprf_receive(endpoint: Endpoint, peer: str, tag: str, blocks: np.ndarray, session: SessionKeys,
                  bins: int, base: bytes) -> tuple[np.ndarray, np.ndarray]:
    """R's side: (its OPRF value per key, the hash function that placed the key)."""
    slot, which = cuckoo_insert(candidate_bins(blocks, session.cuckoo, bins), bins)
    occupied = slot >= 0
    inputs = np.zeros((bins, BLOCK), dtype=np.uint8)
    inputs[occupied] = oprf_inputs(np.take(blocks, slot[occupied], axis=0), which[occupied])

    def codewords(start: int, stop: int) -> np.ndarray:
        rows = np.zeros((stop - start, CODE_BYTES), dtype=np.uint8)
        here = occupied[start:stop]
        rows[here] = session.code.encode(inputs[start:stop][here])
        return rows

    seed_pairs = kkrt_base_send(endpoint, peer, tag, session.iknp, base)
    values = np.zeros((len(blocks), BLOCK), dtype=np.uint8)
    for start, t0 in kkrt_extend_receive(endpoint, peer, tag, seed_pairs, bins, codewords):
        here = np.flatnonzero(occupied[start:start + len(t0)])
        at = start + here
        mine = row_hash(session.rows, tweak_blocks(at, which[at]), np.take(t0, here, axis=0))
        put_rows(values, slot[at], mine)
    used = np.empty(len(blocks), dtype=np.int8)
    used[slot[occupied]] = which[occupied]
    return values, used


def _oprf_send(endpoint: Endpoint, peer: str, tag: str, blocks: np.ndarray, session: SessionKeys,
               bins: int, width: int, first: tuple) -> np.ndarray:
    """S's side: F_(h_i(y))(y‖i) truncated to `width` bytes for each i and each of its keys y,
    shape (3, n_S, width)."""
    n = len(blocks)
    bin_of = candidate_bins(blocks, session.cuckoo, bins).reshape(-1)  # pair 3·y + i
    chunks = -(-bins // CHUNK_ROWS)
    chunk_of = (bin_of // CHUNK_ROWS).astype(np.uint16 if chunks <= 1 << 16 else np.int64)
    by_chunk = np.argsort(chunk_of, kind="stable")  # a radix sort for uint16
    bounds = np.concatenate([[0], np.cumsum(np.bincount(chunk_of, minlength=chunks))])
    del chunk_of
    s, seeds = kkrt_base_receive(endpoint, peer, tag, session.iknp, first)
    s_row = pack_bits(s)
    values = np.empty((HASHES * n, width), dtype=np.uint8)  # row i·n + y
    for c, (start, q) in enumerate(kkrt_extend_send(endpoint, peer, tag, s, seeds, bins)):
        pairs = by_chunk[bounds[c]:bounds[c + 1]]
        key, i = np.divmod(pairs, HASHES)
        at = bin_of[pairs]
        rows = np.take(q, at - start, axis=0)
        rows ^= session.code.encode(oprf_inputs(np.take(blocks, key, axis=0), i)) & s_row
        put_rows(values, i * n + key, row_hash(session.rows, tweak_blocks(at, i), rows)[:, :width])
    return values.reshape(HASHES, n, width)


def _first_words(values: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each value as a uint64 (zero-padded if shorter), for sorting."""
    if values.shape[1] >= 8:
        return np.ascontiguousarray(values[:, :8]).view("<u8").reshape(-1)
    padded = np.zeros((len(values), 8), dtype=np.uint8)
    padded[:, :values.shape[1]] = values
    return padded.view("<u8").reshape(-1)


def equal_values(mine: np.ndarray, theirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (into mine, into theirs) of equal rows of bytes: both sides sorted by their
    first word (so the searches run in order), candidates then compared in full."""
    mine_first, their_first = _first_words(mine), _first_words(theirs)
    my_order, their_order = np.argsort(mine_first), np.argsort(their_first)
    needles, ordered = mine_first[my_order], their_first[their_order]
    lo = np.searchsorted(ordered, needles)
    hit = np.flatnonzero(ordered[np.minimum(lo, len(ordered) - 1)] == needles) if len(ordered) else lo[:0]
    count = np.searchsorted(ordered, needles[hit], side="right") - lo[hit]  # > 1 only if first words collide
    offset = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    mine_at = my_order[np.repeat(hit, count)]
    theirs_at = their_order[np.repeat(lo[hit], count) + offset]
    same = np.all(np.take(mine, mine_at, axis=0) == np.take(theirs, theirs_at, axis=0), axis=1)
    return mine_at[same], theirs_at[same]


# --- the PSI ----------------------------------------------------------------------------------------

def _hello(endpoint: Endpoint, peer: str, tag: str, distinct: int, first: tuple) -> tuple[SessionKeys, int, bytes]:
    """Round 1, one message each way: my seed, my number of distinct keys and my base-OT message a;
    (the run's keys, the peer's number of distinct keys, the peer's message a)."""
    seed = os.urandom(BLOCK)
    endpoint.send(peer, f"{tag}/kkrt/hello", seed + distinct.to_bytes(8, "little") + first[1])
    raw = endpoint.recv(peer, f"{tag}/kkrt/hello")
    if len(raw) != HELLO_BYTES:
        raise ProtocolError(f"{peer} sent a KKRT hello of {len(raw)} bytes, expected {HELLO_BYTES}")
    theirs = int.from_bytes(raw[BLOCK:BLOCK + 8], "little")
    if theirs >= MAX_KEYS:
        raise ProtocolError(f"{peer} announced {theirs} distinct keys; at most {MAX_KEYS - 1} are supported")
    session = SessionKeys.derive(*((seed, raw[:BLOCK]) if endpoint.party < peer else (raw[:BLOCK], seed)))
    return session, theirs, raw[BLOCK + 8:]


def _receive(endpoint: Endpoint, peer: str, tag: str, blocks: np.ndarray, theirs: int,
             session: SessionKeys, base: bytes) -> np.ndarray:
    """R: run the OPRF, find the matches, tell S their positions; my common keys in the common order.
    `base`: S's base-OT message a (from its hello)."""
    values, used = _oprf_receive(endpoint, peer, tag, blocks, session, cuckoo_bins(len(blocks)), base)
    width = value_bytes(len(blocks), theirs)
    raw = endpoint.recv(peer, f"{tag}/kkrt/values")
    if len(raw) != HASHES * theirs * width:
        raise ProtocolError(f"{peer} sent {len(raw)} bytes of OPRF values, "
                            f"expected {HASHES * theirs * width}")
    their_values = np.frombuffer(raw, dtype=np.uint8).reshape(HASHES, theirs, width)
    mine_at, theirs_at = [], []
    for i in range(HASHES):
        candidates = np.flatnonzero(used == i)
        m, t = equal_values(np.take(values, candidates, axis=0)[:, :width], their_values[i])
        mine_at.append(candidates[m])
        theirs_at.append(t)
    mine_at, theirs_at = np.concatenate(mine_at), np.concatenate(theirs_at)
    order = np.argsort(theirs_at, kind="stable")
    mine_at, theirs_at = mine_at[order], theirs_at[order]
    # A key matching twice can only be a false match (probability ≤ 2^-λ): keep the first.
    once = np.ones(len(order), dtype=bool)
    once[1:] = theirs_at[1:] != theirs_at[:-1]
    mine_at, theirs_at = mine_at[once], theirs_at[once]
    first = np.sort(np.unique(mine_at, return_index=True)[1])
    endpoint.send(peer, f"{tag}/kkrt/matched", theirs_at[first].astype("<u4").tobytes())
    return mine_at[first]


def _send(endpoint: Endpoint, peer: str, tag: str, blocks: np.ndarray, theirs: int,
          session: SessionKeys, first: tuple) -> np.ndarray:
    """S: run the OPRF on my keys in a random order; my common keys in the order R sends back.
    `first`: my base-OT message a (exponent, encoding), sent in my hello."""
    order = random_permutation(len(blocks))
    width = value_bytes(theirs, len(blocks))
    shuffled = np.take(blocks, order, axis=0)
    values = _oprf_send(endpoint, peer, tag, shuffled, session, cuckoo_bins(theirs), width, first)
    endpoint.send(peer, f"{tag}/kkrt/values", values.tobytes())
    raw = endpoint.recv(peer, f"{tag}/kkrt/matched")
    if len(raw) % 4:
        raise ProtocolError(f"{peer} sent a malformed list of matches ({len(raw)} bytes)")
    positions = np.frombuffer(raw, dtype="<u4").astype(np.int64)
    if len(positions) and (positions[-1] >= len(blocks) or np.any(np.diff(positions) <= 0)):
        raise ProtocolError(f"{peer} sent match positions that are not ascending positions of my keys")
    return order[positions]


def _distinct_blocks(rows: np.ndarray, distinct: list, mac: AesBlocks) -> tuple[np.ndarray, np.ndarray]:
    """(per row: the index of its distinct key or -1 for NULL, each distinct key's MAC block), from
    `distinct_encoded`'s (rows, distinct keys). Keys are told apart by their MACs: two distinct keys
    with one MAC (probability ~2^-128 per pair) fail the run, since their number was announced."""
    _, data, starts, lengths = key_bytes(distinct)
    blocks = cbc_mac(data, starts, lengths, mac)
    del data
    block_ids, representative = distinct_keys(blocks)
    if len(representative) != len(distinct):
        raise ProtocolError("two distinct join keys have the same 128-bit MAC; run the query again")
    return per_row(rows, block_ids), np.take(blocks, representative, axis=0)


def _intersect(endpoint: Endpoint, peer: str, tag: str, encoded: Keys) -> Intersection:
    rows, distinct = distinct_encoded(encoded)
    first = base_ot_first()  # data-independent: sent now, so the base OTs start one leg after the hello
    session, theirs, their_a = _hello(endpoint, peer, tag, len(distinct), first)
    ids, blocks = _distinct_blocks(rows, distinct, session.mac)
    mine = len(blocks)
    if not mine or not theirs:
        return Intersection(ids, mine, np.zeros(0, dtype=np.int64))
    receiver = (mine, peer) > (theirs, endpoint.party)  # the larger set receives; ties: the smaller name
    if receiver:
        return Intersection(ids, mine, _receive(endpoint, peer, tag, blocks, theirs, session, their_a))
    return Intersection(ids, mine, _send(endpoint, peer, tag, blocks, theirs, session, first))


def kkrt_join_indices(endpoint: Endpoint, peer: str, tag: str, encoded: Keys, left: bool,
                      workers=None) -> np.ndarray:
    """Run the KKRT PSI with `peer`; return my row indices of the join, in the common order.

    `workers` is accepted for drop-in compatibility with `psi_join_indices` and unused: the work is
    AES and numpy in the calling thread, which release the GIL."""
    return join_from(endpoint, peer, tag, _intersect(endpoint, peer, tag, encoded), left)


def kkrt_membership(endpoint: Endpoint, peer: str, tag: str, encoded: Keys,
                    workers=None) -> np.ndarray:
    """Rounds 1-5 only (a semi- or anti-join): for each of my rows, whether its key is also the peer's."""
    return membership_of(_intersect(endpoint, peer, tag, encoded))
