"""The logical operator tree of any SELECT, for the operator-by-operator translation (`translate.py`).

Built from the qualified sqlglot AST. Every operator yields a relation whose columns have unique
names; expressions are DuckDB SQL over the child's column names, quoted as identifiers. A base
column `"alias"."col"` is named `alias.col`; a derived table's output `n` is `alias.n`. Derived
tables, CTEs and IN / EXISTS subqueries become subtrees; uncorrelated IN and correlated equality
EXISTS become semi / anti joins; other subqueries in expressions become joins in `subqueries.py`.
What has no operator here raises NotSupportedError naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlglot import exp

from sqlsecure.errors import NotSupportedError
from sqlsecure.planner.build import conjuncts_of
from sqlsecure.planner.catalog import Catalog
from sqlsecure.planner.dialects.common import template

AGGREGATES = {exp.Count: "COUNT", exp.Sum: "SUM", exp.Avg: "AVG", exp.Min: "MIN", exp.Max: "MAX"}
RANKINGS = ("ROW_NUMBER", "RANK", "DENSE_RANK")
RELATIVE_RANKINGS = ("PERCENT_RANK", "CUME_DIST")
COMPOSED_WINDOWS = ("AVG", *RELATIVE_RANKINGS)  # computed from the windows above (tree.windows)
WINDOWS = {"ROW_NUMBER": "row_number", "RANK": "rank", "DENSE_RANK": "dense_rank", "COUNT": "count", "SUM": "sum",
           "MIN": "min", "MAX": "max"}


@dataclass(frozen=True)
class Op:
    """An operator; `columns` are the names of its output columns."""

    @property
    def children(self) -> tuple["Op", ...]:
        return ()


@dataclass(frozen=True)
class Scan(Op):
    party: str
    table: str
    alias: str
    names: tuple[str, ...]  # the table's columns the query reads

    @property
    def columns(self):
        return tuple(f"{self.alias}.{n}" for n in self.names)


@dataclass(frozen=True)
class Unary(Op):
    """An operator over one child; its columns are the child's unless it says otherwise."""

    child: Op

    @property
    def columns(self):
        return self.child.columns

    @property
    def children(self):
        return (self.child,)


@dataclass(frozen=True)
class Filter(Unary):
    """Rows where `condition` is TRUE. `flag`: the boolean column the child's owner computed the conditions
    `evaluated` into (`translate.owner_flags`), which this filter reads and drops from its outputs."""

    condition: str
    flag: str | None = None
    evaluated: tuple[str, ...] = ()

    @property
    def columns(self):
        return tuple(c for c in self.child.columns if c != self.flag)


@dataclass(frozen=True)
class Project(Unary):
    items: tuple[tuple[str, str], ...]  # (name, SQL)

    @property
    def columns(self):
        return tuple(n for n, _ in self.items)


@dataclass(frozen=True)
class Join(Op):
    kind: str  # inner | left | full | semi | anti | cross
    left: Op
    right: Op
    left_keys: tuple[str, ...] = ()
    right_keys: tuple[str, ...] = ()
    condition: str | None = None
    null_aware: bool = False  # NOT IN

    @property
    def columns(self):
        return self.left.columns if self.kind in ("semi", "anti") else self.left.columns + self.right.columns

    @property
    def children(self):
        return (self.left, self.right)


@dataclass(frozen=True)
class Aggregate(Unary):
    keys: tuple[tuple[str, str], ...]  # (name, SQL)
    aggregates: tuple[tuple[str, str, str | None, bool], ...]  # (name, FUNC, SQL or None for COUNT(*), distinct)
    eager: bool = False  # a partial aggregate of eager aggregation (`eager_aggregation`), computed on the SPU

    @property
    def columns(self):
        return tuple(n for n, _ in self.keys) + tuple(a[0] for a in self.aggregates)


@dataclass(frozen=True)
class Distinct(Unary):
    pass


@dataclass(frozen=True)
class Window(Unary):
    name: str
    func: str
    arg: str | None
    partition: tuple[str, ...]
    order: tuple[tuple[str, bool, bool], ...]
    frame: str | None = None  # None: SQL's default; "rows": up to the current row; "partition": all of it

    @property
    def columns(self):
        return self.child.columns + (self.name,)


@dataclass(frozen=True)
class Sort(Unary):
    keys: tuple[tuple[str, bool, bool], ...]  # (SQL, descending, nulls first)
    limit: int | None = None
    offset: int = 0


@dataclass(frozen=True)
class UnionAll(Op):
    inputs: tuple[Op, ...]

    @property
    def columns(self):
        return self.inputs[0].columns

    @property
    def children(self):
        return self.inputs


@dataclass(frozen=True)
class SetOp(Op):
    """INTERSECT / EXCEPT [ALL]: left's rows (and names) kept by comparing whole rows with right's."""

    kind: str  # intersect | except
    keep_all: bool
    left: Op
    right: Op

    @property
    def columns(self):
        return self.left.columns

    @property
    def children(self):
        return (self.left, self.right)


def parties_of(op: Op) -> frozenset[str]:
    """The parties whose tables a subtree reads."""
    if isinstance(op, Scan):
        return frozenset({op.party})
    return frozenset().union(*(parties_of(c) for c in op.children))


@dataclass(frozen=True)
class UniqueKey:
    """Output columns no two valid rows share a non-NULL value of (NULLs never join); `declared`: the
    party's declared key it rests on, "party.table (columns)", which the SPU checks wherever a join
    relies on it, or None where the tree guarantees it (GROUP BY keys, DISTINCT, one-row aggregates)."""

    columns: frozenset[str]
    declared: str | None = None


def unique_keys(op: Op, catalog: Catalog) -> tuple[UniqueKey, ...]:
    """The unique keys of `op`'s output known at plan time (structural or declared by a party)."""
    if isinstance(op, Scan):
        return tuple(UniqueKey(frozenset(f"{op.alias}.{c}" for c in cols), f"{op.party}.{op.table} ({', '.join(cols)})")
                     for cols in catalog.unique_keys(op.party, op.table) if set(cols) <= set(op.names))
    if isinstance(op, Aggregate):
        return (UniqueKey(frozenset(n for n, _ in op.keys)),)
    if isinstance(op, Distinct):
        return (UniqueKey(frozenset(op.columns)),)
    if isinstance(op, Project):
        renamed = _renamed(op)
        return tuple(UniqueKey(frozenset(renamed[c] for c in key.columns), key.declared)
                     for key in unique_keys(op.child, catalog) if key.columns <= set(renamed))
    if isinstance(op, Window):
        return unique_keys(op.child, catalog) + _numbered(op)
    if isinstance(op, (Filter, Sort)) or isinstance(op, subqueries.Subquery) and not op.one_row:
        return unique_keys(op.child, catalog)
    if isinstance(op, Join) and op.kind in ("semi", "anti"):
        return unique_keys(op.left, catalog)
    if isinstance(op, Join) and op.kind in ("inner", "left") and op.left_keys:
        left, right = unique_keys(op.left, catalog), unique_keys(op.right, catalog)
        return (left if _covering(right, op.right, op.right_keys) else ()) + (
            right if _covering(left, op.left, op.left_keys) else ())
    return ()


def _renamed(op: Project) -> dict[str, str]:
    """Each child column a projection outputs as it is -> its (first) output name."""
    renamed = {}
    for name, sql in reversed(op.items):
        renamed.update({c: name for c in op.child.columns if sql == quoted(c)})
    return renamed


def _numbered(op: Window) -> tuple[UniqueKey, ...]:
    """ROW_NUMBER's unique key: its PARTITION BY columns and the number (rewrite_semijoin.keyed_equalities)."""
    partition = {c for c in op.child.columns if quoted(c) in op.partition}
    if op.func != "row_number" or len(partition) != len(op.partition):
        return ()
    return (UniqueKey(frozenset(partition | {op.name})),)


def unique_on(op: Op, keys: tuple[str, ...], catalog: Catalog) -> UniqueKey | None:
    """A unique key of `op` among the bare columns of the join keys `keys` (a structural one first)."""
    return _covering(unique_keys(op, catalog), op, keys)


def _covering(unique: tuple[UniqueKey, ...], op: Op, keys: tuple[str, ...]) -> UniqueKey | None:
    columns = {c for c in op.columns if quoted(c) in keys}
    found = sorted((k for k in unique if k.columns <= columns), key=lambda k: k.declared is not None)
    return found[0] if found else None


def unique_side(join: Join, catalog: Catalog) -> tuple[str, UniqueKey] | None:
    """("left" | "right", its unique key) of an inner or LEFT equi-join one of whose sides has unique
    join keys (the right one first), so it can be joined by a sort (n + m rows, not n * m); else None."""
    if join.kind not in ("inner", "left") or not join.left_keys or (join.kind == "left" and join.condition):
        return None  # a LEFT join's residual decides matches: the sort-based join filters after joining
    for side, keys in (("right", join.right_keys), ("left", join.left_keys)):
        key = unique_on(getattr(join, side), keys, catalog)
        if key is not None:
            return side, key
    return None


@dataclass(frozen=True)
class GroupKey:
    """Output columns on which no two valid rows agree, in GROUP BY's sense (NULL equals NULL) unless
    `nulls_repeat` (a party's declared key, a LEFT join's NULL-extended side: only non-NULL values are
    unique); `relies`: the declared keys that holds on, each to be checked by a join on the SPU."""

    columns: frozenset[str]
    relies: frozenset[UniqueKey] = frozenset()
    nulls_repeat: bool = False


def grouping_keys(op: Op, catalog: Catalog) -> tuple[GroupKey, ...]:
    """The `GroupKey`s of `op`'s output: GROUP BY keys, DISTINCT rows, ROW_NUMBER's, a party's declared keys,
    kept by renaming, filters, windows, and by a join's side each of whose rows it outputs at most once (its
    partner unique on the join keys, NULLs apart: NULLs never join), NULLs repeating on a LEFT join's right."""
    if isinstance(op, Scan):
        return tuple(GroupKey(k.columns, frozenset({k}), True) for k in unique_keys(op, catalog))
    if isinstance(op, Aggregate):
        return (GroupKey(frozenset(n for n, _ in op.keys)),)
    if isinstance(op, Distinct):
        return (GroupKey(frozenset(op.columns)),)
    if isinstance(op, Project):
        renamed = _renamed(op)
        return tuple(replace(k, columns=frozenset(renamed[c] for c in k.columns))
                     for k in grouping_keys(op.child, catalog) if k.columns <= set(renamed))
    if isinstance(op, Window):
        return grouping_keys(op.child, catalog) + tuple(GroupKey(k.columns) for k in _numbered(op))
    if isinstance(op, (Filter, Sort)) or isinstance(op, subqueries.Subquery) and not op.one_row:
        return grouping_keys(op.child, catalog)
    if isinstance(op, Join) and op.kind in ("semi", "anti"):
        return grouping_keys(op.left, catalog)
    if isinstance(op, Join) and op.kind in ("inner", "left") and op.left_keys:
        right = _partner(op.right, op.right_keys, catalog)
        left = _partner(op.left, op.left_keys, catalog)
        out = () if right is None else tuple(replace(k, relies=k.relies | right.relies)
                                              for k in grouping_keys(op.left, catalog))
        return out + (() if left is None else tuple(
            replace(k, relies=k.relies | left.relies, nulls_repeat=k.nulls_repeat or op.kind == "left")
            for k in grouping_keys(op.right, catalog)))
    return ()


def _partner(op: Op, keys: tuple[str, ...], catalog: Catalog) -> GroupKey | None:
    """The key of `op` among its join keys `keys` resting on the fewest declarations, or None: its rows then
    match each row of the other side at most once."""
    columns = {c for c in op.columns if quoted(c) in keys}
    found = [k for k in grouping_keys(op, catalog) if k.columns <= columns]
    return min(found, key=lambda k: len(k.relies), default=None)


@dataclass(frozen=True)
class RowGroups:
    """A GROUP BY whose keys are unique in its input, so each valid row is its own group (`rows_as_groups`).
    `null_group`: its one key's NULLs may repeat; those rows then form one group of their own. `relies`: the
    declared keys it rests on (a false declaration would split a group)."""

    null_group: bool
    relies: frozenset[UniqueKey] = frozenset()


def rows_as_groups(op: Aggregate, catalog: Catalog, checked: frozenset | None = None) -> RowGroups | None:
    """Whether `op`'s groups are its input's rows: its keys (bare columns) cover a `grouping_keys` key whose
    NULLs do not repeat, or it has one key, a key whose NULLs may (one more group). `checked`: the declared
    keys the program's joins check, which must hold every one it relies on (None: any, for `relied_keys`).
    The choice relying on the fewest declarations wins; None: the GROUP BY sorts."""
    keys = tuple(sql for _, sql in op.keys)
    columns = {c for c in op.child.columns if quoted(c) in keys}
    found = [RowGroups(k.nulls_repeat, k.relies) for k in grouping_keys(op.child, catalog) if k.columns <= columns
             and (not k.nulls_repeat or len(keys) == 1) and (checked is None or k.relies <= checked)]
    return min(found, key=lambda g: (len(g.relies), g.null_group), default=None) if keys else None


def relied_keys(root: Op, catalog: Catalog) -> frozenset[UniqueKey]:
    """The declared keys the GROUP BYs in `root` that take their input's rows as groups rely on
    (`rows_as_groups`): the joins that can check them (`join_checks`) must."""
    found = (rows_as_groups(op, catalog) for op in _walk(root) if isinstance(op, Aggregate))
    return frozenset(key for g in found if g is not None for key in g.relies)


def join_checks(join: Join, catalog: Catalog) -> tuple[UniqueKey | None, UniqueKey | None]:
    """(the unique side's key, the many side's) of a sort-based join (`unique_side`), whose declared ones the
    SPU checks: the many side's where it too is unique on its join keys (so its key stays unique above the
    join: `unique_keys`); None where there is none."""
    side, key = unique_side(join, catalog) or (None, None)
    if side is None:
        return None, None
    other = "left" if side == "right" else "right"
    return key, unique_on(getattr(join, other), getattr(join, f"{other}_keys"), catalog)


def _walk(op: Op):
    yield op
    for child in op.children:
        yield from _walk(child)


def many_side_only(kind: str, unique: str) -> bool:
    """Whether a sort-based join (`unique_side`) can output a valid row only from its many side: an inner
    join, or a LEFT join preserving the many side (unique on the right); so the SPU may cut its n + m
    rows to the many side's m (`program._kept_rows`)."""
    return kind == "inner" or unique == "right"


def kept_side(join: Join, catalog: Catalog) -> Op | None:
    """The side of `join` each of whose rows it outputs at most once (None: no side provably): a semi- or
    anti-join's left, or the rows a scalar subquery's one row joins; an inner join's side whose partner is
    unique on its join keys (declared, or by shape: `unique_on`); a LEFT join's preserved left when the
    right is unique on its keys. Residual conditions only drop matches, and NULL keys match nothing, so
    neither can repeat a row."""
    if join.kind in ("semi", "anti"):
        return join.left
    if join.kind in ("cross", "left") and isinstance(join.right, subqueries.Subquery) and join.right.one_row:
        return join.left  # a scalar subquery's one row beside each row
    if join.kind not in ("inner", "left") or not join.left_keys:
        return None
    if unique_on(join.right, join.right_keys, catalog) is not None:
        return join.left
    if join.kind == "inner" and unique_on(join.left, join.left_keys, catalog) is not None:
        return join.right
    return None


def repeating_op(op: Op, catalog: Catalog, stop: tuple[type, ...] = ()) -> Op | None:
    """The operator of `op` that can output one row of a table more than once (a join with no kept side, a
    UNION ALL), or None: then each output row stems from a distinct row of one of its tables, so the group
    threshold may count the output's rows as that owner's distinct rows. `stop`: operators whose input
    the walk does not enter (the translation's aggregates, which count their groups' rows themselves)."""
    if isinstance(op, stop):
        return None
    if isinstance(op, UnionAll):
        return op
    if isinstance(op, Join):
        kept = kept_side(op, catalog)
        return op if kept is None else repeating_op(kept, catalog, stop)
    return next((found for child in op.children if (found := repeating_op(child, catalog, stop)) is not None), None)


# -- eager aggregation (Yan & Larson, "Eager Aggregation and Lazy Aggregation", VLDB 1995) -----------------
EAGER = "__eager"  # the prefix of the partial aggregates' columns
DECOMPOSED = ("COUNT", "SUM", "MIN", "MAX")  # aggregates one partial aggregate per join key combines into
STRICT = (exp.Column, exp.Identifier, exp.Literal, exp.Paren, exp.Neg, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Cast,
          exp.DataType, exp.DataTypeParam)  # NULL when any column they read is NULL


def eager_aggregation(op: Op, catalog: Catalog, may_collapse, under: bool = False) -> Op:
    """`op` with each aggregate over an equi-join rewritten by `eager_join` where `may_collapse(part, other,
    outermost, linear)` allows pre-aggregating `part` (`linear`: the join is a sort-based one already);
    `under`: beneath an aggregate (as translate's `place`)."""
    if isinstance(op, Aggregate):
        op = rebuilt(op, lambda child: eager_aggregation(child, catalog, may_collapse, True))
        return eager_join(op, catalog, lambda part, other, linear: may_collapse(part, other, not under, linear)) \
            or op
    inner = not op.thresholded if isinstance(op, subqueries.Subquery) else under
    return rebuilt(op, lambda child: eager_aggregation(child, catalog, may_collapse, inner))


def rebuilt(op: Op, rebuild) -> Op:
    """`op` with `rebuild` applied to each child."""
    changes = {}
    for name in op.__dataclass_fields__:
        value = getattr(op, name)
        if isinstance(value, Op):
            changes[name] = rebuild(value)
        elif isinstance(value, tuple) and value and all(isinstance(v, Op) for v in value):
            changes[name] = tuple(rebuild(v) for v in value)
    return replace(op, **changes) if changes else op


def eager_join(aggregate: Aggregate, catalog: Catalog, may_collapse) -> Op | None:
    """An aggregate over an inner or LEFT equi-join, as the join of one side with its other side
    pre-aggregated by its join keys (unique on them, so the SPU joins by a sort: n + m rows, not n * m),
    then the aggregate combining the partials, where `may_collapse(part, other, linear)` allows it
    (`linear`: a side's unique keys make the join a sort-based one already, so only a partial its owner
    computes, with fewer rows, pays); None where that is not exact:
    the group keys read the pre-aggregated side beyond its join keys, or an aggregate is not decomposable
    (`_combined`). A LEFT join pre-aggregates its NULL side only; a RIGHT join is a LEFT one (`TreeBuilder`)."""
    join = aggregate.child
    if isinstance(join, Project) and isinstance(join.child, Join) and all(sql == quoted(n) for n, sql in join.items):
        join = join.child  # a RIGHT JOIN's columns in the written order: the aggregate reads them by name
    if not isinstance(join, Join) or join.kind not in ("inner", "left") or not join.left_keys or join.condition:
        return None
    linear = unique_side(join, catalog) is not None
    for side in ("right",) if join.kind == "left" else ("right", "left"):
        part, other = (join.right, join.left) if side == "right" else (join.left, join.right)
        rewritten = _pre_aggregated(aggregate, join, side)
        if rewritten is not None and may_collapse(part, other, linear):
            return rewritten
    return None


def _pre_aggregated(aggregate: Aggregate, join: Join, side: str) -> Op | None:
    """`aggregate` over `join` with its `side` pre-aggregated (`eager_join`), or None."""
    part, other = (join.right, join.left) if side == "right" else (join.left, join.right)
    keys = join.right_keys if side == "right" else join.left_keys
    names = [next((c for c in part.columns if quoted(c) == sql), f"{EAGER}.key{i}") for i, sql in enumerate(keys)]
    if len(set(names)) != len(names) or not _columns_read(*(sql for _, sql in aggregate.keys)) <= set(
            other.columns) | set(names):
        return None  # grouped by the pre-aggregated side's other columns: not unique on its join keys
    partials, combined, outputs = [], [], []
    for call in aggregate.aggregates:
        parts = _combined(call, set(part.columns), set(other.columns), join.kind == "inner")
        if parts is None:
            return None
        partials += parts[0]
        combined += parts[1]
        outputs.append((call[0], parts[2]))
    pre = Aggregate(part, tuple(zip(names, keys)), tuple(partials), eager=True)
    pre_keys = tuple(quoted(n) for n in names)
    joined = Join(join.kind, other, pre, join.left_keys, pre_keys) if side == "right" else \
        Join(join.kind, pre, other, pre_keys, join.right_keys)
    outer = Aggregate(joined, aggregate.keys, tuple(combined))
    return Project(outer, tuple((n, quoted(n)) for n, _ in aggregate.keys) + tuple(outputs))


def _combined(call, own: set[str], theirs: set[str], inner: bool):
    """(partial aggregates, combining aggregates, output SQL) of one aggregate `call` over a join whose side
    of columns `own` is pre-aggregated, or None where it is not decomposable: COUNT(DISTINCT), SUM(DISTINCT);
    COUNT / SUM of the other side (a row repeated per partner: not counted here); AVG (as SUM / COUNT of
    partials it would divide by a secret, whose exact range the SPU's own AVG does not need); an argument
    reading both sides or none; across a LEFT join an argument not NULL on a NULL-extended row (COALESCE,
    CASE: `STRICT`). COUNT(*) counts each partner (1 for an unmatched row of a LEFT join); COUNT is 0, not
    NULL, over no partner."""
    name, func, arg, distinct = call
    partial = f"{EAGER}.{name}"
    if arg is None:  # COUNT(*)
        return [(partial, "COUNT", None, False)], [(name, "SUM", f"COALESCE({quoted(partial)}, 1)", False)], \
            f"COALESCE({quoted(name)}, 0)"
    reads = _columns_read(arg)
    if reads and reads <= theirs and func in ("MIN", "MAX"):
        return [], [call], quoted(name)  # a repeated row changes no minimum
    if not reads or not reads <= own or func not in DECOMPOSED or (distinct and func not in ("MIN", "MAX")) or not (
            inner or _strict(arg)):
        return None
    outer = "SUM" if func == "COUNT" else func
    return [(partial, func, arg, False)], [(name, outer, quoted(partial), False)], \
        f"COALESCE({quoted(name)}, 0)" if func == "COUNT" else quoted(name)


def _strict(sql: str) -> bool:
    """Whether `sql` is NULL wherever the columns it reads are (arithmetic and casts of columns only)."""
    return all(isinstance(node, STRICT) for node in exp.maybe_parse(sql, dialect="duckdb").walk())


def _columns_read(*sqls: str | None) -> set[str]:
    """The column names SQL expressions over a relation read (each a quoted identifier)."""
    return {c.name for sql in sqls if sql for c in exp.maybe_parse(sql, dialect="duckdb").find_all(exp.Column)}


def describe_join(join: Join) -> str:
    """A join as a message names it: its kind and its equi keys (or its condition)."""
    keys = " AND ".join(f"{a} = {b}" for a, b in zip(join.left_keys, join.right_keys))
    return f"{join.kind.upper()} JOIN ON {keys or join.condition or 'TRUE'}"


def quoted(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql(dialect="duckdb")


def _sql(expression: exp.Expression) -> str:
    return expression.sql(dialect="duckdb")


class TreeBuilder:
    """Builds the operator tree of one query; `ctes` are the WITH bodies in scope by name. `suppresses`:
    whether the group threshold hides the small groups of a revealed subquery's relation (then a
    correlated COUNT reads NULL, not 0, where its group is missing: `subqueries._correlated_scalar`)."""

    def __init__(self, catalog: Catalog, suppresses=lambda op: False):
        self.catalog = catalog
        self.suppresses = suppresses
        self.fresh = 0

    def name(self, prefix: str) -> str:
        self.fresh += 1
        return f"__{prefix}{self.fresh}"

    # -- queries -------------------------------------------------------------------------------
    def query(self, node: exp.Expression, ctes: dict) -> Op:
        ctes = dict(ctes)
        for cte in (node.args.get("with_").expressions if node.args.get("with_") else []):
            ctes[cte.alias_or_name] = cte.this
        if isinstance(node, exp.Subquery):
            return self.query(node.this, ctes)
        if isinstance(node, exp.Union):
            left, right = self.query(node.left, ctes), self.query(node.right, ctes)
            right = Project(right, tuple((n, quoted(m)) for n, m in zip(left.columns, right.columns)))
            union = UnionAll((left, right))
            return Distinct(union) if node.args.get("distinct") else union
        if isinstance(node, (exp.Intersect, exp.Except)):
            left, right = self.query(node.left, ctes), self.query(node.right, ctes)
            right = Project(right, tuple((n, quoted(m)) for n, m in zip(left.columns, right.columns)))
            return SetOp(node.key, not node.args.get("distinct"), left, right)
        if not isinstance(node, exp.Select):
            raise NotSupportedError(f"{node.key} is not supported as a query across parties")
        return self.select(node, ctes)

    def select(self, select: exp.Select, ctes: dict) -> Op:
        for clause in ("windows", "qualify", "distinct"):
            value = select.args.get(clause)
            if value is not None and not (clause == "distinct" and not value.args.get("on")):
                raise NotSupportedError(f"{_sql(value)[:80]} in a query across parties is not supported yet")
        sample = select.find(exp.TableSample)
        if sample is not None:
            raise NotSupportedError(f"{_sql(sample)[:80]}: a random sample across parties is not supported")
        op, nullable = self.from_items(select, ctes)
        where = select.args.get("where")
        for conjunct in conjuncts_of(where.this if where else None):
            op = self.where(op, conjunct, nullable, ctes)
        items = [(e.alias_or_name, (e.this if isinstance(e, exp.Alias) else e).copy()) for e in select.expressions]
        having = select.args.get("having")
        having = having.this.copy() if having else None
        grouped = select.args.get("group") is not None or any(subqueries.own_aggregates(e) for _, e in items) or bool(
            having and subqueries.own_aggregates(having))
        op, items, having, after = self.value_subqueries(op, items, having, grouped, ctes)
        order = [(o.this.copy(), bool(o.args.get("desc")), bool(o.args.get("nulls_first")))
                 for o in (select.args["order"].expressions if select.args.get("order") else [])]
        written = [key.copy() for key, _, _ in order]  # for messages, before aggregates are replaced
        if grouped:
            op, items, having, order = self.aggregate(op, select, items, having, order)
        op = subqueries.graft(op, after)
        if having is not None:
            op = Filter(op, _sql(named(having)))
        op, items = self.windows(op, items)
        names = [n for n, _ in items]
        if len(set(names)) != len(names):
            names = [f"o{i}" for i in range(len(items))]
        op = Project(op, tuple((n, _sql(named(e))) for n, (_, e) in zip(names, items)))
        if select.args.get("distinct"):
            op = Distinct(op)
        return self.sort(op, items, names, list(zip(order, written)), select)

    def sort(self, op: Op, items, names, order, select: exp.Select) -> Op:
        limit, offset = select.args.get("limit"), select.args.get("offset")
        if not order and limit is None and offset is None:
            return op
        by_sql = {_sql(named(e)): n for n, (_, e) in zip(names, items)}
        by_name = {a: n for n, (a, _) in zip(names, items)}
        keys = []
        for (key, desc, nulls_first), written in order:
            if isinstance(key, exp.Column) and not key.table and key.name in by_name:
                ref = by_name[key.name]
            elif isinstance(key, exp.Literal) and key.is_int and 0 < int(key.this) <= len(names):
                ref = names[int(key.this) - 1]
            else:
                ref = by_sql.get(_sql(named(key)))
            if ref is None:
                raise NotSupportedError(f"ORDER BY {_sql(written)}: a query across parties orders by its output "
                                        "columns; add the expression to SELECT")
            keys.append((quoted(ref), desc, nulls_first))
        return Sort(op, tuple(keys), _count(limit, "LIMIT"), _count(offset, "OFFSET") or 0)

    # -- FROM ----------------------------------------------------------------------------------
    def from_items(self, select: exp.Select, ctes: dict) -> tuple[Op, set[str]]:
        if not select.args.get("from_"):
            raise NotSupportedError("a SELECT without FROM inside a query across parties is not supported")
        op = self.item(select.args["from_"].this, ctes, select)
        nullable: set[str] = set()
        for join in select.args.get("joins") or []:
            right = self.item(join.this, ctes, select)
            side, kind = (join.args.get("side") or "").upper(), (join.args.get("kind") or "").upper()
            if kind not in ("", "INNER", "CROSS", "OUTER"):
                raise NotSupportedError(f"{' '.join(filter(None, (side, kind)))} JOIN across parties is not "
                                        "supported yet (inner, LEFT, RIGHT, FULL and CROSS joins are)")
            if join.args.get("using"):
                raise NotSupportedError("JOIN ... USING across parties: write the ON condition")
            on = join.args.get("on")
            valued = [c for c in conjuncts_of(on) if c.find(exp.Subquery, exp.Exists, exp.Query) is not None]
            if valued and side:
                raise NotSupportedError(f"the subquery in {side} JOIN ... ON {_sql(valued[0])[:80]} across parties is "
                                        "not supported; filter a side in a derived table, or use an inner join")
            if valued:  # an inner join's condition is WHERE's: its subqueries join as WHERE's do
                rest = [c for c in conjuncts_of(on) if not any(c is v for v in valued)]
                op = equi_join("inner", op, right, rest) if rest else Join("cross", op, right)
                for conjunct in valued:
                    op = self.where(op, conjunct, nullable, ctes)
                continue
            if side in ("LEFT", "RIGHT", "FULL"):
                nullable |= {c.split(".", 1)[0] for c in (right.columns if side == "LEFT" else
                                                         op.columns if side == "RIGHT" else op.columns + right.columns)}
                op = self.outer_join(side, op, right, conjuncts_of(on))
            elif on is None:
                op = Join("cross", op, right)
            else:
                op = equi_join("inner", op, right, conjuncts_of(on))
        return op, nullable

    def item(self, item: exp.Expression, ctes: dict, select: exp.Select) -> Op:
        alias = item.alias_or_name
        if isinstance(item, exp.Table) and item.db:
            used = {c.name for c in select.find_all(exp.Column) if c.table == alias}
            names = tuple(c for c, _ in self.catalog.columns(item.db, item.name) if c in used) or \
                (self.catalog.columns(item.db, item.name)[0][0],)
            return Scan(item.db, item.name, alias, names)
        if isinstance(item, exp.Table) and item.name in ctes:
            body = ctes[item.name]
        elif isinstance(item, exp.Subquery):
            body = item.this
        else:
            raise NotSupportedError(f"FROM item {_sql(item)[:80]} is not supported in a query across parties")
        inner = self.query(body, ctes)
        renamed = [c.name for c in item.args["alias"].columns] if item.args.get("alias") and \
            item.args["alias"].columns else None
        selects = list(body.named_selects) if isinstance(body, exp.Query) else []
        outputs = renamed or (selects if len(selects) == len(inner.columns) else list(inner.columns))
        return Project(inner, tuple((f"{alias}.{n}", quoted(c)) for n, c in zip(outputs, inner.columns)))

    def outer_join(self, side: str, left: Op, right: Op, conjuncts) -> Op:
        """RIGHT JOIN: the LEFT join of the swapped sides, the columns in the written order. FULL JOIN: only
        equalities between the sides (a condition on one side would still keep its rows, unmatched)."""
        if side == "LEFT":
            return self.left_join(left, right, conjuncts)
        if side == "RIGHT":
            return Project(self.left_join(right, left, conjuncts),
                           tuple((c, quoted(c)) for c in left.columns + right.columns))
        joined = equi_join("full", left, right, conjuncts)
        if joined.condition is not None or not joined.left_keys:
            raise NotSupportedError(f"FULL JOIN ... ON {joined.condition or 'without equalities'}: across parties a "
                                    "FULL JOIN's ON is equalities between the two sides only")
        return joined

    def left_join(self, left: Op, right: Op, conjuncts) -> Op:
        """LEFT JOIN: equi keys across the sides; a condition on the NULL side alone filters it first; any
        other condition decides which pairs match (the unmatched rows of the left side stay, NULL-extended)."""
        right_aliases = {c.split(".", 1)[0] for c in right.columns}
        keyed, own = [], []
        for c in conjuncts:
            (own if _aliases(c) <= right_aliases else keyed).append(c)
        if own:
            right = Filter(right, _sql(named(exp.and_(*own))))
        return equi_join("left", left, right, keyed)

    # -- WHERE ---------------------------------------------------------------------------------
    def where(self, op: Op, conjunct: exp.Expression, nullable: set[str], ctes: dict) -> Op:
        negated = isinstance(conjunct, exp.Not)
        inner = conjunct.this if negated else conjunct
        if isinstance(inner, exp.In) and inner.args.get("query") is not None:
            return self.in_subquery(op, inner, negated, ctes)
        if isinstance(inner, exp.Exists):
            return self.exists(op, inner.this, negated, ctes)
        membership = subqueries.as_membership(inner, negated)
        if membership is not None:
            return self.where(op, membership, nullable, ctes)
        if conjunct.find(exp.Exists) is not None:
            raise NotSupportedError(f"the EXISTS in {_sql(conjunct)[:80]} is not supported across parties yet "
                                    "(EXISTS / NOT EXISTS as a WHERE conjunct are)")
        op, conjunct = subqueries.attach(self, op, conjunct, ctes, qualified=True)
        return push_filter(op, conjunct, nullable)

    def value_subqueries(self, op: Op, items, having, grouped: bool, ctes: dict):
        """Scalar and ANY / ALL subqueries of the SELECT list and HAVING joined as columns: before the
        aggregate when inside an aggregate call's argument, after it otherwise (returned as joins to graft)."""
        if not grouped:
            attached = []
            for n, e in items:
                op, e = subqueries.attach(self, op, e, ctes, qualified=True)
                attached.append((n, e))
            return op, attached, having, []
        # a subquery's value is thresholded on its own wherever it is read (a SELECT item, HAVING, inside an
        # aggregate): the groups' threshold counts the query's rows, never a subquery's, and a filter on a
        # lone row's aggregate reads it as surely as an output does
        inside = []
        for e in [e for _, e in items] + ([having] if having is not None else []):
            for call in subqueries.own_aggregates(e):
                if subqueries.value_subqueries(call) or subqueries.quantified(call):
                    op, value = subqueries.attach(self, op, call, ctes, qualified=True)
                    e = value if call is e else e  # a call that is the whole item has no parent to replace it in
                    call.replace(value)
            inside.append(e)
        items = [(n, e) for (n, _), e in zip(items, inside)]
        having = inside[-1] if having is not None else None
        after = []
        prepared = []
        for n, e in items:
            e, joins = subqueries.prepare(self, e, ctes, qualified=False, correlated=False)
            prepared.append((n, e))
            after += joins
        if having is not None:
            having, joins = subqueries.prepare(self, having, ctes, qualified=False, correlated=False)
            after += joins
        return op, prepared, having, after

    def in_subquery(self, op: Op, node: exp.In, negated: bool, ctes: dict) -> Op:
        body = node.args["query"].this if isinstance(node.args["query"], exp.Subquery) else node.args["query"]
        if _outer_columns(body):
            return subqueries.correlated_in(self, op, node, negated, ctes)
        sub = self.query(body, ctes)
        if len(sub.columns) != 1:
            raise NotSupportedError(f"{_sql(node)[:80]}: IN (subquery) needs a subquery of one column")
        sub = self.side(subqueries.thresholded(sub))  # a member may be a lone row's aggregate
        return Join("anti" if negated else "semi", op, sub, (_sql(named(node.this)),),
                    (quoted(sub.columns[0]),), null_aware=negated)

    def exists(self, op: Op, body: exp.Expression, negated: bool, ctes: dict) -> Op:
        """A correlated EXISTS of equalities `inner = outer` becomes a semi (anti) join on them."""
        if not isinstance(body, exp.Select):
            raise NotSupportedError("EXISTS across parties needs a SELECT subquery")
        body = body.copy()
        outer_keys, inner_keys, residual, kept = subqueries.correlation(body, "EXISTS across parties")
        if not outer_keys and not residual:  # uncorrelated: any row at all, whatever it aggregates or limits
            sub = self.side(subqueries.Subquery(self.query(body, ctes)))
            one = Project(sub, ((self.name("one"), "1"),))
            return Join("anti" if negated else "semi", op, one, ("1",), (quoted(one.columns[0]),))
        body = subqueries.without_limit(body)
        group = body.args.get("group")
        if not group and (body.args.get("having") or any(_aggregates(e) for e in body.expressions)):
            raise NotSupportedError("EXISTS across parties: a correlated subquery may not aggregate without "
                                    "GROUP BY (an aggregate over no rows is still a row); write the condition "
                                    "in its WHERE")
        if residual:
            if group:
                raise NotSupportedError("EXISTS across parties: a subquery with GROUP BY refers to the outer "
                                        "query only in equalities inner = outer")
            return subqueries.exists_with_residual(self, op, body, negated, ctes)
        body.set("where", exp.Where(this=exp.and_(*kept)) if kept else None)
        body.set("expressions", [exp.alias_(k.copy(), f"__key{i}", quoted=True) for i, k in enumerate(inner_keys)])
        if group:  # a group of the outer row's keys passing HAVING: grouped by those keys too
            body.set("group", exp.Group(expressions=[k.copy() for k in inner_keys] + list(group.expressions)))
        body.set("distinct", None)
        sub = self.side(subqueries.Subquery(self.query(body, ctes)))  # a group passing HAVING: thresholded
        return Join("anti" if negated else "semi", op, sub, tuple(_sql(named(k)) for k in outer_keys),
                    tuple(quoted(c) for c in sub.columns))

    def side(self, sub: Op) -> Op:
        """A subquery's relation with fresh column names (kept apart from the outer query's)."""
        tag = self.name("s")
        return Project(sub, tuple((f"{tag}.{c}", quoted(c)) for c in sub.columns))

    # -- aggregates and windows ----------------------------------------------------------------
    def aggregate(self, op: Op, select: exp.Select, items, having, order):
        group = select.args.get("group")
        keys = list(group.expressions) if group else []
        if group is not None and any(group.args.get(a) for a in ("rollup", "cube", "grouping_sets")):
            raise NotSupportedError("ROLLUP / CUBE / GROUPING SETS across parties are not supported yet")
        names = {e.alias_or_name: e.this for e in select.expressions if isinstance(e, exp.Alias)}
        key_items = []
        for i, key in enumerate(keys):
            if isinstance(key, exp.Literal) and key.is_int:
                key = items[int(key.this) - 1][1]
            elif isinstance(key, exp.Column) and not key.table and key.name in names:
                key = names[key.name]
            if key.find(exp.Subquery, exp.Exists, exp.Query) is not None:  # its value would be joined after GROUP BY
                raise NotSupportedError(f"GROUP BY {_sql(key)[:80]}: a subquery in a GROUP BY key across parties is "
                                        "not supported; compute the key in a derived table and group by its column")
            key_items.append((self.name("k"), key))
        calls: dict[str, tuple] = {}

        def replace(node: exp.Expression) -> exp.Expression:
            for name, key in key_items:
                if node == key:
                    return exp.column(name, quoted=True)
            if isinstance(node, exp.Window):
                return node
            if isinstance(node, exp.Filter) and node.find_ancestor(exp.Window) is None:
                raise NotSupportedError(f"{_sql(node)[:80]}: FILTER (WHERE …) is not computed across parties; put "
                                        "the condition inside the aggregate: COUNT(CASE WHEN cond THEN 1 END)")
            if isinstance(node, exp.AggFunc) and node.find_ancestor(exp.Window) is None:
                call = _aggregate_call(node)
                text = repr(call)
                if text not in calls:
                    calls[text] = (self.name("a"), *call)
                return exp.column(calls[text][0], quoted=True)
            return node

        items = [(n, e.copy().transform(replace)) for n, e in items]
        having = having.transform(replace) if having is not None else None
        order = [(k.transform(replace), d, f) for k, d, f in order]
        op = Aggregate(op, tuple((n, _sql(named(k))) for n, k in key_items), tuple(calls.values()))
        for _, e in items:
            for column in e.find_all(exp.Column):
                if column.table:
                    raise NotSupportedError(f"{_sql(column)} is neither grouped nor aggregated")
        return op, items, having, order

    def windows(self, op: Op, items):
        def replace(node: exp.Expression) -> exp.Expression:
            if not isinstance(node, exp.Window):
                return node
            func = node.this
            name = func.sql_name().upper() if not isinstance(func, exp.Anonymous) else func.name.upper()
            if name not in WINDOWS and name not in COMPOSED_WINDOWS:
                raise NotSupportedError(f"{_sql(node)[:80]}: secure windows are "
                                        f"{', '.join((*WINDOWS, *COMPOSED_WINDOWS))}")
            arg = func.this if isinstance(func, exp.AggFunc) and not isinstance(func.this, exp.Star) else None
            order = node.args.get("order")
            keys = tuple((_sql(named(o.this)), bool(o.args.get("desc")), bool(o.args.get("nulls_first")))
                         for o in (order.expressions if order else []))
            frame = window_frame(node, keys) if name not in RANKINGS + RELATIVE_RANKINGS else None  # DuckDB ignores
            # a ranking's frame
            partition = tuple(_sql(named(p)) for p in node.args.get("partition_by") or [])
            order_by = keys + (tie_breaker(partition, keys),) if frame == "rows" else keys

            def window(func_name: str, over=frame) -> exp.Expression:
                nonlocal op
                column = self.name("w")
                op = Window(op, column, func_name, _sql(named(arg)) if arg is not None else None, partition,
                            order_by, over)
                return exp.column(column, quoted=True)

            if name == "AVG":  # SUM / COUNT over the same window: NULL where it counts no value
                return exp.Div(this=window("sum"), expression=window("count"))
            if name in RELATIVE_RANKINGS and not keys:  # every row a peer of every other
                return exp.cast(exp.Literal.number(0 if name == "PERCENT_RANK" else 1), "DOUBLE")
            if name == "PERCENT_RANK":  # (RANK - 1) / (rows of the partition - 1), 0 in a one-row partition
                rows = window("count", "partition")
                return template("(_r - 1) / CASE WHEN _n > 1 THEN _n - 1 ELSE 1 END", r=window("rank"), n=rows)
            if name == "CUME_DIST":  # rows up to the current row's last peer / rows of the partition
                return exp.Div(this=window("count"), expression=window("count", "partition"))
            return window(WINDOWS[name])

        def tie_breaker(partition, keys) -> tuple[str, bool, bool]:
            """A ROWS frame's order made total by one ROW_NUMBER per (partition, order), so every window
            over it (and AVG's SUM and COUNT) sees peers in the same order, as DuckDB's one sort does."""
            nonlocal op
            if (partition, keys) not in ties:
                ties[partition, keys] = self.name("t")
                op = Window(op, ties[partition, keys], "row_number", None, partition, keys)
            return quoted(ties[partition, keys]), False, False

        ties: dict = {}
        replaced = [(n, e.transform(replace)) for n, e in items]  # grows `op` window by window
        return op, replaced


def window_frame(node: exp.Window, order) -> str | None:
    """The frames the secure windows compute: SQL's default (None, also written RANGE BETWEEN UNBOUNDED
    PRECEDING AND CURRENT ROW), "rows" (ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW, over an ORDER BY)
    and "partition" (BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING); any other is refused, named."""
    spec = node.args.get("spec")
    if spec is None:
        return None
    kind, start, end = spec.args.get("kind"), spec.args.get("start"), spec.args.get("end") or "CURRENT ROW"
    unbounded = start == "UNBOUNDED" and spec.args.get("start_side") == "PRECEDING" and not spec.args.get("exclude")
    if unbounded and end == "UNBOUNDED" and spec.args.get("end_side") == "FOLLOWING":
        return "partition"
    if unbounded and end == "CURRENT ROW" and kind == "RANGE":
        return None
    if unbounded and end == "CURRENT ROW" and kind == "ROWS" and order:
        return "rows"
    raise NotSupportedError(f"the window frame {_sql(spec)} in {_sql(node)[:80]} is not computed across parties: "
                            "use BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW (ROWS with an ORDER BY, or RANGE) or "
                            "BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING")


def _aggregate_call(node: exp.AggFunc) -> tuple[str, str | None, bool]:
    """(FUNC, argument SQL or None, distinct) of an aggregate the SPU computes; others refused."""
    func = AGGREGATES.get(type(node))
    if func is None:
        raise NotSupportedError(f"{_sql(node)[:80]}: across parties the aggregates are COUNT, SUM, AVG, MIN, MAX")
    arg = node.this
    distinct = isinstance(arg, exp.Distinct)
    if distinct:
        if len(arg.expressions) != 1:
            raise NotSupportedError(f"{_sql(node)}: DISTINCT of one expression only")
        arg = arg.expressions[0]
    if isinstance(arg, exp.Star):
        return func, None, False
    return func, _sql(named(arg)), distinct and func not in ("MIN", "MAX")  # the extremes of distinct values are theirs


def _aggregates(expression: exp.Expression) -> list:
    return [a for a in expression.find_all(exp.AggFunc) if a.find_ancestor(exp.Window) is None]


def _count(node, clause: str) -> int | None:
    """The row count of a LIMIT, OFFSET or FETCH FIRST n ROWS ONLY; PERCENT and WITH TIES are refused."""
    if node is None:
        return None
    options = node.args.get("limit_options")
    if options is not None and (options.args.get("percent") or options.args.get("with_ties")):
        raise NotSupportedError(f"{_sql(node)}: {'PERCENT' if options.args.get('percent') else 'WITH TIES'} is not "
                                "computed across parties; use LIMIT n")
    if isinstance(node, exp.Fetch):
        if str(node.args.get("direction") or "FIRST").upper() not in ("FIRST", "NEXT"):
            raise NotSupportedError(f"{_sql(node)}: use LIMIT n across parties")
        value = node.args.get("count") if node.args.get("count") is not None else exp.Literal.number(1)
    else:
        value = node.args.get("expression") if node.args.get("expression") is not None else node.this
    if not (isinstance(value, exp.Literal) and value.is_int):
        raise NotSupportedError(f"{clause} {_sql(value)}: a whole number is needed across parties")
    return int(value.this)


def named(expression: exp.Expression) -> exp.Expression:
    """`"alias"."col"` -> the identifier `"alias.col"` (the operator tree's column names)."""

    def rewrite(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column) and node.table:
            return exp.column(f"{node.table}.{node.name}", quoted=True)
        return node

    return expression.copy().transform(rewrite)


def _aliases(expression: exp.Expression) -> set[str]:
    return {c.table for c in expression.find_all(exp.Column) if c.table}


def _outer_columns(body: exp.Expression) -> set[str]:
    """The aliases a subquery refers to that it does not define (its correlation with the outer query)."""
    defined = {t.alias_or_name for t in body.find_all(exp.Table)} | {
        s.alias_or_name for s in body.find_all(exp.Subquery)} | {c.alias_or_name for c in body.find_all(exp.CTE)}
    return _aliases(body) - defined


def equi_join(kind: str, left: Op, right: Op, conjuncts) -> Join:
    """A join: equalities between the sides become keys, the rest a residual condition."""
    left_aliases = {c.split(".", 1)[0] for c in left.columns}
    right_aliases = {c.split(".", 1)[0] for c in right.columns}
    left_keys, right_keys, residual = [], [], []
    for c in conjuncts:
        if isinstance(c, exp.EQ):
            a, b = _aliases(c.left), _aliases(c.right)
            if a and b and a <= left_aliases and b <= right_aliases:
                left_keys.append(_sql(named(c.left)))
                right_keys.append(_sql(named(c.right)))
                continue
            if a and b and a <= right_aliases and b <= left_aliases:
                left_keys.append(_sql(named(c.right)))
                right_keys.append(_sql(named(c.left)))
                continue
        residual.append(c)
    condition = _sql(named(exp.and_(*residual))) if residual else None
    if not left_keys:
        return Join("cross", left, right, condition=condition) if kind == "inner" else Join(
            kind, left, right, condition=condition)
    return Join(kind, left, right, tuple(left_keys), tuple(right_keys), condition)


def push_filter(op: Op, conjunct: exp.Expression, nullable: set[str]) -> Op:
    """A WHERE conjunct, placed on the deepest input that holds all its columns (never below the NULL side
    of a LEFT JOIN, where it would keep rows the query drops)."""
    aliases = _aliases(conjunct)
    if isinstance(op, Join) and op.kind == "cross" and op.condition is None and isinstance(conjunct, exp.EQ):
        keyed = equi_join("inner", op.left, op.right, [conjunct])
        if keyed.kind == "inner":
            return keyed
    if isinstance(op, Join) and op.kind == "inner" and op.condition is None and isinstance(conjunct, exp.EQ):
        keyed = equi_join("inner", op.left, op.right, [conjunct])
        if keyed.kind == "inner":
            return Join("inner", op.left, op.right, op.left_keys + keyed.left_keys, op.right_keys + keyed.right_keys)
    if isinstance(op, Join) and op.kind in ("inner", "cross") and aliases and not aliases & nullable:
        for side in ("left", "right"):
            child = getattr(op, side)
            if aliases <= {c.split(".", 1)[0] for c in child.columns}:
                pushed = push_filter(child, conjunct, nullable)
                return Join(op.kind, *((pushed, op.right) if side == "left" else (op.left, pushed)), op.left_keys,
                            op.right_keys, op.condition, op.null_aware)
    if isinstance(op, Join) and op.kind == "left" and aliases and aliases <= {
            c.split(".", 1)[0] for c in op.left.columns}:
        return Join("left", push_filter(op.left, conjunct, nullable), op.right, op.left_keys, op.right_keys,
                    op.condition)
    return Filter(op, _sql(named(conjunct)))


def build_tree(tree: exp.Expression, catalog: Catalog, suppresses=lambda op: False) -> Op:
    """The operator tree of a qualified query (`suppresses`: see `TreeBuilder`)."""
    return TreeBuilder(catalog, suppresses).query(tree, {})


from sqlsecure.planner import subqueries  # noqa: E402  (it builds on this module's operators)
