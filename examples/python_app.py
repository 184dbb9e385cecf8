"""A Python app over the DB-API driver: the bank asks how its customers spend at the shop.

Run: python examples/python_app.py [DIR]   (writes the demo federation into DIR; without it, a temporary folder removed afterwards)
"""

import sys
from pathlib import Path

import sqlsecure
from sqlsecure.demo import in_directory, write_demo


def main(directory: Path) -> None:
    federation = write_demo(directory)
    with sqlsecure.connect(federation, party="bank") as con:
        cur = con.execute(
            "SELECT o.category, COUNT(*) AS orders, SUM(o.amount) AS revenue "
            "FROM bank.customers c JOIN shop.orders o ON c.customer_id = o.customer_id "
            "GROUP BY o.category ORDER BY revenue DESC"
        )
        print(" | ".join(d[0] for d in cur.description))
        for category, orders, revenue in cur.fetchall():
            print(f"{category} | {orders} | {revenue}")
        stats = cur.last_stats
        print(f"({stats.total_messages()} messages, {stats.total_bytes():,} bytes crossed between parties)")


if __name__ == "__main__":
    in_directory(main, sys.argv[1] if len(sys.argv) > 1 else None, "sqlsecure-app-")
