"""The engine: a loaded federation (parties' stores, catalog, grants) that plans and runs queries."""

from __future__ import annotations

import functools
import logging
import re
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa
from sqlglot.errors import SqlglotError

from sqlsecure.audit import AuditLog, refusal_entry
from sqlsecure.connectors import AdbcStore, PartyStore, open_store
from sqlsecure.errors import (ConfigError, DataError, Error, InterfaceError, NotSupportedError, PlanError,
                              PolicyViolation, ProtocolError, unexpected)
from sqlsecure.executors.runtime.channel import ChannelStats
from sqlsecure.executors.runtime.embedded import EmbeddedRuntime
from sqlsecure.federation import FederationConfig, declared_unique, load_federation, resolve_grants
from sqlsecure.notices import result_notices
from sqlsecure.policy.ledger import Ledger
from sqlsecure.policy.masking import load_key, resolve_masks
from sqlsecure.planner import Catalog, QueryPlan, plan_query
from sqlsecure.planner.cost import Link
from sqlsecure.planner.views import check_views
from sqlsecure.planner.parse import check_parameters, clean_description, parse_statement, too_deep
from sqlsecure.policy.grants import RevealPolicy
from sqlsecure.policy.rules import parse_rules
from sqlsecure.writes import is_write, run_write

EXPLAIN = re.compile(r"^\s*EXPLAIN\s+", re.IGNORECASE)
log = logging.getLogger(__name__)


def pep249_errors(method):
    """Safety net of a public entry point: only the engine's PEP 249 errors leave it.

    A query past Python's stack is refused as too deep; a sqlglot error is a PlanError without sqlglot's
    internals; any other exception is a bug, raised as InternalError naming its class and place (its text
    may carry a data value, so it goes to this process's log only)."""

    @functools.wraps(method)
    def guarded(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except Error:
            raise
        except RecursionError:
            raise too_deep() from None
        except SqlglotError as exc:
            raise PlanError(f"the query cannot be planned: {clean_description(str(exc))}") from None
        except Exception as exc:
            log.exception("internal error in Engine.%s", method.__name__)
            raise unexpected(exc, f"running Engine.{method.__name__}") from exc

    return guarded


@dataclass(frozen=True)
class QueryResult:
    table: pa.Table | None  # None for a write
    plan: QueryPlan | None
    stats: ChannelStats
    rowcount: int = -1
    notices: tuple[str, ...] = ()  # what the user should know about the result (sqlsecure.notices)


class Engine:
    """Open a federation file; plan, explain and run federated queries as a given issuer."""

    @pep249_errors
    def __init__(self, federation: str | Path | FederationConfig, *, timeout: float | None = None,
                 processes: int | None = None, writer: str | None = None, runtime: str = "embedded",
                 identity: str | None = None):
        """`writer`: the one party whose own database this engine may write (its DB-API connection).

        `runtime="network"`: every party is its own service (`sqlsecure party serve`, docs/network.md);
        this engine acts as party `identity` (with its certificate and key), opens no store, reads the
        catalog from the parties' services and issues queries as `identity` only. `timeout` (seconds a silent
        party may take) defaults to 120 embedded, the federation's `network_timeout` in network mode."""
        self.config = federation if isinstance(federation, FederationConfig) else load_federation(federation)
        self._stores: dict[str, PartyStore] = {}
        self.writer = writer
        # each party's own audit log; in network mode only this engine's identity's (for its refusals)
        self.audits = {name: AuditLog(name, party.audit) for name, party in self.config.parties.items()
                       if party.audit is not None and (runtime != "network" or name == identity)}
        if runtime not in ("embedded", "network"):
            raise ConfigError(f"unknown runtime {runtime!r} (embedded or network)")
        self.runtime = None
        network = None
        try:
            if runtime == "network":
                from sqlsecure.executors.runtime.network import NetworkRuntime

                if identity is None or identity not in self.config.parties:
                    raise ConfigError(f"network mode: identity must be one of the parties "
                                      f"({', '.join(self.config.parties)}), not {identity!r}")
                if writer is not None:
                    raise NotSupportedError("network mode: writes go to the party's own service, not through "
                                            "a federated engine")
                network = NetworkRuntime(self.config, identity, timeout)
                schemas = network.schemas(list(self.config.parties))
            else:
                for name, party in self.config.parties.items():
                    self._stores[name] = self._config_step(
                        f"parties.{name}", lambda: open_store(party, writable=name == writer))
                schemas = {name: store.schema() for name, store in self._stores.items()}
            sizes = network.sizes if network is not None else (lambda party: self._stores[party].sizes())
            self._load_catalog(schemas, sizes, self._magnitudes)
            self.link = Link(self.config.link_rtt_ms / 1000, self.config.link_mbps * 1e6 / 8) \
                if network is not None else Link()
            self.ledger = self._config_step("federation.ledger", lambda: Ledger(self.config.ledger)) \
                if self.config.privacy else None
            hashing = any(m.method == "hash" for m in self.policy.masks.values())
            mask_key = self._config_step("federation.mask_key_file", lambda: load_key(self.config.mask_key_file)) \
                if hashing else None
        except BaseException:
            if network is not None:
                network.close()
            self.close()
            raise
        if network is not None:
            self.runtime = network
            return
        self.runtime = EmbeddedRuntime(self._stores, timeout=120.0 if timeout is None else timeout, processes=processes, mask_key=mask_key,
                                       enclave=self.config.enclave, audits=self.audits)

    def _config_step(self, key: str, step):
        """Run one step of opening the federation; its failure is a ConfigError naming the file and key."""
        try:
            return step()
        except ConfigError as exc:
            raise ConfigError([f"{self.config.path}: {key}: {p}" for p in exc.problems]) from None
        except (OSError, ValueError, sqlite3.Error) as exc:
            raise ConfigError(f"{self.config.path}: {key}: {type(exc).__name__}: {exc}") from None

    def _magnitudes(self, party: str, table: str, columns: tuple[str, ...]) -> dict[str, int]:
        """A party's published magnitude classes of these columns of one table: its store's (embedded) or
        its network catalog's (`{}` from a store that publishes none: ranges are then proven at run time).
        None for a masked column: its owner shares the masked values, which its class does not bound."""
        masked = {ref.column for ref, _ in self.policy.masks if (ref.party, ref.table) == (party, table)}
        publish = getattr(self._stores[party], "magnitudes", None) if party in self._stores else \
            lambda name, wanted: self.runtime.magnitudes(party, name, wanted)
        wanted = tuple(c for c in columns if c not in masked)
        return publish(table, wanted) if publish is not None and wanted else {}

    def _load_catalog(self, schemas, sizes, magnitudes=None) -> None:
        """The catalog and what is resolved against it: views, grants, policy."""
        self.catalog = Catalog({name: {t: tuple(cols) for t, cols in tables.items()}
                                for name, tables in schemas.items()}, sizes, self.config.views,
                               magnitudes=magnitudes)
        self.catalog = replace(self.catalog, unique=declared_unique(self.config, self.catalog))
        try:
            self.view_columns = check_views(self.config.views, self.catalog, self.config.dialect)
        except ConfigError as exc:
            raise ConfigError([f"{self.config.path}: views: {p}" for p in exc.problems]) from None
        self.grants = resolve_grants(self.config, self.catalog.all_columns())
        self.policy = self._resolve_policy()

    def reload_catalog(self, parties) -> None:
        """Network mode: read these parties' catalogs again (their version changed) and re-resolve."""
        self.runtime.refresh(list(parties))
        self._load_catalog(self.runtime.schemas(list(self.config.parties)), self.runtime.sizes, self._magnitudes)

    def _resolve_policy(self) -> RevealPolicy:
        problems: list[str] = []

        def problem(key: str, text: str) -> None:
            problems.append(f"{self.config.path}: {key}: {text}")

        def columns(party: str, table: str):
            if not self.catalog.has_table(party, table):
                return None
            return [c for c, _ in self.catalog.columns(party, table)]

        rules = parse_rules(self.config.rules, problem, columns)
        masks = resolve_masks(list(self.config.masks), self.catalog.all_columns(), problem)
        if problems:
            raise ConfigError(problems)
        return RevealPolicy(self.grants, rules, masks, dict(self.config.privacy), self.config.min_group_size)

    def store_of(self, party: str) -> PartyStore:
        """The writer's own store (writes only ever reach this one)."""
        if party != self.writer or party not in self._stores:
            raise PolicyViolation(f"this connection may not write {party}'s database; connect as {party} to write it")
        return self._stores[party]

    def refresh_catalog(self, party: str) -> None:
        tables = dict(self.catalog.tables)
        tables[party] = {t: tuple(cols) for t, cols in self._stores[party].schema().items()}
        self.catalog = replace(self.catalog, tables=tables)

    @property
    def parties(self) -> list[str]:
        return list(self.config.parties)

    def check_issuer(self, issuer: str) -> None:
        if issuer not in self.config.parties:
            raise ConfigError(f"unknown party {issuer!r}; parties are: {', '.join(self.config.parties)}")

    @pep249_errors
    def plan(self, sql: str, issuer: str, parameters=None) -> QueryPlan:
        """Network mode: a refused query is planned once more if a party's catalog moved on (a table or
        column added since this engine read it); one round trip, on refusals only."""
        try:
            return self._plan(sql, issuer, parameters)
        except (PlanError, PolicyViolation):
            if not self._catalog_moved():
                raise
        return self._plan(sql, issuer, parameters)

    def _catalog_moved(self) -> bool:
        if not hasattr(self.runtime, "versions"):
            return False
        before = self.runtime.versions(self.parties)
        self.reload_catalog(self.parties)
        return self.runtime.versions(self.parties) != before

    def _plan(self, sql: str, issuer: str, parameters=None) -> QueryPlan:
        self.check_issuer(issuer)
        return plan_query(EXPLAIN.sub("", sql, count=1), catalog=self.catalog, policy=self.policy, issuer=issuer,
                          dialect=self.config.dialect, parameters=parameters,
                          enclave=self.config.enclave.placement if self.config.enclave else None,
                          measurements=tuple(m.hex() for m in self.config.enclave.measurements)
                          if self.config.enclave else (), group_sums=self.config.group_sums, link=self.link,
                          psi=self.config.psi, he_key_bits=self.config.he_key_bits,
                          time_zone=self.config.time_zone)

    @pep249_errors
    def check(self, sql: str, issuer: str) -> str | None:
        """Dry run: None if the query would be answered, else why not. Touches no data."""
        try:
            self.plan(sql, issuer)
        except (PolicyViolation, PlanError, NotSupportedError, DataError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    @pep249_errors
    def explain(self, sql: str, issuer: str) -> str:
        plan = self.plan(sql, issuer)
        text = plan.explain(self._pushdown)
        if plan.physical.epsilon:
            budget = self.policy.budgets[issuer]
            spent = self.ledger.spent(issuer)
            text += (f"\nprivacy budget of {issuer}: ε spent {spent.epsilon:g} of {budget.epsilon:g}, "
                     f"{budget.epsilon - spent.epsilon:g} left before this query")
        return text

    def _pushdown(self, party: str, sql: str) -> list[str] | None:
        """For EXPLAIN: what a party whose data lives in a database (ADBC) runs there."""
        store = self._stores.get(party)
        if not isinstance(store, AdbcStore):
            return None
        kind = {"postgres": "PostgreSQL", "sqlite": "SQLite", "flightsql": "Flight SQL"}[store.source.kind]
        source_sql, whole = store.pushdown(sql)
        if whole:
            return [f"runs at its {kind} source as: {source_sql}"]
        return [f"fetched from its {kind} source: {source_sql}",
                "finished in DuckDB at the party (a construct without an exact equivalent in the source's dialect)"]

    @pep249_errors
    def execute(self, sql: str, issuer: str, parameters=None) -> QueryResult:
        """Run a query (`?` markers bound to `parameters`); `EXPLAIN <query>` returns the plan as a table."""
        if getattr(self, "runtime", None) is None:
            raise InterfaceError("the engine is closed")
        check_parameters(parameters)
        if not EXPLAIN.match(sql):
            tree = parse_statement(sql, self.config.dialect)
            if is_write(tree):
                self.check_issuer(issuer)
                if not self._stores:
                    raise NotSupportedError("network mode: this engine holds no store to write; write through "
                                            "the party's own database")
                return QueryResult(None, None, ChannelStats(), run_write(self, tree, issuer, sql, parameters))
        if EXPLAIN.match(sql):
            plan = self.plan(sql, issuer, parameters)
            text = self.explain(sql, issuer).splitlines()
            return QueryResult(pa.table({"explain": text}), plan, ChannelStats())
        plan = self._admit(sql, issuer, parameters)
        try:
            table = self.runtime.execute(plan.physical, (plan.sql, list(parameters or ())))
        except ProtocolError as exc:  # network mode: a party's catalog changed since this engine read it
            if not getattr(exc, "stale_parties", None):
                raise
            self.reload_catalog(exc.stale_parties)
            plan = self._admit(sql, issuer, parameters)
            table = self.runtime.execute(plan.physical, (plan.sql, list(parameters or ())))
        return QueryResult(table, plan, self.runtime.last_stats, notices=result_notices(plan, table))

    def _admit(self, sql: str, issuer: str, parameters) -> QueryPlan:
        """Plan a query and charge its privacy cost, durably, before anything is computed or released; a
        refusal at either step is appended to the issuer's audit log (no other party saw the query)."""
        try:
            plan = self.plan(sql, issuer, parameters)
            if plan.physical.epsilon:
                budget = self.policy.budgets[issuer]
                self.ledger.charge(issuer, plan.physical.epsilon, plan.physical.delta, budget.epsilon,
                                   budget.delta, sql)
            return plan
        except (PolicyViolation, PlanError, NotSupportedError, DataError) as exc:
            if issuer in self.audits:
                self.audits[issuer].append(refusal_entry(issuer, sql, exc))
            raise

    def close(self) -> None:
        runtime = getattr(self, "runtime", None)
        if runtime is not None:
            runtime.close()
            self.runtime = None
        for store in self._stores.values():
            store.close()
        self._stores = {}

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
