"""Benchmark: Secrecy's workloads over horizontally partitioned data, beside Secrecy's published times.

Secrecy (Liagouris et al., NSDI 2023) ran each query on secret-shared data, 3x AWS r5.xlarge, one
thread per party. Here every table is split row by row across three parties (three hospitals, three
websites, three credit agencies, three shops), a federation view (`[views]`) gives each table one
name over the three parts, and the queries are Secrecy's (its artifact's `examples/queries`):

  comorbidity   SELECT diag, COUNT(*) … WHERE pid IN (SELECT * FROM cdiff_cohort) GROUP BY diag
                ORDER BY cnt DESC LIMIT 10                                  (rows: diagnosis)
  rcdiff        recurrent C. diff: consecutive cdiff visits of a patient 15-56 days apart, a self-join
                of the cdiff rows numbered by ROW_NUMBER() OVER (PARTITION BY pid ORDER BY visit_time)
                (Secrecy's artifact takes that row number as an input column; over rows split across
                hospitals it has to be computed by the query)                 (rows: diagnosis)
  aspirin       COUNT(DISTINCT pid) of heart-disease patients given aspirin after the diagnosis
                                                             (rows: diagnosis and medication each)
  pwd           password reuse: SELECT DISTINCT ID FROM R GROUP BY ID, PWD HAVING COUNT(*) > 1
  credit        credit score: people whose 2019 scores differ by more than 100 across agencies
  q4, q6, q13   bench/tpch.py's text (TPC-H's, validation parameters) over the views (Secrecy's
                artifact writes Q13's NOT LIKE as an equality), on `tpchgen-cli` data cut to the row count
                                                          (rows: orders for q4 and q13, lineitem for q6)

Each workload runs at Secrecy's published row count times `--scale` (or at `--rows` for all), the
data generated from a fixed seed (codes and times drawn so that every query has one right answer:
distinct counts before a LIMIT, distinct visit times per patient before ROW_NUMBER). The grants
are per workload (WORKLOADS below), each party granting the other two; min_group_size is the
federation's default unless `--min-group-size` says otherwise.

Reported per workload: Secrecy's rows and seconds, the rows run here, sqlsecure's seconds (embedded
mode, all parties in this process) and its process CPU seconds, plain DuckDB's, the issue's target
(at most 1/10 of Secrecy's time at the same row count) and whether it was met, and the check (as
bench/tpch.py: equal to plain DuckDB as the test oracle compares, or the refusal's class and
message). A row whose SPU shares the cost model (planner/cost.py) prices above a quarter of this
machine's RAM, or above `--max-rows`, is printed as too large, with the reason. Exit 1 on a
mismatch or an InternalError.

The machine may be shared: keep runs small (`--scale 0.001`) unless it is quiet.

Run:  python bench/secrecy.py [--scale 1] [--rows N] [--workloads comorbidity,...] [--max-rows N]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlglot
from sqlglot import exp

import tpch  # bench/tpch.py
from tpch import Measured, Oracle, chosen, measure, print_table, tpchgen

from conftest import grants_toml  # noqa: E402  (tests/, put on the path by bench/tpch.py)
from sqlsecure.engine import Engine  # noqa: E402
from sqlsecure.planner.cost import SPU_MEMORY_ROW, SPU_MEMORY_SHARE, memory_bytes  # noqa: E402
from sqlsecure.planner.views import expand_views  # noqa: E402

SEED = 2023
EPOCH = datetime.date(2019, 1, 1)
HEART_DISEASE, CDIFF = 0, 1  # diagnosis codes (Secrecy's aspirin query: diag = 0)
ASPIRIN = 1  # medication code (med = 1)


@dataclasses.dataclass(frozen=True)
class Workload:
    """One of Secrecy's queries: its published size and time, the parties, data, grants and SQL."""

    rows: int  # Secrecy's published input rows
    seconds: float  # Secrecy's published time
    parties: tuple[str, str, str]  # the first one issues the query
    tables: Callable[[int, np.random.Generator], dict[str, pa.Table]]  # the whole tables at a row count
    grants: dict[str, tuple[str, ...]]  # constraint -> columns (patterns over the three parties)
    sql: str
    columns: int  # columns the secure operators carry per row, for the SPU's memory estimate


def patient_visits(rows: int, patients: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """`rows` visits of `patients` patients, sorted by patient, each patient's visits on distinct days."""
    pid = np.sort(rng.integers(0, patients, rows))
    gaps = rng.integers(1, 61, rows)
    ends = np.cumsum(gaps)
    first = np.r_[True, pid[1:] != pid[:-1]]
    day = ends - np.maximum.accumulate(np.where(first, ends - gaps, 0))
    return pid, day + rng.integers(0, 365, patients)[pid]


def dates(days: np.ndarray) -> pa.Array:
    return pa.array((np.datetime64(EPOCH) + days.astype("timedelta64[D]")).astype("datetime64[D]"))


def comorbidity_tables(rows: int, rng) -> dict[str, pa.Table]:
    """Half the rows are the cohort's, diagnosis k (1..20) k·step times, so the top 10 are distinct;
    the other half are other patients' with any diagnosis."""
    patients = max(rows // 4, 20)
    cohort = np.arange(patients // 5 + 1)
    step = max(1, rows // 2 // 210)
    cohort_diag = np.repeat(np.arange(1, 21), np.arange(1, 21) * step)
    others = max(rows - len(cohort_diag), 0)
    pid = np.r_[rng.choice(cohort, len(cohort_diag)), rng.integers(len(cohort), patients, others)]
    diag = np.r_[cohort_diag, rng.integers(1, 41, others)]
    return {"diagnosis": pa.table({"pid": pid, "diag": diag}), "cdiff_cohort": pa.table({"pid": cohort})}


def rcdiff_tables(rows: int, rng) -> dict[str, pa.Table]:
    pid, day = patient_visits(rows, max(rows // 6, 2), rng)
    diag = np.where(rng.random(rows) < 0.5, CDIFF, rng.integers(2, 21, rows))
    return {"diagnosis": pa.table({"pid": pid, "diag": diag, "visit_time": dates(day)})}


def aspirin_tables(rows: int, rng) -> dict[str, pa.Table]:
    patients = max(rows // 4, 8)
    pid, day = patient_visits(rows, patients, rng)
    med_pid, med_day = patient_visits(rows, patients, rng)
    return {"diagnosis": pa.table({"pid": pid, "diag": rng.integers(0, 10, rows), "visit_time": dates(day)}),
            "medication": pa.table({"pid": med_pid, "med": rng.integers(0, 10, rows), "visit_time": dates(med_day)})}


def people(rows: int, rng, per_person: int = 60) -> np.ndarray:
    """A person id per row, about `per_person` rows each, so that a person's group has rows at every party
    (the group threshold counts each other party's rows: min_group_size 4 needs about 12 of a group's rows
    over the three parties); every third person has about 3 rows, whose groups the threshold withholds."""
    count = max(rows // per_person, 8)
    weights = np.where(np.arange(count) % 3 == 2, 3 / per_person, 1.0)
    return rng.choice(count, rows, p=weights / weights.sum())


def password_tables(rows: int, rng) -> dict[str, pa.Table]:
    """Odd users reuse one of two passwords (as hashes) across sites, groups of many rows; even users
    never reuse one (a new hash per row, groups of one row)."""
    ids = people(rows, rng)
    first = np.r_[True, np.diff(np.sort(ids)) != 0]
    ordinal = np.empty(rows, np.int64)  # each row's position among its user's rows: a fresh hash per row
    order = np.argsort(ids, kind="stable")
    starts = np.maximum.accumulate(np.where(first, np.arange(rows), 0))
    ordinal[order] = np.arange(rows) - starts
    pwd = ids * 1_000_003 + np.where(ids % 2 == 1, rng.integers(0, 2, rows), 2 + ordinal)
    return {"R": pa.table({"id": ids, "pwd": pwd})}


def credit_tables(rows: int, rng) -> dict[str, pa.Table]:
    """Scores of each person around a base: in 2019 odd people's agencies differ widely (spread near 200),
    even people's within 90; other years' scores differ widely for everyone (so the year's filter matters)."""
    ids = people(rows, rng)
    year = rng.integers(2018, 2021, rows)
    base = rng.integers(450, 701, ids.max() + 1)
    width = np.where((year == 2019) & (ids % 2 == 0), 45, 100)
    return {"R": pa.table({"id": ids, "cs_year": year,
                           "cs": np.clip(base[ids] + rng.integers(-width, width + 1), 300, 850)})}


TPCH_ROWS_PER_SF = {"orders": 1_500_000, "lineitem": 6_001_215, "customer": 150_000}


@functools.cache
def tpch_generated(sf: float) -> dict[str, pa.Table]:
    """orders, lineitem and customer from `tpchgen-cli` at `sf`, generated once per process."""
    with tempfile.TemporaryDirectory(prefix="sqlsecure-secrecy-") as directory:
        subprocess.run([tpchgen(), "parquet", "-s", f"{sf:.6f}", "-o", directory, "--tables",
                        ",".join(TPCH_ROWS_PER_SF)], check=True, capture_output=True)
        tables = {name: pq.read_table(Path(directory) / f"{name}.parquet") for name in TPCH_ROWS_PER_SF}
    return {name: t.cast(pa.schema([f.with_type(pa.string()) if pa.types.is_string_view(f.type) else f
                                    for f in t.schema])) for name, t in tables.items()}


def tpch_tables(rows: int, main: str, names: tuple[str, ...]) -> dict[str, pa.Table]:
    """TPC-H tables at the scale factor that gives `main` `rows` rows, cut to that count (tpchgen's
    smallest reliable scale factor is 0.001); the other tables cut in proportion."""
    scale = rows / TPCH_ROWS_PER_SF[main]
    tables = tpch_generated(max(round(scale, 6), 0.001))
    return {name: tables[name].slice(0, rows if name == main else max(int(TPCH_ROWS_PER_SF[name] * scale), 1))
            for name in names}


def one_table_per_name(sql: str) -> str:
    """A query of bench/tpch.py over the views: each `party.table` read as the bare `table`."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    for table in tree.find_all(exp.Table):
        table.set("db", None)
    return tree.sql("duckdb", pretty=True)


HOSPITALS = ("h1", "h2", "h3")
WORKLOADS = {
    "comorbidity": Workload(
        2_000_000, 2519, HOSPITALS, comorbidity_tables,
        {"PLAINTEXT_AFTER_JOIN": ("*.diagnosis.pid", "*.cdiff_cohort.pid"),
         "PLAINTEXT_AFTER_GROUP_BY": ("*.diagnosis.diag",)},
        "SELECT diag, COUNT(*) AS cnt\nFROM diagnosis\nWHERE pid IN (SELECT * FROM cdiff_cohort)\n"
        "GROUP BY diag\nORDER BY cnt DESC\nLIMIT 10", 2),
    "rcdiff": Workload(
        2_000_000, 4259, HOSPITALS, rcdiff_tables,
        # The result is a list of pids, which Secrecy reveals: pid is PLAINTEXT (it is also the window's
        # PARTITION BY key and the self-join's key); visit times only compared, row numbers too.
        {"PLAINTEXT": ("*.diagnosis.pid",),
         "PLAINTEXT_AFTER_COMPARE": ("*.diagnosis.diag", "*.diagnosis.visit_time")},
        f"WITH rcd AS (\n  SELECT pid, visit_time, ROW_NUMBER() OVER (PARTITION BY pid ORDER BY visit_time) AS row_no\n"
        f"  FROM diagnosis\n  WHERE diag = {CDIFF})\nSELECT DISTINCT r1.pid\nFROM rcd r1 JOIN rcd r2 ON r1.pid = r2.pid\n"
        "WHERE r2.visit_time - r1.visit_time >= 15\n  AND r2.visit_time - r1.visit_time <= 56\n"
        "  AND r2.row_no = r1.row_no + 1", 4),
    "aspirin": Workload(
        32_000, 4936, HOSPITALS, aspirin_tables,
        # Only the count is revealed: pid is compared (the join's equality) and counted, never joined by a
        # PSI that would show the intersection (PLAINTEXT_AFTER_JOIN), so PLAINTEXT_AFTER_COMPARE: the join
        # stays oblivious, and COUNT(DISTINCT pid) needs _COMPARE or _AGGREGATE (stricter than SCQL).
        {"PLAINTEXT_AFTER_COMPARE": ("*.diagnosis.pid", "*.medication.pid", "*.diagnosis.diag", "*.medication.med",
                                     "*.diagnosis.visit_time", "*.medication.visit_time")},
        f"SELECT COUNT(DISTINCT d.pid)\nFROM diagnosis AS d JOIN medication AS m ON d.pid = m.pid\n"
        f"WHERE d.diag = {HEART_DISEASE}\n  AND m.med = {ASPIRIN}\n  AND d.visit_time <= m.visit_time", 6),
    "pwd": Workload(
        2_000_000, 1252, ("site1", "site2", "site3"), password_tables,
        {"PLAINTEXT_AFTER_GROUP_BY": ("*.r.id", "*.r.pwd")},
        "SELECT DISTINCT ID\nFROM R\nGROUP BY ID, PWD\nHAVING COUNT(*) > 1", 2),
    "credit": Workload(
        2_000_000, 1384, ("agency1", "agency2", "agency3"), credit_tables,
        {"PLAINTEXT_AFTER_GROUP_BY": ("*.r.id",), "PLAINTEXT_AFTER_AGGREGATE": ("*.r.cs",),
         "PLAINTEXT_AFTER_COMPARE": ("*.r.cs_year",)},
        "SELECT S.ID\nFROM (SELECT ID, MIN(CS) AS cs1, MAX(CS) AS cs2\n      FROM R\n      WHERE R.cs_year = 2019\n"
        "      GROUP BY ID) AS S\nWHERE S.cs2 - S.cs1 > 100", 3),
    "q4": Workload(
        32_000, 12_442, ("shop1", "shop2", "shop3"),
        lambda rows, rng: tpch_tables(rows, "orders", ("orders", "lineitem")),
        {"PLAINTEXT_AFTER_JOIN": ("*.orders.o_orderkey", "*.lineitem.l_orderkey"),
         "PLAINTEXT_AFTER_GROUP_BY": ("*.orders.o_orderpriority",),
         "PLAINTEXT_AFTER_COMPARE": ("*.orders.o_orderdate", "*.lineitem.l_commitdate", "*.lineitem.l_receiptdate")},
        one_table_per_name(tpch.QUERIES["q4"]), 3),
    "q6": Workload(
        8_000_000, 6.43, ("shop1", "shop2", "shop3"),
        lambda rows, rng: tpch_tables(rows, "lineitem", ("lineitem",)),
        {"PLAINTEXT_AFTER_AGGREGATE": ("*.lineitem.l_extendedprice", "*.lineitem.l_discount"),
         "PLAINTEXT_AFTER_COMPARE": ("*.lineitem.l_shipdate", "*.lineitem.l_quantity")},
        one_table_per_name(tpch.QUERIES["q6"]), 4),
    "q13": Workload(
        32_000, 23_614, ("shop1", "shop2", "shop3"),
        lambda rows, rng: tpch_tables(rows, "orders", ("customer", "orders")),
        # Only the histogram is revealed, but c_custkey is both joined and grouped (not output): counting
        # a key's groups needs PLAINTEXT_AFTER_GROUP_BY here (stricter than SCQL, docs/federation.md), and
        # joining it PLAINTEXT_AFTER_JOIN; one grant allows both, PLAINTEXT. (bench/tpch.py's Q13 needs no
        # such grant: there the orders are the issuer's own and c_custkey a declared unique key.)
        {"PLAINTEXT": ("*.customer.c_custkey",), "PLAINTEXT_AFTER_JOIN": ("*.orders.o_custkey",),
         "PLAINTEXT_AFTER_COMPARE": ("*.orders.o_comment",), "PLAINTEXT_AFTER_AGGREGATE": ("*.orders.o_orderkey",)},
        one_table_per_name(tpch.QUERIES["q13"]), 3),
}


def too_large(workload: Workload, rows: int, max_rows: int | None) -> str | None:
    """Why `rows` rows cannot run here, or None."""
    if max_rows is not None and rows > max_rows:
        return f"{rows:,} rows > --max-rows {max_rows:,}"
    need = rows * workload.columns * SPU_MEMORY_ROW
    if need > SPU_MEMORY_SHARE * memory_bytes():
        return (f"the SPU's shares of {rows:,} rows x {workload.columns} columns need ≈ {need / 2**30:.1f} GiB "
                f"(planner/cost.py), more than a quarter of the {memory_bytes() / 2**30:.0f} GiB it assumes per compute party")
    return None


def write_federation(directory: Path, workload: Workload, rows: int, min_group_size: int | None) -> Path:
    """The tables split row by row across the three parties (a seeded random split), one view per table.
    A view is named as the query spells the table (Secrecy's `R`), each party's part in lower case
    (view names are matched case-sensitively, party tables after folding to lower case)."""
    rng = np.random.default_rng(SEED)
    lines, views = ["[federation]", 'name = "secrecy"'], []
    if min_group_size is not None:
        lines.append(f"min_group_size = {min_group_size}")
    tables = workload.tables(rows, rng)
    owner = {name: rng.integers(0, 3, table.num_rows) for name, table in tables.items()}
    for i, party in enumerate(workload.parties):
        lines.append(f"\n[parties.{party}.tables]")
        for name, table in tables.items():
            pq.write_table(table.filter(pc.equal(pa.array(owner[name]), i)), directory / f"{party}.{name}.parquet")
            lines.append(f'{name.lower()} = "{party}.{name}.parquet"')
    for name, table in tables.items():
        columns = ", ".join(table.column_names)
        views.append(f'{name} = "' + " UNION ALL ".join(f"SELECT {columns} FROM {p}.{name.lower()}"
                                                        for p in workload.parties) + '"')
    grants = grants_toml(*((grantee, columns, constraint) for grantee in workload.parties
                           for constraint, columns in workload.grants.items()))
    path = directory / "federation.toml"
    path.write_text("\n".join(lines) + "\n\n[views]\n" + "\n".join(views) + "\n\n" + grants, encoding="utf-8")
    return path


def run(workload: Workload, rows: int, min_group_size: int | None) -> Measured:
    """The workload's query on the engine and in plain DuckDB (the views written out for DuckDB)."""
    with tempfile.TemporaryDirectory(prefix="sqlsecure-secrecy-") as directory:
        federation = write_federation(Path(directory), workload, rows, min_group_size)
        with Engine(federation) as engine:
            tree = sqlglot.parse_one(workload.sql, read="duckdb")
            plain = expand_views(tree, engine.config.views).sql("duckdb")
            return measure(engine, Oracle(engine), workload.sql, workload.parties[0], plain)


def target_cell(measured: Measured, workload: Workload, rows: int) -> str:
    """The issue's target: at most 1/10 of Secrecy's time, judged only at Secrecy's row count."""
    if measured.engine_s is None:
        return "-"
    if rows != workload.rows:
        return f"<= {workload.seconds / 10:g} s at {workload.rows:,} rows: not judged here"
    return "met" if measured.engine_s <= workload.seconds / 10 else "NOT met"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies Secrecy's published row counts")
    parser.add_argument("--rows", type=int, help="run every workload at this row count instead")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--max-rows", type=int, help="print larger rows as too large instead of running them")
    parser.add_argument("--min-group-size", type=int, help="the federation's min_group_size (default: its default)")
    args = parser.parse_args()
    names = chosen(parser, args.workloads, WORKLOADS)
    print(f"# Secrecy's workloads, 3 parties each; python {platform.python_version()}, duckdb {duckdb.__version__}, "
          f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}")
    table, failed = [], False
    for name in names:
        workload = WORKLOADS[name]
        rows = args.rows or max(int(workload.rows * args.scale), 1)
        reason = too_large(workload, rows, args.max_rows)
        measured = Measured(check=f"too large to run here: {reason}") if reason else run(workload, rows,
                                                                                        args.min_group_size)
        failed |= measured.failed
        table.append([name, f"{workload.rows:,}", f"{workload.seconds:,g}", f"{rows:,}", *measured.cells()[:5],
                      target_cell(measured, workload, rows), measured.check])
        print(f"{name}: done", file=sys.stderr, flush=True)
    print_table(["workload", "Secrecy rows", "Secrecy s", "rows here", "engine s", "cpu s", "duckdb s", "ratio",
                 "rows out", "target (<= 1/10 Secrecy)", "check"], table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
