"""Network mode proves the SPU's exact range at plan time as embedded mode does: each party publishes its
numeric columns' magnitude classes in its catalog (versioned with the schema and sizes), the network
engine plans with them, EXPLAIN lists them, and a change of class makes the issuer's catalog stale."""

import decimal
import json

import pyarrow.csv as pacsv
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import DataError, ProtocolError
from sqlsecure.executors.runtime.network import PartyCatalog
from tests.test_magnitude_shapes import OBLIVIOUS_JOIN, PROGRAM_PK_JOIN, UNION_ALL, _grants, _tables
from tests.test_network_mode import Cluster, NetworkOracle, networkify

NODES = ("bank", "shop", "insurer", "dealer")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, federation_writer, grants_for):
    path = federation_writer(tmp_path_factory.mktemp("network-magnitudes"), _tables(decimal.Decimal("1000.00")),
                             _grants(grants_for), min_group_size=0)
    running = Cluster(networkify(path, NODES, timeout=30), NODES)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def engines(cluster):
    """(embedded, networked as bank) over the cluster's federation."""
    with Engine(cluster.path) as embedded, Engine(cluster.path, runtime="network", identity="bank") as networked:
        yield embedded, networked


@pytest.mark.parametrize("sql", [PROGRAM_PK_JOIN, UNION_ALL, OBLIVIOUS_JOIN])
def test_explain_over_the_network_lists_the_published_classes(engines, sql):
    embedded, networked = engines
    text = networked.explain(sql, "bank")
    assert "published magnitude classes" in text and "at plan time for up to" in text
    assert text == embedded.explain(sql, "bank")


def test_a_program_proven_with_the_network_catalog_equals_duckdb(engines, oracle_for):
    embedded, networked = engines
    oracle_for(NetworkOracle({"bank": networked}, embedded)).check(PROGRAM_PK_JOIN, "bank")


def test_a_class_that_grows_makes_the_catalog_stale_and_the_query_refused_at_plan_time(cluster, engines):
    """The shop's largest amount grows to 2^41 (class 2^42): its catalog's version changes, the issuer
    re-reads it and refuses at plan time with the embedded engine's message."""
    embedded, networked = engines
    before = networked.runtime.versions(["shop"])
    pacsv.write_csv(_tables(decimal.Decimal(2 ** 41))["shop"]["orders"], cluster.path.parent / "shop" / "orders.csv")
    with pytest.raises(DataError, match=r"\|o\.amount\| < 2\^42") as executed:
        networked.execute(OBLIVIOUS_JOIN, "bank")
    assert networked.runtime.versions(["shop"]) != before
    with Engine(cluster.path) as fresh:
        with pytest.raises(DataError) as embedded_refusal:
            fresh.plan(OBLIVIOUS_JOIN, "bank")
    assert str(executed.value) == str(embedded_refusal.value)
    assert networked.check(OBLIVIOUS_JOIN, "bank") == f"DataError: {executed.value}"


def test_a_catalogs_version_covers_its_classes():
    schema, sizes = {"t": [("x", "BIGINT")]}, {"t": 8}
    versions = {PartyCatalog.of(schema, sizes, classes).version for classes in ({}, {"t": {"x": 3}}, {"t": {"x": 4}})}
    assert len(versions) == 3
    sent = PartyCatalog.of(schema, sizes, {"t": {"x": 3}}).to_json()
    assert PartyCatalog.from_json("p", json.dumps(sent).encode()).classes == {"t": {"x": 3}}
    for bad in ({"t": {"x": "3"}}, {"t": {"x": True}}, {"t": [3]}):
        with pytest.raises(ProtocolError, match="malformed catalog"):
            PartyCatalog.from_json("p", json.dumps({**sent, "classes": bad}).encode())
