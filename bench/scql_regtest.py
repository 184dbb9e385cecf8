"""SCQL's regression queries as a measured suite: each one refused, or answered as plain DuckDB answers it.

SCQL (secretflow/scql) runs its regression test (`cmd/regtest`) over three parties, alice, bob and
carol, each holding tables `tbl_0`..`tbl_2` whose column names say their type and their CCL
(`pkg/util/mock/mock_schema.py`): `{level}_{type}_{i}` for every level of plain, join, joinpayload,
groupby, compare, aggregate, encrypt, rank, every type of int, float, string, datetime, timestamp, and
i = 0..2; the owner sees its columns in the clear, every other party gets the column's level. Two more
tables per party (`pkg/util/mock/testdata/table_*.json`): `tbl_3`, whose names give one level per party
in the order alice, bob, carol (`pl_jn_cp_int_0`), and `UPPER_table`. The queries
(tests/fixtures/scql_regtest.json) are the `query` of each case of `single_party.json`,
`two_parties.json` and `multi_parties.json`, issued by alice as SCQL's test does, in SCQL's dialect
(MySQL). Not here: `single_party_postgres.json` (carol's PostgreSQL dialect) and `view.json` (SCDB
views, created by statements our federation file has no counterpart of at run time).

Here:
- the same tables at the same parties, with generated data of the same columns and types (seeded;
  NULLs in every column, duplicates from small domains, so joins match and groups are large);
- SCQL's CCL written as our grants (the same vocabulary): plain PLAINTEXT, join PLAINTEXT_AFTER_JOIN,
  joinpayload PLAINTEXT_AS_JOIN_PAYLOAD, groupby PLAINTEXT_AFTER_GROUP_BY, compare PLAINTEXT_AFTER_COMPARE,
  aggregate PLAINTEXT_AFTER_AGGREGATE, rank REVEAL_RANK, encrypt no grant (ENCRYPTED_ONLY);
- table names as our federation spells them (`alice_tbl_0` and `scdb.alice_tbl_0` are `alice.tbl_0`);
  an older `multi_parties.json` names the int columns `*_long_*`, read as `*_int_*`;
- `dialect = "mysql"`, `min_group_size = 4`: SCQL has a group threshold too (its MySQL check adds
  `HAVING COUNT(*) >= 4` to grouped queries); ours counts each other owner's distinct rows per group,
  and the oracle applies ours.

Each query runs through `Engine.execute` as alice and is compared with the test oracle
(tests/conftest.py: plain DuckDB over all parties' tables, rows as multisets, fixed-point tolerance,
the group threshold applied): `equal`, `WRONG` (with both answers), `refused` (the PEP 249 class and the
message's first 100 characters), `unverified` (answered, but DuckDB cannot run the query, or answers
with values of another kind: MySQL's `datetime - datetime` is a number, DuckDB's an interval), or
`ERROR` (an InternalError, another PEP 249 class, or an exception outside the tree). Then the totals,
and the refusals grouped by message pattern (the ten most common): the planner team's to-do list.

Exit 1 on any WRONG answer or ERROR, else 0.

Run:  python bench/scql_regtest.py [--filter SUBSTRING] [--rows N] [--data DIR]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test oracle, reused as is
from conftest import Oracle, grants_toml, same_multiset, sorted_rows  # noqa: E402

from sqlsecure.engine import Engine  # noqa: E402
from sqlsecure.errors import DataError, Error, NotSupportedError, ProgrammingError  # noqa: E402

QUERIES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "scql_regtest.json"
PARTIES = ("alice", "bob", "carol")
ISSUER = "alice"
REFUSALS = (ProgrammingError, NotSupportedError, DataError)
LEVELS = {"plain": "PLAINTEXT", "join": "PLAINTEXT_AFTER_JOIN", "joinpayload": "PLAINTEXT_AS_JOIN_PAYLOAD",
          "groupby": "PLAINTEXT_AFTER_GROUP_BY", "compare": "PLAINTEXT_AFTER_COMPARE",
          "aggregate": "PLAINTEXT_AFTER_AGGREGATE", "rank": "REVEAL_RANK", "encrypt": None}
SHORT_LEVELS = {"pl": "plain", "jn": "join", "gb": "groupby", "cp": "compare", "ag": "aggregate",
                "agg": "aggregate", "en": "encrypt"}
TYPES = ("int", "float", "string", "datetime", "timestamp")
# tbl_3 and UPPER_table of pkg/util/mock/testdata/table_{alice,bob,carol}.json
SPECIAL_TABLES = {
    "alice": {"tbl_3": ["gb_gb_gb_int_0", "cp_cp_cp_int_0", "jn_jn_jn_int_0", "pl_jn_cp_int_0"]},
    "bob": {"tbl_3": ["cp_pl_jn_int_0", "cp_pl_jn_int_1", "jn_pl_cp_int_0", "jn_pl_cp_int_1", "ag_pl_en_int_0",
                      "gb_pl_en_int_0", "plain_datetime_0", "plain_timestamp_0"]},
    "carol": {"tbl_3": ["cp_jn_pl_int_0", "cp_jn_pl_int_1", "gb_en_pl_int_0", "agg_en_pl_int_0",
                        "plain_datetime_0", "plain_timestamp_0"]},
}
UPPER_TABLE = ["GROUPBY_int_0", "groupby_int_1", "JOIN_string_0", "join_string_1", "COMPARE_float_0",
               "compare_float_1"]
WORDS = ("ma", "ejjepeki", "alpha", " beta ", "gamma", "delta", "Epsilon", "zeta  ", "eta", "theta")
NULL_SHARE = 0.08


def generated_columns() -> list[str]:
    """tbl_0..tbl_2's columns, in mock_schema.py's order."""
    return [f"{level}_{kind}_{i}" for i in range(3) for kind in TYPES for level in LEVELS]


def tables_of(party: str) -> dict[str, list[str]]:
    """Every table of `party` and its columns."""
    tables = {f"tbl_{i}": generated_columns() for i in range(3)}
    return {**tables, **SPECIAL_TABLES[party], "UPPER_table": UPPER_TABLE}


def column_type(column: str) -> str:
    return column.split("_")[-2].lower()


def column_level(column: str, owner: str, grantee: str) -> str:
    """SCQL's level of `column` for `grantee`: one level for every other party, or one per party."""
    prefix = column.lower().rsplit("_", 2)[0]
    per_party = prefix.split("_")
    if len(per_party) == len(PARTIES) and all(p in SHORT_LEVELS for p in per_party):
        return SHORT_LEVELS[per_party[PARTIES.index(grantee)]]
    return prefix


def values(rng: np.random.Generator, kind: str, level: str, n: int) -> pa.Array:
    """`n` values of one column: small domains for keys (joins match, groups are large), NULLs throughout."""
    small = bool({"join", "joinpayload", "groupby", "jn", "gb"} & set(level.split("_")))
    if kind == "int":
        data = rng.integers(0, 12, n) if small else rng.integers(-20, 60, n)
        out = pa.array(data, pa.int64())
    elif kind == "float":
        data = rng.integers(0, 8, n) * 1.5 if small else np.round(rng.uniform(-500, 500, n), 2)
        out = pa.array(data, pa.float64())
    elif kind == "string":
        out = pa.array(list(np.array(WORDS)[rng.integers(0, 4 if small else len(WORDS), n)]), pa.string())
    else:
        start = datetime.datetime(2021, 1, 1)
        hours = rng.integers(0, 10, n) * 24 * 7 if small else rng.integers(0, 5 * 365 * 24, n)
        out = pa.array([start + datetime.timedelta(hours=int(h)) for h in hours], pa.timestamp("us"))
    nulls = rng.random(n) < NULL_SHARE
    return pa.array([None if null else v for v, null in zip(out.to_pylist(), nulls)], out.type)


def generate_table(rng: np.random.Generator, columns: list[str], n: int) -> pa.Table:
    return pa.table({c: values(rng, column_type(c), c.lower().rsplit("_", 2)[0], n) for c in columns})


def grants() -> str:
    """SCQL's CCL of every column for every party but its owner, as [[grants]] sections."""
    by_grant: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    for owner in PARTIES:
        for table, columns in tables_of(owner).items():
            for column in columns:
                for grantee in PARTIES:
                    constraint = LEVELS[column_level(column, owner, grantee)] if grantee != owner else None
                    if constraint:
                        by_grant[(grantee, constraint)].append(f"{owner}.{table}.{column}")
    return grants_toml(*((grantee, tuple(columns), constraint)
                         for (grantee, constraint), columns in sorted(by_grant.items())))


def write_federation(directory: Path, rows: int = 60, seed: int = 16) -> Path:
    """The parties' tables (Parquet) and a federation file with SCQL's CCL as grants."""
    rng = np.random.default_rng(seed)
    lines = ["[federation]", 'name = "scql_regtest"', 'dialect = "mysql"', "min_group_size = 4", ""]
    for party in PARTIES:
        lines.append(f"[parties.{party}.tables]")
        for table, columns in tables_of(party).items():
            path = directory / party / f"{table}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(generate_table(rng, columns, rows), path)
            lines.append(f'{table} = "{path.relative_to(directory)}"')
        lines.append("")
    path = directory / "federation.toml"
    path.write_text("\n".join(lines) + "\n" + grants(), encoding="utf-8")
    return path


def our_sql(scql_query: str) -> str:
    """SCQL's query with our table names (`alice_tbl_0`, `scdb.alice_tbl_0` -> `alice.tbl_0`)."""
    sql = re.sub(r"\bscdb\.", "", scql_query)
    sql = re.sub(r"\b(alice|bob|carol)_(tbl_\d+|UPPER_table)\b", r"\1.\2", sql)
    return re.sub(r"_long_(\d)", r"_int_\1", sql)


def load_queries() -> dict[str, str]:
    """Case id (`file/number name`) -> our SQL."""
    cases = json.loads(QUERIES.read_text(encoding="utf-8"))["queries"]
    return {f"{c['file']}/{i:03d} {c['name']}": our_sql(c["query"]) for i, c in enumerate(cases)}


@dataclasses.dataclass
class Outcome:
    """One query's result: `equal`, `WRONG`, `refused`, `unverified` or `ERROR`, and what to print."""

    kind: str
    detail: str = ""
    error: Error | None = None


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def run_query(engine: Engine, oracle: Oracle, sql: str, issuer: str = ISSUER) -> Outcome:
    """Execute `sql` as `issuer` and judge the answer against the oracle."""
    try:
        got = engine.execute(sql, issuer).table
    except REFUSALS as exc:
        return Outcome("refused", describe(exc), exc)
    except Exception as exc:  # noqa: BLE001 - an InternalError, a failed protocol or a crash: all reported
        return Outcome("ERROR", describe(exc))
    try:
        want = oracle.expected(sql, issuer)
    except Exception as exc:  # noqa: BLE001 - DuckDB cannot run it (a function of SCQL's own, say)
        return Outcome("unverified", f"oracle: {describe(exc)}")
    try:
        same = got.num_columns == want.num_columns and same_multiset(got, want)
    except TypeError:  # values no comparison relates: the dialect's semantics, which DuckDB does not emulate
        return Outcome("unverified", f"types differ: engine {got.schema.types}, duckdb {want.schema.types}")
    if same:
        return Outcome("equal", f"{got.num_rows} rows")
    return Outcome("WRONG", f"engine {got.num_rows} rows {sorted_rows(got)[:5]}; "
                            f"duckdb {want.num_rows} rows {sorted_rows(want)[:5]}")


PATTERNS = (  # what varies between refusals of one reason: names, quoted text, numbers
    (re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`"), "'…'"),
    (re.compile(r"\b(alice|bob|carol)(\.\w+){1,2}\b"), "<column>"),
    (re.compile(r"\b\w+_(int|float|string|datetime|timestamp)_\d\b", re.I), "<column>"),
    (re.compile(r"\b\d+(\.\d+)?\b"), "N"),
)


def reason(exc: Error) -> str:
    """A refusal's message with names and numbers blanked, cut at its first sentence: its pattern."""
    text = " ".join(str(exc).split())
    for pattern, blank in PATTERNS:
        text = pattern.sub(blank, text)
    first = re.split(r"(?<=[.:;])\s", text)[0]
    return f"{type(exc).__name__}: {first[:140]}"


def report(outcomes: dict[str, Outcome]) -> None:
    """The table, the totals and the ten most common refusal reasons."""
    width = max(len(name) for name in outcomes)
    for name, out in outcomes.items():
        detail = out.detail[:100] if out.kind == "refused" else out.detail
        print(f"{name.ljust(width)}  {out.kind:10}  {detail}")
    totals = collections.Counter(out.kind for out in outcomes.values())
    print("\ntotals: " + ", ".join(f"{kind} {totals[kind]}" for kind in
                                   ("equal", "WRONG", "refused", "unverified", "ERROR")) + f" of {len(outcomes)}")
    reasons = collections.Counter(reason(out.error) for out in outcomes.values() if out.kind == "refused")
    print("\ntop refusal reasons:")
    for text, count in reasons.most_common(10):
        print(f"{count:4}  {text}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--filter", default="", help="run only the cases whose id contains this (case-insensitive)")
    parser.add_argument("--rows", type=int, default=60, help="rows of every table")
    parser.add_argument("--data", type=Path, help="a directory for the generated tables, kept (default: temporary)")
    args = parser.parse_args()
    queries = {name: sql for name, sql in load_queries().items() if args.filter.lower() in name.lower()}
    if not queries:
        parser.error(f"no case matches --filter {args.filter!r}")
    directory = args.data or Path(tempfile.mkdtemp(prefix="sqlsecure-scqlreg-"))
    directory.mkdir(parents=True, exist_ok=True)
    try:
        with Engine(write_federation(directory, args.rows), timeout=120) as engine:
            oracle = Oracle(engine)
            outcomes = {}
            for name, sql in queries.items():
                outcomes[name] = run_query(engine, oracle, sql)
    finally:
        if args.data is None:
            shutil.rmtree(directory, ignore_errors=True)
    report(outcomes)
    return 1 if any(out.kind in ("WRONG", "ERROR") for out in outcomes.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
