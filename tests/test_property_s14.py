"""Issue 16's hunt, session 14: horizontally partitioned hospitals and the newest paths, against plain DuckDB.

Data: three hospitals (`north`, `south` on CSV, `west`) each holding rows of `diagnosis` (pid, diag, visit,
cost) and `medication` (pid, med, dose, given): small integer codes (published magnitude classes, so the
one-hot group sums apply), DECIMALs of two and three places, DATEs, NULL in every column, duplicate pids
and whole duplicate rows, one hospital's medication empty; federation views `diagnosis` and `medication`
over the three. Shapes: UNION ALL inside derived tables and CTEs, DISTINCT over the union, windows with
PARTITION BY over it, self-joins of it, IN / EXISTS over it, aggregates of aggregates (TPC-H Q13), outer
joins of two hospitals (NULL keys and payloads, an empty side), GROUP BY one hospital's plain integer codes
(the one-hot path, over subquery and CTE keys too), ORDER BY … LIMIT / OFFSET with ties and NULLs over
DECIMALs and dates. Grants: all PLAINTEXT, or each column its own constraint (the SPU computes and
reveals); thresholds 0 and 3; group sums on the SPU or by the cost model.

Every query is refused with a PEP 249 error by `check` and execution alike, or equals the oracle
(tests/conftest.py). CI runs HUNT_EXAMPLES (default 2) derandomized examples; to hunt, run more with a new
seed: `HUNT_EXAMPLES=200 pytest -p no:cacheprovider tests/test_property_s14.py --hypothesis-seed=N`.
What it found is kept in tests/test_hunt_s14.py.
"""

from __future__ import annotations

import datetime
import decimal
import os
import tempfile
from pathlib import Path

import pyarrow as pa
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from sqlsecure.engine import Engine
from tests.test_property import assert_refused_or_oracle
from tests.test_property_s12 import ViewOracle

HOSPITALS = ("north", "south", "west")
DIAGNOSIS = ("pid", "diag", "visit", "cost")
MEDICATION = ("pid", "med", "dose", "given")


def diagnosis(pids: list, diags: list, start: int) -> pa.Table:
    n = len(pids)
    return pa.table({
        "pid": pa.array(pids, pa.int64()),
        "diag": pa.array(diags, pa.int32()),
        "visit": pa.array([None if j == 3 else datetime.date(2024, 1, 1) + datetime.timedelta(days=(start + 5 * j) % 23)
                           for j in range(n)], pa.date32()),
        "cost": pa.array([None if j == 4 else decimal.Decimal((start * 7 + j * 13) % 40 - 9) / 4 for j in range(n)],
                         pa.decimal128(10, 2)),
    })


def medication(pids: list, meds: list, start: int) -> pa.Table:
    n = len(pids)
    return pa.table({
        "pid": pa.array(pids, pa.int64()),
        "med": pa.array(meds, pa.int32()),
        "dose": pa.array([None if j == 2 else decimal.Decimal((start + j * 11) % 17) / 8 for j in range(n)],
                         pa.decimal128(8, 3)),
        "given": pa.array([None if j == 1 else datetime.date(2024, 1, 3) + datetime.timedelta(days=(start + 7 * j) % 19)
                           for j in range(n)], pa.date32()),
    })


# pids repeat within and across hospitals, one NULL each; diag / med codes 0..3 with NULLs.
FEDERATION = {
    "north": {"diagnosis": diagnosis([1, 1, 2, 3, 3, None, 5, 7], [1, 0, 1, None, 1, 2, 0, 1], 0),
              "medication": medication([1, 2, 2, None, 5, 9], [1, 1, 0, 1, None, 2], 0)},
    "south": {"diagnosis": diagnosis([2, 3, 4, 4, None, 8], [1, 1, 0, 1, 3, None], 3),
              "medication": medication([], [], 0)},
    "west": {"diagnosis": diagnosis([1, 4, 6, 6, 6, 9, None], [0, 1, 1, 1, None, 2, 1], 6),
             "medication": medication([1, 3, 4, 4, 6, None, 8], [1, 0, 1, 1, 1, 2, None], 4)},
}
VIEWS = "[views]\n" + "".join(
    f'{table} = "' + " UNION ALL ".join(f"SELECT {', '.join(columns)} FROM {p}.{table}" for p in HOSPITALS) + '"\n'
    for table, columns in (("diagnosis", DIAGNOSIS), ("medication", MEDICATION)))

# Each column its own constraint for the other hospitals; "plaintext" makes every column PLAINTEXT.
MODES = {
    "plaintext": {},
    "secret": {"pid": "PLAINTEXT_AFTER_JOIN", "diag": "PLAINTEXT_AFTER_GROUP_BY", "visit": "PLAINTEXT_AFTER_COMPARE",
               "cost": "PLAINTEXT_AFTER_AGGREGATE", "med": "PLAINTEXT_AFTER_GROUP_BY", "dose": "PLAINTEXT_AFTER_AGGREGATE",
               "given": "PLAINTEXT_AFTER_COMPARE"},
    "codes": {"pid": "PLAINTEXT_AFTER_JOIN", "diag": "PLAINTEXT", "visit": "PLAINTEXT_AFTER_COMPARE",
              "cost": "PLAINTEXT_AFTER_AGGREGATE", "med": "PLAINTEXT", "dose": "PLAINTEXT_AFTER_AGGREGATE",
              "given": "PLAINTEXT_AFTER_GROUP_BY"},
    "ids": {"pid": "PLAINTEXT", "diag": "PLAINTEXT_AFTER_GROUP_BY", "visit": "PLAINTEXT_AFTER_GROUP_BY",
            "cost": "PLAINTEXT_AFTER_AGGREGATE", "med": "PLAINTEXT_AFTER_AGGREGATE", "dose": "PLAINTEXT_AFTER_AGGREGATE",
            "given": "PLAINTEXT_AFTER_COMPARE"},
    "oblivious": {"pid": "PLAINTEXT_AFTER_COMPARE", "diag": "PLAINTEXT_AFTER_GROUP_BY", "visit": "PLAINTEXT_AFTER_COMPARE",
                  "cost": "PLAINTEXT_AFTER_AGGREGATE", "med": "PLAINTEXT_AFTER_COMPARE",
                  "dose": "PLAINTEXT_AFTER_AGGREGATE", "given": "PLAINTEXT_AFTER_COMPARE"},
    "sorting": {"visit": "PLAINTEXT_AFTER_COMPARE", "cost": "REVEAL_RANK", "dose": "PLAINTEXT_AFTER_COMPARE",
                "given": "REVEAL_RANK"},
}


def grants_of(mode: str, grants_for) -> str:
    return grants_for(*((party, (f"{owner}.{table}.{column}",), MODES[mode].get(column, "PLAINTEXT"))
                        for owner, tables in FEDERATION.items() for table, t in tables.items()
                        for column in t.column_names for party in HOSPITALS if party != owner))


def two(draw) -> tuple[str, str]:
    a, b = draw(st.permutations(HOSPITALS))[:2]
    return a, b


def diagnoses(draw) -> str:
    """The rows of every hospital's diagnosis: the view, a derived UNION ALL, or one of two hospitals."""
    shape = draw(st.sampled_from(("view", "derived", "two")))
    if shape == "view":
        return "diagnosis"
    parties = HOSPITALS if shape == "derived" else two(draw)
    return "(" + " UNION ALL ".join(f"SELECT pid, diag, visit, cost FROM {p}.diagnosis" for p in parties) + ")"


def medications(draw) -> str:
    if draw(st.booleans()):
        return "medication"
    return "(" + " UNION ALL ".join(f"SELECT pid, med, dose, given FROM {p}.medication" for p in HOSPITALS) + ")"


def union_in_cte(draw) -> str:
    """A CTE (or derived table) of the union, aggregated, filtered or distinct above it."""
    source = diagnoses(draw)
    where = draw(st.sampled_from(("", " WHERE u.diag = 1", " WHERE u.cost > 0", " WHERE u.visit < DATE '2024-01-12'",
                                  " WHERE u.pid IS NOT NULL")))
    body = draw(st.sampled_from((
        f"SELECT u.diag AS g, COUNT(*) AS n, SUM(u.cost) AS s FROM u{where} GROUP BY u.diag",
        f"SELECT DISTINCT u.pid AS o0 FROM u{where}",
        f"SELECT COUNT(DISTINCT u.pid) AS n, COUNT(u.diag) AS c FROM u{where}",
        f"SELECT DISTINCT u.diag AS o0, u.pid AS o1 FROM u{where}",
        f"SELECT u.diag AS g, COUNT(DISTINCT u.pid) AS n FROM u{where} GROUP BY u.diag",
        f"SELECT u.pid AS g, MIN(u.visit) AS v, MAX(u.cost) AS m FROM u{where} GROUP BY u.pid",
    )))
    if draw(st.booleans()):
        return f"WITH u AS {source if source.startswith('(') else '(SELECT * FROM diagnosis)'} {body}"
    return body.replace(" FROM u", f" FROM {source if source.startswith('(') else source} u", 1)


def window_of_union(draw) -> str:
    """Windows partitioned over the union; rows defined (ties treated alike, or summed per partition)."""
    source = diagnoses(draw)
    window = draw(st.sampled_from((
        "RANK() OVER (PARTITION BY u.pid ORDER BY u.visit)", "COUNT(*) OVER (PARTITION BY u.diag)",
        "SUM(u.cost) OVER (PARTITION BY u.pid)", "DENSE_RANK() OVER (PARTITION BY u.diag ORDER BY u.cost DESC)",
        "ROW_NUMBER() OVER (PARTITION BY u.pid ORDER BY u.visit, u.cost, u.diag)",
        "MIN(u.visit) OVER (PARTITION BY u.pid)", "COUNT(u.diag) OVER (PARTITION BY u.pid ORDER BY u.visit)")))
    if draw(st.booleans()):
        outer = "MAX" if "visit)" in window.split(" OVER")[0] else "SUM"  # a date's window: no SUM of dates
        return f"SELECT q.g AS g, {outer}(q.w) AS n, COUNT(*) AS c FROM (SELECT u.pid AS g, {window} AS w " \
               f"FROM {source} u) q GROUP BY q.g"
    if "ROW_NUMBER" in window:  # Secrecy's recurrent C. diff: consecutive visits of a patient
        return f"WITH r AS (SELECT u.pid AS pid, u.visit AS visit, {window} AS rn FROM {source} u WHERE u.diag = 1) " \
               "SELECT DISTINCT a.pid AS o0 FROM r a JOIN r b ON a.pid = b.pid AND b.rn = a.rn + 1 " \
               "WHERE b.visit - a.visit >= 2"
    return f"SELECT u.pid AS o0, u.diag AS o1, u.cost AS o2, {window} AS w FROM {source} u"


def self_join(draw) -> str:
    source = diagnoses(draw)
    cond = draw(st.sampled_from(("a.visit < b.visit", "a.diag <> b.diag", "a.cost < b.cost", "a.diag = 0 AND b.diag = 1")))
    return draw(st.sampled_from((
        f"SELECT DISTINCT a.pid AS o0 FROM {source} a JOIN {source} b ON a.pid = b.pid WHERE {cond}",
        f"SELECT COUNT(*) AS n FROM {source} a JOIN {source} b ON a.pid = b.pid AND {cond}",
        f"SELECT a.diag AS g, COUNT(DISTINCT a.pid) AS n FROM {source} a JOIN {source} b ON a.pid = b.pid "
        f"WHERE {cond} GROUP BY a.diag",
    )))


def membership(draw) -> str:
    """Comorbidity / aspirin: IN / EXISTS / NOT IN over the union of the other table."""
    d, m = diagnoses(draw), medications(draw)
    return draw(st.sampled_from((
        f"SELECT u.diag AS g, COUNT(*) AS n FROM {d} u WHERE u.pid IN (SELECT pid FROM {m} WHERE med = 1) "
        "GROUP BY u.diag",
        f"SELECT u.diag AS g, COUNT(*) AS n FROM {d} u WHERE u.pid IN (SELECT pid FROM {m} WHERE med = 1) "
        "GROUP BY u.diag ORDER BY n DESC, g LIMIT 2",
        f"SELECT COUNT(DISTINCT u.pid) AS n FROM {d} u WHERE EXISTS (SELECT 1 FROM {m} v WHERE v.pid = u.pid "
        "AND v.given >= u.visit)",
        f"SELECT DISTINCT u.pid AS o0 FROM {d} u WHERE u.pid NOT IN (SELECT pid FROM {m} WHERE pid IS NOT NULL)",
        f"SELECT u.pid AS o0, u.diag AS o1 FROM {d} u WHERE NOT EXISTS (SELECT 1 FROM {m} v WHERE v.pid = u.pid)",
        f"SELECT COUNT(DISTINCT u.pid) AS n FROM {d} u JOIN {m} v ON u.pid = v.pid WHERE u.diag = 0 AND v.med = 1 "
        "AND u.visit <= v.given",
    )))


def aggregate_of_aggregate(draw) -> str:
    """TPC-H Q13's shape over the union and across two hospitals."""
    if draw(st.booleans()):
        a, b = two(draw)
        inner = f"SELECT x.pid AS pid, COUNT(y.med) AS c FROM {a}.diagnosis x LEFT JOIN {b}.medication y " \
                f"ON x.pid = y.pid{draw(st.sampled_from(('', ' AND y.med <> 2', ' AND y.dose > 0.5')))} GROUP BY x.pid"
    else:
        inner = f"SELECT u.pid AS pid, COUNT(*) AS c FROM {diagnoses(draw)} u GROUP BY u.pid"
    return draw(st.sampled_from((
        f"SELECT q.c AS c, COUNT(*) AS n FROM ({inner}) q GROUP BY q.c",
        f"SELECT q.c AS c, COUNT(*) AS n FROM ({inner}) q GROUP BY q.c ORDER BY n DESC, c DESC",
        f"WITH q AS ({inner}) SELECT MAX(q.c) AS m, SUM(q.c) AS s, COUNT(*) AS n FROM q",
        f"SELECT COUNT(*) AS n FROM ({inner}) q WHERE q.c > 1",
    )))


def outer_join(draw) -> str:
    """LEFT / RIGHT / FULL joins of two hospitals on pid (NULL pids, duplicates, the empty medication)."""
    a, b = two(draw)
    kind = draw(st.sampled_from(("LEFT JOIN", "RIGHT JOIN", "FULL JOIN")))
    right = draw(st.sampled_from((f"{b}.medication", f"{b}.diagnosis")))
    value = "y.med" if right.endswith("medication") else "y.diag"
    source = f"{a}.diagnosis x {kind} {right} y ON x.pid = y.pid"
    return draw(st.sampled_from((
        f"SELECT x.pid AS o0, x.diag AS o1, y.pid AS o2, {value} AS o3 FROM {source}",
        f"SELECT x.diag AS g, COUNT(y.pid) AS n, COUNT(*) AS c FROM {source} GROUP BY x.diag",
        f"SELECT {value} AS g, COUNT(x.pid) AS n FROM {source} GROUP BY {value}",
        f"SELECT COALESCE(x.pid, y.pid) AS o0, COUNT(*) AS n FROM {source} GROUP BY COALESCE(x.pid, y.pid)",
        f"SELECT x.pid AS o0, {value} AS o1 FROM {source} WHERE {value} IS NULL",
    )))


def one_hot(draw) -> str:
    """GROUP BY one hospital's plain integer codes with sums of another's values (the one-hot path), the keys
    straight, through a derived table or a CTE."""
    a, b = two(draw)
    table, value, code = draw(st.sampled_from((("medication", "y.dose", "y.med"), ("diagnosis", "y.cost", "y.diag"))))
    agg = draw(st.sampled_from((f"SUM({value}) AS s, COUNT(*) AS n", f"COUNT({value}) AS n", f"AVG({value}) AS a",
                                f"SUM({value}) AS s, COUNT({code}) AS c")))
    keys = draw(st.sampled_from(("x.diag", "x.diag, x.pid")))
    where = draw(st.sampled_from(("", f" WHERE {code} = 1", f" WHERE {value} > 0.5", " WHERE x.diag IS NOT NULL")))
    join = f"{a}.diagnosis x JOIN {b}.{table} y ON x.pid = y.pid"
    shape = draw(st.sampled_from(("plain", "derived", "cte", "having")))
    if shape == "derived":
        join = f"(SELECT pid, diag FROM {a}.diagnosis WHERE diag IS NULL OR diag < 3) x JOIN {b}.{table} y " \
               "ON x.pid = y.pid"
    if shape == "cte":
        return f"WITH x AS (SELECT DISTINCT pid, diag FROM {a}.diagnosis) SELECT {keys}, {agg} FROM x " \
               f"JOIN {b}.{table} y ON x.pid = y.pid{where} GROUP BY {keys}"
    having = " HAVING COUNT(*) >= 2" if shape == "having" else ""
    return f"SELECT {keys}, {agg} FROM {join}{where} GROUP BY {keys}{having}"


def ordered(draw) -> str:
    """ORDER BY … LIMIT / OFFSET with ties and NULLs over DECIMALs and dates (the oracle accepts any of the tied rows
    a cut keeps)."""
    order = draw(st.sampled_from(("u.cost DESC NULLS LAST", "u.cost NULLS FIRST", "u.visit DESC NULLS FIRST",
                                  "u.visit NULLS LAST, u.cost DESC", "u.diag DESC NULLS LAST, u.cost")))
    cut = draw(st.sampled_from(("LIMIT 3", "LIMIT 2 OFFSET 2", "LIMIT 5 OFFSET 18", "LIMIT 1", "OFFSET 17")))
    columns = ", ".join(dict.fromkeys(f"u.{c.split()[0].split('.')[1]} AS {c.split()[0].split('.')[1]}"
                                      for c in order.split(", ")))
    if draw(st.booleans()):
        return f"SELECT {columns} FROM {diagnoses(draw)} u ORDER BY {order} {cut}"
    a, b = two(draw)
    source = f"(SELECT x.pid AS pid, x.diag AS diag, x.visit AS visit, x.cost + y.dose AS cost FROM {a}.diagnosis x " \
             f"JOIN {b}.medication y ON x.pid = y.pid)"
    return f"SELECT {columns} FROM {source} u ORDER BY {order} {cut}"


SHAPES = {"cte": union_in_cte, "window": window_of_union, "self_join": self_join, "membership": membership,
          "q13": aggregate_of_aggregate, "outer": outer_join, "one_hot": one_hot, "ordered": ordered}


@st.composite
def query(draw) -> str:
    return SHAPES[draw(st.sampled_from(tuple(SHAPES)))](draw)


@st.composite
def cases(draw) -> tuple[str, int, str, str, tuple[str, ...]]:
    """(grant mode, threshold, group sums, issuer, queries)."""
    return draw(st.sampled_from(tuple(MODES))), draw(st.sampled_from((0, 3))), draw(st.sampled_from(("auto", "spu"))), \
        draw(st.sampled_from(HOSPITALS)), tuple(draw(st.lists(query(), min_size=1, max_size=5)))


def hospitals(directory: Path, federation_writer, grants_for, mode: str, min_group_size: int, group_sums: str) -> Path:
    return federation_writer(directory, FEDERATION, grants_of(mode, grants_for) + VIEWS, parties=HOSPITALS,
                             min_group_size=min_group_size, group_sums=group_sums)


HUNT_EXAMPLES = int(os.environ.get("HUNT_EXAMPLES", "2"))


@settings(derandomize="HUNT_EXAMPLES" not in os.environ, max_examples=HUNT_EXAMPLES, deadline=None,
          phases=(Phase.explicit, Phase.generate), suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.data_too_large])
@given(case=cases())
def test_hospital_shapes_are_refused_or_equal_to_the_oracle(federation_writer, grants_for, case):
    mode, min_group_size, group_sums, issuer, queries = case
    with tempfile.TemporaryDirectory() as directory:
        path = hospitals(Path(directory), federation_writer, grants_for, mode, min_group_size, group_sums)
        with Engine(path, timeout=60) as engine:
            oracle = ViewOracle(engine)
            for sql in queries:
                event(f"{mode}: {assert_refused_or_oracle(oracle, sql, issuer)}")
