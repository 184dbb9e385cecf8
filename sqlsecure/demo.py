"""The demo federation: a bank, a shop and an insurer with generated data, grants, and a few queries."""

from __future__ import annotations

import decimal
import tempfile
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from sqlsecure.engine import Engine
from sqlsecure.errors import Error
from sqlsecure.formatting import as_table

FEDERATION = """\
[federation]
name = "retail"
dialect = "duckdb"
min_group_size = 4

[parties.bank]
database = "bank.duckdb"

[parties.shop]
[parties.shop.tables]
orders = "data/shop/orders.csv"

[parties.insurer]
[parties.insurer.tables]
policies = "data/insurer/policies.parquet"

# Each party may learn which of its customer ids the others also hold (the PSI intersection).
[[grants]]
party = "shop"
columns = ["bank.customers.customer_id", "insurer.policies.customer_id"]
constraint = "PLAINTEXT_AFTER_JOIN"

[[grants]]
party = "insurer"
columns = ["bank.customers.customer_id", "shop.orders.customer_id"]
constraint = "PLAINTEXT_AFTER_JOIN"

[[grants]]
party = "bank"
columns = ["shop.orders.customer_id", "insurer.policies.customer_id"]
constraint = "PLAINTEXT_AFTER_JOIN"

# The bank may see order totals per category, and sums of premiums, never single orders.
[[grants]]
party = "bank"
columns = ["shop.orders.category"]
constraint = "PLAINTEXT_AFTER_GROUP_BY"

[[grants]]
party = "bank"
columns = ["shop.orders.amount", "insurer.policies.premium"]
constraint = "PLAINTEXT_AFTER_AGGREGATE"

# The bank's filters on age and the insurer's on claims may shape which rows join.
[[grants]]
party = "shop"
columns = ["bank.customers.age"]
constraint = "PLAINTEXT_AFTER_COMPARE"

[[grants]]
party = "insurer"
columns = ["bank.customers.age"]
constraint = "PLAINTEXT_AFTER_COMPARE"

[[grants]]
party = "bank"
columns = ["insurer.policies.claims"]
constraint = "PLAINTEXT_AFTER_COMPARE"

[[grants]]
party = "shop"
columns = ["insurer.policies.claims"]
constraint = "PLAINTEXT_AFTER_COMPARE"
"""

QUERIES = [
    ("The bank's own customers by region (pushed down whole to the bank)",
     "SELECT region, COUNT(*) AS customers, AVG(income) AS avg_income FROM bank.customers "
     "GROUP BY region ORDER BY region"),
    ("Revenue per category from the bank's customers aged 30+ (PSI join; the shop aggregates)",
     "SELECT o.category, COUNT(*) AS orders, SUM(o.amount) AS revenue "
     "FROM bank.customers c JOIN shop.orders o ON c.customer_id = o.customer_id "
     "WHERE c.age >= 30 GROUP BY o.category ORDER BY revenue DESC"),
    ("Insured customers of the bank: count, their average income, their premiums",
     "SELECT COUNT(*) AS insured, AVG(c.income) AS avg_income, SUM(p.premium) AS premiums "
     "FROM bank.customers c JOIN insurer.policies p ON c.customer_id = p.customer_id"),
    ("Spend per region: keys at the bank, amounts at the shop (HE group sums or the SPU, by the cost model: "
     "the bank never sees an amount)",
     "SELECT c.region, COUNT(*) AS orders, SUM(o.amount) AS spent, AVG(o.amount) AS average "
     "FROM bank.customers c JOIN shop.orders o ON c.customer_id = o.customer_id GROUP BY c.region ORDER BY c.region"),
    ("Claims out of proportion to age: a predicate over two parties' columns (SPU: secret shares)",
     "SELECT c.region, COUNT(*) AS customers FROM bank.customers c "
     "JOIN insurer.policies p ON c.customer_id = p.customer_id WHERE p.claims * 20 > c.age "
     "GROUP BY c.region ORDER BY c.region"),
    ("Three parties: orders by bank customers who have claimed on their insurance",
     "SELECT COUNT(*) AS orders, SUM(o.amount) AS spent FROM bank.customers c "
     "JOIN shop.orders o ON c.customer_id = o.customer_id "
     "JOIN insurer.policies p ON p.customer_id = c.customer_id WHERE p.claims > 0"),
    ("Refused: single orders of another party are not the bank's to see",
     "SELECT c.name, o.amount FROM bank.customers c JOIN shop.orders o ON c.customer_id = o.customer_id"),
]


def write_demo(directory: Path, customers: int = 2000, seed: int = 7) -> Path:
    """Generate the three parties' data (deterministic for a seed) and the federation file."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data" / "shop").mkdir(parents=True, exist_ok=True)
    (directory / "data" / "insurer").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = np.arange(1, customers + 1)
    bank = pa.table({
        "customer_id": pa.array(ids, pa.int64()),
        "name": pa.array([f"customer_{i}" for i in ids]),
        "age": pa.array(rng.integers(18, 78, customers), pa.int32()),
        "income": pa.array([decimal.Decimal(int(v)) / 100 for v in rng.integers(2_000_000, 10_000_000, customers)],
                           pa.decimal128(12, 2)),
        "region": pa.array(np.array(["north", "south", "east", "west"])[ids % 4]),
    })
    bank_db = directory / "bank.duckdb"
    if bank_db.exists():
        bank_db.unlink()
    con = duckdb.connect(str(bank_db))
    con.register("bank_rows", bank)
    con.execute("CREATE TABLE customers AS SELECT * FROM bank_rows")
    con.close()
    n_orders = customers * 3
    orders = pa.table({
        "order_id": pa.array(np.arange(1, n_orders + 1), pa.int64()),
        "customer_id": pa.array(rng.integers(1, int(customers * 1.5), n_orders), pa.int64()),
        "amount": pa.array([decimal.Decimal(int(v)) / 100 for v in rng.integers(500, 20_500, n_orders)],
                           pa.decimal128(10, 2)),
        "category": pa.array(np.array(["books", "garden", "games", "kitchen", "sports"])[rng.integers(0, 5, n_orders)]),
    })
    pacsv.write_csv(orders, directory / "data" / "shop" / "orders.csv")
    policies = pa.table({
        "customer_id": pa.array(ids * 2, pa.int32()),
        "premium": pa.array(np.round(rng.uniform(100, 1000, customers), 2)),
        "claims": pa.array(rng.integers(0, 4, customers), pa.int32()),
    })
    pq.write_table(policies, directory / "data" / "insurer" / "policies.parquet")
    path = directory / "federation.toml"
    path.write_text(FEDERATION, encoding="utf-8")
    return path


def run_demo(path: Path, echo=print, issuer: str = "bank") -> None:
    echo(f"demo federation: {path}\n")
    with Engine(path) as engine:
        for title, sql in QUERIES:
            echo(f"== {title}\n{sql}\n")
            try:
                result = engine.execute(sql, issuer)
            except Error as exc:
                echo(f"refused: {type(exc).__name__}: {exc}\n")
                continue
            echo(result.plan.explain() + "\n")
            echo(as_table(result.table))
            stats = result.stats
            echo(f"channel: {stats.total_messages()} messages, {stats.total_bytes():,} bytes between parties\n")


def in_directory(work: Callable[[Path], object], directory: str | Path | None, prefix: str):
    """Run `work(directory)`; without a directory, in a temporary one that is removed afterwards, so that
    demos and examples leave nothing behind in the temp folder."""
    if directory is not None:
        return work(Path(directory))
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        return work(Path(scratch))
