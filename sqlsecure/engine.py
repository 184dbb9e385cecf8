"""The engine: a loaded federation (parties' stores, catalog, grants) that plans and runs queries."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from sqlsecure.connectors import PartyStore
from sqlsecure.errors import ConfigError, InterfaceError
from sqlsecure.executors.channel import ChannelStats
from sqlsecure.executors.runtime import EmbeddedRuntime
from sqlsecure.federation import FederationConfig, load_federation, resolve_grants
from sqlsecure.planner import Catalog, QueryPlan, plan_query

EXPLAIN = re.compile(r"^\s*EXPLAIN\s+", re.IGNORECASE)


@dataclass(frozen=True)
class QueryResult:
    table: pa.Table
    plan: QueryPlan
    stats: ChannelStats


class Engine:
    """Open a federation file; plan, explain and run federated queries as a given issuer."""

    def __init__(self, federation: str | Path | FederationConfig, *, timeout: float = 120.0,
                 processes: int | None = None):
        self.config = federation if isinstance(federation, FederationConfig) else load_federation(federation)
        self._stores: dict[str, PartyStore] = {}
        try:
            for name, party in self.config.parties.items():
                self._stores[name] = PartyStore(name, party.database, party.tables)
            self.catalog = Catalog({
                name: {t: tuple(cols) for t, cols in store.schema().items()}
                for name, store in self._stores.items()
            })
            self.grants = resolve_grants(self.config, self.catalog.all_columns())
        except BaseException:
            self.close()
            raise
        self.runtime = EmbeddedRuntime(self._stores, timeout=timeout, processes=processes)

    @property
    def parties(self) -> list[str]:
        return list(self.config.parties)

    def check_issuer(self, issuer: str) -> None:
        if issuer not in self.config.parties:
            raise ConfigError(f"unknown party {issuer!r}; parties are: {', '.join(self.config.parties)}")

    def plan(self, sql: str, issuer: str) -> QueryPlan:
        self.check_issuer(issuer)
        return plan_query(
            EXPLAIN.sub("", sql, count=1), catalog=self.catalog, grants=self.grants, issuer=issuer,
            dialect=self.config.dialect, min_group_size=self.config.min_group_size,
        )

    def explain(self, sql: str, issuer: str) -> str:
        return self.plan(sql, issuer).explain()

    def execute(self, sql: str, issuer: str) -> QueryResult:
        """Run a query; `EXPLAIN <query>` returns the plan as a one-column table instead."""
        if getattr(self, "runtime", None) is None:
            raise InterfaceError("the engine is closed")
        plan = self.plan(sql, issuer)
        if EXPLAIN.match(sql):
            text = plan.explain().splitlines()
            return QueryResult(pa.table({"explain": text}), plan, ChannelStats())
        table = self.runtime.execute(plan.physical)
        return QueryResult(table, plan, self.runtime.last_stats)

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
