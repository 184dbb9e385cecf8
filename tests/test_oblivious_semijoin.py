"""IN / EXISTS / NOT IN / NOT EXISTS across parties whose keys are not granted PLAINTEXT_AFTER_JOIN (issue 16;
SCQL's two_parties/149, 150): an oblivious semi- or anti-join on the SPU (`secret_relation.semi_join`), where no
party learns which rows match, in place of the PSI semi-join, which would show its parties which keys match.

Checked against plain DuckDB over all parties' data: 2 and 3 parties (the issuer a third party too), NULL keys on
both sides, duplicate keys, empty sides, NOT IN with a NULL among the subquery's values, text keys; `check`,
EXPLAIN and execution agree; the PSI stays the plan where the grants allow it (it is cheaper); and where the
issuer may not learn the comparison, the query is refused naming the column."""

import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import PolicyViolation
from sqlsecure.planner.physical import EquiJoin, SecretQuery

PARTIES = ("bank", "shop", "insurer")


def tables(empty: str | None = None) -> dict:
    """customers' x and the shop's and insurer's codes: small domains (duplicates), NULLs on every side."""
    customers = pa.table({"id": pa.array(range(1, 13), pa.int64()),
                          "x": pa.array([7, -3, 5, None, 1, 2, 8, 9, 7, 4, None, 5], pa.int64()),
                          "tag": pa.array(["a", "b", "c", None, "a", "d", "b", "e", "c", "a", "f", None])})
    orders = pa.table({"code": pa.array([7, -3, 1, 2, 5, 7, 4, 12, 7], pa.int32()),
                       "tag": pa.array(["a", "b", "zz", "b", None, "c", "a", "q", "a"])})
    policies = pa.table({"code": pa.array([8, None, 1, 1, 30], pa.int64()),
                         "tag": pa.array(["e", "a", None, "x", "y"])})
    out = {"bank": {"customers": customers}, "shop": {"orders": orders}, "insurer": {"policies": policies}}
    if empty is not None:
        (name, table), = out[empty].items()
        out[empty] = {name: table.slice(0, 0)}
    return out


def grants(grants_for, join: bool = False) -> str:
    """Every key and tag compared only (PLAINTEXT_AFTER_COMPARE) by every other party; customers' ids plain.
    `join`: the keys PLAINTEXT_AFTER_JOIN too (then the PSI semi-join may run)."""
    compared = ("bank.customers.x", "bank.customers.tag", "shop.orders.code", "shop.orders.tag",
                "insurer.policies.code", "insurer.policies.tag")
    sections = []
    for viewer in PARTIES:
        theirs = tuple(c for c in compared if not c.startswith(viewer + "."))
        sections.append((viewer, theirs, "PLAINTEXT_AFTER_JOIN" if join else "PLAINTEXT_AFTER_COMPARE"))
        if viewer != "bank":
            sections.append((viewer, ("bank.customers.id",), "PLAINTEXT"))
    return grants_for(*sections)


def engine_of(directory, federation_writer, grants_for, empty: str | None = None, join: bool = False) -> Engine:
    federation_writer(directory, tables(empty), grants(grants_for, join), parties=PARTIES)
    return Engine(directory / "federation.toml", timeout=120)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory, federation_writer, grants_for, oracle_for):
    with engine_of(tmp_path_factory.mktemp("oblivious_semijoin"), federation_writer, grants_for) as engine:
        yield oracle_for(engine)


SHOP = "(SELECT o.code FROM shop.orders o)"
QUERIES = {
    "in": f"SELECT c.id FROM bank.customers c WHERE c.x IN {SHOP}",
    "not_in_no_null": f"SELECT c.id, c.tag FROM bank.customers c WHERE c.x NOT IN {SHOP}",
    "not_in_with_null": "SELECT c.id FROM bank.customers c WHERE c.x NOT IN (SELECT p.code FROM insurer.policies p)",
    "exists": "SELECT c.id FROM bank.customers c WHERE EXISTS (SELECT 1 FROM shop.orders o WHERE o.code = c.x)",
    "not_exists": "SELECT c.id FROM bank.customers c WHERE NOT EXISTS (SELECT 1 FROM insurer.policies p "
                  "WHERE p.code = c.x)",
    "text_keys": "SELECT c.id FROM bank.customers c WHERE c.tag IN (SELECT o.tag FROM shop.orders o)",
    "text_not_in": "SELECT c.id FROM bank.customers c WHERE c.tag NOT IN (SELECT p.tag FROM insurer.policies p)",
    "three_parties": f"SELECT c.id FROM bank.customers c WHERE c.x IN {SHOP} AND c.x NOT IN "
                     "(SELECT p.code FROM insurer.policies p WHERE p.code IS NOT NULL)",
    "beside_own_filter": f"SELECT c.id FROM bank.customers c WHERE c.x IN {SHOP} AND c.id > 3",
}


@pytest.mark.parametrize("name", QUERIES)
def test_answered_obliviously_as_duckdb_answers(oracle, name):
    sql = QUERIES[name]
    engine = oracle.engine
    assert engine.check(sql, "bank") is None
    plan = engine.plan(sql, "bank")
    assert not any(isinstance(step, EquiJoin) for step in plan.physical.steps)  # no PSI: no key is shown
    assert any(isinstance(step, SecretQuery) for step in plan.physical.steps)
    assert "no party learns which rows match" in plan.explain()
    oracle.check(sql, "bank")


@pytest.mark.parametrize("empty", ["bank", "insurer"])  # the shop's tables are CSV: an empty one has no types
def test_empty_sides(tmp_path, federation_writer, grants_for, oracle_for, empty):
    """An empty outer side keeps nothing; an empty subquery keeps no row for IN and EXISTS, every row for
    NOT IN (NULL keys too) and NOT EXISTS."""
    with engine_of(tmp_path, federation_writer, grants_for, empty) as engine:
        for name in ("not_in_with_null", "not_exists", "text_not_in", "three_parties"):
            assert engine.check(QUERIES[name], "bank") is None
            oracle_for(engine).check(QUERIES[name], "bank")


def test_issued_by_a_third_party(oracle):
    """The insurer asks which of the bank's customers the shop knows: neither key is its own."""
    sql = f"SELECT c.id FROM bank.customers c WHERE c.x IN {SHOP}"
    assert oracle.engine.check(sql, "insurer") is None
    oracle.check(sql, "insurer")


def test_explain_names_not_in_rule(oracle):
    text = oracle.engine.plan(QUERIES["not_in_with_null"], "bank").explain()
    assert "oblivious anti-join (NOT IN: no row where the subquery holds a NULL" in text


def test_psi_where_the_keys_may_be_joined(tmp_path, federation_writer, grants_for, oracle_for):
    """With PLAINTEXT_AFTER_JOIN keys the PSI semi-join (cheaper) stays the plan, and answers the same."""
    with engine_of(tmp_path, federation_writer, grants_for, join=True) as engine:
        plan = engine.plan(QUERIES["in"], "bank").physical
        assert any(isinstance(step, EquiJoin) and step.mode == "semi" for step in plan.steps)
        oracle_for(engine).check(QUERIES["in"], "bank")


def test_refused_where_the_issuer_may_not_learn_the_comparison(tmp_path, federation_writer, grants_for,
                                                                assert_refused):
    """The oblivious semi-join hides the matches from the compute parties, not from the result: the issuer
    still needs the subquery's key PLAINTEXT_AFTER_COMPARE (or _AFTER_JOIN), as SCQL's column control says."""
    sections = [("bank", ("shop.orders.tag",), "PLAINTEXT_AFTER_COMPARE"),
                ("shop", ("bank.customers.x",), "PLAINTEXT_AFTER_COMPARE")]  # shop.orders.code: ENCRYPTED_ONLY
    federation_writer(tmp_path, tables(), grants_for(*sections), parties=PARTIES)
    with Engine(tmp_path / "federation.toml", timeout=120) as engine:
        for sql in (QUERIES["in"], QUERIES["exists"], QUERIES["not_in_no_null"]):
            assert_refused(engine, sql, "bank", PolicyViolation, "shop.orders.code")
