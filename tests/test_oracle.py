"""Query classes 1 and 2 (and the aggregates over joins) against plain DuckDB over all parties' data."""

import pyarrow as pa
import pytest

SINGLE_PARTY = [
    "SELECT region, COUNT(*) AS n, SUM(income) AS s FROM bank.customers GROUP BY region",
    "SELECT * FROM bank.customers WHERE age > 40",
    "SELECT name FROM bank.customers WHERE id IN (SELECT customer_id FROM bank.accounts) AND age < 50",
    "WITH rich AS (SELECT * FROM bank.customers WHERE income > 40000) SELECT region, MAX(age) FROM rich GROUP BY region",
    "SELECT c.name, a.balance FROM bank.customers c JOIN bank.accounts a ON c.id = a.customer_id",
    "SELECT category, AVG(amount) FROM shop.orders GROUP BY category",
    "SELECT id, ROW_NUMBER() OVER (PARTITION BY region ORDER BY income, name) AS r FROM bank.customers",
]

TWO_PARTY = [
    "SELECT c.name, o.amount FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id",
    "SELECT COUNT(*) AS n FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id",
    "SELECT COUNT(*) FROM bank.customers c, shop.orders o WHERE c.id = o.customer_id AND c.age > 30",
    "SELECT COUNT(*), SUM(o.amount), AVG(c.income), MIN(c.age), MAX(o.amount), COUNT(DISTINCT o.category) "
    "FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id",
    "SELECT o.category, COUNT(*) AS n, SUM(o.amount) AS total, AVG(o.amount) FROM bank.customers c "
    "JOIN shop.orders o ON c.id = o.customer_id GROUP BY o.category",
    "SELECT o.category, SUM(o.amount) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "GROUP BY o.category HAVING SUM(o.amount) > 100",
    "SELECT c.region, COUNT(*), AVG(c.income) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "GROUP BY c.region",
    "SELECT c.id, o.order_id FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "AND c.region = o.region",
    "SELECT c.id, o.order_id FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "WHERE c.age BETWEEN 20 AND 60 AND o.amount > 50 AND o.category <> 'games'",
    "SELECT c.id, o.order_id FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "ORDER BY o.order_id LIMIT 10",
    "SELECT DISTINCT c.region FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id",
    "SELECT c.income * 2 AS twice, UPPER(o.category) AS cat, 1 AS one FROM bank.customers c "
    "JOIN shop.orders o ON c.id = o.customer_id",
    "SELECT x.id, o.amount FROM (SELECT id, income FROM bank.customers WHERE age > 30) x "
    "JOIN shop.orders o ON x.id = o.customer_id",
    "WITH adults AS (SELECT id FROM bank.customers WHERE age >= 21) "
    "SELECT COUNT(*) FROM adults a JOIN shop.orders o ON a.id = o.customer_id",
    "SELECT o.customer_id, p.premium FROM shop.orders o JOIN insurer.policies p USING (customer_id)",
    "SELECT c.name, a.balance, o.amount FROM bank.customers c JOIN bank.accounts a ON c.id = a.customer_id "
    "JOIN shop.orders o ON o.customer_id = c.id",
    "SELECT COUNT(*) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id WHERE c.id IS NULL",
]

THREE_PARTY = [
    "SELECT COUNT(*), SUM(o.amount), SUM(p.premium) FROM bank.customers c "
    "JOIN shop.orders o ON c.id = o.customer_id JOIN insurer.policies p ON p.customer_id = c.id",
    "SELECT c.name, o.order_id, p.claims FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "JOIN insurer.policies p ON p.customer_id = o.customer_id WHERE p.claims > 0",
    "SELECT o.category, COUNT(*) FROM insurer.policies p JOIN shop.orders o ON p.customer_id = o.customer_id "
    "JOIN bank.customers c ON c.id = p.customer_id GROUP BY o.category",
]


@pytest.mark.parametrize("sql", SINGLE_PARTY)
def test_single_party(oracle, sql):
    oracle.check(sql, "bank")


@pytest.mark.parametrize("sql", SINGLE_PARTY[:2])
def test_single_party_other_issuer(oracle, sql):
    oracle.check(sql, "shop")


@pytest.mark.parametrize("sql", TWO_PARTY)
def test_two_party(oracle, sql):
    oracle.check(sql, "bank")


@pytest.mark.parametrize("sql", TWO_PARTY[:6])
def test_two_party_issued_by_shop(oracle, sql):
    oracle.check(sql, "shop")


@pytest.mark.parametrize("sql", THREE_PARTY)
@pytest.mark.parametrize("issuer", ["bank", "insurer"])
def test_three_party(oracle, sql, issuer):
    oracle.check(sql, issuer)


def test_join_really_matches_something(oracle):
    """Guard against a vacuous oracle: the join and the threshold leave real rows."""
    got = oracle.check("SELECT o.category, COUNT(*) FROM bank.customers c JOIN shop.orders o "
                       "ON c.id = o.customer_id GROUP BY o.category")
    assert got.num_rows == 3


def test_threshold_drops_small_groups(oracle):
    sql = ("SELECT c.name, COUNT(*) AS n FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
           "GROUP BY c.name")
    got = oracle.check(sql)
    unfiltered = oracle.con.sql(sql).to_arrow_table()
    assert 0 < got.num_rows < unfiltered.num_rows
    assert min(got.column("n").to_pylist()) >= 4


def test_every_group_below_the_threshold_on_the_spu(oracle):
    """The SPU keeps the groups before finishing AVG: with none kept, it finishes on no rows."""
    sql = ("SELECT o.order_id, c.name, AVG(c.income) AS a, COUNT(*) AS n FROM bank.customers c "
           "JOIN shop.orders o ON c.id = o.customer_id GROUP BY o.order_id, c.name")  # one row per group
    assert "SPU(" in oracle.engine.explain(sql, "bank")
    assert oracle.check(sql, "bank").num_rows == 0


CLASS_4 = [  # group keys at one party, aggregated values at another: HE group sums
    "SELECT c.region, SUM(o.amount) AS s, COUNT(*) AS n, AVG(o.amount) AS a, COUNT(o.amount) "
    "FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id GROUP BY c.region",
    "SELECT c.region, SUM(c.income), SUM(o.amount) FROM bank.customers c JOIN shop.orders o "
    "ON c.id = o.customer_id GROUP BY c.region ORDER BY SUM(o.amount) DESC LIMIT 2",
    "SELECT o.category, AVG(c.income), SUM(c.age * 2) FROM bank.customers c JOIN shop.orders o "
    "ON c.id = o.customer_id GROUP BY o.category HAVING COUNT(*) > 5",
]


@pytest.fixture(scope="module")
def class_4_oracles(tmp_path_factory, make_federation, oracle_for):
    """One engine per `[federation] group_sums` choice."""
    from sqlsecure.engine import Engine

    engines = {how: Engine(make_federation(tmp_path_factory.mktemp(how), group_sums=how)) for how in ("he", "spu")}
    yield {how: oracle_for(engine) for how, engine in engines.items()}
    for engine in engines.values():
        engine.close()


@pytest.mark.parametrize("sql", CLASS_4)
@pytest.mark.parametrize("issuer", ["bank", "shop", "insurer"])
def test_class_4_through_he(class_4_oracles, sql, issuer):
    oracle = class_4_oracles["he"]
    oracle.check(sql, issuer)
    assert "HEU(" in oracle.engine.explain(sql, issuer)


@pytest.mark.parametrize("sql", CLASS_4[:2])
def test_class_4_through_the_spu_when_the_federation_says_so(class_4_oracles, sql):
    oracle = class_4_oracles["spu"]
    oracle.check(sql, "bank")
    text = oracle.engine.explain(sql, "bank")
    assert "SPU(" in text and "HEU(" not in text and "cost model" not in text


def test_class_4_through_he_with_3072_bit_keys(tmp_path, make_federation, oracle_for):
    from sqlsecure.engine import Engine

    engine = Engine(make_federation(tmp_path, group_sums="he", he_key_bits=3072))
    try:
        oracle_for(engine).check(CLASS_4[0], "bank")
        assert "Paillier-3072 group sums" in engine.explain(CLASS_4[0], "bank")
    finally:
        engine.close()


@pytest.mark.parametrize("sql", [
    "SELECT c.region, c.age, SUM(o.amount) AS s, COUNT(*) AS n FROM bank.customers c JOIN shop.orders o "
    "ON c.id = o.customer_id GROUP BY c.region, c.age",
    "SELECT c.id, SUM(o.amount) AS s, AVG(o.amount) AS a FROM bank.customers c JOIN shop.orders o "
    "ON c.region = o.region GROUP BY c.id",  # a key with NULLs (one group), many rows per id
])
def test_spu_groups_on_the_key_owners_code(class_4_oracles, sql):
    """Keys of one party: the SPU sorts on that party's group numbers and carries the keys along."""
    class_4_oracles["spu"].check(sql, "bank")


def test_class_4_by_the_cost_model(engine):
    """By default the planner prices both paths: in process the SPU wins; over a slow link, HE."""
    from sqlsecure.planner.cost import Link

    sql = CLASS_4[0]
    text = engine.explain(sql, "bank")
    assert "SPU(" in text and "HEU(" not in text
    assert 'class 4 on the SPU ([federation] group_sums = "auto"); cost model:' in text
    saved = engine.link
    try:
        engine.link = Link(rtt=0.08, bandwidth=2e6)
        text = engine.explain(sql, "bank")
    finally:
        engine.link = saved
    assert "HEU(" in text and "class 4 on HE" in text and "80 ms round trip" in text


SPU_TWO_PARTY = [  # classes 3, 5, 6 and 7: what no single party may compute runs on secret shares
    "SELECT c.income * o.amount AS x, c.age - o.amount AS y FROM bank.customers c "
    "JOIN shop.orders o ON c.id = o.customer_id",
    "SELECT COUNT(*), SUM(o.amount) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "AND c.age > o.amount / 10",
    "SELECT c.name, o.order_id FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "WHERE c.age * 5 < o.amount OR o.category = c.region",
    "SELECT c.region, o.category, COUNT(*), SUM(o.amount), AVG(c.income) FROM bank.customers c "
    "JOIN shop.orders o ON c.id = o.customer_id GROUP BY c.region, o.category",
    "SELECT c.region, MAX(o.amount), MIN(o.amount), COUNT(o.amount) FROM bank.customers c "
    "JOIN shop.orders o ON c.id = o.customer_id GROUP BY c.region",
    "SELECT SUM(CASE WHEN c.age > 40 THEN o.amount ELSE 0 END) AS s, AVG(o.amount + c.age), "
    "MAX(o.amount * 2 - c.age) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id",
    "SELECT c.region, SUM(o.amount) AS s FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "GROUP BY c.region HAVING SUM(o.amount) > 2000 AND COUNT(*) > 5",
    "SELECT c.name, o.amount, o.order_id FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "ORDER BY o.amount DESC, o.order_id, c.name LIMIT 7",
    "SELECT c.name, o.order_id, ROW_NUMBER() OVER (ORDER BY o.amount, o.order_id, c.name) AS r, "
    "RANK() OVER (ORDER BY o.amount, o.order_id, c.name) AS k FROM bank.customers c "
    "JOIN shop.orders o ON c.id = o.customer_id",
    "SELECT c.name, o.order_id FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "WHERE o.amount > c.age ORDER BY c.age + o.amount, o.order_id, c.name LIMIT 5 OFFSET 2",
    "SELECT COUNT(DISTINCT o.category), COUNT(DISTINCT c.region), COUNT(DISTINCT o.customer_id * c.age) "
    "FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id AND o.amount > c.age",
    "SELECT o.category, c.region IS NULL AS nobody, COUNT(*) FROM bank.customers c "
    "JOIN shop.orders o ON c.id = o.customer_id WHERE o.amount BETWEEN c.age AND 400 "
    "GROUP BY o.category, c.region IS NULL",
]

SPU_THREE_PARTY = [
    "SELECT c.region, o.category, SUM(p.premium), COUNT(*) FROM bank.customers c "
    "JOIN shop.orders o ON c.id = o.customer_id JOIN insurer.policies p ON p.customer_id = c.id "
    "GROUP BY c.region, o.category",
    "SELECT SUM(o.amount * p.claims), MAX(p.premium - o.amount) FROM bank.customers c "
    "JOIN shop.orders o ON c.id = o.customer_id JOIN insurer.policies p ON p.customer_id = c.id "
    "WHERE c.age > p.claims * 10",
]


@pytest.mark.parametrize("sql", SPU_TWO_PARTY)
def test_spu_two_party(oracle, sql):
    oracle.check(sql, "bank")
    assert "SPU(" in oracle.engine.explain(sql, "bank")


@pytest.mark.parametrize("sql", SPU_TWO_PARTY[:4])
def test_spu_issued_by_a_third_party(oracle, sql):
    oracle.check(sql, "insurer")


@pytest.mark.parametrize("sql", SPU_THREE_PARTY)
@pytest.mark.parametrize("issuer", ["bank", "insurer"])
def test_spu_three_party(oracle, sql, issuer):
    oracle.check(sql, issuer)


UNION_ALL = [  # class 8: UNION ALL across parties, then aggregate (on the SPU)
    "SELECT k, COUNT(*), SUM(v) FROM (SELECT region AS k, income AS v FROM bank.customers "
    "UNION ALL SELECT region, amount FROM shop.orders) u GROUP BY k",
    "WITH everyone AS (SELECT id AS who, age AS n FROM bank.customers UNION ALL "
    "SELECT customer_id, claims FROM insurer.policies UNION ALL SELECT customer_id, order_id FROM shop.orders) "
    "SELECT COUNT(*), SUM(n), MAX(n), AVG(n), COUNT(who) FROM everyone WHERE n > 2",
    "SELECT k FROM (SELECT region AS k FROM bank.customers UNION ALL SELECT category FROM shop.orders) u "
    "ORDER BY k LIMIT 3",
]


@pytest.mark.parametrize("sql", UNION_ALL)
@pytest.mark.parametrize("issuer", ["bank", "insurer"])
def test_union_all_across_parties(oracle, sql, issuer):
    oracle.check(sql, issuer)


SEMI_AND_ANTI = [  # IN / NOT IN / EXISTS / NOT EXISTS across parties: PSI membership, no multiplicities
    "SELECT c.name FROM bank.customers c WHERE c.id IN (SELECT customer_id FROM shop.orders WHERE amount > 100)",
    "SELECT c.name FROM bank.customers c WHERE c.id NOT IN (SELECT customer_id FROM shop.orders "
    "WHERE customer_id IS NOT NULL)",
    "SELECT c.name FROM bank.customers c WHERE c.id NOT IN (SELECT customer_id FROM shop.orders)",  # a NULL: none
    "SELECT c.name FROM bank.customers c WHERE EXISTS (SELECT 1 FROM shop.orders o "
    "WHERE o.customer_id = c.id AND o.amount > 300)",
    "SELECT c.name FROM bank.customers c WHERE NOT EXISTS (SELECT 1 FROM shop.orders o WHERE o.customer_id = c.id)",
    "SELECT o.category, COUNT(*) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
    "WHERE c.id IN (SELECT customer_id FROM insurer.policies WHERE claims > 1) GROUP BY o.category",
]


@pytest.mark.parametrize("sql", SEMI_AND_ANTI)
@pytest.mark.parametrize("issuer", ["bank", "shop"])
def test_semi_and_anti_joins(oracle, sql, issuer):
    oracle.check(sql, issuer)


OUTER_JOINS = [  # LEFT / RIGHT joins across parties: unmatched rows of the preserved side kept with NULLs
    "SELECT c.name, o.order_id FROM bank.customers c LEFT JOIN shop.orders o ON c.id = o.customer_id",
    "SELECT c.region, COUNT(o.order_id), COUNT(*) FROM bank.customers c LEFT JOIN shop.orders o "
    "ON c.id = o.customer_id AND o.amount > 100 GROUP BY c.region",
    "SELECT c.name, o.amount FROM shop.orders o RIGHT JOIN bank.customers c ON c.id = o.customer_id",
    "SELECT c.name FROM bank.customers c LEFT JOIN shop.orders o ON c.id = o.customer_id WHERE o.amount > 400",
    "SELECT c.name, o.amount, p.premium FROM bank.customers c JOIN insurer.policies p ON p.customer_id = c.id "
    "LEFT JOIN shop.orders o ON o.customer_id = c.id",
]


@pytest.mark.parametrize("sql", OUTER_JOINS)
def test_outer_joins(oracle, sql):
    oracle.check(sql, "bank")


@pytest.fixture(scope="module")
def ecdh_oracle(tmp_path_factory, make_federation, oracle_for):
    from sqlsecure.engine import Engine

    with Engine(make_federation(tmp_path_factory.mktemp("ecdh"), psi="ecdh")) as engine:
        yield oracle_for(engine)


@pytest.mark.parametrize("sql", [*TWO_PARTY[:6], *THREE_PARTY[:2], *SEMI_AND_ANTI[:3], OUTER_JOINS[0]])
def test_joins_on_the_ecdh_psi_when_the_federation_says_so(ecdh_oracle, sql):
    """KKRT16 is the default PSI; `psi = "ecdh"` runs the same joins on X25519, with the same results."""
    ecdh_oracle.check(sql, "bank")
    text = ecdh_oracle.engine.explain(sql, "bank")
    assert "ECDH-PSI (X25519)" in text and "KKRT16" not in text


@pytest.mark.parametrize("having", ["", " HAVING COUNT(*) > 1"])
def test_a_dropped_group_out_of_avg_range_does_not_refuse_the_query(tmp_path, federation_writer, grants_for,
                                                                     oracle_for, having):
    """AVG's range check counts only the groups that are kept: a group below the threshold whose
    sum is beyond the division's range (2^29) is dropped, not a reason to refuse."""
    from sqlsecure.engine import Engine

    labels = ["big", "big"] + ["ok"] * 5
    values = [6 * 10**8, 5 * 10**8] + [1, 2, 3, 4, 5]
    tables = {"bank": {"t": pa.table({"id": list(range(7)), "label": labels})},
              "shop": {"t": pa.table({"id": list(range(7)), "value": values})}}
    grants = grants_for(("bank", ("shop.t.id",), "PLAINTEXT_AFTER_JOIN"), ("shop", ("bank.t.id",), "PLAINTEXT_AFTER_JOIN"),
                        ("bank", ("shop.t.value",), "PLAINTEXT_AFTER_AGGREGATE"))
    path = federation_writer(tmp_path, tables, grants, parties=("bank", "shop"), group_sums="spu")
    sql = f"SELECT a.label, AVG(b.value) AS m FROM bank.t a JOIN shop.t b ON a.id = b.id GROUP BY a.label{having}"
    with Engine(path) as engine:
        assert "SPU(" in engine.explain(sql, "bank")
        got = oracle_for(engine).check(sql, "bank")
    assert got.column("label").to_pylist() == ["ok"]
