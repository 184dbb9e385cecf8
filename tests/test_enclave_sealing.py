"""Sealing: the enclave (its state machine in-process, no subprocess) opens only intact, in-order,
complete streams for its own session; the recipient likewise for the result."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from sqlsecure.errors import DataError, ProgrammingError
from sqlsecure.executors.tee import wire
from sqlsecure.executors.tee.attestation import SimulationAuthority, fresh_nonce, verify_quote
from sqlsecure.executors.tee.core import EnclaveCore
from sqlsecure.executors.tee.host import raise_failure
from sqlsecure.executors.tee.program import EnclaveProgram, SessionSpec
from sqlsecure.executors.tee.sealing import ResultKey, SealingError, open_result, seal_inputs
from sqlsecure.executors.tee.wire import ENCLAVE, HOST, Envelope

PROGRAM = EnclaveProgram(group_keys=["k"], aggregates=[("sum", "v"), ("count", None)])


class Enclave:
    """EnclaveCore driven like the host drives the process."""

    def __init__(self):
        self.core = EnclaveCore()
        authority = SimulationAuthority.generate()
        provision = wire.Provision(b'{"simulation": true}', authority.private_bytes())
        (ready,) = self.core.handle(Envelope(HOST, ENCLAVE, wire.PROVISION, provision.to_bytes()))
        assert ready.tag == wire.READY
        nonce = fresh_nonce()
        quote = self.ask(wire.QUOTE_REQUEST, wire.QuoteRequest(nonce).to_bytes())[0].payload
        self.attested = verify_quote(quote, authority, {ready.payload}, nonce)

    def ask(self, tag, payload, doing="test"):
        answers = self.core.handle(Envelope(HOST, ENCLAVE, tag, payload))
        if answers[0].tag == wire.FAILURE:
            raise_failure(answers[0], doing)
        return answers

    def open(self, spec):
        self.ask(wire.SESSION_OPEN, spec.to_bytes())

    def submit(self, batch):
        self.ask(wire.SEALED_BATCH, batch.to_bytes())

    def run(self, spec):
        return [wire.SealedBatch.from_bytes(a.payload) for a in self.ask(wire.RUN, wire.RunRequest(spec.query_id).to_bytes())]


@pytest.fixture
def enclave():
    return Enclave()


@pytest.fixture
def result_key():
    return ResultKey.generate()


def spec_for(result_key, query_id="q1", program=PROGRAM):
    return SessionSpec(query_id, program, ("a", "b"), "a", result_key.public_bytes)


def tables(n=10):
    return (pa.table({"k": pa.array(np.arange(n) % 3, pa.int64())}),
            pa.table({"v": pa.array(np.arange(n), pa.int64())}))


def sealed(enclave, spec, n=10, batch_rows=4):
    ta, tb = tables(n)
    return (seal_inputs(enclave.attested, spec, "a", ta, batch_rows=batch_rows),
            seal_inputs(enclave.attested, spec, "b", tb, batch_rows=batch_rows))


def expected(n=10):
    return [{"k": k, "sum(v)": sum(i for i in range(n) if i % 3 == k), "count(*)": len(range(k, n, 3))}
            for k in range(3)]


def test_round_trip(enclave, result_key):
    spec = spec_for(result_key)
    enclave.open(spec)
    a, b = sealed(enclave, spec)
    assert len(a) == 3 and [x.is_last for x in a] == [False, False, True]
    for batch in [*a, *b]:
        enclave.submit(batch)
    result = open_result(enclave.attested, spec, result_key, enclave.run(spec))
    assert result.simulated and result.table.to_pylist() == expected()


def test_tampered_batch_is_refused_and_aborts_the_session(enclave, result_key):
    spec = spec_for(result_key)
    enclave.open(spec)
    a, b = sealed(enclave, spec)
    flipped = bytearray(a[1].ciphertext)
    flipped[5] ^= 1
    enclave.submit(a[0])
    with pytest.raises(SealingError, match="failed authentication"):
        enclave.submit(dataclasses.replace(a[1], ciphertext=bytes(flipped)))
    with pytest.raises(SealingError, match="aborted"):
        enclave.submit(a[1])
    with pytest.raises(SealingError, match="aborted"):
        enclave.run(spec)


@pytest.mark.parametrize("field, value", [("is_last", True), ("sender", "b"), ("query_id", "q2")])
def test_tampered_header_is_refused(enclave, result_key, field, value):
    spec = spec_for(result_key)
    enclave.open(spec)
    enclave.open(spec_for(result_key, "q2"))
    a, _ = sealed(enclave, spec)
    with pytest.raises(SealingError):
        enclave.submit(dataclasses.replace(a[0], **{field: value}))


def test_reordered_batches_are_refused(enclave, result_key):
    spec = spec_for(result_key)
    enclave.open(spec)
    a, _ = sealed(enclave, spec)
    enclave.submit(a[0])
    with pytest.raises(SealingError, match="batch 2 arrived where batch 1 was expected"):
        enclave.submit(a[2])
    # relabelling the sequence number to the expected one does not help: the tag binds it
    spec2 = spec_for(result_key, "q2")
    enclave.open(spec2)
    a2, _ = sealed(enclave, spec2)
    enclave.submit(a2[0])
    with pytest.raises(SealingError, match="failed authentication"):
        enclave.submit(dataclasses.replace(a2[2], seq=1))


def test_replayed_batch_is_refused(enclave, result_key):
    spec = spec_for(result_key)
    enclave.open(spec)
    a, _ = sealed(enclave, spec)
    enclave.submit(a[0])
    with pytest.raises(SealingError, match="replayed"):
        enclave.submit(a[0])


def test_batch_after_the_last_is_refused(enclave, result_key):
    spec = spec_for(result_key)
    enclave.open(spec)
    a, _ = sealed(enclave, spec, n=3)
    assert len(a) == 1
    enclave.submit(a[0])
    with pytest.raises(SealingError, match="after the last batch"):
        enclave.submit(a[0])


def test_truncated_stream_is_refused(enclave, result_key):
    spec = spec_for(result_key)
    enclave.open(spec)
    a, b = sealed(enclave, spec)
    for batch in [*a[:-1], *b]:
        enclave.submit(batch)
    with pytest.raises(SealingError, match="without its last batch"):
        enclave.run(spec)


def test_inputs_open_only_in_the_session_the_party_saw(enclave, result_key):
    """A host that swaps the program (or the recipient's key) cannot use the parties' batches."""
    spec = spec_for(result_key)
    a, _ = sealed(enclave, spec)
    swapped = dataclasses.replace(spec, program=EnclaveProgram(select=["k"]))
    enclave.open(dataclasses.replace(swapped, query_id="q1"))
    with pytest.raises(SealingError, match="failed authentication"):
        enclave.submit(a[0])
    thief = ResultKey.generate()
    other = Enclave()
    other.open(dataclasses.replace(spec, recipient_public_key=thief.public_bytes))
    with pytest.raises(SealingError, match="failed authentication"):
        other.submit(a[0])


def test_batches_for_another_enclave_are_refused(enclave, result_key):
    spec = spec_for(result_key)
    a, _ = sealed(Enclave(), spec)
    enclave.open(spec)
    with pytest.raises(SealingError, match="failed authentication"):
        enclave.submit(a[0])


def test_streams_cannot_be_spliced(enclave, result_key):
    spec = spec_for(result_key)
    enclave.open(spec)
    a1, _ = sealed(enclave, spec)
    a2, _ = sealed(enclave, spec)
    enclave.submit(a1[0])
    with pytest.raises(SealingError, match="another stream"):
        enclave.submit(a2[1])


def test_a_query_id_is_single_use(enclave, result_key):
    spec = spec_for(result_key)
    enclave.open(spec)
    with pytest.raises(Exception, match="already used"):
        enclave.open(spec)


def test_result_tampering_is_refused(enclave, result_key):
    spec = spec_for(result_key)
    enclave.open(spec)
    for batch in sum(sealed(enclave, spec), []):
        enclave.submit(batch)
    result = enclave.run(spec)
    assert len(result) == 1 and result[0].is_last
    broken = bytearray(result[0].ciphertext)
    broken[-1] ^= 0x80
    with pytest.raises(SealingError, match="failed authentication"):
        open_result(enclave.attested, spec, result_key, [dataclasses.replace(result[0], ciphertext=bytes(broken))])
    with pytest.raises(SealingError, match="without its last batch"):
        open_result(enclave.attested, spec, result_key, [])
    with pytest.raises(ProgrammingError, match="result key"):
        open_result(enclave.attested, spec, ResultKey.generate(), result)
    assert open_result(enclave.attested, spec, result_key, result).table.to_pylist() == expected()


def test_multi_batch_result_stream(enclave, result_key):
    program = EnclaveProgram(order=[("v", True)])
    spec = spec_for(result_key, program=program)
    enclave.open(spec)
    for batch in sum(sealed(enclave, spec, n=70000, batch_rows=30000), []):
        enclave.submit(batch)
    result = enclave.run(spec)
    assert len(result) == 2 and [r.seq for r in result] == [0, 1]
    with pytest.raises(SealingError, match="reordered"):
        open_result(enclave.attested, spec, result_key, result[::-1])
    table = open_result(enclave.attested, spec, result_key, result).table
    assert table.column("v").to_pylist() == list(range(69999, -1, -1))


def test_misaligned_and_wrong_typed_inputs(enclave, result_key):
    spec = spec_for(result_key)
    enclave.open(spec)
    enclave.submit(seal_inputs(enclave.attested, spec, "a", pa.table({"k": [1, 2, 3]}))[0])
    enclave.submit(seal_inputs(enclave.attested, spec, "b", pa.table({"v": [1, 2]}))[0])
    with pytest.raises(DataError, match="not aligned"):
        enclave.run(spec)
    spec2 = spec_for(result_key, "q2")
    enclave.open(spec2)
    enclave.submit(seal_inputs(enclave.attested, spec2, "a", pa.table({"k": ["x"]}))[0])
    enclave.submit(seal_inputs(enclave.attested, spec2, "b", pa.table({"v": [1]}))[0])
    with pytest.raises(DataError, match="int64 and float64"):
        enclave.run(spec2)
