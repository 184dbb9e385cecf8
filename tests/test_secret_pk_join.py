"""Sort-based PK-FK joins of secret relations (issue 16): when one side's join keys are unique at plan
time (GROUP BY keys, DISTINCT, a one-row aggregate, or a key its party declares in
[parties.NAME.unique]), the translation joins by a sort instead of all pairs; checked against the
oracle (2 and 3 parties, NULL keys, repeated keys on the many side, unique rows no many row names,
empty inputs, LEFT joins preserving either side).

Bound (`secret_relation.pk_join`): n_u + n_m rows out, a public size (all pairs: n_u * n_m), so
`check_size` counts n + m; rounds: the keys' + 1 + ceil(log2(k + 1)) + one oblivious sort of the
n_u + n_m rows + neighbour tests (~7 + 1 per key limb) + 2 ceil(log2(n_u + n_m)) - 1 for the copy
(+ 1 for a LEFT join preserving the unique side, + 9 for a declared key's check). A declared key is
checked obliviously: a repeat fails the query with a DataError naming it (one opened bit, listed by
EXPLAIN)."""

import decimal
import json

import numpy as np
import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import ConfigError, DataError, ProtocolError
from sqlsecure.executors.spu.program import parse_program
from sqlsecure.planner.physical import SecretQuery
from tests.test_secret_program import (PEOPLE, PEOPLE_COLUMNS, VISIT_COLUMNS, VISITS_A, VISITS_B,  # noqa: F401
                                       _compare_rows, check, inp, program_of, rounds_of, run,  # _compare_rows: autouse
                                       sort_rounds)

PARTIES = ("bank", "shop", "carrier")
UNIQUE = {"bank": {"customer": [["c_custkey"]]}, "shop": {"orders": [["o_orderkey"]]}}
COMPARED = ("bank.customer.c_custkey", "bank.customer.c_age", "shop.orders.o_custkey", "shop.orders.o_orderkey",
            "carrier.lineitem.l_orderkey")
GROUPED = ("bank.customer.c_region", "shop.orders.o_status")
AGGREGATED = ("shop.orders.o_amount", "carrier.lineitem.l_qty", "carrier.lineitem.l_price")


def tpch_tables(seed: int = 5, customers: int = 30, orders: int = 60, lines: int = 90, empty: str | None = None,
                repeat_customer: bool = False):
    """customer (unique c_custkey, NULLs) at the bank, orders (unique o_orderkey; o_custkey repeated, NULL,
    or naming no customer) at the shop, lineitem (l_orderkey repeated, NULL or dangling) at the carrier."""
    rng = np.random.default_rng(seed)
    custkeys = [None if i % 9 == 4 else 100 + i for i in range(customers)]
    if repeat_customer:
        custkeys[1] = custkeys[0]
    o_custkeys = [None if i % 11 == 3 else int(rng.integers(100, 100 + customers + 8)) for i in range(orders)]
    l_orderkeys = [None if i % 13 == 6 else int(rng.integers(0, orders + 6)) for i in range(lines)]

    def rows(table: pa.Table, party: str) -> pa.Table:
        return table.slice(0, 0) if party == empty else table

    return {
        "bank": {"customer": rows(pa.table({
            "c_custkey": pa.array(custkeys, pa.int64()),
            "c_region": pa.array(np.array(["north", "south", "east"])[rng.integers(0, 3, customers)]),
            "c_age": pa.array(rng.integers(18, 80, customers), pa.int32())}), "bank")},
        "shop": {"orders": rows(pa.table({
            "o_orderkey": pa.array(np.arange(orders), pa.int64()),
            "o_custkey": pa.array(o_custkeys, pa.int64()),
            "o_amount": pa.array(rng.integers(100, 50000, orders) / 100.0),
            "o_status": pa.array(np.array(["F", "O"])[rng.integers(0, 2, orders)])}), "shop")},
        "carrier": {"lineitem": rows(pa.table({
            "l_orderkey": pa.array(l_orderkeys, pa.int64()),
            "l_qty": pa.array(rng.integers(1, 50, lines), pa.int64()),
            "l_price": pa.array([decimal.Decimal(int(v)) / 100 for v in rng.integers(100, 90000, lines)],
                                pa.decimal128(10, 2))}), "carrier")},
    }


def declared(unique: dict) -> str:
    """[parties.NAME.unique] sections."""
    lines = []
    for party, tables in unique.items():
        lines.append(f"[parties.{party}.unique]")
        lines += [f"{table} = {json.dumps(keys)}" for table, keys in tables.items()]
    return "\n".join(lines) + "\n"


def tpch_grants(grants_for) -> str:
    sections = []
    for viewer in PARTIES:
        def others(columns):
            return tuple(c for c in columns if not c.startswith(f"{viewer}."))
        sections += [(viewer, others(COMPARED), "PLAINTEXT_AFTER_COMPARE"), (viewer, others(GROUPED),
                     "PLAINTEXT_AFTER_GROUP_BY"), (viewer, others(AGGREGATED), "PLAINTEXT_AFTER_AGGREGATE")]
    return grants_for(*sections)


@pytest.fixture(scope="module")
def tpch_engine(tmp_path_factory, federation_writer, grants_for):
    """tpch_engine(unique=UNIQUE, **data): an engine over fresh tables with these declared keys."""
    opened = []

    def make(unique=UNIQUE, **data) -> Engine:
        directory = tmp_path_factory.mktemp("pkjoin")
        path = federation_writer(directory, tpch_tables(**data), tpch_grants(grants_for), parties=PARTIES,
                                 min_group_size=2)
        path.write_text(path.read_text(encoding="utf-8") + "\n" + declared(unique), encoding="utf-8")
        engine = Engine(path, timeout=120)
        opened.append(engine)
        return engine

    yield make
    for engine in opened:
        engine.close()


@pytest.fixture(scope="module")
def tpch(tpch_engine, oracle_for):
    return oracle_for(tpch_engine())


THREE_PARTIES = ("SELECT c.c_region, COUNT(*) AS n, SUM(l.l_qty) AS q FROM carrier.lineitem l JOIN shop.orders o "
                 "ON l.l_orderkey = o.o_orderkey JOIN bank.customer c ON o.o_custkey = c.c_custkey GROUP BY c.c_region")
LEFT_UNIQUE_PRESERVED = ("SELECT t.cnt, COUNT(*) AS custdist FROM (SELECT c.c_custkey, COUNT(o.o_orderkey) AS cnt "
                         "FROM bank.customer c LEFT JOIN shop.orders o ON c.c_custkey = o.o_custkey "
                         "GROUP BY c.c_custkey) t GROUP BY t.cnt")
LEFT_MANY_PRESERVED = ("SELECT o.o_status, COUNT(c.c_age) AS known, COUNT(*) AS n, SUM(o.o_amount) AS s "
                       "FROM shop.orders o LEFT JOIN bank.customer c ON o.o_custkey = c.c_custkey GROUP BY o.o_status")
STRUCTURAL = ("SELECT t.region, COUNT(*) AS n, SUM(o.o_amount) AS s FROM shop.orders o LEFT JOIN (SELECT "
              "c_custkey, MAX(c_region) AS region FROM bank.customer GROUP BY c_custkey) t ON o.o_custkey = t.c_custkey "
              "GROUP BY t.region")
AGGREGATE_OF_JOIN = ("SELECT t.n, COUNT(*) AS k FROM (SELECT o.o_custkey, COUNT(*) AS n FROM shop.orders o JOIN "
                     "bank.customer c ON o.o_custkey = c.c_custkey WHERE o.o_amount > c.c_age GROUP BY o.o_custkey) t "
                     "GROUP BY t.n")
QUERIES = {"three_parties": (THREE_PARTIES, "shop"), "left_unique_preserved": (LEFT_UNIQUE_PRESERVED, "bank"),
           "left_many_preserved": (LEFT_MANY_PRESERVED, "shop"), "structural": (STRUCTURAL, "bank"),
           "aggregate_of_join": (AGGREGATE_OF_JOIN, "shop")}


def sort_joins(engine: Engine, sql: str, issuer: str) -> list[dict]:
    """The join nodes of the query's secret program that join by a sort."""
    (step,) = [s for s in engine.plan(sql, issuer).physical.steps if isinstance(s, SecretQuery)]
    found = []

    def walk(node: dict) -> None:
        if node["op"] == "join" and node.get("unique"):
            found.append(node)
        for key in ("child", "left", "right"):
            if key in node:
                walk(node[key])
        for child in node.get("children", []):
            walk(child)

    walk(json.loads(step.program)["root"])
    return found


@pytest.mark.parametrize("name", QUERIES)
def test_sort_based_joins_match_duckdb(tpch, name):
    sql, issuer = QUERIES[name]
    assert sort_joins(tpch.engine, sql, issuer)
    tpch.check(sql, issuer)


def test_three_parties_join_by_two_sorts_on_declared_keys(tpch):
    joins = sort_joins(tpch.engine, THREE_PARTIES, "shop")
    assert sorted(j["declared"] for j in joins) == ["bank.customer (c_custkey)", "shop.orders (o_orderkey)"]


def test_a_group_by_side_is_unique_without_declarations(tpch_engine, oracle_for):
    oracle = oracle_for(tpch_engine(unique={}))
    (join,) = sort_joins(oracle.engine, STRUCTURAL, "bank")
    assert join["unique"] == "right" and "declared" not in join
    oracle.check(STRUCTURAL, "bank")


@pytest.mark.parametrize("empty", ["bank", "carrier"])
def test_empty_inputs(tpch_engine, oracle_for, empty):
    oracle = oracle_for(tpch_engine(empty=empty))
    oracle.check(THREE_PARTIES, "shop")
    oracle.check(LEFT_MANY_PRESERVED, "shop")


def test_explain_names_the_join_and_its_one_bit(tpch):
    text = tpch.engine.explain(THREE_PARTIES, "shop")
    assert "sort-based PK-FK join, right side unique: n+m rows; bank.customer (c_custkey) checked unique" in text
    assert "whether bank.customer (c_custkey), declared unique, repeats a joined key (1 bit" in text


def test_a_repeated_declared_key_fails_with_a_data_error(tpch_engine):
    engine = tpch_engine(repeat_customer=True)
    assert engine.check(LEFT_MANY_PRESERVED, "shop") is None  # the data breaks it: seen at run time only
    with pytest.raises(DataError, match=r"bank.customer \(c_custkey\) is declared unique"):
        engine.execute(LEFT_MANY_PRESERVED, "shop")


def test_both_sides_repeating_keys_is_answered_or_refused_by_check_too(tpch):
    """o_custkey and l_orderkey repeat on both sides: neither the spine's oblivious join nor a sort; an
    filter reading both sides keeps the all-pairs join (answered, as the oracle) — check agrees; a
    COUNT(*) alone pre-aggregates one side (eager aggregation), which makes it a sort join."""
    sql = ("SELECT COUNT(*) AS n FROM shop.orders o JOIN carrier.lineitem l ON o.o_custkey = l.l_orderkey "
           "WHERE o.o_orderkey > l.l_orderkey")
    assert not sort_joins(tpch.engine, sql, "shop")
    assert tpch.engine.check(sql, "shop") is None
    tpch.check(sql, "shop")
    counted = "SELECT COUNT(*) AS n FROM shop.orders o JOIN carrier.lineitem l ON o.o_custkey = l.l_orderkey"
    assert sort_joins(tpch.engine, counted, "shop")
    tpch.check(counted, "shop")


def test_the_spine_joins_obliviously_only_on_a_known_unique_side(tpch, tpch_engine):
    sql = ("SELECT c.c_region, COUNT(*) AS n FROM shop.orders o JOIN bank.customer c ON o.o_custkey = c.c_custkey "
           "GROUP BY c.c_region")
    assert "oblivious join" in tpch.engine.explain(sql, "shop")
    tpch.check(sql, "shop")
    undeclared = tpch_engine(unique={})
    assert "oblivious join" not in undeclared.explain(sql, "shop")


@pytest.mark.parametrize("keys,message", [
    ([["nope"]], "parties.bank.unique.customer: customer has no column nope"),
    ("c_custkey", r"parties.bank.unique.customer: must be a list of column lists"),
    ([[]], r"parties.bank.unique.customer: must be a list of column lists"),
])
def test_a_bad_declared_key_is_a_config_error(tpch_engine, keys, message):
    with pytest.raises(ConfigError, match=message):
        tpch_engine(unique={"bank": {"customer": keys}})


def test_a_declared_key_of_an_unknown_table_is_a_config_error(tpch_engine):
    with pytest.raises(ConfigError, match="parties.bank.unique.nowhere: bank has no table nowhere"):
        tpch_engine(unique={"bank": {"nowhere": [["c_custkey"]]}})


def test_size_bound_is_linear(tmp_path, federation_writer, grants_for):
    """Published sizes 2048 x 1024: all pairs would hold 2^21 rows (refused); the sort holds n + m."""
    tables = tpch_tables(orders=600, lines=1100)
    path = federation_writer(tmp_path, tables, tpch_grants(grants_for), parties=PARTIES, min_group_size=2)
    with Engine(path) as engine:
        assert "beyond the 1,048,576 rows" in engine.check(THREE_PARTIES, "shop")
    path.write_text(path.read_text(encoding="utf-8") + "\n" + declared(UNIQUE), encoding="utf-8")
    with Engine(path) as engine:
        assert engine.check(THREE_PARTIES, "shop") is None
        assert len(sort_joins(engine, THREE_PARTIES, "shop")) == 2


# -- the program node itself, against DuckDB (test_secret_program's tables and helpers) ----------------


PK_JOINS = [  # (left, right, kind, unique, condition, SQL): PEOPLE.id is unique (NULL once), VISITS_A.pid repeats
    (0, 1, "inner", "right", None, "SELECT * FROM t0 JOIN t1 ON t0.pid = t1.id"),
    (0, 1, "left", "right", None, "SELECT * FROM t0 LEFT JOIN t1 ON t0.pid = t1.id"),
    (1, 0, "left", "left", None, "SELECT * FROM t1 LEFT JOIN t0 ON t1.id = t0.pid"),
    (1, 0, "inner", "left", '"cost" < "limit_"', "SELECT * FROM t1 JOIN t0 ON t1.id = t0.pid AND t0.cost < t1.limit_"),
]


def pk_node(left, right, kind, unique, condition, declared=None):
    keys = {0: '"pid"', 1: '"id"'}
    node = {"op": "join", "kind": kind, "left": inp(left), "right": inp(right), "left_keys": [keys[left]],
            "right_keys": [keys[right]], "condition": condition, "unique": unique}
    return {**node, "declared": declared} if declared else node


@pytest.mark.parametrize("nparties", [2, 3])
@pytest.mark.parametrize("left,right,kind,unique,condition,sql", PK_JOINS)
@pytest.mark.parametrize("empty", [None, 0, 1])
def test_pk_join_node_matches_duckdb(nparties, left, right, kind, unique, condition, sql, empty):
    tables = [VISITS_A, PEOPLE]
    if empty is not None:
        tables[empty] = tables[empty].slice(0, 0)
    check(nparties, pk_node(left, right, kind, unique, condition, "t.people (id)"), [VISIT_COLUMNS, PEOPLE_COLUMNS],
          tables, sql)


@pytest.mark.parametrize("nparties", [2, 3])
def test_a_repeated_declared_key_is_a_data_error_naming_it(nparties):
    """VISITS_B.pid repeats 9: declared unique on the right, the join fails before anything is opened."""
    node = {"op": "join", "kind": "inner", "left": inp(0), "right": inp(1), "left_keys": ['"id"'],
            "right_keys": ['"pid"'], "condition": None, "unique": "right"}
    columns, tables = [PEOPLE_COLUMNS, VISIT_COLUMNS], [PEOPLE, VISITS_B]
    with pytest.raises(DataError, match=r"b.visits \(pid\) is declared unique"):
        run(nparties, program_of({**node, "declared": "b.visits (pid)"}, columns), tables)


def test_parse_refuses_a_unique_side_it_cannot_join_by_a_sort():
    for bad in ({"unique": "middle"}, {"kind": "semi", "unique": "right"}, {"declared": "x (y)"},
                {"unique": "right", "declared": 3}):
        node = {**pk_node(0, 1, "inner", None, None), **bad}
        node = {k: v for k, v in node.items() if v is not None or k == "condition"}
        with pytest.raises(ProtocolError, match="unique|declared"):
            parse_program(program_of(node, [VISIT_COLUMNS, PEOPLE_COLUMNS]))


@pytest.mark.parametrize("left,right,kind,unique,condition,sql", PK_JOINS[:3])
@pytest.mark.parametrize("declared", [None, "t.people (id)"])
def test_pk_join_rounds_stay_within_the_documented_bound(left, right, kind, unique, condition, sql, declared):
    """The module docstring's bound, 2 parties, one int key (sort keys: group, the key, the side)."""
    tables, columns = [VISITS_A, PEOPLE], [VISIT_COLUMNS, PEOPLE_COLUMNS]
    n = VISITS_A.num_rows + PEOPLE.num_rows
    base = rounds_of(inp(0), tables, columns)  # the sizes, the output's shuffle, zeroing and opening
    bound = 1 + 1 + sort_rounds(n, 3) + (6 + 2) + (2 * (n - 1).bit_length() - 1)
    bound += (1 if unique == "left" and kind == "left" else 0) + (9 if declared else 0)
    assert rounds_of(pk_node(left, right, kind, unique, condition, declared), tables, columns) <= base + bound
