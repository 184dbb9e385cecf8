"""The attack suite: each attack is refused or protected, with the rule named."""

import subprocess
import sys
import textwrap
import threading

import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import PolicyViolation
from sqlsecure.policy.ledger import Ledger
from sqlsecure.policy.privacy import NoiseSpec, Release, release
from tests.conftest import noise_mismatch

GRANTS = """
[[grants]]
party = "shop"
columns = ["bank.customers.id"]
constraint = "PLAINTEXT_AFTER_JOIN"

[[grants]]
party = "bank"
columns = ["shop.orders.customer_id"]
constraint = "PLAINTEXT_AFTER_JOIN"

[[grants]]
party = "bank"
columns = ["shop.orders.amount"]
constraint = "PLAINTEXT_AFTER_AGGREGATE"

[[grants]]
party = "bank"
columns = ["shop.orders.order_id"]
constraint = "PLAINTEXT_AFTER_COMPARE"

[[grants]]
party = "bank"
columns = ["shop.orders.category"]
constraint = "PLAINTEXT_AFTER_GROUP_BY"
"""


JOIN = "FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id"


@pytest.fixture(scope="module")
def fed(tmp_path_factory, make_federation):
    with Engine(make_federation(tmp_path_factory.mktemp("attacks"), GRANTS, parties=("bank", "shop"))) as engine:
        yield engine


def dp_federation(directory, make_federation, text: str):
    return make_federation(directory, text, parties=("bank", "shop"))


# -- refused by column control ----------------------------------------------------------------

def test_singling_out_is_suppressed(fed):
    # one order: the aggregate is below the minimum group size, so nothing is revealed
    assert fed.execute("SELECT SUM(amount) FROM shop.orders WHERE order_id = 123", "bank").table.num_rows == 0


def test_min_max_of_encrypted_only_column(fed):
    with pytest.raises(PolicyViolation, match="shop.orders.region.*ENCRYPTED_ONLY"):
        fed.plan("SELECT MAX(region) FROM shop.orders", "bank")
    with pytest.raises(PolicyViolation, match="ENCRYPTED_ONLY"):
        fed.plan(f"SELECT MIN(o.region) {JOIN}", "bank")


@pytest.mark.parametrize("sql", [
    "SELECT CASE WHEN amount > 100 THEN 1 ELSE 0 END FROM shop.orders",
    "SELECT amount * 0 + order_id FROM shop.orders",
    "SELECT COUNT(*) FROM shop.orders GROUP BY amount",
    f"SELECT CASE WHEN o.amount > 100 THEN c.name END {JOIN}",
    "SELECT SUM(amount) FROM shop.orders GROUP BY order_id HAVING SUM(amount) > 0",
])
def test_case_and_arithmetic_tricks(fed, sql):
    with pytest.raises(PolicyViolation):
        fed.plan(sql, "bank")


def test_order_by_secret_limit_1(fed):
    with pytest.raises(PolicyViolation, match="ORDER BY"):
        fed.plan("SELECT category FROM shop.orders GROUP BY category ORDER BY MIN(customer_id) LIMIT 1", "bank")
    with pytest.raises(PolicyViolation, match="amount"):
        fed.plan(f"SELECT c.name {JOIN} ORDER BY o.amount LIMIT 1", "bank")


def test_join_key_only_after_join_is_not_revealed(fed):
    with pytest.raises(PolicyViolation, match="shop.orders.customer_id.*PLAINTEXT_AFTER_JOIN"):
        fed.plan("SELECT o.customer_id FROM shop.orders o LEFT JOIN bank.customers c ON c.id = o.customer_id", "bank")


def test_small_groups_are_dropped(fed):
    table = fed.execute(f"SELECT o.category, COUNT(*) AS n, SUM(o.amount) {JOIN} GROUP BY o.category", "bank").table
    assert table.num_rows and all(n >= 4 for n in table.column("n").to_pylist())
    per_customer = fed.execute(f"SELECT c.name, COUNT(*) AS n {JOIN} GROUP BY c.name", "bank")
    assert all(n >= 4 for n in per_customer.table.column("n").to_pylist())


# -- protected by differential privacy -------------------------------------------------------------

def test_differencing_is_noised_and_charged(tmp_path, make_federation, bank_dp):
    path = dp_federation(tmp_path, make_federation, GRANTS + bank_dp)
    with Engine(path) as engine:
        everyone = f"SELECT COUNT(*) AS n, SUM(o.amount) AS s {JOIN}"
        all_but_one = everyone + " WHERE o.order_id <> 7"
        text = engine.explain(everyone, "bank")
        assert "differential privacy (laplace): this query spends ε=1" in text and "3 left" in text
        a = engine.execute(everyone, "bank").table.to_pylist()[0]
        b = engine.execute(all_but_one, "bank").table.to_pylist()[0]
        exact = Engine(path).execute(everyone, "shop").table  # the owner's own view has no noise
        assert a != b and engine.ledger.spent("bank").epsilon == pytest.approx(2.0)
        assert exact.num_rows == 1
        engine.execute(everyone, "bank")
        with pytest.raises(PolicyViolation, match="budget of 'bank' exhausted"):
            engine.execute(everyone, "bank")
        assert engine.ledger.spent("bank").epsilon == pytest.approx(3.0)


def test_dp_needs_declared_bounds(tmp_path, make_federation, bank_dp):
    text = (GRANTS + bank_dp).replace('bounds = { amount = [0, 500] }', '')
    with Engine(dp_federation(tmp_path, make_federation, text)) as engine:
        with pytest.raises(PolicyViolation, match="clamping bounds"):
            engine.plan(f"SELECT SUM(o.amount) {JOIN}", "bank")
        with pytest.raises(Exception, match="only aggregates"):
            engine.plan(f"SELECT c.name {JOIN}", "bank")


def test_dp_grouped_release(tmp_path, make_federation, bank_dp):
    with Engine(dp_federation(tmp_path, make_federation, GRANTS + bank_dp)) as engine:
        table = engine.execute(f"SELECT o.category, COUNT(*) AS n, AVG(o.amount) AS a {JOIN} "
                               "GROUP BY o.category", "bank").table
        assert table.column_names == ["category", "n", "a"]
        assert set(table.column("category").to_pylist()) <= {"books", "games", "garden"}


def test_noise_is_unbiased_with_the_stated_scale():
    """5,000 draws of each mechanism: mean and scale as stated, within Chernoff bounds (chance failure
    below 1e-10 per column, tests/conftest.py NOISE_FAILURE)."""
    n = 5000
    table = pa.table({"c": [1000] * n, "s__sum": [2500.0] * n, "__n": [50] * n})
    plan = Release((NoiseSpec("c", "count", count_sensitivity=2), NoiseSpec("s", "sum", sensitivity=100.0,
                                                                            integer=False)),
                   epsilon=0.5, delta=0.0, noise="laplace", threshold=None)
    out = release(table, plan)
    for name, true, scale, integer in (("c", 1000, 4.0, True), ("s", 2500.0, 200.0, False)):
        assert noise_mismatch(out.column(name).to_pylist(), true, "laplace", scale, integer) is None
    gauss = Release((NoiseSpec("c", "count", count_sensitivity=1),), epsilon=1.0, delta=1e-6, noise="gaussian",
                    threshold=None)
    values = release(table, gauss).column("c").to_pylist()
    assert noise_mismatch(values, 1000, "gaussian", gauss.scale(1), True) is None


def test_dp_answers_end_to_end_are_near_the_truth(tmp_path, make_federation, bank_dp):
    text = (GRANTS + bank_dp).replace("epsilon = 3.0", "epsilon = 100000.0").replace("query_epsilon = 1.0", "query_epsilon = 2.0")
    with Engine(dp_federation(tmp_path, make_federation, text)) as engine:
        true = Engine(engine.config).execute("SELECT COUNT(*) AS n FROM shop.orders", "shop").table
        draws = [engine.execute("SELECT SUM(amount) AS s, COUNT(*) AS n FROM shop.orders", "bank").table.to_pylist()[0]
                 for _ in range(30)]
    counts = [d["n"] for d in draws]  # per value ε = 1, discrete Laplace scale 10
    assert noise_mismatch(counts, true.column("n")[0].as_py(), "laplace", 10.0, True) is None
    # really random: no value has chance above 0.05, so each draw is new with chance >= 0.75 while at most
    # 5 are seen; 5 or fewer distinct in 30 has chance <= P(Binomial(29, 0.75) <= 4) < 1e-11
    assert len(set(counts)) > 5


def test_parallel_queries_never_overspend(tmp_path, make_federation, bank_dp):
    path = dp_federation(tmp_path, make_federation, GRANTS + bank_dp)
    engines = [Engine(path) for _ in range(6)]
    outcomes = []

    def run(engine):
        try:
            engine.execute(f"SELECT COUNT(*) {JOIN}", "bank")
            outcomes.append("answered")
        except PolicyViolation:
            outcomes.append("refused")

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in engines:
        e.close()
    assert sorted(outcomes) == ["answered"] * 3 + ["refused"] * 3


def test_ledger_is_safe_across_processes(tmp_path):
    script = textwrap.dedent(f"""
        from sqlsecure.errors import PolicyViolation
        from sqlsecure.policy.ledger import Ledger
        ledger = Ledger({str(tmp_path / "l.sqlite")!r})
        for _ in range(3):
            try:
                ledger.charge("bank", 1.0, 0.0, 5.0, 0.0, "q")
                print("ok")
            except PolicyViolation:
                print("refused")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
             for _ in range(4)]
    outcomes = [line for p in procs for line in p.communicate(timeout=120)[0].split()]
    assert outcomes.count("ok") == 5 and outcomes.count("refused") == 7
    assert Ledger(tmp_path / "l.sqlite").spent("bank").epsilon == pytest.approx(5.0)


def test_crash_between_charge_and_reveal_still_charges(tmp_path, make_federation, bank_dp):
    path = dp_federation(tmp_path, make_federation, GRANTS + bank_dp)
    script = textwrap.dedent(f"""
        import os
        from sqlsecure.engine import Engine
        engine = Engine({str(path)!r})
        engine.runtime.execute = lambda plan, query=None: os._exit(3)  # the process dies after the charge
        engine.execute("SELECT COUNT(*) {JOIN}", "bank")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    with Engine(path) as engine:
        assert engine.ledger.spent("bank").epsilon == pytest.approx(1.0)


def test_budget_command(tmp_path, make_federation, bank_dp):
    from click.testing import CliRunner

    from sqlsecure.cli import main

    path = dp_federation(tmp_path, make_federation, GRANTS + bank_dp)
    with Engine(path) as engine:
        engine.execute(f"SELECT COUNT(*) {JOIN}", "bank")
    result = CliRunner().invoke(main, ["budget", "-F", str(path)])
    assert result.exit_code == 0, result.output
    assert "bank: ε spent 1 of 3 (2 left)" in result.output and "SELECT COUNT(*)" in result.output
