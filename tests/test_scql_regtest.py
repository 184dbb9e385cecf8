"""SCQL's regression queries (bench/scql_regtest.py), a fixed sample of them: each is refused at plan time
with a PEP 249 refusal (ProgrammingError, NotSupportedError or DataError), or answered exactly as plain
DuckDB answers it; never a wrong answer, never an InternalError; and `check` agrees with execution."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from sqlsecure.engine import Engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import scql_regtest  # noqa: E402

QUERIES = scql_regtest.load_queries()
SAMPLE = sorted(random.Random(16).sample(sorted(QUERIES), 40))  # derandomized: the same 40 every run


@pytest.fixture(scope="module")
def scql_federation(tmp_path_factory):
    """SCQL's tables at alice, bob and carol (40 rows each) under SCQL's CCL, and the oracle over them."""
    with Engine(scql_regtest.write_federation(tmp_path_factory.mktemp("scql"), rows=40), timeout=120) as engine:
        yield engine, scql_regtest.Oracle(engine)


@pytest.mark.parametrize("case", SAMPLE)
def test_scql_query_refused_or_equal_to_oracle(scql_federation, case):
    engine, oracle = scql_federation
    sql = QUERIES[case]
    verdict = engine.check(sql, scql_regtest.ISSUER)
    outcome = scql_regtest.run_query(engine, oracle, sql)
    assert outcome.kind in ("equal", "refused"), f"{case}: {outcome.kind}: {outcome.detail}\n{sql}"
    assert (verdict is not None) == (outcome.kind == "refused"), \
        f"{case}: check says {verdict!r}, execution {outcome.kind}: {outcome.detail}"


def test_scql_levels_per_party():
    """One level for every other party, or one per party in the order alice, bob, carol (tbl_3)."""
    assert scql_regtest.column_level("joinpayload_int_0", "bob", "alice") == "joinpayload"
    assert [scql_regtest.column_level("pl_jn_cp_int_0", "alice", p) for p in ("bob", "carol")] == ["join", "compare"]
    assert scql_regtest.column_level("agg_en_pl_int_0", "carol", "alice") == "aggregate"
    assert scql_regtest.column_level("GROUPBY_int_0", "bob", "carol") == "groupby"


def test_scql_ccl_as_grants():
    """Each level is our constraint of the same name; encrypt is no grant; an owner grants itself nothing."""
    text = scql_regtest.grants()
    sections = text.split("[[grants]]")
    alice_join = next(s for s in sections if 'party = "alice"' in s and '"PLAINTEXT_AFTER_JOIN"' in s)
    assert '"bob.tbl_0.join_int_0"' in alice_join and '"carol.tbl_2.join_datetime_2"' in alice_join
    assert '"alice.' not in alice_join and "joinpayload" not in alice_join
    assert "encrypt_" not in text
    assert '"bob.tbl_3.ag_pl_en_int_0"' in next(s for s in sections if 'party = "alice"' in s
                                                 and "PLAINTEXT_AFTER_AGGREGATE" in s)
    assert not any('"carol.tbl_3.ag_pl_en_int_0"' in s or '"bob.tbl_3.ag_pl_en_int_0"' in s
                   for s in sections if 'party = "carol"' in s)


def test_scql_table_names_as_ours():
    assert scql_regtest.our_sql("select a.join_long_0 from scdb.alice_tbl_0 as alice join bob_UPPER_table b") \
        == "select a.join_int_0 from alice.tbl_0 as alice join bob.UPPER_table b"


def test_oracle_union_across_parties_is_distinct(scql_federation):
    """The oracle's group-threshold rewrite of a cross-party UNION keeps it a set (SCQL's "union tests")."""
    engine, oracle = scql_federation
    sql = "SELECT ta.plain_int_0 FROM alice.tbl_0 AS ta UNION SELECT tb.plain_int_0 FROM bob.tbl_0 AS tb"
    want = oracle.con.sql(sql).to_arrow_table()
    assert scql_regtest.same_multiset(oracle.expected(sql, scql_regtest.ISSUER), want)
