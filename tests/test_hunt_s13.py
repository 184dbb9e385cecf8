"""What the s13 hunt (tests/test_property_s13.py: composed shapes over unions, joins and derived tables)
found, each as a minimal reproduction checked against the oracle, with `check` beside it."""

from __future__ import annotations

import pyarrow as pa
import pytest

from sqlsecure.engine import Engine

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
