"""Shapes the SPU refused or paired row by row (issue 16, session 12), each against plain DuckDB.

- NOT EXISTS with one inequality beside its equalities (or none: the extreme of all rows), and `A LEFT JOIN B ON keys AND L(a) op R(b) WHERE
  b.key IS NULL`, read A's rows without a pair by B's extreme per key (`rewrite_semijoin.anti_in_pairs`): a
  sort-based join, n + m rows, not n * m; NULL keys, NULL operands and keys without a non-NULL value keep
  the row, as in DuckDB. A LEFT join's ON may hold any condition (it decides which pairs match).
- SUM / AVG (DISTINCT x), grouped, ungrouped and per row (`relational.Counted.summed`: one sort by (group,
  x), the first row of each run summed); MIN / MAX (DISTINCT x) are MIN / MAX.
- A GROUP BY per row (`secret_relation._per_row`) takes a row's AVG as its value, without a division.

2 and 3 parties, NULLs, repeated values, empty inputs; `check` agreeing with execution, refusals too.
"""

import contextlib
from decimal import Decimal

import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import NotSupportedError
from sqlsecure.executors.spu.program import parse_program
from tests.test_secret_program import _compare_rows, check, inp, program_of, run  # noqa: F401 - autouse
from tests.test_translate import COMPARED, GROUPED, HOSPITALS, hospital_federation, union_of  # noqa: F401 (a fixture)

D3, M3 = union_of("diagnosis", "pid, diag, time"), union_of("medication", "pid, med, time")
D2, M2 = union_of("diagnosis", "pid, diag, time", HOSPITALS[:2]), union_of("medication", "pid, med, time", HOSPITALS[:2])
NOTE = "rows in pairs:"


@pytest.fixture(scope="module")
def oracles(hospital_federation, oracle_for):
    """{(grants, empty party): oracle}: 3 hospitals of 16 rows per table (min_group_size 2)."""
    with contextlib.ExitStack() as stack:
        yield {(name, empty): oracle_for(stack.enter_context(Engine(hospital_federation(grants, empty, n=16),
                                                                     timeout=120)))
               for name, grants in (("compared", COMPARED), ("grouped", GROUPED)) for empty in (None, "h3")}


def checked(oracle, sql: str, rewritten: bool | None = None, issuer: str = "h1"):
    """`check` accepts, EXPLAIN names the rewrite iff `rewritten` (None: not asked), the answer is DuckDB's."""
    assert oracle.engine.check(sql, issuer) is None
    if rewritten is not None:
        text = oracle.engine.explain(sql, issuer)
        assert (NOTE in text) is rewritten, sql
        assert ("[all pairs" in text) is not rewritten, sql
    return oracle.check(sql, issuer)


def not_exists(where: str = "m.time > d.time", outer: str = f"({D3})", inner: str = f"({M3})",
               select: str = "d.pid", also: str = "") -> str:
    return (f"SELECT {select} FROM {outer} d WHERE {also}NOT EXISTS (SELECT 1 FROM {inner} m "
            f"WHERE m.pid = d.pid AND {where})")


# -- 1. anti joins with one inequality -----------------------------------------------------------------

ANTI = {  # name: (query, empty party)
    "later medication, 3 parties": (not_exists(), None),
    "2 parties": (not_exists(outer=f"({D2})", inner=f"({M2})"), None),
    "an empty party": (not_exists(), "h3"),
    "at or before, written the other way round": (not_exists("d.time >= m.time"), None),
    "expressions of each side, the subquery's own filter": (
        not_exists("m.med = 'aspirin' AND d.time + 3 <= m.time - 1"), None),
    "a condition on the outer row inside": (not_exists("d.diag = 'heart' AND m.time < d.time"), None),
    "counted over the survivors": (not_exists("m.time < d.time", select="COUNT(DISTINCT d.pid) AS n"), None),
    "beside another condition": (not_exists(also="d.diag <> 'flu' AND "), None),
    "the issuer's own rows inside": (not_exists(inner="h1.medication"), None),
    "no equality: the extreme of all the rows": (
        f"SELECT d.pid FROM ({D3}) d WHERE NOT EXISTS (SELECT 1 FROM ({M3}) m WHERE m.time > d.time + 40)", None),
    "no equality, an empty party": (
        f"SELECT d.pid FROM ({D3}) d WHERE NOT EXISTS (SELECT 1 FROM ({M3}) m WHERE m.time > d.time + 40)", "h3"),
    "several keys": ("SELECT d.pid FROM ({D3}) d WHERE NOT EXISTS (SELECT 1 FROM ({D3}) x WHERE x.pid = d.pid "
                     "AND x.diag = d.diag AND x.time > d.time)".replace("{D3}", D3), None),
}


@pytest.mark.parametrize("name", ANTI)
def test_not_exists_with_an_inequality_reads_per_key_extremes(oracles, name):
    sql, empty = ANTI[name]
    checked(oracles[("compared", empty)], sql, rewritten=True)


def test_nothing_survives_and_everything_survives(oracles):
    """Every row has a later partner (none kept) or none has (every row kept, NULL pids included)."""
    oracle = oracles[("compared", None)]
    assert checked(oracle, not_exists("(m.time > d.time - 1000 OR m.time IS NULL)"), rewritten=False) is not None
    kept = checked(oracle, not_exists("m.time > d.time + 1000"), rewritten=True)
    assert kept.num_rows == 48 and None in kept.column("pid").to_pylist()  # 3 x 16 rows, NULL pids kept


@pytest.mark.parametrize("empty", [None, "h3"])
def test_exists_with_only_an_inequality_reads_one_extreme(oracles, empty):
    """EXISTS without an equality: each outer row beside the subquery's one MIN (n rows, not n * m)."""
    checked(oracles[("compared", empty)], f"SELECT d.pid FROM ({D3}) d WHERE EXISTS (SELECT 1 FROM ({M3}) m WHERE "
            "m.med = 'statin' AND m.time < d.time - 50)", rewritten=True)


LEFT_ANTI = {  # name: (query, rewritten): the LEFT join's NULL-extended rows, an anti join
    "the issuer's own right side": (f"SELECT d.pid FROM ({D3}) d LEFT JOIN h1.medication m ON d.pid = m.pid "
                                    "AND m.time > d.time WHERE m.pid IS NULL", True),
    "a counted right side: all pairs, still answered": (
        f"SELECT d.pid FROM ({D3}) d LEFT JOIN ({M3}) m ON d.pid = m.pid AND m.time > d.time WHERE m.pid IS NULL",
        False),
}


@pytest.mark.parametrize("name", LEFT_ANTI)
def test_left_join_without_a_match(oracles, name):
    sql, rewritten = LEFT_ANTI[name]
    checked(oracles[("compared", None)], sql, rewritten=rewritten)


LEFT_ON = [  # a LEFT / RIGHT join whose ON holds more than equalities: the pairs it decides, the rest NULL
    f"SELECT d.pid, m.pid AS mp FROM ({D3}) d LEFT JOIN ({M2}) m ON d.pid = m.pid AND m.time > d.time",
    f"SELECT d.pid, m.pid AS mp FROM ({D2}) d LEFT JOIN ({M3}) m ON d.pid = m.pid AND d.diag = 'heart'",
    f"SELECT COUNT(*) AS n, COUNT(m.pid) AS matched FROM ({D3}) d LEFT JOIN ({M3}) m ON d.pid = m.pid "
    "AND m.time >= d.time",
    f"SELECT d.pid, m.pid AS mp FROM ({D2}) d RIGHT JOIN ({M2}) m ON d.pid = m.pid AND d.time <> m.time",
]


@pytest.mark.parametrize("sql", LEFT_ON)
def test_outer_join_conditions_across_the_sides(oracles, sql):
    checked(oracles[("compared", None)], sql)


# -- 2. SUM / AVG (DISTINCT x) ---------------------------------------------------------------------------

VISITS_A = pa.table({
    "g": pa.array([1, 1, 1, 2, None, None, 2, 3], pa.int64()),
    "x": pa.array([5, 5, None, 7, 2, 2, -7, None], pa.int64()),
    "f": pa.array([1.5, 1.5, 2.25, None, -0.5, 8.0, 8.0, None], pa.float64()),
    "p": pa.array([Decimal("1.10"), Decimal("1.10"), None, Decimal("-3.25"), Decimal("0.05"), None,
                   Decimal("2.00"), Decimal("9.99")], pa.decimal128(9, 2)),
})
VISITS_B = pa.table({
    "g": pa.array([1, 2, 2, None, 4], pa.int64()),
    "x": pa.array([5, 7, 9, 3, 4], pa.int64()),
    "f": pa.array([2.25, None, 0.75, -0.5, 4.0], pa.float64()),
    "p": pa.array([Decimal("1.10"), Decimal("2.00"), None, Decimal("0.05"), Decimal("4.40")], pa.decimal128(9, 2)),
})
VISIT_COLUMNS = [["g", "int"], ["x", "int"], ["f", "fixed"], ["p", "decimal.2"]]
BOTH = {"op": "union_all", "children": [inp(0), inp(1)]}
BOTH_SQL = "(SELECT * FROM t0 UNION ALL SELECT * FROM t1)"
# a DOUBLE's distinct values only once rounded (fixed point would merge doubles 2^-16 apart: spu.fixed_keys)
DISTINCT_CALLS = [["sx", "SUM", '"x"', True], ["ax", "AVG", '"x"', True], ["sf", "SUM", 'ROUND("f", 2)', True],
                  ["af", "AVG", 'ROUND("f", 2)', True], ["sp", "SUM", '"p"', True], ["ap", "AVG", '"p"', True],
                  ["cx", "COUNT", '"x"', True], ["n", "COUNT", None, False], ["tx", "SUM", '"x"', False]]
DISTINCT_SQL = ("SUM(DISTINCT x) AS sx, AVG(DISTINCT x) AS ax, SUM(DISTINCT ROUND(f, 2)) AS sf, "
                "AVG(DISTINCT ROUND(f, 2)) AS af, "
                "SUM(DISTINCT p) AS sp, AVG(DISTINCT p) AS ap, COUNT(DISTINCT x) AS cx, COUNT(*) AS n, "
                "SUM(x) AS tx")


def aggregate(child, keys, calls=DISTINCT_CALLS) -> dict:
    return {"op": "aggregate", "child": child, "keys": keys, "aggregates": calls, "threshold": None}


def per_row(child, calls, null_group: bool = True) -> dict:
    """GROUP BY g, which the planner knows unique in `child` (NULLs one group where `null_group`)."""
    return {**aggregate(child, [["g", '"g"']], calls), "per_row": {"null_group": null_group}}


@pytest.mark.parametrize("nparties", [2, 3])
def test_grouped_distinct_sums_match_duckdb(nparties):
    check(nparties, aggregate(BOTH, [["g", '"g"']]), [VISIT_COLUMNS, VISIT_COLUMNS], [VISITS_A, VISITS_B],
          f"SELECT g, {DISTINCT_SQL} FROM {BOTH_SQL} GROUP BY g")


@pytest.mark.parametrize("nparties", [2, 3])
def test_ungrouped_distinct_sums_match_duckdb(nparties):
    check(nparties, aggregate(BOTH, []), [VISIT_COLUMNS, VISIT_COLUMNS], [VISITS_A, VISITS_B],
          f"SELECT {DISTINCT_SQL} FROM {BOTH_SQL}")


@pytest.mark.parametrize("nparties", [2, 3])
def test_distinct_sums_per_row_and_their_null_group(nparties):
    """Keys unique but NULL twice: per row SUM / AVG (DISTINCT x) is x; the NULL group's sums its distinct values."""
    keyed = {"op": "filter", "child": BOTH, "condition": '"g" IS NULL OR "x" = 4 OR "x" = -7'}
    check(nparties, per_row(keyed, DISTINCT_CALLS), [VISIT_COLUMNS, VISIT_COLUMNS], [VISITS_A, VISITS_B],
          f"SELECT g, {DISTINCT_SQL} FROM {BOTH_SQL} WHERE g IS NULL OR x = 4 OR x = -7 GROUP BY g")


@pytest.mark.parametrize("nparties,empty", [(2, [0, 1]), (3, [0, 1]), (2, [1])])
@pytest.mark.parametrize("keys", [[], [["g", '"g"']]])
def test_distinct_sums_over_empty_inputs(nparties, empty, keys):
    tables = [t.slice(0, 0) if i in empty else t for i, t in enumerate([VISITS_A, VISITS_B])]
    group = " GROUP BY g" if keys else ""
    check(nparties, aggregate(BOTH, keys), [VISIT_COLUMNS, VISIT_COLUMNS], tables,
          f"SELECT {'g, ' if keys else ''}{DISTINCT_SQL} FROM {BOTH_SQL}{group}")


def test_distinct_sums_beside_the_group_threshold():
    """The threshold's provenance sorts after the DISTINCT sums' (two `Counted`, one carried per sort)."""
    table = VISITS_A.append_column("prov", pa.array(range(VISITS_A.num_rows), pa.int64()))
    node = {**aggregate(inp(0), [["g", '"g"']], [["sx", "SUM", '"x"', True], ["af", "AVG", 'ROUND("f", 2)', True]]),
            "threshold": {"k": 2, "provenance": ["prov"]}}
    check(2, node, [[*VISIT_COLUMNS, ["prov", "int"]]], [table],
          "SELECT g, SUM(DISTINCT x) AS sx, AVG(DISTINCT ROUND(f, 2)) AS af FROM t0 GROUP BY g "
          "HAVING COUNT(DISTINCT prov) >= 2")


def test_distinct_sums_of_what_cannot_be_summed_are_refused_at_parse():
    for column, kind in (("b", "bool"), ("t", "text")):
        node = aggregate(inp(0), [], [["s", "SUM", f'"{column}"', True]])
        with pytest.raises(NotSupportedError, match=r"SUM"):
            parse_program(program_of(node, [[[column, kind]]]))


DISTINCT_QUERIES = [  # over the federation (GROUPED grants: med a group key, time aggregated)
    f"SELECT m.med, SUM(DISTINCT m.time) AS s, AVG(DISTINCT m.time) AS a, COUNT(DISTINCT m.time) AS c, "
    f"SUM(m.time) AS t FROM ({M3}) m GROUP BY m.med",
    f"SELECT SUM(DISTINCT m.time) AS s, AVG(DISTINCT m.time) AS a, MIN(DISTINCT m.time) AS lo, "
    f"MAX(DISTINCT m.time) AS hi FROM ({M2}) m",
    f"SELECT t.med, SUM(DISTINCT t.time) AS s FROM (SELECT m.med, m.time FROM ({M3}) m) t GROUP BY t.med",
    f"SELECT t.med, SUM(DISTINCT t.s) AS s, AVG(DISTINCT t.s) AS a FROM (SELECT m.med, SUM(m.time) AS s "
    f"FROM ({M3}) m GROUP BY m.med) t GROUP BY t.med",  # per row
]


@pytest.mark.parametrize("sql", DISTINCT_QUERIES)
@pytest.mark.parametrize("empty", [None, "h3"])
def test_distinct_aggregates_over_the_federation(oracles, sql, empty):
    checked(oracles[("grouped", empty)], sql)


def test_distinct_sum_of_booleans_refused_and_check_agrees(oracles, assert_refused):
    assert_refused(oracles[("grouped", None)].engine, f"SELECT SUM(DISTINCT m.time > 50) AS s FROM ({M3}) m",
                   "h1", NotSupportedError, "SUM")


# -- 3. AVG per row ------------------------------------------------------------------------------------

def test_avg_per_row_divides_nothing():
    """AVG(x) per row is x: beside SUM alone it adds its range check (a comparison and one opening), not
    the two divisions (~70 rounds at 2 parties) the sorted GROUP BY needs; still DuckDB's answer."""
    base = [["n", "COUNT", None, False], ["sv", "SUM", '"x"', False]]
    table = VISITS_A.filter(pa.compute.is_valid(VISITS_A.column("g"))).slice(0, 4).set_column(
        0, "g", pa.array([1, 2, 3, 4], pa.int64()))
    rounds = []
    for calls in (base, [*base, ["mean", "AVG", '"f"', False]]):
        node = per_row(inp(0), calls, null_group=False)
        rounds.append(run(2, program_of(node, [VISIT_COLUMNS]), [table])[1].rounds)
    assert rounds[1] - rounds[0] <= 30, rounds
    check(2, per_row(inp(0), [*base, ["mean", "AVG", '"f"', False]], null_group=False), [VISIT_COLUMNS], [table],
          "SELECT g, COUNT(*) AS n, SUM(x) AS sv, AVG(f) AS mean FROM t0 GROUP BY g")


# -- 3. the NULL group's MIN(provenance) ----------------------------------------------------------------

KEYED = VISITS_A.set_column(0, "g", pa.array([1, None, 3, None, None, 6, 7, 8], pa.int64()))  # NULL three times


def provenance_extremes(name: str) -> tuple[dict, list, pa.Table]:
    """GROUP BY g per row with MIN / MAX of a row-number column called `name` (its owner's 0..n-1)."""
    table = KEYED.append_column(name, pa.array(range(KEYED.num_rows), pa.int64()))
    calls = [["n", "COUNT", None, False], ["lo", "MIN", f'"{name}"', False], ["hi", "MAX", f'"{name}"', False]]
    return per_row(inp(0), calls), [[*VISIT_COLUMNS, [name, "int"]]], table


@pytest.mark.parametrize("nparties", [2, 3])
def test_null_group_extremes_of_provenance_match_duckdb(nparties):
    node, columns, table = provenance_extremes("__prov_r0")
    check(nparties, node, columns, [table],
          'SELECT g, COUNT(*) AS n, MIN("__prov_r0") AS lo, MAX("__prov_r0") AS hi FROM t0 GROUP BY g')


def test_null_group_compares_provenance_at_its_width():
    """The same rows as a provenance column (`program.provenance_bits`: 8 rows, 4 bits) and as any integer
    column (64 bits): the NULL group's MIN / MAX tournament sends fewer bytes in no more rounds."""
    costs = {}
    for name in ("__prov_r0", "row_no"):
        node, columns, table = provenance_extremes(name)
        result = run(2, program_of(node, columns), [table])[1]
        costs[name] = (result.rounds, result.party_bytes())
    assert costs["__prov_r0"][0] <= costs["row_no"][0] and costs["__prov_r0"][1] < costs["row_no"][1], costs
