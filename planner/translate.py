"""Translation of any query shape, operator by operator (issue 16, the planner side).

The operator tree (`tree.py`) is placed bottom-up: every maximal subtree that reads one party's tables
becomes a `RunLocal` step at that party (one SQL string); the rest becomes one `SecretQuery` step, a
secret program (`secret_ops.py`) the SPU runs over the owners' shared relations; a `Finish` at the
issuer gives DuckDB's result types and the ORDER BY.

Group threshold: each protected owner's relation (every party but the issuer) carries its provenance
column `__prov_<relation>` (the row number party.py appends to every RunLocal output) into the program;
the outermost aggregate on each path keeps a group only with >= k distinct values of each, and an inner
aggregate carries MIN(provenance) per group as its row's provenance.

Own filters: a filter of one party over rows that party shares anyway is evaluated by it, as one boolean
column of its program input the SPU filters on (`owner_flags`): the row count stays the table's.

Own aggregates: an aggregate over one party's rows that may not run at its owner (its group count would
tell the others about the data) is computed by that owner all the same, padded to a public bound B with
dummy rows, the validity of each row a secret bit the SPU filters on (`padding_of`, `run_padded`).

Masks: a column masked for the issuer that the result reveals is masked by its owner on the program
input, before it is shared (`Mask` after its `RunLocal`), so no party sees it unmasked; that equals
the mask on the result only where the column reaches the outputs as is, so every use of it must be
(no filter, join key, group key, DISTINCT, ORDER BY or function over it: planner/mask_uses.py refuses these
for every path first; here also a hash-masked group key, which the spine answers).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.scope import build_scope

from sqlsecure.errors import NotSupportedError, PolicyViolation
from sqlsecure.planner import rewrite_semijoin, secret_ops
from sqlsecure.planner.build import localize, subquery_columns
from sqlsecure.planner.catalog import Catalog
from sqlsecure.planner.mask_uses import clause_of, ordered_outputs, passed_as_is
from sqlsecure.planner.magnitudes import INTEGER_TYPES, Pushdown, bind_program_ranges
from sqlsecure.planner.physical import Finish, Mask, PhysicalPlan, RunLocal, SecretQuery
from sqlsecure.planner.subqueries import Subquery
from sqlsecure.planner.place_outputs import KIND_OF_TYPE
from sqlsecure.planner.reveal import DPContext, column_sources, item_sources
from sqlsecure.planner.translate_dp import noised_aggregate
from sqlsecure.policy.grants import ColumnRef, Constraint, Grants
from sqlsecure.planner.tree import (
    Aggregate, Distinct, Filter, Join, Op, Project, Scan, SetOp, Sort, UnionAll, Window, build_tree, parties_of,
    quoted, unique_side, many_side_only, join_checks, rows_as_groups, relied_keys,
    describe_join, eager_aggregation, repeating_op, rebuilt,
)

RESULT = "secret_out"
MAX_SECRET_ROWS = 1 << 20  # the most rows one operator of a secret program may hold (memory: ~KBs per row)


@dataclass
class Translation:
    """What the placement collects while it walks the tree."""

    catalog: Catalog
    issuer: str
    k: int  # the minimum group size (0: none)
    grants: Grants | None = None  # None: no single-party filter, join or aggregate is pushed down
    viewers: frozenset[str] = frozenset()  # the parties of the query and the issuer
    steps: list = field(default_factory=list)
    inputs: list = field(default_factory=list)  # program inputs: {"columns": [[name, kind], ...]}
    owners: list = field(default_factory=list)  # (owner, relation) per program input
    thresholded: bool = False
    sort_joins: list = field(default_factory=list)  # (join keys, declared key or None, compacted, the many side's
    # declared key checked or None) of each sort-based join
    masks: dict = field(default_factory=dict)  # ColumnRef -> Mask its owner applies to the program input
    padding: bool = True  # whether owners may compute their own aggregates padded (`padding_of`; not under DP)
    padded: list = field(default_factory=list)  # (relation, Padding) of each padded aggregate input
    relied: frozenset = frozenset()  # declared keys a GROUP BY takes its rows as groups on (`tree.relied_keys`)
    checked: set = field(default_factory=set)  # declared keys the program's sort-based joins check
    per_row: list = field(default_factory=list)  # EXPLAIN's note per GROUP BY computed per row (`per_row_note`)
    repeated: set = field(default_factory=set)  # provenance columns a join may repeat on several rows (`_join`)


def translate(tree: exp.Expression, catalog: Catalog, issuer: str, min_group_size: int, uses=(),
              grants: Grants | None = None, masks: dict | None = None, dp: DPContext | None = None) -> PhysicalPlan:
    """The physical plan of a cross-party query of any shape: RunLocal steps, one SecretQuery, a Finish.
    `grants` decide which single-party filters, joins and aggregates may run at their owner; `masks`
    ((column, party) -> Mask, the policy's) which revealed columns their owners mask; `dp`: the
    outermost aggregate's outputs are noised on shares before they open (translate_dp.py)."""
    root = build_tree(tree, catalog, lambda op: min_group_size > 0 and bool(parties_of(op) - {issuer}))
    root = pruned(root, frozenset(root.columns))
    if len(parties_of(root)) < 2:
        raise NotSupportedError("the operator translation is for queries that read several parties")
    if dp is None:  # translate_dp reads the aggregate's own shape
        root = rewrite_semijoin.rewritten(root, catalog, lambda op: min_group_size > 0 and bool(parties_of(op) - {issuer}))
    root = eager_aggregation(root, catalog, collapsible(issuer, min_group_size, dp is not None))
    revealed = revealed_masks(tree, masks or {}, issuer)
    t = Translation(catalog, issuer, min_group_size, grants, parties_of(root) | {issuer},
                    masks={ref: mask for refs in revealed.values() for ref, mask in refs.items()}, padding=dp is None)
    root = pruned(owner_flags(root, t, itertools.count(1)), frozenset(root.columns))
    check_size(root, catalog, lambda op, under: planned_bound(padding_of(op, t, under), catalog))
    noised = noised_aggregate(root, dp, origins) if dp is not None else None
    t.relied = relied_keys(root, catalog)
    node, columns, provenance = place(noised.aggregate if noised else root, t, under_aggregate=False, at_root=True)
    texts = masked_outputs(root, columns, revealed)
    if provenance:
        node = secret_ops.project_node(node, [(c, quoted(c)) for c in columns])
    compute = tuple(dict.fromkeys(owner for owner, _ in t.owners))
    if len(compute) < 2:
        raise NotSupportedError("a secret program needs the inputs of at least two parties")
    program = {"inputs": t.inputs, "root": node}
    if noised is not None:
        program["noise"] = noised.program_noise(compute, issuer)
    program = json.dumps(program, sort_keys=True, separators=(",", ":"))
    from sqlsecure.executors.spu.program import parse_program  # late: the SPU imports the planner

    parse_program(program)  # what the SPU cannot run is refused here, so check = EXPLAIN = execution
    t.steps.append(SecretQuery(compute, tuple(t.owners), program, issuer, RESULT))
    finish = noisy_finish_sql(tree, root, noised, catalog) if noised else \
        finish_sql(tree, root, columns, catalog, texts)
    t.steps.append(Finish(issuer, ((issuer, RESULT),), "rows", finish))
    leakage = [(p, f"the row count of each program input ({', '.join(r for o, r in t.owners)}) and the "
                   "number of result rows") for p in compute]
    leakage += [(p, text) for p in compute for text in sort_join_leakage(t.sort_joins)]
    leakage += [(p, padded_leakage(relation, padding)) for p in compute for relation, padding in t.padded]
    leakage.append((issuer, "the query result"))
    counted = tuple(p for p in compute if p != issuer) if t.thresholded else ()
    notes = tuple(f"masked for {issuer} by {s.party} before it is shared: {column} ({mask.describe()})"
                  for s in t.steps if isinstance(s, Mask) for column, mask in s.columns) + eager_notes(root, t.padded) + rewrite_semijoin.notes(root) + \
        owner_flag_notes(root, t.padded) + tuple(padded_note(relation, padding) for relation, padding in t.padded) + \
        tuple(t.per_row)
    if noised is not None:
        party = json.loads(program)["noise"]["party"]
        leakage.insert(-1, (party, "its own noise draws (never the exact values: it adds them to its shares)"))
        notes += (*dp.describe(), f"  noise added by {party} to its shares of the aggregates before they open"
                  + (f"; a group is released only if its noisy row count is >= {noised.threshold}"
                     if noised.threshold is not None else ""))
    return bind_program_ranges(PhysicalPlan(issuer, tuple(t.steps), tuple(dict.fromkeys(leakage)), uses=tuple(uses),
                                            notes=notes, min_group_size=min_group_size if t.thresholded else 0,
                                            counted=counted, epsilon=dp.epsilon if dp else 0.0,
                                            delta=dp.delta if dp else 0.0), catalog,
                               {relation: padded_bounds(padding, catalog) for relation, padding in t.padded})


def collapsible(issuer: str, k: int, noised: bool):
    """Whether eager aggregation may pre-aggregate `part` of a join beside `other` (tree.eager_join). Beneath
    an aggregate always: the partials' MIN(provenance) is the MIN over their rows. For the outermost one,
    whose group threshold counts each owner's distinct rows, only where `part` is the issuer's, whose rows
    are not counted, and `other` holds a counted owner's rows; under DP never (translate_dp reads its shape).
    Over a join a unique side makes sort-based already (`linear`), only where the partial's owner computes
    it, padded (`owner_may_pad`): it then shares fewer rows than `part` has."""

    def may_collapse(part: Op, other: Op, outermost: bool, linear: bool = False) -> bool:
        if noised or (linear and not owner_may_pad(part, issuer, k)):
            return False
        return not outermost or k == 0 or (parties_of(part) <= {issuer} and bool(parties_of(other) - {issuer}))

    return may_collapse


def owner_may_pad(part: Op, issuer: str, k: int) -> bool:
    """Whether a partial aggregate of `part` would be computed by its owner (`padding_of`): one party whose
    rows no group threshold counts, over its table's rows (its filters become its flags: `owner_flags`)."""
    owners = parties_of(part)
    return len(owners) == 1 and (k == 0 or owners == {issuer}) and _rows_of_one_table(part)


def _rows_of_one_table(op: Op) -> bool:
    if isinstance(op, Scan):
        return True
    return isinstance(op, (Project, Window, Filter)) and _rows_of_one_table(op.child)


def eager_notes(root: Op, padded=()) -> tuple[str, ...]:
    """EXPLAIN's line per eager aggregation (tree.eager_join) of the program; `padded`: (relation, Padding)
    of the aggregates their owners compute (`run_padded`)."""
    by_owner = {id(padding.op): relation for relation, padding in padded}
    notes = []
    for op in walk(root):
        if isinstance(op, Aggregate) and op.eager:
            calls = ", ".join(f"{func}({arg or '*'})" for _, func, arg, _ in op.aggregates) or "its join keys"
            where = f"by {next(iter(parties_of(op)))} ({by_owner[id(op)]}, padded)" if id(op) in by_owner else \
                "on the SPU"
            notes.append(f"eager aggregation: {calls} of {', '.join(sorted(parties_of(op)))}'s rows pre-aggregated "
                         f"by the join keys ({', '.join(sql for _, sql in op.keys)}) {where}, nothing opened, so "
                         "the join is a sort-based PK-FK join (n + m rows, not n * m)")
    return tuple(notes)


def walk(op: Op):
    """`op` and every operator beneath it."""
    yield op
    for child in op.children:
        yield from walk(child)


def check_size(root: Op, catalog: Catalog, padded=lambda op, under: None) -> None:
    """Refuse a program one of whose operators could hold more than MAX_SECRET_ROWS rows, from the
    tables' published sizes (an all-pairs join holds n*m rows), before any party is asked. `padded(op,
    under)`: the rows of an aggregate its owner computes padded (`padding_of`), whose input the SPU
    never holds; None for the others."""
    sizes: dict[str, dict[str, int]] = {}

    def rows(op: Op, under: bool) -> int | None:
        if isinstance(op, Scan):
            if op.party not in sizes:
                sizes[op.party] = catalog.sizes(op.party) if catalog.sizes is not None else {}
            return sizes[op.party].get(op.table)
        bound = padded(op, under)
        if bound is not None:
            return bound
        inner = True if isinstance(op, Aggregate) else not op.thresholded if isinstance(op, Subquery) else under
        counts = [rows(child, inner) for child in op.children]
        if any(n is None for n in counts):
            return None
        if isinstance(op, Join):
            left, right = counts
            unmatched = {"left": left, "full": left + right}.get(op.kind, 0)  # outer joins add unmatched rows
            linear = op.kind in ("semi", "anti") or unique_side(op, catalog) is not None
            n = left + right if linear else left * right + unmatched
        else:
            n = 1 if isinstance(op, Subquery) and op.one_row else sum(counts)
        if n > MAX_SECRET_ROWS:
            article = "an" if isinstance(op, Join) and op.kind[0] in "aeiou" else "a"
            what = f"{type(op).__name__.lower()} over about {n:,} rows"
            if isinstance(op, Join):
                what = f"{article} {op.kind} join of about {counts[0]:,} x {counts[1]:,} rows" + (
                    f" (sorted together: {n:,} rows)" if linear else " (it pairs every row with every row)")
            raise NotSupportedError(
                f"{what} in secure computation is beyond the {MAX_SECRET_ROWS:,} rows a secret program holds; "
                "filter the inputs, or grant the columns so the query can run at a party")
        return n

    rows(root, False)


def sort_join_leakage(sort_joins) -> list[str]:
    """What each compute party learns at a sort-based PK-FK join: the sizes only (`compacted`: its output cut
    to the many side's m rows by opening a public side marker after a shuffle); and one bit per declared
    key it relies on (whether the unique side repeats a valid key, which fails the query), and for the many
    side's declared key, checked where a GROUP BY above may take its rows as groups (`tree.rows_as_groups`)."""
    out = []
    for keys, declared, compacted, declared_many in sort_joins:
        text = f"a sort-based PK-FK join on unique {', '.join(keys)} (n + m rows, not n * m): nothing but the sizes"
        if compacted:
            text += "; then compacted to the m rows of its other side (shuffled, each row's side opened: m is public)"
        if declared is not None:
            text += f"; whether {declared}, declared unique, repeats a joined key (1 bit: a repeat fails the query)"
        if declared_many is not None:
            text += f"; whether {declared_many}, declared unique, repeats a valid key (1 bit: a repeat fails the query)"
        out.append(text)
    return out


def place(op: Op, t: Translation, under_aggregate: bool, at_root: bool = False):
    """(program node, data columns, provenance columns) of `op`: a RunLocal input when it reads one party
    and keeps every row of its tables, or when the others may see every column it reads; otherwise a
    filter, join, aggregate, DISTINCT or LIMIT of one party runs on the SPU too, since its output's row
    count, which every compute party sees, depends on its data (a filter on a flag its owner computed,
    `owner_flags`, is one such)."""
    owners = parties_of(op)
    if len(owners) == 1 and (keeps_rows(op) or size_is_public(op, next(iter(owners)), t)) and not counted_partial(
            op, t):
        return run_local(op, next(iter(owners)), t, under_aggregate)
    padding = padding_of(op, t, under_aggregate)
    if padding is not None:
        return run_padded(op, padding, t)
    if len(owners) == 1 and under_aggregate and t.k > 0 and owners != {t.issuer}:
        refuse_repeated_rows(op, next(iter(owners)), t.catalog)  # the threshold counts the rows of its part, as before
    return TRANSLATE[type(op)](op, t, under_aggregate, at_root)


def counted_partial(op: Op, t: Translation) -> bool:
    """Whether `op` is an eager partial aggregate (tree.eager_join) of a party whose rows the group threshold
    counts: on the SPU it keeps MIN(provenance) of its rows, at its owner it would number its groups instead."""
    return isinstance(op, Aggregate) and op.eager and t.k > 0 and parties_of(op) != {t.issuer}


def size_is_public(op: Op, party: str, t: Translation) -> bool:
    """Whether every other party of the query may see every column `op` reads as PLAINTEXT, so the row
    count of its output (which depends on those columns) may be revealed to them (conservative, as the
    spine checks a derived table of another party)."""
    if t.grants is None:
        return False
    return all(t.grants.constraint(ColumnRef(scan.party, scan.table, name), viewer) is Constraint.PLAINTEXT
               for scan in scans_of(op) for name in scan.names for viewer in t.viewers - {party})


def scans_of(op: Op) -> list[Scan]:
    return [op] if isinstance(op, Scan) else [scan for child in op.children for scan in scans_of(child)]


def keeps_rows(op: Op) -> bool:
    """Whether `op` outputs exactly one row per row of its one table (scans, projections, windows)."""
    return isinstance(op, Scan) or (isinstance(op, (Project, Window)) and keeps_rows(op.child))


def run_local(op: Op, party: str, t: Translation, under_aggregate: bool):
    """A maximal single-party subtree: its SQL runs at its party, its output is a program input."""
    protected = party != t.issuer and t.k > 0
    qualified = sqlglot.parse_one(local_sql(op, protected and not under_aggregate, t.k), read="duckdb")
    types = subquery_columns(qualified, t.catalog)
    relation = f"r{len(t.owners)}"
    masked = input_masks(op, party, t.masks)
    kinds = [[c, "text" if c in masked and masked[c].method in TEXT_MASKS else kind_of(c, types.get(c))]
             for c in op.columns]
    provenance = [f"__prov_{relation}"] if protected and under_aggregate else []
    if provenance:
        refuse_repeated_rows(op, party, t.catalog)
    t.inputs.append({"columns": kinds + [[p, "int"] for p in provenance]})
    t.owners.append((party, relation))
    t.steps.append(RunLocal(party, as_bigints(localize(qualified).sql(dialect="duckdb"), types), relation))
    if masked:
        t.steps.append(Mask(party, relation, tuple(masked.items())))
    return secret_ops.input_node(len(t.owners) - 1), list(op.columns), provenance


def refuse_repeated_rows(op: Op, party: str, catalog: Catalog) -> None:
    """A protected owner's part that can repeat one of its rows (a join of its own tables with no side
    unique on its keys, a UNION ALL) would inflate the distinct rows the threshold counts: refused,
    unless an aggregate collapses it (`tree.repeating_op`)."""
    found = repeating_op(op, catalog, stop=(Aggregate, Distinct))
    if found is None:
        return
    what = f"a join of its own tables, {describe_join(found)}, neither of whose sides is unique on its " \
        "join keys" if isinstance(found, Join) else "a UNION ALL"
    raise PolicyViolation(f"the minimum group size counts {party}'s distinct rows, but {party}'s part of the query "
                          f"({what}) can repeat a row of it; aggregate over {party}'s tables without repeating "
                          f"their rows, or declare the key that makes a side unique in [parties.{party}.unique]")


def kind_of(column: str, dtype: str | None) -> str:
    """The program kind of a DuckDB type; NotSupportedError naming the column otherwise."""
    base = (dtype or "").split("(")[0].upper()
    if base == "DECIMAL":
        return f"decimal.{int(dtype.split(',')[1].rstrip(') '))}" if "," in dtype else "decimal.3"
    kind = KIND_OF_TYPE.get(base)
    if kind is None or kind == "any":
        raise NotSupportedError(f"column {column} is of type {dtype or 'unknown'}, which secure computation does "
                                "not take; CAST it to an integer, DECIMAL, DOUBLE, DATE, TIMESTAMP, BOOLEAN or VARCHAR")
    return kind


# -- a party's own filters, evaluated by that party as one secret bit per row ---------------------------
FLAG = "__own"  # the prefix of the flag columns


def owner_flags(op: Op, t: Translation, fresh) -> Op:
    """`op` with each filter of one party that may not run at its owner (the rows it keeps would tell the
    other compute parties about the data: `size_is_public`), over rows its owner shares anyway
    (`keeps_rows`), evaluated by that owner instead: it shares every row with the flag COALESCE(condition,
    FALSE), and the SPU keeps a row only where the flag is TRUE. The row count shared stays the table's,
    the flag is a secret share, and the columns only the condition reads are no longer shared (`pruned`).
    Stacked filters make one flag; a renaming over a flagged filter (a derived table, a view) is done by
    the owner too, so a filter above it joins the same flag; a filter over a UNION ALL (a federation view)
    filters each branch (`into_branches`), so each branch's owner evaluates it, stacked filters there too
    (the lower one is in the branches by then). `fresh` numbers the flags."""
    op = rebuilt(op, lambda child: owner_flags(child, t, fresh))
    if isinstance(op, Filter) and op.flag is None and into_branches(op) is not op:
        return rebuilt(into_branches(op), lambda child: owner_flags(child, t, fresh))
    if isinstance(op, Project) and _flagged(op.child) and _renames(op):
        below = op.child
        return dataclasses.replace(below, child=Project(below.child, op.items + ((below.flag, quoted(below.flag)),)))
    if not isinstance(op, Filter) or op.flag is not None or len(parties_of(op)) != 1:
        return op
    if size_is_public(op, next(iter(parties_of(op))), t):
        return op  # its owner filters it: the rows it keeps may be known
    own = f"CAST(COALESCE(({op.condition}), FALSE) AS BOOLEAN)"  # typed whatever the condition's functions
    if _flagged(op.child):
        core, flag, below = op.child.child, f"CASE WHEN {op.child.condition} THEN {own} ELSE FALSE END", \
            op.child.evaluated
    elif keeps_rows(op.child):
        core, flag, below = op.child, own, ()
    else:
        return op
    name = f"{FLAG}{next(fresh)}"
    return Filter(Project(core, tuple((c, quoted(c)) for c in op.columns) + ((name, flag),)), quoted(name), name,
                  below + (op.condition,))


def into_branches(op: Filter) -> Op:
    """A filter over a UNION ALL, renamed or not, as the UNION ALL of the filter over each branch, over that
    branch's column names (a filter of each row, wherever it comes from)."""
    renaming = op.child if isinstance(op.child, Project) and _renames(op.child) else None
    union = renaming.child if renaming is not None else op.child
    if not isinstance(union, UnionAll):
        return op
    names = {quoted(c): c for c in union.columns}
    at_union = renamed(op.condition, {name: names[sql] for name, sql in renaming.items}) if renaming else op.condition
    branches = UnionAll(tuple(Filter(branch, renamed(at_union, dict(zip(union.columns, branch.columns))))
                              for branch in union.inputs))
    return dataclasses.replace(renaming, child=branches) if renaming else branches


def renamed(sql: str, names: dict[str, str]) -> str:
    """`sql` with the columns `names` maps read under their new names."""
    return sqlglot.parse_one(sql, read="duckdb").transform(
        lambda node: exp.column(names[node.name], quoted=True)
        if isinstance(node, exp.Column) and not node.table and node.name in names else node).sql(dialect="duckdb")


def _renames(op: Project) -> bool:
    """Whether each of `op`'s items is one of its child's columns as is."""
    return {sql for _, sql in op.items} <= {quoted(c) for c in op.child.columns}


def _flagged(op: Op) -> bool:
    """Whether `op` is a filter on a flag its owner computed (`owner_flags`)."""
    return isinstance(op, Filter) and op.flag is not None


def owner_flag_notes(root: Op, padded=()) -> tuple[str, ...]:
    """EXPLAIN's line per filter its owner evaluates (`owner_flags`) into a shared bit (not those inside an
    aggregate its owner computes: `padded`, (relation, Padding) each)."""
    inside = {id(op) for _, padding in padded for op in walk(padding.op)}
    return tuple(f"filter evaluated by {next(iter(parties_of(op)))} on its own rows, shared as a secret bit "
                 f"{op.flag}: {' AND '.join(f'({c})' if len(op.evaluated) > 1 else c for c in op.evaluated)} "
                 "(every row shared, as without the filter; the columns only the condition reads are not)"
                 for op in walk(root) if _flagged(op) and id(op) not in inside)


# -- a party's own aggregate, computed by that party and padded to a public bound ---------------------
VALID = "__valid_"  # the prefix of a padded input's validity column (its relation follows)
WIDE_INTEGERS = ("HUGEINT", "UHUGEINT")  # an integer SUM's type at its owner, beyond the SPU's 64 bits
BEYOND_BIGINT = "sqlsecure: beyond BIGINT: "  # the owner's failure then (`as_bigint`)
OVER_BOUND = "sqlsecure: more groups than the padded bound"  # the owner's failure where a stale class lets them


@dataclass(frozen=True)
class Padding:
    """How an aggregate of `party` is computed by it and shared as exactly B rows: B is the row count of
    `table` (which its input shares anyway) or, smaller, the groups its integer keys' published classes
    allow (`classes`: (key name, its base column, M) each, |v| < 2^M, so at most 2^(M+1) - 1 values and NULL); one row without
    keys. `thresholded`: the aggregate keeps groups of >= k rows (the SPU's threshold, at the owner)."""

    party: str
    table: Scan
    keys: int
    classes: tuple[tuple[str, str, int], ...]
    thresholded: bool
    counts: tuple[str, ...] = ()  # its COUNT outputs (at most the table's rows)
    op: Aggregate | None = field(default=None, compare=False, repr=False)  # the aggregate itself

    @property
    def class_bound(self) -> int | None:
        """The groups the keys' published classes allow; None when a key has no class."""
        if len(self.classes) < self.keys:
            return None
        return math.prod(2 ** (bits + 1) for _, _, bits in self.classes)

    def bound_sql(self) -> str:
        """B, as its owner computes it (DuckDB SQL over its own tables)."""
        if not self.keys:
            return "1"
        rows = f"(SELECT COUNT(*) FROM {quoted(self.table.table)})"
        return rows if self.class_bound is None else f"LEAST({self.class_bound}, {rows})"

    def describe(self) -> str:
        """B in words, for EXPLAIN."""
        if not self.keys:
            return "1 row (an aggregate without GROUP BY)"
        rows = f"the rows of {self.party}.{self.table.table}"
        if self.class_bound is None:
            return f"{rows} (shared as its input's size without this)"
        classes = ", ".join(f"{column} |v| < 2^{bits}" for _, column, bits in self.classes)
        return f"min({self.class_bound:,} (the published classes {classes}, NULL included), {rows})"


def padding_of(op: Op, t: Translation, under: bool) -> Padding | None:
    """The padding of an aggregate over one party's rows that `place` does not run at its owner, over an input
    that keeps its table's rows (scans, projections, windows, filters on its owner's flags: `owner_flags`), so
    the table's row count bounds its groups; None elsewhere: under DP, where masks apply, and where a
    protected owner's aggregate carries MIN(provenance) per group for an outer threshold (on the SPU)."""
    if not isinstance(op, Aggregate) or not t.padding or len(parties_of(op)) != 1 or counted_partial(op, t):
        return None
    party = next(iter(parties_of(op)))
    table = rows_source(op.child)
    if table is None or (under and t.k > 0 and party != t.issuer) or input_masks(op.child, party, t.masks):
        return None
    thresholded = not under and t.k > 0 and party != t.issuer  # the issuer's own rows are never counted
    return Padding(party, table, len(op.keys), key_classes(op, t.catalog), thresholded=thresholded,
                   counts=tuple(name for name, func, _, _ in op.aggregates if func == "COUNT"), op=op)


def rows_source(op: Op) -> Scan | None:
    """The scan whose table's rows `op` shares or filters (its owner's flags), one per row at most."""
    if isinstance(op, Scan):
        return op
    if isinstance(op, (Project, Window)) or _flagged(op):
        return rows_source(op.child)
    return None


def key_classes(op: Aggregate, catalog: Catalog) -> tuple[tuple[str, str, int], ...]:
    """(key name, its base column, M) of each of the aggregate's keys that is an integer base column with a
    published class."""
    if catalog.magnitudes is None:
        return ()
    found, bases = [], origins(op.child)
    by_sql = {quoted(c): c for c in op.child.columns}
    for name, sql in op.keys:
        refs = bases.get(by_sql.get(sql), set())
        if len(refs) != 1:
            continue
        ref = next(iter(refs))
        dtype = (catalog.column_type(ref.party, ref.table, ref.column) or "").split("(")[0].upper()
        bits = catalog.magnitudes(ref.party, ref.table, (ref.column,)).get(ref.column) \
            if dtype in INTEGER_TYPES else None
        if bits is not None:
            found.append((name, str(ref), bits))
    return tuple(found)


def planned_bound(padding: Padding | None, catalog: Catalog) -> int | None:
    """B at plan time, from the published (rounded up) table size: what `check_size` prices."""
    if padding is None:
        return None
    if not padding.keys:
        return 1
    bounds = [n for n in (published_rows(padding, catalog), padding.class_bound) if n is not None]
    return min(bounds) if bounds else None


def published_rows(padding: Padding, catalog: Catalog) -> int | None:
    """The published (rounded up) size of the table a padded aggregate reads; None where none is published."""
    return catalog.sizes(padding.party).get(padding.table.table) if catalog.sizes is not None else None


def padded_bounds(padding: Padding, catalog: Catalog) -> Pushdown:
    """What the published sizes and classes bound of a padded input (`magnitudes.Pushdown`): B rows; its keys
    their base columns' classes; a COUNT at most the table's published size."""
    bound, size = planned_bound(padding, catalog), published_rows(padding, catalog)
    columns = {name: ("int", bits) for name, _, bits in padding.classes}
    columns |= {name: ("int", size.bit_length()) for name in padding.counts if size is not None}
    return Pushdown(math.inf if bound is None else float(bound), columns)


def run_padded(op: Aggregate, padding: Padding, t: Translation):
    """The aggregate at its owner as a program input of exactly B rows (`padded_sql`) with its validity
    column, which the SPU filters on and drops."""
    aggregate = sqlglot.parse_one(local_sql(op, padding.thresholded, t.k), read="duckdb")
    types = subquery_columns(aggregate, t.catalog)
    relation = f"r{len(t.owners)}"
    valid = f"{VALID}{relation}"
    t.inputs.append({"columns": [[c, kind_of(c, types.get(c))] for c in op.columns] + [[valid, "bool"]]})
    t.owners.append((padding.party, relation))
    t.padded.append((relation, padding))
    t.thresholded = t.thresholded or padding.thresholded
    sql = padded_sql(localize(aggregate).sql(dialect="duckdb"), {c: types.get(c) for c in op.columns}, valid,
                     padding.bound_sql())
    t.steps.append(RunLocal(padding.party, sql, relation))
    node = secret_ops.filter_node(secret_ops.input_node(len(t.owners) - 1), quoted(valid), owner=padding.party,
                                  padded=padding.describe())
    return secret_ops.project_node(node, [(c, quoted(c)) for c in op.columns]), list(op.columns), []


def as_bigints(sql: str, columns: dict) -> str:
    """`sql` with each HUGEINT output (an integer SUM at its owner) shared as the BIGINT the SPU holds."""
    wide = [c for c, dtype in columns.items() if (dtype or "").upper() in WIDE_INTEGERS]
    if not wide:
        return sql
    named = output_sql(sql)
    items = ", ".join(f"{as_bigint(quoted(c), named.get(c, c))} AS {quoted(c)}" for c in wide)
    return f"SELECT * REPLACE ({items}) FROM ({sql}) AS \"_w\""


def as_bigint(value: str, label: str) -> str:
    """`value` (a HUGEINT) as a BIGINT; beyond BIGINT its owner fails with `BEYOND_BIGINT` and `label` (the
    query's aggregate), fixed words: never DuckDB's conversion error, which quotes the value."""
    failure = f"{BEYOND_BIGINT}{label}".replace("'", "''")
    return (f"CASE WHEN {value} NOT BETWEEN {-(1 << 63)} AND {(1 << 63) - 1} THEN ERROR('{failure}') "
            f"ELSE CAST({value} AS BIGINT) END")


def output_sql(sql: str) -> dict[str, str]:
    """Each output name of `sql`'s outermost SELECT -> its expression's SQL (the aggregate a name stands for)."""
    select = sqlglot.parse_one(sql, read="duckdb")
    return {e.alias_or_name: e.unalias().sql(dialect="duckdb") for e in select.expressions} \
        if isinstance(select, exp.Select) else {}


def padded_sql(aggregate: str, columns: dict, valid: str, bound: str) -> str:
    """`aggregate`'s groups numbered 0.. beside the slots 0..B-1: a group per slot, then dummy rows (NULLs,
    `valid` FALSE); a group beyond B (a class gone stale) fails the query at its owner (`OVER_BOUND`).
    `columns`: name -> DuckDB type; a HUGEINT (an integer SUM) is shared as the BIGINT the SPU holds."""
    named = output_sql(aggregate)
    items = ", ".join((as_bigint(f'"_g".{quoted(c)}', named.get(c, c)) if (dtype or "").upper() in WIDE_INTEGERS
                       else f'"_g".{quoted(c)}') + f" AS {quoted(c)}" for c, dtype in columns.items())
    check = f"CASE WHEN \"_p\".\"slot\" IS NULL THEN ERROR('{OVER_BOUND}') ELSE \"_g\".\"__slot\" IS NOT NULL END"
    return (f"SELECT {items}, {check} AS {quoted(valid)} FROM (SELECT UNNEST(RANGE({bound})) AS \"slot\") AS \"_p\" "
            f"FULL JOIN (SELECT *, ROW_NUMBER() OVER () - 1 AS \"__slot\" FROM ({aggregate}) AS \"_\") AS \"_g\" "
            "ON \"_g\".\"__slot\" = \"_p\".\"slot\"")


def padded_leakage(relation: str, padding: Padding) -> str:
    """What each compute party learns of a padded aggregate input: its size B, a public bound."""
    return (f"{relation}'s size: B = {padding.describe()} rows, a bound fixed before the data is read (not the "
            f"number of {padding.party}'s groups: each row's validity stays a secret bit)")


def padded_note(relation: str, padding: Padding) -> str:
    """EXPLAIN's line per aggregate its owner computes padded."""
    filters = [c for op in walk(padding.op) if _flagged(op) for c in op.evaluated]
    within = f", its filter {' AND '.join(filters)} applied there too" if filters else ""
    return (f"{relation}: aggregated by {padding.party} on its own rows, padded to B rows, validity shared as a "
            f"secret bit (B = {padding.describe()}; the SPU never holds the aggregate's input{within})")


# -- program inputs carry only the columns the query reads ------------------------------------------
def pruned(op: Op, needed: frozenset[str]) -> Op:
    """`op` without the output columns no operator above reads (`needed`), down to its scans, so a
    program input shares only what the program computes with: a view's or `SELECT *`'s other columns
    (a long text, an out-of-range number) are never encoded, checked or shared. DISTINCT and set
    operations compare whole rows and aggregates define their outputs: those keep every column they read."""
    if isinstance(op, Scan):
        names = tuple(n for n in op.names if f"{op.alias}.{n}" in needed) or op.names[:1]
        return dataclasses.replace(op, names=names)
    if isinstance(op, Project):
        items = tuple(item for item in op.items if item[0] in needed) or op.items[:1]
        return dataclasses.replace(op, child=pruned(op.child, _reads(*(sql for _, sql in items))), items=items)
    if isinstance(op, UnionAll):
        kept = [i for i, c in enumerate(op.columns) if c in needed] or [0]
        return UnionAll(tuple(pruned(branch, frozenset(branch.columns[i] for i in kept)) for branch in op.inputs))
    if isinstance(op, (Distinct, SetOp, Aggregate)):
        needed = frozenset(c for child in op.children for c in child.columns) if not isinstance(op, Aggregate) \
            else _reads(*(sql for _, sql in op.keys), *(a[2] for a in op.aggregates))
        return dataclasses.replace(op, **{_child_field(op, child): pruned(child, needed)
                                          for child in op.children})
    needed = needed | _reads(*_expressions(op))
    return dataclasses.replace(op, **{_child_field(op, child): pruned(child, needed & frozenset(child.columns))
                                      for child in op.children})


def _child_field(op: Op, child: Op) -> str:
    """The dataclass field of `op` that holds `child`."""
    return next(f.name for f in dataclasses.fields(op) if getattr(op, f.name) is child)


def _expressions(op: Op) -> list[str | None]:
    """The SQL an operator evaluates over its children's columns (filters, keys, join conditions, orders)."""
    if isinstance(op, Filter):
        return [op.condition]
    if isinstance(op, Join):
        return [*op.left_keys, *op.right_keys, op.condition]
    if isinstance(op, Window):
        return [op.arg, *op.partition, *(sql for sql, _, _ in op.order)]
    if isinstance(op, Sort):
        return [sql for sql, _, _ in op.keys]
    return []


def _reads(*sqls: str | None) -> frozenset[str]:
    """The column names SQL expressions over a relation read (each a quoted identifier)."""
    return frozenset(c.name for sql in sqls if sql for c in sqlglot.parse_one(sql, read="duckdb").find_all(exp.Column))


# -- the secret part, one function per operator ----------------------------------------------------
def _filter(op: Filter, t, under, at_root):
    """A filter on the SPU; on a flag its owner computed (`owner_flags`), the flag is then dropped."""
    node, columns, provenance = place(op.child, t, under)
    if op.flag is None:
        return secret_ops.filter_node(node, op.condition), columns, provenance
    node = secret_ops.filter_node(node, op.condition, owner=next(iter(parties_of(op))))
    kept = [c for c in columns if c != op.flag]
    return secret_ops.project_node(node, [(c, quoted(c)) for c in kept], provenance), kept, provenance


def _project(op: Project, t, under, at_root):
    node, _, provenance = place(op.child, t, under)
    return secret_ops.project_node(node, op.items, provenance), list(op.columns), provenance


def _join(op: Join, t, under, at_root):
    left, left_columns, left_provenance = place(op.left, t, under)
    right, right_columns, right_provenance = place(op.right, t, under)
    side, key = unique_side(op, t.catalog) or (None, None)
    node = secret_ops.join_node(op.kind, left, right, op.left_keys, op.right_keys, op.condition, op.null_aware,
                                side, key.declared if key else None)
    if side is not None:
        many = join_checks(op, t.catalog)[1]  # unique above the join too, and a GROUP BY relies on it: checked
        many = many if many in t.relied else None
        if many is not None:
            node["declared_many"] = many.declared
        t.checked.update(k for k in (key, many) if k is not None and k.declared is not None)
        t.sort_joins.append((getattr(op, f"{side}_keys"), key.declared, many_side_only(op.kind, side),
                             many.declared if many else None))
    if op.kind in ("semi", "anti"):  # the right side only filters: its rows reach no group
        return node, left_columns, left_provenance
    t.repeated.update(left_provenance + right_provenance)  # a row of either side may pair with several
    return node, left_columns + right_columns, left_provenance + right_provenance


def _aggregate(op: Aggregate, t, under, at_root):
    node, _, provenance = place(op.child, t, under_aggregate=True)
    threshold = None
    if not under and t.k > 0:
        threshold, t.thresholded = t.k, True
    once = [p for p in provenance if p not in t.repeated] if threshold is not None else []
    node = secret_ops.aggregate_node(node, op.keys, op.aggregates, provenance, threshold, once)
    groups = rows_as_groups(op, t.catalog, frozenset(t.checked))  # a declared key: checked by a join on the SPU
    if groups is not None:
        node["per_row"] = {"null_group": groups.null_group}
        t.per_row.append(per_row_note(op, groups))
    return node, list(op.columns), [] if threshold is not None else provenance


def _distinct(op: Distinct, t, under, at_root):
    node, columns, provenance = place(op.child, t, under)
    return secret_ops.distinct_node(node, columns, provenance), columns, provenance


def _window(op: Window, t, under, at_root):
    node, columns, provenance = place(op.child, t, under)
    node = secret_ops.window_node(node, op.name, op.func, op.arg, op.partition, op.order, op.frame)
    return node, columns + [op.name], provenance


def _sort(op: Sort, t, under, at_root):
    node, columns, provenance = place(op.child, t, under)
    if at_root and sorted_by_finish(op, columns):
        return node, columns, provenance
    if at_root and provenance:  # the root's rows are opened: the provenance stays secret
        node, provenance = secret_ops.project_node(node, [(c, quoted(c)) for c in columns]), []
    return secret_ops.sort_node(node, op.keys, op.limit, op.offset), columns, provenance


def per_row_note(op: Aggregate, groups) -> str:
    """EXPLAIN's line per GROUP BY whose keys are unique in its input (`tree.rows_as_groups`)."""
    keys = ", ".join(sql for _, sql in op.keys)
    declared = ", ".join(sorted(k.declared for k in groups.relies))
    why = f"unique in its input ({declared}, checked by the joins beneath)" if declared else "unique in its input"
    nulls = "; the rows with a NULL key are one more group (n + 1 rows), aggregated without a sort" \
        if groups.null_group else ""
    return (f"GROUP BY {keys} per row: its keys are {why}, so each row is its own group and its aggregates are "
            f"per-row expressions{nulls}; saved: the group sort of n rows, its neighbour tests and segmented scans "
            "(TPC-H Q13 at SF 0.1, 15,000 rows: 39 rounds and 58 MB fewer, docs/benchmarks.md), nothing more opened")


def sorted_by_finish(op: Sort, columns) -> bool:
    """Whether the root's ORDER BY may be left to the issuer's Finish (`finish_sql` sorts the revealed rows
    by the same keys): no LIMIT or OFFSET (the SPU must not open rows beyond them) and every key a revealed
    column (its order follows from the values the issuer gets; a hidden key's order would tell more). The
    rows then open shuffled, so the issuer learns what the SPU's sort would have told it, and the SPU
    saves an oblivious sort of every row it holds, valid or not."""
    revealed = {quoted(c) for c in columns}
    return op.limit is None and not op.offset and all(sql in revealed for sql, _, _ in op.keys)


def _union(op: UnionAll, t, under, at_root):
    placed = [place(child, t, under) for child in op.inputs]
    names = list(op.columns)
    node = secret_ops.union_node([p[0] for p in placed], [p[1] for p in placed], [p[2] for p in placed], names)
    return node, names, [p for _, _, ps in placed for p in ps]


def _set(op: SetOp, t, under, at_root):
    left, left_columns, left_provenance = place(op.left, t, under)
    right, right_columns, right_provenance = place(op.right, t, under)
    node = secret_ops.set_node(op.kind, op.keep_all, left, right, right_columns, left_provenance, right_provenance)
    return node, left_columns, left_provenance


def _scan(op: Scan, t, under, at_root):
    return run_local(op, op.party, t, under)


def _subquery(op: Subquery, t, under, at_root):
    """A subquery used by the query around it: its rows never count toward that query's threshold; its
    own outermost aggregate is thresholded when it is revealed as a value (`op.thresholded`)."""
    node, columns, provenance = place(op.child, t, under_aggregate=not op.thresholded)
    if op.one_row:  # exactly one row: NULLs when the child has none
        return secret_ops.aggregate_node(node, (), [(c, "MAX", quoted(c), False) for c in columns], (), None), \
            columns, []
    if provenance:
        node = secret_ops.project_node(node, [(c, quoted(c)) for c in columns])
    return node, columns, []


TRANSLATE = {Filter: _filter, Project: _project, Join: _join, Aggregate: _aggregate, Distinct: _distinct,
             Window: _window, Sort: _sort, UnionAll: _union, SetOp: _set, Scan: _scan, Subquery: _subquery}


# -- single-party SQL, one function per operator ----------------------------------------------------
def local_sql(op: Op, thresholded: bool, k: int) -> str:
    """DuckDB SQL of a single-party subtree over `"party"."table"`; its columns named as the tree's. An
    aggregate of a protected owner that reaches the issuer keeps groups of >= k rows."""
    return LOCAL[type(op)](op, thresholded, k)


def _from(op: Op, thresholded: bool, k: int) -> str:
    return f"({local_sql(op, thresholded, k)}) AS \"_\""


def _scan_sql(op: Scan, thresholded, k):
    items = ", ".join(f"{quoted(n)} AS {quoted(c)}" for n, c in zip(op.names, op.columns))
    return f"SELECT {items} FROM {quoted(op.party)}.{quoted(op.table)} AS {quoted(op.alias)}"


def _filter_sql(op: Filter, thresholded, k):
    """The rows where the condition holds; on its owner's flag, without it (but for COUNT(*): no column)."""
    items = "*" if op.flag is None else ", ".join(quoted(c) for c in op.columns) or quoted(op.flag)
    return f"SELECT {items} FROM {_from(op.child, thresholded, k)} WHERE {op.condition}"


def _project_sql(op: Project, thresholded, k):
    items = ", ".join(f"{sql} AS {quoted(n)}" for n, sql in op.items)
    return f"SELECT {items} FROM {_from(op.child, thresholded, k)}"


def _join_sql(op: Join, thresholded, k):
    on = [f"({a}) = ({b})" for a, b in zip(op.left_keys, op.right_keys)] + ([op.condition] if op.condition else [])
    left, right = f"({local_sql(op.left, thresholded, k)}) AS \"_l\"", f"({local_sql(op.right, thresholded, k)}) AS \"_r\""
    if op.kind == "anti" and op.null_aware:
        return f"SELECT * FROM {left} WHERE ({op.left_keys[0]}) NOT IN (SELECT {op.right_keys[0]} FROM {right})"
    kind = {"inner": "JOIN", "left": "LEFT JOIN", "full": "FULL JOIN", "semi": "SEMI JOIN", "anti": "ANTI JOIN",
            "cross": "CROSS JOIN"}
    condition = f" ON {' AND '.join(on)}" if on and op.kind != "cross" else ""
    where = f" WHERE {op.condition}" if op.kind == "cross" and op.condition else ""
    return f"SELECT * FROM {left} {kind[op.kind]} {right}{condition}{where}"


def _aggregate_sql(op: Aggregate, thresholded, k):
    items = [f"{sql} AS {quoted(n)}" for n, sql in op.keys]
    for name, func, arg, distinct in op.aggregates:
        items.append(f"{func}({'DISTINCT ' if distinct else ''}{arg if arg is not None else '*'}) AS {quoted(name)}")
    group = f" GROUP BY {', '.join(sql for _, sql in op.keys)}" if op.keys else ""
    having = f" HAVING COUNT(*) >= {k}" if thresholded and k > 0 else ""
    return f"SELECT {', '.join(items)} FROM {_from(op.child, False, k)}{group}{having}"


def _distinct_sql(op: Distinct, thresholded, k):
    return f"SELECT DISTINCT * FROM {_from(op.child, thresholded, k)}"


def _window_sql(op: Window, thresholded, k):
    func = f"{op.func.upper()}({op.arg or ('*' if op.func == 'count' else '')})"
    over = []
    if op.partition:
        over.append(f"PARTITION BY {', '.join(op.partition)}")
    if op.order:
        over.append("ORDER BY " + ", ".join(_ordered(o) for o in op.order))
    if op.frame is not None:
        over.append(FRAME_SQL[op.frame])
    return f"SELECT *, {func} OVER ({' '.join(over)}) AS {quoted(op.name)} FROM {_from(op.child, thresholded, k)}"


FRAME_SQL = {"rows": "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW",
             "partition": "ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING"}


def _sort_sql(op: Sort, thresholded, k):
    order = f" ORDER BY {', '.join(_ordered(o) for o in op.keys)}" if op.keys else ""
    limit = f" LIMIT {op.limit}" if op.limit is not None else ""
    offset = f" OFFSET {op.offset}" if op.offset else ""
    return f"SELECT * FROM {_from(op.child, thresholded, k)}{order}{limit}{offset}"


def _union_sql(op: UnionAll, thresholded, k):
    return " UNION ALL ".join(f"SELECT * FROM {_from(c, thresholded, k)}" for c in op.inputs)


def _set_sql(op: SetOp, thresholded, k):
    written = f"{op.kind.upper()}{' ALL' if op.keep_all else ''}"
    return f"SELECT * FROM {_from(op.left, thresholded, k)} {written} SELECT * FROM {_from(op.right, thresholded, k)}"


def _ordered(key) -> str:
    sql, desc, nulls_first = key
    return f"{sql} {'DESC' if desc else 'ASC'} NULLS {'FIRST' if nulls_first else 'LAST'}"


def _subquery_sql(op: Subquery, thresholded, k):
    """The subquery at its owner (thresholded there only when its aggregate is revealed as a value);
    one row: MAX of each column."""
    inner = local_sql(op.child, thresholded and op.thresholded, k)
    if not op.one_row:
        return inner
    items = ", ".join(f"MAX({quoted(c)}) AS {quoted(c)}" for c in op.columns)
    return f"SELECT {items} FROM ({inner}) AS \"_\""


LOCAL = {Scan: _scan_sql, Filter: _filter_sql, Project: _project_sql, Join: _join_sql, Aggregate: _aggregate_sql,
         Distinct: _distinct_sql, Window: _window_sql, Sort: _sort_sql, UnionAll: _union_sql, SetOp: _set_sql,
         Subquery: _subquery_sql}


# -- masks, applied by each owner to its program input ------------------------------------------------
TEXT_MASKS = ("redact", "partial", "hash")  # their values are text whatever the column's type


def revealed_masks(tree: exp.Expression, masks: dict, issuer: str) -> dict[int, dict]:
    """Output index -> {ColumnRef: Mask} of the issuer's masked columns it reveals as is; NotSupportedError
    when such a column is also used otherwise (masked at its owner, it would change what it computes)."""
    relevant = {ref: mask for (ref, party), mask in masks.items() if party == issuer}
    if not relevant or not isinstance(tree, exp.Query):
        return {}
    root = build_scope(tree)
    revealed = {i: {ref: relevant[ref] for ref, _ in item_sources(root, i) if ref in relevant}
                for i in range(len(tree.named_selects))}
    refs = {ref for found in revealed.values() for ref in found}
    for scope in root.traverse():
        for column in scope.columns:
            used = [ref for ref, _ in column_sources(scope, column) if ref in refs]
            if used and not passed_as_is(column, scope):
                _refuse_masked_use(used[0], issuer, clause_of(column, scope))
        for ref in ordered_outputs(scope, refs):
            _refuse_masked_use(ref, issuer, "ORDER BY")
    return {i: found for i, found in revealed.items() if found}


def _refuse_masked_use(ref: ColumnRef, issuer: str, clause: str):
    raise NotSupportedError(
        f"{ref} is masked for {issuer} and revealed, so across parties its owner masks it before it is "
        f"shared; it may then only pass to the result as is, not be used in {clause}; reveal it from a "
        "query that does not compute with it")


def origins(op: Op) -> dict[str, set]:
    """Column -> the base columns it is as is (a scan's column, renamed by projections, carried through
    filters, joins, sorts and windows, any branch of a UNION ALL)."""
    if isinstance(op, Scan):
        return {column: {ColumnRef(op.party, op.table, name)} for column, name in zip(op.columns, op.names)}
    if isinstance(op, UnionAll):
        branches = [origins(child) for child in op.inputs]
        return {column: set().union(*(b.get(c, set()) for b, c in zip(branches, (i.columns[j] for i in op.inputs))))
                for j, column in enumerate(op.columns)}
    below = {}
    for child in op.children:
        below.update(origins(child))
    if isinstance(op, (Project, Aggregate)):
        items = op.items if isinstance(op, Project) else op.keys
        by_sql = {quoted(c): c for c in below}
        return {name: below[by_sql[sql]] for name, sql in items if sql in by_sql}
    return {c: below[c] for c in op.columns if c in below}


def input_masks(op: Op, party: str, masks: dict) -> dict[str, object]:
    """Column -> Mask the owner applies to its program input `op`; refused where one column carries
    values of columns masked differently (or masked and not)."""
    if not masks:
        return {}
    out = {}
    for column, refs in origins(op).items():
        found = {masks.get(ref) for ref in refs}
        if found == {None}:
            continue
        if len(found) > 1:
            raise NotSupportedError(f"column {column} of {party}'s input carries columns masked differently "
                                    f"({', '.join(str(r) for r in sorted(refs, key=str))}); reveal them apart")
        out[column] = found.pop()
    return out


def masked_outputs(root: Op, columns, revealed: dict[int, dict]) -> frozenset[str]:
    """The outputs masked to text; NotSupportedError when a masked column's way to an output is not one
    the owners' masks follow (so it would open unmasked)."""
    reached = origins(root)
    texts = set()
    for i, found in revealed.items():
        if not set(found) <= reached.get(columns[i], set()):
            raise NotSupportedError(f"output {i + 1} reveals {', '.join(map(str, found))}, masked for the issuer, "
                                    "by a way the secret program cannot mask; reveal it as a column of its table")
        if any(mask.method in TEXT_MASKS for mask in found.values()):
            texts.add(columns[i])
    return frozenset(texts)


# -- the issuer's Finish -----------------------------------------------------------------------------
def noisy_finish_sql(tree: exp.Expression, root: Op, noised, catalog: Catalog) -> str:
    """The issuer's Finish under DP: each output from the noisy columns (AVG as noisy SUM / noisy COUNT),
    then the query's ORDER BY, LIMIT and OFFSET over the noisy rows."""
    items = ", ".join(f"{sql} AS {quoted(name)}" for name, sql in noised.outputs)
    source = f"(SELECT {items} FROM result) AS result"
    sql = finish_sql(tree, noised.order or root, [name for name, _ in noised.outputs], catalog, source=source)
    order = noised.order
    limit = f" LIMIT {order.limit}" if order is not None and order.limit is not None else ""
    return sql + limit + (f" OFFSET {order.offset}" if order is not None and order.offset else "")


def finish_sql(tree: exp.Expression, root: Op, columns, catalog: Catalog, texts=frozenset(),
               source: str = "result") -> str:
    """DuckDB's result names and types (a CAST of each revealed column; `texts`, masked to text, stay
    text), then the query's ORDER BY."""
    described = subquery_columns(tree, catalog)
    names = list(tree.named_selects) if isinstance(tree, exp.Query) else list(columns)
    types = list(described.values()) if len(described) == len(columns) else [None] * len(columns)
    items = []
    for column, name, dtype in zip(columns, names, types):
        value = quoted(column) if dtype is None or column in texts else f"CAST({quoted(column)} AS {dtype})"
        items.append(f"{value} AS {quoted(name)}")
    order = f" ORDER BY {', '.join(_ordered(k) for k in root.keys)}" if isinstance(root, Sort) and root.keys else ""
    return f"SELECT {', '.join(items)} FROM {source}{order}"
