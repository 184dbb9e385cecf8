"""The inputs of an SPU stage that begins with an oblivious join (`SecureStage.secret_join`).

Used when a join key is not granted PLAINTEXT_AFTER_JOIN: instead of a PSI (which shows each party
which of its keys match), each party secret-shares its own rows — its input columns and its join
key — and `spu.join.oblivious_pk_join` joins them on shares. The stage then runs on the joined rows
with the match bit as its starting row weight, so filters, aggregates and the final compaction
never reveal which rows matched; only the result is opened, to the issuer.

Keys: each party hashes its typed key encoding (`executors/psi/encoding.py`, the PSI's) with SHA-256
under a domain tag and shares two 60-bit limbs (a false match needs a 120-bit collision).
The oblivious join needs one side with unique keys, known at plan time (`place_psi.known_unique`):
each party checks its own and tells the other (one bit about its own data); if neither side is unique,
a party's data breaks its declared key and the query fails with a DataError.
"""

from __future__ import annotations

import hashlib

import numpy as np

from sqlsecure.errors import DataError, ProtocolError
from sqlsecure.executors.psi.encoding import encode_keys
from sqlsecure.executors.spu.values import encode, limb_fracs, limbs_of, value_kind
from sqlsecure.executors.spu import arith
from sqlsecure.executors.spu.join import oblivious_pk_join

DOMAIN = b"sqlsecure/oblivious-join/sha256/v1\x00"
LIMB = (1 << 60) - 1


def key_limbs(encoded: list[bytes | None]) -> tuple[list[np.ndarray], np.ndarray]:
    """Two 60-bit limbs of SHA-256(domain || key) per row, and the key's validity (0 for NULL)."""
    n = len(encoded)
    digests = bytearray(16 * n)
    prefix = hashlib.sha256(DOMAIN)
    for i, key in enumerate(encoded):
        if key is not None:
            h = prefix.copy()
            h.update(key)
            digests[16 * i:16 * i + 16] = h.digest()[:16]
    words = np.frombuffer(bytes(digests), dtype=np.uint64).reshape(n, 2) if n else np.zeros((0, 2), np.uint64)
    valid = np.array([key is not None for key in encoded], dtype=np.uint64)
    return [words[:, 0] & np.uint64(LIMB), words[:, 1] & np.uint64(LIMB)], valid


def has_unique_keys(encoded: list[bytes | None]) -> bool:
    present = [k for k in encoded if k is not None]
    return len(set(present)) == len(present)


def joined_inputs(s, step, tables: dict, kinds: dict[str, str], rows: dict[int, int], tag: str, limits=None):
    """Share both sides, join them obliviously; returns ({column: SV}, match weight, joined rows, the
    party of the side whose rows each appear once in the joined rows: the one with repeated keys).

    `tables`: side index -> this party's relation (its side only); `rows`: side -> row count;
    `limits`: column -> `ranges.Limit` its owner checks before anything is sent."""
    from sqlsecure.executors.spu.stage import SV

    me = s.me
    (mine,) = [i for i, (party, _, _) in enumerate(step.secret_join) if party == me]
    encoded_columns = {column: encode(tables[mine].column(column), kinds[column], s.frac_bits,
                                      (limits or {}).get(column), column)
                       for party, column in step.inputs if party == me}
    peer = step.secret_join[1 - mine][0]
    encoded = encode_keys(tables[mine], step.secret_join[mine][2])
    my_flag = has_unique_keys(encoded)
    s.endpoint.send(peer, f"{tag}/unique", b"\x01" if my_flag else b"\x00")
    theirs = s.endpoint.recv(peer, f"{tag}/unique")
    if theirs not in (b"\x00", b"\x01"):
        raise ProtocolError(f"{peer} sent a malformed uniqueness flag")
    unique_flags = {mine: my_flag, 1 - mine: theirs == b"\x01"}
    if not any(unique_flags.values()):  # the plan chose this join on a side unique at plan time: a declared key
        keys = " = ".join(", ".join(side[2]) for side in step.secret_join)
        raise DataError(f"the oblivious join on {keys}: both sides repeat a join key, though one side's key is "
                        "declared unique ([parties.NAME.unique]); correct the data or remove the declaration")
    unique = 0 if unique_flags[0] else 1
    owner_index = {party: step.compute.index(party) for party, _, _ in step.secret_join}

    def share(side: int, values: list[np.ndarray] | None, frac: int = 0):
        owner = owner_index[step.secret_join[side][0]]
        return arith.share_input(s, owner, values if s.index == owner else None, (rows[side],), frac)

    sides = []
    for side in (0, 1):
        here = side == mine
        limbs, valid = key_limbs(encoded) if here else (None, None)
        keys = [share(side, limbs[k] if here else None) for k in range(2)]
        key_valid = share(side, valid if here else None)
        columns, payload = [], []
        for party, column in step.inputs:
            if party != step.secret_join[side][0]:
                continue
            kind = kinds[column]
            fracs = limb_fracs(kind, s.frac_bits)
            if here:
                values, present = encoded_columns[column]
            count = limbs_of(kind)
            shared = [share(side, values[k] if here else None, fracs[k]) for k in range(count)]
            columns.append((column, value_kind(kind), count))
            payload += [*shared, share(side, present if here else None)]
        sides.append((keys, key_valid, payload, columns))
    u, m = sides[unique], sides[1 - unique]
    joined = oblivious_pk_join(s, u[0], u[1], u[2], m[0], m[1], m[2])
    cols = {}
    for (_, _, _, columns), payload in ((u, joined.unique_payload), (m, joined.many_payload)):
        at = 0
        for column, kind, count in columns:
            cols[column] = SV(list(payload[at:at + count]), payload[at + count], kind)
            at += count + 1
    return cols, joined.match, len(joined.match), step.secret_join[1 - unique][0]
