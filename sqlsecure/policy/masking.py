"""Masking of revealed columns, declared per column and recipient, applied by the owner before reveal.

Methods:
- `redact`: every value becomes '****' (NULL stays NULL);
- `partial`: keep the last `keep` characters, the rest become '*';
- `hash`: HMAC-SHA256 under the federation's masking key (hex, first 32 characters): equal values
  mask equally in every query, so joins and counts on the masked value stay consistent;
- `generalise`: dates and timestamps truncated to `date_part` (year, month, day), numbers bucketed
  to the lower multiple of `bucket`.
A masked column may be revealed only as is (as an output column or a group key); any other
expression over it is refused, since the mask could not apply to its result.
"""

from __future__ import annotations

import datetime
import fnmatch
import hashlib
import hmac
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from sqlsecure.policy.grants import ColumnRef

METHODS = ("redact", "partial", "hash", "generalise")
MASK_KEYS = {"party", "columns", "method", "keep", "date_part", "bucket"}
DATE_PARTS = ("year", "month", "day")


@dataclass(frozen=True)
class Mask:
    method: str
    keep: int = 4
    date_part: str = "month"
    bucket: float = 10.0

    def describe(self) -> str:
        extra = {"partial": f" (last {self.keep})", "generalise": f" ({self.date_part} / bucket {self.bucket:g})"}
        return self.method + extra.get(self.method, "")


@dataclass(frozen=True)
class MaskConfig:
    party: str
    columns: tuple[str, ...]
    mask: Mask
    where: str


def parse_masks(raw, problem, parties) -> list[MaskConfig]:
    out: list[MaskConfig] = []
    if not isinstance(raw, list):
        problem("masks", "must be an array of tables ([[masks]])")
        return out
    for i, body in enumerate(raw):
        key = f"masks[{i}]"
        if not isinstance(body, dict):
            problem(key, "must be a table")
            continue
        for k in sorted(set(body) - MASK_KEYS):
            problem(f"{key}.{k}", "unknown key")
        party, columns, method = body.get("party"), body.get("columns"), body.get("method")
        if not isinstance(party, str) or party not in parties:
            problem(f"{key}.party", f"unknown party {party!r}: the name of one party (a string)")
            continue
        if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
            problem(f"{key}.columns", "must be a non-empty list of \"party.table.column\" patterns")
            continue
        if method not in METHODS:
            problem(f"{key}.method", f"must be one of {', '.join(METHODS)}")
            continue
        keep, part, bucket = body.get("keep", 4), body.get("date_part", "month"), body.get("bucket", 10)
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 0:
            problem(f"{key}.keep", "must be a whole number >= 0")
            continue
        if part not in DATE_PARTS:
            problem(f"{key}.date_part", f"must be one of {', '.join(DATE_PARTS)}")
            continue
        if not isinstance(bucket, (int, float)) or isinstance(bucket, bool) or not 0 < bucket < float("inf"):
            problem(f"{key}.bucket", "must be a finite number > 0")
            continue
        out.append(MaskConfig(party, tuple(columns), Mask(method, keep, part, float(bucket)), key))
    return out


def resolve_masks(configs: list[MaskConfig], columns: list[ColumnRef], problem) -> dict[tuple[ColumnRef, str], Mask]:
    names = {str(c): c for c in columns}
    out: dict[tuple[ColumnRef, str], Mask] = {}
    for cfg in configs:
        for pattern in cfg.columns:
            matched = fnmatch.filter(names, pattern)
            if not matched:
                problem(f"{cfg.where}.columns", f"{pattern!r} matches no column")
            for name in matched:
                out[(names[name], cfg.party)] = cfg.mask
    return out


def load_key(path: Path) -> bytes:
    """The federation's masking key; created (random, 32 bytes, mode 600) on first use."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32).hex().encode())
    return bytes.fromhex(path.read_text().strip())


def apply_mask(array: pa.ChunkedArray | pa.Array, mask: Mask, key: bytes | None) -> pa.Array:
    values = array.to_pylist()
    if mask.method == "redact":
        return pa.array([None if v is None else "****" for v in values], pa.string())
    if mask.method == "partial":
        def part(v):
            s = str(v)
            shown = s[-mask.keep:] if mask.keep else ""
            return "*" * (len(s) - len(shown)) + shown
        return pa.array([None if v is None else part(v) for v in values], pa.string())
    if mask.method == "hash":
        if key is None:
            raise ValueError("hash masking needs the federation's masking key")
        return pa.array([None if v is None else hmac.new(key, repr(v).encode(), hashlib.sha256).hexdigest()[:32]
                         for v in values], pa.string())
    # generalise
    arrow = array if isinstance(array, pa.Array) else array.combine_chunks()
    if pa.types.is_temporal(arrow.type):
        return pc.floor_temporal(arrow, unit=mask.date_part)
    if pa.types.is_integer(arrow.type) or pa.types.is_floating(arrow.type) or pa.types.is_decimal(arrow.type):
        b = mask.bucket
        return pa.array([None if v is None else type(v)(math.floor(float(v) / b) * b) if not isinstance(v, int)
                         else int(math.floor(v / b) * b) for v in values])
    if isinstance(values[0] if values else None, datetime.date):
        return pc.floor_temporal(arrow, unit=mask.date_part)
    raise ValueError(f"generalise applies to dates and numbers, not {arrow.type}")
