"""Render Arrow results for people (aligned table, vertical, markdown) and programs (CSV, JSON)."""

from __future__ import annotations

import csv
import datetime
import decimal
import io
import json

import pyarrow as pa


def _cell(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.12g}"
    return str(value)


def rows_of(table: pa.Table) -> list[tuple]:
    """The table's rows as tuples, by position: two columns of the same name are two values."""
    columns = [column.to_pylist() for column in table.columns]
    return list(zip(*columns)) if columns else [() for _ in range(table.num_rows)]


def _rows(table: pa.Table) -> list[list[str]]:
    return [[_cell(v) for v in row] for row in rows_of(table)]


def _count(n: int) -> str:
    return f"({n} row{'s' if n != 1 else ''})"


def affected(rowcount: int) -> str:
    """What a write reports: the rows it affected (DDL: just OK)."""
    return f"OK ({rowcount} row{'s' if rowcount != 1 else ''} affected)" if rowcount >= 0 else "OK"


def as_table(table: pa.Table, unicode: bool = False) -> str:
    """An aligned grid (ASCII by default, box-drawing characters with `unicode`)."""
    headers, rows = table.column_names, _rows(table)
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    h, v, cross = ("─", "│", "┼") if unicode else ("-", "|", "+")

    def rule(left: str, mid: str, right: str) -> str:
        return left + mid.join(h * (w + 2) for w in widths) + right

    def fmt(cells):
        return f"{v} " + f" {v} ".join(c.ljust(w) for c, w in zip(cells, widths)) + f" {v}"

    if unicode:
        top, middle, bottom = rule("┌", "┬", "┐"), rule("├", cross, "┤"), rule("└", "┴", "┘")
    else:
        top = middle = bottom = rule("+", "+", "+")
    out = [top, fmt(headers), middle] + [fmt(r) for r in rows] + [bottom, _count(len(rows))]
    return "\n".join(out)


def as_unicode_table(table: pa.Table) -> str:
    return as_table(table, unicode=True)


def as_markdown(table: pa.Table) -> str:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(c) for c in table.column_names) + " |",
             "|" + "|".join("---" for _ in table.column_names) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in _rows(table)]
    return "\n".join(lines)


def as_vertical(table: pa.Table) -> str:
    """One block per row, one line per column (psql's expanded display)."""
    width = max((len(c) for c in table.column_names), default=0)
    out = []
    for i, row in enumerate(_rows(table), 1):
        out.append(f"-[ RECORD {i} ]" + "-" * max(0, width - 4))
        out += [f"{name.ljust(width)} | {cell}" for name, cell in zip(table.column_names, row)]
    out.append(_count(table.num_rows))
    return "\n".join(out)


def as_csv(table: pa.Table) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in rows_of(table):
        writer.writerow(["" if v is None else v for v in row])
    return buf.getvalue().rstrip("\n")


def _json_default(value):
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (datetime.date, datetime.datetime, datetime.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(type(value).__name__)


def as_json(table: pa.Table) -> str:
    return json.dumps(table.to_pylist(), default=_json_default, indent=1)


FORMATS = {"table": as_table, "unicode": as_unicode_table, "csv": as_csv, "json": as_json,
           "markdown": as_markdown, "vertical": as_vertical}
