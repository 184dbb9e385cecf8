"""Federation views: expansion, resolution order, and the configuration errors that name the view."""

from __future__ import annotations

import pytest
from sqlglot import exp

from sqlsecure.errors import ConfigError
from sqlsecure.planner.catalog import Catalog
from sqlsecure.planner.views import check_views, expand_views, parse_views, used_views

CATALOG = Catalog({
    "h1": {"diagnosis": (("pid", "BIGINT"), ("diag", "VARCHAR"))},
    "h2": {"diagnosis": (("pid", "BIGINT"), ("diag", "VARCHAR"))},
})
UNION = "SELECT pid, diag FROM h1.diagnosis UNION ALL SELECT pid, diag FROM h2.diagnosis"


def views(**raw):
    return parse_views(raw, "duckdb")


def expanded(sql: str, vs) -> str:
    import sqlglot
    return expand_views(sqlglot.parse_one(sql), vs).sql()


def test_a_view_becomes_a_derived_table_with_the_references_alias():
    vs = views(diagnosis=UNION)
    assert expanded("SELECT diag FROM diagnosis", vs) == f"SELECT diag FROM ({UNION}) AS diagnosis"
    assert expanded("SELECT d.diag FROM diagnosis AS d", vs) == f"SELECT d.diag FROM ({UNION}) AS d"
    assert expanded("SELECT diag FROM h1.diagnosis", vs) == "SELECT diag FROM h1.diagnosis"  # a party's table


def test_views_of_views_and_ctes_first():
    vs = views(diagnosis=UNION, flu="SELECT pid FROM diagnosis WHERE diag = 'flu'")
    assert "h2.diagnosis" in expanded("SELECT COUNT(*) FROM flu", vs)
    cte = "WITH diagnosis AS (SELECT 1 AS pid) SELECT pid FROM diagnosis"
    assert expanded(cte, vs) == cte  # the query's own CTE shadows the view
    assert used_views(exp.select("*").from_("flu"), vs) == ["flu"]


def test_view_names_are_case_insensitive_like_sql_identifiers():
    vs = views(R=UNION)
    assert expanded("SELECT diag FROM r", vs) == f"SELECT diag FROM ({UNION}) AS r"
    assert expanded("SELECT diag FROM R", vs) == f"SELECT diag FROM ({UNION}) AS R"
    assert expanded("WITH r AS (SELECT 1 AS pid) SELECT pid FROM R", vs) == "WITH r AS (SELECT 1 AS pid) SELECT pid FROM R"
    assert used_views(exp.select("*").from_("R"), vs) == ["r"]


def test_columns_of_a_view():
    assert check_views(views(diagnosis=UNION), CATALOG, "duckdb") == {"diagnosis": [("pid", "BIGINT"),
                                                                                  ("diag", "VARCHAR")]}


@pytest.mark.parametrize("raw, message", [
    ({"a": "SELECT * FROM b", "b": "SELECT * FROM a"}, r"view 'a' refers to itself: a -> b -> a"),
    ({"a": "SELECT pid FROM h3.diagnosis"}, r"view 'a' reads unknown table h3.diagnosis"),
    ({"a": "SELECT nope FROM h1.diagnosis"}, r"view 'a'.*nope"),
    ({"a": "SELECT pid FROM diagnosis"}, r"view 'a' reads 'diagnosis': write its party"),
])
def test_bad_views_are_config_errors_naming_the_view(raw, message):
    with pytest.raises(ConfigError, match=message):
        check_views(views(**raw), CATALOG, "duckdb")


@pytest.mark.parametrize("raw, message", [
    ({"a": 5}, r"\[views\]\.a: must be a string"),
    ({"a": "DELETE FROM h1.diagnosis"}, r"\[views\]\.a: only SELECT"),
    ({"a": "SELECT (1"}, r"\[views\]\.a: syntax error"),
    ({"a": "SELECT 1", "A": "SELECT 2"}, r"\[views\]\.A: another view has this name in other letter case"),
])
def test_unparsable_views(raw, message):
    with pytest.raises(ConfigError, match=message):
        views(**raw)
