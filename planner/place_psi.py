"""Joins between parties on the spine: the equi-join graph of the parties' local queries, a spanning
tree of it in PSI order (PK-FK edges first; an edge closing a cycle filters the joined rows instead),
the PSI protocol of each edge, and the EquiJoin steps with what each party learns. Also which join
keys must stay secret (an oblivious join on the SPU instead: `place_spu`) and which columns the PSI
makes equal."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from sqlglot import exp

from sqlsecure.errors import NotSupportedError, PlanError
from sqlsecure.planner.cost import expected_rows
from sqlsecure.planner.logical import InnerJoin, LocalQuery, UnionScan, aliases_of, column_key
from sqlsecure.planner.physical import EquiJoin, RunLocal
from sqlsecure.planner.place_threshold import party_tree
from sqlsecure.planner.tree import quoted, unique_on
from sqlsecure.policy.grants import Use

if TYPE_CHECKING:
    from sqlsecure.planner.placement import PlacementContext


KEY_FAMILIES = {
    "TINYINT": "integer", "SMALLINT": "integer", "INTEGER": "integer", "BIGINT": "integer",
    "HUGEINT": "integer", "UTINYINT": "integer", "USMALLINT": "integer", "UINTEGER": "integer",
    "UBIGINT": "integer", "UHUGEINT": "integer", "VARCHAR": "string", "DATE": "date",
    "BOOLEAN": "boolean", "TIMESTAMP": "timestamp", "UUID": "uuid", "BLOB": "binary",
}


def key_family(dtype: str | None) -> str | None:
    if dtype is None:
        return None
    base = dtype.split("(")[0].upper()
    if base == "DECIMAL":
        return "decimal"
    if base in ("FLOAT", "DOUBLE", "REAL"):
        return "float"
    return KEY_FAMILIES.get(base, base.lower())


def join_edges(join: InnerJoin, ctx: PlacementContext):
    """The equi-join edges between inputs ((i, j) -> [(key of i, key of j)], i < j), the cross-party
    conjuncts that are no edge (residual) and the conjuncts written for each edge."""
    owner = {}
    for i, query in enumerate(join.inputs):
        for alias in query.aliases:
            owner[alias] = i
    edges: dict[tuple[int, int], list[tuple[str, str]]] = {}

    def output_name(query: LocalQuery, side: exp.Expression) -> str:
        if isinstance(side, exp.Column):
            return column_key(side)
        return dict(query.keys)[side.sql()]

    residual, written = [], {}
    for conjunct in join.conjuncts:
        sides = (conjunct.left, conjunct.right) if isinstance(conjunct, exp.EQ) else ()
        owners = [{owner[a] for a in aliases_of(s)} for s in sides]
        if not sides or any(len(o) != 1 for o in owners) or owners[0] == owners[1]:
            residual.append(conjunct)  # a cross-party predicate: evaluated on the SPU after the join
            continue
        i, j = owners[0].pop(), owners[1].pop()
        left, right = (conjunct.left, conjunct.right) if i < j else (conjunct.right, conjunct.left)
        i, j = min(i, j), max(i, j)
        _check_key_types(left, right, ctx)
        pair = (output_name(join.inputs[i], left), output_name(join.inputs[j], right))
        edges.setdefault((i, j), []).append(pair)
        written.setdefault((i, j), []).append(conjunct)
    return edges, residual, written


def _check_key_types(left: exp.Expression, right: exp.Expression, ctx: PlacementContext) -> None:
    if not (isinstance(left, exp.Column) and isinstance(right, exp.Column)):
        return
    lf = key_family(ctx.column_type(left.table, left.name))
    rf = key_family(ctx.column_type(right.table, right.name))
    for family, col in ((lf, left), (rf, right)):
        if family == "float":
            raise NotSupportedError(
                f"join key {col.sql()} is floating point; exact matching needs INTEGER, DECIMAL or VARCHAR "
                "(CAST it in the query)"
            )
    if lf and rf and lf != rf:
        raise PlanError(
            f"join keys {left.sql()} ({lf}) and {right.sql()} ({rf}) have different types; "
            "values of different types never match: CAST one side so both are the same type"
        )


def join_order(join: InnerJoin, edges, ctx: PlacementContext):
    """Breadth-first tree over the join graph: (joined component i, new component j, keys of i, keys of j)
    per join, and the edges that close a cycle (`_spanning_edges`), which the caller applies as filters on
    the joined relation: an inner join's condition holds the same after the joins as in them."""
    n = len(join.inputs)
    spanning = _spanning_edges(join, edges, ctx)
    joined, queue, order = {0}, deque([0]), []
    while queue:
        i = queue.popleft()
        for (a, b), pairs in sorted(spanning.items()):
            j = b if a == i else a if b == i else None
            if j is None or j in joined:
                continue
            keys_i = tuple(p[0] if a == i else p[1] for p in pairs)
            keys_j = tuple(p[1] if a == i else p[0] for p in pairs)
            order.append((i, j, keys_i, keys_j))
            joined.add(j)
            queue.append(j)
    if len(joined) != n:
        missing = ", ".join(sorted({join.inputs[k].party for k in range(n) if k not in joined}))
        raise NotSupportedError(f"no equi-join condition links {missing} to the rest: a cross join "
                                "between parties is not supported")
    closing = sorted(set(edges) - set(spanning))
    outer = {k for k, q in enumerate(join.inputs) if set(q.aliases) & set(join.outer)}
    if any(set(edge) & outer for edge in closing):
        raise NotSupportedError("join conditions form a cycle through the NULL side of a LEFT JOIN; only "
                                "tree-shaped outer joins (chains and stars) are supported")
    return order, closing


def _spanning_edges(join: InnerJoin, edges, ctx: PlacementContext) -> dict:
    """A spanning tree of the join graph (Kruskal): edges with a side known unique on its keys first (PK-FK
    joins, n + m rows), then the others in order, so a cycle is closed by a many-to-many edge (TPC-H Q5's
    `c_nationkey = s_nationkey`), which then only filters the rows the PK-FK joins produced."""
    root = list(range(len(join.inputs)))

    def find(k: int) -> int:
        while root[k] != k:
            k = root[k]
        return k

    def many_to_many(edge) -> bool:
        return not any(known_unique(join.inputs[k], tuple(p[side] for p in edges[edge]), ctx)
                       for side, k in enumerate(edge))

    chosen = {}
    for edge in sorted(edges, key=lambda e: (many_to_many(e), e)) if len(edges) >= len(join.inputs) else edges:
        a, b = find(edge[0]), find(edge[1])
        if a != b:
            root[a] = b
            chosen[edge] = edges[edge]
    return chosen


def known_unique(query, keys: tuple[str, ...], ctx: PlacementContext) -> bool:
    """Whether a join input's output columns `keys` are unique at plan time (`tree.unique_on`: GROUP BY
    keys, DISTINCT, a declared key), so `spu.join.oblivious_pk_join` cannot meet repeats on both sides
    except where a party's data breaks its declaration (a DataError at run time)."""
    tree = party_tree(query.party, query.select, ctx.usage.catalog)
    return tree is not None and unique_on(tree, tuple(quoted(k) for k in keys), ctx.usage.catalog) is not None


def join_rows(join: InnerJoin, ctx) -> int | None:
    """The cost model's row estimate for the join's output, from the published sizes and the filters the
    query states at each party (`cost.expected_rows`): nothing a party has not published."""
    local = [b for q in join.inputs for b in (q.branches if isinstance(q, UnionScan) else (q,))]
    filters = [q.select.args["where"].this for q in local
               if isinstance(q, LocalQuery) and q.select.args.get("where") is not None]
    sizes = [sum(ctx.rows_of(b.party) or 0 for b in q.branches) or None if isinstance(q, UnionScan)
             else ctx.rows_of(q.party) if isinstance(q, LocalQuery) else None for q in join.inputs]
    return expected_rows(sizes, filters)


def secret_keys(join: InnerJoin, ctx: PlacementContext) -> tuple[exp.Expression, ...]:
    """The join conditions whose keys one party of their own PSI edge may not learn the intersection of.

    A PSI edge runs between the two parties owning its keys (`EquiJoin`: the left party's base rows
    against the right party's), so only they see key values: SCQL's rule, PLAINTEXT_AFTER_JOIN makes a
    key plain to the join partner. Other parties of the chain learn only which rows survive (listed
    under the join's leakage; their filters are checked by `Usage.check_cross_party`)."""
    hidden = []
    for conjunct in join.conjuncts:
        if not isinstance(conjunct, exp.EQ) or len(aliases_of(conjunct)) < 2:
            continue
        refs = [r for c in conjunct.find_all(exp.Column) for r in ctx.usage.refs(c)[0]]
        viewers = ctx.usage.edge_parties(conjunct)
        if any(v != r.party and not ctx.usage.grants.allows(r, v, Use.JOIN_KEY) for r in refs for v in viewers):
            hidden.append(conjunct)
    return tuple(hidden)


def psi_equal_columns(join: InnerJoin, order, ctx: PlacementContext) -> dict[str, list[exp.Column]]:
    """Columns equal on every row the PSI joins keep: both keys of an inner join edge (`order`), of one
    declared type (so the SPU encodes them alike), neither on a LEFT JOIN's NULL side.
    Column key -> the columns of other parties it equals."""
    spanning = {frozenset(pair) for *_, keys_i, keys_j in order for pair in zip(keys_i, keys_j)}
    equal: dict[str, list[exp.Column]] = {}
    for conjunct in join.conjuncts:
        sides = (conjunct.left, conjunct.right) if isinstance(conjunct, exp.EQ) else ()
        if not sides or not all(isinstance(c, exp.Column) and c.table for c in sides):
            continue
        a, b = sides
        if ctx.parties[a.table] == ctx.parties[b.table] or {a.table, b.table} & set(join.outer) \
                or frozenset((column_key(a), column_key(b))) not in spanning:
            continue
        if ctx.column_type(a.table, a.name) is None or ctx.column_type(a.table, a.name) != \
                ctx.column_type(b.table, b.name):
            continue
        equal.setdefault(column_key(a), []).append(b)
        equal.setdefault(column_key(b), []).append(a)
    return equal


def psi_join_steps(join: InnerJoin, order, edges, computing: set[str], ctx: PlacementContext, steps: list,
                   leakage: list) -> str:
    """Append the EquiJoin (PSI) step of each join of `order`, then of each IN / EXISTS semi- or anti-join,
    to `steps`, and what each party learns to `leakage`; the name of the joined relation.

    A party keeps a piece of a joined relation only while it still needs one: to compute outputs
    (`computing`), or to supply keys for a later join. Others never see the join's row structure."""
    members = [q.party for q in join.inputs]
    current, inside, holding = "r0", [members[0]], (members[0],)
    for n, (i, j, keys_i, keys_j) in enumerate(order, 1):
        later_keys = {members[a] for a, *_ in order[n:]} | {
            members[next(k for k, q in enumerate(join.inputs) if m.key.table in q.aliases)] for m in join.memberships}
        inside = inside + [members[j]]
        keep = tuple(p for p in dict.fromkeys(inside) if p in computing or p in later_keys)
        out = f"j{n}"
        pi, pj = members[i], members[j]
        left_outer = bool(set(join.inputs[j].aliases) & set(join.outer))
        if left_outer and any(j in (a, b) for (a, b) in edges if i not in (a, b)):
            raise NotSupportedError("the NULL side of a LEFT JOIN across parties must join nothing else")
        if set(join.inputs[i].aliases) & set(join.outer):
            raise NotSupportedError("a LEFT JOIN whose NULL side is joined on by another table is not supported yet")
        psi, large = _psi_protocol(pi, pj, ctx, leakage)
        steps.append(EquiJoin(current, f"r{j}", pi, f"r{i}", keys_i, pj, keys_j, out, holding, keep,
                              mode="left" if left_outer else "inner", psi=psi, large=large))
        if left_outer:
            leakage.append((pj, f"how many rows of {out} found no match (the NULL-extended rows of the LEFT JOIN)"))
        if pi != pj:
            for me, mine, peer, theirs in ((pi, keys_i, pj, keys_j), (pj, keys_j, pi, keys_i)):
                leakage.append((me, f"which of its {', '.join(mine)} values are also {peer}'s {', '.join(theirs)}; "
                                    f"{peer}'s number of distinct keys and row count per common key"))
        for holder in keep:
            if holder != pi:
                leakage.append((holder, f"the row structure of join {out} (which of its rows match, how often)"))
        current, holding = out, keep

    for m, membership in enumerate(join.memberships):  # semi- and anti-joins, after the inner joins
        i = next(k for k, q in enumerate(join.inputs) if membership.key.table in q.aliases)
        pi, pj = members[i], membership.query.party
        if pi == pj:
            raise NotSupportedError("an IN / EXISTS subquery of the same party as its key, inside a cross-party "
                                    "query, is not supported yet: move it into a subquery in FROM")
        steps.append(RunLocal(pj, membership.query.select.sql(dialect="duckdb"), f"m{m}"))
        out = f"s{m}"
        psi, large = _psi_protocol(pi, pj, ctx, leakage)
        steps.append(EquiJoin(current, f"m{m}", pi, f"r{i}", (column_key(membership.key),), pj, ("__member",), out,
                              holding, holding, mode="anti" if membership.anti else "semi",
                              null_aware=membership.null_aware, psi=psi, large=large))
        leakage.append((pi, f"which of its {column_key(membership.key)} values are among {pj}'s subquery values"))
        leakage.append((pj, f"which of its subquery values are {pi}'s {column_key(membership.key)} values"
                            + (", and whether it has none or a NULL (told to the peer)"
                               if membership.null_aware else "")))
        current = out
    return current


UNBALANCED_RATIO = 64  # published sizes this far apart (and the large one >= UNBALANCED_MIN) -> unbalanced PSI
UNBALANCED_MIN = 1 << 16


def _psi_protocol(a: str, b: str, ctx: PlacementContext, leakage: list) -> tuple[str, str]:
    """The PSI between parties a and b: the federation's, or the unbalanced ECDH-PSI when one side's
    published size dwarfs the other's (its blinded set is then prepared once and reused)."""
    if a == b:
        return ctx.psi, ""
    sizes = {p: ctx.rows_of(p) for p in (a, b)}
    if None in sizes.values():
        return ctx.psi, ""
    large, small = (a, b) if sizes[a] >= sizes[b] else (b, a)
    if sizes[large] < UNBALANCED_MIN or sizes[large] < UNBALANCED_RATIO * sizes[small]:
        return ctx.psi, ""
    leakage.append((large, f"which of {small}'s query keys recur across queries while its PSI key is kept "
                           "(unbalanced PSI: keys and the prepared set rotate daily or every 1,000 queries)"))
    return "unbalanced", large
