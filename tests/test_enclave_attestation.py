"""Attestation (simulation backend): a quote is accepted only when signed by the pinned authority,
fresh for the verifier's nonce, and from an allowed measurement."""

from __future__ import annotations

import dataclasses

import pytest

from sqlsecure.errors import ProtocolError
from sqlsecure.executors.tee.attestation import (
    AttestationError, EnclaveConfig, Quote, SimulationAuthority, create_authority, expected_measurement,
    fresh_nonce, measure, source_files, verify_quote,
)

KEY = bytes(range(32))


@pytest.fixture(scope="module")
def authority():
    return SimulationAuthority.generate()


def signed(authority, nonce, measurement=None):
    return authority.sign_quote(measurement or expected_measurement(), KEY, nonce)


def test_good_quote_is_accepted_and_marked_simulated(authority):
    nonce = fresh_nonce()
    quote = signed(authority, nonce)
    enclave = verify_quote(quote.to_bytes(), authority.public_bytes, {expected_measurement()}, nonce)
    assert enclave.public_key == KEY and enclave.simulated and quote.simulated
    assert enclave.measurement == expected_measurement() and "SIMULATED" in enclave.describe()


def test_tampered_measurement_fails_the_signature(authority):
    nonce = fresh_nonce()
    quote = signed(authority, nonce)
    forged = dataclasses.replace(quote, measurement=bytes(32))
    with pytest.raises(AttestationError, match="signature") as info:
        verify_quote(forged, authority.public_key, {bytes(32), expected_measurement()}, nonce)
    assert info.value.reason == "signature" and isinstance(info.value, ProtocolError)
    with pytest.raises(AttestationError, match="signature"):
        verify_quote(dataclasses.replace(quote, enclave_key=bytes(31) + b"\x09"), authority, {expected_measurement()},
                     nonce)


def test_unknown_measurement_is_refused(authority):
    nonce = fresh_nonce()
    other = expected_measurement(EnclaveConfig(max_rows=5))
    with pytest.raises(AttestationError, match="not among the 1 allowed") as info:
        verify_quote(signed(authority, nonce, other), authority, {expected_measurement()}, nonce)
    assert info.value.reason == "measurement"


def test_wrong_authority_is_refused(authority):
    nonce = fresh_nonce()
    with pytest.raises(AttestationError, match="signature"):
        verify_quote(signed(SimulationAuthority.generate(), nonce), authority, {expected_measurement()}, nonce)


def test_stale_nonce_is_refused(authority):
    old, new = fresh_nonce(), fresh_nonce()
    with pytest.raises(AttestationError, match="stale or replayed") as info:
        verify_quote(signed(authority, old), authority, {expected_measurement()}, new)
    assert info.value.reason == "nonce"


def test_hardware_can_be_required(authority):
    nonce = fresh_nonce()
    with pytest.raises(AttestationError, match="simulated") as info:
        verify_quote(signed(authority, nonce), authority, {expected_measurement()}, nonce, require_hardware=True)
    assert info.value.reason == "hardware"


def test_malformed_quote(authority):
    with pytest.raises(AttestationError, match="malformed quote"):
        verify_quote(b"\0" * 10, authority, {expected_measurement()}, fresh_nonce())
    data = bytearray(signed(authority, fresh_nonce()).to_bytes())
    data[64] = 7  # the simulated flag byte
    with pytest.raises(AttestationError):
        Quote.from_bytes(bytes(data))


def test_measurement_covers_sources_and_config(tmp_path):
    files = source_files()
    assert [f.name for f in files] == sorted(f.name for f in files) and any(f.name == "main.py" for f in files)
    assert measure(EnclaveConfig()) == expected_measurement()
    assert measure(EnclaveConfig(max_rows=7)) != measure(EnclaveConfig())
    copies = []
    for f in files:
        copy = tmp_path / f.name
        copy.write_bytes(f.read_bytes())
        copies.append(copy)
    assert measure(EnclaveConfig(), copies) == expected_measurement()
    copies[0].write_bytes(copies[0].read_bytes() + b"\n# patched\n")
    assert measure(EnclaveConfig(), copies) != expected_measurement()


def test_authority_saved_and_loaded(tmp_path):
    path = tmp_path / "authority.pem"
    authority = create_authority(path)
    assert (path.stat().st_mode & 0o777) == 0o600 and path.with_name("authority.pem.pub").exists()
    loaded = SimulationAuthority.load(path)
    nonce = fresh_nonce()
    verify_quote(signed(loaded, nonce), authority.public_bytes, {expected_measurement()}, nonce)
