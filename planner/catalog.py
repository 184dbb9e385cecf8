"""The federation catalog: every party's tables and their column types, read from the parties' stores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from sqlglot.schema import MappingSchema

from sqlsecure.policy.grants import ColumnRef


@dataclass(frozen=True)
class Catalog:
    """party -> table -> ((column, DuckDB type), ...); `sizes(party)` -> table -> row count rounded up to
    a power of two (the coarse statistic a party publishes for the planner's cost model), asked afresh
    on each use so that every party re-deriving a plan sees what the issuer saw; `views`: the
    federation's views (planner/views.py), expanded into every query that names them; `unique`: party ->
    table -> the column tuples the party declares unique (public schema metadata, from the federation
    file; the SPU checks a declared key obliviously wherever a join relies on it); `magnitudes(party,
    table, columns)` -> numeric column -> its magnitude class (planner/magnitudes.py)."""

    tables: dict[str, dict[str, tuple[tuple[str, str], ...]]]
    sizes: Callable[[str], dict[str, int]] | None = field(default=None, compare=False)
    views: dict = field(default_factory=dict, compare=False)  # federation views: name -> parsed query
    unique: dict = field(default_factory=dict, compare=False)  # party -> table -> ((column, ...), ...)
    # (party, table, columns) -> numeric column -> M, every |value| < 2^M (the owner's published
    # magnitude classes, embedded or from its network catalog; None: ranges proven at run time only)
    magnitudes: Callable[[str, str, tuple[str, ...]], dict[str, int]] | None = field(default=None, compare=False)

    def has_party(self, party: str) -> bool:
        return party in self.tables

    def has_table(self, party: str, table: str) -> bool:
        return table in self.tables.get(party, {})

    def columns(self, party: str, table: str) -> tuple[tuple[str, str], ...]:
        return self.tables[party][table]

    def unique_keys(self, party: str, table: str) -> tuple[tuple[str, ...], ...]:
        """The column tuples `party` declares unique in `table` (NULLs may repeat: they never join)."""
        return self.unique.get(party, {}).get(table, ())

    def column_type(self, party: str, table: str, column: str) -> str | None:
        for name, dtype in self.tables[party][table]:
            if name == column:
                return dtype
        return None

    def all_columns(self) -> list[ColumnRef]:
        return [
            ColumnRef(party, table, column)
            for party, tables in self.tables.items()
            for table, cols in tables.items()
            for column, _ in cols
        ]

    def sqlglot_schema(self, dialect: str) -> MappingSchema:
        mapping = {
            party: {table: {c: t for c, t in cols} for table, cols in tables.items()}
            for party, tables in self.tables.items()
        }
        return MappingSchema(mapping, dialect=dialect, normalize=False)
