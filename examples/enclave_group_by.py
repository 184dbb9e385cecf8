"""GROUP BY with keys from two parties, in an attested enclave (SIMULATION on this machine): the bank
and the shop verify the enclave's quote, seal their columns to it, and only the bank can open the
result. Without SGX the enclave is a local subprocess and its quote is signed by a test authority,
so this shows the protocol, not hardware protection — EXPLAIN and the result say so.

Run: python examples/enclave_group_by.py [DIR]
"""

import sys
from pathlib import Path

import sqlsecure
from sqlsecure.demo import in_directory, write_demo
from sqlsecure.executors.tee import create_authority, expected_measurement


def main(directory: Path) -> None:
    federation = write_demo(directory)
    create_authority(directory / "enclave-authority.key")
    federation.write_text(federation.read_text() + (
        f'\n[enclave]\nauthority = "enclave-authority.key"\nmeasurements = ["{expected_measurement().hex()}"]\n'))
    sql = ("SELECT c.region, o.category, COUNT(*) AS orders, SUM(o.amount) AS spent "
           "FROM bank.customers c JOIN shop.orders o ON c.customer_id = o.customer_id "
           "GROUP BY c.region, o.category ORDER BY spent DESC LIMIT 5")
    with sqlsecure.connect(federation, party="bank") as con:
        print("\n".join(line for line in con.explain(sql).splitlines()
                        if "TEEU" in line or "SIMULATION" in line or "enclave" in line))
        cur = con.execute(sql)
        print(" | ".join(d[0] for d in cur.description))
        for row in cur.fetchall():
            print(" | ".join(str(v) for v in row))


if __name__ == "__main__":
    in_directory(main, sys.argv[1] if len(sys.argv) > 1 else None, "sqlsecure-tee-")
