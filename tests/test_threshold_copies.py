"""The group threshold over several copies of one owner's rows (docs/federation.md, "The group threshold
through nested shapes"): a self-join, a CTE read twice, two federation views over one table. Each read of a
protected owner's rows is one input counted on its own (at least k distinct rows of each copy), as the spine
counts each table in FROM; the oracle (tests/conftest.py `Provenance`) follows a CTE through the CTEs it reads,
so it counts the same. Against plain DuckDB over 2 and 3 hospitals, min_group_size 2."""

import contextlib

import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import PolicyViolation
from tests.conftest import same_multiset, sorted_rows
from tests.test_attacks_s10 import fed  # noqa: F401  (a module fixture, reused)
from tests.test_translate import COMPARED, HOSPITALS, hospital_federation, union_of  # noqa: F401 (a fixture)

D3, D2 = union_of("diagnosis", "pid, diag, time"), union_of("diagnosis", "pid, diag, time", HOSPITALS[:2])
VIEWS = {"visits": union_of("diagnosis", "pid, time"), "diags": union_of("diagnosis", "pid, diag")}


def rcdiff(d: str, select: str = "COUNT(*) AS n", group: str = "") -> str:
    """Secrecy's recurrent C. diff, counted: a patient's consecutive C. diff diagnoses within 60 days."""
    return (f"WITH d AS ({d}), r AS (SELECT pid, time, ROW_NUMBER() OVER (PARTITION BY pid ORDER BY time) AS rn "
            f"FROM d WHERE diag = 'cdiff') SELECT {select} FROM r r1 JOIN r r2 "
            f"ON r1.pid = r2.pid AND r2.rn = r1.rn + 1 WHERE r2.time - r1.time <= 60{group}")


@pytest.fixture(scope="module")
def oracles(hospital_federation, oracle_for):
    """{n: oracle}: the hospitals (with the views `visits` and `diags`) of n rows per table."""
    with contextlib.ExitStack() as stack:
        out = {}
        for n in (16, 40):
            path = hospital_federation(COMPARED, n=n)
            views = "\n".join(f'{name} = "{body}"' for name, body in VIEWS.items())
            path.write_text(path.read_text().replace("[parties.h1]", f"[views]\n{views}\n\n[parties.h1]", 1))
            out[n] = oracle_for(stack.enter_context(Engine(path, timeout=120)))
        yield out


COPIES = {
    "recurrent C. diff counted, 3 parties": rcdiff(D3),
    "recurrent C. diff counted, 2 parties": rcdiff(D2),
    "recurrent C. diff per patient": rcdiff(D3, "r1.pid, COUNT(*) AS n", " GROUP BY r1.pid"),
    "a UNION ALL joined with itself": f"SELECT a.pid, COUNT(*) AS n FROM ({D2}) a JOIN ({D2}) b "
                                      "ON a.pid = b.pid AND a.time < b.time GROUP BY a.pid",
    "a self-join at one protected owner": "SELECT a.pid, COUNT(*) AS n FROM h2.diagnosis a JOIN h2.diagnosis b "
                                          "ON a.pid = b.pid GROUP BY a.pid",
}
TWO_VIEWS = "SELECT d.pid, COUNT(*) AS n FROM {visits} v JOIN {diags} d ON v.pid = d.pid WHERE v.time < 50 GROUP BY d.pid"


@pytest.mark.parametrize("n", [16, 40])
@pytest.mark.parametrize("name", COPIES)
def test_each_copy_of_an_owners_rows_is_counted_on_its_own(oracles, name, n):
    oracles[n].check(COPIES[name], "h1")


def test_the_oracle_counts_each_copy_through_a_cte_of_a_cte(oracles):
    """The C. diff count's CTE `r` reads the CTE `d`: the oracle's threshold counts each copy's rows of each
    protected hospital (h2, h3), not the joined rows."""
    from tests.conftest import Provenance
    import sqlglot
    tree, _ = Provenance("h1", 2).query(sqlglot.parse_one(rcdiff(D3)), False, {})
    having = tree.args["having"].sql()
    assert having.count("COUNT(DISTINCT") == 4, having  # 2 protected hospitals x 2 copies


@pytest.mark.parametrize("n", [16, 40])
def test_two_views_over_one_table_count_each_view(oracles, n):
    got = oracles[n].engine.execute(TWO_VIEWS.format(visits="visits", diags="diags"), "h1").table
    want = oracles[n].expected(TWO_VIEWS.format(**{name: f"({body})" for name, body in VIEWS.items()}), "h1")
    assert same_multiset(got, want), (sorted_rows(got), sorted_rows(want))


def test_a_protected_owners_table_joined_twice_across_parties(fed, oracle_for):
    """The bank joins the shop's orders twice (k = 4): each copy's rows counted, as DuckDB's oracle counts."""
    oracle_for(fed).check("SELECT c.region, COUNT(*) AS n FROM bank.customers c JOIN shop.orders o1 "
                          "ON c.id = o1.customer_id JOIN shop.orders o2 ON o2.customer_id = c.id GROUP BY c.region",
                          "bank")


def test_a_protected_owners_table_repeated_by_its_own_union_is_refused(fed, assert_refused):
    """The shop's own UNION ALL of its orders repeats each row before the threshold could count it."""
    sql = ("SELECT c.region, COUNT(*) AS n FROM bank.customers c JOIN (SELECT customer_id FROM shop.orders UNION ALL "
           "SELECT customer_id FROM shop.orders) o ON c.id = o.customer_id GROUP BY c.region")
    assert_refused(fed, sql, "bank", PolicyViolation, "repeat")
