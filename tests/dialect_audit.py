"""What the dialect audits (tests/test_postgres_dialect_audit.py, tests/test_mysql_dialect_audit.py) share:
the three ways an expression runs (at one party, across bank and corp, in the enclave), the engines that run
them, the device a plan chose, and the comparison of rows with the real engine's."""

from __future__ import annotations

import contextlib
import datetime
import decimal
import math

import pyarrow as pa

from sqlsecure.engine import Engine
from tests.conftest import ABS_TOL, REL_TOL
from tests.test_dialects import normal
from tests.test_enclave_queries import enclave_section

PARTIES = ("bank", "corp")
LOCAL, CROSS, ENCLAVE = "party", "cross", "enclave"
SPU, PARTY, TEE = "SPU(", "party", "TEEU("


def rotated(rows: list[tuple], party: str) -> list[tuple]:
    """bank's rows, or corp's: the same values two rows on (ids stay), so a.x and b.x differ."""
    if party == "bank":
        return rows
    return [(r[0], *o[1:]) for r, o in zip(rows, rows[2:] + rows[:2])]


def arrow_table(rows: list[tuple], names: list[str], types: list[pa.DataType]) -> pa.Table:
    columns = list(zip(*rows))
    return pa.table({n: pa.array([decimal.Decimal(v) if v is not None and pa.types.is_decimal(t) else v for v in c], t)
                     for n, c, t in zip(names, columns, types)})


def sql_values(rows: list[tuple]) -> str:
    """The rows as an INSERT's VALUES list."""
    def literal(v):
        return "NULL" if v is None else f"'{v}'" if isinstance(v, (str, datetime.date)) else str(v)
    return ", ".join("(" + ", ".join(literal(v) for v in row) + ")" for row in rows)


def query(expressions: list[str], variant: str, aggregate: bool = False, key: str | None = None) -> str:
    """The SELECT of `expressions` at one party (`{b}` is bank's own table) or across bank and corp; an
    aggregate's one row, or its groups by `key` (over `{a}`)."""
    b = "a" if variant == LOCAL else "b"
    outputs = ", ".join(f"{e.format(a='a', b=b)} AS v{n}" for n, e in enumerate(expressions))
    source = "FROM bank.t a" if variant == LOCAL else "FROM bank.t a JOIN corp.t b ON a.id = b.id"
    if key is not None:
        return f"SELECT {key.format(a='a')} AS g, {outputs} {source} GROUP BY g"
    return f"SELECT {outputs} {source}" if aggregate else f"SELECT a.id, {outputs} {source}"


def audit_federation(directory, federation_writer, plaintext_grants, tables: dict, dialect: str,
                     extra: str = "") -> Engine:
    """One federation of the audit's parties over `tables`, every column plain to every party, no threshold."""
    return Engine(federation_writer(directory, tables, plaintext_grants(PARTIES) + extra, parties=PARTIES,
                                    min_group_size=0, dialect=dialect), timeout=120)


@contextlib.contextmanager
def audit_engines(tmp_path_factory, federation_writer, plaintext_grants, tables: dict, dialect: str):
    """{variant: engine}: one federation for the party and cross-party variants, one whose enclave runs
    every cross-party query (`placement = "always"`)."""
    plain = audit_federation(tmp_path_factory.mktemp(f"{dialect}-audit"), federation_writer, plaintext_grants,
                             tables, dialect)
    directory = tmp_path_factory.mktemp(f"{dialect}-audit-enclave")
    always = enclave_section(directory).replace("[enclave]\n", '[enclave]\nplacement = "always"\n')
    enclave = audit_federation(directory, federation_writer, plaintext_grants, tables, dialect, always)
    with plain, enclave:
        yield {LOCAL: plain, CROSS: plain, ENCLAVE: enclave}


def sorted_rows(rows) -> list[tuple]:
    """Rows (an Arrow table's, or tuples) in a form both engines share (`normal`: numbers as floats, dates
    and times as ISO text)."""
    if isinstance(rows, pa.Table):
        rows = [tuple(row.values()) for row in rows.to_pylist()]
    return sorted((tuple(normal(v) for v in row) for row in rows), key=repr)


# POWER(x, y) of a secret exponent on the SPU: relative 2^-14 (1 + |y| 2^-8) (docs/architecture.md), |y| <= 4 here
POWER_REL_TOL = 2 ** -14 * (1 + 4 * 2 ** -8)


def close(got, want, approximate: bool, rel_tol: float = REL_TOL) -> bool:
    if isinstance(got, float) and isinstance(want, float):
        if approximate:
            return math.isclose(got, want, rel_tol=rel_tol, abs_tol=ABS_TOL)
        return math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-12)
    return got == want


def same_rows(got: list[tuple], want: list[tuple], approximate: bool, rel_tol: float = REL_TOL) -> bool:
    """Equal rows; floats to 1e-12, or where `approximate` (the SPU's fixed point) within `rel_tol` (the
    oracle's REL_TOL, or a function's stated accuracy)."""
    return len(got) == len(want) and all(
        len(g) == len(w) and all(close(a, b, approximate, rel_tol) for a, b in zip(g, w)) for g, w in zip(got, want))


def device_of(engine: Engine, sql: str) -> str:
    plan = engine.explain(sql, "bank")
    return SPU if SPU in plan else TEE if TEE in plan else PARTY
