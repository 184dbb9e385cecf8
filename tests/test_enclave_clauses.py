"""Issue 17's clauses in the enclave (`[enclave] placement = "always"`): HAVING, COUNT(DISTINCT ...), text
group keys and MIN / MAX of text as outputs, OFFSET, LIKE ... ESCAPE and ILIKE; each through `check`, EXPLAIN
and execution against plain DuckDB, with NULLs, duplicates, empty inputs and groups below the threshold. The
clauses the enclave still refuses are named by a test (windows, DISTINCT over and inside aggregates:
tests/test_enclave_windows.py)."""

import json

import numpy as np
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import NotSupportedError
from sqlsecure.executors.tee.oblivious import AccessTrace, distinct_per_group
from sqlsecure.executors.tee.program import EnclaveProgram, evaluate
from tests.test_enclave_functions import JOIN, PARTIES, enclave_federation, function_tables
from tests.test_enclave_queries import enclave_section

CLAUSES = [
    # HAVING: on output aggregates, on aggregates that are not outputs, on group keys, with NULLs
    f"SELECT b.label, COUNT(*), SUM(v.qty) {JOIN} GROUP BY b.label HAVING SUM(v.qty) > 0",
    f"SELECT b.label, COUNT(*) {JOIN} GROUP BY b.label HAVING AVG(v.amount) < 5 AND MAX(b.n) >= 3",
    f"SELECT b.grade, v.coupon, COUNT(*) {JOIN} GROUP BY b.grade, v.coupon "
    f"HAVING SUM(b.bonus) IS NULL OR b.grade = 'g1'",
    f"SELECT YEAR(v.day) AS y, COUNT(*), SUM(b.n) {JOIN} GROUP BY YEAR(v.day) HAVING COUNT(*) > 3 AND YEAR(v.day) > 2023",
    f"SELECT b.label, SUM(v.qty) {JOIN} GROUP BY b.label HAVING SUM(v.qty) // NULLIF(COUNT(v.coupon), 0) > 0",
    f"SELECT COUNT(*), SUM(v.amount * b.score) {JOIN} HAVING COUNT(*) > 1",
    f"SELECT b.label, COUNT(*) AS n {JOIN} GROUP BY b.label HAVING MAX(v.lon) > 100 AND MIN(b.grade ILIKE 'G%') "
    f"AND n > 2",  # shop's column read by HAVING only; an output's alias; ILIKE (the SPU has no rule for it)
    f"SELECT b.label, SUM(v.qty) {JOIN} WHERE v.qty > 1000 GROUP BY b.label HAVING COUNT(*) > 0",
    # COUNT(DISTINCT): numbers, text, dates, NULLs, with and without other aggregates
    f"SELECT b.label, COUNT(DISTINCT v.qty), COUNT(*) {JOIN} GROUP BY b.label",
    f"SELECT v.qty > 0 AS pos, COUNT(DISTINCT b.grade), COUNT(DISTINCT v.coupon), SUM(v.amount) {JOIN} "
    f"GROUP BY v.qty > 0",
    f"SELECT b.flag, COUNT(DISTINCT v.when_), COUNT(DISTINCT b.label) {JOIN} GROUP BY b.flag",
    f"SELECT COUNT(DISTINCT v.qty + b.n), COUNT(DISTINCT b.grade) {JOIN}",
    f"SELECT b.label, COUNT(DISTINCT v.qty) {JOIN} GROUP BY b.label HAVING COUNT(DISTINCT v.qty) > 3",
    f"SELECT b.label, COUNT(DISTINCT v.qty) {JOIN} WHERE v.qty > 1000 GROUP BY b.label",
    # text group keys and MIN / MAX of text as outputs
    f"SELECT b.grade, MIN(b.label), MAX(b.label), COUNT(*) {JOIN} GROUP BY b.grade",
    f"SELECT v.qty > 0 AS pos, MIN(b.grade), MAX(b.grade) {JOIN} GROUP BY v.qty > 0 HAVING MAX(b.grade) = 'g1'",
    # ORDER BY an aggregate that is not an output (computed, never revealed)
    f"SELECT b.label, COUNT(*) AS n {JOIN} GROUP BY b.label ORDER BY SUM(v.qty) DESC, n LIMIT 3",
    f"SELECT SUM(v.qty) AS s {JOIN} GROUP BY b.label ORDER BY b.label DESC LIMIT 2",  # a key not output
    f"SELECT b.label, COUNT(*) {JOIN} GROUP BY b.label ORDER BY MAX(v.lon) LIMIT 2",  # another party's, hidden
    # OFFSET, after ORDER BY of outputs (ties broken by every output)
    f"SELECT b.id, v.qty, v.amount {JOIN} ORDER BY v.amount DESC, b.id, v.qty LIMIT 5 OFFSET 3",
    f"SELECT b.label, COUNT(*) AS n {JOIN} GROUP BY b.label ORDER BY n DESC, b.label LIMIT 2 OFFSET 1",
    f"SELECT b.label, COUNT(*) AS n {JOIN} GROUP BY b.label ORDER BY b.label OFFSET 2",
    f"SELECT b.id, v.qty {JOIN} ORDER BY b.id, v.qty, v.amount LIMIT 4 OFFSET 1000",
    # LIKE ... ESCAPE and ILIKE with constant patterns
    f"SELECT b.id, v.qty, b.label LIKE 'p!%' ESCAPE '!', b.grade ILIKE 'G%' {JOIN} WHERE v.qty > b.n",
]


@pytest.fixture(scope="module")
def oracle(tmp_path_factory, federation_writer, oracle_for, plaintext_grants):
    with Engine(enclave_federation(tmp_path_factory.mktemp("enclave-clauses"), federation_writer,
                                   plaintext_grants)) as engine:
        yield oracle_for(engine)


@pytest.fixture(scope="module")
def thresholded(tmp_path_factory, federation_writer, oracle_for, plaintext_grants):
    """The same data with min_group_size = 4: groups of fewer rows are never revealed."""
    directory = tmp_path_factory.mktemp("enclave-threshold")
    grants = plaintext_grants(PARTIES) + enclave_section(directory).replace(
        "[enclave]\n", '[enclave]\nplacement = "always"\n')
    with Engine(federation_writer(directory, function_tables(), grants, parties=PARTIES, min_group_size=4)) as engine:
        yield oracle_for(engine)


@pytest.mark.parametrize("sql", CLAUSES)
def test_clauses_in_the_enclave_match_duckdb(oracle, sql):
    assert oracle.engine.check(sql, "bank") is None
    assert "TEEU(enclave" in oracle.engine.explain(sql, "bank")
    oracle.check(sql, "bank")


@pytest.mark.parametrize("sql", [s for s in CLAUSES if "GROUP BY" in s])
def test_groups_below_the_threshold_stay_hidden(thresholded, sql):
    assert "TEEU(enclave" in thresholded.engine.explain(sql, "bank")
    thresholded.check(sql, "bank")


def test_a_having_aggregate_that_is_not_an_output_is_not_revealed(oracle):
    """HAVING AVG(v.amount) is computed in the enclave only: the result carries the query's columns."""
    sql = f"SELECT b.label, COUNT(*) {JOIN} GROUP BY b.label HAVING AVG(v.amount) < 5"
    assert oracle.engine.execute(sql, "bank").table.num_columns == 2


@pytest.mark.parametrize("sql, named", [
    (f"SELECT b.label, COUNT(DISTINCT v.qty, b.n) {JOIN} GROUP BY b.label", "COUNT(DISTINCT"),
    (f"SELECT b.label, COUNT(*) {JOIN} GROUP BY b.label HAVING SIGN(SUM(v.qty)) > 0", "HAVING SIGN"),
    (f"SELECT b.id, CAST(b.n + v.qty AS VARCHAR) {JOIN}", "VARCHAR"),
])
def test_what_the_enclave_still_refuses_is_named(oracle, sql, named):
    with pytest.raises(NotSupportedError, match="enclave") as refused:
        oracle.engine.plan(sql, "bank")
    assert named.lower() in str(refused.value).lower()
    assert oracle.engine.check(sql, "bank").startswith("NotSupportedError")


def test_count_distinct_has_a_data_independent_access_pattern():
    """Two inputs of the same size, different keys, values and NULLs: the same trace."""
    traces = []
    for seed in (1, 2):
        rng = np.random.default_rng(seed)
        keys = [rng.integers(0, 3, 20)]
        values = [rng.integers(0, 2, 20), rng.integers(-5, 5, 20)]  # a NULL flag, then the value
        trace = AccessTrace()
        distinct_per_group(keys, values, trace, skip_first=True)
        traces.append(trace.digest())
    assert traces[0] == traces[1]


def test_count_distinct_skips_the_rows_whose_flag_is_set():
    keys = [np.array([0, 0, 0, 0, 1, 1])]
    flag, value = np.array([0, 0, 1, 0, 1, 1]), np.array([5, 5, 0, 7, 0, 0])
    counts = distinct_per_group(keys, [flag, value], skip_first=True)
    assert (counts[3], counts[5]) == (2, 0)


HAVING_PROGRAM = EnclaveProgram(
    group_keys=("k",), aggregates=[("count", None, "n"), ("sum", "v", "s"), ("count_distinct", "v", "d")],
    having='"s" > 0 AND "d" >= 2', having_typed=[("s", "int", "HUGEINT"), ("d", "int", "BIGINT")], hidden=("s",),
    order=[("d", True), ("k", False)], offset=1, limit=2)


def test_a_program_with_having_hidden_aggregates_and_offset_matches_a_reference():
    k = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 3])
    v = np.array([1, 1, 2, -5, 1, 2, 3, 4, 4, 7, 8, 9])
    table = evaluate(HAVING_PROGRAM, {"k": k, "v": v})
    groups = {g: v[k == g] for g in set(k.tolist())}
    kept = sorted(((len(set(x.tolist())), g, len(x)) for g, x in groups.items()
                   if x.sum() > 0 and len(set(x.tolist())) >= 2), key=lambda t: (-t[0], t[1]))[1:3]
    assert table.column_names == ["k", "n", "d"]  # the hidden SUM is not an output
    assert [(r["d"], r["k"], r["n"]) for r in table.to_pylist()] == kept


def test_having_and_count_distinct_have_a_data_independent_access_pattern():
    """Every compare-exchange and scan pass the same for two inputs of the same size."""
    digests = set()
    for seed in (3, 4):
        rng = np.random.default_rng(seed)
        trace = AccessTrace()
        evaluate(HAVING_PROGRAM, {"k": rng.integers(0, 4, 30), "v": rng.integers(-3, 3, 30)}, trace=trace)
        digests.add((tuple(trace.pairs()), tuple(e for e in trace.events if e[0] == "scan")))
    assert len(digests) == 1  # the final cut's length (the result size) is the one size-dependent access


def test_the_program_round_trips_its_new_clauses():
    assert EnclaveProgram.from_bytes(HAVING_PROGRAM.to_bytes()) == HAVING_PROGRAM


def test_the_threshold_drops_groups_the_enclave_would_otherwise_show(oracle, thresholded):
    sql = f"SELECT b.label, v.qty > 0, COUNT(DISTINCT v.qty) {JOIN} GROUP BY b.label, v.qty > 0 HAVING COUNT(*) > 0"
    shown, thresholded_rows = oracle.check(sql, "bank"), thresholded.check(sql, "bank")
    assert 0 < thresholded_rows.num_rows < shown.num_rows


def test_a_group_key_that_is_not_selected_is_never_sealed_to_the_issuer(oracle):
    """GROUP BY b.label without selecting it: the enclave program hides the key (and its NULL flag), so the
    issuer's sealed result holds the sums only (a mask or DP on the key would otherwise be bypassed there);
    ORDER BY the hidden key still orders the rows."""
    sql = f"SELECT SUM(v.qty) AS s {JOIN} GROUP BY b.label ORDER BY b.label DESC LIMIT 2"
    plan = oracle.engine.plan(sql, "bank")
    stage = next(s for s in plan.physical.steps if type(s).__name__ == "EnclaveStage")
    program = EnclaveProgram.from_json(json.loads(stage.program))
    assert program.group_keys and all(k in program.hidden for k in program.group_keys)
    assert not set(program.output_names()) & set(program.group_keys)
    oracle.check(sql, "bank")
