"""Column control inference: the SCQL vocabulary on single-party queries issued by another party."""

import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import PolicyViolation

GRANTS = """
[[grants]]
party = "bank"
columns = ["shop.orders.amount"]
constraint = "PLAINTEXT_AFTER_AGGREGATE"

[[grants]]
party = "bank"
columns = ["shop.orders.category"]
constraint = "PLAINTEXT_AFTER_GROUP_BY"

[[grants]]
party = "bank"
columns = ["shop.orders.customer_id"]
constraint = "PLAINTEXT_AFTER_JOIN"

[[grants]]
party = "bank"
columns = ["shop.orders.region"]
constraint = "PLAINTEXT_AFTER_COMPARE"

[[grants]]
party = "bank"
columns = ["shop.orders.order_id"]
constraint = "REVEAL_RANK"
"""

ALLOWED = [
    "SELECT SUM(amount), AVG(amount), MIN(amount), MAX(amount), COUNT(*) FROM shop.orders",
    "SELECT category, AVG(amount) FROM shop.orders GROUP BY category",
    "SELECT COUNT(*) FROM shop.orders WHERE region = 'north'",
    "SELECT SUM(amount * 2) FROM shop.orders",
    "SELECT SUM(CASE WHEN region = 'north' THEN amount ELSE 0 END) FROM shop.orders",
    "SELECT region = 'north' AS is_north FROM shop.orders",
    "SELECT ROW_NUMBER() OVER (ORDER BY order_id) AS r FROM shop.orders",
    "WITH t AS (SELECT category, amount FROM shop.orders) SELECT category, SUM(amount) FROM t GROUP BY category",
    "SELECT category, n FROM (SELECT category, COUNT(*) AS n FROM shop.orders GROUP BY category) x WHERE n > 3",
    "SELECT category, COUNT(*) FROM shop.orders GROUP BY category ORDER BY MAX(amount) DESC",
    "SELECT COUNT(*) FROM shop.orders WHERE region IN ('north', 'south') AND region IS NOT NULL",
    "SELECT COUNT(*) FROM shop.orders WHERE amount > 10",  # a filter restricts its rows (SCQL's Selection)
    # GREATEST / LEAST compare and choose an argument: as CASE WHEN a > b THEN a ELSE b END
    "SELECT SUM(GREATEST(amount, 10)), MAX(LEAST(amount, 5, amount * 2)) FROM shop.orders",
    "SELECT COUNT(*) FROM shop.orders WHERE GREATEST(region, 'm') = 'north'",
]

REFUSED = [
    ("SELECT amount FROM shop.orders", "shop.orders.amount through the output"),
    ("SELECT category FROM shop.orders", "shop.orders.category"),
    ("SELECT MAX(customer_id) FROM shop.orders", "shop.orders.customer_id"),
    ("SELECT region FROM shop.orders", "shop.orders.region"),
    ("SELECT order_id FROM shop.orders", "shop.orders.order_id"),
    ("SELECT region FROM shop.orders WHERE amount > 10", "after WHERE .*amount.* > 10 it is ENCRYPTED_ONLY"),
    ("SELECT CASE WHEN amount > 100 THEN 'big' ELSE 'small' END FROM shop.orders", "shop.orders.amount"),
    ("SELECT amount - amount + 1 FROM shop.orders", "shop.orders.amount"),
    ("SELECT GREATEST(amount, 10) FROM shop.orders", "shop.orders.amount"),
    ("SELECT LEAST(region, 'm') FROM shop.orders", "shop.orders.region"),
    ("SELECT GREATEST(amount, 10) > 20 FROM shop.orders", "shop.orders.amount"),
    ("SELECT SUM(amount) + MIN(customer_id) FROM shop.orders", "customer_id"),
    ("SELECT category FROM shop.orders UNION ALL SELECT region FROM shop.orders", "shop.orders"),
    ("SELECT COUNT(*) FROM shop.orders GROUP BY category ORDER BY MIN(customer_id)", "ORDER BY"),
    ("SELECT category, COUNT(*) FROM shop.orders GROUP BY category ORDER BY category LIMIT 1", None),
    ("SELECT region FROM shop.orders ORDER BY amount LIMIT 1", "amount through ORDER BY"),
    ("SELECT COUNT(*) FROM shop.orders ORDER BY amount LIMIT 1", "ORDER BY"),
    ("SELECT x.n FROM (SELECT amount AS n FROM shop.orders) x", "shop.orders.amount"),
    ("SELECT SUM(amount) FROM shop.orders WHERE customer_id IN (SELECT customer_id FROM shop.orders "
     "WHERE amount > 5)", "after WHERE"),
]


@pytest.fixture(scope="module")
def fed(tmp_path_factory, make_federation):
    path = make_federation(tmp_path_factory.mktemp("ccl"), GRANTS, parties=("bank", "shop"))
    with Engine(path) as engine:
        yield engine


@pytest.mark.parametrize("sql", ALLOWED)
def test_allowed(fed, sql):
    fed.execute(sql, "bank")


@pytest.mark.parametrize("sql, fragment", REFUSED)
def test_refused(fed, sql, fragment):
    if fragment is None:  # group keys under PLAINTEXT_AFTER_GROUP_BY may be sorted: they are revealed anyway
        fed.execute(sql, "bank")
        return
    with pytest.raises(PolicyViolation, match=fragment):
        fed.plan(sql, "bank")


def test_owner_needs_no_grant(fed):
    fed.execute("SELECT amount, customer_id FROM shop.orders ORDER BY amount LIMIT 1", "shop")


def test_explain_shows_inferred_visibility(fed):
    text = fed.explain("SELECT category, SUM(amount) AS total FROM shop.orders GROUP BY category", "bank")
    assert "total: bank PLAINTEXT, shop PLAINTEXT" in text


def test_dry_run_check(fed, tmp_path):
    from click.testing import CliRunner

    from sqlsecure.cli import main

    assert fed.check("SELECT SUM(amount) FROM shop.orders", "bank") is None
    assert "PolicyViolation" in fed.check("SELECT amount FROM shop.orders", "bank")
    path = str(fed.config.path)
    ok = CliRunner().invoke(main, ["check", "-F", path, "--as", "bank", "SELECT SUM(amount) FROM shop.orders"])
    no = CliRunner().invoke(main, ["check", "-F", path, "--as", "bank", "SELECT amount FROM shop.orders"])
    assert (ok.exit_code, no.exit_code) == (0, 1) and "refused: PolicyViolation" in no.output


def test_owner_query_is_not_refused_by_what_others_may_see(fed):
    """EXPLAIN's per-party visibility must not enforce the other parties' grants on the owner's own query."""
    table = fed.execute("SELECT n FROM (SELECT amount AS n FROM shop.orders WHERE amount > 10) t "
                        "WHERE EXISTS (SELECT 1 FROM shop.orders o WHERE o.customer_id > 3)", "shop").table
    assert table.num_rows > 0
    assert "PolicyViolation" in fed.check("SELECT n FROM (SELECT amount AS n FROM shop.orders WHERE amount > 10) t",
                                          "bank")
