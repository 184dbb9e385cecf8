"""What the s13 hunt (tests/test_property_s13.py: composed shapes over unions, joins and derived tables)
found, each as a minimal reproduction checked against the oracle, with `check` beside it."""

from __future__ import annotations

import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import Error

PARTIES = ("bank", "shop", "insurer")


def keyed_parties() -> dict[str, dict[str, pa.Table]]:
    """Each party's k and j with a NULL and a 2 (NULLIF(k, 2) is NULL on both, over another value under the NULL)."""
    def table(k, i):
        return pa.table({"k": pa.array(k, pa.int64()), "i": pa.array(i, pa.int64()), "j": pa.array(k, pa.int64())})
    return {"bank": {"t": table([1, 2, None, 3], [1, 2, 3, 4])}, "shop": {"t": table([2, None, 3, 3], [5, 6, 7, 8])},
            "insurer": {"t": table([4], [9])}}


@pytest.fixture(scope="module")
def keys_oracle(tmp_path_factory, federation_writer, grants_for, oracle_for):
    """k PLAINTEXT_AFTER_GROUP_BY, i PLAINTEXT_AFTER_AGGREGATE to the others, j PLAINTEXT: on the SPU, no
    threshold."""
    grants = grants_for(*((p, (f"{o}.t.k",), "PLAINTEXT_AFTER_GROUP_BY") for o in PARTIES for p in PARTIES if p != o),
                        *((p, (f"{o}.t.i",), "PLAINTEXT_AFTER_AGGREGATE") for o in PARTIES for p in PARTIES if p != o),
                        *((p, (f"{o}.t.j",), "PLAINTEXT") for o in PARTIES for p in PARTIES if p != o))
    path = federation_writer(tmp_path_factory.mktemp("hunt-s13-keys"), keyed_parties(), grants, parties=PARTIES,
                             min_group_size=0)
    with Engine(path) as engine:
        yield oracle_for(engine)


UNION = "(SELECT k, i FROM bank.t UNION ALL SELECT k, i FROM shop.t)"


@pytest.mark.parametrize("sql", [
    f"SELECT NULLIF(u.k, 2) AS g FROM {UNION} u GROUP BY 1",  # DISTINCT's plan (DISTINCT: not a GROUP BY's grant)
    f"SELECT NULLIF(u.k, 2) AS g, COUNT(*) AS n, SUM(u.i) AS s FROM {UNION} u GROUP BY 1",
])
def test_a_group_key_null_over_another_value_is_one_group(keys_oracle, sql):
    """Wrong answer: the SPU stage over a UNION ALL grouped (and DISTINCT sorted) on a key expression's
    limbs, and NULLIF(k, 2) leaves the 2 under its NULL, so NULLs over 0 and over 2 were two groups
    (`SELECT DISTINCT NULLIF(x.k, 2) FROM allt x` returned NULL twice). Now group and window keys have
    their limbs zeroed under a NULL first (`stage.canonical`), as the secret relation's operators did."""
    assert keys_oracle.engine.check(sql, "bank") is None
    assert "SPU" in keys_oracle.engine.explain(sql, "bank")
    got = keys_oracle.check(sql, "bank")
    assert got.column(0).null_count == 1


def test_a_sort_key_null_over_another_value_ties_with_the_other_nulls(keys_oracle):
    """Wrong answer: ORDER BY NULLIF(j, 2) NULLS FIRST, i LIMIT 3 over a UNION ALL sorted the NULLs by the
    value under them (a NULL over 2 after a NULL over 0), so the LIMIT kept rows the later key ranks
    after others. Now the stage's ORDER BY keys are canonical too."""
    sql = f"SELECT NULLIF(u.j, 2) AS g, u.j AS j FROM (SELECT j, i FROM bank.t UNION ALL SELECT j, i FROM shop.t) u " \
          "ORDER BY g NULLS FIRST, j DESC NULLS LAST LIMIT 3"
    assert keys_oracle.engine.check(sql, "bank") is None
    assert "SPU" in keys_oracle.engine.explain(sql, "bank")
    assert keys_oracle.check(sql, "bank").column("j").to_pylist() == [2, 2, None]


@pytest.fixture(scope="module")
def semi_join_engine(tmp_path_factory, federation_writer, grants_for):
    """bank.t keys 1, 1, 2, 3, 5; shop.t keys 1, 2, 2, 4 PLAINTEXT_AFTER_JOIN to bank; a threshold of 4."""
    tables = {"bank": {"t": pa.table({"k": pa.array([1, 1, 2, 3, 5], pa.int64())})},
              "shop": {"t": pa.table({"k": pa.array([1, 2, 2, 4], pa.int64())})}}
    path = federation_writer(tmp_path_factory.mktemp("hunt-s13-semi"), tables,
                             grants_for(("bank", ("shop.t.k",), "PLAINTEXT_AFTER_JOIN")), parties=("bank", "shop"),
                             min_group_size=4)
    with Engine(path) as engine:
        yield engine


@pytest.mark.parametrize("sql", [
    "SELECT x.k AS g, COUNT(*) AS n FROM bank.t x WHERE EXISTS (SELECT 1 FROM shop.t y WHERE y.k = x.k) GROUP BY x.k",
    "SELECT x.k AS g, COUNT(*) AS n FROM bank.t x WHERE x.k NOT IN (SELECT y.k FROM shop.t y) GROUP BY x.k",
    "SELECT COUNT(*) AS n FROM bank.t x WHERE NOT EXISTS (SELECT 1 FROM shop.t y WHERE y.k = x.k)",
])
def test_an_aggregate_of_the_issuers_rows_a_semi_join_filters_keeps_the_threshold_explain_states(
        semi_join_engine, oracle_for, sql):
    """check / EXPLAIN / execution disagreed: EXPLAIN and the result's notice said "groups with fewer than 4
    rows are not revealed", and the plan computed at the issuer after a PSI semi- or anti-join revealed
    groups of 1 and 2 rows (no other owner's rows reach them, so it counted none), where the same query
    computed at the issuer in plaintext (planner/gather.py), on the SPU or on HE counts rows when no owner's
    rows are counted. Now the PSI path counts rows too (place_local.output_steps)."""
    assert semi_join_engine.check(sql, "bank") is None
    assert "groups with fewer than 4 rows are not revealed" in semi_join_engine.explain(sql, "bank")
    assert oracle_for(semi_join_engine).check(sql, "bank").num_rows == 0


@pytest.fixture(scope="module")
def mixed_oracle(tmp_path_factory, federation_writer, grants_for):
    """s12's typed tables and view `allt` under the hunter's grants mix_b (k, s PLAINTEXT; i REVEAL_RANK; f
    PLAINTEXT_AFTER_COMPARE; d PLAINTEXT_AFTER_AGGREGATE; ...), no threshold."""
    from tests.test_property_s12 import FEDERATION, VIEWS, ViewOracle
    from tests.test_property_s13 import grants_of
    path = federation_writer(tmp_path_factory.mktemp("hunt-s13-mixed"), FEDERATION,
                             grants_of("mix_b", grants_for) + VIEWS, parties=PARTIES, min_group_size=0)
    with Engine(path) as engine:
        yield ViewOracle(engine)


WIDE = "(SELECT k, i, f, s FROM bank.t UNION ALL SELECT k, i, f, s FROM shop.t)"


@pytest.mark.parametrize("sql", [
    "SELECT u.k AS o0, LAG(u.k) OVER (PARTITION BY u.s ORDER BY u.k) AS w FROM allt u",
    "SELECT q.o0, COUNT(q.w) AS n FROM (SELECT u.k AS o0, LEAD(u.s) OVER (PARTITION BY u.k ORDER BY u.s) AS w "
    f"FROM {WIDE} u) q GROUP BY q.o0",
    f"SELECT q.o0, q.w FROM (SELECT u.k AS o0, FIRST_VALUE(u.s) OVER (PARTITION BY u.k ORDER BY u.s) AS w FROM {WIDE} u) q",
])
def test_a_window_of_plaintext_columns_over_a_wider_union_is_gathered(mixed_oracle, sql):
    """Refused though answerable: every column the query uses is PLAINTEXT to the issuer, but the union (the
    view, or a derived table) also selects columns that are not, and the gather placement counted every
    column a branch selects as read. Now the columns no outer level uses are pruned first (sqlglot's
    pushdown_projections), so only k and s cross, and the issuer computes the window."""
    assert mixed_oracle.engine.check(sql, "insurer") is None
    assert "computed at insurer in plaintext" in mixed_oracle.engine.explain(sql, "insurer")
    mixed_oracle.check(sql, "insurer")


@pytest.fixture(scope="module")
def window_oracle(tmp_path_factory, federation_writer, grants_for):
    """bank's and shop's typed rows (s12's tables), k and b PLAINTEXT to the others, every other column
    PLAINTEXT_AFTER_AGGREGATE: a window of it stays secret, an aggregate of the window is revealed."""
    from tests.test_property_s12 import FEDERATION, VIEWS, ViewOracle
    plain = {"k", "b"}
    grants = grants_for(*((p, (f"{o}.t.{c}",), "PLAINTEXT" if c in plain else "PLAINTEXT_AFTER_AGGREGATE")
                          for o in PARTIES for c in ("k", "i", "f", "d", "s", "dt", "ts", "b")
                          for p in PARTIES if p != o))
    path = federation_writer(tmp_path_factory.mktemp("hunt-s13-windows"), FEDERATION, grants + VIEWS,
                             parties=PARTIES, min_group_size=0)
    with Engine(path) as engine:
        yield ViewOracle(engine)


ARGUMENTS = {"d": "DECIMAL", "f": "DOUBLE", "i": "INT", "dt": "DATE", "s": "text"}
OUTER = {"d": "SUM", "f": "SUM", "i": "SUM", "dt": "MAX", "s": "COUNT"}  # an aggregate of the window, revealed


def window_query(func: str, column: str) -> str:
    """func over the union of the issuer's and bank's rows (Parquet: shop's CSV holds no DECIMAL), partitioned
    by b and ordered by k (peers alike), in a derived table the issuer's outer GROUP BY aggregates."""
    outer = OUTER[column] if func in ("MIN", "MAX") else "SUM" if func in ("SUM", "AVG") and column != "s" else "COUNT"
    call = f"{func}()" if func in ("ROW_NUMBER", "RANK", "DENSE_RANK", "PERCENT_RANK", "CUME_DIST") else \
        f"{func}(u.{column})"
    return f"SELECT q.g AS g, {outer}(q.w) AS m, COUNT(*) AS c FROM (SELECT u.b AS g, {call} OVER " \
           f"(PARTITION BY u.b ORDER BY u.k) AS w FROM (SELECT k, b, {column} FROM insurer.t UNION ALL " \
           f"SELECT k, b, {column} FROM bank.t) u) q GROUP BY q.g"


@pytest.mark.parametrize("func", ["COUNT", "SUM", "MIN", "MAX", "AVG"])
@pytest.mark.parametrize("column", list(ARGUMENTS), ids=list(ARGUMENTS.values()))
def test_a_window_aggregate_in_the_secret_program_of_every_kind(window_oracle, func, column):
    """check accepted, execution failed with a ProtocolError: MAX(d) OVER (...) of a DECIMAL came back in
    fixed point where the program declares the DECIMAL (the approximation analysis hung the window's argument
    under an anonymous call, and the evaluator keeps a DECIMAL exact only under SUM / MIN / MAX ...). Now
    the argument is evaluated under a copy of its own call (`secret_relation._window_arg`). Every kind:
    answered as DuckDB answers, or refused by `check` and execution alike, naming the window."""
    sql, engine = window_query(func, column), window_oracle.engine
    verdict = engine.check(sql, "insurer")
    if verdict is not None:  # SUM / AVG of a DATE or text (DuckDB has none), MIN / MAX of text on the SPU
        assert (func, column) in {("SUM", "dt"), ("AVG", "dt"), ("SUM", "s"), ("AVG", "s"), ("MIN", "s"),
                                  ("MAX", "s")}, verdict
        assert (func if func != "AVG" else "SUM") in verdict, verdict  # AVG is planned as SUM / COUNT OVER
        with pytest.raises(Error) as refused:
            engine.execute(sql, "insurer")
        assert f"{type(refused.value).__name__}: {refused.value}" == verdict
        return
    assert "secret program" in engine.explain(sql, "insurer") or "SPU" in engine.explain(sql, "insurer")
    window_oracle.check(sql, "insurer")


@pytest.mark.parametrize("func", ["ROW_NUMBER", "RANK", "DENSE_RANK", "PERCENT_RANK", "CUME_DIST"])
def test_a_ranking_window_in_the_secret_program(window_oracle, func):
    """The rankings (no argument) in the same shape, for the table's completeness."""
    window_oracle.check(window_query(func, "d"), "insurer")


@pytest.mark.parametrize("func", ["LAG", "LEAD", "FIRST_VALUE", "LAST_VALUE"])
@pytest.mark.parametrize("column", list(ARGUMENTS), ids=list(ARGUMENTS.values()))
def test_a_window_of_a_row_value_on_secret_data_is_refused_by_name(window_oracle, assert_refused, func, column):
    """A window that returns another row's value has no secure implementation: refused at plan time,
    naming it, `check` agreeing (it would reveal a PLAINTEXT_AFTER_AGGREGATE value by row, anyway)."""
    sql = window_query(func, column)
    with pytest.raises(Error) as refused:
        window_oracle.engine.plan(sql, "insurer")
    assert func in str(refused.value).upper()
    assert window_oracle.engine.check(sql, "insurer") == f"{type(refused.value).__name__}: {refused.value}"


def test_the_hunters_windowed_max_of_a_decimal_summed(mixed_oracle):
    """The find as the hunter drew it (mix_b: d PLAINTEXT_AFTER_AGGREGATE to insurer, no threshold)."""
    sql = "SELECT q.o0 AS o0, SUM(q.w) AS n FROM (SELECT u.k AS o0, MAX(u.d) OVER (PARTITION BY u.k) AS w FROM " \
          "(SELECT k, d FROM insurer.t UNION ALL SELECT k, d FROM bank.t) u) q GROUP BY q.o0"
    assert mixed_oracle.engine.check(sql, "insurer") is None
    mixed_oracle.check(sql, "insurer")
