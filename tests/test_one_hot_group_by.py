"""Class 4 through the engine on the one-hot group sums (issue 20): the key owner's plain integer keys
with published classes, sums only, no distinct-row threshold; against plain DuckDB over all parties'
data, EXPLAIN naming the path, and the sort kept where the one-hot sums do not apply."""

import numpy as np
import pyarrow as pa
import pytest

from sqlsecure.engine import Engine

PARTIES = ("bank", "shop", "insurer")


def small_tables():
    """40 ids per party, 30 common; keys with NULLs and a group some filters empty; values with NULLs."""
    rng = np.random.default_rng(13)
    ids = rng.permutation(60)
    bank_ids, shop_ids, insurer_ids = ids[:40], ids[10:50], ids[5:45]
    g = [None if i % 9 == 0 else int(v) for i, v in enumerate(rng.integers(-3, 4, 40))]
    return {
        "bank": {"t": pa.table({"id": pa.array(bank_ids, pa.int64()), "g": pa.array(g, pa.int64()),
                                "h": pa.array(rng.integers(0, 3, 40), pa.int32())})},
        "shop": {"t": pa.table({"id": pa.array(shop_ids, pa.int64()),
                                "w": pa.array([None if i % 7 == 0 else int(v)
                                               for i, v in enumerate(rng.integers(-500, 1000, 40))], pa.int64()),
                                "x": pa.array(rng.integers(0, 10_000, 40) / 100.0)})},
        "insurer": {"t": pa.table({"id": pa.array(insurer_ids, pa.int64()),
                                   "z": pa.array(rng.integers(0, 50, 40), pa.int64())})},
    }


@pytest.fixture(scope="module")
def engines(tmp_path_factory, federation_writer, plaintext_grants, oracle_for):
    tables = small_tables()
    made = {}
    for k in (0, 3):
        directory = tmp_path_factory.mktemp(f"onehot{k}")
        path = federation_writer(directory, tables, plaintext_grants(PARTIES), parties=PARTIES, min_group_size=k,
                                 group_sums="spu")
        made[k] = Engine(path)
    yield {k: oracle_for(e) for k, e in made.items()}
    for e in made.values():
        e.close()


ONE_HOT = [
    # NULL keys form one group; NULL values: SUM / AVG skip them, COUNT(w) counts the others
    "SELECT b.g, SUM(s.w) AS s, COUNT(*) AS n, COUNT(s.w) AS k, AVG(s.x) AS a "
    "FROM bank.t b JOIN shop.t s ON b.id = s.id GROUP BY b.g",
    # two keys of the owner: G the product of their classes; a group whose values are all NULL: SUM NULL
    "SELECT b.g, b.h, SUM(s.w) AS s, COUNT(*) AS n FROM bank.t b JOIN shop.t s ON b.id = s.id "
    "WHERE s.w IS NULL OR s.w > 0 GROUP BY b.g, b.h",
    # a cross-party filter weighs the rows: groups it empties are dropped (G padded rows too)
    "SELECT b.g, SUM(s.w) AS s, COUNT(*) AS n FROM bank.t b JOIN shop.t s ON b.id = s.id "
    "WHERE s.w > b.g * 100 GROUP BY b.g",
    # HAVING on the group rows
    "SELECT b.g, SUM(s.w) AS s FROM bank.t b JOIN shop.t s ON b.id = s.id GROUP BY b.g HAVING COUNT(*) >= 4",
    # three compute parties: the owner runs the protocol with each of the others in the same round
    "SELECT b.g, SUM(s.w) AS s, SUM(i.z) AS z, COUNT(*) AS n FROM bank.t b JOIN shop.t s ON b.id = s.id "
    "JOIN insurer.t i ON b.id = i.id GROUP BY b.g",
    # keys from a derived table (issue 20): a column passed through GROUP BY, DISTINCT, WHERE, a CTE's renaming,
    # UNION ALL branches or nested subqueries keeps its base column's published class
    "SELECT b.g, SUM(s.w) AS s, COUNT(*) AS n FROM (SELECT id, g FROM bank.t GROUP BY id, g) b "
    "JOIN shop.t s ON b.id = s.id GROUP BY b.g",
    "WITH b(i, k) AS (SELECT DISTINCT id, g FROM bank.t WHERE h > 0) "
    "SELECT b.k, SUM(s.w) AS s, COUNT(*) AS n FROM b JOIN shop.t s ON b.i = s.id GROUP BY b.k",
    "SELECT b.g, SUM(s.w) AS s FROM (SELECT id, g FROM bank.t WHERE h = 0 UNION ALL SELECT id, g FROM bank.t "
    "WHERE h = 2) b JOIN shop.t s ON b.id = s.id GROUP BY b.g",
    "SELECT b.g, SUM(s.w) AS s FROM (SELECT x.id, x.g FROM (SELECT id, g FROM bank.t) x) b "
    "JOIN shop.t s ON b.id = s.id GROUP BY b.g",
]


@pytest.mark.parametrize("sql", ONE_HOT)
def test_one_hot_group_by_equals_duckdb(engines, sql):
    oracle = engines[0]
    assert "no sort: one-hot group sums" in oracle.engine.explain(sql, "bank")
    oracle.check(sql, "bank")


@pytest.mark.parametrize("sql, k, why", [
    ("SELECT b.g, MIN(s.w) AS m, COUNT(*) AS n FROM bank.t b JOIN shop.t s ON b.id = s.id GROUP BY b.g", 0, "MIN"),
    # the group threshold counts the shop's distinct rows, which bank's undeclared ids may repeat: no sum
    # (tests/test_one_hot_threshold.py: where they cannot, or bank is the one protected, it is one)
    ("SELECT b.g, SUM(s.w) AS s, COUNT(*) AS n FROM bank.t b JOIN shop.t s ON b.id = s.id GROUP BY b.g", 3,
     "threshold"),
    # keys of two parties: no single owner numbers the groups
    ("SELECT b.g, s.w % 3 AS m, COUNT(*) AS n FROM bank.t b JOIN shop.t s ON b.id = s.id GROUP BY b.g, m", 0,
     "two owners"),
    # a derived column its owner computes may leave its base column's class: none claimed
    ("SELECT b.g, SUM(s.w) AS s FROM (SELECT id, g + 1 AS g FROM bank.t) b JOIN shop.t s ON b.id = s.id "
     "GROUP BY b.g", 0, "computed"),
    # a COUNT has the class of the rows it counts (64 published: |n| < 2^7), 256 groups: the sort's bytes are fewer
    ("SELECT b.n, SUM(s.w) AS s FROM (SELECT id, COUNT(*) AS n FROM bank.t GROUP BY id) b "
     "JOIN shop.t s ON b.id = s.id GROUP BY b.n", 0, "b.n |x| < 2^7"),
])
def test_the_sort_stays_where_one_hot_does_not_apply(engines, sql, k, why):
    oracle = engines[k]
    plan = oracle.engine.explain(sql, "bank")
    assert "(oblivious sort)" in plan and "one-hot" not in plan, why
    assert why != "computed" or "proven at run time only for b.g" in plan
    assert "|x| <" not in why or why in plan
    oracle.check(sql, "bank")


def test_a_stale_class_of_a_derived_key_is_refused_at_run_time(engines, monkeypatch):
    """The owner checks its values against the class the plan carries: a class its data outgrew (here
    |g| < 2, for g up to 3) is a DataError before anything is shared, never a wrong answer."""
    from sqlsecure.errors import DataError

    engine = engines[0].engine
    monkeypatch.setitem(engine._stores["bank"]._classes, ("t", "g"), 1)
    sql = "SELECT b.g, SUM(s.w) AS stale FROM (SELECT id, g FROM bank.t GROUP BY id, g) b " \
          "JOIN shop.t s ON b.id = s.id GROUP BY b.g"
    assert "no sort: one-hot group sums" in engine.explain(sql, "bank")
    with pytest.raises(DataError, match=r"b\.g.*2\^1"):
        engine.execute(sql, "bank")


def test_the_cost_model_chooses_one_hot_by_bytes_at_every_size():
    """8 G (N - 1) bytes per row against the sort's at 1,024 rows (37 B per row, column and bit)."""
    from sqlsecure.planner.cost import Link, estimate, one_hot_chosen

    assert one_hot_chosen(32, 2) and one_hot_chosen(128, 2) and not one_hot_chosen(256, 2)
    assert one_hot_chosen(64, 1, parties=2) and not one_hot_chosen(64, 1, parties=3)
    assert not one_hot_chosen(None, 3)
    wan = Link(0.08, 25e6)
    one_hot, sort = (estimate(10 ** 5, 2, 1, wan, carried=2, groups=32, one_hot=flag) for flag in (True, False))
    assert one_hot.spu.round_trips < sort.spu.round_trips and one_hot.spu.bytes < sort.spu.bytes
    assert "no sort: one-hot group sums into 32 group rows" in one_hot.why
    assert estimate(10 ** 5, 2, 1, wan, groups=None, one_hot=True).spu == estimate(10 ** 5, 2, 1, wan).spu
