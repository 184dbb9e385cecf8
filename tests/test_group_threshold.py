"""The minimum group size counts each protected owner's distinct rows, never joined rows (issue 15, leak 4).

A group (or an ungrouped aggregate) revealed to an issuer passes only if every other party whose
rows the aggregate reads contributes at least k distinct rows to it: duplicates on the issuer's
side (5 bank rows of one customer, an issuer-made table of repeated ids) never inflate it.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlsecure.executors.spu import arith, relational
from sqlsecure.executors.spu.local import run_spu
from sqlsecure.executors.spu.shares import as_ring, to_signed


def _share(s, values, owner=0):
    values = np.asarray(values, dtype=np.int64)
    return arith.share_input(s, owner, as_ring(values) if s.index == owner else None, values.shape)


def reference_distinct(keys, weights, values) -> dict:
    """Per group: the number of distinct values among its rows of weight 1."""
    return {key: len({v for k, w, v in zip(keys, weights, values) if k == key and w})
            for key in set(keys.tolist())}


@pytest.mark.parametrize("nparties", [2, 3])
@settings(max_examples=6, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1), st.integers(0, 5)), min_size=1, max_size=30))
def test_group_by_within_counts_distinct_weighted_values(nparties, rows):
    keys, weights, values = (np.array([r[i] for r in rows], dtype=np.int64) for i in range(3))

    def program(s):
        g = relational.group_by(s, [_share(s, keys)], [("sum", _share(s, weights, 1)), ("count", None)],
                                within=[relational.Counted(_share(s, weights, 1), (_share(s, values, nparties - 1),))])
        kept = relational.compact(s, g.last, [*g.keys, *g.distinct, *g.aggregates])
        return [to_signed(c) for c in arith.reveal_many(s, kept)]

    key, distinct, total, count = run_spu(nparties, program).results[0]
    assert dict(zip(key.tolist(), distinct.tolist())) == reference_distinct(keys, weights, values)
    assert dict(zip(key.tolist(), count.tolist())) == {k: int((keys == k).sum()) for k in set(keys.tolist())}
    assert dict(zip(key.tolist(), total.tolist())) == {k: int(weights[keys == k].sum()) for k in set(keys.tolist())}


# --- end to end: the reproductions on every device path -----------------------------------

import pyarrow as pa  # noqa: E402

from sqlsecure.engine import Engine  # noqa: E402
from sqlsecure.errors import PolicyViolation  # noqa: E402
from tests.test_enclave_queries import enclave_section  # noqa: E402

K = 4
REPEATED = 7  # the customer with five bank rows
ONE_ORDER = "o.order_id = 950"


def threshold_tables() -> dict:
    """bank: customers 1..40 once each and customer 7 five times, plus a table of one id repeated;
    shop: one order (950) of customer 7 and six orders of each of customers 1..6 and 10..40;
    insurer: 3 policies (customers 100..102, each with 4 bank rows) and 12 of customers 1..12."""
    ids = [i for i in range(1, 41) if i != REPEATED] + [REPEATED] * 5 + [c for c in (100, 101, 102) for _ in range(4)]
    customers = pa.table({"id": pa.array(ids, pa.int64()),
                          "region": pa.array(["north" if i % 2 else "south" for i in ids]),
                          "age": pa.array([30 + i % 40 for i in ids], pa.int64())})
    rep = pa.table({"id": pa.array([REPEATED] * 10, pa.int64())})
    order_customers = [c for c in range(1, 41) if c not in (7, 8, 9) for _ in range(6)]
    orders = pa.table({"order_id": pa.array(list(range(len(order_customers))) + [950], pa.int64()),
                       "customer_id": pa.array(order_customers + [REPEATED], pa.int64()),
                       "amount": pa.array([10.0 + i % 7 for i in range(len(order_customers))] + [777.0]),
                       "category": pa.array(["books" if i % 3 else "games" for i in range(len(order_customers))]
                                            + ["garden"])})
    policy_customers = [100, 101, 102] + list(range(1, 13))
    policies = pa.table({"customer_id": pa.array(policy_customers, pa.int64()),
                         "premium": pa.array([500.0 + i for i in range(len(policy_customers))]),
                         "kind": pa.array(["rare"] * 3 + ["common"] * 12)})
    return {"bank": {"customers": customers, "rep": rep}, "shop": {"orders": orders},
            "insurer": {"policies": policies}}


RULES = '\n[rules."insurer.policies"]\nmin_group_size = 10\n'


@pytest.fixture(scope="module")
def engines(tmp_path_factory, federation_writer, plaintext_grants, oracle_for):
    """One engine (with its oracle) per device path for class 4: plaintext after PSI, HE, SPU, enclave."""
    tables = threshold_tables()
    made = {}
    for name, options in (("local", {}), ("he", {"group_sums": "he"}), ("spu", {"group_sums": "spu"}),
                          ("enclave", {})):
        directory = tmp_path_factory.mktemp(name)
        extra = enclave_section(directory).replace("[enclave]", '[enclave]\nplacement = "always"') \
            if name == "enclave" else ""
        path = federation_writer(directory, tables, plaintext_grants() + RULES + extra, **options)
        made[name] = oracle_for(Engine(path))
    yield made
    for oracle in made.values():
        oracle.engine.close()


PATHS = ["local", "he", "spu", "enclave"]

# (sql, paths it runs on): one order joined to a customer with 5 bank rows reveals no row
ONE_ORDER_QUERIES = [
    (f"SELECT AVG(o.amount), COUNT(*) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
     f"WHERE {ONE_ORDER}", ["local", "enclave"]),
    (f"SELECT c.region, AVG(o.amount), COUNT(*) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
     f"WHERE {ONE_ORDER} GROUP BY c.region", PATHS),
    (f"SELECT SUM(o.amount), COUNT(*) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
     f"WHERE {ONE_ORDER} AND o.amount > c.age", ["spu"]),
    (f"SELECT COUNT(*) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id WHERE {ONE_ORDER}",
     ["local"]),
    # an issuer-made table of repeated ids
    (f"SELECT SUM(o.amount) FROM bank.rep r JOIN shop.orders o ON r.id = o.customer_id WHERE {ONE_ORDER}",
     ["local"]),
    (f"SELECT o.category, SUM(o.amount), COUNT(*) FROM bank.rep r JOIN shop.orders o ON r.id = o.customer_id "
     f"WHERE {ONE_ORDER} GROUP BY o.category", ["local"]),
    (f"SELECT r.id, SUM(o.amount) FROM bank.rep r JOIN shop.orders o ON r.id = o.customer_id "
     f"WHERE {ONE_ORDER} GROUP BY r.id", PATHS),
]


@pytest.mark.parametrize("sql,paths", ONE_ORDER_QUERIES)
def test_duplicates_on_the_issuers_side_do_not_pass_the_threshold(engines, sql, paths):
    for path in paths:
        assert engines[path].check(sql, "bank").num_rows == 0, path


INSURER_QUERIES = [  # 3 policies x 4 bank rows = 12 joined rows >= 10, but 3 distinct policies
    "SELECT SUM(p.premium), COUNT(*) FROM bank.customers c JOIN insurer.policies p ON c.id = p.customer_id "
    "WHERE p.kind = 'rare'",
    "SELECT c.region, SUM(p.premium) FROM bank.customers c JOIN insurer.policies p ON c.id = p.customer_id "
    "WHERE p.kind = 'rare' GROUP BY c.region",
    "SELECT p.kind, SUM(p.premium) FROM bank.customers c JOIN insurer.policies p ON c.id = p.customer_id "
    "WHERE p.kind = 'rare' GROUP BY p.kind",
]


THREE_PARTIES = [  # many shop rows per group, but only 3 of the insurer's: withheld
    "SELECT c.region, COUNT(*), SUM(o.amount) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "JOIN insurer.policies p ON p.customer_id = c.id WHERE p.customer_id <= 3 GROUP BY c.region",
    "SELECT COUNT(*), SUM(o.amount) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "JOIN insurer.policies p ON p.customer_id = c.id WHERE p.customer_id <= 3",
]


@pytest.mark.parametrize("sql", INSURER_QUERIES + THREE_PARTIES)
@pytest.mark.parametrize("path", PATHS)
def test_groups_short_of_one_owners_distinct_rows_are_withheld(engines, sql, path):
    """The insurer's k = 10 rule against 3 policies x 4 bank rows; 3 parties where only one is short."""
    oracle = engines[path]
    assert oracle.check(sql, "bank").num_rows == 0


PASSING = [  # groups with enough distinct rows of every protected owner: answered as the oracle says
    "SELECT c.region, COUNT(*), SUM(o.amount), AVG(o.amount) FROM bank.customers c "
    "JOIN shop.orders o ON c.id = o.customer_id GROUP BY c.region",
    "SELECT o.category, COUNT(*), SUM(o.amount) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "GROUP BY o.category",
    "SELECT COUNT(*), SUM(o.amount) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id",
    "SELECT COUNT(*), SUM(p.premium) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "JOIN insurer.policies p ON p.customer_id = c.id",
    "SELECT c.region, o.category, COUNT(*) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "GROUP BY c.region, o.category",
]


@pytest.mark.parametrize("sql", PASSING)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("issuer", ["bank", "insurer"])
def test_groups_with_enough_distinct_rows_match_the_oracle(engines, sql, path, issuer):
    got = engines[path].check(sql, issuer)
    assert got.num_rows > 0


SHORT_IN_ONE_GROUP = [  # issued by the insurer: bank and shop counted, one group short of one of them
    # north: customer 7's five bank rows but one shop order (the second counted owner is short)
    ("SELECT c.region, COUNT(*), SUM(o.amount) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
     "WHERE o.order_id = 950 OR (c.region = 'south' AND c.id <= 12) GROUP BY c.region", {"south"}),
    # north: two bank rows and twelve shop orders (the first counted owner is short)
    ("SELECT c.region, o.category, COUNT(*) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
     "WHERE c.id IN (1, 3) OR (c.region = 'south' AND c.id <= 12) GROUP BY c.region, o.category", {"south"}),
]


@pytest.mark.parametrize("sql, kept", SHORT_IN_ONE_GROUP)
@pytest.mark.parametrize("path", ["local", "spu"])
def test_each_counted_owner_decides_per_group(engines, sql, kept, path):
    """Two counted owners in one GROUP BY: a group passes only with k distinct rows of each."""
    got = engines[path].check(sql, "insurer")
    assert {row["region"] for row in got.to_pylist()} == kept


UNION = [
    "SELECT u.k, COUNT(*) FROM (SELECT id AS k FROM bank.customers UNION ALL SELECT customer_id AS k "
    "FROM shop.orders) AS u GROUP BY u.k",
    "SELECT COUNT(*) FROM (SELECT id AS k FROM bank.customers UNION ALL SELECT customer_id AS k "
    "FROM insurer.policies WHERE customer_id > 100) AS u",
    "SELECT COUNT(*) FROM (SELECT id AS k FROM bank.customers UNION ALL SELECT customer_id AS k "
    "FROM shop.orders) AS u",
]


@pytest.mark.parametrize("sql", UNION)
def test_union_all_counts_each_protected_branchs_rows(engines, sql):
    engines["local"].check(sql, "bank")


def test_union_groups_of_few_shop_rows_are_withheld(engines):
    rows = engines["local"].engine.execute(UNION[0], "bank").table.to_pylist()
    assert rows and all(r["k"] not in (7, 8, 9, 100) for r in rows)  # shop has < 4 rows of these


@pytest.mark.parametrize("path", ["local", "he", "spu"])
def test_explain_states_the_rule(engines, path):
    text = engines[path].engine.explain(ONE_ORDER_QUERIES[1][0], "bank")
    assert "groups with fewer than 4 distinct shop rows are withheld" in text
    assert ("shop -> bank: the most joined rows one of its rows appears in" in text) == (path == "he")


OBLIVIOUS_GRANTS = [  # no PLAINTEXT_AFTER_JOIN on the shop's key: the SPU joins on shares
    ("bank", ("shop.orders.order_id",), "PLAINTEXT_AFTER_COMPARE"),
    ("bank", ("shop.orders.amount",), "PLAINTEXT_AFTER_AGGREGATE"),
    ("bank", ("shop.orders.category",), "PLAINTEXT_AFTER_GROUP_BY"),
]


@pytest.fixture(scope="module")
def oblivious(tmp_path_factory, federation_writer, grants_for, oracle_for):
    tables = threshold_tables()
    path = federation_writer(tmp_path_factory.mktemp("oblivious"), {"bank": tables["bank"], "shop": tables["shop"]},
                             grants_for(*OBLIVIOUS_GRANTS), parties=("bank", "shop"))
    with Engine(path) as engine:
        yield oracle_for(engine)


@pytest.mark.parametrize("sql", [
    "SELECT SUM(o.amount), COUNT(*) FROM bank.rep r JOIN shop.orders o ON r.id = o.order_id",
    "SELECT o.category, SUM(o.amount) FROM bank.rep r JOIN shop.orders o ON r.id = o.order_id GROUP BY o.category",
    "SELECT r.id, SUM(o.amount) FROM bank.rep r JOIN shop.orders o ON r.id = o.order_id GROUP BY r.id",
])
def test_an_oblivious_join_counts_the_unique_sides_distinct_rows(oblivious, sql):
    """One shop order joined to ten copies of its id in the issuer's table: withheld."""
    assert "SPU(bank, shop)" in oblivious.engine.explain(sql, "bank")
    assert oblivious.check(sql, "bank").num_rows == 0


def test_an_oblivious_join_passes_groups_of_enough_distinct_rows(oblivious):
    sql = "SELECT c.region, COUNT(*), SUM(o.amount) FROM bank.customers c JOIN shop.orders o ON c.id = o.order_id " \
          "GROUP BY c.region"
    assert oblivious.check(sql, "bank").num_rows > 0


@pytest.mark.parametrize("sql", [
    "SELECT AVG(o.amount) FROM bank.customers c JOIN (SELECT * FROM shop.orders UNION ALL SELECT * FROM shop.orders "
    "UNION ALL SELECT * FROM shop.orders UNION ALL SELECT * FROM shop.orders) o ON c.id = o.customer_id "
    f"WHERE {ONE_ORDER}",
    f"SELECT AVG(o.amount), COUNT(*) FROM shop.orders o, (VALUES (1), (2), (3), (4)) v(x) WHERE {ONE_ORDER}",
    f"SELECT AVG(o.amount) FROM (SELECT amount, order_id, UNNEST([1, 2, 3, 4]) FROM shop.orders) o WHERE {ONE_ORDER}",
])
def test_the_issuer_cannot_repeat_a_protected_owners_rows_inside_its_part(engines, sql):
    with pytest.raises(PolicyViolation, match="can repeat a row"):
        engines["local"].engine.plan(sql, "bank")


@pytest.mark.parametrize("sql, answered", [
    (f"SELECT AVG(o.amount) FROM shop.orders o JOIN shop.orders o2 ON o.customer_id = o2.customer_id "
     f"WHERE {ONE_ORDER}", False),
    ("SELECT o.category, COUNT(*), SUM(o2.amount) FROM shop.orders o JOIN shop.orders o2 "
     "ON o.customer_id = o2.customer_id GROUP BY o.category", True),
    ("SELECT COUNT(*), SUM(c.age) FROM bank.customers c JOIN bank.rep r ON c.id = r.id", True),  # 5 x 10 rows
    ("SELECT COUNT(*) FROM bank.customers c JOIN bank.rep r ON c.id = r.id WHERE c.age > 0 AND c.region = 'x'",
     False),
    ("SELECT c.region, COUNT(r.id) FROM bank.customers c LEFT JOIN bank.rep r ON c.id = r.id GROUP BY c.region",
     True),  # south: no rep row, withheld
    ("SELECT c.region, COUNT(*) FROM bank.customers c LEFT JOIN (SELECT id FROM bank.customers) d "
     "ON c.id = d.id GROUP BY c.region", True),
])
def test_a_join_of_one_owners_own_tables_counts_each_inputs_distinct_rows(engines, sql, answered):
    """A protected owner's own join (TPC-H Q14's shape) is answered when each of its inputs brings k
    distinct rows to the group, however often the join repeats them (10 rep rows of one id: withheld)."""
    issuer = "insurer" if "bank." in sql else "bank"
    got = engines["local"].check(sql, issuer)
    assert (got.num_rows > 0) == answered


def test_the_enclaves_distinct_count_matches_a_plaintext_reference():
    from sqlsecure.executors.tee.oblivious import group_by

    order = np.random.default_rng(5).permutation(17)
    keys = np.array([0] * 6 + [1] * 6 + [2] * 5)[order]
    provenance = np.array([1, 1, 1, 2, 2, 2, 0, 1, 2, 3, 4, 5, 4, 4, 5, 6, 7])[order]
    grouped = group_by([keys], [("count", None)], min_group_size=4, distinct=[provenance])
    kept = {int(k) for k, keep in zip(grouped.keys[0], grouped.keep) if keep}
    assert kept == {k for k in set(keys.tolist()) if len(set(provenance[keys == k].tolist())) >= 4} == {1, 2}


def test_the_he_value_partys_multiplicity_is_its_most_joined_row():
    from sqlsecure.executors.heu.group_by import row_multiplicity

    piece = pa.table({"__prov_r1": pa.array([3, 1, 3, None, 3], pa.int64()), "__prov_r2": pa.array([0, 1, 2, 3, 4])})
    assert row_multiplicity(piece, ("__prov_r1",)) == 3
    assert row_multiplicity(piece, ("__prov_r1", "__prov_r2")) == 3
    assert row_multiplicity(piece.slice(0, 0), ("__prov_r1",)) == 1


def test_an_ungrouped_aggregate_of_two_other_parties_checks_both(engines):
    """The issuer owns none of the inputs: each owner checks its own distinct rows."""
    sql = "SELECT SUM(o.amount), SUM(p.premium) FROM shop.orders o JOIN insurer.policies p " \
          "ON o.customer_id = p.customer_id WHERE p.customer_id IN (1, 2)"
    assert engines["local"].check(sql, "bank").num_rows == 0  # 12 orders but 2 policies
    engines["local"].check(sql.replace("IN (1, 2)", "<= 12"), "bank")
