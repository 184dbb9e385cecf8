"""The EnclaveStage operator: GROUP BY / ORDER BY over several parties' aligned rows in an attested enclave.

Roles over the channel (the enclave itself is a subprocess driven by the runtime's "enclave" actor):
  1. the issuer sends the actor a fresh result public key;
  2. the actor builds the query's `SessionSpec` (program, input parties, recipient) and sends it with a
     quote over a nonce bound to the query to every party of the stage;
  3. every input party verifies the quote against the federation's authority and allowlist of
     measurements, checks that the spec runs exactly the program of the public plan, encodes its
     columns (integers and dates as int64, DECIMAL(p, s) as the exact int64 x * 10^s, so sums, MIN,
     MAX and keys are exact at the column's scale, floats as float64 with NaN and infinities refused
     by their owner (DataError), TIMESTAMP as int64 microseconds since 1970, text as 7-byte int64 limbs at
     its owner's width class (28 bytes, or the longest value's UTF-8 length rounded up to a power of two,
     at most 1024: `spu.values.text_width`, as on the SPU); each with a `#null` flag) and seals them to the
     enclave (X25519 + HKDF + AES-GCM per batch);
  4. the actor submits the sealed batches and runs the session; the sealed result goes to the issuer,
     who opens it with its result key. Nothing in the clear passes the actor.
A result computed in simulation (no SGX here) is marked so, and EXPLAIN says so.
"""

from __future__ import annotations

import decimal
import hashlib
import json
import struct
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sqlsecure.errors import DataError, ProtocolError
from sqlsecure.executors.tee import (
    EnclaveProgram, Quote, ResultKey, SealedBatch, SessionSpec, open_result, seal_inputs, verify_quote,
)
from sqlsecure.executors.tee.expressions import NULL_FLAG, text_limb_count
from sqlsecure.executors.tee.program import BRANCH
from sqlsecure.executors.tee.wire import ENCLAVE
from sqlsecure.executors.spu.values import (LIMB_BYTES, MAX_TEXT_BYTES, refuse_special_floats, text_limbs, text_width,
                                            timestamp_kind)

ACTOR = "enclave"  # the runtime's actor that drives the enclave process


@dataclass(frozen=True)
class EnclaveTrust:
    """What every party checks an enclave against (from the federation file)."""

    authority_public_key: bytes
    measurements: frozenset[bytes]


def program_of(step) -> EnclaveProgram:
    return EnclaveProgram.from_json(json.loads(step.program))


def nonce_for(query_tag: str) -> bytes:
    return hashlib.sha256(b"sqlsecure/enclave-nonce/" + query_tag.encode()).digest()


def pack_frames(frames: list[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(f)) + f for f in frames)


def unpack_frames(data: bytes, frm: str) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        if i + 4 > len(data):
            raise ProtocolError(f"{frm} sent a truncated frame list")
        (n,) = struct.unpack(">I", data[i:i + 4])
        out.append(data[i + 4:i + 4 + n])
        i += 4 + n
    return out


def encode_column(name: str, column: pa.ChunkedArray, kind: str) -> dict[str, pa.Array]:
    """One SQL column as the enclave's int64 / float64 columns and its `#null` flag (always sent, so the
    schema does not tell whether the column has NULLs; a NULL's value is 0)."""
    flags = pa.array([int(v is None) for v in column.to_pylist()], pa.int64())
    return encode_values(name, column.fill_null(_zero_of(column.type)), kind) | {f"{name}{NULL_FLAG}": flags}


def _zero_of(dtype: pa.DataType):
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return ""
    if pa.types.is_date(dtype):
        return pa.scalar(0, pa.int32()).cast(dtype)
    if pa.types.is_timestamp(dtype):
        return pa.scalar(0, pa.int64()).cast(dtype)
    if pa.types.is_boolean(dtype):
        return False
    return pa.scalar(decimal.Decimal(0) if pa.types.is_decimal(dtype) else 0, type=dtype)


def encode_values(name: str, column: pa.ChunkedArray, kind: str) -> dict[str, pa.Array]:
    values = column.to_pylist()
    if kind == "int":
        return {name: pa.array([int(v) for v in values], pa.int64())}
    if kind == "date":
        return {name: pa.array(column.combine_chunks().cast(pa.int32()).to_pylist(), pa.int64())}
    if kind == "timestamp":  # microseconds since 1970-01-01, as on the SPU; a zone or another unit refused by name
        timestamp_kind(column.type)
        return {name: column.combine_chunks().cast(pa.int64())}
    if kind.startswith("decimal."):  # exact: the value times 10^s; beyond int64 refused by its owner
        scaled = [int(decimal.Decimal(v).scaleb(int(kind.split(".")[1]))) for v in values]
        if any(not -(1 << 63) < x < (1 << 63) for x in scaled):
            raise DataError(f"column {name!r} has DECIMAL values beyond the enclave's 64-bit integers at its "
                            f"scale; CAST it to DOUBLE or filter it first")
        return {name: pa.array(scaled, pa.int64())}
    if kind == "fixed":  # float64 in the enclave; NaN and infinities refused as on the SPU and HE paths
        floats = [float(v) for v in values]
        refuse_special_floats(floats, name)
        return {name: pa.array(floats, pa.float64())}
    limbs = text_limbs(values, name, sealed_width(values, name))
    return {f"{name}#{k}": pa.array(limb, pa.int64()) for k, limb in enumerate(limbs)}


def sealed_width(values: list, name: str) -> int:
    """The width class this owner seals its text at (public, like its row count: `spu.values.text_width`)."""
    try:
        return text_width(values, name)
    except DataError:
        raise DataError(f"column {name!r} has text longer than {MAX_TEXT_BYTES} bytes of UTF-8, the widest the "
                        f"enclave takes; shorten it (e.g. LEFT({name}, {MAX_TEXT_BYTES // 4})) or keep it on one "
                        "party") from None


def decode_output(table: pa.Table, name: str, kind: str) -> pa.Array:
    """A result column as SQL values; NULL where its `#null` flag is set."""
    values = decode_values(table, name, kind)
    flag = f"{name}{NULL_FLAG}"
    if flag not in table.column_names:
        return values
    return pc.if_else(pc.equal(table.column(flag).combine_chunks(), 1), pa.nulls(len(values), values.type), values)


def decode_values(table: pa.Table, name: str, kind: str) -> pa.Array:
    if kind == "text":  # as many limbs as the enclave returned: the column's width class
        limbs = [table.column(f"{name}#{k}").to_pylist() for k in range(text_limb_count(table.column_names, name))]
        return pa.array([b"".join(int(limb[i]).to_bytes(LIMB_BYTES, "big") for limb in limbs)
                         .rstrip(b"\0").decode("utf-8", errors="replace") for i in range(table.num_rows)],
                        pa.string())
    column = table.column(name)
    if kind.startswith(("decimal.", "scaled.")):  # the exact x * 10^s (SUM / MIN / MAX / key), or AVG of it
        scale = int(kind.split(".")[1])
        if kind.startswith("scaled."):
            return pc.divide(column.cast(pa.float64()), float(10 ** scale)).combine_chunks()
        return pa.array([None if v is None else decimal.Decimal(v).scaleb(-scale) for v in column.to_pylist()],
                        pa.decimal128(38, scale))
    if kind == "date":
        return column.cast(pa.int32()).cast(pa.date32())
    if kind == "timestamp":  # only ever computed in the enclave: microseconds since 1970-01-01
        return column.cast(pa.int64()).cast(pa.timestamp("us"))
    return column.combine_chunks()


def sealed_text_widths(inputs) -> list[tuple[str, str]]:
    """What the host learns of the text an EnclaveStage's parties seal ((party, piece column, enclave column,
    kind) inputs): each column's width class, from the size of its sealed batches."""
    texts = [(party, column) for party, column, _, kind in inputs if kind == "text"]
    return [("enclave", f"the width class of {party}'s {column} from the size of its sealed batches (28 bytes, "
                        f"or its longest value's UTF-8 length rounded up to a power of two, at most {MAX_TEXT_BYTES}: "
                        "log2 of that length, never the length)") for party, column in texts]


def party_side(endpoint, step, trust: EnclaveTrust, table: pa.Table | None, tag: str) -> tuple:
    """Verify the quote and the session; seal and send this party's columns (if it has inputs)."""
    spec_bytes, quote_bytes = unpack_frames(endpoint.recv(ACTOR, f"{tag}/session"), ACTOR)
    spec = SessionSpec.from_bytes(spec_bytes)
    attested = verify_quote(Quote.from_bytes(quote_bytes), trust.authority_public_key, trust.measurements,
                            nonce_for(tag))
    if spec.program.to_json() != program_of(step).to_json() or spec.recipient != step.issuer \
            or tuple(spec.parties) != tuple(step.inputs_by_party):
        raise ProtocolError(f"the enclave session of {tag} is not the one in the plan; nothing was sent")
    if table is not None:
        sealed = seal_inputs(attested, spec, endpoint.party, table)
        endpoint.send(ACTOR, f"{tag}/sealed", pack_frames([b.to_bytes() for b in sealed]))
    return spec, attested


def actor_side(endpoint, host, step, tag: str) -> None:
    """The runtime's actor: session, quote, sealed inputs in, sealed result out."""
    recipient_key = endpoint.recv(step.issuer, f"{tag}/result-key")
    spec = SessionSpec(tag.replace("/", "-"), program_of(step), tuple(step.inputs_by_party),
                       step.issuer, recipient_key)
    quote = host.quote(nonce_for(tag))
    announcement = pack_frames([spec.to_bytes(), quote.to_bytes()])
    for party in dict.fromkeys((*step.inputs_by_party, step.issuer)):
        endpoint.send(party, f"{tag}/session", announcement)
    session = host.session(spec)
    for party in step.inputs_by_party:
        for frame in unpack_frames(endpoint.recv(party, f"{tag}/sealed"), party):
            session.submit(SealedBatch.from_bytes(frame, party))
    result = session.run()
    endpoint.send(step.issuer, f"{tag}/result", pack_frames([b.to_bytes() for b in result]))


def issuer_side(endpoint, step, trust: EnclaveTrust, table: pa.Table | None, tag: str) -> pa.Table:
    key = ResultKey.generate()
    endpoint.send(ACTOR, f"{tag}/result-key", key.public_bytes)
    spec, attested = party_side(endpoint, step, trust, table, tag)
    frames = unpack_frames(endpoint.recv(ACTOR, f"{tag}/result"), ACTOR)
    opened = open_result(attested, spec, key, [SealedBatch.from_bytes(f, ENCLAVE) for f in frames])
    columns = {name: decode_output(opened.table, column, kind) for name, column, kind in step.outputs}
    table = pa.table(columns) if columns else pa.table({})
    return table.replace_schema_metadata({"sqlsecure.enclave.simulated": str(opened.simulated).lower()})


def union_inputs_table(branches: list[tuple[int, pa.Table]], columns: tuple[tuple[str, str, str], ...]) -> pa.Table:
    """This party's part of a UNION ALL: its branches' rows [(branch index, piece)] stacked, (piece column,
    enclave name, kind) each, and `BRANCH`'s column (piece column BRANCH) the branch of each row. A text
    column is sealed at one width class over all its branches' values, as one column of the party's."""
    data: dict[str, pa.Array] = {}
    for column, name, kind in columns:
        if column == BRANCH:
            data[name] = pa.array(np.concatenate([np.full(t.num_rows, b, np.int64) for b, t in branches]
                                                 or [np.zeros(0, np.int64)]))
            continue
        stacked = pa.chunked_array([c for _, t in branches for c in t.column(column).chunks], branches[0][1].column(
            column).type) if branches else pa.chunked_array([], pa.int64())
        data.update(encode_column(name, stacked, kind))
    return pa.table(data)


def inputs_table(piece: pa.Table, columns: tuple[tuple[str, str, str], ...]) -> pa.Table:
    """This party's inputs, in piece row order: (piece column, enclave name, kind)."""
    data: dict[str, pa.Array] = {}
    for column, name, kind in columns:
        data.update(encode_column(name, piece.column(column), kind))
    return pa.table(data)


__all__ = ["ACTOR", "EnclaveTrust", "actor_side", "issuer_side", "party_side", "inputs_table", "union_inputs_table"]
