"""The SPU's exact range proven at plan time beyond the spine's joined stage (issue 16): secret programs
(PK-FK and all-pairs joins), UNION ALL stages and oblivious joins. For each shape, the same query over two
federations that differ only in one column's largest value: refused by `check`, EXPLAIN and execution
with one DataError naming the column and its class, or answered and equal to the oracle."""

import dataclasses
import decimal
import json

import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import DataError, ProtocolError
from sqlsecure.executors.spu.program import input_limits, parse_program
from sqlsecure.planner.magnitudes import pushdown_bounds
from sqlsecure.planner.physical import RunLocal, SecretQuery, SecureStage

CUSTOMERS, ORDERS, POLICIES = 32, 64, 32
MONEY = pa.decimal128(15, 2)

PROGRAM_PK_JOIN = ("SELECT SUM(t.s) AS total FROM (SELECT c.region, SUM(o.amount * c.income) AS s FROM bank.customers c "
                   "JOIN shop.orders o ON c.id = o.customer_id GROUP BY c.region) t")
PROGRAM_ALL_PAIRS = ("SELECT SUM(t.v) AS total FROM (SELECT o.amount * p.premium AS v FROM shop.orders o "
                     "JOIN insurer.policies p ON o.customer_id = p.customer_id) t")
UNION_ALL = ("SELECT SUM(u.a) AS total, COUNT(*) AS n FROM (SELECT amount AS a FROM shop.orders UNION ALL "
             "SELECT premium FROM insurer.policies) u")
OBLIVIOUS_JOIN = ("SELECT c.region, SUM(o.amount * c.income) AS s FROM bank.customers c JOIN shop.orders o "
                  "ON c.id = o.customer_id GROUP BY c.region")
SHAPES = {  # name: (query, its SPU step, the column its refusal names)
    "program_pk_join": (PROGRAM_PK_JOIN, SecretQuery, "o.amount"),
    "program_all_pairs": (PROGRAM_ALL_PAIRS, SecretQuery, "o.amount"),
    "union_all": (UNION_ALL, SecureStage, "u.a"), "oblivious_join": (OBLIVIOUS_JOIN, SecureStage, "o.amount")}


def _tables(largest_amount: decimal.Decimal) -> dict:
    """Unique customer ids at the bank, two orders per customer at the shop (the largest amount
    `largest_amount`), one policy per customer at the insurer."""
    customers = pa.table({"id": pa.array(range(1, CUSTOMERS + 1), pa.int64()),
                          "region": pa.array([("north", "south", "east")[k % 3] for k in range(CUSTOMERS)]),
                          "income": pa.array([decimal.Decimal(20_000 + 1_013 * k) / 1 for k in range(CUSTOMERS)],
                                             MONEY)})
    amounts = [decimal.Decimal(100 + 37 * k) / 10 for k in range(ORDERS - 1)] + [largest_amount]
    orders = pa.table({"order_id": pa.array(range(ORDERS), pa.int64()),
                       "customer_id": pa.array([1 + k % CUSTOMERS for k in range(ORDERS)], pa.int64()),
                       "amount": pa.array(amounts, MONEY)})
    policies = pa.table({"customer_id": pa.array([1 + k for k in range(POLICIES)], pa.int64()),
                         "premium": pa.array([decimal.Decimal(500 + 11 * k) / 1 for k in range(POLICIES)], MONEY)})
    return {"bank": {"customers": customers}, "shop": {"orders": orders}, "insurer": {"policies": policies}}


def _grants(grants_for) -> str:
    """Join keys compared only (oblivious joins, joins on shares), measures after aggregation; the bank
    declares its customer ids unique (a PK-FK join of n + m rows)."""
    unique = '[parties.bank.unique]\ncustomers = [["id"]]\n\n'
    keys = ("shop.orders.customer_id", "insurer.policies.customer_id", "bank.customers.id")
    measures = ("shop.orders.amount", "insurer.policies.premium", "bank.customers.income")
    return unique + grants_for(*((party, tuple(k for k in keys if not k.startswith(party)), "PLAINTEXT_AFTER_COMPARE")
                                 for party in ("bank", "shop", "insurer")),
                               *((party, tuple(m for m in measures if not m.startswith(party)),
                                  "PLAINTEXT_AFTER_AGGREGATE") for party in ("bank", "shop", "insurer")),
                               ("shop", ("bank.customers.region",), "PLAINTEXT_AFTER_GROUP_BY"))


@pytest.fixture(scope="module")
def engines(tmp_path_factory, federation_writer, grants_for):
    """(within, beyond): the same federation, its largest amount 1,000.00 (class 2^10) or 2^41 (class 2^42)."""
    opened = []
    for name, largest in (("within", decimal.Decimal("1000.00")), ("beyond", decimal.Decimal(2 ** 41))):
        path = federation_writer(tmp_path_factory.mktemp(name), _tables(largest), _grants(grants_for),
                                 min_group_size=0)
        opened.append(Engine(path, timeout=60))
    yield opened
    for engine in opened:
        engine.close()


def _spu_step(engine, sql: str):
    return next(s for s in engine.plan(sql, "bank").physical.steps if isinstance(s, (SecretQuery, SecureStage)))


@pytest.mark.parametrize("shape", SHAPES)
def test_a_class_beyond_the_exact_range_is_refused_by_check_explain_and_execution(engines, assert_refused, shape):
    sql, _, column = SHAPES[shape]
    _, beyond = engines
    refused = assert_refused(beyond, sql, "bank", DataError, f"column '{column}'")
    assert f"magnitude class is |{column}| < 2^42" in str(refused)
    with pytest.raises(DataError) as explained:
        beyond.explain(sql, "bank")
    with pytest.raises(DataError) as executed:
        beyond.execute(sql, "bank")
    assert str(explained.value) == str(executed.value) == str(refused)


@pytest.mark.parametrize("shape", SHAPES)
def test_classes_within_the_exact_range_are_proven_at_plan_time_and_answered(engines, oracle_for, shape):
    sql, device, _ = SHAPES[shape]
    within, _ = engines
    step = _spu_step(within, sql)
    assert isinstance(step, device) and step.row_bound > 0
    assert "published magnitude classes" in within.explain(sql, "bank")
    oracle_for(within).check(sql, "bank")


def test_a_programs_inputs_carry_their_classes_and_row_bound(engines):
    """The owners check their values against the classes at run time, over at most the rows proven with:
    PK-FK n + m = 96; all pairs n * m = 2,048."""
    within, _ = engines
    pk, pairs = (_spu_step(within, sql) for sql in (PROGRAM_PK_JOIN, PROGRAM_ALL_PAIRS))
    classes = [dict(map(tuple, spec.get("classes", []))) for spec in json.loads(pk.program)["inputs"]]
    assert classes[1]["o.amount"] == 10 and classes[0]["c.income"] == 16
    assert (pk.row_bound, pairs.row_bound) == (CUSTOMERS + ORDERS, ORDERS * POLICIES)


def test_a_column_its_owner_computes_is_proven_at_run_time_and_explain_says_so(engines, oracle_for):
    sql = ("SELECT SUM(t.v) AS total FROM (SELECT o.customer_id, o.amount * 2 AS v FROM shop.orders o) t "
           "JOIN bank.customers c ON c.id = t.customer_id")
    within, beyond = engines
    assert "proven at run time only for" in within.explain(sql, "bank")
    oracle_for(within).check(sql, "bank")
    with pytest.raises(DataError, match="o.amount|t.v|v"):
        beyond.execute(sql, "bank")


@pytest.fixture
def unsized(engines, monkeypatch):
    """The engines, their catalogs without published sizes: no step has a row bound at plan time."""
    for engine in engines:
        monkeypatch.setattr(engine, "catalog", dataclasses.replace(engine.catalog, sizes=None))
    return engines


@pytest.mark.parametrize("shape", [shape for shape in SHAPES if shape != "union_all"])
def test_without_a_row_bound_a_class_beyond_even_one_row_is_refused_at_plan_time(unsized, assert_refused, shape):
    """More rows only narrow the limits, so a class beyond them over one row fails over any number (the
    products by o.amount: 2^42 times a class of 2^10 or more exceeds the SPU's 2^47 at once)."""
    sql, _, column = SHAPES[shape]
    _, beyond = unsized
    refused = assert_refused(beyond, sql, "bank", DataError, f"column '{column}'")
    assert "even over a single row" in str(refused)
    with pytest.raises(DataError) as executed:
        beyond.execute(sql, "bank")
    assert str(executed.value) == str(refused)


@pytest.mark.parametrize("shape", SHAPES)
def test_without_a_row_bound_classes_within_are_proven_at_run_time(unsized, oracle_for, shape):
    sql, _, _ = SHAPES[shape]
    within, _ = unsized
    assert _spu_step(within, sql).row_bound == 0
    assert "at run time for its actual rows" in within.explain(sql, "bank")
    oracle_for(within).check(sql, "bank")


def test_without_a_row_bound_a_sum_within_one_row_is_left_to_the_owners_run_time_check(unsized):
    """SUM(u.a) over one row holds |u.a| < 2^47: the plan accepts, and the owners' check refuses the 96 rows."""
    _, beyond = unsized
    assert beyond.check(UNION_ALL, "bank") is None
    with pytest.raises(DataError, match="column 'u.a' has values outside the SPU's exact range"):
        beyond.execute(UNION_ALL, "bank")


def test_a_branch_whose_where_bounds_the_column_on_both_sides_is_proven_with_that_bound(engines, oracle_for):
    """The 2^41 amount is filtered out at its owner: the branch's column is in the class of 5,000 (2^13)."""
    sql = UNION_ALL.replace("FROM shop.orders", "FROM shop.orders WHERE amount BETWEEN -5000 AND 5000")
    _, beyond = engines
    assert dict(_spu_step(beyond, sql).bounds)["u.a"] == 13
    oracle_for(beyond).check(sql, "bank")


@pytest.mark.parametrize("sql, rows, columns", [
    ('SELECT "amount" AS "o.amount", "order_id" * 2 AS "o.twice" FROM "orders" AS "o"', 64, {"o.amount": 42}),
    ('SELECT * FROM "orders" WHERE "amount" > 0', 64, {"amount": 42, "order_id": 6, "customer_id": 6}),
    ('SELECT "t"."a" AS "t.a" FROM (SELECT "amount" AS "a" FROM "orders" WHERE "amount" <= 7 AND "amount" >= -7) '
     'AS "t"', 64, {"t.a": 3}),
    ('SELECT "customer_id", SUM("amount") AS "s" FROM "orders" GROUP BY "customer_id"', 64, {"customer_id": 6}),
    ('SELECT "o"."amount" FROM "orders" AS "o" JOIN "orders" AS "p" ON "o"."order_id" = "p"."order_id"',
     float("inf"), {}),
])
def test_a_pushdowns_rows_and_classes_come_from_its_one_table(engines, sql, rows, columns):
    _, beyond = engines
    found = pushdown_bounds(RunLocal("shop", sql, "r0"), beyond.catalog)
    assert found.rows == rows and {c: bits for c, (_, bits) in found.columns.items()} == columns


def _program(classes) -> str:
    return json.dumps({"inputs": [{"columns": [["x", "int"], ["t", "text"]], "classes": classes}],
                       "root": {"op": "aggregate", "child": {"op": "input", "index": 0}, "keys": [],
                                "aggregates": [["s", "SUM", '"x"', False]]}})


def test_a_programs_classes_bound_what_each_owner_checks_at_run_time():
    """An accepted plan's classes hold at run time, or the owner refuses its value (the guard)."""
    limits = input_limits(parse_program(_program([["x", 5]])), {0: 4}, 16)[0]
    assert limits["x"].value == 2 ** 5 and "published magnitude class" in limits["x"].reason
    assert input_limits(parse_program(_program([])), {0: 4}, 16)[0]["x"].value == 2.0 ** 63 / 4


@pytest.mark.parametrize("classes", [[["t", 3]], [["y", 3]], [["x", "3"]], [["x", True]], [["x", 4096]], {"x": 3}])
def test_a_malformed_class_in_a_program_is_a_protocol_error(classes):
    with pytest.raises(ProtocolError, match="class"):
        parse_program(_program(classes))
