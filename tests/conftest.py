"""The oracle harness (docs/design.md, "The test oracle"): a federation built from generated data, and
plain DuckDB over the union of all parties' tables (one schema per party) to compare every answer with."""

from __future__ import annotations

import decimal
import glob
import math
import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import sqlglot
from hypothesis import HealthCheck, settings
from sqlglot import exp

from sqlsecure.engine import Engine
from sqlsecure.planner.gather import lookup_aliases

# Every property test draws the same examples on every run (a hash of the test picks the seed) and keeps
# no example database: a CI failure is then reproducible and never chance. Its examples change only
# with the test's code or Hypothesis's version. Tests that set their own @settings inherit these.
# too_slow measures this machine's speed, which no test may depend on. To hunt for new failing examples
# on purpose (never in CI), run with HYPOTHESIS_PROFILE=default.
settings.register_profile("deterministic", derandomize=True, database=None, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

PARTIES = ("bank", "shop", "insurer")


def generate_tables(seed: int = 1, n: int = 120) -> dict[str, dict[str, pa.Table]]:
    """Three parties' tables with overlapping ids, duplicate keys and NULLs."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, n, n)  # duplicates on purpose
    ids_null = pa.array([None if i % 17 == 0 else int(v) for i, v in enumerate(ids)], pa.int64())
    regions = np.array(["north", "south", "east", "west"])
    customers = pa.table({
        "id": ids_null,
        "name": pa.array([f"c{i}" for i in range(n)]),
        "age": pa.array(rng.integers(18, 80, n), pa.int32()),
        "income": pa.array([decimal.Decimal(int(v)) / 100 for v in rng.integers(100000, 9000000, n)],
                           pa.decimal128(12, 2)),
        "region": pa.array(regions[rng.integers(0, 4, n)]),
    })
    accounts = pa.table({
        "account_id": pa.array(np.arange(n // 2), pa.int64()),
        "customer_id": pa.array(rng.integers(1, n, n // 2), pa.int64()),
        "balance": pa.array(rng.normal(1000, 300, n // 2).round(2)),
    })
    m = int(n * 1.5)
    orders = pa.table({
        "order_id": pa.array(np.arange(m), pa.int64()),
        "customer_id": pa.array([None if i % 13 == 0 else int(v) for i, v in
                                 enumerate(rng.integers(1, int(n * 1.3), m))], pa.int32()),
        "amount": pa.array(rng.integers(100, 50000, m) / 100.0),
        "category": pa.array(np.array(["books", "games", "garden"])[rng.integers(0, 3, m)]),
        "region": pa.array(regions[rng.integers(0, 4, m)]),
    })
    policies = pa.table({
        "customer_id": pa.array(rng.integers(1, n, n // 2) * 1, pa.int64()),
        "premium": pa.array(rng.integers(1000, 90000, n // 2) / 100.0),
        "claims": pa.array(rng.integers(0, 4, n // 2), pa.int32()),
    })
    return {"bank": {"customers": customers, "accounts": accounts}, "shop": {"orders": orders},
            "insurer": {"policies": policies}}


def write_federation(directory: Path, tables, grants: str, parties=PARTIES, min_group_size: int = 4,
                     dialect: str = "duckdb", **options) -> Path:
    """`options`: more [federation] keys (group_sums = "he", psi = "ecdh", he_key_bits = 3072, ...)."""
    lines = ["[federation]", 'name = "test"', f'dialect = "{dialect}"', f"min_group_size = {min_group_size}"]
    lines += [f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}"
              for key, value in options.items()] + [""]
    for party in parties:
        lines += [f"[parties.{party}]", f"[parties.{party}.tables]"]
        declared = []  # CSV columns whose type no value tells: declared, as their owner would
        for name, table in tables[party].items():
            folder = directory / party
            folder.mkdir(parents=True, exist_ok=True)
            if party == "shop":  # one party on CSV, the others on Parquet
                path = folder / f"{name}.csv"
                pacsv.write_csv(table, path)
                untyped = [(c, t) for c, t in duckdb_types(table) if table[c].null_count == table.num_rows]
                if untyped:
                    body = ", ".join('%s = "%s"' % column for column in untyped)
                    declared.append(f"{name} = {{ {body} }}")
            else:
                path = folder / f"{name}.parquet"
                pq.write_table(table, path)
            lines.append(f'{name} = "{path.relative_to(directory)}"')
        if declared:
            lines += [f"[parties.{party}.types]", *declared]
        lines.append("")
    path = directory / "federation.toml"
    path.write_text("\n".join(lines) + "\n" + grants, encoding="utf-8")
    return path


def duckdb_types(table: pa.Table) -> list[tuple[str, str]]:
    """(column, DuckDB type) of an Arrow table, as DuckDB reads it."""
    con = duckdb.connect()
    try:
        con.register("t", table.slice(0, 0))
        return [(row[0], row[1]) for row in con.execute("DESCRIBE t").fetchall()]
    finally:
        con.close()


def grants_toml(*grants: tuple[str, tuple[str, ...], str]) -> str:
    """[[grants]] sections from (party, columns, constraint) triples."""
    sections = []
    for party, columns, constraint in grants:
        names = ", ".join(f'"{c}"' for c in columns)
        sections.append(f'[[grants]]\nparty = "{party}"\ncolumns = [{names}]\nconstraint = "{constraint}"\n')
    return "\n".join(sections)


# Differential privacy for bank over the test tables: its budget and the contribution bounds DP needs.
BANK_DP = """[privacy.bank]
epsilon = 3.0
query_epsilon = 1.0
delta = 1e-5

[rules."shop.orders"]
identity_column = "customer_id"
max_rows_per_identity = 10
bounds = { amount = [0, 500] }

[rules."bank.customers"]
identity_column = "id"
max_rows_per_identity = 1
"""


@pytest.fixture(scope="session")
def bank_dp() -> str:
    """[privacy.bank] and the owners' contribution bounds, as TOML (BANK_DP)."""
    return BANK_DP


def all_plaintext(parties=PARTIES) -> str:
    """Grants that let every party see every column: for correctness tests only."""
    out = []
    for party in parties:
        others = [f'"{p}.*.*"' for p in parties if p != party]
        if others:
            out.append(f'[[grants]]\nparty = "{party}"\ncolumns = [{", ".join(others)}]\nconstraint = "PLAINTEXT"\n')
    return "\n".join(out)


def _union_branches(node: exp.Expression) -> list[exp.Select]:
    if isinstance(node, exp.Union):
        return _union_branches(node.left) + _union_branches(node.right)
    return _union_branches(node.this) if isinstance(node, exp.Subquery) else [node]


def protected_counts(tree: exp.Select, issuer: str, catalog=None) -> list[exp.Expression]:
    """The group threshold's counts, as the engine applies it: per party other than the issuer, its
    distinct rows in the group, per input (`rowid`s of each of its tables in FROM, but a table joined on
    its declared unique key to another of its party's (planner/gather.py, `lookup_aliases`), row numbers
    of each of its subqueries or CTEs in FROM; a LEFT JOIN's NULL-extended rows are none of its rows);
    per UNION ALL branch of such a party, its rows. Tags subqueries in place; COUNT(*) if none."""
    rows: dict[str, list[exp.Expression]] = {}
    counts = []
    ctes = {cte.alias_or_name: exp.Subquery(this=cte.this) for cte in tree.find_all(exp.CTE)}
    bodies = {cte.alias_or_name: cte.this for cte in tree.find_all(exp.CTE)}  # a CTE's owners, through the CTEs it reads
    lookups = lookup_aliases(tree, catalog) if catalog is not None else set()
    for source in [tree.args["from_"].this, *(j.this for j in tree.args.get("joins") or [])]:
        name = source.alias_or_name
        if isinstance(source, exp.Table) and source.db:
            if name not in lookups:
                rows.setdefault(source.db, []).append(exp.column("rowid", table=name))
            continue
        if isinstance(source, exp.Table) and source.name in ctes:  # a CTE: its body, as a subquery in FROM
            source = ctes[source.name]
        if isinstance(source, exp.Subquery) and isinstance(source.this, exp.Union):
            for i, branch in enumerate(_union_branches(source.this)):
                if "__oracle_branch" not in branch.named_selects:  # a CTE read twice is tagged once
                    branch.select(exp.alias_(exp.Literal.number(i), "__oracle_branch"), copy=False)
                owners = _owners(branch, bodies)
                if owners - {issuer}:
                    counts.append(exp.Sum(this=exp.If(this=exp.EQ(this=exp.column("__oracle_branch", table=name),
                                                                   expression=exp.Literal.number(i)),
                                                      true=exp.Literal.number(1), false=exp.Literal.number(0))))
        elif isinstance(source, exp.Subquery) and isinstance(source.this, exp.Select):
            owners = _owners(source, bodies)
            if len(owners) == 1:
                if "__oracle_row" not in source.this.named_selects:
                    source.this.select(exp.alias_(sqlglot.parse_one("ROW_NUMBER() OVER ()"), "__oracle_row"),
                                       copy=False)
                rows.setdefault(owners.pop(), []).append(exp.column("__oracle_row", table=name))
    for party, refs in rows.items():  # each of its inputs on its own, as the engine counts (docs/architecture.md)
        if party != issuer:
            counts += [exp.Count(this=exp.Distinct(expressions=[row])) for row in refs]
    return counts or [exp.Count(this=exp.Star())]


def _owners(node: exp.Expression, ctes: dict | None = None) -> set[str]:
    """The parties whose tables `node` reads, through the CTEs it names (`ctes`: name -> body), a CTE
    reading another CTE included."""
    ctes = {**(ctes or {}), **{c.alias_or_name: c.this for c in node.find_all(exp.CTE)}}
    owners, seen = set(), set()
    for table in node.find_all(exp.Table):
        if table.db:
            owners.add(table.db)
        elif table.name in ctes and table.name not in seen:
            seen.add(table.name)
            owners |= _owners(ctes[table.name], {n: b for n, b in ctes.items() if n != table.name})
    return owners


def _sources(select: exp.Select) -> list[exp.Expression]:
    return [select.args["from_"].this, *(j.this for j in select.args.get("joins") or [])] \
        if select.args.get("from_") else []


def nested_shape(tree: exp.Expression) -> bool:
    """A shape the operator translation answers (planner/translate.py): a FROM item (derived table, CTE,
    UNION ALL) reading several parties, or a UNION ALL beside other FROM items; a UNION that removes
    duplicates (or INTERSECT / EXCEPT) alone in FROM too (its rows are distinct over the branches, which
    tagging each branch's rows would keep apart)."""
    if not isinstance(tree, exp.Select):
        return isinstance(tree, exp.Union) and len(_owners(tree)) > 1
    ctes = {cte.alias_or_name: cte.this for cte in tree.find_all(exp.CTE)}
    sources = [ctes.get(s.name, s) if isinstance(s, exp.Table) and not s.db else s for s in _sources(tree)]
    return any(not isinstance(s, exp.Table) and len(_owners(s, ctes)) > 1 for s in sources) and (
        len(sources) > 1 or not _union_all(getattr(sources[0], "this", None)))


def _union_all(node) -> bool:
    """A UNION ALL of its branches (nested set operations too), not a UNION, INTERSECT or EXCEPT."""
    while isinstance(node, exp.Subquery):
        node = node.this
    if not isinstance(node, exp.SetOperation):
        return False
    return isinstance(node, exp.Union) and not node.args.get("distinct") and all(
        _union_all(side) for side in (node.left, node.right) if isinstance(side, (exp.SetOperation, exp.Subquery))
        and isinstance(side.unnest() if isinstance(side, exp.Subquery) else side, exp.SetOperation))


def _owner_aggregate_in_from(tree: exp.Expression, issuer: str) -> bool:
    """A SELECT that does not aggregate over a FROM item that is a protected owner's aggregate: its groups
    keep >= k rows at the owner (docs/federation.md), as Provenance's leaf does."""
    if not isinstance(tree, exp.Select) or tree.args.get("group") or any(
            a.find_ancestor(exp.Window) is None and a.find_ancestor(exp.Select) is tree
            for e in tree.expressions for a in e.find_all(exp.AggFunc)):
        return False
    ctes = {cte.alias_or_name: cte.this for cte in tree.find_all(exp.CTE)}
    bodies = [ctes.get(s.name, s) if isinstance(s, exp.Table) and not s.db else s for s in _sources(tree)]
    return any(not isinstance(b, exp.Table) and _owners(b) - {issuer} and len(_owners(b)) == 1
               and any(a.find_ancestor(exp.Window) is None for a in b.find_all(exp.AggFunc)) for b in bodies)


class Provenance:
    """The group threshold of nested shapes, as the engine applies it (docs/federation.md): each single-party
    FROM item of a protected owner (a party other than the issuer) numbers its rows (`__p<n>`); the rows
    carry these numbers up (NULL in other UNION ALL branches; MIN per group through an inner aggregate or
    DISTINCT); the outermost aggregate keeps a group only with >= k distinct numbers of each."""

    def __init__(self, issuer: str, k: int):
        self.issuer, self.k, self.n = issuer, k, 0

    def query(self, node: exp.Expression, under: bool, ctes: dict) -> tuple[exp.Expression, list[str]]:
        if isinstance(node, exp.Subquery):
            return self.query(node.this, under, ctes)
        if isinstance(node, exp.Union):
            branches = [self.query(b, under, ctes) for b in _union_branches(node)]
            every = [p for _, ps in branches for p in ps]
            for branch, own in branches:  # every branch: its columns, then every branch's numbers in one order
                mine = {e.alias_or_name: e for e in branch.expressions[len(branch.expressions) - len(own):]} \
                    if own else {}
                kept = branch.expressions[:len(branch.expressions) - len(own)]
                branch.set("expressions", kept + [mine.get(p) or exp.alias_(exp.cast(exp.null(), "BIGINT"), p)
                                                  for p in every])
            union = branches[0][0]
            distinct = bool(node.args.get("distinct"))
            for branch, _ in branches[1:]:  # numbered rows are never equal: a UNION's rows are made distinct below
                union = node.__class__(this=union, expression=branch, distinct=distinct and not every)
            if distinct and every:
                union = self.distinct_rows(union, every)
            return self.ordered(union, node), every
        return self.select(node, under, ctes)

    @staticmethod
    def ordered(union: exp.Expression, node: exp.Expression) -> exp.Expression:
        """The rebuilt set operation with the original's ORDER BY / LIMIT / OFFSET (by position or output
        name: the provenance columns come after the outputs)."""
        modifiers = {key: node.args[key].copy() for key in ("order", "limit", "offset") if node.args.get(key)}
        if not modifiers:
            return union
        rows = exp.select("*").from_(exp.Subquery(this=union, alias=exp.TableAlias(this=exp.to_identifier("__set"))))
        for key, value in modifiers.items():
            rows.set(key, value)
        return rows

    @staticmethod
    def distinct_rows(union: exp.Expression, provenance: list[str]) -> exp.Select:
        """A UNION's distinct rows, each with the least number of each provenance column among its copies."""
        first = union
        while not isinstance(first, exp.Select):
            first = first.this
        names = [e.alias_or_name for e in first.expressions[:len(first.expressions) - len(provenance)]]
        rows = exp.Subquery(this=union, alias=exp.TableAlias(this=exp.to_identifier("__union")))
        return exp.select(*(exp.column(n, "__union") for n in names),
                          *(exp.alias_(exp.Min(this=exp.column(p, "__union")), p) for p in provenance)) \
            .from_(rows).group_by(*(exp.column(n, "__union") for n in names))

    def leaf(self, source: exp.Expression, under: bool) -> tuple[exp.Expression, list[str]]:
        """A protected owner's single-party item: its rows numbered (its groups, if it aggregates)."""
        body = exp.select("*").from_(source.copy() if isinstance(source, exp.Table) else exp.Subquery(
            this=source.this.copy() if isinstance(source, exp.Subquery) else source.copy(), alias="__leaf"))
        inner = source.this if isinstance(source, exp.Subquery) else source
        if not under and isinstance(inner, exp.Select) and (inner.args.get("group") or any(
                e.find(exp.AggFunc) for e in inner.expressions)):
            inner = inner.copy()
            cond = exp.GTE(this=exp.Count(this=exp.Star()), expression=exp.Literal.number(self.k))
            having = inner.args.get("having")
            inner.set("having", exp.Having(this=exp.and_(having.this, cond) if having else cond))
            body = exp.select("*").from_(exp.Subquery(this=inner, alias="__leaf"))
        self.n += 1
        name = f"__p{self.n}"
        body.select(exp.alias_(sqlglot.parse_one("ROW_NUMBER() OVER ()"), name), copy=False)
        return body, [name]

    def select(self, select: exp.Select, under: bool, ctes: dict) -> tuple[exp.Expression, list[str]]:
        select = select.copy()
        ctes = {**ctes, **{c.alias_or_name: c.this for c in select.find_all(exp.CTE)}}
        # its WITH stays: a subquery in WHERE may read a CTE whose reads in FROM are rewritten below
        aggregates = bool(select.args.get("group")) or any(
            a.find_ancestor(exp.Window) is None for e in select.expressions for a in e.find_all(exp.AggFunc))
        provenance: list[exp.Column] = []
        for source in _sources(select):
            alias = source.alias_or_name
            body = ctes.get(source.name) if isinstance(source, exp.Table) and not source.db else source
            owners = _owners(body, ctes)
            if len(owners) > 1:
                rewritten, names = self.query(body, under or aggregates, ctes)
            elif owners and owners != {self.issuer}:
                rewritten, names = self.leaf(body if body is not source else source, under or aggregates)
            else:
                if body is not source:
                    source.replace(exp.Subquery(this=body.copy(), alias=exp.TableAlias(this=exp.to_identifier(alias))))
                continue
            source.replace(exp.Subquery(this=rewritten, alias=exp.TableAlias(this=exp.to_identifier(alias))))
            provenance += [exp.column(n, table=alias) for n in names]
        if not provenance:
            return select, []
        if aggregates and not under:
            cond = exp.and_(*(exp.GTE(this=exp.Count(this=exp.Distinct(expressions=[p])),
                                      expression=exp.Literal.number(self.k)) for p in provenance))
            having = select.args.get("having")
            select.set("having", exp.Having(this=exp.and_(having.this, cond) if having else cond))
            return select, []
        if select.args.get("distinct"):
            select.set("distinct", None)
            select.set("group", exp.Group(expressions=[
                (e.this if isinstance(e, exp.Alias) else e).copy() for e in select.expressions]))
            aggregates = True
        for p in provenance:
            select.select(exp.alias_(exp.Min(this=p) if aggregates else p, p.name), copy=False)
        return select, [p.name for p in provenance]


def threshold_revealed_subqueries(tree: exp.Expression, issuer: str, k: int) -> exp.Expression:
    """Every subquery in an expression (a SELECT item, WHERE, HAVING, ON, ORDER BY, inside an aggregate;
    scalar, correlated, IN, EXISTS, ANY / ALL), at any depth, thresholded as the engine does (docs/
    federation.md, "The group threshold through nested shapes"): one that aggregates a protected owner's
    rows keeps its aggregate only with >= k distinct rows of each such owner, so a scalar one reads NULL
    otherwise (a correlated COUNT over no rows included) and an IN / EXISTS group below it is no member."""
    tree = tree.copy()
    ctes = {c.alias_or_name: c.this for c in tree.find_all(exp.CTE)}
    provenance = Provenance(issuer, k)
    holders = [node for node in tree.find_all(exp.Subquery, exp.Exists, exp.Any, exp.All)
               if not isinstance(node.parent, (exp.From, exp.Join, exp.CTE, exp.Subquery, exp.SetOperation))]
    for holder in reversed(holders):  # the innermost first: rewriting copies a body, nested ones included
        body = holder.this
        if not isinstance(body, exp.Query) or not _owners(body, ctes) - {issuer} or not any(
                a.find_ancestor(exp.Window) is None for a in body.find_all(exp.AggFunc)) and not any(
                s.args.get("group") for s in body.find_all(exp.Select)):
            continue
        names = body.named_selects
        rewritten, numbers = provenance.query(body, False, ctes)
        if numbers:  # its rows carry provenance columns up: keep its own columns only
            rewritten = exp.select(*(exp.column(n, quoted=True) for n in names)).from_(
                exp.Subquery(this=rewritten, alias=exp.TableAlias(this=exp.to_identifier("__sub"))))
        holder.set("this", rewritten)
    return tree


class Oracle:
    """Plain DuckDB over the union of all parties' tables, one schema per party."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.con = duckdb.connect()
        for party in engine.parties:
            self.con.execute(f'CREATE SCHEMA "{party}"')
            store = engine._stores[party]
            for table in store.schema():
                data = store.query(f'SELECT * FROM "{table}"')
                self.con.register("_tmp", data)
                self.con.execute(f'CREATE TABLE "{party}"."{table}" AS SELECT * FROM _tmp')
                self.con.unregister("_tmp")

    def expected(self, sql: str, issuer: str) -> pa.Table:
        cfg = self.engine.config
        tree = sqlglot.parse_one(sql, read=cfg.dialect)
        parties = {t.db for t in tree.find_all(exp.Table) if t.db}
        tables = {f"{t.db}.{t.name}" for t in tree.find_all(exp.Table) if t.db}
        k = max([cfg.min_group_size] + [int(rule.get("min_group_size") or 0)  # stricter per-table rules
                                        for name, rule in cfg.rules.items()
                                        if name in tables and not name.startswith(f"{issuer}.")])
        if k and parties - {issuer}:
            tree = threshold_revealed_subqueries(tree, issuer, k)
        aggregates = tree.find(exp.AggFunc) is not None  # no aggregate: rows revealed, no threshold
        if k and parties - {issuer} and aggregates and (nested_shape(tree) or _owner_aggregate_in_from(tree, issuer)):
            tree, provenance = Provenance(issuer, k).query(tree, False, {})
            if provenance:  # the rows revealed carry no provenance; a UNION's are a set without it
                tree = exp.select(*(exp.column(n) for n in self._names(tree, provenance))).from_(
                    exp.Subquery(this=tree, alias="__result")).distinct(
                    distinct=isinstance(tree, exp.Union) and bool(tree.args.get("distinct")))
        elif k and parties - {issuer} and isinstance(tree, exp.Select) and (
            tree.args.get("group") or any(a for e in tree.expressions for a in e.find_all(exp.AggFunc)
                                          if a.find_ancestor(exp.Window) is None and a.find_ancestor(exp.Select) is tree)
        ):
            cond = exp.and_(*(exp.GTE(this=count, expression=exp.Literal.number(k))
                              for count in protected_counts(tree, issuer, self.engine.catalog)))
            having = tree.args.get("having")
            tree.set("having", exp.Having(this=exp.and_(having.this, cond) if having else cond))
        return self.con.sql(tree.sql(dialect="duckdb")).to_arrow_table()

    def cuts_through_ties(self, sql: str, issuer: str, width: int) -> bool:
        """Whether the outermost LIMIT / OFFSET falls between rows its ORDER BY (if any) ties: then the rows kept
        are DuckDB's arbitrary choice and the engine's (its ties follow the shuffled or PSI order), and
        comparing them passes by chance. Tied rows broken by every output column, ascending and then
        descending, keep the same rows iff the cut is clear of ties."""
        tree = sqlglot.parse_one(sql, read=self.engine.config.dialect)
        if not isinstance(tree, exp.Select) or not (tree.args.get("limit") or tree.args.get("offset")):
            return False
        answers = []
        for desc in (False, True):
            broken = tree.copy()
            order = broken.args.get("order") or exp.Order(expressions=[])
            broken.set("order", order)
            order.set("expressions", order.expressions + [
                exp.Ordered(this=exp.Literal.number(i + 1), desc=desc, nulls_first=not desc) for i in range(width)])
            answers.append(self.expected(broken.sql(dialect=self.engine.config.dialect), issuer))
        return not same_multiset(*answers)

    def check_top(self, sql: str, issuer: str = "bank") -> pa.Table:
        """`check`, but an outermost ORDER BY of output columns may leave ties where its LIMIT / OFFSET cuts:
        the engine's rows are then right if they hold as many rows of each ORDER BY key as DuckDB's and
        each is a row of the query without LIMIT / OFFSET (which tied rows are kept is not defined)."""
        tree = sqlglot.parse_one(sql, read=self.engine.config.dialect)
        keys = self._output_order(tree)
        if keys is None or not self.cuts_through_ties(sql, issuer, len(tree.expressions)):
            return self.check(sql, issuer)
        got = self.engine.execute(sql, issuer).table
        want = self.expected(sql, issuer)
        every = tree.copy()
        every.set("limit", None)
        every.set("offset", None)
        whole = self.expected(every.sql(dialect=self.engine.config.dialect), issuer)
        assert got.num_columns == want.num_columns, (got.column_names, want.column_names)
        assert same_multiset(got.select(keys), want.select(keys)), \
            f"{sql}\n got keys: {sorted_rows(got.select(keys))}\nwant keys: {sorted_rows(want.select(keys))}"
        assert sub_multiset(got, whole), f"{sql}\n got: {sorted_rows(got)[:10]}\nnot rows of: {sorted_rows(whole)[:20]}"
        return got

    @staticmethod
    def _output_order(tree: exp.Expression) -> list[int] | None:
        """The output columns (by position) an outermost ORDER BY of outputs sorts by (by name, or by their
        expression as a dialect writes it, beside its `CASE WHEN x IS NULL` for NULLs' place), else None."""
        if not isinstance(tree, exp.Select) or not tree.args.get("order"):
            return None
        names = tree.named_selects
        values = [e.unalias() for e in tree.expressions]
        keys = []
        for ordered in tree.args["order"].expressions:
            key = ordered.this
            if isinstance(key, exp.Column) and not key.table and key.name in names:
                keys.append(names.index(key.name))
            elif key in values:
                keys.append(values.index(key))
            elif not (isinstance(key, exp.Case) and isinstance(key.find(exp.Is), exp.Is)):
                return None
        return keys

    def _names(self, tree: exp.Expression, provenance: list[str]) -> list[str]:
        return [n for n in self.con.sql(tree.sql(dialect="duckdb")).columns if n not in provenance]

    def check(self, sql: str, issuer: str = "bank", rel_tol: float | None = None) -> pa.Table:
        """The engine's answer equals DuckDB's; floats within REL_TOL (or a function's stated `rel_tol`)."""
        got = self.engine.execute(sql, issuer).table
        want = self.expected(sql, issuer)
        assert not self.cuts_through_ties(sql, issuer, want.num_columns), \
            f"LIMIT cuts through rows its ORDER BY ties, so which are kept is chance: break the ties in {sql}"
        assert got.num_columns == want.num_columns, (got.column_names, want.column_names)
        assert same_multiset(got, want, rel_tol or REL_TOL), f"{sql}\n got: {sorted_rows(got)[:10]}\nwant: {sorted_rows(want)[:10]}"
        return got


def _norm(value):
    if isinstance(value, decimal.Decimal):
        value = float(value)
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


REL_TOL, ABS_TOL = 1e-5, 1e-3  # fixed point (2^-16) through products and divisions; exact values compare exactly


def _close(a, b, rel_tol: float = REL_TOL) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        if a == "nan" or b == "nan":
            return a == b
        return math.isclose(a, b, rel_tol=rel_tol, abs_tol=ABS_TOL)
    return a == b


def same_multiset(got: pa.Table, want: pa.Table, rel_tol: float = REL_TOL) -> bool:
    """Rows compared as multisets; floats within the stated tolerance."""
    if got.num_rows != want.num_rows:
        return False
    if got.num_rows and sorted_rows(got) == sorted_rows(want):
        return True
    return sub_multiset(want, got, rel_tol)


def sub_multiset(part: pa.Table, whole: pa.Table, rel_tol: float = REL_TOL) -> bool:
    """Every row of `part` matches its own row of `whole` (floats within the stated tolerance)."""
    pool = [tuple(_norm(v) for v in r.values()) for r in whole.to_pylist()]
    for row in (tuple(_norm(v) for v in r.values()) for r in part.to_pylist()):
        match = next((i for i, cand in enumerate(pool) if all(_close(a, b, rel_tol) for a, b in zip(cand, row))), None)
        if match is None:
            return False
        pool.pop(match)
    return True


def sorted_rows(table: pa.Table) -> list:
    rows = [tuple(_norm(v) for v in row.values()) for row in table.to_pylist()]
    return sorted(rows, key=lambda r: tuple((v is None, str(type(v)), v if v is not None else 0) for v in r))


# -- DP noise: draws checked against their law with a stated chance of failing -------------------------
# A test of a noise sampler fails by chance with probability at most NOISE_FAILURE per checked column
# (Chernoff's bound on each side of each statistic, rigorous, no normal approximation), so a test that
# checks up to 10 columns fails by chance less than once in 10^9 runs.
NOISE_FAILURE = 1e-10


def _chernoff_edge(log_mgf, mean: float, n: int, failure: float, lam_max: float, sign: int) -> float:
    """The value the mean of n draws passes (above: sign 1, below: -1) with probability <= failure:
    P(sign (mean_n - a) >= 0) <= exp(-n sup_lam (lam a - K(lam))), each lam of the grid a valid bound."""
    lams = sign * lam_max * np.linspace(0, 1, 2001)[1:-1]
    k = np.array([log_mgf(lam) for lam in lams])
    target = math.log(1 / failure) / n
    lo, hi = 0.0, 1.0
    while np.max(lams * (mean + sign * hi) - k) < target:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if np.max(lams * (mean + sign * mid) - k) >= target else (mid, hi)
    return mean + sign * hi


def _pmf_log_mgf(support: np.ndarray, log_weights: np.ndarray):
    def log_mgf(lam: float) -> float:
        x = lam * support + log_weights
        top = x.max()
        return float(top + np.log(np.exp(x - top).sum()))
    return log_mgf


def noise_laws(mechanism: str, scale: float, integer: bool):
    """((name, statistic, its mean, its log-MGF, lam_max), ...) of one draw X of OpenDP's noise: X itself
    (unbiased) and the statistic that measures the scale (|X| for Laplace, X^2 for Gaussian). Integer
    noise (discrete Laplace / Gaussian) from its pmf, cut at 60 scales (the mass beyond, e^-60, is
    below any failure bound here)."""
    power = 1 if mechanism == "laplace" else 2
    if integer:
        k = np.arange(-int(60 * scale) - 1, int(60 * scale) + 2, dtype=float)
        log_w = -np.abs(k) / scale if power == 1 else -k ** 2 / (2 * scale ** 2)
        log_w -= np.log(np.exp(log_w).sum())
        spread = np.abs(k) ** power
        return (("mean", lambda x: x, 0.0, _pmf_log_mgf(k, log_w), 10 / scale),
                ("scale", lambda x: np.abs(x) ** power, float(np.exp(log_w) @ spread), _pmf_log_mgf(spread, log_w),
                 1 / scale ** power))
    if power == 1:
        return (("mean", lambda x: x, 0.0, lambda lam: -math.log(1 - (scale * lam) ** 2), 1 / scale),
                ("scale", np.abs, scale, lambda lam: -math.log(1 - scale * lam), 1 / scale))
    return (("mean", lambda x: x, 0.0, lambda lam: (scale * lam) ** 2 / 2, 10 / scale),
            ("scale", np.square, scale ** 2, lambda lam: -math.log(1 - 2 * scale ** 2 * lam) / 2,
             1 / (2 * scale ** 2)))


def noise_mismatch(draws, true: float, mechanism: str, scale: float, integer: bool,
                   resolution: float = 0.0) -> str | None:
    """None if `draws` (true value + noise each) fit OpenDP's `mechanism` at `scale`: the noise's mean
    and its scale statistic each within Chernoff bounds (failure NOISE_FAILURE for the pair); else what
    is off. `resolution`: the step the noised value was rounded to (fixed point, a DECIMAL's digits)."""
    x = np.asarray(draws, dtype=float) - true
    for name, statistic, mean, log_mgf, lam_max in noise_laws(mechanism, scale, integer):
        got = float(np.mean(statistic(x)))
        slack = resolution if name == "mean" or mechanism == "laplace" else resolution * (2 * scale + resolution)
        low = _chernoff_edge(log_mgf, mean, len(x), NOISE_FAILURE / 4, lam_max, -1) - slack
        high = _chernoff_edge(log_mgf, mean, len(x), NOISE_FAILURE / 4, lam_max, 1) + slack
        if not low <= got <= high:
            return f"{mechanism} noise's {name} statistic {got:.4g} outside [{low:.4g}, {high:.4g}] (n={len(x)})"
    return None


@pytest.fixture(scope="session")
def tables():
    return generate_tables()


@pytest.fixture(scope="session")
def federation_dir(tmp_path_factory, tables) -> Path:
    directory = tmp_path_factory.mktemp("federation")
    write_federation(directory, tables, all_plaintext())
    return directory


@pytest.fixture(scope="session")
def engine(federation_dir):
    with Engine(federation_dir / "federation.toml", timeout=60) as eng:
        yield eng


@pytest.fixture(scope="session")
def oracle(engine) -> Oracle:
    return Oracle(engine)


@pytest.fixture(scope="session")
def make_federation(tables):
    """Write a federation over the test tables: make_federation(dir, grants=..., parties=..., dialect=...)."""

    def make(directory: Path, grants: str | None = None, parties=PARTIES, **options) -> Path:
        return write_federation(directory, tables, all_plaintext(parties) if grants is None else grants,
                                parties=parties, **options)

    return make


@pytest.fixture(scope="session")
def federation_writer():
    """write_federation(directory, tables, grants, parties=..., **options), for modules with their own tables."""
    return write_federation


def spy_on(channel) -> list[bytes]:
    """Every payload `channel` sends from now on, in order: for tests that nothing secret crosses."""
    sent, original = [], channel._send

    def spy(src, dst, tag, payload):
        sent.append(bytes(payload))
        original(src, dst, tag, payload)

    channel._send = spy
    return sent


@pytest.fixture(scope="session")
def channel_spy():
    """spy_on(channel): the list of every payload the channel sends from now on."""
    return spy_on


class ContainedError:
    """Checks that a party's error reached the issuer as its class and expression, without the data."""

    @staticmethod
    def shop_values(tables) -> list[str]:
        """Texts the shop's orders could leak: categories, regions, amounts as DuckDB prints them, and
        the three-digit order ids (the queries' literals have fewer digits)."""
        orders = tables["shop"]["orders"]
        amounts = {f"{a:.2f}" for a in orders.column("amount").to_pylist()} | \
            {str(a) for a in orders.column("amount").to_pylist()}
        ids = {str(i) for i in orders.column("order_id").to_pylist() if i >= 100}
        return sorted(set(orders.column("category").to_pylist()) | set(orders.column("region").to_pylist())
                      | {a for a in amounts if "." in a} | ids)

    @staticmethod
    def mentions(text: str, value: str) -> bool:
        return re.search(rf"(?<![\d.]){re.escape(value)}(?!\d)", text) is not None

    @classmethod
    def check(cls, message: str, party: str, expression: str, values) -> None:
        """`message` names the party and the expression (as pushed down: qualifiers, quotes and case
        aside) and none of the values."""
        unqualified = re.sub(r'"\w+"\.(?=")', "", message).replace('"', "").lower()
        assert repr(party) in message and expression.lower() in unqualified, message
        leaked = [v for v in values if cls.mentions(message, v)]
        assert not leaked, f"data values {leaked[:5]} in {message!r}"


@pytest.fixture(scope="session")
def rows_match():
    """same_multiset(got, want): the oracle's row comparison, for tests that run their own DuckDB."""
    return same_multiset


@pytest.fixture(scope="session")
def contained_error():
    """ContainedError: checks for a party's error as it reaches the issuer (issue 15, leak 3)."""
    return ContainedError


@pytest.fixture(scope="session")
def grants_for():
    """grants_toml((party, columns, constraint), ...): [[grants]] sections for a test federation."""
    return grants_toml


@pytest.fixture(scope="session")
def oracle_for():
    """Oracle(engine): plain DuckDB over an engine's parties, for test modules with their own federation."""
    return Oracle


def refused_at_plan_time(engine, sql: str, issuer: str, error: type, named: str) -> Exception:
    """The query is refused at plan time with `error` naming `named`, and `check` says the same."""
    with pytest.raises(error) as refused:
        engine.plan(sql, issuer)
    assert named.lower() in str(refused.value).lower()
    assert engine.check(sql, issuer) == f"{error.__name__}: {refused.value}"
    return refused.value


@pytest.fixture(scope="session")
def assert_refused():
    """refused_at_plan_time(engine, sql, issuer, error, named): refused naming it, `check` agreeing."""
    return refused_at_plan_time


@pytest.fixture(scope="session")
def plaintext_grants():
    return all_plaintext


# -- PostgreSQL: a throwaway server for the tests of parties whose data lives there ----------------
# Debian's binaries (`.ci/run` installs the `postgresql` package when missing); `initdb` refuses to
# run as root, so as root the cluster is made and run by the `postgres` user. It listens on a free
# port of 127.0.0.1 only, with trust authentication for local test users, and is stopped (fast
# shutdown) and its directory removed when the test session ends.

READY_SECONDS = 60  # pg_ctl -w polls for readiness; this only bounds a start that never completes


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin directory, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A running cluster: `uri(database)` for clients, `sql(statement)` to set data up with psql."""

    def __init__(self, bin_dir: Path):
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="sqlsecure-pg-"))
        self.port = _free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        data = self.root / "data"
        self._run([self.bin / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8",
                   "--locale", "C"])
        self._run([self.bin / "pg_ctl", "-D", data, "-l", self.root / "log", "-w", "-t", str(READY_SECONDS),
                   "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off", "start"])

    def _run(self, argv) -> str:
        out = subprocess.run(self.as_user + [str(a) for a in argv], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"{Path(str(argv[0])).name} failed: {out.stderr or out.stdout}")
        return out.stdout

    def uri(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def database(self, name: str) -> str:
        """A fresh database of that name (each test module its own)."""
        self.sql(f'DROP DATABASE IF EXISTS "{name}"')
        self.sql(f'CREATE DATABASE "{name}"')
        return name

    def sql(self, statement: str, database: str = "postgres") -> str:
        psql = self.bin / "psql" if (self.bin / "psql").exists() else Path(shutil.which("psql") or "psql")
        return self._run([psql, "-h", "127.0.0.1", "-p", self.port, "-U", "postgres", "-d", database,
                          "-v", "ON_ERROR_STOP=1", "-q", "-c", statement])

    def stop(self) -> None:
        try:
            self._run([self.bin / "pg_ctl", "-D", self.root / "data", "-m", "fast", "-w", "stop"])
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_or_skip() -> PostgresServer:
    """A fresh server; skipped where PostgreSQL is not installed, except in CI, which must have it."""
    bin_dir = binaries()
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed: .ci/run installs Debian's postgresql package")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    return PostgresServer(bin_dir)


@pytest.fixture(scope="session")
def postgres():
    server = start_or_skip()
    try:
        yield server
    finally:
        server.stop()
