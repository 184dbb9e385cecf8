"""Physical plan: every operator placed on a device, every movement between parties explicit.

Steps run in order; each names the parties that take part. A relation produced by a step is held
in *pieces*: each holding party keeps its own columns for the relation's rows, all pieces in one
common row order (the alignment a PSI join produces).

- `RunLocal`   PYU(party): the party's pushed-down SQL over its own tables.
- `EquiJoin`   PSI between two parties (or PYU when one party holds both keys): join two
               relations on key columns; afterwards every holder's piece is re-aligned.
- `Compute`    PYU(party): SQL over the party's own piece (its projections, its aggregates).
- `Noise`      PYU(party): differential-privacy noise on its aggregates, before they leave it.
- `Mask`       PYU(party): masking of revealed columns, before they leave it.
- `Reveal`     party -> issuer: a computed result crosses to the issuer.
- `SecretQuery` SPU(owners): a secret program (planner/translate.py) over the owners' relations.
- `Finish`     PYU(issuer): combine what was revealed; DISTINCT / ORDER BY / LIMIT; or (mode "tables")
               run the query itself over whole tables its owners revealed (planner/gather.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Step:
    @property
    def parties(self) -> frozenset[str]:
        raise NotImplementedError


@dataclass(frozen=True)
class RunLocal(Step):
    party: str
    sql: str
    out: str

    @property
    def parties(self):
        return frozenset({self.party})


@dataclass(frozen=True)
class EquiJoin(Step):
    """Join the current relation `left` with the base relation `right` (held by `right_party`).

    The PSI runs between `left_party`'s base relation `left_base` (its own rows, so only its own
    multiplicities cross) and `right`. `left_party` then maps the matches onto the rows of `left`
    and sends each party in `keep` the index vector it needs; parties not in `keep` drop out.
    """

    left: str
    right: str
    left_party: str
    left_base: str
    left_keys: tuple[str, ...]
    right_party: str
    right_keys: tuple[str, ...]
    out: str
    left_holders: tuple[str, ...]  # parties holding a piece of `left`
    keep: tuple[str, ...]  # parties that keep a piece of `out`
    mode: str = "inner"  # inner | left (unmatched left rows kept, NULL on the right) | semi | anti
    null_aware: bool = False  # NOT IN: a NULL among the right keys keeps no row, a NULL left key is dropped
    psi: str = "ecdh"  # the PSI protocol between two parties: "ecdh" (X25519), "kkrt" (OT-based, KKRT16), or
    # "unbalanced" (ECDH with the large side's blinded set prepared once and reused; `large` holds that set)
    large: str = ""

    @property
    def parties(self):
        return frozenset({self.left_party, self.right_party, *self.keep})

    @property
    def device(self) -> str:
        if self.left_party == self.right_party:
            return f"PYU({self.left_party})"
        return f"PSI({self.left_party}, {self.right_party})"


@dataclass(frozen=True)
class Compute(Step):
    party: str
    rel: str
    sql: str  # over the view "piece" (the party's piece of `rel`, with a "__row" column)
    out: str

    @property
    def parties(self):
        return frozenset({self.party})


@dataclass(frozen=True)
class Reveal(Step):
    party: str
    name: str
    to: str

    @property
    def parties(self):
        return frozenset({self.party, self.to})


@dataclass(frozen=True)
class HEGroupBy(Step):
    """HEU: per-group SUM / COUNT / AVG of `value_party`'s values by `key_party`'s group keys.

    The key party computes its group table (`groups_sql`: its own outputs, "__n" rows, "__keep"
    from HAVING, "__code") and each row's group code (`codes_sql`); the value party its value
    columns (`values_sql`). They run `he_group_sum` (Paillier): the key party never sees a value,
    the value party sees only the number of groups. Both send their shares of the kept groups to
    the issuer, which opens the sums and assembles `out` with columns o0, o1, ...
    """

    rel: str
    key_party: str
    value_party: str
    issuer: str
    groups_sql: str
    codes_sql: str
    values_sql: str
    local: tuple[str, ...]  # outputs computed by the key party, in its group table
    sums: tuple[tuple[str, str, int], ...]  # (output, "sum" | "avg" | "count", value column)
    threshold: int  # the key party's distinct rows per group ("__n") must reach it
    key_bits: int
    out: str
    # The value party's provenance columns when its rows are protected: it tells the key party the
    # most joined rows any one of its rows appears in (m), and a group passes only with at least
    # threshold * m rows ("__rows"), so it has at least `threshold` distinct value-party rows.
    value_rows: tuple[str, ...] = ()

    @property
    def parties(self):
        return frozenset({self.key_party, self.value_party, self.issuer})

    @property
    def device(self) -> str:
        return f"HEU({self.value_party} -> {self.key_party})"


@dataclass(frozen=True)
class SpuStep(Step):
    """A step the SPU's compute parties run with the dealer (its subclasses have `compute` and `issuer`)."""

    @property
    def parties(self):
        return frozenset({*self.compute, self.issuer})

    @property
    def device(self) -> str:
        return f"SPU({', '.join(self.compute)})"


@dataclass(frozen=True)
class SecureStage(SpuStep):
    """SPU(compute parties): the rest of the query on secret shares, opened to the issuer only.

    Expressions are SQL over the piece columns ("alias.col"); `outputs` are (name, SQL) with the
    revealed ones at indices `reveal`; `order` lists (output index, descending, nulls first).
    """

    rel: str
    compute: tuple[str, ...]
    inputs: tuple[tuple[str, str], ...]  # (owner, piece column)
    filters: tuple[str, ...]
    aggregate: bool
    group_by: tuple[str, ...]
    having: str | None
    outputs: tuple[tuple[str, str], ...]
    reveal: tuple[int, ...]
    order: tuple[tuple[int, bool, bool], ...]
    limit: int | None
    offset: int
    threshold: int
    issuer: str
    out: str
    frac_bits: int = 16
    union: tuple[tuple[str, str], ...] = ()  # UNION ALL mode: (party, its branch relation), concatenated in order
    # Oblivious-join mode: ((party, its relation, its key columns), (peer, ...)); the stage first joins the
    # two relations on shares (no party learns which rows match), then runs on the joined rows.
    secret_join: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    kinds: tuple[str, ...] = ()  # the SPU kind DuckDB's type of each revealed output maps to (empty: unchecked)
    # The group threshold counts, per protected owner (every party but the issuer), its distinct rows:
    # the provenance columns (inputs) whose distinct values per group must reach `threshold`, and
    # the UNION ALL branches whose rows per group must reach it. Both empty: rows are counted.
    distinct_rows: tuple[str, ...] = ()
    branch_rows: tuple[int, ...] = ()
    # Published magnitude classes of its input columns ((piece column, M): every |value| < 2^M) and the
    # row bound the planner proved its ranges with (planner/magnitudes.py); () and 0: none published.
    bounds: tuple[tuple[str, int], ...] = ()
    row_bound: int = 0
    # The GROUP BY without a sort (`spu.one_hot_group`): G, the public bound on the groups of the key
    # owner's plain integer keys (their published classes), where the cost model chose it
    # (`planner.group_path`); 0: the oblivious sort.
    one_hot_groups: int = 0
    # The provenance columns (of `distinct_rows`) whose owner's rows appear at most once in the stage's rows,
    # proved at plan time (`place_threshold.rows_once`: every other join input unique on its join keys, by
    # shape or by a declared key), and checked by that owner on its joined piece before anything is shared:
    # their distinct rows per group are their weighted rows, a sum (no sort).
    rows_once: tuple[str, ...] = ()


@dataclass(frozen=True)
class SecretQuery(SpuStep):
    """SPU(compute): a secret program over the owners' relations; its valid rows opened to the issuer only."""

    compute: tuple[str, ...]  # the SPU compute parties (the inputs' owners; at least 2)
    inputs: tuple[tuple[str, str], ...]  # per program input: (owner party, the RunLocal relation it shares)
    program: str  # canonical JSON (the interface in executors/spu/program.py)
    issuer: str
    out: str
    frac_bits: int = 16
    row_bound: int = 0  # the rows its inputs' classes were proven with (planner/magnitudes.py); 0: at run time


@dataclass(frozen=True)
class EnclaveStage(Step):
    """TEEU: the parties seal their columns to an attested enclave, which groups / sorts them with
    data-independent access patterns and seals the result to the issuer."""

    rel: str
    inputs: tuple[tuple[str, str, str, str], ...]  # (party, piece column, enclave column, kind)
    program: str  # the EnclaveProgram, as canonical JSON
    outputs: tuple[tuple[str, str, str], ...]  # (output, enclave result column, kind)
    issuer: str
    out: str
    simulated: bool = True
    measurements: tuple[str, ...] = ()  # the allowlist the parties will check the quote against
    union: tuple[tuple[str, str], ...] = ()  # a UNION ALL's branches (party, RunLocal relation); `rel` unused

    @property
    def inputs_by_party(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p for p, _, _, _ in self.inputs))

    @property
    def parties(self):
        return frozenset({*self.inputs_by_party, self.issuer})

    @property
    def device(self) -> str:
        return "TEEU(enclave, SIMULATION)" if self.simulated else "TEEU(enclave)"


@dataclass(frozen=True)
class Noise(Step):
    """PYU(party): differential-privacy noise on its aggregate part before it is revealed."""

    party: str
    name: str
    release: object  # sqlsecure.policy.privacy.Release

    @property
    def parties(self):
        return frozenset({self.party})


@dataclass(frozen=True)
class Mask(Step):
    """PYU(party): mask revealed columns before they leave the owner."""

    party: str
    name: str
    columns: tuple[tuple[str, object], ...]  # (column, sqlsecure.policy.masking.Mask)

    @property
    def parties(self):
        return frozenset({self.party})


@dataclass(frozen=True)
class Finish(Step):
    issuer: str
    parts: tuple[tuple[str, str], ...]  # (party, name) of each revealed part, in column order
    mode: str  # "rows": parts are aligned columns; "single": parts are 0/1-row aggregates;
    # "tables": each part is a whole table, a view named as the part (`sql` reads them by name)
    sql: str | None  # over the view "result"; None = the combined parts as they are

    @property
    def parties(self):
        return frozenset({self.issuer})


@dataclass(frozen=True)
class PhysicalPlan:
    issuer: str
    steps: tuple[Step, ...]
    leakage: tuple[tuple[str, str], ...] = ()  # (party, what it learns)
    notes: tuple[str, ...] = ()
    min_group_size: int = 0  # applied to revealed aggregates (0: not applied)
    counted: tuple[str, ...] = ()  # the owners whose distinct rows per group it counts (empty: rows)
    uses: tuple[str, ...] = field(default=(), compare=False)  # policy checks passed, for EXPLAIN
    epsilon: float = 0.0  # differential privacy charged to the issuer before release
    delta: float = 0.0

    @property
    def parties(self) -> frozenset[str]:
        out: set[str] = {self.issuer}
        for step in self.steps:
            out |= step.parties
        return frozenset(out)
