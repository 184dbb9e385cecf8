"""A UNION ALL of parties' rows in the enclave (issue 16): each party seals its branches' rows stacked as
one part, the enclave stacks the parts (`program.union_rows`) and runs the spine over them. Against plain
DuckDB with 2 and 3 parties, a party holding two branches, an empty branch, NULLs, duplicates, text of
different width classes, columns whose types differ by branch (DECIMAL scales, CSV doubles), and the group
threshold counted on each protected branch's rows; `check`, EXPLAIN and execution agree under
`placement = "always"`. Also what "always" means for class 4 on HE (the enclave computes it) and the
hidden-key join (refused, naming the enclave)."""

from __future__ import annotations

import decimal

import numpy as np
import pyarrow as pa
import pytest
import sqlglot

from sqlsecure.engine import Engine
from sqlsecure.errors import NotSupportedError, ProgrammingError
from sqlsecure.executors.tee.program import BRANCH, EnclaveProgram, evaluate, union_rows
from sqlsecure.planner.views import expand_views
from tests.conftest import all_plaintext, grants_toml, same_multiset, sorted_rows, write_federation
from tests.test_enclave_queries import enclave_section

PARTIES = ("bank", "shop", "insurer")


def table(seed: int, n: int, scale: int, width: int) -> pa.Table:
    """Keys with duplicates, values with NULLs, amounts at DECIMAL(12, scale), labels `width` bytes long."""
    rng = np.random.default_rng(seed)
    return pa.table({
        "id": pa.array(np.arange(n) % 7, pa.int64()),
        "k": pa.array([None if i % 6 == 5 else int(x) for i, x in enumerate(rng.integers(0, 3, n))], pa.int32()),
        "amt": pa.array([None if i % 5 == 4 else decimal.Decimal(int(x)).scaleb(-scale)
                         for i, x in enumerate(rng.integers(-900, 900, n))], pa.decimal128(12, scale)),
        "label": pa.array([None if i % 7 == 3 else f"{'x' * width}{int(x)}" for i, x in
                           enumerate(rng.integers(0, 3, n))], pa.string())})


def tables() -> dict:
    return {"bank": {"t": table(1, 12, 2, 1), "u": table(2, 5, 2, 40)},
            "shop": {"t": table(3, 10, 3, 3)},  # CSV: amounts read back as DOUBLE
            "insurer": {"t": table(4, 6, 1, 2).slice(0, 0)}}  # an empty branch


VIEW = " UNION ALL ".join(f"SELECT id, k, amt, label FROM {p}" for p in ("bank.t", "shop.t", "insurer.t", "bank.u"))
TWO = "SELECT id, k, amt, label FROM bank.t UNION ALL SELECT id, k, amt, label FROM shop.t"
RENAMED = "SELECT id, k FROM bank.t UNION ALL SELECT k AS kk, id AS ii FROM shop.t"  # the first branch names

QUERIES = [
    "SELECT k, COUNT(*) AS c, SUM(amt) AS s, MIN(label) AS lo, MAX(amt) AS hi FROM allv GROUP BY k",
    "SELECT COUNT(*) AS c, COUNT(k) AS ck, AVG(amt) AS a FROM allv",
    "SELECT label, COUNT(DISTINCT k) AS n FROM allv GROUP BY label HAVING COUNT(*) > 1",
    "SELECT DISTINCT k, label FROM allv",
    "SELECT DISTINCT id FROM allv GROUP BY id, k HAVING COUNT(*) > 1",  # password reuse's shape
    "SELECT id, k, amt FROM allv WHERE amt > 0 OR label LIKE 'xx%' ORDER BY amt DESC NULLS LAST, id, k LIMIT 5",
    "SELECT id, k, ROW_NUMBER() OVER (PARTITION BY id ORDER BY amt, k, label) AS r FROM allv",
    "SELECT id, label, LAG(amt) OVER (PARTITION BY k ORDER BY id, amt, label) AS prev FROM allv",
    "SELECT k, MIN(amt) AS lo, MAX(amt) AS hi FROM allv WHERE id < 5 GROUP BY k HAVING MAX(amt) - MIN(amt) > 1",
    "SELECT COUNT(*) AS c FROM allv WHERE amt > 100000",  # nothing kept
    "SELECT k, COUNT(*) AS c FROM two GROUP BY k ORDER BY k NULLS FIRST",
    # derived tables and CTEs over the union (a projection and a WHERE: distributed over its branches)
    "SELECT t.k, COUNT(*) AS c, MAX(t.a2) AS m FROM (SELECT k, amt * 2 AS a2 FROM allv WHERE id > 1) t GROUP BY t.k",
    "WITH w AS (SELECT id, k AS kk, label FROM allv WHERE amt IS NOT NULL) "
    "SELECT kk, COUNT(DISTINCT label) AS n FROM w GROUP BY kk",
    "SELECT x.id, x.k FROM (SELECT id, k FROM (SELECT id, k, amt FROM two WHERE k > 0) y WHERE amt < 0) x "
    "ORDER BY x.id, x.k LIMIT 6",
    "SELECT DISTINCT r.i FROM (SELECT id AS i, k AS j FROM renamed) r WHERE r.j >= 1",  # branches name it apart
    # set operations of the parties' SELECTs at the top (planner/set_operations.py): NULLs equal, as DuckDB's
    "SELECT k, label FROM bank.t UNION SELECT k, label FROM shop.t UNION SELECT k, label FROM insurer.t",
    "SELECT id, k FROM bank.t UNION ALL SELECT k, id FROM shop.t WHERE k IS NULL",
    "SELECT k, id FROM bank.t INTERSECT SELECT k, id FROM shop.t",
    "SELECT label FROM bank.u INTERSECT (SELECT label FROM shop.t UNION ALL SELECT label FROM bank.t)",
    "SELECT k, id FROM shop.t EXCEPT SELECT k, id FROM bank.t",
    "SELECT id FROM bank.t EXCEPT SELECT id FROM insurer.t",  # an empty right side
    "SELECT k FROM insurer.t INTERSECT SELECT k FROM shop.t",  # an empty left side
]


def federation(directory, min_group_size: int, placement: str = "always"):
    enclave = enclave_section(directory).replace("[enclave]\n", f'[enclave]\nplacement = "{placement}"\n')
    views = f'[views]\nallv = "{VIEW}"\ntwo = "{TWO}"\nrenamed = "{RENAMED}"\n\n'
    return write_federation(directory, tables(), views + all_plaintext(PARTIES) + enclave, parties=PARTIES,
                            min_group_size=min_group_size)


@pytest.fixture(scope="module", params=[0, 3], ids=["no-threshold", "threshold-3"])
def oracle(request, tmp_path_factory, oracle_for):
    with Engine(federation(tmp_path_factory.mktemp("unions"), request.param)) as engine:
        yield oracle_for(engine)


@pytest.mark.parametrize("sql", QUERIES)
def test_unions_in_the_enclave_match_duckdb(oracle, sql):
    engine = oracle.engine
    assert engine.check(sql, "bank") is None
    text = engine.explain(sql, "bank")
    assert "TEEU(enclave" in text and "SPU(" not in text, text
    got = engine.execute(sql, "bank").table
    want = oracle.expected(expand_views(sqlglot.parse_one(sql, read="duckdb"), engine.config.views).sql("duckdb"),
                           "bank")
    assert same_multiset(got, want), f"{sql}\n got: {sorted_rows(got)}\nwant: {sorted_rows(want)}"


def test_the_threshold_counts_each_protected_branch(oracle):
    """With min_group_size 3, a group is revealed to bank only with 3 rows of each other party's branch
    (the SPU's rule); bank's own rows do not count for the others."""
    sql = "SELECT id, COUNT(*) AS c FROM two GROUP BY id"
    got = {r["id"]: r["c"] for r in oracle.engine.execute(sql, "bank").table.to_pylist()}
    shop = tables()["shop"]["t"].column("id").to_pylist()
    k = oracle.engine.config.min_group_size
    assert {i for i in got} == {i for i in set(shop) if shop.count(i) >= max(k, 1)}


def test_a_where_with_no_enclave_rule_is_refused_naming_the_enclave(oracle, assert_refused):
    sql = "SELECT k, COUNT(*) AS c FROM allv WHERE label SIMILAR TO 'x+' GROUP BY k"
    assert_refused(oracle.engine, sql, "bank", NotSupportedError, "enclave")


def test_union_rows_pads_a_narrower_parts_text_limbs():
    columns = {"p0/" + BRANCH: np.array([0, 0]), "p0/t#0": np.array([5, 6]), "p0/t#null": np.array([0, 1]),
               "p1/" + BRANCH: np.array([1]), "p1/t#0": np.array([7]), "p1/t#1": np.array([8]),
               "p1/t#null": np.array([0])}
    stacked = union_rows(("p0/", "p1/"), columns)
    assert stacked["t#1"].tolist() == [0, 0, 8] and stacked[BRANCH].tolist() == [0, 0, 1]
    with pytest.raises(ProgrammingError):
        union_rows(("p0/", "p1/"), {k: v for k, v in columns.items() if k != "p1/t#null"})
    program = EnclaveProgram(aggregates=[("count", None, "c")], min_group_size=2, union=("p0/", "p1/"),
                             branch_rows=(1,))
    assert evaluate(program, columns).num_rows == 0  # one row of branch 1: below the threshold
    assert EnclaveProgram.from_json(program.to_json()) == program


# -- class 4 and the hidden-key join under "always" ------------------------------------------------------
def join_federation(directory, placement: str, grants: str):
    rng = np.random.default_rng(7)
    data = {"bank": {"c": pa.table({"id": pa.array(np.arange(20), pa.int64()),
                                    "g": pa.array(rng.integers(0, 3, 20), pa.int64())})},
            "shop": {"o": pa.table({"cid": pa.array(rng.integers(0, 20, 40), pa.int64()),
                                    "amount": pa.array(rng.integers(1, 50, 40), pa.int64())})}}
    enclave = enclave_section(directory).replace("[enclave]\n", f'[enclave]\nplacement = "{placement}"\n')
    return write_federation(directory, data, grants + enclave, parties=("bank", "shop"), min_group_size=1,
                            group_sums="he")


CLASS_4 = "SELECT c.g, SUM(o.amount) AS s FROM bank.c c JOIN shop.o o ON c.id = o.cid GROUP BY c.g"


def test_class_4_runs_in_the_enclave_when_it_is_always_asked_for(tmp_path, oracle_for):
    grants = grants_toml(("bank", ("shop.o.cid",), "PLAINTEXT_AFTER_JOIN"),
                         ("bank", ("shop.o.amount",), "PLAINTEXT_AFTER_AGGREGATE"),
                         ("shop", ("bank.c.id",), "PLAINTEXT_AFTER_JOIN"))
    for placement, device in (("cost", "HEU"), ("always", "TEEU(enclave")):
        directory = tmp_path / placement
        directory.mkdir()
        with Engine(join_federation(directory, placement, grants)) as engine:
            text = engine.explain(CLASS_4, "bank")
            assert device in text, text
            if placement == "always":
                assert "HEU" not in text and "SPU(" not in text, text
                oracle_for(engine).check(CLASS_4, "bank")


def test_the_hidden_key_join_is_refused_under_always(tmp_path, assert_refused):
    grants = grants_toml(("bank", ("shop.o.cid",), "PLAINTEXT_AFTER_COMPARE"),
                         ("bank", ("shop.o.amount",), "PLAINTEXT_AFTER_AGGREGATE"),
                         ("shop", ("bank.c.id",), "PLAINTEXT_AFTER_COMPARE"))
    sql = "SELECT COUNT(*) AS n, SUM(o.amount) AS s FROM bank.c c JOIN shop.o o ON c.id = o.cid"
    with Engine(join_federation(tmp_path, "always", grants)) as engine:
        refused = assert_refused(engine, sql, "bank", NotSupportedError, "enclave")
        assert "intersection secret" in str(refused)
