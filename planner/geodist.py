"""SCQL's GEODIST(lon1, lat1, lon2, lat2[, radius]) for plaintext devices: a rewrite into standard SQL.

SCQL defines GEODIST as the great-circle distance between two points given in degrees, on a sphere of
`radius` (6371, the earth's mean radius in km, when absent): radius * acos(sin p1 sin p2 + cos p1 cos p2
cos(l1 - l2)). DuckDB has no such function, so the SQL a party (or the issuer, over revealed values)
runs in plaintext has every GEODIST rewritten into the same angle in Vincenty's atan2 form just before it runs
(`executors/runtime/party.py`) — equal to SCQL's acos form, but accurate for short distances too, and
what the SPU computes on shares (`executors/spu/functions.geodist_fixed`). The plan and EXPLAIN keep
GEODIST, so where it runs is decided as for any function.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from sqlsecure.executors.spu.ranges import EARTH_RADIUS, is_geodist

GREAT_CIRCLE = (
    "({r}) * ATAN2(SQRT(POWER(COS(({p2}) * PI() / 180) * SIN((({l1}) - ({l2})) * PI() / 180), 2) + "
    "POWER(COS(({p1}) * PI() / 180) * SIN(({p2}) * PI() / 180) - SIN(({p1}) * PI() / 180) * "
    "COS(({p2}) * PI() / 180) * COS((({l1}) - ({l2})) * PI() / 180), 2)), "
    "SIN(({p1}) * PI() / 180) * SIN(({p2}) * PI() / 180) + COS(({p1}) * PI() / 180) * "
    "COS(({p2}) * PI() / 180) * COS((({l1}) - ({l2})) * PI() / 180))"
)


def great_circle(arguments: list[exp.Expression]) -> exp.Expression:
    """GEODIST's arguments as one standard SQL expression (DuckDB's own SIN, COS, ATAN2, SQRT)."""
    l1, p1, l2, p2, *rest = (a.sql(dialect="duckdb") for a in arguments)
    radius = rest[0] if rest else str(EARTH_RADIUS)
    return sqlglot.parse_one(GREAT_CIRCLE.format(l1=l1, p1=p1, l2=l2, p2=p2, r=radius), read="duckdb")


def with_great_circle(sql: str) -> str:
    """DuckDB SQL a party or the issuer runs in plaintext, with every GEODIST rewritten into `great_circle`
    (SQL without GEODIST is returned unchanged, not re-generated)."""
    if "geodist" not in sql.lower():
        return sql
    tree = sqlglot.parse_one(sql, read="duckdb")
    for node in reversed(list(tree.find_all(exp.Anonymous))):  # innermost first: a GEODIST of a GEODIST
        if is_geodist(node) and len(node.expressions) in (4, 5):
            node.replace(exp.Paren(this=great_circle(node.expressions)))
    return tree.sql(dialect="duckdb")
