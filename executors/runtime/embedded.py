"""The embedded runtime: every party an isolated executor in one process, talking over a channel.

Each query gets a fresh in-process channel (so a failed query leaves nothing queued for the
next) and runs every participating party's executor in its own thread. If any party fails, the
channel is aborted so the others stop waiting, and the first real error is raised — as
`contained_error` lets it cross: its class and the offending expression, never another party's data
value (the full text stays in that party's log).
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import serialization

import pyarrow as pa

from sqlsecure.errors import InternalError, OperationalError, ProtocolError
from sqlsecure.executors.runtime.channel import ChannelStats, InProcessChannel
from sqlsecure.executors.psi.blinding import GroupWorkers
from sqlsecure.executors.psi.unbalanced import PsiCache
from sqlsecure.executors.runtime.party import PartyExecutor, contained_error
from sqlsecure.executors.spu.dealer import DEALER, Dealer
from sqlsecure.executors.tee import EnclaveHost
from sqlsecure.executors.tee.stage import ACTOR, EnclaveTrust, actor_side
from sqlsecure.planner.physical import EnclaveStage, PhysicalPlan, SpuStep


class EmbeddedRuntime:
    def __init__(self, stores: dict, timeout: float = 120.0, processes: int | None = None,
                 mask_key: bytes | None = None, enclave=None, audits: dict | None = None):
        self._audits = audits or {}  # party -> its own AuditLog (sqlsecure/audit.py), if it keeps one
        self._enclave_config = enclave  # federation's [enclave], or None
        self._enclave_host = None  # started on first use
        self.trust = None
        if enclave is not None:
            public = serialization.load_pem_public_key(Path(str(enclave.authority) + ".pub").read_bytes())
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            self.trust = EnclaveTrust(raw, frozenset(enclave.measurements))
        self._mask_key = mask_key
        self.progress = None  # progress(step number, steps, label), called from the parties' threads
        self._channel: InProcessChannel | None = None
        self._cancelled = False
        self._stores = stores  # party -> PartyStore; each is handed to its own executor only
        self.timeout = timeout
        self._workers = {party: GroupWorkers(processes) for party in stores}
        self._psi_caches = {party: PsiCache() for party in stores}  # per party: its keys never mix
        self.last_stats = ChannelStats()
        self._lock = threading.Lock()

    def execute(self, plan: PhysicalPlan, query: tuple[str, list] | None = None) -> pa.Table:
        """Run a plan; `query` (its SQL and parameters) is for runtimes whose parties re-derive the plan."""
        with self._lock:
            return self._execute(plan, query[0] if query else None)

    def _execute(self, plan: PhysicalPlan, sql: str | None) -> pa.Table:
        parties = sorted(plan.parties)
        stages = [step for step in plan.steps if isinstance(step, SpuStep)]
        enclave_steps = [(i, step) for i, step in enumerate(plan.steps) if isinstance(step, EnclaveStage)]
        actors = ([DEALER] if stages else []) + ([ACTOR] if enclave_steps else [])
        channel = InProcessChannel(parties + actors, timeout=self.timeout)
        query_id = uuid.uuid4().hex[:12]
        self._channel, self._cancelled = channel, False
        results: dict[str, pa.Table | None] = {}
        errors: dict[str, BaseException] = {}

        def run(party: str) -> None:
            executor = PartyExecutor(party, self._stores[party], channel.endpoint(party), self._workers[party],
                                     self._mask_key, self.progress, self.trust, self._psi_caches[party],
                                     self._audits.get(party))
            try:
                results[party] = executor.run(plan, query_id, sql)
            except BaseException as exc:  # reported below, after every party has stopped
                errors[party] = contained_error(party, exc, plan.issuer)
                channel.abort(f"{party} failed: {errors[party]}")

        def deal() -> None:
            """The SPU's dealer: an isolated actor, not a data party, serving each secure stage in turn."""
            try:
                for stage in stages:
                    Dealer(channel.endpoint(DEALER), list(stage.compute)).serve()
            except BaseException as exc:
                errors[DEALER] = contained_error(DEALER, exc, plan.issuer)
                channel.abort(f"the dealer failed: {errors[DEALER]}")

        def drive_enclave() -> None:
            """The enclave's driver: forwards sealed batches to the enclave process and back."""
            try:
                host = self._enclave()
                for index, step in enclave_steps:
                    actor_side(channel.endpoint(ACTOR), host, step, f"{query_id}/{index}")
            except BaseException as exc:
                errors[ACTOR] = contained_error(ACTOR, exc, plan.issuer)
                channel.abort(f"the enclave failed: {errors[ACTOR]}")

        threads = [threading.Thread(target=run, args=(p,), name=f"party-{p}", daemon=True) for p in parties]
        if stages:
            threads.append(threading.Thread(target=deal, name="dealer", daemon=True))
        if enclave_steps:
            threads.append(threading.Thread(target=drive_enclave, name="enclave", daemon=True))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.last_stats = channel.stats
        self._channel = None
        if self._cancelled:
            raise OperationalError("query cancelled; nothing was revealed")
        if errors:
            primary = [e for e in errors.values() if not (isinstance(e, ProtocolError) and "aborted" in str(e))]
            raise (primary or list(errors.values()))[0]  # contained: an engine Error
        result = results.get(plan.issuer)
        if result is None:
            raise InternalError("the issuer produced no result")
        return result

    def _enclave(self):
        if self._enclave_config is None:
            raise ProtocolError("the plan uses an enclave but the federation declares none")
        if self._enclave_host is None:
            host = EnclaveHost(self._enclave_config.authority, self._enclave_config.measurements)
            host.start()
            self._enclave_host = host
        return self._enclave_host

    def cancel(self) -> None:
        """Stop the running query: every party stops waiting and drops the query's state."""
        channel = self._channel
        if channel is not None:
            self._cancelled = True
            channel.abort("cancelled by the user")

    def close(self) -> None:
        for workers in self._workers.values():
            workers.close()
        if self._enclave_host is not None:
            self._enclave_host.stop()
            self._enclave_host = None
