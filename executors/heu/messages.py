"""The HE group-sum protocol's messages, each an Arrow table on the wire (Arrow IPC stream).

GroupCount (A -> B), KeyMessage and CiphertextBatch (B -> A), MaskedSums (A -> B), ShareMessage
(either way, for a reveal).

Ciphertexts travel as Arrow `fixed_size_binary(w)` columns, w = byte length of n^2, big-endian;
the column's data buffer is exactly the concatenation the worker processes produce, so no copy per
ciphertext is made when sending. Every `from_bytes` checks shape and ranges and raises
`ProtocolError` naming the sender.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from sqlsecure.errors import DataError, ProtocolError
from sqlsecure.executors.runtime.channel import table_from_bytes, table_to_bytes
from sqlsecure.executors.heu.packing import SlotLayout
from sqlsecure.executors.heu.paillier import PublicKey


def ciphertext_array(blob: bytes, width: int) -> pa.FixedSizeBinaryArray:
    """A zero-copy Arrow column over concatenated fixed-width ciphertexts."""
    if len(blob) % width:
        raise ProtocolError(f"{len(blob)} ciphertext bytes is not a multiple of {width}")
    return pa.Array.from_buffers(pa.binary(width), len(blob) // width, [None, pa.py_buffer(blob)])


def array_blob(column: pa.ChunkedArray | pa.Array, width: int) -> bytes:
    """The concatenated ciphertext bytes of an Arrow fixed_size_binary column."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if column.type != pa.binary(width) or column.null_count:
        raise ProtocolError(f"expected a non-null fixed_size_binary({width}) ciphertext column, "
                            f"got {column.type}")
    data = column.buffers()[1]
    return data.to_pybytes()[column.offset * width:(column.offset + len(column)) * width]


def _one_table(data: bytes, frm: str, names: list[str]) -> pa.Table:
    table = table_from_bytes(data, frm)
    if table.column_names[:len(names)] != names:
        raise ProtocolError(f"{frm} sent a message with columns {table.column_names}, expected {names}")
    return table


@dataclass(frozen=True)
class GroupCount:
    """Round 0 (A -> B): the number of groups G, which B learns anyway (it decrypts the sums) and
    needs up front to choose the packing plan."""

    groups: int

    def to_bytes(self) -> bytes:
        return table_to_bytes(pa.table({"groups": pa.array([self.groups], pa.int64())}))

    @classmethod
    def from_bytes(cls, data: bytes, frm: str = "peer") -> "GroupCount":
        table = _one_table(data, frm, ["groups"])
        if table.num_rows != 1 or table.column(0)[0].as_py() is None or table.column(0)[0].as_py() < 0:
            raise ProtocolError(f"{frm} sent an invalid group count")
        return cls(table.column(0)[0].as_py())


@dataclass(frozen=True)
class KeyMessage:
    """Round 1 header (B -> A): fresh public key, slot layout, row and column counts, packing plan."""

    public_key: PublicKey
    layout: SlotLayout
    rows: int
    columns: int
    rows_per_ciphertext: int = 1
    merge: bool = True

    _NAMES = ["public_key", "value_bits", "max_terms", "mask_bits", "rows", "columns",
              "rows_per_ciphertext", "merge"]

    def to_bytes(self) -> bytes:
        layout = self.layout
        return table_to_bytes(pa.table({
            "public_key": pa.array([self.public_key.to_bytes()], pa.binary()),
            "value_bits": pa.array([layout.value_bits], pa.int64()),
            "max_terms": pa.array([layout.max_terms], pa.int64()),
            "mask_bits": pa.array([layout.mask_bits], pa.int64()),
            "rows": pa.array([self.rows], pa.int64()),
            "columns": pa.array([self.columns], pa.int64()),
            "rows_per_ciphertext": pa.array([self.rows_per_ciphertext], pa.int64()),
            "merge": pa.array([self.merge], pa.bool_()),
        }))

    @classmethod
    def from_bytes(cls, data: bytes, frm: str = "peer") -> "KeyMessage":
        table = _one_table(data, frm, cls._NAMES)
        if table.num_rows != 1:
            raise ProtocolError(f"{frm} sent a key message with {table.num_rows} rows")
        row = {name: table.column(name)[0].as_py() for name in cls._NAMES}
        if any(v is None for v in row.values()):
            raise ProtocolError(f"{frm} sent a key message with empty fields")
        if row["rows"] < 0 or row["columns"] < 1 or row["rows_per_ciphertext"] < 1:
            raise ProtocolError(f"{frm} announced {row['rows']} rows, {row['columns']} columns and "
                                f"{row['rows_per_ciphertext']} rows per ciphertext")
        try:
            layout = SlotLayout(row["value_bits"], row["max_terms"], row["mask_bits"])
        except DataError as exc:
            raise ProtocolError(f"{frm} proposed an invalid slot layout: {exc}") from None
        return cls(PublicKey.from_bytes(row["public_key"]), layout, row["rows"], row["columns"],
                   row["rows_per_ciphertext"], bool(row["merge"]))


@dataclass(frozen=True)
class CiphertextBatch:
    """Round 1 body (B -> A): per-row ciphertexts, one column per chunk of packed value columns."""

    chunks: list[bytes]  # concatenated fixed-width ciphertexts, one blob per chunk

    def to_bytes(self, width: int) -> bytes:
        return table_to_bytes(pa.table({f"c{i}": ciphertext_array(blob, width)
                                        for i, blob in enumerate(self.chunks)}))

    @classmethod
    def from_bytes(cls, data: bytes, chunks: int, width: int, frm: str = "peer") -> "CiphertextBatch":
        table = _one_table(data, frm, [f"c{i}" for i in range(chunks)])
        if table.num_columns != chunks:
            raise ProtocolError(f"{frm} sent {table.num_columns} ciphertext columns, expected {chunks}")
        return cls([array_blob(table.column(i), width) for i in range(chunks)])


@dataclass(frozen=True)
class MaskedSums:
    """Round 2 (A -> B): masked, re-randomised, packed per-group sums; and the number of groups."""

    groups: int
    ciphertexts: bytes

    def to_bytes(self, width: int) -> bytes:
        table = pa.table({"c": ciphertext_array(self.ciphertexts, width)})
        return table_to_bytes(table.replace_schema_metadata({"groups": str(self.groups)}))

    @classmethod
    def from_bytes(cls, data: bytes, width: int, frm: str = "peer") -> "MaskedSums":
        table = _one_table(data, frm, ["c"])
        try:
            groups = int((table.schema.metadata or {})[b"groups"])
        except (KeyError, ValueError):
            raise ProtocolError(f"{frm} sent masked sums without a group count") from None
        if groups < 0:
            raise ProtocolError(f"{frm} sent a negative group count")
        return cls(groups, array_blob(table.column(0), width))


def _int_bytes(value: int, width: int) -> bytes:
    return value.to_bytes(width, "big", signed=True)


@dataclass(frozen=True)
class ShareMessage:
    """Reveal (either way): one party's integer shares per (column, group), and counts if A's."""

    shares: list[list[int]]   # [column][group]
    counts: list[int] | None  # group sizes (only the label owner has them)

    def to_bytes(self) -> bytes:
        groups = len(self.shares[0]) if self.shares else 0
        width = 1 + max((abs(v).bit_length() for col in self.shares for v in col), default=0) // 8 + 1
        data = {f"s{c}": pa.array([_int_bytes(v, width) for v in col], pa.binary(width))
                for c, col in enumerate(self.shares)}
        if self.counts is not None:
            data["count"] = pa.array(self.counts, pa.int64())
        table = pa.table(data) if data else pa.table({"count": pa.array([], pa.int64())})
        return table_to_bytes(table.replace_schema_metadata({"columns": str(len(self.shares)),
                                                             "groups": str(groups)}))

    @classmethod
    def from_bytes(cls, data: bytes, frm: str = "peer") -> "ShareMessage":
        table = table_from_bytes(data, frm)
        meta = table.schema.metadata or {}
        try:
            columns = int(meta[b"columns"])
        except (KeyError, ValueError):
            raise ProtocolError(f"{frm} sent shares without a column count") from None
        shares = []
        for c in range(columns):
            if f"s{c}" not in table.column_names:
                raise ProtocolError(f"{frm} sent shares without column s{c}")
            shares.append([int.from_bytes(v, "big", signed=True)
                           for v in table.column(f"s{c}").to_pylist()])
        counts = table.column("count").to_pylist() if "count" in table.column_names else None
        return cls(shares, counts)
