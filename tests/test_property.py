"""Issue 15's property: over a random small federation with random grants, every generated query is
either refused with an error of the PEP 249 tree or answered exactly as plain DuckDB answers it (the
oracle of tests/conftest.py), and `check` refuses exactly the queries that execution refuses.

Data comes from a few fixed seeds (so a failure reproduces from its printed example); grants,
min_group_size, the issuer and the queries are drawn freely. The query grammar covers the documented
query classes (README "What works today", docs/design.md): single-party queries, cross-party inner and left
equi-joins on 1-2 keys over 2-3 parties, IN / NOT IN / EXISTS, aggregates with GROUP BY / HAVING,
cross-party predicates and expressions, ORDER BY / LIMIT, UNION ALL, DISTINCT, CTEs and subqueries.
"""

from __future__ import annotations

import datetime
import decimal
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, Phase, event, given, note, settings
from hypothesis import strategies as st

import sqlsecure
from sqlsecure.engine import Engine

CONSTRAINTS = ("PLAINTEXT", "PLAINTEXT_AFTER_JOIN", "PLAINTEXT_AS_JOIN_PAYLOAD", "PLAINTEXT_AFTER_GROUP_BY",
               "PLAINTEXT_AFTER_AGGREGATE", "PLAINTEXT_AFTER_COMPARE", "REVEAL_RANK", "ENCRYPTED_ONLY")
NUMBER, TEXT, DATE = "number", "text", "date"
COLUMNS = {"k": NUMBER, "i": NUMBER, "d": NUMBER, "f": NUMBER, "s": TEXT, "dt": DATE}  # k: the join key
WORDS = ("a", "b", "c", "dd")
DAYS = tuple(datetime.date(2024, 1, 1) + datetime.timedelta(days=n) for n in (0, 3, 3, 40, 400))
SEEDS = (1, 2, 3)  # each a federation shape and its data


# --- the federation -------------------------------------------------------------------------------

def _with_nulls(rng, values: list, share: float = 0.15) -> list:
    return [None if rng.random() < share else v for v in values]


def random_table(rng, rows: int) -> pa.Table:
    """A table of every column kind, with small domains (duplicates) and NULLs."""
    return pa.table({
        "k": pa.array(_with_nulls(rng, [int(v) for v in rng.integers(1, 7, rows)]), pa.int64()),
        "i": pa.array(_with_nulls(rng, [int(v) for v in rng.integers(-3, 11, rows)]), pa.int32()),
        "d": pa.array(_with_nulls(rng, [decimal.Decimal(int(v)) / 4 for v in rng.integers(-8, 60, rows)]),
                      pa.decimal128(8, 2)),
        "f": pa.array(_with_nulls(rng, [float(v) for v in rng.choice([-1.5, 0.0, 0.25, 2.0, 7.75, 100.0], rows)])),
        "s": pa.array(_with_nulls(rng, [str(v) for v in rng.choice(WORDS, rows)])),
        "dt": pa.array(_with_nulls(rng, [DAYS[int(v)] for v in rng.integers(0, len(DAYS), rows)]), pa.date32()),
    })


def random_federation(seed: int) -> dict[str, dict[str, pa.Table]]:
    """2-3 parties, 1-2 tables each, 0-30 rows per table.

    shop's tables are written as CSV by the conftest writer: they get at least 2 rows, because a
    header-only CSV keeps its column names but has no types (its columns are VARCHAR; see
    docs/federation.md), so its UNIONs and arithmetic would differ from the other parties' tables."""
    rng = np.random.default_rng(seed)
    parties = ("bank", "shop", "insurer")[: int(rng.integers(2, 4))]
    return {party: {name: random_table(rng, int(rng.integers(2 if party == "shop" else 0, 31)))
                    for name in ("t", "u")[: int(rng.integers(1, 3))]} for party in parties}


FEDERATIONS = {seed: random_federation(seed) for seed in SEEDS}


@dataclass(frozen=True)
class Case:
    """One example: a federation (by seed), its grants and threshold, the issuer and its queries."""

    seed: int
    grants: tuple[tuple[str, str, str], ...]  # (party, party.table.column, constraint)
    min_group_size: int
    issuer: str
    queries: tuple[str, ...]


# --- grants ---------------------------------------------------------------------------------------

@st.composite
def grant_sets(draw, seed: int) -> tuple[tuple[str, str, str], ...]:
    """Each (column, other party) a random CCL constraint (None: no grant). Often everything or mostly
    PLAINTEXT, so that the answered branch of the property is exercised as much as the refused one."""
    federation = FEDERATIONS[seed]
    mode = draw(st.sampled_from(("plaintext", "plaintext", "generous", "random")))
    weighted = {"plaintext": ("PLAINTEXT",), "generous": ("PLAINTEXT",) * 12 + CONSTRAINTS[1:] + (None,),
                "random": CONSTRAINTS + (None,)}[mode]
    grants = []
    for owner, tables in federation.items():
        for table in tables:
            for column in COLUMNS:
                for party in federation:
                    if party == owner:
                        continue  # the owner always has PLAINTEXT; a grant to it is a config question
                    constraint = draw(st.sampled_from(weighted))
                    if constraint is not None:
                        grants.append((party, f"{owner}.{table}.{column}", constraint))
    return tuple(grants)


# --- the query grammar ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """A FROM clause, the WITH clause it needs, and its columns as (qualified name, kind)."""

    sql: str
    columns: tuple[tuple[str, str], ...]
    with_sql: str = ""


def _literal(draw, kind: str) -> str:
    if kind == NUMBER:
        return draw(st.sampled_from(("0", "1", "3", "-2", "2.5", "10")))
    if kind == TEXT:
        return draw(st.sampled_from(tuple(f"'{w}'" for w in WORDS)))
    return f"DATE '{draw(st.sampled_from(DAYS)).isoformat()}'"


def _of_kind(columns, kind: str) -> list[str]:
    return [name for name, k in columns if k == kind]


def number_expr(draw, columns, depth: int = 0) -> str:
    """A numeric expression over the columns: a column, arithmetic, or a CASE over a predicate."""
    numbers = _of_kind(columns, NUMBER)
    shape = draw(st.sampled_from(("column", "column", "arith", "case") if depth < 2 else ("column",)))
    if shape == "column":
        return draw(st.sampled_from(numbers))
    if shape == "arith":
        left = number_expr(draw, columns, depth + 1)
        right = draw(st.one_of(st.just(None), st.sampled_from(numbers)))
        return f"({left} {draw(st.sampled_from(('+', '-', '*')))} {right or _literal(draw, NUMBER)})"
    return (f"CASE WHEN {predicate(draw, columns, depth + 1)} THEN {number_expr(draw, columns, depth + 1)} "
            f"ELSE {_literal(draw, NUMBER)} END")


def predicate(draw, columns, depth: int = 0) -> str:
    """A predicate: comparisons of columns with literals or with each other, NULL tests, BETWEEN,
    LIKE, and AND / OR / NOT of those."""
    shape = draw(st.sampled_from(("compare", "compare", "columns", "null", "between", "like", "bool")
                                 if depth < 2 else ("compare", "null")))
    if shape == "bool":
        left, right = predicate(draw, columns, depth + 1), predicate(draw, columns, depth + 1)
        return draw(st.sampled_from((f"({left} AND {right})", f"({left} OR {right})", f"NOT ({left})")))
    kind = draw(st.sampled_from(tuple({k for _, k in columns})))
    column = draw(st.sampled_from(_of_kind(columns, kind)))
    if shape == "null":
        return f"{column} IS {draw(st.sampled_from(('', 'NOT ')))}NULL"
    if shape == "like" and _of_kind(columns, TEXT):
        return f"{draw(st.sampled_from(_of_kind(columns, TEXT)))} LIKE '{draw(st.sampled_from(WORDS))[0]}%'"
    op = draw(st.sampled_from(("=", "<>", "<", "<=", ">", ">=")))
    if shape == "columns":
        other = draw(st.sampled_from(_of_kind(columns, kind)))
        right = number_expr(draw, columns, depth + 1) if kind == NUMBER else other
        return f"{number_expr(draw, columns, depth + 1) if kind == NUMBER else column} {op} {right}"
    if shape == "between":
        low, high = sorted((_literal(draw, kind), _literal(draw, kind)))
        return f"{column} BETWEEN {low} AND {high}"
    return f"{column} {op} {_literal(draw, kind)}"


def table_source(draw, case_tables, alias: str) -> tuple[Source, str]:
    party, table = draw(st.sampled_from(case_tables))
    return Source(f"{party}.{table} {alias}", tuple((f"{alias}.{c}", k) for c, k in COLUMNS.items())), party


def join_source(draw, case_tables) -> Source:
    """2-3 tables joined on k (and sometimes a second key), inner or left."""
    first, party = table_source(draw, case_tables, "x")
    sql, columns = first.sql, first.columns
    for alias in ("y", "z")[: draw(st.integers(1, 2))]:
        others = [(p, t) for p, t in case_tables if p != party]  # mostly across parties
        nxt, _ = table_source(draw, others if draw(st.integers(0, 3)) else case_tables, alias)
        on = f"x.k = {alias}.k"
        if draw(st.booleans()):
            on += draw(st.sampled_from((f" AND x.i = {alias}.i", f" AND x.s = {alias}.s",
                                        f" AND x.f > {alias}.f")))
        kind = draw(st.sampled_from(("JOIN", "JOIN", "LEFT JOIN")))
        sql += f" {kind} {nxt.sql} ON {on}"
        columns += nxt.columns
    return Source(sql, columns)


def wrapped_source(draw, case_tables, name: str, as_cte: bool) -> Source:
    """A subquery in FROM or a CTE: a filtered table, a join of several parties, or a UNION ALL."""
    shape = draw(st.sampled_from(("filter", "join", "union", "union")))
    if shape == "filter":
        inner, _ = table_source(draw, case_tables, "w")
        body = f"SELECT * FROM {inner.sql} WHERE {predicate(draw, inner.columns)}"
        kinds = tuple(COLUMNS.items())
    elif shape == "join":
        inner = join_source(draw, case_tables)
        picked = draw(st.lists(st.sampled_from(inner.columns), min_size=1, max_size=4, unique=True))
        body = "SELECT " + ", ".join(f"{c} AS c{n}" for n, (c, _) in enumerate(picked)) + f" FROM {inner.sql}"
        kinds = tuple((f"c{n}", k) for n, (_, k) in enumerate(picked))
    else:
        kinds_drawn = draw(st.lists(st.sampled_from(tuple(COLUMNS)), min_size=1, max_size=3))
        branches, parties = [], draw(st.permutations(sorted({p for p, _ in case_tables})))
        for n in range(draw(st.integers(2, 3))):  # each branch another party's, while there are parties left
            party, table = draw(st.sampled_from([(p, t) for p, t in case_tables if p == parties[n % len(parties)]]))
            picked = [draw(st.sampled_from([c for c, k in COLUMNS.items() if k == COLUMNS[want]]))
                      for want in kinds_drawn]
            branches.append("SELECT " + ", ".join(f"{c} AS c{n}" for n, c in enumerate(picked))
                            + f" FROM {party}.{table}")
        body = " UNION ALL ".join(branches)
        kinds = tuple((f"c{n}", COLUMNS[want]) for n, want in enumerate(kinds_drawn))
    columns = tuple((f"{name}.{c}", k) for c, k in kinds)
    if as_cte:
        return Source(f"q {name}", columns, f"WITH q AS ({body}) ")
    return Source(f"({body}) {name}", columns)


def semi_join(draw, case_tables, columns) -> str:
    """IN / NOT IN / EXISTS / NOT EXISTS of a key against another table."""
    keys = [c for c, _ in columns if c.endswith(".k") or c.endswith(".i")]
    key = draw(st.sampled_from(keys or _of_kind(columns, NUMBER)))
    party, table = draw(st.sampled_from(case_tables))
    inner_columns = tuple((f"v.{c}", k) for c, k in COLUMNS.items())
    where = f" WHERE {predicate(draw, inner_columns, 1)}" if draw(st.booleans()) else ""
    if draw(st.booleans()):
        return f"{key} {draw(st.sampled_from(('', 'NOT ')))}IN (SELECT v.k FROM {party}.{table} v{where})"
    extra = f" AND {predicate(draw, inner_columns, 1)}" if draw(st.booleans()) else ""
    return (f"{draw(st.sampled_from(('', 'NOT ')))}EXISTS (SELECT 1 FROM {party}.{table} v "
            f"WHERE v.k = {key}{extra})")


def aggregate(draw, columns, numbers) -> str:
    kind = draw(st.sampled_from(("COUNT(*)", "COUNT", "COUNT DISTINCT", "MIN", "MAX")
                                + (("SUM", "AVG") if numbers else ())))
    if kind == "COUNT(*)":
        return kind
    if kind in ("SUM", "AVG"):
        return f"{kind}({number_expr(draw, columns, 1)})"
    if kind == "MAX" and draw(st.integers(0, 3)) == 0:  # of a truth value (SUM counts the trues in DuckDB)
        return f"{draw(st.sampled_from(('MAX', 'MIN', 'SUM')))}({predicate(draw, columns, 1)})"
    column = draw(st.sampled_from([c for c, _ in columns]))
    return f"COUNT(DISTINCT {column})" if kind == "COUNT DISTINCT" else f"{kind}({column})"


def output(draw, columns, numbers) -> str:
    """A projected value: a column, a numeric expression or a predicate's truth value."""
    shape = draw(st.sampled_from(("column", "column", "number", "predicate")))
    if shape == "number" and numbers:
        return number_expr(draw, columns)
    if shape == "predicate":
        return predicate(draw, columns)
    return draw(st.sampled_from([c for c, _ in columns]))


def select_over(draw, source: Source, case_tables) -> str:
    """A projection or an aggregate over `source`, with WHERE, GROUP BY / HAVING, DISTINCT,
    ORDER BY every output column (so LIMIT keeps a well-defined multiset) and LIMIT."""
    columns = source.columns
    conditions = []
    if draw(st.booleans()):
        conditions.append(predicate(draw, columns))
    numbers = _of_kind(columns, NUMBER)
    if numbers and draw(st.integers(0, 3)) == 0:
        conditions.append(semi_join(draw, case_tables, columns))
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    if draw(st.booleans()):  # aggregate
        keys = draw(st.lists(st.sampled_from([c for c, _ in columns]), max_size=2, unique=True))
        outputs = keys + [aggregate(draw, columns, numbers) for _ in range(draw(st.integers(1, 3)))]
        tail = f" GROUP BY {', '.join(keys)}" if keys else ""
        if keys and draw(st.booleans()):
            tail += f" HAVING COUNT(*) > {draw(st.integers(0, 3))}"
        distinct = ""
    else:
        outputs = [output(draw, columns, numbers) for _ in range(draw(st.integers(1, 3)))]
        tail, distinct = "", draw(st.sampled_from(("", "DISTINCT ")))
    select = ", ".join(f"{o} AS o{n}" for n, o in enumerate(outputs))
    if draw(st.integers(0, 2)) == 0:
        tail += " ORDER BY " + ", ".join(f"o{n}" for n in range(len(outputs))) + f" LIMIT {draw(st.integers(0, 5))}"
    return f"{source.with_sql}SELECT {distinct}{select} FROM {source.sql}{where}{tail}"


@st.composite
def queries(draw, case_tables) -> str:
    shape = draw(st.sampled_from(("table", "join", "join", "subquery", "cte", "union")))
    if shape == "table":
        source, _ = table_source(draw, case_tables, "x")
    elif shape == "join":
        source = join_source(draw, case_tables)
    elif shape == "union":  # a bare UNION ALL of two parties' columns, or its DISTINCT values
        a, b = draw(st.sampled_from(case_tables)), draw(st.sampled_from(case_tables))
        kind = draw(st.sampled_from(tuple(COLUMNS)))
        other = draw(st.sampled_from([c for c, k in COLUMNS.items() if k == COLUMNS[kind]]))
        union = f"SELECT {kind} AS o0 FROM {a[0]}.{a[1]} UNION ALL SELECT {other} FROM {b[0]}.{b[1]}"
        return f"SELECT DISTINCT u.o0 AS o0 FROM ({union}) u" if draw(st.booleans()) else union
    else:
        source = wrapped_source(draw, case_tables, "x", as_cte=shape == "cte")
        if draw(st.integers(0, 2)) == 0:  # join the subquery with another party's table
            other, _ = table_source(draw, case_tables, "y")
            key = next((c for c, k in source.columns if k == NUMBER), None)
            if key is not None:
                source = Source(f"{source.sql} JOIN {other.sql} ON {key} = y.k", source.columns + other.columns,
                                source.with_sql)
    return select_over(draw, source, case_tables)


@st.composite
def cases(draw) -> Case:
    seed = draw(st.sampled_from(SEEDS))
    federation = FEDERATIONS[seed]
    case_tables = [(p, t) for p, ts in federation.items() for t in ts]
    return Case(seed, draw(grant_sets(seed)), draw(st.sampled_from((0, 1, 2, 3, 4))),
                draw(st.sampled_from(tuple(federation))),
                tuple(draw(st.lists(queries(case_tables), min_size=1, max_size=3))))


# --- the property ---------------------------------------------------------------------------------

def open_engine(case: Case, directory: Path, federation_writer, grants_for) -> Engine:
    """The case's federation written with the conftest writer (one party on CSV, the others on Parquet)."""
    federation = FEDERATIONS[case.seed]
    grants = grants_for(*((party, (column,), constraint) for party, column, constraint in case.grants))
    path = federation_writer(directory, federation, grants, parties=tuple(federation),
                             min_group_size=case.min_group_size)
    return Engine(path, timeout=60)


def refusal_of_check(engine: Engine, sql: str, issuer: str) -> str | None:
    """`check`'s verdict; an Error raised by check itself is a refusal too (never a bare exception)."""
    try:
        return engine.check(sql, issuer)
    except sqlsecure.Error as exc:
        return f"{type(exc).__name__}: {exc}"


def refused_by_the_data(exc: sqlsecure.Error) -> bool:
    """The refusals that depend on the data, which only execution can make (documented in the README):
    an AVG beyond the SPU's fixed-point range, and a declared unique key the data repeats where a join
    relies on it (each a DataError; each party learns that one bit)."""
    return isinstance(exc, sqlsecure.DataError)


def assert_refused_or_oracle(oracle, sql: str, issuer: str) -> str:
    """The property for one query: refused with a PEP 249 error (and by `check` too), or the oracle's
    rows. A bare Python exception propagates and fails the test. Returns the verdict, for statistics."""
    note(f"issuer {issuer}: {sql}")
    refused = refusal_of_check(oracle.engine, sql, issuer)
    try:
        oracle.check(sql, issuer)
    except sqlsecure.Error as exc:
        note(f"refused: {type(exc).__name__}: {exc}")
        if isinstance(exc, sqlsecure.InternalError):  # the engine's own "should never happen": a bug, not a refusal
            pytest.fail(f"internal error: {sql}\n{exc}")
        if refused is None and not refused_by_the_data(exc):
            pytest.fail(f"check accepted what execution refused: {sql}\n{type(exc).__name__}: {exc}")
        return f"refused: {type(exc).__name__}"
    except duckdb.Error as exc:
        pytest.fail(f"answered a query plain DuckDB rejects: {sql}\n{exc}")
    assert refused is None, f"check refused what execution answered: {sql}\n{refused}"
    return "answered"


# No shrink phase: each shrinking step rebuilds a federation and reruns its queries, minutes in all.
# To triage a failure, add Phase.shrink (and read the notes: each query with its verdict).
@settings(derandomize=True, max_examples=80, deadline=None, phases=(Phase.explicit, Phase.generate),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases())
def test_refused_or_equal_to_the_oracle(federation_writer, grants_for, oracle_for, case: Case):
    with tempfile.TemporaryDirectory() as directory, \
            open_engine(case, Path(directory), federation_writer, grants_for) as engine:
        oracle = oracle_for(engine)
        for sql in case.queries:
            event(assert_refused_or_oracle(oracle, sql, case.issuer))


@pytest.mark.parametrize("sql", [
    "SELECT x.k AS o0, y.f AS o1 FROM bank.t x JOIN shop.t y ON x.k = y.k",
    "SELECT x.s AS o0, COUNT(*) AS o1, SUM(y.d) AS o2 FROM bank.t x JOIN shop.t y ON x.k = y.k GROUP BY x.s",
    "SELECT x.k AS o0 FROM bank.t x WHERE x.k IN (SELECT v.k FROM shop.t v)",
])
def test_the_grammar_is_answered_under_plaintext_grants(tmp_path, federation_writer, grants_for, oracle_for, sql):
    """Guard against a vacuous property: with every column PLAINTEXT to everyone, the grammar's
    basic shapes are answered (and equal the oracle), not all refused."""
    federation = FEDERATIONS[SEEDS[0]]
    everything = tuple((party, f"{owner}.{table}.{column}", "PLAINTEXT") for owner, tables in federation.items()
                       for table in tables for column in COLUMNS for party in federation if party != owner)
    case = Case(SEEDS[0], everything, 0, "bank", (sql,))
    with open_engine(case, tmp_path, federation_writer, grants_for) as engine:
        oracle_for(engine).check(sql, "bank")
