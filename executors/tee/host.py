"""The host's side: start the enclave process, attest it, run sessions, stop it.

    host = EnclaveHost(authority, {expected_measurement()})    # or a path to the authority key
    enclave = host.start()                                     # subprocess + provisioning + verified quote
    quote = host.quote(nonce)                                  # a fresh quote for a party's own nonce
    session = host.session(spec)                               # SessionSpec: query id, program, parties, recipient
    session.submit_all(sealed_batches)                         # from seal_inputs at each party
    sealed_result = session.run()                              # sealed to spec.recipient
    host.stop()

The host is untrusted for confidentiality: it sees only sealed batches, quotes and sizes. The
subprocess never outlives it: it is killed by `stop()`, by the context manager, by a finaliser
when the host is collected or the interpreter exits, and it exits by itself when its parent dies
(end of stdin, plus a parent watchdog). A dead enclave surfaces as `ProtocolError`
at once (end of its stdout); one that stops answering, after `timeout` seconds, and is killed.

Bridging onto the project's channel: every frame is an `Envelope(sender, recipient, tag,
payload)`; `EnclaveProcess.request(envelope)` forwards one and returns the answers, so a host
party can relay `SealedBatch.to_bytes()` payloads it receives from other parties unchanged.
"""

from __future__ import annotations

import collections
import os
import queue
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from sqlsecure.errors import DataError, InternalError, ProgrammingError, ProtocolError
from sqlsecure.executors.tee import wire
from sqlsecure.executors.tee.attestation import (
    AttestedEnclave, EnclaveConfig, Quote, SimulationAuthority, fresh_nonce, verify_quote,
)
from sqlsecure.executors.tee.program import SessionSpec
from sqlsecure.executors.tee.sealing import SealingError
from sqlsecure.executors.tee.wire import ENCLAVE, HOST, Envelope, SealedBatch

DEFAULT_TIMEOUT = 120.0
START_TIMEOUT = DEFAULT_TIMEOUT  # a slow start (an interpreter importing on a loaded machine) is not a failure;
# a process that dies is noticed at once (its stdout ends), so only a hung one waits this long
MODULE = "sqlsecure.executors.tee.main"

_ERRORS = {"sealing": SealingError, "protocol": ProtocolError, "data": DataError,
           "program": ProgrammingError, "internal": InternalError}


def raise_failure(envelope: Envelope, doing: str) -> None:
    failure = wire.Failure.from_bytes(envelope.payload, envelope.sender)
    raise _ERRORS[failure.kind](f"the enclave refused {doing}: {failure.message}")


class _Ended:
    """Queued by the reader thread when the enclave's stdout ends (or carries garbage)."""

    def __init__(self, problem: str):
        self.problem = problem


def _terminate(proc: subprocess.Popen) -> None:
    """Kill the process if it still runs and reap it (used by stop() and the finaliser)."""
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - a SIGKILLed process always ends
        pass
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        try:
            if stream:
                stream.close()
        except OSError:
            pass


class EnclaveProcess:
    """The enclave subprocess and its framed pipes: send one envelope, receive the answers."""

    def __init__(self, *, python: str | None = None, max_frame_bytes: int = 1 << 30,
                 env: Mapping[str, str] | None = None, command: Sequence[str] | None = None):
        """`command` replaces `python -I -m sqlsecure.executors.tee.main --parent PID` (e.g.
        ["gramine-sgx", "sqlsecure-enclave"] under Gramine; see docs/enclave.md)."""
        self.max_frame_bytes = max_frame_bytes
        if command is None:
            command = [python or sys.executable, "-I", "-m", MODULE, "--parent", str(os.getpid())]
        command = list(command)
        self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, close_fds=True,
                                      env=dict(env) if env is not None else None)
        self._finalizer = weakref.finalize(self, _terminate, self._proc)
        self._answers: queue.Queue = queue.Queue()
        self._stderr = collections.deque(maxlen=40)
        self._lock = threading.Lock()
        threading.Thread(target=self._read_frames, name="enclave-stdout", daemon=True).start()
        threading.Thread(target=self._read_stderr, name="enclave-stderr", daemon=True).start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def _read_frames(self) -> None:
        try:
            while True:
                envelope = wire.read_frame(self._proc.stdout, self.max_frame_bytes, ENCLAVE)
                if envelope is None:
                    self._answers.put(_Ended("the enclave process closed its output"))
                    return
                self._answers.put(envelope)
        except (ProtocolError, OSError, ValueError) as exc:
            self._answers.put(_Ended(f"the enclave's output broke off: {exc}"))

    def _read_stderr(self) -> None:
        try:
            for line in self._proc.stderr:
                self._stderr.append(line.decode("utf-8", "replace").rstrip())
        except (OSError, ValueError):
            pass

    def _dead(self, problem: str, doing: str) -> ProtocolError:
        try:
            code = self._proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        tail = "\n  ".join(list(self._stderr)[-8:])
        status = f"exited with code {code}" if code is not None else "stopped answering"
        return ProtocolError(f"enclave process {self.pid} {status} while the host was {doing} ({problem})"
                             + (f"; its last output:\n  {tail}" if tail else ""))

    def send(self, envelope: Envelope, doing: str) -> None:
        try:
            wire.write_frame(self._proc.stdin, envelope)
        except (BrokenPipeError, OSError, ValueError) as exc:
            raise self._dead(f"cannot write to it: {exc}", doing) from None

    def receive(self, timeout: float, doing: str) -> Envelope:
        try:
            item = self._answers.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise ProtocolError(f"enclave process {self.pid} did not answer within {timeout:g} s while the "
                                f"host was {doing}; it was stopped") from None
        if isinstance(item, _Ended):
            self._answers.put(item)  # every later call fails at once too
            raise self._dead(item.problem, doing)
        return item

    def request(self, envelope: Envelope, timeout: float, doing: str | None = None) -> list[Envelope]:
        """Forward one envelope and collect its answers: one, or a sealed stream up to its last batch."""
        doing = doing or f"waiting for the answer to {envelope.tag!r}"
        with self._lock:
            self.send(envelope, doing)
            answers = [self.receive(timeout, doing)]
            while answers[-1].tag == wire.SEALED_BATCH and not SealedBatch.from_bytes(answers[-1].payload, ENCLAVE).is_last:
                answers.append(self.receive(timeout, doing))
            return answers

    def close(self, grace: float = 2.0) -> None:
        """Ask the enclave to shut down, kill it if it does not within `grace` seconds, reap it."""
        if self.alive:
            try:
                wire.write_frame(self._proc.stdin, Envelope(HOST, ENCLAVE, wire.SHUTDOWN))
                self._proc.wait(timeout=grace)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
        self._finalizer()  # kills if still running, reaps, closes the pipes; runs once

    def kill(self) -> None:
        """Kill the process abruptly (tests of failure handling)."""
        self._proc.kill()


class EnclaveHost:
    """Starts, attests and drives one enclave process (see module doc)."""

    def __init__(self, authority: SimulationAuthority | str | os.PathLike | None,
                 allowed_measurements: Iterable[bytes], *, config: EnclaveConfig | None = None,
                 timeout: float = DEFAULT_TIMEOUT, start_timeout: float = START_TIMEOUT,
                 python: str | None = None, command: Sequence[str] | None = None):
        if authority is None:
            authority = SimulationAuthority.generate()
        elif not isinstance(authority, SimulationAuthority):
            authority = SimulationAuthority.load(Path(authority))
        self.authority = authority
        self.allowed_measurements = frozenset(bytes(m) for m in allowed_measurements)
        self.config = config or EnclaveConfig()
        self.timeout = timeout
        self.start_timeout = start_timeout
        self.python = python
        self.command = command
        self.process: EnclaveProcess | None = None
        self._attested: AttestedEnclave | None = None

    # -- lifecycle --

    def start(self) -> AttestedEnclave:
        """Start the enclave process, provision it and verify its quote over a fresh nonce."""
        if self.process is not None:
            raise ProgrammingError("this enclave host is already started")
        self.process = EnclaveProcess(python=self.python, max_frame_bytes=self.config.max_frame_bytes,
                                      command=self.command)
        try:
            provision = wire.Provision(self.config.to_bytes(), self.authority.private_bytes())
            self._expect(Envelope(HOST, ENCLAVE, wire.PROVISION, provision.to_bytes()), wire.READY,
                         "provisioning the enclave", self.start_timeout)
            nonce = fresh_nonce()
            quote = self.quote(nonce, timeout=self.start_timeout)
            self._attested = verify_quote(quote, self.authority.public_key, self.allowed_measurements, nonce)
        except BaseException:
            self.stop()
            raise
        return self._attested

    def stop(self) -> None:
        if self.process is not None:
            self.process.close()
        self._attested = None

    close = stop

    def __enter__(self) -> "EnclaveHost":
        if self.process is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def attested(self) -> AttestedEnclave:
        if self._attested is None:
            raise ProgrammingError("the enclave is not started (call start())")
        return self._attested

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    # -- requests --

    def _expect(self, envelope: Envelope, tag: str, doing: str, timeout: float | None = None) -> list[Envelope]:
        if self.process is None:
            raise ProgrammingError("the enclave is not started (call start())")
        answers = self.process.request(envelope, self.timeout if timeout is None else timeout, doing)
        if answers[0].tag == wire.FAILURE:
            raise_failure(answers[0], doing)
        if answers[0].tag != tag:
            raise ProtocolError(f"the enclave answered {answers[0].tag!r} while the host was {doing}, expected {tag!r}")
        return answers

    def quote(self, nonce: bytes, *, timeout: float | None = None) -> Quote:
        """A quote over a verifier's fresh 32-byte nonce (each party verifies it with `verify_quote`)."""
        answer = self._expect(Envelope(HOST, ENCLAVE, wire.QUOTE_REQUEST, wire.QuoteRequest(bytes(nonce)).to_bytes()),
                              wire.QUOTE, "requesting a quote", timeout)[0]
        return Quote.from_bytes(answer.payload)

    def session(self, spec: SessionSpec) -> "EnclaveSession":
        """Open a session for one query (its id must be new to this enclave)."""
        self._expect(Envelope(HOST, ENCLAVE, wire.SESSION_OPEN, spec.to_bytes()), wire.ACK,
                     f"opening the session of query {spec.query_id!r}")
        return EnclaveSession(self, spec)

    def run(self, spec: SessionSpec, inputs: Mapping[str, Iterable[SealedBatch]]) -> list[SealedBatch]:
        """One query start to finish: open the session, submit every party's batches, run."""
        session = self.session(spec)
        for party in spec.parties:
            session.submit_all(inputs.get(party, ()))
        return session.run()


class EnclaveSession:
    """One query at the enclave: submit sealed batches (in order, per party), then run once."""

    def __init__(self, host: EnclaveHost, spec: SessionSpec):
        self.host = host
        self.spec = spec

    def submit(self, batch: SealedBatch) -> None:
        """Forward one party's sealed batch; a refused batch raises here and aborts the session."""
        self.host._expect(Envelope(batch.sender, ENCLAVE, wire.SEALED_BATCH, batch.to_bytes()), wire.ACK,
                          f"forwarding batch {batch.seq} of {batch.sender!r} for query {self.spec.query_id!r}")

    def submit_all(self, batches: Iterable[SealedBatch]) -> None:
        for batch in batches:
            self.submit(batch)

    def run(self, timeout: float | None = None) -> list[SealedBatch]:
        """Evaluate the program; the result comes back sealed to the recipient (open it with open_result)."""
        answers = self.host._expect(Envelope(HOST, ENCLAVE, wire.RUN, wire.RunRequest(self.spec.query_id).to_bytes()),
                                    wire.SEALED_BATCH, f"running query {self.spec.query_id!r}", timeout)
        return [SealedBatch.from_bytes(a.payload, ENCLAVE) for a in answers]
