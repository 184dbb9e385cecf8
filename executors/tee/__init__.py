"""TEEU: a trusted-execution enclave for oblivious sort / group-by / aggregation (simulation backend).

The enclave is its own process (`python -m sqlsecure.executors.tee.main`) speaking framed
envelopes over stdin/stdout. Parties verify its quote, seal their Arrow batches to its attested
X25519 key, the enclave evaluates a small `EnclaveProgram` with data-independent access patterns and
seals the result to the recipient. Without SGX hardware everything is marked `simulated=True`;
see docs/enclave.md for what simulation does and does not give, and the path to Gramine-SGX.

Modules: `wire` (frames and messages), `attestation` (measurement, quotes, test authority),
`sealing` (X25519 + HKDF + AES-GCM streams), `oblivious` (bitonic sort, group-by, aggregates,
ORDER BY / LIMIT, access traces), `program` (EnclaveProgram, SessionSpec, evaluation), `core` (the
enclave's state machine), `main` (the enclave process), `host` (EnclaveHost, EnclaveSession), `stage` (the enclave stage of a plan:
parties seal their inputs, the enclave runs the program, the result is sealed to the issuer).
"""

from sqlsecure.executors.tee.attestation import (
    AttestationError, AttestedEnclave, EnclaveConfig, Quote, SimulationAuthority, create_authority,
    expected_measurement, fresh_nonce, verify_quote,
)
from sqlsecure.executors.tee.host import EnclaveHost, EnclaveProcess, EnclaveSession
from sqlsecure.executors.tee.oblivious import AccessTrace
from sqlsecure.executors.tee.program import Aggregate, EnclaveProgram, SessionSpec, evaluate
from sqlsecure.executors.tee.sealing import (
    EnclaveResult, ResultKey, SealingError, open_result, seal_inputs,
)
from sqlsecure.executors.tee.wire import ENCLAVE, Envelope, SealedBatch

__all__ = [
    "AccessTrace", "Aggregate", "AttestationError", "AttestedEnclave", "ENCLAVE", "EnclaveConfig", "EnclaveHost",
    "EnclaveProcess", "EnclaveProgram", "EnclaveResult", "EnclaveSession", "Envelope", "Quote", "ResultKey",
    "SealedBatch", "SealingError", "SessionSpec", "SimulationAuthority", "create_authority", "evaluate",
    "expected_measurement", "fresh_nonce", "open_result", "seal_inputs", "verify_quote",
]
