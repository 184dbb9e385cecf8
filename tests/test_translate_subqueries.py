"""Subqueries in expressions across parties (issue 16, planner/subqueries.py): scalar subqueries in SELECT,
WHERE and HAVING, correlated scalar aggregates, correlated IN, EXISTS / NOT EXISTS with non-equality
correlations, `x op ANY / ALL (subquery)`; each checked against plain DuckDB over all parties' data (two
and three parties, NULL keys and values, duplicates, empty subqueries), refusals at plan time with
`check` agreeing."""

import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import NotSupportedError, PolicyViolation
from sqlsecure.planner.physical import SecretQuery

PARTIES = ("bank", "shop", "insurer")
# Nothing PLAINTEXT to another party, so no query here can be computed at the issuer: each runs secretly.
GRANTS = {"PLAINTEXT_AFTER_JOIN": ("bank.customers.id", "shop.orders.customer_id", "insurer.policies.customer_id"),
          "PLAINTEXT_AFTER_COMPARE": ("bank.customers.age", "bank.customers.income", "shop.orders.amount",
                                      "shop.orders.category", "shop.orders.region", "insurer.policies.claims",
                                      "bank.customers.region"),
          "PLAINTEXT_AFTER_AGGREGATE": ("insurer.policies.premium",),
          "REVEAL_RANK": ("shop.orders.order_id",)}


@pytest.fixture(scope="module")
def federation(tmp_path_factory, make_federation, grants_for):
    sections = [(viewer, tuple(c for c in columns if not c.startswith(viewer + ".")), constraint)
                for viewer in PARTIES for constraint, columns in GRANTS.items()
                if any(not c.startswith(viewer + ".") for c in columns)]
    return make_federation(tmp_path_factory.mktemp("subqueries"), grants=grants_for(*sections), min_group_size=2)


@pytest.fixture(scope="module")
def secret(federation, oracle_for):
    with Engine(federation, timeout=120) as engine:
        yield oracle_for(engine)


def run_secretly(oracle, sql: str, issuer: str = "bank"):
    """The answer equals DuckDB's, computed by a secret program."""
    plan = oracle.engine.plan(sql, issuer).physical
    assert any(isinstance(step, SecretQuery) for step in plan.steps), plan
    return oracle.check(sql, issuer)


CUSTOMERS = "SELECT c.name FROM bank.customers c WHERE "
ANSWERED = {
    # uncorrelated scalar subqueries: WHERE, SELECT list, HAVING, beside an aggregate; empty ones read NULL
    "where_scalar_avg": CUSTOMERS + "c.age * 5 > (SELECT AVG(o.amount) FROM shop.orders o WHERE o.category = 'books')",
    "select_scalar_sum": "SELECT c.name, (SELECT SUM(p.premium) FROM insurer.policies p) AS total FROM "
                         "bank.customers c WHERE c.age > 70",
    "three_parties": "SELECT c.name FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
                     "WHERE o.amount > (SELECT AVG(p.premium) FROM insurer.policies p) * 2",
    "having_scalar": "SELECT c.region, COUNT(*) AS n FROM bank.customers c JOIN shop.orders o ON c.id = "
                     "o.customer_id GROUP BY c.region HAVING COUNT(*) > (SELECT COUNT(*) FROM insurer.policies p "
                     "WHERE p.claims = 0) / 3",
    "beside_group_by": "SELECT c.region, COUNT(*) * 1.0 / (SELECT COUNT(*) FROM shop.orders o2) AS share FROM "
                       "bank.customers c JOIN shop.orders o ON c.id = o.customer_id GROUP BY c.region",
    "empty_in_where": CUSTOMERS + "c.age > (SELECT MAX(p.claims) FROM insurer.policies p WHERE p.claims > 10)",
    "empty_in_select": "SELECT c.name, (SELECT SUM(p.premium) FROM insurer.policies p WHERE p.claims > 10) AS s "
                       "FROM bank.customers c WHERE c.age > 75",
    # correlated scalar aggregates: a LEFT join to the groups (COUNT over no rows is 0)
    "correlated_avg": CUSTOMERS + "c.age * 4 > (SELECT AVG(o.amount) FROM shop.orders o WHERE o.customer_id = c.id)",
    "correlated_count_zero": CUSTOMERS + "(SELECT COUNT(*) FROM shop.orders o WHERE o.customer_id = c.id) = 0",
    "correlated_count_small": CUSTOMERS + "(SELECT COUNT(o.amount) FROM shop.orders o WHERE o.customer_id = c.id "
                                          "AND o.amount > 100) < 2",
    "correlated_in_select": "SELECT c.name, (SELECT COUNT(*) FROM shop.orders o WHERE o.region = c.region) AS n "
                            "FROM bank.customers c WHERE c.age > 75",
    # correlated IN, EXISTS with residual conditions, with GROUP BY, uncorrelated with aggregates
    "correlated_in": CUSTOMERS + "c.region IN (SELECT o.region FROM shop.orders o WHERE o.customer_id = c.id)",
    "correlated_not_in": CUSTOMERS + "c.age * 5 NOT IN (SELECT CASE WHEN o.category <> 'books' THEN "
                                     "CAST(o.amount AS INTEGER) END FROM shop.orders o WHERE o.customer_id = c.id)",
    "correlated_not_in_no_nulls": CUSTOMERS + "c.region NOT IN (SELECT o.region FROM shop.orders o WHERE "
                                              "o.customer_id = c.id)",
    "exists_residual": CUSTOMERS + "EXISTS (SELECT 1 FROM shop.orders o WHERE o.customer_id = c.id AND "
                                   "o.amount > c.age * 5)",
    "not_exists_residual": CUSTOMERS + "NOT EXISTS (SELECT 1 FROM shop.orders o WHERE o.customer_id = c.id AND "
                                       "o.amount > c.age * 5)",
    "exists_residual_only": CUSTOMERS + "EXISTS (SELECT 1 FROM insurer.policies p WHERE p.claims > c.age - 21)",
    "exists_limit": CUSTOMERS + "EXISTS (SELECT o.amount FROM shop.orders o WHERE o.customer_id = c.id LIMIT 1)",
    "exists_aggregate_uncorrelated": CUSTOMERS + "NOT EXISTS (SELECT COUNT(*) FROM shop.orders o "
                                                 "HAVING MAX(o.amount) > 1000)",
    # x op ANY / ALL: empty subqueries, NULLs among the values, in SELECT (three-valued) and WHERE
    "all_greater": CUSTOMERS + "c.age > ALL (SELECT p.claims * 19 FROM insurer.policies p)",
    "any_less_with_nulls": CUSTOMERS + "c.age * 5 < ANY (SELECT CASE WHEN o.amount > 300 THEN o.amount END "
                                       "FROM shop.orders o)",
    "all_with_nulls": CUSTOMERS + "c.age * 10 > ALL (SELECT CASE WHEN o.amount > 300 THEN o.amount END "
                                  "FROM shop.orders o WHERE o.category = 'books')",
    "all_empty": CUSTOMERS + "c.age > ALL (SELECT p.claims FROM insurer.policies p WHERE p.claims > 10)",
    "any_empty": CUSTOMERS + "c.age > ANY (SELECT p.claims FROM insurer.policies p WHERE p.claims > 10)",
    "eq_any_is_in": CUSTOMERS + "c.age = ANY (SELECT p.claims + 30 FROM insurer.policies p)",
    "neq_all_is_not_in": CUSTOMERS + "c.age <> ALL (SELECT CASE WHEN p.claims > 0 THEN p.claims + 30 END FROM "
                                     "insurer.policies p)",
    "all_in_select": "SELECT c.name, c.age * 5 >= ALL (SELECT CASE WHEN o.amount > 250 THEN o.amount END FROM "
                     "shop.orders o WHERE o.category = 'games') AS above, c.age * 5 <> ANY (SELECT o.amount FROM "
                     "shop.orders o WHERE o.amount > 495) AS other FROM bank.customers c WHERE c.age > 60",
    "not_all": CUSTOMERS + "NOT (c.age > ALL (SELECT p.claims * 19 FROM insurer.policies p))",
    # x IN (subquery) as a value: TRUE, FALSE or NULL as SQL says (NULLs among the values, empty subqueries)
    "in_as_value": "SELECT c.name, c.age IN (SELECT CASE WHEN p.claims > 0 THEN p.claims + 30 END FROM "
                   "insurer.policies p) AS member FROM bank.customers c WHERE c.age > 55",
    "not_in_as_value": "SELECT c.name, c.age NOT IN (SELECT p.claims + 60 FROM insurer.policies p) AS other FROM "
                       "bank.customers c WHERE c.age > 55",
    "in_empty_as_value": "SELECT c.name, c.age IN (SELECT p.claims FROM insurer.policies p WHERE p.claims > 10) AS "
                         "never FROM bank.customers c WHERE c.age > 55",
    "in_inside_or": CUSTOMERS + "c.age > 75 OR c.age IN (SELECT p.claims + 20 FROM insurer.policies p)",
    # the group threshold of the query around a subquery counts that query's owners' rows only
    "threshold_outer": "SELECT c.region, COUNT(*) AS n FROM bank.customers c JOIN shop.orders o ON c.id = "
                       "o.customer_id WHERE o.amount > (SELECT AVG(p.premium) FROM insurer.policies p) GROUP BY "
                       "c.region",
}


@pytest.mark.parametrize("name", ANSWERED)
def test_answered_as_duckdb(secret, name):
    run_secretly(secret, ANSWERED[name])


REFUSED = [  # (query, error, what the message names)
    (CUSTOMERS + "c.age > (SELECT o.amount FROM shop.orders o)", NotSupportedError, "more than one row"),
    (CUSTOMERS + "c.age > ANY (SELECT o.amount FROM shop.orders o WHERE o.customer_id = c.id)", NotSupportedError,
     "correlated ANY / ALL"),
    (CUSTOMERS + "c.age > (SELECT AVG(o.amount) FROM shop.orders o WHERE o.amount > c.age)", NotSupportedError,
     "equalities inner = outer"),
    (CUSTOMERS + "(SELECT COUNT(*) + 1 FROM shop.orders o WHERE o.customer_id = c.id) > 2", NotSupportedError,
     "COUNT"),
    ("SELECT c.name, c.age = ANY (SELECT p.claims FROM insurer.policies p) AS a FROM bank.customers c",
     NotSupportedError, "= ANY is IN"),
    (CUSTOMERS + "EXISTS (SELECT COUNT(*) FROM shop.orders o WHERE o.customer_id = c.id)", NotSupportedError,
     "aggregate over no rows"),
    ("SELECT c.name, (SELECT AVG(o.amount) FROM shop.orders o) AS a FROM bank.customers c", PolicyViolation,
     "shop.orders.amount"),
]


@pytest.mark.parametrize("sql, error, named", REFUSED)
def test_refused_at_plan_time_and_check_agrees(secret, sql, error, named):
    with pytest.raises(error) as refused:
        secret.engine.plan(sql, "bank")
    assert named.lower() in str(refused.value).lower()
    assert secret.engine.check(sql, "bank") == f"{error.__name__}: {refused.value}"


def test_a_revealed_scalar_aggregate_keeps_the_group_threshold(secret):
    """A count of one of shop's orders: fewer than k = 2 of its rows, so the value reads NULL where DuckDB
    would reveal it (docs/federation.md); in a condition it filters as DuckDB does."""
    top = secret.con.execute("SELECT MAX(amount) FROM shop.orders").fetchall()[0][0]
    sql = (f"SELECT c.name, (SELECT COUNT(*) FROM shop.orders o WHERE o.amount >= {top}) AS n "
           "FROM bank.customers c WHERE c.age > 75")
    got = secret.engine.execute(sql, "bank").table
    assert got.num_rows > 0 and got.column("n").null_count == got.num_rows
    assert secret.con.execute(sql).fetchall()[0][1] == 1
    run_secretly(secret, CUSTOMERS + f"(SELECT COUNT(*) FROM shop.orders o WHERE o.amount >= {top}) = 1")
