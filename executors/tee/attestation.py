"""Enclave identity and attestation (simulation backend).

Measurement  SHA-256 over a domain tag, the enclave package's source files (`*.py` of this folder,
             sorted by file name, each as length-prefixed name and content) and the canonical bytes
             of its `EnclaveConfig`. It stands for SGX's MRENCLAVE; under real SGX the value the
             verifier pins is the MRENCLAVE that `gramine-sgx-sign` prints instead.
Quote        (measurement, the enclave's fresh X25519 public key, simulated flag, the verifier's
             32-byte nonce), signed with Ed25519 over a domain-separated encoding by a platform
             key. In simulation the platform key belongs to a locally generated test authority
             (`SimulationAuthority`); the host hands its private key to the enclave process at
             provisioning, so anyone holding that file can forge quotes (see docs/enclave.md).
verify_quote Checks, in this order: encoding, signature under the authority's public key, the
             nonce (freshness), the measurement against an allow-list, and optionally that the
             quote is not simulated. Every refusal is an `AttestationError` (a `ProtocolError`):
             an unknown measurement means the peer is not the code the verifier agreed to talk to,
             a property of the peer and not of the query, so it is not a `PolicyViolation`.
             `AttestationError.reason` says which check failed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sqlsecure.errors import ConfigError, ProtocolError
from sqlsecure.executors.tee.wire import Reader

MEASUREMENT_DOMAIN = b"sqlsecure/enclave/measurement/v1\0"
QUOTE_DOMAIN = b"sqlsecure/enclave/quote/v1\0"
NONCE_BYTES = 32
KEY_BYTES = 32
SIGNATURE_BYTES = 64
QUOTE_BYTES = 32 + KEY_BYTES + 1 + NONCE_BYTES + SIGNATURE_BYTES


class AttestationError(ProtocolError):
    """A quote was refused. `reason` is one of: format, signature, nonce, measurement, hardware."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class EnclaveConfig:
    """The enclave's configuration; part of its measurement (a different config is a different enclave)."""

    max_rows: int = 1 << 24           # rows per session, all parties' columns aligned
    max_columns: int = 256            # SQL columns per session (a text's limbs and NULL flags count with it)
    max_frame_bytes: int = 1 << 30    # one frame on the pipe
    simulation: bool = True           # False only under a hardware backend (not implemented here)

    def __post_init__(self):
        for name in ("max_rows", "max_columns", "max_frame_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"enclave config: {name} must be a positive integer, got {value!r}")

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "EnclaveConfig":
        try:
            fields = json.loads(data.decode())
            return cls(**fields)
        except (ValueError, TypeError) as exc:
            raise ProtocolError(f"malformed enclave configuration: {exc}") from None


def source_files() -> list[Path]:
    """The files that define the enclave's code: this package's `*.py`, sorted by name."""
    return sorted(Path(__file__).parent.glob("*.py"), key=lambda p: p.name)


def measure(config: EnclaveConfig, files: Iterable[Path] | None = None) -> bytes:
    """SHA-256 over the enclave's sources and configuration (32 bytes)."""
    h = hashlib.sha256(MEASUREMENT_DOMAIN)
    for path in (source_files() if files is None else files):
        for part in (path.name.encode(), path.read_bytes()):
            h.update(len(part).to_bytes(8, "big"))
            h.update(part)
    raw = config.to_bytes()
    h.update(len(raw).to_bytes(8, "big"))
    h.update(raw)
    return h.digest()


def expected_measurement(config: EnclaveConfig | None = None) -> bytes:
    """The measurement an enclave started from this installation with `config` will report."""
    return measure(config or EnclaveConfig())


def fresh_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


@dataclass(frozen=True)
class Quote:
    """A signed statement: this code (measurement) holds the private half of `enclave_key`."""

    measurement: bytes
    enclave_key: bytes   # X25519 public key, raw 32 bytes
    simulated: bool
    nonce: bytes
    signature: bytes

    def signed_bytes(self) -> bytes:
        return quote_body(self.measurement, self.enclave_key, self.simulated, self.nonce)

    def to_bytes(self) -> bytes:
        return self.signed_bytes()[len(QUOTE_DOMAIN):] + self.signature

    @classmethod
    def from_bytes(cls, data: bytes, frm: str = "enclave") -> "Quote":
        if len(data) != QUOTE_BYTES:
            raise AttestationError("format", f"malformed quote from {frm!r}: {len(data)} bytes, expected {QUOTE_BYTES}")
        r = Reader(data, "quote", frm)
        measurement, key = r.take(32), r.take(KEY_BYTES)
        try:
            simulated = r.flag()
        except ProtocolError as exc:
            raise AttestationError("format", str(exc)) from None
        return cls(measurement, key, simulated, r.take(NONCE_BYTES), r.take(SIGNATURE_BYTES))


def quote_body(measurement: bytes, enclave_key: bytes, simulated: bool, nonce: bytes) -> bytes:
    if len(measurement) != 32 or len(enclave_key) != KEY_BYTES or len(nonce) != NONCE_BYTES:
        raise AttestationError("format", "a quote needs a 32-byte measurement, key and nonce")
    return QUOTE_DOMAIN + measurement + enclave_key + bytes([int(simulated)]) + nonce


@dataclass(frozen=True)
class AttestedEnclave:
    """What a verifier knows after `verify_quote`: seal to `public_key` only through this object."""

    measurement: bytes
    public_key: bytes
    simulated: bool

    def describe(self) -> str:
        mode = "SIMULATED enclave (no hardware protection)" if self.simulated else "hardware enclave"
        return f"{mode}, measurement {self.measurement.hex()[:16]}…, key {self.public_key.hex()[:16]}…"


class SimulationAuthority:
    """A locally generated Ed25519 test authority that stands in for the platform's quoting key.

    Whoever holds its private key can sign any quote: it proves nothing against the machine's owner.
    """

    def __init__(self, private_key: Ed25519PrivateKey):
        self._private_key = private_key

    @classmethod
    def generate(cls) -> "SimulationAuthority":
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SimulationAuthority":
        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"{path}: cannot load the enclave test authority key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{path}: the enclave test authority key must be an Ed25519 private key")
        return cls(key)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the private key (PKCS#8 PEM, mode 0600); the public key goes to `path` + '.pub'."""
        path = Path(path)
        pem = self._private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        path.with_name(path.name + ".pub").write_bytes(self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        return path

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._private_key.public_key()

    @property
    def public_bytes(self) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def private_bytes(self) -> bytes:
        """Raw private key, for provisioning a simulated enclave only."""
        return self._private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                               serialization.NoEncryption())

    def sign_quote(self, measurement: bytes, enclave_key: bytes, nonce: bytes) -> Quote:
        return sign_quote(self._private_key, measurement, enclave_key, nonce)


def create_authority(path: str | os.PathLike | None = None) -> SimulationAuthority:
    """A new test authority key pair; saved to `path` (and `path`.pub) when given."""
    authority = SimulationAuthority.generate()
    if path is not None:
        authority.save(path)
    return authority


def sign_quote(key: Ed25519PrivateKey, measurement: bytes, enclave_key: bytes, nonce: bytes) -> Quote:
    """A simulated quote (always `simulated=True`: nothing here is a hardware report)."""
    body = quote_body(measurement, enclave_key, True, nonce)
    return Quote(measurement, enclave_key, True, nonce, key.sign(body))


def _public_key(key: Ed25519PublicKey | bytes | SimulationAuthority) -> Ed25519PublicKey:
    if isinstance(key, SimulationAuthority):
        return key.public_key
    if isinstance(key, Ed25519PublicKey):
        return key
    try:
        return Ed25519PublicKey.from_public_bytes(bytes(key))
    except (ValueError, TypeError) as exc:
        raise AttestationError("format", f"authority public key must be 32 raw Ed25519 bytes: {exc}") from None


def verify_quote(quote: Quote | bytes, authority_public_key: Ed25519PublicKey | bytes | SimulationAuthority,
                 allowed_measurements: Iterable[bytes], nonce: bytes, *,
                 require_hardware: bool = False) -> AttestedEnclave:
    """Accept `quote` only if the authority signed it, it answers `nonce`, and its measurement is allowed.

    Raises `AttestationError` (a `ProtocolError`) naming the failed check; `reason` is one of
    format, signature, nonce, measurement, hardware.
    """
    if not isinstance(quote, Quote):
        quote = Quote.from_bytes(bytes(quote))
    try:
        _public_key(authority_public_key).verify(quote.signature, quote.signed_bytes())
    except InvalidSignature:
        raise AttestationError("signature", "enclave quote refused: its signature does not verify under the "
                               "expected attestation authority (forged, altered, or signed by another "
                               "authority); check the authority public key you pinned") from None
    if len(nonce) != NONCE_BYTES or not hmac.compare_digest(quote.nonce, bytes(nonce)):
        raise AttestationError("nonce", "enclave quote refused: it answers another nonce than the fresh one "
                               "this verifier sent (stale or replayed quote); request a new quote")
    allowed = {bytes(m) for m in allowed_measurements}
    if not any(hmac.compare_digest(quote.measurement, m) for m in allowed):
        raise AttestationError("measurement", f"enclave quote refused: measurement {quote.measurement.hex()} is "
                               f"not among the {len(allowed)} allowed measurement(s) (different enclave code or "
                               "configuration); pin `expected_measurement(config)` of the build you reviewed")
    if require_hardware and quote.simulated:
        raise AttestationError("hardware", "enclave quote refused: it comes from a simulated enclave and this "
                               "verifier requires hardware attestation")
    return AttestedEnclave(quote.measurement, quote.enclave_key, quote.simulated)
