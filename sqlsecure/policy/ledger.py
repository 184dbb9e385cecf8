"""The privacy budget ledger: per-issuer spending of ε (and δ), durable across crashes and restarts.

SQLite, one row per charge. `charge` runs in one `BEGIN IMMEDIATE` transaction (writers are
serialised across threads and processes), refuses if the issuer's budget would be overspent, and
commits with `synchronous = FULL` — the charge is on disk before the caller may release anything.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from sqlsecure.errors import OperationalError, PolicyViolation

SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    issuer TEXT NOT NULL,
    epsilon REAL NOT NULL,
    delta REAL NOT NULL,
    query TEXT NOT NULL,
    at REAL NOT NULL
)
"""


@dataclass(frozen=True)
class Spent:
    issuer: str
    epsilon: float
    delta: float
    queries: int


class Ledger:
    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            with self._connect() as con:
                con.execute(SCHEMA)
        except sqlite3.Error as exc:
            raise OperationalError(f"cannot open the privacy ledger {self.path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        con.execute("PRAGMA synchronous = FULL")
        return con

    def spent(self, issuer: str) -> Spent:
        con = self._connect()
        try:
            eps, delta, n = con.execute(
                "SELECT COALESCE(SUM(epsilon), 0), COALESCE(SUM(delta), 0), COUNT(*) FROM charges WHERE issuer = ?",
                (issuer,)).fetchone()
        finally:
            con.close()
        return Spent(issuer, eps, delta, n)

    def charge(self, issuer: str, epsilon: float, delta: float, budget_epsilon: float, budget_delta: float,
               query: str) -> Spent:
        """Record a charge, or raise PolicyViolation if it would exceed the budget (nothing recorded)."""
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            eps, dlt = con.execute(
                "SELECT COALESCE(SUM(epsilon), 0), COALESCE(SUM(delta), 0) FROM charges WHERE issuer = ?",
                (issuer,)).fetchone()
            if eps + epsilon > budget_epsilon + 1e-12 or dlt + delta > budget_delta + 1e-15:
                con.execute("ROLLBACK")
                raise PolicyViolation(
                    f"privacy budget of {issuer!r} exhausted: spent ε={eps:g} of {budget_epsilon:g}"
                    f" (δ={dlt:g} of {budget_delta:g}); this query needs ε={epsilon:g}, δ={delta:g}"
                )
            con.execute("INSERT INTO charges (issuer, epsilon, delta, query, at) VALUES (?, ?, ?, ?, ?)",
                        (issuer, epsilon, delta, query, time.time()))
            con.execute("COMMIT")
            return Spent(issuer, eps + epsilon, dlt + delta, -1)
        except sqlite3.Error as exc:
            raise OperationalError(f"privacy ledger {self.path}: {exc}") from exc
        finally:
            con.close()

    def history(self, issuer: str | None = None, limit: int = 20) -> list[tuple]:
        con = self._connect()
        try:
            sql = "SELECT issuer, epsilon, delta, query, at FROM charges"
            args: tuple = ()
            if issuer:
                sql += " WHERE issuer = ?"
                args = (issuer,)
            return con.execute(sql + " ORDER BY id DESC LIMIT ?", args + (limit,)).fetchall()
        finally:
            con.close()
