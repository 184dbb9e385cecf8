"""Wire audit: capture every message a network channel sends during queries (services run in this
process here, over real Flight with mutual TLS) and check that no plaintext value of a column the
query does not reveal crosses — neither as text nor as its binary encodings."""

from __future__ import annotations

import socket
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sqlsecure.certs import init_certs
from sqlsecure.engine import Engine
from sqlsecure.executors.runtime.network import NetworkChannel
from sqlsecure.party_service import PartyService

N = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def secret_data():
    """Values chosen to be recognisable in any encoding: none collides with a small count or index."""
    rng = np.random.default_rng(11)
    ids = (10**12 + rng.permutation(2 * N)[:N] * 7919).astype(np.int64)
    shared = rng.choice(ids, N // 2, replace=False)
    other = (10**12 + (rng.permutation(2 * N)[:N // 2] + 5 * N) * 7919).astype(np.int64)
    bank = pa.table({
        "id": ids,
        "name": pa.array([f"secret-name-{i:05d}" for i in range(N)]),
        "income": (123456.0 + rng.integers(0, 10**6, N) / 1000.0),
        "region": pa.array(np.array(["north", "south"])[rng.integers(0, 2, N)]),
    })
    shop = pa.table({
        "customer_id": np.concatenate([shared, other]).astype(np.int64),
        "amount": (7777.0 + rng.integers(0, 10**6, N) / 997.0),
        "score": (123000.0 + rng.integers(0, 10**6, N) / 331.0),
        "category": pa.array(np.array(["books", "games"])[rng.integers(0, 2, N)]),
    })
    return bank, shop


def encodings(values) -> set[bytes]:
    out = set()
    for v in values:
        if isinstance(v, str):
            out.add(v.encode())
        elif isinstance(v, float):
            out |= {struct.pack("<d", v), repr(v).encode()}
        elif isinstance(v, int):
            out |= {struct.pack("<q", v), struct.pack(">q", v), str(v).encode()}
    return out


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    directory = tmp_path_factory.mktemp("audit")
    bank, shop = secret_data()
    for party, table, name in (("bank", bank, "customers"), ("shop", shop, "orders")):
        (directory / party).mkdir()
        pq.write_table(table, directory / party / f"{name}.parquet")
    init_certs(directory / "certs", ["bank", "shop", "dealer"])
    lines = ['[federation]', 'name = "audit"', 'min_group_size = 4', 'ca = "certs/ca.pem"', "network_timeout = 20",
             'group_sums = "he"']
    for party, table in (("bank", "customers"), ("shop", "orders"), ("dealer", None)):
        lines += [f"[parties.{party}]" if table else f"[{party}]", f'address = "127.0.0.1:{free_port()}"',
                  f'certificate = "certs/{party}.pem"', f'private_key = "certs/{party}.key"']
        if table:
            lines += [f"[parties.{party}.tables]", f'{table} = "{party}/{table}.parquet"']
    lines += ['[[grants]]', 'party = "bank"', 'columns = ["shop.orders.customer_id"]', 'constraint = "PLAINTEXT_AFTER_JOIN"',
              '[[grants]]', 'party = "bank"', 'columns = ["shop.orders.amount"]', 'constraint = "PLAINTEXT_AFTER_AGGREGATE"',
              '[[grants]]', 'party = "bank"', 'columns = ["shop.orders.score"]', 'constraint = "PLAINTEXT_AFTER_COMPARE"',
              '[[grants]]', 'party = "bank"', 'columns = ["shop.orders.category"]', 'constraint = "PLAINTEXT_AFTER_GROUP_BY"',
              '[[grants]]', 'party = "shop"', 'columns = ["bank.customers.id"]', 'constraint = "PLAINTEXT_AFTER_JOIN"',
              '[[grants]]', 'party = "shop"', 'columns = ["bank.customers.income"]', 'constraint = "PLAINTEXT_AFTER_COMPARE"',
              '[[grants]]', 'party = "shop"', 'columns = ["bank.customers.region"]', 'constraint = "PLAINTEXT_AFTER_GROUP_BY"']
    path = directory / "federation.toml"
    path.write_text("\n".join(lines) + "\n")
    services = [PartyService(path, name) for name in ("bank", "shop", "dealer")]
    try:
        with Engine(path, runtime="network", identity="bank") as network, Engine(path) as embedded:
            yield network, embedded, bank, shop
    finally:
        for service in services:
            service.close()


QUERIES = [  # what each reveals to bank: a count, per-group sums, a count under a cross-party predicate
    ("SELECT COUNT(*) AS n FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id", "PSI"),
    ("SELECT o.category, SUM(o.amount) AS s FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
     "GROUP BY o.category", "PSI"),
    ("SELECT c.region, SUM(o.amount) AS s, COUNT(*) AS n FROM bank.customers c JOIN shop.orders o "
     "ON c.id = o.customer_id GROUP BY c.region", "HEU"),
    ("SELECT COUNT(*) AS n FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
     "WHERE c.income > o.score + 1000", "SPU"),
]


@pytest.mark.parametrize("sql, device", QUERIES, ids=[d + str(i) for i, (_, d) in enumerate(QUERIES)])
def test_no_unrevealed_plaintext_crosses_the_wire(audited, monkeypatch, sql, device):
    network, embedded, bank, shop = audited
    assert device in embedded.explain(sql, "bank")
    sent: list[tuple[str, str, str, bytes]] = []
    original = NetworkChannel._send

    def capture(self, src, dst, tag, payload):
        sent.append((src, dst, tag, bytes(payload)))
        return original(self, src, dst, tag, payload)

    monkeypatch.setattr(NetworkChannel, "_send", capture)
    result = network.execute(sql, "bank").table
    assert sorted(result.to_pylist(), key=str) == sorted(embedded.execute(sql, "bank").table.to_pylist(), key=str)
    assert sent, "nothing crossed the network"
    secrets = {  # never revealed by any of these queries, to anyone
        "bank.customers.id": encodings(bank.column("id").to_pylist()),
        "bank.customers.name": encodings(bank.column("name").to_pylist()),
        "bank.customers.income": encodings(bank.column("income").to_pylist()),
        "shop.orders.customer_id": encodings(shop.column("customer_id").to_pylist()),
        "shop.orders.amount": encodings(shop.column("amount").to_pylist()),
        "shop.orders.score": encodings(shop.column("score").to_pylist()),
    }
    wire = b"\x00".join(payload + tag.encode() for _, _, tag, payload in sent)
    for column, values in secrets.items():
        leaked = [v for v in values if v in wire]
        assert not leaked, f"{column}: {leaked[:3]} crossed the wire in {device} ({sql})"
    assert {(s, d) for s, d, _, _ in sent} <= {("bank", "shop"), ("shop", "bank"), ("bank", "dealer"),
                                               ("shop", "dealer"), ("dealer", "bank"), ("dealer", "shop")}


def test_the_audit_would_see_a_leak(audited, monkeypatch):
    """The check is not vacuous: a query that reveals shop's amounts to bank does carry them."""
    network, _, _, shop = audited
    sent = []
    original = NetworkChannel._send
    monkeypatch.setattr(NetworkChannel, "_send",
                        lambda self, s, d, t, p: sent.append(bytes(p)) or original(self, s, d, t, p))
    network.execute("SELECT o.category, SUM(o.amount) AS s FROM bank.customers c JOIN shop.orders o "
                    "ON c.id = o.customer_id GROUP BY o.category", "bank")
    wire = b"".join(sent)
    totals = [struct.pack("<d", v) for v in
              network.execute("SELECT o.category, SUM(o.amount) AS s FROM bank.customers c JOIN shop.orders o "
                              "ON c.id = o.customer_id GROUP BY o.category", "bank").table.column("s").to_pylist()]
    assert all(t in wire for t in totals)  # the revealed sums do cross, as float64
