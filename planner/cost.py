"""Cost model for class 4 — GROUP BY keys at one party, SUM/AVG/COUNT of another's values — on HE or the SPU.

The two paths cost differently. HE (`he_group_sum`) is compute-bound: the value owner encrypts
ciphertexts that each carry several rows (`executors/heu/packing.py` chooses how many), the key
owner multiplies them into per-group accumulators, and the value owner decrypts one masked sum per
group and row slot; three rounds after the PSI and 512 B per ciphertext (2048-bit keys), the
ciphertexts' megabytes waiting on the transport's windows over a long link. The SPU sorts the rows
by key on secret shares: cheaper per row at small sizes but 50-100 round trips, kilobytes per
row between the parties, hundreds of bytes of memory per row and column, and a per-row cost that
grows with the size (memory traffic). So in process the SPU is faster, and HE is chosen when the
SPU would need too much memory (from a few 10^6 rows, with the 16 GiB assumed per compute party) or over a slow link
once the SPU's bytes and rounds outgrow HE's compute.

`estimate` prices both from the rows entering the aggregate, the groups (no statistic on distinct
values is shared, so the model assumes √rows, or fewer where integer keys' published magnitude
classes allow fewer: |v| < 2^M has at most 2^(M+1) - 1 values), the aggregates and their distinct
value columns, the key's limbs and the link.

The rows are `expected_rows`: the largest published size among the join's inputs (row counts the
parties publish rounded up to a power of two) times the default selectivity of each filter the
query states (System R's, Selinger et al. 1979): what the query text and the published sizes tell,
nothing a party has not published. The bound alone (TPC-H Q10 at SF 1: 2^23 lineitem rows where
the join keeps 114,705) priced every filtered join as its largest table. The PSI's output size
would be exact, but it is known only at run time, after the plan, its device and what each party
learns there were fixed, checked and shown by EXPLAIN; so the choice stays at plan time. The memory
limit, too, is judged on the estimate: a filter far less selective than assumed can give the SPU
more rows than priced.

When the group party numbers the groups (its plain key columns, `stage.group_code`), the SPU sorts
one narrow code and carries the key's limbs along (a shuffle and a local gather each, no
comparisons): `key_limbs` is what the sort compares, `carried` what rides along. HE's compute comes
from `he_group_sum_seconds` (calibrated by `bench/he.py`); the SPU's time and memory from the
engine's class-4 query in the same bench. An SPU that would need more than a quarter of the RAM
assumed per compute party (16 GiB: a constant, so every party derives the same plan) is not chosen. They set the crossover on the reference machine, not a promise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from sqlglot import exp

from sqlsecure.executors.heu.packing import he_group_sum_seconds

# Over shaped links (bench/network.py): the HE class-4 query paid ~18 round trips at 10^3 rows (issue 20:
# the run, the PSI's ~10, HE's three rounds, the reveal), but at 10^5 rows per party its time grew by
# 3.7 s from 20 to 80 ms RTT beyond its 17 MB over the slower bandwidth: ~52 round trips (2026-12-07; ~36
# in issue 20's run). Its few large messages (megabytes of ciphertexts) wait on the transport's windows:
# priced as one more round trip per HE_WINDOW_BYTES of ciphertexts, fitted on the mean of the two runs.
HE_RTTS = 18  # round trips of the HE class-4 query, the PSI before it and the reveal included
HE_WINDOW_BYTES = 320_000  # ciphertext bytes per further round trip (131,072 rows: 8.4 MB, 26 more)
HE_FIXED = 1.0  # s: a fresh Paillier key pair, fixed-base tables, worker start (measured at ~150 rows)

# SPU group-by through the engine (PSI-aligned rows shared, sorted on the key owner's group numbers
# with the key values carried along, compacted to the kept groups, then AVG's divisions) —
# bench/he.py, a text key (4 limbs) and SUM, COUNT, AVG of one column (width 7): the stage takes
# 2.1 s at 10^5 rows and 22.9 s at 10^6, peak 0.5 and 2.4 GB for the process; its parties are
# threads that share the interpreter, so wall ≈ CPU. (Keys that are expressions sort on their
# limbs: about 1.7x slower.)
# That bench's 2.1 s at 10^5 rows split between the compared columns (the code and the three aggregates)
# and the five carried ones (the key's validity and 4 limbs), a carried column taken as a quarter of a
# compared one (a shuffle and a gather against comparisons or scans): 4 a + 5 a / 4 = 7 x 2.3e-6 s.
SPU_FIXED = 0.5  # s: setup, shapes, the dealer's seeds, the result's opening (measured at ~150 rows)
SPU_ROW = 3.07e-6  # s per row and per compared key limb or aggregate, at 10^5 rows
SPU_CARRY_ROW = SPU_ROW / 4  # s per row and per carried column (key validity or limb sorted along)
SPU_GROWTH = 0.14  # per-row cost ∝ (rows / 10^5) ** SPU_GROWTH above 10^5 rows
SPU_MEMORY_ROW = 640  # peak bytes per row and per compared key limb or aggregate (the sort's shares and randomness)
SPU_MEMORY_CARRY = 48  # peak bytes per row and per carried column: shares, shuffled, gathered (8 B x 2 parties x 3)
SPU_MEMORY_SHARE = 0.25  # the SPU is not chosen when it would need more than this share of the RAM
# Over shaped links (bench/network.py, issue 20): the multi-pivot sort's levels grow as log2(rows)
# (`relational.sort`: ~4 log2(rows) rounds for a group-by with one key code, ~5 before its pair budget), and over streams a
# round in which both parties send costs about half an RTT; with the PSI, the sharing and the reveal
# the class-4 query paid ~50 RTT at 10^4 rows over 80 ms (2026-12-06). The parties exchanged
# 19.5 MB at 10^4 rows (a key code and two aggregates): ~73 B per row, column and log2(rows), the
# sort's comparisons growing as n log n. (The one-pivot quicksort before paid ~200 RTT at 10^3 rows,
# and the model's log2(rows)^2 rounds priced it.) Since the key code is packed with the sort's
# tiebreak into one comparison in split lanes and the scan opens 1 - f once (issue 20, 2026-12-07),
# the class-4 query at 10^5 rows per party moved 203 MB (332 MB before): 46 B per published row
# (131072), column and log2(rows); 13.9 s predicted at 80 ms / 200 Mbit against 15.5 s measured on
# a machine loaded ~7x its cores (19.1 s predicted against 24.9 s before).
# The sort's pair budget per level, the balanced joins of its compared columns and the run tests on the
# code's bits (issue 20, branch `gbround`) cut the group-by's rounds in process from 39 / 59 / 74 to
# 31 / 50 / 59 at 10^3 / 10^4 / 10^5 rows (one key code, SUM and COUNT; `relational.group_by`): 0.8x at
# 10^5, less the fixed part; the round trips per bit fall from 2.5 (fitted on the measured runs before)
# to 2.1. Measured after (2026-12-07, load 12-20): 13.1 s at 80 ms / 200 Mbit (priced 14.1) and 5.2 s
# at 20 ms / 1 Gbit (priced 4.25), the compute under that load above its price as before.
# Seven pivots per level in sorts of more than 4096 rows and Brent–Kung block levels around the
# scan's Sklansky core (issue 20, branch `gb80`, 2026-12-07): the class-4 query at 10^5 rows per party
# moved 165 MB (204 MB before, exact counts): 37 B per published row, column and log2(rows). Its
# operator takes 9 rounds more at 10^5 rows (59 -> 68: one sort level, three scan levels), none at
# 10^3 or 10^4; the round trips per bit are not refitted (the runs' seconds were taken at load 26-33).
SPU_RTTS_FIXED = 15  # round trips of the PSI, the sharing, the compaction and the reveal
SPU_RTTS_PER_BIT = 2.1  # round trips per bit of log2(rows)
SPU_BYTES_ROW_BIT = 37  # bytes between the parties per row, per compared key limb or aggregate, per bit of log2(rows)
SPU_BYTES_CARRY = 24  # bytes per row and per carried column: the sort's shuffle (2 rounds of 8 B), the compaction's


# The one-hot group sums (`spu.one_hot_group`, issue 20): where the key owner's plain integer keys have
# at most G groups by their published classes, each other compute party receives 8 G bytes per row
# (one round) where the sort sends SPU_BYTES_ROW_BIT per row, compared column and bit of log2(rows) over
# ~2.1 round trips per bit. It is chosen where it sends fewer bytes than the sort would at its smallest
# priced size (ONE_HOT_LOG_ROWS bits: 1024 rows), so at every size: the rule needs no row count, and
# the planner, EXPLAIN and every party derive the same path from the same public classes.
ONE_HOT_LOG_ROWS = 10
# Its stage took 13 rounds in process at 10^5 rows per party (setup, the sums' 1, the count tests' 6 on the
# G group rows, the compaction's 3, the reveal) where the sort's took 80 (2026-12-07, branch `net13`); the
# rounds beyond SPU_RTTS_FIXED's (setup, compaction, reveal) at the sort's ~0.48 round trips per round
# (80 - 5 rounds priced 2.1 x 17 = 35.7): 4. Its compute, the owner's masks, the other party's G x n by
# n x C product and the dealer's u^T R: 0.11 s at 10^5 rows and G = 32, 0.57 s at G = 128 (3 columns, in
# process): ONE_HOT_ROW_GROUP per row and group; each summed column's sharing and weighting at SPU_ROW, as
# the sort's price has them (the whole class-4 query took 0.66-0.77 s of CPU against the sort's 0.98-1.06 s
# in paired in-process runs at 10^5 rows per party, load 15: the price, 1.49 against 1.54 s, is cautious).
ONE_HOT_RTTS = 4
ONE_HOT_ROW_GROUP = 4.5e-8  # s per row and group


def one_hot_chosen(groups: int | None, aggregates: int, parties: int = 2) -> bool:
    """Whether the one-hot group sums beat the sort in bytes at every size: G groups, `aggregates`
    summed columns (the sort also compares the key code), `parties` compute parties."""
    return groups is not None and groups >= 1 and \
        8 * groups * (parties - 1) <= SPU_BYTES_ROW_BIT * (1 + aggregates) * ONE_HOT_LOG_ROWS


@dataclass(frozen=True)
class Link:
    """The link between the parties as the planner assumes it: round-trip seconds and bytes/second."""

    rtt: float = 0.0
    bandwidth: float = math.inf

    def describe(self) -> str:
        if self.rtt == 0 and math.isinf(self.bandwidth):
            return "in-process link"
        return f"link {self.rtt * 1000:g} ms round trip, {self.bandwidth * 8 / 1e6:g} Mbit/s"


@dataclass(frozen=True)
class Price:
    """One path's predicted cost: its compute seconds, the round trips it waits for and the bytes it sends
    between the parties. Over a link it takes compute + round trips × RTT + bytes / bandwidth: the
    planner's choice and `bench/network.py`'s prediction read the same sum."""

    compute: float
    round_trips: float
    bytes: float

    def seconds(self, link: Link) -> float:
        return self.compute + self.round_trips * link.rtt + self.bytes / link.bandwidth


@dataclass(frozen=True)
class Estimate:
    engine: str  # "he" or "spu"
    he_seconds: float
    spu_seconds: float
    why: str
    he_cpu_seconds: float = 0.0  # HE's CPU over its worker processes (the bench compares it with measured CPU)
    he: Price | None = None  # the parts of he_seconds and spu_seconds
    spu: Price | None = None


ASSUMED_MEMORY = 16 << 30  # bytes of RAM the model assumes every compute party has


def memory_bytes() -> int:
    """The RAM the model assumes a compute party has: a constant, not this machine's, since every party
    re-derives the plan on its own machine and all must choose the same device."""
    return ASSUMED_MEMORY


def estimate(rows: int, columns: int, key_limbs: int, link: Link, cores: int = 2,
             key_bits: int = 2048, arguments: int | None = None, memory: int | None = None,
             carried: int = 0, groups: int | None = None, one_hot: bool = False, parties: int = 2) -> Estimate:
    """Price both paths for `rows` rows and `columns` aggregates (over `arguments` distinct value
    columns, default as many), the SPU's sort comparing `key_limbs` limbs and carrying `carried`
    columns along, and at most `groups` groups (None: no bound; √rows are assumed, fewer if bounded);
    `one_hot`: the SPU runs the one-hot group sums into the `groups` bound instead (`one_hot_price`, between
    `parties` compute parties); pick
    the cheaper, but not an SPU that would take more than a quarter of `memory` (default: the
    assumed `memory_bytes()`)."""
    rows = max(int(rows), 1)
    bound = groups
    assumed = groups is None or groups >= math.isqrt(rows)
    groups = max(1, min(math.isqrt(rows), groups if groups is not None else rows))
    # the engine sends each distinct value column with its validity column
    he_cpu, he_compute, plan = he_group_sum_seconds(rows, groups, 2 * (arguments or columns), key_bits, cores)
    ciphertext_bytes = math.ceil(rows / plan.rows_per_ciphertext) * (2 * key_bits // 8)
    he_price = Price(HE_FIXED + he_compute, HE_RTTS + ciphertext_bytes / HE_WINDOW_BYTES, ciphertext_bytes)
    one_hot = one_hot and bound is not None
    spu_price = one_hot_price(rows, bound, columns, parties) if one_hot else spu_group_by_price(rows, key_limbs + columns, carried)
    he, spu = he_price.seconds(link), spu_price.seconds(link)
    spu_bytes = rows * (8 * 3 * (bound + columns) if one_hot else
                        (key_limbs + columns) * SPU_MEMORY_ROW + carried * SPU_MEMORY_CARRY)
    too_big = spu_bytes > SPU_MEMORY_SHARE * (memory or memory_bytes())
    engine = "he" if he < spu or too_big else "spu"
    sorted_on = f"{key_limbs} key limb(s) compared" + (f", {carried} carried" if carried else "")
    if one_hot:
        sorted_on = f"no sort: one-hot group sums into {bound:,} group rows"
    told = "assumed √rows" if assumed else "at most, by the keys' published magnitude classes"
    why = (f"cost model: ~{rows:,} rows, ~{groups:,} groups ({told}), {columns} aggregate(s), "
           f"{sorted_on}, {link.describe()}: HE ≈ {he:.3g} s "
           f"({plan.rows_per_ciphertext} row(s) per ciphertext), SPU ≈ {spu:.3g} s"
           + (f" but ≈ {spu_bytes / 2**30:.1f} GiB, more than a quarter of a compute party's assumed memory" if too_big else ""))
    return Estimate(engine, he, spu, why, HE_FIXED + he_cpu, he_price, spu_price)


def one_hot_price(rows: int, groups: int, columns: int, parties: int = 2) -> Price:
    """The SPU's one-hot group sums (`spu.one_hot_group`) of `rows` rows into `groups` group rows, `columns`
    summed columns: no sort, 8 G bytes per row from the key owner and 8 per row and column back, per other
    compute party; a fixed number of round trips."""
    compute = SPU_FIXED + rows * (columns * SPU_ROW + groups * ONE_HOT_ROW_GROUP)
    return Price(compute, SPU_RTTS_FIXED + ONE_HOT_RTTS, rows * 8 * (groups + columns) * (parties - 1))


def spu_group_by_price(rows: int, width: int, carried: int) -> Price:
    """The SPU group-by of `rows` rows, `width` compared or aggregated columns and `carried` ones sorted
    along: its compute (the per-row cost growing with the size: memory traffic), its round trips (the
    sort's levels grow as log2(rows)) and its bytes (the sort's comparisons as n log n; a carried column
    is shuffled, not compared)."""
    bits = math.log2(max(rows, 2))
    growth = max(1.0, rows / 1e5) ** SPU_GROWTH
    compute = SPU_FIXED + rows * (width * SPU_ROW + carried * SPU_CARRY_ROW) * growth
    sent = rows * (width * SPU_BYTES_ROW_BIT * bits + carried * SPU_BYTES_CARRY)
    return Price(compute, SPU_RTTS_FIXED + SPU_RTTS_PER_BIT * bits, sent)


# Default selectivities of a filter whose column has no published statistic (System R: Selinger et al.,
# "Access Path Selection in a Relational Database Management System", SIGMOD 1979).
EQUAL_SELECTIVITY = 1 / 10  # column = constant (and LIKE, IS NULL)
RANGE_SELECTIVITY = 1 / 3  # column < constant, >, <=, >=
BETWEEN_SELECTIVITY = 1 / 4
UNKNOWN_SELECTIVITY = 1.0  # anything else: no reduction assumed


def selectivity(condition: exp.Expression) -> float:
    """System R's default fraction of rows `condition` keeps; a comparison of two columns (a join
    condition inside one party) keeps them all."""
    if isinstance(condition, exp.Paren):
        return selectivity(condition.this)
    if isinstance(condition, exp.And):
        return selectivity(condition.left) * selectivity(condition.right)
    if isinstance(condition, exp.Or):
        a, b = selectivity(condition.left), selectivity(condition.right)
        return a + b - a * b
    if isinstance(condition, exp.Not):
        return 1 - selectivity(condition.this)
    if len(list(condition.find_all(exp.Column))) != 1:
        return UNKNOWN_SELECTIVITY
    if isinstance(condition, (exp.EQ, exp.Like, exp.ILike, exp.Is)):
        return EQUAL_SELECTIVITY
    if isinstance(condition, exp.NEQ):
        return 1 - EQUAL_SELECTIVITY
    if isinstance(condition, (exp.LT, exp.LTE, exp.GT, exp.GTE)):
        return RANGE_SELECTIVITY
    if isinstance(condition, exp.Between):
        return BETWEEN_SELECTIVITY
    if isinstance(condition, exp.In) and condition.expressions:
        return min(0.5, len(condition.expressions) * EQUAL_SELECTIVITY)
    return UNKNOWN_SELECTIVITY


def expected_rows(published: list[int | None], filters: list[exp.Expression]) -> int | None:
    """Rows a join of inputs of these published sizes keeps after these filters (None: no size known):
    the largest input (joins along unique keys yield at most one row per row of the many side, a star's
    fact table; a many-to-many join can yield more) times each filter's default selectivity, at least
    one row."""
    known = [n for n in published if n is not None]
    if not known:
        return None
    return max(1, round(max(known) * math.prod(selectivity(f) for f in filters)))


def choose(priced: Estimate, cannot: dict[str, str]) -> Estimate:
    """`priced`, limited to the devices that can run the query: `cannot` maps "he" / "spu" to why that
    device cannot. The cost model compares only the capable ones; with none, the priced choice stands
    (and is refused, naming why, where it is built)."""
    capable = [engine for engine in ("he", "spu") if engine not in cannot]
    if len(capable) != 1 or priced.engine == capable[0]:
        return priced
    other = priced.engine
    return replace(priced, engine=capable[0],
                   why=f"only {capable[0].upper()} can run it ({other.upper()}: {cannot[other]}); {priced.why}")
