"""Issue 17's window functions, SELECT DISTINCT over aggregates and SUM / AVG / MIN / MAX(DISTINCT x) in the
enclave (`[enclave] placement = "always"`): each through `check`, EXPLAIN and execution against plain DuckDB,
with NULLs, duplicates, ties in a window's ORDER BY, empty inputs, groups below the threshold, two and three
parties; the grants decide what a window reveals (the column control every device shares); the access pattern
of a window depends on sizes only; what the enclave still refuses is named by a test."""

import json

import numpy as np
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import NotSupportedError, PolicyViolation, ProgrammingError
from sqlsecure.executors.tee.oblivious import AccessTrace, distinct_sums
from sqlsecure.executors.tee.program import EnclaveProgram, evaluate
from tests.test_enclave_clauses import oracle, thresholded  # noqa: F401  (module fixtures, built anew here)
from tests.test_enclave_functions import JOIN, PARTIES, function_tables
from tests.test_enclave_queries import enclave_section

# Ties: a window's ORDER BY keys (and PARTITION BY keys) are selected, so DuckDB's arbitrary order among peers
# cannot change the multiset of rows (ROW_NUMBER, LAG / LEAD of a tied key give the same rows either way).
WINDOWS = [
    f"SELECT b.label, v.qty, ROW_NUMBER() OVER (PARTITION BY b.label ORDER BY v.qty), RANK() OVER (PARTITION BY "
    f"b.label ORDER BY v.qty DESC), DENSE_RANK() OVER (PARTITION BY b.label ORDER BY v.qty DESC) {JOIN}",
    # NULLs in PARTITION BY (b.grade) and ORDER BY (v.coupon), NULLS FIRST, different ORDER BYs (the SPU has one)
    f"SELECT b.grade, v.coupon, RANK() OVER (PARTITION BY b.grade ORDER BY v.coupon NULLS FIRST), "
    f"DENSE_RANK() OVER (ORDER BY v.coupon DESC), ROW_NUMBER() OVER (PARTITION BY b.grade, v.coupon) {JOIN}",
    # running aggregates with the default frame: peers (ties in v.qty) share the value
    f"SELECT b.label, v.qty, SUM(v.amount) OVER (PARTITION BY b.label ORDER BY v.qty), "
    f"COUNT(v.coupon) OVER (PARTITION BY b.label ORDER BY v.qty), AVG(b.bonus) OVER (PARTITION BY b.label "
    f"ORDER BY v.qty), MIN(v.coupon) OVER (PARTITION BY b.label ORDER BY v.qty), MAX(b.price) OVER "
    f"(PARTITION BY b.label ORDER BY v.qty), COUNT(*) OVER (ORDER BY v.qty) {JOIN}",
    # whole-partition aggregates (no ORDER BY), of expressions, NULL partitions, text MIN / MAX, dates, DECIMALs
    f"SELECT b.id, v.qty, SUM(v.qty * b.n) OVER (PARTITION BY b.grade), COUNT(*) OVER (PARTITION BY v.qty > 0), "
    f"AVG(v.amount) OVER (), MAX(b.label) OVER (PARTITION BY v.coupon), MIN(v.when_) OVER (PARTITION BY b.flag), "
    f"SUM(b.price) OVER (PARTITION BY b.label), AVG(b.price) OVER (PARTITION BY b.flag) {JOIN}",
    # LAG / LEAD by constants, of numbers and text, NULL outside the partition
    f"SELECT b.label, v.qty, LAG(v.qty) OVER (PARTITION BY b.label ORDER BY v.qty), "
    f"LEAD(v.qty, 2) OVER (PARTITION BY b.label ORDER BY v.qty), LAG(v.qty, 0) OVER (ORDER BY v.qty) {JOIN}",
    f"SELECT b.grade, LAG(b.grade) OVER (ORDER BY b.grade), LEAD(b.grade, 3) OVER (ORDER BY b.grade NULLS FIRST) "
    f"{JOIN} WHERE v.qty <> b.n",
    # a cross-party WHERE before the windows; ORDER BY and LIMIT on a window's output; no rows
    f"SELECT b.label, v.qty, RANK() OVER (PARTITION BY b.label ORDER BY v.qty), SUM(v.qty) OVER (PARTITION BY "
    f"b.label) {JOIN} WHERE v.qty > b.n",
    f"SELECT b.id, v.qty, v.amount, ROW_NUMBER() OVER (ORDER BY v.amount, b.id) AS rn {JOIN} ORDER BY rn DESC LIMIT 5",
    f"SELECT b.label, ROW_NUMBER() OVER (ORDER BY b.label), SUM(v.qty) OVER () {JOIN} WHERE v.qty > 1000",
]

DISTINCT_AGGREGATES = [
    f"SELECT DISTINCT b.grade, MAX(v.coupon) {JOIN} GROUP BY b.grade, b.label",  # NULL keys and NULL maxima
    f"SELECT DISTINCT COUNT(*) AS n, MIN(b.flag) {JOIN} WHERE v.qty > b.n GROUP BY b.label, v.qty > 0 "
    f"HAVING COUNT(*) > 1 ORDER BY n DESC, MIN(b.flag) LIMIT 3",
    f"SELECT DISTINCT SUM(v.qty) {JOIN} WHERE v.qty > 1000 GROUP BY b.label",  # no rows
    # SUM / AVG / MIN / MAX(DISTINCT x): duplicates, NULLs, text, DECIMALs, floats, with HAVING, no rows
    f"SELECT b.label, SUM(DISTINCT v.qty), AVG(DISTINCT v.coupon), COUNT(*) {JOIN} GROUP BY b.label",
    f"SELECT SUM(DISTINCT v.coupon * b.n), AVG(DISTINCT b.price * v.qty), MIN(DISTINCT v.amount + b.n), "
    f"MAX(DISTINCT b.grade), SUM(DISTINCT b.price * v.qty) {JOIN} WHERE v.qty > b.n",
    f"SELECT b.grade, SUM(DISTINCT v.amount), AVG(DISTINCT v.qty * b.n) {JOIN} WHERE v.qty > b.n GROUP BY b.grade "
    f"HAVING SUM(DISTINCT v.qty) > 0",
    f"SELECT b.flag, SUM(DISTINCT NULLIF(v.qty, v.qty)), AVG(DISTINCT b.bonus), MAX(DISTINCT v.when_) {JOIN} "
    f"GROUP BY b.flag",
]

THREE_PARTIES = ("FROM bank.customers c JOIN shop.orders o ON c.id = o.customer_id "
                 "JOIN insurer.policies p ON p.customer_id = c.id")
THREE_PARTY_QUERIES = [
    f"SELECT c.region, p.claims, RANK() OVER (PARTITION BY c.region ORDER BY p.claims DESC), "
    f"SUM(o.amount) OVER (PARTITION BY c.region, p.claims), LAG(p.claims) OVER (PARTITION BY c.region "
    f"ORDER BY p.claims) {THREE_PARTIES}",
    f"SELECT DISTINCT c.region, SUM(DISTINCT p.claims), MAX(p.claims) {THREE_PARTIES} "
    f"GROUP BY c.region, o.category",
]


@pytest.fixture(scope="module")
def three(tmp_path_factory, make_federation, oracle_for, plaintext_grants):
    directory = tmp_path_factory.mktemp("enclave-windows-three")
    with Engine(make_federation(directory, plaintext_grants() + always(directory))) as engine:
        yield oracle_for(engine)


def always(directory) -> str:
    return enclave_section(directory).replace("[enclave]\n", '[enclave]\nplacement = "always"\n')


def in_the_enclave(oracle, sql: str, issuer: str = "bank"):
    assert oracle.engine.check(sql, issuer) is None
    assert "TEEU(enclave" in oracle.engine.explain(sql, issuer)
    return oracle.check(sql, issuer)


@pytest.mark.parametrize("sql", WINDOWS)
def test_windows_in_the_enclave_match_duckdb(oracle, sql):
    in_the_enclave(oracle, sql)


@pytest.mark.parametrize("sql", DISTINCT_AGGREGATES)
def test_distinct_over_and_inside_aggregates_match_duckdb(oracle, sql):
    in_the_enclave(oracle, sql)


@pytest.mark.parametrize("sql", [DISTINCT_AGGREGATES[0], DISTINCT_AGGREGATES[3]])
def test_distinct_aggregates_keep_groups_below_the_threshold_hidden(thresholded, sql):
    in_the_enclave(thresholded, sql)


@pytest.mark.parametrize("sql", THREE_PARTY_QUERIES)
def test_three_parties_match_duckdb(three, sql):
    in_the_enclave(three, sql, "insurer")


@pytest.fixture(scope="module")
def ranked(tmp_path_factory, federation_writer, oracle_for, grants_for):
    """bank may rank shop's v.qty (REVEAL_RANK) and see its join key, nothing else of shop's."""
    directory = tmp_path_factory.mktemp("enclave-windows-grants")
    grants = grants_for(("bank", ("shop.visits.person_id",), "PLAINTEXT"),
                        ("bank", ("shop.visits.qty",), "REVEAL_RANK"),
                        ("shop", ("bank.people.id",), "PLAINTEXT")) + always(directory)
    with Engine(federation_writer(directory, function_tables(), grants, parties=PARTIES, min_group_size=1)) as engine:
        yield oracle_for(engine)


def test_a_window_reveals_only_what_the_grants_allow(ranked):
    """The column control every device shares: RANK over a REVEAL_RANK column runs in the enclave; its value,
    a running SUM of it (no aggregation: one row's value shows) or a partition by it (a comparison) is refused."""
    in_the_enclave(ranked, f"SELECT b.id, b.label, RANK() OVER (PARTITION BY b.label ORDER BY v.qty) {JOIN}")
    for sql in (f"SELECT b.id, SUM(v.qty) OVER (PARTITION BY b.label) {JOIN}",
                f"SELECT b.id, LAG(v.qty) OVER (ORDER BY b.id) {JOIN}",
                f"SELECT b.id, COUNT(*) OVER (PARTITION BY v.qty) {JOIN}"):
        with pytest.raises(PolicyViolation, match="qty"):
            ranked.engine.plan(sql, "bank")


@pytest.mark.parametrize("sql, named", [
    (f"SELECT b.id, SUM(v.qty) OVER (ORDER BY b.id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) {JOIN}", "frame"),
    (f"SELECT b.id, NTILE(2) OVER (ORDER BY v.qty) {JOIN}", "NTILE"),
    (f"SELECT b.id, FIRST_VALUE(v.qty) OVER (ORDER BY v.qty) {JOIN}", "FIRST_VALUE"),
    (f"SELECT b.id, LAG(v.qty, 1, 0) OVER (ORDER BY v.qty) {JOIN}", "default"),
    (f"SELECT b.id, SUM(DISTINCT v.qty) OVER (PARTITION BY b.label) {JOIN}", "OVER"),
    (f"SELECT b.label, RANK() OVER (ORDER BY SUM(v.qty)) {JOIN} GROUP BY b.label", "grouped query"),
    (f"SELECT b.id, ROW_NUMBER() OVER (ORDER BY v.qty) + 1 {JOIN}", "inside an expression"),
    (f"SELECT DISTINCT b.label, RANK() OVER (ORDER BY v.qty) {JOIN}", "DISTINCT"),
    (f"SELECT b.label, COUNT(DISTINCT v.qty, b.n) {JOIN} GROUP BY b.label", "COUNT(DISTINCT"),
    (f"SELECT b.label, AVG(DISTINCT v.when_) {JOIN} GROUP BY b.label", "AVG of a date"),
    (f"SELECT b.id, CAST(b.n + v.qty AS VARCHAR) {JOIN}", "VARCHAR"),
    (f"SELECT b.label, MAX(v.qty) {JOIN} GROUP BY b.label ORDER BY MAX(v.qty) + 1", "ORDER BY"),
])
def test_what_the_enclave_still_refuses_is_named(oracle, assert_refused, sql, named):
    assert "enclave" in str(assert_refused(oracle.engine, sql, "bank", NotSupportedError, named))


WINDOW_PROGRAM = EnclaveProgram(
    select=("k", "v", "r", "s", "s#null", "l", "l#null"), where="w",
    windows=[("rank", None, "r", ("k",), (("v", True),), 1), ("sum", "v", "s", ("k",), (("v", False),), 1),
             ("lag", "v", "l", (), (("k", False), ("v", False)), 2)], order=(("r", False),), limit=5)


def test_windows_have_a_data_independent_access_pattern():
    """Every compare-exchange, scan pass and shift the same for two inputs of the same size."""
    digests = set()
    for seed in (5, 6):
        rng = np.random.default_rng(seed)
        trace = AccessTrace()
        evaluate(WINDOW_PROGRAM, {"k": rng.integers(0, 3, 25), "v": rng.integers(-4, 4, 25),
                                  "w": rng.integers(0, 2, 25)}, trace=trace)
        digests.add((tuple(trace.pairs()), tuple(e for e in trace.events if e[0] not in ("cx", "cut"))))
    assert len(digests) == 1  # the final cut's length (the result size) is the one size-dependent access


def test_distinct_sums_have_a_data_independent_access_pattern_and_skip_nulls():
    keys = [np.array([0, 0, 0, 0, 1, 1, 1])]
    flag, value = np.array([0, 0, 1, 0, 0, 1, 0]), np.array([5, 5, 0, 7, 2, 0, 2])
    sums, counts = distinct_sums(keys, flag, value)
    assert (sums[3], counts[3], sums[6], counts[6]) == (12, 2, 2, 1)
    traces = set()
    for seed in (7, 8):
        rng = np.random.default_rng(seed)
        trace = AccessTrace()
        distinct_sums([rng.integers(0, 3, 20)], rng.integers(0, 2, 20), rng.normal(size=20), trace)
        traces.add(trace.digest())
    assert len(traces) == 1


def test_the_program_round_trips_windows_and_distinct():
    grouped = EnclaveProgram(group_keys=("k",), aggregates=[("sum_distinct", "v", "s")], distinct=True)
    for program in (WINDOW_PROGRAM, grouped):
        assert EnclaveProgram.from_bytes(program.to_bytes()) == program


def test_the_plan_computes_windows_in_the_enclave_program(oracle):
    sql = f"SELECT b.label, v.qty, LAG(v.qty, 2) OVER (PARTITION BY b.label ORDER BY v.qty) {JOIN}"
    stage = next(s for s in oracle.engine.plan(sql, "bank").physical.steps if type(s).__name__ == "EnclaveStage")
    (window,) = EnclaveProgram.from_json(json.loads(stage.program)).windows
    assert (window.kind, window.offset) == ("lag", 2)


def test_a_cross_party_where_that_no_output_reads_reaches_the_enclave(oracle):
    """shop's v.qty is read only by the WHERE (and the SPU has no ILIKE): shop still seals it to the enclave."""
    in_the_enclave(oracle, f"SELECT b.id, b.grade ILIKE 'G%' {JOIN} WHERE v.qty > b.n")


@pytest.mark.parametrize("program, named", [
    (dict(group_keys=("k",), windows=[("rank", None, "r", (), (("k", False),), 1)]), "plain program"),
    (dict(select=("k",), distinct=True), "grouped program"),
    (dict(select=("k",), windows=[("ntile", None, "r", (), (), 1)]), "unknown window"),
    (dict(select=("k",), windows=[("lag", "k", "l", (), (), -1)]), "offset"),
    (dict(group_keys=("k",), aggregates=[("count", None, "n")], hidden=("k",), distinct=True,
          order=(("k", False),)), "ORDER BY"),
])
def test_a_malformed_window_or_distinct_program_is_refused(program, named):
    with pytest.raises(ProgrammingError, match=named):
        EnclaveProgram(**program)
