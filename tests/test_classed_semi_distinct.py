"""Semi- and anti-joins' and DISTINCT's sorts compare classed keys and flags on their widths (issue 16 speed).

`secret_relation.semi_join` sorted (keys not NULL, key limbs, side tag) each as a 64-bit comparison column,
four comparison trees per pair for one key. With the keys' published classes (`program.key_classes`, as
`pk_join` takes them) the flags sort on 2 bits and a classed key, zeroed on rows that match nothing and
offset by 2^M, on M + 2: one packed column with the tiebreak (Secrecy's comorbidity: `pid IN (SELECT ...)`).
DISTINCT sorted (invalid, and each column's NULL flag and limbs) on 64 bits each; now the flags on 2 and a
classed integer column, zeroed on invalid rows, on M + 2 (Secrecy's password reuse: DISTINCT of a GROUP BY
key). Checked against DuckDB (IN, NOT EXISTS, NOT IN with a NULL on the right, DISTINCT over rows a filter
or an aggregate left invalid, NULLs, fixed-point columns; empty sides, 2 and 3 parties) and the widths
the sorts receive.
"""

import pytest

from tests.test_classed_keys import PEOPLE, VISITS, recorded_widths, run_classed
from tests.test_secret_program import inp


def semi_node(kind: str, order: int, null_aware: bool = False) -> dict:
    keys = ['"pid"', '"id"'] if order == 0 else ['"id"', '"pid"']
    node = {"op": "join", "kind": kind, "left": inp(0), "right": inp(1), "left_keys": [keys[0]],
            "right_keys": [keys[1]], "condition": None}
    return {**node, "null_aware": True} if null_aware else node


SEMI = [  # (kind, null_aware, tables in order, SQL)
    ("semi", False, 0, "SELECT * FROM t0 WHERE pid IN (SELECT id FROM t1)"),
    ("semi", False, 1, "SELECT * FROM t0 WHERE id IN (SELECT pid FROM t1)"),
    ("anti", False, 0, "SELECT * FROM t0 WHERE NOT EXISTS (SELECT 1 FROM t1 WHERE t1.id = t0.pid)"),
    ("anti", True, 1, "SELECT * FROM t0 WHERE id NOT IN (SELECT pid FROM t1)"),
]


@pytest.mark.parametrize("nparties,empty", [(2, None), (3, None), (3, 0), (2, 1)])
@pytest.mark.parametrize("kind,null_aware,order,sql", SEMI)
def test_a_classed_semi_join_matches_duckdb(nparties, kind, null_aware, order, sql, empty):
    tables = [VISITS, PEOPLE] if order == 0 else [PEOPLE, VISITS]
    run_classed(nparties, semi_node(kind, order, null_aware), tables, sql, empty)


def test_the_semi_joins_sort_compares_classed_keys_on_their_widths(monkeypatch):
    """(keys not NULL, key + 16, side) on (2, 6, 2) bits: |pid| < 8 and |id| < 16 make the pair's class 4."""
    seen = recorded_widths(monkeypatch)
    run_classed(2, semi_node("semi", 0), [VISITS, PEOPLE], SEMI[0][3])
    assert seen == [[2, 6, 2]]


DISTINCTS = [  # (program root, SQL, table): classed pid / id / age, an expression (64 bits), NULLs, repeats
    ({"op": "distinct", "child": {"op": "project", "child": inp(0), "columns": [["pid", '"pid"']]}},
     "SELECT DISTINCT pid FROM t0", VISITS),
    ({"op": "distinct", "child": {"op": "filter", "child": inp(0), "condition": '"age" > 30 OR "age" IS NULL'}},
     "SELECT DISTINCT * FROM t0 WHERE age > 30 OR age IS NULL", PEOPLE),
    ({"op": "distinct", "child": {"op": "project", "child": inp(0), "columns": [["k", '"id" % 3']]}},
     "SELECT DISTINCT id % 3 AS k FROM t0", PEOPLE),
    ({"op": "distinct", "child": {"op": "aggregate", "child": inp(0), "keys": [["pid", '"pid"']], "threshold": None,
                                  "aggregates": [["top", "MAX", '"pid"', False], ["n", "COUNT", None, False]]}},
     "SELECT DISTINCT pid, MAX(pid) AS top, COUNT(*) AS n FROM t0 GROUP BY pid", VISITS),
]


@pytest.mark.parametrize("nparties,empty", [(2, None), (3, None), (2, 0)])
@pytest.mark.parametrize("case", range(len(DISTINCTS)))
def test_a_classed_distinct_matches_duckdb(nparties, case, empty):
    root, sql, table = DISTINCTS[case]
    run_classed(nparties, root, [table], sql, empty)


def test_distincts_sort_compares_flags_and_classed_columns_on_their_widths(monkeypatch):
    """(invalid, pid's NULL flag, pid + 8) on (2, 2, 5) bits; (invalid, id's flag, id + 16, age's flag, age +
    128) on (2, 2, 6, 2, 9); an expression of id has no class: 64 bits."""
    seen = recorded_widths(monkeypatch)
    for root, sql, table in DISTINCTS[:3]:
        run_classed(2, root, [table], sql)
    assert seen == [[2, 2, 5], [2, 2, 6, 2, 9], [2, 2, 64]]
