"""A filter over a grouped derived table or CTE is a HAVING (planner/filter_as_having.py, issue 16):
Secrecy's credit-score shape over a UNION ALL of parties, answered under `placement = "always"` (the
enclave; refused before as "derived table reads several parties") and under the cost placement (the
SPU, no enclave), against plain DuckDB over the query as written: 2 and 3 parties, NULL keys and
values, groups below the threshold, a HAVING already inside, nesting, a CTE, ORDER BY / LIMIT moved up,
renamed columns; `check` agrees with execution. The rewrite itself on fixtures, what it leaves as
written, and that the grants still bind the query as written."""

from __future__ import annotations

import pytest
import sqlglot

from sqlsecure.engine import Engine
from sqlsecure.errors import PolicyViolation
from sqlsecure.planner.filter_as_having import filter_as_having
from sqlsecure.planner.views import expand_views
from tests.conftest import BANK_DP, all_plaintext, grants_toml, same_multiset, sorted_rows, write_federation
from tests.test_enclave_queries import enclave_section
from tests.test_enclave_unions import PARTIES, TWO, VIEW, tables

CREDIT = ("SELECT s.k FROM (SELECT k, MIN(amt) AS lo, MAX(amt) AS hi FROM allv WHERE id < 6 GROUP BY k) AS s "
          "WHERE s.hi - s.lo > 1")
QUERIES = [
    CREDIT,  # 3 parties (and an empty branch)
    "SELECT s.id, s.c FROM (SELECT id, COUNT(*) AS c, SUM(amt) AS t FROM two GROUP BY id HAVING COUNT(*) > 1) s "
    "WHERE s.t > 0 OR s.t IS NULL",  # 2 parties, a HAVING inside
    "SELECT s.k, s.n FROM (SELECT k, COUNT(*) AS n FROM allv GROUP BY k) s WHERE s.k IS NULL OR s.k > 0",
    "SELECT u.k, u.spread FROM (SELECT s.k, s.hi - s.lo AS spread FROM (SELECT k, MIN(amt) AS lo, MAX(amt) AS hi "
    "FROM allv GROUP BY k) s WHERE s.hi IS NOT NULL) u WHERE u.spread >= 0",  # nested twice
    "WITH g AS (SELECT label, COUNT(*) AS n, MAX(k) AS mk FROM allv GROUP BY label) "
    "SELECT g.label, g.n FROM g WHERE g.mk = 2 OR g.label IS NULL",  # a CTE, NULL label group
    "SELECT s.id, s.c FROM (SELECT id, COUNT(*) AS c FROM allv GROUP BY id) s WHERE s.c > 2 "
    "ORDER BY s.c DESC, s.id LIMIT 3",  # ORDER BY / LIMIT move up
    "SELECT s.x FROM (SELECT k, MAX(amt) FROM two GROUP BY k) AS s(x, m) WHERE s.m > 0",  # renamed columns
]
# The oracle's threshold (tests/conftest.py, Provenance) does not read `AS s(x, m)`: the same query, named inside
SAME_AS = {QUERIES[-1]: "SELECT s.x FROM (SELECT k AS x, MAX(amt) AS m FROM two GROUP BY k) AS s WHERE s.m > 0"}


def federation(directory, min_group_size: int, placement: str):
    """The enclave tests' parties and views; "always": the enclave, "cost": no enclave (the SPU)."""
    enclave = enclave_section(directory).replace("[enclave]\n", '[enclave]\nplacement = "always"\n') \
        if placement == "always" else ""
    views = f'[views]\nallv = "{VIEW}"\ntwo = "{TWO}"\n\n'
    grants = "\n".join(grants_toml((p, tuple(f"{o}.*.*" for o in PARTIES if o != p), "PLAINTEXT"))
                       for p in PARTIES)
    return write_federation(directory, tables(), views + grants + enclave, parties=PARTIES,
                            min_group_size=min_group_size)


@pytest.fixture(scope="module", params=[("always", 0), ("always", 3), ("cost", 3)],
                ids=["enclave", "enclave-threshold-3", "spu-threshold-3"])
def oracle(request, tmp_path_factory, oracle_for):
    placement, k = request.param
    with Engine(federation(tmp_path_factory.mktemp("having"), k, placement)) as engine:
        checked = oracle_for(engine)
        checked.placement = placement
        yield checked


@pytest.mark.parametrize("sql", QUERIES)
def test_a_filter_over_groups_matches_duckdb(oracle, sql):
    engine = oracle.engine
    assert engine.check(sql, "bank") is None
    text = engine.explain(sql, "bank")
    assert ("TEEU(enclave" in text and "SPU(" not in text) if oracle.placement == "always" else "SPU(" in text, text
    got = engine.execute(sql, "bank").table
    plain = expand_views(sqlglot.parse_one(SAME_AS.get(sql, sql), read="duckdb"), engine.config.views).sql("duckdb")
    want = oracle.expected(plain, "bank")
    assert same_multiset(got, want), f"{sql}\n got: {sorted_rows(got)}\nwant: {sorted_rows(want)}"


# -- the rewrite on fixtures ----------------------------------------------------------------------------
MERGED = [
    ("SELECT s.id FROM (SELECT t.id AS id, MIN(t.cs) AS lo, MAX(t.cs) AS hi FROM t GROUP BY t.id) AS s "
     "WHERE s.hi - s.lo > 100",
     'SELECT t.id AS "id" FROM t GROUP BY t.id HAVING MAX(t.cs) - MIN(t.cs) > 100'),
    ("SELECT s.id AS id FROM (SELECT t.id AS id, MAX(t.x) - MIN(t.x) AS d FROM t GROUP BY t.id) AS s "
     "WHERE s.d * 2 > 3 AND s.d IS NOT NULL",  # precedence kept
     "SELECT t.id AS id FROM t GROUP BY t.id HAVING (MAX(t.x) - MIN(t.x)) * 2 > 3 AND "
     "NOT (MAX(t.x) - MIN(t.x)) IS NULL"),
    ("SELECT s.id AS i FROM (SELECT t.id AS id, COUNT(*) AS c FROM t GROUP BY t.id HAVING COUNT(*) > 1) AS s "
     "WHERE s.c < 9 ORDER BY s.c LIMIT 2",
     "SELECT t.id AS i FROM t GROUP BY t.id HAVING COUNT(*) > 1 AND COUNT(*) < 9 ORDER BY COUNT(*) LIMIT 2"),
    ("WITH w AS (SELECT t.id AS id, SUM(t.x) AS s FROM t GROUP BY t.id), v AS (SELECT 1 AS one) "
     "SELECT w.s * 2 AS d FROM w WHERE w.id > 0",
     "WITH v AS (SELECT 1 AS one) SELECT SUM(t.x) * 2 AS d FROM t GROUP BY t.id HAVING t.id > 0"),
]
LEFT_AS_WRITTEN = [
    "SELECT COUNT(*) FROM (SELECT t.id AS id FROM t GROUP BY t.id) AS s",  # an outer aggregate
    "SELECT DISTINCT s.c FROM (SELECT t.id AS id, COUNT(*) AS c FROM t GROUP BY t.id) AS s",  # outer DISTINCT
    "SELECT s.id FROM (SELECT t.id AS id, COUNT(*) AS c FROM t GROUP BY t.id LIMIT 3) AS s WHERE s.c > 1",
    "SELECT s.id FROM (SELECT t.id AS id, RANK() OVER (ORDER BY COUNT(*)) AS r FROM t GROUP BY t.id) AS s "
    "WHERE s.r < 3",  # a window runs after HAVING
    "SELECT s.id FROM (SELECT DISTINCT t.id AS id, COUNT(*) AS c FROM t GROUP BY t.id) AS s",
    "SELECT s.id FROM (SELECT t.id AS id FROM t GROUP BY t.id) AS s JOIN u ON s.id = u.id",  # a join
    "SELECT s.id FROM (SELECT t.id AS id, COUNT(*) AS c FROM t GROUP BY t.id) AS s WHERE s.c > 1"
    " UNION ALL SELECT 1",  # a set operation: its branch merges, not the union
    "WITH w AS (SELECT t.id AS id FROM t GROUP BY t.id) SELECT w.id FROM w WHERE w.id IN (SELECT w.id FROM w)",
    "SELECT s.id FROM (SELECT t.id AS id, MAX(RANDOM()) AS r FROM t GROUP BY t.id) AS s WHERE s.r > 0.5",
    "SELECT s.id FROM (SELECT t.id AS id, SUM(t.x) AS x FROM t GROUP BY ROLLUP (t.id)) AS s WHERE s.x > 1",
    "SELECT s.id FROM (SELECT t.id AS id, t.x AS x FROM t WHERE t.x > 1) AS s WHERE s.x > 2",  # not grouped
]


@pytest.mark.parametrize("written, merged", MERGED)
def test_the_rewrite(written, merged):
    assert filter_as_having(sqlglot.parse_one(written)).sql() == sqlglot.parse_one(merged).sql()


@pytest.mark.parametrize("written", LEFT_AS_WRITTEN)
def test_what_it_leaves_as_written(written):
    tree = sqlglot.parse_one(written)
    rewritten = filter_as_having(tree)
    if "UNION ALL" in written:  # only the branch over groups merges
        assert isinstance(rewritten, sqlglot.exp.Union) and rewritten.left.args.get("having") is not None
    else:
        assert rewritten is tree


# -- the grants bind the query as written ---------------------------------------------------------------
@pytest.mark.parametrize("amt", [None, "PLAINTEXT_AFTER_GROUP_BY", "PLAINTEXT_AFTER_COMPARE",
                                 "PLAINTEXT_AFTER_AGGREGATE"])
def test_a_grant_refusal_stays_a_refusal(tmp_path, amt):
    """Column control judges the query as written and merged by hand alike: both refused, for the same
    column, where amt's grant does not let its aggregates' comparison restrict the output (none, or
    PLAINTEXT_AFTER_GROUP_BY), both answered where it does."""
    sql_merged = "SELECT k FROM allv WHERE id < 6 GROUP BY k HAVING MAX(amt) - MIN(amt) > 1"
    grants = [(p, tuple(f"{o}.t.{c}" for o in PARTIES if o != p for c in ("k", "id")), "PLAINTEXT") for p in PARTIES]
    grants += [(p, tuple(f"{o}.*.amt" for o in PARTIES if o != p), amt) for p in PARTIES if amt]
    path = write_federation(tmp_path, tables(), f'[views]\nallv = "{VIEW}"\n\n' + grants_toml(*grants),
                            parties=PARTIES, min_group_size=1)
    with Engine(path) as engine:
        said = [engine.check(sql, "bank") for sql in (CREDIT, sql_merged)]
        if amt in (None, "PLAINTEXT_AFTER_GROUP_BY"):
            assert all(s and s.startswith("PolicyViolation: bank may not learn shop.t.amt") for s in said), said
            with pytest.raises(PolicyViolation, match="amt"):
                engine.execute(CREDIT, "bank")
        else:
            assert said == [None, None], said


def test_not_merged_under_differential_privacy(tmp_path, make_federation):
    """Under DP the exact filter over the groups is refused as before, naming the query as written (its
    outer SELECT), not a HAVING the user did not write."""
    sql = ("SELECT s.customer_id FROM (SELECT o.customer_id, SUM(o.amount) AS t FROM shop.orders o "
           "GROUP BY o.customer_id) s WHERE s.t > 100")
    with Engine(make_federation(tmp_path, all_plaintext() + BANK_DP)) as engine:
        said = engine.check(sql, "bank")
        assert said.startswith("NotSupportedError") and "HAVING" not in said and '"s"."customer_id"' in said, said
