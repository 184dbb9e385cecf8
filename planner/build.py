"""Build the logical plan of a qualified query.

A query whose tables all belong to one party becomes one `LocalQuery` (pushed down whole). A
cross-party query becomes Filter(InnerJoin(Source...)) under Aggregate / Project / Sort / Limit,
for the rules to rewrite; shapes that the secure operators cannot answer yet raise
`NotSupportedError` naming the feature.
"""

from __future__ import annotations

import functools
import re

import duckdb
from sqlglot import exp

from sqlsecure.errors import DataError, NotSupportedError, PlanError
from sqlsecure.planner.catalog import Catalog
from sqlsecure.planner.logical import (
    aliases_of,
    aggregates_in,
    Aggregate, Filter, InnerJoin, Limit, LocalQuery, Membership, Node, Project, Sort, Source, UnionScan,
)


def parties_of(tree: exp.Expression) -> frozenset[str]:
    """The parties whose tables a (qualified) query reads."""
    return frozenset(t.db for t in tree.find_all(exp.Table) if t.db)


def localize(tree: exp.Expression) -> exp.Expression:
    """Copy of a single-party tree with `party.table` rewritten to the party's local `table`."""

    def strip(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and node.db:
            node = node.copy()
            node.set("db", None)
        return node

    return tree.copy().transform(strip)


def conjuncts_of(condition: exp.Expression | None) -> list[exp.Expression]:
    if condition is None:
        return []
    return [c.unnest() for c in condition.flatten()] if isinstance(condition, exp.And) else [condition.unnest()]


def build_logical(tree: exp.Expression, catalog: Catalog, issuer: str | None = None) -> Node:
    parties = parties_of(tree)
    if len(parties) <= 1:
        party = next(iter(parties), issuer)  # a query of constants runs at the issuer
        if party is None:
            raise NotSupportedError("a query must read at least one federation table")
        return LocalQuery(party=party, aliases=(), select=localize(tree))
    return _build_cross_party(tree, catalog)


# The clauses the builder reads, per sqlglot node; any other clause that is set is refused
# (deny by default), so no clause of a query is ever silently dropped.
SELECT_CLAUSES = frozenset({"expressions", "from_", "joins", "where", "group", "having", "order", "limit", "offset",
                            "distinct", "with_"})
UNION_CLAUSES = frozenset({"this", "expression", "distinct"})
JOIN_CLAUSES = frozenset({"this", "on", "side", "kind"})
TABLE_CLAUSES = frozenset({"this", "db", "catalog", "alias"})
CLAUSE_NAMES = {"from_": "FROM", "with_": "WITH", "by_name": "BY NAME", "limit_options": "LIMIT options",
                "windows": "WINDOW", "method": "join method"}


def _refuse_unread(node: exp.Expression, known: frozenset[str], where: str) -> None:
    """NotSupportedError naming the first clause of `node` that is set but not in `known`."""
    for key, value in node.args.items():
        if key not in known and value not in (None, False, [], ""):
            shown = value.upper() if isinstance(value, str) else CLAUSE_NAMES.get(key, key.upper())
            raise NotSupportedError(f"{shown} in {where} is not supported: {node.sql(dialect='duckdb')[:200]!r}")


def _refuse_unread_details(select: exp.Select) -> None:
    """DISTINCT ON, GROUP BY ALL / ROLLUP / CUBE / GROUPING SETS, LIMIT with options, FETCH, ORDER BY ... WITH
    FILL: shapes whose meaning the cross-party operators do not implement."""
    distinct = select.args.get("distinct")
    if distinct is not None and distinct.args.get("on") is not None:
        raise NotSupportedError("DISTINCT ON in a cross-party query is not supported; use GROUP BY or a window")
    group = select.args.get("group")
    if group is not None:
        _refuse_unread(group, frozenset({"expressions"}), "a cross-party GROUP BY")
        for key in group.expressions:
            if isinstance(key, (exp.Rollup, exp.Cube, exp.GroupingSets)):
                raise NotSupportedError(f"GROUP BY {key.sql(dialect='duckdb')} in a cross-party query is not "
                                        "supported; list the grouping keys")
    limit = select.args.get("limit")
    if limit is not None:
        if not isinstance(limit, exp.Limit):
            raise NotSupportedError(f"{limit.sql(dialect='duckdb')} in a cross-party query is not supported; "
                                    "use LIMIT n")
        _refuse_unread(limit, frozenset({"expression"}), "a cross-party LIMIT")
    offset = select.args.get("offset")
    if offset is not None:
        _refuse_unread(offset, frozenset({"expression"}), "a cross-party OFFSET")
    for clause in (limit, offset):  # its count is computed where the rows are cut, which holds no other party's table
        count = clause.args.get("expression") if clause is not None else None
        if count is not None and count.find(exp.Column, exp.Query, exp.AggFunc) is not None:
            raise NotSupportedError(f"{clause.key.upper()} {count.sql(dialect='duckdb')[:80]} in a cross-party query is "
                                    "not supported: the count must be a constant or a ? parameter")
    order = select.args.get("order")
    for ordered in order.expressions if order is not None else []:
        _refuse_unread(ordered, frozenset({"this", "desc", "nulls_first"}), "a cross-party ORDER BY")
    for join in select.args.get("joins") or []:
        _refuse_unread(join, JOIN_CLAUSES, "a join across parties")
    from_ = select.args.get("from_")
    for item in [from_.this if from_ else None] + [j.this for j in select.args.get("joins") or []]:
        if isinstance(item, exp.Table):
            _refuse_unread(item, TABLE_CLAUSES, "a FROM item across parties")
        elif isinstance(item, exp.Subquery):
            _refuse_unread(item, frozenset({"this", "alias"}), "a FROM item across parties")


def _refuse_unsupported(select: exp.Select) -> None:
    if not isinstance(select, exp.Select):
        raise NotSupportedError(
            "set operations (UNION/INTERSECT/EXCEPT) across parties need the SPU, which is not implemented yet"
        )
    if select.args.get("where") is not None and select.args["where"].find(exp.Window):
        raise NotSupportedError("window functions in WHERE are not valid SQL")
    _refuse_unread(select, SELECT_CLAUSES, "a cross-party SELECT")
    _refuse_unread_details(select)
    ons = [join.args.get("on") for join in select.args.get("joins") or []]  # a join's ON, as WHERE's conjuncts
    for clause in ("expressions", "having", "group", "order", "joins"):
        value = ons if clause == "joins" else select.args.get(clause)
        for part in value if isinstance(value, list) else [value]:
            if part is not None and part.find(exp.Subquery, exp.Exists, exp.Query) is not None:
                raise NotSupportedError(
                    "subqueries in expressions (IN/EXISTS semi- and anti-joins) across parties "
                    "are not supported yet"
                )
            if part is not None and any(isinstance(i.args.get("query"), exp.Query) for i in part.find_all(exp.In)):
                raise NotSupportedError("IN (subquery) across parties (a semi-join) is not supported yet")


def _source(item: exp.Expression, catalog: Catalog, ctes: dict[str, exp.Expression]) -> Source:
    alias = item.alias_or_name
    if isinstance(item, exp.Table) and item.db:
        relation = exp.Table(this=exp.to_identifier(item.name, quoted=True), alias=exp.TableAlias(
            this=exp.to_identifier(alias, quoted=True)))
        columns = tuple(c for c, _ in catalog.columns(item.db, item.name))
        return Source(alias=alias, party=item.db, relation=relation, columns=columns)
    if isinstance(item, exp.Table) and item.name in ctes:
        query = ctes[item.name]
    elif isinstance(item, exp.Subquery):
        query = item.this
    else:
        raise NotSupportedError(f"FROM item {item.sql()} is not supported in a cross-party query")
    parties = parties_of(query)
    if len(parties) != 1:
        raise NotSupportedError(
            f"derived table {alias!r} reads several parties; only single-party subqueries in FROM "
            "are supported across parties so far"
        )
    if query.find(exp.Table, bfs=False) is not None and any(
        t.name in ctes and not t.db for t in query.find_all(exp.Table)
    ):
        raise NotSupportedError(f"derived table {alias!r} refers to another CTE; inline it")
    relation = exp.Subquery(this=localize(query), alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True)))
    return Source(alias=alias, party=next(iter(parties)), relation=relation, columns=tuple(query.named_selects))


def _null_rejecting(conjunct: exp.Expression, alias: str) -> bool:
    """A comparison that is never true when `alias`'s columns are NULL (no IS, COALESCE, CASE, OR)."""
    if conjunct.find(exp.Is, exp.Coalesce, exp.Case, exp.If, exp.Or, exp.Not) is not None:
        return False
    return isinstance(conjunct, (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like, exp.Between, exp.In))


def _membership(conjunct: exp.Expression) -> Membership | None:
    """`k [NOT] IN (SELECT c FROM p.t ...)` or `[NOT] EXISTS (SELECT ... WHERE t.c = k AND ...)`."""
    anti = isinstance(conjunct, exp.Not)
    inner = conjunct.this if anti else conjunct
    if isinstance(inner, exp.Paren):
        inner = inner.this
    if isinstance(inner, exp.In) and isinstance(inner.args.get("query"), (exp.Query, exp.Subquery)):
        query = inner.args["query"]
        query = query.this if isinstance(query, exp.Subquery) else query
        if not isinstance(inner.this, exp.Column) or not isinstance(query, exp.Select) or len(query.expressions) != 1:
            raise NotSupportedError("IN (subquery) across parties needs `column IN (SELECT one_column ...)`")
        inner_aliases = {t.alias_or_name for t in query.find_all(exp.Table)}
        if any(c.table and c.table not in inner_aliases for c in query.find_all(exp.Column)):
            raise NotSupportedError("a correlated IN (subquery) across parties is not supported; use EXISTS "
                                    "with one correlation inner.col = outer.col")
        member = query.expressions[0]
        select = query.copy()
        select.set("expressions", [exp.alias_((member.this if isinstance(member, exp.Alias) else member).copy(),
                                              "__member", quoted=True)])
        return _membership_of(inner.this, select, anti, null_aware=anti)
    if isinstance(inner, exp.Exists):
        query = inner.this.this if isinstance(inner.this, exp.Subquery) else inner.this
        if not isinstance(query, exp.Select):
            return None
        if any(query.args.get(c) for c in ("limit", "offset", "group", "having")) or any(
                aggregates_in(e) for e in query.expressions):  # per outer row, not once over every key's rows
            raise NotSupportedError("EXISTS across parties with LIMIT, OFFSET, GROUP BY, HAVING or an aggregate "
                                    "in the subquery is not placed as a membership")
        inner_aliases = {t.alias_or_name for t in query.find_all(exp.Table)}
        where = query.args.get("where")
        conds = conjuncts_of(where.this if where else None)
        links = [c for c in conds if isinstance(c, exp.EQ) and all(isinstance(x, exp.Column) for x in (c.left, c.right))
                 and ((c.left.table in inner_aliases) != (c.right.table in inner_aliases))]
        if len(links) != 1:
            raise NotSupportedError("EXISTS across parties needs exactly one correlation inner.col = outer.col")
        link = links[0]
        inner_col, outer_col = (link.left, link.right) if link.left.table in inner_aliases else (link.right, link.left)
        select = query.copy()
        rest = [c.copy() for c in conds if c is not link]
        select.set("where", exp.Where(this=exp.and_(*rest)) if rest else None)
        select.set("expressions", [exp.alias_(inner_col.copy(), "__member", quoted=True)])
        if any(c.table not in inner_aliases for c in select.find_all(exp.Column)):
            raise NotSupportedError("EXISTS across parties: the subquery may refer to the outer query only in its "
                                    "one correlation")
        return _membership_of(outer_col, select, anti, null_aware=False)
    return None


def _membership_of(key: exp.Column, select: exp.Select, anti: bool, null_aware: bool) -> Membership:
    parties = parties_of(select)
    if len(parties) != 1:
        raise NotSupportedError("the subquery of an IN / EXISTS across parties must read one party's tables")
    return Membership(key.copy(), LocalQuery(party=next(iter(parties)), aliases=(),
                                             select=localize(_as_set(select)), output=("__member",)),
                      anti, null_aware)


def _as_set(select: exp.Select) -> exp.Select:
    """A semi- or anti-join needs only the set of member values: SELECT DISTINCT, so the member's
    party drops repeats in its own engine before the PSI (TPC-H Q4 at SF1: 1.4M keys, not 3.8M).
    Not under LIMIT / OFFSET / FETCH, where DISTINCT would change which values are kept."""
    if any(select.args.get(clause) for clause in ("limit", "offset", "fetch")):
        return select
    return select.distinct(copy=False)


def _union_scan(items, ctes) -> UnionScan | None:
    """`FROM (a.x UNION ALL b.y ...) alias` with every branch at one party: a UnionScan, else None."""
    item = items[0]
    query = ctes.get(item.name) if isinstance(item, exp.Table) and not item.db else (
        item.this if isinstance(item, exp.Subquery) else None)
    query = _through_union(query) if isinstance(query, exp.Select) else query
    if not isinstance(query, exp.Union):
        return None
    branches, stack = [], [query]
    while stack:
        node = stack.pop()
        if isinstance(node, exp.Union) and node.args.get("distinct"):
            raise NotSupportedError("UNION (DISTINCT) across parties is not supported yet; use UNION ALL and "
                                    "SELECT DISTINCT over it")
        if isinstance(node, exp.Union):
            _refuse_unread(node, UNION_CLAUSES, "a UNION ALL across parties (ORDER BY / LIMIT go on the outer query)")
            stack += [node.right, node.left]
        elif isinstance(node, exp.Select) and len(parties_of(node)) == 1:
            branches.append(node)
        else:
            raise NotSupportedError("each branch of a UNION ALL across parties must be one party's SELECT")
    alias = item.alias_or_name
    columns = tuple(branches[0].named_selects)
    queries = []
    for branch in branches:
        local = localize(branch)
        local.set("expressions", [exp.alias_(e.this if isinstance(e, exp.Alias) else e, f"{alias}.{c}", quoted=True)
                                  for e, c in zip(local.expressions, columns)])
        queries.append(LocalQuery(party=next(iter(parties_of(branch))), aliases=(alias,), select=local,
                                  output=tuple(f"{alias}.{c}" for c in columns)))
    return UnionScan(alias, tuple(queries), columns)


PLAIN_CLAUSES = ("joins", "group", "having", "distinct", "order", "limit", "offset", "fetch", "qualify", "windows",
                 "with", "laterals", "pivots")


def _through_union(select: exp.Select) -> exp.Expression:
    """A plain SELECT (a projection and a WHERE: no join, aggregate, DISTINCT, window, subquery, ORDER BY or
    LIMIT) over one UNION ALL in FROM, directly or through such SELECTs, as the UNION ALL of that SELECT
    over each branch: selection and projection distribute over UNION ALL (the same rows), so a derived
    table or CTE over parties' rows is a union of one-party branches again. Anything else unchanged."""
    if any(select.args.get(clause) for clause in PLAIN_CLAUSES) or not select.args.get("from_"):
        return select
    where = select.args.get("where")
    if any(e.find(exp.AggFunc, exp.Window, exp.Query, exp.Subquery, exp.Exists) is not None
           for e in [*select.expressions, *([where] if where else [])]):
        return select
    source = select.args["from_"].this
    if not isinstance(source, exp.Subquery):
        return select
    inner = _through_union(source.this) if isinstance(source.this, exp.Select) else source.this
    if not isinstance(inner, exp.Union) or inner.args.get("distinct") or any(
            inner.args.get(clause) for clause in ("order", "limit", "offset")):
        return select
    branches, stack, names = [], [inner], inner.named_selects  # a union's columns: its first branch's names
    while stack:
        node = stack.pop()
        if isinstance(node, exp.Union) and not node.args.get("distinct") and not any(
                node.args.get(clause) for clause in ("order", "limit", "offset")):
            stack += [node.right, node.left]
        elif not isinstance(node, exp.Select) or len(node.expressions) != len(names):
            return select
        else:
            node = node.copy()  # each branch's outputs under the union's names, which the SELECT reads
            node.set("expressions", [exp.alias_(e.unalias(), name, quoted=True) if e.alias_or_name != name else e
                                     for e, name in zip(node.expressions, names)])
            branch = select.copy()
            branch.set("from_", exp.From(this=exp.Subquery(this=node.copy(), alias=source.args.get("alias").copy())))
            branches.append(branch)
    union = branches[0]
    for branch in branches[1:]:
        union = exp.union(union, branch, distinct=False)
    return union


def _drop_using_coalesce(expression: exp.Expression, equal: set[frozenset[str]]) -> exp.Expression:
    """`JOIN ... USING (k)` qualifies `k` as COALESCE(a.k, b.k); for inner joins that is just a.k."""

    def simplify(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Coalesce):
            args = [node.this, *node.expressions]
            if all(isinstance(a, exp.Column) for a in args):
                names = [a.sql() for a in args]
                if all(frozenset((names[0], n)) in equal for n in names[1:]):
                    return args[0].copy()
        return node

    return expression.transform(simplify)


NATIVE_TYPES = frozenset({"BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
                          "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DATE", "TIME", "TIMESTAMP",
                          "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS",
                          "TIME WITH TIME ZONE", "INTERVAL", "UUID", "BLOB", "NULL"})


def duckdb_types(tree: exp.Expression, catalog: Catalog) -> tuple[str, ...]:
    """DuckDB's type of each output of the query, found by DESCRIBE over empty tables of the catalog's
    column types (exact and cheap: no data). A query DuckDB cannot bind (text times a number, AVG of a
    boolean, ...) is refused here with DuckDB's reason. Empty when the catalog's types cannot be
    declared in DuckDB (the results are then not type-checked)."""
    rows = _describe(tree, catalog)
    for (name, dtype, *_), expression in zip(rows, tree.expressions):
        if dtype.upper().strip('"') not in NATIVE_TYPES and not dtype.upper().startswith(("DECIMAL", "VARCHAR")):
            raise DataError(f"output {expression.sql(dialect='duckdb')[:80]!r} is of type {dtype}, which has no "
                            "Arrow value (e.g. an integer literal beyond HUGEINT): CAST it to DOUBLE or VARCHAR")
    return tuple(row[1] for row in rows)


def subquery_columns(body: exp.Expression, catalog: Catalog) -> dict[str, str]:
    """{output name: DuckDB type} of a subquery or UNION in FROM, by the same DESCRIBE; {} when unknown
    (its columns then have no known type, and what needs one is refused)."""
    try:
        columns = {name: dtype for name, dtype, *_ in _describe(body, catalog)}
        if isinstance(body, exp.Union):  # the SPU unifies integers with decimals, nothing else (as DuckDB does)
            branch_types = zip(*([dtype for _, dtype, *_ in _describe(b, catalog)] for b in _union_selects(body)))
            for name, types in zip(list(columns), branch_types):
                if len({dtype.split("(")[0].upper() if dtype.upper().startswith(("VARCHAR", "DATE", "BOOL"))
                        else "number" for dtype in types}) > 1:
                    columns[name] = f"UNION of {', '.join(sorted(set(types)))}"
        return columns
    except PlanError:
        return {}


def _union_selects(node: exp.Expression) -> list[exp.Expression]:
    """The branches of a (nested) UNION, in order."""
    return _union_selects(node.left) + _union_selects(node.right) if isinstance(node, exp.Union) else [node]


def _describe(tree: exp.Expression, catalog: Catalog) -> list[tuple]:
    """DESCRIBE of the query over empty tables of the catalog's column types; [] when those types
    cannot be declared in DuckDB; PlanError with DuckDB's reason when the query does not bind."""
    kind, value = _described_over(tree, catalog)
    if kind == "refused":
        raise PlanError(value)
    return list(value) if kind == "rows" else []


def _described_over(tree: exp.Expression, catalog: Catalog) -> tuple[str, object]:
    """`described` of the query over the catalog's empty mirror (`empty_mirror`); ("unknown", None) when
    a `party.table` the query reads has a type that cannot be declared in DuckDB."""
    read = {(t.db, t.name) for t in tree.find_all(exp.Table) if t.db}
    for party, table in read:
        catalog.columns(party, table)  # a table outside the catalog fails here, as it always did
    tables = tuple((party, tuple((table, tuple(columns)) for table, columns in sorted(party_tables.items())))
                   for party, party_tables in sorted(catalog.tables.items()))
    if not read <= empty_mirror(tables)[1]:
        return "unknown", None
    return described(tables, tree.sql(dialect="duckdb"))


@functools.lru_cache(maxsize=2048)
def described(tables: tuple, sql: str) -> tuple[str, object]:
    """DuckDB's DESCRIBE of `sql` over the empty mirror of `tables`: ("rows", rows), ("refused", DuckDB's
    reason) when it does not bind, ("unknown", None) on another DuckDB error. A pure function of the
    SQL text and the declared types (the tables are empty), so kept: planning, `check` and EXPLAIN of
    one query describe the same subqueries again."""
    cursor = empty_mirror(tables)[0].cursor()
    try:
        return "rows", tuple(cursor.execute("DESCRIBE " + sql).fetchall())
    except (duckdb.BinderException, duckdb.ConversionException, duckdb.OutOfRangeException) as exc:
        return "refused", _binder_reason(str(exc))
    except duckdb.Error:
        return "unknown", None
    finally:
        cursor.close()


@functools.lru_cache(maxsize=8)
def empty_mirror(tables: tuple) -> tuple[duckdb.DuckDBPyConnection, frozenset[tuple[str, str]]]:
    """An in-memory DuckDB with an empty table of the catalog's column types for each party's table (one
    schema per party), and the (party, table) pairs it could declare. Opening a DuckDB costs ~15 ms of CPU,
    more than planning a query, and the planner describes several subqueries per query: one mirror is kept
    per catalog declaration (`tables`, its key: a changed schema or type is a new key, so a mirror is never
    stale; the tables hold no data) and each use takes its own cursor (safe across threads)."""
    con = duckdb.connect(":memory:")
    con.execute("SET enable_external_access = false")
    declared_tables = set()
    for party, party_tables in tables:
        for table, columns in party_tables:
            typed = ", ".join(f'"{c}" {dtype}' for c, dtype in columns)
            try:
                con.execute(f'CREATE SCHEMA IF NOT EXISTS "{party}"')
                con.execute(f'CREATE TABLE "{party}"."{table}" ({typed})')
                declared_tables.add((party, table))
            except duckdb.Error:
                pass
    return con, frozenset(declared_tables)


GENERATED_NAME = re.compile(r"_col_\d+")  # sqlglot's qualify names an unnamed output _col_<i>
UNNAMED = "\0"  # marks a DuckDB name that replaces the one qualify gave an unnamed output


def duckdb_names(tree: exp.Expression, catalog: Catalog) -> tuple[str, ...]:
    """DuckDB's name of each output of the query as written (`count_star()`, `sum(o.amount)`,
    `(c.email || '-x')`), from DESCRIBE over empty tables: the names a user of DuckDB expects.
    Empty when DuckDB cannot bind the query (it is refused, or typed, later)."""
    kind, rows = _described_over(tree, catalog)
    if kind != "rows":
        return ()
    names = tuple(row[0] for row in rows)
    written = tree.selects if isinstance(tree, (exp.Select, exp.SetOperation)) else []
    if len(written) == len(names) and not any(isinstance(e, exp.Star) or e.find(exp.Star) is e for e in written):
        # an unnamed CAST(x AS t) is DuckDB's "CAST(x AS t)", where sqlglot's qualify would call it x
        return tuple(f"{UNNAMED}{name}" if isinstance(e, exp.Cast) else name for e, name in zip(written, names))
    return names


def name_outputs(tree: exp.Expression, names: tuple[str, ...]) -> exp.Expression:
    """Rename the outputs qualify called `_col_<i>` (or, for an unnamed CAST, by its operand's name) to
    DuckDB's names of them (`duckdb_names`)."""
    outputs = tree.selects if isinstance(tree, (exp.Select, exp.SetOperation)) else []
    if len(outputs) != len(names):
        return tree
    renamed = {}
    for output, name in zip(outputs, names):
        generated = name.startswith(UNNAMED)
        name = name.removeprefix(UNNAMED)
        if isinstance(output, exp.Alias) and (generated or GENERATED_NAME.fullmatch(output.alias)) \
                and name != output.alias:
            renamed[output.alias] = name
            output.set("alias", exp.to_identifier(name, quoted=True))
    for column in list(tree.find_all(exp.Column)):  # ORDER BY "_col_1" and the like refer to the new name
        if not column.table and column.name in renamed and column.find_ancestor(exp.Select) is tree:
            column.set("this", exp.to_identifier(renamed[column.name], quoted=True))
    return tree


def _binder_reason(message: str) -> str:
    """DuckDB's reason, naming the offending part of the query (the text its caret points at)."""
    lines = message.splitlines()
    for i, line in enumerate(lines[:-1]):
        caret = lines[i + 1]
        if line.startswith("LINE ") and "^" in caret:
            start, end = caret.index("^"), caret.rindex("^") + 1
            part = line[max(start - 30, len("LINE 1: ")):end + 30].replace("DESCRIBE ", "").strip()
            return f"{lines[0]} (near {part!r}); fix the types, e.g. with CAST"
    return lines[0]


def _check_outer_on(condition: exp.Expression, alias: str) -> None:
    """A LEFT JOIN's ON conjunct must be a filter of the NULL side alone (applied before the join) or a
    key `a.col = b.col` equating one of its columns with the other side's. Anything else decides
    which rows match, not which rows are kept, so it cannot become a WHERE filter: refused."""
    refs = aliases_of(condition)
    if refs == {alias}:
        return
    is_key = isinstance(condition, exp.EQ) and all(isinstance(side, exp.Column) for side in (condition.left,
                                                                                               condition.right))
    if alias in refs and len(refs) == 2 and is_key:
        return
    raise NotSupportedError(f"outer JOIN ... ON {condition.sql(dialect='duckdb')}: across parties an outer join's ON "
                            f"condition may only filter the joined table ({alias}) and equate its columns with the "
                            "other side's; move other conditions into a subquery or compute the join at one party")


def _build_cross_party(select: exp.Expression, catalog: Catalog) -> Node:
    _refuse_unsupported(select)
    ctes = {cte.alias_or_name: cte.this for cte in (select.args.get("with_").expressions if select.args.get("with_") else [])}
    from_ = select.args.get("from_")
    items = [from_.this] + [j.this for j in select.args.get("joins") or []]
    conjuncts: list[exp.Expression] = []
    joins = list(select.args.get("joins") or [])
    sides = [str(j.args.get("side") or "").upper() for j in joins]
    null_side = [j.this.alias_or_name for j in joins]  # the NULL-extended item of each join, if outer
    if "RIGHT" in sides and len(joins) == 1:  # a RIGHT JOIN b is b LEFT JOIN a
        null_side = [items[0].alias_or_name]
        items = [items[1], items[0]]
        sides = ["LEFT"]
    outer: list[str] = []
    for join, side, alias in zip(joins, sides, null_side):
        kind = str(join.args.get("kind") or "").upper()
        if side not in ("", "LEFT") or kind not in ("", "INNER", "CROSS", "OUTER"):
            shape = " ".join(p for p in (side, kind) if p)
            raise NotSupportedError(f"{shape} JOIN across parties is not supported here (inner and LEFT joins are, "
                                    "and a single RIGHT join)")
        on = conjuncts_of(join.args.get("on"))
        if side == "LEFT":
            for condition in on:
                _check_outer_on(condition, alias)
            outer.append(alias)
        conjuncts += on
    where = select.args.get("where")
    memberships, where_conjuncts = [], []
    for conjunct in conjuncts_of(where.this if where else None):
        membership = _membership(conjunct)
        if membership is not None:
            memberships.append(membership)
            continue
        if conjunct.find(exp.Subquery, exp.Exists, exp.Query) is not None:  # also ANY/ALL (SELECT ...)
            raise NotSupportedError(
                f"subquery in {conjunct.sql()!r}: across parties, only [NOT] IN (SELECT one column ...) and "
                "[NOT] EXISTS (SELECT ... WHERE inner.col = outer.col ...) of one other party are supported")
        conjuncts.append(conjunct)
        where_conjuncts.append(conjunct)
    equal = {
        frozenset((c.left.sql(), c.right.sql()))
        for c in conjuncts
        if isinstance(c, exp.EQ) and isinstance(c.left, exp.Column) and isinstance(c.right, exp.Column)
    }
    for alias in list(outer):  # WHERE over the NULL-extended side: null-rejecting makes it an inner join
        refs = [c for c in where_conjuncts if alias in aliases_of(c)]
        if refs:
            if all(_null_rejecting(c, alias) for c in refs):
                outer.remove(alias)
            else:
                raise NotSupportedError(f"WHERE conditions on the NULL side ({alias}) of a LEFT JOIN across parties "
                                        "are supported only when they reject NULLs")
    union = _union_scan(items, ctes) if len(items) == 1 else None
    if union is not None:
        if memberships:
            raise NotSupportedError("IN / EXISTS subqueries over a UNION ALL across parties are not supported yet")
        node: Node = Filter(union, tuple(conjuncts)) if conjuncts else union
    else:
        sources = tuple(_source(item, catalog, ctes) for item in items)
        node = Filter(InnerJoin(sources, (), tuple(memberships), tuple(outer)), tuple(conjuncts))

    expressions = tuple(_drop_using_coalesce(e.copy(), equal) for e in select.expressions)
    group = select.args.get("group")
    group_by = tuple(_drop_using_coalesce(g.copy(), equal) for g in (group.expressions if group else []))
    having = select.args.get("having")
    has_agg = any(aggregates_in(e) for e in expressions) or bool(group_by) or having is not None
    if has_agg:
        node = Aggregate(node, group_by, having.this.copy() if having else None)
    node = Project(node, expressions, distinct=bool(select.args.get("distinct")), types=duckdb_types(select, catalog))
    order = select.args.get("order")
    if order:
        node = Sort(node, tuple(_drop_using_coalesce(o.copy(), equal) for o in order.expressions))
    limit, offset = select.args.get("limit"), select.args.get("offset")
    if limit or offset:
        node = Limit(node, limit.expression if limit else None, offset.expression if offset else None)
    return node
