"""HE group sums: per-group SUM (and COUNT, AVG) of one party's values by another party's labels.

Party B (value owner, key owner) holds numeric columns, party A (label owner) group labels for the
same rows, aligned (as after a PSI join). Both call their side with the same public `HEParams`.

Rounds (Paillier additive homomorphism, as in the HEU device of SecretFlow; cf. Ion et al.,
"On Deploying Secure Computing: Private Intersection-Sum-with-Cardinality", EuroS&P 2020, whose
second phase is this homomorphic sum):
  0. groups (A -> B): the number of groups G (B learns it in round 2 anyway).
  1. key, ciphertexts (B -> A): B makes a fresh key pair (`paillier.generate_keypair`) and picks the
     packing plan (`packing.choose_packing`, from the public rows, G, columns and key size): R rows
     per ciphertext, their columns side by side in slots (`packing.SlotLayout`: value bits, headroom
     for N = row count terms, mask bits). It sends the public key, layout and plan, then, in
     batches of about `batch_rows` rows, ceil(rows / R) ciphertexts per chunk of columns, encrypted
     with the CRT encryptor on the worker processes (`workers.HEWorkers`).
  2. masked sums (A -> B): A multiplies each ciphertext into the accumulator (group, position) of
     each of its R rows -- one multiplication per row -- so slot block j of accumulator (g, j) holds
     the sums of group g's rows at position j (other blocks: sums of their neighbours). It packs
     accumulators into returned ciphertexts (shifting by whole slot spans) when the plan merges,
     adds a fresh uniform mask r on [0, 2^(b+h+sigma)) to EVERY slot, and multiplies in a fresh
     randomiser h_s^a' (`paillier.Randomizer`: randomness uniform on <h_s>, statistically).
  3. (local) B decrypts (mod p^2 alone when the packed sums fit below p) and adds up, per group and
     column, the blocks of its R positions: its share is y = sum + N_g * 2^(b-1) + sum_j r_j; A's
     share is -sum_j r_j - N_g * 2^(b-1). The shares add up to the sum over the integers.
Optional reveal (`reveal_group_sums`): one party sends its shares (and A its counts) to the other.

COUNT needs no HE: A knows its own group sizes. AVG = SUM / COUNT, computed after the reveal.

What each party learns (semi-honest): A learns nothing about B's values (ciphertexts are
semantically secure under DCR, see `paillier.py`), only the public sizes (rows, columns, layout,
plan). B learns the number of groups G and nothing else: each slot it decrypts is a masked sum
(of a group's values, or of neighbouring rows' values), within statistical distance 2^-sigma of
independent of it (so at most G * R * slots * 2^-sigma overall), and the randomiser makes the
returned ciphertext's randomness uniform on <h_s> (within 2^-128), independent of which rows went
into which group -- B could otherwise test that with the randomness it chose.

Communication: 1 + ceil(rows / batch) messages B -> A (batch = batch_rows rounded down to a
multiple of R), carrying ceil(rows / R) * chunks ciphertexts of 2|n|/8 bytes; 2 messages A -> B
(G, and the len(result_plan) returned ciphertexts). Round 0 crosses while B makes its key, so the
latency is still that of 2 rounds.
"""

from __future__ import annotations

import decimal
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pyarrow as pa
from gmpy2 import mpz

from sqlsecure.errors import DataError, ProtocolError
from sqlsecure.executors.runtime.channel import Endpoint
from sqlsecure.executors.heu.messages import CiphertextBatch, GroupCount, KeyMessage, MaskedSums, ShareMessage
from sqlsecure.executors.heu.packing import MASK_BITS, PackingPlan, SlotLayout, choose_packing, unpack
from sqlsecure.executors.heu.paillier import (
    DEFAULT_KEY_BITS,
    ciphertexts_from_blob,
    ciphertexts_to_blob,
    generate_keypair,
    mask_and_randomize,
    shift_left,
)
from sqlsecure.executors.heu.workers import HEWorkers


@dataclass(frozen=True)
class HEParams:
    """Public parameters both parties agree on (from the plan)."""

    key_bits: int = DEFAULT_KEY_BITS  # 2048 or 3072; 1024 only in tests
    value_bits: int = 64               # signed width of every input value
    mask_bits: int = MASK_BITS         # statistical security of the masks
    batch_rows: int = 8192             # rows per ciphertext message (rounded down to whole ciphertexts)


@dataclass
class GroupSumShare:
    """One party's additive shares of the per-group sums: shares[column][group].

    B (values) holds sum + N_g 2^(b-1) + r, A (labels) holds -r - N_g 2^(b-1), r the sum of the masks
    of the group's accumulators; `counts` (the group sizes) are A's, None at B.
    """

    shares: list[list[int]]
    layout: SlotLayout
    counts: np.ndarray | None = None

    @property
    def groups(self) -> int:
        return len(self.shares[0]) if self.shares else 0

    def ring64(self) -> np.ndarray:
        """The shares modulo 2^64 (uint64, [column][group]), as the SPU holds them.

        Refused unless every possible sum fits a signed 64-bit integer (value_bits + headroom <= 64):
        otherwise the ring would wrap it silently.
        """
        if self.layout.sum_bits > 64:
            raise DataError(f"sums of up to {self.layout.max_terms} values of {self.layout.value_bits} "
                            f"bits need {self.layout.sum_bits} bits and could wrap modulo 2^64; "
                            f"declare fewer value bits or keep integer shares")
        mask = (1 << 64) - 1
        return np.array([[v & mask for v in col] for col in self.shares], dtype=np.uint64
                        ).reshape(len(self.shares), self.groups)


@dataclass
class GroupSums:
    """Revealed per-group COUNT and SUMs (integers; fixed-point columns scaled by 2^F)."""

    counts: np.ndarray
    sums: list[list[int]] = field(default_factory=list)

    def avg(self, column: int, frac_bits: int = 0) -> list[float | None]:
        scale = 1 << frac_bits
        return [None if n == 0 else s / n / scale for s, n in zip(self.sums[column], self.counts.tolist())]

    def to_arrow(self, frac_bits: Sequence[int] | None = None) -> pa.Table:
        """group (code), count, sum_i and avg_i per value column; sums as int64, or decimal128 when
        an integer sum exceeds int64, or float64 for fixed-point columns."""
        frac_bits = list(frac_bits or [0] * len(self.sums))
        data = {"group": pa.array(np.arange(len(self.counts)), pa.int64()),
                "count": pa.array(self.counts, pa.int64())}
        for c, col in enumerate(self.sums):
            if frac_bits[c]:
                data[f"sum_{c}"] = pa.array([v / (1 << frac_bits[c]) for v in col], pa.float64())
            elif all(-(1 << 63) <= v < (1 << 63) for v in col):
                data[f"sum_{c}"] = pa.array(col, pa.int64())
            else:
                data[f"sum_{c}"] = pa.array([decimal.Decimal(v) for v in col],
                                            pa.decimal128(38, 0))
            data[f"avg_{c}"] = pa.array(self.avg(c, frac_bits[c]), pa.float64())
        return pa.table(data)


def group_codes(labels) -> tuple[pa.Array, np.ndarray]:
    """(distinct labels, code per row in [0, G)); NULL labels form one group, as in SQL GROUP BY."""
    encoded = pa.chunked_array([pa.array(labels)]).combine_chunks().dictionary_encode(null_encoding="encode")
    return encoded.dictionary, encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def group_sum_reference(codes: np.ndarray, num_groups: int, columns: Sequence[np.ndarray]) -> GroupSums:
    """Plaintext reference: exact integer sums per group."""
    codes = np.asarray(codes, dtype=np.int64)
    sums = []
    for col in columns:
        acc = [0] * num_groups
        for g, v in zip(codes.tolist(), np.asarray(col).tolist()):
            acc[g] += int(v)
        sums.append(acc)
    return GroupSums(np.bincount(codes, minlength=num_groups).astype(np.int64), sums)


def _random_below(limit_bits: int, count: int) -> list[int]:
    nbytes = -(-limit_bits // 8)
    raw = os.urandom(nbytes * count)
    mask = (1 << limit_bits) - 1
    return [int.from_bytes(raw[i * nbytes:(i + 1) * nbytes], "little") & mask for i in range(count)]


def _plaintext_bits(entries, slot_bits: int) -> int:
    return sum(e.span for e in entries) * slot_bits


def he_group_sum_values(endpoint: Endpoint, peer: str, tag: str, columns: Sequence[np.ndarray],
                        params: HEParams = HEParams(), workers: HEWorkers | None = None) -> GroupSumShare:
    """Party B's side: encrypt `columns` (aligned integer arrays) under a fresh key; return B's shares."""
    if not columns:
        raise DataError("he_group_sum needs at least one value column")
    rows = len(columns[0])
    if any(len(c) != rows for c in columns):
        raise DataError("value columns of an HE group sum must have the same length")
    layout = SlotLayout(params.value_bits, max(1, rows), params.mask_bits)
    encoded = [layout.encode(c) for c in columns]  # range check before anything is sent
    public, private = generate_keypair(params.key_bits)
    groups = GroupCount.from_bytes(endpoint.recv(peer, f"{tag}/groups"), peer).groups
    W = layout.slot_bits
    local = workers or HEWorkers(1)
    plan = choose_packing(rows, groups, len(columns), layout.slots(public.n_bits), W, public.n_bits, local.processes)
    R, chunks = plan.rows_per_ciphertext, plan.chunks
    width = public.ciphertext_bytes
    endpoint.send(peer, f"{tag}/key", KeyMessage(public, layout, rows, len(columns), R, plan.merge).to_bytes())

    step = max(R, params.batch_rows // R * R)
    starts = range(0, rows, step)
    # one stream of row batches; each batch's plaintexts are its chunks' plaintexts back to back
    batches = ([p for part in plan.pack_rows([e[s:s + step] for e in encoded], W) for p in part] for s in starts)
    stream = local.encrypt_stream(private, batches, plan.ciphertexts(rows) * len(chunks))
    for s in starts:
        blob, size = next(stream), width * plan.ciphertexts(len(range(s, min(rows, s + step))))
        pieces = [blob[i * size:(i + 1) * size] for i in range(len(chunks))]
        endpoint.send(peer, f"{tag}/ct", CiphertextBatch(pieces).to_bytes(width))

    masked = MaskedSums.from_bytes(endpoint.recv(peer, f"{tag}/masked"), width, peer)
    if masked.groups != groups:
        raise ProtocolError(f"{peer} returned sums for {masked.groups} groups, announced {groups}")
    result = plan.result_plan(groups)
    cts = ciphertexts_from_blob(masked.ciphertexts, public, peer)
    if len(cts) != len(result):
        raise ProtocolError(f"{peer} returned {len(cts)} sum ciphertexts for {groups} groups, "
                            f"expected {len(result)}")
    bits = max((_plaintext_bits(entries, W) for entries in result), default=0)
    plaintexts = local.decrypt(private, cts, bits)
    shares = [[0] * groups for _ in columns]
    for plaintext, entries in zip(plaintexts, result):
        slots = unpack(plaintext, sum(e.span for e in entries), W)
        pos = 0
        for e in entries:
            base = pos + e.position * e.width
            for t in range(e.width):
                shares[e.first + t][e.group] += slots[base + t]
            pos += e.span
    return GroupSumShare(shares, layout)


def he_group_sum_labels(endpoint: Endpoint, peer: str, tag: str, codes: np.ndarray | None,
                        num_groups: int, params: HEParams = HEParams(),
                        workers: HEWorkers | None = None) -> GroupSumShare:
    """Party A's side: sum B's ciphertexts by `codes` (group of each row, in [0, num_groups)).

    `codes=None` sums all rows into one group (`he_sum`). Returns A's shares and its group counts.
    `workers` compute the randomisers of the returned ciphertexts (while the ciphertexts arrive).
    """
    if codes is None:
        num_groups = 1
    endpoint.send(peer, f"{tag}/groups", GroupCount(num_groups).to_bytes())
    header = KeyMessage.from_bytes(endpoint.recv(peer, f"{tag}/key"), peer)
    public, layout = header.public_key, header.layout
    if public.n_bits != params.key_bits:
        raise ProtocolError(f"{peer} sent a {public.n_bits}-bit key, the plan requires {params.key_bits}")
    if layout.value_bits != params.value_bits or layout.mask_bits < params.mask_bits:
        raise ProtocolError(f"{peer} proposed a slot layout {layout} that does not match the plan")
    rows = header.rows
    if codes is None:
        codes = np.zeros(rows, dtype=np.int64)
    codes = np.asarray(codes, dtype=np.int64)
    if len(codes) != rows:
        raise ProtocolError(f"{peer} has {rows} rows, this party {len(codes)} labels: not aligned")
    if rows and (codes.min() < 0 or codes.max() >= num_groups):
        raise DataError(f"group codes must be in [0, {num_groups})")
    counts = np.bincount(codes, minlength=num_groups).astype(np.int64)
    if rows:
        # every slot of an accumulator (group g, position j) sums at most N_g terms
        layout.check_terms(int(counts.max()))
    k = layout.slots(public.n_bits)
    try:
        plan = PackingPlan(header.columns, k, header.rows_per_ciphertext, header.merge)
    except DataError as exc:
        raise ProtocolError(f"{peer} proposed an invalid packing: {exc}") from None
    R, chunks = plan.rows_per_ciphertext, plan.chunks
    result = plan.result_plan(num_groups)
    factors = (workers or HEWorkers(1)).factors_later(public, len(result))
    width, n2 = public.ciphertext_bytes, mpz(public.nsquare)

    # accumulator index of each row, for chunk 0 (chunk c adds c)
    index = ((codes * R + np.arange(rows, dtype=np.int64) % R) * len(chunks)).tolist()
    acc = [mpz(1)] * plan.accumulators(num_groups)  # 1 = Enc(0) with trivial randomness
    step = max(R, params.batch_rows // R * R)
    for start in range(0, rows, step):
        batch = CiphertextBatch.from_bytes(endpoint.recv(peer, f"{tag}/ct"), len(chunks), width, peer)
        stop = min(rows, start + step)
        expected = plan.ciphertexts(stop - start)
        for c, blob in enumerate(batch.chunks):
            cts = ciphertexts_from_blob(blob, public, peer)
            if len(cts) != expected:
                raise ProtocolError(f"{peer} sent {len(cts)} ciphertexts for {stop - start} rows, expected {expected}")
            row = start
            for ct in cts:
                for i in index[row:min(stop, row + R)]:
                    i += c
                    acc[i] = acc[i] * ct % n2
                row += R

    W = layout.slot_bits
    out, shares = [], [[0] * num_groups for _ in range(header.columns)]
    for entries, factor in zip(result, factors.result()):
        # Horner: P = a_0 + 2^(span_0 W) (a_1 + 2^(span_1 W) (a_2 + ...)), a_e an accumulator
        last = entries[-1]
        c = acc[plan.accumulator(last.group, last.position, last.chunk)]
        for e in reversed(entries[:-1]):
            c = shift_left(public, c, e.span * W) * acc[plan.accumulator(e.group, e.position, e.chunk)] % n2
        used = sum(e.span for e in entries)
        masks = _random_below(layout.sum_bits + layout.mask_bits, used)  # every slot, sums and neighbours
        mask = 0
        for r in reversed(masks):
            mask = (mask << W) | r
        out.append(mask_and_randomize(public, c, mask, factor))
        pos = 0
        for e in entries:
            base = pos + e.position * e.width
            for t in range(e.width):
                shares[e.first + t][e.group] -= masks[base + t]
            pos += e.span
    for col in shares:
        for g in range(num_groups):
            col[g] -= int(counts[g]) * layout.offset
    endpoint.send(peer, f"{tag}/masked", MaskedSums(num_groups, ciphertexts_to_blob(out, width)).to_bytes(width))
    return GroupSumShare(shares, layout, counts)


def he_sum_values(endpoint: Endpoint, peer: str, tag: str, columns: Sequence[np.ndarray],
                  params: HEParams = HEParams(), workers: HEWorkers | None = None) -> GroupSumShare:
    """Party B's side of an ungrouped HE sum (the label owner's side is `he_sum_labels`)."""
    return he_group_sum_values(endpoint, peer, tag, columns, params, workers)


def he_sum_labels(endpoint: Endpoint, peer: str, tag: str, params: HEParams = HEParams(),
                  workers: HEWorkers | None = None) -> GroupSumShare:
    """Party A's side of an ungrouped HE sum: every row in one group."""
    return he_group_sum_labels(endpoint, peer, tag, None, 1, params, workers)


def reveal_group_sums(endpoint: Endpoint, peer: str, tag: str, share: GroupSumShare,
                      to: str) -> GroupSums | None:
    """Send my shares to `to` (if it is the peer) or receive the peer's and open the sums."""
    if to == endpoint.party:
        other = ShareMessage.from_bytes(endpoint.recv(peer, f"{tag}/reveal"), peer)
        counts = share.counts if share.counts is not None else other.counts
        if counts is None or len(other.shares) != len(share.shares) or \
                any(len(a) != len(b) for a, b in zip(other.shares, share.shares)):
            raise ProtocolError(f"{peer} sent shares that do not match this party's")
        sums = [[a + b for a, b in zip(mine, theirs)] for mine, theirs in zip(share.shares, other.shares)]
        return GroupSums(np.asarray(counts, dtype=np.int64), sums)
    if to != peer:
        raise ProtocolError(f"cannot reveal to {to!r}: the group sum runs between {endpoint.party!r} and {peer!r}")
    counts = share.counts.tolist() if share.counts is not None else None
    endpoint.send(peer, f"{tag}/reveal", ShareMessage(share.shares, counts).to_bytes())
    return None
