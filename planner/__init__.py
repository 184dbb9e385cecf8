"""The planner: SQL text -> logical plan -> optimized logical plan -> physical plan.

`plan_query` runs the whole pipeline; the returned `QueryPlan` keeps each stage inspectable
(`logical`, `optimized`, `physical`) and renders EXPLAIN.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from sqlsecure.planner.build import build_logical
from sqlsecure.planner.catalog import Catalog
from sqlsecure.planner.explain import render_explain
from sqlsecure.planner.logical import Node
from sqlsecure.planner.parse import load_query
from sqlsecure.planner.physical import PhysicalPlan
from sqlsecure.planner.placement import PlacementContext, place
from sqlsecure.planner.rules import RuleContext, optimize
from sqlsecure.planner.usage import Usage
from sqlsecure.policy import Grants


@dataclass(frozen=True)
class QueryPlan:
    sql: str
    qualified: exp.Expression
    logical: Node
    optimized: Node
    physical: PhysicalPlan

    def explain(self) -> str:
        return render_explain(self)


def plan_query(sql: str, *, catalog: Catalog, grants: Grants, issuer: str, dialect: str = "duckdb",
               min_group_size: int = 4) -> QueryPlan:
    tree = load_query(sql, catalog, dialect)
    logical = build_logical(tree, catalog)
    parties: dict[str, str] = {}
    tables: dict[str, tuple[str, str]] = {}
    if isinstance(tree, exp.Select):
        items = ([tree.args["from_"].this] if tree.args.get("from_") else []) + [
            j.this for j in tree.args.get("joins") or []
        ]
        for item in items:
            if isinstance(item, exp.Table) and item.db:
                parties[item.alias_or_name] = item.db
                tables[item.alias_or_name] = (item.db, item.name)
            else:
                ctes = {c.alias_or_name: c.this for c in tree.find_all(exp.CTE)}
                body = ctes.get(item.name, item) if isinstance(item, exp.Table) else item
                owners = {t.db for t in body.find_all(exp.Table) if t.db}
                if len(owners) == 1:
                    parties[item.alias_or_name] = owners.pop()
    optimized = optimize(logical, RuleContext(parties))

    def column_type(alias: str, column: str) -> str | None:
        if alias not in tables:
            return None
        return catalog.column_type(*tables[alias], column)

    usage = Usage(tree, issuer, grants, catalog)
    ctx = PlacementContext(issuer, parties, usage, min_group_size, column_type)
    physical = place(optimized, ctx)
    return QueryPlan(sql, tree, logical, optimized, physical)


__all__ = ["Catalog", "QueryPlan", "plan_query"]
