"""Message legs on the critical path of a query, counted without timing (issue 20: over a link of one-way
delay d a query waits at least legs x d, beside its local time).

The in-process channel carries a Lamport depth on every message (`ChannelStats.legs`): a round in which
both parties send, then receive, is one leg; a request and its answer are two. The bench's queries of
`bench/network.py` (a PSI join, class 4 on HE, an SPU filter) run here embedded on its data at 300 rows
per party, every answer checked against plain DuckDB, and their legs are pinned, so a change that adds a
sequential message fails here before it slows a deployment across regions.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sqlsecure.engine import Engine
from sqlsecure.executors.runtime.channel import InProcessChannel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import network  # noqa: E402

# legs at 300 rows per party, and before branch net14 (2,000 rows: 9, 13, 32)
LEGS = {
    "psi": 7,  # KKRT16: hello (seed, size, base-OT A in one message), base OTs, IKNP, corrections, values,
               # matched, counts
    "he": 11,
    "spu_filter": 18,  # the PSI's 7, the join's pairs, the stage's set-up with its shapes, a comparison on the
                       # 12 bits the columns' classes allow (4) and its dealer leg, the validity product, the
                       # B2A fused with the weight product, the COUNT's opening (no threshold test, no zeroing)
}


@pytest.fixture(scope="module")
def bench_data(tmp_path_factory):
    directory = tmp_path_factory.mktemp("legs")
    network.write_data(directory, 300, 100)
    for variant in ("he", "spu"):
        (directory / f"federation-{variant}.toml").write_text(
            f'[federation]\nname = "legs"\nmin_group_size = 0\ngroup_sums = "{variant}"\n'
            '[parties.bank.tables]\nt = "bank/t.parquet"\n'
            '[parties.shop.tables]\nt = "shop/t.parquet"\none = "shop/one.parquet"\n'
            '[[grants]]\nparty = "bank"\ncolumns = ["shop.t.*", "shop.one.*"]\nconstraint = "PLAINTEXT"\n'
            '[[grants]]\nparty = "shop"\ncolumns = ["bank.t.*"]\nconstraint = "PLAINTEXT"\n')
    return directory


@pytest.mark.parametrize("name", list(LEGS))
def test_the_bench_queries_take_their_stated_legs(bench_data, name, monkeypatch):
    sql, variant, _ = network.QUERIES[name]
    monkeypatch.chdir(bench_data)  # the bench's DuckDB check reads the parties' files relative to it
    with Engine(str(bench_data / f"federation-{variant}.toml")) as engine:
        result = engine.execute(sql, "bank")
    assert network.matches_duckdb(sql, result.table)
    assert result.stats.legs == LEGS[name], (name, result.stats.legs)


def test_a_request_and_its_answer_are_two_legs_an_exchange_one():
    channel = InProcessChannel(["a", "b", "dealer"], timeout=5)

    def party(me, peer):
        def run(endpoint):
            endpoint.send(peer, "x", b"1")  # both send, then receive: one leg
            endpoint.recv(peer, "x")
            if me == "b":
                endpoint.send("dealer", "request", b"")
            else:
                endpoint.recv("dealer", "answer")  # b's request, then the dealer's answer to a: legs 2 and 3
            endpoint.send(peer, "y", b"2")
            endpoint.recv(peer, "y")
        return run

    def dealer(endpoint):
        endpoint.recv("b", "request")
        endpoint.send("a", "answer", b"")

    channel.run({"a": party("a", "b"), "b": party("b", "a"), "dealer": dealer})
    assert channel.stats.legs == 4  # x (1), request (2), answer (3), a's y (4); b's y is 2
