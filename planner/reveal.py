"""What happens to a result before it is revealed: differential-privacy noise and masking.

`DPContext` turns a party's aggregate outputs into the SQL that computes what the noise needs
(clamped sums, AVG as SUM and COUNT, the group's row count) and the `Release` that noises them.
`output_masks` finds the output columns that are masked for the issuer, through derived tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp
from sqlglot.optimizer.scope import Scope, build_scope

from sqlsecure.errors import NotSupportedError, PolicyViolation
from sqlsecure.policy.grants import ColumnRef
from sqlsecure.policy.privacy import NoiseSpec, PrivacyBudget, Release, group_threshold


@dataclass
class DPContext:
    budget: PrivacyBudget
    count_sensitivity: float  # rows one identity can contribute to the joined input
    bounds: dict[tuple[str, str], tuple[float, float]]  # (alias, column) -> clamping range
    integer: dict[tuple[str, str], bool]  # (alias, column) -> integer-valued
    min_group_size: int
    noisy_values: int = 0  # filled by `count_values`
    grouped: bool = False
    columns: dict = field(default_factory=dict)  # ColumnRef -> (clamping range or None, integer-valued)

    @property
    def epsilon(self) -> float:
        return self.budget.query_epsilon

    @property
    def delta(self) -> float:
        return self.budget.query_delta if (self.grouped or self.budget.noise == "gaussian") else 0.0

    def value_epsilon(self) -> float:
        return self.budget.query_epsilon / max(1, self.noisy_values)

    def value_delta(self) -> float:
        return self.budget.query_delta / max(1, self.noisy_values) if self.budget.noise == "gaussian" else 0.0

    def count_values(self, items, group_sqls: set[str]) -> None:
        """How many noisy values one group releases (ε is split evenly over them)."""
        self.grouped = bool(group_sqls)
        n = 1 if self.grouped else 0
        for _, e in items:
            if e.sql() in group_sqls:
                continue
            n += 2 if isinstance(e, exp.Avg) else 1
        self.noisy_values = n

    def rewrite(self, items, group_sqls: set[str]):
        """(sql items, Release) for one party's outputs."""
        names = [name for name, _ in items]
        twice = next((name for name in names if names.count(name) > 1), None)
        if twice is not None:  # the release noises each output by name
            raise NotSupportedError(f"under differential privacy each output needs its own name; {twice!r} names "
                                    "more than one: give each an alias (AS ...)")
        sql_items, specs = [], []
        for name, e in items:
            if e.sql() in group_sqls:
                sql_items.append((name, e))
                specs.append(NoiseSpec(name, "key"))
            elif isinstance(e, exp.Count) and (isinstance(e.this, exp.Star) or isinstance(e.this, exp.Column)):
                sql_items.append((name, e))
                specs.append(NoiseSpec(name, "count", count_sensitivity=self.count_sensitivity))
            elif isinstance(e, (exp.Sum, exp.Avg)) and isinstance(e.this, exp.Column):
                key = (e.this.table, e.this.name)
                if key not in self.bounds:
                    raise PolicyViolation(
                        f"differential privacy needs clamping bounds for {e.this.sql()} (declare them in the "
                        "table's rules: bounds = { column = [low, high] })")
                low, high = self.bounds[key]
                clamped = exp.Least(this=exp.Greatest(this=e.this.copy(), expressions=[_num(low)]),
                                    expressions=[_num(high)])
                sql_items.append((f"{name}__sum", exp.Sum(this=clamped)))
                if isinstance(e, exp.Avg):
                    sql_items.append((f"{name}__count", exp.Count(this=e.this.copy())))
                integer = self.integer.get(key, False) and float(low).is_integer() and float(high).is_integer()
                specs.append(NoiseSpec(name, "avg" if isinstance(e, exp.Avg) else "sum",
                                       sensitivity=self.count_sensitivity * max(abs(low), abs(high)),
                                       count_sensitivity=self.count_sensitivity, integer=integer))
            else:
                raise NotSupportedError(
                    f"under differential privacy an output must be a group key or COUNT/SUM/AVG of a column; "
                    f"{e.sql()!r} is not")
        threshold = None
        if group_sqls:
            sql_items.append(("__n", exp.Count(this=exp.Star())))
            release = Release(tuple(specs), self.value_epsilon(), self.value_delta(), self.budget.noise, None)
            threshold = group_threshold(self.budget.noise, release.scale(self.count_sensitivity),
                                        self.count_sensitivity, self.budget.query_delta / 2 if
                                        self.budget.noise == "gaussian" else self.budget.query_delta,
                                        self.min_group_size)
        release = Release(tuple(specs), self.value_epsilon(), self.value_delta(), self.budget.noise, threshold)
        return sql_items, release

    def describe(self) -> list[str]:
        b = self.budget
        return [f"differential privacy ({b.noise}): this query spends ε={self.epsilon:g}"
                f"{f', δ={self.delta:g}' if self.delta else ''} of {b.issuer}'s budget ε={b.epsilon:g}",
                f"  {self.noisy_values} noisy value(s) per group, ε={self.value_epsilon():.4g} each; "
                f"an identity contributes at most {self.count_sensitivity:g} row(s)"]


def contribution_bound(tree: exp.Expression, bound_of) -> int:
    """Rows one identity can contribute to the query's input: `bound_of((party, table))` for a table; a
    join (or a subquery beside the FROM items) multiplies its inputs' bounds, since each of its rows may
    pair with each of the others'; a UNION ALL (any set operation) adds its branches', since its rows are
    theirs, side by side. CTEs count where they are read."""
    ctes = {cte.alias_or_name: cte.this for cte in tree.find_all(exp.CTE)}

    def bound(node: exp.Expression) -> int:
        if isinstance(node, exp.Table):
            return bound_of((node.db, node.name)) if node.db else bound(ctes[node.name]) if node.name in ctes else 1
        if isinstance(node, exp.Subquery):
            return bound(node.this)
        if isinstance(node, exp.SetOperation):
            return bound(node.left) + bound(node.right)
        if not isinstance(node, exp.Select):
            return 1
        sources = [node.args["from_"].this] if node.args.get("from_") else []
        sources += [j.this for j in node.args.get("joins") or []]
        product = 1
        for source in sources + _nested_queries(node, sources):
            product *= bound(source)
        return product

    return bound(tree)


def _nested_queries(select: exp.Select, sources: list) -> list[exp.Expression]:
    """The queries in `select`'s expressions (IN, EXISTS, scalar subqueries), outside its FROM items."""
    out = []
    for key, value in select.args.items():
        if key in ("from_", "joins", "with_"):
            continue
        for arg in value if isinstance(value, list) else [value]:
            if not isinstance(arg, exp.Expression):
                continue
            for query in arg.find_all(exp.Query):
                parent = query.parent
                while parent is not None and not isinstance(parent, exp.Query):
                    parent = parent.parent
                if parent is None or parent is select:
                    out.append(query)
    return out


def _num(value: float) -> exp.Expression:
    return exp.Literal.number(int(value) if float(value).is_integer() else value)


def output_masks(tree: exp.Expression, masks: dict, issuer: str) -> dict[int, object]:
    """Output index -> Mask for outputs that are a masked column as is, traced through derived tables, CTEs
    and UNION branches (a mask binds what is revealed, wherever the column is renamed on the way); any
    other use of a masked column in an output is refused, since the mask could not apply to its result."""
    relevant = {ref: mask for (ref, party), mask in masks.items() if party == issuer}
    if not relevant or not isinstance(tree, exp.Query):
        return {}
    root = build_scope(tree)
    found: dict[int, object] = {}
    for i, output in enumerate(_select_items(root)):
        inner = output.this if isinstance(output, exp.Alias) else output
        used = {mask for ref, as_is in item_sources(root, i) if ref in relevant
                for mask in [_as_is(ref, as_is, relevant[ref], issuer, inner)]}
        if len(used) > 1:
            raise PolicyViolation(f"output {output.alias_or_name} of {issuer}'s query joins columns masked "
                                  "differently for it; reveal each masked column in its own output")
        if used:
            found[i] = used.pop()
    return found


def _as_is(ref: ColumnRef, as_is: bool, mask, issuer: str, inner: exp.Expression):
    if not as_is:
        raise PolicyViolation(f"{ref} is masked for {issuer}: it may be revealed only as is, "
                              f"not inside {inner.sql()}")
    return mask


def _select_items(scope: Scope) -> list[exp.Expression]:
    """The output expressions of a scope (of its first branch for a set operation)."""
    while scope.set_operation_scopes:
        scope = scope.set_operation_scopes[0]
    return scope.expression.expressions


def item_sources(scope: Scope, i: int) -> list[tuple[ColumnRef, bool]]:
    """The base columns output `i` of `scope` derives from, each with whether it is that column as is;
    every branch of a set operation contributes its `i`-th output."""
    if scope.set_operation_scopes:
        return [s for branch in scope.set_operation_scopes for s in item_sources(branch, i)]
    items = scope.expression.expressions
    if i >= len(items):
        return []
    inner = items[i].this if isinstance(items[i], exp.Alias) else items[i]
    own = [(ref, as_is and column is inner) for column in inner.find_all(exp.Column)
           if column.find_ancestor(exp.Select) is scope.expression for ref, as_is in column_sources(scope, column)]
    nested = [(ref, False) for sub in scope.subquery_scopes if _within(sub.expression, inner)
              for s in sub.traverse() for column in s.columns for ref, _ in column_sources(s, column)]
    return own + nested


def _within(node: exp.Expression, ancestor: exp.Expression) -> bool:
    while node is not None and node is not ancestor:
        node = node.parent
    return node is ancestor


def column_sources(scope: Scope, column: exp.Column) -> list[tuple[ColumnRef, bool]]:
    """The base columns a column reference reads (a correlated one: from an enclosing scope)."""
    while scope is not None and column.table not in scope.sources:
        scope = scope.parent
    source = scope.sources[column.table] if scope is not None else None
    if isinstance(source, exp.Table) and source.db:
        return [(ColumnRef(source.db, source.name, column.name), True)]
    if isinstance(source, Scope):
        names = source.expression.named_selects
        if column.name in names:
            return item_sources(source, names.index(column.name))
    return []
