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
     seed, to the one party that needs it (the last party, or the permuter of a shuffle).

Seed compression: party i's shares of request r are `Prg(s_i).words(r, ...)`; the dealer computes
the same words, so only the correcting component moves. What moves per element:

  kind            seeded (every party)                      correction (8 B words, to whom)
  arith_triple    a_i, b_i; c_i for i < last                c_last = a*b - sum_{i<last} c_i (1, last)
  bool_triple     same with XOR/AND                         1 word, last
  matrix_triple   A_i (m x k), B_i (k x n); C_i for i<last  C_last (m x n), last
  trunc_pair      r_i; r_msb_i, r_mid_i for i < last        r_msb_last, r_mid_last (2, last)
  dabit           boolean bit rb_i; arith ra_i for i<last   ra_last (1, last)
  shuffle(j)      pi_j (party j); A_i, B_i (i != j)         Delta_j = pi_j(sum A_i) - sum B_i (1, j)

Security: each correction is one party's share of a fresh random secret, uniform given that
party's own seeded words, so a party learns nothing; the dealer learns only the public request
sizes. Assumes the dealer does not collude with a compute party (the model of SEMI2K + TTP).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from sqlsecure.errors import ProtocolError
from sqlsecure.executors.channel import Endpoint
from sqlsecure.executors.spu.prg import Prg, fresh_seed

DEALER = "dealer"
SEED_TAG = "spu/seed"
REQUEST_TAG = "spu/request"
MSB = np.uint64(63)
LOW63 = np.uint64((1 << 63) - 1)
ONE = np.uint64(1)


def correction_tag(rid: int) -> str:
    return f"spu/rand/{rid}"


@dataclass(frozen=True)
class RandomnessRequest:
    """One request to the dealer: its id, kind and public sizes."""

    rid: int
    kind: str
    sizes: tuple[int, ...] = ()

    def to_bytes(self) -> bytes:
        return json.dumps([self.rid, self.kind, list(self.sizes)], separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes, frm: str = "party") -> "RandomnessRequest":
        try:
            rid, kind, sizes = json.loads(data)
            return cls(int(rid), str(kind), tuple(int(s) for s in sizes))
        except (ValueError, TypeError) as exc:
            raise ProtocolError(f"malformed randomness request from {frm!r}: {exc}") from None


def _split(words: np.ndarray, *sizes: int) -> list[np.ndarray]:
    out, at = [], 0
    for s in sizes:
        out.append(words[at:at + s])
        at += s
    return out


# --- layouts: which seeded words party `index` of `nparties` derives for a request ----------------
# Shared by the dealer and the client, so both sides always agree.

def seeded_triple(prg: Prg, rid: int, index: int, nparties: int, sa: int, sb: int, sc: int):
    """(a_i, b_i, c_i or None for the last party) as flat arrays."""
    last = index == nparties - 1
    words = prg.words(rid, sa + sb + (0 if last else sc))
    a, b, c = _split(words, sa, sb, sc)
    return a, b, (None if last else c)


def seeded_trunc(prg: Prg, rid: int, index: int, nparties: int, n: int):
    last = index == nparties - 1
    words = prg.words(rid, n if last else 3 * n)
    r, msb, mid = _split(words, n, n, n)
    return r, (None if last else msb), (None if last else mid)


def seeded_dabit(prg: Prg, rid: int, index: int, nparties: int, n: int):
    last = index == nparties - 1
    words = prg.words(rid, n if last else 2 * n)
    rb, ra = _split(words, n, n)
    return rb & ONE, (None if last else ra)


def seeded_shuffle(prg: Prg, rid: int, index: int, permuter: int, rows: int, cols: int):
    """The permuter's permutation, or another party's (A_i, B_i) masks as (rows, cols) arrays."""
    if index == permuter:
        return prg.permutation(rid, rows)
    words = prg.words(rid, 2 * rows * cols)
    return words[:rows * cols].reshape(rows, cols), words[rows * cols:].reshape(rows, cols)


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
        n, last, rid = len(self.parties), len(self.parties) - 1, request.rid
        kind, sizes = request.kind, request.sizes
        if kind in ("arith_triple", "bool_triple", "matrix_triple"):
            if kind == "matrix_triple":
                m, k, p = sizes
                sa, sb, sc = m * k, k * p, m * p
            else:
                sa = sb = sc = sizes[0]
            parts = [seeded_triple(prg, rid, i, n, sa, sb, sc) for i, prg in enumerate(self.prgs)]
            if kind == "bool_triple":
                a = np.bitwise_xor.reduce([p[0] for p in parts])
                b = np.bitwise_xor.reduce([p[1] for p in parts])
                others = np.bitwise_xor.reduce([p[2] for p in parts[:last]])
                return last, (a & b) ^ others
            a = np.sum([p[0] for p in parts], axis=0, dtype=np.uint64)
            b = np.sum([p[1] for p in parts], axis=0, dtype=np.uint64)
            c = (a * b) if kind == "arith_triple" else np.matmul(a.reshape(m, k), b.reshape(k, p)).ravel()
            return last, c - np.sum([p[2] for p in parts[:last]], axis=0, dtype=np.uint64)
        if kind == "trunc_pair":
            count, bits = sizes
            parts = [seeded_trunc(prg, rid, i, n, count) for i, prg in enumerate(self.prgs)]
            r = np.sum([p[0] for p in parts], axis=0, dtype=np.uint64)
            msb = (r >> MSB) - np.sum([p[1] for p in parts[:last]], axis=0, dtype=np.uint64)
            mid = ((r & LOW63) >> np.uint64(bits)) - np.sum([p[2] for p in parts[:last]], axis=0, dtype=np.uint64)
            return last, np.concatenate([msb, mid])
        if kind == "dabit":
            count = sizes[0]
            parts = [seeded_dabit(prg, rid, i, n, count) for i, prg in enumerate(self.prgs)]
            bit = np.bitwise_xor.reduce([p[0] for p in parts])
            return last, bit - np.sum([p[1] for p in parts[:last]], axis=0, dtype=np.uint64)
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
        raise ProtocolError(f"unknown randomness request kind {kind!r} from {self.requester!r}")


class DealerClient:
    """A compute party's handle to the dealer: returns this party's share of each request."""

    def __init__(self, endpoint: Endpoint, parties: list[str], index: int, dealer: str = DEALER,
                 timeout: float | None = None):
        self.endpoint = endpoint
        self.parties = parties
        self.index = index
        self.dealer = dealer
        self.timeout = timeout
        self.prg: Prg | None = None
        self.next_rid = 0

    @property
    def nparties(self) -> int:
        return len(self.parties)

    @property
    def is_last(self) -> bool:
        return self.index == self.nparties - 1

    def setup(self) -> None:
        self.prg = Prg(self.endpoint.recv(self.dealer, SEED_TAG, self.timeout))

    def _request(self, kind: str, *sizes: int) -> int:
        if self.prg is None:
            raise ProtocolError("SPU session used before setup() received the dealer's seed")
        rid = self.next_rid
        self.next_rid += 1
        if self.is_last:
            self.endpoint.send(self.dealer, REQUEST_TAG, RandomnessRequest(rid, kind, sizes).to_bytes())
        return rid

    def _correction(self, rid: int, count: int) -> np.ndarray:
        raw = self.endpoint.recv(self.dealer, correction_tag(rid), self.timeout)
        if len(raw) != 8 * count:
            raise ProtocolError(f"dealer sent {len(raw)} bytes for request {rid}, expected {8 * count}")
        return np.frombuffer(raw, dtype=np.uint64).copy()

    def close(self) -> None:
        """The last party tells the dealer the session is over."""
        if self.is_last and self.prg is not None:
            self.endpoint.send(self.dealer, REQUEST_TAG, RandomnessRequest(self.next_rid, "close").to_bytes())

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
        rid = self._request(kind, *sizes)
        a, b, c = seeded_triple(self.prg, rid, self.index, self.nparties, sa, sb, sc)
        if c is None:
            c = self._correction(rid, sc)
        return a, b, c

    def trunc_pair(self, n: int, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Shares of r (uniform in Z_2^64), r_msb = r >> 63 and r_mid = (r mod 2^63) >> bits."""
        rid = self._request("trunc_pair", n, bits)
        r, msb, mid = seeded_trunc(self.prg, rid, self.index, self.nparties, n)
        if msb is None:
            msb, mid = _split(self._correction(rid, 2 * n), n, n)
        return r, msb, mid

    def dabit(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """A random bit r in two forms: XOR share (0/1 words) and additive share."""
        rid = self._request("dabit", n)
        rb, ra = seeded_dabit(self.prg, rid, self.index, self.nparties, n)
        if ra is None:
            ra = self._correction(rid, n)
        return rb, ra

    def shuffle(self, permuter: int, rows: int, cols: int):
        """Permuter: (pi, Delta); others: (A_i, B_i). See the module docstring."""
        rid = self._request("shuffle", permuter, rows, cols)
        got = seeded_shuffle(self.prg, rid, self.index, permuter, rows, cols)
        if self.index == permuter:
            return got, self._correction(rid, rows * cols).reshape(rows, cols)
        return got
