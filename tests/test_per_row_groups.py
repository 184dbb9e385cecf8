"""A GROUP BY whose keys are unique in its input groups nothing: each row is its own group (issue 16 speed,
TPC-H Q13's GROUP BY c_custkey over its PK-FK join).

The planner knows it (`tree.rows_as_groups`: the keys cover a key of `tree.grouping_keys` — GROUP BY keys,
DISTINCT, ROW_NUMBER, a party's declared keys, kept through renaming, filters and the side of a join each of
whose rows it outputs once; where the key's NULLs may repeat (a declared key, a LEFT join's right side), one
key only, its NULL rows one more group), and the SPU computes every aggregate as a per-row expression
(`secret_relation._per_row`): no sort. A declared key it rests on counts only where a join on the SPU checks
it (the unique side's always, the many side's by `declared_many`: a repeat fails the query). Checked against DuckDB: programs at 2 and 3 parties (repeated NULL keys, invalid rows, empty
inputs, HAVING, the group threshold) and the engine over a federation (keys unique only after a join, a
GROUP BY whose keys are not unique, which still sorts; EXPLAIN's words).
"""

import json

import pyarrow as pa
import pytest

from sqlsecure.errors import DataError, ProtocolError
from sqlsecure.executors.spu import relational
from sqlsecure.executors.spu.program import parse_program, row_bound
from sqlsecure.engine import Engine
from sqlsecure.planner.physical import SecretQuery
from tests.test_secret_pk_join import AGGREGATED, COMPARED, GROUPED, PARTIES, UNIQUE, declared, tpch_tables
from tests.test_secret_program import _compare_rows, check, inp, program_of, run  # noqa: F401 - autouse

ACCOUNTS_A = pa.table({  # k unique but NULL three times
    "k": pa.array([1, None, 3, 4, None, 6, -7], pa.int64()),
    "v": pa.array([10, 2, None, 5, 7, 1, 3], pa.int64()),
    "x": pa.array([1.5, None, 2.25, -3.0, 4.0, 0.5, 8.0], pa.float64()),
    "t": pa.array(["ash", "elm", None, "oak", "fir", "yew", "bay"], pa.string()),
})
ACCOUNTS_B = pa.table({
    "k": pa.array([8, None, 10, 11], pa.int64()),
    "v": pa.array([4, 9, 6, None], pa.int64()),
    "x": pa.array([None, 6.5, 1.0, 2.0], pa.float64()),
    "t": pa.array(["pine", "ivy", "box", None], pa.string()),
})
COLUMNS = [["k", "int"], ["v", "int"], ["x", "fixed"], ["t", "text"]]
BOTH = {"op": "union_all", "children": [inp(0), inp(1)]}
CALLS = [["n", "COUNT", None, False], ["nv", "COUNT", '"v"', False], ["sv", "SUM", '"v"', False],
         ["lo", "MIN", '"x"', False], ["hi", "MAX", '"t"', False], ["mean", "AVG", '"x"', False],
         ["dv", "COUNT", '"v"', True]]
CALLS_SQL = "COUNT(*) AS n, COUNT(v) AS nv, SUM(v) AS sv, MIN(x) AS lo, MAX(t) AS hi, AVG(x) AS mean, " \
            "COUNT(DISTINCT v) AS dv"
KEPT = {"op": "filter", "child": BOTH, "condition": '"v" IS NULL OR "v" <> 5'}  # an invalid row among them
KEPT_SQL = "(SELECT * FROM t0 UNION ALL SELECT * FROM t1) WHERE v IS NULL OR v <> 5"


def per_row(child: dict, calls=CALLS, null_group: bool = True, threshold=None) -> dict:
    return {"op": "aggregate", "child": child, "keys": [["k", '"k"']], "aggregates": calls, "threshold": threshold,
            "per_row": {"null_group": null_group}}


@pytest.fixture
def sorts(monkeypatch) -> list[int]:
    """The row count of every oblivious sort party 0 runs."""
    seen, real = [], relational.sort

    def counting(s, keys, *args, **kwargs):
        if s.index == 0:
            seen.append(len(keys[0]))
        return real(s, keys, *args, **kwargs)

    monkeypatch.setattr(relational, "sort", counting)
    return seen


@pytest.mark.parametrize("nparties", [2, 3])
def test_rows_as_groups_with_a_null_group_match_duckdb(nparties, sorts):
    """Every aggregate per row; the NULL keys' rows (three, one filtered out) one group; no sort but the NULL
    group's COUNT(DISTINCT)."""
    check(nparties, per_row(KEPT), [COLUMNS, COLUMNS], [ACCOUNTS_A, ACCOUNTS_B],
          f"SELECT k, {CALLS_SQL} FROM {KEPT_SQL} GROUP BY k")
    n = ACCOUNTS_A.num_rows + ACCOUNTS_B.num_rows
    assert all(rows == n for rows in sorts) and len(sorts) <= 2  # the NULL group's distinct v, MAX(t)


@pytest.mark.parametrize("nparties", [2, 3])
def test_having_over_rows_as_groups_matches_duckdb(nparties):
    having = {"op": "filter", "child": per_row(KEPT), "condition": '"sv" > 4 OR "n" > 1'}
    check(nparties, having, [COLUMNS, COLUMNS], [ACCOUNTS_A, ACCOUNTS_B],
          f"SELECT k, {CALLS_SQL} FROM {KEPT_SQL} GROUP BY k HAVING SUM(v) > 4 OR COUNT(*) > 1")


@pytest.mark.parametrize("k,sql_k", [(1, 1), (2, 2)])
def test_the_group_threshold_counts_one_row_per_group(k, sql_k):
    """k = 2 keeps only the NULL group (two rows pass the filter); k = 1 every group."""
    calls = [["n", "COUNT", None, False], ["sv", "SUM", '"v"', False]]
    check(2, per_row(KEPT, calls, threshold={"k": k, "provenance": []}), [COLUMNS, COLUMNS],
          [ACCOUNTS_A, ACCOUNTS_B],
          f"SELECT k, COUNT(*) AS n, SUM(v) AS sv FROM {KEPT_SQL} GROUP BY k HAVING COUNT(*) >= {sql_k}")


@pytest.mark.parametrize("nparties,empty", [(2, [0, 1]), (3, [0, 1]), (2, [1])])
def test_empty_inputs(nparties, empty):
    tables = [t.slice(0, 0) if i in empty else t for i, t in enumerate([ACCOUNTS_A, ACCOUNTS_B])]
    check(nparties, per_row(BOTH), [COLUMNS, COLUMNS], tables,
          f"SELECT k, {CALLS_SQL} FROM (SELECT * FROM t0 UNION ALL SELECT * FROM t1) GROUP BY k")


@pytest.mark.parametrize("nparties", [2, 3])
def test_over_grouped_keys_a_null_key_is_one_row_already(nparties, sorts):
    """GROUP BY k over GROUP BY k: the inner one sorts, the outer one takes its rows (the NULL group one row)."""
    inner = {"op": "aggregate", "child": KEPT, "keys": [["k", '"k"']], "threshold": None,
             "aggregates": [["sv", "SUM", '"v"', False], ["lo", "MIN", '"x"', False]]}
    outer = per_row(inner, [["n", "COUNT", None, False], ["s", "SUM", '"sv"', False], ["m", "MAX", '"lo"', False]],
                    null_group=False)
    check(nparties, outer, [COLUMNS, COLUMNS], [ACCOUNTS_A, ACCOUNTS_B],
          f"SELECT k, COUNT(*) AS n, SUM(sv) AS s, MAX(lo) AS m FROM (SELECT k, SUM(v) AS sv, MIN(x) AS lo "
          f"FROM {KEPT_SQL} GROUP BY k) GROUP BY k")
    assert len(sorts) == 1  # the inner GROUP BY's


def test_the_null_group_is_one_more_row_and_the_spec_is_checked():
    text = program_of(per_row(BOTH), [COLUMNS, COLUMNS])
    assert row_bound(parse_program(text).root, {0: 7, 1: 4}) == 12
    assert row_bound(parse_program(program_of(per_row(BOTH, null_group=False), [COLUMNS, COLUMNS])).root,
                     {0: 7, 1: 4}) == 11
    for bad in ({"null_group": "yes"}, True, {"null_group": True, "keys": 2}):
        spec = {**per_row(BOTH), "per_row": bad}
        if isinstance(bad, dict) and "keys" in bad:
            spec = {**per_row(BOTH), "keys": [["k", '"k"'], ["v", '"v"']]}
        with pytest.raises(ProtocolError, match="per_row"):
            parse_program(program_of(spec, [COLUMNS, COLUMNS]))


def test_rounds_and_bytes_saved():
    """The same GROUP BY per row and sorted: fewer rounds and fewer bytes per row (2 parties, 64 rows)."""
    big = pa.concat_tables([ACCOUNTS_A] * 8)
    big = big.set_column(0, "k", pa.array([None if i % 9 == 4 else i for i in range(big.num_rows)], pa.int64()))
    calls = [["n", "COUNT", None, False], ["sv", "SUM", '"v"', False], ["lo", "MIN", '"x"', False]]
    sorted_node = {k: v for k, v in per_row(inp(0), calls).items() if k != "per_row"}
    costs = []
    for root in (per_row(inp(0), calls), sorted_node):
        _, result = run(2, program_of(root, [COLUMNS]), [big])
        costs.append((result.rounds, result.party_bytes()))
    (rounds, sent), (sorted_rounds, sorted_sent) = costs
    assert rounds < sorted_rounds and sent < sorted_sent


# -- the planner's choice, end to end ------------------------------------------------------------------
KEYS = ("bank.customer.c_custkey", "shop.orders.o_custkey", "shop.orders.o_orderkey")  # grouped by, not compared


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, federation_writer, grants_for, oracle_for):
    """keyed(**data): the oracle of an engine over tests/test_secret_pk_join.py's tables (declared c_custkey and
    o_orderkey), its keys PLAINTEXT_AFTER_JOIN to the other parties (as bench/tpch.py grants them)."""
    opened = []

    def make(**data):
        sections = []
        for viewer in PARTIES:
            def others(columns):
                return tuple(c for c in columns if not c.startswith(f"{viewer}."))
            sections += [(viewer, others(set(COMPARED) - set(KEYS)), "PLAINTEXT_AFTER_COMPARE"),
                         (viewer, others(KEYS), "PLAINTEXT_AFTER_JOIN"), (viewer, others(GROUPED), "PLAINTEXT_AFTER_GROUP_BY"),
                         (viewer, others(AGGREGATED), "PLAINTEXT_AFTER_AGGREGATE")]
        path = federation_writer(tmp_path_factory.mktemp("perrow"), tpch_tables(**data), grants_for(*sections),
                                 parties=PARTIES, min_group_size=2)
        path.write_text(path.read_text(encoding="utf-8") + "\n" + declared(UNIQUE), encoding="utf-8")
        opened.append(Engine(path, timeout=120))
        return oracle_for(opened[-1])

    yield make
    for engine in opened:
        engine.close()


PER_CUSTOMER = ("FROM bank.customer c LEFT JOIN (SELECT o_custkey, COUNT(*) AS n, MAX(o_amount) AS top FROM shop.orders "
                "GROUP BY o_custkey) o ON c.c_custkey = o.o_custkey GROUP BY c.c_custkey")
Q13 = (f"SELECT t.cnt, COUNT(*) AS custdist FROM (SELECT c.c_custkey, COALESCE(SUM(o.n), 0) AS cnt, MAX(o.top) AS top "
       f"{PER_CUSTOMER}) t GROUP BY t.cnt")
HAVING = (f"SELECT t.cnt, COUNT(*) AS custdist FROM (SELECT c.c_custkey, SUM(o.n) AS cnt {PER_CUSTOMER} "
          "HAVING COUNT(o.o_custkey) > 0) t GROUP BY t.cnt")
ORDERS = ("SELECT t.m, COUNT(*) AS n FROM (SELECT o.o_custkey, SUM(o.n) AS m, COUNT(c.c_age) AS a FROM (SELECT "
          "o_custkey, COUNT(*) AS n FROM shop.orders GROUP BY o_custkey) o JOIN bank.customer c ON o.o_custkey = "
          "c.c_custkey GROUP BY o.o_custkey) t GROUP BY t.m")
THREE = ("SELECT t.q, COUNT(*) AS n FROM (SELECT o.o_orderkey, SUM(l.l_qty) AS q, COUNT(c.c_age) AS m FROM "
         "shop.orders o JOIN bank.customer c ON o.o_custkey = c.c_custkey LEFT JOIN carrier.lineitem l ON "
         "o.o_orderkey = l.l_orderkey GROUP BY o.o_orderkey) t GROUP BY t.q")
UNCHECKED = ("SELECT t.m, COUNT(*) AS n FROM (SELECT o.o_orderkey, COUNT(c.c_age) AS m FROM shop.orders o JOIN "
             "bank.customer c ON o.o_custkey = c.c_custkey GROUP BY o.o_orderkey) t GROUP BY t.m")
NOT_UNIQUE = ("SELECT t.n, COUNT(*) AS k FROM (SELECT c.c_region, COUNT(o.o_orderkey) AS n FROM bank.customer c "
              "LEFT JOIN shop.orders o ON c.c_custkey = o.o_custkey GROUP BY c.c_region) t GROUP BY t.n")


def aggregates(engine, sql: str, issuer: str) -> list[dict]:
    """The program's aggregate nodes, outermost first."""
    (step,) = [s for s in engine.plan(sql, issuer).physical.steps if isinstance(s, SecretQuery)]
    found, stack = [], [json.loads(step.program)["root"]]
    while stack:
        node = stack.pop(0)
        found += [node] if node["op"] == "aggregate" else []
        stack += [node[k] for k in ("child", "left", "right") if k in node] + node.get("children", [])
    return found


@pytest.mark.parametrize("sql,issuer,null_group", [
    (Q13, "shop", True), (HAVING, "shop", True), (ORDERS, "shop", False)])
def test_keys_unique_after_a_join_group_per_row(keyed, sql, issuer, null_group):
    """The keys are unique only after the join (the bank's declared key kept beside the orders' GROUP BY keys and
    checked by the join; the orders' GROUP BY keys beside the unique customers): the GROUP BY runs per row (2 and
    3 parties: the carrier computes nothing here, and with `THREE` it does) and the answer is DuckDB's."""
    oracle = keyed()
    per = [a["per_row"] for a in aggregates(oracle.engine, sql, issuer) if "per_row" in a]
    assert {"null_group": null_group} in per
    assert "(bank.customer (c_custkey), checked by the joins beneath)" in oracle.engine.explain(sql, issuer)
    oracle.check(sql, issuer)


@pytest.mark.parametrize("sql", [NOT_UNIQUE, THREE, UNCHECKED])
def test_keys_not_unique_or_unchecked_still_sort(keyed, sql):
    """Customers repeated per order, orders per line; o_orderkey is declared but the join sorts on o_custkey,
    so no join checks it: the GROUP BY sorts."""
    oracle = keyed()
    assert not any("per_row" in a for a in aggregates(oracle.engine, sql, "shop"))
    oracle.check(sql, "shop")


def test_explain_says_so(keyed):
    text = keyed().engine.explain(Q13, "shop")
    assert "[per row: the keys are unique in its input, no sort, the rows with a NULL key one more group]" in text
    assert "GROUP BY \"c.c_custkey\" per row: its keys are unique in its input (bank.customer (c_custkey), checked " \
           "by the joins beneath)" in text
    assert "whether bank.customer (c_custkey), declared unique, repeats a valid key" in text


@pytest.mark.parametrize("empty", ["bank"])  # an empty orders table reads as text keys here: typed apart
def test_an_empty_side(keyed, empty):
    keyed(empty=empty).check(Q13, "shop")


@pytest.mark.parametrize("sql", [Q13, ORDERS])
def test_a_repeated_declared_key_fails_the_query(keyed, sql):
    """Taken as groups, a false declaration would split a group (Q13: the customers' own key, the join's many
    side; ORDERS: the orders' GROUP BY keys, each joined once only if the customers' key holds): the join beneath
    checks it (one bit)."""
    with pytest.raises(DataError, match=r"bank\.customer \(c_custkey\) is declared unique"):
        keyed(repeat_customer=True).engine.execute(sql, "shop")
