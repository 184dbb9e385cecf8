"""Classes 5 and 7 through the attested enclave (simulation), checked against the oracle; an
enclave the parties do not trust is refused before anything is sent."""

import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import ProtocolError
from sqlsecure.executors.tee import create_authority, expected_measurement

CLASS_5_AND_7 = [
    "SELECT c.region, o.category, COUNT(*), SUM(o.amount), AVG(c.income), MIN(o.amount), MAX(c.age) "
    "FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id GROUP BY c.region, o.category",
    "SELECT c.name, o.amount, o.order_id FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "ORDER BY o.amount DESC, o.order_id, c.name LIMIT 7",
    "SELECT c.region, o.category, COUNT(*) AS n FROM bank.customers c JOIN shop.orders o "
    "ON c.id = o.customer_id GROUP BY c.region, o.category ORDER BY n DESC, c.region, o.category LIMIT 3",
    "SELECT c.region, p.claims, COUNT(*), SUM(o.amount) FROM bank.customers c JOIN shop.orders o "
    "ON c.id = o.customer_id JOIN insurer.policies p ON p.customer_id = c.id GROUP BY c.region, p.claims",
]


def enclave_section(directory, measurement: str | None = None) -> str:
    create_authority(directory / "authority.key")
    measurement = measurement or expected_measurement().hex()
    return f'\n[enclave]\nauthority = "authority.key"\nmeasurements = ["{measurement}"]\n'


@pytest.fixture(scope="module")
def enclave_oracle(tmp_path_factory, make_federation, oracle_for, plaintext_grants):
    directory = tmp_path_factory.mktemp("enclave")
    path = make_federation(directory, plaintext_grants() + enclave_section(directory))
    with Engine(path) as engine:
        yield oracle_for(engine)


@pytest.mark.parametrize("sql", CLASS_5_AND_7)
@pytest.mark.parametrize("issuer", ["bank", "insurer"])
def test_enclave_answers_match_the_oracle(enclave_oracle, sql, issuer):
    enclave_oracle.check(sql, issuer)
    text = enclave_oracle.engine.explain(sql, issuer)
    assert "TEEU(enclave, SIMULATION)" in text and "SIMULATION: no SGX" in text


def test_the_enclave_is_its_own_process_and_marks_simulation(enclave_oracle):
    import os

    table = enclave_oracle.engine.execute(CLASS_5_AND_7[0], "bank").table
    assert table.schema.metadata[b"sqlsecure.enclave.simulated"] == b"true"
    host = enclave_oracle.engine.runtime._enclave_host
    assert host is not None and host.pid not in (None, os.getpid())


def test_an_untrusted_enclave_is_refused(tmp_path, make_federation, plaintext_grants):
    path = make_federation(tmp_path, plaintext_grants() + enclave_section(tmp_path, "00" * 32))
    with Engine(path) as engine:
        with pytest.raises(ProtocolError, match="measurement"):
            engine.execute(CLASS_5_AND_7[0], "bank")
