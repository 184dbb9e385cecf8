"""Masks, differential privacy and identity thresholds on queries the operator translation (or the
spine through a derived table) answers (issue 16): a masked column is masked wherever it is renamed on
its way to the result, by its owner before it is shared; groups are counted by identity as on the spine;
what the secret program cannot honour (other uses of a revealed masked column) is refused at plan time,
`check` agreeing; DP is answered (its own tests: test_translate_dp.py)."""

import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import PolicyViolation
from sqlsecure.planner.physical import Mask, SecretQuery
from sqlsecure.policy.masking import Mask as MaskSpec, apply_mask

MASKS = """
[[masks]]
party = "bank"
columns = ["shop.orders.category"]
method = "redact"

[[masks]]
party = "bank"
columns = ["shop.orders.region"]
method = "partial"
keep = 2

[[masks]]
party = "bank"
columns = ["insurer.policies.customer_id"]
method = "hash"
"""

JOINED = "FROM shop.orders o JOIN bank.customers c ON o.customer_id = c.id"
REDACT, PARTIAL = MaskSpec("redact"), MaskSpec("partial", keep=2)


@pytest.fixture(scope="module")
def masked(tmp_path_factory, make_federation, plaintext_grants):
    with Engine(make_federation(tmp_path_factory.mktemp("dpmask"), plaintext_grants() + MASKS), timeout=60) as engine:
        yield engine


@pytest.fixture(scope="module")
def masked_oracle(masked, oracle_for):
    return oracle_for(masked)


def with_mask(table: pa.Table, column: str, mask: MaskSpec) -> pa.Table:
    i = table.column_names.index(column)
    return table.set_column(i, column, apply_mask(table.column(i), mask, None))


def assert_translated_with_masks(engine, sql: str, masked_columns: set[str]) -> None:
    """The query runs as a secret program, each masked column masked by its owner before it is shared."""
    steps = engine.plan(sql, "bank").physical.steps
    assert any(isinstance(s, SecretQuery) for s in steps)
    masks = [s for s in steps if isinstance(s, Mask)]
    assert {column for s in masks for column, _ in s.columns} == masked_columns
    secret = next(i for i, s in enumerate(steps) if isinstance(s, SecretQuery))
    assert all(steps.index(s) < secret for s in masks)


def test_masked_output_of_a_derived_join_is_masked_before_sharing(masked, masked_oracle, rows_match):
    sql = f"SELECT t.category, t.amount FROM (SELECT o.category, o.amount {JOINED}) t"
    assert_translated_with_masks(masked, sql, {"o.category"})
    got = masked.execute(sql, "bank").table
    assert rows_match(got, with_mask(masked_oracle.expected(sql, "bank"), "category", REDACT))


@pytest.mark.parametrize("sql, column, same", [
    (f"WITH t AS (SELECT o.category {JOINED}) SELECT t.category FROM t", "category", None),
    (f"SELECT t.x FROM (SELECT o.category, o.amount {JOINED}) AS t(x, y)", "x",  # the oracle's form of it:
     f"SELECT t.x FROM (SELECT o.category AS x, o.amount {JOINED}) AS t"),
    (f"SELECT * FROM (SELECT o.category, c.age {JOINED}) t", "category", None),
    (f"SELECT t.category FROM (SELECT * FROM (SELECT o.category {JOINED}) s) t", "category", None),
])
def test_a_masked_column_is_masked_through_ctes_aliases_and_stars(masked, masked_oracle, rows_match, sql, column,
                                                                  same):
    got = masked.execute(sql, "bank").table
    assert rows_match(got, with_mask(masked_oracle.expected(same or sql, "bank"), column, REDACT))


def test_masks_bind_each_union_branch_by_its_source(masked, masked_oracle, rows_match):
    """The shop's regions are masked for bank, the bank's own are not: one output column carries both."""
    shop, bank = "SELECT region AS label, customer_id AS who FROM shop.orders", "SELECT region, id FROM bank.customers"
    sql = f"SELECT u.label, u.who FROM ({shop} UNION ALL {bank}) u"
    got = masked.execute(sql, "bank").table
    want = pa.concat_tables([with_mask(masked_oracle.expected(shop, "bank"), "label", PARTIAL),
                             masked_oracle.expected(bank, "bank").rename_columns(["label", "who"]).cast(
                                 masked_oracle.expected(shop, "bank").schema)])
    assert rows_match(got, want)


def test_single_party_derived_table_masks_its_output(masked, masked_oracle, rows_match):
    """The spine's pushdown through a derived table (the mask was not applied there)."""
    sql = "SELECT t.category, t.amount FROM (SELECT category, amount FROM shop.orders WHERE amount > 100) t"
    got = masked.execute(sql, "bank").table
    assert set(got.column("category").to_pylist()) == {"****"}
    assert rows_match(got, with_mask(masked_oracle.expected(sql, "bank"), "category", REDACT))


REFUSED = [  # a mask binds every use of its column (tests/test_attacks_s14.py): also where it is not revealed
    (f"SELECT t.amount, t.id FROM (SELECT o.amount, c.id {JOINED} WHERE o.category = 'books') t",
     PolicyViolation, "WHERE"),
    ("SELECT t.premium, t.age FROM (SELECT p.premium, c.age FROM insurer.policies p "
     "JOIN bank.customers c ON p.customer_id = c.id) t", PolicyViolation, "insurer.policies.customer_id"),
    (f"SELECT t.category, COUNT(*) AS n FROM (SELECT o.category {JOINED}) t GROUP BY t.category",
     PolicyViolation, "shop.orders.category"),
    (f"SELECT t.category FROM (SELECT o.category {JOINED}) t WHERE t.category <> 'books'",
     PolicyViolation, "WHERE"),
    (f"SELECT DISTINCT t.region FROM (SELECT o.region {JOINED}) t", PolicyViolation, "shop.orders.region"),
    (f"SELECT t.c FROM (SELECT UPPER(o.category) AS c {JOINED}) t", PolicyViolation, "masked for bank"),
    ("SELECT c.name, (SELECT MAX(o.category) FROM shop.orders o WHERE o.customer_id = c.id) AS m "
     "FROM bank.customers c", PolicyViolation, "masked for bank"),
    (f"SELECT u.x FROM (SELECT o.category AS x {JOINED} UNION SELECT region FROM bank.customers) u",
     PolicyViolation, "shop.orders.category"),
    ("SELECT category FROM shop.orders UNION SELECT name FROM bank.customers", PolicyViolation, "merges equal rows"),
    (f"SELECT t.region AS r FROM (SELECT o.region {JOINED}) t ORDER BY r LIMIT 3", PolicyViolation, "ORDER BY"),
    (f"SELECT t.region FROM (SELECT o.region {JOINED}) t ORDER BY 1", PolicyViolation, "ORDER BY"),
]


@pytest.mark.parametrize("sql, error, named", REFUSED)
def test_other_uses_of_a_revealed_masked_column_are_refused(masked, assert_refused, sql, error, named):
    assert_refused(masked, sql, "bank", error, named)


UNION = ("SELECT COUNT(*) AS n FROM (SELECT customer_id AS who FROM shop.orders "
         "UNION ALL SELECT id FROM bank.customers) t")


def test_differential_privacy_through_the_translation_is_answered_and_charged(tmp_path, make_federation,
                                                                             plaintext_grants, bank_dp):
    """The secret program noises its aggregate on a share before it opens (tests/test_translate_dp.py):
    answered, nothing charged by planning or `check`, the query's ε charged when it runs."""
    with Engine(make_federation(tmp_path, plaintext_grants() + bank_dp), timeout=60) as engine:
        assert any(isinstance(s, SecretQuery) for s in engine.plan(UNION, "bank").physical.steps)
        assert engine.check(UNION, "bank") is None and engine.ledger.spent("bank").epsilon == 0
        assert engine.execute(UNION, "bank").table.column_names == ["n"]
        assert engine.ledger.spent("bank").epsilon == 1.0


IDENTITY = """
[rules."shop.orders"]
identity_column = "customer_id"
aggregations = { amount = ["SUM"] }
"""


@pytest.mark.parametrize("below", [30, 40])
def test_identity_threshold_through_the_translation(tmp_path, make_federation, plaintext_grants, oracle_for,
                                                    rows_match, below):
    """Groups counted by distinct identities (a rule's identity_column), as on the spine, in a query only the
    secret program answers (a usage rule keeps it off the issuer): the oracle with the same HAVING."""
    sql = ("SELECT o.customer_id % 5 AS k, COUNT(*) AS n FROM shop.orders o JOIN (SELECT id FROM bank.customers "
           "UNION ALL SELECT customer_id FROM insurer.policies) u ON o.customer_id = u.id "
           f"WHERE o.customer_id < {below} GROUP BY o.customer_id % 5")
    having = f"{sql} HAVING COUNT(DISTINCT o.customer_id) >= 4"
    with Engine(make_federation(tmp_path, plaintext_grants() + IDENTITY), timeout=60) as engine:
        assert any(isinstance(s, SecretQuery) for s in engine.plan(sql, "bank").physical.steps)
        oracle = oracle_for(engine)
        got = engine.execute(sql, "bank").table
        assert rows_match(got, oracle.expected(having, "bank"))
        if below == 40:  # a group of enough rows but too few identities is withheld
            assert not rows_match(got, oracle.expected(sql, "bank"))
