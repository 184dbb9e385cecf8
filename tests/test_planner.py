"""Planner rules: pushdown fixtures (input query -> each party's SQL), the logical stages, EXPLAIN."""

from pathlib import Path

import pytest
import sqlglot

from sqlsecure.planner.logical import Filter, InnerJoin, LocalQuery, Project, Source
from sqlsecure.planner.physical import EquiJoin, RunLocal
from sqlsecure.planner.rules import RuleContext, merge_filters, push_source_predicates


def fixtures():
    text = (Path(__file__).parent / "fixtures" / "pushdown.sql").read_text()
    for block in text.strip().split("-- query\n")[1:]:
        parts = block.strip().split("\n-- ")
        query, rest = parts[0], parts[1:]
        yield query, {r.split("\n", 1)[0]: r.split("\n", 1)[1] for r in rest}


@pytest.mark.parametrize("query, expected", list(fixtures()))
def test_pushdown_fixture(engine, query, expected):
    steps = engine.plan(query, "bank").physical.steps
    assert {s.party: s.sql for s in steps if isinstance(s, RunLocal)} == expected


def test_rules_are_small_rewrites():
    a = Source("a", "p", sqlglot.parse_one("t"), ("x",))
    b = Source("b", "q", sqlglot.parse_one("u"), ("y",))
    on = sqlglot.parse_one('"a"."x" = "b"."y"')
    local = sqlglot.parse_one('"a"."x" > 1')
    plan = Filter(InnerJoin((a, b), (on,)), (local,))
    ctx = RuleContext({"a": "p", "b": "q"})
    merged = merge_filters(plan, ctx)
    assert merged == InnerJoin((a, b), (on, local))
    pushed = push_source_predicates(merged, ctx)
    assert pushed.inputs[0] == Filter(a, (local,)) and pushed.conjuncts == (on,)


def test_stages_are_inspectable(engine):
    plan = engine.plan("SELECT COUNT(*) FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id", "bank")
    assert isinstance(plan.logical, Project) and isinstance(plan.logical.child.child, Filter)
    join = plan.optimized.child.child
    assert isinstance(join, InnerJoin) and all(isinstance(q, LocalQuery) for q in join.inputs)
    (psi,) = [s for s in plan.physical.steps if isinstance(s, EquiJoin)]
    assert psi.device == "PSI(bank, shop)"
    text = plan.explain()
    for needle in ("PYU(bank)  pushdown", "PYU(shop)  pushdown", "PSI(bank, shop)", "between parties:",
                   "what each party learns:", "bank <-> shop"):
        assert needle in text


def test_three_party_chain_prunes_parties_that_compute_nothing(engine):
    # row-level: an aggregate would keep the insurer, whose distinct rows the group threshold counts
    plan = engine.plan(
        "SELECT o.amount FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
        "JOIN insurer.policies p ON p.customer_id = c.id", "bank").physical
    joins = [s for s in plan.steps if isinstance(s, EquiJoin)]
    assert [j.device for j in joins] == ["PSI(bank, shop)", "PSI(bank, insurer)"]
    assert "insurer" not in joins[-1].keep  # it learns no row structure of the join
    assert joins[-1].left_base == "r0"  # the PSI runs on the bank's own rows, not the joined ones
