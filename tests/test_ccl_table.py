"""The column-control rule table (planner/ccl_rules.py): deny by default, and the docs say what it says."""

from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from sqlsecure.planner.ccl_rules import RULES, Rule, listing, rule_of

DOC = Path(__file__).resolve().parents[1] / "docs" / "federation.md"


def test_docs_list_exactly_the_rule_table():
    text = DOC.read_text(encoding="utf-8")
    begin, end = "<!-- ccl-rules:begin -->\n", "\n<!-- ccl-rules:end -->"
    assert begin in text and end in text, "docs/federation.md lost its generated rule listing"
    documented = text[text.index(begin) + len(begin):text.index(end)]
    assert documented == listing(), "regenerate the listing: python -c 'from sqlsecure.planner.ccl_rules " \
                                    "import listing; print(listing())'"


def test_only_scqls_aggregates_promote_after_aggregate():
    promoting = {cls.sql_name() for cls, rule in RULES.items() if rule in (Rule.AGGREGATE, Rule.COUNT)}
    assert promoting == {"SUM", "COUNT", "AVG", "MIN", "MAX"}


@pytest.mark.parametrize("sql", ["HISTOGRAM(x)", "error(x)", "getvariable('a')", "my_udf(x, 1)",
                                 "ENTROPY(x)", "LIST_AGG(x)", "PRODUCT(x)"])
def test_functions_sqlglot_does_not_know_have_no_rule(sql):
    assert rule_of(sqlglot.parse_one(sql, read="duckdb")) is None


def test_every_aggregate_and_window_function_has_a_deliberate_rule():
    """No aggregate class is SCALAR by mistake: a row-revealing aggregate must never combine like arithmetic."""
    for cls, rule in RULES.items():
        if issubclass(cls, exp.AggFunc):
            assert rule in (Rule.AGGREGATE, Rule.COUNT, Rule.VALUE_AGGREGATE, Rule.COLLECT, Rule.RANKING, Rule.WINDOW_VALUE), cls
