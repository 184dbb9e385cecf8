"""Issue 15, "Wrong answers": each a regression test against the oracle (plain DuckDB over all parties'
data), over 2 and 3 parties, with NULLs and empty inputs; where the engine cannot answer exactly it
must refuse with a PEP 249 error before running."""

import datetime

import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp

from sqlsecure.errors import DataError, Error, NotSupportedError, PlanError

PARTIES = ("bank", "shop", "insurer")
DAY = datetime.date(2024, 1, 1)


def small_tables() -> dict[str, dict[str, pa.Table]]:
    """Three parties' small tables: shared ids with NULLs, dates, booleans, tied scores."""
    ids = [1, 2, 3, 4, 5, 6, 7, 8, None, 10, 11, 12]
    bank = pa.table({
        "id": pa.array(ids, pa.int64()),
        "joined": pa.array([DAY + datetime.timedelta(days=3 * i) for i in range(12)], pa.date32()),
        "score": pa.array([5, 3, 5, 1, 7, 3, None, 9, 2, 5, 8, 4], pa.int64()),
        "flag": pa.array([True, False, None, True, True, False, True, False, True, True, False, True]),
        "region": pa.array(["n", "s", None, "n", "e", "s", "n", "w", "e", "n", "s", "w"]),
    })
    shop = pa.table({
        "customer_id": pa.array([1, 2, 2, 3, None, 5, 6, 6, 8, 10, 12, None, 4, 7], pa.int64()),
        "odate": pa.array([DAY + datetime.timedelta(days=40 + 5 * i) for i in range(14)], pa.date32()),
        "qty": pa.array([4, -2, 0, 7, 3, 9, -1, 2, 6, 0, 5, 8, 1, 3], pa.int64()),
        "label": pa.array(["n", "s", "e", "w", "n", None, "s", "e", "n", "w", "s", "e", "n", "w"]),
    })
    insurer = pa.table({
        "customer_id": pa.array([2, 3, 5, None, 8, 11, 12, 1], pa.int64()),
        "qty": pa.array([1, -4, 6, 2, None, 0, 3, 5], pa.int64()),
    })
    return {"bank": {"t": bank}, "shop": {"t": shop}, "insurer": {"t": insurer}}


@pytest.fixture(scope="module")
def small(tmp_path_factory, federation_writer, plaintext_grants, oracle_for):
    from sqlsecure.engine import Engine

    directory = tmp_path_factory.mktemp("wrong_answers")
    path = federation_writer(directory, small_tables(), plaintext_grants(PARTIES), parties=PARTIES)
    with Engine(path, timeout=60) as engine:
        yield oracle_for(engine)


def check_limit_with_ties(oracle, sql: str, keys: tuple[int, ...], issuer: str = "bank"):
    """ORDER BY ... LIMIT / OFFSET where the sort keys (output columns `keys`) may tie: SQL lets any
    row of a tie at the window's edges be chosen, so only what is determined is compared: the rows
    whose keys are strictly inside the window exactly, the rest as rows of the edge ties."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    limit = int(tree.args["limit"].expression.this) if tree.args.get("limit") else None
    offset = int(tree.args["offset"].expression.this) if tree.args.get("offset") else 0
    tree.set("limit", None)
    tree.set("offset", None)
    full = [tuple(r.values()) for r in oracle.con.sql(tree.sql(dialect="duckdb")).to_arrow_table().to_pylist()]
    window = full[offset:offset + limit if limit is not None else None]
    got = [tuple(r.values()) for r in oracle.engine.execute(sql, issuer).table.to_pylist()]
    assert len(got) == len(window), (got, window)
    key = lambda row: tuple(row[k] for k in keys)  # noqa: E731
    edges = {key(window[0]), key(window[-1])} if window else set()
    inner = sorted(map(repr, (r for r in window if key(r) not in edges)))
    assert sorted(map(repr, (r for r in got if key(r) not in edges))) == inner, (got, window)
    pool = [r for r in full if key(r) in edges]
    for row in (r for r in got if key(r) in edges):
        assert row in pool, (row, pool)
        pool.remove(row)
    return got


# -- DISTINCT over a cross-party UNION ALL ---------------------------------------------------------------------

UNION_2 = "(SELECT region AS k, score AS v FROM bank.t UNION ALL SELECT label, qty FROM shop.t) AS u"
UNION_3 = (f"(SELECT region AS k, score AS v FROM bank.t UNION ALL SELECT label, qty FROM shop.t "
           "UNION ALL SELECT CAST(customer_id AS VARCHAR), qty FROM insurer.t) AS u")


@pytest.mark.parametrize("union", [UNION_2, UNION_3], ids=["2 parties", "3 parties"])
@pytest.mark.parametrize("query", [
    "SELECT DISTINCT u.k FROM {u}",  # NULL is one distinct value
    "SELECT DISTINCT u.k, u.v > 2 AS big FROM {u}",
    "SELECT DISTINCT u.k FROM {u} WHERE u.v > 100",  # empty input
    "SELECT DISTINCT u.k FROM {u} WHERE u.v > 1 ORDER BY u.k NULLS FIRST LIMIT 2 OFFSET 1",
    "SELECT DISTINCT u.k, COUNT(*) AS n FROM {u} GROUP BY u.k",  # every group key selected: a no-op
])
def test_distinct_over_a_union_all(small, union, query):
    small.check(query.format(u=union), "bank")


def test_distinct_over_a_cross_party_join_on_the_spu(small):
    sql = "SELECT DISTINCT c.region, o.qty > c.score AS more FROM bank.t c JOIN shop.t o ON c.id = o.customer_id"
    small.check(sql, "bank")
    assert "SPU(" in small.engine.explain(sql, "bank")


@pytest.mark.parametrize("sql, error", [
    (f"SELECT DISTINCT COUNT(*) FROM {UNION_2} GROUP BY u.k", NotSupportedError),  # a key not selected
    (f"SELECT DISTINCT u.k FROM {UNION_2} ORDER BY u.v", PlanError),  # DuckDB refuses it too
    (f"SELECT DISTINCT ON (u.k) u.k, u.v FROM {UNION_2}", NotSupportedError),
    ("SELECT * FROM (SELECT region AS k FROM bank.t UNION ALL SELECT label FROM shop.t ORDER BY 1 LIMIT 2) u",
     NotSupportedError),
    ("SELECT * FROM (SELECT region AS k FROM bank.t UNION ALL BY NAME SELECT label AS k FROM shop.t) u",
     NotSupportedError),
    ("SELECT * FROM (SELECT region AS k FROM bank.t UNION SELECT label FROM shop.t) u", NotSupportedError),
])
def test_distinct_shapes_the_secure_placement_refuses(small, sql, error):
    """The secure placement refuses them; with this module's all-PLAINTEXT grants the issuer computes
    those it does not support instead (planner/gather.py), and one DuckDB refuses stays a PlanError."""
    if error is not NotSupportedError:
        with pytest.raises(error):
            small.engine.explain(sql, "bank")
        return
    assert small.engine.plan(sql, "bank").physical.steps[-1].mode == "tables"
    if "LIMIT" not in sql and "DISTINCT ON" not in sql:  # these may keep any row of a tie / of a group
        small.check(sql, "bank")


# -- booleans in aggregates on the secure path --------------------------------------------------------------------

@pytest.mark.parametrize("sql", [
    f"SELECT SUM(u.v > 2) AS t, MAX(u.v > 2), MIN(u.v > 2), COUNT(u.v > 2) FROM {UNION_3}",
    f"SELECT u.k, SUM(u.v > 2) AS t FROM {UNION_2} GROUP BY u.k",
    f"SELECT SUM(u.v > 2) FROM {UNION_3} WHERE u.v > 100",  # no rows: below the threshold on both sides
    "SELECT SUM(o.qty > c.score), SUM(c.flag) FROM bank.t c JOIN shop.t o ON c.id = o.customer_id",
    "SELECT MAX(c.flag), MIN(c.flag AND o.qty > 0) FROM bank.t c JOIN shop.t o ON c.id = o.customer_id "
    "AND o.qty > c.score - 10",
])
def test_sum_of_booleans_counts_the_true_rows(small, sql):
    got = small.check(sql, "bank")
    want = small.expected(sql, "bank")
    for g, w in zip(got.schema.types, want.schema.types):
        assert pa.types.is_boolean(g) == pa.types.is_boolean(w), (got.schema, want.schema)


def test_avg_of_a_boolean_is_refused_as_duckdb_refuses_it(small):
    with pytest.raises(PlanError, match="avg"):
        small.engine.explain(f"SELECT AVG(u.v > 2) FROM {UNION_3}", "bank")


# -- NOT IN's three-valued semantics ------------------------------------------------------------------------------

SEMI = [
    # an empty subquery: NOT IN is true for every row, the NULL id's too
    "SELECT c.region, c.id FROM bank.t c WHERE c.id NOT IN (SELECT customer_id FROM shop.t WHERE qty > 100)",
    # a NULL among the values: NOT IN is never true
    "SELECT c.region, c.id FROM bank.t c WHERE c.id NOT IN (SELECT customer_id FROM shop.t)",
    "SELECT c.region, c.id FROM bank.t c WHERE c.id NOT IN (SELECT customer_id FROM shop.t WHERE qty > 2)",
    # values without NULL: the NULL id is dropped (NULL NOT IN (...) is NULL), non-members kept
    "SELECT c.region, c.id FROM bank.t c WHERE c.id NOT IN (SELECT customer_id FROM shop.t "
    "WHERE customer_id IS NOT NULL)",
    "SELECT c.id FROM bank.t c WHERE NOT c.id IN (SELECT customer_id FROM insurer.t WHERE qty >= 0) AND c.score > 1",
    "SELECT c.id FROM bank.t c WHERE c.id IN (SELECT customer_id FROM shop.t WHERE qty > 100)",
    "SELECT c.id FROM bank.t c WHERE c.id IN (SELECT customer_id FROM shop.t)",
    "SELECT c.id FROM bank.t c WHERE EXISTS (SELECT 1 FROM shop.t o WHERE o.customer_id = c.id AND o.qty > 100)",
    "SELECT c.id FROM bank.t c WHERE NOT EXISTS (SELECT 1 FROM shop.t o WHERE o.customer_id = c.id AND o.qty > 100)",
    "SELECT c.id FROM bank.t c WHERE NOT EXISTS (SELECT 1 FROM shop.t o WHERE o.customer_id = c.id)",
    "SELECT o.label, c.id FROM bank.t c JOIN shop.t o ON c.id = o.customer_id "
    "WHERE c.id NOT IN (SELECT customer_id FROM insurer.t WHERE qty > 100)",
]


@pytest.mark.parametrize("sql", SEMI)
@pytest.mark.parametrize("issuer", ["bank", "insurer"])
def test_in_and_exists_follow_sql_three_valued_logic(small, sql, issuer):
    small.check(sql, issuer)


def test_not_in_keeps_the_null_key_only_when_the_subquery_is_empty(small):
    """Guard against a vacuous oracle: the NULL id's row is there exactly when it must be."""
    empty = small.check(SEMI[0], "bank")
    assert None in empty.column("id").to_pylist() and empty.num_rows == 12
    assert small.check(SEMI[1], "bank").num_rows == 0


def test_not_in_status_is_the_three_cases():
    import numpy as np

    from sqlsecure.errors import ProtocolError
    from sqlsecure.executors.psi.encoding import NumberedKeys, distinct_encoded
    from sqlsecure.executors.runtime.party import not_in_keep, not_in_status

    def status(encoded):
        return not_in_status(NumberedKeys(*distinct_encoded(encoded)))

    member, has_key = np.array([True, False, False]), np.array([True, True, False])
    assert not_in_keep(status([]), member[:0], has_key[:0]).tolist() == []
    assert not_in_keep(status([]), member, has_key).tolist() == [True] * 3
    assert not_in_keep(status([b"1", None]), member, has_key).tolist() == [False] * 3
    assert not_in_keep(status([b"1"]), member, has_key).tolist() == [False, True, False]
    with pytest.raises(ProtocolError):
        not_in_keep(b"\x07", member, has_key)


# -- result types as DuckDB gives them ----------------------------------------------------------------------------

@pytest.mark.parametrize("sql, kind", [
    ("SELECT MAX(o.odate - c.joined) AS d FROM bank.t c JOIN shop.t o ON c.id = o.customer_id", "integer"),
    ("SELECT c.region, MIN(o.odate - c.joined) AS d FROM bank.t c JOIN shop.t o ON c.id = o.customer_id "
     "GROUP BY c.region", "integer"),
    ("SELECT o.odate - c.joined AS d FROM bank.t c JOIN shop.t o ON c.id = o.customer_id", "integer"),
    ("SELECT MAX(o.odate - CAST(c.score AS INTEGER)) AS d FROM bank.t c JOIN shop.t o ON c.id = o.customer_id",
     "date"),
    ("SELECT c.joined + CAST(o.qty AS INTEGER) AS d FROM bank.t c JOIN shop.t o ON c.id = o.customer_id "
     "AND o.qty > c.score",
     "date"),
    ("SELECT c.flag AS d FROM bank.t c JOIN shop.t o ON c.id = o.customer_id AND o.qty > c.score", "boolean"),
    ("SELECT SUM(o.qty * c.score) AS d FROM bank.t c JOIN shop.t o ON c.id = o.customer_id", "decimal"),  # HUGEINT
    ("SELECT c.region, NULL AS d FROM bank.t c JOIN shop.t o ON c.id = o.customer_id AND o.qty > c.score", None),
])
def test_secure_results_have_duckdb_types(small, sql, kind):
    got = small.check(sql, "bank")
    assert kind is None or getattr(pa.types, f"is_{kind}")(got.schema.field("d").type), got.schema
    assert got.schema.field("d").type == small.expected(sql, "bank").schema.field("d").type


@pytest.mark.parametrize("sql, error, named", [
    ("SELECT MAX(o.qty * c.region) FROM bank.t c JOIN shop.t o ON c.id = o.customer_id", PlanError, "region"),
    ("SELECT c.region * 2 AS x FROM bank.t c JOIN shop.t o ON c.id = o.customer_id AND o.qty > c.score",
     PlanError, "region"),
    ("SELECT MAX(o.odate + c.joined) FROM bank.t c JOIN shop.t o ON c.id = o.customer_id", PlanError, "joined"),
    ("SELECT SUM(o.qty + 1" + "0" * 399 + ") FROM bank.t c JOIN shop.t o ON c.id = o.customer_id", DataError,
     "1000000"),
    ("SELECT c.id, 1" + "0" * 399 + " AS x FROM bank.t c JOIN shop.t o ON c.id = o.customer_id", DataError, "BIGNUM"),
    ("SELECT c.id FROM bank.t c JOIN shop.t o ON c.id = o.customer_id WHERE o.qty * 10000000000000000000000 > "
     "c.score", DataError, "literal"),
])
def test_type_errors_are_refused_at_plan_time(small, sql, error, named):
    with pytest.raises(error, match=named):
        small.engine.explain(sql, "bank")


def test_stage_arithmetic_refuses_what_duckdb_refuses():
    """The SPU stage's own rule, for plans made without the planner's typing."""
    from sqlsecure.executors.spu.stage import literal_value, sum_kind

    e = sqlglot.parse_one("a - b")
    assert sum_kind(e, "date", "date") == "int" and sum_kind(e, "date", "int") == "date"
    assert sum_kind(sqlglot.parse_one("a + b"), "int", "date") == "date"
    for a, b in (("int", "date"), ("text", "int"), ("bool", "int"), ("date", "fixed")):
        with pytest.raises(NotSupportedError):
            sum_kind(e, a, b)
    with pytest.raises(DataError, match="literal"):
        literal_value(exp.Literal.number("9" * 30))
    assert literal_value(exp.Literal.number("9223372036854775807")).value == (1 << 63) - 1


# -- ORDER BY ... LIMIT over secret values ------------------------------------------------------------------------

def test_order_by_limit_with_ties_returns_a_valid_answer_every_time(small):
    """Ties at the window's edge may be broken either way (the SPU's compaction shuffles rows); the
    rows before the tie are determined and must be the oracle's."""
    sql = ("SELECT c.score, o.qty FROM bank.t c JOIN shop.t o ON c.id = o.customer_id WHERE o.qty > c.score - 9 "
           "ORDER BY c.score LIMIT 3")
    for _ in range(3):
        check_limit_with_ties(small, sql, keys=(0,))


@pytest.mark.parametrize("sql", [
    "SELECT c.score, o.qty FROM bank.t c JOIN shop.t o ON c.id = o.customer_id WHERE o.qty > c.score - 9 "
    "ORDER BY c.score DESC, o.qty LIMIT 3",
    f"SELECT u.v FROM {UNION_3} ORDER BY u.v DESC LIMIT 4 OFFSET 1",
])
def test_order_by_limit_without_ties_is_the_oracles(small, sql):
    for _ in range(2):
        check_limit_with_ties(small, sql, keys=tuple(range(len(sqlglot.parse_one(sql).expressions))))


def test_check_limit_with_ties_rejects_a_wrong_row(small, monkeypatch):
    """The helper is not vacuous: a row from outside the window fails it."""
    sql = f"SELECT u.v FROM {UNION_2} WHERE u.v IS NOT NULL ORDER BY u.v LIMIT 2"
    wrong = pa.table({"v": pa.array([9, 9], pa.int64())})
    monkeypatch.setattr(small.engine, "execute", lambda *a, **k: type("R", (), {"table": wrong})())
    with pytest.raises(AssertionError):
        check_limit_with_ties(small, sql, keys=(0,))
    assert issubclass(PlanError, Error)


@pytest.mark.parametrize("scale, exact", [(1 << 58, True), (1 << 59, False)])
def test_order_by_limit_over_large_secret_bigints(tmp_path, federation_writer, plaintext_grants, oracle_for,
                                                  scale, exact):
    """The cause of rows changing from run to run: keys beyond 2^62, where a secure comparison of two
    keys overflows (its garbage depends on the random shares). Below, the oracle's answer every time;
    beyond, a DataError naming the range."""
    from sqlsecure.engine import Engine

    bigs = [(-1) ** i * (i + 1) * scale for i in range(12)]  # up to 12 * scale: 1.5 * 2^62 for 2^59
    tables = {"bank": {"t": pa.table({"id": list(range(12)), "big": pa.array(bigs, pa.int64())})},
              "shop": {"t": pa.table({"id": list(range(12)), "x": list(range(100, 112))})}}
    path = federation_writer(tmp_path, tables, plaintext_grants(("bank", "shop")), parties=("bank", "shop"))
    sql = "SELECT b.big FROM bank.t b JOIN shop.t s ON b.id = s.id AND s.x > b.id ORDER BY b.big LIMIT 3"
    with Engine(path) as engine:
        oracle = oracle_for(engine)
        for _ in range(3):
            if exact:
                assert check_limit_with_ties(oracle, sql, keys=(0,)) == [(b,) for b in sorted(bigs)[:3]]
            else:
                with pytest.raises(DataError, match=r"2\^62|outside the SPU.s exact range"):
                    engine.execute(sql, "bank")
