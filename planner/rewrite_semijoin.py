"""Joins the SPU would pair row by row, rewritten as sort-based joins on a unique key (issue 16's speed).

Four rules over the translation's operator tree (`tree.py`), each exact and a plan choice, never a refusal:

`per_key_extremes`: an aggregate over `A JOIN B ON keys WHERE L(a) op R(b)` (one inequality across the
sides, op one of < <= > >=) whose group keys and aggregates read only A's columns and ignore repeats
(DISTINCT, MIN, MAX). A row of A is in some pair iff `L(a) op EXTREME(R)` over B's rows of its key
(MAX for < <=, MIN for > >=; NULLs never compare TRUE, and MAX / MIN skip them), so the aggregate reads
A's rows joined with B grouped by its keys: a GROUP BY (unique keys) and a sort-based PK-FK join, n + m
rows, where the pairs were n * m. Where the group threshold counts B's rows too, it must see B's rows in
pairs as well: A's rows in pairs are unioned with B's rows in pairs (found the same way), B's join keys
in A's key columns, which is exact when the aggregates and group keys read only A's join keys
(Secrecy's aspirin count: `COUNT(DISTINCT d.pid)`). Each extreme is a Subquery, so its rows carry no
provenance: the threshold counts exactly the rows in pairs, as before.

`distinct_in_pairs`: the same for DISTINCT of A's columns over such pairs where B's rows carry no
provenance (EXISTS with one inequality beside its equalities: `subqueries.exists_with_residual`).

`anti_in_pairs`: A's rows without such a pair (NOT EXISTS with one inequality beside its equalities, or
`A LEFT JOIN B ON keys AND L(a) op R(b) WHERE b.key IS NULL`, A's columns read above), where B's rows carry
no provenance: A LEFT-joined with the same extreme per key, kept where `L(a) op EXTREME(R)` is not TRUE
(a NULL operand, a NULL or unmatched key, or no non-NULL R: no pair, so the row stays).

`keyed_equalities`: an equality across the sides of an inner join, left in a filter above it (a WHERE
conjunct placed after the join's own keys), becomes a join key where that makes one side unique on its
keys (a ROW_NUMBER with its PARTITION BY: `r2.pid = r1.pid AND r2.row_no = r1.row_no + 1`, Secrecy's
recurrent C. diff), so the SPU joins by a sort instead of all pairs.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import sqlglot
from sqlglot import exp

from sqlsecure.planner.build import conjuncts_of
from sqlsecure.planner.catalog import Catalog
from sqlsecure.planner.logical import walk
from sqlsecure.planner.subqueries import Subquery
from sqlsecure.planner.tree import Aggregate, Distinct, Filter, Join, Op, Project, UnionAll, quoted, rebuilt, unique_side
from sqlsecure.planner.tree import _columns_read as _reads  # the columns SQL over a relation reads

EXTREMES = {"<": ("MAX", "MIN"), "<=": ("MAX", "MIN"), ">": ("MIN", "MAX"), ">=": ("MIN", "MAX")}  # op: (of R, of L)
COMPARISONS = {exp.LT: "<", exp.LTE: "<=", exp.GT: ">", exp.GTE: ">="}
FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
PREFIX = "__ext"  # the columns of the per-key extremes


def rewritten(root: Op, catalog: Catalog, counted) -> Op:
    """`root` with both rules applied bottom-up; `counted(op)`: whether the group threshold counts rows of
    `op`'s parties (so the extremes rule keeps them in the aggregate's input)."""
    fresh = itertools.count(1)

    def rule(op: Op) -> Op:
        op = rebuilt(op, rule)
        if isinstance(op, Aggregate):
            return per_key_extremes(op, counted, fresh) or op
        if isinstance(op, Distinct):
            return distinct_in_pairs(op, counted, fresh) or op
        if isinstance(op, Project):
            return anti_in_pairs(op, counted, fresh) or op
        if isinstance(op, Filter) and op.flag is None:
            return keyed_equalities(op, catalog) or op
        return op

    return rule(root)


# -- an aggregate over pairs that meet one inequality ----------------------------------------------------
def per_key_extremes(aggregate: Aggregate, counted, fresh) -> Op | None:
    """`aggregate` over A's rows in pairs (and, where B's rows are counted, B's), or None (module doc)."""
    found = _filtered_join(aggregate.child, keyless=True)
    if found is None or aggregate.eager:
        return None
    join, conjuncts = found
    reads = _reads(*(sql for _, sql in aggregate.keys), *(a[2] for a in aggregate.aggregates))
    if not all(distinct or func in ("MIN", "MAX") for _, func, _, distinct in aggregate.aggregates) or any(
            arg is None for _, _, arg, _ in aggregate.aggregates):
        return None
    for kept, other, kept_keys, other_keys in ((join.left, join.right, join.left_keys, join.right_keys),
                                               (join.right, join.left, join.right_keys, join.left_keys)):
        if not reads <= set(kept.columns):
            continue
        split = _split(conjuncts, set(kept.columns), set(other.columns))
        if split is None:
            return None
        own, theirs, (left, op, right) = split
        kept, other = _filtered(kept, own), _filtered(other, theirs)
        in_pairs = _in_pairs(kept, other, kept_keys, other_keys, (left, op, right), fresh)
        if not _provenanced(other, counted):
            return replace(aggregate, child=Project(in_pairs, tuple((c, quoted(c)) for c in kept.columns)))
        names = _bare_names(kept, kept_keys)
        if names is None or not reads <= set(names) or _bare_names(other, other_keys) is None:
            return None
        theirs_in_pairs = _in_pairs(other, kept, other_keys, kept_keys, (right, FLIPPED[op], left), fresh)
        union = UnionAll((Project(in_pairs, tuple((n, quoted(n)) for n in names)),
                          Project(theirs_in_pairs, tuple(zip(names, other_keys)))))
        return replace(aggregate, child=union)
    return None


def distinct_in_pairs(op: Distinct, counted, fresh) -> Op | None:
    """DISTINCT of one side's columns over pairs meeting one inequality (EXISTS with a residual condition:
    `subqueries.exists_with_residual`) as DISTINCT over that side's rows in pairs, where the other side's
    rows carry no provenance (a subquery's, or rows no threshold counts); else None."""
    found = _filtered_join(op.child.child, keyless=True) if isinstance(op.child, Project) else None
    if found is None:
        return None
    join, conjuncts = found
    reads = _reads(*(sql for _, sql in op.child.items))
    for kept, other, kept_keys, other_keys in ((join.left, join.right, join.left_keys, join.right_keys),
                                               (join.right, join.left, join.right_keys, join.left_keys)):
        split = _split(conjuncts, set(kept.columns), set(other.columns))
        if not reads <= set(kept.columns) or _provenanced(other, counted) or split is None:
            continue
        own, theirs, comparison = split
        in_pairs = _in_pairs(_filtered(kept, own), _filtered(other, theirs), kept_keys, other_keys, comparison, fresh)
        return replace(op, child=replace(op.child, child=in_pairs))
    return None


def anti_in_pairs(op: Project, counted, fresh) -> Op | None:
    """`op` over A's rows a LEFT join with one inequality leaves unmatched, read as A LEFT-joined with the
    other side's extreme per key (n + m rows, not n * m) where the ON's conditions on A and the comparison
    with the extreme are not TRUE (module doc); None unless `op` reads A's columns only, its filter keeps
    the rows whose (never NULL when matched) join key of B is NULL, and B's rows carry no provenance."""
    unmatched = op.child if isinstance(op.child, Filter) and op.child.flag is None else None
    join = unmatched.child if unmatched is not None else None
    if not (isinstance(join, Join) and join.kind == "left" and join.condition) or \
            not _reads(*(sql for _, sql in op.items)) <= set(join.left.columns) or \
            not _tests_unmatched(unmatched.condition, join) or _provenanced(join.right, counted):
        return None
    split = _split([join.condition], set(join.left.columns), set(join.right.columns))
    if split is None:
        return None
    own, theirs, (left, comparison, right) = split
    extremes, keys, value = _extremes(_filtered(join.right, theirs), join.right_keys, right, comparison, fresh)
    met = " AND ".join([f"({c.sql(dialect='duckdb')})" for c in own] + [f"{_operand(left)} {comparison} {value}"])
    joined = Join("left", join.left, extremes, join.left_keys, keys) if keys else Join("cross", join.left, extremes)
    without = Filter(joined, f"NOT COALESCE({met}, FALSE)")
    return replace(op, child=without)


def _tests_unmatched(condition: str, join: Join) -> bool:
    """Whether `condition` is `c IS NULL` of a column of the join's right side that no matched row has NULL:
    a join key, or a constant (NOT EXISTS's `__hit`)."""
    node = sqlglot.parse_one(condition, read="duckdb")
    if not (isinstance(node, exp.Is) and isinstance(node.expression, exp.Null) and isinstance(node.this, exp.Column)):
        return False
    keys = {sqlglot.parse_one(k, read="duckdb").sql(dialect="duckdb") for k in join.right_keys}
    return node.this.sql(dialect="duckdb") in keys or _constant(join.right, node.this.name)


def _constant(op: Op, column: str) -> bool:
    """Whether `column` of `op` is a constant other than NULL, through renamings and filters."""
    while isinstance(op, (Project, Filter, Subquery)):
        if isinstance(op, Project):
            sql = dict(op.items).get(column)
            node = sqlglot.parse_one(sql, read="duckdb") if sql is not None else None
            if isinstance(node, exp.Literal):
                return True
            if not isinstance(node, exp.Column) or node.table:
                return False
            column = node.name
        op = op.child
    return False


def _provenanced(op: Op, counted) -> bool:
    """Whether `op`'s rows carry provenance the group threshold counts (a subquery's never do, nor what
    projections and filters make of its rows)."""
    while isinstance(op, (Project, Filter)):
        op = op.child
    return counted(op) and not isinstance(op, Subquery)


def _filtered_join(op: Op, keyless: bool = False) -> tuple[Join, list[str]] | None:
    """(the inner equi-join under a stack of filters, every condition of the stack and of the join's ON);
    `keyless`: a cross join too (its extremes are over all the other side's rows)."""
    conjuncts = []
    while isinstance(op, Filter) and op.flag is None:
        conjuncts.append(op.condition)
        op = op.child
    if not isinstance(op, Join) or not (op.kind == "inner" and op.left_keys or keyless and op.kind == "cross"):
        return None
    return op, conjuncts + ([op.condition] if op.condition else [])


def _split(conditions: list[str], own: set[str], theirs: set[str]):
    """(conjuncts of A only, conjuncts of B only, the one inequality (L over A, op, R over B)), or None when
    there is not exactly one conjunct across the sides or it is not such an inequality."""
    mine, others, across = [], [], []
    for condition in conditions:
        for conjunct in _conjuncts(condition):
            reads = _reads(conjunct.sql(dialect="duckdb"))
            (mine if reads <= own else others if reads <= theirs else across).append(conjunct)
    if len(across) != 1 or type(across[0]) not in COMPARISONS:
        return None
    comparison = across[0]
    op = COMPARISONS[type(comparison)]
    left, right = comparison.left.sql(dialect="duckdb"), comparison.right.sql(dialect="duckdb")
    if _reads(left) <= theirs and _reads(right) <= own:
        left, right, op = right, left, FLIPPED[op]
    if not (_reads(left) and _reads(left) <= own and _reads(right) and _reads(right) <= theirs):
        return None
    return mine, others, (left, op, right)


def _in_pairs(kept: Op, other: Op, kept_keys, other_keys, comparison, fresh) -> Join:
    """`kept`'s rows with a partner in `other` meeting `comparison` (L op R), each once: joined with
    `other`'s extreme of R per key (unique: a sort-based join), the comparison made against it."""
    left, op, right = comparison
    extremes, keys, value = _extremes(other, other_keys, right, op, fresh)
    return Join("inner" if keys else "cross", kept, extremes, tuple(kept_keys), keys, f"{_operand(left)} {op} {value}")


def _extremes(other: Op, other_keys, right: str, op: str, fresh) -> tuple[Subquery, tuple[str, ...], str]:
    """(`other`'s extreme of R per key, unique on its keys; its keys' SQL; its value's SQL): MAX for < <=,
    MIN for > >=, the one value L must beat for `L op R` to hold for some row of the key."""
    n = next(fresh)
    names = tuple(f"{PREFIX}{n}.key{i}" for i in range(len(other_keys)))
    value = f"{PREFIX}{n}.{EXTREMES[op][0].lower()}"
    extremes = Aggregate(other, tuple(zip(names, other_keys)), ((value, EXTREMES[op][0], right, False),))
    return Subquery(extremes, one_row=not names, thresholded=False), tuple(quoted(name) for name in names), quoted(value)


def _operand(sql: str) -> str:
    """`sql` as a comparison's operand: a column as is, any other expression in parentheses."""
    return sql if isinstance(sqlglot.parse_one(sql, read="duckdb"), exp.Column) else f"({sql})"


def _filtered(op: Op, conjuncts: list[exp.Expression]) -> Op:
    for conjunct in conjuncts:
        op = Filter(op, conjunct.sql(dialect="duckdb"))
    return op


def _bare_names(op: Op, keys) -> list[str] | None:
    """The column names of `op` its join keys are, or None where one is an expression."""
    by_sql = {quoted(c): c for c in op.columns}
    names = [by_sql.get(sql) for sql in keys]
    return None if None in names or len(set(names)) != len(names) else names


# -- an equality across an inner join, as one more key -----------------------------------------------------
def keyed_equalities(op: Filter, catalog: Catalog) -> Op | None:
    """The filters over an inner equi-join with each equality across its sides made a join key, where that
    makes one side unique on its keys and it was not before; else None."""
    found = _filtered_join(op)
    if found is None or found[0].condition is not None or unique_side(found[0], catalog) is not None:
        return None
    join, conditions = found
    left_keys, right_keys, rest = list(join.left_keys), list(join.right_keys), []
    left, right = set(join.left.columns), set(join.right.columns)
    for condition in conditions:
        for conjunct in _conjuncts(condition):
            pair = _key_pair(conjunct, left, right)
            if pair is None:
                rest.append(conjunct)
            else:
                left_keys.append(pair[0])
                right_keys.append(pair[1])
    keyed = replace(join, left_keys=tuple(left_keys), right_keys=tuple(right_keys))
    if len(left_keys) == len(join.left_keys) or unique_side(keyed, catalog) is None:
        return None
    return _filtered(keyed, rest)


def _key_pair(conjunct: exp.Expression, left: set[str], right: set[str]) -> tuple[str, str] | None:
    """(left SQL, right SQL) of an equality whose sides each read one side of the join, or None."""
    if not isinstance(conjunct, exp.EQ):
        return None
    a, b = conjunct.left.sql(dialect="duckdb"), conjunct.right.sql(dialect="duckdb")
    ra, rb = _reads(a), _reads(b)
    if ra and rb and ra <= left and rb <= right:
        return a, b
    if ra and rb and ra <= right and rb <= left:
        return b, a
    return None


def _conjuncts(sql: str) -> list[exp.Expression]:
    return conjuncts_of(sqlglot.parse_one(sql, read="duckdb")) if sql else []


def notes(root: Op) -> tuple[str, ...]:
    """EXPLAIN's line per per-key extreme the program joins (`per_key_extremes`)."""
    out = []
    for op in walk(root):
        if isinstance(op, Join) and isinstance(op.right, Subquery) and isinstance(op.right.child, Aggregate) and \
                any(a[0].startswith(PREFIX) for a in op.right.child.aggregates):
            (_, func, arg, _), = op.right.child.aggregates
            keys = ", ".join(sql for _, sql in op.right.child.keys)
            kept = f"kept where {op.condition} holds for" if op.condition else \
                "without a pair kept (anti join), compared with"
            rows = (f"the rows of {', '.join(op.left_keys)} {kept} {func}({arg}) per key ({keys}), a sort-based join "
                    "(n + m rows)") if keys else f"the rows {kept} {func}({arg}) over all rows, one row beside each (n rows)"
            out.append(f"rows in pairs: {rows}, not all n * m pairs")
    return tuple(out)
