"""ECDH-PSI against its plaintext reference; encoding rules; communication bounds; the worker processes."""

import decimal
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from itertools import product

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlsecure.errors import OperationalError, ProtocolError
from sqlsecure.executors.psi import blinding as ecdh
from sqlsecure.executors.psi import ecdh as psi
from sqlsecure.executors.runtime.channel import InProcessChannel
from sqlsecure.executors.psi.blinding import PARALLEL_MIN, BlindingKey, GroupWorkers, hash_to_points, worker_pids
from sqlsecure.executors.psi.encoding import encode_keys
from sqlsecure.executors.psi.ecdh import compose_matches, local_join_indices, psi_join_indices, psi_membership

PROCESS_GONE = 60  # seconds: polls for workers to end return as soon as they have; this bounds a hang, not a speed


def nested_loop_join(left, right):
    """The reference of the reference: every (i, j) with equal non-NULL keys."""
    return sorted((i, j) for (i, a), (j, b) in product(enumerate(left), enumerate(right))
                  if a is not None and a == b)


def run_psi(left, right, channel=None, workers=None, membership=False):
    channel = channel or InProcessChannel(["a", "b"], timeout=30)

    def side(peer, keys, is_left):
        if membership:
            return lambda ep: psi_membership(ep, peer, "t", keys, workers)
        return lambda ep: psi_join_indices(ep, peer, "t", keys, is_left, workers)

    out = channel.run({"a": side("b", left, True), "b": side("a", right, False)})
    return out["a"], out["b"], channel


def enc(values):
    return [None if v is None else str(v).encode() for v in values]


def test_local_reference_matches_nested_loop():
    left = enc([1, 2, 2, None, 3, 5])
    right = enc([2, 2, 3, 3, None, 7, 1])
    li, ri = local_join_indices(left, right)
    assert sorted(zip(li.tolist(), ri.tolist())) == nested_loop_join(left, right)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(0, 8)), max_size=25),
       st.lists(st.one_of(st.none(), st.integers(0, 8)), max_size=25))
def test_psi_equals_reference(left_values, right_values):
    left, right = enc(left_values), enc(right_values)
    li, ri, _ = run_psi(left, right)
    assert len(li) == len(ri)
    assert sorted(zip(li.tolist(), ri.tolist())) == nested_loop_join(left, right)


def test_psi_communication_is_bounded():
    left = enc(list(range(100)) * 2)  # 100 distinct keys, each twice
    right = enc(range(50, 130))  # 80 distinct, 50 in common
    li, ri, channel = run_psi(left, right)
    assert len(li) == 100
    stats = channel.stats
    assert stats.messages[("a", "b")] == 3 and stats.messages[("b", "a")] == 3
    assert stats.bytes[("a", "b")] == 32 * 100 + 32 * 80 + 4 * 50
    assert stats.bytes[("b", "a")] == 32 * 80 + 32 * 100 + 4 * 50


def test_no_plaintext_key_crosses(channel_spy):
    secret = b"s" + b"customer-4711-secret"
    channel = InProcessChannel(["a", "b"])
    sent = channel_spy(channel)
    run_psi([secret, b"i1"], [b"i1", b"i2"], channel)
    assert sent and not any(secret in m or b"customer-4711" in m for m in sent)


def test_empty_and_disjoint():
    li, ri, _ = run_psi([], enc([1, 2]))
    assert len(li) == len(ri) == 0
    li, ri, _ = run_psi(enc([1]), enc([2]))
    assert len(li) == 0


def test_blinding_commutes():
    points = hash_to_points([b"x", b"y"])
    a, b = BlindingKey(), BlindingKey()
    assert a.blind(b.blind(points)) == b.blind(a.blind(points))
    with pytest.raises(ProtocolError):
        a.blind(b"short")


def test_peer_that_vanishes_fails_with_its_name():
    channel = InProcessChannel(["a", "b"], timeout=0.5)
    with pytest.raises(ProtocolError, match="'b'"):
        psi_join_indices(channel.endpoint("a"), "b", "t", enc([1, 2]), True)


def test_typed_encoding():
    ints = pa.table({"k": pa.array([5, 1], pa.int32())})
    bigints = pa.table({"k": pa.array([5], pa.int64())})
    strings = pa.table({"k": pa.array(["5", "1"])})
    decimals = pa.table({"k": pa.array([decimal.Decimal("5.50"), decimal.Decimal("500")], pa.decimal128(6, 2))})
    decimals2 = pa.table({"k": pa.array([decimal.Decimal("5.5")], pa.decimal128(4, 1))})
    assert encode_keys(ints, ("k",))[0] == encode_keys(bigints, ("k",))[0]
    assert not set(encode_keys(ints, ("k",))) & set(encode_keys(strings, ("k",)))
    assert encode_keys(decimals, ("k",))[0] == encode_keys(decimals2, ("k",))[0]
    assert encode_keys(decimals, ("k",))[1] == b"d500"
    two = pa.table({"a": ["x", "xy", None], "b": ["yz", "z", "q"]})
    encoded = encode_keys(two, ("a", "b"))
    assert encoded[0] != encoded[1] and encoded[2] is None  # no ambiguity from concatenation


def test_compose_matches_reference():
    rng = np.random.default_rng(3)
    provenance = rng.integers(0, 10, 40)
    matched = rng.integers(0, 12, 30)
    rows, pairs = compose_matches(provenance, matched)
    expected = [(t, k) for t in range(40) for k in range(30) if matched[k] == provenance[t]]
    assert list(zip(rows.tolist(), pairs.tolist())) == expected


# --- streaming in batches, and the X25519 worker processes -------------------------------------------


@pytest.fixture
def fresh_workers():
    """Tests that break worker processes start and end with none, so others get healthy ones."""
    ecdh.shutdown_workers()
    yield
    ecdh.shutdown_workers()


def random_keys(rng, n, universe, nulls=0.02):
    return [None if rng.random() < nulls else b"i%d" % v for v in rng.integers(0, universe, n).tolist()]


def test_psi_on_the_worker_processes_equals_reference():
    rng = np.random.default_rng(7)
    left, right = random_keys(rng, 4000, 5000), random_keys(rng, 3000, 5000)
    assert len(set(left)) > PARALLEL_MIN  # large enough for the workers
    li, ri, channel = run_psi(left, right, workers=GroupWorkers())
    assert worker_pids()
    ref = local_join_indices(left, right)
    assert sorted(zip(li.tolist(), ri.tolist())) == sorted(zip(*(r.tolist() for r in ref)))
    ma, mb, _ = run_psi(left, right, workers=GroupWorkers(), membership=True)
    left_set, right_set = set(left) - {None}, set(right) - {None}
    assert ma.tolist() == [k in right_set for k in left]
    assert mb.tolist() == [k in left_set for k in right]


def test_messages_are_batched_deterministically(monkeypatch):
    """Full batches of BATCH points, then one shorter (maybe empty) batch: counts follow from the sizes."""
    monkeypatch.setattr(psi, "BATCH", 1024)
    left = enc(list(range(2048)) * 2)  # 2,048 distinct keys: batches of 1,024, 1,024 and 0
    right = enc(range(1000, 4000))  # 3,000 distinct: 1,024, 1,024 and 952
    li, ri, channel = run_psi(left, right, workers=GroupWorkers())
    ref = local_join_indices(left, right)
    assert sorted(zip(li.tolist(), ri.tolist())) == sorted(zip(*(r.tolist() for r in ref)))
    stats = channel.stats
    assert stats.messages[("a", "b")] == 3 + 3 + 1 and stats.messages[("b", "a")] == 3 + 3 + 1
    assert stats.bytes[("a", "b")] == 32 * 2048 + 32 * 3000 + 4 * 1048
    assert stats.bytes[("b", "a")] == 32 * 3000 + 32 * 2048 + 4 * 1048


def test_an_oversized_batch_is_refused(monkeypatch):
    monkeypatch.setattr(psi, "BATCH", 4)
    channel = InProcessChannel(["a", "b"], timeout=5)
    channel.endpoint("b").send("a", "t/blinded", hash_to_points([b"%d" % i for i in range(5)]))
    with pytest.raises(ProtocolError, match=r"b sent a malformed PSI message \(160 bytes"):
        psi_join_indices(channel.endpoint("a"), "b", "t", enc([1, 2]), True)


def test_invalid_point_from_a_worker_is_a_protocol_error():
    points = bytearray(hash_to_points([b"%d" % i for i in range(PARALLEL_MIN)]))
    points[32 * 100:32 * 101] = bytes(32)  # u = 0: a point of small order, X25519 gives all zeros
    workers = GroupWorkers(2)
    with pytest.raises(ProtocolError, match="invalid group element"):
        BlindingKey().blind(bytes(points), workers)
    before = worker_pids()
    assert len(BlindingKey().blind(hash_to_points([b"x"] * PARALLEL_MIN), workers)) == 32 * PARALLEL_MIN
    assert worker_pids() == before  # the workers survived a bad input


def test_blinding_on_workers_equals_blinding_in_thread():
    points = hash_to_points([b"%d" % i for i in range(3 * PARALLEL_MIN + 5)])
    key = BlindingKey()
    assert key.blind(points, GroupWorkers(2)) == key.blind(points)


def test_a_killed_worker_fails_the_batch_with_its_pid_then_recovers(fresh_workers):
    workers = GroupWorkers(2)
    points = hash_to_points([b"%d" % i for i in range(8 * PARALLEL_MIN)])
    BlindingKey().blind(points[:32 * PARALLEL_MIN], workers)
    victim = worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(OperationalError, match=f"PSI worker process {victim} was killed by SIGKILL") as info:
        BlindingKey().blind(points, workers)
    assert not isinstance(info.value, ProtocolError)
    key = BlindingKey()
    assert key.blind(points, workers) == key.blind(points)  # a new worker took its place
    assert victim not in worker_pids()


def test_a_worker_that_cannot_start_fails_fast(fresh_workers, monkeypatch, tmp_path):
    monkeypatch.setattr(ecdh, "WORKER_SCRIPT", tmp_path / "missing.py")
    # "exited with code 2", not "still starting at its deadline" (60 s): the pool saw the worker's end at
    # once; the wording shows it, where a bound on the elapsed time would measure the machine's load
    with pytest.raises(OperationalError, match="PSI worker process .* exited with code 2 while starting"):
        BlindingKey().blind(hash_to_points([b"x"] * PARALLEL_MIN), GroupWorkers(2))


@pytest.mark.skipif(os.name != "posix", reason="SIGSTOP")
def test_a_silent_worker_is_killed_at_its_deadline(fresh_workers, monkeypatch):
    workers = GroupWorkers(2)
    points = hash_to_points([b"x"] * PARALLEL_MIN)
    BlindingKey().blind(points, workers)
    monkeypatch.setattr(ecdh, "JOB_SECONDS", 0.5)
    stopped = worker_pids()
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    with pytest.raises(OperationalError, match="was still blinding .* at its deadline and was killed"):
        BlindingKey().blind(points, workers)
    deadline = time.monotonic() + PROCESS_GONE
    while any(_alive(pid) for pid in stopped) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in stopped)


def _alive(pid: int) -> bool:
    """A running PSI worker (not gone, not a zombie, not a reused pid)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            worker = b"blinding_worker" in f.read()
    except OSError:
        return False
    return worker and state not in ("Z", "X")


HOST_WITHOUT_MAIN_GUARD = textwrap.dedent("""
    import threading
    import numpy as np
    from sqlsecure.executors.runtime.channel import InProcessChannel
    from sqlsecure.executors.psi.blinding import GroupWorkers, worker_pids
    from sqlsecure.executors.psi.ecdh import local_join_indices, psi_join_indices

    left = [b"i%d" % i for i in range(20_000)]
    right = [b"i%d" % i for i in range(10_000, 30_000)]
    channel, out = InProcessChannel(["a", "b"], timeout=300), {}

    def side(me, peer, keys):
        out[me] = psi_join_indices(channel.endpoint(me), peer, "t", keys, me == "a", GroupWorkers(2))

    threads = [threading.Thread(target=side, args=("a", "b", left)), threading.Thread(target=side, args=("b", "a", right))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ref = local_join_indices(left, right)
    same = sorted(zip(out["a"].tolist(), out["b"].tolist())) == sorted(zip(ref[0].tolist(), ref[1].tolist()))
    print("joined", len(out["a"]), "same" if same else "DIFFERENT", "workers", len(worker_pids()))
""")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["file", "stdin"])
def test_a_host_script_without_main_guard_runs_a_large_psi(tmp_path, how):
    """The workers never re-run the host's __main__: no guard needed, and a script from stdin works."""
    script = tmp_path / "host.py"
    script.write_text(HOST_WITHOUT_MAIN_GUARD)
    command = [sys.executable, str(script)] if how == "file" else [sys.executable, "-"]
    done = subprocess.run(command, cwd=tmp_path, input=HOST_WITHOUT_MAIN_GUARD if how == "stdin" else None,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["joined", "10000", "same", "workers", "2"], done.stderr


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_their_host_is_killed(tmp_path):
    host = textwrap.dedent("""
        import threading, time
        from sqlsecure.executors.psi.blinding import PARALLEL_MIN, BlindingKey, GroupWorkers, hash_to_points, worker_pids
        workers = GroupWorkers(2)
        BlindingKey().blind(hash_to_points([b"x"] * PARALLEL_MIN), workers)
        print(*worker_pids(), flush=True)
        points = hash_to_points(b"%d" % i for i in range(300_000))
        threading.Thread(target=BlindingKey().blind, args=(points, workers), daemon=True).start()
        time.sleep(0.5)
        child = os.fork()  # holds the pipes to the workers open: their EOF will not come
        if child == 0:
            time.sleep(600)
            os._exit(0)
        print("busy", child, flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", "import os\n" + host], cwd=tmp_path, stdout=subprocess.PIPE,
                            text=True)
    forked = None
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
        busy, forked = proc.stdout.readline().split()
        assert busy == "busy"
    finally:
        proc.kill()
        proc.wait()
    try:
        deadline = time.monotonic() + PROCESS_GONE
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in pids)
    finally:
        if forked is not None:
            os.kill(int(forked), signal.SIGKILL)
