"""A party's executor (PYU): runs its share of a physical plan over its own store.

A `PartyExecutor` holds exactly one store (its own) and one channel endpoint; it has no reference
to any other party. It walks the plan's steps in order and acts in those it takes part in.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa

from sqlsecure.audit import AuditLog, outcome_of, query_entry
from sqlsecure.connectors import PartyStore
from sqlsecure.connectors.duckdb_store import local_error, party_log
from sqlsecure.errors import DataError, Error, InternalError, OperationalError, ProtocolError
from sqlsecure.executors.runtime.channel import Endpoint
from sqlsecure.executors.psi.blinding import GroupWorkers
from sqlsecure.executors.psi.encoding import NumberedKeys, encode_keys, numbered_keys
from sqlsecure.executors.psi.kkrt import kkrt_join_indices, kkrt_membership
from sqlsecure.executors.psi.unbalanced import PsiCache, unbalanced_join_indices, unbalanced_membership
from sqlsecure.executors.psi.ecdh import compose_matches, local_join_indices, psi_join_indices, psi_membership

PSI = {"ecdh": (psi_join_indices, psi_membership), "kkrt": (kkrt_join_indices, kkrt_membership)}
from sqlsecure.policy.masking import apply_mask
from sqlsecure.executors.tee.stage import inputs_table, issuer_side, party_side, union_inputs_table
from sqlsecure.executors.heu.group_by import key_party_side, open_sums, row_multiplicity, value_party_side
from sqlsecure.executors.spu.stage import exchange_shapes, receive_outputs, reveal_outputs, run_stage
from sqlsecure.executors.spu.session import SpuSession
from sqlsecure.planner.physical import (
    Compute, EnclaveStage, EquiJoin, Finish, HEGroupBy, Mask, Noise, PhysicalPlan, Reveal, RunLocal, SecretQuery,
    SecureStage,
)
from sqlsecure.planner.geodist import with_great_circle
from sqlsecure.planner.translate import BEYOND_BIGINT, OVER_BOUND
from sqlsecure.policy.privacy import release


SIMULATED = b"sqlsecure.enclave.simulated"  # result metadata: computed in an enclave without hardware protection


def scratch_sql(sql: str, tables: dict[str, pa.Table], party: str) -> pa.Table:
    """Run SQL over Arrow tables in a fresh, locked-down in-memory DuckDB (no file or network access),
    at `party`: a failure names the expression, its values stay in the party's log."""
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        for name, table in tables.items():
            con.register(name, table)
        return con.sql(with_great_circle(sql)).to_arrow_table()
    except duckdb.Error as exc:
        raise local_error(party, exc, sql, "local computation") from None
    finally:
        con.close()


def contained_error(party: str, exc: BaseException, issuer: str) -> Error:
    """What of `party`'s failure may reach the issuer (and, through an abort, the other parties).

    The engine's own errors keep their class and message (they name public things: the plan, a column,
    a range, a silent party) but lose their chained library exception and traceback; anything else
    (a library's or Python's exception, whose text may quote a data value) becomes an InternalError
    naming only its class. The full text is logged at the party. Only the issuer's own failures keep
    their `private_detail` (the text DuckDB gave about the issuer's own data)."""
    if not isinstance(exc, Error):
        party_log(party).error("%s failed", party, exc_info=exc)
        return InternalError(f"party {party!r} failed with {type(exc).__name__}; its log has the details")
    if party != issuer and hasattr(exc, "private_detail"):
        del exc.private_detail
    exc.__cause__, exc.__context__, exc.__suppress_context__ = None, None, True
    return exc.with_traceback(None)  # the party's frames (and their locals) stay behind


NOT_IN_VALUES, NOT_IN_NULL, NOT_IN_EMPTY = b"\x00", b"\x01", b"\x02"


def not_in_status(keys: NumberedKeys) -> bytes:
    """What `k NOT IN (values)` needs beyond membership: are there no values, or a NULL among them?"""
    if not len(keys.rows):
        return NOT_IN_EMPTY
    return NOT_IN_NULL if (keys.rows < 0).any() else NOT_IN_VALUES


def not_in_keep(status: bytes, member: np.ndarray, has_key: np.ndarray) -> np.ndarray:
    """SQL's three-valued NOT IN, keeping the rows where it is TRUE: every row when there are no
    values (a NULL key too); none when a NULL is among them (no match gives NULL); else the rows
    with a non-NULL key that is not among them."""
    if status not in (NOT_IN_VALUES, NOT_IN_NULL, NOT_IN_EMPTY):
        raise ProtocolError("malformed NOT IN status from the subquery's party")
    if status == NOT_IN_EMPTY:
        return np.ones(len(member), bool)
    if status == NOT_IN_NULL:
        return np.zeros(len(member), bool)
    return ~member & has_key


def _hstack(tables: list[pa.Table]) -> pa.Table:
    """Aligned tables side by side (every piece has at least one column)."""
    columns, names = [], []
    for table in tables:
        columns += table.columns
        names += table.column_names
    return pa.Table.from_arrays(columns, names=names)



def _per_row(flags: np.ndarray, provenance: pa.ChunkedArray) -> np.ndarray:
    """A base relation's per-row flags on the joined rows that came from it (`provenance`: the base
    row of each joined row). A LEFT JOIN's NULL-extended rows (NULL provenance) came from no base
    row: all their columns are NULL, so their key is NULL and the flag is False."""
    matched = provenance.is_valid().to_numpy(zero_copy_only=False)
    out = np.zeros(len(provenance), dtype=bool)
    out[matched] = flags[provenance.drop_null().to_numpy().astype(np.int64)]
    return out

class PartyExecutor:
    def __init__(self, name: str, store: PartyStore, endpoint: Endpoint, workers: GroupWorkers | None = None,
                 mask_key: bytes | None = None, progress=None, trust=None, psi_cache: PsiCache | None = None,
                 audit: AuditLog | None = None):
        self.name = name
        self._audit = audit  # this party's own audit log, if the federation names one
        self._revealed: list[dict] = []  # what this party revealed to whom in the running query
        self._psi_cache = psi_cache  # the unbalanced PSI's keys and prepared sets, kept across queries
        self._trust = trust  # the enclave this party accepts (authority, measurements), if any
        self._mask_key = mask_key
        self._progress = progress  # progress(step number, steps, label), for a person watching
        self._store = store
        self._endpoint = endpoint
        self._workers = workers

    def run(self, plan: PhysicalPlan, query_id: str, sql: str | None = None) -> pa.Table | None:
        """Run this party's part of `plan`; then append what it saw (`sql`: the query's text) to its audit log."""
        self._revealed = []
        try:
            result = self._run(plan, query_id)
        except BaseException as exc:
            self._record(plan, sql, outcome_of(exc))
            raise
        if result is not None:
            self._revealed.append({"to": self.name, "rows": result.num_rows})
        self._record(plan, sql, "ok")
        return result

    def _record(self, plan: PhysicalPlan, sql: str | None, outcome: str) -> None:
        if self._audit is None:
            return
        me = self.name
        sent = {dst: n for (src, dst), n in self._endpoint.channel.stats.bytes.items() if src == me and n}
        local = [s.sql for s in plan.steps if isinstance(s, RunLocal) and s.party == me]
        self._audit.append(query_entry(me, plan, sql, outcome, self._revealed, sent, local))

    def _run(self, plan: PhysicalPlan, query_id: str) -> pa.Table | None:
        self._sources = {s.out: (s.party, s.sql) for s in plan.steps if isinstance(s, RunLocal)}
        pieces: dict[str, pa.Table] = {}
        outputs: dict[tuple[str, str], pa.Table] = {}
        result = None
        for index, step in enumerate(plan.steps):
            if self.name not in step.parties:
                continue
            if self._progress is not None:
                self._progress(index + 1, len(plan.steps), getattr(step, "device", type(step).__name__))
            tag = f"{query_id}/{index}"
            if isinstance(step, RunLocal):
                table = outputs[(self.name, step.out)] = self._local_query(step)
                rows = pa.array(np.arange(table.num_rows, dtype=np.int64))
                pieces[step.out] = table.append_column(f"__prov_{step.out}", rows)
            elif isinstance(step, EquiJoin):
                piece = self._join(step, pieces, tag)
                if piece is not None:
                    pieces[step.out] = piece
            elif isinstance(step, Compute):
                piece = pieces[step.rel]
                piece = piece.append_column("__row", pa.array(np.arange(piece.num_rows, dtype=np.int64)))
                outputs[(self.name, step.out)] = scratch_sql(step.sql, {"piece": piece}, self.name)
            elif isinstance(step, HEGroupBy):
                result_part = self._he_group_by(step, pieces, tag)
                if result_part is not None:
                    outputs[(self.name, step.out)] = result_part
            elif isinstance(step, EnclaveStage):
                mine = tuple((column, name, kind) for party, column, name, kind in step.inputs if party == self.name)
                if step.union:  # a UNION ALL: this party's branches stacked, as one part
                    table = union_inputs_table([(b, pieces[rel]) for b, (party, rel) in enumerate(step.union)
                                                if party == self.name], mine) if mine else None
                else:
                    table = inputs_table(pieces[step.rel], mine) if mine else None
                if self._trust is None:
                    raise ProtocolError(f"{self.name} has no enclave to trust (no [enclave] in the federation)")
                if self.name == step.issuer:
                    outputs[(self.name, step.out)] = issuer_side(self._endpoint, step, self._trust, table, tag)
                else:
                    party_side(self._endpoint, step, self._trust, table, tag)
            elif isinstance(step, SecureStage):
                result_part = self._secure_stage(step, pieces, tag)
                if result_part is not None:
                    outputs[(self.name, step.out)] = result_part
            elif isinstance(step, SecretQuery):
                result_part = self._secret_query(step, pieces)
                if result_part is not None:
                    outputs[(self.name, step.out)] = result_part
            elif isinstance(step, Noise):
                outputs[(self.name, step.name)] = release(outputs[(self.name, step.name)], step.release)
            elif isinstance(step, Mask):
                outputs[(self.name, step.name)] = self._mask(outputs[(self.name, step.name)], step)
                if step.name in pieces:  # a secret program's input: masked by its owner before it is shared
                    pieces[step.name] = self._mask(pieces[step.name], step)
            elif isinstance(step, Reveal):
                if step.party == step.to:
                    continue
                if self.name == step.party:
                    self._endpoint.send_table(step.to, tag, outputs[(step.party, step.name)])
                    self._revealed.append({"to": step.to, "rows": outputs[(step.party, step.name)].num_rows})
                else:
                    outputs[(step.party, step.name)] = self._endpoint.recv_table(step.party, tag)
            elif isinstance(step, Finish):
                result = self._finish(step, outputs, pieces)
        return result

    def _local_query(self, step: RunLocal) -> pa.Table:
        """A RunLocal's rows; DataError where an aggregate padded to a public bound has more groups (the
        bound came from a magnitude class this party published that its data has since outgrown)."""
        try:
            return self._store.query(with_great_circle(step.sql))
        except OperationalError as exc:
            detail = getattr(exc, "private_detail", "")
            if BEYOND_BIGINT in detail:  # the planner's words and the query's aggregate, never a value
                label = detail[detail.index(BEYOND_BIGINT) + len(BEYOND_BIGINT):].splitlines()[0]
                raise DataError(f"party {self.name!r}: the integer sum {label} is beyond BIGINT, the range of "
                                "the SPU's shares; sum fewer rows per group, or CAST the values to DOUBLE") from None
            if OVER_BOUND not in detail:
                raise
            raise DataError(f"party {self.name!r}: its aggregate {step.out} has more groups than the bound it is "
                            "padded to, which its published magnitude classes set: they are stale; publish them "
                            "again (reopen the federation) and retry") from None

    def _join(self, step: EquiJoin, pieces: dict[str, pa.Table], tag: str) -> pa.Table | None:
        if step.mode in ("semi", "anti"):
            return self._membership(step, pieces, tag)
        me = self.name
        matched = right_rows = None  # my base rows per match / the right party's rows per match
        if step.left_party == step.right_party == me:
            matched, right_rows = local_join_indices(
                encode_keys(pieces[step.left_base], step.left_keys), encode_keys(pieces[step.right], step.right_keys)
            )
        elif me == step.left_party:
            matched = self._psi(step, step.right_party, f"{tag}/psi",
                                numbered_keys(pieces[step.left_base], step.left_keys), True)
        elif me == step.right_party:
            right_rows = self._psi(step, step.left_party, f"{tag}/psi",
                                   numbered_keys(pieces[step.right], step.right_keys), False)
        left_idx = pair_idx = None
        if me == step.left_party:
            provenance = pieces[step.left].column(f"__prov_{step.left_base}").to_numpy()
            left_idx, pair_idx = compose_matches(provenance, matched)
            if step.mode == "left":  # keep every left row: the unmatched ones with NULLs on the right
                unmatched = np.setdiff1d(np.arange(len(provenance), dtype=np.int64), left_idx)
                left_idx = np.concatenate([left_idx, unmatched])
                pair_idx = np.concatenate([pair_idx, np.full(len(unmatched), -1, dtype=np.int64)])
            for holder in step.keep:
                if holder != me and holder in step.left_holders:
                    self._endpoint.send(holder, f"{tag}/left", left_idx.tobytes())
                if holder != me and holder == step.right_party:
                    self._endpoint.send(holder, f"{tag}/pairs", pair_idx.tobytes())
        if me not in step.keep:
            return None
        if me != step.left_party and me in step.left_holders:
            left_idx = self._recv_index(step.left_party, f"{tag}/left", pieces[step.left].num_rows)
        if me != step.left_party and me == step.right_party:
            pair_idx = self._recv_index(step.left_party, f"{tag}/pairs", len(right_rows), allow_null=step.mode == "left")
        parts = []
        if me in step.left_holders:
            parts.append(pieces[step.left].take(pa.array(left_idx)))
        if me == step.right_party:
            missing = pair_idx < 0
            rows = np.where(missing, 0, right_rows[np.where(missing, 0, pair_idx)]) if len(right_rows) else pair_idx * 0
            parts.append(pieces[step.right].take(pa.array(rows, mask=missing)))
        return _hstack(parts)

    def _psi(self, step: EquiJoin, peer: str, tag: str, encoded: NumberedKeys, left: bool | None):
        """The step's PSI with `peer`: join indices (`left` says my side) or, for None, membership."""
        if step.psi != "unbalanced":
            if left is None:
                return PSI[step.psi][1](self._endpoint, peer, tag, encoded, self._workers)
            return PSI[step.psi][0](self._endpoint, peer, tag, encoded, left, self._workers)
        if self._psi_cache is None:
            raise ProtocolError(f"{self.name} keeps no PSI cache: it cannot run an unbalanced PSI")
        base, keys = (step.left_base, step.left_keys) if self._sources[step.left_base][0] == step.large \
            else (step.right, step.right_keys)
        scope = f"{self._sources[base][1]}\x00{','.join(keys)}"  # the large side's set, as both parties name it
        large = self.name == step.large
        if left is None:
            return unbalanced_membership(self._endpoint, peer, tag, encoded, large, self._psi_cache, self._workers,
                                         scope)
        return unbalanced_join_indices(self._endpoint, peer, tag, encoded, left, large, self._psi_cache,
                                       self._workers, scope)

    def _secure_stage(self, step: SecureStage, pieces, tag: str) -> pa.Table | None:
        me = self.name
        if me not in step.compute:
            return receive_outputs(self._endpoint, step, step.frac_bits) if me == step.issuer else None
        if step.union:  # my branches of a UNION ALL
            tables = {i: pieces[rel] for i, (party, rel) in enumerate(step.union) if party == me}
        elif step.secret_join:  # my side of an oblivious join
            tables = {i: pieces[rel] for i, (party, rel, _) in enumerate(step.secret_join) if party == me}
        else:  # my piece of the joined relation
            tables = {0: pieces[step.rel]}
        session = SpuSession(self._endpoint, list(step.compute), frac_bits=step.frac_bits)
        session.offer()  # the session's set-up and the shapes: one leg
        kinds, rows = exchange_shapes(self._endpoint, step, tables, tag, session.accept)
        inputs = {(i, column): table.column(column) for i, table in tables.items()
                  for _, column in step.inputs if column in table.column_names}
        n = sum(rows.values()) if step.union or step.secret_join else tables[0].num_rows
        try:
            values, flag = run_stage(session, step, inputs, kinds, n, rows, tables, f"{tag}/join")
            return reveal_outputs(session, step, values, flag, n)
        finally:
            session.close()

    def _secret_query(self, step: SecretQuery, pieces) -> pa.Table | None:
        """Run the secret program in lockstep with the other compute parties over my input relations (each
        with its `__prov_<relation>` column); the result opens at the issuer only."""
        from sqlsecure.executors.spu.program import parse_program, receive_program_output, run_program

        me, program = self.name, parse_program(step.program)
        if me not in step.compute:
            return receive_program_output(self._endpoint, step, program) if me == step.issuer else None
        tables = {i: pieces[relation] for i, (owner, relation) in enumerate(step.inputs) if owner == me}
        session = SpuSession(self._endpoint, list(step.compute), frac_bits=step.frac_bits)
        session.offer()  # accepted by `run_program` after it sent its sizes: one leg for both
        try:
            issuer = step.compute.index(step.issuer) if step.issuer in step.compute else None
            return run_program(session, program, tables, issuer, issuer=step.issuer, out=step.out)
        finally:
            session.close()

    def _he_group_by(self, step: HEGroupBy, pieces, tag: str) -> pa.Table | None:
        me, endpoint = self.name, self._endpoint
        mine = None
        if me in (step.key_party, step.value_party):
            piece = pieces[step.rel]
            piece = piece.append_column("__row", pa.array(np.arange(piece.num_rows, dtype=np.int64)))
        if me == step.key_party:
            groups = scratch_sql(step.groups_sql, {"piece": piece}, me)
            codes = scratch_sql(step.codes_sql, {"piece": piece}, me).column("__code").to_numpy(zero_copy_only=False)
            multiplicity = self._recv_multiplicity(step, f"{tag}/he/multiplicity") if step.value_rows else 1
            mine = key_party_side(endpoint, step, groups, codes.astype(np.int64), f"{tag}/he",
                                  multiplicity=multiplicity)
            if me == step.issuer:
                return open_sums(step, mine, endpoint.recv_table(step.value_party, f"{tag}/he/value-shares"))
        elif me == step.value_party:
            if step.value_rows:  # the group threshold: how often my most repeated row is joined
                endpoint.send(step.key_party, f"{tag}/he/multiplicity",
                              row_multiplicity(piece, step.value_rows).to_bytes(8, "big"))
            values = scratch_sql(step.values_sql, {"piece": piece}, me)
            mine = value_party_side(endpoint, step, values, f"{tag}/he", None)
            if me == step.issuer:
                return open_sums(step, endpoint.recv_table(step.key_party, f"{tag}/he/key-shares"), mine)
        elif me == step.issuer:
            return open_sums(step, endpoint.recv_table(step.key_party, f"{tag}/he/key-shares"),
                             endpoint.recv_table(step.value_party, f"{tag}/he/value-shares"))
        return None

    def _recv_multiplicity(self, step: HEGroupBy, tag: str) -> int:
        raw = self._endpoint.recv(step.value_party, tag)
        if len(raw) != 8 or not 1 <= int.from_bytes(raw, "big") < 1 << 62:
            raise ProtocolError(f"{step.value_party} sent a malformed row multiplicity")
        return int.from_bytes(raw, "big")

    def _mask(self, table: pa.Table, step: Mask) -> pa.Table:
        for column, mask in step.columns:
            i = table.column_names.index(column)
            try:
                masked = apply_mask(table.column(i), mask, self._mask_key)
            except ValueError as exc:
                raise OperationalError(f"masking {column!r} at {self.name}: {exc}") from None
            table = table.set_column(i, table.field(i).name, masked)
        return table

    def _membership(self, step: EquiJoin, pieces: dict[str, pa.Table], tag: str) -> pa.Table | None:
        """Semi / anti join: the left key party learns which of its rows' keys the right party has."""
        me = self.name
        if me == step.right_party:
            encoded = numbered_keys(pieces[step.right], step.right_keys)
            self._psi(step, step.left_party, f"{tag}/psi", encoded, None)
            if step.null_aware:  # NOT IN: whether the values are none, or include a NULL (to the key party)
                self._endpoint.send(step.left_party, f"{tag}/nulls", not_in_status(encoded))
        left_idx = None
        if me == step.left_party:
            encoded = numbered_keys(pieces[step.left_base], step.left_keys)
            member = self._psi(step, step.right_party, f"{tag}/psi", encoded, None)
            provenance = pieces[step.left].column(f"__prov_{step.left_base}")
            is_member = _per_row(member, provenance)
            has_key = _per_row(encoded.rows >= 0, provenance)
            if step.mode == "semi":
                keep = is_member
            elif step.null_aware:
                keep = not_in_keep(self._endpoint.recv(step.right_party, f"{tag}/nulls"), is_member, has_key)
            else:
                keep = ~is_member
            left_idx = np.flatnonzero(keep).astype(np.int64)
            for holder in step.keep:
                if holder != me:
                    self._endpoint.send(holder, f"{tag}/left", left_idx.tobytes())
        if me not in step.keep:
            return None
        if left_idx is None:
            left_idx = self._recv_index(step.left_party, f"{tag}/left", pieces[step.left].num_rows)
        return pieces[step.left].take(pa.array(left_idx))

    def _recv_index(self, frm: str, tag: str, bound: int, allow_null: bool = False) -> np.ndarray:
        raw = self._endpoint.recv(frm, tag)
        if len(raw) % 8:
            raise ProtocolError(f"{frm} sent a malformed index vector")
        index = np.frombuffer(raw, dtype=np.int64)
        if len(index) and (index.min() < (-1 if allow_null else 0) or index.max() >= max(bound, 1 if allow_null else 0)):
            raise ProtocolError(f"{frm} sent row indices outside 0..{bound - 1}")
        return index

    def _finish(self, step: Finish, outputs, pieces) -> pa.Table:
        if step.mode == "tables":  # the query itself over gathered tables, each a view named as its part
            return scratch_sql(step.sql, {name: outputs[(party, name)] for party, name in step.parts}, self.name)
        parts = [outputs[p] for p in step.parts]
        if step.mode == "single" and any(p.num_rows == 0 for p in parts):
            parts = [p.slice(0, 0) for p in parts]
        lengths = {p.num_rows for p in parts}
        if len(lengths) > 1:
            raise ProtocolError(f"revealed parts have different lengths {sorted(lengths)}")
        combined = _hstack(parts) if len(parts) != 1 else parts[0]
        result = combined if step.sql is None else scratch_sql(step.sql, {"result": combined}, self.name)
        simulated = any((p.schema.metadata or {}).get(SIMULATED) == b"true" for p in parts)
        return result.replace_schema_metadata({SIMULATED: b"true"}) if simulated else result
