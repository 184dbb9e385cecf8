"""Sealing Arrow batches to the attested enclave, and results from it to their recipient.

Key     per stream: X25519 between a fresh key of the party (for inputs; for results, the
        recipient's fresh key for this query) and the attested enclave key; HKDF-SHA256 with the
        sealer's fresh 16-byte stream id as salt and, as info, the transcript
        (domain, query id, sender, recipient, party public key, enclave public key, SessionSpec
        digest). So a stream opens only for this enclave, this session (program, parties,
        recipient and recipient key) and this direction.
Batch   AES-256-GCM over the Arrow IPC bytes of one record batch (schema included), nonce = the
        batch's sequence number, associated data = (domain, query id, sender, recipient, seq,
        is_last). The opener builds the associated data from the sequence number it *expects*:
        reordering, replay, a batch after the last one, a batch of another stream or session,
        and any altered byte are refused (`SealingError`, a `ProtocolError`), as is a stream
        that ends without its last batch (truncation).

A key encrypts one stream only (fresh party key and fresh stream id), so counter nonces never
repeat under a key.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import pyarrow as pa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sqlsecure.errors import ProgrammingError, ProtocolError
from sqlsecure.executors.tee.attestation import AttestedEnclave
from sqlsecure.executors.tee.program import SIMULATED_METADATA_KEY, SessionSpec
from sqlsecure.executors.tee.wire import ENCLAVE, SealedBatch, lp

SEAL_DOMAIN = b"sqlsecure/enclave/seal/v1\0"
AAD_DOMAIN = b"sqlsecure/enclave/batch/v1\0"
DEFAULT_BATCH_ROWS = 1 << 16


class SealingError(ProtocolError):
    """A sealed stream was refused: tampered, reordered, replayed, truncated or for another session."""


def raw_public(key: X25519PrivateKey | X25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def agree(private: X25519PrivateKey, public: bytes, who: str) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(bytes(public)))
    except ValueError as exc:  # malformed or low-order point (all-zero shared secret)
        raise SealingError(f"key agreement with {who}'s public key failed: {exc}") from None


def stream_key(shared: bytes, spec: SessionSpec, sender: str, recipient: str, stream_id: bytes,
               party_key: bytes, enclave_key: bytes) -> AESGCM:
    info = (SEAL_DOMAIN + lp(spec.query_id) + lp(sender) + lp(recipient) + lp(party_key) + lp(enclave_key)
            + lp(spec.digest()))
    return AESGCM(HKDF(hashes.SHA256(), 32, salt=stream_id, info=info).derive(shared))


def batch_aad(query_id: str, sender: str, recipient: str, seq: int, is_last: bool) -> bytes:
    return AAD_DOMAIN + lp(query_id) + lp(sender) + lp(recipient) + struct.pack(">Q?", seq, is_last)


def batch_nonce(seq: int) -> bytes:
    return b"\0\0\0\0" + struct.pack(">Q", seq)


class StreamSealer:
    """Seals consecutive plaintexts of one stream: seq 0, 1, …, the last one flagged."""

    def __init__(self, key: AESGCM, query_id: str, sender: str, recipient: str, stream_id: bytes, party_key: bytes):
        self.key, self.query_id, self.sender, self.recipient = key, query_id, sender, recipient
        self.stream_id, self.party_key = stream_id, party_key
        self.seq = 0
        self.closed = False

    def seal(self, plaintext: bytes, is_last: bool) -> SealedBatch:
        if self.closed:
            raise ProgrammingError(f"stream {self.sender!r} -> {self.recipient!r} is closed (its last batch was sealed)")
        aad = batch_aad(self.query_id, self.sender, self.recipient, self.seq, is_last)
        ciphertext = self.key.encrypt(batch_nonce(self.seq), plaintext, aad)
        batch = SealedBatch(self.query_id, self.sender, self.recipient, self.seq, is_last, self.stream_id,
                            self.party_key, ciphertext)
        self.seq += 1
        self.closed = is_last
        return batch


class StreamOpener:
    """Opens one stream's batches strictly in order; `finish()` refuses a stream without its last batch.

    `derive(stream_id, party_key)` gives the stream's key; `party_key`, when given, pins the party's key.
    """

    def __init__(self, query_id: str, sender: str, recipient: str,
                 derive: Callable[[bytes, bytes], AESGCM], party_key: bytes | None = None):
        self.query_id, self.sender, self.recipient = query_id, sender, recipient
        self.derive = derive
        self.party_key = party_key
        self.stream_id: bytes | None = None
        self.key: AESGCM | None = None
        self.expected = 0
        self.done = False

    def _where(self) -> str:
        return f"stream {self.sender!r} -> {self.recipient!r} of query {self.query_id!r}"

    def open(self, batch: SealedBatch) -> bytes:
        where = self._where()
        if (batch.query_id, batch.sender, batch.recipient) != (self.query_id, self.sender, self.recipient):
            raise SealingError(f"{where}: got a batch labelled {batch.sender!r} -> {batch.recipient!r} of query "
                               f"{batch.query_id!r} (misrouted or spliced from another stream)")
        if self.done:
            raise SealingError(f"{where}: batch {batch.seq} arrived after the last batch (replayed or injected)")
        if batch.seq < self.expected:
            raise SealingError(f"{where}: batch {batch.seq} arrived again where batch {self.expected} was "
                               "expected (replayed)")
        if batch.seq > self.expected:
            raise SealingError(f"{where}: batch {batch.seq} arrived where batch {self.expected} was expected "
                               "(reordered or a batch is missing)")
        if self.key is None:
            if self.party_key is not None and batch.sender_key != self.party_key:
                raise SealingError(f"{where}: sealed under another key than the session's")
            self.stream_id, self.party_key = batch.stream_id, batch.sender_key
            self.key = self.derive(batch.stream_id, batch.sender_key)
        elif (batch.stream_id, batch.sender_key) != (self.stream_id, self.party_key):
            raise SealingError(f"{where}: batch {batch.seq} belongs to another stream (spliced)")
        aad = batch_aad(self.query_id, self.sender, self.recipient, self.expected, batch.is_last)
        try:
            plaintext = self.key.decrypt(batch_nonce(self.expected), batch.ciphertext, aad)
        except InvalidTag:
            raise SealingError(f"{where}: batch {batch.seq} failed authentication (altered in transit, or "
                               "sealed for another enclave, session or recipient)") from None
        self.expected += 1
        self.done = batch.is_last
        return plaintext

    def finish(self) -> None:
        if not self.done:
            raise SealingError(f"{self._where()}: the stream ended after {self.expected} batch(es) without its "
                               "last batch (truncated)")


# --- Arrow batches --------------------------------------------------------------------------------------

def batch_to_bytes(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def batch_from_bytes(data: bytes, frm: str) -> pa.Table:
    try:
        return pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise ProtocolError(f"a sealed batch from {frm!r} does not hold an Arrow stream: {exc}") from None


def record_batches(table: pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch], batch_rows: int) -> list[pa.RecordBatch]:
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    if isinstance(table, pa.Table):
        batches = table.combine_chunks().to_batches(max_chunksize=batch_rows) if table.num_rows else []
        return batches or [pa.RecordBatch.from_pylist([], schema=table.schema)]
    batches = list(table)
    if not batches:
        raise ProgrammingError("nothing to seal: an iterable of record batches must hold at least one batch")
    return batches


def _seal_stream(batches: list[pa.RecordBatch], sealer: StreamSealer) -> Iterator[SealedBatch]:
    for i, batch in enumerate(batches):
        yield sealer.seal(batch_to_bytes(batch), is_last=i == len(batches) - 1)


# --- the parties' side ----------------------------------------------------------------------------------

def seal_inputs(enclave: AttestedEnclave, spec: SessionSpec, party: str,
                table: pa.Table | Iterable[pa.RecordBatch], *,
                batch_rows: int = DEFAULT_BATCH_ROWS) -> list[SealedBatch]:
    """A party's columns, sealed to the attested enclave for `spec` (one fresh party key per call)."""
    if not isinstance(enclave, AttestedEnclave):
        raise ProgrammingError("seal only to an AttestedEnclave (the result of verify_quote)")
    if party not in spec.parties:
        raise ProgrammingError(f"{party!r} is not an input party of query {spec.query_id!r} ({list(spec.parties)})")
    ephemeral = X25519PrivateKey.generate()
    party_key, stream_id = raw_public(ephemeral), os.urandom(16)
    key = stream_key(agree(ephemeral, enclave.public_key, "the enclave"), spec, party, ENCLAVE, stream_id,
                     party_key, enclave.public_key)
    sealer = StreamSealer(key, spec.query_id, party, ENCLAVE, stream_id, party_key)
    return list(_seal_stream(record_batches(table, batch_rows), sealer))


# --- the enclave's side ---------------------------------------------------------------------------------

def input_opener(enclave_key: X25519PrivateKey, spec: SessionSpec, party: str) -> StreamOpener:
    enclave_public = raw_public(enclave_key)

    def derive(stream_id: bytes, party_key: bytes) -> AESGCM:
        return stream_key(agree(enclave_key, party_key, party), spec, party, ENCLAVE, stream_id, party_key,
                          enclave_public)

    return StreamOpener(spec.query_id, party, ENCLAVE, derive)


def seal_result(enclave_key: X25519PrivateKey, spec: SessionSpec, table: pa.Table, *, simulated: bool,
                batch_rows: int = DEFAULT_BATCH_ROWS) -> list[SealedBatch]:
    """The result sealed to `spec.recipient`'s key; the table carries the simulated flag in its metadata."""
    table = table.replace_schema_metadata({SIMULATED_METADATA_KEY: b"true" if simulated else b"false"})
    stream_id = os.urandom(16)
    recipient_key = bytes(spec.recipient_public_key)
    key = stream_key(agree(enclave_key, recipient_key, spec.recipient), spec, ENCLAVE, spec.recipient, stream_id,
                     recipient_key, raw_public(enclave_key))
    sealer = StreamSealer(key, spec.query_id, ENCLAVE, spec.recipient, stream_id, recipient_key)
    return list(_seal_stream(record_batches(table, batch_rows), sealer))


# --- the recipient's side -------------------------------------------------------------------------------

class ResultKey:
    """The recipient's fresh X25519 key for one query; its public half goes into the SessionSpec."""

    def __init__(self, private_key: X25519PrivateKey | None = None):
        self._private_key = private_key or X25519PrivateKey.generate()

    @classmethod
    def generate(cls) -> "ResultKey":
        return cls()

    @property
    def public_bytes(self) -> bytes:
        return raw_public(self._private_key)

    def agree(self, enclave_key: bytes) -> bytes:
        return agree(self._private_key, enclave_key, "the enclave")


@dataclass(frozen=True)
class EnclaveResult:
    """An opened result. `simulated` is True when the enclave ran without hardware protection."""

    table: pa.Table
    simulated: bool
    measurement: bytes


def open_result(enclave: AttestedEnclave, spec: SessionSpec, result_key: ResultKey,
                batches: Iterable[SealedBatch]) -> EnclaveResult:
    """The recipient opens the result stream (all batches, in order, the last one flagged)."""
    if not isinstance(enclave, AttestedEnclave):
        raise ProgrammingError("open results only from an AttestedEnclave (the result of verify_quote)")
    if result_key.public_bytes != bytes(spec.recipient_public_key):
        raise ProgrammingError(f"this result key is not the one query {spec.query_id!r} names for its recipient")

    def derive(stream_id: bytes, party_key: bytes) -> AESGCM:
        return stream_key(result_key.agree(enclave.public_key), spec, ENCLAVE, spec.recipient, stream_id,
                          party_key, enclave.public_key)

    opener = StreamOpener(spec.query_id, ENCLAVE, spec.recipient, derive, party_key=result_key.public_bytes)
    tables = [batch_from_bytes(opener.open(b), ENCLAVE) for b in batches]
    opener.finish()
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    flag = (table.schema.metadata or {}).get(SIMULATED_METADATA_KEY)
    if flag not in (b"true", b"false"):
        raise ProtocolError(f"the enclave's result for query {spec.query_id!r} does not say whether it was simulated")
    return EnclaveResult(table.replace_schema_metadata(None), enclave.simulated or flag == b"true", enclave.measurement)
