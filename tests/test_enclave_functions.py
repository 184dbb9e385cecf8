"""Scalar functions inside the enclave (`[enclave] placement = "always"`), each against plain DuckDB: NULLs
in the inputs and from NULLIF / CASE / division, edge values (zero divisors, dates), and refusals that
name the function."""

import datetime
import decimal

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import sqlglot

from sqlsecure.engine import Engine
from sqlsecure.errors import DataError, NotSupportedError
from sqlsecure.executors.tee.expressions import ENCLAVE_RULES, enclave_refusal
from sqlsecure.planner.geodist import with_great_circle
from tests.test_enclave_queries import enclave_section

PARTIES = ("bank", "shop")
JOIN = "FROM bank.people b JOIN shop.visits v ON b.id = v.person_id"


def function_tables(n: int = 24) -> dict:
    """Two parties' rows with zeros, negatives, halves, month ends, leap days and NULLs."""
    rng = np.random.default_rng(7)
    born = [datetime.date(1960, 1, 31) + datetime.timedelta(days=int(d)) for d in rng.integers(0, 20000, n)]
    born[0], born[1] = datetime.date(2000, 2, 29), datetime.date(1999, 12, 31)
    people = pa.table({
        "id": pa.array(np.arange(n), pa.int64()),
        "born": pa.array(born, pa.date32()),
        "score": pa.array([0.0, -2.5, 2.5, 0.5, -0.5, 1e-9] + list(rng.normal(0, 3, n - 6).round(3))),
        "n": pa.array([0, -3, 3, 7, 0, 1] + list(rng.integers(-9, 10, n - 6)), pa.int32()),
        "price": pa.array([decimal.Decimal(int(v)) / 100 for v in rng.integers(-99999, 99999, n)],
                          pa.decimal128(10, 2)),
        "flag": pa.array([bool(v) for v in rng.integers(0, 2, n)]),
        "label": pa.array([f"p{i % 5}" for i in range(n)]),
        "lon": pa.array(rng.uniform(-180, 180, n).round(4)),
        "lat": pa.array(rng.uniform(-90, 90, n).round(4)),
        "bonus": pa.array([None if i % 4 == 0 else float(i) / 2 for i in range(n)]),
        "grade": pa.array([None if i % 3 == 0 else f"g{i % 2}" for i in range(n)]),
    })
    m = 2 * n
    visits = pa.table({
        "person_id": pa.array(rng.integers(0, n, m), pa.int64()),
        "day": pa.array([datetime.date(2024, 1, 1) + datetime.timedelta(days=int(d))
                         for d in rng.integers(-400, 400, m)], pa.date32()),
        "amount": pa.array([0.0, -1.5, 2.5] + list(rng.uniform(-100, 100, m - 3).round(2))),
        "qty": pa.array([0, 5, -5] + list(rng.integers(-20, 20, m - 3)), pa.int64()),
        "lon": pa.array(rng.uniform(-180, 180, m).round(4)),
        "lat": pa.array(rng.uniform(-90, 90, m).round(4)),
        "coupon": pa.array([None if i % 5 == 0 else int(v) for i, v in enumerate(rng.integers(-3, 4, m))],
                           pa.int32()),
        "when_": pa.array([None if i % 6 == 0 else datetime.date(2024, 3, 1 + i % 20) for i in range(m)],
                          pa.date32()),
    })
    return {"bank": {"people": people}, "shop": {"visits": visits}}


def enclave_federation(directory, federation_writer, plaintext_grants, **options):
    """A federation over `function_tables` whose every cross-party query goes to the enclave."""
    grants = plaintext_grants(PARTIES) + enclave_section(directory).replace(
        "[enclave]\n", '[enclave]\nplacement = "always"\n')
    return federation_writer(directory, function_tables(), grants, parties=PARTIES, min_group_size=1, **options)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory, federation_writer, oracle_for, plaintext_grants):
    with Engine(enclave_federation(tmp_path_factory.mktemp("enclave-functions"), federation_writer,
                                   plaintext_grants)) as engine:
        yield oracle_for(engine)


ROWS = {
    "arithmetic": "v.amount / b.score, v.qty / b.n, v.qty // NULLIF(b.n, 0), v.qty % NULLIF(b.n, 0), "
                  "ABS(v.amount - b.score), -b.price * v.qty",
    "rounding": "ROUND(v.amount / 3, 2), ROUND(b.price, 1), ROUND(v.amount), FLOOR(v.amount * b.score), "
                "CEIL(b.price), CEIL(v.amount), FLOOR(b.price / 7)",
    "nulls": "NULLIF(v.qty, b.n), IFNULL(NULLIF(v.qty, 0), -1), IF(b.flag, v.amount, NULL), "
             "COALESCE(NULLIF(b.n, 0), v.qty, 0), CASE WHEN b.flag THEN v.qty END, "
             "CASE WHEN b.flag AND v.qty > 0 THEN 'yes' = 'yes' ELSE NULL END",
    "case": "CASE WHEN b.flag THEN v.qty WHEN v.amount > 0 THEN b.n ELSE -1 END, "
            "CASE b.label WHEN 'p1' THEN 1 WHEN 'p2' THEN 2 END, b.label LIKE 'p1%', v.qty IN (0, 5, -5), "
            "v.amount BETWEEN -10 AND 10",
    "dates": "YEAR(v.day), MONTH(b.born), DAY(v.day), EXTRACT(DOW FROM v.day), EXTRACT(QUARTER FROM b.born), "
             "DATEDIFF('day', b.born, v.day), DATEDIFF('month', b.born, v.day), v.day - b.born, "
             "v.day + INTERVAL 3 DAY, b.born - INTERVAL 1 MONTH, v.day + 30",
    "casts": "CAST(b.price * v.qty AS DOUBLE), CAST(v.amount + b.score AS INTEGER), CAST(b.n + v.qty AS DECIMAL(10, 2)), "
             "CAST(b.flag AND v.qty > 0 AS INTEGER), CAST(b.score * v.amount AS DECIMAL(12, 3)), "
             "CAST(v.day + b.n AS DATE), CAST('2024-02-29' AS DATE) - b.born",
    "math": "SQRT(ABS(v.amount * b.score)), EXP(b.score), LN(ABS(v.amount) + 1), LOG10(ABS(b.score) + 1), "
            "LOG2(ABS(v.qty) + 1), POWER(b.score, 2), POWER(ABS(v.amount), 0.5)",
    "trig": "SIN(v.amount), COS(b.score), TAN(b.score), ASIN(b.score / 10), ACOS(b.score / 10), ATAN(v.amount), "
            "ATAN2(v.amount, b.score), PI() * b.score",
    "null inputs": "b.bonus, v.coupon, b.grade, v.when_, b.bonus * v.coupon, COALESCE(b.bonus, v.coupon), "
                   "v.coupon // NULLIF(b.n, 0), YEAR(v.when_) + b.n, b.grade = 'g1' OR v.coupon > 0, "
                   "DATEDIFF('day', b.born, v.when_), b.grade IS NULL AND v.coupon IS NOT NULL",
    "geodist": "GEODIST(b.lon, b.lat, v.lon, v.lat), GEODIST(b.lon, b.lat, v.lon, v.lat, 1)",
    "extremes": "GREATEST(v.qty, b.n), LEAST(v.amount, b.score, 0), GREATEST(b.price, v.qty), "
                "LEAST(b.bonus, v.coupon), GREATEST(b.bonus, v.coupon, NULL), LEAST(v.day, b.born), "
                "GREATEST(v.when_, b.born, DATE '2000-01-01'), GREATEST(v.qty, b.n) = LEAST(v.qty, b.n)",
}


@pytest.mark.parametrize("group", sorted(ROWS))
def test_row_functions_match_duckdb(oracle, rows_match, group):
    """Every group reads both parties, so the enclave computes all of it (GEODIST: DuckDB has none; its
    reference is the plaintext parties' rewrite)."""
    sql = f"SELECT b.id, v.qty, {ROWS[group]} {JOIN}"
    assert rows_match(oracle.engine.execute(sql, "bank").table, oracle.expected(with_great_circle(sql), "bank"))
    text = oracle.engine.explain(sql, "bank")
    assert "TEEU(enclave" in text and "failed on some row" in text


AGGREGATES = [
    f"SELECT YEAR(v.day), COUNT(*), SUM(v.amount / 3), AVG(CASE WHEN b.flag THEN v.qty END), "
    f"MIN(NULLIF(v.qty, 0)), MAX(ROUND(v.amount)) {JOIN} GROUP BY YEAR(v.day)",
    f"SELECT CASE WHEN b.flag THEN MONTH(v.day) END AS m, COUNT(NULLIF(v.qty, 5)), SUM(b.price * v.qty) "
    f"{JOIN} GROUP BY CASE WHEN b.flag THEN MONTH(v.day) END",
    f"SELECT b.label, SUM(CASE WHEN v.qty > 0 THEN 1 ELSE 0 END), AVG(DATEDIFF('day', b.born, v.day)), "
    f"MIN(v.day + INTERVAL 1 DAY) {JOIN} GROUP BY b.label",
    f"SELECT SUM(NULLIF(v.qty, v.qty)), AVG(NULLIF(b.n, b.n)), MIN(NULLIF(v.amount, v.amount)), "
    f"COUNT(NULLIF(v.qty, v.qty)) {JOIN}",  # aggregates of NULLs only: NULL, NULL, NULL, 0
    f"SELECT b.grade, v.coupon, COUNT(*), COUNT(b.bonus), SUM(b.bonus), AVG(v.coupon), MIN(v.when_), "
    f"MAX(b.bonus * v.coupon), COUNT(b.grade) {JOIN} GROUP BY b.grade, v.coupon",  # NULL inputs: keys, aggregates
    f"SELECT b.id, v.qty, b.grade, v.coupon {JOIN} ORDER BY v.coupon DESC, b.grade, b.id, v.qty LIMIT 15",
    f"SELECT b.id, v.qty, NULLIF(v.qty, 5) AS q {JOIN} ORDER BY q DESC, b.id, v.qty LIMIT 12",
    f"SELECT b.id, v.qty, NULLIF(v.qty, 5) AS q {JOIN} ORDER BY q NULLS FIRST, b.id, v.qty LIMIT 12",
]


@pytest.mark.parametrize("sql", AGGREGATES)
def test_aggregates_and_order_of_expressions_match_duckdb(oracle, sql):
    oracle.check(sql, "bank")


@pytest.mark.parametrize("sql", [s for s in AGGREGATES if "LIMIT" in s])
def test_limit_after_order_by_nullable_values_keeps_duckdb_s_order(oracle, sql):
    got = oracle.engine.execute(sql, "bank").table
    assert got.to_pylist() == oracle.expected(sql, "bank").to_pylist()


@pytest.mark.parametrize("expression", ["v.qty // b.n", "v.qty % b.n"])
def test_integer_division_by_zero_fails_as_in_duckdb(oracle, expression):
    sql = f"SELECT b.id, {expression} {JOIN}"
    with pytest.raises(duckdb.Error, match="Division by zero"):
        oracle.expected(sql, "bank")
    with pytest.raises(DataError, match="Division by zero"):
        oracle.engine.execute(sql, "bank")


@pytest.mark.parametrize("expression, named", [
    ("SIGN(v.amount - b.score)", "SIGN"), ("UPPER(CONCAT(b.label, v.qty))", "UPPER"),
    ("b.label LIKE v.lon::VARCHAR", "LIKE"), ("CONCAT(b.label, v.qty) = 'x'", "CONCAT"),
    ("GEODIST(b.lon, b.lat, v.lon)", "GEODIST takes"),
])
def test_a_function_without_an_enclave_rule_is_refused_at_plan_time_by_name(oracle, expression, named):
    with pytest.raises(NotSupportedError, match=named):
        oracle.engine.explain(f"SELECT b.id, {expression} {JOIN}", "bank")


def test_a_text_result_is_refused_at_plan_time(oracle):
    with pytest.raises(NotSupportedError, match="VARCHAR"):
        oracle.engine.explain(f"SELECT CAST(b.n + v.qty AS VARCHAR) {JOIN}", "bank")


def test_the_enclave_rules_deny_by_default():
    assert sqlglot.exp.Subquery not in ENCLAVE_RULES
    assert "SUBQUERY" in enclave_refusal(sqlglot.parse_one("x + (SELECT 1)", read="duckdb"))
    assert enclave_refusal(sqlglot.parse_one("ROUND(x / NULLIF(y, 0), 2)", read="duckdb")) is None


@pytest.mark.parametrize("sql, named", [
    (f"SELECT b.label, STRING_AGG(b.grade, ',') {JOIN} GROUP BY b.label", "GROUP_CONCAT"),
    (f"SELECT b.label, BOOL_AND(b.flag) {JOIN} GROUP BY b.label", "LOGICAL_AND"),
    (f"SELECT b.label, STDDEV(v.amount) + 1 {JOIN} GROUP BY b.label", "STDDEV"),
    (f"SELECT b.label, COUNT(*) {JOIN} GROUP BY b.label HAVING MEDIAN(v.qty) > 0", "MEDIAN"),
    (f"SELECT b.label, SUM(v.qty) {JOIN} GROUP BY b.label ORDER BY VARIANCE(v.amount)", "VARIANCE"),
])
def test_an_aggregate_the_enclave_lacks_is_refused_by_name(oracle, sql, named):
    """Named as an aggregate the enclave does not support (not as the columns it reads), the same in
    check, EXPLAIN and execution."""
    said = oracle.engine.check(sql, "bank")
    assert said is not None and f"the aggregate {named} is not supported in the enclave" in said, said
    for run in (oracle.engine.explain, oracle.engine.execute):
        with pytest.raises(NotSupportedError) as refused:
            run(sql, "bank")
        assert f"NotSupportedError: {refused.value}" == said
