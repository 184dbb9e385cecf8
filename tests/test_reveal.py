"""Masking and analysis rules, applied before anything is revealed."""

import re

import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import ConfigError, PolicyViolation

PLAIN = """
[[grants]]
party = "bank"
columns = ["shop.*.*"]
constraint = "PLAINTEXT"

[[grants]]
party = "shop"
columns = ["bank.*.*"]
constraint = "PLAINTEXT"
"""

MASKS = PLAIN + """
[[masks]]
party = "bank"
columns = ["shop.orders.category"]
method = "partial"
keep = 2

[[masks]]
party = "bank"
columns = ["shop.orders.region"]
method = "hash"

[[masks]]
party = "bank"
columns = ["shop.orders.amount"]
method = "generalise"
bucket = 100

[[masks]]
party = "shop"
columns = ["bank.customers.name"]
method = "redact"
"""

JOIN = "FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id"


@pytest.fixture(scope="module")
def masked(tmp_path_factory, make_federation):
    with Engine(make_federation(tmp_path_factory.mktemp("masks"), MASKS, parties=("bank", "shop"))) as engine:
        yield engine


def test_partial_hash_generalise(masked):
    table = masked.execute(f"SELECT o.category, o.region, o.amount, c.name {JOIN}", "bank").table
    assert set(table.column("category").to_pylist()) <= {"***ks", "***es", "****en"}
    assert all(re.fullmatch(r"[0-9a-f]{32}", r) for r in table.column("region").to_pylist())
    assert all(a % 100 == 0 for a in table.column("amount").to_pylist())
    assert not any(n.startswith("*") for n in table.column("name").to_pylist())  # the bank's own column


def test_hash_is_consistent_across_queries(masked):
    a = masked.execute("SELECT DISTINCT region FROM shop.orders", "bank").table.column("region").to_pylist()
    b = masked.execute(f"SELECT DISTINCT o.region {JOIN}", "bank").table.column("region").to_pylist()
    assert len(set(a)) == 4 and set(b) <= set(a)


def test_masks_are_per_recipient(masked):
    assert masked.execute("SELECT category FROM shop.orders", "shop").table.column(0)[0].as_py() in (
        "books", "games", "garden")
    names = masked.execute(f"SELECT c.name {JOIN}", "shop").table.column("name").to_pylist()
    assert set(names) == {"****"}


def test_masked_group_key(masked):
    """A hash keeps equality, so its column may group (each group named by its hash); a partial mask does not:
    grouping by the unmasked values would count them (tests/test_attacks_s14.py)."""
    table = masked.execute("SELECT region, COUNT(*) AS n FROM shop.orders GROUP BY region", "bank").table
    assert table.num_rows == 4 and all(re.fullmatch(r"[0-9a-f]{32}", r) for r in table.column("region").to_pylist())
    with pytest.raises(PolicyViolation, match="shop.orders.category is masked for bank"):
        masked.plan("SELECT category, COUNT(*) AS n FROM shop.orders GROUP BY category", "bank")


def test_expression_over_masked_column_is_refused(masked):
    with pytest.raises(PolicyViolation, match="masked for bank"):
        masked.plan(f"SELECT UPPER(o.category) {JOIN}", "bank")
    assert "partial (last 2)" in masked.explain("SELECT category FROM shop.orders", "bank")


RULES = PLAIN + """
[[grants]]
party = "bank"
columns = ["insurer.*.*"]
constraint = "PLAINTEXT"

[[grants]]
party = "insurer"
columns = ["bank.*.*"]
constraint = "PLAINTEXT"

[rules."shop.orders"]
join_columns = ["customer_id"]
aggregations = { amount = ["SUM", "AVG"] }
never_output = ["region"]
min_group_size = 30

[rules."insurer.policies"]
join_required = true
identity_column = "customer_id"
min_group_size = 5
"""


@pytest.fixture(scope="module")
def ruled(tmp_path_factory, make_federation):
    with Engine(make_federation(tmp_path_factory.mktemp("rules"), RULES)) as engine:
        yield engine


@pytest.mark.parametrize("sql, fragment", [
    ("SELECT COUNT(*) FROM bank.customers c JOIN shop.orders o ON c.region = o.region", "may not be joined on"),
    (f"SELECT MAX(o.amount) {JOIN}", "only be output inside AVG, SUM"),
    (f"SELECT o.amount {JOIN}", "found no aggregate"),
    (f"SELECT o.region, COUNT(*) {JOIN} GROUP BY o.region", "never be output"),
    ("SELECT COUNT(*) FROM insurer.policies", "join_required"),
])
def test_rules_refuse(ruled, sql, fragment):
    with pytest.raises(PolicyViolation, match=fragment):
        ruled.plan(sql, "bank")


def test_rules_allow_and_raise_thresholds(ruled):
    table = ruled.execute(f"SELECT o.category, SUM(o.amount), COUNT(*) AS n {JOIN} GROUP BY o.category", "bank").table
    assert all(n >= 30 for n in table.column("n").to_pylist())
    # the threshold counts the shop's distinct orders, not joined rows; the owner itself is not bound
    rows = ruled.execute(f"SELECT o.category, o.order_id {JOIN}", "shop").table.to_pylist()
    orders = {}
    for r in rows:
        orders.setdefault(r["category"], set()).add(r["order_id"])
    assert table.num_rows == sum(1 for d in orders.values() if len(d) >= 30)


def test_identity_threshold(ruled):
    sql = ("SELECT p.claims, COUNT(*) AS n, COUNT(DISTINCT p.customer_id) AS people FROM bank.customers c "
           "JOIN insurer.policies p ON c.id = p.customer_id GROUP BY p.claims")
    table = ruled.execute(sql, "bank").table
    assert table.num_rows > 0 and all(p >= 5 for p in table.column("people").to_pylist())


def test_rules_are_validated(tmp_path, make_federation):
    bad = PLAIN + '[rules."shop.orders"]\njoin_columns = ["nope"]\nbounds = { amount = [5, 1] }\n'
    with pytest.raises(ConfigError) as info:
        Engine(make_federation(tmp_path, bad))
    text = str(info.value)
    assert "no column nope" in text and "low <= high" in text
