"""A party's own aggregate computed by that party, padded to a public bound (issue 16, speed;
planner/translate.py `padding_of`, `run_padded`).

An aggregate over one party's rows that may not run at its owner (its group count would tell the other
compute parties about the data) is computed by the owner all the same, in plaintext, and shared as exactly
B rows: its groups, then dummy rows, each row's validity a secret bit the SPU filters on. B is fixed before
the data is read: the table's row count (which the input's size shares anyway) or, smaller, the groups its
integer keys' published magnitude classes allow. Checked against plain DuckDB (the oracle, group threshold
included) with 2 and 3 parties: TPC-H Q13's shape, an inner join with SUM / MIN / MAX, NULL group keys, an
empty input, a bound the groups reach exactly, a class bound below the rows, no GROUP BY, DISTINCT / AVG /
integer SUM, a join a declared key makes sort-based already (eager aggregation then pays only padded);
the shared size is B; a stale class fails at its owner; what is kept on the SPU stays there.
"""

import dataclasses
import json

import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import DataError, NotSupportedError
from sqlsecure.planner.physical import RunLocal, SecretQuery
from tests.test_owner_flags import flag_grants, flag_tables, q13


def padded_tables(tables) -> dict[str, dict[str, pa.Table]]:
    """`flag_tables` plus a small integer column at each side: the shop's orders.priority (0..2, class 2: at
    most 8 groups, fewer than the orders) and the bank's customers.tier (0..2), which join."""
    tables = flag_tables(tables)
    orders, customers = tables["shop"]["orders"], tables["bank"]["customers"]
    priority = pa.array([i % 3 for i in range(orders.num_rows)], pa.int32())
    tier = pa.array([i % 3 for i in range(customers.num_rows)], pa.int32())
    return {**tables, "shop": {"orders": orders.append_column("priority", priority)},
            "bank": {**tables["bank"], "customers": customers.append_column("tier", tier)}}


def padded_grants(grants_for, parties) -> str:
    """`flag_grants`, and the shop's priority and the bank's tier joinable by each other."""
    return flag_grants(grants_for, parties) + grants_for(("bank", ("shop.orders.priority",), "PLAINTEXT_AFTER_JOIN"),
                                                         ("shop", ("bank.customers.tier",), "PLAINTEXT_AFTER_JOIN"))


@pytest.fixture(scope="module")
def padded(tmp_path_factory, tables, federation_writer, grants_for, oracle_for):
    """{(parties, k): oracle}: the bank and the shop, the three parties (minimum group size 4), and the bank and
    the shop without a threshold."""
    oracles = {}
    for parties, k in ((("bank", "shop"), 4), (("bank", "shop", "insurer"), 4), (("bank", "shop"), 0)):
        directory = tmp_path_factory.mktemp(f"padded{len(parties)}k{k}")
        federation_writer(directory, padded_tables(tables), padded_grants(grants_for, parties), parties=parties,
                          min_group_size=k)
        oracles[len(parties), k] = oracle_for(Engine(directory / "federation.toml", timeout=120))
    yield oracles
    for oracle in oracles.values():
        oracle.engine.close()


def padded_inputs(engine, sql: str, issuer: str) -> dict[str, RunLocal]:
    """Relation -> the RunLocal of each program input its owner pads (its validity column shared)."""
    steps = engine.plan(sql, issuer).physical.steps
    program = json.loads(next(s for s in steps if isinstance(s, SecretQuery)).program)
    padded = {s.out: s for s in steps if isinstance(s, RunLocal)}
    return {relation: step for relation, step in padded.items()
            if any(name == f"__valid_{relation}" for spec in program["inputs"] for name, _ in spec["columns"])}


def shared_rows(oracle, step: RunLocal) -> pa.Table:
    """What the owner shares of a padded input: its RunLocal, run by its store as its executor runs it."""
    return oracle.engine._stores[step.party].query(step.sql)


def checked(oracle, sql: str, issuer: str = "shop", padded: int = 1) -> pa.Table:
    """The answer equals DuckDB's, with `padded` aggregates computed by their owners."""
    assert len(padded_inputs(oracle.engine, sql, issuer)) == padded, sql
    return oracle.check(sql, issuer)


ON_CONJUNCTS = ("o.amount > 100", "o.note LIKE 'rush%'", "o.amount > 0")


@pytest.mark.parametrize("on", ON_CONJUNCTS)
@pytest.mark.parametrize("parties", (2, 3))
def test_q13_shape_the_issuers_partial_is_padded(padded, parties, on):
    """Customers LEFT JOIN the shop's orders (an ON conjunct of the orders), COUNT per customer, then a
    histogram of the counts: the eager partial over the orders, its flag filter included, runs at the shop.
    The orders' NULL customer ids form a group of their own, which joins no customer."""
    checked(padded[parties, 4], q13(on), "shop")


def test_q13_without_a_threshold_issued_by_the_other_party(padded):
    """Without a group threshold the shop's rows are not counted: its partial is padded for the bank too."""
    checked(padded[2, 0], q13("o.amount > 100", right=True), "bank")


SPREAD = ("SELECT t.region, COUNT(*) AS n, SUM(t.s) AS s, MIN(t.lo) AS lo, MAX(t.hi) AS hi FROM (SELECT c.id, "
          "c.region, SUM(o.amount) AS s, MIN(o.amount) AS lo, MAX(o.amount) AS hi FROM bank.customers c JOIN "
          "shop.orders o ON c.id = o.customer_id{where} GROUP BY c.id, c.region) t GROUP BY t.region")


@pytest.mark.parametrize("where", ("", " WHERE o.category <> 'books'"))
@pytest.mark.parametrize("parties", (2, 3))
def test_inner_join_with_sum_min_max(padded, parties, where):
    checked(padded[parties, 4], SPREAD.format(where=where))


@pytest.mark.parametrize("parties", (2, 3))
def test_null_group_keys_keep_their_group(padded, parties):
    """The shop's aggregate on the preserved side of a LEFT join: its NULL customer id is a real group (valid),
    unlike the dummy rows (NULL keys too, invalid), so it counts as a group with its orders and matches no
    customer."""
    sql = ("SELECT COUNT(*) AS n, COUNT(u.customer_id) AS keyed, SUM(u.orders) AS orders, COUNT(u.id) AS matched "
           "FROM (SELECT t.customer_id, t.orders, c.id FROM (SELECT o.customer_id, COUNT(*) AS orders FROM "
           "shop.orders o WHERE o.amount > 100 GROUP BY o.customer_id) t LEFT JOIN bank.customers c "
           "ON c.id = t.customer_id) u")
    got = checked(padded[parties, 4], sql).to_pylist()
    assert got[0]["n"] > got[0]["keyed"]  # the NULL group's row


def test_an_empty_input_shares_only_dummy_rows(padded):
    """No order passes the ON conjunct: every one of the B rows the shop shares is a dummy, every customer
    counts 0 orders."""
    oracle = padded[2, 4]
    sql = q13("o.category = 'no such category'")
    (step,) = padded_inputs(oracle.engine, sql, "shop").values()
    rows = shared_rows(oracle, step)
    assert rows.num_rows > 0 and not any(rows.column(rows.num_columns - 1).to_pylist())
    assert checked(oracle, sql).column("cnt").to_pylist() == [0]


TIGHT = ("SELECT c.region, COUNT(*) AS n, SUM(t.amount) AS s FROM (SELECT o.order_id, o.customer_id, SUM(o.amount) "
         "AS amount FROM shop.orders o GROUP BY o.order_id, o.customer_id) t JOIN bank.customers c "
         "ON c.id = t.customer_id GROUP BY c.region")


@pytest.mark.parametrize("parties", (2, 3))
def test_a_group_count_equal_to_the_bound(padded, parties, tables):
    """Grouped by the unique order id: as many groups as orders, B the orders' count, no dummy row."""
    oracle = padded[parties, 4]
    (step,) = padded_inputs(oracle.engine, TIGHT, "shop").values()
    rows = shared_rows(oracle, step)
    assert rows.num_rows == tables["shop"]["orders"].num_rows
    assert all(rows.column(rows.num_columns - 1).to_pylist())
    checked(oracle, TIGHT)


BY_PRIORITY = ("SELECT u.region, COUNT(*) AS n, SUM(u.orders) AS orders, MAX(u.top) AS top FROM (SELECT c.region, "
               "t.orders, t.top FROM (SELECT o.priority, COUNT(*) AS orders, MAX(o.amount) AS top FROM shop.orders o "
               "GROUP BY o.priority) t JOIN bank.customers c ON c.tier = t.priority) u GROUP BY u.region")


@pytest.mark.parametrize("parties", (2, 3))
def test_a_class_bound_smaller_than_the_rows(padded, parties):
    """orders.priority's published class 2 (|v| < 4) allows 7 values and NULL: B = 8 rows of 180 orders."""
    checked(padded[parties, 4], BY_PRIORITY)


def test_the_shared_size_is_the_bound_not_the_group_count(padded):
    """The program input the shop shares has exactly B = 8 rows (3 groups valid); the plan, EXPLAIN and its
    leakage state B, a public bound, and `check` agrees."""
    oracle = padded[2, 4]
    engine = oracle.engine
    (step,) = padded_inputs(engine, BY_PRIORITY, "shop").values()
    rows = shared_rows(oracle, step)
    assert rows.num_rows == 8 and sum(rows.column(rows.num_columns - 1).to_pylist()) == 3
    assert "LEAST(8, (SELECT COUNT(*) FROM \"orders\"))" in step.sql
    text = engine.explain(BY_PRIORITY, "shop")
    assert "aggregated by shop on its own rows, padded to B rows, validity shared as a secret bit" in text
    assert "padded to B = min(8 (the published classes shop.orders.priority |v| < 2^2, NULL included), the rows of " \
           "shop.orders) rows" in text
    assert f"bank: {step.out}'s size: B = min(8 " in text and "a bound fixed before the data is read" in text
    assert engine.check(BY_PRIORITY, "shop") is None


def test_a_stale_class_fails_at_its_owner(padded, monkeypatch):
    """A published class below the data (stale): more groups than B, so the shop fails the query with a
    DataError instead of sharing a size that depends on its data."""
    engine = padded[2, 4].engine
    published = engine.catalog.magnitudes

    def stale(party, table, columns):
        return {**published(party, table, columns), **({"priority": 0} if "priority" in columns else {})}

    monkeypatch.setattr(engine, "catalog", dataclasses.replace(engine.catalog, magnitudes=stale))
    (step,) = padded_inputs(engine, BY_PRIORITY, "shop").values()
    assert "LEAST(2, " in step.sql
    with pytest.raises(DataError, match="more groups than the bound it is padded to"):
        engine.execute(BY_PRIORITY, "shop")


def test_a_counted_partial_stays_on_the_spu(padded):
    """The bank issues Q13: the shop's orders are counted by the group threshold, so their partial keeps
    MIN(provenance) per group on the SPU (not padded), and the answer is as before."""
    checked(padded[2, 4], q13("o.amount > 100"), "bank", padded=0)


def test_check_size_prices_the_padded_aggregate_as_its_bound(padded, monkeypatch, assert_refused):
    """Sizes of TPC-H SF 1 (customers 2^18, orders 2^21): on the SPU the orders' flag filter alone holds
    2^21 rows, refused; padded by the shop to B = 512 (its customer ids' class 2^8), the join holds
    2^18 + 512 rows and is planned."""
    engine = padded[2, 4].engine
    sizes = {"bank": {"customers": 1 << 18, "accounts": 1 << 17}, "shop": {"orders": 1 << 21}}
    monkeypatch.setattr(engine, "catalog", dataclasses.replace(engine.catalog, sizes=lambda party: sizes[party]))
    sql = q13("o.amount > 100")
    assert engine.check(sql, "shop") is None
    assert_refused(engine, sql, "bank", NotSupportedError, "beyond the 1,048,576 rows")


def test_an_aggregate_without_group_by_is_one_row(padded):
    """A scalar subquery's aggregate over the shop's filtered rows: B = 1 (one row whatever the data), valid."""
    oracle = padded[2, 4]
    sql = ("SELECT c.region, COUNT(*) AS n FROM bank.customers c WHERE c.age > (SELECT AVG(o.amount) / 5 FROM "
           "shop.orders o WHERE o.category = 'books') GROUP BY c.region")
    (step,) = padded_inputs(oracle.engine, sql, "shop").values()
    assert "RANGE(1)" in step.sql and shared_rows(oracle, step).num_rows == 1
    checked(oracle, sql)


@pytest.mark.parametrize("calls", ("COUNT(DISTINCT o.category) AS v", "AVG(o.amount) AS v",
                                   "SUM(o.order_id) AS v"))
def test_distinct_avg_and_integer_sums_are_exact_at_their_owner(padded, calls):
    """Aggregates the SPU would not decompose (COUNT(DISTINCT), AVG) or DuckDB widens (an integer SUM is a
    HUGEINT, shared as BIGINT) computed by the shop per customer, then joined and totalled by region."""
    sql = (f"SELECT u.region, COUNT(*) AS n, SUM(u.v) AS v FROM (SELECT c.region, t.v FROM (SELECT o.customer_id, "
           f"{calls} FROM shop.orders o GROUP BY o.customer_id) t JOIN bank.customers c ON c.id = t.customer_id) u "
           "GROUP BY u.region")
    checked(padded[3, 4], sql)


def test_over_a_declared_unique_key_the_partial_is_padded(tmp_path, tables, federation_writer, grants_for, oracle_for):
    """TPC-H's own declarations: the bank declares customers.id unique, so customers LEFT JOIN orders is a
    sort-based join already; pre-aggregating the shop's orders pays only because the shop computes it, padded
    (B = min(the ids' class bound, the orders) rows shared instead of every order)."""
    customers = tables["bank"]["customers"]
    unique = pa.array([None if i % 17 == 0 else i + 1 for i in range(customers.num_rows)], pa.int64())
    data = padded_tables(tables)
    data["bank"]["customers"] = data["bank"]["customers"].set_column(0, "id", unique)
    federation_writer(tmp_path, data, padded_grants(grants_for, ("bank", "shop"))
                      + "\n[parties.bank.unique]\ncustomers = [['id']]\n", parties=("bank", "shop"))
    with Engine(tmp_path / "federation.toml", timeout=120) as engine:
        oracle = oracle_for(engine)
        sql = q13("o.note NOT LIKE '%special%requests%'")
        assert "eager aggregation:" in engine.explain(sql, "shop")
        checked(oracle, sql)
        assert "eager aggregation:" not in engine.explain(sql, "bank")  # counted: the SPU would only sort more
        checked(oracle, sql, "bank", padded=0)


def test_only_a_protected_owners_outermost_groups_are_thresholded(padded):
    """Two outermost aggregates, one per party, side by side (UNION ALL): each padded by its owner; the group
    threshold withholds the protected owner's small groups only, never the issuer's own (it was applied to
    both: the issuer's own groups of fewer than k rows went missing)."""
    oracle = padded[2, 4]
    sql = ("SELECT o.category AS g, COUNT(*) AS n FROM shop.orders o WHERE o.amount > 485 GROUP BY o.category "
           "UNION ALL SELECT c.region, COUNT(*) FROM bank.customers c WHERE c.age > 60 GROUP BY c.region")
    got = checked(oracle, sql, "shop", padded=2)
    assert 0 < min(got.column("n").to_pylist()) < 4  # one of the shop's own groups holds fewer than k rows
