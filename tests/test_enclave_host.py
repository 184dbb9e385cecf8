"""The enclave as a subprocess: attestation at start, an end-to-end query against plain DuckDB, and
its lifecycle (a killed or hung enclave is a ProtocolError within a timeout; it never outlives its host)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from sqlsecure.errors import ProtocolError
from sqlsecure.executors.tee import (
    AttestationError, EnclaveHost, EnclaveProgram, ResultKey, SealingError, SessionSpec, SimulationAuthority,
    create_authority, expected_measurement, fresh_nonce, open_result, seal_inputs, verify_quote,
)


def running(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


PROCESS_GONE = 60  # seconds: a poll returns as soon as the process is gone; this bounds a hang, not a speed


def wait_until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture(scope="module")
def authority():
    return SimulationAuthority.generate()


@pytest.fixture(scope="module")
def host(authority):
    with EnclaveHost(authority, {expected_measurement()}, timeout=60) as h:
        yield h


def party_view(host, authority):
    """What a party does before sealing: its own nonce, its own verification."""
    nonce = fresh_nonce()
    return verify_quote(host.quote(nonce), authority.public_bytes, {expected_measurement()}, nonce)


def test_start_attests_a_simulated_enclave(host):
    assert host.attested.simulated and host.attested.measurement == expected_measurement()
    assert running(host.pid)


def test_query_matches_duckdb(host, authority):
    rng = np.random.default_rng(3)
    n = 5000
    bank = pa.table({"region": rng.integers(0, 5, n), "age": rng.integers(18, 80, n)})
    shop = pa.table({"category": rng.integers(0, 7, n), "amount": rng.normal(50, 20, n)})
    issuer_key = ResultKey.generate()
    program = EnclaveProgram(group_keys=["region", "category"],
                             aggregates=[("count", None, "n"), ("sum", "amount", "revenue"), ("avg", "age", "avg_age"),
                                         ("max", "amount", "top")],
                             order=[("revenue", True)], limit=10, min_group_size=4)
    spec = SessionSpec("host-q1", program, ("bank", "shop"), "bank", issuer_key.public_bytes)
    inputs = {party: seal_inputs(party_view(host, authority), spec, party, table, batch_rows=1500)
              for party, table in (("bank", bank), ("shop", shop))}
    sealed = host.run(spec, inputs)
    result = open_result(party_view(host, authority), spec, issuer_key, sealed)
    assert result.simulated
    con = duckdb.connect()
    joined = pa.table({**{c: bank[c] for c in bank.column_names}, **{c: shop[c] for c in shop.column_names}})
    con.register("t", joined)
    expected = con.execute("""SELECT region, category, COUNT(*) AS n, SUM(amount) AS revenue, AVG(age) AS avg_age,
                              MAX(amount) AS top FROM t GROUP BY ALL HAVING COUNT(*) >= 4
                              ORDER BY revenue DESC LIMIT 10""").fetchall()
    got = [tuple(r.values()) for r in result.table.to_pylist()]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g[:3] == e[:3] and g[5] == e[5]
        assert g[3] == pytest.approx(e[3], rel=1e-9) and g[4] == pytest.approx(e[4], rel=1e-12)


def test_sort_matches_duckdb(host, authority):
    rng = np.random.default_rng(4)
    a = pa.table({"k": rng.integers(0, 50, 3000)})
    b = pa.table({"v": rng.integers(-10**9, 10**9, 3000)})
    key = ResultKey.generate()
    spec = SessionSpec("host-sort", EnclaveProgram(order=[("k", False), ("v", True)]), ("a", "b"), "a",
                       key.public_bytes)
    enclave = party_view(host, authority)
    session = host.session(spec)
    session.submit_all(seal_inputs(enclave, spec, "a", a))
    session.submit_all(seal_inputs(enclave, spec, "b", b))
    got = open_result(enclave, spec, key, session.run()).table
    con = duckdb.connect()
    con.register("t", pa.table({"k": a["k"], "v": b["v"]}))
    assert [tuple(r.values()) for r in got.to_pylist()] == con.execute("SELECT k, v FROM t ORDER BY k, v DESC").fetchall()


def test_tampered_batch_is_refused_through_the_host(host, authority):
    key = ResultKey.generate()
    spec = SessionSpec("host-tamper", EnclaveProgram(aggregates=[("sum", "v")]), ("a",), "a", key.public_bytes)
    session = host.session(spec)
    (batch,) = seal_inputs(party_view(host, authority), spec, "a", pa.table({"v": [1, 2, 3]}))
    bad = bytearray(batch.ciphertext)
    bad[0] ^= 1
    with pytest.raises(SealingError, match="failed authentication"):
        session.submit(dataclasses.replace(batch, ciphertext=bytes(bad)))
    with pytest.raises(SealingError, match="aborted"):
        session.run()
    assert running(host.pid)  # the enclave keeps serving other sessions


def test_unknown_measurement_stops_the_process(authority):
    host = EnclaveHost(authority, {bytes(32)}, timeout=30)
    with pytest.raises(AttestationError, match="not among"):
        host.start()
    assert host.process is not None and not running(host.process.pid)


def test_killed_enclave_is_a_protocol_error_at_once(tmp_path):
    path = tmp_path / "authority.pem"
    create_authority(path)
    host = EnclaveHost(path, {expected_measurement()}, timeout=60)
    host.start()
    try:
        host.process.kill()
        with pytest.raises(ProtocolError, match="exited with code"):
            host.quote(fresh_nonce())
        with pytest.raises(ProtocolError, match="exited"):  # and again, without waiting
            host.quote(fresh_nonce())
        # "exited", not "did not answer within 60 s": the host saw the end of its output and did not wait
        # for the timeout (a bound on the elapsed time would measure the machine's load instead)
    finally:
        host.stop()


def test_hung_enclave_times_out_and_is_killed(authority):
    host = EnclaveHost(authority, {expected_measurement()}, timeout=1.0)
    host.start()
    pid = host.pid
    try:
        os.kill(pid, signal.SIGSTOP)
        t0 = time.monotonic()
        with pytest.raises(ProtocolError, match="did not answer within 1 s"):
            host.quote(fresh_nonce())
        assert time.monotonic() - t0 >= 1.0  # it waited the timeout (an upper bound would measure the load)
        assert wait_until(lambda: not running(pid), PROCESS_GONE)
    finally:
        host.stop()


def test_stop_ends_the_process(authority):
    with EnclaveHost(authority, {expected_measurement()}) as host:
        pid = host.pid
        assert running(pid)
    assert wait_until(lambda: not running(pid), PROCESS_GONE)


PARENT = """
import sys, time
from sqlsecure.executors.tee import EnclaveHost, expected_measurement
host = EnclaveHost(None, {expected_measurement()})
host.start()
print(host.pid, flush=True)
time.sleep(60)
"""


def test_enclave_dies_with_its_parent():
    parent = subprocess.Popen([sys.executable, "-I", "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        assert running(pid)
        parent.kill()  # SIGKILL: no finaliser runs in the parent
        parent.wait(PROCESS_GONE)
        assert wait_until(lambda: not running(pid), PROCESS_GONE), "the enclave outlived its host"
    finally:
        parent.kill()
