"""The translation's secret programs over the network with three compute parties (issue 20).

Every party and the dealer run as their own process; the grants let no party see the others' columns
before a comparison, so the joins and the UNION ALL aggregate run as one secret program (`SecretQuery`)
shared among p1, p2 and p3. The answers must equal plain DuckDB, whichever party issues the query: a
compute party (p1) or a party that holds none of the query's data (p4); and when the last compute party
(the one that sends the dealer its requests) registers the query only after the dealer probed it."""

import numpy as np
import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from sqlsecure.planner.physical import SecretQuery
from tests.test_network_mode import Cluster, NetworkOracle, _line, networkify
from tests.test_network_probe import LATE_NODE

COMPUTE = ("p1", "p2", "p3")
PARTIES = (*COMPUTE, "p4")
ROWS = 12


def party_tables(seed: int) -> dict[str, dict[str, pa.Table]]:
    """Each party's t(id, v), and p3's notes(id, note) with text and NULLs: ids drawn from 0..2*ROWS so the
    joins match some rows and miss others."""
    rng = np.random.default_rng(seed)
    tables = {p: {"t": pa.table({"id": rng.permutation(2 * ROWS)[:ROWS].astype(np.int64),
                                 "v": rng.integers(0, 100, ROWS).astype(np.int64)})} for p in PARTIES}
    notes = [None if i % 5 == 0 else f"note {i % 4}" * (1 + i % 3) for i in range(ROWS)]
    tables["p3"]["notes"] = pa.table({"id": rng.permutation(2 * ROWS)[:ROWS].astype(np.int64),
                                      "note": pa.array(notes, pa.string())})
    return tables


def compare_grants(grants_for) -> str:
    """Every party may use the others' columns in comparisons only: no join grant, no plaintext."""
    columns = [f"{p}.t.{c}" for p in PARTIES for c in ("id", "v")] + ["p3.notes.id", "p3.notes.note"]
    return grants_for(*[(viewer, tuple(c for c in columns if not c.startswith(f"{viewer}.")),
                         "PLAINTEXT_AFTER_COMPARE") for viewer in PARTIES])


UNION = "(SELECT id, v FROM p1.t UNION ALL SELECT id, v FROM p2.t UNION ALL SELECT id, v FROM p3.t) u"
PROGRAMS = [
    "SELECT COUNT(*) AS n FROM p1.t a JOIN p2.t b ON a.id = b.id JOIN p3.t c ON b.id = c.id",
    "SELECT COUNT(*) AS n FROM p1.t a JOIN p2.t b ON a.id = b.id JOIN p3.t c ON b.id = c.id WHERE a.v < c.v",
    "SELECT COUNT(*) AS n FROM p1.t a JOIN p2.t b ON a.id = b.id JOIN p3.notes c ON b.id = c.id",
    "SELECT COUNT(*) AS n FROM p1.t a JOIN p2.t b ON a.id = b.id JOIN p3.notes c ON b.id = c.id "
    "WHERE c.note <> 'note 1'",
    f"SELECT COUNT(*) AS n FROM {UNION} JOIN p2.t b ON u.id = b.id",
    f"SELECT COUNT(*) AS n FROM {UNION} WHERE u.v > (SELECT AVG(v) FROM p3.t)",
    f"SELECT COUNT(*) AS n FROM {UNION} WHERE u.id IN (SELECT id FROM p3.t WHERE v > 20)",
]


@pytest.fixture(scope="module")
def three_party_programs(tmp_path_factory, federation_writer, grants_for, oracle_for):
    """(cluster, embedded engine, Oracle of the issuers p1 and p4), every party and the dealer its own process."""
    path = federation_writer(tmp_path_factory.mktemp("network-programs"), party_tables(20),
                             compare_grants(grants_for), parties=PARTIES, min_group_size=1)
    cluster = Cluster(networkify(path, (*PARTIES, "dealer"), timeout=30), (*PARTIES, "dealer"))
    try:
        with Engine(cluster.path) as embedded:
            networked = {p: Engine(cluster.path, runtime="network", identity=p) for p in ("p1", "p4")}
            try:
                yield cluster, embedded, oracle_for(NetworkOracle(networked, embedded))
            finally:
                for engine in networked.values():
                    engine.close()
    finally:
        cluster.stop()


@pytest.mark.parametrize("issuer", ["p1", "p4"])
@pytest.mark.parametrize("sql", PROGRAMS)
def test_three_party_secret_program_over_the_network_equals_duckdb(three_party_programs, sql, issuer):
    _, embedded, oracle = three_party_programs
    steps = embedded.plan(sql, issuer).physical.steps
    assert any(isinstance(s, SecretQuery) for s in steps), "the translation must run it"
    oracle.check(sql, issuer)


def test_the_dealers_requester_registering_late_still_answers(three_party_programs, oracle_for):
    """p3, the last compute party, takes the query only once the dealer, waiting for its 'spu/request',
    found it silent and probed it: the probe's "pending" is waited on, not taken for a dropped query
    (before the probe fix: "party 'p3' no longer runs this query ... while 'dealer' waited for
    'spu/request'")."""
    cluster, embedded, _ = three_party_programs
    cluster.kill("p3")
    cluster.start("p3", script=(LATE_NODE, "dealer"))
    try:
        with Engine(cluster.path, runtime="network", identity="p1") as issuer:
            oracle_for(NetworkOracle({"p1": issuer}, embedded)).check(PROGRAMS[0], "p1")
        assert _line(cluster.procs["p3"], 60).strip() == "RUN after its probe"  # the race was met
    finally:
        cluster.kill("p3")
        cluster.start("p3")
