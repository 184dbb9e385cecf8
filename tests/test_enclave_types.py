"""What the SPU takes, the enclave takes (issue 17), with `[enclave] placement = "always"`, each against plain
DuckDB: text longer than 28 bytes at its owner's width class (group keys, sort keys, DISTINCT, MIN/MAX,
comparisons and LIKE), TIMESTAMP columns through operators and expressions (TIMESTAMPTZ refused naming the
zone), and division by zero as the oracle (or the federation's dialect) answers it. Two and three parties,
NULLs, duplicates, empty inputs."""

import datetime

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from sqlsecure.engine import Engine
from sqlsecure.errors import DataError, NotSupportedError
from sqlsecure.executors.tee import EnclaveProgram
from sqlsecure.executors.tee.oblivious import AccessTrace, group_by
from sqlsecure.executors.tee.program import evaluate
from sqlsecure.executors.tee.stage import decode_output, inputs_table
from tests.test_enclave_queries import enclave_section

PARTIES = ("bank", "shop", "insurer")
JOIN = "FROM bank.people b JOIN shop.visits v ON b.id = v.person_id"
JOIN3 = f"{JOIN} JOIN insurer.policies p ON p.customer_id = b.id"
PREFIX = "a" * 28  # the old 4-limb limit: values equal in their first 28 bytes must still differ
# both at the widest class, 1024 bytes (147 limbs each: more limb columns than the enclave's 256 SQL columns)
NOTES = ["short", PREFIX, PREFIX + "b", "é" * 20, "n" * 100, None, PREFIX + "b", "short", "z" * 1000, "x"]
TAGS = [PREFIX + "x", "ü" * 70 + "z", "short", PREFIX, "k" * 300, PREFIX + "y" * 40, "t", "w" * 1024]
EPOCH = datetime.datetime(1970, 1, 1)


def stamp(i: int) -> datetime.datetime:
    """Timestamps on both sides of 1970, with microseconds, duplicates every 7 rows."""
    return EPOCH + datetime.timedelta(days=(i % 7) * 4000 - 9000, hours=i % 5, microseconds=(i % 7) * 250_001)


def type_tables(n: int = 20) -> dict:
    people = pa.table({
        "id": pa.array(range(n), pa.int64()),
        "note": pa.array([NOTES[i % len(NOTES)] for i in range(n)]),
        "born": pa.array([None if i % 6 == 5 else stamp(i) for i in range(n)], pa.timestamp("us")),
        "n": pa.array([0, -3, 3, 7, 0, 1, 2] * (n // 7) + [0] * (n % 7), pa.int32()),
        "score": pa.array([0.0, -2.5, 2.5, 0.0, 1.5] * (n // 5) + [0.0] * (n % 5)),
        "zoned": pa.array([stamp(i) for i in range(n)], pa.timestamp("us", tz="Europe/Zurich")),
        "nanos": pa.array([stamp(i) for i in range(n)], pa.timestamp("ns")),
    })
    m = 2 * n
    visits = pa.table({
        "person_id": pa.array([i % (n + 3) for i in range(m)], pa.int64()),
        "tag": pa.array([None if i % 9 == 4 else TAGS[i % len(TAGS)] for i in range(m)]),
        "at": pa.array([None if i % 8 == 3 else stamp(3 * i + 1) for i in range(m)], pa.timestamp("us")),
        "qty": pa.array([0, 5, -5, 2] * (m // 4), pa.int64()),
        "amount": pa.array([0.0, -1.5, 2.5, 3.0] * (m // 4)),
    })
    policies = pa.table({
        "customer_id": pa.array([i % n for i in range(0, 3 * n, 2)], pa.int64()),
        "kind": pa.array([["home", "car", None][i % 3] for i in range(0, 3 * n, 2)]),
        "since": pa.array([stamp(i) for i in range(0, 3 * n, 2)], pa.timestamp("us")),
    })
    empty = pa.table({"customer_id": pa.array([], pa.int64()), "label": pa.array([], pa.string()),
                      "until": pa.array([], pa.timestamp("us"))})
    return {"bank": {"people": people}, "shop": {"visits": visits},
            "insurer": {"policies": policies, "lapsed": empty}}


def always_in_enclave(directory) -> str:
    return enclave_section(directory).replace("[enclave]\n", '[enclave]\nplacement = "always"\n')


@pytest.fixture(scope="module")
def oracle(tmp_path_factory, federation_writer, oracle_for, plaintext_grants):
    directory = tmp_path_factory.mktemp("enclave-types")
    path = federation_writer(directory, type_tables(), plaintext_grants(PARTIES) + always_in_enclave(directory),
                             parties=PARTIES, min_group_size=1)
    with Engine(path) as engine:
        yield oracle_for(engine)


def in_enclave(oracle, sql: str) -> str:
    text = oracle.engine.explain(sql, "bank")
    assert "TEEU(enclave" in text, text
    return text


def matches_duckdb(oracle, sql: str) -> None:
    """Computed in the enclave, and the oracle's multiset of rows."""
    in_enclave(oracle, sql)
    oracle.check(sql, "bank")


def same_order_as_duckdb(oracle, sql: str) -> None:
    """Computed in the enclave, and DuckDB's rows in DuckDB's order (NaN compared as text)."""
    in_enclave(oracle, sql)
    rows = [[tuple(map(str, row.values())) for row in table.to_pylist()]
            for table in (oracle.engine.execute(sql, "bank").table, oracle.expected(sql, "bank"))]
    assert rows[0] == rows[1]


# --- 1. text at its width class ------------------------------------------------------------------------

LONG_TEXT = [
    f"SELECT b.note, COUNT(*), SUM(v.qty) {JOIN} GROUP BY b.note",
    f"SELECT b.note, v.tag, COUNT(*), MAX(v.amount) {JOIN} GROUP BY b.note, v.tag",
    f"SELECT DISTINCT b.note, v.tag, v.qty > b.n {JOIN}",
    f"SELECT DISTINCT v.tag, b.note < v.tag {JOIN}",
    f"SELECT b.note, MIN(v.tag), MAX(v.tag), COUNT(v.tag), MIN(b.note) {JOIN} GROUP BY b.note",
    f"SELECT MIN(b.note), MAX(b.note), MIN(v.tag), MAX(v.tag), SUM(v.qty * b.n) {JOIN}",
    f"SELECT b.id, v.qty, b.note < v.tag, b.note = v.tag, v.tag >= '{PREFIX}x', v.tag LIKE '{PREFIX}%', "
    f"v.tag LIKE '%z', b.note LIKE '{PREFIX}_', b.note IN ('short', '{PREFIX}b') {JOIN}",
    f"SELECT v.tag LIKE '{PREFIX}%' AS long_a, COUNT(*), MIN(b.note) {JOIN} GROUP BY v.tag LIKE '{PREFIX}%'",
    f"SELECT b.note, p.kind, MIN(v.tag), MAX(p.kind), COUNT(*) {JOIN3} GROUP BY b.note, p.kind",
    f"SELECT b.id, v.tag {JOIN} WHERE b.note < v.tag",  # a cross-party WHERE: NULLs and FALSE rows dropped
    f"SELECT b.note, COUNT(*), MAX(v.tag) {JOIN} WHERE v.tag LIKE '{PREFIX}%' OR b.note >= v.tag GROUP BY b.note",
    f"SELECT DISTINCT v.tag {JOIN} WHERE b.note <> v.tag",
    f"SELECT COUNT(*), MIN(v.tag) {JOIN3} WHERE p.kind < v.tag AND b.note IS NOT NULL",
]


@pytest.mark.parametrize("sql", LONG_TEXT)
def test_text_beyond_28_bytes_matches_duckdb(oracle, sql):
    matches_duckdb(oracle, sql)


ORDERED = [  # text, timestamp and +-inf / NaN sort keys, with NULLs

    f"SELECT b.id, v.qty, b.note, v.tag {JOIN} ORDER BY v.tag DESC, b.note, b.id, v.qty LIMIT 25",
    f"SELECT b.id, v.qty, v.tag {JOIN} ORDER BY v.tag NULLS FIRST, b.id, v.qty LIMIT 12",
    f"SELECT b.note, MIN(v.tag) AS lo, MAX(v.tag) AS hi {JOIN} GROUP BY b.note ORDER BY lo DESC, hi, b.note LIMIT 4",
    f"SELECT DISTINCT v.tag, b.note, v.qty < b.n AS less {JOIN} ORDER BY v.tag, b.note, less LIMIT 9",
    f"SELECT b.id, v.qty, v.at, b.born {JOIN} ORDER BY v.at DESC, b.born NULLS FIRST, b.id, v.qty LIMIT 15",
    f"SELECT b.id, v.qty, v.amount / b.score AS r {JOIN} ORDER BY r DESC, b.id, v.qty LIMIT 20",
    f"SELECT b.id, v.qty, v.tag {JOIN} WHERE v.at > b.born ORDER BY v.tag DESC, b.id, v.qty LIMIT 6",
]


@pytest.mark.parametrize("sql", ORDERED)
def test_sort_keys_give_duckdb_s_order(oracle, sql):
    same_order_as_duckdb(oracle, sql)


def test_explain_states_each_text_column_s_width_class(oracle):
    text = in_enclave(oracle, f"SELECT b.note, MIN(v.tag) {JOIN} GROUP BY b.note")
    assert "width class of bank's" in text and "width class of shop's" in text
    assert "log2 of that length, never the length" in text


def test_text_longer_than_the_widest_class_is_refused_by_its_owner():
    long = pa.table({"t": pa.array(["x" * 1025, "y"])})
    with pytest.raises(DataError, match="'t' has text longer than 1024 bytes of UTF-8, the widest the enclave"):
        inputs_table(long, (("t", "t", "text"),))


def test_each_party_seals_its_text_at_its_own_width_class():
    sealed = inputs_table(pa.table({"t": pa.array(["short", None, "é" * 20])}), (("t", "t", "text"),))
    assert sealed.column_names == [f"t#{k}" for k in range(10)] + ["t#null"]  # 40 bytes: class 64, 10 limbs
    narrow = inputs_table(pa.table({"t": pa.array(["a" * 28])}), (("t", "t", "text"),))
    assert len(narrow.column_names) == 5  # 28 bytes: the default class, 4 limbs


def test_text_min_and_max_are_oblivious_and_lexicographic_over_limbs():
    """Same access pattern for two inputs of the same size; MIN / MAX compare all limbs."""
    values = ["b" * 40, "a" * 40 + "z", "a" * 40, "c"]
    sealed = inputs_table(pa.table({"g": pa.array([1, 1, 2, 2], pa.int64()), "t": pa.array(values)}),
                          (("g", "g", "int"), ("t", "t", "text")))
    columns = {name: sealed.column(name).to_numpy() for name in sealed.column_names}
    program = EnclaveProgram(group_keys=("g",), aggregates=(("min", "t#*", "lo"), ("max", "t#*", "hi")))
    traces = []
    for order in ([0, 1, 2, 3], [3, 2, 1, 0]):
        trace = AccessTrace()
        result = evaluate(program, {k: v[order] for k, v in columns.items()}, trace=trace)
        traces.append(trace.digest())
        assert decode_output(result, "lo", "text").to_pylist() == ["a" * 40 + "z", "a" * 40]
        assert decode_output(result, "hi", "text").to_pylist() == ["b" * 40, "c"]
    assert traces[0] == traces[1]


@pytest.mark.parametrize("grouped", [False, True])
def test_a_where_in_the_enclave_hides_which_rows_passed(grouped):
    """Two inputs where different rows pass (as many, and NULL conditions too): one access pattern."""
    program = EnclaveProgram(group_keys=("g",) if grouped else (), aggregates=(("sum", "v", "s"),) if grouped else (),
                             select=None if grouped else ("g", "v"), where="w")
    results, traces = [], []
    for passing, nulls in (([1, 0, 1, 0], [0, 0, 0, 1]), ([1, 1, 0, 1], [1, 0, 0, 0])):  # a NULL never passes
        trace = AccessTrace()
        columns = {"g": np.array([1, 1, 2, 2]), "v": np.array([10, 20, 30, 40]), "w": np.array(passing),
                   "w#null": np.array(nulls)}
        results.append(evaluate(program, columns, trace=trace).to_pylist())
        traces.append(trace.digest())
    assert traces[0] == traces[1]
    want = ([{"g": 1, "s": 10}, {"g": 2, "s": 30}], [{"g": 1, "s": 20}, {"g": 2, "s": 40}]) if grouped else \
        ([{"g": 1, "v": 10}, {"g": 2, "v": 30}], [{"g": 1, "v": 20}, {"g": 2, "v": 40}])
    assert [sorted(r, key=str) for r in results] == [sorted(w, key=str) for w in want]


def test_float_min_max_treat_nan_as_duckdb_does():
    """DuckDB orders NaN above +inf: MIN skips it, MAX returns it."""
    values = np.array([1.0, np.nan, np.inf, -2.0])
    grouped = group_by([np.zeros(4, np.int64)], [("min", values), ("max", values)])
    assert grouped.aggregates[0][-1] == -2.0 and np.isnan(grouped.aggregates[1][-1])
    want = duckdb.sql("SELECT MIN(x), MAX(x) FROM (SELECT UNNEST(['1', 'nan', 'inf', '-2']::DOUBLE[]) x)").fetchall()[0]
    assert want[0] == -2.0 and np.isnan(want[1])


# --- 2. TIMESTAMP ------------------------------------------------------------------------------------

TIMESTAMPS = [
    f"SELECT b.id, v.qty, b.born, v.at, v.at > b.born, v.at - INTERVAL 90 MINUTE, b.born + INTERVAL 1 MONTH, "
    f"EXTRACT(HOUR FROM v.at), EXTRACT(MICROSECONDS FROM b.born), YEAR(b.born), MONTH(v.at), "
    f"DATEDIFF('hour', b.born, v.at), DATEDIFF('day', b.born, v.at), DATE_TRUNC('hour', v.at), EPOCH(v.at), "
    f"CAST(v.at AS DATE) AS day, HOUR(v.at), MINUTE(b.born), SECOND(v.at), DAYOFWEEK(v.at), QUARTER(v.at), "
    f"WEEK(b.born), DAYOFYEAR(v.at), EXTRACT(EPOCH FROM b.born), "
    f"COALESCE(v.at, b.born), CAST(b.born AS DATE) + 3 {JOIN}",
    f"SELECT YEAR(v.at), MIN(v.at), MAX(b.born), COUNT(v.at), COUNT(*) {JOIN} GROUP BY YEAR(v.at)",
    f"SELECT v.at, COUNT(*), MIN(b.born) {JOIN} GROUP BY v.at",
    f"SELECT DISTINCT b.born, v.at > b.born {JOIN}",
    f"SELECT MIN(v.at), MAX(v.at), MIN(b.born + INTERVAL 1 DAY), MAX(v.at - b.born < INTERVAL 1000 DAY) {JOIN}",
    f"SELECT p.kind, MIN(p.since), MAX(v.at), MIN(b.born) {JOIN3} GROUP BY p.kind",
    f"SELECT DATE_TRUNC('month', v.at) AS m, COUNT(*), MAX(b.born) {JOIN} GROUP BY DATE_TRUNC('month', v.at)",
    f"SELECT b.id, v.at {JOIN} WHERE v.at BETWEEN b.born AND b.born + INTERVAL 4000 DAY",
    f"SELECT YEAR(b.born), COUNT(*) {JOIN} WHERE DATEDIFF('hour', b.born, v.at) > 1000 GROUP BY YEAR(b.born)",
]


@pytest.mark.parametrize("sql", TIMESTAMPS)
def test_timestamps_match_duckdb(oracle, sql):
    matches_duckdb(oracle, sql)


@pytest.mark.parametrize("sql, named", [
    (f"SELECT b.zoned, v.qty > b.n {JOIN}", r'zoned"? is TIMESTAMP WITH TIME ZONE.*CAST it to TIMESTAMP'),
    (f"SELECT v.tag, MIN(b.zoned) {JOIN} GROUP BY v.tag", "TIME ZONE"),
    (f"SELECT YEAR(b.zoned) + v.qty {JOIN}", "TIME ZONE"),
    (f"SELECT b.nanos, v.qty > b.n {JOIN}", "TIMESTAMP_NS.*CAST it to TIMESTAMP"),
    (f"SELECT v.tag, AVG(b.born) {JOIN} GROUP BY v.tag", "AVG of a timestamp"),
    (f"SELECT b.note, AVG(CAST(v.at AS DATE)) {JOIN} GROUP BY b.note", "AVG of a date"),
])
def test_what_the_enclave_does_not_carry_is_refused_at_plan_time_by_name(oracle, sql, named):
    with pytest.raises(NotSupportedError, match=named):
        oracle.engine.explain(sql, "bank")


# --- 4. empty inputs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sql", [
    "SELECT e.label, MIN(v.tag), MAX(e.until), COUNT(*) FROM insurer.lapsed e JOIN shop.visits v "
    "ON e.customer_id = v.person_id GROUP BY e.label",
    "SELECT MIN(v.tag), MAX(e.until), SUM(v.qty + e.customer_id) FROM insurer.lapsed e JOIN shop.visits v "
    "ON e.customer_id = v.person_id",
    "SELECT DISTINCT e.label, v.tag, v.at < e.until FROM insurer.lapsed e JOIN shop.visits v "
    "ON e.customer_id = v.person_id",
    "SELECT v.at, e.until FROM insurer.lapsed e JOIN shop.visits v ON e.customer_id = v.person_id "
    "ORDER BY v.at LIMIT 3",
])
def test_empty_inputs_match_duckdb(oracle, sql):
    matches_duckdb(oracle, sql)


# --- 3. division by zero -----------------------------------------------------------------------------

DIVISIONS = [  # DuckDB: `/` gives +-inf or NaN, `%` of DOUBLE NaN; so does the enclave, through every operator
    f"SELECT b.id, v.qty, v.qty / b.n, v.amount / b.score, b.score / b.score, v.amount % b.score, "
    f"v.qty % NULLIF(b.n, 0) {JOIN}",
    f"SELECT v.qty / b.n AS q, COUNT(*) {JOIN} GROUP BY v.qty / b.n",
    f"SELECT b.n, SUM(v.qty / b.n), MIN(v.amount / b.score), MAX(v.amount / b.score), AVG(v.amount % b.score), "
    f"MIN(b.score / b.score), MAX(b.score / b.score) {JOIN} GROUP BY b.n",
    f"SELECT b.id, v.qty {JOIN} WHERE v.qty / b.n > 1 OR v.amount / b.score < 0",
]


@pytest.mark.parametrize("sql", DIVISIONS)
def test_division_by_zero_is_duckdb_s_infinity_or_nan(oracle, sql):
    matches_duckdb(oracle, sql)


@pytest.mark.parametrize("expression", ["v.qty // b.n", "v.qty % b.n", "v.amount // b.score",
                                        "CAST(v.amount AS DECIMAL(9, 2)) % CAST(b.score AS DECIMAL(9, 2))"])
def test_a_division_duckdb_fails_fails_in_the_enclave_naming_it(oracle, expression):
    sql = f"SELECT b.id, {expression} {JOIN}"
    with pytest.raises(duckdb.Error, match="Division by zero"):
        oracle.expected(sql, "bank")
    with pytest.raises(DataError, match=r"Division by zero in expression .*(//|%)"):
        oracle.engine.execute(sql, "bank")


@pytest.fixture(scope="module")
def mysql_engine(tmp_path_factory, federation_writer, plaintext_grants):
    directory = tmp_path_factory.mktemp("enclave-mysql")
    path = federation_writer(directory, type_tables(), plaintext_grants(PARTIES) + always_in_enclave(directory),
                             parties=PARTIES, min_group_size=1, dialect="mysql")
    with Engine(path) as engine:
        yield engine


def test_mysql_division_by_zero_is_null_in_the_enclave(mysql_engine):
    """MySQL: `/`, `%` and DIV by zero are NULL (its documented rule), computed in the enclave."""
    sql = (f"SELECT b.id, v.qty, b.n, b.score, v.amount, v.qty / b.n AS q, v.qty % b.n AS r, v.qty DIV b.n AS d, "
           f"v.amount / b.score AS f {JOIN}")
    assert "TEEU(enclave" in mysql_engine.explain(sql, "bank")
    rows = mysql_engine.execute(sql, "bank").table.to_pylist()
    assert rows and any(row["n"] == 0 for row in rows) and any(row["score"] == 0 for row in rows)
    for row in rows:
        qty, n, score = row["qty"], row["n"], row["score"]
        assert (row["q"] is None) == (n == 0) and (row["r"] is None) == (n == 0) and (row["d"] is None) == (n == 0)
        assert (row["f"] is None) == (score == 0)
        if n:
            assert float(row["q"]) == pytest.approx(qty / n, abs=1e-4)
            assert row["r"] == int(np.fmod(qty, n)) and row["d"] == int(qty / n)
