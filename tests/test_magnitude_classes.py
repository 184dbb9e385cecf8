"""The SPU's exact range proven at plan time from the owners' published magnitude classes (planner/magnitudes.py):
`check`, EXPLAIN and execution agree on every range refusal, and a SUM of a product of DECIMALs (TPC-H Q3's
`l_extendedprice * (1 - l_discount)`) that the old square-root split refused at run time is answered."""

import dataclasses
import decimal
import math

import pyarrow as pa
import pytest
import sqlglot

from sqlsecure.engine import Engine
from sqlsecure.errors import DataError
from sqlsecure.executors.spu.ranges import RangePlan, beyond_classes, input_limits, magnitude_class
from sqlsecure.planner.catalog import Catalog
from sqlsecure.planner.magnitudes import plan_kind, row_bounds
from sqlsecure.planner.physical import EquiJoin, RunLocal, SecureStage

ORDERS = 32
LINES = 64  # two lines per order
REVENUE = """SELECT i.order_id, SUM(i.price * (1 - i.discount)) AS revenue, o.priority
FROM shop.orders o JOIN insurer.items i ON i.order_id = o.order_id
GROUP BY i.order_id, o.priority ORDER BY revenue DESC, i.order_id LIMIT 5"""


def _tables(largest_price: decimal.Decimal) -> dict:
    """Items whose prices reach 2^21 (beyond the old limit sqrt(2^46 / 64) = 2^20), the largest `largest_price`."""
    money = pa.decimal128(15, 2)
    prices = [decimal.Decimal(1_000_000 + 17_011 * k) / 1 for k in range(LINES - 1)] + [largest_price]
    discounts = [decimal.Decimal(k % 11) / 100 for k in range(LINES)]
    items = pa.table({"order_id": pa.array([1 + k % ORDERS for k in range(LINES)], pa.int64()),
                      "price": pa.array(prices, money), "discount": pa.array(discounts, money)})
    orders = pa.table({"order_id": pa.array(range(1, ORDERS + 1), pa.int64()),
                       "priority": pa.array([k % 3 for k in range(ORDERS)], pa.int32())})
    bank = pa.table({"id": pa.array([1, 2], pa.int64())})
    return {"bank": {"customers": bank}, "shop": {"orders": orders}, "insurer": {"items": items}}


def _grants(grants_for) -> str:
    """The join's keys and the measures for the shop; the shop declares its order ids unique (a PK-FK join:
    the stage's rows are bounded at plan time by the items' published size)."""
    unique = '[parties.shop.unique]\norders = [["order_id"]]\n\n'
    return unique + grants_for(("shop", ("insurer.items.order_id",), "PLAINTEXT_AFTER_JOIN"),
                               ("insurer", ("shop.orders.order_id",), "PLAINTEXT_AFTER_JOIN"),
                               ("shop", ("insurer.items.price", "insurer.items.discount"), "PLAINTEXT_AFTER_AGGREGATE"))


@pytest.fixture(scope="module")
def engines(tmp_path_factory, federation_writer, grants_for):
    """(within, beyond): the same federation, its largest price 2,500,000.00 (class 2^22) or 2^41 (class 2^42)."""
    opened = []
    for name, largest in (("within", decimal.Decimal("2500000.00")), ("beyond", decimal.Decimal(2 ** 41))):
        path = federation_writer(tmp_path_factory.mktemp(name), _tables(largest), _grants(grants_for),
                                 min_group_size=0, group_sums="spu")
        opened.append(Engine(path, timeout=60))
    yield opened
    for engine in opened:
        engine.close()


def test_a_sum_of_decimal_products_beyond_the_old_square_root_split_is_answered(engines, oracle_for):
    within, _ = engines
    stage = next(s for s in within.plan(REVENUE, "shop").physical.steps if isinstance(s, SecureStage))
    assert dict(stage.bounds)["i.price"] == 22 and dict(stage.bounds)["i.discount"] == -3
    assert "published magnitude classes" in within.explain(REVENUE, "shop")
    oracle_for(within).check(REVENUE, "shop")


def test_a_class_beyond_the_exact_range_is_refused_by_check_explain_and_execution(engines, assert_refused):
    _, beyond = engines
    refused = assert_refused(beyond, REVENUE, "shop", DataError, "i.price")
    assert "2^42" in str(refused)
    with pytest.raises(DataError) as explained:
        beyond.explain(REVENUE, "shop")
    with pytest.raises(DataError) as executed:
        beyond.execute(REVENUE, "shop")
    assert str(explained.value) == str(executed.value) == str(refused)


@pytest.mark.parametrize("largest, bits", [(0, 0), (7, 3), (8, 4), (-5, 3), (2 ** 62 - 1, 62), (2 ** 62, 63),
                                           (0.1, -3), (decimal.Decimal("0.125"), -2), (2.0 ** 46 - 2.0 ** -6, 46),
                                           (decimal.Decimal("104949.50"), 17), (None, None),
                                           (float("inf"), None), (float("nan"), None)])
def test_a_magnitude_class_is_the_least_power_of_two_above_every_value(largest, bits):
    assert magnitude_class(largest) == bits


@dataclasses.dataclass(frozen=True)
class Stage:
    """The parts of a SecureStage that `input_limits` reads: one output, ordered by."""

    output: str
    filters: tuple = ()
    group_by: tuple = ()
    having: None = None

    @property
    def outputs(self):
        return (("o0", self.output),)

    @property
    def order(self):
        return ((0, True, False),)


def parse(sql: str):
    return sqlglot.parse_one(sql, read="duckdb")


def test_a_product_splits_its_limit_by_the_published_classes_not_by_square_roots():
    Step = Stage('SUM("p" * (1 - "d"))')
    kinds = {"p": "fixed", "d": "fixed"}
    unknown = input_limits(Step, kinds, 30_519, 16, parse)
    assert round(unknown.limits["p"].value) == 48_018  # sqrt(2^46 / 30,519): Q3's refusal at SF 1
    known = input_limits(Step, kinds, 2 ** 23, 16, parse, bounds={"p": 17, "d": -3})
    assert known.limits["p"].value == 2.0 ** 17 and beyond_classes(known) == []
    edge = input_limits(Step, kinds, 2 ** 23, 16, parse, bounds={"p": 22, "d": -3})  # 2^22 (1 + 2^-3 + 2^-16) < 2^23
    assert beyond_classes(edge) == []  # a constant counts as |c| + 2^-F, not |c| + 1
    wide = input_limits(Step, kinds, 2 ** 23, 16, parse, bounds={"p": 23, "d": -3})
    assert [why.split(" has")[0] for why in beyond_classes(wide)] == ["column 'p'"]


def test_fewer_rows_never_tighten_a_limit():
    """Execution proves its limits with its actual row count, at most the plan's bound: only looser."""
    Step = Stage('SUM("p" * "q" + "p")')
    previous = None
    for rows in (2 ** 20, 2 ** 16, 1000, 7, 1):
        plan = input_limits(Step, {"p": "fixed", "q": "int"}, rows, 16, parse, bounds={"q": 9})
        values = (plan.limits["p"].value, plan.limits["q"].value)
        assert previous is None or all(now >= before for now, before in zip(values, previous))
        previous = values


@pytest.mark.parametrize("dtype, kind", [("DECIMAL(15,2)", "decimal.2"), ("DECIMAL", "decimal.3"),
                                         ("DECIMAL(18)", "decimal.0"), ("BIGINT", "int"), ("DOUBLE", "fixed"),
                                         ("DATE", "date"), ("VARCHAR", "text"), ("BLOB", None)])
def test_plan_kinds_are_the_owners_shared_kinds(dtype, kind):
    assert plan_kind(dtype) == kind


def test_a_plan_without_published_classes_keeps_run_time_ranges():
    plan = RangePlan({"x": "fixed"}, 16, 4)
    assert plan.bounds == {} and beyond_classes(plan) == []


def _catalog(unique: dict) -> Catalog:
    sizes = {"bank": {"customer": 2 ** 10}, "shop": {"orders": 2 ** 14}, "carrier": {"lineitem": 2 ** 16}}
    return Catalog({}, sizes=lambda party: sizes[party], unique=unique)


def _q3_chain() -> tuple:
    """Q3's chain as the spine places it: customer -> orders on c_custkey, then lineitem on o_orderkey."""
    scan = lambda party, table, out: RunLocal(party, f'SELECT * FROM "{table}" AS "{table}"', out)  # noqa: E731
    return (scan("bank", "customer", "r0"), scan("shop", "orders", "r1"), scan("carrier", "lineitem", "r2"),
            EquiJoin("r0", "r1", "bank", "r0", ("customer.c_custkey",), "shop", ("orders.o_custkey",), "j1", (), ()),
            EquiJoin("j1", "r2", "shop", "r1", ("orders.o_orderkey",), "carrier", ("lineitem.l_orderkey",), "j2",
                     (), ()))


def test_joins_on_declared_unique_keys_keep_the_row_bound_of_the_largest_side():
    unique = {"bank": {"customer": (("c_custkey",),)}, "shop": {"orders": (("o_orderkey",),)}}
    bounds = row_bounds(_q3_chain(), {}, _catalog(unique))
    assert bounds["j1"][0] == 2 ** 14 and bounds["j2"][0] == 2 ** 16


def test_a_join_that_may_multiply_rows_has_no_row_bound():
    """Its stage keeps the classes (they split products) and its range is proven at run time, as before."""
    bounds = row_bounds(_q3_chain(), {}, _catalog({}))
    assert bounds["j1"][0] == bounds["j2"][0] == math.inf
    semi = EquiJoin("r2", "r1", "carrier", "r2", ("lineitem.l_orderkey",), "shop", ("orders.o_orderkey",), "s0",
                    (), (), mode="semi")
    assert row_bounds((*_q3_chain(), semi), {}, _catalog({}))["s0"][0] == 2 ** 16


def test_a_base_relation_repeated_by_a_join_bounds_nothing_after_it():
    """customer -> orders on c_custkey repeats each customer row; joining a third table on c_custkey again
    may then multiply rows (each customer row, repeated, meets each of its matches)."""
    unique = {"bank": {"customer": (("c_custkey",),)}, "shop": {"orders": (("o_orderkey",),)}}
    chain = _q3_chain()
    again = EquiJoin("j1", "r2", "bank", "r0", ("customer.c_custkey",), "carrier", ("lineitem.l_orderkey",), "j2",
                     (), ())
    assert row_bounds((*chain[:4], again), {}, _catalog(unique))["j2"][0] == math.inf
