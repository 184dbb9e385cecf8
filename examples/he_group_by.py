"""GROUP BY with the keys at one party and the values at another, through Paillier HE group sums:
the bank groups by its own regions, the shop's amounts stay encrypted, only the sums are opened.
The federation forces HE with `group_sums = "he"` (by default the planner's cost model picks HE or
the SPU; in process the SPU is cheaper).

Run: python examples/he_group_by.py [DIR]
"""

import sys
from pathlib import Path

import sqlsecure
from sqlsecure.demo import in_directory, write_demo


def main(directory: Path) -> None:
    federation = write_demo(directory)
    text = federation.read_text().replace("min_group_size = 4", 'min_group_size = 4\ngroup_sums = "he"', 1)
    federation.write_text(text)
    sql = ("SELECT c.region, COUNT(*) AS orders, SUM(o.amount) AS spent, AVG(o.amount) AS average "
           "FROM bank.customers c JOIN shop.orders o ON c.customer_id = o.customer_id "
           "GROUP BY c.region ORDER BY c.region")
    with sqlsecure.connect(federation, party="bank") as con:
        plan = con.explain(sql)
        print("\n".join(line for line in plan.splitlines() if "HEU" in line or "Paillier" in line or "learns" in line
                        or "nothing of" in line or "number of groups" in line))
        cur = con.execute(sql)
        print(" | ".join(d[0] for d in cur.description))
        for row in cur.fetchall():
            print(" | ".join(str(v) for v in row))


if __name__ == "__main__":
    in_directory(main, sys.argv[1] if len(sys.argv) > 1 else None, "sqlsecure-he-")
