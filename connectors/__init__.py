"""Connectors: how a party's own data is reached — its DuckDB database and data files (`duckdb_store`), or a
database behind ADBC: PostgreSQL, SQLite, an Arrow Flight SQL endpoint (`adbc_store`)."""

from sqlsecure.connectors.adbc_store import AdbcStore, Source
from sqlsecure.connectors.duckdb_store import PartyStore, TableSource
from sqlsecure.connectors.source_types import check_declared

__all__ = ["AdbcStore", "PartyStore", "Source", "TableSource", "open_store"]


def open_store(party, writable: bool = False):
    """The store of a party's configuration (`federation.PartyConfig`): its ADBC source, or its DuckDB;
    ConfigError where the column types the party declares are not what the store publishes."""
    store = AdbcStore(party.name, party.source) if party.source is not None else \
        PartyStore(party.name, party.database, party.tables, writable=writable)
    try:
        check_declared(party.name, party.types, store.schema())
    except BaseException:
        store.close()
        raise
    return store
