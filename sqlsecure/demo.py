"""The demo federation: a bank, a shop and an insurer with generated data, grants, and a few queries."""

from __future__ import annotations

from pathlib import Path

import duckdb

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
    ("Three parties: orders by bank customers who have claimed on their insurance",
     "SELECT COUNT(*) AS orders, SUM(o.amount) AS spent FROM bank.customers c "
     "JOIN shop.orders o ON c.customer_id = o.customer_id "
     "JOIN insurer.policies p ON p.customer_id = c.customer_id WHERE p.claims > 0"),
    ("Refused: single orders of another party are not the bank's to see",
     "SELECT c.name, o.amount FROM bank.customers c JOIN shop.orders o ON c.customer_id = o.customer_id"),
]


def write_demo(directory: Path, customers: int = 2000, seed: int = 7) -> Path:
    """Generate the three parties' data and the federation file; return the file's path."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data" / "shop").mkdir(parents=True, exist_ok=True)
    (directory / "data" / "insurer").mkdir(parents=True, exist_ok=True)
    bank_db = directory / "bank.duckdb"
    if bank_db.exists():
        bank_db.unlink()
    con = duckdb.connect(str(bank_db))
    con.execute(f"SELECT setseed({seed / 100})")
    con.execute(f"""
        CREATE TABLE customers AS
        SELECT i AS customer_id, 'customer_' || i AS name,
               (18 + (hash(i) % 60)::INTEGER) AS age,
               round(20000 + random() * 80000, 2)::DECIMAL(12, 2) AS income,
               ['north', 'south', 'east', 'west'][1 + (i % 4)] AS region
        FROM range(1, {customers + 1}) t(i)""")
    con.close()
    con = duckdb.connect()
    con.execute(f"SELECT setseed({seed / 100})")
    orders = directory / "data" / "shop" / "orders.csv"
    con.execute(f"""
        COPY (SELECT i AS order_id, (1 + (hash(i * 7) % {int(customers * 1.5)})::BIGINT) AS customer_id,
                     round(5 + random() * 200, 2)::DECIMAL(10, 2) AS amount,
                     ['books', 'garden', 'games', 'kitchen', 'sports'][1 + (hash(i) % 5)::BIGINT] AS category
              FROM range(1, {customers * 3 + 1}) t(i)) TO '{orders}' (HEADER)""")
    policies = directory / "data" / "insurer" / "policies.parquet"
    con.execute(f"""
        COPY (SELECT (i * 2)::INTEGER AS customer_id, round(100 + random() * 900, 2)::DOUBLE AS premium,
                     ((hash(i) % 4)::INTEGER) AS claims
              FROM range(1, {customers} + 1) t(i)) TO '{policies}' (FORMAT parquet)""")
    con.close()
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
