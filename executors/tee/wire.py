"""The enclave's wire format: envelopes in length-prefixed frames, and one typed message per step.

The enclave process speaks only frames over its stdin (host -> enclave) and stdout (enclave ->
host). A frame is an 8-byte big-endian length followed by one `Envelope`: the sender and the
recipient (party names; the enclave is `ENCLAVE`), a tag and the payload bytes. That is exactly a
message of the project's `Channel` (`send(to, tag, payload)` from `sender`), so a host can bridge
the enclave onto a channel frame by frame.

Protocol (strict request/response, one response per request, host first):

    host -> enclave            enclave -> host
    provision                  ready            configuration (and, in simulation, the signing key)
    quote_request(nonce)       quote            attestation for a verifier's fresh nonce
    session_open(spec)         ack              a query's public description (SessionSpec)
    sealed_batch               ack              one party's sealed Arrow batch
    run(query_id)              sealed_batch*    the result, sealed to the recipient (last one flagged)
    shutdown                   (exits)
    any request                failure          the request was refused (kind and message)

Every message class has `to_bytes` / `from_bytes`; `from_bytes` checks lengths and raises
`ProtocolError` naming the sender, never `struct.error` or `IndexError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

from sqlsecure.errors import ProtocolError

ENCLAVE = "enclave"
HOST = "host"
FRAME_HEADER = struct.Struct(">Q")
ENVELOPE_MAGIC = b"SQE1"
MAX_NAME_BYTES = 256

# tags
PROVISION = "provision"
READY = "ready"
QUOTE_REQUEST = "quote_request"
QUOTE = "quote"
SESSION_OPEN = "session_open"
SEALED_BATCH = "sealed_batch"
ACK = "ack"
RUN = "run"
FAILURE = "failure"
SHUTDOWN = "shutdown"


# --- length-prefixed fields -------------------------------------------------------------------------

def lp(data: bytes | str) -> bytes:
    """A length-prefixed field (4-byte big-endian length): unambiguous concatenation."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    return struct.pack(">I", len(raw)) + raw


class Reader:
    """Parses length-prefixed fields; every shortfall is a `ProtocolError` naming what was read."""

    def __init__(self, data: bytes, what: str, frm: str):
        self.data = memoryview(bytes(data))
        self.pos = 0
        self.what = what
        self.frm = frm

    def fail(self, problem: str) -> ProtocolError:
        return ProtocolError(f"malformed {self.what} from {self.frm!r}: {problem}")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"needs {n} more bytes at offset {self.pos}, has {len(self.data) - self.pos}")
        out = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return out

    def field(self, limit: int | None = None) -> bytes:
        (n,) = struct.unpack(">I", self.take(4))
        if limit is not None and n > limit:
            raise self.fail(f"a field of {n} bytes exceeds the limit of {limit}")
        return self.take(n)

    def text(self, limit: int = MAX_NAME_BYTES) -> str:
        try:
            return self.field(limit).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("a name is not UTF-8") from None

    def u64(self) -> int:
        return struct.unpack(">Q", self.take(8))[0]

    def flag(self) -> bool:
        b = self.take(1)[0]
        if b not in (0, 1):
            raise self.fail(f"a flag byte is {b}, not 0 or 1")
        return bool(b)

    def rest(self) -> bytes:
        out = bytes(self.data[self.pos:])
        self.pos = len(self.data)
        return out

    def end(self) -> None:
        if self.pos != len(self.data):
            raise self.fail(f"{len(self.data) - self.pos} trailing bytes")


# --- envelopes and frames ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Envelope:
    """One message: (tag, payload) from `sender` to `recipient`, as a channel would carry it."""

    sender: str
    recipient: str
    tag: str
    payload: bytes = b""

    def to_bytes(self) -> bytes:
        return ENVELOPE_MAGIC + lp(self.sender) + lp(self.recipient) + lp(self.tag) + bytes(self.payload)

    @classmethod
    def from_bytes(cls, data: bytes, frm: str = "peer") -> "Envelope":
        r = Reader(data, "envelope", frm)
        if r.take(4) != ENVELOPE_MAGIC:
            raise r.fail("bad magic (not an sqlsecure enclave frame)")
        return cls(r.text(), r.text(), r.text(64), r.rest())


def write_frame(stream: BinaryIO, envelope: Envelope) -> None:
    body = envelope.to_bytes()
    stream.write(FRAME_HEADER.pack(len(body)))
    stream.write(body)
    stream.flush()


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(stream: BinaryIO, max_bytes: int, frm: str = "peer") -> Envelope | None:
    """The next envelope, or None at a clean end of stream (EOF between frames)."""
    header = _read_exactly(stream, FRAME_HEADER.size)
    if header is None:
        return None
    (n,) = FRAME_HEADER.unpack(header)
    if n > max_bytes:
        raise ProtocolError(f"{frm!r} announced a frame of {n} bytes, over the limit of {max_bytes}")
    body = _read_exactly(stream, n)
    if body is None:
        raise ProtocolError(f"stream from {frm!r} ended inside a frame of {n} bytes")
    return Envelope.from_bytes(body, frm)


# --- messages -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Provision:
    """host -> enclave, first message: the enclave's configuration (measured) and, in simulation,
    the test authority's Ed25519 private key (raw 32 bytes) standing in for the platform's quoting key."""

    config: bytes
    simulation_signing_key: bytes

    def to_bytes(self) -> bytes:
        return lp(self.config) + lp(self.simulation_signing_key)

    @classmethod
    def from_bytes(cls, data: bytes, frm: str = HOST) -> "Provision":
        r = Reader(data, "provision message", frm)
        out = cls(r.field(1 << 16), r.field(64))
        r.end()
        return out


@dataclass(frozen=True)
class QuoteRequest:
    """A verifier's fresh nonce (32 bytes); the enclave answers with a quote over it."""

    nonce: bytes

    def to_bytes(self) -> bytes:
        return lp(self.nonce)

    @classmethod
    def from_bytes(cls, data: bytes, frm: str = HOST) -> "QuoteRequest":
        r = Reader(data, "quote request", frm)
        out = cls(r.field(64))
        r.end()
        return out


@dataclass(frozen=True)
class RunRequest:
    """Evaluate the session's program over the inputs received and seal the result."""

    query_id: str

    def to_bytes(self) -> bytes:
        return lp(self.query_id)

    @classmethod
    def from_bytes(cls, data: bytes, frm: str = HOST) -> "RunRequest":
        r = Reader(data, "run request", frm)
        out = cls(r.text())
        r.end()
        return out


FAILURE_KINDS = ("sealing", "protocol", "data", "program", "internal")


@dataclass(frozen=True)
class Failure:
    """The enclave refused a request. `kind` maps to the error class the host raises
    (sealing -> SealingError, protocol -> ProtocolError, data -> DataError, program -> ProgrammingError,
    internal -> InternalError).
    Messages never contain data values."""

    kind: str
    message: str

    def to_bytes(self) -> bytes:
        return lp(self.kind) + lp(self.message)

    @classmethod
    def from_bytes(cls, data: bytes, frm: str = ENCLAVE) -> "Failure":
        r = Reader(data, "failure message", frm)
        kind, message = r.text(), r.text(1 << 16)
        r.end()
        if kind not in FAILURE_KINDS:
            raise r.fail(f"unknown failure kind {kind!r}")
        return cls(kind, message)


@dataclass(frozen=True)
class SealedBatch:
    """One AES-GCM-sealed Arrow batch of a stream from `sender` to `recipient`.

    The header travels in clear and is authenticated: (query_id, sender, recipient, seq, is_last) is
    the associated data, and (stream_id, sender_key) enter the key derivation (see `sealing`).
    """

    query_id: str
    sender: str
    recipient: str
    seq: int
    is_last: bool
    stream_id: bytes  # 16 random bytes chosen by the sealer: HKDF salt, fresh per stream
    sender_key: bytes  # the X25519 public key the stream's key was agreed with (party's or recipient's)
    ciphertext: bytes

    def to_bytes(self) -> bytes:
        return (lp(self.query_id) + lp(self.sender) + lp(self.recipient) + struct.pack(">Q", self.seq)
                + bytes([int(self.is_last)]) + lp(self.stream_id) + lp(self.sender_key) + self.ciphertext)

    @classmethod
    def from_bytes(cls, data: bytes, frm: str = "peer") -> "SealedBatch":
        r = Reader(data, "sealed batch", frm)
        query_id, sender, recipient = r.text(), r.text(), r.text()
        seq, is_last = r.u64(), r.flag()
        stream_id, sender_key = r.field(16), r.field(32)
        if len(stream_id) != 16 or len(sender_key) != 32:
            raise r.fail("stream id must be 16 bytes and the sender key 32 bytes")
        ciphertext = r.rest()
        if len(ciphertext) < 16:
            raise r.fail("ciphertext shorter than its 16-byte tag")
        return cls(query_id, sender, recipient, seq, is_last, stream_id, sender_key, ciphertext)
