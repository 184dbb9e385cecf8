"""Column control operator by operator, table-driven (tests/fixtures/ccl_cases.json, SCQL's ccl_test_in shape).

Each case is checked twice: by column control alone (the rule and its message), and by `check`, which
must agree for every refusal (a refusal by policy comes first, before placement)."""

import json
import re
from pathlib import Path

import pytest

from tests.conftest import sorted_rows
from sqlsecure.engine import Engine
from sqlsecure.errors import PolicyViolation
from sqlsecure.planner.ccl import CCLInference
from sqlsecure.planner.parse import load_query

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "ccl_cases.json").read_text(encoding="utf-8"))
CASES = FIXTURE["cases"]


@pytest.fixture(scope="module")
def engines(tmp_path_factory, make_federation, grants_for):
    """One federation per grant set of the fixture."""
    opened = {}
    for name, grants in FIXTURE["grants"].items():
        path = make_federation(tmp_path_factory.mktemp(f"ccl_{name}"), grants_for(*map(tuple, grants)))
        opened[name] = Engine(path)
    yield opened
    for engine in opened.values():
        engine.close()


def column_control(engine: Engine, sql: str, issuer: str) -> None:
    tree = load_query(sql, engine.catalog, engine.config.dialect, None, issuer)
    CCLInference(engine.policy.grants, engine.catalog, issuer).check_reveal(tree)


def test_the_table_covers_every_operator():
    names = " ".join(c["name"] for c in CASES)
    assert len(CASES) >= 40
    for operator in ("inner join", "left join", "right join", "full join", "payload", "group by", "aggregates",
                     "filter", "having", "compare", "union", "intersect", "subquery", "window", "order by"):
        assert operator in names, operator


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(engines, case):
    engine = engines[case.get("grants", "scql")]
    sql, issuer, expected = case["query"], case["issuer"], case["expected"]
    if expected == "allowed":
        column_control(engine, sql, issuer)
        verdict = engine.check(sql, issuer)
        if "check" in case:  # allowed by column control, not run (yet) or refused by another rule
            assert verdict is not None and re.match(case["check"], verdict), verdict
        else:
            assert verdict is None, verdict
        return
    with pytest.raises(PolicyViolation, match=expected):
        column_control(engine, sql, issuer)
    verdict = engine.check(sql, issuer)
    assert verdict is not None and verdict.startswith("PolicyViolation"), verdict


RUN = [c for c in CASES if c["expected"] == "allowed" and "check" not in c]


@pytest.fixture(scope="module")
def oracles(engines, oracle_for):
    return {name: oracle_for(engine) for name, engine in engines.items()}


@pytest.mark.parametrize("case", RUN, ids=[c["name"] for c in RUN])
def test_allowed_case_answers_as_duckdb(oracles, case):
    """What the table allows and the engine runs equals plain DuckDB over all parties' data (group
    threshold applied by the oracle as the engine does)."""
    oracle = oracles[case.get("grants", "scql")]
    if case.get("oracle", "").startswith("plain"):
        got = oracle.engine.execute(case["query"], case["issuer"]).table
        assert sorted_rows(got) == sorted_rows(oracle.con.sql(case["query"]).to_arrow_table())
        return
    oracle.check(case["query"], case["issuer"])
