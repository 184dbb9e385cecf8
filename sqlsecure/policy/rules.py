"""Analysis rules per table (after AWS Clean Rooms' aggregation rule), declared by the table's owner.

```toml
[rules."shop.orders"]
join_columns = ["customer_id"]                  # the only columns it may be joined on
aggregations = { amount = ["SUM", "AVG"] }      # these columns only as the direct argument of these
                                                # aggregates (not windowed, not FILTERed), anywhere in the query
scalar_functions = ["ROUND", "ABS"]             # ... or through these scalar functions inside the aggregate
dimension_columns = ["category", "odate"]       # aggregation rule: only in SELECT (as GROUP BY keys),
                                                # GROUP BY, WHERE, ORDER BY; join_columns only in joins;
                                                # no other column of the table may be used at all
never_output = ["email"]                        # never in a SELECT list, in any form
join_required = true                            # only together with one of the issuer's own tables
min_group_size = 10                             # stricter than the federation's threshold
identity_column = "customer_id"                 # count groups by distinct identities, not rows
max_rows_per_identity = 5                       # differential privacy: contribution bound
bounds = { amount = [0, 500] }                  # differential privacy: clamping range
```
The rules bind every issuer but the owner. Declaring `dimension_columns` turns the table's rules into
an aggregation rule in the style of AWS Clean Rooms: every column the query uses must be a join,
aggregate or dimension column, the table is read only by the revealed (outermost) SELECT, which must
aggregate, and `identity_column` with `min_group_size` is its output constraint
`COUNT(DISTINCT identity) >= k` per output row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RULE_KEYS = {"join_columns", "aggregations", "never_output", "join_required", "min_group_size",
             "identity_column", "max_rows_per_identity", "bounds", "dimension_columns", "scalar_functions"}
AGGREGATES = {"SUM", "AVG", "COUNT", "MIN", "MAX", "COUNT_DISTINCT"}


@dataclass(frozen=True)
class TableRules:
    party: str
    table: str
    join_columns: tuple[str, ...] | None = None
    aggregations: dict[str, frozenset[str]] = field(default_factory=dict)
    never_output: frozenset[str] = frozenset()
    join_required: bool = False
    min_group_size: int | None = None
    identity_column: str | None = None
    max_rows_per_identity: int | None = None
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    dimension_columns: frozenset[str] | None = None  # set: an aggregation rule (every column classified)
    scalar_functions: frozenset[str] = frozenset()


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _scalar_functions(raw, key: str, problem) -> frozenset[str]:
    """Upper-cased names of scalar functions column control knows (planner/ccl_rules.py)."""
    from sqlsecure.planner.ccl_rules import Rule, names

    if not _strings(raw):
        problem(key, "must be a list of scalar function names")
        return frozenset()
    known = set(names(Rule.SCALAR))
    bad = [f for f in raw if f.upper() not in known]
    if bad:
        problem(key, f"unknown scalar function {', '.join(bad)} (docs/federation.md lists them)")
    return frozenset(f.upper() for f in raw if f.upper() in known)


def parse_rules(raw, problem, catalog_columns) -> dict[tuple[str, str], TableRules]:
    """`catalog_columns(party, table)` -> column names, or None if there is no such table."""
    out: dict[tuple[str, str], TableRules] = {}
    if not isinstance(raw, dict):
        problem("rules", 'must be a table of [rules."party.table"] sections')
        return out
    for name, body in raw.items():
        key = f'rules."{name}"'
        if name.count(".") != 1 or not isinstance(body, dict):
            problem(key, 'name a table as "party.table", with a table of rules')
            continue
        party, table = name.split(".")
        columns = catalog_columns(party, table)
        if columns is None:
            problem(key, f"no table {name}")
            continue
        for k in sorted(set(body) - RULE_KEYS):
            problem(f"{key}.{k}", "unknown key")

        def known(k: str, cols) -> bool:
            missing = [c for c in cols if c not in columns]
            if missing:
                problem(f"{key}.{k}", f"no column {', '.join(missing)} in {name}")
            return not missing

        join_columns = body.get("join_columns")
        if join_columns is not None and not _strings(join_columns):
            problem(f"{key}.join_columns", "must be a list of column names")
        if join_columns is not None and not (_strings(join_columns) and known("join_columns", join_columns)):
            join_columns = None
        aggregations = {}
        raw_aggs = body.get("aggregations", {})
        if not isinstance(raw_aggs, dict) or not all(_strings(v) for v in raw_aggs.values()):
            problem(f"{key}.aggregations", "must map a column to a list of aggregate names")
        elif known("aggregations", list(raw_aggs)):
            for col, funcs in raw_aggs.items():
                bad = [f for f in funcs if f.upper() not in AGGREGATES]
                if bad:
                    problem(f"{key}.aggregations.{col}", f"unknown aggregate {', '.join(bad)} "
                                                         f"(one of {', '.join(sorted(AGGREGATES))})")
                aggregations[col] = frozenset(f.upper() for f in funcs)
        never = body.get("never_output", [])
        if not _strings(never):
            problem(f"{key}.never_output", "must be a list of column names")
        if not _strings(never) or not known("never_output", never):
            never = []
        join_required = body.get("join_required", False)
        if not isinstance(join_required, bool):
            problem(f"{key}.join_required", "must be true or false")
        numbers = {}
        for k, low in (("min_group_size", 0), ("max_rows_per_identity", 1)):
            v = body.get(k)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < low):
                problem(f"{key}.{k}", f"must be a whole number >= {low}")
                v = None
            numbers[k] = v
        identity = body.get("identity_column")
        if identity is not None and (not isinstance(identity, str) or not known("identity_column", [identity])):
            identity = None
        bounds = {}
        raw_bounds = body.get("bounds", {})
        if not isinstance(raw_bounds, dict):
            problem(f"{key}.bounds", "must map a column to [low, high]")
        else:
            for col, pair in raw_bounds.items():
                if (not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(x, (int, float)) for x in pair)
                        or pair[0] > pair[1]):
                    problem(f"{key}.bounds.{col}", "must be [low, high] with low <= high")
                elif known("bounds", [col]):
                    bounds[col] = (pair[0], pair[1])
        dimensions = body.get("dimension_columns")
        if dimensions is not None and not _strings(dimensions):
            problem(f"{key}.dimension_columns", "must be a list of the table's column names")
            dimensions = []
        elif dimensions is not None and not known("dimension_columns", dimensions):
            dimensions = []
        out[(party, table)] = TableRules(
            party, table, tuple(join_columns) if join_columns is not None else None, aggregations,
            frozenset(never), bool(join_required), numbers["min_group_size"], identity,
            numbers["max_rows_per_identity"], bounds,
            frozenset(dimensions) if dimensions is not None else None,
            _scalar_functions(body.get("scalar_functions", []), f"{key}.scalar_functions", problem))
    return out
