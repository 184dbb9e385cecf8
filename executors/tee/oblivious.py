"""Oblivious relational operators on numpy columns: the memory access pattern depends only on sizes.

Every operator reads and writes the same positions in the same order for any two inputs with the
same number of rows (and the same column count): no branch and no index depends on a value.

bitonic_sort(keys, payload)  Batcher's bitonic sorting network (Batcher, "Sorting networks and
                             their applications", AFIPS 1968), in its one-direction form (every
                             merge starts with a flip stage, so every comparator puts the smaller
                             row at the lower index). Rows are padded to a power of two with
                             sentinel rows that stand for +infinity: a comparator touching one is
                             a no-op, so its swap is masked off (a mask that depends on n only) and
                             no key value is reserved. Each network stage is one vectorised
                             compare-exchange over all of its pairs: a lexicographic comparison of
                             the int64 key columns, then an XOR-swap under a mask
                             (d = (a ^ b) & -swap; a ^= d; b ^= d) applied to every column.
                             n' log2(n') (log2(n') + 1) / 4 compare-exchanges for n' = 2^ceil(log2 n).
group_starts(sorted_keys)    row i starts a group iff a key differs from row i - 1 (elementwise).
segmented_scan(v, starts)    Hillis–Steele inclusive scan with segment flags (Blelloch 1990):
                             log2 n elementwise passes v[i] = starts[i] ? v[i] : op(v[i-d], v[i]).
group_by(keys, aggregates)   sort by keys, mark groups, COUNT / SUM / AVG / MIN / MAX by segmented
                             scans, COUNT(DISTINCT) by one more sort on (keys, value) whose group
                             blocks line up with the first (`distinct_per_group`); one result row per group at the group's last position, with a
                             `keep` flag (last row of a group of at least `min_group_size` rows).
                             MIN / MAX compare in `sortable` order (a float NaN is the greatest, as
                             in DuckDB), lexicographically over a value of several limbs (text).
distinct_sums(keys, flag, x) SUM / AVG(DISTINCT x): one more sort on (keys, flag, x), first-of-run flags.
window_function(kind, ...)   a window over rows sorted by (partition, order): segmented scans
                             (`run_first` / `run_last` spread a run's first / last value) and, for
                             LAG / LEAD, a shift by the query's constant (`shifted`).
order_and_limit(...)         sort on (not keep, ORDER BY keys...) and cut the first
                             min(kept, limit) rows: the only size-dependent access is that cut,
                             whose length is the result size.

Keys are int64; floats enter as the order-preserving int64 of `sortable` (its own inverse), and a
DESC key as the bitwise complement (also order-reversing and its own inverse).

This is oblivious at the level of the algorithm. CPython and numpy are not a constant-time
environment: kernels may branch on values inside comparisons, the allocator and the garbage
collector follow their own patterns. See docs/enclave.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from sqlsecure.errors import DataError, ProgrammingError

AGGREGATE_KINDS = ("count", "sum", "avg", "min", "max", "count_distinct", "sum_distinct", "avg_distinct")
DISTINCT_KINDS = ("count_distinct", "sum_distinct", "avg_distinct")  # each sorts its own copy of the rows
_SIGN_CLEAR = np.int64(0x7FFF_FFFF_FFFF_FFFF)


@dataclass
class AccessTrace:
    """Records the operators' public access pattern: each compare-exchange pair (the position that
    receives the smaller row, the one that receives the larger), each scan pass and each cut."""

    keep_pairs: bool = True
    events: list = field(default_factory=list)
    _hash: "hashlib._Hash" = field(default_factory=hashlib.sha256, repr=False)
    compare_exchanges: int = 0

    def compare_exchange(self, low: np.ndarray, high: np.ndarray) -> None:
        low = np.ascontiguousarray(low, dtype=np.int64)
        high = np.ascontiguousarray(high, dtype=np.int64)
        self.compare_exchanges += len(low)
        self._hash.update(b"cx" + len(low).to_bytes(8, "big") + low.tobytes() + high.tobytes())
        if self.keep_pairs:
            self.events.append(("cx", low, high))

    def pass_(self, kind: str, *sizes: int) -> None:
        self._hash.update(repr((kind, *sizes)).encode())
        self.events.append((kind, *sizes))

    def pairs(self) -> list[tuple[int, int]]:
        return [(int(a), int(b)) for ev in self.events if ev[0] == "cx" for a, b in zip(ev[1], ev[2])]

    def digest(self) -> str:
        return self._hash.copy().hexdigest()


# --- key encodings --------------------------------------------------------------------------------------

def sortable(values: np.ndarray) -> np.ndarray:
    """int64 keys whose signed order is the values' order (int64 as is; float64 by its bits with the
    magnitude bits flipped for negatives: -0.0 is folded into 0.0, NaN sorts last). Its own inverse
    for floats (see `unsortable`)."""
    values = np.asarray(values)
    if values.dtype == np.int64:
        return values
    if values.dtype == np.float64:
        bits = (values + 0.0).view(np.int64)  # + 0.0 turns -0.0 into 0.0
        return bits ^ ((bits >> 63) & _SIGN_CLEAR)
    if values.dtype == np.bool_ or np.issubdtype(values.dtype, np.integer):
        return values.astype(np.int64)
    raise DataError(f"the enclave sorts int64 and float64 columns, not {values.dtype}")


def unsortable(keys: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.dtype(dtype) == np.float64:
        return (keys ^ ((keys >> 63) & _SIGN_CLEAR)).view(np.float64)
    return keys.astype(dtype, copy=False)


def directed(keys: np.ndarray, descending: bool) -> np.ndarray:
    """DESC as the bitwise complement: order-reversing on int64, no overflow, its own inverse."""
    return ~keys if descending else keys


# --- bitonic sort -------------------------------------------------------------------------------------

def network_size(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def bitonic_stages(size: int):
    """(k, j) of every stage of the bitonic network on `size` (a power of two) rows: for each merge
    size k, a flip stage (j = k / 2: i against the mirror position in its k-block), then half-cleaners
    (j = k / 4, ..., 1: i against i + j). Every comparator puts the smaller row at the lower index."""
    k = 2
    while k <= size:
        j = k // 2
        while j >= 1:
            yield k, j
            j //= 2
        k *= 2


def stage_views(x: np.ndarray, k: int, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Views (low, high) of `x` (shape (fields, size)) over the comparator pairs of stage (k, j)."""
    fields, size = x.shape
    if j == k // 2:
        v = x.reshape(fields, size // k, k)
        return v[:, :, :j], v[:, :, j:][:, :, ::-1]
    v = x.reshape(fields, size // (2 * j), 2, j)
    return v[:, :, 0, :], v[:, :, 1, :]


def _as_int64_bits(column: np.ndarray) -> np.ndarray:
    column = np.asarray(column)
    if column.dtype in (np.int64, np.float64):
        return column.view(np.int64)
    if column.dtype == np.bool_ or np.issubdtype(column.dtype, np.integer):
        return column.astype(np.int64)
    raise DataError(f"the enclave moves int64, float64 and bool columns, not {column.dtype}")


def _from_int64_bits(bits: np.ndarray, dtype: np.dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype in (np.int64, np.float64):
        return bits.view(dtype).copy()
    return bits.astype(dtype)


def bitonic_sort(keys: Sequence[np.ndarray], payload: Sequence[np.ndarray] = (), *,
                 descending: bool | Sequence[bool] = False,
                 trace: AccessTrace | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Sort rows lexicographically by `keys` (int64 or float64; DESC per key), carrying `payload`.

    Returns (sorted keys, sorted payload) with the input dtypes. Not stable (ties in any order).
    """
    keys = [np.asarray(k) for k in keys]
    payload = [np.asarray(p) for p in payload]
    if not keys:
        raise ProgrammingError("bitonic_sort needs at least one key column")
    n = len(keys[0])
    if any(c.ndim != 1 or len(c) != n for c in (*keys, *payload)):
        raise ProgrammingError("columns to sort must be vectors of equal length")
    desc = [descending] * len(keys) if isinstance(descending, bool) else list(descending)
    if len(desc) != len(keys):
        raise ProgrammingError(f"{len(desc)} sort directions for {len(keys)} keys")
    size = network_size(n)
    nkeys = len(keys)
    rows = np.zeros((nkeys + len(payload), size), dtype=np.int64)
    for i, (k, d) in enumerate(zip(keys, desc)):
        rows[i, :n] = directed(sortable(k), d)
    for i, p in enumerate(payload):
        rows[nkeys + i, :n] = _as_int64_bits(p)
    sort_rows(rows, n, nkeys, trace)
    out_keys = [unsortable(directed(rows[i, :n], d), k.dtype) for i, (k, d) in enumerate(zip(keys, desc))]
    out_payload = [_from_int64_bits(rows[nkeys + i, :n], p.dtype) for i, p in enumerate(payload)]
    return out_keys, out_payload


def sort_rows(rows: np.ndarray, n: int, nkeys: int, trace: AccessTrace | None = None) -> None:
    """In place: sort the first `n` columns of `rows` (int64, shape (fields, size), size a power of two)
    ascending by the first `nkeys` fields.

    Positions n..size-1 are sentinel rows standing for +infinity. A comparator touching one would
    leave both rows in place, so its swap is masked off: the mask depends on n only, and the same
    positions are read and written whatever the values (and whatever the sentinels hold).
    """
    fields, size = rows.shape
    if size & (size - 1) or not 0 <= n <= size:
        raise ProgrammingError(f"the sorting network needs a power-of-two size >= n, got {size} for {n}")
    index = np.arange(size, dtype=np.int64).reshape(1, size)
    for k, j in bitonic_stages(size):
        a, b = stage_views(rows, k, j)
        swap = a[0] > b[0]
        if nkeys > 1:
            equal = a[0] == b[0]
            for c in range(1, nkeys):
                swap |= equal & (a[c] > b[c])
                if c + 1 < nkeys:
                    equal &= a[c] == b[c]
        low, high = stage_views(index, k, j)
        if n < size:
            swap &= high[0] < n
        mask = np.negative(swap, dtype=np.int64)
        d = np.bitwise_xor(a, b)
        d &= mask
        a ^= d
        b ^= d
        if trace is not None:
            trace.compare_exchange(low.ravel(), high.ravel())


# --- grouping and aggregation -------------------------------------------------------------------------

def group_starts(sorted_keys: Sequence[np.ndarray]) -> np.ndarray:
    """Row i starts a group iff some key differs from row i - 1 (row 0 always starts one); keys compare
    as their `sortable` int64, so NaNs form one group, as in DuckDB."""
    n = len(sorted_keys[0]) if sorted_keys else 0
    starts = np.ones(n, dtype=bool)
    if n > 1:
        differs = np.zeros(n - 1, dtype=bool)
        for k in map(sortable, sorted_keys):
            differs |= k[1:] != k[:-1]
        starts[1:] = differs
    return starts


def group_ends(starts: np.ndarray) -> np.ndarray:
    """Row i ends a group iff row i + 1 starts one (the last row always ends one)."""
    ends = np.ones(len(starts), dtype=bool)
    ends[:-1] = starts[1:]
    return ends


def segmented_scan(values: np.ndarray, starts: np.ndarray, op: Callable[[np.ndarray, np.ndarray], np.ndarray],
                   trace: AccessTrace | None = None) -> np.ndarray:
    """Inclusive scan of `op` restarting at every start flag (Hillis–Steele, log2 n passes)."""
    v = np.array(values, copy=True)
    f = np.array(starts, dtype=bool, copy=True)
    n, d = len(v), 1
    while d < n:
        combined = op(v[:-d], v[d:])
        new_v = np.where(f[d:], v[d:], combined)
        new_f = f[d:] | f[:-d]
        v[d:] = new_v
        f[d:] = new_f
        if trace is not None:
            trace.pass_("scan", n, d)
        d *= 2
    return v


def _lexicographic_less(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per column of (limbs, m) int64 arrays, whether a's limbs come before b's (elementwise, no branch)."""
    less = np.zeros(a.shape[1], dtype=bool)
    equal = np.ones(a.shape[1], dtype=bool)
    for k in range(a.shape[0]):
        less |= equal & (a[k] < b[k])
        equal &= a[k] == b[k]
    return less


def segmented_extreme(limbs: Sequence[np.ndarray], starts: np.ndarray, kind: str,
                      trace: AccessTrace | None = None) -> list[np.ndarray]:
    """Per row, MIN or MAX of its group's values up to it (Hillis–Steele, log2 n passes), a value being
    one or more limbs compared lexicographically in `sortable` order: a float NaN is greater than +inf
    (DuckDB's order), text limbs compare as its bytes."""
    v = np.stack([sortable(limb) for limb in limbs])
    f = np.array(starts, dtype=bool, copy=True)
    n, d = len(f), 1
    while d < n:
        earlier, later = v[:, :-d], v[:, d:]
        first = _lexicographic_less(earlier, later) if kind == "min" else _lexicographic_less(later, earlier)
        new_v = np.where(f[d:] | ~first, later, earlier)
        new_f = f[d:] | f[:-d]
        v[:, d:] = new_v
        f[d:] = new_f
        if trace is not None:
            trace.pass_("scan", n, d)
        d *= 2
    return [unsortable(v[k], np.asarray(limb).dtype) for k, limb in enumerate(limbs)]


def _check_sum_range(values: np.ndarray, column: str) -> None:
    if values.dtype == np.int64 and len(values):
        bound = max(abs(int(values.max())), abs(int(values.min()))) * len(values)
        if bound >= 2**63:
            raise DataError(f"SUM/AVG of {column!r} could overflow int64 in the enclave "
                            f"({len(values)} rows); cast it to DOUBLE first")


def segmented_aggregate(kind: str, values: np.ndarray | None, starts: np.ndarray,
                        trace: AccessTrace | None = None, column: str = "?",
                        count: np.ndarray | None = None) -> np.ndarray:
    """Per row, the aggregate over its group's rows up to it: exact for a group at its last row.
    `count`, if given, is the segmented COUNT already computed (AVG reuses it). MIN / MAX also take a list
    of limbs (one value, compared lexicographically) and then return a list."""
    n = len(starts)
    if kind == "count":
        return segmented_scan(np.ones(n, dtype=np.int64), starts, np.add, trace)
    if values is None:
        raise ProgrammingError(f"{kind.upper()} needs a column")
    if kind in ("sum", "avg"):
        _check_sum_range(values, column)
        total = segmented_scan(values, starts, np.add, trace)
        if kind == "sum":
            return total
        if count is None:
            count = segmented_scan(np.ones(n, dtype=np.int64), starts, np.add, trace)
        return total.astype(np.float64) / count
    if kind in ("min", "max"):
        limbs = list(values) if isinstance(values, (list, tuple)) else [values]
        extremes = segmented_extreme(limbs, starts, kind, trace)
        return extremes if isinstance(values, (list, tuple)) else extremes[0]
    raise ProgrammingError(f"unknown aggregate {kind!r}; the enclave computes {', '.join(AGGREGATE_KINDS)}")


@dataclass
class GroupedRows:
    """Group-by result over the sorted rows: valid where `last`; `keep` also applies the group threshold."""

    keys: list[np.ndarray]
    aggregates: list[np.ndarray]
    count: np.ndarray
    last: np.ndarray
    keep: np.ndarray


def group_by(keys: Sequence[np.ndarray], aggregates: Sequence[tuple[str, np.ndarray | None]], *,
             min_group_size: int = 1, trace: AccessTrace | None = None,
             names: Sequence[str] | None = None, rows: int | None = None,
             distinct: Sequence[np.ndarray] = (), counted: Sequence[np.ndarray] = ()) -> GroupedRows:
    """Oblivious GROUP BY: sort by `keys`, mark groups, segmented aggregates.

    With no keys, all rows form one group (kept if it has at least `min_group_size` rows); `rows`
    gives the row count when there are neither keys nor aggregated columns (COUNT(*) only). With
    `distinct` columns (protected owners' row provenance), a group is kept only if it has at least
    `min_group_size` distinct values of each, instead of rows (`distinct_per_group`). A MIN / MAX may
    aggregate a list of limbs (one text value); its result is then a list of limbs. Each `counted` 0/1
    column (a protected UNION ALL branch's rows) must also sum to `min_group_size` in a kept group.
    """
    columns: list[np.ndarray] = []
    slots: list = []  # per aggregate: None (COUNT(*)), a column's index, or a list of its limbs' indexes
    for kind, values in aggregates:
        if values is None or kind in DISTINCT_KINDS:
            slots.append(None)
        elif isinstance(values, (list, tuple)):
            slots.append([_payload_slot(columns, limb) for limb in values])
        else:
            slots.append(_payload_slot(columns, values))
    weights = [_payload_slot(columns, np.asarray(w)) for w in counted]  # carried through the sort
    n = len(keys[0]) if keys else (len(columns[0]) if columns else rows)
    if n is None:
        raise ProgrammingError("group_by needs keys or a column to know the row count")
    if keys:
        sorted_keys, sorted_values = bitonic_sort(keys, columns, trace=trace)
    else:
        sorted_keys, sorted_values = [], columns
    starts = group_starts(sorted_keys) if keys else np.arange(n) == 0
    last = group_ends(starts)
    count = segmented_aggregate("count", None, starts, trace)
    names = list(names) if names is not None else [f"{k}#{i}" for i, (k, _) in enumerate(aggregates)]
    out = []
    for (kind, given), slot, name in zip(aggregates, slots, names):
        if kind == "count":
            out.append(count)
        elif kind == "count_distinct":
            out.append(_count_distinct(keys, given, trace))
        elif kind in DISTINCT_KINDS:  # SUM / AVG(DISTINCT x): given is (NULL flag or None, x)
            total, distinct_count = distinct_sums(keys, *given, trace)
            out.append(total if kind == "sum_distinct" else total.astype(np.float64) / np.maximum(distinct_count, 1))
        else:
            values = None if slot is None else [sorted_values[i] for i in slot] if isinstance(slot, list) \
                else sorted_values[slot]
            out.append(segmented_aggregate(kind, values, starts, trace, name, count))
    k = max(1, int(min_group_size))
    keep = last & (count >= k)
    for values in distinct:
        keep &= distinct_per_group(keys, values, trace) >= k
    for slot in weights:
        keep &= segmented_aggregate("sum", sorted_values[slot], starts, trace, "branch rows") >= k
    return GroupedRows(sorted_keys, out, count, last, keep)


def _count_distinct(keys: Sequence[np.ndarray], values, trace: AccessTrace | None) -> np.ndarray:
    """COUNT(DISTINCT x) per row of the rows sorted by `keys`: `values` is (NULL flag or None, [x's limbs])."""
    flag, limbs = values
    if flag is None:
        return distinct_per_group(keys, list(limbs), trace)
    return distinct_per_group(keys, [flag, *limbs], trace, skip_first=True)


def _payload_slot(columns: list[np.ndarray], values) -> int:
    """The index of `values` among the columns group_by carries (each array once), appending it if new."""
    for i, c in enumerate(columns):
        if c is values:
            return i
    columns.append(np.asarray(values))
    return len(columns) - 1


def distinct_per_group(keys: Sequence[np.ndarray], values, trace: AccessTrace | None = None, *,
                       skip_first: bool = False) -> np.ndarray:
    """Per row of the rows sorted by `keys`, the distinct `values` of its group so far (exact at the
    group's last row): one more oblivious sort on (keys, value), whose group blocks line up with
    the sort by `keys` alone, and a segmented count of the (key, value) run starts. A value may be
    several columns (a text's limbs); with `skip_first` the first is a NULL flag and the runs where it
    is set are not counted (COUNT(DISTINCT x) skips NULLs)."""
    values = [np.asarray(v) for v in values] if isinstance(values, (list, tuple)) else [np.asarray(values)]
    sorted_all, _ = bitonic_sort([*keys, *values], trace=trace)
    groups = group_starts(sorted_all[:len(keys)]) if keys else np.arange(len(values[0])) == 0
    runs = group_starts(sorted_all)
    if skip_first:
        runs &= sorted_all[len(keys)] == 0
    return segmented_aggregate("sum", runs.astype(np.int64), groups, trace, "distinct")


def order_and_limit(columns: Sequence[np.ndarray], order: Sequence[tuple[np.ndarray, bool]] = (), *,
                    keep: np.ndarray | None = None, limit: int | None = None, offset: int = 0,
                    trace: AccessTrace | None = None) -> list[np.ndarray]:
    """Rows where `keep` (all rows if None), ordered by (key, descending) pairs, the first `offset` of them
    skipped, at most `limit` of the rest.

    Kept rows are moved to the front by the same sort (key `not keep` first), then the first
    min(kept, offset + limit) rows are cut and the first min(kept, offset) of them dropped: only those counts
    (the result size and the public offset) shape the access pattern.
    An ORDER BY key that is one of `columns` (the same array object) is not carried twice: its
    output is the sorted key itself (a float -0.0 comes out as 0.0).
    """
    columns = [np.asarray(c) for c in columns]
    n = len(columns[0]) if columns else 0
    if (limit is not None and limit < 0) or offset < 0:
        raise ProgrammingError(f"LIMIT and OFFSET must not be negative, got {limit} and {offset}")
    keys, desc = [], []
    if keep is not None:
        keys.append((~np.asarray(keep, dtype=bool)).astype(np.int64))
        desc.append(False)
    key_of: dict[int, int] = {}
    for values, d in order:
        for ci, column in enumerate(columns):
            if column is values and ci not in key_of:
                key_of[ci] = len(keys)
                break
        keys.append(np.asarray(values))
        desc.append(bool(d))
    if keys and n:
        payload = [c for ci, c in enumerate(columns) if ci not in key_of]
        sorted_keys, sorted_payload = bitonic_sort(keys, payload, descending=desc, trace=trace)
        rest = iter(sorted_payload)
        columns = [sorted_keys[key_of[ci]] if ci in key_of else next(rest) for ci in range(len(columns))]
    kept = n if keep is None else int(np.count_nonzero(keep))
    m = kept if limit is None else min(kept, offset + limit)
    start = min(kept, offset)
    if trace is not None:
        trace.pass_("cut", n, *((start,) if offset else ()), m)
    return [c[start:m] for c in columns]


# --- windows and DISTINCT aggregates --------------------------------------------------------------------

def _earlier(earlier: np.ndarray, later: np.ndarray) -> np.ndarray:
    return earlier


def run_first(values: np.ndarray, starts: np.ndarray, trace: AccessTrace | None = None) -> np.ndarray:
    """Per row, the value at the first row of its run (`starts` flags): a segmented scan that keeps the
    earlier value, log2 n passes."""
    return segmented_scan(values, starts, _earlier, trace)


def run_last(values: np.ndarray, starts: np.ndarray, trace: AccessTrace | None = None) -> np.ndarray:
    """Per row, the value at the last row of its run: `run_first` over the reversed rows."""
    return run_first(np.asarray(values)[::-1], group_ends(starts)[::-1], trace)[::-1].copy()


def shifted(values: np.ndarray, by: int, fill, trace: AccessTrace | None = None) -> np.ndarray:
    """values[i - by] at row i (`by` < 0: values[i + |by|]), `fill` where that row does not exist: one pass
    whose positions depend on n and the query's constant `by` only."""
    values = np.asarray(values)
    out = np.full(len(values), fill, dtype=values.dtype)
    if by >= 0:
        out[by:] = values[:len(values) - by] if by else values
    else:
        out[:by] = values[-by:]
    if trace is not None:
        trace.pass_("shift", len(values), by)
    return out


def distinct_sums(keys: Sequence[np.ndarray], flag: np.ndarray | None, value: np.ndarray,
                  trace: AccessTrace | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per row of the rows sorted by `keys`, (SUM, COUNT) of its group's distinct non-NULL `value`s so far
    (exact at the group's last row): one more oblivious sort on (keys, NULL flag, value), whose group blocks
    line up with the sort by `keys` alone; a row adds its value where it starts a (keys, flag, value) run
    and its flag is clear (SUM(DISTINCT x), AVG(DISTINCT x) = their quotient)."""
    value = np.asarray(value)
    flag = np.zeros(len(value), np.int64) if flag is None else np.asarray(flag)
    sorted_all, _ = bitonic_sort([*keys, flag, value], trace=trace)
    groups = group_starts(sorted_all[:len(keys)]) if keys else np.arange(len(value)) == 0
    first = group_starts(sorted_all) & (sorted_all[len(keys)] == 0)
    sorted_value = sorted_all[len(keys) + 1]
    counted = segmented_aggregate("sum", first.astype(np.int64), groups, trace, "distinct")
    added = np.where(first, sorted_value, np.zeros(1, sorted_value.dtype))
    return segmented_aggregate("sum", added, groups, trace, "SUM(DISTINCT)"), counted


WINDOW_KINDS = ("row_number", "rank", "dense_rank", "count", "sum", "avg", "min", "max", "lag", "lead")


def window_function(kind: str, limbs: Sequence[np.ndarray], flag: np.ndarray | None, partitions: np.ndarray,
                    peers: np.ndarray, offset: int = 1, trace: AccessTrace | None = None,
                    column: str = "?") -> tuple[list[np.ndarray], np.ndarray | None]:
    """One window function over rows already sorted by (partition keys, ORDER BY keys), with the default
    frame (the partition's rows up to the current row's last peer; the whole partition without ORDER BY):
    (its value's limbs, its NULL flag or None). `partitions` / `peers` flag the rows that start a partition /
    a run of equal (partition, ORDER BY) keys. Everything is a segmented scan or a shift by the query's
    constant `offset`: the access pattern depends on n and the query only."""
    n = len(partitions)
    if kind in ("row_number", "rank", "dense_rank") or (kind == "count" and not limbs):
        number = segmented_scan(np.ones(n, np.int64), partitions, np.add, trace)
        if kind == "dense_rank":
            number = segmented_scan(peers.astype(np.int64), partitions, np.add, trace)
        return [run_first(number, peers, trace) if kind == "rank" else
                run_last(number, peers, trace) if kind == "count" else number], None
    flag = np.zeros(n, np.int64) if flag is None else np.asarray(flag, np.int64)
    if kind in ("lag", "lead"):
        by = offset if kind == "lag" else -offset
        partition = np.cumsum(partitions, dtype=np.int64)  # 1, 1, 2, ..: the same partition, the same number
        there = shifted(partition, by, 0, trace) == partition
        return ([np.where(there, shifted(limb, by, 0, trace), np.zeros(1, limb.dtype)) for limb in limbs],
                np.where(there, shifted(flag, by, 1, trace), 1))
    present = run_last(segmented_scan(1 - flag, partitions, np.add, trace), peers, trace)
    if kind == "count":
        return [present], None
    empty = (present == 0).astype(np.int64)
    if kind in ("sum", "avg"):
        values = np.where(flag == 1, np.zeros(1, limbs[0].dtype), limbs[0])
        total = run_last(segmented_aggregate("sum", values, partitions, trace, column), peers, trace)
        return [total if kind == "sum" else total.astype(np.float64) / np.maximum(present, 1)], empty
    if kind in ("min", "max"):  # a NULL is the other extreme of the `sortable` order, so it never wins
        extreme = np.iinfo(np.int64).max if kind == "min" else np.iinfo(np.int64).min
        keys = [np.where(flag == 1, extreme, sortable(limb)) for limb in limbs]
        best = [run_last(v, peers, trace) for v in segmented_extreme(keys, partitions, kind, trace)]
        return [np.where(empty == 1, np.zeros(1, limb.dtype), unsortable(v, limb.dtype))
                for v, limb in zip(best, limbs)], empty
    raise ProgrammingError(f"unknown window function {kind!r}; the enclave computes {', '.join(WINDOW_KINDS)}")
