"""Connectors: how a party's own data is reached (its DuckDB database and the files it registers as tables)."""

from sqlsecure.connectors.duckdb_store import PartyStore, TableSource

__all__ = ["PartyStore", "TableSource"]
