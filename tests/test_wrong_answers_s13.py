"""Issue 17's wrong answers left from session 12 (notes/s13): each class checked against the oracle (plain
DuckDB over all parties' data), or refused at plan time with a message naming the user's construct.

1. DISTINCT / GROUP BY / COUNT(DISTINCT) keys that are DOUBLEs (columns, computed values, products with
   a DOUBLE factor): the SPU holds them in fixed point (2^-16), which merges distinct doubles.
2. Computed DECIMAL keys are grouped on their exact limb, not on the fixed-point limb beside it.
3. A SUM of DOUBLEs compared (HAVING, CASE) is guarded with its rows' summed encoding errors (n/2
   units), not a fixed 4 units: a comparison within that bound is refused (DataError), never flipped.
"""

import decimal

import pyarrow as pa
import pytest

from sqlsecure.errors import DataError, NotSupportedError

PARTIES = ("bank", "shop", "insurer")
# shop's table is CSV (conftest.write_federation): its x, d, e are DOUBLEs there, so a UNION with it is DOUBLE
WITH_SHOP = "(SELECT k, x, d FROM bank.t UNION ALL SELECT k, x, d FROM shop.t) AS u"
# bank and insurer are Parquet: d and e stay DECIMAL(10, 2)
DECIMALS = "(SELECT k, x, d, e FROM bank.t UNION ALL SELECT k, x, d, e FROM insurer.t) AS u"
# products equal as DECIMALs whose operands' fixed-point encodings give different products
PAIRS = [("1.15", "3.40"), ("1.70", "2.30"), ("2.30", "1.70"), ("3.40", "1.15"), ("0.50", "7.82"), ("7.82", "0.50"),
         ("0.25", "15.64"), ("1.00", "3.91"), ("3.91", "1.00"), ("0.10", "0.20"), ("0.20", "0.10"), ("0.40", "0.05")]


def table(first: int, rows: int) -> pa.Table:
    """x: doubles 1e-6 apart (one fixed-point step is 1.5e-5), with -0.0, 0.0 and NULL; d * e: equal
    DECIMAL products of different operands."""
    xs = [1 + 1e-6 * (first + j) for j in range(rows)] + [-0.0, 0.0, None]
    pairs = [PAIRS[(first + j) % len(PAIRS)] for j in range(len(xs))]
    return pa.table({
        "k": pa.array([j % 3 for j in range(len(xs))], pa.int64()),
        "x": pa.array(xs, pa.float64()),
        "d": pa.array([decimal.Decimal(a) for a, _ in pairs], pa.decimal128(10, 2)),
        "e": pa.array([decimal.Decimal(b) for _, b in pairs], pa.decimal128(10, 2)),
        "z": pa.array([0.1] * len(xs), pa.float64()),  # 0.1 is 6554 / 2^16 on the SPU: 0.4 units high each
    })


# Grants that leave the SPU the only place (plaintext grants let the planner reveal rows to the issuer and
# compute there instead): bank may see others' columns after GROUP BY, insurer and shop after aggregation.
GRANTED = {"bank": "PLAINTEXT_AFTER_GROUP_BY", "shop": "PLAINTEXT_AFTER_AGGREGATE",
           "insurer": "PLAINTEXT_AFTER_AGGREGATE"}


@pytest.fixture(scope="module")
def fed(tmp_path_factory, federation_writer, grants_for, oracle_for):
    from sqlsecure.engine import Engine

    tables = {"bank": {"t": table(0, 24)}, "shop": {"t": table(24, 24)}, "insurer": {"t": table(5, 12)}}
    grants = grants_for(*((party, (f"{owner}.t.{column}",), GRANTED[party]) for owner in PARTIES for party in PARTIES
                          if party != owner for column in ("k", "x", "d", "e", "z")))
    directory = tmp_path_factory.mktemp("wrong_answers_s13")
    path = federation_writer(directory, tables, grants, parties=PARTIES, min_group_size=0)
    with Engine(path, timeout=60) as engine:
        yield oracle_for(engine)


# -- 1. DOUBLE keys ----------------------------------------------------------------------------------------

DOUBLE_KEYS = [
    # (query, issuer, the key the refusal names): the single-stage path (`place_spu`) and the secret program
    (f"SELECT COUNT(DISTINCT x) FROM {WITH_SHOP}", "insurer", "x"),
    (f"SELECT x, COUNT(*) FROM {WITH_SHOP} GROUP BY x", "bank", "x"),
    (f"SELECT COUNT(*) FROM (SELECT x FROM bank.t INTERSECT SELECT x FROM shop.t) AS s", "insurer", "x"),
    (f"SELECT x * 2 AS y, COUNT(*) FROM {WITH_SHOP} GROUP BY x * 2", "bank", "x * 2"),
    (f"SELECT COUNT(DISTINCT x * k) FROM {WITH_SHOP}", "insurer", "x * k"),
    (f"SELECT COUNT(DISTINCT d * x) FROM {DECIMALS}", "shop", "d * x"),  # a product with a DOUBLE factor
    (f"SELECT d * x AS p, COUNT(*) FROM {DECIMALS} GROUP BY d * x", "bank", "d * x"),
    (f"SELECT COUNT(*) FROM (SELECT DISTINCT x FROM {WITH_SHOP}) AS s", "insurer", "x"),
    (f"SELECT COUNT(*) FROM (SELECT x FROM {WITH_SHOP} GROUP BY x) AS s", "insurer", "x"),
    (f"SELECT COUNT(*) FROM (SELECT DISTINCT d * x FROM {DECIMALS}) AS s", "shop", "d * x"),
    (f"SELECT y, COUNT(*) FROM (SELECT x + 1 AS y FROM {WITH_SHOP}) AS s GROUP BY y", "bank", "x + 1"),
    (f"SELECT SUM(n) FROM (SELECT k, COUNT(DISTINCT x) AS n FROM {WITH_SHOP} GROUP BY k) AS s", "insurer", "x"),
]


@pytest.mark.parametrize("sql, issuer, named", DOUBLE_KEYS)
def test_double_keys_are_refused_at_plan_time(fed, assert_refused, sql, issuer, named):
    """DuckDB tells these doubles apart (60 values 1e-6 apart); fixed point would count 5."""
    error = assert_refused(fed.engine, sql, issuer, NotSupportedError, named)
    assert "DOUBLE" in str(error) and "__" not in str(error)


EXACT_KEYS = [
    (f"SELECT COUNT(*), SUM(n) FROM (SELECT ROUND(x, 2) AS r, COUNT(*) AS n FROM {WITH_SHOP} GROUP BY 1) AS s",
     "insurer"),  # a rounded key is exact
    (f"SELECT COUNT(*) FROM (SELECT DISTINCT CAST(x AS INTEGER) AS i FROM {WITH_SHOP}) AS s", "insurer"),
    (f"SELECT COUNT(DISTINCT k), COUNT(DISTINCT d) FROM {DECIMALS}", "shop"),
    (f"SELECT COUNT(DISTINCT ROUND(x, 4)) FROM {WITH_SHOP}", "insurer"),
]


@pytest.mark.parametrize("sql, issuer", EXACT_KEYS)
def test_exact_keys_beside_doubles_answer_as_duckdb(fed, sql, issuer):
    fed.check(sql, issuer)


@pytest.fixture(scope="module")
def class4(tmp_path_factory, federation_writer, grants_for, oracle_for):
    """bank's DOUBLE x (1e-6 apart, -0.0, 0.0, NULL) as the group key of shop's values: keys at one party."""
    from sqlsecure.engine import Engine

    bank = table(0, 24).select(["k", "x"]).append_column("id", pa.array(range(27), pa.int64()))
    shop = pa.table({"id": pa.array([j % 27 for j in range(40)], pa.int64()),
                     "v": pa.array([j % 7 for j in range(40)], pa.int64())})
    grants = grants_for(("bank", ("shop.t.id",), "PLAINTEXT_AFTER_JOIN"), ("shop", ("bank.t.id",), "PLAINTEXT_AFTER_JOIN"),
                        ("bank", ("shop.t.v",), "PLAINTEXT_AFTER_AGGREGATE"))
    path = federation_writer(tmp_path_factory.mktemp("class4_doubles"), {"bank": {"t": bank}, "shop": {"t": shop}},
                             grants, parties=("bank", "shop"), min_group_size=0)
    with Engine(path, timeout=60) as engine:
        yield oracle_for(engine)


def test_one_partys_double_column_groups_exactly(class4):
    """The key's owner numbers its exact values (`stage.group_code`): doubles closer than the SPU's
    fixed-point step stay apart, -0.0 and 0.0 are one group, as in DuckDB."""
    sql = "SELECT b.x, SUM(s.v) AS n, COUNT(*) AS c FROM bank.t b JOIN shop.t s ON b.id = s.id GROUP BY b.x"
    assert "SPU" in class4.engine.explain(sql, "bank")
    class4.check(sql, "bank")


# -- 2. computed DECIMAL keys --------------------------------------------------------------------------------

DECIMAL_KEYS = [
    (f"SELECT d * e AS p, COUNT(*) FROM {DECIMALS} GROUP BY d * e", "bank"),
    (f"SELECT COUNT(*) FROM (SELECT DISTINCT d * e - d AS p FROM {DECIMALS}) AS s", "shop"),
    (f"SELECT COUNT(DISTINCT d * e) FROM {DECIMALS}", "shop"),
    (f"SELECT COUNT(*) FROM (SELECT DISTINCT d * e AS p FROM {DECIMALS}) AS s", "shop"),
    (f"SELECT p, COUNT(*) FROM (SELECT d * e AS p FROM {DECIMALS}) AS s GROUP BY p", "bank"),
    (f"SELECT COUNT(*), SUM(n) FROM (SELECT d * e AS p, COUNT(*) AS n FROM {DECIMALS} GROUP BY d * e) AS s", "shop"),
]


@pytest.mark.parametrize("sql, issuer", DECIMAL_KEYS)
def test_computed_decimal_keys_group_by_their_exact_value(fed, sql, issuer):
    """1.15 * 3.40 = 1.70 * 2.30 = 3.91 exactly; their fixed-point products differ in the last bits."""
    fed.check(sql, issuer)


# -- 3. a SUM of DOUBLEs compared --------------------------------------------------------------------------

ALL_Z = ("(SELECT k, z FROM bank.t UNION ALL SELECT k, z FROM shop.t UNION ALL SELECT k, z FROM insurer.t) AS u")
# 69 rows of 0.1: DuckDB's sum is 6.9 (to 1e-15), the SPU's 69 * 6554 / 2^16 = 6.90042, 27.6 units above


@pytest.mark.parametrize("sql", [
    f"SELECT COUNT(*) AS n FROM {ALL_Z} HAVING SUM(z) > 6.9001",
    f"SELECT CASE WHEN SUM(z) > 6.9001 THEN 1 ELSE 0 END AS above FROM {ALL_Z}",
    f"SELECT CASE WHEN SUM(z) * 2 > 13.8002 THEN 1 ELSE 0 END AS above FROM {ALL_Z}",
])
def test_a_sum_of_doubles_within_its_summed_error_is_refused(fed, sql):
    """Before: answered as if 6.9 > 6.9001 (the 4-unit guard let a 21-unit gap through)."""
    with pytest.raises(DataError, match="within their error"):
        fed.engine.execute(sql, "insurer")


@pytest.mark.parametrize("sql", [
    f"SELECT COUNT(*) AS n FROM {ALL_Z} HAVING SUM(z) > 6.95",
    f"SELECT CASE WHEN SUM(z) > 6.899 THEN 1 ELSE 0 END AS above FROM {ALL_Z}",
])
def test_a_sum_of_doubles_clear_of_its_error_answers_as_duckdb(fed, sql):
    fed.check(sql, "insurer")


def test_a_sum_of_doubles_compared_in_a_later_step_is_refused_at_plan_time(fed, assert_refused):
    """The secret program's HAVING is a later step, where the summed bound is gone: refused, naming the SUM
    as written (before: answered 3 groups where DuckDB has none)."""
    sql = f"SELECT COUNT(*) AS n FROM (SELECT k, SUM(z) AS s FROM {ALL_Z} GROUP BY k HAVING SUM(z) > 2.3001) AS t"
    assert "__" not in str(assert_refused(fed.engine, sql, "insurer", NotSupportedError, "SUM(z) > 2.3001"))


# -- 5. refusals name what the user wrote ------------------------------------------------------------------

@pytest.mark.parametrize("sql, named", [
    (f"SELECT COUNT(*) AS n FROM (SELECT k FROM {ALL_Z} GROUP BY k HAVING ASIN(SUM(z)) > 0.3) AS t",
     "ASIN(SUM(z)) > 0.3"),
    (f"SELECT COUNT(*) AS n FROM (SELECT k, AVG(z / k) AS a FROM {ALL_Z} GROUP BY k) AS t WHERE ROUND(a, 2) > 0.3",
     "ROUND(AVG(z / k), 2)"),
    (f"SELECT COUNT(*) AS n FROM (SELECT k, MAX(z) AS m FROM {ALL_Z} GROUP BY k HAVING COUNT(DISTINCT z) > 1) AS t",
     "z"),
])
def test_refusals_name_the_users_expression_not_an_internal_alias(fed, assert_refused, sql, named):
    message = str(assert_refused(fed.engine, sql, "insurer", NotSupportedError, named))
    assert "__" not in message and "secret program: root" not in message, message
