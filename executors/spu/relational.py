"""Relational operators on secret-shared columns: shuffle, sort, group-by, ranks, LIMIT, UNION ALL.

A table is a list of equally long `ArithShare` columns. All row counts are public.

Rounds below are for N compute parties and n rows: C = 6 rounds for one batched comparison with 2
parties (8 with 3), C_eq = 6 when it also yields equality (9 with 3); k sort or group keys; every
count is tested at several n in tests/test_spu_rounds.py.

shuffle(s, columns)             N rounds for N parties (resharing shuffle with a dealer-assisted
                                permutation correlation; cf. Chase–Ghosh–Poburinnaya, "Secret-
                                Shared Shuffle", ASIACRYPT 2020, and SecretFlow's TTP shuffle):
                                round j: every party i != j sends z_i = X_i - A_i to party j
                                (A_i, B_i from i's dealer seed); j, who alone with the dealer knows
                                pi_j, sets X_j' = pi_j(X_j + sum z_i) + Delta_j with Delta_j =
                                pi_j(sum A_i) - sum B_i (the dealer's correction); the others set
                                X_i' = B_i. Then X' = pi_j(X). The composition pi_{N-1}..pi_0 is
                                uniform and unknown to every single party. Reveals nothing
                                (z_i is masked by the uniform A_i). Bytes: 8*rows*cols per
                                (i -> j) per round, plus the dealer's Delta_j.
sort(s, keys, payload, desc)    Shuffle-then-sort (Hamada–Kikuchi–Ikarashi–Chida, ICISC 2012;
                                as in Secrecy's / SCQL's reveal-after-shuffle designs): append a
                                secret tiebreaker (the original row number), shuffle, then a
                                multi-pivot (sample) quicksort whose comparison results are
                                *opened*. Every tuple is distinct, so the opened results only
                                reveal the relative order of the shuffled rows — a uniformly
                                random permutation independent of the data (ties included: they
                                are broken by the secret row number, which also makes the sort
                                stable). Each level takes, in every unsorted segment, its first p
                                rows as pivots (random rows: the order is the shuffle's) and
                                compares every other row with each pivot and the pivots with each
                                other, all segments in ONE batched lexicographic comparison
                                (C_eq rounds, then ceil(log2 g) rounds joining the g compared
                                columns, the tiebreak being the last) plus 1 opening; a row's bucket is the number of pivots below it.
                                p (`_pivot_count`): all pairs for a segment of <= 16 rows (sorted
                                in that level), else 15 pivots in a sort of up to 4096 rows and 7
                                in a longer one (fewer bytes for one more level at 10^5), within a
                                budget of 8 n pairs per level: all pairs of every active segment
                                when they fit it (the random tail of long segments ends in one
                                level), more pivots (up to 15) when few rows are active. Levels
                                L ~ log_{p+1} n, at most ceil(ceil(log2 n) / 3) + 2 with high
                                probability (7 at n = 10^5, 5 at 10^4, 3-4 at 10^3; 6-7 at 10^5
                                with 15 pivots for segments of <= 4096 rows, 8-9, 5-7 and 4-5
                                before the budget, ~30-40 with one pivot); rounds
                                N + L (C_eq + ceil(log2(k + 1)) + 1). The price is bytes: ~2x the
                                comparisons of one-pivot quicksort (whose 1.39 n log2 n gains
                                the most order per comparison). `first` (ORDER BY ... LIMIT): only
                                segments that start before row `first` are partitioned further, a
                                multi-pivot quickselect: ~10 n comparisons at 10^5 rows and 3-4
                                levels for a small LIMIT (a tournament or bitonic top-k merging
                                k-sized blocks needs O(log n log k) layers of comparisons: more
                                rounds than these levels). Keys of known widths (`key_bits`: group
                                codes, NULL keys) are packed with the tiebreak (the original row
                                number, ceil(log2 n) bits) into comparison columns of at most 62
                                bits (`packed_groups`): one tree less per column
                                saved; a key of unknown width is compared on 64 bits; each
                                column's sign and equality come from one tree. Bytes per compared
                                pair and direction (2 parties): `pair_bytes` (one 64-bit key at
                                10^5 rows: 43.4 B; a group code of 17 bits packed with the
                                tiebreak: 16 B, was 31.5), tested in tests/test_spu_rounds.py.
                                Chosen over bitonic sort (n log^2 n / 4 compare-exchanges
                                with muxes: ~10^8 for n = 10^6) and over radix sort with secret
                                permutation composition (Asharov et al., CCS 2022: 64 rounds of
                                shuffle + B2A per 64-bit key, more moving parts for 2-3 parties).
                                Leaks nothing but n (and the number of levels and of segments
                                left unsorted by `first`: functions of the random permutation and
                                of the public `first` only).
neighbour_starts(s, sorted_keys) [row i starts a run of equal keys]: zero tests of neighbour
                                differences (6 rounds, 9 for 3 parties; on b bits for keys of known
                                width, log2(W) rounds in W-bit lanes: 3 for a group code of <= 8
                                bits; their AND over k keys in a balanced tree, ceil(log2 k)) + B2A
                                (1): C_eq + ceil(log2 k) + 1 rounds, whatever n.
segmented_scan(s, sums, extremes, starts)
                                segmented inclusive scans of SUM and MIN/MAX columns in shared
                                rounds: k Brent–Kung block levels around Sklansky's log-depth
                                prefix (`_scan_levels`; k = `scan_blocks`: 0 below 16,384 rows,
                                3 at 10^5 for sums, 1 with MIN/MAX): per level one product round
                                (v_r += (1 - f_r) v_l; f_r |= f_l as f_r + (1 - f_r) f_l;
                                1 - f_r opened once for all columns), and with MIN/MAX columns
                                one batched comparison before it and one fused mux after it:
                                S = ceil(log2(n >> k)) + 2 k rounds, (C + 2) S with MIN/MAX.
                                Sklansky alone (k = 0) takes (n/2) ceil(log2 n) combines, Brent–
                                Kung alone 2 log2 n - 1 levels for ~2 n: at 10^5 rows k = 3 takes
                                20 levels and 2.6 n combines (17 and 8.15 n without blocks: 31 MB
                                less on the busiest link for SUM + COUNT, for 3 round trips).
                                `segmented_sum` / `segmented_extreme`: one kind alone.
group_by(s, keys, aggs)         sort by keys, mark runs, one `segmented_scan` for SUM/COUNT and
                                MIN/MAX together (one comparison per scan combine per MIN/MAX column;
                                sorting by the value as an extra key would add one 64-bit
                                comparison to each of the sort's).
                                Result rows: the sorted rows, aggregates valid on rows whose
                                `last` flag is 1 (the last row of each group); `compact` keeps them.
                                `within`: distinct values per group of each `Counted` column (the
                                group threshold's provenance): the first rides along the sort, each
                                further one sorts on the group's secret rank (a local prefix sum
                                of the run starts) packed with its weight and known-width value,
                                its run starts summed in the same scan.
compact(s, flag, columns)       shuffle (N rounds), open the flag (1 round), keep flagged rows:
                                reveals only how many rows are kept (the output size).
row_number / rank / dense_rank  after a sort: positions are public; RANK is a segmented copy of
                                the run start's position, DENSE_RANK a local prefix sum.
limit / union_all               local slicing / concatenation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from sqlsecure.errors import ProgrammingError, ProtocolError
from sqlsecure.executors.spu import arith, boolean
from sqlsecure.executors.spu.compare import compare_bits, compare_circuit, mux_bits_many
from sqlsecure.executors.spu.session import SpuSession
from sqlsecure.executors.spu.shares import ArithShare, BoolShare

ONE = np.uint64(1)


def _rows(columns: list[ArithShare]) -> int:
    if not columns:
        raise ProgrammingError("a table needs at least one column")
    n = len(columns[0])
    if any(c.data.ndim != 1 or len(c) != n for c in columns):
        raise ProgrammingError("columns of a table must be vectors of equal length")
    return n


# --- shuffle ----------------------------------------------------------------------------------------

def shuffle(s: SpuSession, columns: list[ArithShare]) -> list[ArithShare]:
    """Obliviously permute the rows (same secret permutation for every column): N rounds for N
    parties, whatever n."""
    n = _rows(columns)
    cols = len(columns)
    x = np.stack([c.data for c in columns], axis=1) if n else np.zeros((0, cols), np.uint64)
    for j in range(s.nparties):
        tag = s.tag(f"shuffle-{j}")
        s.rounds += 1
        if n == 0:
            continue
        if s.index == j:
            perm, delta = s.dealer.shuffle(j, n, cols)
            total = x.copy()
            for i in s.others():
                total += s.recv_words(i, tag, n * cols).reshape(n, cols)
            x = total[perm] + delta
        else:
            a, b = s.dealer.shuffle(j, n, cols)
            s.send_words(j, tag, (x - a).ravel())
            x = b
    return [ArithShare(np.ascontiguousarray(x[:, k]), c.frac) for k, c in enumerate(columns)]


# --- sort -------------------------------------------------------------------------------------------

def _lexicographic_less(s: SpuSession, diffs: Iterable[np.ndarray], bits: list[int]) -> np.ndarray:
    """XOR share (uint8 bits) of [d_0 < 0 or (d_0 == 0 and (d_1 < 0 or ...))], each d_j below
    2^(bits_j - 1) in magnitude, the last never zero. All the comparison trees run side by side
    (6 rounds for 2 parties), then `boolean.lexicographic_bits`: ceil(log2 g) rounds for g
    columns (was g - 1). `diffs` may be a generator: then each difference lives only in its
    circuit, which drops it once cut into lanes (8 B per pair and column less at the peak)."""
    k = len(bits)
    circuits = [compare_circuit(s, d, want_lt=True, want_eq=j < k - 1, bits=bits[j]) for j, d in enumerate(diffs)]
    return boolean.lexicographic_bits(s, boolean.run_circuits(s, circuits))


ALL_PAIRS = 16  # a segment this short is sorted outright: every pair compared in one level
PIVOTS = 15  # pivots of a longer segment of a short sort (up to LONG rows): ~4 bits of order per member and level
LONG = 4096
LONG_PIVOTS = 7  # pivots of a longer segment of a longer sort: half the comparisons per level, ~3 bits
PAIR_BUDGET = 8  # pairs per sorted row a level may compare beyond the rule above (its first level's 7)


def _pivot_count(lengths: np.ndarray, budget: int, rows: int) -> np.ndarray:
    """Pivots per active segment of one level of a sort of `rows` rows, `budget` the pairs the level
    may compare (PAIR_BUDGET per row). Where all pairs of every segment fit the budget, all but one
    row of each (the level sorts them all: the random tail of long segments, or a LIMIT's last rows,
    ends in one level instead of two or three). Otherwise all pairs of a short segment (<= ALL_PAIRS
    rows), else PIVOTS in a sort of up to LONG rows (its bytes are few: its levels are what costs)
    and LONG_PIVOTS in a longer one (its bytes dominate: each member is compared with every pivot;
    7 pivots buy 3 bits of order for 7 pairs, 15 buy 4 for 15), raised to what the budget allows per
    active row up to PIVOTS (few active rows: a LIMIT's segments, the levels' tail).
    Levels and pairs per row (tests/test_spu_rounds.py), one key: 10^4 rows 5 levels, 42.6 -> 35.5
    pairs per row (15 pivots for segments of up to 4096 rows before); 10^5 rows 6 -> 7 levels, 54.7
    -> 44.7 pairs per row: over 80 ms / 200 Mbit a level (6 rounds for a group code packed with the
    tiebreak) costs ~0.5 s, 10 pairs per row ~0.8 s (16 B each way and the dealer's share); a top-5
    at 10^5: 3 levels, 12.3 pairs per row (unchanged: few active rows raise the pivots)."""
    if int((lengths * (lengths - 1) // 2).sum()) <= budget:
        return lengths - 1
    middling = PIVOTS if rows <= LONG else LONG_PIVOTS
    usual = np.where(lengths <= ALL_PAIRS, lengths - 1, middling)
    allowed = min(PIVOTS, max(1, budget // int(lengths.sum())))
    return np.minimum(lengths - 1, np.maximum(usual, allowed))


def _pivot_pairs(p_max: int) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i, j), i < j < p_max, ordered by j: the pairs among p pivots are the first
    p (p - 1) / 2."""
    j, i = _expand(np.arange(p_max))
    return i, j


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, local index) of each of sum(counts) items, counts[k] of them owned by k."""
    owner = np.repeat(np.arange(counts.size), counts)
    return owner, np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)


@dataclass(frozen=True)
class _Level:
    """One partitioning level's comparisons: the active segments (start, length, pivots: the
    segment's first positions), then (member, pivot) pairs and (pivot, pivot) pairs, as positions."""

    starts: np.ndarray
    lengths: np.ndarray
    pivots: np.ndarray
    left: np.ndarray   # compared: [row at left < row at right]
    right: np.ndarray
    member_pairs: int  # the first `member_pairs` pairs are (member, pivot)
    m_seg: np.ndarray  # per member (segment order, then position): its segment
    m_pos: np.ndarray  # its position
    owner: np.ndarray  # per (member, pivot) pair: the member's index


def _level(starts: np.ndarray, lengths: np.ndarray, budget: int, rows: int) -> _Level:
    """The comparisons of one level over the active segments (`_pivot_count` pivots each, within
    `budget` pairs): every member against each of its segment's pivots (member-major), then the
    pivot pairs. Built by repeats and gathers, no per-pair division."""
    pivots = _pivot_count(lengths, budget, rows)
    members = lengths - pivots
    m_seg, m_local = _expand(members)
    m_start = starts[m_seg]
    m_pos = m_start + pivots[m_seg] + m_local
    owner, pivot_index = _expand(pivots[m_seg])
    member_pos = m_pos[owner]
    pivot_pos = m_start[owner] + pivot_index
    pseg, pq = _expand(pivots * (pivots - 1) // 2)
    pi, pj = _pivot_pairs(int(pivots.max()))
    at = _positions(int(starts[-1] + lengths[-1]))
    left = np.concatenate([member_pos, starts[pseg] + pi[pq]]).astype(at)
    right = np.concatenate([pivot_pos, starts[pseg] + pj[pq]]).astype(at)
    return _Level(starts, lengths, pivots, left, right, member_pos.size, m_seg, m_pos, owner.astype(at))


def _positions(n: int) -> type:
    """The narrowest index dtype for n rows: a level holds a few indices per compared pair, and the
    comparison's peak memory is per pair (int32 halves them below 2^31 rows)."""
    return np.int32 if n < 2 ** 31 else np.int64


def _partition(level: _Level, less: np.ndarray, perm: np.ndarray, is_start: np.ndarray) -> np.ndarray:
    """Rearrange each active segment as bucket 0, smallest pivot, bucket 1, ..., bucket p (bucket =
    number of pivots below; members keep their relative order) given the opened comparisons; mark
    the new segments' starts. Returns the new permutation."""
    starts, pivots = level.starts, level.pivots
    m_seg, m_pos = level.m_seg, level.m_pos
    m_above = np.bincount(level.owner, weights=less[:level.member_pairs], minlength=m_seg.size).astype(np.int64)
    bucket_base = np.cumsum(pivots + 1) - (pivots + 1)
    bucket = bucket_base[m_seg] + pivots[m_seg] - m_above  # global bucket id
    sizes = np.bincount(bucket, minlength=int((pivots + 1).sum()))
    b_seg, b_local = _expand(pivots + 1)
    before = np.cumsum(sizes) - sizes
    b_start = starts[b_seg] + before - before[bucket_base[b_seg]] + b_local
    order = np.argsort(bucket, kind="stable")
    rank_in_bucket = np.empty(m_seg.size, np.int64)
    rank_in_bucket[order] = np.arange(m_seg.size) - before[bucket[order]]
    new_perm = perm.copy()
    new_perm[b_start[bucket] + rank_in_bucket] = perm[m_pos]
    p_seg, p_local = _expand(pivots)
    pairs = less[level.member_pairs:].astype(np.int64)  # [pivot i < pivot j]
    pseg, pq = _expand(pivots * (pivots - 1) // 2)
    pi, pj = _pivot_pairs(int(pivots.max()))
    pivot_base = np.cumsum(pivots) - pivots
    p_below = (np.bincount(pivot_base[pseg] + pj[pq], weights=pairs, minlength=p_seg.size)
               + np.bincount(pivot_base[pseg] + pi[pq], weights=1 - pairs, minlength=p_seg.size)).astype(np.int64)
    after = bucket_base[p_seg] + p_below  # the bucket this pivot closes
    p_to = b_start[after] + sizes[after]
    new_perm[p_to] = perm[starts[p_seg] + p_local]
    is_start[p_to] = True
    is_start[p_to + 1] = True
    return new_perm


def partition_order(n: int, wanted: int, less: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """The multi-pivot partitioning's permutation of n rows (position -> row), whose first `wanted`
    positions are in order: level by level, `less(x, y)` answers [row x < row y] for every pair of
    the level at once (opened comparisons on the SPU, plaintext in the tests)."""
    perm = np.arange(n, dtype=_positions(n))
    is_start = np.zeros(n + 2, dtype=bool)
    is_start[0] = is_start[n] = True
    while True:
        starts = np.flatnonzero(is_start[:n])
        lengths = np.append(starts[1:], n) - starts
        active = (lengths >= 2) & (starts < wanted)
        if not active.any():
            return perm
        level = _level(starts[active], lengths[active], PAIR_BUDGET * n, n)
        perm = _partition(level, less(perm[level.left], perm[level.right]), perm, is_start)


PACKED_BITS = 62  # a packed comparison column holds values in [0, 2^62): differences within 63 bits


@dataclass(frozen=True)
class _Field:
    """One sort key's place in a comparison column: `bits` wide (None: a whole ring value, compared
    alone), `descending`, `offset` its lowest bit in a packed column."""

    key: int  # index among the keys (the tiebreak: len(keys))
    bits: int | None
    descending: bool
    offset: int = 0


def packed_groups(widths: list[int], descending: list[bool], tie_bits: int) -> list[list[_Field]]:
    """The comparison columns of a sort: keys of known widths (`key_bits` b: values in [0, 2^(b-1)),
    a field of b - 1 bits), then the tiebreak of `tie_bits`, packed left to right into columns of
    at most PACKED_BITS bits, earlier keys in higher bits (a column's numeric order is then the
    keys' lexicographic order); a key of unknown width (64) is a column of its own. Greedy: each
    column as wide as the next field allows. Fewer columns: fewer comparison trees, and one AND
    round less per column saved."""
    fields = [_Field(j, None if b == 64 else b - 1, d) for j, (b, d) in enumerate(zip(widths, descending))]
    fields.append(_Field(len(widths), tie_bits, False))
    groups: list[list[_Field]] = []
    for f in fields:
        last = groups[-1] if groups else None
        if f.bits is not None and last and last[0].bits is not None and \
                sum(g.bits for g in last) + f.bits <= PACKED_BITS:
            last.append(f)
        else:
            groups.append([f])
    return [_with_offsets(g) for g in groups]


def _with_offsets(group: list[_Field]) -> list[_Field]:
    if group[0].bits is None:
        return group
    out, at = [], 0
    for f in reversed(group):
        out.append(_Field(f.key, f.bits, f.descending, at))
        at += f.bits
    return out[::-1]


def column_bits(group: list[_Field]) -> int:
    """The comparison width of a column: 64 for a key of unknown width, else its fields' bits + 1
    (differences of values in [0, 2^w) lie within w + 1 bits)."""
    return 64 if group[0].bits is None else max(2, sum(f.bits for f in group) + 1)


def pair_bytes(key_bits: list[int] | None, keys: int, n: int) -> float:
    """Bytes per compared pair and direction of a 2-party sort of n rows (`_lexicographic_less`
    over `packed_groups`, then the opening): each comparison column's `boolean.comparison_bytes`
    (equality for all but the last), `boolean.lexicographic_bytes` joining the columns, 1/8 for the
    opened bit.
    One 64-bit key at 10^5 rows: 31.6 + 11.4 + 0.25 + 0.125 = 43.4 B."""
    widths = list(key_bits) if key_bits is not None else [64] * keys
    groups = packed_groups(widths, [False] * keys, max(1, (n - 1).bit_length()))
    bits = [column_bits(g) for g in groups]
    trees = sum(boolean.comparison_bytes(b, j < len(bits) - 1) for j, b in enumerate(bits))
    return trees + boolean.lexicographic_bytes(len(bits)) + 1 / 8


def _pack(s: SpuSession, group: list[_Field], columns: list[ArithShare]) -> ArithShare:
    """sum of each field << offset, a descending field as 2^bits - 1 - key (local, on the raw ring
    values: a fixed-point key of known width is packed as its encoding)."""
    total = np.zeros(len(columns[0]), np.uint64)
    for f in group:
        value = ArithShare(columns[f.key].data)
        if f.descending:
            value = arith.add_public(s, -value, (1 << f.bits) - 1)
        total += value.data << np.uint64(f.offset)
    return ArithShare(total)


def _sort_columns(s: SpuSession, keys: list[ArithShare], descending: list[bool] | None = None,
                  extra: list[ArithShare] = (), key_bits: list[int] | None = None, first: int | None = None
                  ) -> tuple[list[ArithShare], list[ArithShare]]:
    """Sort rows by `keys` (lexicographic, stable): returns (sorted keys, sorted extra columns).
    `key_bits`: each key's width, when known to lie in [0, 2^(bits-1)) (default 64: any ring value);
    known widths are packed with the tiebreak (`packed_groups`). `first`: only rows [0, first) need
    to be in order (the rest come in an order that depends on the random permutation only)."""
    n = _rows([*keys, *extra])
    desc = list(descending) if descending is not None else [False] * len(keys)
    widths = list(key_bits) if key_bits is not None else [64] * len(keys)
    if len(desc) != len(keys) or len(widths) != len(keys):
        raise ProgrammingError("sort: one direction and one width per key")
    if any(not 1 <= b <= 64 for b in widths):
        raise ProgrammingError(f"sort: key widths must be in 1..64 bits, got {widths}")
    if first is not None and first < 0:
        raise ProgrammingError(f"sort: the number of ordered rows must be >= 0, got {first}")
    wanted = n if first is None else min(first, n)
    if n <= 1 or wanted == 0:
        return list(keys), list(extra)
    k = len(keys)
    groups = packed_groups(widths, desc, (n - 1).bit_length())
    with_tie = [*keys, arith.public(s, np.arange(n, dtype=np.int64))]
    packed = [_pack(s, g, with_tie) for g in groups if g[0].bits is not None]
    cols = shuffle(s, [*keys, *packed, *extra])
    compared, flips, at = [], [], k
    for g in groups:
        if g[0].bits is None:
            compared.append(cols[g[0].key].data)
            flips.append(g[0].descending)
        else:
            compared.append(cols[at].data)
            flips.append(False)
            at += 1
    bits = [column_bits(g) for g in groups]

    def opened_less(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        diffs = (_difference(col, y, x) if flip else _difference(col, x, y) for col, flip in zip(compared, flips))
        (less,) = s.open_many(bits=[_lexicographic_less(s, diffs, bits)])
        return less.astype(bool)

    perm = partition_order(n, wanted, opened_less)
    return [c[perm] for c in cols[:k]], [c[perm] for c in cols[at:]]


def _difference(column: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """column[x] - column[y] (ring shares), subtracted into the first gather."""
    out = column[x]
    out -= column[y]
    return out


def sort(s: SpuSession, keys: list[ArithShare], payload: list[ArithShare] = (),
         descending: list[bool] | None = None, key_bits: list[int] | None = None, first: int | None = None
         ) -> tuple[list[ArithShare], list[ArithShare]]:
    """ORDER BY keys (ASC/DESC per key), stable; returns (sorted keys, sorted payload). `key_bits`:
    narrower comparisons for keys known to be small non-negative integers (see `_sort_columns`).
    `first` (ORDER BY ... LIMIT first): only the first `first` rows come out in order (top-k
    without a full sort; the other rows in an order that depends on the random shuffle only).
    Rounds for k keys: at most N + L (C_eq + ceil(log2(k + 1)) + 1) (N + L (C_eq + ceil(log2 g) + 1)
    for the g comparison columns of `packed_groups`, g <= k + 1), C_eq = 6 for 2 parties and 9 for 3 (a comparison with
    equality), L the multi-pivot quicksort's levels: random, a function of the shuffle's
    permutation (and `first`) only, at most ceil(ceil(log2 n) / 3) + 2 with high probability
    (module docstring). Bytes party 0 sends (2 parties): 8 n per shuffled column (the keys, the
    packed columns, the payload), then `pair_bytes(key_bits, k, n)` per compared pair."""
    return _sort_columns(s, list(keys), descending, list(payload), key_bits, first)


# --- runs and segmented scans -------------------------------------------------------------------

def neighbour_starts(s: SpuSession, sorted_keys: list[ArithShare], key_bits: list[int] | None = None) -> ArithShare:
    """0/1 share: row i starts a run of equal keys (row 0 always does). `key_bits` as for `sort`: a
    key known to lie in [0, 2^(b-1)) is tested on b bits. Rounds for k keys: the slowest key's
    equality, C_eq (6 for 2 parties, 9 for 3) on 64 bits, log2(W) for b bits in W-bit lanes (3 for
    a group code of up to 8 bits; 3 parties: 3 + log2 W), + ceil(log2 k) + 1, whatever n."""
    if _rows(sorted_keys) == 0:
        return ArithShare(np.zeros(0, np.uint64))
    return run_starts(s, [neighbour_equal(s, sorted_keys, key_bits)])[0]


def neighbour_equal(s: SpuSession, sorted_keys: list[ArithShare], key_bits: list[int] | None = None
                    ) -> list[np.ndarray]:
    """Per key, XOR shares (uint8 0/1) of [key[i + 1] == key[i]], i < n - 1: every key's zero test
    of its neighbour differences side by side, on b bits where the key's width b is known (its
    differences lie within b bits: zero mod 2^b only when zero)."""
    widths = list(key_bits) if key_bits is not None else [64] * len(sorted_keys)
    if _rows(sorted_keys) == 0:
        return [np.zeros(0, np.uint8) for _ in sorted_keys]
    circuits = [compare_circuit(s, key.data[1:] - key.data[:-1], want_lt=False, want_eq=True) if b >= 64 else
                compare_circuit(s, key.data[1:] - key.data[:-1], want_lt=True, want_eq=True, bits=max(b, 2))
                for key, b in zip(sorted_keys, widths)]
    return [eq.astype(np.uint8) for _, eq in boolean.run_circuits(s, circuits)]


def run_starts(s: SpuSession, equalities: list[list[np.ndarray]]) -> list[ArithShare]:
    """For each list of per-key neighbour equalities (`neighbour_equal`, n - 1 each), the 0/1 run
    starts: the ANDs in balanced trees side by side (ceil(log2 k) rounds for the longest list),
    then one B2A round for all."""
    sames = boolean.and_trees_bits(s, equalities)
    first = np.array([1 if s.is_first else 0], np.uint64)
    bits = [BoolShare(np.concatenate([first, same.astype(np.uint64) ^ (ONE if s.is_first else np.uint64(0))]), 1)
            for same in sames]
    return boolean.b2a_bits_many(s, bits)


SCAN_BLOCK_ROWS = 8192  # a sums-only scan takes one Brent–Kung block level per doubling of n beyond this
SCAN_BLOCK_ROWS_EXTREMES = 32768  # with MIN/MAX: a level is C + 2 rounds, so blocks pay from larger n
SCAN_MAX_BLOCKS = 3


def log2_ceil(n: int) -> int:
    """ceil(log2 n) for n >= 1 (0 for n <= 1)."""
    return max(0, (n - 1).bit_length())


def scan_blocks(n: int, extremes: bool) -> int:
    """Brent–Kung block levels k of a segmented scan of n rows: floor(log2(n / SCAN_BLOCK_ROWS)),
    0..SCAN_MAX_BLOCKS (SCAN_BLOCK_ROWS_EXTREMES with MIN/MAX). Each block level adds a level (one
    round trip, C + 2 with MIN/MAX) and halves the rows of the Sklansky core, whose n/2 combines per
    level dominate the bytes: at 10^5 rows k = 3 takes 20 levels and 2.58 n combines against 17 and
    8.15 n (56 B per combine on the busiest link for SUM + COUNT: 31 MB less, 1.2 s at 200 Mbit and
    0.25 s at 1 Gbit, for 3 round trips). A round trip is worth ~2 MB at both of issue 20's links
    (80 ms x 200 Mbit, 20 ms x 1 Gbit), ~36,000 such combines: the thresholds add a block level
    where it saves more (one level at 2 x 10^4 rows saves 2.7 n combines, the fourth at 10^5 0.3 n)."""
    rows = SCAN_BLOCK_ROWS_EXTREMES if extremes else SCAN_BLOCK_ROWS
    return min(SCAN_MAX_BLOCKS, max(0, (n // rows).bit_length() - 1)) if n >= rows else 0


def scan_depth(n: int, blocks: int) -> int:
    """Levels of `_scan_levels(n, blocks)`: ceil(log2(n >> k)) + 2 k for the k block levels that fit
    (a k-block needs 2^k <= n rows); ceil(log2 n) without blocks."""
    return len(_scan_levels(n, blocks))


def _sklansky(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Sklansky's inclusive scan (Sklansky 1960; the divide-and-conquer prefix of Ladner–Fischer)
    as a list of levels (left, right): at each level every right[i] becomes x[left[i]] (+)
    x[right[i]], all pairs of a level at once. Level d = 1, 2, 4, ...: in every block of 2d rows
    the rows of the upper half combine with the block's row d - 1 (which holds the lower half's
    total). ceil(log2 n) levels of at most n/2 combines: half the depth of Brent–Kung's
    2 log2 n - 1 for (n/2) log2 n combines instead of 2n."""
    levels, d = [], 1
    while d < n:
        rows = np.arange(n)
        right = rows[(rows // d) % 2 == 1]
        levels.append(((right // (2 * d)) * (2 * d) + d - 1, right))
        d *= 2
    return levels


def _scan_levels(n: int, blocks: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """An inclusive scan's levels (left, right): k = `blocks` Brent–Kung up-sweep levels (Brent and
    Kung 1982; level d = 1, 2, .., 2^(k-1): row i with (i + 1) % 2d == 0 takes row i - d, so the last
    row of each block of B = 2^k rows holds its block's total), Sklansky (`_sklansky`) over those
    n >> k block ends, then k down-sweep levels (d = 2^(k-1) .. 1: row i with (i + 1) % 2d == d,
    i >= 2d, takes row i - d, which then holds its full prefix). Levels: ceil(log2(n >> k)) + 2 k;
    combines: ~2 n (1 - 2^-k) + (n >> k) / 2 ceil(log2(n >> k)), against (n/2) ceil(log2 n)."""
    k = min(blocks, max(0, n.bit_length() - 1))
    up = [(right - (1 << j), right) for j in range(k) for right in [np.arange((2 << j) - 1, n, 2 << j)]]
    ends = np.arange((1 << k) - 1, n, 1 << k)
    core = [(ends[left], ends[right]) for left, right in _sklansky(ends.size)]
    down = [(right - (1 << j), right) for j in reversed(range(k)) for right in [np.arange(3 * (1 << j) - 1, n, 2 << j)]]
    return [(left, right) for left, right in up + core + down if right.size]


def segmented_scan(s: SpuSession, sums: list[ArithShare], extremes: list[ArithShare], starts: ArithShare,
                   take_max: list[bool] = ()) -> tuple[list[ArithShare], list[ArithShare]]:
    """Inclusive running SUMs and MINs/MAXs restarting at every start flag, in shared rounds over
    `_scan_levels` with `scan_blocks(n, bool(extremes))` Brent–Kung block levels k. Segmented
    operator (f1, v1) . (f2, v2) = (f1 | f2, f2 ? v2 : v1 (+) v2). Per level one round of products
    sharing the left factor 1 - f_r (`arith.beaver_mul_fanout`, 1 - f_r opened once): (1 - f_r) v_l
    for the sums, (1 - f_r)(v_l - v_r) for the extremes, (1 - f_r) f_l for the flags (f_r | f_l =
    f_r + (1 - f_r) f_l); with extremes, one batched comparison of v_l with v_r (C = 6 rounds for 2
    parties, 8 for 3) before it and one fused mux (1) after it. Rounds: S = ceil(log2(n >> k)) + 2 k
    with sums only (ceil(log2 n) up to 16,383 rows; 20 at 10^5, k = 3), (C + 2) S with extremes
    (k = 1 from 65,536 rows); products (and comparisons) per column: the levels' combines, (n/2)
    ceil(log2 n) without blocks, ~2.6 n at 10^5 rows with 3. Bytes per level and direction:
    8 (c + 2) per combine for c columns, plus the comparisons' and muxes' with extremes."""
    n = len(starts)
    vals = [v.data.copy() for v in sums]
    ext = [v.data.copy() for v in extremes]
    f = starts.data.copy()
    levels = _scan_levels(n, scan_blocks(n, bool(extremes)))
    for depth, (left, right) in enumerate(levels):
        m = right.size
        better = None
        if ext:
            diffs = [(v[right] - v[left]) if mx else (v[left] - v[right]) for v, mx in zip(ext, take_max)]
            lt, _ = compare_bits(s, np.concatenate(diffs), want_eq=False)  # [left is better]
            better = BoolShare(lt, 1)
        notf = arith.public(s, np.ones(m, np.int64)) - ArithShare(f[right])
        factors = [ArithShare(v[left]) for v in vals] + [ArithShare(v[left] - v[right]) for v in ext]
        more_flags = depth < len(levels) - 1  # the last level's flags are never read
        if more_flags:  # f_r | f_l = f_r + (1 - f_r) f_l: the same left factor
            factors.append(ArithShare(f[left]))
        got = arith.beaver_mul_fanout(s, notf, factors)
        for v, g in zip(vals, got):
            v[right] += g.data
        if ext:
            gaps = got[len(vals):len(vals) + len(ext)]
            chosen = mux_bits_many(s, [(BoolShare(better.data[i * m:(i + 1) * m], 1), g,
                                        ArithShare(np.zeros(m, np.uint64), g.frac)) for i, g in enumerate(gaps)])
            for v, c in zip(ext, chosen):
                v[right] += c.data
        if more_flags:
            f[right] = f[right] + got[-1].data
    return ([ArithShare(v, x.frac) for v, x in zip(vals, sums)],
            [ArithShare(v, x.frac) for v, x in zip(ext, extremes)])


def segmented_sum(s: SpuSession, values: list[ArithShare], starts: ArithShare) -> list[ArithShare]:
    """Inclusive running sums restarting at every start flag (`segmented_scan`): S =
    ceil(log2(n >> k)) + 2 k rounds of one batched product each (k = `scan_blocks(n, False)`)."""
    return segmented_scan(s, values, [], starts)[0]


def segmented_extreme(s: SpuSession, values: list[ArithShare], starts: ArithShare,
                      take_max: list[bool]) -> list[ArithShare]:
    """Running MIN/MAX restarting at every start flag (`segmented_scan`): (C + 2) S rounds."""
    return segmented_scan(s, [], values, starts, take_max)[1]


# --- group by -------------------------------------------------------------------------------------

AGGREGATES = ("sum", "count", "min", "max")


@dataclass
class Grouped:
    """Sorted rows with group aggregates valid where `last` = 1 (the last row of each group)."""

    keys: list[ArithShare]
    last: ArithShare
    aggregates: list[ArithShare]
    starts: ArithShare
    carried: list[ArithShare] = ()  # the `carry` columns, in the sorted order
    distinct: list[ArithShare] = ()  # per `within` entry: distinct values of weight 1 per group (valid at `last`)
    distinct_sums: list[list[ArithShare]] = ()  # per `within` entry: its `summed` limbs' sums over those values


@dataclass(frozen=True)
class Counted:
    """Rows a group counts by distinct value (the group threshold's provenance, COUNT(DISTINCT)): a
    0/1 weight and the value's limbs; `bits`, the limbs' widths where known (as `sort`'s key_bits:
    values in [0, 2^(b-1)); None: any ring value), lets the sort compare fewer bits. `summed`: the
    limbs SUM / AVG(DISTINCT) add once per distinct value (a number's value limbs; none to count only)."""

    weight: ArithShare
    values: tuple[ArithShare, ...]
    bits: tuple[int, ...] | None = None
    summed: tuple[ArithShare, ...] = ()

    def widths(self) -> list[int]:
        return list(self.bits) if self.bits is not None else [64] * len(self.values)


def group_by(s: SpuSession, keys: list[ArithShare], aggs: list[tuple[str, ArithShare | None]],
             key_bits: list[int] | None = None, carry: list[ArithShare] = (),
             within: list[Counted] = ()) -> Grouped:
    """GROUP BY keys with aggregates [(kind, column)] (kind in sum/count/min/max; count takes None).
    `key_bits` as for `sort`; `carry`: more columns sorted along (e.g. the key values themselves,
    when `keys` is one small code standing for them). `within`: for each `Counted`, `distinct` is the
    number of distinct values among each group's rows of weight 1 (the group threshold's distinct
    rows, one per protected owner). The first rides along the group sort as minor keys that do not
    split groups; each further one is sorted again, but on the group's secret rank (the running
    count of run starts: ceil(log2 n) + 1 bits) packed with its weight and its value's known width,
    not on the group keys, and carries only its `summed` limbs (`_distinct_runs`). A group occupies the same
    positions in every such order, so the run starts of all of them (times their weights) are summed
    in the one segmented scan; so are the `summed` limbs times those first rows (`distinct_sums`).

    Rounds: `sort` (N + L (C_eq + ceil(log2(k + 1)) + 1)) + `neighbour_starts` (C_eq + ceil(log2 k)
    + 1; C_eq on the keys' known widths: 3 + ceil(log2 k) + 1 for a code of <= 8 bits, 2 parties) +
    one `segmented_scan`:
    S (`segmented_sum`: ceil(log2(n >> k)) + 2 k, 20 at 10^5 rows) with SUM/COUNT only, (C + 2) S
    with any MIN/MAX (k = `scan_blocks(n, True)`), the SUMs riding along
    (see the module docstring for C, C_eq, L); the first `within` adds its keys to the sort, and
    its runs come from the same batch of neighbour equalities as the groups' (`run_starts`: at most
    one more AND round, where they took a second `neighbour_starts`); each further one a sort on one packed column (where the widths
    fit 62 bits) and a `neighbour_starts` of one key; one product round for all their weights, and one
    more for the `summed` limbs (each a column more through the sorts)."""
    n = _rows([*keys, *(c for _, c in aggs if c is not None)])
    for kind, col in aggs:
        if kind not in AGGREGATES:
            raise ProgrammingError(f"group_by: unknown aggregate {kind!r}; use one of {AGGREGATES}")
        if (col is None) != (kind == "count"):
            raise ProgrammingError(f"group_by: {kind} {'takes no' if kind == 'count' else 'needs a'} column")
    value_cols = []
    for _, col in aggs:
        if col is not None and not any(col is c for c in value_cols):
            value_cols.append(col)
    extremes: list[tuple[ArithShare, bool]] = []  # (column, take_max), each once
    for kind, col in aggs:
        if kind in ("min", "max") and not any(c is col and mx == (kind == "max") for c, mx in extremes):
            extremes.append((col, kind == "max"))
    counted = list(within)
    if n == 0:
        empty = ArithShare(np.zeros(0, np.uint64))
        return Grouped(list(keys), empty, [ArithShare(np.zeros(0, np.uint64), 0 if c is None else c.frac)
                                           for _, c in aggs], empty, list(carry), [empty] * len(counted),
                       [list(item.summed) for item in counted])
    sort_keys = list(keys)
    bits = list(key_bits) if key_bits is not None else [64] * len(keys)
    if counted:
        sort_keys += [counted[0].weight, *counted[0].values]
        bits += [2, *counted[0].widths()]
    later = [[c.weight, *c.values, *c.summed] for c in counted[1:]]
    first_summed = list(counted[0].summed) if counted else []
    sorted_keys, payload = sort(s, sort_keys, [*value_cols, *carry, *first_summed,
                                               *(c for cols in later for c in cols)], key_bits=bits)
    at = len(value_cols) + len(carry)
    payload, carried, summed, later_sorted = (payload[:len(value_cols)], payload[len(value_cols):at],
                                              [payload[at:at + len(first_summed)]] if counted else [],
                                              payload[at + len(first_summed):])
    runs = []  # (run starts of (group, weight, value), weight) of each `within`, in its own order
    equal = neighbour_equal(s, sorted_keys, bits)  # the groups' runs and the first `within`'s, one batch
    if counted:
        within_starts, starts = run_starts(s, [equal, equal[:len(keys)]])
        runs.append((within_starts, sorted_keys[len(keys)]))
        sorted_keys = sorted_keys[:len(keys)]
    else:
        (starts,) = run_starts(s, [equal])
    at = 0
    for c, cols in zip(counted[1:], later):
        width = 1 + len(c.values)
        *run, in_order = _distinct_runs(s, starts, later_sorted[at], later_sorted[at + 1:at + width], c.widths(),
                                        later_sorted[at + width:at + len(cols)])
        runs.append(tuple(run))
        summed.append(in_order)
        at += len(cols)
    firsts = arith.beaver_mul_many(s, runs) if runs else []
    added = _added_once(s, firsts, summed)
    col_of = {id(c): p for c, p in zip(value_cols, payload)}
    ones = arith.public(s, np.ones(n, np.int64))
    sums = [col_of[id(c)] for kind, c in aggs if kind == "sum"] + firsts + [c for limbs in added for c in limbs]
    want_count = any(kind == "count" for kind, _ in aggs)
    scanned, ext_out = segmented_scan(s, [*sums, *([ones] if want_count else [])],
                                      [col_of[id(c)] for c, _ in extremes], starts, [mx for _, mx in extremes])
    sum_out = scanned[:len(sums)]
    count_out = scanned[len(sums)] if want_count else None
    last = ArithShare(np.concatenate([starts.data[1:], ones.data[-1:]]))  # row i+1 starts a group
    out, si = [], 0
    for kind, col in aggs:
        if kind == "sum":
            out.append(sum_out[si])
            si += 1
        elif kind == "count":
            out.append(count_out)
        else:
            i = next(k for k, (c, mx) in enumerate(extremes) if c is col and mx == (kind == "max"))
            out.append(ext_out[i])
    distinct, rest = sum_out[si:si + len(counted)], iter(sum_out[si + len(counted):])
    return Grouped(sorted_keys, last, out, starts, carried, distinct, [[next(rest) for _ in limbs] for limbs in added])


def _added_once(s: SpuSession, firsts: list[ArithShare], summed: list[list[ArithShare]]) -> list[list[ArithShare]]:
    """Each `Counted.summed` limb times its first rows of a distinct value (one product round for all)."""
    pairs = [(first, limb) for first, limbs in zip(firsts, summed) for limb in limbs]
    got = iter(arith.beaver_mul_many(s, pairs) if pairs else [])
    return [[next(got).with_frac(limb.frac) for limb in limbs] for limbs in summed]


def _distinct_runs(s: SpuSession, starts: ArithShare, weight: ArithShare, values: list[ArithShare],
                   widths: list[int], summed: list[ArithShare] = ()
                   ) -> tuple[ArithShare, ArithShare, list[ArithShare]]:
    """(run starts of equal (group, weight, value), weight, `summed`), all in the order of a sort by the
    group's rank (the running count of `starts`, in [1, n]: local), the weight, then the value.
    Ranks ascend with the groups, so each group keeps its positions. Keys of known widths are packed
    into one column (`packed_keys`), so the sort and the run tests compare one narrow key."""
    n = len(starts)
    rank = ArithShare(np.cumsum(starts.data, dtype=np.uint64))
    keys, bits = packed_keys(s, [rank, weight, *values], [n.bit_length() + 1, 2, *widths])
    sorted_keys, (sorted_weight, *sorted_summed) = sort(s, keys, [weight, *summed], key_bits=bits)
    return neighbour_starts(s, sorted_keys, bits), sorted_weight, list(sorted_summed)


def packed_keys(s: SpuSession, keys: list[ArithShare], widths: list[int]) -> tuple[list[ArithShare], list[int]]:
    """Sort keys with neighbouring keys of known widths packed into one (`packed_groups`, without a
    tiebreak; local): (keys, their widths). Equal packed keys are equal keys, so runs test one key."""
    out, bits = [], []
    for group in packed_groups(widths, [False] * len(widths), 0):
        fields = [f for f in group if f.key < len(keys)]
        if not fields:
            continue
        if fields[0].bits is None:
            out.append(keys[fields[0].key])
            bits.append(64)
        else:
            out.append(_pack(s, fields, keys))
            bits.append(sum(f.bits for f in fields) + 1)
    return out, bits


def compact(s: SpuSession, flag: ArithShare, columns: list[ArithShare]) -> list[ArithShare]:
    """Keep the rows whose 0/1 flag is 1, in a random order: reveals only how many are kept.
    N + 1 rounds (a shuffle, one opening), whatever n."""
    n = _rows([flag, *columns])
    if n == 0:
        return list(columns)
    mixed = shuffle(s, [flag, *columns])
    (opened,) = s.open_many(arith=[mixed[0].data])
    if not np.isin(opened, (0, 1)).all():
        raise ProtocolError("compact: the selection flag is not a 0/1 share")
    keep = np.flatnonzero(opened == 1)
    return [c[keep] for c in mixed[1:]]


# --- window functions after a sort ------------------------------------------------------------------

def row_number(s: SpuSession, n: int, starts: ArithShare | None = None) -> ArithShare:
    """ROW_NUMBER() over sorted rows (public 1..n: no round), or per partition given run starts
    (a segmented sum: S rounds, `segmented_sum`)."""
    ones = arith.public(s, np.ones(n, np.int64))
    if starts is None:
        return arith.public(s, np.arange(1, n + 1, dtype=np.int64))
    return segmented_sum(s, [ones], starts)[0]


def rank(s: SpuSession, sorted_keys: list[ArithShare]) -> ArithShare:
    """RANK() over rows sorted by `sorted_keys`: 1 + position of the first row with equal keys.
    `neighbour_starts` (C_eq + ceil(log2 k) + 1 rounds) + a segmented sum (S, `segmented_sum`)."""
    n = _rows(sorted_keys)
    if n == 0:
        return ArithShare(np.zeros(0, np.uint64))
    starts = neighbour_starts(s, sorted_keys)
    at_start = starts * np.arange(1, n + 1, dtype=np.int64)  # local: public positions
    return segmented_sum(s, [at_start], starts)[0]


def dense_rank(s: SpuSession, sorted_keys: list[ArithShare]) -> ArithShare:
    """DENSE_RANK(): running count of run starts (local after the neighbour tests: C_eq + ceil(log2 k) + 1 rounds)."""
    if _rows(sorted_keys) == 0:
        return ArithShare(np.zeros(0, np.uint64))
    starts = neighbour_starts(s, sorted_keys)
    return ArithShare(np.cumsum(starts.data, dtype=np.uint64))


def limit(columns: list[ArithShare], count: int, offset: int = 0) -> list[ArithShare]:
    """LIMIT count OFFSET offset on sorted rows (public bounds: local, no round)."""
    return [c[offset:offset + count] for c in columns]


def union_all(tables: list[list[ArithShare]]) -> list[ArithShare]:
    """UNION ALL of tables with the same columns (local concatenation, no round)."""
    if not tables or len({len(t) for t in tables}) != 1:
        raise ProgrammingError("union_all: tables must have the same number of columns")
    return [arith.concat([t[k] for t in tables]) for k in range(len(tables[0]))]
