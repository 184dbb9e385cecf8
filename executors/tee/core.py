"""The enclave's state machine: what runs inside the enclave process, one envelope at a time.

`EnclaveCore.handle(envelope) -> [envelopes]` is the whole trusted logic (the process loop in
`main` only moves frames): provisioning, quotes, sessions, opening the parties' sealed batches,
evaluating the program obliviously, sealing the result. It holds the only copy of the enclave's
X25519 private key, generated at provisioning and never sent anywhere.

A session is single-use: any refused batch aborts it (no partial result is ever produced), a
query id can be opened once per enclave lifetime (a whole recorded session cannot be replayed),
and its plaintext is dropped after its run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sqlsecure.errors import DataError, ProgrammingError, ProtocolError
from sqlsecure.executors.tee import wire
from sqlsecure.executors.tee.expressions import sql_column
from sqlsecure.executors.tee.attestation import EnclaveConfig, measure, sign_quote
from sqlsecure.executors.tee.program import SessionSpec, column_array, evaluate
from sqlsecure.executors.tee.sealing import (
    SealingError, StreamOpener, batch_from_bytes, input_opener, raw_public, seal_result,
)
from sqlsecure.executors.tee.wire import ENCLAVE, Envelope


@dataclass
class _Session:
    spec: SessionSpec
    openers: dict[str, StreamOpener]
    tables: dict[str, list[pa.Table]] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    failed: wire.Failure | None = None


class _Refusal(Exception):
    """A request refused because its session was aborted earlier (keeps the first failure's kind)."""

    def __init__(self, failure: wire.Failure):
        self.failure = failure
        super().__init__(failure.message)


def failure_of(exc: BaseException) -> wire.Failure:
    if isinstance(exc, _Refusal):
        return exc.failure
    if isinstance(exc, SealingError):
        return wire.Failure("sealing", str(exc))
    if isinstance(exc, ProtocolError):
        return wire.Failure("protocol", str(exc))
    if isinstance(exc, DataError):
        return wire.Failure("data", str(exc))
    if isinstance(exc, ProgrammingError):
        return wire.Failure("program", str(exc))
    return wire.Failure("internal", f"{type(exc).__name__}: {str(exc)[:500]}")


class EnclaveCore:
    def __init__(self):
        self.config: EnclaveConfig | None = None
        self.measurement: bytes | None = None
        self._signing_key: Ed25519PrivateKey | None = None
        self._key: X25519PrivateKey | None = None
        self._sessions: dict[str, _Session] = {}
        self._used_query_ids: set[str] = set()

    # -- dispatch --

    def handle(self, envelope: Envelope) -> list[Envelope]:
        handlers = {wire.PROVISION: self._provision, wire.QUOTE_REQUEST: self._quote,
                    wire.SESSION_OPEN: self._open_session, wire.SEALED_BATCH: self._sealed_batch,
                    wire.RUN: self._run}
        to = envelope.sender
        try:
            handler = handlers.get(envelope.tag)
            if handler is None:
                raise ProtocolError(f"the enclave does not understand messages tagged {envelope.tag!r}")
            if envelope.tag != wire.PROVISION and self._key is None:
                raise ProtocolError("the enclave is not provisioned yet (send `provision` first)")
            return [Envelope(ENCLAVE, to, tag, payload) for tag, payload in handler(envelope)]
        except Exception as exc:  # every refusal becomes one failure message; the loop keeps serving
            return [Envelope(ENCLAVE, to, wire.FAILURE, failure_of(exc).to_bytes())]

    # -- handlers: each returns [(tag, payload)] --

    def _provision(self, envelope: Envelope):
        if self._key is not None:
            raise ProtocolError("the enclave is already provisioned")
        message = wire.Provision.from_bytes(envelope.payload, envelope.sender)
        config = EnclaveConfig.from_bytes(message.config)
        if not config.simulation:
            raise ProtocolError("this build has only the simulation backend; run under gramine-sgx for hardware "
                                "attestation (docs/enclave.md)")
        try:
            self._signing_key = Ed25519PrivateKey.from_private_bytes(message.simulation_signing_key)
        except ValueError:
            raise ProtocolError("the simulation signing key must be 32 raw Ed25519 bytes") from None
        self.config = config
        self.measurement = measure(config)
        self._key = X25519PrivateKey.generate()
        return [(wire.READY, self.measurement)]

    def _quote(self, envelope: Envelope):
        request = wire.QuoteRequest.from_bytes(envelope.payload, envelope.sender)
        if len(request.nonce) != 32:
            raise ProtocolError(f"a quote nonce must be 32 bytes, got {len(request.nonce)}")
        quote = sign_quote(self._signing_key, self.measurement, raw_public(self._key), request.nonce)
        return [(wire.QUOTE, quote.to_bytes())]

    def _open_session(self, envelope: Envelope):
        spec = SessionSpec.from_bytes(envelope.payload)
        if spec.query_id in self._used_query_ids:
            raise ProtocolError(f"query id {spec.query_id!r} was already used with this enclave; "
                                "every session needs a fresh query id")
        self._used_query_ids.add(spec.query_id)
        self._sessions[spec.query_id] = _Session(
            spec, {p: input_opener(self._key, spec, p) for p in spec.parties},
            {p: [] for p in spec.parties}, {p: 0 for p in spec.parties})
        return [(wire.ACK, b"")]

    def _session(self, query_id: str) -> _Session:
        session = self._sessions.get(query_id)
        if session is None:
            raise ProtocolError(f"no open enclave session for query {query_id!r} (never opened, or already run)")
        if session.failed is not None:
            raise _Refusal(wire.Failure(session.failed.kind, f"query {query_id!r} was aborted: "
                                                           f"{session.failed.message}"))
        return session

    def _sealed_batch(self, envelope: Envelope):
        batch = wire.SealedBatch.from_bytes(envelope.payload, envelope.sender)
        session = self._session(batch.query_id)
        try:
            if batch.recipient != ENCLAVE or batch.sender not in session.openers:
                raise SealingError(f"a batch {batch.sender!r} -> {batch.recipient!r} has no place in query "
                                   f"{batch.query_id!r} (input parties: {list(session.spec.parties)})")
            table = batch_from_bytes(session.openers[batch.sender].open(batch), batch.sender)
            self._check_batch(session, batch.sender, table)
        except Exception as exc:
            session.failed = failure_of(exc)
            session.tables.clear()
            raise
        return [(wire.ACK, b"")]

    def _check_batch(self, session: _Session, party: str, table: pa.Table) -> None:
        earlier = session.tables[party]
        if earlier and table.schema != earlier[0].schema:
            raise DataError(f"{party!r} changed its schema between batches")
        session.rows[party] += table.num_rows
        if session.rows[party] > self.config.max_rows:
            raise DataError(f"{party!r} sent more than the enclave's {self.config.max_rows} rows")
        earlier.append(table)

    def _run(self, envelope: Envelope):
        request = wire.RunRequest.from_bytes(envelope.payload, envelope.sender)
        session = self._session(request.query_id)
        del self._sessions[request.query_id]  # single use, whatever happens next
        spec = session.spec
        columns = {}
        for party in spec.parties:
            session.openers[party].finish()
            table = pa.concat_tables(session.tables[party])
            for name in table.column_names:
                if name in columns:
                    raise ProgrammingError(f"column {name!r} is sent by several parties of query "
                                           f"{spec.query_id!r}; rename it at one of them")
                columns[name] = column_array(table, name, party)
        sql_columns = {sql_column(name) for name in columns}  # a text's limbs and its NULL flag: one column
        if len(sql_columns) > self.config.max_columns:
            raise DataError(f"query {spec.query_id!r} has {len(sql_columns)} columns, over the enclave's "
                            f"{self.config.max_columns}")
        session.tables.clear()
        result = evaluate(spec.program, columns)
        sealed = seal_result(self._key, spec, result, simulated=self.config.simulation)
        return [(wire.SEALED_BATCH, b.to_bytes()) for b in sealed]
