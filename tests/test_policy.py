"""Grants enforced for what the foundation supports (the full policy engine is its own issue)."""

import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import PolicyViolation

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
columns = ["shop.orders.category"]
constraint = "PLAINTEXT_AFTER_GROUP_BY"
"""

JOIN = "FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id"


@pytest.fixture(scope="module")
def strict(tmp_path_factory, make_federation):
    path = make_federation(tmp_path_factory.mktemp("strict"), GRANTS, parties=("bank", "shop"))
    with Engine(path) as engine:
        yield engine


@pytest.mark.parametrize("sql", [
    f"SELECT COUNT(*) {JOIN}",
    f"SELECT SUM(o.amount), AVG(o.amount) {JOIN}",
    f"SELECT o.category, SUM(o.amount) {JOIN} GROUP BY o.category",
    f"SELECT c.name, c.income {JOIN}",
])
def test_allowed(strict, sql):
    strict.execute(sql, "bank")


@pytest.mark.parametrize("sql, fragment", [
    (f"SELECT o.amount {JOIN}", "shop.orders.amount through the output column"),
    (f"SELECT o.category {JOIN}", "shop.orders.category through the output column"),
    (f"SELECT COUNT(*) {JOIN} WHERE o.amount > 10", "comparison|through WHERE"),
    (f"SELECT COUNT(*) {JOIN} WHERE c.age > 10", "shop may not learn bank.customers.age"),
    ("SELECT COUNT(*) FROM bank.customers c JOIN shop.orders o ON c.name = o.category", "JOIN|join key"),
    ("SELECT o.customer_id FROM shop.orders o LEFT JOIN bank.customers c ON c.id = o.customer_id",
     "PLAINTEXT_AFTER_JOIN"),  # bank's key on the NULL-extended side: shop's unmatched keys stay hidden
    ("SELECT amount FROM shop.orders", "through the output column"),
    ("SELECT SUM(amount) FROM shop.orders WHERE order_id = 5", "shop.orders.order_id.*after WHERE"),
    ("SELECT c.id FROM bank.customers c ORDER BY c.age", None),
])
def test_refused(strict, sql, fragment):
    if fragment is None:  # the issuer's own data: always allowed
        strict.execute(sql, "bank")
        return
    with pytest.raises(PolicyViolation, match=fragment):
        strict.execute(sql, "bank")


def test_shop_sees_its_own_data_but_not_the_banks(strict):
    strict.execute("SELECT amount FROM shop.orders", "shop")
    with pytest.raises(PolicyViolation, match="bank.customers.name"):
        strict.execute(f"SELECT c.name {JOIN}", "shop")


def test_threshold_applies_to_other_parties_aggregates(strict):
    rows = strict.execute("SELECT SUM(amount) FROM shop.orders WHERE customer_id IS NULL", "shop").table
    assert rows.num_rows == 1  # the owner's own query: no threshold
    groups = strict.execute(f"SELECT c.name, COUNT(*) AS n {JOIN} GROUP BY c.name", "bank").table
    assert all(n >= 4 for n in groups.column("n").to_pylist())  # smaller groups are not revealed
