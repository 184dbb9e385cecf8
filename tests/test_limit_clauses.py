"""LIMIT's options, FETCH and FILTER in translated cross-party queries: computed as DuckDB does, or refused
at plan time naming the clause (LIMIT 10 PERCENT ran as LIMIT 10; FETCH FIRST failed with an InternalError;
FILTER was refused naming a column of its condition)."""

import pytest

from sqlsecure.errors import NotSupportedError
from tests.conftest import refused_at_plan_time
from tests.test_translate import DIAGNOSIS, hospital_federation, hospital_oracles, hospitals  # noqa: F401 (fixtures)

GROUPED_PIDS = f"SELECT pid FROM ({DIAGNOSIS}) d GROUP BY pid ORDER BY pid"


@pytest.mark.parametrize("tail", ["FETCH FIRST 3 ROWS ONLY", "FETCH NEXT 1 ROW ONLY", "OFFSET 2 ROWS FETCH FIRST 2 ROWS ONLY"])
def test_fetch_first_is_a_limit(hospital_oracles, tail):
    hospital_oracles["compared"].check(f"SELECT COUNT(*) AS n, MIN(pid) AS p FROM ({GROUPED_PIDS} {tail}) t", "h1")


@pytest.mark.parametrize("tail, named", [("LIMIT 10 PERCENT", "PERCENT"), ("FETCH FIRST 2 ROWS WITH TIES", "WITH TIES")])
def test_limit_options_are_refused_by_name(hospitals, tail, named):
    refused_at_plan_time(hospitals["compared"], f"SELECT COUNT(*) AS n FROM ({GROUPED_PIDS} {tail}) t", "h1",
                         NotSupportedError, named)


def test_filter_aggregates_are_refused_naming_filter(hospitals):
    sql = f"SELECT d.pid, COUNT(*) FILTER (WHERE d.time > 5) AS n FROM ({DIAGNOSIS}) d GROUP BY d.pid"
    refused_at_plan_time(hospitals["compared"], sql, "h1", NotSupportedError, "FILTER")
