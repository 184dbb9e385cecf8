"""Enclave wire format: every message round-trips through to_bytes / from_bytes; malformed input is a
ProtocolError, never a struct or index error."""

from __future__ import annotations

import io

import pytest

from sqlsecure.errors import ProtocolError
from sqlsecure.executors.tee import wire
from sqlsecure.executors.tee.attestation import EnclaveConfig, Quote
from sqlsecure.executors.tee.program import EnclaveProgram, SessionSpec

SPEC = SessionSpec("q-1", EnclaveProgram(group_keys=["k"], aggregates=[("sum", "v"), ("count", None, "n")],
                                         order=[("n", True)], limit=3, min_group_size=4),
                   ("bank", "shop"), "bank", bytes(range(32)))

MESSAGES = [
    wire.Provision(EnclaveConfig().to_bytes(), b"\x01" * 32),
    wire.QuoteRequest(b"\x02" * 32),
    wire.RunRequest("q-1"),
    wire.Failure("sealing", "batch 2 arrived where batch 1 was expected"),
    wire.SealedBatch("q-1", "bank", "enclave", 7, True, b"\x03" * 16, b"\x04" * 32, b"\x05" * 40),
    Quote(b"\x06" * 32, b"\x07" * 32, True, b"\x08" * 32, b"\x09" * 64),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_messages_round_trip(message):
    assert type(message).from_bytes(message.to_bytes()) == message


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_truncated_messages_are_protocol_errors(message):
    data = message.to_bytes()
    with pytest.raises(ProtocolError):
        type(message).from_bytes(data[: len(data) // 2 if not isinstance(message, wire.SealedBatch) else 20])


def test_session_spec_and_program_round_trip():
    assert SessionSpec.from_bytes(SPEC.to_bytes()) == SPEC
    assert EnclaveProgram.from_bytes(SPEC.program.to_bytes()) == SPEC.program
    assert SPEC.digest() != SessionSpec("q-2", SPEC.program, SPEC.parties, SPEC.recipient,
                                        SPEC.recipient_public_key).digest()
    assert EnclaveConfig.from_bytes(EnclaveConfig(max_rows=10).to_bytes()) == EnclaveConfig(max_rows=10)


def test_frames_round_trip_over_a_stream():
    envelopes = [wire.Envelope("bank", "enclave", wire.SEALED_BATCH, MESSAGES[4].to_bytes()),
                 wire.Envelope("host", "enclave", wire.SHUTDOWN)]
    buf = io.BytesIO()
    for e in envelopes:
        wire.write_frame(buf, e)
    buf.seek(0)
    assert [wire.read_frame(buf, 1 << 20), wire.read_frame(buf, 1 << 20), wire.read_frame(buf, 1 << 20)] == \
        [*envelopes, None]


def test_bad_frames_are_refused():
    with pytest.raises(ProtocolError, match="over the limit"):
        wire.read_frame(io.BytesIO(wire.FRAME_HEADER.pack(1 << 40)), 1 << 20)
    with pytest.raises(ProtocolError, match="ended inside a frame"):
        wire.read_frame(io.BytesIO(wire.FRAME_HEADER.pack(100) + b"SQE1"), 1 << 20)
    with pytest.raises(ProtocolError, match="bad magic"):
        wire.Envelope.from_bytes(b"XXXX" + b"\0" * 20)
    with pytest.raises(ProtocolError, match="unknown failure kind"):
        wire.Failure.from_bytes(wire.Failure("protocol", "x").to_bytes().replace(b"protocol", b"whatever"))
