"""The HEGroupBy operator: a plan step over the HE group-sum protocol (`executors/heu`).

Values enter the protocol as signed 64-bit integers: integers as they are, DECIMAL(p, s) exactly
as value·10^s, floating point as value·10^6 rounded (absolute error ≤ 5·10^-7 per value, and exact
for values with at most six decimals, as money read from CSV usually is). Each
value column travels with its validity column (1 where not NULL), so SUM skips NULLs, COUNT(x)
counts non-NULLs and AVG divides by them. The issuer receives the key party's shares of the kept
groups only (those that pass HAVING and the group threshold: at least `threshold` distinct rows of
the key party when it is protected, and at least `threshold` * m rows when the value party is,
m being the most joined rows any one value-party row appears in, which the value party tells the
key party) and the value party's shares
of every group — useless without the other half — and opens the sums.

Both sides use the process's HE worker processes (`heu.workers.HEWorkers`, one per core) for their
large batches: the value party's encryptions and decryptions, the key party's randomisers.
"""

from __future__ import annotations

import decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlsecure.errors import DataError, ProtocolError
from sqlsecure.executors.runtime.channel import Endpoint
from sqlsecure.executors.heu.group_sum import HEParams, he_group_sum_labels, he_group_sum_values
from sqlsecure.executors.heu.workers import HEWorkers

FLOAT_SCALE = 10**6


def to_integers(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, str]:
    """(values, validity, scale) where value = integer / scale; scale as text ("1", "1e2", "float")."""
    t = column.type
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    valid = column.is_valid().to_numpy(zero_copy_only=False).astype(np.int64)
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        filled = column.fill_null(False if pa.types.is_boolean(t) else 0)
        if pa.types.is_uint64(t) and len(filled) and pc.max(filled).as_py() >= 1 << 63:
            raise DataError("HE sums take values in the signed 64-bit range")
        return filled.to_numpy(zero_copy_only=False).astype(np.int64), valid, "1"
    if pa.types.is_decimal(t):
        return (np.array([int(v.scaleb(t.scale)) if v is not None else 0 for v in column.to_pylist()],
                         dtype=np.int64), valid, f"1e{t.scale}")
    if pa.types.is_floating(t):
        scaled = np.rint(column.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64) * FLOAT_SCALE)
        if len(scaled) and not (np.all(np.isfinite(scaled)) and -2.0**63 <= scaled.min() and scaled.max() < 2.0**63):
            raise DataError("HE sums of floating-point values need finite values below 9.2e12 in magnitude")
        return scaled.astype(np.int64), valid, "float"
    raise DataError(f"HE sums need numeric values, not {t}")


def from_integer(total: int, scale: str):
    if scale == "1":
        return total
    if scale.startswith("1e"):
        return decimal.Decimal(total).scaleb(-int(scale[2:]))
    return float(decimal.Decimal(total).scaleb(-6))  # "float": value * 10^6


def shares_table(codes: np.ndarray, shares: list[list[int]], extra: pa.Table | None = None) -> pa.Table:
    """Shares as exact decimal text (they exceed 64 bits), one row per group code."""
    data = {"__code": pa.array(codes, pa.int64())}
    data.update({f"s{c}": pa.array([str(v) for v in col], pa.string()) for c, col in enumerate(shares)})
    table = pa.table(data)
    if extra is not None:
        for name in extra.column_names:
            table = table.append_column(name, extra.column(name))
    return table


def key_party_side(endpoint: Endpoint, step, groups: pa.Table, codes: np.ndarray, tag: str,
                   workers: HEWorkers | None = None, multiplicity: int = 1) -> pa.Table | None:
    """Sum the value party's ciphertexts by group; send the kept groups' shares (or keep them).

    `workers` default to a handle on the process's HE worker processes (one per core)."""
    share = he_group_sum_labels(endpoint, step.value_party, tag, codes, groups.num_rows, HEParams(step.key_bits),
                                workers or HEWorkers())
    groups = groups.sort_by("__code")
    keep = np.array(groups.column("__keep").to_pylist(), dtype=bool) & (
        groups.column("__n").to_numpy(zero_copy_only=False) >= step.threshold) & (
        groups.column("__rows").to_numpy(zero_copy_only=False) >= step.threshold * multiplicity)
    kept_codes = np.flatnonzero(keep)
    table = shares_table(kept_codes, [[col[g] for g in kept_codes] for col in share.shares],
                         groups.filter(pa.array(keep)).select(list(step.local)))
    if step.issuer == endpoint.party:
        return table
    endpoint.send_table(step.issuer, f"{tag}/key-shares", table)
    return None


def row_multiplicity(piece: pa.Table, provenance: tuple[str, ...]) -> int:
    """The most joined rows any one base row (of the given provenance columns) appears in (>= 1)."""
    counts = [np.unique(piece.column(c).drop_null().to_numpy(), return_counts=True)[1] for c in provenance]
    return max([1, *(int(c.max()) for c in counts if len(c))])


def value_party_side(endpoint: Endpoint, step, values: pa.Table, tag: str,
                     workers: HEWorkers | None = None) -> pa.Table | None:
    """Encrypt the value columns (each with its validity) under a fresh key; send or keep B's shares.

    `workers` default to a handle on the process's HE worker processes (one per core)."""
    columns, scales = [], []
    for name in values.column_names:
        ints, valid, scale = to_integers(values.column(name))
        columns += [ints, valid]
        scales.append(scale)
    share = he_group_sum_values(endpoint, step.key_party, tag, columns, HEParams(step.key_bits),
                                workers or HEWorkers())
    groups = len(share.shares[0]) if share.shares else 0
    table = shares_table(np.arange(groups), share.shares).replace_schema_metadata({"scales": ",".join(scales)})
    if step.issuer == endpoint.party:
        return table
    endpoint.send_table(step.issuer, f"{tag}/value-shares", table)
    return None


def open_sums(step, key_table: pa.Table, value_table: pa.Table) -> pa.Table:
    """At the issuer: add the two halves of each kept group's sums; assemble the outputs."""
    scales = (value_table.schema.metadata or {}).get(b"scales", b"").decode().split(",")
    by_code = {code: i for i, code in enumerate(value_table.column("__code").to_pylist())}
    out = {name: key_table.column(name) for name in step.local}
    for name, kind, j in step.sums:
        results = []
        for row, code in enumerate(key_table.column("__code").to_pylist()):
            if code not in by_code:
                raise ProtocolError(f"{step.value_party} sent no shares for group {code}")
            i = by_code[code]
            total = int(key_table.column(f"s{2 * j}")[row].as_py()) + int(value_table.column(f"s{2 * j}")[i].as_py())
            count = int(key_table.column(f"s{2 * j + 1}")[row].as_py()) + int(
                value_table.column(f"s{2 * j + 1}")[i].as_py())
            if kind == "count":
                results.append(count)
            elif count == 0:
                results.append(None)
            elif kind == "sum":
                results.append(from_integer(total, scales[j]))
            else:
                results.append(float(from_integer(total, scales[j])) / count)
        exact = kind == "sum" and scales[j].startswith("1e")  # DuckDB's SUM of DECIMAL(p, s): DECIMAL(38, s)
        out[name] = pa.array(results, pa.decimal128(38, int(scales[j][2:])) if exact else None)
    return pa.table(out) if out else pa.table({"__empty": pa.array([], pa.int8())})
