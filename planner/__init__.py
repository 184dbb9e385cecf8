"""The planner: SQL text -> logical plan -> optimized logical plan -> physical plan.

`plan_query` runs the whole pipeline; the returned `QueryPlan` keeps each stage inspectable
(`logical`, `optimized`, `physical`) and renders EXPLAIN.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import sqlglot
from sqlglot import exp

from sqlsecure.errors import NotSupportedError, PolicyViolation
from sqlsecure.planner.analysis import check_rules, with_owner_thresholds, with_threshold
from sqlsecure.planner.build import build_logical, subquery_columns
from sqlsecure.planner.catalog import Catalog
from sqlsecure.planner.cost import Estimate, Link
from sqlsecure.planner.ccl import CCLInference
from sqlsecure.planner.explain import render_explain
from sqlsecure.planner.filter_as_having import filter_as_having
from sqlsecure.planner.gather import gather_plan, subquery_owners
from sqlsecure.planner.logical import Node
from sqlsecure.planner.magnitudes import bind_ranges, derived_column_class, published_sizes
from sqlsecure.planner.parse import load_query
from sqlsecure.planner.physical import PhysicalPlan, RunLocal
from sqlsecure.planner.place_threshold import threshold_subqueries
from sqlsecure.planner.placement import PlacementContext, place
from sqlsecure.planner.pushdown_typing import bind_pushdown
from sqlsecure.planner.rules import RuleContext, optimize
from sqlsecure.planner.set_operations import as_union_all
from sqlsecure.planner.translate import translate
from sqlsecure.planner.mask_uses import refuse_masked_uses
from sqlsecure.planner.reveal import DPContext, contribution_bound, output_masks
from sqlsecure.planner.usage import Usage
from sqlsecure.policy.grants import ColumnRef, RevealPolicy


@dataclass(frozen=True)
class QueryPlan:
    sql: str
    qualified: exp.Expression
    logical: Node | None  # the spine's; None: computed at the issuer (planner/gather.py) or translated (planner/translate.py)
    optimized: Node | None
    physical: PhysicalPlan

    visibility: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()  # output -> ((party, constraint), ...)
    names: tuple[str, ...] = ()  # how each bare table name resolved (a federation view, the issuer's table)
    class_4: Estimate | None = None  # the cost model's prices of class 4 on HE and the SPU, when it was asked

    def explain(self, pushdown=None) -> str:
        """EXPLAIN text; `pushdown(party, sql)`: lines saying how a party's source runs its SQL, or None."""
        return render_explain(self, pushdown)


def plan_query(sql: str, *, catalog: Catalog, policy: RevealPolicy, issuer: str,
               dialect: str = "duckdb", parameters=None, enclave: str | None = None,
               measurements: tuple[str, ...] = (), group_sums: str = "auto", link: Link = Link(),
               psi: str = "kkrt", he_key_bits: int = 2048, time_zone: str = "UTC") -> QueryPlan:
    written = load_query(sql, catalog, dialect, parameters, issuer, time_zone)
    # one grouped SELECT where a filter reads a grouped derived table; not under differential privacy,
    # which refuses a HAVING (an exact filter before the noise) and must say so of the query as written
    tree = written if issuer in policy.budgets else filter_as_having(written)
    usage = Usage(tree, issuer, policy.grants, catalog)
    threshold = check_rules(tree, policy.rules, issuer, policy.min_group_size)
    if tree is not written:  # the rules and grants bind the query as written too: either's refusal stands
        threshold = replace(threshold, k=max(threshold.k, check_rules(written, policy.rules, issuer,
                                                                      policy.min_group_size).k))
    foreign = {t.db for t in tree.find_all(exp.Table) if t.db} - {issuer}
    if foreign:
        for query in (written, tree) if tree is not written else (tree,):  # policy first
            Usage(query, issuer, policy.grants, catalog).check_issuer(threshold.k > 0 or issuer in policy.budgets,
                                                                      issuer in policy.budgets)
    dp = _dp_context(tree, policy, issuer, catalog, threshold) if foreign and issuer in policy.budgets else None
    if foreign:  # a mask binds every use of its column, not only the output naming it
        refuse_masked_uses(tree, policy.masks, issuer)
    masks = output_masks(tree, policy.masks, issuer) if foreign else {}
    try:
        logical, optimized, physical, class_4 = _place_spine(
            tree, catalog, issuer, usage, threshold, dp, masks, enclave=enclave, measurements=measurements,
            group_sums=group_sums, link=link, psi=psi, he_key_bits=he_key_bits)
    except NotSupportedError as spine:  # a shape the spine placement does not handle
        logical = optimized = class_4 = None
        try:  # cheapest first: every column it reads is PLAINTEXT to the issuer (SCQL's rule)
            physical = gather_plan(tree, spine, catalog=catalog, policy=policy, issuer=issuer,
                                   threshold=threshold, private=dp is not None or enclave == "always")
        except NotSupportedError:  # then secret operators, composed (on the SPU: not where the enclave must be)
            if enclave == "always":  # no other device: the refusal names the enclave
                raise spine if "enclave" in str(spine) else NotSupportedError(
                    f"the enclave cannot run this query ([enclave] placement = \"always\"): {spine}") from None
            physical = _translated(tree, catalog, issuer, threshold, dp, policy.masks, usage, spine)
    if dp is not None:
        physical = bound_contributions(physical, policy.rules)
    bind_pushdown(physical, catalog)  # what a party's DuckDB would refuse, refused now
    names = tree.meta.get("resolved_names", ())
    return QueryPlan(sql, tree, logical, optimized, physical, _visibility(tree, policy, catalog), names, class_4)


def _place_spine(tree, catalog: Catalog, issuer: str, usage: Usage, threshold, dp, masks, **options):
    """The logical plan of the spine (joins, filter, project, aggregate, sort, limit), its optimized form,
    its placement (`options`: PlacementContext's) and class 4's prices (None: not priced);
    NotSupportedError for any other shape. With an enclave, a set operation of parties' plain SELECTs is
    placed as a SELECT DISTINCT over their UNION ALL (planner/set_operations.py)."""
    rewritten = as_union_all(tree) if options.get("enclave") else None
    tree, set_operation = rewritten if rewritten is not None else (tree, None)
    foreign = {t.db for t in tree.find_all(exp.Table) if t.db} - {issuer}
    if dp is None and foreign:
        tree = with_owner_thresholds(tree, issuer, threshold.k)
        if threshold.k > 0:  # a subquery's aggregate, wherever read (a member, a value): its owner's rows counted
            tree = tree.copy()
            threshold_subqueries(tree, threshold.k, catalog, subquery_owners(tree, issuer))
    logical = build_logical(with_threshold(tree, threshold) if dp is None and foreign else tree, catalog, issuer)
    parties: dict[str, str] = {}
    tables: dict[str, tuple[str, str]] = {}
    typed: dict[str, tuple] = {}  # subqueries and UNIONs in FROM: (body, alias), typed on demand
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
                typed[item.alias_or_name] = (body.this if isinstance(body, exp.Subquery) else body,
                                             item.args.get("alias"))
    optimized = optimize(logical, RuleContext(parties))

    def column_type(alias: str, column: str) -> str | None:
        if alias in typed:
            return subquery_columns_of(alias).get(column)
        if alias not in tables:
            return None
        return catalog.column_type(*tables[alias], column)

    @functools.lru_cache(maxsize=None)
    def subquery_columns_of(alias: str) -> dict[str, str]:
        body, alias_node = typed[alias]
        columns = subquery_columns(body, catalog)
        renamed = [c.name for c in alias_node.columns] if alias_node is not None and alias_node.columns else []
        return dict(zip(renamed, columns.values())) if renamed else columns

    published: dict[str, int | None] = {}

    def rows_of(party: str) -> int | None:
        """The largest published size among the query's tables of `party` (None: unknown); asked of
        the party once per plan."""
        if party not in published:
            sizes = catalog.sizes(party) if catalog.sizes is not None else {}
            known = [sizes[t.name] for t in tree.find_all(exp.Table) if t.db == party and t.name in sizes]
            published[party] = max(known, default=None)
        return published[party]

    sizes = published_sizes(catalog)

    @functools.lru_cache(maxsize=None)
    def magnitude_of(alias: str, column: str) -> int | None:
        """The magnitude class its owner publishes for a base table's numeric column, or that a derived
        table's column of one party has by what computes it (`derived_column_class`); None: none."""
        if catalog.magnitudes is None:
            return None
        if alias in tables:
            return catalog.magnitudes(*tables[alias], (column,)).get(column)
        if alias not in typed or alias not in parties:
            return None
        body, alias_node = typed[alias]
        renamed = [c.name for c in alias_node.columns] if alias_node is not None and alias_node.columns else []
        if renamed:  # (SELECT a ...) AS d(x): the body's output at x's position
            inner = body.named_selects if isinstance(body, exp.Query) else []
            column = inner[renamed.index(column)] if column in renamed and renamed.index(column) < len(inner) else ""
        return derived_column_class(body, column, catalog, sizes) if column else None

    ctx = PlacementContext(issuer, parties, usage, threshold.k, column_type, dp, masks, rows_of=rows_of,
                           magnitude_of=magnitude_of, set_operation=set_operation, **options)
    derived = {alias: parties[alias] for alias in typed if alias in parties}
    physical = bind_ranges(place(optimized, ctx), tables, catalog, column_type, derived, magnitude_of)
    return logical, optimized, physical, ctx.class_4


def _translated(tree, catalog, issuer, threshold, dp, masks, usage, spine: NotSupportedError) -> PhysicalPlan:
    """The operator-by-operator translation, for a shape the spine placement does not handle; when it
    cannot either, NotSupportedError naming both reasons. `masks`: the policy's, applied by the owners;
    an identity_column rule counts groups as on the spine. Under differential privacy (`dp`) the noisy
    count's threshold replaces the group threshold, as on the spine (planner/translate_dp.py)."""
    try:  # an identity_column rule: the outer SELECT's HAVING COUNT(DISTINCT identity) >= k, as the spine's
        if dp is not None:
            return translate(tree, catalog, issuer, 0, usage.passed(), usage.grants, masks, dp)
        return translate(with_threshold(tree, threshold), catalog, issuer, threshold.k, usage.passed(),
                         usage.grants, masks)
    except NotSupportedError as why:
        raise NotSupportedError(f"{why} (and the spine placement: {spine})") from None


def _visibility(tree, policy: RevealPolicy, catalog: Catalog):
    """For EXPLAIN: what every party could learn of each output column, by column control inference."""
    per_party = {p: CCLInference(policy.grants, catalog, p).outputs(tree, {}, check=False) for p in catalog.tables}
    names = [name for name, _ in next(iter(per_party.values()))] if per_party else []
    return tuple((name, tuple((p, outs[i][1].constraint.value) for p, outs in per_party.items()))
                 for i, name in enumerate(names))


def _dp_context(tree, policy: RevealPolicy, issuer: str, catalog: Catalog, threshold) -> DPContext:
    """Contribution bounds of every table in the query (combined as `contribution_bound` says) and
    clamping ranges of its columns, by FROM alias (the spine) and by base column (the translation)."""
    read = {(t.db, t.name) for t in tree.find_all(exp.Table) if t.db}
    for table in read:
        rule = policy.rules.get(table)
        if rule is None or rule.max_rows_per_identity is None or rule.identity_column is None:
            raise PolicyViolation(
                f"differential privacy is on for {issuer}, and {table[0]}.{table[1]} declares no contribution bound "
                f'(set identity_column and max_rows_per_identity in [rules."{table[0]}.{table[1]}"])')
    sensitivity = contribution_bound(tree, lambda table: policy.rules[table].max_rows_per_identity)
    bounds, integer = {}, {}
    items = ([tree.args["from_"].this] if isinstance(tree, exp.Select) and tree.args.get("from_") else []) + [
        j.this for j in (tree.args.get("joins") or [] if isinstance(tree, exp.Select) else [])]
    for item in items:
        if isinstance(item, exp.Table) and item.db:
            rule = policy.rules[(item.db, item.name)]
            for column, dtype in catalog.columns(item.db, item.name):
                if column in rule.bounds:
                    bounds[(item.alias_or_name, column)] = rule.bounds[column]
                integer[(item.alias_or_name, column)] = "INT" in dtype.upper()
    columns = {ColumnRef(party, table, column): (policy.rules[(party, table)].bounds.get(column),
                                                 "INT" in dtype.upper())
               for party, table in read for column, dtype in catalog.columns(party, table)}
    return DPContext(policy.budgets[issuer], float(sensitivity), bounds, integer, threshold.k, columns=columns)


def bound_contributions(physical: PhysicalPlan, rules: dict) -> PhysicalPlan:
    """Each party keeps at most `max_rows_per_identity` rows per identity of each table it reads."""
    steps = []
    for step in physical.steps:
        if isinstance(step, RunLocal):
            tree = sqlglot.parse_one(step.sql, read="duckdb")

            def bound(node, party=step.party):
                rule = rules.get((party, node.name)) if isinstance(node, exp.Table) and not node.db else None
                if rule is None or isinstance(node.parent, exp.Subquery):
                    return node
                inner = sqlglot.parse_one(
                    f'SELECT * FROM "{node.name}" QUALIFY ROW_NUMBER() OVER (PARTITION BY '
                    f'"{rule.identity_column}") <= {rule.max_rows_per_identity}', read="duckdb")
                return exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier(node.alias_or_name,
                                                                                             quoted=True)))

            step = replace(step, sql=tree.transform(bound).sql(dialect="duckdb"))
        steps.append(step)
    return replace(physical, steps=tuple(steps))


__all__ = ["Catalog", "QueryPlan", "plan_query"]
