"""`sqlsecure party serve`: one party (or the SPU dealer, or the enclave driver) as a network service.

A party's service opens only its own store, and answers only what `executors/runtime/network.py` allows:
protocol messages of queries it agreed to run, its public catalog, and the issuer's own result to
the issuer. The dealer and the enclave driver hold no data; they serve the secure stages of the
queries that name them.

Fixed cost per query. A party keeps, across queries, one planning engine (its peers' catalogs and its
Flight clients to them) to re-derive each plan it is asked to run. Every catalog carries a version (a
digest of schema and sizes); the issuer's `run` names the versions it planned with. A party whose own
version differs answers "stale" (the issuer re-reads that catalog and plans again); a party whose copy
of a peer's catalog is older than the issuer's re-reads it before re-deriving. The party's own version
is recomputed when one of its data files changes (its store is then reopened, so a file rewritten with
another schema is seen), and on every query for a database source (ADBC).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from sqlsecure.audit import AuditLog, refusal_entry
from sqlsecure.connectors import open_store
from sqlsecure.connectors.duckdb_store import files_stamp
from sqlsecure.errors import ConfigError, PolicyViolation
from sqlsecure.executors.psi.blinding import GroupWorkers
from sqlsecure.executors.psi.unbalanced import PsiCache
from sqlsecure.executors.tee.stage import ACTOR, EnclaveTrust, actor_side
from sqlsecure.executors.runtime.network import HoldLimits, Identity, Node, PartyCatalog, StaleCatalog
from sqlsecure.executors.runtime.party import PartyExecutor
from sqlsecure.executors.spu.dealer import DEALER, Dealer
from sqlsecure.federation import FederationConfig, load_federation
from sqlsecure.policy.masking import load_key
from sqlsecure.planner.physical import EnclaveStage, SpuStep

MAX_PENDING = 256  # accepted queries whose text a party keeps until they start (for its audit log)


def enclave_trust(config: FederationConfig) -> EnclaveTrust | None:
    """What a party accepts as the enclave: the authority's public key and the allowed measurements."""
    enclave = config.enclave
    if enclave is None:
        return None
    public = serialization.load_pem_public_key(Path(str(enclave.authority) + ".pub").read_bytes())
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return EnclaveTrust(raw, frozenset(enclave.measurements))


class PartyService:
    """A running node: `port`, `close()`; `serve_forever()` blocks until SIGTERM / SIGINT / close."""

    def __init__(self, federation: str | Path | FederationConfig, name: str, *, processes: int | None = None,
                 timeout: float | None = None):
        config = federation if isinstance(federation, FederationConfig) else load_federation(federation)
        self.config, self.name = config, name
        if name not in config.parties and name not in (DEALER, ACTOR):
            raise ConfigError(f"{config.path}: no party {name!r} (parties: {', '.join(config.parties)}; "
                              f"actors: {DEALER}, {ACTOR})")
        node = config.nodes.get(name)
        identity = Identity.from_config(config, name)
        self._store = self._workers = self._enclave_host = self._planner = None
        self._catalog: tuple[tuple, PartyCatalog] | None = None  # (data files' stamp, catalog)
        addresses = {n: c.address for n, c in config.nodes.items()}
        timeout = float(timeout if timeout is not None else config.network_timeout)
        if name in config.parties:
            party = config.parties[name]
            self._store, self._stamp = open_store(party), self._files_stamp()
            self._workers = GroupWorkers(processes)
            self._psi_cache = PsiCache()
            hashing = any(m.mask.method == "hash" for m in config.masks)
            self._mask_key = load_key(config.mask_key_file) if hashing else None
            self._trust = enclave_trust(config)
            role, catalog, accepts = self._run_party, self._published_catalog, self._verify_plan
            self._audit = AuditLog(name, party.audit) if party.audit is not None else None
            self._queries: dict[str, tuple[str, object]] = {}  # query id -> (its text, the plan derived here)
        elif name == DEALER:
            role, catalog, accepts = self._run_dealer, None, self._dealer_accepts
        else:
            if config.enclave is None:
                raise ConfigError(f"{config.path}: the federation declares no [enclave]")
            role, catalog, accepts = self._run_enclave, None, None
        self._lock = threading.Lock()
        self._planning = threading.Lock()  # one re-derivation at a time on the cached planning engine
        self.node = Node(identity, node.host, node.port, addresses, role, catalog=catalog, timeout=timeout,
                         accepts=accepts, calls=self._planning_calls, limits=HoldLimits.from_config(config))
        self.port = self.node.port
        self._closed = threading.Event()

    # --- roles: each runs this node's part of one query

    def _run_party(self, plan, query_id, endpoint):
        executor = PartyExecutor(self.name, self._store, endpoint, self._workers, self._mask_key, None, self._trust,
                                 self._psi_cache, self._audit)
        with self._lock:
            sql, own = self._queries.pop(query_id, (None, plan))
        return executor.run(own, query_id, sql)  # equal to `plan`; its column uses are this party's own

    # --- the party's catalog, and the plan it re-derives from cached catalogs

    def _files_stamp(self) -> tuple:
        """What identifies the party's data files' content: path, size, modification time."""
        party = self.config.parties[self.name]
        return files_stamp([s.path for s in party.tables] + ([party.database] if party.database else []))

    def _published_catalog(self) -> dict:
        return self._current_catalog().to_json()

    def _current_catalog(self) -> PartyCatalog:
        """The party's catalog now: recomputed when its data files changed (the store is reopened, as
        DuckDB keeps a view's columns from when it was made), always for a database source."""
        with self._lock:
            stamp = self._files_stamp()
            if stamp != self._stamp:  # running queries keep the old store; it closes when they drop it
                self._store, self._stamp, self._catalog = open_store(self.config.parties[self.name]), stamp, None
            if self._catalog is None or self.config.parties[self.name].source is not None:
                self._catalog = PartyCatalog.of(self._store.schema(), self._store.sizes(), self._classes())
            return self._catalog

    def _classes(self) -> dict[str, dict[str, int]]:
        """Table -> numeric column -> the magnitude class this party publishes (none from a store that
        publishes none: the SPU's ranges are then proven at run time only)."""
        publish = getattr(self._store, "magnitudes", None)
        return {table: publish(table) for table in self._store.schema()} if publish is not None else {}

    def _planning_engine(self, versions: dict, parties) -> "Engine":
        """The cached engine this party re-derives plans with, its copy of `parties`' catalogs brought
        up to the `versions` the issuer planned with; StaleCatalog if a party has moved on since."""
        from sqlsecure.engine import Engine

        if self._planner is None:
            self._planner = Engine(self.config, runtime="network", identity=self.name)
        engine = self._planner
        behind = [p for p in parties if engine.runtime.versions([p]).get(p) != versions.get(p)]
        if behind:
            engine.reload_catalog(behind)
            moved = [p for p in behind if engine.runtime.versions([p]).get(p) != versions.get(p)]
            if moved:
                raise StaleCatalog(moved)
        return engine

    def _planning_calls(self) -> list:
        planner = self._planner
        return [planner.runtime.peers.calls] if planner is not None else []

    def _verify_plan(self, plan, header) -> str | None:
        """A party runs only the plan it derives itself from the query text and the federation's grants:
        an issuer cannot make it reveal, or take part in, anything the grants do not allow. It plans
        with its cached catalogs, checked against the versions the issuer planned with."""
        from sqlsecure.errors import Error
        from sqlsecure.executors.runtime.network import decode_parameters

        sql, versions = header.get("sql"), header.get("catalogs")
        if not isinstance(sql, str):
            return f"{self.name} runs only plans that come with their query, to check them against the grants"
        if not isinstance(versions, dict):
            return f"{self.name} runs only plans that name the catalog versions they were planned with"
        if self.name in plan.parties and versions.get(self.name) != self._current_catalog().version:
            raise StaleCatalog([self.name])
        try:
            parameters = decode_parameters(header.get("parameters", []))
            with self._planning:
                own = self._planning_engine(versions, sorted(plan.parties)).plan(sql, plan.issuer, parameters).physical
        except StaleCatalog:
            raise
        except Error as exc:
            return self._refuse(plan, sql, exc, f"{self.name} refuses the query: {type(exc).__name__}: {exc}")
        if own != plan:
            return self._refuse(plan, sql, None, f"{self.name} refuses the plan: it is not the plan {self.name} "
                                                 "derives from the query and the federation's grants")
        with self._lock:
            while len(self._queries) >= MAX_PENDING:  # queries prepared but never started (an aborted issuer)
                self._queries.pop(next(iter(self._queries)))
            self._queries[str(header.get("query"))] = (sql, own)
        return None

    def _refuse(self, plan, sql: str, error, why: str) -> str:
        """Log a refused query in this party's audit log; return why (for the issuer)."""
        if self._audit is not None:
            self._audit.append(refusal_entry(plan.issuer, sql, error or PolicyViolation(why)))
        return why

    @staticmethod
    def _dealer_accepts(plan, header=None) -> str | None:
        if not any(isinstance(s, SpuStep) for s in plan.steps):
            return "the dealer serves only plans with a secure stage"
        return None

    def _run_dealer(self, plan, query_id, endpoint):
        for stage in [s for s in plan.steps if isinstance(s, SpuStep)]:
            Dealer(endpoint, list(stage.compute)).serve()
        return None

    def _run_enclave(self, plan, query_id, endpoint):
        from sqlsecure.executors.tee import EnclaveHost

        with self._lock:
            if self._enclave_host is None:
                host = EnclaveHost(self.config.enclave.authority, self.config.enclave.measurements)
                host.start()
                self._enclave_host = host
        for index, step in enumerate(plan.steps):
            if isinstance(step, EnclaveStage):
                actor_side(endpoint, self._enclave_host, step, f"{query_id}/{index}")
        return None

    # --- lifecycle

    def serve_forever(self) -> None:
        def stop(signum, frame):
            self._closed.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)
        try:
            self._closed.wait()
        finally:
            self.close()

    def close(self) -> None:
        self._closed.set()
        node, self.node = getattr(self, "node", None), None
        if node is not None:
            node.close()
        if self._workers is not None:
            self._workers.close()
            self._workers = None
        if self._enclave_host is not None:
            self._enclave_host.stop()
            self._enclave_host = None
        if self._planner is not None:
            self._planner.close()
            self._planner = None
        if self._store is not None:
            self._store.close()
            self._store = None
