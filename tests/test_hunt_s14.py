"""What the s14 hunt (tests/test_property_s14.py: hospitals' horizontally partitioned rows, outer joins, the
one-hot group sums, ORDER BY … LIMIT over DECIMALs and dates) found, each as a minimal reproduction checked
against the oracle, with `check` beside it."""

from __future__ import annotations

import pyarrow as pa
import pytest
import sqlglot

from sqlsecure.engine import Engine
from tests.conftest import nested_shape

PARTIES = ("north", "west")


def coded_rows() -> dict[str, dict[str, pa.Table]]:
    """north's diagnoses and west's medications share the row (1, 1); west repeats (4, 1)."""
    def table(pid, code):
        return pa.table({"pid": pa.array(pid, pa.int64()), "code": pa.array(code, pa.int32())})
    return {"north": {"d": table([1, 2, 3, 7, 1, 5], [1, 1, 1, 1, 0, 0])},
            "west": {"m": table([1, 4, 4, 6, 3], [1, 1, 1, 1, 0])}}


@pytest.fixture(scope="module")
def union_oracle(tmp_path_factory, federation_writer, plaintext_grants, oracle_for):
    """Every column PLAINTEXT to the other party, a threshold of 3 rows."""
    path = federation_writer(tmp_path_factory.mktemp("hunt-s14-union"), coded_rows(), plaintext_grants(PARTIES),
                             parties=PARTIES, min_group_size=3)
    with Engine(path) as engine:
        yield oracle_for(engine)


UNION = "(SELECT pid, code FROM north.d UNION SELECT pid, code FROM west.m)"


@pytest.mark.parametrize("sql, want", [
    (f"SELECT u.code AS g, COUNT(*) AS n FROM {UNION} u GROUP BY u.code", [(1, 6)]),
    (f"SELECT COUNT(*) AS n FROM {UNION} u", [(9,)]),
])
def test_a_union_that_removes_duplicates_is_counted_once_under_a_threshold(union_oracle, sql, want):
    """Harness bug (tests/conftest.py): under a group threshold the oracle tagged each UNION branch's rows
    with its branch number to count the owners' rows, so a UNION that removes duplicates kept a row both
    parties hold twice (and west's repeated row): 7 rows of code 1 where DuckDB's UNION has 6. The engine
    answered 6 (its secret program keeps MIN(provenance) per distinct row); now a UNION alone in FROM goes
    through the oracle's `Provenance`, as a UNION ALL beside other FROM items does."""
    assert union_oracle.engine.check(sql, "north") is None
    got = union_oracle.check(sql, "north")
    assert [tuple(r.values()) for r in got.to_pylist()] == want


@pytest.mark.parametrize("sql, nested", [
    (f"SELECT u.code FROM {UNION} u GROUP BY u.code", True),
    ("SELECT u.code FROM (SELECT code FROM north.d UNION ALL SELECT code FROM west.m) u GROUP BY u.code", False),
    ("SELECT u.code FROM ((SELECT code FROM north.d) UNION ALL (SELECT code FROM west.m)) u GROUP BY u.code", False),
    ("SELECT u.code FROM (SELECT code FROM north.d UNION ALL (SELECT code FROM west.m UNION SELECT 1)) u", True),
    ("SELECT u.code FROM (SELECT code FROM north.d INTERSECT SELECT code FROM west.m) u", True),
])
def test_the_oracle_counts_a_union_all_alone_in_from_by_branch_and_every_other_set_by_provenance(sql, nested):
    assert nested_shape(sqlglot.parse_one(sql)) is nested
