"""Gather placement (planner/gather.py): where every column a query reads is PLAINTEXT to the issuer,
shapes the secure placement refuses are computed at the issuer; answers against plain DuckDB, and the
extra protections (group threshold, masks, DP, analysis rules) as on the other paths."""

import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import NotSupportedError, PolicyViolation
from sqlsecure.executors.runtime.plan_codec import decode_plan, encode_plan
from sqlsecure.planner import plan_query
from sqlsecure.planner.physical import Finish, PhysicalPlan
from tests.conftest import same_multiset

Q13 = ("SELECT t.c_count, COUNT(*) AS custdist FROM (SELECT c.id, COUNT(o.order_id) AS c_count "
       "FROM bank.customers c LEFT JOIN shop.orders o ON c.id = o.customer_id AND o.category <> 'games' "
       "GROUP BY c.id) t GROUP BY t.c_count")
HORIZONTAL = "SELECT customer_id AS id, region FROM shop.orders UNION ALL SELECT id, region FROM bank.customers"

GATHERED = [  # (issuer, query): each refused by the secure placement, all its columns PLAINTEXT to the issuer
    ("bank", "SELECT t.region, t.amount FROM (SELECT c.region, o.amount FROM bank.customers c "
             "JOIN shop.orders o ON c.id = o.customer_id) t WHERE t.amount > 100"),
    ("bank", "SELECT c.name, c.age FROM bank.customers c WHERE c.id IN "
             "(SELECT o.customer_id FROM shop.orders o JOIN insurer.policies p ON o.customer_id = p.customer_id)"),
    ("bank", "SELECT o.customer_id, o.amount, ROW_NUMBER() OVER (PARTITION BY o.customer_id "
             "ORDER BY o.amount, o.order_id) AS rn FROM shop.orders o JOIN bank.customers c ON c.id = o.customer_id"),
    ("insurer", "SELECT c.region, SUM(p.premium) OVER (PARTITION BY c.region) AS regional FROM insurer.policies p "
                "JOIN bank.customers c ON c.id = p.customer_id"),
    ("bank", "SELECT c.region, COUNT(DISTINCT o.category) AS n FROM bank.customers c "
             "JOIN shop.orders o ON c.id = o.customer_id GROUP BY c.region"),
    ("bank", f"WITH u AS ({HORIZONTAL}) SELECT a.id, b.region FROM u a JOIN u b ON a.id = b.id "
             "WHERE a.region <> b.region"),
    ("bank", f"SELECT DISTINCT u.region, p.claims FROM ({HORIZONTAL}) u JOIN insurer.policies p ON p.customer_id = u.id"),
    ("bank", f"SELECT u.region, COUNT(DISTINCT u.id) AS n FROM ({HORIZONTAL}) u GROUP BY u.region"),
    ("bank", "SELECT o.order_id, p.premium, RANK() OVER (PARTITION BY o.category ORDER BY p.premium DESC, o.order_id) AS r "
             "FROM shop.orders o JOIN insurer.policies p ON o.customer_id = p.customer_id "
             "WHERE o.customer_id IN (SELECT id FROM bank.customers WHERE age > 40)"),
    ("bank", "SELECT COUNT(*) AS n FROM bank.customers c WHERE c.id NOT IN (SELECT o.customer_id FROM shop.orders o "
             "LEFT JOIN insurer.policies p ON o.customer_id = p.customer_id)"),  # a NULL among the values
    ("bank", "SELECT t.id, COALESCE(t.amount, -1) AS amount FROM (SELECT c.id, o.amount FROM bank.customers c "
             "LEFT JOIN shop.orders o ON c.id = o.customer_id) t WHERE t.id IS NULL OR t.amount IS NULL"),
    ("bank", "SELECT t.region, t.amount FROM (SELECT c.region, o.amount FROM bank.customers c "
             "JOIN shop.orders o ON c.id = o.customer_id) t WHERE t.amount > 1e9"),  # empty
]


NESTED = [    ("bank", "SELECT t.region, SUM(t.amount) AS total FROM (SELECT c.region, o.amount FROM bank.customers c "
             "JOIN shop.orders o ON c.id = o.customer_id WHERE c.age > 25) t GROUP BY t.region"),
    ("bank", Q13),
    ("shop", Q13),
    ("bank", "SELECT s.region, COUNT(*) AS n, SUM(s.premium) AS premium FROM (SELECT c.region, p.premium "
             "FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
             "JOIN insurer.policies p ON p.customer_id = o.customer_id) s GROUP BY s.region"),
    ("bank", "SELECT MAX(t.n) AS most FROM (SELECT o.customer_id, COUNT(*) AS n FROM shop.orders o "
             "JOIN bank.customers c ON c.id = o.customer_id WHERE o.amount < 0 GROUP BY o.customer_id) t"),  # empty
]


@pytest.mark.parametrize("issuer, sql", NESTED)
def test_an_aggregate_over_a_derived_table_of_several_parties_is_translated(engine, oracle, issuer, sql):
    """The group threshold through nested shapes counts owners' rows carried up through the derived
    table, which the secret program does (tests/test_translate.py): such a query is not gathered; a
    program too large for the SPU (the three-party all-pairs join) is refused, check agreeing."""
    try:
        plan = engine.plan(sql, issuer).physical
    except NotSupportedError as refused:
        assert "beyond" in str(refused) and engine.check(sql, issuer) == f"NotSupportedError: {refused}"
        return
    assert any(type(step).__name__ == "SecretQuery" for step in plan.steps)
    oracle.check(sql, issuer)


@pytest.mark.parametrize("issuer, sql", GATHERED)
def test_gathered_query_matches_duckdb(engine, oracle, issuer, sql):
    assert engine.check(sql, issuer) is None
    last = engine.plan(sql, issuer).physical.steps[-1]
    assert isinstance(last, Finish) and last.mode == "tables"
    oracle.check(sql, issuer)


@pytest.mark.parametrize("k", [2, 12, 40])
def test_threshold_counts_each_protected_owner_distinct_rows(tmp_path, make_federation, oracle_for, k):
    sql = ("SELECT c.region, COUNT(DISTINCT o.category) AS n, SUM(o.amount) AS total FROM bank.customers c "
           "JOIN shop.orders o ON c.id = o.customer_id WHERE c.age > 20 GROUP BY c.region")
    with Engine(make_federation(tmp_path, min_group_size=k), timeout=60) as engine:
        plan = engine.plan(sql, "bank").physical
        assert (plan.min_group_size, plan.counted) == (k, ("shop",))
        oracle_for(engine).check(sql, "bank")
        union = f"SELECT u.region, COUNT(DISTINCT u.id) AS n FROM ({HORIZONTAL}) u GROUP BY u.region"
        assert engine.plan(union, "bank").physical.counted == ("shop",)
        oracle_for(engine).check(union, "bank")


def test_threshold_refuses_a_protected_owner_part_that_repeats_rows(engine):
    sql = ("SELECT t.region, COUNT(*) AS n FROM (SELECT a.region FROM shop.orders a "
           "JOIN shop.orders b ON a.customer_id = b.customer_id) t GROUP BY t.region")
    with pytest.raises(PolicyViolation, match="distinct rows"):
        engine.plan(sql, "bank")
    assert engine.check(sql, "bank").startswith("PolicyViolation")


def test_explain_says_what_each_owner_reveals(engine):
    text = engine.explain("SELECT t.region, t.amount FROM (SELECT c.region, o.amount FROM bank.customers c "
                          "JOIN shop.orders o ON c.id = o.customer_id WHERE o.category = 'books') t", "bank")
    assert 'SELECT "customer_id", "amount", "category" FROM "orders" WHERE "category" = \'books\'' in text
    assert "bank: from shop.orders the columns customer_id, amount, category; its rows where" in text
    assert "at most 256, shop's published size" in text
    assert "shop: nothing" in text and "computed at bank in plaintext" in text


def test_gathered_plan_round_trips_the_codec(engine):
    plan = engine.plan(Q13, "bank").physical
    assert decode_plan(encode_plan(plan), PhysicalPlan) == plan


SUM_PER_CUSTOMER = ("SELECT t.region, MAX(t.total) AS most FROM (SELECT c.region, c.id, SUM(o.amount) AS total "
                    "FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id GROUP BY c.region, c.id) t "
                    "GROUP BY t.region")
WEAKER = [  # (the column's grant to bank, a query using it as that grant allows, the query without it)
    ("shop.orders.category", "PLAINTEXT_AFTER_COMPARE", Q13, Q13.replace(" AND o.category <> 'games'", "")),
    ("shop.orders.amount", "PLAINTEXT_AFTER_AGGREGATE", SUM_PER_CUSTOMER, SUM_PER_CUSTOMER.replace("o.amount", "1")),
    ("shop.orders.customer_id", "PLAINTEXT_AFTER_JOIN", Q13, None),
    ("shop.orders.category", "PLAINTEXT_AFTER_GROUP_BY",
     "SELECT t.category, MAX(t.n) AS most FROM (SELECT o.category, c.region, COUNT(*) AS n FROM bank.customers c "
     "JOIN shop.orders o ON c.id = o.customer_id GROUP BY o.category, c.region) t GROUP BY t.category", None),
    ("shop.orders.category", "ENCRYPTED_ONLY", Q13, Q13.replace(" AND o.category <> 'games'", "")),
]


@pytest.mark.parametrize("column, constraint, sql, without", WEAKER)
def test_weaker_grant_keeps_the_query_off_this_path(tmp_path, make_federation, grants_for, oracle_for,
                                                   column, constraint, sql, without):
    others = [f"shop.orders.{c}" for c in ("order_id", "customer_id", "amount", "category", "region")]
    grants = grants_for(("bank", tuple(c for c in others if c != column), "PLAINTEXT"), ("bank", (column,), constraint))
    with Engine(make_federation(tmp_path, grants=grants), timeout=60) as engine:
        try:  # refused as before, or computed by a secret program (tests/test_translate.py): not gathered
            plan = engine.plan(sql, "bank").physical
        except (NotSupportedError, PolicyViolation) as refused:
            assert engine.check(sql, "bank") == f"{type(refused).__name__}: {refused}"
        else:
            assert any(type(step).__name__ == "SecretQuery" for step in plan.steps)
            oracle_for(engine).check(sql, "bank")
        if without is not None:  # only the columns the query reads must be PLAINTEXT
            assert engine.check(without, "bank") is None
            oracle_for(engine).check(without, "bank")


def test_masked_column_keeps_the_query_off_this_path(tmp_path, make_federation, plaintext_grants, oracle_for):
    mask = '[[masks]]\nparty = "bank"\ncolumns = ["shop.orders.category"]\nmethod = "redact"\n'
    with Engine(make_federation(tmp_path, grants=plaintext_grants() + mask), timeout=60) as engine:
        not_gathered(oracle_for(engine), Q13, "bank")  # refused: a mask binds every use of its column


def test_differential_privacy_keeps_the_query_off_this_path(tmp_path, make_federation, plaintext_grants, bank_dp):
    sql = ("SELECT t.region, COUNT(*) AS n FROM (SELECT c.region FROM bank.customers c "
           "JOIN shop.orders o ON c.id = o.customer_id) t GROUP BY t.region")
    with Engine(make_federation(tmp_path, grants=plaintext_grants() + bank_dp), timeout=60) as engine:
        plan = engine.plan(sql, "bank").physical  # noised on shares by the secret program (test_translate_dp.py)
        assert plan.epsilon > 0 and not any(isinstance(s, Finish) and s.mode == "tables" for s in plan.steps)


RULES = {
    "aggregations": '[rules."shop.orders"]\naggregations = { amount = ["SUM"] }\n',
    "never_output": '[rules."shop.orders"]\nnever_output = ["category"]\n',
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_usage_limiting_rule_keeps_the_query_off_this_path(tmp_path, make_federation, plaintext_grants, oracle_for,
                                                           rule):
    sql = ("SELECT t.region, SUM(t.total) AS total FROM (SELECT c.region, c.id, SUM(o.amount) AS total "
           "FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id WHERE o.category <> 'games' "
           "GROUP BY c.region, c.id) t GROUP BY t.region")
    with Engine(make_federation(tmp_path, grants=plaintext_grants() + RULES[rule]), timeout=60) as engine:
        not_gathered(oracle_for(engine), sql, "bank")


@pytest.mark.parametrize("sql", [
    "SELECT c.region, COUNT(DISTINCT o.category) AS n FROM bank.customers c "
    "JOIN shop.orders o ON c.id = o.customer_id GROUP BY c.region",
    "SELECT t.region, COUNT(*) AS n FROM (SELECT c.region FROM bank.customers c "
    "JOIN shop.orders o ON c.id = o.customer_id) t GROUP BY t.region",  # the rule's table inside a derived table
])
def test_stricter_rule_threshold_applies(tmp_path, make_federation, plaintext_grants, oracle_for, sql):
    rule = '[rules."shop.orders"]\nmin_group_size = 15\n'
    with Engine(make_federation(tmp_path, grants=plaintext_grants() + rule), timeout=60) as engine:
        assert engine.plan(sql, "bank").physical.min_group_size == 15
        oracle_for(engine).check(sql, "bank")


def test_identity_threshold_counts_distinct_identities(tmp_path, make_federation, plaintext_grants, oracle_for):
    rule = '[rules."shop.orders"]\nmin_group_size = 12\nidentity_column = "customer_id"\n'
    sql = ("SELECT c.region, COUNT(DISTINCT o.category) AS n FROM bank.customers c "
           "JOIN shop.orders o ON c.id = o.customer_id WHERE c.age > 30 GROUP BY c.region")
    with Engine(make_federation(tmp_path, grants=plaintext_grants() + rule, min_group_size=0), timeout=60) as engine:
        got = engine.execute(sql, "bank").table
        assert engine.plan(sql, "bank").physical.steps[-1].mode == "tables"
        want = oracle_for(engine).con.sql(sql.replace(
            "GROUP BY c.region", "GROUP BY c.region HAVING COUNT(DISTINCT o.customer_id) >= 12 "
                                 "AND COUNT(DISTINCT o.rowid) >= 12")).to_arrow_table()
        assert same_multiset(got, want) and got.num_rows < oracle_for(engine).con.sql(sql).to_arrow_table().num_rows


def test_aggregates_under_a_set_operation_are_not_gathered(oracle):
    not_gathered(oracle, "SELECT region, COUNT(*) AS n FROM shop.orders GROUP BY region "
                         "UNION ALL SELECT region, COUNT(*) FROM bank.customers GROUP BY region", "bank")


def not_gathered(oracle, sql: str, issuer: str) -> None:
    """Not computed at the issuer: refused (check agreeing), or answered by a secret program (the
    translation, tests/test_translate.py) as the oracle answers."""
    engine = oracle.engine
    try:
        plan = engine.plan(sql, issuer).physical
    except (NotSupportedError, PolicyViolation) as refused:
        assert engine.check(sql, issuer) == f"{type(refused).__name__}: {refused}"
        return
    assert any(type(step).__name__ == "SecretQuery" for step in plan.steps)
    oracle.check(sql, issuer)


def test_an_enclave_only_federation_keeps_the_query_off_this_path(engine):
    with pytest.raises(NotSupportedError, match="derived table 't' reads several parties"):
        plan_query(Q13, catalog=engine.catalog, policy=engine.policy, issuer="bank", enclave="always")
    assert plan_query(Q13, catalog=engine.catalog, policy=engine.policy, issuer="bank", enclave="cost").logical is None
