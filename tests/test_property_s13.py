"""Issue 16's hunt, session 13: the composed shapes tests/test_property_s12.py does not draw, over its data
(three parties, one empty table, NULLs and duplicates everywhere, the view `allt` of all three parties'
rows). Every query is refused by `check` and by execution alike (an error of the PEP 249 tree, same class),
or answered as plain DuckDB answers it (the oracle of tests/conftest.py).

Shapes: windows with PARTITION BY over a UNION ALL of parties and over a two-party join (ROW_NUMBER, RANK,
DENSE_RANK, SUM / COUNT OVER, LAG, each ordered so that the rows it returns are defined), self-joins of a
union, INTERSECT / EXCEPT [ALL] of two columns with NULLs and duplicates, nested derived tables that each
read two parties, aggregates of aggregates (TPC-H Q13), IN / EXISTS / NOT EXISTS with correlated subqueries
that join two parties, LEFT / FULL joins with a filter in ON against the same filter in WHERE, ORDER BY …
LIMIT / OFFSET inside a derived table, DISTINCT over expressions, CASE and NULLIF with NULLs, HAVING without
GROUP BY over a union, an empty party's table in each. Grants: s12's modes plus two mixes whose columns each
carry another constraint (so the SPU computes and reveals); thresholds 0, 1 and 4.

CI runs HUNT_EXAMPLES (default 3: each builds a federation of three parties) derandomized examples; to hunt, run more with a new seed:
`HUNT_EXAMPLES=300 pytest -p no:cacheprovider tests/test_property_s13.py --hypothesis-seed=N`.
What it found is kept in tests/test_hunt_s13.py.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from sqlsecure.engine import Engine
from tests.test_property import assert_refused_or_oracle
from tests.test_property_s12 import COLUMNS, FEDERATION, GRANT_MODES, PARTIES, TABLES, VIEWS, ViewOracle, \
    condition, cols

# Each column its own constraint for the other parties (k is the join key), so a query mixes the SPU's
# reveals (aggregates, group keys, comparisons, ranks) with plaintext columns.
MIXES = {
    "mix_a": {"k": "PLAINTEXT_AFTER_JOIN", "i": "PLAINTEXT_AFTER_AGGREGATE", "f": "PLAINTEXT",
              "d": "PLAINTEXT_AFTER_AGGREGATE", "s": "PLAINTEXT_AFTER_GROUP_BY", "dt": "PLAINTEXT_AFTER_COMPARE",
              "ts": "PLAINTEXT_AFTER_COMPARE", "b": "PLAINTEXT_AFTER_GROUP_BY"},
    "mix_b": {"k": "PLAINTEXT", "i": "REVEAL_RANK", "f": "PLAINTEXT_AFTER_COMPARE", "d": "PLAINTEXT_AFTER_AGGREGATE",
              "s": "PLAINTEXT", "dt": "PLAINTEXT_AFTER_GROUP_BY", "ts": "PLAINTEXT_AFTER_COMPARE",
              "b": "PLAINTEXT_AS_JOIN_PAYLOAD"},
    "mix_c": {"k": "PLAINTEXT_AFTER_JOIN", "i": "PLAINTEXT_AFTER_AGGREGATE", "f": "PLAINTEXT_AFTER_AGGREGATE",
              "d": "PLAINTEXT_AFTER_AGGREGATE", "s": "PLAINTEXT_AFTER_GROUP_BY", "dt": "PLAINTEXT_AFTER_GROUP_BY",
              "ts": "PLAINTEXT_AFTER_GROUP_BY", "b": "PLAINTEXT_AFTER_GROUP_BY"},
}


def grants_of(mode: str, grants_for) -> str:
    """The grants of s12's mode (one constraint for every non-key column) or of a mix (one per column)."""
    def constraint(column: str) -> str:
        if mode in MIXES:
            return MIXES[mode][column]
        return "PLAINTEXT_AFTER_JOIN" if column == "k" and mode != "plaintext" else GRANT_MODES[mode]
    return grants_for(*((party, (f"{owner}.{table}.{column}",), constraint(column))
                        for owner, table in TABLES for column in COLUMNS for party in PARTIES if party != owner))


def two(draw) -> tuple[str, str]:
    a, b = draw(st.permutations(PARTIES))[:2]
    return a, b


def table_of(draw, party: str) -> str:
    """A party's table, or (one time in six) the empty one."""
    return "insurer.e" if draw(st.integers(0, 5)) == 0 else f"{party}.t"


def union_source(draw) -> str:
    """A UNION ALL of two or three parties' rows: the view, or a derived table of the parties' tables."""
    shape = draw(st.sampled_from(("view", "two", "three")))
    if shape == "view":
        return "allt"
    parties = PARTIES if shape == "three" else two(draw)
    body = " UNION ALL ".join(f"SELECT k, i, d, s, dt, b FROM {table_of(draw, p)}" for p in parties)
    return f"({body})"


# Ordered so the rows are defined: RANK / DENSE_RANK tie alike, (i, k, s) orders every partition's rows of
# one party's table (i is unique but for one NULL per party), ROW_NUMBER summed per partition.
UNION_WINDOWS = ("RANK() OVER (PARTITION BY u.k ORDER BY u.i)", "DENSE_RANK() OVER (PARTITION BY u.s ORDER BY u.k)",
                 "SUM(u.i) OVER (PARTITION BY u.k)", "COUNT(*) OVER (PARTITION BY u.b)",
                 "MAX(u.d) OVER (PARTITION BY u.k)", "LAG(u.i) OVER (PARTITION BY u.k ORDER BY u.i, u.k, u.s)",
                 "SUM(u.i) OVER (PARTITION BY u.k ORDER BY u.i, u.k, u.s)",
                 "ROW_NUMBER() OVER (PARTITION BY u.k ORDER BY u.i, u.k, u.s)",
                 "RANK() OVER (PARTITION BY NULLIF(u.k, 2) ORDER BY CASE WHEN u.i > 3 THEN u.i END)",
                 "SUM(u.i) OVER (PARTITION BY u.k % 2)", "DENSE_RANK() OVER (ORDER BY u.k + u.i)")


def window_over_union(draw) -> str:
    window = draw(st.sampled_from(UNION_WINDOWS))
    source = union_source(draw)
    where = f" WHERE {draw(st.sampled_from(('u.i > 3', 'u.k IS NOT NULL', 'u.s <> ' + repr(''))))}" \
        if draw(st.booleans()) else ""
    if draw(st.booleans()):
        return f"SELECT u.k AS o0, u.i AS o1, {window} AS w FROM {source} u{where}"
    return f"SELECT q.o0 AS o0, SUM(q.w) AS n, COUNT(*) AS c FROM (SELECT u.k AS o0, {window} AS w " \
           f"FROM {source} u{where}) q GROUP BY q.o0"


def window_over_join(draw) -> str:
    """A window whose partition and order come from the two sides of a join (its rows may repeat: only
    windows that treat ties alike, or ROW_NUMBER summed per partition)."""
    a, b = two(draw)
    kind = draw(st.sampled_from(("JOIN", "JOIN", "LEFT JOIN")))
    window = draw(st.sampled_from((
        "RANK() OVER (PARTITION BY x.k ORDER BY y.i)", "DENSE_RANK() OVER (PARTITION BY x.s ORDER BY y.d DESC)",
        "SUM(y.i) OVER (PARTITION BY x.k)", "COUNT(y.i) OVER (PARTITION BY x.b)", "MIN(x.i) OVER (PARTITION BY y.s)",
        "ROW_NUMBER() OVER (PARTITION BY x.k ORDER BY y.i)", "SUM(y.i) OVER (PARTITION BY x.k ORDER BY x.i)")))
    source = f"{a}.t x {kind} {table_of(draw, b)} y ON x.k = y.k"
    if "ROW_NUMBER" in window or draw(st.booleans()):
        return f"SELECT q.g AS g, SUM(q.w) AS n, COUNT(*) AS c FROM (SELECT x.k AS g, {window} AS w FROM {source}) q " \
               "GROUP BY q.g"
    return f"SELECT x.k AS o0, y.i AS o1, {window} AS w FROM {source}"


def self_join_of_union(draw) -> str:
    """SMCQL's shape: the parties' rows joined with themselves on a key, the pairs filtered or counted."""
    source = union_source(draw)
    cond = draw(st.sampled_from(("a.i < b.i", "a.dt < b.dt", "a.s <> b.s", "a.i + 2 < b.i")))
    return draw(st.sampled_from((
        f"SELECT a.k AS o0, a.i AS o1, b.i AS o2 FROM {source} a JOIN {source} b ON a.k = b.k WHERE {cond}",
        f"SELECT a.k AS g, COUNT(*) AS n FROM {source} a JOIN {source} b ON a.k = b.k WHERE {cond} GROUP BY a.k",
        f"SELECT COUNT(DISTINCT a.k) AS n FROM {source} a JOIN {source} b ON a.k = b.k AND {cond}",
        f"SELECT DISTINCT a.k AS o0 FROM {source} a WHERE EXISTS (SELECT 1 FROM {source} b WHERE b.k = a.k AND {cond})",
    )))


def set_of_two_columns(draw) -> str:
    """INTERSECT / EXCEPT [ALL] / UNION of two columns (NULLs and duplicates in each), perhaps of the view; a UNION
    perhaps counted."""
    a, b = two(draw)
    pair = draw(st.sampled_from(("k, b", "k, s", "b, dt", "k, i % 2")))
    op = draw(st.sampled_from(("INTERSECT", "EXCEPT", "INTERSECT ALL", "EXCEPT ALL", "UNION")))
    left = f"SELECT {pair} FROM {'allt' if draw(st.integers(0, 3)) == 0 else table_of(draw, a)}"
    body = f"{left} {op} SELECT {pair} FROM {table_of(draw, b)}"
    if op == "UNION" and draw(st.booleans()):  # the oracle's threshold follows rows through UNION only
        return f"SELECT COUNT(*) AS n FROM ({body}) q"
    return body


def nested_two_party(draw) -> str:
    """Derived tables nested two deep, each joining two parties' rows."""
    a, b, c = draw(st.permutations(PARTIES))
    inner = f"SELECT x.k AS k, x.i + y.i AS v, y.s AS s FROM {a}.t x JOIN {table_of(draw, b)} y ON x.k = y.k"
    if draw(st.booleans()):
        inner += f" WHERE {condition(draw, ['x', 'y'])}"
    middle = f"SELECT p.k AS k, p.v * 2 - z.i AS v, p.s AS s FROM ({inner}) p " \
             f"{draw(st.sampled_from(('JOIN', 'LEFT JOIN')))} {c}.t z ON p.k = z.k"
    return draw(st.sampled_from((
        f"SELECT q.k AS g, SUM(q.v) AS n, COUNT(*) AS c FROM ({middle}) q GROUP BY q.k",
        f"SELECT q.s AS g, MAX(q.v) AS m FROM ({middle}) q GROUP BY q.s",
        f"SELECT DISTINCT q.k AS o0 FROM ({middle}) q WHERE q.v > 5",
        f"SELECT q.k AS o0, q.v AS o1 FROM ({middle}) q",
    )))


def aggregate_of_aggregate(draw) -> str:
    """TPC-H Q13: counts per key of a LEFT JOIN (the filter in ON), then how many keys have each count."""
    a, b = two(draw)
    on = draw(st.sampled_from(("", " AND y.s <> 'zz'", " AND y.i > 11", " AND y.dt < DATE '2024-02-01'")))
    inner = f"SELECT x.k AS k, COUNT(y.i) AS c FROM {a}.t x LEFT JOIN {table_of(draw, b)} y ON x.k = y.k{on} GROUP BY x.k"
    return draw(st.sampled_from((
        f"SELECT q.c AS c, COUNT(*) AS n FROM ({inner}) q GROUP BY q.c",
        f"SELECT MAX(q.c) AS m, SUM(q.c) AS s FROM ({inner}) q",
        f"SELECT q.c AS c, COUNT(*) AS n FROM ({inner}) q GROUP BY q.c ORDER BY n DESC, c DESC",
        f"WITH r AS ({inner.replace('COUNT(y.i)', 'SUM(y.i)')}) SELECT AVG(r.c) AS a FROM r",
    )))


def correlated_over_two(draw) -> str:
    """IN / EXISTS / NOT EXISTS whose subquery joins two parties, correlated or not."""
    a, b, c = draw(st.permutations(PARTIES))
    inner = f"{table_of(draw, b)} y JOIN {c}.t z ON y.k = z.k"
    return draw(st.sampled_from((
        f"SELECT x.k AS o0, x.i AS o1 FROM {a}.t x WHERE EXISTS (SELECT 1 FROM {inner} WHERE y.k = x.k)",
        f"SELECT x.k AS o0, x.i AS o1 FROM {a}.t x WHERE NOT EXISTS (SELECT 1 FROM {inner} WHERE y.k = x.k AND z.i > x.i)",
        f"SELECT x.k AS o0 FROM {a}.t x WHERE x.k IN (SELECT y.k FROM {inner} WHERE z.i > 12)",
        f"SELECT x.k AS o0 FROM {a}.t x WHERE x.k NOT IN (SELECT z.k FROM {inner})",
        f"SELECT x.k AS o0, x.s AS o1 FROM {a}.t x WHERE EXISTS (SELECT 1 FROM {inner} WHERE z.k = x.k AND y.s = x.s)",
        f"SELECT x.k AS g, COUNT(*) AS n FROM {a}.t x WHERE x.k IN (SELECT y.k FROM {inner}) GROUP BY x.k",
    )))


def outer_join_filters(draw) -> str:
    """LEFT / RIGHT / FULL joins with one condition in ON, or the same in WHERE (DuckDB's NULL-extended rows)."""
    a, b = two(draw)
    kind = draw(st.sampled_from(("LEFT JOIN", "FULL JOIN", "RIGHT JOIN")))
    cond = draw(st.sampled_from(("y.i > 11", "x.i > 2", "y.s IS NULL", "x.s = y.s", "y.dt > DATE '2024-01-15'",
                                 "x.b")))
    out = "x.k AS o0, x.i AS o1, y.k AS o2, y.i AS o3"
    source = f"{a}.t x {kind} {table_of(draw, b)} y ON x.k = y.k"
    if draw(st.booleans()):
        return f"SELECT {out} FROM {source} AND {cond}"
    if draw(st.booleans()):
        return f"SELECT {out} FROM {source} WHERE {cond}"
    return f"SELECT x.k AS g, COUNT(y.k) AS n, SUM(y.i) AS s FROM {source} AND {cond} GROUP BY x.k"


def ordered_in_derived(draw) -> str:
    """ORDER BY … LIMIT / OFFSET inside a derived table, the kept rows then aggregated or joined (the sort
    keys are the only columns read above it, so tied rows are alike)."""
    a, b = two(draw)
    order = draw(st.sampled_from(("y.i", "y.i DESC", "x.k DESC NULLS LAST", "y.d")))
    column = order.split()[0]
    cut = draw(st.sampled_from(("LIMIT 3", "LIMIT 2 OFFSET 1", "LIMIT 0", "LIMIT 10 OFFSET 4")))
    inner = f"SELECT {column} AS v FROM {a}.t x JOIN {table_of(draw, b)} y ON x.k = y.k ORDER BY {order} {cut}"
    return draw(st.sampled_from((
        f"SELECT COUNT(*) AS n, SUM(q.v) AS s, MIN(q.v) AS m FROM ({inner}) q",
        f"SELECT q.v AS v FROM ({inner}) q",
        f"SELECT q.v AS v, COUNT(*) AS n FROM ({inner}) q GROUP BY q.v",
    )))


def distinct_expressions(draw) -> str:
    """DISTINCT over computed values of a join or of the union, CASE and NULLIF with NULLs."""
    value = draw(st.sampled_from((
        "x.i % 3", "x.k + y.k", "CASE WHEN x.i > 3 THEN y.s END", "NULLIF(x.k, 2)", "COALESCE(y.s, x.s)",
        "CASE WHEN x.b THEN NULL ELSE x.k END", "x.s || y.s", "CASE WHEN y.i IS NULL THEN -1 WHEN y.i > 12 THEN 1 END",
        "LENGTH(y.s) > 1", "x.d * 2")))
    if "y." not in value and draw(st.booleans()):
        return f"SELECT DISTINCT {value} AS o0 FROM allt x"
    a, b = two(draw)
    kind = draw(st.sampled_from(("JOIN", "LEFT JOIN", "FULL JOIN")))
    source = f"{a}.t x {kind} {table_of(draw, b)} y ON x.k = y.k"
    if draw(st.booleans()):
        return f"SELECT DISTINCT {value} AS o0 FROM {source}"
    return f"SELECT {value} AS g, COUNT(*) AS n FROM {source} GROUP BY {value}"


def having_alone(draw) -> str:
    """HAVING without GROUP BY over the union or a join (one group, or none)."""
    source = draw(st.sampled_from(("allt x", f"{union_source(draw)} x",
                                   "bank.t x JOIN shop.t y ON x.k = y.k", "insurer.e x JOIN bank.t y ON x.k = y.k")))
    agg = draw(st.sampled_from(("COUNT(*)", "SUM(x.i)", "MIN(x.k)", "COUNT(DISTINCT x.k)")))
    bound = draw(st.sampled_from(("0", "3", "100")))
    return f"SELECT {agg} AS a0, MAX(x.i) AS a1 FROM {source} HAVING {agg} > {bound}"


def expression_keys(draw) -> str:
    """Keys computed from columns (NULL where a column is, or where NULLIF / CASE makes it) over a union or
    a join: GROUP BY, DISTINCT, ORDER BY … LIMIT with a second key that decides among the NULLs."""
    key = draw(st.sampled_from(("NULLIF(x.k, 2)", "CASE WHEN x.i > 3 THEN x.k END", "x.k + x.i", "x.k % 2",
                                "COALESCE(x.k, 0) * 2", "NULLIF(x.s, 'a')")))
    if draw(st.booleans()):
        source = f"{union_source(draw)} x"
    else:
        a, b = two(draw)
        source = f"{a}.t x {draw(st.sampled_from(('JOIN', 'LEFT JOIN')))} {table_of(draw, b)} y ON x.k = y.k"
    return draw(st.sampled_from((
        f"SELECT {key} AS g, COUNT(*) AS n, SUM(x.i) AS s FROM {source} GROUP BY {key}",
        f"SELECT DISTINCT {key} AS g FROM {source}",
        f"SELECT {key} AS g, x.i AS i FROM {source} ORDER BY g NULLS FIRST, i DESC NULLS LAST LIMIT 4",
        f"SELECT COUNT(DISTINCT {key}) AS n FROM {source}",
    )))


SHAPES = {"window_union": window_over_union, "window_join": window_over_join, "self_join": self_join_of_union,
          "sets": set_of_two_columns, "nested": nested_two_party, "q13": aggregate_of_aggregate,
          "correlated": correlated_over_two, "outer": outer_join_filters, "ordered": ordered_in_derived,
          "distinct": distinct_expressions, "having": having_alone, "keys": expression_keys}


@st.composite
def query(draw) -> str:
    return SHAPES[draw(st.sampled_from(tuple(SHAPES)))](draw)


@st.composite
def cases(draw) -> tuple[str, int, str, tuple[str, ...]]:
    """(grant mode, threshold, issuer, queries)."""
    modes = tuple(GRANT_MODES) + tuple(MIXES) * 2 + ("plaintext",)
    queries = draw(st.lists(query(), min_size=1, max_size=5))
    return draw(st.sampled_from(modes)), draw(st.sampled_from((0, 1, 4))), draw(st.sampled_from(PARTIES)), \
        tuple(queries)


HUNT_EXAMPLES = int(os.environ.get("HUNT_EXAMPLES", "3"))


@settings(derandomize="HUNT_EXAMPLES" not in os.environ, max_examples=HUNT_EXAMPLES, deadline=None,
          phases=(Phase.explicit, Phase.generate), suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.data_too_large])
@given(case=cases())
def test_composed_shapes_are_refused_or_equal_to_the_oracle(federation_writer, grants_for, case):
    mode, min_group_size, issuer, queries = case
    with tempfile.TemporaryDirectory() as directory:
        path = federation_writer(Path(directory), FEDERATION, grants_of(mode, grants_for) + VIEWS,
                                 parties=PARTIES, min_group_size=min_group_size)
        with Engine(path, timeout=60) as engine:
            oracle = ViewOracle(engine)
            for sql in queries:
                event(f"{mode}: {assert_refused_or_oracle(oracle, sql, issuer)}")
