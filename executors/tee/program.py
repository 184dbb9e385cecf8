"""What the host asks the enclave to compute, and the session it is computed in.

`EnclaveProgram` is a small relational program over named int64 / float64 columns that several
parties send sealed (their rows aligned: row i of every party describes the same joined row; or, with
`union`, each party's rows one part of a UNION ALL, stacked in the parts' order first: `union_rows`):

    grouped   (group_keys or aggregates)  GROUP BY group_keys with aggregates [(kind, column, name)],
              kinds count / sum / avg / min / max (column None for COUNT(*)); groups of fewer than
              min_group_size rows (with `distinct_rows`: distinct values of each of those
              provenance columns) are dropped; no keys = one group over all rows (with min_group_size
              0, no threshold: always one row, as SQL's, COUNT 0 and the others NULL over no rows). Output columns:
              the group keys, then the aggregates by name. Default order: by the group keys.
              COUNT(DISTINCT x) is the kind `count_distinct` (one more oblivious sort on keys and x).
              `having` (DuckDB SQL over the group columns `having_typed`) keeps only the groups where
              it is TRUE; `projected` [(name, sql, kind)] adds outputs computed per group over the group
              columns `projected_typed` (`COUNT(*) > 2`, `SUM(x) / COUNT(*)`), each with its NULL flag,
              after the group keys and aggregates; `hidden` group keys (grouped by, not selected) and aggregates (serving HAVING /
              ORDER BY) are never output: the issuer's sealed result holds only what it selected.
              With `distinct` (SELECT DISTINCT over aggregates) a second oblivious group-by on (not
              kept, every output) keeps one row per distinct output row.
    plain     the input columns (`select`, default all, in the parties' order), no aggregation; each
              of `windows` (ROW_NUMBER, RANK, DENSE_RANK, COUNT / SUM / AVG / MIN / MAX with the default
              frame, LAG / LEAD by a constant) adds a column, after one oblivious sort of every row by
              (not kept, PARTITION BY keys, ORDER BY keys) and segmented scans (`window_function`).

then ORDER BY `order` [(column, descending)] over output (or hidden) columns (plain programs may also
sort on any input column), skip `offset` rows and LIMIT `limit`. Everything runs through the oblivious operators. `where` (a
boolean column, typically computed) keeps only the rows where it is TRUE (not FALSE, not NULL), as SQL's
WHERE: a grouped program groups on "not kept" before its keys and drops those groups, a plain one
sorts the kept rows first and cuts the rest, so which rows passed is never an access pattern.

Before that, `computed` [(name, sql, kind)] adds columns (the WHERE's first; the others only on the rows
it keeps, NULL elsewhere, so an expression that raises — a dialect's guard — sees only the rows that reach
it, as in SQL): DuckDB SQL over the inputs `typed`
[(column, kind, SQL type)] (`expressions`), each with a `<name>#null` flag, as every input has (a
text's limbs `<c>#k` share `<c>#null`). A column with such a flag is NULL-aware everywhere: the flag is a group / sort key of its own (the planner lists it), COUNT
skips NULLs, SUM / AVG / MIN / MAX ignore them and are NULL (an `<aggregate>#null` output) for a
group without values.

Text has as many limbs as its owner's width class (public, agreed as on the SPU), which the plan does
not know: the program names a text column `<c>#*` (a group key, selected or ORDER BY column, or the
argument of MIN / MAX, whose output `<name>#*` has the argument's limbs), and the enclave expands it to
the limbs `<c>#0`, `<c>#1`, .. the party sent.

`SessionSpec` binds a query: its id, the program, the input parties (their column order), the
recipient and the recipient's fresh X25519 key. Its digest enters every stream's key derivation,
so a party's sealed inputs open only in the session (program, recipient) the party saw.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from sqlsecure.errors import DataError, ProgrammingError, ProtocolError
from sqlsecure.executors.tee.expressions import (ALL_LIMBS, NULL_FLAG, evaluate_expressions, limb_names, null_flag,
                                                 sql_column)
from sqlsecure.executors.tee.oblivious import (
    AGGREGATE_KINDS, DISTINCT_KINDS, WINDOW_KINDS, AccessTrace, bitonic_sort, group_by, group_starts,
    order_and_limit, sortable, unsortable, window_function,
)
from sqlsecure.executors.tee.wire import ENCLAVE, HOST

SIMULATED_METADATA_KEY = b"sqlsecure.enclave.simulated"
BRANCH = "__branch"  # a UNION ALL's column: the branch of each row (its rows per branch are public)


@dataclass(frozen=True)
class Aggregate:
    kind: str
    column: str | None
    name: str

    @property
    def output(self) -> str:
        """Its output column: `<name>#*` (limbs) for MIN / MAX of text, else its name."""
        return f"{self.name}{ALL_LIMBS}" if self.text else self.name

    @property
    def counting(self) -> bool:
        """COUNT and COUNT(DISTINCT): never NULL, so without a `#null` flag."""
        return self.kind in ("count", "count_distinct")

    @property
    def text(self) -> bool:
        return self.column is not None and self.column.endswith(ALL_LIMBS) and self.kind in ("min", "max")

    @classmethod
    def of(cls, spec) -> "Aggregate":
        if isinstance(spec, Aggregate):
            return spec
        if not isinstance(spec, (tuple, list)) or len(spec) not in (2, 3):
            raise ProgrammingError(f"an enclave aggregate is (kind, column) or (kind, column, name), got {spec!r}")
        kind, column = str(spec[0]).lower(), spec[1]
        if kind not in AGGREGATE_KINDS:
            raise ProgrammingError(f"unknown aggregate {spec[0]!r}; the enclave computes {', '.join(AGGREGATE_KINDS)}")
        if column is None and kind != "count":
            raise ProgrammingError(f"{kind.upper()} needs a column")
        name = spec[2] if len(spec) == 3 else f"{kind}({'*' if column is None else column})"
        return cls(kind, column, str(name))


@dataclass(frozen=True)
class Window:
    """A window function `kind(column) OVER (PARTITION BY partition ORDER BY order)` with the default
    frame, output as `name` (LAG / LEAD: `offset` rows back / ahead, NULL outside the partition)."""

    kind: str
    column: str | None
    name: str
    partition: tuple[str, ...] = ()
    order: tuple[tuple[str, bool], ...] = ()
    offset: int = 1

    @property
    def text(self) -> bool:
        """MIN / MAX / LAG / LEAD of text: its limbs, output `<name>#*`."""
        return self.column is not None and self.column.endswith(ALL_LIMBS) and self.kind in ("min", "max", "lag",
                                                                                               "lead")

    @classmethod
    def of(cls, spec) -> "Window":
        if isinstance(spec, Window):
            return spec
        if not isinstance(spec, (tuple, list)) or len(spec) != 6:
            raise ProgrammingError(f"an enclave window is (kind, column, name, partition, order, offset), got {spec!r}")
        kind, column, name, partition, order, offset = spec
        if kind not in WINDOW_KINDS:
            raise ProgrammingError(f"unknown window function {kind!r}; the enclave computes {', '.join(WINDOW_KINDS)}")
        if column is None and kind not in ("row_number", "rank", "dense_rank", "count"):
            raise ProgrammingError(f"{kind.upper()} OVER needs a column")
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise ProgrammingError(f"a window's offset must be a non-negative integer, got {offset!r}")
        return cls(str(kind), column, str(name), _names(partition, "partition"),
                   tuple((str(c), bool(d)) for c, d in order), offset)

    def to_json(self) -> list:
        return [self.kind, self.column, self.name, list(self.partition), [[c, d] for c, d in self.order],
                self.offset]


def _triple(item, what: str) -> tuple[str, str, str]:
    if not isinstance(item, (tuple, list)) or len(item) != 3:
        raise ProgrammingError(f"a {what} is (name, text, kind), got {item!r}")
    return tuple(str(v) for v in item)


def _branch(value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProgrammingError(f"a UNION ALL branch is a non-negative integer, got {value!r}")
    return value


def _names(values, what: str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise ProgrammingError(f"{what} must be a list of column names, not the string {values!r}")
    return tuple(str(v) for v in values)


@dataclass(frozen=True)
class EnclaveProgram:
    """GROUP BY / aggregates / ORDER BY / LIMIT over the parties' aligned columns (see module doc)."""

    group_keys: tuple[str, ...] = ()
    aggregates: tuple[Aggregate, ...] = ()
    order: tuple[tuple[str, bool], ...] = ()
    limit: int | None = None
    min_group_size: int = 1
    select: tuple[str, ...] | None = None
    distinct_rows: tuple[str, ...] = ()  # provenance columns: groups need min_group_size distinct values of each
    computed: tuple[tuple[str, str, str], ...] = ()  # (name, DuckDB SQL, kind): scalar expressions per row
    typed: tuple[tuple[str, str, str], ...] = ()  # (input column, kind, SQL type): what `computed` reads
    where: str | None = None  # a boolean column (with its NULL flag): only rows where it is TRUE count
    having: str | None = None  # DuckDB SQL over the group keys and aggregates: only groups where it is TRUE
    having_typed: tuple[tuple[str, str, str], ...] = ()  # (group column, kind, SQL type): what `having` reads
    hidden: tuple[str, ...] = ()  # group keys and aggregates the query does not select: never output
    offset: int = 0  # rows skipped after ORDER BY, before LIMIT
    distinct: bool = False  # SELECT DISTINCT over a grouped program: one row per distinct output row
    windows: tuple[Window, ...] = ()  # window functions of a plain program, each a column of its own
    projected: tuple[tuple[str, str, str], ...] = ()  # (name, DuckDB SQL, kind): outputs computed per group
    projected_typed: tuple[tuple[str, str, str], ...] = ()  # (group column, kind, SQL type): what `projected` reads
    union: tuple[str, ...] = ()  # UNION ALL: each part's column prefix, stacked in this order (`union_rows`)
    branch_rows: tuple[int, ...] = ()  # UNION ALL branches each kept group needs min_group_size rows of

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "union", _names(self.union, "union"))
        set_(self, "branch_rows", tuple(_branch(b) for b in self.branch_rows))
        if self.branch_rows and not self.union:
            raise ProgrammingError("branch_rows counts the branches of a UNION ALL: the program has no `union`")
        set_(self, "computed", tuple(_triple(c, "computed column") for c in self.computed))
        set_(self, "typed", tuple(_triple(t, "typed input") for t in self.typed))
        set_(self, "having_typed", tuple(_triple(t, "typed group column") for t in self.having_typed))
        set_(self, "hidden", _names(self.hidden, "hidden"))
        set_(self, "projected", tuple(_triple(c, "projected column") for c in self.projected))
        set_(self, "projected_typed", tuple(_triple(t, "typed group column") for t in self.projected_typed))
        set_(self, "group_keys", _names(self.group_keys, "group_keys"))
        set_(self, "aggregates", tuple(Aggregate.of(a) for a in self.aggregates))
        order = []
        for item in self.order:
            if isinstance(item, str):
                item = (item, False)
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise ProgrammingError(f"an ORDER BY item is (column, descending), got {item!r}")
            order.append((str(item[0]), bool(item[1])))
        set_(self, "order", tuple(order))
        if self.select is not None:
            set_(self, "select", _names(self.select, "select"))
        if self.where is not None:
            set_(self, "where", str(self.where))
        set_(self, "distinct_rows", _names(self.distinct_rows, "distinct_rows"))
        set_(self, "windows", tuple(Window.of(w) for w in self.windows))
        if self.windows and self.grouped:
            raise ProgrammingError("window functions need a plain program (no GROUP BY or aggregates)")
        if self.distinct and not self.grouped:
            raise ProgrammingError("`distinct` applies to a grouped program; a plain SELECT DISTINCT groups by its "
                                   "outputs")
        if self.limit is not None and (not isinstance(self.limit, int) or isinstance(self.limit, bool)
                                       or self.limit < 0):
            raise ProgrammingError(f"LIMIT must be a non-negative integer, got {self.limit!r}")
        if not isinstance(self.offset, int) or isinstance(self.offset, bool) or self.offset < 0:
            raise ProgrammingError(f"OFFSET must be a non-negative integer, got {self.offset!r}")
        if (self.having is not None or self.hidden or self.projected) and not self.grouped:
            raise ProgrammingError("HAVING, hidden aggregates and projected outputs need a grouped program")
        if not isinstance(self.min_group_size, int) or isinstance(self.min_group_size, bool) \
                or self.min_group_size < 0:
            raise ProgrammingError(f"min_group_size must be a non-negative integer, got {self.min_group_size!r}")
        if self.grouped and self.select is not None:
            raise ProgrammingError("`select` applies to programs without aggregation; a grouped program "
                                   "outputs its group keys and aggregates")
        names = self.output_names() if self.grouped else None
        if names is not None:
            if len(set(names)) != len(names):
                raise ProgrammingError(f"duplicate output column names in the enclave program: {list(names)}")
            unknown = set(self.hidden) - {a.name for a in self.aggregates} - set(self.group_keys)
            if unknown:
                raise ProgrammingError(f"hidden columns {sorted(unknown)} are not group keys or aggregates of the "
                                       "program")
            for column, _ in self.order:
                if column not in (names if self.distinct else self.group_columns() + self._projected_names()):
                    raise ProgrammingError(f"ORDER BY {column!r} is not an output of the grouped program "
                                           f"(outputs: {list(names)})")

    @property
    def grouped(self) -> bool:
        return bool(self.group_keys or self.aggregates)

    def group_columns(self, *, hidden: bool = True) -> tuple[str, ...]:
        """A grouped program's columns: the keys, the aggregates (with `hidden`: also those never output),
        then the NULL flags of the aggregates that may be NULL (over a column with a flag)."""
        shown = [a for a in self.aggregates if hidden or a.name not in self.hidden]
        keys = tuple(k for k in self.group_keys if hidden or k not in self.hidden)
        return keys + tuple(a.output for a in shown) + tuple(
            f"{a.name}{NULL_FLAG}" for a in shown if not a.counting and a.column is not None)

    def _projected_names(self) -> tuple[str, ...]:
        return tuple(c for name, _, _ in self.projected for c in (name, f"{name}{NULL_FLAG}"))

    def output_names(self, inputs: list[str] | None = None) -> tuple[str, ...]:
        if self.grouped:
            return self.group_columns(hidden=False) + self._projected_names()
        if self.select is not None:
            return self.select
        if inputs is None:
            raise ProgrammingError("a plain program's outputs depend on its inputs")
        return tuple(inputs)

    def input_columns(self) -> set[str]:
        used = set(self.group_keys) | {a.column for a in self.aggregates if a.column is not None}
        used |= set(self.distinct_rows) | ({self.where} if self.where is not None else set())
        if not self.grouped:
            used |= set(self.select or ()) | {c for c, _ in self.order}
        for w in self.windows:
            used |= set(w.partition) | {c for c, _ in w.order} | ({w.column} if w.column is not None else set())
        made = {name for name, _, _ in self.computed} | {w.name for w in self.windows}
        made |= {f"{name}{NULL_FLAG}" for name in made} | {f"{w.name}#0" for w in self.windows}
        used |= {BRANCH} if self.branch_rows else set()
        used = {f"{c[:-len(ALL_LIMBS)]}#0" if c.endswith(ALL_LIMBS) else c for c in used}
        return (used - made) | {f"{c}#0" if kind == "text" else c for c, kind, _ in self.typed}

    def to_json(self) -> dict:
        return {"group_keys": list(self.group_keys),
                "aggregates": [[a.kind, a.column, a.name] for a in self.aggregates],
                "order": [[c, d] for c, d in self.order], "limit": self.limit,
                "min_group_size": self.min_group_size,
                "select": None if self.select is None else list(self.select),
                "distinct_rows": list(self.distinct_rows),
                "computed": [list(c) for c in self.computed], "typed": [list(t) for t in self.typed],
                "where": self.where, "having": self.having,
                "having_typed": [list(t) for t in self.having_typed], "hidden": list(self.hidden),
                "projected": [list(c) for c in self.projected],
                "projected_typed": [list(t) for t in self.projected_typed],
                "offset": self.offset, "distinct": self.distinct, "windows": [w.to_json() for w in self.windows],
                **({"union": list(self.union), "branch_rows": list(self.branch_rows)} if self.union else {})}

    @classmethod
    def from_json(cls, obj: dict) -> "EnclaveProgram":
        try:
            return cls(group_keys=obj["group_keys"], aggregates=[tuple(a) for a in obj["aggregates"]],
                       order=[tuple(o) for o in obj["order"]], limit=obj["limit"],
                       min_group_size=obj["min_group_size"], select=obj["select"],
                       distinct_rows=obj.get("distinct_rows", ()), computed=obj.get("computed", ()),
                       typed=obj.get("typed", ()), where=obj.get("where"), having=obj.get("having"),
                       having_typed=obj.get("having_typed", ()), hidden=obj.get("hidden", ()),
                       projected=obj.get("projected", ()), projected_typed=obj.get("projected_typed", ()),
                       offset=obj.get("offset", 0), distinct=bool(obj.get("distinct", False)),
                       windows=[tuple(w) for w in obj.get("windows", ())], union=obj.get("union", ()),
                       branch_rows=obj.get("branch_rows", ()))
        except (KeyError, TypeError) as exc:
            raise ProtocolError(f"malformed enclave program: {exc!r}") from None

    def to_bytes(self) -> bytes:
        return _canonical(self.to_json())

    @classmethod
    def from_bytes(cls, data: bytes) -> "EnclaveProgram":
        return cls.from_json(_load(data, "enclave program"))


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _load(data: bytes, what: str):
    try:
        return json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"malformed {what}: {exc}") from None


RESERVED_NAMES = (ENCLAVE, HOST)


@dataclass(frozen=True)
class SessionSpec:
    """One query's public description; every party checks it before sealing (see module doc)."""

    query_id: str
    program: EnclaveProgram
    parties: tuple[str, ...]
    recipient: str
    recipient_public_key: bytes = field(repr=False)

    def __post_init__(self):
        object.__setattr__(self, "parties", _names(self.parties, "parties"))
        if not self.query_id or len(self.query_id.encode()) > 200:
            raise ProgrammingError("a query id must be 1..200 bytes")
        if not self.parties or len(set(self.parties)) != len(self.parties):
            raise ProgrammingError(f"an enclave session needs distinct input parties, got {list(self.parties)}")
        for name in (*self.parties, self.recipient):
            if name in RESERVED_NAMES or not name:
                raise ProgrammingError(f"{name!r} cannot name a party of an enclave session (reserved)")
        if len(bytes(self.recipient_public_key)) != 32:
            raise ProgrammingError("the recipient's public key must be a raw 32-byte X25519 key")

    def to_bytes(self) -> bytes:
        return _canonical({"query_id": self.query_id, "program": self.program.to_json(),
                           "parties": list(self.parties), "recipient": self.recipient,
                           "recipient_public_key": bytes(self.recipient_public_key).hex()})

    @classmethod
    def from_bytes(cls, data: bytes) -> "SessionSpec":
        obj = _load(data, "session description")
        try:
            return cls(obj["query_id"], EnclaveProgram.from_json(obj["program"]), tuple(obj["parties"]),
                       obj["recipient"], bytes.fromhex(obj["recipient_public_key"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed session description: {exc!r}") from None

    def digest(self) -> bytes:
        return hashlib.sha256(b"sqlsecure/enclave/session/v1\0" + self.to_bytes()).digest()


# --- evaluation -----------------------------------------------------------------------------------------

def column_array(table: pa.Table, name: str, party: str) -> np.ndarray:
    """A non-null int64 / float64 column as numpy (other integer widths and floats are widened)."""
    column = table.column(name)
    if column.null_count:
        raise DataError(f"column {name!r} from {party!r} has NULLs; the enclave takes non-null int64/float64 "
                        "columns (encode NULL as a separate flag column)")
    dtype = column.type
    if pa.types.is_integer(dtype) or pa.types.is_boolean(dtype):
        return column.to_numpy().astype(np.int64, copy=False)
    if pa.types.is_floating(dtype):
        return column.to_numpy().astype(np.float64, copy=False)
    raise DataError(f"column {name!r} from {party!r} is {dtype}; the enclave takes int64 and float64 columns")


def evaluate(program: EnclaveProgram, columns: dict[str, np.ndarray], *,
             trace: AccessTrace | None = None) -> pa.Table:
    """Run `program` over aligned columns (name -> numpy vector, in the parties' order); a UNION ALL's
    parts are stacked first (`union_rows`)."""
    if program.union:
        columns = union_rows(program.union, columns)
    names = list(columns)
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise DataError(f"the parties' inputs are not aligned: row counts {sorted(lengths)}")
    missing = sorted(program.input_columns() - set(names))
    if missing:
        raise ProgrammingError(f"the enclave program reads columns no party sent: {missing} (sent: {names})")
    first = [c for c in program.computed if c[0] == program.where]  # the WHERE first: it decides which rows
    if first:                                                       # the other expressions reach
        columns = {**columns, **evaluate_expressions(first, program.typed, columns)}
    kept = None if program.where is None else _passing(columns, program.where)
    rest = [c for c in program.computed if c[0] != program.where]
    if rest:
        columns = {**columns, **evaluate_expressions(rest, program.typed, columns, reach=kept)}
    names = list(columns)
    if program.windows:
        columns, kept = _evaluate_windows(program, columns, kept, trace)
        names = list(columns)
    if program.grouped:
        return _evaluate_grouped(program, columns, trace, kept)
    out_names = [c for ref in program.output_names(names) for c in limb_names(ref, names)]
    outputs = [columns[c] for c in out_names]
    order = _expanded_order(program.order, names)
    extra = [c for c, _ in order if c not in out_names]
    carried = outputs + [columns[c] for c in extra]
    order = [(columns[c], d) for c, d in order]
    result = order_and_limit(carried, order, keep=kept, limit=program.limit, offset=program.offset, trace=trace) \
        if (order or program.limit is not None or program.offset or kept is not None) else carried
    return pa.table({name: result[i] for i, name in enumerate(out_names)})


def union_rows(parts: tuple[str, ...], columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A UNION ALL's rows: each part (one party's branches, stacked by the party) sends `<prefix><column>`
    for the same columns (its `BRANCH` column too, so even a part without other columns has its rows),
    and each column is the parts' vectors one after the other, in `parts`' order. A text's limbs beyond
    a part's width class are zeros (its value's padding: the same text, the same order)."""
    by_part: dict[str, dict[str, np.ndarray]] = {p: {} for p in parts}
    for name, values in columns.items():
        part = next((p for p in parts if name.startswith(p)), None)
        if part is None:
            raise ProgrammingError(f"column {name!r} belongs to no part of the UNION ALL ({list(parts)})")
        by_part[part][name[len(part):]] = values
    rows = {}
    for part, sent in by_part.items():
        if BRANCH not in sent:
            raise ProgrammingError(f"part {part!r} of the UNION ALL sent no {BRANCH!r} column")
        rows[part] = len(sent[BRANCH])
        if any(len(v) != rows[part] for v in sent.values()):
            raise DataError(f"part {part!r} of the UNION ALL sent columns of different lengths")
    out = {}
    for name in dict.fromkeys(n for sent in by_part.values() for n in sent):
        pieces = []
        for part, sent in by_part.items():
            if name in sent:
                pieces.append(sent[name])
            elif sql_column(name) != name and name.rpartition("#")[2].isdigit() and f"{sql_column(name)}#0" in sent:
                pieces.append(np.zeros(rows[part], np.int64))  # a limb beyond this part's width class
            else:
                raise ProgrammingError(f"part {part!r} of the UNION ALL did not send {name!r}")
        out[name] = np.concatenate(pieces)
    return out


def _evaluate_windows(program: EnclaveProgram, columns: dict[str, np.ndarray], kept: np.ndarray | None,
                      trace) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Each window function as a new column: every row (and `kept`, the WHERE) sorted obliviously by
    (not kept, partition keys, ORDER BY keys), so rows a WHERE drops form partitions of their own, then
    `window_function`'s scans. The rows stay in that order; the final ORDER BY sorts them again."""
    n = len(next(iter(columns.values()))) if columns else 0
    passing = np.ones(n, bool) if kept is None else np.asarray(kept, bool)
    for w in program.windows:
        partition = [c for ref in w.partition for c in limb_names(ref, columns)]
        order = _expanded_order(w.order, columns)
        keys = [(~passing).astype(np.int64), *(columns[c] for c in partition), *(columns[c] for c, _ in order)]
        names = list(columns)
        sorted_keys, moved = bitonic_sort(keys, [columns[c] for c in names] + [passing],
                                          descending=[False] * (1 + len(partition)) + [d for _, d in order],
                                          trace=trace)
        columns, passing = dict(zip(names, moved[:-1])), moved[-1]
        limbs = [] if w.column is None else [columns[c] for c in limb_names(w.column, columns)]
        flag = None if w.column is None else columns.get(null_flag(w.column))
        values, nulls = window_function(w.kind, limbs, flag, group_starts(sorted_keys[:1 + len(partition)]),
                                        group_starts(sorted_keys), w.offset, trace, w.name)
        columns |= {f"{w.name}#{k}": v for k, v in enumerate(values)} if w.text else {w.name: values[0]}
        if nulls is not None:
            columns[f"{w.name}{NULL_FLAG}"] = nulls
    return columns, None if kept is None else passing


def _passing(columns: dict[str, np.ndarray], where: str) -> np.ndarray:
    """The rows whose `where` column is TRUE (SQL's WHERE: FALSE and NULL rows do not count)."""
    passing = columns[where] == 1
    flag = columns.get(null_flag(where))
    return passing if flag is None else passing & (flag == 0)


def _expanded_order(order, names) -> list[tuple[str, bool]]:
    """ORDER BY (column, descending) pairs with each text `<c>#*` as its limbs, most significant first."""
    return [(c, d) for ref, d in order for c in limb_names(ref, names)]


def _aggregate_inputs(program: EnclaveProgram, columns: dict[str, np.ndarray]):
    """group_by's [(kind, values)] and their names for the program's aggregates, NULL-aware where a column
    has a NULL flag: COUNT sums the present rows, MIN / MAX see a NULL as the other extreme of the `sortable`
    order (so a NaN stays DuckDB's greatest float), AVG is SUM over the present rows. A text MIN / MAX
    aggregates its limbs (a list). Per aggregate also (its value's index, its present-row count's index or
    None, the dtypes of its value's limbs)."""
    specs, names, places = [], [], []
    for a in program.aggregates:
        flag = None if a.column is None else columns.get(null_flag(a.column))
        limbs = [] if a.column is None else [columns[c] for c in limb_names(a.column, columns)]
        dtypes = [limb.dtype for limb in limbs]
        places.append((len(specs), None if flag is None or a.counting else len(specs) + 1, dtypes))
        names.append(a.name)
        values = None if a.column is None else limbs if a.text else limbs[0]
        if a.kind == "count_distinct":
            specs.append((a.kind, (flag, limbs)))
        elif a.kind in DISTINCT_KINDS:  # SUM / AVG(DISTINCT x): NULL for a group without values, as SUM
            specs.append((a.kind, (flag, limbs[0])))
            if flag is not None:
                specs.append(("sum", 1 - flag))
                names.append(f"{a.name} (rows)")
        elif flag is None:
            specs.append((a.kind, values))
        elif a.kind == "count":
            specs.append(("sum", 1 - flag))
        else:
            if a.kind in ("min", "max"):
                extreme = np.iinfo(np.int64).max if a.kind == "min" else np.iinfo(np.int64).min
                keys = [np.where(flag == 1, extreme, sortable(limb)) for limb in limbs]
                values = keys if a.text else keys[0]
            specs += [("sum" if a.kind == "avg" else a.kind, values), ("sum", 1 - flag)]
            names.append(f"{a.name} (rows)")
    return specs, names, places


def _aggregate_outputs(program: EnclaveProgram, results: list[np.ndarray], places) -> dict[str, np.ndarray]:
    """Each aggregate's value (a text's limbs `<name>#k`), and `<name>#null` for those that are NULL on a
    group without values."""
    out = {}
    for a, (value, count, dtypes) in zip(program.aggregates, places):
        limbs = results[value] if a.text else [results[value]]
        if count is not None and a.kind in ("min", "max"):  # back from the `sortable` keys; a NULL's value is 0
            limbs = [np.where(results[count] == 0, 0, unsortable(limb, dtype)) for limb, dtype in zip(limbs, dtypes)]
        out.update({f"{a.name}#{k}": limb for k, limb in enumerate(limbs)} if a.text else {a.name: limbs[0]})
        if count is not None:
            present = results[count]
            if a.kind == "avg":
                out[a.name] = results[value].astype(np.float64) / np.maximum(present, 1)
            out[f"{a.name}{NULL_FLAG}"] = (present == 0).astype(np.int64)
    return out


def _evaluate_grouped(program: EnclaveProgram, columns: dict[str, np.ndarray], trace,
                      kept: np.ndarray | None = None) -> pa.Table:
    """GROUP BY the keys; with `kept` (WHERE), "not kept" is the first key and its groups are dropped."""
    key_names = [c for ref in program.group_keys for c in limb_names(ref, columns)]
    keys = [columns[k] for k in key_names]
    if kept is not None:
        keys = [(~kept).astype(np.int64), *keys]
    specs, spec_names, places = _aggregate_inputs(program, columns)
    if not keys and not specs:
        raise ProgrammingError("a grouped program needs group keys or aggregates")
    n = len(next(iter(columns.values()))) if columns else 0
    if keys or n:
        grouped = group_by(keys, specs, min_group_size=program.min_group_size, trace=trace,
                           names=spec_names, rows=n,
                           distinct=[columns[c] for c in program.distinct_rows],
                           counted=[(columns[BRANCH] == b).astype(np.int64) for b in program.branch_rows])
        sorted_keys = grouped.keys if kept is None else grouped.keys[1:]
        out = dict(zip(key_names, sorted_keys)) | _aggregate_outputs(program, grouped.aggregates, places)
        keep = grouped.keep if kept is None else grouped.keep & (grouped.keys[0] == 0)
    else:  # no rows and no keys: the single group is empty, below any min_group_size
        out = {}
        for a, (_, count, dtypes) in zip(program.aggregates, places):
            empty = [np.zeros(0, np.int64 if a.counting else np.float64 if a.kind in ("avg", "avg_distinct") else dtype)
                     for dtype in dtypes or [np.int64]]
            out |= {f"{a.name}#{k}": e for k, e in enumerate(empty)} if a.text else {a.name: empty[0]}
            if count is not None:
                out[f"{a.name}{NULL_FLAG}"] = np.zeros(0, np.int64)
        keep = np.zeros(0, bool)
    if not program.group_keys and program.min_group_size == 0:
        out, keep = _with_empty_group(out, keep)
    if program.having is not None:
        keep = keep & _having_holds(program, out, keep)
    if program.projected:
        out |= _per_group(program.projected, program.projected_typed, out, keep)
    names = [c for ref in program.output_names() for c in limb_names(ref, out) if c in out]
    if program.distinct:
        out, keep = _distinct_rows(names, out, keep, trace)
    order = _expanded_order(program.order or tuple((k, False) for k in program.group_keys if k in out), out)
    result = order_and_limit([out[c] for c in names], [(out[c], d) for c, d in order], keep=keep,
                             limit=program.limit, offset=program.offset, trace=trace)
    return pa.table({name: result[i] for i, name in enumerate(names)})


def _with_empty_group(out: dict[str, np.ndarray], keep: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """An ungrouped program without a threshold answers one row even over no rows (SQL's: COUNT 0, every
    other aggregate NULL): one more group row, those values, kept exactly when no other group is. Always
    added, so the work does not depend on whether any row passed."""
    empty = {name: np.concatenate([values, np.array([1 if name.endswith(NULL_FLAG) else 0], values.dtype)])
             for name, values in out.items()}
    return empty, np.concatenate([keep, [not keep.any()]])


def _distinct_rows(names: list[str], out: dict[str, np.ndarray], keep: np.ndarray,
                   trace) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """SELECT DISTINCT over grouped rows: a second oblivious group-by on (not kept, every output column) over
    all group rows, keeping the last row of each run of kept rows (a NULL's value is 0 beside its flag, so
    equal NULLs compare equal)."""
    regrouped = group_by([(~keep).astype(np.int64), *(out[c] for c in names)], [], trace=trace)
    return dict(zip(names, regrouped.keys[1:])), regrouped.last & (regrouped.keys[0] == 0)


def _having_holds(program: EnclaveProgram, out: dict[str, np.ndarray], keep: np.ndarray) -> np.ndarray:
    """Which group rows satisfy HAVING (TRUE, not FALSE or NULL), evaluated as `_per_group`."""
    values = _per_group([("__having", program.having, "int")], program.having_typed, out, keep)
    return (values["__having"] == 1) & (values[f"__having{NULL_FLAG}"] == 0)


def _per_group(expressions, typed, out: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """Scalar expressions [(name, sql, kind)] over the group columns `typed`, on every group row (the same
    work whatever the data); a row that is not a kept group's reads only NULLs, so a partial group's running
    values (a `//` by a zero running count) never fail the query."""
    masked = dict(out)
    not_kept = (~keep).astype(np.int64)
    for column, _, _ in typed:
        flag = null_flag(column)
        masked[flag] = not_kept if flag not in out else np.maximum(out[flag], not_kept)
    return evaluate_expressions(expressions, typed, masked)
