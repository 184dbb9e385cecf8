"""Issue 17: DOUBLEs on the SPU with the owner's help (planner/owner_values.py).

The SPU holds a DOUBLE in fixed point (2^-16 steps): one party's DOUBLE compared with a constant on shares put
values within 2^-16 of it on either side (3 rows above 1.00001 where DuckDB has 21), and a quotient by a tiny
divisor became NULL or wrong. A sub-expression of one party's columns is now evaluated by that party on its own
rows, exactly, and shared: over a UNION ALL of two parties (each branch's owner) and over a PSI join. Values
exactly on the constant, within 1e-6 and 2^-20 of it, and far from it; NULLs; oracle: plain DuckDB.
"""

import pyarrow as pa
import pytest

from sqlsecure.errors import DataError

C = 1.00001  # 65536.655 units of 2^-16: the values below straddle it by less than one unit
PARTIES = ("bank", "shop", "insurer")
UNION = "(SELECT k, x, y FROM bank.t UNION ALL SELECT k, x, y FROM insurer.t) AS u"
JOIN = "bank.t AS b JOIN shop.s AS s ON b.k = s.k"


def table(offsets) -> pa.Table:
    """x: C + each offset, NULL and two far values; y: tiny (2^-30 j), zero or ordinary divisors."""
    xs = [C + o for o in offsets] + [None, 5.0, -3.0]
    ys = [2.0 ** -30 * (j + 1) if j % 3 == 0 else 0.0 if j % 3 == 1 else 1.5 + j for j in range(len(xs))]
    return pa.table({"k": pa.array([j % 4 for j in range(len(xs))], pa.int64()),
                     "x": pa.array(xs, pa.float64()), "y": pa.array(ys, pa.float64())})


@pytest.fixture(scope="module")
def fed(tmp_path_factory, federation_writer, grants_for, oracle_for):
    from sqlsecure.engine import Engine

    tables = {"bank": {"t": table([j * 2 ** -20 for j in range(-12, 13)] + [1e-6, -1e-6, 1e-7])},
              "insurer": {"t": table([j * 2 ** -18 + 2 ** -21 for j in range(-6, 7)] + [0.0, 1e-6, 2 ** -15])},
              "shop": {"s": pa.table({"k": pa.array([0, 1, 2, 3], pa.int64()),
                                      "v": pa.array([10, 20, 30, 40], pa.int64())})}}
    grants = []
    for owner in PARTIES:
        for party in set(PARTIES) - {owner}:
            values = ("shop.s.v",) if owner == "shop" else (f"{owner}.t.x", f"{owner}.t.y")
            grants += [(party, values, "PLAINTEXT_AFTER_AGGREGATE"),
                       (party, ("shop.s.k" if owner == "shop" else f"{owner}.t.k",), "PLAINTEXT")]
    path = federation_writer(tmp_path_factory.mktemp("doubles_owner"), tables, grants_for(*grants),
                             parties=PARTIES, min_group_size=0)
    with Engine(path, timeout=60) as engine:
        yield oracle_for(engine)


# Each answered wrongly before (fixed-point codes compared on shares), now as DuckDB.
WRONG_BEFORE = [
    f"SELECT SUM(CASE WHEN x > {C} THEN 1 ELSE 0 END) AS a, COUNT(*) AS n FROM {UNION}",
    f"SELECT SUM(CASE WHEN x >= {C} THEN 1 ELSE 0 END) AS a FROM {UNION}",
    f"SELECT SUM(CASE WHEN x = {C} THEN 1 ELSE 0 END) AS a FROM {UNION}",
    f"SELECT COUNT(CASE WHEN x <= {C} THEN 1 END) AS a FROM {UNION}",
    f"SELECT SUM(CASE WHEN x + 0.5 > {C + 0.5} THEN 1 ELSE 0 END) AS a FROM {UNION}",
    f"SELECT k, SUM(CASE WHEN x < {C} THEN 1 ELSE 0 END) AS a FROM {UNION} GROUP BY k",
    f"SELECT k, COUNT(*) AS n FROM {UNION} GROUP BY k HAVING SUM(CASE WHEN x > {C} THEN 1 ELSE 0 END) > 3",
    f"SELECT SUM(x / NULLIF(y, 0)) AS q FROM {UNION}",
    f"SELECT SUM(CASE WHEN x / NULLIF(y, 0) > 1000 THEN 1 ELSE 0 END) AS q FROM {UNION}",
    f"SELECT SUM(CASE WHEN b.x > {C} THEN s.v ELSE 0 END) AS a FROM {JOIN}",
    f"SELECT SUM(CASE WHEN b.x = {C} THEN s.v ELSE 0 END) AS a FROM {JOIN}",
    f"SELECT s.k, SUM(CASE WHEN b.x > {C} THEN 1 ELSE 0 END) AS a FROM {JOIN} GROUP BY s.k",
    f"SELECT SUM(CASE WHEN b.x > {C} AND s.v > 15 THEN 1 ELSE 0 END) AS a FROM {JOIN}",
    # nested shapes: the operator translation's secret program (planner/owner_parts.py)
    f"SELECT SUM(a) AS t FROM (SELECT CASE WHEN b.x > {C} THEN s.v ELSE 0 END AS a FROM {JOIN}) AS q",
    f"SELECT COUNT(*) AS n FROM (SELECT k, SUM(CASE WHEN x > {C} THEN 1 ELSE 0 END) AS a FROM {UNION} "
    "GROUP BY k) AS q WHERE a > 3",
]
RIGHT_BEFORE = [  # far from the constant, owner filters, exact equalities: unchanged
    f"SELECT SUM(CASE WHEN x > 1.5 THEN 1 ELSE 0 END) AS a FROM {UNION}",
    f"SELECT COUNT(*) AS n FROM {UNION} WHERE x > {C}",
    f"SELECT SUM(NULLIF(x, x)) AS q, COUNT(NULLIF(x, x)) AS c FROM {UNION}",
    f"SELECT MIN(x) AS lo, MAX(x) AS hi FROM {UNION}",
    f"SELECT SUM(b.x / NULLIF(b.y, 0)) AS q FROM {JOIN}",
]


@pytest.mark.parametrize("sql", WRONG_BEFORE + RIGHT_BEFORE)
def test_one_partys_double_expression_answers_as_duckdb(fed, sql):
    fed.check(sql, "shop", rel_tol=1e-9)


@pytest.mark.parametrize("sql, party", [
    (f"SELECT SUM(CASE WHEN x > {C} THEN 1 ELSE 0 END) AS a FROM {UNION}", "each branch's owner"),
    (f"SELECT SUM(CASE WHEN b.x > {C} THEN s.v ELSE 0 END) AS a FROM {JOIN}", "bank"),
    (f"SELECT SUM(a) AS t FROM (SELECT CASE WHEN b.x > {C} THEN s.v ELSE 0 END AS a FROM {JOIN}) AS q", "bank"),
])
def test_explain_says_who_evaluates_the_expression(fed, sql, party):
    text = fed.engine.explain(sql, "shop")
    assert f"evaluated by {party} on its own rows, exactly, shared as a secret" in text, text
    assert f"> {C}" in text.split("evaluated by")[1]
    assert fed.engine.check(sql, "shop") is None


def test_a_double_expression_failing_at_its_owner_names_no_value(fed):
    """The owner's DuckDB fails (a text that is no number): its class and the expression, never x's values."""
    sql = f"SELECT SUM(CASE WHEN CAST(CAST(b.x AS VARCHAR) || 'z' AS DOUBLE) > 1 THEN s.v ELSE 0 END) AS a FROM {JOIN}"
    with pytest.raises(DataError) as failed:
        fed.engine.execute(sql, "shop")
    assert "1.0000" not in str(failed.value) and "bank" in str(failed.value)


@pytest.mark.xfail(strict=True, reason="issue 17, left: an aggregate of DOUBLEs compared on shares (MAX(b.x) > C "
                                       "over a join) still compares fixed-point codes; needs an exactness bit")
def test_an_aggregate_of_doubles_compared_on_shares(fed):
    fed.check(f"SELECT s.k, COUNT(*) AS a FROM {JOIN} GROUP BY s.k HAVING MAX(b.x) > {C}", "shop")
