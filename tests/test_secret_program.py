"""Secret programs (issue 16): every operator over secret relations against plain DuckDB running the
equivalent SQL over the same small tables, with 2 and 3 compute parties, NULLs, duplicates, empty and
all-invalid inputs; refusals; round bounds."""

import json

import duckdb
import pyarrow as pa
import pytest

from sqlsecure.errors import DataError, NotSupportedError, ProtocolError
from sqlsecure.executors.runtime.channel import InProcessChannel
from sqlsecure.executors.spu.dealer import DEALER
from sqlsecure.executors.spu.local import run_spu
from sqlsecure.executors.spu.program import output_schema, parse_program, receive_program_output, run_program

PARTIES = [2, 3]

VISITS_A = pa.table({
    "pid": pa.array([1, 2, 2, 3, 4, 5, None, 7], pa.int64()),
    "age": pa.array([34, 51, 51, None, 29, 62, 40, 34], pa.int64()),
    "cost": pa.array([10.5, 3.25, 3.25, 7.0, None, 12.75, 1.5, -2.0], pa.float64()),
    "diag": pa.array(["flu", "cold", "cold", "flu", None, "asthma", "flu", "cold"], pa.string()),
})
VISITS_B = pa.table({
    "pid": pa.array([2, 8, 9, 9, 5, 10], pa.int64()),
    "age": pa.array([51, 23, 70, 70, None, 45], pa.int64()),
    "cost": pa.array([4.0, 8.5, 0.25, 0.25, 6.0, None], pa.float64()),
    "diag": pa.array(["cold", "flu", "asthma", "asthma", "flu", "cold"], pa.string()),
})
PEOPLE = pa.table({
    "id": pa.array([1, 2, 5, 9, None, 11], pa.int64()),
    "name": pa.array(["ann", "bob", "cyd", "dee", "eve", "fay"], pa.string()),
    "limit_": pa.array([5.0, 20.0, None, 1.0, 3.0, 9.0], pa.float64()),
})
VISIT_COLUMNS = [["pid", "int"], ["age", "int"], ["cost", "fixed"], ["diag", "text"]]
PEOPLE_COLUMNS = [["id", "int"], ["name", "text"], ["limit_", "fixed"]]
EMPTY_A = VISITS_A.slice(0, 0)


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def program_of(root, inputs) -> str:
    return canonical({"inputs": [{"columns": c} for c in inputs], "root": root})


def inp(index):
    return {"op": "input", "index": index}


def run(nparties, text, tables, owners=None, issuer=0):
    """Run the program with input i owned by owners[i] (default: i mod nparties); the issuer's table."""
    program = parse_program(text)
    owners = owners or [i % nparties for i in range(len(tables))]

    def body(s):
        return run_program(s, program, {i: t for i, t in enumerate(tables) if owners[i] == s.index}, issuer)

    result = run_spu(nparties, body)
    return result.results[issuer], result


def oracle(sql, tables) -> pa.Table:
    con = duckdb.connect()
    for i, t in enumerate(tables):
        con.register(f"t{i}", t)
    return con.sql(sql).to_arrow_table()


@pytest.fixture(autouse=True)
def _compare_rows(rows_match):
    global same_multiset
    same_multiset = rows_match


def check(nparties, root, inputs, tables, sql, owners=None) -> pa.Table:
    got, _ = run(nparties, program_of(root, inputs), tables, owners)
    want = oracle(sql, tables)
    assert got.schema.names == want.schema.names
    assert same_multiset(got, want), f"\n got: {got.to_pylist()}\nwant: {want.to_pylist()}"
    return got


# -- filter, project, union ----------------------------------------------------------------------

@pytest.mark.parametrize("nparties", PARTIES)
def test_filter_and_project_match_duckdb(nparties):
    root = {"op": "project", "child": {"op": "filter", "child": inp(0), "condition": '"age" > 30 OR "cost" < 4'},
            "columns": [["pid", '"pid"'], ["twice", '"cost" * 2'], ["older", '"age" + 1'], ["d", '"diag"'],
                        ["big", 'CASE WHEN "cost" > 5 THEN 1 ELSE 0 END']]}
    check(nparties, root, [VISIT_COLUMNS], [VISITS_A],
          "SELECT pid, cost * 2 AS twice, age + 1 AS older, diag AS d, CASE WHEN cost > 5 THEN 1 ELSE 0 END AS big "
          "FROM t0 WHERE age > 30 OR cost < 4")


@pytest.mark.parametrize("nparties", PARTIES)
def test_union_all_of_parties_then_filter(nparties):
    root = {"op": "filter", "condition": '"diag" = \'flu\' AND "pid" IS NOT NULL',
            "child": {"op": "union_all", "children": [inp(0), inp(1)]}}
    check(nparties, root, [VISIT_COLUMNS, VISIT_COLUMNS], [VISITS_A, VISITS_B],
          "SELECT * FROM (SELECT * FROM t0 UNION ALL SELECT * FROM t1) WHERE diag = 'flu' AND pid IS NOT NULL")


def test_output_schema_follows_the_kinds():
    text = program_of({"op": "project", "child": inp(0), "columns": [
        ["a", '"pid"'], ["b", '"cost" / 2'], ["c", '"diag"'], ["d", '"age" > 3'], ["e", '"x"']]},
        [[*VISIT_COLUMNS, ["x", "decimal.2"]]])
    assert output_schema(parse_program(text)) == pa.schema(
        [("a", pa.int64()), ("b", pa.float64()), ("c", pa.string()), ("d", pa.bool_()), ("e", pa.decimal128(38, 2))])


# -- aggregates ----------------------------------------------------------------------------------

UNION = {"op": "union_all", "children": [inp(0), inp(1)]}
UNION_SQL = "(SELECT * FROM t0 UNION ALL SELECT * FROM t1)"
AGGS = [["n", "COUNT", None, False], ["ages", "SUM", '"age"', False], ["mean", "AVG", '"cost"', False],
        ["lo", "MIN", '"cost"', False], ["hi", "MAX", '"age"', False], ["people", "COUNT", '"pid"', True],
        ["first", "MIN", '"diag"', False]]
AGGS_SQL = ("COUNT(*) AS n, SUM(age) AS ages, AVG(cost) AS mean, MIN(cost) AS lo, MAX(age) AS hi, "
            "COUNT(DISTINCT pid) AS people, MIN(diag) AS first")


@pytest.mark.parametrize("nparties", PARTIES)
def test_grouped_aggregate_over_a_union_with_nulls_and_duplicates(nparties):
    root = {"op": "aggregate", "child": UNION, "keys": [["diag", '"diag"']], "aggregates": AGGS, "threshold": None}
    check(nparties, root, [VISIT_COLUMNS, VISIT_COLUMNS], [VISITS_A, VISITS_B],
          f"SELECT diag, {AGGS_SQL} FROM {UNION_SQL} GROUP BY diag")


@pytest.mark.parametrize("nparties", PARTIES)
def test_ungrouped_aggregate_and_invalid_rows_weigh_nothing(nparties):
    filtered = {"op": "filter", "child": UNION, "condition": '"age" >= 40'}
    root = {"op": "aggregate", "child": filtered, "keys": [], "aggregates": AGGS, "threshold": None}
    check(nparties, root, [VISIT_COLUMNS, VISIT_COLUMNS], [VISITS_A, VISITS_B],
          f"SELECT {AGGS_SQL} FROM {UNION_SQL} WHERE age >= 40")


@pytest.mark.parametrize("nparties", PARTIES)
@pytest.mark.parametrize("condition", ['"age" > 1000', '"age" IS NULL AND "age" > 3'])
def test_aggregates_over_all_invalid_rows(nparties, condition):
    filtered = {"op": "filter", "child": inp(0), "condition": condition}
    for keys, group in (([], ""), ([["diag", '"diag"']], " GROUP BY diag")):
        root = {"op": "aggregate", "child": filtered, "keys": keys, "aggregates": AGGS, "threshold": None}
        check(nparties, root, [VISIT_COLUMNS], [VISITS_A],
              f"SELECT {'diag, ' if keys else ''}{AGGS_SQL} FROM t0 WHERE {condition.replace(chr(34), '')}{group}")


@pytest.mark.parametrize("nparties", PARTIES)
def test_aggregates_over_an_empty_input(nparties):
    for keys, group in (([], ""), ([["diag", '"diag"']], " GROUP BY diag")):
        root = {"op": "aggregate", "child": inp(0), "keys": keys, "aggregates": AGGS, "threshold": None}
        check(nparties, root, [VISIT_COLUMNS], [EMPTY_A], f"SELECT {'diag, ' if keys else ''}{AGGS_SQL} FROM t0{group}")


@pytest.mark.parametrize("nparties", PARTIES)
def test_threshold_keeps_groups_with_k_distinct_provenance_values(nparties):
    aggs = [["n", "COUNT", None, False]]
    root = {"op": "aggregate", "child": UNION, "keys": [["diag", '"diag"']], "aggregates": aggs,
            "threshold": {"k": 3, "provenance": ["pid"]}}
    check(nparties, root, [VISIT_COLUMNS, VISIT_COLUMNS], [VISITS_A, VISITS_B],
          f"SELECT diag, COUNT(*) AS n FROM {UNION_SQL} GROUP BY diag HAVING COUNT(DISTINCT pid) >= 3")
    rows = {**root, "threshold": {"k": 5, "provenance": []}, "keys": []}
    check(nparties, rows, [VISIT_COLUMNS, VISIT_COLUMNS], [VISITS_A, VISITS_B],
          f"SELECT COUNT(*) AS n FROM {UNION_SQL} HAVING COUNT(*) >= 5")
    none = {**rows, "threshold": {"k": 100, "provenance": ["pid"]}}
    check(nparties, none, [VISIT_COLUMNS, VISIT_COLUMNS], [VISITS_A, VISITS_B],
          f"SELECT COUNT(*) AS n FROM {UNION_SQL} HAVING COUNT(DISTINCT pid) >= 100")


@pytest.mark.parametrize("nparties", PARTIES)
def test_aggregate_of_an_aggregate(nparties):
    inner = {"op": "aggregate", "child": UNION, "keys": [["pid", '"pid"']],
             "aggregates": [["visits", "COUNT", None, False]], "threshold": None}
    root = {"op": "aggregate", "child": inner, "keys": [["visits", '"visits"']],
            "aggregates": [["patients", "COUNT", None, False]], "threshold": None}
    check(nparties, root, [VISIT_COLUMNS, VISIT_COLUMNS], [VISITS_A, VISITS_B],
          f"SELECT visits, COUNT(*) AS patients FROM (SELECT pid, COUNT(*) AS visits FROM {UNION_SQL} GROUP BY pid) "
          "GROUP BY visits")


# -- sort, distinct, window ---------------------------------------------------------------------

@pytest.mark.parametrize("nparties", PARTIES)
def test_sort_limit_offset_skips_invalid_rows(nparties):
    filtered = {"op": "filter", "child": UNION, "condition": '"pid" <> 2'}
    root = {"op": "sort", "child": filtered, "keys": [['"cost"', True, False], ['"pid"', False, True]],
            "limit": 4, "offset": 1}
    got, _ = run(nparties, program_of(root, [VISIT_COLUMNS, VISIT_COLUMNS]), [VISITS_A, VISITS_B])
    want = oracle(f"SELECT * FROM {UNION_SQL} WHERE pid <> 2 ORDER BY cost DESC NULLS LAST, pid NULLS FIRST "
                  "LIMIT 4 OFFSET 1", [VISITS_A, VISITS_B])
    assert got.column("cost").to_pylist() == want.column("cost").to_pylist()
    assert got.column("pid").to_pylist() == want.column("pid").to_pylist()


@pytest.mark.parametrize("nparties", PARTIES)
def test_distinct_over_a_union_with_nulls(nparties):
    project = {"op": "project", "child": UNION, "columns": [["diag", '"diag"'], ["old", '"age" > 45']]}
    root = {"op": "distinct", "child": project}
    check(nparties, root, [VISIT_COLUMNS, VISIT_COLUMNS], [VISITS_A, VISITS_B],
          f"SELECT DISTINCT diag, age > 45 AS old FROM {UNION_SQL}")


WINDOWS = [("row_number", None, "ROW_NUMBER()"), ("rank", None, "RANK()"), ("dense_rank", None, "DENSE_RANK()"),
           ("count", '"cost"', "COUNT(cost)"), ("sum", '"cost"', "SUM(cost)"), ("min", '"age"', "MIN(age)"),
           ("max", '"cost"', "MAX(cost)")]


@pytest.mark.parametrize("nparties", PARTIES)
@pytest.mark.parametrize("func,arg,sql", WINDOWS)
def test_window_over_partition_and_order(nparties, func, arg, sql):
    filtered = {"op": "filter", "child": UNION, "condition": '"pid" <> 4 OR "pid" IS NULL'}
    root = {"op": "window", "child": filtered, "name": "w", "func": func, "arg": arg, "partition": ['"diag"'],
            "order": [['"age"', False, False]]}
    project = {"op": "project", "child": root, "columns": [["diag", '"diag"'], ["age", '"age"'], ["w", '"w"']]}
    check(nparties, project, [VISIT_COLUMNS, VISIT_COLUMNS], [VISITS_A, VISITS_B],
          f"SELECT diag, age, {sql} OVER (PARTITION BY diag ORDER BY age) AS w FROM {UNION_SQL} "
          "WHERE pid <> 4 OR pid IS NULL")


# -- joins ---------------------------------------------------------------------------------------

JOINS = [
    ("inner", None, "JOIN t1 ON t0.pid = t1.id"),
    ("left", None, "LEFT JOIN t1 ON t0.pid = t1.id"),
    ("inner", '"cost" < "limit_"', "JOIN t1 ON t0.pid = t1.id AND t0.cost < t1.limit_"),
]


@pytest.mark.parametrize("nparties", PARTIES)
@pytest.mark.parametrize("kind,condition,sql", JOINS)
def test_pair_joins(nparties, kind, condition, sql):
    root = {"op": "join", "kind": kind, "left": inp(0), "right": inp(1), "left_keys": ['"pid"'],
            "right_keys": ['"id"'], "condition": condition}
    check(nparties, root, [VISIT_COLUMNS, PEOPLE_COLUMNS], [VISITS_A, PEOPLE], f"SELECT * FROM t0 {sql}")


@pytest.mark.parametrize("nparties", PARTIES)
def test_cross_join_with_a_condition(nparties):
    root = {"op": "join", "kind": "cross", "left": inp(0), "right": inp(1), "left_keys": [], "right_keys": [],
            "condition": '"age" > 50 AND "limit_" >= 9'}
    check(nparties, root, [VISIT_COLUMNS, PEOPLE_COLUMNS], [VISITS_A, PEOPLE],
          "SELECT * FROM t0, t1 WHERE age > 50 AND limit_ >= 9")


SEMI = [
    ("semi", False, "SELECT * FROM t0 WHERE pid IN (SELECT id FROM t1 WHERE limit_ > 2)"),
    ("anti", False, "SELECT * FROM t0 WHERE NOT EXISTS (SELECT 1 FROM t1 WHERE t1.id = t0.pid AND limit_ > 2)"),
    ("anti", True, "SELECT * FROM t0 WHERE pid NOT IN (SELECT id FROM t1 WHERE limit_ > 2)"),
]


@pytest.mark.parametrize("nparties", PARTIES)
@pytest.mark.parametrize("kind,null_aware,sql", SEMI)
@pytest.mark.parametrize("people", ["all", "no nulls", "empty"])
def test_semi_and_anti_joins(nparties, kind, null_aware, sql, people):
    right = {"op": "filter", "child": inp(1), "condition": '"limit_" > 2'}
    root = {"op": "join", "kind": kind, "left": inp(0), "right": right, "left_keys": ['"pid"'],
            "right_keys": ['"id"'], "condition": None, "null_aware": null_aware}
    table = {"all": PEOPLE, "no nulls": PEOPLE.slice(0, 4), "empty": PEOPLE.slice(0, 0)}[people]
    check(nparties, root, [VISIT_COLUMNS, PEOPLE_COLUMNS], [VISITS_A, table], sql)


# -- the issuer, refusals, rounds ------------------------------------------------------------------

def test_issuer_outside_the_compute_parties_gets_the_result():
    text = program_of({"op": "filter", "child": inp(0), "condition": '"age" > 40'}, [VISIT_COLUMNS])
    program = parse_program(text)
    parties = ["p0", "p1"]
    channel = InProcessChannel([*parties, DEALER, "analyst"], timeout=60)

    class Step:
        compute, out, frac_bits = tuple(parties), "q1", 16

    import threading

    from sqlsecure.executors.spu.dealer import Dealer
    from sqlsecure.executors.spu.session import SpuSession
    errors, got = [], {}

    def party(i):
        try:
            with SpuSession(channel.endpoint(parties[i]), parties) as s:
                run_program(s, program, {0: VISITS_A} if i == 0 else {}, None, issuer="analyst", out="q1")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            channel.abort(str(exc))

    threads = [threading.Thread(target=lambda: Dealer(channel.endpoint(DEALER), parties, 60).serve(), daemon=True),
               *(threading.Thread(target=party, args=(i,), daemon=True) for i in range(2))]
    for t in threads:
        t.start()
    got["t"] = receive_program_output(channel.endpoint("analyst"), Step, program)
    for t in threads[1:]:
        t.join()
    assert not errors
    assert same_multiset(got["t"], oracle("SELECT * FROM t0 WHERE age > 40", [VISITS_A]))


@pytest.mark.parametrize("nparties", PARTIES)
def test_value_beyond_the_ring_is_refused_before_any_share(nparties):
    huge = pa.table({"x": pa.array([1, 2**62, 3], pa.int64())})
    root = {"op": "sort", "child": inp(0), "keys": [['"x"', False, False]], "limit": None, "offset": 0}
    program = parse_program(program_of(root, [[["x", "int"]]]))
    from_owner = []

    def body(s):
        if s.index == 0:  # record what the owner sends (the conftest spy records payloads, not senders)
            channel, send = s.endpoint.channel, s.endpoint.channel._send
            channel._send = lambda src, dst, tag, payload: (from_owner.append((src, tag)) if src == "p0" else None,
                                                            send(src, dst, tag, payload))
        return run_program(s, program, {0: huge} if s.index == 0 else {}, 0)

    with pytest.raises(DataError, match="'x'.*sort key"):
        run_spu(nparties, body)
    assert [tag.split("/")[-1] for _, tag in from_owner] == ["program-sizes"] * (nparties - 1)


def test_parse_refuses_bad_nodes():
    with pytest.raises(ProtocolError, match="root.child"):
        parse_program(program_of({"op": "filter", "child": {"op": "scan"}, "condition": "TRUE"}, [VISIT_COLUMNS]))
    with pytest.raises(ProtocolError, match="nope"):
        parse_program(program_of({"op": "filter", "child": inp(0), "condition": '"nope" > 1'}, [VISIT_COLUMNS]))
    with pytest.raises(NotSupportedError, match="(?i)upper"):
        parse_program(program_of({"op": "project", "child": inp(0), "columns": [["u", 'UPPER("diag")']]},
                                 [VISIT_COLUMNS]))
    with pytest.raises(ProtocolError, match="union_all"):
        parse_program(program_of({"op": "union_all", "children": [inp(0), inp(1)]}, [VISIT_COLUMNS, PEOPLE_COLUMNS]))
    with pytest.raises(ProtocolError, match="not JSON"):
        parse_program("{")


def rounds_of(root, tables, columns):
    _, result = run(2, program_of(root, columns), tables)
    return result.rounds


def test_rounds_stay_within_the_documented_bounds():
    tables, columns = [VISITS_A, VISITS_B], [VISIT_COLUMNS, VISIT_COLUMNS]
    base = rounds_of(UNION, tables, columns)  # sizes, the shuffle and the opening
    assert base <= 6
    assert rounds_of({"op": "filter", "child": UNION, "condition": '"age" > 30'}, tables, columns) - base <= 12
    sort = {"op": "sort", "child": UNION, "keys": [['"age"', False, False]], "limit": None, "offset": 0}
    assert rounds_of(sort, tables, columns) <= 150
    assert rounds_of({"op": "distinct", "child": UNION}, tables, columns) <= 200
    agg = {"op": "aggregate", "child": UNION, "keys": [["diag", '"diag"']],
           "aggregates": [["n", "COUNT", None, False], ["s", "SUM", '"age"', False]], "threshold": None}
    assert rounds_of(agg, tables, columns) <= 200
