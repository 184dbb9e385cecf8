"""A differentially private query: the bank gets noisy aggregates of the shop's data, and each
answer is charged to its privacy budget, durably, before it is released.

Run: python examples/dp_query.py [DIR]
"""

import sys
from pathlib import Path

import sqlsecure
from sqlsecure.demo import in_directory, write_demo

PRIVACY = """
[privacy.bank]
epsilon = 3.0
query_epsilon = 1.0

[rules."bank.customers"]
identity_column = "customer_id"
max_rows_per_identity = 1

[rules."shop.orders"]
identity_column = "customer_id"
max_rows_per_identity = 5
bounds = { amount = [0, 300] }
"""


def main(directory: Path) -> None:
    federation = write_demo(directory)
    federation.write_text(federation.read_text() + PRIVACY)
    sql = ("SELECT o.category, COUNT(*) AS orders, SUM(o.amount) AS revenue FROM bank.customers c "
           "JOIN shop.orders o ON c.customer_id = o.customer_id GROUP BY o.category ORDER BY o.category")
    with sqlsecure.connect(federation, party="bank") as con:
        for line in con.explain(sql).splitlines():
            if "privacy" in line or "noise" in line or "ε" in line:
                print(line)
        for attempt in range(1, 6):
            try:
                rows = con.execute(sql).fetchall()
            except sqlsecure.PolicyViolation as exc:
                print(f"query {attempt}: refused: {exc}")
                continue
            print(f"query {attempt}: " + ", ".join(f"{c} {n} orders, {r:.0f} revenue" for c, n, r in rows))


if __name__ == "__main__":
    in_directory(main, sys.argv[1] if len(sys.argv) > 1 else None, "sqlsecure-dp-")
