"""What happens to a result before it is revealed: differential-privacy noise and masking.

`DPContext` turns a party's aggregate outputs into the SQL that computes what the noise needs
(clamped sums, AVG as SUM and COUNT, the group's row count) and the `Release` that noises them.
`output_masks` finds the output columns that are masked for the issuer.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

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


def _num(value: float) -> exp.Expression:
    return exp.Literal.number(int(value) if float(value).is_integer() else value)


def output_masks(tree: exp.Expression, masks: dict, issuer: str, lineage) -> dict[int, object]:
    """Output index -> Mask for outputs that are a masked column as is; refuse other uses of it."""
    if not masks or not isinstance(tree, exp.Select):
        return {}
    relevant = {ref for (ref, party) in masks if party == issuer}
    found: dict[int, object] = {}
    for i, output in enumerate(tree.expressions):
        inner = output.this if isinstance(output, exp.Alias) else output
        for column in inner.find_all(exp.Column):
            ref = lineage(column)
            if ref not in relevant:
                continue
            if column is not inner:
                raise PolicyViolation(f"{ref} is masked for {issuer}: it may be revealed only as is, "
                                      f"not inside {inner.sql()}")
            found[i] = masks[(ref, issuer)]
    return found


def base_lineage(tree: exp.Expression):
    """Column -> ColumnRef for columns of base tables in the outer SELECT."""
    items = ([tree.args["from_"].this] if tree.args.get("from_") else []) + [
        j.this for j in tree.args.get("joins") or []]
    tables = {i.alias_or_name: (i.db, i.name) for i in items if isinstance(i, exp.Table) and i.db}

    def lineage(column: exp.Column) -> ColumnRef | None:
        if column.table in tables:
            return ColumnRef(*tables[column.table], column.name)
        return None

    return lineage
