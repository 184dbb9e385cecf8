"""Network mode: every party and the dealer a separate process on 127.0.0.1 (Arrow Flight, mutual TLS).

The oracle subset (PSI joins, per-party aggregates, HE group-by, SPU stages) must equal plain DuckDB;
the services must refuse what a peer may not ask; and a party that dies, hangs or restarts mid-query
must fail the query with an error naming it, after which the next query succeeds.
"""

from __future__ import annotations

import json
import os
from collections import Counter
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

from sqlsecure.certs import init_certs
from sqlsecure.engine import Engine
from sqlsecure.errors import ConfigError, DataError, NotSupportedError, PlanError, ProtocolError
from sqlsecure.executors.runtime.network import Identity, Peers
from sqlsecure.executors.runtime.plan_codec import encode_plan
from sqlsecure.federation import load_federation

NODES = ("bank", "shop", "insurer", "dealer")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def networkify(path: Path, names, timeout: float) -> Path:
    """Add certificates (made now, in the test's directory) and 127.0.0.1 addresses to a federation file."""
    init_certs(path.parent / "certs", list(names))
    text = path.read_text()
    for name in names:
        block = (f'address = "127.0.0.1:{free_port()}"\ncertificate = "certs/{name}.pem"\n'
                 f'private_key = "certs/{name}.key"\n')
        if name in ("dealer", "enclave"):
            text += f"\n[{name}]\n{block}"
        else:
            text = text.replace(f"[parties.{name}]\n", f"[parties.{name}]\n{block}", 1)
    text = text.replace("[federation]\n", f'[federation]\nca = "certs/ca.pem"\nnetwork_timeout = {timeout}\n', 1)
    path.write_text(text)
    return path


HOLDING_NODE = """
import sys, threading
from sqlsecure.executors.runtime import network
from sqlsecure.cli import main

suffix, send = sys.argv.pop(1), network.NetworkChannel._send

def send_then_hold(self, src, dst, tag, payload):
    send(self, src, dst, tag, payload)
    if tag.endswith(suffix):
        print("SENT", tag, flush=True)
        threading.Event().wait()

network.NetworkChannel._send = send_then_hold
sys.argv[0] = "sqlsecure"
main()
"""


class Cluster:
    """The federation's nodes as `sqlsecure party serve` processes."""

    def __init__(self, path: Path, names):
        self.path, self.names, self.procs = path, list(names), {}
        for name in self.names:
            self.start(name)

    def start(self, name: str, hold_after: str | None = None, script: tuple[str, ...] = ()) -> None:
        """Start `name`; with `hold_after`, the node stops (mid-protocol) once it has sent its first
        message whose tag ends so, and prints `SENT <tag>`: a fault then lands at that exact point.
        `script` (source, arguments) runs instead of the CLI: a node with a test's hook in it."""
        launcher = ["-m", "sqlsecure.cli"] if hold_after is None else ["-c", HOLDING_NODE, hold_after]
        launcher = ["-c", *script] if script else launcher
        with open(self.log(name), "a") as log:  # the node's own log (stderr): a party's full error texts
            proc = subprocess.Popen([sys.executable, *launcher, "party", "serve", "-F", str(self.path),
                                     "--name", name], stdout=subprocess.PIPE, stderr=log, text=True,
                                    cwd=self.path.parent)  # not the checkout: its sqlsecure/ is not the package
        line = proc.stdout.readline()
        assert "serving on" in line, f"{name} did not start: {line!r}"
        self.procs[name] = proc

    def log(self, name: str) -> Path:
        return self.path.parent / f"{name}.log"

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = {}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, make_federation):
    # class 4 forced onto HE: with "auto" the embedded twin (in process) would pick the SPU
    path = networkify(make_federation(tmp_path_factory.mktemp("network"), group_sums="he"), NODES, timeout=20)
    running = Cluster(path, NODES)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def embedded(cluster):
    with Engine(cluster.path) as engine:
        yield engine


@pytest.fixture(scope="module")
def networked(cluster):
    engines = {issuer: Engine(cluster.path, runtime="network", identity=issuer) for issuer in ("bank", "shop")}
    yield engines
    for engine in engines.values():
        engine.close()


class NetworkOracle:
    """What `oracle_for` needs: queries go to the network engine of the issuer; the expected answer is
    plain DuckDB over the parties' data files (read through an embedded engine's stores)."""

    def __init__(self, networked, embedded):
        self._networked, self.config, self.parties, self._stores = networked, embedded.config, embedded.parties, \
            embedded._stores
        self.catalog = embedded.catalog  # declared unique keys, for the threshold's counts

    def execute(self, sql, issuer):
        return self._networked[issuer].execute(sql, issuer)


@pytest.fixture(scope="module")
def oracle(networked, embedded, oracle_for):
    return oracle_for(NetworkOracle(networked, embedded))


PSI = [
    "SELECT c.name, o.amount FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id",
    "SELECT COUNT(*) AS n FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id",
    "SELECT o.category, COUNT(*) AS n, SUM(o.amount) AS total FROM bank.customers c "
    "JOIN shop.orders o ON c.id = o.customer_id GROUP BY o.category",
    "SELECT c.id, o.order_id FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "AND c.region = o.region",
    "SELECT c.name, o.amount, p.premium FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "JOIN insurer.policies p ON o.customer_id = p.customer_id",
    "SELECT COUNT(*) FROM bank.customers WHERE id IN (SELECT customer_id FROM shop.orders)",
]
HE = [
    "SELECT c.region, SUM(o.amount), COUNT(*), AVG(o.amount) FROM bank.customers c "
    "JOIN shop.orders o ON c.id = o.customer_id GROUP BY c.region",
]
SPU = [
    "SELECT COUNT(*) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id WHERE c.age > o.amount",
    "SELECT c.region, o.category, COUNT(*), MAX(o.amount) FROM bank.customers c JOIN shop.orders o "
    "ON c.id = o.customer_id GROUP BY c.region, o.category",
    "SELECT c.id, o.amount FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "ORDER BY c.income + o.amount DESC LIMIT 5",
]


@pytest.mark.parametrize("sql", PSI + HE + SPU)
def test_oracle_over_the_network(oracle, sql):
    oracle.check(sql, "bank")


@pytest.mark.parametrize("sql", [PSI[2], HE[0], SPU[0]])
def test_oracle_over_the_network_issued_by_shop(oracle, sql):
    oracle.check(sql, "shop")


def test_single_party_and_three_party_spu(oracle):
    oracle.check("SELECT region, COUNT(*) AS n FROM bank.customers GROUP BY region", "bank")
    oracle.check("SELECT COUNT(*) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
                 "JOIN insurer.policies p ON o.customer_id = p.customer_id WHERE o.amount > p.premium", "bank")


def test_computed_at_the_issuer_over_the_network(oracle):
    """A shape the secure placement refuses, under all-PLAINTEXT grants (planner/gather.py): every
    party re-derives the gathered plan and sends the issuer its columns."""
    oracle.check("SELECT t.n, COUNT(*) AS customers FROM (SELECT c.id, COUNT(o.order_id) AS n FROM bank.customers c "
                 "LEFT JOIN shop.orders o ON c.id = o.customer_id GROUP BY c.id) t GROUP BY t.n", "shop")


def test_same_messages_as_embedded(networked, embedded):
    """One plan runs either way: the same messages cross between the same pairs. (An SPU stage that
    sorts — here the group threshold's count of shop's distinct rows — takes a random number of
    quicksort levels, so there only the pairs are compared.)"""
    for sql, exact in ((PSI[1], True), (HE[0], True), (SPU[0], False)):
        net = networked["bank"].execute(sql, "bank").stats
        local = embedded.execute(sql, "bank").stats
        if exact:
            assert net.messages == local.messages, sql
        else:
            assert set(net.messages) == set(local.messages), sql
        assert net.total_bytes() > 0


def test_catalog_comes_from_the_services(networked):
    engine = networked["bank"]
    assert engine._stores == {}
    assert "customers" in engine.catalog.tables["bank"] and "orders" in engine.catalog.tables["shop"]
    rows = engine.catalog.sizes("shop")["orders"]  # the cost model's statistic: a power of two
    assert rows >= 1 and rows & (rows - 1) == 0
    assert engine.link.rtt == 0.001 and engine.link.bandwidth == 125e6  # the federation's defaults


def test_network_engine_issues_only_as_itself_and_does_not_write(networked):
    with pytest.raises(ProtocolError, match="acts as 'bank'"):
        networked["bank"].execute(PSI[1], "shop")
    with pytest.raises(NotSupportedError, match="network mode"):
        networked["bank"].execute("CREATE TABLE t AS SELECT 1 AS x", "bank")


# ------------------------------------------------------------------------------- a party's errors

SHOP_FAILS = [  # (query issued by bank, the class, the expression named); every failure is at shop
    ("SELECT COUNT(*) FROM shop.orders WHERE order_id = 7 GROUP BY CAST(category AS INT)", DataError,
     "CAST(category AS INT)"),
    ("SELECT SUM(CAST(CAST(amount AS VARCHAR) || 'x' AS DOUBLE)) FROM shop.orders", DataError, "CAST(CAST(amount AS"),
    ("SELECT COUNT(*) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
     "WHERE CAST(o.category AS INT) > 1", DataError, "CAST"),
]


@pytest.mark.parametrize("sql, cls, expression", SHOP_FAILS)
def test_a_partys_error_crosses_without_its_values(cluster, networked, tables, contained_error, sql, cls,
                                                   expression):
    """Leak 3 over Flight: the issuer gets the class and the expression; shop's log keeps the value."""
    with pytest.raises(cls) as info:
        networked["bank"].execute(sql, "bank")
    values = contained_error.shop_values(tables)
    contained_error.check(str(info.value), "shop", expression, values)
    assert any(contained_error.mentions(cluster.log("shop").read_text(), v) for v in values)


@pytest.mark.parametrize("issuer", ["bank", "shop"])
def test_only_the_issuer_gets_its_own_datas_error_text(networked, contained_error, issuer):
    with pytest.raises(DataError) as info:
        networked[issuer].execute("SELECT COUNT(*) FROM bank.customers GROUP BY CAST(region AS INT)", issuer)
    contained_error.check(str(info.value), "bank", "CAST(region AS INT)", ["north", "south", "east", "west"])
    detail = getattr(info.value, "private_detail", None)
    assert (detail is not None and "Conversion Error" in detail) == (issuer == "bank"), detail


def test_error_is_refused_before_any_party_runs(networked):
    with pytest.raises(PlanError, match="error"):
        networked["bank"].execute("SELECT error(CAST(amount AS VARCHAR)) FROM shop.orders", "bank")


# ------------------------------------------------------------------------------- authorisation


def _peers(cluster, name: str) -> Peers:
    config = load_federation(cluster.path)
    return Peers(Identity.from_config(config, name), {n: c.address for n, c in config.nodes.items()})


def _plan(embedded, sql=PSI[1], issuer="bank"):
    return embedded.plan(sql, issuer).physical


def _versions(peers: Peers, parties=("bank", "shop")) -> dict[str, str]:
    """The catalog versions an issuer names in a prepare: those the parties publish now."""
    return {p: json.loads(peers.call(p, "catalog", b"", 30))["version"] for p in parties}


def _prepare_body(plan, query_id, participants, versions, sql=PSI[1]):
    return json.dumps({"query": query_id, "participants": participants, "timeout": 5, "sql": sql,
                       "parameters": [], "catalogs": versions}).encode() + b"\n" + encode_plan(plan)


def test_a_party_runs_only_the_plan_it_derives_itself(cluster, embedded):
    """An issuer cannot make a party run a plan the query and the grants do not give."""
    import dataclasses

    plan = _plan(embedded)
    bank = _peers(cluster, "bank")
    versions = _versions(bank)
    forged = dataclasses.replace(plan, steps=plan.steps[:-1])  # e.g. a different last step
    with pytest.raises(ProtocolError, match="not the plan shop derives"):
        bank.call("shop", "prepare", _prepare_body(forged, "cd" * 16, ["bank", "shop"], versions), 30)
    with pytest.raises(ProtocolError, match="refuses the query"):
        bank.call("shop", "prepare",
                  _prepare_body(plan, "ce" * 16, ["bank", "shop"], versions, sql="SELECT * FROM nope.x"), 30)
    with pytest.raises(ProtocolError, match="come with their query"):
        bank.call("shop", "prepare", json.dumps({"query": "cf" * 16, "participants": ["bank", "shop"],
                                                 "timeout": 5}).encode() + b"\n" + encode_plan(plan), 30)
    with pytest.raises(ProtocolError, match="name the catalog versions"):
        bank.call("shop", "prepare", json.dumps({"query": "d0" * 16, "participants": ["bank", "shop"], "timeout": 5,
                                                 "sql": PSI[1]}).encode() + b"\n" + encode_plan(plan), 30)
    with pytest.raises(ProtocolError, match="catalog of shop changed"):  # the issuer planned with an old one
        bank.call("shop", "prepare", _prepare_body(plan, "d1" * 16, ["bank", "shop"], {**versions, "shop": "0" * 16}),
                  30)
    bank.close()


def test_messages_for_unknown_queries_are_refused(stream_cluster):
    shop = _peers(stream_cluster, "shop")
    stream = shop.open_stream("bank", "0" * 32)
    stream.send("x", b"payload")  # does not wait: a refusal shows at a later send or at the close
    with pytest.raises(ProtocolError, match="refused exchange.*runs no query"):  # once no `run` can come:
        stream.close()  # after the issuer's deadline for it, network_timeout + 1 s
    shop.close()


def test_only_the_issuer_prepares_and_only_participants_send(cluster, embedded):
    plan = _plan(embedded)  # bank and shop only
    shop, bank, insurer = (_peers(cluster, n) for n in ("shop", "bank", "insurer"))
    query_id, versions = "ab" * 16, _versions(bank)
    with pytest.raises(ProtocolError, match="not the issuer"):
        shop.call("bank", "prepare", _prepare_body(plan, query_id, ["bank", "shop"], versions), 5)
    with pytest.raises(ProtocolError, match="do not match"):
        bank.call("shop", "prepare", _prepare_body(plan, query_id, ["bank", "shop", "insurer"], versions), 5)
    bank.call("shop", "prepare", _prepare_body(plan, query_id, ["bank", "shop"], versions), 5)
    try:
        outsider = insurer.open_stream("shop", query_id)
        with pytest.raises(ProtocolError, match="takes no part"):
            outsider.close()
        early = bank.open_stream("shop", query_id)
        early.send("t", b"")  # prepared: queued until it starts
        with pytest.raises(ProtocolError, match="only the issuer"):
            insurer.call("shop", "wait", json.dumps({"query": query_id}).encode(), 5)
        assert query_id in json.loads(bank.call("shop", "status", b"", 5))["queries"]
    finally:
        bank.call("shop", "abort", json.dumps({"query": query_id}).encode(), 5)
    assert query_id not in json.loads(bank.call("shop", "status", b"", 5))["queries"]
    with pytest.raises(ProtocolError, match="not running|runs no query"):  # an aborted query takes no more
        early.send("t", b"")
        early.close()
    late = bank.open_stream("shop", query_id)
    with pytest.raises(ProtocolError, match="runs no query"):
        late.close()
    for peers in (shop, bank, insurer):
        peers.close()


def test_no_way_to_read_a_table(cluster):
    config = load_federation(cluster.path)
    me = Identity.from_config(config, "shop")
    client = flight.FlightClient(f"grpc+tls://{config.nodes['bank'].address}", tls_root_certs=me.ca,
                                 cert_chain=me.certificate, private_key=me.private_key, override_hostname="bank")
    with pytest.raises((flight.FlightError, pa.ArrowNotImplementedError)):  # not implemented: no data by Flight
        client.do_get(flight.Ticket(b"customers")).read_all()
    with pytest.raises((flight.FlightError, pa.ArrowNotImplementedError)):
        list(client.list_flights())
    actions = {a.type for a in client.list_actions()}
    assert actions == {"run", "prepare", "start", "wait", "abort", "alive", "catalog", "schema", "sizes", "status"}
    with pytest.raises(flight.FlightError):  # a message stream for no query: nothing comes back on it
        writer, reader = client.do_exchange(flight.FlightDescriptor.for_command(b"customers"))
        reader.read_chunk()
    client.close()


def test_a_certificate_from_another_ca_is_refused(cluster, tmp_path):
    init_certs(tmp_path, ["shop"])  # a different CA, a certificate that claims to be shop
    config = load_federation(cluster.path)
    client = flight.FlightClient(f"grpc+tls://{config.nodes['bank'].address}", tls_root_certs=config.ca.read_bytes(),
                                 cert_chain=(tmp_path / "shop.pem").read_bytes(),
                                 private_key=(tmp_path / "shop.key").read_bytes(), override_hostname="bank")
    with pytest.raises(flight.FlightError):
        list(client.do_action(flight.Action("status", b""), options=flight.FlightCallOptions(timeout=5)))
    client.close()


def test_a_node_must_be_who_its_certificate_names(cluster):
    """A client that expects `bank` refuses a server whose certificate names `shop`."""
    config = load_federation(cluster.path)
    wrong = Peers(Identity.from_config(config, "insurer"), {"bank": config.nodes["shop"].address})
    with pytest.raises(ProtocolError, match="unreachable"):
        wrong.call("bank", "status", b"", 5)
    wrong.close()


# -------------------------------------------------------------------------------------- faults

BIG = 3_000  # rows per side: each fault is placed by a held node (`_hold`), not by the tables' size


@pytest.fixture(scope="module")
def big_cluster(tmp_path_factory):
    directory = tmp_path_factory.mktemp("network-faults")
    rng = np.random.default_rng(7)
    for party, column in (("bank", "v"), ("shop", "w")):
        (directory / party).mkdir()
        pq.write_table(pa.table({"id": rng.permutation(2 * BIG)[:BIG].astype(np.int64),
                                 column: rng.integers(0, 1000, BIG)}), directory / party / "t.parquet")
    # psi = "ecdh": the faults land after its first message, `/psi/blinded`
    running = two_party_cluster(directory, "faults", timeout=5, options='psi = "ecdh"\n')
    yield running
    running.stop()


def two_party_cluster(directory: Path, name: str, timeout: float, options: str = "") -> Cluster:
    """bank.t and shop.t (parquet files in `directory`), each plain to the other, and the dealer, running."""
    path = directory / "federation.toml"
    path.write_text(f'[federation]\nname = "{name}"\nmin_group_size = 0\n{options}'
                    '[parties.bank]\n[parties.bank.tables]\nt = "bank/t.parquet"\n'
                    '[parties.shop]\n[parties.shop.tables]\nt = "shop/t.parquet"\n'
                    '[[grants]]\nparty = "bank"\ncolumns = ["shop.t.*"]\nconstraint = "PLAINTEXT"\n'
                    '[[grants]]\nparty = "shop"\ncolumns = ["bank.t.*"]\nconstraint = "PLAINTEXT"\n')
    networkify(path, ("bank", "shop", "dealer"), timeout=timeout)
    return Cluster(path, ("bank", "shop", "dealer"))


class Expected(dict):
    """The embedded engine's answers, computed once per query."""

    def __init__(self, engine):
        super().__init__()
        self.engine = engine

    def __missing__(self, sql):
        self[sql] = self.engine.execute(sql, "bank").table
        return self[sql]


@pytest.fixture(scope="module")
def big_engines(big_cluster):
    with Engine(big_cluster.path) as embedded, \
            Engine(big_cluster.path, runtime="network", identity="bank") as network:
        yield Expected(embedded), network


PSI_BIG = "SELECT COUNT(*) AS n, SUM(b.v) AS s FROM bank.t b JOIN shop.t s ON b.id = s.id"
SPU_BIG = "SELECT COUNT(*) AS n FROM bank.t b JOIN shop.t s ON b.id = s.id WHERE b.v > s.w"
DEALER_MID_SPU = "spu/rand/3"  # the dealer's fourth correction: the SPU stage is under way


def _run_async(engine, sql):
    box: dict = {}

    def run():
        started = time.monotonic()
        try:
            box["result"] = engine.execute(sql, "bank").table
        except BaseException as exc:
            box["error"] = exc
        box["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def _hold(cluster, victim: str, tag: str) -> subprocess.Popen:
    """Restart `victim` so that it stops, mid-protocol, once it has sent its first message whose tag
    ends with `tag`: a fault then lands at that point, however fast the machine is."""
    cluster.kill(victim)
    cluster.start(victim, hold_after=tag)
    return cluster.procs[victim]


def _held(proc: subprocess.Popen) -> None:
    assert _line(proc, 120).startswith("SENT"), "the node never reached the point of the fault"


def _assert_state_dropped(engine, nodes) -> None:
    deadline = time.monotonic() + 10
    for node in nodes:
        while engine.runtime.status(node):
            assert time.monotonic() < deadline, f"{node} kept the failed query's state"
            time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("victim, sql, tag", [("shop", PSI_BIG, "/psi/blinded"), ("dealer", SPU_BIG, DEALER_MID_SPU),
                                              ("shop", SPU_BIG, "/open")],
                         ids=["party-dies-mid-psi", "dealer-dies-mid-spu", "party-dies-mid-spu"])
def test_a_node_that_dies_fails_the_query_and_the_next_one_succeeds(big_cluster, big_engines, victim, sql, tag):
    expected, network = big_engines
    expected = expected[sql]
    proc = _hold(big_cluster, victim, tag)
    thread, box = _run_async(network, sql)
    _held(proc)
    assert "result" not in box
    big_cluster.kill(victim)
    thread.join(timeout=30)  # a bound for a hang, not a timing
    assert not thread.is_alive()
    assert "result" not in box, "a result was revealed"
    assert isinstance(box["error"], ProtocolError), box["error"]
    assert repr(victim) in str(box["error"]), box["error"]
    survivors = [n for n in ("bank", "shop", "dealer") if n != victim]
    _assert_state_dropped(network, survivors)
    big_cluster.start(victim)  # the same address: back up
    assert network.execute(sql, "bank").table.equals(expected)


@pytest.mark.slow
def test_a_hung_party_fails_the_query_within_the_timeout(big_cluster, big_engines):
    expected, network = big_engines
    expected[PSI_BIG]
    proc = _hold(big_cluster, "shop", "/psi/blinded")
    thread, box = _run_async(network, PSI_BIG)
    _held(proc)
    os.kill(proc.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        thread.join(timeout=40)
        assert not thread.is_alive()
        waited = time.monotonic() - stopped
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        big_cluster.kill("shop")
        big_cluster.start("shop")
    assert "result" not in box
    assert isinstance(box["error"], ProtocolError) and "'shop'" in str(box["error"]), box["error"]
    assert waited < 5 + 10, waited  # the federation's network_timeout is 5 s
    _assert_state_dropped(network, ["bank", "dealer"])
    assert network.execute(PSI_BIG, "bank").table.equals(expected[PSI_BIG])


def test_a_restarted_party_refuses_the_old_query(big_cluster, big_engines):
    """A party that restarts mid-query knows nothing of it: the query fails naming it."""
    expected, network = big_engines
    expected[PSI_BIG]
    proc = _hold(big_cluster, "shop", "/psi/blinded")
    thread, box = _run_async(network, PSI_BIG)
    _held(proc)
    big_cluster.kill("shop")
    big_cluster.start("shop")
    thread.join(timeout=30)
    assert "result" not in box and "'shop'" in str(box.get("error")), box
    _assert_state_dropped(network, ["bank", "shop"])
    assert network.execute(PSI_BIG, "bank").table.equals(expected[PSI_BIG])


HE_ROWS = 16_000  # rows per side, all matching: enough ciphertexts (> 1,024) for the worker processes
HE_BIG = "SELECT b.g, SUM(s.w) AS total FROM bank.t b JOIN shop.t s ON b.id = s.id GROUP BY b.g"


@pytest.fixture(scope="module")
def he_cluster(tmp_path_factory):
    """bank (group keys, issuer) and shop (values) with grants that force an HE group-by; shop is
    started by each test, which chooses where it stops."""
    directory = tmp_path_factory.mktemp("network-he-faults")
    rng = np.random.default_rng(3)
    for party, column, high in (("bank", "g", 5), ("shop", "w", 1000)):
        (directory / party).mkdir()
        pq.write_table(pa.table({"id": rng.permutation(HE_ROWS).astype(np.int64),
                                 column: rng.integers(0, high, HE_ROWS)}), directory / party / "t.parquet")
    path = directory / "federation.toml"
    path.write_text('[federation]\nname = "he-faults"\nmin_group_size = 0\ngroup_sums = "he"\n'
                    '[parties.bank]\n[parties.bank.tables]\nt = "bank/t.parquet"\n'
                    '[parties.shop]\n[parties.shop.tables]\nt = "shop/t.parquet"\n'
                    '[[grants]]\nparty = "bank"\ncolumns = ["shop.t.id"]\nconstraint = "PLAINTEXT_AFTER_JOIN"\n'
                    '[[grants]]\nparty = "bank"\ncolumns = ["shop.t.w"]\nconstraint = "PLAINTEXT_AFTER_AGGREGATE"\n'
                    '[[grants]]\nparty = "shop"\ncolumns = ["bank.t.id"]\nconstraint = "PLAINTEXT_AFTER_JOIN"\n')
    networkify(path, ("bank", "shop"), timeout=5)
    running = Cluster(path, ("bank",))
    yield running
    running.stop()


class HeldClient:
    """A stand-in FlightClient whose calls block until released: closing it while a call is in flight
    is what gRPC must never see."""

    def __init__(self, *args, **kwargs):
        self.calling, self.release, self.closed_in_flight, self.closed = threading.Event(), threading.Event(), \
            False, False
        self.in_flight, self._lock = 0, threading.Lock()

    def do_action(self, action, options=None):
        with self._lock:
            self.in_flight += 1
        self.calling.set()
        self.release.wait()
        with self._lock:
            self.in_flight -= 1
        raise flight.FlightUnavailableError("connection reset")

    def close(self):
        self.closed_in_flight |= self.in_flight > 0
        self.closed = True


def test_a_client_is_closed_only_after_its_last_call(cluster, monkeypatch):
    """A dead party fails several threads' calls on one client; the first failure forgets the client,
    and it is closed only when the last call has returned; `close` waits for the calls in flight."""
    made: list[HeldClient] = []
    monkeypatch.setattr(flight, "FlightClient", lambda *a, **k: made.append(HeldClient()) or made[-1])
    peers = _peers(cluster, "bank")
    errors: list[BaseException] = []

    def call():
        try:
            peers.call("shop", "wait", b"{}", 5)
        except ProtocolError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(2)]
    threads[0].start()
    made[0].calling.wait()
    threads[1].start()
    while made[0].in_flight < 2:
        time.sleep(0.001)
    peers.forget("shop")  # what a failed call does, while the other still runs
    assert not made[0].closed
    closing = threading.Thread(target=peers.close)
    closing.start()
    made[0].release.set()
    for t in threads + [closing]:
        t.join(timeout=10)
    assert made[0].closed and not made[0].closed_in_flight
    assert len(errors) == 2 and all("'shop'" in str(e) for e in errors)


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a node's worker processes), from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                out.append(int(entry.name))
        except (OSError, IndexError):
            pass
    return out


def _gone(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _line(proc: subprocess.Popen, seconds: float) -> str:
    """The next line `proc` prints; '' if it prints none within `seconds` (a bound, not a timing)."""
    ready, _, _ = select.select([proc.stdout], [], [], seconds)
    return proc.stdout.readline() if ready else ""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_party_killed_mid_he_fails_the_query_and_its_workers_exit(he_cluster):
    """`sqlsecure party query` while the HE value party is SIGKILLed right after its first ciphertexts
    crossed: the issuer exits 1 with a ProtocolError naming it (no crash, no hang), the dead party's
    worker processes end, and once it is back the query runs."""
    he_cluster.start("shop", hold_after="/he/ct")
    victim = he_cluster.procs["shop"]
    issuer = subprocess.Popen([sys.executable, "-m", "sqlsecure.cli", "party", "query", "-F", str(he_cluster.path),
                               "--as", "bank", HE_BIG], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=he_cluster.path.parent)
    try:
        assert _line(victim, 120).startswith("SENT"), "shop never sent its ciphertexts"
        workers = _children(victim.pid)
        assert workers, "shop encrypted without worker processes: make HE_ROWS larger"
        he_cluster.kill("shop")
        _, err = issuer.communicate(timeout=60)
    finally:
        if issuer.poll() is None:
            issuer.kill()
    assert issuer.returncode == 1, (issuer.returncode, err)  # a crash is a negative code
    assert "ProtocolError" in err and "'shop'" in err, err
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in workers):
        assert time.monotonic() < deadline, f"shop's worker processes outlived it: {workers}"
        time.sleep(0.05)
    assert he_cluster.procs["bank"].poll() is None
    he_cluster.start("shop")
    with Engine(he_cluster.path) as embedded, \
            Engine(he_cluster.path, runtime="network", identity="bank") as network:
        _assert_state_dropped(network, ["bank"])
        assert network.execute(HE_BIG, "bank").table.sort_by("g").equals(
            embedded.execute(HE_BIG, "bank").table.sort_by("g"))


# ------------------------------------------------------------------------------- configuration


def test_federation_network_keys_are_validated(tmp_path, make_federation):
    path = networkify(make_federation(tmp_path), NODES, timeout=5)
    config = load_federation(path)
    assert set(config.nodes) == set(NODES) and config.ca.name == "ca.pem" and config.network_timeout == 5
    text = path.read_text()
    init_certs(tmp_path / "other", ["shop"])
    broken = (text.replace('certificate = "certs/shop.pem"', 'certificate = "other/shop.pem"')
              .replace('certificate = "certs/insurer.pem"', 'certificate = "certs/bank.pem"')
              .replace('address = "127.0.0.1:', 'address = "127.0.0.1;', 1)
              .replace("network_timeout = 5", "network_timeout = -1"))
    path.write_text(broken)
    with pytest.raises(ConfigError) as info:
        load_federation(path)
    text_of = str(info.value)
    assert "parties.bank.address" in text_of and "not HOST:PORT" in text_of
    assert "parties.shop.certificate" in text_of and "not issued by the federation CA" in text_of
    assert "parties.insurer.certificate" in text_of and "names 'bank', not 'insurer'" in text_of
    assert "federation.network_timeout" in text_of
    path.write_text(text.replace('ca = "certs/ca.pem"\n', ""))
    with pytest.raises(ConfigError, match="federation.ca"):
        load_federation(path)


def test_init_certs_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "sqlsecure.cli", "init-certs", str(tmp_path / "c"),
                          "--parties", "bank,shop"], capture_output=True, text=True, check=True,
                         cwd=tmp_path).stdout
    assert "[parties.bank]" in out and "[dealer]" in out and 'address = "127.0.0.1:47001"' in out
    for name in ("ca", "bank", "shop", "dealer"):
        assert (tmp_path / "c" / f"{name}.pem").is_file()
    assert (tmp_path / "c" / "bank.key").stat().st_mode & 0o077 == 0


@pytest.fixture(scope="module")
def enclave_cluster(tmp_path_factory, make_federation):
    """bank, shop and the enclave driver as services, with a simulated enclave the parties trust."""
    from sqlsecure.executors.tee import create_authority, expected_measurement

    directory = tmp_path_factory.mktemp("network-enclave")
    path = networkify(make_federation(directory, parties=("bank", "shop")), ("bank", "shop", "enclave"), timeout=20)
    create_authority(directory / "authority.key")
    path.write_text(path.read_text() + f'authority = "authority.key"\nmeasurements = ["{expected_measurement().hex()}"]\n')
    running = Cluster(path, ("bank", "shop", "enclave"))
    yield running
    running.stop()


def test_enclave_stage_over_the_network(enclave_cluster, oracle_for):
    sql = ("SELECT c.region, o.category, COUNT(*), SUM(o.amount), MAX(c.age) FROM bank.customers c "
           "JOIN shop.orders o ON c.id = o.customer_id GROUP BY c.region, o.category")
    with Engine(enclave_cluster.path) as embedded, \
            Engine(enclave_cluster.path, runtime="network", identity="bank") as networked:
        assert "TEEU(enclave, SIMULATION)" in networked.explain(sql, "bank")
        oracle_for(NetworkOracle({"bank": networked}, embedded)).check(sql, "bank")


def test_an_oblivious_join_over_the_network(tmp_path, make_federation, oracle_for, grants_for):
    """A join key not granted PLAINTEXT_AFTER_JOIN: the SPU joins the shared rows, each party in its
    own process, and every party re-derives the same plan."""
    grants = grants_for(("bank", ("shop.orders.customer_id",), "PLAINTEXT_AFTER_COMPARE"),
                        ("bank", ("shop.orders.amount",), "PLAINTEXT_AFTER_AGGREGATE"))
    names = ("bank", "shop", "dealer")
    path = make_federation(tmp_path, grants=grants, parties=("bank", "shop"))
    path.write_text(path.read_text(encoding="utf-8") + '\n[parties.bank.unique]\naccounts = [["account_id"]]\n',
                    encoding="utf-8")  # the oblivious join needs a side unique at plan time
    path = networkify(path, names, timeout=20)
    cluster = Cluster(path, names)
    sql = "SELECT COUNT(*), SUM(o.amount) FROM bank.accounts a JOIN shop.orders o ON a.account_id = o.customer_id"
    try:
        with Engine(path, runtime="network", identity="bank") as network, Engine(path) as embedded:
            assert "oblivious join" in network.explain(sql, "bank")
            count, total = network.execute(sql, "bank").table.to_pylist()[0].values()
            want_count, want_total = oracle_for(embedded).expected(sql, "bank").to_pylist()[0].values()
            assert count == want_count > 0 and total == pytest.approx(want_total, rel=1e-5)
    finally:
        cluster.stop()


# ------------------------------------------------------------------------ fixed cost per query
# Counted, not timed: the RPCs each node makes for a query. Before the protocol starts, the issuer
# makes one round of `run` calls (one per node, all at once) and no node asks any other for a
# catalog; a party's data file rewritten with another schema and size is seen by the next query,
# which is planned afresh and answers right.

OVERHEAD_ROWS = 64
ONE_PARTY = "SELECT COUNT(*) AS n, SUM(w) AS s FROM shop.t WHERE w > 10"  # shop's alone, issued by bank
PSI_JOIN = "SELECT COUNT(*) AS n, SUM(b.v) AS s FROM bank.t b JOIN shop.t s ON b.id = s.id"
SPU_FILTER = "SELECT COUNT(*) AS n FROM bank.t b JOIN shop.t s ON b.id = s.id WHERE b.v > s.w"
PROTOCOL_CALLS = {"exchange", "alive"}  # a query's own messages, and liveness probes while a peer computes


def write_party(directory, party: str, column: str, rows: int, seed: int, extra=()) -> None:
    rng = np.random.default_rng(seed)
    data = {"id": rng.permutation(2 * rows)[:rows].astype(np.int64), column: rng.integers(0, 100, rows)}
    for name in extra:
        data[name] = rng.choice(["x", "y"], rows)
    (directory / party).mkdir(exist_ok=True)
    pq.write_table(pa.table(data), directory / party / "t.parquet")


def small_cluster(tmp_path_factory, name: str, seeds: tuple[int, int], timeout: float) -> Cluster:
    """bank.t and shop.t of OVERHEAD_ROWS random rows each (drawn from `seeds`), and the dealer, running."""
    directory = tmp_path_factory.mktemp(f"network-{name}")
    write_party(directory, "bank", "v", OVERHEAD_ROWS, seeds[0])
    write_party(directory, "shop", "w", OVERHEAD_ROWS, seeds[1])
    return two_party_cluster(directory, name, timeout=timeout)


@pytest.fixture(scope="module")
def overhead_cluster(tmp_path_factory):
    running = small_cluster(tmp_path_factory, "overhead", (1, 2), timeout=20)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def overhead_issuer(overhead_cluster):
    with Engine(overhead_cluster.path, runtime="network", identity="bank") as engine:
        yield engine


def data_oracle(cluster, issuer, oracle_for):
    """Plain DuckDB over the parties' files as they are now; `check` runs the query on `issuer`."""
    with Engine(cluster.path) as embedded:
        return oracle_for(NetworkOracle({"bank": issuer}, embedded))


def node_calls(issuer, name: str) -> dict[str, int]:
    raw = issuer.runtime.peers.call(name, "status", b"", issuer.runtime.timeout)
    return json.loads(raw.decode())["calls"]


def calls_between(before: dict, after: dict, ignore=frozenset()) -> dict[str, int]:
    """The RPCs made between two snapshots of calls by action, `ignore`d actions aside."""
    return {k: n - before.get(k, 0) for k, n in after.items() if k not in ignore and n != before.get(k, 0)}


def issuer_calls(issuer) -> dict[str, int]:
    counts: dict[str, int] = {}
    for (_, kind), n in issuer.runtime.peers.calls.items():
        counts[kind] = counts.get(kind, 0) + n
    return counts


@pytest.mark.parametrize("sql, nodes", [(ONE_PARTY, {"bank", "shop"}), (PSI_JOIN, {"bank", "shop"}),
                                        (SPU_FILTER, {"bank", "dealer", "shop"})])
def test_one_round_trip_before_the_protocol_starts(overhead_cluster, overhead_issuer, oracle_for, sql, nodes):
    oracle = data_oracle(overhead_cluster, overhead_issuer, oracle_for)
    overhead_issuer.execute(sql, "bank")  # a node's first query reads the catalogs once
    watched = ["bank", "shop", "dealer"]
    nodes_before = {n: node_calls(overhead_issuer, n) for n in watched}
    before, by_node = issuer_calls(overhead_issuer), Counter(overhead_issuer.runtime.peers.calls)
    oracle.check(sql, "bank")
    made = calls_between(before, issuer_calls(overhead_issuer))
    runs = {name for (name, kind), n in (overhead_issuer.runtime.peers.calls - by_node).items() if kind == "run"}
    assert overhead_issuer.runtime.rounds_before_start == 1
    assert made.get("run") == len(nodes) and set(made) <= {"run", "wait"}, made  # polls: only a long query's
    assert runs == nodes
    for name in watched:  # no node asks any other for a catalog, nor prepares in more than one call
        assert calls_between(nodes_before[name], node_calls(overhead_issuer, name), PROTOCOL_CALLS) == {}, name


def test_a_rewritten_data_file_is_seen_by_the_next_query(overhead_cluster, overhead_issuer, oracle_for):
    data_oracle(overhead_cluster, overhead_issuer, oracle_for).check(PSI_JOIN, "bank")
    versions = overhead_issuer.runtime.versions(["bank", "shop"])
    write_party(overhead_cluster.path.parent, "shop", "w", 2 * OVERHEAD_ROWS + 5, 3, ["note"])  # schema, size
    oracle = data_oracle(overhead_cluster, overhead_issuer, oracle_for)
    for sql in (PSI_JOIN, ONE_PARTY):  # planned with the old catalog: shop answers "stale", the engine re-plans
        oracle.check(sql, "bank")
    assert overhead_issuer.runtime.versions(["shop"])["shop"] != versions["shop"]
    assert overhead_issuer.runtime.versions(["bank"]) == {"bank": versions["bank"]}
    assert [c for c, _ in overhead_issuer.catalog.columns("shop", "t")] == ["id", "w", "note"]
    assert overhead_issuer.catalog.sizes("shop")["t"] == 256  # 133 rows, rounded up to a power of two


def test_a_column_added_since_the_catalog_was_read_is_found(overhead_cluster, overhead_issuer, oracle_for):
    overhead_issuer.execute(PSI_JOIN, "bank")
    write_party(overhead_cluster.path.parent, "shop", "w", OVERHEAD_ROWS, 4, ["note", "label"])
    oracle = data_oracle(overhead_cluster, overhead_issuer, oracle_for)
    oracle.check("SELECT label, COUNT(*) AS n FROM shop.t GROUP BY label", "bank")  # refused, re-read, planned
    oracle.check("SELECT COUNT(*) AS n, SUM(b.v) AS s FROM bank.t b JOIN shop.t s ON b.id = s.id "
                 "WHERE s.label = 'x'", "bank")  # bank re-reads shop's catalog to re-derive the plan
    with pytest.raises(PlanError, match="nothing"):
        overhead_issuer.execute("SELECT nothing FROM shop.t", "bank")


# ------------------------------------------------------------------ message streams and their bounds

STREAM_TIMEOUT = 3  # the federation's network_timeout in these clusters


@pytest.fixture(scope="module")
def stream_cluster(tmp_path_factory):
    running = small_cluster(tmp_path_factory, "streams", (5, 6), timeout=STREAM_TIMEOUT)
    yield running
    running.stop()


def test_a_querys_messages_travel_over_one_stream_per_peer(stream_cluster, oracle_for):
    """A PSI then an SPU filter send about 40 messages (~80 before branch net14); each node opens at most one
    stream per peer."""
    with Engine(stream_cluster.path, runtime="network", identity="bank") as issuer:
        oracle = data_oracle(stream_cluster, issuer, oracle_for)
        nodes = ["bank", "shop", "dealer"]
        issuer.execute(SPU_FILTER, "bank")  # a node's first query reads the catalogs once
        before = {n: node_calls(issuer, n) for n in nodes}
        oracle.check(SPU_FILTER, "bank")
        stats = issuer.execute(SPU_FILTER, "bank").stats  # a second run, counted alike
        streams = 0
        for name in nodes:
            made = calls_between(before[name], node_calls(issuer, name), {"alive"})
            assert set(made) <= {"exchange"} and made.get("exchange", 0) <= 2 * 2, (name, made)  # 2 queries, 2 peers
            streams += made.get("exchange", 0)
        messages = sum(stats.messages.values())  # of one query, which opened streams / 2 streams
        assert messages > 6 * (streams / 2), (messages, streams)




@pytest.mark.parametrize("fault", ["killed", "stopped"])
def test_a_peer_gone_mid_stream_fails_the_query_naming_it(stream_cluster, fault):
    """The dealer stops right after a given message (not after a sleep), then is SIGKILLed or
    SIGSTOPped: the query fails with a ProtocolError naming it within the timeout, nothing is revealed,
    the other nodes drop the query, and with the dealer back the next query runs."""
    stream_cluster.kill("dealer")
    stream_cluster.start("dealer", hold_after=DEALER_MID_SPU)
    victim = stream_cluster.procs["dealer"]
    try:
        with Engine(stream_cluster.path, runtime="network", identity="bank") as issuer:
            thread, box = _run_async(issuer, SPU_FILTER)
            assert _line(victim, 60).startswith("SENT"), "the dealer never reached the SPU stage"
            if fault == "killed":
                stream_cluster.kill("dealer")
            else:
                os.kill(victim.pid, signal.SIGSTOP)
            thread.join(timeout=4 * STREAM_TIMEOUT + 20)  # a bound for a hang, not a timing
            assert not thread.is_alive(), "the query hung"
            assert "result" not in box, "a result was revealed"
            assert isinstance(box["error"], ProtocolError) and "'dealer'" in str(box["error"]), box["error"]
            _assert_state_dropped(issuer, ["bank", "shop"])
    finally:
        if fault == "stopped":
            os.kill(victim.pid, signal.SIGCONT)
            stream_cluster.kill("dealer")
        stream_cluster.start("dealer")
    with Engine(stream_cluster.path, runtime="network", identity="bank") as issuer:
        assert issuer.execute(SPU_FILTER, "bank").table.num_rows == 1


def test_a_flood_beyond_the_hold_limits_is_refused(tmp_path):
    """A node holds at most network_hold_peer_bytes of one peer's messages not yet received: a PSI
    whose blinded keys alone exceed it fails with a ProtocolError naming the limit."""
    write_party(tmp_path, "bank", "v", OVERHEAD_ROWS, 7)
    write_party(tmp_path, "shop", "w", OVERHEAD_ROWS, 8)
    running = two_party_cluster(tmp_path, "hold", timeout=STREAM_TIMEOUT,
                                options="network_hold_peer_bytes = 2048\n")
    try:
        with Engine(running.path, runtime="network", identity="bank") as issuer:
            with pytest.raises(ProtocolError, match=r"holds too much.*network_hold_peer_bytes"):
                issuer.execute(PSI_JOIN, "bank")
            _assert_state_dropped(issuer, ["bank", "shop"])
            assert issuer.execute(ONE_PARTY, "bank").table.num_rows == 1  # small messages still pass
    finally:
        running.stop()
